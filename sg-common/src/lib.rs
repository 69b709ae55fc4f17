//! The only definition of what the sg eBPF programs and the agent both see:
//! map names and capacities, counter numbers, verdict codes.
//!
//! Everything here is `#[repr(C)]` or a plain integer constant: map contents are
//! never read back as Rust enums (a bad bit pattern would be undefined behaviour).
//! When a key or value layout changes, the map's name changes too (`…_V2`), so a
//! map pinned by an older agent is never read with the new layout.
#![no_std]

pub mod agent;
mod checks;
pub mod conntrack;
pub mod counter;
pub mod droplog;
pub mod maps;
pub mod policy;
pub mod reason;

#[cfg(feature = "user")]
mod pod;
