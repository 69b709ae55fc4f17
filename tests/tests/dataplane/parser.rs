//! The parser, through `BPF_PROG_TEST_RUN` on every program: crafted frames,
//! every truncation, and random mutations. Every frame must pass (the data
//! plane enforces nothing yet) and land in exactly the counters the oracle in
//! `sg_tests::classify` names.

use sg_agent::dataplane::{Dataplane, Limits};
use sg_common::counter::{
    ARP, BAD_ARP, BAD_IPV4, BAD_IPV6, BAD_IPV6_EXT, BAD_IPV6_FRAG, BAD_L2, BAD_L4, FRAGMENT, GRE,
    ICMP, ICMPV6, IPV4, IPV4_OPTIONS, IPV6, IPV6_EXT, MALFORMED, NON_IP, OTHER_L4, TCP, UDP, VLAN,
};
use sg_tests::{
    classify::{Expected, classify},
    packet::{self, ETH_P_8021AD, ETH_P_8021Q, Ext, L3, L4, Spec},
    policygen::Rng,
    testrun::{self, Hook, MIN_FRAME},
};

const HOOKS: [Hook; 3] = Hook::ALL;

fn tcp() -> L4 {
    L4::Tcp {
        sport: 40000,
        dport: 80,
        flags: 0x02,
    }
}

fn v4() -> L3 {
    L3::v4([10, 0, 0, 1], [10, 0, 0, 2])
}

fn v6() -> L3 {
    L3::v6("fd00::1", "fd00::2")
}

fn v6_ext(ext: Vec<Ext>) -> L3 {
    let L3::V6 { src, dst, .. } = v6() else {
        unreachable!()
    };
    L3::V6 { src, dst, ext }
}

fn v4_with(options: usize, frag_offset: u16, more_fragments: bool) -> L3 {
    let L3::V4 { src, dst, .. } = v4() else {
        unreachable!()
    };
    // NOP options (type 1) then end-of-list.
    L3::V4 {
        src,
        dst,
        options: vec![1; options],
        frag_offset,
        more_fragments,
    }
}

fn expect(class: u32, bad: Option<u32>, markers: &[u32]) -> Expected {
    Expected {
        class,
        bad,
        markers: markers.to_vec(),
    }
}

/// Runs `frame` on both hooks; checks the verdict is pass and the counters
/// moved exactly as `want` says, and that the oracle agrees with `want`.
fn check(dp: &mut Dataplane, name: &str, frame: &[u8], want: &Expected) {
    assert_eq!(
        &classify(frame),
        want,
        "{name}: the oracle disagrees with the expectation"
    );
    for hook in HOOKS {
        if !testrun::kernel_runs(hook, frame) {
            assert!(
                testrun::counted(dp, hook, frame).is_err(),
                "{name}: kernel ran it after all"
            );
            continue;
        }
        let (verdict, delta) = testrun::counted(dp, hook, frame).expect("test run");
        assert_eq!(
            verdict,
            testrun::pass_verdict(hook),
            "{name} on {hook:?}: verdict"
        );
        assert_eq!(
            delta,
            want.deltas().to_vec(),
            "{name} on {hook:?}: counters moved wrongly"
        );
    }
}

#[test]
#[expect(clippy::too_many_lines, reason = "one table of cases")]
fn crafted_frames_land_in_their_counters() {
    let mut dp = Dataplane::load_for_tests(Limits::default()).expect("load");
    let icmp = L4::Icmp {
        ty: 8,
        code: 0,
        id: 7,
    };
    let icmp6 = L4::Icmpv6 {
        ty: 128,
        code: 0,
        id: 7,
    };
    let udp = L4::Udp {
        sport: 5353,
        dport: 53,
    };
    let hbh = Ext::HopByHop { units: 0 };
    let cases: Vec<(&str, Spec, Expected)> = vec![
        ("v4 tcp", Spec::new(v4(), tcp()), expect(TCP, None, &[IPV4])),
        (
            "v4 udp",
            Spec::new(v4(), udp.clone()),
            expect(UDP, None, &[IPV4]),
        ),
        (
            "v4 icmp",
            Spec::new(v4(), icmp.clone()),
            expect(ICMP, None, &[IPV4]),
        ),
        (
            "v4 gre",
            Spec::new(v4(), L4::Gre),
            expect(GRE, None, &[IPV4]),
        ),
        (
            "v4 sctp",
            Spec::new(
                v4(),
                L4::Other {
                    proto: 132,
                    len: 12,
                },
            ),
            expect(OTHER_L4, None, &[IPV4]),
        ),
        ("v6 tcp", Spec::new(v6(), tcp()), expect(TCP, None, &[IPV6])),
        (
            "v6 udp",
            Spec::new(v6(), udp.clone()),
            expect(UDP, None, &[IPV6]),
        ),
        (
            "v6 icmpv6",
            Spec::new(v6(), icmp6.clone()),
            expect(ICMPV6, None, &[IPV6]),
        ),
        (
            "v6 gre",
            Spec::new(v6(), L4::Gre),
            expect(GRE, None, &[IPV6]),
        ),
        (
            "v6 no-next-header",
            Spec {
                l4: None,
                ..Spec::new(v6(), tcp())
            },
            expect(OTHER_L4, None, &[IPV6]),
        ),
        (
            "arp",
            Spec {
                l4: None,
                ..Spec::new(L3::Arp, tcp())
            },
            expect(ARP, None, &[]),
        ),
        (
            "lldp",
            Spec {
                l4: None,
                ..Spec::new(
                    L3::Raw {
                        ethertype: 0x88cc,
                        len: 40,
                    },
                    tcp(),
                )
            },
            expect(NON_IP, None, &[]),
        ),
        // IPv4 options: every IHL from 6 to 15.
        (
            "v4 options 4B",
            Spec::new(v4_with(4, 0, false), tcp()),
            expect(TCP, None, &[IPV4, IPV4_OPTIONS]),
        ),
        (
            "v4 options 40B",
            Spec::new(v4_with(40, 0, false), udp.clone()),
            expect(UDP, None, &[IPV4, IPV4_OPTIONS]),
        ),
        // Fragments: the first is parsed like any packet, later ones are not.
        (
            "v4 first fragment",
            Spec::new(v4_with(0, 0, true), tcp()),
            expect(TCP, None, &[IPV4]),
        ),
        (
            "v4 later fragment",
            Spec::new(v4_with(0, 185, true), tcp()),
            expect(FRAGMENT, None, &[IPV4]),
        ),
        (
            "v4 last fragment",
            Spec::new(v4_with(0, 185, false), udp.clone()),
            expect(FRAGMENT, None, &[IPV4]),
        ),
        (
            "v4 later fragment with options",
            Spec::new(v4_with(8, 3, false), udp.clone()),
            expect(FRAGMENT, None, &[IPV4, IPV4_OPTIONS]),
        ),
        // IPv6 extension chains.
        (
            "v6 hop-by-hop",
            Spec::new(v6_ext(vec![hbh]), icmp6.clone()),
            expect(ICMPV6, None, &[IPV6, IPV6_EXT]),
        ),
        (
            "v6 routing",
            Spec::new(v6_ext(vec![Ext::Routing]), tcp()),
            expect(TCP, None, &[IPV6, IPV6_EXT]),
        ),
        (
            "v6 dstopts",
            Spec::new(v6_ext(vec![Ext::DestOpts { units: 3 }]), udp.clone()),
            expect(UDP, None, &[IPV6, IPV6_EXT]),
        ),
        (
            "v6 ah",
            Spec::new(v6_ext(vec![Ext::Ah { units: 4 }]), tcp()),
            expect(TCP, None, &[IPV6, IPV6_EXT]),
        ),
        (
            "v6 first fragment",
            Spec::new(
                v6_ext(vec![Ext::Fragment {
                    offset: 0,
                    more: true,
                }]),
                udp.clone(),
            ),
            expect(UDP, None, &[IPV6, IPV6_EXT]),
        ),
        (
            "v6 later fragment",
            Spec::new(
                v6_ext(vec![Ext::Fragment {
                    offset: 100,
                    more: false,
                }]),
                udp.clone(),
            ),
            expect(FRAGMENT, None, &[IPV6, IPV6_EXT]),
        ),
        (
            "v6 five-header chain",
            Spec::new(
                v6_ext(vec![
                    hbh,
                    Ext::DestOpts { units: 1 },
                    Ext::Routing,
                    Ext::Fragment {
                        offset: 0,
                        more: false,
                    },
                    Ext::Ah { units: 1 },
                ]),
                tcp(),
            ),
            expect(TCP, None, &[IPV6, IPV6_EXT]),
        ),
        // One fragment header per datagram: a second one, first or later,
        // makes the chain malformed (it once hid a first fragment behind a
        // later fragment header of another datagram).
        (
            "v6 first fragment then a later fragment header",
            Spec::new(
                v6_ext(vec![
                    Ext::Fragment {
                        offset: 0,
                        more: true,
                    },
                    Ext::Fragment {
                        offset: 100,
                        more: true,
                    },
                ]),
                udp.clone(),
            ),
            expect(MALFORMED, Some(BAD_IPV6_FRAG), &[IPV6, IPV6_EXT]),
        ),
        (
            "v6 atomic fragment then a first fragment header",
            Spec::new(
                v6_ext(vec![
                    Ext::Fragment {
                        offset: 0,
                        more: false,
                    },
                    hbh,
                    Ext::Fragment {
                        offset: 0,
                        more: true,
                    },
                ]),
                tcp(),
            ),
            expect(MALFORMED, Some(BAD_IPV6_FRAG), &[IPV6, IPV6_EXT]),
        ),
        (
            "v6 later fragment: what follows is payload",
            Spec::new(
                v6_ext(vec![
                    Ext::Fragment {
                        offset: 100,
                        more: true,
                    },
                    Ext::Fragment {
                        offset: 0,
                        more: true,
                    },
                ]),
                udp.clone(),
            ),
            expect(FRAGMENT, None, &[IPV6, IPV6_EXT]),
        ),
        (
            "v6 eight headers",
            Spec::new(v6_ext(vec![Ext::DestOpts { units: 0 }; 8]), tcp()),
            expect(TCP, None, &[IPV6, IPV6_EXT]),
        ),
        (
            "v6 nine headers",
            Spec::new(v6_ext(vec![Ext::DestOpts { units: 0 }; 9]), tcp()),
            expect(MALFORMED, Some(BAD_IPV6_EXT), &[IPV6, IPV6_EXT]),
        ),
        // VLAN tags.
        (
            "802.1Q v4",
            Spec {
                vlans: vec![ETH_P_8021Q],
                ..Spec::new(v4(), tcp())
            },
            expect(TCP, None, &[VLAN, IPV4]),
        ),
        (
            "802.1ad+802.1Q v6",
            Spec {
                vlans: vec![ETH_P_8021AD, ETH_P_8021Q],
                ..Spec::new(v6(), udp.clone())
            },
            expect(UDP, None, &[VLAN, IPV6]),
        ),
        (
            "802.1Q arp",
            Spec {
                vlans: vec![ETH_P_8021Q],
                l4: None,
                ..Spec::new(L3::Arp, tcp())
            },
            expect(ARP, None, &[VLAN]),
        ),
        (
            "three tags",
            Spec {
                vlans: vec![ETH_P_8021AD, ETH_P_8021Q, ETH_P_8021Q],
                ..Spec::new(v4(), tcp())
            },
            expect(MALFORMED, Some(BAD_L2), &[VLAN]),
        ),
        // Ethernet padding after a short datagram is not part of it.
        (
            "v4 udp padded",
            Spec::new(v4(), udp),
            expect(UDP, None, &[IPV4]),
        ),
    ];
    for (name, spec, want) in &cases {
        let mut frame = packet::build(spec).bytes;
        if name.ends_with("padded") {
            frame.resize(60, 0);
        }
        check(&mut dp, name, &frame, want);
    }
}

#[test]
fn bad_headers_are_malformed_with_a_reason() {
    let mut dp = Dataplane::load_for_tests(Limits::default()).expect("load");
    let base = packet::build(&Spec::new(v4(), tcp()));
    let l3 = base.l3_off;
    let mut cases: Vec<(String, Vec<u8>, Expected)> = Vec::new();
    for ihl in 0..5u8 {
        let mut f = base.bytes.clone();
        f[l3] = 0x40 | ihl;
        cases.push((
            format!("IHL {ihl}"),
            f,
            expect(MALFORMED, Some(BAD_IPV4), &[]),
        ));
    }
    let mut f = base.bytes.clone();
    f[l3] = 0x45 | 0x10; // version 5
    cases.push((
        "IPv4 version 5".into(),
        f,
        expect(MALFORMED, Some(BAD_IPV4), &[]),
    ));
    let mut f = base.bytes.clone();
    f[l3 + 2..l3 + 4].copy_from_slice(&19u16.to_be_bytes());
    cases.push((
        "total length below header".into(),
        f,
        expect(MALFORMED, Some(BAD_IPV4), &[]),
    ));
    let mut f = base.bytes.clone();
    f[l3 + 2..l3 + 4].copy_from_slice(&1500u16.to_be_bytes());
    cases.push((
        "total length beyond frame".into(),
        f,
        expect(MALFORMED, Some(BAD_IPV4), &[]),
    ));
    let mut f = base.bytes.clone();
    f[l3] = 0x4f; // IHL 15 = 60 bytes: the TCP header is read as options
    cases.push((
        "IHL beyond datagram".into(),
        f,
        expect(MALFORMED, Some(BAD_IPV4), &[]),
    ));
    let mut f = base.bytes.clone();
    f[base.l4_off.unwrap() + 12] = 4 << 4;
    cases.push((
        "TCP data offset 4".into(),
        f,
        expect(MALFORMED, Some(BAD_L4), &[IPV4]),
    ));
    let v6 = packet::build(&Spec::new(v6(), tcp()));
    let mut f = v6.bytes.clone();
    f[v6.l3_off] = 0x40;
    cases.push((
        "IPv6 version 4".into(),
        f,
        expect(MALFORMED, Some(BAD_IPV6), &[]),
    ));
    let mut f = v6.bytes.clone();
    f[v6.l3_off + 4..v6.l3_off + 6].copy_from_slice(&100u16.to_be_bytes());
    cases.push((
        "IPv6 payload beyond frame".into(),
        f,
        expect(MALFORMED, Some(BAD_IPV6), &[]),
    ));
    let ah = packet::build(&Spec::new(v6_ext(vec![Ext::Ah { units: 200 }]), tcp()));
    let mut f = ah.bytes.clone();
    f[ah.ext_offs[0] + 1] = 250; // claims more than the datagram holds
    cases.push((
        "AH length beyond datagram".into(),
        f,
        expect(MALFORMED, Some(BAD_IPV6_EXT), &[IPV6, IPV6_EXT]),
    ));
    for (name, frame, want) in &cases {
        check(&mut dp, name, frame, want);
    }
}

/// The (class, reason) a cut frame must get, from the builder's boundaries alone.
fn by_construction(
    built: &packet::Built,
    spec: &Spec,
    cut: usize,
    consistent: bool,
) -> (u32, Option<u32>) {
    let l2_end = built.l3_off;
    if cut < l2_end {
        return (MALFORMED, Some(BAD_L2));
    }
    let full = (
        match spec.l4.as_ref().map(L4::proto) {
            Some(6) => TCP,
            Some(17) => UDP,
            Some(1) => ICMP,
            Some(58) => ICMPV6,
            Some(47) => GRE,
            _ => OTHER_L4,
        },
        None,
    );
    let l4_need = match spec.l4.as_ref().map(L4::proto) {
        Some(6) => 20,
        Some(17 | 1 | 58) => 8,
        Some(47) => 4,
        _ => 0,
    };
    match &spec.l3 {
        L3::V4 { .. } => {
            let l4 = built.l4_off.expect("l4");
            if !consistent || cut < l4 {
                (MALFORMED, Some(BAD_IPV4))
            } else if cut < l4 + l4_need {
                (MALFORMED, Some(BAD_L4))
            } else {
                full
            }
        }
        L3::V6 { .. } => {
            let l4 = built.l4_off.expect("l4");
            if !consistent || cut < built.l3_off + 40 {
                (MALFORMED, Some(BAD_IPV6))
            } else if cut < l4 {
                (MALFORMED, Some(BAD_IPV6_EXT))
            } else if cut < l4 + l4_need {
                (MALFORMED, Some(BAD_L4))
            } else {
                full
            }
        }
        L3::Arp | L3::ArpFrom(_) => {
            if cut < built.l3_off + 28 {
                (MALFORMED, Some(BAD_ARP))
            } else {
                (ARP, None)
            }
        }
        L3::Raw { .. } => (NON_IP, None),
    }
}

#[test]
fn every_truncation_lands_in_the_right_counter() {
    let mut dp = Dataplane::load_for_tests(Limits::default()).expect("load");
    let specs = [
        Spec::new(v4(), tcp()),
        Spec::new(v4_with(12, 0, false), L4::Udp { sport: 1, dport: 2 }),
        Spec::new(
            v4(),
            L4::Icmp {
                ty: 8,
                code: 0,
                id: 1,
            },
        ),
        Spec::new(v4(), L4::Gre),
        Spec {
            vlans: vec![ETH_P_8021AD, ETH_P_8021Q],
            ..Spec::new(v4(), tcp())
        },
        Spec::new(v6(), tcp()),
        Spec::new(
            v6_ext(vec![
                Ext::HopByHop { units: 1 },
                Ext::Fragment {
                    offset: 0,
                    more: true,
                },
                Ext::Ah { units: 2 },
            ]),
            L4::Udp { sport: 1, dport: 2 },
        ),
        Spec::new(
            v6_ext(vec![Ext::Routing]),
            L4::Icmpv6 {
                ty: 128,
                code: 0,
                id: 9,
            },
        ),
        Spec {
            vlans: vec![ETH_P_8021Q],
            ..Spec::new(v6(), L4::Gre)
        },
        Spec {
            l4: None,
            ..Spec::new(L3::Arp, tcp())
        },
    ];
    let mut checked = 0;
    let mut expected = 0;
    for spec in &specs {
        let built = packet::build(spec);
        expected += 2 * (built.bytes.len() - MIN_FRAME + 1);
        for cut in MIN_FRAME..=built.bytes.len() {
            for consistent in [false, true] {
                let frame = if consistent {
                    built.cut_consistent(cut)
                } else {
                    built.cut(cut)
                };
                let (class, bad) = if cut == built.bytes.len() {
                    by_construction(&built, spec, cut, true)
                } else {
                    by_construction(&built, spec, cut, consistent)
                };
                let oracle = classify(&frame);
                let name = format!("{spec:?} cut at {cut} (lengths rewritten: {consistent})");
                assert_eq!(
                    (oracle.class, oracle.bad),
                    (class, bad),
                    "{name}: oracle vs construction"
                );
                check(&mut dp, &name, &frame, &oracle);
                checked += 1;
            }
        }
    }
    assert_eq!(checked, expected, "every cut of every frame, both ways");
}

#[test]
fn random_mutations_never_crash_and_agree_with_the_oracle() {
    let seed = std::env::var("SG_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_0001_u64);
    println!("seed {seed} (set SG_SEED to replay)");
    let mut rng = Rng::new(seed);
    let mut dp = Dataplane::load_for_tests(Limits::default()).expect("load");
    let bases: Vec<Vec<u8>> = [
        Spec::new(v4(), tcp()),
        Spec::new(v4_with(8, 0, true), L4::Udp { sport: 1, dport: 2 }),
        Spec::new(
            v6_ext(vec![Ext::HopByHop { units: 0 }, Ext::DestOpts { units: 1 }]),
            tcp(),
        ),
        Spec::new(
            v6_ext(vec![Ext::Fragment {
                offset: 0,
                more: true,
            }]),
            L4::Icmpv6 {
                ty: 1,
                code: 4,
                id: 0,
            },
        ),
        Spec {
            vlans: vec![ETH_P_8021Q],
            ..Spec::new(v4(), L4::Gre)
        },
        Spec {
            l4: None,
            ..Spec::new(L3::Arp, tcp())
        },
        Spec::new(
            v6_ext(vec![
                Ext::Fragment {
                    offset: 0,
                    more: true,
                },
                Ext::Fragment {
                    offset: 64,
                    more: true,
                },
            ]),
            L4::Udp { sport: 1, dport: 2 },
        ),
    ]
    .iter()
    .map(|s| packet::build(s).bytes)
    .collect();
    for i in 0..4000 {
        let mut f = bases[rng.below(bases.len())].clone();
        for _ in 0..=rng.below(3) {
            match rng.below(3) {
                // Flip a byte in the first 80 (where the headers are).
                0 => {
                    let at = rng.below(f.len().min(80));
                    f[at] = u8::try_from(rng.next_u64() & 0xff).expect("byte");
                }
                // Cut the frame short.
                1 => f.truncate(MIN_FRAME + rng.below(f.len() - MIN_FRAME + 1)),
                // Grow it with junk.
                _ => f.extend((0..rng.below(64)).map(|_| 0x33)),
            }
        }
        check(
            &mut dp,
            &format!("seed {seed} frame {i} {f:02x?}"),
            &f,
            &classify(&f),
        );
    }
}

/// Issue 16: an interface the programs are attached to but no binding
/// names cost the whole parser before its lookup. As the agent loads them,
/// such a frame is passed first, unparsed, and counted as `not_bound`
/// alone, on every hook, however malformed.
#[test]
fn a_frame_of_an_interface_not_bound_passes_unparsed_counted_as_not_bound() {
    use sg_common::counter::{NOT_BOUND, SLOTS};
    let mut dp = Dataplane::load().expect("load");
    let tcp = packet::build(&Spec::new(v4(), tcp())).bytes;
    let mut garbage = tcp.clone();
    garbage[14] = 0x41; // IPv4 with a header length of 4 bytes: malformed
    for hook in HOOKS {
        for frame in [&tcp, &garbage] {
            let (verdict, delta) = testrun::counted(&mut dp, hook, frame).expect("test run");
            assert_eq!(verdict, testrun::pass_verdict(hook), "{hook:?}");
            let mut want = vec![0; SLOTS as usize];
            want[NOT_BOUND as usize] = 1;
            assert_eq!(delta, want, "{hook:?}: counted as more than not bound");
        }
    }
    assert!(
        dp.maps().last_decision(0).is_err(),
        "the agent's load records no last decision"
    );
}
