//! Custody's adapters to the outside world for the identity and vault domains.
//!
//! - [`idp`]: the identity-provider adapters, one module per kind (Auth0, Clerk, Okta, Keycloak,
//!   custom OpenID Connect) behind the identity domain's `IdpAdapter` port, and [`idp::registry`].
//! - [`http`]: the outbound HTTP(S) client (timeouts, body limit, no redirects, address rules).
//! - [`discovery`]: OpenID Connect discovery ([`HttpDiscovery`], the `Discovery` port).
//! - [`jwks`]: JWT signature verification against an IdP's JWKS ([`JwksVerifier`], the
//!   `TokenVerifier` port).
//! - [`crypto`]: sealing ([`KeyRing`], the `Cipher` port) and keyed hashing ([`HmacHasher`]) on
//!   OpenSSL.
//! - [`random`]: randomness from OpenSSL's CSPRNG ([`OsRandom`], the `Random` port): secrets,
//!   nonces and identifiers.
//! - [`oauth`]: the OAuth 2.0 client for the vault's `OAuthClient` port (PKCE, code exchange,
//!   refresh, RFC 7009 revocation).
//! - [`oidc`]: the OpenID Connect client for sign-in ([`HttpOidcClient`], the `OidcCodeClient`
//!   port: authorization URLs with nonce and PKCE, the code exchange).
//! - [`svix_signatures`]: Svix webhook signatures for Clerk ([`SvixSignatures`], the vault's
//!   `SvixVerifier` port).
//!
//! Library errors (hyper, josekit, OpenSSL, svix) stay inside this crate: every public operation
//! returns this crate's or the domain's error types, whose messages never carry secrets.
//!
//! Verifying an IdP's tokens without the server (the README's embedding example):
//!
//! ```no_run
//! use custody_identity::jwt::{validate_claims, ClaimExpectations};
//! use custody_identity::ports::Discovery;
//! use custody_identity::{Issuer, IssuerUrl, IssuerUrlPolicy, UnixTime};
//! use custody_providers::{HttpClient, HttpClientSettings, HttpDiscovery, JwksSettings, JwksVerifier};
//!
//! async fn verify(token: &str, now: UnixTime) -> Result<String, Box<dyn std::error::Error>> {
//!     let http = HttpClient::new(HttpClientSettings::default())?;
//!     let url = IssuerUrl::parse("https://acme.us.auth0.com/", IssuerUrlPolicy::HttpsOnly)?;
//!     let document = HttpDiscovery::new(http.clone()).discover(&url).await?;
//!     let verifier = JwksVerifier::new(http, JwksSettings::default());
//!     let claims = verifier.verify(&document.jwks_uri, token).await?;
//!     let issuer = Issuer::new(document.issuer);
//!     let expect = ClaimExpectations { issuer: &issuer, audience: Some("https://api.acme.example"), leeway_secs: 60 };
//!     let verified = validate_claims(claims, &expect, now)?;
//!     let kinds = custody_providers::idp::registry();
//!     let identity = kinds.detect(&url).default_claims().extract(&verified.claims)?;
//!     Ok(identity.subject)
//! }
//! ```

pub mod crypto;
pub mod discovery;
pub mod http;
pub mod idp;
pub mod jwks;
pub mod oauth;
pub mod oidc;
pub mod random;
pub mod svix_signatures;

pub use crypto::{HmacHasher, HmacKeyError, KeyRing, KeyRingError};
pub use discovery::HttpDiscovery;
pub use http::{HttpClient, HttpClientBuildError, HttpClientSettings, HttpError, Response};
pub use jwks::{JwksSettings, JwksVerifier};
pub use oidc::HttpOidcClient;
pub use random::OsRandom;
pub use svix_signatures::SvixSignatures;
