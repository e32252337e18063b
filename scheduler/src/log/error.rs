//! The errors of the log, one variant per way a caller reacts.
//!
//! It does not log anything: an error is logged where it is handled.

use std::path::{Path, PathBuf};

use super::Lsn;

/// Why a log operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The configuration breaks a documented bound, or disagrees with the directory's `FORMAT`.
    #[error("invalid log configuration: {0}")]
    Config(String),
    /// An operating-system call on a log file failed while opening or recovering the log.
    #[error("log I/O error on {}: {source}", path.display())]
    Io {
        /// The file or directory the call was about.
        path: PathBuf,
        /// The error the call returned.
        source: std::io::Error,
    },
    /// Bytes on disk (or at the asked position) are not what the format allows; the log must
    /// not be used until a person has looked.
    #[error("log corrupt: {}, offset {offset}: {reason}", file.display())]
    Corrupt {
        /// The segment (or `FORMAT`) file.
        file: PathBuf,
        /// The byte offset within `file`.
        offset: u64,
        /// What is wrong there.
        reason: String,
    },
    /// The record's payload is larger than the largest the log accepts; it never will be.
    #[error("log record of {payload_bytes} bytes exceeds the largest payload, {payload_bytes_max} bytes")]
    RecordTooLarge {
        /// The payload's size.
        payload_bytes: usize,
        /// [`super::LogConfig::payload_bytes_max`].
        payload_bytes_max: usize,
    },
    /// Too many bytes are waiting to become durable; try again later (HTTP 503).
    #[error("log backpressure: {unsynced_bytes} bytes not yet durable, limit {pending_bytes_max}")]
    Backpressure {
        /// Bytes appended but not yet durable when the append was refused.
        unsynced_bytes: usize,
        /// [`super::LogConfig::pending_bytes_max`].
        pending_bytes_max: usize,
    },
    /// The file system is full: the next segment could not be allocated. Nothing was written
    /// and nothing is lost; appends are refused until the committer's retry finds space again.
    #[error("disk full: {0}; writes resume once space is freed")]
    Full(String),
    /// A write or `fdatasync` failed earlier; the log accepts and acknowledges nothing more.
    #[error("log poisoned: {0}")]
    Poisoned(String),
    /// The log was shut down; it accepts nothing more.
    #[error("log closed")]
    Closed,
    /// No record starts at this position: it is at or past the end of the log, or in the unused
    /// tail of a sealed segment.
    #[error("no log record at {lsn} (end of log at {end_lsn})")]
    OutOfRange {
        /// The position asked for.
        lsn: Lsn,
        /// [`super::Log::end_lsn`] at the time.
        end_lsn: Lsn,
    },
}

/// Maps an I/O error on `path` to [`LogError::Io`].
pub(super) fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> LogError + '_ {
    move |source| LogError::Io {
        path: path.to_owned(),
        source,
    }
}

/// [`LogError::Corrupt`] at `offset` of `path`.
pub(super) fn corrupt(path: &Path, offset: u64, reason: impl Into<String>) -> LogError {
    LogError::Corrupt {
        file: path.to_owned(),
        offset,
        reason: reason.into(),
    }
}
