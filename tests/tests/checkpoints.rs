//! Checkpoints: a restart resumes every process from its latest checkpoint and replays only the
//! log after it, with the same memory and the same results as a replay from genesis; a clean
//! stop leaves nothing to replay; a damaged checkpoint costs replay, never correctness.

use std::path::Path;
use std::process::Command;

use scheduler::{MessageId, ProcessId};
use sha2::{Digest, Sha256};
use tests::{counter_value, increment_all, load_sample, metric, spawn, wait_until, Node};

const BINARY: &str = env!("CARGO_BIN_EXE_hewitt-under-test");

fn start(data: &Path, extra: &[&str]) -> Node {
    let mut args = vec!["--set", "shards=2", "--set", "checkpoint.every_messages=5"];
    args.extend_from_slice(extra);
    Node::start_with(BINARY, data, &args)
}

struct Seen {
    counts: Vec<u64>,
    hashes: Vec<Vec<u8>>,
    results: Vec<serde_json::Value>,
}

fn look(node: &Node, pids: &[ProcessId], early: &[(ProcessId, MessageId)]) -> Seen {
    let client = node.client();
    wait_until("the node is ready", || client.get("/ready").is_ok());
    Seen {
        counts: pids.iter().map(|pid| counter_value(&client, *pid)).collect(),
        hashes: pids
            .iter()
            .map(|pid| Sha256::digest(client.get_bytes(&format!("/state/{pid}")).expect("state")).to_vec())
            .collect(),
        results: early
            .iter()
            .map(|(pid, message)| client.result(*pid, *message).expect("an early result"))
            .collect(),
    }
}

#[test]
fn a_restart_resumes_from_checkpoints_with_the_memory_and_results_of_a_full_replay() {
    let data = tempfile::tempdir().expect("temporary directory");
    let node = start(data.path(), &[]);
    let client = node.client();
    let counter = load_sample(&client, "counter", &[]);
    let pids: Vec<ProcessId> = (0..12).map(|_| spawn(&client, &node, counter)).collect();
    let early = increment_all(&node, &pids, 4);
    wait_until("every increment is evaluated", || {
        pids.iter().all(|pid| counter_value(&client, *pid) == 4)
    });
    wait_until("a checkpoint is committed on each shard", || {
        metric(&node, "hewitt_checkpoints_total") >= 2.0
    });
    // A tail after the checkpoint, then a crash.
    increment_all(&node, &pids, 1);
    wait_until("the tail is evaluated", || {
        pids.iter().all(|pid| counter_value(&client, *pid) == 5)
    });
    let before = look(&node, &pids, &early[..6]);
    node.kill();

    let node = start(data.path(), &[]);
    let resumed = look(&node, &pids, &early[..6]);
    assert_eq!(resumed.counts, vec![5; pids.len()]);
    assert_eq!(resumed.hashes, before.hashes, "memory after resuming");
    assert_eq!(
        resumed.results, before.results,
        "results the checkpoint covers are kept"
    );
    let spared = metric(&node, "hewitt_resumed_messages");
    assert!(
        spared >= 24.0,
        "the checkpoint spared the replay of the early messages ({spared})"
    );
    let replayed = metric(&node, "hewitt_messages_evaluated_total");
    let total = (pids.len() * 6) as f64; // spawn + 5 increments each
    assert!(
        replayed + spared == total,
        "each message evaluated once: {replayed} replayed + {spared} resumed = {total}"
    );

    // A clean stop writes a last checkpoint: nothing is evaluated again after it.
    assert!(node.terminate().success());
    let node = start(data.path(), &[]);
    let after_stop = look(&node, &pids, &early[..6]);
    assert_eq!(after_stop.hashes, before.hashes);
    assert_eq!(
        metric(&node, "hewitt_messages_evaluated_total"),
        0.0,
        "nothing replayed"
    );
    assert_eq!(metric(&node, "hewitt_resumed_messages"), total);
    node.kill();

    // Asked to, the node replays from genesis and comes to the same state.
    let node = start(data.path(), &["--from-genesis"]);
    let genesis = look(&node, &pids, &early[..6]);
    assert_eq!(genesis.hashes, before.hashes, "memory after a replay from genesis");
    assert_eq!(genesis.results, before.results);
    assert_eq!(metric(&node, "hewitt_messages_evaluated_total"), total);
    assert_eq!(metric(&node, "hewitt_resumed_messages"), 0.0);
    assert!(node.terminate().success());
    tests::assert_log_verifies(BINARY, data.path());
}

#[test]
fn a_damaged_checkpoint_costs_replay_not_correctness() {
    let data = tempfile::tempdir().expect("temporary directory");
    let node = start(data.path(), &[]);
    let client = node.client();
    let counter = load_sample(&client, "counter", &[]);
    let pids: Vec<ProcessId> = (0..8).map(|_| spawn(&client, &node, counter)).collect();
    let early = increment_all(&node, &pids, 3);
    wait_until("every increment is evaluated", || {
        pids.iter().all(|pid| counter_value(&client, *pid) == 3)
    });
    let before = look(&node, &pids, &early[..4]);
    assert!(node.terminate().success());

    // Flip one bit in the middle of each shard's checkpoints and results files (a shard that
    // was placed no process holds none: placement is by id, so that happens in 1 run of 128).
    let mut flipped = 0;
    for dir in [data.path().to_owned(), data.path().join("shards/1")] {
        for name in ["checkpoints", "results"] {
            let path = dir.join(name);
            let mut bytes = std::fs::read(&path).expect("the file exists after a clean stop");
            if bytes.len() <= 64 {
                continue;
            }
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0x10;
            std::fs::write(&path, bytes).expect("write back");
            flipped += 1;
        }
    }
    assert!(flipped >= 2, "a shard's checkpoints and results hold records");
    let node = start(data.path(), &[]);
    let after = look(&node, &pids, &early[..4]);
    assert_eq!(after.counts, vec![3; pids.len()]);
    assert_eq!(after.hashes, before.hashes, "memory after a damaged checkpoint");
    assert_eq!(after.results, before.results);
    assert!(node.terminate().success());

    // The checkpoints written since are whole again.
    let node = start(data.path(), &[]);
    assert_eq!(look(&node, &pids, &early[..4]).hashes, before.hashes);
    assert_eq!(metric(&node, "hewitt_messages_evaluated_total"), 0.0, "resumed whole");
}

fn verify(data: &Path, extra: &[&str]) -> (bool, String) {
    let out = Command::new(BINARY)
        .args(["verify", "--data-dir"])
        .arg(data)
        .args(extra)
        .env("HEWITT_LOG", "warn")
        .output()
        .expect("run hewitt verify");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn verify_replays_from_genesis_and_catches_a_forged_or_damaged_checkpoint() {
    let data = tempfile::tempdir().expect("temporary directory");
    let node = start(data.path(), &["--set", "shards=1"]);
    let client = node.client();
    let counter = load_sample(&client, "counter", &[]);
    let pids: Vec<ProcessId> = (0..4).map(|_| spawn(&client, &node, counter)).collect();
    increment_all(&node, &pids, 5);
    wait_until("every increment is evaluated", || {
        pids.iter().all(|pid| counter_value(&client, *pid) == 5)
    });
    let (ok, text) = verify(data.path(), &[]);
    assert!(!ok && text.contains("verify needs the node stopped"), "{text}");
    assert!(node.terminate().success());

    let (ok, text) = verify(data.path(), &[]);
    assert!(ok, "{text}");
    assert!(
        text.contains("verified: 1 shards, 4 processes, 24 evaluations"),
        "{text}"
    );
    assert!(text.contains("24 results and 4 checkpoint states compared"), "{text}");
    let (ok, text) = verify(data.path(), &["--process", &pids[2].to_string()]);
    assert!(ok && text.contains("1 processes, 6 evaluations"), "{text}");
    let (ok, text) = verify(data.path(), &["--from", "checkpoint"]);
    assert!(
        ok && text.contains("0 evaluations"),
        "nothing after the last checkpoint: {text}"
    );

    // A forged generation: well-formed, checksums right, one process's memory changed.
    let path = data.path().join("checkpoints");
    let loaded = engine::checkpoint::load(&path).expect("readable").expect("present");
    let commit = loaded.commit.expect("committed");
    let mut forged = loaded.processes[&pids[1]].clone();
    let mut memory = zstd::bulk::decompress(&forged.memory_zstd, 1 << 24).expect("memory");
    let at = memory.iter().position(|b| *b == 5).expect("the count is in memory");
    memory[at] = 6;
    forged.memory_zstd = zstd::bulk::compress(&memory, 1).expect("compress").into();
    let mut bytes = Vec::new();
    engine::checkpoint::encode_process(&mut bytes, &forged);
    engine::checkpoint::encode_commit(
        &mut bytes,
        &engine::checkpoint::Commit {
            generation: commit.generation + 1,
            ..commit
        },
    );
    let original = std::fs::read(&path).expect("read");
    let mut file = std::fs::OpenOptions::new().append(true).open(&path).expect("open");
    std::io::Write::write_all(&mut file, &bytes).expect("append");
    drop(file);
    let (ok, text) = verify(data.path(), &[]);
    assert!(!ok, "a forged checkpoint is caught: {text}");
    assert!(
        text.contains(&format!("process {}: its checkpoint is wrong: memory differs", pids[1])),
        "{text}"
    );
    assert!(text.contains("DIFFERENCES"), "{text}");

    // A flipped bit: the checksum names it.
    let mut damaged = original.clone();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 1;
    std::fs::write(&path, damaged).expect("write");
    let (ok, text) = verify(data.path(), &[]);
    assert!(!ok && text.contains("checkpoint damaged"), "{text}");

    // Put back, all agrees again.
    std::fs::write(&path, original).expect("write");
    let (ok, text) = verify(data.path(), &[]);
    assert!(ok, "{text}");
}

#[test]
fn results_beyond_memory_are_served_from_the_results_file_before_and_after_a_restart() {
    let data = tempfile::tempdir().expect("temporary directory");
    // 64 KiB of results in memory a shard; each echo result below is over 2 KiB.
    let bound = ["--set", "limits.results_memory_bytes_max=65536"];
    let node = start(data.path(), &bound);
    let client = node.client();
    let echo = load_sample(&client, "echo", &[]);
    let pid = spawn(&client, &node, echo);
    let sent: Vec<MessageId> = (0..120u32)
        .map(|n| {
            let data = format!("{n:04}").repeat(500);
            client
                .send(pid, &[scheduler::tags::Tag::new("Action", "Echo")], data.as_bytes())
                .expect("sent")
        })
        .collect();
    wait_until("every message is evaluated", || {
        tests::results_in_pages(&client, pid, 25).len() == 121
    });
    let filed = metric(&node, "hewitt_results_filed_total");
    assert!(filed >= 60.0, "the oldest results left memory ({filed})");
    let in_memory = metric(&node, "hewitt_results_memory_bytes");
    assert!(in_memory <= 65536.0, "{in_memory} bytes of results in memory");
    let before = tests::results_in_pages(&client, pid, 25);
    let cursors: Vec<String> = (0..=120).map(|n: u32| n.to_string()).collect();
    assert_eq!(before.iter().map(|(c, _)| c.clone()).collect::<Vec<_>>(), cursors);
    let first = client.result(pid, sent[0]).expect("the first result");
    assert!(
        first["Output"].to_string().contains(&"0000".repeat(500)),
        "the first message's echo, read back from the file"
    );
    let descending = client
        .get(&format!("/results/{pid}?limit=3&sort=DESC"))
        .expect("a page");
    assert_eq!(tests::cursors(&descending), ["120", "119", "118"]);

    // A clean stop checkpoints every process: the restart keeps no result text in memory and
    // serves every one from the file.
    assert!(node.terminate().success());
    let node = start(data.path(), &bound);
    let client = node.client();
    wait_until("the node is ready", || client.get("/ready").is_ok());
    assert_eq!(
        metric(&node, "hewitt_messages_evaluated_total"),
        0.0,
        "nothing replayed"
    );
    assert_eq!(metric(&node, "hewitt_results_memory_bytes"), 0.0);
    assert_eq!(
        tests::results_in_pages(&client, pid, 25),
        before,
        "the same results after the restart"
    );
    assert_eq!(client.result(pid, sent[0]).expect("the first result"), first);
    assert!(node.terminate().success());
}
