//! A real node driven by the stock npm `@permaweb/aoconnect` (pinned in
//! tests/aoconnect/package.json) with an RSA JWK made offline: spawn, message, result, dryrun,
//! results, assign and monitor with a cron process, every shape checked against AO.md
//! (tests/aoconnect/aoconnect.mjs).
//!
//! Needs Node.js and the packages: `npm ci --prefix tests/aoconnect` (`.ci/run` does it).

use std::path::Path;
use std::process::Command;

use tests::{load_sample, Node};

const BINARY: &str = env!("CARGO_BIN_EXE_hewitt-under-test");

#[test]
fn stock_aoconnect_spawns_messages_reads_results_and_dry_runs() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("aoconnect");
    assert!(
        dir.join("node_modules/@permaweb/aoconnect").is_dir(),
        "the aoconnect test needs its npm packages: run `npm ci --prefix tests/aoconnect`"
    );
    let data = tempfile::tempdir().expect("temporary directory");
    let node = Node::start(BINARY, data.path());
    // Modules come from Arweave in AO; aoconnect has no call to load one, so the test loads
    // the counter sample itself and hands its id to the script.
    let module = load_sample(&node.client(), "counter", &[]);
    let echo = load_sample(&node.client(), "echo", &[]);
    let output = Command::new("node")
        .current_dir(&dir)
        .arg("aoconnect.mjs")
        .arg(&node.url)
        .arg(module.to_string())
        .arg(echo.to_string())
        .output()
        .expect("node (Node.js) runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(output.status.success(), "aoconnect run failed:\n{stdout}{stderr}");
    assert!(stdout.contains("all matched"), "{stdout}{stderr}");
}

/// Runs tests/aoconnect/arbundles.mjs with `args`.
fn arbundles(args: &[&std::ffi::OsStr]) -> std::process::Output {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("aoconnect");
    assert!(
        dir.join("node_modules/@dha-team/arbundles").is_dir(),
        "the arbundles vectors need their npm packages: run `npm ci --prefix tests/aoconnect`"
    );
    Command::new("node")
        .current_dir(&dir)
        .arg("arbundles.mjs")
        .args(args)
        .output()
        .expect("node (Node.js) runs")
}

/// Items arbundles signed (RSA with an Arweave JWK, Ed25519, Ethereum secp256k1; with and
/// without tags, target, anchor and data): Hewitt parses them, computes the same ids, verifies
/// the signatures and writes back the same bytes. A flipped bit in the signature, or the other
/// recovery byte of an Ethereum signature, is refused.
#[test]
fn hewitt_verifies_what_arbundles_signs() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let output = arbundles(&["sign".as_ref(), dir.path().as_os_str()]);
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let mut checked = 0;
    for name in [
        "rsa-full",
        "rsa-bare",
        "ed25519-full",
        "ed25519-bare",
        "ethereum-full",
        "ethereum-bare",
    ] {
        let bytes = std::fs::read(dir.path().join(format!("{name}.bin"))).expect("item written");
        let id = std::fs::read_to_string(dir.path().join(format!("{name}.id"))).expect("id written");
        let item = scheduler::DataItem::parse(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(item.id().to_string(), id.trim(), "{name}: id");
        item.verify().unwrap_or_else(|e| panic!("{name}: signature: {e}"));
        assert_eq!(item.to_bytes(), bytes, "{name}: written back byte for byte");
        if name.ends_with("full") {
            assert_eq!(item.tag("Unicode"), Some("naïve — ✓"), "{name}: tags");
            assert!(
                item.target.is_some() && item.anchor.is_some(),
                "{name}: target and anchor"
            );
        }
        let mut tampered = item.clone();
        tampered.signature[5] ^= 1;
        assert!(tampered.verify().is_err(), "{name}: a flipped signature bit is refused");
        if name.starts_with("ethereum") {
            let mut other_v = item.clone();
            other_v.signature[64] ^= 1; // 27 <-> 28
            assert!(other_v.verify().is_err(), "{name}: the other recovery byte is refused");
        }
        checked += 1;
    }
    assert_eq!(checked, 6);
}

/// A bundle Hewitt writes (as its uploader does): arbundles reads it, finds every item under
/// the id the header gives and verifies every signature.
#[test]
fn arbundles_reads_the_bundles_hewitt_writes() {
    use scheduler::signer::Signer;
    use scheduler::tags::Tag;

    let dir = tempfile::tempdir().expect("temporary directory");
    let signer = Signer::generate_ed25519();
    let items: Vec<scheduler::DataItem> = (0..5u8)
        .map(|n| {
            signer.sign(
                None,
                Some([b'a' + n; 32]),
                vec![Tag::new("N", n.to_string())],
                vec![n; 100 * n as usize],
            )
        })
        .collect();
    let entries: Vec<(Vec<u8>, [u8; 32])> = items.iter().map(|i| (i.to_bytes(), i.id().0)).collect();
    let path = dir.path().join("bundle.bin");
    std::fs::write(&path, scheduler::bundle::encode(&entries)).expect("write bundle");
    let output = arbundles(&["bundle".as_ref(), path.as_os_str()]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "arbundles rejected a bundle Hewitt wrote:\n{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let ids: Vec<String> = items.iter().map(|i| format!("{} ok", i.id())).collect();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines, ids.iter().map(String::as_str).collect::<Vec<_>>());
}

/// Items Hewitt signs (Ed25519, and RSA-PSS with an Arweave JWK): arbundles verifies them and
/// computes the same ids.
#[test]
fn arbundles_verifies_what_hewitt_signs() {
    use scheduler::signer::Signer;
    use scheduler::tags::Tag;

    let dir = tempfile::tempdir().expect("temporary directory");
    let rsa = Signer::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../benches/fixtures/rsa-test-jwk.json"))
        .expect("the RSA test JWK");
    let tags = vec![
        Tag::new("Data-Protocol", "ao"),
        Tag::new("Type", "Message"),
        Tag::new("Unicode", "naïve — ✓"),
    ];
    let mut expected = Vec::new();
    for (name, signer) in [("ed25519", Signer::generate_ed25519()), ("rsa", rsa)] {
        for (variant, item) in [
            (
                "full",
                signer.sign(
                    Some([7; 32]),
                    Some([b'a'; 32]),
                    tags.clone(),
                    b"hello from hewitt".to_vec(),
                ),
            ),
            ("bare", signer.sign(None, None, Vec::new(), Vec::new())),
        ] {
            let path = dir.path().join(format!("{name}-{variant}.bin"));
            std::fs::write(&path, item.to_bytes()).expect("write item");
            expected.push((path, item.id().to_string()));
        }
    }
    let files: Vec<&std::ffi::OsStr> = expected.iter().map(|(p, _)| p.as_os_str()).collect();
    let output = arbundles(&[&["verify".as_ref()], files.as_slice()].concat());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "arbundles rejected an item Hewitt signed:\n{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for (path, id) in &expected {
        let line = format!("{} {id} ok", path.display());
        assert!(stdout.lines().any(|l| l == line), "expected {line:?} in:\n{stdout}");
    }
}
