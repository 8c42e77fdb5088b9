//! A fetched JSON Web Key Set as verifiers: which keys are usable for which of the accepted
//! algorithms, and which of them may have signed a given token.

use super::{FetchError, VerifierClock};
use josekit::jwk::Jwk;
use josekit::jws::{EdDSA, JwsVerifier, ES256, PS256, RS256};
use serde_json::Value;
use std::fmt;
use std::time::{Instant, SystemTime};

/// The signature algorithms Custody accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Alg {
    Rs256,
    Ps256,
    Es256,
    EdDsa,
}

impl Alg {
    pub(super) fn parse(name: &str) -> Option<Alg> {
        match name {
            "RS256" => Some(Alg::Rs256),
            "PS256" => Some(Alg::Ps256),
            "ES256" => Some(Alg::Es256),
            "EdDSA" => Some(Alg::EdDsa),
            _ => None,
        }
    }

    /// The algorithms a JWK may verify, from its key type and curve.
    pub(super) fn for_key(jwk: &Jwk) -> &'static [Alg] {
        match (jwk.key_type(), jwk.curve()) {
            ("RSA", _) => &[Alg::Rs256, Alg::Ps256],
            ("EC", Some("P-256")) => &[Alg::Es256],
            ("OKP", Some("Ed25519" | "Ed448")) => &[Alg::EdDsa],
            _ => &[],
        }
    }

    pub(super) fn verifier(self, jwk: &Jwk) -> Result<Box<dyn JwsVerifier>, josekit::JoseError> {
        Ok(match self {
            Alg::Rs256 => Box::new(RS256.verifier_from_jwk(jwk)?),
            Alg::Ps256 => Box::new(PS256.verifier_from_jwk(jwk)?),
            Alg::Es256 => Box::new(ES256.verifier_from_jwk(jwk)?),
            Alg::EdDsa => Box::new(EdDSA.verifier_from_jwk(jwk)?),
        })
    }
}

/// One usable (key, algorithm) pair of a JWKS.
pub(super) struct VerifyingKey {
    pub(super) kid: Option<String>,
    pub(super) alg: Alg,
    pub(super) verifier: Box<dyn JwsVerifier>,
}

/// A parsed JWKS.
pub(super) struct KeySet {
    pub(super) keys: Vec<VerifyingKey>,
    pub(super) fetched_at: Instant,
    /// The same moment on the wall clock, for the operator's refresh answer.
    pub(super) fetched_at_wall: SystemTime,
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kids: Vec<_> = self.keys.iter().map(|k| (k.kid.as_deref(), k.alg)).collect();
        f.debug_struct("KeySet").field("keys", &kids).finish()
    }
}

/// Where a token's key was looked for.
pub(super) enum Lookup<'a> {
    /// Keys to try, in order.
    Candidates(Vec<&'a VerifyingKey>),
    /// No key with this kid (or, without a kid, no key for this algorithm): worth a refetch.
    Missing,
    /// The kid exists but its key does not agree with the token's algorithm.
    Mismatch,
}

pub(super) fn lookup<'a>(set: &'a KeySet, kid: Option<&str>, alg: Alg) -> Lookup<'a> {
    match kid {
        Some(kid) => {
            let mut found = false;
            let mut candidates = Vec::new();
            for key in set.keys.iter().filter(|k| k.kid.as_deref() == Some(kid)) {
                found = true;
                if key.alg == alg {
                    candidates.push(key);
                }
            }
            match (found, candidates.is_empty()) {
                (false, _) => Lookup::Missing,
                (true, true) => Lookup::Mismatch,
                (true, false) => Lookup::Candidates(candidates),
            }
        }
        None => {
            let candidates: Vec<_> = set.keys.iter().filter(|k| k.alg == alg).collect();
            if candidates.is_empty() {
                Lookup::Missing
            } else {
                Lookup::Candidates(candidates)
            }
        }
    }
}

/// Parses a JWKS body into verifiers, skipping keys that are not usable.
pub(super) fn build_key_set(body: &[u8], max_keys: usize, clock: &dyn VerifierClock) -> Result<KeySet, FetchError> {
    let keys = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(mut object)) => match object.remove("keys") {
            Some(Value::Array(keys)) => keys,
            _ => return Err(FetchError::NotJwks),
        },
        _ => return Err(FetchError::NotJwks),
    };
    let mut usable = Vec::new();
    for value in keys.into_iter().take(max_keys) {
        let Value::Object(map) = value else { continue };
        let Ok(jwk) = Jwk::from_map(map) else { continue };
        if jwk.key_use().is_some_and(|u| u != "sig") {
            continue;
        }
        let kid = jwk.key_id().map(str::to_owned);
        let declared = jwk.algorithm();
        if declared.is_some_and(|a| Alg::parse(a).is_none()) {
            tracing::debug!(kid = ?kid, "skipping a JWK whose alg is not allowed");
            continue;
        }
        for &alg in Alg::for_key(&jwk) {
            if declared.is_some_and(|a| Alg::parse(a) != Some(alg)) {
                continue;
            }
            match alg.verifier(&jwk) {
                Ok(verifier) => usable.push(VerifyingKey { kid: kid.clone(), alg, verifier }),
                Err(_) => tracing::debug!(kid = ?kid, ?alg, "skipping a JWK that is not a usable key"),
            }
        }
    }
    Ok(KeySet { keys: usable, fetched_at: clock.instant(), fetched_at_wall: clock.wall() })
}
