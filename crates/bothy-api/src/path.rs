//! Paths inside a sandbox, as clients give them.
//!
//! The agent resolves paths inside the sandbox's own root, so no path or symlink can reach the
//! host; this module only normalises what a client sent and refuses what is plainly wrong.

use crate::{ApiError, ErrorCode, WORKSPACE};

/// Turns a client path into an absolute, lexically normalised path inside the sandbox.
/// Relative paths are relative to `/workspace`. A path that climbs above `/` with `..`, contains
/// a NUL byte, or is empty is refused.
pub fn normalize(path: &str) -> Result<String, ApiError> {
    if path.is_empty() {
        return Err(ApiError::new(
            ErrorCode::InvalidPath,
            "path is empty; give an absolute path or one relative to /workspace",
        ));
    }
    if path.contains('\0') {
        return Err(ApiError::new(
            ErrorCode::InvalidPath,
            "path contains a NUL byte",
        ));
    }
    if path.len() > 4096 {
        return Err(ApiError::new(
            ErrorCode::InvalidPath,
            "path is longer than 4096 bytes",
        ));
    }
    let joined = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("{WORKSPACE}/{path}")
    };
    let mut parts: Vec<&str> = Vec::new();
    for part in joined.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(ApiError::new(
                        ErrorCode::PathEscape,
                        format!("path {path:?} climbs above the sandbox root"),
                    ));
                }
            }
            p => parts.push(p),
        }
    }
    Ok(format!("/{}", parts.join("/")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes() {
        assert_eq!(normalize("a.txt").unwrap(), "/workspace/a.txt");
        assert_eq!(normalize("/etc/hosts").unwrap(), "/etc/hosts");
        assert_eq!(normalize("a/../b/./c/").unwrap(), "/workspace/b/c");
        assert_eq!(normalize("../tmp/x").unwrap(), "/tmp/x");
        assert_eq!(normalize("/").unwrap(), "/");
    }

    #[test]
    fn refuses_escapes_and_garbage() {
        assert_eq!(
            normalize("../../../etc").unwrap_err().code,
            ErrorCode::PathEscape
        );
        assert_eq!(normalize("/../x").unwrap_err().code, ErrorCode::PathEscape);
        assert_eq!(normalize("").unwrap_err().code, ErrorCode::InvalidPath);
        assert_eq!(normalize("a\0b").unwrap_err().code, ErrorCode::InvalidPath);
    }
}
