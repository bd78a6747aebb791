//! The mesh proxy. One binary, `sidecar`, next to every service; see
//! ARCHITECTURE.md at the repository root for the map of these modules in
//! the order a request meets them.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod admin;
pub mod app;
pub mod balance;
pub mod cluster;
pub mod config;
pub mod connect;
pub mod detect;
pub mod discovery;
pub mod errors;
pub mod forward;
pub mod http;
pub mod listen;
pub mod policy;
pub mod route;
pub mod stack;
pub mod tcp;
pub mod telemetry;
pub mod tls;

/// Errors as they travel between services and tasks.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
