//! OpenID Connect Discovery: fetching and checking an issuer's OpenID Provider configuration
//! (OpenID Connect Discovery 1.0, sections 4 and 3).
//!
//! [`HttpDiscovery`] implements the identity domain's [`Discovery`] port over [`HttpClient`],
//! which brings the timeouts, the body limit, the refusal of redirects and the address rules.

use crate::http::{HttpClient, HttpError};
use async_trait::async_trait;
use custody_identity::issuer::IssuerUrl;
use custody_identity::ports::{Discovery, DiscoveryDocument, DiscoveryError};
use serde_json::{Map, Value};
use url::Url;

/// Fetches discovery documents over HTTP(S). Cheap to clone.
#[derive(Debug, Clone)]
pub struct HttpDiscovery {
    client: HttpClient,
}

impl HttpDiscovery {
    /// Discovery over `client`. Plain-http endpoints are accepted only when the client allows
    /// private addresses (development and tests).
    pub fn new(client: HttpClient) -> Self {
        Self { client }
    }
}

#[async_trait]
impl Discovery for HttpDiscovery {
    async fn discover(&self, issuer_url: &IssuerUrl) -> Result<DiscoveryDocument, DiscoveryError> {
        let response = self.client.get(&issuer_url.discovery_url()).await.map_err(|e| match e {
            HttpError::Redirect { status, .. } => DiscoveryError::Status(status),
            other => DiscoveryError::Unreachable(other.to_string()),
        })?;
        if response.status != http::StatusCode::OK {
            return Err(DiscoveryError::Status(response.status.as_u16()));
        }
        let document = parse_document(issuer_url, &response.body, self.client.settings().allow_private_addresses)?;
        tracing::debug!(issuer = %document.issuer, "discovery document fetched");
        Ok(document)
    }
}

/// Checks a discovery document's bytes against the issuer URL it was fetched for.
///
/// The document must be a JSON object whose `issuer` [matches](IssuerUrl::matches_declared) and
/// whose `jwks_uri` is an absolute `https` URL (`http` too when `allow_insecure`). The
/// authorization, token and end-session endpoints are optional, but when present they must be
/// acceptable URLs in the same sense. `id_token_signing_alg_values_supported` becomes
/// `signing_algs` (its non-string entries are ignored).
pub fn parse_document(
    issuer_url: &IssuerUrl,
    body: &[u8],
    allow_insecure: bool,
) -> Result<DiscoveryDocument, DiscoveryError> {
    let object: Map<String, Value> = match serde_json::from_slice(body) {
        Ok(Value::Object(object)) => object,
        _ => return Err(DiscoveryError::NotJson),
    };
    let issuer = match object.get("issuer") {
        Some(Value::String(declared)) if issuer_url.matches_declared(declared) => declared.clone(),
        Some(Value::String(declared)) => return Err(DiscoveryError::IssuerMismatch { declared: truncate(declared) }),
        _ => return Err(DiscoveryError::BadEndpoint("issuer")),
    };
    let jwks_uri = match object.get("jwks_uri") {
        None | Some(Value::Null) => return Err(DiscoveryError::NoJwksUri),
        Some(value) => endpoint(value, "jwks_uri", allow_insecure)?,
    };
    let optional = |name: &'static str| -> Result<Option<String>, DiscoveryError> {
        match object.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => endpoint(value, name, allow_insecure).map(Some),
        }
    };
    let signing_algs = match object.get("id_token_signing_alg_values_supported") {
        Some(Value::Array(values)) => values.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect(),
        _ => Vec::new(),
    };
    Ok(DiscoveryDocument {
        issuer,
        jwks_uri,
        authorization_endpoint: optional("authorization_endpoint")?,
        token_endpoint: optional("token_endpoint")?,
        end_session_endpoint: optional("end_session_endpoint")?,
        signing_algs,
    })
}

/// An endpoint URL from the document: absolute, `https` (or `http` when insecure endpoints are
/// allowed), with a host, without credentials or a fragment.
fn endpoint(value: &Value, name: &'static str, allow_insecure: bool) -> Result<String, DiscoveryError> {
    let raw = value.as_str().ok_or(DiscoveryError::BadEndpoint(name))?;
    let url = Url::parse(raw).map_err(|_| DiscoveryError::BadEndpoint(name))?;
    let scheme_ok = url.scheme() == "https" || (allow_insecure && url.scheme() == "http");
    let acceptable = scheme_ok
        && url.host().is_some()
        && url.username().is_empty()
        && url.password().is_none()
        && url.fragment().is_none();
    if acceptable {
        Ok(raw.to_owned())
    } else {
        Err(DiscoveryError::BadEndpoint(name))
    }
}

/// A declared issuer shown back to the operator: bounded, so a hostile document cannot make the
/// error message arbitrarily large.
fn truncate(declared: &str) -> String {
    const MAX: usize = 200;
    if declared.len() <= MAX {
        return declared.to_owned();
    }
    let mut end = MAX;
    while !declared.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &declared[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use custody_identity::issuer::IssuerUrlPolicy;
    use serde_json::json;

    fn issuer() -> IssuerUrl {
        IssuerUrl::parse("https://tenant.example.com", IssuerUrlPolicy::HttpsOnly).unwrap()
    }

    fn parse(v: Value) -> Result<DiscoveryDocument, DiscoveryError> {
        parse_document(&issuer(), v.to_string().as_bytes(), false)
    }

    fn good() -> Value {
        json!({
            "issuer": "https://tenant.example.com/",
            "jwks_uri": "https://tenant.example.com/.well-known/jwks.json",
            "authorization_endpoint": "https://tenant.example.com/authorize",
            "token_endpoint": "https://tenant.example.com/oauth/token",
            "id_token_signing_alg_values_supported": ["RS256", 7, "ES256"],
        })
    }

    #[test]
    fn accepts_a_good_document() {
        let doc = parse(good()).unwrap();
        assert_eq!(doc.issuer, "https://tenant.example.com/");
        assert_eq!(doc.jwks_uri, "https://tenant.example.com/.well-known/jwks.json");
        assert_eq!(doc.token_endpoint.as_deref(), Some("https://tenant.example.com/oauth/token"));
        assert_eq!(doc.end_session_endpoint, None);
        assert_eq!(doc.signing_algs, vec!["RS256".to_owned(), "ES256".to_owned()]);
    }

    #[test]
    fn refuses_bad_documents() {
        assert_eq!(parse_document(&issuer(), b"<html>", false), Err(DiscoveryError::NotJson));
        assert_eq!(parse(json!([1, 2])), Err(DiscoveryError::NotJson));
        let mut v = good();
        v["issuer"] = json!("https://evil.example.com/");
        assert_eq!(parse(v), Err(DiscoveryError::IssuerMismatch { declared: "https://evil.example.com/".into() }));
        let mut v = good();
        v.as_object_mut().unwrap().remove("issuer");
        assert_eq!(parse(v), Err(DiscoveryError::BadEndpoint("issuer")));
        let mut v = good();
        v.as_object_mut().unwrap().remove("jwks_uri");
        assert_eq!(parse(v), Err(DiscoveryError::NoJwksUri));
        let mut v = good();
        v["jwks_uri"] = json!("http://tenant.example.com/jwks");
        assert_eq!(parse(v), Err(DiscoveryError::BadEndpoint("jwks_uri")));
        let mut v = good();
        v["jwks_uri"] = json!(42);
        assert_eq!(parse(v), Err(DiscoveryError::BadEndpoint("jwks_uri")));
        let mut v = good();
        v["token_endpoint"] = json!("/relative");
        assert_eq!(parse(v), Err(DiscoveryError::BadEndpoint("token_endpoint")));
    }

    #[test]
    fn http_endpoints_only_when_insecure_allowed() {
        let mut v = good();
        v["jwks_uri"] = json!("http://127.0.0.1:8080/jwks");
        assert!(parse_document(&issuer(), v.to_string().as_bytes(), true).is_ok());
    }

    #[test]
    fn long_declared_issuers_are_truncated() {
        let mut v = good();
        v["issuer"] = json!("é".repeat(300));
        match parse(v) {
            Err(DiscoveryError::IssuerMismatch { declared }) => assert!(declared.len() <= 204),
            other => panic!("unexpected {other:?}"),
        }
    }
}
