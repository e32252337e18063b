//! End to end against a real `hewitt` process: load module → spawn → message → result over HTTP
//! with both signature types, AO's JSON shapes, the SU and CU reads, misbehaving processes.

use engine::client::Client;
use scheduler::signer::Signer;
use scheduler::tags::Tag;
use scheduler::MessageId;
use serde_json::Value;
use tests::{check_timeline, load_sample, spawn, tag_of, timeline, Node};

const BINARY: &str = env!("CARGO_BIN_EXE_hewitt-under-test");

fn rsa_signer() -> Signer {
    use std::sync::OnceLock;
    static KEY: OnceLock<serde_json::Value> = OnceLock::new();
    let jwk = KEY.get_or_init(|| Signer::generate_rsa().to_jwk());
    Signer::from_jwk(jwk).expect("load RSA JWK")
}

fn action(name: &str) -> Vec<Tag> {
    vec![Tag::new("Action", name)]
}

fn check_item_shape(item: &Value, with_data: bool) {
    for key in ["id", "owner", "tags", "signature", "anchor", "target"] {
        assert!(item.get(key).is_some(), "item lacks {key}: {item}");
    }
    assert!(item["owner"]["address"].is_string() && item["owner"]["key"].is_string());
    assert_eq!(item.get("data").is_some(), with_data, "{item}");
}

#[test]
fn load_spawn_message_result_with_both_signature_types() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(BINARY, dir.path());
    for (kind, signer) in [("ed25519", Signer::generate_ed25519()), ("rsa", rsa_signer())] {
        let client = Client::new(&node.url, signer);
        let module = load_sample(&client, "counter", &[]);
        let pid = spawn(&client, &node, module);
        let mut last = Value::Null;
        for _ in 0..3 {
            let id = client
                .send(pid, &action("Increment"), b"")
                .unwrap_or_else(|e| panic!("{kind}: {e}"));
            last = client.result(pid, id).unwrap();
        }
        assert_eq!(last["Output"], "3", "{kind}: {last}");
        for key in ["Messages", "Spawns", "Assignments"] {
            assert!(last[key].is_array(), "{kind}: {key} in {last}");
        }
        assert!(last["GasUsed"].as_u64().unwrap() > 0);
        assert!(last.get("Error").is_none());

        // SU reads: the timeline holds the process then three messages, chained.
        let edges = timeline(&client, pid);
        assert_eq!(edges.len(), 4);
        check_timeline(&edges, pid, node.address);
        check_item_shape(&edges[1]["node"]["message"], true);
        check_item_shape(&edges[1]["node"]["assignment"], false);
        assert_eq!(edges[0]["node"]["message"]["id"], pid.to_string());
        let message_id = edges[2]["node"]["message"]["id"].as_str().unwrap().to_owned();
        let one = client.get(&format!("/{message_id}?process-id={pid}")).unwrap();
        assert_eq!(one["message"]["id"], message_id);
        assert_eq!(tag_of(&one["assignment"], "Message"), message_id);
        assert_eq!(tag_of(&one["assignment"], "Type"), "Assignment");
        let latest = client.get(&format!("/{pid}/latest")).unwrap();
        assert_eq!(tag_of(&latest["assignment"], "Nonce"), "3");
        let process = client.get(&format!("/processes/{pid}")).unwrap();
        assert_eq!(process["process_id"], pid.to_string());
        assert_eq!(
            process["owner"]["address"],
            client.signer().address().to_string(),
            "{kind}"
        );

        // A dry run sees the state and changes nothing: not the memory, not the log.
        let memory = client.get_bytes(&format!("/state/{pid}")).unwrap();
        assert!(memory.len() >= 65536 && memory.len().is_multiple_of(65536));
        let dry = client.dry_run(pid, &action("Increment"), "").unwrap();
        assert_eq!(dry["Output"], "4");
        let dry = client.dry_run(pid, &action("Fail"), "").unwrap();
        assert!(dry["Error"].is_string(), "{dry}");
        let dry = client.dry_run(pid, &action("Get"), "").unwrap();
        assert_eq!(dry["Output"], "3");
        assert_eq!(timeline(&client, pid).len(), 4, "dry runs are not logged");
        assert!(
            client.get_bytes(&format!("/state/{pid}")).unwrap() == memory,
            "dry runs leave the live memory as it was"
        );
    }
    // POST / answers the assignment's timestamp.
    let client = node.client();
    let pid = spawn(&client, &node, load_sample(&client, "counter", &[]));
    let item = client.message_item(pid, &action("Increment"), b"");
    let answer = client.post_item(&item).unwrap();
    let one = client.get(&format!("/{}?process-id={pid}", item.id())).unwrap();
    assert_eq!(answer["timestamp"].to_string(), tag_of(&one["assignment"], "Timestamp"));
    let root = node.client().get("/").unwrap();
    assert_eq!(root["address"], node.address.to_string());
    assert!(root["timestamp"].as_str().unwrap().parse::<u64>().is_ok(), "{root}");
    let now = node.client().get("/timestamp").unwrap();
    assert_eq!(now["block_height"].as_str().unwrap().len(), 12);
    assert!(now["timestamp"].as_str().unwrap().parse::<u64>().is_ok());
}

#[test]
fn timeline_ranges_follow_ao_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(BINARY, dir.path());
    let client = node.client();
    let module = load_sample(&client, "counter", &[]);
    let pid = spawn(&client, &node, module);
    for _ in 0..10 {
        client.send(pid, &action("Increment"), b"").unwrap();
    }
    let nonces = |path: &str| -> (Vec<String>, bool) {
        let page = client.get(&format!("/{pid}?process-id={pid}&{path}")).unwrap();
        let nonces = page["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| tag_of(&e["node"]["assignment"], "Nonce"))
            .collect();
        (nonces, page["page_info"]["has_next_page"].as_bool().unwrap())
    };
    assert_eq!(
        nonces("from-nonce=2&to-nonce=5"),
        (vec!["3".into(), "4".into(), "5".into()], false)
    );
    assert_eq!(
        nonces("from-nonce=2&to-nonce=5&limit=2"),
        (vec!["3".into(), "4".into()], true)
    );
    assert_eq!(nonces("limit=3").0, vec!["0", "1", "2"]);
    let all = timeline(&client, pid);
    let cursor = all[6]["cursor"].as_str().unwrap();
    let (after, _) = nonces(&format!("from={cursor}"));
    assert!(after
        .iter()
        .all(|n| n.parse::<u64>().unwrap() > 6 || tag_time(&all, n) > cursor.parse::<u64>().unwrap()));
}

fn tag_time(edges: &[Value], nonce: &str) -> u64 {
    let edge = edges
        .iter()
        .find(|e| tag_of(&e["node"]["assignment"], "Nonce") == nonce)
        .unwrap();
    tag_of(&edge["node"]["assignment"], "Timestamp").parse().unwrap()
}

#[test]
fn misbehaving_processes_get_errors_and_harm_no_one() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(BINARY, dir.path());
    let client = node.client();
    let counter = spawn(&client, &node, load_sample(&client, "counter", &[]));
    let trap = spawn(&client, &node, load_sample(&client, "trap", &[]));
    let looping = spawn(
        &client,
        &node,
        load_sample(&client, "loop", &[Tag::new("Compute-Limit", "20000000")]),
    );
    let hog = spawn(
        &client,
        &node,
        load_sample(&client, "memhog", &[Tag::new("Memory-Limit", "8-mb")]),
    );
    let send = |pid, name: &str| {
        let id = client.send(pid, &action(name), b"").unwrap();
        client.result(pid, id).unwrap()
    };
    send(counter, "Increment");
    for (pid, name) in [(trap, "Trap"), (looping, "Loop"), (hog, "Grow")] {
        let result = send(pid, name);
        assert!(result["Error"].is_string(), "{name}: {result}");
        // The process itself lives on: its next ordinary message works.
        assert_eq!(send(pid, "Ping")["Output"], "ok", "{name}");
    }
    let failed = send(counter, "Fail");
    assert!(failed["Error"].is_string(), "{failed}");
    assert_eq!(
        send(counter, "Increment")["Output"],
        "2",
        "the failed message was rolled back"
    );
}

#[test]
fn bad_input_gets_clear_4xx_and_the_node_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(BINARY, dir.path());
    let client = node.client();
    let module = load_sample(&client, "counter", &[]);
    let pid = spawn(&client, &node, module);
    let good = client.message_item(pid, &action("Increment"), b"");
    let bytes = good.to_bytes();
    let status_of = |body: &[u8]| -> (u16, String) {
        match client.post_bytes(body) {
            Ok(answer) => panic!("accepted bad input: {answer}"),
            Err(error) => (error.status().unwrap_or(0), error.to_string()),
        }
    };
    let mut cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("empty", vec![], 400, "invalid data item"),
        ("truncated", bytes[..bytes.len() / 2].to_vec(), 400, "invalid data item"),
        (
            "garbled type",
            {
                let mut b = bytes.clone();
                b[0] = 0xff;
                b
            },
            400,
            "invalid data item",
        ),
    ];
    let mut tampered = good.clone();
    tampered.data = b"changed".to_vec();
    cases.push(("wrong signature", tampered.to_bytes(), 400, "invalid signature"));
    let stranger = client.message_item(scheduler::ProcessId([7; 32]), &action("Increment"), b"");
    cases.push(("unknown process", stranger.to_bytes(), 404, "not on this node"));
    let orphan = client.signer().sign(
        None,
        None,
        vec![
            Tag::new("Data-Protocol", "ao"),
            Tag::new("Type", "Process"),
            Tag::new("Module", scheduler::ModuleId([9; 32]).to_string()),
            Tag::new("Scheduler", node.address.to_string()),
        ],
        vec![],
    );
    cases.push(("unknown module", orphan.to_bytes(), 404, "not loaded"));
    let untyped = client
        .signer()
        .sign(Some(pid.0), None, vec![Tag::new("Action", "x")], vec![]);
    cases.push(("missing Type", untyped.to_bytes(), 400, "no Type tag"));
    let moduleless = client.signer().sign(
        None,
        None,
        vec![
            Tag::new("Type", "Process"),
            Tag::new("Scheduler", node.address.to_string()),
        ],
        vec![],
    );
    cases.push(("missing Module", moduleless.to_bytes(), 400, "no Module tag"));
    let forged = client.message_item(pid, &[Tag::new("From-Process", pid.to_string())], b"");
    cases.push(("forged From-Process", forged.to_bytes(), 400, "set by the messenger"));
    let bad_wasm = client.signer().sign(
        None,
        None,
        vec![
            Tag::new("Type", "Module"),
            Tag::new("Module-Format", "wasm32-unknown-unknown"),
        ],
        b"not wasm".to_vec(),
    );
    cases.push(("module that is not wasm", bad_wasm.to_bytes(), 400, "module"));
    cases.push(("oversized body", vec![0u8; 11 << 20], 413, "exceeds"));
    for (name, body, status, words) in cases {
        let (got, message) = status_of(&body);
        assert_eq!(got, status, "{name}: {message}");
        assert!(message.contains(words), "{name}: {message:?} should mention {words:?}");
        assert!(message.contains("\"error\""), "{name}: errors are JSON: {message}");
    }
    // Duplicate: the same signed item twice.
    client.post_item(&good).unwrap();
    assert_eq!(client.post_item(&good).unwrap_err().status(), Some(409));
    assert_eq!(client.get("/nope/at/all").unwrap_err().status(), Some(404));
    let id = client.send(pid, &action("Increment"), b"").unwrap();
    assert_eq!(client.result(pid, id).unwrap()["Output"], "2", "still serving");
    let missing = MessageId([3; 32]);
    assert_eq!(client.result(pid, missing).unwrap_err().status(), Some(404));
}

#[test]
fn ping_pong_pair_rallies_through_the_messenger() {
    let hops: u64 = 50;
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(BINARY, dir.path());
    let client = node.client();
    let module = load_sample(&client, "pingpong", &[]);
    let ping = spawn(&client, &node, module);
    let pong = spawn(&client, &node, module);
    let serve = vec![
        Tag::new("Action", "Serve"),
        Tag::new("Peer", pong.to_string()),
        Tag::new("Count", hops.to_string()),
    ];
    let id = client.send(ping, &serve, b"").unwrap();
    assert_eq!(
        client.result(ping, id).unwrap()["Messages"].as_array().unwrap().len(),
        1
    );
    // The last hop (Remaining 0) lands on pong when hops is even; wait for it through /result.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let (ping_edges, pong_edges) = loop {
        let (a, b) = (timeline(&client, ping), timeline(&client, pong));
        if a.len() + b.len() >= 2 + 1 + (hops as usize + 1) && client.get("/health").unwrap()["backlog"] == 0 {
            break (a, b);
        }
        assert!(std::time::Instant::now() < deadline, "rally did not finish");
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    check_timeline(&ping_edges, ping, node.address);
    check_timeline(&pong_edges, pong, node.address);
    let mut remaining: Vec<u64> = ping_edges
        .iter()
        .chain(&pong_edges)
        .map(|e| &e["node"]["message"])
        .filter(|m| {
            m["tags"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t["name"] == "Action" && t["value"] == "Ball")
        })
        .map(|m| {
            assert_eq!(tag_of(m, "Type"), "Message");
            assert!([ping.to_string(), pong.to_string()].contains(&tag_of(m, "From-Process")));
            tag_of(m, "Remaining").parse().unwrap()
        })
        .collect();
    remaining.sort_unstable();
    assert_eq!(
        remaining,
        (0..=hops).collect::<Vec<_>>(),
        "each hop assigned exactly once"
    );
    let last = pong_edges.last().unwrap();
    let id: MessageId = last["node"]["message"]["id"].as_str().unwrap().parse().unwrap();
    let result = client.result(pong, id).unwrap();
    assert_eq!(
        result["Output"],
        (hops / 2 + 1).to_string(),
        "pong received every other ball: {result}"
    );
}

#[test]
fn a_process_spawns_a_child_and_hears_back() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(BINARY, dir.path());
    let client = node.client();
    let module = load_sample(&client, "spawner", &[]);
    let parent = spawn(&client, &node, module);
    let id = client.send(parent, &action("Spawn-Child"), b"").unwrap();
    assert_eq!(
        client.result(parent, id).unwrap()["Spawns"].as_array().unwrap().len(),
        1
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let notice = loop {
        let edges = timeline(&client, parent);
        if let Some(edge) = edges.iter().find(|e| {
            e["node"]["message"]["tags"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t["value"] == "Spawned")
        }) {
            break edge["node"]["message"].clone();
        }
        assert!(std::time::Instant::now() < deadline, "no Spawned notice");
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    let child: scheduler::ProcessId = tag_of(&notice, "Process").parse().unwrap();
    let process = client.get(&format!("/processes/{child}")).unwrap();
    assert_eq!(tag_of(&process, "From-Process"), parent.to_string());
    assert_eq!(tag_of(&process, "Module"), module.to_string());
    let notice_id: MessageId = notice["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(client.result(parent, notice_id).unwrap()["Output"], child.to_string());
}

#[test]
fn a_message_of_several_mebibytes_is_logged_and_evaluated() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(BINARY, dir.path());
    let client = node.client();
    let pid = spawn(&client, &node, load_sample(&client, "counter", &[]));
    let data = vec![b'x'; 6 << 20];
    let id = client.send(pid, &action("Increment"), &data).unwrap();
    assert_eq!(client.result(pid, id).unwrap()["Output"], "1");
    let one = client.get(&format!("/{id}?process-id={pid}")).unwrap();
    assert_eq!(one["message"]["data"].as_str().unwrap().len(), data.len());
}

#[test]
fn a_relative_data_dir_works() {
    let cwd = tempfile::tempdir().unwrap();
    let node = Node::start_in(BINARY, cwd.path(), std::path::Path::new("data/node"));
    let client = node.client();
    let pid = spawn(&client, &node, load_sample(&client, "counter", &[]));
    let id = client.send(pid, &action("Increment"), b"").unwrap();
    assert_eq!(client.result(pid, id).unwrap()["Output"], "1");
    assert!(cwd.path().join("data/node/log/FORMAT").exists());
}

/// The `assign` flow over HTTP (with `exclude`) and a process's own `Assignments`, then a
/// SIGKILL: both assignments are read back, replay to the same results, show in the SU as AO's
/// does (no message, the assignment's `Message` and `Exclude` tags), and `hewitt log verify`
/// accepts the log.
#[test]
fn assigned_messages_survive_a_restart() {
    let data = tempfile::tempdir().expect("temporary directory");
    let node = Node::start(BINARY, data.path());
    let client = node.client();
    let echo = load_sample(&client, "echo", &[]);
    let (a, b) = (spawn(&client, &node, echo), spawn(&client, &node, echo));
    let first = client.send(a, &action("Note"), b"payload").expect("send");
    let answer = client.assign(b, first, &["Data", "Anchor"]).expect("assign");
    assert_eq!(answer["message"], "Processing Assignment", "{answer}");
    let assignment_id = answer["id"].as_str().expect("assignment id").to_owned();
    let again = client
        .assign(b, first, &[])
        .expect_err("a second assignment is refused");
    assert_eq!(again.status(), Some(409), "{again}");
    let tags = vec![Tag::new("Action", "Assign"), Tag::new("Assign-To", b.to_string())];
    let second = client.send(a, &tags, b"two").expect("send");
    tests::wait_until("the process's own assignment", || client.result(b, second).is_ok());
    let outputs = |client: &Client| {
        [
            client.result(b, first).expect("result of the assigned message")["Output"].clone(),
            client.result(b, second).expect("result of the process's assignment")["Output"].clone(),
        ]
    };
    let before = outputs(&client);
    assert!(
        before[0].get("Data").is_none() && before[0].get("Anchor").is_none(),
        "{}",
        before[0]
    );
    assert_eq!(before[0]["Id"], first.to_string());
    assert_eq!(before[1]["Data"], "two");
    node.kill();

    let node = Node::start(BINARY, data.path());
    let client = node.client();
    assert_eq!(outputs(&client), before, "replayed to the same results");
    let edges = timeline(&client, b);
    assert_eq!(edges.len(), 3);
    check_timeline(&edges, b, node.address);
    let assignment = &edges[1]["node"]["assignment"];
    assert!(edges[1]["node"]["message"].is_null(), "{}", edges[1]);
    assert_eq!(assignment["id"], assignment_id.as_str());
    assert_eq!(tag_of(assignment, "Message"), first.to_string());
    let excluded: Vec<&str> = assignment["tags"]
        .as_array()
        .expect("tags")
        .iter()
        .filter(|t| t["name"] == "Exclude")
        .filter_map(|t| t["value"].as_str())
        .collect();
    assert_eq!(excluded, ["Data", "Anchor"]);
    assert_eq!(tag_of(&edges[2]["node"]["assignment"], "Message"), second.to_string());
    node.terminate();

    tests::assert_log_verifies(BINARY, data.path());
}

/// Only this node's messenger and the configured trusted nodes may push on behalf of a process:
/// a trusted node's items carry `From-Process` (and `Forwarded-By`), and the process sees them
/// as `From` and `Forwarded-By`; the same tags from anyone else are refused with a 400.
#[test]
fn only_trusted_nodes_may_set_the_messengers_tags() {
    let data = tempfile::tempdir().expect("temporary directory");
    let peer = Signer::generate_ed25519();
    let peer_address = peer.address();
    let mut command = std::process::Command::new(BINARY);
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path())
        .env("HEWITT_AO_TRUSTED_NODES", peer_address.to_string());
    let node = Node::launch(command, data.path());
    let client = node.client();
    let echo = load_sample(&client, "echo", &[]);
    let pid = spawn(&client, &node, echo);
    let sender = scheduler::ProcessId([5; 32]).to_string();
    let relay = Signer::generate_ed25519().address().to_string();
    let pushed = vec![Tag::new("Action", "Note"), Tag::new("From-Process", sender.as_str())];
    let relayed = [pushed.clone(), vec![Tag::new("Forwarded-By", relay.as_str())]].concat();

    for tags in [&pushed, &relayed] {
        let refused = client
            .send(pid, tags, b"")
            .expect_err("a client cannot push as a process");
        assert_eq!(refused.status(), Some(400), "{refused}");
        assert!(refused.to_string().contains("From-Process"), "{refused}");
    }
    let trusted = Client::new(&node.url, peer);
    let id = trusted.send(pid, &pushed, b"").expect("a trusted node pushes");
    let seen = trusted.result(pid, id).expect("result")["Output"].clone();
    assert_eq!(seen["From"], sender.as_str(), "{seen}");
    assert_eq!(seen["Owner"], peer_address.to_string());
    assert_eq!(seen["Forwarded-By"], peer_address.to_string(), "the pushing node");
    let id = trusted.send(pid, &relayed, b"").expect("a trusted node forwards");
    let seen = trusted.result(pid, id).expect("result")["Output"].clone();
    assert_eq!(seen["Forwarded-By"], relay.as_str(), "the node named by Forwarded-By");
    // A message from a client is its own: From is the signer, nothing forwarded it.
    let id = client.send(pid, &action("Note"), b"").expect("send");
    let seen = client.result(pid, id).expect("result")["Output"].clone();
    assert_eq!(seen["From"], client.signer().address().to_string());
    assert!(seen["Forwarded-By"].is_null(), "{seen}");
}

#[test]
fn pages_stop_at_their_byte_bound_and_say_there_is_more() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(BINARY, dir.path());
    let client = node.client();
    let module = load_sample(&client, "echo", &[]);
    let pid = spawn(&client, &node, module);
    // Three messages of 7 MiB after the spawn: two fit a page's 16 MiB, the third would not.
    let data = vec![b'a'; 7 << 20];
    for _ in 0..3 {
        client.send(pid, &action("Echo"), &data).unwrap();
    }
    let nonces = |page: &Value| -> Vec<String> {
        page["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| tag_of(&e["node"]["assignment"], "Nonce"))
            .collect()
    };
    let first = client.get(&format!("/{pid}?process-id={pid}&limit=100")).unwrap();
    assert_eq!(nonces(&first), ["0", "1", "2"]);
    assert_eq!(first["page_info"]["has_next_page"], true, "cut by bytes, not by limit");
    let rest = client
        .get(&format!("/{pid}?process-id={pid}&from-nonce=2&limit=100"))
        .unwrap();
    assert_eq!(nonces(&rest), ["3"]);
    assert_eq!(rest["page_info"]["has_next_page"], false);
    assert_eq!(
        rest["edges"][0]["node"]["message"]["data"].as_str().map(str::len),
        Some(7 << 20),
        "a page's one entry is whole, whatever its size"
    );
    // The echo's results carry each message whole: the same cut there.
    let results = |path: &str| client.get(&format!("/results/{pid}?limit=100{path}")).unwrap();
    tests::wait_until("four results", || {
        results("&sort=DESC")["edges"]
            .as_array()
            .is_some_and(|e| e.first().is_some_and(|e| e["cursor"] == "3"))
    });
    let first = results("");
    assert_eq!(tests::cursors(&first), ["0", "1", "2"]);
    assert_eq!(first["pageInfo"]["hasNextPage"], true);
    let rest = results("&from=2");
    assert_eq!(rest["edges"].as_array().unwrap().len(), 1);
    assert_eq!(rest["pageInfo"]["hasNextPage"], false);
}
