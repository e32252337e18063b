//! Which pages of a linear memory a message wrote, asked of the kernel, so that undoing a
//! failed message costs the pages it touched rather than the size of the memory.
//!
//! The memory is registered with a userfaultfd in asynchronous write-protect mode
//! (`UFFD_FEATURE_WP_ASYNC`, Linux 6.7): every page is write-protected, and the first write to a
//! page lifts the protection in the kernel itself (no fault reaches this process, nothing
//! blocks) and marks the page written. `PAGEMAP_SCAN` on `/proc/self/pagemap` then lists the
//! written ranges and protects them again in one call. The scan walks the page tables of the
//! range (about 4 ns a page: ~60 µs for 64 MiB here), and its answer is the pages written.
//!
//! Where the kernel lacks either (or forbids userfaultfd), [`DirtyTracker::new`] fails and the
//! caller rolls back the slower way. The constants are the kernel's UAPI (`linux/userfaultfd.h`,
//! `linux/fs.h`), which this crate's libc does not carry yet.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const UFFD_API: u64 = 0xAA;
const UFFD_USER_MODE_ONLY: libc::c_int = 1;
const UFFD_FEATURE_WP_HUGETLBFS_SHMEM: u64 = 1 << 12;
const UFFD_FEATURE_WP_UNPOPULATED: u64 = 1 << 13;
const UFFD_FEATURE_WP_ASYNC: u64 = 1 << 15;
const UFFDIO_REGISTER_MODE_WP: u64 = 2;
const UFFDIO_WRITEPROTECT_MODE_WP: u64 = 1;

/// `_IOWR(type, nr, size)`.
const fn iowr(kind: u64, nr: u64, size: u64) -> u64 {
    (3 << 30) | (size << 16) | (kind << 8) | nr
}
const fn ior(kind: u64, nr: u64, size: u64) -> u64 {
    (2 << 30) | (size << 16) | (kind << 8) | nr
}

const UFFDIO_API: u64 = iowr(0xAA, 0x3F, 24);
const UFFDIO_REGISTER: u64 = iowr(0xAA, 0x00, 32);
const UFFDIO_UNREGISTER: u64 = ior(0xAA, 0x01, 16);
const UFFDIO_WRITEPROTECT: u64 = iowr(0xAA, 0x06, 24);
const PAGEMAP_SCAN: u64 = iowr(b'f' as u64, 16, 96);
const PM_SCAN_WP_MATCHING: u64 = 1 << 0;
const PM_SCAN_CHECK_WPASYNC: u64 = 1 << 1;
const PAGE_IS_WRITTEN: u64 = 1 << 1;

#[repr(C)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

#[repr(C)]
struct UffdioRange {
    start: u64,
    len: u64,
}

#[repr(C)]
struct UffdioRegister {
    range: UffdioRange,
    mode: u64,
    ioctls: u64,
}

#[repr(C)]
struct UffdioWriteprotect {
    range: UffdioRange,
    mode: u64,
}

#[repr(C)]
struct PmScanArg {
    size: u64,
    flags: u64,
    start: u64,
    end: u64,
    walk_end: u64,
    vec: u64,
    vec_len: u64,
    max_pages: u64,
    category_inverted: u64,
    category_mask: u64,
    category_anyof_mask: u64,
    return_mask: u64,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct PageRegion {
    start: u64,
    end: u64,
    categories: u64,
}

/// The host's page size, which the kernel tracks writes by.
pub const PAGE_BYTES: usize = 4096;

/// A userfaultfd and `/proc/self/pagemap`, for the memories of one thread's instances.
pub struct DirtyTracker {
    uffd: OwnedFd,
    pagemap: File,
}

fn ioctl<T>(fd: &impl AsRawFd, request: u64, arg: &mut T) -> std::io::Result<libc::c_int> {
    // SAFETY: `arg` is the `repr(C)` struct the request takes, valid for the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), request as _, arg as *mut T) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(rc)
}

impl DirtyTracker {
    /// A tracker, if this kernel can track writes this way (checked on a scratch mapping).
    pub fn new() -> std::io::Result<DirtyTracker> {
        // SAFETY: the syscall takes flags and returns a new descriptor or -1.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_userfaultfd,
                libc::O_CLOEXEC | libc::O_NONBLOCK | UFFD_USER_MODE_ONLY,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a descriptor the kernel just gave us, owned from here on.
        let uffd = unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) };
        let wanted = UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED | UFFD_FEATURE_WP_HUGETLBFS_SHMEM;
        let mut api = UffdioApi {
            api: UFFD_API,
            features: wanted,
            ioctls: 0,
        };
        ioctl(&uffd, UFFDIO_API, &mut api)?;
        if api.features & wanted != wanted {
            return Err(std::io::Error::other(format!(
                "userfaultfd lacks asynchronous write protection (features {:#x})",
                api.features
            )));
        }
        let pagemap = File::open("/proc/self/pagemap")?;
        let tracker = DirtyTracker { uffd, pagemap };
        tracker.probe()?;
        Ok(tracker)
    }

    /// Tracks a scratch page through one write: PAGEMAP_SCAN must exist and report it.
    fn probe(&self) -> std::io::Result<()> {
        let len = 4 * PAGE_BYTES;
        // SAFETY: a fresh private anonymous mapping, unmapped below.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let outcome = (|| {
            self.register(base as usize, len)?;
            // SAFETY: inside the mapping made above.
            unsafe { *(base as *mut u8).add(PAGE_BYTES + 1) = 1 };
            let mut written = Vec::new();
            self.take_written(base as usize, len, &mut written)?;
            self.unregister(base as usize, len)?;
            if written == [(PAGE_BYTES, 2 * PAGE_BYTES)] {
                Ok(())
            } else {
                Err(std::io::Error::other(format!("the write probe reported {written:?}")))
            }
        })();
        // SAFETY: the mapping made above, no longer used.
        unsafe { libc::munmap(base, len) };
        outcome
    }

    /// Starts tracking `[base, base + len)` (page-aligned): every page write-protected.
    pub fn register(&self, base: usize, len: usize) -> std::io::Result<()> {
        let mut register = UffdioRegister {
            range: UffdioRange {
                start: base as u64,
                len: len as u64,
            },
            mode: UFFDIO_REGISTER_MODE_WP,
            ioctls: 0,
        };
        ioctl(&self.uffd, UFFDIO_REGISTER, &mut register)?;
        let mut protect = UffdioWriteprotect {
            range: UffdioRange {
                start: base as u64,
                len: len as u64,
            },
            mode: UFFDIO_WRITEPROTECT_MODE_WP,
        };
        if let Err(error) = ioctl(&self.uffd, UFFDIO_WRITEPROTECT, &mut protect) {
            let _ = self.unregister(base, len);
            return Err(error);
        }
        Ok(())
    }

    /// Stops tracking the range (before its memory is given back or mapped anew).
    pub fn unregister(&self, base: usize, len: usize) -> std::io::Result<()> {
        let mut range = UffdioRange {
            start: base as u64,
            len: len as u64,
        };
        ioctl(&self.uffd, UFFDIO_UNREGISTER, &mut range).map(|_| ())
    }

    /// Appends to `out` the ranges of `[base, base + len)` written since the last call (as
    /// offsets from `base`, page-aligned, in order) and protects them again.
    pub fn take_written(&self, base: usize, len: usize, out: &mut Vec<(usize, usize)>) -> std::io::Result<()> {
        self.scan(base, len, true, out)
    }

    /// [`DirtyTracker::take_written`] without protecting them again (see
    /// [`DirtyTracker::protect`]).
    pub fn list_written(&self, base: usize, len: usize, out: &mut Vec<(usize, usize)>) -> std::io::Result<()> {
        self.scan(base, len, false, out)
    }

    /// Write-protects the ranges (offsets from `base`): the next write to them is reported.
    pub fn protect(&self, base: usize, ranges: &[(usize, usize)]) -> std::io::Result<()> {
        for &(from, to) in ranges {
            let mut protect = UffdioWriteprotect {
                range: UffdioRange {
                    start: (base + from) as u64,
                    len: (to - from) as u64,
                },
                mode: UFFDIO_WRITEPROTECT_MODE_WP,
            };
            ioctl(&self.uffd, UFFDIO_WRITEPROTECT, &mut protect)?;
        }
        Ok(())
    }

    fn scan(&self, base: usize, len: usize, protect: bool, out: &mut Vec<(usize, usize)>) -> std::io::Result<()> {
        let mut regions = [PageRegion::default(); 64];
        let end = (base + len) as u64;
        let mut start = base as u64;
        while start < end {
            let mut arg = PmScanArg {
                size: std::mem::size_of::<PmScanArg>() as u64,
                flags: if protect {
                    PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC
                } else {
                    PM_SCAN_CHECK_WPASYNC
                },
                start,
                end,
                walk_end: 0,
                vec: regions.as_mut_ptr() as u64,
                vec_len: regions.len() as u64,
                max_pages: 0,
                category_inverted: 0,
                category_mask: PAGE_IS_WRITTEN,
                category_anyof_mask: 0,
                return_mask: PAGE_IS_WRITTEN,
            };
            let found = ioctl(&self.pagemap, PAGEMAP_SCAN, &mut arg)? as usize;
            for region in &regions[..found.min(regions.len())] {
                let (from, to) = (
                    (region.start - base as u64) as usize,
                    (region.end - base as u64) as usize,
                );
                match out.last_mut() {
                    Some(last) if last.1 == from => last.1 = to,
                    _ => out.push((from, to)),
                }
            }
            if arg.walk_end <= start {
                break;
            }
            start = arg.walk_end;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_reported_once_per_scan_where_the_kernel_tracks_them() {
        let Ok(tracker) = DirtyTracker::new() else {
            eprintln!("this kernel cannot track writes asynchronously: nothing to test");
            return;
        };
        let len = 256 * PAGE_BYTES;
        let mut memory = vec![0u8; len + PAGE_BYTES];
        let base = (memory.as_mut_ptr() as usize).next_multiple_of(PAGE_BYTES);
        let offset = base - memory.as_ptr() as usize;
        tracker.register(base, len).unwrap();
        memory[offset + 3] = 1;
        memory[offset + 7 * PAGE_BYTES] = 1;
        memory[offset + 8 * PAGE_BYTES + 5] = 1;
        memory[offset + len - 1] = 1;
        let mut written = Vec::new();
        tracker.take_written(base, len, &mut written).unwrap();
        assert_eq!(
            written,
            vec![
                (0, PAGE_BYTES),
                (7 * PAGE_BYTES, 9 * PAGE_BYTES),
                (len - PAGE_BYTES, len)
            ]
        );
        written.clear();
        tracker.take_written(base, len, &mut written).unwrap();
        assert!(written.is_empty(), "protected again: {written:?}");
        memory[offset + 100 * PAGE_BYTES] = 2;
        tracker.take_written(base, len, &mut written).unwrap();
        assert_eq!(written, vec![(100 * PAGE_BYTES, 101 * PAGE_BYTES)]);
        // Listed without protecting: reported again until protected.
        written.clear();
        memory[offset + 5 * PAGE_BYTES] = 3;
        tracker.list_written(base, len, &mut written).unwrap();
        assert_eq!(written, vec![(5 * PAGE_BYTES, 6 * PAGE_BYTES)]);
        memory[offset + 5 * PAGE_BYTES] = 4;
        let mut again = Vec::new();
        tracker.list_written(base, len, &mut again).unwrap();
        assert_eq!(again, written);
        tracker.protect(base, &written).unwrap();
        again.clear();
        tracker.list_written(base, len, &mut again).unwrap();
        assert!(again.is_empty(), "{again:?}");
        tracker.unregister(base, len).unwrap();
    }
}
