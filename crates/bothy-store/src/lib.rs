//! Persistent state of the daemon.
//!
//! This crate owns what survives a restart: metadata in SQLite ([`meta`]), the layout of the
//! data directory ([`layout`]), images as read-only layers on disk ([`images`]), exact copies
//! and merges of overlay layers for snapshots ([`tree`]), the egress proxy's secrets
//! ([`secrets`]) and its log ([`egress_log`]). It does not
//! start processes or mount anything (that is `bothy-runtime`).

pub mod egress_log;
pub mod images;
pub mod layout;
pub mod meta;
pub mod secrets;
pub mod tree;

pub use layout::Layout;
