//! Repeated crash cycles: a node under sustained load is SIGKILLed at varying moments, restarted
//! on the same data dir, and checked each time: every message ever acknowledged is in its
//! process's timeline exactly once and in each sender's order, every hash chain verifies, and the
//! recovered state equals the replay of the log. The node writes its log through the page cache
//! and with O_DIRECT (`log.direct_io`) in turn.
//!
//! CI runs `HEWITT_CRASH_CYCLES` cycles (default 5); the long run asked of the log is
//! `HEWITT_CRASH_CYCLES=50 cargo test -p tests --test crash_cycles`. Kill moments come from a
//! seeded generator; a failure prints the seed (`HEWITT_CRASH_SEED` replays it).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use engine::client::Client;
use scheduler::signer::Signer;
use scheduler::tags::Tag;
use scheduler::{MessageId, ProcessId};
use tests::{check_timeline, load_sample, metric, spawn, timeline, Node};

const BINARY: &str = env!("CARGO_BIN_EXE_hewitt-under-test");
const SENDERS: usize = 4;
/// Checkpoints often, so that restarts resume from them (and from their pending deliveries);
/// small segments, packed with zstd as they are sealed and created ahead of need, and an index
/// saved every few records, so that kills land in rollovers, packings and index saves, and
/// restarts start from a saved index over trusted (packed) segments; and little room for
/// results in memory, so that most are read back from the results file.
const SETTINGS: [&str; 16] = [
    "--set",
    "checkpoint.every_messages=50",
    "--set",
    "log.segment_bytes=64KiB",
    "--set",
    "log.batch_bytes_max=32KiB",
    "--set",
    "http.body_bytes_max=16KiB",
    "--set",
    "log.pending_bytes_max=1MiB",
    "--set",
    "log.zstd_level=1",
    "--set",
    "index.every_records=20",
    "--set",
    "limits.results_memory_bytes_max=64KiB",
];

/// [`SETTINGS`], with batches written with O_DIRECT or through the page cache: the node
/// alternates between the two from one restart to the next, so each way of writing takes over a
/// segment the other left mid-block, torn or not.
fn settings(direct_io: bool) -> Vec<&'static str> {
    let mut settings = SETTINGS.to_vec();
    settings.extend([
        "--set",
        if direct_io {
            "log.direct_io=true"
        } else {
            "log.direct_io=false"
        },
    ]);
    settings
}

/// What one sender had acknowledged, in order.
type Acknowledged = Vec<(ProcessId, MessageId)>;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// xorshift64*: enough to vary kill moments reproducibly.
fn next(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

#[test]
fn acknowledged_messages_survive_repeated_sigkills() {
    let cycles = env_u64("HEWITT_CRASH_CYCLES", 5);
    let seed = env_u64("HEWITT_CRASH_SEED", 0x9e37_79b9_7f4a_7c15);
    println!("crash cycles: {cycles}, seed {seed:#x} (HEWITT_CRASH_SEED replays it)");
    let mut rng = seed.max(1);
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_with(BINARY, dir.path(), &settings(false));
    let setup = node.client();
    let module = load_sample(&setup, "counter", &[]);
    let pids: Vec<ProcessId> = (0..2).map(|_| spawn(&setup, &node, module)).collect();
    // Per sender: every message it had acknowledged, in order, across all cycles.
    let acked: Arc<Mutex<Vec<Acknowledged>>> = Arc::new(Mutex::new(vec![Vec::new(); SENDERS]));
    let mut node = Some(node);
    for cycle in 0..cycles {
        let running = node
            .take()
            .unwrap_or_else(|| Node::start_with(BINARY, dir.path(), &settings(cycle % 2 == 1)));
        let stop = Arc::new(AtomicBool::new(false));
        let senders: Vec<_> = (0..SENDERS)
            .map(|index| {
                let (acked, stop, url) = (Arc::clone(&acked), Arc::clone(&stop), running.url.clone());
                let pid = pids[index % pids.len()];
                std::thread::spawn(move || {
                    let client = Client::new(&url, Signer::generate_ed25519());
                    while !stop.load(Ordering::Relaxed) {
                        match client.send(pid, &[Tag::new("Action", "Increment")], b"") {
                            Ok(id) => acked.lock().unwrap()[index].push((pid, id)),
                            Err(_) => return,
                        }
                    }
                })
            })
            .collect();
        // The kill moment: load runs this long before the SIGKILL (not a synchronisation).
        let load_ms = 30 + next(&mut rng) % 300;
        std::thread::sleep(Duration::from_millis(load_ms));
        running.kill();
        stop.store(true, Ordering::Relaxed);
        for sender in senders {
            sender.join().unwrap();
        }

        let restarted = Node::start_with(BINARY, dir.path(), &settings(cycle % 2 == 0));
        let client = restarted.client();
        let acked = acked.lock().unwrap().clone();
        for pid in &pids {
            let edges = timeline(&client, *pid);
            check_timeline(&edges, *pid, restarted.address);
            let position: HashMap<String, usize> = edges
                .iter()
                .enumerate()
                .map(|(at, e)| (e["node"]["message"]["id"].as_str().unwrap().to_owned(), at))
                .collect();
            assert_eq!(
                position.len(),
                edges.len(),
                "cycle {cycle}, seed {seed:#x}: a message appears twice"
            );
            for (sender, messages) in acked.iter().enumerate() {
                let mut last = 0;
                for (_, id) in messages.iter().filter(|(p, _)| p == pid) {
                    let at = *position
                        .get(&id.to_string())
                        .unwrap_or_else(|| panic!("cycle {cycle}, seed {seed:#x}: acknowledged {id} lost"));
                    assert!(at > last, "cycle {cycle}, seed {seed:#x}: sender {sender} reordered");
                    last = at;
                }
            }
            let count = client.dry_run(*pid, &[Tag::new("Action", "Get")], "").unwrap();
            assert_eq!(
                count["Output"],
                (edges.len() - 1).to_string(),
                "cycle {cycle}, seed {seed:#x}: state equals the replay of the log"
            );
            // Every result is there and is its own message's (an increment answers the count,
            // its nonce), whether in memory or read back from the results file.
            let mut kept = Vec::new();
            tests::wait_until("every result", || {
                kept = tests::results_in_pages(&client, *pid, 100);
                kept.len() == edges.len()
            });
            for (at, (cursor, output)) in kept.iter().enumerate().skip(1) {
                assert_eq!(
                    cursor,
                    &at.to_string(),
                    "cycle {cycle}, seed {seed:#x}: results in order"
                );
                assert_eq!(
                    output,
                    &at.to_string(),
                    "cycle {cycle}, seed {seed:#x}: result {at} is its own"
                );
            }
        }
        let total: usize = acked.iter().map(Vec::len).sum();
        let from_index = metric(&restarted, "hewitt_index_loaded_records");
        let in_memory = metric(&restarted, "hewitt_results_memory_bytes");
        println!(
            "cycle {cycle}: killed after {load_ms} ms; {total} acknowledged so far, all present; \
             {from_index} records from the saved index; {in_memory} bytes of results in memory"
        );
        node = Some(restarted);
    }
    // What the kills landed in: rolled-over segments, some packed, and a saved index (in the
    // shards the processes were placed on; with several shards, one may hold neither).
    let shard_dirs: Vec<std::path::PathBuf> = std::iter::once(dir.path().to_owned())
        .chain(
            std::fs::read_dir(dir.path().join("shards"))
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path()),
        )
        .collect();
    let files: Vec<String> = shard_dirs
        .iter()
        .flat_map(|shard| std::fs::read_dir(shard.join("log")).unwrap().flatten())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        files
            .iter()
            .filter(|f| f.ends_with(".log") || f.ends_with(".zst"))
            .count()
            >= 3,
        "{files:?}"
    );
    assert!(
        files.iter().any(|f| f.ends_with(".log.zst")),
        "a sealed segment was packed: {files:?}"
    );
    assert!(shard_dirs.iter().any(|shard| shard.join("index/journal").exists()));
    drop(node);
    tests::assert_log_verifies(BINARY, dir.path());
}
