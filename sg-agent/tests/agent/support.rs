//! Helpers that several of these tests wrote alike.

use sg_policy::RuleSpec;

/// A rule from the seeds' table columns (direction, policy, priority,
/// protocol, port range, peer).
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
