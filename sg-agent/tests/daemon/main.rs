//! The agent's tests that need root: the agent as an operator runs it (`run`
//! and the CLI against it, `attach`, `cleanup`), a real process serving a
//! network namespace of its own with real traffic through it; and the link
//! watcher against real netlink.
//!
//! Each test makes its own namespaces, sockets, stores and pin directories
//! (unique names from the harness), so the tests run side by side, and
//! beside other agents on the host. A test that needs none of this belongs
//! in `tests/agent`.

mod api;
mod apply;
mod attach;
mod fail_closed;
mod faults;
mod fleet;
mod fleet_concurrency;
mod fleet_fabric;
mod http;
mod input;
mod lifecycle;
mod netlink_watch;
mod observe;
mod ops;
mod persistence;
mod restart;
mod sessions;
mod support;
mod systemd;
