//! Which entries of a directory go into an archive: `exclude` globs and, optionally, the
//! `.gitignore` rules found in the tree.
//!
//! An exclude pattern without a `/` matches a name at any depth (`node_modules`, `*.log`); one
//! with a `/` matches the path relative to the archived directory (`build/out`, `src/**/*.tmp`;
//! a leading `/` is ignored). `*` does not cross `/`, `**` does. A trailing `/` limits the
//! pattern to directories. An excluded directory is left out with everything below it.
//!
//! With `gitignore`, the `.gitignore` files inside the tree and in its parent directories and
//! `.git/info/exclude` apply with git's semantics, whether or not the tree is a git repository
//! (so a `.gitignore` copied without its `.git` still counts). The user's global git config does
//! not apply: the same request gives the same archive whoever runs it. `.git` itself is kept.

use std::path::{Path, PathBuf};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

/// A pattern could not be parsed.
#[derive(Debug, thiserror::Error)]
pub enum PatternError {
    #[error("empty exclude pattern {0:?}")]
    Empty(String),
    #[error("invalid exclude pattern {pattern:?}: {source}")]
    Glob {
        pattern: String,
        #[source]
        source: globset::Error,
    },
}

/// The compiled `exclude` patterns.
#[derive(Debug, Clone)]
pub struct Excludes {
    names: GlobSet,
    name_dirs: GlobSet,
    paths: GlobSet,
    path_dirs: GlobSet,
}

impl Excludes {
    pub fn new(patterns: &[String]) -> Result<Self, PatternError> {
        let mut names = GlobSetBuilder::new();
        let mut name_dirs = GlobSetBuilder::new();
        let mut paths = GlobSetBuilder::new();
        let mut path_dirs = GlobSetBuilder::new();
        for pattern in patterns {
            let (body, dir_only) = match pattern.strip_suffix('/') {
                Some(b) => (b, true),
                None => (pattern.as_str(), false),
            };
            let body = body.trim_start_matches('/');
            if body.is_empty() {
                return Err(PatternError::Empty(pattern.clone()));
            }
            let err = |source| PatternError::Glob {
                pattern: pattern.clone(),
                source,
            };
            let glob = GlobBuilder::new(body)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(err)?;
            match (body.contains('/'), dir_only) {
                (false, false) => names.add(glob),
                (false, true) => name_dirs.add(glob),
                (true, false) => paths.add(glob),
                (true, true) => path_dirs.add(glob),
            };
        }
        let build = |b: GlobSetBuilder| b.build().expect("each glob compiled alone");
        Ok(Self {
            names: build(names),
            name_dirs: build(name_dirs),
            paths: build(paths),
            path_dirs: build(path_dirs),
        })
    }

    /// Whether the entry at `rel` (relative to the archived directory, not empty) is excluded.
    pub fn excluded(&self, rel: &Path, is_dir: bool) -> bool {
        let name = rel.file_name().map(Path::new).unwrap_or(rel);
        self.names.is_match(name)
            || self.paths.is_match(rel)
            || (is_dir && (self.name_dirs.is_match(name) || self.path_dirs.is_match(rel)))
    }
}

/// What to leave out of an archive.
#[derive(Debug, Clone)]
pub struct Selection {
    pub excludes: Excludes,
    pub gitignore: bool,
}

/// A walker over `root` (depth-first, sorted by name, not following symlinks, not crossing
/// into other file systems) that applies `selection`. The root itself comes first.
pub fn walker(root: &Path, selection: &Selection) -> ignore::Walk {
    let mut b = ignore::WalkBuilder::new(root);
    b.standard_filters(false)
        .follow_links(false)
        .same_file_system(true)
        .sort_by_file_name(|a, b| a.cmp(b));
    if selection.gitignore {
        b.git_ignore(true)
            .git_exclude(true)
            .parents(true)
            .require_git(false);
    }
    let excludes = selection.excludes.clone();
    let root: PathBuf = root.to_path_buf();
    b.filter_entry(move |e| {
        if e.depth() == 0 {
            return true;
        }
        let Ok(rel) = e.path().strip_prefix(&root) else {
            return true;
        };
        let is_dir = e.file_type().is_some_and(|t| t.is_dir());
        !excludes.excluded(rel, is_dir)
    });
    b.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(patterns: &[&str]) -> Excludes {
        Excludes::new(&patterns.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn names_match_at_any_depth_and_paths_from_the_root() {
        let e = ex(&[
            "node_modules",
            "*.log",
            "build/out",
            "src/**/*.tmp",
            "cache/",
        ]);
        assert!(e.excluded(Path::new("node_modules"), true));
        assert!(e.excluded(Path::new("a/b/node_modules"), true));
        assert!(e.excluded(Path::new("x/debug.log"), false));
        assert!(e.excluded(Path::new("build/out"), true));
        assert!(!e.excluded(Path::new("a/build/out"), true));
        assert!(e.excluded(Path::new("src/a/b/c.tmp"), false));
        assert!(!e.excluded(Path::new("src/a.rs"), false));
        assert!(e.excluded(Path::new("a/cache"), true));
        assert!(!e.excluded(Path::new("a/cache"), false), "dir-only pattern");
    }

    #[test]
    fn star_does_not_cross_slashes_and_a_leading_slash_is_ignored() {
        let e = ex(&["/dist/*.js"]);
        assert!(e.excluded(Path::new("dist/a.js"), false));
        assert!(!e.excluded(Path::new("dist/sub/a.js"), false));
    }

    #[test]
    fn bad_patterns_are_refused() {
        assert!(Excludes::new(&["a[".into()]).is_err());
        assert!(Excludes::new(&["/".into()]).is_err());
    }
}
