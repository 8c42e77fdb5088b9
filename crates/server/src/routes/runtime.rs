//! Runtime endpoints an app's backend calls for a signed-in user (API key + user token).

use super::apps::user_json;
use super::{bearer, user_token, Call};
use crate::json::{json_response, HttpResponse};
use crate::problem::ApiError;
use crate::state::AppState;
use custody_identity::User;
use hyper::StatusCode;
use std::sync::Arc;

/// Authenticates the app and resolves the active user the call acts for.
pub async fn acting_user(state: &AppState, call: &Call) -> Result<User, ApiError> {
    let presented = bearer(&call.headers).ok_or_else(ApiError::unauthorized)?;
    // The key and the app's IdP settings in one read: this runs on every hand-out.
    let (key, idp) = state.authenticate_api_key_with_idp(presented).await?;
    let token = user_token(call)?;
    Ok(state.identity.resolve_user_under(&key.app_id, idp, token).await?)
}

/// `GET /v1/me`.
pub async fn me(state: Arc<AppState>, call: Call) -> Result<HttpResponse, ApiError> {
    let user = acting_user(&state, &call).await?;
    Ok(json_response(StatusCode::OK, &user_json(&user)))
}
