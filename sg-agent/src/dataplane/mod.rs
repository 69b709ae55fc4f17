//! The kernel edge: loading the eBPF object, attaching its programs to an
//! interface, detaching them, and reading and writing the maps.

mod adopt;
mod counters;
pub mod droplog;
mod explain;
pub mod faults;
mod grace;
mod image;
mod loader;
mod lock;
mod mapio;
mod pins;
mod record;
pub mod sessions;
mod verify;
mod writer;

pub use counters::Counters;
pub use explain::KernelDecision;
pub use image::{ImageCounts, table_image_counts};
pub use loader::{AttachMode, Dataplane, Error, Limits, driver};
pub use lock::{Holder, LockError, NamespaceLock};
pub use pins::{CleanupReport, cleanup, pin_root};
pub use record::{Enforced, inspect, netns_cookie};
pub use verify::{Drift, Expected, Repair};
pub use writer::{Binding, RuleHits};
