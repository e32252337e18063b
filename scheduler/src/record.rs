//! The payloads Hewitt writes into the log: what one log record means.
//!
//! The log (`log`) frames and checksums opaque payloads tagged with a kind byte; this module gives
//! those kinds their meaning. Five kinds exist:
//!
//! - `KIND_MODULE` (1): the payload is the module's ANS-104 data item, byte for byte.
//! - `KIND_ASSIGNMENT` (2): one assignment of a message to a process's timeline (or, in logs
//!   written before `KIND_SPAWN`, of the process itself at nonce 0), followed by the assigned
//!   data item. Layout, little-endian:
//!
//! ```text
//! offset  size  field
//! 0       32    process id (raw)
//! 32      8     nonce (u64)
//! 40      8     timestamp, ms since the Unix epoch (u64)
//! 48      8     block height (u64)
//! 56      32    hash chain link of this nonce (raw)
//! 88      32    message id (raw; equals the process id at nonce 0)
//! 120     2     signature length S (u16)
//! 122     S     the scheduler's signature of the assignment data item
//! 122+S   ..    the assigned message's ANS-104 data item (the rest of the payload)
//! ```
//!
//! - `KIND_ASSIGNED` (3): an assignment made by an `assign` request (or a process's
//!   `Assignments`) of a message that is already in the log, in another process's timeline. The
//!   layout is that of `KIND_ASSIGNMENT` with the request's `exclude` inserted after the
//!   signature:
//!
//! ```text
//! 122+S   2     exclude length E (u16)
//! 124+S   E     exclude: UTF-8, comma-separated field names; empty when the request gave none
//! 124+S+E ..    a copy of the assigned message's ANS-104 data item
//! ```
//!
//!   The message is copied rather than referenced so that every record can be evaluated, checked
//!   and repaired on its own.
//!
//! - `KIND_SPAWN` (5): a process's own assignment (nonce 0, the message id equal to the process
//!   id) with the limits the process runs under, resolved when it was spawned from its tags, its
//!   module's tags and the node's defaults. The layout is that of `KIND_ASSIGNMENT` with the
//!   limits inserted after the signature:
//!
//! ```text
//! 122+S   8     memory limit in bytes (u64)
//! 130+S   8     compute limit: fuel per message (u64)
//! 138+S   ..    the process's ANS-104 data item
//! ```
//!
//!   Recording them makes a replay independent of the configuration the node runs with later:
//!   a node whose defaults changed still evaluates every process as it was spawned. Logs written
//!   before this kind existed hold their processes as `KIND_ASSIGNMENT` at nonce 0, whose limits
//!   are resolved again from the node's configuration.
//!
//! - `KIND_GATEWAY_MODULE` (4): a module fetched from an Arweave gateway (`/raw/{id}` for the
//!   bytes, GraphQL for the owner and tags) because a process named it. There is no signed item
//!   to keep, so the record holds what the gateway said, and the node trusts its configured
//!   gateway for it, as AO's compute units do:
//!
//! ```text
//! offset  size  field
//! 0       32    module id (raw)
//! 32      4     header length H (u32)
//! 36      H     header: UTF-8 JSON {"owner":{"address","key"},"tags":[{"name","value"}],"gateway"}
//! 36+H    ..    the module's bytes (the rest of the payload)
//! ```
//!
//! The assignment data item itself is not stored: its tags follow from the fields above
//! (`chain::assignment_tags`), its owner is the node key, and its id is SHA-256 of the stored
//! signature. The message item is stored whole because it is the input evaluation needs.
//! This module does no I/O and checks no signatures.

use crate::{AssignmentId, BlockHeight, HashChain, MessageId, Nonce, ProcessId, Timestamp};
use sha2::{Digest, Sha256};

/// Record kind of a module data item.
pub const KIND_MODULE: u8 = 1;
/// Record kind of an assignment plus its message.
pub const KIND_ASSIGNMENT: u8 = 2;
/// Record kind of an assignment of a message already logged for another process.
pub const KIND_ASSIGNED: u8 = 3;
/// Record kind of a module fetched from an Arweave gateway.
pub const KIND_GATEWAY_MODULE: u8 = 4;
/// Record kind of a process's own assignment with the limits it runs under.
pub const KIND_SPAWN: u8 = 5;

/// The limits a process runs under (AO's `Memory-Limit` and `Compute-Limit`), fixed when it is
/// spawned and logged with it (`KIND_SPAWN`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpawnLimits {
    /// Linear memory bytes the process may reach.
    pub memory_bytes_max: u64,
    /// Fuel one message may consume.
    pub fuel_per_message: u64,
}

const LIMITS_BYTES: usize = 16;

/// A decoded `KIND_GATEWAY_MODULE` payload, borrowing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayModuleRecord<'a> {
    pub id: crate::ModuleId,
    /// The JSON header (owner, tags, gateway), as written.
    pub header: &'a [u8],
    pub data: &'a [u8],
}

impl GatewayModuleRecord<'_> {
    pub fn encode(&self) -> Vec<u8> {
        let header_len = u32::try_from(self.header.len()).expect("a module header is far below 4 GiB");
        let mut out = Vec::with_capacity(36 + self.header.len() + self.data.len());
        out.extend_from_slice(self.id.as_bytes());
        out.extend_from_slice(&header_len.to_le_bytes());
        out.extend_from_slice(self.header);
        out.extend_from_slice(self.data);
        out
    }

    pub fn decode(payload: &[u8]) -> Result<GatewayModuleRecord<'_>, RecordError> {
        if payload.len() < 36 {
            return Err(RecordError::Truncated {
                len: payload.len(),
                need: 36,
            });
        }
        let id = crate::ModuleId(payload[..32].try_into().expect("32 bytes"));
        let header_len = u32::from_le_bytes(payload[32..36].try_into().expect("4 bytes")) as usize;
        let end = 36usize.saturating_add(header_len);
        if payload.len() < end {
            return Err(RecordError::Truncated {
                len: payload.len(),
                need: end,
            });
        }
        Ok(GatewayModuleRecord {
            id,
            header: &payload[36..end],
            data: &payload[end..],
        })
    }
}

const HEADER_BYTES: usize = 122;

/// A stored record's payload that does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("assignment record truncated: {len} bytes, at least {need} needed")]
    Truncated { len: usize, need: usize },
    #[error("unknown record kind {0}")]
    UnknownKind(u8),
    #[error("the exclude list of an assigned record is not UTF-8")]
    Exclude,
    #[error("a spawn record at nonce {0}: a process is spawned at nonce 0")]
    SpawnNonce(u64),
}

/// What makes a `KIND_ASSIGNED` record: the assign request's `exclude` (empty when none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assigned<'a> {
    pub exclude: &'a str,
}

/// One decoded assignment record, borrowing the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssignmentRecord<'a> {
    pub process: ProcessId,
    pub nonce: Nonce,
    pub timestamp: Timestamp,
    pub block_height: BlockHeight,
    pub hash_chain: HashChain,
    pub message: MessageId,
    /// `Some` for a record of kind `KIND_ASSIGNED`.
    pub assigned: Option<Assigned<'a>>,
    /// `Some` for a record of kind `KIND_SPAWN` (never with `assigned`).
    pub limits: Option<SpawnLimits>,
    pub signature: &'a [u8],
    pub item: &'a [u8],
}

impl AssignmentRecord<'_> {
    /// The assignment's id: SHA-256 of the scheduler's signature.
    pub fn assignment_id(&self) -> AssignmentId {
        assignment_id_of(self.signature)
    }

    /// The record kind this record is written as.
    pub fn kind(&self) -> u8 {
        match (&self.assigned, &self.limits) {
            (Some(_), _) => KIND_ASSIGNED,
            (None, Some(_)) => KIND_SPAWN,
            (None, None) => KIND_ASSIGNMENT,
        }
    }

    /// Encodes the record into a log payload of kind [`AssignmentRecord::kind`].
    ///
    /// # Panics
    /// If an exclude list is longer than 65535 bytes (callers bound it far below), or if the
    /// record has both an exclude list and limits.
    pub fn encode(&self) -> Vec<u8> {
        assert!(
            self.assigned.is_none() || self.limits.is_none(),
            "an assigned message carries no spawn limits"
        );
        let signature_len = u16::try_from(self.signature.len())
            .expect("assignment signature fits u16: signers produce at most 512 bytes");
        let mut out = Vec::with_capacity(HEADER_BYTES + LIMITS_BYTES + self.signature.len() + self.item.len());
        out.extend_from_slice(self.process.as_bytes());
        out.extend_from_slice(&self.nonce.0.to_le_bytes());
        out.extend_from_slice(&self.timestamp.0.to_le_bytes());
        out.extend_from_slice(&self.block_height.0.to_le_bytes());
        out.extend_from_slice(self.hash_chain.as_bytes());
        out.extend_from_slice(self.message.as_bytes());
        out.extend_from_slice(&signature_len.to_le_bytes());
        out.extend_from_slice(self.signature);
        if let Some(assigned) = &self.assigned {
            let exclude_len = u16::try_from(assigned.exclude.len()).expect("exclude lists are bounded by callers");
            out.extend_from_slice(&exclude_len.to_le_bytes());
            out.extend_from_slice(assigned.exclude.as_bytes());
        }
        if let Some(limits) = &self.limits {
            out.extend_from_slice(&limits.memory_bytes_max.to_le_bytes());
            out.extend_from_slice(&limits.fuel_per_message.to_le_bytes());
        }
        out.extend_from_slice(self.item);
        out
    }

    /// Decodes a log payload of kind `KIND_ASSIGNMENT`, `KIND_ASSIGNED` or `KIND_SPAWN`.
    pub fn decode(kind: u8, payload: &[u8]) -> Result<AssignmentRecord<'_>, RecordError> {
        if !is_assignment(kind) {
            return Err(RecordError::UnknownKind(kind));
        }
        if payload.len() < HEADER_BYTES {
            return Err(RecordError::Truncated {
                len: payload.len(),
                need: HEADER_BYTES,
            });
        }
        let array32 = |at: usize| -> [u8; 32] { payload[at..at + 32].try_into().expect("slice of 32 bytes") };
        let u64_at =
            |at: usize| -> u64 { u64::from_le_bytes(payload[at..at + 8].try_into().expect("slice of 8 bytes")) };
        let signature_len = usize::from(u16::from_le_bytes([payload[120], payload[121]]));
        let mut need = HEADER_BYTES + signature_len;
        if payload.len() < need {
            return Err(RecordError::Truncated {
                len: payload.len(),
                need,
            });
        }
        let signature = &payload[HEADER_BYTES..need];
        let mut assigned = None;
        if kind == KIND_ASSIGNED {
            if payload.len() < need + 2 {
                return Err(RecordError::Truncated {
                    len: payload.len(),
                    need: need + 2,
                });
            }
            let exclude_len = usize::from(u16::from_le_bytes([payload[need], payload[need + 1]]));
            let start = need + 2;
            need = start + exclude_len;
            if payload.len() < need {
                return Err(RecordError::Truncated {
                    len: payload.len(),
                    need,
                });
            }
            let exclude = std::str::from_utf8(&payload[start..need]).map_err(|_| RecordError::Exclude)?;
            assigned = Some(Assigned { exclude });
        }
        let mut limits = None;
        if kind == KIND_SPAWN {
            let nonce = u64_at(32);
            if nonce != 0 {
                return Err(RecordError::SpawnNonce(nonce));
            }
            let start = need;
            need = start + LIMITS_BYTES;
            if payload.len() < need {
                return Err(RecordError::Truncated {
                    len: payload.len(),
                    need,
                });
            }
            limits = Some(SpawnLimits {
                memory_bytes_max: u64_at(start),
                fuel_per_message: u64_at(start + 8),
            });
        }
        Ok(AssignmentRecord {
            process: ProcessId(array32(0)),
            nonce: Nonce(u64_at(32)),
            timestamp: Timestamp(u64_at(40)),
            block_height: BlockHeight(u64_at(48)),
            hash_chain: HashChain(array32(56)),
            message: MessageId(array32(88)),
            assigned,
            limits,
            signature,
            item: &payload[need..],
        })
    }
}

/// Whether records of `kind` are assignments ([`AssignmentRecord::decode`] reads them).
pub fn is_assignment(kind: u8) -> bool {
    matches!(kind, KIND_ASSIGNMENT | KIND_ASSIGNED | KIND_SPAWN)
}

/// The id of an assignment whose signature is `signature`.
pub fn assignment_id_of(signature: &[u8]) -> AssignmentId {
    AssignmentId(Sha256::digest(signature).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample<'a>(signature: &'a [u8], item: &'a [u8]) -> AssignmentRecord<'a> {
        AssignmentRecord {
            process: ProcessId([1; 32]),
            nonce: Nonce(42),
            timestamp: Timestamp(1_700_000_000_123),
            block_height: BlockHeight(1_393_008),
            hash_chain: HashChain([4; 32]),
            message: MessageId([5; 32]),
            assigned: None,
            limits: None,
            signature,
            item,
        }
    }

    #[test]
    fn assignment_record_round_trips() {
        let record = sample(&[9; 64], b"item bytes");
        let bytes = record.encode();
        assert_eq!(AssignmentRecord::decode(KIND_ASSIGNMENT, &bytes).unwrap(), record);
        let assigned = AssignmentRecord {
            assigned: Some(Assigned { exclude: "Data,Anchor" }),
            ..record
        };
        let bytes = assigned.encode();
        assert_eq!(assigned.kind(), KIND_ASSIGNED);
        assert_eq!(AssignmentRecord::decode(KIND_ASSIGNED, &bytes).unwrap(), assigned);
        assert!(AssignmentRecord::decode(KIND_MODULE, &bytes).is_err());
    }

    #[test]
    fn spawn_records_round_trip_with_their_limits_at_nonce_0_only() {
        let limits = SpawnLimits {
            memory_bytes_max: 512 << 20,
            fuel_per_message: 9_000_000_000,
        };
        let spawn = AssignmentRecord {
            nonce: Nonce(0),
            limits: Some(limits),
            ..sample(&[9; 64], b"process item")
        };
        let bytes = spawn.encode();
        assert_eq!(spawn.kind(), KIND_SPAWN);
        assert_eq!(bytes.len(), HEADER_BYTES + 64 + LIMITS_BYTES + b"process item".len());
        let decoded = AssignmentRecord::decode(KIND_SPAWN, &bytes).unwrap();
        assert_eq!(decoded, spawn);
        assert_eq!(decoded.item, b"process item");
        for len in 0..HEADER_BYTES + 64 + LIMITS_BYTES {
            assert!(
                AssignmentRecord::decode(KIND_SPAWN, &bytes[..len]).is_err(),
                "len {len}"
            );
        }
        let later = AssignmentRecord {
            nonce: Nonce(3),
            ..spawn.clone()
        };
        assert_eq!(
            AssignmentRecord::decode(KIND_SPAWN, &later.encode()),
            Err(RecordError::SpawnNonce(3))
        );
        // The same bytes read as a plain assignment would take the limits for the item.
        assert_ne!(
            AssignmentRecord::decode(KIND_ASSIGNMENT, &bytes).unwrap().item,
            spawn.item
        );
        assert!(is_assignment(KIND_SPAWN) && !is_assignment(KIND_GATEWAY_MODULE));
    }

    #[test]
    fn every_truncation_of_the_header_is_an_error() {
        let bytes = sample(&[9; 64], b"").encode();
        for len in 0..HEADER_BYTES + 64 {
            assert!(
                AssignmentRecord::decode(KIND_ASSIGNMENT, &bytes[..len]).is_err(),
                "len {len}"
            );
        }
        assert!(AssignmentRecord::decode(KIND_ASSIGNMENT, &bytes).is_ok());
        let assigned = AssignmentRecord {
            assigned: Some(Assigned { exclude: "Data" }),
            ..sample(&[9; 64], b"")
        }
        .encode();
        for len in 0..HEADER_BYTES + 64 + 2 + 4 {
            assert!(
                AssignmentRecord::decode(KIND_ASSIGNED, &assigned[..len]).is_err(),
                "len {len}"
            );
        }
        assert!(AssignmentRecord::decode(KIND_ASSIGNED, &assigned).is_ok());
    }

    #[test]
    fn gateway_module_records_round_trip_and_refuse_truncation() {
        let record = GatewayModuleRecord {
            id: crate::ModuleId([6; 32]),
            header: br#"{"tags":[]}"#,
            data: b"\0asm",
        };
        let bytes = record.encode();
        assert_eq!(GatewayModuleRecord::decode(&bytes).unwrap(), record);
        for len in 0..36 + record.header.len() {
            assert!(GatewayModuleRecord::decode(&bytes[..len]).is_err(), "len {len}");
        }
    }
}
