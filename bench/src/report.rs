//! What the parts of the benchmark share in their tables.

/// How a target's row reads: `met` or `missed`.
pub fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "missed" }
}
