//! Helpers shared by the policy tests.

use std::net::IpAddr;

use sg_policy::{
    BindingMode, Decision, Direction, GroupId, GroupSpec, NicBinding, Packet, RuleSpec, State,
    Verdict, evaluate,
};

/// An address from text.
pub fn ip(text: &str) -> IpAddr {
    text.parse().expect("test address")
}

/// A rule from the seeds' table columns.
pub fn rule(
    direction: &str,
    policy: &str,
    priority: &str,
    protocol: &str,
    ports: &str,
    peer: &str,
) -> RuleSpec {
    RuleSpec::from_text(direction, policy, priority, protocol, ports, peer).expect("test rule")
}

/// A state with fixed ids.
pub fn state() -> State {
    State::with_seed(42)
}

/// Creates a basic group named `name`.
pub fn basic(state: &mut State, name: &str) -> GroupId {
    state.create_group(GroupSpec::basic(name)).expect("group")
}

/// Binds a `local`-mode NIC with the given addresses and groups.
pub fn bind(state: &mut State, nic: &str, addresses: &[&str], groups: &[&GroupId]) {
    state
        .bind_nic(NicBinding::new(
            nic,
            BindingMode::Local,
            addresses.iter().map(|a| ip(a)).collect(),
            groups.iter().map(|g| (*g).clone()).collect(),
        ))
        .expect("bind");
}

/// The decision for a packet.
pub fn decide(state: &State, nic: &str, direction: Direction, packet: &Packet) -> Decision {
    evaluate(state, nic, direction, packet).expect("evaluate")
}

/// The verdict for a packet.
pub fn verdict(state: &State, nic: &str, direction: Direction, packet: &Packet) -> Verdict {
    decide(state, nic, direction, packet).verdict
}

/// A TCP SYN from `src` to `dst:port` (source port 40000).
pub fn tcp(src: &str, dst: &str, port: u16) -> Packet {
    Packet::tcp(ip(src), 40000, ip(dst), port)
}

/// A UDP datagram from `src` to `dst:port` (source port 40000).
pub fn udp(src: &str, dst: &str, port: u16) -> Packet {
    Packet::udp(ip(src), 40000, ip(dst), port)
}

/// An echo request (ICMP or ICMPv6 by family).
pub fn ping(src: &str, dst: &str) -> Packet {
    let t = if ip(src).is_ipv4() { 8 } else { 128 };
    Packet::icmp(ip(src), ip(dst), t, 0)
}
