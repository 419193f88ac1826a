//! Layer archives: a directory tree (an overlay upper dir, a snapshot layer, a backed-up
//! directory) packed into one zstd-compressed tar stream, named by the SHA-256 of its bytes.
//!
//! What survives a round trip, exactly: regular files, directories, symlinks (targets as
//! written, never followed), hardlinks (as links), character and block devices (overlay
//! whiteouts are 0/0 char devices), FIFOs, uid/gid as numbers (no shifting), modes including
//! setuid/setgid/sticky, mtimes to the nanosecond, and every extended attribute
//! (`trusted.overlay.*` opaque/redirect markers, `security.capability`, `user.*`). Sockets
//! cannot be archived and are skipped. Entries are written in sorted order, so packing the same
//! tree twice gives the same bytes (and the same digest).
//!
//! Unpacking goes into a temporary sibling of the destination, which is renamed into place only
//! after the whole stream was read and its digest matched; any failure removes the temporary
//! tree, so nothing is ever half-applied. Entries that would escape the destination (absolute
//! paths, `..`, paths through a symlink, hardlinks to outside or to non-files) are refused.
//!
//! Both directions are blocking (they walk the file system); call them from `spawn_blocking`.

mod pack;
mod pax;
mod unpack;

pub use pack::{pack, PackOptions, Packed};
pub use unpack::{unpack, Unpacked};

/// Default size of the content-addressed chunks an archive is split into for upload.
pub const DEFAULT_CHUNK_SIZE: u64 = 8 * 1024 * 1024;

/// zstd level used for layers: fast, and still ~3-4x on source trees.
pub const ZSTD_LEVEL: i32 = 3;

/// PAX record prefix for extended attributes (the GNU tar / star convention).
pub(crate) const PAX_XATTR: &str = "SCHILY.xattr.";
/// PAX record holding the exact mtime (`seconds.nanoseconds`).
pub(crate) const PAX_MTIME: &str = "mtime";
