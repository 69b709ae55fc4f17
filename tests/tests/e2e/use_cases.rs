//! The six use cases of seed 002 with real TCP, UDP and ICMP between two
//! namespaces: the seed's rule tables on the server's NIC, the data plane
//! attached to it, and probes that must pass or must not.
//!
//! No ingress rule opens the replies to case 6's outbound whitelist: they
//! return on the sessions the allowed requests opened.

use std::net::{IpAddr, SocketAddr};

use sg_policy::{BindingMode, GroupSpec, InnerPolicy, NicBinding, RuleSpec, State};
use sg_tests::{
    bench::{Bench, rule},
    probe,
};

fn ip(s: &str) -> IpAddr {
    s.parse().expect("address")
}

/// One expectation: a probe kind, from a source address of `a`, to a port of
/// `b` (or, for `out`, from `b` to an address of `a`), and whether it passes.
enum Probe {
    Tcp(&'static str, &'static str, u16, bool),
    Udp(&'static str, &'static str, u16, bool),
    Ping(&'static str, &'static str, bool),
    /// From `b` out to `a`'s address: TCP.
    TcpOut(&'static str, u16, bool),
    UdpOut(&'static str, u16, bool),
}

fn check(bench: &Bench, probes: &[Probe]) {
    let (a, b) = (&bench.pair.a.ns, &bench.pair.b.ns);
    let mut failures = Vec::new();
    for p in probes {
        let (what, got, want) = match *p {
            Probe::Tcp(src, dst, port, want) => {
                let r = probe::tcp_from(a, Some(ip(src)), SocketAddr::new(ip(dst), port));
                (format!("TCP {src} -> {dst}:{port}"), r, want)
            }
            Probe::Udp(src, dst, port, want) => {
                let r = probe::udp_from(a, Some(ip(src)), SocketAddr::new(ip(dst), port));
                (format!("UDP {src} -> {dst}:{port}"), r, want)
            }
            Probe::Ping(src, dst, want) => (
                format!("ping {src} -> {dst}"),
                probe::ping_from(a, Some(ip(src)), ip(dst), 1),
                want,
            ),
            Probe::TcpOut(dst, port, want) => (
                format!("TCP out -> {dst}:{port}"),
                probe::tcp(b, SocketAddr::new(ip(dst), port)),
                want,
            ),
            Probe::UdpOut(dst, port, want) => (
                format!("UDP out -> {dst}:{port}"),
                probe::udp(b, SocketAddr::new(ip(dst), port)),
                want,
            ),
        };
        if got.allowed() != want {
            failures.push(format!(
                "{what}: expected {}, got {got:?}",
                if want { "allowed" } else { "blocked" }
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A state whose server NIC is in one basic group with `rules`.
fn server_with(bench: &Bench, rules: Vec<RuleSpec>) -> State {
    let mut s = State::with_seed(2);
    let g = s.create_group(GroupSpec::basic("case")).unwrap();
    s.authorize_all(&g, rules).unwrap();
    s.bind_nic(bench.server_nic(&[&g])).unwrap();
    s
}

const SRV: &str = "10.77.0.2";
const SRV6: &str = "fd77::2";
const CLI: &str = "10.77.0.1";
const CLI6: &str = "fd77::1";

#[test]
fn case_1_web_server_opens_80_and_443_to_everyone_and_nothing_else() {
    let mut bench = Bench::new(&[], &[80, 443, 22], &[]).unwrap();
    let s = server_with(
        &bench,
        vec![
            rule("ingress", "Allow", "1", "TCP", "80/80", "0.0.0.0/0"),
            rule("ingress", "Allow", "1", "TCP", "443/443", "0.0.0.0/0"),
        ],
    );
    bench.apply(&s).unwrap();
    check(
        &bench,
        &[
            Probe::Tcp(CLI, SRV, 80, true),
            Probe::Tcp(CLI, SRV, 443, true),
            Probe::Tcp(CLI, SRV, 22, false),
            Probe::Udp(CLI, SRV, 80, false),
            Probe::Ping(CLI, SRV, false),
            // 0.0.0.0/0 is IPv4 only.
            Probe::Tcp(CLI6, SRV6, 80, false),
        ],
    );
}

#[test]
fn case_2_remote_access_only_from_the_administrator_and_workbench_ranges() {
    let mut bench = Bench::new(
        &["192.168.1.10", "161.117.0.5", "100.104.0.1"],
        &[22, 3389],
        &[],
    )
    .unwrap();
    let s = server_with(
        &bench,
        vec![
            rule("ingress", "Allow", "1", "TCP", "22/22", "192.168.1.10"),
            rule("ingress", "Allow", "1", "TCP", "3389/3389", "192.168.1.10"),
            rule("ingress", "Allow", "1", "TCP", "22/22", "161.117.0.0/16"),
            rule("ingress", "Allow", "1", "TCP", "22/22", "100.104.0.0/16"),
        ],
    );
    bench.apply(&s).unwrap();
    check(
        &bench,
        &[
            Probe::Tcp("192.168.1.10", SRV, 22, true),
            Probe::Tcp("192.168.1.10", SRV, 3389, true),
            Probe::Tcp("161.117.0.5", SRV, 22, true),
            Probe::Tcp("161.117.0.5", SRV, 3389, false),
            Probe::Tcp("100.104.0.1", SRV, 22, true),
            Probe::Tcp(CLI, SRV, 22, false),
            Probe::Tcp(CLI, SRV, 3389, false),
        ],
    );
}

#[test]
fn case_3_databases_accept_their_port_only_from_their_clients_and_follow_membership() {
    let clients = [
        "172.16.1.1",
        "172.16.1.2",
        "192.168.1.1",
        "192.168.77.3",
        "10.77.0.5",
        "10.77.0.6",
    ];
    let mut bench = Bench::new(&clients, &[3306, 1521, 1433, 5432], &[]).unwrap();
    let mut s = State::with_seed(3);
    let app = s.create_group(GroupSpec::basic("app")).unwrap();
    let db = s.create_group(GroupSpec::basic("db")).unwrap();
    s.authorize_all(
        &db,
        vec![
            rule("ingress", "Allow", "1", "TCP", "3306/3306", "172.16.1.1"),
            rule("ingress", "Allow", "1", "TCP", "1521/1521", "192.168.1.1"),
            rule(
                "ingress",
                "Allow",
                "1",
                "TCP",
                "1433/1433",
                "192.168.0.0/16",
            ),
            rule("ingress", "Allow", "1", "TCP", "5432/5432", app.as_str()),
        ],
    )
    .unwrap();
    s.bind_nic(bench.server_nic(&[&db])).unwrap();
    // The application tier: NICs on other hosts, known by their addresses.
    s.bind_nic(NicBinding::new(
        "app0",
        BindingMode::Local,
        vec![ip("10.77.0.5")],
        vec![app.clone()],
    ))
    .unwrap();
    bench.apply(&s).unwrap();
    check(
        &bench,
        &[
            Probe::Tcp("172.16.1.1", SRV, 3306, true),
            Probe::Tcp("172.16.1.2", SRV, 3306, false),
            Probe::Tcp("192.168.1.1", SRV, 1521, true),
            Probe::Tcp("192.168.1.1", SRV, 3306, false),
            Probe::Tcp("192.168.77.3", SRV, 1433, true),
            Probe::Tcp("10.77.0.5", SRV, 5432, true),
            Probe::Tcp("10.77.0.5", SRV, 3306, false),
            Probe::Tcp("10.77.0.6", SRV, 5432, false),
        ],
    );
    // A NIC that joins the app group gets the access at once.
    s.bind_nic(NicBinding::new(
        "app1",
        BindingMode::Local,
        vec![ip("10.77.0.6")],
        vec![app],
    ))
    .unwrap();
    bench.apply(&s).unwrap();
    check(
        &bench,
        &[
            Probe::Tcp("10.77.0.6", SRV, 5432, true),
            Probe::Tcp("10.77.0.6", SRV, 3306, false),
        ],
    );
}

#[test]
fn case_4_icmp_only_from_the_client_for_each_family() {
    let clients = [
        "198.51.100.7",
        "198.51.100.8",
        "2001:db8:1::7",
        "2001:db8:1::8",
    ];
    let mut bench = Bench::new(&clients, &[22, 53], &[]).unwrap();
    let s = server_with(
        &bench,
        vec![
            rule("ingress", "Allow", "1", "ICMP", "-1/-1", "198.51.100.7"),
            rule("ingress", "Allow", "1", "ICMPv6", "-1/-1", "2001:db8:1::7"),
        ],
    );
    bench.apply(&s).unwrap();
    check(
        &bench,
        &[
            Probe::Ping("198.51.100.7", SRV, true),
            Probe::Ping("198.51.100.8", SRV, false),
            Probe::Ping("2001:db8:1::7", SRV6, true),
            Probe::Ping("2001:db8:1::8", SRV6, false),
            Probe::Tcp("198.51.100.7", SRV, 22, false),
            Probe::Udp("2001:db8:1::7", SRV6, 53, false),
        ],
    );
}

#[test]
fn case_5_members_of_group_a_reach_group_b_on_ftp() {
    let clients = ["10.77.0.21", "fd77::21", "10.77.0.22", "10.77.0.31"];
    let mut bench = Bench::new(&clients, &[21, 22], &[]).unwrap();
    let mut s = State::with_seed(5);
    let a = s.create_group(GroupSpec::basic("A")).unwrap();
    let b = s.create_group(GroupSpec::basic("B")).unwrap();
    s.authorize(
        &b,
        rule("ingress", "Allow", "1", "TCP", "21/21", a.as_str()),
    )
    .unwrap();
    // Isolate B's own members so only the rule speaks.
    s.set_inner_policy(&b, InnerPolicy::Drop).unwrap();
    s.bind_nic(bench.server_nic(&[&b])).unwrap();
    s.bind_nic(NicBinding::new(
        "a0",
        BindingMode::Local,
        vec![ip("10.77.0.21"), ip("fd77::21")],
        vec![a],
    ))
    .unwrap();
    s.bind_nic(NicBinding::new(
        "b1",
        BindingMode::Local,
        vec![ip("10.77.0.31")],
        vec![b],
    ))
    .unwrap();
    bench.apply(&s).unwrap();
    check(
        &bench,
        &[
            Probe::Tcp("10.77.0.21", SRV, 21, true),
            Probe::Tcp("fd77::21", SRV6, 21, true),
            Probe::Tcp("10.77.0.21", SRV, 22, false),
            Probe::Tcp("10.77.0.22", SRV, 21, false),
            // A member of B itself: B isolates its members and the rule names A.
            Probe::Tcp("10.77.0.31", SRV, 21, false),
        ],
    );
}

#[test]
fn case_6_outbound_whitelist_denies_everything_else() {
    let peers = ["47.96.1.1", "121.199.1.1"];
    let mut bench = Bench::new(&peers, &[], &[80, 443]).unwrap();
    let s = server_with(
        &bench,
        vec![
            rule("egress", "Deny", "2", "All", "-1/-1", "0.0.0.0/0"),
            rule("egress", "Allow", "1", "TCP", "80/80", "47.96.1.1"),
            rule("egress", "Allow", "1", "TCP", "443/443", "121.199.1.1"),
        ],
    );
    bench.apply(&s).unwrap();
    check(
        &bench,
        &[
            Probe::TcpOut("47.96.1.1", 80, true),
            Probe::TcpOut("121.199.1.1", 443, true),
            Probe::TcpOut("47.96.1.1", 443, false),
            Probe::TcpOut("121.199.1.1", 80, false),
            Probe::UdpOut("47.96.1.1", 80, false),
            // The deny names 0.0.0.0/0: IPv6 egress falls to the basic default.
            Probe::TcpOut(CLI6, 443, true),
        ],
    );
}
