//! The egress proxy: what happens to a sandbox's outbound TCP connection once the network
//! plumbing (veth + nftables redirect, owned by the daemon) has delivered it here.
//!
//! It identifies the sandbox by its source address ([`Directory`]), finds the original
//! destination (`SO_ORIGINAL_DST`, [`origdst`]), applies the sandbox's policy ([`policy`]),
//! terminates TLS with a leaf certificate minted by the installation's CA ([`ca`]), injects
//! headers from secrets, forwards to the host (or a rule's upstream) over a fresh, verified
//! connection ([`upstream`]), and records every request in the sandbox's egress log
//! ([`logs`]).
//!
//! This crate must never hand a secret's value or the CA's private key to anything but the
//! upstream connection and the key file, and never log either.

pub mod ca;
pub mod directory;
mod http;
pub mod logs;
pub mod origdst;
pub mod policy;
mod record;
mod serve;
mod tcp;
pub mod upstream;

pub use ca::Ca;
pub use directory::{Directory, SandboxEgress};
pub use logs::EgressLogs;
pub use serve::{serve, DstSource, ProxyOptions, ServeError};
