//! `hewitt-perf`: Hewitt's load generator and the limit probes its reports compare against.
//!
//! `hewitt-perf report` measures, in one run: the machine's limits (memcpy, O_DIRECT write
//! bandwidth, append + fdatasync latency, a raw wasmtime loop on the same modules), the log
//! alone (durable appends of 100 B, 1 KiB and 10 KiB records), every scenario through the
//! engine's API (no HTTP), and every scenario over HTTP against a node in a child process
//! (closed loop for the peak, then open loop at fractions of it with latency measured from the
//! intended send time). It writes `report.json`, `report.md` and SVG plots into `--out`.
//! perf/README.md describes each part.

// Nodes run in this binary (the engine parts in this process, the HTTP parts in a child): they
// get the allocator the `hewitt` binary uses.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod big_restart;
mod engine_run;
mod hibernation_run;
mod http_run;
mod limits;
mod log_run;
mod plot;
mod report;
mod rollback_run;
mod workload;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

use crate::http_run::HttpOptions;
use crate::limits::LimitOptions;
use crate::report::Report;
use crate::workload::Scenario;

#[derive(Parser)]
#[command(name = "hewitt-perf", about = "Hewitt's load generator and limit probes")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

/// The parts of a report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Part {
    /// Durable appends to the log alone.
    Log,
    /// The scenarios through the engine's API.
    Engine,
    /// The scenarios over HTTP.
    Http,
    /// A restart: a log written by the `many` scenario, opened, read back and replayed.
    Restart,
    /// A restart with a large log (`--big-restart-records`, 10 M by default) up to serving.
    BigRestart,
    /// The `many` scenario's closed-loop peak over HTTP at each of `--scaling-shards`.
    Scaling,
    /// Ten times the `many` scenario's peak offered over HTTP: what is acknowledged, refused.
    Overload,
    /// A spawn storm with few processes live (the rest hibernate), then wakes.
    Hibernation,
    /// A failed message on a 64 MiB process undone in place, beside a message that stands and
    /// a full-copy rollback.
    Rollback,
}

// Parsed once at start: the size of the report's options costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Measures the limits, then the selected parts and scenarios, and writes the report.
    Report {
        /// Where report.json, report.md and the plots go.
        #[arg(long, default_value = "target/perf/report")]
        out: PathBuf,
        /// Parent of the fresh data dirs and probe files (its disk is the one measured).
        #[arg(long, default_value = "target/perf")]
        work_dir: PathBuf,
        /// Parts to run.
        #[arg(
            long,
            value_enum,
            value_delimiter = ',',
            default_value = "log,engine,restart,big-restart,http,scaling,overload,hibernation,rollback"
        )]
        parts: Vec<Part>,
        /// Scenarios to run (engine and HTTP parts).
        #[arg(
            long,
            value_enum,
            value_delimiter = ',',
            default_value = "many,hot,pingpong,spawn,exchange"
        )]
        scenarios: Vec<Scenario>,
        /// Processes in the `many` scenario (pairs × 2 in `pingpong`).
        #[arg(long, default_value_t = 64)]
        processes: usize,
        /// Concurrent HTTP clients of the closed loop.
        #[arg(long, default_value_t = 16)]
        clients: usize,
        /// Client threads of the open loops (each waits for its acknowledgement, so there must be
        /// enough of them to keep every message on schedule).
        #[arg(long, default_value_t = 64)]
        open_loop_clients: usize,
        /// Client messages of each HTTP closed-loop phase.
        #[arg(long, default_value_t = 5000)]
        messages: u64,
        /// Seconds of each HTTP open-loop phase.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        /// Offered loads of the open-loop phases, as fractions of the measured peak.
        #[arg(long, value_delimiter = ',', default_value = "0.1,0.5,0.9")]
        loads: Vec<f64>,
        /// Client messages of each engine run (a spawn storm is capped at 5000 processes).
        #[arg(long, default_value_t = 20_000)]
        engine_messages: usize,
        /// Messages the engine admits per fdatasync, as that many concurrent clients would.
        #[arg(long, default_value_t = 256)]
        batch: usize,
        /// Client messages written before the restart part restarts.
        #[arg(long, default_value_t = 100_000)]
        restart_messages: usize,
        /// Records of the large restart (the `big-restart` part; 10 M is the target size).
        #[arg(long, default_value_t = 10_000_000)]
        big_restart_records: u64,
        /// MiB appended per record size in the log part, by each log when several append at once:
        /// 64 of the node's 16 MiB batches, so that filling the first batch and waiting for the
        /// last weigh little (at 256 MiB, sixteen batches, runs of the same disk in the same
        /// hour gave 0.75 to 1.3 GB/s).
        #[arg(long, default_value_t = 1024)]
        log_mib: usize,
        /// Shards of the node in the HTTP part (default: the cores available).
        #[arg(long)]
        shards: Option<usize>,
        /// Processes of the hibernation part's spawn storm (1 M is the target size).
        #[arg(long, default_value_t = 100_000)]
        hibernation_processes: usize,
        /// Client threads of the overload part's open loop.
        #[arg(long, default_value_t = 256)]
        overload_clients: usize,
        /// Shard counts of the scaling part.
        #[arg(long, value_delimiter = ',', default_value = "1,2")]
        scaling_shards: Vec<usize>,
        /// Pins the node's shards to cores 0..N and the HTTP load generator's threads to the
        /// cores after them, and each engine run of the scaling part to a core of its own: for a
        /// machine with cores to spare, so that node and load generator do not compete.
        #[arg(long)]
        pin: bool,
        /// `shards_spin_before_park_us` of the nodes of the HTTP, scaling and overload parts
        /// (default: the node's).
        #[arg(long)]
        spin_before_park_us: Option<u64>,
        /// `http.write_wait_ms` of the overload part's node (default: the node's).
        #[arg(long)]
        write_wait_ms: Option<u64>,
        /// HTTP clients that compute placement: each item goes to the port of the shard that owns
        /// its process (the node's `http.shard_ports_base`), so no request is handed across
        /// shards. Without it items go to the node's port, where any shard takes them.
        #[arg(long)]
        shard_aware: bool,
        /// Log batches written with O_DIRECT (the node's `log.direct_io`), in the log part and
        /// the nodes of the HTTP parts.
        #[arg(long)]
        log_direct_io: bool,
        /// Tiny sizes everywhere: proves every part and scenario works in seconds (CI).
        #[arg(long)]
        smoke: bool,
    },
    /// Runs a node for the HTTP parts (started by `report` as a child process); prints its
    /// addresses once it serves and stops it when standard input ends.
    #[command(hide = true)]
    Node(http_run::NodeSpec),
    /// Raw append + fdatasync latency of a disk, alone.
    Fsync {
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        #[arg(long, default_value_t = 1000)]
        rounds: usize,
        #[arg(long, default_value_t = 4096)]
        block_bytes: usize,
    },
}

/// Processes a spawn storm may create through the engine's API (each holds a pool slot until
/// hibernation exists).
const ENGINE_SPAWN_MAX: usize = 5000;

fn main() {
    if let Err(error) = engine::allocator::never_purge() {
        eprintln!("hewitt-perf: warning: {error}");
    }
    // Thousands of client connections in the overload part (and the node's, in its process).
    engine::node::raise_open_files_limit();
    if let Err(e) = run(Args::parse().command) {
        eprintln!("hewitt-perf: {e}");
        std::process::exit(1);
    }
}

fn run(command: Command) -> Result<(), String> {
    match command {
        Command::Node(spec) => http_run::serve(&spec),
        Command::Fsync {
            dir,
            rounds,
            block_bytes,
        } => {
            let mut latencies =
                engine::probe::fdatasync_latencies(&dir, rounds, block_bytes).map_err(|e| e.to_string())?;
            let label = format!("raw {block_bytes} B append + fdatasync on {}", dir.display());
            engine::probe::summary(&mut std::io::stdout(), &label, &mut latencies).map_err(|e| e.to_string())
        }
        Command::Report {
            out,
            work_dir,
            parts,
            scenarios,
            processes,
            clients,
            open_loop_clients,
            messages,
            seconds,
            loads,
            engine_messages,
            batch,
            restart_messages,
            big_restart_records,
            log_mib,
            shards,
            scaling_shards,
            overload_clients,
            hibernation_processes,
            pin,
            spin_before_park_us,
            write_wait_ms,
            shard_aware,
            log_direct_io,
            smoke,
        } => {
            let shards = shards.unwrap_or_else(engine::node::default_shards);
            let command = std::env::args().collect::<Vec<_>>().join(" ");
            let work_dir = work_dir.join(format!("run-{}", std::process::id()));
            std::fs::create_dir_all(&work_dir).map_err(|e| format!("{}: {e}", work_dir.display()))?;
            let restart_messages = if smoke {
                restart_messages.min(200)
            } else {
                restart_messages
            };
            let (limit_options, http, engine_messages, batch, log_bytes) = if smoke {
                let http = HttpOptions {
                    processes: processes.min(4),
                    clients: clients.min(2),
                    open_loop_clients: open_loop_clients.min(4),
                    messages: messages.min(40),
                    seconds: seconds.min(0.3),
                    loads: vec![0.5],
                    shards,
                    pin,
                    spin_before_park_us,
                    write_wait_ms,
                    shard_aware,
                    log_direct_io,
                };
                (
                    LimitOptions::smoke(),
                    http,
                    engine_messages.min(64),
                    batch.min(16),
                    1 << 20,
                )
            } else {
                let http = HttpOptions {
                    processes,
                    clients,
                    open_loop_clients,
                    messages,
                    seconds,
                    loads,
                    shards,
                    pin,
                    spin_before_park_us,
                    write_wait_ms,
                    shard_aware,
                    log_direct_io,
                };
                (LimitOptions::full(), http, engine_messages, batch, log_mib << 20)
            };
            eprintln!("limits ...");
            let limits = limits::measure(&work_dir, limit_options)?;
            let mut report = Report::stamp(command, limits);
            report.shards = shards;
            report.pinned = pin;
            report.shard_aware = shard_aware;
            report.log_direct_io = log_direct_io;
            report.spin_before_park_us = spin_before_park_us;
            if parts.contains(&Part::Log) {
                // One log alone, then one per shard at once (as the node runs them).
                let log_counts = if shards > 1 { vec![1, shards] } else { vec![1] };
                for (record_bytes, &log_shards) in [100, 1024, 10 * 1024]
                    .into_iter()
                    .flat_map(|bytes| log_counts.iter().map(move |count| (bytes, count)))
                {
                    let dir = work_dir.join(format!("log-{record_bytes}"));
                    let pin_logs = pin && log_shards <= report.cores;
                    let run = log_run::run(&dir, record_bytes, log_bytes, log_direct_io, log_shards, pin_logs)?;
                    eprintln!(
                        "log {record_bytes} B, {log_shards} log(s): {:.0} records/s, {:.0} MB/s payload, {:.0} records per fdatasync, executor busy {:.0} %",
                        run.records_per_s,
                        run.payload_mb_per_s,
                        run.records_per_batch,
                        run.executor_busy * 100.0
                    );
                    report.log.push(run);
                }
                // Acknowledgement latency at 10 % and 50 % of the 1 KiB peak, open loop.
                let peak = report
                    .log
                    .iter()
                    .find(|r| r.record_bytes == 1024 && r.shards == 1)
                    .map_or(1000.0, |r| r.records_per_s);
                for fraction in [0.1, 0.5] {
                    let dir = work_dir.join(format!("log-ack-{}", (fraction * 100.0) as u32));
                    let seconds = if smoke { 0.5 } else { 10.0 };
                    let run = log_run::ack_latency(&dir, 1024, peak * fraction, fraction, seconds, log_direct_io)?;
                    eprintln!(
                        "log ack at {:.0} % ({:.0} records/s): p50 {} µs, p99 {} µs, {:.0} records per fdatasync, executor busy {:.0} %; raw open loop p50 {} µs, p99 {} µs",
                        fraction * 100.0,
                        run.offered_per_s,
                        run.latency.p50_us,
                        run.latency.p99_us,
                        run.records_per_batch,
                        run.executor_busy * 100.0,
                        run.raw_open_loop.p50_us,
                        run.raw_open_loop.p99_us
                    );
                    report.log_ack.push(run);
                }
            }
            if parts.contains(&Part::Engine) {
                for &scenario in &scenarios {
                    let count = if scenario == Scenario::Spawn {
                        engine_messages.min(ENGINE_SPAWN_MAX)
                    } else {
                        engine_messages
                    };
                    let dir = work_dir.join(format!("engine-{}", scenario.name()));
                    let run = engine_run::run(scenario, &dir, http.processes, count, batch, None)?;
                    eprintln!(
                        "engine {}: {:.0} client msg/s, {:.0} all msg/s",
                        run.scenario, run.messages_per_s, run.all_messages_per_s
                    );
                    report.engine.push(run);
                }
            }
            if parts.contains(&Part::Restart) {
                let dir = work_dir.join("restart");
                let run = engine_run::restart(&dir, http.processes, restart_messages, batch)?;
                eprintln!(
                    "restart: {} records, open {:.0} ms, index {:.0} ms, replay {:.0} ms; checkpoint {:.0} ms ({} B); from it: serving after {:.0} ms (resume {:.0} ms, {} messages spared), replay {:.0} ms",
                    run.records,
                    run.open_ms,
                    run.index_ms,
                    run.replay_ms,
                    run.checkpoint_ms,
                    run.checkpoint_bytes,
                    run.resumed_serving_ms,
                    run.resume_ms,
                    run.resumed_messages,
                    run.resumed_replay_ms
                );
                report.restart = Some(run);
            }
            if parts.contains(&Part::BigRestart) {
                let dir = work_dir.join("big-restart");
                let records = if smoke {
                    big_restart_records.min(2000)
                } else {
                    big_restart_records
                };
                let run = big_restart::run(&dir, 1000.min(records as usize).max(1), records)?;
                eprintln!(
                    "big restart: {} records ({:.1} GiB); with the saved index: open {:.0} ms, load {:.0} ms: serving after {:.2} s (each: {:?} ms); \
                     without: open {:.0} ms, read {:.0} ms: serving after {:.2} s (each: {:?} ms)",
                    run.records,
                    run.log_bytes as f64 / f64::from(1 << 30),
                    run.indexed_open_ms,
                    run.indexed_load_ms,
                    run.indexed_serving_ms / 1e3,
                    run.indexed_serving_ms_each.iter().map(|ms| ms.round()).collect::<Vec<_>>(),
                    run.open_ms,
                    run.index_ms,
                    run.serving_ms / 1e3,
                    run.serving_ms_each.iter().map(|ms| ms.round()).collect::<Vec<_>>()
                );
                report.big_restart = Some(run);
            }
            if parts.contains(&Part::Http) {
                for &scenario in &scenarios {
                    report.http.push(http_run::run(scenario, &work_dir, &http)?);
                    // Let the last node's sockets and threads wind down before the next one.
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
            if parts.contains(&Part::Scaling) {
                for &count in &scaling_shards {
                    let options = HttpOptions {
                        shards: count,
                        loads: Vec::new(),
                        ..http.clone()
                    };
                    let run = http_run::run(Scenario::Many, &work_dir, &options)?;
                    // The same scenario through the engine's API: `count` shard cores at once,
                    // each on its own thread with its own log and processes, items signed ahead
                    // (the load generator costs almost nothing here).
                    let threads: Vec<_> = (0..count)
                        .map(|index| {
                            let dir = work_dir.join(format!("scaling-{count}-{index}"));
                            let processes = (http.processes / count).max(1);
                            let core = (pin && count <= report.cores).then_some(index);
                            std::thread::spawn(move || {
                                engine_run::run(Scenario::Many, &dir, processes, engine_messages, batch, core)
                            })
                        })
                        .collect();
                    let mut engine_total = 0.0;
                    for thread in threads {
                        let run = thread.join().map_err(|_| "a scaling thread panicked".to_owned())??;
                        engine_total += run.messages_per_s;
                    }
                    eprintln!(
                        "scaling {count} shards: http {:.0}/s ({:.1} shard CPU µs/msg), engine {engine_total:.0}/s",
                        run.peak.achieved_per_s, run.peak.shard_cpu_us_per_message
                    );
                    report.scaling.push(report::ScalingPoint {
                        shards: count,
                        client_messages_per_s: run.peak.achieved_per_s,
                        all_messages_per_s: run.peak.all_messages_per_s,
                        p99_us: run.peak.latency.p99_us,
                        shard_cpu_us_per_message: run.peak.shard_cpu_us_per_message,
                        handed_over_share: run.peak.handed_over_share,
                        shards_busy: run.peak.shards_busy,
                        engine_messages_per_s: engine_total,
                    });
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
            if parts.contains(&Part::Rollback) {
                let run = rollback_run::run(if smoke { 5 } else { 200 })?;
                println!(
                    "rollback on {} MiB: a message that stands {:.1} µs untracked, {:.1} µs tracked; a failed one undone in place {:.1} µs ({} pages); full-copy rollback {:.0} µs",
                    run.memory_bytes >> 20,
                    run.untracked_message_us,
                    run.tracked_message_us,
                    run.undone_message_us,
                    run.pages_undone,
                    run.full_copy_rollback_us
                );
                report.rollback = Some(run);
            }
            if parts.contains(&Part::Hibernation) {
                let (count, wakes) = if smoke {
                    (hibernation_processes.min(300), 50)
                } else {
                    (hibernation_processes, 2000)
                };
                let run = hibernation_run::run(&work_dir.join("hibernation"), count, wakes)?;
                eprintln!(
                    "hibernation: {} processes at {:.0} spawns/s, {:.0} B each ({} asleep), wake p50 {} µs p99 {} µs, live p50 {} µs p99 {} µs",
                    run.processes,
                    run.spawns_per_s,
                    run.bytes_per_process,
                    run.hibernated,
                    run.wake.p50_us,
                    run.wake.p99_us,
                    run.live.p50_us,
                    run.live.p99_us
                );
                report.hibernation = Some(run);
            }
            if parts.contains(&Part::Overload) {
                let clients = if smoke {
                    overload_clients.min(8)
                } else {
                    overload_clients
                };
                report.overload = Some(http_run::overload(&work_dir, &http, 10.0, clients)?);
            }
            std::fs::remove_dir_all(&work_dir).map_err(|e| format!("{}: {e}", work_dir.display()))?;
            let md = report.write(&out)?;
            println!("{md}");
            eprintln!("report written to {}", out.display());
            Ok(())
        }
    }
}
