//! The decoders' tests: every format's shapes, malformed bodies and NUL characters.

use super::auth0::*;
use super::clerk::*;
use super::native::*;
use super::payload::parse_rfc3339;
use custody_identity::kinds::IdpAdapter;
use custody_identity::lifecycle::{DecodedEvent, LifecycleChange, LifecycleEvent, SvixMessage};
use custody_identity::UnixTime;
use serde_json::json;
use serde_json::Value;

fn acts(decoded: &[DecodedEvent]) -> Vec<LifecycleEvent> {
    decoded
        .iter()
        .flat_map(|d| match d {
            DecodedEvent::Act(events) => events.clone(),
            DecodedEvent::Ignored { .. } => Vec::new(),
        })
        .collect()
}

fn auth0_entry(log_id: &str, code: &str, user: &str) -> Value {
    json!({"log_id": log_id, "data": {"type": code, "user_id": user, "date": "2026-11-22T10:00:00.123Z", "description": "x"}})
}

#[test]
fn auth0_code_table() {
    assert_eq!(auth0_effect("sdu"), Some(Auth0Effect::Deprovision));
    assert_eq!(auth0_effect("ublkdu"), Some(Auth0Effect::Suspend));
    assert_eq!(auth0_effect("ubuu"), Some(Auth0Effect::Reactivate));
    for ignored in ["s", "f", "fp", "seacft", "SDU", ""] {
        assert_eq!(auth0_effect(ignored), None, "{ignored}");
    }
    let mut codes: Vec<&str> = AUTH0_EVENT_CODES.iter().map(|(c, _)| *c).collect();
    codes.sort_unstable();
    codes.dedup();
    assert_eq!(codes.len(), AUTH0_EVENT_CODES.len(), "each code appears once");
    assert_eq!(Auth0Effect::Deprovision.change(), LifecycleChange::Deprovision);
}

#[test]
fn auth0_array_object_and_lines_decode_alike() {
    let a = auth0_entry("90020261122", "sdu", "auth0|alice");
    let b = auth0_entry("90020261123", "s", "auth0|bob");
    let c = auth0_entry("90020261124", "ublkdu", "auth0|carol");
    let array = serde_json::to_vec(&json!([a, b, c])).unwrap();
    let lines = format!("{a}\n{b}\r\n\n{c}\n");
    let decoded = decode_auth0(&array).unwrap();
    assert_eq!(decoded, decode_auth0(lines.as_bytes()).unwrap());
    assert_eq!(decoded.len(), 3);
    assert_eq!(decoded[1], DecodedEvent::Ignored { event_type: "s".into() });
    let events = acts(&decoded);
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].event_id, "90020261122");
    assert_eq!(events[0].subject, "auth0|alice");
    assert_eq!(events[0].occurred_at, UnixTime(1_795_341_600));
    assert_eq!(events[0].change, LifecycleChange::Deprovision);
    assert_eq!(events[1].change, LifecycleChange::Suspend);

    let single = decode_auth0(a.to_string().as_bytes()).unwrap();
    assert_eq!(acts(&single), vec![events[0].clone()]);

    let reactivate = decode_auth0(auth0_entry("1", "ubuu", "auth0|x").to_string().as_bytes()).unwrap();
    assert_eq!(acts(&reactivate)[0].change, LifecycleChange::Reactivate);
}

#[test]
fn auth0_log_id_may_sit_in_data() {
    let entry = json!({"data": {"log_id": "inner", "type": "sdu", "user_id": "u", "date": "2026-11-22T10:00:00Z"}});
    assert_eq!(acts(&decode_auth0(entry.to_string().as_bytes()).unwrap())[0].event_id, "inner");
}

#[test]
fn auth0_ignored_codes_need_nothing_else() {
    let entry = json!({"data": {"type": "fp"}});
    assert_eq!(
        decode_auth0(entry.to_string().as_bytes()).unwrap(),
        vec![DecodedEvent::Ignored { event_type: "fp".into() }]
    );
    assert_eq!(decode_auth0(b"[]").unwrap(), vec![]);
}

#[test]
fn auth0_malformed_shapes() {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", b"  ".to_vec()),
        ("not json", b"{nope".to_vec()),
        ("array of numbers", b"[1, 2]".to_vec()),
        ("bare string", br#""sdu""#.to_vec()),
        ("no data", json!({"log_id": "1"}).to_string().into_bytes()),
        ("data not object", json!({"log_id": "1", "data": []}).to_string().into_bytes()),
        ("no type", json!({"log_id": "1", "data": {}}).to_string().into_bytes()),
        ("type not string", json!({"log_id": "1", "data": {"type": 5}}).to_string().into_bytes()),
        (
            "no log id",
            json!({"data": {"type": "sdu", "user_id": "u", "date": "2026-11-22T10:00:00Z"}}).to_string().into_bytes(),
        ),
        (
            "no user",
            json!({"log_id": "1", "data": {"type": "sdu", "date": "2026-11-22T10:00:00Z"}}).to_string().into_bytes(),
        ),
        ("no date", json!({"log_id": "1", "data": {"type": "sdu", "user_id": "u"}}).to_string().into_bytes()),
        (
            "bad date",
            json!({"log_id": "1", "data": {"type": "sdu", "user_id": "u", "date": "yesterday"}})
                .to_string()
                .into_bytes(),
        ),
        (
            "long id",
            json!({"log_id": "x".repeat(256), "data": {"type": "sdu", "user_id": "u", "date": "2026-11-22T10:00:00Z"}})
                .to_string()
                .into_bytes(),
        ),
        ("broken line", format!("{}\n{{", auth0_entry("1", "sdu", "u")).into_bytes()),
    ];
    for (name, body) in cases {
        assert!(decode_auth0(&body).is_err(), "{name} must be malformed");
    }
    let e = decode_auth0(br#"[{"log_id":"1","data":{"type":"sdu","user_id":"secret-ish","date":"no"}}]"#).unwrap_err();
    assert!(e.0.starts_with("entry 0: data.date"), "{e}");
    assert!(!e.0.contains("secret-ish"));
}

fn svix(id: &str) -> SvixMessage<'_> {
    SvixMessage { id, timestamp: UnixTime(1_795_341_000) }
}

#[test]
fn clerk_user_deleted() {
    let body = json!({"type": "user.deleted", "object": "event", "timestamp": 1_795_341_600_123_i64,
        "data": {"deleted": true, "id": "user_2abc", "object": "user"}});
    let decoded = decode_clerk(body.to_string().as_bytes(), &svix("msg_1")).unwrap();
    assert_eq!(
        acts(&decoded),
        vec![LifecycleEvent {
            event_id: "msg_1".into(),
            subject: "user_2abc".into(),
            occurred_at: UnixTime(1_795_341_600),
            change: LifecycleChange::Deprovision
        }]
    );
    // Without a timestamp the Svix one orders the event; seconds are recognised too.
    let body = json!({"type": "user.deleted", "data": {"id": "user_2abc"}});
    assert_eq!(
        acts(&decode_clerk(body.to_string().as_bytes(), &svix("m")).unwrap())[0].occurred_at,
        UnixTime(1_795_341_000)
    );
    let body = json!({"type": "user.deleted", "timestamp": 1_795_341_601, "data": {"id": "user_2abc"}});
    assert_eq!(
        acts(&decode_clerk(body.to_string().as_bytes(), &svix("m")).unwrap())[0].occurred_at,
        UnixTime(1_795_341_601)
    );
}

#[test]
fn clerk_user_updated_profile_and_ban() {
    let body = json!({"type": "user.updated", "timestamp": 1_795_341_600_000_i64, "data": {
        "id": "user_1", "first_name": "Ada", "last_name": "Lovelace", "banned": true,
        "primary_email_address_id": "idn_2",
        "email_addresses": [{"id": "idn_1", "email_address": "old@example.com"}, {"id": "idn_2", "email_address": "ada@example.com"}]}});
    let events = acts(&decode_clerk(body.to_string().as_bytes(), &svix("msg_2")).unwrap());
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].event_id, "msg_2");
    assert_eq!(
        events[0].change,
        LifecycleChange::Profile { email: Some("ada@example.com".into()), name: Some("Ada Lovelace".into()) }
    );
    assert_eq!(events[1].event_id, "msg_2:banned");
    assert_eq!(events[1].change, LifecycleChange::Suspend);

    let body = json!({"type": "user.updated", "data": {"id": "user_1", "first_name": null, "last_name": "Solo", "banned": false}});
    let events = acts(&decode_clerk(body.to_string().as_bytes(), &svix("msg_3")).unwrap());
    assert_eq!(events[0].change, LifecycleChange::Profile { email: None, name: Some("Solo".into()) });
    assert_eq!(events[1].change, LifecycleChange::Reactivate);

    let body = json!({"type": "user.updated", "data": {"id": "user_1"}});
    let events = acts(&decode_clerk(body.to_string().as_bytes(), &svix("msg_4")).unwrap());
    assert_eq!(
        events,
        vec![LifecycleEvent {
            event_id: "msg_4".into(),
            subject: "user_1".into(),
            occurred_at: UnixTime(1_795_341_000),
            change: LifecycleChange::Profile { email: None, name: None }
        }]
    );
}

#[test]
fn clerk_membership_deleted() {
    let body = json!({"type": "organizationMembership.deleted", "timestamp": 1_795_341_600_000_i64, "data": {
        "id": "orgmem_1", "organization": {"id": "org_eng", "slug": "eng"}, "public_user_data": {"user_id": "user_1"}}});
    let events = acts(&decode_clerk(body.to_string().as_bytes(), &svix("msg_5")).unwrap());
    assert_eq!(events[0].subject, "user_1");
    assert_eq!(events[0].change, LifecycleChange::RemoveGroup("org_eng".into()));
}

#[test]
fn clerk_other_types_are_ignored() {
    for t in ["user.created", "session.created", "organization.deleted", "email.created"] {
        let body = json!({"type": t, "data": {}});
        assert_eq!(
            decode_clerk(body.to_string().as_bytes(), &svix("m")).unwrap(),
            vec![DecodedEvent::Ignored { event_type: t.into() }]
        );
    }
}

#[test]
fn clerk_malformed_shapes() {
    let cases = vec![
        ("empty", String::new()),
        ("array", "[]".to_string()),
        ("not json", "{".to_string()),
        ("no type", json!({"data": {"id": "u"}}).to_string()),
        ("no data", json!({"type": "user.deleted"}).to_string()),
        ("data not object", json!({"type": "user.deleted", "data": "u"}).to_string()),
        ("no id", json!({"type": "user.deleted", "data": {}}).to_string()),
        ("id not string", json!({"type": "user.deleted", "data": {"id": 5}}).to_string()),
        ("bad timestamp", json!({"type": "user.deleted", "timestamp": "now", "data": {"id": "u"}}).to_string()),
        ("banned not bool", json!({"type": "user.updated", "data": {"id": "u", "banned": "yes"}}).to_string()),
        ("name not string", json!({"type": "user.updated", "data": {"id": "u", "first_name": 1}}).to_string()),
        (
            "no org",
            json!({"type": "organizationMembership.deleted", "data": {"public_user_data": {"user_id": "u"}}})
                .to_string(),
        ),
        (
            "no member",
            json!({"type": "organizationMembership.deleted", "data": {"organization": {"id": "o"}}}).to_string(),
        ),
    ];
    for (name, body) in cases {
        assert!(decode_clerk(body.as_bytes(), &svix("m")).is_err(), "{name} must be malformed");
    }
    let ok = json!({"type": "user.deleted", "data": {"id": "u"}}).to_string();
    assert!(Clerk.decode_webhook(ok.as_bytes(), None).is_err(), "Clerk needs its Svix headers");
    assert!(decode_clerk(ok.as_bytes(), &svix("")).is_err());
}

#[test]
fn native_events() {
    let body = json!({"events": [
        {"id": "e1", "type": "user.deleted", "subject": "alice", "occurred_at": "2026-11-22T10:00:00Z"},
        {"id": "e2", "type": "user.suspended", "subject": "bob", "occurred_at": "2026-11-22T11:00:00+01:00"},
        {"id": "e3", "type": "user.reactivated", "subject": "bob", "occurred_at": "2026-11-22T10:00:01.5Z"},
        {"id": "e4", "type": "group.member_removed", "subject": "carol", "group": "eng", "occurred_at": "2026-11-22T10:00:02Z"},
        {"id": "e5", "type": "user.renamed", "whatever": true}
    ]});
    let decoded = decode_native(body.to_string().as_bytes()).unwrap();
    assert_eq!(decoded[4], DecodedEvent::Ignored { event_type: "user.renamed".into() });
    let events = acts(&decoded);
    let summary: Vec<_> =
        events.iter().map(|e| (e.event_id.as_str(), e.subject.as_str(), e.occurred_at.0, e.change.clone())).collect();
    assert_eq!(
        summary,
        vec![
            ("e1", "alice", 1_795_341_600, LifecycleChange::Deprovision),
            ("e2", "bob", 1_795_341_600, LifecycleChange::Suspend),
            ("e3", "bob", 1_795_341_601, LifecycleChange::Reactivate),
            ("e4", "carol", 1_795_341_602, LifecycleChange::RemoveGroup("eng".into())),
        ]
    );
    assert_eq!(decode_native(br#"{"events": []}"#).unwrap(), vec![]);
}

#[test]
fn native_malformed_shapes() {
    let event = |v: Value| json!({"events": [v]}).to_string();
    let cases = vec![
        ("empty", String::new()),
        ("not json", "events".to_string()),
        ("array", "[]".to_string()),
        ("no events", "{}".to_string()),
        ("events not array", json!({"events": {}}).to_string()),
        ("event not object", json!({"events": ["x"]}).to_string()),
        ("no id", event(json!({"type": "user.deleted", "subject": "a", "occurred_at": "2026-11-22T10:00:00Z"}))),
        ("no type", event(json!({"id": "1", "subject": "a", "occurred_at": "2026-11-22T10:00:00Z"}))),
        ("no subject", event(json!({"id": "1", "type": "user.deleted", "occurred_at": "2026-11-22T10:00:00Z"}))),
        (
            "empty subject",
            event(json!({"id": "1", "type": "user.deleted", "subject": "", "occurred_at": "2026-11-22T10:00:00Z"})),
        ),
        ("no time", event(json!({"id": "1", "type": "user.deleted", "subject": "a"}))),
        ("unix time", event(json!({"id": "1", "type": "user.deleted", "subject": "a", "occurred_at": 1_795_341_600}))),
        (
            "bad time",
            event(json!({"id": "1", "type": "user.deleted", "subject": "a", "occurred_at": "2026-11-22 10:00"})),
        ),
        (
            "no group",
            event(
                json!({"id": "1", "type": "group.member_removed", "subject": "a", "occurred_at": "2026-11-22T10:00:00Z"}),
            ),
        ),
        ("trailing", format!("{} x", json!({"events": []}))),
    ];
    for (name, body) in cases {
        assert!(decode_native(body.as_bytes()).is_err(), "{name} must be malformed");
    }
}

#[test]
fn nul_characters_are_malformed_in_every_format() {
    let native = serde_json::to_vec(&json!({"events": [
        {"id": "e1", "type": "user.deleted", "subject": "ali\0ce", "occurred_at": "2026-11-22T10:00:00Z"}
    ]}))
    .unwrap();
    assert!(decode_native(&native).unwrap_err().0.contains("subject: must not contain NUL"));
    let auth0 = serde_json::to_vec(&auth0_entry("l1", "sdu", "auth0|a\0b")).unwrap();
    assert!(decode_auth0(&auth0).unwrap_err().0.contains("NUL"));
    let group = serde_json::to_vec(&json!({"events": [{"id": "e2", "type": "group.member_removed",
        "subject": "bob", "group": "e\0ng", "occurred_at": "2026-11-22T10:00:00Z"}]}))
    .unwrap();
    assert!(decode_native(&group).unwrap_err().0.contains("group: must not contain NUL"));
}

#[test]
fn rfc3339() {
    assert_eq!(parse_rfc3339("2026-11-22T10:00:00Z"), Some(UnixTime(1_795_341_600)));
    assert_eq!(parse_rfc3339("2026-11-22T12:00:00.999+02:00"), Some(UnixTime(1_795_341_600)));
    assert_eq!(parse_rfc3339("2026-11-22"), None);
}
