//! Modules from an Arweave gateway (a stub on loopback): a spawn naming a module the node does
//! not hold fetches it (GraphQL for owner and tags, /raw for the bytes), and the log keeps it,
//! so a restart needs no gateway. Unknown modules, bad modules and a dead gateway get clear
//! errors and log nothing.

use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use scheduler::tags::Tag;
use scheduler::ModuleId;
use serde_json::{json, Value};
use tests::stub::{StubAnswer, StubServer};
use tests::Node;

const BINARY: &str = env!("CARGO_BIN_EXE_hewitt-under-test");
const OWNER: &str = "vh-NTHVvlKZqRxc8LyyTNok65yQ55a_PJ1zWLb9G2JI";

fn module_tags() -> Value {
    json!([
        {"name": "Data-Protocol", "value": "ao"},
        {"name": "Variant", "value": "ao.TN.1"},
        {"name": "Type", "value": "Module"},
        {"name": "Module-Format", "value": "wasm32-unknown-unknown"},
        {"name": "Memory-Limit", "value": "16-mb"},
        {"name": "Content-Type", "value": "application/wasm"},
    ])
}

/// A gateway holding `modules` (id → bytes); counts the requests it served.
fn gateway(modules: HashMap<String, Vec<u8>>, served: Arc<AtomicUsize>) -> StubServer {
    StubServer::start(move |request| {
        served.fetch_add(1, Ordering::SeqCst);
        match (request.method.as_str(), request.path.as_str()) {
            ("POST", "/graphql") => {
                let query: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
                let edges: Vec<Value> = query["variables"]["ids"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .filter(|id| modules.contains_key(*id))
                    .map(|id| {
                        // One transaction the gateway holds is not a module.
                        let tags = if id == ModuleId([4; 32]).to_string() {
                            json!([{"name": "Type", "value": "Message"}])
                        } else {
                            module_tags()
                        };
                        json!({"node": {"id": id, "owner": {"address": OWNER, "key": "AQAB"}, "tags": tags}})
                    })
                    .collect();
                let answer = json!({"data": {"transactions": {"edges": edges}}});
                StubAnswer::Respond(200, answer.to_string().into_bytes())
            }
            ("GET", path) => match path.strip_prefix("/raw/").and_then(|id| modules.get(id)) {
                Some(bytes) => StubAnswer::Respond(200, bytes.clone()),
                None => StubAnswer::Respond(404, b"not found".to_vec()),
            },
            _ => StubAnswer::Respond(404, b"no route".to_vec()),
        }
    })
}

fn start(data: &std::path::Path, gateway_url: &str) -> Node {
    start_shards(data, gateway_url, 1)
}

fn start_shards(data: &std::path::Path, gateway_url: &str, shards: usize) -> Node {
    let mut command = Command::new(BINARY);
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .env("HEWITT_ARWEAVE_GATEWAY_URL", gateway_url)
        // Each shard fetches a module a client's spawn names that it has not logged itself,
        // and these tests count fetches: one shard unless a test says otherwise.
        .env("HEWITT_SHARDS", shards.to_string());
    Node::launch(command, data)
}

#[test]
fn modules_are_fetched_from_the_gateway_once_and_kept_in_the_log() {
    let (counter, broken, absent) = (ModuleId([1; 32]), ModuleId([2; 32]), ModuleId([3; 32]));
    let modules = HashMap::from([
        (
            counter.to_string(),
            engine::compute::samples::wasm("counter").expect("sample"),
        ),
        (broken.to_string(), b"\0asm but not really".to_vec()),
        (ModuleId([4; 32]).to_string(), b"some message data".to_vec()),
    ]);
    let served = Arc::new(AtomicUsize::new(0));
    let stub = gateway(modules, Arc::clone(&served));
    let data = tempfile::tempdir().expect("temporary directory");
    let node = start(data.path(), &stub.url);
    let client = node.client();

    let pid = client
        .spawn(counter, node.address, &[], b"")
        .expect("spawn from a gateway module");
    let fetches = served.load(Ordering::SeqCst);
    assert_eq!(fetches, 2, "one GraphQL query and one /raw read");
    let second = client
        .spawn(counter, node.address, &[Tag::new("Name", "second")], b"")
        .expect("spawn again");
    assert_eq!(served.load(Ordering::SeqCst), fetches, "held now: not fetched again");
    for (pid, expected) in [(pid, "1"), (pid, "2"), (second, "1")] {
        let id = client.send(pid, &[Tag::new("Action", "Increment")], b"").expect("send");
        assert_eq!(client.result(pid, id).expect("result")["Output"], expected);
    }
    // The node's GraphQL answers for it with what the gateway said.
    let graphql = client
        .post_json(
            "/graphql",
            &json!({"query": "query ($ids: [ID!]!) { transactions(ids: $ids) { edges { node { id owner { address } tags { name value } } } } }", "variables": {"ids": [counter.to_string()]}}),
        )
        .expect("graphql");
    let node_json = &graphql["data"]["transactions"]["edges"][0]["node"];
    assert_eq!(node_json["owner"]["address"], OWNER);
    assert_eq!(node_json["tags"], module_tags());

    // A module the gateway does not know is a 404, one that does not compile a 400.
    let missing = client
        .spawn(absent, node.address, &[], b"")
        .expect_err("unknown module");
    assert_eq!(missing.status(), Some(404), "{missing}");
    assert!(missing.to_string().contains(&absent.to_string()), "{missing}");
    let bad = client
        .spawn(broken, node.address, &[], b"")
        .expect_err("a module that does not compile");
    assert_eq!(bad.status(), Some(400), "{bad}");
    let message = client
        .spawn(ModuleId([4; 32]), node.address, &[], b"")
        .expect_err("not a module");
    assert_eq!(message.status(), Some(422), "{message}");
    // Nothing is fetched for a spawn the node would refuse anyway.
    let before = served.load(Ordering::SeqCst);
    let elsewhere = scheduler::signer::Signer::generate_ed25519().address();
    let refused = client
        .spawn(absent, elsewhere, &[], b"")
        .expect_err("another scheduler");
    assert_eq!(refused.status(), Some(400), "{refused}");
    assert_eq!(served.load(Ordering::SeqCst), before, "no fetch for a refused spawn");
    node.kill();

    // After a restart the module comes from the log: no gateway is needed.
    let node = start(data.path(), "http://127.0.0.1:9");
    let client = node.client();
    let before = served.load(Ordering::SeqCst);
    let id = client
        .send(pid, &[Tag::new("Action", "Increment")], b"")
        .expect("send after restart");
    assert_eq!(client.result(pid, id).expect("result")["Output"], "3");
    assert_eq!(served.load(Ordering::SeqCst), before);
    // A gateway that cannot be reached is a 502 that names it.
    let down = client.spawn(absent, node.address, &[], b"").expect_err("gateway down");
    assert_eq!(down.status(), Some(502), "{down}");
    node.terminate();

    tests::assert_log_verifies(BINARY, data.path());
}

/// A process spawned from a gateway module spawns children from that module on every shard: a
/// child's shard that does not hold the module logs a copy of the parent's shard's record (not
/// another gateway fetch), and each parent's `Spawned` notice names a child that exists. A
/// client's spawn of it on another shard copies it the same way.
#[test]
fn children_of_a_gateway_module_are_spawned_on_every_shard_and_each_notice_is_true() {
    let spawner = ModuleId([5; 32]);
    let modules = HashMap::from([(
        spawner.to_string(),
        engine::compute::samples::wasm("spawner").expect("sample"),
    )]);
    let served = Arc::new(AtomicUsize::new(0));
    let stub = gateway(modules, Arc::clone(&served));
    let data = tempfile::tempdir().expect("temporary directory");
    const SHARDS: usize = 3;
    let node = start_shards(data.path(), &stub.url, SHARDS);
    let client = node.client();
    let parent = client
        .spawn(spawner, node.address, &[], b"")
        .expect("spawn from a gateway module");
    assert_eq!(served.load(Ordering::SeqCst), 2, "one GraphQL query and one /raw read");
    let home = messenger::placement::shard_of(&parent, SHARDS);

    // A client's spawn of the module on another shard copies the home shard's record of it
    // instead of fetching it again.
    let elsewhere = (0..64)
        .map(|n| {
            client
                .spawn(spawner, node.address, &[Tag::new("Name", format!("client-{n}"))], b"")
                .expect("a client's spawn of the gateway module")
        })
        .find(|pid| messenger::placement::shard_of(pid, SHARDS) != home)
        .expect("a client's process on another shard");
    let id = client
        .send(elsewhere, &[Tag::new("Action", "Count")], b"")
        .expect("message");
    assert_eq!(client.result(elsewhere, id).expect("result")["Output"], "0");
    assert_eq!(
        served.load(Ordering::SeqCst),
        2,
        "copied from the home shard: not fetched again"
    );

    // Children until two of them live on other shards than their parent's.
    let mut children = Vec::new();
    while children
        .iter()
        .filter(|child| messenger::placement::shard_of(child, SHARDS) != home)
        .count()
        < 2
    {
        assert!(children.len() < 40, "40 children and fewer than two on other shards");
        let id = client
            .send(parent, &[Tag::new("Action", "Spawn-Child")], b"")
            .expect("spawn child");
        client.result(parent, id).expect("spawn result");
        let notices = children.len() + 1;
        tests::wait_until("the Spawned notice", || {
            tests::timeline(&client, parent).len() == 1 + 2 * notices
        });
        let results = client.get(&format!("/results/{parent}?limit=200")).expect("results");
        let child: scheduler::ProcessId = results["edges"]
            .as_array()
            .expect("edges")
            .last()
            .and_then(|edge| edge["node"]["Output"].as_str())
            .and_then(|output| output.parse().ok())
            .expect("the notice's result names the child");
        children.push(child);
    }
    // Every child the notices name exists and runs; the module was fetched once.
    for child in &children {
        let id = client
            .send(*child, &[Tag::new("Action", "Count")], b"")
            .expect("message to a child");
        assert_eq!(client.result(*child, id).expect("child's result")["Output"], "0");
    }
    assert_eq!(
        served.load(Ordering::SeqCst),
        2,
        "the other shards copied the module: no more fetches"
    );
    node.kill();

    // The copies are in the logs: after a restart, with no gateway, every child answers.
    let node = start_shards(data.path(), "http://127.0.0.1:9", SHARDS);
    let client = node.client();
    for child in &children {
        let id = client
            .send(*child, &[Tag::new("Action", "Count")], b"")
            .expect("message after restart");
        assert_eq!(client.result(*child, id).expect("result after restart")["Output"], "0");
    }
    node.terminate();
    tests::assert_log_verifies(BINARY, data.path());
}
