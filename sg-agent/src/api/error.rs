//! The one error body of the API: `{"kind": …, "field": …, "message": …}`,
//! with the HTTP status its kind means.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sg_policy::{DeleteBlocker, PolicyError};

/// What kind of refusal an error is; each maps to one HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request is malformed or a value breaks a limit (400).
    Invalid,
    /// The path or a field names something that does not exist (404).
    NotFound,
    /// The path exists but not with this method (405).
    MethodNotAllowed,
    /// It exists already, duplicates something, or sweeps everything (409).
    Conflict,
    /// Something else still uses it (409).
    InUse,
    /// The request body is longer than the limit (413).
    TooLarge,
    /// A managed group is read-only (423).
    Managed,
    /// Deletion protection refuses it (403).
    Protected,
    /// A change asked on the read-only socket (403).
    ReadOnly,
    /// The store (or the data plane) cannot take the change now (503).
    Unavailable,
    /// The agent failed on its side (500).
    Internal,
}

impl ErrorKind {
    /// The HTTP status code of this kind.
    pub fn status(self) -> u16 {
        match self {
            Self::Invalid => 400,
            Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::Conflict | Self::InUse => 409,
            Self::TooLarge => 413,
            Self::Managed => 423,
            Self::Protected | Self::ReadOnly => 403,
            Self::Unavailable => 503,
            Self::Internal => 500,
        }
    }
}

/// Why the agent refused a request: the one error body of every route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub kind: ErrorKind,
    /// The offending field as a path (`rules[2].priority`), when one is to
    /// blame.
    #[serde(default)]
    pub field: Option<String>,
    /// What is wrong, naming the value and the limit it broke.
    pub message: String,
}

impl ApiError {
    pub fn new(kind: ErrorKind, field: Option<&str>, message: impl Into<String>) -> Self {
        Self {
            kind,
            field: field.map(str::to_owned),
            message: message.into(),
        }
    }

    /// A malformed request or a value out of its limits, blaming `field`.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Invalid, Some(field), message)
    }

    /// The store or the data plane cannot take the change now.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, None, message)
    }

    /// The agent failed on its side.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, None, message)
    }

    /// The HTTP status code of this error.
    pub fn status(&self) -> u16 {
        self.kind.status()
    }
}

impl From<PolicyError> for ApiError {
    fn from(e: PolicyError) -> Self {
        let message = e.to_string();
        let (kind, field) = match &e {
            PolicyError::Invalid { field, .. }
            | PolicyError::OutOfRange { field, .. }
            | PolicyError::LimitExceeded { field, .. }
            | PolicyError::UnknownField { field, .. }
            | PolicyError::ForbiddenCharacter { field, .. }
            | PolicyError::Enterprise { field, .. } => (ErrorKind::Invalid, Some(field.clone())),
            PolicyError::MixedGroupTypes { nic, .. } => {
                (ErrorKind::Invalid, Some(format!("nics[{nic}].groups")))
            }
            PolicyError::Document { .. } => (ErrorKind::Invalid, None),
            PolicyError::NotFound { field, .. } => (ErrorKind::NotFound, Some(field.clone())),
            PolicyError::AlreadyExists { field, .. } | PolicyError::DuplicateRule { field, .. } => {
                (ErrorKind::Conflict, Some(field.clone()))
            }
            PolicyError::Sweeping { .. } => (ErrorKind::Conflict, None),
            PolicyError::InUse { .. } => (ErrorKind::InUse, None),
            PolicyError::Managed { .. } => (ErrorKind::Managed, None),
            PolicyError::DeleteRefused { blockers, .. } => (delete_kind(blockers), None),
        };
        Self {
            kind,
            field,
            message,
        }
    }
}

/// A refused delete is a managed group's (423) or a protected one's (403)
/// when that is the whole reason, else something still uses the group (409).
fn delete_kind(blockers: &[DeleteBlocker]) -> ErrorKind {
    let only = |b: &DeleteBlocker| blockers.iter().all(|x| x == b);
    if only(&DeleteBlocker::Managed) {
        ErrorKind::Managed
    } else if only(&DeleteBlocker::DeletionProtection) {
        ErrorKind::Protected
    } else if blockers.contains(&DeleteBlocker::Managed) {
        ErrorKind::Managed
    } else {
        ErrorKind::InUse
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_policy_error_names_its_status() {
        let e = ApiError::from(PolicyError::invalid("rule.priority", "0", "must be 1..100"));
        assert_eq!(
            (e.status(), e.field.as_deref()),
            (400, Some("rule.priority"))
        );
        let e = ApiError::from(PolicyError::not_found("group", "security group", "sg-x"));
        assert_eq!(e.status(), 404);
        let refused = |blockers| PolicyError::DeleteRefused {
            group: "sg-x".into(),
            blockers,
        };
        let e = ApiError::from(refused(vec![DeleteBlocker::DeletionProtection]));
        assert_eq!(e.status(), 403);
        let e = ApiError::from(refused(vec![DeleteBlocker::UsedByNic("v0".into())]));
        assert_eq!(e.status(), 409);
        let e = ApiError::from(refused(vec![
            DeleteBlocker::DeletionProtection,
            DeleteBlocker::Managed,
        ]));
        assert_eq!(e.status(), 423);
    }
}
