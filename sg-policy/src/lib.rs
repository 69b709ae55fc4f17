//! The policy library: SPEC §1 (objects), §2 (limits), §3 (deciding one packet),
//! §4 (sessions, as a model) and §5 (operations), and the compiler from a NIC's
//! rules to the images of the kernel's tables. Pure: no I/O, no kernel, no root;
//! it builds and tests without the eBPF toolchain, and the agent crate
//! (`sg-agent`) puts what it computes in force.
//!
//! - [`model`]: the objects and the [`State`] that holds them; [`ids`], [`addr`];
//!   [`census`]: the other hosts' NICs no rule here names, counted.
//! - [`validate`]: every limit and shape rule; [`error`]: the error type.
//! - [`ops`]: the operations (transactional methods on [`State`]);
//!   [`templates`], [`redundancy`], import/export in [`io_json`] and [`io_csv`]
//!   over [`rule_record`].
//! - [`merge`]: a NIC's merged, sorted, resolved rules — the compiler's input.
//! - [`evaluate`](mod@evaluate): the reference evaluator — the kernel's oracle.
//! - [`session_model`]: the reference session model (step 4) around it.
//! - [`apply`]: declarative apply, a whole desired state and its diff.
//! - [`snapshot`]: when a group's rules are backed up, restore, retention.
//! - [`compile`]: a NIC's merged rules to the images of its map tables, in the
//!   layouts `sg-common` shares with the eBPF programs; [`touched`]: which
//!   NICs' tables a change can alter.
//!
//! Semantics decisions are in `docs/policy.md`.

pub mod addr;
pub mod apply;
pub mod census;
pub mod compile;
pub mod error;
pub mod evaluate;
pub mod ids;
pub mod io_csv;
pub mod io_json;
pub mod merge;
pub mod model;
pub mod ops;
pub mod redundancy;
pub mod rule_record;
pub mod session_model;
pub mod snapshot;
pub mod templates;
pub mod touched;
pub mod validate;

pub use addr::{Cidr, Family};
pub use error::{DeleteBlocker, PolicyError};
pub use evaluate::{
    AlwaysAllowed, Decision, Fragment, Frame, Packet, Quoted, Reason, SpoofCheck, Verdict,
    evaluate, evaluate_before_sessions, evaluate_frame, evaluate_rules, starts_session,
};
pub use ids::{GroupId, PortListId, PrefixListId, RuleId};
pub use io_csv::{csv_file_name, export_csv, import_csv};
pub use io_json::{export_json, import_json, json_file_name};
pub use merge::{NicDefaults, PortMatch, ResolvedRule, merged_rules, nic_defaults};
pub use model::{
    Action, BindingMode, Direction, GroupType, InnerPolicy, NicBinding, Peer, PortList,
    PortListEntry, PortRange, PortSpec, PrefixList, PrefixListEntry, Protocol, Rule, RuleSpec,
    SecurityGroup, SessionTimeouts, Settings, State,
};
pub use ops::{CloneOptions, GroupChange, GroupSpec, PortListSpec, PrefixListSpec};
pub use redundancy::{Redundancy, health_check};
pub use rule_record::{ImportReport, ImportedRule, SkippedRule};
pub use session_model::{Endpoint, SessionView, Sessions, TcpState};
pub use templates::Template;
pub use validate::validate_state;
