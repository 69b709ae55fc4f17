//! Updates at host scale (issue 16 item 6): 100 NICs, each in a group of
//! its own of 998 rules, one more group of 1 rule. Timed in the library,
//! from `Reconciler::reconcile` until the new policy is in force: a one-rule
//! change to one group, a NIC joining (and leaving) the small group, and
//! the whole rule set of one group replaced at once. Each kind alternates
//! two states; calls are `PAUSE` apart, so that each starts after the grace
//! period of the switch before (a change right behind another waits for
//! what is left of it; see docs/benchmark.md, Updates).

use std::{fmt::Write as _, time::Duration};

use sg_agent::{
    dataplane::{Dataplane, Limits},
    reconcile::Reconciler,
};
use sg_policy::{BindingMode, GroupId, GroupSpec, NicBinding, RuleSpec, State};
use sg_tests::topology::Netns;

/// NICs on the host (veths `m0`… made by the caller).
pub const NICS: usize = 100;
/// Rules of each NIC's own group: with the small group's one, 999, under
/// the per-NIC limit of 1,000 with room for the rule added.
const RULES: usize = 998;
/// Calls timed per kind of change.
const CALLS: usize = 10;
/// Between two calls: longer than a switch's grace period.
const PAUSE: Duration = Duration::from_millis(30);

/// `count` ingress rules, one port each from `base`.
fn rules(count: usize, base: usize) -> anyhow::Result<Vec<RuleSpec>> {
    (0..count)
        .map(|i| {
            let port = format!("{0}/{0}", base + i);
            let peer = if i % 2 == 0 {
                "192.0.2.0/24"
            } else {
                "2001:db8::/32"
            };
            Ok(RuleSpec::from_text(
                "ingress", "Allow", "1", "TCP", &port, peer,
            )?)
        })
        .collect()
}

/// The host: `NICS` NICs, `mI` in group `gI` of `RULES` rules; and the
/// small group, which no NIC is in yet. Returns the state, the first NIC's
/// group and the small group.
fn host() -> anyhow::Result<(State, GroupId, GroupId)> {
    let mut s = State::with_seed(16);
    let mut first = None;
    for i in 0..NICS {
        let g = s.create_group(GroupSpec::basic(&format!("g{i}")))?;
        s.authorize_all(&g, rules(RULES, 1000)?)?;
        let octet = u8::try_from(i)?;
        s.bind_nic(NicBinding::new(
            &format!("m{i}"),
            BindingMode::Local,
            vec![format!("10.2.{octet}.1").parse()?],
            vec![g.clone()],
        ))?;
        first.get_or_insert(g);
    }
    let small = s.create_group(GroupSpec::basic("small"))?;
    s.authorize_all(&small, rules(1, 9000)?)?;
    Ok((s, first.expect("a NIC"), small))
}

/// Milliseconds of each call from `base` to `other` (and back: both kinds
/// of call are the same change), `CALLS` in all.
fn alternate(reconciler: &mut Reconciler, base: &State, other: &State) -> anyhow::Result<Vec<f64>> {
    let mut took = Vec::with_capacity(CALLS);
    for call in 0..CALLS {
        let next = if call % 2 == 0 { other } else { base };
        std::thread::sleep(PAUSE);
        let start = std::time::Instant::now();
        reconciler.reconcile(next)?;
        took.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(took)
}

/// The table and the targets, run in `ns` (where the veths are).
pub fn run(ns: &Netns) -> anyhow::Result<String> {
    ns.exec(|| -> anyhow::Result<String> {
        let (base, g0, small) = host()?;
        let limits = Limits {
            nics: u32::try_from(NICS)?,
            ..Limits::default()
        };
        let mut reconciler = Reconciler::new(Dataplane::load_with(limits)?, None);
        let start = std::time::Instant::now();
        reconciler.reconcile(&base)?;
        let first = start.elapsed().as_secs_f64() * 1000.0;

        let mut one_rule = base.clone();
        one_rule.authorize(&g0, rules(1, 8000)?.remove(0))?;
        let mut joined = base.clone();
        joined.join("m0", &small)?;
        let mut replaced = base.clone();
        let ids: Vec<_> = replaced
            .describe_group(&g0)?
            .rules
            .iter()
            .map(|r| r.id.clone())
            .collect();
        replaced.revoke_all(&g0, &ids)?;
        replaced.authorize_all(&g0, rules(RULES, 20_000)?)?;

        let mut out = format!(
            "\n| host scale: {NICS} NICs × 1,000 rules, until in force | ms (median of {CALLS}) | min | max |\n| --- | --- | --- | --- |\n\
             | the whole host, first time | {first:.1} | - | - |\n"
        );
        let mut medians = Vec::new();
        for (what, next) in [
            ("one rule added to (removed from) one NIC's group", &one_rule),
            ("one NIC joins (leaves) a group", &joined),
            ("one group's 998 rules replaced at once", &replaced),
        ] {
            let (med, min, max) = crate::report::stats(alternate(&mut reconciler, &base, next)?);
            medians.push(med);
            let _ = writeln!(out, "| {what} | {med:.1} | {min:.1} | {max:.1} |");
        }
        let verdict = crate::report::verdict;
        let _ = writeln!(
            out,
            "\n| target | measured | result |\n| --- | --- | --- |\n\
             | one-rule change, {NICS} NICs × 1,000 rules, in force ≤ 10 ms | {:.1} ms | {} |\n\
             | membership change, same host, in force ≤ 10 ms | {:.1} ms | {} |\n\
             | a group's whole rule set (≈ 1,000 rules) applied, same host, ≤ 50 ms | {:.1} ms | {} |",
            medians[0],
            verdict(medians[0] <= 10.0),
            medians[1],
            verdict(medians[1] <= 10.0),
            medians[2],
            verdict(medians[2] <= 50.0),
        );
        Ok(out)
    })?
}
