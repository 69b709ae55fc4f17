//! Reading back what the maps hold, whole (`scan`), and taking over the
//! bindings an earlier agent left in pinned maps (`adopt_bindings`).

use std::collections::{BTreeMap, BTreeSet};

use aya::maps::PerCpuValues;
use sg_common::{
    maps::{RULE_STATS, TABLES},
    policy::{
        DIR_EGRESS, DIR_INGRESS, IfaceConfig, MAX_RANKS, RuleBits, RuleStats, TableMeta, table_id,
    },
};

use super::{
    Dataplane, Error, Maps,
    image::{OwnEntry, TableImage, TableKeys},
    mapio::map_err,
    nics::{Leftover, Nic, SlotRecord},
};

/// Everything the policy maps hold, read back: interface entries, table
/// entries by table id, own-address entries by their key's NIC field.
#[derive(Debug, Default)]
pub(super) struct Scan {
    pub(super) ifaces: BTreeMap<u32, IfaceConfig>,
    /// Headers are not scanned (every table has one): see [`Dataplane::meta`].
    pub(super) tables: BTreeMap<u32, TableImage>,
    pub(super) own: BTreeMap<u32, BTreeSet<OwnEntry>>,
}

fn zero_meta() -> TableMeta {
    TableMeta {
        words: 0,
        n_rules: 0,
        default_verdict: 0,
        default_reason: 0,
        accept: RuleBits::EMPTY,
    }
}

impl Scan {
    fn table(&mut self, table: u32) -> &mut TableImage {
        self.tables.entry(table).or_insert_with(|| TableImage {
            meta: zero_meta(),
            bits: BTreeMap::new(),
            bounds: BTreeMap::new(),
            addr4: BTreeMap::new(),
            addr6: BTreeMap::new(),
        })
    }
}

impl Maps {
    /// Reads every entry of the policy maps. Entries that vanish while it
    /// reads (nothing else writes these maps) are skipped.
    pub(super) fn scan(&self) -> Scan {
        let mut scan = Scan {
            ifaces: self.ifaces.iter().filter_map(Result::ok).collect(),
            ..Scan::default()
        };
        for (k, v) in self.bits.iter().filter_map(Result::ok) {
            scan.table(k.table).bits.insert((k.kind, k.index), v);
        }
        for (k, v) in self.bounds.iter().filter_map(Result::ok) {
            scan.table(k / 2).bounds.insert(k % 2, v);
        }
        for (k, v) in self.addr4.iter().filter_map(Result::ok) {
            let d = k.data();
            let tf = u32::from_be_bytes(d.table_field);
            scan.table(tf / 2)
                .addr4
                .insert((tf % 2, k.prefix_len(), d.addr), v);
        }
        for (k, v) in self.addr6.iter().filter_map(Result::ok) {
            let d = k.data();
            let tf = u32::from_be_bytes(d.table_field);
            scan.table(tf / 2)
                .addr6
                .insert((tf % 2, k.prefix_len(), d.addr), v);
        }
        for k in self.own.keys().filter_map(Result::ok) {
            let d = k.data();
            scan.own
                .entry(d.nic)
                .or_default()
                .insert((k.prefix_len(), d.family, d.addr));
        }
        scan
    }

    /// The header of table `table` as the kernel holds it.
    pub(super) fn meta(&self, table: u32) -> Result<TableMeta, Error> {
        self.tables.get(&table, 0).map_err(map_err(TABLES))
    }
}

impl Dataplane {
    /// Takes over the bindings an earlier agent left in the adopted maps:
    /// each interface entry whose index still names an interface here
    /// becomes a bound NIC again, with what its table slots and own
    /// addresses hold read back from the maps (so the next install cleans
    /// them exactly). Entries of interfaces that are gone, and whatever
    /// belongs to no adopted NIC, are removed. Per-rule counters start again
    /// at zero: which rule each rank meant died with the earlier agent.
    pub(super) fn adopt_bindings(&mut self) -> Result<(), Error> {
        let mut scan = self.maps.scan();
        super::faults::point("adopt.scanned");
        for (ifindex, config) in std::mem::take(&mut scan.ifaces) {
            let name = crate::iface::name(ifindex).filter(|_| config.nic < self.nics.limit);
            let Some(name) = name else {
                self.nics.stale_ifaces.insert(ifindex);
                continue;
            };
            self.nics.last_version = self.nics.last_version.max(config.version);
            let mut n = Nic::new(config.nic, ifindex);
            n.config = config;
            take_held(&mut scan, config.nic, &mut n.held, &mut n.own);
            // The earlier agent may have switched a moment ago: its old
            // slot is reused only after a grace period.
            n.retired = Some(self.nics.grace.request());
            log::info!(
                "adopted binding of {name} (ifindex {ifindex}, policy version {})",
                config.version
            );
            self.nics.by_name.insert(name, n);
            super::faults::point("adopt.nic");
        }
        // What is left belongs to no adopted NIC.
        let ids: BTreeSet<u32> = scan
            .tables
            .keys()
            .map(|t| t / 4)
            .chain(scan.own.keys().map(|k| k / 2))
            .collect();
        for id in ids {
            let mut l = Leftover {
                id,
                held: Default::default(),
                own: Default::default(),
            };
            take_held(&mut scan, id, &mut l.held, &mut l.own);
            self.nics.leftovers.push(l);
        }
        self.nics.grace.synchronize();
        if let Err(e) = self.clean_leftovers() {
            log::error!("removing what vanished interfaces left in the maps: {e}");
        }
        self.zero_rule_stats()
    }

    fn zero_rule_stats(&mut self) -> Result<(), Error> {
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| Error::Cpus(e))?.get() as usize;
        let tables: Vec<u32> = self
            .nics
            .by_name
            .values()
            .flat_map(|n| (0..4).map(move |i| n.id * 4 + i))
            .collect();
        for table in tables {
            for rank in 0..MAX_RANKS {
                let zero = PerCpuValues::try_from(vec![RuleStats::default(); cpus])
                    .map_err(|e| Error::Cpus(std::io::Error::other(e.to_string())))?;
                self.maps
                    .rule_stats
                    .set(table * MAX_RANKS + rank, zero, 0)
                    .map_err(map_err(RULE_STATS))?;
            }
        }
        Ok(())
    }
}

/// Moves what `scan` holds of NIC `id` into `held` and `own`.
fn take_held(
    scan: &mut Scan,
    id: u32,
    held: &mut [[SlotRecord; 2]; 2],
    own: &mut [BTreeSet<OwnEntry>; 2],
) {
    for dir in [DIR_INGRESS, DIR_EGRESS] {
        for slot in 0..2 {
            if let Some(t) = scan.tables.remove(&table_id(id, dir, slot)) {
                held[dir as usize][slot as usize].keys = t.keys();
            }
        }
    }
    for slot in 0..2u32 {
        if let Some(o) = scan.own.remove(&sg_common::policy::own_key_nic(id, slot)) {
            own[slot as usize] = o;
        }
    }
}

/// Keys of a scanned table, for callers that only need to know what it holds.
pub(super) fn keys_of(t: Option<&TableImage>) -> TableKeys {
    t.map(TableImage::keys).unwrap_or_default()
}
