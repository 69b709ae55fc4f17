//! In a fleet, the NICs of other hosts that no rule of this host names:
//! known by host, name and groups only, counted by their group lists.
//!
//! A host compiles the addresses of a group's members only where one of its
//! own NICs' groups names that group (as a rule's peer, or as the NIC's own
//! group for the intra-group policy). Every other NIC of the fleet matters
//! here for validation alone: the limits that span NICs (the 1,000 rules of
//! a NIC, mixed group types, a group in use) depend on a NIC's list of
//! groups, not on its addresses. A [`Census`] keeps that much — about 20
//! bytes a NIC and one entry per distinct list of groups — so that an
//! agent's memory grows with the members its rules name, not with the
//! fleet. The NICs it does name are held whole, in [`State::remote`].
//!
//! [`State::remote`]: crate::State::remote

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::ids::GroupId;

/// The longest name a census holds: an interface name's (`validate` checks
/// that its limit is no longer).
pub const MAX_NAME_BYTES: usize = 15;

/// An interface name held inline (they are at most 15 bytes).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct IfName {
    len: u8,
    bytes: [u8; MAX_NAME_BYTES],
}

impl IfName {
    fn new(name: &str) -> Option<Self> {
        let src = name.as_bytes();
        if src.len() > MAX_NAME_BYTES {
            return None;
        }
        let mut bytes = [0; MAX_NAME_BYTES];
        bytes[..src.len()].copy_from_slice(src);
        Some(Self {
            len: u8::try_from(src.len()).ok()?,
            bytes,
        })
    }

    fn as_str(&self) -> &str {
        // Made from a `&str`, cut nowhere else.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
    }
}

/// One distinct list of groups and how many counted NICs have it.
#[derive(Debug, Clone)]
struct Tally {
    groups: Vec<GroupId>,
    nics: u32,
}

/// The counted NICs of other hosts (see the module doc).
#[derive(Clone, Default)]
pub struct Census {
    /// Every list seen, by index; a list no NIC has any more keeps its slot.
    lists: Vec<Tally>,
    index: BTreeMap<Vec<GroupId>, u32>,
    /// Each host's counted NICs, sorted by name, with their list's index.
    hosts: BTreeMap<String, Vec<(IfName, u32)>>,
}

/// A name longer than an interface name can be: the caller validates names
/// before it counts them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an interface name is at most {MAX_NAME_BYTES} bytes: {0:?}")]
pub struct NameTooLong(pub String);

impl Census {
    /// Whether no NIC is counted.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// How many NICs are counted.
    pub fn len(&self) -> usize {
        self.hosts.values().map(Vec::len).sum()
    }

    /// Counts NIC `name` of `host` with `groups` (in their order), in place
    /// of what it had.
    pub fn insert(
        &mut self,
        host: &str,
        name: &str,
        groups: &[GroupId],
    ) -> Result<(), NameTooLong> {
        let key = IfName::new(name).ok_or_else(|| NameTooLong(name.to_owned()))?;
        self.remove(host, name);
        let list = if let Some(&i) = self.index.get(groups) {
            i
        } else {
            let i = u32::try_from(self.lists.len()).unwrap_or(u32::MAX);
            self.lists.push(Tally {
                groups: groups.to_vec(),
                nics: 0,
            });
            self.index.insert(groups.to_vec(), i);
            i
        };
        if let Some(t) = self.lists.get_mut(list as usize) {
            t.nics += 1;
        }
        let nics = self.hosts.entry(host.to_owned()).or_default();
        let at = nics.partition_point(|(n, _)| *n < key);
        nics.insert(at, (key, list));
        Ok(())
    }

    /// Stops counting NIC `name` of `host`; whether it was counted.
    pub fn remove(&mut self, host: &str, name: &str) -> bool {
        let Some(key) = IfName::new(name) else {
            return false;
        };
        let Some(nics) = self.hosts.get_mut(host) else {
            return false;
        };
        let Ok(at) = nics.binary_search_by(|(n, _)| n.cmp(&key)) else {
            return false;
        };
        let (_, list) = nics.remove(at);
        if nics.is_empty() {
            self.hosts.remove(host);
        }
        self.uncount(list);
        true
    }

    /// Stops counting every NIC of `host`; how many it had.
    pub fn remove_host(&mut self, host: &str) -> usize {
        let nics = self.hosts.remove(host).unwrap_or_default();
        for (_, list) in &nics {
            self.uncount(*list);
        }
        nics.len()
    }

    fn uncount(&mut self, list: u32) {
        if let Some(t) = self.lists.get_mut(list as usize) {
            t.nics = t.nics.saturating_sub(1);
        }
    }

    /// Whether NIC `name` of `host` is counted.
    pub fn contains(&self, host: &str, name: &str) -> bool {
        self.groups(host, name).is_some()
    }

    /// The groups of NIC `name` of `host`, if it is counted.
    pub fn groups(&self, host: &str, name: &str) -> Option<&[GroupId]> {
        let key = IfName::new(name)?;
        let nics = self.hosts.get(host)?;
        let at = nics.binary_search_by(|(n, _)| n.cmp(&key)).ok()?;
        Some(self.groups_of(nics[at].1))
    }

    /// The hosts with counted NICs, with how many each.
    pub fn hosts(&self) -> impl Iterator<Item = (&str, usize)> {
        self.hosts.iter().map(|(h, n)| (h.as_str(), n.len()))
    }

    /// The counted NICs of `host`: name and groups.
    pub fn nics_of<'a>(&'a self, host: &str) -> impl Iterator<Item = (&'a str, &'a [GroupId])> {
        self.hosts
            .get(host)
            .into_iter()
            .flatten()
            .map(|(n, l)| (n.as_str(), self.groups_of(*l)))
    }

    fn groups_of(&self, list: u32) -> &[GroupId] {
        self.lists
            .get(list as usize)
            .map_or(&[][..], |t| t.groups.as_slice())
    }

    /// Every list some counted NIC has, with how many have it.
    pub fn lists(&self) -> impl Iterator<Item = (&[GroupId], u32)> {
        self.lists
            .iter()
            .filter(|t| t.nics > 0)
            .map(|t| (t.groups.as_slice(), t.nics))
    }

    /// One counted NIC with the list `groups` (host, name), to name in an
    /// error.
    pub fn example(&self, groups: &[GroupId]) -> Option<(&str, &str)> {
        let list = *self.index.get(groups)?;
        self.hosts.iter().find_map(|(h, nics)| {
            nics.iter()
                .find(|(_, l)| *l == list)
                .map(|(n, _)| (h.as_str(), n.as_str()))
        })
    }

    /// The counted members of `group` (host, name).
    pub fn members(&self, group: &GroupId) -> Vec<(&str, &str)> {
        let lists: BTreeSet<u32> = self
            .index
            .iter()
            .filter(|(g, _)| g.contains(group))
            .map(|(_, &i)| i)
            .collect();
        let mut out = Vec::new();
        if lists.is_empty() {
            return out;
        }
        for (h, nics) in &self.hosts {
            out.extend(
                nics.iter()
                    .filter(|(_, l)| lists.contains(l))
                    .map(|(n, _)| (h.as_str(), n.as_str())),
            );
        }
        out
    }

    /// Which of `groups` some counted NIC belongs to: the groups whose
    /// members must be read whole before a rule here may name them.
    pub fn counted_among(&self, groups: &BTreeSet<GroupId>) -> BTreeSet<GroupId> {
        self.lists()
            .flat_map(|(g, _)| g.iter())
            .filter(|g| groups.contains(*g))
            .cloned()
            .collect()
    }

    /// The plain form: host → name → groups.
    fn form(&self) -> BTreeMap<&str, BTreeMap<&str, &[GroupId]>> {
        self.hosts
            .keys()
            .map(|h| (h.as_str(), self.nics_of(h).collect()))
            .collect()
    }
}

impl PartialEq for Census {
    /// The same NICs with the same groups, however the lists were numbered.
    fn eq(&self, other: &Self) -> bool {
        self.form() == other.form()
    }
}

impl Eq for Census {}

impl std::fmt::Debug for Census {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Census")
            .field("nics", &self.len())
            .field("lists", &self.lists().count())
            .finish()
    }
}

impl Serialize for Census {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.form().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Census {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let form = BTreeMap::<String, BTreeMap<String, Vec<GroupId>>>::deserialize(d)?;
        let mut c = Self::default();
        for (host, nics) in &form {
            for (name, groups) in nics {
                c.insert(host, name, groups)
                    .map_err(serde::de::Error::custom)?;
            }
        }
        Ok(c)
    }
}
