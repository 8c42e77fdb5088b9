#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Property tests of the parsers that take outside input and live outside the identity domain
//! (issue 15 item 17): the Auth0, Clerk and native lifecycle-webhook decoders and the server's
//! configuration parsing. Arbitrary input never panics and never yields an event or a setting it
//! should not. The JWS, claim and cursor properties sit next to their (private) parsers:
//! crates/identity/tests/properties.rs, crates/providers/src/jwks.rs, crates/store/src/cursor.rs.
//! CI runs proptest's default case count (or `PROPTEST_CASES`); `cargo xtask fuzz --minutes N`
//! runs them longer.

use custody_identity::lifecycle::{DecodedEvent, SvixMessage};
use custody_identity::UnixTime;
use custody_providers::idp::auth0::decode_auth0;
use custody_providers::idp::native::decode_native;
use custody_providers::idp::registry;
use custody_server::config::KNOWN_VARIABLES;
use custody_server::Config;
use custody_vault::ports::{LifecycleChange, LifecycleEvent};
use proptest::prelude::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        "[a-z0-9:._-]{0,12}".prop_map(Value::String),
        Just(json!("2026-11-22T10:00:00Z")),
        prop_oneof![
            Just("sdu"),
            Just("ublkdu"),
            Just("ubuu"),
            Just("user.deleted"),
            Just("user.updated"),
            Just("user.suspended"),
            Just("user.reactivated"),
            Just("group.member_removed"),
            Just("organizationMembership.deleted")
        ]
        .prop_map(|s| json!(s)),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("type".to_owned()),
                    Just("data".to_owned()),
                    Just("user_id".to_owned()),
                    Just("date".to_owned()),
                    Just("log_id".to_owned()),
                    Just("id".to_owned()),
                    Just("subject".to_owned()),
                    Just("group".to_owned()),
                    Just("occurred_at".to_owned()),
                    Just("events".to_owned()),
                    Just("banned".to_owned()),
                    Just("timestamp".to_owned()),
                    "[a-z_]{1,8}",
                ],
                inner,
                0..6,
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// What every decoded event must be: a subject and an event id within bounds, a group named
/// when one is removed.
fn well_formed(events: &[DecodedEvent]) -> Result<(), TestCaseError> {
    for event in events {
        if let DecodedEvent::Act(changes) = event {
            for LifecycleEvent { event_id, subject, change, .. } in changes {
                prop_assert!(!subject.is_empty() && subject.len() <= 255, "subject {subject:?}");
                prop_assert!(!event_id.is_empty(), "empty event id");
                if let LifecycleChange::RemoveGroup(group) = change {
                    prop_assert!(!group.is_empty(), "empty group");
                }
            }
        }
    }
    Ok(())
}

fn svix() -> SvixMessage<'static> {
    SvixMessage { id: "msg_1", timestamp: UnixTime(1_800_000_000) }
}

proptest! {
    #[test]
    fn decoders_take_any_bytes(body in proptest::collection::vec(any::<u8>(), 0..400)) {
        for adapter in registry().all() {
            if let Ok(events) = adapter.decode_webhook(&body, Some(&svix())) { well_formed(&events)?; }
        }
    }

    #[test]
    fn decoders_take_any_json(value in json_value()) {
        let body = value.to_string().into_bytes();
        for adapter in registry().all() {
            if let Ok(events) = adapter.decode_webhook(&body, Some(&svix())) { well_formed(&events)?; }
        }
        let lines = format!("{value}\n{value}\n");
        if let Ok(events) = decode_auth0(lines.as_bytes()) { well_formed(&events)?; }
    }

    #[test]
    fn a_native_event_decodes_to_exactly_what_it_says(
        id in "[a-z0-9]{1,20}",
        subject in "[a-z0-9|_-]{1,40}",
        kind in prop_oneof![Just("user.deleted"), Just("user.suspended"), Just("user.reactivated")],
    ) {
        let body = json!({"events": [{"id": id, "type": kind, "subject": subject, "occurred_at": "2026-11-22T10:00:00Z"}]});
        let events = decode_native(body.to_string().as_bytes()).unwrap();
        let expected = match kind {
            "user.deleted" => LifecycleChange::Deprovision,
            "user.suspended" => LifecycleChange::Suspend,
            _ => LifecycleChange::Reactivate,
        };
        prop_assert_eq!(events.len(), 1);
        let DecodedEvent::Act(changes) = &events[0] else { return Err(TestCaseError::fail("ignored")) };
        prop_assert_eq!(changes.len(), 1);
        prop_assert_eq!(&changes[0].subject, &subject);
        prop_assert_eq!(&changes[0].event_id, &id);
        prop_assert_eq!(&changes[0].change, &expected);
    }

    #[test]
    fn an_auth0_entry_of_an_unlisted_code_is_never_acted_on(code in "[a-z]{1,6}", user in "[a-z0-9|]{1,20}") {
        prop_assume!(!["sdu", "ublkdu", "ubuu"].contains(&code.as_str()));
        let body = json!({"log_id": "l1", "data": {"type": code, "user_id": user, "date": "2026-11-22T10:00:00Z"}});
        let events = decode_auth0(body.to_string().as_bytes()).unwrap();
        let ignored = matches!(events.as_slice(), [DecodedEvent::Ignored { .. }]);
        prop_assert!(ignored, "an unlisted code was acted on: {:?}", events);
    }

    #[test]
    fn configuration_parsing_never_panics_and_keeps_settings_in_range(
        vars in proptest::collection::btree_map(
            proptest::sample::select(KNOWN_VARIABLES.iter().copied().filter(|v| *v != "CUSTODY_CONFIG").collect::<Vec<_>>()),
            prop_oneof![".{0,20}", "[0-9]{1,12}", Just("true".to_owned()), Just("-1".to_owned())],
            0..12,
        ),
    ) {
        let vars: BTreeMap<String, String> = vars.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        if let Ok((config, unknown)) = Config::from_vars(&vars) {
            prop_assert!(unknown.is_empty());
            prop_assert!((0..=600).contains(&config.jwt_leeway_secs));
            prop_assert!(config.jwks_refetch_cooldown_secs <= 3600);
            prop_assert!(config.jwks_max_age_secs <= 86_400);
            prop_assert!(config.jwks_miss_wait_ms <= 60_000);
            prop_assert!((1024..=256 * 1024).contains(&config.max_token_bytes));
        }
    }
}
