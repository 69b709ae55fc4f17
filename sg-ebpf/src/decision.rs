//! A decision as every step makes it: verdict, reason and, for the rules,
//! the deciding rank. Used by every step, it depends on nothing in this
//! crate, so no step needs another's module to say what it decided.

use sg_common::policy::{NO_RANK, verdict};

#[derive(Clone, Copy)]
pub struct Decision {
    /// [`verdict::ACCEPT`] or [`verdict::DROP`].
    pub verdict: u32,
    /// Which step decided (`sg_common::reason`).
    pub reason: u32,
    /// The deciding rank, or [`NO_RANK`] when no rule decided.
    pub rank: u32,
}

/// An accept by a step other than the rules.
#[inline(always)]
pub const fn accept(reason: u32) -> Decision {
    Decision {
        verdict: verdict::ACCEPT,
        reason,
        rank: NO_RANK,
    }
}

/// A drop by a step other than the rules.
#[inline(always)]
pub const fn drop(reason: u32) -> Decision {
    Decision {
        verdict: verdict::DROP,
        reason,
        rank: NO_RANK,
    }
}
