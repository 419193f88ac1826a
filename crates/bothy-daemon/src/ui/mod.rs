//! The web console at `/ui/`: static files embedded in the binary (`bothy-ui`), nothing else.
//!
//! The files are the same for everyone and carry no data, so they are served without the
//! token (a browser cannot put a bearer header on a page load); everything the console shows
//! comes from `/v1`, behind the same auth as any other client (see [`crate::auth`] for how the
//! console presents its token, including on WebSocket upgrades).

use axum::extract::Path;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;
use bothy_api::ErrorCode;
use http::header;

use crate::error::DaemonError;

/// The prefix every console path starts with; [`crate::auth`] lets these through.
pub const PREFIX: &str = "/ui";

/// Whether a request is for a console asset (served without the token).
pub fn is_asset_request(method: &http::Method, path: &str) -> bool {
    (method == http::Method::GET || method == http::Method::HEAD)
        && (path == PREFIX || path.starts_with("/ui/"))
}

pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(|| asset(String::new())))
        .route("/ui/{file}", get(|Path(file): Path<String>| asset(file)))
}

async fn asset(name: String) -> Response {
    let Some(a) = bothy_ui::get(&name) else {
        return DaemonError::new(ErrorCode::NotFound, format!("no console file {name:?}"))
            .into_response();
    };
    (
        [
            (header::CONTENT_TYPE, a.content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::REFERRER_POLICY, "no-referrer"),
            // Only our own scripts and styles, API calls and WebSockets to this origin; never
            // framed (the console holds a token in its tab).
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; connect-src 'self'; img-src 'self' data:; \
                 style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; \
                 form-action 'self'",
            ),
        ],
        a.bytes,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    async fn get(path: &str) -> (u16, Vec<(String, String)>, Vec<u8>) {
        let app: Router = routes();
        let resp = app
            .oneshot(
                http::Request::get(path)
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
            .collect();
        let body = http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        (status, headers, body)
    }

    #[tokio::test]
    async fn serves_the_page_and_its_assets_only() {
        let (s, h, body) = get("/ui/").await;
        assert_eq!(s, 200);
        assert!(String::from_utf8_lossy(&body).contains("<title>bothy</title>"));
        assert!(h
            .iter()
            .any(|(k, v)| k == "content-security-policy" && v.contains("frame-ancestors 'none'")));
        assert_eq!(get("/ui").await.0, 308);
        assert_eq!(get("/ui/xterm.js").await.0, 200);
        for bad in [
            "/ui/nope.js",
            "/ui/..%2FCargo.toml",
            "/ui/%2e%2e",
            "/ui/build.rs",
        ] {
            assert_eq!(get(bad).await.0, 404, "{bad}");
        }
    }

    #[test]
    fn only_gets_under_ui_are_assets() {
        assert!(is_asset_request(&http::Method::GET, "/ui/app.js"));
        assert!(is_asset_request(&http::Method::GET, "/ui"));
        assert!(!is_asset_request(&http::Method::POST, "/ui/app.js"));
        assert!(!is_asset_request(&http::Method::GET, "/uix"));
        assert!(!is_asset_request(&http::Method::GET, "/v1/sandboxes"));
    }
}
