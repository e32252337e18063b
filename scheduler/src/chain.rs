//! The per-process hash chain and the assignment data item that carries each link.
//!
//! - `HC(0) = SHA256(raw(process_id))`
//! - `HC(n) = SHA256(raw(assignment_id(n-1)) ‖ raw(HC(n-1)))`
//!
//! where raw() is the 32 id bytes (the wire shows base64url of them). The reference CU rejects a
//! schedule whose chain breaks. An assignment is a data item signed by the scheduler with the
//! tags of [`assignment_tags`], no target, no data, and (unlike the reference SU, which draws a
//! random anchor) no anchor, so that signing with Ed25519 is fully deterministic and replay gives
//! the same assignment ids. This module does not decide nonces, timestamps or block heights:
//! the caller (the scheduler core) passes them in.

use sha2::{Digest, Sha256};

use crate::data_item::DataItem;
use crate::id::{AssignmentId, BlockHeight, HashChain, MessageId, Nonce, ProcessId, Timestamp};
use crate::signer::Signer;
use crate::tags::Tag;

/// The first link of a process's chain, carried by its own assignment (nonce 0).
pub fn genesis_hash_chain(process: &ProcessId) -> HashChain {
    HashChain(Sha256::digest(process.as_bytes()).into())
}

/// The link after `previous`, given the id of the assignment that carried `previous`.
pub fn next_hash_chain(previous_assignment: &AssignmentId, previous: &HashChain) -> HashChain {
    let digest = Sha256::new()
        .chain_update(previous_assignment.as_bytes())
        .chain_update(previous.as_bytes())
        .finalize();
    HashChain(digest.into())
}

/// What an assignment states about one scheduled message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AssignmentFields {
    pub process: ProcessId,
    /// Always 0 on `ao.TN.1`.
    pub epoch: u64,
    pub nonce: Nonce,
    pub hash_chain: HashChain,
    pub block_height: BlockHeight,
    pub timestamp: Timestamp,
    /// The assigned message; `None` for the process's own assignment (nonce 0).
    pub message: Option<MessageId>,
    /// The `exclude` query parameter of an assign request: comma-separated values, each
    /// becoming one `Exclude` tag, as the reference SU does.
    pub exclude: Option<String>,
}

/// The assignment's tags, in the reference SU's order: `Process, Epoch, Nonce, Hash-Chain,
/// Block-Height, Timestamp, Data-Protocol, Type, Variant`, then `Message` (when present), then
/// one `Exclude` per comma-separated value of `exclude`.
pub fn assignment_tags(fields: &AssignmentFields) -> Vec<Tag> {
    let mut tags = vec![
        Tag::new("Process", fields.process.to_string()),
        Tag::new("Epoch", fields.epoch.to_string()),
        Tag::new("Nonce", fields.nonce.0.to_string()),
        Tag::new("Hash-Chain", fields.hash_chain.to_string()),
        Tag::new("Block-Height", fields.block_height.to_string()),
        Tag::new("Timestamp", fields.timestamp.0.to_string()),
        Tag::new("Data-Protocol", "ao"),
        Tag::new("Type", "Assignment"),
        Tag::new("Variant", "ao.TN.1"),
    ];
    if let Some(message) = &fields.message {
        tags.push(Tag::new("Message", message.to_string()));
    }
    if let Some(exclude) = &fields.exclude {
        for value in exclude.split(',') {
            tags.push(Tag::new("Exclude", value));
        }
    }
    tags
}

/// Signs the assignment data item: no target, no anchor, empty data, [`assignment_tags`].
/// Deterministic with an Ed25519 signer.
pub fn sign_assignment(signer: &Signer, fields: &AssignmentFields) -> DataItem {
    signer.sign(None, None, assignment_tags(fields), Vec::new())
}

/// The assignment item of `fields` as `sign_assignment` made it, rebuilt from the signature kept
/// for it (the log stores fields and signature, not the item) without signing again.
pub fn assignment_item(signer: &Signer, fields: &AssignmentFields, signature: Vec<u8>) -> DataItem {
    DataItem {
        signature_type: signer.signature_type(),
        signature,
        owner: signer.owner(),
        target: None,
        anchor: None,
        tags: assignment_tags(fields),
        data: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> AssignmentFields {
        AssignmentFields {
            process: ProcessId([1; 32]),
            epoch: 0,
            nonce: Nonce(7),
            hash_chain: HashChain([2; 32]),
            block_height: BlockHeight(1_393_008),
            timestamp: Timestamp(1_700_000_000_123),
            message: Some(MessageId([3; 32])),
            exclude: None,
        }
    }

    #[test]
    fn hash_chain_by_hand() {
        let process = ProcessId([0xab; 32]);
        let hc0 = genesis_hash_chain(&process);
        let expected0: [u8; 32] = Sha256::digest([0xab; 32]).into();
        assert_eq!(hc0.0, expected0);

        let assignment0 = AssignmentId([0xcd; 32]);
        let hc1 = next_hash_chain(&assignment0, &hc0);
        let mut preimage = vec![0xcd; 32];
        preimage.extend_from_slice(&expected0);
        let expected1: [u8; 32] = Sha256::digest(&preimage).into();
        assert_eq!(hc1.0, expected1);
        // Order matters: the assignment id comes first.
        assert_ne!(next_hash_chain(&AssignmentId(hc0.0), &HashChain(assignment0.0)), hc1);
    }

    #[test]
    fn assignment_tag_order_is_exact() {
        let check = |fields: AssignmentFields, expected: &[(&str, &str)]| {
            let tags = assignment_tags(&fields);
            let got: Vec<(&str, &str)> = tags.iter().map(|t| (t.name.as_str(), t.value.as_str())).collect();
            assert_eq!(got, expected);
        };
        let process = ProcessId([1; 32]).to_string();
        let hash_chain = HashChain([2; 32]).to_string();
        let message = MessageId([3; 32]).to_string();
        let head = [
            ("Process", process.as_str()),
            ("Epoch", "0"),
            ("Nonce", "7"),
            ("Hash-Chain", hash_chain.as_str()),
            ("Block-Height", "000001393008"),
            ("Timestamp", "1700000000123"),
            ("Data-Protocol", "ao"),
            ("Type", "Assignment"),
            ("Variant", "ao.TN.1"),
        ];

        let mut with_message = head.to_vec();
        with_message.push(("Message", message.as_str()));
        check(fields(), &with_message);

        check(
            AssignmentFields {
                message: None,
                ..fields()
            },
            &head,
        );

        let mut with_exclude = with_message.clone();
        with_exclude.push(("Exclude", "Data"));
        with_exclude.push(("Exclude", "Anchor"));
        check(
            AssignmentFields {
                exclude: Some("Data,Anchor".to_owned()),
                ..fields()
            },
            &with_exclude,
        );
    }

    #[test]
    fn signed_assignment_is_deterministic_and_verifies() {
        let signer = Signer::Ed25519(ed25519_dalek::SigningKey::from_bytes(&[5; 32]));
        let item = sign_assignment(&signer, &fields());
        item.verify().unwrap();
        assert_eq!(item.target, None);
        assert_eq!(item.anchor, None);
        assert!(item.data.is_empty());
        assert_eq!(item.tags, assignment_tags(&fields()));
        assert_eq!(item.tag("Type"), Some("Assignment"));
        assert_eq!(sign_assignment(&signer, &fields()), item);
        let reparsed = DataItem::parse(&item.to_bytes()).unwrap();
        assert_eq!(AssignmentId::from(reparsed.id()), AssignmentId::from(item.id()));

        // The chain links through the signed assignment's id.
        let hc0 = genesis_hash_chain(&fields().process);
        let next = next_hash_chain(&AssignmentId::from(item.id()), &hc0);
        assert_ne!(next, hc0);
    }

    #[test]
    fn a_rebuilt_assignment_equals_the_signed_one() {
        let signer = Signer::generate_ed25519();
        let signed = sign_assignment(&signer, &fields());
        let rebuilt = assignment_item(&signer, &fields(), signed.signature.clone());
        assert_eq!(rebuilt, signed);
        rebuilt.verify().expect("the rebuilt item verifies");
    }
}
