//! ANS-104 data items: the binary codec, ids, owner addresses and signature verification.
//!
//! Byte format (integers little-endian), as AO.md and ANS-104 define it:
//!
//! | field | bytes |
//! |---|---|
//! | signature type | 2 (`u16`) |
//! | signature | by type: 512 (RSA), 64 (Ed25519), 65 (Ethereum) |
//! | owner (public key) | by type: 512, 32, 65 |
//! | target | 1 presence byte (0 or 1), then 32 bytes only when it is 1 |
//! | anchor | 1 presence byte (0 or 1), then 32 bytes only when it is 1 |
//! | tag count | 8 (`u64`) |
//! | tag bytes length | 8 (`u64`) |
//! | tags | the canonical Avro array (see [`crate::tags`]) |
//! | data | the rest |
//!
//! [`DataItem::parse`] checks every bound and never panics; it accepts only canonical tag bytes so
//! that [`DataItem::to_bytes`] gives back exactly the parsed bytes and the signed message can be
//! rebuilt from the decoded fields. Parsing does not verify the signature: call
//! [`DataItem::verify`]. Signing lives in [`crate::signer`]. This module does no I/O and draws
//! no randomness.

use ed25519_dalek::Verifier as _;
use rsa::traits::PublicKeyParts as _;
use rsa::{BigUint, RsaPublicKey};
use sha2::{Digest, Sha256};

use crate::deep_hash::{deep_hash, DeepHashItem};
use crate::id::{Address, ItemId};
use crate::tags::{decode_tags, encode_tags, tag_value, Tag, TAG_COUNT_MAX};

/// The largest data item [`DataItem::parse`] accepts, in bytes: 10 MiB of data (the reference
/// SU's body limit) plus 64 KiB for the headers and tags. Larger input is rejected as
/// [`DataItemError::TooLarge`] before anything else is read.
pub const DATA_ITEM_BYTES_MAX: usize = 10 * 1024 * 1024 + 64 * 1024;

/// The public exponent of every Arweave RSA key; the owner field carries only the modulus.
const RSA_PUBLIC_EXPONENT: u32 = 65537;
/// Arweave RSA keys are 4096 bits.
const RSA_MODULUS_BITS: usize = 4096;

/// How a data item is signed. The discriminant is the `u16` on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum SignatureType {
    /// Arweave RSA-4096, RSA-PSS with SHA-256.
    Arweave = 1,
    /// Ed25519 over the 48-byte deep hash.
    Ed25519 = 2,
    /// Ethereum secp256k1 (EIP-191 prefixed keccak-256).
    Ethereum = 3,
}

impl SignatureType {
    /// The signature type for a wire value, if known.
    pub fn from_u16(value: u16) -> Option<SignatureType> {
        match value {
            1 => Some(SignatureType::Arweave),
            2 => Some(SignatureType::Ed25519),
            3 => Some(SignatureType::Ethereum),
            _ => None,
        }
    }

    /// The wire value.
    pub fn as_u16(self) -> u16 {
        self as u16
    }

    /// Bytes of a signature of this type.
    pub fn signature_len(self) -> usize {
        match self {
            SignatureType::Arweave => 512,
            SignatureType::Ed25519 => 64,
            SignatureType::Ethereum => 65,
        }
    }

    /// Bytes of an owner (public key) of this type.
    pub fn owner_len(self) -> usize {
        match self {
            SignatureType::Arweave => 512,
            SignatureType::Ed25519 => 32,
            SignatureType::Ethereum => 65,
        }
    }
}

/// Why bytes are not a data item. Messages name the field and the byte offset.
#[derive(Debug, thiserror::Error)]
pub enum DataItemError {
    #[error("data item is {len} bytes; at most {max} are accepted")]
    TooLarge { len: usize, max: usize },
    #[error("unknown data item signature type {0} at offset 0 (known: 1 Arweave, 2 Ed25519, 3 Ethereum)")]
    UnknownSignatureType(u16),
    #[error("data item truncated: {field} needs {needed} bytes at offset {offset}, {left} left")]
    Truncated {
        field: &'static str,
        needed: u64,
        offset: usize,
        left: usize,
    },
    #[error("data item {field} presence byte at offset {offset} is {value}; expected 0 or 1")]
    BadPresenceByte {
        field: &'static str,
        offset: usize,
        value: u8,
    },
    #[error("data item has {count} tags; at most {TAG_COUNT_MAX} are allowed")]
    TooManyTags { count: u64 },
    #[error("tag {index}'s {field} is {len} bytes; at most {max} are allowed")]
    TagTooLarge {
        index: usize,
        field: &'static str,
        len: u64,
        max: usize,
    },
    #[error("bad data item tags: {0}")]
    BadTags(String),
}

/// Why a data item's signature was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    #[error("data item signature does not verify")]
    Invalid,
    #[error("data item owner is not a usable public key: {0}")]
    BadKey(String),
}

/// A parsed (or freshly signed) ANS-104 data item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataItem {
    pub signature_type: SignatureType,
    /// Exactly `signature_type.signature_len()` bytes in a well-formed item.
    pub signature: Vec<u8>,
    /// The public key, exactly `signature_type.owner_len()` bytes in a well-formed item: the
    /// big-endian RSA modulus, the Ed25519 point, or the uncompressed secp256k1 point.
    pub owner: Vec<u8>,
    pub target: Option<[u8; 32]>,
    pub anchor: Option<[u8; 32]>,
    pub tags: Vec<Tag>,
    pub data: Vec<u8>,
}

impl DataItem {
    /// Parses the binary form. Checks the size limit, every field bound, presence bytes, tag
    /// limits and the canonical tag encoding; does not verify the signature.
    pub fn parse(bytes: &[u8]) -> Result<DataItem, DataItemError> {
        if bytes.len() > DATA_ITEM_BYTES_MAX {
            return Err(DataItemError::TooLarge {
                len: bytes.len(),
                max: DATA_ITEM_BYTES_MAX,
            });
        }
        let mut cursor = Cursor { bytes, offset: 0 };
        let type_raw = u16::from_le_bytes(cursor.take_array("signature type")?);
        let signature_type = SignatureType::from_u16(type_raw).ok_or(DataItemError::UnknownSignatureType(type_raw))?;
        let signature = cursor
            .take("signature", signature_type.signature_len() as u64)?
            .to_vec();
        let owner = cursor.take("owner", signature_type.owner_len() as u64)?.to_vec();
        let target = cursor.take_optional_id("target")?;
        let anchor = cursor.take_optional_id("anchor")?;
        let tag_count = u64::from_le_bytes(cursor.take_array("tag count")?);
        let tag_bytes_len = u64::from_le_bytes(cursor.take_array("tag bytes length")?);
        if tag_count > TAG_COUNT_MAX as u64 {
            return Err(DataItemError::TooManyTags { count: tag_count });
        }
        let tags_offset = cursor.offset;
        let tag_bytes = cursor.take("tags", tag_bytes_len)?;
        let tags = decode_tags(tag_bytes, tag_count).map_err(|error| match error {
            DataItemError::BadTags(message) => {
                DataItemError::BadTags(format!("{message} (tag bytes begin at offset {tags_offset})"))
            }
            other => other,
        })?;
        let data = bytes[cursor.offset..].to_vec();
        Ok(DataItem {
            signature_type,
            signature,
            owner,
            target,
            anchor,
            tags,
            data,
        })
    }

    /// The binary form. For a parsed item this is exactly the parsed bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let tag_bytes = encode_tags(&self.tags);
        let mut out = Vec::with_capacity(
            2 + self.signature.len() + self.owner.len() + 2 * 33 + 16 + tag_bytes.len() + self.data.len(),
        );
        out.extend_from_slice(&self.signature_type.as_u16().to_le_bytes());
        out.extend_from_slice(&self.signature);
        out.extend_from_slice(&self.owner);
        for field in [&self.target, &self.anchor] {
            match field {
                Some(id) => {
                    out.push(1);
                    out.extend_from_slice(id);
                }
                None => out.push(0),
            }
        }
        out.extend_from_slice(&(self.tags.len() as u64).to_le_bytes());
        out.extend_from_slice(&(tag_bytes.len() as u64).to_le_bytes());
        out.extend_from_slice(&tag_bytes);
        out.extend_from_slice(&self.data);
        out
    }

    /// The item's id: SHA-256 of the signature bytes.
    pub fn id(&self) -> ItemId {
        ItemId(Sha256::digest(&self.signature).into())
    }

    /// The owner's address: SHA-256 of the owner bytes, for every signature type. For RSA and
    /// Ed25519 this is the Arweave / AO address. For Ethereum (type 3) it is what the reference
    /// SU and MU compute too (SHA-256 of the 65-byte key), not the 20-byte Ethereum address.
    pub fn owner_address(&self) -> Address {
        Address(Sha256::digest(&self.owner).into())
    }

    /// The 48-byte message that is signed: the deep hash of
    /// `["dataitem", "1", "<type>", owner, target, anchor, tags, data]`, where an absent target
    /// or anchor is an empty blob and tags are the Avro bytes.
    pub fn signing_hash(&self) -> [u8; 48] {
        let type_text = self.signature_type.as_u16().to_string();
        let tag_bytes = encode_tags(&self.tags);
        let target: &[u8] = self.target.as_ref().map_or(&[], |t| t.as_slice());
        let anchor: &[u8] = self.anchor.as_ref().map_or(&[], |a| a.as_slice());
        deep_hash(&DeepHashItem::List(vec![
            DeepHashItem::Blob(b"dataitem"),
            DeepHashItem::Blob(b"1"),
            DeepHashItem::Blob(type_text.as_bytes()),
            DeepHashItem::Blob(&self.owner),
            DeepHashItem::Blob(target),
            DeepHashItem::Blob(anchor),
            DeepHashItem::Blob(&tag_bytes),
            DeepHashItem::Blob(&self.data),
        ]))
    }

    /// Verifies the signature against the owner.
    ///
    /// - Arweave (1): RSA-PSS with SHA-256 and MGF1-SHA-256 over the 48-byte deep hash, with
    ///   whatever salt length the signer chose (arbundles in Node uses the maximum, 478; the
    ///   reference SU and Hewitt use 32). The salt length is recovered from the encoded message
    ///   (RFC 8017 EMSA-PSS-VERIFY with unknown sLen), then the rsa crate verifies with it.
    /// - Ed25519 (2): RFC 8032 verification (cofactorless, canonical `S` only, as OpenSSL and
    ///   HyperBEAM do) over the 48-byte deep hash.
    /// - Ethereum (3): secp256k1 ECDSA over EIP-191's prefixed keccak-256 of the deep hash
    ///   (`keccak256("\x19Ethereum Signed Message:\n48" ‖ hash)`, what ethers' `signMessage`
    ///   and arbundles' `EthereumSigner` sign). The signature is r ‖ s ‖ v with v ∈ {27, 28}:
    ///   `s` must be low and the public key recovered with v must be the owner, so exactly one
    ///   encoding of a signature is valid and an item's id cannot be changed by re-encoding it.
    pub fn verify(&self) -> Result<(), SignatureError> {
        let expected_owner = self.signature_type.owner_len();
        if self.owner.len() != expected_owner {
            return Err(SignatureError::BadKey(format!(
                "owner is {} bytes; signature type {:?} needs {expected_owner}",
                self.owner.len(),
                self.signature_type
            )));
        }
        if self.signature.len() != self.signature_type.signature_len() {
            return Err(SignatureError::Invalid);
        }
        let message = self.signing_hash();
        match self.signature_type {
            SignatureType::Arweave => verify_rsa_pss(&self.owner, &message, &self.signature),
            SignatureType::Ed25519 => verify_ed25519(&self.owner, &message, &self.signature),
            SignatureType::Ethereum => verify_ethereum(&self.owner, &message, &self.signature),
        }
    }

    /// The value of the first tag called `name`.
    pub fn tag(&self, name: &str) -> Option<&str> {
        tag_value(&self.tags, name)
    }
}

fn verify_ethereum(owner: &[u8], message: &[u8], signature: &[u8]) -> Result<(), SignatureError> {
    use k256::ecdsa::{RecoveryId, Signature, VerifyingKey};
    use sha3::{Digest as _, Keccak256};
    let key = VerifyingKey::from_sec1_bytes(owner)
        .map_err(|_| SignatureError::BadKey("Ethereum owner is not an uncompressed secp256k1 public key".to_owned()))?;
    let (rs, v) = signature.split_at(64);
    let recovery = match v[0] {
        27 | 28 => RecoveryId::from_byte(v[0] - 27).ok_or(SignatureError::Invalid)?,
        _ => return Err(SignatureError::Invalid),
    };
    let signature = Signature::from_slice(rs).map_err(|_| SignatureError::Invalid)?;
    if signature.normalize_s().is_some() {
        // High s: the other encoding of the same signature; refused, as libsecp256k1 does.
        return Err(SignatureError::Invalid);
    }
    let mut hasher = Keccak256::new();
    hasher.update(format!("\x19Ethereum Signed Message:\n{}", message.len()).as_bytes());
    hasher.update(message);
    let digest = hasher.finalize();
    let recovered =
        VerifyingKey::recover_from_prehash(&digest, &signature, recovery).map_err(|_| SignatureError::Invalid)?;
    if recovered == key {
        Ok(())
    } else {
        Err(SignatureError::Invalid)
    }
}

/// Ed25519 public keys this thread decoded lately, by their bytes: decoding one (decompressing
/// the point, a square root) is about a tenth of a verification, and clients sign many
/// messages with one key. At [`KEYS_CACHED`] the cache starts over.
const KEYS_CACHED: usize = 4096;

thread_local! {
    static ED25519_KEYS: std::cell::RefCell<std::collections::HashMap<[u8; 32], ed25519_dalek::VerifyingKey>> =
        std::cell::RefCell::default();
}

fn verify_ed25519(owner: &[u8], message: &[u8], signature: &[u8]) -> Result<(), SignatureError> {
    let bytes: [u8; 32] = owner
        .try_into()
        .map_err(|_| SignatureError::BadKey("Ed25519 owner is not 32 bytes".to_owned()))?;
    let key = match ED25519_KEYS.with_borrow(|keys| keys.get(&bytes).copied()) {
        Some(key) => key,
        None => {
            let key = ed25519_dalek::VerifyingKey::from_bytes(&bytes)
                .map_err(|error| SignatureError::BadKey(format!("Ed25519 owner: {error}")))?;
            ED25519_KEYS.with_borrow_mut(|keys| {
                if keys.len() >= KEYS_CACHED {
                    keys.clear();
                }
                keys.insert(bytes, key);
            });
            key
        }
    };
    let signature = ed25519_dalek::Signature::from_slice(signature).map_err(|_| SignatureError::Invalid)?;
    key.verify(message, &signature).map_err(|_| SignatureError::Invalid)
}

/// RSA-PSS (SHA-256, MGF1-SHA-256) verification of `message` with the salt length recovered
/// from the signature: RFC 8017 9.1.2 EMSA-PSS-VERIFY done once over one RSA public-key
/// operation (the costly step, ~1 ms here), with sLen read from where the 0x01 separator sits.
fn verify_rsa_pss(owner: &[u8], message: &[u8], signature: &[u8]) -> Result<(), SignatureError> {
    let key = RsaPublicKey::new(BigUint::from_bytes_be(owner), BigUint::from(RSA_PUBLIC_EXPONENT))
        .map_err(|error| SignatureError::BadKey(format!("RSA owner: {error}")))?;
    if key.n().bits() != RSA_MODULUS_BITS {
        return Err(SignatureError::BadKey(format!(
            "RSA owner is a {}-bit modulus; Arweave keys are {RSA_MODULUS_BITS}-bit",
            key.n().bits()
        )));
    }
    let hashed = Sha256::digest(message);
    if pss_verify(&key, &hashed, signature) {
        Ok(())
    } else {
        Err(SignatureError::Invalid)
    }
}

/// RFC 8017 9.1.2 EMSA-PSS-VERIFY with sLen unknown: steps 1-10 recover the salt from the
/// encoded message (the separator 0x01 after the zero padding fixes its length), steps 11-14
/// check H = SHA-256(0x00 × 8 ‖ mHash ‖ salt). `key` is a 4096-bit key and `hashed` the SHA-256
/// of the message.
fn pss_verify(key: &RsaPublicKey, hashed: &[u8], signature: &[u8]) -> bool {
    pss_salt(key, hashed, signature).is_some()
}

/// The salt of a valid signature, `None` for any malformed or non-matching one.
fn pss_salt(key: &RsaPublicKey, hashed: &[u8], signature: &[u8]) -> Option<Vec<u8>> {
    const HASH_LEN: usize = 32;
    let key_len = key.size();
    if signature.len() != key_len || hashed.len() != HASH_LEN {
        return None;
    }
    let s = BigUint::from_bytes_be(signature);
    if &s >= key.n() {
        return None;
    }
    // emBits = modBits - 1; for a modulus whose bit count is a multiple of 8 (4096) the encoded
    // message is one byte shorter than the key and that byte of the RSA output must be zero.
    let em_bits = key.n().bits() - 1;
    let em_len = em_bits.div_ceil(8);
    let m = s.modpow(key.e(), key.n()).to_bytes_be();
    if m.len() > em_len {
        return None;
    }
    let mut em = vec![0u8; em_len - m.len()];
    em.extend_from_slice(&m);
    if em_len < HASH_LEN + 2 || em[em_len - 1] != 0xbc {
        return None;
    }
    let db_len = em_len - HASH_LEN - 1;
    let (masked_db, rest) = em.split_at(db_len);
    let h = &rest[..HASH_LEN];
    let unused_bits = 8 * em_len - em_bits;
    let top_mask = 0xffu8 >> unused_bits;
    if masked_db[0] & !top_mask != 0 {
        return None;
    }
    let mut db = masked_db.to_vec();
    mgf1_sha256_xor(h, &mut db);
    db[0] &= top_mask;
    // DB = PS (zeros) ‖ 0x01 ‖ salt.
    let one = db.iter().position(|&byte| byte != 0)?;
    if db[one] != 0x01 {
        return None;
    }
    let salt = &db[one + 1..];
    let expected = Sha256::new()
        .chain_update([0u8; 8])
        .chain_update(hashed)
        .chain_update(salt)
        .finalize();
    (expected.as_slice() == h).then(|| salt.to_vec())
}

/// XORs `out` with MGF1-SHA-256(seed, out.len()).
fn mgf1_sha256_xor(seed: &[u8], out: &mut [u8]) {
    for (counter, chunk) in out.chunks_mut(32).enumerate() {
        let mask = Sha256::new()
            .chain_update(seed)
            .chain_update((counter as u32).to_be_bytes())
            .finalize();
        for (byte, mask_byte) in chunk.iter_mut().zip(mask.iter()) {
            *byte ^= mask_byte;
        }
    }
}

/// A bounds-checked reader over the item's bytes; errors name the field and its offset.
struct Cursor<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, field: &'static str, len: u64) -> Result<&'a [u8], DataItemError> {
        let left = self.bytes.len() - self.offset;
        if len > left as u64 {
            return Err(DataItemError::Truncated {
                field,
                needed: len,
                offset: self.offset,
                left,
            });
        }
        // len <= left, so it fits in usize.
        let slice = &self.bytes[self.offset..self.offset + len as usize];
        self.offset += len as usize;
        Ok(slice)
    }

    fn take_array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DataItemError> {
        let slice = self.take(field, N as u64)?;
        let mut array = [0u8; N];
        array.copy_from_slice(slice);
        Ok(array)
    }

    /// A presence byte, then 32 bytes only when it is 1.
    fn take_optional_id(&mut self, field: &'static str) -> Result<Option<[u8; 32]>, DataItemError> {
        let offset = self.offset;
        let [presence] = self.take_array::<1>(field)?;
        match presence {
            0 => Ok(None),
            1 => Ok(Some(self.take_array::<32>(field)?)),
            value => Err(DataItemError::BadPresenceByte { field, offset, value }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signer::Signer;
    use rsa::Pss;
    use rsa::RsaPrivateKey;

    fn hex(text: &str) -> Vec<u8> {
        assert!(text.len().is_multiple_of(2), "odd hex length");
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("test vector is hex"))
            .collect()
    }

    /// The test binary's one 4096-bit key (generation is slow).
    fn rsa_key() -> &'static RsaPrivateKey {
        crate::signer::tests::rsa_key()
    }

    /// A named change to a signed item that must break its signature.
    type Tamper = (&'static str, fn(&mut DataItem));

    fn ed25519_signer() -> Signer {
        Signer::Ed25519(ed25519_dalek::SigningKey::from_bytes(&[42u8; 32]))
    }

    fn sample_tags() -> Vec<Tag> {
        vec![
            Tag::new("Data-Protocol", "ao"),
            Tag::new("Type", "Message"),
            Tag::new("Action", "Eval"),
        ]
    }

    fn sample_items() -> Vec<DataItem> {
        let signer = ed25519_signer();
        vec![
            signer.sign(None, None, vec![], vec![]),
            signer.sign(Some([1; 32]), None, sample_tags(), b"hello".to_vec()),
            signer.sign(None, Some([2; 32]), vec![Tag::new("a", "b")], vec![0; 100]),
            signer.sign(Some([3; 32]), Some([4; 32]), sample_tags(), b"x".to_vec()),
        ]
    }

    #[test]
    fn round_trips_through_bytes() {
        for item in sample_items() {
            let bytes = item.to_bytes();
            let parsed = DataItem::parse(&bytes).unwrap();
            assert_eq!(parsed, item);
            assert_eq!(parsed.to_bytes(), bytes);
            parsed.verify().unwrap();
        }
    }

    #[test]
    fn layout_matches_the_spec() {
        let item = ed25519_signer().sign(Some([1; 32]), None, vec![Tag::new("a", "b")], b"zz".to_vec());
        let bytes = item.to_bytes();
        assert_eq!(&bytes[0..2], &[2, 0]);
        assert_eq!(&bytes[2..66], item.signature.as_slice());
        assert_eq!(&bytes[66..98], item.owner.as_slice());
        assert_eq!(bytes[98], 1);
        assert_eq!(&bytes[99..131], &[1; 32]);
        assert_eq!(bytes[131], 0);
        assert_eq!(&bytes[132..140], &1u64.to_le_bytes());
        assert_eq!(&bytes[140..148], &6u64.to_le_bytes());
        assert_eq!(&bytes[148..154], &[0x02, 0x02, b'a', 0x02, b'b', 0x00]);
        assert_eq!(&bytes[154..], b"zz");
        assert_eq!(bytes.len(), 156);
    }

    #[test]
    fn every_truncation_is_an_error() {
        for item in sample_items() {
            let bytes = item.to_bytes();
            // Cutting inside the data yields a valid item with less data; everything before the
            // data must be refused.
            let data_start = bytes.len() - item.data.len();
            for len in 0..data_start {
                assert!(DataItem::parse(&bytes[..len]).is_err(), "prefix of {len} bytes parsed");
            }
            for len in data_start..=bytes.len() {
                let parsed = DataItem::parse(&bytes[..len]).unwrap();
                assert_eq!(parsed.data.len(), len - data_start);
                assert_eq!(parsed.verify().is_ok(), len == bytes.len());
            }
        }
        let rsa = Signer::Rsa(Box::new(rsa_key().clone()));
        let bytes = rsa.sign(None, None, sample_tags(), vec![]).to_bytes();
        for len in 0..bytes.len() {
            assert!(DataItem::parse(&bytes[..len]).is_err(), "prefix of {len} bytes parsed");
        }
    }

    #[test]
    fn errors_name_field_and_offset() {
        let bytes = ed25519_signer()
            .sign(Some([1; 32]), Some([2; 32]), vec![Tag::new("a", "b")], vec![])
            .to_bytes();
        let check = |input: &[u8], expected: &str| {
            let message = DataItem::parse(input).unwrap_err().to_string();
            assert!(message.contains(expected), "got {message:?}, expected {expected:?}");
        };
        check(&[], "signature type needs 2 bytes at offset 0, 0 left");
        check(&[9, 0], "unknown data item signature type 9");
        check(&[1, 0, 0, 0], "signature needs 512 bytes at offset 2, 2 left");
        check(&bytes[..70], "owner needs 32 bytes at offset 66, 4 left");
        check(&bytes[..98], "target needs 1 bytes at offset 98, 0 left");
        check(&bytes[..110], "target needs 32 bytes at offset 99, 11 left");
        check(&bytes[..140], "anchor needs 32 bytes at offset 132, 8 left");
        check(&bytes[..172], "tag bytes length needs 8 bytes at offset 172, 0 left");
        check(&bytes[..181], "tags needs 6 bytes at offset 180, 1 left");

        for (offset, field) in [(98, "target"), (131, "anchor")] {
            for value in [2u8, 0x80, 0xff] {
                let mut bad = bytes.clone();
                bad[offset] = value;
                check(
                    &bad,
                    &format!("{field} presence byte at offset {offset} is {value}; expected 0 or 1"),
                );
            }
        }

        let mut bad_tags = bytes.clone();
        bad_tags[184] = 0xff; // inside the tag value "b"
        check(&bad_tags, "tag bytes begin at offset 180");

        let mut many = bytes.clone();
        many[164..172].copy_from_slice(&129u64.to_le_bytes());
        check(&many, "data item has 129 tags; at most 128");

        let mut huge_len = bytes.clone();
        huge_len[172..180].copy_from_slice(&u64::MAX.to_le_bytes());
        check(&huge_len, &format!("tags needs {} bytes at offset 180", u64::MAX));

        let too_big = vec![0u8; DATA_ITEM_BYTES_MAX + 1];
        assert!(matches!(DataItem::parse(&too_big), Err(DataItemError::TooLarge { .. })));
    }

    #[test]
    fn parse_survives_arbitrary_bytes() {
        // A cheap deterministic fuzz: mutate each byte of a valid item's header and random
        // buffers drawn from a fixed-seed generator; parse must return, never panic.
        let bytes = ed25519_signer()
            .sign(Some([1; 32]), Some([2; 32]), sample_tags(), b"data".to_vec())
            .to_bytes();
        for index in 0..bytes.len() {
            for value in [0u8, 1, 2, 0x7f, 0x80, 0xff] {
                let mut mutated = bytes.clone();
                mutated[index] = value;
                if let Ok(item) = DataItem::parse(&mutated) {
                    assert_eq!(item.to_bytes(), mutated);
                }
            }
        }
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..2000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let len = (state % 300) as usize;
            let mut buffer: Vec<u8> = (0..len)
                .map(|i| (state.rotate_left(i as u32 % 64) >> 3) as u8)
                .collect();
            if let Some(first) = buffer.first_mut() {
                *first = (state % 4) as u8;
            }
            let _ = DataItem::parse(&buffer);
        }
    }

    #[test]
    fn signs_and_verifies_both_types() {
        let signers = [ed25519_signer(), Signer::Rsa(Box::new(rsa_key().clone()))];
        for signer in &signers {
            let item = signer.sign(Some([5; 32]), Some([6; 32]), sample_tags(), b"payload".to_vec());
            assert_eq!(item.signature_type, signer.signature_type());
            assert_eq!(item.signature.len(), item.signature_type.signature_len());
            assert_eq!(item.owner, signer.owner());
            assert_eq!(item.owner_address(), signer.address());
            item.verify().unwrap();
            let parsed = DataItem::parse(&item.to_bytes()).unwrap();
            parsed.verify().unwrap();
            assert_eq!(parsed.id(), item.id());
            assert_eq!(parsed.tag("Action"), Some("Eval"));
        }
    }

    #[test]
    fn tampering_fails_verification() {
        let signers = [ed25519_signer(), Signer::Rsa(Box::new(rsa_key().clone()))];
        for signer in &signers {
            let item = signer.sign(Some([5; 32]), None, sample_tags(), b"payload".to_vec());
            // Verified first, so that the owner's decoded key is cached: a tampered item with
            // that owner must fail all the same.
            item.verify().expect("the untampered item verifies");
            let tampers: [Tamper; 8] = [
                ("signature", |i| i.signature[10] ^= 1),
                ("tag value", |i| i.tags[0].value.push('!')),
                ("tag order", |i| i.tags.swap(0, 1)),
                ("added tag", |i| i.tags.push(Tag::new("X", "y"))),
                ("data", |i| i.data[0] ^= 1),
                ("target", |i| i.target = None),
                ("anchor", |i| i.anchor = Some([0; 32])),
                ("owner", |i| {
                    let last = i.owner.len() - 1;
                    i.owner[last] ^= 2;
                }),
            ];
            for (what, tamper) in tampers {
                let mut bad = item.clone();
                tamper(&mut bad);
                assert!(
                    bad.verify().is_err(),
                    "{:?}: tampered {what} verified",
                    item.signature_type
                );
            }
        }
    }

    #[test]
    fn rsa_verifies_any_salt_length() {
        let key = rsa_key();
        let signer = Signer::Rsa(Box::new(key.clone()));
        let template = signer.sign(None, None, sample_tags(), b"salted".to_vec());
        let hashed = Sha256::digest(template.signing_hash());
        let salt_max = 512 - 32 - 2;
        for salt_len in [0, 1, 20, 32, 64, salt_max] {
            let signature = key
                .sign_with_rng(
                    &mut rsa::rand_core::OsRng,
                    Pss::new_with_salt::<Sha256>(salt_len),
                    &hashed,
                )
                .unwrap();
            let item = DataItem {
                signature,
                ..template.clone()
            };
            let public = key.to_public_key();
            assert_eq!(
                pss_salt(&public, &hashed, &item.signature).map(|s| s.len()),
                Some(salt_len)
            );
            // The rsa crate, told the salt length, agrees on this signature and on a damaged one.
            let reference = |signature: &[u8]| {
                rsa::traits::SignatureScheme::verify(
                    Pss::new_with_salt::<Sha256>(salt_len),
                    &public,
                    &hashed,
                    signature,
                )
                .is_ok()
            };
            assert!(reference(&item.signature));
            let mut damaged = item.signature.clone();
            damaged[100] ^= 0x10;
            assert!(!reference(&damaged));
            assert!(!pss_verify(&public, &hashed, &damaged));
            item.verify().unwrap_or_else(|e| panic!("salt length {salt_len}: {e}"));

            let mut wrong = item.clone();
            wrong.data.push(0);
            assert!(matches!(wrong.verify(), Err(SignatureError::Invalid)));
        }
    }

    #[test]
    fn rsa_rejects_bad_keys_and_signatures() {
        let signer = Signer::Rsa(Box::new(rsa_key().clone()));
        let item = signer.sign(None, None, vec![], b"k".to_vec());

        let mut small = item.clone();
        small.owner = vec![0; 512];
        small.owner[511] = 0xff;
        assert!(matches!(small.verify(), Err(SignatureError::BadKey(_))));

        let mut all_ones = item.clone();
        all_ones.signature = vec![0xff; 512];
        assert!(matches!(all_ones.verify(), Err(SignatureError::Invalid)));

        let mut zero = item.clone();
        zero.signature = vec![0; 512];
        assert!(matches!(zero.verify(), Err(SignatureError::Invalid)));

        let mut short = item.clone();
        short.signature.pop();
        assert!(matches!(short.verify(), Err(SignatureError::Invalid)));
    }

    /// Signed by the npm package @dha-team/arbundles 1.0.3 (`EthereumSigner` over the private
    /// key 01 02 .. 20, data "eth", one tag Type=Message), printed as hex of `item.getRaw()`
    /// with `item.id`.
    const ETHEREUM_ITEM_HEX: &str = "03007b108905767caad5159d2076d9829731d8492cd84a5d479e545b19d4fed22f4f2be1a4e0a907b9d05f05fcc1938f734d03a0df7375443bebed422fe5c18086691b0484bf7562262bbd6940085748f3be6afa52ae317155181ece31b66351ccffa4b08cc43d63b2859d469fee15f31c9edb5324266e6fd0407e87382d60fc4511acd8000001000000000000000f000000000000000208547970650e4d65737361676500657468";
    const ETHEREUM_ITEM_ID: &str = "Frr-_nBLDmRpHGYtlP4x900iZrhIOJSwu8BbJTHIWGw";

    #[test]
    fn ethereum_items_from_arbundles_verify_and_tampering_is_refused() {
        let bytes: Vec<u8> = (0..ETHEREUM_ITEM_HEX.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&ETHEREUM_ITEM_HEX[i..i + 2], 16).unwrap())
            .collect();
        let item = DataItem::parse(&bytes).unwrap();
        assert_eq!(item.signature_type, SignatureType::Ethereum);
        assert_eq!(item.id().to_string(), ETHEREUM_ITEM_ID);
        assert_eq!(item.to_bytes(), bytes);
        item.verify().unwrap();
        assert_eq!(item.owner_address().0, <[u8; 32]>::from(Sha256::digest(&item.owner)));

        let mut other_v = item.clone();
        other_v.signature[64] ^= 1; // 27 <-> 28: recovers another key
        assert!(matches!(other_v.verify(), Err(SignatureError::Invalid)));
        let mut bad_v = item.clone();
        bad_v.signature[64] = 0;
        assert!(matches!(bad_v.verify(), Err(SignatureError::Invalid)));
        let mut flipped = item.clone();
        flipped.data = b"eti".to_vec();
        assert!(matches!(flipped.verify(), Err(SignatureError::Invalid)));
        let mut garbage_owner = item.clone();
        garbage_owner.owner = vec![4; 65];
        assert!(matches!(garbage_owner.verify(), Err(SignatureError::BadKey(_))));
    }

    // Vectors signed by the npm package arbundles 0.11.2 under Node 20 (a real third-party
    // signer): `createData(data, signer, {target, anchor, tags})` then `item.sign(signer)`,
    // printed as hex of `item.getRaw()` with `item.id`. Ed25519: `SolanaSigner` (signature type
    // 2) over the seed 01 02 .. 20. RSA: `ArweaveSigner` with signer::tests::TEST_RSA_JWK, which
    // signs with Node's default PSS salt length, the maximum (478). The other direction (arbundles'
    // `DataItem.verify` accepts Hewitt's Ed25519, RSA and assignment items) was checked by hand
    // when this codec was written.
    const ARBUNDLES_ED25519_SEED: &str = "0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20";
    const ARBUNDLES_ED25519_ITEM: &str = concat!(
        "0200a342a28d0cf8ea7578ed860586394c055d13ed6ceede355b023ee2803ea5e215013f4d3a77c6f224de53e1675281",
        "7745576d86fe8793eeb8dde7192e8cbd320079b5562e8fe654f94078b112e8a98ba7901f853ae695bed7e0e3910bad04",
        "966401070707070707070707070707070707070707070707070707070707070707070701090909090909090909090909",
        "090909090909090909090909090909090909090903000000000000002c00000000000000061a446174612d50726f746f",
        "636f6c04616f0c416374696f6e084576616c0cc3896d6f6a690ac3bce29c930068656c6c6f2066726f6d20617262756e",
        "646c6573",
    );
    const ARBUNDLES_ED25519_ID: &str = "8w5joUOXsbGYa5_H_6kYwb9CsqCiPnSyNuDkaQy5QmM";
    const ARBUNDLES_ED25519_BARE_ITEM: &str = concat!(
        "0200d93cf8927ee1a50a9de9df40984d9b2d3744cf9a1d7f6107cd8354ea211daa984f7a032c766b4350354cd09eae66",
        "4576a7041530d76cf9df7c8adf7283d9d20979b5562e8fe654f94078b112e8a98ba7901f853ae695bed7e0e3910bad04",
        "9664000000000000000000000000000000000000000102ff",
    );
    const ARBUNDLES_ED25519_BARE_ID: &str = "Dcid-xHuyiAT0gETXpNR6PhGysHPIrE8N0BgT6fna4k";
    const ARBUNDLES_RSA_ITEM: &str = concat!(
        "01005f4b44600c4630e5f80751b937dfcbd59d12e6d461d69d25f724661381579c9ca95547085e655a3b65f0792418fe",
        "c25f16ff8f28ee08c237def7b881269a2af66c1b996c8d843289222d11e11492598d24da9ac1cd24db63842148a0e49a",
        "f1daa073b7d7e4b7dfcf4504fc7bd3c2367ac83cf8794b49d6045a479a43fa5699ef3f0d55490cf90e5f7c453a07a6cc",
        "bdc319697db674e0bc6707e2d72816d4130a9c6570a4259b8b995dbf308cf671e1e96e5ef9bbeeea45cbc4edec4bdfa7",
        "44fa08b67e432df7715c1a991e0d147a9683207cd497a33d3c441ed8bf9c932a7445103018bd94c8979824d856ecc424",
        "404b9b790fe9d43032698339b45c80654b67df7aa3113134f05a7b3807d162b780484f9589e12e7e6610ef00ce761811",
        "187d2c5afc7a2db28b2c473a5a05fff221f6dc9d45c5f6d48966c987322d73a833d60a5b4127bf02d7370d994f965399",
        "76dd02b923cea4078f3f7fe9be2b4f550e38abcd486fcfe65b8b11e2f12c0d98784fb2bbf4831783fcbf14f5d3cd7c88",
        "ad81506059656f138b707292bf1a65b93a34691869fb472ac6d0d8f736adffa1b95e43c4894ddf615c2b1c8c0709d3db",
        "0a3368f1d15ca0f6a4525118c68d95b685c2bd15de6d77236a07748bd05c939980e5469cfde187a121b843c44c53dda8",
        "926951fff26c0b80603a3939eeb9d5f8a6fe6a6fd2808654eca004d4d35245715796ab9e3709d0c4ecfbe9c727c6888c",
        "aaa911c73b59abafb38918d0443fd0da9be72da91eb1a1c3d4ea519f5073be7f4e070c057c5b50586d4291fabde20827",
        "daacc0ee78e3a77ae9372bdfc079236ec6ac52ede1ed59bc0988a9933657325f6364c8fa926299c7e91fd14c32b437dc",
        "667789648dc00d57df7a4e4e0bd8052cf32313df999ce9d56970d65ba023d862704c97863b1edd0c8406a23cb65828b8",
        "38d99d1fa88215aa0a855a41849b6322392484e959849a1bd4cb139e7dc1665b1bb154822fd9ac8cb9e889b9c2a75f32",
        "b66327ad1b5c7e5c7d6bb3a74d0cd72389d22868c8ceae421affe9875615c1ce07dcb8ce44f76730dc84fce732ec3fa2",
        "ee4d6b7dbcfdefeb3018f65b0fb73d91e48b63a4c5f28cb73bc366f55825df3fb1e11fa500f656fda66b2b6741a44546",
        "c3700358cfaa135eb2ffe52c9a3d26ade32bfec4fca6f67b40d1d42ad48eac4e4a2823b66dc9a54282b51a1efff75f48",
        "6fd54e3df2ab742920b5b4dc65229ffe69c5cd299b05eeff405a7c963e9b13ac27fd86484849a48c66365156c8d7fe1f",
        "d2327242c154f3fb9fa0dee2fb62f60c3f08af50761eeee9b910cbbe75ae8a17a72cc74c5e5209e3ac2708da967dbf32",
        "1e98939c447d8d04604f42ecd7f52e3c8853f3acba10c7fc6a66e87c298420f8b36d8358510ed7a8809a209ea845f978",
        "690a13eb95a516ba7849f9cbc6b608bf1481010707070707070707070707070707070707070707070707070707070707",
        "0707070001000000000000000f000000000000000208547970650e4d65737361676500727361207369676e6564",
    );
    const ARBUNDLES_RSA_ID: &str = "vMahIaWDPkhHTtTsjjikh4A30swpeXebdBOKamYEea8";

    #[test]
    fn verifies_items_signed_by_arbundles() {
        let check = |hex_item: &str, id: &str| {
            let bytes = hex(hex_item);
            let item = DataItem::parse(&bytes).unwrap();
            assert_eq!(item.to_bytes(), bytes);
            assert_eq!(item.id().to_string(), id);
            item.verify().unwrap_or_else(|e| panic!("{id}: {e}"));
            let mut tampered = item.clone();
            tampered.data.push(b'!');
            assert!(tampered.verify().is_err());
            item
        };

        let item = check(ARBUNDLES_ED25519_ITEM, ARBUNDLES_ED25519_ID);
        assert_eq!(item.signature_type, SignatureType::Ed25519);
        assert_eq!(item.target, Some([7; 32]));
        assert_eq!(item.anchor, Some([9; 32]));
        assert_eq!(item.data, b"hello from arbundles");
        assert_eq!(
            item.tags,
            vec![
                Tag::new("Data-Protocol", "ao"),
                Tag::new("Action", "Eval"),
                Tag::new("Émoji", "ü✓"),
            ]
        );
        // Same key, so Hewitt's signer reproduces arbundles' deterministic signature.
        let seed: [u8; 32] = hex(ARBUNDLES_ED25519_SEED).try_into().unwrap();
        let ours = Signer::Ed25519(ed25519_dalek::SigningKey::from_bytes(&seed)).sign(
            item.target,
            item.anchor,
            item.tags.clone(),
            item.data.clone(),
        );
        assert_eq!(ours.to_bytes(), item.to_bytes());

        let bare = check(ARBUNDLES_ED25519_BARE_ITEM, ARBUNDLES_ED25519_BARE_ID);
        assert_eq!((bare.target, bare.anchor), (None, None));
        assert!(bare.tags.is_empty());
        assert_eq!(bare.data, [0, 1, 2, 255]);

        let rsa = check(ARBUNDLES_RSA_ITEM, ARBUNDLES_RSA_ID);
        assert_eq!(rsa.signature_type, SignatureType::Arweave);
        assert_eq!(rsa.tag("Type"), Some("Message"));
        assert_eq!(rsa.data, b"rsa signed");
        assert_eq!(rsa.owner, Signer::Rsa(Box::new(rsa_key().clone())).owner());
        let public = RsaPublicKey::new(BigUint::from_bytes_be(&rsa.owner), BigUint::from(RSA_PUBLIC_EXPONENT)).unwrap();
        let hashed = Sha256::digest(rsa.signing_hash());
        assert_eq!(
            pss_salt(&public, &hashed, &rsa.signature).map(|s| s.len()),
            Some(512 - 32 - 2)
        );
    }
}
