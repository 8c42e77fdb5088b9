//! The OpenID Connect relying-party adapter for sign-in ([`OidcCodeClient`]): authorization URLs
//! with `nonce` and PKCE S256 (OpenID Connect Core section 3.1.2.1, RFC 7636), and the
//! authorization-code exchange at the IdP's token endpoint (section 3.1.3), over the shared
//! outbound [`HttpClient`] (timeouts, body limit, no redirects, address rules).
//!
//! The client authenticates as the app's OIDC client configured: `client_secret_basic` (HTTP
//! Basic with the form-urlencoded id and secret, RFC 6749 section 2.3.1; the OpenID Connect
//! default, accepted by Auth0, Clerk, Okta, Keycloak, Google and Microsoft) or
//! `client_secret_post` (both in the body). The ID token comes back unverified: the sign-in use
//! case verifies it through the same JWKS cache as every user token.

use crate::http::{HttpClient, HttpError};
use crate::oauth::pkce_challenge;
use async_trait::async_trait;
use custody_identity::signin::ports::{AuthorizationRequest, OidcCodeClient, OidcEndpoint, OidcError};
use custody_identity::signin::TokenAuthMethod;
use custody_identity::Secret;
use serde::Deserialize;

/// Longest ID token accepted from a token endpoint.
const MAX_ID_TOKEN_BYTES: usize = 64 * 1024;

/// The OpenID Connect client over an [`HttpClient`].
#[derive(Debug, Clone)]
pub struct HttpOidcClient {
    http: HttpClient,
}

impl HttpOidcClient {
    pub fn new(http: HttpClient) -> Self {
        Self { http }
    }
}

/// The members of a token response sign-in needs. Unknown members (the access token, which
/// sign-in does not use, among them) are ignored.
#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    id_token: Option<String>,
}

/// An error response (RFC 6749 section 5.2). Only the code is kept: descriptions may echo input.
#[derive(Deserialize)]
struct ErrorResponse {
    error: String,
}

fn transient(e: HttpError) -> OidcError {
    OidcError::Transient(e.to_string())
}

/// Interprets a token endpoint's answer to a code exchange.
fn id_token(status: u16, body: &[u8]) -> Result<Secret, OidcError> {
    if let Ok(err) = serde_json::from_slice::<ErrorResponse>(body) {
        return Err(OidcError::Rejected(err.error.chars().filter(|c| c.is_ascii_graphic()).take(64).collect()));
    }
    if status >= 500 || status == 429 {
        return Err(OidcError::Transient(format!("the token endpoint answered HTTP {status}")));
    }
    if !(200..300).contains(&status) {
        return Err(OidcError::Rejected(format!("http_{status}")));
    }
    let parsed: TokenResponse = serde_json::from_slice(body)
        .map_err(|_| OidcError::Transient("the token endpoint's answer is not a token response".into()))?;
    match parsed.id_token {
        Some(token) if !token.is_empty() && token.len() <= MAX_ID_TOKEN_BYTES => Ok(Secret::new(token)),
        _ => Err(OidcError::NoIdToken),
    }
}

/// Whether `url` is an absolute http(s) URL without credentials or fragment.
fn usable_endpoint(url: &url::Url) -> bool {
    matches!(url.scheme(), "http" | "https")
        && url.host_str().is_some()
        && url.username().is_empty()
        && url.password().is_none()
        && url.fragment().is_none()
}

#[async_trait]
impl OidcCodeClient for HttpOidcClient {
    fn authorization_url(&self, request: &AuthorizationRequest<'_>) -> Result<String, OidcError> {
        let mut url = url::Url::parse(request.authorization_endpoint)
            .ok()
            .filter(usable_endpoint)
            .ok_or(OidcError::InvalidEndpoint("authorization_endpoint"))?;
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", request.client_id.as_str())
            .append_pair("redirect_uri", request.redirect_uri)
            .append_pair("scope", request.scope)
            .append_pair("state", request.state)
            .append_pair("nonce", request.nonce)
            .append_pair("code_challenge", &pkce_challenge(request.pkce_verifier))
            .append_pair("code_challenge_method", "S256");
        Ok(url.into())
    }

    async fn exchange_code(
        &self,
        endpoint: &OidcEndpoint<'_>,
        code: &str,
        redirect_uri: &str,
        pkce_verifier: &str,
    ) -> Result<Secret, OidcError> {
        let client_id = endpoint.client_id.as_str();
        let secret = endpoint.client_secret.expose();
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", pkce_verifier),
        ];
        let basic = match endpoint.auth_method {
            TokenAuthMethod::ClientSecretBasic => Some((client_id, secret)),
            TokenAuthMethod::ClientSecretPost => {
                form.push(("client_id", client_id));
                form.push(("client_secret", secret));
                None
            }
        };
        let response = self.http.post_form(endpoint.token_endpoint, &form, basic).await.map_err(transient)?;
        id_token(response.status.as_u16(), &response.body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::HttpClientSettings;
    use custody_identity::signin::OidcClientId;

    #[test]
    fn token_responses() {
        let ok = id_token(200, br#"{"access_token":"at","token_type":"Bearer","id_token":"h.p.s"}"#).unwrap();
        assert_eq!(ok.expose(), "h.p.s");
        assert_eq!(id_token(200, br#"{"access_token":"at"}"#), Err(OidcError::NoIdToken));
        assert_eq!(
            id_token(400, br#"{"error":"invalid_grant","error_description":"code=abc"}"#),
            Err(OidcError::Rejected("invalid_grant".into()))
        );
        assert_eq!(id_token(401, b""), Err(OidcError::Rejected("http_401".into())));
        assert!(matches!(id_token(502, b"bad gateway"), Err(OidcError::Transient(_))));
        assert!(matches!(id_token(200, b"<html>"), Err(OidcError::Transient(_))));
    }

    #[test]
    fn authorization_urls() {
        let client = HttpOidcClient::new(HttpClient::new(HttpClientSettings::default()).unwrap());
        let client_id = OidcClientId::parse("cid").unwrap();
        let request = AuthorizationRequest {
            authorization_endpoint: "https://idp.example.com/authorize?audience=x",
            client_id: &client_id,
            redirect_uri: "https://vault.example.com/v1/auth/callback",
            scope: "openid profile email",
            state: "st",
            nonce: "no",
            pkce_verifier: "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk",
        };
        let url = client.authorization_url(&request).unwrap();
        assert_eq!(
            url,
            "https://idp.example.com/authorize?audience=x&response_type=code&client_id=cid\
             &redirect_uri=https%3A%2F%2Fvault.example.com%2Fv1%2Fauth%2Fcallback&scope=openid+profile+email\
             &state=st&nonce=no&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256"
        );
        let bad = AuthorizationRequest { authorization_endpoint: "javascript:alert(1)", ..request };
        assert_eq!(client.authorization_url(&bad), Err(OidcError::InvalidEndpoint("authorization_endpoint")));
    }
}
