//! Keycloak: issuers whose path has a `/realms/<realm>` segment, the realm roles
//! (`realm_access.roles`) as roles by default, and lifecycle events in Custody's native format
//! (sent by an event-listener SPI, docs/idp-keycloak.md), authenticated by the generated secret.

use super::native::decode_native;
use custody_identity::claims::{ClaimMappings, ClaimPath};
use custody_identity::kinds::{IdpAdapter, SecretSource};
use custody_identity::lifecycle::{DecodedEvent, MalformedPayload, SvixMessage};
use custody_identity::{IdpKind, IssuerUrl};

/// The Keycloak adapter.
#[derive(Debug, Clone, Copy, Default)]
pub struct Keycloak;

impl IdpAdapter for Keycloak {
    fn kind(&self) -> IdpKind {
        IdpKind::from_static("keycloak")
    }

    fn label(&self) -> &'static str {
        "Keycloak"
    }

    /// A path segment `realms` followed by a realm name (`/realms/acme`, `/auth/realms/acme/`).
    fn detects(&self, issuer_url: &IssuerUrl) -> bool {
        issuer_url.path_segments().windows(2).any(|w| w[0] == "realms")
    }

    fn default_claims(&self) -> ClaimMappings {
        ClaimMappings { user_id: ClaimPath::subject(), group: None, role: ClaimPath::parse("realm_access.roles").ok() }
    }

    fn webhook_secret(&self) -> SecretSource {
        SecretSource::Generated
    }

    fn webhook_format(&self) -> &'static str {
        "native"
    }

    fn decode_webhook(&self, body: &[u8], _: Option<&SvixMessage<'_>>) -> Result<Vec<DecodedEvent>, MalformedPayload> {
        decode_native(body)
    }
}
