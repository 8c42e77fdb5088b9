//! A clock tests move forward instead of sleeping: the system time plus an offset that only
//! [`ManualClock::advance`] changes. It keeps following real time (tokens the fake IdP signs,
//! timeouts, the database's own clock stay consistent with it) and jumps ahead on demand, so a
//! test reaches "after the retry delay" or "past the token's `exp`" at once.

use custody_identity::ports::Clock;
use custody_identity::UnixTime;
use custody_providers::jwks::VerifierClock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// See the module documentation. Serves as the server's [`Clock`] (through
/// [`crate::harness::TestServer`]) and as a JWKS verifier's [`VerifierClock`].
#[derive(Debug, Default)]
pub struct ManualClock {
    /// How far ahead of the system time, in milliseconds.
    ahead_ms: AtomicU64,
}

impl ManualClock {
    pub fn new() -> ManualClock {
        ManualClock::default()
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).expect("a test-sized step");
        self.ahead_ms.fetch_add(ms, Ordering::SeqCst);
    }

    fn ahead(&self) -> Duration {
        Duration::from_millis(self.ahead_ms.load(Ordering::SeqCst))
    }
}

impl Clock for ManualClock {
    fn now(&self) -> UnixTime {
        let secs = self.wall().duration_since(UNIX_EPOCH).expect("after 1970").as_secs();
        UnixTime(i64::try_from(secs).expect("a plausible time"))
    }
}

impl VerifierClock for ManualClock {
    fn instant(&self) -> Instant {
        Instant::now() + self.ahead()
    }

    fn wall(&self) -> SystemTime {
        SystemTime::now() + self.ahead()
    }
}
