//! Declarative apply: a whole desired state from one YAML or JSON document,
//! and the difference between two states.
//!
//! `sg-agent apply -f FILE` sends a [`Document`]; the daemon computes the new
//! [`State`] with [`desired`] in one transaction (all or nothing) and shows
//! [`diff`]. [`document_of`] is the way back (`export`): applying the export of
//! a state changes nothing.
//!
//! - [`document`]: the document, read ([`parse`]) and written ([`document_of`]);
//! - [`resolve`]: the desired state a document asks for ([`desired`]);
//! - [`diff`](mod@diff): the changes between two states ([`diff()`]);
//! - [`sweep`]: applies that would leave nothing bound, refused unless asked.

mod diff;
mod document;
mod resolve;
mod sweep;

pub use diff::{Change, Kind, Op, diff, rule_text};
pub use document::{
    Document, EMPTY_DOCUMENT, GroupDoc, NicDoc, PortEntryDoc, PortListDoc, PrefixEntryDoc,
    PrefixListDoc, RuleDoc, Scalar, document_of, parse,
};
pub use resolve::desired;
pub use sweep::{Sweep, check_sweep};
