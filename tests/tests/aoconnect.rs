//! A real node driven by the stock npm `@permaweb/aoconnect` (pinned in
//! tests/aoconnect/package.json) with an RSA JWK made offline: spawn, message, result, dryrun
//! and results, every shape checked against AO.md (tests/aoconnect/aoconnect.mjs).
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
    let output = Command::new("node")
        .current_dir(&dir)
        .arg("aoconnect.mjs")
        .arg(&node.url)
        .arg(module.to_string())
        .output()
        .expect("node (Node.js) runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(output.status.success(), "aoconnect run failed:\n{stdout}{stderr}");
    assert!(stdout.contains("all matched"), "{stdout}{stderr}");
}
