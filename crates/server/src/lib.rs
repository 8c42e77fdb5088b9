//! The Custody HTTP server (`custody` binary): configuration, routing, authentication, JSON and
//! problem responses, and the wiring of adapters into the domain use cases. Business rules live
//! in `custody-identity` and `custody-vault`; this crate only translates HTTP to them.

pub mod bootstrap;
pub mod cli;
pub mod config;
pub mod html;
pub mod json;
pub mod logging;
pub mod metrics;
pub mod portal;
pub mod problem;
pub mod routes;
pub mod server;
pub mod state;
pub mod worker;

pub use config::Config;
pub use server::{start, RunningServer};
