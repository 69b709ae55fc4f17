//! Test harness for sg.
//!
//! - [`topology`]: uniquely named network namespaces and veth pairs, removed on
//!   drop even when a test panics;
//! - [`probe`]: TCP, UDP and ping probes between namespaces, and echo servers;
//! - [`capture`]: an `AF_PACKET` capture that classifies frames independently
//!   of the eBPF parser, to check its counters against;
//! - [`packet`]: a builder for crafted frames with known header boundaries;
//! - [`testrun`]: run a loaded program on a frame through `BPF_PROG_TEST_RUN`.
//!
//! Everything here needs root. Nothing skips itself.

pub mod capture;
pub mod classify;
pub mod packet;
pub mod policygen;
pub mod probe;
pub mod testrun;
pub mod topology;
