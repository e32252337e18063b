//! The JSON-1 ABI around every evaluation (`engine::abi`): encoding the `msg` document of a
//! typical message (5 tags, 100 B of data) and the `env` document of a process, and decoding a
//! typical `handle` result that sends one outbox message. `msg_json` and `decode_result` run once
//! per evaluated message, next to the wasm call itself (`benches/benches/compute.rs`), so their
//! cost is part of the per-message compute cost; `env_json` runs once per process load.
//! Runs once per benchmark in test mode (`cargo test --benches`) so it never rots.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use engine::abi::{decode_result, env_json, msg_json, Placement};
use scheduler::signer::Signer;
use scheduler::tags::Tag;
use scheduler::{BlockHeight, HashChain, Nonce, ProcessId, Timestamp};

fn abi(c: &mut Criterion) {
    let signer = Signer::generate_ed25519();
    let process = ProcessId([7; 32]);
    let message = signer.sign(
        Some(process.0),
        Some(*b"00000000000000000000000000000042"),
        vec![
            Tag::new("Data-Protocol", "ao"),
            Tag::new("Variant", "ao.TN.1"),
            Tag::new("Type", "Message"),
            Tag::new("Action", "Transfer"),
            Tag::new("Quantity", "1000000000000"),
        ],
        vec![b'x'; 100],
    );
    let placement = Placement {
        process,
        nonce: Nonce(1234),
        timestamp: Timestamp(1_700_000_000_000),
        block_height: BlockHeight(1_393_008),
        hash_chain: HashChain([3; 32]),
    };
    let node = signer.address();
    let process_item = signer.sign(
        None,
        None,
        vec![
            Tag::new("Data-Protocol", "ao"),
            Tag::new("Variant", "ao.TN.1"),
            Tag::new("Type", "Process"),
            Tag::new("Module", ProcessId([8; 32]).to_string()),
            Tag::new("Scheduler", node.to_string()),
            Tag::new("Name", "token"),
        ],
        b"1984".to_vec(),
    );
    let module_item = signer.sign(
        None,
        None,
        vec![
            Tag::new("Data-Protocol", "ao"),
            Tag::new("Variant", "ao.TN.1"),
            Tag::new("Type", "Module"),
            Tag::new("Module-Format", "wasm32-unknown-unknown"),
            Tag::new("Input-Encoding", "JSON-1"),
            Tag::new("Output-Encoding", "JSON-1"),
            Tag::new("Memory-Limit", "1-gb"),
            Tag::new("Compute-Limit", "9000000000000"),
        ],
        b"\0asm".to_vec(),
    );
    let recipient = ProcessId([9; 32]).to_string();
    let result = format!(
        r#"{{"ok":true,"response":{{"Output":"Transferred 1000000000000","Messages":[{{"Target":"{recipient}","Data":"You received 1000000000000 tokens","Tags":[{{"name":"Action","value":"Credit-Notice"}},{{"name":"Sender","value":"{sender}"}},{{"name":"Quantity","value":"1000000000000"}},{{"name":"Ref_","value":"1234"}}]}}],"Spawns":[],"Assignments":[]}}}}"#,
        sender = node,
    )
    .into_bytes();
    let decoded = decode_result(&result, 12_345);
    assert!(!decoded.is_error, "{}", decoded.json);
    assert_eq!(decoded.messages.len(), 1);

    let msg_bytes = msg_json(&message, &placement, false).len();
    let env_bytes = env_json(&process_item, &module_item).len();

    let mut group = c.benchmark_group("abi");
    group.throughput(Throughput::Bytes(msg_bytes as u64));
    group.bench_function("msg_json/5tags_100B", |b| {
        b.iter(|| msg_json(black_box(&message), black_box(&placement), false))
    });
    group.throughput(Throughput::Bytes(env_bytes as u64));
    group.bench_function("env_json", |b| {
        b.iter(|| env_json(black_box(&process_item), black_box(&module_item)))
    });
    group.throughput(Throughput::Bytes(result.len() as u64));
    group.bench_function("decode_result/1_message", |b| {
        b.iter(|| decode_result(black_box(&result), 12_345))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = benches::criterion_config();
    targets = abi
}
criterion_main!(benches);
