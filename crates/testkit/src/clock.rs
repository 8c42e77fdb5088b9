//! A clock that moves only when told to.

use custody_identity::ports::Clock;
use custody_identity::UnixTime;
use std::sync::atomic::{AtomicI64, Ordering};

/// A [`Clock`] that stands still until [`ManualClock::advance`] or [`ManualClock::set`].
#[derive(Debug)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn new(start: UnixTime) -> Self {
        Self(AtomicI64::new(start.0))
    }

    /// Moves time forward by `secs` (backwards when negative).
    pub fn advance(&self, secs: i64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }

    pub fn set(&self, now: UnixTime) {
        self.0.store(now.0, Ordering::SeqCst);
    }
}

impl Default for ManualClock {
    /// 2023-11-14T22:13:20Z, a fixed and unremarkable instant.
    fn default() -> Self {
        Self::new(UnixTime(1_700_000_000))
    }
}

impl Clock for ManualClock {
    fn now(&self) -> UnixTime {
        UnixTime(self.0.load(Ordering::SeqCst))
    }
}
