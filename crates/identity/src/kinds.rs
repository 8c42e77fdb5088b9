//! The identity-provider adapter port and its registry.
//!
//! Everything that differs between kinds of identity provider (Auth0, Clerk, Okta, Keycloak, a
//! custom OpenID Connect provider, ...) sits behind [`IdpAdapter`]: recognising the issuer,
//! the claim mappings a configuration starts with, how lifecycle webhooks are authenticated
//! and decoded. The adapters live in `custody-providers` (one module each); the server builds an
//! [`IdpKinds`] from them and hands it to the use cases, which never name a kind themselves.

use crate::claims::ClaimMappings;
use crate::idp::IdpKind;
use crate::issuer::IssuerUrl;
use crate::lifecycle::{DecodedEvent, MalformedPayload, SvixMessage};
use std::fmt;
use std::sync::Arc;

/// Where an app's webhook secret comes from, which also decides how a delivery is
/// authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretSource {
    /// Custody generates it, shows it once and keeps only a keyed hash; a delivery presents it
    /// in its `Authorization` header (with or without `Bearer `).
    Generated,
    /// The identity provider issues it (a Svix `whsec_` signing secret) and the operator
    /// supplies it; it is kept sealed and a delivery carries a Svix signature.
    Provided,
}

impl SecretSource {
    /// The stable text form (`generated`, `provided`).
    pub fn as_str(self) -> &'static str {
        match self {
            SecretSource::Generated => "generated",
            SecretSource::Provided => "provided",
        }
    }

    /// Parses the stable text form.
    pub fn parse(s: &str) -> Option<SecretSource> {
        match s {
            "generated" => Some(SecretSource::Generated),
            "provided" => Some(SecretSource::Provided),
            _ => None,
        }
    }
}

/// One kind of identity provider. Implementations are pure: no I/O, no clock.
pub trait IdpAdapter: Send + Sync + fmt::Debug {
    /// The stable name stored with a configuration and used in the API (`auth0`).
    fn kind(&self) -> IdpKind;

    /// The name people read (`Auth0`, `Custom OIDC`).
    fn label(&self) -> &'static str;

    /// Whether an issuer URL is recognisably this kind's (by host or path). The registry asks
    /// the adapters in registration order and falls back to the generic one.
    fn detects(&self, issuer_url: &IssuerUrl) -> bool;

    /// The claim mappings a new configuration of this kind starts with.
    fn default_claims(&self) -> ClaimMappings;

    /// Where this kind's webhook secret comes from, and so how deliveries are authenticated.
    fn webhook_secret(&self) -> SecretSource;

    /// A short name of the webhook payload format, for audit rows (`auth0`, `native`).
    fn webhook_format(&self) -> &'static str;

    /// Decodes an authenticated delivery's body into events, in order. `svix` carries the
    /// verified Svix headers when [`IdpAdapter::webhook_secret`] is [`SecretSource::Provided`].
    /// Event types the kind does not act on decode to [`DecodedEvent::Ignored`]; a body of the
    /// wrong shape is [`MalformedPayload`], whose message never repeats values from the body.
    fn decode_webhook(
        &self,
        body: &[u8],
        svix: Option<&SvixMessage<'_>>,
    ) -> Result<Vec<DecodedEvent>, MalformedPayload>;

    /// The request header of a one-time check of the webhook URL (Okta's verification GET),
    /// whose value is echoed back once the request proves the secret; `None` when the kind
    /// does not verify URLs that way.
    fn webhook_verification_header(&self) -> Option<&'static str> {
        None
    }
}

/// Two adapters were registered under one name, or an adapter's name is not a valid kind name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("identity provider kind `{0}` is registered twice or is not a valid kind name")]
pub struct BadRegistration(pub String);

/// The registered identity-provider adapters.
#[derive(Clone)]
pub struct IdpKinds {
    /// In registration order; detection asks them in this order.
    adapters: Arc<[Arc<dyn IdpAdapter>]>,
    /// The generic adapter: what an issuer no adapter recognises is.
    fallback: Arc<dyn IdpAdapter>,
}

impl fmt::Debug for IdpKinds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.all().map(|a| a.kind())).finish()
    }
}

impl IdpKinds {
    /// A registry of `adapters` plus the generic `fallback`, whose names must be distinct and
    /// valid.
    pub fn new(adapters: Vec<Arc<dyn IdpAdapter>>, fallback: Arc<dyn IdpAdapter>) -> Result<IdpKinds, BadRegistration> {
        let mut seen: Vec<IdpKind> = Vec::with_capacity(adapters.len() + 1);
        for adapter in adapters.iter().chain(std::iter::once(&fallback)) {
            let kind = adapter.kind();
            if !IdpKind::is_valid(kind.as_str()) || seen.contains(&kind) {
                return Err(BadRegistration(kind.as_str().to_owned()));
            }
            seen.push(kind);
        }
        Ok(IdpKinds { adapters: adapters.into(), fallback })
    }

    /// The adapter of the kind an issuer URL looks like: the first that recognises it, else the
    /// generic one.
    pub fn detect(&self, issuer_url: &IssuerUrl) -> &dyn IdpAdapter {
        self.adapters.iter().find(|a| a.detects(issuer_url)).unwrap_or(&self.fallback).as_ref()
    }

    /// The adapter registered under `kind`.
    pub fn get(&self, kind: &IdpKind) -> Option<&dyn IdpAdapter> {
        self.all().find(|a| a.kind() == *kind)
    }

    /// The adapter for a stored configuration's kind. A kind this build does not know (a
    /// database written by a newer build) is served by the generic adapter.
    pub fn adapter(&self, kind: &IdpKind) -> &dyn IdpAdapter {
        self.get(kind).unwrap_or(self.fallback.as_ref())
    }

    /// Every adapter, the generic one last.
    pub fn all(&self) -> impl Iterator<Item = &dyn IdpAdapter> {
        self.adapters.iter().chain(std::iter::once(&self.fallback)).map(|a| a.as_ref())
    }

    /// The registered names, for messages (`auth0, clerk, custom_oidc`).
    pub fn names(&self) -> String {
        self.all().map(|a| a.kind().as_str().to_owned()).collect::<Vec<_>>().join(", ")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::issuer::IssuerUrlPolicy;

    #[derive(Debug)]
    struct Named(&'static str, &'static str);

    impl IdpAdapter for Named {
        fn kind(&self) -> IdpKind {
            IdpKind::from_static(self.0)
        }
        fn label(&self) -> &'static str {
            self.0
        }
        fn detects(&self, issuer_url: &IssuerUrl) -> bool {
            !self.1.is_empty() && issuer_url.host().ends_with(self.1)
        }
        fn default_claims(&self) -> ClaimMappings {
            ClaimMappings::subject_only()
        }
        fn webhook_secret(&self) -> SecretSource {
            SecretSource::Generated
        }
        fn webhook_format(&self) -> &'static str {
            "native"
        }
        fn decode_webhook(&self, _: &[u8], _: Option<&SvixMessage<'_>>) -> Result<Vec<DecodedEvent>, MalformedPayload> {
            Ok(Vec::new())
        }
    }

    fn url(s: &str) -> IssuerUrl {
        IssuerUrl::parse(s, IssuerUrlPolicy::HttpsOnly).unwrap()
    }

    #[test]
    fn detection_falls_back_and_names_are_unique() {
        let kinds = IdpKinds::new(
            vec![Arc::new(Named("first", ".one.example")), Arc::new(Named("second", ".example"))],
            Arc::new(Named("generic", "")),
        )
        .unwrap();
        assert_eq!(kinds.detect(&url("https://a.one.example")).kind().as_str(), "first", "registration order");
        assert_eq!(kinds.detect(&url("https://a.two.example")).kind().as_str(), "second");
        assert_eq!(kinds.detect(&url("https://a.other.test")).kind().as_str(), "generic");
        assert!(kinds.get(&IdpKind::from_static("nope")).is_none());
        assert_eq!(kinds.adapter(&IdpKind::from_static("nope")).kind().as_str(), "generic");
        assert_eq!(kinds.names(), "first, second, generic");
        let twice = IdpKinds::new(vec![Arc::new(Named("same", ""))], Arc::new(Named("same", "")));
        assert_eq!(twice.unwrap_err(), BadRegistration("same".into()));
        let invalid = IdpKinds::new(vec![Arc::new(Named("Bad Name", ""))], Arc::new(Named("generic", "")));
        assert!(invalid.is_err());
    }
}
