//! The mesh proxy. One binary, `sidecar`, next to every service; see
//! ARCHITECTURE.md at the repository root for the map of these modules in
//! the order a request meets them.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod admin;
pub mod allocator;
pub mod app;
pub mod balance;
pub mod busy_poll;
pub mod cidr;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod connect;
pub mod detect;
pub mod discovery;
pub mod edge;
pub mod errors;
pub mod forward;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod iptables;
pub mod listen;
pub mod overload;
pub mod policy;
pub mod resilience;
pub mod route;
pub mod stack;
pub mod tcp;
pub mod telemetry;
pub mod tls;
pub mod translate;
pub mod udp;

/// Errors as they travel between services and tasks.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Locks a mutex around plain data. A panic elsewhere while holding it
/// cannot leave such data half-updated in a way that matters here, so a
/// poisoned lock is used as is rather than spreading the panic.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
