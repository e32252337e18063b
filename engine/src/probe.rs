//! Probes of this machine's limits, measured beside Hewitt's own figures in the same run
//! (PERF.md: every figure is reported as a ratio to its limit).
//!
//! Plain std I/O on purpose: a probe must measure the device, not our code.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// Latencies of `count` rounds of "append `block_bytes` bytes, then fdatasync" on a scratch file in
/// `dir` (removed afterwards): the floor under any durable acknowledgement on that disk.
pub fn fdatasync_latencies(dir: &Path, count: usize, block_bytes: usize) -> std::io::Result<Vec<Duration>> {
    let path = dir.join(".hewitt-fdatasync-probe");
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)?;
    let block = vec![0x5a_u8; block_bytes];
    let mut latencies = Vec::with_capacity(count);
    for round in 0..count {
        let began = Instant::now();
        file.write_all_at(&block, (round * block_bytes) as u64)?;
        file.sync_data()?;
        latencies.push(began.elapsed());
    }
    drop(file);
    std::fs::remove_file(&path)?;
    Ok(latencies)
}

/// The `q`-quantile (0..=1) of `samples`, sorting them in place.
pub fn quantile(samples: &mut [Duration], q: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.sort_unstable();
    let rank = ((samples.len() - 1) as f64 * q).round() as usize;
    samples[rank.min(samples.len() - 1)]
}

/// Writes a one-line summary `label: p50 … p99 … max …` in µs.
pub fn summary(out: &mut impl Write, label: &str, samples: &mut [Duration]) -> std::io::Result<()> {
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    writeln!(
        out,
        "{label}: p50 {:.0} µs, p99 {:.0} µs, max {:.0} µs ({} samples)",
        us(quantile(samples, 0.5)),
        us(quantile(samples, 0.99)),
        us(quantile(samples, 1.0)),
        samples.len()
    )
}
