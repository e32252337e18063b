//! A scenario through the engine's API alone, on one glommio executor: the shard core and its
//! group committer, with no HTTP and no client-side signing inside the timed loop.
//!
//! The scenario's items are signed ahead (signing is the client's cost) and admitted in batches
//! the way that many concurrent clients would land them: parse and verify the client's
//! signature, admit (nonce, hash chain, assignment signature, append), evaluate everything the
//! batch caused (messenger deliveries included), then wait for the one fdatasync that covers
//! the batch. The report splits the time per client message into those steps, so it shows
//! where a message's microseconds go.

use std::cell::RefCell;
use std::io::Write;
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use engine::checkpoint::{self, ResultsWriter};
use engine::compute::{ComputeConfig, Runtime};
use engine::node::{now, NodeConfig};
use engine::shard::{Shard, ShardError, ShardLimits};
use scheduler::data_item::DataItem;
use scheduler::log::{Committer, Log, Lsn};
use scheduler::signer::Signer;
use serde::Serialize;

use crate::workload::{prepare, Scenario, Workload};

/// Time spent per step, summed over the run.
#[derive(Default)]
struct Steps {
    verify: Duration,
    admit: Duration,
    evaluate: Duration,
    durable: Duration,
}

/// Per client message, in µs.
#[derive(Clone, Debug, Serialize)]
pub struct StepsUs {
    pub parse_and_verify: f64,
    pub admit_sign_assignment_append: f64,
    pub evaluate_and_deliver: f64,
    pub wait_durable: f64,
}

/// What one engine run measured.
#[derive(Clone, Debug, Serialize)]
pub struct EngineRun {
    pub scenario: String,
    pub driver: String,
    pub workload: String,
    pub processes: usize,
    pub messages: usize,
    pub batch: usize,
    pub seconds: f64,
    /// Client messages made durable and evaluated per second.
    pub messages_per_s: f64,
    /// Every message assigned per second: client messages plus those the messenger carried.
    pub all_messages_per_s: f64,
    pub fdatasync_batches: u64,
    pub per_message_us: StepsUs,
}

/// Lands one signed item through the shard's admission for its `Type`.
fn admit(shard: &mut Shard, item: DataItem, bytes: &[u8]) -> Result<Lsn, ShardError> {
    match item.tag("Type") {
        Some("Module") => Ok(shard.admit_module(item, bytes)?.1),
        Some("Process") => Ok(shard.admit_process(item, bytes, now())?.1),
        _ => Ok(shard.admit_message(item, bytes, now())?.2),
    }
}

/// Evaluates and delivers until the shard is idle.
fn settle(shard: &mut Shard) -> Result<(), String> {
    let mut evaluated = Vec::new();
    while shard.has_work() {
        evaluated.clear();
        shard.pump(now(), 1024, &mut evaluated).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Runs `messages` client messages of `scenario` in batches of `batch` on a fresh log in
/// `data_dir` (removed afterwards), on an executor pinned to `core` if one is given.
pub fn run(
    scenario: Scenario,
    data_dir: &Path,
    processes: usize,
    messages: usize,
    batch: usize,
    core: Option<usize>,
) -> Result<EngineRun, String> {
    let dir = data_dir.to_owned();
    let placement = match core {
        Some(core) => glommio::Placement::Fixed(core),
        None => glommio::Placement::Unbound,
    };
    let handle = glommio::LocalExecutorBuilder::new(placement)
        .name("hewitt-perf-engine")
        .spawn(move || async move { run_on_executor(scenario, &dir, processes, messages, batch).await })
        .map_err(|e| e.to_string())?;
    let run = handle.join().map_err(|e| e.to_string())?;
    std::fs::remove_dir_all(data_dir).map_err(|e| format!("{}: {e}", data_dir.display()))?;
    run
}

async fn run_on_executor(
    scenario: Scenario,
    dir: &Path,
    processes: usize,
    messages: usize,
    batch: usize,
) -> Result<EngineRun, String> {
    let config = NodeConfig::new(dir, "127.0.0.1:0".parse().map_err(|e| format!("{e}"))?);
    let log = Rc::new(RefCell::new(
        Log::open(&dir.join("log"), config.log).map_err(|e| e.to_string())?,
    ));
    let committer = Committer::new(Rc::clone(&log));
    glommio::spawn_local(Rc::clone(&committer).run()).detach();
    let compute = ComputeConfig {
        // A spawn storm keeps every process live (no hibernation yet): one slot each.
        instance_count_max: if scenario == Scenario::Spawn {
            messages as u32 + 100
        } else {
            ComputeConfig::default().instance_count_max
        },
        ..ComputeConfig::default()
    };
    let runtime = Runtime::new(compute).map_err(|e| e.to_string())?;
    let mut shard = Shard::recover(
        Signer::generate_ed25519(),
        runtime,
        Rc::clone(&log),
        ShardLimits::default(),
    )
    .map_err(|e| e.to_string())?;
    let address = shard.address();
    let workload = prepare(scenario, processes, address, &mut |item| {
        let bytes = item.to_bytes();
        admit(&mut shard, item, &bytes).map(drop).map_err(|e| e.to_string())?;
        // The exchange's book is a thousand orders: keep the backlog under the shard's bound.
        settle(&mut shard)
    })?;
    settle(&mut shard)?;
    committer
        .wait_durable(Lsn(shard.log_end().0 - 1))
        .await
        .map_err(|e| e.to_string())?;
    let processes = match &workload {
        Workload::Counter { targets, .. } => targets.len(),
        Workload::Pingpong { pairs, .. } => pairs.len() * 2,
        Workload::Spawn { .. } | Workload::Exchange { .. } => 1,
    };

    let items: Vec<(Vec<u8>, DataItem)> = (0..messages as u64)
        .map(|ticket| {
            let item = workload.item(ticket);
            (item.to_bytes(), item)
        })
        .collect();

    let mut steps = Steps::default();
    let batches_before = committer.stats().batch_count;
    let assigned_before = shard.counters().assigned;
    let started = Instant::now();
    for chunk in items.chunks(batch.max(1)) {
        let mut last = Lsn(0);
        for (bytes, item) in chunk {
            let began = Instant::now();
            let parsed = DataItem::parse(bytes).map_err(|e| e.to_string())?;
            parsed.verify().map_err(|e| e.to_string())?;
            let verified = Instant::now();
            steps.verify += verified - began;
            last = admit(&mut shard, item.clone(), bytes).map_err(|e| e.to_string())?;
            steps.admit += verified.elapsed();
        }
        let began = Instant::now();
        settle(&mut shard)?;
        let evaluated_at = Instant::now();
        steps.evaluate += evaluated_at - began;
        // Messenger deliveries appended records after the batch's last client message.
        last = last.max(Lsn(shard.log_end().0 - 1));
        committer.wait_durable(last).await.map_err(|e| e.to_string())?;
        steps.durable += evaluated_at.elapsed();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let batches = committer.stats().batch_count - batches_before;
    let all = shard.counters().assigned - assigned_before;
    committer.shutdown().await.map_err(|e| e.to_string())?;
    let per_message_us = |d: Duration| d.as_secs_f64() * 1e6 / messages.max(1) as f64;
    Ok(EngineRun {
        scenario: scenario.name().to_owned(),
        driver: "engine API, one executor".to_owned(),
        workload: scenario.describe(processes),
        processes,
        messages,
        batch,
        seconds: elapsed,
        messages_per_s: messages as f64 / elapsed,
        all_messages_per_s: all as f64 / elapsed,
        fdatasync_batches: batches,
        per_message_us: StepsUs {
            parse_and_verify: per_message_us(steps.verify),
            admit_sign_assignment_append: per_message_us(steps.admit),
            evaluate_and_deliver: per_message_us(steps.evaluate),
            wait_durable: per_message_us(steps.durable),
        },
    })
}

/// What a restart measured: a log of `records` written by the `many` scenario, then read back.
#[derive(Clone, Debug, Serialize)]
pub struct RestartRun {
    pub processes: usize,
    /// Assignment records read back (one per message, and one per process).
    pub records: u64,
    pub log_bytes: u64,
    /// `Log::open`: the segments checked and mapped, the torn-tail window scanned.
    pub open_ms: f64,
    /// Reading every record back into the shard's index (the node answers 503 meanwhile).
    pub index_ms: f64,
    /// Evaluating every recovered message again (the node serves meanwhile; `/ready` after).
    pub replay_ms: f64,
    pub index_records_per_s: f64,
    pub replay_messages_per_s: f64,
    /// Linear extrapolation of open + index to 10 M records: the time to serving.
    pub serving_ms_at_10m_records: f64,
    /// A checkpoint of every process after the replay: taking it (state compressed, records
    /// written and synced) and its size.
    pub checkpoint_ms: f64,
    pub checkpoint_bytes: u64,
    /// The restart again, resuming from that checkpoint: open + index + resume (every process
    /// state and result read back), then the replay left (none: the checkpoint covers the log).
    pub resumed_serving_ms: f64,
    pub resume_ms: f64,
    pub resumed_replay_ms: f64,
    pub resumed_messages: u64,
}

/// Writes `messages` counter messages over `processes` processes through the engine (as the
/// `many` scenario), stops, then times the restart: opening the log, reading it back into the
/// index, and replaying every message. The data dir is removed afterwards.
pub fn restart(data_dir: &Path, processes: usize, messages: usize, batch: usize) -> Result<RestartRun, String> {
    let dir = data_dir.to_owned();
    let handle = glommio::LocalExecutorBuilder::default()
        .name("hewitt-perf-restart")
        .spawn(move || async move {
            run_on_executor(Scenario::Many, &dir, processes, messages, batch).await?;
            let config = NodeConfig::new(&dir, "127.0.0.1:0".parse().map_err(|e| format!("{e}"))?);
            let began = Instant::now();
            let log = Log::open(&dir.join("log"), config.log).map_err(|e| e.to_string())?;
            let open_ms = began.elapsed().as_secs_f64() * 1e3;
            let log_bytes = log.end_lsn().0;
            let log = Rc::new(RefCell::new(log));
            let runtime = Runtime::new(ComputeConfig::default()).map_err(|e| e.to_string())?;
            let began = Instant::now();
            let signer = Signer::generate_ed25519();
            let mut shard =
                Shard::recover(signer, runtime.clone(), log, ShardLimits::default()).map_err(|e| e.to_string())?;
            let index_ms = began.elapsed().as_secs_f64() * 1e3;
            let results_path = dir.join(engine::checkpoint_files::RESULTS_FILE);
            shard.set_results(ResultsWriter::open(&results_path, 0).map_err(|e| e.to_string())?);
            // Every assignment read back waits for its replay.
            let records = shard.recovery_pending() as u64;
            let pending = records as f64;
            let began = Instant::now();
            settle(&mut shard)?;
            let replay_ms = began.elapsed().as_secs_f64() * 1e3;
            let serving_ms = open_ms + index_ms;

            // A checkpoint of it all, then the restart again from it.
            let began = Instant::now();
            let checkpoint_path = dir.join(engine::checkpoint_files::CHECKPOINTS_FILE);
            let mut file = checkpoint::open_checkpoints(&checkpoint_path, 0).map_err(|e| e.to_string())?;
            let (mut cursor, mut chunk) = (0, Vec::new());
            loop {
                chunk.clear();
                let more = shard.checkpoint_chunk(&mut cursor, true, &mut chunk, 4 << 20);
                file.write_all(&chunk).map_err(|e| e.to_string())?;
                if !more {
                    break;
                }
            }
            chunk.clear();
            let (_, results) = shard.checkpoint_commit(1, &mut chunk).ok_or("checkpoints are off")?;
            results.sync_data().map_err(|e| e.to_string())?;
            file.write_all(&chunk).map_err(|e| e.to_string())?;
            file.sync_data().map_err(|e| e.to_string())?;
            let checkpoint_ms = began.elapsed().as_secs_f64() * 1e3;
            let checkpoint_bytes = file.metadata().map_err(|e| e.to_string())?.len();
            let processes = shard.process_count();
            drop(shard);

            let began = Instant::now();
            let log = Log::open(&dir.join("log"), config.log).map_err(|e| e.to_string())?;
            let mut shard = Shard::new(
                Signer::generate_ed25519(),
                runtime,
                Rc::new(RefCell::new(log)),
                ShardLimits::default(),
            );
            let mut next = Some(scheduler::log::Lsn(0));
            while let Some(at) = next {
                next = shard.recover_from(at, usize::MAX).map_err(|e| e.to_string())?;
            }
            let resuming = Instant::now();
            let loaded = checkpoint::load(&checkpoint_path)
                .map_err(|e| e.to_string())?
                .ok_or("the checkpoint is missing")?;
            let resumed_messages = shard.apply_checkpoint(loaded, &results_path)?;
            shard.finish_recovery();
            let resume_ms = resuming.elapsed().as_secs_f64() * 1e3;
            let resumed_serving_ms = began.elapsed().as_secs_f64() * 1e3;
            let began = Instant::now();
            settle(&mut shard)?;
            let resumed_replay_ms = began.elapsed().as_secs_f64() * 1e3;
            Ok(RestartRun {
                checkpoint_ms,
                checkpoint_bytes,
                resumed_serving_ms,
                resume_ms,
                resumed_replay_ms,
                resumed_messages,
                processes,
                records,
                log_bytes,
                open_ms,
                index_ms,
                replay_ms,
                index_records_per_s: records as f64 / (index_ms / 1e3),
                replay_messages_per_s: pending / (replay_ms / 1e3),
                serving_ms_at_10m_records: serving_ms * 10e6 / records.max(1) as f64,
            })
        })
        .map_err(|e| e.to_string())?;
    let run = handle.join().map_err(|e| e.to_string())?;
    std::fs::remove_dir_all(data_dir).map_err(|e| format!("{}: {e}", data_dir.display()))?;
    run
}
