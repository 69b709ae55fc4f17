//! Reading the per-CPU packet counters.

use std::collections::BTreeMap;

use sg_common::{
    counter::{self, HOOK_DIRECTIONS, NAMES, SLOTS},
    maps::COUNTERS,
};

use super::{
    Error, Maps,
    mapio::{injected_read, map_err},
};

/// A snapshot of every counter, summed over CPUs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counters {
    values: Vec<u64>,
}

impl Counters {
    /// Reads all counters of `maps`.
    pub fn read(maps: &Maps) -> Result<Self, Error> {
        injected_read(COUNTERS, None)?;
        let mut values = Vec::with_capacity((HOOK_DIRECTIONS * SLOTS) as usize);
        for index in 0..HOOK_DIRECTIONS * SLOTS {
            let per_cpu = maps.counters.get(&index, 0).map_err(map_err(COUNTERS))?;
            values.push(per_cpu.iter().sum());
        }
        Ok(Self { values })
    }

    /// The value of `counter` (a `sg_common::counter` constant) in hook
    /// direction `dir`.
    pub fn get(&self, dir: u32, counter: u32) -> u64 {
        self.values[counter::index(dir, counter) as usize]
    }

    /// Counter by counter, `self - earlier` (saturating: counters only grow).
    #[must_use]
    pub fn since(&self, earlier: &Self) -> Self {
        let values = self
            .values
            .iter()
            .zip(&earlier.values)
            .map(|(now, then)| now.saturating_sub(*then))
            .collect();
        Self { values }
    }

    /// `(name, ingress, egress)` for every named counter, in counter order.
    pub fn rows(&self) -> impl Iterator<Item = (&'static str, u64, u64)> + '_ {
        NAMES.iter().map(|&(c, name)| {
            (
                name,
                self.get(counter::DIR_INGRESS, c),
                self.get(counter::DIR_EGRESS, c),
            )
        })
    }

    /// A plain-text table of the non-zero counters.
    pub fn table(&self) -> String {
        use std::fmt::Write as _;
        let mut out = format!("{:<14} {:>12} {:>12}\n", "counter", "ingress", "egress");
        for (name, rx, tx) in self.rows().filter(|(_, rx, tx)| rx + tx > 0) {
            let _ = writeln!(out, "{name:<14} {rx:>12} {tx:>12}");
        }
        out
    }

    /// Every named counter by direction: `ingress` and `egress`, each
    /// name → packets.
    pub fn by_direction(&self) -> BTreeMap<String, BTreeMap<String, u64>> {
        let side = |dir| {
            NAMES
                .iter()
                .map(|&(c, name)| (name.to_owned(), self.get(dir, c)))
                .collect()
        };
        BTreeMap::from([
            ("ingress".to_owned(), side(counter::DIR_INGRESS)),
            ("egress".to_owned(), side(counter::DIR_EGRESS)),
        ])
    }
}
