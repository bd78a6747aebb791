//! The edge response cache end to end: a real edge in front of
//! `tests/py/cache_origin.py` (answers with the Cache-Control, ETag, Vary
//! and Set-Cookie its query asks for, and counts the requests that reach
//! it), with curl and Python threads as clients. Hits never reach the
//! origin, personal responses are never shared, conditionals, revalidation,
//! stale answers, purge, coalescing, authentication in front of the cache,
//! and entries kept across a reload.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use mesh_tests::{bin, curl, http, py_service, python, wait_until, Proc, Sidecar};
use serde_json::Value;

use crate::{curl_reply, Reply};

/// sha256("test"): the API key `test` of consumer `acme`.
const TEST_KEY_SHA256: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

/// Starts tests/py/cache_origin.py; returns it and its address.
fn origin() -> (Proc, SocketAddr) {
    py_service("cache_origin.py", &[])
}

/// The edge config: `/private/` behind an API key (keyed by consumer),
/// everything else cached by path, query and Accept-Language.
fn config(origin: SocketAddr, store: &str) -> String {
    format!(
        "service: edge
mode: edge
admin: {{ listen: 127.0.0.1:0 }}
edge:
  listeners:
    - listen: 127.0.0.1:0
  cache: {store}
  auth:
    api_keys:
      partners:
        from: header:x-api-key
        keys: [{{ consumer: acme, sha256: \"{TEST_KEY_SHA256}\" }}]
  routes:
    - name: private
      match: {{ path_prefix: /private/ }}
      auth: [partners]
      cache: {{ ttl: 30s, key: [path, query, consumer] }}
      to: origin
    - name: cached
      match: {{ path_prefix: / }}
      cache: {{ ttl: 30s, key: [path, query, \"header:accept-language\"], stale_if_error: 1m }}
      to: origin
  upstreams:
    origin:
      discovery: {{ endpoints: [{origin}] }}
"
    )
}

struct Fixture {
    _origin: Proc,
    origin: SocketAddr,
    edge: Sidecar,
    base: String,
}

fn fixture() -> Fixture {
    let (proc, addr) = origin();
    let edge = Sidecar::start(&config(addr, "{ max_bytes: 1MiB, max_object: 64KiB }"));
    let base = format!("http://{}", edge.listener("edge", None));
    Fixture {
        _origin: proc,
        origin: addr,
        edge,
        base,
    }
}

impl Fixture {
    /// GET `target` with `headers`.
    fn get(&self, target: &str, headers: &[&str]) -> Reply {
        let url = format!("{}{target}", self.base);
        let mut args = vec!["-i"];
        for header in headers {
            args.extend(["-H", header]);
        }
        args.push(&url);
        curl_reply(&args)
    }

    /// How many requests for `path` reached the origin.
    fn hits(&self, path: &str) -> u64 {
        self.origin_state()["hits"][path].as_u64().unwrap_or(0)
    }

    fn origin_state(&self) -> Value {
        let out = curl(&[&format!("http://{}/_counts", self.origin)]);
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// `POST /cache/purge` with a JSON body.
    fn purge(&self, body: &str) -> Value {
        let out = curl(&[
            "-X",
            "POST",
            "-H",
            "content-type: application/json",
            "--data",
            body,
            &format!("http://{}/cache/purge", self.edge.admin),
        ]);
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

/// Runs mesh-ctl; its stdout (it must succeed).
fn mesh_ctl(args: &[&str]) -> String {
    let output = Command::new(bin("mesh-ctl")).args(args).output().unwrap();
    assert!(output.status.success(), "mesh-ctl {args:?}: {output:?}");
    String::from_utf8(output.stdout).unwrap()
}

fn x_cache(reply: &Reply) -> &str {
    reply.header("x-cache").unwrap_or("none")
}

#[test]
fn hits_skip_the_upstream_and_personal_answers_are_never_shared() {
    let f = fixture();

    // A second GET is answered from the store, with its age.
    let first = f.get("/a?cc=max-age=60", &[]);
    assert_eq!(
        (first.status, x_cache(&first)),
        (200, "MISS"),
        "{}",
        first.body
    );
    let second = f.get("/a?cc=max-age=60", &[]);
    assert_eq!((second.status, x_cache(&second)), (200, "HIT"));
    assert_eq!(second.json()["n"], 1, "the stored body");
    assert!(second.header("age").is_some());
    assert_eq!(f.hits("/a"), 1);

    // The route's key includes Accept-Language; the response's Vary adds x-variant.
    assert_eq!(
        x_cache(&f.get("/a?cc=max-age=60", &["accept-language: fr"])),
        "MISS"
    );
    assert_eq!(
        x_cache(&f.get("/a?cc=max-age=60", &["accept-language: fr"])),
        "HIT"
    );
    assert_eq!(f.hits("/a"), 2);
    let blue = f.get("/v?vary=x-variant", &["x-variant: blue"]);
    assert_eq!(x_cache(&blue), "MISS");
    let blue = f.get("/v?vary=x-variant", &["x-variant: blue"]);
    assert_eq!(
        (x_cache(&blue), blue.json()["echo"].as_str()),
        ("HIT", Some("blue"))
    );
    let red = f.get("/v?vary=x-variant", &["x-variant: red"]);
    assert_eq!(
        (x_cache(&red), red.json()["echo"].as_str()),
        ("MISS", Some("red"))
    );
    assert_eq!(f.hits("/v"), 2);

    // no-store, private, Set-Cookie and Vary: * are never stored; requests
    // with Authorization or Cookie never use the shared store here.
    for (target, headers) in [
        ("/ns?cc=no-store", &[][..]),
        ("/pv?cc=private,max-age=60", &[][..]),
        ("/sc?cookie=1&cc=max-age=60", &[][..]),
        ("/va?vary=*&cc=max-age=60", &[][..]),
        ("/au?cc=max-age=60", &["authorization: Bearer abc"][..]),
        ("/ck?cc=max-age=60", &["cookie: session=abc"][..]),
    ] {
        for _ in 0..2 {
            let reply = f.get(target, headers);
            assert_eq!((reply.status, x_cache(&reply)), (200, "MISS"), "{target}");
        }
        let path = target.split('?').next().unwrap();
        assert_eq!(f.hits(path), 2, "{target} reached the origin each time");
    }
    // A cacheable answer is not served to a request with Authorization either.
    assert_eq!(
        x_cache(&f.get("/a?cc=max-age=60", &["authorization: Bearer abc"])),
        "MISS"
    );

    // A client's conditional against a stored entry: 304 from the store.
    assert_eq!(x_cache(&f.get("/e?etag=v1&cc=max-age=60", &[])), "MISS");
    let not_modified = f.get("/e?etag=v1&cc=max-age=60", &["if-none-match: \"v1\""]);
    assert_eq!((not_modified.status, x_cache(&not_modified)), (304, "HIT"));
    assert_eq!(not_modified.header("etag"), Some("\"v1\""));
    let changed = f.get("/e?etag=v1&cc=max-age=60", &["if-none-match: \"v0\""]);
    assert_eq!((changed.status, x_cache(&changed)), (200, "HIT"));
    assert_eq!(f.hits("/e"), 1);

    // Stats on the admin API.
    let stats = f.edge.admin_json("/cache?entries=50");
    assert!(stats["entries"].as_u64().unwrap() >= 5, "{stats}");
    assert!(stats["hits"].as_u64().unwrap() >= 5, "{stats}");
    assert!(stats["misses"].as_u64().unwrap() >= 10, "{stats}");
    assert!(stats["bytes"].as_u64().unwrap() > 0, "{stats}");
    assert!(
        stats["list"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["target"] == "/e?etag=v1&cc=max-age=60"),
        "{stats}"
    );
    assert!(
        f.edge
            .metric("mesh_cache_requests_total{route=\"cached\",result=\"HIT\"}")
            >= 5.0
    );
}

#[test]
fn purge_by_key_and_by_prefix() {
    let f = fixture();
    for target in ["/p/1", "/p/2", "/q/1"] {
        assert_eq!(x_cache(&f.get(target, &[])), "MISS");
        assert_eq!(x_cache(&f.get(target, &[])), "HIT");
    }
    let stats = f.edge.admin_json("/cache?entries=10");
    let key = stats["list"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["target"] == "/q/1")
        .unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(key.starts_with("cached GET /q/1"), "{key}");

    // By key, as GET /cache lists it.
    let purged = f.purge(&serde_json::json!({ "key": key }).to_string());
    assert_eq!(purged["purged"], 1, "{purged}");
    assert_eq!(x_cache(&f.get("/q/1", &[])), "MISS");
    assert_eq!(f.hits("/q/1"), 2);

    // By path prefix, as JSON and as a query parameter.
    assert_eq!(f.purge(r#"{"prefix": "/p/"}"#)["purged"], 2);
    assert_eq!(x_cache(&f.get("/p/1", &[])), "MISS");
    assert_eq!(x_cache(&f.get("/p/2", &[])), "MISS");
    let (status, body) = http(f.edge.admin, "POST", "/cache/purge?prefix=/p/");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"purged\": 2"), "{body}");
    assert_eq!(x_cache(&f.get("/p/1", &[])), "MISS");

    // By the request's path and query.
    assert_eq!(f.purge(r#"{"key": "/q/1"}"#)["purged"], 1);

    // Through mesh-ctl.
    assert_eq!(x_cache(&f.get("/p/1", &[])), "HIT");
    let admin = f.edge.admin.to_string();
    let stats = mesh_ctl(&["cache", "stats", "--admin", &admin, "--entries", "5"]);
    assert!(stats.contains("cached GET /p/1"), "{stats}");
    assert!(stats.lines().any(|l| l.starts_with("cached ")), "{stats}");
    let purged = mesh_ctl(&["cache", "purge", "--admin", &admin, "--prefix", "/p/"]);
    assert_eq!(purged.trim(), "purged 1");
    assert_eq!(x_cache(&f.get("/p/1", &[])), "MISS");

    // A successful POST to a stored path and query removes its answers.
    assert_eq!(x_cache(&f.get("/q/2?v=1", &[])), "MISS");
    assert_eq!(x_cache(&f.get("/q/2?v=1", &[])), "HIT");
    let posted = curl_reply(&[
        "-i",
        "-X",
        "POST",
        "--data",
        "{}",
        &format!("{}/q/2?v=1", f.base),
    ]);
    assert_eq!((posted.status, x_cache(&posted)), (200, "MISS"));
    assert_eq!(f.origin_state()["hits"]["POST /q/2"], 1);
    assert_eq!(x_cache(&f.get("/q/2?v=1", &[])), "MISS");

    // Neither or both: 400.
    assert_eq!(http(f.edge.admin, "POST", "/cache/purge").0, 400);
    let both = f.purge(r#"{"key": "/a", "prefix": "/"}"#);
    assert!(both["error"].is_string(), "{both}");
}

#[test]
fn stale_entries_are_revalidated_refreshed_and_served_on_errors() {
    let f = fixture();

    // Revalidation: the origin sees If-None-Match, answers 304; the client
    // gets the stored body.
    assert_eq!(x_cache(&f.get("/r?etag=v1&cc=max-age=1", &[])), "MISS");
    std::thread::sleep(Duration::from_millis(1100));
    let revalidated = f.get("/r?etag=v1&cc=max-age=1", &[]);
    assert_eq!(
        (revalidated.status, x_cache(&revalidated)),
        (200, "REVALIDATED")
    );
    assert_eq!(revalidated.json()["n"], 1, "the stored body");
    let state = f.origin_state();
    assert_eq!(state["if_none_match"]["/r"], "\"v1\"");
    assert_eq!(state["not_modified"]["/r"], 1);
    // Refreshed: fresh again.
    assert_eq!(x_cache(&f.get("/r?etag=v1&cc=max-age=1", &[])), "HIT");

    // stale-while-revalidate: the stale answer at once, one refresh behind it.
    assert_eq!(
        x_cache(&f.get("/w?cc=max-age=1,stale-while-revalidate=30", &[])),
        "MISS"
    );
    std::thread::sleep(Duration::from_millis(1100));
    let stale = f.get("/w?cc=max-age=1,stale-while-revalidate=30", &[]);
    assert_eq!(
        (x_cache(&stale), stale.json()["n"].as_u64()),
        ("STALE", Some(1))
    );
    wait_until(Duration::from_secs(5), "the background refresh", || {
        f.hits("/w") == 2
    });
    wait_until(Duration::from_secs(5), "the refreshed entry", || {
        let fresh = f.get("/w?cc=max-age=1,stale-while-revalidate=30", &[]);
        x_cache(&fresh) == "HIT" && fresh.json()["n"] == 2
    });

    // stale-if-error (the route's 1m): the origin answers 503, the client
    // gets the stale entry; without one, the 503.
    assert_eq!(x_cache(&f.get("/s?cc=max-age=1", &[])), "MISS");
    std::thread::sleep(Duration::from_millis(1100));
    curl(&[&format!("http://{}/_fail/on", f.origin)]);
    let stale = f.get("/s?cc=max-age=1", &[]);
    assert_eq!((stale.status, x_cache(&stale)), (200, "STALE"));
    assert_eq!(stale.json()["n"], 1);
    assert_eq!(f.hits("/s"), 2, "the origin was asked");
    let fresh_miss = f.get("/never-stored", &[]);
    assert_eq!((fresh_miss.status, x_cache(&fresh_miss)), (503, "MISS"));
    // must-revalidate forbids serving stale.
    curl(&[&format!("http://{}/_fail/off", f.origin)]);
    assert_eq!(
        x_cache(&f.get("/m?cc=max-age=1,must-revalidate", &[])),
        "MISS"
    );
    std::thread::sleep(Duration::from_millis(1100));
    curl(&[&format!("http://{}/_fail/on", f.origin)]);
    assert_eq!(f.get("/m?cc=max-age=1,must-revalidate", &[]).status, 503);
    curl(&[&format!("http://{}/_fail/off", f.origin)]);
}

#[test]
fn concurrent_misses_reach_the_upstream_once() {
    let f = fixture();
    let burst = python(
        "cache_burst.py",
        &[&format!("{}/slow?delay=300&cc=max-age=60", f.base), "100"],
    );
    assert_eq!(burst["statuses"]["200"], 100, "{burst}");
    assert_eq!(burst["bodies"], 1, "everyone got the one answer: {burst}");
    assert_eq!(burst["x_cache"]["MISS"], 1, "{burst}");
    assert_eq!(burst["x_cache"]["HIT"], 99, "{burst}");
    assert_eq!(f.hits("/slow"), 1);

    // An answer that turns out uncacheable: the waiters go upstream themselves.
    let burst = python(
        "cache_burst.py",
        &[&format!("{}/slow-ns?delay=300&cc=no-store", f.base), "10"],
    );
    assert_eq!(burst["statuses"]["200"], 10, "{burst}");
    assert_eq!(burst["x_cache"]["MISS"], 10, "{burst}");
    assert_eq!(f.hits("/slow-ns"), 10);

    // A body past max_object streams through, not stored.
    let big = f.get("/big?size=100000&cc=max-age=60", &[]);
    assert_eq!((big.status, big.body.len()), (200, 100_000));
    assert_eq!(
        x_cache(&f.get("/big?size=100000&cc=max-age=60", &[])),
        "MISS"
    );
    assert_eq!(f.hits("/big"), 2);
}

#[test]
fn a_cached_route_behind_an_api_key_still_refuses_strangers() {
    let f = fixture();
    let first = f.get("/private/doc?cc=max-age=60", &["x-api-key: test"]);
    assert_eq!(
        (first.status, x_cache(&first)),
        (200, "MISS"),
        "{}",
        first.body
    );
    let second = f.get("/private/doc?cc=max-age=60", &["x-api-key: test"]);
    assert_eq!((second.status, x_cache(&second)), (200, "HIT"));

    let stranger = f.get("/private/doc?cc=max-age=60", &[]);
    assert_eq!(stranger.status, 401);
    assert!(
        stranger.header("x-cache").is_none(),
        "never reached the cache"
    );
    let wrong = f.get("/private/doc?cc=max-age=60", &["x-api-key: nope"]);
    assert_eq!(wrong.status, 401);
    assert_eq!(f.hits("/private/doc"), 1);
}

#[test]
fn entries_survive_a_reload_and_a_smaller_store_evicts() {
    let f = fixture();
    for target in ["/k/1", "/k/2", "/k/3"] {
        assert_eq!(x_cache(&f.get(target, &[])), "MISS");
    }
    assert_eq!(f.edge.admin_json("/cache")["entries"], 3);

    // Same store settings, a route changed: entries kept.
    f.edge.write_config(
        &config(f.origin, "{ max_bytes: 1MiB, max_object: 64KiB }").replace(
            "ttl: 30s, key: [path, query, consumer]",
            "ttl: 20s, key: [path, query, consumer]",
        ),
    );
    let (status, body) = http(f.edge.admin, "POST", "/config/reload");
    assert_eq!(status, 200, "{body}");
    for target in ["/k/1", "/k/2", "/k/3"] {
        assert_eq!(x_cache(&f.get(target, &[])), "HIT", "{target}");
    }

    // A store too small for all three: the least recently used go.
    f.edge
        .write_config(&config(f.origin, "{ max_bytes: 1200, max_object: 1000 }"));
    let (status, body) = http(f.edge.admin, "POST", "/config/reload");
    assert_eq!(status, 200, "{body}");
    let stats = f.edge.admin_json("/cache");
    assert_eq!(stats["max_bytes"], 1200, "{stats}");
    let entries = stats["entries"].as_u64().unwrap();
    assert!((1..3).contains(&entries), "{stats}");
    assert!(stats["bytes"].as_u64().unwrap() <= 1200, "{stats}");
    assert_eq!(
        x_cache(&f.get("/k/3", &[])),
        "HIT",
        "the most recently used stays"
    );
}

#[test]
fn a_cached_route_behind_jwt_answers_401_without_a_token() {
    let keys = mesh_tests::jwt_keys();
    let tokens = mesh_tests::jwt_tokens(keys.path());
    let token = tokens["rs256"].as_str().unwrap();
    let (_origin, origin) = origin();
    let edge = Sidecar::start(&format!(
        "service: edge
mode: edge
admin: {{ listen: 127.0.0.1:0 }}
edge:
  listeners:
    - listen: 127.0.0.1:0
  auth:
    jwt:
      users:
        jwks: {{ file: {jwks} }}
        issuers: [https://issuer.test]
        audiences: [mesh-api]
  routes:
    - match: {{ path_prefix: / }}
      auth: [users]
      cache: {{ ttl: 30s, key: [path, query, \"claim:sub\"] }}
      to: origin
  upstreams:
    origin:
      discovery: {{ endpoints: [{origin}] }}
",
        jwks = keys.path().join("jwks.json").display(),
    ));
    let url = format!("http://{}/me?cc=max-age=60", edge.listener("edge", None));
    let bearer = format!("Authorization: Bearer {token}");
    let get = |headers: &[&str]| {
        let mut args = vec!["-i"];
        for header in headers {
            args.extend(["-H", header]);
        }
        args.push(&url);
        curl_reply(&args)
    };
    assert_eq!(x_cache(&get(&[&bearer])), "MISS");
    let hit = get(&[&bearer]);
    assert_eq!((hit.status, x_cache(&hit)), (200, "HIT"));

    // The entry is there, but no token (or a forged one) never reaches it.
    let stranger = get(&[]);
    assert_eq!(stranger.status, 401, "{}", stranger.body);
    assert!(stranger.header("x-cache").is_none());
    let forged = format!(
        "Authorization: Bearer {}",
        tokens["expired"].as_str().unwrap_or("not.a.token")
    );
    assert_eq!(get(&[&forged]).status, 401);
    let out = curl(&[&format!("http://{origin}/_counts")]);
    let counts: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(counts["hits"]["/me"], 1, "{counts}");
}
