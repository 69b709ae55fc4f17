//! Crafted frames with known header boundaries.

use std::net::{Ipv4Addr, Ipv6Addr};

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_IPV6: u16 = 0x86DD;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88A8;
/// An untagged Ethernet header.
pub const MIN_L2: usize = 14;

/// An upper-layer header.
#[derive(Debug, Clone)]
pub enum L4 {
    Tcp {
        sport: u16,
        dport: u16,
        flags: u8,
    },
    Udp {
        sport: u16,
        dport: u16,
    },
    /// ICMP (IPv4): type, code, echo identifier.
    Icmp {
        ty: u8,
        code: u8,
        id: u16,
    },
    /// ICMPv6.
    Icmpv6 {
        ty: u8,
        code: u8,
        id: u16,
    },
    Gre,
    /// Any other protocol number, with `len` bytes of header-less payload.
    Other {
        proto: u8,
        len: usize,
    },
}

impl L4 {
    pub fn proto(&self) -> u8 {
        match self {
            Self::Tcp { .. } => 6,
            Self::Udp { .. } => 17,
            Self::Icmp { .. } => 1,
            Self::Icmpv6 { .. } => 58,
            Self::Gre => 47,
            Self::Other { proto, .. } => *proto,
        }
    }

    /// The header's bytes (checksums left zero: nothing on the path checks them).
    pub fn bytes(&self) -> Vec<u8> {
        match *self {
            Self::Tcp {
                sport,
                dport,
                flags,
            } => {
                let mut h = vec![0u8; 20];
                h[0..2].copy_from_slice(&sport.to_be_bytes());
                h[2..4].copy_from_slice(&dport.to_be_bytes());
                h[12] = 5 << 4;
                h[13] = flags;
                h[14..16].copy_from_slice(&64240u16.to_be_bytes());
                h
            }
            Self::Udp { sport, dport } => {
                let mut h = vec![0u8; 8];
                h[0..2].copy_from_slice(&sport.to_be_bytes());
                h[2..4].copy_from_slice(&dport.to_be_bytes());
                h[4..6].copy_from_slice(&8u16.to_be_bytes());
                h
            }
            Self::Icmp { ty, code, id } | Self::Icmpv6 { ty, code, id } => {
                let mut h = vec![ty, code, 0, 0, 0, 0, 0, 1];
                h[4..6].copy_from_slice(&id.to_be_bytes());
                h
            }
            Self::Gre => vec![0, 0, 0x08, 0x00],
            Self::Other { len, .. } => vec![0xab; len],
        }
    }
}

/// An IPv6 extension header.
#[derive(Debug, Clone, Copy)]
pub enum Ext {
    /// Hop-by-hop options of `(units + 1) * 8` bytes.
    HopByHop {
        units: u8,
    },
    Routing,
    DestOpts {
        units: u8,
    },
    Fragment {
        offset: u16,
        more: bool,
    },
    /// Authentication header with `(units + 2) * 4` bytes.
    Ah {
        units: u8,
    },
}

impl Ext {
    fn number(self) -> u8 {
        match self {
            Self::HopByHop { .. } => 0,
            Self::Routing => 43,
            Self::Fragment { .. } => 44,
            Self::Ah { .. } => 51,
            Self::DestOpts { .. } => 60,
        }
    }

    /// The header's bytes; a fragment header carries identification `id`.
    fn bytes(self, next: u8, id: u32) -> Vec<u8> {
        match self {
            Self::HopByHop { units } | Self::DestOpts { units } => {
                let mut h = vec![0u8; (usize::from(units) + 1) * 8];
                h[0] = next;
                h[1] = units;
                // PadN option filling the rest.
                h[2] = 1;
                h[3] = u8::try_from(h.len() - 4).unwrap_or(0);
                h
            }
            Self::Routing => {
                // Type 0 segments-left 0: a no-op routing header.
                vec![next, 0, 0, 0, 0, 0, 0, 0]
            }
            Self::Fragment { offset, more } => {
                let mut h = vec![next, 0, 0, 0];
                let word = (offset << 3) | u16::from(more);
                h[2..4].copy_from_slice(&word.to_be_bytes());
                h.extend_from_slice(&id.to_be_bytes());
                h
            }
            Self::Ah { units } => {
                let mut h = vec![0u8; (usize::from(units) + 2) * 4];
                h[0] = next;
                h[1] = units;
                h
            }
        }
    }
}

/// The network layer.
#[derive(Debug, Clone)]
pub enum L3 {
    V4 {
        src: Ipv4Addr,
        dst: Ipv4Addr,
        /// Options, padded by the builder to a multiple of 4 bytes.
        options: Vec<u8>,
        /// Fragment offset in 8-byte units.
        frag_offset: u16,
        more_fragments: bool,
    },
    V6 {
        src: Ipv6Addr,
        dst: Ipv6Addr,
        ext: Vec<Ext>,
    },
    Arp,
    /// An Ethernet/IPv4 ARP request from this sender address.
    ArpFrom([u8; 4]),
    /// Some other ethertype, with `len` bytes of payload.
    Raw {
        ethertype: u16,
        len: usize,
    },
}

impl L3 {
    pub fn v4(src: [u8; 4], dst: [u8; 4]) -> Self {
        Self::V4 {
            src: src.into(),
            dst: dst.into(),
            options: Vec::new(),
            frag_offset: 0,
            more_fragments: false,
        }
    }

    pub fn v6(src: &str, dst: &str) -> Self {
        Self::V6 {
            src: src.parse().expect("IPv6 literal"),
            dst: dst.parse().expect("IPv6 literal"),
            ext: Vec::new(),
        }
    }
}

/// A whole frame to build.
#[derive(Debug, Clone)]
pub struct Spec {
    /// TPIDs of VLAN tags, outermost first.
    pub vlans: Vec<u16>,
    pub l3: L3,
    pub l4: Option<L4>,
    /// Bytes right after the upper-layer header (e.g. a neighbour
    /// advertisement's target address).
    pub tail: Vec<u8>,
    /// Filler payload bytes after that.
    pub payload: usize,
    /// The datagram's identification: the IPv4 header's (low 16 bits) and
    /// every IPv6 fragment header's.
    pub ip_id: u32,
}

/// The identification [`Spec::new`] gives every datagram.
pub const DEFAULT_IP_ID: u32 = 0x1234;

impl Spec {
    pub fn new(l3: L3, l4: L4) -> Self {
        Self {
            vlans: Vec::new(),
            l3,
            l4: Some(l4),
            tail: Vec::new(),
            payload: 0,
            ip_id: DEFAULT_IP_ID,
        }
    }
}

/// A built frame and where its headers start.
#[derive(Debug, Clone)]
pub struct Built {
    pub bytes: Vec<u8>,
    /// Start of the IP (or ARP) header.
    pub l3_off: usize,
    /// Start of each IPv6 extension header.
    pub ext_offs: Vec<usize>,
    /// Start of the upper-layer header, if there is one.
    pub l4_off: Option<usize>,
    pub ethertype: u16,
}

/// Builds `spec` into frame bytes.
pub fn build(spec: &Spec) -> Built {
    let mut b = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1];
    let ethertype = match spec.l3 {
        L3::V4 { .. } => ETH_P_IP,
        L3::V6 { .. } => ETH_P_IPV6,
        L3::Arp | L3::ArpFrom(_) => ETH_P_ARP,
        L3::Raw { ethertype, .. } => ethertype,
    };
    for &tpid in &spec.vlans {
        b.extend_from_slice(&tpid.to_be_bytes());
        b.extend_from_slice(&[0x00, 0x64]); // TCI: VLAN 100
    }
    b.extend_from_slice(&ethertype.to_be_bytes());
    let l3_off = b.len();
    let mut l4 = spec.l4.as_ref().map(L4::bytes).unwrap_or_default();
    l4.extend_from_slice(&spec.tail);
    let proto = spec.l4.as_ref().map_or(59, L4::proto);
    let payload = vec![0x5a; spec.payload];
    let mut ext_offs = Vec::new();
    let mut l4_off = None;
    match &spec.l3 {
        L3::V4 {
            src,
            dst,
            options,
            frag_offset,
            more_fragments,
        } => {
            let mut opts = options.clone();
            while opts.len() % 4 != 0 {
                opts.push(0); // end-of-options padding
            }
            let ihl = 20 + opts.len();
            let total = ihl + l4.len() + payload.len();
            let mut h = vec![0u8; 20];
            h[0] = 0x40 | u8::try_from(ihl / 4).expect("IHL fits");
            h[2..4].copy_from_slice(&u16::try_from(total).expect("fits").to_be_bytes());
            #[expect(clippy::cast_possible_truncation, reason = "IPv4 ids are 16 bits")]
            h[4..6].copy_from_slice(&(spec.ip_id as u16).to_be_bytes());
            let frags = (u16::from(*more_fragments) << 13) | frag_offset;
            h[6..8].copy_from_slice(&frags.to_be_bytes());
            h[8] = 64;
            h[9] = proto;
            h[12..16].copy_from_slice(&src.octets());
            h[16..20].copy_from_slice(&dst.octets());
            b.extend_from_slice(&h);
            b.extend_from_slice(&opts);
            l4_off = spec.l4.as_ref().map(|_| l3_off + ihl);
        }
        L3::V6 { src, dst, ext } => {
            let mut chain = Vec::new();
            let mut offs = Vec::new();
            for (i, e) in ext.iter().enumerate() {
                let next = ext.get(i + 1).map_or(proto, |n| n.number());
                offs.push(chain.len());
                chain.extend(e.bytes(next, spec.ip_id));
            }
            let payload_len = chain.len() + l4.len() + payload.len();
            let mut h = vec![0u8; 40];
            h[0] = 0x60;
            h[4..6].copy_from_slice(&u16::try_from(payload_len).expect("fits").to_be_bytes());
            h[6] = ext.first().map_or(proto, |e| e.number());
            h[7] = 64;
            h[8..24].copy_from_slice(&src.octets());
            h[24..40].copy_from_slice(&dst.octets());
            b.extend_from_slice(&h);
            ext_offs = offs.iter().map(|o| l3_off + 40 + o).collect();
            l4_off = spec.l4.as_ref().map(|_| l3_off + 40 + chain.len());
            b.extend_from_slice(&chain);
        }
        L3::Arp | L3::ArpFrom(_) => {
            let sender = match spec.l3 {
                L3::ArpFrom(s) => s,
                _ => [10, 0, 0, 1],
            };
            // Ethernet/IPv4 ARP request, 28 bytes.
            b.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
            b.extend_from_slice(&[0x02, 0, 0, 0, 0, 1]);
            b.extend_from_slice(&sender);
            b.extend_from_slice(&[0, 0, 0, 0, 0, 0, 10, 0, 0, 2]);
            l4.clear();
        }
        L3::Raw { len, .. } => b.extend(std::iter::repeat_n(0x11, *len)),
    }
    b.extend_from_slice(&l4);
    b.extend_from_slice(&payload);
    Built {
        bytes: b,
        l3_off,
        ext_offs,
        l4_off,
        ethertype,
    }
}

impl Built {
    /// The frame cut to `len` bytes, headers untouched (so IP length fields
    /// now claim more than the frame holds).
    pub fn cut(&self, len: usize) -> Vec<u8> {
        self.bytes[..len].to_vec()
    }

    /// The frame cut to `len` bytes with the IP length field rewritten to end
    /// the datagram there (where the field itself survived the cut): a
    /// consistent packet whose inner headers are truncated.
    pub fn cut_consistent(&self, len: usize) -> Vec<u8> {
        let mut b = self.cut(len);
        let l3 = self.l3_off;
        match self.ethertype {
            ETH_P_IP if len >= l3 + 4 => {
                let total = u16::try_from(len - l3).expect("fits");
                b[l3 + 2..l3 + 4].copy_from_slice(&total.to_be_bytes());
            }
            ETH_P_IPV6 if len >= l3 + 40 => {
                let payload = u16::try_from(len - l3 - 40).expect("fits");
                b[l3 + 4..l3 + 6].copy_from_slice(&payload.to_be_bytes());
            }
            _ => {}
        }
        b
    }
}
