//! [`Store`] on a local SQLite database.
//!
//! One table per kind of object, one row per object, each row's object as JSON
//! (the serde form of the policy model), so a change rewrites only the rows it
//! touches and a damaged row is reported by table and key:
//!
//! | table          | key                 | holds                                        |
//! |----------------|---------------------|----------------------------------------------|
//! | `settings`     | `id` = 1            | [`Settings`](sg_policy::Settings)        |
//! | `meta`         | `key` = `ids`       | the id generator                             |
//! | `groups`       | `id`                | a group without its rules                    |
//! | `rules`        | `id`                | a rule, its `group_id` and its `position`    |
//! | `prefix_lists` | `id`                | a prefix list                                |
//! | `port_lists`   | `id`                | a port list                                  |
//! | `nics`         | `name`              | a NIC binding                                |
//! | `snapshots`    | `id` (autoincrement)| one group's rules; one per group and window  |
//! | `store`        | `id` = 1            | the store's identity and its commit count    |
//!
//! The `store` row is made with the database: a random id and a generation
//! that every commit increments in its own transaction. The daemon records
//! both in the kernel beside the policy it puts in force, so a database that
//! is new, another one, or behind what the kernel enforces (a truncated file,
//! a lost write-ahead log, a restored backup) is noticed before it replaces
//! the policy in force.
//!
//! Durability: WAL journal with `synchronous=FULL` (the WAL is synced at every
//! commit), and every [`Store::commit`] is one `BEGIN IMMEDIATE` transaction. The
//! schema version is `PRAGMA user_version`.

use std::{
    collections::BTreeMap,
    fs::{File, OpenOptions},
    io::ErrorKind,
    os::unix::fs::OpenOptionsExt,
    path::Path,
    time::Duration,
};

use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params, types::ValueRef};
use serde::{Serialize, de::DeserializeOwned};

use super::{Snapshot, SnapshotInfo, Store, StoreError, StoreId, StorePosition};
use sg_policy::{
    GroupId, NicBinding, PortList, PrefixList, Rule, RuleId, SecurityGroup, Settings, State,
    ids::IdGen, validate_state,
};

/// The schema this code writes and reads. A database with a higher
/// `user_version` is refused: it may hold what this code would lose.
/// Version 2 added the `store` table (identity and generation); a version 1
/// database is upgraded in place when opened.
pub const SCHEMA_VERSION: i64 = 2;

/// How long a statement waits for another connection's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

// `groups` is quoted everywhere: GROUPS is an SQL keyword (window frames).
//
// Rule positions are not UNIQUE per group: a reorder rewrites positions row by
// row, and a unique index would refuse the intermediate states. `load` checks
// that each group's positions are exactly 0..n instead.
const SCHEMA: &str = r#"
CREATE TABLE settings (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    json TEXT NOT NULL
);
CREATE TABLE meta (
    key  TEXT PRIMARY KEY,
    json TEXT NOT NULL
);
CREATE TABLE "groups" (
    id   TEXT PRIMARY KEY,
    json TEXT NOT NULL
);
CREATE TABLE rules (
    id       TEXT PRIMARY KEY,
    group_id TEXT NOT NULL REFERENCES "groups" (id) DEFERRABLE INITIALLY DEFERRED,
    position INTEGER NOT NULL,
    json     TEXT NOT NULL
);
CREATE INDEX rules_by_group ON rules (group_id, position);
CREATE TABLE prefix_lists (
    id   TEXT PRIMARY KEY,
    json TEXT NOT NULL
);
CREATE TABLE port_lists (
    id   TEXT PRIMARY KEY,
    json TEXT NOT NULL
);
CREATE TABLE nics (
    name TEXT PRIMARY KEY,
    json TEXT NOT NULL
);
CREATE TABLE snapshots (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    group_id     TEXT NOT NULL,
    group_name   TEXT NOT NULL,
    window_start INTEGER NOT NULL,
    taken_at     INTEGER NOT NULL,
    rule_count   INTEGER NOT NULL,
    rules        TEXT NOT NULL,
    UNIQUE (group_id, window_start)
);
CREATE INDEX snapshots_by_time ON snapshots (taken_at);
"#;

/// What version 2 added; also run when upgrading a version 1 database.
const SCHEMA_V2: &str = "
CREATE TABLE store (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    store_id   TEXT NOT NULL,
    generation INTEGER NOT NULL
);
";

/// The tables that hold the state (not the snapshots), children first.
const STATE_TABLES: [&str; 7] = [
    "rules",
    "\"groups\"",
    "prefix_lists",
    "port_lists",
    "nics",
    "settings",
    "meta",
];

/// The `meta` key of the id generator.
const META_IDS: &str = "ids";

/// A [`Store`] in one SQLite database file.
///
/// Keeps a copy of the state last committed (or loaded) so that a commit writes
/// only the rows that differ from it. When a commit fails, the copy is dropped
/// and the next commit rewrites every state row, so a failure can never leave
/// the copy and the database apart.
pub struct SqliteStore {
    conn: Connection,
    /// The database path, for messages.
    path: String,
    /// The state the database holds, when known.
    cache: Option<State>,
    /// Its identity and generation, as last read or committed.
    position: StorePosition,
}

impl SqliteStore {
    /// Opens the store at `path`, creating the file (mode 0600) and the schema
    /// when needed. A database of a newer schema is refused.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let shown = path.display().to_string();
        create_private(path).map_err(|source| StoreError::Create {
            path: shown.clone(),
            source,
        })?;
        let conn = Connection::open(path).map_err(|source| StoreError::Open {
            path: shown.clone(),
            source,
        })?;
        Self::setup(conn, shown)
    }

    /// A store in memory, gone when dropped (tests).
    pub fn open_in_memory() -> Result<Self, StoreError> {
        let shown = ":memory:".to_owned();
        let conn = Connection::open_in_memory().map_err(|source| StoreError::Open {
            path: shown.clone(),
            source,
        })?;
        Self::setup(conn, shown)
    }

    /// The database path as shown in messages.
    pub fn path(&self) -> &str {
        &self.path
    }

    fn setup(conn: Connection, path: String) -> Result<Self, StoreError> {
        let open_err = |source| StoreError::Open {
            path: path.clone(),
            source,
        };
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        // Refuse a database that is not ours before changing anything in it.
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(open_err)?;
        check_version(&path, version)?;
        if version == 0 {
            let tables: i64 = conn
                .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
                .map_err(open_err)?;
            if tables != 0 {
                return Err(StoreError::NotAStore {
                    path,
                    found: version,
                });
            }
        }
        // WAL: a commit appends to the log and syncs it once; readers do not
        // block the writer. In memory the mode stays `memory`, which is fine.
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(open_err)?;
        if !mode.eq_ignore_ascii_case("wal") && path != ":memory:" {
            log::warn!(
                "store {path}: journal mode is {mode}, not wal; commits stay atomic and durable, but slower"
            );
        }
        // FULL: the WAL is synced at every commit, so an acknowledged commit
        // survives power loss (NORMAL would only guarantee consistency).
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_err)?;
        conn.pragma_update(None, "foreign_keys", true)
            .map_err(open_err)?;
        let mut store = Self {
            conn,
            path,
            cache: None,
            position: StorePosition::default(),
        };
        if version != SCHEMA_VERSION {
            store.create_schema()?;
        }
        store.position = store.read_position()?;
        Ok(store)
    }

    /// The `store` row.
    fn read_position(&self) -> Result<StorePosition, StoreError> {
        let (id, generation): (String, i64) = self
            .conn
            .query_row(
                "SELECT store_id, generation FROM store WHERE id = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(|e| sql(&self.path, "reading the store's identity", e))?;
        let corrupt = |reason: &str| StoreError::CorruptRow {
            path: self.path.clone(),
            table: "store",
            key: "1".to_owned(),
            reason: reason.to_owned(),
        };
        Ok(StorePosition {
            id: StoreId::parse(&id).ok_or_else(|| corrupt("store_id is not 32 hex digits"))?,
            generation: u64::try_from(generation).map_err(|_| corrupt("generation is negative"))?,
        })
    }

    /// Creates the schema in a database that has none, checking again under the
    /// write lock in case another process created it meanwhile.
    fn create_schema(&mut self) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| sql(&self.path, "beginning the schema transaction", e))?;
        let version: i64 = tx
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| sql(&self.path, "reading the schema version", e))?;
        if version != SCHEMA_VERSION {
            check_version(&self.path, version)?;
            let tables: i64 = tx
                .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
                .map_err(|e| sql(&self.path, "listing the tables", e))?;
            // Version 1: upgraded in place; its state counts as one commit.
            let generation: i64 = if version == 1 {
                tx.query_row(
                    "SELECT count(*) FROM meta WHERE key = ?1",
                    [META_IDS],
                    |r| r.get(0),
                )
                .map_err(|e| sql(&self.path, "reading a version 1 store", e))?
            } else if tables != 0 {
                return Err(StoreError::NotAStore {
                    path: self.path.clone(),
                    found: version,
                });
            } else {
                tx.execute_batch(SCHEMA)
                    .map_err(|e| sql(&self.path, "creating the schema", e))?;
                0
            };
            tx.execute_batch(SCHEMA_V2)
                .map_err(|e| sql(&self.path, "creating the store table", e))?;
            let id = StoreId::random().map_err(|source| StoreError::Create {
                path: self.path.clone(),
                source,
            })?;
            tx.execute(
                "INSERT INTO store (id, store_id, generation) VALUES (1, ?1, ?2)",
                params![id.to_string(), generation],
            )
            .map_err(|e| sql(&self.path, "writing the store's identity", e))?;
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)
                .map_err(|e| sql(&self.path, "setting the schema version", e))?;
        }
        tx.commit()
            .map_err(|e| sql(&self.path, "committing the schema", e))
    }

    /// Writes `state` (only what differs from `old`, or everything when `old`
    /// is unknown) and `snapshots` in one immediate transaction.
    fn write(
        &mut self,
        old: Option<&State>,
        state: &State,
        snapshots: &[Snapshot],
    ) -> Result<(), StoreError> {
        let path = self.path.as_str();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| sql(path, "beginning the commit", e))?;
        let w = Writer { tx: &tx, path };
        if old.is_none() {
            for table in STATE_TABLES {
                w.exec(&format!("DELETE FROM {table}"), [], "clearing the state")?;
            }
        }
        w.settings(old.map(|o| &o.settings), &state.settings)?;
        w.ids(old.map(|o| &o.ids), &state.ids)?;
        w.groups(old, state)?;
        w.rules(old, state)?;
        w.keyed(
            "prefix_lists",
            "id",
            old.map(|o| &o.prefix_lists),
            &state.prefix_lists,
        )?;
        w.keyed(
            "port_lists",
            "id",
            old.map(|o| &o.port_lists),
            &state.port_lists,
        )?;
        w.keyed("nics", "name", old.map(|o| &o.nics), &state.nics)?;
        w.snapshots(snapshots)?;
        w.exec(
            "UPDATE store SET generation = generation + 1 WHERE id = 1",
            [],
            "counting the commit",
        )?;
        tx.commit().map_err(|e| sql(path, "committing", e))
    }

    /// Reads the state in one read transaction (a consistent view).
    fn read(&mut self) -> Result<Option<State>, StoreError> {
        let path = self.path.clone();
        let tx = self
            .conn
            .transaction()
            .map_err(|e| sql(&path, "beginning the read", e))?;
        let r = Reader {
            conn: &tx,
            path: &path,
        };
        let state = r.state()?;
        tx.finish().map_err(|e| sql(&path, "ending the read", e))?;
        Ok(state)
    }
}

impl Store for SqliteStore {
    fn load(&mut self) -> Result<Option<State>, StoreError> {
        self.cache = None;
        let state = self.read()?;
        if let Some(s) = &state {
            validate_state(s).map_err(|source| StoreError::InvalidState {
                path: self.path.clone(),
                source: Box::new(source),
            })?;
            self.cache = Some(s.clone());
        }
        Ok(state)
    }

    fn commit(&mut self, state: &State, snapshots: &[Snapshot]) -> Result<(), StoreError> {
        // A state that fails validation would make the store unloadable.
        validate_state(state).map_err(|source| StoreError::Refused {
            path: self.path.clone(),
            source: Box::new(source),
        })?;
        // Taken out: if the write fails, the database still holds the old state,
        // but dropping the copy costs only one full rewrite and cannot be wrong.
        let old = self.cache.take();
        self.write(old.as_ref(), state, snapshots)?;
        self.cache = Some(state.clone());
        self.position.generation += 1;
        Ok(())
    }

    fn position(&self) -> StorePosition {
        self.position
    }

    fn has_snapshot(&mut self, group: &GroupId, window_start: u64) -> Result<bool, StoreError> {
        let Ok(window) = i64::try_from(window_start) else {
            return Ok(false);
        };
        self.conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM snapshots WHERE group_id = ?1 AND window_start = ?2)",
                params![group.as_str(), window],
                |r| r.get(0),
            )
            .map_err(|e| sql(&self.path, "looking up a snapshot", e))
    }

    fn snapshots(&mut self, group: Option<&GroupId>) -> Result<Vec<SnapshotInfo>, StoreError> {
        let r = Reader {
            conn: &self.conn,
            path: &self.path,
        };
        r.snapshot_infos(group)
    }

    fn snapshot(&mut self, id: u64) -> Result<Option<Snapshot>, StoreError> {
        let Ok(id) = i64::try_from(id) else {
            return Ok(None);
        };
        let r = Reader {
            conn: &self.conn,
            path: &self.path,
        };
        r.snapshot(id)
    }

    fn prune_snapshots(&mut self, before: u64) -> Result<usize, StoreError> {
        let what = "deleting old snapshots";
        match i64::try_from(before) {
            Ok(before) => self
                .conn
                .execute("DELETE FROM snapshots WHERE taken_at < ?1", [before]),
            // Every stored time is below it.
            Err(_) => self.conn.execute("DELETE FROM snapshots", []),
        }
        .map_err(|e| sql(&self.path, what, e))
    }
}

/// Creates `path` with mode 0600 if it does not exist, and makes its directory
/// entry durable. SQLite gives its `-wal` and `-shm` files the same mode.
fn create_private(path: &Path) -> std::io::Result<()> {
    match OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(file) => {
            file.sync_all()?;
            let dir = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            File::open(dir)?.sync_all()
        }
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Refuses a schema version this code cannot use; `Ok` for 0 (no schema yet).
fn check_version(path: &str, version: i64) -> Result<(), StoreError> {
    if version > SCHEMA_VERSION {
        Err(StoreError::SchemaTooNew {
            path: path.to_owned(),
            found: version,
            supported: SCHEMA_VERSION,
        })
    } else if version != 0 && version != 1 && version != SCHEMA_VERSION {
        Err(StoreError::NotAStore {
            path: path.to_owned(),
            found: version,
        })
    } else {
        Ok(())
    }
}

fn sql(path: &str, what: &str, source: rusqlite::Error) -> StoreError {
    StoreError::Sql {
        path: path.to_owned(),
        what: what.to_owned(),
        source,
    }
}

/// A u64 as SQLite's i64, or an error naming the field.
fn int(path: &str, field: &'static str, value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::OutOfRange {
        path: path.to_owned(),
        field,
        value,
    })
}

/// The writing half of a commit, inside its transaction.
struct Writer<'a> {
    tx: &'a rusqlite::Transaction<'a>,
    path: &'a str,
}

impl Writer<'_> {
    fn exec(
        &self,
        statement: &str,
        params: impl rusqlite::Params,
        what: &str,
    ) -> Result<usize, StoreError> {
        self.tx
            .execute(statement, params)
            .map_err(|e| sql(self.path, what, e))
    }

    fn json(
        &self,
        what: impl FnOnce() -> String,
        value: &impl Serialize,
    ) -> Result<String, StoreError> {
        serde_json::to_string(value).map_err(|source| StoreError::Encode {
            path: self.path.to_owned(),
            what: what(),
            source,
        })
    }

    fn settings(&self, old: Option<&Settings>, new: &Settings) -> Result<(), StoreError> {
        if old == Some(new) {
            return Ok(());
        }
        let json = self.json(|| "settings".to_owned(), new)?;
        self.exec(
            "INSERT INTO settings (id, json) VALUES (1, ?1)
             ON CONFLICT (id) DO UPDATE SET json = excluded.json",
            [json],
            "writing settings",
        )
        .map(drop)
    }

    fn ids(&self, old: Option<&IdGen>, new: &IdGen) -> Result<(), StoreError> {
        if old == Some(new) {
            return Ok(());
        }
        let json = self.json(|| "the id generator".to_owned(), new)?;
        self.exec(
            "INSERT INTO meta (key, json) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET json = excluded.json",
            [META_IDS, json.as_str()],
            "writing meta ids",
        )
        .map(drop)
    }

    /// Group rows: each group's attributes without its rules.
    fn groups(&self, old: Option<&State>, new: &State) -> Result<(), StoreError> {
        let mut upsert = self
            .tx
            .prepare(
                r#"INSERT INTO "groups" (id, json) VALUES (?1, ?2)
                   ON CONFLICT (id) DO UPDATE SET json = excluded.json"#,
            )
            .map_err(|e| sql(self.path, "preparing to write groups", e))?;
        for (id, group) in &new.groups {
            let head = header(group);
            let unchanged = old
                .and_then(|o| o.groups.get(id))
                .is_some_and(|g| header(g) == head);
            if unchanged {
                continue;
            }
            let mut value = serde_json::to_value(&head).map_err(|source| StoreError::Encode {
                path: self.path.to_owned(),
                what: format!("group {id}"),
                source,
            })?;
            if let Some(map) = value.as_object_mut() {
                map.remove("rules");
            }
            let json = self.json(|| format!("group {id}"), &value)?;
            upsert
                .execute([id.as_str(), json.as_str()])
                .map_err(|e| sql(self.path, &format!("writing group {id}"), e))?;
        }
        if let Some(old) = old {
            for id in old.groups.keys().filter(|id| !new.groups.contains_key(*id)) {
                self.exec(
                    r#"DELETE FROM "groups" WHERE id = ?1"#,
                    [id.as_str()],
                    &format!("deleting group {id}"),
                )?;
            }
        }
        Ok(())
    }

    /// Rule rows: a rule is rewritten when it, its group or its position changed
    /// (a reorder rewrites the positions that moved), deleted when it is gone.
    fn rules(&self, old: Option<&State>, new: &State) -> Result<(), StoreError> {
        let before = old.map(rule_rows).unwrap_or_default();
        let after = rule_rows(new);
        let mut upsert = self
            .tx
            .prepare(
                "INSERT INTO rules (id, group_id, position, json) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (id) DO UPDATE SET
                     group_id = excluded.group_id,
                     position = excluded.position,
                     json = excluded.json",
            )
            .map_err(|e| sql(self.path, "preparing to write rules", e))?;
        for (id, row @ (group, position, rule)) in &after {
            if before.get(id) == Some(row) {
                continue;
            }
            let position = int(
                self.path,
                "rules.position",
                u64::try_from(*position).unwrap_or(u64::MAX),
            )?;
            let json = self.json(|| format!("rule {id}"), rule)?;
            upsert
                .execute(params![id.as_str(), group.as_str(), position, json])
                .map_err(|e| sql(self.path, &format!("writing rule {id}"), e))?;
        }
        for id in before.keys().filter(|id| !after.contains_key(*id)) {
            self.exec(
                "DELETE FROM rules WHERE id = ?1",
                [id.as_str()],
                &format!("deleting rule {id}"),
            )?;
        }
        Ok(())
    }

    /// Rows of a map stored one JSON value per key.
    fn keyed<K: Ord + AsKey, V: PartialEq + Serialize>(
        &self,
        table: &'static str,
        key_column: &'static str,
        old: Option<&BTreeMap<K, V>>,
        new: &BTreeMap<K, V>,
    ) -> Result<(), StoreError> {
        let mut upsert = self
            .tx
            .prepare(&format!(
                "INSERT INTO {table} ({key_column}, json) VALUES (?1, ?2)
                 ON CONFLICT ({key_column}) DO UPDATE SET json = excluded.json"
            ))
            .map_err(|e| sql(self.path, &format!("preparing to write {table}"), e))?;
        for (key, value) in new {
            if old.and_then(|o| o.get(key)) == Some(value) {
                continue;
            }
            let key = key.as_key();
            let json = self.json(|| format!("{table} row {key}"), value)?;
            upsert
                .execute([key, json.as_str()])
                .map_err(|e| sql(self.path, &format!("writing {table} row {key}"), e))?;
        }
        if let Some(old) = old {
            for key in old.keys().filter(|k| !new.contains_key(*k)) {
                let key = key.as_key();
                self.exec(
                    &format!("DELETE FROM {table} WHERE {key_column} = ?1"),
                    [key],
                    &format!("deleting {table} row {key}"),
                )?;
            }
        }
        Ok(())
    }

    /// Adds snapshots; one that finds its group and window taken is skipped (the
    /// first of a window is the one to keep).
    fn snapshots(&self, snapshots: &[Snapshot]) -> Result<(), StoreError> {
        if snapshots.is_empty() {
            return Ok(());
        }
        let mut insert = self
            .tx
            .prepare(
                "INSERT INTO snapshots
                     (group_id, group_name, window_start, taken_at, rule_count, rules)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (group_id, window_start) DO NOTHING",
            )
            .map_err(|e| sql(self.path, "preparing to write snapshots", e))?;
        for s in snapshots {
            let window = int(self.path, "snapshot.window_start", s.window_start)?;
            let taken = int(self.path, "snapshot.taken_at", s.taken_at)?;
            let count = int(
                self.path,
                "snapshot.rules",
                u64::try_from(s.rules.len()).unwrap_or(u64::MAX),
            )?;
            let json = self.json(
                || format!("the snapshot of group {} at {}", s.group, s.window_start),
                &s.rules,
            )?;
            insert
                .execute(params![
                    s.group.as_str(),
                    s.group_name,
                    window,
                    taken,
                    count,
                    json
                ])
                .map_err(|e| {
                    sql(
                        self.path,
                        &format!("writing the snapshot of group {}", s.group),
                        e,
                    )
                })?;
        }
        Ok(())
    }
}

/// A map key as stored in its table's key column.
trait AsKey {
    fn as_key(&self) -> &str;
}

impl AsKey for String {
    fn as_key(&self) -> &str {
        self
    }
}

impl AsKey for sg_policy::PrefixListId {
    fn as_key(&self) -> &str {
        self.as_str()
    }
}

impl AsKey for sg_policy::PortListId {
    fn as_key(&self) -> &str {
        self.as_str()
    }
}

/// A group without its rules: what its `groups` row holds.
fn header(g: &SecurityGroup) -> SecurityGroup {
    // Destructured so that a new field cannot be forgotten here.
    let SecurityGroup {
        id,
        name,
        description,
        kind,
        inner_policy,
        deletion_protection,
        managed,
        tags,
        rules: _,
    } = g;
    SecurityGroup {
        id: id.clone(),
        name: name.clone(),
        description: description.clone(),
        kind: *kind,
        inner_policy: *inner_policy,
        deletion_protection: *deletion_protection,
        managed: *managed,
        tags: tags.clone(),
        rules: Vec::new(),
    }
}

/// Each rule of a state with its group and position: the `rules` rows.
fn rule_rows(state: &State) -> BTreeMap<&RuleId, (&GroupId, usize, &Rule)> {
    state
        .groups
        .values()
        .flat_map(|g| {
            g.rules
                .iter()
                .enumerate()
                .map(move |(i, r)| (&r.id, (&g.id, i, r)))
        })
        .collect()
}

/// Reads rows back into objects, reporting a damaged row by table and key.
struct Reader<'a> {
    conn: &'a Connection,
    path: &'a str,
}

impl Reader<'_> {
    fn corrupt(
        &self,
        table: &'static str,
        key: impl Into<String>,
        reason: impl Into<String>,
    ) -> StoreError {
        StoreError::CorruptRow {
            path: self.path.to_owned(),
            table,
            key: key.into(),
            reason: reason.into(),
        }
    }

    /// Column `idx` (named `name`) of a row as text.
    fn text(
        &self,
        table: &'static str,
        key: &str,
        row: &Row<'_>,
        idx: usize,
        name: &str,
    ) -> Result<String, StoreError> {
        match row.get_ref(idx) {
            Ok(ValueRef::Text(t)) => std::str::from_utf8(t)
                .map(str::to_owned)
                .map_err(|e| self.corrupt(table, key, format!("column {name} is not UTF-8: {e}"))),
            Ok(other) => Err(self.corrupt(
                table,
                key,
                format!("column {name} holds {}, not text", other.data_type()),
            )),
            Err(e) => Err(self.corrupt(table, key, format!("column {name}: {e}"))),
        }
    }

    /// Column `idx` (named `name`) of a row as a non-negative integer.
    fn uint(
        &self,
        table: &'static str,
        key: &str,
        row: &Row<'_>,
        idx: usize,
        name: &str,
    ) -> Result<u64, StoreError> {
        match row.get_ref(idx) {
            Ok(ValueRef::Integer(n)) => u64::try_from(n)
                .map_err(|_| self.corrupt(table, key, format!("column {name} is negative: {n}"))),
            Ok(other) => Err(self.corrupt(
                table,
                key,
                format!("column {name} holds {}, not an integer", other.data_type()),
            )),
            Err(e) => Err(self.corrupt(table, key, format!("column {name}: {e}"))),
        }
    }

    /// A row's key: its key column as text, or its rowid when that is unreadable.
    fn key(&self, table: &'static str, row: &Row<'_>) -> Result<String, StoreError> {
        let rowid: i64 = row
            .get(0)
            .map_err(|e| sql(self.path, &format!("reading {table}"), e))?;
        self.text(table, &format!("rowid {rowid}"), row, 1, "key")
    }

    fn parse<T: DeserializeOwned>(
        &self,
        table: &'static str,
        key: &str,
        json: &str,
    ) -> Result<T, StoreError> {
        serde_json::from_str(json)
            .map_err(|e| self.corrupt(table, key, format!("its JSON does not read back: {e}")))
    }

    /// Every row of a `key, json` table, as (key, json).
    fn rows(&self, table: &'static str, select: &str) -> Result<Vec<(String, String)>, StoreError> {
        let what = format!("reading {table}");
        let mut stmt = self
            .conn
            .prepare(select)
            .map_err(|e| sql(self.path, &what, e))?;
        let mut rows = stmt.query([]).map_err(|e| sql(self.path, &what, e))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(|e| sql(self.path, &what, e))? {
            let key = self.key(table, row)?;
            let json = self.text(table, &key, row, 2, "json")?;
            out.push((key, json));
        }
        Ok(out)
    }

    /// The one JSON value of a `key, json` table that `select` picks, if any;
    /// `key` names the row in messages.
    fn single(
        &self,
        table: &'static str,
        select: &str,
        param: &dyn rusqlite::ToSql,
        key: &str,
    ) -> Result<Option<String>, StoreError> {
        let json: Option<rusqlite::types::Value> = self
            .conn
            .query_row(select, [param], |r| r.get(0))
            .optional()
            .map_err(|e| sql(self.path, &format!("reading {table}"), e))?;
        match json {
            None => Ok(None),
            Some(rusqlite::types::Value::Text(t)) => Ok(Some(t)),
            Some(other) => Err(self.corrupt(
                table,
                key,
                format!("column json holds {}, not text", other.data_type()),
            )),
        }
    }

    /// A `key, json` table as a map, each value's own key checked against its row's.
    fn keyed<K: Ord + Clone + AsKey, V: DeserializeOwned>(
        &self,
        table: &'static str,
        key_column: &str,
        own_key: impl Fn(&V) -> &K,
    ) -> Result<BTreeMap<K, V>, StoreError> {
        let select = format!("SELECT rowid, {key_column}, json FROM {table}");
        let mut out = BTreeMap::new();
        for (key, json) in self.rows(table, &select)? {
            let value: V = self.parse(table, &key, &json)?;
            let own = own_key(&value).clone();
            if own.as_key() != key {
                return Err(self.corrupt(
                    table,
                    &key,
                    format!("its JSON names {} instead", own.as_key()),
                ));
            }
            out.insert(own, value);
        }
        Ok(out)
    }

    fn count(&self, table: &str) -> Result<i64, StoreError> {
        self.conn
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .map_err(|e| sql(self.path, &format!("counting {table}"), e))
    }

    /// The stored state, `None` if nothing was ever committed. Not validated.
    fn state(&self) -> Result<Option<State>, StoreError> {
        let ids = self.single(
            "meta",
            "SELECT json FROM meta WHERE key = ?1",
            &META_IDS,
            META_IDS,
        )?;
        let settings = self.single(
            "settings",
            "SELECT json FROM settings WHERE id = ?1",
            &1,
            "1",
        )?;
        let Some(ids) = ids else {
            let mut rows = 0;
            for table in STATE_TABLES {
                rows += self.count(table)?;
            }
            if rows == 0 {
                return Ok(None);
            }
            return Err(self.corrupt(
                "meta",
                META_IDS,
                "missing, yet other state rows are present",
            ));
        };
        let Some(settings) = settings else {
            return Err(self.corrupt("settings", "1", "missing, yet meta ids is present"));
        };
        let ids: IdGen = self.parse("meta", META_IDS, &ids)?;
        let settings: Settings = self.parse("settings", "1", &settings)?;
        let mut groups = self.groups()?;
        self.attach_rules(&mut groups)?;
        Ok(Some(State {
            settings,
            groups: groups
                .into_iter()
                .map(|(id, g)| (id, std::sync::Arc::new(g)))
                .collect(),
            prefix_lists: self.keyed("prefix_lists", "id", |l: &PrefixList| &l.id)?,
            port_lists: self.keyed("port_lists", "id", |l: &PortList| &l.id)?,
            nics: self.keyed("nics", "name", |n: &NicBinding| &n.name)?,
            remote: BTreeMap::new(),
            census: std::sync::Arc::default(),
            ids,
        }))
    }

    fn groups(&self) -> Result<BTreeMap<GroupId, SecurityGroup>, StoreError> {
        let table = "groups";
        let mut out = BTreeMap::new();
        for (key, json) in self.rows(table, r#"SELECT rowid, id, json FROM "groups""#)? {
            let group: SecurityGroup = self.parse(table, &key, &json)?;
            if group.id.as_str() != key {
                return Err(self.corrupt(
                    table,
                    &key,
                    format!("its JSON names {} instead", group.id),
                ));
            }
            if !group.rules.is_empty() {
                return Err(self.corrupt(
                    table,
                    &key,
                    "its JSON holds rules; they belong in the rules table",
                ));
            }
            out.insert(group.id.clone(), group);
        }
        Ok(out)
    }

    /// Reads the rules table into the groups, each group's rules by position,
    /// checking that the positions are exactly 0..n.
    fn attach_rules(
        &self,
        groups: &mut BTreeMap<GroupId, SecurityGroup>,
    ) -> Result<(), StoreError> {
        let table = "rules";
        let what = "reading rules";
        let mut stmt = self
            .conn
            .prepare("SELECT rowid, id, group_id, position, json FROM rules")
            .map_err(|e| sql(self.path, what, e))?;
        let mut rows = stmt.query([]).map_err(|e| sql(self.path, what, e))?;
        let mut by_group: BTreeMap<GroupId, Vec<(u64, String, Rule)>> = BTreeMap::new();
        while let Some(row) = rows.next().map_err(|e| sql(self.path, what, e))? {
            let key = self.key(table, row)?;
            let group = self.text(table, &key, row, 2, "group_id")?;
            let position = self.uint(table, &key, row, 3, "position")?;
            let json = self.text(table, &key, row, 4, "json")?;
            let rule: Rule = self.parse(table, &key, &json)?;
            if rule.id.as_str() != key {
                return Err(self.corrupt(
                    table,
                    &key,
                    format!("its JSON names {} instead", rule.id),
                ));
            }
            let Some(g) = groups.keys().find(|g| g.as_str() == group) else {
                return Err(self.corrupt(
                    table,
                    &key,
                    format!("its group {group} has no row in groups"),
                ));
            };
            by_group
                .entry(g.clone())
                .or_default()
                .push((position, key, rule));
        }
        for (group, mut rules) in by_group {
            // Positions must be exactly 0..n: each below n and none twice.
            let n = rules.len();
            rules.sort_by_key(|(position, _, _)| *position);
            for (i, (position, key, _)) in rules.iter().enumerate() {
                if usize::try_from(*position).map_or(true, |p| p >= n) {
                    return Err(self.corrupt(
                        table,
                        key.as_str(),
                        format!("position {position} in group {group}, which has {n} rules (positions 0..{n})"),
                    ));
                }
                if i > 0 && rules[i - 1].0 == *position {
                    return Err(self.corrupt(
                        table,
                        key.as_str(),
                        format!(
                            "position {position} in group {group} is also that of rule {}",
                            rules[i - 1].1
                        ),
                    ));
                }
            }
            if let Some(g) = groups.get_mut(&group) {
                g.rules = rules.into_iter().map(|(_, _, r)| r).collect();
            }
        }
        Ok(())
    }

    fn snapshot_infos(&self, group: Option<&GroupId>) -> Result<Vec<SnapshotInfo>, StoreError> {
        let what = "listing snapshots";
        let select = "SELECT id, group_id, group_name, window_start, taken_at, rule_count
                      FROM snapshots WHERE ?1 IS NULL OR group_id = ?1
                      ORDER BY taken_at DESC, id DESC";
        let mut stmt = self
            .conn
            .prepare(select)
            .map_err(|e| sql(self.path, what, e))?;
        let mut rows = stmt
            .query([group.map(GroupId::as_str)])
            .map_err(|e| sql(self.path, what, e))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(|e| sql(self.path, what, e))? {
            out.push(self.snapshot_info(row)?);
        }
        Ok(out)
    }

    /// A snapshot row's columns but the rules (`id`, `group_id`, `group_name`,
    /// `window_start`, `taken_at`, `rule_count`).
    fn snapshot_info(&self, row: &Row<'_>) -> Result<SnapshotInfo, StoreError> {
        let table = "snapshots";
        let id: i64 = row
            .get(0)
            .map_err(|e| sql(self.path, "reading snapshots", e))?;
        let key = id.to_string();
        let group = self.text(table, &key, row, 1, "group_id")?;
        let group = GroupId::parse("snapshots.group_id", &group)
            .map_err(|e| self.corrupt(table, &key, e.to_string()))?;
        let rules = self.uint(table, &key, row, 5, "rule_count")?;
        Ok(SnapshotInfo {
            id: u64::try_from(id).map_err(|_| self.corrupt(table, &key, "negative id"))?,
            group,
            group_name: self.text(table, &key, row, 2, "group_name")?,
            window_start: self.uint(table, &key, row, 3, "window_start")?,
            taken_at: self.uint(table, &key, row, 4, "taken_at")?,
            rules: usize::try_from(rules)
                .map_err(|_| self.corrupt(table, &key, "rule_count does not fit in memory"))?,
        })
    }

    fn snapshot(&self, id: i64) -> Result<Option<Snapshot>, StoreError> {
        let table = "snapshots";
        let what = "reading a snapshot";
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, group_id, group_name, window_start, taken_at, rule_count, rules
                 FROM snapshots WHERE id = ?1",
            )
            .map_err(|e| sql(self.path, what, e))?;
        let mut rows = stmt.query([id]).map_err(|e| sql(self.path, what, e))?;
        let Some(row) = rows.next().map_err(|e| sql(self.path, what, e))? else {
            return Ok(None);
        };
        let info = self.snapshot_info(row)?;
        let key = id.to_string();
        let json = self.text(table, &key, row, 6, "rules")?;
        let rules: Vec<Rule> = self.parse(table, &key, &json)?;
        if rules.len() != info.rules {
            return Err(self.corrupt(
                table,
                &key,
                format!(
                    "rule_count is {} but the rules column holds {} rules",
                    info.rules,
                    rules.len()
                ),
            ));
        }
        Ok(Some(Snapshot {
            id: info.id,
            group: info.group,
            group_name: info.group_name,
            window_start: info.window_start,
            taken_at: info.taken_at,
            rules,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sg_policy::{GroupSpec, RuleSpec};

    fn tcp(port: u16) -> RuleSpec {
        RuleSpec::from_text(
            "ingress",
            "Accept",
            "1",
            "TCP",
            &format!("{port}/{port}"),
            "10.0.0.0/8",
        )
        .unwrap()
    }

    /// Commits `state` and returns how many rows the commit wrote or deleted.
    /// State rows a commit wrote (every commit also counts itself in the
    /// `store` row, which is not counted here).
    fn rows_written(store: &mut SqliteStore, state: &State) -> u64 {
        let before = store.conn.total_changes();
        let generation = store.position().generation;
        store.commit(state, &[]).unwrap();
        assert_eq!(store.position().generation, generation + 1);
        store.conn.total_changes() - before - 1
    }

    #[test]
    fn a_commit_writes_only_the_rows_that_changed() {
        let mut store = SqliteStore::open_in_memory().unwrap();
        let mut s = State::with_seed(1);
        let g = s.create_group(GroupSpec::basic("g")).unwrap();
        let rules = s.authorize_all(&g, (1..=5).map(tcp).collect()).unwrap();
        // settings, meta, 1 group, 5 rules.
        assert_eq!(rows_written(&mut store, &s), 8);
        assert_eq!(rows_written(&mut store, &s), 0, "nothing changed");

        s.modify_rule(&g, &rules[2], tcp(99)).unwrap();
        assert_eq!(rows_written(&mut store, &s), 1, "one rule");

        // Swapping two rules moves two positions.
        std::sync::Arc::make_mut(s.groups.get_mut(&g).unwrap())
            .rules
            .swap(0, 4);
        assert_eq!(rows_written(&mut store, &s), 2, "two positions");

        // Revoking the first rule shifts the four after it, and deletes one.
        s.revoke(&g, &s.groups[&g].rules[0].id.clone()).unwrap();
        assert_eq!(rows_written(&mut store, &s), 5);

        // A new rule takes a fresh id: the id generator's row and the rule's.
        s.authorize(&g, tcp(7)).unwrap();
        assert_eq!(rows_written(&mut store, &s), 2);

        assert_eq!(store.load().unwrap(), Some(s));
    }
}
