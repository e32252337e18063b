//! `hewitt verify`: replays processes from their logs and compares what the replay computes with
//! what the node holds: every result in the results file, and every process state in the
//! checkpoints (memory byte for byte, exported globals, where it stood).
//!
//! It runs on a stopped node's data dir (the logs are opened, and locked, as a start opens them;
//! a running node holds the lock and verify says so) and writes nothing: the outbox items a
//! replay derives are already in the logs and are dropped, so each process is replayed from its
//! own timeline alone, which also lets one process be verified by itself.
//!
//! From genesis (the default), every message is evaluated again and every checkpoint record is
//! checked when its process reaches the point it holds: a checkpoint whose memory differs from
//! what the log gives (a damaged or forged one) is caught even if its checksums are intact. From
//! the checkpoint, processes resume from it as a start does, and the results of the tail after it
//! are compared.

use std::collections::HashMap;
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use scheduler::log::{Log, Lsn};
use scheduler::signer::Signer;
use scheduler::{ProcessId, Timestamp};

use crate::checkpoint::{self, ProcessState, ResultRecord};
use crate::checkpoint_files::{CHECKPOINTS_FILE, RESULTS_FILE};
use crate::compute::Runtime;
use crate::cron::Tick;
use crate::node::NodeConfig;
use crate::shard::Shard;

/// Where the replay starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum From {
    Genesis,
    Checkpoint,
}

/// How far verification is, for a progress line.
#[derive(Clone, Copy, Debug, Default)]
pub struct Progress {
    pub shard: usize,
    pub shards: usize,
    /// Evaluations done and to do on this shard (messages; cron ticks come on top).
    pub done: u64,
    pub total: u64,
    pub elapsed: Duration,
}

/// What verification found.
#[derive(Debug, Default)]
pub struct Report {
    pub shards: usize,
    pub processes: usize,
    /// Messages and cron ticks evaluated.
    pub evaluations: u64,
    pub results_compared: u64,
    pub checkpoints_compared: u64,
    /// Everything that differs or could not be read, one line each.
    pub problems: Vec<String>,
    pub elapsed: Duration,
}

impl Report {
    /// Evaluations per second of the replay.
    pub fn rate(&self) -> f64 {
        self.evaluations as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Problems listed in full; beyond this many only counted.
const PROBLEMS_LISTED: usize = 100;

fn problem(report: &mut Report, line: String) {
    if report.problems.len() < PROBLEMS_LISTED {
        report.problems.push(line);
    } else if report.problems.len() == PROBLEMS_LISTED {
        report.problems.push("… further problems not listed".to_owned());
    }
}

/// Verifies the node whose configuration is `config` (its data dir, shard count and limits).
pub fn verify(
    config: &NodeConfig,
    from: From,
    only: Option<ProcessId>,
    progress: &mut dyn FnMut(&Progress),
) -> Result<Report, String> {
    let began = Instant::now();
    let data_dir = &config.data_dir;
    let shards = crate::node::recorded_shards(data_dir)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("{} holds no node's data", data_dir.display()))?;
    let key_path = data_dir.join("node-key.json");
    let key = || Signer::load(&key_path).map_err(|e| format!("node key {}: {e}", key_path.display()));
    key()?;
    let runtime = Runtime::new(config.compute.clone()).map_err(|e| e.to_string())?;
    let mut report = Report {
        shards,
        ..Report::default()
    };
    for index in 0..shards {
        let dir = crate::node::shard_dir(data_dir, index);
        verify_shard(
            config,
            &dir,
            index,
            shards,
            key()?,
            &runtime,
            from,
            only,
            &mut report,
            &mut |p| {
                progress(&Progress {
                    elapsed: began.elapsed(),
                    ..*p
                })
            },
        )?;
    }
    if let Some(pid) = only {
        if report.processes == 0 {
            return Err(format!("process {pid} is not in this node's logs"));
        }
    }
    report.elapsed = began.elapsed();
    Ok(report)
}

type ResultKey = (ProcessId, u64, Option<Tick>);

#[allow(clippy::too_many_arguments)]
fn verify_shard(
    config: &NodeConfig,
    dir: &Path,
    index: usize,
    shards: usize,
    signer: Signer,
    runtime: &Runtime,
    from: From,
    only: Option<ProcessId>,
    report: &mut Report,
    progress: &mut dyn FnMut(&Progress),
) -> Result<(), String> {
    let log_dir = dir.join("log");
    let log = Log::open(&log_dir, config.log)
        .map_err(|e| format!("log {}: {e} (verify needs the node stopped)", log_dir.display()))?;
    let log = Rc::new(std::cell::RefCell::new(log));
    let mut shard = Shard::new(signer, runtime.clone(), log, config.limits.clone());
    shard.set_placement(index, shards);
    shard.set_artifact_dir(config.data_dir.join("modules"));
    shard.set_replay_only();
    let mut next = Some(Lsn(0));
    while let Some(at) = next {
        next = shard
            .recover_from(at, 65_536)
            .map_err(|e| format!("shard {index}: {e}"))?;
    }

    // What the node holds: its checkpoint and the results it covers (and, beyond them, the
    // results of the tail, which a start would make again).
    let checkpoint_path = dir.join(CHECKPOINTS_FILE);
    let results_path = dir.join(RESULTS_FILE);
    let loaded = match checkpoint::load(&checkpoint_path) {
        Ok(loaded) => loaded,
        Err(error) => {
            problem(report, format!("shard {index}: checkpoint unreadable: {error}"));
            None
        }
    };
    if let Some(damage) = loaded.as_ref().and_then(|l| l.damage.as_ref()) {
        problem(report, format!("shard {index}: checkpoint damaged: {damage}"));
    }
    let commit = loaded.as_ref().and_then(|l| l.commit);
    // Results before the commit's offset are covered: the replay must make each of them. Those
    // after it are a tail the node had not checkpointed (after a crash, possibly of messages
    // that never became durable, and possibly cut short): compared only where the replay makes
    // them.
    let covered_offset = commit.map_or(0, |c| c.results_offset);
    let mut expected: HashMap<ResultKey, (ResultRecord, bool)> = HashMap::new();
    if results_path.exists() {
        let read = checkpoint::read_results(&results_path, covered_offset, |_, record| {
            expected.insert((record.pid, record.nonce, record.tick), (record, true));
        });
        if let Err(error) = read {
            problem(report, format!("shard {index}: results file: {error}"));
        }
        let _ = checkpoint::read_results(&results_path, u64::MAX, |_, record| {
            expected
                .entry((record.pid, record.nonce, record.tick))
                .or_insert((record, false));
        });
    }
    let mut states: HashMap<ProcessId, ProcessState> = HashMap::new();
    match (from, loaded) {
        (From::Checkpoint, Some(loaded)) if loaded.commit.is_some() => {
            // Resume as a start does; the covered results are the node's from then on.
            shard
                .apply_checkpoint(loaded, &results_path)
                .map_err(|reason| format!("shard {index}: checkpoint cannot be resumed from: {reason}"))?;
            // Covered results it did not load (evaluated after their process's record) are made
            // again by the replay and compared like the tail.
            expected.retain(|key, (_, covered)| {
                !*covered
                    || match key.2 {
                        None => !shard.has_result(key.0, key.1),
                        // Older than the latest CRON_RESULTS_MAX: dropped at the start, so
                        // neither kept nor made again.
                        Some(tick) if shard.oldest_tick_kept(key.0).is_some_and(|oldest| tick < oldest) => false,
                        Some(_) => shard.stored_result(key.0, key.1, key.2).is_none(),
                    }
            });
        }
        (From::Checkpoint, _) => {
            problem(report, format!("shard {index}: no committed checkpoint to resume from"));
        }
        (From::Genesis, Some(loaded)) => states = loaded.processes.into_iter().collect(),
        (From::Genesis, None) => {}
    }
    shard.finish_recovery();
    if let Some(pid) = only {
        shard.retain_ready(|p| *p == pid);
        states.retain(|p, _| *p == pid);
        expected.retain(|key, _| key.0 == pid);
    }
    let processes: Vec<ProcessId> = shard
        .process_ids()
        .into_iter()
        .filter(|p| only.is_none_or(|o| o == *p))
        .collect();
    report.processes += processes.len();
    // Ticks after a process's last message were evaluated as far as the node drove them.
    let mut through: HashMap<ProcessId, u64> = HashMap::new();
    for (pid, state) in &states {
        through.insert(*pid, state.through);
    }
    for (pid, _, tick) in expected.keys() {
        if let Some(tick) = tick {
            let at = through.entry(*pid).or_default();
            *at = (*at).max(tick.time);
        }
    }
    for (pid, time) in &through {
        if processes.contains(pid) {
            shard.advance_crons(*pid, Timestamp(*time)).map_err(|e| e.to_string())?;
        }
    }

    // States reached before any evaluation (none: records are written only after one).
    let total = shard.recovery_pending() as u64;
    let at = |done| Progress {
        shard: index,
        shards,
        done,
        total,
        elapsed: Duration::ZERO,
    };
    let mut done = 0u64;
    let mut evaluated = Vec::new();
    let mut last_progress = Instant::now();
    while shard.has_work() {
        evaluated.clear();
        shard
            .pump(Timestamp(0), 256, &mut evaluated)
            .map_err(|e| format!("shard {index}: replay stopped: {e}"))?;
        if evaluated.is_empty() {
            break;
        }
        for e in &evaluated {
            report.evaluations += 1;
            if e.tick.is_none() {
                done += 1;
            }
            let key = (e.process, e.nonce.0, e.tick);
            if let Some((want, _)) = expected.remove(&key) {
                report.results_compared += 1;
                let got = shard.stored_result(key.0, key.1, key.2);
                let same = got
                    .as_ref()
                    .is_some_and(|g| g.text() == want.text && g.is_error == want.is_error);
                if !same {
                    let what = match e.tick {
                        None => format!("message at nonce {}", e.nonce.0),
                        Some(tick) => format!("cron tick {}/{}", tick.time, tick.cron),
                    };
                    problem(
                        report,
                        format!(
                            "process {}: the result of its {what} differs: the node holds {}, the replay gives {}",
                            e.process,
                            want.text,
                            got.map_or("nothing".to_owned(), |g| g.text().to_owned())
                        ),
                    );
                }
            }
            if let Some(state) = states.get(&e.process) {
                if let Some(outcome) = shard.check_checkpoint(state) {
                    report.checkpoints_compared += 1;
                    states.remove(&e.process);
                    if let Err(difference) = outcome {
                        problem(
                            report,
                            format!("process {}: its checkpoint is wrong: {difference}", e.process),
                        );
                    }
                }
            }
        }
        if last_progress.elapsed() >= Duration::from_millis(250) {
            last_progress = Instant::now();
            progress(&at(done));
        }
    }
    progress(&at(done));
    for (pid, state) in states {
        problem(
            report,
            format!(
                "process {pid}: its checkpoint holds {} messages evaluated, which its log never reaches",
                state.nonce
            ),
        );
    }
    // Covered results the replay never made.
    let mut orphans: Vec<_> = expected
        .into_iter()
        .filter(|(_, (_, covered))| *covered)
        .map(|(key, _)| key)
        .collect();
    orphans.sort();
    for (pid, nonce, tick) in orphans {
        problem(
            report,
            format!(
                "process {pid}: the node holds a result for {} that the replay did not make",
                match tick {
                    None => format!("nonce {nonce}"),
                    Some(t) => format!("cron tick {}/{}", t.time, t.cron),
                }
            ),
        );
    }
    Ok(())
}
