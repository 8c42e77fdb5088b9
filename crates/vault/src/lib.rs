//! Custody's grant vault domain: grants of third-party OAuth access, their sealed credentials,
//! the policies that decide who may use a provider, token hand-out and refresh, revocation and
//! deprovisioning. Like the identity domain it does no I/O and reads no clock; its ports are in
//! [`ports`].

pub mod grant;
pub mod handout;
pub mod policy;
pub mod ports;
pub mod provider;
pub mod service;
pub mod webhook;

// Sealing is shared vocabulary, defined with the identity domain (sign-in seals too); every vault
// port speaks it.
pub use custody_identity::cipher::{Cipher, CipherError, SealedBox};
pub use grant::{Grant, GrantId, GrantStatus};
pub use policy::{Policy, PolicyDecision};
pub use provider::{ProviderConfig, ProviderName};
