//! A test bench for policies with real traffic: a client namespace `a` and a
//! server namespace `b` joined by a veth pair, the data plane attached to
//! `b`'s end, enforcing a policy `State` in which that end is the NIC.

use std::net::IpAddr;

use sg_agent::{
    dataplane::{AttachMode, Dataplane},
    reconcile::{ReconcileReport, Reconciler},
};
use sg_policy::{BindingMode, GroupId, NicBinding, RuleSpec, State};

use crate::{probe::Servers, topology::Pair};

pub struct Bench {
    pub pair: Pair,
    pub reconciler: Reconciler,
    /// Echo servers kept alive for the bench's life.
    pub servers: Vec<Servers>,
}

impl Bench {
    /// A pair with extra client addresses on `a`, echo servers on `b_ports`
    /// in `b` and on `a_ports` in `a`, and the data plane loaded (attached on
    /// the first [`Bench::apply`]).
    pub fn new(client_addrs: &[&str], b_ports: &[u16], a_ports: &[u16]) -> anyhow::Result<Self> {
        Self::with_mode(client_addrs, b_ports, a_ports, AttachMode::Auto)
    }

    /// [`Bench::new`], attaching the receive side in `mode`.
    pub fn with_mode(
        client_addrs: &[&str],
        b_ports: &[u16],
        a_ports: &[u16],
        mode: AttachMode,
    ) -> anyhow::Result<Self> {
        let pair = Pair::new()?;
        for a in client_addrs {
            pair.add_client_address(a.parse()?)?;
        }
        let mut servers = Vec::new();
        for p in b_ports {
            servers.push(Servers::start_on(&pair.b.ns, *p)?);
        }
        for p in a_ports {
            servers.push(Servers::start_on(&pair.a.ns, *p)?);
        }
        let reconciler = Reconciler::new(Dataplane::load()?, Some(mode));
        Ok(Self {
            pair,
            reconciler,
            servers,
        })
    }

    /// The NIC binding of `b`'s end (local mode: it is the server's own NIC).
    pub fn server_nic(&self, groups: &[&GroupId]) -> NicBinding {
        NicBinding::new(
            &self.pair.b.ifname,
            BindingMode::Local,
            vec![IpAddr::V4(self.pair.b.v4), IpAddr::V6(self.pair.b.v6)],
            groups.iter().map(|g| (*g).clone()).collect(),
        )
    }

    /// Packets of the server NIC decided for `reason` (`sg_common::reason`) in
    /// direction `dir` (0 = ingress).
    pub fn decided(&mut self, dir: u32, reason: u32) -> u64 {
        let name = self.pair.b.ifname.clone();
        self.reconciler
            .dataplane()
            .reason_counts(&name)
            .expect("reason counters")
            .iter()
            .find(|(d, r, _)| *d == dir && *r == reason)
            .map_or(0, |(_, _, n)| *n)
    }

    /// Makes the data plane enforce `state` (from inside `b`'s namespace,
    /// where the interface is).
    pub fn apply(&mut self, state: &State) -> anyhow::Result<ReconcileReport> {
        let reconciler = &mut self.reconciler;
        Ok(self.pair.b.ns.exec(|| reconciler.reconcile(state))??)
    }
}

/// A rule from the seeds' table columns (direction, policy, priority,
/// protocol, port range, peer), e.g. `rule("ingress", "Allow", "1", "TCP",
/// "80/80", "0.0.0.0/0")`.
pub fn rule(
    direction: &str,
    policy: &str,
    priority: &str,
    protocol: &str,
    ports: &str,
    peer: &str,
) -> RuleSpec {
    RuleSpec::from_text(direction, policy, priority, protocol, ports, peer).expect("a valid rule")
}
