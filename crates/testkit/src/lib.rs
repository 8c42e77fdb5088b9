//! Test doubles for Custody's domain crates: what a service-level test needs to run a use case
//! without a database, a network or real time.
//!
//! - [`MemoryStore`]: every storage port of the identity, vault, sign-in and webhook domains on
//!   `Mutex`-guarded maps, with the semantics the store contract tests check (compare-and-set on
//!   versions, single-use states, revocation with outbox items, lifecycle ordering through
//!   [`custody_identity::lifecycle::LifecycleChange::plan`], the same rule the real store applies).
//! - [`ManualClock`]: time moves only when a test calls [`ManualClock::advance`].
//! - [`SeqRandom`]: deterministic "random" values (distinct UUIDs and bytes).
//! - [`FakeCipher`], [`FakeHasher`]: sealing bound to associated data and keyed hashing, without
//!   real cryptography, honest about the properties the domain relies on (a box opens only with
//!   its own associated data).
//! - [`FakeOAuth`]: a provider whose refresh can be held open ([`FakeOAuth::hold_refreshes`]) to
//!   line up concurrent callers, and made to fail; it counts its calls.
//! - [`FakeIdp`]: an OpenID provider in one: discovery, ID tokens ([`FakeIdp::token`]), their
//!   verification and the code exchange.
//! - [`MemoryRefreshLock`]: the refresh lock within one process.
//! - [`NoSvix`], [`CountingWaker`]: the webhook use case's Svix verifier (refusing) and outbox
//!   waker (counting).
//! - [`kinds`]: the real identity-provider adapters (pure: detection, defaults, decoding).
//! - [`identity_service`]: the identity use cases over these fakes, as every service test builds
//!   them.
//!
//! Nothing here sleeps or reads the system clock.

mod clock;
mod crypto;
mod idp;
mod lock;
mod memory;
mod oauth;
mod webhook;

pub use clock::ManualClock;
pub use crypto::{FakeCipher, FakeHasher, SeqRandom};
pub use idp::{AuthorizationSeen, FakeIdp};
pub use lock::MemoryRefreshLock;
pub use memory::MemoryStore;
pub use oauth::{FakeOAuth, RefreshAnswer};
pub use webhook::{CountingWaker, NoSvix};

/// The identity-provider kinds the server registers; their adapters are pure, so tests use the
/// real ones.
pub fn kinds() -> custody_identity::IdpKinds {
    custody_providers::idp::registry()
}

/// The identity use cases over `store`, `clock`, `random` and `idp` (discovery and token
/// verification), with the fake hasher, HTTPS-only issuers, no leeway and the real kinds.
pub fn identity_service(
    store: &std::sync::Arc<MemoryStore>,
    clock: &std::sync::Arc<ManualClock>,
    random: &std::sync::Arc<SeqRandom>,
    idp: &std::sync::Arc<FakeIdp>,
) -> custody_identity::service::IdentityService {
    use custody_identity::service::{IdentityPorts, IdentityService, IdentitySettings};
    IdentityService::new(
        IdentityPorts {
            health: store.clone(),
            apps: store.clone(),
            api_keys: store.clone(),
            idps: store.clone(),
            users: store.clone(),
            discovery: idp.clone(),
            verifier: idp.clone(),
            clock: clock.clone(),
            random: random.clone(),
            hasher: std::sync::Arc::new(FakeHasher),
            audit: store.clone(),
        },
        IdentitySettings {
            issuer_policy: custody_identity::IssuerUrlPolicy::HttpsOnly,
            leeway_secs: 0,
            kinds: kinds(),
        },
    )
}
