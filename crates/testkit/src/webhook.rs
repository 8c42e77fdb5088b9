//! Stand-ins for the webhook use case's outside world.

use custody_identity::Secret;
use custody_vault::webhook::{OutboxWaker, SvixHeaders, SvixRejection, SvixVerifier};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A [`SvixVerifier`] that refuses every delivery: for tests of identity providers whose
/// deliveries carry a generated secret (Auth0, Okta, Keycloak, custom OIDC), where a Svix
/// signature must never be what lets a delivery in.
#[derive(Debug, Default)]
pub struct NoSvix;

impl SvixVerifier for NoSvix {
    fn verify(&self, _secret: &Secret, _headers: &SvixHeaders, _body: &[u8]) -> Result<(), SvixRejection> {
        Err(SvixRejection::NoMatch)
    }
}

/// An [`OutboxWaker`] that counts how often it was woken.
#[derive(Debug, Default)]
pub struct CountingWaker(AtomicUsize);

impl CountingWaker {
    pub fn wakes(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

impl OutboxWaker for CountingWaker {
    fn wake(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}
