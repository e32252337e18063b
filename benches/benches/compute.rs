//! The compute unit's wasmtime side (`engine::compute`), on the `counter` sample:
//!
//! - `compute/handle/counter_increment`: one `ProcessInstance::handle` of an `Increment`
//!   message (5 tags, 100 B of data) on a live instance: the guest's `malloc` and the copies of
//!   msg and env in, the call, the copy of the output out. The state stays in place.
//! - `compute/message/counter_increment`: the whole per-message path of the shard around it:
//!   `abi::msg_json`, `handle`, `abi::decode_result`.
//! - `compute/instantiate_drop/counter`: checking an instance out of the pool and returning it
//!   (a process woken from nothing), and `compute/instantiate_handle_drop/counter` the same with
//!   one message in between (the pages it dirties are reset when the slot returns).
//! - `compute/snapshot/<size>` and `compute/restore_drop/<size>`: a whole-memory snapshot (for
//!   rollback and hibernation) and an instance rebuilt from it, at the sample's 128 KiB and at
//!   64 MiB (grown by one large message). Snapshots copy the whole memory.
//! - `compute/rollback/64MiB/*`: a failed message undone in place, the pages it wrote put back
//!   (`message_undone`), beside the same process's message that stands, with and without write
//!   tracking, and a full-copy rollback (see [`rollback`]).
//! - `compute/limit/*`: the limits these are compared against, measured in the same run: a
//!   typed host-to-wasm call of an empty function in a default wasmtime engine, a host copy of
//!   64 MiB into a fresh `Vec` (what a snapshot's copy costs at best, page faults included), and
//!   the same copy into a buffer already mapped (the bare memcpy).
//!
//! The runtime is the node's (`ComputeConfig::default()`: pooling allocator, copy-on-write
//! images, fuel), with a pool of 16 slots.
//! Runs once per benchmark in test mode (`cargo test --benches`) so it never rots.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use engine::abi::{decode_result, env_json, msg_json, Placement};
use engine::compute::{
    samples, CompiledModule, ComputeConfig, Evaluation, ProcessInstance, ProcessLimits, Runtime, MODULE_FORMAT_WASM32,
};
use scheduler::signer::Signer;
use scheduler::tags::Tag;
use scheduler::{BlockHeight, DataItem, HashChain, Nonce, ProcessId, Timestamp};

const MIB: u64 = 1024 * 1024;

/// Limits the counter never reaches with the small message.
const LIMITS: ProcessLimits = ProcessLimits {
    memory_bytes_max: 64 * MIB,
    fuel_per_message: 100_000_000,
};

/// Limits for the instance grown to 64 MiB by one large message (the sample scans it).
const LARGE_LIMITS: ProcessLimits = ProcessLimits {
    memory_bytes_max: 128 * MIB,
    fuel_per_message: 10_000_000_000,
};

/// What a shard hands to `handle`: a message, where it sits, and the process's env.
struct Fixture {
    signer: Signer,
    placement: Placement,
    env: Vec<u8>,
}

impl Fixture {
    fn new() -> Fixture {
        let signer = Signer::generate_ed25519();
        let node = signer.address();
        let module_id = ProcessId([8; 32]);
        let process = signer.sign(
            None,
            None,
            vec![
                Tag::new("Data-Protocol", "ao"),
                Tag::new("Variant", "ao.TN.1"),
                Tag::new("Type", "Process"),
                Tag::new("Module", module_id.to_string()),
                Tag::new("Scheduler", node.to_string()),
            ],
            Vec::new(),
        );
        let module = signer.sign(
            None,
            None,
            vec![
                Tag::new("Data-Protocol", "ao"),
                Tag::new("Variant", "ao.TN.1"),
                Tag::new("Type", "Module"),
                Tag::new("Module-Format", MODULE_FORMAT_WASM32),
            ],
            Vec::new(),
        );
        let placement = Placement {
            process: ProcessId(*process.id().as_bytes()),
            nonce: Nonce(1),
            timestamp: Timestamp(1_700_000_000_000),
            block_height: BlockHeight(1_393_008),
            hash_chain: HashChain([3; 32]),
        };
        Fixture {
            env: env_json(&process, &module),
            signer,
            placement,
        }
    }

    /// An `Increment` message with 5 tags and `data_bytes` of data.
    fn increment(&self, data_bytes: usize) -> DataItem {
        self.action("Increment", data_bytes)
    }

    /// A message of `action` with 5 tags and `data_bytes` of data.
    fn action(&self, action: &str, data_bytes: usize) -> DataItem {
        self.signer.sign(
            Some(self.placement.process.0),
            Some(*b"00000000000000000000000000000042"),
            vec![
                Tag::new("Data-Protocol", "ao"),
                Tag::new("Variant", "ao.TN.1"),
                Tag::new("Type", "Message"),
                Tag::new("Action", action),
                Tag::new("Quantity", "1"),
            ],
            vec![b'x'; data_bytes],
        )
    }

    fn msg(&self, item: &DataItem) -> Vec<u8> {
        msg_json(item, &self.placement, false)
    }
}

/// The output of a successful evaluation.
fn returned(evaluation: Evaluation) -> Vec<u8> {
    match evaluation {
        Evaluation::Returned { output, .. } => output,
        Evaluation::Failed { reason, .. } => panic!("the counter failed: {reason}"),
    }
}

fn size_label(bytes: usize) -> String {
    if bytes as u64 >= MIB {
        format!("{}MiB", bytes as u64 / MIB)
    } else {
        format!("{}KiB", bytes / 1024)
    }
}

fn handle(c: &mut Criterion, module: &CompiledModule, fixture: &Fixture) {
    let item = fixture.increment(100);
    let msg = fixture.msg(&item);
    let mut instance = module.instantiate(LIMITS).expect("a slot is free");
    let first = decode_result(&returned(instance.handle(&msg, &fixture.env)), 0);
    assert!(!first.is_error && first.json["Output"] == "1", "{}", first.json);

    let mut group = c.benchmark_group("compute");
    group.bench_function("handle/counter_increment", |b| {
        b.iter(|| returned(instance.handle(black_box(&msg), black_box(&fixture.env))))
    });
    group.bench_function("message/counter_increment", |b| {
        b.iter(|| {
            let msg = msg_json(black_box(&item), &fixture.placement, false);
            let evaluation = instance.handle(&msg, &fixture.env);
            let gas_used = evaluation.gas_used();
            decode_result(&returned(evaluation), gas_used)
        })
    });
    group.bench_function("instantiate_drop/counter", |b| {
        b.iter(|| drop(black_box(module.instantiate(LIMITS).expect("a slot is free"))))
    });
    group.bench_function("instantiate_handle_drop/counter", |b| {
        b.iter(|| {
            let mut fresh = module.instantiate(LIMITS).expect("a slot is free");
            returned(fresh.handle(&msg, &fixture.env))
        })
    });
    group.finish();
}

/// An instance grown to exactly 64 MiB by one message with a little less data (the heap starts
/// at 64 KiB, and the env and output follow the msg).
fn large_instance(module: &CompiledModule, fixture: &Fixture) -> ProcessInstance {
    let item = fixture.increment((64 * MIB - 96 * 1024) as usize);
    let msg = fixture.msg(&item);
    let mut instance = module.instantiate(LARGE_LIMITS).expect("a slot is free");
    returned(instance.handle(&msg, &fixture.env));
    assert_eq!(instance.memory().len() as u64, 64 * MIB);
    instance
}

fn snapshots(c: &mut Criterion, module: &CompiledModule, fixture: &Fixture) {
    let msg = fixture.msg(&fixture.increment(100));
    let mut small = module.instantiate(LIMITS).expect("a slot is free");
    returned(small.handle(&msg, &fixture.env));
    let large = large_instance(module, fixture);

    let mut group = c.benchmark_group("compute");
    group.sample_size(20);
    for (mut instance, limits) in [(small, LIMITS), (large, LARGE_LIMITS)] {
        let bytes = instance.memory().len();
        let label = size_label(bytes);
        group.throughput(Throughput::Bytes(bytes as u64));
        group.bench_function(BenchmarkId::new("snapshot", &label), |b| b.iter(|| instance.snapshot()));
        let snapshot = instance.snapshot();
        group.bench_function(BenchmarkId::new("restore_drop", &label), |b| {
            b.iter(|| {
                let restored = module.instantiate_from(limits, black_box(&snapshot)).expect("fits");
                black_box(restored.memory().len())
            })
        });
    }
    group.finish();
}

/// Undoing a failed message on a 64 MiB process (the counter's `Fail` adds 1000 to its count,
/// then returns an Error result: a page or so written, with the msg and output buffers):
/// - `message_untracked`: an `Increment` on an instance without write tracking (the baseline);
/// - `message_kept`: the same on a tracked instance, with `keep_message` (the scan and the copy
///   of the written pages into the undo copy: what tracking costs a message that stands);
/// - `message_undone`: a `Fail` and `undo_message` (the pages put back in place);
/// - `message_full_copy_rollback`: a `Fail` and an instance rebuilt from a whole-memory snapshot
///   (what a rollback costs without tracking, before any replay).
fn rollback(c: &mut Criterion, module: &CompiledModule, fixture: &Fixture) {
    let increment = fixture.msg(&fixture.increment(100));
    let fail = fixture.msg(&fixture.action("Fail", 100));
    let mut group = c.benchmark_group("compute/rollback/64MiB");
    group.sample_size(20);
    let mut untracked = large_instance(module, fixture);
    group.bench_function("message_untracked", |b| {
        b.iter(|| returned(untracked.handle(black_box(&increment), &fixture.env)))
    });
    let snapshot = untracked.snapshot();
    group.bench_function("message_full_copy_rollback", |b| {
        b.iter(|| {
            returned(untracked.handle(black_box(&fail), &fixture.env));
            let restored = module
                .instantiate_from(LARGE_LIMITS, black_box(&snapshot))
                .expect("fits");
            black_box(restored.memory().len())
        })
    });
    drop(untracked);
    match engine::compute::dirty::DirtyTracker::new() {
        Ok(tracker) => {
            let tracker = std::sync::Arc::new(tracker);
            let mut tracked = large_instance(module, fixture);
            tracked.track(&tracker, None).expect("tracked");
            group.bench_function("message_kept", |b| {
                b.iter(|| {
                    returned(tracked.handle(black_box(&increment), &fixture.env));
                    tracked.keep_message();
                })
            });
            group.bench_function("message_undone", |b| {
                b.iter(|| {
                    returned(tracked.handle(black_box(&fail), &fixture.env));
                    black_box(tracked.undo_message())
                })
            });
        }
        Err(error) => eprintln!("compute/rollback: no write tracking here ({error}): in-place undo not measured"),
    }
    group.finish();
}

/// The limits: wasmtime's bare typed call and a host copy of 64 MiB.
fn limits(c: &mut Criterion) {
    let engine = wasmtime::Engine::default();
    let wasm = wat::parse_str(r#"(module (func (export "nop")))"#).expect("valid WAT");
    let wasm_module = wasmtime::Module::new(&engine, wasm).expect("compiles");
    let mut store = wasmtime::Store::new(&engine, ());
    let instance = wasmtime::Instance::new(&mut store, &wasm_module, &[]).expect("instantiates");
    let nop = instance.get_typed_func::<(), ()>(&mut store, "nop").expect("exported");

    let mut group = c.benchmark_group("compute/limit");
    group.bench_function("wasmtime_typed_call_nop", |b| {
        b.iter(|| nop.call(&mut store, ()).expect("returns"))
    });
    let memory = vec![0x5a_u8; (64 * MIB) as usize];
    group.sample_size(20).throughput(Throughput::Bytes(memory.len() as u64));
    group.bench_function("to_vec/64MiB", |b| b.iter(|| black_box(&memory).to_vec()));
    // The same copy into a buffer whose pages are already mapped: the bare memcpy.
    let mut warm = vec![0_u8; memory.len()];
    group.bench_function("copy_into_warm/64MiB", |b| {
        b.iter(|| warm.copy_from_slice(black_box(&memory)))
    });
    group.finish();
}

fn compute(c: &mut Criterion) {
    let runtime = Runtime::new(ComputeConfig {
        instance_count_max: 16,
        ..ComputeConfig::default()
    })
    .expect("valid config");
    let wasm = samples::wasm("counter").expect("the counter sample exists");
    let module = runtime.compile(&wasm, MODULE_FORMAT_WASM32).expect("compiles");
    let fixture = Fixture::new();
    handle(c, &module, &fixture);
    snapshots(c, &module, &fixture);
    rollback(c, &module, &fixture);
    limits(c);
}

criterion_group! {
    name = benches;
    config = benches::criterion_config();
    targets = compute
}
criterion_main!(benches);
