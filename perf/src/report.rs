//! The report: what every run measured, stamped with where it ran, as `report.json`, a Markdown
//! summary that states each figure as a ratio to its limit from the same run, and SVG plots.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::Value;

use crate::engine_run::{EngineRun, RestartRun};
use crate::limits::Limits;
use crate::log_run::AppendRun;

/// A latency histogram in µs, from 1 µs to a minute.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds (µs)")
}

pub fn record(h: &mut Histogram<u64>, latency: Duration) {
    let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX).max(1);
    h.saturating_record(us);
}

/// Percentiles of a histogram, µs.
#[derive(Clone, Debug, Serialize)]
pub struct Latency {
    pub count: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    pub mean_us: f64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Latency {
        Latency {
            count: h.len(),
            p50_us: h.value_at_quantile(0.5),
            p90_us: h.value_at_quantile(0.9),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
            mean_us: h.mean(),
        }
    }
}

/// One phase of an HTTP scenario.
#[derive(Clone, Debug, Serialize)]
pub struct Phase {
    pub label: String,
    /// The offered load as a fraction of the measured peak (open loop only).
    pub load: Option<f64>,
    pub offered_per_s: Option<f64>,
    /// Client messages acknowledged per second.
    pub achieved_per_s: f64,
    /// Every message the node assigned per second until it was idle again: client messages
    /// plus those its messenger carried.
    pub all_messages_per_s: f64,
    /// Acknowledgement latency from each message's intended send time.
    pub latency: Latency,
    /// CPU time the node's shard threads spent per client message (all shards, µs): what a
    /// message costs the node, whoever else shares its cores.
    pub shard_cpu_us_per_message: f64,
    /// Share of the client messages a shard handed to another (`hewitt_requests_handed_over_total`).
    pub handed_over_share: f64,
    /// The shard threads' CPU time over the phase's length (first due time until the node was
    /// idle again) and the shard count: near 1, the shard cores set the rate.
    pub shards_busy: f64,
}

impl Phase {
    pub fn line(&self) -> String {
        format!(
            "{}: {:.0} client msg/s ({:.0} all), p50 {} µs, p99 {} µs, max {} µs, {:.1} shard CPU µs/msg, {:.0} % handed over",
            self.label,
            self.achieved_per_s,
            self.all_messages_per_s,
            self.latency.p50_us,
            self.latency.p99_us,
            self.latency.max_us,
            self.shard_cpu_us_per_message,
            self.handed_over_share * 100.0
        )
    }
}

/// One scenario driven over HTTP.
#[derive(Clone, Debug, Serialize)]
pub struct ScenarioRun {
    pub scenario: String,
    pub driver: String,
    pub workload: String,
    pub processes: usize,
    pub clients: usize,
    pub open_loop_clients: usize,
    pub shards: usize,
    pub peak: Phase,
    pub open_loop: Vec<Phase>,
    /// The node's group-commit counters at the end (`/health`'s `log`).
    pub group_commit: Value,
}

/// Everything one `hewitt-perf report` measured.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub command: String,
    pub commit: String,
    pub cpu: String,
    pub kernel: String,
    pub cores: usize,
    pub shards: usize,
    /// `--pin`: shards on cores `0..N`, the HTTP load generator on the cores after them.
    pub pinned: bool,
    /// `--shard-aware`: HTTP clients send each item to its owner shard's own port.
    pub shard_aware: bool,
    /// `--spin-before-park-us`: the nodes' `shards_spin_before_park_us` (`None`: `auto`).
    pub spin_before_park_us: Option<u64>,
    /// `--log-direct-io`: the log part's batches written with O_DIRECT.
    pub log_direct_io: bool,
    pub unix_time: u64,
    pub durability: String,
    pub limits: Limits,
    pub log: Vec<AppendRun>,
    pub log_ack: Vec<crate::log_run::AckRun>,
    pub engine: Vec<EngineRun>,
    pub restart: Option<RestartRun>,
    pub big_restart: Option<crate::big_restart::BigRestartRun>,
    pub http: Vec<ScenarioRun>,
    /// The `many` scenario's closed-loop peak over HTTP, per shard count.
    pub scaling: Vec<ScalingPoint>,
    /// Ten times the peak offered (see `http_run::overload`).
    pub overload: Option<crate::http_run::OverloadRun>,
    /// A spawn storm with few processes live (see `hibernation_run`).
    pub hibernation: Option<crate::hibernation_run::HibernationRun>,
    /// In-place undo on a 64 MiB process (see `rollback_run`).
    pub rollback: Option<crate::rollback_run::RollbackRun>,
}

/// One point of the scaling curve.
#[derive(Clone, Debug, Serialize)]
pub struct ScalingPoint {
    pub shards: usize,
    pub client_messages_per_s: f64,
    pub all_messages_per_s: f64,
    pub p99_us: u64,
    /// CPU time of the node's shard threads per client message over HTTP, all shards summed.
    pub shard_cpu_us_per_message: f64,
    /// Share of the client messages a shard handed to another.
    pub handed_over_share: f64,
    /// How busy the shard threads were during the closed loop (see [`Phase::shards_busy`]).
    pub shards_busy: f64,
    /// The same scenario through the engine's API, one shard core per thread, summed.
    pub engine_messages_per_s: f64,
}

/// Target of issue [shards]: 2 shards give at least this times the throughput of 1.
const TARGET_SCALING_2: f64 = 1.8;

/// Targets from issue [perf] and PERF.md.
const TARGET_MESSAGES_PER_S_PER_CORE: f64 = 1e6;
const TARGET_ORDERS_PER_S: f64 = 1e6;

impl Report {
    /// The median of `figure` over the scaling points of `shards` shards (a shard count may be
    /// listed several times in `--scaling-shards`, runs alternating, to tame noise).
    fn scaling_median(&self, shards: usize, figure: fn(&ScalingPoint) -> f64) -> Option<f64> {
        let mut values: Vec<f64> = self.scaling.iter().filter(|p| p.shards == shards).map(figure).collect();
        values.sort_by(f64::total_cmp);
        match values.len() {
            0 => None,
            n if n % 2 == 1 => Some(values[n / 2]),
            n => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
        }
    }

    /// Where the HTTP load generator ran, beside a node of `shards` shards, and where it sent.
    fn load_cores(&self, shards: usize) -> String {
        let cores = if self.pinned && shards < self.cores {
            format!(
                "The node's {shards} shards are pinned to cores 0..{shards} and the load generator's threads to the \
                 {} cores after them.",
                self.cores - shards
            )
        } else {
            "The load generator shares the machine's cores with the node.".to_owned()
        };
        format!("{cores} {} {}", self.spin(shards), self.ingress())
    }

    /// How long the shards of a node of `shards` shards spun before parking.
    fn spin(&self, shards: usize) -> String {
        let mut config = engine::node::NodeConfig::new("", "127.0.0.1:0".parse().expect("an address"));
        config.cpu = (self.pinned && shards <= self.cores).then_some(0);
        config.spin_before_park_us = self.spin_before_park_us;
        let source = if self.spin_before_park_us.is_some() {
            "`--spin-before-park-us`"
        } else {
            "`shards_spin_before_park_us = \"auto\"`"
        };
        match config.spin_before_park() {
            0 => format!("Idle shards park at once ({source})."),
            us => format!("Idle shards spin {us} µs before they park ({source})."),
        }
    }

    /// Where the HTTP clients sent their items.
    fn ingress(&self) -> &'static str {
        if self.shard_aware {
            "Clients compute placement and send each item to the port of the shard that owns its process \
             (`http.shard_ports_base`, `--shard-aware`): nothing is handed across shards."
        } else {
            "Clients send to the node's port, where any shard takes an item and hands it to the shard that owns \
             its process (half of them with 2 shards)."
        }
    }

    pub fn stamp(command: String, limits: Limits) -> Report {
        Report {
            command,
            commit: git_commit(),
            cpu: cpu_model(),
            kernel: kernel(),
            cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            shards: engine::node::default_shards(),
            pinned: false,
            shard_aware: false,
            spin_before_park_us: None,
            unix_time: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            durability: "durable: every message acknowledged (or counted) only after the fdatasync that covers it; \
                         no memory-only mode exists"
                .to_owned(),
            limits,
            log: Vec::new(),
            engine: Vec::new(),
            restart: None,
            big_restart: None,
            log_direct_io: false,
            log_ack: Vec::new(),
            http: Vec::new(),
            scaling: Vec::new(),
            overload: None,
            hibernation: None,
            rollback: None,
        }
    }

    /// Writes report.json, report.md and the plots into `out`; returns the Markdown.
    pub fn write(&self, out: &Path) -> Result<String, String> {
        std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
        let json = serde_json::to_string_pretty(self).map_err(|e| e.to_string())?;
        std::fs::write(out.join("report.json"), json).map_err(|e| e.to_string())?;
        let plots = crate::plot::draw(self, out)?;
        let md = self.markdown(&plots);
        std::fs::write(out.join("report.md"), &md).map_err(|e| e.to_string())?;
        Ok(md)
    }

    fn markdown(&self, plots: &[String]) -> String {
        let mut md = String::new();
        let l = &self.limits;
        let sync = l.fdatasync_4k();
        let raw_p99 = sync.latency.p99_us.max(1) as f64;
        let _ = writeln!(md, "# Hewitt performance report\n");
        let _ = writeln!(
            md,
            "commit {}, {}, kernel {}, {} cores, {} shard(s). Command: `{}`\n",
            self.commit, self.cpu, self.kernel, self.cores, self.shards, self.command
        );
        let _ = writeln!(md, "{}.\n", capitalise(&self.durability));
        if self.log_direct_io {
            let _ = writeln!(
                md,
                "Log batches written with O_DIRECT (`log.direct_io`, `--log-direct-io`).\n"
            );
        }

        let _ = writeln!(md, "## Limits, measured in this run\n");
        let _ = writeln!(md, "| limit | figure |\n|---|---|");
        let _ = writeln!(md, "| memcpy (warm buffer) | {:.1} GB/s |", l.memcpy_gb_per_s);
        let _ = writeln!(
            md,
            "| sequential O_DIRECT write, {} KiB blocks, {} MiB + fdatasync | {:.2} GB/s |",
            l.o_direct_block_bytes / 1024,
            l.o_direct_total_bytes >> 20,
            l.o_direct_write_gb_per_s
        );
        for f in &l.fdatasync {
            let _ = writeln!(
                md,
                "| append {} + fdatasync | p50 {} µs, p99 {} µs, max {} µs; {:.0} syncs/s |",
                bytes_label(f.append_bytes),
                f.latency.p50_us,
                f.latency.p99_us,
                f.latency.max_us,
                f.per_s
            );
        }
        for w in &l.wasm {
            let _ = writeln!(
                md,
                "| raw wasmtime loop, `{}` sample, `{}` (malloc + copy in, handle, read out) | {:.2} µs per call |",
                w.module, w.message, w.raw_wasmtime_us
            );
        }

        if !self.log.is_empty() {
            let _ = writeln!(md, "\n## The log alone: durable appends\n");
            let _ = writeln!(
                md,
                "Batches written {}.\n",
                if self.log_direct_io {
                    "with O_DIRECT (`log.direct_io`)"
                } else {
                    "through the page cache (the default; `--log-direct-io` for O_DIRECT)"
                }
            );
            let _ = writeln!(
                md,
                "Each record size twice: one log alone, then one log per shard appended to at once, each by its own executor thread, as the node's shards do (figures summed over the logs). \
                 One log's appends, framing and checksums, its copy into the write buffers and the submission of its I/O all run on its shard's thread: \
                 where that thread is busy nearly all the time, the log was bound by its core, not by the disk.\n"
            );
            let _ = writeln!(
                md,
                "| record | logs | records/s | payload MB/s | written MB/s | / O_DIRECT bandwidth | records per fdatasync | fdatasyncs/s / raw 1 MiB syncs/s | executor busy |"
            );
            let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|");
            let raw_1m = l.fdatasync.iter().find(|f| f.append_bytes == 1 << 20).unwrap_or(sync);
            for a in &self.log {
                let syncs_per_s = a.fdatasync_batches as f64 / a.seconds;
                let _ = writeln!(
                    md,
                    "| {} | {} | {:.0} | {:.0} | {:.0} | {:.0} % | {:.0} | {:.0} / {:.0} | {:.0} % |",
                    bytes_label(a.record_bytes),
                    a.shards,
                    a.records_per_s,
                    a.payload_mb_per_s,
                    a.written_mb_per_s,
                    100.0 * a.written_mb_per_s / (l.o_direct_write_gb_per_s * 1e3),
                    a.records_per_batch,
                    syncs_per_s,
                    raw_1m.per_s,
                    100.0 * a.executor_busy
                );
            }
        }

        if !self.log_ack.is_empty() {
            let _ = writeln!(md, "\n## The log alone: acknowledgement latency\n");
            let _ = writeln!(
                md,
                "1 KiB records appended open loop by a producer that wakes every {} µs (latency from each record's \
                 due time, so including its wait for the producer's turn, to the moment its fdatasync is seen done), beside the raw append + fdatasync of this disk: 4 KiB (one record) \
                 and the size nearest to the batches the log wrote at that load, each timed once per sync over a \
                 fraction of a second; and the raw open loop: the same offered load on the same disk with no log \
                 (write whatever has arrived, fdatasync, repeat), timed per record like the log over as long, which \
                 charges a stall of the disk to every record it delays. The log and the raw open loop alternate in \
                 {} rounds of {:.1} s each (a fresh log each round), so that the disk's stalls fall on both alike. \
                 Target: p99 ≤ 2× raw at 50 % load.\n",
                crate::log_run::PRODUCER_TICK.as_micros(),
                self.log_ack.first().map_or(1, |a| a.rounds),
                self.log_ack.first().map_or(0.0, |a| a.round_seconds)
            );
            let _ = writeln!(
                md,
                "| load | records/s | records per fdatasync | p50 | p99 | raw 4 KiB p50 / p99 | raw at batch size p50 / p99 | p99 / raw at batch size | raw open loop p50 / p99 | p99 / raw open loop | log's fdatasyncs p50 / p99 / p99.9 / max | executor busy |"
            );
            let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|---|");
            for a in &self.log_ack {
                let batch_bytes = a.records_per_batch * 1040.0;
                let nearest = l
                    .fdatasync
                    .iter()
                    .min_by(|x, y| {
                        let d =
                            |f: &crate::limits::Fdatasync| (f.append_bytes as f64 / batch_bytes.max(1.0)).ln().abs();
                        d(x).total_cmp(&d(y))
                    })
                    .unwrap_or(sync);
                let _ = writeln!(
                    md,
                    "| {:.0} % | {:.0} | {:.0} | {} µs | {} µs | {} / {} µs | {} / {} µs ({}) | {:.1}× | {} / {} µs | {:.1}× | {} / {} / {} / {} µs | {:.0} % |",
                    a.load_fraction * 100.0,
                    a.achieved_per_s,
                    a.records_per_batch,
                    a.latency.p50_us,
                    a.latency.p99_us,
                    sync.latency.p50_us,
                    sync.latency.p99_us,
                    nearest.latency.p50_us,
                    nearest.latency.p99_us,
                    bytes_label(nearest.append_bytes),
                    a.latency.p99_us as f64 / nearest.latency.p99_us.max(1) as f64,
                    a.raw_open_loop.p50_us,
                    a.raw_open_loop.p99_us,
                    a.latency.p99_us as f64 / a.raw_open_loop.p99_us.max(1) as f64,
                    a.fdatasync.p50_us,
                    a.fdatasync.p99_us,
                    a.fdatasync.p999_us,
                    a.fdatasync.max_us,
                    100.0 * a.executor_busy
                );
            }
        }

        if !self.engine.is_empty() {
            let _ = writeln!(md, "\n## The engine alone, through its API (durable, no HTTP)\n");
            let _ = writeln!(
                md,
                "Per client message, µs: parse + verify the client's signature, admit (assignment signature + \
                 append), evaluate (and deliver what it sends), wait for the batch's fdatasync.\n"
            );
            let _ = writeln!(
                md,
                "| scenario | processes | batch | client msg/s | all msg/s | / 1 M target | verify | admit | evaluate | durable |"
            );
            let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|");
            for e in &self.engine {
                let s = &e.per_message_us;
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {:.0} | {:.0} | {:.4} | {:.1} | {:.1} | {:.1} | {:.1} |",
                    e.scenario,
                    e.processes,
                    e.batch,
                    e.messages_per_s,
                    e.all_messages_per_s,
                    e.all_messages_per_s / TARGET_MESSAGES_PER_S_PER_CORE,
                    s.parse_and_verify,
                    s.admit_sign_assignment_append,
                    s.evaluate_and_deliver,
                    s.wait_durable
                );
            }
            let _ = writeln!(md, "\n### Where evaluation goes, and whether JSON-1 matters\n");
            let _ = writeln!(
                md,
                "| module, message | raw wasmtime µs | engine `handle` µs (/ raw) | JSON-1 encode msg µs | decode result µs | JSON-1 share of the engine's per-message µs |"
            );
            let _ = writeln!(md, "|---|---|---|---|---|---|");
            for w in &l.wasm {
                let scenario = if w.module == "counter" { "many" } else { "exchange" };
                let per_message = self.engine.iter().find(|e| e.scenario == scenario).map(|e| {
                    let s = &e.per_message_us;
                    s.parse_and_verify + s.admit_sign_assignment_append + s.evaluate_and_deliver + s.wait_durable
                });
                let share = per_message
                    .map(|total| {
                        format!(
                            "{:.1} % of {total:.1} µs",
                            100.0 * (w.encode_msg_us + w.decode_result_us) / total
                        )
                    })
                    .unwrap_or_else(|| "-".to_owned());
                let _ = writeln!(
                    md,
                    "| {}, {} | {:.2} | {:.2} ({:.2}×) | {:.2} | {:.2} | {share} |",
                    w.module,
                    w.message,
                    w.raw_wasmtime_us,
                    w.engine_handle_us,
                    w.engine_handle_us / w.raw_wasmtime_us.max(1e-9),
                    w.encode_msg_us,
                    w.decode_result_us
                );
            }
        }

        if let Some(r) = &self.restart {
            let _ = writeln!(md, "\n## Restart\n");
            let _ = writeln!(
                md,
                "A log of {} assignment records ({:.1} MiB, {} processes) written by the `many` scenario, then \
                 read back through the engine's API.\n",
                r.records,
                r.log_bytes as f64 / f64::from(1 << 20),
                r.processes
            );
            let _ = writeln!(md, "| step | time | rate |\n|---|---|---|");
            let _ = writeln!(
                md,
                "| open the log (segments mapped, tail checked) | {:.1} ms | |",
                r.open_ms
            );
            let _ = writeln!(
                md,
                "| read it back into the index (until then: 503) | {:.1} ms | {:.0} records/s |",
                r.index_ms, r.index_records_per_s
            );
            let _ = writeln!(
                md,
                "| replay every message (serving meanwhile; /ready after) | {:.1} ms | {:.0} messages/s |",
                r.replay_ms, r.replay_messages_per_s
            );
            let _ = writeln!(
                md,
                "| take a checkpoint of every process ({:.1} MiB, synced) | {:.1} ms | |",
                r.checkpoint_bytes as f64 / f64::from(1 << 20),
                r.checkpoint_ms
            );
            let _ = writeln!(
                md,
                "| restart from it: open, index, resume {} messages (states and results read back) | {:.1} ms (resume {:.1} ms) | |",
                r.resumed_messages, r.resumed_serving_ms, r.resume_ms
            );
            let _ = writeln!(md, "| replay left after resuming | {:.1} ms | |", r.resumed_replay_ms);
            let _ = writeln!(
                md,
                "\nReplay is one shard core's evaluation speed. Time to serving, extrapolated linearly to 10 M \
                 records: {:.1} s (target ≤ 5 s).",
                r.serving_ms_at_10m_records / 1e3
            );
        }

        if let Some(b) = &self.big_restart {
            let _ = writeln!(md, "\n## Restart with a large log\n");
            let _ = writeln!(
                md,
                "{} assignment records ({:.2} GiB, {} processes) written straight to the log with real links and \
                 seeded signatures (written in {:.0} s), then restarted {} times (page cache warm):\n",
                b.records,
                b.log_bytes as f64 / f64::from(1 << 30),
                b.processes,
                b.write_s,
                crate::big_restart::RESTARTS
            );
            let each = |ms: &[f64]| {
                ms.iter()
                    .map(|ms| format!("{:.2} s", ms / 1e3))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let _ = writeln!(md, "| step | time | rate |\n|---|---|---|");
            let _ = writeln!(
                md,
                "| with the saved index: read it, open the log (sealed segments trusted) | {:.0} ms | |",
                b.indexed_open_ms
            );
            let _ = writeln!(
                md,
                "| with the saved index: load it into the shard, read the log after it | {:.0} ms | |",
                b.indexed_load_ms
            );
            let _ = writeln!(
                md,
                "| **serving, with the saved index** (fastest of the restarts; each: {}) | **{:.2} s** | target ≤ 5 s |",
                each(&b.indexed_serving_ms_each),
                b.indexed_serving_ms / 1e3
            );
            let _ = writeln!(
                md,
                "| check of the trusted segments (blocking pool, while serving) | {:.0} ms | {:.2} GiB/s |",
                b.check_sealed_ms,
                b.log_bytes as f64 / f64::from(1 << 30) / (b.check_sealed_ms / 1e3)
            );
            let _ = writeln!(
                md,
                "| without an index: open the log (every frame checked) | {:.0} ms | |",
                b.open_ms
            );
            let _ = writeln!(
                md,
                "| without an index: read every record back | {:.0} ms | {:.0} records/s |",
                b.index_ms, b.index_records_per_s
            );
            let _ = writeln!(
                md,
                "| serving, without an index (each: {}) | {:.2} s | |",
                each(&b.serving_ms_each),
                b.serving_ms / 1e3
            );
            let gib = |bytes: u64| bytes as f64 / f64::from(1 << 30);
            let _ = writeln!(
                md,
                "| sealed segments packed with zstd level {} (one thread) | {:.1} s | {:.2} GiB → {:.2} GiB ({:.1}x) |",
                crate::big_restart::PACK_LEVEL,
                b.pack_ms / 1e3,
                gib(b.sealed_bytes),
                gib(b.packed_bytes),
                b.sealed_bytes as f64 / b.packed_bytes.max(1) as f64
            );
            let _ = writeln!(
                md,
                "| every record read (checksums checked): plain, then packed | {:.2} s, {:.2} s | {:.0}, {:.0} records/s |",
                b.read_plain_ms / 1e3,
                b.read_packed_ms / 1e3,
                b.records as f64 / (b.read_plain_ms / 1e3),
                b.records as f64 / (b.read_packed_ms / 1e3)
            );
            let _ = writeln!(
                md,
                "\nThe index of the whole log was saved in {:.0} ms ({:.0} MiB: journal and message runs). Resident \
                 memory once serving: {:.0} MiB with the saved index, {:.0} MiB after reading the whole log.",
                b.index_save_ms,
                b.index_bytes as f64 / f64::from(1 << 20),
                b.indexed_rss_bytes as f64 / f64::from(1 << 20),
                b.rss_bytes as f64 / f64::from(1 << 20)
            );
        }

        if !self.http.is_empty() {
            let _ = writeln!(md, "\n## Over HTTP (signed ANS-104 items on loopback, durable)\n");
            let _ = writeln!(
                md,
                "Latency is from each message's intended send time (open loop: no coordinated omission); the ratio \
                 is p99 over the raw 4 KiB fdatasync p99 of this run ({} µs). {}\n",
                sync.latency.p99_us,
                self.load_cores(self.shards)
            );
            let _ = writeln!(
                md,
                "| scenario | phase | offered/s | client msg/s | all msg/s | p50 µs | p99 µs | p99.9 µs | max µs | p99 / raw fdatasync p99 |"
            );
            let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|");
            for run in &self.http {
                for p in std::iter::once(&run.peak).chain(&run.open_loop) {
                    let _ = writeln!(
                        md,
                        "| {} | {} | {} | {:.0} | {:.0} | {} | {} | {} | {} | {:.1}× |",
                        run.scenario,
                        p.label,
                        p.offered_per_s.map_or("-".to_owned(), |r| format!("{r:.0}")),
                        p.achieved_per_s,
                        p.all_messages_per_s,
                        p.latency.p50_us,
                        p.latency.p99_us,
                        p.latency.p999_us,
                        p.latency.max_us,
                        p.latency.p99_us as f64 / raw_p99
                    );
                }
            }
            let _ = writeln!(md);
            for run in &self.http {
                let _ = writeln!(
                    md,
                    "- {}: {} ({} processes, {} clients in the closed loop, {} in the open loops); group commit {}",
                    run.scenario, run.workload, run.processes, run.clients, run.open_loop_clients, run.group_commit
                );
            }
        }

        if !self.scaling.is_empty() {
            let _ = writeln!(
                md,
                "\n## Scaling with shards (the `many` scenario over HTTP, closed loop)\n"
            );
            let _ = writeln!(
                md,
                "The same workload and clients on a fresh node per shard count; this machine has {} cores. {} {} {} {}\n",
                self.cores,
                if self.pinned {
                    "Each node's shards are pinned to the first cores and the load generator's threads to the \
                     cores left (where none are left, they share them)."
                } else {
                    "The load generator shares them with the node."
                },
                self.spin(1),
                if self.pinned && self.scaling.iter().any(|p| p.shards > self.cores) {
                    "(More shards than cores are not pinned, and so park at once.)"
                } else {
                    ""
                },
                self.ingress()
            );
            let _ = writeln!(
                md,
                "Over HTTP the node and its clients (signing, HTTP) share the cores; through the engine's API the \
                 items are signed ahead and each shard core runs on its own thread with its own log (parking at \
                 once, whatever the node's spin), so that column shows what the shard cores themselves scale to. Shard CPU is the time the node's shard \
                 threads ran per client message (all shards); shards busy is their CPU time over the closed \
                 loop's length (until the node was idle again) and the shard count: well under 100 % means the clients' concurrency, not the shard \
                 cores, set the peak.\n"
            );
            let _ = writeln!(
                md,
                "| shards | HTTP client msg/s | all msg/s | p99 µs | shard CPU µs/msg | shards busy | × 1 shard | engine API msg/s | × 1 shard |"
            );
            let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|");
            let base = self.scaling_median(1, |p| p.client_messages_per_s);
            let engine_base = self.scaling_median(1, |p| p.engine_messages_per_s);
            for p in &self.scaling {
                let ratio = base.map_or("-".to_owned(), |b| format!("{:.2}×", p.client_messages_per_s / b));
                let engine_ratio =
                    engine_base.map_or("-".to_owned(), |b| format!("{:.2}×", p.engine_messages_per_s / b));
                let _ = writeln!(
                    md,
                    "| {} | {:.0} | {:.0} | {} | {:.1} | {:.0} % | {ratio} | {:.0} | {engine_ratio} |",
                    p.shards,
                    p.client_messages_per_s,
                    p.all_messages_per_s,
                    p.p99_us,
                    p.shard_cpu_us_per_message,
                    p.shards_busy * 100.0,
                    p.engine_messages_per_s
                );
            }
        }

        if let Some(o) = &self.overload {
            let _ = writeln!(
                md,
                "\n## Overload (the `many` scenario over HTTP, {} shards)\n",
                o.shards
            );
            let _ = writeln!(
                md,
                "Closed-loop peak first (the median of two closed loops before the flood and one after: {}), then \
                 an open loop offering 10× the higher of the first two from {} client threads; each \
                 shard's listener holds at most {} writes (`http.writes_in_flight_max`) and as many in line \
                 (`http.writes_waiting_max`); a write waits in line up to {} ms (`http.write_wait_ms`), and one \
                 beyond the line is held as long, then answered 503. A thread whose message is refused sends its \
                 next one at once if it is due. The threads send every message offered, so where they manage less \
                 than the offered rate the flood lasts longer and the p99 from each message's due time holds their \
                 lag; the p99 from when it was sent is the node's part, which the line bounds. {} Resident memory is the node process's (the load \
                 generator runs in another). It grows with the open connections (their buffers; at most \
                 `http.connections_max` per shard) and with the messages the node holds (their results in memory \
                 up to `limits.results_memory_bytes_max` a shard; the log's mapped pages are file-backed), not \
                 with the requests refused.\n",
                o.peaks_per_s
                    .iter()
                    .map(|p| format!("{p:.0}/s"))
                    .collect::<Vec<_>>()
                    .join(", "),
                o.clients,
                o.writes_in_flight_max,
                o.write_wait_ms,
                self.load_cores(o.shards)
            );
            let _ = writeln!(md, "| peak/s | offered/s | sent/s | acknowledged/s | refused (503)/s | acknowledged / peak | p99 acknowledged µs, from due, from sent | RSS before → most in 1st half, 2nd half of the flood → after MiB | after: file-backed MiB, messages held |");
            let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|");
            let _ = writeln!(
                md,
                "| {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} % | {}, {} | {:.0} → {:.0}, {:.0} → {:.0} | {:.0}, {} |",
                o.peak_per_s,
                o.offered_per_s,
                o.sent_per_s,
                o.accepted_per_s,
                o.refused_per_s,
                100.0 * o.accepted_per_s / o.peak_per_s,
                o.accepted_p99_us,
                o.accepted_sent_p99_us,
                o.rss_before_bytes as f64 / f64::from(1 << 20),
                o.rss_first_half_max_bytes as f64 / f64::from(1 << 20),
                o.rss_second_half_max_bytes as f64 / f64::from(1 << 20),
                o.rss_after_bytes as f64 / f64::from(1 << 20),
                o.rss_file_after_bytes as f64 / f64::from(1 << 20),
                o.assigned_after
            );
        }

        if let Some(h) = &self.hibernation {
            let _ = writeln!(
                md,
                "\n## Hibernation (counter processes through the engine's API, one shard)\n"
            );
            let _ = writeln!(
                md,
                "A spawn storm of {} processes with at most {} live: the rest sleep (memory compressed with zstd, \
                 pool slot returned). Spawns are signed ahead; the rate counts admission, evaluation of nonce 0, \
                 hibernation and the group commit. Memory is the process's anonymous resident memory (`RssAnon`) \
                 after the storm less before, per process; it includes each process's spawn item, timeline entry and \
                 index entries, not only its sleeping memory.\n",
                h.processes, h.live_max
            );
            let _ = writeln!(
                md,
                "| spawns/s | bytes per process | asleep | wake + evaluate p50 / p99 µs | live evaluate p50 / p99 µs |"
            );
            let _ = writeln!(md, "|---|---|---|---|---|");
            let _ = writeln!(
                md,
                "| {:.0} | {:.0} | {} | {} / {} | {} / {} |",
                h.spawns_per_s,
                h.bytes_per_process,
                h.hibernated,
                h.wake.p50_us,
                h.wake.p99_us,
                h.live.p50_us,
                h.live.p99_us
            );
        }

        if let Some(r) = &self.rollback {
            let _ = writeln!(
                md,
                "\n## Rollback ({} MiB counter process, compute API)\n",
                r.memory_bytes >> 20
            );
            let _ = writeln!(
                md,
                "The counter's `Fail` writes a page or so (its count, the msg and output buffers) and returns an \
                 Error result; medians of each.\n"
            );
            let _ = writeln!(md, "| what | µs |\n|---|---|");
            let _ = writeln!(
                md,
                "| a message that stands, untracked | {:.1} |",
                r.untracked_message_us
            );
            match &r.untracked_reason {
                None => {
                    let _ = writeln!(
                        md,
                        "| a message that stands, tracked (page-table scan, written pages copied) | {:.1} |",
                        r.tracked_message_us
                    );
                    let _ = writeln!(
                        md,
                        "| **a failed message undone in place** ({} pages put back) | **{:.1}** |",
                        r.pages_undone, r.undone_message_us
                    );
                }
                Some(reason) => {
                    let _ = writeln!(md, "| undone in place | not measured: {reason} |");
                }
            }
            let _ = writeln!(
                md,
                "| a failed message, full-copy rollback (fresh instance from a snapshot) | {:.0} |",
                r.full_copy_rollback_us
            );
        }

        let _ = writeln!(md, "\n## Against the targets\n");
        let share = |a: &AppendRun| 100.0 * a.written_mb_per_s / (self.limits.o_direct_write_gb_per_s * 1e3);
        let one_log = self.log.iter().find(|a| a.record_bytes == 1024 && a.shards == 1);
        let all_logs = self.log.iter().find(|a| a.record_bytes == 1024 && a.shards > 1);
        match (one_log, all_logs) {
            (Some(one), Some(all)) => {
                let _ = writeln!(
                    md,
                    "- Durable appends of 1 KiB records wrote {:.0} % of the O_DIRECT bandwidth measured in the same run with one log per shard ({} at once), {:.0} % with one log alone (its thread busy {:.0} % of the time) (target ≥ 70 %).",
                    share(all),
                    all.shards,
                    share(one),
                    100.0 * one.executor_busy
                );
            }
            (Some(a), None) | (None, Some(a)) => {
                let _ = writeln!(
                    md,
                    "- Durable appends of 1 KiB records wrote {:.0} % of the O_DIRECT bandwidth measured in the same run, {} log(s) at once (target ≥ 70 %).",
                    share(a),
                    a.shards
                );
            }
            (None, None) => {}
        }
        if let Some(a) = self.log_ack.iter().find(|a| (a.load_fraction - 0.5).abs() < 1e-9) {
            let _ = writeln!(
                md,
                "- Acknowledgement p99 at 50 % load: {} µs, {:.1}× the raw open loop's {} µs, the disk's own fdatasync at that load (target ≤ 2×).",
                a.latency.p99_us,
                a.latency.p99_us as f64 / a.raw_open_loop.p99_us.max(1) as f64,
                a.raw_open_loop.p99_us
            );
        }
        if let Some(b) = &self.big_restart {
            let _ = writeln!(
                md,
                "- Restart with {:.1} M records: serving after {:.2} s with the saved index, {:.2} s reading the whole log (target ≤ 5 s with 10 M).",
                b.records as f64 / 1e6,
                b.indexed_serving_ms / 1e3,
                b.serving_ms / 1e3
            );
        }
        if let Some(h) = &self.hibernation {
            let _ = writeln!(
                md,
                "- Hibernated processes: {:.0} bytes each with {} processes (target ≤ 4096 with 1 M); wake p99 {} µs including the message's evaluation (target ≤ 200 µs).",
                h.bytes_per_process, h.processes, h.wake.p99_us
            );
        }
        if let Some(o) = &self.overload {
            let _ = writeln!(
                md,
                "- Under 10× the peak offered, acknowledged {:.0} % of the peak rate (target ≥ 90 %), refusing {:.0}/s with 503.",
                100.0 * o.accepted_per_s / o.peak_per_s,
                o.refused_per_s
            );
        }
        if let (Some(one), Some(two), Some(engine_one), Some(engine_two)) = (
            self.scaling_median(1, |p| p.client_messages_per_s),
            self.scaling_median(2, |p| p.client_messages_per_s),
            self.scaling_median(1, |p| p.engine_messages_per_s),
            self.scaling_median(2, |p| p.engine_messages_per_s),
        ) {
            let runs = self.scaling.iter().filter(|p| p.shards == 1).count();
            let _ = writeln!(
                md,
                "- Scaling from 1 to 2 shards (many processes{}): {:.2}× over HTTP ({}), {:.2}× through the engine's API (target ≥ {TARGET_SCALING_2}×).",
                if runs > 1 {
                    format!(", medians of {runs} runs each")
                } else {
                    String::new()
                },
                two / one,
                if self.shard_aware {
                    "shard-aware clients"
                } else {
                    "clients on the node's port"
                },
                engine_two / engine_one
            );
        }
        let best_engine = self
            .engine
            .iter()
            .filter(|e| e.scenario != "exchange")
            .map(|e| e.all_messages_per_s)
            .fold(0.0, f64::max);
        if best_engine > 0.0 {
            let _ = writeln!(
                md,
                "- Durable messages/s per core, toward 1 M: {best_engine:.0} through the engine's API ({:.2} % of the target).",
                100.0 * best_engine / TARGET_MESSAGES_PER_S_PER_CORE
            );
        }
        if let Some(e) = self.engine.iter().find(|e| e.scenario == "exchange") {
            let _ = writeln!(
                md,
                "- Matching engine, toward 1 M orders/s: {:.0} orders/s through the engine's API ({:.2} %).",
                e.messages_per_s,
                100.0 * e.messages_per_s / TARGET_ORDERS_PER_S
            );
        }
        if let Some(run) = self.http.iter().find(|r| r.scenario == "exchange") {
            if let Some(half) = run.open_loop.iter().find(|p| p.load == Some(0.5)) {
                let _ = writeln!(
                    md,
                    "- Matching engine over HTTP: {:.0} orders/s at peak; p99 acknowledgement at 50 % load {} µs = {:.1}× the raw fdatasync p99 (target ≤ 2×).",
                    run.peak.achieved_per_s,
                    half.latency.p99_us,
                    half.latency.p99_us as f64 / raw_p99
                );
            }
        }
        if !plots.is_empty() {
            let _ = writeln!(md, "\n## Plots\n");
            for plot in plots {
                let _ = writeln!(md, "![{plot}]({plot})");
            }
        }
        md
    }
}

fn capitalise(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

pub fn bytes_label(bytes: usize) -> String {
    if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else if bytes >= 1024 && bytes.is_multiple_of(1024) {
        format!("{} KiB", bytes >> 10)
    } else {
        format!("{bytes} B")
    }
}

pub fn git_commit() -> String {
    std::process::Command::new("git")
        .args(["describe", "--always", "--dirty", "--abbrev=7"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".into())
}

pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

pub fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}
