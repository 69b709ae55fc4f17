//! The maps the programs share, taken out of the loaded object once, each
//! as the typed handle its contents need. Every job of the data plane reads
//! and writes them through these fields: a map's name and its key and value
//! types are checked here, when the object loads, and nowhere else.

use aya::{
    Ebpf,
    maps::{Array, HashMap, Map, MapData, MapError, PerCpuArray, RingBuf, lpm_trie::LpmTrie},
};
use sg_common::{
    agent::AgentRecord,
    conntrack::{SessionEntry, SessionKey},
    droplog::{DropLogBucket, DropLogConfig},
    maps::{
        ADDR4, ADDR6, AGENT, BITS, BOUNDS, COUNTERS, DROPLOG, DROPLOG_BUCKET, DROPLOG_CFG,
        DROPLOG_STATS, FRAGS, IFACES, LAST, OWN, PLAT4, PLAT6, REASONS, RULE_STATS, SESSION_EVENTS,
        SESSIONS, SETTINGS, TABLES,
    },
    policy::{
        AddrKeyV4, AddrKeyV6, BitsKey, FragFirst, FragKey, IfaceConfig, LastDecision, OwnAddrKey,
        PortBounds, RuleBits, RuleStats, Settings, TableMeta,
    },
};

use super::{Error, mapio::map_err, pins::PINNED_MAPS};

/// The object's maps, by what they hold (see `sg-ebpf/src/maps.rs` for the
/// kernel side of each).
pub struct Maps {
    pub(super) agent: Array<MapData, AgentRecord>,
    pub(super) counters: PerCpuArray<MapData, u64>,
    pub(super) ifaces: HashMap<MapData, u32, IfaceConfig>,
    pub(super) tables: Array<MapData, TableMeta>,
    pub(super) bits: HashMap<MapData, BitsKey, RuleBits>,
    pub(super) bounds: HashMap<MapData, u32, PortBounds>,
    pub(super) addr4: LpmTrie<MapData, AddrKeyV4, RuleBits>,
    pub(super) addr6: LpmTrie<MapData, AddrKeyV6, RuleBits>,
    pub(super) own: LpmTrie<MapData, OwnAddrKey, u32>,
    pub(super) plat4: LpmTrie<MapData, [u8; 4], u32>,
    pub(super) plat6: LpmTrie<MapData, [u8; 16], u32>,
    pub(super) settings: Array<MapData, Settings>,
    pub(super) frags: HashMap<MapData, FragKey, FragFirst>,
    pub(super) rule_stats: PerCpuArray<MapData, RuleStats>,
    pub(super) reasons: PerCpuArray<MapData, u64>,
    pub(super) last: PerCpuArray<MapData, LastDecision>,
    pub(super) sessions: HashMap<MapData, SessionKey, SessionEntry>,
    pub(super) session_events: PerCpuArray<MapData, u64>,
    /// The drop log's ring buffer, until its one reader takes it.
    pub(super) droplog: Option<RingBuf<MapData>>,
    pub(super) droplog_cfg: Array<MapData, DropLogConfig>,
    pub(super) droplog_bucket: PerCpuArray<MapData, DropLogBucket>,
    pub(super) droplog_stats: PerCpuArray<MapData, u64>,
    /// The kernel id of each map in [`PINNED_MAPS`], in that order: what
    /// the pins must name (`verify.rs`), and how to pin a map again.
    ids: Vec<(&'static str, u32)>,
    /// The programs record every decision whole in the last-decision map
    /// (loaded by `Dataplane::load_for_tests`).
    pub(super) records_last: bool,
}

/// Takes the map `name` out of `ebpf` as the typed handle `M`, noting its
/// kernel id in `ids` if it is one of the pinned maps.
fn take<M: TryFrom<Map, Error = MapError>>(
    ebpf: &mut Ebpf,
    ids: &mut Vec<(&'static str, u32)>,
    name: &'static str,
) -> Result<M, Error> {
    let map = ebpf.take_map(name).ok_or(Error::MissingMap(name))?;
    if PINNED_MAPS.contains(&name) {
        let info = super::pins::map_data(&map).info().map_err(map_err(name))?;
        ids.push((name, info.id()));
    }
    M::try_from(map).map_err(map_err(name))
}

impl Maps {
    /// Takes every map the agent uses out of the freshly loaded `ebpf`. The
    /// programs keep their own references to the maps: loading one later
    /// (`programs.rs`) still finds them.
    pub(super) fn take(ebpf: &mut Ebpf) -> Result<Self, Error> {
        let mut ids = Vec::with_capacity(PINNED_MAPS.len());
        let ids = &mut ids;
        let mut maps = Self {
            agent: take(ebpf, ids, AGENT)?,
            counters: take(ebpf, ids, COUNTERS)?,
            ifaces: take(ebpf, ids, IFACES)?,
            tables: take(ebpf, ids, TABLES)?,
            bits: take(ebpf, ids, BITS)?,
            bounds: take(ebpf, ids, BOUNDS)?,
            addr4: take(ebpf, ids, ADDR4)?,
            addr6: take(ebpf, ids, ADDR6)?,
            own: take(ebpf, ids, OWN)?,
            plat4: take(ebpf, ids, PLAT4)?,
            plat6: take(ebpf, ids, PLAT6)?,
            settings: take(ebpf, ids, SETTINGS)?,
            frags: take(ebpf, ids, FRAGS)?,
            rule_stats: take(ebpf, ids, RULE_STATS)?,
            reasons: take(ebpf, ids, REASONS)?,
            last: take(ebpf, ids, LAST)?,
            sessions: take(ebpf, ids, SESSIONS)?,
            session_events: take(ebpf, ids, SESSION_EVENTS)?,
            droplog: Some(take(ebpf, ids, DROPLOG)?),
            droplog_cfg: take(ebpf, ids, DROPLOG_CFG)?,
            droplog_bucket: take(ebpf, ids, DROPLOG_BUCKET)?,
            droplog_stats: take(ebpf, ids, DROPLOG_STATS)?,
            ids: Vec::new(),
            records_last: false,
        };
        maps.ids = std::mem::take(ids);
        Ok(maps)
    }

    /// The kernel id of each pinned map, by name.
    pub(super) fn pinned_ids(&self) -> &[(&'static str, u32)] {
        &self.ids
    }

    /// Forgets every first fragment the programs remember, of every NIC;
    /// returns how many went.
    pub fn forget_fragments(&mut self) -> usize {
        self.forget_fragments_where(|_| true)
    }

    /// Forgets the remembered first fragments whose key `select` picks.
    pub(super) fn forget_fragments_where(
        &mut self,
        mut select: impl FnMut(&FragKey) -> bool,
    ) -> usize {
        let keys: Vec<FragKey> = self
            .frags
            .keys()
            .filter_map(Result::ok)
            .filter(|k| select(k))
            .collect();
        keys.iter().filter(|k| self.frags.remove(k).is_ok()).count()
    }
}
