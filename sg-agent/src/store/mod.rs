//! The agent's durable store: the whole policy [`State`] and the security group
//! snapshots (SPEC §5), behind one trait so a shared, distributed backend can take
//! the place of the local [`SqliteStore`].
//!
//! The daemon makes every change durable before its API answers: it computes the
//! snapshots a change makes due ([`snapshot::due`](sg_policy::snapshot::due)) and
//! hands the new state and those snapshots to [`Store::commit`], which keeps all
//! of it or none of it.

mod etcd;
mod fleet_keys;
mod fleet_mirror;
mod sqlite;

use std::collections::BTreeSet;

use thiserror::Error;

use sg_policy::{GroupId, PolicyError, State};

pub use sg_policy::snapshot::{Snapshot, SnapshotInfo};

pub use etcd::{Budget, EtcdConfig, EtcdStore, Feed};
pub use fleet_keys::{FLEET_SCHEMA, HostStatus, Layout, Settled, check_host};
pub use sqlite::{SCHEMA_VERSION, SqliteStore};

/// Where the policy state and the snapshots live.
pub trait Store: Send {
    /// The state last committed; `None` for a store never committed to.
    fn load(&mut self) -> Result<Option<State>, StoreError>;

    /// [`Store::load`], with the other hosts' members of `groups` held
    /// whole, as those of the groups the state names are: a change about to
    /// name them needs their addresses (see [`sg_policy::census`]).
    fn load_holding(&mut self, groups: &BTreeSet<GroupId>) -> Result<Option<State>, StoreError> {
        let _ = groups;
        self.load()
    }

    /// Makes `state` the stored state and adds `snapshots`, in ONE durable
    /// transaction: after it returns Ok, a crash (SIGKILL, power loss) keeps all
    /// of it; if it fails or the process dies during it, none of it is kept.
    ///
    /// A snapshot's `id` is ignored (the store assigns one). A snapshot for a
    /// group and window that already has one is not added: the first snapshot of
    /// a window is the one that holds the rules before the window's first change.
    fn commit(&mut self, state: &State, snapshots: &[Snapshot]) -> Result<(), StoreError>;

    /// Whether a snapshot of `group` exists for the window starting at
    /// `window_start` (unix seconds).
    fn has_snapshot(&mut self, group: &GroupId, window_start: u64) -> Result<bool, StoreError>;

    /// Snapshots, newest first, optionally of one group only.
    fn snapshots(&mut self, group: Option<&GroupId>) -> Result<Vec<SnapshotInfo>, StoreError>;

    /// One snapshot by id.
    fn snapshot(&mut self, id: u64) -> Result<Option<Snapshot>, StoreError>;

    /// Deletes snapshots taken before `before` (unix seconds); returns how many.
    fn prune_snapshots(&mut self, before: u64) -> Result<usize, StoreError>;

    /// Which store this is and how many commits it holds (as of the last
    /// open or commit).
    fn position(&self) -> StorePosition;

    /// Whether other hosts write this store too (a fleet).
    fn is_shared(&self) -> bool {
        false
    }

    /// For a store other hosts write too (a fleet): a feed of their
    /// changes from the state last loaded or committed on. `None` for a
    /// store only this agent writes.
    fn follow(&mut self) -> Option<tokio::sync::mpsc::UnboundedReceiver<Feed>> {
        None
    }

    /// Folds a batch of the feed in; the new state, if it changed.
    fn catch_up(&mut self, _feed: Feed) -> Result<Option<State>, StoreError> {
        Ok(None)
    }

    /// Records in the store what this host has in force (a fleet's hosts
    /// read each other's), as of the last load, catch-up or commit.
    fn report_in_force(&mut self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Every live host of the fleet and what it has in force, as last
    /// heard (no call); empty for a store of one host.
    fn hosts(&self) -> Vec<HostStatus> {
        Vec::new()
    }

    /// Says this host is leaving (its agent stops): a fleet's hosts stop
    /// counting it as live at once, not when its record's lease runs out.
    fn depart(&mut self) {}

    /// Keeps a local copy of what is in force, to start from while the
    /// store is away (fleet stores).
    fn keep_copy(&mut self) {}

    /// Whether the state last loaded, followed or committed is still the
    /// store's newest (one short call for a fleet's; `true` for a store
    /// only this agent writes, and when the store does not answer).
    fn is_current(&mut self) -> bool {
        true
    }

    /// Asks the store whether it answers now (one short call); `true` for a
    /// store that is always there.
    fn probe(&mut self) -> bool {
        true
    }

    /// Whether the store answers, as last heard (no call).
    fn health(&self) -> StoreHealth {
        StoreHealth {
            reachable: true,
            ..StoreHealth::default()
        }
    }
}

/// Whether a store answers, and how far this host has read it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreHealth {
    /// It answered last time anything asked.
    pub reachable: bool,
    /// When that last changed (unix seconds; 0: never).
    pub since: u64,
    /// The store's revision the state is as of (fleet stores; 0 otherwise).
    pub revision: i64,
    /// This host's name in the fleet.
    pub host: Option<String>,
}

/// A store's identity, made at random with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct StoreId(pub [u8; 16]);

impl StoreId {
    /// A new identity from the kernel's random source.
    pub fn random() -> std::io::Result<Self> {
        use std::io::Read as _;
        let mut id = [0; 16];
        std::fs::File::open("/dev/urandom")?.read_exact(&mut id)?;
        Ok(Self(id))
    }

    /// 32 hex digits.
    pub fn parse(text: &str) -> Option<Self> {
        if text.len() != 32 || !text.is_ascii() {
            return None;
        }
        let mut id = [0; 16];
        for (i, b) in id.iter_mut().enumerate() {
            *b = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(Self(id))
    }
}

impl std::fmt::Display for StoreId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// Which store, and how far: `generation` counts its commits (0: new).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StorePosition {
    pub id: StoreId,
    pub generation: u64,
}

/// Why the store could not do what was asked. Each message says what failed and
/// where (the database path, the table and the row's key).
#[derive(Debug, Error)]
pub enum StoreError {
    /// The database file could not be created or its permissions set.
    #[error("store {path}: cannot create the database file: {source}")]
    Create {
        path: String,
        source: std::io::Error,
    },
    /// SQLite could not open the database or set it up.
    #[error("store {path}: cannot open the database: {source}")]
    Open {
        path: String,
        source: rusqlite::Error,
    },
    /// The database was written by a newer schema than this agent knows.
    #[error(
        "store {path}: schema version {found} is newer than the newest this agent supports ({supported}); upgrade the agent or move the database aside"
    )]
    SchemaTooNew {
        path: String,
        found: i64,
        supported: i64,
    },
    /// The file is an SQLite database, but not one of this agent's stores.
    #[error(
        "store {path}: the database holds tables but no schema version (user_version {found}): not an sg-agent store"
    )]
    NotAStore { path: String, found: i64 },
    /// An SQL statement failed.
    #[error("store {path}: {what}: {source}")]
    Sql {
        path: String,
        what: String,
        source: rusqlite::Error,
    },
    /// A stored row cannot be read back.
    #[error("store {path}: table {table}, row {key}: {reason}")]
    CorruptRow {
        path: String,
        table: &'static str,
        key: String,
        reason: String,
    },
    /// A value could not be encoded for storage.
    #[error("store {path}: cannot encode {what}: {source}")]
    Encode {
        path: String,
        what: String,
        source: serde_json::Error,
    },
    /// A number does not fit SQLite's signed 64-bit integers.
    #[error("store {path}: {field}: {value} is outside 0..={}", i64::MAX)]
    OutOfRange {
        path: String,
        field: &'static str,
        value: u64,
    },
    /// A state that fails validation is not stored: it could not be loaded back.
    #[error("store {path}: refusing to store a state that fails validation: {source}")]
    Refused {
        path: String,
        source: Box<PolicyError>,
    },
    /// A key of the fleet store cannot be read back.
    #[error("store key {key}: {reason}")]
    CorruptKey { key: String, reason: String },
    /// etcd did not answer, or refused.
    #[error("etcd store at {endpoints}: {what}: {source}")]
    Etcd {
        endpoints: String,
        what: String,
        source: Box<etcd_client::Error>,
    },
    /// The fleet store does not answer, and nothing else can stand in.
    #[error("the fleet store at {store} is unreachable: {why}")]
    Unreachable { store: String, why: String },
    /// Another host committed since this one read the policy: nothing of
    /// this commit was kept.
    #[error(
        "the fleet's policy changed while this change was made (this host had generation {generation}); nothing of it was kept"
    )]
    Conflict { generation: u64 },
    /// The stored rows read back as a state that fails validation.
    #[error("store {path}: the stored state is invalid: {source}")]
    InvalidState {
        path: String,
        source: Box<PolicyError>,
    },
}
