//! Third-party OAuth providers an app lets its users connect (Google, GitHub, Slack, Microsoft,
//! or any OAuth 2.0 authorization server configured by its URLs).

use custody_identity::cipher::SealedBox;
use custody_identity::{AppId, UnixTime};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A provider's name within an app: 1 to 64 of `a-z 0-9 _ -`, starting with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ProviderName(String);

/// A provider name that is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a provider name is 1 to 64 characters of a-z, 0-9, _ and -, starting with a letter or digit")]
pub struct InvalidProviderName;

impl ProviderName {
    pub fn parse(s: &str) -> Result<Self, InvalidProviderName> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
            && s.as_bytes()[0].is_ascii_alphanumeric();
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(InvalidProviderName)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ProviderName {
    type Error = InvalidProviderName;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<ProviderName> for String {
    fn from(p: ProviderName) -> String {
        p.0
    }
}

impl fmt::Display for ProviderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A provider as stored: the client secret only ever sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderConfig {
    pub app_id: AppId,
    pub name: ProviderName,
    pub authorization_url: String,
    pub token_url: String,
    pub revocation_url: Option<String>,
    pub client_id: String,
    /// Sealed with associated data [`ProviderConfig::secret_aad`].
    pub client_secret: SealedBox,
    pub scopes: Vec<String>,
    /// The base URL of the provider's API, which the proxy (`/v1/proxy/{provider}/...`) calls;
    /// `None` when the provider has none configured (the proxy then refuses).
    pub api_base_url: Option<String>,
    pub created_at: UnixTime,
    pub updated_at: UnixTime,
}

impl ProviderConfig {
    /// The associated data binding a provider's sealed client secret to its row.
    pub fn secret_aad(app: &AppId, name: &ProviderName) -> Vec<u8> {
        format!("provider-secret:{app}:{name}").into_bytes()
    }
}

/// Well-known endpoints filled in when a provider body names a `preset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preset {
    pub name: &'static str,
    pub authorization_url: &'static str,
    pub token_url: &'static str,
    pub revocation_url: Option<&'static str>,
    pub default_scopes: &'static [&'static str],
    pub api_base_url: &'static str,
}

/// The presets: Google, GitHub, Slack (OAuth v2) and Microsoft identity platform (common tenant).
pub const PRESETS: &[Preset] = &[
    Preset {
        name: "google",
        authorization_url: "https://accounts.google.com/o/oauth2/v2/auth",
        token_url: "https://oauth2.googleapis.com/token",
        revocation_url: Some("https://oauth2.googleapis.com/revoke"),
        default_scopes: &["openid", "email"],
        api_base_url: "https://www.googleapis.com",
    },
    Preset {
        name: "github",
        authorization_url: "https://github.com/login/oauth/authorize",
        token_url: "https://github.com/login/oauth/access_token",
        revocation_url: None,
        default_scopes: &["read:user"],
        api_base_url: "https://api.github.com",
    },
    Preset {
        name: "slack",
        authorization_url: "https://slack.com/oauth/v2/authorize",
        token_url: "https://slack.com/api/oauth.v2.access",
        revocation_url: Some("https://slack.com/api/auth.revoke"),
        default_scopes: &[],
        api_base_url: "https://slack.com/api",
    },
    Preset {
        name: "microsoft",
        authorization_url: "https://login.microsoftonline.com/common/oauth2/v2.0/authorize",
        token_url: "https://login.microsoftonline.com/common/oauth2/v2.0/token",
        revocation_url: None,
        default_scopes: &["offline_access", "User.Read"],
        api_base_url: "https://graph.microsoft.com",
    },
];

/// The preset called `name`, if any.
pub fn preset(name: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.name == name)
}

/// A scope token per RFC 6749 section 3.3: printable ASCII except space, `"` and `\`.
pub fn is_valid_scope(scope: &str) -> bool {
    !scope.is_empty()
        && scope.len() <= 256
        && scope.bytes().all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(ProviderName::parse("google").is_ok());
        assert!(ProviderName::parse("my-crm_2").is_ok());
        assert!(ProviderName::parse("").is_err());
        assert!(ProviderName::parse("-x").is_err());
        assert!(ProviderName::parse("Google").is_err());
        assert!(ProviderName::parse("a/b").is_err());
        assert!(ProviderName::parse(&"a".repeat(65)).is_err());
    }

    #[test]
    fn presets_and_scopes() {
        assert_eq!(preset("github").unwrap().token_url, "https://github.com/login/oauth/access_token");
        assert!(preset("myspace").is_none());
        assert!(is_valid_scope("https://www.googleapis.com/auth/gmail.readonly"));
        assert!(!is_valid_scope("two words"));
        assert!(!is_valid_scope("quote\""));
    }
}
