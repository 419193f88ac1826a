//! The egress proxy: what happens to a sandbox's outbound TCP connection once the network
//! plumbing (veth + nftables redirect, owned by the daemon) has delivered it here.
//!
//! It identifies the sandbox by its source address ([`Directory`]), finds the original
//! destination (`SO_ORIGINAL_DST`), applies the sandbox's policy ([`policy`]), terminates TLS
//! with a leaf certificate minted by the installation's CA ([`ca`]), injects headers from
//! secrets, forwards to the host (or a rule's upstream) over a fresh, verified connection, and
//! records every request in the sandbox's egress log.
//!
//! This crate must never hand a secret's value or the CA's private key to anything but the
//! upstream connection and the key file.

pub mod directory;

pub use directory::{Directory, SandboxEgress};
