//! A compact JWS taken apart before any key is looked at: the header's algorithm (only the
//! accepted ones) and key id, the signing input, the payload and the signature.

use super::keys::Alg;
use base64::Engine as _;
use custody_identity::jwt::TokenRejection;
use serde_json::{Map, Value};

/// A compact JWS taken apart, signature not yet checked.
pub(super) struct ParsedToken<'t> {
    pub(super) alg: Alg,
    pub(super) kid: Option<String>,
    pub(super) signing_input: &'t str,
    pub(super) payload: &'t str,
    pub(super) signature: Vec<u8>,
}

pub(super) fn b64(part: &str) -> Result<Vec<u8>, TokenRejection> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).map_err(|_| TokenRejection::Malformed)
}

/// An attacker-chosen algorithm name, made safe to put in an error message.
pub(super) fn shown_alg(alg: &str) -> String {
    alg.chars().take(32).map(|c| if c.is_ascii_graphic() { c } else { '?' }).collect()
}

pub(super) fn parse_token(token: &str, max_bytes: usize) -> Result<ParsedToken<'_>, TokenRejection> {
    if token.len() > max_bytes {
        return Err(TokenRejection::TooLong(max_bytes));
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenRejection::Malformed);
    };
    if header.is_empty() || payload.is_empty() {
        return Err(TokenRejection::Malformed);
    }
    let header: Map<String, Value> = match serde_json::from_slice(&b64(header)?) {
        Ok(Value::Object(map)) => map,
        _ => return Err(TokenRejection::Malformed),
    };
    let alg = match header.get("alg") {
        Some(Value::String(alg)) => {
            Alg::parse(alg).ok_or_else(|| TokenRejection::DisallowedAlgorithm(shown_alg(alg)))?
        }
        _ => return Err(TokenRejection::Malformed),
    };
    // No extension is understood, so any critical one makes the token unacceptable (RFC 7515
    // section 4.1.11); this also rules out unencoded payloads (RFC 7797).
    if header.contains_key("crit") {
        return Err(TokenRejection::Malformed);
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(TokenRejection::Malformed),
    };
    let signature = b64(signature)?;
    if signature.is_empty() {
        return Err(TokenRejection::Malformed);
    }
    // Everything before the last dot: `header.payload`, exactly as transmitted.
    let signing_input = token.rfind('.').map_or(token, |i| &token[..i]);
    Ok(ParsedToken { alg, kid, signing_input, payload, signature })
}

pub(super) fn decode_payload(payload: &str) -> Result<Map<String, Value>, TokenRejection> {
    match serde_json::from_slice(&b64(payload)?) {
        Ok(Value::Object(claims)) => Ok(claims),
        _ => Err(TokenRejection::Malformed),
    }
}
