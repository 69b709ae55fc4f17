//! This host's mirror of the fleet's policy keys at one revision, and its
//! copy on disk (`--fleet-cache`).
//!
//! The mirror holds every policy key as etcd does, except the NICs of other
//! hosts that no group of this host names: those it only counts, in a
//! [`Census`] (see [`sg_policy::census`]), so that its memory grows with
//! what this host enforces and names, not with the fleet. Which NICs are
//! held whole is decided by [`Layout::settle`] after every change.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use sg_policy::{GroupId, census::Census};

use super::fleet_keys::Layout;

/// The policy keys at one revision.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Mirror {
    /// Every policy key but the counted NICs'.
    pub kvs: BTreeMap<String, Vec<u8>>,
    /// The other hosts' NICs not in `kvs`.
    pub census: Arc<Census>,
    /// The store's revision these keys are as of.
    pub revision: i64,
    /// The revision the generation key was last written at (0: never).
    pub gen_rev: i64,
}

/// What [`Mirror::fold`] changed, to take it back.
#[derive(Debug, Default)]
pub struct Undo {
    revision: i64,
    gen_rev: i64,
    /// Keys as they were, in the order they were changed.
    kvs: Vec<(String, Option<Vec<u8>>)>,
    /// Counted NICs no longer counted: host, name, groups.
    counted: Vec<(String, String, Vec<GroupId>)>,
}

impl Mirror {
    /// Folds one batch of a watch (puts `Some`, deletes `None`, each with
    /// its revision) into the mirror; changes at or before its revision
    /// are skipped. `None` if nothing changed; else what takes it back.
    pub fn fold(
        &mut self,
        layout: &Layout,
        batch: Vec<(i64, String, Option<Vec<u8>>)>,
    ) -> Option<Undo> {
        // Every key of one commit carries its revision: compare with the
        // revision before the batch, not the one its first key moved to.
        let from = self.revision;
        let mut undo = Undo {
            revision: self.revision,
            gen_rev: self.gen_rev,
            ..Undo::default()
        };
        let mut changed = false;
        for (rev, key, value) in batch {
            if rev <= from {
                continue;
            }
            changed = true;
            if key == layout.generation() {
                self.gen_rev = rev;
            }
            // A counted NIC that changes comes back whole; the next settle
            // counts it again if it is still not named.
            if let Some((host, name)) = layout.remote_nic(&key)
                && let Some(groups) = self.census.groups(host, name).map(<[_]>::to_vec)
            {
                Arc::make_mut(&mut self.census).remove(host, name);
                undo.counted
                    .push((host.to_owned(), name.to_owned(), groups));
            }
            let was = match value {
                Some(v) => self.kvs.insert(key.clone(), v),
                None => self.kvs.remove(&key),
            };
            undo.kvs.push((key, was));
            self.revision = rev;
        }
        changed.then_some(undo)
    }

    /// Takes back what a [`Mirror::fold`] changed.
    pub fn undo(&mut self, undo: Undo) {
        for (key, was) in undo.kvs.into_iter().rev() {
            match was {
                Some(v) => self.kvs.insert(key, v),
                None => self.kvs.remove(&key),
            };
        }
        if !undo.counted.is_empty() {
            let census = Arc::make_mut(&mut self.census);
            for (host, name, groups) in undo.counted {
                // Counted before: its name fitted then.
                let _ = census.insert(&host, &name, &groups);
            }
        }
        self.revision = undo.revision;
        self.gen_rev = undo.gen_rev;
    }

    /// Writes the mirror to `path`: a whole new file, renamed over the old.
    pub fn write_copy(&self, path: &Path) -> std::io::Result<()> {
        let copy = CopyOut {
            revision: self.revision,
            gen_rev: self.gen_rev,
            kvs: self
                .kvs
                .iter()
                .map(|(k, v)| (k.as_str(), String::from_utf8_lossy(v)))
                .collect(),
            census: &self.census,
        };
        let tmp = path.with_extension("tmp");
        let bytes = serde_json::to_vec(&copy).map_err(std::io::Error::other)?;
        {
            use std::io::Write as _;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)
    }

    /// The mirror [`Mirror::write_copy`] wrote to `path`.
    pub fn read_copy(path: &Path) -> Result<Self, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let copy: CopyIn =
            serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Self {
            kvs: copy
                .kvs
                .into_iter()
                .map(|(k, v)| (k, v.into_bytes()))
                .collect(),
            census: Arc::new(copy.census),
            revision: copy.revision,
            gen_rev: copy.gen_rev,
        })
    }
}

/// The copy on disk, as written.
#[derive(serde::Serialize)]
struct CopyOut<'a> {
    revision: i64,
    gen_rev: i64,
    kvs: BTreeMap<&'a str, std::borrow::Cow<'a, str>>,
    census: &'a Census,
}

/// The copy on disk, as read (a copy written before the census holds every
/// NIC in `kvs`).
#[derive(serde::Deserialize)]
struct CopyIn {
    revision: i64,
    gen_rev: i64,
    kvs: BTreeMap<String, String>,
    #[serde(default)]
    census: Census,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folded_batch_taken_back_leaves_the_mirror_as_it_was() {
        let layout = Layout {
            prefix: "/sg/v1/".to_owned(),
            host: "a".to_owned(),
        };
        let g: GroupId = GroupId::parse("group", "sg-web").unwrap();
        let mut m = Mirror {
            revision: 10,
            gen_rev: 9,
            ..Mirror::default()
        };
        m.kvs.insert(layout.key("settings"), b"{}".to_vec());
        Arc::make_mut(&mut m.census)
            .insert("b", "eth1", std::slice::from_ref(&g))
            .unwrap();
        let before = m.clone();
        let batch = vec![
            (9, layout.key("old"), Some(b"skipped".to_vec())),
            (11, layout.nic_key("b", "eth1"), Some(b"{}".to_vec())),
            (11, layout.key("settings"), None),
            (11, layout.generation(), Some(b"5".to_vec())),
        ];
        let undo = m.fold(&layout, batch).expect("changed");
        assert!(
            !m.census.contains("b", "eth1"),
            "a counted NIC that changed comes back whole"
        );
        assert!(m.kvs.contains_key(&layout.nic_key("b", "eth1")));
        assert!(!m.kvs.contains_key(&layout.key("old")));
        assert_eq!((m.revision, m.gen_rev), (11, 11));
        m.undo(undo);
        assert_eq!(m, before);
        assert!(m.fold(&layout, vec![(10, layout.key("x"), None)]).is_none());
    }
}
