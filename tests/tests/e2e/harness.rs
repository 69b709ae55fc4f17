//! The harness checks itself: topologies vanish even when a test panics, and a
//! probe says "blocked" when the path really is blocked.

use std::net::{IpAddr, SocketAddr};

use sg_tests::{
    probe::{self, Servers},
    topology::{Fabric, Pair, run},
};

fn namespaces() -> String {
    String::from_utf8_lossy(&run("ip", &["netns", "list"]).expect("ip netns list").stdout)
        .into_owned()
}

#[test]
fn topology_is_removed_even_when_the_test_panics() {
    let names = std::panic::catch_unwind(|| {
        let pair = Pair::new().expect("topology");
        let names = [pair.a.ns.name().to_owned(), pair.b.ns.name().to_owned()];
        let listed = namespaces();
        assert!(
            names.iter().all(|n| listed.contains(n.as_str())),
            "{listed}"
        );
        // Hand the names out through the panic payload.
        std::panic::panic_any(names);
    })
    .expect_err("the closure panics")
    .downcast::<[String; 2]>()
    .expect("payload");
    let listed = namespaces();
    for n in &*names {
        assert!(
            !listed.contains(n.as_str()),
            "{n} survived the panic: {listed}"
        );
    }
}

#[test]
fn probes_report_allowed_then_blocked_when_the_peer_drops_everything() {
    let pair = Pair::new().expect("topology");
    let servers = Servers::start(&pair.b.ns).expect("servers");
    for addr in [IpAddr::V4(pair.b.v4), IpAddr::V6(pair.b.v6)] {
        assert!(probe::tcp(&pair.a.ns, SocketAddr::new(addr, servers.tcp_port)).allowed());
        assert!(probe::udp(&pair.a.ns, SocketAddr::new(addr, servers.udp_port)).allowed());
        assert!(probe::ping(&pair.a.ns, addr, 1).allowed());
    }
    // Drop everything b receives except neighbour discovery and ARP.
    for rule in [
        "add table inet t",
        "add chain inet t in { type filter hook input priority 0; policy drop; }",
        "add rule inet t in icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept",
    ] {
        let out = pair.b.ns.cmd("nft", &[rule]).output().expect("nft");
        assert!(
            out.status.success(),
            "nft {rule}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for addr in [IpAddr::V4(pair.b.v4), IpAddr::V6(pair.b.v6)] {
        assert!(!probe::tcp(&pair.a.ns, SocketAddr::new(addr, servers.tcp_port)).allowed());
        assert!(!probe::udp(&pair.a.ns, SocketAddr::new(addr, servers.udp_port)).allowed());
        assert!(!probe::ping(&pair.a.ns, addr, 1).allowed());
    }
}

#[test]
fn probes_to_a_closed_port_are_blocked() {
    let pair = Pair::new().expect("topology");
    let servers = Servers::start(&pair.b.ns).expect("servers");
    let closed = servers.tcp_port.wrapping_add(1).max(1);
    let addr = SocketAddr::new(IpAddr::V4(pair.b.v4), closed);
    assert!(!probe::tcp(&pair.a.ns, addr).allowed());
    assert!(!probe::udp(&pair.a.ns, addr).allowed());
}

#[test]
fn every_host_of_a_fabric_reaches_every_other_and_the_fabric_is_removed_after() {
    let names: Vec<String>;
    {
        let fabric = Fabric::new(3).expect("topology");
        names = fabric
            .hosts
            .iter()
            .map(|h| &h.ns)
            .chain([&fabric.switch])
            .map(|ns| ns.name().to_owned())
            .collect();
        let servers: Vec<Servers> = fabric
            .hosts
            .iter()
            .map(|h| Servers::start(&h.ns).expect("servers"))
            .collect();
        for (i, from) in fabric.hosts.iter().enumerate() {
            for (j, to) in fabric.hosts.iter().enumerate() {
                if i == j {
                    continue;
                }
                for addr in [IpAddr::V4(to.v4), IpAddr::V6(to.v6)] {
                    let tcp = SocketAddr::new(addr, servers[j].tcp_port);
                    let udp = SocketAddr::new(addr, servers[j].udp_port);
                    assert!(probe::tcp(&from.ns, tcp).allowed(), "TCP {i} -> {tcp}");
                    assert!(probe::udp(&from.ns, udp).allowed(), "UDP {i} -> {udp}");
                }
            }
        }
    }
    let listed = namespaces();
    for n in &names {
        assert!(!listed.contains(n.as_str()), "{n} survived: {listed}");
    }
}
