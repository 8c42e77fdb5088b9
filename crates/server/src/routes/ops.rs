//! Operations endpoints: liveness, readiness and metrics.

use super::Call;
use crate::json::{json_response, text_response, HttpResponse};
use crate::problem::ApiError;
use crate::state::AppState;
use hyper::StatusCode;
use serde::Serialize;
use std::sync::Arc;

/// The body of the probes: `{"status": ...}`.
#[derive(Serialize)]
struct StatusJson {
    status: &'static str,
}

/// `GET /healthz`: 200 while the process runs.
pub async fn healthz(_state: Arc<AppState>, _call: Call) -> Result<HttpResponse, ApiError> {
    Ok(json_response(StatusCode::OK, &StatusJson { status: "ok" }))
}

/// `GET /readyz`: 200 when the database answers, else 503.
pub async fn readyz(state: Arc<AppState>, _call: Call) -> Result<HttpResponse, ApiError> {
    match state.identity().check_storage().await {
        Ok(()) => Ok(json_response(StatusCode::OK, &StatusJson { status: "ready" })),
        Err(_) => Err(ApiError::unavailable("the database does not answer")),
    }
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(state: Arc<AppState>, _call: Call) -> Result<HttpResponse, ApiError> {
    let text = state.metrics().render(&[
        ("custody_jwks_fetches_total", "JWKS documents fetched from identity providers.", state.jwks().fetch_count()),
        (
            "custody_database_calls_total",
            "Statements sent to the database, BEGIN and COMMIT included (on PostgreSQL, round trips).",
            state.database_calls(),
        ),
    ]);
    Ok(text_response(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", text))
}
