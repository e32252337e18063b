//! One segment file: its name, its creation (preallocated, mapped read-only) and its recovery
//! scan (check every frame, find the end of data, zero a torn tail).
//!
//! It does not write records (the committer does) and does not know about other segments: the
//! directory-level checks (FORMAT, order, gaps) are in `recovery`.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use std::cell::{Cell, OnceCell};

use memmap2::{MmapOptions, MmapRaw};

use super::error::{corrupt, io_error};
use super::frame;
use super::packed::Packed;
use super::LogError;

/// Bytes compared at once when looking for nonzero bytes.
const ZERO_CHUNK_BYTES: usize = 4096;

/// Bytes written at once when zeroing a torn tail.
const ZERO_WRITE_BYTES: usize = 64 << 10;

/// A segment file, mapped whole and read-only.
pub(super) struct Segment {
    pub(super) index: u64,
    pub(super) path: PathBuf,
    /// Offset just past the last durable frame (for a recovered segment: the last valid frame).
    /// Only grows, and only after the bytes below it are durable; bytes below it are never
    /// written again while the segment is mapped.
    pub(super) data_end: u64,
    body: Body,
    /// Opened on a caller's word (see [`Segment::trust`]) and not checked since.
    pub(super) trusted: bool,
}

/// The log's count of reads of packed blocks (to release the least recently read first) and of
/// the blocks it holds unpacked.
#[derive(Default)]
pub(super) struct ReadClock {
    now: Cell<u64>,
    pub(super) held: Cell<usize>,
}

impl ReadClock {
    fn tick(&self) -> u64 {
        let now = self.now.get() + 1;
        self.now.set(now);
        now
    }
}

/// Where a segment's bytes are.
enum Body {
    /// The plain file, mapped whole.
    Mapped(MmapRaw),
    /// Packed with zstd (see `packed`): blocks decompressed when first read, kept until
    /// [`Segment::release`].
    Packed {
        packed: Packed,
        /// Only blocks that read back: a failed read is tried again next time.
        unpacked: Vec<OnceCell<Box<[u8]>>>,
        /// When each block was last read (the log's read clock).
        used: Vec<Cell<u64>>,
    },
}

/// The file name of the segment whose first record is at `first_lsn`.
pub(super) fn file_name(first_lsn: u64) -> String {
    format!("{first_lsn:020}.log")
}

/// The first LSN encoded in a segment file name, if `name` has the form of one.
pub(super) fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Extends `file` to `len` bytes of allocated zeros (or allocates the holes below `len`).
pub(super) fn preallocate(file: &File, len: u64) -> std::io::Result<()> {
    let len = libc::off_t::try_from(len).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    // SAFETY: `posix_fallocate` only reads its integer arguments; the descriptor is open and
    // owned by `file` for the duration of the call.
    let code = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) };
    // posix_fallocate returns the error number instead of setting errno.
    if code == 0 {
        Ok(())
    } else {
        Err(std::io::Error::from_raw_os_error(code))
    }
}

fn map(file: &File, segment_bytes: u64) -> std::io::Result<MmapRaw> {
    let len = usize::try_from(segment_bytes).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    MmapOptions::new().len(len).map_raw_read_only(file)
}

/// Offset of the first nonzero byte of `bytes`.
fn first_nonzero(bytes: &[u8]) -> Option<usize> {
    const ZEROS: [u8; ZERO_CHUNK_BYTES] = [0; ZERO_CHUNK_BYTES];
    // Whole-chunk comparisons are memcmp calls: fast even in unoptimised builds.
    let chunk = bytes.chunks(ZERO_CHUNK_BYTES).position(|c| c != &ZEROS[..c.len()])?;
    let start = chunk * ZERO_CHUNK_BYTES;
    let within = bytes[start..]
        .iter()
        .position(|&b| b != 0)
        .expect("the chunk holds a nonzero byte");
    Some(start + within)
}

/// Where the valid frames of a segment end, and why.
struct Scan {
    /// Offset just past the last valid frame.
    data_end: u64,
    /// The reason the frame at `data_end` is bad; `None` when it is the end of data.
    bad: Option<frame::FrameError>,
}

fn scan(bytes: &[u8]) -> Scan {
    let mut offset = 0;
    loop {
        match frame::decode(&bytes[offset..]) {
            Ok(Some(f)) => offset += f.frame_bytes,
            Ok(None) => {
                return Scan {
                    data_end: offset as u64,
                    bad: None,
                }
            }
            Err(e) => {
                return Scan {
                    data_end: offset as u64,
                    bad: Some(e),
                }
            }
        }
    }
}

/// How [`Segment::recover`] treats what follows the valid frames.
#[derive(Clone, Copy)]
pub(super) enum Position {
    /// Not the last segment: everything after the end of data must be zero.
    Sealed,
    /// The last segment: a bad frame, or nonzero bytes, within `window_bytes` of the end of data
    /// are a torn write, zeroed; anything nonzero beyond is corruption.
    Last { window_bytes: u64 },
}

impl Segment {
    /// Creates the segment starting at `index * segment_bytes`: a new file, preallocated and
    /// mapped. The caller makes the name durable (directory fsync) before acknowledging records
    /// in it.
    pub(super) fn create(dir: &Path, index: u64, segment_bytes: u64) -> std::io::Result<Segment> {
        let first_lsn = index
            .checked_mul(segment_bytes)
            .ok_or(std::io::ErrorKind::InvalidInput)?;
        let path = dir.join(file_name(first_lsn));
        // Not `create_new`: the file may have just been made by a preparation of the same
        // segment still under way (see `Log::prepare_job`), whose bytes are all zero; no other
        // file can be there (recovery removes an unused, all-zero last segment).
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(&path)?;
        preallocate(&file, segment_bytes)?;
        let map = map(&file, segment_bytes)?;
        Ok(Segment {
            index,
            path,
            data_end: 0,
            body: Body::Mapped(map),
            trusted: false,
        })
    }

    /// Opens an existing segment, checks all of it and, for the last segment, zeroes a torn
    /// tail. Fails with [`LogError::Corrupt`] naming the file and offset of anything else.
    pub(super) fn recover(
        path: PathBuf,
        index: u64,
        segment_bytes: u64,
        position: Position,
    ) -> Result<Segment, LogError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_error(&path))?;
        let file_bytes = file.metadata().map_err(io_error(&path))?.len();
        if file_bytes != segment_bytes {
            let shorter_last = matches!(position, Position::Last { .. }) && file_bytes < segment_bytes;
            if !shorter_last {
                return Err(corrupt(
                    &path,
                    file_bytes.min(segment_bytes),
                    format!("segment is {file_bytes} bytes long, not segment_bytes {segment_bytes}"),
                ));
            }
            // A crash between creating the last segment and preallocating it: nothing in it was
            // acknowledged. Allocate it again; its contents are checked below like any other.
            tracing::warn!(
                file = %path.display(),
                file_bytes,
                segment_bytes,
                "log segment shorter than segment_bytes; preallocating it again"
            );
            preallocate(&file, segment_bytes).map_err(io_error(&path))?;
        }
        let map = map(&file, segment_bytes).map_err(io_error(&path))?;
        let zero_range = {
            // SAFETY: the mapping is `segment_bytes` long (`map` asked for exactly that and the
            // file is that long), and stays alive for this block. Nothing writes the file during
            // this block: the directory is locked by this process, and no committer exists
            // before `Log::open` returns; the zeroing below happens after this slice is gone.
            let bytes = unsafe { std::slice::from_raw_parts(map.as_ptr(), map.len()) };
            let Scan { data_end, bad } = scan(bytes);
            check_tail(&path, bytes, data_end, bad, position)?
        };
        let scan_end = match zero_range {
            ZeroRange::None { data_end } => data_end,
            ZeroRange::Zero { data_end, end, reason } => {
                tracing::warn!(
                    file = %path.display(),
                    offset = data_end,
                    zeroed_bytes = end - data_end,
                    %reason,
                    "log torn tail truncated"
                );
                write_zeros(&file, data_end, end).map_err(io_error(&path))?;
                file.sync_data().map_err(io_error(&path))?;
                data_end
            }
        };
        Ok(Segment {
            index,
            path,
            data_end: scan_end,
            body: Body::Mapped(map),
            trusted: false,
        })
    }

    /// Opens a sealed segment whose end of data the caller vouches for (read from a persisted
    /// index written when the segment was already sealed and checked), without reading its
    /// frames: only the file size and the end-of-data marker at `data_end` are checked. `None`
    /// when those do not hold (the caller then recovers the segment with a full scan).
    pub(super) fn trust(
        path: PathBuf,
        index: u64,
        segment_bytes: u64,
        data_end: u64,
    ) -> Result<Option<Segment>, LogError> {
        let file = OpenOptions::new().read(true).open(&path).map_err(io_error(&path))?;
        let file_bytes = file.metadata().map_err(io_error(&path))?.len();
        if file_bytes != segment_bytes
            || data_end > segment_bytes
            || !data_end.is_multiple_of(frame::ALIGN_BYTES as u64)
        {
            return Ok(None);
        }
        let map = map(&file, segment_bytes).map_err(io_error(&path))?;
        let marker_ok = {
            // SAFETY: as in `recover`: the mapping is `segment_bytes` long and alive for this
            // block, and the file is sealed (nothing writes it while the directory is locked).
            let bytes = unsafe { std::slice::from_raw_parts(map.as_ptr(), map.len()) };
            let end = data_end as usize;
            let marker = &bytes[end..(end + frame::HEADER_BYTES).min(bytes.len())];
            marker.iter().all(|&b| b == 0)
        };
        Ok(marker_ok.then_some(Segment {
            index,
            path,
            data_end,
            body: Body::Mapped(map),
            trusted: true,
        }))
    }

    /// The first LSN of this segment.
    pub(super) fn first_lsn(&self, segment_bytes: u64) -> u64 {
        self.index * segment_bytes
    }

    /// The durable bytes from `offset` on: to `data_end` for a plain segment, to the end of the
    /// block holding `offset` for a packed one (blocks hold whole frames, so a frame starting
    /// at `offset` is always whole). `clock` stamps the block as read (see [`Segment::release`]).
    pub(super) fn durable_bytes(&self, offset: u64, clock: &ReadClock) -> Result<&[u8], LogError> {
        assert!(offset <= self.data_end, "read past the durable data");
        match &self.body {
            Body::Mapped(map) => {
                assert!(self.data_end as usize <= map.len());
                // Widening: offsets below data_end <= map.len() fit a usize.
                let start = offset as usize;
                let len = (self.data_end - offset) as usize;
                // SAFETY: `start + len = data_end <= map.len()`, so the range lies in the
                // mapping, which lives as long as `self`. Bytes below `data_end` are durable and
                // never change while the segment is mapped (the committer writes at or past
                // `data_end`, except that a direct write writes the block it starts in whole,
                // with the same bytes below `data_end`; and `data_end` grows only after a write
                // completed), so they do not change under the returned borrow.
                Ok(unsafe { std::slice::from_raw_parts(map.as_ptr().add(start), len) })
            }
            Body::Packed { packed, unpacked, used } => {
                if offset == self.data_end {
                    return Ok(&[]);
                }
                let block = packed.block_at(offset);
                used[block].set(clock.tick());
                let cell = &unpacked[block];
                if cell.get().is_none() {
                    let bytes = packed.unpack(block)?;
                    clock.held.set(clock.held.get() + 1);
                    let _ = cell.set(bytes);
                }
                let bytes = cell.get().expect("set above");
                Ok(&bytes[(offset - packed.blocks[block].raw_start) as usize..])
            }
        }
    }

    /// Whether this segment is packed.
    pub(super) fn is_packed(&self) -> bool {
        matches!(self.body, Body::Packed { .. })
    }

    /// Blocks decompressed and held, with when each was last read.
    pub(super) fn unpacked(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        let (unpacked, used) = match &self.body {
            Body::Packed { unpacked, used, .. } => (&unpacked[..], &used[..]),
            Body::Mapped(_) => (&[][..], &[][..]),
        };
        unpacked
            .iter()
            .zip(used)
            .enumerate()
            .filter(|(_, (cell, _))| cell.get().is_some())
            .map(|(i, (_, used))| (i, used.get()))
    }

    /// Drops decompressed block `block` (read again from the file when next needed).
    pub(super) fn release(&mut self, block: usize, clock: &ReadClock) {
        if let Body::Packed { unpacked, .. } = &mut self.body {
            if unpacked[block].take().is_some() {
                clock.held.set(clock.held.get() - 1);
            }
        }
    }

    /// A packed segment (a `.log.zst` file), its header and table checked. With `data_end` the
    /// end the caller vouches for (see [`Segment::trust`]), only that is compared; without, every
    /// block is read and every frame checked, as [`Segment::recover`] does for a sealed segment.
    /// Returns the segment and whether the caller's end was wrong.
    pub(super) fn open_packed(
        path: PathBuf,
        index: u64,
        trusted_end: Option<u64>,
    ) -> Result<(Segment, bool), LogError> {
        let packed = Packed::open(&path)?;
        let data_end = packed.data_end;
        let trusted = trusted_end == Some(data_end);
        if !trusted {
            check_packed(&packed)?;
        }
        let blocks = packed.blocks.len();
        let segment = Segment {
            index,
            path,
            data_end,
            body: Body::Packed {
                packed,
                unpacked: (0..blocks).map(|_| OnceCell::new()).collect(),
                used: (0..blocks).map(|_| Cell::new(0)).collect(),
            },
            trusted,
        };
        Ok((segment, trusted_end.is_some() && !trusted))
    }

    /// Checks a trusted segment whole, as recovery checks a sealed one, and stops trusting it;
    /// its end of data is then what the check found.
    pub(super) fn check_trusted(&mut self) -> Result<(), LogError> {
        if !self.trusted {
            return Ok(());
        }
        match &self.body {
            Body::Packed { packed, .. } => check_packed(packed)?,
            Body::Mapped(map) => {
                // SAFETY: as in `recover`: the mapping is the whole segment, sealed, never
                // written again.
                let bytes = unsafe { std::slice::from_raw_parts(map.as_ptr(), map.len()) };
                self.data_end = sealed_data_end(&self.path, bytes)?;
            }
        }
        self.trusted = false;
        Ok(())
    }

    /// This segment, packed: its plain file becomes `packed` (which the caller made from it with
    /// `packed::pack`); the plain file is removed.
    pub(super) fn replace_with(&mut self, packed: Packed) {
        assert_eq!(
            packed.data_end, self.data_end,
            "a packing covers the whole sealed segment"
        );
        let plain = std::mem::replace(&mut self.path, packed.path.clone());
        let blocks = packed.blocks.len();
        self.body = Body::Packed {
            packed,
            unpacked: (0..blocks).map(|_| OnceCell::new()).collect(),
            used: (0..blocks).map(|_| Cell::new(0)).collect(),
        };
        // Packing read and checked every frame.
        self.trusted = false;
        if let Err(error) = std::fs::remove_file(&plain) {
            tracing::warn!(file = %plain.display(), %error, "packed segment's plain file not removed");
        }
    }
}

/// Reads every block of a packed segment and checks its frames: they must end exactly at its
/// `data_end`.
pub(super) fn check_packed(packed: &Packed) -> Result<(), LogError> {
    let (data, error) = packed.unpack_all();
    if let Some(error) = error {
        return Err(error);
    }
    let Scan { data_end, bad } = scan(&data);
    match bad {
        Some(bad) => Err(corrupt(
            &packed.path,
            data_end,
            format!("{bad} (offset within the segment)"),
        )),
        None if data_end != packed.data_end => Err(corrupt(
            &packed.path,
            data_end,
            format!("frames end at {data_end}, the header says {}", packed.data_end),
        )),
        None => Ok(()),
    }
}

/// Where the data of the sealed segment `bytes` (the file at `path`) ends: every frame checked,
/// then every byte after them zero.
fn sealed_data_end(path: &Path, bytes: &[u8]) -> Result<u64, LogError> {
    let Scan { data_end, bad } = scan(bytes);
    if let Some(bad) = bad {
        return Err(corrupt(path, data_end, bad.to_string()));
    }
    if let Some(at) = first_nonzero(&bytes[data_end as usize..]) {
        return Err(corrupt(
            path,
            data_end + at as u64,
            "nonzero byte after the end of data in a sealed segment",
        ));
    }
    Ok(data_end)
}

/// Checks a sealed segment read-only, the way [`Segment::recover`] does (every frame, then
/// zeros to the end), and that its data ends at `data_end`: for checking, off the shard's
/// thread, the segments a start trusted (see [`Segment::trust`]).
pub(super) fn check_sealed(path: &Path, segment_bytes: u64, data_end: u64) -> Result<(), LogError> {
    let packed_path = super::packed::packed_path(path);
    if !path.exists() && packed_path.exists() {
        let packed = Packed::open(&packed_path)?;
        if packed.data_end != data_end {
            return Err(corrupt(
                &packed_path,
                8,
                format!("data ends at {}, where the index says {data_end}", packed.data_end),
            ));
        }
        return check_packed(&packed);
    }
    let file = File::open(path).map_err(io_error(path))?;
    let file_bytes = file.metadata().map_err(io_error(path))?.len();
    if file_bytes != segment_bytes {
        return Err(corrupt(
            path,
            file_bytes.min(segment_bytes),
            format!("segment is {file_bytes} bytes long, not segment_bytes {segment_bytes}"),
        ));
    }
    let map = map(&file, segment_bytes).map_err(io_error(path))?;
    // SAFETY: the mapping is `segment_bytes` long and lives for this function; a sealed segment
    // is never written again.
    let bytes = unsafe { std::slice::from_raw_parts(map.as_ptr(), map.len()) };
    let found = sealed_data_end(path, bytes)?;
    if found != data_end {
        return Err(corrupt(
            path,
            found.min(data_end),
            format!("data ends at {found}, where the index says {data_end}"),
        ));
    }
    Ok(())
}

/// Whether the segment file at `path` holds nothing but zeros: a segment prepared ahead and never
/// used (see `Log::prepare_job`).
pub(super) fn is_unused(path: &Path) -> std::io::Result<bool> {
    let file = File::open(path)?;
    let len = file.metadata()?.len();
    let mut buffer = vec![0u8; 1 << 20];
    let mut at = 0u64;
    while at < len {
        let read = (len - at).min(buffer.len() as u64) as usize;
        file.read_exact_at(&mut buffer[..read], at)?;
        if first_nonzero(&buffer[..read]).is_some() {
            return Ok(false);
        }
        at += read as u64;
    }
    Ok(true)
}

/// What recovery must zero after the valid frames.
enum ZeroRange {
    None { data_end: u64 },
    Zero { data_end: u64, end: u64, reason: String },
}

fn check_tail(
    path: &Path,
    bytes: &[u8],
    data_end: u64,
    bad: Option<frame::FrameError>,
    position: Position,
) -> Result<ZeroRange, LogError> {
    // Widening: offsets within the mapping fit a usize.
    let start = data_end as usize;
    match position {
        Position::Sealed => {
            if let Some(reason) = bad {
                return Err(corrupt(path, data_end, reason.to_string()));
            }
            if let Some(at) = first_nonzero(&bytes[start..]) {
                return Err(corrupt(
                    path,
                    (start + at) as u64,
                    format!("nonzero byte after the end of data ({data_end}) of a sealed segment"),
                ));
            }
            Ok(ZeroRange::None { data_end })
        }
        Position::Last { window_bytes } => {
            let window_end = data_end.saturating_add(window_bytes).min(bytes.len() as u64);
            if let Some(at) = first_nonzero(&bytes[window_end as usize..]) {
                let beyond = window_end + at as u64;
                let what = match &bad {
                    Some(reason) => format!("bad frame ({reason})"),
                    None => "end of data".to_owned(),
                };
                return Err(corrupt(
                    path,
                    data_end,
                    format!(
                        "{what}, yet offset {beyond} holds a nonzero byte, beyond the \
                         {window_bytes}-byte window a torn write can reach: not a torn tail"
                    ),
                ));
            }
            let window = &bytes[start..window_end as usize];
            match (bad, first_nonzero(window)) {
                (None, None) => Ok(ZeroRange::None { data_end }),
                (bad, _) => Ok(ZeroRange::Zero {
                    data_end,
                    end: window_end,
                    reason: match bad {
                        Some(reason) => reason.to_string(),
                        None => "nonzero bytes after the end of data".to_owned(),
                    },
                }),
            }
        }
    }
}

fn write_zeros(file: &File, start: u64, end: u64) -> std::io::Result<()> {
    let zeros = vec![0u8; ZERO_WRITE_BYTES];
    let mut at = start;
    while at < end {
        // Bounded by ZERO_WRITE_BYTES, so the cast is exact.
        let len = (end - at).min(ZERO_WRITE_BYTES as u64) as usize;
        file.write_all_at(&zeros[..len], at)?;
        at += len as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_round_trip_and_sort() {
        assert_eq!(file_name(0), "00000000000000000000.log");
        assert_eq!(file_name(67_108_864), "00000000000067108864.log");
        assert_eq!(file_name(u64::MAX), "18446744073709551615.log");
        for lsn in [0, 4096, 67_108_864, u64::MAX] {
            assert_eq!(parse_file_name(&file_name(lsn)), Some(lsn));
        }
        assert!(file_name(4096) < file_name(67_108_864));
        for bad in [
            "0.log",
            "0000000000000000000a.log",
            "99999999999999999999.log",
            "00000000000000000000.lg",
            "+0000000000000000000.log",
        ] {
            assert_eq!(parse_file_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn first_nonzero_finds_the_first() {
        let mut bytes = vec![0u8; 3 * ZERO_CHUNK_BYTES + 5];
        assert_eq!(first_nonzero(&bytes), None);
        bytes[3 * ZERO_CHUNK_BYTES + 4] = 1;
        assert_eq!(first_nonzero(&bytes), Some(3 * ZERO_CHUNK_BYTES + 4));
        bytes[ZERO_CHUNK_BYTES + 1] = 1;
        assert_eq!(first_nonzero(&bytes), Some(ZERO_CHUNK_BYTES + 1));
    }
}
