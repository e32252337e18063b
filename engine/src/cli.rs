//! The `hewitt` command line: `serve`, `demo`, client verbs against a running node, and the
//! operator's `log verify` / `log repair` on a data dir.
//! `main.rs` only calls `cli::main`.

use std::io::{IsTerminal, Write};
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
use crate::node;

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
        #[command(flatten)]
        config: ConfigArgs,
        /// Ignore the checkpoints this once: replay every process from genesis (and write
        /// checkpoints afresh).
        #[arg(long)]
        from_genesis: bool,
    },
    /// Replays processes from their logs and compares every result and checkpoint the node holds
    /// with what the replay computes; reports messages/s. Needs the node stopped (it opens the
    /// logs as a start does) and writes nothing. Progress on stderr, the summary and each
    /// difference on stdout. Exit 0 if everything agrees, 1 if anything differs.
    Verify {
        #[command(flatten)]
        config: ConfigArgs,
        /// Only this process.
        // Ids are base64url: one may begin with '-'.
        #[arg(long, allow_hyphen_values = true)]
        process: Option<ProcessId>,
        /// Where the replay starts: `genesis` (every message again; checks every checkpoint) or
        /// `checkpoint` (resume as a start does; checks the tail after it).
        #[arg(long, default_value = "genesis", value_parser = ["genesis", "checkpoint"])]
        from: String,
    },
    /// The node's configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
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
        /// loop, memhog, exchange, echo.
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
        // Ids are base64url: one may begin with '-'.
        #[arg(long, allow_hyphen_values = true)]
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
        // Ids are base64url: one may begin with '-'.
        #[arg(long, allow_hyphen_values = true)]
        process: ProcessId,
        // Ids are base64url: one may begin with '-'.
        #[arg(long, allow_hyphen_values = true)]
        message: MessageId,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Prints the effective configuration (defaults, then the file, the environment and the
    /// flags) as a commented TOML file that --config accepts; exit 2 if it is invalid.
    Print {
        #[command(flatten)]
        config: ConfigArgs,
    },
}

/// Where a node's configuration comes from; lowest precedence first: defaults, --config file,
/// environment (HEWITT_...), flags.
#[derive(clap::Args)]
struct ConfigArgs {
    /// TOML configuration file (`hewitt config print` writes one with every field).
    #[arg(long, env = "HEWITT_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data directory: log segments and the node key (field data_dir, env HEWITT_DATA_DIR;
    /// default hewitt-data).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<String>,
    /// HTTP listen address (field listen, env HEWITT_LISTEN; default 127.0.0.1:8734).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Pin the shard to this CPU (field cpu, env HEWITT_CPU).
    #[arg(long, value_name = "N")]
    cpu: Option<String>,
    /// Sets any field, e.g. --set log.batch_bytes_max=32MiB; repeatable, beats everything else.
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = crate::config::Override::parse_set)]
    set: Vec<crate::config::Override>,
}

impl ConfigArgs {
    fn load(self) -> Result<crate::config::Loaded, String> {
        use crate::config::Override;
        let mut overrides = Vec::new();
        for (key, flag, value) in [
            ("data_dir", "--data-dir", self.data_dir),
            ("listen", "--listen", self.listen),
            ("cpu", "--cpu", self.cpu),
        ] {
            if let Some(value) = value {
                overrides.push(Override {
                    key: key.to_owned(),
                    value,
                    flag: flag.to_owned(),
                });
            }
        }
        overrides.extend(self.set);
        crate::config::load(self.config.as_deref(), &|name| std::env::var(name).ok(), &overrides)
    }
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
        Command::Serve { .. } | Command::Config { .. } | Command::Verify { .. } => {
            unreachable!("serve and config are run by main, which reads the configuration first")
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

/// Prints progress to stderr at most once per [`PROGRESS_INTERVAL`]: on a terminal a bar that
/// rewrites one line, otherwise a plain line each time.
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
        self.show_line(status.done_bytes, status.total_bytes, false, || {
            format!(
                "log verify: {:.1} of {:.1} MiB, {} records, {} messages",
                mib(status.done_bytes),
                mib(status.total_bytes),
                status.counts.records,
                status.counts.messages
            )
        });
    }

    /// Shows `line` with a bar at `done` of `total` (`force`: even within the interval).
    fn show_line(&mut self, done: u64, total: u64, force: bool, line: impl FnOnce() -> String) {
        if !force && self.last.elapsed() < PROGRESS_INTERVAL {
            return;
        }
        self.last = Instant::now();
        let line = line();
        if self.terminal {
            let done = if total == 0 {
                1.0
            } else {
                (done as f64 / total as f64).clamp(0.0, 1.0)
            };
            const WIDTH: usize = 30;
            let filled = (done * WIDTH as f64).round() as usize;
            eprint!(
                "\r[{}{}] {:>3.0} % {line}",
                "#".repeat(filled),
                ".".repeat(WIDTH - filled),
                done * 100.0
            );
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

/// Runs `hewitt verify`; true when everything agrees.
fn verify(config: &node::NodeConfig, from: crate::verify::From, only: Option<ProcessId>) -> Result<bool, String> {
    let mut progress = ProgressLine::new();
    let report = crate::verify::verify(config, from, only, &mut |p| {
        progress.show_line(p.done, p.total, p.done >= p.total, || {
            format!(
                "verify: shard {} of {}: {} of {} messages replayed, {:.1} s",
                p.shard + 1,
                p.shards,
                p.done,
                p.total,
                p.elapsed.as_secs_f64()
            )
        })
    })?;
    progress.finish();
    for problem in &report.problems {
        println!("{problem}");
    }
    println!(
        "{}: {} shards, {} processes, {} evaluations in {:.2} s ({:.0} evaluations/s), {} results and {} checkpoint states compared",
        if report.problems.is_empty() { "verified" } else { "DIFFERENCES" },
        report.shards,
        report.processes,
        report.evaluations,
        report.elapsed.as_secs_f64(),
        report.rate(),
        report.results_compared,
        report.checkpoints_compared
    );
    Ok(report.problems.is_empty())
}

fn log_verify(args: &LogArgs) -> Result<(), String> {
    let log_dirs = crate::inspect::log_dirs(&args.data_dir)?;
    let mut count = 0;
    for log_dir in &log_dirs {
        count += verify_one_log(args, log_dir, log_dirs.len())?;
    }
    if count == 0 {
        println!("clean");
        Ok(())
    } else {
        println!("{count} problems");
        Err(format!(
            "log verify found {count} problems in {}",
            args.data_dir.display()
        ))
    }
}

/// Verifies one shard's log, prints what it found and returns the number of problems.
fn verify_one_log(args: &LogArgs, log_dir: &std::path::Path, shards: usize) -> Result<usize, String> {
    let mut progress = ProgressLine::new();
    let verification = crate::inspect::verify(log_dir, shards, &args.scan_options(), &mut |s| progress.show(s))
        .map_err(|e| e.to_string())?;
    progress.finish();
    let Verification {
        log,
        counts,
        problems,
        elapsed,
    } = &verification;
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
    Ok(log.problems.len() + problems.len())
}

fn log_repair(args: &LogArgs, yes: bool) -> Result<(), String> {
    for log_dir in crate::inspect::log_dirs(&args.data_dir)? {
        repair_one_log(args, &log_dir, yes)?;
    }
    Ok(())
}

fn repair_one_log(args: &LogArgs, log_dir: &std::path::Path, yes: bool) -> Result<(), String> {
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
    let plan =
        inspect::repair(log_dir, &args.scan_options(), now_unix_s, &mut (), &mut confirm).map_err(|e| e.to_string())?;
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
/// Runs a node with `settings` until SIGTERM or SIGINT.
fn serve(settings: crate::config::Settings) -> Result<(), String> {
    // Registered before the node starts, so a signal at any moment is seen.
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT])
        .map_err(|e| format!("cannot watch for signals: {e}"))?;
    let node = node::start(settings.node).map_err(|e| e.to_string())?;
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

/// Sets up log lines on stderr.
fn init_logging(logging: &crate::config::Logging) {
    let filter = tracing_subscriber::EnvFilter::try_new(&logging.filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match logging.format {
        crate::config::LogFormat::Human => builder.init(),
        crate::config::LogFormat::Json => builder.json().with_current_span(true).init(),
    }
}

pub fn main() -> ExitCode {
    if let Err(error) = crate::allocator::never_purge() {
        eprintln!("hewitt: warning: {error}");
    }
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Serve { config, from_genesis } => match config.load() {
            Ok(mut loaded) => {
                init_logging(&loaded.settings.logging);
                loaded.settings.node.checkpoint.from_genesis = from_genesis;
                serve(loaded.settings)
            }
            Err(error) => {
                eprintln!("hewitt: invalid configuration: {error}");
                return ExitCode::from(2);
            }
        },
        Command::Verify { config, process, from } => match config.load() {
            Ok(loaded) => {
                init_logging(&loaded.settings.logging);
                let from = if from == "checkpoint" {
                    crate::verify::From::Checkpoint
                } else {
                    crate::verify::From::Genesis
                };
                match verify(&loaded.settings.node, from, process) {
                    Ok(true) => return ExitCode::SUCCESS,
                    Ok(false) => return ExitCode::from(1),
                    Err(error) => Err(error),
                }
            }
            Err(error) => {
                eprintln!("hewitt: invalid configuration: {error}");
                return ExitCode::from(2);
            }
        },
        Command::Config {
            command: ConfigCommand::Print { config },
        } => match config.load() {
            Ok(loaded) => {
                print!("{}", loaded.to_toml());
                Ok(())
            }
            Err(error) => {
                eprintln!("hewitt: invalid configuration: {error}");
                return ExitCode::from(2);
            }
        },
        command => {
            // The demo prints its own report; the node's info lines would only interleave with it.
            let level = if matches!(command, Command::Demo { .. }) {
                "warn"
            } else {
                "info"
            };
            init_logging(&crate::config::Logging {
                format: crate::config::LogFormat::Human,
                filter: std::env::var("HEWITT_LOG").unwrap_or_else(|_| level.to_owned()),
            });
            run(Cli { command })
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("hewitt: {error}");
            ExitCode::FAILURE
        }
    }
}
