//! Where things live in the data directory.
//!
//! ```text
//! $DATA/state.db                                  metadata (SQLite, WAL)
//! $DATA/bothy.sock                                the API's unix socket
//! $DATA/layers/<id>/                              immutable rootfs layers
//! $DATA/sandboxes/<name>/disk/<mount>/{upper,work} the sandbox's own writable layer(s)
//! $DATA/sandboxes/<name>/rootfs/                  mount point of its root (in its mount ns only)
//! $DATA/sandboxes/<name>/state/                   the agent's records (/run/bothy/state inside)
//! $DATA/sandboxes/<name>/agent.sock               the agent's socket (host side only)
//! $DATA/trash/                                    sandboxes being deleted
//! ```

use std::path::{Path, PathBuf};

use bothy_api::SandboxName;

#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn db(&self) -> PathBuf {
        self.root.join("state.db")
    }

    pub fn socket(&self) -> PathBuf {
        self.root.join("bothy.sock")
    }

    pub fn config(&self) -> PathBuf {
        self.root.join("config.json")
    }

    pub fn layers(&self) -> PathBuf {
        self.root.join("layers")
    }

    pub fn layer(&self, id: &str) -> PathBuf {
        self.layers().join(id)
    }

    pub fn trash(&self) -> PathBuf {
        self.root.join("trash")
    }

    pub fn sandbox(&self, name: &SandboxName) -> SandboxDirs {
        SandboxDirs {
            root: self.root.join("sandboxes").join(name.as_str()),
        }
    }

    /// Creates the top-level directories (mode 0700: sandboxes' layers hold files of other
    /// uids, some setuid, that no host user should reach).
    pub fn create(&self) -> std::io::Result<()> {
        use std::os::unix::fs::DirBuilderExt;
        for dir in [
            self.root.clone(),
            self.layers(),
            self.trash(),
            self.root.join("sandboxes"),
        ] {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)?;
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&self.root, std::fs::Permissions::from_mode(0o711))?;
        Ok(())
    }
}

/// The directories of one sandbox.
#[derive(Debug, Clone)]
pub struct SandboxDirs {
    pub root: PathBuf,
}

impl SandboxDirs {
    /// Writable layer of the overlay mounted at `target` (`/` → `disk/root`, `/usr` → `disk/usr`).
    pub fn upper(&self, target: &str) -> PathBuf {
        self.disk().join(mount_key(target)).join("upper")
    }

    pub fn work(&self, target: &str) -> PathBuf {
        self.disk().join(mount_key(target)).join("work")
    }

    pub fn disk(&self) -> PathBuf {
        self.root.join("disk")
    }

    pub fn rootfs(&self) -> PathBuf {
        self.root.join("rootfs")
    }

    pub fn state(&self) -> PathBuf {
        self.root.join("state")
    }

    pub fn agent_socket(&self) -> PathBuf {
        self.root.join("agent.sock")
    }
}

/// Directory name for the overlay mounted at `target`.
pub fn mount_key(target: &str) -> String {
    let t = target.trim_matches('/');
    if t.is_empty() {
        "root".to_string()
    } else {
        t.replace('/', "_")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_keys() {
        assert_eq!(mount_key("/"), "root");
        assert_eq!(mount_key("/usr"), "usr");
        assert_eq!(mount_key("/usr/local"), "usr_local");
    }
}
