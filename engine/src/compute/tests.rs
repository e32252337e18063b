//! Tests of the compute unit against the sample processes and small hand-written modules: the
//! ABI, the limits, guest faults, the pool, snapshots and the samples' behaviour.
//!
//! They check behaviour, not speed (that belongs to benches/).

use serde_json::{json, Value};

use super::samples;
use super::{CompiledModule, ComputeConfig, ComputeError, Evaluation, ProcessLimits, Runtime, MODULE_FORMAT_WASM32};

const MIB: u64 = 1024 * 1024;

/// Limits that the samples never reach in normal use.
const LIMITS: ProcessLimits = ProcessLimits {
    memory_bytes_max: 64 * MIB,
    fuel_per_message: 100_000_000,
};

/// A small pool, so that tests running in parallel reserve little address space.
fn config(instance_count_max: u32) -> ComputeConfig {
    ComputeConfig {
        instance_count_max,
        memory_bytes_max: 128 * MIB,
        table_elements_max: 1000,
        output_bytes_max: MIB,
    }
}

fn runtime(instance_count_max: u32) -> Runtime {
    Runtime::new(config(instance_count_max)).expect("test config is valid")
}

fn sample(runtime: &Runtime, name: &str) -> CompiledModule {
    let wasm = samples::wasm(name).expect("sample exists");
    runtime.compile(&wasm, MODULE_FORMAT_WASM32).expect("sample compiles")
}

/// A 43-character id made of one repeated character.
pub(super) fn id(c: char) -> String {
    c.to_string().repeat(43)
}

const MODULE_ID_CHAR: char = 'M';
const PROCESS_ID_CHAR: char = 'P';

/// A msg exactly as the host writes it (serde_json, compact, keys in AO's order).
pub(super) fn msg_with(from: &str, data: &str, tags: &[(&str, &str)]) -> Vec<u8> {
    let tags: Vec<Value> = tags
        .iter()
        .map(|(name, value)| json!({"name": name, "value": value}))
        .collect();
    format!(
        r#"{{"Id":"{id}","Signature":"c2lnbmF0dXJl","Data":{data},"Owner":"{owner}","Target":"{target}","Anchor":null,"From":"{from}","Forwarded-By":null,"Tags":{tags},"Epoch":0,"Nonce":3,"Timestamp":1700000000000,"Block-Height":1393008,"Hash-Chain":"{id}","Cron":false,"Read-Only":false}}"#,
        id = id('I'),
        data = serde_json::to_string(data).expect("a string serialises"),
        owner = id('O'),
        target = id(PROCESS_ID_CHAR),
        tags = serde_json::to_string(&tags).expect("tags serialise"),
    )
    .into_bytes()
}

fn msg(tags: &[(&str, &str)]) -> Vec<u8> {
    msg_with(&id('F'), "hello", tags)
}

/// An env as the host writes it.
fn env() -> Vec<u8> {
    let process = id(PROCESS_ID_CHAR);
    let module = id(MODULE_ID_CHAR);
    let owner = id('O');
    format!(
        r#"{{"Process":{{"Id":"{process}","Owner":"{owner}","Tags":[{{"name":"Type","value":"Process"}},{{"name":"Module","value":"{module}"}}]}},"Module":{{"Id":"{module}","Owner":"{owner}","Tags":[{{"name":"Module-Format","value":"wasm32-unknown-unknown"}}]}}}}"#
    )
    .into_bytes()
}

/// The `response` object of a Returned evaluation with `"ok":true`.
fn response(evaluation: &Evaluation) -> Value {
    let Evaluation::Returned { output, .. } = evaluation else {
        panic!("expected Returned, got {evaluation:?}");
    };
    let json: Value = serde_json::from_slice(output).expect("the output is JSON");
    assert_eq!(json["ok"], true, "{json}");
    json["response"].clone()
}

fn output(evaluation: &Evaluation) -> String {
    let response = response(evaluation);
    response["Output"].as_str().expect("Output is a string").to_string()
}

fn failure(evaluation: &Evaluation) -> &str {
    match evaluation {
        Evaluation::Failed { reason, .. } => reason,
        Evaluation::Returned { output, .. } => {
            panic!("expected Failed, got output {}", String::from_utf8_lossy(output))
        }
    }
}

#[test]
fn samples_assemble_and_compile() {
    let runtime = runtime(1);
    for name in samples::NAMES {
        sample(&runtime, name);
    }
    assert!(samples::wat("no-such-sample").is_none());
    assert!(samples::wasm("no-such-sample").is_none());
}

#[test]
fn counter_counts_across_messages_in_place() {
    let runtime = runtime(1);
    let mut process = sample(&runtime, "counter").instantiate(LIMITS).expect("a slot is free");
    let memory_at = process.memory().as_ptr();
    let spawn = msg(&[("Type", "Process"), ("Module", &id(MODULE_ID_CHAR))]);
    assert_eq!(output(&process.handle(&spawn, &env())), "0");
    for expected in ["1", "2", "3"] {
        let evaluation = process.handle(&msg(&[("Action", "Increment")]), &env());
        assert_eq!(output(&evaluation), expected);
        assert!(evaluation.gas_used() > 0);
    }
    assert_eq!(output(&process.handle(&msg(&[("Action", "Read")]), &env())), "3");
    // The same memory, in the same place, served every message.
    assert_eq!(process.memory().as_ptr(), memory_at);
    assert!(!process.is_poisoned());
}

#[test]
fn heap_is_reused_so_memory_does_not_grow_per_message() {
    let runtime = runtime(1);
    let mut process = sample(&runtime, "counter").instantiate(LIMITS).unwrap();
    let data = "x".repeat(100 * 1024);
    let increment = msg_with(&id('F'), &data, &[("Action", "Increment")]);
    process.handle(&increment, &env());
    let memory_bytes = process.memory().len();
    for _ in 0..200 {
        response(&process.handle(&increment, &env()));
    }
    assert_eq!(process.memory().len(), memory_bytes);
    assert_eq!(output(&process.handle(&msg(&[]), &env())), "201");
}

#[test]
fn large_input_grows_memory_within_the_limit() {
    let runtime = runtime(1);
    let mut process = sample(&runtime, "counter").instantiate(LIMITS).unwrap();
    let data = "y".repeat(10 * MIB as usize);
    let evaluation = process.handle(&msg_with(&id('F'), &data, &[("Action", "Increment")]), &env());
    assert_eq!(output(&evaluation), "1");
    assert!(process.memory().len() as u64 > 10 * MIB);
}

#[test]
fn gas_is_deterministic() {
    let runtime = runtime(2);
    let module = sample(&runtime, "pingpong");
    let ball = msg(&[("Action", "Ball"), ("Remaining", "7")]);
    let mut a = module.instantiate(LIMITS).unwrap();
    let mut b = module.instantiate(LIMITS).unwrap();
    assert_eq!(a.handle(&ball, &env()), b.handle(&ball, &env()));
}

#[test]
fn counter_fail_is_an_error_result_and_a_snapshot_rolls_it_back() {
    let runtime = runtime(2);
    let module = sample(&runtime, "counter");
    let mut process = module.instantiate(LIMITS).unwrap();
    for _ in 0..2 {
        process.handle(&msg(&[("Action", "Increment")]), &env());
    }
    let before = process.snapshot();

    let failed = response(&process.handle(&msg(&[("Action", "Fail")]), &env()));
    assert_eq!(failed["Output"], "1002");
    assert!(failed["Error"].as_str().unwrap().contains("rolled back"));
    assert_eq!(failed["Messages"], json!([]));
    drop(process);

    let mut restored = module.instantiate_from(LIMITS, &before).unwrap();
    assert_eq!(restored.memory_sha256(), before.memory_sha256());
    assert_eq!(output(&restored.handle(&msg(&[]), &env())), "2");
    assert_eq!(output(&restored.handle(&msg(&[("Action", "Increment")]), &env())), "3");
}

#[test]
fn snapshot_reproduces_memory_hash_and_behaviour() {
    let runtime = runtime(2);
    let module = sample(&runtime, "pingpong");
    let mut original = module.instantiate(LIMITS).unwrap();
    for remaining in ["5", "4", "3"] {
        original.handle(&msg(&[("Action", "Ball"), ("Remaining", remaining)]), &env());
    }
    // A large input leaves the memory grown, so the copy must grow too.
    let big = msg_with(&id('F'), &"z".repeat(2 * MIB as usize), &[]);
    original.handle(&big, &env());
    let snapshot = original.snapshot();
    assert_eq!(snapshot.memory_sha256(), original.memory_sha256());
    assert!(snapshot.memory_pages > 2);
    assert_eq!(
        snapshot
            .globals
            .iter()
            .map(|(name, _)| name.as_str())
            .collect::<Vec<_>>(),
        // The module's own exports, then the globals it hid, exported by the compiler.
        [
            "heap_top",
            "heap_reset",
            "__hewitt_global_2",
            "__hewitt_global_3",
            "__hewitt_global_4",
            "__hewitt_global_5",
            "__hewitt_global_6",
            "__hewitt_global_7"
        ]
    );

    let mut copy = module.instantiate_from(LIMITS, &snapshot).unwrap();
    assert_eq!(copy.memory_sha256(), original.memory_sha256());
    assert_eq!(copy.snapshot(), snapshot);
    for message in [
        msg(&[("Action", "Ball"), ("Remaining", "2")]),
        msg(&[("Action", "Serve"), ("Peer", &id('Q')), ("Count", "9")]),
        msg(&[]),
    ] {
        let expected = original.handle(&message, &env());
        assert_eq!(copy.handle(&message, &env()), expected);
        assert_eq!(copy.memory_sha256(), original.memory_sha256());
    }
}

#[test]
fn restore_refuses_a_snapshot_that_does_not_fit() {
    let runtime = runtime(2);
    let module = sample(&runtime, "counter");
    let mut process = module.instantiate(LIMITS).unwrap();
    let snapshot = process.snapshot();

    let mut inconsistent = snapshot.clone();
    inconsistent.memory_pages += 1;
    let mut renamed = snapshot.clone();
    renamed.globals[0].0 = "elsewhere".to_string();
    let too_big = ProcessLimits {
        memory_bytes_max: 64 * 1024 * 2,
        ..LIMITS
    };
    let mut grown = snapshot.clone();
    grown.memory_pages = 3;
    grown.memory.resize(3 * 64 * 1024, 0);

    for (snapshot, limits, expected) in [
        (&inconsistent, LIMITS, "inconsistent"),
        (&renamed, LIMITS, "`elsewhere`"),
        (&grown, too_big, "memory limit of 131072 bytes exceeded"),
    ] {
        match module.instantiate_from(limits, snapshot) {
            Err(ComputeError::Instantiate { reason }) => {
                assert!(reason.contains(expected), "{reason}")
            }
            other => panic!("expected Instantiate naming {expected:?}, got {other:?}"),
        }
    }
}

#[test]
fn trap_fails_poisons_and_its_slot_is_reused() {
    let runtime = runtime(1);
    let module = sample(&runtime, "trap");
    let mut process = module.instantiate(LIMITS).unwrap();
    assert_eq!(output(&process.handle(&msg(&[]), &env())), "ok");
    let evaluation = process.handle(&msg(&[("Action", "Trap")]), &env());
    assert_eq!(
        failure(&evaluation),
        "wasm trap: wasm `unreachable` instruction executed"
    );
    assert!(evaluation.gas_used() > 0);
    assert!(process.is_poisoned());
    drop(process);

    let mut again = module.instantiate(LIMITS).expect("the slot came back");
    assert_eq!(output(&again.handle(&msg(&[]), &env())), "ok");
}

#[test]
#[should_panic(expected = "poisoned")]
fn handle_on_a_poisoned_instance_is_a_bug() {
    let runtime = runtime(1);
    let mut process = sample(&runtime, "trap").instantiate(LIMITS).unwrap();
    process.handle(&msg(&[("Action", "Trap")]), &env());
    process.handle(&msg(&[]), &env());
}

#[test]
fn loop_runs_out_of_fuel() {
    let runtime = runtime(1);
    let limits = ProcessLimits {
        fuel_per_message: 100_000,
        ..LIMITS
    };
    let mut process = sample(&runtime, "loop").instantiate(limits).unwrap();
    assert_eq!(output(&process.handle(&msg(&[]), &env())), "ok");
    let evaluation = process.handle(&msg(&[("Action", "Loop")]), &env());
    assert_eq!(
        evaluation,
        Evaluation::Failed {
            reason: "compute limit of 100000 exceeded".to_string(),
            gas_used: 100_000,
        }
    );
}

#[test]
fn fuel_also_bounds_malloc() {
    let runtime = runtime(1);
    let limits = ProcessLimits {
        fuel_per_message: 5,
        ..LIMITS
    };
    let mut process = sample(&runtime, "counter").instantiate(limits).unwrap();
    let evaluation = process.handle(&msg(&[]), &env());
    assert_eq!(failure(&evaluation), "compute limit of 5 exceeded");
}

#[test]
fn memhog_fails_at_its_memory_limit() {
    let runtime = runtime(1);
    let limits = ProcessLimits {
        memory_bytes_max: 4 * MIB,
        fuel_per_message: 1_000_000_000,
    };
    let mut process = sample(&runtime, "memhog").instantiate(limits).unwrap();
    assert_eq!(output(&process.handle(&msg(&[]), &env())), "ok");
    let evaluation = process.handle(&msg(&[("Action", "Grow")]), &env());
    assert!(
        failure(&evaluation).starts_with("memory limit of 4194304 bytes exceeded"),
        "{evaluation:?}"
    );
    assert!(evaluation.gas_used() < limits.fuel_per_message);
    assert!(process.memory().len() as u64 <= 4 * MIB);
}

#[test]
fn pool_exhaustion_is_an_error_until_a_slot_returns() {
    let runtime = runtime(2);
    let module = sample(&runtime, "counter");
    let first = module.instantiate(LIMITS).unwrap();
    let _second = module.instantiate(LIMITS).unwrap();
    match module.instantiate(LIMITS) {
        Err(ComputeError::PoolExhausted { reason }) => assert!(reason.contains('2'), "{reason}"),
        other => panic!("expected PoolExhausted, got {other:?}"),
    }
    drop(first);
    module.instantiate(LIMITS).expect("the slot came back");
}

#[test]
fn limits_the_node_or_module_cannot_meet_are_refused() {
    let runtime = runtime(1);
    let module = sample(&runtime, "counter");
    for (memory_bytes_max, expected) in [
        (256 * MIB, "exceeds this node's per-instance maximum"),
        // The samples start with two pages.
        (64 * 1024, "initial memory does not fit"),
    ] {
        let limits = ProcessLimits {
            memory_bytes_max,
            ..LIMITS
        };
        match module.instantiate(limits) {
            Err(ComputeError::Instantiate { reason }) => {
                assert!(reason.contains(expected), "{reason}")
            }
            other => panic!("expected Instantiate naming {expected:?}, got {other:?}"),
        }
    }
}

/// A minimal module with the given extra fields and export bodies.
fn module_wat(malloc_ptr: i32, handle_ptr: i32, data: &str) -> String {
    format!(
        r#"(module
            (memory (export "memory") 1)
            {data}
            (func (export "malloc") (param i32) (result i32) (i32.const {malloc_ptr}))
            (func (export "handle") (param i32 i32) (result i32) (i32.const {handle_ptr})))"#
    )
}

#[test]
fn unreadable_outputs_fail_the_message() {
    let runtime = Runtime::new(ComputeConfig {
        output_bytes_max: 16,
        ..config(1)
    })
    .unwrap();
    let check = |malloc_ptr: i32, handle_ptr: i32, data: &str, expected: Result<&str, &str>| {
        let wasm = wat::parse_str(module_wat(malloc_ptr, handle_ptr, data)).unwrap();
        let module = runtime.compile(&wasm, MODULE_FORMAT_WASM32).unwrap();
        let mut process = module.instantiate(LIMITS).unwrap();
        let evaluation = process.handle(&msg(&[]), &env());
        match expected {
            Ok(output) => assert_eq!(
                evaluation,
                Evaluation::Returned {
                    output: output.as_bytes().to_vec(),
                    gas_used: evaluation.gas_used()
                }
            ),
            Err(reason) => {
                assert!(failure(&evaluation).contains(reason), "{evaluation:?}");
                assert!(process.is_poisoned());
            }
        }
    };
    let at = |text: &str| format!(r#"(data (i32.const 60000) "{text}")"#);
    check(1024, 60000, &at("0123456789abcdef\\00"), Ok("0123456789abcdef"));
    check(1024, 60000, &at("\\00"), Ok(""));
    check(1024, 0, "", Err("handle returned NULL"));
    check(1024, 0x10000, "", Err("outside the linear memory of 65536 bytes"));
    check(1024, -1, "", Err("0xffffffff, outside the linear memory"));
    check(
        1024,
        65533,
        r#"(data (i32.const 65533) "abc")"#,
        Err("no terminating NUL"),
    );
    check(
        1024,
        60000,
        &at("0123456789abcdefX\\00"),
        Err("longer than the limit of 16 bytes"),
    );
    check(1024, 60000, &at("ok\\ff\\00"), Err("not UTF-8"));
    check(0, 60000, "", Err("for the msg returned NULL"));
    check(65530, 60000, "", Err("for the msg returned 0xfffa, which is not"));
}

#[test]
fn modules_are_refused_with_a_clear_reason() {
    let runtime = runtime(1);
    let check = |wat: &str, format: &str, expected: &str| {
        let wasm = wat::parse_str(wat).unwrap();
        match runtime.compile(&wasm, format) {
            Err(ComputeError::ModuleRefused { reason }) => {
                assert!(reason.contains(expected), "{reason:?} lacks {expected:?}")
            }
            other => panic!("expected ModuleRefused naming {expected:?}, got {other:?}"),
        }
    };
    let good = module_wat(1024, 0, "");
    check(
        &good,
        "wasm32-unknown-emscripten",
        "\"wasm32-unknown-emscripten\" is not supported",
    );
    check(
        r#"(module
            (import "env" "f" (func))
            (memory (export "memory") 1)
            (func (export "malloc") (param i32) (result i32) (i32.const 0))
            (func (export "handle") (param i32 i32) (result i32) (i32.const 0)))"#,
        MODULE_FORMAT_WASM32,
        "\"wasm32-unknown-unknown\" provides no imports, but the module imports `env.f` (a function)",
    );
    check(
        r#"(module
            (memory (export "memory") 1)
            (func (export "malloc") (param i32) (result i32) (i32.const 0)))"#,
        MODULE_FORMAT_WASM32,
        "does not export `handle`",
    );
    check(
        r#"(module
            (memory (export "memory") 1)
            (func (export "malloc") (param i32) (result i32) (i32.const 0))
            (func (export "handle") (param i32) (result i32) (i32.const 0)))"#,
        MODULE_FORMAT_WASM32,
        "the export `handle` has type",
    );
    check(
        r#"(module
            (func (export "malloc") (param i32) (result i32) (i32.const 0))
            (func (export "handle") (param i32 i32) (result i32) (i32.const 0)))"#,
        MODULE_FORMAT_WASM32,
        "does not export `memory`",
    );
    check(
        r#"(module
            (memory (export "memory") 1)
            (global (export "g") (mut funcref) (ref.null func))
            (func (export "malloc") (param i32) (result i32) (i32.const 0))
            (func (export "handle") (param i32 i32) (result i32) (i32.const 0)))"#,
        MODULE_FORMAT_WASM32,
        "mutable global `g`",
    );
    match runtime.compile(b"\0asm\x01\0\0\0garbage", MODULE_FORMAT_WASM32) {
        Err(ComputeError::ModuleRefused { reason }) => {
            assert!(reason.contains("not valid wasm"), "{reason}")
        }
        other => panic!("expected ModuleRefused, got {other:?}"),
    }
}

#[test]
fn config_validation_names_the_bad_field() {
    let check = |config: ComputeConfig, expected: &str| match config.validate() {
        Err(ComputeError::Config { reason }) => assert!(reason.contains(expected), "{reason}"),
        other => panic!("expected Config naming {expected:?}, got {other:?}"),
    };
    assert!(ComputeConfig::default().validate().is_ok());
    let default = ComputeConfig::default;
    check(
        ComputeConfig {
            instance_count_max: 0,
            ..default()
        },
        "instance_count_max",
    );
    check(
        ComputeConfig {
            memory_bytes_max: 1000,
            ..default()
        },
        "memory_bytes_max",
    );
    check(
        ComputeConfig {
            memory_bytes_max: 8 << 30,
            ..default()
        },
        "memory_bytes_max",
    );
    check(
        ComputeConfig {
            table_elements_max: 0,
            ..default()
        },
        "table_elements_max",
    );
    check(
        ComputeConfig {
            output_bytes_max: 0,
            ..default()
        },
        "output_bytes_max",
    );
    assert!(matches!(
        Runtime::new(ComputeConfig {
            instance_count_max: 0,
            ..default()
        }),
        Err(ComputeError::Config { .. })
    ));
}

#[test]
fn pingpong_serves_and_returns_balls() {
    let runtime = runtime(1);
    let mut process = sample(&runtime, "pingpong").instantiate(LIMITS).unwrap();
    let peer = id('Q');

    let served = response(&process.handle(&msg(&[("Action", "Serve"), ("Peer", &peer), ("Count", "3")]), &env()));
    assert_eq!(served["Output"], "0");
    assert_eq!(
        served["Messages"],
        json!([{"Target": peer, "Data": "", "Anchor": "", "Tags": [
            {"name": "Action", "value": "Ball"},
            {"name": "Remaining", "value": "3"},
        ]}])
    );
    assert_eq!(served["Spawns"], json!([]));
    assert_eq!(served["Assignments"], json!([]));

    let from = id('R');
    let returned = response(&process.handle(&msg_with(&from, "", &[("Action", "Ball"), ("Remaining", "2")]), &env()));
    assert_eq!(returned["Output"], "1");
    assert_eq!(
        returned["Messages"],
        json!([{"Target": from, "Data": "", "Anchor": "", "Tags": [
            {"name": "Action", "value": "Ball"},
            {"name": "Remaining", "value": "1"},
        ]}])
    );

    let last = response(&process.handle(&msg(&[("Action", "Ball"), ("Remaining", "0")]), &env()));
    assert_eq!(last["Output"], "2");
    assert_eq!(last["Messages"], json!([]));

    let refused = response(&process.handle(&msg(&[("Action", "Serve"), ("Peer", &peer)]), &env()));
    assert!(refused["Error"].as_str().unwrap().contains("Count"));
    assert_eq!(output(&process.handle(&msg(&[]), &env())), "2");
}

#[test]
fn spawner_spawns_from_its_own_module() {
    let runtime = runtime(1);
    let mut process = sample(&runtime, "spawner").instantiate(LIMITS).unwrap();
    let spawn = response(&process.handle(&msg(&[("Action", "Spawn-Child")]), &env()));
    assert_eq!(spawn["Output"], "0");
    assert_eq!(spawn["Messages"], json!([]));
    assert_eq!(
        spawn["Spawns"],
        json!([{"Data": "", "Tags": [
            {"name": "Module", "value": id(MODULE_ID_CHAR)},
            {"name": "Name", "value": "child"},
        ]}])
    );
    let child = id('C');
    let notice = msg(&[
        ("Module", &id(MODULE_ID_CHAR)),
        ("Name", "child"),
        ("Action", "Spawned"),
        ("Process", &child),
    ]);
    assert_eq!(output(&process.handle(&notice, &env())), child);
    assert_eq!(output(&process.handle(&msg(&[]), &env())), "1");
}

#[test]
fn handles_can_move_between_threads() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Runtime>();
    send_sync::<CompiledModule>();
    send::<super::ProcessInstance>();
    send_sync::<super::Snapshot>();
}

#[test]
fn compiled_modules_are_cached_on_disk_and_checked_before_use() {
    let dir = tempfile::tempdir().unwrap();
    let artifact = dir.path().join("modules").join("counter.cwasm");
    let wasm = samples::wasm("counter").unwrap();
    let run = |runtime: &Runtime| {
        let module = runtime.compile_cached(&wasm, MODULE_FORMAT_WASM32, &artifact).unwrap();
        let mut instance = module.instantiate(LIMITS).unwrap();
        output(&instance.handle(&msg(&[("Action", "Increment")]), &env()))
    };
    // First start: compiled and written; a second runtime (a restart) maps it back.
    let first = runtime(4);
    assert_eq!(run(&first), "1");
    assert_eq!(first.compile_counts(), (1, 0));
    assert!(artifact.exists());
    let second = runtime(4);
    assert_eq!(run(&second), "1");
    assert_eq!(second.compile_counts(), (0, 1), "no recompilation after a restart");
    // A damaged artifact is never mapped: compiled again, and the cache repaired.
    let mut bytes = std::fs::read(&artifact).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xFF;
    std::fs::write(&artifact, &bytes).unwrap();
    let third = runtime(4);
    assert_eq!(run(&third), "1");
    assert_eq!(third.compile_counts(), (1, 0));
    let fourth = runtime(4);
    assert_eq!(run(&fourth), "1");
    assert_eq!(fourth.compile_counts(), (0, 1), "repaired");
    // Other wasm bytes under the same path are not taken for the cached module.
    let trap = samples::wasm("trap").unwrap();
    let fifth = runtime(4);
    fifth.compile_cached(&trap, MODULE_FORMAT_WASM32, &artifact).unwrap();
    assert_eq!(fifth.compile_counts(), (1, 0));
}

#[test]
fn hidden_mutable_globals_are_exported_and_a_prefix_clash_leaves_the_module_alone() {
    let hidden = wat::parse_str(
        r#"(module
            (global $a (mut i32) (i32.const 1))
            (global $b i32 (i32.const 2))
            (global $c (export "c") (mut i64) (i64.const 3))
            (global $d (mut f64) (f64.const 4))
            (func (export "get") (result i32) (global.get $a)))"#,
    )
    .unwrap();
    let rewritten = super::module::export_hidden_globals(&hidden).expect("two hidden mutable globals");
    let engine = wasmtime::Engine::default();
    let module = wasmtime::Module::new(&engine, &rewritten).expect("still valid");
    let exports: Vec<_> = module.exports().map(|e| e.name().to_owned()).collect();
    assert_eq!(exports, ["c", "get", "__hewitt_global_0", "__hewitt_global_3"]);

    let clash = wat::parse_str(
        r#"(module
            (global (mut i32) (i32.const 1))
            (func (export "__hewitt_global_0")))"#,
    )
    .unwrap();
    assert_eq!(super::module::export_hidden_globals(&clash), None);
    let none = wat::parse_str(r#"(module (global (export "g") (mut i32) (i32.const 1)))"#).unwrap();
    assert_eq!(super::module::export_hidden_globals(&none), None);
}

#[test]
fn a_trap_is_undone_in_place_memory_and_every_global_where_the_kernel_tracks_writes() {
    let Ok(tracker) = super::dirty::DirtyTracker::new() else {
        eprintln!("this kernel cannot track writes asynchronously: nothing to test");
        return;
    };
    let tracker = std::sync::Arc::new(tracker);
    let runtime = runtime(2);
    let module = sample(&runtime, "trap");
    let mut process = module.instantiate(LIMITS).unwrap();
    assert_eq!(output(&process.handle(&msg(&[]), &env())), "ok");
    process.track(&tracker, None).unwrap();
    let before = process.snapshot();
    // The prelude's hidden globals (the msg and env pointers) move before the trap.
    let evaluation = process.handle(&msg(&[("Action", "Trap"), ("Pad", &"x".repeat(9000))]), &env());
    assert!(failure(&evaluation).contains("unreachable"));
    assert!(process.is_poisoned());
    match process.undo_message() {
        super::Undone::InPlace { pages } => assert!(pages >= 3, "the long msg spans pages: {pages}"),
        super::Undone::Rebuild => panic!("a tracked instance of unchanged size is undone in place"),
    }
    assert!(!process.is_poisoned());
    assert_eq!(process.snapshot(), before, "memory and every global as before the trap");
    assert_eq!(output(&process.handle(&msg(&[]), &env())), "ok");
    process.keep_message();
}

#[test]
fn undo_in_place_is_offered_only_where_memory_and_globals_are_the_whole_state() {
    let possible = |text: &str| super::module::undo_in_place_possible(&wat::parse_str(text).unwrap());
    assert!(possible(
        r#"(module (memory 1) (global (mut i32) (i32.const 0)) (func (global.set 0 (i32.const 1))))"#
    ));
    assert!(!possible(
        r#"(module (table 1 funcref) (func $f) (func (table.set 0 (i32.const 0) (ref.func $f))) (elem declare func $f))"#
    ));
    assert!(!possible(r#"(module (memory 1) (data "x") (func (data.drop 0)))"#));
    assert!(!possible(r#"(module (global (mut funcref) (ref.null func)))"#));
    for name in samples::NAMES {
        assert!(
            super::module::undo_in_place_possible(&samples::wasm(name).unwrap()),
            "sample {name}"
        );
    }
}

#[test]
fn a_tracked_instance_keeps_undoing_in_place_after_its_memory_grows() {
    let Ok(tracker) = super::dirty::DirtyTracker::new() else {
        eprintln!("this kernel cannot track writes asynchronously: nothing to test");
        return;
    };
    let tracker = std::sync::Arc::new(tracker);
    let runtime = runtime(2);
    let module = sample(&runtime, "counter");
    let mut process = module.instantiate(LIMITS).unwrap();
    process.track(&tracker, None).unwrap();
    let small = process.memory().len();
    let big = msg_with(&id('G'), &"z".repeat(2 * MIB as usize), &[]);
    response(&process.handle(&big, &env()));
    process.keep_message();
    assert!(process.memory().len() > small, "the large message grew memory");
    assert!(process.is_tracked());
    assert_eq!(output(&process.handle(&msg(&[("Action", "Increment")]), &env())), "1");
    process.keep_message();
    let before = process.snapshot();
    let failed = process.handle(&msg(&[("Action", "Fail")]), &env());
    assert!(response(&failed)["Error"].is_string());
    assert!(matches!(process.undo_message(), super::Undone::InPlace { .. }));
    assert_eq!(
        process.snapshot(),
        before,
        "as before the failed message, grown memory included"
    );
    assert_eq!(output(&process.handle(&msg(&[("Action", "Increment")]), &env())), "2");
}
