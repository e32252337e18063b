//! `/metrics`: the node's figures in the OpenMetrics text format (which Prometheus scrapes),
//! encoded by the `prometheus-client` crate.
//!
//! Conventions: names start with `hewitt_`, carry their unit (`_seconds`, `_bytes`), counters
//! end in `_total`, latencies are histograms. Per-shard series carry a `shard` label (one shard
//! today). Events that need a distribution (fdatasync, batch sizes, acknowledgement, evaluation)
//! are observed as they happen into the histograms held here; everything the shard and the
//! committer already count is read when the page is scraped, so the hot paths pay for nothing
//! they did not already do.

use std::time::{Duration, Instant};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};
use scheduler::log::{BatchReport, CommitStats};

use crate::shard::{Evaluated, ShardCounters};

/// Labels of `hewitt_messages_rejected_total`.
type Reason = Vec<(&'static str, &'static str)>;

/// The distributions and event counters the node records as things happen. Cheap to clone
/// (the metrics are shared handles).
#[derive(Clone)]
pub struct Metrics {
    started: Instant,
    fdatasync_seconds: Histogram,
    batch_records: Histogram,
    batch_bytes: Histogram,
    ack_seconds: Histogram,
    evaluation_seconds: Histogram,
    rejected: Family<Reason, Counter>,
    handed_over: Counter,
    uploads: Family<Reason, Counter>,
    upload_lag_bytes: Gauge,
}

/// Buckets from 10 µs to ~21 s, doubling.
fn seconds_buckets() -> Histogram {
    Histogram::new(exponential_buckets(10e-6, 2.0, 22))
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            started: Instant::now(),
            fdatasync_seconds: seconds_buckets(),
            batch_records: Histogram::new(exponential_buckets(1.0, 4.0, 12)),
            batch_bytes: Histogram::new(exponential_buckets(64.0, 4.0, 12)),
            ack_seconds: seconds_buckets(),
            // Evaluations are microseconds: from 1 µs.
            evaluation_seconds: Histogram::new(exponential_buckets(1e-6, 2.0, 26)),
            rejected: Family::default(),
            handed_over: Counter::default(),
            uploads: Family::default(),
            upload_lag_bytes: Gauge::default(),
        }
    }
}

/// What the scrape reads from the node at that moment.
pub struct Snapshot {
    /// The shard the figures are of (the `shard` label).
    pub shard: usize,
    pub counters: ShardCounters,
    pub commits: CommitStats,
    pub backlog: usize,
    pub outbox: usize,
    /// Spawns sent to the shards that own the children, their answers not back yet.
    pub spawns_awaiting: usize,
    pub processes: usize,
    pub modules: usize,
    pub instances_live: usize,
    /// Processes asleep (hibernated or not woken since start) and live instances' memory.
    pub processes_dormant: usize,
    pub live_memory_bytes: usize,
    pub results_memory_bytes: usize,
    pub log_unsynced_bytes: usize,
    pub open_connections: usize,
    pub accepting: bool,
    /// The log refuses appends for want of disk space.
    pub disk_full: bool,
    /// Modules compiled from wasm, and loaded back from the artifact cache, since start.
    pub modules_compiled: u64,
    pub modules_loaded: u64,
    pub ready: bool,
    pub recovery_pending: usize,
}

impl Metrics {
    /// A durable batch, from the committer.
    pub fn batch(&self, report: &BatchReport) {
        self.fdatasync_seconds.observe(report.fdatasync_us as f64 / 1e6);
        self.batch_records.observe(report.records as f64);
        self.batch_bytes.observe(report.bytes as f64);
    }

    /// A client's item acknowledged (durable) after `latency` from its arrival.
    pub fn acknowledged(&self, latency: Duration) {
        self.ack_seconds.observe(latency.as_secs_f64());
    }

    /// Evaluations done by one pump turn.
    pub fn evaluated(&self, evaluated: &[Evaluated]) {
        for e in evaluated {
            self.evaluation_seconds.observe(e.duration.as_secs_f64());
        }
    }

    /// A `POST /` refused with `status`.
    pub fn rejected(&self, status: u16) {
        let reason = match status {
            400 => "bad_request",
            404 => "unknown_target",
            409 => "duplicate",
            413 => "too_large",
            501 => "unsupported",
            503 => "unavailable",
            _ => "other",
        };
        self.rejected.get_or_create(&vec![("reason", reason)]).inc();
    }

    /// A request that reached this shard's listener was handed to the shard that owns its
    /// process.
    pub fn handed_over(&self) {
        self.handed_over.inc();
    }

    /// An upload attempt to the bundler ended: `accepted`, `refused` or `retried`.
    pub fn uploaded(&self, result: &'static str) {
        self.uploads.get_or_create(&vec![("result", result)]).inc();
    }

    /// Durable log bytes not yet uploaded.
    pub fn upload_lag(&self, bytes: u64) {
        self.upload_lag_bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// The page: the recorded distributions and `now`'s figures.
    pub fn render(&self, now: &Snapshot) -> String {
        let mut root = Registry::with_prefix("hewitt");
        root.register(
            "build",
            "The running binary",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        root.register_with_unit(
            "uptime",
            "Time since the node started",
            Unit::Seconds,
            ConstGauge::new(self.started.elapsed().as_secs_f64()),
        );
        root.register(
            "processes",
            "Processes on this node",
            ConstGauge::new(now.processes as i64),
        );
        root.register(
            "modules",
            "Modules loaded on this node",
            ConstGauge::new(now.modules as i64),
        );
        root.register(
            "accepting_writes",
            "1 while the node accepts writes; 0 once its log failed",
            ConstGauge::new(i64::from(now.accepting)),
        );
        root.register(
            "modules_compiled",
            "Modules compiled from wasm since start",
            ConstCounter::new(now.modules_compiled),
        );
        root.register(
            "modules_loaded",
            "Modules mapped back from the compiled-artifact cache since start (no compilation)",
            ConstCounter::new(now.modules_loaded),
        );
        root.register(
            "log_disk_full",
            "1 while the log refuses writes because the disk is full (they resume once space is freed)",
            ConstGauge::new(i64::from(now.disk_full)),
        );
        root.register(
            "ready",
            "1 once the log is recovered, recovered messages replayed and writes accepted (GET /ready)",
            ConstGauge::new(i64::from(now.ready)),
        );
        root.register(
            "recovery_pending_messages",
            "Messages read back from the log at start and not yet replayed",
            ConstGauge::new(now.recovery_pending as i64),
        );
        root.register(
            "http_connections_open",
            "Open client connections",
            ConstGauge::new(now.open_connections as i64),
        );
        let shard = root.sub_registry_with_label(("shard".into(), now.shard.to_string().into()));
        let c = &now.counters;
        shard.register(
            "messages_assigned",
            "Messages assigned a nonce (from clients and from the messenger)",
            ConstCounter::new(c.assigned),
        );
        shard.register(
            "messages_evaluated",
            "Messages evaluated",
            ConstCounter::new(c.evaluated),
        );
        shard.register(
            "messages_delivered",
            "Outbox messages and spawns delivered by the messenger",
            ConstCounter::new(c.delivered),
        );
        shard.register(
            "messages_duplicate",
            "Outbox items refused as already delivered (recovery re-derives them)",
            ConstCounter::new(c.duplicates_refused),
        );
        shard.register(
            "messages_undeliverable",
            "Outbox items whose target is not on this node",
            ConstCounter::new(c.undeliverable),
        );
        shard.register(
            "messages_rejected",
            "Client items refused at ingress, by reason",
            self.rejected.clone(),
        );
        shard.register(
            "requests_handed_over",
            "Requests this shard's listeners received for a process another shard owns, handed to it \
             (none when clients use the shards' own ports, http.shard_ports_base)",
            self.handed_over.clone(),
        );
        shard.register("cron_ticks", "Cron ticks evaluated", ConstCounter::new(c.cron_ticks));
        shard.register(
            "uploads",
            "Upload attempts to the bundler, by result (accepted, refused, retried)",
            self.uploads.clone(),
        );
        shard.register_with_unit(
            "upload_lag",
            "Durable log bytes not yet uploaded to the bundler",
            Unit::Bytes,
            self.upload_lag_bytes.clone(),
        );
        shard.register(
            "rollbacks",
            "Error results whose memory was rolled back",
            ConstCounter::new(c.rollbacks),
        );
        shard.register("fuel_used", "Fuel used by evaluations", ConstCounter::new(c.fuel_used));
        shard.register(
            "queue_messages",
            "Messages assigned and waiting for evaluation",
            ConstGauge::new(now.backlog as i64),
        );
        shard.register(
            "outbox_items",
            "Outbox items waiting for delivery",
            ConstGauge::new(now.outbox as i64),
        );
        shard.register(
            "spawns_awaiting",
            "Spawns sent to the shards that own the children whose Spawned notices (or refusals) have not come back",
            ConstGauge::new(now.spawns_awaiting as i64),
        );
        shard.register(
            "instances_live",
            "Live wasm instances (one per process)",
            ConstGauge::new(now.instances_live as i64),
        );
        shard.register(
            "instances_hibernated",
            "Processes without a live instance: hibernated (memory compressed with zstd) or not woken since start",
            ConstGauge::new(now.processes_dormant as i64),
        );
        shard.register_with_unit(
            "live_memory",
            "Linear memory the live instances hold (limits.live_memory_bytes_max bounds it)",
            Unit::Bytes,
            ConstGauge::new(now.live_memory_bytes as i64),
        );
        shard.register(
            "hibernations",
            "Processes put to sleep",
            ConstCounter::new(c.hibernations),
        );
        shard.register(
            "wakes",
            "Hibernated processes woken by a message",
            ConstCounter::new(c.wakes),
        );
        shard.register("checkpoints", "Checkpoints committed", ConstCounter::new(c.checkpoints));
        shard.register(
            "wake_failures",
            "Processes that could not be woken (their state does not fit this node's configuration); their messages wait",
            ConstCounter::new(c.wake_failures),
        );
        shard.register(
            "spares_used",
            "Spawns and wakes that took a fresh instance made ahead",
            ConstCounter::new(c.spares_used),
        );
        shard.register(
            "rollbacks_in_place",
            "Failed messages undone in place (only the pages they wrote put back)",
            ConstCounter::new(c.rollbacks_in_place),
        );
        shard.register(
            "index_loaded_records",
            "Log records the start took from the saved index instead of reading them from the log",
            ConstGauge::new(c.index_loaded as i64),
        );
        shard.register(
            "results_memory_bytes",
            "Bytes of results kept in memory that the results file also holds (limits.results_memory_bytes_max bounds it)",
            ConstGauge::new(now.results_memory_bytes as i64),
        );
        shard.register(
            "results_filed",
            "Results dropped from memory for the results file to answer",
            ConstCounter::new(c.results_filed),
        );
        shard.register(
            "index_saves",
            "Saves of the index committed",
            ConstCounter::new(c.index_saves),
        );
        shard.register(
            "resumed_messages",
            "Messages the start resumed from a checkpoint rather than evaluating them again",
            ConstGauge::new(c.resumed as i64),
        );
        shard.register_with_unit(
            "log_unsynced",
            "Log bytes appended but not yet durable",
            Unit::Bytes,
            ConstGauge::new(now.log_unsynced_bytes as i64),
        );
        shard.register_with_unit(
            "log_written",
            "Log frame bytes made durable",
            Unit::Bytes,
            ConstCounter::new(now.commits.byte_count),
        );
        shard.register(
            "log_batches",
            "Group commits (one write and one fdatasync each)",
            ConstCounter::new(now.commits.batch_count),
        );
        shard.register(
            "log_records",
            "Records made durable",
            ConstCounter::new(now.commits.record_count),
        );
        shard.register_with_unit(
            "fdatasync",
            "Duration of each group commit's fdatasync",
            Unit::Seconds,
            self.fdatasync_seconds.clone(),
        );
        shard.register(
            "log_batch_records",
            "Records per group commit",
            self.batch_records.clone(),
        );
        shard.register_with_unit(
            "log_batch",
            "Frame bytes per group commit",
            Unit::Bytes,
            self.batch_bytes.clone(),
        );
        shard.register_with_unit(
            "ack",
            "From a client item's arrival to its acknowledgement (durable)",
            Unit::Seconds,
            self.ack_seconds.clone(),
        );
        shard.register_with_unit(
            "evaluation",
            "Duration of one message's evaluation",
            Unit::Seconds,
            self.evaluation_seconds.clone(),
        );
        let mut page = String::new();
        encode(&mut page, &root).expect("writing to a String cannot fail");
        page
    }
}
