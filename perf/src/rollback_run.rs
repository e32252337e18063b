//! Rollback on a 64 MiB process through the compute API: the counter sample grown to 64 MiB by
//! one large message, then `Fail` messages (which add 1000 to the count, a page or so written
//! with the msg and output buffers, and return an Error result) undone in place, beside the
//! same process's `Increment` with and without write tracking, and a full-copy rollback (a
//! fresh instance from a whole-memory snapshot, what a rollback costs without tracking before
//! any replay).

use std::sync::Arc;
use std::time::Instant;

use engine::abi::{env_json, msg_json, Placement};
use engine::compute::dirty::DirtyTracker;
use engine::compute::{samples, ComputeConfig, Evaluation, ProcessInstance, ProcessLimits, Runtime, Undone};
use scheduler::signer::Signer;
use scheduler::tags::Tag;
use scheduler::{BlockHeight, HashChain, Nonce, ProcessId, Timestamp};
use serde::Serialize;

const MIB: u64 = 1 << 20;
const LIMITS: ProcessLimits = ProcessLimits {
    memory_bytes_max: 128 * MIB,
    fuel_per_message: 10_000_000_000,
};

#[derive(Clone, Debug, Serialize)]
pub struct RollbackRun {
    pub memory_bytes: u64,
    /// Medians, µs.
    pub untracked_message_us: f64,
    pub tracked_message_us: f64,
    pub undone_message_us: f64,
    pub full_copy_rollback_us: f64,
    /// Pages the undone message put back (each time).
    pub pages_undone: usize,
    /// Why in-place undo was not measured, if it was not.
    pub untracked_reason: Option<String>,
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn time(runs: usize, mut each: impl FnMut()) -> f64 {
    median(
        (0..runs)
            .map(|_| {
                let began = Instant::now();
                each();
                began.elapsed().as_secs_f64() * 1e6
            })
            .collect(),
    )
}

fn stands(evaluation: Evaluation) {
    if let Evaluation::Failed { reason, .. } = evaluation {
        panic!("the counter failed: {reason}");
    }
}

pub fn run(runs: usize) -> Result<RollbackRun, String> {
    let runtime = Runtime::new(ComputeConfig {
        instance_count_max: 8,
        ..ComputeConfig::default()
    })
    .map_err(|e| e.to_string())?;
    let wasm = samples::wasm("counter").ok_or("no counter sample")?;
    let module = runtime
        .compile(&wasm, engine::compute::MODULE_FORMAT_WASM32)
        .map_err(|e| e.to_string())?;
    let signer = Signer::generate_ed25519();
    let process = signer.sign(None, None, vec![Tag::new("Type", "Process")], Vec::new());
    let module_item = signer.sign(None, None, vec![Tag::new("Type", "Module")], Vec::new());
    let env = env_json(&process, &module_item);
    let placement = Placement {
        process: ProcessId::from(process.id()),
        nonce: Nonce(1),
        timestamp: Timestamp(1_700_000_000_000),
        block_height: BlockHeight(1),
        hash_chain: HashChain([0; 32]),
    };
    let message = |action: &str, bytes: usize| {
        let item = signer.sign(
            Some(placement.process.0),
            None,
            vec![Tag::new("Type", "Message"), Tag::new("Action", action)],
            vec![b'x'; bytes],
        );
        msg_json(&item, &placement, false)
    };
    let increment = message("Increment", 100);
    let fail = message("Fail", 100);
    let grown = |instance: &mut ProcessInstance| {
        stands(instance.handle(&message("Increment", (64 * MIB - 96 * 1024) as usize), &env));
        instance.memory().len() as u64
    };

    let mut untracked = module.instantiate(LIMITS).map_err(|e| e.to_string())?;
    let memory_bytes = grown(&mut untracked);
    let untracked_message_us = time(runs, || stands(untracked.handle(&increment, &env)));
    let snapshot = untracked.snapshot();
    let full_copy_rollback_us = time(runs.min(20), || {
        stands(untracked.handle(&fail, &env));
        let restored = module.instantiate_from(LIMITS, &snapshot).expect("fits");
        std::hint::black_box(restored.memory().len());
    });
    drop(untracked);

    let (mut tracked_message_us, mut undone_message_us, mut pages_undone, mut untracked_reason) = (0.0, 0.0, 0, None);
    match DirtyTracker::new() {
        Ok(tracker) => {
            let tracker = Arc::new(tracker);
            let mut tracked = module.instantiate(LIMITS).map_err(|e| e.to_string())?;
            grown(&mut tracked);
            tracked.track(&tracker, None)?;
            tracked_message_us = time(runs, || {
                stands(tracked.handle(&increment, &env));
                tracked.keep_message();
            });
            undone_message_us = time(runs, || {
                stands(tracked.handle(&fail, &env));
                match tracked.undo_message() {
                    Undone::InPlace { pages } => pages_undone = pages,
                    Undone::Rebuild => panic!("a tracked instance of unchanged size is undone in place"),
                }
            });
        }
        Err(error) => untracked_reason = Some(error.to_string()),
    }
    Ok(RollbackRun {
        memory_bytes,
        untracked_message_us,
        tracked_message_us,
        undone_message_us,
        full_copy_rollback_us,
        pages_undone,
        untracked_reason,
    })
}
