//! The public HTTP API: routes and thin handlers over [`crate::manager::Manager`].

mod backups;
mod blobs;
mod health;
mod images;
mod network;
mod sandboxes;
mod snapshots;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::response::IntoResponse;
use axum::routing::{any, get, post, put};
use axum::Router;
use bothy_api::ErrorCode;

use crate::error::DaemonError;
use crate::manager::Manager;

/// Shared state of handlers.
#[derive(Clone)]
pub struct AppState {
    pub manager: Arc<Manager>,
    pub previews: crate::preview::Previews,
    pub backups: crate::backups::Backups,
    pub egress: crate::egress::EgressState,
}

/// The whole API, without transport concerns (auth is layered on by `serve`), so tests can
/// drive it in-process.
pub fn router(state: AppState) -> Router {
    let control = Router::new()
        .route("/v1/health", get(health::health))
        .route("/v1/sandboxes", get(sandboxes::list))
        .route(
            "/v1/sandboxes/{name}",
            put(sandboxes::put)
                .get(sandboxes::get)
                .delete(sandboxes::delete),
        )
        .route("/v1/sandboxes/{name}/sleep", post(sandboxes::sleep))
        .route("/v1/sandboxes/{name}/wake", post(sandboxes::wake))
        .route(
            "/v1/sandboxes/{name}/network",
            get(network::get).put(network::put),
        )
        .route("/v1/images", get(images::list).post(images::import))
        .route("/v1/images/{name}", get(images::get))
        // Snapshot routes under a sandbox are matched before the data-plane wildcard.
        .route(
            "/v1/sandboxes/{name}/snapshots",
            post(snapshots::create).get(snapshots::list_of_sandbox),
        )
        .route("/v1/sandboxes/{name}/restore", post(snapshots::restore))
        .route("/v1/snapshots", get(snapshots::list))
        .route(
            "/v1/snapshots/{id}",
            get(snapshots::get).delete(snapshots::delete),
        )
        .route("/v1/snapshots/{id}/fork", post(snapshots::fork))
        .route(
            "/v1/sandboxes/{name}/backups",
            post(backups::create).get(backups::list_of_sandbox),
        )
        .route("/v1/backups", get(backups::list))
        .route(
            "/v1/backups/{id}",
            get(backups::get).delete(backups::delete),
        )
        .route("/v1/backups/{id}/restore", post(backups::restore))
        .route("/v1/snapshots/{id}/export", post(blobs::export))
        .route(
            "/v1/snapshots/import",
            post(blobs::import)
                .get(blobs::get_named_import)
                .delete(blobs::delete_named_import),
        )
        .route("/v1/sandboxes/{name}/evict", post(blobs::evict))
        .layer(DefaultBodyLimit::max(bothy_api::MAX_JSON_BODY));
    // Everything else under a sandbox goes to its agent, streamed and without a size limit
    // here (the agent bounds what it buffers).
    let data = Router::new().route("/v1/sandboxes/{name}/{*rest}", any(sandboxes::data_plane));
    let ports = {
        use crate::preview::api;
        Router::new()
            .route(
                "/v1/sandboxes/{name}/ports",
                post(api::expose).get(api::list),
            )
            .route(
                "/v1/sandboxes/{name}/ports/{port}",
                get(api::get).delete(api::unexpose),
            )
            .layer(DefaultBodyLimit::max(bothy_api::MAX_JSON_BODY))
            .with_state(state.previews.clone())
    };
    control
        .merge(ports)
        .merge(crate::egress::api::routes())
        .merge(data)
        .merge(crate::ui::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

async fn not_found(uri: http::Uri) -> impl IntoResponse {
    DaemonError::new(
        ErrorCode::NotFound,
        format!("no such endpoint: {}", uri.path()),
    )
}

async fn method_not_allowed(method: http::Method, uri: http::Uri) -> impl IntoResponse {
    DaemonError::new(
        ErrorCode::MethodNotAllowed,
        format!("{method} is not allowed on {}", uri.path()),
    )
}
