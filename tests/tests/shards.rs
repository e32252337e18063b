//! Shards (ARCHITECTURE.md, "shards"): the same workload on one shard and on several gives the
//! same timelines, results and memory, process by process; a node of several shards killed with
//! SIGKILL while messages cross between its shards loses and doubles nothing.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use engine::client::Client;
use scheduler::signer::Signer;
use scheduler::tags::Tag;
use scheduler::ProcessId;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tests::{check_timeline, load_sample, spawn, timeline, wait_until, Node};

const BINARY: &str = env!("CARGO_BIN_EXE_hewitt-under-test");

/// Every timestamp of the comparison runs: timelines then depend on the messages alone.
const CLOCK_MS: u64 = 1_750_000_000_000;

fn start(data_dir: &Path, shards: usize, fixed_clock: bool) -> Node {
    let mut command = Command::new(BINARY);
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .args(["--set", &format!("shards={shards}")])
        // Checkpoints often: restarts resume from them and their pending deliveries.
        .args(["--set", "checkpoint.every_messages=64"]);
    if fixed_clock {
        command.args(["--set", &format!("fixed_clock_ms={CLOCK_MS}")]);
    }
    Node::launch(command, data_dir)
}

fn ball(peer: ProcessId, count: u64) -> [Tag; 3] {
    [
        Tag::new("Action", "Serve"),
        Tag::new("Peer", peer.to_string()),
        Tag::new("Count", count.to_string()),
    ]
}

/// What a process looks like from outside: its whole timeline, its results, its memory hash.
type Seen = BTreeMap<String, (Vec<Value>, Value, String)>;

/// Runs the comparison workload on a fresh node of `shards` shards with the given keys and
/// returns what every process looks like at the end.
fn run_workload(shards: usize, node_key: &Path, client_key: &Path) -> Seen {
    let data = tempfile::tempdir().expect("temporary directory");
    std::fs::copy(node_key, data.path().join("node-key.json")).expect("node key");
    let node = start(data.path(), shards, true);
    let client = Client::new(&node.url, Signer::load(client_key).expect("client key")).with_seeded_anchors(11);
    let (pingpong, spawner, counter) = (
        load_sample(&client, "pingpong", &[]),
        load_sample(&client, "spawner", &[]),
        load_sample(&client, "counter", &[]),
    );
    let mut pids = Vec::new();
    let mut expected_len: BTreeMap<ProcessId, usize> = BTreeMap::new();

    // Ping-pong chains: each pair rallies 15 + 1 balls.
    for _ in 0..4 {
        let (a, b) = (spawn(&client, &node, pingpong), spawn(&client, &node, pingpong));
        client.send(a, &ball(b, 15), b"").expect("serve");
        expected_len.insert(a, 1 + 1 + 8);
        expected_len.insert(b, 1 + 8);
        pids.extend([a, b]);
    }
    // Fan-out: one hub sends one ball (no return) to each of 8 leaves.
    let hub = spawn(&client, &node, pingpong);
    let leaves: Vec<ProcessId> = (0..8).map(|_| spawn(&client, &node, pingpong)).collect();
    for leaf in &leaves {
        client.send(hub, &ball(*leaf, 0), b"").expect("serve");
        expected_len.insert(*leaf, 2);
    }
    expected_len.insert(hub, 1 + leaves.len());
    pids.push(hub);
    pids.extend(&leaves);
    // Spawn-heavy: two parents spawn six children each. Each request waits for the Spawned
    // notice of the one before, so that the notices sit at the same nonces: a child's shard
    // sends its notice once the child is in its log, so on several shards it comes later.
    let mut parents = Vec::new();
    for _ in 0..2 {
        let parent = spawn(&client, &node, spawner);
        for child in 0..6 {
            let id = client
                .send(parent, &[Tag::new("Action", "Spawn-Child")], b"")
                .expect("spawn child");
            client.result(parent, id).expect("spawn result");
            wait_until("the Spawned notice", || {
                timeline(&client, parent).len() == 3 + 2 * child
            });
        }
        expected_len.insert(parent, 1 + 6 + 6);
        parents.push(parent);
    }
    pids.extend(&parents);
    // A counter on its own.
    let count = spawn(&client, &node, counter);
    for _ in 0..10 {
        client
            .send(count, &[Tag::new("Action", "Increment")], b"")
            .expect("increment");
    }
    expected_len.insert(count, 11);
    pids.push(count);

    wait_until("every timeline is complete", || {
        expected_len
            .iter()
            .all(|(pid, len)| timeline(&client, *pid).len() == *len)
    });
    // The children, named by the parents' Spawned results.
    for parent in &parents {
        let results = client.get(&format!("/results/{parent}?limit=100")).expect("results");
        for edge in results["edges"].as_array().expect("edges") {
            if let Some(child) = edge["node"]["Output"]
                .as_str()
                .and_then(|o| o.parse::<ProcessId>().ok())
            {
                pids.push(child);
            }
        }
    }
    assert_eq!(pids.len(), 8 + 9 + 2 + 1 + 12, "every child was spawned");
    wait_until("the children are spawned", || {
        pids.iter().all(|pid| !timeline(&client, *pid).is_empty())
    });
    wait_until("the node is ready", || client.get("/ready").is_ok());

    let mut seen = Seen::new();
    for pid in &pids {
        let edges = timeline(&client, *pid);
        check_timeline(&edges, *pid, node.address);
        let results = client.get(&format!("/results/{pid}?limit=1000")).expect("results");
        let memory = client.get_bytes(&format!("/state/{pid}")).expect("state");
        let hash: String = Sha256::digest(&memory).iter().map(|b| format!("{b:02x}")).collect();
        seen.insert(pid.to_string(), (edges, results, hash));
    }
    node.terminate();
    tests::assert_log_verifies(BINARY, data.path());
    seen
}

#[test]
fn one_shard_and_three_shards_give_identical_timelines_results_and_memory() {
    let keys = tempfile::tempdir().expect("temporary directory");
    let (node_key, client_key) = (keys.path().join("node.json"), keys.path().join("client.json"));
    Signer::generate_ed25519().save(&node_key).expect("node key");
    Signer::generate_ed25519().save(&client_key).expect("client key");
    let one = run_workload(1, &node_key, &client_key);
    let three = run_workload(3, &node_key, &client_key);
    // The processes really were spread: every shard of three owns some.
    let mut owners = [0usize; 3];
    for pid in one.keys() {
        owners[messenger::placement::shard_of(&pid.parse().expect("pid"), 3)] += 1;
    }
    assert!(owners.iter().all(|&n| n > 0), "placement over 3 shards: {owners:?}");
    assert_eq!(one.len(), three.len());
    for (pid, (edges, results, memory)) in &one {
        let (other_edges, other_results, other_memory) = &three[pid];
        assert_eq!(edges, other_edges, "timeline of {pid}");
        assert_eq!(results, other_results, "results of {pid}");
        assert_eq!(memory, other_memory, "memory of {pid}");
    }
}

/// The whole timeline of `pid`; a read that gets no answer in time is reported and tried again
/// (this test counts deliveries; a stalled read is not what it checks).
fn timeline_retried(client: &Client, pid: ProcessId) -> Vec<Value> {
    for attempt in 1..=3 {
        match client.get(&format!("/{pid}?process-id={pid}&limit=1000")) {
            Ok(page) => {
                assert_eq!(page["page_info"]["has_next_page"], false, "one page holds the rally");
                return page["edges"].as_array().expect("edges").clone();
            }
            Err(error) => eprintln!("timeline read of {pid}, attempt {attempt}: {error}"),
        }
    }
    panic!("three timeline reads of {pid} failed");
}

/// The balls a pingpong process has received (its timeline less nonce 0 and Serve requests).
fn balls(client: &Client, pid: ProcessId) -> Vec<String> {
    timeline_retried(client, pid)
        .iter()
        .skip(1)
        .filter(|edge| edge["node"]["message"]["tags"].to_string().contains("\"Ball\""))
        .map(|edge| edge["node"]["message"]["id"].as_str().expect("message id").to_owned())
        .collect()
}

/// Spawns processes of `module` on a two-shard node until each shard owns at least `each`;
/// returns them by shard.
fn spawn_on_both_shards(client: &Client, node: &Node, module: scheduler::ModuleId, each: usize) -> [Vec<ProcessId>; 2] {
    let mut on = [Vec::new(), Vec::new()];
    while on[0].len() < each || on[1].len() < each {
        let pid = spawn(client, node, module);
        on[messenger::placement::shard_of(&pid, 2)].push(pid);
    }
    on
}

#[test]
fn a_multi_shard_node_killed_mid_traffic_loses_and_doubles_nothing() {
    let data = tempfile::tempdir().expect("temporary directory");
    let node = start(data.path(), 2, false);
    let client = node.client();
    let pingpong = load_sample(&client, "pingpong", &[]);
    // Pairs whose two players sit on different shards: every ball crosses.
    let on = spawn_on_both_shards(&client, &node, pingpong, 4);
    const COUNT: u64 = 300;
    let pairs: Vec<(ProcessId, ProcessId)> = (0..4).map(|i| (on[0][i], on[1][i])).collect();
    for (a, b) in &pairs {
        client.send(*a, &ball(*b, COUNT), b"").expect("serve");
    }
    // Let the rallies get going, then kill the node in the middle of them.
    wait_until("the rallies are under way", || balls(&client, pairs[0].1).len() >= 20);
    node.kill();

    let node = start(data.path(), 2, false);
    let client = node.client().with_timeout(std::time::Duration::from_secs(15));
    for (a, b) in &pairs {
        wait_until("the rally ends", || {
            balls(&client, *a).len() + balls(&client, *b).len() > COUNT as usize
        });
    }
    // Quiet for a while: nothing more arrives.
    std::thread::sleep(std::time::Duration::from_millis(500));
    for (a, b) in &pairs {
        let (at_a, at_b) = (balls(&client, *a), balls(&client, *b));
        assert_eq!(at_a.len() + at_b.len(), COUNT as usize + 1, "every ball delivered once");
        let mut ids: Vec<&String> = at_a.iter().chain(&at_b).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), COUNT as usize + 1, "no ball twice");
        check_timeline(&timeline(&client, *a), *a, node.address);
        check_timeline(&timeline(&client, *b), *b, node.address);
    }
    let health = client.get("/health").expect("health");
    assert_eq!(health["shards"], 2, "{health}");
    node.terminate();
    tests::assert_log_verifies(BINARY, data.path());
}

/// The children a parent's `Spawned` notices name (each notice's result is the child's id).
fn notified_children(client: &Client, parent: ProcessId) -> Vec<ProcessId> {
    timeline_retried(client, parent)
        .iter()
        .filter(|edge| edge["node"]["message"]["tags"].to_string().contains("\"Spawned\""))
        .map(|edge| {
            let tags = edge["node"]["message"]["tags"].as_array().expect("tags");
            let process = tags.iter().find(|tag| tag["name"] == "Process").expect("Process tag");
            process["value"].as_str().expect("value").parse().expect("a process id")
        })
        .collect()
}

#[test]
fn spawns_across_shards_killed_midway_give_each_child_once_and_each_notice_once() {
    let data = tempfile::tempdir().expect("temporary directory");
    let mut node = start(data.path(), 2, false);
    let client = node.client();
    let spawner = load_sample(&client, "spawner", &[]);
    // Two parents on each shard; each child lands on either shard.
    let on = spawn_on_both_shards(&client, &node, spawner, 2);
    let parents: Vec<ProcessId> = on[0][..2].iter().chain(&on[1][..2]).copied().collect();
    // Three kills, each while every parent is being sent up to SENT_MAX Spawn-Child requests
    // as fast as the node takes them: spawns, children and notices are on their way between
    // the shards.
    const SENT_MAX: usize = 60;
    for _ in 0..3 {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let senders: Vec<_> = parents
            .iter()
            .map(|parent| {
                let (client, parent, stop) = (node.client(), *parent, std::sync::Arc::clone(&stop));
                std::thread::spawn(move || {
                    // At most SENT_MAX a round: a parent's timeline stays within one page.
                    for _ in 0..SENT_MAX {
                        let stopped = stop.load(std::sync::atomic::Ordering::Relaxed);
                        if stopped || client.send(parent, &[Tag::new("Action", "Spawn-Child")], b"").is_err() {
                            return; // the node was killed
                        }
                    }
                })
            })
            .collect();
        let client = node.client().with_timeout(std::time::Duration::from_secs(15));
        let before: usize = parents.iter().map(|p| notified_children(&client, *p).len()).sum();
        wait_until("spawns are under way", || {
            parents
                .iter()
                .map(|p| notified_children(&client, *p).len())
                .sum::<usize>()
                >= before + 40
        });
        node.kill();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for sender in senders {
            sender.join().expect("sender");
        }
        node = start(data.path(), 2, false);
    }

    // Every Spawn-Child in a parent's timeline gets exactly one notice, naming a child that
    // exists once.
    let client = node.client().with_timeout(std::time::Duration::from_secs(15));
    let requests = |parent: ProcessId| {
        timeline_retried(&client, parent)
            .iter()
            .filter(|edge| edge["node"]["message"]["tags"].to_string().contains("\"Spawn-Child\""))
            .count()
    };
    for parent in &parents {
        wait_until("every notice", || {
            notified_children(&client, *parent).len() >= requests(*parent)
        });
    }
    // Quiet for a while: nothing more arrives.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let mut crossed = 0;
    for parent in &parents {
        let edges = timeline_retried(&client, *parent);
        let asked = requests(*parent);
        assert_eq!(edges.len(), 1 + 2 * asked, "one notice per Spawn-Child of {parent}");
        check_timeline(&edges, *parent, node.address);
        let mut children = notified_children(&client, *parent);
        children.sort();
        children.dedup();
        assert_eq!(children.len(), asked, "no child twice");
        for child in children {
            let edges = timeline(&client, child);
            assert_eq!(edges.len(), 1, "child {child} spawned once, and nothing else");
            check_timeline(&edges, child, node.address);
            crossed +=
                usize::from(messenger::placement::shard_of(&child, 2) != messenger::placement::shard_of(parent, 2));
        }
    }
    assert!(crossed > 0, "some children live on the other shard than their parent");
    node.terminate();
    tests::assert_log_verifies(BINARY, data.path());
}

/// A process's `Assignments` may name a message another shard holds: the assigning shard asks
/// the other shards for it, then assigns it to targets on any shard, as on one shard. A message
/// no shard holds is dropped and delivery goes on.
#[test]
fn assignments_of_a_message_another_shard_holds_reach_targets_on_every_shard() {
    let data = tempfile::tempdir().expect("temporary directory");
    let node = start(data.path(), 2, false);
    let client = node.client();
    let echo = load_sample(&client, "echo", &[]);
    let on = spawn_on_both_shards(&client, &node, echo, 2);
    // The message lives on shard 0; the assigning process on shard 1; a target on each.
    let (holder, target_0) = (on[0][0], on[0][1]);
    let (assigner, target_1) = (on[1][0], on[1][1]);
    let message = client
        .send(holder, &[Tag::new("Action", "Note")], b"held on shard 0")
        .expect("message");
    client.result(holder, message).expect("evaluated");
    let assign = |to: ProcessId, what: String| {
        let tags = [
            Tag::new("Action", "Assign"),
            Tag::new("Assign-To", to.to_string()),
            Tag::new("Assign-Message", what),
        ];
        let id = client.send(assigner, &tags, b"").expect("assign");
        client.result(assigner, id).expect("assigning result");
    };
    assign(target_1, message.to_string());
    assign(target_0, message.to_string());
    // An id no shard holds: dropped, and the assigner's next assignment is still delivered.
    assign(target_1, scheduler::MessageId([9; 32]).to_string());
    let after = client
        .send(
            assigner,
            &[
                Tag::new("Action", "Assign"),
                Tag::new("Assign-To", target_1.to_string()),
            ],
            b"after",
        )
        .expect("message");
    let check = |client: &Client| {
        for target in [target_0, target_1] {
            wait_until("the assignment", || client.result(target, message).is_ok());
            let output = client.result(target, message).expect("result")["Output"].clone();
            assert_eq!(output["Id"], message.to_string(), "{output}");
            assert_eq!(output["Data"], "held on shard 0", "{output}");
        }
        wait_until("the later assignment", || client.result(target_1, after).is_ok());
        // Nothing else: the target's timeline is its spawn and what was assigned.
        assert_eq!(timeline(client, target_0).len(), 2);
        assert_eq!(timeline(client, target_1).len(), 3);
    };
    check(&client);
    node.kill();

    let node = start(data.path(), 2, false);
    let client = node.client();
    check(&client);
    for pid in [holder, assigner, target_0, target_1] {
        check_timeline(&timeline(&client, pid), pid, node.address);
    }
    node.terminate();
    tests::assert_log_verifies(BINARY, data.path());
}

/// The node's resident memory, from /proc.
fn resident_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kib * 1024
}

#[test]
fn an_overloaded_multi_shard_node_refuses_with_503_and_stays_up() {
    let data = tempfile::tempdir().expect("temporary directory");
    let node = Node::start_with(
        BINARY,
        data.path(),
        &[
            "--set",
            "shards=2",
            "--set",
            "limits.queue_messages_max=4",
            "--set",
            "http.writes_in_flight_max=8",
        ],
    );
    let client = node.client();
    // Every message burns its whole Compute-Limit (a few ms) and fails: slower than clients
    // can send, so the evaluation queues fill.
    let module = load_sample(&client, "loop", &[]);
    let mut slow = [Vec::new(), Vec::new()];
    while slow[0].is_empty() || slow[1].is_empty() {
        let pid = client
            .spawn(module, node.address, &[Tag::new("Compute-Limit", "3000000")], b"")
            .expect("spawn");
        slow[messenger::placement::shard_of(&pid, 2)].push(pid);
    }
    let targets = [slow[0][0], slow[1][0]];
    let resident_before = resident_bytes(node.pid());

    // 32 clients, 25 messages each, no waiting between them: every answer is 202 or 503.
    let url = node.url.clone();
    let workers: Vec<_> = (0..32)
        .map(|worker| {
            let url = url.clone();
            std::thread::spawn(move || {
                let client = Client::new(&url, Signer::generate_ed25519());
                let (mut accepted, mut refused) = (Vec::new(), 0usize);
                for n in 0..25 {
                    let target = targets[(worker + n) % 2];
                    let item = client.message_item(target, &[Tag::new("Action", "Loop")], b"");
                    match ureq::post(&format!("{url}/")).send_bytes(&item.to_bytes()) {
                        Ok(answer) => {
                            assert_eq!(answer.status(), 202);
                            accepted.push(target);
                        }
                        Err(ureq::Error::Status(503, answer)) => {
                            assert_eq!(answer.header("Retry-After"), Some("1"), "503 says when to retry");
                            refused += 1;
                        }
                        Err(other) => panic!("neither 202 nor 503: {other}"),
                    }
                }
                (accepted, refused)
            })
        })
        .collect();
    let (mut accepted, mut refused) = (Vec::new(), 0);
    for worker in workers {
        let (a, r) = worker.join().expect("client thread");
        accepted.extend(a);
        refused += r;
    }
    assert!(
        refused > 0,
        "the bounded queues refused some messages ({} accepted)",
        accepted.len()
    );
    assert!(!accepted.is_empty(), "and took others");
    // Still up, and every acknowledged message is in its timeline once the queues drain.
    for target in targets {
        let expected = 1 + accepted.iter().filter(|t| **t == target).count();
        wait_until("the accepted messages are in the timeline", || {
            timeline(&client, target).len() == expected
        });
        check_timeline(&timeline(&client, target), target, node.address);
    }
    wait_until("the queues drain", || client.get("/ready").is_ok());
    client
        .send(targets[0], &[Tag::new("Action", "Ping")], b"")
        .expect("accepted again once drained");
    let grown = resident_bytes(node.pid()).saturating_sub(resident_before);
    assert!(
        grown < 256 << 20,
        "resident memory grew by {grown} bytes under overload"
    );
}

/// Sends `head` then, apart, `body` on `stream`; returns the status line of the answer.
fn post_apart(stream: &mut std::net::TcpStream, body: &[u8]) -> String {
    use std::io::Write;
    let head = format!(
        "POST / HTTP/1.1\r\nHost: hewitt\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).expect("write the head");
    std::thread::sleep(std::time::Duration::from_millis(20));
    stream.write_all(body).expect("write the body");
    read_status(stream)
}

/// Reads one whole answer from `stream`; returns its status line.
fn read_status(stream: &mut std::net::TcpStream) -> String {
    use std::io::Read;
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    // The answer is small and ends with its JSON body: read until the headers say it is whole.
    loop {
        let read = stream.read(&mut buffer).expect("read the answer");
        assert!(read > 0, "the node closed the connection instead of answering");
        answer.extend_from_slice(&buffer[..read]);
        let text = String::from_utf8_lossy(&answer);
        if let Some((head, rest)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|line| {
                    line.to_ascii_lowercase()
                        .strip_prefix("content-length: ")?
                        .parse::<usize>()
                        .ok()
                })
                .expect("a content length");
            if rest.len() >= length {
                return head.lines().next().unwrap_or_default().to_owned();
            }
        }
    }
}

/// Client connections of the test below: four times the 256 completions of io_uring's default
/// ring, so that their completions cannot all fit in it.
const BURST_CONNECTIONS: usize = 1024;
/// Writes each of those connections sends.
const BURST_WRITES_EACH: usize = 4;

#[test]
fn one_shard_answers_every_write_from_more_connections_than_its_ring_held() {
    use std::io::Write;
    let open_files = engine::node::raise_open_files_limit();
    assert!(
        open_files >= BURST_CONNECTIONS as u64 + 256,
        "the test needs {} open files, the hard limit is {open_files}",
        BURST_CONNECTIONS + 256
    );
    let data = tempfile::tempdir().expect("temporary directory");
    let node = start(data.path(), 1, false);
    let client = node.client();
    let module = load_sample(&client, "counter", &[]);
    let pids: Vec<ProcessId> = (0..16).map(|_| spawn(&client, &node, module)).collect();
    let addr = node.url.trim_start_matches("http://").to_owned();
    // Each connection sends its writes one after the other, as fast as they are answered: a
    // closed loop, the load under which a shard on io_uring's default ring stopped for good.
    let workers: Vec<_> = (0..BURST_CONNECTIONS)
        .map(|i| {
            let items: Vec<Vec<u8>> = (0..BURST_WRITES_EACH)
                .map(|_| {
                    client
                        .message_item(pids[i % pids.len()], &[Tag::new("Action", "Increment")], b"")
                        .to_bytes()
                })
                .collect();
            let addr = addr.clone();
            std::thread::spawn(move || {
                let mut stream = std::net::TcpStream::connect(&addr).expect("connect");
                stream
                    .set_read_timeout(Some(std::time::Duration::from_secs(60)))
                    .expect("a read timeout");
                for (n, body) in items.iter().enumerate() {
                    let head = format!(
                        "POST / HTTP/1.1\r\nHost: hewitt\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
                        body.len()
                    );
                    stream.write_all(&[head.as_bytes(), body].concat()).expect("write a request");
                    let status = read_status(&mut stream);
                    assert!(status.contains(" 202 "), "connection {i}, write {n}: {status}");
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("every write of a connection was answered 202");
    }
    let counted: u64 = pids.iter().map(|pid| tests::counter_value(&client, *pid)).sum();
    assert_eq!(
        counted,
        (BURST_CONNECTIONS * BURST_WRITES_EACH) as u64,
        "every acknowledged increment was evaluated once"
    );
    assert!(node.terminate().success());
}

/// The first of `count` ports in a row free on loopback now, below the kernel's ephemeral ports
/// (32768 up), searched from a point that differs between concurrent runs.
fn free_ports(count: u16) -> u16 {
    let start = 20_000 + (std::process::id() % 12_000) as u16;
    (start..32_000)
        .chain(20_000..start)
        .step_by(count as usize)
        .find(|base| (0..count).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok()))
        .expect("free ports in a row")
}

#[test]
fn a_shard_port_another_socket_holds_stops_the_start_with_the_reason() {
    use std::os::fd::FromRawFd;
    let data = tempfile::tempdir().expect("temporary directory");
    let base = free_ports(2);
    // Another process's listener on shard 1's port, with SO_REUSEPORT as a node's shared
    // listener has: a shard port must not join it and split its connections.
    // SAFETY: plain socket calls on a socket created and owned here.
    let holder = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0, "a socket");
        let one: libc::c_int = 1;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEPORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: (base + 1).to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(std::net::Ipv4Addr::LOCALHOST).to_be(),
            },
            sin_zero: [0; 8],
        };
        let bound = libc::bind(
            fd,
            (&addr as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        assert_eq!(bound, 0, "bind the holder");
        assert_eq!(libc::listen(fd, 16), 0, "listen");
        std::net::TcpListener::from_raw_fd(fd)
    };
    let mut node = Command::new(BINARY)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path())
        .args(["--set", "shards=2", "--set", &format!("http.shard_ports_base={base}")])
        .env("HEWITT_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run the node");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(status) = node.try_wait().expect("poll the node") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            node.kill().expect("stop the node");
            node.wait().expect("reap the node");
            panic!("the node started on a port another socket holds");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut node.stderr.take().expect("piped stderr"), &mut stderr).expect("read stderr");
    assert!(!status.success(), "the node refused to start: {stderr}");
    assert!(stderr.contains("shard 1's own port"), "and said which port: {stderr}");
    drop(holder);
}

#[test]
fn a_client_that_computes_placement_reaches_each_owner_on_its_shard_port() {
    let data = tempfile::tempdir().expect("temporary directory");
    let base = free_ports(3);
    let node = Node::start_with(
        BINARY,
        data.path(),
        &["--set", "shards=3", "--set", &format!("http.shard_ports_base={base}")],
    );
    let client = node.client();
    let info = client.get("/").expect("GET /");
    assert_eq!(info["shards"], 3, "{info}");
    let ports: Vec<u16> = info["shard_ports"]
        .as_array()
        .expect("shard ports")
        .iter()
        .map(|p| p.as_u64().expect("a port") as u16)
        .collect();
    assert_eq!(ports, vec![base, base + 1, base + 2]);
    let module = load_sample(&client, "counter", &[]);
    let pids: Vec<ProcessId> = (0..12).map(|_| spawn(&client, &node, module)).collect();
    let handed_over = |node: &Node| tests::metric(node, "hewitt_requests_handed_over_total");
    let before = handed_over(&node);

    // Each message sent to its owner's port: served there, nothing handed across shards.
    let owners: Vec<usize> = pids.iter().map(|pid| messenger::placement::shard_of(pid, 3)).collect();
    assert!(
        owners.iter().any(|&o| o != 0),
        "some process lives beyond shard 0: {owners:?}"
    );
    for (pid, owner) in pids.iter().zip(&owners) {
        let direct = Client::new(
            &format!("http://127.0.0.1:{}", ports[*owner]),
            Signer::generate_ed25519(),
        );
        direct
            .send(*pid, &[Tag::new("Action", "Increment")], b"")
            .expect("sent to its owner");
    }
    assert_eq!(handed_over(&node), before, "no request was handed over");

    // The same to the wrong shard's port still works: it is handed to the owner.
    for (pid, owner) in pids.iter().zip(&owners) {
        let wrong = Client::new(
            &format!("http://127.0.0.1:{}", ports[(owner + 1) % 3]),
            Signer::generate_ed25519(),
        );
        wrong
            .send(*pid, &[Tag::new("Action", "Increment")], b"")
            .expect("sent to another shard");
    }
    assert_eq!(
        handed_over(&node),
        before + pids.len() as f64,
        "each was handed over once"
    );
    for pid in &pids {
        wait_until("both increments are evaluated", || {
            tests::counter_value(&client, *pid) == 2
        });
    }
    assert!(node.terminate().success());
}

#[test]
fn a_refused_write_keeps_its_connection_and_waits_its_turn_before_its_503() {
    use std::io::Write;
    let data = tempfile::tempdir().expect("temporary directory");
    let node = Node::start_with(
        BINARY,
        data.path(),
        &[
            "--set",
            "shards=1",
            "--set",
            "http.writes_in_flight_max=1",
            "--set",
            "http.writes_waiting_max=1",
            "--set",
            "http.write_wait_ms=300",
        ],
    );
    let addr = node.url.trim_start_matches("http://").to_owned();
    // A write whose body never comes holds the only slot.
    let timeout = Some(std::time::Duration::from_secs(10));
    let mut holder = std::net::TcpStream::connect(&addr).expect("connect");
    holder
        .write_all(b"POST / HTTP/1.1\r\nHost: hewitt\r\nContent-Length: 1000\r\n\r\n")
        .expect("write a head");
    std::thread::sleep(std::time::Duration::from_millis(200));

    let mut client = std::net::TcpStream::connect(&addr).expect("connect");
    client.set_read_timeout(timeout).expect("a read timeout");
    for round in 0..3 {
        let began = std::time::Instant::now();
        let status = post_apart(&mut client, &[b'x'; 1000]);
        assert!(status.contains(" 503 "), "round {round}: refused, got {status}");
        assert!(
            began.elapsed() >= std::time::Duration::from_millis(300),
            "round {round}: the refusal waited http.write_wait_ms"
        );
    }
    drop(holder);
    // The slot is free again (a request waiting in line when it frees is handed it): the same
    // connection gets a real answer (400: not a data item).
    let status = post_apart(&mut client, &[b'x'; 1000]);
    assert!(status.contains(" 400 "), "the write reached the node: {status}");
    assert!(node.terminate().success());
}
