//! The identity-provider adapters, one module per kind, each implementing the identity domain's
//! [`IdpAdapter`] port: how the kind is recognised from its issuer, the claim mappings it starts
//! with, and how its lifecycle webhooks are authenticated and decoded.
//!
//! They share an OpenID Connect base in this crate: discovery ([`crate::discovery`]), key sets
//! and token verification ([`crate::jwks`]) and the authorization-code flow of sign-in
//! ([`crate::oidc`]), which no kind needs to change; and the JSON reading of webhook bodies
//! ([`payload`]), and Custody's native format ([`native`]) that Keycloak and custom providers
//! send.
//!
//! Adding a kind is a module here and one line in [`registry`].

use custody_identity::kinds::{IdpAdapter, IdpKinds};
use std::sync::Arc;

pub mod auth0;
pub mod clerk;
pub mod custom_oidc;
pub mod keycloak;
pub mod native;
pub mod okta;
pub mod payload;

#[cfg(test)]
mod decoder_tests;

pub use auth0::Auth0;
pub use clerk::Clerk;
pub use custom_oidc::CustomOidc;
pub use keycloak::Keycloak;
pub use okta::Okta;

/// Every kind this build knows, in detection order, with the generic OpenID Connect adapter as
/// the fallback.
pub fn registry() -> IdpKinds {
    let adapters: Vec<Arc<dyn IdpAdapter>> = vec![
        Arc::new(Auth0),
        Arc::new(Clerk),
        Arc::new(Okta),
        Arc::new(Keycloak),
        // One line per kind: a new adapter module is registered here.
    ];
    match IdpKinds::new(adapters, Arc::new(CustomOidc)) {
        Ok(kinds) => kinds,
        // The names above are distinct literals; a test holds them so.
        Err(e) => unreachable!("{e}"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use custody_identity::kinds::SecretSource;
    use custody_identity::{ClaimMappings, IdpKind, IssuerUrl, IssuerUrlPolicy};

    fn kind_of(url: &str) -> String {
        registry().detect(&IssuerUrl::parse(url, IssuerUrlPolicy::HttpsOnly).unwrap()).kind().as_str().to_owned()
    }

    #[test]
    fn detection_table() {
        for (url, kind) in [
            ("https://acme.us.auth0.com/", "auth0"),
            ("https://ACME.AUTH0.COM", "auth0"),
            ("https://auth0.com.evil.example", "custom_oidc"),
            ("https://happy-cat-12.clerk.accounts.dev", "clerk"),
            ("https://clerk.acme.com", "clerk"),
            ("https://notclerk.acme.com", "custom_oidc"),
            ("https://login.microsoftonline.com/tid/v2.0", "custom_oidc"),
            ("https://dev-123456.okta.com/oauth2/default", "okta"),
            ("https://acme.oktapreview.com", "okta"),
            ("https://okta.com.evil.example", "custom_oidc"),
            ("https://sso.acme.com/realms/acme", "keycloak"),
            ("https://sso.acme.com/auth/realms/acme/", "keycloak"),
            ("https://sso.acme.com/realms/", "custom_oidc"),
            ("https://sso.acme.com/realmsx/acme", "custom_oidc"),
        ] {
            assert_eq!(kind_of(url), kind, "{url}");
        }
    }

    #[test]
    fn defaults_and_webhook_schemes_per_kind() {
        let kinds = registry();
        let get = |name: &'static str| kinds.get(&IdpKind::from_static(name)).unwrap();
        assert_eq!(get("clerk").default_claims().group.unwrap().as_str(), "org_memberships");
        assert_eq!(get("auth0").default_claims(), ClaimMappings::subject_only());
        assert_eq!(get("custom_oidc").default_claims(), ClaimMappings::subject_only());
        assert_eq!(get("okta").default_claims().group.unwrap().as_str(), "groups");
        assert_eq!(get("keycloak").default_claims().role.unwrap().as_str(), "realm_access.roles");
        assert_eq!(get("keycloak").default_claims().group, None);
        let secrets: Vec<_> = kinds.all().map(|a| (a.kind().as_str().to_owned(), a.webhook_secret())).collect();
        for (kind, secret) in secrets {
            let expected = if kind == "clerk" { SecretSource::Provided } else { SecretSource::Generated };
            assert_eq!(secret, expected, "{kind}");
        }
        let formats: Vec<_> = kinds.all().map(|a| a.webhook_format()).collect();
        assert_eq!(formats, ["auth0", "clerk", "okta", "native", "native"]);
        let verifying: Vec<_> =
            kinds.all().filter_map(|a| a.webhook_verification_header().map(|h| (a.kind(), h))).collect();
        assert_eq!(verifying, [(IdpKind::from_static("okta"), "x-okta-verification-challenge")]);
        assert_eq!(kinds.names(), "auth0, clerk, okta, keycloak, custom_oidc");
    }
}
