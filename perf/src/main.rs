//! `hewitt-perf`: Hewitt's load generator and the limit probes its reports compare against.
//!
//! `hewitt-perf run` starts a node in this process on a fresh data dir, loads the counter sample,
//! spawns processes, and drives them over HTTP with signed data items: first closed loop (peak
//! durable throughput), then open loop at fixed fractions of that peak, each latency measured
//! from the message's *intended* send time into an HdrHistogram (no coordinated omission). In the
//! same run it measures the raw append + fdatasync latency of the same disk. It writes
//! `report.json` and `report.md` into `--out`.
//!
//! `hewitt-perf fsync` runs only the disk probe. Scenarios still to come (ping-pong chains, spawn
//! storms, the exchange, in-process driving, plots) are listed in perf/README.md.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use engine::client::Client;
use engine::compute::samples;
use engine::node::{self, NodeConfig};
use hdrhistogram::Histogram;
use scheduler::signer::Signer;
use scheduler::tags::Tag;
use scheduler::ProcessId;
use serde_json::{json, Value};

#[derive(Parser)]
#[command(name = "hewitt-perf", about = "Hewitt's load generator and limit probes")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Scenario {
    /// Many processes, each a trivial counter.
    Many,
    /// One hot process.
    Hot,
}

#[derive(Subcommand)]
enum Command {
    /// Raw append + fdatasync latency of a disk.
    Fsync {
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        #[arg(long, default_value_t = 1000)]
        rounds: usize,
        #[arg(long, default_value_t = 4096)]
        block_bytes: usize,
    },
    /// Starts a node and measures durable throughput and acknowledgement latency over HTTP.
    Run {
        #[arg(long, value_enum, default_value = "many")]
        scenario: Scenario,
        /// Parent of the fresh data dir (its disk is the one measured).
        #[arg(long, default_value = "target/perf")]
        work_dir: PathBuf,
        /// Where report.json and report.md go.
        #[arg(long, default_value = "target/perf/report")]
        out: PathBuf,
        /// Processes in the `many` scenario.
        #[arg(long, default_value_t = 64)]
        processes: usize,
        /// Concurrent HTTP clients.
        #[arg(long, default_value_t = 16)]
        clients: usize,
        /// Messages in the closed-loop (peak) phase.
        #[arg(long, default_value_t = 5000)]
        messages: u64,
        /// Seconds of each open-loop phase.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        /// Offered loads of the open-loop phases, as fractions of the measured peak.
        #[arg(long, value_delimiter = ',', default_value = "0.1,0.5,0.9")]
        loads: Vec<f64>,
    },
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds (µs)")
}

fn percentiles(h: &Histogram<u64>) -> Value {
    json!({
        "count": h.len(),
        "p50_us": h.value_at_quantile(0.5),
        "p99_us": h.value_at_quantile(0.99),
        "p999_us": h.value_at_quantile(0.999),
        "max_us": h.max(),
    })
}

fn record(h: &mut Histogram<u64>, latency: Duration) {
    let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX).max(1);
    h.saturating_record(us);
}

/// When messages are due: as soon as acknowledgements come back (closed loop), or ticket `i` at
/// `start + i / rate` (open loop).
#[derive(Clone, Copy)]
enum Pace {
    Closed,
    Open { start: Instant, rate: f64 },
}

/// Sends `total` messages from `clients` threads, round robin over `targets`. Each latency is
/// measured from the message's due time: its send time in a closed loop, its slot in the
/// schedule in an open loop, so a stalled node is charged for every message it delayed.
/// Returns the achieved messages/s and the latency histogram (µs).
fn drive(url: &str, targets: &[ProcessId], clients: usize, total: u64, pace: Pace) -> (f64, Histogram<u64>) {
    let next = Arc::new(AtomicU64::new(0));
    let began = match pace {
        Pace::Closed => Instant::now(),
        Pace::Open { start, .. } => start,
    };
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            let (next, url, targets) = (Arc::clone(&next), url.to_owned(), targets.to_vec());
            std::thread::spawn(move || {
                let client = Client::new(&url, Signer::generate_ed25519());
                let mut h = histogram();
                loop {
                    let ticket = next.fetch_add(1, Ordering::Relaxed);
                    if ticket >= total {
                        return h;
                    }
                    let target = targets[ticket as usize % targets.len()];
                    let bytes = client
                        .message_item(target, &[Tag::new("Action", "Increment")], b"")
                        .to_bytes();
                    let due = match pace {
                        Pace::Closed => Instant::now(),
                        Pace::Open { start, rate } => {
                            let due = start + Duration::from_secs_f64(ticket as f64 / rate);
                            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                                std::thread::sleep(wait);
                            }
                            due
                        }
                    };
                    client.post_bytes(&bytes).expect("message acknowledged");
                    record(&mut h, due.elapsed());
                }
            })
        })
        .collect();
    let mut all = histogram();
    for worker in workers {
        all.add(worker.join().expect("load thread"))
            .expect("same histogram bounds");
    }
    (total as f64 / began.elapsed().as_secs_f64(), all)
}

#[allow(clippy::too_many_arguments)]
fn run(
    scenario: Scenario,
    work_dir: &Path,
    out: &Path,
    processes: usize,
    clients: usize,
    messages: u64,
    seconds: f64,
    loads: &[f64],
) -> Result<(), Box<dyn std::error::Error>> {
    std::fs::create_dir_all(work_dir)?;
    std::fs::create_dir_all(out)?;
    let data_dir = work_dir.join(format!("data-{}", std::process::id()));
    let node = node::start(NodeConfig::new(&data_dir, "127.0.0.1:0".parse()?))?;
    let url = format!("http://{}", node.addr);
    let setup = Client::new(&url, Signer::generate_ed25519());
    let module = setup.load_module(
        samples::wasm("counter").expect("counter sample"),
        "wasm32-unknown-unknown",
        &[],
    )?;
    let count = match scenario {
        Scenario::Many => processes.max(1),
        Scenario::Hot => 1,
    };
    let targets: Vec<ProcessId> = (0..count)
        .map(|_| setup.spawn(module, node.address, &[], b""))
        .collect::<Result<_, _>>()?;
    let scenario_name = match scenario {
        Scenario::Many => "many",
        Scenario::Hot => "hot",
    };
    eprintln!("{scenario_name}: {count} processes, {clients} clients");

    let (peak, peak_latency) = drive(&url, &targets, clients, messages, Pace::Closed);
    eprintln!("peak {peak:.0} messages/s");
    let mut phases = Vec::new();
    for load in loads {
        let rate = peak * load;
        let total = (rate * seconds).max(1.0) as u64;
        let start = Instant::now() + Duration::from_millis(50);
        let (achieved, latency) = drive(&url, &targets, clients, total, Pace::Open { start, rate });
        eprintln!(
            "offered {rate:.0}/s ({:.0} %): achieved {achieved:.0}/s, p99 {} µs",
            load * 100.0,
            latency.value_at_quantile(0.99)
        );
        phases.push(
            json!({"load": load, "offered_per_s": rate, "achieved_per_s": achieved, "latency": percentiles(&latency)}),
        );
    }
    let health = setup.get("/health")?;
    node.stop()?;
    let mut raw: Vec<Duration> = engine::probe::fdatasync_latencies(&data_dir, 1000, 4096)?;
    let mut raw_h = histogram();
    for sample in &raw {
        record(&mut raw_h, *sample);
    }
    raw.clear();
    std::fs::remove_dir_all(&data_dir)?;

    let raw_p99 = raw_h.value_at_quantile(0.99).max(1) as f64;
    let report = json!({
        "scenario": scenario_name,
        "durability": "durable: acknowledged after the fdatasync that covers the message",
        "transport": "HTTP/1.1 on loopback, Ed25519-signed ANS-104 items, load generator in the same process",
        "commit": git_commit(),
        "cpu": cpu_model(),
        "kernel": kernel(),
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "shards": 1,
        "processes": count,
        "clients": clients,
        "peak": {"messages_per_s": peak, "latency": percentiles(&peak_latency)},
        "open_loop": phases,
        "group_commit": health["log"],
        "limits": {"fdatasync_4k": percentiles(&raw_h)},
    });
    std::fs::write(out.join("report.json"), serde_json::to_string_pretty(&report)?)?;
    let mut md = Vec::new();
    writeln!(md, "# Hewitt perf report: {scenario_name}\n")?;
    let text = |key: &str| report[key].as_str().unwrap_or("unknown").to_owned();
    writeln!(
        md,
        "commit {}, {}, kernel {}, {} cores, 1 shard, {count} processes, {clients} HTTP clients\n",
        text("commit"),
        text("cpu"),
        text("kernel"),
        report["cores"]
    )?;
    writeln!(
        md,
        "Durable: each message acknowledged after the fdatasync covering it.\n"
    )?;
    writeln!(
        md,
        "| phase | offered/s | achieved/s | p50 µs | p99 µs | p99.9 µs | max µs | p99 / raw fdatasync p99 |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|---|---|")?;
    writeln!(
        md,
        "| closed loop (peak) | - | {:.0} | {} | {} | {} | {} | {:.1}× |",
        peak,
        peak_latency.value_at_quantile(0.5),
        peak_latency.value_at_quantile(0.99),
        peak_latency.value_at_quantile(0.999),
        peak_latency.max(),
        peak_latency.value_at_quantile(0.99) as f64 / raw_p99
    )?;
    for phase in &phases {
        let l = &phase["latency"];
        writeln!(
            md,
            "| open loop {:.0} % | {:.0} | {:.0} | {} | {} | {} | {} | {:.1}× |",
            phase["load"].as_f64().unwrap_or(0.0) * 100.0,
            phase["offered_per_s"].as_f64().unwrap_or(0.0),
            phase["achieved_per_s"].as_f64().unwrap_or(0.0),
            l["p50_us"],
            l["p99_us"],
            l["p999_us"],
            l["max_us"],
            l["p99_us"].as_f64().unwrap_or(0.0) / raw_p99
        )?;
    }
    writeln!(
        md,
        "\nLimit, same disk, same run: raw 4 KiB append + fdatasync p50 {} µs, p99 {} µs, max {} µs ({} rounds).",
        raw_h.value_at_quantile(0.5),
        raw_h.value_at_quantile(0.99),
        raw_h.max(),
        raw_h.len()
    )?;
    writeln!(md, "Group commit: {}", report["group_commit"])?;
    std::fs::write(out.join("report.md"), &md)?;
    std::io::stdout().write_all(&md)?;
    Ok(())
}

fn git_commit() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".into())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    match Args::parse().command {
        Command::Fsync {
            dir,
            rounds,
            block_bytes,
        } => {
            let mut latencies = engine::probe::fdatasync_latencies(&dir, rounds, block_bytes)?;
            let label = format!("raw {block_bytes} B append + fdatasync on {}", dir.display());
            engine::probe::summary(&mut std::io::stdout(), &label, &mut latencies)?;
            Ok(())
        }
        Command::Run {
            scenario,
            work_dir,
            out,
            processes,
            clients,
            messages,
            seconds,
            loads,
        } => run(scenario, &work_dir, &out, processes, clients, messages, seconds, &loads),
    }
}
