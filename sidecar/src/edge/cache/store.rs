//! The shared response store: entries by key and `Vary` variant, bounded
//! in bytes with least-recently-used eviction, the misses in flight (so
//! concurrent misses on one key make one upstream call), counters for
//! `GET /cache`, and purge by key or path prefix. Kept across reloads:
//! a new [`CacheStore`] shares its predecessor's entries.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName};
use http::StatusCode;
use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;

use super::policy;
use super::CacheStoreSettings;

/// One stored response.
#[derive(Debug)]
pub struct Entry {
    /// The response status.
    pub status: StatusCode,
    /// The response headers, hop-by-hop ones removed.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
    /// When it was stored (or last revalidated).
    pub stored: Instant,
    /// Its `Age` when it arrived.
    pub initial_age: Duration,
    /// How long it is fresh.
    pub lifetime: Duration,
    /// How long past freshness it is served while one request refreshes it.
    pub stale_while_revalidate: Duration,
    /// How long past freshness it is served when the upstream fails.
    pub stale_if_error: Duration,
    /// `no-cache` response: revalidated before every use.
    pub always_revalidate: bool,
    /// The request headers it varies on, with the values it was stored for.
    pub vary: Vec<(HeaderName, Option<Vec<u8>>)>,
    /// The request's path and query: what a purge by prefix reads.
    pub target: String,
}

/// What an entry may be used for now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Served as it is.
    Fresh,
    /// Served while one background request refreshes it.
    StaleWhileRevalidate,
    /// Revalidated first; served if the upstream fails.
    StaleIfError,
    /// Revalidated (with validators) or fetched again.
    Stale,
}

impl Entry {
    /// Its current age.
    pub fn age(&self, now: Instant) -> Duration {
        self.initial_age + now.saturating_duration_since(self.stored)
    }

    /// Whether it may serve a request whose directives are `request`.
    pub fn freshness(&self, now: Instant, request: &policy::CacheControl) -> Freshness {
        if request.no_cache || self.always_revalidate {
            return Freshness::Stale;
        }
        let age = self.age(now);
        if request.max_age.is_some_and(|max_age| age >= max_age) {
            // The client refuses an answer this old, stale or not.
            return Freshness::Stale;
        }
        if age < self.lifetime {
            return Freshness::Fresh;
        }
        let past = age - self.lifetime;
        if past < self.stale_while_revalidate {
            return Freshness::StaleWhileRevalidate;
        }
        if past < self.stale_if_error {
            return Freshness::StaleIfError;
        }
        Freshness::Stale
    }

    /// Whether it can be served past freshness because the upstream failed.
    pub fn usable_on_error(&self, now: Instant) -> bool {
        self.age(now) < self.lifetime + self.stale_if_error.max(self.stale_while_revalidate)
    }

    /// Whether `headers` (a request's) select this variant.
    pub fn matches(&self, headers: &HeaderMap) -> bool {
        self.vary
            .iter()
            .all(|(name, value)| policy::vary_value(headers, name) == *value)
    }

    /// Bytes it holds: body, headers and bookkeeping.
    fn size(&self, key: &str) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 32)
            .sum();
        self.body.len() + headers + key.len() + self.target.len() + 256
    }
}

/// The outcome of a miss in flight, as its followers see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The upstream has not answered (or the body is still arriving).
    Pending,
    /// The response is stored: look again.
    Stored,
    /// The response was not stored: go upstream yourself.
    NotStored,
    /// The upstream failed and the stale entry answered: answer with it too.
    Failed,
}

/// The first miss on a key: its followers wait until it is dropped.
pub struct Flight {
    shared: Arc<Shared>,
    key: String,
    outcome: watch::Sender<Outcome>,
}

impl Flight {
    /// Tells the followers how it ended.
    pub fn finish(self, outcome: Outcome) {
        self.outcome.send_replace(outcome);
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        let mut flights = lock(&self.shared.flights);
        if flights
            .get(&self.key)
            .is_some_and(|rx| rx.same_channel(&self.outcome.subscribe()))
        {
            flights.remove(&self.key);
        }
    }
}

/// Who goes upstream for a missed key.
pub enum Join {
    /// This request: no other miss on the key is in flight.
    Leader(Flight),
    /// Another request is fetching the key: wait for it.
    Follower(watch::Receiver<Outcome>),
}

/// How a counted request was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Served {
    /// From the store, fresh.
    Hit,
    /// From the upstream.
    Miss,
    /// From the store, stale (while revalidating, or the upstream failed).
    Stale,
    /// From the store after the upstream said 304.
    Revalidated,
}

impl Served {
    /// The `x-cache` value and metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Served::Hit => "HIT",
            Served::Miss => "MISS",
            Served::Stale => "STALE",
            Served::Revalidated => "REVALIDATED",
        }
    }
}

/// The store's counters and size, for `GET /cache`.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    /// Stored responses (each `Vary` variant counts).
    pub entries: usize,
    /// Bytes held.
    pub bytes: usize,
    /// The bound on `bytes`.
    pub max_bytes: u64,
    /// The largest response stored.
    pub max_object: u64,
    /// Requests answered fresh from the store.
    pub hits: u64,
    /// Requests that went upstream.
    pub misses: u64,
    /// Requests answered stale.
    pub stale: u64,
    /// Requests answered after a 304 from the upstream.
    pub revalidated: u64,
    /// Entries evicted to stay within `max_bytes`.
    pub evictions: u64,
    /// Per route and result, the same counts.
    pub routes: BTreeMap<String, BTreeMap<&'static str, u64>>,
}

/// One entry listed by `GET /cache?entries=true`.
#[derive(Debug, Clone, Serialize)]
pub struct EntryView {
    /// Its key (what a purge by `key` names).
    pub key: String,
    /// The request's path and query.
    pub target: String,
    /// The response status.
    pub status: u16,
    /// Bytes held.
    pub bytes: usize,
    /// Its age in seconds.
    pub age: u64,
    /// Its freshness lifetime in seconds.
    pub ttl: u64,
}

/// The response store.
#[derive(Default)]
pub struct CacheStore {
    settings: CacheStoreSettings,
    shared: Arc<Shared>,
}

/// What every generation of the store shares.
#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    flights: Mutex<HashMap<String, watch::Receiver<Outcome>>>,
    hits: AtomicU64,
    misses: AtomicU64,
    stale: AtomicU64,
    revalidated: AtomicU64,
    evictions: AtomicU64,
    by_route: Mutex<HashMap<(Arc<str>, Served), u64>>,
}

/// The entries and their order of use.
#[derive(Default)]
struct State {
    slots: HashMap<u64, Slot>,
    by_key: HashMap<String, Vec<u64>>,
    /// Last use → slot id; the first is evicted first.
    lru: BTreeMap<u64, u64>,
    tick: u64,
    next_id: u64,
    bytes: usize,
}

struct Slot {
    key: String,
    entry: Arc<Entry>,
    used: u64,
    size: usize,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl State {
    fn touch(&mut self, id: u64) {
        self.tick += 1;
        let tick = self.tick;
        if let Some(slot) = self.slots.get_mut(&id) {
            self.lru.remove(&slot.used);
            slot.used = tick;
            self.lru.insert(tick, id);
        }
    }

    fn remove(&mut self, id: u64) {
        let Some(slot) = self.slots.remove(&id) else {
            return;
        };
        self.lru.remove(&slot.used);
        self.bytes -= slot.size;
        if let Some(ids) = self.by_key.get_mut(&slot.key) {
            ids.retain(|i| *i != id);
            if ids.is_empty() {
                self.by_key.remove(&slot.key);
            }
        }
    }

    /// Evicts the least recently used entries until `bytes` fit; returns how many.
    fn evict_to(&mut self, max_bytes: usize) -> u64 {
        let mut evicted = 0;
        while self.bytes > max_bytes {
            let Some((_, id)) = self.lru.pop_first() else {
                break;
            };
            // `remove` looks the tick up again; it is gone already, which is fine.
            self.remove(id);
            evicted += 1;
        }
        evicted
    }

    fn remove_where(&mut self, mut doomed: impl FnMut(&Slot) -> bool) -> usize {
        let ids: Vec<u64> = self
            .slots
            .iter()
            .filter(|(_, slot)| doomed(slot))
            .map(|(id, _)| *id)
            .collect();
        for id in &ids {
            self.remove(*id);
        }
        ids.len()
    }
}

impl CacheStore {
    /// The store for `settings`, keeping `previous`'s entries (evicted down
    /// to a smaller `max_bytes`, and those past a smaller `max_object`).
    pub fn build(settings: Option<&CacheStoreSettings>, previous: &Arc<CacheStore>) -> Arc<Self> {
        let Some(settings) = settings else {
            return previous.clone();
        };
        if *settings == previous.settings {
            return previous.clone();
        }
        let store = CacheStore {
            settings: settings.clone(),
            shared: previous.shared.clone(),
        };
        let max_object = store.max_object();
        let evicted = {
            let mut state = lock(&store.shared.state);
            let large = state.remove_where(|slot| slot.entry.body.len() > max_object) as u64;
            large + state.evict_to(store.max_bytes())
        };
        store.shared.evictions.fetch_add(evicted, Ordering::Relaxed);
        Arc::new(store)
    }

    /// The largest body stored.
    pub fn max_object(&self) -> usize {
        usize::try_from(self.settings.max_object).unwrap_or(usize::MAX)
    }

    fn max_bytes(&self) -> usize {
        usize::try_from(self.settings.max_bytes).unwrap_or(usize::MAX)
    }

    /// The variant of `key` that `headers` (a request's) select.
    pub fn lookup(&self, key: &str, headers: &HeaderMap) -> Option<Arc<Entry>> {
        let mut state = lock(&self.shared.state);
        let id = state.by_key.get(key)?.iter().copied().find(|id| {
            state
                .slots
                .get(id)
                .is_some_and(|s| s.entry.matches(headers))
        })?;
        state.touch(id);
        state.slots.get(&id).map(|slot| slot.entry.clone())
    }

    /// Stores `entry` under `key`, replacing the variant with the same
    /// `Vary` values; false if it is larger than the store allows.
    pub fn insert(&self, key: &str, entry: Entry) -> bool {
        let size = entry.size(key);
        if entry.body.len() > self.max_object() || size > self.max_bytes() {
            return false;
        }
        let mut state = lock(&self.shared.state);
        let same: Vec<u64> = state
            .by_key
            .get(key)
            .into_iter()
            .flatten()
            .copied()
            .filter(|id| {
                state
                    .slots
                    .get(id)
                    .is_some_and(|s| s.entry.vary == entry.vary)
            })
            .collect();
        for id in same {
            state.remove(id);
        }
        state.next_id += 1;
        state.tick += 1;
        let (id, tick) = (state.next_id, state.tick);
        state.slots.insert(
            id,
            Slot {
                key: key.to_string(),
                entry: Arc::new(entry),
                used: tick,
                size,
            },
        );
        state.lru.insert(tick, id);
        state.by_key.entry(key.to_string()).or_default().push(id);
        state.bytes += size;
        let evicted = state.evict_to(self.max_bytes());
        drop(state);
        self.shared.evictions.fetch_add(evicted, Ordering::Relaxed);
        true
    }

    /// Leads the miss on `key`, or follows the one in flight.
    pub fn join(&self, key: &str) -> Join {
        let mut flights = lock(&self.shared.flights);
        if let Some(rx) = flights.get(key) {
            return Join::Follower(rx.clone());
        }
        let (tx, rx) = watch::channel(Outcome::Pending);
        flights.insert(key.to_string(), rx);
        Join::Leader(Flight {
            shared: self.shared.clone(),
            key: key.to_string(),
            outcome: tx,
        })
    }

    /// Counts a request of `route` answered as `result`.
    pub fn count(&self, route: &Arc<str>, result: Served) {
        let counter = match result {
            Served::Hit => &self.shared.hits,
            Served::Miss => &self.shared.misses,
            Served::Stale => &self.shared.stale,
            Served::Revalidated => &self.shared.revalidated,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        *lock(&self.shared.by_route)
            .entry((route.clone(), result))
            .or_default() += 1;
    }

    /// Per route and result, the requests counted (for `/metrics`).
    pub fn counts(&self) -> Vec<(Arc<str>, &'static str, u64)> {
        lock(&self.shared.by_route)
            .iter()
            .map(|((route, result), n)| (route.clone(), result.as_str(), *n))
            .collect()
    }

    /// Removes the entries whose key is `key`, or whose path and query is
    /// `key`; returns how many.
    pub fn purge_key(&self, key: &str) -> usize {
        lock(&self.shared.state).remove_where(|slot| slot.key == key || slot.entry.target == key)
    }

    /// Removes the entries whose path starts with `prefix`; returns how many.
    pub fn purge_prefix(&self, prefix: &str) -> usize {
        lock(&self.shared.state).remove_where(|slot| slot.entry.target.starts_with(prefix))
    }

    /// Size and counters.
    pub fn stats(&self) -> Stats {
        let (entries, bytes) = {
            let state = lock(&self.shared.state);
            (state.slots.len(), state.bytes)
        };
        let mut routes: BTreeMap<String, BTreeMap<&'static str, u64>> = BTreeMap::new();
        for (route, result, n) in self.counts() {
            routes
                .entry(route.to_string())
                .or_default()
                .insert(result, n);
        }
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            entries,
            bytes,
            max_bytes: self.settings.max_bytes,
            max_object: self.settings.max_object,
            hits: load(&self.shared.hits),
            misses: load(&self.shared.misses),
            stale: load(&self.shared.stale),
            revalidated: load(&self.shared.revalidated),
            evictions: load(&self.shared.evictions),
            routes,
        }
    }

    /// Every entry, most recently used first, at most `limit`.
    pub fn entries(&self, limit: usize) -> Vec<EntryView> {
        let now = Instant::now();
        let state = lock(&self.shared.state);
        state
            .lru
            .values()
            .rev()
            .filter_map(|id| state.slots.get(id))
            .take(limit)
            .map(|slot| EntryView {
                key: slot.key.clone(),
                target: slot.entry.target.clone(),
                status: slot.entry.status.as_u16(),
                bytes: slot.size,
                age: slot.entry.age(now).as_secs(),
                ttl: slot.entry.lifetime.as_secs(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(body: &'static str, target: &str) -> Entry {
        Entry {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: Bytes::from_static(body.as_bytes()),
            stored: Instant::now(),
            initial_age: Duration::ZERO,
            lifetime: Duration::from_secs(10),
            stale_while_revalidate: Duration::from_secs(5),
            stale_if_error: Duration::from_secs(60),
            always_revalidate: false,
            vary: Vec::new(),
            target: target.into(),
        }
    }

    fn store(max_bytes: u64) -> Arc<CacheStore> {
        CacheStore::build(
            Some(&CacheStoreSettings {
                max_bytes,
                max_object: 1024,
            }),
            &Arc::default(),
        )
    }

    #[test]
    fn least_recently_used_entries_go_first() {
        let one = entry("x", "/a").size("a");
        let store = store(one as u64 * 2);
        assert!(store.insert("a", entry("x", "/a")));
        assert!(store.insert("b", entry("x", "/b")));
        assert!(store.lookup("a", &HeaderMap::new()).is_some());
        assert!(store.insert("c", entry("x", "/c")));
        assert!(store.lookup("b", &HeaderMap::new()).is_none());
        assert!(store.lookup("a", &HeaderMap::new()).is_some());
        assert_eq!(store.stats().entries, 2);
        assert_eq!(store.stats().evictions, 1);
        assert!(!store.insert("big", entry(include_str!("policy.rs"), "/big")));
    }

    #[test]
    fn reloads_keep_entries_and_shrink() {
        let first = store(1 << 20);
        assert!(first.insert("a", entry("x", "/a")));
        assert!(first.insert("b", entry("x", "/b")));
        let same = CacheStore::build(Some(&first.settings.clone()), &first);
        assert!(Arc::ptr_eq(&same, &first));
        let small = entry("x", "/a").size("a") as u64;
        let smaller = CacheStore::build(
            Some(&CacheStoreSettings {
                max_bytes: small,
                max_object: 1024,
            }),
            &first,
        );
        assert_eq!(smaller.stats().entries, 1);
        assert!(smaller.lookup("b", &HeaderMap::new()).is_some());
    }

    #[test]
    fn purges_by_key_target_and_prefix() {
        let store = store(1 << 20);
        store.insert("api GET /api/a", entry("x", "/api/a"));
        store.insert("api GET /api/b", entry("x", "/api/b?x=1"));
        store.insert("web GET /web", entry("x", "/web"));
        assert_eq!(store.purge_key("api GET /api/a"), 1);
        assert_eq!(store.purge_key("/api/b?x=1"), 1);
        store.insert("api GET /api/c", entry("x", "/api/c"));
        assert_eq!(store.purge_prefix("/api/"), 1);
        assert_eq!(store.stats().entries, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn freshness_moves_through_the_stale_windows() {
        let e = entry("x", "/a");
        let plain = policy::CacheControl::default();
        assert_eq!(e.freshness(Instant::now(), &plain), Freshness::Fresh);
        tokio::time::advance(Duration::from_secs(12)).await;
        assert_eq!(
            e.freshness(Instant::now(), &plain),
            Freshness::StaleWhileRevalidate
        );
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(e.freshness(Instant::now(), &plain), Freshness::StaleIfError);
        assert!(e.usable_on_error(Instant::now()));
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(e.freshness(Instant::now(), &plain), Freshness::Stale);
        assert!(!e.usable_on_error(Instant::now()));
        let fresh = entry("x", "/a");
        let no_cache = policy::CacheControl {
            no_cache: true,
            ..Default::default()
        };
        assert_eq!(fresh.freshness(Instant::now(), &no_cache), Freshness::Stale);
        let young = policy::CacheControl {
            max_age: Some(Duration::from_secs(1)),
            ..Default::default()
        };
        assert_eq!(fresh.freshness(Instant::now(), &young), Freshness::Fresh);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(fresh.freshness(Instant::now(), &young), Freshness::Stale);
        assert_eq!(fresh.freshness(Instant::now(), &plain), Freshness::Fresh);
    }

    #[test]
    fn one_leader_per_key() {
        let store = store(1 << 20);
        let Join::Leader(flight) = store.join("k") else {
            panic!("first miss leads");
        };
        let Join::Follower(mut rx) = store.join("k") else {
            panic!("second miss follows");
        };
        flight.finish(Outcome::Stored);
        assert_eq!(*rx.borrow_and_update(), Outcome::Stored);
        assert!(matches!(store.join("k"), Join::Leader(_)));
    }
}
