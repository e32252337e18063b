//! Cron against a real node: a monitored process's ticks run as time passes and their outbox
//! is delivered exactly once, across a SIGKILL (the monitored set and the deliveries survive);
//! `/cron` pages the tick results; monitoring stops on DELETE.

use scheduler::tags::Tag;
use scheduler::ProcessId;
use tests::{load_sample, spawn, wait_until, Node};

const BINARY: &str = env!("CARGO_BIN_EXE_hewitt-under-test");

/// The balls the pingpong process `pid` has received (its Output, read by a dry run).
fn received(client: &engine::client::Client, pid: ProcessId) -> u64 {
    let answer = client.dry_run(pid, &[Tag::new("Action", "Look")], "").expect("dry run");
    answer["Output"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("count in {answer}"))
}

/// Every cron result of `pid`, following `/cron` pages.
fn cron_results(client: &engine::client::Client, pid: ProcessId) -> Vec<serde_json::Value> {
    let mut edges = Vec::new();
    let mut from = String::new();
    loop {
        let page = client
            .get(&format!("/cron/{pid}?limit=7&from={from}"))
            .expect("cron page");
        let page_edges = page["edges"].as_array().expect("edges").clone();
        let more = page["pageInfo"]["hasNextPage"].as_bool().expect("hasNextPage");
        if let Some(last) = page_edges.last() {
            from = last["cursor"].as_str().expect("cursor").to_owned();
        }
        edges.extend(page_edges);
        if !more {
            return edges;
        }
    }
}

#[test]
fn monitored_cron_delivers_every_tick_once_across_a_sigkill() {
    let data = tempfile::tempdir().expect("temporary directory");
    let node = Node::start_with(BINARY, data.path(), &["--set", "checkpoint.every_messages=10"]);
    let client = node.client();
    let pingpong = load_sample(&client, "pingpong", &[]);
    let peer = spawn(&client, &node, pingpong);
    // Every second, the server sends the peer one ball (Remaining 0: no reply).
    let tags = [
        Tag::new("Cron-Interval", "1-second"),
        Tag::new("Cron-Tag-Action", "Serve"),
        Tag::new("Cron-Tag-Peer", peer.to_string()),
        Tag::new("Cron-Tag-Count", "0"),
    ];
    let server = client
        .spawn(pingpong, node.address, &tags, b"")
        .expect("spawn the cron process");
    let answer = client.monitor(server, true).expect("monitor");
    assert_eq!(answer["message"], "Process monitored", "{answer}");
    // Saving the monitored set again and again works (each save takes the lock in turn).
    client.monitor(server, false).expect("unmonitor");
    client.monitor(server, true).expect("monitor again");
    // Past a few renewals of the cron lease (saved 5 s ahead, renewed 2 s before it runs out).
    wait_until("seven ticks delivered", || received(&client, peer) >= 7);
    node.kill();

    // The monitored set is restored: ticks go on without a new monitor request.
    let node = Node::start_with(BINARY, data.path(), &["--set", "checkpoint.every_messages=10"]);
    let client = node.client();
    let before = received(&client, peer);
    wait_until("ticks after the restart", || received(&client, peer) >= before + 2);
    let answer = client.monitor(server, false).expect("unmonitor");
    assert_eq!(answer["message"], "Process unmonitored", "{answer}");

    // A /cron read evaluates the server up to now; once its last balls are delivered, the peer
    // has exactly one per tick: none lost to the kill, none delivered twice by the replay.
    let ticks = cron_results(&client, server);
    assert!(ticks.len() >= 4, "{} ticks", ticks.len());
    let mut cursors: Vec<u64> = Vec::new();
    for edge in &ticks {
        let (time, cron) = edge["cursor"]
            .as_str()
            .expect("cursor")
            .split_once(',')
            .expect("time,cron");
        assert_eq!(cron, "0");
        let time: u64 = time.parse().expect("time");
        assert_eq!(time % 1000, 0, "ticks fall on whole seconds");
        cursors.push(time);
        assert_eq!(edge["node"]["Messages"].as_array().map(Vec::len), Some(1), "{edge}");
        assert!(edge["node"].get("Error").is_none(), "{edge}");
    }
    assert!(
        cursors.windows(2).all(|w| w[1] == w[0] + 1000),
        "one tick per second, none missing: {cursors:?}"
    );
    let n = ticks.len() as u64;
    wait_until("every tick's ball delivered", || received(&client, peer) >= n);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(received(&client, peer), n, "exactly one ball per tick");
    let metrics = String::from_utf8(client.get_bytes("/metrics").expect("metrics")).expect("UTF-8");
    assert!(metrics.contains("hewitt_cron_ticks_total"), "cron ticks in /metrics");

    // Bad requests: an unsigned body, an item for another process, a cursor that is not one.
    let other = client.signer().sign(Some(peer.0), None, Vec::new(), b" ".to_vec());
    let wrong = ureq::post(&format!("{}/monitor/{server}", node.url)).send_bytes(&other.to_bytes());
    assert!(matches!(wrong, Err(ureq::Error::Status(400, _))));
    let garbage = ureq::post(&format!("{}/monitor/{server}", node.url)).send_bytes(b"not an item");
    assert!(matches!(garbage, Err(ureq::Error::Status(400, _))));
    let bad_cursor = client
        .get(&format!("/cron/{server}?from=yesterday"))
        .expect_err("bad cursor");
    assert_eq!(bad_cursor.status(), Some(400));
}
