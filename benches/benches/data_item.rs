//! ANS-104 hot paths: parse, the deep hash, id, verify (Ed25519 with its owner's key cached and
//! with a new key each time, and RSA-4096 type 1), sign, and an assignment's
//! signature. Client-signed messages are verified on ingress, so verification cost bounds
//! what one core admits; RSA signing is measured because the reference SU signs twice per message.
//! `data_item/limit/*` measure, in the same run, the RSA-4096 public-key work `verify_rsa4096`
//! is built from: one RSA-PSS verification with the rsa crate (salt length known) and the bare
//! public-key operation (`s^65537 mod n`); type-1 verification recovers the salt length first,
//! which costs a second public-key operation.
//! The RSA key is a fixed test key (`benches/fixtures/rsa-test-jwk.json`, copied from
//! `scheduler::signer`'s tests) so that no key is generated at bench time.
//! Runs once per benchmark in test mode (`cargo test --benches`) so it never rots.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use rsa::traits::PublicKeyParts;
use rsa::Pss;
use scheduler::chain::{sign_assignment, AssignmentFields};
use scheduler::data_item::{DataItem, SignatureType};
use scheduler::signer::Signer;
use scheduler::tags::Tag;
use scheduler::{BlockHeight, HashChain, Nonce, ProcessId, Timestamp};
use sha2::{Digest, Sha256};

/// A 4096-bit RSA test key as an Arweave JWK; never use it for anything else.
const TEST_RSA_JWK: &str = include_str!("../fixtures/rsa-test-jwk.json");

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

fn rsa_signer() -> Signer {
    let jwk: serde_json::Value = serde_json::from_str(TEST_RSA_JWK).expect("the fixture is JSON");
    let signer = Signer::from_jwk(&jwk).expect("the fixture is a valid 4096-bit RSA JWK");
    assert_eq!(signer.signature_type(), SignatureType::Arweave);
    signer
}

fn data_item(c: &mut Criterion) {
    let signer = Signer::generate_ed25519();
    let bytes = message(&signer);
    c.bench_function("data_item/parse_100B", |b| {
        b.iter(|| DataItem::parse(black_box(&bytes)).unwrap())
    });
    let item = DataItem::parse(&bytes).unwrap();
    // The deep hash alone: what verification and signing hash before the curve arithmetic.
    c.bench_function("data_item/deep_hash", |b| b.iter(|| black_box(&item).signing_hash()));
    // The owner's decoded key is cached per thread after the first verification, as a client's
    // key is on a shard that takes its messages.
    c.bench_function("data_item/verify_ed25519", |b| {
        b.iter(|| black_box(&item).verify().unwrap())
    });
    // Every item from another key, more keys than the cache holds: each key is decoded again.
    let strangers: Vec<DataItem> = (0..5000)
        .map(|_| DataItem::parse(&message(&Signer::generate_ed25519())).unwrap())
        .collect();
    let mut next = 0;
    c.bench_function("data_item/verify_ed25519_new_key", |b| {
        b.iter(|| {
            next = (next + 1) % strangers.len();
            black_box(&strangers[next]).verify().unwrap()
        })
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

fn data_item_rsa(c: &mut Criterion) {
    let signer = rsa_signer();
    let bytes = message(&signer);
    let item = DataItem::parse(&bytes).unwrap();
    item.verify().expect("the RSA-signed item verifies");
    c.bench_function("data_item/parse_rsa_100B", |b| {
        b.iter(|| DataItem::parse(black_box(&bytes)).unwrap())
    });
    let key = rsa::RsaPublicKey::new(rsa::BigUint::from_bytes_be(&item.owner), rsa::BigUint::from(65_537_u32))
        .expect("a valid public key");
    let hashed = Sha256::digest(item.signing_hash());
    let pss = || Pss::new_with_salt::<Sha256>(32);
    key.verify(pss(), &hashed, &item.signature)
        .expect("the Signer uses a 32-byte salt");
    let signature = rsa::BigUint::from_bytes_be(&item.signature);

    // Milliseconds each: fewer samples, or these would take minutes.
    let mut slow = c.benchmark_group("data_item");
    slow.sample_size(20);
    slow.bench_function("verify_rsa4096", |b| b.iter(|| black_box(&item).verify().unwrap()));
    slow.bench_function("limit/rsa4096_pss_verify", |b| {
        b.iter(|| {
            key.verify(pss(), black_box(&hashed), black_box(&item.signature))
                .unwrap()
        })
    });
    slow.bench_function("limit/rsa4096_modpow_e65537", |b| {
        b.iter(|| black_box(&signature).modpow(key.e(), key.n()))
    });
    slow.sample_size(10);
    slow.bench_function("sign_rsa4096", |b| b.iter(|| message(black_box(&signer))));
    slow.finish();
}

criterion_group! {
    name = benches;
    config = benches::criterion_config();
    targets = data_item, data_item_rsa
}
criterion_main!(benches);
