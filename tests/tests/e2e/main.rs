//! End to end with real traffic: two network namespaces joined by a veth
//! pair, the data plane loaded in this process and attached to one end, TCP,
//! UDP and ping between them. Policies and their use cases, counters,
//! sessions, hitless updates, `port` mode, map writes failed by the fault
//! injector while traffic runs, and the harness checking itself.
//!
//! A test that only runs the programs on crafted packets belongs in
//! `tests/dataplane`.

mod counters;
mod faults;
mod harness;
mod hitless;
mod passthrough;
mod port_mode;
mod sessions;
mod use_cases;
