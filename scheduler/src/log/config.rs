//! The log's limits: segment size, batch size and pending bytes, with their validation.
//!
//! It holds numbers only; what happens at each bound is done by the log and its committer.

use super::frame;
use super::LogError;

/// The smallest segment: one page, so that a segment holds at least a few frames.
const SEGMENT_BYTES_MIN: u64 = 4096;

/// The largest segment, 1 TiB: a whole segment is mapped at once, and its offsets must fit an
/// `off_t`; past this, rollover would be so rare that recovery of one file becomes the cost.
const SEGMENT_BYTES_MAX: u64 = 1 << 40;

/// The smallest batch: room for a frame with a small payload.
const BATCH_BYTES_MIN: usize = 64;

/// Limits of one shard's log. Build one with `..LogConfig::default()` and check it with
/// [`LogConfig::validate`] (which [`super::Log::open`] also does).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// Size of every segment file, in bytes; a multiple of 4096, from 4 KiB to 1 TiB. Fixed for
    /// the life of a log directory (recorded in its `FORMAT` file: [`super::Log::open`] refuses
    /// another value). Default 64 MiB: a rollover (file creation, preallocation, directory fsync)
    /// then happens once per 64 MiB of records, and a segment stays small enough to map and
    /// check quickly. At the bound: a record that does not fit in the rest of the current segment
    /// seals it and starts the next one.
    pub segment_bytes: u64,
    /// Most bytes of frames that one group commit writes (one write, one `fdatasync`); a
    /// multiple of 8, at least 64, at most `segment_bytes` and `u32::MAX`. It also bounds the
    /// largest record (a frame never exceeds it) and is the torn-tail window of recovery.
    /// Default 1 MiB: big enough that a burst of small records shares one `fdatasync`, small
    /// enough that a batch's write stays well under the `fdatasync` cost. At the bound: the rest
    /// of the pending records go in the next batch, written right after.
    pub batch_bytes_max: usize,
    /// Most bytes of frames appended but not yet durable (pending plus in flight); at least
    /// `batch_bytes_max`. Default 16 MiB: sixteen full batches, which absorbs a burst while one
    /// `fdatasync` stalls, and bounds the memory a slow disk can pin. At the bound:
    /// [`super::Log::append`] returns [`LogError::Backpressure`] (callers answer 503).
    pub pending_bytes_max: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 64 << 20,
            batch_bytes_max: 1 << 20,
            pending_bytes_max: 16 << 20,
        }
    }
}

impl LogConfig {
    /// Checks every bound documented on the fields.
    pub fn validate(&self) -> Result<(), LogError> {
        let Self {
            segment_bytes,
            batch_bytes_max,
            pending_bytes_max,
        } = *self;
        let invalid = |reason: String| Err(LogError::Config(reason));
        if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&segment_bytes) {
            return invalid(format!(
                "segment_bytes {segment_bytes} is outside {SEGMENT_BYTES_MIN}..={SEGMENT_BYTES_MAX}"
            ));
        }
        if !segment_bytes.is_multiple_of(4096) {
            return invalid(format!("segment_bytes {segment_bytes} is not a multiple of 4096"));
        }
        if batch_bytes_max < BATCH_BYTES_MIN {
            return invalid(format!("batch_bytes_max {batch_bytes_max} is below {BATCH_BYTES_MIN}"));
        }
        if !batch_bytes_max.is_multiple_of(frame::ALIGN_BYTES) {
            return invalid(format!(
                "batch_bytes_max {batch_bytes_max} is not a multiple of {}",
                frame::ALIGN_BYTES
            ));
        }
        // Widening casts: usize is 64 bits on every target glommio supports.
        if batch_bytes_max as u64 > segment_bytes {
            return invalid(format!(
                "batch_bytes_max {batch_bytes_max} exceeds segment_bytes {segment_bytes}"
            ));
        }
        if batch_bytes_max as u64 > u64::from(u32::MAX) {
            return invalid(format!(
                "batch_bytes_max {batch_bytes_max} exceeds the 32-bit frame length"
            ));
        }
        if pending_bytes_max < batch_bytes_max {
            return invalid(format!(
                "pending_bytes_max {pending_bytes_max} is below batch_bytes_max {batch_bytes_max}"
            ));
        }
        Ok(())
    }

    /// The largest payload a record may have: a frame of `batch_bytes_max` bytes.
    pub fn payload_bytes_max(&self) -> usize {
        self.batch_bytes_max - frame::HEADER_BYTES
    }
}
