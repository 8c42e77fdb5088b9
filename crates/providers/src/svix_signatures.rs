//! Svix webhook signatures (Clerk's lifecycle webhooks) with the `svix` crate:
//! [`SvixSignatures`] implements the vault's [`SvixVerifier`] port.
//!
//! `svix::webhooks::Webhook::verify` checks `svix-signature` (space-separated `v1,<base64>`
//! entries, any one matching, compared in constant time) against HMAC-SHA256 of
//! `{svix-id}.{svix-timestamp}.{body}` under the base64-decoded `whsec_` secret, and refuses a
//! `svix-timestamp` more than five minutes from this machine's clock either way. The crate's
//! errors stay here: they become [`SvixRejection`]s.

use custody_identity::Secret;
use custody_vault::webhook::{SvixHeaders, SvixRejection, SvixVerifier};
use http::{HeaderMap, HeaderValue};
use svix::webhooks::{Webhook, WebhookError};

/// The [`SvixVerifier`] on the `svix` crate. Reads the system clock for the timestamp
/// tolerance.
#[derive(Debug, Clone, Copy, Default)]
pub struct SvixSignatures;

fn header(headers: &mut HeaderMap, name: &'static str, value: Option<&str>) -> Result<(), SvixRejection> {
    let value = value.filter(|v| !v.is_empty()).ok_or(SvixRejection::MissingHeader(name))?;
    let value = HeaderValue::from_str(value).map_err(|_| SvixRejection::MissingHeader(name))?;
    headers.insert(name, value);
    Ok(())
}

impl SvixVerifier for SvixSignatures {
    fn verify(&self, secret: &Secret, headers: &SvixHeaders, body: &[u8]) -> Result<(), SvixRejection> {
        let webhook = Webhook::new(secret.expose()).map_err(|_| SvixRejection::BadSecret)?;
        // Only the three `svix-*` headers are handed over, so the crate's fallback to the
        // unbranded `webhook-*` headers never applies.
        let mut map = HeaderMap::new();
        header(&mut map, "svix-id", headers.id.as_deref())?;
        header(&mut map, "svix-timestamp", headers.timestamp.as_deref())?;
        header(&mut map, "svix-signature", headers.signature.as_deref())?;
        webhook.verify(body, &map).map_err(|e| match e {
            WebhookError::MissingHeader(name) | WebhookError::InvalidHeader(name) => match name {
                "id" => SvixRejection::MissingHeader("svix-id"),
                "timestamp" => SvixRejection::MissingHeader("svix-timestamp"),
                _ => SvixRejection::MissingHeader("svix-signature"),
            },
            WebhookError::InvalidTimestamp => SvixRejection::BadTimestamp,
            WebhookError::TimestampTooOldError => SvixRejection::TooOld,
            WebhookError::FutureTimestampError => SvixRejection::TooNew,
            WebhookError::InvalidSecret(_) | WebhookError::EmptySecret => SvixRejection::BadSecret,
            WebhookError::InvalidSignature | WebhookError::InvalidPayload => SvixRejection::NoMatch,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

    fn now() -> i64 {
        std::time::UNIX_EPOCH.elapsed().unwrap().as_secs() as i64
    }

    fn signed(id: &str, ts: i64, body: &[u8]) -> SvixHeaders {
        let signature = Webhook::new(SECRET).unwrap().sign(id, ts, body).unwrap();
        SvixHeaders { id: Some(id.into()), timestamp: Some(ts.to_string()), signature: Some(signature) }
    }

    #[test]
    fn the_crate_matches_the_published_vector() {
        // The example from Svix's documentation.
        let signature = Webhook::new(SECRET)
            .unwrap()
            .sign(
                "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
                1_649_367_553,
                br#"{"email":"test@example.com","username":"test_user"}"#,
            )
            .unwrap();
        assert_eq!(signature, "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=");
    }

    #[test]
    fn verification() {
        let v = SvixSignatures;
        let secret = Secret::new(SECRET);
        let body = br#"{"type":"user.deleted","data":{"id":"user_1"}}"#;
        let good = signed("msg_1", now(), body);
        assert_eq!(v.verify(&secret, &good, body), Ok(()));

        // Several signatures, one matching.
        let mut several = good.clone();
        several.signature = Some(format!("v1,AAAA v2,BBBB {}", good.signature.clone().unwrap()));
        assert_eq!(v.verify(&secret, &several, body), Ok(()));

        assert_eq!(
            v.verify(&secret, &good, br#"{"type":"user.deleted","data":{"id":"user_2"}}"#),
            Err(SvixRejection::NoMatch)
        );
        assert_eq!(
            v.verify(&Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw3qG2gFNzHv8="), &good, body),
            Err(SvixRejection::NoMatch)
        );
        assert_eq!(v.verify(&secret, &signed("msg_1", now() - 301, body), body), Err(SvixRejection::TooOld));
        assert_eq!(v.verify(&secret, &signed("msg_1", now() + 301, body), body), Err(SvixRejection::TooNew));
        assert_eq!(
            v.verify(&secret, &SvixHeaders { id: None, ..good.clone() }, body),
            Err(SvixRejection::MissingHeader("svix-id"))
        );
        assert_eq!(
            v.verify(&secret, &SvixHeaders { timestamp: None, ..good.clone() }, body),
            Err(SvixRejection::MissingHeader("svix-timestamp"))
        );
        assert_eq!(
            v.verify(&secret, &SvixHeaders { signature: Some(String::new()), ..good.clone() }, body),
            Err(SvixRejection::MissingHeader("svix-signature"))
        );
        assert_eq!(
            v.verify(&secret, &SvixHeaders { timestamp: Some("soon".into()), ..good.clone() }, body),
            Err(SvixRejection::BadTimestamp)
        );
        assert_eq!(v.verify(&Secret::new("whsec_%%%"), &good, body), Err(SvixRejection::BadSecret));
    }
}
