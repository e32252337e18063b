//! Tests of the log as a whole: real files in temporary directories, the committer on a glommio
//! executor, recovery after damage written by hand.
//!
//! Frame encoding and segment naming are tested next to their code; speed is measured elsewhere.

use std::cell::RefCell;
use std::future::Future;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::LocalExecutorBuilder;

use super::*;

/// Small segments and batches, so that rollover and batching happen with few records.
fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        batch_bytes_max: 1024,
        pending_bytes_max: 64 << 10,
    }
}

fn on_executor<T>(future: impl Future<Output = T>) -> T {
    LocalExecutorBuilder::default()
        .make()
        .expect("glommio executor")
        .run(future)
}

/// A deterministic payload of a length that varies with `i`, up to `max_bytes`.
fn payload(i: usize, max_bytes: usize) -> Vec<u8> {
    let len = (i * 37 + 11) % (max_bytes + 1);
    (0..len).map(|j| (i * 7 + j) as u8).collect()
}

fn kind(i: usize) -> u8 {
    (i % 255) as u8 + 1
}

type Expected = Vec<(Lsn, u8, Vec<u8>)>;

fn contents(log: &Log) -> Expected {
    log.records()
        .map(|r| {
            let r = r.expect("every record checks");
            (r.lsn, r.kind, r.payload.to_vec())
        })
        .collect()
}

fn assert_reads(log: &Log, expected: &Expected) {
    assert_eq!(&contents(log), expected);
    for (lsn, kind, payload) in expected {
        let record = log.read(*lsn).expect("readable");
        assert_eq!((record.lsn, record.kind, record.payload), (*lsn, *kind, &payload[..]));
    }
}

/// A log with its committer running on the current executor.
struct Running {
    log: Rc<RefCell<Log>>,
    committer: Rc<Committer>,
    task: glommio::Task<()>,
}

impl Running {
    fn start(dir: &Path, config: LogConfig) -> Running {
        Running::start_writing(dir, config, false)
    }

    /// With `direct`, batches are written with O_DIRECT.
    fn start_writing(dir: &Path, config: LogConfig, direct: bool) -> Running {
        let log = Rc::new(RefCell::new(Log::open(dir, config).expect("open")));
        let committer = Committer::new(log.clone());
        committer.set_direct_io(direct);
        let task = glommio::spawn_local(committer.clone().run());
        Running { log, committer, task }
    }

    fn append(&self, kind: u8, payload: &[u8]) -> Lsn {
        self.log.borrow_mut().append(kind, payload).expect("append")
    }

    /// Appends records `range` (see `payload`, `kind`), waits until the last is durable, and
    /// adds them to `expected`.
    async fn append_durable(&self, range: std::ops::Range<usize>, max_bytes: usize, expected: &mut Expected) {
        let mut last = None;
        for i in range {
            let payload = payload(i, max_bytes);
            let lsn = self.append(kind(i), &payload);
            expected.push((lsn, kind(i), payload));
            last = Some(lsn);
        }
        if let Some(lsn) = last {
            self.committer.wait_durable(lsn).await.expect("durable");
        }
    }

    async fn stop(self) -> Result<CommitStats, LogError> {
        let result = self.committer.shutdown().await;
        self.task.await;
        result.map(|()| self.committer.stats())
    }
}

pub(super) fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files
}

pub(super) fn flip_bit(path: &Path, offset: u64) {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open segment");
    let mut byte = [0u8; 1];
    file.read_exact_at(&mut byte, offset).expect("read byte");
    byte[0] ^= 0x04;
    file.write_all_at(&byte, offset).expect("write byte");
}

fn expect_corrupt(result: Result<Log, LogError>, file: &Path, offset: u64) -> String {
    match result {
        Err(error @ LogError::Corrupt { .. }) => {
            let message = error.to_string();
            let LogError::Corrupt {
                file: found_file,
                offset: found_offset,
                ..
            } = &error
            else {
                unreachable!()
            };
            assert_eq!(found_file, file, "{message}");
            assert_eq!(*found_offset, offset, "{message}");
            assert!(message.contains(&file.display().to_string()), "{message}");
            assert!(message.contains(&format!("offset {offset}")), "{message}");
            message
        }
        other => panic!("expected corruption at {}:{offset}, got {other:?}", file.display()),
    }
}

/// Writes `count` records durably into a fresh log in `dir` and returns them.
fn populate(dir: &Path, config: LogConfig, count: usize, max_bytes: usize) -> Expected {
    on_executor(async {
        let running = Running::start(dir, config);
        let mut expected = Vec::new();
        running.append_durable(0..count, max_bytes, &mut expected).await;
        running.stop().await.expect("clean stop");
        expected
    })
}

#[test]
fn append_commit_reopen_returns_every_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig {
        segment_bytes: 1 << 20,
        ..LogConfig::default()
    };
    let expected = on_executor(async {
        let running = Running::start(dir.path(), config);
        let mut expected = Vec::new();
        for chunk in 0..10 {
            running
                .append_durable(chunk * 20..(chunk + 1) * 20, 500, &mut expected)
                .await;
        }
        {
            let log = running.log.borrow();
            assert_eq!(log.durable_lsn(), log.end_lsn());
            assert_reads(&log, &expected);
        }
        running.stop().await.expect("clean stop");
        expected
    });
    assert_eq!(expected.len(), 200);
    let log = Log::open(dir.path(), config).expect("reopen");
    assert_reads(&log, &expected);
    let (last_lsn, _, last_payload) = expected.last().expect("records");
    let end = last_lsn.0 + frame::frame_bytes(last_payload.len()) as u64;
    assert_eq!(log.end_lsn(), Lsn(end));
    assert_eq!(log.durable_lsn(), Lsn(end));
}

/// Direct writes rewrite the partial block a batch starts in (kept from the previous batch, or
/// read back after a reopen): the segments hold byte for byte what buffered writes give for the
/// same records, however the batches fell, and read back the same.
#[test]
fn direct_writes_leave_the_same_segments_as_buffered_ones_across_batches_and_reopens() {
    let config = LogConfig {
        segment_bytes: 64 << 10,
        batch_bytes_max: 4096,
        pending_bytes_max: 64 << 10,
    };
    let write = |dir: &Path, direct: bool| -> Expected {
        let mut expected = Vec::new();
        // Three runs of the log, each ending mid-block: the last two start by rewriting a block
        // the one before left partial.
        for (run, records) in [(0usize, 0..150), (1, 150..260), (2, 260..400)] {
            expected = on_executor(async move {
                let running = Running::start_writing(dir, config, direct);
                // Small waves, so that batches start at many offsets within a block.
                let mut at = records.start;
                while at < records.end {
                    let wave = (at % 7 + 1).min(records.end - at);
                    running.append_durable(at..at + wave, 700, &mut expected).await;
                    at += wave;
                }
                assert_eq!(running.committer.direct_io(), direct, "run {run}");
                assert_reads(&running.log.borrow(), &expected);
                let end = running.log.borrow().end_lsn().0;
                assert_ne!(end % 4096, 0, "run {run} ends mid-block, so the next rewrites it");
                running.stop().await.expect("clean stop");
                expected
            });
        }
        expected
    };
    let (buffered, direct) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let expected = write(buffered.path(), false);
    assert_eq!(write(direct.path(), true), expected);
    let files = segment_files(direct.path());
    assert!(files.len() > 2, "the records span several segments");
    for file in &files {
        let twin = buffered.path().join(file.file_name().expect("a name"));
        assert!(
            std::fs::read(file).expect("read") == std::fs::read(&twin).expect("read its twin"),
            "{} differs from its buffered twin",
            file.display()
        );
    }
    let log = Log::open(direct.path(), config).expect("reopen");
    assert_reads(&log, &expected);
}

#[test]
fn appends_before_a_commit_form_one_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig {
        segment_bytes: 1 << 20,
        ..LogConfig::default()
    };
    on_executor(async {
        let running = Running::start(dir.path(), config);
        let mut expected = Vec::new();
        // No await between the appends: the committer cannot run until the wait.
        running.append_durable(0..50, 200, &mut expected).await;
        let stats = running.committer.stats();
        assert_eq!(stats.batch_count, 1);
        assert_eq!(stats.record_count, 50);
        let bytes: usize = expected.iter().map(|(_, _, p)| frame::frame_bytes(p.len())).sum();
        assert_eq!(stats.byte_count, bytes as u64);

        running.append_durable(50..80, 200, &mut expected).await;
        let stats = running.stop().await.expect("clean stop");
        assert_eq!(stats.batch_count, 2);
        assert_eq!(stats.record_count, 80);
        assert!(stats.fdatasync_latency_us_total >= stats.fdatasync_latency_us_last);
        eprintln!(
            "fdatasync latency: last {} us, mean {} us over {} batches",
            stats.fdatasync_latency_us_last,
            stats.fdatasync_latency_us_total / stats.batch_count,
            stats.batch_count
        );
    });
}

#[test]
fn appends_during_a_sync_go_to_the_next_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    on_executor(async {
        let running = Running::start(dir.path(), small_config());
        let first = running.append(1, b"first");
        // Let the committer take the first batch; stop yielding as soon as it has.
        while running.log.borrow().has_pending() {
            glommio::executor().yield_now().await;
        }
        let mut expected = vec![(first, 1, b"first".to_vec())];
        running.append_durable(0..5, 100, &mut expected).await;
        running.committer.wait_durable(first).await.expect("durable");
        assert_reads(&running.log.borrow(), &expected);
        let stats = running.stop().await.expect("clean stop");
        assert_eq!(stats.batch_count, 2);
        assert_eq!(stats.record_count, 6);
    });
}

#[test]
fn segments_roll_over_and_read_across_segments_after_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = small_config();
    let expected = populate(dir.path(), config, 60, 900);
    let files = segment_files(dir.path());
    assert!(files.len() >= 4, "{files:?}");
    for (index, file) in files.iter().enumerate() {
        assert_eq!(std::fs::metadata(file).expect("stat").len(), 4096);
        let first_lsn = index as u64 * 4096;
        assert_eq!(file, &dir.path().join(format!("{first_lsn:020}.log")));
        // Each segment holds records and its first record starts it.
        assert!(expected.iter().any(|(lsn, _, _)| lsn.0 == first_lsn), "segment {index}");
    }
    for (lsn, _, payload) in &expected {
        let offset = lsn.0 % 4096;
        assert!(
            offset + frame::frame_bytes(payload.len()) as u64 <= 4096,
            "no record spans"
        );
    }
    let log = Log::open(dir.path(), config).expect("reopen");
    assert_reads(&log, &expected);
}

#[test]
fn a_batch_never_spans_a_segment_boundary() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Batches as large as segments; 512-byte frames fill a segment exactly.
    let config = LogConfig {
        segment_bytes: 4096,
        batch_bytes_max: 4096,
        pending_bytes_max: 64 << 10,
    };
    let expected = on_executor(async {
        let running = Running::start(dir.path(), config);
        let mut expected = Vec::new();
        // Two records first, so that the next chunk starts mid-segment and could reach past
        // the segment's end within one batch.
        for i in 0..20 {
            let payload = vec![i as u8; 500];
            expected.push((running.append(1, &payload), 1, payload));
            if i == 1 {
                let lsn = expected[1].0;
                running.committer.wait_durable(lsn).await.expect("durable");
            }
        }
        assert_eq!(expected[8].0, Lsn(4096), "the ninth record starts segment 1");
        let last = expected.last().expect("records").0;
        running.committer.wait_durable(last).await.expect("durable");
        let stats = running.stop().await.expect("clean stop");
        // Records 0..2, 2..8 (the rest of segment 0), 8..16 (all of segment 1), 16..20.
        assert_eq!(stats.batch_count, 4);
        expected
    });
    let log = Log::open(dir.path(), config).expect("reopen");
    assert_reads(&log, &expected);
}

#[test]
fn unsynced_records_are_readable() {
    let dir = tempfile::tempdir().expect("tempdir");
    on_executor(async {
        let log = Rc::new(RefCell::new(Log::open(dir.path(), small_config()).expect("open")));
        let mut expected = Vec::new();
        for i in 0..20 {
            let payload = payload(i, 700);
            let lsn = log.borrow_mut().append(kind(i), &payload).expect("append");
            expected.push((lsn, kind(i), payload));
        }
        // No committer yet: nothing is durable, everything is readable from memory, across the
        // rollovers too.
        assert_eq!(log.borrow().durable_lsn(), Lsn(0));
        assert!(log.borrow().end_lsn().0 > 4096);
        assert_reads(&log.borrow(), &expected);

        let committer = Committer::new(log.clone());
        let task = glommio::spawn_local(committer.clone().run());
        let last = expected.last().expect("records").0;
        committer.wait_durable(last).await.expect("durable");
        assert_eq!(log.borrow().durable_lsn(), log.borrow().end_lsn());
        assert_reads(&log.borrow(), &expected);
        committer.shutdown().await.expect("clean stop");
        task.await;
        assert!(matches!(log.borrow_mut().append(1, b"late"), Err(LogError::Closed)));
    });
}

#[test]
fn shutdown_makes_pending_records_durable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let expected = on_executor(async {
        let running = Running::start(dir.path(), small_config());
        let mut expected = Vec::new();
        for i in 0..10 {
            let payload = payload(i, 600);
            expected.push((running.append(kind(i), &payload), kind(i), payload));
        }
        let waiter = glommio::spawn_local({
            let committer = running.committer.clone();
            let lsn = expected[3].0;
            async move { committer.wait_durable(lsn).await }
        });
        let log = running.log.clone();
        running.stop().await.expect("clean stop");
        waiter.await.expect("durable before the stop");
        assert_eq!(log.borrow().durable_lsn(), log.borrow().end_lsn());
        expected
    });
    let log = Log::open(dir.path(), small_config()).expect("reopen");
    assert_reads(&log, &expected);
}

#[test]
fn torn_tail_is_zeroed_and_appends_continue() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = small_config();
    let mut expected = populate(dir.path(), config, 12, 300);
    let last = segment_files(dir.path()).pop().expect("segments");
    let end = {
        let log = Log::open(dir.path(), config).expect("open");
        log.end_lsn().0 % config.segment_bytes
    };
    assert!(end + 200 < config.segment_bytes, "room for the garbage");
    // A frame header promising more than was written, then garbage: a torn group commit.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&last)
        .expect("open segment");
    let mut garbage = vec![0u8; 200];
    garbage[0..4].copy_from_slice(&150u32.to_le_bytes());
    garbage[4] = 9;
    for (i, b) in garbage.iter_mut().enumerate().skip(12).take(100) {
        *b = i as u8 | 1;
    }
    file.write_all_at(&garbage, end).expect("write garbage");
    drop(file);

    {
        let log = Log::open(dir.path(), config).expect("a torn tail is not corruption");
        assert_reads(&log, &expected);
        assert_eq!(log.end_lsn().0 % config.segment_bytes, end);
    }
    let bytes = std::fs::read(&last).expect("read segment");
    assert!(bytes[end as usize..].iter().all(|&b| b == 0), "the torn tail is zeroed");

    on_executor(async {
        let running = Running::start(dir.path(), config);
        running.append_durable(100..110, 300, &mut expected).await;
        running.stop().await.expect("clean stop");
    });
    let log = Log::open(dir.path(), config).expect("reopen");
    assert_reads(&log, &expected);
}

#[test]
fn torn_last_record_is_dropped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig {
        segment_bytes: 64 << 10,
        batch_bytes_max: 256,
        pending_bytes_max: 64 << 10,
    };
    let mut expected = populate(dir.path(), config, 100, 100);
    let (lsn, _, _) = expected.pop().expect("records");
    let last = segment_files(dir.path()).pop().expect("segments");
    flip_bit(&last, lsn.0 % config.segment_bytes + 12);
    let log = Log::open(dir.path(), config).expect("a torn last record is not corruption");
    assert_reads(&log, &expected);
    assert_eq!(log.end_lsn(), lsn);
}

#[test]
fn stray_bytes_within_the_window_are_zeroed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = small_config();
    let expected = populate(dir.path(), config, 3, 100);
    let last = segment_files(dir.path()).pop().expect("segments");
    let end = expected
        .iter()
        .map(|(l, _, p)| l.0 + frame::frame_bytes(p.len()) as u64)
        .max();
    let end = end.expect("records") % config.segment_bytes;
    // The header at the end is zero (a page of the batch not written), a later page is.
    let file = std::fs::OpenOptions::new().write(true).open(&last).expect("open");
    file.write_all_at(&[0xab; 16], end + 512).expect("write");
    drop(file);
    let log = Log::open(dir.path(), config).expect("stray bytes within the window");
    assert_reads(&log, &expected);
    let bytes = std::fs::read(&last).expect("read segment");
    assert!(bytes[end as usize..].iter().all(|&b| b == 0));
}

#[test]
fn nonzero_bytes_beyond_the_window_are_corruption() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = small_config();
    let expected = populate(dir.path(), config, 3, 100);
    let last = segment_files(dir.path()).pop().expect("segments");
    let end = expected
        .iter()
        .map(|(l, _, p)| l.0 + frame::frame_bytes(p.len()) as u64)
        .max();
    let end = end.expect("records") % config.segment_bytes;
    let far = end + config.batch_bytes_max as u64 + 8;
    assert!(far < config.segment_bytes);
    let file = std::fs::OpenOptions::new().write(true).open(&last).expect("open");
    file.write_all_at(&[1], far).expect("write");
    drop(file);
    let message = expect_corrupt(Log::open(dir.path(), config), &last, end);
    assert!(
        message.contains(&format!("offset {far} holds a nonzero byte")),
        "{message}"
    );
}

#[test]
fn flipped_bit_in_a_sealed_segment_fails_open_with_file_and_offset() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = small_config();
    let expected = populate(dir.path(), config, 60, 900);
    let files = segment_files(dir.path());
    assert!(files.len() >= 3);
    // The second record of segment 1 (sealed).
    let (lsn, _, payload) = expected
        .iter()
        .filter(|(lsn, _, _)| lsn.0 / config.segment_bytes == 1)
        .nth(1)
        .expect("two records in segment 1");
    assert!(!payload.is_empty());
    let offset = lsn.0 % config.segment_bytes;
    flip_bit(&files[1], offset + 12);
    let message = expect_corrupt(Log::open(dir.path(), config), &files[1], offset);
    assert!(message.contains("checksum mismatch"), "{message}");

    // A flipped bit in the zero tail of a sealed segment is corruption too.
    flip_bit(&files[1], offset + 12);
    Log::open(dir.path(), config).expect("repaired");
    flip_bit(&files[0], config.segment_bytes - 1);
    let (last_lsn, _, last_payload) = expected
        .iter()
        .rfind(|(lsn, _, _)| lsn.0 / config.segment_bytes == 0)
        .expect("records in segment 0");
    let end = last_lsn.0 + frame::frame_bytes(last_payload.len()) as u64;
    assert!(end < config.segment_bytes, "segment 0 has an unused tail");
    let message = expect_corrupt(Log::open(dir.path(), config), &files[0], config.segment_bytes - 1);
    assert!(message.contains("sealed segment"), "{message}");
}

#[test]
fn flipped_bit_mid_last_segment_followed_by_records_fails_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig {
        segment_bytes: 64 << 10,
        batch_bytes_max: 256,
        pending_bytes_max: 64 << 10,
    };
    let expected = populate(dir.path(), config, 100, 100);
    let files = segment_files(dir.path());
    assert_eq!(files.len(), 1);
    let (lsn, _, _) = &expected[10];
    flip_bit(&files[0], lsn.0 + 4);
    let message = expect_corrupt(Log::open(dir.path(), config), &files[0], lsn.0);
    assert!(message.contains("not a torn tail"), "{message}");
}

#[test]
fn missing_segment_fails_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = small_config();
    populate(dir.path(), config, 60, 900);
    let files = segment_files(dir.path());
    assert!(files.len() >= 3);
    std::fs::remove_file(&files[1]).expect("remove");
    let message = expect_corrupt(Log::open(dir.path(), config), &files[1], 0);
    assert!(message.contains("segment missing"), "{message}");
}

#[test]
fn truncated_sealed_segment_fails_open_with_file_and_size() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = small_config();
    populate(dir.path(), config, 60, 900);
    let files = segment_files(dir.path());
    assert!(files.len() >= 3);
    // A sealed segment cut short (a copy that stopped half way, a file system that lost its end).
    let half = config.segment_bytes / 2;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&files[1])
        .expect("open")
        .set_len(half)
        .expect("truncate");
    let message = expect_corrupt(Log::open(dir.path(), config), &files[1], half);
    assert!(message.contains(&half.to_string()), "{message}");
}

#[test]
fn an_unused_last_segment_is_removed_and_the_one_before_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = small_config();
    let mut expected = populate(dir.path(), config, 5, 100);
    // A crash right after creating the next segment (prepared ahead, or before its first batch
    // was durable; preallocated or not): it holds nothing.
    let next = dir.path().join(format!("{:020}.log", config.segment_bytes));
    std::fs::File::create(&next).expect("create");
    {
        let log = Log::open(dir.path(), config).expect("open");
        assert_reads(&log, &expected);
        assert!(log.end_lsn() < Lsn(config.segment_bytes));
    }
    assert!(!next.exists(), "the unused segment is removed");
    std::fs::write(&next, vec![0u8; config.segment_bytes as usize]).expect("preallocated, unused");
    on_executor(async {
        let running = Running::start(dir.path(), config);
        assert!(!next.exists());
        running.append_durable(10..12, 100, &mut expected).await;
        running.stop().await.expect("clean stop");
    });
    let log = Log::open(dir.path(), config).expect("reopen");
    assert_reads(&log, &expected);
}

#[test]
fn backpressure_refuses_appends_past_the_pending_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig {
        segment_bytes: 64 << 10,
        batch_bytes_max: 512,
        pending_bytes_max: 2048,
    };
    on_executor(async {
        let log = Rc::new(RefCell::new(Log::open(dir.path(), config).expect("open")));
        // 100-byte payloads: 112-byte frames; 18 fit in 2048 bytes.
        let mut last = None;
        for _ in 0..18 {
            last = Some(log.borrow_mut().append(1, &[7; 100]).expect("under the limit"));
        }
        match log.borrow_mut().append(1, &[7; 100]) {
            Err(LogError::Backpressure {
                unsynced_bytes,
                pending_bytes_max,
            }) => {
                assert_eq!(unsynced_bytes, 18 * 112);
                assert_eq!(pending_bytes_max, 2048);
            }
            other => panic!("expected backpressure, got {other:?}"),
        }
        // A smaller record still fits.
        log.borrow_mut().append(2, &[]).expect("16 bytes fit");

        let committer = Committer::new(log.clone());
        let task = glommio::spawn_local(committer.clone().run());
        committer.wait_durable(last.expect("appended")).await.expect("durable");
        committer.wait_durable(Lsn(18 * 112)).await.expect("durable");
        assert_eq!(log.borrow().unsynced_bytes(), 0);
        log.borrow_mut().append(1, &[7; 100]).expect("room again");
        committer.shutdown().await.expect("clean stop");
        task.await;
        // 2048 bytes of 512-byte batches: at least 5 commits, none over the batch bound.
        let stats = committer.stats();
        assert!(stats.batch_count >= 5, "{stats:?}");
        assert_eq!(stats.record_count, 20);
    });
}

#[test]
fn record_too_large_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = small_config();
    let mut log = Log::open(dir.path(), config).expect("open");
    let max = config.payload_bytes_max();
    assert_eq!(max, 1024 - 12);
    let lsn = log.append(1, &vec![1; max]).expect("the largest payload fits");
    assert_eq!(log.read(lsn).expect("read").payload.len(), max);
    match log.append(1, &vec![1; max + 1]) {
        Err(LogError::RecordTooLarge {
            payload_bytes,
            payload_bytes_max,
        }) => assert_eq!((payload_bytes, payload_bytes_max), (max + 1, max)),
        other => panic!("expected RecordTooLarge, got {other:?}"),
    }
}

#[test]
fn reads_of_positions_without_a_record_fail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = small_config();
    let mut log = Log::open(dir.path(), config).expect("open");
    let a = log.append(1, &[5; 900]).expect("append");
    let b = log.append(2, &[6; 900]).expect("append");
    assert_eq!(a, Lsn(0));
    assert!(matches!(log.read(Lsn(4)), Err(LogError::Corrupt { .. })));
    assert!(matches!(log.read(Lsn(8)), Err(LogError::Corrupt { .. })), "mid-record");
    assert!(matches!(log.read(log.end_lsn()), Err(LogError::OutOfRange { .. })));
    assert_eq!(log.read(b).expect("read").kind, 2);
    // Fill segment 0 (four 912-byte frames) so that the next record rolls over, leaving a gap.
    for _ in 0..2 {
        log.append(3, &[7; 900]).expect("append");
    }
    let end = log.end_lsn();
    let next = log.append(4, &[8; 900]).expect("append");
    assert_eq!(next, Lsn(4096));
    assert!(end.0 < 4096);
    assert!(matches!(log.read(end), Err(LogError::OutOfRange { .. })), "sealed tail");
    assert_eq!(log.records().count(), 5);
}

#[test]
fn write_error_poisons_the_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = small_config();
    let expected = populate(dir.path(), config, 3, 100);
    let segment = segment_files(dir.path()).pop().expect("segment");
    on_executor(async {
        let log = Rc::new(RefCell::new(Log::open(dir.path(), config).expect("open")));
        // The committer opens the segment by name when it first writes to it: make that name
        // lead to /dev/full, where every write fails with ENOSPC.
        std::fs::rename(&segment, segment.with_extension("saved")).expect("rename");
        std::os::unix::fs::symlink("/dev/full", &segment).expect("symlink");
        let committer = Committer::new(log.clone());
        let task = glommio::spawn_local(committer.clone().run());

        let lsn = log.borrow_mut().append(1, b"never durable").expect("append");
        let error = committer.wait_durable(lsn).await.expect_err("write fails");
        let LogError::Poisoned(reason) = &error else {
            panic!("expected poison, got {error:?}");
        };
        assert!(reason.contains("writing"), "{reason}");
        assert!(log.borrow().poisoned().is_some());
        assert!(matches!(
            log.borrow_mut().append(1, b"later"),
            Err(LogError::Poisoned(_))
        ));
        assert!(matches!(committer.wait_durable(lsn).await, Err(LogError::Poisoned(_))));
        assert!(matches!(committer.shutdown().await, Err(LogError::Poisoned(_))));
        task.await;
        // What was durable stays readable; the refused record is readable but never durable.
        let log = log.borrow();
        for (lsn, _, payload) in &expected {
            assert_eq!(log.read(*lsn).expect("read").payload, &payload[..]);
        }
        assert_eq!(log.read(lsn).expect("read").payload, b"never durable");
        assert!(log.durable_lsn() <= lsn);
    });
}

#[test]
fn segment_creation_error_poisons_the_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    on_executor(async {
        let running = Running::start(dir.path(), small_config());
        // A directory where the first segment file should be created.
        std::fs::create_dir(dir.path().join(format!("{:020}.log", 0))).expect("mkdir");
        let lsn = running.append(1, b"x");
        match running.committer.wait_durable(lsn).await {
            Err(LogError::Poisoned(reason)) => assert!(reason.contains("creating segment"), "{reason}"),
            other => panic!("expected poison, got {other:?}"),
        }
        assert!(matches!(running.stop().await, Err(LogError::Poisoned(_))));
    });
}

/// With `keep_recent`, the last durable batches are read from memory. Here no batch reaches the
/// segment file (each is completed without being written), so a record read from the maps
/// would be the file's zeros: only those kept read back.
#[test]
fn recent_durable_batches_are_read_from_memory_within_their_bound() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = Log::open(dir.path(), small_config()).expect("open");
    // Two frames of 216 bytes fit, a third does not.
    log.keep_recent(600);
    let mut lsns = Vec::new();
    for i in 0..6u8 {
        lsns.push(log.append(1, &[i; 200]).expect("append"));
        let batch = log.take_batch(false).expect("a batch");
        assert_eq!(
            (batch.len, batch.bytes.len()),
            (frame::frame_bytes(200), 0),
            "not copied"
        );
        log.complete_batch(Ok(()));
    }
    assert_eq!(log.durable_lsn(), log.end_lsn());
    for (i, lsn) in lsns.iter().enumerate() {
        match log.read(*lsn) {
            Ok(record) if i >= 4 => assert_eq!(record.payload, &[i as u8; 200][..]),
            Err(LogError::Corrupt { .. }) if i < 4 => {}
            other => panic!("record {i}: {other:?}"),
        }
    }
    let read: Vec<u8> = log.records_from(lsns[4]).map(|r| r.expect("kept").payload[0]).collect();
    assert_eq!(read, [4, 5]);
    log.keep_recent(0);
    assert!(log.read(lsns[5]).is_err(), "no longer kept");
}

#[test]
fn poison_state_machine_of_the_core() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = Log::open(dir.path(), small_config()).expect("open");
    let a = log.append(1, b"a").expect("append");
    let batch = log.take_batch(true).expect("a batch");
    assert_eq!((batch.offset, batch.record_count), (0, 1));
    let b = log
        .append(2, b"b")
        .expect("appends continue while a batch is in flight");
    log.complete_batch(Err("disk on fire".to_owned()));
    assert_eq!(log.poisoned(), Some("disk on fire"));
    assert_eq!(log.durable_lsn(), Lsn(0));
    assert!(log.take_batch(true).is_none(), "no batch once poisoned");
    match log.append(3, b"c") {
        Err(LogError::Poisoned(reason)) => assert_eq!(reason, "disk on fire"),
        other => panic!("expected poison, got {other:?}"),
    }
    assert_eq!(log.read(a).expect("read").payload, b"a");
    assert_eq!(log.read(b).expect("read").payload, b"b");
}

#[test]
fn second_open_of_a_directory_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = Log::open(dir.path(), small_config()).expect("open");
    match Log::open(dir.path(), small_config()) {
        Err(LogError::Io { source, .. }) => {
            assert_eq!(source.kind(), std::io::ErrorKind::WouldBlock)
        }
        other => panic!("expected a lock error, got {other:?}"),
    }
    drop(log);
    Log::open(dir.path(), small_config()).expect("open after the first closed");
}

#[test]
fn format_file_is_checked() {
    let dir = tempfile::tempdir().expect("tempdir");
    populate(dir.path(), small_config(), 2, 10);
    let format = dir.path().join("FORMAT");
    assert_eq!(
        std::fs::read_to_string(&format).expect("FORMAT"),
        "hewitt-log\nversion 1\nsegment_bytes 4096\n"
    );
    let other = LogConfig {
        segment_bytes: 8192,
        ..small_config()
    };
    assert!(matches!(Log::open(dir.path(), other), Err(LogError::Config(_))));

    std::fs::write(&format, "hewitt-log\nversion 2\nsegment_bytes 4096\n").expect("write");
    // The offset names the line at fault: "version" starts after "hewitt-log\n".
    let message = expect_corrupt(Log::open(dir.path(), small_config()), &format, 11);
    assert!(message.contains("format version 2"), "{message}");

    std::fs::remove_file(&format).expect("remove");
    let message = expect_corrupt(Log::open(dir.path(), small_config()), &format, 0);
    assert!(message.contains("missing"), "{message}");
}

#[test]
fn config_bounds() {
    fn check(config: LogConfig, expected: Option<&str>) {
        match (config.validate(), expected) {
            (Ok(()), None) => {}
            (Err(LogError::Config(reason)), Some(part)) => {
                assert!(reason.contains(part), "{reason} lacks {part}")
            }
            (result, _) => panic!("{config:?}: got {result:?}, expected {expected:?}"),
        }
    }
    let ok = LogConfig::default();
    check(ok, None);
    check(small_config(), None);
    check(
        LogConfig {
            segment_bytes: 4095,
            ..small_config()
        },
        Some("segment_bytes 4095"),
    );
    check(
        LogConfig {
            segment_bytes: 6000,
            ..small_config()
        },
        Some("multiple of 4096"),
    );
    check(
        LogConfig {
            segment_bytes: 1 << 41,
            ..ok
        },
        Some("outside"),
    );
    check(
        LogConfig {
            batch_bytes_max: 32,
            ..ok
        },
        Some("below 64"),
    );
    check(
        LogConfig {
            batch_bytes_max: 1001,
            ..ok
        },
        Some("multiple of 8"),
    );
    check(
        LogConfig {
            batch_bytes_max: 8192,
            ..small_config()
        },
        Some("exceeds segment_bytes"),
    );
    check(
        LogConfig {
            batch_bytes_max: 1 << 33,
            segment_bytes: 1 << 34,
            pending_bytes_max: 1 << 34,
        },
        Some("32-bit"),
    );
    check(
        LogConfig {
            pending_bytes_max: 1000,
            ..small_config()
        },
        Some("below batch_bytes_max"),
    );
}

fn pack_all(log: &mut Log) -> usize {
    let mut packed = 0;
    while let Some(job) = log.pack_job() {
        let outcome = job.run();
        assert!(outcome.is_ok(), "packing: {:?}", outcome.as_ref().err());
        log.packed(&job, outcome);
        packed += 1;
    }
    packed
}

fn packed_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "zst"))
        .collect();
    files.sort();
    files
}

#[test]
fn sealed_segments_packed_with_zstd_read_back_the_same_before_and_after_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = LogConfig {
        segment_bytes: 64 << 10,
        batch_bytes_max: 8 << 10,
        pending_bytes_max: 1 << 20,
    };
    let expected = populate(dir.path(), config, 600, 900);
    let mut log = Log::open(dir.path(), config).expect("open");
    let segments = segment_files(dir.path()).len();
    assert!(segments >= 4, "{segments} segments");
    log.set_packing(Some(3));
    assert_eq!(pack_all(&mut log), segments - 1, "every sealed segment, not the last");
    assert_eq!(
        segment_files(dir.path()).len(),
        1,
        "plain files of packed segments removed"
    );
    assert_eq!(packed_files(dir.path()).len(), segments - 1);
    assert_reads(&log, &expected);
    let sealed = log.sealed_ends();
    // Appends go on in the last (plain) segment; old blocks are let go.
    log.release_unpacked();
    drop(log);

    let log = Log::open(dir.path(), config).expect("reopen, every packed block checked");
    assert_reads(&log, &expected);
    assert_eq!(log.sealed_ends(), sealed);
    drop(log);
    let log = Log::open_trusting(dir.path(), config, &sealed).expect("reopen trusting the index");
    assert_reads(&log, &expected);
    drop(log);
    check_sealed(dir.path(), config.segment_bytes, &sealed).expect("packed segments check");

    // An unfinished packing: the plain file is still there beside the packed copy (and a
    // temporary file): the plain one is kept.
    let packed = packed_files(dir.path())[0].clone();
    let plain = packed.with_extension("");
    let data: Vec<u8> = {
        let log = Log::open(dir.path(), config).expect("open");
        let mut bytes = vec![0u8; config.segment_bytes as usize];
        let mut records = log.records();
        for record in records.by_ref() {
            let record = record.expect("reads");
            if record.lsn.0 >= config.segment_bytes {
                break;
            }
            let mut frame = Vec::new();
            frame::encode(record.kind, record.payload, &mut frame);
            bytes[record.lsn.0 as usize..record.lsn.0 as usize + frame.len()].copy_from_slice(&frame);
        }
        bytes
    };
    std::fs::write(&plain, &data).expect("plain copy");
    std::fs::write(dir.path().join("00000000000000065536.log.zst.tmp"), b"half").expect("temp");
    let log = Log::open(dir.path(), config).expect("open with both");
    assert_reads(&log, &expected);
    assert!(plain.exists() && !packed.exists(), "the plain segment wins");
    assert!(!dir.path().join("00000000000000065536.log.zst.tmp").exists());
    drop(log);
}

#[test]
fn a_damaged_packed_block_fails_open_and_reads_with_the_packed_file_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Segments of several blocks (about 1 MiB each).
    let config = LogConfig {
        segment_bytes: 4 << 20,
        batch_bytes_max: 64 << 10,
        pending_bytes_max: 16 << 20,
    };
    let expected = populate(dir.path(), config, 9000, 2000);
    let sealed = {
        let mut log = Log::open(dir.path(), config).expect("open");
        log.set_packing(Some(1));
        assert!(pack_all(&mut log) >= 1);
        log.sealed_ends()
    };
    let packed = packed_files(dir.path())[0].clone();
    let len = std::fs::metadata(&packed).expect("packed").len();
    // A byte in a middle block.
    flip_bit(&packed, len * 6 / 10);
    // A full open reads every block: refused, naming the packed file.
    match Log::open(dir.path(), config) {
        Err(LogError::Corrupt { file, .. }) => assert_eq!(file, packed),
        other => panic!("expected corruption, got {other:?}"),
    }
    // Trusted by an index, the open succeeds; the damaged block fails its reads (every time),
    // the others read.
    let log = Log::open_trusting(dir.path(), config, &sealed).expect("trusting open");
    let failed = |log: &Log| {
        expected
            .iter()
            .filter(|(lsn, _, _)| matches!(log.read(*lsn), Err(LogError::Corrupt { ref file, .. }) if *file == packed))
            .count()
    };
    let first = failed(&log);
    assert!(first > 0 && first < expected.len(), "{first} reads failed");
    assert_eq!(failed(&log), first, "a failed block is read again, and fails again");
    assert!(check_sealed(dir.path(), config.segment_bytes, &sealed).is_err());
    drop(log);

    // inspect names it; repair sets the packed file aside and writes its intact blocks back as
    // a plain segment.
    let report = inspect::scan(dir.path(), &inspect::ScanOptions::default(), &mut NoVisitor).expect("scan");
    let problem = report.problems.first().expect("a problem");
    assert_eq!(problem.file, packed);
    let plan = inspect::repair(
        dir.path(),
        &inspect::ScanOptions::default(),
        1,
        &mut NoVisitor,
        &mut |_| true,
    )
    .expect("repair");
    assert!(
        plan.actions
            .iter()
            .any(|a| matches!(a, inspect::RepairAction::Unpack { .. })),
        "{:?}",
        plan.actions
    );
    assert!(plan.quarantine.join(packed.file_name().expect("name")).exists());
    let log = Log::open(dir.path(), config).expect("open after repair");
    let kept = contents(&log);
    assert!(!kept.is_empty() && kept.len() < expected.len());
    assert_eq!(kept[..], expected[..kept.len()]);
}

struct NoVisitor;

impl inspect::Visitor for NoVisitor {
    fn record(&mut self, _record: Record<'_>) {}
    fn progress(&mut self, _progress: inspect::Progress) {}
}

#[test]
fn segments_prepared_ahead_are_used_and_a_torn_tail_before_an_unused_one_is_still_a_torn_tail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = small_config();
    let expected = on_executor(async {
        let running = Running::start(dir.path(), config);
        running.log.borrow_mut().prepare_now();
        let mut expected = Vec::new();
        for chunk in 0..20 {
            running
                .append_durable(chunk * 5..chunk * 5 + 5, 200, &mut expected)
                .await;
            running.log.borrow_mut().prepare_now();
        }
        running.stop().await.expect("clean stop");
        expected
    });
    let segments = segment_files(dir.path());
    assert!(segments.len() >= 4, "{} segments", segments.len());
    // The last file is the one prepared ahead, unused: reopening removes it.
    let log = Log::open(dir.path(), config).expect("reopen");
    assert_reads(&log, &expected);
    let last = log.end_lsn();
    drop(log);
    assert_eq!(segment_files(dir.path()).len(), segments.len() - 1);

    // A torn write after the last record, with an unused segment prepared after it.
    let offset = last.0 % config.segment_bytes;
    let current = segment_files(dir.path()).last().expect("a segment").clone();
    let file = std::fs::OpenOptions::new().write(true).open(&current).expect("open");
    file.write_all_at(&[0xab; 40], offset).expect("torn bytes");
    let prepared = dir.path().join(format!(
        "{:020}.log",
        (last.0 / config.segment_bytes + 1) * config.segment_bytes
    ));
    std::fs::write(&prepared, vec![0u8; config.segment_bytes as usize]).expect("prepared");
    let log = Log::open(dir.path(), config).expect("a torn tail, not corruption");
    assert_reads(&log, &expected);
    assert_eq!(log.end_lsn(), last);
}
