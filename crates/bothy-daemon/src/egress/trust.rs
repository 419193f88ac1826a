//! The sandboxes' trust in the egress CA: a read-only layer on top of every sandbox's root
//! holding the CA certificate (never its key) and a CA bundle (the host's roots + ours), also
//! in place of the system bundle so that tools which ignore the variables trust it too. The
//! agent points `SSL_CERT_FILE` and friends at the bundle when it exists
//! (`bothy_agent::env`).

use std::io::Write;
use std::path::{Path, PathBuf};

use bothy_runtime::{Lower, OverlaySpec};
use bothy_store::Layout;

/// Path of the CA certificate inside a sandbox.
pub const CA_CERT_IN_SANDBOX: &str = "/etc/bothy/ca.pem";
/// Path of the bundle (host roots + the egress CA) inside a sandbox.
pub const CA_BUNDLE_IN_SANDBOX: &str = "/etc/bothy/ca-bundle.pem";
/// The Debian-family system bundle, replaced by the same bundle.
const SYSTEM_BUNDLE: &str = "etc/ssl/certs/ca-certificates.crt";

/// Where the host's roots are read from, first found wins.
const HOST_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

pub fn layer_dir(layout: &Layout) -> PathBuf {
    super::egress_dir(layout).join("trust")
}

/// (Re)writes the layer; files are replaced only when their content changes (the layer is
/// mounted in running sandboxes).
pub fn write_layer(dir: &Path, ca_pem: &str) -> std::io::Result<()> {
    let host = HOST_BUNDLES
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default();
    let mut bundle = host;
    if !bundle.is_empty() && !bundle.ends_with('\n') {
        bundle.push('\n');
    }
    bundle.push_str("# bothy egress CA\n");
    bundle.push_str(ca_pem);
    let rel = |p: &str| dir.join(p.trim_start_matches('/'));
    write_if_changed(&rel(CA_CERT_IN_SANDBOX), ca_pem.as_bytes())?;
    write_if_changed(&rel(CA_BUNDLE_IN_SANDBOX), bundle.as_bytes())?;
    write_if_changed(&rel(SYSTEM_BUNDLE), bundle.as_bytes())?;
    Ok(())
}

fn write_if_changed(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if std::fs::read(path).is_ok_and(|cur| cur == bytes) {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Puts the trust layer on top of the lower layers of the sandbox's root overlay.
pub fn add_layer(overlays: &mut [OverlaySpec], layout: &Layout) {
    let dir = layer_dir(layout);
    if !dir.is_dir() {
        return;
    }
    if let Some(root) = overlays.iter_mut().find(|o| o.target == "/") {
        root.lowers.insert(
            0,
            Lower {
                path: dir,
                idmap: true,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layer_holds_the_certificate_and_bundles_but_no_key() {
        let d = tempfile::tempdir().unwrap();
        let ca = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        write_layer(d.path(), ca).unwrap();
        let bundle = std::fs::read_to_string(d.path().join("etc/bothy/ca-bundle.pem")).unwrap();
        assert!(bundle.ends_with(ca));
        assert_eq!(
            std::fs::read_to_string(d.path().join("etc/bothy/ca.pem")).unwrap(),
            ca
        );
        assert_eq!(
            std::fs::read_to_string(d.path().join(SYSTEM_BUNDLE)).unwrap(),
            bundle
        );
        let mut all = String::new();
        for e in walk(d.path()) {
            all.push_str(&std::fs::read_to_string(e).unwrap());
        }
        assert!(!all.contains("PRIVATE KEY"));
        // Unchanged content: nothing rewritten.
        let before = std::fs::metadata(d.path().join("etc/bothy/ca.pem"))
            .unwrap()
            .modified()
            .unwrap();
        write_layer(d.path(), ca).unwrap();
        let after = std::fs::metadata(d.path().join("etc/bothy/ca.pem"))
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(before, after);
    }

    fn walk(p: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(p).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
        out
    }
}
