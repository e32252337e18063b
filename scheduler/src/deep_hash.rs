//! Arweave's "deep hash": the SHA-384 based hash of a tree of byte strings that ANS-104 signs.
//!
//! - blob `b`: `SHA384(SHA384("blob" ‖ decimal(len(b))) ‖ SHA384(b))`
//! - list `l`: `acc = SHA384("list" ‖ decimal(len(l)))`, then for each item
//!   `acc = SHA384(acc ‖ deep_hash(item))`; the result is the final `acc`.
//!
//! Only fixed-shape lists built by Hewitt itself are hashed here (the data item's eight fields),
//! so recursion depth is not a concern. This module does not stream: blobs are in memory, which
//! the data item size limit keeps bounded.

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
            let tag = sha384(&[b"blob", bytes.len().to_string().as_bytes()]);
            let body = sha384(&[bytes]);
            sha384(&[&tag, &body])
        }
        DeepHashItem::List(items) => {
            let mut acc = sha384(&[b"list", items.len().to_string().as_bytes()]);
            for child in items {
                acc = sha384(&[&acc, &deep_hash(child)]);
            }
            acc
        }
    }
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
