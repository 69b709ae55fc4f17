//! Which of this host's NICs a change touches: those whose compiled tables
//! can differ between two states. The compiler ([`crate::compile`]) reads,
//! for one NIC: its binding; its groups (rules, type, inner policy); the
//! members of the groups its rules name and of its own groups (their
//! addresses, on every host); the prefix and port lists its rules name.
//! A NIC none of whose inputs changed compiles to the same tables, so the
//! agent keeps what it compiled last (issue 14: a fleet following other
//! hosts' changes recompiles only what a change touches).

use std::collections::{BTreeMap, BTreeSet};

use crate::{
    ids::{GroupId, PortListId, PrefixListId},
    model::{NicBinding, Peer, PortSpec, State},
};

/// What differs between two states, as far as compiled tables go.
#[derive(Debug, Default)]
pub struct Touched {
    /// Groups whose own definition (rules, type, inner policy) differs, or
    /// that exist in one state only.
    pub groups: BTreeSet<GroupId>,
    /// Groups whose members differ: a NIC on any host that is, or was, in
    /// the group was bound, unbound or changed.
    pub members: BTreeSet<GroupId>,
    pub prefix_lists: BTreeSet<PrefixListId>,
    pub port_lists: BTreeSet<PortListId>,
}

impl Touched {
    /// What differs from `old` to `new`: one walk over both (no compile).
    pub fn between(old: &State, new: &State) -> Self {
        let mut t = Self {
            groups: changed_keys(&old.groups, &new.groups),
            prefix_lists: changed_keys(&old.prefix_lists, &new.prefix_lists),
            port_lists: changed_keys(&old.port_lists, &new.port_lists),
            members: BTreeSet::new(),
        };
        let mut moved = |_: &String, was: Option<&NicBinding>, now: Option<&NicBinding>| {
            if was != now {
                for nic in was.into_iter().chain(now) {
                    t.members.extend(nic.groups.iter().cloned());
                }
            }
        };
        walk(&old.nics, &new.nics, &mut moved);
        let empty = BTreeMap::new();
        let hosts: BTreeSet<&String> = old.remote.keys().chain(new.remote.keys()).collect();
        for h in hosts {
            let (was, now) = (old.remote.get(h), new.remote.get(h));
            if was != now {
                walk(was.unwrap_or(&empty), now.unwrap_or(&empty), &mut moved);
            }
        }
        // Counted NICs are members of groups no table here holds; should a
        // count change anyway, the groups of the lists that moved count as
        // touched, like any member's.
        if !std::sync::Arc::ptr_eq(&old.census, &new.census) {
            let tally = |s: &State| -> BTreeMap<Vec<GroupId>, u32> {
                s.census.lists().map(|(g, n)| (g.to_vec(), n)).collect()
            };
            let (was, now) = (tally(old), tally(new));
            for (groups, _) in was.iter().chain(&now) {
                if was.get(groups) != now.get(groups) {
                    t.members.extend(groups.iter().cloned());
                }
            }
        }
        t
    }

    /// Whether NIC `nic` of `new` (bound in `old` as `old_binding`) can
    /// compile to other tables than it did in `old`.
    pub fn nic(&self, old_binding: Option<&NicBinding>, new: &State, nic: &str) -> bool {
        let Some(binding) = new.nics.get(nic) else {
            return true;
        };
        if old_binding != Some(binding) {
            return true;
        }
        for gid in &binding.groups {
            if self.groups.contains(gid) || self.members.contains(gid) {
                return true;
            }
            let Some(group) = new.groups.get(gid) else {
                return true;
            };
            for rule in &group.rules {
                let s = &rule.spec;
                let peer = match &s.peer {
                    Peer::Cidr(_) => false,
                    Peer::Group(g) => self.members.contains(g),
                    Peer::PrefixList(l) => self.prefix_lists.contains(l),
                };
                let ports = matches!(&s.ports, PortSpec::List(l) if self.port_lists.contains(l));
                if peer || ports {
                    return true;
                }
            }
        }
        false
    }
}

/// Keys whose values differ between `a` and `b`, or that one lacks.
fn changed_keys<K: Ord + Clone, V: PartialEq>(
    old: &BTreeMap<K, V>,
    new: &BTreeMap<K, V>,
) -> BTreeSet<K> {
    let mut out = BTreeSet::new();
    walk(old, new, &mut |key: &K,
                         was: Option<&V>,
                         now: Option<&V>| {
        if was != now {
            out.insert(key.clone());
        }
    });
    out
}

/// Calls `visit` with each key and its value in `old` and in `new` (one
/// of them may be absent), in key order.
fn walk<K: Ord, V>(
    old: &BTreeMap<K, V>,
    new: &BTreeMap<K, V>,
    visit: &mut impl FnMut(&K, Option<&V>, Option<&V>),
) {
    let (mut before, mut after) = (old.iter().peekable(), new.iter().peekable());
    loop {
        let step = match (before.peek(), after.peek()) {
            (None, None) => return,
            (Some((k_old, _)), Some((k_new, _))) => k_old.cmp(k_new),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
        };
        match step {
            std::cmp::Ordering::Equal => {
                let (key, was) = before.next().expect("peeked");
                let (_, now) = after.next().expect("peeked");
                visit(key, Some(was), Some(now));
            }
            std::cmp::Ordering::Less => {
                let (key, was) = before.next().expect("peeked");
                visit(key, Some(was), None);
            }
            std::cmp::Ordering::Greater => {
                let (key, now) = after.next().expect("peeked");
                visit(key, None, Some(now));
            }
        }
    }
}
