//! `trace`: one packet decided by the kernel's tables and by the reference
//! evaluator, each step named.

use crate::api::{ApiError, ErrorKind, TraceText};
use sg_policy::compile::Rank;
use sg_policy::{Direction, Packet, PolicyError, Protocol};

use super::input::ip;
use super::observe::is_default;
use super::{Answer, Service, err};
use crate::api::reply;

impl Service {
    /// Explains one packet from what the kernel holds: the interface's
    /// entry, the own-address and platform tries, the settings and the table
    /// in force, read from the maps and looked up the way the programs look
    /// them up (`Dataplane::explain`); the agent's records only name the
    /// deciding rank. The reference evaluator decides it too from the
    /// policy; a disagreement (drift, or a bug) is reported, not hidden.
    pub(super) fn trace(&mut self, t: &TraceText) -> Answer {
        self.state.nic(&t.nic).map_err(err)?;
        let (direction, _, packet) = trace_packet(t)?;
        let reference =
            sg_policy::evaluate(&self.state, &t.nic, direction, &packet).map_err(err)?;
        let ifindex = crate::iface::index(&t.nic).ok_or_else(|| {
            ApiError::new(
                ErrorKind::NotFound,
                Some("nic"),
                format!(
                    "nic: {} is bound but its interface is absent here: nothing enforces it",
                    t.nic
                ),
            )
        })?;
        let dir = u32::from(direction == Direction::Egress);
        let dp = self.reconciler.dataplane();
        let k = dp
            .maps()
            .explain(ifindex, direction, &packet)
            .map_err(super::unavailable)?;
        let rank =
            (k.rank != sg_common::policy::NO_RANK).then(|| dp.rank(&t.nic, dir, k.rank).cloned());
        let mut rule = None;
        let mut group = None;
        let mut priority = None;
        let where_ = k.config.map_or_else(String::new, |c| {
            format!(
                " (slot {}, version {}, read from the kernel's maps)",
                c.slot, c.version
            )
        });
        let detail = match (k.reason, &rank) {
            (sg_common::reason::UNBOUND, _) => {
                "the interface has no entry in the kernel: it passes untouched".to_owned()
            }
            (_, Some(Some(Rank::Rule(id)))) => {
                let (g, r) = self
                    .state
                    .find_rule(id)
                    .ok_or_else(|| ApiError::internal(format!("rule {id} vanished")))?;
                rule = Some(id.to_string());
                group = Some(g.id.to_string());
                priority = Some(r.spec.priority);
                format!("rank {} of the {direction} table in force{where_}", k.rank)
            }
            (_, Some(Some(Rank::IntraGroup(g)))) => {
                group = Some(g.to_string());
                format!("default: both ends are members of {g} (intra-group Accept){where_}")
            }
            (_, Some(None)) => format!(
                "rank {} of the {direction} table in force{where_}, which the agent has no record of: the maps drifted (run `sg-agent verify`)",
                k.rank
            ),
            (r, None) if is_default(r) => format!("no rule matches: the default{where_}"),
            (_, None) => format!("decided before sessions and rules{where_}"),
        };
        let kernel_verdict = if k.verdict == sg_common::policy::verdict::ACCEPT {
            sg_policy::Verdict::Accept
        } else {
            sg_policy::Verdict::Drop
        };
        let same_rule = match &reference.reason {
            sg_policy::Reason::Rule(id) => rule.as_deref() == Some(id.as_str()),
            _ => true,
        };
        let agrees = kernel_verdict == reference.verdict
            && kernel_reason(&reference.reason) == k.reason
            && same_rule;
        Ok(super::to_value(&reply::Traced {
            verdict: format!("{kernel_verdict:?}").to_lowercase(),
            reason: sg_common::reason::NAMES
                .get(k.reason as usize)
                .copied()
                .unwrap_or("?")
                .to_owned(),
            rule,
            group,
            priority: priority.map(u64::from),
            detail,
            reference_agrees: agrees,
            reference: reply::Reference {
                verdict: format!("{:?}", reference.verdict).to_lowercase(),
                reason: reason_name(&reference.reason),
            },
            note: "for a packet that starts a flow; a live session (sessions list) accepts its packets first"
                .to_owned(),
        }))
    }
}

/// The packet `sg-agent trace` asks about: the first packet of a flow (a TCP
/// SYN; for ICMP an echo request unless a type is given).
pub(super) fn trace_packet(t: &TraceText) -> Result<(Direction, u8, Packet), ApiError> {
    let direction = Direction::parse("direction", &t.direction).map_err(err)?;
    let protocol = Protocol::parse("protocol", &t.protocol).map_err(err)?;
    let number = protocol.number().ok_or_else(|| {
        err(PolicyError::invalid(
            "protocol",
            "ALL",
            "a packet has one protocol",
        ))
    })?;
    let src = ip("source", &t.source).map_err(err)?;
    let dst = ip("destination", &t.destination).map_err(err)?;
    if src.is_ipv4() != dst.is_ipv4() {
        return Err(err(PolicyError::invalid(
            "destination",
            dst,
            "a different family from the source",
        )));
    }
    let icmp = matches!(number, 1 | 58);
    let packet = Packet {
        src,
        dst,
        protocol: number,
        src_port: t.source_port.unwrap_or(0),
        dst_port: t.destination_port.unwrap_or(0),
        icmp_type: t.icmp_type.unwrap_or(if icmp {
            if number == 1 { 8 } else { 128 }
        } else {
            0
        }),
        icmp_code: t.icmp_code.unwrap_or(0),
        tcp_flags: if number == 6 {
            sg_policy::evaluate::tcp_flags::SYN
        } else {
            0
        },
        fragment: sg_policy::Fragment::None,
        nd_target: None,
        icmp_id: 0,
        quoted: None,
    };
    Ok((direction, number, packet))
}

/// The kernel's number (`sg_common::reason`) for the evaluator's reason.
pub(super) fn kernel_reason(r: &sg_policy::Reason) -> u32 {
    use sg_common::reason as k;
    use sg_policy::{AlwaysAllowed as A, Reason as R, SpoofCheck as S};
    match r {
        R::Malformed => k::MALFORMED,
        R::AntiSpoof(S::SourceAddress) => k::SPOOF_SOURCE,
        R::AntiSpoof(S::ArpSender) => k::SPOOF_ARP,
        R::AntiSpoof(S::NdTarget) => k::SPOOF_ND_TARGET,
        R::AntiSpoof(S::Ethertype) => k::SPOOF_ETHERTYPE,
        R::AntiSpoof(S::Tagged) => k::SPOOF_TAGGED,
        R::NotIp => k::NOT_IP,
        R::NeighbourDiscovery => k::NEIGHBOUR_DISCOVERY,
        R::AlwaysAllowed(A::PathMtu) => k::PATH_MTU,
        R::AlwaysAllowed(A::PlatformAddress) => k::PLATFORM_ADDRESS,
        R::PlatformPort25 => k::PORT_25,
        R::Session => k::SESSION,
        R::Related => k::RELATED,
        R::LaterFragment => k::FRAGMENT_NO_FIRST,
        R::FragmentFollowsFirst => k::FRAGMENT_FOLLOWS_FIRST,
        R::FragmentExpired => k::FRAGMENT_EXPIRED,
        R::Rule(_) => k::RULE,
        R::DefaultIngressIntraGroup(_) => k::DEFAULT_INTRA_GROUP,
        R::DefaultIngressDrop => k::DEFAULT_INGRESS_DROP,
        R::DefaultEgressBasic => k::DEFAULT_EGRESS_BASIC,
        R::DefaultEgressEnterprise => k::DEFAULT_EGRESS_ENTERPRISE,
    }
}

/// A reason as the data plane's counters name it (`sg_common::reason::NAMES`).
pub(super) fn reason_name(r: &sg_policy::Reason) -> String {
    use sg_policy::Reason as R;
    match r {
        R::Malformed => "malformed".to_owned(),
        R::AntiSpoof(check) => format!("spoof ({check:?})"),
        R::NotIp => "not_ip".to_owned(),
        R::NeighbourDiscovery => "neighbour_discovery".to_owned(),
        R::AlwaysAllowed(what) => format!("always_allowed ({what:?})"),
        R::PlatformPort25 => "port_25".to_owned(),
        R::Session => "session".to_owned(),
        R::Related => "related".to_owned(),
        R::LaterFragment => "fragment_no_first".to_owned(),
        R::FragmentFollowsFirst => "fragment_follows_first".to_owned(),
        R::FragmentExpired => "fragment_expired".to_owned(),
        R::Rule(_) => "rule".to_owned(),
        R::DefaultIngressIntraGroup(_) => "default_intra_group".to_owned(),
        R::DefaultIngressDrop => "default_ingress_drop".to_owned(),
        R::DefaultEgressBasic => "default_egress_basic".to_owned(),
        R::DefaultEgressEnterprise => "default_egress_enterprise".to_owned(),
    }
}
