//! The scheduler's per-process index, what an SU range read (`GET /{pid}?from=&to=`) costs
//! before any HTTP, on a process with 10,000 messages:
//!
//! - `timeline/seek_by_nonce` and `timeline/seek_by_timestamp`: finding a 100-entry page from
//!   the middle of the timeline by a nonce cursor or by a timestamp cursor (binary search over
//!   the in-memory index; O(log n), no scan from the start);
//! - `timeline/page_100_rebuilt`: the same page with every assignment rebuilt from its log
//!   record (read from the log, parsed, the signed assignment item reassembled), which is what
//!   the HTTP answer is made of.
//!
//! The messages are admitted through the shard (signed assignments, appended to a log in a
//! temporary directory) and stay in the log's pending memory: no committer runs, so the read
//! path measured is the index plus record decoding, without disk I/O.
//! Runs once per benchmark in test mode (`cargo test --benches`) so it never rots.

use std::cell::RefCell;
use std::rc::Rc;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use engine::client::ao_tags as ao;
use engine::compute::{samples, ComputeConfig, Runtime, MODULE_FORMAT_WASM32};
use engine::node::NodeConfig;
use engine::shard::{Shard, ShardLimits};
use scheduler::log::Log;
use scheduler::signer::Signer;
use scheduler::tags::Tag;
use scheduler::{ProcessId, Timestamp};

const MESSAGES: u64 = 10_000;
const PAGE: usize = 100;
/// The first message's timestamp; message `i` is stamped one millisecond after message `i - 1`.
const START_MS: u64 = 1_700_000_000_000;

/// A shard holding one counter process with `MESSAGES` messages.
fn shard(dir: &std::path::Path) -> (Shard, ProcessId) {
    let config = NodeConfig::new(dir, "127.0.0.1:0".parse().expect("address"));
    let log = Rc::new(RefCell::new(Log::open(&dir.join("log"), config.log).expect("log")));
    let runtime = Runtime::new(ComputeConfig {
        instance_count_max: 4,
        ..ComputeConfig::default()
    })
    .expect("runtime");
    let mut shard = Shard::recover(Signer::generate_ed25519(), runtime, log, ShardLimits::default()).expect("shard");
    let client = Signer::generate_ed25519();
    let module = client.sign(
        None,
        None,
        ao("Module", vec![Tag::new("Module-Format", MODULE_FORMAT_WASM32)]),
        samples::wasm("counter").expect("counter sample"),
    );
    let (module_id, _) = shard.admit_module(module.clone(), &module.to_bytes()).expect("module");
    let process = client.sign(
        None,
        None,
        ao(
            "Process",
            vec![
                Tag::new("Module", module_id.to_string()),
                Tag::new("Scheduler", shard.address().to_string()),
            ],
        ),
        Vec::new(),
    );
    let (pid, _) = shard
        .admit_process(process.clone(), &process.to_bytes(), Timestamp(START_MS - 1))
        .expect("process");
    for i in 0..MESSAGES {
        let message = client.sign(
            Some(pid.0),
            Some(*format!("{i:032}").as_bytes().first_chunk().expect("32 bytes")),
            ao("Message", vec![Tag::new("Action", "Increment")]),
            Vec::new(),
        );
        shard
            .admit_message(message.clone(), &message.to_bytes(), Timestamp(START_MS + i))
            .expect("message");
    }
    (shard, pid)
}

fn timeline(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let (shard, pid) = shard(dir.path());
    let middle = MESSAGES / 2;
    let mut group = c.benchmark_group("timeline");
    group.bench_function("seek_by_nonce", |b| {
        b.iter(|| {
            let (page, more) = shard
                .timeline(pid, Some(black_box(middle)), None, None, None, PAGE)
                .expect("page");
            assert!(page.len() == PAGE && more);
            page
        })
    });
    group.bench_function("seek_by_timestamp", |b| {
        b.iter(|| {
            let (page, more) = shard
                .timeline(pid, None, None, Some(black_box(START_MS + middle)), None, PAGE)
                .expect("page");
            assert!(page.len() == PAGE && more);
            page
        })
    });
    group.bench_function("page_100_rebuilt", |b| {
        b.iter(|| {
            let (page, _) = shard
                .timeline(pid, Some(black_box(middle)), None, None, None, PAGE)
                .expect("page");
            page.iter()
                .map(|entry| shard.assignment_at(entry.lsn).expect("assignment"))
                .collect::<Vec<_>>()
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = benches::criterion_config();
    targets = timeline
}
criterion_main!(benches);
