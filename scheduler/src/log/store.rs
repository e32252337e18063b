//! [`Log`], the synchronous core of the log: appends into an in-memory pending batch, hands
//! batches to the committer and takes back their outcome, and serves reads from the mapped
//! segments or from memory.
//!
//! It never awaits and never writes a record to a file itself (the committer does, through
//! io_uring); its only file operations are opening and recovering the directory and creating a
//! segment when a batch first needs it.

use std::collections::VecDeque;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::task::Waker;

use super::frame::{self, FrameError};
use super::packed::{self, Packed};
use super::recovery;
use super::segment::{ReadClock, Segment};
use super::{LogConfig, LogError, Lsn};

/// One record, borrowed from the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    /// Where the record starts.
    pub lsn: Lsn,
    /// The caller's kind, 1..=255.
    pub kind: u8,
    /// The caller's bytes, exactly as appended.
    pub payload: &'a [u8],
}

/// Frames appended but not yet durable, contiguous within one segment; at most
/// `batch_bytes_max` bytes. Each one is written by one write.
struct Chunk {
    /// LSN of the first frame.
    start: u64,
    bytes: Vec<u8>,
    record_count: u64,
}

impl Chunk {
    fn end(&self) -> u64 {
        self.start + self.bytes.len() as u64
    }
}

/// A batch handed to the committer: bytes to write at `offset` of segment `segment_index`.
pub(super) struct Batch {
    pub(super) segment_index: u64,
    pub(super) path: PathBuf,
    pub(super) offset: u64,
    /// A copy of the in-flight frames (the write owns its buffer while the log keeps serving
    /// reads from the original), or nothing when the caller of [`Log::take_batch`] copies them
    /// itself ([`Log::in_flight_bytes`]).
    pub(super) bytes: Vec<u8>,
    /// Bytes of frames in the batch.
    pub(super) len: usize,
    pub(super) record_count: u64,
    /// The segment file was created for this batch: its name must be made durable too.
    pub(super) segment_created: bool,
}

/// Where a position falls.
enum Place<'a> {
    /// In the durable bytes of a segment, at this offset.
    Durable(&'a Segment, u64),
    /// In a chunk not yet durable, at this offset within the chunk.
    Memory(&'a Chunk, usize),
    /// In the unused tail of a sealed segment; the next record (if any) is at or after this LSN.
    Gap(u64),
    /// At or past the end of the log.
    End,
}

/// The log of one shard: see the module docs of `log` for its format and guarantees.
pub struct Log {
    dir: PathBuf,
    config: LogConfig,
    /// The directory, held open with an exclusive `flock` so that no second log writes it.
    _dir_lock: File,
    /// Segment `i` starts at `Lsn(i * segment_bytes)`. Every one but the last is sealed.
    segments: Vec<Segment>,
    /// Position just past the last appended record.
    end_lsn: u64,
    /// Position just past the last durable record; every record below it is durable.
    durable_lsn: u64,
    /// Frame bytes in `in_flight` and `pending`; at most `pending_bytes_max`.
    unsynced_bytes: usize,
    /// The batch the committer is writing, if any.
    in_flight: Option<Chunk>,
    /// Batches waiting for the committer, in LSN order, after `in_flight`.
    pending: VecDeque<Chunk>,
    /// A cleared buffer from a completed batch, reused by the next chunk.
    spare: Vec<u8>,
    /// The last durable chunks, in LSN order, kept for reads while their bytes total at most
    /// `recent_bytes_max` ([`Log::keep_recent`]).
    recent: VecDeque<Chunk>,
    recent_bytes: usize,
    recent_bytes_max: usize,
    poisoned: Option<String>,
    /// Why the last segment creation failed for want of space, while it does (see [`Log::full`]).
    full: Option<String>,
    closed: bool,
    /// Woken when a record is appended or shutdown is asked, so the committer sleeps while idle.
    committer_waker: Option<Waker>,
    /// zstd level at which sealed segments are packed (see `packed`); `None`: they stay plain.
    pack_level: Option<i32>,
    /// Counts reads of packed blocks, to release the least recently read first.
    read_clock: ReadClock,
    /// See [`Log::trust_failed`].
    trust_failed: bool,
    /// The next segment, created and preallocated ahead (see [`Log::prepare_job`]), and whether
    /// a preparation is under way.
    prepared: Option<Segment>,
    preparing: bool,
    /// When the last preparation failed (the next waits a second).
    prepare_failed: Option<std::time::Instant>,
}

/// The creation of the next segment ahead of need, to run off the executor's thread
/// ([`PrepareJob::run`]) and hand back with [`Log::prepared`].
#[derive(Clone, Debug)]
pub struct PrepareJob {
    dir: PathBuf,
    index: u64,
    segment_bytes: u64,
}

/// A segment made by [`PrepareJob::run`].
pub struct PreparedSegment(Segment);

impl PrepareJob {
    /// Creates and preallocates the segment file, and makes its name durable.
    pub fn run(&self) -> Result<PreparedSegment, LogError> {
        let io = |source| LogError::Io {
            path: self.dir.clone(),
            source,
        };
        let segment = Segment::create(&self.dir, self.index, self.segment_bytes).map_err(io)?;
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(io)?;
        Ok(PreparedSegment(segment))
    }
}

/// Most decompressed blocks of packed segments (about 1 MiB each) a log keeps; beyond it,
/// [`Log::release_unpacked`] drops the least recently read half.
const UNPACKED_BLOCKS_MAX: usize = 64;

/// The packing of one sealed segment, to run on a blocking thread ([`PackJob::run`]) and hand
/// back with [`Log::packed`].
#[derive(Clone, Debug)]
pub struct PackJob {
    index: u64,
    path: PathBuf,
    data_end: u64,
    segment_bytes: u64,
    level: i32,
}

/// A packed segment made by [`PackJob::run`].
pub struct PackedSegment(Packed);

impl PackJob {
    /// Reads the sealed segment (a read-only mapping of its own), checks every frame and writes
    /// the packed file (see `packed`). The plain file is removed by [`Log::packed`].
    pub fn run(&self) -> Result<PackedSegment, LogError> {
        let io = |source| LogError::Io {
            path: self.path.clone(),
            source,
        };
        let file = File::open(&self.path).map_err(io)?;
        let len = usize::try_from(self.segment_bytes).expect("segment sizes fit memory");
        let map = memmap2::MmapOptions::new()
            .len(len)
            .map_raw_read_only(&file)
            .map_err(|source| LogError::Io {
                path: self.path.clone(),
                source,
            })?;
        // SAFETY: the mapping is `segment_bytes` long and lives for this block; the segment is
        // sealed and fully durable, so nothing writes it again.
        let bytes = unsafe { std::slice::from_raw_parts(map.as_ptr(), map.len()) };
        packed::pack(&self.path, bytes, self.data_end, self.level).map(PackedSegment)
    }
}

impl Log {
    /// Opens the log in `dir`, creating the directory if missing, and recovers it (see the
    /// module docs). Fails on an invalid configuration, an I/O error, a directory already open,
    /// or corruption.
    pub fn open(dir: &Path, config: LogConfig) -> Result<Log, LogError> {
        Log::open_trusting(dir, config, &[])
    }

    /// [`Log::open`], except that sealed segment `i` is mapped without reading its frames when
    /// `sealed_ends[i]` is where its data ends (the caller's record of it, from
    /// [`Log::sealed_ends`] at a time it was sealed and checked, such as a persisted index). Only
    /// the file's size and the end-of-data marker are checked; check the whole segments later,
    /// off the hot path, with [`super::check_sealed`]. A segment that does not match is scanned
    /// as by [`Log::open`].
    pub fn open_trusting(dir: &Path, config: LogConfig, sealed_ends: &[u64]) -> Result<Log, LogError> {
        let recovered = recovery::recover(dir, &config, sealed_ends)?;
        // glommio opens files and the directory (for its fsync at rollover) by absolute path
        // only: a relative one fails there with EBADF and would poison the log.
        let dir = std::fs::canonicalize(dir).map_err(|source| LogError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let dir = dir.as_path();
        let log = Log {
            dir: dir.to_owned(),
            config,
            _dir_lock: recovered.dir_lock,
            segments: recovered.segments,
            end_lsn: recovered.end_lsn,
            durable_lsn: recovered.end_lsn,
            unsynced_bytes: 0,
            in_flight: None,
            pending: VecDeque::new(),
            spare: Vec::new(),
            recent: VecDeque::new(),
            recent_bytes: 0,
            recent_bytes_max: 0,
            poisoned: None,
            full: None,
            closed: false,
            committer_waker: None,
            pack_level: None,
            read_clock: ReadClock::default(),
            trust_failed: recovered.trust_failed,
            prepared: None,
            preparing: false,
            prepare_failed: None,
        };
        tracing::info!(
            dir = %dir.display(),
            segments = log.segments.len(),
            end_lsn = log.end_lsn,
            "log opened"
        );
        Ok(log)
    }

    /// Frames a record into the pending batch and returns its position. Copies only: the record
    /// becomes durable when the committer's next `fdatasync` covers it
    /// ([`super::Committer::wait_durable`]); until then it is readable but not acknowledged.
    ///
    /// Panics if `kind` is 0 (a bug: kind 0 marks the end of data).
    pub fn append(&mut self, kind: u8, payload: &[u8]) -> Result<Lsn, LogError> {
        assert_ne!(kind, 0, "record kind 0 is reserved for the end of data");
        self.release_unpacked();
        if let Some(reason) = &self.poisoned {
            return Err(LogError::Poisoned(reason.clone()));
        }
        if let Some(reason) = &self.full {
            return Err(LogError::Full(reason.clone()));
        }
        if self.closed {
            return Err(LogError::Closed);
        }
        let payload_bytes_max = self.config.payload_bytes_max();
        if payload.len() > payload_bytes_max {
            return Err(LogError::RecordTooLarge {
                payload_bytes: payload.len(),
                payload_bytes_max,
            });
        }
        let frame_bytes = frame::frame_bytes(payload.len());
        if self.unsynced_bytes + frame_bytes > self.config.pending_bytes_max {
            return Err(LogError::Backpressure {
                unsynced_bytes: self.unsynced_bytes,
                pending_bytes_max: self.config.pending_bytes_max,
            });
        }

        let segment_bytes = self.config.segment_bytes;
        let frame_len = frame_bytes as u64;
        let offset = self.end_lsn % segment_bytes;
        let lsn = if offset + frame_len <= segment_bytes {
            self.end_lsn
        } else {
            // Seal the current segment: its tail stays zero, the record starts the next one.
            self.end_lsn - offset + segment_bytes
        };
        let batch_bytes_max = self.config.batch_bytes_max;
        // A chunk lies within one segment: a record that starts a segment starts a chunk, even
        // when the previous chunk ends exactly where it begins.
        let starts_segment = lsn.is_multiple_of(segment_bytes);
        let joins_last = !starts_segment
            && self
                .pending
                .back()
                .is_some_and(|c| c.end() == lsn && c.bytes.len() + frame_bytes <= batch_bytes_max);
        if !joins_last {
            self.pending.push_back(Chunk {
                start: lsn,
                bytes: std::mem::take(&mut self.spare),
                record_count: 0,
            });
        }
        let chunk = self.pending.back_mut().expect("a pending chunk exists");
        frame::encode(kind, payload, &mut chunk.bytes);
        chunk.record_count += 1;
        assert!(chunk.bytes.len() <= batch_bytes_max);
        assert!((lsn % segment_bytes) + frame_len <= segment_bytes);

        self.end_lsn = lsn + frame_len;
        self.unsynced_bytes += frame_bytes;
        if let Some(waker) = self.committer_waker.take() {
            waker.wake();
        }
        Ok(Lsn(lsn))
    }

    /// The record at `lsn`: from the mapped segment if durable, else from memory. Its checksum is
    /// checked on every read. [`LogError::Corrupt`] if the bytes there are not a valid frame
    /// (including a position in the middle of a record), [`LogError::OutOfRange`] if no record
    /// can be there.
    pub fn read(&self, lsn: Lsn) -> Result<Record<'_>, LogError> {
        if !lsn.0.is_multiple_of(frame::ALIGN_BYTES as u64) {
            return Err(self.corrupt_at(lsn.0, "not a multiple of 8, so no frame starts here".into()));
        }
        match self.place(lsn.0) {
            Place::End | Place::Gap(_) => Err(LogError::OutOfRange {
                lsn,
                end_lsn: Lsn(self.end_lsn),
            }),
            Place::Durable(segment, offset) => self.decode_at(lsn.0, segment.durable_bytes(offset, &self.read_clock)?),
            Place::Memory(chunk, offset) => self.decode_at(lsn.0, &chunk.bytes[offset..]),
        }
    }

    /// Every record in LSN order: recovered ones, then later appends, durable or not. Stops
    /// after yielding the first error (a frame that no longer checks).
    pub fn records(&self) -> Records<'_> {
        Records {
            log: self,
            lsn: 0,
            failed: false,
        }
    }

    /// The records from `lsn` on, which must be where a record starts (the LSN of a record, or
    /// [`Records::next_lsn`] of an earlier iteration): for reading a log in pieces.
    pub fn records_from(&self, lsn: Lsn) -> Records<'_> {
        Records {
            log: self,
            lsn: lsn.0,
            failed: false,
        }
    }

    /// Packs sealed segments with zstd at `level` from now on (see [`Log::pack_job`]), or stops
    /// (`None`). Reads are the same either way.
    pub fn set_packing(&mut self, level: Option<i32>) {
        self.pack_level = level;
    }

    /// The next sealed segment to pack, when packing is on and one is still plain (oldest
    /// first). Run it off the executor's thread ([`PackJob::run`]), then hand the outcome to
    /// [`Log::packed`]; see [`super::pack_sealed`].
    pub fn pack_job(&self) -> Option<PackJob> {
        let level = self.pack_level?;
        let sealed = self.segments.len().saturating_sub(1);
        // Only segments checked since the open: packing one on an unchecked end could drop data.
        let segment = self.segments[..sealed].iter().find(|s| !s.is_packed() && !s.trusted)?;
        Some(PackJob {
            index: segment.index,
            path: segment.path.clone(),
            data_end: segment.data_end,
            segment_bytes: self.config.segment_bytes,
            level,
        })
    }

    /// Takes the outcome of `job`: the segment is read from its packed file from now on and its
    /// plain file removed; or, on failure, packing stops for the life of this log (the error
    /// is logged: a damaged frame in a sealed segment is named there).
    pub fn packed(&mut self, job: &PackJob, outcome: Result<PackedSegment, LogError>) {
        match outcome {
            Ok(PackedSegment(packed)) => {
                let slot = usize::try_from(job.index).expect("segment index fits memory");
                self.segments[slot].replace_with(packed);
                tracing::debug!(file = %job.path.display(), "sealed segment packed");
            }
            Err(error) => {
                tracing::error!(file = %job.path.display(), %error, "packing sealed segments stops");
                self.pack_level = None;
            }
        }
    }

    /// Drops the least recently read half of the decompressed blocks of packed segments once
    /// more than [`UNPACKED_BLOCKS_MAX`] are held. Reads borrow those blocks, so they can only be
    /// dropped here, with the log borrowed mutably: appends call it, and so should a reader
    /// between batches of reads (a replay, a long range read).
    pub fn release_unpacked(&mut self) {
        if self.read_clock.held.get() <= UNPACKED_BLOCKS_MAX {
            return;
        }
        let mut held: Vec<(u64, usize, usize)> = Vec::new();
        for (slot, segment) in self.segments.iter().enumerate() {
            if segment.is_packed() {
                held.extend(segment.unpacked().map(|(block, used)| (used, slot, block)));
            }
        }
        if held.len() <= UNPACKED_BLOCKS_MAX {
            return;
        }
        held.sort_unstable();
        let drop = held.len() - UNPACKED_BLOCKS_MAX / 2;
        for (_, slot, block) in held.into_iter().take(drop) {
            self.segments[slot].release(block, &self.read_clock);
        }
    }

    /// The creation of the next segment, when it is due: none is prepared or under way, and the
    /// last segment is half full (or there is none). Creating a segment (file, preallocation,
    /// directory sync: milliseconds here) at rollover would hold up the batch that needs it;
    /// run the job off the executor's thread and hand it to [`Log::prepared`] (see
    /// [`super::maintain`]). Without it, the segment is created when first needed.
    pub fn prepare_job(&mut self) -> Option<PrepareJob> {
        if self.prepared.is_some() || self.preparing || self.poisoned.is_some() || self.closed {
            return None;
        }
        if self
            .prepare_failed
            .is_some_and(|at| at.elapsed() < std::time::Duration::from_secs(1))
        {
            return None;
        }
        let segment_bytes = self.config.segment_bytes;
        let half_full = self
            .segments
            .last()
            .is_none_or(|last| self.end_lsn - last.first_lsn(segment_bytes) >= segment_bytes / 2);
        if !half_full {
            return None;
        }
        self.preparing = true;
        Some(PrepareJob {
            dir: self.dir.clone(),
            index: self.segments.len() as u64,
            segment_bytes,
        })
    }

    /// Takes a prepared segment (used by the batch that first needs it). One the log no longer
    /// needs (it created that segment itself meanwhile) is dropped; its file is the log's.
    pub fn prepared(&mut self, outcome: Result<PreparedSegment, LogError>) {
        self.preparing = false;
        match outcome {
            Ok(PreparedSegment(segment)) if segment.index == self.segments.len() as u64 => {
                self.prepared = Some(segment);
            }
            Ok(_) => {}
            Err(error) => {
                if self.prepare_failed.is_none() {
                    tracing::warn!(%error, "next log segment not prepared ahead: it is created when needed");
                }
                self.prepare_failed = Some(std::time::Instant::now());
                return;
            }
        }
        self.prepare_failed = None;
    }

    /// Prepares the next segment now, on this thread (at start, before the log is busy).
    pub fn prepare_now(&mut self) {
        if let Some(job) = self.prepare_job() {
            let outcome = job.run();
            self.prepared(outcome);
        }
    }

    /// Whether some of the sealed ends given to [`Log::open_trusting`] did not hold: a segment
    /// ended elsewhere (it was then checked whole) or is no longer sealed. The caller's index
    /// does not describe this log.
    pub fn trust_failed(&self) -> bool {
        self.trust_failed
    }

    /// The ends of the segments opened on the caller's word and not checked since, in order from
    /// segment 0 (what [`super::check_sealed`] takes).
    pub fn trusted_ends(&self) -> Vec<u64> {
        self.segments
            .iter()
            .take_while(|s| s.trusted)
            .map(|s| s.data_end)
            .collect()
    }

    /// Checks every segment opened on the caller's word now, as [`Log::open`] would have, and
    /// stops trusting them (for a caller whose index turned out not to describe the log). Fails
    /// on corruption like [`Log::open`].
    pub fn check_trusted(&mut self) -> Result<(), LogError> {
        for segment in &mut self.segments {
            segment.check_trusted()?;
        }
        self.trust_failed = false;
        Ok(())
    }

    /// The caller checked the trusted segments off the thread ([`super::check_sealed`] on
    /// [`Log::trusted_ends`]) and found them intact: they are trusted no longer, and may be packed.
    pub fn trusted_checked(&mut self) {
        for segment in &mut self.segments {
            segment.trusted = false;
        }
    }

    /// Where the data of every sealed segment ends (all segments but the last), in order: what
    /// [`Log::open_trusting`] takes back.
    pub fn sealed_ends(&self) -> Vec<u64> {
        let sealed = self.segments.len().saturating_sub(1);
        self.segments[..sealed].iter().map(|s| s.data_end).collect()
    }

    /// Position just past the last appended record; the next record goes here, or at the start
    /// of the next segment if it does not fit in this one.
    pub fn end_lsn(&self) -> Lsn {
        Lsn(self.end_lsn)
    }

    /// Position just past the last durable record: the record at `lsn` is durable iff
    /// `lsn < durable_lsn`.
    pub fn durable_lsn(&self) -> Lsn {
        Lsn(self.durable_lsn)
    }

    /// Why appends are refused for want of disk space, while they are: the next segment could
    /// not be preallocated. Records appended before stay pending (not acknowledged, nothing
    /// written) and the committer retries the allocation every second; once it succeeds this
    /// clears and the log goes on where it was. Every write into a segment lands in space that
    /// was preallocated, so a full disk never tears or loses a record.
    pub fn full(&self) -> Option<&str> {
        self.full.as_deref()
    }

    /// The reason the log was poisoned, if it was.
    pub fn poisoned(&self) -> Option<&str> {
        self.poisoned.as_deref()
    }

    /// Frame bytes appended but not yet durable.
    pub fn unsynced_bytes(&self) -> usize {
        self.unsynced_bytes
    }

    /// The limits the log was opened with.
    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// The log directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether a batch waits for the committer.
    pub(super) fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Registers the committer's waker, woken by the next append or [`Log::wake_committer`].
    pub(super) fn set_committer_waker(&mut self, waker: &Waker) {
        match &mut self.committer_waker {
            Some(current) if current.will_wake(waker) => {}
            slot => *slot = Some(waker.clone()),
        }
    }

    pub(super) fn wake_committer(&mut self) {
        if let Some(waker) = self.committer_waker.take() {
            waker.wake();
        }
    }

    /// Refuses every later append with [`LogError::Closed`].
    /// Whether the committer was shut down (appends are refused).
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    pub(super) fn close(&mut self) {
        self.closed = true;
    }

    /// Records the first failure; every later append and waiter fails with it.
    pub(super) fn poison(&mut self, reason: String) {
        if self.poisoned.is_none() {
            self.poisoned = Some(reason);
        }
    }

    /// Takes the next pending batch and makes it the one in flight, creating its segment file
    /// if it is the first batch there. `None` when nothing is pending or the log is poisoned
    /// (a failed segment creation poisons it).
    /// With `copy`, the batch carries a copy of its frames; without, the caller copies them
    /// from [`Log::in_flight_bytes`] (once, into the buffer it writes).
    pub(super) fn take_batch(&mut self, copy: bool) -> Option<Batch> {
        if self.poisoned.is_some() {
            return None;
        }
        assert!(self.in_flight.is_none(), "one batch in flight at a time");
        let chunk = self.pending.pop_front()?;
        let segment_bytes = self.config.segment_bytes;
        let index = chunk.start / segment_bytes;
        let offset = chunk.start % segment_bytes;
        let slot = usize::try_from(index).expect("segment index fits memory");
        assert!(offset + chunk.bytes.len() as u64 <= segment_bytes);
        assert!(slot <= self.segments.len(), "batches never skip a segment");
        assert!(
            slot + 1 >= self.segments.len(),
            "batches go to the last segment or a new one"
        );
        let mut segment_created = slot == self.segments.len();
        if segment_created {
            let made = match self.prepared.take() {
                // (Its file could be gone: unlinked by a failed creation of the same segment
                // here while the preparation ran.)
                Some(segment) if segment.index == index && segment.path.exists() => {
                    // Created, preallocated and named durably ahead: nothing to do here.
                    segment_created = false;
                    Ok(segment)
                }
                _ => Segment::create(&self.dir, index, segment_bytes),
            };
            match made {
                Ok(segment) => {
                    if let Some(reason) = self.full.take() {
                        tracing::info!(dir = %self.dir.display(), %reason, "disk space is back: the log goes on");
                    }
                    self.segments.push(segment);
                }
                Err(error) => {
                    let path = recovery::segment_path(&self.dir, chunk.start - offset);
                    self.pending.push_front(chunk);
                    let reason = format!("creating segment {}: {error}", path.display());
                    // ENOSPC, EDQUOT: nothing was written; the half-made file goes and the
                    // creation is retried. Anything else poisons the log.
                    if matches!(error.raw_os_error(), Some(28 | 122)) {
                        let _ = std::fs::remove_file(&path);
                        if self.full.is_none() {
                            tracing::error!(dir = %self.dir.display(), %reason, "disk full: appends refused until space is freed");
                        }
                        self.full = Some(reason);
                    } else {
                        self.poison(reason);
                    }
                    return None;
                }
            }
        }
        let segment = &self.segments[slot];
        assert_eq!(segment.data_end, offset, "a batch starts at the end of durable data");
        let batch = Batch {
            segment_index: index,
            path: segment.path.clone(),
            offset,
            bytes: if copy { chunk.bytes.clone() } else { Vec::new() },
            len: chunk.bytes.len(),
            record_count: chunk.record_count,
            segment_created,
        };
        self.in_flight = Some(chunk);
        Some(batch)
    }

    /// The in-flight frames from byte `from` on, for a write that was short.
    pub(super) fn in_flight_bytes(&self, from: usize) -> &[u8] {
        let chunk = self.in_flight.as_ref().expect("a batch is in flight");
        &chunk.bytes[from..]
    }

    /// Ends the in-flight batch: on success its records become durable; on failure the log is
    /// poisoned (the records stay readable from memory, never acknowledged).
    pub(super) fn complete_batch(&mut self, result: Result<(), String>) {
        let chunk = self.in_flight.take().expect("a batch is in flight");
        if let Err(reason) = result {
            self.in_flight = Some(chunk);
            self.poison(reason);
            return;
        }
        let segment_bytes = self.config.segment_bytes;
        let slot = usize::try_from(chunk.start / segment_bytes).expect("segment index fits memory");
        let offset = chunk.start % segment_bytes;
        let segment = &mut self.segments[slot];
        assert_eq!(segment.data_end, offset, "batches complete in order");
        segment.data_end = offset + chunk.bytes.len() as u64;
        assert!(chunk.start >= self.durable_lsn);
        self.durable_lsn = chunk.end();
        assert!(self.durable_lsn <= self.end_lsn);
        self.unsynced_bytes -= chunk.bytes.len();
        if self.recent_bytes_max == 0 {
            self.recycle(chunk.bytes);
            return;
        }
        self.recent_bytes += chunk.bytes.len();
        self.recent.push_back(chunk);
        self.trim_recent();
    }

    /// Drops the oldest recent chunks until they fit `recent_bytes_max`.
    fn trim_recent(&mut self) {
        while self.recent_bytes > self.recent_bytes_max {
            let oldest = self.recent.pop_front().expect("recent bytes are in recent chunks");
            self.recent_bytes -= oldest.bytes.len();
            self.recycle(oldest.bytes);
        }
    }

    /// Keeps the buffer of a chunk no longer needed for the next one, if it is the larger.
    fn recycle(&mut self, mut bytes: Vec<u8>) {
        if bytes.capacity() > self.spare.capacity() {
            bytes.clear();
            self.spare = bytes;
        }
    }

    /// Keeps the last durable batches in memory, up to `bytes_max` bytes of frames, and reads
    /// their records from there rather than from the segment maps (0: none, the default). For
    /// direct writes, which drop the cached pages of what they write: without it, reading a
    /// record just made durable (an evaluation that runs after its batch was synced, a timeline
    /// page of recent messages) would go to the device.
    pub fn keep_recent(&mut self, bytes_max: usize) {
        self.recent_bytes_max = bytes_max;
        self.trim_recent();
    }

    fn place(&self, lsn: u64) -> Place<'_> {
        if lsn >= self.end_lsn {
            return Place::End;
        }
        let segment_bytes = self.config.segment_bytes;
        if lsn < self.durable_lsn {
            if let Some(place) = self.recent_place(lsn) {
                return place;
            }
            let slot = usize::try_from(lsn / segment_bytes).expect("segment index fits memory");
            let segment = &self.segments[slot];
            let offset = lsn % segment_bytes;
            return if offset < segment.data_end {
                Place::Durable(segment, offset)
            } else {
                Place::Gap(lsn - offset + segment_bytes)
            };
        }
        // Chunks are few (about pending_bytes_max / batch_bytes_max, plus one per rollover), so
        // a linear search is enough.
        for chunk in self.in_flight.iter().chain(self.pending.iter()) {
            if lsn < chunk.start {
                return Place::Gap(chunk.start);
            }
            if lsn < chunk.end() {
                // Below end_lsn and within one chunk of at most batch_bytes_max bytes.
                return Place::Memory(chunk, (lsn - chunk.start) as usize);
            }
        }
        Place::End
    }

    /// Where a durable `lsn` is among the recent chunks, if it is in one (they hold the same
    /// bytes as the segment there).
    fn recent_place(&self, lsn: u64) -> Option<Place<'_>> {
        let at = self.recent.partition_point(|c| c.end() <= lsn);
        let chunk = self.recent.get(at)?;
        (chunk.start <= lsn).then(|| Place::Memory(chunk, (lsn - chunk.start) as usize))
    }

    fn decode_at<'a>(&self, lsn: u64, bytes: &'a [u8]) -> Result<Record<'a>, LogError> {
        match frame::decode(bytes) {
            Ok(Some(f)) => Ok(Record {
                lsn: Lsn(lsn),
                kind: f.kind,
                payload: f.payload,
            }),
            Ok(None) => Err(self.corrupt_at(lsn, FrameError::EndOfData.to_string())),
            Err(e) => Err(self.corrupt_at(lsn, e.to_string())),
        }
    }

    fn corrupt_at(&self, lsn: u64, reason: String) -> LogError {
        let segment_bytes = self.config.segment_bytes;
        let offset = lsn % segment_bytes;
        LogError::Corrupt {
            file: recovery::segment_path(&self.dir, lsn - offset),
            offset,
            reason,
        }
    }
}

/// Iterator over every record, from [`Log::records`].
pub struct Records<'a> {
    log: &'a Log,
    /// Where the next record is, or where to look for it.
    lsn: u64,
    failed: bool,
}

impl Records<'_> {
    /// Where the next record is looked for: resume there with [`Log::records_from`].
    pub fn next_lsn(&self) -> Lsn {
        Lsn(self.lsn)
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<Record<'a>, LogError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        loop {
            let bytes = match self.log.place(self.lsn) {
                Place::End => return None,
                Place::Gap(next) => {
                    assert!(next > self.lsn);
                    self.lsn = next;
                    continue;
                }
                Place::Durable(segment, offset) => match segment.durable_bytes(offset, &self.log.read_clock) {
                    Ok(bytes) => bytes,
                    Err(error) => {
                        self.failed = true;
                        return Some(Err(error));
                    }
                },
                Place::Memory(chunk, offset) => &chunk.bytes[offset..],
            };
            let result = self.log.decode_at(self.lsn, bytes);
            match &result {
                Ok(record) => {
                    self.lsn += frame::frame_bytes(record.payload.len()) as u64;
                }
                Err(_) => self.failed = true,
            }
            return Some(result);
        }
    }
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("dir", &self.dir)
            .field("config", &self.config)
            .field("segments", &self.segments.len())
            .field("end_lsn", &self.end_lsn)
            .field("durable_lsn", &self.durable_lsn)
            .field("unsynced_bytes", &self.unsynced_bytes)
            .field("poisoned", &self.poisoned)
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}
