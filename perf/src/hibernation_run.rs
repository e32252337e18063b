//! Hibernation through the engine's API on one shard: a spawn storm of `processes` counter
//! processes with only a few allowed live (the rest hibernate: memory compressed with zstd,
//! pool slot returned), then messages to processes picked at random among the sleeping ones.
//!
//! Figures: spawns per second (admission, evaluation of nonce 0, hibernation; items signed
//! ahead in chunks, outside the timing, as clients would sign them), anonymous resident memory
//! per process once they sleep (`RssAnon`, so the log's mapped pages are not counted), and the
//! time to evaluate a message for a sleeping process (wake + evaluate) beside the same message
//! for a live one.

use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use engine::compute::{ComputeConfig, Runtime};
use engine::node::{now, NodeConfig};
use engine::shard::{Shard, ShardLimits};
use scheduler::log::{Committer, Log, Lsn};
use scheduler::signer::Signer;
use scheduler::tags::Tag;
use serde::Serialize;

use crate::report::{histogram, record, Latency};
use crate::workload::{prepare, Scenario, Workload};

/// Live instances the shard keeps: every other process sleeps.
const LIVE_MAX: usize = 64;

/// Spawns signed ahead and admitted per chunk.
const CHUNK: usize = 5_000;

#[derive(Clone, Debug, Serialize)]
pub struct HibernationRun {
    pub processes: usize,
    pub live_max: usize,
    pub spawns_per_s: f64,
    /// Anonymous resident memory before the storm and after it, and the difference per process.
    pub rss_anon_before_bytes: u64,
    pub rss_anon_after_bytes: u64,
    pub bytes_per_process: f64,
    pub hibernated: usize,
    /// A message to a sleeping process (wake + evaluate), and to a live one (evaluate).
    pub wake: Latency,
    pub live: Latency,
}

pub fn run(data_dir: &Path, processes: usize, wakes: usize) -> Result<HibernationRun, String> {
    let dir = data_dir.to_owned();
    let handle = glommio::LocalExecutorBuilder::default()
        .name("hewitt-perf-hibernation")
        .spawn(move || async move { run_on_executor(&dir, processes, wakes).await })
        .map_err(|e| e.to_string())?;
    let run = handle.join().map_err(|e| e.to_string())?;
    std::fs::remove_dir_all(data_dir).map_err(|e| format!("{}: {e}", data_dir.display()))?;
    run
}

async fn run_on_executor(dir: &Path, processes: usize, wakes: usize) -> Result<HibernationRun, String> {
    let config = NodeConfig::new(dir, "127.0.0.1:0".parse().map_err(|e| format!("{e}"))?);
    let log = Rc::new(RefCell::new(
        Log::open(&dir.join("log"), config.log).map_err(|e| e.to_string())?,
    ));
    let committer = Committer::new(Rc::clone(&log));
    glommio::spawn_local(Rc::clone(&committer).run()).detach();
    let runtime = Runtime::new(ComputeConfig {
        instance_count_max: LIVE_MAX as u32 + 16,
        ..ComputeConfig::default()
    })
    .map_err(|e| e.to_string())?;
    let limits = ShardLimits {
        live_instances_max: LIVE_MAX,
        ..ShardLimits::default()
    };
    let mut shard =
        Shard::recover(Signer::generate_ed25519(), runtime, Rc::clone(&log), limits).map_err(|e| e.to_string())?;
    let address = shard.address();
    let workload = prepare(Scenario::Spawn, 1, address, &mut |item| {
        let bytes = item.to_bytes();
        shard.admit_module(item, &bytes).map(drop).map_err(|e| e.to_string())
    })?;
    let durable = |shard: &Shard| Lsn(shard.log_end().0 - 1);
    committer
        .wait_durable(durable(&shard))
        .await
        .map_err(|e| e.to_string())?;
    let rss_anon_before_bytes = crate::http_run::status_bytes("RssAnon");

    let mut pids = Vec::with_capacity(processes);
    let mut spawning = Duration::ZERO;
    let mut ticket = 0u64;
    while pids.len() < processes {
        let chunk: Vec<_> = (0..CHUNK.min(processes - pids.len()))
            .map(|_| {
                ticket += 1;
                workload.item(ticket)
            })
            .collect();
        let began = Instant::now();
        for item in chunk {
            let bytes = item.to_bytes();
            item.verify().map_err(|e| e.to_string())?;
            let (pid, _) = shard.admit_process(item, &bytes, now()).map_err(|e| e.to_string())?;
            pids.push(pid);
        }
        let mut evaluated = Vec::new();
        while shard.has_work() {
            evaluated.clear();
            shard.pump(now(), 1024, &mut evaluated).map_err(|e| e.to_string())?;
        }
        committer
            .wait_durable(durable(&shard))
            .await
            .map_err(|e| e.to_string())?;
        spawning += began.elapsed();
    }
    let rss_anon_after_bytes = crate::http_run::status_bytes("RssAnon");
    let hibernated = shard.processes_dormant();

    // Messages to sleeping processes picked at random, and to one process kept live.
    let Workload::Spawn { signer, .. } = &workload else {
        return Err("the spawn workload".into());
    };
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let hot = pids[pids.len() - 1];
    let (mut wake, mut live) = (histogram(), histogram());
    for n in 0..wakes {
        for (target, into) in [(pids[next() as usize % (pids.len() - 1)], &mut wake), (hot, &mut live)] {
            let item = signer.sign(
                Some(target.0),
                Some(engine::client::fresh_anchor()),
                engine::client::ao_tags("Message", [Tag::new("Action", "Increment")]),
                Vec::new(),
            );
            let bytes = item.to_bytes();
            shard.admit_message(item, &bytes, now()).map_err(|e| e.to_string())?;
            let mut evaluated = Vec::new();
            shard.pump(now(), 1, &mut evaluated).map_err(|e| e.to_string())?;
            let done = evaluated.iter().find(|e| e.process == target).ok_or("not evaluated")?;
            record(into, done.duration);
        }
        if n % 256 == 255 {
            committer
                .wait_durable(durable(&shard))
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    committer
        .wait_durable(durable(&shard))
        .await
        .map_err(|e| e.to_string())?;
    Ok(HibernationRun {
        processes,
        live_max: LIVE_MAX,
        spawns_per_s: processes as f64 / spawning.as_secs_f64(),
        rss_anon_before_bytes,
        rss_anon_after_bytes,
        bytes_per_process: rss_anon_after_bytes.saturating_sub(rss_anon_before_bytes) as f64 / processes as f64,
        hibernated,
        wake: Latency::of(&wake),
        live: Latency::of(&live),
    })
}
