//! The glommio shell around the shards: one executor thread per shard (pinned to a core when
//! asked), each opening its own log, recovering, and running its group committer, evaluation
//! pump, cron driver, uploads, HTTP listener (SO_REUSEPORT: every shard accepts on the same port)
//! and its ends of the mesh (`crate::mesh`) to the other shards.
//!
//! This is where I/O and time happen; decisions live in `shard`. Shard 0 keeps its files in the
//! data dir itself (`log/`, `cron-lease`, `monitors`, `upload/`), shard `i > 0` in
//! `shards/<i>/`; the node key and compiled modules are shared, and the file `shards` records the
//! shard count, which placement depends on.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use futures_channel::{mpsc, oneshot};
use futures_lite::StreamExt;
use scheduler::data_item::DATA_ITEM_BYTES_MAX;
use scheduler::log::{Committer, LogConfig, LogError};
use scheduler::signer::Signer;
use scheduler::{Address, MessageId, ModuleId, Nonce, ProcessId, Timestamp};

use crate::compute::{ComputeConfig, Runtime};
use crate::mesh::Asked;
use crate::shard::{Evaluated, Shard, ShardError, ShardLimits};

/// Everything a node needs to start.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// Holds `log/` (the segments) and `node-key.json` (the scheduler's Ed25519 key).
    pub data_dir: PathBuf,
    /// Address of the HTTP listener; port 0 picks a free port (the started node reports it).
    pub listen: SocketAddr,
    /// Core shard 0's executor is pinned to (shard `i` to `cpu + i`); `None` leaves placement to
    /// the kernel.
    pub cpu: Option<usize>,
    /// Shards (executor threads, each with its own log and processes). Fixed for the life of a
    /// data dir: placement depends on it.
    pub shards: usize,
    /// How long an idle shard spins before it parks (µs); 0 parks at once; `None` (the
    /// default, `auto`): [`SPIN_WHEN_PINNED_US`] when the shards are pinned (`cpu` set), 0
    /// otherwise (see [`NodeConfig::spin_before_park`]). Parking is dear: glommio issues a
    /// process-wide memory barrier (IPIs) before each park, and a parked shard takes tens of
    /// µs to wake. On two pinned cores with nothing else running, a request handed to another
    /// shard and answered took 48–56 µs and 77–90 µs of the shards' CPU parked at once, 25–27
    /// µs and 44–51 µs spinning 50 µs first, spin included (`cargo bench --bench mesh`). On
    /// the 16-core machine, shards pinned and the load generator on other cores, 200 µs took
    /// the `many` scenario over HTTP from 6.7–7.2 to 7.8–8.6 thousand messages/s on one shard
    /// and from 1.69× to 1.87–1.94× on two. But where other work shares the cores, spinning
    /// takes its time: over HTTP on a 2-core machine, load generator beside the node, 50 µs
    /// cost two unpinned shards 20 % of their peak. Pinning says the cores are the node's, so
    /// only then does the node spin unless told.
    pub spin_before_park_us: Option<u64>,
    /// When set, every timestamp the node gives is this (ms since the epoch) instead of the wall
    /// clock: for reproducibility tests that compare whole timelines between runs.
    pub fixed_clock_ms: Option<u64>,
    pub log: LogConfig,
    /// zstd level at which sealed log segments are packed, on the blocking pool, as they are
    /// sealed (reads unpack them transparently); 0 keeps them plain.
    pub log_zstd_level: u32,
    /// Write log batches with O_DIRECT (`scheduler::log::Committer::set_direct_io`).
    pub log_direct_io: bool,
    /// Each shard saves its index (see `crate::index`) after this many records appended (or 60 s
    /// after anything was, and at a clean stop).
    pub index_every_records: u64,
    pub compute: ComputeConfig,
    pub limits: ShardLimits,
    pub http: HttpLimits,
    pub ao: AoSettings,
    pub checkpoint: CheckpointConfig,
}

/// When each shard writes a checkpoint (see `crate::checkpoint`): whichever of the three comes
/// first, and at a clean stop. All three 0: no checkpoints (and no results file); a restart
/// replays every log from genesis.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointConfig {
    /// After this many evaluations (messages and cron ticks); 0: not by count.
    pub every_messages: u64,
    /// After this much fuel used; 0: not by fuel.
    pub every_gas: u64,
    /// After this many seconds (if anything was evaluated); 0: not by time.
    pub every_seconds: u64,
    /// Ignore (and start over) the checkpoints: replay every process from genesis once.
    pub from_genesis: bool,
}

impl CheckpointConfig {
    pub fn enabled(&self) -> bool {
        self.every_messages > 0 || self.every_gas > 0 || self.every_seconds > 0
    }
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            every_messages: 100_000,
            every_gas: 1_000_000_000_000,
            every_seconds: 60,
            from_genesis: false,
        }
    }
}

/// How the node meets the rest of AO: trusted peers, and the Arweave services it calls.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AoSettings {
    /// Nodes whose items may carry the messenger's tags (`From-Process`, `Forwarded-By`, …).
    pub trusted_nodes: Vec<Address>,
    /// The URL published in this node's `Scheduler-Location` item; `None` publishes nothing.
    pub public_url: Option<String>,
    /// `Time-To-Live` of the `Scheduler-Location` item, in ms.
    pub scheduler_location_ttl_ms: u64,
    /// The bundler uploads go to (`POST {url}/tx/arweave`); `None` uploads nothing.
    pub bundler_url: Option<String>,
    /// Uploads in flight at once.
    pub upload_connections: usize,
    /// The gateway modules are fetched from (`/raw/{id}`, GraphQL); `None` fetches nothing.
    pub gateway_url: Option<String>,
}

impl Default for AoSettings {
    fn default() -> Self {
        AoSettings {
            trusted_nodes: Vec::new(),
            public_url: None,
            scheduler_location_ttl_ms: 86_400_000,
            bundler_url: None,
            upload_connections: 16,
            gateway_url: None,
        }
    }
}

/// Bounds of the HTTP front.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// Most open client connections; a connection beyond it is closed at once (clients retry).
    pub connections_max: usize,
    /// Largest data item `POST /` accepts; a larger body is answered 413 without being read
    /// whole. At most [`DATA_ITEM_BYTES_MAX`], the ANS-104 bound.
    pub body_bytes_max: usize,
    /// Most `POST /` requests a shard's listener holds at once; more wait in line for one to
    /// end, so that overload costs a bounded wait or a refusal, not memory and latency for
    /// everyone. See [`crate::http::WriteSlots`].
    pub writes_in_flight_max: usize,
    /// Most `POST /` requests waiting in line for one of those; a request beyond them is held
    /// for `write_wait_ms`, then answered 503 with Retry-After.
    pub writes_waiting_max: usize,
    /// Longest wait in line, and how long a request beyond the line is held before its 503
    /// (0: refused at once, the line unused).
    pub write_wait_ms: u64,
    /// Longest a connection may wait idle for its next request, take to send a request's
    /// head, or go without a byte of a request's body, before its shard closes it (a stalled
    /// body is answered 408 first); 0: never. What keeps clients that open connections and
    /// send nothing, or trickle, from holding `connections_max` slots for good.
    pub idle_timeout_ms: u64,
    /// When not 0, shard `i` also listens on this port + `i` (same address as `listen`): a
    /// client that computes placement (`messenger::placement`) reaches the shard that owns its
    /// process directly, and no request is handed across shards.
    pub shard_ports_base: u16,
}

impl HttpLimits {
    /// `idle_timeout_ms` as a duration; `None` for never.
    pub fn idle_timeout(&self) -> Option<std::time::Duration> {
        (self.idle_timeout_ms > 0).then(|| std::time::Duration::from_millis(self.idle_timeout_ms))
    }
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            connections_max: CONNECTIONS_MAX,
            body_bytes_max: DATA_ITEM_BYTES_MAX,
            writes_in_flight_max: 1024,
            writes_waiting_max: 1024,
            write_wait_ms: 1000,
            idle_timeout_ms: 30_000,
            shard_ports_base: 0,
        }
    }
}

/// The spin of pinned shards unless `shards_spin_before_park_us` says otherwise: long enough
/// to outlast the gaps between a loaded shard's turns (a request's syscalls, a sync), so a
/// busy shard seldom parks.
pub const SPIN_WHEN_PINNED_US: u64 = 200;

impl NodeConfig {
    /// How long an idle shard spins before it parks, in µs: the configured value, or for
    /// `auto` [`SPIN_WHEN_PINNED_US`] with shards pinned to cores and 0 without.
    pub fn spin_before_park(&self) -> u64 {
        self.spin_before_park_us
            .unwrap_or(if self.cpu.is_some() { SPIN_WHEN_PINNED_US } else { 0 })
    }

    /// Defaults for a node on `data_dir` listening on `listen`.
    pub fn new(data_dir: impl Into<PathBuf>, listen: SocketAddr) -> NodeConfig {
        NodeConfig {
            data_dir: data_dir.into(),
            listen,
            cpu: None,
            shards: default_shards(),
            spin_before_park_us: None,
            fixed_clock_ms: None,
            log: LogConfig {
                // A record holds a whole data item (up to DATA_ITEM_BYTES_MAX) plus its
                // assignment header, and a batch must be able to carry the largest record.
                batch_bytes_max: 16 << 20,
                pending_bytes_max: 64 << 20,
                ..LogConfig::default()
            },
            log_zstd_level: 0,
            log_direct_io: false,
            index_every_records: 1 << 18,
            compute: ComputeConfig::default(),
            limits: ShardLimits::default(),
            http: HttpLimits::default(),
            ao: AoSettings::default(),
            checkpoint: CheckpointConfig::default(),
        }
    }
}

/// The default shard count: the cores this process may run on.
pub fn default_shards() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The file recording a data dir's shard count.
const SHARDS_FILE: &str = "shard-count";

/// Where shard `index` keeps its files.
pub fn shard_dir(data_dir: &Path, index: usize) -> PathBuf {
    match index {
        0 => data_dir.to_owned(),
        _ => data_dir.join("shards").join(index.to_string()),
    }
}

/// The shard count a data dir was written with (1 for a data dir from before shards existed,
/// or a new one).
pub fn recorded_shards(data_dir: &Path) -> Result<Option<usize>, StartError> {
    let path = data_dir.join(SHARDS_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => text
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|&n| n >= 1)
            .map(Some)
            .ok_or_else(|| StartError::DataDir {
                path,
                source: std::io::Error::other(format!("{:?} is not a shard count", text.trim())),
            }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            // A data dir that already has a log was written by a single shard.
            Ok(data_dir.join("log").exists().then_some(1))
        }
        Err(source) => Err(StartError::DataDir { path, source }),
    }
}

/// Checks `shards` against what the data dir records, and records it in a new data dir.
fn check_shards(data_dir: &Path, shards: usize) -> Result<(), StartError> {
    match recorded_shards(data_dir)? {
        Some(recorded) if recorded != shards => Err(StartError::Config(format!(
            "the data dir {} was written by a node with {recorded} shards; start it with shards = {recorded} (placement of processes depends on the count)",
            data_dir.display()
        ))),
        Some(_) => Ok(()),
        None => {
            let path = data_dir.join(SHARDS_FILE);
            let temporary = data_dir.join(format!("{SHARDS_FILE}.new"));
            let write = || -> std::io::Result<()> {
                let mut file = std::fs::File::create(&temporary)?;
                std::io::Write::write_all(&mut file, format!("{shards}\n").as_bytes())?;
                file.sync_all()?;
                std::fs::rename(&temporary, &path)?;
                std::fs::File::open(data_dir)?.sync_all()
            };
            write().map_err(|source| StartError::DataDir { path, source })
        }
    }
}

/// Most messages one pump turn evaluates before it yields to the executor, so that HTTP
/// handlers and the committer get their turn under load.
const PUMP_EVALUATIONS_MAX: usize = 64;

/// Longest a pump turn goes on evaluating before it yields (it finishes the evaluation it is in).
const PUMP_TURN: std::time::Duration = std::time::Duration::from_micros(500);

/// How soon the executor must get back to the group committer once it has work (µs); a
/// fraction of an fdatasync, so that acknowledgement latency stays close to the disk's.
const COMMIT_LATENCY_US: u64 = 100;

/// The CPUs this thread may run on (`sched_getaffinity`); empty if they cannot be read.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: `set` is a plain bit set the call fills within its size; the macro reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&cpu| libc::CPU_ISSET(cpu, &set))
            .collect()
    }
}

/// A shard's placement when no `cpu` is set: fenced to the CPUs the node may run on, which
/// lets it run where an unbound one would. Not `Unbound`, because glommio drops
/// `spin_before_park` for an unbound executor, which would then park at once.
fn fenced_to_allowed_cpus() -> glommio::Placement {
    let allowed = allowed_cpus();
    match glommio::CpuSet::online() {
        Ok(online) => {
            let set = online.filter(|location| allowed.contains(&location.cpu));
            if set.is_empty() {
                glommio::Placement::Unbound
            } else {
                glommio::Placement::Fenced(set)
            }
        }
        Err(_) => glommio::Placement::Unbound,
    }
}

/// Default of [`HttpLimits::connections_max`]: a connection beyond it is closed at once
/// (clients see a reset and retry), so that waiting requests cannot grow without bound.
pub const CONNECTIONS_MAX: usize = 4096;

/// The submission depth of a shard's io_uring rings; each ring's completion queue holds twice as
/// many entries. A completion queue must hold every operation that can be in flight at once:
/// when it overflows, the kernel parks completions on a side list that only some calls flush,
/// and a shard can then sleep with connections waiting on it (a 1-shard node driven by 1024
/// connections stopped for good within seconds on the default depth of 128; a slower leak of
/// the same kind stalled runs for ~60 s at 256 connections). A shard has at most two socket
/// operations in flight per connection (a read and a write), client or outbound, plus its log
/// and checkpoint I/O, its listener and the rings' own links, which `RING_DEPTH_SPARE` covers.
pub fn ring_depth(config: &NodeConfig) -> usize {
    (config.http.connections_max + config.ao.upload_connections + RING_DEPTH_SPARE).min(RING_DEPTH_MAX)
}

/// Submission entries beyond the sockets' (see [`ring_depth`]): room in the completion queue
/// for 2048 other operations (log, checkpoints, listener, gateway fetches, the rings' links).
const RING_DEPTH_SPARE: usize = 1024;

/// io_uring's largest submission queue (`IORING_MAX_ENTRIES`); `http.connections_max` is
/// bounded so that [`ring_depth`] stays under it.
pub const RING_DEPTH_MAX: usize = 32768;

/// A listener on `addr` that no other socket shares (no SO_REUSEPORT, unlike the node's port):
/// a shard's own port, which must fail to bind rather than split its connections with another
/// process that holds it.
fn bind_exclusive(addr: SocketAddr) -> std::io::Result<glommio::net::TcpListener> {
    use std::os::fd::{FromRawFd, IntoRawFd};
    let listener = std::net::TcpListener::bind(addr)?;
    let fd = listener.into_raw_fd();
    // The backlog glommio gives the node's port (the standard library's is smaller).
    // SAFETY: `fd` is the listening socket just bound, owned here.
    if unsafe { libc::listen(fd, 1024) } != 0 {
        let error = std::io::Error::last_os_error();
        // SAFETY: `fd` is still owned here; closing it once.
        unsafe { libc::close(fd) };
        return Err(error);
    }
    // SAFETY: `fd` is a bound, listening TCP socket whose ownership passes to glommio.
    Ok(unsafe { glommio::net::TcpListener::from_raw_fd(fd) })
}

/// The ports of the shards' own listeners (`http.shard_ports_base` + shard), if configured.
pub fn shard_ports(config: &NodeConfig) -> Option<std::ops::RangeInclusive<usize>> {
    let base = config.http.shard_ports_base as usize;
    (base != 0).then(|| base..=base + config.shards.max(1) - 1)
}

/// Why a shard's thread ends before its task runs: its executor could not be made.
const NO_EXECUTOR: &str = "its executor could not start (on kernels before 5.12 io_uring rings count against the \
     locked-memory limit: raise LimitMEMLOCK / ulimit -l, or lower http.connections_max, from which the rings are \
     sized)";

/// Files a node holds besides its sockets: segments, index and checkpoint files, rings.
const OPEN_FILES_SPARE: usize = 512;

/// Raises this process's soft limit on open files to its hard limit (the kernel's default soft
/// limit, 1024, is below one shard's default connections); returns the soft limit now.
pub fn raise_open_files_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a plain struct that the calls fill or read.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 0;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    limit.rlim_cur
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("data dir {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error("node key {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("log: {0}")]
    Log(#[from] LogError),
    #[error("recovery: {0}")]
    Recovery(#[from] ShardError),
    #[error("compute: {0}")]
    Compute(String),
    /// A setting that passed its own check but cannot be used (an unusable service URL).
    #[error("configuration: {0}")]
    Config(String),
    #[error("listener {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("executor: {0}")]
    Executor(String),
}

/// Requests waiting for the evaluation of (process, nonce).
type ResultWaiters = HashMap<(ProcessId, Nonce), Vec<oneshot::Sender<()>>>;

/// State shared by the tasks of the node's executor (single-threaded: `Rc`, `RefCell`).
pub struct NodeState {
    pub shard: RefCell<Shard>,
    pub committer: Rc<Committer>,
    address: Address,
    /// Never cloned: `try_send` on one sender of a channel of capacity 1 holds at most two
    /// signals, whereas each clone would get a guaranteed slot of its own.
    wake: RefCell<mpsc::Sender<()>>,
    waiters: RefCell<ResultWaiters>,
    failure: RefCell<Option<String>>,
    pub http: HttpLimits,
    /// Trusted peers and the Arweave services the node calls.
    pub ao: AoSettings,
    /// Held while the monitored set is saved.
    monitors_saving: glommio::sync::Semaphore,
    /// Held while the cron lease is saved.
    lease_saving: glommio::sync::Semaphore,
    data_dir: PathBuf,
    pub metrics: crate::metrics::Metrics,
    pub open_connections: std::cell::Cell<usize>,
    /// `POST /` requests this shard's listener holds or that wait to (see
    /// [`HttpLimits::writes_in_flight_max`]).
    pub writes: crate::http::WriteSlots,
    /// While the log is being read back at start: (bytes read, bytes in the log). `None` once
    /// recovered.
    recovering: std::cell::Cell<Option<(u64, u64)>>,
    /// The pump's wake-up receiver until recovery starts the pump.
    pump_wake: RefCell<Option<mpsc::Receiver<()>>>,
    /// When the node started, and whether it is still replaying recovered messages.
    started: Instant,
    catching_up: std::cell::Cell<bool>,
    /// The ends to the other shards.
    pub mesh: Rc<crate::mesh::Mesh>,
    /// Per destination shard: wakes the task that sends that shard its deliveries.
    forwarders: RefCell<Vec<Option<mpsc::Sender<()>>>>,
    checkpoint_config: CheckpointConfig,
    /// The checkpoints file once recovery opened it (`None` with checkpoints off).
    checkpoints: RefCell<Option<crate::checkpoint_files::Files>>,
    /// Held while a checkpoint is written (one at a time).
    checkpointing: glommio::sync::Semaphore,
    /// The saved index read at open, until recovery loads it (the log segments it vouched for
    /// are checked once the node serves).
    index_loaded: RefCell<Option<crate::index::Loaded>>,
    /// The index files once recovery opened them.
    index_files: RefCell<Option<crate::index_files::IndexFiles>>,
    /// Held while the index is saved (one save at a time).
    index_saving: glommio::sync::Semaphore,
    index_every_records: u64,
}

impl NodeState {
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn checkpoint_config(&self) -> &CheckpointConfig {
        &self.checkpoint_config
    }

    pub fn checkpoints(&self) -> &RefCell<Option<crate::checkpoint_files::Files>> {
        &self.checkpoints
    }

    pub fn checkpointing(&self) -> &glommio::sync::Semaphore {
        &self.checkpointing
    }

    pub fn index_files(&self) -> &RefCell<Option<crate::index_files::IndexFiles>> {
        &self.index_files
    }

    pub fn index_saving(&self) -> &glommio::sync::Semaphore {
        &self.index_saving
    }

    /// Records appended after which the index is saved.
    pub fn index_every_records(&self) -> u64 {
        self.index_every_records
    }

    /// Stops writes for `reason` (ingress answers 503, `/ready` names it).
    pub fn fail(&self, reason: String) {
        let mut failure = self.failure.borrow_mut();
        if failure.is_none() {
            *failure = Some(reason);
        }
    }

    pub fn address(&self) -> Address {
        self.address
    }

    /// Why the node stopped accepting writes, if it did.
    pub fn failure(&self) -> Option<String> {
        if let Some(reason) = self.failure.borrow().as_ref() {
            return Some(reason.clone());
        }
        self.shard.borrow().log_poisoned()
    }

    /// `Some((bytes read, bytes in the log))` while the log is read back at start; requests
    /// other than `/health`, `/ready` and `/metrics` are then answered 503.
    pub fn recovering(&self) -> Option<(u64, u64)> {
        self.recovering.get()
    }

    /// Why the node is not ready, if it is not: still reading its log, still replaying the
    /// messages it read back, or no longer accepting writes.
    pub fn not_ready(&self) -> Option<String> {
        if let Some((read, total)) = self.recovering() {
            return Some(format!("recovering: read {read} of {total} bytes of the log"));
        }
        if let Some(reason) = self.failure() {
            return Some(format!("not accepting writes: {reason}"));
        }
        if let Some(reason) = self.shard.borrow().log_full() {
            return Some(format!("disk full, writes refused until space is freed: {reason}"));
        }
        let pending = self.shard.borrow().recovery_pending();
        (pending > 0).then(|| format!("replaying: {pending} recovered messages still to evaluate"))
    }

    /// Tells the pump there may be work; coalesces (the channel holds at most one signal).
    pub fn wake_pump(&self) {
        let _ = self.wake.borrow_mut().try_send(());
    }

    /// Wakes the senders of the shards that have deliveries waiting.
    fn wake_forwarders(&self) {
        let shard = self.shard.borrow();
        if shard.remote_out_len() == 0 {
            return;
        }
        for (to, wake) in self.forwarders.borrow_mut().iter_mut().enumerate() {
            if let Some(wake) = wake {
                if shard.has_remote(to) {
                    let _ = wake.try_send(());
                }
            }
        }
    }

    /// Waits until the message at `nonce` of `pid` is evaluated and returns its result.
    pub async fn wait_result(
        &self,
        pid: ProcessId,
        message: MessageId,
        nonce: Nonce,
    ) -> Result<Rc<crate::abi::StoredResult>, ShardError> {
        loop {
            if let Some(result) = self.shard.borrow().result(pid, message)? {
                return Ok(result);
            }
            if let Some(reason) = self.failure() {
                return Err(ShardError::Busy(format!("evaluation stopped: {reason}")));
            }
            let (sender, receiver) = oneshot::channel();
            self.waiters.borrow_mut().entry((pid, nonce)).or_default().push(sender);
            // A dropped sender (the pump stopped) also wakes us; the loop then re-checks.
            let _ = receiver.await;
        }
    }

    fn notify(&self, evaluated: &[Evaluated]) {
        let mut waiters = self.waiters.borrow_mut();
        for done in evaluated.iter().filter(|done| done.tick.is_none()) {
            if let Some(senders) = waiters.remove(&(done.process, done.nonce)) {
                for sender in senders {
                    let _ = sender.send(());
                }
            }
        }
    }
}

/// The fixed clock, in ms (0: the wall clock); see [`NodeConfig::fixed_clock_ms`].
static FIXED_CLOCK_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The wall clock in ms since the Unix epoch (or the fixed clock, when one is configured); only
/// the shell reads it.
pub fn now() -> Timestamp {
    let fixed = FIXED_CLOCK_MS.load(std::sync::atomic::Ordering::Relaxed);
    if fixed != 0 {
        return Timestamp(fixed);
    }
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    Timestamp(ms)
}

/// Loads the node key from `path`, creating one on first start.
pub fn load_or_create_key(path: &Path) -> Result<Signer, StartError> {
    let key_error = |reason: String| StartError::Key {
        path: path.to_owned(),
        reason,
    };
    if path.exists() {
        let signer = Signer::load(path).map_err(|e| key_error(e.to_string()))?;
        // Exactly-once delivery rests on deterministic outbox ids, hence on a deterministic
        // signature scheme; RSA-PSS is randomized (and 4 ms a signature).
        match signer {
            Signer::Ed25519(_) => Ok(signer),
            Signer::Rsa(_) => Err(key_error("the node key must be Ed25519: RSA-PSS signatures are randomized, so replayed outbox messages would get new ids and be delivered twice".into())),
        }
    } else {
        let signer = Signer::generate_ed25519();
        signer.save(path).map_err(|e| key_error(e.to_string()))?;
        Ok(signer)
    }
}

async fn pump(state: Rc<NodeState>, mut wake: mpsc::Receiver<()>) {
    let mut evaluated = Vec::with_capacity(PUMP_EVALUATIONS_MAX);
    loop {
        let idle = {
            let shard = state.shard.borrow();
            !shard.has_work() || shard.waits_for_other_shards()
        };
        if idle {
            if wake.next().await.is_none() {
                return;
            }
            continue;
        }
        evaluated.clear();
        // One evaluation at a time, up to PUMP_EVALUATIONS_MAX or PUMP_TURN: a handler is not
        // preemptible, so this bounds how long HTTP and the committer wait behind the pump to
        // about one handler's run time.
        let turn = Instant::now();
        let mut outcome = Ok(());
        for _ in 0..PUMP_EVALUATIONS_MAX {
            let mut shard = state.shard.borrow_mut();
            outcome = shard.pump(now(), 1, &mut evaluated);
            if outcome.is_err() || !shard.has_work() || turn.elapsed() >= PUMP_TURN {
                break;
            }
        }
        state.notify(&evaluated);
        state.wake_forwarders();
        state.metrics.evaluated(&evaluated);
        for e in &evaluated {
            tracing::debug!(process = %e.process, nonce = e.nonce.0, us = e.duration.as_micros() as u64, gas = e.gas_used, "evaluated");
        }
        if state.catching_up.get() && state.shard.borrow().recovery_pending() == 0 {
            state.catching_up.set(false);
            tracing::info!(
                since_start_ms = state.started.elapsed().as_millis() as u64,
                "replayed every recovered message: ready"
            );
        }
        match outcome {
            Ok(()) => {}
            Err(ShardError::Compute(crate::compute::ComputeError::PoolExhausted { .. })) => {
                // Every instance is busy (dry runs, other shards): the process waits its turn.
                glommio::timer::sleep(std::time::Duration::from_millis(5)).await;
            }
            Err(ShardError::WaitsForMessage(message)) => {
                // Deliveries wait (queued) for a message another shard holds.
                let item = message_from_other_shards(&state, message).await;
                state.shard.borrow_mut().message_fetched(message, item);
            }
            Err(ShardError::Log(LogError::Full(_))) => {
                // Deliveries wait (queued, nothing lost) until the committer finds space.
                glommio::timer::sleep(std::time::Duration::from_secs(1)).await;
            }
            Err(ShardError::Log(LogError::Backpressure { .. })) => {
                // The pending batch is full: wait for the committer to drain it, then go on.
                // Wait for the last appended record (at end - 1: backpressure means there is one).
                let end = state.shard.borrow().log_end();
                let last = scheduler::log::Lsn(end.0.saturating_sub(1));
                if let Err(error) = state.committer.wait_durable(last).await {
                    tracing::error!(%error, "log failed; evaluation stops");
                    *state.failure.borrow_mut() = Some(error.to_string());
                    return;
                }
            }
            Err(error) => {
                tracing::error!(%error, "evaluation stops");
                *state.failure.borrow_mut() = Some(error.to_string());
                state.waiters.borrow_mut().clear();
                return;
            }
        }
        // Let the other queues (HTTP, the committer) and the reactor run between turns.
        glommio::executor().yield_task_queue_now().await;
    }
}

/// A node running on its executor threads, one per shard.
pub struct RunningNode {
    /// The address the listeners are bound to (every shard accepts on it).
    pub addr: SocketAddr,
    /// The scheduler address (the node key's address).
    pub address: Address,
    /// What recovery found: processes (all shards) and how long the slowest shard took.
    pub recovered_processes: usize,
    pub recovery_ms: u128,
    threads: Vec<glommio::ExecutorJoinHandle<()>>,
    stops: Vec<oneshot::Sender<()>>,
}

impl RunningNode {
    /// Blocks until the node's executors end (they run until the process exits).
    pub fn wait(self) {
        for thread in self.threads {
            let _ = thread.join();
        }
    }

    /// Stops accepting connections, makes everything appended durable, and waits for the
    /// executor threads to end. Requests in flight at that moment get no answer.
    pub fn stop(self) -> Result<(), StartError> {
        for stop in self.stops {
            let _ = stop.send(());
        }
        let mut failed = None;
        for thread in self.threads {
            if let Err(e) = thread.join() {
                failed = Some(StartError::Executor(format!("shard thread failed: {e}")));
            }
        }
        failed.map_or(Ok(()), Err)
    }
}

struct Started {
    address: Address,
    processes: usize,
    recovery_ms: u128,
}

/// Starts a node (one executor thread per shard) and returns once every shard serves HTTP (or
/// one failed to start).
pub fn start(mut config: NodeConfig) -> Result<RunningNode, StartError> {
    let count = config.shards.max(1);
    FIXED_CLOCK_MS.store(config.fixed_clock_ms.unwrap_or(0), std::sync::atomic::Ordering::Relaxed);
    std::fs::create_dir_all(&config.data_dir).map_err(|source| StartError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    // Absolute from here on: glommio opens directories (to sync them after a rename) relative
    // to no directory at all, so a relative data dir (`hewitt-data/demo`) failed every durable
    // replace (monitors, cron lease, upload cursor) with EBADF.
    config.data_dir = std::path::absolute(&config.data_dir).map_err(|source| StartError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    check_shards(&config.data_dir, count)?;
    if let Some(ports) = shard_ports(&config) {
        if *ports.end() > u16::MAX as usize || ports.contains(&(config.listen.port() as usize)) {
            return Err(StartError::Listen {
                addr: config.listen,
                source: std::io::Error::other(format!(
                    "http.shard_ports_base {} gives shard ports {}..={} for {count} shards: they must stay under \
                     65536 and apart from the listen port",
                    config.http.shard_ports_base,
                    ports.start(),
                    ports.end()
                )),
            });
        }
    }
    let wanted = (count * (config.http.connections_max + config.ao.upload_connections) + OPEN_FILES_SPARE) as u64;
    let open_files = raise_open_files_limit();
    if open_files < wanted {
        tracing::warn!(
            open_files,
            wanted,
            "the open-file limit is below what {count} shard(s) of {} connections need: accepts will fail \
             with EMFILE before http.connections_max; raise the hard limit (LimitNOFILE, ulimit -Hn) or lower \
             http.connections_max",
            config.http.connections_max
        );
    }
    // Made once here, so that every shard loads the same key.
    load_or_create_key(&config.data_dir.join("node-key.json"))?;
    // One engine and instance pool for the node: each module is compiled once, whatever the
    // shard count.
    let runtime = Runtime::new(config.compute.clone()).map_err(|e| StartError::Compute(e.to_string()))?;
    let (bound_tx, bound_rx) = std::sync::mpsc::sync_channel::<Result<SocketAddr, StartError>>(1);
    // A channel per shard: one whose executor never ran its task (its thread ended first) is
    // told apart from one still starting.
    let mut readies = Vec::with_capacity(count);
    let mut threads = Vec::with_capacity(count);
    let mut stops = Vec::with_capacity(count);
    let mut listen = config.listen;
    for (index, ends) in crate::mesh::ends(count).into_iter().enumerate() {
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let mut shard_config = config.clone();
        shard_config.listen = listen;
        let placement = match config.cpu {
            Some(cpu) => glommio::Placement::Fixed(cpu + index),
            None => fenced_to_allowed_cpus(),
        };
        let mut builder = glommio::LocalExecutorBuilder::new(placement).name(&format!("hewitt-shard-{index}"));
        builder = builder.ring_depth(ring_depth(&config));
        let spin = config.spin_before_park();
        if spin > 0 {
            builder = builder.spin_before_park(std::time::Duration::from_micros(spin));
        }
        let (ready, ready_rx) = std::sync::mpsc::sync_channel::<Result<Started, StartError>>(1);
        readies.push(ready_rx);
        let (bound, runtime) = (bound_tx.clone(), runtime.clone());
        let thread = builder
            .spawn(move || {
                // Every log line of the shard's thread carries its shard number.
                let span = tracing::info_span!("shard", shard = index);
                tracing::Instrument::instrument(run_shard(shard_config, runtime, ends, bound, ready, stop_rx), span)
            })
            .map_err(|e| StartError::Executor(e.to_string()))?;
        threads.push(thread);
        stops.push(stop_tx);
        if index == 0 {
            // The other shards listen on the port shard 0 got (SO_REUSEPORT).
            match bound_rx.recv() {
                Ok(Ok(addr)) => listen = addr,
                Ok(Err(error)) => return Err(error),
                Err(_) => {
                    return Err(StartError::Executor(format!(
                        "shard 0 ended before binding: {NO_EXECUTOR}"
                    )))
                }
            }
        }
    }
    let mut started: Vec<Option<Started>> = (0..count).map(|_| None).collect();
    while started.iter().any(Option::is_none) {
        for (index, ready) in readies.iter().enumerate() {
            if started[index].is_some() {
                continue;
            }
            match ready.try_recv() {
                Ok(Ok(shard)) => started[index] = Some(shard),
                // The shards already started stop with the process (a start error ends `hewitt`).
                Ok(Err(error)) => return Err(error),
                Err(std::sync::mpsc::TryRecvError::Empty) => {}
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    return Err(StartError::Executor(format!(
                        "shard {index} ended before it was ready: {NO_EXECUTOR}"
                    )))
                }
            }
        }
        if started.iter().any(Option::is_none) {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
    let started: Vec<Started> = started.into_iter().flatten().collect();
    Ok(RunningNode {
        addr: listen,
        address: started[0].address,
        recovered_processes: started.iter().map(|s| s.processes).sum(),
        recovery_ms: started.iter().map(|s| s.recovery_ms).max().unwrap_or(0),
        threads,
        stops,
    })
}

/// One shard's life on its executor: bind, connect to the other shards, open and recover the
/// log, serve until stopped, flush.
async fn run_shard(
    config: NodeConfig,
    runtime: Runtime,
    ends: crate::mesh::Ends,
    bound: std::sync::mpsc::SyncSender<Result<SocketAddr, StartError>>,
    ready: std::sync::mpsc::SyncSender<Result<Started, StartError>>,
    stop: oneshot::Receiver<()>,
) {
    let index = ends.index;
    let listener = glommio::net::TcpListener::bind(config.listen)
        .and_then(|listener| Ok((listener.local_addr()?, listener)))
        .map_err(|e| StartError::Listen {
            addr: config.listen,
            source: std::io::Error::other(e.to_string()),
        });
    let (addr, listener) = match listener {
        Ok(bound) => bound,
        Err(error) => {
            if index == 0 {
                let _ = bound.send(Err(error));
            } else {
                let _ = ready.send(Err(error));
            }
            return;
        }
    };
    let shard_listener = match shard_ports(&config) {
        None => None,
        Some(ports) => {
            let shard_addr = SocketAddr::new(config.listen.ip(), (ports.start() + index) as u16);
            match bind_exclusive(shard_addr) {
                Ok(listener) => Some(listener),
                Err(error) => {
                    let error = StartError::Listen {
                        addr: shard_addr,
                        source: std::io::Error::other(format!("shard {index}'s own port: {error}")),
                    };
                    if index == 0 {
                        let _ = bound.send(Err(error));
                    } else {
                        let _ = ready.send(Err(error));
                    }
                    return;
                }
            }
        }
    };
    if index == 0 {
        let _ = bound.send(Ok(addr));
    }
    let (mesh, receivers) = ends.connect().await;
    let state = match open(config, Rc::new(mesh), runtime).await {
        Ok(state) => state,
        Err(error) => {
            let _ = ready.send(Err(error));
            return;
        }
    };
    tracing::info!(%addr, address = %state.address, "listening; reading the log back");
    start_control(&state, receivers.control);
    // /health, /ready and /metrics answer while the log is read back.
    if let Some(listener) = &shard_listener {
        if let Ok(shard_addr) = listener.local_addr() {
            tracing::info!(%shard_addr, "this shard's own port (http.shard_ports_base)");
        }
    }
    // One accept loop per listener: an accept raced against another and dropped can lose a
    // connection the kernel already accepted for it.
    let (stop_shared_tx, stop_shared) = oneshot::channel::<()>();
    let (stop_own_tx, stop_own) = oneshot::channel::<()>();
    glommio::spawn_local(async move {
        let _ = stop.await;
        let _ = stop_shared_tx.send(());
        let _ = stop_own_tx.send(());
    })
    .detach();
    // Ends the sleeps of this shard's connections (header reads, idle waits): crate::timer.
    glommio::spawn_local(crate::timer::drive()).detach();
    let serving = glommio::spawn_local(tracing::Instrument::in_current_span(serve(
        Rc::clone(&state),
        listener,
        stop_shared,
    )));
    let serving_own = shard_listener.map(|own| {
        glommio::spawn_local(tracing::Instrument::in_current_span(serve(
            Rc::clone(&state),
            own,
            stop_own,
        )))
    });
    match recover(&state).await {
        Ok((processes, recovery_ms)) => {
            start_deliveries(&state, receivers.data);
            let _ = ready.send(Ok(Started {
                address: state.address,
                processes,
                recovery_ms,
            }));
            serving.await;
            if let Some(serving_own) = serving_own {
                serving_own.await;
            }
            if let Err(error) = crate::checkpoint_files::take(&state).await {
                tracing::warn!(%error, "no checkpoint at stop: the next start replays further");
            }
            if let Err(error) = crate::index_files::save(&state).await {
                tracing::warn!(%error, "no index saved at stop: the next start reads more of the log");
            }
            if let Err(error) = state.committer.shutdown().await {
                tracing::error!(%error, "log could not be flushed at stop");
            }
        }
        Err(error) => {
            drop(serving); // cancels them: stops accepting
            drop(serving_own);
            let _ = ready.send(Err(error));
        }
    }
}

/// Answers the other shards' requests (from the start: a request that arrives while this shard
/// reads its log back is answered 503 like one from a client).
fn start_control(
    state: &Rc<NodeState>,
    receivers: Vec<(
        usize,
        glommio::channels::shared_channel::ConnectedReceiver<Vec<crate::mesh::Control>>,
    )>,
) {
    for (from, receiver) in receivers {
        let state = Rc::clone(state);
        glommio::spawn_local(tracing::Instrument::in_current_span(async move {
            while let Some(batch) = receiver.recv().await {
                for control in batch {
                    match control {
                        crate::mesh::Control::Answer { id, answer } => state.mesh.answered(id, answer),
                        crate::mesh::Control::Ask { id, ask } => {
                            let state = Rc::clone(&state);
                            glommio::spawn_local(tracing::Instrument::in_current_span(async move {
                                let answer = crate::http::answer_ask(&state, ask).await;
                                state.mesh.answer(from, id, answer);
                            }))
                            .detach();
                        }
                    }
                }
            }
            // Shard `from` stopped: what this shard asked it will not be answered.
            state.mesh.peer_stopped(from);
        }))
        .detach();
    }
}

/// Once the log is read back (the index must be whole to refuse duplicates): takes the
/// deliveries other shards send, and sends this shard's to them once their causes are durable.
fn start_deliveries(
    state: &Rc<NodeState>,
    receivers: Vec<(
        usize,
        glommio::channels::shared_channel::ConnectedReceiver<Vec<crate::shard::Remote>>,
    )>,
) {
    for (from, receiver) in receivers {
        let state = Rc::clone(state);
        glommio::spawn_local(tracing::Instrument::in_current_span(async move {
            while let Some(batch) = receiver.recv().await {
                // Room first: the items wait in the ring (bounded) rather than here.
                while !state.shard.borrow().remote_in_takes(batch.len()) && state.failure().is_none() {
                    state.wake_pump();
                    glommio::timer::sleep(std::time::Duration::from_micros(500)).await;
                }
                if state.failure().is_some() {
                    // This shard evaluates nothing more until a restart; the sending shard
                    // keeps these copied (they are never counted as held here) and carries
                    // them in its checkpoints, or derives them again by replay.
                    continue;
                }
                let missing: Vec<ModuleId> = {
                    let shard = state.shard.borrow();
                    let mut missing: Vec<ModuleId> = batch.iter().filter_map(|r| shard.missing_module(r)).collect();
                    missing.sort();
                    missing.dedup();
                    missing
                };
                for module in missing {
                    copy_module(&state, from, module).await;
                }
                if state.failure().is_some() {
                    continue; // as above
                }
                state.shard.borrow_mut().accept_remote(from, batch);
                state.wake_pump();
            }
        }))
        .detach();
    }
    for to in (0..state.mesh.count).filter(|&to| to != state.mesh.index) {
        let (wake_tx, mut wake_rx) = mpsc::channel::<()>(1);
        state.forwarders.borrow_mut()[to] = Some(wake_tx);
        let state = Rc::clone(state);
        glommio::spawn_local(tracing::Instrument::in_current_span(async move {
            loop {
                let front = state.shard.borrow().remote_front_cause(to);
                let Some(cause) = front else {
                    if wake_rx.next().await.is_none() {
                        return;
                    }
                    continue;
                };
                // (An item with no cause waits for nothing: this shard's log may even be empty.)
                let durable = match cause {
                    crate::shard::NO_CAUSE => Ok(()),
                    cause => state.committer.wait_durable(cause).await,
                };
                if let Err(error) = durable {
                    tracing::error!(%error, to, "log failed; deliveries to the other shard stop");
                    return;
                }
                let batch = state
                    .shard
                    .borrow_mut()
                    .take_remote(to, crate::mesh::DELIVERY_BATCH_MAX);
                if batch.is_empty() {
                    // The other shard holds none of what was sent durably yet: wait for it.
                    glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
                    continue;
                }
                state.wake_pump(); // room in the queue the pump may be waiting on
                if state.mesh.deliver(to, batch).await.is_err() {
                    // The other shard stopped (the node is stopping); replay re-derives these.
                    return;
                }
            }
        }))
        .detach();
    }
    state.wake_forwarders();
}

/// The wait before the next try of something another shard could not answer yet: 20 ms after
/// the first, doubling up to a second.
fn retry_wait(attempt: u32) -> std::time::Duration {
    std::time::Duration::from_millis((10u64 << attempt.min(7)).min(1000))
}

/// Message `id` as whichever other shard holds it durably has it; `None` once every shard says
/// it does not (or this shard failed). A round in which a shard could not tell is tried again,
/// after a longer wait each time, for as long as it takes.
async fn message_from_other_shards(state: &Rc<NodeState>, id: MessageId) -> Option<scheduler::data_item::DataItem> {
    let mut attempt: u32 = 0;
    loop {
        let reason = match state.mesh.find_message(state.mesh.others(), id).await {
            Asked::Found(item) => return Some(item),
            Asked::Absent => return None,
            Asked::Unsure(reason) => reason,
        };
        attempt += 1;
        if attempt.is_multiple_of(10) {
            tracing::warn!(message = %id, attempt, %reason, "still asking the other shards for a message an assignment names");
        }
        glommio::timer::sleep(retry_wait(attempt)).await;
        if state.failure().is_some() {
            return None;
        }
    }
}

/// Makes this shard hold `module` for a spawn shard `from` sent, by logging a copy of that
/// shard's record of it (a module a gateway gave it: client modules are in every shard's log).
/// What may pass (the other shard busy, this log full or behind on syncs) is tried again, for
/// as long as it takes: the deliveries from `from` wait meanwhile. What will not (the other
/// shard does not hold the module, the record does not compile here, this shard failed) is
/// logged, and the spawn is then refused here, the parent's shard told so.
async fn copy_module(state: &Rc<NodeState>, from: usize, module: ModuleId) {
    let mut attempt: u32 = 0;
    loop {
        if state.failure().is_some() {
            return;
        }
        let why = match state.mesh.find_module([from], module).await {
            Asked::Found((kind, payload)) => {
                let admitted = state.shard.borrow_mut().admit_module_copy(module, kind, &payload);
                match admitted {
                    Ok(()) => {
                        tracing::info!(%module, from, "module copied from another shard for a spawn");
                        state.wake_pump();
                        return;
                    }
                    Err(ShardError::Log(error @ (LogError::Backpressure { .. } | LogError::Full(_)))) => {
                        state.wake_pump();
                        error.to_string()
                    }
                    Err(error) => {
                        tracing::warn!(%module, from, %error, "module not copied from another shard: its spawn is refused");
                        return;
                    }
                }
            }
            Asked::Absent => {
                tracing::warn!(%module, from, "the shard a spawn came from does not hold its module: the spawn is refused");
                return;
            }
            Asked::Unsure(reason) => reason,
        };
        attempt += 1;
        if attempt.is_multiple_of(10) {
            tracing::warn!(%module, from, attempt, reason = %why, "still copying a module from another shard; its deliveries wait");
        }
        glommio::timer::sleep(retry_wait(attempt)).await;
    }
}

/// How many records recovery reads between two yields to the executor (so that `/health` and
/// `/ready` answer during a long recovery).
const RECOVERY_CHUNK_RECORDS: usize = 4096;

/// Opens the shard's directory and its log and starts the committer; the shard is empty until
/// [`recover`] has read the log back.
async fn open(config: NodeConfig, mesh: Rc<crate::mesh::Mesh>, runtime: Runtime) -> Result<Rc<NodeState>, StartError> {
    let began = Instant::now();
    let dir = shard_dir(&config.data_dir, mesh.index);
    std::fs::create_dir_all(&dir).map_err(|source| StartError::DataDir {
        path: dir.clone(),
        source,
    })?;
    let signer = load_or_create_key(&config.data_dir.join("node-key.json"))?;
    let address = signer.address();
    let mut loaded = crate::index_files::read(&dir);
    let log = crate::index_files::open_log(&dir.join("log"), config.log, &mut loaded)?;
    let log = Rc::new(RefCell::new(log));
    if config.log_zstd_level > 0 {
        log.borrow_mut().set_packing(Some(config.log_zstd_level as i32));
    }
    // The first segment to fill is made now; the next ones ahead of need, off this thread.
    log.borrow_mut().prepare_now();
    glommio::spawn_local(tracing::Instrument::in_current_span(scheduler::log::maintain(
        Rc::clone(&log),
    )))
    .detach();
    let committer = Committer::new(Rc::clone(&log));
    committer.set_direct_io(config.log_direct_io);
    // The committer runs in a latency-sensitive task queue: glommio then submits its writes and
    // syncs on the latency ring and preempts busy tasks (HTTP, evaluation) within
    // COMMIT_LATENCY_US, so a finished fdatasync is noticed promptly instead of after the
    // executor's other work drains.
    let commit_queue = glommio::executor().create_task_queue(
        glommio::Shares::default(),
        glommio::Latency::Matters(std::time::Duration::from_micros(COMMIT_LATENCY_US)),
        "group-commit",
    );
    glommio::spawn_local_into(
        tracing::Instrument::in_current_span(Rc::clone(&committer).run()),
        commit_queue,
    )
    .map_err(|e| StartError::Executor(e.to_string()))?
    .detach();
    let metrics = crate::metrics::Metrics::default();
    {
        let metrics = metrics.clone();
        committer.set_observer(Box::new(move |report| metrics.batch(report)));
    }
    let log_bytes = log.borrow().end_lsn().0;
    let mut limits = config.limits.clone();
    // Each shard keeps at most its share of the node's instance pool live (the rest sleep), so
    // that no shard can take the slots another needs to evaluate or roll back.
    limits.live_instances_max = limits
        .live_instances_max
        .min((config.compute.instance_count_max as usize / mesh.count).max(1));
    let mut shard = Shard::new(signer, runtime, log, limits);
    shard.keep_index_journal();
    shard.set_placement(mesh.index, mesh.count);
    if mesh.count > 1 {
        shard.set_settlement(Arc::clone(&mesh.settled));
    }
    shard.set_trusted_nodes(config.ao.trusted_nodes.iter().copied());
    shard.set_artifact_dir(config.data_dir.join("modules"));
    shard.set_cron_floor(read_lease(&dir)?);
    // No tick is evaluated before a lease is saved (NodeState::ensure_cron_lease).
    shard.extend_cron_lease(0);
    let (wake_tx, wake_rx) = mpsc::channel(1);
    let state = Rc::new(NodeState {
        shard: RefCell::new(shard),
        committer,
        address,
        wake: RefCell::new(wake_tx),
        waiters: RefCell::new(HashMap::new()),
        failure: RefCell::new(None),
        http: config.http.clone(),
        ao: config.ao.clone(),
        monitors_saving: glommio::sync::Semaphore::new(1),
        lease_saving: glommio::sync::Semaphore::new(1),
        data_dir: dir,
        metrics: metrics.clone(),
        open_connections: std::cell::Cell::new(0),
        writes: crate::http::WriteSlots::default(),
        recovering: std::cell::Cell::new(Some((0, log_bytes))),
        started: began,
        catching_up: std::cell::Cell::new(true),
        pump_wake: RefCell::new(Some(wake_rx)),
        forwarders: RefCell::new((0..mesh.count).map(|_| None).collect()),
        mesh,
        checkpoint_config: config.checkpoint.clone(),
        index_every_records: config.index_every_records,
        checkpoints: RefCell::new(None),
        checkpointing: glommio::sync::Semaphore::new(1),
        index_loaded: RefCell::new(loaded),
        index_files: RefCell::new(None),
        index_saving: glommio::sync::Semaphore::new(1),
    });
    Ok(state)
}

/// Reads the log back into the shard in chunks, yielding between them; then starts the pump,
/// which replays the recovered messages (the node accepts requests meanwhile, and `/ready`
/// answers 200 once the replay is done). Returns the processes recovered and the milliseconds
/// it took.
async fn recover(state: &Rc<NodeState>) -> Result<(usize, u128), StartError> {
    let total = state.recovering().map_or(0, |(_, total)| total);
    let loaded = state.index_loaded.borrow_mut().take();
    let mut next = Some(crate::index_files::load(state, loaded)?);
    let mut reported = Instant::now();
    while let Some(from) = next {
        next = state.shard.borrow_mut().recover_from(from, RECOVERY_CHUNK_RECORDS)?;
        if let Some(at) = next {
            state.recovering.set(Some((at.0, total)));
            if reported.elapsed() >= std::time::Duration::from_secs(1) {
                reported = Instant::now();
                tracing::info!(read_bytes = at.0, log_bytes = total, "reading the log back");
            }
            futures_lite::future::yield_now().await;
        }
    }
    crate::checkpoint_files::resume(state)?;
    let (processes, pending) = {
        let mut shard = state.shard.borrow_mut();
        shard.finish_recovery();
        (shard.process_count(), shard.recovery_pending())
    };
    state.recovering.set(None);
    state.catching_up.set(pending > 0);
    let recovery_ms = state.started.elapsed().as_millis();
    tracing::info!(
        processes,
        log_bytes = total,
        messages_to_replay = pending,
        recovery_ms = recovery_ms as u64,
        "log recovered; serving"
    );
    let wake = state.pump_wake.borrow_mut().take().expect("recovery runs once");
    // Evaluation in a queue of its own, so that yielding it between turns lets HTTP run.
    let evaluation_queue =
        glommio::executor().create_task_queue(glommio::Shares::default(), glommio::Latency::NotImportant, "evaluation");
    glommio::spawn_local_into(
        tracing::Instrument::in_current_span(pump(Rc::clone(state), wake)),
        evaluation_queue,
    )
    .map_err(|e| StartError::Executor(e.to_string()))?
    .detach();
    state.wake_pump();
    start_uploads(state)?;
    start_crons(state)?;
    crate::checkpoint_files::start(state);
    crate::index_files::start(state);
    crate::index_files::check_trusted(state);
    Ok((processes, recovery_ms))
}

/// How often the ticks of monitored processes are driven to the present.
const CRON_DRIVE_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// The file listing the monitored processes, one id per line, in the data dir.
const MONITORS_FILE: &str = "monitors";

/// The file holding the cron lease (ms, then its CRC-32C), in the data dir.
const CRON_LEASE_FILE: &str = "cron-lease";

/// How far ahead of the clock the cron lease is saved, and how close the clock may come to it
/// before it is saved again: one small durable write every few seconds while ticks are driven,
/// and after a restart new messages to cron processes are stamped at most this far ahead.
const CRON_LEASE_AHEAD_MS: u64 = 5_000;
const CRON_LEASE_MARGIN_MS: u64 = 2_000;

fn encode_lease(lease: u64) -> Vec<u8> {
    let mut bytes = lease.to_le_bytes().to_vec();
    bytes.extend_from_slice(&crc32c::crc32c(&lease.to_le_bytes()).to_le_bytes());
    bytes
}

/// The lease saved by the previous run; 0 without one. A damaged file fails the start: the
/// stamps it protects cannot be bounded without it.
fn read_lease(data_dir: &Path) -> Result<u64, StartError> {
    let path = data_dir.join(CRON_LEASE_FILE);
    match std::fs::read(&path) {
        Ok(bytes) if bytes.len() == 12 => {
            let lease: [u8; 8] = bytes[..8].try_into().expect("8 bytes");
            let crc: [u8; 4] = bytes[8..].try_into().expect("4 bytes");
            if crc32c::crc32c(&lease) == u32::from_le_bytes(crc) {
                return Ok(u64::from_le_bytes(lease));
            }
            Err(StartError::DataDir {
                path,
                source: std::io::Error::other("the cron lease is damaged (checksum mismatch); remove it only if the clock has not been set back since the node last ran"),
            })
        }
        Ok(_) => Err(StartError::DataDir {
            path,
            source: std::io::Error::other("the cron lease is not 12 bytes"),
        }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(source) => Err(StartError::DataDir { path, source }),
    }
}

/// Restores the monitored processes and starts driving their crons.
fn start_crons(state: &Rc<NodeState>) -> Result<(), StartError> {
    let path = state.data_dir.join(MONITORS_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let mut shard = state.shard.borrow_mut();
            for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
                let restored = line
                    .parse::<ProcessId>()
                    .map_err(|_| "not a process id".to_owned())
                    .and_then(|pid| shard.set_monitored(pid, true).map_err(|e| e.to_string()));
                if let Err(reason) = restored {
                    tracing::warn!(path = %path.display(), entry = line, %reason, "monitor entry skipped");
                }
            }
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => tracing::warn!(path = %path.display(), %error, "monitors not restored"),
    }
    let driver = Rc::clone(state);
    glommio::spawn_local(tracing::Instrument::in_current_span(async move {
        loop {
            glommio::timer::sleep(CRON_DRIVE_INTERVAL).await;
            if driver.shard.borrow().monitored().is_empty() {
                continue;
            }
            if let Err(error) = driver.ensure_cron_lease(now()).await {
                tracing::warn!(%error, "cron lease not saved: ticks wait");
            }
            let work = {
                let mut shard = driver.shard.borrow_mut();
                shard.drive_crons(now());
                shard.has_work()
            };
            if work {
                driver.wake_pump();
            }
        }
    }))
    .detach();
    Ok(())
}

impl NodeState {
    /// Makes sure cron ticks may be evaluated up to `now`: saves a lease a little ahead of it
    /// (durably, before the shard may use it) when the current one is about to run out.
    pub async fn ensure_cron_lease(&self, now: Timestamp) -> Result<(), String> {
        if now.0.saturating_add(CRON_LEASE_MARGIN_MS) <= self.shard.borrow().cron_lease() {
            return Ok(());
        }
        let _saving = self.lease_saving.acquire_permit(1).await;
        if now.0.saturating_add(CRON_LEASE_MARGIN_MS) <= self.shard.borrow().cron_lease() {
            return Ok(()); // saved meanwhile
        }
        let lease = now.0.saturating_add(CRON_LEASE_AHEAD_MS);
        crate::upload::replace_file(&self.data_dir, CRON_LEASE_FILE, encode_lease(lease)).await?;
        self.shard.borrow_mut().extend_cron_lease(lease);
        Ok(())
    }

    /// Starts or stops monitoring `pid` and saves the monitored set (it survives restarts).
    pub async fn set_monitored(&self, pid: ProcessId, on: bool) -> Result<(), ShardError> {
        // One save at a time: each writes the whole set, through the same temporary file.
        let _saving = self.monitors_saving.acquire_permit(1).await;
        let was = self.shard.borrow().monitored().contains(&pid);
        let list = {
            let mut shard = self.shard.borrow_mut();
            shard.set_monitored(pid, on)?;
            shard
                .monitored()
                .iter()
                .map(|pid| format!("{pid}\n"))
                .collect::<String>()
        };
        if let Err(error) = crate::upload::replace_file(&self.data_dir, MONITORS_FILE, list.into_bytes()).await {
            // Not saved: the set in memory goes back to what the file says.
            let _ = self.shard.borrow_mut().set_monitored(pid, was);
            return Err(ShardError::Busy(format!("monitor not saved: {error}")));
        }
        if on {
            self.shard.borrow_mut().advance_crons(pid, now())?;
            self.wake_pump();
        }
        Ok(())
    }

    /// Evaluates `pid`'s cron ticks up to `now` (after the messages before them) and waits,
    /// at most `patience`, until they are done.
    pub async fn settle_crons(
        &self,
        pid: ProcessId,
        now: Timestamp,
        patience: std::time::Duration,
    ) -> Result<(), ShardError> {
        self.ensure_cron_lease(now)
            .await
            .map_err(|e| ShardError::Busy(format!("cron lease not saved: {e}")))?;
        self.shard.borrow_mut().advance_crons(pid, now)?;
        self.wake_pump();
        let began = Instant::now();
        while !self.shard.borrow().crons_settled(pid, now) {
            if let Some(reason) = self.failure() {
                return Err(ShardError::Busy(format!("evaluation stopped: {reason}")));
            }
            if began.elapsed() >= patience {
                return Err(ShardError::Busy(format!(
                    "process {pid} is still evaluating its messages and cron ticks"
                )));
            }
            glommio::timer::sleep(std::time::Duration::from_millis(2)).await;
        }
        Ok(())
    }
}

/// Starts the uploader and the `Scheduler-Location` publisher when a bundler is configured, in
/// a task queue that yields to everything else.
fn start_uploads(state: &Rc<NodeState>) -> Result<(), StartError> {
    let ao = &state.ao;
    let Some(bundler) = &ao.bundler_url else {
        if ao.public_url.is_some() {
            tracing::warn!("ao.public_url is set but arweave.bundler_url is not: no Scheduler-Location is published");
        }
        return Ok(());
    };
    let endpoint = crate::outbound::Endpoint::parse(bundler)
        .map_err(|e| StartError::Config(format!("arweave.bundler_url: {e}")))?;
    let queue =
        glommio::executor().create_task_queue(glommio::Shares::Static(100), glommio::Latency::NotImportant, "upload");
    glommio::spawn_local_into(
        tracing::Instrument::in_current_span(crate::upload::run(
            Rc::clone(state),
            endpoint.clone(),
            state.data_dir.join("upload"),
            ao.upload_connections,
        )),
        queue,
    )
    .map_err(|e| StartError::Executor(e.to_string()))?
    .detach();
    // One location per node: shard 0 publishes it.
    if let Some(url) = ao.public_url.as_ref().filter(|_| state.mesh.index == 0) {
        glommio::spawn_local_into(
            tracing::Instrument::in_current_span(crate::upload::publish_location(
                Rc::clone(state),
                endpoint,
                url.clone(),
                ao.scheduler_location_ttl_ms,
            )),
            queue,
        )
        .map_err(|e| StartError::Executor(e.to_string()))?
        .detach();
    }
    Ok(())
}

/// Accepts connections until `stop` fires (or its sender is dropped).
async fn serve(state: Rc<NodeState>, listener: glommio::net::TcpListener, mut stop: oneshot::Receiver<()>) {
    loop {
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            let _ = (&mut stop).await;
            None
        })
        .await;
        let Some(accepted) = accepted else {
            tracing::info!("node stopping");
            return;
        };
        let stream = match accepted {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let limit = state.http.connections_max;
        if state.open_connections.get() >= limit {
            tracing::warn!(limit, "too many open connections; one refused");
            drop(stream);
            continue;
        }
        let _ = stream.set_nodelay(true);
        state.open_connections.set(state.open_connections.get() + 1);
        let (state, connections) = (Rc::clone(&state), Rc::clone(&state));
        glommio::spawn_local(tracing::Instrument::in_current_span(async move {
            let service = hyper::service::service_fn(move |request| crate::http::ingress(Rc::clone(&state), request));
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(crate::timer::ShardTimer)
                .header_read_timeout(connections.http.idle_timeout())
                .keep_alive(true)
                .serve_connection(crate::http::GlommioIo(stream), service);
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended with an error");
            }
            connections.open_connections.set(connections.open_connections.get() - 1);
        }))
        .detach();
    }
}
