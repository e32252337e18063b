//! Arweave's "deep hash": the SHA-384 based hash of a tree of byte strings that ANS-104 signs.
//!
//! - blob `b`: `SHA384(SHA384("blob" ‖ decimal(len(b))) ‖ SHA384(b))`
//! - list `l`: `acc = SHA384("list" ‖ decimal(len(l)))`, then for each item
//!   `acc = SHA384(acc ‖ deep_hash(item))`; the result is the final `acc`.
//!
//! Only fixed-shape lists built by Hewitt itself are hashed here (the data item's eight fields),
//! so recursion depth is not a concern. This module does not stream: blobs are in memory, which
//! the data item size limit keeps bounded.

use std::sync::OnceLock;

use sha2::{Digest, Sha384};

/// A node of the tree to hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeepHashItem<'a> {
    Blob(&'a [u8]),
    List(Vec<DeepHashItem<'a>>),
}

/// The deep hash of `item`.
pub fn deep_hash(item: &DeepHashItem) -> [u8; 48] {
    match item {
        DeepHashItem::Blob(bytes) => {
            if let Some(known) = constant_blob(bytes) {
                return known;
            }
            let body = sha384(&[bytes]);
            sha384(&[&length_tag(b"blob", bytes.len()), &body])
        }
        DeepHashItem::List(items) => {
            let mut acc = length_tag(b"list", items.len());
            for child in items {
                acc = sha384(&[&acc, &deep_hash(child)]);
            }
            acc
        }
    }
}

/// Lengths whose `SHA384("blob" ‖ len)` and `SHA384("list" ‖ len)` are computed once: every
/// small length, which covers the data item's fields (an 8-item list; 32-byte ids, keys and
/// anchors; 65-byte Ethereum keys), and the 512 bytes of an RSA key and signature.
const CACHED_LENGTHS: usize = 66;
const RSA_BYTES: usize = 512;

/// `SHA384(kind ‖ decimal(len))`, the tag that starts a blob's or a list's deep hash; cached
/// for the lengths data items use. Per item this saves about a third of the hashing.
fn length_tag(kind: &'static [u8; 4], len: usize) -> [u8; 48] {
    type Table = ([[u8; 48]; CACHED_LENGTHS], [u8; 48]);
    static BLOB: OnceLock<Table> = OnceLock::new();
    static LIST: OnceLock<Table> = OnceLock::new();
    let compute = |len: usize| sha384(&[kind, len.to_string().as_bytes()]);
    let table = if kind == b"blob" { &BLOB } else { &LIST };
    let (small, rsa) = table.get_or_init(|| (std::array::from_fn(compute), compute(RSA_BYTES)));
    match len {
        len if len < CACHED_LENGTHS => small[len],
        RSA_BYTES => *rsa,
        len => compute(len),
    }
}

/// The deep hash of the constant blobs every data item starts with: `"dataitem"`, the format
/// version `"1"`, and the signature types `"1"`, `"2"`, `"3"`.
fn constant_blob(bytes: &[u8]) -> Option<[u8; 48]> {
    const CONSTANTS: [&[u8]; 4] = [b"dataitem", b"1", b"2", b"3"];
    static HASHES: OnceLock<[[u8; 48]; 4]> = OnceLock::new();
    let index = CONSTANTS.iter().position(|c| *c == bytes)?;
    let hashes = HASHES.get_or_init(|| {
        CONSTANTS.map(|c| {
            let body = sha384(&[c]);
            sha384(&[&sha384(&[b"blob", c.len().to_string().as_bytes()]), &body])
        })
    });
    Some(hashes[index])
}

/// SHA-384 of the concatenation of `parts`.
fn sha384(parts: &[&[u8]]) -> [u8; 48] {
    let mut hasher = Sha384::new();
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SHA-384 of one byte string, composed by hand in the tests below.
    fn h(bytes: &[u8]) -> Vec<u8> {
        Sha384::digest(bytes).to_vec()
    }

    fn cat(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    #[test]
    fn blob_matches_hand_composition() {
        let expected = h(&cat(&[&h(b"blob3"), &h(b"abc")]));
        assert_eq!(deep_hash(&DeepHashItem::Blob(b"abc")).to_vec(), expected);

        let empty = h(&cat(&[&h(b"blob0"), &h(b"")]));
        assert_eq!(deep_hash(&DeepHashItem::Blob(b"")).to_vec(), empty);
    }

    #[test]
    fn cached_tags_and_constants_match_hand_composition() {
        for len in (0..80).chain([511, 512, 513, 4096]) {
            let bytes = vec![7_u8; len];
            let expected = h(&cat(&[&h(format!("blob{len}").as_bytes()), &h(&bytes)]));
            assert_eq!(
                deep_hash(&DeepHashItem::Blob(&bytes)).to_vec(),
                expected,
                "blob of {len}"
            );
            let list = DeepHashItem::List(vec![DeepHashItem::Blob(b"x"); len % 20]);
            let mut acc = h(format!("list{}", len % 20).as_bytes());
            for _ in 0..len % 20 {
                acc = h(&cat(&[&acc, &h(&cat(&[&h(b"blob1"), &h(b"x")]))]));
            }
            assert_eq!(deep_hash(&list).to_vec(), acc, "list of {}", len % 20);
        }
        for constant in [&b"dataitem"[..], b"1", b"2", b"3", b"4", b"dataitems"] {
            let expected = h(&cat(&[&h(format!("blob{}", constant.len()).as_bytes()), &h(constant)]));
            assert_eq!(deep_hash(&DeepHashItem::Blob(constant)).to_vec(), expected);
        }
    }

    #[test]
    fn list_matches_hand_composition() {
        let blob_a = h(&cat(&[&h(b"blob1"), &h(b"a")]));
        let blob_empty = h(&cat(&[&h(b"blob0"), &h(b"")]));
        let inner_acc = h(b"list1");
        let inner = h(&cat(&[&inner_acc, &blob_empty]));
        let acc0 = h(b"list2");
        let acc1 = h(&cat(&[&acc0, &blob_a]));
        let expected = h(&cat(&[&acc1, &inner]));

        let tree = DeepHashItem::List(vec![
            DeepHashItem::Blob(b"a"),
            DeepHashItem::List(vec![DeepHashItem::Blob(b"")]),
        ]);
        assert_eq!(deep_hash(&tree).to_vec(), expected);
        assert_eq!(deep_hash(&DeepHashItem::List(vec![])).to_vec(), h(b"list0"));
    }

    #[test]
    fn multi_digit_lengths_are_decimal() {
        let bytes = [7u8; 1234];
        let expected = h(&cat(&[&h(b"blob1234"), &h(&bytes)]));
        assert_eq!(deep_hash(&DeepHashItem::Blob(&bytes)).to_vec(), expected);
    }
}
