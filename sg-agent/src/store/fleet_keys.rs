//! The fleet store's key layout: the policy [`State`] as etcd keys and back.
//! Pure (no I/O), so the layout is tested without a server.
//!
//! Under the prefix (default `/sg/v1/`), the policy is under `policy/`, one
//! key per object, each value the object's JSON (the serde form of the
//! model, as the SQLite store keeps it):
//!
//! | key                                 | holds                                      |
//! |-------------------------------------|--------------------------------------------|
//! | `policy/schema`                     | the layout's version, [`FLEET_SCHEMA`]     |
//! | `policy/store-id`                   | the store's identity (32 hex digits)       |
//! | `policy/generation`                 | the commit count: every commit writes it   |
//! | `policy/last-commit`                | the token of the last commit (its host)    |
//! | `policy/settings`                   | the fleet-wide settings                    |
//! | `policy/ids`                        | the id generator                           |
//! | `policy/groups/<group id>`          | a group with its rules, in order           |
//! | `policy/prefix-lists/<id>`          | a prefix list                              |
//! | `policy/port-lists/<id>`            | a port list                                |
//! | `policy/hosts/<host>/nics/<name>`   | a NIC binding of one host                  |
//!
//! Every commit is one transaction that holds only if `policy/generation`
//! was not written since the committer read the policy: commits are
//! serialised fleet-wide, and each is validated against the whole fleet as
//! it stood (see `docs/fleet.md`). Outside `policy/`, not part of the state:
//! `snapshots/<id>` (a snapshot), `snapshot-windows/<group>/<window>` (the
//! id of a group's snapshot of a window), `snapshot-seq` (the last snapshot
//! id), and `status/<host>` (what a host has in force, under its lease).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Serialize, de::DeserializeOwned};

use super::{StoreError, StoreId};
use sg_policy::validate::check_nic_fields_at;
use sg_policy::{GroupId, NicBinding, State, census::Census, ids::IdGen, validate_state};

/// The version of this layout. A store written with a higher one is refused.
pub const FLEET_SCHEMA: u32 = 1;

/// Where in the key space a fleet lives, and which host reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Ends with `/`.
    pub prefix: String,
    /// This host's name: its NICs are the state's `nics`, every other
    /// host's are its `remote`.
    pub host: String,
}

/// What [`Layout::settle`] found.
#[derive(Debug)]
pub enum Settled {
    /// The state (`None`: a store never committed to).
    State(Option<State>),
    /// These groups are named here, and some of their members on other
    /// hosts are only counted: read the policy again whole.
    Unheld(BTreeSet<GroupId>),
}

/// What one host has in force, as it records it under `status/<host>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct HostStatus {
    /// The host's name.
    pub host: String,
    /// The store revision whose policy the host has in force.
    pub revision: i64,
    /// The generation of that policy.
    pub generation: u64,
    /// When the host last wrote this (unix seconds).
    pub at: u64,
    /// The agent's version.
    pub agent: String,
}

/// The longest host name: a DNS label.
pub const MAX_HOST_BYTES: usize = 63;

/// Checks a host name: 1..=63 bytes of letters, digits, `-`, `_` and `.`,
/// so that it is one key segment.
pub fn check_host(host: &str) -> Result<(), String> {
    let ok = !host.is_empty()
        && host.len() <= MAX_HOST_BYTES
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && host != "."
        && host != "..";
    if ok {
        Ok(())
    } else {
        Err(format!(
            "--host {host:?}: a host name is 1..={MAX_HOST_BYTES} bytes of letters, digits, '-', '_' and '.'"
        ))
    }
}

impl Layout {
    /// The policy keys all start with this.
    pub fn policy(&self) -> String {
        format!("{}policy/", self.prefix)
    }

    /// The key of `name` under the policy.
    pub fn key(&self, name: &str) -> String {
        format!("{}policy/{name}", self.prefix)
    }

    /// The key every commit writes.
    pub fn generation(&self) -> String {
        self.key("generation")
    }

    /// A key outside the policy.
    pub fn other(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// The status key of `host`.
    pub fn status(&self, host: &str) -> String {
        self.other(&format!("status/{host}"))
    }

    /// `state` as the policy keys hold it (everything but the generation,
    /// which the commit writes, and the schema and identity, which the
    /// store's creation writes).
    pub fn encode(&self, state: &State) -> Result<BTreeMap<String, Vec<u8>>, StoreError> {
        let mut out = BTreeMap::new();
        let mut put = |key: String, v: &dyn erased::Json| -> Result<(), StoreError> {
            let bytes = v.json().map_err(|source| StoreError::Encode {
                path: self.prefix.clone(),
                what: key.clone(),
                source,
            })?;
            out.insert(key, bytes);
            Ok(())
        };
        put(self.key("settings"), &state.settings)?;
        put(self.key("ids"), &state.ids)?;
        for (id, g) in &state.groups {
            put(self.key(&format!("groups/{id}")), g)?;
        }
        for (id, l) in &state.prefix_lists {
            put(self.key(&format!("prefix-lists/{id}")), l)?;
        }
        for (id, l) in &state.port_lists {
            put(self.key(&format!("port-lists/{id}")), l)?;
        }
        let hosts = std::iter::once((&self.host, &state.nics)).chain(&state.remote);
        for (host, nics) in hosts {
            for (name, n) in nics {
                put(self.key(&format!("hosts/{host}/nics/{name}")), n)?;
            }
        }
        Ok(out)
    }

    /// The state the policy keys `kvs` hold, for this host; `None` for a
    /// store never committed to. Every key is checked: one this layout does
    /// not know, or a value that does not read back, is an error naming it.
    pub fn decode(&self, kvs: &BTreeMap<String, Vec<u8>>) -> Result<Option<State>, StoreError> {
        self.decode_with(kvs, &Arc::default())
    }

    /// [`Layout::decode`] of keys that hold only some of the other hosts'
    /// NICs: `census` counts the rest.
    pub fn decode_with(
        &self,
        kvs: &BTreeMap<String, Vec<u8>>,
        census: &Arc<Census>,
    ) -> Result<Option<State>, StoreError> {
        let prefix = self.policy();
        let corrupt = |key: &str, reason: String| StoreError::CorruptKey {
            key: key.to_owned(),
            reason,
        };
        match kvs.get(&self.key("schema")) {
            None => return Ok(None),
            Some(v) => {
                let found: u32 = std::str::from_utf8(v)
                    .ok()
                    .and_then(|t| t.trim().parse().ok())
                    .ok_or_else(|| corrupt(&self.key("schema"), "not a number".to_owned()))?;
                if found > FLEET_SCHEMA {
                    return Err(StoreError::SchemaTooNew {
                        path: self.prefix.clone(),
                        found: i64::from(found),
                        supported: i64::from(FLEET_SCHEMA),
                    });
                }
            }
        }
        let Some(ids) = kvs.get(&self.key("ids")) else {
            return Ok(None);
        };
        let mut state = State::new();
        state.ids = json::<IdGen>(&self.key("ids"), ids)?;
        state.census = Arc::clone(census);
        for (key, value) in kvs {
            let Some(rest) = key.strip_prefix(&prefix) else {
                return Err(corrupt(key, "outside the policy prefix".to_owned()));
            };
            let parts: Vec<&str> = rest.split('/').collect();
            match parts.as_slice() {
                ["schema" | "store-id" | "generation" | "last-commit" | "ids"] => {}
                ["settings"] => state.settings = json(key, value)?,
                ["groups", id] => {
                    let g: sg_policy::SecurityGroup = json(key, value)?;
                    same_id(key, id, g.id.as_str())?;
                    state.groups.insert(g.id.clone(), std::sync::Arc::new(g));
                }
                ["prefix-lists", id] => {
                    let l: sg_policy::PrefixList = json(key, value)?;
                    same_id(key, id, l.id.as_str())?;
                    state.prefix_lists.insert(l.id.clone(), l);
                }
                ["port-lists", id] => {
                    let l: sg_policy::PortList = json(key, value)?;
                    same_id(key, id, l.id.as_str())?;
                    state.port_lists.insert(l.id.clone(), l);
                }
                ["hosts", host, "nics", name] => {
                    let n: NicBinding = json(key, value)?;
                    same_id(key, name, &n.name)?;
                    let nics = if *host == self.host {
                        &mut state.nics
                    } else {
                        state.remote.entry((*host).to_owned()).or_default()
                    };
                    nics.insert(n.name.clone(), n);
                }
                _ => return Err(corrupt(key, "not a key of this layout".to_owned())),
            }
        }
        validate_state(&state).map_err(|source| StoreError::InvalidState {
            path: self.prefix.clone(),
            source: Box::new(source),
        })?;
        Ok(Some(state))
    }

    /// The host and name of the NIC whose key is `key`, if it is another
    /// host's.
    pub fn remote_nic<'a>(&self, key: &'a str) -> Option<(&'a str, &'a str)> {
        let rest = key
            .strip_prefix(&self.prefix)?
            .strip_prefix("policy/hosts/")?;
        let (host, rest) = rest.split_once('/')?;
        let name = rest.strip_prefix("nics/")?;
        (host != self.host && !name.contains('/')).then_some((host, name))
    }

    /// The policy keys as read (`read`), split: every key but the NICs of
    /// other hosts that no group of this host (nor `also`) names, and the
    /// census that counts those (their own fields checked here; their
    /// groups with the state's). Nothing of a counted NIC is kept beyond
    /// its name and groups, so reading a large fleet needs no more memory
    /// than what this host names.
    pub fn split(
        &self,
        read: &[(std::borrow::Cow<'_, str>, &[u8])],
        also: &BTreeSet<GroupId>,
    ) -> Result<(BTreeMap<String, Vec<u8>>, Census), StoreError> {
        let mut kvs: BTreeMap<String, Vec<u8>> = read
            .iter()
            .filter(|(k, _)| self.remote_nic(k).is_none())
            .map(|(k, v)| (k.to_string(), v.to_vec()))
            .collect();
        let mut named = also.clone();
        if let Some(state) = self.decode_with(&kvs, &Arc::default())? {
            named.extend(state.named_groups());
        }
        let mut census = Census::default();
        for (key, value) in read {
            let Some((host, name)) = self.remote_nic(key) else {
                continue;
            };
            let nic: NicBinding = json(key, value)?;
            if nic.groups.iter().any(|g| named.contains(g)) {
                kvs.insert(key.to_string(), value.to_vec());
                continue;
            }
            same_id(key, name, &nic.name)?;
            check_nic_fields_at(&nic, &format!("hosts[{host}].nics[{name}]")).map_err(
                |source| StoreError::InvalidState {
                    path: self.prefix.clone(),
                    source: Box::new(source),
                },
            )?;
            census
                .insert(host, name, &nic.groups)
                .map_err(|e| StoreError::CorruptKey {
                    key: key.to_string(),
                    reason: e.to_string(),
                })?;
        }
        Ok((kvs, census))
    }

    /// The key of NIC `name` of `host`.
    pub fn nic_key(&self, host: &str, name: &str) -> String {
        self.key(&format!("hosts/{host}/nics/{name}"))
    }

    /// The state the keys `kvs` and the `census` hold, with every NIC of
    /// another host that no group of this host names (nor `also`) moved
    /// from the keys into the census (see [`sg_policy::census`]). If a
    /// named group has counted members, the keys do not hold what this
    /// host must compile: [`Settled::Unheld`], and nothing moved.
    pub fn settle(
        &self,
        kvs: &mut BTreeMap<String, Vec<u8>>,
        census: &mut Arc<Census>,
        also: &BTreeSet<GroupId>,
    ) -> Result<Settled, StoreError> {
        let Some(mut state) = self.decode_with(kvs, census)? else {
            return Ok(Settled::State(None));
        };
        let mut named = state.named_groups();
        named.extend(also.iter().cloned());
        let unheld = census.counted_among(&named);
        if !unheld.is_empty() {
            return Ok(Settled::Unheld(unheld));
        }
        let unnamed: Vec<(String, String)> = state
            .remote
            .iter()
            .flat_map(|(h, nics)| nics.values().map(move |n| (h, n)))
            .filter(|(_, n)| !n.groups.iter().any(|g| named.contains(g)))
            .map(|(h, n)| (h.clone(), n.name.clone()))
            .collect();
        if !unnamed.is_empty() {
            let counted = Arc::make_mut(census);
            for (host, name) in unnamed {
                let nics = state.remote.get_mut(&host);
                let Some(nic) = nics.and_then(|n| n.remove(&name)) else {
                    continue;
                };
                if state.remote.get(&host).is_some_and(BTreeMap::is_empty) {
                    state.remote.remove(&host);
                }
                let key = self.nic_key(&host, &name);
                counted
                    .insert(&host, &name, &nic.groups)
                    .map_err(|e| StoreError::CorruptKey {
                        key: key.clone(),
                        reason: e.to_string(),
                    })?;
                kvs.remove(&key);
            }
            state.census = Arc::clone(census);
        }
        Ok(Settled::State(Some(state)))
    }

    /// The store's identity and generation the policy keys hold (a store
    /// never committed to is at generation 0).
    pub fn position(&self, kvs: &BTreeMap<String, Vec<u8>>) -> Result<(StoreId, u64), StoreError> {
        let id = match kvs.get(&self.key("store-id")) {
            None => StoreId::default(),
            Some(v) => std::str::from_utf8(v)
                .ok()
                .and_then(StoreId::parse)
                .ok_or_else(|| StoreError::CorruptKey {
                    key: self.key("store-id"),
                    reason: "not 32 hex digits".to_owned(),
                })?,
        };
        let generation = match kvs.get(&self.generation()) {
            None => 0,
            Some(v) => std::str::from_utf8(v)
                .ok()
                .and_then(|t| t.parse().ok())
                .ok_or_else(|| StoreError::CorruptKey {
                    key: self.generation(),
                    reason: "not a number".to_owned(),
                })?,
        };
        Ok((id, generation))
    }
}

fn json<T: DeserializeOwned>(key: &str, value: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(value).map_err(|e| StoreError::CorruptKey {
        key: key.to_owned(),
        reason: e.to_string(),
    })
}

fn same_id(key: &str, in_key: &str, in_value: &str) -> Result<(), StoreError> {
    if in_key == in_value {
        Ok(())
    } else {
        Err(StoreError::CorruptKey {
            key: key.to_owned(),
            reason: format!("holds {in_value:?}, not the object its key names"),
        })
    }
}

/// Serialising the model's types through one closure.
mod erased {
    /// A value that serialises to JSON.
    pub trait Json {
        fn json(&self) -> Result<Vec<u8>, serde_json::Error>;
    }

    impl<T: serde::Serialize> Json for T {
        fn json(&self) -> Result<Vec<u8>, serde_json::Error> {
            serde_json::to_vec(self)
        }
    }
}
