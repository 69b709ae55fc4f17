//! Test harness for sg.
//!
//! - [`topology`]: uniquely named network namespaces, veth pairs and fabrics
//!   (host namespaces on one bridge), removed on drop even when a test panics;
//! - [`probe`]: TCP, UDP and ping probes between namespaces, and echo servers;
//! - [`capture`]: an `AF_PACKET` capture that classifies frames independently
//!   of the eBPF parser, to check its counters against;
//! - [`packet`]: a builder for crafted frames with known header boundaries;
//! - [`testrun`]: run a loaded program on a frame through `BPF_PROG_TEST_RUN`;
//! - [`workspace`]: the build output and cargo, for the demo and the benchmark;
//! - [`etcd`]: real etcd servers on loopback (one member or a cluster, TLS,
//!   authentication) for the fleet store, stopped and removed on drop.
//!
//! Everything here but [`etcd`] needs root. Nothing skips itself.

pub mod agent;
pub mod bench;
pub mod capture;
pub mod classify;
pub mod daemon;
pub mod etcd;
pub mod flow;
pub mod packet;
pub mod policygen;
pub mod probe;
pub mod testrun;
pub mod topology;
pub mod workspace;

/// Polls `cond` until it holds or `timeout` passes; returns whether it held.
/// For conditions the kernel settles asynchronously (a program is freed after
/// an RCU grace period, not when its last fd closes).
pub fn eventually(timeout: std::time::Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Whether any of the program ids in `ids` is still loaded.
pub fn any_loaded<S: std::hash::BuildHasher>(ids: &std::collections::HashSet<u32, S>) -> bool {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .any(|p| ids.contains(&p.id()))
}

/// How many BPF links attach one of the programs in `ids`.
pub fn links_of<S: std::hash::BuildHasher>(ids: &std::collections::HashSet<u32, S>) -> usize {
    aya::programs::loaded_links()
        .filter_map(Result::ok)
        .filter(|l| ids.contains(&l.program_id()))
        .count()
}

/// Reads `read` until two readings `gap` apart are equal (nothing moved in
/// between), and returns that reading; `None` if that never happens within
/// `timeout`. For starting exact counts on a quiet link: a new interface talks
/// on its own for a while, and a frame in flight would be counted by one side
/// only.
pub fn steady<T: PartialEq>(
    timeout: std::time::Duration,
    gap: std::time::Duration,
    mut read: impl FnMut() -> T,
) -> Option<T> {
    let deadline = std::time::Instant::now() + timeout;
    let mut last = read();
    while std::time::Instant::now() < deadline {
        std::thread::sleep(gap);
        let now = read();
        if now == last {
            return Some(now);
        }
        last = now;
    }
    None
}
