//! Operator tools for a log directory: a read-only [`scan`] that checks every frame and reports
//! each problem with its file and byte offset, and a [`repair`] that cuts the log back to its
//! intact prefix so that [`super::Log::open`] succeeds again.
//!
//! # The scan is read-only
//!
//! [`scan`] opens files for reading only, with `pread` into its own buffers (no mapping), and
//! never takes the directory lock: it can run beside a node that has the log open. It then sees
//! a *moving tail*: records appended during the scan may or may not be seen, and a batch being
//! written while its bytes are read can look like a torn tail. Only a scan of a directory that no
//! node has open is exact. Frames are checked with the same decoder recovery uses (`frame`), and
//! the end of the last segment is classified by the same rule (see the `log` module docs,
//! *Recovery*), with the torn-tail window passed in by the caller (`ScanOptions::window_bytes`:
//! the `batch_bytes_max` the node runs with; a window smaller than the node's makes a torn tail
//! read as corruption, as in recovery).
//!
//! The scan yields the records of the *intact prefix*, the records that [`super::Log::open`]
//! would keep (or that [`repair`] keeps): every record before the first problem. Frames after
//! the first problem, in later segments, are still checked and their problems reported, but not
//! yielded: with what lies between them lost, their meaning cannot be checked.
//!
//! # Repair never deletes
//!
//! [`repair`] takes the directory lock the way [`super::Log::open`] does (`flock`, non-blocking)
//! and so refuses to run while a node has the log open. It cuts the log at the first problem:
//! the damaged segment is copied whole into `<dir>/quarantine-<unix seconds>/` first, then zeroed
//! from the bad frame to its end; every later segment (and every `.log` file whose name is not a
//! segment name) is moved into that folder. `FORMAT` problems are not repaired: they need a
//! person. It does not check what records mean (the engine does that).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::error::io_error;
use super::frame::{self, FrameError};
use super::packed;
use super::segment;
use super::{LogConfig, LogError, Lsn, Record};

/// Bytes read from a segment at once (more when one frame is longer). Large enough that a scan
/// makes few system calls, small enough to keep the scan's memory flat.
const READ_CHUNK_BYTES: usize = 8 << 20;

const FORMAT_FILE: &str = "FORMAT";
const FORMAT_TEMP_FILE: &str = "FORMAT.tmp";

/// How to read a directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScanOptions {
    /// The torn-tail window in bytes: the `batch_bytes_max` of the node that writes the log.
    /// A frame longer than this is also reported as bad without being read (the log never writes
    /// one), which bounds the scan's memory.
    pub window_bytes: u64,
}

impl Default for ScanOptions {
    /// The window of [`LogConfig::default`]; a node may run with another `batch_bytes_max`.
    fn default() -> Self {
        ScanOptions {
            window_bytes: LogConfig::default().batch_bytes_max as u64,
        }
    }
}

/// What kind of problem a [`Problem`] is; each kind is acted on differently.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProblemKind {
    /// `FORMAT` is missing, unreadable or not understood: needs a person, never repaired.
    Format,
    /// The set of segment files is wrong: a bad name, a gap, a wrong size.
    Layout,
    /// A bad frame or stray bytes where recovery would refuse to open the log.
    Corrupt,
    /// The end of the last segment holds a torn write: recovery would zero it (losing only
    /// records never acknowledged, unless the damage is at rest; see the `log` module docs).
    TornTail,
}

impl std::fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ProblemKind::Format => "format",
            ProblemKind::Layout => "layout",
            ProblemKind::Corrupt => "corrupt",
            ProblemKind::TornTail => "torn tail",
        })
    }
}

/// One problem found by [`scan`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The segment (or `FORMAT`) file.
    pub file: PathBuf,
    /// Byte offset within `file`.
    pub offset: u64,
    pub kind: ProblemKind,
    /// What is wrong there, in words.
    pub reason: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}, offset {}: {}: {}",
            self.file.display(),
            self.offset,
            self.kind,
            self.reason
        )
    }
}

/// What [`scan`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// `segment_bytes` from `FORMAT`; `None` when it could not be read (nothing else is then
    /// checked).
    pub segment_bytes: Option<u64>,
    /// Segment files found (with a valid segment name).
    pub segments: u64,
    /// Records of the intact prefix (those yielded).
    pub records: u64,
    /// Frame bytes of those records.
    pub bytes: u64,
    /// Position of the last record of the intact prefix.
    pub last_lsn: Option<Lsn>,
    /// End of the intact prefix: where [`super::Log::open`] (after a repair) appends next.
    pub end_lsn: Lsn,
    /// Every problem, in log order.
    pub problems: Vec<Problem>,
}

impl Report {
    /// Whether the scan found nothing wrong.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Scan progress, for a progress line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    /// Segment bytes read so far.
    pub done_bytes: u64,
    /// Segment bytes to read in all (every segment's length, capped at `segment_bytes`).
    pub total_bytes: u64,
}

/// Receives what [`scan`] reads. Both methods default to doing nothing.
pub trait Visitor {
    /// A record of the intact prefix, in log order.
    fn record(&mut self, record: Record<'_>) {
        let _ = record;
    }

    /// Called after each read of a segment chunk.
    fn progress(&mut self, progress: Progress) {
        let _ = progress;
    }
}

/// A visitor that ignores everything.
impl Visitor for () {}

/// Where the intact prefix ends: what [`repair`] cuts.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Cut {
    /// Segments (in order) before the cut are kept; the segment at `segment` is kept up to
    /// `offset` (and zeroed from there when `zero`); every later one is moved aside.
    segment: usize,
    offset: u64,
    /// Whether bytes from `offset` on must be zeroed (false when the problem is only that the
    /// later segments must go, e.g. a gap).
    zero: bool,
}

/// The whole outcome of a scan, with what a repair needs.
struct Scan {
    report: Report,
    /// The segments in order, with their file lengths.
    segments: Vec<(PathBuf, u64)>,
    /// `.log` files whose names are not segment names.
    strays: Vec<PathBuf>,
    cut: Option<Cut>,
    /// An all-zero last segment left out of the scan (see recovery): a repair that cuts the log
    /// sets it aside with the segments after the cut.
    unused: Option<PathBuf>,
}

/// Checks the log in `dir` without modifying anything and without taking its lock (see the
/// module docs). Fails only when the directory cannot be listed or a file cannot be read;
/// everything wrong with the contents is in [`Report::problems`].
pub fn scan(dir: &Path, options: &ScanOptions, visitor: &mut dyn Visitor) -> Result<Report, LogError> {
    scan_dir(dir, options, visitor).map(|scan| scan.report)
}

fn scan_dir(dir: &Path, options: &ScanOptions, visitor: &mut dyn Visitor) -> Result<Scan, LogError> {
    let mut problems = Vec::new();
    let mut named = Vec::new();
    let mut strays = Vec::new();
    let mut has_format = false;
    for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if name == FORMAT_FILE {
            has_format = true;
        } else if name == FORMAT_TEMP_FILE {
            // Recovery removes it: a FORMAT that was never renamed into place.
        } else {
            // A segment, plain or packed (`<lsn>.log` or `<lsn>.log.zst`).
            let packed = name.strip_suffix(packed::SUFFIX).filter(|n| n.ends_with(".log"));
            let Some(plain) = packed.or(name.ends_with(".log").then_some(name.as_str())) else {
                continue;
            };
            match segment::parse_file_name(plain) {
                // A packed copy beside its plain segment is what an unfinished packing leaves:
                // recovery keeps the plain one and removes the copy.
                Some(_) if packed.is_some() && dir.join(plain).exists() => {}
                Some(first_lsn) => named.push((first_lsn, path)),
                None => {
                    problems.push(Problem {
                        file: path.clone(),
                        offset: 0,
                        kind: ProblemKind::Layout,
                        reason: "segment name is not a 20-digit decimal LSN".into(),
                    });
                    strays.push(path);
                }
            }
        }
    }
    named.sort_unstable_by_key(|(first_lsn, _)| *first_lsn);
    // As recovery does: an all-zero last segment after another was prepared ahead and never
    // used; the one before it is the last (its tail is judged as the last's).
    let mut unused = None;
    if named.len() >= 2 {
        let (_, path) = named.last().expect("two or more");
        if path.extension().is_some_and(|e| e == "log") && segment::is_unused(path).map_err(io_error(path))? {
            unused = named.pop().map(|(_, path)| path);
        }
    }
    let format_path = dir.join(FORMAT_FILE);
    let segment_bytes = if has_format {
        match std::fs::read(&format_path)
            .map_err(|e| (0, format!("cannot read: {e}")))
            .and_then(|bytes| super::recovery::parse_format(&bytes))
        {
            Ok(segment_bytes) => Some(segment_bytes),
            Err((offset, reason)) => {
                problems.push(Problem {
                    file: format_path,
                    offset,
                    kind: ProblemKind::Format,
                    reason,
                });
                None
            }
        }
    } else if let Some((_, path)) = named.first() {
        problems.push(Problem {
            file: format_path,
            offset: 0,
            kind: ProblemKind::Format,
            reason: format!("missing, while segment {} exists", path.display()),
        });
        None
    } else {
        // An empty directory: Log::open creates FORMAT.
        Some(LogConfig::default().segment_bytes)
    };
    let mut report = Report {
        segment_bytes,
        segments: named.len() as u64,
        records: 0,
        bytes: 0,
        last_lsn: None,
        end_lsn: Lsn(0),
        problems,
    };
    let Some(segment_bytes) = segment_bytes else {
        return Ok(Scan {
            report,
            segments: Vec::new(),
            strays,
            cut: None,
            unused,
        });
    };

    let mut segments = Vec::with_capacity(named.len());
    let mut total_bytes = 0;
    for (_, path) in &named {
        let file_bytes = std::fs::metadata(path).map_err(io_error(path))?.len();
        total_bytes += file_bytes.min(segment_bytes);
        segments.push((path.clone(), file_bytes));
    }
    let mut progress = Progress {
        done_bytes: 0,
        total_bytes,
    };
    visitor.progress(progress);
    let mut cut: Option<Cut> = None;
    let segment_count = named.len();
    for (position, (first_lsn, path)) in named.iter().enumerate() {
        let file_bytes = segments[position].1;
        let expected_lsn = position as u64 * segment_bytes;
        if *first_lsn != expected_lsn && cut.is_none() {
            let missing = dir.join(segment::file_name(expected_lsn));
            report.problems.push(Problem {
                file: missing,
                offset: 0,
                kind: ProblemKind::Layout,
                reason: if first_lsn % segment_bytes != 0 {
                    format!(
                        "segment missing; the next file, {}, starts at LSN {first_lsn}, not a multiple of \
                         segment_bytes {segment_bytes}",
                        path.display()
                    )
                } else {
                    format!("segment missing; the next present one is {}", path.display())
                },
            });
            // Keep everything before the gap as it is.
            cut = Some(Cut {
                segment: position,
                offset: 0,
                zero: false,
            });
        }
        let is_last = position + 1 == segment_count;
        let intact = cut.is_none();
        let mut sink = Sink {
            visitor: &mut *visitor,
            base_lsn: first_lsn - first_lsn % segment_bytes,
            yield_records: intact,
            records: 0,
            bytes: 0,
            last_lsn: None,
        };
        let checked = check_segment(
            path,
            file_bytes,
            segment_bytes,
            is_last,
            options.window_bytes,
            &mut sink,
            &mut progress,
        )?;
        let (records, bytes, last_lsn) = (sink.records, sink.bytes, sink.last_lsn);
        if intact {
            report.records += records;
            report.bytes += bytes;
            report.last_lsn = last_lsn.or(report.last_lsn);
            report.end_lsn = Lsn(expected_lsn + checked.data_end);
        }
        if let Some(problem) = checked.problem {
            report.problems.push(problem);
            if cut.is_none() {
                cut = Some(Cut {
                    segment: position,
                    offset: checked.data_end,
                    zero: true,
                });
            }
        }
    }
    Ok(Scan {
        report,
        segments,
        strays,
        cut,
        unused,
    })
}

/// Where one segment's valid frames end, and its problem if any.
struct Checked {
    data_end: u64,
    problem: Option<Problem>,
}

/// Passes the records of one segment on, and counts them.
struct Sink<'v> {
    visitor: &'v mut dyn Visitor,
    base_lsn: u64,
    yield_records: bool,
    records: u64,
    bytes: u64,
    last_lsn: Option<Lsn>,
}

/// Where a segment's bytes come from: its file, or the unpacked data of a packed segment.
enum Source<'f> {
    File(&'f File),
    Memory(&'f [u8]),
}

/// A window of one segment file read into memory.
struct Reader<'f> {
    file: Source<'f>,
    /// Bytes of the segment to read: the file length, capped at `segment_bytes`.
    len: u64,
    start: u64,
    buffer: Vec<u8>,
}

impl Reader<'_> {
    /// Makes the buffer hold `[offset, offset + want)` (and up to a chunk more), reading from the
    /// file if it does not; `offset + want <= len`.
    fn fill(&mut self, offset: u64, want: usize) -> std::io::Result<()> {
        let end = self.start + self.buffer.len() as u64;
        if offset >= self.start && offset + want as u64 <= end {
            return Ok(());
        }
        // Bounded by len - offset, which the caller keeps within the segment.
        let read = (self.len - offset).min(want.max(READ_CHUNK_BYTES) as u64) as usize;
        self.buffer.resize(read, 0);
        match &self.file {
            Source::File(file) => file.read_exact_at(&mut self.buffer, offset)?,
            // Bounded by len, which is the data's length for a packed segment.
            Source::Memory(data) => self
                .buffer
                .copy_from_slice(&data[offset as usize..offset as usize + read]),
        }
        self.start = offset;
        Ok(())
    }

    fn bytes_from(&self, offset: u64) -> &[u8] {
        &self.buffer[(offset - self.start) as usize..]
    }

    /// Offset of the first nonzero byte in `[from, to)`.
    fn first_nonzero(&mut self, from: u64, to: u64) -> std::io::Result<Option<u64>> {
        let mut at = from;
        while at < to {
            self.fill(at, 1)?;
            let end = (self.start + self.buffer.len() as u64).min(to);
            let bytes = &self.buffer[(at - self.start) as usize..(end - self.start) as usize];
            if let Some(found) = bytes.iter().position(|&b| b != 0) {
                return Ok(Some(at + found as u64));
            }
            at = end;
        }
        Ok(None)
    }
}

/// Checks one segment as recovery would (see [`super::segment`]): every frame up to the end of
/// data, then what follows it.
fn check_segment(
    path: &Path,
    file_bytes: u64,
    segment_bytes: u64,
    is_last: bool,
    window_bytes: u64,
    sink: &mut Sink<'_>,
    progress: &mut Progress,
) -> Result<Checked, LogError> {
    let problem_at = |offset: u64, kind: ProblemKind, reason: String| Problem {
        file: path.to_owned(),
        offset,
        kind,
        reason,
    };
    let is_packed = path.extension().is_some_and(|e| e == "zst");
    // A packed segment: its blocks unpacked (up to a bad one), checked like a sealed segment.
    let (unpacked, unpack_problem) = match is_packed {
        false => (Vec::new(), None),
        true => match packed::Packed::open(path) {
            Ok(packed) => {
                let (data, error) = packed.unpack_all();
                (data, error)
            }
            Err(error) => (Vec::new(), Some(error)),
        },
    };
    let unpack_problem = unpack_problem.map(|error| match error {
        LogError::Corrupt { file, offset, reason } => Problem {
            file,
            offset,
            kind: ProblemKind::Corrupt,
            reason,
        },
        other => problem_at(0, ProblemKind::Corrupt, other.to_string()),
    });
    let (file_bytes, is_last) = if is_packed {
        (segment_bytes, false)
    } else {
        (file_bytes, is_last)
    };
    let file = match is_packed {
        false => Some(File::open(path).map_err(io_error(path))?),
        true => None,
    };
    let len = match &file {
        Some(_) => file_bytes.min(segment_bytes),
        None => unpacked.len() as u64,
    };
    let before = progress.done_bytes;
    let mut reader = Reader {
        file: match &file {
            Some(file) => Source::File(file),
            None => Source::Memory(&unpacked),
        },
        len,
        start: 0,
        buffer: Vec::new(),
    };
    let mut offset = 0u64;
    let mut bad: Option<String> = None;
    loop {
        let remaining = len - offset;
        if remaining == 0 {
            break;
        }
        reader
            .fill(offset, (frame::HEADER_BYTES as u64).min(remaining) as usize)
            .map_err(io_error(path))?;
        // Never more than `remaining` bytes.
        let available = reader.bytes_from(offset);
        match frame::decode(available) {
            Ok(Some(f)) => {
                if sink.yield_records {
                    sink.visitor.record(Record {
                        lsn: Lsn(sink.base_lsn + offset),
                        kind: f.kind,
                        payload: f.payload,
                    });
                    sink.records += 1;
                    sink.bytes += f.frame_bytes as u64;
                    sink.last_lsn = Some(Lsn(sink.base_lsn + offset));
                }
                offset += f.frame_bytes as u64;
            }
            Ok(None) => break,
            Err(FrameError::TooLong {
                payload_bytes,
                frame_bytes,
                ..
            }) => {
                if frame_bytes > remaining {
                    let error = FrameError::TooLong {
                        payload_bytes,
                        frame_bytes,
                        room_bytes: remaining as usize,
                    };
                    bad = Some(error.to_string());
                    break;
                }
                if frame_bytes > window_bytes.max(READ_CHUNK_BYTES as u64) {
                    bad = Some(format!(
                        "frame of {frame_bytes} bytes (payload {payload_bytes}) is longer than any the log \
                         writes (batch_bytes_max {window_bytes})"
                    ));
                    break;
                }
                // The frame fits the segment but not the buffer: read all of it and decode again.
                reader.fill(offset, frame_bytes as usize).map_err(io_error(path))?;
            }
            Err(error) => {
                bad = Some(error.to_string());
                break;
            }
        }
    }
    let data_end = offset;
    let mut problem = None;
    if let Some(unpack_problem) = unpack_problem.filter(|_| bad.is_none()) {
        problem = Some(unpack_problem);
    } else if is_packed && bad.is_none() && data_end != len {
        problem = Some(problem_at(
            8,
            ProblemKind::Corrupt,
            format!("frames end at {data_end}, the packed header says {len}"),
        ));
    } else if file_bytes != segment_bytes && !(is_last && file_bytes < segment_bytes) {
        problem = Some(problem_at(
            file_bytes.min(segment_bytes),
            ProblemKind::Layout,
            format!("segment is {file_bytes} bytes long, not segment_bytes {segment_bytes}"),
        ));
    } else if !is_last {
        if let Some(reason) = bad {
            problem = Some(problem_at(data_end, ProblemKind::Corrupt, reason));
        } else if let Some(at) = reader.first_nonzero(data_end, len).map_err(io_error(path))? {
            problem = Some(problem_at(
                at,
                ProblemKind::Corrupt,
                format!("nonzero byte after the end of data ({data_end}) of a sealed segment"),
            ));
        }
    } else {
        // Bytes past a short last file read as zero: recovery preallocates it again.
        let window_end = data_end.saturating_add(window_bytes).min(segment_bytes);
        let beyond = reader.first_nonzero(window_end.min(len), len).map_err(io_error(path))?;
        let what = match &bad {
            Some(reason) => format!("bad frame ({reason})"),
            None => "end of data".to_owned(),
        };
        if let Some(beyond) = beyond {
            problem = Some(problem_at(
                data_end,
                ProblemKind::Corrupt,
                format!(
                    "{what}, yet offset {beyond} holds a nonzero byte, beyond the {window_bytes}-byte window \
                     a torn write can reach: not a torn tail"
                ),
            ));
        } else {
            let stray = reader
                .first_nonzero(data_end, window_end.min(len))
                .map_err(io_error(path))?;
            let reason = match (bad, stray) {
                (Some(reason), _) => Some(reason),
                (None, Some(at)) => Some(format!("nonzero bytes after the end of data, first at offset {at}")),
                (None, None) => None,
            };
            problem = reason.map(|reason| {
                problem_at(
                    data_end,
                    ProblemKind::TornTail,
                    format!("{reason}; recovery would zero offsets {data_end}..{window_end}"),
                )
            });
        }
    }
    // Count the segment whole, whatever was skipped.
    progress.done_bytes = before + len;
    sink.visitor.progress(*progress);
    Ok(Checked { data_end, problem })
}

/// One step of a repair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RepairAction {
    /// Copy the file whole into the quarantine folder, before it is changed.
    Copy { file: PathBuf },
    /// Write zeros over `[from, to)` of the file, then `fdatasync` it.
    Zero { file: PathBuf, from: u64, to: u64 },
    /// Cut the file to `len` bytes (a segment longer than `segment_bytes`).
    Truncate { file: PathBuf, len: u64 },
    /// Move the file into the quarantine folder.
    Move { file: PathBuf },
    /// Write the first `len` bytes of the packed segment `file` to the plain segment `to`
    /// (preallocated to `segment_bytes`, synced).
    Unpack {
        file: PathBuf,
        to: PathBuf,
        len: u64,
        segment_bytes: u64,
    },
}

impl std::fmt::Display for RepairAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RepairAction::Copy { file } => write!(f, "copy {} into the quarantine folder", file.display()),
            RepairAction::Zero { file, from, to } => {
                write!(
                    f,
                    "zero {} from offset {from} to {to} ({} bytes)",
                    file.display(),
                    to - from
                )
            }
            RepairAction::Truncate { file, len } => write!(f, "truncate {} to {len} bytes", file.display()),
            RepairAction::Move { file } => write!(f, "move {} into the quarantine folder", file.display()),
            RepairAction::Unpack { file, to, len, .. } => write!(
                f,
                "write the first {len} bytes of packed {} to {}",
                file.display(),
                to.display()
            ),
        }
    }
}

/// What a repair does: computed from a scan under the directory lock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepairPlan {
    /// The scan it was computed from.
    pub report: Report,
    /// Where copies and moved files go: `<dir>/quarantine-<unix seconds>/`.
    pub quarantine: PathBuf,
    /// In order; empty when there is nothing to repair.
    pub actions: Vec<RepairAction>,
}

/// Why a repair did not run.
#[derive(Debug, thiserror::Error)]
pub enum RepairError {
    /// The directory is locked by a running log (a node): stop it first.
    #[error("{} is in use by a running node (its lock is held); stop the node first", .0.display())]
    Locked(PathBuf),
    /// `FORMAT` is damaged; a person must look at it.
    #[error("{0}; FORMAT problems are not repaired")]
    Format(Problem),
    /// The caller declined the plan; nothing was changed.
    #[error("repair not confirmed; nothing was changed")]
    Declined,
    #[error(transparent)]
    Log(#[from] LogError),
}

/// Repairs the log in `dir` (see the module docs): takes its lock (refusing if a node holds it),
/// scans it, computes the plan, passes it to `confirm` and, if that returns true, carries it out.
/// `now_unix_s` names the quarantine folder. Returns the plan carried out.
pub fn repair(
    dir: &Path,
    options: &ScanOptions,
    now_unix_s: u64,
    visitor: &mut dyn Visitor,
    confirm: &mut dyn FnMut(&RepairPlan) -> bool,
) -> Result<RepairPlan, RepairError> {
    let dir_lock = try_lock(dir)?;
    let scan = scan_dir(dir, options, visitor)?;
    if let Some(problem) = scan.report.problems.iter().find(|p| p.kind == ProblemKind::Format) {
        return Err(RepairError::Format(problem.clone()));
    }
    let segment_bytes = scan
        .report
        .segment_bytes
        .ok_or_else(|| LogError::Config("FORMAT gave no segment size".to_owned()))?;
    let quarantine = dir.join(format!("quarantine-{now_unix_s}"));
    let mut actions = Vec::new();
    if let Some(cut) = &scan.cut {
        let (path, file_bytes) = &scan.segments[cut.segment];
        let packed_cut = cut.zero && path.extension().is_some_and(|e| e == "zst");
        if packed_cut {
            // The packed file is set aside whole first; then its intact prefix (if any) is
            // written back as a plain segment from the quarantined copy, under a temporary name
            // renamed into place once synced.
            actions.push(RepairAction::Move { file: path.clone() });
            if cut.offset > 0 {
                let name = path.file_name().expect("a segment file name");
                actions.push(RepairAction::Unpack {
                    file: quarantine.join(name),
                    to: path.with_extension(""),
                    len: cut.offset,
                    segment_bytes,
                });
            }
        } else if cut.zero {
            actions.push(RepairAction::Copy { file: path.clone() });
            let to = (*file_bytes).min(segment_bytes);
            if cut.offset < to {
                actions.push(RepairAction::Zero {
                    file: path.clone(),
                    from: cut.offset,
                    to,
                });
            }
            if *file_bytes > segment_bytes {
                actions.push(RepairAction::Truncate {
                    file: path.clone(),
                    len: segment_bytes,
                });
            }
        }
        // With zero unset the cut is at a gap: the segment there is the first to move.
        let first_moved = if cut.zero { cut.segment + 1 } else { cut.segment };
        for (path, _) in &scan.segments[first_moved..] {
            actions.push(RepairAction::Move { file: path.clone() });
        }
    }
    for path in &scan.strays {
        actions.push(RepairAction::Move { file: path.clone() });
    }
    if let (Some(_), Some(unused)) = (&scan.cut, &scan.unused) {
        actions.push(RepairAction::Move { file: unused.clone() });
    }
    let plan = RepairPlan {
        report: scan.report,
        quarantine,
        actions,
    };
    if plan.actions.is_empty() {
        return Ok(plan);
    }
    if !confirm(&plan) {
        return Err(RepairError::Declined);
    }
    std::fs::create_dir(&plan.quarantine).map_err(io_error(&plan.quarantine))?;
    for action in &plan.actions {
        carry_out(action, &plan.quarantine)?;
    }
    File::open(&plan.quarantine)
        .and_then(|f| f.sync_all())
        .map_err(io_error(&plan.quarantine))?;
    dir_lock.sync_all().map_err(io_error(dir))?;
    tracing::warn!(dir = %dir.display(), quarantine = %plan.quarantine.display(), "log repaired");
    Ok(plan)
}

fn carry_out(action: &RepairAction, quarantine: &Path) -> Result<(), LogError> {
    let into = |file: &Path| -> Result<PathBuf, LogError> {
        let name = file
            .file_name()
            .ok_or_else(|| LogError::Config(format!("{} has no file name", file.display())))?;
        Ok(quarantine.join(name))
    };
    match action {
        RepairAction::Copy { file } => {
            let target = into(file)?;
            std::fs::copy(file, &target).map_err(io_error(file))?;
            File::open(&target)
                .and_then(|f| f.sync_all())
                .map_err(io_error(&target))?;
        }
        RepairAction::Zero { file, from, to } => {
            let handle = OpenOptions::new().write(true).open(file).map_err(io_error(file))?;
            let zeros = vec![0u8; READ_CHUNK_BYTES];
            let mut at = *from;
            while at < *to {
                // Bounded by READ_CHUNK_BYTES.
                let len = (to - at).min(READ_CHUNK_BYTES as u64) as usize;
                handle.write_all_at(&zeros[..len], at).map_err(io_error(file))?;
                at += len as u64;
            }
            handle.sync_data().map_err(io_error(file))?;
        }
        RepairAction::Truncate { file, len } => {
            let handle = OpenOptions::new().write(true).open(file).map_err(io_error(file))?;
            handle.set_len(*len).map_err(io_error(file))?;
            handle.sync_all().map_err(io_error(file))?;
        }
        RepairAction::Move { file } => {
            let target = into(file)?;
            std::fs::rename(file, &target).map_err(io_error(file))?;
        }
        RepairAction::Unpack {
            file,
            to,
            len,
            segment_bytes,
        } => {
            let packed = packed::Packed::open(file)?;
            let (data, _) = packed.unpack_all();
            let keep = &data[..(*len as usize).min(data.len())];
            let temp = to.with_extension("log.tmp");
            let plain = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&temp)
                .map_err(io_error(&temp))?;
            segment::preallocate(&plain, *segment_bytes).map_err(io_error(&temp))?;
            plain.write_all_at(keep, 0).map_err(io_error(&temp))?;
            plain.sync_all().map_err(io_error(&temp))?;
            std::fs::rename(&temp, to).map_err(io_error(to))?;
            let dir = to.parent().unwrap_or(Path::new("."));
            File::open(dir).and_then(|d| d.sync_all()).map_err(io_error(dir))?;
        }
    }
    Ok(())
}

/// Takes the directory's `flock` as [`super::Log::open`] does, without waiting: held while the
/// returned file is open.
fn try_lock(dir: &Path) -> Result<File, RepairError> {
    super::recovery::lock(dir).map_err(|error| match &error {
        LogError::Io { source, .. } if source.kind() == std::io::ErrorKind::WouldBlock => {
            RepairError::Locked(dir.to_owned())
        }
        _ => error.into(),
    })
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use super::super::tests::{flip_bit, segment_files};
    use super::super::{Committer, Log};
    use super::*;

    /// Small segments and batches, so that rollover happens with few records.
    fn small_config() -> LogConfig {
        LogConfig {
            segment_bytes: 4096,
            batch_bytes_max: 1024,
            pending_bytes_max: 64 << 10,
        }
    }

    fn options(config: LogConfig) -> ScanOptions {
        ScanOptions {
            window_bytes: config.batch_bytes_max as u64,
        }
    }

    /// Writes `count` records of `payload_bytes` each through the real log and committer, and
    /// returns their positions.
    fn populate(dir: &Path, config: LogConfig, count: usize, payload_bytes: usize) -> Vec<Lsn> {
        glommio::LocalExecutorBuilder::default()
            .make()
            .expect("glommio executor")
            .run(async move {
                let log = Rc::new(RefCell::new(Log::open(dir, config).expect("open")));
                let committer = Committer::new(log.clone());
                let task = glommio::spawn_local(committer.clone().run());
                let mut lsns = Vec::new();
                for i in 0..count {
                    let payload = vec![(i % 251) as u8 + 1; payload_bytes];
                    let lsn = log.borrow_mut().append(1 + (i % 3) as u8, &payload).expect("append");
                    lsns.push(lsn);
                    // One batch per few records, so that the log has many batches.
                    if i % 4 == 3 {
                        committer.wait_durable(lsn).await.expect("durable");
                    }
                }
                committer.shutdown().await.expect("clean stop");
                task.await;
                lsns
            })
    }

    /// Collects the records and progress a scan reports.
    #[derive(Default)]
    struct Collect {
        records: Vec<(Lsn, u8, usize)>,
        progress: Vec<Progress>,
    }

    impl Visitor for Collect {
        fn record(&mut self, record: Record<'_>) {
            self.records.push((record.lsn, record.kind, record.payload.len()));
        }
        fn progress(&mut self, progress: Progress) {
            self.progress.push(progress);
        }
    }

    fn scan_of(dir: &Path, config: LogConfig) -> (Report, Collect) {
        let mut collect = Collect::default();
        let report = scan(dir, &options(config), &mut collect).expect("scan");
        (report, collect)
    }

    /// Expects exactly one problem, of `kind`, at `file` and `offset`; returns its reason.
    fn check_one_problem(report: &Report, kind: ProblemKind, file: &Path, offset: u64) -> String {
        assert_eq!(report.problems.len(), 1, "{:#?}", report.problems);
        let problem = &report.problems[0];
        assert_eq!(
            (problem.kind, problem.file.as_path(), problem.offset),
            (kind, file, offset),
            "{problem}"
        );
        let text = problem.to_string();
        assert!(text.contains(&format!("{}, offset {offset}", file.display())), "{text}");
        problem.reason.clone()
    }

    #[test]
    fn clean_log_has_no_problems_and_yields_every_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = small_config();
        let lsns = populate(dir.path(), config, 40, 300);
        assert!(segment_files(dir.path()).len() >= 3, "several segments");
        let (report, collect) = scan_of(dir.path(), config);
        assert!(report.is_clean(), "{:#?}", report.problems);
        assert_eq!(report.segment_bytes, Some(config.segment_bytes));
        assert_eq!(report.segments, segment_files(dir.path()).len() as u64);
        assert_eq!(report.records, 40);
        assert_eq!(collect.records.iter().map(|r| r.0).collect::<Vec<_>>(), lsns);
        assert!(collect
            .records
            .iter()
            .all(|&(_, kind, len)| (1..=3).contains(&kind) && len == 300));
        assert_eq!(report.last_lsn, lsns.last().copied());
        let log = Log::open(dir.path(), config).expect("open");
        assert_eq!(report.end_lsn, log.end_lsn());
        assert_eq!(report.bytes, 40 * frame::frame_bytes(300) as u64);
        let last = collect.progress.last().expect("progress");
        assert_eq!(last.done_bytes, last.total_bytes);
        assert_eq!(last.total_bytes, report.segments * config.segment_bytes);
    }

    #[test]
    fn scan_runs_beside_an_open_log_and_changes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = small_config();
        populate(dir.path(), config, 10, 100);
        let files = segment_files(dir.path());
        let before: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).expect("read")).collect();
        // Damage that recovery would zero: the scan reports it and leaves it.
        let last = files.last().expect("segments");
        let log_end = Log::open(dir.path(), config).expect("open").end_lsn().0 % config.segment_bytes;
        let file = OpenOptions::new().write(true).open(last).expect("open");
        file.write_all_at(&[0xab; 8], log_end + 64).expect("write");
        let damaged = std::fs::read(last).expect("read");
        let _held = Log::open(dir.path(), config).expect("open zeroes the torn tail");
        let (report, _) = scan_of(dir.path(), config);
        assert!(report.is_clean(), "{:#?}", report.problems);
        // The open zeroed it; write it again while the log is open, and scan again.
        file.write_all_at(&[0xab; 8], log_end + 64).expect("write");
        let (report, _) = scan_of(dir.path(), config);
        check_one_problem(&report, ProblemKind::TornTail, last, log_end);
        assert_eq!(std::fs::read(last).expect("read"), damaged, "the scan wrote nothing");
        for (file, bytes) in files.iter().zip(&before).take(files.len() - 1) {
            assert_eq!(&std::fs::read(file).expect("read"), bytes);
        }
    }

    #[test]
    fn flipped_bit_mid_sealed_segment_is_reported_with_file_and_offset() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = small_config();
        let lsns = populate(dir.path(), config, 40, 300);
        let files = segment_files(dir.path());
        let lsn = lsns
            .iter()
            .filter(|lsn| lsn.0 / config.segment_bytes == 1)
            .nth(2)
            .expect("three records in segment 1");
        let offset = lsn.0 % config.segment_bytes;
        flip_bit(&files[1], offset + 40);
        let (report, collect) = scan_of(dir.path(), config);
        let reason = check_one_problem(&report, ProblemKind::Corrupt, &files[1], offset);
        assert!(reason.contains("checksum mismatch"), "{reason}");
        // Recovery agrees on the place.
        match Log::open(dir.path(), config) {
            Err(LogError::Corrupt { file, offset: at, .. }) => assert_eq!((file, at), (files[1].clone(), offset)),
            other => panic!("expected corruption, got {other:?}"),
        }
        // Only the intact prefix is yielded.
        assert_eq!(report.last_lsn, collect.records.last().map(|r| r.0));
        assert!(collect.records.iter().all(|r| r.0 < *lsn));
        assert_eq!(report.end_lsn, *lsn);
    }

    #[test]
    fn flipped_bit_far_from_the_end_of_the_last_segment_is_corruption() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = LogConfig {
            segment_bytes: 64 << 10,
            batch_bytes_max: 256,
            pending_bytes_max: 64 << 10,
        };
        let lsns = populate(dir.path(), config, 100, 100);
        let files = segment_files(dir.path());
        assert_eq!(files.len(), 1);
        flip_bit(&files[0], lsns[10].0 + 4);
        let (report, _) = scan_of(dir.path(), config);
        let reason = check_one_problem(&report, ProblemKind::Corrupt, &files[0], lsns[10].0);
        assert!(reason.contains("not a torn tail"), "{reason}");
    }

    #[test]
    fn torn_tail_is_reported_as_torn() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = small_config();
        let lsns = populate(dir.path(), config, 12, 200);
        let files = segment_files(dir.path());
        let last = files.last().expect("segments");
        // Tear the last record: its payload no longer matches its checksum.
        let offset = lsns.last().expect("records").0 % config.segment_bytes;
        flip_bit(last, offset + 20);
        let (report, collect) = scan_of(dir.path(), config);
        let reason = check_one_problem(&report, ProblemKind::TornTail, last, offset);
        assert!(reason.contains("checksum mismatch"), "{reason}");
        assert_eq!(collect.records.len(), 11);
        // Recovery truncates it there.
        let log = Log::open(dir.path(), config).expect("a torn tail opens");
        assert_eq!(log.end_lsn(), report.end_lsn);
    }

    #[test]
    fn missing_segment_and_bad_names_are_layout_problems() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = small_config();
        populate(dir.path(), config, 40, 300);
        let files = segment_files(dir.path());
        std::fs::remove_file(&files[1]).expect("remove");
        std::fs::write(dir.path().join("7.log"), b"x").expect("write");
        let (report, _) = scan_of(dir.path(), config);
        let kinds: Vec<(ProblemKind, PathBuf)> = report.problems.iter().map(|p| (p.kind, p.file.clone())).collect();
        assert_eq!(
            kinds,
            vec![
                (ProblemKind::Layout, dir.path().join("7.log")),
                (ProblemKind::Layout, files[1].clone()),
            ]
        );
    }

    #[test]
    fn format_problems_are_reported_and_not_repaired() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = small_config();
        populate(dir.path(), config, 4, 100);
        let format = dir.path().join(FORMAT_FILE);
        std::fs::write(&format, "hewitt-log\nversion 9\nsegment_bytes 4096\n").expect("write");
        let (report, _) = scan_of(dir.path(), config);
        let reason = check_one_problem(&report, ProblemKind::Format, &format, 11);
        assert!(reason.contains("version 9"), "{reason}");
        let result = repair(dir.path(), &options(config), 1, &mut (), &mut |_| true);
        assert!(matches!(result, Err(RepairError::Format(_))), "{result:?}");
    }

    #[test]
    fn repair_of_mid_log_corruption_quarantines_later_segments() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = small_config();
        let lsns = populate(dir.path(), config, 40, 300);
        let files = segment_files(dir.path());
        assert!(files.len() >= 4);
        let lsn = lsns
            .iter()
            .find(|lsn| lsn.0 / config.segment_bytes == 1 && lsn.0 % config.segment_bytes > 0)
            .expect("a second record in segment 1");
        let offset = lsn.0 % config.segment_bytes;
        flip_bit(&files[1], offset + 100);
        let damaged = std::fs::read(&files[1]).expect("read");
        let later: Vec<Vec<u8>> = files[2..].iter().map(|f| std::fs::read(f).expect("read")).collect();

        // Declining changes nothing.
        let declined = repair(dir.path(), &options(config), 1_700_000_000, &mut (), &mut |_| false);
        assert!(matches!(declined, Err(RepairError::Declined)), "{declined:?}");
        assert_eq!(segment_files(dir.path()), files);

        let mut shown = None;
        let plan = repair(dir.path(), &options(config), 1_700_000_000, &mut (), &mut |plan| {
            shown = Some(plan.clone());
            true
        })
        .expect("repair");
        assert_eq!(shown.as_ref(), Some(&plan));
        let quarantine = dir.path().join("quarantine-1700000000");
        assert_eq!(plan.quarantine, quarantine);
        let mut expected = vec![
            RepairAction::Copy { file: files[1].clone() },
            RepairAction::Zero {
                file: files[1].clone(),
                from: offset,
                to: config.segment_bytes,
            },
        ];
        expected.extend(files[2..].iter().map(|f| RepairAction::Move { file: f.clone() }));
        assert_eq!(plan.actions, expected);

        // Nothing is lost: the damaged segment's copy and the later segments are quarantined.
        assert_eq!(segment_files(dir.path()), files[..2]);
        assert_eq!(
            std::fs::read(quarantine.join(files[1].file_name().expect("name"))).expect("copy"),
            damaged
        );
        for (file, bytes) in files[2..].iter().zip(&later) {
            assert_eq!(
                &std::fs::read(quarantine.join(file.file_name().expect("name"))).expect("moved"),
                bytes
            );
        }
        let (report, collect) = scan_of(dir.path(), config);
        assert!(report.is_clean(), "{:#?}", report.problems);
        assert_eq!(report.end_lsn, *lsn);
        assert_eq!(
            collect.records.iter().map(|r| r.0).collect::<Vec<_>>(),
            lsns.iter().copied().take_while(|l| l < lsn).collect::<Vec<_>>()
        );
        let log = Log::open(dir.path(), config).expect("the repaired log opens");
        assert_eq!(log.end_lsn(), *lsn);
        drop(log);
        // A second repair has nothing to do.
        let again = repair(dir.path(), &options(config), 1_700_000_001, &mut (), &mut |_| {
            panic!("nothing to confirm")
        })
        .expect("repair");
        assert!(again.actions.is_empty());
    }

    #[test]
    fn repair_of_corruption_in_the_last_segment_zeroes_from_the_bad_frame() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = LogConfig {
            segment_bytes: 64 << 10,
            batch_bytes_max: 256,
            pending_bytes_max: 64 << 10,
        };
        let lsns = populate(dir.path(), config, 100, 100);
        let files = segment_files(dir.path());
        flip_bit(&files[0], lsns[50].0 + 30);
        assert!(Log::open(dir.path(), config).is_err());
        repair(dir.path(), &options(config), 7, &mut (), &mut |_| true).expect("repair");
        let log = Log::open(dir.path(), config).expect("the repaired log opens");
        assert_eq!(log.end_lsn(), lsns[50]);
        assert_eq!(log.records().count(), 50);
    }

    #[test]
    fn repair_refuses_while_a_log_holds_the_lock() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = small_config();
        let lsns = populate(dir.path(), config, 40, 300);
        let files = segment_files(dir.path());
        let log = Log::open(dir.path(), config).expect("open");
        flip_bit(&files[1], lsns[10].0 % config.segment_bytes + 20);
        let result = repair(dir.path(), &options(config), 1, &mut (), &mut |_| {
            panic!("must not get this far")
        });
        assert!(matches!(result, Err(RepairError::Locked(_))), "{result:?}");
        assert_eq!(segment_files(dir.path()), files);
        drop(log);
        repair(dir.path(), &options(config), 1, &mut (), &mut |_| true).expect("repair once the log is closed");
        Log::open(dir.path(), config).expect("opens");
    }
}
