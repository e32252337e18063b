//! [`Committer`], the glommio shell of the log: the task that group-commits pending batches
//! (one io_uring write, one `fdatasync` each) and wakes the callers waiting for durability.
//!
//! Batches go through the page cache by default. With [`Committer::set_direct_io`] they go
//! around it (O_DIRECT, glommio's `DmaFile`): a direct write covers whole blocks of the device,
//! so a batch is copied into aligned memory starting at the block its first frame falls in,
//! after the bytes of that block the previous batch wrote (kept in memory as the segment's
//! [`Tail`], or read back once after a restart), and padded with zeros to the end of its last
//! block, where the log's data ends anyway (a segment is preallocated, all zeros). The bytes
//! written again are those already there, so a torn direct write damages no frame that was
//! durable before it: whichever of its sectors reached the device, the bytes before the batch's
//! first frame are the same (as with buffered writes, whose writeback also writes whole
//! pages). Reads of durable records still come from the log's read-only maps; the kernel drops
//! the cached pages a direct write covers, so the next read of them comes from the device, with
//! the new bytes. Blocks are 4 KiB, or the device's logical block size if larger (glommio's
//! figure for it is read from the whole disk's sysfs entry, so a partition or a mapped volume
//! on a 4 KiB device could report 512); a segment size that is not a multiple of the block
//! gets buffered writes. On tmpfs glommio opens the file without O_DIRECT: the aligned writes
//! then go through the page cache.
//!
//! It makes no decisions about records or positions (the [`Log`] core does) and never retries a
//! failed write: a failure poisons the log.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::task::Poll;
use std::time::Instant;

use futures_channel::oneshot;
use glommio::io::{BufferedFile, Directory, DmaFile, OpenOptions};

use super::store::Batch;

/// How often a committer blocked by a full disk tries to allocate the next segment again.
const FULL_RETRY: std::time::Duration = std::time::Duration::from_secs(1);
use super::{Log, LogError, Lsn};

/// Counters of the group commits done so far, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// Batches made durable, each by one write and one `fdatasync`.
    pub batch_count: u64,
    /// Records in those batches.
    pub record_count: u64,
    /// Frame bytes in those batches.
    pub byte_count: u64,
    /// Duration of the last `fdatasync`, in microseconds.
    pub fdatasync_latency_us_last: u64,
    /// Sum of the durations of all `fdatasync`s, in microseconds.
    pub fdatasync_latency_us_total: u64,
}

type Waiter = oneshot::Sender<Result<(), LogError>>;

/// One durable batch, as reported to the observer of [`Committer::set_observer`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchReport {
    pub records: u64,
    /// Frame bytes written.
    pub bytes: u64,
    /// Duration of the batch's `fdatasync`, in microseconds.
    pub fdatasync_us: u64,
}

/// Called after every durable batch (for metrics); must be cheap and must not touch the log.
pub type BatchObserver = Box<dyn Fn(&BatchReport)>;

/// A segment file open for writing.
enum SegmentFile {
    /// Through the page cache.
    Buffered(BufferedFile),
    /// Around it (O_DIRECT).
    Direct(DmaFile),
}

impl SegmentFile {
    async fn fdatasync(&self) -> Result<(), String> {
        match self {
            SegmentFile::Buffered(file) => file.fdatasync().await.map_err(|e| e.to_string()),
            SegmentFile::Direct(file) => file.fdatasync().await.map_err(|e| e.to_string()),
        }
    }
}

/// The partial last block of what direct writes put in a segment so far: the next batch starts
/// inside it and writes it again, these bytes first.
struct Tail {
    segment_index: u64,
    /// Offset of the block in the segment.
    start: u64,
    /// The block's bytes up to the end of the data (fewer than a block).
    bytes: Vec<u8>,
}

/// The group-commit task of one [`Log`]. Create it with [`Committer::new`], spawn
/// [`Committer::run`] on the log's executor, and stop it with [`Committer::shutdown`].
pub struct Committer {
    log: Rc<RefCell<Log>>,
    dir: PathBuf,
    /// Callers waiting for durability, keyed by (record LSN, arrival order). Bounded by the
    /// callers: one waiter per appended record in practice, and appends are bounded by
    /// `pending_bytes_max`.
    waiters: RefCell<BTreeMap<(u64, u64), Waiter>>,
    waiter_seq: Cell<u64>,
    /// The segment file being written, by segment index; taken out while a batch is written.
    file: RefCell<Option<(u64, SegmentFile)>>,
    /// Write with O_DIRECT ([`Committer::set_direct_io`]); cleared when a filesystem refuses it.
    direct: Cell<bool>,
    /// What the last direct write left in a partial block.
    tail: RefCell<Option<Tail>>,
    /// Shutdown was asked: flush what is pending, then stop.
    stopping: Cell<bool>,
    /// `run` has returned.
    stopped: Cell<bool>,
    stop_waiters: RefCell<Vec<oneshot::Sender<()>>>,
    stats: Cell<CommitStats>,
    observer: RefCell<Option<BatchObserver>>,
}

/// How often the executor is woken while a batch's write and fdatasync are in flight.
const IN_FLIGHT_TICK: std::time::Duration = std::time::Duration::from_millis(1);

/// Never completes: wakes the executor every [`IN_FLIGHT_TICK`] while it is polled.
///
/// Raced against a batch's write and sync, as a guard. When the committer runs in a
/// latency-sensitive task queue, glommio submits its I/O on the latency ring; an executor asleep
/// on its main ring must notice that completion through the link between the rings. Rare
/// batches were seen to take ~60 s to complete (until a client's timeout and retry), most
/// likely completions parked by an overflowing completion queue (the node now sizes its rings
/// to its connections: `engine::node::ring_depth`). A timer completes on the main ring, so while
/// I/O is in flight the executor never sleeps longer than a tick. Costs one timer per tick of
/// in-flight I/O; nothing when idle.
async fn keep_executor_awake<T>() -> T {
    loop {
        glommio::timer::sleep(IN_FLIGHT_TICK).await;
    }
}

impl Committer {
    /// A committer for `log`; nothing happens until [`Committer::run`] is spawned.
    pub fn new(log: Rc<RefCell<Log>>) -> Rc<Committer> {
        // Absolute: glommio opens a directory (to sync new segments' names) relative to no
        // directory at all, so a relative one fails with EBADF.
        let dir = log.borrow().dir().to_owned();
        let dir = std::path::absolute(&dir).unwrap_or(dir);
        Rc::new(Committer {
            log,
            dir,
            waiters: RefCell::new(BTreeMap::new()),
            waiter_seq: Cell::new(0),
            file: RefCell::new(None),
            direct: Cell::new(false),
            tail: RefCell::new(None),
            stopping: Cell::new(false),
            stopped: Cell::new(false),
            stop_waiters: RefCell::new(Vec::new()),
            stats: Cell::new(CommitStats::default()),
            observer: RefCell::new(None),
        })
    }

    /// The commit loop: sleeps until a record is appended, then writes and syncs batch after
    /// batch until nothing is pending. Returns after [`Committer::shutdown`] (once everything
    /// appended before it is durable) or when the log is poisoned. Spawn it with
    /// `glommio::spawn_local` on the executor that owns the log.
    pub async fn run(self: Rc<Self>) {
        loop {
            self.wait_for_work().await;
            // A direct write copies the frames once, into its aligned buffer.
            let batch = self.log.borrow_mut().take_batch(!self.direct.get());
            let Some(batch) = batch else {
                let full = {
                    let log = self.log.borrow();
                    if let Some(reason) = log.poisoned() {
                        tracing::error!(dir = %self.dir.display(), %reason, "log poisoned");
                        break;
                    }
                    log.full().is_some()
                };
                if full && self.stopping.get() {
                    // Stopping: what is pending was never acknowledged and cannot be written.
                    tracing::warn!(dir = %self.dir.display(), "stopping with a full disk: unacknowledged records dropped");
                    break;
                }
                if full {
                    // The pending batch waits for space; look again in a while.
                    glommio::timer::sleep(FULL_RETRY).await;
                    continue;
                }
                let log = self.log.borrow();
                if self.stopping.get() && !log.has_pending() {
                    break;
                }
                continue;
            };
            let record_count = batch.record_count;
            let byte_count = batch.len as u64;
            let result = futures_lite::future::or(self.write(batch), keep_executor_awake()).await;
            let result = result.map(|latency_us| {
                let mut stats = self.stats.get();
                stats.batch_count += 1;
                stats.record_count += record_count;
                stats.byte_count += byte_count;
                stats.fdatasync_latency_us_last = latency_us;
                stats.fdatasync_latency_us_total += latency_us;
                self.stats.set(stats);
                if let Some(observer) = self.observer.borrow().as_ref() {
                    observer(&BatchReport {
                        records: record_count,
                        bytes: byte_count,
                        fdatasync_us: latency_us,
                    });
                }
            });
            self.log.borrow_mut().complete_batch(result);
            self.wake_waiters();
        }
        self.finish().await;
    }

    /// Resolves once the record at `lsn` is durable (at once if it already is), or fails with
    /// [`LogError::Poisoned`] (the record will never be acknowledged) or [`LogError::Closed`]
    /// (the committer stopped). Panics if no record was appended at or after `lsn` (a bug).
    pub async fn wait_durable(&self, lsn: Lsn) -> Result<(), LogError> {
        let receiver = {
            let log = self.log.borrow();
            if let Some(reason) = log.poisoned() {
                return Err(LogError::Poisoned(reason.to_owned()));
            }
            if lsn < log.durable_lsn() {
                return Ok(());
            }
            assert!(
                lsn < log.end_lsn(),
                "waiting for {lsn}, past the end of the log ({})",
                log.end_lsn()
            );
            if self.stopped.get() {
                return Err(LogError::Closed);
            }
            let (sender, receiver) = oneshot::channel();
            let seq = self.waiter_seq.get();
            self.waiter_seq.set(seq + 1);
            self.waiters.borrow_mut().insert((lsn.0, seq), sender);
            receiver
        };
        // A dropped sender means the committer went away without answering.
        receiver.await.unwrap_or(Err(LogError::Closed))
    }

    /// Asks the commit loop to make everything appended so far durable and stop, and waits
    /// until it has. Later appends fail with [`LogError::Closed`]. Returns the poison, if any.
    /// Needs [`Committer::run`] to be running (or finished).
    pub async fn shutdown(&self) -> Result<(), LogError> {
        if !self.stopped.get() {
            self.stopping.set(true);
            self.log.borrow_mut().wake_committer();
            let (sender, receiver) = oneshot::channel();
            self.stop_waiters.borrow_mut().push(sender);
            // Cancelled only if the committer is dropped, which also means it stopped.
            let _ = receiver.await;
        }
        match self.log.borrow().poisoned() {
            Some(reason) => Err(LogError::Poisoned(reason.to_owned())),
            None => Ok(()),
        }
    }

    /// Writes batches with O_DIRECT from now on (`on`), or through the page cache. Direct
    /// writes save the copy into the page cache and its writeback, and leave the device's own
    /// speed as the limit; a file system that refuses O_DIRECT (at a segment's open) gets
    /// buffered writes from then on, with a warning. The log then keeps its last
    /// `batch_bytes_max` bytes of durable batches in memory for reads ([`Log::keep_recent`]),
    /// since direct writes leave nothing of them in the page cache. Set it before
    /// [`Committer::run`].
    pub fn set_direct_io(&self, on: bool) {
        self.direct.set(on);
        let mut log = self.log.borrow_mut();
        let keep = if on { log.config().batch_bytes_max } else { 0 };
        log.keep_recent(keep);
    }

    /// Whether batches are written with O_DIRECT (asked for, and not refused so far).
    pub fn direct_io(&self) -> bool {
        self.direct.get()
    }

    /// Has `observer` called after every durable batch from now on.
    pub fn set_observer(&self, observer: BatchObserver) {
        *self.observer.borrow_mut() = Some(observer);
    }

    /// Bytes appended to the log and not yet durable.
    pub fn unsynced_bytes(&self) -> usize {
        self.log.borrow().unsynced_bytes()
    }

    /// The counters so far.
    pub fn stats(&self) -> CommitStats {
        self.stats.get()
    }

    /// Sleeps until a batch is pending, shutdown is asked, or the log is poisoned.
    async fn wait_for_work(&self) {
        std::future::poll_fn(|cx| {
            let mut log = self.log.borrow_mut();
            if self.stopping.get() || log.has_pending() || log.poisoned().is_some() {
                Poll::Ready(())
            } else {
                log.set_committer_waker(cx.waker());
                Poll::Pending
            }
        })
        .await;
    }

    /// Writes one batch and syncs it; returns the `fdatasync` latency in microseconds, or the
    /// reason to poison the log.
    async fn write(&self, batch: Batch) -> Result<u64, String> {
        let index = batch.segment_index;
        let file = self.file_for(index, &batch.path).await?;
        let result = self.write_to(&file, batch).await;
        *self.file.borrow_mut() = Some((index, file));
        result
    }

    async fn write_to(&self, file: &SegmentFile, batch: Batch) -> Result<u64, String> {
        let path = batch.path.clone();
        let segment_created = batch.segment_created;
        match file {
            SegmentFile::Buffered(file) => self.write_buffered(file, batch).await?,
            SegmentFile::Direct(file) => self.write_direct(file, batch).await?,
        }
        let started = Instant::now();
        file.fdatasync()
            .await
            .map_err(|e| format!("fdatasync of {}: {e}", path.display()))?;
        let latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        if segment_created {
            sync_dir(&self.dir).await?;
        }
        Ok(latency_us)
    }

    /// Writes `batch` with O_DIRECT: its blocks whole, the first one starting with the bytes
    /// already there (see the module docs).
    async fn write_direct(&self, file: &DmaFile, batch: Batch) -> Result<(), String> {
        let path = batch.path.display();
        let align = direct_block(file);
        let start = batch.offset - batch.offset % align;
        let head = usize::try_from(batch.offset - start).expect("less than a block");
        let kept = self
            .tail
            .borrow_mut()
            .take()
            .filter(|t| t.segment_index == batch.segment_index && t.start == start && t.bytes.len() == head);
        let head_bytes = match kept {
            Some(tail) => tail.bytes,
            None if head == 0 => Vec::new(),
            None => {
                // The first write into this block since the segment was opened (after a
                // restart): its bytes are read back once, through the page cache, which holds
                // what recovery read and synced (a read of less than a block, on this thread).
                let mut bytes = vec![0; head];
                std::fs::File::open(&batch.path)
                    .and_then(|f| std::os::unix::fs::FileExt::read_exact_at(&f, &mut bytes, start))
                    .map_err(|e| format!("reading back the {head} bytes at offset {start} of {path}: {e}"))?;
                bytes
            }
        };
        let end = batch.offset + batch.len as u64;
        let size = usize::try_from((end - start).div_ceil(align) * align).expect("a batch fits in memory");
        let mut buffer = file.alloc_dma_buffer(size);
        let data_end = head + batch.len;
        let bytes = buffer.as_bytes_mut();
        bytes[..head].copy_from_slice(&head_bytes);
        bytes[head..data_end].copy_from_slice(self.log.borrow().in_flight_bytes(0));
        bytes[data_end..].fill(0);
        let tail_start = end - end % align;
        let tail = Tail {
            segment_index: batch.segment_index,
            start: tail_start,
            bytes: bytes[usize::try_from(tail_start - start).expect("within the buffer")..data_end].to_vec(),
        };
        let written = file
            .write_at(buffer, start)
            .await
            .map_err(|e| format!("writing {size} bytes at offset {start} of {path} (O_DIRECT): {e}"))?;
        if written != size {
            // Direct writes into a preallocated file are not cut short; one that is, is not
            // retried (the log is poisoned, as after any failed write).
            return Err(format!(
                "writing {size} bytes at offset {start} of {path} (O_DIRECT): only {written} written"
            ));
        }
        *self.tail.borrow_mut() = Some(tail);
        Ok(())
    }

    async fn write_buffered(&self, file: &BufferedFile, batch: Batch) -> Result<(), String> {
        let path = batch.path.display();
        let total = batch.len;
        // Taken without a copy when direct writes were asked for and then refused.
        let mut buffer = if batch.bytes.len() == total {
            batch.bytes
        } else {
            self.log.borrow().in_flight_bytes(0).to_vec()
        };
        let mut written = 0;
        loop {
            let at = batch.offset + written as u64;
            let count = file
                .write_at(buffer, at)
                .await
                .map_err(|e| format!("writing {} bytes at offset {at} of {path}: {e}", total - written))?;
            if count == 0 {
                return Err(format!("writing at offset {at} of {path}: no byte written"));
            }
            written += count;
            assert!(written <= total);
            if written == total {
                break;
            }
            // A short write: write the rest, copied again from the in-flight batch.
            buffer = self.log.borrow().in_flight_bytes(written).to_vec();
        }
        Ok(())
    }

    /// The open file of segment `index`, opening it (and closing the previous one) if needed.
    async fn file_for(&self, index: u64, path: &Path) -> Result<SegmentFile, String> {
        let current = self.file.borrow_mut().take();
        match current {
            Some((open_index, file)) if open_index == index => return Ok(file),
            Some((_, previous)) => close(previous).await,
            None => {}
        }
        if self.direct.get() {
            let segment_bytes = self.log.borrow().config().segment_bytes;
            let refused = match OpenOptions::new().read(true).write(true).dma_open(path).await {
                Ok(file) if segment_bytes.is_multiple_of(direct_block(&file)) => {
                    return Ok(SegmentFile::Direct(file));
                }
                Ok(file) => {
                    let reason = format!(
                        "the segment size {segment_bytes} is not a multiple of the device's block of {} bytes",
                        direct_block(&file)
                    );
                    close(SegmentFile::Direct(file)).await;
                    reason
                }
                Err(error) => {
                    let error = std::io::Error::from(error);
                    // EINVAL: this file system does not take O_DIRECT. Anything else is an
                    // error opening the segment, which poisons the log as before.
                    if error.kind() != std::io::ErrorKind::InvalidInput {
                        return Err(format!("opening {} for direct writes: {error}", path.display()));
                    }
                    error.to_string()
                }
            };
            tracing::warn!(path = %path.display(), reason = %refused, "O_DIRECT refused: the log writes through the page cache");
            self.direct.set(false);
            self.tail.borrow_mut().take();
            self.log.borrow_mut().keep_recent(0);
        }
        let file = OpenOptions::new()
            .write(true)
            .buffered_open(path)
            .await
            .map_err(|e| format!("opening {} for writing: {e}", path.display()))?;
        Ok(SegmentFile::Buffered(file))
    }

    /// Answers every waiter whose record is now durable, or all of them if the log is poisoned.
    fn wake_waiters(&self) {
        let (durable_lsn, poison) = {
            let log = self.log.borrow();
            (log.durable_lsn(), log.poisoned().map(str::to_owned))
        };
        let done = {
            let mut waiters = self.waiters.borrow_mut();
            match poison {
                Some(_) => std::mem::take(&mut *waiters),
                None => {
                    let later = waiters.split_off(&(durable_lsn.0, 0));
                    std::mem::replace(&mut *waiters, later)
                }
            }
        };
        for (_, waiter) in done {
            let answer = match &poison {
                Some(reason) => Err(LogError::Poisoned(reason.clone())),
                None => Ok(()),
            };
            // A dropped receiver is a caller that stopped waiting: nothing to tell it.
            let _ = waiter.send(answer);
        }
    }

    /// After the loop: refuse later appends, answer the waiters left, release the file and
    /// whoever waits in `shutdown`.
    async fn finish(&self) {
        self.stopped.set(true);
        let poison = {
            let mut log = self.log.borrow_mut();
            log.close();
            log.poisoned().map(str::to_owned)
        };
        let left = std::mem::take(&mut *self.waiters.borrow_mut());
        for (_, waiter) in left {
            let answer = match &poison {
                Some(reason) => LogError::Poisoned(reason.clone()),
                None => LogError::Closed,
            };
            let _ = waiter.send(Err(answer));
        }
        let file = self.file.borrow_mut().take();
        if let Some((_, file)) = file {
            close(file).await;
        }
        for stop_waiter in std::mem::take(&mut *self.stop_waiters.borrow_mut()) {
            let _ = stop_waiter.send(());
        }
        tracing::info!(dir = %self.dir.display(), "log committer stopped");
    }
}

/// The block a direct write of `file` covers whole: the device's logical block, at least 4 KiB
/// (see the module docs).
fn direct_block(file: &DmaFile) -> u64 {
    file.alignment().max(4096)
}

/// Makes the names of newly created segments durable.
async fn sync_dir(dir: &Path) -> Result<(), String> {
    let handle = Directory::open(dir)
        .await
        .map_err(|e| format!("opening directory {}: {e}", dir.display()))?;
    handle
        .sync()
        .await
        .map_err(|e| format!("fsync of directory {}: {e}", dir.display()))?;
    if let Err(e) = handle.close().await {
        tracing::warn!(dir = %dir.display(), error = %e, "closing the log directory failed");
    }
    Ok(())
}

/// Closes a segment file whose writes are all synced; a failure here loses nothing.
async fn close(file: SegmentFile) {
    let closed = match file {
        SegmentFile::Buffered(file) => file.close().await,
        SegmentFile::Direct(file) => file.close().await,
    };
    if let Err(e) = closed {
        tracing::warn!(error = %e, "closing a log segment failed after its data was synced");
    }
}
