//! Restart with a large log (the [log] target: 10 M records, serving within 5 s), with the
//! shard's saved index (`engine::index`, what a node that ran before has) and without it (the
//! whole log read back, as on a data dir whose index is lost).
//!
//! Writing 10 M messages through the engine would sign, verify and evaluate each (an hour here),
//! so this part writes the log directly, the way the node would have: a real module, real
//! signed processes spawned through the shard, then message records appended to the log with
//! dense nonces, increasing timestamps and correct hash-chain links, but with signatures drawn
//! from a seeded generator instead of computed. Nothing that recovery does depends on
//! signatures being valid (it reads ids and links, it does not verify), so the time measured,
//! opening the log and reading it back into the index until the node serves, is the time the
//! same log of real messages would take. Replay is not timed here (the `restart` part measures
//! its rate on real messages); the node serves during it.
//!
//! The indexed start is the node's own sequence (`engine::index_files`): read the index, open the
//! log trusting the sealed segments it vouches for, load it, read the log after it. The check of
//! those trusted segments, which a node runs on its blocking pool while it serves, is timed
//! separately.

use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;
use std::time::Instant;

use engine::compute::{samples, ComputeConfig, Runtime};
use engine::index;
use engine::node::NodeConfig;
use engine::shard::{block_height_at, Shard, ShardLimits};
use scheduler::chain::next_hash_chain;
use scheduler::data_item::{DataItem, SignatureType};
use scheduler::log::{Committer, Log, LogError, Lsn};
use scheduler::record::{AssignmentRecord, KIND_ASSIGNMENT};
use scheduler::signer::Signer;
use scheduler::tags::Tag;
use scheduler::{AssignmentId, HashChain, MessageId, Nonce, ProcessId, Timestamp};
use serde::Serialize;
use sha2::{Digest, Sha256};

#[derive(Clone, Debug, Serialize)]
pub struct BigRestartRun {
    pub processes: usize,
    pub records: u64,
    pub log_bytes: u64,
    /// Writing the log (not part of the restart).
    pub write_s: f64,
    /// `Log::open`: segments checked and mapped, the torn-tail window scanned.
    pub open_ms: f64,
    /// Reading every record back into the shard's index: after it the node serves.
    pub index_ms: f64,
    /// Open + index of the fastest of [`RESTARTS`] restarts of the same log (page cache warm,
    /// as after a process restart; a cold start after a reboot adds the disk's read time).
    pub serving_ms: f64,
    /// Open + index of every restart, in order.
    pub serving_ms_each: Vec<f64>,
    pub index_records_per_s: f64,
    /// Resident memory of the process after the index was built.
    pub rss_bytes: u64,
    /// Saving the index of the whole log at once (as the first save after an upgrade would).
    pub index_save_ms: f64,
    /// Bytes of the saved index (journal and runs).
    pub index_bytes: u64,
    /// With the saved index: reading it and opening the log (sealed segments trusted)...
    pub indexed_open_ms: f64,
    /// ...loading it into the shard and reading the log after it.
    pub indexed_load_ms: f64,
    /// Open + load of the fastest indexed restart, and of each.
    pub indexed_serving_ms: f64,
    pub indexed_serving_ms_each: Vec<f64>,
    pub indexed_rss_bytes: u64,
    /// Checking the trusted sealed segments (off the shard's thread, while serving).
    pub check_sealed_ms: f64,
    /// Packing every sealed segment with zstd (level [`PACK_LEVEL`], one thread): time, the
    /// segments' data bytes, the packed files' bytes...
    pub pack_ms: f64,
    pub sealed_bytes: u64,
    pub packed_bytes: u64,
    /// ...and reading every record of the log (checksums included) plain, then packed.
    pub read_plain_ms: f64,
    pub read_packed_ms: f64,
}

/// The zstd level the packing is measured at (the node's `log.zstd_level`).
pub const PACK_LEVEL: i32 = 3;

/// Reads every record of `log`, letting go of unpacked blocks between batches as a node does.
fn read_all(log: &mut Log) -> Result<u64, String> {
    let (mut at, mut records) = (Lsn(0), 0u64);
    loop {
        let mut batch = log.records_from(at);
        let mut read = 0;
        for record in batch.by_ref().take(1 << 16) {
            record.map_err(|e| e.to_string())?;
            read += 1;
        }
        at = batch.next_lsn();
        records += read;
        if read == 0 {
            return Ok(records);
        }
        log.release_unpacked();
    }
}

/// Restarts timed on the same log.
pub const RESTARTS: usize = 3;

/// A fast, seeded stream of bytes standing in for signatures (splitmix64).
struct Noise(u64);

impl Noise {
    fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
        }
    }
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|text| text.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// Writes `records` message records over `processes` counter processes into `dir`, then times
/// a restart up to serving. The data dir is removed afterwards.
pub fn run(dir: &Path, processes: usize, records: u64) -> Result<BigRestartRun, String> {
    let data_dir = dir.to_owned();
    let handle = glommio::LocalExecutorBuilder::default()
        .name("hewitt-perf-big-restart")
        .spawn(move || async move {
            let began = Instant::now();
            write(&data_dir, processes, records).await?;
            let write_s = began.elapsed().as_secs_f64();
            let config = NodeConfig::new(&data_dir, "127.0.0.1:0".parse().map_err(|e| format!("{e}"))?);
            let mut best: Option<BigRestartRun> = None;
            let mut each = Vec::new();
            for _ in 0..RESTARTS {
                let began = Instant::now();
                let log = Log::open(&data_dir.join("log"), config.log).map_err(|e| e.to_string())?;
                let open_ms = began.elapsed().as_secs_f64() * 1e3;
                let log_bytes = log.end_lsn().0;
                let runtime = Runtime::new(ComputeConfig {
                    instance_count_max: processes as u32 + 8,
                    ..ComputeConfig::default()
                })
                .map_err(|e| e.to_string())?;
                let began = Instant::now();
                let shard = Shard::recover(
                    Signer::generate_ed25519(),
                    runtime,
                    Rc::new(RefCell::new(log)),
                    ShardLimits::default(),
                )
                .map_err(|e| e.to_string())?;
                let index_ms = began.elapsed().as_secs_f64() * 1e3;
                let read_back = shard.recovery_pending() as u64;
                let rss = rss_bytes();
                drop(shard);
                each.push(open_ms + index_ms);
                if best.as_ref().is_none_or(|b| open_ms + index_ms < b.serving_ms) {
                    best = Some(BigRestartRun {
                        processes,
                        records: read_back,
                        log_bytes,
                        write_s,
                        open_ms,
                        index_ms,
                        serving_ms: open_ms + index_ms,
                        serving_ms_each: Vec::new(),
                        index_records_per_s: read_back as f64 / (index_ms / 1e3),
                        rss_bytes: rss,
                        index_save_ms: 0.0,
                        index_bytes: 0,
                        indexed_open_ms: 0.0,
                        indexed_load_ms: 0.0,
                        indexed_serving_ms: 0.0,
                        indexed_serving_ms_each: Vec::new(),
                        indexed_rss_bytes: 0,
                        check_sealed_ms: 0.0,
                        pack_ms: 0.0,
                        sealed_bytes: 0,
                        packed_bytes: 0,
                        read_plain_ms: 0.0,
                        read_packed_ms: 0.0,
                    });
                }
            }
            let mut best = best.expect("at least one restart");
            best.serving_ms_each = each;
            indexed(&data_dir, processes, &config, &mut best)?;
            Ok(best)
        })
        .map_err(|e| e.to_string())?;
    let run = handle.join().map_err(|e| e.to_string())?;
    std::fs::remove_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    run
}

fn new_shard(processes: usize, log: Log, journal: bool) -> Result<Shard, String> {
    let runtime = Runtime::new(ComputeConfig {
        instance_count_max: processes as u32 + 8,
        ..ComputeConfig::default()
    })
    .map_err(|e| e.to_string())?;
    let mut shard = Shard::new(
        Signer::generate_ed25519(),
        runtime,
        Rc::new(RefCell::new(log)),
        ShardLimits::default(),
    );
    if journal {
        shard.keep_index_journal();
    }
    Ok(shard)
}

fn read_log_from(shard: &mut Shard, from: Lsn) -> Result<(), String> {
    let mut next = Some(from);
    while let Some(at) = next {
        next = shard.recover_from(at, usize::MAX).map_err(|e| e.to_string())?;
    }
    shard.finish_recovery();
    Ok(())
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Saves the index of the whole log, then times [`RESTARTS`] starts from it.
fn indexed(data_dir: &Path, processes: usize, config: &NodeConfig, run: &mut BigRestartRun) -> Result<(), String> {
    let log_dir = data_dir.join("log");
    let index_dir = data_dir.join(index::INDEX_DIR);
    {
        let log = Log::open(&log_dir, config.log).map_err(|e| e.to_string())?;
        let mut shard = new_shard(processes, log, true)?;
        read_log_from(&mut shard, Lsn(0))?;
        let began = Instant::now();
        let mut save = shard.index_save().ok_or("nothing to save")?;
        let mut files = index::Files::open(&index_dir, None).map_err(|e| e.to_string())?;
        files.save(&mut save, shard.index_runs()).map_err(|e| e.to_string())?;
        run.index_save_ms = began.elapsed().as_secs_f64() * 1e3;
        run.index_bytes = dir_bytes(&index_dir);
    }
    let mut trusted = Vec::new();
    for _ in 0..RESTARTS {
        let began = Instant::now();
        let mut loaded = engine::index_files::read(data_dir);
        if loaded.is_none() {
            return Err("the saved index did not read back".into());
        }
        let log = engine::index_files::open_log(&log_dir, config.log, &mut loaded).map_err(|e| e.to_string())?;
        let sealed = log.trusted_ends();
        let loaded = loaded.ok_or("the saved index does not match the log")?;
        let open_ms = began.elapsed().as_secs_f64() * 1e3;
        let began = Instant::now();
        let mut shard = new_shard(processes, log, true)?;
        let from = shard.load_index(&loaded).map_err(|e| e.to_string())?;
        read_log_from(&mut shard, from)?;
        let load_ms = began.elapsed().as_secs_f64() * 1e3;
        if shard.recovery_pending() as u64 != run.records {
            return Err(format!(
                "the indexed start holds {} messages, the full read {}",
                shard.recovery_pending(),
                run.records
            ));
        }
        let rss = rss_bytes();
        drop((shard, loaded));
        run.indexed_serving_ms_each.push(open_ms + load_ms);
        if run.indexed_serving_ms == 0.0 || open_ms + load_ms < run.indexed_serving_ms {
            run.indexed_open_ms = open_ms;
            run.indexed_load_ms = load_ms;
            run.indexed_serving_ms = open_ms + load_ms;
            run.indexed_rss_bytes = rss;
        }
        trusted = sealed;
    }
    let began = Instant::now();
    scheduler::log::check_sealed(&log_dir, config.log.segment_bytes, &trusted).map_err(|e| e.to_string())?;
    run.check_sealed_ms = began.elapsed().as_secs_f64() * 1e3;

    let mut log = Log::open(&log_dir, config.log).map_err(|e| e.to_string())?;
    run.sealed_bytes = log.sealed_ends().iter().sum();
    let began = Instant::now();
    let plain_records = read_all(&mut log)?;
    run.read_plain_ms = began.elapsed().as_secs_f64() * 1e3;
    log.set_packing(Some(PACK_LEVEL));
    let began = Instant::now();
    while let Some(job) = log.pack_job() {
        let outcome = job.run();
        if let Err(error) = &outcome {
            return Err(format!("packing: {error}"));
        }
        log.packed(&job, outcome);
    }
    run.pack_ms = began.elapsed().as_secs_f64() * 1e3;
    run.packed_bytes = std::fs::read_dir(&log_dir)
        .map_err(|e| e.to_string())?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".zst"))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    let began = Instant::now();
    let packed_records = read_all(&mut log)?;
    run.read_packed_ms = began.elapsed().as_secs_f64() * 1e3;
    if packed_records != plain_records {
        return Err(format!("{packed_records} records read packed, {plain_records} plain"));
    }
    Ok(())
}

async fn write(dir: &Path, processes: usize, records: u64) -> Result<(), String> {
    let config = NodeConfig::new(dir, "127.0.0.1:0".parse().map_err(|e| format!("{e}"))?);
    let log = Rc::new(RefCell::new(
        Log::open(&dir.join("log"), config.log).map_err(|e| e.to_string())?,
    ));
    let committer = Committer::new(Rc::clone(&log));
    glommio::spawn_local(Rc::clone(&committer).run()).detach();
    let node = Signer::generate_ed25519();
    let client = Signer::generate_ed25519();
    let runtime = Runtime::new(ComputeConfig {
        instance_count_max: processes as u32 + 8,
        ..ComputeConfig::default()
    })
    .map_err(|e| e.to_string())?;
    let mut shard = Shard::recover(
        Signer::from_jwk(&node.to_jwk()).map_err(|e| e.to_string())?,
        runtime,
        Rc::clone(&log),
        ShardLimits::default(),
    )
    .map_err(|e| e.to_string())?;
    let ao = |kind: &str, extra: Vec<Tag>| {
        let mut tags = vec![Tag::new("Data-Protocol", "ao"), Tag::new("Type", kind)];
        tags.extend(extra);
        tags
    };
    let module_tags = ao("Module", vec![Tag::new("Module-Format", "wasm32-unknown-unknown")]);
    let module = client.sign(
        None,
        None,
        module_tags,
        samples::wasm("counter").ok_or("no counter sample")?,
    );
    let (module_id, _) = shard
        .admit_module(module.clone(), &module.to_bytes())
        .map_err(|e| e.to_string())?;
    let base = engine::node::now().0;
    // (pid, next nonce, last assignment id, last link)
    let mut chains: Vec<(ProcessId, u64, AssignmentId, HashChain)> = Vec::with_capacity(processes);
    for n in 0..processes {
        let tags = ao(
            "Process",
            vec![
                Tag::new("Module", module_id.to_string()),
                Tag::new("Scheduler", node.address().to_string()),
                Tag::new("Name", format!("p{n}")),
            ],
        );
        let item = client.sign(None, None, tags, Vec::new());
        let (pid, lsn) = shard
            .admit_process(item.clone(), &item.to_bytes(), Timestamp(base))
            .map_err(|e| e.to_string())?;
        let (assignment, _) = shard.assignment_at(lsn).map_err(|e| e.to_string())?;
        let link: HashChain = assignment
            .tag("Hash-Chain")
            .ok_or("no Hash-Chain")?
            .parse()
            .map_err(|_| "link")?;
        chains.push((pid, 1, AssignmentId::from(assignment.id()), link));
    }
    drop(shard);
    let owner = client.owner();
    let mut noise = Noise(0x5EED);
    let mut signature = [0u8; 64];
    for i in 0..records {
        let slot = (i % processes as u64) as usize;
        let (pid, nonce, last_id, last_link) = chains[slot];
        noise.fill(&mut signature);
        let mut anchor = [0u8; 32];
        anchor[..8].copy_from_slice(&i.to_le_bytes());
        let item = DataItem {
            signature_type: SignatureType::Ed25519,
            signature: signature.to_vec(),
            owner: owner.clone(),
            target: Some(pid.0),
            anchor: Some(anchor),
            tags: ao("Message", vec![Tag::new("Action", "Increment")]),
            data: Vec::new(),
        };
        let item_bytes = item.to_bytes();
        let timestamp = Timestamp(base + 1 + i / 1000);
        let link = next_hash_chain(&last_id, &last_link);
        noise.fill(&mut signature);
        let record = AssignmentRecord {
            process: pid,
            nonce: Nonce(nonce),
            timestamp,
            block_height: block_height_at(timestamp),
            hash_chain: link,
            message: MessageId(item.id().0),
            assigned: None,
            limits: None,
            signature: &signature,
            item: &item_bytes,
        };
        let payload = record.encode();
        loop {
            let appended = log.borrow_mut().append(KIND_ASSIGNMENT, &payload);
            match appended {
                Ok(_) => break,
                Err(LogError::Backpressure { .. }) => {
                    let last = Lsn(log.borrow().end_lsn().0 - 1);
                    committer.wait_durable(last).await.map_err(|e| e.to_string())?;
                }
                Err(error) => return Err(error.to_string()),
            }
        }
        chains[slot] = (pid, nonce + 1, AssignmentId(Sha256::digest(signature).into()), link);
        if i % (1 << 16) == 0 {
            futures_lite::future::yield_now().await;
        }
    }
    committer.shutdown().await.map_err(|e| e.to_string())?;
    Ok(())
}
