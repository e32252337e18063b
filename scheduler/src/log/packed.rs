//! Sealed segments compressed with zstd (`<first lsn>.log.zst`), read back block by block.
//!
//! A sealed segment never changes, so it can be kept compressed. It is cut into blocks of whole
//! frames (about [`BLOCK_BYTES`] each; a longer frame is a block of its own), each compressed as
//! one zstd frame, so that reading a record decompresses one block, not the segment.
//!
//! # Format, version 1
//!
//! All integers little-endian; checksums are CRC-32C.
//!
//! ```text
//! offset  size  field
//!      0     8  magic "HWLZST" 0x00 0x01
//!      8     8  data_end: where the segment's data ends (its frames are bytes 0..data_end)
//!     16     4  block count (n)
//!     20     4  CRC of the block table
//!     24     8  reserved, zero
//!     32  32*n  block table, per block: raw start u64 | raw length u32 | CRC of the compressed
//!               bytes u32 | compressed offset u64 | compressed length u32 | reserved u32
//!      …        the compressed blocks
//! ```
//!
//! The blocks cover `0..data_end` in order without gaps, each starting at a frame; every byte
//! of the segment after `data_end` is zero, as in the plain segment. A packed file is written to
//! `<name>.log.zst.tmp`, synced, renamed into place and the directory synced; only then is the
//! plain segment removed. A directory holding both names keeps the plain one (the packing did
//! not finish) and removes the other.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::error::{corrupt, io_error};
use super::frame;
use super::LogError;

/// About the raw bytes in one block.
pub(super) const BLOCK_BYTES: usize = 1 << 20;
const MAGIC: &[u8; 8] = b"HWLZST\x00\x01";
const HEADER_BYTES: usize = 32;
const ENTRY_BYTES: usize = 32;
/// The suffix of a packed segment's name.
pub(super) const SUFFIX: &str = ".zst";

/// One block of a packed segment.
#[derive(Clone, Copy, Debug)]
pub(super) struct Block {
    pub(super) raw_start: u64,
    pub(super) raw_len: u32,
    crc: u32,
    offset: u64,
    len: u32,
}

/// A packed segment, opened: its table read and checked.
pub(super) struct Packed {
    pub(super) path: PathBuf,
    file: File,
    pub(super) data_end: u64,
    pub(super) blocks: Vec<Block>,
}

/// The packed name of a plain segment path.
pub(super) fn packed_path(plain: &Path) -> PathBuf {
    let mut name = plain.as_os_str().to_owned();
    name.push(SUFFIX);
    PathBuf::from(name)
}

/// Packs the first `data_end` bytes of the sealed segment `bytes` (its frames) into
/// `<plain>.zst` at zstd `level`: every frame is checked on the way (a damaged one stops the
/// packing with its offset), the file is synced and renamed into place, and the directory
/// synced. The plain segment is left for the caller to remove.
pub(super) fn pack(plain: &Path, bytes: &[u8], data_end: u64, level: i32) -> Result<Packed, LogError> {
    let data = &bytes[..data_end as usize];
    if let Some(at) = bytes[data_end as usize..].iter().position(|&b| b != 0) {
        return Err(corrupt(
            plain,
            data_end + at as u64,
            "nonzero byte after the end of data of a sealed segment",
        ));
    }
    // Blocks of whole frames, each checked.
    let mut cuts = vec![0usize];
    let mut at = 0usize;
    while at < data.len() {
        match frame::decode(&data[at..]) {
            Ok(Some(f)) => {
                // A block is whole frames up to BLOCK_BYTES, or one longer frame alone.
                let start = *cuts.last().expect("starts with 0");
                if at > start && at - start + f.frame_bytes > BLOCK_BYTES {
                    cuts.push(at);
                }
                at += f.frame_bytes;
            }
            Ok(None) => return Err(corrupt(plain, at as u64, "end of data before the sealed end")),
            Err(error) => return Err(corrupt(plain, at as u64, error.to_string())),
        }
    }
    if *cuts.last().expect("starts with 0") != data.len() {
        cuts.push(data.len());
    }
    let mut compressor = zstd::bulk::Compressor::new(level).map_err(io_error(plain))?;
    let mut table = Vec::new();
    let mut body = Vec::new();
    let count = cuts.len() - 1;
    let body_start = (HEADER_BYTES + ENTRY_BYTES * count) as u64;
    for window in cuts.windows(2) {
        let raw = &data[window[0]..window[1]];
        let packed = compressor.compress(raw).map_err(io_error(plain))?;
        let too_long = |what: &str| corrupt(plain, window[0] as u64, format!("block {what} exceeds 4 GiB"));
        let block = Block {
            raw_start: window[0] as u64,
            raw_len: u32::try_from(raw.len()).map_err(|_| too_long("raw length"))?,
            crc: crc32c::crc32c(&packed),
            offset: body_start + body.len() as u64,
            len: u32::try_from(packed.len()).map_err(|_| too_long("compressed length"))?,
        };
        table.extend_from_slice(&block.raw_start.to_le_bytes());
        table.extend_from_slice(&block.raw_len.to_le_bytes());
        table.extend_from_slice(&block.crc.to_le_bytes());
        table.extend_from_slice(&block.offset.to_le_bytes());
        table.extend_from_slice(&block.len.to_le_bytes());
        table.extend_from_slice(&[0; 4]);
        body.extend_from_slice(&packed);
    }
    let mut header = Vec::with_capacity(HEADER_BYTES);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&data_end.to_le_bytes());
    header.extend_from_slice(&(count as u32).to_le_bytes());
    header.extend_from_slice(&crc32c::crc32c(&table).to_le_bytes());
    header.extend_from_slice(&[0; 8]);
    let target = packed_path(plain);
    let mut temp = target.as_os_str().to_owned();
    temp.push(".tmp");
    let temp = PathBuf::from(temp);
    {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temp)
            .map_err(io_error(&temp))?;
        file.write_all(&header).map_err(io_error(&temp))?;
        file.write_all(&table).map_err(io_error(&temp))?;
        file.write_all(&body).map_err(io_error(&temp))?;
        file.sync_all().map_err(io_error(&temp))?;
    }
    // Read back before the caller removes the plain file: every block must give back the
    // frames it was made from.
    let written = Packed::open(&temp).and_then(|p| {
        let (back, error) = p.unpack_all();
        match error {
            Some(error) => Err(error),
            None if back != data => Err(corrupt(&temp, 0, "reads back different bytes")),
            None => Ok(()),
        }
    });
    if let Err(error) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(error);
    }
    std::fs::rename(&temp, &target).map_err(io_error(&target))?;
    let dir = target.parent().unwrap_or(Path::new("."));
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_error(dir))?;
    Packed::open(&target)
}

impl Packed {
    /// Opens a packed segment and checks its header and block table (not the blocks: each is
    /// checked when it is read).
    pub(super) fn open(path: &Path) -> Result<Packed, LogError> {
        let file = File::open(path).map_err(io_error(path))?;
        let file_bytes = file.metadata().map_err(io_error(path))?.len();
        let mut header = [0u8; HEADER_BYTES];
        if file_bytes < HEADER_BYTES as u64 {
            return Err(corrupt(path, 0, format!("{file_bytes} bytes: shorter than the header")));
        }
        file.read_exact_at(&mut header, 0).map_err(io_error(path))?;
        if &header[..8] != MAGIC {
            return Err(corrupt(path, 0, "not a packed segment (magic)"));
        }
        let data_end = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
        let count = u32::from_le_bytes(header[16..20].try_into().expect("4 bytes")) as usize;
        let table_crc = u32::from_le_bytes(header[20..24].try_into().expect("4 bytes"));
        let table_bytes = count as u64 * ENTRY_BYTES as u64;
        if HEADER_BYTES as u64 + table_bytes > file_bytes {
            return Err(corrupt(path, 16, format!("{count} blocks do not fit the file")));
        }
        let mut table = vec![0u8; table_bytes as usize];
        file.read_exact_at(&mut table, HEADER_BYTES as u64)
            .map_err(io_error(path))?;
        if crc32c::crc32c(&table) != table_crc {
            return Err(corrupt(path, HEADER_BYTES as u64, "block table checksum mismatch"));
        }
        let mut blocks = Vec::with_capacity(count);
        let mut expected_start = 0u64;
        for (i, entry) in table.chunks_exact(ENTRY_BYTES).enumerate() {
            let u64_at = |at: usize| u64::from_le_bytes(entry[at..at + 8].try_into().expect("8 bytes"));
            let u32_at = |at: usize| u32::from_le_bytes(entry[at..at + 4].try_into().expect("4 bytes"));
            let block = Block {
                raw_start: u64_at(0),
                raw_len: u32_at(8),
                crc: u32_at(12),
                offset: u64_at(16),
                len: u32_at(24),
            };
            let entry_at = (HEADER_BYTES + i * ENTRY_BYTES) as u64;
            if block.raw_start != expected_start
                || block.raw_len == 0
                || block.offset.saturating_add(u64::from(block.len)) > file_bytes
            {
                return Err(corrupt(path, entry_at, format!("block {i} is out of place")));
            }
            expected_start += u64::from(block.raw_len);
            blocks.push(block);
        }
        if expected_start != data_end {
            return Err(corrupt(
                path,
                8,
                format!("blocks cover {expected_start} bytes, data_end is {data_end}"),
            ));
        }
        Ok(Packed {
            path: path.to_owned(),
            file,
            data_end,
            blocks,
        })
    }

    /// The block holding raw offset `offset` (below `data_end`).
    pub(super) fn block_at(&self, offset: u64) -> usize {
        self.blocks.partition_point(|b| b.raw_start <= offset) - 1
    }

    /// Reads, checks and decompresses block `i`.
    pub(super) fn unpack(&self, i: usize) -> Result<Box<[u8]>, LogError> {
        let block = self.blocks[i];
        let mut packed = vec![0u8; block.len as usize];
        self.file
            .read_exact_at(&mut packed, block.offset)
            .map_err(io_error(&self.path))?;
        if crc32c::crc32c(&packed) != block.crc {
            return Err(corrupt(
                &self.path,
                block.offset,
                format!("block {i} (segment offsets {}..): checksum mismatch", block.raw_start),
            ));
        }
        let raw = zstd::bulk::decompress(&packed, block.raw_len as usize)
            .map_err(|e| corrupt(&self.path, block.offset, format!("block {i}: {e}")))?;
        if raw.len() != block.raw_len as usize {
            return Err(corrupt(
                &self.path,
                block.offset,
                format!("block {i} decompresses to {} bytes, not {}", raw.len(), block.raw_len),
            ));
        }
        Ok(raw.into_boxed_slice())
    }

    /// The whole segment's data (`0..data_end`), unpacked block by block; on a bad block, the
    /// blocks before it and the error.
    pub(super) fn unpack_all(&self) -> (Vec<u8>, Option<LogError>) {
        let mut data = Vec::with_capacity(self.data_end as usize);
        for i in 0..self.blocks.len() {
            match self.unpack(i) {
                Ok(raw) => data.extend_from_slice(&raw),
                Err(error) => return (data, Some(error)),
            }
        }
        (data, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(count: usize, payload: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for i in 0..count {
            let body: Vec<u8> = (0..payload).map(|b| ((b + i) % 7) as u8).collect();
            frame::encode(1, &body, &mut out);
        }
        out
    }

    #[test]
    fn packs_in_blocks_of_whole_frames_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("00000000000000000000.log");
        let data = frames(3000, 1000);
        std::fs::write(&plain, &data).unwrap();
        let packed = pack(&plain, &data, data.len() as u64, 3).unwrap();
        assert!(packed.blocks.len() >= 2, "{} blocks", packed.blocks.len());
        let size = std::fs::metadata(packed_path(&plain)).unwrap().len();
        assert!(size < data.len() as u64 / 4, "compressed to {size}");
        let reopened = Packed::open(&packed_path(&plain)).unwrap();
        let (all, error) = reopened.unpack_all();
        assert!(error.is_none());
        assert_eq!(all, data);
        // Each block starts at a frame.
        for block in &reopened.blocks {
            let raw = reopened.unpack(reopened.block_at(block.raw_start)).unwrap();
            assert!(frame::decode(&raw).unwrap().is_some());
        }
        assert_eq!(reopened.block_at(data.len() as u64 - 1), reopened.blocks.len() - 1);

        // A flipped byte in a block is caught, with the packed file's offset.
        let mut bytes = std::fs::read(packed_path(&plain)).unwrap();
        let second = reopened.blocks[1];
        bytes[second.offset as usize + 10] ^= 4;
        std::fs::write(packed_path(&plain), &bytes).unwrap();
        let damaged = Packed::open(&packed_path(&plain)).unwrap();
        let (prefix, error) = damaged.unpack_all();
        assert_eq!(prefix.len(), second.raw_start as usize);
        let error = error.unwrap().to_string();
        assert!(error.contains(&format!("offset {}", second.offset)), "{error}");
    }

    #[test]
    fn a_damaged_frame_stops_the_packing() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("00000000000000000000.log");
        let mut data = frames(100, 500);
        data[5000] ^= 1;
        let error = pack(&plain, &data, data.len() as u64, 3).err().unwrap().to_string();
        assert!(error.contains("checksum"), "{error}");
        assert!(!packed_path(&plain).exists());
    }
}
