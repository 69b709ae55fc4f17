//! The link watcher against real netlink (root). Each test gets a fresh,
//! uniquely named namespace from the harness, removed when the test ends, failed
//! or not; the watcher is made on a thread inside it, so the host's interfaces
//! are neither seen nor touched, and interface names only need to be unique
//! within the test.
//!
//! What the daemon relies on: a veth that appears is reported with the ifindex
//! the kernel gave it, one that goes is reported gone, one re-created under the
//! same name is reported again with its new ifindex (the case that must
//! re-attach), a rename gives up the old name, and an overrun says "resync".

use std::{future::Future, time::Duration};

use sg_agent::netlink::{LinkEvent, LinkWatcher, links};
use sg_tests::topology::Netns;

/// How long any one wait for events may take.
const WAIT: Duration = Duration::from_secs(5);

/// Runs `scenario` on a thread that has entered `ns`, on a current-thread
/// runtime made there. `scenario` itself is called before the runtime runs
/// it, so a watcher made in its body (rather than in the future it returns)
/// is made outside the runtime.
fn in_namespace<'a, F: Future<Output = ()>>(
    ns: &'a Netns,
    scenario: impl FnOnce(&'a Netns) -> F + Send,
) {
    ns.exec(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(scenario(ns));
    })
    .expect("scenario in the namespace (its panic is printed above)");
}

/// Reads batches into `seen` until `done(seen)` holds; fails after [`WAIT`].
async fn wait_for(
    watcher: &mut LinkWatcher,
    seen: &mut Vec<LinkEvent>,
    what: &str,
    done: impl Fn(&[LinkEvent]) -> bool,
) {
    let waited = tokio::time::timeout(WAIT, async {
        while !done(seen) {
            let batch = watcher.next().await.expect("next");
            assert!(!batch.is_empty(), "next returned an empty batch");
            seen.extend(batch);
        }
    })
    .await;
    assert!(waited.is_ok(), "{what}: not within {WAIT:?}; saw {seen:?}");
}

fn added(ifindex: u32, name: &str) -> LinkEvent {
    LinkEvent::Added {
        ifindex,
        name: name.into(),
    }
}

fn removed(ifindex: u32, name: &str) -> LinkEvent {
    LinkEvent::Removed {
        ifindex,
        name: name.into(),
    }
}

/// Whether `seen` has an `Added` for `name`, whatever its index.
fn has_added(seen: &[LinkEvent], name: &str) -> bool {
    seen.iter()
        .any(|e| matches!(e, LinkEvent::Added { name: n, .. } if n == name))
}

fn has_removed(seen: &[LinkEvent], name: &str) -> bool {
    seen.iter()
        .any(|e| matches!(e, LinkEvent::Removed { name: n, .. } if n == name))
}

/// The ifindex of `name` as `ip` sees it in `ns` (`12: va@vb: <…>`): a reading
/// independent of the code under test.
fn ifindex(ns: &Netns, name: &str) -> u32 {
    let out = ns
        .ip(&["-o", "link", "show", "dev", name])
        .expect("ip link show");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split(':')
        .next()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no ifindex in {text:?}"))
}

fn add_veth(ns: &Netns, name: &str, peer: &str) {
    ns.ip(&["link", "add", name, "type", "veth", "peer", "name", peer])
        .expect("ip link add");
}

fn del(ns: &Netns, name: &str) {
    ns.ip(&["link", "del", name]).expect("ip link del");
}

fn listed(name: &str) -> Option<u32> {
    links()
        .expect("links")
        .into_iter()
        .find_map(|(i, n)| (n == name).then_some(i))
}

#[test]
fn veth_pair_is_added_then_removed_with_its_ifindexes() {
    let ns = Netns::new("nlw").expect("namespace");
    in_namespace(&ns, |ns| async move {
        let mut watcher = LinkWatcher::new().expect("watcher");
        add_veth(ns, "va", "vb");
        let (a, b) = (ifindex(ns, "va"), ifindex(ns, "vb"));
        let mut seen = Vec::new();
        wait_for(&mut watcher, &mut seen, "both ends added", |s| {
            has_added(s, "va") && has_added(s, "vb")
        })
        .await;
        assert!(seen.contains(&added(a, "va")), "{seen:?}");
        assert!(seen.contains(&added(b, "vb")), "{seen:?}");
        assert_eq!((listed("va"), listed("vb")), (Some(a), Some(b)));
        // Nothing but the two ends, and never a resync.
        assert!(
            seen.iter()
                .all(|e| *e == added(a, "va") || *e == added(b, "vb")),
            "{seen:?}"
        );

        del(ns, "va");
        let mut seen = Vec::new();
        wait_for(&mut watcher, &mut seen, "both ends removed", |s| {
            has_removed(s, "va") && has_removed(s, "vb")
        })
        .await;
        assert!(seen.contains(&removed(a, "va")), "{seen:?}");
        assert!(seen.contains(&removed(b, "vb")), "{seen:?}");
    });
}

/// The case the daemon must re-attach for: same name, new interface.
#[test]
fn recreated_veth_is_added_again_with_its_new_ifindex() {
    let ns = Netns::new("nlw").expect("namespace");
    in_namespace(&ns, |ns| async move {
        let mut watcher = LinkWatcher::new().expect("watcher");
        add_veth(ns, "va", "vb");
        let old = ifindex(ns, "va");
        del(ns, "va");
        let mut seen = Vec::new();
        wait_for(&mut watcher, &mut seen, "first va removed", |s| {
            s.contains(&removed(old, "va"))
        })
        .await;

        add_veth(ns, "va", "vb");
        let new = ifindex(ns, "va");
        assert_ne!(new, old, "the kernel reused the ifindex");
        let mut seen = Vec::new();
        wait_for(&mut watcher, &mut seen, "second va added", |s| {
            has_added(s, "va")
        })
        .await;
        assert!(seen.contains(&added(new, "va")), "{seen:?}");
        assert!(!seen.contains(&added(old, "va")), "{seen:?}");
        assert_eq!(listed("va"), Some(new));
    });
}

/// The veth exists before the watcher: its name is known from the dump the
/// watcher starts with, not from an event.
#[test]
fn rename_reports_the_old_name_removed() {
    let ns = Netns::new("nlw").expect("namespace");
    in_namespace(&ns, |ns| {
        add_veth(ns, "va", "vb");
        let a = ifindex(ns, "va");
        // Made outside the runtime: registered with it on the first `next`.
        let mut watcher = LinkWatcher::new().expect("watcher");
        async move {
            // A veth is made down, as renaming needs.
            ns.ip(&["link", "set", "va", "name", "vc"])
                .expect("ip link set name");
            let mut seen = Vec::new();
            wait_for(&mut watcher, &mut seen, "rename", |s| has_added(s, "vc")).await;
            let at = |e: &LinkEvent| seen.iter().position(|s| s == e);
            let (gone, came) = (at(&removed(a, "va")), at(&added(a, "vc")));
            assert!(gone.is_some() && gone < came, "{seen:?}");
            assert_eq!((listed("va"), listed("vc")), (None, Some(a)));
        }
    });
}

#[test]
fn links_lists_loopback_and_only_existing_interfaces() {
    let ns = Netns::new("nlw").expect("namespace");
    in_namespace(&ns, |ns| async move {
        let now = links().expect("links");
        // Loopback is always interface 1 of a namespace.
        assert!(now.contains(&(1, "lo".into())), "{now:?}");
        assert!(now.is_sorted(), "{now:?}");
        assert_eq!(listed("va"), None);

        add_veth(ns, "va", "vb");
        let now = links().expect("links");
        for name in ["va", "vb"] {
            assert!(
                now.contains(&(ifindex(ns, name), name.into())),
                "{name}: {now:?}"
            );
        }

        del(ns, "va");
        let now = links().expect("links");
        assert!(now.iter().all(|(_, n)| n != "va" && n != "vb"), "{now:?}");
        assert!(now.contains(&(1, "lo".into())), "{now:?}");
    });
}

/// With the smallest receive buffer the kernel allows, a burst of interfaces
/// created while nobody reads overruns it: the watcher must say so, and still
/// know the names of the interfaces whose events were lost.
#[test]
fn overrun_reports_resync_and_names_are_relearned() {
    let ns = Netns::new("nlw").expect("namespace");
    in_namespace(&ns, |ns| async move {
        let mut watcher = LinkWatcher::with_receive_buffer(0).expect("watcher");
        let pairs: Vec<(String, String)> = (0..8)
            .map(|i| (format!("va{i}"), format!("vb{i}")))
            .collect();
        for (a, b) in &pairs {
            add_veth(ns, a, b);
        }
        let mut seen = Vec::new();
        wait_for(&mut watcher, &mut seen, "resync", |s| {
            s.contains(&LinkEvent::Resync)
        })
        .await;
        let now = links().expect("links");
        for (a, b) in &pairs {
            for name in [a, b] {
                assert!(now.iter().any(|(_, n)| n == name), "{name}: {now:?}");
            }
        }

        // The last pair's events are the likeliest lost; its name must be
        // known all the same for a rename to give it up.
        let last = &pairs[pairs.len() - 1].0;
        let index = ifindex(ns, last);
        ns.ip(&["link", "set", last, "name", "vrenamed"])
            .expect("ip link set name");
        let mut seen = Vec::new();
        wait_for(&mut watcher, &mut seen, "rename after resync", |s| {
            s.contains(&removed(index, last)) && s.contains(&added(index, "vrenamed"))
        })
        .await;
    });
}
