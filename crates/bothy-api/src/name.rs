//! Sandbox names: DNS labels.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A validated sandbox name: a DNS label of 1–63 lowercase letters, digits and hyphens that
/// neither starts nor ends with a hyphen. It is safe as a path component, a hostname, a cgroup
/// name and a label of a preview URL's host.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct SandboxName(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("name is empty")]
    Empty,
    #[error("name is longer than 63 characters")]
    TooLong,
    #[error("name contains {0:?}; use lowercase letters, digits and hyphens")]
    BadChar(char),
    #[error("name must not start or end with a hyphen")]
    EdgeHyphen,
}

impl SandboxName {
    pub fn new(s: impl Into<String>) -> Result<Self, NameError> {
        let s = s.into();
        validate_label(&s)?;
        Ok(Self(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Validates a DNS label (the rules of [`SandboxName`]); also used for image names and ids.
pub fn validate_label(s: &str) -> Result<(), NameError> {
    if s.is_empty() {
        return Err(NameError::Empty);
    }
    if s.len() > 63 {
        return Err(NameError::TooLong);
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(NameError::BadChar(c));
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Err(NameError::EdgeHyphen);
    }
    Ok(())
}

impl fmt::Display for SandboxName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SandboxName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl AsRef<str> for SandboxName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for SandboxName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl<'de> Deserialize<'de> for SandboxName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::new(s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_dns_labels() {
        for ok in ["a", "demo", "my-box-1", "0", &"a".repeat(63)] {
            assert!(SandboxName::new(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_everything_else() {
        assert_eq!(SandboxName::new(""), Err(NameError::Empty));
        assert_eq!(SandboxName::new("a".repeat(64)), Err(NameError::TooLong));
        assert_eq!(SandboxName::new("Demo"), Err(NameError::BadChar('D')));
        assert_eq!(SandboxName::new("a_b"), Err(NameError::BadChar('_')));
        assert_eq!(SandboxName::new("../x"), Err(NameError::BadChar('.')));
        assert_eq!(SandboxName::new("-a"), Err(NameError::EdgeHyphen));
        assert_eq!(SandboxName::new("a-"), Err(NameError::EdgeHyphen));
        assert_eq!(SandboxName::new("é"), Err(NameError::BadChar('é')));
    }
}
