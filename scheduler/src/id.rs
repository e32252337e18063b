//! Identifiers and ordinals of the AO vocabulary.
//!
//! Every AO object id is 32 bytes shown as 43 characters of unpadded base64url. Each kind of id
//! gets its own newtype so that a message id can never be passed where a process id is expected.
//! This module does no hashing and no I/O: ids are computed by `data_item` and `chain`.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

/// Error for a string that is not a 43-character base64url encoding of 32 bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a 32-byte base64url id: {0:?}")]
pub struct IdParseError(pub String);

/// Encodes bytes as unpadded base64url, the encoding AO uses for ids, keys and signatures.
pub fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes unpadded (or padded) base64url.
pub fn b64url_decode(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    URL_SAFE_NO_PAD.decode(text.trim_end_matches('='))
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// The raw 32 bytes.
            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&b64url(&self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self)
            }
        }

        impl FromStr for $name {
            type Err = IdParseError;
            fn from_str(text: &str) -> Result<Self, IdParseError> {
                let bytes = b64url_decode(text).map_err(|_| IdParseError(text.to_owned()))?;
                let raw: [u8; 32] = bytes.try_into().map_err(|_| IdParseError(text.to_owned()))?;
                Ok($name(raw))
            }
        }
    };
}

id_type!(
    /// The id of any data item: base64url(SHA-256(signature)).
    ItemId
);
id_type!(
    /// A process: the id of its `Type: Process` data item.
    ProcessId
);
id_type!(
    /// A message: the id of its `Type: Message` data item.
    MessageId
);
id_type!(
    /// A module: the id of its `Type: Module` data item.
    ModuleId
);
id_type!(
    /// An assignment: the id of the assignment data item the scheduler signs.
    AssignmentId
);
id_type!(
    /// A wallet address: base64url(SHA-256(owner public key)).
    Address
);
id_type!(
    /// A link of a process's hash chain (AO.md "Nonces and the hash chain").
    HashChain
);

impl From<ItemId> for ProcessId {
    fn from(id: ItemId) -> Self {
        ProcessId(id.0)
    }
}
impl From<ItemId> for MessageId {
    fn from(id: ItemId) -> Self {
        MessageId(id.0)
    }
}
impl From<ItemId> for ModuleId {
    fn from(id: ItemId) -> Self {
        ModuleId(id.0)
    }
}
impl From<ItemId> for AssignmentId {
    fn from(id: ItemId) -> Self {
        AssignmentId(id.0)
    }
}
impl From<ProcessId> for MessageId {
    /// A process's own data item is also the message of its nonce 0.
    fn from(id: ProcessId) -> Self {
        MessageId(id.0)
    }
}

/// The position of a message in its process's timeline. The process itself is nonce 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Nonce(pub u64);

/// Milliseconds since the Unix epoch, as AO assignments carry them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Timestamp(pub u64);

/// An Arweave block height, shown zero-padded to 12 digits on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockHeight(pub u64);

impl fmt::Display for BlockHeight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:012}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_round_trips_through_base64url() {
        let id = MessageId([7u8; 32]);
        let text = id.to_string();
        assert_eq!(text.len(), 43);
        assert_eq!(text.parse::<MessageId>().unwrap(), id);
    }

    #[test]
    fn id_rejects_wrong_length_and_alphabet() {
        assert!("abc".parse::<ProcessId>().is_err());
        assert!("!".repeat(43).parse::<ProcessId>().is_err());
    }

    #[test]
    fn block_height_is_zero_padded() {
        assert_eq!(BlockHeight(1393008).to_string(), "000001393008");
    }
}
