//! The `hewitt` command line: `serve`, `demo`, client verbs against a running node, and the
//! operator's `log verify` / `log repair` on a data dir.
//! `main.rs` only calls `cli::main`.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use scheduler::log::inspect::{self, RepairPlan, ScanOptions};
use scheduler::signer::Signer;
use scheduler::tags::Tag;
use scheduler::{MessageId, ModuleId, ProcessId};

use crate::client::Client;
use crate::inspect::{Status, Verification};
use crate::node::{self, NodeConfig};

#[derive(Parser)]
#[command(
    name = "hewitt",
    version,
    about = "Hewitt: an AO node (scheduler, compute and messenger units in one engine)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs a node until SIGTERM or SIGINT (then stops accepting, flushes the log and exits 0;
    /// a second signal exits at once).
    Serve {
        /// Data directory (log segments and the node key).
        #[arg(long, env = "HEWITT_DATA_DIR", default_value = "hewitt-data")]
        data_dir: PathBuf,
        /// HTTP listen address.
        #[arg(long, env = "HEWITT_LISTEN", default_value = "127.0.0.1:8734")]
        listen: SocketAddr,
        /// Pin the shard to this CPU.
        #[arg(long, env = "HEWITT_CPU")]
        cpu: Option<usize>,
    },
    /// Starts a node on a data dir, runs the sample processes over HTTP and prints what it saw.
    Demo {
        #[arg(long, default_value = "hewitt-data/demo")]
        data_dir: PathBuf,
        /// Messages sent in the throughput phase.
        #[arg(long, default_value_t = 4000)]
        messages: usize,
        /// Concurrent clients in the throughput phase.
        #[arg(long, default_value_t = 16)]
        clients: usize,
    },
    /// Creates an Ed25519 key file (JWK) for the client verbs.
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// Loads a module (.wasm, or .wat compiled here) into a node.
    Module {
        #[command(flatten)]
        node: NodeArgs,
        /// Path of the module (.wasm, or .wat compiled here).
        #[arg(long, required_unless_present = "sample", conflicts_with = "sample")]
        wasm: Option<PathBuf>,
        /// One of Hewitt's sample processes instead of a file: counter, pingpong, spawner, trap,
        /// loop, memhog, exchange.
        #[arg(long)]
        sample: Option<String>,
        #[arg(long, default_value = "wasm32-unknown-unknown")]
        format: String,
        /// Extra tags, NAME=VALUE.
        #[arg(long = "tag", value_parser = parse_tag)]
        tags: Vec<Tag>,
    },
    /// Spawns a process of a module.
    Spawn {
        #[command(flatten)]
        node: NodeArgs,
        #[arg(long)]
        module: ModuleId,
        #[arg(long = "tag", value_parser = parse_tag)]
        tags: Vec<Tag>,
        #[arg(long, default_value = "")]
        data: String,
    },
    /// Sends a message to a process and prints its result.
    Send {
        #[command(flatten)]
        node: NodeArgs,
        #[arg(long)]
        process: ProcessId,
        #[arg(long)]
        action: Option<String>,
        #[arg(long = "tag", value_parser = parse_tag)]
        tags: Vec<Tag>,
        #[arg(long, default_value = "")]
        data: String,
    },
    /// Operator tools for a data dir's log: verify it, repair it.
    Log {
        #[command(subcommand)]
        command: LogCommand,
    },
    /// Prints the result of a message.
    Result {
        #[arg(long, default_value = "http://127.0.0.1:8734")]
        url: String,
        #[arg(long)]
        process: ProcessId,
        #[arg(long)]
        message: MessageId,
    },
}

#[derive(Subcommand)]
enum LogCommand {
    /// Checks every frame and every record of the log, read-only (it can run beside a node, but
    /// then sees a moving tail). Progress on stderr, the summary and each problem on stdout.
    /// Exit 0 if clean, 1 if any problem.
    Verify {
        #[command(flatten)]
        log: LogArgs,
    },
    /// Cuts the log back to its intact prefix so that a node starts again: zeroes from the first
    /// bad frame, moves later segments into <data-dir>/log/quarantine-<unix-seconds>/ (nothing
    /// is deleted). Refuses while a node has the log open. Exit 0 when done.
    Repair {
        #[command(flatten)]
        log: LogArgs,
        /// Proceed without asking for confirmation on stdin.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(clap::Args)]
struct LogArgs {
    /// Data directory of the node (the log is in its log/ folder).
    #[arg(long, env = "HEWITT_DATA_DIR", default_value = "hewitt-data")]
    data_dir: PathBuf,
    /// Torn-tail window in bytes: the batch_bytes_max the node runs with (default: the node's).
    #[arg(long)]
    window_bytes: Option<u64>,
}

impl LogArgs {
    fn scan_options(&self) -> ScanOptions {
        let mut options = crate::inspect::node_scan_options();
        if let Some(window_bytes) = self.window_bytes {
            options.window_bytes = window_bytes;
        }
        options
    }
}

#[derive(clap::Args)]
struct NodeArgs {
    /// The node's URL.
    #[arg(long, default_value = "http://127.0.0.1:8734")]
    url: String,
    /// Key file made by `hewitt keygen` (Ed25519 JWK or an Arweave RSA JWK).
    #[arg(long)]
    key: PathBuf,
}

fn parse_tag(text: &str) -> Result<Tag, String> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| format!("tag {text:?} is not NAME=VALUE"))?;
    Ok(Tag::new(name, value))
}

fn client(args: &NodeArgs) -> Result<Client, String> {
    let signer = Signer::load(&args.key).map_err(|e| format!("key {}: {e}", args.key.display()))?;
    Ok(Client::new(&args.url, signer))
}

fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Serve { data_dir, listen, cpu } => {
            let mut config = NodeConfig::new(data_dir, listen);
            config.cpu = cpu;
            // Registered before the node starts, so a signal at any moment is seen.
            let mut signals =
                signal_hook::iterator::Signals::new([signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT])
                    .map_err(|e| format!("cannot watch for signals: {e}"))?;
            let node = node::start(config).map_err(|e| e.to_string())?;
            println!("hewitt node {} serving on http://{}", node.address, node.addr);
            let signal = signals.forever().next();
            tracing::info!(?signal, "stopping: no new connections, flushing the log");
            // A second signal stops at once: whatever was acknowledged is already durable.
            std::thread::spawn(move || {
                if signals.forever().next().is_some() {
                    eprintln!("hewitt: second signal, exiting now");
                    std::process::exit(130);
                }
            });
            node.stop().map_err(|e| e.to_string())?;
            tracing::info!("stopped");
            Ok(())
        }
        Command::Demo {
            data_dir,
            messages,
            clients,
        } => {
            let options = crate::demo::DemoOptions { messages, clients };
            crate::demo::run(&data_dir, &options, &mut std::io::stdout()).map_err(|e| e.to_string())
        }
        Command::Keygen { out } => {
            let signer = Signer::generate_ed25519();
            signer.save(&out).map_err(|e| e.to_string())?;
            println!("{}", signer.address());
            Ok(())
        }
        Command::Module {
            node,
            wasm,
            sample,
            format,
            tags,
        } => {
            let client = client(&node)?;
            let bytes = match (wasm, sample) {
                (_, Some(name)) => crate::compute::samples::wasm(&name).ok_or_else(|| {
                    format!(
                        "no sample called {name:?}; there are {:?}",
                        crate::compute::samples::NAMES
                    )
                })?,
                (Some(wasm), None) => {
                    let bytes = std::fs::read(&wasm).map_err(|e| format!("{}: {e}", wasm.display()))?;
                    wat::parse_bytes(&bytes)
                        .map_err(|e| format!("{}: {e}", wasm.display()))?
                        .into_owned()
                }
                (None, None) => return Err("give --wasm PATH or --sample NAME".into()),
            };
            let id = client.load_module(bytes, &format, &tags).map_err(|e| e.to_string())?;
            println!("{id}");
            Ok(())
        }
        Command::Spawn {
            node,
            module,
            tags,
            data,
        } => {
            let client = client(&node)?;
            let scheduler = client.scheduler().map_err(|e| e.to_string())?;
            let pid = client
                .spawn(module, scheduler, &tags, data.as_bytes())
                .map_err(|e| e.to_string())?;
            println!("{pid}");
            Ok(())
        }
        Command::Send {
            node,
            process,
            action,
            mut tags,
            data,
        } => {
            let client = client(&node)?;
            if let Some(action) = action {
                tags.insert(0, Tag::new("Action", action));
            }
            let id = client
                .send(process, &tags, data.as_bytes())
                .map_err(|e| e.to_string())?;
            let result = client.result(process, id).map_err(|e| e.to_string())?;
            println!("{}", serde_json::json!({"id": id.to_string(), "result": result}));
            Ok(())
        }
        Command::Log { command } => match command {
            LogCommand::Verify { log } => log_verify(&log),
            LogCommand::Repair { log, yes } => log_repair(&log, yes),
        },
        Command::Result { url, process, message } => {
            let client = Client::new(&url, Signer::generate_ed25519());
            let result = client.result(process, message).map_err(|e| e.to_string())?;
            println!("{result}");
            Ok(())
        }
    }
}

/// Seconds between two progress lines of `log verify`.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

/// Prints a progress line to stderr at most once per [`PROGRESS_INTERVAL`]; on a terminal it
/// rewrites one line.
struct ProgressLine {
    terminal: bool,
    last: Instant,
    printed: bool,
}

impl ProgressLine {
    fn new() -> ProgressLine {
        ProgressLine {
            terminal: std::io::stderr().is_terminal(),
            last: Instant::now(),
            printed: false,
        }
    }

    fn show(&mut self, status: &Status) {
        if self.last.elapsed() < PROGRESS_INTERVAL {
            return;
        }
        self.last = Instant::now();
        let line = format!(
            "log verify: {:.1} of {:.1} MiB, {} records, {} messages",
            mib(status.done_bytes),
            mib(status.total_bytes),
            status.counts.records,
            status.counts.messages
        );
        if self.terminal {
            eprint!("\r{line}");
            self.printed = true;
        } else {
            eprintln!("{line}");
        }
    }

    fn finish(&self) {
        if self.printed {
            eprintln!();
        }
    }
}

fn log_verify(args: &LogArgs) -> Result<(), String> {
    let mut progress = ProgressLine::new();
    let verification = crate::inspect::verify(&args.data_dir, &args.scan_options(), &mut |s| progress.show(s))
        .map_err(|e| e.to_string())?;
    progress.finish();
    let Verification {
        log,
        counts,
        problems,
        elapsed,
    } = &verification;
    let log_dir = crate::inspect::log_dir(&args.data_dir);
    let segment_bytes = log.segment_bytes.map_or("unknown".to_owned(), |b| b.to_string());
    let last_lsn = log.last_lsn.map_or("none".to_owned(), |l| l.0.to_string());
    println!(
        "log {}: {} segments of {segment_bytes} bytes, {} records, {} bytes, last lsn {last_lsn}, end lsn {}",
        log_dir.display(),
        log.segments,
        log.records,
        log.bytes,
        log.end_lsn.0
    );
    println!(
        "records: {} modules, {} processes, {} messages",
        counts.modules, counts.processes, counts.messages
    );
    println!(
        "scanned in {:.3} s: {:.0} messages/s",
        elapsed.as_secs_f64(),
        verification.messages_per_s()
    );
    for problem in &log.problems {
        println!("problem: {problem}");
    }
    for problem in problems {
        println!("problem: {problem}");
    }
    let count = log.problems.len() + problems.len();
    if count == 0 {
        println!("clean");
        Ok(())
    } else {
        println!("{count} problems");
        Err(format!("log verify found {count} problems in {}", log_dir.display()))
    }
}

fn log_repair(args: &LogArgs, yes: bool) -> Result<(), String> {
    let log_dir = crate::inspect::log_dir(&args.data_dir);
    let now_unix_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| format!("system clock before 1970: {e}"))?
        .as_secs();
    let mut confirm = |plan: &RepairPlan| -> bool {
        for problem in &plan.report.problems {
            println!("problem: {problem}");
        }
        println!("repair plan (quarantine folder {}):", plan.quarantine.display());
        for action in &plan.actions {
            println!("  {action}");
        }
        println!("the log will then end at lsn {}", plan.report.end_lsn.0);
        if yes {
            return true;
        }
        print!("type yes to proceed: ");
        let _ = std::io::stdout().flush();
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer).is_ok() && answer.trim() == "yes"
    };
    let plan = inspect::repair(&log_dir, &args.scan_options(), now_unix_s, &mut (), &mut confirm)
        .map_err(|e| e.to_string())?;
    if plan.actions.is_empty() {
        println!("nothing to repair in {}", log_dir.display());
    } else {
        println!(
            "repaired {}: the log ends at lsn {}; set-aside data is in {}",
            log_dir.display(),
            plan.report.end_lsn.0,
            plan.quarantine.display()
        );
    }
    Ok(())
}

/// Entry point of the `hewitt` binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo prints its own report; the node's info lines would only interleave with it.
    let level = if matches!(cli.command, Command::Demo { .. }) {
        "warn"
    } else {
        "info"
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("HEWITT_LOG").unwrap_or_else(|_| level.into()))
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("hewitt: {error}");
            ExitCode::FAILURE
        }
    }
}
