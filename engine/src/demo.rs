//! `hewitt demo`: starts a node on a data dir, loads Hewitt's sample modules, spawns processes,
//! sends messages over HTTP, prints results, then measures the messages/s and acknowledgement
//! latency it saw beside the raw fdatasync latency of the same disk.
//!
//! Everything goes through the real HTTP API with signed data items; nothing is simulated.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use scheduler::signer::Signer;
use scheduler::tags::Tag;
use scheduler::{ModuleId, ProcessId};
use serde_json::Value;

use crate::client::{Client, ClientError};
use crate::compute::samples;
use crate::node::{self, NodeConfig};
use crate::probe;

/// The demo's knobs.
pub struct DemoOptions {
    pub messages: usize,
    pub clients: usize,
}

fn tag(name: &str, value: &str) -> Tag {
    Tag::new(name, value)
}

fn output(result: &Value) -> String {
    match &result["Error"] {
        Value::Null => format!("Output {}", result["Output"]),
        error => format!("Error {error}"),
    }
}

/// Runs the demo; writes a report to `out`.
pub fn run(data_dir: &Path, options: &DemoOptions, out: &mut impl Write) -> Result<(), Box<dyn std::error::Error>> {
    let listen: SocketAddr = "127.0.0.1:0".parse().expect("literal address");
    let began = Instant::now();
    let node = node::start(NodeConfig::new(data_dir, listen))?;
    writeln!(
        out,
        "node {} serving on http://{} (data dir {}, recovered {} processes in {} ms)",
        node.address,
        node.addr,
        data_dir.display(),
        node.recovered_processes,
        node.recovery_ms
    )?;
    let base = format!("http://{}", node.addr);
    let client = Client::new(&base, Signer::generate_ed25519());
    let scheduler = node.address;

    let load = |name: &str, extra: &[Tag]| -> Result<ModuleId, ClientError> {
        let id = client.load_module(
            samples::wasm(name).expect("a known sample name"),
            "wasm32-unknown-unknown",
            extra,
        )?;
        Ok(id)
    };
    let counter = load("counter", &[])?;
    let pingpong = load("pingpong", &[])?;
    let spawner = load("spawner", &[])?;
    let trap = load("trap", &[])?;
    let looping = load("loop", &[tag("Compute-Limit", "50000000")])?;
    let memhog = load("memhog", &[tag("Memory-Limit", "16-mb")])?;
    let echo = load("echo", &[])?;
    writeln!(
        out,
        "loaded 7 sample modules (counter, pingpong, spawner, trap, loop, memhog, echo)"
    )?;

    let spawn = |module: ModuleId, name: &str| client.spawn(module, scheduler, &[tag("Name", name)], b"");
    let counters: Vec<ProcessId> = (0..4)
        .map(|i| spawn(counter, &format!("counter-{i}")))
        .collect::<Result<_, _>>()?;
    let ping = spawn(pingpong, "ping")?;
    let pong = spawn(pingpong, "pong")?;
    let parent = spawn(spawner, "parent")?;
    let trapper = spawn(trap, "trap")?;
    let looper = spawn(looping, "loop")?;
    let hog = spawn(memhog, "memhog")?;
    let echoer = spawn(echo, "echo")?;
    let cron_tags = [
        tag("Name", "ticker"),
        tag("Cron-Interval", "1-second"),
        tag("Cron-Tag-Action", "Increment"),
    ];
    let ticker = client.spawn(counter, scheduler, &cron_tags, b"")?;
    writeln!(out, "spawned 12 processes (one a counter with a 1-second cron)")?;
    client.monitor(ticker, true)?;

    let send = |pid: ProcessId, action: &str, extra: &[Tag]| -> Result<Value, ClientError> {
        let mut tags = vec![tag("Action", action)];
        tags.extend(extra.iter().cloned());
        let id = client.send(pid, &tags, b"")?;
        client.result(pid, id)
    };
    for _ in 0..3 {
        send(counters[0], "Increment", &[])?;
    }
    writeln!(
        out,
        "counter after 3 Increments: {}",
        output(&send(counters[0], "Get", &[])?)
    )?;
    writeln!(
        out,
        "counter Fail (rolled back): {}",
        output(&send(counters[0], "Fail", &[])?)
    )?;
    writeln!(
        out,
        "counter after the rollback: {}",
        output(&send(counters[0], "Get", &[])?)
    )?;

    let rally = 20;
    send(
        ping,
        "Serve",
        &[tag("Peer", &pong.to_string()), tag("Count", &rally.to_string())],
    )?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let a = client.dry_run(ping, &[tag("Action", "Get")], "")?;
        let b = client.dry_run(pong, &[tag("Action", "Get")], "")?;
        let total = |v: &Value| v["Output"].as_str().and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
        if total(&a) + total(&b) > rally || Instant::now() > deadline {
            writeln!(
                out,
                "ping-pong rally of {} hops: ping received {}, pong received {}",
                rally + 1,
                total(&a),
                total(&b)
            )?;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    writeln!(out, "spawner: {}", output(&send(parent, "Spawn-Child", &[])?))?;
    writeln!(out, "trap: {}", output(&send(trapper, "Trap", &[])?))?;
    writeln!(out, "loop: {}", output(&send(looper, "Loop", &[])?))?;
    writeln!(out, "memhog: {}", output(&send(hog, "Grow", &[])?))?;
    writeln!(
        out,
        "counter still answers: {}",
        output(&send(counters[1], "Increment", &[])?)
    )?;

    // assign: a message sent to one process joins another's timeline, without its Data.
    let note = client.send(counters[2], &[tag("Action", "Note")], b"a payload")?;
    let assigned = client.assign(echoer, note, &["Data"])?;
    let seen = client.result(echoer, note)?;
    writeln!(
        out,
        "assign (exclude Data): assignment {}; the echo process saw Nonce {}, Data {}",
        assigned["id"].as_str().unwrap_or("?"),
        seen["Output"]["Nonce"],
        seen["Output"]
            .get("Data")
            .map_or("left out".to_owned(), |d| d.to_string())
    )?;

    // cron: the monitored ticker counted on its own meanwhile.
    std::thread::sleep(Duration::from_millis(1500));
    client.monitor(ticker, false)?;
    let ticks = client.get(&format!("/cron/{ticker}?limit=1000"))?;
    let ticks = ticks["edges"].as_array().map_or(0, Vec::len);
    writeln!(
        out,
        "cron: {ticks} ticks evaluated while monitored; the ticker's count is {}",
        client.dry_run(ticker, &[tag("Action", "Get")], "")?["Output"]
    )?;

    // Throughput: closed loop, `clients` threads, each message acknowledged only once durable.
    let client = Arc::new(client);
    let per_client = options.messages.div_ceil(options.clients.max(1));
    let started = Instant::now();
    let threads: Vec<_> = (0..options.clients.max(1))
        .map(|index| {
            let client = Arc::clone(&client);
            let target = counters[index % counters.len()];
            std::thread::spawn(move || -> Result<Vec<Duration>, ClientError> {
                let mut latencies = Vec::with_capacity(per_client);
                for _ in 0..per_client {
                    let item = client.message_item(target, &[Tag::new("Action", "Increment")], b"");
                    let bytes = item.to_bytes();
                    let sent = Instant::now();
                    client.post_bytes(&bytes)?;
                    latencies.push(sent.elapsed());
                }
                Ok(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for thread in threads {
        latencies.extend(thread.join().map_err(|_| "a load thread panicked")??);
    }
    let elapsed = started.elapsed();
    let rate = latencies.len() as f64 / elapsed.as_secs_f64();
    writeln!(
        out,
        "throughput: {} durable messages from {} clients in {:.2} s = {:.0} messages/s (acknowledged after fdatasync)",
        latencies.len(),
        options.clients,
        elapsed.as_secs_f64(),
        rate
    )?;
    probe::summary(out, "acknowledgement latency", &mut latencies)?;
    let health = client.get("/health")?;
    writeln!(
        out,
        "group commit so far: {} records in {} batches, mean fdatasync {} µs",
        health["log"]["records"], health["log"]["batches"], health["log"]["fdatasync_us_mean"]
    )?;
    let mut raw = probe::fdatasync_latencies(data_dir, 200, 4096)?;
    probe::summary(out, "raw 4 KiB append + fdatasync, same disk", &mut raw)?;
    node.stop()?;
    writeln!(
        out,
        "node stopped; demo finished in {:.1} s",
        began.elapsed().as_secs_f64()
    )?;
    Ok(())
}
