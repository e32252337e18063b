//! The node's configuration: one table of fields, each with its key in the TOML file, its
//! environment variable, its unit, its default and its allowed range.
//!
//! Precedence, lowest first: the defaults, the TOML file (`hewitt serve --config FILE`, or
//! `HEWITT_CONFIG`), the environment (`HEWITT_…`, named per field), then flags (`--data-dir`,
//! `--listen`, `--cpu`, and `--set KEY=VALUE` for any field). Every value is checked against its
//! field's range as it is read, with an error that names the field, where the value came from and
//! what is allowed; then the fields that bound each other are checked together. A node refuses
//! to start on any error.
//!
//! `hewitt config print` shows the effective configuration, with each field's unit, default,
//! environment variable and source.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::node::NodeConfig;

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines, coloured on a terminal.
    Human,
    /// One JSON object per line.
    Json,
}

/// Where log lines go and how many.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Logging {
    pub format: LogFormat,
    /// A `tracing` filter: a level (`info`) or per-target directives (`info,engine::http=debug`).
    pub filter: String,
}

/// Everything `hewitt serve` is configured with.
#[derive(Clone, Debug)]
pub struct Settings {
    pub node: NodeConfig,
    pub logging: Logging,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            node: NodeConfig::new(
                "hewitt-data",
                "127.0.0.1:8734".parse().expect("a valid default listen address"),
            ),
            logging: Logging {
                format: LogFormat::Human,
                filter: "info".to_owned(),
            },
        }
    }
}

/// Where a field's effective value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Default,
    File(PathBuf),
    Env(&'static str),
    Flag(String),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Default => write!(f, "default"),
            Source::File(path) => write!(f, "{}", path.display()),
            Source::Env(name) => write!(f, "environment {name}"),
            Source::Flag(flag) => write!(f, "flag {flag}"),
        }
    }
}

/// A value as written: a TOML value, or the text of an environment variable or flag.
#[derive(Clone, Copy)]
enum Raw<'a> {
    Toml(&'a toml::Value),
    Text(&'a str),
}

impl Raw<'_> {
    fn describe(&self) -> String {
        match self {
            Raw::Toml(value) => format!("{value} (a {})", value.type_str()),
            Raw::Text(text) => format!("{text:?}"),
        }
    }
}

/// What a field holds and what it accepts.
#[derive(Clone, Copy)]
enum Kind {
    /// A whole number within `min..=max`; for `unit == "bytes"` text may carry a `KiB`, `MiB`,
    /// `GiB` or `TiB` suffix.
    Int {
        min: u64,
        max: u64,
    },
    /// An optional CPU index; `none` (or an empty value) unsets it.
    Cpu,
    /// A whole number within `min..=max`, or `auto` (an empty value too): the node chooses.
    IntOrAuto {
        min: u64,
        max: u64,
    },
    Path,
    Addr,
    Format,
    Filter,
    /// An optional `http://` URL; an empty value unsets it.
    Url,
    /// Node addresses (43-character base64url), comma-separated or a TOML array.
    Addresses,
    /// `true` or `false` (a TOML boolean, or the text).
    Bool,
}

/// A field's value, typed.
#[derive(Clone, Debug, PartialEq)]
enum Value {
    Int(u64),
    Cpu(Option<u64>),
    IntOrAuto(Option<u64>),
    Path(PathBuf),
    Addr(SocketAddr),
    Format(LogFormat),
    Filter(String),
    Url(Option<String>),
    Addresses(Vec<scheduler::Address>),
    Bool(bool),
}

impl Value {
    /// The value as TOML.
    fn toml(&self) -> String {
        match self {
            Value::Int(n) => n.to_string(),
            Value::Cpu(Some(n)) => n.to_string(),
            Value::Cpu(None) => "\"none\"".to_owned(),
            Value::IntOrAuto(Some(n)) => n.to_string(),
            Value::IntOrAuto(None) => "\"auto\"".to_owned(),
            Value::Path(p) => toml::Value::String(p.display().to_string()).to_string(),
            Value::Addr(a) => format!("\"{a}\""),
            Value::Format(LogFormat::Human) => "\"human\"".to_owned(),
            Value::Format(LogFormat::Json) => "\"json\"".to_owned(),
            Value::Filter(f) => toml::Value::String(f.clone()).to_string(),
            Value::Url(u) => toml::Value::String(u.clone().unwrap_or_default()).to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Addresses(list) => format!(
                "[{}]",
                list.iter().map(|a| format!("\"{a}\"")).collect::<Vec<_>>().join(", ")
            ),
        }
    }
}

struct Field {
    /// `section.name`, or `name` at the top of the file.
    key: &'static str,
    env: &'static str,
    unit: &'static str,
    doc: &'static str,
    kind: Kind,
    get: fn(&Settings) -> Value,
    set: fn(&mut Settings, Value),
}

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const TIB: u64 = 1 << 40;

/// Shortest `http.idle_timeout_ms` other than 0: below it a keep-alive connection would be
/// closed in the gap between a client's answer and its next request.
const IDLE_TIMEOUT_MS_MIN: u64 = 100;

fn boolean(value: Value) -> bool {
    match value {
        Value::Bool(b) => b,
        other => unreachable!("a boolean field was given {other:?}"),
    }
}

fn int(value: Value) -> u64 {
    match value {
        Value::Int(n) => n,
        other => unreachable!("an integer field was given {other:?}"),
    }
}

fn usize_of(value: Value) -> usize {
    usize::try_from(int(value)).unwrap_or(usize::MAX)
}

fn u32_of(value: Value) -> u32 {
    u32::try_from(int(value)).unwrap_or(u32::MAX)
}

/// Every field, in the order `config print` shows them.
const FIELDS: &[Field] = &[
    Field {
        key: "data_dir",
        env: "HEWITT_DATA_DIR",
        unit: "path",
        doc: "Data directory: log segments and the node key.",
        kind: Kind::Path,
        get: |s| Value::Path(s.node.data_dir.clone()),
        set: |s, v| {
            if let Value::Path(p) = v {
                s.node.data_dir = p
            }
        },
    },
    Field {
        key: "listen",
        env: "HEWITT_LISTEN",
        unit: "address",
        doc: "HTTP listen address (port 0 picks a free port).",
        kind: Kind::Addr,
        get: |s| Value::Addr(s.node.listen),
        set: |s, v| {
            if let Value::Addr(a) = v {
                s.node.listen = a
            }
        },
    },
    Field {
        key: "cpu",
        env: "HEWITT_CPU",
        unit: "CPU index",
        doc: "Pin shard 0's thread to this CPU and shard i's to this + i; \"none\" leaves placement to the kernel.",
        kind: Kind::Cpu,
        get: |s| Value::Cpu(s.node.cpu.map(|c| c as u64)),
        set: |s, v| {
            if let Value::Cpu(c) = v {
                s.node.cpu = c.map(|c| c as usize)
            }
        },
    },
    Field {
        key: "shards",
        env: "HEWITT_SHARDS",
        unit: "count",
        doc: "Shards: executor threads, each with its own log and processes (placement by process id). Default: the cores available. Fixed for the life of a data dir.",
        kind: Kind::Int { min: 1, max: 256 },
        get: |s| Value::Int(s.node.shards as u64),
        set: |s, v| s.node.shards = int(v) as usize,
    },
    Field {
        key: "shards_spin_before_park_us",
        env: "HEWITT_SHARDS_SPIN_BEFORE_PARK_US",
        unit: "µs",
        doc: "How long an idle shard spins before it parks: parking and waking cost tens of µs of CPU and latency each, spinning takes the time of whatever else runs on the core. 0 parks at once; \"auto\": 200 µs when `cpu` pins the shards, else 0.",
        kind: Kind::IntOrAuto { min: 0, max: 1_000_000 },
        get: |s| Value::IntOrAuto(s.node.spin_before_park_us),
        set: |s, v| {
            if let Value::IntOrAuto(n) = v {
                s.node.spin_before_park_us = n
            }
        },
    },
    Field {
        key: "fixed_clock_ms",
        env: "HEWITT_FIXED_CLOCK_MS",
        unit: "ms",
        doc: "For reproducibility tests only: every timestamp the node gives is this (ms since the epoch) instead of the wall clock; 0 uses the wall clock.",
        kind: Kind::Int { min: 0, max: u64::MAX / 2 },
        get: |s| Value::Int(s.node.fixed_clock_ms.unwrap_or(0)),
        set: |s, v| s.node.fixed_clock_ms = Some(int(v)).filter(|&ms| ms != 0),
    },
    Field {
        key: "checkpoint.every_messages",
        env: "HEWITT_CHECKPOINT_EVERY_MESSAGES",
        unit: "evaluations",
        doc: "Each shard writes a checkpoint (the processes evaluated since the last one) after this many evaluations; a restart resumes from it and replays only the log after it. 0: not by count. All three checkpoint.every_* 0: no checkpoints, every restart replays from genesis.",
        kind: Kind::Int { min: 0, max: u64::MAX / 2 },
        get: |s| Value::Int(s.node.checkpoint.every_messages),
        set: |s, v| s.node.checkpoint.every_messages = int(v),
    },
    Field {
        key: "checkpoint.every_gas",
        env: "HEWITT_CHECKPOINT_EVERY_GAS",
        unit: "fuel",
        doc: "A checkpoint after this much fuel was used since the last one; 0: not by fuel.",
        kind: Kind::Int { min: 0, max: u64::MAX / 2 },
        get: |s| Value::Int(s.node.checkpoint.every_gas),
        set: |s, v| s.node.checkpoint.every_gas = int(v),
    },
    Field {
        key: "checkpoint.every_seconds",
        env: "HEWITT_CHECKPOINT_EVERY_SECONDS",
        unit: "s",
        doc: "A checkpoint this long after the last one, if anything was evaluated since; 0: not by time. A clean stop always writes one.",
        kind: Kind::Int { min: 0, max: 365 * 86_400 },
        get: |s| Value::Int(s.node.checkpoint.every_seconds),
        set: |s, v| s.node.checkpoint.every_seconds = int(v),
    },
    Field {
        key: "log.segment_bytes",
        env: "HEWITT_LOG_SEGMENT_BYTES",
        unit: "bytes",
        doc: "Size of every log segment file, preallocated; a multiple of 4096. Fixed for the life of a data dir.",
        kind: Kind::Int { min: 4 * KIB, max: TIB },
        get: |s| Value::Int(s.node.log.segment_bytes),
        set: |s, v| s.node.log.segment_bytes = int(v),
    },
    Field {
        key: "log.batch_bytes_max",
        env: "HEWITT_LOG_BATCH_BYTES_MAX",
        unit: "bytes",
        doc: "Most bytes one group commit writes (one write, one fdatasync); a multiple of 8. Bounds the largest record: keep it above http.body_bytes_max plus 1 KiB.",
        kind: Kind::Int {
            min: 64,
            max: u32::MAX as u64,
        },
        get: |s| Value::Int(s.node.log.batch_bytes_max as u64),
        set: |s, v| s.node.log.batch_bytes_max = usize_of(v),
    },
    Field {
        key: "log.pending_bytes_max",
        env: "HEWITT_LOG_PENDING_BYTES_MAX",
        unit: "bytes",
        doc: "Most bytes appended but not yet durable; beyond it ingress answers 503. At least log.batch_bytes_max.",
        kind: Kind::Int { min: 64, max: 64 * GIB },
        get: |s| Value::Int(s.node.log.pending_bytes_max as u64),
        set: |s, v| s.node.log.pending_bytes_max = usize_of(v),
    },
    Field {
        key: "log.zstd_level",
        env: "HEWITT_LOG_ZSTD_LEVEL",
        unit: "level",
        doc: "Packs sealed log segments with zstd at this level (1-22), on the blocking pool, as they are sealed; reads unpack them transparently. 0: segments stay plain.",
        kind: Kind::Int { min: 0, max: 22 },
        get: |s| Value::Int(u64::from(s.node.log_zstd_level)),
        set: |s, v| s.node.log_zstd_level = int(v) as u32,
    },
    Field {
        key: "log.direct_io",
        env: "HEWITT_LOG_DIRECT_IO",
        unit: "bool",
        doc: "Writes log batches with O_DIRECT, around the page cache (its copy and writeback); a file system that refuses O_DIRECT gets buffered writes, with a warning. Each shard then keeps its last log.batch_bytes_max bytes of durable batches in memory for reads; older records come from the device.",
        kind: Kind::Bool,
        get: |s| Value::Bool(s.node.log_direct_io),
        set: |s, v| s.node.log_direct_io = boolean(v),
    },
    Field {
        key: "index.every_records",
        env: "HEWITT_INDEX_EVERY_RECORDS",
        unit: "records",
        doc: "Each shard saves its index after this many log records (also 60 s after any, and at a clean stop); a start reads only the log after the last save.",
        kind: Kind::Int { min: 1, max: 1 << 40 },
        get: |s| Value::Int(s.node.index_every_records),
        set: |s, v| s.node.index_every_records = int(v),
    },
    Field {
        key: "compute.instance_count_max",
        env: "HEWITT_COMPUTE_INSTANCE_COUNT_MAX",
        unit: "instances",
        doc: "Live wasm instances (one per process); each slot reserves 4 GiB of address space, not memory.",
        kind: Kind::Int { min: 1, max: 30_000 },
        get: |s| Value::Int(u64::from(s.node.compute.instance_count_max)),
        set: |s, v| s.node.compute.instance_count_max = u32_of(v),
    },
    Field {
        key: "compute.memory_bytes_max",
        env: "HEWITT_COMPUTE_MEMORY_BYTES_MAX",
        unit: "bytes",
        doc: "Linear memory any one instance may reach; a multiple of 64 KiB, at most 4 GiB (wasm32).",
        kind: Kind::Int { min: 64 * KIB, max: 4 * GIB },
        get: |s| Value::Int(s.node.compute.memory_bytes_max),
        set: |s, v| s.node.compute.memory_bytes_max = int(v),
    },
    Field {
        key: "compute.table_elements_max",
        env: "HEWITT_COMPUTE_TABLE_ELEMENTS_MAX",
        unit: "elements",
        doc: "Elements of an instance's function table.",
        kind: Kind::Int { min: 1, max: 10_000_000 },
        get: |s| Value::Int(u64::from(s.node.compute.table_elements_max)),
        set: |s, v| s.node.compute.table_elements_max = u32_of(v),
    },
    Field {
        key: "compute.output_bytes_max",
        env: "HEWITT_COMPUTE_OUTPUT_BYTES_MAX",
        unit: "bytes",
        doc: "Largest result JSON the host reads out of a guest; a longer one fails the message.",
        kind: Kind::Int { min: KIB, max: GIB },
        get: |s| Value::Int(s.node.compute.output_bytes_max),
        set: |s, v| s.node.compute.output_bytes_max = int(v),
    },
    Field {
        key: "limits.queue_messages_max",
        env: "HEWITT_LIMITS_QUEUE_MESSAGES_MAX",
        unit: "messages",
        doc: "Assigned messages waiting for evaluation before ingress answers 503.",
        kind: Kind::Int { min: 1, max: 100_000_000 },
        get: |s| Value::Int(s.node.limits.queue_messages_max as u64),
        set: |s, v| s.node.limits.queue_messages_max = usize_of(v),
    },
    Field {
        key: "limits.outbox_items_max",
        env: "HEWITT_LIMITS_OUTBOX_ITEMS_MAX",
        unit: "items",
        doc: "Outbox messages and spawns waiting for delivery; evaluation pauses while it is full.",
        kind: Kind::Int { min: 1, max: 10_000_000 },
        get: |s| Value::Int(s.node.limits.outbox_items_max as u64),
        set: |s, v| s.node.limits.outbox_items_max = usize_of(v),
    },
    Field {
        key: "limits.compute_limit_default",
        env: "HEWITT_LIMITS_COMPUTE_LIMIT_DEFAULT",
        unit: "fuel",
        doc: "Fuel per message when neither module nor process names a Compute-Limit.",
        kind: Kind::Int {
            min: 1,
            max: 10_000_000_000,
        },
        get: |s| Value::Int(s.node.limits.compute_limit_default),
        set: |s, v| s.node.limits.compute_limit_default = int(v),
    },
    Field {
        key: "limits.compute_limit_max",
        env: "HEWITT_LIMITS_COMPUTE_LIMIT_MAX",
        unit: "fuel",
        doc: "Largest Compute-Limit a module or process may ask for (handlers are not preemptible: this bounds how long one holds its shard).",
        kind: Kind::Int {
            min: 1,
            max: 10_000_000_000,
        },
        get: |s| Value::Int(s.node.limits.compute_limit_max),
        set: |s, v| s.node.limits.compute_limit_max = int(v),
    },
    Field {
        key: "limits.memory_limit_default",
        env: "HEWITT_LIMITS_MEMORY_LIMIT_DEFAULT",
        unit: "bytes",
        doc: "Memory limit of a process that names no Memory-Limit.",
        kind: Kind::Int { min: 64 * KIB, max: 4 * GIB },
        get: |s| Value::Int(s.node.limits.memory_limit_default),
        set: |s, v| s.node.limits.memory_limit_default = int(v),
    },
    Field {
        key: "limits.memory_limit_max",
        env: "HEWITT_LIMITS_MEMORY_LIMIT_MAX",
        unit: "bytes",
        doc: "Largest Memory-Limit a module or process may ask for; at most compute.memory_bytes_max.",
        kind: Kind::Int { min: 64 * KIB, max: 4 * GIB },
        get: |s| Value::Int(s.node.limits.memory_limit_max),
        set: |s, v| s.node.limits.memory_limit_max = int(v),
    },
    Field {
        key: "limits.live_memory_bytes_max",
        env: "HEWITT_LIMITS_LIVE_MEMORY_BYTES_MAX",
        unit: "bytes",
        doc: "Linear memory each shard's live processes may hold together; beyond it the least recently used idle processes hibernate (memory compressed with zstd, pool slot given back) until a message wakes them.",
        kind: Kind::Int { min: 64 * KIB, max: TIB },
        get: |s| Value::Int(s.node.limits.live_memory_bytes_max),
        set: |s, v| s.node.limits.live_memory_bytes_max = int(v),
    },
    Field {
        key: "limits.results_memory_bytes_max",
        env: "HEWITT_LIMITS_RESULTS_MEMORY_BYTES_MAX",
        unit: "bytes",
        doc: "Results (their JSON, messages' and cron ticks') each shard keeps in memory for /result, /results and /cron; beyond it the oldest are read back from the results file when asked for. Without checkpoints there is no results file and every result stays in memory.",
        kind: Kind::Int { min: 64 * KIB, max: TIB },
        get: |s| Value::Int(s.node.limits.results_memory_bytes_max as u64),
        set: |s, v| s.node.limits.results_memory_bytes_max = usize_of(v),
    },
    Field {
        key: "http.connections_max",
        env: "HEWITT_HTTP_CONNECTIONS_MAX",
        unit: "connections",
        doc: "Open client connections per shard; one beyond it is closed at once. Each shard's io_uring rings are sized to hold two operations per connection.",
        kind: Kind::Int { min: 1, max: 30_000 },
        get: |s| Value::Int(s.node.http.connections_max as u64),
        set: |s, v| s.node.http.connections_max = usize_of(v),
    },
    Field {
        key: "http.body_bytes_max",
        env: "HEWITT_HTTP_BODY_BYTES_MAX",
        unit: "bytes",
        doc: "Largest data item POST / accepts (413 beyond it); at most the ANS-104 bound of 10 MiB + 64 KiB.",
        kind: Kind::Int {
            min: KIB,
            max: scheduler::data_item::DATA_ITEM_BYTES_MAX as u64,
        },
        get: |s| Value::Int(s.node.http.body_bytes_max as u64),
        set: |s, v| s.node.http.body_bytes_max = usize_of(v),
    },
    Field {
        key: "http.writes_in_flight_max",
        env: "HEWITT_HTTP_WRITES_IN_FLIGHT_MAX",
        unit: "requests",
        doc: "Most POST / requests each shard's listener holds at once (read, verified, waiting for their fdatasync); more wait in line (http.writes_waiting_max), then are answered 503 with Retry-After.",
        kind: Kind::Int { min: 1, max: 1 << 20 },
        get: |s| Value::Int(s.node.http.writes_in_flight_max as u64),
        set: |s, v| s.node.http.writes_in_flight_max = usize_of(v),
    },
    Field {
        key: "http.writes_waiting_max",
        env: "HEWITT_HTTP_WRITES_WAITING_MAX",
        unit: "requests",
        doc: "Most POST / requests each shard holds in line, unread, for one of http.writes_in_flight_max to end (first come first served); one beyond the line is held for http.write_wait_ms, then answered 503 with Retry-After.",
        kind: Kind::Int { min: 0, max: 1 << 20 },
        get: |s| Value::Int(s.node.http.writes_waiting_max as u64),
        set: |s, v| s.node.http.writes_waiting_max = usize_of(v),
    },
    Field {
        key: "http.write_wait_ms",
        env: "HEWITT_HTTP_WRITE_WAIT_MS",
        unit: "ms",
        doc: "Longest a POST / waits in line before 503 with Retry-After, and how long one beyond the line is held before its 503 (0: refused at once). Holding refusals keeps clients that retry at once to one refusal per wait, and the cores for the writes in flight.",
        kind: Kind::Int { min: 0, max: 60_000 },
        get: |s| Value::Int(s.node.http.write_wait_ms),
        set: |s, v| s.node.http.write_wait_ms = int(v),
    },
    Field {
        key: "http.idle_timeout_ms",
        env: "HEWITT_HTTP_IDLE_TIMEOUT_MS",
        unit: "ms",
        doc: "Longest a connection may wait idle for its next request, take to send a request's head, or go without a byte of a request's body before it is closed; a body must also average 16 KiB/s once this long has passed (408 otherwise); 0: never, else at least 100. Keeps silent or trickling clients from holding connection and write slots.",
        kind: Kind::Int { min: 0, max: 3_600_000 },
        get: |s| Value::Int(s.node.http.idle_timeout_ms),
        set: |s, v| s.node.http.idle_timeout_ms = int(v),
    },
    Field {
        key: "http.shard_ports_base",
        env: "HEWITT_HTTP_SHARD_PORTS_BASE",
        unit: "port",
        doc: "When not 0, shard i also listens on this port + i: a client that computes placement (messenger::placement, from GET / 'shards') sends each request to the shard that owns its process, and nothing is handed across shards. 0: off.",
        kind: Kind::Int { min: 0, max: 65535 },
        get: |s| Value::Int(u64::from(s.node.http.shard_ports_base)),
        set: |s, v| s.node.http.shard_ports_base = int(v) as u16,
    },
    Field {
        key: "ao.trusted_nodes",
        env: "HEWITT_AO_TRUSTED_NODES",
        unit: "addresses",
        doc: "Nodes (their signing addresses) whose data items may carry the messenger's tags From-Process, From-Module, Pushed-For and Forwarded-By; from anyone else such an item is refused.",
        kind: Kind::Addresses,
        get: |s| Value::Addresses(s.node.ao.trusted_nodes.clone()),
        set: |s, v| {
            if let Value::Addresses(list) = v {
                s.node.ao.trusted_nodes = list
            }
        },
    },
    Field {
        key: "ao.public_url",
        env: "HEWITT_AO_PUBLIC_URL",
        unit: "URL",
        doc: "The URL clients reach this node at, published in its Scheduler-Location item; empty publishes none.",
        kind: Kind::Url,
        get: |s| Value::Url(s.node.ao.public_url.clone()),
        set: |s, v| {
            if let Value::Url(u) = v {
                s.node.ao.public_url = u
            }
        },
    },
    Field {
        key: "ao.scheduler_location_ttl_ms",
        env: "HEWITT_AO_SCHEDULER_LOCATION_TTL_MS",
        unit: "ms",
        doc: "Time-To-Live of the published Scheduler-Location; the node publishes it again after half of it.",
        kind: Kind::Int {
            min: 60_000,
            max: 365 * 86_400_000,
        },
        get: |s| Value::Int(s.node.ao.scheduler_location_ttl_ms),
        set: |s, v| s.node.ao.scheduler_location_ttl_ms = int(v),
    },
    Field {
        key: "arweave.bundler_url",
        env: "HEWITT_ARWEAVE_BUNDLER_URL",
        unit: "URL",
        doc: "Bundler that every logged module, process, message and assignment is uploaded to (POST {url}/tx/arweave), a batch of the log at a time, retried until accepted; empty uploads nothing.",
        kind: Kind::Url,
        get: |s| Value::Url(s.node.ao.bundler_url.clone()),
        set: |s, v| {
            if let Value::Url(u) = v {
                s.node.ao.bundler_url = u
            }
        },
    },
    Field {
        key: "arweave.gateway_url",
        env: "HEWITT_ARWEAVE_GATEWAY_URL",
        unit: "URL",
        doc: "Gateway a module is fetched from (GraphQL for its owner and tags, /raw/{id} for its bytes) when a process names one this node does not hold; it is then kept in the log. Empty fetches nothing.",
        kind: Kind::Url,
        get: |s| Value::Url(s.node.ao.gateway_url.clone()),
        set: |s, v| {
            if let Value::Url(u) = v {
                s.node.ao.gateway_url = u
            }
        },
    },
    Field {
        key: "arweave.upload_connections",
        env: "HEWITT_ARWEAVE_UPLOAD_CONNECTIONS",
        unit: "connections",
        doc: "Uploads in flight to the bundler at once (one keep-alive connection each); upload throughput is about this many divided by the bundler's round trip.",
        kind: Kind::Int { min: 1, max: 1024 },
        get: |s| Value::Int(s.node.ao.upload_connections as u64),
        set: |s, v| s.node.ao.upload_connections = usize_of(v),
    },
    Field {
        key: "logging.format",
        env: "HEWITT_LOG_FORMAT",
        unit: "human | json",
        doc: "Log lines as human-readable text or one JSON object per line (stderr).",
        kind: Kind::Format,
        get: |s| Value::Format(s.logging.format),
        set: |s, v| {
            if let Value::Format(f) = v {
                s.logging.format = f
            }
        },
    },
    Field {
        key: "logging.filter",
        env: "HEWITT_LOG",
        unit: "tracing filter",
        doc: "Which log lines: a level (error, warn, info, debug, trace) or directives like \"info,engine::http=debug\".",
        kind: Kind::Filter,
        get: |s| Value::Filter(s.logging.filter.clone()),
        set: |s, v| {
            if let Value::Filter(f) = v {
                s.logging.filter = f
            }
        },
    },
];

/// Parses `raw` as the value of `field`; the error says what was wrong and what is allowed.
fn parse(field: &Field, raw: Raw<'_>) -> Result<Value, String> {
    let text = match raw {
        Raw::Text(text) => Some(text.trim()),
        Raw::Toml(toml::Value::String(text)) => Some(text.as_str()),
        Raw::Toml(_) => None,
    };
    match field.kind {
        Kind::Int { min, max } => {
            let n = match (raw, text) {
                (Raw::Toml(toml::Value::Integer(n)), _) => {
                    u64::try_from(*n).map_err(|_| format!("{n} is negative; allowed: {min}..={max} {}", field.unit))?
                }
                (_, Some(text)) => parse_int(text, field.unit == "bytes")
                    .ok_or_else(|| format!("{text:?} is not a whole number of {}", field.unit))?,
                (other, _) => return Err(format!("{} is not a whole number of {}", other.describe(), field.unit)),
            };
            if !(min..=max).contains(&n) {
                return Err(format!(
                    "{n} is outside the allowed range {min}..={max} ({})",
                    field.unit
                ));
            }
            Ok(Value::Int(n))
        }
        Kind::IntOrAuto { min, max } => {
            let n = match (raw, text) {
                (Raw::Toml(toml::Value::Integer(n)), _) => u64::try_from(*n)
                    .map_err(|_| format!("{n} is negative; allowed: {min}..={max} {} or \"auto\"", field.unit))?,
                (_, Some("" | "auto")) => return Ok(Value::IntOrAuto(None)),
                (_, Some(text)) => parse_int(text, field.unit == "bytes")
                    .ok_or_else(|| format!("{text:?} is not a whole number of {} or \"auto\"", field.unit))?,
                (other, _) => {
                    return Err(format!(
                        "{} is not a whole number of {} or \"auto\"",
                        other.describe(),
                        field.unit
                    ))
                }
            };
            if !(min..=max).contains(&n) {
                return Err(format!(
                    "{n} is outside the allowed range {min}..={max} ({}) or \"auto\"",
                    field.unit
                ));
            }
            Ok(Value::IntOrAuto(Some(n)))
        }
        Kind::Cpu => match (raw, text) {
            (Raw::Toml(toml::Value::Integer(n)), _) => u64::try_from(*n)
                .map(|n| Value::Cpu(Some(n)))
                .map_err(|_| format!("{n} is not a CPU index")),
            (_, Some("" | "none")) => Ok(Value::Cpu(None)),
            (_, Some(text)) => text
                .parse()
                .map(|n| Value::Cpu(Some(n)))
                .map_err(|_| format!("{text:?} is not a CPU index or \"none\"")),
            (other, _) => Err(format!("{} is not a CPU index or \"none\"", other.describe())),
        },
        Kind::Path => match text {
            Some("") | None => Err("expected a non-empty path (a string)".to_owned()),
            Some(text) => Ok(Value::Path(PathBuf::from(text))),
        },
        Kind::Addr => match text {
            Some(text) => text
                .parse()
                .map(Value::Addr)
                .map_err(|_| format!("{text:?} is not an IP address and port, like \"127.0.0.1:8734\"")),
            None => Err("expected an address and port as a string, like \"127.0.0.1:8734\"".to_owned()),
        },
        Kind::Format => match text {
            Some("human") => Ok(Value::Format(LogFormat::Human)),
            Some("json") => Ok(Value::Format(LogFormat::Json)),
            _ => Err("expected \"human\" or \"json\"".to_owned()),
        },
        Kind::Filter => match text {
            Some(text) => tracing_subscriber::EnvFilter::try_new(text)
                .map(|_| Value::Filter(text.to_owned()))
                .map_err(|e| format!("{text:?} is not a tracing filter: {e}")),
            None => Err("expected a tracing filter as a string, like \"info\"".to_owned()),
        },
        Kind::Bool => match (raw, text) {
            (Raw::Toml(toml::Value::Boolean(b)), _) => Ok(Value::Bool(*b)),
            (_, Some("true")) => Ok(Value::Bool(true)),
            (_, Some("false")) => Ok(Value::Bool(false)),
            (other, _) => Err(format!("{} is not true or false", other.describe())),
        },
        Kind::Url => match text {
            Some("") => Ok(Value::Url(None)),
            Some(text) => parse_url(text).map(|url| Value::Url(Some(url))),
            None => Err("expected a URL as a string, like \"http://127.0.0.1:3000\"".to_owned()),
        },
        Kind::Addresses => {
            let items: Vec<String> = match (raw, text) {
                (Raw::Toml(toml::Value::Array(items)), _) => items
                    .iter()
                    .map(|item| {
                        item.as_str()
                            .map(str::to_owned)
                            .ok_or_else(|| format!("{item} is not an address string"))
                    })
                    .collect::<Result<_, _>>()?,
                (_, Some(text)) => text
                    .split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned)
                    .collect(),
                (other, _) => return Err(format!("{} is not a list of addresses", other.describe())),
            };
            items
                .iter()
                .map(|item| {
                    item.parse()
                        .map_err(|_| format!("{item:?} is not a node address (43 base64url characters)"))
                })
                .collect::<Result<_, _>>()
                .map(Value::Addresses)
        }
    }
}

/// Checks a URL the node will call: `http://host[:port][/path]`, without a trailing slash.
fn parse_url(text: &str) -> Result<String, String> {
    let rest = match text.split_once("://") {
        Some(("http", rest)) => rest,
        Some(("https", _)) => {
            return Err(format!(
                "{text:?}: this node speaks plain HTTP to the services it calls; reach an HTTPS one through a local TLS proxy"
            ))
        }
        _ => return Err(format!("{text:?} is not an http:// URL")),
    };
    let authority = rest.split('/').next().unwrap_or("");
    if authority.is_empty() || authority.contains(['?', '#', '@', ' ']) {
        return Err(format!("{text:?} has no valid host[:port]"));
    }
    Ok(text.trim_end_matches('/').to_owned())
}

/// A whole number, with `_` separators; with `bytes`, optionally followed by a binary unit.
fn parse_int(text: &str, bytes: bool) -> Option<u64> {
    let text = text.replace('_', "");
    let (digits, scale) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) if bytes => {
            let scale = match text[at..].trim() {
                "B" => 1,
                "KiB" => KIB,
                "MiB" => MIB,
                "GiB" => GIB,
                "TiB" => TIB,
                _ => return None,
            };
            (&text[..at], scale)
        }
        Some(_) => return None,
        None => (text.as_str(), 1),
    };
    digits.parse::<u64>().ok()?.checked_mul(scale)
}

/// The effective settings and where each field's value came from.
pub struct Loaded {
    pub settings: Settings,
    sources: Vec<Source>,
}

/// An override given on the command line: `KEY=VALUE`, or a dedicated flag's value.
#[derive(Clone, Debug)]
pub struct Override {
    pub key: String,
    pub value: String,
    /// How it was given, for error messages (`--set`, `--data-dir`, …).
    pub flag: String,
}

impl Override {
    /// Parses `--set KEY=VALUE`.
    pub fn parse_set(text: &str) -> Result<Override, String> {
        let (key, value) = text
            .split_once('=')
            .ok_or_else(|| format!("{text:?} is not KEY=VALUE (for example log.batch_bytes_max=16MiB)"))?;
        Ok(Override {
            key: key.trim().to_owned(),
            value: value.to_owned(),
            flag: "--set".to_owned(),
        })
    }
}

fn field(key: &str) -> Option<(usize, &'static Field)> {
    FIELDS.iter().enumerate().find(|(_, f)| f.key == key)
}

fn known_keys() -> String {
    FIELDS.iter().map(|f| f.key).collect::<Vec<_>>().join(", ")
}

/// Builds the settings from the defaults, `file` (if any), the environment (`env` looks a
/// variable up; pass `|name| std::env::var(name).ok()`), then `overrides`, in that order; then
/// checks the fields that bound each other.
pub fn load(
    file: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
    overrides: &[Override],
) -> Result<Loaded, String> {
    let mut settings = Settings::default();
    let mut sources = vec![Source::Default; FIELDS.len()];
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|e| format!("config file {}: {e}", path.display()))?;
        let table: toml::Table = text
            .parse()
            .map_err(|e| format!("config file {}: not valid TOML: {e}", path.display()))?;
        let mut entries = Vec::new();
        for (name, value) in &table {
            match value {
                toml::Value::Table(section) => {
                    for (sub, value) in section {
                        entries.push((format!("{name}.{sub}"), value));
                    }
                }
                value => entries.push((name.clone(), value)),
            }
        }
        for (key, value) in entries {
            let (index, field) = field(&key).ok_or_else(|| {
                format!(
                    "config file {}: unknown field {key:?}; known fields: {}",
                    path.display(),
                    known_keys()
                )
            })?;
            let value = parse(field, Raw::Toml(value)).map_err(|e| format!("{key} in {}: {e}", path.display()))?;
            (field.set)(&mut settings, value);
            sources[index] = Source::File(path.to_owned());
        }
    }
    for (index, field) in FIELDS.iter().enumerate() {
        if let Some(text) = env(field.env) {
            let value =
                parse(field, Raw::Text(&text)).map_err(|e| format!("{} (from {}): {e}", field.key, field.env))?;
            (field.set)(&mut settings, value);
            sources[index] = Source::Env(field.env);
        }
    }
    for o in overrides {
        let (index, field) = field(&o.key)
            .ok_or_else(|| format!("{} {}: unknown field; known fields: {}", o.flag, o.key, known_keys()))?;
        let value = parse(field, Raw::Text(&o.value)).map_err(|e| format!("{} (from {}): {e}", field.key, o.flag))?;
        (field.set)(&mut settings, value);
        sources[index] = Source::Flag(o.flag.clone());
    }
    let loaded = Loaded { settings, sources };
    loaded.check()?;
    Ok(loaded)
}

impl Loaded {
    /// The checks that involve several fields; each error names them and their sources.
    fn check(&self) -> Result<(), String> {
        let node = &self.settings.node;
        let named = |keys: &[&str]| {
            keys.iter()
                .map(|key| {
                    let (index, _) = field(key).expect("a known key");
                    format!("{key} (from {})", self.sources[index])
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        node.log.validate().map_err(|e| {
            format!(
                "{}: {e}",
                named(&["log.segment_bytes", "log.batch_bytes_max", "log.pending_bytes_max"])
            )
        })?;
        node.compute.validate().map_err(|e| {
            format!(
                "{}: {e}",
                named(&["compute.instance_count_max", "compute.memory_bytes_max"])
            )
        })?;
        let idle = node.http.idle_timeout_ms;
        if idle > 0 && idle < IDLE_TIMEOUT_MS_MIN {
            return Err(format!(
                "{}: {idle} ms would close connections between a client's requests; 0 (never) or at least {IDLE_TIMEOUT_MS_MIN}",
                named(&["http.idle_timeout_ms"])
            ));
        }
        let limits = &node.limits;
        if limits.compute_limit_default > limits.compute_limit_max {
            return Err(format!(
                "{}: the default ({}) exceeds the maximum ({})",
                named(&["limits.compute_limit_default", "limits.compute_limit_max"]),
                limits.compute_limit_default,
                limits.compute_limit_max
            ));
        }
        if limits.memory_limit_default > limits.memory_limit_max {
            return Err(format!(
                "{}: the default ({}) exceeds the maximum ({})",
                named(&["limits.memory_limit_default", "limits.memory_limit_max"]),
                limits.memory_limit_default,
                limits.memory_limit_max
            ));
        }
        if limits.memory_limit_max > node.compute.memory_bytes_max {
            return Err(format!(
                "{}: {} exceeds the instance pool's {} bytes per instance",
                named(&["limits.memory_limit_max", "compute.memory_bytes_max"]),
                limits.memory_limit_max,
                node.compute.memory_bytes_max
            ));
        }
        // A record is a data item plus its assignment header; it must fit in one batch.
        let record_max = node.http.body_bytes_max as u64 + KIB;
        if record_max > node.log.payload_bytes_max() as u64 {
            return Err(format!(
                "{}: a data item of {} bytes plus its assignment needs batches of at least {} bytes",
                named(&["http.body_bytes_max", "log.batch_bytes_max"]),
                node.http.body_bytes_max,
                record_max + 64
            ));
        }
        Ok(())
    }

    /// The effective configuration as a commented TOML file that `--config` accepts.
    pub fn to_toml(&self) -> String {
        let defaults = Settings::default();
        let mut out = String::from("# hewitt: effective configuration (hewitt config print)\n");
        let mut section = "";
        for (index, field) in FIELDS.iter().enumerate() {
            let (head, name) = field.key.split_once('.').unwrap_or(("", field.key));
            if head != section {
                section = head;
                let _ = writeln!(out, "\n[{head}]");
            }
            let _ = writeln!(out, "\n# {}", field.doc);
            let default = (field.get)(&defaults).toml();
            let range = match field.kind {
                Kind::Int { min, max } => format!("; allowed {min}..={max}"),
                Kind::IntOrAuto { min, max } => format!("; allowed {min}..={max} or \"auto\""),
                _ => String::new(),
            };
            let _ = writeln!(
                out,
                "# unit: {}{range}; default {default}; env {}; from: {}",
                field.unit, field.env, self.sources[index]
            );
            let _ = writeln!(out, "{name} = {}", (field.get)(&self.settings).toml());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compute::ComputeConfig;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn set(key: &str, value: &str) -> Override {
        Override {
            key: key.to_owned(),
            value: value.to_owned(),
            flag: "--set".to_owned(),
        }
    }

    #[test]
    fn defaults_are_valid_and_print_as_a_loadable_file() {
        let loaded = load(None, &no_env, &[]).expect("defaults load");
        let text = loaded.to_toml();
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("hewitt.toml");
        std::fs::write(&path, &text).expect("write");
        let again = load(Some(&path), &no_env, &[]).expect("the printed file loads");
        assert_eq!(
            again.settings.node.log, loaded.settings.node.log,
            "round trip through config print"
        );
        assert_eq!(again.settings.node.compute, loaded.settings.node.compute);
        assert_eq!(again.settings.logging, loaded.settings.logging);
    }

    #[test]
    fn flags_beat_environment_beats_file_beats_defaults() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("hewitt.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:9000\"\n[log]\nbatch_bytes_max = 33554432\npending_bytes_max = \"128MiB\"\n[limits]\nqueue_messages_max = 5\n",
        )
        .expect("write");
        let env = |name: &str| match name {
            "HEWITT_LIMITS_QUEUE_MESSAGES_MAX" => Some("7".to_owned()),
            "HEWITT_LIMITS_OUTBOX_ITEMS_MAX" => Some("9".to_owned()),
            _ => None,
        };
        let loaded = load(Some(&path), &env, &[set("limits.outbox_items_max", "11")]).expect("loads");
        let node = &loaded.settings.node;
        assert_eq!(node.listen.port(), 9000, "file over default");
        assert_eq!(node.log.batch_bytes_max, 32 << 20);
        assert_eq!(node.log.pending_bytes_max, 128 << 20, "units in text");
        assert_eq!(node.limits.queue_messages_max, 7, "environment over file");
        assert_eq!(node.limits.outbox_items_max, 11, "flag over environment");
        assert_eq!(node.compute, ComputeConfig::default(), "untouched fields keep defaults");
        let printed = loaded.to_toml();
        assert!(
            printed.contains("from: environment HEWITT_LIMITS_QUEUE_MESSAGES_MAX"),
            "{printed}"
        );
        assert!(printed.contains("from: flag --set"), "{printed}");
        assert!(printed.contains(&format!("from: {}", path.display())), "{printed}");
    }

    #[test]
    fn errors_name_the_field_its_source_and_what_is_allowed() {
        let err = |file: &str, env: &dyn Fn(&str) -> Option<String>, o: &[Override]| {
            let dir = tempfile::tempdir().expect("temporary directory");
            let path = dir.path().join("hewitt.toml");
            std::fs::write(&path, file).expect("write");
            match load(Some(&path), env, o) {
                Ok(_) => panic!("{file:?} was accepted"),
                Err(e) => e,
            }
        };
        let e = err("[log]\nbatch_bytes_max = 12\n", &no_env, &[]);
        assert!(e.contains("log.batch_bytes_max") && e.contains("64..="), "{e}");
        let e = err("[log]\nbatchbytes = 1\n", &no_env, &[]);
        assert!(
            e.contains("unknown field \"log.batchbytes\"") && e.contains("log.batch_bytes_max"),
            "{e}"
        );
        let e = err("[compute]\ninstance_count_max = \"many\"\n", &no_env, &[]);
        assert!(
            e.contains("compute.instance_count_max") && e.contains("not a whole number"),
            "{e}"
        );
        let e = err("listen = 8734\n", &no_env, &[]);
        assert!(e.contains("listen") && e.contains("address"), "{e}");
        let e = err("[logging]\nformat = \"xml\"\n", &no_env, &[]);
        assert!(e.contains("logging.format") && e.contains("\"json\""), "{e}");
        let e = err("not toml at all [", &no_env, &[]);
        assert!(e.contains("not valid TOML"), "{e}");
        let env = |name: &str| (name == "HEWITT_COMPUTE_MEMORY_BYTES_MAX").then(|| "12345".to_owned());
        let e = err("", &env, &[]);
        assert!(
            e.contains("compute.memory_bytes_max") && e.contains("HEWITT_COMPUTE_MEMORY_BYTES_MAX"),
            "{e}"
        );
        let e = err("", &no_env, &[set("limits.nope", "1")]);
        assert!(e.contains("--set limits.nope: unknown field"), "{e}");
        // Fields that bound each other: named together, with their sources.
        let e = err(
            "[log]\nbatch_bytes_max = 1048576\npending_bytes_max = 65536\n",
            &no_env,
            &[],
        );
        assert!(e.contains("log.pending_bytes_max (from ") && e.contains("below"), "{e}");
        let e = err("[limits]\nmemory_limit_default = \"2GiB\"\n", &no_env, &[]);
        assert!(
            e.contains("limits.memory_limit_default") && e.contains("exceeds the maximum"),
            "{e}"
        );
        let e = err("[http]\nidle_timeout_ms = 5\n", &no_env, &[]);
        assert!(e.contains("http.idle_timeout_ms") && e.contains("at least 100"), "{e}");
        let e = err("[log]\nbatch_bytes_max = \"1MiB\"\n", &no_env, &[]);
        assert!(
            e.contains("http.body_bytes_max") && e.contains("log.batch_bytes_max"),
            "{e}"
        );
    }

    #[test]
    fn byte_sizes_take_binary_units() {
        assert_eq!(parse_int("16MiB", true), Some(16 << 20));
        assert_eq!(parse_int("1_048_576", true), Some(1 << 20));
        assert_eq!(parse_int("4 KiB", true), Some(4096));
        assert_eq!(parse_int("16MB", true), None);
        assert_eq!(parse_int("16MiB", false), None);
        assert_eq!(parse_int("99999999999999TiB", true), None, "overflow is refused");
    }

    #[test]
    fn urls_and_address_lists_are_checked() {
        let a = scheduler::signer::Signer::generate_ed25519().address();
        let b = scheduler::signer::Signer::generate_ed25519().address();
        let loaded = load(
            None,
            &no_env,
            &[
                set("ao.trusted_nodes", &format!("{a}, {b}")),
                set("arweave.bundler_url", "http://127.0.0.1:4000/"),
                set("ao.public_url", ""),
            ],
        )
        .expect("valid values load");
        let ao = &loaded.settings.node.ao;
        assert_eq!(ao.trusted_nodes, vec![a, b]);
        assert_eq!(
            ao.bundler_url.as_deref(),
            Some("http://127.0.0.1:4000"),
            "trailing slash dropped"
        );
        assert_eq!(ao.public_url, None);
        // The printed file loads back to the same values.
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("hewitt.toml");
        std::fs::write(&path, loaded.to_toml()).expect("write");
        let again = load(Some(&path), &no_env, &[]).expect("the printed file loads");
        assert_eq!(&again.settings.node.ao, ao);
        for (key, value, expected) in [
            ("ao.trusted_nodes", "not-an-address", "is not a node address"),
            ("arweave.bundler_url", "https://up.arweave.net", "TLS proxy"),
            ("arweave.bundler_url", "ftp://x", "not an http:// URL"),
            ("arweave.bundler_url", "http://", "no valid host"),
        ] {
            let error = load(None, &no_env, &[set(key, value)]).err().expect("refused");
            assert!(error.contains(key) && error.contains(expected), "{error}");
        }
    }

    #[test]
    fn the_spin_is_auto_a_number_or_refused() {
        let spin = |o: &[Override]| load(None, &no_env, o).map(|l| l.settings.node.spin_before_park_us);
        assert_eq!(spin(&[]), Ok(None), "auto by default");
        assert_eq!(spin(&[set("shards_spin_before_park_us", "0")]), Ok(Some(0)));
        assert_eq!(spin(&[set("shards_spin_before_park_us", "50")]), Ok(Some(50)));
        assert_eq!(spin(&[set("shards_spin_before_park_us", "auto")]), Ok(None));
        let error = spin(&[set("shards_spin_before_park_us", "fast")]).expect_err("refused");
        assert!(
            error.contains("shards_spin_before_park_us") && error.contains("\"auto\""),
            "{error}"
        );
        let error = spin(&[set("shards_spin_before_park_us", "2000000")]).expect_err("refused");
        assert!(error.contains("outside the allowed range"), "{error}");
        // A file: a number, or the word; and the printed file loads back to the same value.
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("hewitt.toml");
        for (line, expected) in [("= 75", Some(75)), ("= \"auto\"", None)] {
            std::fs::write(&path, format!("shards_spin_before_park_us {line}\n")).expect("write");
            let loaded = load(Some(&path), &no_env, &[]).expect("loads");
            assert_eq!(loaded.settings.node.spin_before_park_us, expected, "{line}");
            std::fs::write(&path, loaded.to_toml()).expect("write");
            let again = load(Some(&path), &no_env, &[]).expect("the printed file loads");
            assert_eq!(again.settings.node.spin_before_park_us, expected, "printed {line}");
        }
        // What auto means: spin only when the shards are pinned.
        let mut node = crate::node::NodeConfig::new(dir.path(), "127.0.0.1:0".parse().expect("address"));
        assert_eq!(node.spin_before_park(), 0, "unpinned");
        node.cpu = Some(0);
        assert_eq!(node.spin_before_park(), crate::node::SPIN_WHEN_PINNED_US, "pinned");
        node.spin_before_park_us = Some(0);
        assert_eq!(node.spin_before_park(), 0, "told to park at once");
    }

    #[test]
    fn direct_io_is_true_or_false_from_flags_and_files() {
        let direct = |o: &[Override]| load(None, &no_env, o).map(|l| l.settings.node.log_direct_io);
        assert_eq!(direct(&[]), Ok(false), "off by default");
        assert_eq!(direct(&[set("log.direct_io", "true")]), Ok(true));
        assert_eq!(direct(&[set("log.direct_io", "false")]), Ok(false));
        let error = direct(&[set("log.direct_io", "yes")]).expect_err("refused");
        assert!(
            error.contains("log.direct_io") && error.contains("true or false"),
            "{error}"
        );
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("hewitt.toml");
        for (text, expected) in [("true", true), ("false", false)] {
            std::fs::write(&path, format!("[log]\ndirect_io = {text}\n")).expect("write");
            let loaded = load(Some(&path), &no_env, &[]).expect("loads");
            assert_eq!(loaded.settings.node.log_direct_io, expected, "{text}");
            std::fs::write(&path, loaded.to_toml()).expect("write");
            let again = load(Some(&path), &no_env, &[]).expect("the printed file loads");
            assert_eq!(again.settings.node.log_direct_io, expected, "printed {text}");
        }
        std::fs::write(&path, "[log]\ndirect_io = 1\n").expect("write");
        let error = load(Some(&path), &no_env, &[]).err().expect("an integer is refused");
        assert!(error.contains("not true or false"), "{error}");
    }
}
