//! Every map the programs use, declared once. Names come from `sg_common::maps`.

use aya_ebpf::{macros::map, maps::PerCpuArray};
use sg_common::maps::COUNTERS_LEN;

/// Packet counters. Key: `sg_common::counter::index(dir, counter)`; value: packets.
/// Written by both programs, summed over CPUs by the agent. Per-CPU so the hot
/// path never contends on a cache line; capacity: every slot of both directions.
#[map(name = "SG_COUNTERS_V1")]
pub static SG_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTERS_LEN, 0);
