#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Property tests of the identity domain's parsers (issue 15 item 17): claim paths, group and
//! role shapes, identity extraction and the registered-claim checks. Arbitrary input never
//! panics and never yields a user, a membership or an accepted token it should not.
//! CI runs proptest's default case count (or `PROPTEST_CASES`); `cargo xtask fuzz --minutes N`
//! runs them longer.

use custody_identity::claims::{membership_values, ClaimMappings, ClaimPath, MAX_MEMBERSHIPS, MAX_MEMBERSHIP_LEN};
use custody_identity::jwt::{precheck_issuer, strip_bearer_scheme, validate_claims, ClaimExpectations};
use custody_identity::{Issuer, UnixTime};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

const NUL: char = '\0';

/// Arbitrary JSON, nested a few levels, with short keys so paths hit them.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| json!(f)),
        "[a-c/~.0-9\u{0}]{0,6}".prop_map(Value::String),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            proptest::collection::btree_map("[a-c/~.0-9]{0,4}", inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn claims_map() -> impl Strategy<Value = Map<String, Value>> {
    proptest::collection::btree_map(
        prop_oneof![
            Just("sub".to_owned()),
            Just("iss".to_owned()),
            Just("aud".to_owned()),
            Just("exp".to_owned()),
            Just("nbf".to_owned()),
            Just("iat".to_owned()),
            Just("email".to_owned()),
            Just("name".to_owned()),
            Just("groups".to_owned()),
            "[a-c/~.0-9]{1,4}",
        ],
        json_value(),
        0..10,
    )
    .prop_map(|m| m.into_iter().collect())
}

/// Every string a value holds anywhere (keys included): a membership must come from one.
fn strings_in(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|v| strings_in(v, out)),
        Value::Object(map) => map.iter().for_each(|(k, v)| {
            out.push(k.clone());
            strings_in(v, out);
        }),
        _ => {}
    }
}

proptest! {
    #[test]
    fn claim_paths_parse_or_refuse_and_resolve_without_panicking(path in ".{0,80}", claims in claims_map()) {
        if let Ok(parsed) = ClaimPath::parse(&path) {
            prop_assert!(!path.is_empty() && !path.chars().any(char::is_control));
            let _ = parsed.resolve(&claims);
        }
    }

    #[test]
    fn pointer_and_dotted_paths_resolve_without_panicking(path in "[/.a-c0-9~]{1,20}", claims in claims_map()) {
        if let Ok(parsed) = ClaimPath::parse(&path) {
            let _ = parsed.resolve(&claims);
        }
    }

    #[test]
    fn memberships_only_come_from_values_plainly_there(value in json_value()) {
        let found = membership_values(Some(&value));
        prop_assert!(found.len() <= MAX_MEMBERSHIPS);
        let mut present = Vec::new();
        strings_in(&value, &mut present);
        for m in &found {
            prop_assert!(!m.is_empty() && m.len() <= MAX_MEMBERSHIP_LEN && !m.contains(NUL));
            prop_assert!(present.contains(m), "{m} is not in {value}");
        }
        match &value {
            Value::Object(map) => {
                for (key, flag) in map {
                    let grants = matches!(flag, Value::Bool(true))
                        || matches!(flag, Value::Object(o) if !o.is_empty())
                        || matches!(flag, Value::String(s) if !s.is_empty());
                    if !grants {
                        prop_assert!(!found.contains(key), "{key}: {flag} granted the group");
                    }
                }
            }
            Value::Array(_) | Value::String(_) => {}
            _ => prop_assert!(found.is_empty()),
        }
    }

    #[test]
    fn extraction_never_yields_a_bad_subject(claims in claims_map(), user_id in "[a-c/.]{1,6}|sub") {
        let Ok(path) = ClaimPath::parse(&user_id) else { return Ok(()) };
        let mappings = ClaimMappings { user_id: path, group: ClaimPath::parse("groups").ok(), role: None };
        if let Ok(identity) = mappings.extract(&claims) {
            prop_assert!(!identity.subject.is_empty() && identity.subject.len() <= 255);
            prop_assert!(!identity.subject.contains(NUL));
            prop_assert!(identity.email.as_deref().is_none_or(|e| !e.contains(NUL)));
            prop_assert!(identity.name.as_deref().is_none_or(|n| !n.contains(NUL)));
        }
    }

    #[test]
    fn accepted_claims_satisfy_every_registered_check(
        claims in claims_map(),
        audience in proptest::option::of("[a-c]{1,3}"),
        now in 0i64..4_000_000_000,
    ) {
        let issuer = Issuer::new("a");
        let expect = ClaimExpectations { issuer: &issuer, audience: audience.as_deref(), leeway_secs: 60 };
        if let Ok(ok) = validate_claims(std::sync::Arc::new(claims.clone()), &expect, UnixTime(now)) {
            prop_assert_eq!(claims.get("iss"), Some(&json!("a")));
            prop_assert!(now < ok.expires_at.seconds().saturating_add(60));
            if let Some(aud) = &audience {
                let named = match claims.get("aud") {
                    Some(Value::String(s)) => s == aud,
                    Some(Value::Array(a)) => a.iter().any(|v| v.as_str() == Some(aud.as_str())),
                    _ => false,
                };
                prop_assert!(named);
            }
        }
    }

    #[test]
    fn claims_that_should_pass_do(sub in "[a-z]{1,10}", exp_in in 61i64..100_000, now in 0i64..4_000_000_000) {
        let issuer = Issuer::new("https://idp.example/");
        let claims = json!({"iss": "https://idp.example/", "sub": sub, "aud": "api", "exp": now + exp_in});
        let expect = ClaimExpectations { issuer: &issuer, audience: Some("api"), leeway_secs: 60 };
        prop_assert!(validate_claims(std::sync::Arc::new(claims.as_object().cloned().unwrap()), &expect, UnixTime(now)).is_ok());
    }

    #[test]
    fn the_issuer_precheck_and_bearer_stripping_never_panic(token in ".{0,200}", payload in json_value()) {
        let issuer = Issuer::new("https://idp.example/");
        let _ = precheck_issuer(&token, &issuer);
        let stripped = strip_bearer_scheme(&token);
        prop_assert!(token.contains(stripped));
        use base64::Engine as _;
        let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(payload.to_string());
        let result = precheck_issuer(&format!("e30.{encoded}.c2ln"), &issuer);
        if let Value::Object(map) = &payload {
            if let Some(iss) = map.get("iss") {
                prop_assert_eq!(result.is_ok(), iss == &json!("https://idp.example/"));
            }
        }
    }
}
