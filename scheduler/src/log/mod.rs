//! The durable, append-only, group-committed log of one shard.
//!
//! It stores opaque records (a kind byte and a payload) and hands out their positions, [`Lsn`]s.
//! It knows nothing of AO: what a kind means, which records belong together and any index over
//! records are the caller's. It does not retain, delete or replicate segments; it packs sealed
//! segments with zstd only when asked (see *Packed segments*); it does not retry failed writes
//! (see *Poison*).
//!
//! # Shape
//!
//! [`Log`] is the synchronous core: it recovers the directory at [`Log::open`], frames records
//! into an in-memory pending batch at [`Log::append`] (a copy, no I/O), and serves reads from the
//! mapped segments or, for records not yet durable, from memory. [`Committer`] is the glommio
//! shell: one task takes the pending batch, writes it with one io_uring write, makes it durable
//! with one `fdatasync`, advances [`Log::durable_lsn`] and wakes the waiters whose records it
//! covers. While a sync is in flight, appends accumulate into the next batch. A record is
//! acknowledged only once [`Committer::wait_durable`] has returned `Ok` for it.
//!
//! Both live on one glommio executor, the `Log` behind an `Rc<RefCell<_>>`; no borrow of it is
//! ever held across an `.await`.
//!
//! # On-disk format, version 1
//!
//! ## Directory
//!
//! ```text
//! <dir>/FORMAT                          "hewitt-log\nversion 1\nsegment_bytes <decimal>\n"
//! <dir>/00000000000000000000.log        segment 0
//! <dir>/00000000000067108864.log        segment 1 (with segment_bytes = 64 MiB)
//! ...
//! ```
//!
//! - `FORMAT` names the format version and the segment size, both fixed for the life of the
//!   directory (an [`Lsn`] depends on the segment size). It is written once, atomically
//!   (temporary file, fsync, rename, directory fsync), before the first segment exists. A reader
//!   refuses a version it does not know and a `segment_bytes` other than its configuration.
//! - A segment is named by its first [`Lsn`] as a 20-digit zero-padded decimal, so that names sort
//!   in log order. Segment `i` starts at `Lsn(i * segment_bytes)`; the sequence starts at 0 and has
//!   no gaps (there is no retention yet: a missing segment is corruption).
//! - The directory is held with `flock(LOCK_EX)` by the one [`Log`] that has it open.
//!
//! ## Segment
//!
//! Every segment file is exactly `segment_bytes` long: it is preallocated with
//! `posix_fallocate` when created, so writes never extend it. It holds frames back to back from
//! offset 0, each starting at a multiple of 8. The data ends at the first frame header that is
//! all zeros, or at the end of the file; every byte after the end is zero. A record never spans
//! segments: when a frame does not fit in the remainder of the current segment, that segment is
//! sealed (its unused tail stays zero) and the frame starts the next one. Every segment but the
//! last is sealed.
//!
//! ## Frame
//!
//! All integers little-endian.
//!
//! ```text
//! offset  size  field
//!      0     4  payload length in bytes (L)
//!      4     1  kind: 1..=255, chosen by the caller; 0 is never valid (it marks the end of data)
//!      5     3  reserved, zero
//!      8     4  CRC32C (Castagnoli) of bytes 0..8 followed by the payload
//!     12     L  payload
//!   12+L     P  zero padding, 0 <= P < 8, so that the frame length 12 + L + P is a multiple of 8
//! ```
//!
//! The checksum covers the length, kind and reserved bytes and the payload, so a torn or flipped
//! header is caught as surely as a flipped payload byte. The padding is not covered but must be
//! zero. A frame is never longer than `batch_bytes_max` (nor than a segment).
//!
//! ## Lsn
//!
//! `Lsn(segment_index * segment_bytes + offset_in_segment)`: a global byte position, so that the
//! segment and offset of a record follow from its `Lsn` by one division. `Lsn`s increase in log
//! order and are multiples of 8; the positions in a sealed segment's unused tail hold no record.
//!
//! ## Invariants
//!
//! - Bytes below [`Log::durable_lsn`] never change while the log is open: only a direct write
//!   (`log.direct_io`) writes any again, those of the block the next batch starts in, with the
//!   same values.
//! - At most one batch is in flight; a batch lies within one segment, starts where the durable data
//!   of that segment ends, and is at most `batch_bytes_max` bytes long.
//! - A segment is first written only when the previous one is sealed and fully durable, so after
//!   any crash only the last segment holding data can hold a torn write, and only within the last
//!   batch: `batch_bytes_max` bytes from the start of that batch. (The next segment may exist
//!   already, created ahead of need and empty: see [`Log::prepare_job`].)
//!
//! ## Recovery
//!
//! [`Log::open`] reads every segment in order and checks every frame (length within the segment,
//! kind not 0, reserved bytes zero, checksum, zero padding) up to the end of data.
//!
//! - In a sealed segment, a bad frame, or a nonzero byte after the end of data, is corruption.
//! - In the last segment, the first bad frame (or the end of data) at offset `o` is a torn tail
//!   when every byte from `o + batch_bytes_max` to the end of the segment is zero: a torn group
//!   commit can only leave garbage within one batch. The bytes from `o` to that bound are then
//!   zeroed (`pwrite` + `fdatasync`) and a warning names the file and offset. Otherwise it is
//!   corruption. (The window is the *current* `batch_bytes_max`: lowering it across a crash can
//!   make a torn tail read as corruption; reopen once with the old value.)
//! - The rule cannot tell a torn write from damage at rest near the end of the log: a flipped bit
//!   in one of the records within `batch_bytes_max` of the end, with nothing nonzero after the
//!   window, truncates the log there (with the warning), even if those records were
//!   acknowledged. Anywhere else, damage is reported.
//! - A last segment that holds nothing but zeros, directly after another (created ahead and never
//!   used, or short of its preallocation), is removed first; the segment before it is then the
//!   last. A last segment shorter than `segment_bytes` is preallocated again; its records were
//!   never acknowledged.
//!
//! Corruption stops [`Log::open`] with [`LogError::Corrupt`], which names the file and the byte
//! offset; nothing is ever skipped silently.
//!
//! [`Log::open_trusting`] is the start from a caller's persisted index: the sealed segments the
//! caller vouches for (it passes where their data ends, as [`Log::sealed_ends`] gave it when
//! they were sealed and checked) are mapped after checking only the file size and the
//! end-of-data marker, so a start costs the last segment's scan, not the whole log's. The caller
//! then checks those segments whole off its hot path ([`check_sealed`], the same rules as
//! above) and treats damage found there as this section treats corruption; until then a
//! damaged record in them still fails its checksum when read.
//!
//! ## Media assumptions
//!
//! - `fdatasync` returning success means the written bytes, the file size and its allocation are
//!   durable; a directory `fsync` makes a created file's name durable. A segment's name is made
//!   durable before any record in it is acknowledged.
//! - A write may be torn at any byte, but only bytes the log wrote since the last successful
//!   `fdatasync` can change in a crash.
//! - Silent corruption at rest is caught by the checksum when the frame is next read (at every
//!   open, and by every [`Log::read`]), never repaired.
//! - No other process writes or truncates the directory's files while the log has them open (a
//!   truncation under a mapping would fault the reader).
//!
//! ## Packed segments
//!
//! With [`Log::set_packing`], sealed segments are packed with zstd as they are sealed
//! ([`maintain`] runs [`Log::pack_job`]s on glommio's blocking pool): a sealed segment's
//! frames are checked, cut into blocks of whole frames (about 1 MiB each), each block
//! compressed on its own, and written with a checksummed block table to
//! `<first lsn>.log.zst` (format in the `packed` module docs: temporary file, sync, rename,
//! directory sync); then the plain file is removed. Reads are the same: a read of a record in a
//! packed segment decompresses (and checks) its block, which is kept until
//! [`Log::release_unpacked`] lets the least recently read go (appends call it; so should a
//! long reader between batches). Recovery reads a packed segment's every block and frame unless
//! the caller vouches for it ([`Log::open_trusting`]); a directory holding a segment both plain
//! and packed (a crash during packing) keeps the plain file. `hewitt log verify` and
//! `hewitt log repair` read packed segments too; a repair that cuts inside one writes its
//! intact prefix back as a plain segment and sets the packed file aside. Segments a start
//! trusted are not packed until they were checked ([`Log::trusted_checked`]).
//!
//! ## Write path: buffered by default, direct on request
//!
//! Writes go through the page cache (`BufferedFile::write_at`) unless the committer is asked for
//! `O_DIRECT` ([`Committer::set_direct_io`], the node's `log.direct_io`). A direct write
//! invalidates the cached pages that the read-only mappings share, so reads of recent history
//! would fault back to the device (the committer has the log keep its last batches in memory
//! for them instead: [`Log::keep_recent`]); a buffered write leaves the just-written pages in the cache that
//! the mappings read, so reads of the hot tail cost a memory access. The price of buffered
//! writes is one copy into the page cache per byte and its writeback, which on a fast device
//! cost more than the device itself (about half the log's durable append rate on the
//! development VM). How a direct write keeps whole blocks is in the committer's docs.
//!
//! ## Poison
//!
//! After a failed write or `fdatasync` (or a segment creation that failed for another reason
//! than space) the log is poisoned: the page cache may have dropped the data, so a retry could
//! acknowledge what is not on the device. Every later append and every waiter gets
//! [`LogError::Poisoned`]; records already durable stay readable, as do records accepted but
//! never made durable (they are not acknowledged).
//!
//! ## Disk full
//!
//! Segments are preallocated whole when created, so the only write that can meet a full disk is
//! the allocation of the next segment, before any byte of it is written. ENOSPC (or EDQUOT)
//! there does not poison: the half-made file is removed, appends are refused with
//! [`LogError::Full`], the pending batch waits in memory (unacknowledged) and the committer
//! tries the allocation again every second; when it succeeds the log goes on where it was.
//! (A file system without `fallocate` support would surface ENOSPC on a write instead, which
//! poisons.)

mod committer;
mod config;
mod error;
mod frame;
pub mod inspect;
mod packed;
mod recovery;
mod segment;
mod store;

#[cfg(test)]
mod tests;

pub use committer::{BatchObserver, BatchReport, CommitStats, Committer};
pub use config::LogConfig;
pub use error::LogError;
pub use inspect::{Problem, ProblemKind, Report};
pub use store::{Log, PackJob, PackedSegment, PrepareJob, PreparedSegment, Record, Records};

use std::path::Path;

/// Checks, read-only, that every sealed segment `i` of the log in `dir` is intact and ends at
/// `sealed_ends[i]`, as [`Log::open`] would: for the segments [`Log::open_trusting`] mapped
/// without reading. Safe beside the open log (sealed segments are never written again); takes
/// about a second per 5 GiB here, so run it off the shard's thread.
pub fn check_sealed(dir: &Path, segment_bytes: u64, sealed_ends: &[u64]) -> Result<(), LogError> {
    for (index, &data_end) in sealed_ends.iter().enumerate() {
        let path = recovery::segment_path(dir, index as u64 * segment_bytes);
        segment::check_sealed(&path, segment_bytes, data_end)?;
    }
    Ok(())
}

/// The log's work off the hot path, run on glommio's blocking pool one job at a time, looked for
/// every 20 ms: the next segment created ahead of need ([`Log::prepare_job`]) and, when packing
/// is on ([`Log::set_packing`]), sealed segments packed, oldest first.
/// Returns when the log is closed. Spawn it on the log's executor.
pub async fn maintain(log: std::rc::Rc<std::cell::RefCell<Log>>) {
    loop {
        glommio::timer::sleep(std::time::Duration::from_millis(20)).await;
        if log.borrow().is_closed() {
            return;
        }
        let prepare = log.borrow_mut().prepare_job();
        if let Some(job) = prepare {
            let outcome = glommio::executor().spawn_blocking(move || job.run()).await;
            log.borrow_mut().prepared(outcome);
        }
        let Some(job) = log.borrow().pack_job() else {
            continue;
        };
        let outcome = {
            let job = job.clone();
            glommio::executor().spawn_blocking(move || job.run()).await
        };
        log.borrow_mut().packed(&job, outcome);
    }
}

/// A record's position: its global byte position in the log,
/// `segment_index * segment_bytes + offset_in_segment`. See the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl std::fmt::Display for Lsn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "lsn {}", self.0)
    }
}
