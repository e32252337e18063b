//! The harness of Hewitt's integration tests: starts a real `hewitt` node process on a real data
//! dir on loopback, talks to it over HTTP, and SIGKILLs it. The tests themselves are in `tests/`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use engine::client::Client;
use scheduler::signer::Signer;
use scheduler::tags::Tag;
use scheduler::{Address, MessageId, ModuleId, ProcessId};
use serde_json::Value;

pub mod stub;

/// A node process under test.
pub struct Node {
    child: Child,
    pub url: String,
    pub address: Address,
    pub data_dir: PathBuf,
}

impl Node {
    /// Starts `hewitt serve` on `data_dir` with a free port; returns once it serves.
    pub fn start(binary: &str, data_dir: &Path) -> Node {
        Node::start_in(binary, Path::new("."), data_dir)
    }

    /// Starts `hewitt serve` with extra arguments (such as `--set key=value`).
    pub fn start_with(binary: &str, data_dir: &Path, extra: &[&str]) -> Node {
        let mut command = Command::new(binary);
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(extra);
        Node::launch(command, data_dir)
    }

    /// Starts `hewitt serve` in the working directory `cwd`, with `data_dir` as given (it may
    /// be relative to `cwd`, as an operator would type it).
    pub fn start_in(binary: &str, cwd: &Path, data_dir: &Path) -> Node {
        let mut command = Command::new(binary);
        command
            .current_dir(cwd)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir);
        Node::launch(command, data_dir)
    }

    /// Starts `command` (a `hewitt serve` with whatever flags and environment the test wants;
    /// log lines at warn unless it sets HEWITT_LOG) and returns once it serves. `data_dir` is
    /// where the test expects the node's data.
    pub fn launch(mut command: Command, data_dir: &Path) -> Node {
        if !command.get_envs().any(|(name, _)| name == "HEWITT_LOG") {
            command.env("HEWITT_LOG", "warn");
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the hewitt binary starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the node's first line");
        // "hewitt node <address> serving on http://<addr>"
        let words: Vec<&str> = line.split_whitespace().collect();
        assert!(
            words.len() == 6 && words[3] == "serving",
            "node did not start: {line:?}"
        );
        Node {
            child,
            url: words[5].to_owned(),
            address: words[2].parse().expect("node address"),
            data_dir: data_dir.to_owned(),
        }
    }

    /// The node's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A client of this node with a fresh Ed25519 key.
    pub fn client(&self) -> Client {
        Client::new(&self.url, Signer::generate_ed25519())
    }

    /// Sends SIGTERM and returns the exit status once the node has stopped.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
        self.child.wait().expect("reap the node")
    }

    /// Kills the node with SIGKILL and waits for it to be gone.
    pub fn kill(mut self) {
        self.child.kill().expect("SIGKILL the node");
        self.child.wait().expect("reap the node");
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Loads a sample module (by name, see engine::compute::samples) with extra tags.
pub fn load_sample(client: &Client, name: &str, extra: &[Tag]) -> ModuleId {
    client
        .load_module(
            engine::compute::samples::wasm(name).unwrap_or_else(|| panic!("no sample {name}")),
            "wasm32-unknown-unknown",
            extra,
        )
        .unwrap_or_else(|e| panic!("load {name}: {e}"))
}

/// Spawns a process of `module` on `node`.
pub fn spawn(client: &Client, node: &Node, module: ModuleId) -> ProcessId {
    client.spawn(module, node.address, &[], b"").expect("spawn")
}

/// The cursors of a page's edges (of `/results`, `/cron`), in order.
pub fn cursors(page: &Value) -> Vec<String> {
    page["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| e["cursor"].as_str().expect("a cursor").to_owned())
        .collect()
}

/// Every result of `pid`, paging `/results` `limit` at a time to the end: (cursor, `Output`).
pub fn results_in_pages(client: &Client, pid: ProcessId, limit: usize) -> Vec<(String, Value)> {
    let (mut seen, mut from) = (Vec::new(), String::new());
    loop {
        let page = client
            .get(&format!("/results/{pid}?limit={limit}{from}"))
            .expect("a page of results");
        for edge in page["edges"].as_array().expect("edges") {
            seen.push((
                edge["cursor"].as_str().expect("a cursor").to_owned(),
                edge["node"]["Output"].clone(),
            ));
        }
        if page["pageInfo"]["hasNextPage"] != true {
            return seen;
        }
        from = format!("&from={}", seen.last().expect("a page has edges").0);
    }
}

/// Every edge of a process's timeline, following pages to the end.
pub fn timeline(client: &Client, pid: ProcessId) -> Vec<Value> {
    timeline_in_pages(client, pid, 1000)
}

/// [`timeline`] in pages of `limit` edges (smaller pages for large messages).
pub fn timeline_in_pages(client: &Client, pid: ProcessId, limit: usize) -> Vec<Value> {
    let mut edges = Vec::new();
    let mut from_nonce: Option<u64> = None;
    loop {
        let mut path = format!("/{pid}?process-id={pid}&limit={limit}");
        if let Some(from) = from_nonce {
            path.push_str(&format!("&from-nonce={from}"));
        }
        let page = client.get(&path).expect("timeline page");
        let page_edges = page["edges"].as_array().expect("edges").clone();
        let has_next = page["page_info"]["has_next_page"].as_bool().expect("has_next_page");
        for edge in &page_edges {
            from_nonce = Some(tag_of(&edge["node"]["assignment"], "Nonce").parse().expect("nonce"));
        }
        edges.extend(page_edges);
        if !has_next {
            return edges;
        }
    }
}

/// The value of tag `name` on an item JSON.
pub fn tag_of(item: &Value, name: &str) -> String {
    item["tags"]
        .as_array()
        .and_then(|tags| tags.iter().find(|t| t["name"] == name))
        .and_then(|t| t["value"].as_str())
        .unwrap_or_else(|| panic!("no tag {name} in {item}"))
        .to_owned()
}

/// Checks a timeline AO's way: nonces dense from 0, each hash chain link derived from the
/// previous assignment's id and link, each assignment signed by the scheduler.
pub fn check_timeline(edges: &[Value], pid: ProcessId, scheduler: Address) {
    use scheduler::chain::{genesis_hash_chain, next_hash_chain};
    use scheduler::{AssignmentId, HashChain};
    let mut previous: Option<(AssignmentId, HashChain)> = None;
    for (index, edge) in edges.iter().enumerate() {
        let assignment = &edge["node"]["assignment"];
        assert_eq!(tag_of(assignment, "Nonce"), index.to_string(), "nonces are dense");
        assert_eq!(tag_of(assignment, "Process"), pid.to_string());
        assert_eq!(assignment["owner"]["address"], scheduler.to_string());
        let link: HashChain = tag_of(assignment, "Hash-Chain").parse().expect("hash chain id");
        let expected = match &previous {
            None => genesis_hash_chain(&pid),
            Some((id, chain)) => next_hash_chain(id, chain),
        };
        assert_eq!(link, expected, "hash chain at nonce {index}");
        let id: AssignmentId = assignment["id"].as_str().expect("assignment id").parse().expect("id");
        previous = Some((id, link));
    }
}

/// The counter sample's current count, read by a dry run (the state, not a message's result).
pub fn counter_value(client: &Client, pid: ProcessId) -> u64 {
    let answer = client.dry_run(pid, &[Tag::new("Action", "Get")], "").expect("dry run");
    answer["Output"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("count in {answer}"))
}

/// Sends `Action: Increment` to each of `pids`, `times` rounds; returns what was sent, in order.
pub fn increment_all(node: &Node, pids: &[ProcessId], times: usize) -> Vec<(ProcessId, MessageId)> {
    let client = node.client();
    let mut sent = Vec::new();
    for _ in 0..times {
        for pid in pids {
            let id = client
                .send(*pid, &[Tag::new("Action", "Increment")], b"")
                .expect("increment");
            sent.push((*pid, id));
        }
    }
    sent
}

/// The sum over every sample (every shard) of the metric `name` on the node's `/metrics`.
pub fn metric(node: &Node, name: &str) -> f64 {
    let page = String::from_utf8(node.client().get_bytes("/metrics").expect("metrics")).expect("UTF-8");
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

/// Runs `hewitt log verify` on a stopped node's data dir and fails the test unless every frame,
/// record, nonce and hash chain checks out.
pub fn assert_log_verifies(binary: &str, data_dir: &Path) {
    let verify = Command::new(binary)
        .args(["log", "verify", "--data-dir"])
        .arg(data_dir)
        .env("HEWITT_LOG", "warn")
        .output()
        .expect("hewitt log verify runs");
    assert!(
        verify.status.success(),
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
}

/// Polls `done` (bounded: two minutes) until it holds; for waiting on the node's own work, such
/// as a rally that is still being delivered.
pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
