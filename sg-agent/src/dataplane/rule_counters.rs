//! Rule counters: each table slot's per-rank counters are folded into the
//! NIC's running totals before the slot is rewritten, so a rule's hits
//! survive every switch; read back per rule (`stats`, metrics) and per
//! reason, and the last decision (tests only).

use std::collections::{BTreeSet, HashMap as StdHashMap};

use aya::maps::PerCpuValues;
use sg_common::{
    maps::{LAST, REASONS, RULE_STATS},
    policy::{DIR_EGRESS, DIR_INGRESS, LastDecision, MAX_RANKS, RuleStats, table_id},
    reason,
};

use super::{
    Dataplane, Error, Maps,
    mapio::{injected_read, map_err},
    nics::Nic,
};
use sg_policy::compile::Rank;

/// Per-rule counters, as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleHits {
    /// 0 = ingress, 1 = egress.
    pub dir: u32,
    pub rank: Rank,
    pub packets: u64,
    pub bytes: u64,
}

fn rank_name(r: &Rank) -> String {
    match r {
        Rank::Rule(id) => id.to_string(),
        Rank::IntraGroup(g) => format!("intra-group:{g}"),
    }
}

impl Dataplane {
    /// Moves the counters of `slot`'s ranks into the NIC's running totals and
    /// zeroes them, before the slot is rewritten.
    pub(super) fn fold_and_zero_stats(
        &mut self,
        name: &str,
        dir: u32,
        slot: u32,
    ) -> Result<(), Error> {
        let n = self.nics.by_name.get_mut(name).expect("bound");
        self.maps.fold_stats(n, dir, slot)
    }

    /// [`Dataplane::fold_and_zero_stats`] on a NIC taken out of the table,
    /// for one that is going away (errors only logged: its counts are lost
    /// with it anyway).
    pub(super) fn fold_stats_of(&mut self, n: &mut Nic, dir: u32, slot: u32) {
        if let Err(e) = self.maps.fold_stats(n, dir, slot) {
            log::warn!("folding the rule counters of NIC id {}: {e}", n.id);
        }
    }

    /// Forgets the folded totals of rules neither slot holds any more, so
    /// they do not grow with rule churn forever.
    pub(super) fn prune_totals(&mut self, name: &str) {
        let n = self.nics.by_name.get_mut(name).expect("bound");
        let live: BTreeSet<(u32, String)> = [DIR_INGRESS, DIR_EGRESS]
            .iter()
            .flat_map(|&d| {
                n.held[d as usize]
                    .iter()
                    .flat_map(move |h| h.ranks.iter().map(move |r| (d, rank_name(r))))
            })
            .collect();
        n.totals.retain(|k, _| live.contains(k));
    }

    /// Hits per rank of the tables in force on NIC `name`, including what
    /// earlier versions counted for the same rule: folded totals, and the
    /// retired slot, whose counters are folded only when it is rewritten.
    pub fn rule_hits(&mut self, name: &str) -> Result<Vec<RuleHits>, Error> {
        let Some(n) = self.nics.by_name.get(name) else {
            return Ok(Vec::new());
        };
        injected_read(RULE_STATS, Some(name))?;
        let (id, active) = (n.id, n.config.slot);
        let mut sums: StdHashMap<(u32, String), RuleStats> = n.totals.clone();
        let mut reads = Vec::new();
        for dir in [DIR_INGRESS, DIR_EGRESS] {
            for slot in 0..2 {
                for (rank, meaning) in n.held[dir as usize][slot as usize].ranks.iter().enumerate()
                {
                    let idx = table_id(id, dir, slot) * MAX_RANKS
                        + u32::try_from(rank).expect("rank fits");
                    reads.push((dir, rank_name(meaning), idx));
                }
            }
        }
        let current: Vec<(u32, Rank)> = [DIR_INGRESS, DIR_EGRESS]
            .iter()
            .flat_map(|&d| {
                n.held[d as usize][active as usize]
                    .ranks
                    .iter()
                    .map(move |r| (d, r.clone()))
            })
            .collect();
        for (dir, key, idx) in reads {
            let values = self
                .maps
                .rule_stats
                .get(&idx, 0)
                .map_err(map_err(RULE_STATS))?;
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
        injected_read(REASONS, Some(name))?;
        let mut out = Vec::new();
        for dir in [DIR_INGRESS, DIR_EGRESS] {
            for r in 0..reason::SLOTS {
                let values = self
                    .maps
                    .reasons
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
}

impl Maps {
    /// Moves the counters of NIC `n`'s `slot` ranks into its running
    /// totals and zeroes them.
    pub(super) fn fold_stats(&mut self, n: &mut Nic, dir: u32, slot: u32) -> Result<(), Error> {
        let ranks = n.held[dir as usize][slot as usize].ranks.clone();
        if ranks.is_empty() {
            return Ok(());
        }
        let table = table_id(n.id, dir, slot);
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| Error::Cpus(e))?.get() as usize;
        for (rank, meaning) in ranks.iter().enumerate() {
            let idx = table * MAX_RANKS + u32::try_from(rank).expect("rank fits");
            let values = self.rule_stats.get(&idx, 0).map_err(map_err(RULE_STATS))?;
            let sum = values.iter().fold(RuleStats::default(), |a, v| RuleStats {
                packets: a.packets + v.packets,
                bytes: a.bytes + v.bytes,
            });
            if sum.packets > 0 {
                let zero = PerCpuValues::try_from(vec![RuleStats::default(); cpus])
                    .map_err(|e| Error::Cpus(std::io::Error::other(e.to_string())))?;
                self.rule_stats
                    .set(idx, zero, 0)
                    .map_err(map_err(RULE_STATS))?;
                let t = n.totals.entry((dir, rank_name(meaning))).or_default();
                t.packets += sum.packets;
                t.bytes += sum.bytes;
            }
        }
        Ok(())
    }

    /// The last decision made on CPU `cpu` (tests pin themselves to a CPU),
    /// if the programs record it: only when loaded by
    /// `Dataplane::load_for_tests`.
    pub fn last_decision(&self, cpu: usize) -> Result<LastDecision, Error> {
        if !self.records_last {
            return Err(Error::NotRecording);
        }
        let values = self.last.get(&0, 0).map_err(map_err(LAST))?;
        values.get(cpu).copied().ok_or(Error::MissingMap(LAST))
    }
}
