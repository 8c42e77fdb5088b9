//! Custody's integration harness: a fake identity provider ([`fake_idp`]), a fake OAuth
//! provider ([`fake_oauth`]) and the server started in-process on `127.0.0.1:0` against a fresh
//! database per test ([`harness`]), on SQLite and, when `CUSTODY_TEST_POSTGRES_URL` is set,
//! PostgreSQL; helpers for the sign-in suites ([`sign_in_flow`]); plus benchmark pieces for
//! `cargo xtask bench` ([`bench`]); a clock tests move forward instead of sleeping ([`clock`]).

#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod bench;
pub mod binary;
pub mod browser;
pub mod browser_cookies;
pub mod clock;
pub mod fake_idp;
pub mod fake_oauth;
pub mod harness;
pub mod portal;
pub mod sign_in_flow;
