//! The one shape of "this input is not acceptable", shared by every use case of both domain
//! crates: which field, and why. The server answers it with 400 `invalid_request` and the
//! `Display` text (`"{field}: {reason}"`) as the detail, so callers (the portal's forms) can
//! point at the field without parsing the message.

use std::fmt;

/// An input field the use case refused, and why. Never carries the refused value: it may be a
/// secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Invalid {
    /// The field's name as the API spells it (`client_id`, `scopes`, ...).
    pub field: &'static str,
    /// Why it was refused, for humans.
    pub reason: String,
}

impl Invalid {
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self { field, reason: reason.into() }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_field_then_reason() {
        let e = Invalid::new("client_secret", "required");
        assert_eq!(e.to_string(), "client_secret: required");
        assert_eq!(e.field, "client_secret");
    }
}
