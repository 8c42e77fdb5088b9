//! Registered-claim checks on a JWT whose signature an adapter has already verified.
//!
//! This is a pure function of the claims, the expectations and `now`: `exp` is required, `nbf`
//! and `iat` are honoured, each with one leeway; `iss` must equal the configured issuer exactly;
//! `aud` must contain the configured audience when one is configured (RFC 7519, section 4.1).

use crate::issuer::Issuer;
use crate::time::UnixTime;
use serde_json::{Map, Value};

/// What a token must satisfy beyond its signature.
#[derive(Debug, Clone)]
pub struct ClaimExpectations<'a> {
    /// The exact `iss` value.
    pub issuer: &'a Issuer,
    /// The audience the token must name, when one is configured.
    pub audience: Option<&'a str>,
    /// Tolerance for clock skew on `exp`, `nbf` and `iat`, in seconds.
    pub leeway_secs: i64,
}

/// Claims that passed signature verification and the checks in [`validate_claims`].
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedClaims {
    /// All claims of the token.
    pub claims: Map<String, Value>,
    /// The `exp` claim.
    pub expires_at: UnixTime,
    /// The `iat` claim, when present.
    pub issued_at: Option<UnixTime>,
}

/// Why a token was refused. The message names the reason and never echoes the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenRejection {
    #[error("the token is not a well-formed compact JWS")]
    Malformed,
    #[error("the token is longer than {0} bytes")]
    TooLong(usize),
    #[error("the token's algorithm `{0}` is not allowed (RS256, PS256, ES256 and EdDSA are)")]
    DisallowedAlgorithm(String),
    #[error("the token's key id is not in the identity provider's key set")]
    UnknownKey,
    #[error("the token's signature does not verify")]
    BadSignature,
    #[error("the identity provider's keys could not be fetched")]
    KeysUnavailable,
    #[error("the token has no `exp` claim")]
    MissingExpiry,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not yet valid (`nbf` is in the future)")]
    NotYetValid,
    #[error("the token was issued in the future (`iat`)")]
    IssuedInFuture,
    #[error("the token's `{0}` claim is not a number")]
    BadTimeClaim(&'static str),
    #[error("the token's issuer does not match the identity provider")]
    WrongIssuer,
    #[error("the token's audience does not include the configured audience")]
    WrongAudience,
    #[error("{0}")]
    Identity(#[from] crate::claims::IdentityClaimError),
}

fn time_claim(claims: &Map<String, Value>, name: &'static str) -> Result<Option<i64>, TokenRejection> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => {
            // NumericDate may carry a fraction; whole seconds are enough for the checks.
            if let Some(i) = n.as_i64() {
                Ok(Some(i))
            } else if let Some(f) = n.as_f64().filter(|f| f.is_finite()) {
                Ok(Some(f.floor() as i64))
            } else {
                Err(TokenRejection::BadTimeClaim(name))
            }
        }
        Some(_) => Err(TokenRejection::BadTimeClaim(name)),
    }
}

/// Checks the registered claims of a signature-verified token.
pub fn validate_claims(
    claims: Map<String, Value>,
    expect: &ClaimExpectations<'_>,
    now: UnixTime,
) -> Result<VerifiedClaims, TokenRejection> {
    let leeway = expect.leeway_secs.max(0);
    let now = now.seconds();
    let exp = time_claim(&claims, "exp")?.ok_or(TokenRejection::MissingExpiry)?;
    if now >= exp.saturating_add(leeway) {
        return Err(TokenRejection::Expired);
    }
    if let Some(nbf) = time_claim(&claims, "nbf")? {
        if now.saturating_add(leeway) < nbf {
            return Err(TokenRejection::NotYetValid);
        }
    }
    let iat = time_claim(&claims, "iat")?;
    if let Some(iat) = iat {
        if now.saturating_add(leeway) < iat {
            return Err(TokenRejection::IssuedInFuture);
        }
    }
    match claims.get("iss") {
        Some(Value::String(iss)) if iss == expect.issuer.as_str() => {}
        _ => return Err(TokenRejection::WrongIssuer),
    }
    if let Some(audience) = expect.audience {
        if !audience_contains(&claims, audience) {
            return Err(TokenRejection::WrongAudience);
        }
    }
    Ok(VerifiedClaims { claims, expires_at: UnixTime(exp), issued_at: iat.map(UnixTime) })
}

/// Whether the token's `aud` (a string or an array of strings) names `audience`.
pub fn audience_contains(claims: &Map<String, Value>, audience: &str) -> bool {
    match claims.get("aud") {
        Some(Value::String(aud)) => aud == audience,
        Some(Value::Array(auds)) => auds.iter().any(|a| a.as_str() == Some(audience)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: UnixTime = UnixTime(1_800_000_000);

    fn check(v: Value, audience: Option<&str>) -> Result<VerifiedClaims, TokenRejection> {
        let issuer = Issuer::new("https://idp.example.com/");
        let expect = ClaimExpectations { issuer: &issuer, audience, leeway_secs: 60 };
        validate_claims(v.as_object().cloned().unwrap(), &expect, NOW)
    }

    fn base() -> Value {
        json!({"iss": "https://idp.example.com/", "sub": "u", "exp": NOW.0 + 300, "iat": NOW.0 - 10, "aud": ["api", "other"]})
    }

    fn with(key: &str, value: Value) -> Value {
        let mut v = base();
        v[key] = value;
        v
    }

    #[test]
    fn accepts_a_good_token() {
        let ok = check(base(), Some("api")).unwrap();
        assert_eq!(ok.expires_at, UnixTime(NOW.0 + 300));
        assert!(check(with("aud", json!("api")), Some("api")).is_ok());
        assert!(check(base(), None).is_ok());
    }

    #[test]
    fn expiry_with_leeway() {
        assert!(check(with("exp", json!(NOW.0 - 59)), None).is_ok());
        assert_eq!(check(with("exp", json!(NOW.0 - 60)), None), Err(TokenRejection::Expired));
        let mut no_exp = base();
        no_exp.as_object_mut().unwrap().remove("exp");
        assert_eq!(check(no_exp, None), Err(TokenRejection::MissingExpiry));
        assert_eq!(check(with("exp", json!("soon")), None), Err(TokenRejection::BadTimeClaim("exp")));
        assert!(check(with("exp", json!((NOW.0 + 10) as f64 + 0.5)), None).is_ok());
    }

    #[test]
    fn not_before_and_issued_at() {
        assert!(check(with("nbf", json!(NOW.0 + 60)), None).is_ok());
        assert_eq!(check(with("nbf", json!(NOW.0 + 61)), None), Err(TokenRejection::NotYetValid));
        assert!(check(with("iat", json!(NOW.0 + 60)), None).is_ok());
        assert_eq!(check(with("iat", json!(NOW.0 + 61)), None), Err(TokenRejection::IssuedInFuture));
    }

    #[test]
    fn issuer_exact_and_audience() {
        assert_eq!(check(with("iss", json!("https://idp.example.com")), None), Err(TokenRejection::WrongIssuer));
        assert_eq!(check(with("iss", json!(7)), None), Err(TokenRejection::WrongIssuer));
        assert_eq!(check(base(), Some("nope")), Err(TokenRejection::WrongAudience));
        let mut no_aud = base();
        no_aud.as_object_mut().unwrap().remove("aud");
        assert_eq!(check(no_aud, Some("api")), Err(TokenRejection::WrongAudience));
    }
}
