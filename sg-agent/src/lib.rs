//! sg-agent: the user-space half of sg.
//!
//! Pure parts (no I/O, tested without root): [`policy`] — model, validation,
//! reference evaluator, operations, import/export; [`compile`] — rules to map
//! images.
//! Kernel edges: [`dataplane`] — loading, attaching and reading the eBPF
//! programs; [`netns`] — entering network namespaces.

pub mod api;
pub mod clock;
pub mod compile;
pub mod daemon;
pub mod dataplane;
pub mod enforce;
pub mod metrics;
pub mod netlink;
pub mod netns;
pub mod policy;
pub mod snapshot;
pub mod store;
