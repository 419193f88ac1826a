//! The control plane: `bothy serve`.
//!
//! This crate owns names, lifecycle, routing and auth. It never runs user code itself: it asks a
//! [`bothy_runtime::Runtime`] to start and stop sandboxes, keeps their records in a
//! [`bothy_store::meta::MetaStore`], and forwards every data-plane request
//! (`/v1/sandboxes/{name}/<rest>`) to the sandbox's agent over its unix socket ([`proxy`]),
//! waking the sandbox first if it sleeps. Idle sandboxes are put to sleep ([`manager::idle`]);
//! on start the daemon reconciles its records with what still runs ([`manager::reconcile`]).
//!
//! Agents are untrusted: the daemon bounds what it reads from them and never follows paths the
//! sandbox controls.

pub mod agent_conn;
pub mod api;
pub mod auth;
pub mod backups;
pub mod blobs;
pub mod config;
pub mod egress;
pub mod error;
pub mod fds;
pub mod http_server;
pub mod images;
pub mod manager;
pub mod net;
pub mod preview;
pub mod proxy;
pub mod serve;
pub mod snapshots;
pub mod ui;

pub use config::DaemonConfig;
pub use serve::serve;
