//! Passive outlier ejection, fed by the outcome of every request: an
//! endpoint that answers 5xx (or resets) or refuses connections too many
//! times in a row leaves the rotation for `base_ejection` × the number of
//! times it has been ejected (capped at `max_ejection`), while never more
//! than `max_ejected_percent` of the cluster is out at once.
//! Writes: the endpoint's ejection state (read by the balancer and
//! `/clusters`), `mesh_resilience_total{decision="ejected"}`.

use std::sync::atomic::{AtomicU32, Ordering};

use crate::balance::{Balancer, EndpointState};
use crate::config::OutlierSettings;

/// How one attempt at an endpoint went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// An answer below 500.
    Success,
    /// A 5xx answer, or a reset before the answer.
    ServerError,
    /// No connection.
    ConnectFailure,
}

/// Records `outcome` for `endpoint`; returns true when it ejected it.
pub fn observe(
    balancer: &Balancer,
    endpoint: &EndpointState,
    outcome: Outcome,
    settings: &OutlierSettings,
) -> bool {
    let (counter, threshold) = match outcome {
        Outcome::Success => {
            endpoint.consecutive_5xx.store(0, Ordering::Relaxed);
            endpoint
                .consecutive_connect_failures
                .store(0, Ordering::Relaxed);
            return false;
        }
        Outcome::ServerError => (&endpoint.consecutive_5xx, settings.consecutive_5xx),
        Outcome::ConnectFailure => (
            &endpoint.consecutive_connect_failures,
            settings.consecutive_connect_failures,
        ),
    };
    let failures = counter.fetch_add(1, Ordering::Relaxed) + 1;
    if threshold == 0 || failures < threshold || endpoint.is_ejected() {
        return false;
    }
    let all = balancer.endpoints();
    let ejected = all.iter().filter(|e| e.is_ejected()).count();
    if (ejected + 1) * 100 > all.len() * usize::from(settings.max_ejected_percent) {
        return false;
    }
    reset(counter);
    let times = endpoint.ejections.load(Ordering::Relaxed) + 1;
    let duration = settings
        .base_ejection
        .saturating_mul(times)
        .min(settings.max_ejection);
    endpoint.eject_for(duration);
    tracing::info!(endpoint = %endpoint.addr, ?duration, times, ?outcome, "endpoint ejected");
    true
}

fn reset(counter: &AtomicU32) {
    counter.store(0, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::ResilienceSettings;
    use crate::discovery::{Endpoint, EndpointSet};

    fn cluster(n: u16) -> Balancer {
        let endpoints = (1..=n)
            .map(|port| Endpoint {
                addr: ([127, 0, 0, 1], port).into(),
                weight: 1,
            })
            .collect();
        Balancer::new(
            EndpointSet::fixed(endpoints),
            crate::balance::Policy::RoundRobin,
            50,
        )
    }

    #[tokio::test(start_paused = true)]
    async fn consecutive_failures_eject_for_growing_times() {
        let settings = ResilienceSettings::defaults().outlier;
        let balancer = cluster(3);
        let bad = balancer.endpoints()[0].clone();
        for _ in 0..2 {
            assert!(!observe(
                &balancer,
                &bad,
                Outcome::ConnectFailure,
                &settings
            ));
        }
        assert!(
            observe(&balancer, &bad, Outcome::ConnectFailure, &settings),
            "third failed connect ejects"
        );
        assert!(bad.is_ejected());
        tokio::time::advance(settings.base_ejection + Duration::from_secs(1)).await;
        assert!(!bad.is_ejected(), "back after base_ejection");
        for _ in 0..3 {
            observe(&balancer, &bad, Outcome::ConnectFailure, &settings);
        }
        tokio::time::advance(settings.base_ejection + Duration::from_secs(1)).await;
        assert!(bad.is_ejected(), "the second ejection lasts twice as long");
    }

    #[tokio::test(start_paused = true)]
    async fn success_resets_and_the_percentage_caps_ejections() {
        let settings = ResilienceSettings::defaults().outlier;
        let balancer = cluster(2);
        let [a, b] = [
            balancer.endpoints()[0].clone(),
            balancer.endpoints()[1].clone(),
        ];
        for _ in 0..4 {
            observe(&balancer, &a, Outcome::ServerError, &settings);
        }
        observe(&balancer, &a, Outcome::Success, &settings);
        assert!(
            !observe(&balancer, &a, Outcome::ServerError, &settings),
            "a success resets the count"
        );
        for _ in 0..5 {
            observe(&balancer, &a, Outcome::ServerError, &settings);
            observe(&balancer, &b, Outcome::ServerError, &settings);
        }
        assert!(
            a.is_ejected() != b.is_ejected(),
            "at most 50% of two endpoints: one"
        );
    }
}
