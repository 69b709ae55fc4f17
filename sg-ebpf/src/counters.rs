//! Counting what the parser found.

use sg_common::counter::{self, NOT_BOUND, PACKETS};

use crate::{maps::SG_COUNTERS, parse::Summary};

#[inline(always)]
fn bump(dir: u32, which: u32) {
    if let Some(slot) = SG_COUNTERS.get_ptr_mut(counter::index(dir, which)) {
        // SAFETY: a per-CPU slot is only touched by this CPU, and BPF programs
        // are not preempted mid-run on it.
        unsafe { *slot += 1 };
    }
}

/// Adds one packet to `PACKETS`, its class, its `BAD_*` reason and each marker.
#[inline(always)]
pub fn record(dir: u32, s: &Summary) {
    bump(dir, PACKETS);
    bump(dir, s.class);
    if s.bad != 0 {
        bump(dir, s.bad);
    }
    let mut markers = s.markers;
    // At most a handful of markers are set; the loop is bounded by the width.
    for bit in 0..32u32 {
        if markers == 0 {
            break;
        }
        if markers & 1 != 0 {
            bump(dir, bit);
        }
        markers >>= 1;
    }
}

/// One packet passed unparsed: its interface is not bound.
#[inline(always)]
pub fn not_bound(dir: u32) {
    bump(dir, NOT_BOUND);
}
