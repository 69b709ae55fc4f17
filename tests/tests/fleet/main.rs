//! The fleet store's real parts: etcd servers started by the harness
//! (`sg_tests::etcd`: one member, a three-member cluster, TLS with client
//! certificates, etcd's own authentication), used through the etcd-client
//! crate as the agent uses them. Needs no root: etcd listens on loopback
//! ports of its own, its data in a temporary directory.
//!
//! `etcd`: what the fleet store relies on from etcd 3.4 and the client
//! (put and get, transactions conditioned on a key's revision, watches from
//! a revision and their compaction, leases), each variant of the harness,
//! and the harness checking itself (pause, restart, cleanup).

mod etcd;
mod touched;

/// A runtime for one test: the harness is synchronous, the client async, so
/// a test drives the client with `block_on` between harness calls (never
/// inside one, where a blocked runtime would stall the client's connections).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}
