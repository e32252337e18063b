//! The persisted index of a shard: what reading its log back builds (each process's timeline and
//! where each message sits), saved so that a start reads only the log written since the last
//! save, instead of every record.
//!
//! The index is a cache of the log, never the truth: every part of it is checked when it is
//! loaded, and anything that does not check (a damaged file, a log cut back by `hewitt log
//! repair`, an index from another log) makes the start read the whole log, as without one.
//!
//! # Files, in `<shard dir>/index/`
//!
//! All integers little-endian; checksums are CRC-32C.
//!
//! ## `journal`: the timelines
//!
//! ```text
//! "HWIXJRN" 0x01                        magic and version (8 bytes)
//! frame*                                length u32 | crc u32 of the body | body (length bytes)
//! ```
//!
//! A body is a kind byte and its fields:
//!
//! - `1` *digests*: the records of a stretch of the log, in log order, one after another:
//!   - `1` module `lsn u64`: a module record, read from the log at start;
//!   - `2` process `lsn u64`: a process's nonce-0 assignment, read from the log at start (its
//!     item holds the tags the process needs);
//!   - `3` message `slot u32 | lsn u64 | timestamp u64 | block height u64 | hash chain [32]`: the
//!     next assignment of the process spawned `slot`-th on this shard (its nonce is the number
//!     of assignments before it);
//!   - `4` assigned: the fields of `3`, then the `message id [32]` assigned from another
//!     timeline.
//! - `2` *commit*: `to u64 | last u64 | last crc u32 | sealed count u32 | sealed end u64 * count |
//!   run count u32 | (run seq u64 | entries u64) * count | next run seq u64`. The digests before
//!   it cover the log up to `to`, the position after the record at `last`, whose payload has
//!   CRC `last crc`. The sealed ends are where the data of each sealed segment ended
//!   ([`Log::sealed_ends`]), and the runs are the message runs that hold every message id below
//!   `to`.
//!
//! A save appends one digests frame and one commit, then syncs. A start uses the digests up to
//! the last commit that checks and ignores what follows it (a save cut short).
//!
//! ## `run-<seq>`: where messages sit
//!
//! ```text
//! "HWIXRUN" 0x01 | entries u64 | crc u32 of the entries | 12 zero bytes      (32 bytes)
//! (message id [32] | nonce u64 | slot u32 | 4 zero bytes) * entries         sorted by id
//! ```
//!
//! Each save writes the message ids assigned since the last one as a new run. Runs are merged,
//! newest pair first, while the older of the two holds fewer than four times the entries of the
//! newer, so that a shard keeps a few runs (their sizes growing by at least 4x) and a lookup
//! searches each of them once. A run is written whole, synced and named in a commit before it
//! counts; runs a commit no longer names are deleted.
//!
//! ## Invariants
//!
//! - A commit is written only once the log is durable up to its `to`.
//! - The digests and runs a commit names describe exactly the records below `to`.
//! - At load, the record at `last` must still be there with the same payload CRC and end at
//!   `to`; every frame's checksum, every run's checksum, count and order are checked.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;
use scheduler::log::{Log, Lsn};
use scheduler::{BlockHeight, HashChain, MessageId, Nonce, Timestamp};

use crate::shard::IdMap;

/// The index directory of a shard's data dir.
pub const INDEX_DIR: &str = "index";
const JOURNAL_FILE: &str = "journal";
const JOURNAL_MAGIC: &[u8; 8] = b"HWIXJRN\x01";
const RUN_MAGIC: &[u8; 8] = b"HWIXRUN\x01";
const RUN_HEADER_BYTES: usize = 32;
const RUN_ENTRY_BYTES: usize = 48;
/// Every this many entries of a run, its key is kept in memory (the fence), so that a lookup
/// reads one block of the file.
const FENCE_EVERY: usize = 64;
/// A run is merged into the one before it while that one holds fewer than this many times its
/// entries.
const MERGE_RATIO: u64 = 4;

const BODY_DIGESTS: u8 = 1;
const BODY_COMMIT: u8 = 2;
const DIGEST_MODULE: u8 = 1;
const DIGEST_PROCESS: u8 = 2;
const DIGEST_MESSAGE: u8 = 3;
const DIGEST_ASSIGNED: u8 = 4;
const MESSAGE_DIGEST_BYTES: usize = 4 + 8 + 8 + 8 + 32;

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}, byte {offset}: {reason}")]
    Damaged { path: PathBuf, offset: u64, reason: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> IndexError + '_ {
    move |source| IndexError::Io {
        path: path.to_owned(),
        source,
    }
}

fn damaged(path: &Path, offset: u64, reason: impl Into<String>) -> IndexError {
    IndexError::Damaged {
        path: path.to_owned(),
        offset,
        reason: reason.into(),
    }
}

/// An assignment as the index keeps it (a process's timeline entry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MessageDigest {
    pub slot: u32,
    pub lsn: Lsn,
    pub timestamp: Timestamp,
    pub block_height: BlockHeight,
    pub hash_chain: HashChain,
}

/// One record of the log, as the journal keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Digest {
    Module(Lsn),
    Process(Lsn),
    Message(MessageDigest),
    /// A message assigned from another timeline: also indexed by (process, message).
    Assigned(MessageDigest, MessageId),
}

/// The digests of the records appended since the last save, in log order.
#[derive(Default)]
pub struct Journal {
    bytes: Vec<u8>,
    records: u64,
    /// The last record digested, ever (not only since the last save).
    last: Option<Lsn>,
}

impl Journal {
    pub fn push(&mut self, digest: &Digest) {
        let out = &mut self.bytes;
        let lsn = match digest {
            Digest::Module(lsn) | Digest::Process(lsn) => {
                out.push(if matches!(digest, Digest::Module(_)) {
                    DIGEST_MODULE
                } else {
                    DIGEST_PROCESS
                });
                out.extend_from_slice(&lsn.0.to_le_bytes());
                *lsn
            }
            Digest::Message(m) | Digest::Assigned(m, _) => {
                out.push(if matches!(digest, Digest::Message(_)) {
                    DIGEST_MESSAGE
                } else {
                    DIGEST_ASSIGNED
                });
                out.extend_from_slice(&m.slot.to_le_bytes());
                out.extend_from_slice(&m.lsn.0.to_le_bytes());
                out.extend_from_slice(&m.timestamp.0.to_le_bytes());
                out.extend_from_slice(&m.block_height.0.to_le_bytes());
                out.extend_from_slice(&m.hash_chain.0);
                if let Digest::Assigned(_, message) = digest {
                    out.extend_from_slice(&message.0);
                }
                m.lsn
            }
        };
        self.records += 1;
        self.last = Some(lsn);
    }

    /// Records digested since the last [`Journal::take`].
    pub fn records(&self) -> u64 {
        self.records
    }

    pub fn last(&self) -> Option<Lsn> {
        self.last
    }

    /// After a saved index was loaded: its last record is the last digested.
    pub fn resume_after(&mut self, last: Lsn) {
        self.last = Some(last);
    }

    /// The digests since the last take.
    pub fn take(&mut self) -> Vec<u8> {
        self.records = 0;
        std::mem::take(&mut self.bytes)
    }

    /// Puts back digests taken by a save that failed, before those pushed since.
    pub fn give_back(&mut self, mut bytes: Vec<u8>, records: u64) {
        bytes.extend_from_slice(&self.bytes);
        self.bytes = bytes;
        self.records += records;
    }
}

fn take_array<const N: usize>(bytes: &[u8], at: &mut usize) -> Option<[u8; N]> {
    let out = bytes.get(*at..*at + N)?.try_into().ok()?;
    *at += N;
    Some(out)
}

fn take_u64(bytes: &[u8], at: &mut usize) -> Option<u64> {
    take_array::<8>(bytes, at).map(u64::from_le_bytes)
}

fn take_u32(bytes: &[u8], at: &mut usize) -> Option<u32> {
    take_array::<4>(bytes, at).map(u32::from_le_bytes)
}

/// Reads the digests of one journal body; `Err` at the first malformed one (its offset).
pub fn digests(bytes: &[u8]) -> impl Iterator<Item = Result<Digest, usize>> + '_ {
    let mut at = 0;
    let mut failed = false;
    std::iter::from_fn(move || {
        if failed || at >= bytes.len() {
            return None;
        }
        let start = at;
        let digest = (|| {
            let tag = *bytes.get(at)?;
            at += 1;
            match tag {
                DIGEST_MODULE => Some(Digest::Module(Lsn(take_u64(bytes, &mut at)?))),
                DIGEST_PROCESS => Some(Digest::Process(Lsn(take_u64(bytes, &mut at)?))),
                DIGEST_MESSAGE | DIGEST_ASSIGNED => {
                    let fields = bytes.get(at..at + MESSAGE_DIGEST_BYTES)?;
                    let mut f = 0;
                    let digest = MessageDigest {
                        slot: take_u32(fields, &mut f)?,
                        lsn: Lsn(take_u64(fields, &mut f)?),
                        timestamp: Timestamp(take_u64(fields, &mut f)?),
                        block_height: BlockHeight(take_u64(fields, &mut f)?),
                        hash_chain: HashChain(take_array(fields, &mut f)?),
                    };
                    at += MESSAGE_DIGEST_BYTES;
                    if tag == DIGEST_MESSAGE {
                        Some(Digest::Message(digest))
                    } else {
                        Some(Digest::Assigned(digest, MessageId(take_array(bytes, &mut at)?)))
                    }
                }
                _ => None,
            }
        })();
        if digest.is_none() {
            failed = true;
        }
        Some(digest.ok_or(start))
    })
}

/// Where a message sits: the slot of its process and its nonce there.
pub type Place = (u32, Nonce);

/// A sorted, immutable file of message places, mapped.
pub struct Run {
    seq: u64,
    map: Mmap,
    count: usize,
    /// The key of every [`FENCE_EVERY`]-th entry.
    fence: Vec<[u8; 32]>,
}

impl Run {
    pub fn seq(&self) -> u64 {
        self.seq
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn entry(&self, i: usize) -> &[u8] {
        let at = RUN_HEADER_BYTES + i * RUN_ENTRY_BYTES;
        &self.map[at..at + RUN_ENTRY_BYTES]
    }

    fn key(&self, i: usize) -> &[u8] {
        &self.entry(i)[..32]
    }

    fn place(&self, i: usize) -> Place {
        let e = self.entry(i);
        let nonce = u64::from_le_bytes(e[32..40].try_into().expect("8 bytes"));
        let slot = u32::from_le_bytes(e[40..44].try_into().expect("4 bytes"));
        (slot, Nonce(nonce))
    }

    pub fn find(&self, id: &MessageId) -> Option<Place> {
        let block = self.fence.partition_point(|key| key <= &id.0).checked_sub(1)?;
        let (mut lo, mut hi) = (block * FENCE_EVERY, ((block + 1) * FENCE_EVERY).min(self.count));
        while lo < hi {
            let mid = (lo + hi) / 2;
            match self.key(mid).cmp(&id.0[..]) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(self.place(mid)),
            }
        }
        None
    }

    fn path(dir: &Path, seq: u64) -> PathBuf {
        dir.join(format!("run-{seq:016}"))
    }

    /// Maps run `seq` and checks it whole: magic, size, checksum, order; builds its fence.
    fn open(dir: &Path, seq: u64, count: u64) -> Result<Run, IndexError> {
        let path = Run::path(dir, seq);
        let file = File::open(&path).map_err(io(&path))?;
        // SAFETY: run files are written whole and synced before a commit names them, and never
        // written again; nothing else writes the index directory while the node runs.
        let map = unsafe { Mmap::map(&file) }.map_err(io(&path))?;
        if map.len() < RUN_HEADER_BYTES || &map[..8] != RUN_MAGIC {
            return Err(damaged(&path, 0, "not a run file (magic)"));
        }
        let header_count = u64::from_le_bytes(map[8..16].try_into().expect("8 bytes"));
        let crc = u32::from_le_bytes(map[16..20].try_into().expect("4 bytes"));
        let count_usize = usize::try_from(count).map_err(|_| damaged(&path, 8, "too many entries"))?;
        let expected_len = count_usize
            .checked_mul(RUN_ENTRY_BYTES)
            .and_then(|b| b.checked_add(RUN_HEADER_BYTES));
        if header_count != count || expected_len != Some(map.len()) {
            return Err(damaged(
                &path,
                8,
                format!(
                    "{header_count} entries in a file of {} bytes, where the commit says {count}",
                    map.len()
                ),
            ));
        }
        let entries = &map[RUN_HEADER_BYTES..];
        if crc32c::crc32c(entries) != crc {
            return Err(damaged(&path, 16, "checksum mismatch"));
        }
        let mut fence = Vec::with_capacity(count_usize.div_ceil(FENCE_EVERY));
        let mut previous: Option<&[u8]> = None;
        for (i, entry) in entries.chunks_exact(RUN_ENTRY_BYTES).enumerate() {
            let key = &entry[..32];
            if previous.is_some_and(|p| p >= key) {
                let offset = (RUN_HEADER_BYTES + i * RUN_ENTRY_BYTES) as u64;
                return Err(damaged(&path, offset, "entries out of order"));
            }
            previous = Some(key);
            if i % FENCE_EVERY == 0 {
                fence.push(key.try_into().expect("32 bytes"));
            }
        }
        Ok(Run {
            seq,
            map,
            count: count_usize,
            fence,
        })
    }

    /// Writes run `seq` from entries sorted by id (no duplicates), syncs it and maps it; on
    /// failure the partial file is removed.
    fn write(dir: &Path, seq: u64, entries: impl Iterator<Item = (MessageId, Place)>) -> Result<Run, IndexError> {
        let written = Run::write_file(dir, seq, entries);
        if written.is_err() {
            let _ = std::fs::remove_file(Run::path(dir, seq));
        }
        written
    }

    fn write_file(dir: &Path, seq: u64, entries: impl Iterator<Item = (MessageId, Place)>) -> Result<Run, IndexError> {
        let path = Run::path(dir, seq);
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(io(&path))?;
        let mut out = BufWriter::with_capacity(1 << 20, &file);
        out.write_all(&[0; RUN_HEADER_BYTES]).map_err(io(&path))?;
        let (mut crc, mut count) = (0u32, 0u64);
        let mut entry = [0u8; RUN_ENTRY_BYTES];
        for (id, (slot, nonce)) in entries {
            entry[..32].copy_from_slice(&id.0);
            entry[32..40].copy_from_slice(&nonce.0.to_le_bytes());
            entry[40..44].copy_from_slice(&slot.to_le_bytes());
            crc = crc32c::crc32c_append(crc, &entry);
            out.write_all(&entry).map_err(io(&path))?;
            count += 1;
        }
        out.flush().map_err(io(&path))?;
        drop(out);
        let mut header = [0u8; RUN_HEADER_BYTES];
        header[..8].copy_from_slice(RUN_MAGIC);
        header[8..16].copy_from_slice(&count.to_le_bytes());
        header[16..20].copy_from_slice(&crc.to_le_bytes());
        file.write_all_at(&header, 0).map_err(io(&path))?;
        file.sync_all().map_err(io(&path))?;
        Run::open(dir, seq, count)
    }

    fn iter(&self) -> impl Iterator<Item = (MessageId, Place)> + '_ {
        (0..self.count).map(|i| (MessageId(self.key(i).try_into().expect("32 bytes")), self.place(i)))
    }
}

/// Merges two sorted iterators of entries, `b` the newer: where both hold a key, `b`'s entry.
fn merged<'a>(
    a: impl Iterator<Item = (MessageId, Place)> + 'a,
    b: impl Iterator<Item = (MessageId, Place)> + 'a,
) -> impl Iterator<Item = (MessageId, Place)> + 'a {
    let (mut a, mut b) = (a.peekable(), b.peekable());
    std::iter::from_fn(move || match (a.peek(), b.peek()) {
        (Some(x), Some(y)) => match x.0 .0.cmp(&y.0 .0) {
            std::cmp::Ordering::Less => a.next(),
            std::cmp::Ordering::Greater => b.next(),
            // The newer run's place wins, as the newer in memory does (see MessageIndex::set).
            std::cmp::Ordering::Equal => {
                a.next();
                b.next()
            }
        },
        (Some(_), None) => a.next(),
        (None, _) => b.next(),
    })
}

/// Which process (slot) and nonce every message id assigned on the shard has: the ids since the
/// last save in memory, the rest in the runs the saves wrote.
#[derive(Default)]
pub struct MessageIndex {
    mem: IdMap<MessageId, Place>,
    /// What a save in progress is writing out (still searched until the save lands).
    frozen: IdMap<MessageId, Place>,
    /// Oldest first.
    runs: Vec<Arc<Run>>,
    in_runs: usize,
}

impl MessageIndex {
    pub fn get(&self, id: &MessageId) -> Option<Place> {
        if let Some(place) = self.mem.get(id).or_else(|| self.frozen.get(id)) {
            return Some(*place);
        }
        self.runs.iter().rev().find_map(|run| run.find(id))
    }

    pub fn contains_key(&self, id: &MessageId) -> bool {
        self.get(id).is_some()
    }

    /// Adds `id` unless it is there; returns where it already was, if it was.
    pub fn insert(&mut self, id: MessageId, place: Place) -> Option<Place> {
        if let Some(existing) = self.get(&id) {
            return Some(existing);
        }
        self.mem.insert(id, place);
        None
    }

    pub fn len(&self) -> usize {
        self.mem.len() + self.frozen.len() + self.in_runs
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sets where `id` sits, whether or not it was there (a process's own id, nonce 0, takes
    /// the place of a message that had the same id).
    pub fn set(&mut self, id: MessageId, place: Place) {
        self.mem.insert(id, place);
    }

    /// Room for `additional` more ids in memory.
    pub fn reserve(&mut self, additional: usize) {
        self.mem.reserve(additional);
    }

    /// The runs, oldest first.
    pub fn runs(&self) -> Vec<Arc<Run>> {
        self.runs.clone()
    }

    /// Uses `runs` (loaded at start, or what a save left) for the ids they hold.
    pub fn set_runs(&mut self, runs: Vec<Arc<Run>>) {
        self.in_runs = runs.iter().map(|r| r.len()).sum();
        self.runs = runs;
    }

    /// Starts a save: the ids in memory are kept aside (still searched) and returned sorted
    /// afterwards by the save's writer.
    pub fn freeze(&mut self) -> Vec<(MessageId, Place)> {
        assert!(self.frozen.is_empty(), "one save at a time");
        self.frozen = std::mem::take(&mut self.mem);
        self.frozen.iter().map(|(id, place)| (*id, *place)).collect()
    }

    /// Ends a save: `runs` now hold the frozen ids (`Some`), or the save failed and they go back
    /// to memory (`None`).
    pub fn thaw(&mut self, runs: Option<Vec<Arc<Run>>>) {
        let frozen = std::mem::take(&mut self.frozen);
        match runs {
            Some(runs) => self.set_runs(runs),
            None => self.mem.extend(frozen),
        }
    }
}

/// What a commit says (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Commit {
    pub to: Lsn,
    pub last: Lsn,
    pub last_crc: u32,
    pub sealed_ends: Vec<u64>,
    pub runs: Vec<(u64, u64)>,
    pub next_seq: u64,
}

impl Commit {
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(BODY_COMMIT);
        out.extend_from_slice(&self.to.0.to_le_bytes());
        out.extend_from_slice(&self.last.0.to_le_bytes());
        out.extend_from_slice(&self.last_crc.to_le_bytes());
        out.extend_from_slice(&(self.sealed_ends.len() as u32).to_le_bytes());
        for end in &self.sealed_ends {
            out.extend_from_slice(&end.to_le_bytes());
        }
        out.extend_from_slice(&(self.runs.len() as u32).to_le_bytes());
        for (seq, count) in &self.runs {
            out.extend_from_slice(&seq.to_le_bytes());
            out.extend_from_slice(&count.to_le_bytes());
        }
        out.extend_from_slice(&self.next_seq.to_le_bytes());
    }

    fn decode(body: &[u8]) -> Option<Commit> {
        let mut at = 1;
        let to = Lsn(take_u64(body, &mut at)?);
        let last = Lsn(take_u64(body, &mut at)?);
        let last_crc = take_u32(body, &mut at)?;
        let sealed = take_u32(body, &mut at)? as usize;
        let sealed_ends = (0..sealed)
            .map(|_| take_u64(body, &mut at))
            .collect::<Option<Vec<_>>>()?;
        let runs = take_u32(body, &mut at)? as usize;
        let runs = (0..runs)
            .map(|_| Some((take_u64(body, &mut at)?, take_u64(body, &mut at)?)))
            .collect::<Option<Vec<_>>>()?;
        let next_seq = take_u64(body, &mut at)?;
        (at == body.len()).then_some(Commit {
            to,
            last,
            last_crc,
            sealed_ends,
            runs,
            next_seq,
        })
    }
}

/// Most digest bytes in one journal frame (frames carry a 32-bit length).
const DIGESTS_FRAME_BYTES: usize = 64 << 20;

/// Cuts `digests` into pieces of at most about `max` bytes, at digest boundaries.
fn split_digests(digests: &[u8], max: usize) -> Vec<&[u8]> {
    let mut pieces = Vec::new();
    let (mut start, mut at) = (0, 0);
    while at < digests.len() {
        let len = match digests[at] {
            DIGEST_MODULE | DIGEST_PROCESS => 9,
            DIGEST_MESSAGE => 1 + MESSAGE_DIGEST_BYTES,
            _ => 1 + MESSAGE_DIGEST_BYTES + 32,
        };
        if at - start + len > max && at > start {
            pieces.push(&digests[start..at]);
            start = at;
        }
        at = (at + len).min(digests.len());
    }
    if start < digests.len() {
        pieces.push(&digests[start..]);
    }
    pieces
}

fn frame(body: &[u8], out: &mut Vec<u8>) {
    assert!(
        body.len() <= u32::MAX as usize,
        "journal frames are cut well below 4 GiB"
    );
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(body).to_le_bytes());
    out.extend_from_slice(body);
}

/// A saved index read back: its last commit, the journal's digest bodies before it, and its
/// runs, each checked.
pub struct Loaded {
    pub commit: Commit,
    journal: Mmap,
    /// Where the digest bodies before the commit lie in `journal`.
    bodies: Vec<std::ops::Range<usize>>,
    pub runs: Vec<Arc<Run>>,
    /// Where the commit frame ends: appends go on from there.
    end: u64,
}

impl Loaded {
    /// The digest bodies, in log order.
    pub fn bodies(&self) -> impl Iterator<Item = &[u8]> {
        self.bodies.iter().map(|range| &self.journal[range.clone()])
    }

    /// Whether `log` still holds the records this index describes: the record at `last` is
    /// there, with the same payload, and ends at `to`.
    pub fn matches(&self, log: &Log) -> Result<(), String> {
        let commit = &self.commit;
        if log.end_lsn() < commit.to {
            return Err(format!(
                "it covers the log up to {}, which ends at {}",
                commit.to,
                log.end_lsn()
            ));
        }
        let mut records = log.records_from(commit.last);
        match records.next() {
            Some(Ok(record)) if record.lsn == commit.last && crc32c::crc32c(record.payload) == commit.last_crc => {}
            Some(Err(error)) => return Err(format!("its last record does not read: {error}")),
            _ => return Err(format!("its last record, at {}, differs from the log's", commit.last)),
        }
        if records.next_lsn() != commit.to {
            return Err(format!("its last record does not end at {}", commit.to));
        }
        Ok(())
    }
}

/// Reads the index in `dir`: `None` when there is none yet (or no commit in it).
pub fn load(dir: &Path) -> Result<Option<Loaded>, IndexError> {
    let path = dir.join(JOURNAL_FILE);
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(io(&path)(error)),
    };
    // SAFETY: the journal is only appended to by this node's saves, which do not run before the
    // load is done; the bytes below the last commit are never written again.
    let journal = unsafe { Mmap::map(&file) }.map_err(io(&path))?;
    if journal.len() < JOURNAL_MAGIC.len() || &journal[..8] != JOURNAL_MAGIC {
        return Err(damaged(&path, 0, "not an index journal (magic)"));
    }
    let mut at = JOURNAL_MAGIC.len();
    let mut bodies = Vec::new();
    let mut committed: Option<(Commit, usize, u64)> = None;
    while at + 8 <= journal.len() {
        let len = u32::from_le_bytes(journal[at..at + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(journal[at + 4..at + 8].try_into().expect("4 bytes"));
        let Some(body) = journal.get(at + 8..at + 8 + len) else {
            break;
        };
        if body.is_empty() || crc32c::crc32c(body) != crc {
            break;
        }
        let range = at + 8..at + 8 + len;
        match body[0] {
            BODY_DIGESTS => bodies.push(range.start + 1..range.end),
            BODY_COMMIT => {
                let commit = Commit::decode(body).ok_or_else(|| damaged(&path, at as u64, "malformed commit"))?;
                committed = Some((commit, bodies.len(), range.end as u64));
            }
            other => return Err(damaged(&path, at as u64, format!("unknown frame kind {other}"))),
        }
        at = range.end;
    }
    let Some((commit, bodies_before, end)) = committed else {
        return Ok(None);
    };
    if end < journal.len() as u64 {
        tracing::info!(
            file = %path.display(),
            offset = end,
            "index journal has bytes after its last commit (a save cut short): ignored"
        );
    }
    bodies.truncate(bodies_before);
    if commit.runs.iter().any(|(seq, _)| *seq >= commit.next_seq) {
        return Err(damaged(&path, end, "a run is numbered at or past the next run number"));
    }
    let runs = commit
        .runs
        .iter()
        .map(|&(seq, count)| Run::open(dir, seq, count).map(Arc::new))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(Loaded {
        commit,
        journal,
        bodies,
        runs,
        end,
    }))
}

/// The index files of a running shard, for its saves.
pub struct Files {
    dir: PathBuf,
    journal: File,
    /// Where the last commit ends.
    end: u64,
    runs: Vec<(u64, u64)>,
    next_seq: u64,
}

fn sync_dir(dir: &Path) -> Result<(), IndexError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// Run files in `dir` that `keep` does not name, and stray temporary files.
fn remove_unnamed_runs(dir: &Path, keep: &[(u64, u64)]) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(seq) = name
            .to_str()
            .and_then(|n| n.strip_prefix("run-"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        if !keep.iter().any(|(s, _)| *s == seq) {
            if let Err(error) = std::fs::remove_file(entry.path()) {
                tracing::warn!(file = %entry.path().display(), %error, "stale index run not removed");
            }
        }
    }
}

impl Files {
    /// Opens the index in `dir` for saves after `loaded` (what the start used), or starts it
    /// over (`None`: no index, or one the start could not use).
    pub fn open(dir: &Path, loaded: Option<&Loaded>) -> Result<Files, IndexError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let path = dir.join(JOURNAL_FILE);
        let files = match loaded {
            Some(loaded) => {
                let journal = OpenOptions::new().write(true).open(&path).map_err(io(&path))?;
                journal.set_len(loaded.end).map_err(io(&path))?;
                Files {
                    dir: dir.to_owned(),
                    journal,
                    end: loaded.end,
                    runs: loaded.commit.runs.clone(),
                    next_seq: loaded.commit.next_seq,
                }
            }
            None => {
                let journal = OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(&path)
                    .map_err(io(&path))?;
                journal.write_all_at(JOURNAL_MAGIC, 0).map_err(io(&path))?;
                journal.sync_all().map_err(io(&path))?;
                sync_dir(dir)?;
                Files {
                    dir: dir.to_owned(),
                    journal,
                    end: JOURNAL_MAGIC.len() as u64,
                    runs: Vec::new(),
                    next_seq: 0,
                }
            }
        };
        remove_unnamed_runs(dir, &files.runs);
        Ok(files)
    }

    /// Saves what a shard handed over ([`Save`]), on a blocking thread: the new ids as a run
    /// (merged as the module docs say), then the digests and a commit, synced. Returns the runs
    /// that now hold every id. On error nothing the last commit named is touched.
    pub fn save(&mut self, save: &mut Save, mut runs: Vec<Arc<Run>>) -> Result<Vec<Arc<Run>>, IndexError> {
        let mut ids = std::mem::take(&mut save.ids);
        let digests = &save.digests;
        let mut wrote_runs = false;
        if !ids.is_empty() {
            ids.sort_unstable_by_key(|entry| entry.0 .0);
            let seq = self.next_seq;
            self.next_seq += 1;
            runs.push(Arc::new(Run::write(&self.dir, seq, ids.into_iter())?));
            wrote_runs = true;
        }
        while runs.len() >= 2 {
            let (older, newer) = (&runs[runs.len() - 2], &runs[runs.len() - 1]);
            if older.len() as u64 >= MERGE_RATIO * newer.len() as u64 {
                break;
            }
            let seq = self.next_seq;
            self.next_seq += 1;
            let run = Run::write(&self.dir, seq, merged(older.iter(), newer.iter()))?;
            runs.truncate(runs.len() - 2);
            runs.push(Arc::new(run));
            wrote_runs = true;
        }
        if wrote_runs {
            sync_dir(&self.dir)?;
        }
        let commit = Commit {
            to: save.commit_to,
            last: save.last,
            last_crc: save.last_crc,
            sealed_ends: save.sealed_ends.clone(),
            runs: runs.iter().map(|r| (r.seq(), r.len() as u64)).collect(),
            next_seq: self.next_seq,
        };
        let mut bytes = Vec::with_capacity(digests.len() + 256);
        for piece in split_digests(digests, DIGESTS_FRAME_BYTES) {
            let mut body = Vec::with_capacity(piece.len() + 1);
            body.push(BODY_DIGESTS);
            body.extend_from_slice(piece);
            frame(&body, &mut bytes);
        }
        let mut body = Vec::new();
        commit.encode(&mut body);
        frame(&body, &mut bytes);
        let path = self.dir.join(JOURNAL_FILE);
        // Whatever a failed save left after the last commit is overwritten.
        self.journal.set_len(self.end).map_err(io(&path))?;
        self.journal.write_all_at(&bytes, self.end).map_err(io(&path))?;
        self.journal.sync_data().map_err(io(&path))?;
        self.end += bytes.len() as u64;
        self.runs = commit.runs;
        remove_unnamed_runs(&self.dir, &self.runs);
        Ok(runs)
    }
}

/// What a save writes: handed over by the shard (see `Shard::index_save`).
pub struct Save {
    pub commit_to: Lsn,
    pub last: Lsn,
    pub last_crc: u32,
    pub sealed_ends: Vec<u64>,
    pub digests: Vec<u8>,
    /// Records the digests describe.
    pub records: u64,
    pub ids: Vec<(MessageId, Place)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> MessageId {
        use sha2::Digest as _;
        MessageId(sha2::Sha256::digest(n.to_le_bytes()).into())
    }

    #[test]
    fn digests_round_trip() {
        let mut journal = Journal::default();
        let message = MessageDigest {
            slot: 7,
            lsn: Lsn(4096),
            timestamp: Timestamp(1_700_000_000_000),
            block_height: BlockHeight(1_500_000),
            hash_chain: HashChain([9; 32]),
        };
        let all = [
            Digest::Module(Lsn(0)),
            Digest::Process(Lsn(512)),
            Digest::Message(message),
            Digest::Assigned(message, id(3)),
        ];
        for digest in &all {
            journal.push(digest);
        }
        assert_eq!(journal.records(), 4);
        assert_eq!(journal.last(), Some(Lsn(4096)));
        let bytes = journal.take();
        let read: Vec<_> = digests(&bytes).collect::<Result<_, _>>().unwrap();
        assert_eq!(read, all);
        // A cut digest is reported at its start, and nothing after it is read.
        let cut = &bytes[..bytes.len() - 1];
        let read: Vec<_> = digests(cut).collect();
        assert_eq!(read.last(), Some(&Err(bytes.len() - 93)));
    }

    #[test]
    fn digests_are_cut_into_frames_at_digest_boundaries() {
        let mut journal = Journal::default();
        let message = MessageDigest {
            slot: 1,
            lsn: Lsn(8),
            timestamp: Timestamp(1),
            block_height: BlockHeight(1),
            hash_chain: HashChain([1; 32]),
        };
        for n in 0..100 {
            journal.push(&Digest::Process(Lsn(n)));
            journal.push(&Digest::Message(message));
            journal.push(&Digest::Assigned(message, id(n)));
        }
        let bytes = journal.take();
        let pieces = split_digests(&bytes, 1000);
        assert!(pieces.len() > 10 && pieces.iter().all(|p| p.len() <= 1000));
        let whole: Vec<_> = digests(&bytes).collect();
        let cut: Vec<_> = pieces.iter().flat_map(|p| digests(p)).collect();
        assert_eq!(cut, whole);
        assert!(cut.iter().all(Result::is_ok));
    }

    #[test]
    fn saves_merge_runs_and_every_id_stays_found() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = Files::open(dir.path(), None).unwrap();
        let mut index = MessageIndex::default();
        let mut next = 0u64;
        // Saves of 100, 100, 100, 1000 and 10 ids: runs merge while the older is under 4x.
        for (round, size) in [100u64, 100, 100, 1000, 10].into_iter().enumerate() {
            for _ in 0..size {
                assert_eq!(index.insert(id(next), (round as u32, Nonce(next))), None);
                next += 1;
            }
            let ids = index.freeze();
            let save = Save {
                commit_to: Lsn(next * 8),
                last: Lsn(next * 8 - 8),
                last_crc: 0,
                sealed_ends: vec![],
                digests: vec![DIGEST_MODULE, 0, 0, 0, 0, 0, 0, 0, 0],
                records: 1,
                ids,
            };
            let runs = files.save(&mut { save }, index.runs()).unwrap();
            index.thaw(Some(runs));
            assert!(index
                .runs
                .windows(2)
                .all(|w| w[0].len() as u64 >= MERGE_RATIO * w[1].len() as u64));
        }
        assert_eq!(index.len(), next as usize);
        for n in 0..next {
            assert_eq!(index.get(&id(n)).map(|p| p.1), Some(Nonce(n)), "id {n}");
        }
        assert_eq!(index.get(&id(next)), None);
        assert_eq!(index.insert(id(5), (0, Nonce(99))), Some((0, Nonce(5))));

        // Read back: the same runs; only the named run files are left.
        drop(files);
        let loaded = load(dir.path()).unwrap().expect("committed");
        assert_eq!(loaded.bodies().count(), 5);
        assert_eq!(loaded.commit.to, Lsn(next * 8));
        let mut again = MessageIndex::default();
        again.set_runs(loaded.runs.clone());
        for n in 0..next {
            assert_eq!(again.get(&id(n)).map(|p| p.1), Some(Nonce(n)));
        }
        let names = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(names, 1 + loaded.runs.len());
    }

    #[test]
    fn a_torn_save_or_a_damaged_run_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = Files::open(dir.path(), None).unwrap();
        let mut index = MessageIndex::default();
        for n in 0..500 {
            index.insert(id(n), (0, Nonce(n)));
        }
        let save = |ids| Save {
            commit_to: Lsn(64),
            last: Lsn(0),
            last_crc: 1,
            sealed_ends: vec![1 << 20],
            digests: vec![DIGEST_PROCESS, 0, 0, 0, 0, 0, 0, 0, 0],
            records: 1,
            ids,
        };
        let runs = files.save(&mut save(index.freeze()), index.runs()).unwrap();
        index.thaw(Some(runs));
        // A second save torn in its commit: the first commit is what loads.
        let journal = dir.path().join(JOURNAL_FILE);
        let before = std::fs::metadata(&journal).unwrap().len();
        files.save(&mut save(Vec::new()), index.runs()).unwrap();
        let after = std::fs::metadata(&journal).unwrap().len();
        let file = OpenOptions::new().write(true).open(&journal).unwrap();
        file.set_len(after - 3).unwrap();
        let loaded = load(dir.path()).unwrap().unwrap();
        assert_eq!(loaded.end, before);
        assert_eq!(loaded.commit.sealed_ends, vec![1 << 20]);
        // Reopened for saves, the torn bytes are cut.
        let files = Files::open(dir.path(), Some(&loaded)).unwrap();
        assert_eq!(std::fs::metadata(&journal).unwrap().len(), before);
        drop((files, loaded));
        // A flipped byte in a run is reported with its file.
        let run = Run::path(dir.path(), 0);
        let mut bytes = std::fs::read(&run).unwrap();
        bytes[RUN_HEADER_BYTES + 100] ^= 1;
        std::fs::write(&run, bytes).unwrap();
        let error = load(dir.path()).err().expect("damaged run").to_string();
        assert!(
            error.contains("run-0000000000000000") && error.contains("checksum"),
            "{error}"
        );
    }
}
