//! The durable log (`scheduler::log`), the path every accepted message takes before it is
//! acknowledged:
//!
//! - `log/append/<size>`: `Log::append` of one record into the pending batch: framing, CRC32C and
//!   the copy, no I/O. With the default limits; whenever the pending bytes reach
//!   `pending_bytes_max` the clock stops and the log is reopened (nothing was ever written, so
//!   reopening only drops the pending batches). It includes the growth of fresh chunk buffers.
//! - `log/group_commit/<n>x1KiB`: one group commit: `n` appends of 1 KiB, then
//!   `Committer::wait_durable` of the last one, i.e. one io_uring write and one `fdatasync` (the
//!   committer's batch count is checked). Throughput is in records. The segment is created and
//!   preallocated before the clock starts and is large enough that no rollover happens inside a
//!   measurement, so the figure is the commit alone.
//! - `log/pwrite_fdatasync/preallocated/<bytes>`: the limit it is compared against, measured in
//!   the same run: a plain `pwrite` plus `fdatasync` of the same number of bytes into a
//!   preallocated file, as the log's segments are; `prewritten/<bytes>` the same into blocks
//!   written and synced beforehand (what a zero-filled segment would cost instead).
//! - `log/read/<where>_1KiB`: `Log::read` of a 1 KiB record, durable (from the mapped segment)
//!   or not yet durable (from the pending batch in memory); both check the CRC.
//!
//! Everything runs in temporary directories under `$TMPDIR` (the disk the figures describe).
//! Runs once per benchmark in test mode (`cargo test --benches`) so it never rots.

use std::cell::RefCell;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use glommio::{LocalExecutor, LocalExecutorBuilder};
use scheduler::log::{Committer, Log, LogConfig, LogError, Lsn};

const KIB: usize = 1024;

/// The record kind used throughout; any nonzero byte.
const KIND: u8 = 1;

/// For the commit benchmarks: segments big enough that a measurement never rolls over (the
/// longest, a warm-up round of 256-record batches, writes a few hundred MiB). Preallocated, not
/// written, and deleted after each measurement.
const COMMIT_SEGMENT_BYTES: u64 = 4 << 30;

fn payload(bytes: usize) -> Vec<u8> {
    (0..bytes).map(|i| (i % 251) as u8).collect()
}

fn size_label(bytes: usize) -> String {
    if bytes >= KIB {
        format!("{}KiB", bytes / KIB)
    } else {
        format!("{bytes}B")
    }
}

/// `Log::append` alone, with the default limits.
fn append(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let config = LogConfig::default();
    let mut group = c.benchmark_group("log/append");
    for bytes in [100, KIB, 10 * KIB] {
        let record = payload(bytes);
        group.throughput(Throughput::Bytes(bytes as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size_label(bytes)), &record, |b, record| {
            let mut log = Some(Log::open(dir.path(), config).expect("open"));
            b.iter_custom(|iters| {
                let mut elapsed = Duration::ZERO;
                let mut started = Instant::now();
                for _ in 0..iters {
                    let result = log.as_mut().expect("open").append(KIND, black_box(record));
                    match result {
                        Ok(lsn) => {
                            black_box(lsn);
                        }
                        Err(LogError::Backpressure { .. }) => {
                            // Full: stop the clock, drop the pending batches (never written)
                            // by reopening, and append again.
                            elapsed += started.elapsed();
                            log = None;
                            let mut fresh = Log::open(dir.path(), config).expect("reopen");
                            started = Instant::now();
                            black_box(fresh.append(KIND, black_box(record)).expect("append to an empty log"));
                            log = Some(fresh);
                        }
                        Err(e) => panic!("append failed: {e}"),
                    }
                }
                elapsed + started.elapsed()
            });
        });
    }
    group.finish();
}

/// A log with a running committer in a fresh directory, with its first segment already created.
struct Running {
    _dir: tempfile::TempDir,
    log: Rc<RefCell<Log>>,
    committer: Rc<Committer>,
    task: glommio::Task<()>,
}

impl Running {
    async fn start(config: LogConfig, record: &[u8]) -> Running {
        let dir = tempfile::tempdir().expect("temporary directory");
        let log = Rc::new(RefCell::new(Log::open(dir.path(), config).expect("open")));
        let committer = Committer::new(log.clone());
        let task = glommio::spawn_local(committer.clone().run());
        // The first batch creates and preallocates the segment: keep it out of the measurement.
        let lsn = log.borrow_mut().append(KIND, record).expect("append");
        committer.wait_durable(lsn).await.expect("durable");
        Running {
            _dir: dir,
            log,
            committer,
            task,
        }
    }

    /// Appends `count` records and waits until the last is durable.
    async fn commit(&self, record: &[u8], count: u64) {
        let mut last = Lsn(0);
        for _ in 0..count {
            last = self.log.borrow_mut().append(KIND, record).expect("append");
        }
        self.committer.wait_durable(last).await.expect("durable");
    }

    /// Stops the committer and returns the log (closed to appends, still readable).
    async fn stop(self) -> (Log, tempfile::TempDir) {
        self.committer.shutdown().await.expect("clean stop");
        self.task.await;
        drop(self.committer);
        let log = Rc::try_unwrap(self.log).expect("the committer has let go of the log");
        (log.into_inner(), self._dir)
    }
}

/// Group commits of `records` records of 1 KiB, one batch per iteration.
fn group_commit(c: &mut Criterion, executor: &LocalExecutor) {
    let config = LogConfig {
        segment_bytes: COMMIT_SEGMENT_BYTES,
        ..LogConfig::default()
    };
    let record = payload(KIB);
    let mut group = c.benchmark_group("log/group_commit");
    group.sample_size(20);
    for records in [1_u64, 16, 256] {
        group.throughput(Throughput::Elements(records));
        group.bench_function(BenchmarkId::from_parameter(format!("{records}x1KiB")), |b| {
            b.iter_custom(|iters| {
                executor.run(async {
                    let running = Running::start(config, &record).await;
                    let batches_before = running.committer.stats().batch_count;
                    let started = Instant::now();
                    for _ in 0..iters {
                        running.commit(&record, records).await;
                    }
                    let elapsed = started.elapsed();
                    let stats = running.committer.stats();
                    assert_eq!(stats.batch_count - batches_before, iters, "one batch per commit");
                    running.stop().await;
                    elapsed
                })
            });
        });
    }
    group.finish();
}

/// Reserves `bytes` for `file` as the log does for a segment, so that writes never extend it.
fn preallocate(file: &File, bytes: u64) {
    let length = libc::off_t::try_from(bytes).expect("fits off_t");
    // SAFETY: a plain system call on an open file descriptor.
    let error = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, length) };
    assert_eq!(
        error,
        0,
        "posix_fallocate: {}",
        std::io::Error::from_raw_os_error(error)
    );
}

/// The limit of a group commit: `pwrite` and `fdatasync` of a batch's bytes, appended
/// sequentially to a preallocated file (blocking, no io_uring), as the log's segments are. For
/// the one-record size also into a file whose blocks were written (zeros) and synced first: on
/// ext4 a write into preallocated (unwritten) extents makes every `fdatasync` commit an extent
/// conversion, which an overwrite does not need.
fn pwrite_fdatasync(c: &mut Criterion) {
    let mut group = c.benchmark_group("log/pwrite_fdatasync");
    group.sample_size(20);
    // The frame bytes of the group commits above: 1 and 256 records of 1 KiB (1040 B frames).
    for (bytes, prewritten) in [(1040_usize, false), (1040, true), (256 * 1040, false)] {
        let buffer = payload(bytes);
        let name = if prewritten { "prewritten" } else { "preallocated" };
        group.throughput(Throughput::Bytes(bytes as u64));
        group.bench_function(BenchmarkId::new(name, format!("{bytes}B")), |b| {
            b.iter_custom(|iters| {
                let dir = tempfile::tempdir().expect("temporary directory");
                let path = dir.path().join("file");
                let file = File::options()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .expect("create");
                let file_bytes = (iters + 1) * bytes as u64;
                preallocate(&file, file_bytes);
                if prewritten {
                    let zeros = vec![0_u8; 1 << 20];
                    let mut at = 0;
                    while at < file_bytes {
                        let count = zeros.len().min((file_bytes - at) as usize);
                        file.write_all_at(&zeros[..count], at).expect("pwrite");
                        at += count as u64;
                    }
                }
                sync(&file, dir.path());
                let started = Instant::now();
                for i in 0..iters {
                    file.write_all_at(&buffer, i * bytes as u64).expect("pwrite");
                    file.sync_data().expect("fdatasync");
                }
                started.elapsed()
            });
        });
    }
    group.finish();
}

fn sync(file: &File, dir: &Path) {
    file.sync_all().expect("fsync");
    File::open(dir).and_then(|d| d.sync_all()).expect("directory fsync");
}

/// `Log::read` of a durable record (mapped) and of one still in the pending batch (memory).
fn read(c: &mut Criterion, executor: &LocalExecutor) {
    const RECORD_COUNT: usize = 1000;
    let record = payload(KIB);
    let (durable, _durable_dir) = executor.run(async {
        let running = Running::start(LogConfig::default(), &record).await;
        running.commit(&record, RECORD_COUNT as u64).await;
        running.stop().await
    });
    assert_eq!(durable.durable_lsn(), durable.end_lsn());
    let durable_lsns = lsns(&durable);

    let pending_dir = tempfile::tempdir().expect("temporary directory");
    let mut pending = Log::open(pending_dir.path(), LogConfig::default()).expect("open");
    for _ in 0..RECORD_COUNT {
        pending.append(KIND, &record).expect("append");
    }
    assert_eq!(pending.durable_lsn(), Lsn(0));
    let pending_lsns = lsns(&pending);

    let mut group = c.benchmark_group("log/read");
    group.throughput(Throughput::Bytes(KIB as u64));
    for (name, log, lsns) in [
        ("durable_1KiB", &durable, &durable_lsns),
        ("pending_1KiB", &pending, &pending_lsns),
    ] {
        group.bench_function(name, |b| {
            // Walk the records in order, as a replay or a reader of recent history does.
            let mut next = 0;
            b.iter(|| {
                let lsn = lsns[next];
                next = (next + 1) % lsns.len();
                let record = log.read(black_box(lsn)).expect("read");
                black_box(record.payload.len())
            });
        });
    }
    group.finish();
}

/// The positions of the 1 KiB records of `log`.
fn lsns(log: &Log) -> Vec<Lsn> {
    let lsns: Vec<Lsn> = log
        .records()
        .map(|record| record.expect("valid record"))
        .filter(|record| record.payload.len() == KIB)
        .map(|record| record.lsn)
        .collect();
    assert!(!lsns.is_empty());
    lsns
}

fn log(c: &mut Criterion) {
    // One executor for the whole file: glommio wants one per thread.
    let executor = LocalExecutorBuilder::default().make().expect("glommio executor");
    append(c);
    group_commit(c, &executor);
    pwrite_fdatasync(c);
    read(c, &executor);
}

criterion_group! {
    name = benches;
    config = benches::criterion_config();
    targets = log
}
criterion_main!(benches);
