//! The parser's oracle: how a frame should be counted, written straight from
//! the counter definitions in `sg_common::counter` with plain slice indexing,
//! independently of the eBPF parser.

use sg_common::counter::{
    ARP, BAD_ARP, BAD_IPV4, BAD_IPV6, BAD_IPV6_EXT, BAD_IPV6_FRAG, BAD_L2, BAD_L4, FRAGMENT, GRE,
    ICMP, ICMPV6, IPV4, IPV4_OPTIONS, IPV6, IPV6_EXT, MALFORMED, MAX_IPV6_EXT, NON_IP, OTHER_L4,
    PACKETS, SLOTS, TCP, UDP, VLAN,
};

/// Which counters one frame increments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub class: u32,
    pub bad: Option<u32>,
    pub markers: Vec<u32>,
}

impl Expected {
    /// The per-counter increments this frame causes, indexed by counter.
    pub fn deltas(&self) -> [u64; SLOTS as usize] {
        let mut d = [0u64; SLOTS as usize];
        d[PACKETS as usize] += 1;
        d[self.class as usize] += 1;
        if let Some(b) = self.bad {
            d[b as usize] += 1;
        }
        for &m in &self.markers {
            d[m as usize] += 1;
        }
        d
    }
}

/// The largest offset the data plane reads at (`sg-ebpf` `packet::MAX_OFFSET`):
/// headers starting beyond it are treated as truncated.
const MAX_OFFSET: usize = 1024;

struct Frame<'a> {
    b: &'a [u8],
    markers: Vec<u32>,
}

impl Frame<'_> {
    fn get(&self, off: usize, len: usize) -> Option<&[u8]> {
        (off <= MAX_OFFSET && off + len <= self.b.len()).then(|| &self.b[off..off + len])
    }

    fn be16(&self, off: usize) -> Option<u16> {
        self.get(off, 2).map(|s| u16::from_be_bytes([s[0], s[1]]))
    }

    fn done(self, class: u32) -> Expected {
        Expected {
            class,
            bad: None,
            markers: self.markers,
        }
    }

    fn bad(self, why: u32) -> Expected {
        Expected {
            class: MALFORMED,
            bad: Some(why),
            markers: self.markers,
        }
    }
}

/// Classifies `frame` the way the counters must.
pub fn classify(frame: &[u8]) -> Expected {
    let mut f = Frame {
        b: frame,
        markers: Vec::new(),
    };
    let Some(mut ethertype) = f.be16(12) else {
        return f.bad(BAD_L2);
    };
    let mut off = 14;
    let is_tag = |t: u16| t == 0x8100 || t == 0x88A8;
    let mut tags = 0;
    while is_tag(ethertype) {
        if tags == 2 {
            return f.bad(BAD_L2);
        }
        let Some(inner) = f.be16(off + 2) else {
            return f.bad(BAD_L2);
        };
        if tags == 0 {
            f.markers.push(VLAN);
        }
        tags += 1;
        ethertype = inner;
        off += 4;
    }
    match ethertype {
        0x0800 => ipv4(f, off),
        0x86DD => ipv6(f, off),
        0x0806 => {
            if f.get(off, 28).is_some() {
                f.done(ARP)
            } else {
                f.bad(BAD_ARP)
            }
        }
        _ => f.done(NON_IP),
    }
}

fn ipv4(mut f: Frame<'_>, off: usize) -> Expected {
    let Some(h) = f.get(off, 20).map(<[u8]>::to_vec) else {
        return f.bad(BAD_IPV4);
    };
    let ihl = usize::from(h[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
    if h[0] >> 4 != 4 || ihl < 20 || total < ihl || off + total > f.b.len() {
        return f.bad(BAD_IPV4);
    }
    f.markers.push(IPV4);
    if ihl > 20 {
        f.markers.push(IPV4_OPTIONS);
    }
    if u16::from_be_bytes([h[6], h[7]]) & 0x1fff != 0 {
        return f.done(FRAGMENT);
    }
    upper(f, h[9], off + ihl, off + total)
}

fn ipv6(mut f: Frame<'_>, off: usize) -> Expected {
    let Some(h) = f.get(off, 40).map(<[u8]>::to_vec) else {
        return f.bad(BAD_IPV6);
    };
    let end = off + 40 + usize::from(u16::from_be_bytes([h[4], h[5]]));
    if h[0] >> 4 != 6 || end > f.b.len() {
        return f.bad(BAD_IPV6);
    }
    f.markers.push(IPV6);
    let mut next = h[6];
    let mut off = off + 40;
    let mut walked = 0;
    let mut fragment_headers = 0;
    while matches!(next, 0 | 43 | 44 | 51 | 60) {
        if walked == MAX_IPV6_EXT {
            return f.bad(BAD_IPV6_EXT);
        }
        if walked == 0 {
            f.markers.push(IPV6_EXT);
        }
        walked += 1;
        let Some(e) = f.get(off, 2).map(<[u8]>::to_vec) else {
            return f.bad(BAD_IPV6_EXT);
        };
        let len = match next {
            44 => 8,
            51 => (usize::from(e[1]) + 2) * 4,
            _ => (usize::from(e[1]) + 1) * 8,
        };
        if off + len > end {
            return f.bad(BAD_IPV6_EXT);
        }
        if next == 44 {
            // One fragment header per datagram (SPEC §3 item 8).
            fragment_headers += 1;
            if fragment_headers > 1 {
                return f.bad(BAD_IPV6_FRAG);
            }
            let Some(word) = f.be16(off + 2) else {
                return f.bad(BAD_IPV6_EXT);
            };
            if word >> 3 != 0 {
                return f.done(FRAGMENT);
            }
        }
        next = e[0];
        off += len;
    }
    upper(f, next, off, end)
}

fn upper(f: Frame<'_>, proto: u8, off: usize, end: usize) -> Expected {
    let (class, need) = match proto {
        6 => (TCP, 20),
        17 => (UDP, 8),
        1 => (ICMP, 8),
        58 => (ICMPV6, 8),
        47 => (GRE, 4),
        _ => return f.done(OTHER_L4),
    };
    if off + need > end || f.get(off, 4).is_none() {
        return f.bad(BAD_L4);
    }
    if proto == 6 && f.get(off + 12, 1).is_none_or(|d| d[0] >> 4 < 5) {
        return f.bad(BAD_L4);
    }
    f.done(class)
}
