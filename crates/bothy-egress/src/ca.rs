//! The installation's certificate authority: generated at first start, kept in the daemon's
//! data directory (key mode 0600), and used to mint a leaf certificate per intercepted host.
//!
//! Only the CA *certificate* ever leaves the daemon (into sandboxes' trust stores). Leaf
//! certificates share one key generated per daemon run and held in memory only; their
//! server configurations are cached per host.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use rustls::ServerConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::Digest;

/// File names inside the CA directory.
pub const CERT_FILE: &str = "ca.pem";
pub const KEY_FILE: &str = "ca.key";

/// How many hosts' server configurations are kept; the cache is emptied when it is full.
const CACHE_MAX: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Cert(#[from] rcgen::Error),
    #[error("tls configuration")]
    Tls(#[from] rustls::Error),
    #[error("{} holds no certificate", .0.display())]
    NoCert(PathBuf),
}

pub struct Ca {
    cert_pem: String,
    /// The CA certificate re-created from its key and name: what leaf signing needs (issuer
    /// name, key identifier); the trusted certificate is `cert_pem`.
    issuer: rcgen::Certificate,
    key: KeyPair,
    leaf_key: KeyPair,
    alpn: Vec<Vec<u8>>,
    cache: Mutex<HashMap<String, Arc<ServerConfig>>>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

impl Ca {
    /// Loads the CA from `dir` (`ca.pem`, `ca.key`), creating it (and `dir`, mode 0700) if
    /// there is none yet.
    pub fn load_or_create(dir: &Path) -> Result<Self, CaError> {
        let (cert_path, key_path) = (dir.join(CERT_FILE), dir.join(KEY_FILE));
        let io = |what, path: &Path| {
            let path = path.to_path_buf();
            move |source| CaError::Io { what, path, source }
        };
        match std::fs::read_to_string(&key_path) {
            Ok(key_pem) => {
                let cert_pem =
                    std::fs::read_to_string(&cert_path).map_err(io("read", &cert_path))?;
                // Whoever created it, the key is for root only.
                std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600))
                    .map_err(io("chmod", &key_path))?;
                Self::from_parts(cert_pem, KeyPair::from_pem(&key_pem)?)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(dir).map_err(io("create", dir))?;
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                    .map_err(io("chmod", dir))?;
                let key = KeyPair::generate()?;
                let cert = ca_params(&key).self_signed(&key)?;
                write_private(&key_path, key.serialize_pem().as_bytes())
                    .map_err(io("write", &key_path))?;
                write_private(&cert_path, cert.pem().as_bytes())
                    .map_err(io("write", &cert_path))?;
                std::fs::set_permissions(&cert_path, std::fs::Permissions::from_mode(0o644))
                    .map_err(io("chmod", &cert_path))?;
                tracing::info!(path = %cert_path.display(), "generated the egress CA");
                Self::from_parts(cert.pem(), key)
            }
            Err(e) => Err(io("read", &key_path)(e)),
        }
    }

    /// A CA that lives in memory only (tests, benchmarks).
    pub fn ephemeral() -> Result<Self, CaError> {
        let key = KeyPair::generate()?;
        let cert = ca_params(&key).self_signed(&key)?;
        Self::from_parts(cert.pem(), key)
    }

    fn from_parts(cert_pem: String, key: KeyPair) -> Result<Self, CaError> {
        let issuer = ca_params(&key).self_signed(&key)?;
        Ok(Self {
            cert_pem,
            issuer,
            key,
            leaf_key: KeyPair::generate()?,
            alpn: vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The CA certificate (PEM), to be trusted by sandboxes.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate (DER).
    pub fn cert_der(&self) -> Result<CertificateDer<'static>, CaError> {
        first_cert(self.cert_pem.as_bytes()).ok_or_else(|| CaError::NoCert(PathBuf::from("ca")))
    }

    /// A TLS server configuration presenting a certificate for `host` (a DNS name or an IP
    /// literal), minted on first use and cached.
    pub fn server_config(&self, host: &str) -> Result<Arc<ServerConfig>, CaError> {
        let host = host.to_ascii_lowercase();
        if let Some(c) = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&host)
        {
            return Ok(c.clone());
        }
        let leaf = leaf_params(&host)?.signed_by(&self.leaf_key, &self.issuer, &self.key)?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.leaf_key.serialize_der()));
        let mut cfg =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()?
                .with_no_client_auth()
                .with_single_cert(vec![leaf.der().clone()], key)?;
        cfg.alpn_protocols = self.alpn.clone();
        let cfg = Arc::new(cfg);
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        cache.insert(host, cfg.clone());
        Ok(cfg)
    }
}

fn ca_params(key: &KeyPair) -> CertificateParams {
    let id = hex::encode(&sha2::Sha256::digest(key.public_key_der())[..6]);
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, format!("bothy egress CA {id}"));
    dn.push(DnType::OrganizationName, "bothy");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::days(1);
    p.not_after = now + time::Duration::days(3650);
    p
}

fn leaf_params(host: &str) -> Result<CertificateParams, CaError> {
    let mut p = CertificateParams::default();
    p.subject_alt_names = vec![match host.parse::<std::net::IpAddr>() {
        Ok(ip) => SanType::IpAddress(ip),
        Err(_) => SanType::DnsName(host.to_string().try_into()?),
    }];
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, host);
    p.distinguished_name = dn;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p.use_authority_key_identifier_extension = true;
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::days(1);
    p.not_after = now + time::Duration::days(90);
    let mut serial = [0u8; 16];
    serial.copy_from_slice(&sha2::Sha256::digest(format!("{host}{now}"))[..16]);
    serial[0] &= 0x7f;
    p.serial_number = Some(serial.to_vec().into());
    Ok(p)
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// The first certificate of a PEM text.
pub fn first_cert(pem: &[u8]) -> Option<CertificateDer<'static>> {
    certs_from_pem(pem).into_iter().next()
}

/// Every certificate of a PEM text (other blocks are skipped).
pub fn certs_from_pem(pem: &[u8]) -> Vec<CertificateDer<'static>> {
    use rustls_pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem)
        .filter_map(Result::ok)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn created_once_with_private_key_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("egress");
        let ca = Ca::load_or_create(&d).unwrap();
        let mode = std::fs::metadata(d.join(KEY_FILE)).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::metadata(&d).unwrap().mode() & 0o777, 0o700);
        assert!(!ca.cert_pem().contains("PRIVATE KEY"));
        let again = Ca::load_or_create(&d).unwrap();
        assert_eq!(ca.cert_pem(), again.cert_pem());
        assert!(again.server_config("api.example.test").is_ok());
        assert!(again.server_config("127.0.0.1").is_ok());
    }

    #[test]
    fn leaf_configs_are_cached_per_host() {
        let ca = Ca::ephemeral().unwrap();
        let a = ca.server_config("a.test").unwrap();
        let b = ca.server_config("A.test").unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &ca.server_config("b.test").unwrap()));
    }
}
