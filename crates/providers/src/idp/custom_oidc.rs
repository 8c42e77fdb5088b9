//! Any other OpenID Connect provider: the generic adapter the registry falls back to when no
//! other recognises the issuer. The `sub` claim alone by default; lifecycle events in Custody's
//! native format, authenticated by the generated secret.

use super::native::decode_native;
use custody_identity::claims::ClaimMappings;
use custody_identity::kinds::{IdpAdapter, SecretSource};
use custody_identity::lifecycle::{DecodedEvent, MalformedPayload, SvixMessage};
use custody_identity::{IdpKind, IssuerUrl};

/// The generic OpenID Connect adapter.
#[derive(Debug, Clone, Copy, Default)]
pub struct CustomOidc;

impl IdpAdapter for CustomOidc {
    fn kind(&self) -> IdpKind {
        IdpKind::from_static("custom_oidc")
    }

    fn label(&self) -> &'static str {
        "Custom OIDC"
    }

    /// Never by itself: it is what an issuer no other adapter recognises is.
    fn detects(&self, _: &IssuerUrl) -> bool {
        false
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

    fn decode_webhook(&self, body: &[u8], _: Option<&SvixMessage<'_>>) -> Result<Vec<DecodedEvent>, MalformedPayload> {
        decode_native(body)
    }
}
