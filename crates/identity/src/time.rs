//! Points in time as whole seconds since the Unix epoch, the only notion of time the domain uses.
//!
//! The domain never reads a clock: callers pass `now` in, taken from a [`crate::ports::Clock`].

use serde::{Deserialize, Serialize};

/// Seconds since 1970-01-01T00:00:00Z. Stored as BIGINT, rendered as RFC 3339 at the HTTP edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UnixTime(pub i64);

impl UnixTime {
    /// The number of seconds since the epoch.
    pub fn seconds(self) -> i64 {
        self.0
    }

    /// This time moved by `secs` seconds (negative moves back), saturating at the ends.
    pub fn plus_seconds(self, secs: i64) -> UnixTime {
        UnixTime(self.0.saturating_add(secs))
    }
}
