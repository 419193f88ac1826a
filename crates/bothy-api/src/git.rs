//! `POST /v1/sandboxes/{name}/git/checkout`: clone a repository inside the sandbox.
//!
//! `git` runs inside the sandbox, so in `proxy` mode its traffic goes through the egress proxy,
//! where a rule can inject the git host's token (the sandbox never sees it). With
//! `Accept: text/event-stream` the reply is a stream of `progress` events (`{"data": ...}`,
//! git's own progress output, byte-exact), then one `done` ([`CheckoutDone`]) or `error`
//! (`{code, message}`) event; otherwise one JSON reply when git has finished.
//!
//! Errors: `authentication_failed` (credentials refused or missing), `repository_not_found`,
//! `runtime_not_found` (no git in the sandbox), `already_exists` (target not empty),
//! `git_failed` (anything else, with git's last output).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckoutRequest {
    /// `https://…`, `http://…`, `ssh://…`, `git://…` or `user@host:path`.
    pub url: String,
    /// Branch or tag to check out (default: the remote's default branch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// Shallow clone with this many commits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depth: Option<u32>,
    /// Target directory (relative = under `/workspace`; default: the repository's name). Must
    /// not exist or be empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
}

/// The result of a checkout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckoutDone {
    /// Absolute path of the working tree in the sandbox.
    pub dir: String,
    /// The commit checked out (empty for an empty repository).
    pub commit: String,
    /// The branch checked out, if on one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
}

/// The default target directory for `url`: its last path component without `.git`.
pub fn default_dir(url: &str) -> Option<String> {
    let trimmed = url.trim_end_matches('/');
    let last = trimmed.rsplit(['/', ':']).next()?;
    let name = last.strip_suffix(".git").unwrap_or(last);
    (!name.is_empty() && name != "." && name != "..").then(|| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_dirs() {
        assert_eq!(default_dir("https://h/a/repo.git").as_deref(), Some("repo"));
        assert_eq!(default_dir("https://h/a/repo/").as_deref(), Some("repo"));
        assert_eq!(default_dir("git@h:org/x.git").as_deref(), Some("x"));
        assert_eq!(default_dir("https://h/").as_deref(), Some("h"));
        assert_eq!(default_dir("https://h/..").as_deref(), None);
    }
}
