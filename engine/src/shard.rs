//! One shard's synchronous core: the processes it owns, their timelines, evaluation and the
//! messenger's delivery queue.
//!
//! Everything here is deterministic given its inputs: the clock reading is passed in (`now`), the
//! log is appended to synchronously (durability is awaited by the shell, `node`), and no task is
//! spawned. The shell calls `admit_*` for ingress, then `pump` until it reports no work.
//!
//! Invariants (checked by assertions and by the tests in tests/):
//! - a process's nonces are dense from 0 and its hash chain links each assignment to the previous;
//! - a message id is assigned at most once per shard (`messages` refuses duplicates), which with
//!   the messenger's deterministic identities makes delivery exactly-once across crashes;
//! - an evaluation's outbox is delivered only after the message is in the log, and every delivery
//!   is appended to the log after its cause, so any durable prefix of the log is consistent.
//!
//! Cron (`crate::cron`): a process's ticks are evaluated between its messages by the rule
//! written there; ticks after its last message are evaluated up to a horizon the shell moves
//! (`advance_crons`, for monitored processes and `/cron` reads), and a message assigned
//! afterwards gets a later timestamp than every tick already evaluated, so that replay puts it
//! in the same place.
//!
//! Checkpoints (`crate::checkpoint`): [`Shard::checkpoint_chunk`] and
//! [`Shard::checkpoint_commit`] write the processes evaluated since the last checkpoint and the
//! outbox items not yet durably delivered; [`Shard::apply_checkpoint`] resumes from them after
//! the log is read back, so a restart replays only the log's tail.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet, VecDeque};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use messenger::Origin;
use scheduler::chain::{self, AssignmentFields};
use scheduler::data_item::DataItem;
use scheduler::log::{Log, LogError, Lsn, Record};
use scheduler::record::{
    Assigned, AssignmentRecord, GatewayModuleRecord, KIND_ASSIGNED, KIND_ASSIGNMENT, KIND_GATEWAY_MODULE, KIND_MODULE,
    KIND_SPAWN,
};
use scheduler::signer::Signer;
use scheduler::tags::{tag_value, Tag};
use scheduler::{Address, AssignmentId, BlockHeight, HashChain, MessageId, ModuleId, Nonce, ProcessId, Timestamp};

use crate::abi::{self, Placement, ProcessResult, StoredResult};
use crate::checkpoint::{self, Pending, ProcessState, ResultsWriter};
use crate::compute::{
    CompiledModule, ComputeError, Evaluation, GlobalValue, ProcessInstance, ProcessLimits, Runtime, Snapshot, Undone,
};
use crate::cron::{Schedule, Tick};
use crate::index::{Digest, Journal, Loaded, MessageDigest, MessageIndex, Run, Save};

/// A page of cron results: each tick with its result.
pub type CronPage = Vec<(Tick, Rc<StoredResult>)>;
/// Counts a page's entries toward a byte bound: `fits` is false for the entry that would pass
/// it, unless it would be the page's first (a page always carries one).
pub struct PageBytes {
    max: usize,
    taken: usize,
    entries: usize,
}

impl PageBytes {
    pub fn new(max: usize) -> PageBytes {
        PageBytes {
            max,
            taken: 0,
            entries: 0,
        }
    }

    pub fn fits(&mut self, bytes: usize) -> bool {
        if self.entries > 0 && self.taken.saturating_add(bytes) > self.max {
            return false;
        }
        self.taken = self.taken.saturating_add(bytes);
        self.entries += 1;
        true
    }
}

/// A page of `/results`: nonces and their results.
pub type ResultsPage = Vec<(Nonce, Rc<StoredResult>)>;

/// Cron results kept per process (the most recent); older ones are no longer served.
pub const CRON_RESULTS_MAX: usize = 1000;

/// The limits of one shard; every field bounds something the shard holds.
#[derive(Clone, Debug)]
pub struct ShardLimits {
    /// Most assigned-but-not-yet-evaluated messages before ingress answers 503. Deliveries from
    /// processes are not refused by this bound (they are already bounded by `outbox_items_max`).
    pub queue_messages_max: usize,
    /// Most outbox items waiting for delivery; evaluation pauses while the queue is full.
    pub outbox_items_max: usize,
    /// Fuel per message when neither module nor process names a `Compute-Limit`.
    pub compute_limit_default: u64,
    /// Largest `Compute-Limit` (fuel per message) a module or process may ask for; larger values
    /// are refused at load or spawn.
    pub compute_limit_max: u64,
    /// Memory limit in bytes when no `Memory-Limit` tag is given.
    pub memory_limit_default: u64,
    /// Largest `Memory-Limit` in bytes; must not exceed the instance pool's slot size.
    pub memory_limit_max: u64,
    /// Most live instances this shard keeps; beyond it the least recently used idle processes
    /// hibernate (their memory compressed, their pool slot given back). The node sets it to
    /// this shard's share of the instance pool.
    pub live_instances_max: usize,
    /// Most bytes of linear memory this shard's live instances hold together; beyond it the
    /// least recently used idle processes hibernate.
    pub live_memory_bytes_max: u64,
    /// Most bytes of results (their JSON, messages' and cron ticks') this shard keeps in
    /// memory for `/result`, `/results` and `/cron`; beyond it the oldest are dropped from
    /// memory and read back from the results file when asked for. Without checkpoints there is no results file, and every
    /// result stays in memory.
    pub results_memory_bytes_max: usize,
}

impl Default for ShardLimits {
    fn default() -> Self {
        ShardLimits {
            queue_messages_max: 100_000,
            outbox_items_max: 10_000,
            // About a second of guest work: enough for real handlers, short for a runaway loop.
            compute_limit_default: 1_000_000_000,
            // Until evaluation is preemptible, a handler holds its shard for as long as it runs:
            // this bound keeps that to about ten seconds. AO's reference allows ~9e12.
            compute_limit_max: 10_000_000_000,
            memory_limit_default: 256 << 20,
            memory_limit_max: 1 << 30,
            live_instances_max: usize::MAX,
            live_memory_bytes_max: 4 << 30,
            results_memory_bytes_max: 256 << 20,
        }
    }
}

/// Why the shard refused or could not do something.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Duplicate(String),
    /// Retry later: a bounded queue is full.
    #[error("{0}")]
    Busy(String),
    #[error("log: {0}")]
    Log(#[from] LogError),
    #[error("compute: {0}")]
    Compute(ComputeError),
    /// The data dir holds something this node cannot make sense of.
    #[error("data dir is inconsistent at {lsn:?}: {reason}")]
    Corrupt { lsn: Lsn, reason: String },
    /// A saved index that cannot be used (the log is then read whole).
    #[error("index: {0}")]
    Index(String),
    /// A result no longer in memory could not be read back from the results file.
    #[error("results file: {0}")]
    Results(String),
    /// A result's `Assignments` names a message this shard does not hold: the shell asks the
    /// other shards for it and hands it over ([`Shard::message_fetched`]) before delivery goes on.
    #[error("delivery waits for message {0} from another shard")]
    WaitsForMessage(MessageId),
}

/// What the node knows of a module besides its code: what `env`, the limits and GraphQL need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModuleMeta {
    pub id: ModuleId,
    pub owner_address: String,
    /// The owner's public key, base64url.
    pub owner_key: String,
    pub tags: Vec<Tag>,
    pub anchor: Option<String>,
    pub data_len: usize,
    /// The gateway it was fetched from; `None` for a signed item posted to this node.
    pub gateway: Option<String>,
}

impl ModuleMeta {
    fn of_item(item: &DataItem) -> ModuleMeta {
        ModuleMeta {
            id: ModuleId::from(item.id()),
            owner_address: item.owner_address().to_string(),
            owner_key: scheduler::id::b64url(&item.owner),
            tags: item.tags.clone(),
            anchor: item.anchor.as_ref().map(abi::anchor_text),
            data_len: item.data.len(),
            gateway: None,
        }
    }

    pub fn tag(&self, name: &str) -> Option<&str> {
        tag_value(&self.tags, name)
    }
}

/// The JSON header of a `KIND_GATEWAY_MODULE` record (`scheduler::record`).
#[derive(serde::Serialize, serde::Deserialize)]
struct GatewayHeader {
    owner: GatewayOwner,
    tags: Vec<Tag>,
    gateway: String,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct GatewayOwner {
    address: String,
    key: String,
}

struct ModuleEntry {
    meta: ModuleMeta,
    compiled: CompiledModule,
    /// Where the module's record is in the log (set once appended): a process's spawn is
    /// delivered only if its module was logged before the spawn's cause, a rule of the log alone.
    lsn: Lsn,
}

/// One slot of a process's timeline.
struct Entry {
    lsn: Lsn,
    timestamp: Timestamp,
    block_height: BlockHeight,
    hash_chain: HashChain,
    result: Kept,
}

/// A message's or tick's result: none yet, in memory, or only in the results file, read back
/// when asked for. 16 bytes: one per message of every timeline.
#[derive(Clone, Debug, Default)]
enum Kept {
    #[default]
    None,
    Memory(Rc<StoredResult>),
    /// Its offset in the results file, with the top bit set for an `Error` result.
    Filed(u64),
}

const FILED_ERROR: u64 = 1 << 63;

/// Whose result: a message's (its nonce) or a cron tick's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    Message(usize),
    Tick(Tick),
}

/// What a result in memory takes beside its text (its allocation, its place in the queue of
/// results the file also holds), counted toward `results_memory_bytes_max`.
const RESULT_OVERHEAD_BYTES: usize = 128;

impl Kept {
    fn filed(offset: u64, is_error: bool) -> Kept {
        Kept::Filed(offset | if is_error { FILED_ERROR } else { 0 })
    }

    fn is_some(&self) -> bool {
        !matches!(self, Kept::None)
    }

    fn succeeded(&self) -> bool {
        match self {
            Kept::None => false,
            Kept::Memory(result) => !result.is_error,
            Kept::Filed(at) => at & FILED_ERROR == 0,
        }
    }
}

/// Where a process's evaluation stands: before message `nonce`, with `next` its next tick.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Point {
    nonce: usize,
    next: Option<Tick>,
}

/// One evaluated cron tick, as `/cron` serves it.
pub struct CronResult {
    pub tick: Tick,
    /// The log position of the process's last message before the tick: the result is served
    /// once that is durable (a crash could otherwise change what the tick saw).
    pub after: Lsn,
    result: Kept,
    /// What this result counts toward `results_memory_bytes_max` while in memory (0: none),
    /// given back when it leaves the process's latest [`CRON_RESULTS_MAX`].
    counted: u32,
}

/// A process's crons and how far they are evaluated.
struct CronState {
    schedule: Schedule,
    /// The next tick to evaluate.
    next: Option<Tick>,
    /// Ticks after the last message are evaluated up to this time (ms); a message assigned
    /// later gets a later timestamp.
    through: u64,
    /// Ticks whose evaluation failed since the snapshot: a rollback's replay skips them.
    failed: Vec<Tick>,
    /// The latest results, oldest first, at most [`CRON_RESULTS_MAX`].
    results: VecDeque<CronResult>,
}

struct Process {
    item: DataItem,
    module: ModuleId,
    limits: ProcessLimits,
    /// The `env` JSON its handler gets; empty while the process sleeps (rebuilt when it wakes,
    /// from the spawn item and the module's tags: see [`Shard::env_json`]).
    env: Rc<[u8]>,
    entries: Vec<Entry>,
    /// How many entries (from nonce 0) have been evaluated.
    evaluated: usize,
    /// True while the process is in `ready`.
    queued: bool,
    instance: Option<ProcessInstance>,
    /// Without an instance: where the next wake starts from (see [`Dormant`]). Neither an
    /// instance nor this: the process's rollback failed.
    dormant: Option<Dormant>,
    /// When it was last evaluated (the shard's `clock`), for least-recently-used hibernation.
    touched: u64,
    /// Bytes of linear memory its live instance holds (0 without one).
    live_bytes: usize,
    /// Memory at a point of the evaluation (the latest checkpoint's, or a rollback's target);
    /// bounds the replay a rollback needs. Shared with `dormant` while the process sleeps at
    /// that point.
    snapshot: Option<Box<(Point, Rc<Hibernated>)>>,
    /// Its latest checkpoint record holds its state now (nothing evaluated since).
    checkpointed: bool,
    /// Messages and ticks of it that failed (rolled back) since the node started.
    failures: u32,
    cron: Option<Box<CronState>>,
    /// Entries read back from the log at recovery (see [`Shard::recovery_pending`]).
    recovered: usize,
    /// Its position in the shard's `process_ids`.
    slot: u32,
    /// The id of the last entry's assignment, which the next link of the chain needs; `None`
    /// after recovery until then (it is the SHA-256 of a signature: computed once, when needed,
    /// rather than for every record read back).
    last_assignment: Option<AssignmentId>,
}

/// A process without a live instance, and what its next wake starts from.
enum Dormant {
    /// Nothing evaluated yet (as every process is right after a restart): a fresh instance.
    Genesis,
    /// Hibernated: its memory and globals after its last evaluation.
    Hibernated(Rc<Hibernated>),
}

/// A hibernated process's state: linear memory compressed with zstd (its frame carries zstd's
/// content checksum, checked when it wakes) and the values of its module's mutable globals
/// (packed, in the module's order: see [`pack_globals`]).
struct Hibernated {
    memory_zstd: Box<[u8]>,
    memory_pages: u64,
    globals: Box<[u8]>,
}

/// Global values as bytes (a type byte, then the value little-endian): a sleeping process's
/// globals in tens of bytes, their names being its module's.
fn pack_globals(globals: &[(String, GlobalValue)]) -> Box<[u8]> {
    let mut out = Vec::with_capacity(globals.len() * 5);
    for (_, value) in globals {
        match *value {
            GlobalValue::I32(v) => {
                out.push(0);
                out.extend_from_slice(&v.to_le_bytes());
            }
            GlobalValue::I64(v) => {
                out.push(1);
                out.extend_from_slice(&v.to_le_bytes());
            }
            GlobalValue::F32(v) => {
                out.push(2);
                out.extend_from_slice(&v.to_le_bytes());
            }
            GlobalValue::F64(v) => {
                out.push(3);
                out.extend_from_slice(&v.to_le_bytes());
            }
            GlobalValue::V128(v) => {
                out.push(4);
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
    }
    out.into_boxed_slice()
}

/// The globals [`pack_globals`] packed, named by `names` (the module's).
fn unpack_globals(mut bytes: &[u8], names: &[String]) -> Vec<(String, GlobalValue)> {
    let mut globals = Vec::with_capacity(names.len());
    for name in names {
        let (value, size) = match bytes[0] {
            0 => (
                GlobalValue::I32(i32::from_le_bytes(bytes[1..5].try_into().expect("4 bytes"))),
                5,
            ),
            1 => (
                GlobalValue::I64(i64::from_le_bytes(bytes[1..9].try_into().expect("8 bytes"))),
                9,
            ),
            2 => (
                GlobalValue::F32(u32::from_le_bytes(bytes[1..5].try_into().expect("4 bytes"))),
                5,
            ),
            3 => (
                GlobalValue::F64(u64::from_le_bytes(bytes[1..9].try_into().expect("8 bytes"))),
                9,
            ),
            _ => (
                GlobalValue::V128(u128::from_le_bytes(bytes[1..17].try_into().expect("16 bytes"))),
                17,
            ),
        };
        globals.push((name.clone(), value));
        bytes = &bytes[size..];
    }
    globals
}

/// zstd level of hibernated memory: fast to write, and wasm memories (mostly zero pages)
/// shrink a hundredfold at it.
const HIBERNATION_ZSTD_LEVEL: i32 = 1;

thread_local! {
    /// One zstd context each way per shard thread: making one allocates and faults in hundreds
    /// of KB, which cost more than compressing a small process's memory.
    static COMPRESSOR: RefCell<zstd::bulk::Compressor<'static>> = RefCell::new({
        let mut compressor =
            zstd::bulk::Compressor::new(HIBERNATION_ZSTD_LEVEL).expect("zstd makes a compression context");
        compressor
            .set_parameter(zstd::stream::raw::CParameter::ChecksumFlag(true))
            .expect("zstd takes its own checksum flag");
        compressor
    });
    static DECOMPRESSOR: RefCell<zstd::bulk::Decompressor<'static>> =
        RefCell::new(zstd::bulk::Decompressor::new().expect("zstd makes a decompression context"));
}

impl Hibernated {
    fn of(snapshot: Snapshot) -> Hibernated {
        let compressed = COMPRESSOR
            .with(|compressor| compressor.borrow_mut().compress(&snapshot.memory))
            .expect("compressing into a fresh buffer cannot fail");
        Hibernated {
            // The buffer was sized for the worst case (about the memory's size): keep what is used.
            memory_zstd: compressed.into_boxed_slice(),
            memory_pages: snapshot.memory_pages,
            globals: pack_globals(&snapshot.globals),
        }
    }

    /// A checkpoint's state of a process of a module whose globals are `names`; `Err` when they
    /// are not the globals the state holds.
    fn of_state(
        memory_zstd: Box<[u8]>,
        memory_pages: u64,
        globals: &[(String, GlobalValue)],
        names: &[String],
    ) -> Result<Hibernated, String> {
        if !globals.iter().map(|(name, _)| name).eq(names.iter()) {
            return Err(format!(
                "it holds the globals {:?}, the module has {names:?}",
                globals.iter().map(|(name, _)| name).collect::<Vec<_>>()
            ));
        }
        Ok(Hibernated {
            memory_zstd,
            memory_pages,
            globals: pack_globals(globals),
        })
    }

    fn snapshot(&self, names: &[String]) -> Result<Snapshot, ShardError> {
        let bytes = (self.memory_pages * crate::compute::WASM_PAGE_BYTES) as usize;
        // zstd checks the frame's content checksum as it decompresses.
        let memory = DECOMPRESSOR
            .with(|decompressor| decompressor.borrow_mut().decompress(&self.memory_zstd, bytes))
            .map_err(|e| ShardError::Busy(format!("hibernated memory does not decompress: {e}")))?;
        if memory.len() != bytes {
            return Err(ShardError::Busy(format!(
                "hibernated memory decompresses to {} bytes, not {bytes}",
                memory.len()
            )));
        }
        Ok(Snapshot {
            memory,
            memory_pages: self.memory_pages,
            globals: unpack_globals(&self.globals, names),
        })
    }
}

/// An item waiting in the messenger's queue.
///
/// `cause` is the log position of the message whose evaluation produced the item: a message is
/// delivered only to a process spawned before its cause (nonce 0 at an earlier position). That
/// rule depends only on the log, so the first run and every replay agree on what is delivered.
enum Delivery {
    Message {
        item: DataItem,
        cause: Lsn,
    },
    Spawn {
        process: DataItem,
        notice: DataItem,
        cause: Lsn,
    },
    /// A result's `Assignments` entry: `message` joins the timelines of `processes`.
    Assign {
        processes: Vec<ProcessId>,
        message: MessageId,
        cause: Lsn,
    },
}

/// An item one shard hands to the shard that owns its target (see [`Shard::take_remote`] and
/// [`Shard::accept_remote`]). Only items whose cause is durable on the sending shard cross, so
/// re-deriving them after a crash gives the same items, which the receiver refuses as duplicates.
#[derive(Clone, Debug)]
pub enum Remote {
    /// An outbox message for a process the receiving shard owns.
    Message(DataItem),
    /// A process spawned by a process of the sending shard, and the `Spawned` notice its parent
    /// is to receive: the receiving shard sends the notice back once the child is in its log
    /// (again for a duplicate, which the parent's shard then refuses), or [`Remote::SpawnRefused`]
    /// if it refuses the child. `None` only from a checkpoint of an older version, whose shard
    /// delivered the notice itself.
    Spawn {
        process: DataItem,
        notice: Option<DataItem>,
    },
    /// The answer to a [`Remote::Spawn`] the receiving shard refused: no notice will come.
    SpawnRefused { notice: MessageId },
    /// A result's `Assignments` entry: a copy of a message the sending shard holds, for the
    /// timeline of `process`.
    Assign { process: ProcessId, item: DataItem },
}

/// A write tracker for this thread's instances, if the kernel offers one (said once per
/// process otherwise).
fn tracker() -> Option<Arc<crate::compute::dirty::DirtyTracker>> {
    static SAID: std::sync::Once = std::sync::Once::new();
    match crate::compute::dirty::DirtyTracker::new() {
        Ok(tracker) => Some(Arc::new(tracker)),
        Err(error) => {
            SAID.call_once(|| {
                tracing::info!(%error, "no page-level rollback here: a failed message rolls back by a rebuild");
            });
            None
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The message fields an `assign` request may ask the process not to see (its `exclude`).
pub const EXCLUDABLE_FIELDS: [&str; 5] = ["Data", "Anchor", "Tags", "Signature", "Owner"];

/// Checks an `exclude` list (comma-separated names of [`EXCLUDABLE_FIELDS`]; empty for none).
pub fn check_exclude(exclude: &str) -> Result<(), ShardError> {
    if exclude.is_empty() {
        return Ok(());
    }
    let mut seen = Vec::new();
    for name in exclude.split(',') {
        if !EXCLUDABLE_FIELDS.contains(&name) {
            return Err(ShardError::BadRequest(format!(
                "exclude names {name:?}; a message's fields that can be excluded are {}",
                EXCLUDABLE_FIELDS.join(", ")
            )));
        }
        if seen.contains(&name) {
            return Err(ShardError::BadRequest(format!("exclude names {name:?} twice")));
        }
        seen.push(name);
    }
    Ok(())
}

/// A message that was evaluated by `pump`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Evaluated {
    pub process: ProcessId,
    /// The message evaluated or, for a cron tick, the next message's nonce.
    pub nonce: Nonce,
    /// The cron tick evaluated, if it was one (then no message was).
    pub tick: Option<Tick>,
    /// Wall time of the evaluation (for metrics only: nothing deterministic depends on it).
    pub duration: std::time::Duration,
    /// Fuel the message used.
    pub gas_used: u64,
}

/// What a timeline read returns for one nonce.
pub struct TimelineEntry {
    pub nonce: Nonce,
    pub timestamp: Timestamp,
    pub lsn: Lsn,
}

/// Counters for the demo, metrics and tests.
#[derive(Clone, Copy, Debug, Default)]
pub struct ShardCounters {
    pub assigned: u64,
    pub evaluated: u64,
    pub delivered: u64,
    pub duplicates_refused: u64,
    pub undeliverable: u64,
    /// Outbox items handed to the shards that own their targets.
    pub forwarded: u64,
    /// Processes put to sleep (memory compressed, pool slot given back), and woken again.
    pub hibernations: u64,
    pub wakes: u64,
    pub rollbacks: u64,
    /// Rollbacks done in place (see `compute::dirty`), and the 4 KiB pages they put back.
    pub rollbacks_in_place: u64,
    pub rollback_pages: u64,
    /// Spawns and wakes that took a spare instance made ahead.
    pub spares_used: u64,
    /// Processes that could not be woken (their state does not fit the node's configuration).
    pub wake_failures: u64,
    /// Cron ticks evaluated.
    pub cron_ticks: u64,
    /// Fuel used by every evaluation since start (recovery's replay included).
    pub fuel_used: u64,
    /// Checkpoints committed since start.
    pub checkpoints: u64,
    /// Messages the start resumed from a checkpoint instead of evaluating them again.
    pub resumed: u64,
    /// Records the start took from the saved index instead of the log.
    pub index_loaded: u64,
    /// Saves of the index committed since start.
    pub index_saves: u64,
    /// Results dropped from memory since start (`results_memory_bytes_max`): the results file
    /// holds them.
    pub results_filed: u64,
}

pub struct Shard {
    signer: Signer,
    address: Address,
    runtime: Runtime,
    log: Rc<RefCell<Log>>,
    limits: ShardLimits,
    modules: IdMap<ModuleId, ModuleEntry>,
    processes: IdMap<ProcessId, Process>,
    /// Every message id assigned, process ids (their nonce 0) included: the process (its slot
    /// in `process_ids`, to keep this, the largest map, small) and the nonce.
    messages: MessageIndex,
    /// The digests of the records appended since the last save of the index, when the shell
    /// saves one (see [`Shard::keep_index_journal`]).
    journal: Option<Journal>,
    /// Set while a saved index is loaded: the records it names are already in it.
    loading_index: bool,
    /// The processes in spawn order; a process's slot indexes this.
    process_ids: Vec<ProcessId>,
    /// Messages assigned (by `assign` or a result's `Assignments`) to processes other than the
    /// one they were sent to: where each sits in that other timeline.
    assigned: IdMap<(ProcessId, MessageId), Nonce>,
    ready: VecDeque<ProcessId>,
    unevaluated: usize,
    outbox: VecDeque<Delivery>,
    counters: ShardCounters,
    /// See [`Shard::recovery_pending`].
    recovery_pending: usize,
    /// Nodes whose items may carry the messenger's tags (see [`Shard::set_trusted_nodes`]).
    trusted: HashSet<Address>,
    /// Messages to processes with crons are stamped after this time (ms): the cron lease of the
    /// node's previous run, so that a clock set back across a restart cannot put a new message
    /// before ticks already evaluated (see [`Shard::set_cron_floor`]).
    cron_floor: u64,
    /// Cron ticks may be evaluated up to this time (ms): the lease the shell saved durably
    /// (see [`Shard::extend_cron_lease`]).
    cron_lease: u64,
    /// Where compiled modules are kept between restarts (see [`Shard::set_artifact_dir`]).
    artifact_dir: Option<std::path::PathBuf>,
    /// Processes whose crons are driven to the present (see [`Shard::drive_crons`]).
    monitored: HashSet<ProcessId, foldhash::fast::RandomState>,
    /// Processes by when they were last evaluated (`(pid, clock)`; an entry is stale once the
    /// process's `touched` moved on), oldest first: the order hibernation takes them in.
    lru: VecDeque<(ProcessId, u64)>,
    clock: u64,
    /// Live instances and the bytes of linear memory they hold.
    live: usize,
    live_bytes: usize,
    /// This shard's index and the node's shard count (see [`Shard::set_placement`]).
    shard_index: usize,
    shard_count: usize,
    /// Items for other shards, per destination, each with its cause here: sent once the cause
    /// is durable (see [`Shard::take_remote`]).
    remote_out: Vec<VecDeque<(Lsn, Remote)>>,
    remote_out_len: usize,
    /// Bytes of the items in `remote_out` (a message copy can be megabytes).
    remote_out_bytes: usize,
    /// Items other shards sent, delivered before this shard's own outbox.
    remote_in: VecDeque<(usize, Remote)>,
    remote_in_bytes: usize,
    /// Items sent to each shard that it does not yet hold durably (see [`Shard::set_settlement`]),
    /// and how many items sent before them it does.
    sent: Vec<VecDeque<Remote>>,
    sent_settled: Vec<u64>,
    /// Items taken from other shards: their sender and the log position after delivering them.
    settling: VecDeque<(usize, Lsn)>,
    /// Spawns sent to other shards that have not answered yet, by their notices' ids; kept in
    /// checkpoints, so that a restart sends them again until an answer is durable here.
    awaiting: IdMap<MessageId, AwaitedSpawn>,
    awaiting_bytes: usize,
    awaiting_sent: u64,
    /// A message another shard holds, fetched for the `Assignments` entry being delivered
    /// (`None`: no shard holds it).
    fetched: Option<(MessageId, Option<DataItem>)>,
    /// `settled[from * count + to]`: items from shard `from` that shard `to` holds durably.
    settled: Option<Arc<[AtomicU64]>>,
    /// Where every evaluation's result is appended (see `crate::checkpoint`); `None` when
    /// checkpoints are off, or after the file failed.
    results_out: Option<ResultsWriter>,
    /// Why results are no longer written (checkpoints stop until a restart).
    results_failed: Option<String>,
    /// Reads back the results no longer kept in memory (`Kept::Filed`).
    results_in: Option<checkpoint::ResultsReader>,
    /// Results kept in memory that the results file also holds, oldest first: process, whose,
    /// offset, bytes. What `results_memory_bytes_max` drops from memory first.
    kept: VecDeque<(ProcessId, Slot, u64, usize)>,
    kept_bytes: usize,
    /// Entries of `kept` still in memory (the rest are ticks gone from their process's latest
    /// results: the queue is compacted when they outnumber these).
    kept_live: usize,
    /// The results file is in the kernel's hands (flushed) up to here: readable by offset.
    results_readable: u64,
    /// Evaluations and fuel since the latest checkpoint was begun.
    since_checkpoint: (u64, u64),
    /// For `hewitt verify` (see [`Shard::set_replay_only`]).
    replay_only: bool,
    /// Tracks which pages each message writes, when the kernel can (see `compute::dirty`):
    /// a failed message is then undone in place.
    dirty: Option<Arc<crate::compute::dirty::DirtyTracker>>,
    /// Fresh instances made ahead (after an evaluation, in the room the shard keeps), by module
    /// and limits, so that a spawn or a wake does not instantiate; for the modules spawned or
    /// woken most recently (at most [`SPARE_MODULES`]), oldest first.
    spares: Vec<((ModuleId, ProcessLimits), Vec<ProcessInstance>)>,
    spare_count: usize,
}

/// How many processes waiting to be evaluated [`Shard::make_room`] passes over looking for an
/// idle one before it puts the oldest of them to sleep instead.
const MAKE_ROOM_SCAN_WAITING: usize = 64;

/// Modules (with their limits) that keep spare instances, and spares each keeps.
const SPARE_MODULES: usize = 4;
const SPARES_EACH: usize = 2;

/// Live instances with at least this much memory are tracked for undo in place from the start
/// (smaller ones once their process has failed: their rebuild is cheap, and tracking costs
/// every wake a copy of the memory).
const UNDO_TRACKING_MIN_BYTES: usize = 1 << 20;

/// Most bytes of items one shard queues for the others before its evaluation pauses, and takes
/// from them before their batches wait in the rings.
const REMOTE_BYTES_MAX: usize = 64 << 20;

/// The cause of an item for another shard that waits for nothing here: one from a checkpoint
/// (its cause was durable when the checkpoint committed), or a refusal. No evaluation has it: the
/// log's first record is a module.
pub const NO_CAUSE: Lsn = Lsn(0);

/// About the most bytes one batch between shards carries (at least one item).
const REMOTE_BATCH_BYTES: usize = 4 << 20;

impl Delivery {
    fn pending(&self) -> Pending {
        match self {
            Delivery::Message { item, cause } => Pending::Message {
                item: item.clone(),
                cause: cause.0,
            },
            Delivery::Spawn { process, notice, cause } => Pending::Spawn {
                process: process.clone(),
                notice: notice.clone(),
                cause: cause.0,
            },
            Delivery::Assign {
                processes,
                message,
                cause,
            } => Pending::Assign {
                processes: processes.clone(),
                message: *message,
                cause: cause.0,
            },
        }
    }
}

impl Remote {
    /// What a checkpoint keeps of this item, sent or to be sent to shard `to`.
    fn pending(&self, to: u32) -> Option<Pending> {
        match self {
            Remote::Message(item) => Some(Pending::RemoteMessage { to, item: item.clone() }),
            Remote::Spawn { process, notice: None } => Some(Pending::RemoteSpawn {
                to,
                item: process.clone(),
            }),
            Remote::Spawn {
                process,
                notice: Some(notice),
            } => Some(Pending::RemoteSpawnNotified {
                to,
                process: process.clone(),
                notice: notice.clone(),
            }),
            // Not kept: a restart sends the spawn again (the sending shard's checkpoint holds it
            // until its answer comes), and the refusal is made again.
            Remote::SpawnRefused { .. } => None,
            Remote::Assign { process, item } => Some(Pending::RemoteAssign {
                to,
                process: *process,
                item: item.clone(),
            }),
        }
    }

    /// The bytes this item holds (its data items').
    fn bytes(&self) -> usize {
        match self {
            Remote::Message(item) | Remote::Assign { item, .. } => item_bytes(item),
            Remote::Spawn { process, notice } => item_bytes(process) + notice.as_ref().map_or(0, item_bytes),
            Remote::SpawnRefused { .. } => 64,
        }
    }
}

/// About the memory a data item holds.
fn item_bytes(item: &DataItem) -> usize {
    item.data.len() + item.owner.len() + item.signature.len() + 256 + item.tags.len() * 32
}

/// A spawn sent to the shard that owns the child, until that shard answers with the `Spawned`
/// notice or a refusal (see [`Remote::Spawn`]).
struct AwaitedSpawn {
    to: usize,
    process: DataItem,
    notice: DataItem,
    /// The order the spawns were sent in (a checkpoint keeps them in it).
    sent: u64,
}

/// The maps keyed by ids. Ids are SHA-256 outputs, but a client chooses its signatures, so the
/// hash is still keyed per process (foldhash's random state), just far cheaper than SipHash:
/// reading a log back is mostly map inserts.
pub(crate) type IdMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

fn no_instance(pid: ProcessId) -> ShardError {
    ShardError::Busy(format!(
        "process {pid} has no live instance (its rollback failed; see the node log)"
    ))
}

/// Parses `Memory-Limit` values such as `512-mb`, `1-gb`, `65536-kb` or a plain byte count.
pub fn parse_memory_limit(text: &str) -> Option<u64> {
    let text = text.trim().to_ascii_lowercase();
    let (number, unit) = match text.split_once('-') {
        Some((number, unit)) => (number, unit),
        None => (text.as_str(), "b"),
    };
    let number: u64 = number.parse().ok()?;
    let scale: u64 = match unit {
        "b" => 1,
        "kb" => 1 << 10,
        "mb" => 1 << 20,
        "gb" => 1 << 30,
        _ => return None,
    };
    number.checked_mul(scale)
}

/// An estimate of Arweave's block height at `timestamp` (one block per ~2 minutes after a known
/// height). This node reaches no gateway, so the height is only informative; what matters for
/// replay is that it is recorded in the assignment and never recomputed.
pub fn block_height_at(timestamp: Timestamp) -> BlockHeight {
    const KNOWN_HEIGHT: u64 = 1_310_000;
    const KNOWN_TIME_MS: u64 = 1_700_000_000_000;
    const BLOCK_MS: u64 = 120_000;
    BlockHeight(KNOWN_HEIGHT + timestamp.0.saturating_sub(KNOWN_TIME_MS) / BLOCK_MS)
}

impl Shard {
    /// Builds the shard and recovers its state from `log` in one go (see [`Shard::recover_from`]).
    pub fn recover(
        signer: Signer,
        runtime: Runtime,
        log: Rc<RefCell<Log>>,
        limits: ShardLimits,
    ) -> Result<Shard, ShardError> {
        let mut shard = Shard::new(signer, runtime, log, limits);
        let mut next = Some(Lsn(0));
        while let Some(from) = next {
            next = shard.recover_from(from, usize::MAX)?;
        }
        shard.finish_recovery();
        Ok(shard)
    }

    /// An empty shard on `log`; call [`Shard::recover_from`] until it returns `None`, then
    /// [`Shard::finish_recovery`], before admitting or pumping anything.
    pub fn new(signer: Signer, runtime: Runtime, log: Rc<RefCell<Log>>, limits: ShardLimits) -> Shard {
        let address = signer.address();
        Shard {
            signer,
            address,
            runtime,
            log,
            limits,
            modules: IdMap::default(),
            processes: IdMap::default(),
            messages: MessageIndex::default(),
            journal: None,
            loading_index: false,
            process_ids: Vec::new(),
            assigned: IdMap::default(),
            ready: VecDeque::new(),
            unevaluated: 0,
            outbox: VecDeque::new(),
            counters: ShardCounters::default(),
            recovery_pending: 0,
            trusted: HashSet::new(),
            artifact_dir: None,
            cron_floor: 0,
            cron_lease: u64::MAX,
            monitored: HashSet::default(),
            lru: VecDeque::new(),
            clock: 0,
            live: 0,
            live_bytes: 0,
            shard_index: 0,
            shard_count: 1,
            remote_out: vec![VecDeque::new()],
            remote_out_len: 0,
            remote_out_bytes: 0,
            remote_in: VecDeque::new(),
            remote_in_bytes: 0,
            sent: vec![VecDeque::new()],
            sent_settled: vec![0],
            settling: VecDeque::new(),
            awaiting: IdMap::default(),
            awaiting_bytes: 0,
            awaiting_sent: 0,
            fetched: None,
            settled: None,
            results_out: None,
            results_failed: None,
            results_in: None,
            kept: VecDeque::new(),
            kept_bytes: 0,
            kept_live: 0,
            results_readable: 0,
            since_checkpoint: (0, 0),
            replay_only: false,
            dirty: tracker(),
            spares: Vec::new(),
            spare_count: 0,
        }
    }

    /// Makes this shard number `index` of `count` (before recovery): processes placed elsewhere
    /// (`messenger::placement`) are refused at admission and their deliveries are queued for
    /// the owning shard.
    pub fn set_placement(&mut self, index: usize, count: usize) {
        assert!(index < count, "shard {index} of {count}");
        self.shard_index = index;
        self.shard_count = count;
        self.remote_out = (0..count).map(|_| VecDeque::new()).collect();
        self.sent = (0..count).map(|_| VecDeque::new()).collect();
        self.sent_settled = vec![0; count];
    }

    /// Counters shared by the node's shards (`count * count`, see [`Shard::set_placement`]):
    /// each shard counts the items it holds durably from each other one, and keeps copies of
    /// what it sent until they are counted, so that a checkpoint can carry what another shard
    /// might still lose in a crash.
    pub fn set_settlement(&mut self, settled: Arc<[AtomicU64]>) {
        assert_eq!(settled.len(), self.shard_count * self.shard_count);
        self.settled = Some(settled);
    }

    /// Counts the items from other shards that this shard's log now holds durably.
    pub fn settle(&mut self) {
        let Some(settled) = &self.settled else {
            self.settling.clear();
            return;
        };
        let durable = self.log.borrow().durable_lsn();
        while let Some(&(from, after)) = self.settling.front() {
            if after > durable {
                break;
            }
            self.settling.pop_front();
            settled[from * self.shard_count + self.shard_index].fetch_add(1, Ordering::Release);
        }
    }

    /// Drops the copies of items sent to shard `to` that it now holds durably.
    fn prune_sent(&mut self, to: usize) {
        let Some(settled) = &self.settled else { return };
        let held = settled[self.shard_index * self.shard_count + to].load(Ordering::Acquire);
        while self.sent_settled[to] < held && self.sent[to].pop_front().is_some() {
            self.sent_settled[to] += 1;
        }
    }

    /// The shard that owns `pid`.
    pub fn shard_of(&self, pid: &ProcessId) -> usize {
        messenger::placement::shard_of(pid, self.shard_count)
    }

    fn owns(&self, pid: &ProcessId) -> bool {
        self.shard_count == 1 || self.shard_of(pid) == self.shard_index
    }

    fn refuse_elsewhere(&self, pid: &ProcessId) -> Result<(), ShardError> {
        if self.owns(pid) {
            return Ok(());
        }
        Err(ShardError::BadRequest(format!(
            "process {pid} is placed on shard {}, not on shard {}",
            self.shard_of(pid),
            self.shard_index
        )))
    }

    /// Whether the only work left is evaluation, and it waits for the queues to other shards to
    /// drain (the shell then waits for a wake-up instead of spinning).
    pub fn waits_for_other_shards(&self) -> bool {
        self.outbox.is_empty() && self.remote_in.is_empty() && self.remote_out_full()
    }

    fn remote_out_full(&self) -> bool {
        self.remote_out_len >= self.limits.outbox_items_max
            || self.remote_out_bytes >= REMOTE_BYTES_MAX
            || self.awaiting.len() >= self.limits.outbox_items_max
            || self.awaiting_bytes >= REMOTE_BYTES_MAX
    }

    /// Spawns sent to other shards whose answers have not come yet.
    pub fn spawns_awaiting(&self) -> usize {
        self.awaiting.len()
    }

    /// Sends `process` to shard `to`, which owns it, and waits for its answer (kept until then).
    fn send_spawn(&mut self, to: usize, cause: Lsn, process: &DataItem, notice: &DataItem) {
        let id = MessageId::from(notice.id());
        if self.awaiting.contains_key(&id) {
            return; // sent already (a checkpoint's copy, and its replay's)
        }
        self.awaiting_sent += 1;
        let awaited = AwaitedSpawn {
            to,
            process: process.clone(),
            notice: notice.clone(),
            sent: self.awaiting_sent,
        };
        self.awaiting_bytes += item_bytes(process) + item_bytes(notice);
        self.awaiting.insert(id, awaited);
        self.queue_remote(
            to,
            cause,
            Remote::Spawn {
                process: process.clone(),
                notice: Some(notice.clone()),
            },
        );
    }

    /// Hands over the message a [`ShardError::WaitsForMessage`] asked for: its item as another
    /// shard holds it durably, or `None` if no shard holds it.
    pub fn message_fetched(&mut self, message: MessageId, item: Option<DataItem>) {
        self.fetched = Some((message, item));
    }

    /// The answer to a spawn this shard sent came (its notice, delivered or refused as a
    /// duplicate, or a refusal).
    fn spawn_answered(&mut self, notice: &MessageId) {
        if let Some(awaited) = self.awaiting.remove(notice) {
            self.awaiting_bytes -= item_bytes(&awaited.process) + item_bytes(&awaited.notice);
        }
    }

    /// Items queued for other shards, all destinations together.
    pub fn remote_out_len(&self) -> usize {
        self.remote_out_len
    }

    /// Whether items for shard `to` are queued.
    pub fn has_remote(&self, to: usize) -> bool {
        !self.remote_out[to].is_empty()
    }

    /// The cause of the oldest item queued for shard `to`: it may be sent once that is durable.
    pub fn remote_front_cause(&self, to: usize) -> Option<Lsn> {
        self.remote_out[to].front().map(|(cause, _)| *cause)
    }

    /// Takes up to `max` items (and about [`REMOTE_BATCH_BYTES`]) for shard `to` whose causes
    /// are durable, in order; never more than a receiving shard takes at once.
    pub fn take_remote(&mut self, to: usize, max: usize) -> Vec<Remote> {
        let durable = self.log.borrow().durable_lsn();
        if self.settled.is_some() {
            self.prune_sent(to);
            if self.sent[to].len() >= self.limits.outbox_items_max {
                // The other shard holds nothing durably any more (it failed): what is sent must
                // stay copied until it does, so sending stops (and evaluation, once the queue
                // to it is full) rather than the copies growing without bound.
                return Vec::new();
            }
        }
        let max = max.min(self.limits.outbox_items_max).max(1);
        let queue = &mut self.remote_out[to];
        let (mut taken, mut bytes) = (Vec::new(), 0);
        while taken.len() < max
            && bytes < REMOTE_BATCH_BYTES
            && queue
                .front()
                .is_some_and(|(cause, _)| *cause == NO_CAUSE || *cause < durable)
        {
            let item = queue.pop_front().expect("checked").1;
            bytes += item.bytes();
            taken.push(item);
        }
        self.remote_out_len -= taken.len();
        self.remote_out_bytes -= bytes;
        self.counters.forwarded += taken.len() as u64;
        if self.settled.is_some() {
            self.sent[to].extend(taken.iter().cloned());
            self.prune_sent(to);
        }
        taken
    }

    /// Whether a batch of `items` from another shard may be taken now (the rest waits in the
    /// bounded ring between the shards): an empty queue takes any batch, so one larger than the
    /// room is never stuck.
    pub fn remote_in_takes(&self, items: usize) -> bool {
        self.remote_in.is_empty()
            || (self.remote_in.len() + items <= self.limits.outbox_items_max && self.remote_in_bytes < REMOTE_BYTES_MAX)
    }

    /// Queues items shard `from` sent; [`Shard::pump`] delivers them.
    pub fn accept_remote(&mut self, from: usize, items: impl IntoIterator<Item = Remote>) {
        for item in items {
            self.remote_in_bytes += item.bytes();
            self.remote_in.push_back((from, item));
        }
    }

    fn queue_remote(&mut self, to: usize, cause: Lsn, item: Remote) {
        self.remote_out_bytes += item.bytes();
        self.remote_out[to].push_back((cause, item));
        self.remote_out_len += 1;
    }

    /// Reads up to `records_max` records of the log from `from` (a record boundary: 0, or what
    /// the previous call returned) into the shard's index: modules are compiled, processes
    /// instantiated, every assignment's nonce and hash chain checked and its message queued for
    /// evaluation. Returns where to go on, or `None` at the end of the log. Nothing is evaluated
    /// here: the pump replays the processes afterwards, and re-derived outbox items whose ids
    /// are already in the log are then dropped as duplicates, which needs the whole index.
    pub fn recover_from(&mut self, from: Lsn, records_max: usize) -> Result<Option<Lsn>, ShardError> {
        self.log.borrow_mut().release_unpacked();
        let log = Rc::clone(&self.log);
        let log = log.borrow();
        let mut records = log.records_from(from);
        for _ in 0..records_max {
            let Some(record) = records.next() else {
                return Ok(None);
            };
            self.recover_record(record?)?;
        }
        let next = records.next_lsn();
        if from == Lsn(0) && next.0 > 0 {
            // Size the message index once for the whole log, from the records read so far,
            // rather than growing it (and rehashing every entry) a dozen times.
            let per_record = next.0 / self.messages.len().max(1) as u64;
            let expected = (log.end_lsn().0 / per_record.max(1)) as usize;
            self.messages.reserve(expected.saturating_sub(self.messages.len()));
        }
        Ok(Some(next))
    }

    /// Reads one record of the log back into the index (see [`Shard::recover_from`]).
    fn recover_record(&mut self, record: Record<'_>) -> Result<(), ShardError> {
        let corrupt = |reason: String| ShardError::Corrupt {
            lsn: record.lsn,
            reason,
        };
        match record.kind {
            KIND_MODULE => {
                let item = DataItem::parse(record.payload).map_err(|e| corrupt(e.to_string()))?;
                let id = self.register_module(item).map_err(|e| corrupt(e.to_string()))?;
                self.set_module_lsn(id, record.lsn);
            }
            KIND_GATEWAY_MODULE => {
                let module = GatewayModuleRecord::decode(record.payload).map_err(|e| corrupt(e.to_string()))?;
                let meta = Self::gateway_meta(&module).map_err(corrupt)?;
                let id = self
                    .register_meta(meta, module.data)
                    .map_err(|e| corrupt(e.to_string()))?;
                self.set_module_lsn(id, record.lsn);
            }
            KIND_ASSIGNMENT | KIND_ASSIGNED | KIND_SPAWN => {
                let assignment =
                    AssignmentRecord::decode(record.kind, record.payload).map_err(|e| corrupt(e.to_string()))?;
                self.register_assignment(&assignment, record.lsn, None)
                    .map_err(|e| corrupt(e.to_string()))?;
            }
            other => return Err(corrupt(format!("unknown record kind {other}"))),
        }
        Ok(())
    }

    /// Keeps a journal of the records appended (and read back) from now on, for the shell's
    /// saves of the index ([`Shard::index_save`]). Call before recovery.
    pub fn keep_index_journal(&mut self) {
        self.journal = Some(Journal::default());
    }

    /// Reads a saved index back instead of the log below its `to` (see `crate::index`): the
    /// processes' timelines from its digests (process and module records are read from the
    /// log), the message places from its runs. Returns where to go on reading the log with
    /// [`Shard::recover_from`]. Call on an empty shard, after checking the index against the
    /// log ([`Loaded::matches`]); every digest is checked before anything is loaded, so an `Err`
    /// that names the index leaves the shard empty (the log is then read whole), while one that
    /// names a log record is the log's (a full read would fail the same way).
    pub fn load_index(&mut self, loaded: &Loaded) -> Result<Lsn, ShardError> {
        assert!(
            self.processes.is_empty() && self.modules.is_empty(),
            "load an index into an empty shard"
        );
        let to = loaded.commit.to;
        let mut processes = 0u64;
        // Entries per process slot, to size each timeline once.
        let mut entries: Vec<usize> = Vec::new();
        let mut previous: Option<Lsn> = None;
        for (body_at, body) in loaded.bodies().enumerate() {
            for digest in crate::index::digests(body) {
                let bad = |reason: String| ShardError::Index(format!("digest body {body_at}: {reason}"));
                let lsn = match digest.map_err(|at| bad(format!("malformed digest at byte {at}")))? {
                    Digest::Module(lsn) => lsn,
                    Digest::Process(lsn) => {
                        processes += 1;
                        entries.push(1);
                        lsn
                    }
                    Digest::Message(m) | Digest::Assigned(m, _) => {
                        if u64::from(m.slot) >= processes {
                            return Err(bad(format!(
                                "message at {} names process slot {} of {processes}",
                                m.lsn, m.slot
                            )));
                        }
                        entries[m.slot as usize] += 1;
                        m.lsn
                    }
                };
                if previous.is_some_and(|p| p >= lsn) || lsn >= to {
                    return Err(bad(format!("{lsn} out of order (before {to})")));
                }
                previous = Some(lsn);
            }
        }
        if previous != Some(loaded.commit.last) {
            return Err(ShardError::Index(format!(
                "its digests end at {previous:?}, its commit at {}",
                loaded.commit.last
            )));
        }
        self.loading_index = true;
        let loaded_all = self.load_digests(loaded, &entries);
        self.loading_index = false;
        loaded_all?;
        self.messages.set_runs(loaded.runs.clone());
        if let Some(journal) = &mut self.journal {
            journal.resume_after(loaded.commit.last);
        }
        Ok(to)
    }

    fn load_digests(&mut self, loaded: &Loaded, entries: &[usize]) -> Result<(), ShardError> {
        let log = Rc::clone(&self.log);
        for body in loaded.bodies() {
            for digest in crate::index::digests(body) {
                match digest.expect("checked by load_index") {
                    Digest::Module(lsn) | Digest::Process(lsn) => {
                        let log = log.borrow();
                        let record = log.read(lsn)?;
                        let fits = match digest.expect("checked by load_index") {
                            Digest::Module(_) => matches!(record.kind, KIND_MODULE | KIND_GATEWAY_MODULE),
                            _ => {
                                matches!(record.kind, KIND_ASSIGNMENT | KIND_SPAWN)
                                    && AssignmentRecord::decode(record.kind, record.payload)
                                        .is_ok_and(|a| a.nonce == Nonce(0))
                            }
                        };
                        if !fits {
                            return Err(ShardError::Index(format!(
                                "its digest of {lsn} does not match the record there (kind {})",
                                record.kind
                            )));
                        }
                        self.recover_record(record)?;
                        if let Digest::Process(_) = digest.expect("checked by load_index") {
                            let slot = self.process_ids.len() - 1;
                            let pid = self.process_ids[slot];
                            let process = self.processes.get_mut(&pid).expect("just registered");
                            process.entries.reserve_exact(entries[slot].saturating_sub(1));
                        }
                    }
                    Digest::Message(m) => self.load_message(&m, None),
                    Digest::Assigned(m, message) => self.load_message(&m, Some(message)),
                }
                self.counters.index_loaded += 1;
            }
        }
        Ok(())
    }

    /// A timeline entry from the index: [`Shard::register_assignment`] without its checks (made
    /// when the record was first read) and without indexing the message (the runs hold it).
    fn load_message(&mut self, m: &MessageDigest, assigned: Option<MessageId>) {
        let pid = self.process_ids[m.slot as usize];
        let process = self.processes.get_mut(&pid).expect("slots name registered processes");
        if let Some(message) = assigned {
            self.assigned
                .insert((pid, message), Nonce(process.entries.len() as u64));
        }
        process.last_assignment = None;
        process.entries.push(Entry {
            lsn: m.lsn,
            timestamp: m.timestamp,
            block_height: m.block_height,
            hash_chain: m.hash_chain,
            result: Kept::None,
        });
        self.unevaluated += 1;
        if !process.queued {
            process.queued = true;
            self.ready.push_back(pid);
        }
    }

    /// The runs that hold the saved message ids (for a save to merge).
    pub fn index_runs(&self) -> Vec<Arc<Run>> {
        self.messages.runs()
    }

    /// The log's directory and configuration.
    pub fn log_dir(&self) -> std::path::PathBuf {
        self.log.borrow().dir().to_owned()
    }

    pub fn log_config(&self) -> scheduler::log::LogConfig {
        *self.log.borrow().config()
    }

    /// Empties what [`Shard::load_index`] loaded, for a full read of the log after an index that
    /// failed part way. Call before anything else happened on the shard.
    pub fn reset_index(&mut self) {
        self.modules.clear();
        self.processes.clear();
        self.messages = MessageIndex::default();
        self.process_ids.clear();
        self.assigned.clear();
        self.ready.clear();
        self.lru.clear();
        self.unevaluated = 0;
        self.counters.index_loaded = 0;
        if self.journal.is_some() {
            self.journal = Some(Journal::default());
        }
    }

    /// Runs `f` on the shard's log (the shell's view of it: trust, packing).
    pub fn with_log<T>(&self, f: impl FnOnce(&mut Log) -> T) -> T {
        f(&mut self.log.borrow_mut())
    }

    /// Records appended since the index was last saved (0 when no journal is kept).
    pub fn index_unsaved(&self) -> u64 {
        self.journal.as_ref().map_or(0, Journal::records)
    }

    /// Starts a save of the index: hands over the digests and message ids since the last one
    /// (the ids stay searchable) and what the commit must say. `None` when nothing is new. The
    /// shell waits for the log to be durable through [`Save::last`], writes the save
    /// (`index::Files::save`) and reports with [`Shard::index_saved`].
    pub fn index_save(&mut self) -> Option<Save> {
        let journal = self.journal.as_mut()?;
        if journal.records() == 0 {
            return None;
        }
        let last = journal.last().expect("records were digested");
        let (last_crc, commit_to, sealed_ends) = {
            let log = self.log.borrow();
            let mut records = log.records_from(last);
            let record = records.next()?.ok()?;
            (crc32c::crc32c(record.payload), records.next_lsn(), log.sealed_ends())
        };
        let records = journal.records();
        let digests = journal.take();
        Some(Save {
            commit_to,
            last,
            last_crc,
            sealed_ends,
            digests,
            records,
            ids: self.messages.freeze(),
        })
    }

    /// Ends a save begun by [`Shard::index_save`]: `Ok` with the runs that now hold its ids, or
    /// `Err` with the save back (its digests are kept for the next one).
    pub fn index_saved(&mut self, outcome: Result<Vec<Arc<Run>>, Save>) {
        match outcome {
            Ok(runs) => {
                self.messages.thaw(Some(runs));
                self.counters.index_saves += 1;
            }
            Err(save) => {
                self.messages.thaw(None);
                if let Some(journal) = &mut self.journal {
                    journal.give_back(save.digests, save.records);
                }
            }
        }
    }

    /// Ends recovery: from now on [`Shard::recovery_pending`] counts the recovered messages
    /// still to be replayed.
    pub fn finish_recovery(&mut self) {
        for process in self.processes.values_mut() {
            process.recovered = process.entries.len();
        }
        self.recovery_pending = self.unevaluated;
    }

    /// Messages read back from the log at recovery and not yet evaluated again: until it is 0,
    /// results and state lag behind the log.
    pub fn recovery_pending(&self) -> usize {
        self.recovery_pending
    }

    pub fn address(&self) -> Address {
        self.address
    }

    /// Stamps every later message to a process with crons after `floor` (ms): the cron lease of
    /// the previous run, read back at start. Until [`Shard::extend_cron_lease`] is called, ticks
    /// are evaluated without bound (as in tests, which pass the time in).
    pub fn set_cron_floor(&mut self, floor: u64) {
        self.cron_floor = floor;
    }

    /// Lets cron ticks be evaluated up to `lease` (ms), a time the shell has saved durably first:
    /// no tick past the saved lease is ever evaluated, and the next run stamps after it.
    pub fn extend_cron_lease(&mut self, lease: u64) {
        self.cron_lease = lease;
    }

    /// How far cron ticks may be evaluated (ms).
    pub fn cron_lease(&self) -> u64 {
        self.cron_lease
    }

    /// Modules compiled, and loaded from the artifact cache, since start.
    pub fn compile_counts(&self) -> (u64, u64) {
        self.runtime.compile_counts()
    }

    /// Keeps compiled modules in `dir` (`<module id>.cwasm`), so that a restart maps them back
    /// instead of compiling (`Runtime::compile_cached`). Call before recovery.
    pub fn set_artifact_dir(&mut self, dir: std::path::PathBuf) {
        self.artifact_dir = Some(dir);
    }

    /// Trusts `nodes` (their signing addresses) to push messages on behalf of their processes:
    /// their items may carry `From-Process`, `From-Module`, `Pushed-For` and `Forwarded-By`,
    /// which this node refuses from anyone else.
    pub fn set_trusted_nodes(&mut self, nodes: impl IntoIterator<Item = Address>) {
        self.trusted = nodes.into_iter().collect();
    }

    pub fn signer(&self) -> &Signer {
        &self.signer
    }

    pub fn counters(&self) -> ShardCounters {
        self.counters
    }

    pub fn process_count(&self) -> usize {
        self.processes.len()
    }

    /// Why the log refuses writes, if it does (after a write or fdatasync error).
    pub fn log_poisoned(&self) -> Option<String> {
        self.log.borrow().poisoned().map(str::to_owned)
    }

    /// Why the log refuses appends for want of disk space, while it does.
    pub fn log_full(&self) -> Option<String> {
        self.log.borrow().full().map(str::to_owned)
    }

    /// The log position after the last appended record.
    pub fn log_end(&self) -> Lsn {
        self.log.borrow().end_lsn()
    }

    /// Messages assigned but not evaluated yet.
    pub fn backlog(&self) -> usize {
        self.unevaluated
    }

    /// Outbox items waiting for delivery.
    pub fn outbox_len(&self) -> usize {
        self.outbox.len()
    }

    pub fn module_count(&self) -> usize {
        self.modules.len()
    }

    /// Processes holding a live instance.
    pub fn instances_live(&self) -> usize {
        self.live
    }

    /// Processes asleep: hibernated, or not woken since the node started.
    pub fn processes_dormant(&self) -> usize {
        self.processes.len() - self.live
    }

    /// Bytes of results in memory that the results file also holds (what
    /// `results_memory_bytes_max` bounds).
    pub fn results_memory_bytes(&self) -> usize {
        self.kept_bytes
    }

    /// Bytes of linear memory the live instances hold.
    pub fn live_memory_bytes(&self) -> usize {
        self.live_bytes
    }

    /// Records that `pid` now holds `instance` (or none).
    fn set_instance(&mut self, pid: ProcessId, instance: Option<ProcessInstance>) {
        self.set_instance_with(pid, instance, None);
    }

    /// [`Shard::set_instance`], starting page-level undo on a new instance (see
    /// `compute::dirty`); `memory`, if given, is a copy of its memory as it is.
    fn set_instance_with(&mut self, pid: ProcessId, mut instance: Option<ProcessInstance>, memory: Option<Vec<u8>>) {
        let failed_before = self.processes[&pid].failures > 0;
        if let (Some(tracker), Some(instance)) = (&self.dirty, instance.as_mut()) {
            // Worth its cost (a copy of the memory, a scan per message) where a rebuild would
            // cost more: a large memory, or a process that has failed before.
            let wanted = failed_before || instance.memory().len() >= UNDO_TRACKING_MIN_BYTES;
            if wanted && !instance.is_tracked() {
                if let Err(reason) = instance.track(tracker, memory) {
                    tracing::debug!(%pid, %reason, "failed messages of this process roll back by rebuild");
                }
            }
        }
        let process = self.processes.get_mut(&pid).expect("exists");
        if process.instance.is_some() {
            self.live -= 1;
        }
        self.live_bytes -= process.live_bytes;
        process.live_bytes = instance.as_ref().map_or(0, Self::held_bytes);
        self.live_bytes += process.live_bytes;
        if instance.is_some() {
            self.live += 1;
        }
        process.instance = instance;
    }

    /// The bytes a live instance holds: its memory, twice when a copy is kept for undo.
    fn held_bytes(instance: &ProcessInstance) -> usize {
        instance.memory().len() * if instance.is_tracked() { 2 } else { 1 }
    }

    /// Records how much memory `pid`'s live instance holds now (it may have grown).
    fn note_memory(&mut self, pid: ProcessId) {
        let process = self.processes.get_mut(&pid).expect("exists");
        let now = process.instance.as_ref().map_or(0, Self::held_bytes);
        self.live_bytes = self.live_bytes - process.live_bytes + now;
        process.live_bytes = now;
    }

    /// Marks `pid` as just used.
    fn touch(&mut self, pid: ProcessId) {
        self.clock += 1;
        let process = self.processes.get_mut(&pid).expect("exists");
        process.touched = self.clock;
        self.lru.push_back((pid, self.clock));
        // Stale entries are dropped once they outnumber the processes.
        if self.lru.len() > 2 * self.processes.len() + 1024 {
            let processes = &self.processes;
            self.lru
                .retain(|(pid, at)| processes.get(pid).is_some_and(|p| p.touched == *at));
        }
    }

    /// The `env` JSON of `pid`, built from its spawn item and its module's tags.
    fn env_json(&self, pid: ProcessId) -> Rc<[u8]> {
        let process = &self.processes[&pid];
        if !process.env.is_empty() {
            return Rc::clone(&process.env);
        }
        let meta = &self.modules[&process.module].meta;
        abi::env_json_parts(&process.item, &meta.id.to_string(), &meta.owner_address, &meta.tags).into()
    }

    /// Puts `pid` to sleep: its memory compressed, its pool slot given back.
    fn hibernate(&mut self, pid: ProcessId) {
        let process = self.processes.get_mut(&pid).expect("exists");
        let point = Self::point(process);
        let Some(instance) = process.instance.as_mut() else {
            return;
        };
        let hibernated = match process.snapshot.as_deref() {
            // Not evaluated since its checkpoint: that state is this one.
            Some((at, base)) if *at == point => Rc::clone(base),
            _ => Rc::new(Hibernated::of(instance.snapshot())),
        };
        process.dormant = Some(Dormant::Hibernated(hibernated));
        process.env = Rc::from(&[][..]);
        self.set_instance(pid, None);
        self.counters.hibernations += 1;
    }

    /// Hibernates least recently used processes (never `keep`) until the live instances are
    /// within the shard's limits, with room for `room` more instances; or, with `force`, at
    /// least one. Idle processes go first; processes waiting to be evaluated only when no idle
    /// one is left (their turn wakes them again). Returns whether one was hibernated.
    fn make_room(&mut self, keep: Option<ProcessId>, room: usize, force: bool) -> bool {
        let mut freed = false;
        let mut waiting = Vec::new();
        let over = |shard: &Shard, freed: bool| {
            shard.live + shard.spare_count + room > shard.limits.live_instances_max
                || shard.live_bytes as u64 > shard.limits.live_memory_bytes_max
                || (force && !freed)
        };
        // Spares go first when slots are short: they hold no process's state.
        while self.spare_count > 0 && self.live + self.spare_count + room > self.limits.live_instances_max {
            self.drop_one_spare();
        }
        while over(self, freed) {
            let Some((pid, at)) = self.lru.pop_front() else { break };
            let Some(process) = self.processes.get(&pid) else {
                continue;
            };
            if process.touched != at || process.instance.is_none() || Some(pid) == keep {
                continue; // stale, asleep already, or the one at hand
            }
            if process.queued {
                waiting.push((pid, at));
                if waiting.len() == MAKE_ROOM_SCAN_WAITING {
                    // Every process looked at waits (a replay, a burst): do not walk them all
                    // on every call; the oldest of these goes.
                    break;
                }
                continue;
            }
            self.hibernate(pid);
            freed = true;
        }
        let mut waiting = waiting.into_iter();
        while over(self, freed) {
            let Some((pid, _)) = waiting.next() else { break };
            self.hibernate(pid);
            freed = true;
        }
        // The waiting processes not taken keep their places, oldest first.
        for entry in waiting.rev() {
            self.lru.push_front(entry);
        }
        freed
    }

    /// An instance from `make` (the module's, from a snapshot), hibernating idle processes
    /// first when the shard is at its limits and again if the node's pool is exhausted.
    fn instance_with_room(
        &mut self,
        keep: Option<ProcessId>,
        make: impl Fn(&Shard) -> Result<ProcessInstance, crate::compute::ComputeError>,
    ) -> Result<ProcessInstance, ShardError> {
        self.make_room(keep, 1, false);
        match make(self) {
            Err(crate::compute::ComputeError::PoolExhausted { .. })
                if self.drop_spares() || self.make_room(keep, 1, true) =>
            {
                match make(self) {
                    Err(crate::compute::ComputeError::PoolExhausted { .. }) if self.make_room(keep, 1, true) => {
                        make(self).map_err(ShardError::Compute)
                    }
                    other => other.map_err(ShardError::Compute),
                }
            }
            other => other.map_err(ShardError::Compute),
        }
    }

    /// A fresh instance of `module` with `limits`: a spare if one is ready, else made now
    /// (hibernating others first if the shard is at its limits). Either way the module keeps
    /// spares from now on.
    fn fresh_instance(
        &mut self,
        keep: Option<ProcessId>,
        module: ModuleId,
        limits: ProcessLimits,
    ) -> Result<ProcessInstance, ShardError> {
        let key = (module, limits);
        let at = match self.spares.iter().position(|(k, _)| *k == key) {
            Some(at) => {
                // Most recently used last.
                let entry = self.spares.remove(at);
                self.spares.push(entry);
                self.spares.len() - 1
            }
            None => {
                if self.spares.len() == SPARE_MODULES {
                    let (_, dropped) = self.spares.remove(0);
                    self.spare_count -= dropped.len();
                }
                self.spares.push((key, Vec::new()));
                self.spares.len() - 1
            }
        };
        if let Some(spare) = self.spares[at].1.pop() {
            self.spare_count -= 1;
            self.counters.spares_used += 1;
            return Ok(spare);
        }
        self.instance_with_room(keep, |shard| shard.modules[&module].compiled.instantiate(limits))
    }

    /// Makes spare instances while the shard is below its share of the pool (keeping room for
    /// one more live instance); stops at the first that cannot be had.
    fn refill_spares(&mut self) {
        for at in (0..self.spares.len()).rev() {
            // The room for one more live instance stays free.
            while self.spares[at].1.len() < SPARES_EACH
                && self.live + self.spare_count + 1 < self.limits.live_instances_max
            {
                let (module, limits) = self.spares[at].0;
                let Some(entry) = self.modules.get(&module) else { break };
                match entry.compiled.instantiate(limits) {
                    Ok(spare) => {
                        self.spares[at].1.push(spare);
                        self.spare_count += 1;
                    }
                    Err(_) => return, // the pool is the node's: another shard needs it more
                }
            }
        }
    }

    /// Gives one spare's pool slot back (from the module used least recently).
    fn drop_one_spare(&mut self) {
        if let Some((_, spares)) = self.spares.iter_mut().find(|(_, spares)| !spares.is_empty()) {
            spares.pop();
            self.spare_count -= 1;
        }
    }

    /// Gives every spare's pool slot back.
    fn drop_spares(&mut self) -> bool {
        let had = self.spare_count > 0;
        for (_, spares) in &mut self.spares {
            spares.clear();
        }
        self.spare_count = 0;
        had
    }

    /// Makes sure `pid` has a live instance, waking it if it sleeps.
    fn wake(&mut self, pid: ProcessId) -> Result<(), ShardError> {
        let process = self.processes.get_mut(&pid).expect("exists");
        if process.instance.is_some() {
            return Ok(());
        }
        let Some(dormant) = process.dormant.take() else {
            return Err(no_instance(pid));
        };
        let (module, limits) = (process.module, process.limits);
        let snapshot = match &dormant {
            Dormant::Genesis => None,
            Dormant::Hibernated(hibernated) => Some(hibernated.snapshot(self.modules[&module].compiled.global_names())),
        };
        let mut memory = None;
        let made = match snapshot {
            Some(Err(error)) => Err(error),
            Some(Ok(snapshot)) => {
                let made = self.fresh_instance(Some(pid), module, limits).and_then(|mut instance| {
                    instance.restore_snapshot(&snapshot).map_err(ShardError::Compute)?;
                    Ok(instance)
                });
                memory = Some(snapshot.memory);
                made
            }
            None => self.fresh_instance(Some(pid), module, limits),
        };
        match made {
            Ok(instance) => {
                let env = self.env_json(pid);
                self.processes.get_mut(&pid).expect("exists").env = env;
                self.set_instance_with(pid, Some(instance), memory);
                if matches!(dormant, Dormant::Hibernated(_)) {
                    self.counters.wakes += 1;
                }
                Ok(())
            }
            Err(error) => {
                self.processes.get_mut(&pid).expect("exists").dormant = Some(dormant);
                Err(error)
            }
        }
    }

    /// The state of `pid` after the messages evaluated so far, without waking it.
    fn current_snapshot(&mut self, pid: ProcessId) -> Result<Snapshot, ShardError> {
        let process = self.processes.get_mut(&pid).expect("exists");
        if let Some(instance) = process.instance.as_mut() {
            return Ok(instance.snapshot());
        }
        match &process.dormant {
            Some(Dormant::Hibernated(hibernated)) => {
                hibernated.snapshot(self.modules[&process.module].compiled.global_names())
            }
            Some(Dormant::Genesis) => {
                let (module, limits) = (process.module, process.limits);
                let mut fresh =
                    self.instance_with_room(Some(pid), |shard| shard.modules[&module].compiled.instantiate(limits))?;
                Ok(fresh.snapshot())
            }
            None => Err(no_instance(pid)),
        }
    }

    fn register_module(&mut self, item: DataItem) -> Result<ModuleId, ShardError> {
        self.register_meta(ModuleMeta::of_item(&item), &item.data)
    }

    /// Compiles and registers a module described by `meta` with code `wasm`.
    fn register_meta(&mut self, meta: ModuleMeta, wasm: &[u8]) -> Result<ModuleId, ShardError> {
        let id = meta.id;
        if self.modules.contains_key(&id) {
            return Err(ShardError::Duplicate(format!("module {id} is already loaded")));
        }
        let format = meta
            .tag("Module-Format")
            .ok_or_else(|| ShardError::BadRequest(format!("module {id} has no Module-Format tag")))?;
        let compiled = match &self.artifact_dir {
            Some(dir) => self
                .runtime
                .compile_cached(wasm, format, &dir.join(format!("{id}.cwasm"))),
            None => self.runtime.compile(wasm, format),
        }
        .map_err(|e| ShardError::BadRequest(format!("module {id}: {e}")))?;
        self.modules.insert(
            id,
            ModuleEntry {
                meta,
                compiled,
                lsn: Lsn(u64::MAX),
            },
        );
        Ok(id)
    }

    fn gateway_meta(record: &GatewayModuleRecord<'_>) -> Result<ModuleMeta, String> {
        let header: GatewayHeader = serde_json::from_slice(record.header)
            .map_err(|e| format!("gateway module {}: header is not valid: {e}", record.id))?;
        Ok(ModuleMeta {
            id: record.id,
            owner_address: header.owner.address,
            owner_key: header.owner.key,
            tags: header.tags,
            anchor: None,
            data_len: record.data.len(),
            gateway: Some(header.gateway),
        })
    }

    fn set_module_lsn(&mut self, id: ModuleId, lsn: Lsn) {
        self.modules.get_mut(&id).expect("registered just before").lsn = lsn;
        self.digest(Digest::Module(lsn));
    }

    /// Adds a record to the index's journal (unless it came from the index).
    fn digest(&mut self, digest: Digest) {
        if let (Some(journal), false) = (&mut self.journal, self.loading_index) {
            journal.push(&digest);
        }
    }

    /// The process a message was sent to and its nonce there.
    fn owner_of(&self, message: MessageId) -> Option<(ProcessId, Nonce)> {
        let (slot, nonce) = self.messages.get(&message)?;
        // A saved index is read from disk: a place it gives is used only if it exists.
        let pid = *self.process_ids.get(slot as usize)?;
        let known = self
            .processes
            .get(&pid)
            .is_some_and(|p| nonce.0 < p.entries.len() as u64);
        known.then_some((pid, nonce))
    }

    /// Whether the module `id` is loaded.
    /// Where module `id`'s record is in the log, once it is appended.
    pub fn module_lsn(&self, id: ModuleId) -> Option<Lsn> {
        self.modules.get(&id).map(|m| m.lsn).filter(|lsn| lsn.0 != u64::MAX)
    }

    pub fn has_module(&self, id: ModuleId) -> bool {
        self.modules.contains_key(&id)
    }

    /// Loads a module fetched from `gateway`: its owner (address and base64url key), tags and
    /// bytes as the gateway gave them. It is compiled first (a module that cannot run is never
    /// logged), then logged as a `KIND_GATEWAY_MODULE` record. Returns the position to await.
    pub fn admit_gateway_module(
        &mut self,
        id: ModuleId,
        owner_address: String,
        owner_key: String,
        tags: Vec<Tag>,
        wasm: &[u8],
        gateway: &str,
    ) -> Result<Lsn, ShardError> {
        let header = GatewayHeader {
            owner: GatewayOwner {
                address: owner_address,
                key: owner_key,
            },
            tags,
            gateway: gateway.to_owned(),
        };
        let header = serde_json::to_vec(&header).expect("the header serialises");
        let record = GatewayModuleRecord {
            id,
            header: &header,
            data: wasm,
        };
        let meta = Self::gateway_meta(&record).map_err(ShardError::BadRequest)?;
        self.register_meta(meta, wasm)?;
        let appended = self.log.borrow_mut().append(KIND_GATEWAY_MODULE, &record.encode());
        match appended {
            Ok(lsn) => {
                self.set_module_lsn(id, lsn);
                Ok(lsn)
            }
            Err(error) => {
                self.modules.remove(&id);
                Err(error.into())
            }
        }
    }

    fn limits_for(&self, process: &DataItem, module: &ModuleMeta) -> Result<ProcessLimits, ShardError> {
        let tag = |name: &str| process.tag(name).or_else(|| module.tag(name));
        let memory_bytes_max = match tag("Memory-Limit") {
            None => self.limits.memory_limit_default,
            Some(text) => parse_memory_limit(text)
                .ok_or_else(|| ShardError::BadRequest(format!("Memory-Limit {text:?} is not like 512-mb")))?,
        };
        if memory_bytes_max > self.limits.memory_limit_max {
            return Err(ShardError::BadRequest(format!(
                "Memory-Limit of {memory_bytes_max} bytes exceeds this node's maximum of {}",
                self.limits.memory_limit_max
            )));
        }
        let fuel_per_message = match tag("Compute-Limit") {
            None => self.limits.compute_limit_default,
            Some(text) => text
                .trim()
                .parse::<u64>()
                .map_err(|_| ShardError::BadRequest(format!("Compute-Limit {text:?} is not an integer")))?,
        };
        if fuel_per_message > self.limits.compute_limit_max {
            return Err(ShardError::BadRequest(format!(
                "Compute-Limit {fuel_per_message} exceeds this node's maximum of {}",
                self.limits.compute_limit_max
            )));
        }
        Ok(ProcessLimits {
            memory_bytes_max,
            fuel_per_message,
        })
    }

    /// Registers a recovered or freshly appended assignment; for nonce 0, `instance` is the
    /// process's instance if the caller already took one from the pool (a spawn takes it before
    /// appending, so that a full pool refuses the spawn instead of leaving a process without an
    /// instance in the log). Checks what the log must guarantee of the records' meaning: dense
    /// nonces, messages assigned once, processes spawned once from a known module. Hash-chain
    /// links are taken as read: every frame is checksummed, so a link read back is the link
    /// that was written, and it was derived from the previous assignment when it was written;
    /// recomputing two SHA-256 per record would double the time to read a log back.
    /// `hewitt log verify` recomputes every link.
    fn register_assignment(
        &mut self,
        assignment: &AssignmentRecord<'_>,
        lsn: Lsn,
        instance: Option<ProcessInstance>,
    ) -> Result<(), ShardError> {
        let corrupt = |reason: String| ShardError::Corrupt { lsn, reason };
        let entry = Entry {
            lsn,
            timestamp: assignment.timestamp,
            block_height: assignment.block_height,
            hash_chain: assignment.hash_chain,
            result: Kept::None,
        };
        if assignment.nonce == Nonce(0) {
            // Only a process item is needed here (its tags); a message's item is parsed when it
            // is evaluated, which keeps reading a log back to a few µs per record.
            let item = DataItem::parse(assignment.item).map_err(|e| corrupt(e.to_string()))?;
            let pid = assignment.process;
            if self.processes.contains_key(&pid) {
                return Err(corrupt(format!("process {pid} spawned twice")));
            }
            if chain::genesis_hash_chain(&pid) != assignment.hash_chain {
                return Err(corrupt(format!("process {pid}: hash chain of nonce 0 is wrong")));
            }
            let module_id: ModuleId = item
                .tag("Module")
                .and_then(|m| m.parse().ok())
                .ok_or_else(|| corrupt(format!("process {pid} has no valid Module tag")))?;
            let module = self
                .modules
                .get(&module_id)
                .ok_or_else(|| corrupt(format!("process {pid}: module {module_id} unknown")))?;
            // Recorded with the spawn; a log written before spawns recorded them resolves them
            // from this node's configuration again.
            let limits = match assignment.limits {
                Some(limits) => ProcessLimits::from(limits),
                None => self.limits_for(&item, &module.meta)?,
            };
            // Built when the process first wakes (a restarted node's processes sleep until then).
            let env: Rc<[u8]> = Rc::from(&[][..]);
            let crons = crate::cron::parse_crons(&item.tags).map_err(|e| corrupt(format!("process {pid}: {e}")))?;
            let cron = Schedule::new(crons, assignment.timestamp).map(|schedule| {
                Box::new(CronState {
                    next: schedule.next_after(None),
                    schedule,
                    through: 0,
                    failed: Vec::new(),
                    results: VecDeque::new(),
                })
            });
            // Read back from the log, a process sleeps until it has something to evaluate.
            let dormant = instance.is_none().then_some(Dormant::Genesis);
            let live = instance.is_some();
            let slot = u32::try_from(self.process_ids.len())
                .map_err(|_| corrupt("more than 4 billion processes on one shard".to_owned()))?;
            self.process_ids.push(pid);
            if !self.loading_index {
                self.messages.set(MessageId::from(pid), (slot, Nonce(0)));
            }
            self.digest(Digest::Process(lsn));
            self.processes.insert(
                pid,
                Process {
                    item,
                    module: module_id,
                    limits,
                    env,
                    entries: vec![entry],
                    evaluated: 0,
                    queued: false,
                    instance: None,
                    dormant,
                    touched: 0,
                    live_bytes: 0,
                    snapshot: None,
                    checkpointed: false,
                    failures: 0,
                    cron,
                    recovered: 0,
                    slot,
                    last_assignment: None,
                },
            );
            if let Some(instance) = instance.filter(|_| live) {
                let env = self.env_json(pid);
                self.processes.get_mut(&pid).expect("inserted above").env = env;
                self.set_instance(pid, Some(instance));
                self.touch(pid);
            }
        } else {
            let process = self
                .processes
                .get_mut(&assignment.process)
                .ok_or_else(|| corrupt(format!("assignment to unknown process {}", assignment.process)))?;
            if assignment.nonce.0 != process.entries.len() as u64 {
                return Err(corrupt(format!(
                    "process {}: nonce {} follows nonce {}",
                    assignment.process,
                    assignment.nonce.0,
                    process.entries.len() - 1
                )));
            }
            process.last_assignment = None;
            if assignment.assigned.is_some() {
                // Field by field: `process` borrows `self.processes`.
                let owner = self
                    .messages
                    .get(&assignment.message)
                    .map(|(slot, _)| self.process_ids[slot as usize]);
                match owner {
                    // With several shards, the record's copy may come from another shard's log.
                    None if self.shard_count > 1 => {}
                    None => {
                        return Err(corrupt(format!(
                            "assignment of message {}, which no earlier record holds",
                            assignment.message
                        )))
                    }
                    Some(owner) if owner == assignment.process => {
                        return Err(corrupt(format!(
                            "message {} assigned twice to {owner}",
                            assignment.message
                        )))
                    }
                    Some(_) => {}
                }
                if self
                    .assigned
                    .insert((assignment.process, assignment.message), assignment.nonce)
                    .is_some()
                {
                    return Err(corrupt(format!(
                        "message {} assigned twice to {}",
                        assignment.message, assignment.process
                    )));
                }
            } else if self
                .messages
                .insert(assignment.message, (process.slot, assignment.nonce))
                .is_some()
            {
                return Err(corrupt(format!("message {} assigned twice", assignment.message)));
            }
            let digest = MessageDigest {
                slot: process.slot,
                lsn,
                timestamp: entry.timestamp,
                block_height: entry.block_height,
                hash_chain: entry.hash_chain,
            };
            process.entries.push(entry);
            self.digest(match assignment.assigned {
                Some(_) => Digest::Assigned(digest, assignment.message),
                None => Digest::Message(digest),
            });
        }
        let process = self.processes.get_mut(&assignment.process).expect("registered above");
        self.unevaluated += 1;
        if !process.queued {
            process.queued = true;
            self.ready.push_back(assignment.process);
        }
        Ok(())
    }

    /// Loads a module from its signed `Type: Module` data item. Returns the log position to await.
    pub fn admit_module(&mut self, item: DataItem, bytes: &[u8]) -> Result<(ModuleId, Lsn), ShardError> {
        let id = ModuleId::from(item.id());
        if self.modules.contains_key(&id) {
            return Err(ShardError::Duplicate(format!("module {id} is already loaded")));
        }
        // Compile before appending: a module that cannot run is refused, never logged.
        self.register_module(item)?;
        let appended = self.log.borrow_mut().append(KIND_MODULE, bytes);
        match appended {
            Ok(lsn) => {
                self.set_module_lsn(id, lsn);
                Ok((id, lsn))
            }
            Err(error) => {
                self.modules.remove(&id);
                Err(error.into())
            }
        }
    }

    /// Appends the next assignment of `process`: the process itself (nonce 0), a message sent to
    /// it, or (`assigned` is `Some(exclude)`) a message already in another timeline.
    fn assign(
        &mut self,
        process: ProcessId,
        item: &DataItem,
        bytes: &[u8],
        now: Timestamp,
        assigned: Option<&str>,
    ) -> Result<(Nonce, Lsn), ShardError> {
        let message = MessageId::from(item.id());
        let mut instance = None;
        let mut limits = None;
        let last_assignment = match self.processes.contains_key(&process) {
            true => Some(self.last_assignment(process)?),
            false => None,
        };
        let fields = match self.processes.get(&process) {
            None => {
                // Nonce 0: the process itself. Its instance is taken before anything is logged,
                // and its limits are logged with it.
                let (fresh, resolved) = self.instantiate_for(item)?;
                instance = Some(fresh);
                limits = Some(resolved.into());
                AssignmentFields {
                    process,
                    epoch: 0,
                    nonce: Nonce(0),
                    hash_chain: chain::genesis_hash_chain(&process),
                    block_height: block_height_at(now),
                    timestamp: now,
                    message: None,
                    exclude: None,
                }
            }
            Some(state) => {
                let last = state.entries.last().expect("a process always has its nonce 0 entry");
                // Later than the message before it and than every cron tick already evaluated.
                let ticked = state
                    .cron
                    .as_ref()
                    .map_or(0, |c| c.through.max(self.cron_floor).saturating_add(1));
                let timestamp = Timestamp(now.0.max(last.timestamp.0).max(ticked));
                AssignmentFields {
                    process,
                    epoch: 0,
                    nonce: Nonce(state.entries.len() as u64),
                    hash_chain: chain::next_hash_chain(
                        &last_assignment.expect("computed above for an existing process"),
                        &last.hash_chain,
                    ),
                    block_height: block_height_at(timestamp),
                    timestamp,
                    message: Some(message),
                    exclude: assigned.filter(|e| !e.is_empty()).map(str::to_owned),
                }
            }
        };
        debug_assert!(
            limits.is_none() || fields.nonce == Nonce(0),
            "limits are logged with a spawn only"
        );
        let signed = chain::sign_assignment(&self.signer, &fields);
        let assignment = AssignmentRecord {
            process,
            nonce: fields.nonce,
            timestamp: fields.timestamp,
            block_height: fields.block_height,
            hash_chain: fields.hash_chain,
            message,
            assigned: assigned.map(|exclude| Assigned { exclude }),
            limits,
            signature: &signed.signature,
            item: bytes,
        };
        let lsn = self.log.borrow_mut().append(assignment.kind(), &assignment.encode())?;
        self.register_assignment(&assignment, lsn, instance)?;
        self.processes.get_mut(&process).expect("registered").last_assignment = Some(assignment.assignment_id());
        self.counters.assigned += 1;
        Ok((fields.nonce, lsn))
    }

    /// The id of `pid`'s last assignment, read back from its record the first time after a
    /// recovery.
    fn last_assignment(&mut self, pid: ProcessId) -> Result<AssignmentId, ShardError> {
        let process = self.processes.get(&pid).expect("the caller checked");
        if let Some(id) = process.last_assignment {
            return Ok(id);
        }
        let lsn = process.entries.last().expect("nonce 0 exists").lsn;
        let id = {
            let log = self.log.borrow();
            let record = log.read(lsn)?;
            AssignmentRecord::decode(record.kind, record.payload)
                .map_err(|e| ShardError::Corrupt {
                    lsn,
                    reason: e.to_string(),
                })?
                .assignment_id()
        };
        self.processes.get_mut(&pid).expect("exists").last_assignment = Some(id);
        Ok(id)
    }

    /// A fresh instance for the process `item` would spawn (checked by `check_spawn` first), and
    /// the limits it runs under.
    fn instantiate_for(&mut self, item: &DataItem) -> Result<(ProcessInstance, ProcessLimits), ShardError> {
        let module_id: ModuleId = item
            .tag("Module")
            .and_then(|m| m.parse().ok())
            .ok_or_else(|| ShardError::BadRequest("process has no valid Module tag".into()))?;
        let module = self
            .modules
            .get(&module_id)
            .ok_or_else(|| ShardError::NotFound(format!("module {module_id} is not loaded on this node")))?;
        let limits = self.limits_for(item, &module.meta)?;
        Ok((self.fresh_instance(None, module_id, limits)?, limits))
    }

    /// The module a process item names, once its process id is known to be free.
    fn spawn_module(&self, item: &DataItem) -> Result<ModuleId, ShardError> {
        let pid = ProcessId::from(item.id());
        if self.processes.contains_key(&pid) {
            return Err(ShardError::Duplicate(format!("process {pid} already exists")));
        }
        let module_text = item
            .tag("Module")
            .ok_or_else(|| ShardError::BadRequest("process has no Module tag".into()))?;
        module_text
            .parse()
            .map_err(|_| ShardError::BadRequest(format!("Module tag {module_text:?} is not a module id")))
    }

    fn check_spawn(&self, item: &DataItem) -> Result<(), ShardError> {
        let module_id = self.spawn_module(item)?;
        let module = self
            .modules
            .get(&module_id)
            .ok_or_else(|| ShardError::NotFound(format!("module {module_id} is not loaded on this node")))?;
        self.limits_for(item, &module.meta)?;
        crate::cron::parse_crons(&item.tags).map_err(ShardError::BadRequest)?;
        Ok(())
    }

    /// What a client's process item must pass before anything is done for it (a module fetched,
    /// a record appended): this node as its scheduler, no messenger tags, room in the queue, a
    /// process id not taken, a `Module` tag that is a module id.
    pub fn check_process_item(&self, item: &DataItem) -> Result<(), ShardError> {
        let scheduler = item
            .tag("Scheduler")
            .ok_or_else(|| ShardError::BadRequest("process has no Scheduler tag".into()))?;
        if scheduler != self.address.to_string() {
            return Err(ShardError::BadRequest(format!(
                "process names scheduler {scheduler}, this node is {}",
                self.address
            )));
        }
        self.refuse_forged_tags(item)?;
        self.check_ingress_room()?;
        self.spawn_module(item).map(drop)
    }

    /// The largest module a gateway may hand this node: what one log record can hold, less room
    /// for its header.
    pub fn gateway_module_bytes_max(&self) -> usize {
        self.log.borrow().config().payload_bytes_max().saturating_sub(64 << 10)
    }

    /// Refuses the messenger's tags on an item from a client: only this node's messenger and
    /// the trusted nodes set them.
    fn refuse_forged_tags(&self, item: &DataItem) -> Result<(), ShardError> {
        for forged in ["From-Process", "Forwarded-By", "Pushed-For", "From-Module"] {
            if item.tag(forged).is_some() && !self.trusted.contains(&item.owner_address()) {
                return Err(ShardError::BadRequest(format!(
                    "tag {forged} is set by the messenger, not by clients (only a trusted node's items may carry it)"
                )));
            }
        }
        Ok(())
    }

    /// Spawns a process from its signed `Type: Process` data item (nonce 0 of its timeline).
    pub fn admit_process(
        &mut self,
        item: DataItem,
        bytes: &[u8],
        now: Timestamp,
    ) -> Result<(ProcessId, Lsn), ShardError> {
        self.check_process_item(&item)?;
        self.check_spawn(&item)?;
        let pid = ProcessId::from(item.id());
        self.refuse_elsewhere(&pid)?;
        let (_, lsn) = self.assign(pid, &item, bytes, now, None)?;
        Ok((pid, lsn))
    }

    fn check_ingress_room(&self) -> Result<(), ShardError> {
        if self.unevaluated >= self.limits.queue_messages_max {
            return Err(ShardError::Busy(format!(
                "{} messages wait for evaluation (limit {})",
                self.unevaluated, self.limits.queue_messages_max
            )));
        }
        Ok(())
    }

    /// Schedules a signed `Type: Message` data item from a client on its target process.
    pub fn admit_message(
        &mut self,
        item: DataItem,
        bytes: &[u8],
        now: Timestamp,
    ) -> Result<(MessageId, Nonce, Lsn), ShardError> {
        self.refuse_forged_tags(&item)?;
        let target = item
            .target
            .ok_or_else(|| ShardError::BadRequest("message has no target process".into()))?;
        let target = ProcessId(target);
        self.refuse_elsewhere(&target)?;
        if !self.processes.contains_key(&target) {
            return Err(ShardError::NotFound(format!("process {target} is not on this node")));
        }
        let id = MessageId::from(item.id());
        if let Some((process, nonce)) = self.owner_of(id) {
            return Err(ShardError::Duplicate(format!(
                "message {id} is already assigned to {process} at nonce {}",
                nonce.0
            )));
        }
        self.check_ingress_room()?;
        let (nonce, lsn) = self.assign(target, &item, bytes, now, None)?;
        Ok((id, nonce, lsn))
    }

    /// The `assign` flow: puts `message`, already in another process's timeline on this node,
    /// into the timeline of `process` as well; `exclude` (see [`check_exclude`]) names fields the
    /// process will not see. Returns the assignment's id, its nonce and the log position to await.
    pub fn admit_assignment(
        &mut self,
        process: ProcessId,
        message: MessageId,
        exclude: &str,
        now: Timestamp,
    ) -> Result<(AssignmentId, Nonce, Lsn), ShardError> {
        check_exclude(exclude)?;
        if !self.processes.contains_key(&process) {
            return Err(ShardError::NotFound(format!("process {process} is not on this node")));
        }
        self.check_assignable(process, message)?;
        self.check_ingress_room()?;
        self.assign_held(process, message, exclude, now)
    }

    /// The `assign` flow for a message another shard holds: `item` is its copy (durable there).
    pub fn admit_assignment_copy(
        &mut self,
        process: ProcessId,
        item: &DataItem,
        exclude: &str,
        now: Timestamp,
    ) -> Result<(AssignmentId, Nonce, Lsn), ShardError> {
        check_exclude(exclude)?;
        if !self.processes.contains_key(&process) {
            return Err(ShardError::NotFound(format!("process {process} is not on this node")));
        }
        let message = MessageId::from(item.id());
        if self.assigned.contains_key(&(process, message)) || self.owner_of(message).is_some_and(|(o, _)| o == process)
        {
            return Err(ShardError::Duplicate(format!(
                "message {message} is already in the timeline of {process}"
            )));
        }
        self.check_ingress_room()?;
        self.assign_copy(process, item, &item.to_bytes(), exclude, now)
    }

    /// Appends the assignment of `item` (a message already logged, here or on another shard)
    /// to `process`, with its `exclude`; returns the assignment's id, its nonce and position.
    fn assign_copy(
        &mut self,
        process: ProcessId,
        item: &DataItem,
        bytes: &[u8],
        exclude: &str,
        now: Timestamp,
    ) -> Result<(AssignmentId, Nonce, Lsn), ShardError> {
        let (nonce, lsn) = self.assign(process, item, bytes, now, Some(exclude))?;
        let id = self.processes[&process]
            .last_assignment
            .expect("set by the assignment just appended");
        Ok((id, nonce, lsn))
    }

    /// The module a spawn from another shard names, when this shard does not hold it (a module
    /// a gateway gave the sending shard): the receiving shard logs a copy of the sender's record
    /// first (see [`Shard::module_record`]), so that the child can be spawned.
    pub fn missing_module(&self, remote: &Remote) -> Option<ModuleId> {
        let Remote::Spawn { process, .. } = remote else {
            return None;
        };
        let module = self.spawn_module(process).ok()?;
        (!self.modules.contains_key(&module)).then_some(module)
    }

    /// The log record of module `id` (its kind and payload) if this shard holds it durably,
    /// for another shard to log a copy of (see [`Shard::admit_module_copy`]).
    pub fn module_record(&self, id: ModuleId) -> Result<Option<(u8, Vec<u8>)>, ShardError> {
        let Some(module) = self.modules.get(&id) else {
            return Ok(None);
        };
        let log = self.log.borrow();
        if module.lsn >= log.durable_lsn() {
            return Ok(None);
        }
        let record = log.read(module.lsn)?;
        Ok(Some((record.kind, record.payload.to_vec())))
    }

    /// Logs a copy of another shard's record of module `id` (see [`Shard::module_record`]),
    /// checked as a record read back is; nothing is done if this shard holds the module.
    pub fn admit_module_copy(&mut self, id: ModuleId, kind: u8, payload: &[u8]) -> Result<(), ShardError> {
        if self.modules.contains_key(&id) {
            return Ok(());
        }
        let bad = |reason: String| ShardError::BadRequest(format!("copy of module {id}: {reason}"));
        match kind {
            KIND_MODULE => {
                let item = DataItem::parse(payload).map_err(|e| bad(e.to_string()))?;
                if ModuleId::from(item.id()) != id {
                    return Err(bad(format!("the record holds module {}", item.id())));
                }
                self.admit_module(item, payload).map(drop)
            }
            KIND_GATEWAY_MODULE => {
                let module = GatewayModuleRecord::decode(payload).map_err(|e| bad(e.to_string()))?;
                if module.id != id {
                    return Err(bad(format!("the record holds module {}", module.id)));
                }
                let meta = Self::gateway_meta(&module).map_err(bad)?;
                self.register_meta(meta, module.data)?;
                let appended = self.log.borrow_mut().append(KIND_GATEWAY_MODULE, payload);
                match appended {
                    Ok(lsn) => {
                        self.set_module_lsn(id, lsn);
                        Ok(())
                    }
                    Err(error) => {
                        self.modules.remove(&id);
                        Err(error.into())
                    }
                }
            }
            other => Err(bad(format!("record kind {other} is not a module's"))),
        }
    }

    /// The bytes of `message` if this shard holds it and its record is durable (for another
    /// shard's `assign`).
    pub fn held_message(&self, message: MessageId) -> Result<Option<Vec<u8>>, ShardError> {
        let Some((owner, nonce)) = self.owner_of(message) else {
            return Ok(None);
        };
        let source = self.processes[&owner].entries[nonce.0 as usize].lsn;
        let log = self.log.borrow();
        if source >= log.durable_lsn() {
            return Ok(None);
        }
        let record = log.read(source)?;
        let assignment = AssignmentRecord::decode(record.kind, record.payload).map_err(|e| ShardError::Corrupt {
            lsn: source,
            reason: e.to_string(),
        })?;
        Ok(Some(assignment.item.to_vec()))
    }

    /// Refuses an assignment of `message` to `process` that this node cannot or must not make.
    fn check_assignable(&self, process: ProcessId, message: MessageId) -> Result<Lsn, ShardError> {
        let Some((owner, nonce)) = self.owner_of(message) else {
            return Err(ShardError::NotFound(format!(
                "message {message} is not held by this node (it assigns only messages in its own log)"
            )));
        };
        if owner == process || self.assigned.contains_key(&(process, message)) {
            return Err(ShardError::Duplicate(format!(
                "message {message} is already in the timeline of {process}"
            )));
        }
        Ok(self.processes[&owner].entries[nonce.0 as usize].lsn)
    }

    /// Appends the assignment of a held message (checked by `check_assignable`).
    fn assign_held(
        &mut self,
        process: ProcessId,
        message: MessageId,
        exclude: &str,
        now: Timestamp,
    ) -> Result<(AssignmentId, Nonce, Lsn), ShardError> {
        let (owner, owner_nonce) = self.owner_of(message).expect("checked by check_assignable");
        let source = self.processes[&owner].entries[owner_nonce.0 as usize].lsn;
        let bytes = {
            let log = self.log.borrow();
            let record = log.read(source)?;
            let corrupt = |reason: String| ShardError::Corrupt { lsn: source, reason };
            AssignmentRecord::decode(record.kind, record.payload)
                .map_err(|e| corrupt(e.to_string()))?
                .item
                .to_vec()
        };
        let item = DataItem::parse(&bytes).map_err(|e| ShardError::Corrupt {
            lsn: source,
            reason: e.to_string(),
        })?;
        self.assign_copy(process, &item, &bytes, exclude, now)
    }

    /// Does a bounded amount of work: delivers queued outbox items, then evaluates up to
    /// `evaluations_max` messages. Returns what was evaluated; an empty list and `has_work() ==
    /// false` means idle. A log backpressure error is returned so the shell can await the
    /// committer and call again; nothing is lost by it.
    pub fn pump(
        &mut self,
        now: Timestamp,
        evaluations_max: usize,
        evaluated: &mut Vec<Evaluated>,
    ) -> Result<(), ShardError> {
        self.settle();
        // Reads of packed log segments since the last turn may be let go now.
        self.log.borrow_mut().release_unpacked();
        for _ in 0..evaluations_max {
            self.deliver(now)?;
            if self.outbox.len() + self.remote_out_len >= self.limits.outbox_items_max || self.remote_out_full() {
                break;
            }
            let Some(pid) = self.ready.pop_front() else { break };
            let began = std::time::Instant::now();
            let Some(mut done) = self.evaluate_next(pid)? else {
                continue;
            };
            done.duration = began.elapsed();
            evaluated.push(done);
            // Over the shard's budget (keeping room for one more, so that the next wake need
            // not put another process to sleep first): the least recently used go to sleep.
            self.make_room(None, 1, false);
            // Below its share of the pool, the shard keeps spare instances, so that the next
            // spawn or wake need not make one.
            if !self.replay_only {
                self.refill_spares();
            }
        }
        self.deliver(now)
    }

    pub fn has_work(&self) -> bool {
        !self.ready.is_empty() || !self.outbox.is_empty() || !self.remote_in.is_empty()
    }

    fn deliver(&mut self, now: Timestamp) -> Result<(), ShardError> {
        if self.replay_only {
            self.outbox.clear();
            self.remote_in.clear();
            return Ok(());
        }
        while let Some((from, remote)) = self.remote_in.pop_front() {
            if let Err(error) = self.deliver_remote(from, &remote, now) {
                self.remote_in.push_front((from, remote));
                return Err(error);
            }
            self.remote_in_bytes -= remote.bytes();
            if self.settled.is_some() {
                let after = self.log.borrow().end_lsn();
                self.settling.push_back((from, after));
            }
        }
        while let Some(delivery) = self.outbox.pop_front() {
            match self.deliver_one(&delivery, now) {
                Ok(None) => {}
                Ok(Some(follow_up)) => self.outbox.push_front(follow_up),
                Err(error) => {
                    // Nothing of it was appended (or only the spawn, which the retry skips).
                    self.outbox.push_front(delivery);
                    return Err(error);
                }
            }
        }
        Ok(())
    }

    /// Delivers one item; a spawn returns its `Spawned` notice to deliver next. An item that
    /// cannot be delivered (no such process, a full instance pool, too large for the log) is
    /// dropped with a warning: it is the sending process's outcome, never the node's failure.
    fn deliver_one(&mut self, delivery: &Delivery, now: Timestamp) -> Result<Option<Delivery>, ShardError> {
        match delivery {
            Delivery::Message { item, cause } => {
                let id = MessageId::from(item.id());
                let target = ProcessId(item.target.expect("pushed messages always have a target"));
                if !self.owns(&target) {
                    self.queue_remote(self.shard_of(&target), *cause, Remote::Message(item.clone()));
                    return Ok(None);
                }
                if self.messages.contains_key(&id) {
                    self.counters.duplicates_refused += 1;
                    return Ok(None);
                }
                let spawned_before_cause = self.processes.get(&target).is_some_and(|p| p.entries[0].lsn < *cause);
                if !spawned_before_cause {
                    self.counters.undeliverable += 1;
                    tracing::warn!(%id, %target, "outbox message to a process this node does not hold is dropped");
                    return Ok(None);
                }
                self.assign_pushed(target, item, now)?;
                Ok(None)
            }
            Delivery::Spawn { process, notice, cause } => {
                let pid = ProcessId::from(process.id());
                let here = self.owns(&pid);
                if !here || !self.processes.contains_key(&pid) {
                    let refused = self.check_spawn(process).err().or_else(|| {
                        // The module must be in the log before the spawn's cause: whether it is
                        // loaded now depends on what happened since (a later gateway fetch).
                        let module = process.tag("Module").and_then(|m| m.parse::<ModuleId>().ok());
                        let logged = module
                            .and_then(|m| self.modules.get(&m))
                            .is_some_and(|m| m.lsn < *cause);
                        (!logged).then(|| ShardError::NotFound("its module was not logged before the spawn".into()))
                    });
                    if let Some(error) = refused {
                        self.counters.undeliverable += 1;
                        tracing::warn!(%pid, %error, "spawn refused");
                        return Ok(None);
                    }
                    if !here {
                        // Checked here against this shard's log too, so that a spawn this log
                        // refuses is refused on any number of shards. The owner spawns it and
                        // sends the notice back once the child is in its log: a parent learns
                        // of its child only once messages can reach it.
                        self.send_spawn(self.shard_of(&pid), *cause, process, notice);
                        return Ok(None);
                    } else if !self.assign_pushed(pid, process, now)? {
                        return Ok(None);
                    }
                }
                Ok(Some(Delivery::Message {
                    item: notice.clone(),
                    cause: *cause,
                }))
            }
            Delivery::Assign {
                processes,
                message,
                cause,
            } => {
                // A message another shard holds (its process lives there) comes from that shard,
                // as durable there when asked: the rule "logged no later than the cause" is this
                // log's alone.
                let elsewhere = match (self.owner_of(*message), &self.fetched) {
                    (Some(_), _) => None,
                    (None, _) if self.shard_count == 1 => None,
                    (None, Some((id, item))) if id == message => Some(item.clone()),
                    (None, _) => return Err(ShardError::WaitsForMessage(*message)),
                };
                for target in processes {
                    if let Some(fetched) = &elsewhere {
                        match fetched {
                            None => {
                                self.counters.undeliverable += 1;
                                tracing::warn!(%message, %target, "assignment of a message no shard holds is dropped");
                            }
                            Some(item) if !self.owns(target) => self.queue_remote(
                                self.shard_of(target),
                                *cause,
                                Remote::Assign {
                                    process: *target,
                                    item: item.clone(),
                                },
                            ),
                            Some(item) => self.deliver_remote(
                                self.shard_index,
                                &Remote::Assign {
                                    process: *target,
                                    item: item.clone(),
                                },
                                now,
                            )?,
                        }
                        continue;
                    }
                    if !self.owns(target) {
                        // A copy of the message, if this shard holds it (logged no later than
                        // the cause, as below).
                        let copy = self.owner_of(*message).and_then(|(owner, nonce)| {
                            let lsn = self.processes[&owner].entries[nonce.0 as usize].lsn;
                            (lsn <= *cause).then_some(lsn)
                        });
                        match copy.map(|lsn| self.read_input(lsn)).transpose()? {
                            Some((item, _)) => self.queue_remote(
                                self.shard_of(target),
                                *cause,
                                Remote::Assign { process: *target, item },
                            ),
                            None => {
                                self.counters.undeliverable += 1;
                                tracing::warn!(%message, %target, "assignment of a message this shard does not hold is dropped");
                            }
                        }
                        continue;
                    }
                    let spawned_before_cause = self.processes.get(target).is_some_and(|p| p.entries[0].lsn < *cause);
                    // Only a message logged no later than the cause: the same rule on every replay.
                    let held = match self.check_assignable(*target, *message) {
                        Ok(lsn) => lsn <= *cause,
                        Err(ShardError::Duplicate(_)) => {
                            self.counters.duplicates_refused += 1;
                            continue;
                        }
                        Err(_) => false,
                    };
                    if !spawned_before_cause || !held {
                        self.counters.undeliverable += 1;
                        tracing::warn!(%message, %target, "assignment to a process or of a message this node does not hold is dropped");
                        continue;
                    }
                    // A failure here leaves the delivery queued; the targets assigned so far are
                    // duplicates when it is retried. A record the log can never take is the
                    // sending process's outcome, not the node's failure.
                    match self.assign_held(*target, *message, "", now) {
                        Ok(_) => self.counters.delivered += 1,
                        Err(ShardError::Log(error @ LogError::RecordTooLarge { .. })) => {
                            self.counters.undeliverable += 1;
                            tracing::warn!(%message, %target, %error, "assignment refused");
                        }
                        Err(error) => return Err(error),
                    }
                }
                if elsewhere.is_some() {
                    self.fetched = None;
                }
                Ok(None)
            }
        }
    }

    /// Delivers an item shard `from` sent. The sender's log decided nothing about this shard's
    /// processes, so the rule is this shard's state: a message reaches a process that exists
    /// here, once (its id is refused after that).
    fn deliver_remote(&mut self, from: usize, remote: &Remote, now: Timestamp) -> Result<(), ShardError> {
        match remote {
            Remote::Message(item) => {
                let id = MessageId::from(item.id());
                let target = ProcessId(item.target.expect("pushed messages always have a target"));
                if self.messages.contains_key(&id) {
                    self.counters.duplicates_refused += 1;
                } else if !self.processes.contains_key(&target) {
                    self.counters.undeliverable += 1;
                    tracing::warn!(%id, %target, "message from another shard to a process this node does not hold is dropped");
                } else {
                    self.assign_pushed(target, item, now)?;
                }
                if !self.awaiting.is_empty() {
                    self.spawn_answered(&id);
                }
            }
            Remote::Spawn { process, notice } => {
                let pid = ProcessId::from(process.id());
                let spawned = if self.processes.contains_key(&pid) {
                    self.counters.duplicates_refused += 1;
                    true
                } else if let Err(error) = self.check_spawn(process) {
                    self.counters.undeliverable += 1;
                    tracing::warn!(%pid, %error, "spawn from another shard refused");
                    false
                } else {
                    self.assign_pushed(pid, process, now)?
                };
                if let Some(notice) = notice {
                    if spawned {
                        // Sent once the child's record is durable here.
                        let cause = self.processes[&pid].entries[0].lsn;
                        let parent = ProcessId(notice.target.expect("a notice has its parent as target"));
                        // Spawns come from the parent's shard: never this one.
                        debug_assert_eq!(self.shard_of(&parent), from, "a spawn from its parent's shard");
                        match self.shard_of(&parent) {
                            to if to != self.shard_index => {
                                self.queue_remote(to, cause, Remote::Message(notice.clone()))
                            }
                            _ => self.outbox.push_back(Delivery::Message {
                                item: notice.clone(),
                                cause,
                            }),
                        }
                    } else {
                        let notice = MessageId::from(notice.id());
                        self.queue_remote(from, NO_CAUSE, Remote::SpawnRefused { notice });
                    }
                }
            }
            Remote::SpawnRefused { notice } => self.spawn_answered(notice),
            Remote::Assign { process, item } => {
                let message = MessageId::from(item.id());
                let held_here = self.owner_of(message).is_some_and(|(o, _)| o == *process);
                if held_here || self.assigned.contains_key(&(*process, message)) {
                    self.counters.duplicates_refused += 1;
                } else if !self.processes.contains_key(process) {
                    self.counters.undeliverable += 1;
                    tracing::warn!(%message, target = %process, "assignment from another shard to a process this node does not hold is dropped");
                } else {
                    let bytes = item.to_bytes();
                    match self.assign(*process, item, &bytes, now, Some("")) {
                        Ok(_) => self.counters.delivered += 1,
                        Err(ShardError::Log(error @ LogError::RecordTooLarge { .. })) => {
                            self.counters.undeliverable += 1;
                            tracing::warn!(%message, target = %process, %error, "assignment refused");
                        }
                        Err(error) => return Err(error),
                    }
                }
            }
        }
        Ok(())
    }

    /// Assigns an item the messenger built; returns false when it was refused (and counted)
    /// rather than logged. Log backpressure and log failures are passed on.
    fn assign_pushed(&mut self, target: ProcessId, item: &DataItem, now: Timestamp) -> Result<bool, ShardError> {
        let bytes = item.to_bytes();
        // What the log holds must parse back at recovery: check before appending.
        let refusal = match DataItem::parse(&bytes) {
            Err(error) => Some(error.to_string()),
            Ok(_) => match self.assign(target, item, &bytes, now, None) {
                Ok(_) => None,
                Err(ShardError::Compute(error)) => Some(error.to_string()),
                Err(ShardError::Log(error @ LogError::RecordTooLarge { .. })) => Some(error.to_string()),
                Err(error) => return Err(error),
            },
        };
        match refusal {
            None => {
                self.counters.delivered += 1;
                Ok(true)
            }
            Some(reason) => {
                self.counters.undeliverable += 1;
                tracing::warn!(id = %item.id(), %target, %reason, "pushed item refused");
                Ok(false)
            }
        }
    }

    /// The message at `lsn` and the fields its assignment excludes (empty for none).
    fn read_input(&self, lsn: Lsn) -> Result<(DataItem, String), ShardError> {
        let log = self.log.borrow();
        let record = log.read(lsn)?;
        let corrupt = |reason: String| ShardError::Corrupt { lsn, reason };
        let assignment = AssignmentRecord::decode(record.kind, record.payload).map_err(|e| corrupt(e.to_string()))?;
        let item = DataItem::parse(assignment.item).map_err(|e| corrupt(e.to_string()))?;
        Ok((
            item,
            assignment.assigned.map(|a| a.exclude.to_owned()).unwrap_or_default(),
        ))
    }

    fn input_json(&self, item: &DataItem, placement: &Placement, exclude: &str) -> Vec<u8> {
        abi::msg_json_excluding(item, placement, false, exclude)
    }

    fn placement(pid: ProcessId, nonce: usize, entry: &Entry) -> Placement {
        Placement {
            process: pid,
            nonce: Nonce(nonce as u64),
            timestamp: entry.timestamp,
            block_height: entry.block_height,
            hash_chain: entry.hash_chain,
        }
    }

    fn run_handle(instance: &mut ProcessInstance, msg: &[u8], env: &[u8]) -> ProcessResult {
        match instance.handle(msg, env) {
            Evaluation::Returned { output, gas_used } => abi::decode_result(&output, gas_used),
            Evaluation::Failed { reason, gas_used } => ProcessResult::failed(&reason, gas_used),
        }
    }

    /// The tick `process` evaluates next, if one comes before its next message (by the rule in
    /// `crate::cron`) or, with no message waiting, is within its horizon.
    fn due_tick(process: &Process) -> Option<Tick> {
        let cron = process.cron.as_ref()?;
        let tick = cron.next?;
        match process.entries.get(process.evaluated) {
            Some(entry) => (tick.time < entry.timestamp.0).then_some(tick),
            None => (tick.time <= cron.through).then_some(tick),
        }
    }

    /// Puts `pid` back in the ready queue if it has more to evaluate.
    fn requeue(&mut self, pid: ProcessId) {
        let process = self.processes.get_mut(&pid).expect("exists");
        if process.evaluated < process.entries.len() || Self::due_tick(process).is_some() {
            self.ready.push_back(pid);
        } else {
            process.queued = false;
        }
    }

    /// Evaluates what comes next for `pid`: a due cron tick, else its next message.
    /// `None` when the process cannot be woken at all (see below): it is left out and the shard
    /// goes on with the others.
    fn evaluate_next(&mut self, pid: ProcessId) -> Result<Option<Evaluated>, ShardError> {
        match self.wake(pid) {
            Ok(()) => {}
            Err(error @ ShardError::Compute(ComputeError::PoolExhausted { .. })) => {
                // Still queued: it runs once an instance can be had (the pool is the node's).
                self.ready.push_front(pid);
                return Err(error);
            }
            Err(error) => {
                // Its state does not fit this node any more (a snapshot larger than the
                // configured memory limit, memory that does not decompress): its messages wait
                // (a restart with the configuration that fits evaluates them) rather than the
                // whole shard stopping.
                tracing::error!(%pid, %error, "process cannot be woken: its messages wait until a restart");
                self.processes.get_mut(&pid).expect("ready processes exist").queued = false;
                self.counters.wake_failures += 1;
                return Ok(None);
            }
        }
        self.touch(pid);
        let process = self.processes.get(&pid).expect("ready processes exist");
        match Self::due_tick(process) {
            Some(tick) => self.evaluate_tick(pid, tick).map(Some),
            None => self.evaluate_message(pid).map(Some),
        }
    }

    /// Queues the outbox of `result` for delivery, with identities from `origin`.
    fn enqueue_outbox(&mut self, origin: &Origin, result: &ProcessResult, cause: Lsn) {
        for (index, message) in result.messages.iter().enumerate() {
            let pushed = messenger::push_message(&self.signer, origin, index as u32, message);
            self.outbox.push_back(Delivery::Message { item: pushed, cause });
        }
        for (index, spawn) in result.spawns.iter().enumerate() {
            let module = abi::spawn_module(spawn).unwrap_or(origin.module);
            let child = messenger::spawn_process(
                &self.signer,
                origin,
                index as u32,
                spawn,
                module,
                &self.address.to_string(),
            );
            let notice =
                messenger::spawned_notice(&self.signer, origin, index as u32, spawn, ProcessId::from(child.id()));
            self.outbox.push_back(Delivery::Spawn {
                process: child,
                notice,
                cause,
            });
        }
        for (processes, message) in &result.assignments {
            self.outbox.push_back(Delivery::Assign {
                processes: processes.clone(),
                message: *message,
                cause,
            });
        }
    }

    /// After an evaluation: a failed one is undone (in place when the instance is tracked), a
    /// successful one's writes are kept in the undo copy. `None` when it succeeded.
    fn undo_or_keep(instance: &mut ProcessInstance, result: &ProcessResult) -> Option<Undone> {
        if result.is_error {
            Some(instance.undo_message())
        } else {
            instance.keep_message();
            None
        }
    }

    fn count_undo(&mut self, pages: usize) {
        self.counters.rollbacks += 1;
        self.counters.rollbacks_in_place += 1;
        self.counters.rollback_pages += pages as u64;
    }

    /// What `/result` keeps of a result: its JSON text (the outbox is queued separately).
    fn stored(result: ProcessResult) -> Rc<StoredResult> {
        Rc::new(StoredResult::of(&result))
    }

    /// Appends a result to the results file (when checkpoints are on) and counts toward the
    /// next checkpoint. A failed write stops checkpoints (restarts then replay further) and
    /// never the evaluation.
    /// Returns where in the file the result went.
    fn keep_result(
        &mut self,
        pid: ProcessId,
        nonce: usize,
        tick: Option<Tick>,
        stored: &StoredResult,
        gas: u64,
    ) -> Option<u64> {
        self.since_checkpoint.0 += 1;
        self.since_checkpoint.1 += gas;
        self.processes.get_mut(&pid).expect("exists").checkpointed = false;
        let out = self.results_out.as_mut()?;
        match out.append(pid, nonce as u64, tick, stored.is_error, stored.text()) {
            Ok(offset) => Some(offset),
            Err(error) => {
                self.results_stop(error);
                None
            }
        }
    }

    fn results_stop(&mut self, error: checkpoint::CheckpointError) {
        tracing::error!(%error, "results file failed: checkpoints stop until a restart");
        self.results_failed = Some(error.to_string());
        self.results_out = None;
    }

    /// Puts message `nonce`'s result in its timeline entry (see [`Shard::remember`]).
    fn set_result(&mut self, pid: ProcessId, nonce: usize, result: Rc<StoredResult>, offset: Option<u64>) {
        let bytes = result.text().len();
        let process = self.processes.get_mut(&pid).expect("exists");
        process.entries[nonce].result = Kept::Memory(result);
        self.remember(pid, Slot::Message(nonce), offset, bytes);
    }

    /// Counts a result just put in memory, which the results file holds at `offset`, and keeps
    /// memory within `results_memory_bytes_max` by dropping the oldest such results.
    fn remember(&mut self, pid: ProcessId, slot: Slot, offset: Option<u64>, text_bytes: usize) {
        let Some(offset) = offset.filter(|_| self.results_in.is_some()) else {
            return;
        };
        // The text, its allocation and its place in the queue.
        let bytes = text_bytes + RESULT_OVERHEAD_BYTES;
        self.kept.push_back((pid, slot, offset, bytes));
        self.kept_bytes += bytes;
        self.kept_live += 1;
        if let Slot::Tick(tick) = slot {
            let cron = self.processes.get_mut(&pid).and_then(|p| p.cron.as_mut());
            if let Some(last) = cron.and_then(|cron| cron.results.back_mut()).filter(|r| r.tick == tick) {
                last.counted = bytes as u32;
            }
        }
        if self.kept.len() > 2 * self.kept_live + 1024 {
            self.compact_kept();
        }
        if self.kept_bytes <= self.limits.results_memory_bytes_max {
            return;
        }
        // Down to 7/8 of the bound at once: one flush, not one per result.
        let target = self.limits.results_memory_bytes_max / 8 * 7;
        if let Some(out) = self.results_out.as_mut() {
            match out.flush() {
                Ok(end) => self.results_readable = end,
                Err(error) => self.results_stop(error),
            }
        }
        while self.kept_bytes > target {
            let Some(&(pid, slot, offset, bytes)) = self.kept.front() else {
                break;
            };
            if offset >= self.results_readable {
                break; // never flushed (the file failed): stays in memory
            }
            self.kept.pop_front();
            // A result is made once for its message or tick (a rollback's replay keeps none),
            // so the record at `offset` is this one's. A tick's may be gone already (only the
            // latest CRON_RESULTS_MAX are kept), its bytes given back then.
            let process = self.processes.get_mut(&pid);
            let kept = match slot {
                Slot::Message(nonce) => process.and_then(|p| p.entries.get_mut(nonce)).map(|e| &mut e.result),
                Slot::Tick(tick) => {
                    let cron = process.and_then(|p| p.cron.as_mut());
                    match cron.and_then(|c| c.results.binary_search_by_key(&tick, |r| r.tick).ok().map(|at| (c, at))) {
                        Some((cron, at)) => {
                            cron.results[at].counted = 0;
                            Some(&mut cron.results[at].result)
                        }
                        None => continue,
                    }
                }
            };
            self.kept_bytes -= bytes;
            self.kept_live -= 1;
            if let Some(kept) = kept {
                if let Kept::Memory(result) = kept {
                    *kept = Kept::filed(offset, result.is_error);
                    self.counters.results_filed += 1;
                }
            }
        }
    }

    /// Drops from `kept` the ticks no longer among their process's latest results.
    fn compact_kept(&mut self) {
        let processes = &self.processes;
        self.kept.retain(|&(pid, slot, _, _)| match slot {
            Slot::Message(_) => true,
            Slot::Tick(tick) => processes
                .get(&pid)
                .and_then(|p| p.cron.as_ref())
                .is_some_and(|cron| cron.results.binary_search_by_key(&tick, |r| r.tick).is_ok()),
        });
    }

    /// Takes the oldest of a process's latest tick results out, giving back what it counted.
    fn drop_oldest_tick(&mut self, pid: ProcessId) {
        let cron = self.processes.get_mut(&pid).and_then(|p| p.cron.as_mut());
        if let Some(oldest) = cron.and_then(|cron| cron.results.pop_front()) {
            if oldest.counted > 0 {
                self.kept_bytes -= oldest.counted as usize;
                self.kept_live -= 1;
            }
        }
    }

    /// A kept result of `pid`, read back from the results file where it is no longer in memory
    /// (and checked to be the one `slot` names).
    fn kept_result(&self, pid: ProcessId, slot: Slot, kept: &Kept) -> Result<Option<Rc<StoredResult>>, ShardError> {
        match kept {
            Kept::None => Ok(None),
            Kept::Memory(result) => Ok(Some(Rc::clone(result))),
            Kept::Filed(at) => {
                let offset = at & !FILED_ERROR;
                let reader = self.results_in.as_ref().ok_or_else(|| {
                    ShardError::Results("not open, and this result is no longer in memory".to_owned())
                })?;
                let record = reader.read_at(offset).map_err(|e| ShardError::Results(e.to_string()))?;
                let own = record.pid == pid
                    && match slot {
                        Slot::Message(nonce) => record.nonce == nonce as u64 && record.tick.is_none(),
                        Slot::Tick(tick) => record.tick == Some(tick),
                    };
                if !own {
                    return Err(ShardError::Results(format!(
                        "the record at offset {offset} is not the result of {slot:?} of {pid}"
                    )));
                }
                Ok(Some(Rc::new(StoredResult::from_text(
                    record.text.into_boxed_str(),
                    record.is_error,
                ))))
            }
        }
    }

    /// Where `process` stands: messages evaluated and its next cron tick.
    fn point(process: &Process) -> Point {
        Point {
            nonce: process.evaluated,
            next: process.cron.as_ref().and_then(|c| c.next),
        }
    }

    /// Starts appending results to `writer` (checkpoints on). Before this, nothing is written.
    pub fn set_results(&mut self, mut writer: ResultsWriter) {
        if self.results_in.is_none() {
            match checkpoint::ResultsReader::open(writer.path()) {
                Ok(reader) => self.results_in = Some(reader),
                Err(error) => {
                    tracing::warn!(%error, "results file unreadable: every result stays in memory")
                }
            }
        }
        match writer.flush() {
            Ok(end) => {
                self.results_readable = end;
                self.results_out = Some(writer);
            }
            Err(error) => self.results_stop(error),
        }
    }

    /// Makes this shard a replay that writes nothing (`hewitt verify`): the outbox items its
    /// evaluations derive are dropped instead of appended (the log holds them already), so each
    /// process's evaluation depends on its own timeline only.
    pub fn set_replay_only(&mut self) {
        self.replay_only = true;
    }

    /// Keeps in the ready queue only the processes `keep` accepts (`hewitt verify --process`).
    pub fn retain_ready(&mut self, keep: impl Fn(&ProcessId) -> bool) {
        let ready = std::mem::take(&mut self.ready);
        for pid in ready {
            if keep(&pid) {
                self.ready.push_back(pid);
            } else if let Some(process) = self.processes.get_mut(&pid) {
                process.queued = false;
            }
        }
    }

    /// The result kept for message `nonce` of `pid`, or for its cron tick `tick` (which came
    /// after `nonce` messages).
    pub fn stored_result(&self, pid: ProcessId, nonce: u64, tick: Option<Tick>) -> Option<Rc<StoredResult>> {
        let process = self.processes.get(&pid)?;
        match tick {
            None => {
                let kept = &process.entries.get(nonce as usize)?.result;
                self.kept_result(pid, Slot::Message(nonce as usize), kept)
            }
            Some(tick) => {
                let kept = &process
                    .cron
                    .as_ref()?
                    .results
                    .iter()
                    .rev()
                    .find(|r| r.tick == tick)?
                    .result;
                self.kept_result(pid, Slot::Tick(tick), kept)
            }
        }
        .unwrap_or_else(|error| {
            tracing::warn!(%pid, nonce, %error, "result unreadable");
            None
        })
    }

    /// Compares a checkpoint's state of a process with the process now: `None` while the
    /// process is not at the point the state holds; else whether memory (byte for byte),
    /// memory size and exported globals agree.
    pub fn check_checkpoint(&mut self, state: &ProcessState) -> Option<Result<(), String>> {
        let process = self.processes.get(&state.pid)?;
        let point = Self::point(process);
        if point.nonce as u64 != state.nonce || point.next != state.next {
            return None;
        }
        let now = match self.current_snapshot(state.pid) {
            Ok(snapshot) => snapshot,
            Err(error) => return Some(Err(format!("the replay's state cannot be read: {error}"))),
        };
        let names = self.modules[&self.processes[&state.pid].module].compiled.global_names();
        let held = Hibernated::of_state(state.memory_zstd.clone(), state.memory_pages, &state.globals, names)
            .map_err(ShardError::BadRequest)
            .and_then(|held| held.snapshot(names));
        let held = match held {
            Ok(snapshot) => snapshot,
            Err(error) => return Some(Err(format!("its memory cannot be read: {error}"))),
        };
        Some(if held.memory_pages != now.memory_pages {
            Err(format!(
                "{} memory pages, the replay has {}",
                held.memory_pages, now.memory_pages
            ))
        } else if held.memory != now.memory {
            let first = held
                .memory
                .iter()
                .zip(&now.memory)
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            Err(format!(
                "memory differs from the replay's (first at byte {first}; SHA-256 {} vs {})",
                hex(&held.memory_sha256()),
                hex(&now.memory_sha256())
            ))
        } else if held.globals != now.globals {
            Err(format!("globals {:?}, the replay has {:?}", held.globals, now.globals))
        } else {
            Ok(())
        })
    }

    /// Counts a committed checkpoint.
    pub fn checkpoint_committed(&mut self) {
        self.counters.checkpoints += 1;
    }

    /// Why checkpoints stopped, if they did.
    pub fn checkpoints_failed(&self) -> Option<&str> {
        self.results_failed.as_deref()
    }

    /// Evaluations and fuel since the latest checkpoint began.
    pub fn since_checkpoint(&self) -> (u64, u64) {
        self.since_checkpoint
    }

    /// Appends to `out` the checkpoint records of processes from `*cursor` on (in spawn order)
    /// until `out` holds about `bytes_max`: each process evaluated since its last record (with
    /// `full`, every process evaluated at all). Returns false once every process is done. Each
    /// record is the process's state now (its memory compressed); it also becomes the process's
    /// rollback base.
    pub fn checkpoint_chunk(&mut self, cursor: &mut usize, full: bool, out: &mut Vec<u8>, bytes_max: usize) -> bool {
        if *cursor == 0 {
            self.since_checkpoint = (0, 0);
        }
        while *cursor < self.process_ids.len() {
            if out.len() >= bytes_max {
                return true;
            }
            let pid = self.process_ids[*cursor];
            *cursor += 1;
            let process = self.processes.get_mut(&pid).expect("listed processes exist");
            let point = Self::point(process);
            // Nothing evaluated yet (no tick comes before nonce 0): genesis needs no record.
            if point.nonce == 0 || (!full && process.checkpointed) {
                continue;
            }
            let hibernated = match (&mut process.instance, &process.dormant, process.snapshot.as_deref()) {
                (_, _, Some((at, base))) if *at == point => Rc::clone(base),
                (Some(instance), _, _) => Rc::new(Hibernated::of(instance.snapshot())),
                (None, Some(Dormant::Hibernated(asleep)), _) => Rc::clone(asleep),
                // Asleep at genesis, or its rollback failed: nothing to write.
                _ => continue,
            };
            let (next, through) = process.cron.as_ref().map_or((None, 0), |c| (c.next, c.through));
            let state = ProcessState {
                pid,
                nonce: point.nonce as u64,
                next,
                through,
                memory_pages: hibernated.memory_pages,
                globals: unpack_globals(
                    &hibernated.globals,
                    self.modules[&process.module].compiled.global_names(),
                ),
                memory_zstd: Box::default(),
            };
            if !checkpoint::encode_process_with(out, &state, &hibernated.memory_zstd) {
                tracing::warn!(%pid, bytes = hibernated.memory_zstd.len(), "process too large for a checkpoint record: a restart replays it from its previous one");
                continue;
            }
            process.snapshot = Some(Box::new((point, hibernated)));
            process.checkpointed = true;
            if let Some(cron) = process.cron.as_mut() {
                cron.failed.clear(); // they came before the new rollback base
            }
        }
        false
    }

    /// Ends a checkpoint: appends to `out` the outbox items not yet durably delivered and the
    /// commit, and hands the results written so far to the kernel. Returns the log position to
    /// await and a handle to sync the results file with; both must be durable before `out` is
    /// written. `None` when checkpoints are off or stopped.
    pub fn checkpoint_commit(&mut self, generation: u64, out: &mut Vec<u8>) -> Option<(Lsn, std::fs::File)> {
        self.settle();
        for to in 0..self.shard_count {
            self.prune_sent(to);
        }
        let writer = self.results_out.as_mut()?;
        let flushed = writer.flush().and_then(|offset| Ok((offset, writer.sync_handle()?)));
        let (results_offset, results) = match flushed {
            Ok(done) => done,
            Err(error) => {
                tracing::error!(%error, "results file failed: checkpoints stop until a restart");
                self.results_failed = Some(error.to_string());
                self.results_out = None;
                return None;
            }
        };
        for delivery in &self.outbox {
            checkpoint::encode_pending(out, &delivery.pending());
        }
        for (to, queue) in self.remote_out.iter().enumerate() {
            // Sent (older) before queued (newer): a restart sends them again in this order.
            for remote in self.sent[to].iter().chain(queue.iter().map(|(_, r)| r)) {
                if let Some(pending) = remote.pending(to as u32) {
                    checkpoint::encode_pending(out, &pending);
                }
            }
        }
        // Spawns whose answers have not come (those sent or queued above are sent once).
        let mut awaiting: Vec<&AwaitedSpawn> = self.awaiting.values().collect();
        awaiting.sort_by_key(|awaited| awaited.sent);
        for awaited in awaiting {
            let pending = checkpoint::Pending::RemoteSpawnNotified {
                to: awaited.to as u32,
                process: awaited.process.clone(),
                notice: awaited.notice.clone(),
            };
            checkpoint::encode_pending(out, &pending);
        }
        let log_lsn = self.log.borrow().end_lsn();
        checkpoint::encode_commit(
            out,
            &checkpoint::Commit {
                generation,
                log_lsn: log_lsn.0,
                results_offset,
            },
        );
        Some((log_lsn, results))
    }

    /// Resumes from a checkpoint, after the log is read back and before
    /// [`Shard::finish_recovery`]: each process it holds starts asleep in its state there, with
    /// the results it covers (read from `results_path`), and only the messages after it are
    /// evaluated again; its pending items are queued for delivery. Returns the messages it
    /// spared from replay. Nothing changes when it does not fit the log (an `Err` says why;
    /// the node then replays from genesis).
    pub fn apply_checkpoint(
        &mut self,
        loaded: checkpoint::Loaded,
        results_path: &std::path::Path,
    ) -> Result<u64, String> {
        let commit = loaded.commit.ok_or("no committed generation")?;
        let log_end = self.log.borrow().end_lsn();
        if commit.log_lsn > log_end.0 {
            return Err(format!(
                "it covers the log to {}, but the log ends at {log_end}",
                commit.log_lsn
            ));
        }
        for state in loaded.processes.values() {
            let process = self
                .processes
                .get(&state.pid)
                .ok_or_else(|| format!("process {} is not in the log", state.pid))?;
            let names = self.modules[&process.module].compiled.global_names();
            if !state.globals.iter().map(|(name, _)| name).eq(names.iter()) {
                return Err(format!(
                    "process {}: the checkpoint's globals are not its module's (compiled otherwise)",
                    state.pid
                ));
            }
            if state.nonce > process.entries.len() as u64 {
                return Err(format!(
                    "process {} evaluated {} messages, the log holds {}",
                    state.pid,
                    state.nonce,
                    process.entries.len()
                ));
            }
        }
        for pending in &loaded.pending {
            if let Pending::RemoteMessage { to, .. }
            | Pending::RemoteSpawn { to, .. }
            | Pending::RemoteSpawnNotified { to, .. }
            | Pending::RemoteAssign { to, .. } = pending
            {
                if *to as usize >= self.shard_count {
                    return Err(format!(
                        "an item for shard {to}, and this node has {}",
                        self.shard_count
                    ));
                }
            }
        }
        let (mut kept, mut problem) = (Vec::new(), None);
        checkpoint::read_results(results_path, commit.results_offset, |at, record| {
            let Some(state) = loaded.processes.get(&record.pid) else {
                return;
            };
            let covered = match record.tick {
                None => record.nonce < state.nonce,
                Some(tick) => {
                    record.nonce < state.nonce || (record.nonce == state.nonce && state.next.is_none_or(|n| tick < n))
                }
            };
            let process = &self.processes[&record.pid];
            // A message's nonce is in the log; a tick follows message `nonce - 1`.
            let fits = match record.tick {
                None => record.nonce < process.entries.len() as u64,
                Some(_) => record.nonce > 0 && record.nonce <= process.entries.len() as u64 && process.cron.is_some(),
            };
            if !fits {
                problem.get_or_insert(format!(
                    "a result of process {} at nonce {} does not fit its log",
                    record.pid, record.nonce
                ));
            } else if covered {
                // Results are left in the file (read back when asked for): only their
                // offsets are kept, whatever the file holds.
                kept.push((record.pid, record.nonce, record.tick, at, record.is_error));
            }
        })
        .map_err(|e| e.to_string())?;
        if let Some(problem) = problem {
            return Err(problem);
        }
        // Opened before anything changes: a failure leaves the shard as it was.
        let reader = if kept.is_empty() {
            None
        } else {
            Some(checkpoint::ResultsReader::open(results_path).map_err(|e| e.to_string())?)
        };
        let mut spared = 0;
        for state in loaded.processes.into_values() {
            let process = self.processes.get_mut(&state.pid).expect("checked above");
            let nonce = state.nonce as usize;
            if let Some(cron) = process.cron.as_mut() {
                cron.next = state.next;
                cron.through = state.through;
            }
            let point = Self::point(process);
            let point = Point { nonce, ..point };
            let names = self.modules[&process.module].compiled.global_names();
            let hibernated = Rc::new(
                Hibernated::of_state(state.memory_zstd, state.memory_pages, &state.globals, names)
                    .expect("checked above"),
            );
            process.evaluated = nonce;
            process.dormant = Some(Dormant::Hibernated(Rc::clone(&hibernated)));
            process.snapshot = Some(Box::new((point, hibernated)));
            process.checkpointed = true;
            self.unevaluated -= nonce;
            spared += nonce as u64;
        }
        self.counters.resumed = spared;
        if reader.is_some() {
            self.results_in = reader;
        }
        for (pid, nonce, tick, offset, is_error) in kept {
            let process = self.processes.get_mut(&pid).expect("checked above");
            match tick {
                None => process.entries[nonce as usize].result = Kept::filed(offset, is_error),
                Some(tick) => {
                    let cron = process.cron.as_mut().expect("checked above");
                    // A tick evaluated again after an earlier restart (it came after its
                    // process's record in that checkpoint) is in the file twice: once is kept.
                    if cron.results.back().is_some_and(|last| last.tick >= tick) {
                        continue;
                    }
                    if cron.results.len() == CRON_RESULTS_MAX {
                        cron.results.pop_front();
                    }
                    let after = process.entries[nonce as usize - 1].lsn;
                    cron.results.push_back(CronResult {
                        tick,
                        after,
                        result: Kept::filed(offset, is_error),
                        counted: 0,
                    });
                }
            }
        }
        // Processes with nothing left to evaluate leave the ready queue.
        let ready = std::mem::take(&mut self.ready);
        for pid in ready {
            let process = self.processes.get_mut(&pid).expect("queued processes exist");
            if process.evaluated < process.entries.len() || Self::due_tick(process).is_some() {
                self.ready.push_back(pid);
            } else {
                process.queued = false;
            }
        }
        // A replay that only checks (`hewitt verify`) delivers nothing.
        let pending = if self.replay_only { Vec::new() } else { loaded.pending };
        for pending in pending {
            match pending {
                Pending::Message { item, cause } => self.outbox.push_back(Delivery::Message {
                    item,
                    cause: Lsn(cause),
                }),
                Pending::Spawn { process, notice, cause } => self.outbox.push_back(Delivery::Spawn {
                    process,
                    notice,
                    cause: Lsn(cause),
                }),
                Pending::Assign {
                    processes,
                    message,
                    cause,
                } => self.outbox.push_back(Delivery::Assign {
                    processes,
                    message,
                    cause: Lsn(cause),
                }),
                // Their causes were durable before the checkpoint committed.
                Pending::RemoteMessage { to, item } => self.queue_remote(to as usize, NO_CAUSE, Remote::Message(item)),
                Pending::RemoteSpawn { to, item } => self.queue_remote(
                    to as usize,
                    NO_CAUSE,
                    Remote::Spawn {
                        process: item,
                        notice: None,
                    },
                ),
                Pending::RemoteSpawnNotified { to, process, notice } => {
                    self.send_spawn(to as usize, NO_CAUSE, &process, &notice)
                }
                Pending::RemoteAssign { to, process, item } => {
                    self.queue_remote(to as usize, NO_CAUSE, Remote::Assign { process, item })
                }
            }
        }
        Ok(spared)
    }

    /// Evaluates the next message of `pid`.
    fn evaluate_message(&mut self, pid: ProcessId) -> Result<Evaluated, ShardError> {
        let (nonce, lsn) = {
            let process = self.processes.get(&pid).expect("ready processes exist");
            (process.evaluated, process.entries[process.evaluated].lsn)
        };
        let (item, exclude) = self.read_input(lsn)?;
        let placement = Self::placement(pid, nonce, &self.processes[&pid].entries[nonce]);
        let msg = self.input_json(&item, &placement, &exclude);
        let process = self.processes.get_mut(&pid).expect("ready processes exist");
        let instance = process.instance.as_mut().ok_or_else(|| no_instance(pid))?;
        debug_assert!(!process.env.is_empty(), "a live process has its env");
        let result = Self::run_handle(instance, &msg, &process.env);
        let undone = Self::undo_or_keep(instance, &result);
        self.note_memory(pid);
        let process = self.processes.get_mut(&pid).expect("exists");
        match undone {
            None => {}
            Some(Undone::InPlace { pages }) => self.count_undo(pages),
            Some(Undone::Rebuild) => {
                self.counters.rollbacks += 1;
                // Its next instance is tracked for undo in place.
                process.failures = process.failures.saturating_add(1);
                let next = process.cron.as_ref().and_then(|c| c.next);
                self.rebuild_instance(pid, Point { nonce, next }, None)?;
            }
        }
        let message_id = MessageId::from(item.id());
        let origin = Origin {
            process: pid,
            module: self.processes[&pid].module,
            nonce: Nonce(nonce as u64),
            pushed_for: abi::pushed_for(&item, message_id),
            cron: None,
        };
        self.enqueue_outbox(&origin, &result, lsn);
        let gas_used = result.json["GasUsed"].as_u64().unwrap_or(0);
        self.counters.fuel_used += gas_used;
        let stored = Self::stored(result);
        let offset = self.keep_result(pid, nonce, None, &stored, gas_used);
        self.set_result(pid, nonce, stored, offset);
        let process = self.processes.get_mut(&pid).expect("exists");
        if nonce < process.recovered {
            self.recovery_pending -= 1;
        }
        process.evaluated += 1;
        self.unevaluated -= 1;
        self.counters.evaluated += 1;
        self.requeue(pid);
        Ok(Evaluated {
            process: pid,
            nonce: Nonce(nonce as u64),
            tick: None,
            duration: std::time::Duration::ZERO,
            gas_used,
        })
    }

    fn tick_json(process: &Process, pid: ProcessId, tick: Tick) -> Vec<u8> {
        let cron = process.cron.as_ref().expect("a tick belongs to a process with crons");
        let time = Timestamp(tick.time);
        abi::cron_msg_json(
            &process.item,
            pid,
            &cron.schedule.crons()[tick.cron as usize].tags,
            time,
            block_height_at(time),
        )
    }

    /// Evaluates the cron tick `tick` of `pid` (due by [`Shard::due_tick`]).
    fn evaluate_tick(&mut self, pid: ProcessId, tick: Tick) -> Result<Evaluated, ShardError> {
        let process = self.processes.get_mut(&pid).expect("ready processes exist");
        let nonce = process.evaluated;
        // Nonce 0 (at the origin) always comes before the first tick.
        let after = process.entries[nonce - 1].lsn;
        let msg = Self::tick_json(process, pid, tick);
        let instance = process.instance.as_mut().ok_or_else(|| no_instance(pid))?;
        debug_assert!(!process.env.is_empty(), "a live process has its env");
        let result = Self::run_handle(instance, &msg, &process.env);
        let undone = Self::undo_or_keep(instance, &result);
        self.note_memory(pid);
        match undone {
            None => {}
            Some(Undone::InPlace { pages }) => {
                self.count_undo(pages);
                // A rebuild from the rollback base later must skip it too.
                let process = self.processes.get_mut(&pid).expect("exists");
                process
                    .cron
                    .as_mut()
                    .expect("ticks belong to processes with crons")
                    .failed
                    .push(tick);
            }
            Some(Undone::Rebuild) => {
                self.counters.rollbacks += 1;
                let process = self.processes.get_mut(&pid).expect("exists");
                process.failures = process.failures.saturating_add(1);
                let point = Point {
                    nonce,
                    next: Some(tick),
                };
                self.rebuild_instance(pid, point, Some(tick))?;
            }
        }
        let origin = Origin {
            process: pid,
            module: self.processes[&pid].module,
            nonce: Nonce(nonce as u64),
            pushed_for: MessageId(pid.0),
            cron: Some((tick.time, tick.cron)),
        };
        self.enqueue_outbox(&origin, &result, after);
        let gas_used = result.json["GasUsed"].as_u64().unwrap_or(0);
        self.counters.fuel_used += gas_used;
        self.counters.cron_ticks += 1;
        let stored = Self::stored(result);
        let offset = self.keep_result(pid, nonce, Some(tick), &stored, gas_used);
        let bytes = stored.text().len();
        if self.processes[&pid]
            .cron
            .as_ref()
            .is_some_and(|c| c.results.len() == CRON_RESULTS_MAX)
        {
            self.drop_oldest_tick(pid);
        }
        let process = self.processes.get_mut(&pid).expect("exists");
        let cron = process.cron.as_mut().expect("a tick belongs to a process with crons");
        cron.results.push_back(CronResult {
            tick,
            after,
            result: Kept::Memory(stored),
            counted: 0,
        });
        cron.next = cron.schedule.next_after(Some(tick));
        self.remember(pid, Slot::Tick(tick), offset, bytes);
        self.requeue(pid);
        Ok(Evaluated {
            process: pid,
            nonce: Nonce(nonce as u64),
            tick: Some(tick),
            duration: std::time::Duration::ZERO,
            gas_used,
        })
    }

    /// Puts back the memory the process had at `target` (just before the evaluation that
    /// failed): a fresh instance from the latest snapshot, then a replay of the successful
    /// messages and cron ticks after it, then a new snapshot so the next rollback replays only
    /// from here. `failed_tick` is the tick that failed, when one did.
    fn rebuild_instance(&mut self, pid: ProcessId, target: Point, failed_tick: Option<Tick>) -> Result<(), ShardError> {
        self.set_instance(pid, None); // return the slot before taking another
        let process = &self.processes[&pid];
        let (module, limits) = (process.module, process.limits);
        let from = process.snapshot.as_ref().map(|taken| taken.0);
        let base = match process.snapshot.as_deref() {
            Some((_, hibernated)) => Some(hibernated.snapshot(self.modules[&module].compiled.global_names())?),
            None => None,
        };
        let env = Rc::clone(&process.env);
        let genesis = Point {
            nonce: 0,
            next: process.cron.as_ref().and_then(|c| c.schedule.next_after(None)),
        };
        let mut instance = self.instance_with_room(Some(pid), |shard| {
            let compiled = &shard.modules[&module].compiled;
            match &base {
                Some(snapshot) => compiled.instantiate_from(limits, snapshot),
                None => compiled.instantiate(limits),
            }
        })?;
        let mut at = from.unwrap_or(genesis);
        while at != target {
            let process = &self.processes[&pid];
            assert!(
                at.nonce <= target.nonce,
                "rollback of {pid} went past its target: the evaluation order is not deterministic"
            );
            let tick_first = at
                .next
                .filter(|tick| at.nonce >= process.entries.len() || tick.time < process.entries[at.nonce].timestamp.0);
            if let Some(tick) = tick_first {
                let cron = process.cron.as_ref().expect("ticks belong to processes with crons");
                if !cron.failed.contains(&tick) {
                    let msg = Self::tick_json(process, pid, tick);
                    let result = Self::run_handle(&mut instance, &msg, &env);
                    assert!(
                        !result.is_error,
                        "replay of {pid} tick {tick:?} failed where it once succeeded: evaluation is not deterministic"
                    );
                }
                at.next = cron.schedule.next_after(Some(tick));
                continue;
            }
            let nonce = at.nonce;
            let succeeded = process.entries[nonce].result.succeeded();
            if succeeded {
                let lsn = process.entries[nonce].lsn;
                let (item, exclude) = self.read_input(lsn)?;
                let placement = Self::placement(pid, nonce, &self.processes[&pid].entries[nonce]);
                let msg = self.input_json(&item, &placement, &exclude);
                let result = Self::run_handle(&mut instance, &msg, &env);
                assert!(
                    !result.is_error,
                    "replay of {pid} nonce {nonce} failed where it once succeeded: evaluation is not deterministic"
                );
            }
            at.nonce += 1;
        }
        let snapshot = Rc::new(Hibernated::of(instance.snapshot()));
        let process = self.processes.get_mut(&pid).expect("exists");
        process.snapshot = Some(Box::new((target, snapshot)));
        if let Some(cron) = process.cron.as_mut() {
            cron.failed = failed_tick.into_iter().collect();
        }
        self.set_instance(pid, Some(instance));
        Ok(())
    }

    /// Lets the cron ticks of `pid` up to `now` be evaluated (each once the messages before it
    /// are) and queues the process if one is due; a message assigned to it afterwards gets a
    /// later timestamp. Nothing happens for a process without crons.
    pub fn advance_crons(&mut self, pid: ProcessId, now: Timestamp) -> Result<(), ShardError> {
        let process = self
            .processes
            .get_mut(&pid)
            .ok_or_else(|| ShardError::NotFound(format!("process {pid} is not on this node")))?;
        let Some(cron) = process.cron.as_mut() else {
            return Ok(());
        };
        cron.through = cron.through.max(now.0.min(self.cron_lease));
        if !process.queued && Self::due_tick(process).is_some() {
            process.queued = true;
            self.ready.push_back(pid);
        }
        Ok(())
    }

    /// Whether `pid` has evaluated every message assigned to it and every cron tick up to `now`.
    pub fn crons_settled(&self, pid: ProcessId, now: Timestamp) -> bool {
        self.processes.get(&pid).is_none_or(|process| {
            process.evaluated == process.entries.len()
                && process
                    .cron
                    .as_ref()
                    .is_none_or(|cron| cron.next.is_none_or(|tick| tick.time > now.0))
        })
    }

    /// [`Shard::advance_crons`] for every monitored process: their ticks are evaluated as time
    /// passes, not only when a message or a `/cron` read comes.
    pub fn drive_crons(&mut self, now: Timestamp) {
        let monitored: Vec<ProcessId> = self.monitored.iter().copied().collect();
        for pid in monitored {
            let _ = self.advance_crons(pid, now);
        }
    }

    /// Starts (`on`) or stops monitoring `pid` (AO's MU `/monitor`).
    pub fn set_monitored(&mut self, pid: ProcessId, on: bool) -> Result<(), ShardError> {
        if !self.processes.contains_key(&pid) {
            return Err(ShardError::NotFound(format!("process {pid} is not on this node")));
        }
        if on {
            self.monitored.insert(pid);
        } else {
            self.monitored.remove(&pid);
        }
        Ok(())
    }

    /// The monitored processes, sorted.
    pub fn monitored(&self) -> Vec<ProcessId> {
        let mut pids: Vec<ProcessId> = self.monitored.iter().copied().collect();
        pids.sort();
        pids
    }

    /// The cron results of `pid` after tick `from` with times up to `to`, in tick order, at most
    /// `limit` and, past the first, `bytes_max` of their JSON, served only once the message
    /// before each tick is durable; and whether more follow. Only the latest
    /// [`CRON_RESULTS_MAX`] are kept.
    pub fn cron_results(
        &self,
        pid: ProcessId,
        from: Option<Tick>,
        to: Option<u64>,
        limit: usize,
        bytes_max: usize,
    ) -> Result<(CronPage, bool), ShardError> {
        let process = self
            .processes
            .get(&pid)
            .ok_or_else(|| ShardError::NotFound(format!("process {pid} is not on this node")))?;
        let Some(cron) = process.cron.as_ref() else {
            return Ok((Vec::new(), false));
        };
        let durable = self.log.borrow().durable_lsn();
        let mut served = cron
            .results
            .iter()
            .filter(|r| from.is_none_or(|f| r.tick > f) && to.is_none_or(|t| r.tick.time <= t))
            .take_while(|r| r.after < durable);
        let (mut page, mut bytes): (CronPage, _) = (Vec::new(), PageBytes::new(bytes_max));
        for r in served.by_ref().take(limit) {
            let result = self
                .kept_result(pid, Slot::Tick(r.tick), &r.result)?
                .expect("evaluated");
            if !bytes.fits(result.text().len()) {
                return Ok((page, true));
            }
            page.push((r.tick, result));
        }
        Ok((page, served.next().is_some()))
    }

    /// The result of `message`, or `None` while it waits for evaluation.
    pub fn result(&self, process: ProcessId, message: MessageId) -> Result<Option<Rc<StoredResult>>, ShardError> {
        let nonce = self.locate(process, message)?.0 as usize;
        self.kept_result(
            process,
            Slot::Message(nonce),
            &self.processes[&process].entries[nonce].result,
        )
    }

    /// The results of `process` with nonces in `range` that are evaluated and durable, in
    /// nonce order: what `GET /results` pages through. At most `count` of them and, past the
    /// first, `bytes_max` of their JSON, from the start of that run or, `descending`, from its
    /// end; only those are read back where the file holds them. Also whether more are there.
    pub fn results(
        &self,
        process: ProcessId,
        range: std::ops::Range<u64>,
        descending: bool,
        count: usize,
        bytes_max: usize,
    ) -> Result<(ResultsPage, bool), ShardError> {
        let entries = &self
            .processes
            .get(&process)
            .ok_or_else(|| ShardError::NotFound(format!("process {process} is not on this node")))?
            .entries;
        let durable = self.log.borrow().durable_lsn();
        let end = (range.end as usize).min(entries.len());
        let start = (range.start as usize).min(end);
        let available = entries[start..end]
            .iter()
            .take_while(|entry| entry.lsn < durable && entry.result.is_some())
            .count();
        let nonces: Box<dyn Iterator<Item = usize>> = if descending {
            Box::new((start..start + available).rev())
        } else {
            Box::new(start..start + available)
        };
        let (mut page, mut bytes) = (Vec::new(), PageBytes::new(bytes_max));
        for nonce in nonces.take(count) {
            let result = self
                .kept_result(process, Slot::Message(nonce), &entries[nonce].result)?
                .expect("evaluated, checked above");
            if !bytes.fits(result.text().len()) {
                return Ok((page, true));
            }
            page.push((Nonce(nonce as u64), result));
        }
        let more = page.len() < available;
        Ok((page, more))
    }

    /// The oldest of `pid`'s tick results kept (only the latest [`CRON_RESULTS_MAX`] are).
    pub fn oldest_tick_kept(&self, pid: ProcessId) -> Option<Tick> {
        self.processes.get(&pid)?.cron.as_ref()?.results.front().map(|r| r.tick)
    }

    /// Whether message `nonce` of `pid` has a result kept (in memory or in the results file).
    pub fn has_result(&self, pid: ProcessId, nonce: u64) -> bool {
        self.processes
            .get(&pid)
            .and_then(|p| p.entries.get(nonce as usize))
            .is_some_and(|entry| entry.result.is_some())
    }

    /// How many entries `process`'s timeline has (its next nonce).
    pub fn timeline_len(&self, process: ProcessId) -> Result<u64, ShardError> {
        self.processes
            .get(&process)
            .map(|p| p.entries.len() as u64)
            .ok_or_else(|| ShardError::NotFound(format!("process {process} is not on this node")))
    }

    /// The nonce at which `message` sits in `process`'s timeline.
    pub fn locate(&self, process: ProcessId, message: MessageId) -> Result<Nonce, ShardError> {
        if !self.processes.contains_key(&process) {
            return Err(ShardError::NotFound(format!("process {process} is not on this node")));
        }
        if let Some(nonce) = self.assigned.get(&(process, message)) {
            return Ok(*nonce);
        }
        match self.owner_of(message) {
            Some((owner, nonce)) if owner == process => Ok(nonce),
            _ => Err(ShardError::NotFound(format!(
                "message {message} is not in the timeline of {process}"
            ))),
        }
    }

    pub fn has_process(&self, process: ProcessId) -> bool {
        self.processes.contains_key(&process)
    }

    /// Runs `msg` against a copy of the process's current memory; the live instance and the log
    /// are untouched.
    ///
    /// `owner` and `from` stand in for the message's `Owner` and `From` (a dry run is unsigned:
    /// it asks "what would this process answer to a message from X?"); `From` defaults to `Owner`.
    pub fn dry_run(
        &mut self,
        pid: ProcessId,
        item: &DataItem,
        now: Timestamp,
        owner: Option<&str>,
        from: Option<&str>,
    ) -> Result<ProcessResult, ShardError> {
        if !self.processes.contains_key(&pid) {
            return Err(ShardError::NotFound(format!("process {pid} is not on this node")));
        }
        // On a copy of its state: the live instance (or the sleeping process) is not touched.
        let snapshot = self.current_snapshot(pid)?;
        let (module, limits) = (self.processes[&pid].module, self.processes[&pid].limits);
        let mut copy = self.instance_with_room(Some(pid), |shard| {
            shard.modules[&module].compiled.instantiate_from(limits, &snapshot)
        })?;
        let process = &self.processes[&pid];
        let last = process.entries.last().expect("nonce 0 exists");
        let placement = Placement {
            process: pid,
            nonce: Nonce(process.entries.len() as u64),
            timestamp: Timestamp(now.0.max(last.timestamp.0)),
            block_height: block_height_at(now),
            hash_chain: last.hash_chain,
        };
        let mut msg = abi::msg_json(item, &placement, true);
        if owner.is_some() || from.is_some() {
            let mut value: serde_json::Value = serde_json::from_slice(&msg).expect("msg_json writes JSON");
            if let Some(owner) = owner {
                value["Owner"] = owner.into();
                value["From"] = owner.into();
            }
            if let Some(from) = from {
                value["From"] = from.into();
            }
            msg = serde_json::to_vec(&value).expect("a JSON value serialises");
        }
        let env = self.env_json(pid);
        Ok(Self::run_handle(&mut copy, &msg, &env))
    }

    /// The process's linear memory as it stands after the messages evaluated so far.
    pub fn memory(&mut self, pid: ProcessId) -> Result<Vec<u8>, ShardError> {
        let process = self
            .processes
            .get(&pid)
            .ok_or_else(|| ShardError::NotFound(format!("process {pid} is not on this node")))?;
        match &process.instance {
            Some(instance) => Ok(instance.memory().to_vec()),
            None => Ok(self.current_snapshot(pid)?.memory),
        }
    }

    /// The process's spawn item.
    pub fn process_item(&self, pid: ProcessId) -> Result<(&DataItem, Timestamp, BlockHeight), ShardError> {
        let process = self
            .processes
            .get(&pid)
            .ok_or_else(|| ShardError::NotFound(format!("process {pid} is not on this node")))?;
        let first = &process.entries[0];
        Ok((&process.item, first.timestamp, first.block_height))
    }

    /// Nonces of `pid` within the bounds, in order, at most `limit` (+1 to tell if more follow).
    /// Nonce bounds: `from` exclusive, `to` inclusive; timestamp bounds likewise. Found by
    /// binary search: the timeline is sorted by both.
    pub fn timeline(
        &self,
        pid: ProcessId,
        from_nonce: Option<u64>,
        to_nonce: Option<u64>,
        from_ms: Option<u64>,
        to_ms: Option<u64>,
        limit: usize,
    ) -> Result<(Vec<TimelineEntry>, bool), ShardError> {
        let process = self
            .processes
            .get(&pid)
            .ok_or_else(|| ShardError::NotFound(format!("process {pid} is not on this node")))?;
        let entries = &process.entries;
        let mut start = from_nonce.map_or(0, |n| (n as usize).saturating_add(1));
        if let Some(from) = from_ms {
            start = start.max(entries.partition_point(|e| e.timestamp.0 <= from));
        }
        let mut end = to_nonce.map_or(entries.len(), |n| (n as usize).saturating_add(1).min(entries.len()));
        if let Some(to) = to_ms {
            end = end.min(entries.partition_point(|e| e.timestamp.0 <= to));
        }
        let start = start.min(end);
        let page_end = end.min(start.saturating_add(limit));
        let page = (start..page_end)
            .map(|nonce| TimelineEntry {
                nonce: Nonce(nonce as u64),
                timestamp: entries[nonce].timestamp,
                lsn: entries[nonce].lsn,
            })
            .collect();
        Ok((page, page_end < end))
    }

    /// The timestamp of the assignment at `nonce` of `pid` (both known to exist).
    pub fn assignment_time(&self, pid: ProcessId, nonce: Nonce) -> Timestamp {
        self.processes[&pid].entries[nonce.0 as usize].timestamp
    }

    /// The log position of the process's latest assignment.
    pub fn latest(&self, pid: ProcessId) -> Result<Lsn, ShardError> {
        let process = self
            .processes
            .get(&pid)
            .ok_or_else(|| ShardError::NotFound(format!("process {pid} is not on this node")))?;
        Ok(process.entries.last().expect("nonce 0 exists").lsn)
    }

    /// The log position up to which everything is durable.
    pub fn durable_lsn(&self) -> Lsn {
        self.log.borrow().durable_lsn()
    }

    /// The data items of up to `records_max` durable records from `from` (a record boundary),
    /// in log order, as a bundler takes them: a module; a process or message followed by its
    /// assignment; for an assignment of a message already logged, the assignment alone. Returns
    /// them with the position after the last record read (`from` when nothing durable follows).
    pub fn upload_items(&self, from: Lsn, records_max: usize) -> Result<(Vec<DataItem>, Lsn), ShardError> {
        let log = self.log.borrow();
        let durable = log.durable_lsn();
        let mut records = log.records_from(from);
        let mut items = Vec::new();
        let mut next = from;
        for _ in 0..records_max {
            if next >= durable {
                break;
            }
            let Some(record) = records.next() else { break };
            let record = record?;
            if record.lsn >= durable {
                break;
            }
            let corrupt = |reason: String| ShardError::Corrupt {
                lsn: record.lsn,
                reason,
            };
            match record.kind {
                KIND_MODULE => items.push(DataItem::parse(record.payload).map_err(|e| corrupt(e.to_string()))?),
                // Fetched from Arweave: nothing to upload.
                KIND_GATEWAY_MODULE => {}
                KIND_ASSIGNMENT | KIND_ASSIGNED | KIND_SPAWN => {
                    let assignment =
                        AssignmentRecord::decode(record.kind, record.payload).map_err(|e| corrupt(e.to_string()))?;
                    if assignment.assigned.is_none() {
                        items.push(DataItem::parse(assignment.item).map_err(|e| corrupt(e.to_string()))?);
                    }
                    items.push(self.assignment_item(&assignment));
                }
                other => return Err(corrupt(format!("unknown record kind {other}"))),
            }
            next = records.next_lsn();
        }
        Ok((items, next))
    }

    /// The signed assignment data item a record stands for.
    fn assignment_item(&self, assignment: &AssignmentRecord<'_>) -> DataItem {
        let fields = AssignmentFields {
            process: assignment.process,
            epoch: 0,
            nonce: assignment.nonce,
            hash_chain: assignment.hash_chain,
            block_height: assignment.block_height,
            timestamp: assignment.timestamp,
            message: (assignment.nonce != Nonce(0)).then_some(assignment.message),
            exclude: assignment
                .assigned
                .map(|a| a.exclude.to_owned())
                .filter(|e| !e.is_empty()),
        };
        chain::assignment_item(&self.signer, &fields, assignment.signature.to_vec())
    }

    /// The assignment and message stored at `lsn`, rebuilt as data items for the SU API. The
    /// message is `None` for an assignment of a message sent to another process (as AO's SU
    /// shows an assignment made by `assign`: the message is found by its id).
    pub fn assignment_at(&self, lsn: Lsn) -> Result<(DataItem, Option<DataItem>), ShardError> {
        let log = self.log.borrow();
        let record = log.read(lsn)?;
        let corrupt = |reason: String| ShardError::Corrupt { lsn, reason };
        let assignment = AssignmentRecord::decode(record.kind, record.payload).map_err(|e| corrupt(e.to_string()))?;
        let message = match assignment.assigned {
            Some(_) => None,
            None => Some(DataItem::parse(assignment.item).map_err(|e| corrupt(e.to_string()))?),
        };
        Ok((self.assignment_item(&assignment), message))
    }

    /// The SHA-256 of a process's memory and the nonce it covers (for `verify` and tests).
    pub fn memory_hash(&mut self, pid: ProcessId) -> Result<([u8; 32], Nonce), ShardError> {
        let process = self
            .processes
            .get_mut(&pid)
            .ok_or_else(|| ShardError::NotFound(format!("process {pid} is not on this node")))?;
        let evaluated = process.evaluated;
        let hash = match (&process.instance, &process.dormant) {
            (Some(instance), _) => instance.memory_sha256(),
            (None, _) => self.current_snapshot(pid)?.memory_sha256(),
        };
        Ok((hash, Nonce(evaluated as u64)))
    }

    /// Every process id, for tests and `verify`.
    pub fn process_ids(&self) -> Vec<ProcessId> {
        let mut ids: Vec<_> = self.processes.keys().copied().collect();
        ids.sort();
        ids
    }

    /// What the node knows of module `id`, for the GraphQL subset.
    pub fn module_meta(&self, id: ModuleId) -> Option<&ModuleMeta> {
        self.modules.get(&id).map(|m| &m.meta)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compute::{samples, ComputeConfig};
    use scheduler::log::LogConfig;
    use scheduler::tags::Tag;

    struct Fixture {
        shard: Shard,
        client: Signer,
        _dir: tempfile::TempDir,
    }

    fn runtime(instance_count_max: u32) -> Runtime {
        let config = ComputeConfig {
            instance_count_max,
            memory_bytes_max: 64 << 20,
            ..ComputeConfig::default()
        };
        Runtime::new(config).unwrap()
    }

    fn shard_limits() -> ShardLimits {
        ShardLimits {
            memory_limit_default: 16 << 20,
            memory_limit_max: 64 << 20,
            ..ShardLimits::default()
        }
    }

    fn fixture(instance_count_max: u32) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let log = Rc::new(RefCell::new(Log::open(dir.path(), LogConfig::default()).unwrap()));
        let runtime = runtime(instance_count_max);
        let shard = Shard::recover(Signer::generate_ed25519(), runtime, log, shard_limits()).unwrap();
        Fixture {
            shard,
            client: Signer::generate_ed25519(),
            _dir: dir,
        }
    }

    fn ao(kind: &str, extra: Vec<Tag>) -> Vec<Tag> {
        let mut tags = vec![Tag::new("Data-Protocol", "ao"), Tag::new("Type", kind)];
        tags.extend(extra);
        tags
    }

    impl Fixture {
        fn module(&mut self, name: &str) -> ModuleId {
            let tags = ao("Module", vec![Tag::new("Module-Format", "wasm32-unknown-unknown")]);
            let item = self.client.sign(None, None, tags, samples::wasm(name).unwrap());
            let bytes = item.to_bytes();
            self.shard.admit_module(item, &bytes).unwrap().0
        }

        fn spawn(&mut self, module: ModuleId, name: &str) -> Result<ProcessId, ShardError> {
            let tags = ao(
                "Process",
                vec![
                    Tag::new("Module", module.to_string()),
                    Tag::new("Scheduler", self.shard.address().to_string()),
                    Tag::new("Name", name),
                ],
            );
            let item = self.client.sign(None, None, tags, Vec::new());
            let bytes = item.to_bytes();
            self.shard
                .admit_process(item, &bytes, Timestamp(1_700_000_000_000))
                .map(|(pid, _)| pid)
        }

        fn send(&mut self, pid: ProcessId, action: &str, anchor: u8) -> MessageId {
            let tags = ao("Message", vec![Tag::new("Action", action)]);
            let item = self.client.sign(Some(pid.0), Some([anchor; 32]), tags, Vec::new());
            let bytes = item.to_bytes();
            self.shard
                .admit_message(item, &bytes, Timestamp(1_700_000_000_000))
                .unwrap()
                .0
        }

        /// Results written to a results file (as with checkpoints on), with at most
        /// `bytes_max` of them in memory (`None`: the default bound).
        fn results_file(&mut self, bytes_max: Option<usize>) {
            let path = self._dir.path().join("results");
            self.shard.set_results(ResultsWriter::open(&path, 0).unwrap());
            if let Some(bytes_max) = bytes_max {
                self.shard.limits.results_memory_bytes_max = bytes_max;
            }
        }

        fn settle(&mut self) {
            let mut evaluated = Vec::new();
            while self.shard.has_work() {
                self.shard
                    .pump(Timestamp(1_700_000_000_001), 64, &mut evaluated)
                    .unwrap();
            }
        }
    }

    #[test]
    fn a_spawn_logs_its_limits_and_one_logged_without_them_gets_the_nodes_own() {
        let mut f = fixture(4);
        let counter = f.module("counter");
        let pid = f.spawn(counter, "a").unwrap();
        let limits = ProcessLimits {
            memory_bytes_max: 16 << 20,
            fuel_per_message: ShardLimits::default().compute_limit_default,
        };
        assert_eq!(f.shard.processes[&pid].limits, limits);
        let records: Vec<(u8, Vec<u8>)> = f
            .shard
            .log
            .borrow()
            .records()
            .map(|r| r.map(|r| (r.kind, r.payload.to_vec())).unwrap())
            .collect();
        assert_eq!(
            records.iter().map(|r| r.0).collect::<Vec<_>>(),
            [KIND_MODULE, KIND_SPAWN]
        );
        let spawn = AssignmentRecord::decode(KIND_SPAWN, &records[1].1).unwrap();
        assert_eq!(spawn.limits, Some(limits.into()));
        // As logs written before spawns recorded their limits hold it.
        let legacy = AssignmentRecord {
            limits: None,
            ..spawn.clone()
        }
        .encode();
        // Read back by a node whose defaults changed since.
        let changed = ShardLimits {
            memory_limit_default: 8 << 20,
            compute_limit_default: 1_234_567,
            ..shard_limits()
        };
        let from_config = ProcessLimits {
            memory_bytes_max: 8 << 20,
            fuel_per_message: 1_234_567,
        };
        for (kind, payload, expected) in [
            (KIND_SPAWN, &records[1].1, limits),
            (KIND_ASSIGNMENT, &legacy, from_config),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let mut log = Log::open(dir.path(), LogConfig::default()).unwrap();
            log.append(KIND_MODULE, &records[0].1).unwrap();
            log.append(kind, payload).unwrap();
            let log = Rc::new(RefCell::new(log));
            let shard = Shard::recover(Signer::generate_ed25519(), runtime(4), log, changed.clone()).unwrap();
            assert_eq!(shard.processes[&pid].limits, expected, "kind {kind}");
        }
    }

    /// A child of a parent on shard 0, spawned by it from `module`, placed on shard 1 (of 2);
    /// with its `Spawned` notice.
    fn child_on_shard_1(module: ModuleId, name: &str) -> (DataItem, DataItem) {
        let signer = Signer::generate_ed25519();
        let parent = (0..=255u8)
            .map(|b| ProcessId([b; 32]))
            .find(|p| messenger::placement::shard_of(p, 2) == 0)
            .expect("a parent on shard 0");
        let origin = Origin {
            process: parent,
            module,
            nonce: Nonce(1),
            pushed_for: MessageId([7; 32]),
            cron: None,
        };
        let spawn = messenger::SpawnRequest {
            data: Vec::new(),
            tags: vec![Tag::new("Name", name)],
        };
        (0..64)
            .map(|index| {
                let child = messenger::spawn_process(&signer, &origin, index, &spawn, module, "node");
                let notice = messenger::spawned_notice(&signer, &origin, index, &spawn, ProcessId::from(child.id()));
                (child, notice)
            })
            .find(|(child, _)| messenger::placement::shard_of(&ProcessId::from(child.id()), 2) == 1)
            .expect("a child on shard 1")
    }

    #[test]
    fn a_spawn_from_another_shard_is_answered_with_its_notice_again_for_a_copy_or_a_refusal() {
        let mut f = fixture(4);
        f.shard.set_placement(1, 2);
        let counter = f.module("counter");
        let now = Timestamp(1_700_000_000_000);
        let last_out = |f: &Fixture| {
            f.shard.remote_out[0]
                .back()
                .cloned()
                .expect("an answer queued for shard 0")
        };

        let (child, notice) = child_on_shard_1(counter, "a");
        let pid = ProcessId::from(child.id());
        let spawn = Remote::Spawn {
            process: child.clone(),
            notice: Some(notice.clone()),
        };
        f.shard.deliver_remote(0, &spawn, now).unwrap();
        // The notice goes back once the child's record is durable.
        let at = f.shard.processes[&pid].entries[0].lsn;
        match last_out(&f) {
            (cause, Remote::Message(sent)) => assert_eq!((cause, sent.id()), (at, notice.id())),
            other => panic!("{other:?}"),
        }
        // A copy (the parent's shard restarted before the notice was durable there) is refused,
        // and answered with the notice again.
        f.shard.deliver_remote(0, &spawn, now).unwrap();
        assert_eq!(f.shard.counters().duplicates_refused, 1);
        assert_eq!(f.shard.remote_out[0].len(), 2);
        assert!(matches!(last_out(&f), (_, Remote::Message(sent)) if sent.id() == notice.id()));
        // A child whose module is not here is refused, and the parent's shard told so.
        let (stray, stray_notice) = child_on_shard_1(ModuleId([9; 32]), "b");
        let refused = Remote::Spawn {
            process: stray.clone(),
            notice: Some(stray_notice.clone()),
        };
        f.shard.deliver_remote(0, &refused, now).unwrap();
        assert!(!f.shard.processes.contains_key(&ProcessId::from(stray.id())));
        assert_eq!(f.shard.counters().undeliverable, 1);
        match last_out(&f) {
            (NO_CAUSE, Remote::SpawnRefused { notice }) => assert_eq!(notice, MessageId::from(stray_notice.id())),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_spawn_sent_to_another_shard_is_kept_until_its_answer_comes() {
        let mut f = fixture(4);
        f.shard.set_placement(1, 2);
        let counter = f.module("counter");
        let now = Timestamp(1_700_000_000_000);
        let (child, notice) = child_on_shard_1(counter, "a");
        let id = MessageId::from(notice.id());
        // (This shard plays the parent's, sending to shard 0.)
        f.shard.send_spawn(0, Lsn(1), &child, &notice);
        f.shard.send_spawn(0, Lsn(1), &child, &notice);
        assert_eq!(
            (f.shard.spawns_awaiting(), f.shard.remote_out[0].len()),
            (1, 1),
            "sent once"
        );
        let kept = f.shard.remote_out[0][0].1.pending(0);
        assert!(
            matches!(kept, Some(Pending::RemoteSpawnNotified { to: 0, .. })),
            "{kept:?}"
        );
        f.shard
            .deliver_remote(0, &Remote::SpawnRefused { notice: id }, now)
            .unwrap();
        assert_eq!((f.shard.spawns_awaiting(), f.shard.awaiting_bytes), (0, 0));
        // Sent again (a restart), answered by the notice: delivered or, as here (the parent is
        // not on this shard), dropped, it ends the wait either way.
        f.shard.send_spawn(0, NO_CAUSE, &child, &notice);
        assert_eq!(f.shard.spawns_awaiting(), 1);
        f.shard
            .deliver_remote(0, &Remote::Message(notice.clone()), now)
            .unwrap();
        assert_eq!((f.shard.spawns_awaiting(), f.shard.awaiting_bytes), (0, 0));
    }

    #[test]
    fn a_full_instance_pool_hibernates_the_least_recently_used_process() {
        let mut f = fixture(2);
        let counter = f.module("counter");
        let a = f.spawn(counter, "a").unwrap();
        let b = f.spawn(counter, "b").unwrap();
        // Once they are idle, a spawn puts the least recently used one to sleep.
        f.settle();
        for anchor in 0..3 {
            f.send(a, "Increment", anchor);
        }
        f.send(b, "Increment", 10);
        f.settle();
        let c = f.spawn(counter, "c").unwrap();
        f.settle();
        assert!(f.shard.counters().hibernations >= 1);
        assert_eq!(f.shard.instances_live(), 2);
        // Every process answers with its own state, asleep or not, and wakes when a message comes.
        assert_eq!(count(&mut f, a), "3");
        assert_eq!(count(&mut f, b), "1");
        assert_eq!(count(&mut f, c), "0");
        let hash_asleep = f.shard.memory_hash(a).unwrap().0;
        f.send(a, "Increment", 4);
        f.send(b, "Increment", 11);
        f.send(c, "Increment", 20);
        f.settle();
        assert!(f.shard.counters().wakes >= 2, "{:?}", f.shard.counters());
        assert_eq!(count(&mut f, a), "4");
        assert_eq!(count(&mut f, b), "2");
        assert_eq!(count(&mut f, c), "1");
        assert_ne!(f.shard.memory_hash(a).unwrap().0, hash_asleep);
        // A dry run's copy needs a slot of its own: with a pool of two, one process sleeps.
        assert!((1..=2).contains(&f.shard.instances_live()));
    }

    #[test]
    fn a_memory_budget_keeps_the_live_set_small_and_replays_match() {
        let mut f = fixture(64);
        f.shard.limits.live_memory_bytes_max = 3 * 128 * 1024; // about three counters
        let counter = f.module("counter");
        let pids: Vec<ProcessId> = (0..12).map(|n| f.spawn(counter, &format!("p{n}")).unwrap()).collect();
        for round in 0..4u8 {
            for (n, pid) in pids.iter().enumerate() {
                f.send(*pid, "Increment", round * 16 + n as u8);
            }
            f.settle();
        }
        assert!(f.shard.counters().hibernations > 10, "{:?}", f.shard.counters());
        assert!(f.shard.live_memory_bytes() as u64 <= 3 * 128 * 1024 + 2 * 128 * 1024);
        for pid in &pids {
            assert_eq!(count(&mut f, *pid), "4");
        }
    }

    #[test]
    fn results_beyond_the_memory_bound_are_read_back_from_the_file() {
        let mut f = fixture(8);
        f.results_file(Some(4096));
        let counter = f.module("counter");
        let pid = f.spawn(counter, "a").unwrap();
        let failed = f.send(pid, "Fail", 0);
        let sent: Vec<MessageId> = (1..=100).map(|anchor| f.send(pid, "Increment", anchor)).collect();
        f.settle();
        let counters = f.shard.counters();
        assert!(counters.results_filed > 30, "{counters:?}");
        assert!(f.shard.results_memory_bytes() <= 4096);
        let entries = &f.shard.processes[&pid].entries;
        assert!(
            matches!(entries[1].result, Kept::Filed(at) if at & FILED_ERROR != 0),
            "the oldest went first"
        );
        assert!(matches!(entries[101].result, Kept::Memory(_)), "the newest stay");
        assert_eq!(std::mem::size_of::<Kept>(), 16);
        // Every result is still served: the oldest read back from the file.
        let failed = f.shard.result(pid, failed).unwrap().expect("kept");
        assert!(failed.is_error);
        for (n, id) in sent.iter().enumerate() {
            let result = f.shard.result(pid, *id).unwrap().expect("kept");
            assert_eq!(result.json()["Output"], (n + 1).to_string());
        }
        assert_eq!(
            f.shard.stored_result(pid, 2, None).map(|r| r.json()["Output"].clone()),
            Some(serde_json::json!("1"))
        );
        assert!(f.shard.has_result(pid, 2) && !f.shard.has_result(pid, 102));
        // A record read back must be the entry's own: another message's is refused.
        let Kept::Filed(other) = f.shard.processes[&pid].entries[3].result else {
            panic!("nonce 3 is filed")
        };
        f.shard.processes.get_mut(&pid).unwrap().entries[2].result = Kept::Filed(other);
        assert!(matches!(f.shard.result(pid, sent[0]), Err(ShardError::Results(_))));
    }

    #[test]
    fn error_results_roll_back_and_later_messages_see_the_old_memory() {
        let mut f = fixture(8);
        let counter = f.module("counter");
        let pid = f.spawn(counter, "a").unwrap();
        for anchor in 0..3 {
            f.send(pid, "Increment", anchor);
        }
        let failed = f.send(pid, "Fail", 10);
        let after = f.send(pid, "Increment", 11);
        f.settle();
        assert!(f.shard.result(pid, failed).unwrap().unwrap().is_error);
        assert_eq!(f.shard.result(pid, after).unwrap().unwrap().json()["Output"], "4");
        assert_eq!(f.shard.counters().rollbacks, 1);
    }

    #[test]
    fn a_failed_message_leaves_memory_exactly_as_before_whether_undone_in_place_or_rebuilt() {
        for in_place in [true, false] {
            let mut f = fixture(8);
            if !in_place {
                f.shard.dirty = None;
            } else if f.shard.dirty.is_none() {
                eprintln!("no write tracking on this kernel: only the rebuild is tested");
                continue;
            }
            let counter = f.module("counter");
            let pid = f.spawn(counter, "a").unwrap();
            for anchor in 0..3 {
                f.send(pid, "Increment", anchor);
            }
            f.settle();
            // A small process is tracked once it has failed: the first failure rebuilds, the
            // second (if the kernel tracks writes) is undone in place.
            for (round, anchor) in [(0u64, 10u8), (1, 12)] {
                let before = f.shard.memory_hash(pid).unwrap().0;
                let failed = f.send(pid, "Fail", anchor);
                f.settle();
                assert!(f.shard.result(pid, failed).unwrap().unwrap().is_error);
                assert_eq!(
                    f.shard.memory_hash(pid).unwrap().0,
                    before,
                    "in place: {in_place}, round {round}"
                );
                let after = f.send(pid, "Increment", anchor + 1);
                f.settle();
                let want = (4 + round).to_string();
                assert_eq!(
                    f.shard.result(pid, after).unwrap().unwrap().json()["Output"],
                    want.as_str()
                );
            }
            let counters = f.shard.counters();
            assert_eq!(counters.rollbacks, 2);
            assert_eq!(counters.rollbacks_in_place, in_place as u64);
            if in_place {
                assert!(
                    (1..=4).contains(&counters.rollback_pages),
                    "the pages Fail wrote: {}",
                    counters.rollback_pages
                );
            }
        }
    }

    #[test]
    fn spawns_and_wakes_take_spare_instances_made_ahead_and_behave_the_same() {
        let mut f = fixture(8);
        f.shard.limits.live_instances_max = 8;
        let counter = f.module("counter");
        let first = f.spawn(counter, "a").unwrap();
        f.settle();
        assert!(f.shard.spare_count > 0, "spares made while below the pool share");
        let second = f.spawn(counter, "b").unwrap();
        f.settle();
        assert_eq!(f.shard.counters().spares_used, 1);
        for anchor in 0..3 {
            f.send(first, "Increment", anchor);
            f.send(second, "Increment", anchor + 10);
        }
        f.settle();
        assert_eq!(count(&mut f, first), "3");
        assert_eq!(count(&mut f, second), "3");
        // Asleep, then woken into a spare: the same state.
        let before = f.shard.memory_hash(first).unwrap().0;
        f.shard.hibernate(first);
        f.send(first, "Increment", 30);
        f.settle();
        assert!(f.shard.counters().spares_used >= 2, "{:?}", f.shard.counters());
        assert_eq!(count(&mut f, first), "4");
        assert_ne!(f.shard.memory_hash(first).unwrap().0, before);
        // A full pool takes the spares' slots back before putting a process to sleep.
        let live_before = f.shard.instances_live();
        assert!(f.shard.spare_count > 0);
        f.shard.make_room(None, 8 - live_before, false);
        assert_eq!(f.shard.spare_count, 0);
        assert_eq!(
            f.shard.instances_live(),
            live_before,
            "no process hibernated for spares"
        );
    }

    #[test]
    fn a_process_that_cannot_be_woken_is_left_out_and_the_others_go_on() {
        let mut f = fixture(8);
        let counter = f.module("counter");
        let broken = f.spawn(counter, "a").unwrap();
        let fine = f.spawn(counter, "b").unwrap();
        f.settle();
        f.shard.hibernate(broken);
        let process = f.shard.processes.get_mut(&broken).unwrap();
        process.dormant = Some(Dormant::Hibernated(Rc::new(Hibernated {
            memory_zstd: vec![0x5a; 64].into(),
            memory_pages: 2,
            globals: Box::default(),
        })));
        f.send(broken, "Increment", 1);
        f.send(fine, "Increment", 2);
        f.settle();
        assert_eq!(f.shard.counters().wake_failures, 1);
        assert_eq!(count(&mut f, fine), "1", "the shard went on");
    }

    #[test]
    fn timelines_are_dense_and_chained() {
        let mut f = fixture(8);
        let counter = f.module("counter");
        let pid = f.spawn(counter, "a").unwrap();
        for anchor in 0..5 {
            f.send(pid, "Increment", anchor);
        }
        let (page, more) = f.shard.timeline(pid, None, None, None, None, 100).unwrap();
        assert!(!more);
        assert_eq!(page.len(), 6);
        let mut previous: Option<(AssignmentId, HashChain)> = None;
        for (nonce, entry) in page.iter().enumerate() {
            assert_eq!(entry.nonce, Nonce(nonce as u64));
            let (assignment, _) = f.shard.assignment_at(entry.lsn).unwrap();
            assignment.verify().unwrap();
            let link: HashChain = assignment.tag("Hash-Chain").unwrap().parse().unwrap();
            let expected = match previous {
                None => chain::genesis_hash_chain(&pid),
                Some((id, link)) => chain::next_hash_chain(&id, &link),
            };
            assert_eq!(link, expected);
            previous = Some((AssignmentId::from(assignment.id()), link));
        }
        let (page, more) = f.shard.timeline(pid, Some(1), Some(3), None, None, 100).unwrap();
        assert_eq!(page.iter().map(|e| e.nonce.0).collect::<Vec<_>>(), vec![2, 3]);
        assert!(!more);
    }

    #[test]
    fn a_duplicate_message_is_refused() {
        let mut f = fixture(8);
        let counter = f.module("counter");
        let pid = f.spawn(counter, "a").unwrap();
        let tags = ao("Message", vec![Tag::new("Action", "Increment")]);
        let item = f.client.sign(Some(pid.0), Some([1; 32]), tags, Vec::new());
        let bytes = item.to_bytes();
        f.shard.admit_message(item.clone(), &bytes, Timestamp(1)).unwrap();
        let error = f.shard.admit_message(item, &bytes, Timestamp(2)).unwrap_err();
        assert!(matches!(error, ShardError::Duplicate(_)), "{error}");
    }

    fn send_tagged(f: &mut Fixture, pid: ProcessId, tags: Vec<Tag>, data: &[u8], anchor: u8) -> MessageId {
        let item = f
            .client
            .sign(Some(pid.0), Some([anchor; 32]), ao("Message", tags), data.to_vec());
        let bytes = item.to_bytes();
        f.shard
            .admit_message(item, &bytes, Timestamp(1_700_000_000_000))
            .unwrap()
            .0
    }

    fn output(f: &Fixture, pid: ProcessId, message: MessageId) -> serde_json::Value {
        f.shard.result(pid, message).unwrap().expect("evaluated").json()["Output"].clone()
    }

    #[test]
    fn assign_puts_a_held_message_into_another_timeline_with_exclude() {
        let mut f = fixture(8);
        let echo = f.module("echo");
        let a = f.spawn(echo, "a").unwrap();
        let b = f.spawn(echo, "b").unwrap();
        let message = send_tagged(&mut f, a, vec![Tag::new("Action", "Note")], b"payload", 1);
        let (id, nonce, _) = f
            .shard
            .admit_assignment(b, message, "Data,Anchor", Timestamp(1_700_000_000_005))
            .unwrap();
        assert_eq!(nonce, Nonce(1));
        f.settle();
        let seen_by_a = output(&f, a, message);
        let seen_by_b = output(&f, b, message);
        assert_eq!(seen_by_a["Data"], "payload");
        assert!(
            seen_by_b.get("Data").is_none() && seen_by_b.get("Anchor").is_none(),
            "{seen_by_b}"
        );
        assert_eq!(seen_by_b["Id"], message.to_string());
        assert_eq!(seen_by_b["Tags"], seen_by_a["Tags"]);
        assert_eq!(seen_by_b["Nonce"], 1);

        // The SU shows the assignment (with its Exclude tags) and no message, as AO's SU does.
        let (page, _) = f.shard.timeline(b, Some(0), Some(1), None, None, 1).unwrap();
        let (assignment, shown) = f.shard.assignment_at(page[0].lsn).unwrap();
        assert!(shown.is_none());
        assignment.verify().unwrap();
        assert_eq!(AssignmentId::from(assignment.id()), id);
        let excluded: Vec<&str> = assignment
            .tags
            .iter()
            .filter(|t| t.name == "Exclude")
            .map(|t| t.value.as_str())
            .collect();
        assert_eq!(excluded, ["Data", "Anchor"]);
        assert_eq!(assignment.tag("Message"), Some(message.to_string().as_str()));

        // Refusals: twice to the same process, back to its own target, unknown fields and messages.
        let now = Timestamp(1_700_000_000_006);
        for (pid, msg, exclude) in [(b, message, ""), (a, message, "")] {
            let error = f.shard.admit_assignment(pid, msg, exclude, now).unwrap_err();
            assert!(matches!(error, ShardError::Duplicate(_)), "{error}");
        }
        let error = f.shard.admit_assignment(b, message, "Id", now).unwrap_err();
        assert!(matches!(error, ShardError::BadRequest(_)), "{error}");
        let error = f.shard.admit_assignment(b, MessageId([7; 32]), "", now).unwrap_err();
        assert!(matches!(error, ShardError::NotFound(_)), "{error}");
    }

    #[test]
    fn a_results_assignments_are_delivered_once() {
        let mut f = fixture(8);
        let echo = f.module("echo");
        let a = f.spawn(echo, "a").unwrap();
        let b = f.spawn(echo, "b").unwrap();
        let tags = vec![Tag::new("Action", "Assign"), Tag::new("Assign-To", b.to_string())];
        let message = send_tagged(&mut f, a, tags, b"x", 1);
        f.settle();
        assert_eq!(f.shard.locate(b, message).unwrap(), Nonce(1));
        assert_eq!(output(&f, b, message)["Data"], "x");
        assert_eq!(f.shard.counters().delivered, 1);
        // Evaluated by b, the same message asks for the same assignment again: a duplicate.
        assert_eq!(f.shard.counters().duplicates_refused, 1);
        // An assignment to a process that does not exist is dropped, never an error.
        let tags = vec![
            Tag::new("Action", "Assign"),
            Tag::new("Assign-To", ProcessId([9; 32]).to_string()),
        ];
        send_tagged(&mut f, a, tags, b"y", 2);
        f.settle();
        assert_eq!(f.shard.counters().undeliverable, 1);
    }

    const T0: u64 = 1_700_000_000_000;

    fn spawn_cron(f: &mut Fixture, module: ModuleId, crons: &[(&str, &str)]) -> ProcessId {
        let mut extra = vec![
            Tag::new("Module", module.to_string()),
            Tag::new("Scheduler", f.shard.address().to_string()),
        ];
        for (interval, action) in crons {
            extra.push(Tag::new("Cron-Interval", *interval));
            extra.push(Tag::new("Cron-Tag-Action", *action));
        }
        let item = f.client.sign(None, None, ao("Process", extra), Vec::new());
        let bytes = item.to_bytes();
        f.shard.admit_process(item, &bytes, Timestamp(T0)).unwrap().0
    }

    fn send_at(f: &mut Fixture, pid: ProcessId, action: &str, anchor: u8, at: u64) -> MessageId {
        let item = f.client.sign(
            Some(pid.0),
            Some([anchor; 32]),
            ao("Message", vec![Tag::new("Action", action)]),
            Vec::new(),
        );
        let bytes = item.to_bytes();
        f.shard.admit_message(item, &bytes, Timestamp(at)).unwrap().0
    }

    fn count(f: &mut Fixture, pid: ProcessId) -> String {
        let item = f.client.sign(
            Some(pid.0),
            None,
            ao("Message", vec![Tag::new("Action", "Get")]),
            Vec::new(),
        );
        let result = f.shard.dry_run(pid, &item, Timestamp(T0), None, None).unwrap();
        result.json["Output"].as_str().unwrap().to_owned()
    }

    #[test]
    fn cron_ticks_run_between_messages_and_up_to_the_horizon() {
        let mut f = fixture(8);
        let counter = f.module("counter");
        let pid = spawn_cron(&mut f, counter, &[("1-second", "Increment")]);
        // Ticks at +1 s, +2 s, +3 s come before a message at +3.5 s.
        let read = send_at(&mut f, pid, "Get", 1, T0 + 3_500);
        f.settle();
        assert_eq!(output(&f, pid, read), "3");
        assert_eq!(f.shard.counters().cron_ticks, 3);
        // With no message waiting, ticks run only up to the horizon the shell sets.
        assert!(!f.shard.crons_settled(pid, Timestamp(T0 + 5_000)));
        f.shard.advance_crons(pid, Timestamp(T0 + 5_000)).unwrap();
        f.settle();
        assert!(f.shard.crons_settled(pid, Timestamp(T0 + 5_000)));
        assert_eq!(count(&mut f, pid), "5");
        // A message assigned now (even "earlier" by the clock) comes after every tick evaluated.
        send_at(&mut f, pid, "Get", 2, T0 + 4_200);
        let (page, _) = f.shard.timeline(pid, Some(1), None, None, None, 10).unwrap();
        assert_eq!(page[0].timestamp, Timestamp(T0 + 5_001));
        f.settle();
        assert_eq!(count(&mut f, pid), "5");
        // Every tick's result is kept (served by /cron once durable).
        let process = &f.shard.processes[&pid];
        let kept: Vec<u64> = process
            .cron
            .as_ref()
            .unwrap()
            .results
            .iter()
            .map(|r| r.tick.time - T0)
            .collect();
        assert_eq!(kept, [1_000, 2_000, 3_000, 4_000, 5_000]);
    }

    #[test]
    fn tick_results_beyond_the_memory_bound_are_read_back_from_the_file() {
        let mut f = fixture(8);
        f.results_file(Some(2048));
        let counter = f.module("counter");
        let pid = spawn_cron(&mut f, counter, &[("1-second", "Increment")]);
        f.shard.advance_crons(pid, Timestamp(T0 + 40_000)).unwrap();
        f.settle();
        assert_eq!(f.shard.counters().cron_ticks, 40);
        assert!(f.shard.counters().results_filed > 20, "{:?}", f.shard.counters());
        assert!(f.shard.results_memory_bytes() <= 2048);
        let results = &f.shard.processes[&pid].cron.as_ref().unwrap().results;
        assert!(
            matches!(results[0].result, Kept::Filed(_)),
            "the oldest tick went first"
        );
        assert!(matches!(results[39].result, Kept::Memory(_)), "the newest stay");
        // Each tick's result is served, the oldest read back and checked to be that tick's.
        for n in 1..=40u64 {
            let tick = Tick {
                time: T0 + n * 1000,
                cron: 0,
            };
            let result = f.shard.stored_result(pid, 1, Some(tick)).expect("kept");
            assert_eq!(result.json()["Output"], n.to_string(), "tick {n}");
        }
    }

    #[test]
    fn ticks_that_leave_the_latest_results_give_their_memory_back() {
        let mut f = fixture(8);
        f.results_file(None);
        let counter = f.module("counter");
        let pid = spawn_cron(&mut f, counter, &[("1-second", "Increment")]);
        let ticks = 2 * CRON_RESULTS_MAX as u64 + 500;
        f.shard.advance_crons(pid, Timestamp(T0 + ticks * 1000)).unwrap();
        f.settle();
        assert_eq!(f.shard.counters().cron_ticks, ticks);
        assert_eq!(f.shard.counters().results_filed, 0, "all within the default bound");
        // Only the latest results count, and the queue holds little beyond them.
        let process = &f.shard.processes[&pid];
        let results = &process.cron.as_ref().unwrap().results;
        let counted: usize = results.iter().map(|r| r.counted as usize).sum();
        let Kept::Memory(spawned) = &process.entries[0].result else {
            panic!("the spawn's result is in memory")
        };
        assert_eq!(results.len(), CRON_RESULTS_MAX);
        assert_eq!(
            f.shard.results_memory_bytes(),
            counted + spawned.text().len() + RESULT_OVERHEAD_BYTES
        );
        assert_eq!(f.shard.kept_live, CRON_RESULTS_MAX + 1);
        assert!(
            f.shard.kept.len() <= 2 * CRON_RESULTS_MAX + 1024,
            "{}",
            f.shard.kept.len()
        );
    }

    #[test]
    fn ticks_stop_at_the_lease_and_messages_are_stamped_after_the_floor() {
        let mut f = fixture(8);
        let counter = f.module("counter");
        let pid = spawn_cron(&mut f, counter, &[("1-second", "Increment")]);
        f.shard.extend_cron_lease(T0 + 2_500);
        f.shard.advance_crons(pid, Timestamp(T0 + 5_000)).unwrap();
        f.settle();
        assert_eq!(count(&mut f, pid), "2", "no tick past the saved lease");
        // The previous run's lease: a message is stamped after it, whatever the clock says.
        f.shard.set_cron_floor(T0 + 60_000);
        send_at(&mut f, pid, "Get", 1, T0 + 3_000);
        let (page, _) = f.shard.timeline(pid, Some(0), None, None, None, 10).unwrap();
        assert_eq!(page[0].timestamp, Timestamp(T0 + 60_001));
    }

    #[test]
    fn failing_ticks_and_messages_roll_back_around_the_ticks() {
        let mut f = fixture(8);
        let counter = f.module("counter");
        // Every second +1; every two seconds a tick that fails (adds 1000, then Error).
        let pid = spawn_cron(&mut f, counter, &[("1-second", "Increment"), ("2-seconds", "Fail")]);
        f.shard.advance_crons(pid, Timestamp(T0 + 6_000)).unwrap();
        f.settle();
        assert_eq!(count(&mut f, pid), "6", "the failing ticks are rolled back");
        let failed = send_at(&mut f, pid, "Fail", 1, T0 + 6_500);
        let after = send_at(&mut f, pid, "Increment", 2, T0 + 9_500);
        f.settle();
        assert!(f.shard.result(pid, failed).unwrap().unwrap().is_error);
        // Ticks at 7, 8, 9 s (+3) and the message (+1): the failed message and the failing
        // ticks at 8 s are rolled back each time, replaying the successful ticks in between.
        assert_eq!(output(&f, pid, after), "10");
        assert_eq!(f.shard.counters().rollbacks, 5);
    }

    #[test]
    fn a_process_with_a_bad_cron_is_refused_at_spawn() {
        let mut f = fixture(8);
        let counter = f.module("counter");
        let extra = vec![
            Tag::new("Module", counter.to_string()),
            Tag::new("Scheduler", f.shard.address().to_string()),
            Tag::new("Cron-Interval", "5-fortnights"),
        ];
        let item = f.client.sign(None, None, ao("Process", extra), Vec::new());
        let bytes = item.to_bytes();
        let error = f.shard.admit_process(item, &bytes, Timestamp(T0)).unwrap_err();
        assert!(
            matches!(error, ShardError::BadRequest(_)) && error.to_string().contains("Cron-Interval"),
            "{error}"
        );
    }

    #[test]
    fn memory_limits_parse() {
        for (text, bytes) in [
            ("512-mb", Some(512 << 20)),
            ("1-gb", Some(1 << 30)),
            ("64-kb", Some(65536)),
            ("100", Some(100)),
        ] {
            assert_eq!(parse_memory_limit(text), bytes, "{text}");
        }
        for text in ["", "mb", "5-tb", "-1-mb", "99999999999999999999-gb"] {
            assert_eq!(parse_memory_limit(text), None, "{text}");
        }
    }
}
