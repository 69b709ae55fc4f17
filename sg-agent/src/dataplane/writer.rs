//! The map writer: loads compiled tables into the inactive slot of a NIC and
//! switches to it with one map update, so no packet is ever judged by a
//! half-written policy (DESIGN "Hitless updates").
//!
//! Order of a switch: (1) wait for the RCU grace period that began when the
//! inactive slot left service (`grace.rs`), so no program run can still be
//! reading it; (2) fold that slot's rule counters into the running totals
//! and zero them; (3) make the slot hold exactly the new entries (own
//! addresses, rule bits, port bounds, prefixes; deletions first, so the
//! maps never hold old and new at once; the header last); (4) replace the
//! interface's config entry whole (slot flipped, version bumped): the
//! switch. Nothing in memory says the new slot is in force until the kernel
//! accepted that update.
//!
//! What a slot holds is recorded as a superset of what the kernel may hold:
//! a key is recorded before it is written and forgotten only once it was
//! deleted. A write that fails halfway therefore leaves nothing the agent
//! does not know of, and the next write of that slot (or a cleanup, or
//! `verify`) removes exactly what is left.

use std::collections::{BTreeMap, BTreeSet};

use aya::maps::{
    HashMap, MapData,
    lpm_trie::{Key, LpmTrie},
};
use sg_common::{
    maps::{ADDR4, ADDR6, BITS, BOUNDS, IFACES, OWN, PLAT4, PLAT6, SETTINGS, TABLES},
    policy::{
        AddrKeyV4, AddrKeyV6, BitsKey, DIR_EGRESS, DIR_INGRESS, IfaceConfig, OwnAddrKey, TableMeta,
        own_key_nic, table_id,
    },
};

use super::{
    Dataplane, Error, Maps,
    image::{OwnEntry, TableImage, TableKeys, own_image, settings_image, table_image},
    mapio::{deleted, injected, map_err},
    nics::{Binding, Leftover, Nic, SlotRecord},
};
use crate::dataplane::faults;
use sg_policy::compile::{Rank, Table};

fn next_version(last: &mut u32) -> u32 {
    *last = last.wrapping_add(1).max(1);
    *last
}

/// Makes a map hold `want` for the keys `held` records (a superset of what
/// it holds): deletes what is recorded but not wanted, then writes what is
/// wanted, recording each key before its write and forgetting it only once
/// deleted. `remove` and `insert` are the map's own operations.
fn sync_entries<E: Ord + Copy, V>(
    name: &'static str,
    want: &BTreeMap<E, V>,
    held: &mut BTreeSet<E>,
    mut remove: impl FnMut(E) -> Result<(), aya::maps::MapError>,
    mut insert: impl FnMut(E, &V) -> Result<(), aya::maps::MapError>,
) -> Result<(), Error> {
    let gone: Vec<E> = held
        .iter()
        .filter(|e| !want.contains_key(e))
        .copied()
        .collect();
    for e in gone {
        injected(name)?;
        deleted(name, remove(e))?;
        held.remove(&e);
    }
    for (e, v) in want {
        held.insert(*e);
        injected(name)?;
        insert(*e, v).map_err(map_err(name))?;
    }
    Ok(())
}

/// [`sync_entries`] on an LPM trie; `key` turns a recorded entry into its key.
fn sync_trie<E: Ord + Copy, K: aya::Pod, V: aya::Pod>(
    trie: &mut LpmTrie<MapData, K, V>,
    name: &'static str,
    want: &BTreeMap<E, V>,
    held: &mut BTreeSet<E>,
    key: impl Fn(E) -> Key<K>,
) -> Result<(), Error> {
    let trie = std::cell::RefCell::new(trie);
    sync_entries(
        name,
        want,
        held,
        |e| trie.borrow_mut().remove(&key(e)),
        |e, v| trie.borrow_mut().insert(&key(e), v, 0),
    )
}

/// [`sync_entries`] on a hash map.
fn sync_hash<E: Ord + Copy, K: aya::Pod, V: aya::Pod>(
    hash: &mut HashMap<MapData, K, V>,
    name: &'static str,
    want: &BTreeMap<E, V>,
    held: &mut BTreeSet<E>,
    key: impl Fn(E) -> K,
) -> Result<(), Error> {
    let hash = std::cell::RefCell::new(hash);
    sync_entries(
        name,
        want,
        held,
        |e| hash.borrow_mut().remove(&key(e)),
        |e, v| hash.borrow_mut().insert(&key(e), v, 0),
    )
}

pub(super) fn addr4_key(table: u32) -> impl Fn((u32, u32, [u8; 4])) -> Key<AddrKeyV4> {
    move |(field, len, addr)| {
        Key::new(
            len,
            AddrKeyV4 {
                table_field: (table * 2 + field).to_be_bytes(),
                addr,
            },
        )
    }
}

pub(super) fn addr6_key(table: u32) -> impl Fn((u32, u32, [u8; 16])) -> Key<AddrKeyV6> {
    move |(field, len, addr)| {
        Key::new(
            len,
            AddrKeyV6 {
                table_field: (table * 2 + field).to_be_bytes(),
                addr,
            },
        )
    }
}

pub(super) fn own_key(nic: u32, slot: u32) -> impl Fn(OwnEntry) -> Key<OwnAddrKey> {
    move |(len, family, addr)| {
        Key::new(
            len,
            OwnAddrKey {
                nic: own_key_nic(nic, slot),
                family,
                addr,
            },
        )
    }
}

impl Maps {
    /// Writes the global settings: the port-25 block, platform addresses,
    /// session timeouts and the fragment timeout.
    pub fn set_settings(&mut self, settings: &sg_policy::Settings) -> Result<(), Error> {
        let image = settings_image(settings);
        // The tries first: the flag that makes programs look at them goes on
        // only once they hold the addresses.
        let mut held4 = plat_keys(&self.plat4);
        sync_trie(
            &mut self.plat4,
            PLAT4,
            &image.plat4,
            &mut held4,
            |(l, a)| Key::new(l, a),
        )?;
        let mut held6 = plat_keys(&self.plat6);
        sync_trie(
            &mut self.plat6,
            PLAT6,
            &image.plat6,
            &mut held6,
            |(l, a)| Key::new(l, a),
        )?;
        injected(SETTINGS)?;
        self.settings
            .set(0, &image.value, 0)
            .map_err(map_err(SETTINGS))
    }

    fn set_meta(&mut self, table: u32, meta: &TableMeta) -> Result<(), Error> {
        injected(TABLES)?;
        self.tables.set(table, meta, 0).map_err(map_err(TABLES))
    }

    /// Forgets the first fragments NIC id `id` remembered.
    fn flush_fragments(&mut self, id: u32) -> usize {
        self.forget_fragments_where(|k| k.nic == id)
    }

    /// Deletes every entry `held` and `own` record, forgetting each once
    /// gone, and resets the tables' headers.
    pub(super) fn clear_held(
        &mut self,
        id: u32,
        held: &mut [[SlotRecord; 2]; 2],
        own: &mut [BTreeSet<OwnEntry>; 2],
    ) -> Result<(), Error> {
        self.delete_only(id, held, own)?;
        for dir in [DIR_INGRESS, DIR_EGRESS] {
            for slot in 0..2 {
                held[dir as usize][slot as usize].ranks.clear();
                self.set_meta(table_id(id, dir, slot), &TableImage::closed_meta())?;
            }
        }
        Ok(())
    }

    /// Deletes every entry `held` and `own` record for NIC id `id`
    /// (headers stay), forgetting each once gone.
    pub(super) fn delete_only(
        &mut self,
        id: u32,
        held: &mut [[SlotRecord; 2]; 2],
        own: &mut [BTreeSet<OwnEntry>; 2],
    ) -> Result<(), Error> {
        let empty = TableImage::empty();
        for dir in [DIR_INGRESS, DIR_EGRESS] {
            for slot in 0..2 {
                let h = &mut held[dir as usize][slot as usize];
                self.sync_table(table_id(id, dir, slot), &empty, &mut h.keys)?;
            }
        }
        for slot in 0..2 {
            self.sync_own(id, slot, &BTreeSet::new(), &mut own[slot as usize])?;
        }
        Ok(())
    }

    /// Makes NIC id `id`'s own addresses of `slot` those of `want`, with
    /// `held` the superset record of what the trie holds.
    fn sync_own(
        &mut self,
        id: u32,
        slot: u32,
        want: &BTreeSet<OwnEntry>,
        held: &mut BTreeSet<OwnEntry>,
    ) -> Result<(), Error> {
        let want: BTreeMap<OwnEntry, u32> = want.iter().map(|e| (*e, 1)).collect();
        sync_trie(&mut self.own, OWN, &want, held, own_key(id, slot))
    }

    /// Makes table `table`'s entries those of `image` (not its header), with
    /// `keys` the superset record of what it holds.
    fn sync_table(
        &mut self,
        table: u32,
        image: &TableImage,
        keys: &mut TableKeys,
    ) -> Result<(), Error> {
        sync_hash(
            &mut self.bits,
            BITS,
            &image.bits,
            &mut keys.bits,
            |(kind, index)| BitsKey { table, kind, index },
        )?;
        sync_hash(
            &mut self.bounds,
            BOUNDS,
            &image.bounds,
            &mut keys.bounds,
            |field| table * 2 + field,
        )?;
        sync_trie(
            &mut self.addr4,
            ADDR4,
            &image.addr4,
            &mut keys.addr4,
            addr4_key(table),
        )?;
        sync_trie(
            &mut self.addr6,
            ADDR6,
            &image.addr6,
            &mut keys.addr6,
            addr6_key(table),
        )
    }
}

/// What a platform trie holds, read from the map itself.
pub(super) fn plat_keys<const N: usize>(
    trie: &LpmTrie<MapData, [u8; N], u32>,
) -> BTreeSet<(u32, [u8; N])>
where
    [u8; N]: aya::Pod,
{
    trie.keys()
        .filter_map(Result::ok)
        .map(|k| (k.prefix_len(), k.data()))
        .collect()
}

impl Dataplane {
    /// The NIC entry of `name`, made (with a free id) if it has none.
    fn nic_entry(&mut self, name: &str, ifindex: u32) -> Result<&mut Nic, Error> {
        if !self.nics.by_name.contains_key(name) {
            let id = self
                .nics
                .free_id()
                .ok_or(Error::TooManyNics(self.nics.limit))?;
            self.nics
                .by_name
                .insert(name.to_owned(), Nic::new(id, ifindex));
        }
        Ok(self.nics.by_name.get_mut(name).expect("inserted above"))
    }

    /// The IPv4 and IPv6 trie entries every table of every NIC will hold
    /// (both slots, and what unbound NICs left) once the NICs of `new` (name,
    /// prefixes of both directions' new tables) have their new tables in
    /// their inactive slot.
    pub fn prefixes_after(&self, new: &[(&str, (usize, usize))]) -> (usize, usize) {
        let mut total = (0, 0);
        let mut add = |(a, b): (usize, usize)| {
            total.0 += a;
            total.1 += b;
        };
        for (name, n) in &self.nics.by_name {
            let active = (n.config.slot & 1) as usize;
            let planned = new.iter().find(|(m, _)| m == name).map(|(_, p)| *p);
            for dir in 0..2 {
                add(n.held[dir][active].keys.prefixes());
                if planned.is_none() {
                    add(n.held[dir][active ^ 1].keys.prefixes());
                }
            }
            if let Some(p) = planned {
                add(p);
            }
        }
        for (name, p) in new {
            if !self.nics.by_name.contains_key(*name) {
                add(*p);
            }
        }
        for l in &self.nics.leftovers {
            for h in l.held.iter().flatten() {
                add(h.keys.prefixes());
            }
        }
        total
    }

    /// Waits until no program run can still read NIC `name`'s inactive slot.
    fn wait_retired(&mut self, name: &str) {
        let n = self.nics.by_name.get_mut(name).expect("bound");
        if let Some(t) = n.retired.take() {
            self.nics.grace.wait(t);
        }
    }

    /// Installs `ingress` and `egress` for NIC `name` and switches to them in
    /// one step. The first install also binds the interface. Returns the new
    /// policy version. On error the tables in force are the ones before.
    pub fn install(
        &mut self,
        name: &str,
        binding: &Binding,
        ingress: &Table,
        egress: &Table,
    ) -> Result<u32, Error> {
        let slot = self.nic_entry(name, binding.ifindex)?.config.slot ^ 1;
        self.wait_retired(name);
        faults::point("install.begin");
        self.write_own(name, slot, &own_image(&binding.own))?;
        faults::point("install.own");
        for (dir, table) in [(DIR_INGRESS, ingress), (DIR_EGRESS, egress)] {
            self.fold_and_zero_stats(name, dir, slot)?;
            self.write_table(name, dir, slot, &table_image(table), &table.ranks)?;
            faults::point("install.table");
        }
        let version = self.switch(name, binding, slot)?;
        faults::point("install.switched");
        self.prune_totals(name);
        Ok(version)
    }

    /// The switch: one whole-value update of the interface's entry, then (and
    /// only then) the new slot is in force for the agent too.
    fn switch(&mut self, name: &str, binding: &Binding, slot: u32) -> Result<u32, Error> {
        let (id, old_ifindex) = {
            let n = &self.nics.by_name[name];
            (n.id, n.ifindex)
        };
        let mut last = self.nics.last_version;
        let config = binding.config(id, slot, next_version(&mut last));
        injected(IFACES)?;
        self.maps
            .ifaces
            .insert(&binding.ifindex, &config, 0)
            .map_err(map_err(IFACES))?;
        self.nics.last_version = last;
        let ticket = self.nics.grace.request();
        let n = self.nics.by_name.get_mut(name).expect("bound");
        let was_in_force = n.config.version != 0;
        n.config = config;
        n.ifindex = binding.ifindex;
        n.retired = Some(ticket);
        n.closed = false;
        if was_in_force && old_ifindex != binding.ifindex {
            self.remove_iface(old_ifindex);
        }
        Ok(config.version)
    }

    /// Removes the entry of an interface index no NIC has any more; a
    /// failure is remembered and retried by [`Dataplane::clean_leftovers`].
    fn remove_iface(&mut self, ifindex: u32) {
        let r = injected(IFACES).and_then(|()| {
            let r = self.maps.ifaces.remove(&ifindex);
            deleted(IFACES, r)
        });
        match r {
            Ok(()) => {
                self.nics.stale_ifaces.remove(&ifindex);
            }
            Err(e) => {
                log::error!("removing the entry of gone interface index {ifindex}: {e}");
                self.nics.stale_ifaces.insert(ifindex);
            }
        }
    }

    /// Binds NIC `name` to a table that drops everything: for an interface
    /// whose policy could not be written, so that it is not left passing
    /// everything (fail closed). ARP, neighbour discovery, path MTU
    /// discovery and platform addresses still pass (SPEC §3 steps 0–2).
    pub fn bind_closed(&mut self, name: &str, binding: &Binding) -> Result<u32, Error> {
        let slot = self.nic_entry(name, binding.ifindex)?.config.slot ^ 1;
        self.wait_retired(name);
        let id = self.nics.by_name[name].id;
        for dir in [DIR_INGRESS, DIR_EGRESS] {
            self.fold_and_zero_stats(name, dir, slot)?;
            self.maps
                .set_meta(table_id(id, dir, slot), &TableImage::closed_meta())?;
            self.nics.by_name.get_mut(name).expect("bound").held[dir as usize][slot as usize]
                .ranks
                .clear();
        }
        let version = self.switch(name, binding, slot)?;
        self.nics.by_name.get_mut(name).expect("bound").closed = true;
        Ok(version)
    }

    /// Whether NIC `name` is bound to a table that drops everything.
    pub fn is_closed(&self, name: &str) -> bool {
        self.nics.by_name.get(name).is_some_and(|n| n.closed)
    }

    /// Gives NIC `name` a new policy version without changing its tables, so
    /// its sessions are checked again (used when settings that decide packets
    /// before the rules changed). Returns the new version.
    pub fn touch(&mut self, name: &str) -> Result<Option<u32>, Error> {
        let Some(n) = self.nics.by_name.get(name) else {
            return Ok(None);
        };
        if n.config.version == 0 {
            return Ok(None);
        }
        let (ifindex, mut config) = (n.ifindex, n.config);
        let mut last = self.nics.last_version;
        config.version = next_version(&mut last);
        injected(IFACES)?;
        self.maps
            .ifaces
            .insert(&ifindex, &config, 0)
            .map_err(map_err(IFACES))?;
        self.nics.last_version = last;
        self.nics.by_name.get_mut(name).expect("bound").config = config;
        Ok(Some(config.version))
    }

    /// Unbinds NIC `name`: its interface passes untouched again, and its
    /// tables, addresses and sessions are removed. If removing them fails
    /// after the interface's entry is gone, what is left is kept as a
    /// leftover, removed later; the NIC is unbound either way.
    pub fn unbind(&mut self, name: &str) -> Result<(), Error> {
        let Some(n) = self.nics.by_name.get(name) else {
            return Ok(());
        };
        let (id, ifindex, in_force) = (n.id, n.ifindex, n.config.version != 0);
        if in_force {
            injected(IFACES)?;
            let r = self.maps.ifaces.remove(&ifindex);
            deleted(IFACES, r)?;
        }
        let mut n = self.nics.by_name.remove(name).expect("bound");
        for dir in [DIR_INGRESS, DIR_EGRESS] {
            for slot in 0..2 {
                self.fold_stats_of(&mut n, dir, slot);
            }
        }
        self.nics.leftovers.push(Leftover {
            id,
            held: n.held,
            own: n.own,
        });
        // The slot in force just left service too.
        self.nics.grace.synchronize();
        // Its id may go to another NIC: none of its sessions, nor what it
        // remembers of first fragments, may carry over.
        self.maps.flush_sessions(&super::session_table::Filter {
            nic: Some(id),
            ..Default::default()
        });
        self.maps.flush_fragments(id);
        self.clean_leftovers()
    }

    /// Removes what unbound NICs left in the maps, and interface entries of
    /// indexes that are gone. Keeps what still fails, to try again later.
    pub fn clean_leftovers(&mut self) -> Result<(), Error> {
        let mut result = Ok(());
        for ifindex in std::mem::take(&mut self.nics.stale_ifaces) {
            self.remove_iface(ifindex);
        }
        if !self.nics.stale_ifaces.is_empty() {
            result = Err(Error::Leftovers(format!(
                "interface entries {:?}",
                self.nics.stale_ifaces
            )));
        }
        let mut still = Vec::new();
        for mut l in std::mem::take(&mut self.nics.leftovers) {
            match self.maps.clear_held(l.id, &mut l.held, &mut l.own) {
                Ok(()) => {}
                Err(e) => {
                    log::error!("removing what NIC id {} left in the maps: {e}", l.id);
                    result = Err(e);
                    still.push(l);
                }
            }
        }
        self.nics.leftovers = still;
        result
    }

    /// The interface config in force for NIC `name`, as the agent wrote it.
    pub fn iface_config(&self, name: &str) -> Option<IfaceConfig> {
        self.nics.by_name.get(name).map(|n| n.config)
    }

    /// The policy version in force on NIC `name` (none if nothing is).
    pub fn version(&self, name: &str) -> Option<u32> {
        self.nics
            .by_name
            .get(name)
            .map(|n| n.config.version)
            .filter(|&v| v != 0)
    }

    /// The names of the bound NICs (some of which may have nothing in force:
    /// see [`Dataplane::version`]).
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
        n.held[dir as usize][n.config.slot as usize]
            .ranks
            .get(rank as usize)
    }

    fn write_own(&mut self, name: &str, slot: u32, want: &BTreeSet<OwnEntry>) -> Result<(), Error> {
        let n = self.nics.by_name.get_mut(name).expect("bound");
        // `held` stays what the kernel may hold, whatever happens.
        self.maps
            .sync_own(n.id, slot, want, &mut n.own[slot as usize])
    }

    fn write_table(
        &mut self,
        name: &str,
        dir: u32,
        slot: u32,
        image: &TableImage,
        ranks: &[Rank],
    ) -> Result<(), Error> {
        let n = self.nics.by_name.get_mut(name).expect("bound");
        let table = table_id(n.id, dir, slot);
        let h = &mut n.held[dir as usize][slot as usize];
        // Its counters were folded: until the write succeeds, no rank of
        // this slot means anything.
        h.ranks.clear();
        let r = self
            .maps
            .sync_table(table, image, &mut h.keys)
            .and_then(|()| self.maps.set_meta(table, &image.meta));
        if r.is_ok() {
            h.ranks = ranks.to_vec();
        }
        r
    }
}

impl TableImage {
    /// A table with nothing in it and the closed header: what an unused
    /// slot holds.
    pub fn empty() -> Self {
        Self {
            meta: Self::closed_meta(),
            bits: BTreeMap::new(),
            bounds: BTreeMap::new(),
            addr4: BTreeMap::new(),
            addr6: BTreeMap::new(),
        }
    }
}
