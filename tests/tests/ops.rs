//! The operator's view of a real node: the configuration's precedence and its errors, the
//! `/metrics` page (parsed by a Prometheus text parser, values moving under load), and the
//! documentation matching the binary's `--help`.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};

use scheduler::tags::Tag;
use tests::{load_sample, spawn, wait_until, Node};

const BINARY: &str = env!("CARGO_BIN_EXE_hewitt-under-test");
/// Checkpoints off: a restart replays the whole log (a clean stop would otherwise leave nothing
/// to replay).
const NO_CHECKPOINTS: [&str; 6] = [
    "--set",
    "checkpoint.every_messages=0",
    "--set",
    "checkpoint.every_gas=0",
    "--set",
    "checkpoint.every_seconds=0",
];

/// `GET /metrics`, parsed.
fn scrape(node: &Node) -> prometheus_parse::Scrape {
    let page = String::from_utf8(node.client().get_bytes("/metrics").expect("GET /metrics")).expect("UTF-8 page");
    assert!(page.ends_with("# EOF\n"), "not a complete OpenMetrics page: {page}");
    prometheus_parse::Scrape::parse(page.lines().map(|l| Ok(l.to_owned()))).expect("the page parses")
}

/// The value of `metric` with `labels` (a histogram gives its count).
fn value(scrape: &prometheus_parse::Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            prometheus_parse::Value::Histogram(buckets) => buckets.iter().map(|b| b.count).fold(0.0, f64::max),
            prometheus_parse::Value::Summary(_) => f64::NAN,
        })
        // Samples of several shards (label `shard`) add up.
        .reduce(|a, b| a + b)
}

#[test]
fn metrics_are_prometheus_text_and_move_under_load() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let node = Node::start(BINARY, &dir.path().join("data"));
    let before = scrape(&node);
    // Every shard's samples: the processes may sit on any of them.
    let shard: [(&str, &str); 0] = [];
    for (metric, labels) in [
        ("hewitt_build_info", &[][..]),
        ("hewitt_uptime_seconds", &[]),
        ("hewitt_processes", &[]),
        ("hewitt_accepting_writes", &[]),
        ("hewitt_messages_assigned_total", &shard),
        ("hewitt_messages_evaluated_total", &shard),
        ("hewitt_queue_messages", &shard),
        ("hewitt_instances_live", &shard),
        ("hewitt_log_written_bytes_total", &shard),
        ("hewitt_fdatasync_seconds", &shard),
        ("hewitt_ack_seconds", &shard),
        ("hewitt_evaluation_seconds", &shard),
        ("hewitt_fuel_used_total", &shard),
    ] {
        assert!(
            value(&before, metric, labels).is_some(),
            "{metric} is missing from {:?}",
            before.samples.iter().map(|s| &s.metric).collect::<BTreeSet<_>>()
        );
    }
    assert_eq!(value(&before, "hewitt_accepting_writes", &[]), Some(1.0));

    let client = node.client();
    let module = load_sample(&client, "counter", &[]);
    let pid = spawn(&client, &node, module);
    let mut last = None;
    for _ in 0..20 {
        last = Some(
            client
                .send(pid, &[Tag::new("Action", "Increment")], b"")
                .expect("acknowledged"),
        );
    }
    // A duplicate is refused, and counted by reason.
    let item = client.message_item(pid, &[Tag::new("Action", "Increment")], b"");
    client.post_item(&item).expect("first copy");
    assert!(client.post_item(&item).is_err(), "a duplicate is refused");
    client.result(pid, last.expect("sent")).expect("evaluated");

    let after = scrape(&node);
    let grew = |metric: &str, labels: &[(&str, &str)]| {
        value(&after, metric, labels).unwrap_or(0.0) - value(&before, metric, labels).unwrap_or(0.0)
    };
    // Module, process and 21 messages assigned; the process and the messages evaluated.
    assert!(grew("hewitt_messages_assigned_total", &shard) >= 22.0);
    assert!(grew("hewitt_messages_evaluated_total", &shard) >= 21.0);
    assert!(
        grew("hewitt_ack_seconds", &shard) >= 23.0,
        "every acknowledgement observed"
    );
    assert!(grew("hewitt_fdatasync_seconds", &shard) >= 1.0);
    assert!(grew("hewitt_log_written_bytes_total", &shard) > 0.0);
    assert!(grew("hewitt_evaluation_seconds", &shard) >= 21.0);
    assert!(grew("hewitt_fuel_used_total", &shard) > 0.0);
    assert_eq!(
        value(&after, "hewitt_messages_rejected_total", &[("reason", "duplicate")]),
        Some(1.0)
    );
    assert_eq!(value(&after, "hewitt_processes", &[]), Some(1.0));
    assert_eq!(value(&after, "hewitt_instances_live", &shard), Some(1.0));
}

/// A 64 KiB message to `pid`.
fn large_message(node: &Node, pid: scheduler::ProcessId) -> Result<serde_json::Value, engine::client::ClientError> {
    let client = node.client();
    client.post_item(&client.message_item(pid, &[Tag::new("Action", "Increment")], &[b'x'; 64 * 1024]))
}

#[test]
fn configuration_file_environment_and_flags_in_that_order() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let data = dir.path().join("data");
    let config = dir.path().join("hewitt.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\nlisten = \"127.0.0.1:0\"\n[http]\nbody_bytes_max = \"32KiB\"\n[limits]\nqueue_messages_max = 50\n",
            data.display().to_string()
        ),
    )
    .expect("write config");

    // The file alone: its 32 KiB body limit refuses a 64 KiB message with 413 (the sample module
    // is smaller).
    let mut command = Command::new(BINARY);
    command.args(["serve", "--config"]).arg(&config);
    let node = Node::launch(command, &data);
    let client = node.client();
    let module = load_sample(&client, "counter", &[]);
    let pid = spawn(&client, &node, module);
    match large_message(&node, pid) {
        Err(engine::client::ClientError::Status { status: 413, .. }) => {}
        other => panic!("a 64 KiB body under a 32 KiB limit: {other:?}"),
    }
    assert_eq!(node.terminate().code(), Some(0));

    // The environment beats the file, a flag beats the environment.
    let mut command = Command::new(BINARY);
    command
        .args(["serve", "--config"])
        .arg(&config)
        .env("HEWITT_HTTP_BODY_BYTES_MAX", "40KiB")
        .args(["--set", "http.body_bytes_max=128KiB"]);
    let node = Node::launch(command, &data);
    large_message(&node, pid).expect("accepted under the flag's 128 KiB limit");
    assert_eq!(node.terminate().code(), Some(0));

    // config print shows the effective values and where each came from.
    let printed = Command::new(BINARY)
        .args(["config", "print", "--config"])
        .arg(&config)
        .env("HEWITT_HTTP_BODY_BYTES_MAX", "40KiB")
        .output()
        .expect("config print runs");
    assert!(printed.status.success());
    let text = String::from_utf8(printed.stdout).expect("UTF-8");
    assert!(text.contains("body_bytes_max = 40960"), "{text}");
    assert!(text.contains("from: environment HEWITT_HTTP_BODY_BYTES_MAX"), "{text}");
    assert!(text.contains("queue_messages_max = 50"), "{text}");
}

#[test]
fn an_invalid_configuration_is_refused_with_the_field_named() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let config = dir.path().join("hewitt.toml");
    for (file, env, expected) in [
        ("[log]\nbatch_bytes_max = 12\n", None, "log.batch_bytes_max"),
        (
            "[compute]\ninstance_count = 5\n",
            None,
            "unknown field \"compute.instance_count\"",
        ),
        (
            "",
            Some(("HEWITT_LIMITS_QUEUE_MESSAGES_MAX", "lots")),
            "limits.queue_messages_max (from HEWITT_LIMITS_QUEUE_MESSAGES_MAX)",
        ),
    ] {
        std::fs::write(&config, file).expect("write config");
        let mut command = Command::new(BINARY);
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(&config)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .stdout(Stdio::null());
        if let Some((name, value)) = env {
            command.env(name, value);
        }
        let output = command.output().expect("hewitt runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{file:?}: {stderr}");
        assert!(stderr.contains(expected), "{file:?}: {stderr}");
    }
    assert!(!dir.path().join("data").exists(), "nothing was started");
}

/// Every subcommand and every flag of `hewitt --help` (and each subcommand's `--help`) is in
/// docs/OPERATING.md, so the operator's guide cannot silently fall behind the binary.
#[test]
fn the_operators_guide_covers_every_command_and_flag() {
    let guide = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/OPERATING.md"))
        .expect("docs/OPERATING.md exists");
    let help = |args: &[&str]| {
        let output = Command::new(BINARY)
            .args(args)
            .arg("--help")
            .output()
            .expect("hewitt --help");
        assert!(output.status.success(), "{args:?} --help failed");
        String::from_utf8(output.stdout).expect("UTF-8")
    };
    let commands = |text: &str| -> Vec<String> {
        text.lines()
            .skip_while(|l| !l.starts_with("Commands:"))
            .skip(1)
            .take_while(|l| l.starts_with("  "))
            .filter_map(|l| l.split_whitespace().next())
            .filter(|c| *c != "help")
            .map(str::to_owned)
            .collect()
    };
    let flags = |text: &str| -> Vec<String> {
        text.split_whitespace()
            .filter(|w| w.starts_with("--") && w.len() > 2)
            .map(|w| {
                w.trim_end_matches([',', '.'])
                    .split('=')
                    .next()
                    .unwrap_or("")
                    .to_owned()
            })
            .filter(|f| f != "--help" && f != "--version")
            .collect()
    };
    let mut missing = Vec::new();
    let mut queue: Vec<Vec<String>> = vec![vec![]];
    while let Some(path) = queue.pop() {
        let args: Vec<&str> = path.iter().map(String::as_str).collect();
        let text = help(&args);
        for command in commands(&text) {
            let mut sub = path.clone();
            sub.push(command);
            let line = format!("hewitt {}", sub.join(" "));
            if !guide.contains(&line) {
                missing.push(line);
            }
            queue.push(sub);
        }
        for flag in flags(&text) {
            if !guide.contains(&flag) {
                missing.push(format!("{flag} (of hewitt {})", path.join(" ")));
            }
        }
    }
    assert!(missing.is_empty(), "docs/OPERATING.md does not mention: {missing:#?}");
}

/// After a restart the node answers `/health` at once, but `/ready` only once it has replayed
/// the messages it read back from its log; requests are served meanwhile.
#[test]
fn ready_waits_for_the_replay_of_recovered_messages() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let data = dir.path().join("data");
    let node = Node::start_with(BINARY, &data, &NO_CHECKPOINTS);
    let client = node.client();
    let module = load_sample(&client, "loop", &[]);
    // Each Loop message burns its whole Compute-Limit (~25 ms) and fails: replaying a hundred
    // of them takes seconds. (Short ones: a handler is not preemptible, so a request waits for
    // the evaluation in progress.)
    let pid = client
        .spawn(module, node.address, &[Tag::new("Compute-Limit", "20000000")], b"")
        .expect("spawned");
    let loops: Vec<_> = (0..100)
        .map(|_| {
            client
                .send(pid, &[Tag::new("Action", "Loop")], b"")
                .expect("acknowledged")
        })
        .collect();
    let last = client.result(pid, *loops.last().expect("sent")).expect("evaluated");
    assert!(last["Error"].is_string(), "{last}");
    assert_eq!(node.terminate().code(), Some(0));

    let node = Node::start_with(BINARY, &data, &NO_CHECKPOINTS);
    let client = node.client();
    let status = |path: &str| match client.get(path) {
        Ok(_) => 200,
        Err(engine::client::ClientError::Status { status, .. }) => status,
        Err(other) => panic!("GET {path}: {other}"),
    };
    assert_eq!(status("/health"), 200, "live while replaying");
    match client.get("/ready") {
        Err(engine::client::ClientError::Status { status: 503, body }) => {
            assert!(body.contains("replaying"), "{body}")
        }
        other => panic!("ready before the replay: {other:?}"),
    }
    let page = String::from_utf8(client.get_bytes("/metrics").expect("metrics")).expect("UTF-8");
    assert!(page.contains("\nhewitt_ready 0\n"), "{page}");
    // Requests are served meanwhile; a result waits for its replay.
    let first = client.result(pid, loops[0]).expect("replayed result");
    assert!(first["Error"].is_string(), "{first}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while status("/ready") != 200 {
        assert!(std::time::Instant::now() < deadline, "never ready");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let page = String::from_utf8(client.get_bytes("/metrics").expect("metrics")).expect("UTF-8");
    assert!(page.contains("\nhewitt_ready 1\n"), "{page}");
    assert!(page.contains("\nhewitt_recovery_pending_messages 0\n"), "{page}");
}

/// SIGTERM while four clients send as fast as they can: the node exits 0, its log needs no
/// repair (`hewitt log verify` is clean), and after a restart every acknowledged message is
/// there exactly once and the counter equals the log.
#[test]
fn sigterm_under_load_loses_nothing_and_needs_no_repair() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let dir = tempfile::tempdir().expect("temporary directory");
    let data = dir.path().join("data");
    let node = Node::start(BINARY, &data);
    let client = node.client();
    let pid = spawn(&client, &node, load_sample(&client, "counter", &[]));
    let stop = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = (0..4)
        .map(|_| {
            let (client, stop) = (node.client(), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut acknowledged = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let item = client.message_item(pid, &[Tag::new("Action", "Increment")], b"");
                    match client.post_item(&item) {
                        Ok(_) => acknowledged.push(item.id().to_string()),
                        // Refused or cut off by the shutdown: not acknowledged, not counted.
                        Err(_) => break,
                    }
                }
                acknowledged
            })
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(800));
    let status = node.terminate();
    stop.store(true, Ordering::Relaxed);
    let acknowledged: Vec<String> = senders
        .into_iter()
        .flat_map(|s| s.join().expect("sender thread"))
        .collect();
    assert_eq!(status.code(), Some(0), "clean exit under load");
    assert!(acknowledged.len() > 20, "the load ran: {}", acknowledged.len());

    let verify = Command::new(BINARY)
        .args(["log", "verify", "--data-dir"])
        .arg(&data)
        .env("HEWITT_LOG", "warn")
        .output()
        .expect("hewitt log verify runs");
    assert!(
        verify.status.success(),
        "the log needs repair after SIGTERM:\n{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );

    let node = Node::start(BINARY, &data);
    let client = node.client();
    let edges = tests::timeline(&client, pid);
    let logged: Vec<String> = edges
        .iter()
        .skip(1)
        .map(|e| e["node"]["message"]["id"].as_str().expect("message id").to_owned())
        .collect();
    let unique: BTreeSet<&String> = logged.iter().collect();
    assert_eq!(unique.len(), logged.len(), "a message is in the log twice");
    for id in &acknowledged {
        assert!(
            unique.contains(id),
            "acknowledged message {id} is missing after SIGTERM"
        );
    }
    assert_eq!(tests::counter_value(&client, pid), logged.len() as u64);
}

/// A restart maps compiled modules back from `data_dir/modules` instead of compiling them.
#[test]
fn a_restart_does_not_recompile_modules() {
    let data = tempfile::tempdir().expect("temporary directory");
    let node = Node::start(BINARY, data.path());
    let client = node.client();
    let counter = tests::load_sample(&client, "counter", &[]);
    let exchange = tests::load_sample(&client, "exchange", &[]);
    let pid = tests::spawn(&client, &node, counter);
    tests::spawn(&client, &node, exchange);
    let page = scrape(&node);
    assert_eq!(value(&page, "hewitt_modules_compiled_total", &[]), Some(2.0));
    assert_eq!(value(&page, "hewitt_modules_loaded_total", &[]), Some(0.0));
    assert!(data.path().join(format!("modules/{counter}.cwasm")).exists());
    node.kill();

    let node = Node::start(BINARY, data.path());
    let page = scrape(&node);
    assert_eq!(value(&page, "hewitt_modules_compiled_total", &[]), Some(0.0));
    assert_eq!(value(&page, "hewitt_modules_loaded_total", &[]), Some(2.0));
    let client = node.client();
    let id = client
        .send(pid, &[scheduler::tags::Tag::new("Action", "Increment")], b"")
        .expect("send");
    assert_eq!(client.result(pid, id).expect("result")["Output"], "1");
}

/// README's first command, `hewitt demo`, at a small size, on its default data dir (relative:
/// `hewitt-data/demo` under the working directory): it runs every sample, assign and a cron
/// process over HTTP, measures, stops the node and exits 0.
#[test]
fn the_demo_runs_end_to_end() {
    let cwd = tempfile::tempdir().expect("temporary directory");
    let output = std::process::Command::new(BINARY)
        .args(["demo", "--messages", "40", "--clients", "2"])
        .current_dir(cwd.path())
        .env("HEWITT_LOG", "warn")
        .output()
        .expect("hewitt demo runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for expected in [
        "counter after the rollback: Output \"3\"",
        "ping-pong rally of 21 hops",
        "trap: Error",
        "assign (exclude Data): assignment ",
        "Data left out",
        "ticks evaluated while monitored",
        "durable messages from 2 clients",
        "node stopped; demo finished",
    ] {
        assert!(stdout.contains(expected), "no {expected:?} in:\n{stdout}");
    }
    // Its cron step saved the monitored set through that relative path (a durable replace,
    // which once failed there with EBADF).
    assert!(
        cwd.path().join("hewitt-data/demo/node-key.json").is_file(),
        "the default data dir was used"
    );
}

/// Reads `stream` until the node closes it (true) or `within` passes without that (false).
fn closed_within(stream: &mut std::net::TcpStream, within: std::time::Duration) -> bool {
    use std::io::Read;
    let deadline = std::time::Instant::now() + within;
    let mut buffer = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return false;
        }
        stream.set_read_timeout(Some(left)).expect("read timeout");
        match stream.read(&mut buffer) {
            Ok(0) => return true,
            Ok(_) => continue, // an answer before the close
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return false
            }
            Err(e) => panic!("reading: {e}"),
        }
    }
}

#[test]
fn silent_trickling_and_idle_connections_are_closed_and_busy_ones_kept() {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    let dir = tempfile::tempdir().expect("temporary directory");
    let node = Node::start_with(BINARY, dir.path(), &["--set", "http.idle_timeout_ms=400"]);
    let addr = node.url.trim_start_matches("http://").to_owned();
    let connect = || TcpStream::connect(&addr).expect("connect");
    let open = |node: &Node| value(&scrape(node), "hewitt_http_connections_open", &[]).expect("the gauge");
    let before = open(&node);

    let mut silent = connect();
    let mut half_head = connect();
    half_head
        .write_all(b"GET /health HTTP/1.1\r\nHost: hewitt\r\n")
        .expect("write");
    let mut idle = connect();
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: hewitt\r\n\r\n")
        .expect("write");
    let mut answer = [0u8; 12];
    idle.read_exact(&mut answer).expect("an answer");
    assert_eq!(&answer, b"HTTP/1.1 200", "the idle connection was served first");
    let mut stalled_body = connect();
    stalled_body
        .write_all(b"POST / HTTP/1.1\r\nHost: hewitt\r\nContent-Length: 100\r\n\r\n0123456789")
        .expect("write");
    // A body that sends a byte every 100 ms never stalls for the timeout, but is far too slow.
    let mut trickling = connect();
    trickling
        .write_all(b"POST / HTTP/1.1\r\nHost: hewitt\r\nContent-Length: 100\r\n\r\n")
        .expect("write");
    let trickler = {
        let mut trickling = trickling.try_clone().expect("clone");
        std::thread::spawn(move || {
            for _ in 0..100 {
                std::thread::sleep(std::time::Duration::from_millis(100));
                if trickling.write_all(b"x").is_err() {
                    return;
                }
            }
        })
    };
    // Meanwhile a connection that sends a request every 100 ms, for 3x the timeout, is kept.
    let busy = {
        let mut busy = connect();
        std::thread::spawn(move || {
            for _ in 0..12 {
                std::thread::sleep(std::time::Duration::from_millis(100));
                busy.write_all(b"GET /health HTTP/1.1\r\nHost: hewitt\r\n\r\n")
                    .expect("write");
                let mut head = [0u8; 12];
                busy.read_exact(&mut head).expect("the busy connection is answered");
                assert_eq!(&head, b"HTTP/1.1 200");
                // The rest of the answer: its head ends the JSON body's length.
                let mut rest = Vec::new();
                let mut byte = [0u8; 1];
                while !rest.ends_with(b"\r\n\r\n") {
                    busy.read_exact(&mut byte).expect("the head");
                    rest.push(byte[0]);
                }
                let text = String::from_utf8_lossy(&rest).to_ascii_lowercase();
                let length: usize = text
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: ")?.trim().parse().ok())
                    .expect("a content length");
                let mut body = vec![0u8; length];
                busy.read_exact(&mut body).expect("the body");
            }
        })
    };

    let within = std::time::Duration::from_secs(10);
    let mut status = String::new();
    stalled_body.set_read_timeout(Some(within)).expect("read timeout");
    let _ = stalled_body.read_to_string(&mut status);
    assert!(
        status.starts_with("HTTP/1.1 408"),
        "a body that stalls is answered 408: {status:?}"
    );
    assert!(status.contains("the body stalled"), "{status}");
    let mut status = String::new();
    trickling.set_read_timeout(Some(within)).expect("read timeout");
    let _ = trickling.read_to_string(&mut status);
    assert!(
        status.starts_with("HTTP/1.1 408") && status.contains("slower than"),
        "a body that trickles is answered 408 before its 10 s are up: {status:?}"
    );
    trickler.join().expect("the trickler ended");
    assert!(closed_within(&mut silent, within), "a silent connection is closed");
    assert!(closed_within(&mut half_head, within), "a head that stalls is closed");
    assert!(
        closed_within(&mut idle, within),
        "an idle keep-alive connection is closed"
    );
    busy.join().expect("the busy connection was answered throughout");
    // Their slots are free again.
    wait_until("the connections to be counted closed", || open(&node) <= before);
}
