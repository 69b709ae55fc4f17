//! The one clock the programs read: session timestamps, first fragments'
//! age and the drop log's token bucket all count in its nanoseconds, which
//! the agent compares against its own reading of the same clock.

use aya_ebpf::helpers::bpf_ktime_get_coarse_ns;

/// `CLOCK_MONOTONIC_COARSE`: a tick's resolution is plenty for timeouts of a
/// second or more, and it is cheaper than the precise clock.
#[inline(always)]
pub fn now() -> u64 {
    // SAFETY: a helper without arguments.
    unsafe { bpf_ktime_get_coarse_ns() }
}
