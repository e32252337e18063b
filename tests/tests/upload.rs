//! Uploads to a bundler (a stub on loopback that fails some requests): every module, process,
//! message and assignment the log holds reaches it, in ANS-104 bundles the stub unpacks, across
//! a SIGKILL while traffic and uploads flow; the node's Scheduler-Location is published, signed
//! by the node.

use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use scheduler::tags::Tag;
use scheduler::DataItem;
use tests::stub::{StubAnswer, StubServer};
use tests::{load_sample, spawn, tag_of, timeline, wait_until, Node};

const BINARY: &str = env!("CARGO_BIN_EXE_hewitt-under-test");
const PUBLIC_URL: &str = "http://hewitt.example:8734";

#[test]
fn every_logged_item_reaches_the_bundler_across_a_sigkill() {
    let received: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let locations: Arc<Mutex<Vec<DataItem>>> = Arc::default();
    let requests = Arc::new(AtomicUsize::new(0));
    let answered = Arc::new(AtomicUsize::new(0));
    // Most items one accepted bundle carried.
    let largest = Arc::new(AtomicUsize::new(0));
    let stub = {
        let (received, locations, requests) = (Arc::clone(&received), Arc::clone(&locations), Arc::clone(&requests));
        let (answered, largest) = (Arc::clone(&answered), Arc::clone(&largest));
        StubServer::start(move |request| {
            if request.method != "POST" || request.path != "/tx/arweave" {
                return StubAnswer::Respond(404, b"{\"error\":\"no such route\"}".to_vec());
            }
            // Faults: one request in 13 is answered 503, one in 29 is dropped unanswered (the
            // second and third requests among them, so that even a short run meets both).
            let n = requests.fetch_add(1, Ordering::SeqCst);
            if n % 13 == 1 {
                return StubAnswer::Respond(503, b"{\"error\":\"busy\"}".to_vec());
            }
            if n % 29 == 2 {
                return StubAnswer::Hang;
            }
            let item = match DataItem::parse(&request.body) {
                Ok(item) if item.verify().is_ok() => item,
                _ => return StubAnswer::Respond(400, b"{\"error\":\"invalid data item\"}".to_vec()),
            };
            let id = item.id().to_string();
            if item.tag("Type") == Some("Scheduler-Location") {
                locations.lock().unwrap().push(item.clone());
            }
            // A bundle (the node's log items): every item inside must parse, match its id in the
            // header and verify.
            let mut inner = Vec::new();
            if item.tag("Bundle-Format") == Some("binary") {
                match scheduler::bundle::decode(&item.data) {
                    Ok(items) if items.iter().all(|i| i.verify().is_ok()) => inner = items,
                    _ => return StubAnswer::Respond(400, b"{\"error\":\"invalid bundle\"}".to_vec()),
                }
            }
            largest.fetch_max(inner.len(), Ordering::SeqCst);
            let mut received = received.lock().unwrap();
            *received.entry(id.clone()).or_default() += 1;
            for inner in inner {
                *received.entry(inner.id().to_string()).or_default() += 1;
            }
            answered.fetch_add(1, Ordering::SeqCst);
            StubAnswer::Respond(200, format!("{{\"id\":\"{id}\"}}").into_bytes())
        })
    };
    let data = tempfile::tempdir().expect("temporary directory");
    let start = || {
        let mut command = Command::new(BINARY);
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data.path())
            .env("HEWITT_ARWEAVE_BUNDLER_URL", &stub.url)
            .env("HEWITT_AO_PUBLIC_URL", PUBLIC_URL);
        Node::launch(command, data.path())
    };

    let node = start();
    let client = node.client();
    let counter = load_sample(&client, "counter", &[]);
    let processes: Vec<_> = (0..4).map(|_| spawn(&client, &node, counter)).collect();
    // Traffic from a second thread until the node is killed under it.
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let (stop, processes, url) = (Arc::clone(&stop), processes.clone(), node.url.clone());
        std::thread::spawn(move || {
            let client = engine::client::Client::new(&url, scheduler::signer::Signer::generate_ed25519());
            let mut sent = 0usize;
            while !stop.load(Ordering::SeqCst) {
                let pid = processes[sent % processes.len()];
                if client.send(pid, &[Tag::new("Action", "Increment")], b"").is_err() {
                    break;
                }
                sent += 1;
            }
            sent
        })
    };
    wait_until("uploads under way", || received.lock().unwrap().len() > 40);
    node.kill();
    stop.store(true, Ordering::SeqCst);
    let sent_before = sender.join().expect("sender thread");
    assert!(
        sent_before > 10,
        "traffic flowed before the kill ({sent_before} messages)"
    );

    let node = start();
    let client = node.client();
    for pid in &processes {
        client
            .send(*pid, &[Tag::new("Action", "Increment")], b"")
            .expect("send after the restart");
    }
    let mut expected: HashSet<String> = HashSet::from([counter.to_string()]);
    for pid in &processes {
        for edge in timeline(&client, *pid) {
            let node = &edge["node"];
            expected.insert(node["assignment"]["id"].as_str().expect("assignment id").to_owned());
            let message = if node["message"].is_null() {
                tag_of(&node["assignment"], "Process") // nonce 0: the process itself
            } else {
                node["message"]["id"].as_str().expect("message id").to_owned()
            };
            expected.insert(message);
        }
    }
    assert!(expected.len() > 4 * 2 + sent_before, "{} ids expected", expected.len());
    wait_until("every logged item uploaded", || {
        let received = received.lock().unwrap();
        expected.iter().all(|id| received.contains_key(id))
    });
    // Once idle, the uploader saves how far it got, so a restart does not upload everything again.
    let cursor = data.path().join("upload/cursor");
    wait_until("the upload cursor saved", || {
        std::fs::read(&cursor).is_ok_and(|bytes| bytes.len() == 12 && bytes[..8] != [0; 8])
    });
    let requests = requests.load(Ordering::SeqCst);
    let answered = answered.load(Ordering::SeqCst);
    assert!(
        requests >= answered + 2,
        "the stub failed requests ({requests} for {answered} accepted), so some were retried"
    );
    // Items travel in bundles, many to a request. How many depends on how fast traffic came
    // (the uploader sends what was logged since its last turn), so the bounds are loose: each
    // record is two items (message and assignment), and traffic outpaces the uploader's 20 ms
    // turns, so some bundle carries several records and the average is well above one record.
    let largest = largest.load(Ordering::SeqCst);
    assert!(largest > 4, "the largest bundle carried {largest} items");
    assert!(
        answered * 3 < expected.len(),
        "bundles: {answered} requests carried {} items",
        expected.len()
    );

    let locations = locations.lock().unwrap();
    assert!(locations.len() >= 2, "published at each start");
    for location in locations.iter() {
        assert_eq!(location.owner_address(), node.address, "signed by the node's key");
        assert_eq!(location.tag("Url"), Some(PUBLIC_URL));
        assert_eq!(location.tag("Time-To-Live"), Some("86400000"));
        assert_eq!(location.tag("Variant"), Some("ao.TN.1"));
    }
    let metrics = client.get_bytes("/metrics").expect("metrics");
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(metrics.contains("hewitt_uploads_total{"), "upload counters in /metrics");
    assert!(node.terminate().success());

    // A cursor past the end of the log (the log was cut by `hewitt log repair`) starts the
    // uploads over rather than skipping what comes next.
    let past_end = engine::upload::encode_cursor(scheduler::log::Lsn(1 << 40));
    std::fs::write(&cursor, past_end).expect("write the cursor");
    let node = start();
    let client = node.client();
    let id = client
        .send(processes[0], &[Tag::new("Action", "Increment")], b"")
        .expect("send");
    wait_until("the new message uploaded", || {
        received.lock().unwrap().contains_key(&id.to_string())
    });
}

/// Every shard logs the modules clients load (any shard may spawn from them); shard 0 alone
/// uploads them, so the bundler gets each module once.
#[test]
fn a_multi_shard_node_uploads_each_module_once() {
    let received: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let stub = {
        let received = Arc::clone(&received);
        StubServer::start(move |request| {
            let Ok(item) = DataItem::parse(&request.body) else {
                return StubAnswer::Respond(400, b"{\"error\":\"invalid data item\"}".to_vec());
            };
            let inner = scheduler::bundle::decode(&item.data).unwrap_or_default();
            let mut received = received.lock().unwrap();
            for inner in inner {
                *received.entry(inner.id().to_string()).or_default() += 1;
            }
            StubAnswer::Respond(200, format!("{{\"id\":\"{}\"}}", item.id()).into_bytes())
        })
    };
    let data = tempfile::tempdir().expect("temporary directory");
    const SHARDS: usize = 3;
    let mut command = Command::new(BINARY);
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path())
        .env("HEWITT_SHARDS", SHARDS.to_string())
        .env("HEWITT_ARWEAVE_BUNDLER_URL", &stub.url);
    let node = Node::launch(command, data.path());
    let client = node.client();
    let counter = load_sample(&client, "counter", &[]);
    // A process on every shard: each shard's uploader reads the module's record before its
    // process's, so once every process is uploaded every shard has passed the module.
    let mut processes = Vec::new();
    while (0..SHARDS).any(|shard| {
        !processes
            .iter()
            .any(|p| messenger::placement::shard_of(p, SHARDS) == shard)
    }) {
        assert!(processes.len() < 64, "64 processes and a shard without one");
        processes.push(spawn(&client, &node, counter));
    }
    wait_until("every process uploaded", || {
        let received = received.lock().unwrap();
        processes.iter().all(|pid| received.contains_key(&pid.to_string()))
    });
    assert_eq!(
        received.lock().unwrap().get(&counter.to_string()),
        Some(&1),
        "the module uploaded once"
    );
    assert!(node.terminate().success());
}
