//! Wire types of the bothy API.
//!
//! This crate owns the shapes that cross a process boundary: the public HTTP API of the daemon,
//! and the daemon ↔ agent API (which uses the same shapes). It does no I/O, so every other crate
//! (daemon, agent, client, CLI, tests) can depend on it cheaply.

pub mod agent;
pub mod archive;
pub mod backup;
pub mod blob;
pub mod command;
pub mod data;
pub mod egress;
pub mod error;
pub mod exec;
pub mod files;
pub mod git;
pub mod interp;
pub mod name;
pub mod network;
pub mod path;
pub mod preview;
pub mod process;
pub mod sandbox;
pub mod session;
pub mod snapshot;
pub mod terminal;
pub mod time;
pub mod watch;

pub use data::{Data, Encoding};
pub use error::{ApiError, ErrorCode};
pub use name::{NameError, SandboxName};

/// Default working directory inside a sandbox; relative paths resolve against it.
pub const WORKSPACE: &str = "/workspace";

/// Largest JSON request body the daemon and the agent accept.
pub const MAX_JSON_BODY: usize = 8 * 1024 * 1024;
