//! Include/exclude globs and the event-type filter of a watch.
//!
//! A glob without `/` matches any single path component (`.git`, `*.rs`); a glob with `/` matches
//! the path relative to the watched directory (`src/**/*.rs`, `build/out`). Excludes prune whole
//! subtrees (an excluded directory is not even watched); includes only select what is reported.

use std::collections::HashSet;
use std::path::Path;

use bothy_api::watch::WatchEventKind;
use globset::{Glob, GlobSet, GlobSetBuilder};

#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error("invalid glob {glob:?}: {source}")]
    Glob {
        glob: String,
        #[source]
        source: globset::Error,
    },
    #[error("unknown event type {0:?} (expected create, modify, delete, move or attrib)")]
    EventType(String),
}

/// A compiled list of globs.
#[derive(Debug, Clone)]
pub struct Globs {
    /// Patterns without `/`: matched against single components.
    component: GlobSet,
    /// Patterns with `/`: matched against the relative path.
    path: GlobSet,
    empty: bool,
}

impl Globs {
    pub fn new(patterns: &[String]) -> Result<Self, FilterError> {
        let mut component = GlobSetBuilder::new();
        let mut path = GlobSetBuilder::new();
        let mut empty = true;
        for p in patterns.iter().filter(|p| !p.is_empty()) {
            let trimmed = p.trim_start_matches("./").trim_end_matches('/');
            let glob = Glob::new(trimmed).map_err(|source| FilterError::Glob {
                glob: p.clone(),
                source,
            })?;
            if trimmed.contains('/') {
                path.add(glob);
            } else {
                component.add(glob);
            }
            empty = false;
        }
        let build = |b: GlobSetBuilder| {
            b.build().map_err(|source| FilterError::Glob {
                glob: patterns.join(" "),
                source,
            })
        };
        Ok(Self {
            component: build(component)?,
            path: build(path)?,
            empty,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.empty
    }

    /// Exclude semantics: `rel` or any of its ancestors (below the root) matches.
    pub fn excludes(&self, rel: &Path) -> bool {
        if self.empty {
            return false;
        }
        if rel
            .components()
            .any(|c| self.component.is_match(c.as_os_str()))
        {
            return true;
        }
        if self.path.is_empty() {
            return false;
        }
        rel.ancestors()
            .filter(|a| !a.as_os_str().is_empty())
            .any(|a| self.path.is_match(a))
    }

    /// Include semantics: the base name or the whole relative path matches.
    pub fn includes(&self, rel: &Path) -> bool {
        if self.empty {
            return true;
        }
        rel.file_name().is_some_and(|n| self.component.is_match(n)) || self.path.is_match(rel)
    }
}

/// What one client asked to receive.
#[derive(Debug, Clone)]
pub struct ClientFilter {
    pub include: Globs,
    /// `None` = every type.
    pub kinds: Option<HashSet<WatchEventKind>>,
}

impl ClientFilter {
    pub fn new(include: &[String], events: Option<&str>) -> Result<Self, FilterError> {
        let kinds = match events.map(str::trim).filter(|s| !s.is_empty()) {
            None => None,
            Some(list) => {
                let mut set = HashSet::new();
                for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    match WatchEventKind::parse(name) {
                        Some(k) if k.is_change() => set.insert(k),
                        _ => return Err(FilterError::EventType(name.to_string())),
                    };
                }
                Some(set)
            }
        };
        Ok(Self {
            include: Globs::new(include)?,
            kinds,
        })
    }

    /// Whether a change event is delivered. `rel`/`from_rel` are relative to the watch root.
    pub fn wants(&self, kind: WatchEventKind, rel: &Path, from_rel: Option<&Path>) -> bool {
        if !kind.is_change() {
            return true;
        }
        if let Some(kinds) = &self.kinds {
            if !kinds.contains(&kind) {
                return false;
            }
        }
        self.include.includes(rel) || from_rel.is_some_and(|f| self.include.includes(f))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn globs(p: &[&str]) -> Globs {
        Globs::new(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn excludes_components_and_paths() {
        let g = globs(&[".git", "node_modules", "build/out"]);
        assert!(g.excludes(Path::new(".git")));
        assert!(g.excludes(Path::new(".git/objects/ab")));
        assert!(g.excludes(Path::new("a/node_modules/x/y.js")));
        assert!(g.excludes(Path::new("build/out/z")));
        assert!(!g.excludes(Path::new("build/other")));
        assert!(!g.excludes(Path::new("src/git.rs")));
        assert!(!globs(&[]).excludes(Path::new(".git")));
        assert!(!globs(&[""]).excludes(Path::new(".git")));
    }

    #[test]
    fn includes_base_names_and_paths() {
        let g = globs(&["*.rs", "docs/**"]);
        assert!(g.includes(Path::new("src/main.rs")));
        assert!(g.includes(Path::new("docs/a/b.md")));
        assert!(!g.includes(Path::new("src/main.c")));
        assert!(globs(&[]).includes(Path::new("anything")));
    }

    #[test]
    fn event_types() {
        let f = ClientFilter::new(&[], Some("create, delete")).unwrap();
        assert!(f.wants(WatchEventKind::Create, Path::new("a"), None));
        assert!(!f.wants(WatchEventKind::Modify, Path::new("a"), None));
        assert!(f.wants(WatchEventKind::Overflow, Path::new(""), None));
        assert!(ClientFilter::new(&[], Some("create,bogus")).is_err());
        assert!(ClientFilter::new(&[], Some("ready")).is_err());
        assert!(Globs::new(&["a[".to_string()]).is_err());
    }
}
