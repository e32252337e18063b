//! Opening a log directory: lock it, check or write `FORMAT`, find the segments, check their
//! sequence and recover each one.
//!
//! It does not frame or write records; it leaves the directory exactly as valid as it found it,
//! except for zeroing a torn tail (see the module docs of `log`).

use std::fs::File;
use std::io::Write;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use super::error::{corrupt, io_error};
use super::packed;
use super::segment::{self, Position, Segment};
use super::{LogConfig, LogError};

/// The on-disk format version this code reads and writes.
pub(super) const FORMAT_VERSION: u32 = 1;

const FORMAT_FILE: &str = "FORMAT";
const FORMAT_TEMP_FILE: &str = "FORMAT.tmp";
const FORMAT_MAGIC: &str = "hewitt-log";

/// A recovered directory, ready for appends.
pub(super) struct Recovered {
    /// The directory, open and locked for the life of the log.
    pub(super) dir_lock: File,
    pub(super) segments: Vec<Segment>,
    /// Position just past the last valid record.
    pub(super) end_lsn: u64,
    /// Some of the caller's sealed ends did not hold (a segment ends elsewhere, or is no longer
    /// sealed): the caller's index does not describe this log.
    pub(super) trust_failed: bool,
}

/// `trusted[i]` is the end of data of sealed segment `i` as a persisted index recorded it: such
/// a segment (if it is still sealed, not the last) is mapped without reading its frames.
pub(super) fn recover(dir: &Path, config: &LogConfig, trusted: &[u64]) -> Result<Recovered, LogError> {
    config.validate()?;
    std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    let dir_lock = lock(dir)?;

    let mut segment_paths = Vec::new();
    let mut has_format = false;
    for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            tracing::warn!(file = %path.display(), "ignoring a file with a non-UTF-8 name in the log directory");
            continue;
        };
        if name == FORMAT_FILE {
            has_format = true;
        } else if name == FORMAT_TEMP_FILE {
            // A crash while writing FORMAT for a new directory: it was never renamed into place.
            std::fs::remove_file(&path).map_err(io_error(&path))?;
        } else if name.ends_with(".log") {
            let first_lsn = segment::parse_file_name(&name)
                .ok_or_else(|| corrupt(&path, 0, "segment name is not a 20-digit decimal LSN"))?;
            segment_paths.push((first_lsn, path, false));
        } else if let Some(plain) = name.strip_suffix(packed::SUFFIX).filter(|n| n.ends_with(".log")) {
            let first_lsn = segment::parse_file_name(plain)
                .ok_or_else(|| corrupt(&path, 0, "segment name is not a 20-digit decimal LSN"))?;
            segment_paths.push((first_lsn, path, true));
        } else if name.ends_with(".log.zst.tmp") {
            // A packing that did not finish: the plain segment is still there.
            std::fs::remove_file(&path).map_err(io_error(&path))?;
        } else if name.starts_with("quarantine-") {
            // What `hewitt log repair` set aside: kept for the operator, never read.
        } else {
            tracing::warn!(file = %path.display(), "ignoring an unknown file in the log directory");
        }
    }
    // Plain before packed for the same segment: a packing that did not remove the plain file
    // keeps the plain one, and the packed copy goes (it is made again).
    segment_paths.sort_unstable_by_key(|(first_lsn, _, packed)| (*first_lsn, *packed));
    let mut kept: Vec<(u64, PathBuf, bool)> = Vec::with_capacity(segment_paths.len());
    for (first_lsn, path, packed) in segment_paths {
        if kept.last().is_some_and(|(last, _, _)| *last == first_lsn) {
            tracing::info!(file = %path.display(), "removing a packed copy of a segment still plain");
            std::fs::remove_file(&path).map_err(io_error(&path))?;
            continue;
        }
        kept.push((first_lsn, path, packed));
    }
    let mut segment_paths = kept;
    // A last segment that holds nothing but zeros, after another, is one prepared ahead and
    // never used (or one whose first batch never became durable): it goes, and the segment
    // before it is the last again (it may hold a torn tail, which only the last may).
    if segment_paths.len() >= 2 {
        let (first_lsn, path, packed) = segment_paths.last().expect("two or more");
        let previous = segment_paths[segment_paths.len() - 2].0;
        let follows = *first_lsn == previous + config.segment_bytes;
        if follows && !packed && segment::is_unused(path).map_err(io_error(path))? {
            tracing::info!(file = %path.display(), "removing an unused log segment prepared ahead");
            std::fs::remove_file(path).map_err(io_error(path))?;
            dir_lock.sync_all().map_err(io_error(dir))?;
            segment_paths.pop();
        }
    }

    let format_path = dir.join(FORMAT_FILE);
    if has_format {
        check_format(&format_path, config)?;
    } else if let Some((_, path, _)) = segment_paths.first() {
        return Err(corrupt(
            &format_path,
            0,
            format!("missing, while segment {} exists", path.display()),
        ));
    } else {
        write_format(dir, &dir_lock, config)?;
    }

    let segment_bytes = config.segment_bytes;
    let segment_count = segment_paths.len();
    let mut segments = Vec::with_capacity(segment_count);
    // More sealed ends than sealed segments: one the caller knew as sealed is now the last.
    let mut trust_failed = trusted.len() > segment_count.saturating_sub(1);
    for (position, (first_lsn, path, packed)) in segment_paths.into_iter().enumerate() {
        let index = position as u64;
        if !first_lsn.is_multiple_of(segment_bytes) {
            return Err(corrupt(
                &path,
                0,
                format!("first LSN {first_lsn} is not a multiple of segment_bytes {segment_bytes}"),
            ));
        }
        let expected_lsn = index * segment_bytes;
        if first_lsn != expected_lsn {
            let missing = dir.join(segment::file_name(expected_lsn));
            return Err(corrupt(
                &missing,
                0,
                format!("segment missing; the next present one is {}", path.display()),
            ));
        }
        if packed {
            let trusted_end = trusted.get(position_index(index)).copied();
            let (segment, failed) = Segment::open_packed(path, index, trusted_end)?;
            trust_failed |= failed;
            segments.push(segment);
            continue;
        }
        let position = if position + 1 == segment_count {
            Position::Last {
                window_bytes: config.batch_bytes_max as u64,
            }
        } else {
            Position::Sealed
        };
        if let (Position::Sealed, Some(&data_end)) = (position, trusted.get(position_index(index))) {
            match Segment::trust(path.clone(), index, segment_bytes, data_end)? {
                Some(segment) => {
                    segments.push(segment);
                    continue;
                }
                None => {
                    trust_failed = true;
                    tracing::warn!(
                        file = %path.display(),
                        data_end,
                        "sealed segment does not end where the index says; checking it whole"
                    )
                }
            }
        }
        segments.push(Segment::recover(path, index, segment_bytes, position)?);
    }
    // A packed segment is sealed: when it is the last (the segments after it were set aside by a
    // repair), the next record starts the next segment.
    let end_lsn = segments.last().map_or(0, |s| match s.is_packed() {
        true => s.first_lsn(segment_bytes) + segment_bytes,
        false => s.first_lsn(segment_bytes) + s.data_end,
    });
    Ok(Recovered {
        dir_lock,
        segments,
        end_lsn,
        trust_failed,
    })
}

fn position_index(index: u64) -> usize {
    usize::try_from(index).unwrap_or(usize::MAX)
}

/// Opens `dir` and takes an exclusive, non-blocking `flock` on it, held while the file is open.
pub(super) fn lock(dir: &Path) -> Result<File, LogError> {
    let file = File::open(dir).map_err(io_error(dir))?;
    // SAFETY: `flock` only reads its integer arguments; the descriptor is open and owned by
    // `file` for the duration of the call.
    let code = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if code != 0 {
        let source = std::io::Error::last_os_error();
        let source = if source.kind() == std::io::ErrorKind::WouldBlock {
            std::io::Error::new(
                std::io::ErrorKind::WouldBlock,
                "the log directory is already open (locked by another log)",
            )
        } else {
            source
        };
        return Err(LogError::Io {
            path: dir.to_owned(),
            source,
        });
    }
    Ok(file)
}

fn format_text(config: &LogConfig) -> String {
    format!(
        "{FORMAT_MAGIC}\nversion {FORMAT_VERSION}\nsegment_bytes {}\n",
        config.segment_bytes
    )
}

fn check_format(path: &Path, config: &LogConfig) -> Result<(), LogError> {
    let bytes = std::fs::read(path).map_err(io_error(path))?;
    let segment_bytes = parse_format(&bytes).map_err(|(offset, reason)| corrupt(path, offset, reason))?;
    if segment_bytes != config.segment_bytes {
        return Err(LogError::Config(format!(
            "{} says segment_bytes {segment_bytes}, the configuration {}; \
             a directory keeps the segment size it was created with",
            path.display(),
            config.segment_bytes
        )));
    }
    Ok(())
}

/// Parses the bytes of `FORMAT`: the directory's `segment_bytes`, or the offset and reason of
/// what is wrong. Shared by recovery and the read-only inspection.
pub(super) fn parse_format(bytes: &[u8]) -> Result<u64, (u64, String)> {
    let text = std::str::from_utf8(bytes).map_err(|e| (e.valid_up_to() as u64, "not UTF-8".to_owned()))?;
    let mut offset = 0u64;
    let mut lines = text.split_inclusive('\n').map(|line| {
        let at = offset;
        offset += line.len() as u64;
        (at, line.trim_end_matches('\n'))
    });
    let (at, magic) = lines.next().unwrap_or((0, ""));
    if magic != FORMAT_MAGIC {
        return Err((at, format!("expected {FORMAT_MAGIC:?}, found {magic:?}")));
    }
    let text_end = text.len() as u64;
    let mut field = |name: &str| -> Result<(u64, u64), (u64, String)> {
        let (at, line) = lines.next().unwrap_or((text_end, ""));
        line.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|value| value.parse().ok())
            .map(|value| (at, value))
            .ok_or_else(|| (at, format!("expected \"{name} <decimal>\", found {line:?}")))
    };
    let (version_at, version) = field("version")?;
    if version != u64::from(FORMAT_VERSION) {
        return Err((
            version_at,
            format!("format version {version} is not the one this build reads, {FORMAT_VERSION}"),
        ));
    }
    let (segment_bytes_at, segment_bytes) = field("segment_bytes")?;
    // Only the segment size is the directory's; the smallest batch and pending bounds keep the
    // other checks of `validate` out of the way.
    let config = LogConfig {
        segment_bytes,
        batch_bytes_max: 64,
        pending_bytes_max: 64,
    };
    if let Err(error) = config.validate() {
        return Err((segment_bytes_at, error.to_string()));
    }
    if let Some((at, line)) = lines.next() {
        return Err((at, format!("unexpected content after the known fields: {line:?}")));
    }
    Ok(segment_bytes)
}

fn write_format(dir: &Path, dir_lock: &File, config: &LogConfig) -> Result<(), LogError> {
    let temp = dir.join(FORMAT_TEMP_FILE);
    let path = dir.join(FORMAT_FILE);
    let mut file = File::create(&temp).map_err(io_error(&temp))?;
    file.write_all(format_text(config).as_bytes())
        .map_err(io_error(&temp))?;
    file.sync_all().map_err(io_error(&temp))?;
    std::fs::rename(&temp, &path).map_err(io_error(&path))?;
    dir_lock.sync_all().map_err(io_error(dir))?;
    Ok(())
}

/// The path of the segment that starts at `first_lsn`.
pub(super) fn segment_path(dir: &Path, first_lsn: u64) -> PathBuf {
    dir.join(segment::file_name(first_lsn))
}
