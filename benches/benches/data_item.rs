//! ANS-104 hot paths: parse, id, verify (Ed25519), sign, and an assignment's signature.
//! Runs once per benchmark in test mode (`cargo test --benches`) so it never rots.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use scheduler::chain::{sign_assignment, AssignmentFields};
use scheduler::data_item::DataItem;
use scheduler::signer::Signer;
use scheduler::tags::Tag;
use scheduler::{BlockHeight, HashChain, Nonce, ProcessId, Timestamp};

fn message(signer: &Signer) -> Vec<u8> {
    let tags = vec![
        Tag::new("Data-Protocol", "ao"),
        Tag::new("Variant", "ao.TN.1"),
        Tag::new("Type", "Message"),
        Tag::new("Action", "Increment"),
    ];
    signer
        .sign(Some([1; 32]), Some([b'a'; 32]), tags, vec![0x42; 100])
        .to_bytes()
}

fn data_item(c: &mut Criterion) {
    let signer = Signer::generate_ed25519();
    let bytes = message(&signer);
    c.bench_function("data_item/parse_100B", |b| {
        b.iter(|| DataItem::parse(black_box(&bytes)).unwrap())
    });
    let item = DataItem::parse(&bytes).unwrap();
    c.bench_function("data_item/verify_ed25519", |b| {
        b.iter(|| black_box(&item).verify().unwrap())
    });
    c.bench_function("data_item/sign_ed25519", |b| b.iter(|| message(black_box(&signer))));
    let fields = AssignmentFields {
        process: ProcessId([1; 32]),
        epoch: 0,
        nonce: Nonce(12),
        hash_chain: HashChain([2; 32]),
        block_height: BlockHeight(1_393_008),
        timestamp: Timestamp(1_700_000_000_000),
        message: Some(item.id().into()),
        exclude: None,
    };
    c.bench_function("assignment/sign_ed25519", |b| {
        b.iter(|| sign_assignment(&signer, black_box(&fields)))
    });
}

criterion_group!(benches, data_item);
criterion_main!(benches);
