//! Settings of mimalloc, the allocator of every binary that runs a node (`hewitt`, the tests'
//! copy of it, `hewitt-perf`).
//!
//! **Freed memory is never purged** (returned to the OS). mimalloc purges free pages a while
//! after they are freed (`madvise`), which shoots down TLB entries on every core running the
//! process and makes the pages fault in again when reused: in `hewitt-perf` runs of the `many`
//! scenario on two shards it stalled acknowledgements for up to 450 ms: the p99 of the 50 %
//! open loop was 32 to 313 ms in five runs with purging (`MIMALLOC_PURGE_DELAY=999`, which
//! this module leaves alone), 9 to 13 ms in five without. Resident memory then stays at its
//! high-water mark, which the node's bounded queues and pools cap.

use std::ffi::{c_int, c_long};

// Links mimalloc into every binary that uses this module, its tests included.
extern crate mimalloc as _;

extern "C" {
    fn mi_option_get(option: c_int) -> c_long;
    fn mi_option_set(option: c_int, value: c_long);
}

/// `mi_option_purge_delay` in the mimalloc (v3) that `libmimalloc-sys` builds.
const PURGE_DELAY: c_int = 15;
/// That option's default, which confirms the index above.
const PURGE_DELAY_DEFAULT_MS: c_long = 1000;

/// Turns purging off; `Err` (and nothing set) if the linked mimalloc does not number its
/// options as expected.
pub fn never_purge() -> Result<(), String> {
    // SAFETY: plain calls into the linked mimalloc; both take and return integers only.
    unsafe {
        let delay = mi_option_get(PURGE_DELAY);
        if delay != PURGE_DELAY_DEFAULT_MS && delay != -1 {
            return Err(format!(
                "mimalloc option {PURGE_DELAY} reads {delay}, not the purge delay's default ({PURGE_DELAY_DEFAULT_MS} ms): \
                 left as it is"
            ));
        }
        mi_option_set(PURGE_DELAY, -1);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn purging_turns_off() {
        super::never_purge().expect("the purge delay found at its index");
        // SAFETY: as in `never_purge`.
        assert_eq!(unsafe { super::mi_option_get(super::PURGE_DELAY) }, -1);
    }
}
