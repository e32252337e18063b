//! `hewitt-perf engine`: the engine alone, driven through its API on one glommio executor, with
//! no HTTP and no client-side signing inside the timed loop.
//!
//! Pre-signed counter messages are admitted in batches the way concurrent clients would land
//! them: verify the client's signature, admit (nonce, hash chain, assignment signature, append),
//! evaluate, then wait for the one fdatasync that covers the batch. The report splits the time
//! per message into those steps, so it shows where a message's microseconds go, and measures
//! the same disk's raw append + fdatasync in the same run.

use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use engine::client::fresh_anchor;
use engine::compute::{samples, ComputeConfig, Runtime};
use engine::node::{now, NodeConfig};
use engine::shard::{Shard, ShardLimits};
use scheduler::data_item::DataItem;
use scheduler::log::{Committer, Log, Lsn};
use scheduler::signer::Signer;
use scheduler::tags::Tag;
use scheduler::ProcessId;
use serde_json::{json, Value};

fn ao(kind: &str, extra: Vec<Tag>) -> Vec<Tag> {
    let mut tags = vec![
        Tag::new("Data-Protocol", "ao"),
        Tag::new("Variant", "ao.TN.1"),
        Tag::new("Type", kind),
    ];
    tags.extend(extra);
    tags
}

/// Time spent per step, summed over the run.
#[derive(Default)]
struct Steps {
    verify: Duration,
    admit: Duration,
    evaluate: Duration,
    durable: Duration,
}

/// Runs `messages` counter messages over `processes` processes in batches of `batch`; returns
/// the report as JSON.
pub fn run(data_dir: &Path, processes: usize, messages: usize, batch: usize) -> Result<Value, String> {
    let dir = data_dir.to_owned();
    let handle = glommio::LocalExecutorBuilder::default()
        .name("hewitt-perf-engine")
        .spawn(move || async move { run_on_executor(&dir, processes, messages, batch).await })
        .map_err(|e| e.to_string())?;
    handle.join().map_err(|e| e.to_string())?
}

async fn run_on_executor(dir: &Path, processes: usize, messages: usize, batch: usize) -> Result<Value, String> {
    let config = NodeConfig::new(dir, "127.0.0.1:0".parse().map_err(|e| format!("{e}"))?);
    let log = Rc::new(RefCell::new(
        Log::open(&dir.join("log"), config.log).map_err(|e| e.to_string())?,
    ));
    let committer = Committer::new(Rc::clone(&log));
    glommio::spawn_local(Rc::clone(&committer).run()).detach();
    let runtime = Runtime::new(ComputeConfig::default()).map_err(|e| e.to_string())?;
    let mut shard = Shard::recover(
        Signer::generate_ed25519(),
        runtime,
        Rc::clone(&log),
        ShardLimits::default(),
    )
    .map_err(|e| e.to_string())?;
    let client = Signer::generate_ed25519();
    let wasm = samples::wasm("counter").ok_or("no counter sample")?;
    let module = client.sign(
        None,
        None,
        ao("Module", vec![Tag::new("Module-Format", "wasm32-unknown-unknown")]),
        wasm,
    );
    let (module_id, _) = shard
        .admit_module(module.clone(), &module.to_bytes())
        .map_err(|e| e.to_string())?;
    let mut pids: Vec<ProcessId> = Vec::with_capacity(processes);
    for index in 0..processes.max(1) {
        let tags = ao(
            "Process",
            vec![
                Tag::new("Module", module_id.to_string()),
                Tag::new("Scheduler", shard.address().to_string()),
                Tag::new("Name", format!("counter-{index}")),
            ],
        );
        let item = client.sign(None, Some(fresh_anchor()), tags, Vec::new());
        pids.push(
            shard
                .admit_process(item.clone(), &item.to_bytes(), now())
                .map_err(|e| e.to_string())?
                .0,
        );
    }
    let mut evaluated = Vec::new();
    while shard.has_work() {
        shard.pump(now(), 1024, &mut evaluated).map_err(|e| e.to_string())?;
    }
    committer
        .wait_durable(Lsn(shard.log_end().0 - 1))
        .await
        .map_err(|e| e.to_string())?;

    // Signed ahead: client signing is the client's cost, not the engine's.
    let items: Vec<(Vec<u8>, DataItem)> = (0..messages)
        .map(|index| {
            let target = pids[index % pids.len()];
            let item = client.sign(
                Some(target.0),
                Some(fresh_anchor()),
                ao("Message", vec![Tag::new("Action", "Increment")]),
                Vec::new(),
            );
            (item.to_bytes(), item)
        })
        .collect();

    let mut steps = Steps::default();
    let batches_before = committer.stats().batch_count;
    let started = Instant::now();
    for chunk in items.chunks(batch.max(1)) {
        let mut last = Lsn(0);
        for (bytes, item) in chunk {
            let began = Instant::now();
            let parsed = DataItem::parse(bytes).map_err(|e| e.to_string())?;
            parsed.verify().map_err(|e| e.to_string())?;
            let verified = Instant::now();
            steps.verify += verified - began;
            last = shard
                .admit_message(item.clone(), bytes, now())
                .map_err(|e| e.to_string())?
                .2;
            steps.admit += verified.elapsed();
        }
        let began = Instant::now();
        while shard.has_work() {
            evaluated.clear();
            shard.pump(now(), 1024, &mut evaluated).map_err(|e| e.to_string())?;
        }
        let evaluated_at = Instant::now();
        steps.evaluate += evaluated_at - began;
        committer.wait_durable(last).await.map_err(|e| e.to_string())?;
        steps.durable += evaluated_at.elapsed();
    }
    let elapsed = started.elapsed();
    let batches = committer.stats().batch_count - batches_before;
    committer.shutdown().await.map_err(|e| e.to_string())?;
    let per_message_us = |d: Duration| d.as_secs_f64() * 1e6 / messages.max(1) as f64;
    Ok(json!({
        "messages": messages,
        "processes": pids.len(),
        "batch": batch,
        "seconds": elapsed.as_secs_f64(),
        "messages_per_s": messages as f64 / elapsed.as_secs_f64(),
        "fdatasync_batches": batches,
        "per_message_us": {
            "parse_and_verify_ed25519": per_message_us(steps.verify),
            "admit_sign_assignment_append": per_message_us(steps.admit),
            "evaluate": per_message_us(steps.evaluate),
            "wait_durable": per_message_us(steps.durable),
        },
    }))
}
