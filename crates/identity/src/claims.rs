//! Claim mappings: which JWT claim names the user, their groups and their roles.
//!
//! A [`ClaimPath`] is resolved against a token's claims in a fixed order: an exact top-level claim
//! name wins (`https://example.com/groups`, `cognito:groups`); a name starting with `/` is a JSON
//! Pointer (RFC 6901, `/o/rol`); anything else is tried as a dotted path (`realm_access.roles`).
//! Group and role values may be an array of strings, a single string, or an object whose keys are
//! the values (Clerk's `org_memberships`); of an object, only the keys whose value is `true`, a
//! non-empty object or a non-empty string count, so `{"admins": false}` grants nothing.
//!
//! No text taken from a token may contain NUL (U+0000): PostgreSQL cannot store it and SQLite
//! would, so a NUL in the subject, `email` or `name` refuses the token, and a group or role
//! value with one is dropped.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeSet;
use std::fmt;

/// The longest claim path accepted, in bytes.
pub const MAX_CLAIM_PATH_LEN: usize = 256;

/// A claim name or path that passed validation: non-empty, at most [`MAX_CLAIM_PATH_LEN`] bytes,
/// no control characters, and a well-formed JSON Pointer when it starts with `/`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ClaimPath(String);

/// Why a claim path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidClaimPath {
    #[error("a claim name must not be empty")]
    Empty,
    #[error("a claim name must be at most {MAX_CLAIM_PATH_LEN} bytes")]
    TooLong,
    #[error("a claim name must not contain control characters")]
    ControlCharacter,
    #[error("a JSON Pointer claim name has a bad escape (only ~0 and ~1 are allowed)")]
    BadPointerEscape,
}

impl ClaimPath {
    /// Validates a claim name or path.
    pub fn parse(s: &str) -> Result<Self, InvalidClaimPath> {
        if s.is_empty() {
            return Err(InvalidClaimPath::Empty);
        }
        if s.len() > MAX_CLAIM_PATH_LEN {
            return Err(InvalidClaimPath::TooLong);
        }
        if s.chars().any(char::is_control) {
            return Err(InvalidClaimPath::ControlCharacter);
        }
        if s.starts_with('/') {
            let mut chars = s.chars().peekable();
            while let Some(c) = chars.next() {
                if c == '~' && !matches!(chars.next(), Some('0') | Some('1')) {
                    return Err(InvalidClaimPath::BadPointerEscape);
                }
            }
        }
        Ok(Self(s.to_owned()))
    }

    /// `sub`, the default user-id claim of every IdP kind.
    pub fn subject() -> Self {
        Self("sub".to_owned())
    }

    /// The path as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Finds the value this path names in `claims`, or `None`.
    pub fn resolve<'a>(&self, claims: &'a Map<String, Value>) -> Option<&'a Value> {
        if let Some(v) = claims.get(&self.0) {
            return Some(v);
        }
        if self.0.starts_with('/') {
            let mut current: &Value = claims.get(&unescape_pointer_token(self.0[1..].split('/').next()?))?;
            for token in self.0[1..].split('/').skip(1) {
                current = step(current, &unescape_pointer_token(token))?;
            }
            return Some(current);
        }
        if self.0.contains('.') {
            let mut parts = self.0.split('.');
            let mut current = claims.get(parts.next()?)?;
            for part in parts {
                current = step(current, part)?;
            }
            return Some(current);
        }
        None
    }
}

fn unescape_pointer_token(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

fn step<'a>(value: &'a Value, key: &str) -> Option<&'a Value> {
    match value {
        Value::Object(map) => map.get(key),
        Value::Array(items) => {
            // RFC 6901: array indexes are decimal without leading zeros.
            if key.len() > 1 && key.starts_with('0') {
                return None;
            }
            items.get(key.parse::<usize>().ok()?)
        }
        _ => None,
    }
}

impl TryFrom<String> for ClaimPath {
    type Error = InvalidClaimPath;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<ClaimPath> for String {
    fn from(p: ClaimPath) -> String {
        p.0
    }
}

impl fmt::Display for ClaimPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The claim mappings of an IdP configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimMappings {
    /// The claim whose value is the user's stable subject.
    pub user_id: ClaimPath,
    /// The claim listing the user's groups, if any.
    pub group: Option<ClaimPath>,
    /// The claim listing the user's roles, if any.
    pub role: Option<ClaimPath>,
}

/// What a verified token says about its user, through the mappings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtractedIdentity {
    /// The user-id claim's value.
    pub subject: String,
    /// The `email` claim, when it is a string.
    pub email: Option<String>,
    /// The `name` claim, when it is a string.
    pub name: Option<String>,
    /// Group names, sorted and de-duplicated.
    pub groups: BTreeSet<String>,
    /// Role names, sorted and de-duplicated.
    pub roles: BTreeSet<String>,
}

/// Why a verified token does not name a user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityClaimError {
    #[error("the user-id claim `{0}` is missing")]
    MissingUserId(String),
    #[error("the user-id claim `{0}` is not a non-empty string")]
    BadUserId(String),
    #[error("the token's `{0}` claim contains a NUL character")]
    NulCharacter(String),
}

/// The longest subject accepted, in bytes.
pub const MAX_SUBJECT_LEN: usize = 255;

impl ClaimMappings {
    /// The defaults every kind starts from: `sub` and no group or role claim.
    pub fn subject_only() -> Self {
        Self { user_id: ClaimPath::subject(), group: None, role: None }
    }

    /// Reads the user's identity from verified claims. A group or role claim that is absent or of
    /// an unusable shape yields no groups or roles: memberships only ever come from values that
    /// are plainly there, so a policy never allows on a guess.
    pub fn extract(&self, claims: &Map<String, Value>) -> Result<ExtractedIdentity, IdentityClaimError> {
        let subject = match self.user_id.resolve(claims) {
            None | Some(Value::Null) => return Err(IdentityClaimError::MissingUserId(self.user_id.to_string())),
            Some(Value::String(s)) if !s.is_empty() && s.len() <= MAX_SUBJECT_LEN => s.clone(),
            // Some IdPs use numeric user ids; their decimal form is the subject.
            Some(Value::Number(n)) => n.to_string(),
            Some(_) => return Err(IdentityClaimError::BadUserId(self.user_id.to_string())),
        };
        if subject.contains('\0') {
            return Err(IdentityClaimError::NulCharacter(self.user_id.to_string()));
        }
        let text = |name: &str| match claims.get(name).and_then(Value::as_str) {
            Some(s) if s.contains('\0') => Err(IdentityClaimError::NulCharacter(name.to_owned())),
            other => Ok(other.map(str::to_owned)),
        };
        Ok(ExtractedIdentity {
            subject,
            email: text("email")?,
            name: text("name")?,
            groups: self.group.as_ref().map(|p| membership_values(p.resolve(claims))).unwrap_or_default(),
            roles: self.role.as_ref().map(|p| membership_values(p.resolve(claims))).unwrap_or_default(),
        })
    }
}

/// The longest group or role name kept, in bytes; longer values are dropped.
pub const MAX_MEMBERSHIP_LEN: usize = 255;
/// The most groups or roles kept from one token.
pub const MAX_MEMBERSHIPS: usize = 256;

/// Group or role values from a claim: an array of strings, one string, or the keys of an object
/// whose value says "member" (see [`is_membership_marker`]). Empty, overlong and NUL-carrying
/// values are dropped.
pub fn membership_values(value: Option<&Value>) -> BTreeSet<String> {
    let keep = |s: &str| !s.is_empty() && s.len() <= MAX_MEMBERSHIP_LEN && !s.contains('\0');
    let values: Box<dyn Iterator<Item = &str>> = match value {
        Some(Value::Array(items)) => Box::new(items.iter().filter_map(Value::as_str)),
        Some(Value::String(s)) => Box::new(std::iter::once(s.as_str())),
        Some(Value::Object(map)) => {
            Box::new(map.iter().filter(|(_, v)| is_membership_marker(v)).map(|(k, _)| k.as_str()))
        }
        _ => Box::new(std::iter::empty()),
    };
    values.filter(|s| keep(s)).take(MAX_MEMBERSHIPS).map(str::to_owned).collect()
}

/// Whether an object-shaped group claim's value makes its key a membership: `true` (Okta-style
/// flags), a non-empty object (Clerk's per-organisation details) or a non-empty string (a role
/// in that organisation). `false`, `null`, numbers, arrays and empty values do not: a flag that
/// says "not a member" must never grant the group.
pub fn is_membership_marker(value: &Value) -> bool {
    match value {
        Value::Bool(b) => *b,
        Value::Object(map) => !map.is_empty(),
        Value::String(s) => !s.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn exact_name_wins_over_paths() {
        let c = claims(json!({"https://example.com/groups": ["a"], "cognito:groups": ["b"], "a.b": 1, "a": {"b": 2}}));
        assert_eq!(ClaimPath::parse("https://example.com/groups").unwrap().resolve(&c), Some(&json!(["a"])));
        assert_eq!(ClaimPath::parse("cognito:groups").unwrap().resolve(&c), Some(&json!(["b"])));
        assert_eq!(ClaimPath::parse("a.b").unwrap().resolve(&c), Some(&json!(1)));
    }

    #[test]
    fn json_pointer_and_dotted_paths() {
        let c = claims(
            json!({"o": {"rol": "admin", "a/b": {"~x": true}}, "realm_access": {"roles": ["r1", "r2"]}, "arr": [10, 20]}),
        );
        assert_eq!(ClaimPath::parse("/o/rol").unwrap().resolve(&c), Some(&json!("admin")));
        assert_eq!(ClaimPath::parse("/o/a~1b/~0x").unwrap().resolve(&c), Some(&json!(true)));
        assert_eq!(ClaimPath::parse("/arr/1").unwrap().resolve(&c), Some(&json!(20)));
        assert_eq!(ClaimPath::parse("/arr/01").unwrap().resolve(&c), None);
        assert_eq!(ClaimPath::parse("realm_access.roles").unwrap().resolve(&c), Some(&json!(["r1", "r2"])));
        assert_eq!(ClaimPath::parse("realm_access.missing").unwrap().resolve(&c), None);
        assert_eq!(ClaimPath::parse("/nope").unwrap().resolve(&c), None);
    }

    #[test]
    fn path_validation() {
        assert_eq!(ClaimPath::parse(""), Err(InvalidClaimPath::Empty));
        assert_eq!(ClaimPath::parse("/a~2"), Err(InvalidClaimPath::BadPointerEscape));
        assert_eq!(ClaimPath::parse("a\nb"), Err(InvalidClaimPath::ControlCharacter));
        assert_eq!(ClaimPath::parse(&"x".repeat(300)), Err(InvalidClaimPath::TooLong));
    }

    #[test]
    fn group_shapes() {
        let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        assert_eq!(membership_values(Some(&json!(["a", "b", "a", 3]))), set(&["a", "b"]));
        assert_eq!(membership_values(Some(&json!("solo"))), set(&["solo"]));
        assert_eq!(membership_values(Some(&json!({"org_1": "admin", "org_2": "member"}))), set(&["org_1", "org_2"]));
        assert_eq!(membership_values(Some(&json!(42))), set(&[]));
        assert_eq!(
            membership_values(Some(&json!({
                "admins": false, "yes": true, "none": null, "zero": 0, "one": 1, "empty": "", "blank": {},
                "list": ["x"], "org": {"role": "admin"}, "team": "lead"
            }))),
            set(&["org", "team", "yes"]),
            "only true, a non-empty object or a non-empty string makes a member"
        );
        assert_eq!(membership_values(Some(&json!(["a\u{0}b", "ok"]))), set(&["ok"]), "NUL values are dropped");
        assert_eq!(membership_values(Some(&json!({"a\u{0}": true}))), set(&[]));
        assert_eq!(membership_values(None), set(&[]));
    }

    #[test]
    fn extracts_identity() {
        let m = ClaimMappings {
            user_id: ClaimPath::subject(),
            group: Some(ClaimPath::parse("org_memberships").unwrap()),
            role: Some(ClaimPath::parse("/app/role").unwrap()),
        };
        let id = m
            .extract(&claims(json!({"sub": "user_1", "email": "a@b.c", "name": "Ann", "org_memberships": {"org_9": "x"}, "app": {"role": "admin"}})))
            .unwrap();
        assert_eq!(id.subject, "user_1");
        assert_eq!(id.email.as_deref(), Some("a@b.c"));
        assert_eq!(id.groups.into_iter().collect::<Vec<_>>(), vec!["org_9"]);
        assert_eq!(id.roles.into_iter().collect::<Vec<_>>(), vec!["admin"]);
        assert_eq!(m.extract(&claims(json!({"email": "x"}))), Err(IdentityClaimError::MissingUserId("sub".into())));
        assert_eq!(m.extract(&claims(json!({"sub": ""}))), Err(IdentityClaimError::BadUserId("sub".into())));
        assert_eq!(m.extract(&claims(json!({"sub": ["a"]}))), Err(IdentityClaimError::BadUserId("sub".into())));
        let nul = IdentityClaimError::NulCharacter;
        assert_eq!(m.extract(&claims(json!({"sub": "a\u{0}"}))), Err(nul("sub".into())));
        assert_eq!(m.extract(&claims(json!({"sub": "a", "name": "A\u{0}n"}))), Err(nul("name".into())));
        assert_eq!(m.extract(&claims(json!({"sub": "a", "email": "\u{0}@x"}))), Err(nul("email".into())));
    }
}
