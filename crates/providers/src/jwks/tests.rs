//! Tests of the JWKS verifier: key sets, token parsing, fetching, caching and the
//! verified-token cache, on a fake clock and a local JWKS server.

use super::*;
use base64::Engine as _;
use josekit::jwk::{Jwk, KeyPair as _};
use josekit::jws::JwsHeader;
use josekit::jws::{ES256, PS256, RS256};
use josekit::jwt::JwtPayload;
use serde_json::json;

fn cfg() -> JwksSettings {
    JwksSettings::default()
}

/// The cache key is the token's SHA-256 (FIPS 180-2's test vectors), however it is computed.
#[test]
fn the_cache_key_is_the_tokens_sha256() {
    let hex = |d: [u8; 32]| d.iter().map(|b| format!("{b:02x}")).collect::<String>();
    assert_eq!(hex(token_digest("abc")), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    let two_blocks = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    assert_eq!(hex(token_digest(two_blocks)), "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

#[test]
fn cache_control_parsing() {
    let c = cfg();
    assert_eq!(cache_ttl(None, &c), Duration::from_secs(600));
    assert_eq!(cache_ttl(Some("public, max-age=3600"), &c), Duration::from_secs(3600));
    assert_eq!(cache_ttl(Some("max-age=\"120\", must-revalidate"), &c), Duration::from_secs(120));
    assert_eq!(cache_ttl(Some("MAX-AGE = 900"), &c), Duration::from_secs(900));
    assert_eq!(cache_ttl(Some("max-age=5"), &c), Duration::from_secs(60), "clamped up");
    assert_eq!(cache_ttl(Some("max-age=99999999"), &c), Duration::from_secs(86_400), "clamped down");
    assert_eq!(cache_ttl(Some("no-store"), &c), Duration::from_secs(60));
    assert_eq!(cache_ttl(Some("public, no-cache, max-age=3600"), &c), Duration::from_secs(60));
    assert_eq!(cache_ttl(Some("max-age=abc"), &c), Duration::from_secs(600));
    assert_eq!(cache_ttl(Some("max-age=-5"), &c), Duration::from_secs(600));
    assert_eq!(cache_ttl(Some("public"), &c), Duration::from_secs(600));
    assert_eq!(cache_ttl(Some("s-maxage=30, max-age=300"), &c), Duration::from_secs(300));
    let odd = JwksSettings { min_ttl: Duration::from_secs(100), max_ttl: Duration::from_secs(10), ..cfg() };
    assert_eq!(cache_ttl(Some("max-age=50"), &odd), Duration::from_secs(100), "min wins over a smaller max");
}

struct Keys {
    rsa_private: Jwk,
    rsa_public: Jwk,
}

fn rsa() -> Keys {
    let pair = RS256.generate_key_pair(2048).unwrap();
    let mut private_map = pair.to_jwk_private_key().as_ref().clone();
    private_map.remove("alg");
    // No kid on the signing key: josekit would put it in every header, over the test's own.
    let rsa_private = Jwk::from_map(private_map).unwrap();
    let mut rsa_public = pair.to_jwk_public_key();
    rsa_public.set_key_id("r1");
    Keys { rsa_private, rsa_public }
}

fn sign(alg: &str, kid: Option<&str>, private: &Jwk) -> String {
    let mut header = JwsHeader::new();
    if let Some(kid) = kid {
        header.set_key_id(kid);
    }
    let payload = JwtPayload::from_map(json!({"sub": "u"}).as_object().unwrap().clone()).unwrap();
    let signer: Box<dyn josekit::jws::JwsSigner> = match alg {
        "RS256" => Box::new(RS256.signer_from_jwk(private).unwrap()),
        "PS256" => Box::new(PS256.signer_from_jwk(private).unwrap()),
        _ => unreachable!(),
    };
    josekit::jwt::encode_with_signer(&payload, &header, &*signer).unwrap()
}

fn set_of(keys: Value) -> KeySet {
    build_key_set(json!({ "keys": keys }).to_string().as_bytes(), 100, &SystemVerifierClock).unwrap()
}

fn check(set: &KeySet, token: &str) -> Result<Map<String, Value>, TokenRejection> {
    let parsed = parse_token(token, 16 * 1024)?;
    match lookup(set, parsed.kid.as_deref(), parsed.alg) {
        Lookup::Candidates(keys) => {
            if keys.iter().any(|k| k.verifier.verify(parsed.signing_input.as_bytes(), &parsed.signature).is_ok()) {
                decode_payload(parsed.payload)
            } else {
                Err(TokenRejection::BadSignature)
            }
        }
        Lookup::Mismatch => Err(TokenRejection::BadSignature),
        Lookup::Missing => Err(TokenRejection::UnknownKey),
    }
}

/// The public JWK as a JSON object, without an `alg` member.
fn public_map(jwk: &Jwk) -> Value {
    let mut map = jwk.as_ref().clone();
    map.remove("alg");
    Value::Object(map)
}

#[test]
fn rsa_key_verifies_rs256_and_ps256_unless_its_alg_says_otherwise() {
    let k = rsa();
    let set = set_of(json!([public_map(&k.rsa_public)]));
    assert_eq!(set.keys.len(), 2);
    assert_eq!(check(&set, &sign("RS256", Some("r1"), &k.rsa_private)).unwrap()["sub"], "u");
    assert!(check(&set, &sign("PS256", Some("r1"), &k.rsa_private)).is_ok());
    assert!(check(&set, &sign("RS256", None, &k.rsa_private)).is_ok(), "no kid: try the keys for the alg");
    assert_eq!(check(&set, &sign("RS256", Some("other"), &k.rsa_private)), Err(TokenRejection::UnknownKey));

    let mut only_rs = public_map(&k.rsa_public);
    only_rs["alg"] = json!("RS256");
    let set = set_of(json!([only_rs]));
    assert_eq!(set.keys.len(), 1);
    assert_eq!(check(&set, &sign("PS256", Some("r1"), &k.rsa_private)), Err(TokenRejection::BadSignature));
}

#[test]
fn unusable_keys_are_skipped() {
    let k = rsa();
    let mut enc = public_map(&k.rsa_public);
    enc["use"] = json!("enc");
    let mut rs384 = public_map(&k.rsa_public);
    rs384["alg"] = json!("RS384");
    let mut verify_ops_missing = public_map(&k.rsa_public);
    verify_ops_missing["key_ops"] = json!(["encrypt"]);
    let p384 = Value::Object(ES256.generate_key_pair().unwrap().to_jwk_public_key().as_ref().clone());
    let mut p384 = p384;
    p384["crv"] = json!("P-384");
    let set =
        set_of(json!([enc, rs384, verify_ops_missing, p384, {"kty": "oct", "k": "c2VjcmV0"}, "junk", {"kty": "RSA"}]));
    assert!(set.keys.is_empty(), "{set:?}");
    assert!(matches!(build_key_set(b"[]", 10, &SystemVerifierClock), Err(FetchError::NotJwks)));
    assert!(matches!(build_key_set(b"{\"keys\": {}}", 10, &SystemVerifierClock), Err(FetchError::NotJwks)));
}

#[test]
fn token_shape_rules() {
    let long = "a".repeat(100);
    assert_eq!(parse_token(&long, 99).err(), Some(TokenRejection::TooLong(99)));
    for garbage in ["", "abc", "a.b", "a.b.c.d", "!!.e30.c2ln", "e30.e30.c2ln", ".e30.c2ln"] {
        assert!(matches!(parse_token(garbage, 1000), Err(TokenRejection::Malformed)), "{garbage}");
    }
    let header = |h: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(h.to_string());
    let with = |h: Value| format!("{}.e30.c2ln", header(h));
    assert!(
        matches!(parse_token(&with(json!({"alg": "none"})), 1000), Err(TokenRejection::DisallowedAlgorithm(a)) if a == "none")
    );
    assert!(
        matches!(parse_token(&with(json!({"alg": "HS256"})), 1000), Err(TokenRejection::DisallowedAlgorithm(a)) if a == "HS256")
    );
    assert!(matches!(
        parse_token(&with(json!({"alg": "RS256", "crit": ["b64"]})), 1000),
        Err(TokenRejection::Malformed)
    ));
    assert!(matches!(parse_token(&with(json!({"alg": "RS256", "kid": 5})), 1000), Err(TokenRejection::Malformed)));
    let shown = match parse_token(&with(json!({"alg": "x\u{1}".repeat(40)})), 1000) {
        Err(TokenRejection::DisallowedAlgorithm(a)) => a,
        _ => panic!(),
    };
    assert_eq!(shown.len(), 32);
    assert!(shown.chars().all(|c| c.is_ascii_graphic()));
    let token = with(json!({"alg": "ES256", "kid": "k"}));
    let ok = parse_token(&token, 1000).map_err(|_| ()).unwrap();
    assert_eq!(ok.signing_input, format!("{}.e30", header(json!({"alg": "ES256", "kid": "k"}))));
    assert_eq!(ok.signature, b"sig");
}

// Property tests (issue 15 item 17): compact JWS parsing never panics, only allowed
// algorithms get through, and no tampering yields claims the signer did not sign.
mod properties {
    use super::*;
    use proptest::prelude::*;
    use std::sync::OnceLock;

    /// One RSA key and a token it signed, made once (key generation is slow).
    fn signed() -> &'static (KeySet, String) {
        static SIGNED: OnceLock<(KeySet, String)> = OnceLock::new();
        SIGNED.get_or_init(|| {
            let k = rsa();
            (set_of(json!([public_map(&k.rsa_public)])), sign("RS256", Some("r1"), &k.rsa_private))
        })
    }

    fn b64s(bytes: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    proptest! {
        #[test]
        fn any_text_parses_or_is_refused(token in ".{0,400}") {
            if let Ok(parsed) = parse_token(&token, 16 * 1024) {
                prop_assert!(!parsed.signature.is_empty());
                prop_assert_eq!(token.matches('.').count(), 2);
            }
        }

        #[test]
        fn any_header_yields_an_allowed_algorithm_or_a_refusal(
            header in proptest::collection::vec(any::<u8>(), 0..120),
            alg in prop_oneof![
                Just("RS256".to_owned()),
                Just("none".to_owned()),
                Just("HS256".to_owned()),
                Just("EdDSA".to_owned()),
                ".{0,8}",
            ],
            crit in any::<bool>(),
        ) {
            let raw = format!("{}.e30.c2ln", b64s(&header));
            let _ = parse_token(&raw, 16 * 1024);
            let mut h = json!({"alg": alg});
            if crit {
                h["crit"] = json!(["b64"]);
            }
            let token = format!("{}.e30.c2ln", b64s(h.to_string().as_bytes()));
            match parse_token(&token, 16 * 1024) {
                Ok(_) => prop_assert!(!crit && Alg::parse(&alg).is_some()),
                Err(TokenRejection::DisallowedAlgorithm(shown)) => {
                    prop_assert!(Alg::parse(&alg).is_none());
                    prop_assert!(shown.chars().all(|c| c.is_ascii_graphic()) && shown.len() <= 32);
                }
                Err(_) => {}
            }
        }

        #[test]
        fn no_tampering_verifies_to_other_claims(position in 0usize..2000, replacement in "[A-Za-z0-9_.-]") {
            let (set, token) = signed();
            let original = check(set, token).unwrap();
            let mut bytes = token.clone().into_bytes();
            let at = position % bytes.len();
            bytes[at] = replacement.as_bytes()[0];
            let tampered = String::from_utf8(bytes).unwrap();
            if let Ok(claims) = check(set, &tampered) {
                prop_assert_eq!(claims, original.clone(), "a changed token verified to other claims");
            }
        }

        #[test]
        fn any_jwks_body_builds_a_set_or_is_refused(body in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = build_key_set(&body, 10, &SystemVerifierClock);
        }

        #[test]
        fn any_cache_control_gives_a_lifetime_within_bounds(header in ".{0,60}") {
            let c = cfg();
            let ttl = cache_ttl(Some(&header), &c);
            prop_assert!(ttl >= c.min_ttl && ttl <= c.max_ttl);
        }
    }
}
