//! Checkpoints and the results file: what lets a restart resume every process where it was
//! instead of replaying its log from genesis.
//!
//! Each shard keeps two files next to its `log/`:
//!
//! - `results`: every evaluation's result (a message's or a cron tick's), appended as it is made
//!   (buffered; synced before a checkpoint commits). A restart reads back the results that a
//!   checkpoint covers, so `/result` still answers for messages that are not evaluated again:
//!   only their offsets are kept, each read back when asked for ([`ResultsReader`]), as are
//!   the results a shard drops from memory beyond `limits.results_memory_bytes_max`.
//! - `checkpoints`: generations of process states. A generation is the states of the processes
//!   evaluated since the previous generation (all of them when the file is rewritten whole),
//!   then the outbox items not yet known to be delivered, then a commit record. Only committed
//!   generations count: a restart truncates whatever follows the last commit.
//!
//! ## Layout (all integers little-endian)
//!
//! Both files start with an 8-byte magic and version: `HWCKPT\0\x01` and `HWRSLT\0\x01`. Then
//! records, each `len: u32` (bytes after the checksum), `crc32c: u32` (of those bytes), then
//! `len` bytes:
//!
//! ```text
//! checkpoints  kind u8 = 1 process:  pid [32], nonce u64 (messages evaluated),
//!                                    next tick (u8 0|1, time u64, cron u32), through u64,
//!                                    memory pages u64, globals u32 × (name u16+bytes, type u8,
//!                                    value u128), memory: the rest (one zstd frame with its
//!                                    content checksum)
//!              kind u8 = 2 pending:  sub-kind u8, then
//!                                    0 message: cause u64, item (rest)
//!                                    1 spawn:   cause u64, process len u32 + bytes, notice (rest)
//!                                    2 assign:  cause u64, message [32], count u32 × pid [32]
//!                                    3 to another shard: shard u32, then a sub-kind 4..7
//!                                    4 remote message: item; 5 remote spawn: item
//!                                    (written before notices came back; read only);
//!                                    6 remote assign: pid [32], item;
//!                                    7 remote spawn awaiting its answer: process len
//!                                    u32 + bytes, notice (rest)
//!              kind u8 = 3 commit:   generation u64, log position u64, results offset u64
//! results      pid [32], nonce u64, tick (u8 0|1, time u64, cron u32), error u8, JSON text
//! ```
//!
//! Invariants:
//! - a process record holds the state after its first `nonce` messages and the cron ticks
//!   before `next`; every evaluation it covers is in `results` before the commit's offset;
//! - a commit is written only once the shard's log is durable to its log position, and the
//!   results file to its offset: a checkpoint never holds state the log could lose;
//! - pending items are all the outbox items derived from covered evaluations that were not yet
//!   durably delivered when the commit was made: a restart delivers them again (duplicates are
//!   refused by id), so a checkpoint loses no message.
//!
//! A checkpoint is derived data: a damaged one is reported and cut back to its last good commit
//! (or dropped), and the log is replayed from there; it never stops a node.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use scheduler::data_item::DataItem;
use scheduler::{MessageId, ProcessId};

use crate::compute::GlobalValue;
use crate::cron::Tick;

const CHECKPOINT_MAGIC: &[u8; 8] = b"HWCKPT\0\x01";
const RESULTS_MAGIC: &[u8; 8] = b"HWRSLT\0\x01";
/// No record is larger (a process's compressed memory is at most its limit, 4 GiB, shrunk).
const RECORD_BYTES_MAX: u32 = 1 << 31;

const KIND_PROCESS: u8 = 1;
const KIND_PENDING: u8 = 2;
const KIND_COMMIT: u8 = 3;

/// What went wrong with a checkpoint or results file, and where.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} at byte {offset}: {reason}")]
    Damaged { path: PathBuf, offset: u64, reason: String },
}

/// One process's state in a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessState {
    pub pid: ProcessId,
    /// Messages evaluated (nonces `0..nonce`).
    pub nonce: u64,
    /// The next cron tick to evaluate (`None`: none, or no crons).
    pub next: Option<Tick>,
    /// Ticks after the last message were evaluated up to here (ms).
    pub through: u64,
    pub memory_pages: u64,
    pub globals: Vec<(String, GlobalValue)>,
    /// The linear memory, one zstd frame with its content checksum.
    pub memory_zstd: Box<[u8]>,
}

/// An outbox item a checkpoint carries because it was not yet durably delivered.
#[derive(Clone, Debug)]
pub enum Pending {
    Message {
        item: DataItem,
        cause: u64,
    },
    Spawn {
        process: DataItem,
        notice: DataItem,
        cause: u64,
    },
    Assign {
        processes: Vec<ProcessId>,
        message: MessageId,
        cause: u64,
    },
    /// For the shard `to` (its log position of the cause is durable by the commit).
    RemoteMessage {
        to: u32,
        item: DataItem,
    },
    /// A spawn from a version whose parent's shard delivered the notice itself (read only).
    RemoteSpawn {
        to: u32,
        item: DataItem,
    },
    /// A spawn sent (or to be sent) to shard `to` that has not answered with its notice yet.
    RemoteSpawnNotified {
        to: u32,
        process: DataItem,
        notice: DataItem,
    },
    RemoteAssign {
        to: u32,
        process: ProcessId,
        item: DataItem,
    },
}

/// A generation's commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Commit {
    pub generation: u64,
    /// The shard's log was durable to here (its end when the generation was taken).
    pub log_lsn: u64,
    /// The results file's length covered by the generation.
    pub results_offset: u64,
}

/// What a checkpoints file holds: the latest committed state of each process.
#[derive(Debug, Default)]
pub struct Loaded {
    pub processes: foldhash::HashMap<ProcessId, ProcessState>,
    pub pending: Vec<Pending>,
    pub commit: Option<Commit>,
    /// Where the last commit ends: what follows is not committed.
    pub end: u64,
    /// Bytes of process records read (all generations), to decide when to rewrite the file.
    pub process_bytes: u64,
    /// Damage found (a record that does not check out, followed by more bytes): the file is
    /// used up to the last commit before it.
    pub damage: Option<String>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Frames `body` as one record onto `out`.
fn frame(out: &mut Vec<u8>, body: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0; 8]);
    body(out);
    let len = (out.len() - start - 8) as u32;
    let crc = crc32c::crc32c(&out[start + 8..]);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

fn put_tick(out: &mut Vec<u8>, tick: Option<Tick>) {
    match tick {
        Some(tick) => {
            out.push(1);
            out.extend_from_slice(&tick.time.to_le_bytes());
            out.extend_from_slice(&tick.cron.to_le_bytes());
        }
        None => out.extend_from_slice(&[0; 13]),
    }
}

/// Appends the record of `state` to `out`.
pub fn encode_process(out: &mut Vec<u8>, state: &ProcessState) -> bool {
    encode_process_with(out, state, &state.memory_zstd)
}

/// Appends the record of `state` with `memory_zstd` as its memory (the state's own is ignored:
/// the caller need not copy the frame into it). Returns false, appending nothing, for a record
/// larger than a record may be (the process is then not in this checkpoint).
pub fn encode_process_with(out: &mut Vec<u8>, state: &ProcessState, memory_zstd: &[u8]) -> bool {
    if memory_zstd.len() as u64 + 4096 > u64::from(RECORD_BYTES_MAX) {
        return false;
    }
    frame(out, |out| {
        out.push(KIND_PROCESS);
        out.extend_from_slice(&state.pid.0);
        out.extend_from_slice(&state.nonce.to_le_bytes());
        put_tick(out, state.next);
        out.extend_from_slice(&state.through.to_le_bytes());
        out.extend_from_slice(&state.memory_pages.to_le_bytes());
        out.extend_from_slice(&(state.globals.len() as u32).to_le_bytes());
        for (name, value) in &state.globals {
            out.extend_from_slice(&(name.len() as u16).to_le_bytes());
            out.extend_from_slice(name.as_bytes());
            let (kind, bits) = match *value {
                GlobalValue::I32(v) => (0u8, v as u32 as u128),
                GlobalValue::I64(v) => (1, v as u64 as u128),
                GlobalValue::F32(v) => (2, v as u128),
                GlobalValue::F64(v) => (3, v as u128),
                GlobalValue::V128(v) => (4, v),
            };
            out.push(kind);
            out.extend_from_slice(&bits.to_le_bytes());
        }
        out.extend_from_slice(memory_zstd);
    });
    true
}

/// Appends the record of `pending` to `out`.
pub fn encode_pending(out: &mut Vec<u8>, pending: &Pending) {
    frame(out, |out| {
        out.push(KIND_PENDING);
        match pending {
            Pending::Message { item, cause } => {
                out.push(0);
                out.extend_from_slice(&cause.to_le_bytes());
                out.extend_from_slice(&item.to_bytes());
            }
            Pending::Spawn { process, notice, cause } => {
                out.push(1);
                out.extend_from_slice(&cause.to_le_bytes());
                let process = process.to_bytes();
                out.extend_from_slice(&(process.len() as u32).to_le_bytes());
                out.extend_from_slice(&process);
                out.extend_from_slice(&notice.to_bytes());
            }
            Pending::Assign {
                processes,
                message,
                cause,
            } => {
                out.push(2);
                out.extend_from_slice(&cause.to_le_bytes());
                out.extend_from_slice(&message.0);
                out.extend_from_slice(&(processes.len() as u32).to_le_bytes());
                for pid in processes {
                    out.extend_from_slice(&pid.0);
                }
            }
            Pending::RemoteMessage { to, item } | Pending::RemoteSpawn { to, item } => {
                out.push(3);
                out.extend_from_slice(&to.to_le_bytes());
                out.push(if matches!(pending, Pending::RemoteMessage { .. }) {
                    4
                } else {
                    5
                });
                out.extend_from_slice(&item.to_bytes());
            }
            Pending::RemoteAssign { to, process, item } => {
                out.push(3);
                out.extend_from_slice(&to.to_le_bytes());
                out.push(6);
                out.extend_from_slice(&process.0);
                out.extend_from_slice(&item.to_bytes());
            }
            Pending::RemoteSpawnNotified { to, process, notice } => {
                out.push(3);
                out.extend_from_slice(&to.to_le_bytes());
                out.push(7);
                let process = process.to_bytes();
                out.extend_from_slice(&(process.len() as u32).to_le_bytes());
                out.extend_from_slice(&process);
                out.extend_from_slice(&notice.to_bytes());
            }
        }
    });
}

/// Appends a commit record to `out`.
pub fn encode_commit(out: &mut Vec<u8>, commit: &Commit) {
    frame(out, |out| {
        out.push(KIND_COMMIT);
        out.extend_from_slice(&commit.generation.to_le_bytes());
        out.extend_from_slice(&commit.log_lsn.to_le_bytes());
        out.extend_from_slice(&commit.results_offset.to_le_bytes());
    });
}

/// A cursor over a record's bytes; every read says what was missing.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        if self.bytes.len() < n {
            return Err(format!("record ends inside its {what}"));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn u8(&mut self, what: &str) -> Result<u8, String> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &str) -> Result<u16, String> {
        Ok(u16::from_le_bytes(self.take(2, what)?.try_into().expect("2 bytes")))
    }

    fn u32(&mut self, what: &str) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().expect("4 bytes")))
    }

    fn u64(&mut self, what: &str) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into().expect("8 bytes")))
    }

    fn id(&mut self, what: &str) -> Result<[u8; 32], String> {
        Ok(self.take(32, what)?.try_into().expect("32 bytes"))
    }

    fn tick(&mut self) -> Result<Option<Tick>, String> {
        let some = self.u8("tick flag")?;
        let time = self.u64("tick time")?;
        let cron = self.u32("tick cron")?;
        match some {
            0 => Ok(None),
            1 => Ok(Some(Tick { time, cron })),
            other => Err(format!("tick flag {other}")),
        }
    }

    fn item(&mut self, what: &str) -> Result<DataItem, String> {
        let bytes = std::mem::take(&mut self.bytes);
        DataItem::parse(bytes).map_err(|e| format!("{what}: {e}"))
    }
}

fn decode_process(r: &mut Reader<'_>) -> Result<ProcessState, String> {
    let pid = ProcessId(r.id("process id")?);
    let nonce = r.u64("nonce")?;
    let next = r.tick()?;
    let through = r.u64("through")?;
    let memory_pages = r.u64("memory pages")?;
    let count = r.u32("global count")?;
    let mut globals = Vec::with_capacity(count.min(1024) as usize);
    for _ in 0..count {
        let len = r.u16("global name length")?;
        let name = std::str::from_utf8(r.take(len as usize, "global name")?)
            .map_err(|_| "a global's name is not UTF-8".to_owned())?
            .to_owned();
        let kind = r.u8("global type")?;
        let bits = u128::from_le_bytes(r.take(16, "global value")?.try_into().expect("16 bytes"));
        let value = match kind {
            0 => GlobalValue::I32(bits as u32 as i32),
            1 => GlobalValue::I64(bits as u64 as i64),
            2 => GlobalValue::F32(bits as u32),
            3 => GlobalValue::F64(bits as u64),
            4 => GlobalValue::V128(bits),
            other => return Err(format!("global type {other}")),
        };
        globals.push((name, value));
    }
    Ok(ProcessState {
        pid,
        nonce,
        next,
        through,
        memory_pages,
        globals,
        memory_zstd: std::mem::take(&mut r.bytes).into(),
    })
}

fn decode_pending(r: &mut Reader<'_>) -> Result<Pending, String> {
    Ok(match r.u8("pending kind")? {
        0 => {
            let cause = r.u64("cause")?;
            Pending::Message {
                cause,
                item: r.item("message")?,
            }
        }
        1 => {
            let cause = r.u64("cause")?;
            let len = r.u32("process length")?;
            let process = DataItem::parse(r.take(len as usize, "process")?).map_err(|e| format!("process: {e}"))?;
            Pending::Spawn {
                cause,
                process,
                notice: r.item("notice")?,
            }
        }
        2 => {
            let cause = r.u64("cause")?;
            let message = MessageId(r.id("message id")?);
            let count = r.u32("process count")?;
            let processes = (0..count)
                .map(|_| r.id("process id").map(ProcessId))
                .collect::<Result<_, _>>()?;
            Pending::Assign {
                processes,
                message,
                cause,
            }
        }
        3 => {
            let to = r.u32("shard")?;
            match r.u8("remote kind")? {
                4 => Pending::RemoteMessage {
                    to,
                    item: r.item("message")?,
                },
                5 => Pending::RemoteSpawn {
                    to,
                    item: r.item("process")?,
                },
                6 => {
                    let process = ProcessId(r.id("process id")?);
                    Pending::RemoteAssign {
                        to,
                        process,
                        item: r.item("message")?,
                    }
                }
                7 => {
                    let len = r.u32("process length")?;
                    let process =
                        DataItem::parse(r.take(len as usize, "process")?).map_err(|e| format!("process: {e}"))?;
                    Pending::RemoteSpawnNotified {
                        to,
                        process,
                        notice: r.item("notice")?,
                    }
                }
                other => return Err(format!("remote pending kind {other}")),
            }
        }
        other => return Err(format!("pending kind {other}")),
    })
}

/// Reads the next framed record of `reader` at `offset`: `Ok(None)` at a clean end, `Err` with
/// the reason for a record that does not check out (a torn tail included).
fn next_record(reader: &mut impl Read, buf: &mut Vec<u8>) -> Result<Option<()>, String> {
    let mut head = [0u8; 8];
    let mut got = 0;
    while got < 8 {
        match reader.read(&mut head[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err("the file ends inside a record header".to_owned()),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("read failed: {e}")),
        }
    }
    let len = u32::from_le_bytes(head[..4].try_into().expect("4 bytes"));
    let crc = u32::from_le_bytes(head[4..].try_into().expect("4 bytes"));
    if len == 0 || len > RECORD_BYTES_MAX {
        return Err(format!("record length {len} is impossible"));
    }
    buf.clear();
    let read = reader
        .take(len as u64)
        .read_to_end(buf)
        .map_err(|e| format!("read failed: {e}"))?;
    if read < len as usize {
        return Err(format!("the file ends inside a record of {len} bytes"));
    }
    if crc32c::crc32c(buf) != crc {
        return Err("record checksum does not match".to_owned());
    }
    Ok(Some(()))
}

fn check_magic(reader: &mut impl Read, magic: &[u8; 8], path: &Path) -> Result<bool, CheckpointError> {
    let mut head = [0u8; 8];
    let mut got = 0;
    while got < 8 {
        let n = reader.read(&mut head[got..]).map_err(io(path))?;
        if n == 0 {
            // Shorter than a header: written by a crash right after creation.
            return Ok(false);
        }
        got += n;
    }
    if &head != magic {
        return Err(CheckpointError::Damaged {
            path: path.to_owned(),
            offset: 0,
            reason: format!("not a file of this kind or version (starts {head:02x?})"),
        });
    }
    Ok(true)
}

/// Reads a checkpoints file. `Ok(None)`: there is none (or it is empty). A record that does not
/// check out ends the reading: what came before its generation is used and the damage is
/// reported in [`Loaded::damage`] (unless it is a torn tail, which a crash leaves).
pub fn load(path: &Path) -> Result<Option<Loaded>, CheckpointError> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(path)(e)),
    };
    let size = file.metadata().map_err(io(path))?.len();
    let mut reader = BufReader::with_capacity(1 << 20, file);
    if !check_magic(&mut reader, CHECKPOINT_MAGIC, path)? {
        return Ok(None);
    }
    let mut loaded = Loaded {
        end: 8,
        ..Loaded::default()
    };
    let mut generation: Vec<ProcessState> = Vec::new();
    let mut pending: Vec<Pending> = Vec::new();
    let mut offset = 8u64;
    let mut buf = Vec::new();
    loop {
        let at = offset;
        let problem = match next_record(&mut reader, &mut buf) {
            Ok(None) => break,
            Ok(Some(())) => {
                offset += 8 + buf.len() as u64;
                let mut r = Reader { bytes: &buf };
                let decoded = r.u8("kind").and_then(|kind| match kind {
                    KIND_PROCESS => decode_process(&mut r).map(|state| {
                        loaded.process_bytes += 8 + buf.len() as u64;
                        generation.push(state);
                    }),
                    KIND_PENDING => decode_pending(&mut r).map(|item| pending.push(item)),
                    KIND_COMMIT => {
                        let commit = Commit {
                            generation: r.u64("generation")?,
                            log_lsn: r.u64("log position")?,
                            results_offset: r.u64("results offset")?,
                        };
                        for state in generation.drain(..) {
                            loaded.processes.insert(state.pid, state);
                        }
                        loaded.pending = std::mem::take(&mut pending);
                        loaded.commit = Some(commit);
                        loaded.end = offset;
                        Ok(())
                    }
                    other => Err(format!("unknown record kind {other}")),
                });
                match decoded {
                    Ok(()) => continue,
                    Err(reason) => reason,
                }
            }
            Err(reason) => reason,
        };
        // A torn tail (the last record, cut short) is what a crash leaves; anything else is damage.
        let torn = problem.contains("ends inside") && offset + 8 + buf.len() as u64 >= size;
        if !torn {
            loaded.damage = Some(format!("{} at byte {at}: {problem}", path.display()));
        }
        break;
    }
    Ok(Some(loaded))
}

/// Appends to a checkpoints file, creating it (with its header) when absent; cuts it first to
/// `end` (what follows the last commit is not committed).
pub fn open_checkpoints(path: &Path, end: u64) -> Result<File, CheckpointError> {
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)
        .map_err(io(path))?;
    let len = file.metadata().map_err(io(path))?.len();
    if len < 8 || end < 8 {
        file.set_len(0).map_err(io(path))?;
        file.write_all(CHECKPOINT_MAGIC).map_err(io(path))?;
    } else if len > end {
        file.set_len(end).map_err(io(path))?;
    }
    file.seek(SeekFrom::End(0)).map_err(io(path))?;
    Ok(file)
}

/// Where a whole new checkpoints file is written before it replaces `path`.
pub fn replacement_path(path: &Path) -> PathBuf {
    path.with_extension("next")
}

/// Starts a whole new checkpoints file beside `path` (see [`finish_replacement`]).
pub fn begin_replacement(path: &Path) -> Result<File, CheckpointError> {
    let next = replacement_path(path);
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&next)
        .map_err(io(&next))?;
    file.write_all(CHECKPOINT_MAGIC).map_err(io(&next))?;
    Ok(file)
}

/// Syncs the new file (its commit written) and renames it over `path`, then syncs the
/// directory: from then on it is the checkpoints file.
pub fn finish_replacement(path: &Path, file: &File) -> Result<(), CheckpointError> {
    let next = replacement_path(path);
    file.sync_data().map_err(io(&next))?;
    std::fs::rename(&next, path).map_err(io(path))?;
    if let Some(dir) = path.parent() {
        File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))?;
    }
    Ok(())
}

/// One evaluation's result as the results file keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResultRecord {
    pub pid: ProcessId,
    /// A message's nonce; for a tick, the messages evaluated before it.
    pub nonce: u64,
    pub tick: Option<Tick>,
    pub is_error: bool,
    pub text: String,
}

/// Appends results to a shard's results file (buffered: [`ResultsWriter::flush`] hands them
/// to the kernel, [`ResultsWriter::sync_handle`] gives a handle to sync them with).
pub struct ResultsWriter {
    path: PathBuf,
    out: BufWriter<File>,
    offset: u64,
    record: Vec<u8>,
}

impl ResultsWriter {
    /// Opens `path` for appends after cutting it to `offset` (results beyond a checkpoint are
    /// made again by the replay); creates it when absent or cut to nothing.
    pub fn open(path: &Path, offset: u64) -> Result<ResultsWriter, CheckpointError> {
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(io(path))?;
        let offset = if offset < 8 {
            file.set_len(0).map_err(io(path))?;
            file.write_all(RESULTS_MAGIC).map_err(io(path))?;
            8
        } else {
            file.set_len(offset).map_err(io(path))?;
            offset
        };
        file.seek(SeekFrom::Start(offset)).map_err(io(path))?;
        Ok(ResultsWriter {
            path: path.to_owned(),
            out: BufWriter::with_capacity(256 << 10, file),
            offset,
            record: Vec::new(),
        })
    }

    pub fn append(
        &mut self,
        pid: ProcessId,
        nonce: u64,
        tick: Option<Tick>,
        is_error: bool,
        text: &str,
    ) -> Result<u64, CheckpointError> {
        let at = self.offset;
        self.record.clear();
        frame(&mut self.record, |out| {
            out.extend_from_slice(&pid.0);
            out.extend_from_slice(&nonce.to_le_bytes());
            put_tick(out, tick);
            out.push(is_error as u8);
            out.extend_from_slice(text.as_bytes());
        });
        self.out.write_all(&self.record).map_err(io(&self.path))?;
        self.offset += self.record.len() as u64;
        Ok(at)
    }

    /// The file's path, for a [`ResultsReader`].
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Hands the buffered results to the kernel; returns the file's length.
    pub fn flush(&mut self) -> Result<u64, CheckpointError> {
        self.out.flush().map_err(io(&self.path))?;
        Ok(self.offset)
    }

    /// A second handle on the file, to sync it away from the shard's thread.
    pub fn sync_handle(&self) -> Result<File, CheckpointError> {
        self.out.get_ref().try_clone().map_err(io(&self.path))
    }
}

/// One result's record, by its offset: how a shard reads back a result it no longer keeps in
/// memory (see `Shard`'s `results_memory_bytes_max`).
pub struct ResultsReader {
    path: PathBuf,
    file: File,
}

impl ResultsReader {
    pub fn open(path: &Path) -> Result<ResultsReader, CheckpointError> {
        Ok(ResultsReader {
            path: path.to_owned(),
            file: File::open(path).map_err(io(path))?,
        })
    }

    /// The record at `offset` (as [`ResultsWriter::append`] returned it; the writer must have
    /// flushed it), checked against its checksum.
    pub fn read_at(&self, offset: u64) -> Result<ResultRecord, CheckpointError> {
        use std::os::unix::fs::FileExt;
        let damaged = |reason: String| CheckpointError::Damaged {
            path: self.path.clone(),
            offset,
            reason,
        };
        let mut head = [0u8; 8];
        self.file
            .read_exact_at(&mut head, offset)
            .map_err(|e| damaged(format!("record header: {e}")))?;
        let len = u32::from_le_bytes(head[..4].try_into().expect("4 bytes"));
        let crc = u32::from_le_bytes(head[4..].try_into().expect("4 bytes"));
        if len == 0 || len > RECORD_BYTES_MAX {
            return Err(damaged(format!("record length {len} is impossible")));
        }
        let mut buf = vec![0u8; len as usize];
        self.file
            .read_exact_at(&mut buf, offset + 8)
            .map_err(|e| damaged(format!("record of {len} bytes: {e}")))?;
        if crc32c::crc32c(&buf) != crc {
            return Err(damaged("record checksum does not match".to_owned()));
        }
        parse_result(&buf).map_err(damaged)
    }
}

fn parse_result(bytes: &[u8]) -> Result<ResultRecord, String> {
    let mut r = Reader { bytes };
    let pid = ProcessId(r.id("process id")?);
    let nonce = r.u64("nonce")?;
    let tick = r.tick()?;
    let is_error = r.u8("error flag")? != 0;
    let text = String::from_utf8(r.bytes.to_vec()).map_err(|_| "result text is not UTF-8".to_owned())?;
    Ok(ResultRecord {
        pid,
        nonce,
        tick,
        is_error,
        text,
    })
}

/// Reads the results of `path` before `upto` in order, each with its offset. A damaged record
/// stops it with an error naming its offset (the caller then replays instead).
pub fn read_results(path: &Path, upto: u64, mut each: impl FnMut(u64, ResultRecord)) -> Result<(), CheckpointError> {
    let file = File::open(path).map_err(io(path))?;
    let mut reader = BufReader::with_capacity(1 << 20, file.take(upto));
    let damaged = |offset: u64, reason: String| CheckpointError::Damaged {
        path: path.to_owned(),
        offset,
        reason,
    };
    if upto < 8 || !check_magic(&mut reader, RESULTS_MAGIC, path)? {
        return Ok(());
    }
    let (mut offset, mut buf) = (8u64, Vec::new());
    while offset < upto {
        match next_record(&mut reader, &mut buf) {
            Ok(Some(())) => {}
            Ok(None) => {
                return Err(damaged(
                    offset,
                    "the file ends before the checkpoint's offset".to_owned(),
                ))
            }
            Err(reason) => return Err(damaged(offset, reason)),
        }
        let record = parse_result(&buf).map_err(|reason| damaged(offset, reason))?;
        let at = offset;
        offset += 8 + buf.len() as u64;
        each(at, record);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(n: u8, nonce: u64) -> ProcessState {
        ProcessState {
            pid: ProcessId([n; 32]),
            nonce,
            next: n.is_multiple_of(2).then_some(Tick { time: 7, cron: 1 }),
            through: 9,
            memory_pages: 1,
            globals: vec![
                ("g".into(), GlobalValue::I64(-3)),
                ("v".into(), GlobalValue::V128(u128::MAX)),
            ],
            memory_zstd: vec![n; 10].into(),
        }
    }

    fn commit(generation: u64) -> Commit {
        Commit {
            generation,
            log_lsn: generation * 100,
            results_offset: 8,
        }
    }

    #[test]
    fn generations_commit_and_the_latest_state_of_each_process_wins() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoints");
        let mut file = open_checkpoints(&path, 0).unwrap();
        let mut out = Vec::new();
        encode_process(&mut out, &state(1, 3));
        encode_process(&mut out, &state(2, 5));
        encode_pending(
            &mut out,
            &Pending::Assign {
                processes: vec![ProcessId([4; 32])],
                message: MessageId([5; 32]),
                cause: 77,
            },
        );
        encode_commit(&mut out, &commit(1));
        encode_process(&mut out, &state(1, 8));
        encode_commit(&mut out, &commit(2));
        let committed = out.len() as u64 + 8;
        encode_process(&mut out, &state(2, 9)); // not committed
        file.write_all(&out).unwrap();
        drop(file);

        let loaded = load(&path).unwrap().unwrap();
        assert_eq!(loaded.damage, None);
        assert_eq!(loaded.commit, Some(commit(2)));
        assert_eq!(loaded.end, committed);
        assert_eq!(loaded.processes[&ProcessId([1; 32])], state(1, 8));
        assert_eq!(loaded.processes[&ProcessId([2; 32])], state(2, 5));
        assert!(loaded.pending.is_empty(), "pending items belong to their generation");

        // Reopening cuts what is not committed.
        drop(open_checkpoints(&path, loaded.end).unwrap());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), committed);
    }

    #[test]
    fn every_kind_of_pending_item_reads_back_as_written() {
        let signer = scheduler::signer::Signer::generate_ed25519();
        let item = |n: u8| signer.sign(Some([n; 32]), Some([n; 32]), Vec::new(), vec![n; 3]);
        let written = vec![
            Pending::Message {
                item: item(1),
                cause: 5,
            },
            Pending::Spawn {
                process: item(2),
                notice: item(3),
                cause: 6,
            },
            Pending::Assign {
                processes: vec![ProcessId([4; 32]), ProcessId([5; 32])],
                message: MessageId([6; 32]),
                cause: 7,
            },
            Pending::RemoteMessage { to: 1, item: item(7) },
            Pending::RemoteSpawn { to: 2, item: item(8) },
            Pending::RemoteAssign {
                to: 3,
                process: ProcessId([9; 32]),
                item: item(10),
            },
            Pending::RemoteSpawnNotified {
                to: 4,
                process: item(11),
                notice: item(12),
            },
        ];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoints");
        let mut file = open_checkpoints(&path, 0).unwrap();
        let mut out = Vec::new();
        for pending in &written {
            encode_pending(&mut out, pending);
        }
        encode_commit(&mut out, &commit(1));
        file.write_all(&out).unwrap();
        drop(file);
        let loaded = load(&path).unwrap().unwrap();
        // Debug output names every field (data items by their bytes): equal text, equal items.
        assert_eq!(format!("{:?}", loaded.pending), format!("{written:?}"));
    }

    #[test]
    fn a_torn_tail_is_quiet_and_a_flipped_bit_is_damage_cut_at_the_last_good_commit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoints");
        let mut out = CHECKPOINT_MAGIC.to_vec();
        encode_process(&mut out, &state(1, 1));
        encode_commit(&mut out, &commit(1));
        let first = out.len();
        encode_process(&mut out, &state(1, 2));
        encode_commit(&mut out, &commit(2));
        let whole = out.clone();

        std::fs::write(&path, &whole[..whole.len() - 3]).unwrap();
        let loaded = load(&path).unwrap().unwrap();
        assert_eq!((loaded.damage, loaded.commit), (None, Some(commit(1))));

        let mut flipped = whole.clone();
        flipped[first + 20] ^= 4;
        std::fs::write(&path, &flipped).unwrap();
        let loaded = load(&path).unwrap().unwrap();
        assert_eq!(loaded.commit, Some(commit(1)));
        assert_eq!(loaded.processes[&ProcessId([1; 32])].nonce, 1);
        let damage = loaded.damage.expect("a flipped bit is reported");
        assert!(damage.contains(&format!("at byte {first}")), "{damage}");

        std::fs::write(&path, b"NOTACKPT").unwrap();
        assert!(matches!(load(&path), Err(CheckpointError::Damaged { offset: 0, .. })));
    }

    #[test]
    fn results_round_trip_and_reopening_cuts_at_the_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("results");
        let mut writer = ResultsWriter::open(&path, 0).unwrap();
        writer
            .append(ProcessId([1; 32]), 0, None, false, "{\"Output\":1}")
            .unwrap();
        let tick = Some(Tick { time: 5, cron: 0 });
        let second = writer.append(ProcessId([1; 32]), 1, tick, true, "{}").unwrap();
        let middle = writer.flush().unwrap();
        let third = writer.append(ProcessId([2; 32]), 0, None, false, "x").unwrap();
        writer.flush().unwrap();
        drop(writer);

        let mut seen = Vec::new();
        read_results(&path, middle, |at, r| seen.push((at, r))).unwrap();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[1].0, second, "each record comes with the offset its append gave");
        let (_, second_record) = &seen[1];
        assert_eq!(
            (second_record.tick, second_record.is_error, second_record.text.as_str()),
            (tick, true, "{}")
        );
        // Read back one by one, by offset.
        let reader = ResultsReader::open(&path).unwrap();
        assert_eq!(&reader.read_at(second).unwrap(), second_record);
        assert_eq!(reader.read_at(third).unwrap().text, "x");
        assert!(matches!(
            reader.read_at(second + 1),
            Err(CheckpointError::Damaged { .. })
        ));

        drop(ResultsWriter::open(&path, middle).unwrap());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), middle);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[20] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            read_results(&path, middle, |_, _| {}),
            Err(CheckpointError::Damaged { offset: 8, .. })
        ));
    }
}
