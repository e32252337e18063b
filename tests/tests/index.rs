//! The saved index: a start reads only the log after it and serves the same timelines, results
//! and duplicate checks as a start that reads the whole log; a damaged index, or a log that no
//! longer matches it, costs a full read, never correctness; damage in a segment the index let
//! the start trust stops writes with the file and offset.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use scheduler::tags::Tag;
use scheduler::{MessageId, ProcessId};
use serde_json::Value;
use tests::{counter_value, increment_all, load_sample, metric, spawn, timeline, wait_until, Node};

const BINARY: &str = env!("CARGO_BIN_EXE_hewitt-under-test");

/// One shard with 1 MiB segments, so that a few large messages seal several.
const SMALL_LOG: [&str; 10] = [
    "--set",
    "shards=1",
    "--set",
    "log.segment_bytes=1MiB",
    "--set",
    "log.batch_bytes_max=256KiB",
    "--set",
    "log.pending_bytes_max=512KiB",
    "--set",
    "http.body_bytes_max=200KiB",
];

fn start(data: &Path, extra: &[&str]) -> Node {
    let mut args = vec!["--set", "shards=2"];
    args.extend_from_slice(extra);
    Node::start_with(BINARY, data, &args)
}

/// What a client sees of the processes: every timeline and the results of `messages`.
fn seen(node: &Node, pids: &[ProcessId], messages: &[(ProcessId, MessageId)]) -> (Vec<Vec<Value>>, Vec<Value>) {
    let client = node.client();
    wait_until("the node is ready", || client.get("/ready").is_ok());
    let timelines = pids.iter().map(|pid| timeline(&client, *pid)).collect();
    let results = messages
        .iter()
        .map(|(pid, id)| client.result(*pid, *id).expect("a result"))
        .collect();
    (timelines, results)
}

fn journals(data: &Path) -> Vec<PathBuf> {
    vec![data.join("index/journal"), data.join("shards/1/index/journal")]
}

fn runs(data: &Path) -> Vec<PathBuf> {
    let mut runs = Vec::new();
    for dir in [data.join("index"), data.join("shards/1/index")] {
        for entry in std::fs::read_dir(dir).expect("index dir").flatten() {
            if entry.file_name().to_string_lossy().starts_with("run-") {
                runs.push(entry.path());
            }
        }
    }
    runs
}

#[test]
fn a_start_from_the_saved_index_serves_what_a_full_read_does() {
    let data = tempfile::tempdir().expect("temporary directory");
    let node = start(data.path(), &[]);
    let client = node.client();
    let counter = load_sample(&client, "counter", &[]);
    let pids: Vec<ProcessId> = (0..8).map(|_| spawn(&client, &node, counter)).collect();
    let mut sent = increment_all(&node, &pids, 4);
    wait_until("every increment is evaluated", || {
        pids.iter().all(|pid| counter_value(&client, *pid) == 4)
    });
    let kept = client.message_item(pids[0], &[Tag::new("Action", "Increment")], b"");
    client.post_item(&kept).expect("a message posted once");
    sent.push((pids[0], MessageId(kept.id().0)));
    let before = seen(&node, &pids, &sent);
    // A clean stop saves the index of each shard.
    assert!(node.terminate().success());
    for journal in journals(data.path()) {
        assert!(journal.exists(), "{} written at stop", journal.display());
    }

    let node = start(data.path(), &[]);
    let client = node.client();
    // module + 8 processes + 33 messages, over both shards: all from the index.
    let records = (1 + pids.len() + sent.len()) as f64;
    assert!(
        metric(&node, "hewitt_index_loaded_records") >= records,
        "the start took every record from the index"
    );
    assert_eq!(
        seen(&node, &pids, &sent),
        before,
        "timelines and results from the index"
    );
    // The message ids the index holds still refuse duplicates.
    let duplicate = client.post_item(&kept).expect_err("a duplicate is refused");
    assert!(duplicate.status().is_some_and(|s| s >= 400), "{duplicate}");
    assert_eq!(counter_value(&client, pids[0]), 5);

    // More messages, then a crash: the start takes the saved index and reads the log after it.
    let tail = increment_all(&node, &pids, 2);
    wait_until("the tail is evaluated", || {
        pids.iter().all(|pid| counter_value(&client, *pid) >= 6)
    });
    sent.extend(tail);
    let before = seen(&node, &pids, &sent);
    node.kill();
    let node = start(data.path(), &[]);
    assert!(metric(&node, "hewitt_index_loaded_records") >= records);
    assert_eq!(seen(&node, &pids, &sent), before, "index plus the log after it");
    assert!(node.terminate().success());

    // A damaged run: the index is not used, the log is read whole, nothing differs; the index
    // is written again from scratch and the next start uses it.
    for run in runs(data.path()) {
        let file = std::fs::OpenOptions::new().write(true).open(&run).expect("run");
        file.write_all_at(&[0xff; 8], 40).expect("damage");
    }
    let node = start(data.path(), &[]);
    assert_eq!(
        metric(&node, "hewitt_index_loaded_records"),
        0.0,
        "a damaged index is not used"
    );
    assert_eq!(seen(&node, &pids, &sent), before);
    assert!(node.terminate().success());
    let node = start(data.path(), &[]);
    let full = metric(&node, "hewitt_index_loaded_records");
    assert!(full >= records, "saved again");
    assert_eq!(seen(&node, &pids, &sent), before);
    assert!(node.terminate().success());

    // An index ahead of its log (the log put back as it was before a message): the shard that
    // holds the message reads its log whole, the other still starts from its index.
    let segments: Vec<PathBuf> = [data.path().join("log"), data.path().join("shards/1/log")]
        .iter()
        .flat_map(|dir| std::fs::read_dir(dir).expect("log dir").flatten().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    let originals: Vec<Vec<u8>> = segments.iter().map(|p| std::fs::read(p).expect("segment")).collect();
    let node = start(data.path(), &[]);
    let client = node.client();
    increment_all(&node, &pids[..1], 1);
    wait_until("evaluated", || counter_value(&client, pids[0]) == 8);
    assert!(node.terminate().success());
    for (path, bytes) in segments.iter().zip(&originals) {
        std::fs::write(path, bytes).expect("segment put back");
    }
    let node = start(data.path(), &[]);
    let loaded = metric(&node, "hewitt_index_loaded_records");
    // The shard holding the message read its log whole (the other, if it holds anything, still
    // starts from its index).
    assert!(loaded < full, "one shard read whole: {loaded} of {full}");
    assert_eq!(seen(&node, &pids, &sent), before, "the log as it is now");
    assert!(node.terminate().success());
    tests::assert_log_verifies(BINARY, data.path());
}

#[test]
fn damage_in_a_segment_the_index_vouched_for_stops_writes_with_file_and_offset() {
    let data = tempfile::tempdir().expect("temporary directory");
    let small = SMALL_LOG;
    let node = Node::start_with(BINARY, data.path(), &small);
    let client = node.client();
    let counter = load_sample(&client, "counter", &[]);
    let pid = spawn(&client, &node, counter);
    // About 3 MiB of messages: several sealed segments.
    let payload = vec![b'Q'; 100 << 10];
    for _ in 0..30 {
        client
            .send(pid, &[Tag::new("Action", "Increment")], &payload)
            .expect("a large message");
    }
    wait_until("evaluated", || counter_value(&client, pid) == 30);
    assert!(node.terminate().success());

    // One byte flipped in the middle of the first (sealed) segment, inside a payload.
    let segment = data.path().join("log/00000000000000000000.log");
    let bytes = std::fs::read(&segment).expect("segment");
    let at = bytes
        .windows(64)
        .position(|w| w.iter().all(|&b| b == b'Q'))
        .expect("a payload")
        + 1000;
    let file = std::fs::OpenOptions::new().write(true).open(&segment).expect("segment");
    file.write_all_at(&[b'Q' ^ 0x20], at as u64).expect("flip");

    // The start trusts the segment (the index says where it ends) and serves; the check that
    // follows finds the damage and stops writes, naming the file.
    let node = Node::start_with(BINARY, data.path(), &small);
    let client = node.client();
    wait_until("the damage is found", || {
        client
            .get("/ready")
            .err()
            .is_some_and(|e| e.to_string().contains("log damaged"))
    });
    let refused = client
        .send(pid, &[Tag::new("Action", "Increment")], b"")
        .expect_err("writes stop");
    assert_eq!(refused.status(), Some(503), "{refused}");
    let ready = client.get("/ready").expect_err("not ready").to_string();
    assert!(ready.contains("00000000000000000000.log"), "{ready}");
    node.kill();
}

#[test]
fn sealed_segments_packed_with_zstd_serve_the_same_across_restarts() {
    let data = tempfile::tempdir().expect("temporary directory");
    let args = [&SMALL_LOG[..], &["--set", "log.zstd_level=3"]].concat();
    let node = Node::start_with(BINARY, data.path(), &args);
    let client = node.client();
    let counter = load_sample(&client, "counter", &[]);
    let pid = spawn(&client, &node, counter);
    let payload: Vec<u8> = (0..100 << 10).map(|i| b"abcdefgh"[i % 8]).collect();
    let mut sent = Vec::new();
    for _ in 0..40 {
        let id = client
            .send(pid, &[Tag::new("Action", "Increment")], &payload)
            .expect("a large message");
        sent.push((pid, id));
    }
    wait_until("evaluated", || counter_value(&client, pid) == 40);
    let packed = || {
        std::fs::read_dir(data.path().join("log"))
            .expect("log dir")
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".log.zst"))
            .count()
    };
    wait_until("sealed segments are packed", || packed() >= 3);
    let before = seen(&node, &[pid], &sent);
    assert!(node.terminate().success());
    let packed_size: u64 = std::fs::read_dir(data.path().join("log"))
        .expect("log dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".log.zst"))
        .map(|e| e.metadata().expect("size").len())
        .sum();
    assert!(packed_size < (packed() as u64) << 20, "packed: {packed_size} bytes");

    // From the saved index (packed segments trusted, then checked), and from a full read.
    let node = Node::start_with(BINARY, data.path(), &args);
    assert!(metric(&node, "hewitt_index_loaded_records") > 0.0);
    assert_eq!(seen(&node, &[pid], &sent), before);
    assert!(node.terminate().success());
    std::fs::remove_dir_all(data.path().join("index")).expect("index removed");
    let node = Node::start_with(BINARY, data.path(), &args);
    assert_eq!(metric(&node, "hewitt_index_loaded_records"), 0.0);
    assert_eq!(seen(&node, &[pid], &sent), before);
    assert!(node.terminate().success());
    tests::assert_log_verifies(BINARY, data.path());
}
