//! The drift check: every policy map read back and compared with what the
//! agent put there, so a difference (a failed write the agent did not see,
//! someone with root editing maps or removing pins, a bug) is named, not
//! found by an attacker. `sg-agent verify` and the daemon's periodic
//! self-check run it; the reconciler repairs what it finds (`reconcile.rs`).

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

use sg_common::{
    maps::{IFACES, SETTINGS},
    policy::{DIR_EGRESS, DIR_INGRESS, Settings, own_key_nic, table_id},
};

use super::{
    Dataplane, Error, NamespaceLock,
    adopt::{Scan, keys_of},
    image::{TableImage, TableKeys, own_image, settings_image, table_image},
    mapio::map_err,
    nics::Binding,
    pins::pin_err,
    writer::plat_keys,
};
use sg_policy::compile::Table;

/// What one bound NIC must hold in the kernel.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    pub binding: &'a Binding,
    pub ingress: &'a Table,
    pub egress: &'a Table,
}

/// How a difference is put right.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Repair {
    /// Install the NIC's policy again (into the other slot, then switch).
    Reinstall,
    /// Attach the NIC's interface again.
    Reattach,
    /// Remove entries the agent does not know of.
    RemoveUnknown,
    /// Write the settings again.
    Settings,
    /// Put the pin directory and the map pins back.
    Repin,
}

/// One difference between what the kernel holds and what it should.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Drift {
    /// The NIC it concerns, if one.
    pub nic: Option<String>,
    pub what: String,
    pub repair: Repair,
}

fn nic_drift(nic: &str, what: String, repair: Repair) -> Drift {
    Drift {
        nic: Some(nic.to_owned()),
        what,
        repair,
    }
}

/// Describes how map `name` differs between `want` and `have`: entries
/// missing, extra and different, or `None` if equal.
fn compare<K: Ord, V: PartialEq>(
    name: &str,
    want: &BTreeMap<K, V>,
    have: &BTreeMap<K, V>,
) -> Option<String> {
    let missing = want.keys().filter(|k| !have.contains_key(k)).count();
    let extra = have.keys().filter(|k| !want.contains_key(k)).count();
    let differ = want
        .iter()
        .filter(|(k, v)| have.get(k).is_some_and(|h| h != *v))
        .count();
    (missing + extra + differ > 0)
        .then(|| format!("{name}: {missing} entries missing, {extra} extra, {differ} different"))
}

/// Entries of `have` that `held` does not record.
fn unknown(have: &TableKeys, held: &TableKeys) -> usize {
    have.bits.difference(&held.bits).count()
        + have.bounds.difference(&held.bounds).count()
        + have.addr4.difference(&held.addr4).count()
        + have.addr6.difference(&held.addr6).count()
}

impl Dataplane {
    /// Reads every policy map back and compares it with `expected` (every
    /// bound NIC whose interface is here) and `settings`; the links too
    /// (`pins.rs`). Empty: the kernel holds exactly the compiled policy and
    /// nothing else.
    pub fn verify(
        &self,
        expected: &BTreeMap<String, Expected<'_>>,
        settings: &sg_policy::Settings,
    ) -> Result<Vec<Drift>, Error> {
        let mut scan = self.maps.scan();
        let mut out = Vec::new();
        let mut known_ifaces = BTreeSet::new();
        let mut known_ids = BTreeSet::new();
        for (name, want) in expected {
            let Some(n) = self.nics.by_name.get(name) else {
                out.push(nic_drift(
                    name,
                    "not bound in the data plane".to_owned(),
                    Repair::Reinstall,
                ));
                continue;
            };
            known_ids.insert(n.id);
            known_ifaces.insert(n.ifindex);
            out.extend(self.verify_nic(name, want, &mut scan)?);
        }
        // Bound in the data plane but not expected (a NIC whose interface
        // is gone is neither): still known, not drift by itself.
        for (name, n) in &self.nics.by_name {
            if !expected.contains_key(name) {
                known_ids.insert(n.id);
                known_ifaces.insert(n.ifindex);
                for dir in [DIR_INGRESS, DIR_EGRESS] {
                    for slot in 0..2 {
                        scan.tables.remove(&table_id(n.id, dir, slot));
                    }
                }
                for slot in 0..2 {
                    scan.own.remove(&own_key_nic(n.id, slot));
                }
            }
        }
        for l in &self.nics.leftovers {
            known_ids.insert(l.id);
        }
        let stray_tables = scan
            .tables
            .keys()
            .filter(|t| !known_ids.contains(&(*t / 4)))
            .count();
        let stray_own = scan
            .own
            .keys()
            .filter(|k| !known_ids.contains(&(*k / 2)))
            .count();
        if stray_tables + stray_own > 0 {
            out.push(Drift {
                nic: None,
                what: format!(
                    "entries of {stray_tables} tables and {stray_own} own-address sets that belong to no NIC the agent knows"
                ),
                repair: Repair::RemoveUnknown,
            });
        }
        let stray: Vec<u32> = scan
            .ifaces
            .keys()
            .filter(|i| !known_ifaces.contains(i) && !self.nics.stale_ifaces.contains(i))
            .copied()
            .collect();
        if !stray.is_empty() {
            out.push(Drift {
                nic: None,
                what: format!("interface entries for indexes {stray:?} that no bound NIC has"),
                repair: Repair::RemoveUnknown,
            });
        }
        out.extend(self.verify_settings(settings)?);
        out.extend(self.check_map_pins());
        out.extend(
            self.links
                .check(&self.ebpf)
                .into_iter()
                .map(|(nic, what)| Drift {
                    nic: Some(nic),
                    what,
                    repair: Repair::Reattach,
                }),
        );
        Ok(out)
    }

    fn verify_nic(
        &self,
        name: &str,
        want: &Expected<'_>,
        scan: &mut Scan,
    ) -> Result<Vec<Drift>, Error> {
        let n = &self.nics.by_name[name];
        let mut out = Vec::new();
        let slot = n.config.slot & 1;
        if n.closed {
            out.push(nic_drift(
                name,
                "closed: its policy could not be put in force, every packet is dropped".to_owned(),
                Repair::Reinstall,
            ));
        }
        match scan.ifaces.remove(&n.ifindex) {
            None => out.push(nic_drift(
                name,
                format!("no interface entry for index {}", n.ifindex),
                Repair::Reinstall,
            )),
            Some(c) if c != n.config => out.push(nic_drift(
                name,
                format!(
                    "interface entry {c:?} is not what the agent wrote, {:?}",
                    n.config
                ),
                Repair::Reinstall,
            )),
            Some(_) => {}
        }
        let config = want.binding.config(n.id, n.config.slot, n.config.version);
        if n.ifindex != want.binding.ifindex || config != n.config {
            out.push(nic_drift(
                name,
                "the binding in force is not the binding of the policy".to_owned(),
                Repair::Reinstall,
            ));
        }
        for (dir, table) in [(DIR_INGRESS, want.ingress), (DIR_EGRESS, want.egress)] {
            let this = table_id(n.id, dir, slot);
            let mut have = scan.tables.remove(&this).unwrap_or_else(TableImage::empty);
            have.meta = self.maps.meta(this)?;
            let want = table_image(table);
            let which = if dir == DIR_INGRESS {
                "ingress"
            } else {
                "egress"
            };
            let diffs: Vec<String> = [
                (have.meta != want.meta).then(|| "header differs".to_owned()),
                compare("rule bits", &want.bits, &have.bits),
                compare("port bounds", &want.bounds, &have.bounds),
                compare("IPv4 prefixes", &want.addr4, &have.addr4),
                compare("IPv6 prefixes", &want.addr6, &have.addr6),
            ]
            .into_iter()
            .flatten()
            .collect();
            if !n.closed && !diffs.is_empty() {
                out.push(nic_drift(
                    name,
                    format!("{which} table in force: {}", diffs.join("; ")),
                    Repair::Reinstall,
                ));
            }
            let other = table_id(n.id, dir, slot ^ 1);
            let held = &n.held[dir as usize][(slot ^ 1) as usize].keys;
            let extra = unknown(&keys_of(scan.tables.remove(&other).as_ref()), held);
            if extra > 0 {
                out.push(nic_drift(
                    name,
                    format!(
                        "{which} table out of force: {extra} entries the agent does not know of"
                    ),
                    Repair::RemoveUnknown,
                ));
            }
        }
        let have = scan
            .own
            .remove(&own_key_nic(n.id, slot))
            .unwrap_or_default();
        if !n.closed && have != own_image(&want.binding.own) {
            out.push(nic_drift(
                name,
                "own addresses in force differ from the binding's".to_owned(),
                Repair::Reinstall,
            ));
        }
        let have = scan
            .own
            .remove(&own_key_nic(n.id, slot ^ 1))
            .unwrap_or_default();
        if !have.is_subset(&n.own[(slot ^ 1) as usize]) {
            out.push(nic_drift(
                name,
                "own addresses out of force the agent does not know of".to_owned(),
                Repair::RemoveUnknown,
            ));
        }
        Ok(out)
    }

    fn verify_settings(&self, settings: &sg_policy::Settings) -> Result<Vec<Drift>, Error> {
        let want = settings_image(settings);
        let have: Settings = self.maps.settings.get(&0, 0).map_err(map_err(SETTINGS))?;
        let plat4: BTreeSet<(u32, [u8; 4])> = want.plat4.keys().copied().collect();
        let plat6: BTreeSet<(u32, [u8; 16])> = want.plat6.keys().copied().collect();
        let ok = have == want.value
            && plat_keys(&self.maps.plat4) == plat4
            && plat_keys(&self.maps.plat6) == plat6;
        Ok(if ok {
            Vec::new()
        } else {
            vec![Drift {
                nic: None,
                what: "settings or platform addresses differ from the policy's".to_owned(),
                repair: Repair::Settings,
            }]
        })
    }

    /// Removes every entry of the policy maps that the agent does not know
    /// of: tables and own addresses of no NIC it knows, entries out of force
    /// it does not record, interface entries of no bound NIC.
    pub fn remove_unknown(&mut self) -> Result<usize, Error> {
        let mut scan = self.maps.scan();
        let mut removed = 0;
        let mut known_ifaces: BTreeSet<u32> = self.nics.stale_ifaces.clone();
        let mut leftovers = Vec::new();
        let names: Vec<String> = self.nics.by_name.keys().cloned().collect();
        for name in names {
            let n = &self.nics.by_name[&name];
            known_ifaces.insert(n.ifindex);
            let (id, active) = (n.id, n.config.slot & 1);
            let mut extra = super::nics::Leftover {
                id,
                held: Default::default(),
                own: Default::default(),
            };
            for dir in [DIR_INGRESS, DIR_EGRESS] {
                for slot in 0..2 {
                    let have = keys_of(scan.tables.remove(&table_id(id, dir, slot)).as_ref());
                    let held = &n.held[dir as usize][slot as usize].keys;
                    // Only what the agent does not record, and never in the
                    // slot in force (a reinstall puts that one right).
                    if slot != active {
                        let e = &mut extra.held[dir as usize][slot as usize].keys;
                        e.bits = have.bits.difference(&held.bits).copied().collect();
                        e.bounds = have.bounds.difference(&held.bounds).copied().collect();
                        e.addr4 = have.addr4.difference(&held.addr4).copied().collect();
                        e.addr6 = have.addr6.difference(&held.addr6).copied().collect();
                        removed += e.len();
                    }
                }
            }
            let other = active ^ 1;
            let have = scan.own.remove(&own_key_nic(id, other)).unwrap_or_default();
            extra.own[other as usize] = have.difference(&n.own[other as usize]).copied().collect();
            removed += extra.own[other as usize].len();
            scan.own.remove(&own_key_nic(id, active));
            leftovers.push(extra);
        }
        for l in &self.nics.leftovers {
            for dir in [DIR_INGRESS, DIR_EGRESS] {
                for slot in 0..2 {
                    scan.tables.remove(&table_id(l.id, dir, slot));
                }
            }
            for slot in 0..2 {
                scan.own.remove(&own_key_nic(l.id, slot));
            }
        }
        // What is left belongs to no NIC the agent knows.
        let ids: BTreeSet<u32> = scan
            .tables
            .keys()
            .map(|t| t / 4)
            .chain(scan.own.keys().map(|k| k / 2))
            .collect();
        for id in ids {
            let mut l = super::nics::Leftover {
                id,
                held: Default::default(),
                own: Default::default(),
            };
            for dir in [DIR_INGRESS, DIR_EGRESS] {
                for slot in 0..2 {
                    if let Some(t) = scan.tables.remove(&table_id(id, dir, slot)) {
                        removed += t.keys().len();
                        l.held[dir as usize][slot as usize].keys = t.keys();
                    }
                }
            }
            for slot in 0..2u32 {
                if let Some(o) = scan.own.remove(&own_key_nic(id, slot)) {
                    removed += o.len();
                    l.own[slot as usize] = o;
                }
            }
            leftovers.push(l);
        }
        for mut l in leftovers {
            // Entries of a known NIC's slot out of force are deleted in
            // place: its record stays as it is.
            self.maps.delete_only(l.id, &mut l.held, &mut l.own)?;
        }
        for ifindex in scan.ifaces.keys() {
            if !known_ifaces.contains(ifindex) {
                let r = self.maps.ifaces.remove(ifindex);
                super::mapio::deleted(IFACES, r)?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

impl Dataplane {
    /// Checks that the pin directory is still the one this agent locked and
    /// that every map pin in it names this agent's map: a pin removed (or a
    /// directory removed by hand) would let the next agent start over fresh
    /// maps, blind to what is enforced.
    pub(super) fn check_map_pins(&self) -> Vec<Drift> {
        let (Some(root), Some(lock)) = (&self.pins, &self.lock) else {
            return Vec::new();
        };
        let drift = |what: String| Drift {
            nic: None,
            what,
            repair: Repair::Repin,
        };
        if !lock.still_holds() {
            return vec![drift(format!(
                "the pin directory {} was removed or replaced",
                root.display()
            ))];
        }
        let mut out = Vec::new();
        for &(name, ours) in self.maps.pinned_ids() {
            let path = root.join("maps").join(name);
            let pinned = pinned_id(&path);
            if pinned != Some(ours) {
                out.push(drift(format!(
                    "map pin {} {}",
                    path.display(),
                    if pinned.is_none() {
                        "is missing"
                    } else {
                        "names another map"
                    }
                )));
            }
        }
        out
    }

    /// Puts the pin directory and the map pins back: takes the namespace's
    /// lock again if the directory was made anew, pins every map whose pin
    /// is missing or names another map. Links are put back by reattaching
    /// (`check_links`).
    pub fn repin(&mut self) -> Result<(), Error> {
        let Some(root) = self.pins.clone() else {
            return Ok(());
        };
        if !self.lock.as_ref().is_some_and(NamespaceLock::still_holds) {
            let lock = NamespaceLock::acquire(&root).map_err(|e| Error::Link {
                path: root.clone(),
                reason: e.to_string(),
            })?;
            self.lock = Some(lock);
        }
        let dir = root.join("maps");
        std::fs::create_dir_all(&dir).map_err(|e| pin_err(&dir, e))?;
        for &(name, ours) in self.maps.pinned_ids() {
            let path = dir.join(name);
            let pinned = pinned_id(&path);
            if pinned == Some(ours) {
                continue;
            }
            if pinned.is_some() {
                std::fs::remove_file(&path).map_err(|e| pin_err(&path, e))?;
            }
            // Our own map, reopened by its id: the handle the jobs use
            // cannot pin without giving itself up.
            aya::maps::MapData::from_id(ours)
                .map_err(map_err(name))?
                .pin(&path)
                .map_err(|e| pin_err(&path, e))?;
            log::warn!("pinned {} again", path.display());
        }
        Ok(())
    }
}

/// The kernel id of the map pinned at `path`, if one is.
fn pinned_id(path: &Path) -> Option<u32> {
    aya::maps::MapData::from_pin(path)
        .ok()
        .and_then(|m| m.info().ok())
        .map(|i| i.id())
}
