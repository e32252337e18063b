//! A scenario over HTTP: a node started in a child process on a fresh data dir, driven on
//! loopback with signed ANS-104 items by `clients` threads of this one. First closed loop (peak durable throughput),
//! then open loop at fixed fractions of that peak, each latency measured from the message's
//! *intended* send time into an HdrHistogram (no coordinated omission).
//!
//! Every client message is acknowledged only after the fdatasync that covers it. After each
//! phase the driver waits until the node has evaluated everything the phase caused (the
//! messenger's rallies in `pingpong`, say), so a phase's "all messages" rate counts the work
//! the node really did, not only what it acknowledged.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::client::Client;
use engine::node::{self, NodeConfig};
use hdrhistogram::Histogram;
use scheduler::signer::Signer;
use scheduler::Address;
use serde_json::Value;

use crate::report::{histogram, record, Latency, Phase, ScenarioRun};
use crate::workload::{prepare, Scenario, Workload};

/// How the HTTP phases are sized.
#[derive(Clone, Debug)]
pub struct HttpOptions {
    pub processes: usize,
    pub clients: usize,
    /// Client threads of the open-loop phases: more than `clients`, so that a phase's offered
    /// rate does not depend on how many requests happen to be outstanding.
    pub open_loop_clients: usize,
    /// Client messages of the closed-loop phase.
    pub messages: u64,
    /// Seconds of each open-loop phase.
    pub seconds: f64,
    /// Offered loads of the open-loop phases, as fractions of the measured peak.
    pub loads: Vec<f64>,
    /// Shards of the node.
    pub shards: usize,
    /// Pins the node's shards to cores `0..shards` and the load generator's threads to the
    /// cores after them, so that neither competes with the other (on a machine with cores to
    /// spare; where none are left the load threads run unpinned, and with more shards than cores
    /// nothing is pinned).
    pub pin: bool,
    /// `shards_spin_before_park_us` of the node (`None`: the node's default).
    pub spin_before_park_us: Option<u64>,
    /// `http.write_wait_ms` of the overload part's node (`None`: the node's default).
    pub write_wait_ms: Option<u64>,
    /// Clients compute placement and send each item to the port of the shard that owns its
    /// process (`http.shard_ports_base`), instead of to the node's port, where any shard takes
    /// it and hands on what another owns.
    pub shard_aware: bool,
    /// `log.direct_io` of the node.
    pub log_direct_io: bool,
}

impl HttpOptions {
    /// The cores the load generator's threads may run on: `None` for anywhere.
    fn load_cores(&self) -> Option<Vec<usize>> {
        let cores = engine::node::default_shards();
        (self.pin && self.shards < cores).then(|| (self.shards..cores).collect())
    }

    /// The node for `clients` client threads.
    fn node_spec(&self, data_dir: &Path, clients: usize) -> Result<NodeSpec, String> {
        Ok(NodeSpec {
            data_dir: data_dir.to_owned(),
            shards: self.shards,
            cpu: (self.pin && self.shards <= engine::node::default_shards()).then_some(0),
            spin_before_park_us: self.spin_before_park_us,
            log_direct_io: self.log_direct_io,
            shard_ports_base: if self.shard_aware {
                Some(free_ports(self.shards)?)
            } else {
                None
            },
            // A shard-aware client holds a connection to every shard it sends to, so each
            // shard may see every client (on the node's port they spread over the shards).
            connections_max: (self.shard_aware && clients + 64 > node::CONNECTIONS_MAX)
                .then(|| (clients + 64).min(30_000)),
            ..NodeSpec::default()
        })
    }
}

/// The first of `count` consecutive ports free on loopback now.
fn free_ports(count: usize) -> Result<u16, String> {
    let count = count.max(1) as u16;
    // Below the kernel's ephemeral ports (32768 up), which connections take.
    let start = 20_000 + (std::process::id() % 12_000) as u16;
    (start..32_000)
        .chain(20_000..start)
        .step_by(count as usize)
        .find(|base| (0..count).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok()))
        .ok_or_else(|| format!("no {count} consecutive free ports on loopback"))
}

/// Where the load generator sends its items.
#[derive(Clone, Debug)]
pub enum Ingress {
    /// The node's port: any shard takes an item and hands on what another shard owns.
    Any(String),
    /// Each shard's own port, shard `i` at index `i`: an item goes to its owner.
    ShardAware(Vec<String>),
}

impl Ingress {
    /// The index of the URL an item goes to (placement as the node computes it).
    fn pick(&self, item: &scheduler::data_item::DataItem) -> usize {
        match self {
            Ingress::Any(_) => 0,
            Ingress::ShardAware(urls) => {
                let process = match item.tag("Type") {
                    Some("Process") => Some(scheduler::ProcessId::from(item.id())),
                    _ => item.target.map(scheduler::ProcessId),
                };
                process.map_or(0, |process| messenger::placement::shard_of(&process, urls.len()))
            }
        }
    }

    fn urls(&self) -> Vec<String> {
        match self {
            Ingress::Any(url) => vec![url.clone()],
            Ingress::ShardAware(urls) => urls.clone(),
        }
    }
}

/// The settings of a node under test that the HTTP parts vary; the rest are the node's defaults.
/// Also the flags of this binary's `node` command, which runs such a node.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct NodeSpec {
    /// Data dir (created if missing).
    #[arg(long)]
    pub data_dir: PathBuf,
    #[arg(long, default_value_t = 1)]
    pub shards: usize,
    /// Pins shard `i` to core `cpu + i`.
    #[arg(long)]
    pub cpu: Option<usize>,
    #[arg(long)]
    pub spin_before_park_us: Option<u64>,
    #[arg(long)]
    pub writes_in_flight_max: Option<usize>,
    #[arg(long)]
    pub writes_waiting_max: Option<usize>,
    #[arg(long)]
    pub write_wait_ms: Option<u64>,
    #[arg(long)]
    pub instance_count_max: Option<u32>,
    /// `http.shard_ports_base`: shard `i` also listens on this port + `i`.
    #[arg(long)]
    pub shard_ports_base: Option<u16>,
    #[arg(long)]
    pub connections_max: Option<usize>,
    /// `log.direct_io`.
    #[arg(long)]
    pub log_direct_io: bool,
}

impl NodeSpec {
    /// The node's configuration: its defaults, on loopback with a free port, and these settings.
    pub fn config(&self) -> Result<NodeConfig, String> {
        let mut config = NodeConfig::new(&self.data_dir, "127.0.0.1:0".parse().map_err(|e| format!("{e}"))?);
        config.shards = self.shards;
        config.cpu = self.cpu;
        if let Some(spin) = self.spin_before_park_us {
            config.spin_before_park_us = Some(spin);
        }
        if let Some(max) = self.writes_in_flight_max {
            config.http.writes_in_flight_max = max;
        }
        if let Some(max) = self.writes_waiting_max {
            config.http.writes_waiting_max = max;
        }
        if let Some(wait) = self.write_wait_ms {
            config.http.write_wait_ms = wait;
        }
        if let Some(count) = self.instance_count_max {
            config.compute.instance_count_max = count;
        }
        if let Some(base) = self.shard_ports_base {
            config.http.shard_ports_base = base;
        }
        if let Some(max) = self.connections_max {
            config.http.connections_max = max;
        }
        config.log_direct_io = self.log_direct_io;
        Ok(config)
    }

    /// The `node` command's flags for these settings.
    fn flags(&self) -> Vec<String> {
        let mut flags = vec![
            "--data-dir".to_owned(),
            self.data_dir.display().to_string(),
            "--shards".to_owned(),
            self.shards.to_string(),
        ];
        let optional = [
            ("--cpu", self.cpu.map(|v| v as u64)),
            ("--spin-before-park-us", self.spin_before_park_us),
            ("--writes-in-flight-max", self.writes_in_flight_max.map(|v| v as u64)),
            ("--writes-waiting-max", self.writes_waiting_max.map(|v| v as u64)),
            ("--write-wait-ms", self.write_wait_ms),
            ("--instance-count-max", self.instance_count_max.map(u64::from)),
            ("--shard-ports-base", self.shard_ports_base.map(u64::from)),
            ("--connections-max", self.connections_max.map(|v| v as u64)),
        ];
        for (flag, value) in optional {
            if let Some(value) = value {
                flags.push(flag.to_owned());
                flags.push(value.to_string());
            }
        }
        if self.log_direct_io {
            flags.push("--log-direct-io".to_owned());
        }
        flags
    }
}

/// The `node` command: runs a node of `spec`, prints `<listen address> <node address>` on a
/// line once it serves, and stops it cleanly when standard input ends (its parent closed it, or
/// died).
pub fn serve(spec: &NodeSpec) -> Result<(), String> {
    let node = node::start(spec.config()?).map_err(|e| e.to_string())?;
    println!("{} {}", node.addr, node.address);
    let mut rest = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut rest);
    node.stop().map_err(|e| e.to_string())
}

/// A node under test in a child process (this binary's `node` command: the node's library and
/// allocator settings, as `hewitt serve` runs them). The load generator's threads and the node
/// share no address space: the memory and shard CPU the report gives are the node's alone, and
/// the process-wide memory barrier a shard issues before it parks (glommio's membarrier, which
/// interrupts every core running a thread of the process) reaches the node's threads only, as
/// with clients on other machines.
pub struct NodeProcess {
    child: Child,
    pub url: String,
    pub address: Address,
    /// Where the load generator sends its items.
    pub ingress: Ingress,
}

impl NodeProcess {
    /// Starts a node of `spec`; returns once it serves.
    pub fn start(spec: &NodeSpec) -> Result<NodeProcess, String> {
        let exe = std::env::current_exe().map_err(|e| format!("this binary's path: {e}"))?;
        let mut child = std::process::Command::new(exe)
            .arg("node")
            .args(spec.flags())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("starting the node process: {e}"))?;
        let mut line = String::new();
        let stdout = child.stdout.take().ok_or("the node's output")?;
        BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|e| format!("reading the node's first line: {e}"))?;
        let mut words = line.split_whitespace();
        let (Some(addr), Some(address)) = (words.next(), words.next()) else {
            let status = child.wait().map_err(|e| e.to_string())?;
            return Err(format!("the node process ended before serving ({status})"));
        };
        let address = address
            .parse()
            .map_err(|e| format!("node address {address:?}: {e:?}"))?;
        let url = format!("http://{addr}");
        let ingress = match spec.shard_ports_base {
            None => Ingress::Any(url.clone()),
            Some(base) => Ingress::ShardAware(
                (0..spec.shards)
                    .map(|i| format!("http://127.0.0.1:{}", base as usize + i))
                    .collect(),
            ),
        };
        Ok(NodeProcess {
            url,
            address,
            ingress,
            child,
        })
    }

    /// CPU time the node's shard threads (named `hewitt-shard-<i>`) have run, in ns.
    pub fn shard_cpu_ns(&self) -> u64 {
        shard_cpu_ns_of(&format!("/proc/{}/task", self.child.id()))
    }

    /// A byte figure of the node process from its `/proc/<pid>/status` (`VmRSS`, …).
    pub fn status_bytes(&self, field: &str) -> u64 {
        status_bytes_of(&format!("/proc/{}/status", self.child.id()), field)
    }

    /// Stops the node (it makes everything durable first) and waits for its process to end.
    pub fn stop(mut self) -> Result<(), String> {
        drop(self.child.stdin.take());
        let status = self
            .child
            .wait()
            .map_err(|e| format!("waiting for the node process: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("the node process ended with {status}"))
        }
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        // A run that failed half way: no node outlives it.
        if self.child.try_wait().is_ok_and(|status| status.is_none()) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Restricts the calling thread to `cores`.
pub fn pin_thread(cores: &[usize]) -> Result<(), String> {
    // SAFETY: `set` is a plain bit set the macros below fill within its size; the call reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &core in cores {
            libc::CPU_SET(core, &mut set);
        }
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(format!(
                "pinning to cores {cores:?}: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

/// Most processes a spawn storm creates in one run. Until hibernation exists every process holds
/// a slot of the instance pool (4 GiB of address space each), so the storm's phases are capped
/// and the pool sized to match.
const SPAWN_STORM_PROCESSES_MAX: u64 = 6000;

/// When messages are due: as soon as acknowledgements come back (closed loop), or ticket `i` at
/// `start + i / rate` (open loop).
#[derive(Clone, Copy)]
enum Pace {
    Closed,
    Open { start: Instant, rate: f64 },
}

/// Sends tickets `first..first + total` from `clients` threads. Each latency is measured from
/// the message's due time: its send time in a closed loop, its slot in the schedule in an open
/// loop, so a stalled node is charged for every message it delayed. Returns the seconds from
/// the first due time to the last acknowledgement and the latency histogram (µs) of the
/// acknowledged messages.
fn drive(
    ingress: &Ingress,
    workload: &Arc<Workload>,
    cores: Option<&Vec<usize>>,
    clients: usize,
    first: u64,
    total: u64,
    pace: Pace,
) -> Result<(f64, Histogram<u64>), String> {
    let (seconds, latency, _, _) = drive_counting(ingress, workload, None, cores, clients, first, total, pace, false)?;
    Ok((seconds, latency))
}

/// [`drive`]; with `refusals_expected`, a 503 answer is counted (third value) instead of failing
/// the run. With `signed`, ticket `i` sends `signed[i - first]` (signed ahead) instead of
/// signing it then. With `cores`, every load thread runs on those cores only.
#[allow(clippy::too_many_arguments)]
fn drive_counting(
    ingress: &Ingress,
    workload: &Arc<Workload>,
    signed: Option<&Arc<Vec<Vec<u8>>>>,
    cores: Option<&Vec<usize>>,
    clients: usize,
    first: u64,
    total: u64,
    pace: Pace,
    refusals_expected: bool,
) -> Result<(f64, Histogram<u64>, Histogram<u64>, u64), String> {
    let refused = Arc::new(AtomicU64::new(0));
    let next = Arc::new(AtomicU64::new(0));
    let began = match pace {
        Pace::Closed => Instant::now(),
        Pace::Open { start, .. } => start,
    };
    let workers: Vec<_> = (0..clients.max(1))
        .map(|_| {
            let (next, ingress, workload, refused) = (
                Arc::clone(&next),
                ingress.clone(),
                Arc::clone(workload),
                Arc::clone(&refused),
            );
            let signed = signed.cloned();
            let cores = cores.cloned();
            // Latencies are kept as a list per thread and merged at the end: a histogram each
            // (~400 KiB once its range is touched) would make thousands of threads' memory
            // swamp the node's in the overload part's resident-memory figures.
            // Each acknowledged message gives two: from its due time, and from when it was sent
            // (the node's own part, without the lag of threads behind their schedule).
            std::thread::spawn(move || -> Result<Vec<(Duration, Duration)>, String> {
                if let Some(cores) = &cores {
                    pin_thread(cores)?;
                }
                let clients: Vec<Client> = ingress
                    .urls()
                    .iter()
                    .map(|url| Client::new(url, Signer::generate_ed25519()))
                    .collect();
                let mut h = Vec::new();
                loop {
                    let ticket = next.fetch_add(1, Ordering::Relaxed);
                    if ticket >= total {
                        return Ok(h);
                    }
                    let (bytes, to) = match &signed {
                        Some(signed) => {
                            let bytes = signed[ticket as usize].clone();
                            let to = match &ingress {
                                Ingress::Any(_) => 0,
                                Ingress::ShardAware(_) => {
                                    scheduler::data_item::DataItem::parse(&bytes).map_or(0, |item| ingress.pick(&item))
                                }
                            };
                            (bytes, to)
                        }
                        None => {
                            let item = workload.item(first + ticket);
                            (item.to_bytes(), ingress.pick(&item))
                        }
                    };
                    let client = &clients[to];
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
                    let sent = Instant::now();
                    match client.post_bytes(&bytes) {
                        Ok(_) => h.push((due.elapsed(), sent.elapsed())),
                        Err(engine::client::ClientError::Status { status: 503, .. }) if refusals_expected => {
                            refused.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => return Err(format!("ticket {}: {e}", first + ticket)),
                    }
                }
            })
        })
        .collect();
    let (mut from_due, mut from_sent) = (histogram(), histogram());
    for worker in workers {
        for (due, sent) in worker.join().map_err(|_| "a load thread panicked".to_owned())?? {
            record(&mut from_due, due);
            record(&mut from_sent, sent);
        }
    }
    Ok((
        began.elapsed().as_secs_f64(),
        from_due,
        from_sent,
        refused.load(Ordering::Relaxed),
    ))
}

/// Requests the node's shards have handed to another shard so far (every shard's
/// `hewitt_requests_handed_over_total`).
fn handed_over(client: &Client) -> Result<f64, String> {
    let page = client.get_bytes("/metrics").map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&page)
        .lines()
        .filter(|line| line.starts_with("hewitt_requests_handed_over_total"))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum())
}

/// The node's count of assigned messages once it has evaluated everything it was given.
fn drained(client: &Client) -> Result<u64, String> {
    let mut last = None;
    loop {
        let health = client.get("/health").map_err(|e| e.to_string())?;
        let assigned = health["assigned"].as_u64().unwrap_or(0);
        if health["backlog"].as_u64() == Some(0) && last == Some(assigned) {
            return Ok(assigned);
        }
        last = Some(assigned);
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Runs `scenario` over HTTP against a node on a fresh data dir under `work_dir`.
pub fn run(scenario: Scenario, work_dir: &Path, options: &HttpOptions) -> Result<ScenarioRun, String> {
    let data_dir = work_dir.join(format!("http-{}-{}", scenario.name(), std::process::id()));
    let mut spec = options.node_spec(&data_dir, options.clients.max(options.open_loop_clients))?;
    if scenario == Scenario::Spawn {
        spec.instance_count_max = Some(SPAWN_STORM_PROCESSES_MAX as u32 + 100);
    }
    let node = NodeProcess::start(&spec)?;
    let url = node.url.clone();
    let setup = Client::new(&url, Signer::generate_ed25519());
    let workload = prepare(scenario, options.processes, node.address, &mut |item| {
        setup.post_item(&item).map(drop).map_err(|e| e.to_string())
    })?;
    let workload = Arc::new(workload);
    let cores = options.load_cores();
    let processes = match &*workload {
        Workload::Counter { targets, .. } => targets.len(),
        Workload::Pingpong { pairs, .. } => pairs.len() * 2,
        Workload::Spawn { .. } | Workload::Exchange { .. } => 1,
    };
    eprintln!(
        "http {}: {processes} processes, {} clients, {} shards, node at {url}",
        scenario.name(),
        options.clients,
        options.shards
    );
    // A spawn storm's phases are capped (see SPAWN_STORM_PROCESSES_MAX): a quarter each.
    let cap = if scenario == Scenario::Spawn {
        SPAWN_STORM_PROCESSES_MAX / (1 + options.loads.len() as u64)
    } else {
        u64::MAX
    };

    let mut first_ticket = 0;
    let mut assigned = drained(&setup)?;
    let mut phase = |label: String, load: Option<f64>, total: u64, pace: Pace| -> Result<Phase, String> {
        let clients = match pace {
            Pace::Closed => options.clients,
            Pace::Open { .. } => options.open_loop_clients,
        };
        let cpu_before = node.shard_cpu_ns();
        let handed_before = handed_over(&setup)?;
        let (seconds, latency) = drive(
            &node.ingress,
            &workload,
            cores.as_ref(),
            clients,
            first_ticket,
            total,
            pace,
        )?;
        first_ticket += total;
        let began = match pace {
            Pace::Closed => Instant::now() - Duration::from_secs_f64(seconds),
            Pace::Open { start, .. } => start,
        };
        let now_assigned = drained(&setup)?;
        let shard_cpu_ns = node.shard_cpu_ns().saturating_sub(cpu_before);
        let handed = handed_over(&setup)? - handed_before;
        let all_seconds = began.elapsed().as_secs_f64();
        let all = now_assigned - assigned;
        assigned = now_assigned;
        let phase = Phase {
            label,
            load,
            offered_per_s: match pace {
                Pace::Closed => None,
                Pace::Open { rate, .. } => Some(rate),
            },
            achieved_per_s: total as f64 / seconds,
            all_messages_per_s: all as f64 / all_seconds,
            latency: Latency::of(&latency),
            shard_cpu_us_per_message: shard_cpu_ns as f64 / 1e3 / total.max(1) as f64,
            handed_over_share: handed / total.max(1) as f64,
            shards_busy: shard_cpu_ns as f64 / 1e9 / all_seconds / options.shards.max(1) as f64,
        };
        eprintln!("  {}", phase.line());
        Ok(phase)
    };
    let peak = phase(
        "closed loop (peak)".to_owned(),
        None,
        options.messages.min(cap),
        Pace::Closed,
    )?;
    let mut open_loop = Vec::new();
    for &load in &options.loads {
        let rate = peak.achieved_per_s * load;
        let total = ((rate * options.seconds).max(1.0) as u64).min(cap);
        let start = Instant::now() + Duration::from_millis(50);
        open_loop.push(phase(
            format!("open loop {:.0} %", load * 100.0),
            Some(load),
            total,
            Pace::Open { start, rate },
        )?);
    }
    let health = setup.get("/health").map_err(|e| e.to_string())?;
    node.stop()?;
    std::fs::remove_dir_all(&data_dir).map_err(|e| format!("{}: {e}", data_dir.display()))?;
    Ok(ScenarioRun {
        scenario: scenario.name().to_owned(),
        driver: "http".to_owned(),
        workload: scenario.describe(processes),
        processes,
        clients: options.clients,
        open_loop_clients: options.open_loop_clients,
        shards: options.shards,
        peak,
        open_loop,
        group_commit: health.get("log").cloned().unwrap_or(Value::Null),
    })
}

/// What an overload run measured (see [`overload`]).
#[derive(Clone, Debug, serde::Serialize)]
pub struct OverloadRun {
    pub shards: usize,
    pub writes_in_flight_max: usize,
    pub write_wait_ms: u64,
    /// Closed-loop peak of the `many` scenario (client messages/s): the median of `peaks_per_s`,
    /// two closed loops before the flood and one after.
    pub peak_per_s: f64,
    pub peaks_per_s: Vec<f64>,
    /// The rate asked of the open loop, and the rate its clients managed to send at.
    pub offered_per_s: f64,
    pub sent_per_s: f64,
    pub clients: usize,
    /// Acknowledged (202) and refused (503) messages per second under overload.
    pub accepted_per_s: f64,
    pub refused_per_s: f64,
    /// p99 of the acknowledged messages, from their due time (µs). Where the threads fall
    /// behind the offered rate (`sent_per_s` well under `offered_per_s`), this holds their lag.
    pub accepted_p99_us: u64,
    /// p99 of the acknowledged messages from when each was sent (µs): the node's own part,
    /// which its line bounds.
    pub accepted_sent_p99_us: u64,
    /// Resident memory of the node's process before, the most in each half of the flood
    /// (sampled every 250 ms), and after.
    pub rss_before_bytes: u64,
    pub rss_first_half_max_bytes: u64,
    pub rss_second_half_max_bytes: u64,
    pub rss_after_bytes: u64,
    /// Of `rss_after_bytes`, the file-backed pages (`RssFile`: the log's mapped segments, the
    /// binary) and the messages the node assigned by then: most of the rest is what it keeps
    /// per message (its result, in memory up to `limits.results_memory_bytes_max` a shard).
    pub rss_file_after_bytes: u64,
    pub assigned_after: u64,
}

/// CPU time the threads named `hewitt-shard-<i>` under `tasks` (a `/proc/<pid>/task`) have
/// run, in ns (their `schedstat`); threads that ended are not counted.
fn shard_cpu_ns_of(tasks: &str) -> u64 {
    let Ok(tasks) = std::fs::read_dir(tasks) else {
        return 0;
    };
    tasks
        .flatten()
        .filter(|task| {
            std::fs::read_to_string(task.path().join("comm")).is_ok_and(|comm| comm.starts_with("hewitt-shard-"))
        })
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// A byte figure (`VmRSS`, `RssAnon`, …) of a `/proc/<pid>/status`; 0 if absent.
fn status_bytes_of(status: &str, field: &str) -> u64 {
    std::fs::read_to_string(status)
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

/// A byte figure of this process from `/proc/self/status` (`VmRSS`, `RssAnon`, …); 0 if absent.
pub fn status_bytes(field: &str) -> u64 {
    status_bytes_of("/proc/self/status", field)
}

/// Overload: the `many` scenario's closed-loop peak, then an open loop offering `factor` times
/// that rate from `clients` threads for `options.seconds`. A node that sheds load keeps its
/// acknowledged rate near the peak and refuses the rest with 503.
///
/// The peak is the median of three closed loops, two before the flood and one after: single
/// closed loops on the 16-core machine varied from 35 to 48 thousand messages/s, which made
/// the ratio to one of them say more about that loop than about the flood.
pub fn overload(work_dir: &Path, options: &HttpOptions, factor: f64, clients: usize) -> Result<OverloadRun, String> {
    let data_dir = work_dir.join(format!("http-overload-{}", std::process::id()));
    let mut spec = options.node_spec(&data_dir, clients.max(options.clients))?;
    // Twice the closed loop's concurrency across the shards: room for the peak, and fewer
    // than the open loop's threads, so that the excess is refused.
    let writes_in_flight_max = (options.clients * 2).div_ceil(options.shards).max(8);
    spec.writes_in_flight_max = Some(writes_in_flight_max);
    // A line as long: the rest of the open loop's threads are held, then refused.
    spec.writes_waiting_max = Some(writes_in_flight_max);
    spec.write_wait_ms = options.write_wait_ms;
    let write_wait_ms = spec.config()?.http.write_wait_ms;
    let node = NodeProcess::start(&spec)?;
    let url = node.url.clone();
    let setup = Client::new(&url, Signer::generate_ed25519());
    let workload = prepare(Scenario::Many, options.processes, node.address, &mut |item| {
        setup.post_item(&item).map(drop).map_err(|e| e.to_string())
    })?;
    let workload = Arc::new(workload);
    let cores = options.load_cores();
    // Both phases send items signed ahead, so that the load generator spends its share of the
    // cores sending rather than signing. Signed on every core: 10x the peak for seconds is
    // millions of items on a large machine.
    let sign = |first: u64, count: u64| -> Arc<Vec<Vec<u8>>> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
        let chunk = count.div_ceil(threads).max(1);
        let parts: Vec<Vec<Vec<u8>>> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|i| {
                    let (from, to) = (
                        (first + i * chunk).min(first + count),
                        (first + (i + 1) * chunk).min(first + count),
                    );
                    let workload = &workload;
                    scope.spawn(move || (from..to).map(|t| workload.item(t).to_bytes()).collect())
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().expect("a signing thread panicked"))
                .collect()
        });
        Arc::new(parts.into_iter().flatten().collect())
    };
    let closed_loop = |first: u64| -> Result<f64, String> {
        let (seconds, _, _, _) = drive_counting(
            &node.ingress,
            &workload,
            Some(&sign(first, options.messages)),
            cores.as_ref(),
            options.clients,
            first,
            options.messages,
            Pace::Closed,
            false,
        )?;
        drained(&setup)?;
        Ok(options.messages as f64 / seconds)
    };
    let mut peaks = vec![closed_loop(0)?, closed_loop(options.messages)?];
    let offered_per_s = peaks.iter().copied().fold(0.0, f64::max) * factor;
    let flood_first = 2 * options.messages;
    let total = (offered_per_s * options.seconds).max(1.0) as u64;
    let signed = sign(flood_first, total);
    let rss_before_bytes = node.status_bytes("VmRSS");
    // Resident memory sampled while the flood lasts: bounded memory is a flat second half.
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let sampling = Arc::clone(&sampling);
        let status = format!("/proc/{}/status", node.child.id());
        std::thread::spawn(move || {
            let mut samples = Vec::new();
            while sampling.load(Ordering::Relaxed) {
                samples.push(status_bytes_of(&status, "VmRSS"));
                std::thread::sleep(Duration::from_millis(250));
            }
            samples
        })
    };
    let start = Instant::now() + Duration::from_millis(50);
    let driven = drive_counting(
        &node.ingress,
        &workload,
        Some(&signed),
        cores.as_ref(),
        clients,
        flood_first,
        total,
        Pace::Open {
            start,
            rate: offered_per_s,
        },
        true,
    );
    sampling.store(false, Ordering::Relaxed);
    let samples = sampler.join().map_err(|_| "the memory sampler panicked".to_owned())?;
    let (seconds, latency, latency_from_sent, refused) = driven?;
    let half = samples.len() / 2;
    let rss_first_half_max_bytes = samples[..half].iter().copied().max().unwrap_or(0);
    let rss_second_half_max_bytes = samples[half..].iter().copied().max().unwrap_or(0);
    let rss_after_bytes = node.status_bytes("VmRSS");
    let rss_file_after_bytes = node.status_bytes("RssFile");
    let accepted = total - refused;
    let assigned_after = drained(&setup)?;
    drop(signed);
    peaks.push(closed_loop(flood_first + total)?);
    let mut sorted = peaks.clone();
    sorted.sort_by(f64::total_cmp);
    let peak_per_s = sorted[1];
    node.stop()?;
    std::fs::remove_dir_all(&data_dir).map_err(|e| format!("{}: {e}", data_dir.display()))?;
    let run = OverloadRun {
        shards: options.shards,
        writes_in_flight_max,
        write_wait_ms,
        peak_per_s,
        peaks_per_s: peaks,
        offered_per_s,
        sent_per_s: total as f64 / seconds,
        clients,
        accepted_per_s: accepted as f64 / seconds,
        refused_per_s: refused as f64 / seconds,
        accepted_p99_us: latency.value_at_quantile(0.99),
        accepted_sent_p99_us: latency_from_sent.value_at_quantile(0.99),
        rss_before_bytes,
        rss_first_half_max_bytes,
        rss_second_half_max_bytes,
        rss_after_bytes,
        rss_file_after_bytes,
        assigned_after,
    };
    eprintln!(
        "overload: peak {:.0}/s, offered {:.0}/s (sent {:.0}/s), accepted {:.0}/s, refused {:.0}/s, p99 {} µs from sent",
        run.peak_per_s,
        run.offered_per_s,
        run.sent_per_s,
        run.accepted_per_s,
        run.refused_per_s,
        run.accepted_sent_p99_us
    );
    Ok(run)
}
