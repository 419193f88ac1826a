//! Turning git's last words into a clear API error.

use bothy_api::{ApiError, ErrorCode};

/// The error for a clone of `url` that failed with output ending in `tail`.
pub fn failure(url: &str, tail: &[u8]) -> ApiError {
    let text = String::from_utf8_lossy(tail);
    let lower = text.to_ascii_lowercase();
    let last = last_lines(&text, 3);
    let has = |needles: &[&str]| needles.iter().any(|n| lower.contains(n));
    if has(&[
        "authentication failed",
        "could not read username",
        "could not read password",
        "terminal prompts disabled",
        "access denied",
        "returned error: 401",
        "permission denied (publickey",
        "invalid username or password",
    ]) {
        return ApiError::new(
            ErrorCode::AuthenticationFailed,
            format!(
                "authentication failed for {url}: the git host refused the credentials or asked for some \
                 (give them to the daemon: a secret and an egress rule that sets the Authorization header). git said: {last}"
            ),
        );
    }
    if has(&["returned error: 403"]) {
        return ApiError::new(
            ErrorCode::AuthenticationFailed,
            format!(
                "access to {url} was refused (HTTP 403): the credentials lack access, or the sandbox's \
                 egress policy blocks this host. git said: {last}"
            ),
        );
    }
    if has(&[
        "repository not found",
        "returned error: 404",
        "does not appear to be a git repository",
        "not found",
    ]) {
        return ApiError::new(
            ErrorCode::RepositoryNotFound,
            format!("repository not found: {url}. git said: {last}"),
        );
    }
    if has(&["remote branch", "not found in upstream"]) {
        return ApiError::new(ErrorCode::GitFailed, format!("no such branch: {last}"));
    }
    if has(&[
        "could not resolve host",
        "failed to connect",
        "couldn't connect",
        "network is unreachable",
        "connection refused",
    ]) {
        return ApiError::new(
            ErrorCode::GitFailed,
            format!(
                "cannot reach the git host of {url} (is the sandbox's network mode `proxy` and the host allowed?). git said: {last}"
            ),
        );
    }
    ApiError::new(
        ErrorCode::GitFailed,
        format!("git clone {url} failed: {last}"),
    )
}

/// The last `n` non-empty lines (progress lines split on `\r` too), joined by " / ".
fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text
        .split(['\n', '\r'])
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let from = lines.len().saturating_sub(n);
    let s = lines[from..].join(" / ");
    if s.is_empty() {
        "(no output)".into()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_common_failures() {
        let c = |t: &str| failure("https://h/r.git", t.as_bytes()).code;
        assert_eq!(
            c("Cloning into 'r'...\nfatal: could not read Username for 'https://h': terminal prompts disabled\n"),
            ErrorCode::AuthenticationFailed
        );
        assert_eq!(
            c("remote: HTTP Basic: Access denied\nfatal: Authentication failed for 'https://h/r.git/'\n"),
            ErrorCode::AuthenticationFailed
        );
        assert_eq!(
            c("fatal: repository 'https://h/r.git/' not found\n"),
            ErrorCode::RepositoryNotFound
        );
        assert_eq!(
            c("fatal: unable to access 'https://h/r.git/': The requested URL returned error: 404\n"),
            ErrorCode::RepositoryNotFound
        );
        assert_eq!(
            c("fatal: unable to access 'https://h/': Could not resolve host: h\n"),
            ErrorCode::GitFailed
        );
        assert_eq!(c(""), ErrorCode::GitFailed);
        assert!(failure("u", b"a\rb\rc\nfatal: x\n")
            .message
            .contains("fatal: x"));
    }
}
