//! The daemon's side of egress: the installation's CA, secrets, the per-sandbox egress logs,
//! the trust layer sandboxes see, and the routes for secrets and logs.
//!
//! The proxy itself is `bothy_egress`; the network plumbing that delivers connections to it and
//! the [`bothy_egress::Directory`] it asks are the network module's. That directory answers
//! `secret()` from [`Secrets::get`] and `record()` with [`EgressState::log`].

pub mod api;
pub mod log;
pub mod secrets;
pub mod trust;

use std::path::PathBuf;
use std::sync::Arc;

use bothy_egress::{Ca, ProxyOptions};
use bothy_store::egress_log::EgressLogStore;
use bothy_store::secrets::SecretStore;
use bothy_store::Layout;
use rustls_pki_types::CertificateDer;

pub use secrets::Secrets;

/// `$DATA/egress`: `ca/` (the CA, 0700, key 0600) and `trust/` (the sandboxes' trust layer).
pub fn egress_dir(layout: &Layout) -> PathBuf {
    layout.root().join("egress")
}

#[derive(Debug, thiserror::Error)]
pub enum EgressSetupError {
    #[error("load or create the egress CA")]
    Ca(#[from] bothy_egress::ca::CaError),
    #[error("load the secrets")]
    Secrets(#[from] bothy_store::meta::MetaError),
    #[error("read extra CA file {0}")]
    ExtraCa(PathBuf, #[source] std::io::Error),
    #[error("extra CA file {0} holds no PEM certificate")]
    ExtraCaEmpty(PathBuf),
    #[error("write the sandboxes' trust layer")]
    Trust(#[source] std::io::Error),
}

/// Everything egress the daemon holds; cheap to clone.
#[derive(Clone)]
pub struct EgressState {
    pub ca: Arc<Ca>,
    pub secrets: Secrets,
    /// The per-sandbox egress log (in the metadata store).
    pub log: Arc<log::EgressLog>,
    /// Roots trusted for upstream TLS besides the system's (`--egress-extra-ca`).
    pub extra_roots: Arc<Vec<CertificateDer<'static>>>,
}

impl EgressState {
    /// Loads (or creates, at first start) the CA, loads the secrets, and writes the trust
    /// layer. Blocking: call from `spawn_blocking` or before the runtime is busy.
    pub fn open(
        layout: &Layout,
        store: Arc<dyn SecretStore>,
        log_store: Arc<dyn EgressLogStore>,
        extra_ca_files: &[PathBuf],
    ) -> Result<Self, EgressSetupError> {
        let dir = egress_dir(layout);
        let ca = Arc::new(Ca::load_or_create(&dir.join("ca"))?);
        let mut extra_roots = Vec::new();
        for f in extra_ca_files {
            let pem = std::fs::read(f).map_err(|e| EgressSetupError::ExtraCa(f.clone(), e))?;
            let certs = bothy_egress::ca::certs_from_pem(&pem);
            if certs.is_empty() {
                return Err(EgressSetupError::ExtraCaEmpty(f.clone()));
            }
            extra_roots.extend(certs);
        }
        trust::write_layer(&trust::layer_dir(layout), ca.cert_pem())
            .map_err(EgressSetupError::Trust)?;
        Ok(Self {
            ca,
            secrets: Secrets::load(store)?,
            log: log::EgressLog::new(log_store),
            extra_roots: Arc::new(extra_roots),
        })
    }

    /// Options for [`bothy_egress::serve`] on a listener that nftables redirects to.
    pub fn proxy_options(&self) -> ProxyOptions {
        ProxyOptions {
            extra_roots: self.extra_roots.as_ref().clone(),
            max_connections: crate::fds::egress_connections(),
            ..ProxyOptions::default()
        }
    }
}

/// What the proxy's directory asks the daemon's egress state for.
impl crate::net::directory::EgressSink for EgressState {
    fn secret(&self, name: &str) -> Option<String> {
        self.secrets.get(name)
    }

    fn record(&self, sandbox: &bothy_api::SandboxName, entry: bothy_api::egress::EgressLogEntry) {
        self.log.push(sandbox, entry);
    }
}
