//! Map names and capacities. Each map is declared once in `sg-ebpf/src/maps.rs`;
//! the names here are what the agent looks them up by. A layout change renames
//! the map (`_V2`), so a pinned map is never read with the wrong layout.

use crate::{
    counter,
    policy::{MAX_NICS, MAX_RANKS, MAX_TABLES},
    reason,
};

pub const COUNTERS: &str = "SG_COUNTERS_V1";
/// One slot per (hook direction, counter): see [`counter::index`].
pub const COUNTERS_LEN: u32 = counter::HOOK_DIRECTIONS * counter::SLOTS;
pub const IFACES: &str = "SG_IFACES_V1";
pub const TABLES: &str = "SG_TABLES_V1";
pub const BITS: &str = "SG_BITS_V1";
/// A table uses at most 257 protocol, 2 × 2,001 interval and 2 no-port entries.
pub const BITS_PER_TABLE: u32 = 4400;
/// As declared; the agent sizes the map for the NICs it is loaded for (a hash
/// map's bucket array costs 16 bytes per entry it could hold, used or not).
pub const BITS_ENTRIES: u32 = MAX_TABLES * BITS_PER_TABLE;
pub const BOUNDS: &str = "SG_BOUNDS_V1";
pub const ADDR4: &str = "SG_ADDR4_V1";
pub const ADDR6: &str = "SG_ADDR6_V1";
/// Distinct prefixes over all tables and both fields.
pub const ADDR_ENTRIES: u32 = 1 << 20;
/// Keyed per NIC and slot (`policy::own_key_nic`) since V2.
pub const OWN: &str = "SG_OWN_V2";
/// A NIC's addresses and extra allowed prefixes, together, at most.
pub const OWN_PER_NIC: u32 = 64;
pub const OWN_ADDR_ENTRIES: u32 = MAX_NICS * 2 * OWN_PER_NIC;
pub const PLAT4: &str = "SG_PLAT4_V1";
pub const PLAT6: &str = "SG_PLAT6_V1";
pub const PLATFORM_ENTRIES: u32 = 1024;
pub const SETTINGS: &str = "SG_SETTINGS_V3";
pub const FRAGS: &str = "SG_FRAGS_V2";
pub const FRAG_ENTRIES: u32 = 65536;
pub const RULE_STATS: &str = "SG_RULESTATS_V1";
pub const RULE_STATS_LEN: u32 = MAX_TABLES * MAX_RANKS;
pub const REASONS: &str = "SG_REASONS_V1";
pub const REASONS_LEN: u32 = MAX_NICS * 2 * reason::SLOTS;
pub const LAST: &str = "SG_LAST_V1";
/// The global (a byte of read-only data, set at load time) holding the
/// [`test_flags`] the programs run with: 0 in the agent.
pub const TEST_FLAGS: &str = "SG_TEST_FLAGS";

/// What tests ask of the programs at load time, beyond what the agent
/// does: each costs every packet something and serves only a test.
pub mod test_flags {
    /// Record every decision whole (NIC, direction, version too) in
    /// [`super::LAST`], for tests that read each packet's decision back.
    pub const RECORD_LAST: u8 = 1;
    /// Parse and count the frames of interfaces no binding names, as the
    /// frames of bound ones are (and not as `counter::NOT_BOUND`), for the
    /// parser's tests, which run frames with no interface at all.
    pub const PARSE_UNBOUND: u8 = 2;
}
pub const SESSIONS: &str = "SG_SESSIONS_V2";
/// Sessions the table holds unless the agent is told otherwise (at load time).
pub const SESSION_ENTRIES: u32 = 262_144;
pub const SESSION_EVENTS: &str = "SG_SESSION_EVENTS_V1";
pub const SCRATCH: &str = "SG_SCRATCH_V3";
/// Which store's state the data plane enforces (`crate::agent::AgentRecord`).
pub const AGENT: &str = "SG_AGENT_V1";

/// Program names as the ELF object exports them.
pub const PROG_XDP: &str = "sg_xdp";
pub const PROG_TC_EGRESS: &str = "sg_tc_egress";
/// The receive side on TC instead of XDP (attach mode `tc`).
pub const PROG_TC_INGRESS: &str = "sg_tc_ingress";
/// TC ingress beside an XDP receive side: drops what XDP cannot see, frames
/// with a VLAN tag beside their bytes leaving an anti-spoofed NIC.
pub const PROG_TC_TAG_GUARD: &str = "sg_tc_tag_guard";
/// An XDP program that only passes: the benchmark's floor, never attached.
pub const PROG_BENCH_FLOOR: &str = "sg_bench_floor";
/// A TC program that tags every packet out of band (VLAN 100), for tests;
/// never attached by the agent.
pub const PROG_TEST_VLAN_PUSH: &str = "sg_test_vlan_push";

/// The drop log (`crate::droplog`): ring buffer of [`crate::droplog::DropRecord`]s.
pub const DROPLOG: &str = "SG_DROPLOG_V1";
/// Its configuration, one [`crate::droplog::DropLogConfig`].
pub const DROPLOG_CFG: &str = "SG_DROPLOG_CFG_V1";
/// Each CPU's token bucket, one [`crate::droplog::DropLogBucket`].
pub const DROPLOG_BUCKET: &str = "SG_DROPLOG_BUCKET_V1";
/// Its counters, per CPU, indexed by `crate::droplog::stat`.
pub const DROPLOG_STATS: &str = "SG_DROPLOG_STATS_V1";
