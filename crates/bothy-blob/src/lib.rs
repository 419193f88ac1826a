//! Blob storage for bothy: where snapshots, evicted sandbox layers and directory backups live
//! when they leave the machine's data directory.
//!
//! - [`BlobStore`]: a flat namespace of immutable objects, with a local-directory
//!   implementation ([`LocalStore`], atomic temp + rename) and an S3-compatible one
//!   ([`S3Store`], SigV4 and multipart through `object_store`). [`StoreLocation`] parses the
//!   one-string form (`/path`, `file:///path`, `s3://bucket/prefix?endpoint=…`).
//! - [`archive`]: a directory tree ⇄ a zstd-compressed tar file, exact (owners, modes, xattrs,
//!   whiteouts, hardlinks) and verified before it becomes visible.
//! - [`transfer`]: pushes an archive as content-addressed chunks (skipping what the store has)
//!   and pulls it back, checking every chunk and the whole.
//! - [`manifest`]: the checksummed JSON naming a snapshot's layers in order.
//!
//! Store layout (keys):
//! ```text
//! chunks/<sha256>            ≤ chunk_size bytes of one archive
//! layers/<sha256>.json       a layer's chunk list; written last, so it marks a complete upload
//! manifests/<sha256>.json    a manifest; its key is the hash of its bytes
//! refs/<kind>/<name>         the digest of the latest manifest for a name (a pointer only)
//! ```
//!
//! This crate does no HTTP serving and knows nothing of sandboxes or the metadata store.

pub mod archive;
pub mod config;
pub mod digest;
pub mod error;
pub mod local;
pub mod manifest;
pub mod s3;
pub mod store;
pub mod transfer;

pub use config::{open_store, StoreLocation};
pub use digest::{ChunkRef, Digest};
pub use error::{BlobError, Result};
pub use local::LocalStore;
pub use s3::{S3Config, S3Store};
pub use store::{BlobKey, BlobStore, ByteStream, ObjectMeta};
