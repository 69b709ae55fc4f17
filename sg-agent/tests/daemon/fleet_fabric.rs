//! Fleet mode (issue 14, item 5) on three hosts of one switch: a rule of
//! host h3 admitting group `web` follows that group's members on the other
//! two hosts as they join and leave, with real TCP from each of them, and
//! nothing it must refuse ever passes.
//!
//! "Host gone": an agent that stops keeps its host's bindings in the store
//! (its pinned data plane goes on enforcing them), so a stopped agent is
//! not a host gone: its NICs stay members. The CLI has no way to remove
//! another host's bindings (every `nic` verb acts on the host it is asked
//! on, and `apply` keeps the other hosts' NICs as they are), so a host
//! leaves the fleet by unbinding its NICs itself before its agent stops;
//! that is what is tested here.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use sg_tests::{
    etcd::Etcd,
    probe::{self, Servers},
    topology::{Fabric, Host},
};

use crate::fleet::{allow_from_group, host};

/// How long a change on one host may take to be in force on another.
const FOLLOW: Duration = Duration::from_secs(5);

/// The clients h1 and h2, probing the server on h3.
const CLIENTS: [&str; 2] = ["h1", "h2"];

/// What one client saw of h3's server in one round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    /// TCP to the port the rule admits from `web`.
    tcp: bool,
    /// UDP to the server's UDP port, which no rule admits.
    udp: bool,
}

/// The server on h3 as the clients see it, and which of them h3 admits as
/// far as the test has asserted so far.
struct Watch<'a> {
    clients: [&'a Host; 2],
    tcp: SocketAddr,
    udp: SocketAddr,
    admitted: [bool; 2],
}

impl Watch<'_> {
    /// One round: every client's probes, all at once (a refused probe waits
    /// out its timeout, so one after another would be slow).
    fn round(&self) -> [Seen; 2] {
        std::thread::scope(|s| {
            let seen = self.clients.map(|c| {
                let tcp = s.spawn(move || probe::tcp(&c.ns, self.tcp).allowed());
                let udp = s.spawn(move || probe::udp(&c.ns, self.udp).allowed());
                (tcp, udp)
            });
            seen.map(|(tcp, udp)| Seen {
                tcp: tcp.join().expect("TCP probe"),
                udp: udp.join().expect("UDP probe"),
            })
        })
    }

    /// Waits until h3 admits exactly `want` (by client) after `what`, and
    /// checks on every round meanwhile, and one more after, that nothing
    /// passes that must not: no UDP from anyone, and no TCP from a client
    /// that is not a member before or after the change. A client whose
    /// membership does not change keeps being admitted throughout.
    fn becomes(&mut self, want: [bool; 2], what: &str) {
        let before = self.admitted;
        let check = |seen: [Seen; 2]| {
            for (i, s) in seen.iter().enumerate() {
                let c = CLIENTS[i];
                assert!(!s.udp, "{what}: h3 let UDP from {c} in");
                if before[i] == want[i] {
                    assert_eq!(
                        s.tcp,
                        want[i],
                        "{what}: {c}, whose membership did not change, was {}",
                        if want[i] { "refused" } else { "admitted" }
                    );
                }
            }
            seen.map(|s| s.tcp) == want
        };
        let mut last = None;
        let reached = sg_tests::eventually(FOLLOW, || {
            let seen = self.round();
            last = Some(seen);
            check(seen)
        });
        assert!(
            reached,
            "{what}: h3 did not come to admit exactly {want:?} (h1, h2) within {FOLLOW:?}; \
             last seen {last:?}"
        );
        assert!(check(self.round()), "{what}: h3 went back on it");
        self.admitted = want;
    }
}

#[test]
fn a_group_peer_rule_on_one_host_admits_exactly_the_current_members_on_two_others() {
    let etcd = Etcd::single().unwrap();
    let fabric = Fabric::new(3).unwrap();
    let [h1, h2, h3] = [&fabric.hosts[0], &fabric.hosts[1], &fabric.hosts[2]];
    let servers = Servers::start(&h3.ns).unwrap();
    let a1 = host(&etcd, h1.ns.name(), "h1");
    let mut a2 = host(&etcd, h2.ns.name(), "h2");
    let a3 = host(&etcd, h3.ns.name(), "h3");
    let mut watch = Watch {
        clients: [h1, h2],
        tcp: SocketAddr::new(IpAddr::V4(h3.v4), servers.tcp_port),
        udp: SocketAddr::new(IpAddr::V4(h3.v4), servers.udp_port),
        admitted: [false; 2],
    };
    // With nothing bound, nothing filters: every probe passes, so a refused
    // one later is the policy's doing.
    assert_eq!(
        watch.round(),
        [Seen {
            tcp: true,
            udp: true
        }; 2],
        "h3's server is not reachable with no NIC bound"
    );

    // The groups are the fleet's, each made on a different host.
    let g_db = a3.group("db");
    let g_web = a1.group("web");
    let g_other = a2.group("other");
    allow_from_group(&a3, &g_db, servers.tcp_port, &g_web);
    a3.bind(&h3.ifname, &[&h3.v4.to_string()], &g_db);
    a1.bind(&h1.ifname, &[&h1.v4.to_string()], &g_other);
    a2.bind(&h2.ifname, &[&h2.v4.to_string()], &g_other);
    watch.becomes([false, false], "no member of web anywhere");

    a1.ok(&["nic", "join", &h1.ifname, &g_web]);
    watch.becomes([true, false], "h1 joined web");
    a2.ok(&["nic", "join", &h2.ifname, &g_web]);
    watch.becomes([true, true], "h2 joined web");
    a1.ok(&["nic", "set-groups", &h1.ifname, "--group", &g_other]);
    watch.becomes([false, true], "h1 set its groups without web");
    a2.ok(&["nic", "unbind", &h2.ifname]);
    watch.becomes([false, false], "h2's NIC unbound");
    a2.bind(&h2.ifname, &[&h2.v4.to_string()], &g_web);
    watch.becomes([false, true], "h2's NIC bound again in web");

    // A stopped agent is not a host gone: its bindings stay in the store,
    // so its NIC stays a member.
    a2.stop(libc::SIGTERM).unwrap();
    watch.becomes([false, true], "h2's agent stopped");
    // The host leaves the fleet: its agent comes back, unbinds its NIC,
    // and stops; nothing of h2 is left in the store.
    a2.restart().unwrap();
    a2.ok(&["nic", "unbind", &h2.ifname]);
    a2.stop(libc::SIGTERM).unwrap();
    watch.becomes([false, false], "h2 unbound its NIC and its agent stopped");
    let left = etcd
        .etcdctl(&["get", "--prefix", "--keys-only", "/sg/v1/policy/hosts/h2/"])
        .unwrap();
    assert!(left.trim().is_empty(), "h2's keys are still there: {left}");
}
