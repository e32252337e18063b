//! Crash tests: SIGKILL a real node under load, restart it on the same data dir, and check that
//! every acknowledged message is there once, in order, and that outbox messages in flight at the
//! crash are delivered exactly once after it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use engine::client::Client;
use scheduler::signer::Signer;
use scheduler::tags::Tag;
use scheduler::{MessageId, ProcessId};
use tests::{check_timeline, counter_value, load_sample, spawn, tag_of, timeline, wait_until, Node};

const BINARY: &str = env!("CARGO_BIN_EXE_hewitt-under-test");

#[test]
fn acknowledged_messages_survive_sigkill_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(BINARY, dir.path());
    let setup = node.client();
    let module = load_sample(&setup, "counter", &[]);
    let pids: Vec<ProcessId> = (0..3).map(|_| spawn(&setup, &node, module)).collect();
    let acked: Arc<Mutex<Vec<(usize, ProcessId, MessageId)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let killing = Arc::new(AtomicBool::new(false));
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let url = node.url.clone();
    let senders: Vec<_> = (0..6)
        .map(|index| {
            let (acked, stop, url) = (Arc::clone(&acked), Arc::clone(&stop), url.clone());
            let (failures, killing) = (Arc::clone(&failures), Arc::clone(&killing));
            let pid = pids[index % pids.len()];
            std::thread::spawn(move || {
                let client = Client::new(&url, Signer::generate_ed25519());
                while !stop.load(Ordering::Relaxed) {
                    match client.send(pid, &[Tag::new("Action", "Increment")], b"") {
                        Ok(id) => acked.lock().unwrap().push((index, pid, id)),
                        Err(error) => {
                            // Expected once the node is being killed; before that, a refused
                            // message is a failure of the node.
                            if !killing.load(Ordering::SeqCst) {
                                failures.lock().unwrap().push(format!("sender {index}: {error}"));
                            }
                            return;
                        }
                    }
                }
            })
        })
        .collect();
    wait_until("300 acknowledged messages", || {
        acked.lock().unwrap().len() >= 300 || !failures.lock().unwrap().is_empty()
    });
    assert_eq!(
        *failures.lock().unwrap(),
        Vec::<String>::new(),
        "messages refused before the kill"
    );
    // From here on an error means the node is gone; the senders keep sending into the kill.
    killing.store(true, Ordering::SeqCst);
    node.kill();
    stop.store(true, Ordering::Relaxed);
    for sender in senders {
        sender.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();

    let node = Node::start(BINARY, dir.path());
    let client = node.client();
    for pid in &pids {
        let edges = timeline(&client, *pid);
        check_timeline(&edges, *pid, node.address);
        let logged: Vec<String> = edges[1..]
            .iter()
            .map(|e| e["node"]["message"]["id"].as_str().unwrap().to_owned())
            .collect();
        let mine: Vec<String> = acked
            .iter()
            .filter(|(_, p, _)| p == pid)
            .map(|(_, _, id)| id.to_string())
            .collect();
        // Every acknowledged message is there exactly once, and in the order it was acknowledged
        // per sender (each sender waits for its ack before sending again).
        for id in &mine {
            assert_eq!(
                logged.iter().filter(|l| *l == id).count(),
                1,
                "acknowledged {id} appears once"
            );
        }
        for sender in 0..6 {
            let positions: Vec<usize> = acked
                .iter()
                .filter(|(index, p, _)| *index == sender && p == pid)
                .map(|(_, _, id)| logged.iter().position(|l| *l == id.to_string()).expect("logged"))
                .collect();
            assert!(
                positions.windows(2).all(|w| w[0] < w[1]),
                "sender {sender}'s messages keep their order"
            );
        }
        let mut unique = logged.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), logged.len(), "no message twice");
        // The recovered state is the replay of the log: one increment per logged message.
        assert_eq!(
            counter_value(&client, *pid),
            logged.len() as u64,
            "state equals replay of the log"
        );
    }
    // And it keeps going.
    let id = client.send(pids[0], &[Tag::new("Action", "Increment")], b"").unwrap();
    assert!(client.result(pids[0], id).unwrap()["Error"].is_null());
}

fn balls(client: &Client, pid: ProcessId) -> Vec<u64> {
    timeline(client, pid)
        .iter()
        .filter(|edge| {
            edge["node"]["message"]["tags"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t["name"] == "Action" && t["value"] == "Ball")
        })
        .map(|edge| tag_of(&edge["node"]["message"], "Remaining").parse().unwrap())
        .collect()
}

#[test]
fn rally_killed_midway_finishes_with_every_hop_exactly_once() {
    let hops: u64 = 400;
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(BINARY, dir.path());
    let client = node.client();
    let module = load_sample(&client, "pingpong", &[]);
    let ping = spawn(&client, &node, module);
    let pong = spawn(&client, &node, module);
    client
        .send(
            ping,
            &[
                Tag::new("Action", "Serve"),
                Tag::new("Peer", pong.to_string()),
                Tag::new("Count", hops.to_string()),
            ],
            b"",
        )
        .unwrap();
    // Kill once the rally is under way but far from over.
    wait_until("the rally to start", || {
        balls(&client, pong).len() + balls(&client, ping).len() >= 20
    });
    node.kill();

    let node = Node::start(BINARY, dir.path());
    let client = node.client();
    wait_until("the rally to finish", || {
        client.get("/health").unwrap()["backlog"] == 0
            && balls(&client, ping).len() + balls(&client, pong).len() > hops as usize
    });
    let mut seen: Vec<u64> = balls(&client, ping).into_iter().chain(balls(&client, pong)).collect();
    seen.sort_unstable();
    let expected: Vec<u64> = (0..=hops).collect();
    assert_eq!(seen, expected, "every hop delivered exactly once");
    for pid in [ping, pong] {
        check_timeline(&timeline(&client, pid), pid, node.address);
    }
}

#[test]
fn sigterm_stops_cleanly_and_keeps_every_acknowledged_message() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(BINARY, dir.path());
    let client = node.client();
    let pid = spawn(&client, &node, load_sample(&client, "counter", &[]));
    let sent: Vec<MessageId> = (0..20)
        .map(|_| client.send(pid, &[Tag::new("Action", "Increment")], b"").unwrap())
        .collect();
    let status = node.terminate();
    assert!(status.success(), "exit status {status:?}");
    let node = Node::start(BINARY, dir.path());
    let client = node.client();
    let edges = timeline(&client, pid);
    assert_eq!(edges.len(), 21);
    for id in sent {
        assert!(edges.iter().any(|e| e["node"]["message"]["id"] == id.to_string()));
    }
    assert_eq!(counter_value(&client, pid), 20);
}
