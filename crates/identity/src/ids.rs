//! Identifier newtypes. Every id is a UUID in its canonical lower-case hyphenated text form; the
//! constructors reject anything else, so an id read from a URL path can be trusted to be well
//! formed before it reaches storage.

use serde::{Deserialize, Serialize};
use std::fmt;

/// An id string that is not a canonical UUID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid id (expected a UUID)")]
pub struct InvalidId;

fn is_canonical_uuid(s: &str) -> bool {
    let bytes = s.as_bytes();
    if bytes.len() != 36 {
        return false;
    }
    bytes.iter().enumerate().all(|(i, b)| match i {
        8 | 13 | 18 | 23 => *b == b'-',
        _ => b.is_ascii_digit() || (b'a'..=b'f').contains(b),
    })
}

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Parses an id, accepting upper-case hex and normalising it to lower case.
            pub fn parse(s: &str) -> Result<Self, InvalidId> {
                let lower = s.to_ascii_lowercase();
                if is_canonical_uuid(&lower) {
                    Ok(Self(lower))
                } else {
                    Err(InvalidId)
                }
            }

            /// The canonical text form.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        /// As [`Self::parse`], keeping the string's buffer (an id read from storage arrives
        /// owned; this spares the hot path a copy per id).
        impl TryFrom<String> for $name {
            type Error = InvalidId;
            fn try_from(mut s: String) -> Result<Self, InvalidId> {
                s.make_ascii_lowercase();
                if is_canonical_uuid(&s) {
                    Ok(Self(s))
                } else {
                    Err(InvalidId)
                }
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

uuid_id!(
    /// An app: the tenant that owns an IdP, API keys, users and grants.
    AppId
);
uuid_id!(
    /// A user of one app, keyed by (app, subject).
    UserId
);
uuid_id!(
    /// An app's identity-provider configuration.
    IdpId
);
uuid_id!(
    /// An API key of an app (the id, never the secret).
    ApiKeyId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_canonical_and_normalises_case() {
        let id = AppId::parse("0F8FAD5B-D9CB-469F-A165-70867728950E").unwrap();
        assert_eq!(id.as_str(), "0f8fad5b-d9cb-469f-a165-70867728950e");
        let owned = AppId::try_from("0F8FAD5B-D9CB-469F-A165-70867728950E".to_owned()).unwrap();
        assert_eq!(owned, id);
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "abc",
            "0f8fad5b-d9cb-469f-a165-70867728950",
            "0f8fad5bxd9cb-469f-a165-70867728950e",
            "0f8fad5b-d9cb-469f-a165-70867728950g",
        ] {
            assert_eq!(UserId::parse(bad), Err(InvalidId), "{bad}");
            assert_eq!(UserId::try_from(bad.to_owned()), Err(InvalidId), "{bad}");
        }
    }
}
