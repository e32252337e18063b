//! The operator's log tools against a real node's data dir: `hewitt log verify` on a clean log
//! after SIGKILL, on a log with one flipped byte (it names the file and offset), and
//! `hewitt log repair` bringing the damaged data dir back to a node that starts.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use scheduler::tags::Tag;
use tests::{check_timeline, counter_value, load_sample, spawn, timeline, Node};

const BINARY: &str = env!("CARGO_BIN_EXE_hewitt-under-test");

/// Bytes of data of each large message: 20 of them put more than the node's torn-tail window
/// (16 MiB) after a flipped byte in the third, so that the flip is corruption, not a torn tail.
const LARGE_DATA_BYTES: usize = 1 << 20;
const LARGE_MESSAGES: u8 = 20;

/// Runs `hewitt log <args> --data-dir <dir>` with `stdin` as its input.
fn log_tool(dir: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(BINARY)
        .arg("log")
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .env("HEWITT_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the hewitt binary starts");
    {
        use std::io::Write;
        let mut input = child.stdin.take().expect("piped stdin");
        input.write_all(stdin.as_bytes()).expect("write stdin");
    }
    child.wait_with_output().expect("the log tool finishes")
}

fn text(output: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A node of one shard: these tests damage and repair the one log they find in `log/`.
fn start_one_shard(dir: &Path) -> Node {
    let mut command = std::process::Command::new(BINARY);
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .env("HEWITT_SHARDS", "1");
    Node::launch(command, dir)
}

/// The only segment of the log.
fn segment(dir: &Path) -> PathBuf {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("log"))
        .expect("log dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files.remove(0)
}

/// The offset of the first run of 4096 bytes equal to `byte` in `file`.
fn find_run(file: &Path, byte: u8) -> u64 {
    let bytes = std::fs::read(file).expect("read segment");
    let run = [byte; 4096];
    let at = bytes
        .windows(run.len())
        .position(|w| w == run)
        .expect("the run is in the segment");
    at as u64
}

fn flip_byte(file: &Path, offset: u64) {
    let handle = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(file)
        .expect("open segment");
    let mut byte = [0u8; 1];
    handle.read_exact_at(&mut byte, offset).expect("read byte");
    byte[0] ^= 0x10;
    handle.write_all_at(&byte, offset).expect("write byte");
}

/// Starts `hewitt serve` on `dir` and expects it to exit with a failure (bounded wait).
fn expect_serve_fails(dir: &Path) -> String {
    let mut child = Command::new(BINARY)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .env("HEWITT_LOG", "warn")
        .env("HEWITT_SHARDS", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the hewitt binary starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().expect("poll the node") {
            let output = child.wait_with_output().expect("collect stderr");
            assert!(!status.success(), "the node must refuse a corrupt log");
            return String::from_utf8_lossy(&output.stderr).into_owned();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the node started on a corrupt log");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The number after "offset " in the problem line naming `file`.
fn reported_offset(stdout: &str, file: &Path) -> u64 {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("problem: ") && l.contains(&file.display().to_string()))
        .unwrap_or_else(|| panic!("no problem names {}:\n{stdout}", file.display()));
    let rest = line
        .split("offset ")
        .nth(1)
        .unwrap_or_else(|| panic!("no offset in {line}"));
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().unwrap_or_else(|_| panic!("no offset in {line}"))
}

#[test]
fn verify_finds_a_flipped_byte_and_repair_brings_the_node_back() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_one_shard(dir.path());
    let client = node.client();
    let pid = spawn(&client, &node, load_sample(&client, "counter", &[]));
    for _ in 0..2 {
        client.send(pid, &[Tag::new("Action", "Increment")], b"").unwrap();
    }
    for i in 0..LARGE_MESSAGES {
        let data = vec![b'A' + i; LARGE_DATA_BYTES];
        client.send(pid, &[Tag::new("Action", "Increment")], &data).unwrap();
    }
    let sent = 2 + u64::from(LARGE_MESSAGES);
    node.kill();

    // Clean after SIGKILL: every acknowledged message is there.
    let output = log_tool(dir.path(), &["verify"], "");
    let report = text(&output);
    assert_eq!(output.status.code(), Some(0), "{report}");
    assert!(
        report.contains(&format!("records: 1 modules, 1 processes, {sent} messages")),
        "{report}"
    );
    assert!(report.contains("\nclean\n"), "{report}");

    // One byte flipped inside the third large message ('C'), more than 16 MiB before the end.
    let segment = segment(dir.path());
    let flipped = find_run(&segment, b'C') + 1000;
    flip_byte(&segment, flipped);
    let output = log_tool(dir.path(), &["verify"], "");
    let report = text(&output);
    assert_eq!(output.status.code(), Some(1), "{report}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let offset = reported_offset(&stdout, &segment);
    // The problem is at the start of the damaged frame: before the byte, within its headers.
    assert!(
        offset <= flipped && flipped - offset < 8192,
        "{offset} vs {flipped}\n{report}"
    );
    assert!(report.contains("corrupt: bad frame (checksum mismatch"), "{report}");
    let refused = expect_serve_fails(dir.path());
    assert!(refused.contains(&format!("offset {offset}")), "{refused}");

    // Repair asks first; anything but "yes" changes nothing.
    let output = log_tool(dir.path(), &["repair"], "no\n");
    let report = text(&output);
    assert_eq!(output.status.code(), Some(1), "{report}");
    assert!(
        report.contains(&format!("zero {} from offset {offset}", segment.display())),
        "{report}"
    );
    assert!(report.contains("nothing was changed"), "{report}");
    assert_eq!(log_tool(dir.path(), &["verify"], "").status.code(), Some(1));

    let output = log_tool(dir.path(), &["repair", "--yes"], "");
    let report = text(&output);
    assert_eq!(output.status.code(), Some(0), "{report}");
    assert!(report.contains(&format!("the log ends at lsn {offset}")), "{report}");
    // The damaged segment was copied aside first: nothing is lost.
    let quarantined: Vec<PathBuf> = std::fs::read_dir(dir.path().join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("quarantine-"))
        })
        .collect();
    assert_eq!(quarantined.len(), 1, "{report}");
    let copy = quarantined[0].join(segment.file_name().unwrap());
    let mut byte = [0u8; 1];
    std::fs::File::open(&copy)
        .and_then(|f| f.read_exact_at(&mut byte, flipped))
        .expect("read the copy");
    assert_eq!(byte[0], b'C' ^ 0x10, "the copy holds the damaged bytes");

    // Verified clean: the log keeps the messages before the damaged one.
    let kept = 2 + 2;
    let output = log_tool(dir.path(), &["verify"], "");
    let report = text(&output);
    assert_eq!(output.status.code(), Some(0), "{report}");
    assert!(
        report.contains(&format!("records: 1 modules, 1 processes, {kept} messages")),
        "{report}"
    );

    // And the node starts again on it, with the kept prefix, and goes on.
    let node = start_one_shard(dir.path());
    let client = node.client();
    let edges = timeline(&client, pid);
    assert_eq!(edges.len(), kept + 1);
    check_timeline(&edges, pid, node.address);
    assert_eq!(counter_value(&client, pid), kept as u64);
    client.send(pid, &[Tag::new("Action", "Increment")], b"").unwrap();
    assert_eq!(counter_value(&client, pid), kept as u64 + 1);
}
