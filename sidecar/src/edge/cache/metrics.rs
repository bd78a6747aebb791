//! The cache's counters on `/metrics`, read from the live store at scrape
//! time: `mesh_cache_requests_total{route,result}` (result `HIT`, `MISS`,
//! `STALE`, `REVALIDATED`), `mesh_cache_entries` and `mesh_cache_bytes`.

use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::route::RouteTable;

/// Reads the route table's store when `/metrics` is scraped.
pub struct CacheCollector(pub Arc<OnceLock<Arc<ArcSwap<RouteTable>>>>);

impl std::fmt::Debug for CacheCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheCollector").finish_non_exhaustive()
    }
}

impl Collector for CacheCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(routes) = self.0.get() else {
            return Ok(());
        };
        let store = routes.load().cache().clone();
        let mut counts = store.counts();
        if counts.is_empty() {
            return Ok(());
        }
        counts.sort();
        let counter = ConstCounter::new(0u64);
        let mut family = encoder.encode_descriptor(
            "cache_requests",
            "Requests of cached edge routes by how the cache answered: HIT, MISS, STALE, REVALIDATED",
            None,
            counter.metric_type(),
        )?;
        for (route, result, n) in &counts {
            let labels = [("route", &**route), ("result", *result)];
            ConstCounter::new(*n).encode(family.encode_family(&labels)?)?;
        }
        let stats = store.stats();
        let gauge = ConstGauge::new(0i64);
        for (name, help, value) in [
            (
                "cache_entries",
                "Responses held by the edge cache",
                stats.entries,
            ),
            ("cache_bytes", "Bytes held by the edge cache", stats.bytes),
        ] {
            let family = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
            ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX)).encode(family)?;
        }
        Ok(())
    }
}
