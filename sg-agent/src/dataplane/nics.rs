//! The agent's record of the NICs bound in the maps: for each, its id, the
//! config the kernel holds, and a superset of the keys each table slot may
//! hold (`writer.rs` keeps it so); what unbound NICs left behind.

use std::collections::{BTreeMap, BTreeSet, HashMap as StdHashMap};

use sg_common::policy::{DIR_EGRESS, DIR_INGRESS, IfaceConfig, RuleStats, iface_flags};
use sg_policy::{BindingMode, Cidr, compile::Rank};

use super::{
    grace::{Grace, Ticket},
    image::{OwnEntry, TableKeys},
};

/// What one table slot may hold in the kernel, and what its ranks mean.
#[derive(Debug, Default, Clone)]
pub(super) struct SlotRecord {
    pub(super) keys: TableKeys,
    pub(super) ranks: Vec<Rank>,
}

/// One bound NIC's runtime state.
pub(super) struct Nic {
    pub(super) id: u32,
    pub(super) ifindex: u32,
    /// The config the kernel holds for the interface (version 0: no switch
    /// was ever accepted, nothing of this NIC is in force).
    pub(super) config: IfaceConfig,
    /// `[dir][slot]`.
    pub(super) held: [[SlotRecord; 2]; 2],
    /// Own-address entries, `[slot]`.
    pub(super) own: [BTreeSet<OwnEntry>; 2],
    /// The grace period of the inactive slot's retirement.
    pub(super) retired: Option<Ticket>,
    /// Counter totals of ranks no longer in force, by direction and rank meaning.
    pub(super) totals: StdHashMap<(u32, String), RuleStats>,
    /// In force is a table that drops everything (its policy could not be
    /// written): see [`Dataplane::bind_closed`].
    pub(super) closed: bool,
}

impl Nic {
    pub(super) fn new(id: u32, ifindex: u32) -> Self {
        Self {
            id,
            ifindex,
            // Slot 1 "in force" before the first switch: slot 0 is written first.
            config: IfaceConfig {
                nic: id,
                rx_dir: DIR_INGRESS,
                tx_dir: DIR_EGRESS,
                flags: 0,
                slot: 1,
                version: 0,
            },
            held: Default::default(),
            own: Default::default(),
            retired: None,
            totals: StdHashMap::new(),
            closed: false,
        }
    }
}

/// What an unbound NIC left that could not be removed yet: removed by the
/// next write, `verify`, or cleanup; its id is not handed out meanwhile.
pub(super) struct Leftover {
    pub(super) id: u32,
    pub(super) held: [[SlotRecord; 2]; 2],
    pub(super) own: [BTreeSet<OwnEntry>; 2],
}

/// The bound NICs, by name.
pub struct Nics {
    /// How many may be bound (ids run below it).
    pub(super) limit: u32,
    pub(super) by_name: BTreeMap<String, Nic>,
    /// The last policy version handed out. Versions are unique across NICs and
    /// rebinds, so a session never finds its version current by coincidence.
    pub(super) last_version: u32,
    pub(super) grace: Grace,
    pub(super) leftovers: Vec<Leftover>,
    /// Interface entries of indexes no NIC has any more whose removal failed.
    pub(super) stale_ifaces: BTreeSet<u32>,
}

impl Nics {
    pub fn new(limit: u32) -> Self {
        Self {
            limit,
            by_name: BTreeMap::new(),
            last_version: 0,
            grace: Grace::new(),
            leftovers: Vec::new(),
            stale_ifaces: BTreeSet::new(),
        }
    }

    pub(super) fn free_id(&self) -> Option<u32> {
        let used: BTreeSet<u32> = self
            .by_name
            .values()
            .map(|n| n.id)
            .chain(self.leftovers.iter().map(|l| l.id))
            .collect();
        (0..self.limit).find(|i| !used.contains(i))
    }
}

/// How a NIC is bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub ifindex: u32,
    pub mode: BindingMode,
    pub anti_spoof: bool,
    /// Its own addresses and extra allowed prefixes.
    pub own: Vec<Cidr>,
}

impl Binding {
    pub(super) fn config(&self, nic: u32, slot: u32, version: u32) -> IfaceConfig {
        let (rx_dir, tx_dir) = match self.mode {
            BindingMode::Local => (DIR_INGRESS, DIR_EGRESS),
            BindingMode::Port => (DIR_EGRESS, DIR_INGRESS),
        };
        IfaceConfig {
            nic,
            rx_dir,
            tx_dir,
            flags: if self.anti_spoof {
                iface_flags::ANTI_SPOOF
            } else {
                0
            },
            slot,
            version,
        }
    }
}
