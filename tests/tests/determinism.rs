//! Determinism (docs/DETERMINISM.md): a node's processes, replayed from the log after a SIGKILL
//! and again after a clean stop, have byte-identical memory. The workload mixes what could
//! diverge: a matching engine with many orders, ping-pong rallies carried by the messenger,
//! processes spawning children, an Error result rolled back, and a cron process whose ticks
//! run between its messages.

use engine::client::Client;
use scheduler::tags::Tag;
use scheduler::ProcessId;
use sha2::{Digest, Sha256};
use tests::{load_sample, spawn, wait_until, Node};

const BINARY: &str = env!("CARGO_BIN_EXE_hewitt-under-test");

/// SHA-256 of each process's memory (`GET /state/{pid}`), once the node has replayed its log.
fn memory_hashes(node: &Node, pids: &[ProcessId]) -> Vec<[u8; 32]> {
    let client = node.client();
    wait_until("the node is ready", || client.get("/ready").is_ok());
    pids.iter()
        .map(|pid| Sha256::digest(client.get_bytes(&format!("/state/{pid}")).expect("state")).into())
        .collect()
}

#[test]
fn replays_give_byte_identical_memory() {
    let data = tempfile::tempdir().expect("temporary directory");
    let node = Node::start(BINARY, data.path());
    let client = node.client();
    let (counter, pingpong, spawner, exchange) = (
        load_sample(&client, "counter", &[]),
        load_sample(&client, "pingpong", &[]),
        load_sample(&client, "spawner", &[]),
        load_sample(&client, "exchange", &[]),
    );
    let mut pids = Vec::new();

    // A matching engine: crossing orders from several accounts.
    let book = spawn(&client, &node, exchange);
    pids.push(book);
    let traders: Vec<_> = (0..4).map(|_| node.client()).collect();
    for n in 0..120u64 {
        let side = if n % 2 == 0 { "Buy" } else { "Sell" };
        let price = (100 + (n * 7) % 11).to_string();
        let tags = [
            Tag::new("Action", "Place"),
            Tag::new("Order-Id", (n + 1).to_string()),
            Tag::new("Side", side),
            Tag::new("Price", price),
            Tag::new("Size", (1 + n % 5).to_string()),
            Tag::new("Type", if n % 9 == 0 { "IOC" } else { "GTC" }),
        ];
        traders[(n % 4) as usize].send(book, &tags, b"").expect("order");
    }

    // Rallies between ping-pong pairs (9 balls each, all carried by the messenger).
    for _ in 0..3 {
        let (a, b) = (spawn(&client, &node, pingpong), spawn(&client, &node, pingpong));
        pids.extend([a, b]);
        let serve = [
            Tag::new("Action", "Serve"),
            Tag::new("Peer", b.to_string()),
            Tag::new("Count", "9"),
        ];
        client.send(a, &serve, b"").expect("serve");
    }

    // Spawners and their children; a counter with an Error result in the middle.
    let parent = spawn(&client, &node, spawner);
    pids.push(parent);
    for _ in 0..3 {
        client
            .send(parent, &[Tag::new("Action", "Spawn-Child")], b"")
            .expect("spawn child");
    }
    let count = spawn(&client, &node, counter);
    pids.push(count);
    for action in ["Increment", "Fail", "Increment", "Increment"] {
        client.send(count, &[Tag::new("Action", action)], b"").expect("send");
    }

    // A cron process: its ticks run while monitored, then a message closes the interval, so
    // every replay evaluates the same ticks before it.
    let tags = [
        Tag::new("Cron-Interval", "1-second"),
        Tag::new("Cron-Tag-Action", "Increment"),
    ];
    let ticking = client.spawn(counter, node.address, &tags, b"").expect("cron process");
    pids.push(ticking);
    client.monitor(ticking, true).expect("monitor");
    std::thread::sleep(std::time::Duration::from_millis(2300));
    client.monitor(ticking, false).expect("unmonitor");
    let last = client.send(ticking, &[Tag::new("Action", "Get")], b"").expect("send");
    let seen: u64 = client.result(ticking, last).expect("result")["Output"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("count");
    assert!(seen >= 2, "ticks ran before the message ({seen})");

    // Let the messenger finish the rallies and the spawns.
    let idle = || client.get("/health").is_ok_and(|h| h["backlog"] == 0);
    wait_until("rallies and spawns delivered", idle);
    std::thread::sleep(std::time::Duration::from_millis(300));
    wait_until("rallies and spawns delivered", idle);
    let before = memory_hashes(&node, &pids);
    node.kill();

    let node = Node::start(BINARY, data.path());
    assert_eq!(memory_hashes(&node, &pids), before, "replay after SIGKILL");
    assert!(node.terminate().success());
    let node = Node::start(BINARY, data.path());
    assert_eq!(memory_hashes(&node, &pids), before, "replay after a clean stop");
}

/// A process keeps the limits it was spawned under (logged with its spawn): a node restarted
/// with a lower default and a lower maximum still evaluates it as before, whether it reads its
/// log whole (after a SIGKILL) or from its saved index (after a clean stop), while new spawns
/// get the new limits.
#[test]
fn processes_keep_the_limits_they_were_spawned_under_when_the_node_changes_its_own() {
    let data = tempfile::tempdir().expect("temporary directory");
    let start = |default: &str, max: &str| {
        let default = format!("limits.compute_limit_default={default}");
        let max = format!("limits.compute_limit_max={max}");
        Node::start_with(BINARY, data.path(), &["--set", &default, "--set", &max])
    };
    // The loop sample burns whatever fuel it is given; its error names the limit.
    let burn = |client: &Client, pid: ProcessId| -> String {
        let id = client.send(pid, &[Tag::new("Action", "Loop")], b"").expect("send");
        let result = client.result(pid, id).expect("result");
        result["Error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error: {result}"))
            .to_owned()
    };
    let node = start("3000000", "10000000");
    let client = node.client();
    let looping = load_sample(&client, "loop", &[]);
    let by_default = spawn(&client, &node, looping);
    let by_tag = client
        .spawn(looping, node.address, &[Tag::new("Compute-Limit", "4000000")], b"")
        .expect("spawn with a Compute-Limit");
    assert!(burn(&client, by_default).contains("compute limit of 3000000 exceeded"));
    assert!(burn(&client, by_tag).contains("compute limit of 4000000 exceeded"));
    node.kill();

    for restart in ["after a SIGKILL", "after a clean stop"] {
        // by_tag's limit is now above the node's maximum: it was accepted when it was spawned.
        let node = start("2000000", "2500000");
        let client = node.client();
        for (pid, limit) in [(by_default, 3000000), (by_tag, 4000000)] {
            let error = burn(&client, pid);
            assert!(
                error.contains(&format!("compute limit of {limit} exceeded")),
                "{restart}: {error}"
            );
        }
        let fresh = spawn(&client, &node, looping);
        assert!(
            burn(&client, fresh).contains("compute limit of 2000000 exceeded"),
            "{restart}"
        );
        let refused = client.spawn(looping, node.address, &[Tag::new("Compute-Limit", "4000000")], b"");
        let error = refused.expect_err("a Compute-Limit above the new maximum");
        assert_eq!(error.status(), Some(400), "{error}");
        assert!(node.terminate().success());
    }
    tests::assert_log_verifies(BINARY, data.path());
}
