//! The map writer: loads compiled tables into the inactive slot of a NIC and
//! switches to it with one map update, so no packet is ever judged by a
//! half-written policy (DESIGN "Hitless updates").
//!
//! Order of a switch: (1) wait out a grace period since the inactive slot
//! was last in force, so no packet that read the old config can still be using
//! it; (2) fold that slot's rule counters into the running totals and zero
//! them; (3) write every entry of the new tables into the slot and delete the
//! slot's entries the new tables no longer have; (4) replace the interface's
//! config entry whole (slot flipped, version bumped): the switch.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap as StdHashMap},
    time::{Duration, Instant},
};

use aya::maps::{
    Array, HashMap, MapData, PerCpuArray, PerCpuValues,
    lpm_trie::{Key, LpmTrie},
};
use sg_common::{
    maps::{
        ADDR4, ADDR6, BITS, BOUNDS, IFACES, LAST, OWN, PLAT4, PLAT6, REASONS, RULE_STATS, SETTINGS,
        TABLES,
    },
    policy::{
        AddrKeyV4, AddrKeyV6, BitsKey, DIR_EGRESS, DIR_INGRESS, FIELD_LOCAL, FIELD_PEER,
        IfaceConfig, LastDecision, MAX_INTERVALS, MAX_RANKS, OWN_KEY_PREFIX_BITS, OwnAddrKey,
        PortBounds, RuleBits, RuleStats, Settings, TableMeta, bits_kind, iface_flags,
        settings_flags, table_tag,
    },
    reason,
    session::timeout,
};

use super::{Dataplane, Error};
use crate::{
    compile::{Prefix, Rank, Table, mapped},
    policy::{self, BindingMode, Cidr, SessionTimeouts},
};

fn next_version(last: &mut u32) -> u32 {
    *last = last.wrapping_add(1).max(1);
    *last
}

/// The kernel's timeout table (`session::timeout` classes) in nanoseconds.
fn timeouts_ns(t: &SessionTimeouts) -> [u64; timeout::COUNT] {
    let ns = |secs: u32| u64::from(secs) * 1_000_000_000;
    let mut out = [0; timeout::COUNT];
    out[timeout::TCP_HANDSHAKE] = ns(t.tcp_handshake_secs);
    out[timeout::TCP_ESTABLISHED] = ns(t.tcp_established_secs);
    out[timeout::TCP_CLOSING] = ns(t.tcp_closing_secs);
    out[timeout::OTHER] = ns(t.other_secs);
    out
}

/// How long a slot stays untouched after it stops being in force. A program
/// run that read the old config finishes in microseconds; this is generous.
const GRACE: Duration = Duration::from_millis(2);

/// An IPv4 address trie key as (key tag, address); the prefix length goes beside it.
type Parts4 = ([u8; 4], [u8; 4]);
/// An IPv6 address trie key as (key tag, address).
type Parts6 = ([u8; 4], [u8; 16]);

/// What one slot of one direction holds, so it can be cleaned on rewrite.
#[derive(Default)]
struct Written {
    bits: BTreeSet<(u32, u16, u16)>,
    addr4: BTreeSet<(u32, Parts4)>,
    addr6: BTreeSet<(u32, Parts6)>,
    bounds: BTreeSet<u32>,
    ranks: Vec<Rank>,
}

/// A NIC's own-address trie keys: (prefix length, (family, address)).
type OwnSet = BTreeSet<(u32, (u32, [u8; 16]))>;

/// What the maps hold: table slots by tag, own-address sets by NIC id.
type Scanned = (StdHashMap<u32, Written>, StdHashMap<u32, OwnSet>);

/// One bound NIC's runtime state.
struct Nic {
    id: u32,
    ifindex: u32,
    config: IfaceConfig,
    /// `[dir][slot]`.
    written: [[Written; 2]; 2],
    own: OwnSet,
    switched_at: Option<Instant>,
    /// Counter totals of ranks no longer in force, by direction and rank meaning.
    totals: StdHashMap<(u32, String), RuleStats>,
}

/// The bound NICs, by name.
pub struct Nics {
    /// How many may be bound (ids run below it).
    limit: u32,
    by_name: BTreeMap<String, Nic>,
    /// The last policy version handed out. Versions are unique across NICs and
    /// rebinds, so a session never finds its version current by coincidence.
    last_version: u32,
}

impl Nics {
    pub fn new(limit: u32) -> Self {
        Self {
            limit,
            by_name: BTreeMap::new(),
            last_version: 0,
        }
    }
}

/// How a NIC is bound.
#[derive(Debug, Clone)]
pub struct Binding {
    pub ifindex: u32,
    pub mode: BindingMode,
    pub anti_spoof: bool,
    /// Its own addresses and extra allowed prefixes.
    pub own: Vec<Cidr>,
}

/// Per-rule counters, as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleHits {
    /// 0 = ingress, 1 = egress.
    pub dir: u32,
    pub rank: Rank,
    pub packets: u64,
    pub bytes: u64,
}

pub(super) fn map_err(map: &'static str) -> impl Fn(aya::maps::MapError) -> Error {
    move |source| Error::Map { map, source }
}

fn rank_name(r: &Rank) -> String {
    match r {
        Rank::Rule(id) => id.to_string(),
        Rank::IntraGroup(g) => format!("intra-group:{g}"),
    }
}

impl Dataplane {
    fn map_mut(&mut self, name: &'static str) -> Result<&mut aya::maps::Map, Error> {
        self.ebpf.map_mut(name).ok_or(Error::MissingMap(name))
    }

    /// The interface → binding map, whose whole-value updates are the switches.
    fn ifaces(&mut self) -> Result<HashMap<&mut MapData, u32, IfaceConfig>, Error> {
        HashMap::try_from(self.map_mut(IFACES)?).map_err(map_err(IFACES))
    }

    /// Writes the global settings: the port-25 block, platform addresses,
    /// session timeouts and the fragment timeout.
    pub fn set_settings(&mut self, settings: &policy::Settings) -> Result<(), Error> {
        let platform = &settings.platform_addresses;
        let mut flags = if settings.block_port_25 {
            settings_flags::BLOCK_PORT_25
        } else {
            0
        };
        if !platform.is_empty() {
            flags |= settings_flags::PLATFORM_ADDRESSES;
        }
        Array::<_, Settings>::try_from(self.map_mut(SETTINGS)?)
            .map_err(map_err(SETTINGS))?
            .set(
                0,
                &Settings {
                    flags,
                    pad: 0,
                    timeouts_ns: timeouts_ns(&settings.session_timeouts),
                    fragment_timeout_ns: u64::from(settings.fragment_timeout_secs) * 1_000_000_000,
                },
                0,
            )
            .map_err(map_err(SETTINGS))?;
        let mut want4 = BTreeSet::new();
        let mut want6 = BTreeSet::new();
        for c in platform {
            let len = u32::from(c.len());
            match c.addr() {
                std::net::IpAddr::V4(a) => want4.insert((len, a.octets())),
                std::net::IpAddr::V6(a) => want6.insert((len, a.octets())),
            };
        }
        sync_trie(self.map_mut(PLAT4)?, PLAT4, &want4)?;
        sync_trie(self.map_mut(PLAT6)?, PLAT6, &want6)?;
        Ok(())
    }

    /// Installs `ingress` and `egress` for NIC `name` and switches to them in
    /// one step. The first install also binds the interface. Returns the new
    /// policy version.
    pub fn install(
        &mut self,
        name: &str,
        binding: &Binding,
        ingress: &Table,
        egress: &Table,
    ) -> Result<u32, Error> {
        let (xdp_dir, tc_dir) = match binding.mode {
            BindingMode::Local => (DIR_INGRESS, DIR_EGRESS),
            BindingMode::Port => (DIR_EGRESS, DIR_INGRESS),
        };
        let flags = if binding.anti_spoof {
            iface_flags::ANTI_SPOOF
        } else {
            0
        };
        if !self.nics.by_name.contains_key(name) {
            let used: BTreeSet<u32> = self.nics.by_name.values().map(|n| n.id).collect();
            let limit = self.nics.limit;
            let id = (0..limit)
                .find(|i| !used.contains(i))
                .ok_or(Error::TooManyNics(limit))?;
            self.nics.by_name.insert(
                name.to_owned(),
                Nic {
                    id,
                    ifindex: binding.ifindex,
                    // Slot 1 "in force" before the first switch: slot 0 is written first.
                    config: IfaceConfig {
                        nic: id,
                        xdp_dir,
                        tc_dir,
                        flags,
                        slot: 1,
                        version: 0,
                    },
                    written: Default::default(),
                    own: BTreeSet::new(),
                    switched_at: None,
                    totals: StdHashMap::new(),
                },
            );
        }
        let (id, slot, switched_at) = {
            let n = &self.nics.by_name[name];
            (n.id, n.config.slot ^ 1, n.switched_at)
        };
        if let Some(t) = switched_at {
            let rest = GRACE.saturating_sub(t.elapsed());
            if !rest.is_zero() {
                std::thread::sleep(rest);
            }
        }
        self.write_own(name, id, &binding.own)?;
        for (dir, table) in [(DIR_INGRESS, ingress), (DIR_EGRESS, egress)] {
            self.fold_and_zero_stats(name, dir, slot)?;
            self.write_table(name, table_tag(id, dir, slot), dir, slot, table)?;
        }
        // The switch: one whole-value update of the interface's entry.
        let old_ifindex;
        let config = {
            let n = self.nics.by_name.get_mut(name).expect("inserted above");
            old_ifindex = n.ifindex;
            n.ifindex = binding.ifindex;
            n.config = IfaceConfig {
                nic: id,
                xdp_dir,
                tc_dir,
                flags,
                slot,
                version: next_version(&mut self.nics.last_version),
            };
            n.switched_at = Some(Instant::now());
            n.config
        };
        let mut ifaces = self.ifaces()?;
        ifaces
            .insert(&binding.ifindex, &config, 0)
            .map_err(map_err(IFACES))?;
        if old_ifindex != binding.ifindex {
            let _ = ifaces.remove(&old_ifindex);
        }
        Ok(config.version)
    }

    /// Gives NIC `name` a new policy version without changing its tables, so
    /// its sessions are checked again (used when settings that decide packets
    /// before the rules changed). Returns the new version.
    pub fn touch(&mut self, name: &str) -> Result<Option<u32>, Error> {
        let Some(n) = self.nics.by_name.get_mut(name) else {
            return Ok(None);
        };
        n.config.version = next_version(&mut self.nics.last_version);
        let (ifindex, config) = (n.ifindex, n.config);
        self.ifaces()?
            .insert(&ifindex, &config, 0)
            .map_err(map_err(IFACES))?;
        Ok(Some(config.version))
    }

    /// Unbinds NIC `name`: its interface passes untouched again, and its
    /// tables, addresses and sessions are removed.
    pub fn unbind(&mut self, name: &str) -> Result<(), Error> {
        let Some(n) = self.nics.by_name.get(name) else {
            return Ok(());
        };
        let (id, ifindex) = (n.id, n.ifindex);
        {
            let mut ifaces = self.ifaces()?;
            let _ = ifaces.remove(&ifindex);
        }
        std::thread::sleep(GRACE);
        let empty = Table::empty();
        for dir in [DIR_INGRESS, DIR_EGRESS] {
            for slot in 0..2 {
                self.fold_and_zero_stats(name, dir, slot)?;
                self.write_table(name, table_tag(id, dir, slot), dir, slot, &empty)?;
            }
        }
        self.write_own(name, id, &[])?;
        // Its id may go to another NIC: none of its sessions may carry over.
        self.flush_sessions(&super::sessions::Filter {
            nic: Some(id),
            ..Default::default()
        })?;
        self.nics.by_name.remove(name);
        Ok(())
    }

    /// The interface config in force for NIC `name`, as the agent wrote it.
    pub fn iface_config(&self, name: &str) -> Option<IfaceConfig> {
        self.nics.by_name.get(name).map(|n| n.config)
    }

    /// The policy version in force on NIC `name`.
    pub fn version(&self, name: &str) -> Option<u32> {
        self.nics.by_name.get(name).map(|n| n.config.version)
    }

    /// The names of the bound NICs.
    pub fn bound(&self) -> Vec<String> {
        self.nics.by_name.keys().cloned().collect()
    }

    /// The data plane's id of NIC `name`.
    pub fn nic_id(&self, name: &str) -> Option<u32> {
        self.nics.by_name.get(name).map(|n| n.id)
    }

    /// What rank `rank` of NIC `name`'s table in force for `dir` stands for.
    pub fn rank(&self, name: &str, dir: u32, rank: u32) -> Option<&Rank> {
        let n = self.nics.by_name.get(name)?;
        n.written[dir as usize][n.config.slot as usize]
            .ranks
            .get(rank as usize)
    }

    fn write_own(&mut self, name: &str, nic: u32, own: &[Cidr]) -> Result<(), Error> {
        let entries: Vec<(u32, (u32, [u8; 16]), u32)> = own
            .iter()
            .map(|c| {
                let (family, extra) = if c.addr().is_ipv4() { (4, 96) } else { (6, 0) };
                let len = OWN_KEY_PREFIX_BITS + extra + u32::from(c.len());
                (len, (family, mapped(c.addr())), 1)
            })
            .collect();
        let old = std::mem::take(&mut self.nics.by_name.get_mut(name).expect("bound").own);
        let new = sync_prefixes(self.map_mut(OWN)?, OWN, &entries, &old, |(family, addr)| {
            OwnAddrKey { nic, family, addr }
        })?;
        self.nics.by_name.get_mut(name).expect("bound").own = new;
        Ok(())
    }

    fn write_table(
        &mut self,
        name: &str,
        tag: u32,
        dir: u32,
        slot: u32,
        t: &Table,
    ) -> Result<(), Error> {
        let old = std::mem::take(
            &mut self.nics.by_name.get_mut(name).expect("bound").written[dir as usize]
                [slot as usize],
        );
        let mut new = Written {
            ranks: t.ranks.clone(),
            ..Written::default()
        };
        self.write_bits(tag, t, &old, &mut new)?;
        self.write_bounds(tag, t, &old, &mut new)?;
        self.write_addrs(tag, t, &old, &mut new)?;
        // The header last: everything it points at is in place.
        let meta = TableMeta {
            words: t.words(),
            n_rules: u32::try_from(t.n_rules).expect("checked by the compiler"),
            default_verdict: t.default_verdict,
            default_reason: t.default_reason,
            accept: t.accept,
        };
        Array::<_, TableMeta>::try_from(self.map_mut(TABLES)?)
            .map_err(map_err(TABLES))?
            .set(tag, &meta, 0)
            .map_err(map_err(TABLES))?;
        self.nics.by_name.get_mut(name).expect("bound").written[dir as usize][slot as usize] = new;
        Ok(())
    }

    /// Rule bits: protocols, port intervals, no-port sets.
    fn write_bits(
        &mut self,
        tag: u32,
        t: &Table,
        old: &Written,
        new: &mut Written,
    ) -> Result<(), Error> {
        let mut entries: Vec<(BitsKey, RuleBits)> = t
            .proto
            .iter()
            .map(|(p, b)| {
                (
                    BitsKey {
                        tag,
                        kind: bits_kind::PROTO,
                        index: *p,
                    },
                    *b,
                )
            })
            .collect();
        for (kind, table) in [(bits_kind::DPORT, &t.dport), (bits_kind::SPORT, &t.sport)] {
            for (i, b) in table.bits.iter().enumerate() {
                let index = u16::try_from(i).expect("intervals < 65536");
                entries.push((BitsKey { tag, kind, index }, *b));
            }
        }
        entries.push((
            BitsKey {
                tag,
                kind: bits_kind::DPORT_NONE,
                index: 0,
            },
            t.dport.none,
        ));
        entries.push((
            BitsKey {
                tag,
                kind: bits_kind::SPORT_NONE,
                index: 0,
            },
            t.sport.none,
        ));
        let mut bits = HashMap::<_, BitsKey, RuleBits>::try_from(self.map_mut(BITS)?)
            .map_err(map_err(BITS))?;
        for (k, v) in &entries {
            bits.insert(k, v, 0).map_err(map_err(BITS))?;
            new.bits.insert((k.tag, k.kind, k.index));
        }
        for &(tag, kind, index) in old.bits.difference(&new.bits) {
            let _ = bits.remove(&BitsKey { tag, kind, index });
        }
        Ok(())
    }

    /// Port interval bounds.
    fn write_bounds(
        &mut self,
        tag: u32,
        t: &Table,
        old: &Written,
        new: &mut Written,
    ) -> Result<(), Error> {
        let mut bounds = HashMap::<_, u32, PortBounds>::try_from(self.map_mut(BOUNDS)?)
            .map_err(map_err(BOUNDS))?;
        for (field, table) in [(0u32, &t.dport), (1, &t.sport)] {
            let mut pb = PortBounds {
                n: 0,
                bounds: [0; MAX_INTERVALS as usize],
                pad: 0,
            };
            pb.n = u32::try_from(table.bounds.len()).expect("checked by the compiler");
            pb.bounds[..table.bounds.len()].copy_from_slice(&table.bounds);
            bounds
                .insert(&(tag * 2 + field), &pb, 0)
                .map_err(map_err(BOUNDS))?;
            new.bounds.insert(tag * 2 + field);
        }
        for k in old.bounds.difference(&new.bounds) {
            let _ = bounds.remove(k);
        }
        Ok(())
    }

    /// Peer and local address tries.
    fn write_addrs(
        &mut self,
        tag: u32,
        t: &Table,
        old: &Written,
        new: &mut Written,
    ) -> Result<(), Error> {
        let mut v4: Vec<(u32, Parts4, RuleBits)> = Vec::new();
        let mut v6: Vec<(u32, Parts6, RuleBits)> = Vec::new();
        for (field, prefixes) in [(FIELD_PEER, &t.peer), (FIELD_LOCAL, &t.local)] {
            let key_tag = (tag * 2 + field).to_be_bytes();
            for Prefix { cidr, bits } in prefixes {
                let len = 32 + u32::from(cidr.len());
                match cidr.addr() {
                    std::net::IpAddr::V4(a) => v4.push((len, (key_tag, a.octets()), *bits)),
                    std::net::IpAddr::V6(a) => v6.push((len, (key_tag, a.octets()), *bits)),
                }
            }
        }
        new.addr4 = sync_prefixes(
            self.map_mut(ADDR4)?,
            ADDR4,
            &v4,
            &old.addr4,
            |(key_tag, addr)| AddrKeyV4 { key_tag, addr },
        )?;
        new.addr6 = sync_prefixes(
            self.map_mut(ADDR6)?,
            ADDR6,
            &v6,
            &old.addr6,
            |(key_tag, addr)| AddrKeyV6 { key_tag, addr },
        )?;
        Ok(())
    }

    /// Moves the counters of `slot`'s ranks into the NIC's running totals and
    /// zeroes them, before the slot is rewritten.
    fn fold_and_zero_stats(&mut self, name: &str, dir: u32, slot: u32) -> Result<(), Error> {
        let (id, ranks) = {
            let n = &self.nics.by_name[name];
            (n.id, n.written[dir as usize][slot as usize].ranks.clone())
        };
        if ranks.is_empty() {
            return Ok(());
        }
        let tag = table_tag(id, dir, slot);
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| Error::Cpus(e))?.get() as usize;
        let mut stats = PerCpuArray::<_, RuleStats>::try_from(self.map_mut(RULE_STATS)?)
            .map_err(map_err(RULE_STATS))?;
        let mut folded = Vec::new();
        for (rank, meaning) in ranks.iter().enumerate() {
            let idx = tag * MAX_RANKS + u32::try_from(rank).expect("rank fits");
            let values = stats.get(&idx, 0).map_err(map_err(RULE_STATS))?;
            let sum = values.iter().fold(RuleStats::default(), |a, v| RuleStats {
                packets: a.packets + v.packets,
                bytes: a.bytes + v.bytes,
            });
            if sum.packets > 0 {
                folded.push((rank_name(meaning), sum));
                let zero = PerCpuValues::try_from(vec![RuleStats::default(); cpus])
                    .map_err(|e| Error::Cpus(std::io::Error::other(e.to_string())))?;
                stats.set(idx, zero, 0).map_err(map_err(RULE_STATS))?;
            }
        }
        let n = self.nics.by_name.get_mut(name).expect("bound");
        for (key, s) in folded {
            let t = n.totals.entry((dir, key)).or_default();
            t.packets += s.packets;
            t.bytes += s.bytes;
        }
        Ok(())
    }

    /// Hits per rank of the tables in force on NIC `name`, including what
    /// earlier versions counted for the same rule: folded totals, and the
    /// retired slot, whose counters are folded only when it is rewritten.
    pub fn rule_hits(&mut self, name: &str) -> Result<Vec<RuleHits>, Error> {
        let Some(n) = self.nics.by_name.get(name) else {
            return Ok(Vec::new());
        };
        let (id, active) = (n.id, n.config.slot);
        let mut sums: StdHashMap<(u32, String), RuleStats> = n.totals.clone();
        let mut reads = Vec::new();
        for dir in [DIR_INGRESS, DIR_EGRESS] {
            for slot in 0..2 {
                for (rank, meaning) in n.written[dir as usize][slot as usize]
                    .ranks
                    .iter()
                    .enumerate()
                {
                    let idx = table_tag(id, dir, slot) * MAX_RANKS
                        + u32::try_from(rank).expect("rank fits");
                    reads.push((dir, rank_name(meaning), idx));
                }
            }
        }
        let current: Vec<(u32, Rank)> = [DIR_INGRESS, DIR_EGRESS]
            .iter()
            .flat_map(|&d| {
                n.written[d as usize][active as usize]
                    .ranks
                    .iter()
                    .map(move |r| (d, r.clone()))
            })
            .collect();
        let stats = PerCpuArray::<_, RuleStats>::try_from(self.map_mut(RULE_STATS)?)
            .map_err(map_err(RULE_STATS))?;
        for (dir, key, idx) in reads {
            let values = stats.get(&idx, 0).map_err(map_err(RULE_STATS))?;
            let sum = sums.entry((dir, key)).or_default();
            for v in values.iter() {
                sum.packets += v.packets;
                sum.bytes += v.bytes;
            }
        }
        Ok(current
            .into_iter()
            .map(|(dir, rank)| {
                let s = sums
                    .get(&(dir, rank_name(&rank)))
                    .copied()
                    .unwrap_or_default();
                RuleHits {
                    dir,
                    rank,
                    packets: s.packets,
                    bytes: s.bytes,
                }
            })
            .collect())
    }

    /// Packets of NIC `name` by direction and reason (`sg_common::reason`).
    pub fn reason_counts(&mut self, name: &str) -> Result<Vec<(u32, u32, u64)>, Error> {
        let Some(id) = self.nic_id(name) else {
            return Ok(Vec::new());
        };
        let counts =
            PerCpuArray::<_, u64>::try_from(self.map_mut(REASONS)?).map_err(map_err(REASONS))?;
        let mut out = Vec::new();
        for dir in [DIR_INGRESS, DIR_EGRESS] {
            for r in 0..reason::SLOTS {
                let values = counts
                    .get(&((id * 2 + dir) * reason::SLOTS + r), 0)
                    .map_err(map_err(REASONS))?;
                let n: u64 = values.iter().sum();
                if n > 0 {
                    out.push((dir, r, n));
                }
            }
        }
        Ok(out)
    }

    /// The last decision made on CPU `cpu` (tests pin themselves to a CPU).
    pub fn last_decision(&mut self, cpu: usize) -> Result<LastDecision, Error> {
        let last =
            PerCpuArray::<_, LastDecision>::try_from(self.map_mut(LAST)?).map_err(map_err(LAST))?;
        let values = last.get(&0, 0).map_err(map_err(LAST))?;
        values.get(cpu).copied().ok_or(Error::MissingMap(LAST))
    }
}

/// Makes an LPM trie hold `entries` (prefix length, key parts, value): writes
/// them and removes what `old` had that `entries` lacks; returns the new key
/// set, to pass as `old` next time.
fn sync_prefixes<T: Ord + Copy, K: aya::Pod, V: aya::Pod>(
    map: &mut aya::maps::Map,
    name: &'static str,
    entries: &[(u32, T, V)],
    old: &BTreeSet<(u32, T)>,
    key: impl Fn(T) -> K,
) -> Result<BTreeSet<(u32, T)>, Error> {
    let mut trie = LpmTrie::<&mut MapData, K, V>::try_from(map).map_err(map_err(name))?;
    let mut written = BTreeSet::new();
    for (len, parts, value) in entries {
        trie.insert(&Key::new(*len, key(*parts)), value, 0)
            .map_err(map_err(name))?;
        written.insert((*len, *parts));
    }
    for &(len, parts) in old.difference(&written) {
        let _ = trie.remove(&Key::new(len, key(parts)));
    }
    Ok(written)
}

/// Makes a platform-address trie of `(prefix length, address) → 1` hold
/// exactly `want`; what it held before is read from the map itself.
fn sync_trie<const N: usize>(
    map: &mut aya::maps::Map,
    name: &'static str,
    want: &BTreeSet<(u32, [u8; N])>,
) -> Result<(), Error>
where
    [u8; N]: aya::Pod,
{
    let old: BTreeSet<(u32, [u8; N])> = LpmTrie::<&mut MapData, [u8; N], u32>::try_from(&mut *map)
        .map_err(map_err(name))?
        .keys()
        .filter_map(Result::ok)
        .map(|k| (k.prefix_len(), k.data()))
        .collect();
    let entries: Vec<(u32, [u8; N], u32)> = want.iter().map(|&(len, a)| (len, a, 1)).collect();
    sync_prefixes(map, name, &entries, &old, |a| a)?;
    Ok(())
}

impl Dataplane {
    /// Takes over the bindings an earlier agent left in the adopted maps:
    /// each interface entry whose index still names an interface here
    /// becomes a bound NIC again, with what its table slots hold read back
    /// from the maps (so the next install cleans them exactly). Entries of
    /// interfaces that are gone are unbound. Per-rule counters start again at
    /// zero: which rule each rank meant died with the earlier agent.
    pub(super) fn adopt_bindings(&mut self) -> Result<(), Error> {
        let entries: Vec<(u32, IfaceConfig)> =
            self.ifaces()?.iter().filter_map(Result::ok).collect();
        let (mut slots, mut own) = self.scan_written()?;
        let mut gone = Vec::new();
        for (ifindex, config) in entries {
            let name = if_name(ifindex);
            let Some(name) = name.filter(|_| config.nic < self.nics.limit) else {
                gone.push(ifindex);
                continue;
            };
            self.nics.last_version = self.nics.last_version.max(config.version);
            let mut written: [[Written; 2]; 2] = Default::default();
            for dir in [DIR_INGRESS, DIR_EGRESS] {
                for slot in 0..2 {
                    written[dir as usize][slot as usize] = slots
                        .remove(&table_tag(config.nic, dir, slot))
                        .unwrap_or_default();
                }
            }
            log::info!(
                "adopted binding of {name} (ifindex {ifindex}, policy version {})",
                config.version
            );
            self.nics.by_name.insert(
                name,
                Nic {
                    id: config.nic,
                    ifindex,
                    config,
                    written,
                    own: own.remove(&config.nic).unwrap_or_default(),
                    switched_at: None,
                    totals: StdHashMap::new(),
                },
            );
        }
        {
            let mut ifaces = self.ifaces()?;
            for ifindex in gone {
                let _ = ifaces.remove(&ifindex);
            }
        }
        // Whatever belongs to no adopted NIC (bindings of vanished
        // interfaces) is removed, so a NIC id handed out again starts clean.
        let orphans: Vec<(u32, Written)> = slots.into_iter().collect();
        for (_, w) in orphans {
            self.clear_slot(&w)?;
        }
        let orphan_own: Vec<_> = own.into_iter().collect();
        for (nic, keys) in orphan_own {
            let _ = sync_prefixes(
                self.map_mut(OWN)?,
                OWN,
                &[] as &[(u32, (u32, [u8; 16]), u32)],
                &keys,
                |(family, addr)| OwnAddrKey { nic, family, addr },
            )?;
        }
        // Counters of ranks whose meaning is lost would be credited to the
        // wrong rules: start them again from zero.
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| Error::Cpus(e))?.get() as usize;
        let tags: Vec<u32> = self
            .nics
            .by_name
            .values()
            .flat_map(|n| (0..4).map(move |i| n.id * 4 + i))
            .collect();
        let mut stats = PerCpuArray::<_, RuleStats>::try_from(self.map_mut(RULE_STATS)?)
            .map_err(map_err(RULE_STATS))?;
        for tag in tags {
            for rank in 0..MAX_RANKS {
                let zero = PerCpuValues::try_from(vec![RuleStats::default(); cpus])
                    .map_err(|e| Error::Cpus(std::io::Error::other(e.to_string())))?;
                stats
                    .set(tag * MAX_RANKS + rank, zero, 0)
                    .map_err(map_err(RULE_STATS))?;
            }
        }
        Ok(())
    }

    /// What every table slot and every NIC's own-address set holds, read
    /// back from the maps: by table tag, and by NIC id.
    fn scan_written(&mut self) -> Result<Scanned, Error> {
        let mut slots: StdHashMap<u32, Written> = StdHashMap::new();
        {
            let bits = HashMap::<_, BitsKey, RuleBits>::try_from(self.map_mut(BITS)?)
                .map_err(map_err(BITS))?;
            for k in bits.keys().filter_map(Result::ok) {
                slots
                    .entry(k.tag)
                    .or_default()
                    .bits
                    .insert((k.tag, k.kind, k.index));
            }
        }
        {
            let bounds = HashMap::<_, u32, PortBounds>::try_from(self.map_mut(BOUNDS)?)
                .map_err(map_err(BOUNDS))?;
            for k in bounds.keys().filter_map(Result::ok) {
                slots.entry(k / 2).or_default().bounds.insert(k);
            }
        }
        {
            let trie = LpmTrie::<_, AddrKeyV4, RuleBits>::try_from(self.map_mut(ADDR4)?)
                .map_err(map_err(ADDR4))?;
            for k in trie.keys().filter_map(Result::ok) {
                let d = k.data();
                let tag = u32::from_be_bytes(d.key_tag) / 2;
                slots
                    .entry(tag)
                    .or_default()
                    .addr4
                    .insert((k.prefix_len(), (d.key_tag, d.addr)));
            }
        }
        {
            let trie = LpmTrie::<_, AddrKeyV6, RuleBits>::try_from(self.map_mut(ADDR6)?)
                .map_err(map_err(ADDR6))?;
            for k in trie.keys().filter_map(Result::ok) {
                let d = k.data();
                let tag = u32::from_be_bytes(d.key_tag) / 2;
                slots
                    .entry(tag)
                    .or_default()
                    .addr6
                    .insert((k.prefix_len(), (d.key_tag, d.addr)));
            }
        }
        let mut own: StdHashMap<u32, OwnSet> = StdHashMap::new();
        {
            let trie = LpmTrie::<_, OwnAddrKey, u32>::try_from(self.map_mut(OWN)?)
                .map_err(map_err(OWN))?;
            for k in trie.keys().filter_map(Result::ok) {
                let d = k.data();
                own.entry(d.nic)
                    .or_default()
                    .insert((k.prefix_len(), (d.family, d.addr)));
            }
        }
        Ok((slots, own))
    }

    /// Removes every entry `w` says a table holds.
    fn clear_slot(&mut self, w: &Written) -> Result<(), Error> {
        {
            let mut bits = HashMap::<_, BitsKey, RuleBits>::try_from(self.map_mut(BITS)?)
                .map_err(map_err(BITS))?;
            for &(tag, kind, index) in &w.bits {
                let _ = bits.remove(&BitsKey { tag, kind, index });
            }
        }
        {
            let mut bounds = HashMap::<_, u32, PortBounds>::try_from(self.map_mut(BOUNDS)?)
                .map_err(map_err(BOUNDS))?;
            for k in &w.bounds {
                let _ = bounds.remove(k);
            }
        }
        sync_prefixes(
            self.map_mut(ADDR4)?,
            ADDR4,
            &[] as &[(u32, Parts4, RuleBits)],
            &w.addr4,
            |(key_tag, addr)| AddrKeyV4 { key_tag, addr },
        )?;
        sync_prefixes(
            self.map_mut(ADDR6)?,
            ADDR6,
            &[] as &[(u32, Parts6, RuleBits)],
            &w.addr6,
            |(key_tag, addr)| AddrKeyV6 { key_tag, addr },
        )?;
        Ok(())
    }
}

/// The name of interface `ifindex` in the calling thread's namespace.
fn if_name(ifindex: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: the buffer holds IF_NAMESIZE bytes, as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: on success the buffer holds a NUL-terminated name.
    let name = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    Some(name.to_string_lossy().into_owned())
}
