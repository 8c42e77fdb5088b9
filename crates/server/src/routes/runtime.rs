//! Runtime endpoints an app's backend calls for a signed-in user (API key + user token).

use super::apps::user_json;
use super::{require_app_key, user_token, Call};
use crate::json::{json_response, HttpResponse};
use crate::problem::ApiError;
use crate::state::AppState;
use custody_identity::User;
use hyper::StatusCode;
use std::sync::Arc;

/// Authenticates the app and resolves the active user the call acts for.
pub async fn acting_user(state: &AppState, call: &Call) -> Result<User, ApiError> {
    let key = require_app_key(state, call).await?;
    let token = user_token(call)?;
    Ok(state.identity.resolve_user(&key.app_id, token).await?)
}

/// `GET /v1/me`.
pub async fn me(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    let user = acting_user(&state, &call).await?;
    Ok(json_response(StatusCode::OK, &user_json(&user)))
}
