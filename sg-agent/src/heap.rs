//! The agent's use of the C allocator (glibc's malloc): what it keeps after
//! a large, short-lived read is memory the agent does not hold.
//!
//! glibc serves an allocation above its mmap threshold (128 KiB) with a
//! mapping of its own, returned to the system when freed; but after the
//! first such block is freed it raises the threshold to that block's size,
//! so later large blocks (a fleet store's response of several MiB, its
//! decode buffer) come from the arenas and stay resident after they are
//! freed. The agent fixes the threshold once at start, and trims the heap
//! after reading a whole fleet's policy. `docs/fleet.md` has the figures.

/// The threshold the agent keeps: glibc's default, no longer raised.
const MMAP_THRESHOLD: i32 = 128 * 1024;

/// Fixes the mmap threshold (see the module doc). Call before the first
/// thread starts.
pub fn fix_mmap_threshold() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets the allocator's tunables; called before
    // any other thread exists.
    unsafe {
        if libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) != 1 {
            log::warn!("mallopt(M_MMAP_THRESHOLD) refused: large reads may stay resident");
        }
    }
}

/// Gives the heap's free pages back to the system.
pub fn trim() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}
