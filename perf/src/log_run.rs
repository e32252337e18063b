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
}

/// Appends `total_bytes` of payload in records of `record_bytes` to a fresh log in `dir`
/// (removed afterwards), with the node's log configuration.
pub fn run(dir: &Path, record_bytes: usize, total_bytes: usize) -> Result<AppendRun, String> {
    let owned = dir.to_owned();
    let handle = glommio::LocalExecutorBuilder::default()
        .name("hewitt-perf-log")
        .spawn(move || async move { append_loop(&owned, record_bytes, total_bytes).await })
        .map_err(|e| e.to_string())?;
    let run = handle.join().map_err(|e| e.to_string())?;
    std::fs::remove_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    run
}

async fn append_loop(dir: &Path, record_bytes: usize, total_bytes: usize) -> Result<AppendRun, String> {
    let config = NodeConfig::new(dir, "127.0.0.1:0".parse().map_err(|e| format!("{e}"))?).log;
    let log = Rc::new(RefCell::new(Log::open(dir, config).map_err(|e| e.to_string())?));
    let committer = Committer::new(Rc::clone(&log));
    let task = glommio::spawn_local(Rc::clone(&committer).run());
    let record: Vec<u8> = (0..record_bytes).map(|i| (i % 251) as u8).collect();
    // The first record creates and preallocates the segment: keep it out of the measurement.
    let first = log.borrow_mut().append(KIND, &record).map_err(|e| e.to_string())?;
    committer.wait_durable(first).await.map_err(|e| e.to_string())?;

    let records = (total_bytes / record_bytes.max(1)).max(1) as u64;
    let window_bytes = config.batch_bytes_max / 2;
    let stats_before = committer.stats();
    let mut windows: VecDeque<Lsn> = VecDeque::new();
    let mut in_window = 0;
    let mut last = first;
    let started = Instant::now();
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
    let stats = committer.stats();
    committer.shutdown().await.map_err(|e| e.to_string())?;
    task.await;
    let batches = stats.batch_count - stats_before.batch_count;
    Ok(AppendRun {
        record_bytes,
        records,
        seconds,
        records_per_s: records as f64 / seconds,
        payload_mb_per_s: (records as usize * record_bytes) as f64 / seconds / 1e6,
        written_mb_per_s: (stats.byte_count - stats_before.byte_count) as f64 / seconds / 1e6,
        fdatasync_batches: batches,
        records_per_batch: (stats.record_count - stats_before.record_count) as f64 / batches.max(1) as f64,
    })
}
