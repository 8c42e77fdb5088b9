//! Custody's adapters to the outside world for the identity and vault domains.
//!
//! - [`http`]: the outbound HTTP(S) client (timeouts, body limit, no redirects, address rules).
//! - [`discovery`]: OpenID Connect discovery ([`HttpDiscovery`], the `Discovery` port).
//! - [`jwks`]: JWT signature verification against an IdP's JWKS ([`JwksVerifier`], the
//!   `TokenVerifier` port).
//! - [`crypto`]: sealing ([`KeyRing`], the `Cipher` port), randomness ([`OsRandom`]) and keyed
//!   hashing ([`HmacHasher`]) on OpenSSL.
//! - [`oauth`]: the OAuth 2.0 client for the vault's `OAuthClient` port (PKCE, code exchange,
//!   refresh, RFC 7009 revocation).
//! - [`oidc`]: the OpenID Connect client for sign-in ([`HttpOidcClient`], the `OidcCodeClient`
//!   port: authorization URLs with nonce and PKCE, the code exchange).
//! - [`svix_signatures`]: Svix webhook signatures for Clerk ([`SvixSignatures`], the vault's
//!   `SvixVerifier` port).
//!
//! Library errors (hyper, josekit, OpenSSL, svix) stay inside this crate: every public operation
//! returns this crate's or the domain's error types, whose messages never carry secrets.

pub mod crypto;
pub mod discovery;
pub mod http;
pub mod jwks;
pub mod oauth;
pub mod oidc;
pub mod svix_signatures;

pub use crypto::{HmacHasher, HmacKeyError, KeyRing, KeyRingError, OsRandom};
pub use discovery::HttpDiscovery;
pub use http::{HttpClient, HttpClientBuildError, HttpClientSettings, HttpError, Response};
pub use jwks::{JwksSettings, JwksVerifier};
pub use oidc::HttpOidcClient;
pub use svix_signatures::SvixSignatures;
