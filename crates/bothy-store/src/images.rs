//! Images: ordered read-only layers under `$DATA/layers`.
//!
//! (Being written; see the interface below.)

use std::path::PathBuf;

use crate::Layout;

/// The built-in `host` image: a small skeleton layer (a filtered copy of `/etc`, empty `/root`,
/// `/home`, `/tmp`, `/workspace`, `/run`, `/proc`, `/dev`, `/sys`, and the host's top-level
/// symlinks such as `bin -> usr/bin`) plus the host directories that are real directories
/// (`/usr`, and `/bin`, `/lib*`, `/sbin` on hosts without merged `/usr`), each mounted as the
/// lower layer of its own overlay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostImage {
    /// Layer id of the skeleton (under `$DATA/layers`).
    pub skeleton_layer: String,
    /// Absolute host directories shown read-only (through an overlay) at the same path.
    pub host_dirs: Vec<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{op}")]
    Io {
        op: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

/// Builds (or refreshes) the host image's skeleton layer.
pub fn ensure_host_image(_layout: &Layout) -> Result<HostImage, ImageError> {
    Err(ImageError::Invalid("not yet written".into()))
}
