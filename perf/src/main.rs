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

mod engine_run;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand, ValueEnum};
use engine::client::{fresh_anchor, Client};
use engine::compute::samples;
use engine::node::{self, NodeConfig};
use hdrhistogram::Histogram;
use scheduler::data_item::DataItem;
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
    /// One matching-engine process (the exchange sample) fed the exchange-core order mix.
    Exchange,
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
    /// The engine alone through its API (no HTTP, no client signing in the timed loop):
    /// durable messages/s and where each message's time goes.
    Engine {
        /// Parent of the fresh data dir (its disk is the one measured).
        #[arg(long, default_value = "target/perf")]
        work_dir: PathBuf,
        #[arg(long, default_value_t = 64)]
        processes: usize,
        #[arg(long, default_value_t = 20_000)]
        messages: usize,
        /// Messages admitted per fdatasync, as that many concurrent clients would land them.
        #[arg(long, default_value_t = 256)]
        batch: usize,
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

/// Accounts trading on the exchange, as in exchange-core's workload.
const EXCHANGE_ACCOUNTS: usize = 1000;
/// Orders resting in the book before measuring; the ids 1..=this are the ones moved,
/// cancelled and re-placed.
const EXCHANGE_RESTING_ORDERS: u64 = 1000;
/// The mid price, in ticks.
const EXCHANGE_MID: u64 = 10_000;

/// What each ticket sends.
enum Workload {
    /// `Action: Increment` to the counters, round robin.
    Counter { targets: Vec<ProcessId>, signer: Signer },
    /// The exchange-core mix to one exchange process.
    Exchange { process: ProcessId, accounts: Vec<Signer> },
}

/// splitmix64: a well-mixed stream of choices from the ticket number.
fn mix(ticket: u64) -> u64 {
    let mut z = ticket.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Workload {
    /// A resting order of the book: odd ids buy below the mid, even ids sell above it.
    fn resting_order(id: u64, distance: u64) -> Vec<Tag> {
        let (side, price) = if id % 2 == 1 {
            ("Buy", EXCHANGE_MID - 1 - distance)
        } else {
            ("Sell", EXCHANGE_MID + 1 + distance)
        };
        vec![
            Tag::new("Action", "Place"),
            Tag::new("Order-Id", id.to_string()),
            Tag::new("Side", side),
            Tag::new("Price", price.to_string()),
            Tag::new("Size", "10"),
            Tag::new("Type", "GTC"),
        ]
    }

    /// The signed item of `ticket`. For the exchange: 82 % move a resting order (within its
    /// side, so it stays in the book), 6 % cancel one, 9 % place a GTC with one of the book's ids
    /// (a duplicate while that order rests, close enough to the mid to cross sometimes), 3 %
    /// an aggressive IOC with a fresh id. Orders are signed by their owning account.
    fn item(&self, ticket: u64) -> DataItem {
        match self {
            Workload::Counter { targets, signer } => {
                let target = targets[ticket as usize % targets.len()];
                let tags = vec![
                    Tag::new("Data-Protocol", "ao"),
                    Tag::new("Type", "Message"),
                    Tag::new("Action", "Increment"),
                ];
                signer.sign(Some(target.0), Some(fresh_anchor()), tags, Vec::new())
            }
            Workload::Exchange { process, accounts } => {
                let r = mix(ticket);
                let id = 1 + (r >> 8) % EXCHANGE_RESTING_ORDERS;
                let distance = (r >> 24) % 20;
                let (owner, mut tags) = match r % 100 {
                    0..=81 => {
                        let price = if id % 2 == 1 {
                            EXCHANGE_MID - 1 - distance
                        } else {
                            EXCHANGE_MID + 1 + distance
                        };
                        let tags = vec![
                            Tag::new("Action", "Move"),
                            Tag::new("Order-Id", id.to_string()),
                            Tag::new("Price", price.to_string()),
                        ];
                        (id, tags)
                    }
                    82..=87 => (
                        id,
                        vec![Tag::new("Action", "Cancel"), Tag::new("Order-Id", id.to_string())],
                    ),
                    88..=96 => (id, Self::resting_order(id, distance.saturating_sub(3))),
                    _ => {
                        let fresh = EXCHANGE_RESTING_ORDERS + 1 + ticket;
                        let (side, price) = if r >> 40 & 1 == 1 {
                            ("Buy", EXCHANGE_MID + 25)
                        } else {
                            ("Sell", EXCHANGE_MID - 25)
                        };
                        let tags = vec![
                            Tag::new("Action", "Place"),
                            Tag::new("Order-Id", fresh.to_string()),
                            Tag::new("Side", side),
                            Tag::new("Price", price.to_string()),
                            Tag::new("Size", "5"),
                            Tag::new("Type", "IOC"),
                        ];
                        (fresh, tags)
                    }
                };
                tags.splice(0..0, [Tag::new("Data-Protocol", "ao"), Tag::new("Type", "Message")]);
                let account = &accounts[owner as usize % accounts.len()];
                account.sign(Some(process.0), Some(fresh_anchor()), tags, Vec::new())
            }
        }
    }
}

/// Sends tickets `first..first + total` from `clients` threads. Each latency is measured from
/// the message's due time: its send time in a closed loop, its slot in the schedule in an open
/// loop, so a stalled node is charged for every message it delayed. Returns the achieved
/// messages/s and the latency histogram (µs).
fn drive(
    url: &str,
    workload: &Arc<Workload>,
    clients: usize,
    first: u64,
    total: u64,
    pace: Pace,
) -> (f64, Histogram<u64>) {
    let next = Arc::new(AtomicU64::new(0));
    let began = match pace {
        Pace::Closed => Instant::now(),
        Pace::Open { start, .. } => start,
    };
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            let (next, url, workload) = (Arc::clone(&next), url.to_owned(), Arc::clone(workload));
            std::thread::spawn(move || {
                let client = Client::new(&url, Signer::generate_ed25519());
                let mut h = histogram();
                loop {
                    let ticket = next.fetch_add(1, Ordering::Relaxed);
                    if ticket >= total {
                        return h;
                    }
                    let bytes = workload.item(first + ticket).to_bytes();
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
    let (scenario_name, count, workload) = match scenario {
        Scenario::Many | Scenario::Hot => {
            let module = setup.load_module(
                samples::wasm("counter").expect("counter sample"),
                "wasm32-unknown-unknown",
                &[],
            )?;
            let count = if matches!(scenario, Scenario::Many) {
                processes.max(1)
            } else {
                1
            };
            let targets: Vec<ProcessId> = (0..count)
                .map(|_| setup.spawn(module, node.address, &[], b""))
                .collect::<Result<_, _>>()?;
            let name = if count == 1 { "hot" } else { "many" };
            (
                name,
                count,
                Workload::Counter {
                    targets,
                    signer: Signer::generate_ed25519(),
                },
            )
        }
        Scenario::Exchange => {
            let module = setup.load_module(
                samples::wasm("exchange").expect("exchange sample"),
                "wasm32-unknown-unknown",
                &[],
            )?;
            let process = setup.spawn(module, node.address, &[], b"")?;
            let accounts: Vec<Signer> = (0..EXCHANGE_ACCOUNTS).map(|_| Signer::generate_ed25519()).collect();
            // The book: EXCHANGE_RESTING_ORDERS resting orders on both sides of the mid.
            for id in 1..=EXCHANGE_RESTING_ORDERS {
                let mut tags = Workload::resting_order(id, mix(id) % 20);
                tags.splice(0..0, [Tag::new("Data-Protocol", "ao"), Tag::new("Type", "Message")]);
                let item = accounts[id as usize % accounts.len()].sign(
                    Some(process.0),
                    Some(fresh_anchor()),
                    tags,
                    Vec::new(),
                );
                setup.post_item(&item)?;
            }
            ("exchange", 1, Workload::Exchange { process, accounts })
        }
    };
    let workload = Arc::new(workload);
    eprintln!("{scenario_name}: {count} processes, {clients} clients");

    let mut first_ticket = 0;
    let (peak, peak_latency) = drive(&url, &workload, clients, first_ticket, messages, Pace::Closed);
    first_ticket += messages;
    eprintln!("peak {peak:.0} messages/s");
    let mut phases = Vec::new();
    for load in loads {
        let rate = peak * load;
        let total = (rate * seconds).max(1.0) as u64;
        let start = Instant::now() + Duration::from_millis(50);
        let (achieved, latency) = drive(
            &url,
            &workload,
            clients,
            first_ticket,
            total,
            Pace::Open { start, rate },
        );
        first_ticket += total;
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
        "workload": match scenario {
            Scenario::Many | Scenario::Hot => "Action=Increment to counter processes, round robin".to_owned(),
            Scenario::Exchange => format!(
                "exchange sample, {EXCHANGE_ACCOUNTS} accounts, {EXCHANGE_RESTING_ORDERS} resting orders; mix 82 % move, 6 % cancel, 9 % GTC, 3 % IOC (some cancels, moves and GTCs are rejected: a filled or cancelled order, a duplicate id)"
            ),
        },
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
        Command::Engine {
            work_dir,
            processes,
            messages,
            batch,
        } => {
            std::fs::create_dir_all(&work_dir)?;
            let data_dir = work_dir.join(format!("engine-{}", std::process::id()));
            let mut report = engine_run::run(&data_dir, processes, messages, batch)?;
            let mut raw = engine::probe::fdatasync_latencies(&data_dir, 1000, 4096)?;
            let quantile_us = |q: f64, raw: &mut Vec<Duration>| engine::probe::quantile(raw, q).as_micros() as u64;
            report["limits"] =
                json!({"fdatasync_4k": {"p50_us": quantile_us(0.5, &mut raw), "p99_us": quantile_us(0.99, &mut raw)}});
            report["commit"] = git_commit().into();
            report["cpu"] = cpu_model().into();
            std::fs::remove_dir_all(&data_dir)?;
            println!("{}", serde_json::to_string_pretty(&report)?);
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
