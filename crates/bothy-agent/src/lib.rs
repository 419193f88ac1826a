//! The in-sandbox data plane.
//!
//! `bothy agent` runs as PID 1 of every sandbox. It reaps orphans ([`reaper`]) and serves the
//! data-plane API over HTTP on the unix socket the runtime hands it as fd 3 ([`server`]). It runs
//! inside the sandbox's namespaces and root, so every path it resolves and every process it
//! starts is the sandbox's own. It holds no secrets and is not trusted by the daemon: a process
//! in the sandbox can ptrace it.
//!
//! Each feature is one module that owns its routes and its state, merged in [`server::router`].

pub mod archive;
pub mod env;
pub mod error;
pub mod exec;
pub mod files;
pub mod git;
pub mod interp;
pub mod persist;
pub mod processes;
pub mod proctree;
pub mod reaper;
pub mod server;
pub mod sessions;
pub mod sse;
pub mod terminals;
pub mod time;
pub mod watch;

pub use error::AgentError;
pub use server::{router, run, AgentState};
