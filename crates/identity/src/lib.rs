//! Custody's identity domain: who the end user is.
//!
//! This crate holds the rules for an app's identity provider (IdP): the port each kind's adapter
//! implements (detection from the issuer URL, claim defaults, webhook decoding; [`kinds`]), the
//! claim mappings that turn a verified JWT into a user and the lock that freezes them after the
//! first sign-in, the time checks on JWT claims, the user lifecycle ([`lifecycle`]) and the
//! sign-in use cases ([`signin`]). It does no I/O and reads no clock: storage, token
//! verification, discovery, sealing and time come in through the port traits in [`ports`],
//! [`cipher`] and [`signin::ports`], implemented by the adapter crates.

pub mod app;
pub mod audit;
pub mod cipher;
pub mod claims;
pub mod digest;
pub mod idp;
pub mod ids;
pub mod invalid;
pub mod issuer;
pub mod jwt;
pub mod kinds;
pub mod lifecycle;
pub mod page;
pub mod ports;
pub mod secret;
pub mod service;
pub mod signin;
pub mod time;
pub mod user;

pub use app::{ApiKeyRecord, App, AppName};
pub use claims::{ClaimMappings, ClaimPath, ExtractedIdentity, IdentityClaimError};
pub use idp::{IdpConfig, IdpKind, IdpPatch, NewIdpConfig, RequestedClaims};
pub use ids::{ApiKeyId, AppId, IdpId, InvalidId, UserId};
pub use invalid::Invalid;
pub use issuer::{InvalidIssuerUrl, Issuer, IssuerUrl, IssuerUrlPolicy};
pub use jwt::{ClaimExpectations, TokenRejection, VerifiedClaims};
pub use kinds::{IdpAdapter, IdpKinds, SecretSource};
pub use secret::Secret;
pub use time::UnixTime;
pub use user::{User, UserStatus};
