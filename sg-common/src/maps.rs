//! Map names and capacities. Each map is declared once in `sg-ebpf/src/maps.rs`;
//! the names here are what the agent looks them up by.

use crate::counter;

/// Per-CPU array of `u64` packet counters, indexed by [`counter::index`].
/// Written by both programs, read (summed over CPUs) by the agent.
pub const COUNTERS: &str = "SG_COUNTERS_V1";
/// One slot per (hook direction, counter): see [`counter::index`].
pub const COUNTERS_LEN: u32 = counter::HOOK_DIRECTIONS * counter::SLOTS;

/// Program names as the ELF object exports them.
pub const PROG_XDP: &str = "sg_xdp";
pub const PROG_TC_EGRESS: &str = "sg_tc_egress";
