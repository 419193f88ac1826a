use axum::extract::State;
use axum::Json;
use bothy_api::sandbox::Health;

use super::AppState;

pub async fn health(State(s): State<AppState>) -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        runtime: s.manager.runtime_name().into(),
        sandboxes_running: s.manager.running_count(),
    })
}
