//! The group templates of seed 001 (tables 2–4): `default`, `Sys-WebServer`,
//! `Sys-FullAccess`.
//!
//! The seed lists "from the current group" once for IPv4 and once for IPv6. A
//! group peer in SPEC §1 carries no family (it matches every member address), so
//! each such pair is one rule here: two would be exact duplicates.

use super::{
    addr::{Cidr, Family},
    error::PolicyError,
    ids::GroupId,
    model::{Action, Direction, Peer, PortRange, PortSpec, Protocol, RuleSpec, State},
    ops::GroupSpec,
};

/// A group template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Template {
    /// Members talk to each other; all egress allowed.
    Default,
    /// ICMP, HTTP, HTTPS, SSH and RDP from anywhere; members talk; all egress.
    SysWebServer,
    /// Everything in and out.
    SysFullAccess,
}

impl Template {
    /// Every template.
    pub const ALL: [Self; 3] = [Self::Default, Self::SysWebServer, Self::SysFullAccess];

    /// The template's name, which is also the new group's default name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Default => "default",
            Self::SysWebServer => "Sys-WebServer",
            Self::SysFullAccess => "Sys-FullAccess",
        }
    }

    /// The template by name.
    pub fn by_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The template's rules for a group with id `group`.
    pub fn rules(self, group: &GroupId) -> Vec<RuleSpec> {
        let rule = |dir, proto, ports, peer, text: &str| {
            RuleSpec::new(dir, Action::Accept, proto, ports, peer).with_description(text)
        };
        let any4 = Peer::Cidr(Cidr::any(Family::Ipv4));
        let any6 = Peer::Cidr(Cidr::any(Family::Ipv6));
        let me = Peer::Group(group.clone());
        let tcp = |port: u16, text: &str| {
            rule(
                Direction::Ingress,
                Protocol::TCP,
                PortSpec::Range(PortRange::single(port)),
                any4.clone(),
                text,
            )
        };
        let members = rule(
            Direction::Ingress,
            Protocol::All,
            PortSpec::Any,
            me,
            "Allows instances in the security group to communicate with each other (IPv4 and IPv6).",
        );
        let egress = vec![
            rule(
                Direction::Egress,
                Protocol::All,
                PortSpec::Any,
                any4.clone(),
                "Allows all IPv4 traffic from the instances in the security group.",
            ),
            rule(
                Direction::Egress,
                Protocol::All,
                PortSpec::Any,
                any6.clone(),
                "Allows all IPv6 traffic from the instances in the security group.",
            ),
        ];
        let mut v = match self {
            Self::Default => vec![members],
            Self::SysWebServer => vec![
                rule(
                    Direction::Ingress,
                    Protocol::ICMP,
                    PortSpec::Any,
                    any4.clone(),
                    "Allows ping over IPv4.",
                ),
                members,
                tcp(443, "Allows HTTPS from all IPv4 addresses."),
                tcp(80, "Allows HTTP from all IPv4 addresses."),
                tcp(22, "Allows SSH from all IPv4 addresses."),
                tcp(3389, "Allows RDP from all IPv4 addresses."),
            ],
            Self::SysFullAccess => vec![
                members,
                rule(
                    Direction::Ingress,
                    Protocol::All,
                    PortSpec::Any,
                    any4,
                    "Allows all inbound IPv4 packets.",
                ),
                rule(
                    Direction::Ingress,
                    Protocol::All,
                    PortSpec::Any,
                    any6,
                    "Allows all inbound IPv6 packets.",
                ),
            ],
        };
        v.extend(egress);
        v
    }
}

impl State {
    /// Creates a basic group from a template; `name` defaults to the template's.
    pub fn create_from_template(
        &mut self,
        template: Template,
        name: Option<&str>,
    ) -> Result<GroupId, PolicyError> {
        // One transaction, so that an error names the new group `group`
        // and the template's rules by their place, never their new ids.
        self.transact_labelled(|s, labels| {
            let id = s.new_group(GroupSpec::basic(name.unwrap_or(template.name())), labels)?;
            let rules = template.rules(&id).into_iter().map(|r| (None, r)).collect();
            s.add_rules(&id, rules, "template.rules", false, labels)?;
            Ok(id)
        })
    }
}
