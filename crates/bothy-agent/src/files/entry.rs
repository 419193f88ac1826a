//! Metadata of one path as a [`FileEntry`], and directory listings.

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

use bothy_api::files::{FileEntry, FileList, FileType};

use crate::error::AgentError;

/// Most entries a listing returns; past it the listing stops and says `truncated: true`.
pub const MAX_LIST_ENTRIES: usize = 100_000;

/// The entry of `path` itself (lstat: a symlink is described, not followed).
pub fn stat(path: &str) -> Result<FileEntry, AgentError> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| AgentError::io(path, &e))?;
    Ok(entry(path, &meta))
}

/// Builds the entry of `path` from its lstat metadata.
pub fn entry(path: &str, meta: &Metadata) -> FileEntry {
    let ft = meta.file_type();
    let file_type = if ft.is_symlink() {
        FileType::Symlink
    } else if ft.is_dir() {
        FileType::Dir
    } else if ft.is_file() {
        FileType::File
    } else {
        FileType::Other // sockets, fifos, devices
    };
    let link_target = ft
        .is_symlink()
        .then(|| std::fs::read_link(path).ok())
        .flatten()
        .map(|t| t.to_string_lossy().into_owned());
    let name = match path.rsplit('/').next() {
        Some("") | None => "/".to_string(),
        Some(n) => n.to_string(),
    };
    FileEntry {
        name,
        path: path.to_string(),
        file_type,
        size: meta.len(),
        mode: meta.mode() & 0o7777,
        mtime: crate::time::rfc3339_from_unix(meta.mtime(), meta.mtime_nsec() as u32),
        link_target,
    }
}

/// Lists the directory `dir` (an absolute, normalised path), optionally recursively, without
/// following symlinks. Entries are sorted by path; at most `limit` of them.
pub fn list(dir: &str, recursive: bool, limit: usize) -> Result<FileList, AgentError> {
    let meta = std::fs::metadata(dir).map_err(|e| AgentError::io(dir, &e))?;
    if !meta.is_dir() {
        return Err(AgentError::new(
            bothy_api::ErrorCode::NotADirectory,
            format!("{dir}: not a directory"),
        ));
    }
    let mut entries = Vec::new();
    let mut truncated = false;
    let mut pending = vec![dir.to_string()];
    'walk: while let Some(d) = pending.pop() {
        let rd = match std::fs::read_dir(&d) {
            Ok(rd) => rd,
            // The top directory must be readable; a subdirectory that vanished or is closed to
            // us is skipped rather than failing the whole listing.
            Err(e) if d == dir => return Err(AgentError::io(dir, &e)),
            Err(_) => continue,
        };
        for de in rd {
            let Ok(de) = de else { continue };
            if entries.len() >= limit {
                truncated = true;
                break 'walk;
            }
            let path = join(&d, &de.file_name().to_string_lossy());
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue; // removed while we listed
            };
            if recursive && meta.is_dir() {
                pending.push(path.clone());
            }
            entries.push(entry(&path, &meta));
        }
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(FileList {
        path: dir.to_string(),
        entries,
        truncated,
    })
}

/// `dir/name` without doubling the slash of `/`.
pub fn join(dir: &str, name: &str) -> String {
    if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// The parent directory of an absolute, normalised path (`/` for `/x`).
pub fn parent(path: &str) -> &str {
    match Path::new(path).parent().and_then(|p| p.to_str()) {
        Some(p) => p,
        None => "/",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_and_parents() {
        assert_eq!(join("/", "a"), "/a");
        assert_eq!(join("/a", "b"), "/a/b");
        assert_eq!(parent("/a/b"), "/a");
        assert_eq!(parent("/a"), "/");
        assert_eq!(parent("/"), "/");
    }

    #[test]
    fn root_entry_is_named_slash() {
        let e = stat("/").unwrap();
        assert_eq!(e.name, "/");
        assert_eq!(e.file_type, FileType::Dir);
    }
}
