//! Runtime endpoints an app's backend calls for a signed-in user (API key + user token).

use super::apps::UserJson;
use super::{user_token, Call};
use crate::json::{json_response, HttpResponse};
use crate::problem::ApiError;
use crate::state::AppState;
use custody_identity::User;
use hyper::StatusCode;
use std::sync::Arc;

/// Authenticates the app and resolves the active user the call acts for.
pub async fn acting_user(state: &AppState, call: &mut Call) -> Result<User, ApiError> {
    // The router authenticated the key, reading the app's IdP settings in the same statement.
    let caller = call.app.take().ok_or_else(ApiError::unauthorized)?;
    let token = user_token(call)?;
    let caller = Arc::unwrap_or_clone(caller);
    Ok(state.identity().resolve_user_under(&caller.key.app_id, caller.idp, token).await?)
}

/// `GET /v1/me`.
pub async fn me(state: Arc<AppState>, mut call: Call) -> Result<HttpResponse, ApiError> {
    let user = acting_user(&state, &mut call).await?;
    Ok(json_response(StatusCode::OK, &UserJson::from(&user)))
}
