//! The messenger unit of Hewitt: turns a process's outbox (messages and spawns) into signed data
//! items with deterministic identities, ready to be scheduled on their targets.
//!
//! Identity is what makes delivery exactly-once (DESIGN.md §6): every pushed item's anchor is
//! derived from (sender process, sender nonce, outbox index, kind), and the node signs with
//! Ed25519, whose signatures are deterministic. So re-deriving an outbox after a crash yields the
//! very same item ids, and a target that already holds an id refuses it as a duplicate.
//!
//! This crate does no I/O and keeps no queues of its own: the engine's shard owns the bounded
//! delivery queue and the log. Placement (which shard owns a process) is [`placement`]. Cross-node forwarding is not here yet.

pub mod placement;

use scheduler::data_item::DataItem;
use scheduler::signer::Signer;
use scheduler::tags::Tag;
use scheduler::{MessageId, ModuleId, Nonce, ProcessId};
use sha2::{Digest, Sha256};

/// Tags a process may not set on what it sends: the messenger sets them itself (AO.md, MU API).
pub const RESERVED_TAGS: &[&str] = &[
    "Data-Protocol",
    "Variant",
    "Type",
    "From-Process",
    "From-Module",
    "Pushed-For",
    "Assignments",
];

/// Most outbox messages plus spawns one evaluation may produce. A result with more is turned into
/// an `Error` result by the engine: it bounds the delivery work one message can cause.
pub const OUTBOX_ENTRIES_MAX: usize = 1024;

/// One message of a result's `Messages` array, as the process wrote it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxMessage {
    pub target: ProcessId,
    pub data: Vec<u8>,
    pub tags: Vec<Tag>,
}

/// One entry of a result's `Spawns` array.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpawnRequest {
    pub data: Vec<u8>,
    pub tags: Vec<Tag>,
}

/// Where an outbox came from: the evaluated message that produced it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Origin {
    /// The sending process.
    pub process: ProcessId,
    /// The sending process's module (becomes `From-Module`).
    pub module: ModuleId,
    /// The nonce of the message whose evaluation produced the outbox.
    pub nonce: Nonce,
    /// The user message that started the chain (becomes `Pushed-For`).
    pub pushed_for: MessageId,
    /// For the outbox of a cron message: the tick (its time in ms and its cron's position in
    /// the process's schedule) that produced it, which then identifies it instead of `nonce`.
    pub cron: Option<(u64, u32)>,
}

/// What kind of item an anchor is derived for; part of the identity so that a spawn and a
/// message at the same index never collide.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum DerivedKind {
    Message = 1,
    Spawn = 2,
    SpawnedNotice = 3,
}

/// The deterministic 32-byte anchor of the `index`-th outbox entry of `origin`.
fn derive_anchor(origin: &Origin, kind: DerivedKind, index: u32) -> [u8; 32] {
    let mut hasher = Sha256::new();
    match origin.cron {
        None => {
            hasher.update(b"hewitt-outbox-v1");
            hasher.update(origin.process.as_bytes());
            hasher.update(origin.nonce.0.to_le_bytes());
        }
        Some((time, cron)) => {
            hasher.update(b"hewitt-cron-outbox-v1");
            hasher.update(origin.process.as_bytes());
            hasher.update(time.to_le_bytes());
            hasher.update(cron.to_le_bytes());
        }
    }
    hasher.update([kind as u8]);
    hasher.update(index.to_le_bytes());
    hasher.finalize().into()
}

fn user_tags(tags: &[Tag]) -> impl Iterator<Item = &Tag> {
    tags.iter().filter(|tag| !RESERVED_TAGS.contains(&tag.name.as_str()))
}

/// Builds the data item that delivers an outbox message (AO.md: pushed message).
pub fn push_message(signer: &Signer, origin: &Origin, index: u32, message: &OutboxMessage) -> DataItem {
    let mut tags = vec![
        Tag::new("Data-Protocol", "ao"),
        Tag::new("Variant", "ao.TN.1"),
        Tag::new("Type", "Message"),
    ];
    tags.extend(user_tags(&message.tags).cloned());
    tags.push(Tag::new("From-Process", origin.process.to_string()));
    tags.push(Tag::new("From-Module", origin.module.to_string()));
    tags.push(Tag::new("Pushed-For", origin.pushed_for.to_string()));
    signer.sign(
        Some(message.target.0),
        Some(derive_anchor(origin, DerivedKind::Message, index)),
        tags,
        message.data.clone(),
    )
}

/// Builds the `Type: Process` item for a spawn. `module` is the spawn's `Module` tag if it has
/// one, else the parent's module; `scheduler` is this node's address.
pub fn spawn_process(
    signer: &Signer,
    origin: &Origin,
    index: u32,
    spawn: &SpawnRequest,
    module: ModuleId,
    scheduler: &str,
) -> DataItem {
    let mut tags = vec![
        Tag::new("Data-Protocol", "ao"),
        Tag::new("Variant", "ao.TN.1"),
        Tag::new("Type", "Process"),
    ];
    tags.extend(
        user_tags(&spawn.tags)
            .filter(|tag| tag.name != "Module" && tag.name != "Scheduler")
            .cloned(),
    );
    tags.push(Tag::new("Module", module.to_string()));
    tags.push(Tag::new("Scheduler", scheduler));
    tags.push(Tag::new("From-Process", origin.process.to_string()));
    tags.push(Tag::new("From-Module", origin.module.to_string()));
    tags.push(Tag::new("Pushed-For", origin.pushed_for.to_string()));
    signer.sign(
        None,
        Some(derive_anchor(origin, DerivedKind::Spawn, index)),
        tags,
        spawn.data.clone(),
    )
}

/// Builds the `Action: Spawned` notice the parent receives once its child exists.
pub fn spawned_notice(
    signer: &Signer,
    origin: &Origin,
    index: u32,
    spawn: &SpawnRequest,
    child: ProcessId,
) -> DataItem {
    let mut tags = vec![
        Tag::new("Data-Protocol", "ao"),
        Tag::new("Variant", "ao.TN.1"),
        Tag::new("Type", "Message"),
    ];
    tags.extend(
        user_tags(&spawn.tags)
            .filter(|tag| tag.name != "Action" && tag.name != "Process")
            .cloned(),
    );
    tags.push(Tag::new("Action", "Spawned"));
    tags.push(Tag::new("Process", child.to_string()));
    tags.push(Tag::new("From-Process", child.to_string()));
    tags.push(Tag::new("From-Module", origin.module.to_string()));
    tags.push(Tag::new("Pushed-For", origin.pushed_for.to_string()));
    signer.sign(
        Some(origin.process.0),
        Some(derive_anchor(origin, DerivedKind::SpawnedNotice, index)),
        tags,
        Vec::new(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> Origin {
        Origin {
            process: ProcessId([1; 32]),
            module: ModuleId([2; 32]),
            nonce: Nonce(7),
            pushed_for: MessageId([3; 32]),
            cron: None,
        }
    }

    fn outbox(action: &str) -> OutboxMessage {
        OutboxMessage {
            target: ProcessId([9; 32]),
            data: b"hi".to_vec(),
            tags: vec![
                Tag::new("Action", action),
                Tag::new("From-Process", "forged"),
                Tag::new("Type", "Evil"),
            ],
        }
    }

    #[test]
    fn pushed_message_identity_is_deterministic() {
        let signer = Signer::generate_ed25519();
        let a = push_message(&signer, &origin(), 0, &outbox("Ball"));
        let b = push_message(&signer, &origin(), 0, &outbox("Ball"));
        assert_eq!(a.id(), b.id());
        assert!(a.verify().is_ok());
    }

    #[test]
    fn identical_messages_at_other_indexes_or_nonces_differ() {
        let signer = Signer::generate_ed25519();
        let a = push_message(&signer, &origin(), 0, &outbox("Ball"));
        let b = push_message(&signer, &origin(), 1, &outbox("Ball"));
        let mut later = origin();
        later.nonce = Nonce(8);
        let c = push_message(&signer, &later, 0, &outbox("Ball"));
        assert_ne!(a.id(), b.id());
        assert_ne!(a.id(), c.id());
        // A cron tick's outbox is identified by the tick, whatever the nonce.
        let tick = |time, cron| Origin {
            cron: Some((time, cron)),
            ..origin()
        };
        let d = push_message(&signer, &tick(1_000, 0), 0, &outbox("Ball"));
        assert_ne!(a.id(), d.id());
        assert_ne!(d.id(), push_message(&signer, &tick(2_000, 0), 0, &outbox("Ball")).id());
        assert_ne!(d.id(), push_message(&signer, &tick(1_000, 1), 0, &outbox("Ball")).id());
        let mut other_nonce = tick(1_000, 0);
        other_nonce.nonce = Nonce(99);
        assert_eq!(d.id(), push_message(&signer, &other_nonce, 0, &outbox("Ball")).id());
    }

    #[test]
    fn reserved_tags_cannot_be_forged_by_the_process() {
        let signer = Signer::generate_ed25519();
        let item = push_message(&signer, &origin(), 0, &outbox("Ball"));
        let from: Vec<_> = item.tags.iter().filter(|t| t.name == "From-Process").collect();
        assert_eq!(from.len(), 1);
        assert_eq!(from[0].value, origin().process.to_string());
        assert_eq!(item.tag("Type"), Some("Message"));
        assert_eq!(item.tag("Pushed-For"), Some(origin().pushed_for.to_string().as_str()));
        assert_eq!(item.target, Some([9; 32]));
    }

    #[test]
    fn spawn_and_notice_carry_module_and_child() {
        let signer = Signer::generate_ed25519();
        let spawn = SpawnRequest {
            data: vec![],
            tags: vec![Tag::new("Name", "child")],
        };
        let item = spawn_process(&signer, &origin(), 0, &spawn, ModuleId([5; 32]), "sched");
        assert_eq!(item.tag("Type"), Some("Process"));
        assert_eq!(item.tag("Module"), Some(ModuleId([5; 32]).to_string().as_str()));
        let child = ProcessId(item.id().0);
        let notice = spawned_notice(&signer, &origin(), 0, &spawn, child);
        assert_eq!(notice.tag("Action"), Some("Spawned"));
        assert_eq!(notice.tag("Process"), Some(child.to_string().as_str()));
        assert_ne!(notice.id(), item.id());
    }
}
