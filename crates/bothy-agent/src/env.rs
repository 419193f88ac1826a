//! The environment commands start with.

use std::collections::BTreeMap;

/// The egress CA bundle (host roots + the installation's egress CA) and the CA certificate,
/// put into every sandbox by the daemon as a read-only layer.
pub const CA_BUNDLE: &str = "/etc/bothy/ca-bundle.pem";
pub const CA_CERT: &str = "/etc/bothy/ca.pem";

/// Variables that make common TLS stacks trust the egress CA: OpenSSL (`SSL_CERT_FILE`), curl,
/// git, Python requests, and Node (which adds `NODE_EXTRA_CA_CERTS` to its own roots).
fn ca_env() -> &'static [(&'static str, &'static str)] {
    static CA_ENV: std::sync::OnceLock<Vec<(&'static str, &'static str)>> =
        std::sync::OnceLock::new();
    CA_ENV.get_or_init(|| {
        if !std::path::Path::new(CA_BUNDLE).is_file() {
            return Vec::new();
        }
        let mut v = vec![
            ("SSL_CERT_FILE", CA_BUNDLE),
            ("REQUESTS_CA_BUNDLE", CA_BUNDLE),
            ("CURL_CA_BUNDLE", CA_BUNDLE),
            ("GIT_SSL_CAINFO", CA_BUNDLE),
        ];
        if std::path::Path::new(CA_CERT).is_file() {
            v.push(("NODE_EXTRA_CA_CERTS", CA_CERT));
        }
        v
    })
}

/// The environment every command starts from, before the sandbox's and the request's own.
pub fn base_env() -> BTreeMap<String, String> {
    [
        (
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        ),
        ("HOME", "/root"),
        ("USER", "root"),
        ("LOGNAME", "root"),
        ("SHELL", "/bin/sh"),
        ("LANG", "C.UTF-8"),
        ("TERM", "xterm-256color"),
    ]
    .into_iter()
    .chain(ca_env().iter().copied())
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Layers environments: later maps override earlier ones.
pub fn merged<'a>(
    layers: impl IntoIterator<Item = &'a BTreeMap<String, String>>,
) -> BTreeMap<String, String> {
    let mut out = base_env();
    for layer in layers {
        out.extend(layer.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    out
}
