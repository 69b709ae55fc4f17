//! Sessions with real traffic (SPEC §4): replies ride on the session their
//! request opened, sessions end with their timeout, ICMP errors about a flow
//! reach its sender, and a policy change is felt by open connections at
//! their next packet.
//!
//! The bench's server NIC `b` is in basic groups: egress is open by default,
//! ingress is closed unless a rule opens it.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use sg_agent::dataplane::{AttachMode, session_table::Filter};
use sg_common::reason;
use sg_policy::{GroupId, GroupSpec, SessionTimeouts, Settings, State};
use sg_tests::{
    bench::{Bench, rule},
    eventually,
    flow::{TcpConn, receives, udp_socket},
    probe,
};

fn sessions(bench: &mut Bench) -> Vec<sg_agent::dataplane::session_table::Session> {
    bench
        .reconciler
        .dataplane()
        .maps()
        .sessions(&Filter::default())
        .expect("sessions")
}

fn event(bench: &mut Bench, name: &str) -> u64 {
    bench
        .reconciler
        .dataplane()
        .maps()
        .session_event(name)
        .expect("session events")
}

/// A state with the server NIC in one basic group with no rules: egress
/// open, ingress closed.
fn closed_inbound(bench: &Bench, timeouts: SessionTimeouts) -> State {
    let mut s = State::with_seed(7);
    s.set_settings(Settings {
        session_timeouts: timeouts,
        ..Settings::default()
    })
    .unwrap();
    let g = s.create_group(GroupSpec::basic("out-only")).unwrap();
    s.bind_nic(bench.server_nic(&[&g])).unwrap();
    s
}

#[test]
fn replies_to_allowed_outbound_traffic_pass_although_inbound_rules_deny_them() {
    replies_pass_by_session(AttachMode::Native);
}

/// The same with the receive side decided by TC ingress instead of XDP.
#[test]
fn replies_pass_by_session_with_the_receive_side_on_tc() {
    replies_pass_by_session(AttachMode::Tc);
}

fn replies_pass_by_session(mode: AttachMode) {
    let mut bench = Bench::with_mode(&[], &[], &[8080], mode).unwrap();
    let s = closed_inbound(&bench, SessionTimeouts::default());
    bench.apply(&s).unwrap();
    let (a, b) = (&bench.pair.a, &bench.pair.b);
    let b_addrs = [IpAddr::V4(b.v4), IpAddr::V6(b.v6)];
    // Inbound is closed: the client cannot open anything on the server.
    let server_servers = probe::Servers::start_on(&b.ns, 8081).unwrap();
    let to_b = SocketAddr::new(IpAddr::V4(b.v4), server_servers.tcp_port);
    assert!(
        !probe::tcp(&a.ns, to_b).allowed(),
        "inbound TCP must be closed"
    );
    assert!(
        !probe::udp(&a.ns, to_b).allowed(),
        "inbound UDP must be closed"
    );
    assert!(
        !probe::ping(&a.ns, IpAddr::V4(b.v4), 1).allowed(),
        "inbound ping must be closed"
    );
    // Outbound, every reply comes back, over IPv4 and IPv6.
    for addr in [IpAddr::V4(a.v4), IpAddr::V6(a.v6)] {
        let to_a = SocketAddr::new(addr, 8080);
        assert!(probe::tcp(&b.ns, to_a).allowed(), "TCP to {to_a}");
        assert!(probe::udp(&b.ns, to_a).allowed(), "UDP to {to_a}");
        assert!(probe::ping(&b.ns, addr, 2).allowed(), "ping {addr}");
    }
    let by_session = bench.decided(0, reason::SESSION);
    // Per family: TCP SYN-ACK and the rest of the echo exchange, a UDP reply,
    // two echo replies.
    assert!(
        by_session >= 2 * (3 + 1 + 2),
        "only {by_session} ingress packets passed by session"
    );
    let listed = sessions(&mut bench);
    for proto in [6u8, 17, 1, 58] {
        assert!(
            listed
                .iter()
                .any(|x| x.protocol == proto && x.direction == "egress"),
            "no egress session of protocol {proto} listed: {listed:#?}"
        );
    }
    // The sessions are b's and began with b's packets.
    assert!(
        listed
            .iter()
            .all(|x| b_addrs.contains(&x.initiator.address))
    );
    drop(server_servers);
}

#[test]
fn a_reply_after_the_timeout_is_dropped() {
    let mut bench = Bench::new(&[], &[], &[]).unwrap();
    let timeouts = SessionTimeouts {
        other_secs: 1,
        ..SessionTimeouts::default()
    };
    let s = closed_inbound(&bench, timeouts);
    bench.apply(&s).unwrap();
    let (a, b) = (&bench.pair.a, &bench.pair.b);
    let a_addr = SocketAddr::new(IpAddr::V4(a.v4), 7001);
    let b_addr = SocketAddr::new(IpAddr::V4(b.v4), 7002);
    let sock_a = udp_socket(&a.ns, a_addr).unwrap();
    let sock_b = udp_socket(&b.ns, b_addr).unwrap();
    sock_b.send_to(b"ask", a_addr).unwrap();
    assert!(receives(&sock_a, b"ask"), "b's datagram must leave");
    sock_a.send_to(b"in time", b_addr).unwrap();
    assert!(
        receives(&sock_b, b"in time"),
        "a reply within the timeout passes"
    );
    // Wait until the data plane's own clock says the session is idle past
    // its timeout (the listing compares with the same clock).
    assert!(
        eventually(Duration::from_secs(5), || {
            let l = sessions(&mut bench);
            l.len() == 1 && !l[0].live
        }),
        "the session never went idle past its timeout"
    );
    let dropped_before = bench.decided(0, reason::DEFAULT_INGRESS_DROP);
    sock_a.send_to(b"too late", b_addr).unwrap();
    assert!(
        !receives(&sock_b, b"too late"),
        "a reply after the timeout must be dropped"
    );
    assert!(bench.decided(0, reason::DEFAULT_INGRESS_DROP) > dropped_before);
    assert!(event(&mut bench, "expired") >= 1);
    assert!(
        sessions(&mut bench).is_empty(),
        "the expired session is removed"
    );
}

#[test]
fn an_icmp_port_unreachable_for_an_allowed_udp_flow_comes_back_to_the_sender() {
    let mut bench = Bench::new(&[], &[], &[]).unwrap();
    let s = closed_inbound(&bench, SessionTimeouts::default());
    bench.apply(&s).unwrap();
    let (a, b) = (&bench.pair.a, &bench.pair.b);
    for (a_ip, b_ip) in [
        (IpAddr::V4(a.v4), IpAddr::V4(b.v4)),
        (IpAddr::V6(a.v6), IpAddr::V6(b.v6)),
    ] {
        // Nobody listens on a's port 9: a's kernel answers port unreachable,
        // which a connected UDP socket reports as a refused connection.
        let sock = udp_socket(&b.ns, SocketAddr::new(b_ip, 0)).unwrap();
        sock.connect(SocketAddr::new(a_ip, 9)).unwrap();
        sock.send(b"anyone?").unwrap();
        let mut buf = [0u8; 64];
        let err = sock.recv(&mut buf).expect_err("nothing answers on port 9");
        assert_eq!(
            err.kind(),
            std::io::ErrorKind::ConnectionRefused,
            "the port unreachable for {a_ip} must reach the sender, got {err}"
        );
    }
    // Inbound ICMP is otherwise closed: the errors passed as related only.
    assert!(!probe::ping(&a.ns, IpAddr::V4(b.v4), 1).allowed());
    assert!(bench.decided(0, reason::RELATED) >= 2);
}

/// A basic group that allows TCP `port` from anywhere.
fn web(s: &mut State, name: &str, port: u16) -> GroupId {
    let g = s.create_group(GroupSpec::basic(name)).unwrap();
    let ports = format!("{port}/{port}");
    s.authorize(
        &g,
        rule("ingress", "Allow", "1", "TCP", &ports, "0.0.0.0/0"),
    )
    .unwrap();
    g
}

#[test]
fn an_open_connection_survives_a_change_that_still_allows_it_and_stops_when_revoked() {
    let mut bench = Bench::new(&[], &[8080], &[]).unwrap();
    let mut s = State::with_seed(9);
    let g = web(&mut s, "web", 8080);
    s.bind_nic(bench.server_nic(&[&g])).unwrap();
    bench.apply(&s).unwrap();
    let to_b = SocketAddr::new(IpAddr::V4(bench.pair.b.v4), 8080);
    let mut conn = TcpConn::open(&bench.pair.a.ns, to_b).unwrap();
    assert!(conn.echo());
    // An unrelated change: the policy version moves, the connection goes on.
    s.authorize(
        &g,
        rule("ingress", "Allow", "2", "UDP", "53/53", "0.0.0.0/0"),
    )
    .unwrap();
    let report = bench.apply(&s).unwrap();
    assert_eq!(report.installed.len(), 1, "{report:?}");
    let revalidated = event(&mut bench, "revalidated");
    assert!(
        conn.echo(),
        "a connection the new policy still allows goes on"
    );
    assert!(
        event(&mut bench, "revalidated") > revalidated,
        "the session was checked again"
    );
    // Revoke the rule that allowed it: the next packet stops it.
    let allowing = s.describe_group(&g).unwrap().rules[0].id.clone();
    s.revoke(&g, &allowing).unwrap();
    bench.apply(&s).unwrap();
    let revoked = event(&mut bench, "revoked");
    assert!(
        !conn.echo(),
        "a revoked connection must stop at its next packet"
    );
    assert!(event(&mut bench, "revoked") > revoked);
    // Nor can a new one start.
    assert!(!probe::tcp(&bench.pair.a.ns, to_b).allowed());
}

#[test]
fn joining_the_new_group_before_leaving_the_old_keeps_a_connection_alive() {
    let mut bench = Bench::new(&[], &[8080], &[]).unwrap();
    let mut s = State::with_seed(11);
    let old = web(&mut s, "old", 8080);
    let new = web(&mut s, "new", 8080);
    let closed = s.create_group(GroupSpec::basic("closed")).unwrap();
    let nic = bench.pair.b.ifname.clone();
    s.bind_nic(bench.server_nic(&[&old])).unwrap();
    bench.apply(&s).unwrap();
    let to_b = SocketAddr::new(IpAddr::V4(bench.pair.b.v4), 8080);
    let mut conn = TcpConn::open(&bench.pair.a.ns, to_b).unwrap();
    assert!(conn.echo());
    // Join first, then leave: allowed at every step.
    s.join(&nic, &new).unwrap();
    bench.apply(&s).unwrap();
    assert!(conn.echo(), "after joining the new group");
    s.leave(&nic, &old).unwrap();
    bench.apply(&s).unwrap();
    assert!(conn.echo(), "after leaving the old group");
    // Swapping straight to a group that does not allow it cuts it.
    s.set_nic_groups(&nic, vec![closed]).unwrap();
    bench.apply(&s).unwrap();
    assert!(!conn.echo(), "moved to a group that does not allow it");
}
