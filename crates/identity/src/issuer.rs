//! Issuer URLs: what an operator types (an [`IssuerUrl`], validated) and what an IdP declares in
//! its discovery document and its tokens (an [`Issuer`], compared exactly against `iss`).

use serde::{Deserialize, Serialize};
use std::fmt;
use url::{Host, Url};

/// Whether plain-http issuers on loopback are acceptable (development and tests only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IssuerUrlPolicy {
    /// Only absolute `https` URLs.
    HttpsOnly,
    /// `https` anywhere, and `http` on loopback hosts (`localhost`, 127.0.0.0/8, `::1`).
    AllowInsecureLoopback,
}

/// Why an issuer URL was refused. The message is safe to show to the operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidIssuerUrl {
    #[error("issuer_url is not an absolute URL")]
    NotAbsolute,
    #[error("issuer_url must use https")]
    NotHttps,
    #[error(
        "issuer_url must use https; plain http is accepted only for a loopback host (localhost, 127.0.0.0/8, ::1) \
         when the server runs with CUSTODY_ALLOW_INSECURE_ISSUERS=true (development and tests only)"
    )]
    InsecureNotAllowed,
    #[error("issuer_url must not carry a query or a fragment")]
    QueryOrFragment,
    #[error("issuer_url must be the issuer itself, not a /.well-known/ document URL")]
    WellKnownUrl,
    #[error("issuer_url must not carry a user name or password")]
    Credentials,
    #[error("issuer_url has no host")]
    NoHost,
}

/// An issuer URL as given by an operator, validated: absolute, https (or loopback http when the
/// policy allows it), no query, fragment, credentials or `/.well-known/` path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerUrl {
    url: Url,
    raw: String,
}

impl IssuerUrl {
    /// Validates `raw` under `policy`.
    pub fn parse(raw: &str, policy: IssuerUrlPolicy) -> Result<Self, InvalidIssuerUrl> {
        let trimmed = raw.trim();
        if trimmed.contains('?') || trimmed.contains('#') {
            return Err(InvalidIssuerUrl::QueryOrFragment);
        }
        let url = Url::parse(trimmed).map_err(|_| InvalidIssuerUrl::NotAbsolute)?;
        if url.cannot_be_a_base() {
            return Err(InvalidIssuerUrl::NotAbsolute);
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(InvalidIssuerUrl::Credentials);
        }
        let host = url.host().ok_or(InvalidIssuerUrl::NoHost)?;
        match url.scheme() {
            "https" => {}
            "http" => {
                if policy != IssuerUrlPolicy::AllowInsecureLoopback || !is_loopback_host(&host) {
                    return Err(InvalidIssuerUrl::InsecureNotAllowed);
                }
            }
            _ => return Err(InvalidIssuerUrl::NotHttps),
        }
        if url.path().split('/').any(|segment| segment == ".well-known") {
            return Err(InvalidIssuerUrl::WellKnownUrl);
        }
        Ok(Self { url, raw: trimmed.to_owned() })
    }

    /// The URL as the operator wrote it (trimmed).
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The host name, lower-cased, used for kind detection.
    pub fn host(&self) -> String {
        self.url.host_str().unwrap_or_default().to_ascii_lowercase()
    }

    /// The non-empty segments of the URL's path, used for kind detection (Keycloak's
    /// `/realms/{realm}`).
    pub fn path_segments(&self) -> Vec<&str> {
        self.url.path().split('/').filter(|s| !s.is_empty()).collect()
    }

    /// The OpenID Provider configuration URL (OpenID Connect Discovery 1.0, section 4): the
    /// issuer with any terminating `/` removed, followed by `/.well-known/openid-configuration`.
    pub fn discovery_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.raw.trim_end_matches('/'))
    }

    /// Whether an `issuer` declared by a discovery document names this URL. The comparison is
    /// exact except for one terminating `/`, which operators often leave off (Auth0 issuers end
    /// with one).
    pub fn matches_declared(&self, declared: &str) -> bool {
        declared == self.raw || declared.trim_end_matches('/') == self.raw.trim_end_matches('/')
    }
}

fn is_loopback_host(host: &Host<&str>) -> bool {
    match host {
        Host::Domain(name) => name.eq_ignore_ascii_case("localhost"),
        Host::Ipv4(ip) => ip.is_loopback(),
        Host::Ipv6(ip) => ip.is_loopback(),
    }
}

/// The issuer an IdP declares, compared exactly (RFC 7519 `iss`, case-sensitive) with tokens.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Issuer(String);

impl Issuer {
    /// Wraps an issuer string declared by a discovery document that already passed
    /// [`IssuerUrl::matches_declared`], or read back from storage.
    pub fn new(declared: impl Into<String>) -> Self {
        Self(declared.into())
    }

    /// The issuer string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Issuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use IssuerUrlPolicy::*;

    #[test]
    fn accepts_https_issuers() {
        let u = IssuerUrl::parse("https://tenant.eu.auth0.com/", HttpsOnly).unwrap();
        assert_eq!(u.discovery_url(), "https://tenant.eu.auth0.com/.well-known/openid-configuration");
        let u = IssuerUrl::parse("https://login.example.com/realms/acme", HttpsOnly).unwrap();
        assert_eq!(u.discovery_url(), "https://login.example.com/realms/acme/.well-known/openid-configuration");
        assert_eq!(u.host(), "login.example.com");
    }

    #[test]
    fn refuses_bad_urls() {
        assert_eq!(IssuerUrl::parse("tenant.auth0.com", HttpsOnly), Err(InvalidIssuerUrl::NotAbsolute));
        assert_eq!(IssuerUrl::parse("http://idp.example.com", HttpsOnly), Err(InvalidIssuerUrl::InsecureNotAllowed));
        assert_eq!(
            IssuerUrl::parse("http://idp.example.com", AllowInsecureLoopback),
            Err(InvalidIssuerUrl::InsecureNotAllowed)
        );
        assert_eq!(IssuerUrl::parse("ftp://idp.example.com", AllowInsecureLoopback), Err(InvalidIssuerUrl::NotHttps));
        assert_eq!(IssuerUrl::parse("https://idp.example.com/?a=b", HttpsOnly), Err(InvalidIssuerUrl::QueryOrFragment));
        assert_eq!(IssuerUrl::parse("https://idp.example.com/#x", HttpsOnly), Err(InvalidIssuerUrl::QueryOrFragment));
        assert_eq!(
            IssuerUrl::parse("https://idp.example.com/.well-known/openid-configuration", HttpsOnly),
            Err(InvalidIssuerUrl::WellKnownUrl)
        );
        assert_eq!(IssuerUrl::parse("https://u:p@idp.example.com", HttpsOnly), Err(InvalidIssuerUrl::Credentials));
    }

    #[test]
    fn loopback_http_only_when_allowed() {
        assert!(IssuerUrl::parse("http://127.0.0.1:9999", AllowInsecureLoopback).is_ok());
        assert!(IssuerUrl::parse("http://localhost:9999/", AllowInsecureLoopback).is_ok());
        assert!(IssuerUrl::parse("http://[::1]:9999/", AllowInsecureLoopback).is_ok());
        assert!(IssuerUrl::parse("http://127.0.0.1:9999", HttpsOnly).is_err());
    }

    #[test]
    fn declared_issuer_matches_up_to_trailing_slash() {
        let u = IssuerUrl::parse("https://tenant.auth0.com", HttpsOnly).unwrap();
        assert!(u.matches_declared("https://tenant.auth0.com/"));
        assert!(u.matches_declared("https://tenant.auth0.com"));
        assert!(!u.matches_declared("https://evil.example.com/"));
        assert!(!u.matches_declared("https://tenant.auth0.com/x"));
    }
}
