//! Hibernation: a node whose instance pool is far smaller than its process count keeps every
//! process answering with its own state, puts idle ones to sleep and wakes them, and comes back
//! after a restart with the same memory.

use scheduler::tags::Tag;
use sha2::{Digest, Sha256};
use tests::{counter_value, load_sample, metric, spawn, wait_until, Node};

const BINARY: &str = env!("CARGO_BIN_EXE_hewitt-under-test");

fn start(data: &std::path::Path) -> Node {
    Node::start_with(
        BINARY,
        data,
        &["--set", "shards=2", "--set", "compute.instance_count_max=8"],
    )
}

#[test]
fn forty_processes_on_a_pool_of_eight_sleep_wake_and_survive_a_restart() {
    let data = tempfile::tempdir().expect("temporary directory");
    let node = start(data.path());
    let client = node.client();
    let counter = load_sample(&client, "counter", &[]);
    let pids: Vec<_> = (0..40).map(|_| spawn(&client, &node, counter)).collect();
    for round in 0..3 {
        for (n, pid) in pids.iter().enumerate() {
            if n % 3 <= round {
                client
                    .send(*pid, &[Tag::new("Action", "Increment")], b"")
                    .expect("increment");
            }
        }
    }
    let expected: Vec<u64> = (0..40).map(|n| 3 - (n % 3) as u64).collect();
    wait_until("every increment is evaluated", || {
        pids.iter()
            .zip(&expected)
            .all(|(pid, want)| counter_value(&client, *pid) == *want)
    });
    assert!(
        metric(&node, "hewitt_hibernations_total") > 0.0,
        "processes were put to sleep"
    );
    assert!(metric(&node, "hewitt_wakes_total") > 0.0, "and woken");
    assert!(metric(&node, "hewitt_instances_live") <= 8.0);
    let hashes: Vec<Vec<u8>> = pids
        .iter()
        .map(|pid| Sha256::digest(client.get_bytes(&format!("/state/{pid}")).expect("state")).to_vec())
        .collect();
    node.kill();

    let node = start(data.path());
    let client = node.client();
    wait_until("the node is ready", || client.get("/ready").is_ok());
    for ((pid, want), hash) in pids.iter().zip(&expected).zip(&hashes) {
        assert_eq!(counter_value(&client, *pid), *want);
        let now = Sha256::digest(client.get_bytes(&format!("/state/{pid}")).expect("state")).to_vec();
        assert_eq!(&now, hash, "memory of {pid} after the restart");
    }
    assert!(metric(&node, "hewitt_instances_live") <= 8.0);
}
