//! Operations endpoints: liveness, readiness and metrics.

use super::Call;
use crate::json::{json_response, text_response, HttpResponse};
use crate::problem::ApiError;
use crate::state::AppState;
use custody_store::prelude::*;
use hyper::StatusCode;
use serde_json::json;
use std::sync::Arc;

/// `GET /healthz`: 200 while the process runs.
pub async fn healthz(_state: Arc<AppState>, _call: Call) -> Result<HttpResponse, ApiError> {
    Ok(json_response(StatusCode::OK, &json!({"status": "ok"})))
}

/// `GET /readyz`: 200 when the database answers, else 503.
pub async fn readyz(state: Arc<AppState>, _call: Call) -> Result<HttpResponse, ApiError> {
    match state.store.ping().await {
        Ok(()) => Ok(json_response(StatusCode::OK, &json!({"status": "ready"}))),
        Err(_) => Err(ApiError::unavailable("the database does not answer")),
    }
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(state: Arc<AppState>, _call: Call) -> Result<HttpResponse, ApiError> {
    let text = state.metrics.render(&[(
        "custody_jwks_fetches_total",
        "JWKS documents fetched from identity providers.",
        state.verifier.fetch_count(),
    )]);
    Ok(text_response(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", text))
}
