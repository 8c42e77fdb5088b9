//! `GET /openapi.json`: the OpenAPI 3.1 description of this API. The document is the
//! repository's `docs/openapi.json`, compiled into the binary, so the served document and the file
//! can never differ. `tests/tests/openapi.rs` keeps it in step with the routing table.

use super::Call;
use crate::json::HttpResponse;
use crate::problem::ApiError;
use crate::state::AppState;
use bytes::Bytes;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use std::sync::Arc;

/// The OpenAPI document, as kept in the repository.
pub const DOCUMENT: &str = include_str!("../../../../docs/openapi.json");

/// `GET /openapi.json`: public, like the API reference it is.
pub async fn document(_state: Arc<AppState>, _call: Call) -> Result<HttpResponse, ApiError> {
    let mut response = Response::new(crate::json::full(Bytes::from_static(DOCUMENT.as_bytes())));
    *response.status_mut() = StatusCode::OK;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}
