//! ANS-104 bundles: many data items in one, as bundlers take them and as AO's scheduler uploads
//! its assignments and messages.
//!
//! Binary layout (ANS-104, "Bundle format"), all integers little-endian:
//!
//! ```text
//! 32 bytes          N, the number of data items
//! N × (32 + 32)     for each item: its size in bytes, then its id (32 raw bytes)
//! ..                the items, one after another, in the same order
//! ```
//!
//! A bundle travels as the data of a data item tagged `Bundle-Format: binary` and
//! `Bundle-Version: 2.0.0` ([`BUNDLE_TAGS`]). This module does no I/O and signs nothing.

use crate::data_item::{DataItem, DataItemError};
use crate::tags::Tag;

/// The tags of a data item whose data is a bundle.
pub const BUNDLE_TAGS: [(&str, &str); 2] = [("Bundle-Format", "binary"), ("Bundle-Version", "2.0.0")];

/// The tags of [`BUNDLE_TAGS`].
pub fn bundle_tags() -> Vec<Tag> {
    BUNDLE_TAGS
        .iter()
        .map(|(name, value)| Tag::new(*name, *value))
        .collect()
}

fn u256_le(value: usize) -> [u8; 32] {
    let mut out = [0u8; 32];
    out[..8].copy_from_slice(&(value as u64).to_le_bytes());
    out
}

/// The bundle of `items` (each given as its serialized bytes and id).
pub fn encode(items: &[(Vec<u8>, [u8; 32])]) -> Vec<u8> {
    let body: usize = items.iter().map(|(bytes, _)| bytes.len()).sum();
    let mut out = Vec::with_capacity(32 + 64 * items.len() + body);
    out.extend_from_slice(&u256_le(items.len()));
    for (bytes, id) in items {
        out.extend_from_slice(&u256_le(bytes.len()));
        out.extend_from_slice(id);
    }
    for (bytes, _) in items {
        out.extend_from_slice(bytes);
    }
    out
}

/// Why bytes are not a bundle.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("bundle truncated: {0}")]
    Truncated(&'static str),
    #[error("bundle header: {0}")]
    Header(String),
    #[error("bundle item {index}: {source}")]
    Item { index: usize, source: DataItemError },
    #[error("bundle item {index}: its id is not the one the header gives")]
    Id { index: usize },
}

/// A 32-byte little-endian count or size that must fit in a `usize` (and be sane).
fn read_u256(bytes: &[u8]) -> Result<usize, BundleError> {
    if bytes[8..].iter().any(|b| *b != 0) {
        return Err(BundleError::Header("a count or size beyond 2^64".into()));
    }
    usize::try_from(u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")))
        .map_err(|_| BundleError::Header("a count or size beyond this machine's memory".into()))
}

/// The items of a bundle, parsed (not verified), each checked against the id in the header.
pub fn decode(bytes: &[u8]) -> Result<Vec<DataItem>, BundleError> {
    let head = bytes.get(..32).ok_or(BundleError::Truncated("no item count"))?;
    let count = read_u256(head)?;
    let table_end = count
        .checked_mul(64)
        .and_then(|t| t.checked_add(32))
        .filter(|end| *end <= bytes.len())
        .ok_or(BundleError::Truncated(
            "the header lists more items than the bytes hold",
        ))?;
    let mut items = Vec::with_capacity(count);
    let mut at = table_end;
    for index in 0..count {
        let entry = &bytes[32 + 64 * index..32 + 64 * (index + 1)];
        let size = read_u256(&entry[..32])?;
        let end = at
            .checked_add(size)
            .filter(|end| *end <= bytes.len())
            .ok_or(BundleError::Truncated("an item runs past the end"))?;
        let item = DataItem::parse(&bytes[at..end]).map_err(|source| BundleError::Item { index, source })?;
        if item.id().0 != entry[32..64] {
            return Err(BundleError::Id { index });
        }
        items.push(item);
        at = end;
    }
    if at != bytes.len() {
        return Err(BundleError::Header(format!(
            "{} bytes after the last item",
            bytes.len() - at
        )));
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signer::Signer;

    fn items(n: usize) -> Vec<DataItem> {
        let signer = Signer::generate_ed25519();
        (0..n)
            .map(|i| {
                signer.sign(
                    None,
                    Some([i as u8; 32]),
                    vec![Tag::new("N", i.to_string())],
                    vec![i as u8; i * 10],
                )
            })
            .collect()
    }

    #[test]
    fn bundles_round_trip() {
        for n in [0, 1, 5] {
            let items = items(n);
            let entries: Vec<(Vec<u8>, [u8; 32])> = items.iter().map(|i| (i.to_bytes(), i.id().0)).collect();
            let bytes = encode(&entries);
            let back = decode(&bytes).unwrap();
            assert_eq!(back, items, "{n} items");
        }
    }

    #[test]
    fn damaged_bundles_are_refused() {
        let items = items(3);
        let entries: Vec<(Vec<u8>, [u8; 32])> = items.iter().map(|i| (i.to_bytes(), i.id().0)).collect();
        let bytes = encode(&entries);
        for len in 0..bytes.len() {
            assert!(decode(&bytes[..len]).is_err(), "truncated at {len}");
        }
        let mut wrong_id = bytes.clone();
        wrong_id[32 + 32] ^= 1;
        assert!(matches!(decode(&wrong_id), Err(BundleError::Id { index: 0 })));
        let mut huge = bytes.clone();
        huge[31] = 1;
        assert!(decode(&huge).is_err());
        let mut extra = bytes;
        extra.push(0);
        assert!(decode(&extra).is_err());
    }
}
