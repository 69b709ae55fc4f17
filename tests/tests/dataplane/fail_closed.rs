//! Packets the rules deny that once passed the data plane, each run through
//! every program that decides it (XDP, TC ingress, TC egress) with
//! `BPF_PROG_TEST_RUN`: VLAN-tagged frames leaving an anti-spoofed NIC,
//! IPv4-mapped IPv6 addresses taken for the NIC's IPv4 one, fragments
//! outliving policy changes and their own datagram, a first fragment hidden
//! behind a second fragment header, echo requests riding the other side's
//! echo session, and traffic addressed to a platform address. The
//! differential test (`differential.rs`) produces each class at random; these
//! name them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use sg_agent::{
    dataplane::{Dataplane, Limits, session_table::Filter},
    reconcile::Reconciler,
};
use sg_common::{counter, reason};
use sg_policy::{BindingMode, Cidr, GroupId, GroupSpec, NicBinding, State};
use sg_tests::{
    bench::rule,
    packet::{self, ETH_P_8021AD, ETH_P_8021Q, Ext, L3, L4, Spec},
    testrun::{self, Hook},
    topology::Netns,
};

const NIC: &str = "f0";
const ME4: [u8; 4] = [10, 9, 0, 2];
const ME6: &str = "fd09::2";
const PEER4: [u8; 4] = [10, 8, 0, 1];
const PEER6: &str = "fd08::1";
const PLATFORM: [u8; 4] = [203, 0, 113, 44];

/// The receive side's programs (XDP, or TC ingress in attach mode `tc`).
const RECEIVE: [Hook; 2] = [Hook::Xdp, Hook::TcIngress];

/// A policy with one basic group holding `rules`, NIC `f0` bound to it in
/// `mode` with `anti_spoof`.
fn policy(mode: BindingMode, anti_spoof: Option<bool>, rules: &[[&str; 6]]) -> (State, GroupId) {
    let mut s = State::with_seed(12);
    let g = s.create_group(GroupSpec::basic("g")).unwrap();
    for r in rules {
        s.authorize(&g, rule(r[0], r[1], r[2], r[3], r[4], r[5]))
            .unwrap();
    }
    let mut nic = NicBinding::new(
        NIC,
        mode,
        vec![
            IpAddr::V4(Ipv4Addr::from(ME4)),
            IpAddr::V6(ME6.parse().unwrap()),
        ],
        vec![g.clone()],
    );
    nic.anti_spoof = anti_spoof;
    s.bind_nic(nic).unwrap();
    (s, g)
}

/// A namespace with interface `f0`, the data plane loaded and enforcing `s`.
struct Host {
    reconciler: Reconciler,
    ifindex: u32,
}

impl Host {
    fn new(ns: &Netns, s: &State) -> Self {
        ns.ip(&["link", "add", NIC, "type", "veth", "peer", "name", "f0p"])
            .unwrap();
        ns.ip(&["link", "set", NIC, "up"]).unwrap();
        testrun::pin_to_cpu0().unwrap();
        let mut reconciler =
            Reconciler::new(Dataplane::load_for_tests(Limits::default()).unwrap(), None);
        reconciler.reconcile(s).unwrap();
        Self {
            reconciler,
            ifindex: sg_agent::iface::index(NIC).unwrap(),
        }
    }

    fn apply(&mut self, s: &State) {
        self.reconciler.reconcile(s).unwrap();
    }

    /// Runs `frame` through `hook`: (passed, reason).
    fn run(&mut self, hook: Hook, frame: &[u8]) -> (bool, u32) {
        let dp = self.reconciler.dataplane();
        let v = testrun::verdict_on(dp, hook, frame, self.ifindex).unwrap();
        let last = dp.maps().last_decision(0).unwrap();
        (testrun::passes(hook, v), last.reason)
    }

    fn sessions(&mut self) -> usize {
        self.reconciler
            .dataplane()
            .maps()
            .sessions(&Filter::default())
            .unwrap()
            .len()
    }
}

fn v4(src: [u8; 4], dst: [u8; 4], l4: L4) -> Spec {
    Spec::new(L3::v4(src, dst), l4)
}

fn v6(src: &str, dst: &str, l4: L4) -> Spec {
    Spec::new(L3::v6(src, dst), l4)
}

fn udp(sport: u16, dport: u16) -> L4 {
    L4::Udp { sport, dport }
}

fn tagged(spec: &Spec, vlans: &[u16]) -> Vec<u8> {
    packet::build(&Spec {
        vlans: vlans.to_vec(),
        ..spec.clone()
    })
    .bytes
}

fn arp_from(sender: [u8; 4]) -> Spec {
    Spec {
        l4: None,
        ..Spec::new(L3::ArpFrom(sender), L4::Gre)
    }
}

/// The source port of datagram `id`'s flow: one flow per datagram, so a first
/// fragment meets no session another test step started.
fn sport_of(id: u32) -> u16 {
    40000 + u16::try_from(id % 1000).unwrap()
}

/// A first (`offset` 0) or later fragment of a UDP datagram, with `id`.
fn fragment4(src: [u8; 4], dst: [u8; 4], id: u32, offset: u16) -> Vec<u8> {
    let l3 = L3::V4 {
        src: src.into(),
        dst: dst.into(),
        options: Vec::new(),
        frag_offset: offset,
        more_fragments: true,
    };
    let l4 = if offset == 0 {
        udp(sport_of(id), 53)
    } else {
        L4::Other { proto: 17, len: 16 }
    };
    packet::build(&Spec {
        ip_id: id,
        ..Spec::new(l3, l4)
    })
    .bytes
}

fn fragment6(src: &str, dst: &str, id: u32, offset: u16) -> Vec<u8> {
    let l3 = L3::V6 {
        src: src.parse().unwrap(),
        dst: dst.parse().unwrap(),
        ext: vec![Ext::Fragment { offset, more: true }],
    };
    let l4 = if offset == 0 {
        udp(sport_of(id), 53)
    } else {
        L4::Other { proto: 17, len: 16 }
    };
    packet::build(&Spec {
        ip_id: id,
        ..Spec::new(l3, l4)
    })
    .bytes
}

const TAGS: [&[u16]; 3] = [
    &[ETH_P_8021Q],
    &[ETH_P_8021AD],
    &[ETH_P_8021AD, ETH_P_8021Q],
];

#[test]
fn tagged_frames_cannot_leave_an_anti_spoofed_nic() {
    let ns = Netns::new("fc-tags").unwrap();
    ns.exec(|| {
        let own = [
            v4(ME4, PEER4, udp(40000, 53)),
            v6(ME6, PEER6, udp(40000, 53)),
            arp_from(ME4),
        ];
        // Port mode: the workload's egress arrives on the receive side.
        let (s, _) = policy(BindingMode::Port, None, &[]);
        let mut h = Host::new(&ns, &s);
        for hook in RECEIVE {
            for spec in &own {
                assert!(
                    h.run(hook, &packet::build(spec).bytes).0,
                    "{hook:?}: untagged {spec:?}"
                );
                for tags in TAGS {
                    assert_eq!(
                        h.run(hook, &tagged(spec, tags)),
                        (false, reason::SPOOF_TAGGED),
                        "{hook:?}: {spec:?} in {tags:x?}"
                    );
                }
            }
        }
        // Towards the workload nothing is guarded: tags are walked and the
        // frame inside decided (ARP passes, IP meets the rules).
        assert_eq!(
            h.run(Hook::TcEgress, &tagged(&arp_from(PEER4), TAGS[2])),
            (true, reason::NOT_IP)
        );
        assert_eq!(
            h.run(
                Hook::TcEgress,
                &tagged(&v4(PEER4, ME4, udp(53, 41000)), TAGS[0])
            ),
            (false, reason::DEFAULT_INGRESS_DROP)
        );
        // Local mode with anti-spoofing on: the workload's egress is TC egress.
        let (s, _) = policy(BindingMode::Local, Some(true), &[]);
        h.apply(&s);
        for spec in &own {
            assert!(
                h.run(Hook::TcEgress, &packet::build(spec).bytes).0,
                "untagged {spec:?}"
            );
            for tags in TAGS {
                assert_eq!(
                    h.run(Hook::TcEgress, &tagged(spec, tags)),
                    (false, reason::SPOOF_TAGGED),
                    "TC egress: {spec:?} in {tags:x?}"
                );
            }
        }
        for hook in RECEIVE {
            assert_eq!(
                h.run(hook, &tagged(&arp_from(PEER4), TAGS[1])),
                (true, reason::NOT_IP)
            );
        }
    })
    .unwrap();
}

#[test]
fn an_ipv4_mapped_ipv6_address_is_not_the_nics_ipv4_address() {
    let ns = Netns::new("fc-mapped").unwrap();
    ns.exec(|| {
        let (s, _) = policy(BindingMode::Port, None, &[]);
        let mut h = Host::new(&ns, &s);
        let mapped = Ipv4Addr::from(ME4).to_ipv6_mapped().to_string();
        let na = |target: &str| {
            let t: Ipv6Addr = target.parse().unwrap();
            packet::build(&Spec {
                tail: t.octets().to_vec(),
                ..v6(
                    ME6,
                    "ff02::1",
                    L4::Icmpv6 {
                        ty: 136,
                        code: 0,
                        id: 0,
                    },
                )
            })
            .bytes
        };
        for hook in RECEIVE {
            let from_mapped = packet::build(&v6(&mapped, PEER6, udp(40000, 53))).bytes;
            assert_eq!(
                h.run(hook, &from_mapped),
                (false, reason::SPOOF_SOURCE),
                "{hook:?}"
            );
            assert_eq!(
                h.run(hook, &na(&mapped)),
                (false, reason::SPOOF_ND_TARGET),
                "{hook:?}"
            );
            // The NIC's own addresses, of the packet's family, still pass.
            assert!(
                h.run(hook, &packet::build(&v6(ME6, PEER6, udp(40000, 53))).bytes)
                    .0
            );
            assert_eq!(h.run(hook, &na(ME6)), (true, reason::NEIGHBOUR_DISCOVERY));
        }
    })
    .unwrap();
}

#[test]
fn an_ipv6_later_fragment_between_mapped_addresses_does_not_follow_an_ipv4_first() {
    let ns = Netns::new("fc-fragfam").unwrap();
    ns.exec(|| {
        let (s, _) = policy(
            BindingMode::Local,
            None,
            &[["ingress", "Allow", "1", "UDP", "53/53", "10.8.0.0/16"]],
        );
        let mut h = Host::new(&ns, &s);
        let peer = Ipv4Addr::from(PEER4).to_ipv6_mapped().to_string();
        let me = Ipv4Addr::from(ME4).to_ipv6_mapped().to_string();
        for (i, hook) in RECEIVE.into_iter().enumerate() {
            let id = 0x1234 + u32::try_from(i).unwrap();
            assert_eq!(
                h.run(hook, &fragment4(PEER4, ME4, id, 0)),
                (true, reason::RULE)
            );
            assert_eq!(
                h.run(hook, &fragment6(&peer, &me, id, 64)),
                (false, reason::FRAGMENT_NO_FIRST),
                "{hook:?}: an IPv6 datagram rode an IPv4 one's verdict"
            );
            assert_eq!(
                h.run(hook, &fragment4(PEER4, ME4, id, 64)),
                (true, reason::FRAGMENT_FOLLOWS_FIRST)
            );
        }
    })
    .unwrap();
}

#[test]
fn a_second_fragment_header_makes_a_first_fragment_malformed() {
    let ns = Netns::new("fc-twofrag").unwrap();
    ns.exec(|| {
        let (s, _) = policy(
            BindingMode::Local,
            None,
            &[["ingress", "Allow", "1", "UDP", "53/53", "fd08::/64"]],
        );
        let mut h = Host::new(&ns, &s);
        for (i, hook) in RECEIVE.into_iter().enumerate() {
            let id = 0x77 + u32::try_from(i).unwrap();
            // An accepted datagram, its first fragment remembered.
            assert_eq!(
                h.run(hook, &fragment6(PEER6, ME6, id, 0)),
                (true, reason::RULE)
            );
            // A first fragment to a denied port whose payload starts with a
            // later fragment header of that datagram: once taken for its
            // later fragment, passed undecided.
            let hidden = packet::build(&Spec {
                ip_id: id,
                ..Spec::new(
                    L3::V6 {
                        src: PEER6.parse().unwrap(),
                        dst: ME6.parse().unwrap(),
                        ext: vec![
                            Ext::Fragment {
                                offset: 0,
                                more: true,
                            },
                            Ext::Fragment {
                                offset: 64,
                                more: true,
                            },
                        ],
                    },
                    udp(40000, 22),
                )
            })
            .bytes;
            let (_, counts) = testrun::counted(h.reconciler.dataplane(), hook, &hidden).unwrap();
            assert_eq!(
                counts[counter::BAD_IPV6_FRAG as usize],
                1,
                "{hook:?}: {counts:?}"
            );
            assert_eq!(counts[counter::MALFORMED as usize], 1, "{hook:?}");
            assert_eq!(h.run(hook, &hidden), (false, reason::MALFORMED), "{hook:?}");
        }
    })
    .unwrap();
}

#[test]
fn a_later_fragment_drops_once_its_first_fragments_rule_is_revoked() {
    let ns = Netns::new("fc-fragrev").unwrap();
    ns.exec(|| {
        let (mut s, g) = policy(
            BindingMode::Local,
            None,
            &[["ingress", "Allow", "1", "UDP", "53/53", "10.8.0.0/16"]],
        );
        let mut h = Host::new(&ns, &s);
        for (i, hook) in RECEIVE.into_iter().enumerate() {
            let id = 0x100 + u32::try_from(i).unwrap();
            if i > 0 {
                s.authorize(
                    &g,
                    rule("ingress", "Allow", "1", "UDP", "53/53", "10.8.0.0/16"),
                )
                .unwrap();
                h.apply(&s);
            }
            assert_eq!(
                h.run(hook, &fragment4(PEER4, ME4, id, 0)),
                (true, reason::RULE)
            );
            assert_eq!(
                h.run(hook, &fragment4(PEER4, ME4, id, 64)),
                (true, reason::FRAGMENT_FOLLOWS_FIRST)
            );
            let r = s.groups[&g].rules[0].id.clone();
            s.revoke(&g, &r).unwrap();
            h.apply(&s);
            assert_eq!(
                h.run(hook, &fragment4(PEER4, ME4, id, 128)),
                (false, reason::FRAGMENT_FOLLOWS_FIRST),
                "{hook:?}: a later fragment rode a revoked rule"
            );
        }
    })
    .unwrap();
}

#[test]
fn later_fragments_drop_after_the_fragment_timeout() {
    let ns = Netns::new("fc-fragtime").unwrap();
    ns.exec(|| {
        let (mut s, _) = policy(
            BindingMode::Local,
            None,
            &[["ingress", "Allow", "1", "UDP", "53/53", "10.8.0.0/16"]],
        );
        let mut settings = s.settings.clone();
        settings.fragment_timeout_secs = 1;
        s.set_settings(settings).unwrap();
        let mut h = Host::new(&ns, &s);
        for (i, hook) in RECEIVE.into_iter().enumerate() {
            let id = 0x200 + u32::try_from(i).unwrap();
            assert_eq!(
                h.run(hook, &fragment4(PEER4, ME4, id, 0)),
                (true, reason::RULE)
            );
            assert_eq!(
                h.run(hook, &fragment4(PEER4, ME4, id, 64)),
                (true, reason::FRAGMENT_FOLLOWS_FIRST)
            );
            std::thread::sleep(std::time::Duration::from_millis(1100));
            assert_eq!(
                h.run(hook, &fragment4(PEER4, ME4, id, 128)),
                (false, reason::FRAGMENT_EXPIRED),
                "{hook:?}: a first fragment was remembered past the timeout"
            );
            // Forgotten, not just expired.
            assert_eq!(
                h.run(hook, &fragment4(PEER4, ME4, id, 192)),
                (false, reason::FRAGMENT_NO_FIRST)
            );
        }
    })
    .unwrap();
}

#[test]
fn a_fragmented_reply_of_a_live_session_passes_across_an_unrelated_policy_change() {
    let ns = Netns::new("fc-fragsess").unwrap();
    ns.exec(|| {
        // Egress open (basic default), ingress closed: replies pass by sessions.
        let (mut s, g) = policy(BindingMode::Local, None, &[]);
        let mut h = Host::new(&ns, &s);
        let reply = |id: u32, offset: u16| {
            let l3 = L3::V4 {
                src: PEER4.into(),
                dst: ME4.into(),
                options: Vec::new(),
                frag_offset: offset,
                more_fragments: true,
            };
            let l4 = if offset == 0 {
                udp(53, 40000)
            } else {
                L4::Other { proto: 17, len: 16 }
            };
            packet::build(&Spec {
                ip_id: id,
                ..Spec::new(l3, l4)
            })
            .bytes
        };
        let query = packet::build(&v4(ME4, PEER4, udp(40000, 53))).bytes;
        assert_eq!(
            h.run(Hook::TcEgress, &query),
            (true, reason::DEFAULT_EGRESS_BASIC)
        );
        for (i, hook) in RECEIVE.into_iter().enumerate() {
            let id = 0x300 + u32::try_from(i).unwrap();
            assert_eq!(h.run(hook, &reply(id, 0)), (true, reason::SESSION));
            // A change that has nothing to do with this flow.
            s.authorize(
                &g,
                rule(
                    "ingress",
                    "Allow",
                    "1",
                    "TCP",
                    &format!("{}/{}", 8000 + i, 8000 + i),
                    "192.0.2.0/24",
                ),
            )
            .unwrap();
            h.apply(&s);
            assert_eq!(
                h.run(hook, &reply(id, 64)),
                (true, reason::FRAGMENT_FOLLOWS_FIRST),
                "{hook:?}"
            );
            // Deciding the first again created no session.
            assert_eq!(h.sessions(), 1);
        }
        // The session's own first packet denied now: its fragments drop, and
        // deciding the first again removed nothing (the next real packet of
        // the session does).
        s.authorize(
            &g,
            rule("egress", "Drop", "1", "UDP", "53/53", "10.8.0.0/16"),
        )
        .unwrap();
        h.apply(&s);
        let (hook, id) = (Hook::Xdp, 0x300);
        assert_eq!(
            h.run(hook, &reply(id, 128)),
            (false, reason::FRAGMENT_FOLLOWS_FIRST)
        );
        assert_eq!(h.sessions(), 1);
        assert_eq!(
            h.run(hook, &reply(0x3ff, 0)),
            (false, reason::DEFAULT_INGRESS_DROP)
        );
        assert_eq!(h.sessions(), 0);
    })
    .unwrap();
}

#[test]
fn echo_request_from_the_responder_is_a_new_flow() {
    let ns = Netns::new("fc-echo").unwrap();
    ns.exec(|| {
        // Egress open, ingress closed (ICMP included).
        let (s, _) = policy(BindingMode::Local, None, &[]);
        let mut h = Host::new(&ns, &s);
        let icmp = |src, dst, ty| {
            packet::build(&v4(
                src,
                dst,
                L4::Icmp {
                    ty,
                    code: 0,
                    id: 77,
                },
            ))
            .bytes
        };
        assert_eq!(
            h.run(Hook::TcEgress, &icmp(ME4, PEER4, 8)),
            (true, reason::DEFAULT_EGRESS_BASIC)
        );
        for hook in RECEIVE {
            assert_eq!(
                h.run(hook, &icmp(PEER4, ME4, 0)),
                (true, reason::SESSION),
                "{hook:?}: reply"
            );
            assert_eq!(
                h.run(hook, &icmp(PEER4, ME4, 8)),
                (false, reason::DEFAULT_INGRESS_DROP),
                "{hook:?}: the responder's echo request rode the initiator's session"
            );
        }
        // Untouched by the packet that did not fit: the initiator's next
        // request and its reply still belong to the session.
        assert_eq!(
            h.run(Hook::TcEgress, &icmp(ME4, PEER4, 8)),
            (true, reason::SESSION)
        );
        assert_eq!(
            h.run(Hook::Xdp, &icmp(PEER4, ME4, 0)),
            (true, reason::SESSION)
        );
        // The workload's reply to the responder's request is no part of it
        // either: egress decides it by the rules (open), starting nothing.
        assert_eq!(
            h.run(Hook::TcEgress, &icmp(ME4, PEER4, 0)),
            (true, reason::DEFAULT_EGRESS_BASIC)
        );
        assert_eq!(h.sessions(), 1);
        // IPv6 likewise.
        let icmp6 = |src, dst, ty| {
            packet::build(&v6(
                src,
                dst,
                L4::Icmpv6 {
                    ty,
                    code: 0,
                    id: 77,
                },
            ))
            .bytes
        };
        assert_eq!(
            h.run(Hook::TcEgress, &icmp6(ME6, PEER6, 128)),
            (true, reason::DEFAULT_EGRESS_BASIC)
        );
        for hook in RECEIVE {
            assert_eq!(
                h.run(hook, &icmp6(PEER6, ME6, 129)),
                (true, reason::SESSION)
            );
            assert_eq!(
                h.run(hook, &icmp6(PEER6, ME6, 128)),
                (false, reason::DEFAULT_INGRESS_DROP)
            );
        }
    })
    .unwrap();
}

#[test]
fn ingress_to_a_platform_address_is_decided_by_the_rules() {
    let ns = Netns::new("fc-platform").unwrap();
    ns.exec(|| {
        let (mut s, _) = policy(
            BindingMode::Local,
            None,
            &[
                ["ingress", "Drop", "1", "ALL", "-1/-1", "10.8.0.1"],
                ["egress", "Drop", "1", "ALL", "-1/-1", "10.8.0.1"],
            ],
        );
        let mut settings = s.settings.clone();
        settings.platform_addresses = vec![Cidr::host(IpAddr::V4(Ipv4Addr::from(PLATFORM)))];
        s.set_settings(settings).unwrap();
        let mut h = Host::new(&ns, &s);
        let tcp = |src, dst| {
            packet::build(&v4(
                src,
                dst,
                L4::Tcp {
                    sport: 40000,
                    dport: 22,
                    flags: 0x02,
                },
            ))
            .bytes
        };
        for hook in RECEIVE {
            // To a platform address from a source a Drop rule names: the
            // rules decide, since the platform address is not the peer.
            assert_eq!(
                h.run(hook, &tcp(PEER4, PLATFORM)),
                (false, reason::RULE),
                "{hook:?}"
            );
            // From it: always allowed.
            assert_eq!(
                h.run(hook, &tcp(PLATFORM, ME4)),
                (true, reason::PLATFORM_ADDRESS),
                "{hook:?}"
            );
        }
        // Egress: the peer is the destination.
        assert_eq!(
            h.run(Hook::TcEgress, &tcp(PLATFORM, PEER4)),
            (false, reason::RULE)
        );
        assert_eq!(
            h.run(Hook::TcEgress, &tcp(ME4, PLATFORM)),
            (true, reason::PLATFORM_ADDRESS)
        );
    })
    .unwrap();
}
