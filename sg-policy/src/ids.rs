//! Identifiers: `sg-…` (security group), `sgr-…` (rule), `pl-…` (prefix list),
//! `prl-…` (port list).
//!
//! An id is its prefix followed by lowercase letters and digits. Ids made here are
//! 16 hex digits drawn from a seeded generator kept in the [`State`](super::State),
//! checked against every id already in the state, and stored: an id never changes
//! once given, across restarts included (the state is what is persisted).
//! Ids read from outside (imports, a shared store) keep their spelling as long as
//! it is well-formed.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::error::PolicyError;

/// The longest id accepted, prefix included.
pub const MAX_ID_LEN: usize = 64;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// The prefix every id of this kind starts with.
            pub const PREFIX: &'static str = $prefix;
            /// What the id names, for messages.
            pub const KIND: &'static str = $kind;

            /// Parses an id, naming `field` in the error.
            pub fn parse(field: &str, text: &str) -> Result<Self, PolicyError> {
                check_id(field, text, Self::PREFIX, Self::KIND)?;
                Ok(Self(text.to_owned()))
            }

            /// The id as written.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub(crate) fn from_suffix(suffix: &str) -> Self {
                Self(format!("{}{}", Self::PREFIX, suffix))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl TryFrom<String> for $name {
            type Error = PolicyError;
            fn try_from(text: String) -> Result<Self, PolicyError> {
                check_id($kind, &text, Self::PREFIX, Self::KIND)?;
                Ok(Self(text))
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }
    };
}

id_type!(
    /// A security group id, `sg-…`.
    GroupId, "sg-", "security group"
);
id_type!(
    /// A rule id, `sgr-…`.
    RuleId, "sgr-", "rule"
);
id_type!(
    /// A prefix list id, `pl-…`.
    PrefixListId, "pl-", "prefix list"
);
id_type!(
    /// A port list id, `prl-…`.
    PortListId, "prl-", "port list"
);

fn check_id(field: &str, text: &str, prefix: &str, kind: &str) -> Result<(), PolicyError> {
    let Some(suffix) = text.strip_prefix(prefix) else {
        return Err(PolicyError::invalid(
            field,
            text,
            format!("a {kind} id starts with {prefix:?}"),
        ));
    };
    if suffix.is_empty()
        || text.len() > MAX_ID_LEN
        || !suffix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        return Err(PolicyError::invalid(
            field,
            text,
            format!(
                "a {kind} id is {prefix:?} followed by 1 to {} lowercase letters or digits",
                MAX_ID_LEN - prefix.len()
            ),
        ));
    }
    Ok(())
}

/// The id generator: a seed and a counter, both persisted with the state so ids
/// keep coming out fresh after a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdGen {
    seed: u64,
    counter: u64,
}

impl IdGen {
    /// A generator with a fixed seed (tests, reproducible states).
    pub fn with_seed(seed: u64) -> Self {
        Self { seed, counter: 0 }
    }

    /// A generator seeded from the clock and the process id.
    pub fn from_entropy() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        // Folding the 128-bit nanosecond count into 64 bits: truncation is the point.
        #[expect(
            clippy::cast_possible_truncation,
            reason = "folding entropy into a seed"
        )]
        let seed = (nanos as u64) ^ ((nanos >> 64) as u64) ^ (u64::from(std::process::id()) << 32);
        Self::with_seed(seed)
    }

    /// The next 16 hex digits. Random-looking (splitmix64 of seed and counter) so
    /// ids of different hosts and states do not line up, but not secret.
    pub fn next_suffix(&mut self) -> String {
        self.counter = self.counter.wrapping_add(1);
        let mut z = self
            .seed
            .wrapping_add(self.counter.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        format!("{z:016x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_need_their_own_prefix() {
        assert!(GroupId::parse("f", "sg-abc123").is_ok());
        assert!(GroupId::parse("f", "sgr-abc123").is_err());
        assert!(RuleId::parse("f", "sgr-0f").is_ok());
        assert!(PrefixListId::parse("f", "prl-1").is_err());
        assert!(PortListId::parse("f", "prl-1").is_ok());
        assert!(GroupId::parse("f", "sg-").is_err());
        assert!(GroupId::parse("f", "sg-ABC").is_err());
        assert!(GroupId::parse("f", "sg-bp1hv6wvmegs036****").is_err());
    }

    #[test]
    fn id_generator_does_not_repeat_and_is_reproducible() {
        let mut a = IdGen::with_seed(7);
        let mut b = IdGen::with_seed(7);
        let first: Vec<_> = (0..1000).map(|_| a.next_suffix()).collect();
        let second: Vec<_> = (0..1000).map(|_| b.next_suffix()).collect();
        assert_eq!(first, second);
        let unique: std::collections::BTreeSet<_> = first.iter().collect();
        assert_eq!(unique.len(), 1000);
        assert!(first.iter().all(|s| s.len() == 16));
    }
}
