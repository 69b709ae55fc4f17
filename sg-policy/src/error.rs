//! The one error type of the policy library.
//!
//! Every variant names the field (a path such as `rule.priority` or
//! `Permissions[3].PortRange`), the offending value and the limit or rule it broke,
//! so an operator can fix the input from the message alone.

use std::fmt;

use thiserror::Error;

/// Why a policy operation or a validation was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PolicyError {
    /// A value cannot be parsed or has an impossible shape.
    #[error("{field}: {value:?} is invalid: {reason}")]
    Invalid {
        field: String,
        value: String,
        reason: String,
    },
    /// A number lies outside its allowed range.
    #[error("{field}: {value} is outside {limit}")]
    OutOfRange {
        field: String,
        value: String,
        limit: String,
    },
    /// A count limit (SPEC §2, or a size limit of this library) would be exceeded.
    #[error("{field}: {value} exceeds the limit of {limit} {what}")]
    LimitExceeded {
        field: String,
        value: usize,
        limit: usize,
        what: &'static str,
    },
    /// Something referenced does not exist.
    #[error("{field}: {kind} {id} does not exist")]
    NotFound {
        field: String,
        kind: &'static str,
        id: String,
    },
    /// Something to be created exists already.
    #[error("{field}: {kind} {id} already exists")]
    AlreadyExists {
        field: String,
        kind: &'static str,
        id: String,
    },
    /// A managed group is read-only (SPEC §1).
    #[error("security group {group} is managed: it is read-only, {operation} refused")]
    Managed {
        group: String,
        operation: &'static str,
    },
    /// Enterprise groups may neither name a group as peer nor be named (SPEC §2),
    /// and have no intra-group policy (SPEC §1).
    #[error("{field}: {value} refused: {reason}")]
    Enterprise {
        field: String,
        value: String,
        reason: &'static str,
    },
    /// All groups of one NIC must be of the same type (SPEC §1, §2).
    #[error(
        "nics[{nic}].groups: {first} is {first_type} but {other} is {other_type}; all groups of a NIC must be the same type"
    )]
    MixedGroupTypes {
        nic: String,
        first: String,
        first_type: String,
        other: String,
        other_type: String,
    },
    /// A group cannot be deleted (SPEC §5); every reason that applies is listed.
    #[error("security group {group} cannot be deleted: {}", join(blockers))]
    DeleteRefused {
        group: String,
        blockers: Vec<DeleteBlocker>,
    },
    /// A prefix list or port list cannot be deleted while a rule names it.
    #[error("{kind} {id} cannot be deleted: rule {rule} of security group {group} references it")]
    InUse {
        kind: &'static str,
        id: String,
        group: String,
        rule: String,
    },
    /// The rule matches exactly what an existing rule of the group matches, with the
    /// same action and priority.
    #[error("{field}: duplicates rule {existing} of security group {group}")]
    DuplicateRule {
        field: String,
        group: String,
        existing: String,
    },
    /// An apply would unbind every NIC or delete every security group, and
    /// was not told that this is meant.
    #[error(
        "apply refused, nothing changed: {what}; if that is meant, apply again with allow_delete_all (sg-agent apply --allow-delete-all)"
    )]
    Sweeping { what: String },
    /// A field of an imported record is none of the documents' fields.
    #[error(
        "{field}: unknown field {name:?} (a misspelt field would be read as absent); the fields are {expected}"
    )]
    UnknownField {
        field: String,
        name: String,
        expected: String,
    },
    /// Free text holds a character that would change what a terminal
    /// shows (SPEC §6: bad input gets a clear error).
    #[error(
        "{field}: {class} U+{code:04X} at character {position} is not allowed (free text takes no control, bidirectional formatting or line separator characters)"
    )]
    ForbiddenCharacter {
        field: String,
        code: u32,
        position: usize,
        class: &'static str,
    },
    /// An import or export document is not readable as a whole.
    #[error("{format} document: {reason}")]
    Document {
        format: &'static str,
        reason: String,
    },
}

/// One reason a security group cannot be deleted (SPEC §5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeleteBlocker {
    /// A NIC binding lists the group.
    UsedByNic(String),
    /// A rule of another group names the group as its peer.
    ReferencedByRule { group: String, rule: String },
    /// The group's deletion protection is on.
    DeletionProtection,
    /// The group is managed (read-only).
    Managed,
}

impl fmt::Display for DeleteBlocker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UsedByNic(nic) => write!(f, "NIC {nic} uses it"),
            Self::ReferencedByRule { group, rule } => {
                write!(f, "rule {rule} of security group {group} names it as peer")
            }
            Self::DeletionProtection => f.write_str("deletion protection is on"),
            Self::Managed => f.write_str("it is managed (read-only)"),
        }
    }
}

fn join(blockers: &[DeleteBlocker]) -> String {
    blockers
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl PolicyError {
    /// `field` holds `value`, which is refused for `reason`.
    pub fn invalid(
        field: impl Into<String>,
        value: impl fmt::Display,
        reason: impl Into<String>,
    ) -> Self {
        Self::Invalid {
            field: field.into(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }

    /// `field` holds `value`, beyond `limit`.
    pub fn out_of_range(
        field: impl Into<String>,
        value: impl fmt::Display,
        limit: impl Into<String>,
    ) -> Self {
        Self::OutOfRange {
            field: field.into(),
            value: value.to_string(),
            limit: limit.into(),
        }
    }

    /// `field` names the `kind` `id`, which does not exist.
    pub fn not_found(field: impl Into<String>, kind: &'static str, id: impl fmt::Display) -> Self {
        Self::NotFound {
            field: field.into(),
            kind,
            id: id.to_string(),
        }
    }
}

/// How a request names what it makes. Ids the system gives new objects
/// inside a request (a new group, its rules, a clone, an import's rules, an
/// apply document's objects) were never seen by the user: an error of that
/// request names instead what the user gave (`group`, `rules[2]`,
/// `Permissions[0]`, `groups[1]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Labels {
    /// Field paths rooted at an object (`groups[sg-…]`) and what replaces
    /// that root (`group`).
    paths: Vec<(String, String)>,
    /// Ids (`sg-…`, `sgr-…`) and how an error mentions them instead.
    ids: Vec<(String, String)>,
}

impl Labels {
    /// Paths under `root` (`groups[sg-…]`) start with `label` instead.
    pub fn path(&mut self, root: String, label: impl Into<String>) {
        self.paths.push((root, label.into()));
    }

    /// An error that mentions `id` mentions `label` instead.
    pub fn id(&mut self, id: impl fmt::Display, label: impl Into<String>) {
        self.ids.push((id.to_string(), label.into()));
    }

    /// Whether no label was given.
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty() && self.ids.is_empty()
    }

    /// `err` naming what the user gave instead of the ids of this request.
    pub fn apply(&self, mut err: PolicyError) -> PolicyError {
        if self.is_empty() {
            return err;
        }
        let path = |field: &mut String| {
            if let Some((from, to)) = self
                .paths
                .iter()
                .filter(|(from, _)| {
                    field.starts_with(from.as_str())
                        && matches!(field.as_bytes().get(from.len()), None | Some(b'.' | b' '))
                })
                .max_by_key(|(from, _)| from.len())
            {
                *field = format!("{to}{}", &field[from.len()..]);
            }
        };
        let id = |text: &mut String| {
            if let Some((_, to)) = self.ids.iter().find(|(from, _)| from == text) {
                text.clone_from(to);
            }
        };
        match &mut err {
            PolicyError::Invalid { field, value, .. }
            | PolicyError::OutOfRange { field, value, .. }
            | PolicyError::Enterprise { field, value, .. } => {
                path(field);
                id(value);
            }
            PolicyError::LimitExceeded { field, .. }
            | PolicyError::UnknownField { field, .. }
            | PolicyError::ForbiddenCharacter { field, .. } => path(field),
            PolicyError::NotFound { field, id: x, .. }
            | PolicyError::AlreadyExists { field, id: x, .. } => {
                path(field);
                id(x);
            }
            PolicyError::DuplicateRule {
                field,
                group,
                existing,
            } => {
                path(field);
                id(group);
                id(existing);
            }
            PolicyError::MixedGroupTypes { first, other, .. } => {
                id(first);
                id(other);
            }
            PolicyError::Managed { group, .. } => id(group),
            PolicyError::DeleteRefused { group, blockers } => {
                id(group);
                for b in blockers {
                    if let DeleteBlocker::ReferencedByRule { group, rule } = b {
                        id(group);
                        id(rule);
                    }
                }
            }
            PolicyError::InUse {
                id: x, group, rule, ..
            } => {
                id(x);
                id(group);
                id(rule);
            }
            PolicyError::Sweeping { .. } | PolicyError::Document { .. } => {}
        }
        err
    }
}

/// The value of `options` whose name is `text` (ignoring case and surrounding
/// blanks), or an error naming `field` and listing the names.
pub(crate) fn one_of<T: Copy>(
    field: &str,
    text: &str,
    options: &[(&str, T)],
) -> Result<T, PolicyError> {
    options
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(text.trim()))
        .map(|(_, v)| *v)
        .ok_or_else(|| {
            let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
            PolicyError::invalid(field, text, format!("must be one of {}", names.join(", ")))
        })
}
