//! Apps (tenants) and their API keys.
//!
//! An API key is `ck_<prefix>_<secret>`: the prefix (16 lower-case hex characters) is stored in
//! clear to find the key and to show it in listings; only a keyed hash of the whole key is stored,
//! and compared in constant time by the adapter that computes it.

use crate::ids::{ApiKeyId, AppId};
use crate::time::UnixTime;
use std::fmt;

/// An app's display name: 1 to 200 characters after trimming, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppName(String);

/// Why an app name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("name must be 1 to 200 characters without control characters")]
pub struct InvalidAppName;

impl AppName {
    pub fn parse(s: &str) -> Result<Self, InvalidAppName> {
        let t = s.trim();
        if t.is_empty() || t.chars().count() > 200 || t.chars().any(char::is_control) {
            return Err(InvalidAppName);
        }
        Ok(Self(t.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct App {
    pub id: AppId,
    pub name: AppName,
    pub created_at: UnixTime,
}

/// A stored API key: never the key itself.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    pub id: ApiKeyId,
    pub app_id: AppId,
    /// The public part of the key, used to find it.
    pub prefix: String,
    /// The keyed hash of the whole key.
    pub hash: Vec<u8>,
    pub created_at: UnixTime,
    pub last_used_at: Option<UnixTime>,
}

impl fmt::Debug for ApiKeyRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeyRecord")
            .field("id", &self.id)
            .field("app_id", &self.app_id)
            .field("prefix", &self.prefix)
            .field("hash", &"[redacted]")
            .field("created_at", &self.created_at)
            .field("last_used_at", &self.last_used_at)
            .finish()
    }
}

/// Length of the public prefix of an API key.
pub const API_KEY_PREFIX_LEN: usize = 16;

/// The public prefix of a presented API key, or `None` when it is not shaped like one.
pub fn api_key_prefix(presented: &str) -> Option<&str> {
    let rest = presented.strip_prefix("ck_")?;
    let (prefix, secret) = rest.split_once('_')?;
    let well_formed = prefix.len() == API_KEY_PREFIX_LEN
        && prefix.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && (32..=128).contains(&secret.len())
        && secret.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    well_formed.then_some(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_of_well_formed_keys_only() {
        let key = format!("ck_{}_{}", "0123456789abcdef", "A".repeat(43));
        assert_eq!(api_key_prefix(&key), Some("0123456789abcdef"));
        assert_eq!(api_key_prefix("ck_short_xxx"), None);
        assert_eq!(api_key_prefix(&format!("ck_{}_{}", "0123456789ABCDEF", "A".repeat(43))), None);
        assert_eq!(api_key_prefix(&format!("xx_{}_{}", "0123456789abcdef", "A".repeat(43))), None);
        assert_eq!(api_key_prefix(&format!("ck_{}_{}", "0123456789abcdef", "A!".repeat(20))), None);
    }

    #[test]
    fn names() {
        assert_eq!(AppName::parse("  Acme  ").unwrap().as_str(), "Acme");
        assert!(AppName::parse("   ").is_err());
        assert!(AppName::parse(&"x".repeat(201)).is_err());
    }
}
