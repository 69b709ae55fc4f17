//! Random policies and packets for differential tests: valid states built
//! through the policy library's own operations, and packets aimed at the
//! addresses and ports those states mention, so rules match often.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use sg_policy::{
    Action, BindingMode, Cidr, Direction, Family, Fragment, GroupId, GroupSpec, InnerPolicy,
    NicBinding, Packet, Peer, PortListEntry, PortListSpec, PortRange, PortSpec, PrefixListEntry,
    PrefixListSpec, Protocol, Quoted, RuleSpec, Settings, State,
};

use crate::packet::{DEFAULT_IP_ID, ETH_P_8021AD, ETH_P_8021Q, Ext, L3, L4, Spec};

/// xorshift64*: small, seeded, reproducible.
pub struct Rng(pub u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next_u64() % (n.max(1) as u64)).expect("fits")
    }

    pub fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    pub fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len())]
    }

    pub fn u8(&mut self) -> u8 {
        u8::try_from(self.next_u64() & 0xff).expect("byte")
    }

    pub fn u16(&mut self) -> u16 {
        u16::try_from(self.next_u64() & 0xffff).expect("u16")
    }
}

/// Addresses packets and rules are drawn from: a few small subnets, so CIDRs
/// of many lengths overlap.
pub fn pool_v4(rng: &mut Rng) -> Ipv4Addr {
    Ipv4Addr::new(
        10,
        0,
        u8::try_from(rng.below(4)).expect("small"),
        u8::try_from(rng.below(16)).expect("small"),
    )
}

pub fn pool_v6(rng: &mut Rng) -> Ipv6Addr {
    let third = u16::try_from(rng.below(4)).expect("small");
    let last = u16::try_from(rng.below(16)).expect("small");
    Ipv6Addr::new(0xfd00, 0, third, 0, 0, 0, 0, last)
}

fn addr(rng: &mut Rng, v4: bool) -> IpAddr {
    if rng.chance(5) {
        // Now and then somewhere else entirely.
        return if v4 {
            IpAddr::V4(Ipv4Addr::from(
                u32::try_from(rng.next_u64() >> 32).expect("u32"),
            ))
        } else {
            IpAddr::V6(Ipv6Addr::from(
                u128::from(rng.next_u64()) << 64 | u128::from(rng.next_u64()),
            ))
        };
    }
    if v4 {
        IpAddr::V4(pool_v4(rng))
    } else {
        IpAddr::V6(pool_v6(rng))
    }
}

/// A random address inside `c`.
pub fn within(rng: &mut Rng, c: &Cidr) -> IpAddr {
    let host = u128::from(rng.next_u64()) << 64 | u128::from(rng.next_u64());
    match c.addr() {
        IpAddr::V4(a) => {
            let free = 32 - u32::from(c.len());
            let mask = if free == 0 {
                0
            } else {
                u32::MAX >> (32 - free)
            };
            #[expect(clippy::cast_possible_truncation, reason = "the low 32 bits")]
            let h = host as u32 & mask;
            IpAddr::V4(Ipv4Addr::from(u32::from(a) | h))
        }
        IpAddr::V6(a) => {
            let free = 128 - u32::from(c.len());
            let mask = if free == 0 {
                0
            } else {
                u128::MAX >> (128 - free)
            };
            IpAddr::V6(Ipv6Addr::from(u128::from(a) | (host & mask)))
        }
    }
}

/// `::ffff:a.b.c.d`: the IPv6 address whose bytes look like IPv4 `a`.
pub fn v4_mapped(a: Ipv4Addr) -> IpAddr {
    IpAddr::V6(a.to_ipv6_mapped())
}

fn cidr(rng: &mut Rng, v4: bool) -> Cidr {
    let a = addr(rng, v4);
    let len = if v4 {
        *rng.pick(&[0u8, 8, 16, 22, 24, 26, 28, 30, 31, 32, 32, 32])
    } else {
        *rng.pick(&[0u8, 16, 48, 64, 112, 120, 124, 127, 128, 128, 128])
    };
    // Mask the host bits: the policy refuses them.
    let masked = match a {
        IpAddr::V4(x) => {
            let bits = u32::from(x);
            let mask = if len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(len))
            };
            IpAddr::V4(Ipv4Addr::from(bits & mask))
        }
        IpAddr::V6(x) => {
            let bits = u128::from(x);
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(len))
            };
            IpAddr::V6(Ipv6Addr::from(bits & mask))
        }
    };
    Cidr::new(masked, len).expect("masked")
}

const PORTS: [u16; 14] = [
    1, 20, 22, 25, 53, 80, 443, 1000, 1024, 3306, 8000, 8080, 40000, 65535,
];

fn port(rng: &mut Rng) -> u16 {
    if rng.chance(70) {
        let p = *rng.pick(&PORTS);
        let jitter = u16::try_from(rng.below(3)).expect("small");
        p.saturating_add(jitter).max(1)
    } else {
        rng.u16().max(1)
    }
}

/// A platform address: no broader than the policy takes (a /8 for IPv4, a
/// /32 for IPv6, `validate::PLATFORM_MIN_PREFIX_V4`/`_V6`).
fn platform_cidr(rng: &mut Rng, v4: bool) -> Cidr {
    let min = if v4 {
        sg_policy::validate::PLATFORM_MIN_PREFIX_V4
    } else {
        sg_policy::validate::PLATFORM_MIN_PREFIX_V6
    };
    loop {
        let c = cidr(rng, v4);
        if c.len() >= min {
            return c;
        }
    }
}

fn port_range(rng: &mut Rng) -> PortRange {
    let a = port(rng);
    let b = if rng.chance(50) {
        a
    } else {
        a.saturating_add(u16::try_from(rng.below(2000)).expect("small"))
    };
    PortRange { from: a, to: b }
}

/// Knobs for one random state.
pub struct Shape {
    /// Rules in the big group of NIC `n0` (up to the 1,000-rule quota).
    pub big_rules: usize,
    /// Rules in each other group.
    pub small_rules: usize,
}

/// A random, valid state with NICs `n0`, `n1`, `n2`.
pub fn random_state(rng: &mut Rng, seed: u64, shape: &Shape) -> State {
    let mut s = State::with_seed(seed);
    let mut platform_addresses = Vec::new();
    if rng.chance(30) {
        platform_addresses.push(platform_cidr(rng, true));
    }
    if rng.chance(20) {
        platform_addresses.push(platform_cidr(rng, false));
    }
    let settings = Settings {
        platform_addresses,
        block_port_25: rng.chance(70),
        ..Settings::default()
    };
    s.set_settings(settings).expect("settings");
    let enterprise = rng.chance(25);
    let groups: Vec<GroupId> = (0..=rng.below(3))
        .map(|i| {
            let mut spec = if enterprise {
                GroupSpec::enterprise(&format!("g{i}"))
            } else {
                GroupSpec::basic(&format!("g{i}"))
            };
            if !enterprise && rng.chance(40) {
                spec.inner_policy = Some(InnerPolicy::Drop);
            }
            s.create_group(spec).expect("group")
        })
        .collect();
    let (prefix_lists, port_lists) = random_lists(rng, &mut s);
    bind_nics(rng, &mut s, &groups);
    for (gi, g) in groups.iter().enumerate() {
        let big = gi == 0 && shape.big_rules > 100;
        let n = if gi == 0 {
            shape.big_rules
        } else {
            shape.small_rules
        };
        // A big group names no lists (each counts as its max entries toward
        // the 1,000-rule quota) and at most 18 groups (the limit is 20).
        let (prefix_choice, port_choice) = if big {
            (&[][..], &[][..])
        } else {
            (&prefix_lists[..], &port_lists[..])
        };
        let mut group_peers = 0;
        let mut specs = Vec::new();
        for _ in 0..n {
            let spec = random_rule(rng, enterprise, &groups, prefix_choice, port_choice);
            if matches!(spec.peer, Peer::Group(_)) {
                group_peers += 1;
                if group_peers > 18 {
                    continue;
                }
            }
            specs.push(spec);
        }
        // Add in chunks; where a chunk is refused (a quota, a duplicate), one by one.
        for chunk in specs.chunks(100) {
            if s.authorize_all(g, chunk.to_vec()).is_err() {
                for spec in chunk {
                    let _ = s.authorize(g, spec.clone());
                }
            }
        }
    }
    s
}

fn random_lists(
    rng: &mut Rng,
    s: &mut State,
) -> (Vec<sg_policy::PrefixListId>, Vec<sg_policy::PortListId>) {
    let mut prefix_lists = Vec::new();
    for i in 0..rng.below(3) {
        let v4 = rng.chance(50);
        let entries = (0..=rng.below(3))
            .map(|_| PrefixListEntry {
                cidr: cidr(rng, v4),
                description: String::new(),
            })
            .collect();
        let spec = PrefixListSpec {
            name: format!("pl{i}"),
            description: String::new(),
            family: if v4 { Family::Ipv4 } else { Family::Ipv6 },
            max_entries: 5,
            entries,
        };
        if let Ok(id) = s.create_prefix_list(spec) {
            prefix_lists.push(id);
        }
    }
    let mut port_lists = Vec::new();
    for i in 0..rng.below(3) {
        let entries = (0..=rng.below(2))
            .map(|_| PortListEntry {
                range: port_range(rng),
                description: String::new(),
            })
            .collect();
        let spec = PortListSpec {
            name: format!("prl{i}"),
            description: String::new(),
            max_entries: 4,
            entries,
        };
        if let Ok(id) = s.create_port_list(spec) {
            port_lists.push(id);
        }
    }
    (prefix_lists, port_lists)
}

/// NICs: `n0` in the first group (and maybe more), the others at random.
fn bind_nics(rng: &mut Rng, s: &mut State, groups: &[GroupId]) {
    for (i, name) in ["n0", "n1", "n2"].iter().enumerate() {
        let mut mine = vec![groups[0].clone()];
        for g in &groups[1..] {
            if rng.chance(if i == 0 { 30 } else { 50 }) {
                mine.push(g.clone());
            }
        }
        if i > 0 && rng.chance(50) {
            mine.remove(0);
            if mine.is_empty() {
                mine.push(rng.pick(groups).clone());
            }
        }
        let mode = if rng.chance(50) {
            BindingMode::Local
        } else {
            BindingMode::Port
        };
        let addresses = vec![IpAddr::V4(pool_v4(rng)), IpAddr::V6(pool_v6(rng))];
        let mut b = NicBinding::new(name, mode, addresses, mine);
        b.anti_spoof = *rng.pick(&[None, None, Some(true), Some(false)]);
        if rng.chance(20) {
            let v4 = rng.chance(50);
            b.extra_allowed.push(cidr(rng, v4));
        }
        let _ = s.bind_nic(b);
    }
}

fn random_rule(
    rng: &mut Rng,
    enterprise: bool,
    groups: &[GroupId],
    prefix_lists: &[sg_policy::PrefixListId],
    port_lists: &[sg_policy::PortListId],
) -> RuleSpec {
    let direction = if rng.chance(50) {
        Direction::Ingress
    } else {
        Direction::Egress
    };
    let action = if rng.chance(60) {
        Action::Accept
    } else {
        Action::Drop
    };
    let protocol = *rng.pick(&[
        Protocol::All,
        Protocol::TCP,
        Protocol::TCP,
        Protocol::UDP,
        Protocol::UDP,
        Protocol::ICMP,
        Protocol::ICMPV6,
        Protocol::GRE,
        Protocol::Number(132),
    ]);
    let tcp_udp = matches!(protocol, Protocol::Number(6 | 17));
    let ports = if !tcp_udp {
        PortSpec::Any
    } else if !port_lists.is_empty() && rng.chance(15) {
        PortSpec::List(rng.pick(port_lists).clone())
    } else {
        PortSpec::Range(port_range(rng))
    };
    let v4 = rng.chance(55);
    let peer = if !enterprise && rng.chance(12) {
        Peer::Group(rng.pick(groups).clone())
    } else if !prefix_lists.is_empty() && rng.chance(12) {
        Peer::PrefixList(rng.pick(prefix_lists).clone())
    } else {
        Peer::Cidr(cidr(rng, v4))
    };
    let mut spec = RuleSpec::new(direction, action, protocol, ports, peer.clone());
    spec.priority = if rng.chance(50) {
        *rng.pick(&[1u8, 1, 2, 50, 100])
    } else {
        1 + rng.u8() % 100
    };
    if tcp_udp && rng.chance(15) {
        spec.source_ports = Some(port_range(rng));
    }
    if rng.chance(15) {
        let fam_v4 = match &peer {
            Peer::Cidr(c) => c.addr().is_ipv4(),
            _ => rng.chance(50),
        };
        spec.local = Some(cidr(rng, fam_v4));
    }
    spec
}

/// ICMP types worth aiming at: echo, path MTU, errors, neighbour discovery.
const ICMP_TYPES: [(u8, u8); 12] = [
    (8, 0),
    (0, 0),
    (3, 4),
    (3, 3),
    (11, 0),
    (128, 0),
    (129, 0),
    (2, 0),
    (1, 4),
    (133, 0),
    (135, 0),
    (136, 0),
];

/// Fragment identifications packets are given: few, so later fragments meet
/// first fragments of the same datagram now and then, and of others too.
fn fragment_id(rng: &mut Rng) -> u32 {
    DEFAULT_IP_ID + u32::try_from(rng.below(3)).expect("small")
}

/// A random packet between addresses `state` knows of (or others): NIC
/// addresses, addresses inside the platform addresses (as source and as
/// destination, so both sides of the exemption are tried), and in IPv6 the
/// IPv4-mapped forms of the NICs' IPv4 addresses (which own nothing).
pub fn random_packet(rng: &mut Rng, state: &State) -> Packet {
    let v4 = rng.chance(55);
    let nic_addrs: Vec<IpAddr> = state
        .nics
        .values()
        .flat_map(|b| b.addresses.iter().copied())
        .filter(|a| a.is_ipv4() == v4)
        .collect();
    let platform: Vec<Cidr> = state
        .settings
        .platform_addresses
        .iter()
        .filter(|c| c.addr().is_ipv4() == v4)
        .copied()
        .collect();
    let mapped: Vec<IpAddr> = state
        .nics
        .values()
        .flat_map(|b| b.addresses.iter().copied())
        .filter_map(|a| match a {
            IpAddr::V4(a) if !v4 => Some(v4_mapped(a)),
            _ => None,
        })
        .collect();
    let pick_addr = |rng: &mut Rng| {
        if !nic_addrs.is_empty() && rng.chance(50) {
            *rng.pick(&nic_addrs)
        } else if !platform.is_empty() && rng.chance(12) {
            let c = *rng.pick(&platform);
            within(rng, &c)
        } else if !mapped.is_empty() && rng.chance(8) {
            *rng.pick(&mapped)
        } else if !v4 && rng.chance(8) {
            // Link-local and multicast, for the anti-spoofing exemptions.
            IpAddr::V6(*rng.pick(&[
                "fe80::1".parse().expect("v6"),
                "ff02::1".parse().expect("v6"),
                Ipv6Addr::UNSPECIFIED,
            ]))
        } else {
            addr(rng, v4)
        }
    };
    let src = pick_addr(rng);
    let dst = pick_addr(rng);
    let protocol = *rng.pick(&[6u8, 6, 6, 17, 17, 1, 58, 47, 132, 59]);
    let mut p = match protocol {
        6 => Packet::tcp(src, port(rng), dst, port(rng))
            .with_tcp_flags(*rng.pick(&[0x02, 0x12, 0x10, 0x11, 0x04, 0x18])),
        17 => Packet::udp(src, port(rng), dst, port(rng)),
        1 | 58 => {
            let (t, c) = *rng.pick(&ICMP_TYPES);
            let mut p = Packet::icmp(src, dst, t, c);
            p.protocol = protocol;
            // Echo identifiers from a small set, so flows meet now and then.
            p.with_icmp_id(1 + rng.u16() % 4)
        }
        _ => Packet::other(src, dst, protocol),
    };
    if p.protocol == 58 && p.icmp_type == 136 && rng.chance(80) {
        let t = if let IpAddr::V6(a) = pick_addr(rng) {
            a
        } else {
            Ipv6Addr::LOCALHOST
        };
        p = p.with_nd_target(t);
    }
    p.fragment = match rng.below(100) {
        0..=7 => Fragment::First {
            id: fragment_id(rng),
        },
        8..=15 => Fragment::Later {
            id: fragment_id(rng),
        },
        _ => Fragment::None,
    };
    p
}

/// VLAN tags for a frame now and then: one 802.1Q, one 802.1ad, or QinQ.
pub fn random_vlans(rng: &mut Rng) -> Vec<u16> {
    match rng.below(100) {
        0..=5 => vec![ETH_P_8021Q],
        6..=7 => vec![ETH_P_8021AD],
        8..=9 => vec![ETH_P_8021AD, ETH_P_8021Q],
        _ => Vec::new(),
    }
}

/// `frame` as the evaluator sees it inside `tags` VLAN tags.
pub fn tagged(frame: sg_policy::Frame, tags: usize) -> sg_policy::Frame {
    (0..tags).fold(frame, |f, _| sg_policy::Frame::Tagged(Box::new(f)))
}

/// A later fragment of first fragment `first`'s datagram (same addresses,
/// protocol and identification).
pub fn later_fragment_of(first: &Packet) -> Packet {
    let id = match first.fragment {
        Fragment::First { id } | Fragment::Later { id } => id,
        Fragment::None => DEFAULT_IP_ID,
    };
    Packet::other(first.src, first.dst, first.protocol).with_fragment(Fragment::Later { id })
}

/// The frame the data plane will see for `p` (its fragment identification,
/// else [`DEFAULT_IP_ID`]), inside the VLAN tags `vlans` (TPIDs, outermost
/// first), with random IPv4 options or IPv6 extension headers now and then
/// (the decision must not change).
pub fn spec_of(p: &Packet, vlans: &[u16], rng: &mut Rng) -> Spec {
    let (frag_offset, more, ip_id) = match p.fragment {
        Fragment::None => (0, false, DEFAULT_IP_ID),
        Fragment::First { id } => (0, true, id),
        Fragment::Later { id } => (64, true, id),
    };
    let l4 = match p.protocol {
        6 => L4::Tcp {
            sport: p.src_port,
            dport: p.dst_port,
            flags: p.tcp_flags,
        },
        17 => L4::Udp {
            sport: p.src_port,
            dport: p.dst_port,
        },
        1 => L4::Icmp {
            ty: p.icmp_type,
            code: p.icmp_code,
            id: p.icmp_id,
        },
        58 => L4::Icmpv6 {
            ty: p.icmp_type,
            code: p.icmp_code,
            id: p.icmp_id,
        },
        47 => L4::Gre,
        n => L4::Other { proto: n, len: 8 },
    };
    let l3 = match (p.src, p.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            // NOP options, 0 to 40 bytes.
            let options = if rng.chance(15) {
                vec![1; 4 * rng.below(11)]
            } else {
                Vec::new()
            };
            L3::V4 {
                src: s,
                dst: d,
                options,
                frag_offset,
                more_fragments: more,
            }
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut ext = Vec::new();
            if rng.chance(15) {
                for _ in 0..=rng.below(3) {
                    let units = u8::try_from(rng.below(3)).expect("small");
                    let choices = [
                        Ext::HopByHop { units },
                        Ext::DestOpts { units },
                        Ext::Routing,
                        Ext::Ah { units },
                    ];
                    ext.push(*rng.pick(&choices));
                }
            }
            if p.fragment != Fragment::None {
                ext.push(Ext::Fragment {
                    offset: frag_offset,
                    more,
                });
            }
            L3::V6 {
                src: s,
                dst: d,
                ext,
            }
        }
        _ => panic!("mixed families"),
    };
    let mut spec = Spec::new(l3, l4);
    spec.vlans = vlans.to_vec();
    spec.ip_id = ip_id;
    if let Some(t) = p.nd_target {
        spec.tail = t.octets().to_vec();
    }
    if let Some(q) = &p.quoted {
        spec.tail = quote_bytes(q);
    }
    spec
}

/// What an ICMP error quotes of `q`: its IP header and the first 8 bytes
/// after it (RFC 792), as a router would send them.
pub fn quote_bytes(q: &Quoted) -> Vec<u8> {
    let inner = Packet {
        src_port: q.src_port,
        dst_port: q.dst_port,
        icmp_type: q.icmp_type,
        icmp_id: q.icmp_id,
        tcp_flags: 0x02,
        ..Packet::other(q.src, q.dst, q.protocol)
    };
    let mut quiet = Rng::new(1);
    let mut spec = spec_of(&inner, &[], &mut quiet);
    if let L3::V4 { options, .. } = &mut spec.l3 {
        options.clear();
    }
    if let L3::V6 { ext, .. } = &mut spec.l3 {
        ext.clear();
    }
    let built = crate::packet::build(&spec);
    let l4 = built.l4_off.expect("an upper-layer header");
    built.bytes[built.l3_off..(l4 + 8).min(built.bytes.len())].to_vec()
}

/// The header `p` would be quoted as.
pub fn quoted_of(p: &Packet) -> Quoted {
    Quoted {
        src: p.src,
        dst: p.dst,
        protocol: p.protocol,
        src_port: p.src_port,
        dst_port: p.dst_port,
        icmp_type: p.icmp_type,
        icmp_id: p.icmp_id,
    }
}

/// A packet that belongs with `p`, for session sequences, and whether it
/// crosses the NIC the other way: a reply (ports swapped, TCP handshake,
/// data, FIN and RST flags, an echo reply, now and then the responder's own
/// echo request with the initiator's identifier, now and then a first
/// fragment), more of the same direction, or an ICMP error about `p` sent
/// back to its source (now and then to someone else).
pub fn follow_up(rng: &mut Rng, p: &Packet, state: &State) -> (Packet, bool) {
    const TCP_FLAGS: [u8; 7] = [0x12, 0x10, 0x18, 0x11, 0x04, 0x02, 0x14];
    let mut next = p.clone();
    next.fragment = Fragment::None;
    next.nd_target = None;
    next.quoted = None;
    match rng.below(100) {
        // A reply.
        0..=44 => {
            std::mem::swap(&mut next.src, &mut next.dst);
            std::mem::swap(&mut next.src_port, &mut next.dst_port);
            next.tcp_flags = *rng.pick(&TCP_FLAGS);
            // The responder's echo request with the same identifier is a new
            // flow (SPEC §4), not part of the initiator's session.
            if p.is_echo_request() && !rng.chance(30) {
                next.icmp_type = if p.src.is_ipv4() { 0 } else { 129 };
            }
            if rng.chance(8) {
                next.fragment = Fragment::First {
                    id: fragment_id(rng),
                };
            }
            (next, true)
        }
        // More of the same.
        45..=74 => {
            next.tcp_flags = *rng.pick(&TCP_FLAGS);
            (next, false)
        }
        // An ICMP error about it, back to its sender.
        _ => {
            let v4 = p.src.is_ipv4();
            let (ty, code) = *rng.pick(if v4 {
                &[(3u8, 3u8), (3, 1), (11, 0), (12, 0), (3, 4)][..]
            } else {
                &[(1u8, 4u8), (1, 1), (3, 0), (4, 0), (2, 0)][..]
            });
            let from = if rng.chance(50) { p.dst } else { addr(rng, v4) };
            let to = if rng.chance(85) {
                p.src
            } else {
                random_packet(rng, state).src
            };
            let to = if to.is_ipv4() == v4 { to } else { p.src };
            let quoted = quoted_of(p);
            (Packet::icmp_error(from, to, ty, code, quoted), true)
        }
    }
}

/// A small change to `s`, as operators make them between packets of open
/// flows: revoke a rule, authorize one, or flip the port-25 block.
pub fn mutate(rng: &mut Rng, s: &mut State) -> &'static str {
    let groups: Vec<GroupId> = s.groups.keys().cloned().collect();
    if groups.is_empty() {
        return "nothing";
    }
    let g = rng.pick(&groups).clone();
    match rng.below(10) {
        0..=5 => {
            let rules: Vec<_> = s.groups[&g].rules.iter().map(|r| r.id.clone()).collect();
            if rules.is_empty() {
                return "nothing";
            }
            let r = rng.pick(&rules).clone();
            s.revoke(&g, &r).expect("revoke");
            "revoked a rule"
        }
        6..=8 => {
            let enterprise = s.groups[&g].kind == sg_policy::GroupType::Enterprise;
            let spec = random_rule(rng, enterprise, &groups, &[], &[]);
            if s.authorize(&g, spec).is_ok() {
                "authorized a rule"
            } else {
                "nothing"
            }
        }
        _ => {
            let mut settings = s.settings.clone();
            settings.block_port_25 = !settings.block_port_25;
            s.set_settings(settings).expect("settings");
            "flipped the port-25 block"
        }
    }
}
