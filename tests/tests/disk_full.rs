//! A full disk: the node runs on a small tmpfs that the test mounts in a user and mount
//! namespace of the node's own (`unshare`, no privileges needed), and the test fills it from
//! outside through /proc/<pid>/root. Once the next log segment cannot be allocated, writes are
//! refused with a 503 that says the disk is full, /health and /ready say so, nothing
//! acknowledged is lost or torn, and the node resumes by itself when space is freed: the
//! message that was waiting is acknowledged, and the timeline stays dense and chained.

use std::path::{Path, PathBuf};
use std::process::Command;

use scheduler::tags::Tag;
use tests::{check_timeline, counter_value, load_sample, spawn, timeline_in_pages, wait_until, Node};

const BINARY: &str = env!("CARGO_BIN_EXE_hewitt-under-test");

fn namespaces_work() -> bool {
    Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "true"])
        .status()
        .is_ok_and(|status| status.success())
}

/// Bytes free on the file system at `path` (statfs on the path itself: `df` would look the
/// mount up in the test's own namespace).
fn available(path: &Path) -> u64 {
    let output = Command::new("stat")
        .args(["-f", "-c", "%a %S"])
        .arg(path)
        .output()
        .expect("stat runs");
    let text = String::from_utf8_lossy(&output.stdout);
    let mut numbers = text.split_whitespace().map(|n| n.parse::<u64>().ok());
    match (numbers.next().flatten(), numbers.next().flatten()) {
        (Some(blocks), Some(block_size)) => blocks * block_size,
        _ => panic!("stat -f said {text:?}"),
    }
}

#[test]
fn a_full_disk_refuses_writes_loses_nothing_and_resumes_when_space_returns() {
    if !namespaces_work() {
        // Without user namespaces there is no way to make a small file system unprivileged.
        eprintln!("SKIPPED: a_full_disk_…: unshare --user --mount is not available here");
        return;
    }
    let dir = tempfile::tempdir().expect("temporary directory");
    let mount = dir.path().join("small");
    std::fs::create_dir(&mount).expect("mount point");
    // 24 MiB of tmpfs, 4 MiB segments, records of ~100 KiB.
    let script = r#"mount -t tmpfs -o size=24m tmpfs "$0" && exec "$1" serve --listen 127.0.0.1:0 --data-dir "$0/data" \
        --set log.segment_bytes=4MiB --set log.batch_bytes_max=1MiB --set log.pending_bytes_max=2MiB \
        --set http.body_bytes_max=256KiB"#;
    let mut command = Command::new("unshare");
    command
        .args(["--user", "--map-root-user", "--mount", "sh", "-c", script])
        .arg(&mount)
        .arg(BINARY);
    let node = Node::launch(command, &mount.join("data"));
    let seen: PathBuf = format!("/proc/{}/root{}", node.pid(), mount.display()).into();
    let client = node.client();
    let counter = load_sample(&client, "counter", &[]);
    let pid = spawn(&client, &node, counter);

    // Leave less than one segment free.
    let filler = seen.join("filler");
    let free = available(&seen);
    assert!(
        free < 24 << 20,
        "the node's tmpfs, not the disk under it ({free} bytes free)"
    );
    std::fs::write(&filler, vec![0u8; (free - (2 << 20)) as usize]).expect("fill the disk");

    // Send from a thread: the message whose record needs the next segment waits, unacknowledged.
    let (url, sent) = (
        node.url.clone(),
        std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0)),
    );
    let sender = {
        let sent = std::sync::Arc::clone(&sent);
        std::thread::spawn(move || {
            let client = engine::client::Client::new(&url, scheduler::signer::Signer::generate_ed25519());
            let payload = vec![b'x'; 100 << 10];
            let mut refused = None;
            // About 40 fill the first segment; the rest fit in the second once space returns.
            for _ in 0..60 {
                match client.send(pid, &[Tag::new("Action", "Increment")], &payload) {
                    Ok(_) => {
                        sent.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    Err(error) => {
                        refused = Some(error);
                        break;
                    }
                }
            }
            refused
        })
    };
    wait_until("the node reports a full disk", || {
        client
            .get("/health")
            .is_err_and(|e| e.status() == Some(503) && e.to_string().contains("disk full"))
    });
    let ready = client.get("/ready").expect_err("not ready while full");
    assert!(ready.to_string().contains("disk full"), "{ready}");
    let refused = client
        .send(pid, &[Tag::new("Action", "Increment")], b"")
        .expect_err("writes are refused while the disk is full");
    assert_eq!(refused.status(), Some(503), "{refused}");
    assert!(refused.to_string().contains("disk full"), "{refused}");
    let metrics = String::from_utf8(client.get_bytes("/metrics").expect("metrics")).expect("UTF-8");
    assert!(metrics.contains("hewitt_log_disk_full 1"), "gauge set");

    // Free the space: the node goes on by itself.
    std::fs::remove_file(&filler).expect("free the disk");
    wait_until("the node accepts writes again", || client.get("/health").is_ok());
    let refused_by_sender = sender.join().expect("sender thread");
    assert!(
        refused_by_sender.as_ref().is_none_or(|e| e.status() == Some(503)),
        "the sender saw only 503s: {refused_by_sender:?}"
    );
    for _ in 0..3 {
        client
            .send(pid, &[Tag::new("Action", "Increment")], b"")
            .expect("send after space returns");
        sent.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
    let acknowledged = sent.load(std::sync::atomic::Ordering::SeqCst);
    assert!(acknowledged > 30, "segment 0 filled first ({acknowledged} messages)");
    // Every acknowledged increment counted once; the waiting one, acknowledged late, too.
    let edges = timeline_in_pages(&client, pid, 20);
    check_timeline(&edges, pid, node.address);
    assert_eq!(counter_value(&client, pid), edges.len() as u64 - 1);
    assert!(
        edges.len() as u64 > acknowledged,
        "no acknowledged message lost (nonce 0 is the process)"
    );
}
