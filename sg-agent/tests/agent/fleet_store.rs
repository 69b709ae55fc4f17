//! The fleet store's key layout (`store/fleet_keys.rs`), without a server:
//! a fleet's state written as keys and read back by each host as its own.

use std::collections::{BTreeMap, BTreeSet};

use sg_agent::store::{Layout, StoreError, check_host};
use sg_policy::{BindingMode, GroupSpec, NicBinding, State};

fn layout(host: &str) -> Layout {
    Layout {
        prefix: "/sg/v1/".to_owned(),
        host: host.to_owned(),
    }
}

/// A fleet of two hosts as host `a` sees it.
fn fleet() -> State {
    let mut s = State::with_seed(7);
    let g = s.create_group(GroupSpec::basic("web")).unwrap();
    let nic = |name: &str, addr: &str| {
        NicBinding::new(
            name,
            BindingMode::Local,
            vec![addr.parse().unwrap()],
            vec![g.clone()],
        )
    };
    s.bind_nic(nic("eth0", "10.0.0.1")).unwrap();
    s.remote
        .entry("b".to_owned())
        .or_default()
        .insert("eth0".to_owned(), nic("eth0", "10.0.0.2"));
    s
}

/// The keys as a store holds them: what `encode` writes plus the schema.
fn stored(l: &Layout, s: &State) -> BTreeMap<String, Vec<u8>> {
    let mut kvs = l.encode(s).unwrap();
    kvs.insert(l.key("schema"), b"1".to_vec());
    kvs
}

#[test]
fn each_host_reads_the_fleet_with_its_own_nics_as_its_own() {
    let a = fleet();
    let kvs = stored(&layout("a"), &a);
    assert!(kvs.contains_key("/sg/v1/policy/hosts/a/nics/eth0"));
    assert!(kvs.contains_key("/sg/v1/policy/hosts/b/nics/eth0"));
    assert_eq!(layout("a").decode(&kvs).unwrap(), Some(a.clone()));
    let b = layout("b").decode(&kvs).unwrap().unwrap();
    assert_eq!(b.nics["eth0"].addresses, a.remote["b"]["eth0"].addresses);
    assert_eq!(b.remote["a"]["eth0"].addresses, a.nics["eth0"].addresses);
    assert_eq!(b.groups, a.groups);
    // Written again by host b, the keys are the same.
    assert_eq!(stored(&layout("b"), &b), kvs);
}

#[test]
fn a_key_the_layout_does_not_know_is_refused_naming_it() {
    let l = layout("a");
    let mut kvs = stored(&l, &fleet());
    kvs.insert(l.key("grops/sg-x"), b"{}".to_vec());
    let e = l.decode(&kvs).unwrap_err();
    assert!(
        matches!(&e, StoreError::CorruptKey { key, .. } if key == "/sg/v1/policy/grops/sg-x"),
        "{e}"
    );
}

#[test]
fn a_value_under_another_objects_key_is_refused() {
    let l = layout("a");
    let mut kvs = stored(&l, &fleet());
    let v = kvs["/sg/v1/policy/hosts/b/nics/eth0"].clone();
    kvs.insert("/sg/v1/policy/hosts/b/nics/eth9".to_owned(), v);
    let e = l.decode(&kvs).unwrap_err().to_string();
    assert!(e.contains("hosts/b/nics/eth9") && e.contains("eth0"), "{e}");
}

#[test]
fn a_store_of_a_newer_schema_is_refused() {
    let l = layout("a");
    let mut kvs = stored(&l, &fleet());
    kvs.insert(l.key("schema"), b"2".to_vec());
    assert!(matches!(
        l.decode(&kvs),
        Err(StoreError::SchemaTooNew { found: 2, .. })
    ));
}

#[test]
fn a_store_never_written_holds_no_state() {
    assert_eq!(layout("a").decode(&BTreeMap::new()).unwrap(), None);
}

#[test]
fn host_names_are_one_key_segment() {
    for ok in ["db-7", "web_1.example", "a"] {
        check_host(ok).unwrap();
    }
    for bad in ["", "a/b", "..", "has space", &"x".repeat(64)] {
        let e = check_host(bad).unwrap_err();
        assert!(e.contains("--host") && e.contains("63"), "{bad:?}: {e}");
    }
}

#[test]
fn the_store_url_names_endpoints_tls_and_prefix() {
    use sg_agent::store::EtcdConfig;
    let c = EtcdConfig::parse("etcd://10.0.0.1:2379,10.0.0.2:2379", "db-7").unwrap();
    assert_eq!(
        c.endpoints,
        ["http://10.0.0.1:2379", "http://10.0.0.2:2379"]
    );
    assert_eq!(c.prefix, "/sg/v1/");
    let c = EtcdConfig::parse("etcds://e1:2379/prod/sg", "db-7").unwrap();
    assert_eq!(c.endpoints, ["https://e1:2379"]);
    assert_eq!(c.prefix, "/prod/sg/");
    for bad in [
        "etcd://",
        "etcd://h",
        "etcd://h:0",
        "etcd://h:99999",
        "http://h:1",
    ] {
        let e = EtcdConfig::parse(bad, "db-7").unwrap_err();
        assert!(e.contains("--store"), "{bad}: {e}");
    }
    assert!(EtcdConfig::parse("etcd://h:1", "a/b").is_err());
}

/// The status record's rate limit held back the record of a change that
/// followed another within 200 ms, so that an operator's second change in
/// a row showed on the other hosts only at the daemon's next periodic
/// write (up to 400 ms later): a burst is recorded at once.
#[test]
fn status_record_rate_limit_lets_a_burst_through_at_once() {
    use std::time::{Duration, Instant};
    let every = Duration::from_millis(200);
    let mut b = sg_agent::store::Budget::new(5, every);
    let t0 = Instant::now();
    for i in 0..5 {
        assert!(
            b.take(t0 + Duration::from_millis(i)),
            "take {i} of the burst"
        );
    }
    assert!(
        !b.take(t0 + Duration::from_millis(10)),
        "the sixth in a burst"
    );
    // One more per period, found by a timer of exactly that period.
    assert!(b.take(t0 + every));
    assert!(!b.take(t0 + every + Duration::from_millis(1)));
    assert!(b.take(t0 + every * 2));
    // Idle for long: a whole burst again, not more.
    let later = t0 + Duration::from_secs(60);
    for i in 0..5 {
        assert!(b.take(later), "take {i} after idling");
    }
    assert!(!b.take(later));
}

/// An agent following a hundred commits a second put each in force on its
/// own, one after the other, and fell further behind with every commit:
/// what waits is joined into one batch, kept in revision order, with a
/// broken watch kept where it came.
#[test]
fn feed_of_many_commits_is_folded_in_at_once() {
    use sg_agent::store::Feed;
    let put = |rev: i64| (rev, format!("k{rev}"), Some(vec![1]));
    let joined = Feed::coalesce([
        Feed::Changes(vec![put(5), put(5)]),
        Feed::Changes(vec![put(6)]),
        Feed::Lost("compacted".to_owned()),
        Feed::Changes(vec![put(9)]),
        Feed::Changes(vec![put(10)]),
    ]);
    let shape: Vec<Vec<i64>> = joined
        .iter()
        .map(|f| match f {
            Feed::Changes(c) => c.iter().map(|(r, _, _)| *r).collect(),
            Feed::Lost(_) => vec![-1],
        })
        .collect();
    assert_eq!(shape, vec![vec![5, 5, 6], vec![-1], vec![9, 10]]);
}

/// Host `a` of a fleet whose group `db` (bound on `a`) admits group `web`;
/// host `b` binds `eth0` in `web` and `eth1` in `idle`, which nothing on
/// `a` names. The keys as stored, and the groups.
fn naming_fleet() -> (BTreeMap<String, Vec<u8>>, [sg_policy::GroupId; 3]) {
    let mut s = State::with_seed(9);
    let db = s.create_group(GroupSpec::basic("db")).unwrap();
    let web = s.create_group(GroupSpec::basic("web")).unwrap();
    let idle = s.create_group(GroupSpec::basic("idle")).unwrap();
    let admit =
        sg_policy::RuleSpec::from_text("ingress", "Accept", "1", "TCP", "1/1", web.as_str())
            .unwrap();
    s.authorize(&db, admit).unwrap();
    let nic = |name: &str, addr: &str, g: &sg_policy::GroupId| {
        NicBinding::new(
            name,
            BindingMode::Local,
            vec![addr.parse().unwrap()],
            vec![g.clone()],
        )
    };
    s.bind_nic(nic("eth0", "10.0.0.1", &db)).unwrap();
    let b = s.remote.entry("b".to_owned()).or_default();
    b.insert("eth0".to_owned(), nic("eth0", "10.0.0.2", &web));
    b.insert("eth1".to_owned(), nic("eth1", "10.0.0.3", &idle));
    (stored(&layout("a"), &s), [db, web, idle])
}

fn read(kvs: &BTreeMap<String, Vec<u8>>) -> Vec<(std::borrow::Cow<'_, str>, &[u8])> {
    kvs.iter()
        .map(|(k, v)| (std::borrow::Cow::Borrowed(k.as_str()), v.as_slice()))
        .collect()
}

#[test]
fn a_host_counts_the_other_hosts_nics_no_group_of_its_names() {
    use sg_agent::store::Settled;
    let (all, [_, web, idle]) = naming_fleet();
    let l = layout("a");
    let (mut kvs, census) = l.split(&read(&all), &BTreeSet::new()).unwrap();
    assert!(kvs.contains_key("/sg/v1/policy/hosts/b/nics/eth0"));
    assert!(!kvs.contains_key("/sg/v1/policy/hosts/b/nics/eth1"));
    assert!(census.contains("b", "eth1") && census.len() == 1);
    let mut census = std::sync::Arc::new(census);
    let Settled::State(Some(s)) = l.settle(&mut kvs, &mut census, &BTreeSet::new()).unwrap() else {
        panic!("no state")
    };
    assert_eq!(s.remote["b"].keys().collect::<Vec<_>>(), ["eth0"]);
    assert_eq!(s.member_names(&idle), ["eth1"]);
    assert_eq!(s.member_names(&web), ["eth0"]);
    // Read whole, then settled: the same.
    let mut whole = all.clone();
    let mut none = std::sync::Arc::default();
    let Settled::State(Some(again)) = l.settle(&mut whole, &mut none, &BTreeSet::new()).unwrap()
    else {
        panic!("no state")
    };
    assert_eq!(again, s);
    assert_eq!(whole, kvs);
    // Asked to hold `idle` too, nothing is counted.
    let (_, census) = l.split(&read(&all), &[idle].into()).unwrap();
    assert!(census.is_empty());
}

#[test]
fn a_rule_that_comes_to_name_a_counted_group_asks_for_the_policy_whole() {
    use sg_agent::store::Settled;
    let (all, [db, _, idle]) = naming_fleet();
    let l = layout("a");
    let (mut kvs, census) = l.split(&read(&all), &BTreeSet::new()).unwrap();
    let mut census = std::sync::Arc::new(census);
    // Another host adds a rule to db naming idle.
    let mut elsewhere = l.decode(&all).unwrap().unwrap();
    let admit =
        sg_policy::RuleSpec::from_text("ingress", "Accept", "1", "TCP", "2/2", idle.as_str())
            .unwrap();
    elsewhere.authorize(&db, admit).unwrap();
    let key = l.key(&format!("groups/{db}"));
    kvs.insert(key.clone(), stored(&l, &elsewhere)[&key].clone());
    let before = (kvs.clone(), census.clone());
    match l.settle(&mut kvs, &mut census, &BTreeSet::new()).unwrap() {
        Settled::Unheld(g) => assert_eq!(g, [idle].into()),
        other @ Settled::State(_) => panic!("{other:?}"),
    }
    assert_eq!((kvs, census), before, "nothing moved");
}
