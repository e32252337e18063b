//! `hewitt-perf`: measures this machine's limits that Hewitt's figures are compared against.
//! Today: the raw append + fdatasync latency of a disk (the floor under durable acknowledgement).
//! The full load generator comes with the [perf] work.

use std::path::PathBuf;

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "hewitt-perf",
    about = "Measures the raw limits Hewitt's figures are compared against"
)]
struct Args {
    /// Directory on the disk to measure (a data dir's disk).
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// Rounds of append + fdatasync.
    #[arg(long, default_value_t = 1000)]
    rounds: usize,
    /// Bytes appended per round.
    #[arg(long, default_value_t = 4096)]
    block_bytes: usize,
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let mut latencies = engine::probe::fdatasync_latencies(&args.dir, args.rounds, args.block_bytes)?;
    let label = format!(
        "raw {} B append + fdatasync on {}",
        args.block_bytes,
        args.dir.display()
    );
    engine::probe::summary(&mut std::io::stdout(), &label, &mut latencies)
}
