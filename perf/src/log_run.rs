//! The log alone: durable append throughput at 100 B, 1 KiB and 10 KiB records, as a busy shard
//! would feed it (appends never wait for the disk until the log pushes back), each reported
//! beside the raw O_DIRECT bandwidth and fdatasync rate of the same disk.
//!
//! The producer appends records as fast as `Log::append` takes them and keeps several batches
//! in flight: every `window_bytes` it notes the last LSN, and once four windows are outstanding
//! it waits for the oldest to be durable. The group committer turns what is pending into one
//! io_uring write and one fdatasync per batch, as in the node.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::path::Path;
use std::rc::Rc;
use std::sync::{Arc, Barrier};
use std::time::Instant;

use engine::node::NodeConfig;
use scheduler::log::{Committer, Log, LogError, Lsn};
use serde::Serialize;

/// Record kind for the probe's records (the log does not interpret kinds).
const KIND: u8 = 1;
/// Windows of appended-but-not-durable records kept outstanding.
const WINDOWS_IN_FLIGHT: usize = 4;

#[derive(Clone, Debug, Serialize)]
pub struct AppendRun {
    /// Logs appended to at once, each by its own executor thread, as the node's shards do.
    pub shards: usize,
    pub record_bytes: usize,
    pub records: u64,
    pub seconds: f64,
    pub records_per_s: f64,
    /// Payload bytes made durable per second.
    pub payload_mb_per_s: f64,
    /// Frame bytes (headers and padding included) written per second.
    pub written_mb_per_s: f64,
    pub fdatasync_batches: u64,
    pub records_per_batch: f64,
    /// Share of the run the executor threads (appends, the committer, I/O submission and
    /// completion) spent on a CPU, on average: near 1, the run was bound by those threads, not
    /// the disk.
    pub executor_busy: f64,
}

/// CPU time the calling thread has used so far.
fn thread_cpu_time() -> std::time::Duration {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a plain system call that writes only into `now`.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    assert_eq!(rc, 0, "CLOCK_THREAD_CPUTIME_ID is always there on Linux");
    std::time::Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

/// Appends `total_bytes` of payload in records of `record_bytes` to each of `shards` fresh logs
/// in `dir` (removed afterwards), with the node's log configuration: one executor
/// thread per log (on cores 0.. with `pin`), started together, as a node's shards append to
/// their own logs on the same disk. The figures are the sums over the logs, from the common
/// start to the moment the last one was durable. `direct_io`: batches written with O_DIRECT
/// (the node's `log.direct_io`).
pub fn run(
    dir: &Path,
    record_bytes: usize,
    total_bytes: usize,
    direct_io: bool,
    shards: usize,
    pin: bool,
) -> Result<AppendRun, String> {
    let shards = shards.max(1);
    let start = Arc::new(Barrier::new(shards));
    let mut handles = Vec::new();
    for shard in 0..shards {
        let dir = dir.join(format!("shard-{shard}"));
        let start = Arc::clone(&start);
        let placement = if pin {
            glommio::Placement::Fixed(shard)
        } else {
            glommio::Placement::Unbound
        };
        let handle = glommio::LocalExecutorBuilder::new(placement)
            .name("hewitt-perf-log")
            .spawn(move || async move { append_loop(&dir, record_bytes, total_bytes, direct_io, &start).await })
            .map_err(|e| e.to_string())?;
        handles.push(handle);
    }
    let runs: Vec<Result<AppendRun, String>> = handles
        .into_iter()
        .map(|h| h.join().map_err(|e| e.to_string()).and_then(|run| run))
        .collect();
    std::fs::remove_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let runs = runs.into_iter().collect::<Result<Vec<_>, _>>()?;
    let seconds = runs.iter().map(|r| r.seconds).fold(0.0, f64::max);
    let records: u64 = runs.iter().map(|r| r.records).sum();
    let batches: u64 = runs.iter().map(|r| r.fdatasync_batches).sum();
    let written_bytes: f64 = runs.iter().map(|r| r.written_mb_per_s * r.seconds).sum();
    let batched_records: f64 = runs
        .iter()
        .map(|r| r.records_per_batch * r.fdatasync_batches as f64)
        .sum();
    Ok(AppendRun {
        shards,
        record_bytes,
        records,
        seconds,
        records_per_s: records as f64 / seconds,
        payload_mb_per_s: (records as usize * record_bytes) as f64 / seconds / 1e6,
        written_mb_per_s: written_bytes / seconds,
        fdatasync_batches: batches,
        records_per_batch: batched_records / batches.max(1) as f64,
        executor_busy: runs.iter().map(|r| r.executor_busy).sum::<f64>() / shards as f64,
    })
}

/// A fresh log in `dir` with the node's configuration and its committer running, one record of
/// `record_bytes` already durable (it creates and preallocates the first segment: kept out of
/// the measurement), and that record's bytes.
struct Probe {
    log: Rc<RefCell<Log>>,
    committer: Rc<Committer>,
    task: glommio::Task<()>,
    record: Vec<u8>,
    first: Lsn,
    config: scheduler::log::LogConfig,
}

async fn start_probe(dir: &Path, record_bytes: usize, direct_io: bool) -> Result<Probe, String> {
    let config = NodeConfig::new(dir, "127.0.0.1:0".parse().map_err(|e| format!("{e}"))?).log;
    let log = Rc::new(RefCell::new(Log::open(dir, config).map_err(|e| e.to_string())?));
    // As a node runs it: segments created ahead of need, off the executor's thread.
    log.borrow_mut().prepare_now();
    glommio::spawn_local(scheduler::log::maintain(Rc::clone(&log))).detach();
    let committer = Committer::new(Rc::clone(&log));
    committer.set_direct_io(direct_io);
    // In a latency-sensitive queue, as the node runs it (engine::node).
    let queue = glommio::executor().create_task_queue(
        glommio::Shares::default(),
        glommio::Latency::Matters(std::time::Duration::from_micros(100)),
        "group-commit",
    );
    let task = glommio::spawn_local_into(Rc::clone(&committer).run(), queue).map_err(|e| e.to_string())?;
    let record: Vec<u8> = (0..record_bytes).map(|i| (i % 251) as u8).collect();
    let first = log.borrow_mut().append(KIND, &record).map_err(|e| e.to_string())?;
    committer.wait_durable(first).await.map_err(|e| e.to_string())?;
    Ok(Probe {
        log,
        committer,
        task,
        record,
        first,
        config,
    })
}

async fn append_loop(
    dir: &Path,
    record_bytes: usize,
    total_bytes: usize,
    direct_io: bool,
    start: &Barrier,
) -> Result<AppendRun, String> {
    let probe = start_probe(dir, record_bytes, direct_io).await;
    // Every log waits here, even one that failed to start, so that none waits forever; this
    // blocks the executor, on which nothing else runs yet.
    start.wait();
    let Probe {
        log,
        committer,
        task,
        record,
        first,
        config,
    } = probe?;

    let records = (total_bytes / record_bytes.max(1)).max(1) as u64;
    let window_bytes = config.batch_bytes_max / 2;
    let stats_before = committer.stats();
    let mut windows: VecDeque<Lsn> = VecDeque::new();
    let mut in_window = 0;
    let mut last = first;
    let started = Instant::now();
    let cpu_before = thread_cpu_time();
    let mut appended = 0;
    while appended < records {
        let result = log.borrow_mut().append(KIND, &record);
        match result {
            Ok(lsn) => {
                last = lsn;
                appended += 1;
                in_window += record_bytes;
                if in_window >= window_bytes {
                    in_window = 0;
                    windows.push_back(lsn);
                    if windows.len() > WINDOWS_IN_FLIGHT {
                        let oldest = windows.pop_front().expect("non-empty");
                        committer.wait_durable(oldest).await.map_err(|e| e.to_string())?;
                    }
                }
            }
            Err(LogError::Backpressure { .. }) => {
                let oldest = windows.pop_front().unwrap_or(last);
                committer.wait_durable(oldest).await.map_err(|e| e.to_string())?;
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    committer.wait_durable(last).await.map_err(|e| e.to_string())?;
    let seconds = started.elapsed().as_secs_f64();
    let executor_busy = (thread_cpu_time() - cpu_before).as_secs_f64() / seconds;
    let stats = committer.stats();
    committer.shutdown().await.map_err(|e| e.to_string())?;
    task.await;
    let batches = stats.batch_count - stats_before.batch_count;
    Ok(AppendRun {
        shards: 1,
        record_bytes,
        records,
        seconds,
        records_per_s: records as f64 / seconds,
        payload_mb_per_s: (records as usize * record_bytes) as f64 / seconds / 1e6,
        written_mb_per_s: (stats.byte_count - stats_before.byte_count) as f64 / seconds / 1e6,
        fdatasync_batches: batches,
        records_per_batch: (stats.record_count - stats_before.record_count) as f64 / batches.max(1) as f64,
        executor_busy,
    })
}

/// Acknowledgement latency of the log alone under an open-loop load.
#[derive(Clone, Debug, Serialize)]
pub struct AckRun {
    pub record_bytes: usize,
    /// Records per second offered (a fraction of the measured peak).
    pub offered_per_s: f64,
    pub load_fraction: f64,
    pub achieved_per_s: f64,
    pub records_per_batch: f64,
    /// From each record's intended append time to the moment its fdatasync was seen done.
    pub latency: crate::report::Latency,
    /// The same offered load on the same disk with no log at all (see [`raw_open_loop`]),
    /// measured in the same window (alternating with the log, see [`ack_latency`]): the limit
    /// this latency is compared with.
    pub raw_open_loop: crate::report::Latency,
    /// Rounds of the log then the raw open loop, and seconds of each per round.
    pub rounds: u32,
    pub round_seconds: f64,
    /// Each of the log's batches' fdatasync, as its committer timed it.
    pub fdatasync: crate::report::Latency,
    /// Share of the log's rounds its executor thread (producer, observer, log and committer)
    /// spent on a CPU, on average: near 1, the latency was that thread's queue, not the disk's.
    pub executor_busy: f64,
}

/// How often the producer of [`ack_latency`] wakes to append the records due since its last
/// turn. Each record's latency still counts from its due time, so the wait for the next turn
/// (up to this long, half of it on average) is charged to the log, where the raw open loop
/// looks for arrivals every 20 µs. It must stay well under one fdatasync (~250 µs here): at
/// 1 ms it was the largest part of the log's latency (p50 ~1.1 ms against the raw loop's
/// ~0.2 ms, p99/raw 2.2x and 4.1x at 50 % load, where 100 µs gave 1.0x to 1.9x in six runs on
/// the same day), and it tied each batch to one turn (~280 records, whose fdatasyncs were the
/// slower for it: p99 ~430 µs against ~230). It shares the log's executor, which parks between
/// turns, so it must not be much shorter either.
pub const PRODUCER_TICK: std::time::Duration = std::time::Duration::from_micros(100);

/// How many times [`ack_latency`] alternates between the log and the raw open loop.
pub const ACK_ROUNDS: u32 = 10;

/// Appends records of `record_bytes` at `rate` per second (open loop: each record is due at
/// start + i/rate and its latency counts from then, so a stall is charged to every record it
/// delays), and measures how long until each is durable; beside it, the raw open loop at the
/// same load. This disk stalls for about 100 ms every few seconds, so the two are measured in
/// the same window: [`ACK_ROUNDS`] rounds of `seconds / ACK_ROUNDS` each, the log (a fresh one)
/// then the raw loop, their histograms merged, so that stalls fall on both alike.
pub fn ack_latency(
    dir: &Path,
    record_bytes: usize,
    rate: f64,
    load_fraction: f64,
    seconds: f64,
    direct_io: bool,
) -> Result<AckRun, String> {
    let round_seconds = seconds / f64::from(ACK_ROUNDS);
    let (mut log_latency, mut raw_latency) = (crate::report::histogram(), crate::report::histogram());
    let mut fdatasyncs = crate::report::histogram();
    let mut summary: Option<AckRun> = None;
    let (mut achieved, mut per_batch, mut busy) = (0.0, 0.0, 0.0);
    for round in 0..ACK_ROUNDS {
        let owned = dir.join(format!("round-{round}"));
        let handle = glommio::LocalExecutorBuilder::default()
            .name("hewitt-perf-log-ack")
            .spawn(move || async move {
                ack_loop(&owned, record_bytes, rate, load_fraction, round_seconds, direct_io).await
            })
            .map_err(|e| e.to_string())?;
        let (run, histogram, syncs) = handle.join().map_err(|e| e.to_string())??;
        log_latency.add(&histogram).map_err(|e| e.to_string())?;
        fdatasyncs.add(&syncs).map_err(|e| e.to_string())?;
        achieved += run.achieved_per_s / f64::from(ACK_ROUNDS);
        per_batch += run.records_per_batch / f64::from(ACK_ROUNDS);
        busy += run.executor_busy / f64::from(ACK_ROUNDS);
        summary.get_or_insert(run);
        // Frames as the log writes them: the record and its 16-byte header.
        let raw = raw_open_loop(dir, record_bytes + 16, rate, round_seconds)?;
        raw_latency.add(&raw).map_err(|e| e.to_string())?;
    }
    std::fs::remove_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut run = summary.expect("at least one round");
    run.achieved_per_s = achieved;
    run.records_per_batch = per_batch;
    run.executor_busy = busy;
    run.latency = crate::report::Latency::of(&log_latency);
    run.raw_open_loop = crate::report::Latency::of(&raw_latency);
    run.rounds = ACK_ROUNDS;
    run.fdatasync = crate::report::Latency::of(&fdatasyncs);
    run.round_seconds = round_seconds;
    Ok(run)
}

/// The acknowledgement latency this disk allows at an offered load: records arrive at `rate`
/// per second (open loop) and a writer does nothing but write every record arrived so far and
/// fdatasync, again and again (a group commit with no overhead at all); each record is durable
/// when the first fdatasync begun after its arrival completes. Weighted by records, as the
/// log's latency is, so a stall of the disk counts once for every record it delays, where a
/// probe timing single syncs counts it once.
pub fn raw_open_loop(
    dir: &Path,
    frame_bytes: usize,
    rate: f64,
    seconds: f64,
) -> Result<hdrhistogram::Histogram<u64>, String> {
    use std::io::Write;
    let path = dir.join("raw-open-loop");
    let io = |e: std::io::Error| format!("{}: {e}", path.display());
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .map_err(io)?;
    let frame = vec![0x5a_u8; frame_bytes];
    let total = (rate * seconds) as u64;
    // Allocated ahead, as the log's segments are, so that a sync carries data, not the file's
    // growth.
    {
        use std::os::unix::io::AsRawFd;
        let len = libc::off_t::try_from(total * frame_bytes as u64).map_err(|e| e.to_string())?;
        // SAFETY: posix_fallocate only reads its integer arguments; the descriptor is open.
        let code = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) };
        if code != 0 {
            return Err(io(std::io::Error::from_raw_os_error(code)));
        }
    }
    let mut histogram = crate::report::histogram();
    let (mut written, mut batch) = (0u64, Vec::new());
    let started = Instant::now();
    while written < total {
        let arrived = ((started.elapsed().as_secs_f64() * rate) as u64).min(total);
        if arrived == written {
            std::thread::sleep(std::time::Duration::from_micros(20));
            continue;
        }
        batch.clear();
        for _ in written..arrived {
            batch.extend_from_slice(&frame);
        }
        file.write_all(&batch).map_err(io)?;
        file.sync_data().map_err(io)?;
        let done = Instant::now();
        for i in written..arrived {
            let due = started + std::time::Duration::from_secs_f64(i as f64 / rate);
            crate::report::record(&mut histogram, done.saturating_duration_since(due));
        }
        written = arrived;
    }
    drop(file);
    std::fs::remove_file(&path).map_err(io)?;
    Ok(histogram)
}

async fn ack_loop(
    dir: &Path,
    record_bytes: usize,
    rate: f64,
    load_fraction: f64,
    seconds: f64,
    direct_io: bool,
) -> Result<(AckRun, hdrhistogram::Histogram<u64>, hdrhistogram::Histogram<u64>), String> {
    let Probe {
        log,
        committer,
        task,
        record,
        ..
    } = start_probe(dir, record_bytes, direct_io).await?;

    // (lsn, intended time) of every record not yet seen durable, in append order.
    let pending: Rc<RefCell<VecDeque<(Lsn, Instant)>>> = Rc::default();
    let histogram = Rc::new(RefCell::new(
        hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?,
    ));
    let done = Rc::new(std::cell::Cell::new(false));
    // The observer: waits for the oldest pending record, then takes every record the sync covered.
    let observer = {
        let (pending, histogram, committer, log, done) = (
            Rc::clone(&pending),
            Rc::clone(&histogram),
            Rc::clone(&committer),
            Rc::clone(&log),
            Rc::clone(&done),
        );
        glommio::spawn_local(async move {
            loop {
                let head = pending.borrow().front().map(|(lsn, _)| *lsn);
                let Some(head) = head else {
                    if done.get() {
                        return Ok::<(), String>(());
                    }
                    // Nothing appended yet: sleep (a busy yield would keep the executor from
                    // polling its reactor, and so the producer's timer, for a whole time slice).
                    glommio::timer::sleep(std::time::Duration::from_micros(50)).await;
                    continue;
                };
                committer.wait_durable(head).await.map_err(|e| e.to_string())?;
                let durable = log.borrow().durable_lsn();
                let now = Instant::now();
                let mut pending = pending.borrow_mut();
                let mut histogram = histogram.borrow_mut();
                while pending.front().is_some_and(|(lsn, _)| *lsn < durable) {
                    let (_, due) = pending.pop_front().expect("non-empty");
                    let us = now.saturating_duration_since(due).as_micros().max(1) as u64;
                    histogram.record(us.min(60_000_000)).map_err(|e| e.to_string())?;
                }
            }
        })
    };
    // Each batch's fdatasync as the committer timed it.
    let fsyncs = Rc::new(RefCell::new(crate::report::histogram()));
    {
        let fsyncs = Rc::clone(&fsyncs);
        committer.set_observer(Box::new(move |r| {
            fsyncs.borrow_mut().saturating_record(r.fdatasync_us.max(1));
        }));
    }
    let stats_before = committer.stats();
    let total = (rate * seconds) as u64;
    let started = Instant::now();
    let cpu_before = thread_cpu_time();
    let mut appended = 0u64;
    while appended < total {
        let due_count = ((started.elapsed().as_secs_f64() * rate) as u64).min(total);
        while appended < due_count {
            let due = started + std::time::Duration::from_secs_f64(appended as f64 / rate);
            let result = log.borrow_mut().append(KIND, &record);
            match result {
                Ok(lsn) => {
                    pending.borrow_mut().push_back((lsn, due));
                    appended += 1;
                }
                Err(LogError::Backpressure { .. }) => {
                    // Over capacity: wait for the log (the delay counts in the latency).
                    glommio::timer::sleep(std::time::Duration::from_micros(100)).await;
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        glommio::timer::sleep(PRODUCER_TICK).await;
    }
    done.set(true);
    observer.await?;
    let elapsed = started.elapsed().as_secs_f64();
    let executor_busy = (thread_cpu_time() - cpu_before).as_secs_f64() / elapsed;
    let stats = committer.stats();
    committer.shutdown().await.map_err(|e| e.to_string())?;
    task.await;
    let batches = stats.batch_count - stats_before.batch_count;
    let latency = crate::report::Latency::of(&histogram.borrow());
    let histogram = histogram.borrow().clone();
    let run = AckRun {
        record_bytes,
        offered_per_s: rate,
        load_fraction,
        achieved_per_s: total as f64 / elapsed,
        records_per_batch: (stats.record_count - stats_before.record_count) as f64 / batches.max(1) as f64,
        latency,
        // Measured after the log's run, outside its executor (see `ack_latency`).
        raw_open_loop: crate::report::Latency::of(&crate::report::histogram()),
        rounds: 1,
        round_seconds: seconds,
        fdatasync: crate::report::Latency::of(&fsyncs.borrow()),
        executor_busy,
    };
    let syncs = fsyncs.borrow().clone();
    Ok((run, histogram, syncs))
}
