//! Every map the programs use, declared once. Names (and their `_V1` layout
//! versions) are the agent's too: `sg_common::maps`. Layouts: `sg_common::policy`.

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
};
use sg_common::{
    conntrack::{SessionEntry, SessionKey},
    droplog::{DropLogBucket, DropLogConfig, RING_BYTES, stat},
    maps::{
        ADDR_ENTRIES, BITS_ENTRIES, COUNTERS_LEN, FRAG_ENTRIES, OWN_ADDR_ENTRIES, PLATFORM_ENTRIES,
        REASONS_LEN, RULE_STATS_LEN, SESSION_ENTRIES,
    },
    policy::{
        AddrKeyV4, AddrKeyV6, BitsKey, FragFirst, FragKey, IfaceConfig, LastDecision, MAX_NICS,
        MAX_TABLES, OwnAddrKey, PortBounds, RuleBits, RuleStats, Settings, TableMeta,
    },
};

/// Packet counters by hook and parse class. Key: `counter::index(hook, counter)`.
/// Written by both programs; per-CPU so the hot path never shares a line.
#[map(name = "SG_COUNTERS_V1")]
pub static SG_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTERS_LEN, 0);

/// Interface → NIC binding and the slot in force. Written by the agent; a
/// whole-value hash update is atomic for readers, which makes it the switch.
#[map(name = "SG_IFACES_V1")]
pub static SG_IFACES: HashMap<u32, IfaceConfig> = HashMap::with_max_entries(MAX_NICS, 0);

/// Table headers, by table id (`table_id`). Only the inactive slot's entry is ever written.
#[map(name = "SG_TABLES_V1")]
pub static SG_TABLES: Array<TableMeta> = Array::with_max_entries(MAX_TABLES, 0);

/// Rule bits for protocols and port intervals (see `bits_kind`). Allocated as
/// used: a table needs a few hundred to a few thousand entries.
#[map(name = "SG_BITS_V1")]
pub static SG_BITS: HashMap<BitsKey, RuleBits> =
    HashMap::with_max_entries(BITS_ENTRIES, BPF_F_NO_PREALLOC);

/// Elementary port interval bounds, key `table * 2 + field`.
#[map(name = "SG_BOUNDS_V1")]
pub static SG_BOUNDS: HashMap<u32, PortBounds> =
    HashMap::with_max_entries(MAX_TABLES * 2, BPF_F_NO_PREALLOC);

/// Peer and local address → rule bits, IPv4. Every prefix's bits include its
/// ancestors', so the longest match alone is the answer.
#[map(name = "SG_ADDR4_V1")]
pub static SG_ADDR4: LpmTrie<AddrKeyV4, RuleBits> = LpmTrie::with_max_entries(ADDR_ENTRIES, 0);

/// … IPv6.
#[map(name = "SG_ADDR6_V1")]
pub static SG_ADDR6: LpmTrie<AddrKeyV6, RuleBits> = LpmTrie::with_max_entries(ADDR_ENTRIES, 0);

/// A NIC's own addresses and extra allowed prefixes, for anti-spoofing, per
/// NIC and slot (`own_key_nic`): written into the inactive slot with the
/// tables, so they switch together.
#[map(name = "SG_OWN_V2")]
pub static SG_OWN: LpmTrie<OwnAddrKey, u32> = LpmTrie::with_max_entries(OWN_ADDR_ENTRIES, 0);

/// Platform addresses (always allowed), IPv4 and IPv6.
#[map(name = "SG_PLAT4_V1")]
pub static SG_PLAT4: LpmTrie<[u8; 4], u32> = LpmTrie::with_max_entries(PLATFORM_ENTRIES, 0);
#[map(name = "SG_PLAT6_V1")]
pub static SG_PLAT6: LpmTrie<[u8; 16], u32> = LpmTrie::with_max_entries(PLATFORM_ENTRIES, 0);

/// Agent settings, index 0.
#[map(name = "SG_SETTINGS_V3")]
pub static SG_SETTINGS: Array<Settings> = Array::with_max_entries(1, 0);

/// First fragments: verdict, time seen and the header fields a decision
/// reads, for the later fragments of their datagram (which have the first
/// decided again). Written by both programs. LRU: a datagram whose entry was
/// evicted has its later fragments dropped.
#[map(name = "SG_FRAGS_V2")]
pub static SG_FRAGS: LruHashMap<FragKey, FragFirst> = LruHashMap::with_max_entries(FRAG_ENTRIES, 0);

/// Per-rule hits, index `table * MAX_RANKS + rank`.
#[map(name = "SG_RULESTATS_V1")]
pub static SG_RULE_STATS: PerCpuArray<RuleStats> = PerCpuArray::with_max_entries(RULE_STATS_LEN, 0);

/// Packets by (NIC, direction, reason), index `(nic * 2 + dir) * reason::SLOTS + reason`.
#[map(name = "SG_REASONS_V1")]
pub static SG_REASONS: PerCpuArray<u64> = PerCpuArray::with_max_entries(REASONS_LEN, 0);

/// This CPU's decision of the packet being decided: where each step
/// settles its decision (`decide::settle`, which the verifier needs), and,
/// only when loaded with the test flag `RECORD_LAST`, the whole last decision
/// (its NIC, direction and version too) that tests read back.
#[map(name = "SG_LAST_V1")]
pub static SG_LAST: PerCpuArray<LastDecision> = PerCpuArray::with_max_entries(1, 0);

/// Sessions (SPEC §4), shared by both programs. The agent sets the capacity
/// at load time; LRU: when full, the least recently used session goes, and
/// its next packet is decided by the rules again.
#[map(name = "SG_SESSIONS_V2")]
pub static SG_SESSIONS: LruHashMap<SessionKey, SessionEntry> =
    LruHashMap::with_max_entries(SESSION_ENTRIES, 0);

/// Session events by `conntrack::event`, per CPU.
#[map(name = "SG_SESSION_EVENTS_V1")]
pub static SG_SESSION_EVENTS: PerCpuArray<u64> =
    PerCpuArray::with_max_entries(sg_common::conntrack::event::COUNT, 0);

/// Scratch space for the parsed summary ([`SCRATCH_PACKET`]), for a
/// session's first packet rebuilt for revalidation ([`SCRATCH_SESSION_FIRST`])
/// and for a later fragment's first fragment rebuilt to be decided again
/// ([`SCRATCH_FRAGMENT_FIRST`]; the session revalidation that decision may
/// run needs the slot before). Going through map memory makes every parser
/// path reach the decision with the same, imprecise verifier state, so the
/// verifier checks the decision once rather than once per parser path (which
/// exceeded its one-million-instruction budget).
#[map(name = "SG_SCRATCH_V3")]
pub static SG_SCRATCH: PerCpuArray<crate::parse::Summary> = PerCpuArray::with_max_entries(3, 0);
pub const SCRATCH_PACKET: u32 = 0;
pub const SCRATCH_SESSION_FIRST: u32 = 1;
pub const SCRATCH_FRAGMENT_FIRST: u32 = 2;

/// The drop log's records (`sg_common::droplog::DropRecord`), read by the
/// agent. Written only on the drop path, rate-limited; when full (nobody
/// reading), records are counted as lost, never waited for.
#[map(name = "SG_DROPLOG_V1")]
pub static SG_DROPLOG: RingBuf = RingBuf::with_byte_size(RING_BYTES, 0);

/// The drop log's configuration, index 0. Written by the agent; all zero
/// (the state after loading) is off.
#[map(name = "SG_DROPLOG_CFG_V1")]
pub static SG_DROPLOG_CFG: Array<DropLogConfig> = Array::with_max_entries(1, 0);

/// Each CPU's token bucket for the drop log, index 0. Written by the
/// programs; zeroed (refilled) by the agent when it turns the log on.
#[map(name = "SG_DROPLOG_BUCKET_V1")]
pub static SG_DROPLOG_BUCKET: PerCpuArray<DropLogBucket> = PerCpuArray::with_max_entries(1, 0);

/// The drop log's counters by `sg_common::droplog::stat`, per CPU.
#[map(name = "SG_DROPLOG_STATS_V1")]
pub static SG_DROPLOG_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(stat::COUNT, 0);

/// Which store's state the pinned data plane enforces
/// (`sg_common::agent::AgentRecord`), index 0. Written and read by the agent
/// only; no program reads it. Declared here so it is made and pinned with
/// the others.
#[map(name = "SG_AGENT_V1")]
pub static SG_AGENT: Array<sg_common::agent::AgentRecord> = Array::with_max_entries(1, 0);

/// The `sg_common::maps::test_flags` the loader set: 0 in the agent. A
/// constant of the frozen read-only data: the verifier knows its value and
/// removes the branches it does not take, so a flag off costs nothing.
#[unsafe(no_mangle)]
pub static SG_TEST_FLAGS: u8 = 0;

/// Whether test flag `flag` is set.
#[inline(always)]
pub fn test_flag(flag: u8) -> bool {
    // SAFETY: a plain load of a static; volatile so the compiler does not
    // fold the 0 it was compiled with (the loader patches it).
    unsafe { core::ptr::read_volatile(&raw const SG_TEST_FLAGS) & flag != 0 }
}
