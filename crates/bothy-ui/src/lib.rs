//! The web console's static assets, embedded in the binary at build time (see `build.rs`).
//!
//! Owns only bytes and content types; serving them (and auth) is the daemon's job. The
//! console itself is plain HTML, CSS and JS in `ui/src/`, with xterm.js from npm; it talks to
//! the public `/v1` API like any other client.

include!(concat!(env!("OUT_DIR"), "/assets.rs"));

/// One embedded file.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    pub bytes: &'static [u8],
    pub content_type: &'static str,
}

/// The asset served at `/ui/{name}` (`""` is the page itself).
pub fn get(name: &str) -> Option<Asset> {
    let name = if name.is_empty() { "index.html" } else { name };
    ASSETS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(n, bytes)| Asset {
            bytes,
            content_type: content_type(n),
        })
}

/// Names of every embedded file.
pub fn names() -> impl Iterator<Item = &'static str> {
    ASSETS.iter().map(|(n, _)| *n)
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_page_and_xterm_are_embedded() {
        let page = super::get("").unwrap();
        assert!(page.content_type.starts_with("text/html"));
        assert!(std::str::from_utf8(page.bytes)
            .unwrap()
            .contains("xterm.js"));
        for f in [
            "xterm.js",
            "xterm.css",
            "addon-fit.js",
            "app.js",
            "style.css",
        ] {
            assert!(super::get(f).is_some(), "{f}");
        }
        assert!(super::get("../Cargo.toml").is_none());
    }
}
