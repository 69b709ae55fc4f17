//! The kernel edge: loading the eBPF object, attaching its programs to an
//! interface, detaching them, and reading the maps.

mod counters;
pub mod droplog;
mod loader;
mod lock;
mod pins;
mod record;
pub mod sessions;
mod writer;

pub use counters::Counters;
pub use loader::{AttachMode, Dataplane, Error, Limits, driver};
pub use lock::{Holder, LockError, NamespaceLock};
pub use pins::{CleanupReport, cleanup, pin_root};
pub use record::{Enforced, inspect};
pub use writer::{Binding, RuleHits};
