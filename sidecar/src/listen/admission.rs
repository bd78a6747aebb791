//! Admission of sidecar connections (inbound, outbound, proxy,
//! transparent listeners), before a byte is read: the process-wide
//! `limits.max_connections`, the per-listener `limits.max_connections_per_ip`,
//! refusal while the proxy is overloaded, and the TLS handshake rate
//! (`limits.tls_handshakes_per_second`, shared with the edge listeners).
//! A refused connection is closed at once and counted on
//! `mesh_connections_refused_total{listener,reason}` by the caller.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use tokio::time::Instant;

use crate::config::LimitSettings;
use crate::lock;

/// Connections open now across the sidecar listeners of the process.
static SIDECAR_CONNECTIONS: AtomicU32 = AtomicU32::new(0);

/// TLS handshakes allowed now, refilled at the configured rate.
static HANDSHAKES: Mutex<Option<Bucket>> = Mutex::new(None);

/// Connections open per client address on one listener; an address leaves at 0.
#[derive(Default)]
pub(super) struct PerIp(Mutex<HashMap<IpAddr, u32>>);

/// What keeps a connection counted; uncounted on drop.
pub(super) struct Admitted {
    _global: Option<GlobalSlot>,
    _ip: Option<IpSlot>,
}

/// Admits a connection from `ip` on a listener whose per-address counts are
/// `per_ip`, or says why not (the refusal reason label).
pub(super) fn admit(
    per_ip: &Arc<PerIp>,
    ip: IpAddr,
    limits: &LimitSettings,
) -> Result<Admitted, &'static str> {
    if crate::overload::state().refuses_connections() {
        return Err("overloaded");
    }
    let global = match limits.max_connections {
        Some(limit) if !acquire(&SIDECAR_CONNECTIONS, limit) => return Err("global_limit"),
        Some(_) => Some(GlobalSlot),
        None => None,
    };
    let ip = match limits.max_connections_per_ip {
        Some(limit) => Some(per_ip.acquire(ip, limit).ok_or("ip_limit")?),
        None => None,
    };
    Ok(Admitted {
        _global: global,
        _ip: ip,
    })
}

/// Adds one to `counter` unless that passes `limit`.
fn acquire(counter: &AtomicU32, limit: u32) -> bool {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < limit).then_some(n + 1)
        })
        .is_ok()
}

/// One connection counted in [`SIDECAR_CONNECTIONS`].
struct GlobalSlot;

impl Drop for GlobalSlot {
    fn drop(&mut self) {
        SIDECAR_CONNECTIONS.fetch_sub(1, Ordering::AcqRel);
    }
}

impl PerIp {
    fn acquire(self: &Arc<Self>, ip: IpAddr, limit: u32) -> Option<IpSlot> {
        let mut open = lock(&self.0);
        let count = open.entry(ip).or_insert(0);
        if *count >= limit {
            if *count == 0 {
                open.remove(&ip);
            }
            return None;
        }
        *count += 1;
        Some(IpSlot {
            per_ip: self.clone(),
            ip,
        })
    }
}

/// One connection counted on its client address.
struct IpSlot {
    per_ip: Arc<PerIp>,
    ip: IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = lock(&self.per_ip.0);
        if let Some(count) = open.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// A token bucket: `rate` tokens a second, at most `rate` saved up.
struct Bucket {
    tokens: f64,
    refilled: Instant,
}

/// Takes a TLS handshake token (`limits.tls_handshakes_per_second`);
/// `false`: over the rate, close the connection before the handshake.
pub(super) fn tls_handshake_allowed(limits: &LimitSettings) -> bool {
    let Some(rate) = limits.tls_handshakes_per_second else {
        return true;
    };
    let rate = f64::from(rate);
    let now = Instant::now();
    let mut bucket = lock(&HANDSHAKES);
    let bucket = bucket.get_or_insert(Bucket {
        tokens: rate,
        refilled: now,
    });
    let elapsed = now.duration_since(bucket.refilled).as_secs_f64();
    bucket.tokens = (bucket.tokens + elapsed * rate).min(rate);
    bucket.refilled = now;
    if bucket.tokens >= 1.0 {
        bucket.tokens -= 1.0;
        true
    } else {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_ip_counts_and_leaves_at_zero() {
        let per_ip = Arc::new(PerIp::default());
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let limits = LimitSettings {
            max_connections_per_ip: Some(2),
            ..LimitSettings::default()
        };
        let a = admit(&per_ip, ip, &limits).unwrap();
        let b = admit(&per_ip, ip, &limits).unwrap();
        assert_eq!(admit(&per_ip, ip, &limits).err(), Some("ip_limit"));
        assert!(admit(&per_ip, "192.0.2.2".parse().unwrap(), &limits).is_ok());
        drop((a, b));
        assert!(lock(&per_ip.0).is_empty());
    }

    #[test]
    fn global_limit_is_released_on_drop() {
        let counter = AtomicU32::new(0);
        assert!(acquire(&counter, 1));
        assert!(!acquire(&counter, 1));
        counter.fetch_sub(1, Ordering::AcqRel);
        assert!(acquire(&counter, 1));
    }
}
