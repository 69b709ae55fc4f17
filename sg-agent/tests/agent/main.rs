//! The agent's tests that need no root: no namespace, no eBPF, no kernel
//! beyond files, sockets and processes of its own. The API's requests as the
//! daemon reads them, the command line as a client of a fake daemon, the
//! metrics text and its server, snapshots, and the SQLite store.
//!
//! A test that needs root (a namespace, an interface, a loaded program, the
//! daemon serving a namespace) belongs in `tests/daemon`, not here, so this
//! binary runs anywhere.

mod api_requests;
mod cli_client;
mod environment;
mod fleet_store;
mod metrics;
mod packaging;
mod snapshot;
mod store;
mod support;
