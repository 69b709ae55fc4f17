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
    reconcile::{ReconcileError, Reconciler},
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

/// A data plane loaded for `nics` NICs with `state` put in force the first
/// time: the reconciler, how long that took (ms), and whether it succeeded.
fn first_time(
    nics: usize,
    state: &State,
) -> anyhow::Result<(Reconciler, f64, Result<(), ReconcileError>)> {
    let limits = Limits {
        nics: u32::try_from(nics)?,
        ..Limits::default()
    };
    let mut reconciler = Reconciler::new(Dataplane::load_with(limits)?, None);
    let start = std::time::Instant::now();
    let done = reconciler.reconcile(state).map(drop);
    Ok((reconciler, start.elapsed().as_secs_f64() * 1000.0, done))
}

/// The table and the targets, run in `ns` (where the veths are).
pub fn run(ns: &Netns) -> anyhow::Result<String> {
    ns.exec(|| -> anyhow::Result<String> {
        let (base, g0, small) = host()?;
        let (mut reconciler, first, done) = first_time(NICS, &base)?;
        done?;

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

/// Members of the large group (issue 16 item 7).
const MEMBERS: usize = 10_000;
/// Local NICs whose rules name it.
const NAMING: usize = 64;

/// The large group: `MEMBERS` NICs of 100 other hosts in group `peers`,
/// named as the peer of a rule of group `users`, which `NAMING` local NICs
/// are in. Returns the state and one more remote NIC to join the group.
fn large_group() -> anyhow::Result<(State, NicBinding)> {
    let mut s = State::with_seed(17);
    let peers = s.create_group(GroupSpec::basic("peers"))?;
    let users = s.create_group(GroupSpec::basic("users"))?;
    s.authorize_all(
        &users,
        vec![RuleSpec::from_text(
            "ingress",
            "Allow",
            "1",
            "TCP",
            "22/22",
            peers.as_str(),
        )?],
    )?;
    for i in 0..NAMING {
        let octet = u8::try_from(i)?;
        s.bind_nic(NicBinding::new(
            &format!("m{i}"),
            BindingMode::Local,
            vec![format!("10.3.{octet}.1").parse()?],
            vec![users.clone()],
        ))?;
    }
    let member = |k: usize| -> anyhow::Result<NicBinding> {
        let (hi, lo) = (u8::try_from(k / 250)?, u8::try_from(k % 250 + 1)?);
        Ok(NicBinding::new(
            &format!("eth{}", k % 100),
            BindingMode::Local,
            vec![format!("10.100.{hi}.{lo}").parse()?],
            vec![peers.clone()],
        ))
    };
    for k in 0..MEMBERS {
        s.remote
            .entry(format!("host{}", k / 100))
            .or_default()
            .insert(format!("eth{}", k % 100), member(k)?);
    }
    let joining = member(MEMBERS)?;
    Ok((s, joining))
}

/// Item 7: entries, memory, compile and a member joining and leaving.
pub fn large(ns: &Netns) -> anyhow::Result<String> {
    ns.exec(|| -> anyhow::Result<String> {
        let (base, joining) = large_group()?;
        let (mut reconciler, compile, first) = first_time(NAMING, &base)?;
        let verdict = crate::report::verdict;
        let mut out = format!(
            "\n| large group: {MEMBERS} members named by rules on {NAMING} NICs | measured |\n| --- | --- |\n"
        );
        if let Err(e) = first {
            let _ = writeln!(
                out,
                "| the policy put in force | refused after {compile:.0} ms: {e} |\n\n\
                 | target | measured | result |\n| --- | --- | --- |\n\
                 | entries grow as members + NICs; compile ≤ 100 ms; a member joining or leaving ≤ 10 ms | refused by the data plane's capacity | {} |",
                verdict(false)
            );
            return Ok(out);
        }
        let mut prefixes = 0;
        for i in 0..NAMING {
            if let Some((ingress, egress)) = reconciler.tables(&format!("m{i}")) {
                for t in [ingress, egress] {
                    let c = sg_agent::dataplane::table_image_counts(t);
                    prefixes += c.addr4 + c.addr6;
                }
            }
        }
        let memory: u64 = reconciler
            .dataplane()
            .map_memory()?
            .iter()
            .map(|m| m.bytes)
            .sum();
        #[expect(clippy::cast_precision_loss, reason = "for display")]
        let mib = memory as f64 / 1_048_576.0;
        let mut joined = base.clone();
        joined
            .remote
            .entry("host-new".to_owned())
            .or_default()
            .insert(joining.name.clone(), joining);
        let product = MEMBERS * NAMING;
        // Refused when the tables of both slots do not fit while one is
        // rewritten.
        let join_ms = alternate(&mut reconciler, &base, &joined).map(|t| crate::report::stats(t).0);
        let joins = match &join_ms {
            Ok(m) => format!("{m:.1} ms (median of {CALLS})"),
            Err(e) => format!("refused: {e}"),
        };
        let _ = writeln!(
            out,
            "| compile and put in force, first time | {compile:.0} ms |\n\
             | prefix entries of the {NAMING} NICs' tables in force (one slot each) | {prefixes} (members × NICs = {product}) |\n\
             | kernel memory of all maps | {mib:.1} MiB |\n\
             | a member joining (leaving), until in force | {joins} |\n\n\
             | target | measured | result |\n| --- | --- | --- |\n\
             | entries grow as members + NICs, not their product | {prefixes} for {MEMBERS} members and {NAMING} NICs | {} |\n\
             | compile ≤ 100 ms | {compile:.0} ms | {} |\n\
             | a member joining or leaving in force ≤ 10 ms | {joins} | {} |",
            verdict(prefixes <= 2 * (MEMBERS + NAMING)),
            verdict(compile <= 100.0),
            verdict(join_ms.as_ref().is_ok_and(|m| *m <= 10.0)),
        );
        Ok(out)
    })?
}
