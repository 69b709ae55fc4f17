//! The data plane's programs run on crafted packets with `BPF_PROG_TEST_RUN`:
//! the parser, the differential test against the reference evaluator, the
//! verifier's margin, sessions, the drop log, and packets that once passed
//! where the rules deny them. Each test loads its own data plane (its own
//! maps) in this process; a namespace, where one is made, only holds the
//! interface a NIC is bound to. No traffic flows.
//!
//! A test that sends real packets between namespaces belongs in `tests/e2e`.

mod differential;
mod droplog;
mod fail_closed;
mod parser;
mod sessions;
mod verifier;
