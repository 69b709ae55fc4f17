//! Security group snapshots (SPEC §5, seed 000): one per group and 5-minute
//! window holding the rules before the window's first change; restore; retention.

use std::collections::BTreeSet;

use sg_agent::store::{Snapshot, SqliteStore, Store, StoreError};
use sg_policy::snapshot::{WINDOW_SECS, due, restore, retention_cutoff, window_start};
use sg_policy::{
    BindingMode, Family, GroupId, GroupSpec, NicBinding, PolicyError, PortListEntry, PortListSpec,
    PortRange, PrefixListEntry, PrefixListSpec, RuleSpec, Settings, State, validate_state,
};

use crate::support::rule;

fn tcp_from(port: u16, peer: &str) -> RuleSpec {
    rule(
        "ingress",
        "Accept",
        "1",
        "TCP",
        &format!("{port}/{port}"),
        peer,
    )
}

/// A window boundary far from the epoch, so `now - something` stays positive.
const T0: u64 = 1_700_000_100;

/// Snapshots already taken, as the store would answer `has_snapshot`.
#[derive(Default)]
struct Taken(BTreeSet<(GroupId, u64)>);

impl Taken {
    /// `due` as the daemon calls it; records what it returns as taken.
    fn due(&mut self, old: &State, new: &State, now: u64) -> Vec<Snapshot> {
        let snaps = due(old, new, now, |g, w| {
            Ok::<_, StoreError>(self.0.contains(&(g.clone(), w)))
        })
        .unwrap();
        for s in &snaps {
            self.0.insert((s.group.clone(), s.window_start));
        }
        snaps
    }
}

/// A state with two basic groups, `a` (two rules) and `b` (one rule).
fn two_groups() -> (State, GroupId, GroupId) {
    let mut s = State::with_seed(5);
    let a = s.create_group(GroupSpec::basic("a")).unwrap();
    let b = s.create_group(GroupSpec::basic("b")).unwrap();
    s.authorize_all(
        &a,
        vec![tcp_from(22, "10.0.0.0/8"), tcp_from(80, "0.0.0.0/0")],
    )
    .unwrap();
    s.authorize(&b, tcp_from(443, "0.0.0.0/0")).unwrap();
    (s, a, b)
}

#[test]
fn windows_are_five_minutes_on_the_unix_clock() {
    assert_eq!(WINDOW_SECS, 300);
    assert_eq!(T0 % WINDOW_SECS, 0);
    assert_eq!(window_start(T0), T0);
    assert_eq!(window_start(T0 + 299), T0);
    assert_eq!(window_start(T0 + 300), T0 + 300);
    assert_eq!(window_start(T0 - 1), T0 - 300);
}

#[test]
fn the_first_change_in_a_window_snapshots_the_rules_before_it() {
    let (s0, a, _) = two_groups();
    let mut taken = Taken::default();

    let mut s1 = s0.clone();
    s1.authorize(&a, tcp_from(8080, "10.0.0.0/8")).unwrap();
    let snaps = taken.due(&s0, &s1, T0 + 10);
    assert_eq!(
        snaps,
        vec![Snapshot {
            id: 0,
            group: a.clone(),
            group_name: "a".into(),
            window_start: T0,
            taken_at: T0 + 10,
            rules: s0.groups[&a].rules.clone(),
        }]
    );

    // A second change in the same window: the window has its snapshot already.
    let mut s2 = s1.clone();
    let first = s2.groups[&a].rules[0].id.clone();
    s2.revoke(&a, &first).unwrap();
    assert_eq!(taken.due(&s1, &s2, T0 + 299), vec![]);

    // The next window: a new snapshot, of the rules as they are then.
    let mut s3 = s2.clone();
    s3.authorize(&a, tcp_from(9090, "10.0.0.0/8")).unwrap();
    let snaps = taken.due(&s2, &s3, T0 + 300);
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0].window_start, T0 + 300);
    assert_eq!(snaps[0].taken_at, T0 + 300);
    assert_eq!(snaps[0].rules, s2.groups[&a].rules);
}

#[test]
fn only_groups_whose_rules_changed_are_snapshotted() {
    let (s0, a, b) = two_groups();
    let mut s1 = s0.clone();
    // Attributes and intra-group policy are not rules.
    s1.modify_group(
        &b,
        sg_policy::GroupChange {
            name: Some("b2".into()),
            ..Default::default()
        },
    )
    .unwrap();
    s1.set_inner_policy(&b, sg_policy::InnerPolicy::Drop)
        .unwrap();
    assert_eq!(Taken::default().due(&s0, &s1, T0), vec![]);
    assert_eq!(Taken::default().due(&s0, &s0, T0), vec![]);

    // Same rules, other order: a change (order decides nothing in the rules'
    // semantics, but a snapshot restores exactly what was there).
    let mut s2 = s0.clone();
    std::sync::Arc::make_mut(s2.groups.get_mut(&a).unwrap())
        .rules
        .reverse();
    let snaps = Taken::default().due(&s0, &s2, T0);
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0].rules, s0.groups[&a].rules);

    // A modified rule (same id, other fields) is a change.
    let mut s3 = s0.clone();
    let r = s3.groups[&b].rules[0].id.clone();
    s3.modify_rule(&b, &r, tcp_from(444, "0.0.0.0/0")).unwrap();
    let snaps = Taken::default().due(&s0, &s3, T0);
    assert_eq!(snaps.iter().map(|s| &s.group).collect::<Vec<_>>(), vec![&b]);
}

#[test]
fn a_new_group_gets_none_and_a_deleted_group_gets_one() {
    let (s0, a, b) = two_groups();
    let mut s1 = s0.clone();
    let c = s1.create_group(GroupSpec::basic("c")).unwrap();
    s1.authorize(&c, tcp_from(25, "10.0.0.0/8")).unwrap();
    assert_eq!(
        Taken::default().due(&s0, &s1, T0),
        vec![],
        "c had no rules before"
    );

    let mut s2 = s1.clone();
    s2.delete_group(&b).unwrap();
    let snaps = Taken::default().due(&s1, &s2, T0);
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0].group, b);
    assert_eq!(snaps[0].group_name, "b");
    assert_eq!(snaps[0].rules, s1.groups[&b].rules);
    assert!(!snaps.iter().any(|s| s.group == a));
}

#[test]
fn due_is_ordered_by_group_id_and_asks_only_for_changed_groups() {
    let mut s0 = State::with_seed(11);
    let ids: Vec<GroupId> = (0..6)
        .map(|i| {
            let g = s0.create_group(GroupSpec::basic(&format!("g{i}"))).unwrap();
            s0.authorize(&g, tcp_from(22, "10.0.0.0/8")).unwrap();
            g
        })
        .collect();
    let mut s1 = s0.clone();
    for g in [&ids[4], &ids[1], &ids[3]] {
        std::sync::Arc::make_mut(s1.groups.get_mut(g).unwrap())
            .rules
            .clear();
    }
    let mut asked = Vec::new();
    let snaps = due(&s0, &s1, T0 + 1, |g, w| {
        asked.push((g.clone(), w));
        Ok::<_, StoreError>(g == &ids[3])
    })
    .unwrap();
    let mut changed = [ids[1].clone(), ids[3].clone(), ids[4].clone()];
    changed.sort();
    assert_eq!(
        asked,
        changed.iter().map(|g| (g.clone(), T0)).collect::<Vec<_>>()
    );
    let expected: Vec<&GroupId> = changed.iter().filter(|g| **g != ids[3]).collect();
    assert_eq!(snaps.iter().map(|s| &s.group).collect::<Vec<_>>(), expected);
}

#[test]
fn an_error_of_the_store_is_passed_on() {
    let (s0, a, _) = two_groups();
    let mut s1 = s0.clone();
    std::sync::Arc::make_mut(s1.groups.get_mut(&a).unwrap())
        .rules
        .clear();
    let err = due(&s0, &s1, T0, |_, _| {
        Err(StoreError::NotAStore {
            path: "x.db".into(),
            found: 9,
        })
    })
    .unwrap_err();
    assert!(
        matches!(err, StoreError::NotAStore { found: 9, .. }),
        "{err:?}"
    );
}

#[test]
fn restore_puts_back_the_rules_with_their_ids_and_is_itself_a_change() {
    let (s0, a, b) = two_groups();
    let mut taken = Taken::default();
    let mut s1 = s0.clone();
    let r = s1.groups[&a].rules[1].id.clone();
    s1.revoke(&a, &r).unwrap();
    s1.authorize(&a, tcp_from(3306, "10.0.0.0/8")).unwrap();
    let snap = taken.due(&s0, &s1, T0 + 5).remove(0);

    let mut s2 = s1.clone();
    restore(&mut s2, &snap).unwrap();
    assert_eq!(
        s2.groups[&a].rules, s0.groups[&a].rules,
        "same rules, same ids, same order"
    );
    assert_eq!(s2.groups[&b], s1.groups[&b], "other groups untouched");
    validate_state(&s2).unwrap();

    // The restore is a change like any other: in a later window, it is
    // snapshotted (holding the rules it replaced) ...
    let later = taken.due(&s1, &s2, T0 + 600);
    assert_eq!(later.len(), 1);
    assert_eq!(later[0].rules, s1.groups[&a].rules);
    // ... and in the same window as the change it undoes, it is not.
    assert_eq!(taken.due(&s1, &s2, T0 + 6), vec![]);
}

/// Asserts that restoring `snap` into `state` fails with an error whose text
/// holds every one of `needles`, and leaves `state` as it was.
fn refused(state: &State, snap: &Snapshot, needles: &[&str]) -> PolicyError {
    let mut s = state.clone();
    let err = restore(&mut s, snap).unwrap_err();
    assert_eq!(&s, state, "a refused restore changes nothing");
    let text = err.to_string();
    for n in needles {
        assert!(text.contains(n), "{text:?} lacks {n:?}");
    }
    err
}

fn snapshot_of(state: &State, group: &GroupId) -> Snapshot {
    Snapshot {
        id: 1,
        group: group.clone(),
        group_name: state.groups[group].name.clone(),
        window_start: T0,
        taken_at: T0,
        rules: state.groups[group].rules.clone(),
    }
}

#[test]
fn restore_of_a_deleted_group_is_refused_naming_it() {
    let (s0, _, b) = two_groups();
    let snap = snapshot_of(&s0, &b);
    let mut s1 = s0.clone();
    s1.delete_group(&b).unwrap();
    let err = refused(&s1, &snap, &[b.as_str(), "does not exist"]);
    assert!(matches!(err, PolicyError::NotFound { .. }), "{err:?}");
}

#[test]
fn restore_into_a_managed_group_is_refused_as_managed() {
    let mut s = State::with_seed(3);
    let mut spec = GroupSpec::basic("platform");
    spec.managed = true;
    let m = s.create_group(spec).unwrap();
    let mut snap = snapshot_of(&s, &m);
    let other = s.create_group(GroupSpec::basic("o")).unwrap();
    s.authorize(&other, tcp_from(22, "10.0.0.0/8")).unwrap();
    snap.rules.clone_from(&s.groups[&other].rules);
    let err = refused(&s, &snap, &[m.as_str(), "managed"]);
    assert!(matches!(err, PolicyError::Managed { .. }), "{err:?}");
}

#[test]
fn restore_naming_a_list_or_group_that_is_gone_is_refused_naming_it() {
    let mut s = State::with_seed(8);
    let g = s.create_group(GroupSpec::basic("g")).unwrap();
    let peer = s.create_group(GroupSpec::basic("peer")).unwrap();
    let pl = s
        .create_prefix_list(PrefixListSpec {
            name: "pl".into(),
            description: String::new(),
            family: Family::Ipv4,
            max_entries: 2,
            entries: vec![PrefixListEntry {
                cidr: sg_policy::Cidr::parse("t", "192.0.2.0/24").unwrap(),
                description: String::new(),
            }],
        })
        .unwrap();
    let prl = s
        .create_port_list(PortListSpec {
            name: "prl".into(),
            description: String::new(),
            max_entries: 2,
            entries: vec![PortListEntry {
                range: PortRange::single(80),
                description: String::new(),
            }],
        })
        .unwrap();
    // One snapshot per kind of reference, each of a group holding just that rule.
    let cases = [
        (tcp_from(22, pl.as_str()), pl.to_string(), "prefix list"),
        (
            rule("ingress", "Accept", "1", "TCP", prl.as_str(), "10.0.0.0/8"),
            prl.to_string(),
            "port list",
        ),
        (
            tcp_from(22, peer.as_str()),
            peer.to_string(),
            "security group",
        ),
    ];
    for (spec, gone, kind) in cases {
        let mut with = s.clone();
        with.authorize(&g, spec).unwrap();
        let snap = snapshot_of(&with, &g);
        // What the snapshot names is deleted afterwards (the rule first).
        let mut now = with.clone();
        std::sync::Arc::make_mut(now.groups.get_mut(&g).unwrap())
            .rules
            .clear();
        if let Ok(id) = sg_policy::PrefixListId::parse("t", &gone) {
            now.delete_prefix_list(&id).unwrap();
        } else if let Ok(id) = sg_policy::PortListId::parse("t", &gone) {
            now.delete_port_list(&id).unwrap();
        } else {
            now.delete_group(&GroupId::parse("t", &gone).unwrap())
                .unwrap();
        }
        let err = refused(&now, &snap, &[&gone, kind, "does not exist"]);
        assert!(matches!(err, PolicyError::NotFound { .. }), "{err:?}");
        // While it exists, the same snapshot restores.
        let mut cleared = with.clone();
        std::sync::Arc::make_mut(cleared.groups.get_mut(&g).unwrap())
            .rules
            .clear();
        restore(&mut cleared, &snap).unwrap();
        assert_eq!(cleared, with);
    }
}

#[test]
fn restore_beyond_a_limit_is_refused_with_the_limit() {
    let mut s = State::with_seed(9);
    let g = s.create_group(GroupSpec::basic("g")).unwrap();
    let pl = s
        .create_prefix_list(PrefixListSpec {
            name: "big".into(),
            description: String::new(),
            family: Family::Ipv4,
            max_entries: 100,
            entries: vec![],
        })
        .unwrap();
    s.bind_nic(NicBinding::new(
        "eth0",
        BindingMode::Local,
        vec!["10.0.0.1".parse().unwrap()],
        vec![g.clone()],
    ))
    .unwrap();
    // Six rules naming a list of 100: 600 of the NIC's 1,000.
    s.authorize_all(&g, (1..=6).map(|p| tcp_from(p, pl.as_str())).collect())
        .unwrap();
    let snap = snapshot_of(&s, &g);
    // Now the list may hold 200: the same six rules would count 1,200.
    std::sync::Arc::make_mut(s.groups.get_mut(&g).unwrap())
        .rules
        .clear();
    s.modify_prefix_list(
        &pl,
        PrefixListSpec {
            name: "big".into(),
            description: String::new(),
            family: Family::Ipv4,
            max_entries: 200,
            entries: vec![],
        },
    )
    .unwrap();
    let err = refused(&s, &snap, &["nics[eth0].rules", "1200", "1000"]);
    assert!(matches!(err, PolicyError::LimitExceeded { .. }), "{err:?}");
}

#[test]
fn retention_is_whole_days_back_from_now() {
    assert_eq!(retention_cutoff(T0, 1), T0 - 86_400);
    assert_eq!(retention_cutoff(T0, 30), T0 - 30 * 86_400);
    assert_eq!(retention_cutoff(5, 1), 0, "saturates at the epoch");

    // With the store: snapshots older than the retention go, the others stay.
    let (s0, a, b) = two_groups();
    let mut store = SqliteStore::open_in_memory().unwrap();
    let day = 86_400;
    let at = |g: &GroupId, t: u64| Snapshot {
        window_start: window_start(t),
        taken_at: t,
        ..snapshot_of(&s0, g)
    };
    store
        .commit(
            &s0,
            &[
                at(&a, T0 - 3 * day),
                at(&b, T0 - 2 * day - 1),
                at(&a, T0 - 2 * day + 1),
                at(&b, T0 - 10),
            ],
        )
        .unwrap();
    let removed = store.prune_snapshots(retention_cutoff(T0, 2)).unwrap();
    assert_eq!(removed, 2);
    let left: Vec<u64> = store
        .snapshots(None)
        .unwrap()
        .iter()
        .map(|i| i.taken_at)
        .collect();
    assert_eq!(left, vec![T0 - 10, T0 - 2 * day + 1]);
}

#[test]
fn retention_days_are_a_setting_of_one_to_thirty() {
    assert_eq!(Settings::default().snapshot_retention_days, 1);
    // Settings stored before the field existed read back with the default.
    let old: Settings = serde_json::from_str(r#"{"block_port_25": true}"#).unwrap();
    assert_eq!(old.snapshot_retention_days, 1);

    let mut s = State::with_seed(1);
    for days in [1, 7, 30] {
        s.set_settings(Settings {
            snapshot_retention_days: days,
            ..Settings::default()
        })
        .unwrap();
    }
    for days in [0, 31, u32::MAX] {
        let err = s
            .set_settings(Settings {
                snapshot_retention_days: days,
                ..Settings::default()
            })
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("settings.snapshot_retention_days") && text.contains("1..=30"),
            "{text}"
        );
        assert_eq!(s.settings.snapshot_retention_days, 30, "refused, unchanged");
    }
}
