//! The SQLite store: what is committed is what a fresh connection loads, commits
//! are atomic across a SIGKILL, snapshots keep one per group and window, and a
//! damaged or foreign database is reported, never silently used.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Write},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use sg_agent::store::{Snapshot, SqliteStore, Store, StoreError};
use sg_policy::snapshot;
use sg_policy::{
    BindingMode, Cidr, Family, GroupChange, GroupId, GroupSpec, NicBinding, PortListEntry,
    PortListId, PortListSpec, PortRange, PrefixListEntry, PrefixListId, PrefixListSpec,
    SessionTimeouts, Settings, State, validate_state,
};

use crate::support::rule;

// ---- helpers -----------------------------------------------------------------

/// A directory of its own under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("sg-store-test-{}-{n}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        Self(dir)
    }

    fn db(&self) -> PathBuf {
        self.0.join("state.db")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // Best effort: a failure to clean up must not turn into a second panic.
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn cidr(text: &str) -> Cidr {
    Cidr::parse("test", text).expect("test cidr")
}

/// What a fresh connection to `path` loads.
fn load_fresh(path: &Path) -> Option<State> {
    SqliteStore::open(path)
        .expect("reopen")
        .load()
        .expect("load")
}

/// The ids a rich state is built around.
struct Rich {
    state: State,
    web: GroupId,
    db: GroupId,
    ent: GroupId,
}

/// The rich state's prefix list (IPv4, 5 max) and port list (3 max).
fn rich_lists(s: &mut State) -> (PrefixListId, PortListId) {
    let pl = s
        .create_prefix_list(PrefixListSpec {
            name: "offices".into(),
            description: "branch offices".into(),
            family: Family::Ipv4,
            max_entries: 5,
            entries: vec![
                PrefixListEntry {
                    cidr: cidr("192.0.2.0/24"),
                    description: "paris".into(),
                },
                PrefixListEntry {
                    cidr: cidr("198.51.100.0/24"),
                    description: String::new(),
                },
            ],
        })
        .unwrap();
    let prl = s
        .create_port_list(PortListSpec {
            name: "web ports".into(),
            description: String::new(),
            max_entries: 3,
            entries: vec![
                PortListEntry {
                    range: PortRange::single(80),
                    description: "http".into(),
                },
                PortListEntry {
                    range: PortRange::single(443),
                    description: "https".into(),
                },
            ],
        })
        .unwrap();
    (pl, prl)
}

/// A state using every kind of object: basic and enterprise groups with tags,
/// rules with CIDR, group, prefix-list and port-list peers and quintuple extras,
/// two lists, NICs of both modes, non-default settings.
fn rich_state() -> Rich {
    let mut s = State::with_seed(7);
    s.set_settings(Settings {
        platform_addresses: vec![cidr("100.100.100.200")],
        block_port_25: false,
        session_timeouts: SessionTimeouts {
            other_secs: 600,
            ..SessionTimeouts::default()
        },
        fragment_timeout_secs: 45,
        snapshot_retention_days: 7,
    })
    .unwrap();
    let (pl, prl) = rich_lists(&mut s);
    let mut web_spec = GroupSpec::basic("web");
    web_spec.description = "front end".into();
    web_spec.tags = BTreeMap::from([("env".into(), "prod".into()), ("team".into(), "a".into())]);
    web_spec.deletion_protection = true;
    let web = s.create_group(web_spec).unwrap();
    let db = s.create_group(GroupSpec::basic("db")).unwrap();
    let ent = s.create_group(GroupSpec::enterprise("ent")).unwrap();
    s.authorize_all(
        &web,
        vec![
            rule("ingress", "Accept", "1", "TCP", "22/22", "10.0.0.0/8")
                .with_description("ssh from the lan"),
            rule("ingress", "Accept", "2", "TCP", prl.as_str(), pl.as_str()),
            rule("ingress", "Drop", "5", "ALL", "-1/-1", "0.0.0.0/0"),
            rule("egress", "Accept", "1", "UDP", "53/53", "2001:db8::/32").with_source_ports(
                PortRange {
                    from: 1024,
                    to: 65535,
                },
            ),
            rule("ingress", "Accept", "3", "TCP", "8080/8090", db.as_str())
                .with_local(cidr("10.1.0.5")),
        ],
    )
    .unwrap();
    s.authorize_all(
        &db,
        vec![
            rule("ingress", "Accept", "1", "TCP", "5432/5432", web.as_str()),
            rule("ingress", "Accept", "1", "ICMP", "-1/-1", "10.0.0.0/8"),
        ],
    )
    .unwrap();
    s.authorize(
        &ent,
        rule("egress", "Drop", "100", "GRE", "-1/-1", "203.0.113.0/24"),
    )
    .unwrap();
    let mut eth0 = NicBinding::new(
        "eth0",
        BindingMode::Local,
        vec!["10.1.0.5".parse().unwrap(), "2001:db8::5".parse().unwrap()],
        vec![web.clone(), db.clone()],
    );
    eth0.extra_allowed = vec![cidr("10.9.0.0/16")];
    eth0.anti_spoof = Some(false);
    s.bind_nic(eth0).unwrap();
    s.bind_nic(NicBinding::new(
        "veth-ent",
        BindingMode::Port,
        vec!["10.2.0.9".parse().unwrap()],
        vec![ent.clone()],
    ))
    .unwrap();
    validate_state(&s).unwrap();
    Rich {
        state: s,
        web,
        db,
        ent,
    }
}

fn snap(group: &GroupId, window_start: u64, taken_at: u64, state: &State) -> Snapshot {
    let g = &state.groups[group];
    Snapshot {
        id: 0,
        group: group.clone(),
        group_name: g.name.clone(),
        window_start,
        taken_at,
        rules: g.rules.clone(),
    }
}

// ---- round trips -----------------------------------------------------------

#[test]
fn a_rich_state_survives_close_and_reopen() {
    let dir = TempDir::new("rich");
    let rich = rich_state();
    {
        let mut store = SqliteStore::open(&dir.db()).unwrap();
        assert_eq!(store.load().unwrap(), None, "a new store holds no state");
        store.commit(&rich.state, &[]).unwrap();
    }
    let loaded = load_fresh(&dir.db()).expect("committed state");
    assert_eq!(loaded, rich.state);
    // Order matters: the rules come back in the order they were given.
    let ids = |s: &State| -> Vec<String> {
        s.groups[&rich.web]
            .rules
            .iter()
            .map(|r| r.id.to_string())
            .collect()
    };
    assert_eq!(ids(&loaded), ids(&rich.state));
}

#[test]
fn an_empty_state_is_a_committed_state() {
    let dir = TempDir::new("empty");
    let s = State::with_seed(1);
    SqliteStore::open(&dir.db())
        .unwrap()
        .commit(&s, &[])
        .unwrap();
    assert_eq!(load_fresh(&dir.db()), Some(s));
}

/// An older agent took control characters and broad platform addresses;
/// the changes of this one refuse them (`validate_change`), but a store
/// holding them still loads: refusing to start over a description would
/// leave the pinned data plane without an agent to fix it (issue 12 item 13).
#[test]
fn a_store_an_older_agent_wrote_with_control_characters_still_loads() {
    let dir = TempDir::new("older");
    let mut s = State::with_seed(1);
    let g = s.create_group(GroupSpec::basic("web")).unwrap();
    s.authorize(
        &g,
        rule("ingress", "Accept", "1", "TCP", "22/22", "10.0.0.0/8"),
    )
    .unwrap();
    let group = std::sync::Arc::make_mut(s.groups.get_mut(&g).unwrap());
    "red\u{1b}[31m".clone_into(&mut group.description);
    "line\nbreak \u{202e}".clone_into(&mut group.rules[0].spec.description);
    s.settings.platform_addresses = vec![cidr("0.0.0.0/0")];
    SqliteStore::open(&dir.db())
        .unwrap()
        .commit(&s, &[])
        .unwrap();
    assert_eq!(load_fresh(&dir.db()), Some(s));
}

/// Every step of a long edit session, committed by one long-lived store (which
/// writes only what changed), reads back from a fresh connection.
#[test]
#[expect(clippy::too_many_lines, reason = "one edit session, step by step")]
fn every_commit_reads_back_from_a_fresh_connection() {
    let dir = TempDir::new("sequence");
    let Rich {
        state: mut s,
        web,
        db,
        ent,
    } = rich_state();
    let mut store = SqliteStore::open(&dir.db()).unwrap();
    let mut steps = 0;
    let mut check = |store: &mut SqliteStore, s: &State, what: &str| {
        store
            .commit(s, &[])
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(load_fresh(&dir.db()).as_ref(), Some(s), "after: {what}");
        steps += 1;
    };
    check(&mut store, &s, "first commit");
    check(&mut store, &s, "the same state again");

    let r = s
        .authorize(
            &db,
            rule("egress", "Accept", "7", "TCP", "443/443", "0.0.0.0/0"),
        )
        .unwrap();
    check(&mut store, &s, "add a rule");

    s.modify_rule(
        &db,
        &r,
        rule("egress", "Drop", "9", "UDP", "500/501", "192.0.2.1").with_description("changed"),
    )
    .unwrap();
    check(&mut store, &s, "modify a rule");

    std::sync::Arc::make_mut(s.groups.get_mut(&web).unwrap())
        .rules
        .reverse();
    validate_state(&s).unwrap();
    check(&mut store, &s, "reverse a group's rules");

    std::sync::Arc::make_mut(s.groups.get_mut(&web).unwrap())
        .rules
        .rotate_left(2);
    check(&mut store, &s, "rotate a group's rules");

    let first = s.groups[&web].rules[0].id.clone();
    s.revoke(&web, &first).unwrap();
    check(&mut store, &s, "revoke the first rule");

    s.modify_group(
        &db,
        GroupChange {
            name: Some("database".into()),
            tags: Some(BTreeMap::from([("tier".into(), "data".into())])),
            ..GroupChange::default()
        },
    )
    .unwrap();
    check(&mut store, &s, "change a group's attributes only");

    // A rule moves to another group under the same id (as an import may do).
    let moved = std::sync::Arc::make_mut(s.groups.get_mut(&web).unwrap())
        .rules
        .pop()
        .unwrap();
    std::sync::Arc::make_mut(s.groups.get_mut(&db).unwrap())
        .rules
        .insert(0, moved);
    validate_state(&s).unwrap();
    check(&mut store, &s, "move a rule between groups");

    let pl = s.prefix_lists.keys().next().unwrap().clone();
    s.modify_prefix_list(
        &pl,
        PrefixListSpec {
            name: "offices v2".into(),
            description: String::new(),
            family: Family::Ipv4,
            max_entries: 4,
            entries: vec![PrefixListEntry {
                cidr: cidr("203.0.113.0/25"),
                description: String::new(),
            }],
        },
    )
    .unwrap();
    check(&mut store, &s, "modify a prefix list");

    let prl = s.port_lists.keys().next().unwrap().clone();
    let users: Vec<_> = s
        .all_rules()
        .filter(|(_, r)| r.spec.ports == sg_policy::PortSpec::List(prl.clone()))
        .map(|(g, r)| (g.id.clone(), r.id.clone()))
        .collect();
    for (g, r) in users {
        s.revoke(&g, &r).unwrap();
    }
    s.delete_port_list(&prl).unwrap();
    check(&mut store, &s, "delete a port list");

    s.unbind_nic("veth-ent").unwrap();
    s.delete_group(&ent).unwrap();
    check(&mut store, &s, "unbind a NIC and delete its group");

    s.set_nic_addresses("eth0", vec!["10.1.0.6".parse().unwrap()], vec![])
        .unwrap();
    s.set_anti_spoof("eth0", None).unwrap();
    check(&mut store, &s, "change a NIC");

    let fresh = s.create_group(GroupSpec::basic("fresh")).unwrap();
    s.authorize_all(
        &fresh,
        vec![
            rule("ingress", "Accept", "1", "TCP", "1/1", "10.0.0.1"),
            rule("ingress", "Accept", "1", "TCP", "2/2", "10.0.0.2"),
            rule("ingress", "Accept", "1", "TCP", "3/3", "10.0.0.3"),
        ],
    )
    .unwrap();
    s.join("eth0", &fresh).unwrap();
    s.bind_nic(NicBinding::new(
        "eth9",
        BindingMode::Port,
        vec![],
        vec![fresh.clone()],
    ))
    .unwrap();
    check(&mut store, &s, "a group with rules and a NIC at once");

    s.set_settings(Settings {
        snapshot_retention_days: 30,
        ..Settings::default()
    })
    .unwrap();
    check(&mut store, &s, "settings");

    // Everything goes: the store must hold an empty state, not the old rows.
    s.nics.clear();
    s.groups.clear();
    s.prefix_lists.clear();
    s.port_lists.clear();
    validate_state(&s).unwrap();
    check(&mut store, &s, "delete everything");

    assert_eq!(steps, 16);
    assert_eq!(store.load().unwrap(), Some(s));
}

/// A store opened on an existing database that commits before it loads knows
/// nothing of what is stored: the commit must still replace all of it.
#[test]
fn a_commit_before_any_load_replaces_every_stored_row() {
    let dir = TempDir::new("blind");
    let rich = rich_state();
    SqliteStore::open(&dir.db())
        .unwrap()
        .commit(&rich.state, &[])
        .unwrap();
    let mut other = State::with_seed(99);
    let g = other.create_group(GroupSpec::basic("only")).unwrap();
    other
        .authorize(
            &g,
            rule("ingress", "Accept", "1", "ALL", "-1/-1", "10.0.0.0/8"),
        )
        .unwrap();
    SqliteStore::open(&dir.db())
        .unwrap()
        .commit(&other, &[])
        .unwrap();
    assert_eq!(load_fresh(&dir.db()), Some(other));
}

#[test]
fn a_state_that_fails_validation_is_refused_and_nothing_changes() {
    let dir = TempDir::new("refused");
    let rich = rich_state();
    let mut store = SqliteStore::open(&dir.db()).unwrap();
    store.commit(&rich.state, &[]).unwrap();
    let mut bad = rich.state.clone();
    bad.settings.snapshot_retention_days = 0;
    std::sync::Arc::make_mut(bad.groups.get_mut(&rich.web).unwrap())
        .rules
        .clear();
    let snapshot = snap(&rich.web, 300, 300, &rich.state);
    let err = store.commit(&bad, &[snapshot]).unwrap_err();
    assert!(matches!(err, StoreError::Refused { .. }), "{err:?}");
    assert!(
        err.to_string().contains("settings.snapshot_retention_days"),
        "{err}"
    );
    assert_eq!(load_fresh(&dir.db()), Some(rich.state.clone()));
    assert_eq!(store.snapshots(None).unwrap(), vec![]);
    // The store still works, and still diffs correctly.
    let mut next = rich.state;
    std::sync::Arc::make_mut(next.groups.get_mut(&rich.db).unwrap())
        .rules
        .pop();
    store.commit(&next, &[]).unwrap();
    assert_eq!(load_fresh(&dir.db()), Some(next));
}

/// A commit that fails in SQLite (here: a snapshot time SQLite cannot hold)
/// keeps nothing, and the store's idea of what is stored stays right.
#[test]
fn a_failed_commit_keeps_nothing_and_the_next_one_is_complete() {
    let dir = TempDir::new("failed");
    let rich = rich_state();
    let mut store = SqliteStore::open(&dir.db()).unwrap();
    store.commit(&rich.state, &[]).unwrap();
    let mut next = rich.state.clone();
    std::sync::Arc::make_mut(next.groups.get_mut(&rich.web).unwrap())
        .rules
        .truncate(1);
    next.unbind_nic("veth-ent").unwrap();
    let bad = snap(&rich.web, u64::MAX, u64::MAX, &rich.state);
    let err = store.commit(&next, &[bad]).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::OutOfRange {
                field: "snapshot.window_start",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(load_fresh(&dir.db()), Some(rich.state.clone()));
    // Committing the state it failed on must write all of it, not assume the
    // failed attempt left anything behind.
    store.commit(&next, &[]).unwrap();
    assert_eq!(load_fresh(&dir.db()), Some(next));
}

// ---- snapshots -------------------------------------------------------------

#[test]
fn snapshots_are_stored_listed_fetched_and_pruned() {
    let rich = rich_state();
    let s = &rich.state;
    let mut store = SqliteStore::open_in_memory().unwrap();
    let day = 86_400;
    store
        .commit(
            s,
            &[
                snap(&rich.web, 0, 10, s),
                snap(&rich.db, 0, 20, s),
                snap(&rich.web, 300, 310, s),
            ],
        )
        .unwrap();
    store
        .commit(s, &[snap(&rich.web, 2 * day, 2 * day + 1, s)])
        .unwrap();

    let all = store.snapshots(None).unwrap();
    let taken: Vec<u64> = all.iter().map(|i| i.taken_at).collect();
    assert_eq!(taken, vec![2 * day + 1, 310, 20, 10], "newest first");
    let web_only = store.snapshots(Some(&rich.web)).unwrap();
    assert_eq!(web_only.len(), 3);
    assert!(web_only.iter().all(|i| i.group == rich.web));
    let web_rules = s.groups[&rich.web].rules.len();
    assert!(
        web_only
            .iter()
            .all(|i| i.rules == web_rules && i.group_name == "web")
    );
    assert_eq!(store.snapshots(Some(&rich.ent)).unwrap(), vec![]);

    let ids: std::collections::BTreeSet<u64> = all.iter().map(|i| i.id).collect();
    assert_eq!(ids.len(), 4, "ids are distinct");
    assert!(!ids.contains(&0), "ids are assigned");

    let info = &all[1];
    let full = store.snapshot(info.id).unwrap().expect("listed snapshot");
    assert_eq!(full.info(), *info);
    assert_eq!(full.rules, s.groups[&rich.web].rules);
    assert_eq!(full.window_start, 300);
    assert_eq!(store.snapshot(999_999).unwrap(), None);
    assert_eq!(store.snapshot(u64::MAX).unwrap(), None);

    assert!(store.has_snapshot(&rich.web, 300).unwrap());
    assert!(store.has_snapshot(&rich.db, 0).unwrap());
    assert!(!store.has_snapshot(&rich.db, 300).unwrap());
    assert!(!store.has_snapshot(&rich.ent, 0).unwrap());

    // Retention of one day at 2 days + 100 s: the three early ones go.
    let cutoff = snapshot::retention_cutoff(2 * day + 100, 1);
    assert_eq!(store.prune_snapshots(cutoff).unwrap(), 3);
    let left: Vec<u64> = store
        .snapshots(None)
        .unwrap()
        .iter()
        .map(|i| i.taken_at)
        .collect();
    assert_eq!(left, vec![2 * day + 1]);
    assert_eq!(store.prune_snapshots(cutoff).unwrap(), 0);
    assert_eq!(store.prune_snapshots(u64::MAX).unwrap(), 1);
    assert_eq!(store.snapshots(None).unwrap(), vec![]);
    // Pruning snapshots leaves the state alone.
    assert_eq!(store.load().unwrap().as_ref(), Some(s));
}

#[test]
fn one_snapshot_per_group_and_window_and_the_first_one_wins() {
    let dir = TempDir::new("window");
    let rich = rich_state();
    let before = rich.state.clone();
    let mut after = before.clone();
    std::sync::Arc::make_mut(after.groups.get_mut(&rich.web).unwrap())
        .rules
        .truncate(2);
    let mut store = SqliteStore::open(&dir.db()).unwrap();
    store
        .commit(&before, &[snap(&rich.web, 600, 601, &before)])
        .unwrap();
    // A second snapshot of the same group and window, with other rules.
    store
        .commit(
            &after,
            &[
                snap(&rich.web, 600, 650, &after),
                snap(&rich.db, 600, 650, &after),
            ],
        )
        .unwrap();
    drop(store);
    let mut store = SqliteStore::open(&dir.db()).unwrap();
    let web = store.snapshots(Some(&rich.web)).unwrap();
    assert_eq!(web.len(), 1, "{web:?}");
    let kept = store.snapshot(web[0].id).unwrap().unwrap();
    assert_eq!(kept.taken_at, 601);
    assert_eq!(kept.rules, before.groups[&rich.web].rules);
    assert_eq!(store.snapshots(Some(&rich.db)).unwrap().len(), 1);
    assert_eq!(
        store.load().unwrap(),
        Some(after),
        "the state was committed"
    );
}

/// The daemon's call, end to end: `due` asks the store, the store keeps them.
#[test]
fn due_snapshots_commit_with_the_change() {
    let rich = rich_state();
    let mut store = SqliteStore::open_in_memory().unwrap();
    store.commit(&rich.state, &[]).unwrap();
    let now = 1_700_000_123;
    let mut next = rich.state.clone();
    std::sync::Arc::make_mut(next.groups.get_mut(&rich.db).unwrap())
        .rules
        .pop();
    let snaps = snapshot::due(&rich.state, &next, now, |g, w| store.has_snapshot(g, w)).unwrap();
    store.commit(&next, &snaps).unwrap();
    let mut again = next.clone();
    std::sync::Arc::make_mut(again.groups.get_mut(&rich.db).unwrap())
        .rules
        .clear();
    let snaps = snapshot::due(&next, &again, now + 60, |g, w| store.has_snapshot(g, w)).unwrap();
    assert_eq!(snaps, vec![], "same window: already has one");
    store.commit(&again, &snaps).unwrap();
    let list = store.snapshots(None).unwrap();
    assert_eq!(list.len(), 1);
    let kept = store.snapshot(list[0].id).unwrap().unwrap();
    assert_eq!(kept.group, rich.db);
    assert_eq!(kept.rules, rich.state.groups[&rich.db].rules);
    assert_eq!(kept.window_start, snapshot::window_start(now));
}

// ---- damage, permissions, versions -------------------------------------------

/// Commits `state` to a new database, applies `damage` through a second,
/// plain connection, and returns what a fresh store's `load` says.
fn load_after_damage(dir: &TempDir, state: &State, damage: &str) -> StoreError {
    SqliteStore::open(&dir.db())
        .unwrap()
        .commit(state, &[])
        .unwrap();
    let raw = rusqlite::Connection::open(dir.db()).unwrap();
    // The bundled SQLite enforces foreign keys by default; damage ignores them.
    raw.pragma_update(None, "foreign_keys", false).unwrap();
    raw.execute_batch(damage).unwrap();
    drop(raw);
    SqliteStore::open(&dir.db())
        .unwrap()
        .load()
        .expect_err("load of a damaged store")
}

#[test]
fn a_damaged_row_is_reported_by_table_and_key() {
    let rich = rich_state();
    let web_rules = &rich.state.groups[&rich.web].rules;
    let r0 = web_rules[0].id.to_string();
    let r1 = web_rules[1].id.to_string();
    let web = rich.web.to_string();
    let pl = rich.state.prefix_lists.keys().next().unwrap().to_string();
    let cases: Vec<(String, &str, String, &str)> = vec![
        (
            format!("UPDATE rules SET json = '{{not json' WHERE id = '{r0}'"),
            "rules",
            r0.clone(),
            "JSON",
        ),
        (
            format!(
                r#"UPDATE "groups" SET json = json_set(json, '$.id', 'sg-other') WHERE id = '{web}'"#
            ),
            "groups",
            web.clone(),
            "sg-other",
        ),
        (
            format!("UPDATE rules SET position = 7 WHERE id = '{r1}'"),
            "rules",
            r1.clone(),
            "position 7 in group",
        ),
        (
            format!("UPDATE rules SET group_id = 'sg-gone' WHERE id = '{r1}'"),
            "rules",
            r1.clone(),
            "sg-gone",
        ),
        (
            format!("UPDATE rules SET json = x'00ff' WHERE id = '{r0}'"),
            "rules",
            r0.clone(),
            "Blob",
        ),
        (
            format!("UPDATE prefix_lists SET json = '[]' WHERE id = '{pl}'"),
            "prefix_lists",
            pl.clone(),
            "JSON",
        ),
        (
            "UPDATE nics SET json = json_set(json, '$.mode', 'sideways') WHERE name = 'eth0'"
                .to_owned(),
            "nics",
            "eth0".to_owned(),
            "sideways",
        ),
        (
            "DELETE FROM settings".to_owned(),
            "settings",
            "1".to_owned(),
            "missing",
        ),
        (
            "DELETE FROM meta".to_owned(),
            "meta",
            "ids".to_owned(),
            "missing",
        ),
    ];
    for (damage, table, key, detail) in cases {
        let dir = TempDir::new("damage");
        let err = load_after_damage(&dir, &rich.state, &damage);
        let text = err.to_string();
        match &err {
            StoreError::CorruptRow {
                table: t, key: k, ..
            } => {
                assert_eq!((*t, k.as_str()), (table, key.as_str()), "{damage}: {text}");
            }
            other => panic!("{damage}: expected a corrupt row, got {other:?}"),
        }
        assert!(text.contains(table) && text.contains(&key), "{text}");
        assert!(text.contains(detail), "{damage}: {text} lacks {detail:?}");
        assert!(text.contains(&dir.db().display().to_string()), "{text}");
    }
}

/// Rows that read back fine but make an invalid state: refused naming the field.
#[test]
fn a_stored_state_that_fails_validation_is_an_error() {
    let rich = rich_state();
    let dir = TempDir::new("invalid");
    let pl = rich.state.prefix_lists.keys().next().unwrap().to_string();
    let err = load_after_damage(
        &dir,
        &rich.state,
        &format!("DELETE FROM prefix_lists WHERE id = '{pl}'"),
    );
    assert!(matches!(err, StoreError::InvalidState { .. }), "{err:?}");
    assert!(err.to_string().contains(&pl), "{err}");

    let dir = TempDir::new("invalid-settings");
    let err = load_after_damage(
        &dir,
        &rich.state,
        "UPDATE settings SET json = json_set(json, '$.snapshot_retention_days', 31)",
    );
    assert!(matches!(err, StoreError::InvalidState { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("settings.snapshot_retention_days") && text.contains("30"),
        "{text}"
    );
}

#[test]
fn a_damaged_snapshot_is_reported_by_its_id() {
    let dir = TempDir::new("damaged-snapshot");
    let rich = rich_state();
    let mut store = SqliteStore::open(&dir.db()).unwrap();
    store
        .commit(&rich.state, &[snap(&rich.web, 0, 1, &rich.state)])
        .unwrap();
    let id = store.snapshots(None).unwrap()[0].id;
    let raw = rusqlite::Connection::open(dir.db()).unwrap();
    raw.execute("UPDATE snapshots SET rules = '[{}]'", [])
        .unwrap();
    drop(raw);
    let err = store.snapshot(id).unwrap_err();
    assert!(
        matches!(&err, StoreError::CorruptRow { table: "snapshots", key, .. } if *key == id.to_string()),
        "{err:?}"
    );
}

#[test]
fn the_database_files_are_private() {
    let dir = TempDir::new("mode");
    let mut store = SqliteStore::open(&dir.db()).unwrap();
    store.commit(&rich_state().state, &[]).unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir.db()), 0o600);
    let wal = dir.0.join("state.db-wal");
    assert!(wal.exists(), "WAL journal in use");
    assert_eq!(mode(&wal), 0o600);
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = TempDir::new("newer");
    SqliteStore::open(&dir.db()).unwrap();
    let raw = rusqlite::Connection::open(dir.db()).unwrap();
    let newer = sg_agent::store::SCHEMA_VERSION + 1;
    raw.pragma_update(None, "user_version", newer).unwrap();
    drop(raw);
    let Err(err) = SqliteStore::open(&dir.db()) else {
        panic!("a newer schema was accepted");
    };
    assert!(
        matches!(
            err,
            StoreError::SchemaTooNew {
                found,
                supported: sg_agent::store::SCHEMA_VERSION,
                ..
            } if found == newer
        ),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("newer") && text.contains("state.db"),
        "{text}"
    );
}

#[test]
fn a_database_of_something_else_is_refused() {
    let dir = TempDir::new("foreign");
    let raw = rusqlite::Connection::open(dir.db()).unwrap();
    raw.execute_batch("CREATE TABLE songs (title TEXT)")
        .unwrap();
    drop(raw);
    let Err(err) = SqliteStore::open(&dir.db()) else {
        panic!("a foreign database was accepted");
    };
    assert!(matches!(err, StoreError::NotAStore { .. }), "{err:?}");

    std::fs::write(
        dir.0.join("text.db"),
        "not a database at all, just text.\n".repeat(100),
    )
    .unwrap();
    let Err(err) = SqliteStore::open(&dir.0.join("text.db")) else {
        panic!("a text file was accepted");
    };
    assert!(err.to_string().contains("text.db"), "{err}");
}

#[test]
fn a_missing_directory_is_an_error_naming_the_path() {
    let dir = TempDir::new("missing");
    let path = dir.0.join("no/such/dir/state.db");
    let Err(err) = SqliteStore::open(&path) else {
        panic!("opened in a missing directory");
    };
    assert!(matches!(err, StoreError::Create { .. }), "{err:?}");
    assert!(err.to_string().contains("no/such/dir/state.db"), "{err}");
}

// ---- crash atomicity ---------------------------------------------------------

/// The environment variable that turns [`crash_child_commits_until_killed`]
/// into the writer of the crash test; it holds the database path.
const CRASH_DB_ENV: &str = "SG_STORE_TEST_CRASH_DB";

/// The state of step 0 of the crash sequence.
fn crash_initial() -> State {
    let mut s = State::with_seed(2024);
    let base = s.create_group(GroupSpec::basic("base")).unwrap();
    s.authorize(
        &base,
        rule("ingress", "Accept", "1", "TCP", "22/22", "10.0.0.0/8"),
    )
    .unwrap();
    s
}

/// Step `i` of the crash sequence: every commit changes settings, the id
/// generator, groups, rules and NICs, and (from step 1) makes snapshots due, so a
/// half-applied commit would show.
fn crash_step(s: &mut State, i: u64) {
    let secs = 100 + u32::try_from(i % 100_000).unwrap();
    s.set_settings(Settings {
        session_timeouts: SessionTimeouts {
            other_secs: secs,
            ..SessionTimeouts::default()
        },
        ..Settings::default()
    })
    .unwrap();
    let base = s.groups.values().find(|g| g.name == "base").unwrap();
    let (base_id, base_rule) = (base.id.clone(), base.rules[0].clone());
    s.modify_rule(
        &base_id,
        &base_rule.id,
        base_rule.spec.with_description(&format!("step {i}")),
    )
    .unwrap();
    let g = s.create_group(GroupSpec::basic(&format!("g{i}"))).unwrap();
    s.authorize_all(
        &g,
        (1..=3u16)
            .map(|p| {
                rule(
                    "ingress",
                    "Accept",
                    "1",
                    "TCP",
                    &format!("{p}/{p}"),
                    "10.0.0.0/8",
                )
            })
            .collect(),
    )
    .unwrap();
    s.bind_nic(NicBinding::new(
        &format!("n{i}"),
        BindingMode::Local,
        vec!["10.0.0.1".parse().unwrap()],
        vec![g],
    ))
    .unwrap();
    if i > 3 {
        let old = format!("g{}", i - 3);
        s.unbind_nic(&format!("n{}", i - 3)).unwrap();
        let old = s
            .groups
            .values()
            .find(|g| g.name == old)
            .unwrap()
            .id
            .clone();
        s.delete_group(&old).unwrap();
    }
}

/// The unix time of step `i`: one 5-minute window per step.
fn crash_now(i: u64) -> u64 {
    1_000_000 + i * snapshot::WINDOW_SECS
}

/// Not a test on its own: the child of
/// [`a_killed_writer_keeps_every_acknowledged_commit_and_nothing_partial`]. It
/// commits the crash sequence and prints `ack <i>` once commit `i` returned.
#[test]
fn crash_child_commits_until_killed() {
    let Some(path) = std::env::var_os(CRASH_DB_ENV) else {
        return;
    };
    let mut store = SqliteStore::open(Path::new(&path)).unwrap();
    let mut s = crash_initial();
    store.commit(&s, &[]).unwrap();
    let mut out = std::io::stdout().lock();
    writeln!(out, "ack 0").unwrap();
    out.flush().unwrap();
    // Bounded, in case the parent died without killing us.
    for i in 1..=20_000 {
        let old = s.clone();
        crash_step(&mut s, i);
        let snaps = snapshot::due(&old, &s, crash_now(i), |g, w| store.has_snapshot(g, w)).unwrap();
        store.commit(&s, &snaps).unwrap();
        // One write of a short line: atomic on a pipe.
        writeln!(out, "ack {i}").unwrap();
        out.flush().unwrap();
    }
}

/// [`crash_child_commits_until_killed`] as libtest names it: its module path
/// without the crate's name (nothing, when the test is at the crate's root).
fn crash_child_name() -> String {
    const NAME: &str = "crash_child_commits_until_killed";
    match module_path!().split_once("::") {
        Some((_, module)) => format!("{module}::{NAME}"),
        None => NAME.to_owned(),
    }
}

/// Kills the child when dropped, so a failing test leaves no writer behind.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the child writer against `db`, SIGKILLs it once it acknowledged `acks`
/// commits plus `delay`, and returns the last commit it acknowledged.
fn run_and_kill(db: &Path, acks: u64, delay: Duration) -> u64 {
    let exe = std::env::current_exe().unwrap();
    let mut child = KillOnDrop(
        Command::new(exe)
            .args([
                "--exact",
                &crash_child_name(),
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CRASH_DB_ENV, db)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let mut reader = BufReader::new(child.0.stdout.take().unwrap());
    let mut last = None;
    let mut line = String::new();
    // Only whole lines count; libtest may have started the line with the test's
    // name, so the number is whatever follows the last "ack ".
    let ack = |line: &str| -> Option<u64> {
        let line = line.strip_suffix('\n')?;
        let at = line.rfind("ack ")?;
        line[at + 4..].parse().ok()
    };
    while last.is_none_or(|n| n < acks) {
        line.clear();
        let n = reader.read_line(&mut line).unwrap();
        assert!(
            n > 0,
            "the writer stopped after {last:?} acknowledged commits"
        );
        if let Some(i) = ack(&line) {
            last = Some(i);
        }
    }
    std::thread::sleep(delay);
    // SIGKILL (std's kill on unix): no destructor, no flush, mid-transaction.
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    // Whatever it acknowledged before dying is still in the pipe.
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if let Some(i) = ack(&line) {
            last = Some(i);
        }
    }
    last.unwrap()
}

#[test]
fn a_killed_writer_keeps_every_acknowledged_commit_and_nothing_partial() {
    for (round, (acks, delay_us)) in [(5, 0), (12, 700), (25, 1500), (40, 3100)]
        .into_iter()
        .enumerate()
    {
        let dir = TempDir::new(&format!("crash{round}"));
        let acked = run_and_kill(&dir.db(), acks, Duration::from_micros(delay_us));
        let mut store = SqliteStore::open(&dir.db()).unwrap();
        let loaded = store
            .load()
            .unwrap_or_else(|e| {
                panic!("round {round}: the store does not load (a partial commit?): {e}")
            })
            .expect("commit 0 was acknowledged");
        // Replay the sequence: the stored state must be commit `acked` or the
        // one after it (done but not yet acknowledged), nothing in between.
        let mut s = crash_initial();
        for i in 1..=acked {
            crash_step(&mut s, i);
        }
        let at_ack = s.clone();
        crash_step(&mut s, acked + 1);
        let stored = if loaded == at_ack {
            acked
        } else if loaded == s {
            acked + 1
        } else {
            panic!(
                "round {round}: the stored state is neither commit {acked} nor {}: {loaded:#?}",
                acked + 1
            );
        };
        eprintln!("round {round}: acknowledged {acked}, stored {stored}");
        // Snapshots rode in the same transactions: one of base per step from
        // step 1, one of a deleted group per step from step 4.
        let expected = stored + stored.saturating_sub(3);
        let snaps = store.snapshots(None).unwrap();
        assert_eq!(
            u64::try_from(snaps.len()).unwrap(),
            expected,
            "round {round}: snapshots of commit {stored}"
        );
        if stored > 0 {
            assert_eq!(snaps[0].taken_at, crash_now(stored));
        }
    }
}

// ---- identity and generation (issue 12 item 2) ---------------------------------

#[test]
fn every_commit_counts_itself_and_the_count_survives_reopening() {
    let dir = TempDir::new("generation");
    let mut store = SqliteStore::open(&dir.db()).unwrap();
    let new = store.position();
    assert_eq!(new.generation, 0, "a new store has no commits");
    let state = rich_state().state;
    store.commit(&state, &[]).unwrap();
    store.commit(&state, &[]).unwrap();
    assert_eq!(store.position().generation, 2);
    drop(store);
    let again = SqliteStore::open(&dir.db()).unwrap();
    assert_eq!(again.position().generation, 2);
    assert_eq!(
        again.position().id,
        new.id,
        "the identity is the store's own"
    );
}

#[test]
fn a_truncated_store_is_new_with_another_identity() {
    let dir = TempDir::new("truncated");
    let mut store = SqliteStore::open(&dir.db()).unwrap();
    store.commit(&rich_state().state, &[]).unwrap();
    let before = store.position();
    drop(store);
    for f in ["state.db", "state.db-wal", "state.db-shm"] {
        let p = dir.0.join(f);
        if p.exists() {
            std::fs::write(&p, b"").unwrap();
        }
    }
    let mut store = SqliteStore::open(&dir.db()).unwrap();
    assert_eq!(store.load().unwrap(), None);
    assert_eq!(store.position().generation, 0);
    assert_ne!(store.position().id, before.id);
}

#[test]
fn a_version_1_store_is_upgraded_in_place_keeping_its_state() {
    let dir = TempDir::new("v1");
    let state = rich_state().state;
    let mut store = SqliteStore::open(&dir.db()).unwrap();
    store.commit(&state, &[]).unwrap();
    drop(store);
    // What a version 1 agent left: no `store` table.
    let raw = rusqlite::Connection::open(dir.db()).unwrap();
    raw.execute_batch("DROP TABLE store; PRAGMA user_version = 1;")
        .unwrap();
    drop(raw);
    let mut store = SqliteStore::open(&dir.db()).unwrap();
    assert_eq!(store.load().unwrap(), Some(state));
    assert_eq!(
        store.position().generation,
        1,
        "its state counts as one commit"
    );
    let raw = rusqlite::Connection::open(dir.db()).unwrap();
    let version: i64 = raw
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, sg_agent::store::SCHEMA_VERSION);
}
