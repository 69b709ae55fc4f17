//! A fleet's state: the NICs other hosts bind are members of groups and
//! count towards every limit, and this host's operations never change them.

use sg_policy::{BindingMode, Direction, NicBinding, State, Verdict};

use crate::support::{basic, bind, ip, rule, state, tcp, verdict};

/// Puts a NIC of host `host` into `s`, as the fleet store loads it.
fn remote(s: &mut State, host: &str, nic: &str, address: &str, groups: &[&sg_policy::GroupId]) {
    let n = NicBinding::new(
        nic,
        BindingMode::Local,
        vec![ip(address)],
        groups.iter().map(|g| (*g).clone()).collect(),
    );
    s.remote
        .entry(host.to_owned())
        .or_default()
        .insert(nic.to_owned(), n);
}

/// An ingress rule admitting TCP to `p` from 10.0.0.0/8.
fn port(p: u16) -> sg_policy::RuleSpec {
    rule(
        "ingress",
        "Accept",
        "1",
        "TCP",
        &format!("{p}/{p}"),
        "10.0.0.0/8",
    )
}

/// Groups `a` (600 rules) and `b` (400 rules): a NIC in both is at the
/// 1,000-rule limit. No NIC is bound.
fn at_the_limit_together() -> (State, sg_policy::GroupId, sg_policy::GroupId) {
    let mut s = state();
    let a = basic(&mut s, "a");
    let b = basic(&mut s, "b");
    s.authorize_all(&a, (1..=600).map(port).collect()).unwrap();
    s.authorize_all(&b, (1..=400).map(port).collect()).unwrap();
    (s, a, b)
}

#[test]
fn a_group_peer_rule_admits_the_members_other_hosts_bind() {
    let mut s = state();
    let db = basic(&mut s, "db");
    let web = basic(&mut s, "web");
    s.authorize(
        &db,
        rule("ingress", "Accept", "1", "TCP", "3306/3306", web.as_str()),
    )
    .unwrap();
    bind(&mut s, "eth0", &["10.0.0.10"], &[&db]);
    let probe = tcp("10.1.0.5", "10.0.0.10", 3306);
    assert_eq!(
        verdict(&s, "eth0", Direction::Ingress, &probe),
        Verdict::Drop
    );
    remote(&mut s, "web-7", "eth0", "10.1.0.5", &[&web]);
    sg_policy::validate_state(&s).unwrap();
    assert_eq!(
        verdict(&s, "eth0", Direction::Ingress, &probe),
        Verdict::Accept
    );
    assert_eq!(s.members(&web).count(), 1);
}

#[test]
fn a_rule_that_takes_another_hosts_nic_past_1000_rules_is_refused_naming_it() {
    let (mut s, a, b) = at_the_limit_together();
    // No NIC here has both groups; one on host web-7 does.
    remote(&mut s, "web-7", "eth1", "10.1.0.5", &[&a, &b]);
    let e = s.authorize(&b, port(401)).unwrap_err().to_string();
    assert!(
        e.contains("hosts[web-7].nics[eth1].rules") && e.contains("1000"),
        "{e}"
    );
}

#[test]
fn a_group_another_host_binds_cannot_be_deleted() {
    let mut s = state();
    let web = basic(&mut s, "web");
    remote(&mut s, "web-7", "eth0", "10.1.0.5", &[&web]);
    let e = s.delete_group(&web).unwrap_err().to_string();
    assert!(e.contains("eth0"), "{e}");
}

/// Counts a NIC of host `host`, as the fleet store does for the NICs no
/// group of this host names (`sg_policy::census`).
fn counted(s: &mut State, host: &str, nic: &str, groups: &[&sg_policy::GroupId]) {
    let groups: Vec<sg_policy::GroupId> = groups.iter().map(|g| (*g).clone()).collect();
    std::sync::Arc::make_mut(&mut s.census)
        .insert(host, nic, &groups)
        .unwrap();
}

#[test]
fn a_counted_nic_counts_towards_every_limit_and_use_as_a_whole_one_does() {
    let (mut s, a, b) = at_the_limit_together();
    counted(&mut s, "web-7", "eth1", &[&a, &b]);
    counted(&mut s, "web-8", "eth1", &[&a]);
    let e = s.authorize(&b, port(401)).unwrap_err().to_string();
    assert!(
        e.contains("hosts[web-7].nics[eth1].rules") && e.contains("1000"),
        "{e}"
    );
    let e = s.delete_group(&a).unwrap_err().to_string();
    assert!(e.contains("eth1"), "{e}");
    assert_eq!(s.member_names(&a), ["eth1", "eth1"]);
    assert_eq!(s.member_names(&b), ["eth1"]);
    // Gone from one host, its list no longer counts.
    std::sync::Arc::make_mut(&mut s.census).remove("web-7", "eth1");
    s.authorize(&b, port(401)).unwrap();
    assert_eq!(
        std::sync::Arc::make_mut(&mut s.census).remove_host("web-8"),
        1
    );
    s.delete_group(&a).unwrap();
}

#[test]
fn a_census_is_its_nics_and_their_groups_however_it_was_built() {
    use sg_policy::census::Census;
    let mut s = state();
    let (a, b) = (basic(&mut s, "a"), basic(&mut s, "b"));
    let mut one = Census::default();
    let mut two = Census::default();
    one.insert("h1", "eth0", std::slice::from_ref(&a)).unwrap();
    one.insert("h2", "eth0", &[a.clone(), b.clone()]).unwrap();
    two.insert("h2", "eth0", std::slice::from_ref(&b)).unwrap();
    two.insert("h1", "eth0", std::slice::from_ref(&a)).unwrap();
    assert_ne!(one, two);
    two.insert("h2", "eth0", &[a.clone(), b.clone()]).unwrap();
    assert_eq!(one, two, "replaced in place");
    assert_eq!(two.len(), 2);
    assert_eq!(two.lists().count(), 2, "the emptied list is not listed");
    let json = serde_json::to_string(&one).unwrap();
    let back: Census = serde_json::from_str(&json).unwrap();
    assert_eq!(back, one);
    assert!(one.insert("h1", "a-name-too-long-for-linux", &[a]).is_err());
    assert_eq!(one.example(&[b]), None);
}

#[test]
fn the_groups_a_host_names_are_its_nics_groups_and_their_rules_peers() {
    let mut s = state();
    let db = basic(&mut s, "db");
    let web = basic(&mut s, "web");
    let idle = basic(&mut s, "idle");
    let far = basic(&mut s, "far");
    s.authorize(
        &db,
        rule("ingress", "Accept", "1", "TCP", "3306/3306", web.as_str()),
    )
    .unwrap();
    // A rule of a group no NIC here has names nothing here.
    s.authorize(
        &idle,
        rule("ingress", "Accept", "1", "TCP", "22/22", far.as_str()),
    )
    .unwrap();
    bind(&mut s, "eth0", &["10.0.0.10"], &[&db]);
    let named: Vec<_> = s.named_groups().into_iter().collect();
    let mut want = vec![db, web];
    want.sort();
    assert_eq!(named, want);
}
