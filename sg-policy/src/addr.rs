//! Addresses and CIDRs: parsing, normalisation and containment.
//!
//! SPEC §1: a bare address means /32 or /128; IPv6 is stored compressed
//! (`2408:180:0000::1` → `2408:180::1`); a CIDR with host bits set is an error
//! (**decided** in SPEC, not silently masked).

use std::{
    cmp::Ordering,
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    str::FromStr,
};

use serde::{Deserialize, Serialize};

use super::error::PolicyError;

/// IPv4 or IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Family {
    #[serde(rename = "IPv4")]
    Ipv4,
    #[serde(rename = "IPv6")]
    Ipv6,
}

impl Family {
    /// The family of an address.
    pub fn of(addr: &IpAddr) -> Self {
        if addr.is_ipv4() {
            Self::Ipv4
        } else {
            Self::Ipv6
        }
    }

    /// Prefix length of a single address.
    pub fn max_len(self) -> u8 {
        match self {
            Self::Ipv4 => 32,
            Self::Ipv6 => 128,
        }
    }
}

impl Family {
    /// `ipv4` or `ipv6` (any case), naming `field` when it is neither.
    pub fn parse(field: &str, text: &str) -> Result<Self, PolicyError> {
        super::error::one_of(field, text, &[("ipv4", Self::Ipv4), ("ipv6", Self::Ipv6)])
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ipv4 => "IPv4",
            Self::Ipv6 => "IPv6",
        })
    }
}

/// A normalised CIDR: the address is the network address (no host bits).
///
/// Ordered by family, then address, then prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Cidr {
    addr: IpAddr,
    len: u8,
}

impl Cidr {
    /// A CIDR from a network address and a prefix length; `None` when the length
    /// is too long for the family or host bits are set.
    pub fn new(addr: IpAddr, len: u8) -> Option<Self> {
        let max = Family::of(&addr).max_len();
        if len > max {
            return None;
        }
        let cidr = Self { addr, len };
        (cidr.network_bits() == bits(&addr)).then_some(cidr)
    }

    /// The CIDR of exactly one address (/32 or /128).
    pub fn host(addr: IpAddr) -> Self {
        Self {
            addr,
            len: Family::of(&addr).max_len(),
        }
    }

    /// Everything of one family: `0.0.0.0/0` or `::/0`.
    pub fn any(family: Family) -> Self {
        match family {
            Family::Ipv4 => Self {
                addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                len: 0,
            },
            Family::Ipv6 => Self {
                addr: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                len: 0,
            },
        }
    }

    /// Parses `a.b.c.d`, `a.b.c.d/n`, an IPv6 address or IPv6 CIDR, naming `field`
    /// in the error. Surrounding white space is ignored.
    pub fn parse(field: &str, text: &str) -> Result<Self, PolicyError> {
        let trimmed = text.trim();
        let (addr_text, len_text) = match trimmed.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (trimmed, None),
        };
        let addr = IpAddr::from_str(addr_text).map_err(|_| {
            PolicyError::invalid(field, text, "not an IPv4 or IPv6 address or CIDR")
        })?;
        if let IpAddr::V6(v6) = addr
            && v6.to_ipv4_mapped().is_some()
        {
            return Err(PolicyError::invalid(
                field,
                text,
                "IPv4-mapped IPv6 addresses never match a packet; write the IPv4 address",
            ));
        }
        let max = Family::of(&addr).max_len();
        let len = match len_text {
            None => max,
            Some(l) => {
                if l.is_empty() || !l.bytes().all(|b| b.is_ascii_digit()) || l.len() > 3 {
                    return Err(PolicyError::invalid(
                        field,
                        text,
                        "the prefix length is not a number",
                    ));
                }
                let n: u16 = l.parse().unwrap_or(u16::MAX);
                if n > u16::from(max) {
                    return Err(PolicyError::out_of_range(
                        format!("{field} prefix length"),
                        n,
                        format!("0..={max} for {}", Family::of(&addr)),
                    ));
                }
                u8::try_from(n).unwrap_or(max)
            }
        };
        let cidr = Self { addr, len };
        if cidr.network_bits() != bits(&addr) {
            let network = Self {
                addr: from_bits(Family::of(&addr), cidr.network_bits()),
                len,
            };
            return Err(PolicyError::invalid(
                field,
                text,
                format!(
                    "host bits are set; the network is {}",
                    network.to_cidr_string()
                ),
            ));
        }
        Ok(cidr)
    }

    /// The network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    #[expect(
        clippy::len_without_is_empty,
        reason = "a prefix length, not a container size"
    )]
    pub fn len(&self) -> u8 {
        self.len
    }

    /// The address family.
    pub fn family(&self) -> Family {
        Family::of(&self.addr)
    }

    /// Whether the CIDR holds a single address.
    pub fn is_host(&self) -> bool {
        self.len == self.family().max_len()
    }

    /// Whether `ip` lies in the CIDR. An IPv4 CIDR never holds an IPv6 address,
    /// nor the reverse (SPEC §3 step 5).
    pub fn contains(&self, ip: &IpAddr) -> bool {
        Family::of(ip) == self.family() && (bits(ip) & self.mask()) == bits(&self.addr)
    }

    /// The network of length `len` holding this one (itself when `len` is
    /// its length or longer).
    #[must_use]
    pub fn widened(&self, len: u8) -> Self {
        if len >= self.len {
            return *self;
        }
        let wide = Self {
            addr: self.addr,
            len,
        };
        Self {
            addr: from_bits(self.family(), bits(&self.addr) & wide.mask()),
            len,
        }
    }

    /// Whether every address of `other` lies in `self`.
    pub fn contains_cidr(&self, other: &Cidr) -> bool {
        other.family() == self.family() && other.len >= self.len && self.contains(&other.addr)
    }

    /// The first and last address as integers (IPv4 in the low 32 bits).
    pub fn bounds(&self) -> (u128, u128) {
        let start = bits(&self.addr);
        (start, start | (!self.mask() & family_all(self.family())))
    }

    /// Always written `addr/len`, host routes included.
    pub fn to_cidr_string(&self) -> String {
        format!("{}/{}", self.addr, self.len)
    }

    fn mask(&self) -> u128 {
        let all = family_all(self.family());
        let host_bits = u32::from(self.family().max_len() - self.len);
        if host_bits >= 128 {
            0
        } else {
            (all >> host_bits << host_bits) & all
        }
    }

    fn network_bits(&self) -> u128 {
        bits(&self.addr) & self.mask()
    }
}

fn family_all(family: Family) -> u128 {
    match family {
        Family::Ipv4 => u128::from(u32::MAX),
        Family::Ipv6 => u128::MAX,
    }
}

/// An address as an integer (IPv4 in the low 32 bits).
pub fn bits(addr: &IpAddr) -> u128 {
    match addr {
        IpAddr::V4(a) => u128::from(u32::from(*a)),
        IpAddr::V6(a) => u128::from(*a),
    }
}

fn from_bits(family: Family, value: u128) -> IpAddr {
    match family {
        Family::Ipv4 => IpAddr::V4(Ipv4Addr::from(u32::try_from(value).unwrap_or(0))),
        Family::Ipv6 => IpAddr::V6(Ipv6Addr::from(value)),
    }
}

impl PartialOrd for Cidr {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Cidr {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.family(), bits(&self.addr), self.len).cmp(&(
            other.family(),
            bits(&other.addr),
            other.len,
        ))
    }
}

/// Written as the seeds write it: a host route is the bare address
/// (`2408:180::1`), anything else `addr/len`. IPv6 is compressed (RFC 5952).
impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_host() {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.len)
        }
    }
}

impl TryFrom<String> for Cidr {
    type Error = PolicyError;
    fn try_from(text: String) -> Result<Self, PolicyError> {
        Self::parse("cidr", &text)
    }
}

impl From<Cidr> for String {
    fn from(c: Cidr) -> String {
        c.to_string()
    }
}

/// Whether the union of `outer` holds every address of the union of `inner`
/// (exact, by interval arithmetic; families are kept apart).
pub fn union_covers(outer: &[Cidr], inner: &[Cidr]) -> bool {
    let outer_v4 = merged_intervals(outer, Family::Ipv4);
    let outer_v6 = merged_intervals(outer, Family::Ipv6);
    inner.iter().all(|c| {
        let (lo, hi) = c.bounds();
        let set = if c.family() == Family::Ipv4 {
            &outer_v4
        } else {
            &outer_v6
        };
        set.iter().any(|&(a, b)| a <= lo && hi <= b)
    })
}

/// The CIDRs of one family as sorted, merged, inclusive intervals.
fn merged_intervals(cidrs: &[Cidr], family: Family) -> Vec<(u128, u128)> {
    let mut v: Vec<(u128, u128)> = cidrs
        .iter()
        .filter(|c| c.family() == family)
        .map(Cidr::bounds)
        .collect();
    merge_intervals(&mut v);
    v
}

/// Sorts and merges overlapping or adjacent inclusive intervals in place.
pub fn merge_intervals<T: Copy + Ord + num_like::Succ>(v: &mut Vec<(T, T)>) {
    v.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(v.len());
    for &(lo, hi) in v.iter() {
        match out.last_mut() {
            Some(last) if lo <= last.1.succ_saturating() => {
                if hi > last.1 {
                    last.1 = hi;
                }
            }
            _ => out.push((lo, hi)),
        }
    }
    *v = out;
}

/// A tiny trait so interval merging works for ports (u16) and addresses (u128).
pub mod num_like {
    /// `x + 1`, saturating.
    pub trait Succ {
        #[must_use]
        fn succ_saturating(self) -> Self;
    }
    impl Succ for u16 {
        fn succ_saturating(self) -> Self {
            self.saturating_add(1)
        }
    }
    impl Succ for u128 {
        fn succ_saturating(self) -> Self {
            self.saturating_add(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_is_stored_compressed() {
        let c = Cidr::parse("f", "2408:180:0000::1").unwrap();
        assert_eq!(c.to_string(), "2408:180::1");
        let c = Cidr::parse("f", "2408:4321:180:0000::/64").unwrap();
        assert_eq!(c.to_string(), "2408:4321:180::/64");
    }

    #[test]
    fn bare_address_is_a_host_route() {
        assert_eq!(Cidr::parse("f", "192.168.0.100").unwrap().len(), 32);
        assert_eq!(Cidr::parse("f", "2001:db8::1").unwrap().len(), 128);
    }

    #[test]
    fn host_bits_set_is_an_error_naming_the_network() {
        let e = Cidr::parse("rule.peer", "10.0.0.1/24")
            .unwrap_err()
            .to_string();
        assert!(e.contains("rule.peer"), "{e}");
        assert!(e.contains("10.0.0.1/24"), "{e}");
        assert!(e.contains("10.0.0.0/24"), "{e}");
        let e = Cidr::parse("f", "2001:db8::1/64").unwrap_err().to_string();
        assert!(e.contains("2001:db8::/64"), "{e}");
    }

    #[test]
    fn prefix_length_beyond_family_is_out_of_range() {
        let e = Cidr::parse("f", "10.0.0.0/33").unwrap_err().to_string();
        assert!(e.contains("0..=32"), "{e}");
        assert!(Cidr::parse("f", "::/129").is_err());
        assert!(Cidr::parse("f", "::/128").is_ok());
        assert!(Cidr::parse("f", "10.0.0.0/").is_err());
        assert!(Cidr::parse("f", "10.0.0.0/-1").is_err());
    }

    #[test]
    fn garbage_and_mapped_addresses_are_refused() {
        for bad in [
            "",
            "10.0.0",
            "010.0.0.1",
            "fe80::1%eth0",
            "::ffff:1.2.3.4",
            "1.2.3.4/8/8",
        ] {
            assert!(Cidr::parse("f", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn containment_respects_family_and_prefix() {
        let net = Cidr::parse("f", "10.0.0.0/8").unwrap();
        assert!(net.contains(&"10.255.0.1".parse().unwrap()));
        assert!(!net.contains(&"11.0.0.1".parse().unwrap()));
        assert!(!Cidr::any(Family::Ipv4).contains(&"::1".parse().unwrap()));
        assert!(Cidr::any(Family::Ipv6).contains(&"::1".parse().unwrap()));
        assert!(net.contains_cidr(&Cidr::parse("f", "10.1.0.0/16").unwrap()));
        assert!(!net.contains_cidr(&Cidr::any(Family::Ipv4)));
    }

    #[test]
    fn union_cover_is_exact() {
        let halves = [
            Cidr::parse("f", "10.0.0.0/25").unwrap(),
            Cidr::parse("f", "10.0.0.128/25").unwrap(),
        ];
        assert!(union_covers(
            &halves,
            &[Cidr::parse("f", "10.0.0.0/24").unwrap()]
        ));
        assert!(!union_covers(
            &halves[..1],
            &[Cidr::parse("f", "10.0.0.0/24").unwrap()]
        ));
        assert!(!union_covers(
            &[Cidr::any(Family::Ipv4)],
            &[Cidr::any(Family::Ipv6)]
        ));
    }
}
