//! What a compiled table and a NIC's own addresses put into the maps, keyed
//! as the kernel keys them, minus the table id (which says whose table and
//! which slot). One definition serves writing them (`writer.rs`), reading
//! them back (adoption, `verify`), so the two cannot drift apart.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
};

use sg_common::{
    conntrack::timeout,
    policy::{
        FIELD_LOCAL, FIELD_PEER, MAX_INTERVALS, OWN_KEY_PREFIX_BITS, PortBounds, RuleBits,
        Settings, TableMeta, bits_kind, settings_flags, verdict,
    },
    reason,
};

use sg_policy::compile::{Prefix, Table, mapped};
use sg_policy::{Cidr, SessionTimeouts};

/// A rule-bits entry: (kind, index) of its `BitsKey`.
pub type BitsIndex = (u16, u16);
/// An IPv4 trie entry: (field, prefix length with the 32 table and field bits, address).
pub type Addr4 = (u32, u32, [u8; 4]);
/// An IPv6 trie entry: (field, prefix length with the 32 table and field bits, address).
pub type Addr6 = (u32, u32, [u8; 16]);
/// An own-address trie entry: (prefix length as keyed, family, address).
pub type OwnEntry = (u32, u32, [u8; 16]);

/// Everything one table slot holds in the maps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableImage {
    pub meta: TableMeta,
    pub bits: BTreeMap<BitsIndex, RuleBits>,
    /// By field (0 destination, 1 source).
    pub bounds: BTreeMap<u32, PortBounds>,
    pub addr4: BTreeMap<Addr4, RuleBits>,
    pub addr6: BTreeMap<Addr6, RuleBits>,
}

/// The keys of a [`TableImage`]: what a slot holds, without the values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableKeys {
    pub bits: BTreeSet<BitsIndex>,
    pub bounds: BTreeSet<u32>,
    pub addr4: BTreeSet<Addr4>,
    pub addr6: BTreeSet<Addr6>,
}

impl TableKeys {
    pub fn len(&self) -> usize {
        self.bits.len() + self.bounds.len() + self.addr4.len() + self.addr6.len()
    }

    /// Trie entries, IPv4 and IPv6.
    pub fn prefixes(&self) -> (usize, usize) {
        (self.addr4.len(), self.addr6.len())
    }
}

/// How many entries a compiled table takes in the maps that can fill up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageCounts {
    pub bits: usize,
    pub addr4: usize,
    pub addr6: usize,
}

/// [`ImageCounts`] of compiled table `t`.
pub fn table_image_counts(t: &Table) -> ImageCounts {
    let image = table_image(t);
    ImageCounts {
        bits: image.bits.len(),
        addr4: image.addr4.len(),
        addr6: image.addr6.len(),
    }
}

impl TableImage {
    pub fn keys(&self) -> TableKeys {
        TableKeys {
            bits: self.bits.keys().copied().collect(),
            bounds: self.bounds.keys().copied().collect(),
            addr4: self.addr4.keys().copied().collect(),
            addr6: self.addr6.keys().copied().collect(),
        }
    }

    /// The header of a table that decides nothing but drop: what a NIC
    /// whose policy cannot be put in force is left with (fail closed).
    pub fn closed_meta() -> TableMeta {
        TableMeta {
            words: 0,
            n_rules: 0,
            default_verdict: verdict::DROP,
            default_reason: reason::NO_TABLE,
            accept: RuleBits::EMPTY,
        }
    }
}

/// The image of compiled table `t`.
pub fn table_image(t: &Table) -> TableImage {
    let mut bits: BTreeMap<BitsIndex, RuleBits> = t
        .proto
        .iter()
        .map(|(p, b)| ((bits_kind::PROTO, *p), *b))
        .collect();
    let mut bounds = BTreeMap::new();
    for (field, kind, none, ports) in [
        (0u32, bits_kind::DPORT, bits_kind::DPORT_NONE, &t.dport),
        (1, bits_kind::SPORT, bits_kind::SPORT_NONE, &t.sport),
    ] {
        for (i, b) in ports.bits.iter().enumerate() {
            bits.insert((kind, u16::try_from(i).expect("intervals < 65536")), *b);
        }
        bits.insert((none, 0), ports.none);
        let mut pb = PortBounds {
            n: u32::try_from(ports.bounds.len()).expect("checked by the compiler"),
            bounds: [0; MAX_INTERVALS as usize],
            pad: 0,
        };
        pb.bounds[..ports.bounds.len()].copy_from_slice(&ports.bounds);
        bounds.insert(field, pb);
    }
    let mut addr4 = BTreeMap::new();
    let mut addr6 = BTreeMap::new();
    for (field, prefixes) in [(FIELD_PEER, &t.peer), (FIELD_LOCAL, &t.local)] {
        for Prefix { cidr, bits } in prefixes {
            let len = 32 + u32::from(cidr.len());
            match cidr.addr() {
                IpAddr::V4(a) => addr4.insert((field, len, a.octets()), *bits),
                IpAddr::V6(a) => addr6.insert((field, len, a.octets()), *bits),
            };
        }
    }
    TableImage {
        meta: TableMeta {
            words: t.words(),
            n_rules: u32::try_from(t.n_rules).expect("checked by the compiler"),
            default_verdict: t.default_verdict,
            default_reason: t.default_reason,
            accept: t.accept,
        },
        bits,
        bounds,
        addr4,
        addr6,
    }
}

/// The own-address entries of a NIC's addresses and extra allowed prefixes:
/// IPv4 mapped (`::ffff:a.b.c.d`) with the 96 mapping bits counted, and the
/// family beside it so an IPv6 prefix never covers IPv4.
pub fn own_image(own: &[Cidr]) -> BTreeSet<OwnEntry> {
    own.iter()
        .map(|c| {
            let (family, extra) = if c.addr().is_ipv4() { (4, 96) } else { (6, 0) };
            (
                OWN_KEY_PREFIX_BITS + extra + u32::from(c.len()),
                family,
                mapped(c.addr()),
            )
        })
        .collect()
}

/// What the settings put in the maps: the settings entry, and the platform
/// tries' entries (prefix length, address).
pub struct SettingsImage {
    pub value: Settings,
    pub plat4: BTreeMap<(u32, [u8; 4]), u32>,
    pub plat6: BTreeMap<(u32, [u8; 16]), u32>,
}

/// The image of the agent's settings.
pub fn settings_image(settings: &sg_policy::Settings) -> SettingsImage {
    let platform = &settings.platform_addresses;
    let mut flags = if settings.block_port_25 {
        settings_flags::BLOCK_PORT_25
    } else {
        0
    };
    if !platform.is_empty() {
        flags |= settings_flags::PLATFORM_ADDRESSES;
    }
    let mut plat4 = BTreeMap::new();
    let mut plat6 = BTreeMap::new();
    for c in platform {
        let len = u32::from(c.len());
        match c.addr() {
            IpAddr::V4(a) => plat4.insert((len, a.octets()), 1),
            IpAddr::V6(a) => plat6.insert((len, a.octets()), 1),
        };
    }
    SettingsImage {
        value: Settings {
            flags,
            pad: 0,
            timeouts_ns: timeouts_ns(&settings.session_timeouts),
            fragment_timeout_ns: u64::from(settings.fragment_timeout_secs) * 1_000_000_000,
        },
        plat4,
        plat6,
    }
}

/// The kernel's timeout table (`conntrack::timeout` classes) in nanoseconds.
fn timeouts_ns(t: &SessionTimeouts) -> [u64; timeout::COUNT] {
    let ns = |secs: u32| u64::from(secs) * 1_000_000_000;
    let mut out = [0; timeout::COUNT];
    out[timeout::TCP_HANDSHAKE] = ns(t.tcp_handshake_secs);
    out[timeout::TCP_ESTABLISHED] = ns(t.tcp_established_secs);
    out[timeout::TCP_CLOSING] = ns(t.tcp_closing_secs);
    out[timeout::OTHER] = ns(t.other_secs);
    out
}
