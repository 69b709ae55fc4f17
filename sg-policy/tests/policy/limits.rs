//! SPEC §1 shapes and §2 limits: each violation is refused with an error that
//! names the field, the value and the limit, and leaves the state unchanged.

use crate::support::{basic, bind, ip, rule, state};
use sg_policy::{
    BindingMode, Cidr, Family, GroupSpec, InnerPolicy, NicBinding, Peer, PolicyError, PortListSpec,
    PortRange, PortSpec, PrefixListEntry, PrefixListSpec, Protocol, RuleSpec, SessionTimeouts,
    Settings, State, validate_state,
};

fn err_text<T: std::fmt::Debug>(r: Result<T, PolicyError>) -> String {
    r.expect_err("must be refused").to_string()
}

fn tcp_port(port: u16) -> RuleSpec {
    rule(
        "ingress",
        "Accept",
        "1",
        "TCP",
        &format!("{port}/{port}"),
        "0.0.0.0/0",
    )
}

fn prefix_list(s: &mut State, max: u32) -> sg_policy::PrefixListId {
    s.create_prefix_list(PrefixListSpec {
        name: "pl".into(),
        description: String::new(),
        family: Family::Ipv4,
        max_entries: max,
        entries: vec![PrefixListEntry {
            cidr: Cidr::parse("x", "192.0.2.0/24").unwrap(),
            description: String::new(),
        }],
    })
    .unwrap()
}

// ---- §2 limits -----------------------------------------------------------------

#[test]
fn at_most_10_groups_per_nic() {
    let mut s = state();
    let groups: Vec<_> = (0..11).map(|i| basic(&mut s, &format!("g{i}"))).collect();
    let refs: Vec<_> = groups.iter().take(10).collect();
    bind(&mut s, "eth0", &["10.0.0.1"], &refs);
    let before = s.clone();
    let e = err_text(s.join("eth0", &groups[10]));
    assert!(
        e.contains("11") && e.contains("limit of 10") && e.contains("nics[eth0].groups"),
        "{e}"
    );
    assert_eq!(s, before);
    let e = err_text(s.set_nic_groups("eth0", groups.clone()));
    assert!(e.contains("limit of 10"), "{e}");
}

#[test]
fn a_nic_takes_at_most_64_addresses_and_extra_prefixes_what_the_kernel_holds() {
    // Issue 12 item 10: nothing limited a NIC's addresses and extra
    // prefixes to what the own-address table holds per NIC.
    let mut s = state();
    let g = basic(&mut s, "g");
    let addrs: Vec<String> = (1..=65).map(|i| format!("10.0.0.{i}")).collect();
    let refs: Vec<&str> = addrs.iter().map(String::as_str).collect();
    bind(&mut s, "eth0", &refs[..64], &[&g]);
    let before = s.clone();
    let e = err_text(s.set_nic_addresses("eth0", refs.iter().map(|a| ip(a)).collect(), Vec::new()));
    assert!(
        e.contains("nics[eth0].addresses") && e.contains("65") && e.contains("limit of 64"),
        "{e}"
    );
    assert_eq!(s, before);
}

#[test]
fn a_nic_keeps_at_least_one_group() {
    let mut s = state();
    let g = basic(&mut s, "g");
    bind(&mut s, "eth0", &["10.0.0.1"], &[&g]);
    let e = err_text(s.leave("eth0", &g));
    assert!(e.contains("1..=10"), "{e}");
}

#[test]
fn all_groups_of_a_nic_are_the_same_type() {
    let mut s = state();
    let b = basic(&mut s, "b");
    let e = s.create_group(GroupSpec::enterprise("e")).unwrap();
    bind(&mut s, "eth0", &["10.0.0.1"], &[&b]);
    let msg = err_text(s.join("eth0", &e));
    assert!(
        msg.contains(b.as_str()) && msg.contains(e.as_str()) && msg.contains("same type"),
        "{msg}"
    );
    let msg = err_text(s.bind_nic(NicBinding::new(
        "eth1",
        BindingMode::Port,
        vec![],
        vec![e.clone(), b.clone()],
    )));
    assert!(msg.contains("enterprise") && msg.contains("basic"), "{msg}");
}

#[test]
fn at_most_1000_rules_per_nic_across_its_groups() {
    let mut s = state();
    let a = basic(&mut s, "a");
    let b = basic(&mut s, "b");
    s.authorize_all(&a, (1..=600).map(tcp_port).collect())
        .unwrap();
    s.authorize_all(&b, (1..=400).map(tcp_port).collect())
        .unwrap();
    bind(&mut s, "eth0", &["10.0.0.1"], &[&a, &b]);
    let e = err_text(s.authorize(&b, tcp_port(401)));
    assert!(e.contains("1001") && e.contains("limit of 1000"), "{e}");
    // Egress counts too.
    let e = err_text(s.authorize(&a, rule("egress", "Drop", "1", "ALL", "-1/-1", "0.0.0.0/0")));
    assert!(e.contains("limit of 1000"), "{e}");
    // A group alone can hold more; the limit bites when a NIC takes both.
    let third = basic(&mut s, "third");
    s.authorize(&third, tcp_port(1)).unwrap();
    let e = err_text(s.join("eth0", &third));
    assert!(e.contains("1001"), "{e}");
}

#[test]
fn prefix_lists_count_at_their_max_entries_not_their_entries() {
    let mut s = state();
    let pl = prefix_list(&mut s, 200);
    let g = basic(&mut s, "g");
    bind(&mut s, "eth0", &["10.0.0.1"], &[&g]);
    for port in 1..=5 {
        s.authorize(
            &g,
            rule(
                "ingress",
                "Accept",
                "1",
                "TCP",
                &format!("{port}/{port}"),
                pl.as_str(),
            ),
        )
        .unwrap();
    }
    let e = err_text(s.authorize(&g, tcp_port(6)));
    assert!(e.contains("1001"), "{e}");
}

#[test]
fn port_lists_count_at_their_max_entries_and_both_lists_multiply() {
    let mut s = state();
    let prl = s
        .create_port_list(PortListSpec {
            name: "p".into(),
            description: String::new(),
            max_entries: 100,
            entries: vec![],
        })
        .unwrap();
    let pl = prefix_list(&mut s, 10);
    let g = basic(&mut s, "g");
    bind(&mut s, "eth0", &["10.0.0.1"], &[&g]);
    s.authorize(
        &g,
        rule("ingress", "Accept", "1", "TCP", prl.as_str(), pl.as_str()),
    )
    .unwrap();
    let e = err_text(s.authorize(
        &g,
        rule("ingress", "Accept", "1", "UDP", prl.as_str(), "0.0.0.0/0"),
    ));
    assert!(e.contains("1100"), "{e}");
}

#[test]
fn growing_a_list_beyond_a_nic_quota_is_refused() {
    let mut s = state();
    let pl = prefix_list(&mut s, 100);
    let g = basic(&mut s, "g");
    bind(&mut s, "eth0", &["10.0.0.1"], &[&g]);
    for port in 1..=10 {
        s.authorize(
            &g,
            rule(
                "ingress",
                "Accept",
                "1",
                "TCP",
                &format!("{port}/{port}"),
                pl.as_str(),
            ),
        )
        .unwrap();
    }
    let spec = PrefixListSpec {
        name: "pl".into(),
        description: String::new(),
        family: Family::Ipv4,
        max_entries: 101,
        entries: vec![],
    };
    let e = err_text(s.modify_prefix_list(&pl, spec));
    assert!(e.contains("1010") && e.contains("limit of 1000"), "{e}");
}

#[test]
fn at_most_20_group_peer_rules_per_basic_group() {
    let mut s = state();
    let peer = basic(&mut s, "peer");
    let g = basic(&mut s, "g");
    s.authorize_all(
        &g,
        (1..=20)
            .map(|p| {
                rule(
                    "ingress",
                    "Accept",
                    "1",
                    "TCP",
                    &format!("{p}/{p}"),
                    peer.as_str(),
                )
            })
            .collect(),
    )
    .unwrap();
    let e = err_text(s.authorize(
        &g,
        rule("ingress", "Accept", "1", "TCP", "21/21", peer.as_str()),
    ));
    assert!(e.contains("21") && e.contains("limit of 20"), "{e}");
    // Rules with CIDR peers are not limited by it.
    s.authorize(&g, tcp_port(21)).unwrap();
}

#[test]
fn enterprise_groups_neither_name_a_group_nor_are_named() {
    let mut s = state();
    let e = s.create_group(GroupSpec::enterprise("e")).unwrap();
    let b = basic(&mut s, "b");
    let msg = err_text(s.authorize(
        &e,
        rule("ingress", "Accept", "1", "TCP", "22/22", b.as_str()),
    ));
    assert!(
        msg.contains("rule.peer") && msg.contains("enterprise"),
        "{msg}"
    );
    let msg = err_text(s.authorize(
        &b,
        rule("ingress", "Accept", "1", "TCP", "22/22", e.as_str()),
    ));
    assert!(
        msg.contains(e.as_str()) && msg.contains("enterprise"),
        "{msg}"
    );
    let msg = err_text(s.authorize(
        &e,
        rule("ingress", "Accept", "1", "TCP", "22/22", e.as_str()),
    ));
    assert!(msg.contains("enterprise"), "{msg}");
}

#[test]
fn enterprise_groups_have_no_intra_group_policy() {
    let mut s = state();
    let mut spec = GroupSpec::enterprise("e");
    spec.inner_policy = Some(InnerPolicy::Accept);
    assert!(err_text(s.create_group(spec)).contains("always isolates"));
    let e = s.create_group(GroupSpec::enterprise("e")).unwrap();
    assert!(err_text(s.set_inner_policy(&e, InnerPolicy::Accept)).contains("enterprise"));
}

#[test]
fn an_enterprise_group_refuses_inner_policy_drop_too() {
    let mut s = state();
    let before = s.clone();
    let mut spec = GroupSpec::enterprise("e");
    spec.inner_policy = Some(InnerPolicy::Drop);
    let msg = err_text(s.create_group(spec));
    assert!(
        msg.contains("group.inner_policy")
            && msg.contains("Drop")
            && msg.contains("only basic groups have an intra-group policy"),
        "{msg}"
    );
    assert_eq!(s, before);
    let e = s.create_group(GroupSpec::enterprise("e")).unwrap();
    let before = s.clone();
    let msg = err_text(s.set_inner_policy(&e, InnerPolicy::Drop));
    assert!(
        msg.contains("inner_policy") && msg.contains("only basic groups"),
        "{msg}"
    );
    assert_eq!(s, before);
}

#[test]
fn priority_outside_1_to_100_is_refused_on_create() {
    let mut s = state();
    let g = basic(&mut s, "g");
    for p in [0u8, 101, 255] {
        let e = err_text(s.authorize(&g, tcp_port(22).with_priority(p)));
        assert!(
            e.contains(&format!("rule.priority: {p} is outside 1..=100")),
            "{e}"
        );
    }
    let e = RuleSpec::from_text("ingress", "Accept", "150", "TCP", "22/22", "0.0.0.0/0")
        .unwrap_err()
        .to_string();
    assert_eq!(e, "rule.priority: 150 is outside 1..=100");
    s.authorize(&g, tcp_port(22).with_priority(100)).unwrap();
    s.authorize(&g, tcp_port(22).with_priority(1)).unwrap();
}

// ---- §1 shapes -------------------------------------------------------------------

#[test]
fn addresses_are_normalised_and_host_bits_refused() {
    let mut s = state();
    let g = basic(&mut s, "g");
    let id = s
        .authorize(
            &g,
            rule("ingress", "Accept", "1", "ALL", "-1/-1", "2408:180:0000::1"),
        )
        .unwrap();
    let (_, r) = s.find_rule(&id).unwrap();
    assert_eq!(r.spec.peer.to_string(), "2408:180::1");
    let e = RuleSpec::from_text("ingress", "Accept", "1", "ALL", "-1/-1", "10.0.0.1/24")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("rule.peer") && e.contains("10.0.0.1/24") && e.contains("10.0.0.0/24"),
        "{e}"
    );
}

#[test]
fn protocol_names_and_numbers() {
    for (text, want) in [
        ("TCP", Protocol::TCP),
        ("udp", Protocol::UDP),
        ("ICMP", Protocol::ICMP),
        ("ICMPv4", Protocol::ICMP),
        ("icmpv6", Protocol::ICMPV6),
        ("GRE", Protocol::GRE),
        ("ALL", Protocol::All),
        ("6", Protocol::TCP),
        ("0", Protocol::Number(0)),
        ("255", Protocol::Number(255)),
    ] {
        assert_eq!(Protocol::parse("p", text).unwrap(), want, "{text}");
    }
    assert_eq!(
        Protocol::parse("p", "256").unwrap_err().to_string(),
        "p: 256 is outside 0..=255"
    );
    assert!(
        Protocol::parse("p", "SCTPX")
            .unwrap_err()
            .to_string()
            .contains("SCTPX")
    );
    assert!(Protocol::parse("p", "-1").is_err());
    assert_eq!(Protocol::Number(58).to_string(), "ICMPv6");
}

#[test]
fn port_forms_depend_on_the_protocol() {
    let mut s = state();
    let g = basic(&mut s, "g");
    let with = |proto: &str, ports: &str| {
        RuleSpec::from_text("ingress", "Accept", "1", proto, ports, "0.0.0.0/0")
    };
    // a/b only for TCP/UDP, -1/-1 only for the others.
    let e = err_text(s.authorize(&g, with("TCP", "-1/-1").unwrap()));
    assert!(e.contains("rule.port_range") && e.contains("-1/-1"), "{e}");
    let e = err_text(s.authorize(&g, with("ICMP", "22/22").unwrap()));
    assert!(e.contains("ICMP") && e.contains("22/22"), "{e}");
    let e = err_text(s.authorize(&g, with("ALL", "1/65535").unwrap()));
    assert!(e.contains("-1/-1"), "{e}");
    s.authorize(&g, with("UDP", "8000/9000").unwrap()).unwrap();
    s.authorize(&g, with("GRE", "-1/-1").unwrap()).unwrap();
    // Malformed ranges.
    assert!(
        with("TCP", "0/10")
            .unwrap_err()
            .to_string()
            .contains("1..=65535")
    );
    assert!(
        with("TCP", "10/65536")
            .unwrap_err()
            .to_string()
            .contains("65536")
    );
    assert!(
        with("TCP", "9000/8000")
            .unwrap_err()
            .to_string()
            .contains("9000/8000")
    );
    assert!(with("TCP", "22").is_err());
    assert!(with("TCP", "a/b").is_err());
    // Port lists and source ports are TCP/UDP only.
    let prl = s
        .create_port_list(PortListSpec {
            name: "p".into(),
            description: String::new(),
            max_entries: 5,
            entries: vec![],
        })
        .unwrap();
    let e = err_text(s.authorize(
        &g,
        RuleSpec {
            protocol: Protocol::ICMP,
            ports: PortSpec::List(prl),
            ..with("TCP", "1/2").unwrap()
        },
    ));
    assert!(e.contains("port lists"), "{e}");
    let e = err_text(
        s.authorize(
            &g,
            with("GRE", "-1/-1")
                .unwrap()
                .with_source_ports(PortRange::single(5))
                .with_priority(2),
        ),
    );
    assert!(e.contains("rule.source_port_range"), "{e}");
}

#[test]
fn local_address_of_the_other_family_is_refused() {
    let mut s = state();
    let g = basic(&mut s, "g");
    let r = rule("ingress", "Accept", "1", "TCP", "22/22", "0.0.0.0/0")
        .with_local(Cidr::parse("x", "2001:db8::1").unwrap());
    let e = err_text(s.authorize(&g, r));
    assert!(e.contains("rule.local") && e.contains("never match"), "{e}");
}

#[test]
fn references_must_exist() {
    let mut s = state();
    let g = basic(&mut s, "g");
    for peer in ["sg-0000", "pl-0000"] {
        let e = err_text(s.authorize(&g, rule("ingress", "Accept", "1", "TCP", "22/22", peer)));
        assert!(e.contains(peer) && e.contains("does not exist"), "{e}");
    }
    let e = err_text(s.authorize(
        &g,
        rule("ingress", "Accept", "1", "TCP", "prl-0000", "0.0.0.0/0"),
    ));
    assert!(e.contains("prl-0000"), "{e}");
    let e = err_text(s.join("nope", &g));
    assert!(e.contains("nope"), "{e}");
}

#[test]
fn duplicate_rules_are_refused_naming_the_existing_rule() {
    let mut s = state();
    let g = basic(&mut s, "g");
    let first = s.authorize(&g, tcp_port(22)).unwrap();
    let e = err_text(s.authorize(&g, tcp_port(22).with_description("again")));
    assert!(e.contains(first.as_str()), "{e}");
    // Another priority is another rule.
    s.authorize(&g, tcp_port(22).with_priority(2)).unwrap();
}

#[test]
fn managed_groups_are_read_only() {
    let mut s = state();
    let mut spec = GroupSpec::basic("svc");
    spec.managed = true;
    let m = s.create_group(spec).unwrap();
    let before = s.clone();
    for e in [
        err_text(s.authorize(&m, tcp_port(22))),
        err_text(s.modify_group(
            &m,
            sg_policy::GroupChange {
                name: Some("x".into()),
                ..Default::default()
            },
        )),
        err_text(s.set_inner_policy(&m, InnerPolicy::Drop)),
        err_text(sg_policy::import_json(&mut s, &m, r#"{"Permissions": []}"#)),
    ] {
        assert!(e.contains("managed") && e.contains(m.as_str()), "{e}");
    }
    assert!(err_text(s.delete_group(&m)).contains("managed"));
    assert_eq!(s, before);
    // Joining a NIC to it is allowed: membership belongs to the NIC.
    bind(&mut s, "eth0", &["10.0.0.1"], &[&m]);
}

#[test]
fn group_and_list_attributes_have_limits() {
    let mut s = state();
    let e = err_text(s.create_group(GroupSpec::basic("")));
    assert!(
        e.contains("group") && e.contains("name length") && e.contains("1..=128"),
        "{e}"
    );
    let e = err_text(s.create_group(GroupSpec::basic(&"x".repeat(129))));
    assert!(e.contains("129"), "{e}");
    let mut many = GroupSpec::basic("t");
    many.tags = (0..21).map(|i| (format!("k{i}"), String::new())).collect();
    assert!(err_text(s.create_group(many)).contains("limit of 20 tags"));
    for (max, n) in [(0u32, 0usize), (201, 0), (1, 2)] {
        let spec = PrefixListSpec {
            name: "p".into(),
            description: String::new(),
            family: Family::Ipv4,
            max_entries: max,
            entries: (0..n)
                .map(|i| PrefixListEntry {
                    cidr: Cidr::host(ip(&format!("10.0.0.{i}"))),
                    description: String::new(),
                })
                .collect(),
        };
        assert!(s.create_prefix_list(spec).is_err(), "max {max} entries {n}");
    }
    let wrong_family = PrefixListSpec {
        name: "p".into(),
        description: String::new(),
        family: Family::Ipv6,
        max_entries: 5,
        entries: vec![PrefixListEntry {
            cidr: Cidr::host(ip("10.0.0.1")),
            description: String::new(),
        }],
    };
    assert!(err_text(s.create_prefix_list(wrong_family)).contains("IPv6"));
}

#[test]
fn nic_bindings_are_checked() {
    let mut s = state();
    let g = basic(&mut s, "g");
    for (name, addrs) in [
        ("", vec!["10.0.0.1"]),
        ("a-very-long-interface-name", vec!["10.0.0.1"]),
        ("eth 0", vec!["10.0.0.1"]),
        ("eth0", vec!["10.0.0.1", "10.0.0.1"]),
        ("eth0", vec!["0.0.0.0"]),
        ("eth0", vec!["224.0.0.1"]),
    ] {
        let b = NicBinding::new(
            name,
            BindingMode::Local,
            addrs.iter().map(|a| ip(a)).collect(),
            vec![g.clone()],
        );
        assert!(s.bind_nic(b).is_err(), "{name} {addrs:?}");
    }
    bind(&mut s, "eth0", &["10.0.0.1"], &[&g]);
    let again = NicBinding::new("eth0", BindingMode::Local, vec![], vec![g.clone()]);
    assert!(err_text(s.bind_nic(again)).contains("already exists"));
    let dup = NicBinding::new(
        "eth1",
        BindingMode::Local,
        vec![],
        vec![g.clone(), g.clone()],
    );
    assert!(err_text(s.bind_nic(dup)).contains("twice"));
}

#[test]
fn a_refused_operation_leaves_the_state_unchanged() {
    let mut s = state();
    let g = basic(&mut s, "g");
    s.authorize(&g, tcp_port(1)).unwrap();
    let before = s.clone();
    // The batch's second rule is bad: none is added.
    let batch = vec![tcp_port(2), tcp_port(3).with_priority(0)];
    let e = err_text(s.authorize_all(&g, batch));
    assert!(e.contains("rules[1].priority"), "{e}");
    assert_eq!(s, before);
    assert!(matches!(
        s.authorize(
            &g,
            RuleSpec {
                peer: Peer::Group("sg-missing".parse::<String>().unwrap().try_into().unwrap()),
                ..tcp_port(9)
            }
        ),
        Err(PolicyError::NotFound { .. })
    ));
    assert_eq!(s, before);
}

#[test]
fn session_timeouts_default_to_spec_values_and_fill_in_from_partial_json() {
    let t = SessionTimeouts::default();
    assert_eq!(
        (
            t.tcp_handshake_secs,
            t.tcp_established_secs,
            t.tcp_closing_secs,
            t.other_secs
        ),
        (60, 910, 10, 910)
    );
    assert_eq!(Settings::default().session_timeouts, t);
    let partial: Settings =
        serde_json::from_str(r#"{"session_timeouts": {"tcp_closing_secs": 5}}"#).unwrap();
    assert_eq!(
        partial.session_timeouts,
        SessionTimeouts {
            tcp_closing_secs: 5,
            ..t
        }
    );
    assert!(partial.block_port_25);
    let absent: Settings = serde_json::from_str("{}").unwrap();
    assert_eq!(absent, Settings::default());
}

/// One field of [`SessionTimeouts`], by accessor.
type TimeoutField = fn(&mut SessionTimeouts) -> &mut u32;

#[test]
fn session_timeouts_are_1_second_to_1_week_each_and_errors_name_the_field() {
    let fields: [(&str, TimeoutField); 4] = [
        ("tcp_handshake_secs", |t| &mut t.tcp_handshake_secs),
        ("tcp_established_secs", |t| &mut t.tcp_established_secs),
        ("tcp_closing_secs", |t| &mut t.tcp_closing_secs),
        ("other_secs", |t| &mut t.other_secs),
    ];
    for (name, field) in fields {
        let mut s = state();
        for ok in [1, 604_800] {
            let mut settings = Settings::default();
            *field(&mut settings.session_timeouts) = ok;
            s.set_settings(settings.clone()).unwrap();
            assert_eq!(s.settings, settings);
        }
        let before = s.clone();
        for bad in [0, 604_801, u32::MAX] {
            let mut settings = Settings::default();
            *field(&mut settings.session_timeouts) = bad;
            let e = s.set_settings(settings).expect_err("must be refused");
            assert_eq!(
                e,
                PolicyError::OutOfRange {
                    field: format!("settings.session_timeouts.{name}"),
                    value: bad.to_string(),
                    limit: "1..=604800 seconds".to_owned(),
                }
            );
            assert_eq!(
                e.to_string(),
                format!("settings.session_timeouts.{name}: {bad} is outside 1..=604800 seconds")
            );
            assert_eq!(s, before);
        }
    }
}

#[test]
fn the_fragment_timeout_is_1_to_600_seconds_defaults_to_30_and_errors_name_the_field() {
    assert_eq!(Settings::default().fragment_timeout_secs, 30);
    // A store written before the setting existed loads with the default.
    let old: Settings =
        serde_json::from_str(r#"{"platform_addresses": [], "block_port_25": true}"#).unwrap();
    assert_eq!(old.fragment_timeout_secs, 30);
    let mut s = state();
    for ok in [1, 600] {
        let settings = Settings {
            fragment_timeout_secs: ok,
            ..Settings::default()
        };
        s.set_settings(settings.clone()).unwrap();
        assert_eq!(s.settings, settings);
    }
    let before = s.clone();
    for bad in [0, 601, u32::MAX] {
        let e = s
            .set_settings(Settings {
                fragment_timeout_secs: bad,
                ..Settings::default()
            })
            .expect_err("must be refused");
        assert_eq!(
            e.to_string(),
            format!("settings.fragment_timeout_secs: {bad} is outside 1..=600 seconds")
        );
        assert_eq!(s, before);
    }
}

#[test]
fn a_stored_state_with_a_bad_session_timeout_does_not_validate() {
    let mut s = state();
    s.settings.session_timeouts.other_secs = 0;
    let e = err_text(validate_state(&s));
    assert!(e.contains("settings.session_timeouts.other_secs"), "{e}");
    // Every operation validates its result, so none commits on such a state.
    assert!(s.create_group(GroupSpec::basic("g")).is_err());
}
