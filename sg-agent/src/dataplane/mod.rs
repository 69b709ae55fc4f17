//! The kernel edge: loading the eBPF object, attaching its programs to an
//! interface, detaching them, and reading the maps.

mod counters;
pub mod droplog;
mod loader;
mod pins;
pub mod sessions;
mod writer;

pub use counters::Counters;
pub use loader::{AttachMode, Dataplane, Error, Limits, driver};
pub use pins::{CleanupReport, cleanup, pin_root};
pub use writer::{Binding, RuleHits};
