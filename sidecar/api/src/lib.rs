//! `mesh-api`: what the proxy and the CLI share, with no async runtime in it.
//!
//! - [`config`]: the YAML config file as serde types, and the loader that
//!   reports every structural error with its YAML path and line.
//! - [`units`]: durations (`250ms`), sizes (`64KiB`) as the config writes them.
//! - [`admin`]: the JSON documents of the admin API that `mesh-ctl` reads.
//! - [`ca`]: the mesh CA (root, intermediate) and workload certificates with
//!   SPIFFE IDs, as `mesh-ctl ca` makes them; SPIFFE ID parsing.
//! - [`prom`]: the Prometheus text exposition, parsed back.
//! - [`apikey`]: edge API keys and the digests the config stores.
//! - [`golden`]: golden signals and the service graph from request
//!   metrics, and the dashboard page, for the admin API and `mesh-ctl`.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod admin;
pub mod apikey;
pub mod ca;
pub mod config;
pub mod golden;
pub mod prom;
pub mod units;
