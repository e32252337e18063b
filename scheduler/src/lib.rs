//! The scheduler unit of Hewitt: the AO vocabulary (ids, tags, data items), the ANS-104 codec and
//! signatures, nonces and the hash chain, and the durable per-shard log.
//!
//! It knows nothing of wasm or sockets: the engine drives it, the messenger builds on its types.

pub mod id;
pub mod log;
pub mod record;

pub use id::{Address, AssignmentId, BlockHeight, HashChain, ItemId, MessageId, ModuleId, Nonce, ProcessId, Timestamp};
pub mod bundle;
pub mod chain;
pub mod data_item;
pub mod deep_hash;
pub mod signer;
pub mod tags;
pub use chain::{assignment_tags, genesis_hash_chain, next_hash_chain, sign_assignment, AssignmentFields};
pub use data_item::{DataItem, DataItemError, SignatureError, SignatureType, DATA_ITEM_BYTES_MAX};
pub use signer::{Signer, SignerError};
pub use tags::{Tag, TAG_COUNT_MAX, TAG_NAME_BYTES_MAX, TAG_VALUE_BYTES_MAX};
