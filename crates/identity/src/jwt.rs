//! Registered-claim checks on a JWT whose signature an adapter has already verified.
//!
//! This is a pure function of the claims, the expectations and `now`: `exp` is required, `nbf`
//! and `iat` are honoured, each with one leeway; `iss` must equal the configured issuer exactly;
//! `aud` must contain the configured audience when one is configured (RFC 7519, section 4.1).

use crate::issuer::Issuer;
use crate::time::UnixTime;
use base64::Engine as _;
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
    /// All claims of the token (shared with the verifier's cache of verified tokens).
    pub claims: std::sync::Arc<Map<String, Value>>,
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
    #[error(
        "the token was issued by {received}, not by this app's identity provider `{expected}`: sign the user in \
         with that provider, or configure the app for the token's issuer"
    )]
    WrongIssuer {
        /// The configured issuer.
        expected: String,
        /// The token's `iss`, made safe to show ([`shown_claim`]), or "no issuer".
        received: String,
    },
    #[error(
        "the token's audience {received} does not include the configured audience `{configured}`: request the \
         token for that audience, or change the identity provider's `audience`"
    )]
    WrongAudience {
        /// The configured audience.
        configured: String,
        /// The token's `aud`, made safe to show, or "none".
        received: String,
    },
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
    claims: std::sync::Arc<Map<String, Value>>,
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
        other => return Err(wrong_issuer(expect.issuer, other)),
    }
    if let Some(audience) = expect.audience {
        if !audience_contains(&claims, audience) {
            let received = match claims.get("aud") {
                None => "(none)".to_owned(),
                Some(Value::Array(auds)) => {
                    let shown: Vec<String> = auds.iter().take(5).map(shown_claim).collect();
                    format!("[{}]{}", shown.join(", "), if auds.len() > 5 { " and more" } else { "" })
                }
                Some(other) => shown_claim(other),
            };
            return Err(TokenRejection::WrongAudience { configured: audience.to_owned(), received });
        }
    }
    Ok(VerifiedClaims { claims, expires_at: UnixTime(exp), issued_at: iat.map(UnixTime) })
}

fn wrong_issuer(expected: &Issuer, received: Option<&Value>) -> TokenRejection {
    TokenRejection::WrongIssuer {
        expected: expected.as_str().to_owned(),
        received: received.map_or_else(|| "(no `iss` claim)".to_owned(), shown_claim),
    }
}

/// The longest claim value an error message shows, in characters.
const SHOWN_CLAIM_CHARS: usize = 200;

/// A token's claim value, made safe to put in an error message: strings in backquotes, at most
/// [`SHOWN_CLAIM_CHARS`] characters, control characters replaced by `?`. Issuers and audiences
/// are public identifiers, never secrets, so showing them is safe and tells the user what to fix.
pub fn shown_claim(value: &Value) -> String {
    let text = match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut shown: String =
        text.chars().take(SHOWN_CLAIM_CHARS).map(|c| if c.is_control() || c == '`' { '?' } else { c }).collect();
    if text.chars().count() > SHOWN_CLAIM_CHARS {
        shown.push('…');
    }
    match value {
        Value::String(_) => format!("`{shown}`"),
        _ => shown,
    }
}

/// The token itself from a header value that may carry an authentication scheme: SDKs and
/// proxies send `X-User-Token: Bearer <jwt>` as often as the bare JWT. A compact JWS has no
/// spaces, so a leading `Bearer ` (any case) is never part of a token.
pub fn strip_bearer_scheme(value: &str) -> &str {
    let value = value.trim();
    match value.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim_start(),
        _ => value,
    }
}

/// Refuses, before any key is looked at, a token whose (not yet verified) payload names an
/// issuer other than `expected`: "this token is from another issuer" is what the user needs to
/// hear, not "unknown key", and such a token must not cost a key-set refetch. A payload that
/// cannot be read, or has no `iss`, passes: the signature and claim checks refuse it properly.
pub fn precheck_issuer(token: &str, expected: &Issuer) -> Result<(), TokenRejection> {
    let mut parts = token.split('.');
    let (Some(_), Some(payload)) = (parts.next(), parts.next()) else { return Ok(()) };
    let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload) else { return Ok(()) };
    let Ok(IssuerOnly { iss }) = serde_json::from_slice::<IssuerOnly>(&bytes) else { return Ok(()) };
    match iss {
        Some(Value::String(iss)) if iss == expected.as_str() => Ok(()),
        None => Ok(()),
        Some(other) => Err(wrong_issuer(expected, Some(&other))),
    }
}

/// The one member of a token's payload that [`precheck_issuer`] reads. Every other member is
/// skipped as it is parsed, without building a value for it: the precheck runs on every
/// runtime request, before the verified-token cache, and a whole claims tree per request was a
/// visible share of a cached hand-out's CPU. A payload that is not an object, or names `iss`
/// twice, does not deserialize, and so passes the precheck like any unreadable payload.
#[derive(serde::Deserialize)]
struct IssuerOnly {
    /// `None` only when absent: a JSON `null` is a present, wrong issuer.
    #[serde(default, deserialize_with = "present")]
    iss: Option<Value>,
}

fn present<'de, D: serde::Deserializer<'de>>(value: D) -> Result<Option<Value>, D::Error> {
    <Value as serde::Deserialize>::deserialize(value).map(Some)
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
        validate_claims(std::sync::Arc::new(v.as_object().cloned().unwrap()), &expect, NOW)
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

    fn wrong_iss(received: &str) -> TokenRejection {
        TokenRejection::WrongIssuer { expected: "https://idp.example.com/".into(), received: received.into() }
    }

    fn wrong_aud(configured: &str, received: &str) -> TokenRejection {
        TokenRejection::WrongAudience { configured: configured.into(), received: received.into() }
    }

    #[test]
    fn issuer_exact_and_audience() {
        assert_eq!(
            check(with("iss", json!("https://idp.example.com")), None),
            Err(wrong_iss("`https://idp.example.com`"))
        );
        assert_eq!(check(with("iss", json!(7)), None), Err(wrong_iss("7")));
        assert_eq!(check(base(), Some("nope")), Err(wrong_aud("nope", "[`api`, `other`]")));
        assert_eq!(check(with("aud", json!("web")), Some("api")), Err(wrong_aud("api", "`web`")));
        let mut no_aud = base();
        no_aud.as_object_mut().unwrap().remove("aud");
        assert_eq!(check(no_aud, Some("api")), Err(wrong_aud("api", "(none)")));
        let mut no_iss = base();
        no_iss.as_object_mut().unwrap().remove("iss");
        assert_eq!(check(no_iss, None), Err(wrong_iss("(no `iss` claim)")));
    }

    #[test]
    fn messages_name_both_sides_and_stay_printable() {
        let message = check(with("iss", json!("https://other.example/")), None).unwrap_err().to_string();
        assert!(
            message.contains("`https://other.example/`") && message.contains("`https://idp.example.com/`"),
            "{message}"
        );
        let message = check(base(), Some("api-x")).unwrap_err().to_string();
        assert!(message.contains("`api-x`") && message.contains("`api`"), "{message}");
        let hostile = check(with("iss", json!(format!("a\nb`c{}", "x".repeat(500)))), None).unwrap_err().to_string();
        assert!(!hostile.contains('\n') && hostile.len() < 600, "{hostile}");
    }

    #[test]
    fn bearer_scheme_and_issuer_precheck() {
        assert_eq!(strip_bearer_scheme("Bearer a.b.c"), "a.b.c");
        assert_eq!(strip_bearer_scheme("  bearer   a.b.c "), "a.b.c");
        assert_eq!(strip_bearer_scheme("a.b.c"), "a.b.c");
        assert_eq!(strip_bearer_scheme("Basic a.b.c"), "Basic a.b.c");
        let issuer = Issuer::new("https://idp.example.com/");
        let token = |claims: Value| {
            format!("e30.{}.c2ln", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims.to_string()))
        };
        assert_eq!(precheck_issuer(&token(json!({"iss": "https://idp.example.com/"})), &issuer), Ok(()));
        assert_eq!(precheck_issuer(&token(json!({"sub": "x"})), &issuer), Ok(()));
        assert_eq!(precheck_issuer("garbage", &issuer), Ok(()));
        assert_eq!(precheck_issuer("a.!!!.c", &issuer), Ok(()));
        assert_eq!(
            precheck_issuer(&token(json!({"iss": "https://evil.example/"})), &issuer),
            Err(wrong_iss("`https://evil.example/`"))
        );
        // Other members, of any shape, are skipped; an `iss` that is not a string is refused.
        let busy =
            json!({"sub": "x", "groups": [{"a": [1, 2.5, null]}], "iss": "https://idp.example.com/", "z": "é\n"});
        assert_eq!(precheck_issuer(&token(busy), &issuer), Ok(()));
        assert_eq!(precheck_issuer(&token(json!({"iss": 7, "sub": "x"})), &issuer), Err(wrong_iss("7")));
        assert_eq!(precheck_issuer(&token(json!({"iss": null})), &issuer), Err(wrong_iss("null")));
        assert_eq!(precheck_issuer(&token(json!(["not", "an", "object"])), &issuer), Ok(()));
    }
}
