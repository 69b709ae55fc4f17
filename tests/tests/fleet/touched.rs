//! `sg_policy::touched` against the compiler: a NIC the analysis calls
//! untouched by a change compiles to the same tables before and after it.
//! Pairs of random states drawn with the same id seed (so that their
//! groups, lists and NICs share ids) are mixed object by object, local NICs
//! and other hosts' NICs alike, so that changes are small and of every kind.

use std::collections::BTreeMap;

use sg_policy::{Direction, NicBinding, State, compile::compile, touched::Touched};
use sg_tests::policygen::{Rng, Shape, random_state};

/// Takes each of `b`'s entries (or its absence) into `a` with `percent`
/// chance.
fn mix<K: Ord + Clone, V: Clone>(
    rng: &mut Rng,
    a: &mut BTreeMap<K, V>,
    b: &BTreeMap<K, V>,
    percent: usize,
) {
    let keys: Vec<K> = a.keys().chain(b.keys()).cloned().collect();
    for k in keys {
        if rng.chance(percent) {
            match b.get(&k) {
                Some(v) => a.insert(k, v.clone()),
                None => a.remove(&k),
            };
        }
    }
}

/// Other hosts' NICs: copies of this state's own, in random groups of it.
fn remote(rng: &mut Rng, s: &mut State) {
    let groups: Vec<_> = s.groups.keys().cloned().collect();
    let nics: Vec<NicBinding> = s.nics.values().cloned().collect();
    for h in ["h1", "h2"] {
        for n in &nics {
            if rng.chance(60) {
                let mut r = n.clone();
                r.groups = vec![rng.pick(&groups).clone()];
                s.remote
                    .entry(h.to_owned())
                    .or_default()
                    .insert(r.name.clone(), r);
            }
        }
    }
}

#[test]
fn a_nic_the_analysis_calls_untouched_compiles_to_the_same_tables() {
    let shape = Shape {
        big_rules: 12,
        small_rules: 6,
    };
    let (mut kept, mut recompiled) = (0, 0);
    for seed in 0..1500u64 {
        let mut rng = Rng::new(seed);
        let mut old = random_state(&mut rng, seed, &shape);
        remote(&mut rng, &mut old);
        let mut other = random_state(&mut Rng::new(seed + 1_000_000), seed, &shape);
        remote(&mut rng, &mut other);
        let mut new = old.clone();
        let percent = *rng.pick(&[5, 15, 40]);
        mix(&mut rng, &mut new.groups, &other.groups, percent);
        mix(
            &mut rng,
            &mut new.prefix_lists,
            &other.prefix_lists,
            percent,
        );
        mix(&mut rng, &mut new.port_lists, &other.port_lists, percent);
        mix(&mut rng, &mut new.nics, &other.nics, percent);
        for h in ["h1", "h2"] {
            let (mut a, b) = (
                new.remote.remove(h).unwrap_or_default(),
                other.remote.get(h).cloned().unwrap_or_default(),
            );
            mix(&mut rng, &mut a, &b, percent);
            if !a.is_empty() {
                new.remote.insert(h.to_owned(), a);
            }
        }
        let touched = Touched::between(&old, &new);
        for nic in new.nics.keys() {
            if touched.nic(old.nics.get(nic), &new, nic) {
                recompiled += 1;
                continue;
            }
            kept += 1;
            for d in [Direction::Ingress, Direction::Egress] {
                assert_eq!(
                    format!("{:?}", compile(&old, nic, d)),
                    format!("{:?}", compile(&new, nic, d)),
                    "seed {seed}: NIC {nic} ({d:?}) called untouched but compiles otherwise"
                );
            }
        }
    }
    // Both sides drawn often enough for the test to mean something.
    assert!(
        kept > 500 && recompiled > 500,
        "kept {kept}, recompiled {recompiled}"
    );
}

/// The analysis on a fleet's typical change: one NIC of another host joins
/// a group; only the local NICs whose rules name that group recompile.
#[test]
fn a_remote_nic_joining_a_group_touches_only_the_nics_naming_it() {
    use sg_policy::{BindingMode, GroupSpec, RuleSpec};
    let mut s = State::with_seed(3);
    let web = s.create_group(GroupSpec::basic("web")).unwrap();
    let db = s.create_group(GroupSpec::basic("db")).unwrap();
    let cache = s.create_group(GroupSpec::basic("cache")).unwrap();
    s.authorize(
        &db,
        RuleSpec::from_text("ingress", "Allow", "1", "TCP", "3306/3306", web.as_str()).unwrap(),
    )
    .unwrap();
    let ip = |a: &str| vec![a.parse().unwrap()];
    s.bind_nic(NicBinding::new(
        "db0",
        BindingMode::Local,
        ip("10.0.0.1"),
        vec![db.clone()],
    ))
    .unwrap();
    s.bind_nic(NicBinding::new(
        "c0",
        BindingMode::Local,
        ip("10.0.0.2"),
        vec![cache],
    ))
    .unwrap();
    let mut next = s.clone();
    next.remote.entry("b".to_owned()).or_default().insert(
        "eth0".to_owned(),
        NicBinding::new("eth0", BindingMode::Local, ip("10.0.1.1"), vec![web]),
    );
    let t = Touched::between(&s, &next);
    assert!(t.nic(s.nics.get("db0"), &next, "db0"));
    assert!(!t.nic(s.nics.get("c0"), &next, "c0"));
}
