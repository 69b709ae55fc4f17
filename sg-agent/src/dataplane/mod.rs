//! The kernel edge: loading the eBPF object, attaching its programs to an
//! interface, detaching them, and reading and writing the maps.

mod adopt;
mod counters;
pub mod droplog;
mod error;
mod explain;
pub mod faults;
mod grace;
mod image;
mod links;
mod loader;
mod lock;
mod mapio;
mod maps;
mod nics;
mod pins;
mod programs;
mod record;
mod rule_counters;
pub mod session_table;
mod verify;
mod writer;

pub use counters::Counters;
pub use error::Error;
pub use explain::KernelDecision;
pub use image::{ImageCounts, table_image_counts};
pub use links::AttachMode;
pub use loader::{Dataplane, Limits, MapMemory};
pub use lock::{Holder, LockError, NamespaceLock};
pub use maps::Maps;
pub use nics::Binding;
pub use pins::{CleanupReport, cleanup, pin_root};
pub use record::{Enforced, inspect, netns_cookie};
pub use rule_counters::RuleHits;
pub use verify::{Drift, Expected, Repair};
