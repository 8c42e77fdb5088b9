//! The OAuth 2.0 client adapter for the vault's [`OAuthClient`] port: authorization URLs with
//! PKCE S256 (RFC 7636), the authorization-code and refresh-token grants (RFC 6749 sections 4.1
//! and 6), and token revocation (RFC 7009), over the shared outbound [`HttpClient`].
//!
//! Client credentials go in the request body (`client_secret_post`), which Google, GitHub,
//! Slack and Microsoft all accept; `Accept: application/json` makes GitHub answer in JSON.

use crate::http::{HttpClient, HttpError};
use async_trait::async_trait;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use custody_identity::Secret;
use custody_vault::grant::{TokenKind, TokenSet};
use custody_vault::ports::{OAuthClient, OAuthEndpoint, OAuthError};
use serde::Deserialize;

/// The OAuth client over an [`HttpClient`].
#[derive(Debug, Clone)]
pub struct HttpOAuthClient {
    http: HttpClient,
}

impl HttpOAuthClient {
    pub fn new(http: HttpClient) -> Self {
        Self { http }
    }
}

/// The PKCE S256 code challenge of a verifier: BASE64URL(SHA256(verifier)).
pub fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(openssl::sha::sha256(verifier.as_bytes()))
}

/// A successful token response (RFC 6749 section 5.1). Unknown fields are ignored.
#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    token_type: Option<String>,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    scope: Option<String>,
}

/// An error response (RFC 6749 section 5.2). Only the code is kept: descriptions may echo input.
#[derive(Deserialize)]
struct ErrorResponse {
    error: String,
}

fn transient(e: HttpError) -> OAuthError {
    OAuthError::Transient(e.to_string())
}

/// Interprets a token endpoint's answer.
fn token_set(status: u16, body: &[u8]) -> Result<TokenSet, OAuthError> {
    if let Ok(err) = serde_json::from_slice::<ErrorResponse>(body) {
        // Some providers (GitHub, Slack) answer 200 with an error object.
        return Err(classify(&err.error));
    }
    if status >= 500 {
        return Err(OAuthError::Transient(format!("the token endpoint answered HTTP {status}")));
    }
    if !(200..300).contains(&status) {
        return Err(OAuthError::Rejected(format!("http_{status}")));
    }
    let parsed: TokenResponse = serde_json::from_slice(body)
        .map_err(|_| OAuthError::Transient("the token endpoint's answer is not a token response".into()))?;
    if parsed.access_token.is_empty() {
        return Err(OAuthError::Transient("the token endpoint returned an empty access token".into()));
    }
    // expires_in is a number by the RFC; some providers send it as a string.
    let expires_in = match parsed.expires_in {
        Some(serde_json::Value::Number(n)) => n.as_i64(),
        Some(serde_json::Value::String(s)) => s.parse().ok(),
        _ => None,
    }
    .filter(|s| *s >= 0);
    Ok(TokenSet {
        access_token: Secret::new(parsed.access_token),
        refresh_token: parsed.refresh_token.filter(|t| !t.is_empty()).map(Secret::new),
        token_type: parsed.token_type.unwrap_or_else(|| "Bearer".into()),
        expires_in,
        scopes: parsed.scope.map(|s| s.split([' ', ',']).filter(|s| !s.is_empty()).map(str::to_owned).collect()),
    })
}

fn classify(code: &str) -> OAuthError {
    match code {
        "invalid_grant" | "bad_refresh_token" | "bad_verification_code" | "token_expired" | "token_revoked" => {
            OAuthError::InvalidGrant
        }
        "temporarily_unavailable" | "server_error" => OAuthError::Transient(format!("the provider answered `{code}`")),
        other => OAuthError::Rejected(other.chars().filter(|c| c.is_ascii_graphic()).take(64).collect()),
    }
}

#[async_trait]
impl OAuthClient for HttpOAuthClient {
    fn authorization_url(
        &self,
        endpoint: &OAuthEndpoint<'_>,
        redirect_uri: &str,
        scopes: &[String],
        state: &str,
        pkce_verifier: &str,
    ) -> Result<String, OAuthError> {
        let mut url = url::Url::parse(endpoint.authorization_url)
            .map_err(|_| OAuthError::Rejected("invalid_authorization_url".into()))?;
        let challenge = pkce_challenge(pkce_verifier);
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("response_type", "code")
                .append_pair("client_id", endpoint.client_id)
                .append_pair("redirect_uri", redirect_uri);
            if !scopes.is_empty() {
                q.append_pair("scope", &scopes.join(" "));
            }
            q.append_pair("state", state)
                .append_pair("code_challenge", &challenge)
                .append_pair("code_challenge_method", "S256");
        }
        Ok(url.into())
    }

    async fn exchange_code(
        &self,
        endpoint: &OAuthEndpoint<'_>,
        code: &str,
        redirect_uri: &str,
        pkce_verifier: &str,
    ) -> Result<TokenSet, OAuthError> {
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", pkce_verifier),
            ("client_id", endpoint.client_id),
            ("client_secret", endpoint.client_secret.expose()),
        ];
        let response = self.http.post_form(endpoint.token_url, &form, None).await.map_err(transient)?;
        token_set(response.status.as_u16(), &response.body)
    }

    async fn refresh(&self, endpoint: &OAuthEndpoint<'_>, refresh_token: &Secret) -> Result<TokenSet, OAuthError> {
        let form = [
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token.expose()),
            ("client_id", endpoint.client_id),
            ("client_secret", endpoint.client_secret.expose()),
        ];
        let response = self.http.post_form(endpoint.token_url, &form, None).await.map_err(transient)?;
        token_set(response.status.as_u16(), &response.body)
    }

    async fn revoke(
        &self,
        revocation_url: &str,
        client_id: &str,
        client_secret: &Secret,
        token: &Secret,
        kind: TokenKind,
    ) -> Result<(), OAuthError> {
        let hint = match kind {
            TokenKind::Access => "access_token",
            TokenKind::Refresh => "refresh_token",
        };
        let form = [
            ("token", token.expose()),
            ("token_type_hint", hint),
            ("client_id", client_id),
            ("client_secret", client_secret.expose()),
        ];
        let response = self.http.post_form(revocation_url, &form, None).await.map_err(transient)?;
        let status = response.status.as_u16();
        // RFC 7009 section 2.2: 200 for revoked and for already-invalid tokens alike.
        if (200..300).contains(&status) {
            return Ok(());
        }
        if let Ok(err) = serde_json::from_slice::<ErrorResponse>(&response.body) {
            return Err(match err.error.as_str() {
                "unsupported_token_type" => OAuthError::InvalidGrant,
                other => classify(other),
            });
        }
        if status >= 500 || status == 429 {
            Err(OAuthError::Transient(format!("the revocation endpoint answered HTTP {status}")))
        } else {
            Err(OAuthError::Rejected(format!("http_{status}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_rfc7636_appendix_b() {
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn token_responses() {
        let ok = token_set(
            200,
            br#"{"access_token":"at","token_type":"bearer","expires_in":"3600","refresh_token":"rt","scope":"a b"}"#,
        )
        .unwrap();
        assert_eq!(ok.access_token.expose(), "at");
        assert_eq!(ok.expires_in, Some(3600));
        assert_eq!(ok.scopes, Some(vec!["a".to_string(), "b".to_string()]));
        assert_eq!(
            token_set(400, br#"{"error":"invalid_grant","error_description":"x"}"#),
            Err(OAuthError::InvalidGrant)
        );
        assert_eq!(token_set(200, br#"{"error":"bad_refresh_token"}"#), Err(OAuthError::InvalidGrant));
        assert!(matches!(token_set(503, b"busy"), Err(OAuthError::Transient(_))));
        assert!(
            matches!(token_set(401, br#"{"error":"invalid_client"}"#), Err(OAuthError::Rejected(c)) if c == "invalid_client")
        );
        assert!(matches!(token_set(200, b"not json"), Err(OAuthError::Transient(_))));
    }
}
