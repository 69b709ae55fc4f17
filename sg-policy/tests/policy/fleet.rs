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
    let mut s = state();
    let a = basic(&mut s, "a");
    let b = basic(&mut s, "b");
    let port = |p: u16| {
        rule(
            "ingress",
            "Accept",
            "1",
            "TCP",
            &format!("{p}/{p}"),
            "10.0.0.0/8",
        )
    };
    s.authorize_all(&a, (1..=600).map(port).collect()).unwrap();
    s.authorize_all(&b, (1..=400).map(port).collect()).unwrap();
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
