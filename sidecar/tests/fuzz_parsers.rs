//! Property tests for every parser that sees peer input (issue #14,
//! fuzzing). Each test feeds arbitrary and structure-aware inputs to a
//! harness in `sidecar::fuzzing` (the same functions the libFuzzer targets
//! in `fuzz/` call), which asserts the parser's invariants. Every case must
//! finish within [`CASE_LIMIT`] and every test within [`TEST_LIMIT`], so a
//! hang fails the test instead of stalling CI.
//!
//! Case counts keep the whole file well under a minute in the dev profile;
//! `PROPTEST_CASES=100000 cargo test -p sidecar --test fuzz_parsers` runs
//! longer. Inputs that once broke a parser are kept in `regressions`.
#![allow(clippy::unwrap_used)]

use std::fmt::Debug;
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use sidecar::fuzzing::{self, Transcoder};

/// Longest one case may take: generous, since a parser's case takes
/// microseconds; what it catches is a parser that loops or goes quadratic.
const CASE_LIMIT: Duration = Duration::from_secs(2);

/// Longest one test may take before it counts as hung.
const TEST_LIMIT: Duration = Duration::from_secs(300);

/// `cases` per test, unless `PROPTEST_CASES` says otherwise.
fn config(cases: u32) -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

/// Runs `test` on `cases` values of `strategy`: a failing case is shrunk
/// and reported, a slow case fails, and a hang aborts the test binary
/// (which fails the run) rather than stalling it.
fn check<S: Strategy>(cases: u32, strategy: S, test: impl Fn(S::Value))
where
    S::Value: Debug,
{
    let (finished, watched) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = watched.recv_timeout(TEST_LIMIT) {
            eprintln!("a property test ran past {TEST_LIMIT:?}: a parser hangs");
            std::process::abort();
        }
    });
    let mut runner = TestRunner::new(config(cases));
    let result = runner.run(&strategy, |value| {
        let started = Instant::now();
        test(value);
        let took = started.elapsed();
        prop_assert!(took < CASE_LIMIT, "one case took {took:?}");
        Ok(())
    });
    drop(finished);
    if let Err(failure) = result {
        panic!("{failure}");
    }
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max)
}

/// `base` with some bytes overwritten, some inserted, and maybe cut short.
fn mutated(base: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = base.len().max(1);
    (
        proptest::collection::vec((0..len, any::<u8>()), 0..4),
        proptest::collection::vec((0..len + 1, any::<u8>()), 0..2),
        proptest::option::of(0..len + 1),
    )
        .prop_map(move |(overwrites, inserts, cut)| {
            let mut out = base.clone();
            for (at, byte) in overwrites {
                if let Some(slot) = out.get_mut(at) {
                    *slot = byte;
                }
            }
            for (at, byte) in inserts {
                out.insert(at.min(out.len()), byte);
            }
            if let Some(cut) = cut {
                out.truncate(cut);
            }
            out
        })
}

// ---- protocol detection ----

#[test]
fn detection_answers_within_its_bound_and_never_changes_its_mind() {
    let starts = prop_oneof![
        Just(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec()),
        Just(b"GET / HTTP/1.1\r\n".to_vec()),
        Just(vec![0x16, 0x03, 0x01, 0x02, 0x00]),
        Just(b"M-SEARCH_X * HTTP/1.1".to_vec()),
    ];
    let inputs = prop_oneof![
        bytes(64),
        "[A-Z_ -]{0,30}".prop_map(String::into_bytes),
        starts.prop_flat_map(mutated),
    ];
    check(1024, inputs, |input| fuzzing::detect(&input));
}

// ---- PROXY protocol ----

/// Valid-looking v1 and v2 headers followed by payload bytes.
fn proxy_headers() -> impl Strategy<Value = Vec<u8>> {
    let v1 = (
        prop_oneof![
            Just("TCP4".to_string()),
            Just("TCP6".to_string()),
            Just("UNKNOWN".to_string()),
            "[A-Z0-9]{0,5}"
        ],
        any::<[u8; 4]>(),
        any::<[u16; 8]>(),
        any::<u16>(),
        any::<u16>(),
    )
        .prop_map(|(family, v4, v6, sport, dport)| {
            let (src, dst) = if family == "TCP6" {
                let ip = std::net::Ipv6Addr::from(v6);
                (ip.to_string(), ip.to_string())
            } else {
                let ip = std::net::Ipv4Addr::from(v4);
                (ip.to_string(), ip.to_string())
            };
            format!("PROXY {family} {src} {dst} {sport} {dport}\r\nGET /").into_bytes()
        });
    let v2 = (
        0u8..=0x3f,
        any::<u8>(),
        prop_oneof![0u16..64, 4000u16..4200, Just(u16::MAX)],
        bytes(80),
    )
        .prop_map(|(version_command, family, len, body)| {
            let mut out = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
            out.push(version_command | 0x20);
            out.push(family);
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(&body);
            out
        });
    prop_oneof![v1, v2].prop_flat_map(mutated)
}

#[test]
fn proxy_protocol_parser_stays_within_its_input_and_limit() {
    let inputs = prop_oneof![bytes(256), proxy_headers()];
    check(2048, inputs, |input| fuzzing::proxy_protocol(&input));
}

#[test]
fn proxy_protocol_reader_never_reads_past_its_limit() {
    let inputs = prop_oneof![bytes(64), proxy_headers()];
    check(256, inputs, |input| {
        fuzzing::proxy_protocol_read(&input);
    });
}

// ---- request hygiene ----

/// Paths from the characters that make normalisation interesting.
fn paths() -> impl Strategy<Value = String> {
    prop_oneof![
        "[/.%0-9A-Fa-f;]{0,40}",
        "(/|\\.|\\.\\.|%2[eEfF]|%5[cC]|%00|%|;|\\\\|[a-z0-9]|%[0-9A-F]{2}|é){0,16}",
        any::<String>(),
    ]
}

#[test]
fn normalised_paths_are_rooted_dotless_and_idempotent() {
    check(4096, paths(), |path| fuzzing::normalize_path(&path));
}

#[test]
fn request_head_checks_never_panic() {
    let header = (
        prop_oneof![
            Just(b"host".to_vec()),
            Just(b"content-length".to_vec()),
            Just(b"transfer-encoding".to_vec()),
            Just(b"te".to_vec()),
            Just(b"connection".to_vec()),
            bytes(12),
        ],
        prop_oneof![
            "[ -~]{0,20}".prop_map(String::into_bytes),
            "[0-9, ]{0,12}".prop_map(String::into_bytes),
            bytes(20),
        ],
    );
    let target = prop_oneof![
        paths().prop_map(|p| format!("/{p}")),
        paths().prop_map(|p| format!("http://a.example:80/{p}?q=1")),
        Just("*".to_string()),
        "[ -~]{0,40}",
    ];
    let inputs = (
        prop_oneof![Just(b"GET".to_vec()), Just(b"CONNECT".to_vec()), bytes(8)],
        target,
        proptest::collection::vec(header, 0..6),
    );
    check(1024, inputs, |(method, target, headers)| {
        fuzzing::request_head(&method, &target, &headers);
    });
}

// ---- downstream HTTP/1 request heads ----

#[test]
fn downstream_heads_are_found_and_served_the_same_however_they_arrive() {
    let seeds = prop_oneof![
        Just(b"GET /a?b=c HTTP/1.1\r\nHost: t\r\nAccept: */*\r\n\r\nGET /next".to_vec()),
        Just(b"HEAD / HTTP/1.1\nHost: t\nConnection: close\n\n".to_vec()),
        Just(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc".to_vec()),
        Just(
            b"GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
                .to_vec()
        ),
        Just(b"GET http://t:8080/x HTTP/1.1\r\nHost: t:8080\r\nTE: trailers\r\n\r\n".to_vec()),
        Just(b"\r\nGET / HTTP/1.0\r\n\r\n".to_vec()),
    ];
    let inputs = prop_oneof![bytes(96), seeds.prop_flat_map(mutated)];
    check(3000, inputs, |bytes| fuzzing::downstream_head(&bytes));
}

// ---- upstream HTTP/1 responses ----

#[test]
fn upstream_responses_read_the_same_however_they_arrive() {
    let seeds = prop_oneof![
        Just(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello".to_vec()),
        Just(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n1\r\n!\r\n0\r\nA: b\r\n\r\n"
                .to_vec()
        ),
        Just(b"HTTP/1.1 103 Early Hints\r\nLink: <a>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n".to_vec()),
        Just(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nokGET".to_vec()),
        Just(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nraw bytes to the close".to_vec()),
        Just(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n".to_vec()),
    ];
    let inputs = prop_oneof![bytes(96), seeds.prop_flat_map(mutated)];
    check(3000, (inputs, any::<bool>()), |(bytes, head_request)| {
        fuzzing::upstream_response(&bytes, head_request);
    });
}

// ---- config loader ----

/// Every complete config the project ships, as seeds to mutate.
fn seed_configs() -> Vec<String> {
    let mut seeds: Vec<String> = [
        include_str!("../../examples/configs/everything.yaml"),
        include_str!("../../examples/configs/edge.yaml"),
        include_str!("../../examples/configs/orders.yaml"),
        include_str!("../../examples/configs/chat.yaml"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let readme = include_str!("../../README.md");
    for block in readme.split("```yaml\n").skip(1) {
        if let Some((yaml, _)) = block.split_once("```") {
            seeds.push(yaml.to_string());
        }
    }
    seeds
}

/// A shipped config with some values replaced by random scalars, some
/// lines dropped or duplicated: the shape of the config, random values.
fn mutated_configs() -> impl Strategy<Value = String> {
    let seeds = seed_configs();
    let value = prop_oneof![
        Just("-1".to_string()),
        Just("0".to_string()),
        Just("18446744073709551616".to_string()),
        Just("1.5e309".to_string()),
        Just("~".to_string()),
        Just("[]".to_string()),
        Just("{}".to_string()),
        Just("\"\"".to_string()),
        Just("0s".to_string()),
        Just("99999999999h".to_string()),
        Just("127.0.0.1:99999".to_string()),
        Just("\"/v1/{x=**}/{y}\"".to_string()),
        "[ -~]{0,16}",
    ];
    (
        0..seeds.len(),
        proptest::collection::vec((any::<prop::sample::Index>(), value), 1..6),
        proptest::option::of(any::<prop::sample::Index>()),
    )
        .prop_map(move |(seed, replacements, dropped)| {
            let mut lines: Vec<String> = seeds[seed].lines().map(str::to_string).collect();
            for (at, value) in replacements {
                let count = lines.len();
                let line = &mut lines[at.index(count)];
                if let Some((key, _)) = line.split_once(": ") {
                    *line = format!("{key}: {value}");
                } else if let Some(item) = line.find("- ") {
                    *line = format!("{}{value}", &line[..item + 2]);
                }
            }
            if let Some(at) = dropped {
                let at = at.index(lines.len());
                let line = lines.remove(at);
                lines.insert(at / 2, line);
            }
            lines.join("\n")
        })
}

#[test]
fn config_loader_answers_errors_never_panics() {
    let inputs = prop_oneof![
        3 => mutated_configs(),
        1 => any::<String>(),
        1 => "([a-z_]{1,8}: ([a-z0-9]{0,4}|\\[\\]|\\{\\}|&a|\\*a|!!binary x)\n {0,4}){0,8}",
    ];
    check(192, inputs, |text| fuzzing::config(&text));
}

#[test]
fn shipped_configs_still_load() {
    for seed in seed_configs() {
        fuzzing::config(&seed);
    }
}

// ---- JWT and JWKS ----

fn json_values() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        Just(serde_json::json!(1e300)),
        Just(serde_json::json!(u64::MAX)),
        "[ -~]{0,10}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z]{1,4}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A JWT header and claims: well-known members with random values.
fn jwt_parts() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
    let alg = prop_oneof![
        Just(serde_json::json!("HS256")),
        Just(serde_json::json!("RS256")),
        Just(serde_json::json!("none")),
        json_values(),
    ];
    let member = |name: &'static str, value: BoxedStrategy<serde_json::Value>| {
        proptest::option::of(value).prop_map(move |v| v.map(|v| (name.to_string(), v)))
    };
    let header = (
        alg,
        member("kid", json_values().boxed()),
        member("crit", json_values().boxed()),
    )
        .prop_map(|(alg, kid, crit)| {
            let mut map = serde_json::Map::new();
            map.insert("alg".into(), alg);
            map.extend(kid);
            map.extend(crit);
            serde_json::to_vec(&map).unwrap()
        });
    let claims = (
        member("exp", json_values().boxed()),
        member("nbf", json_values().boxed()),
        member("iat", json_values().boxed()),
        member("sub", json_values().boxed()),
        member("aud", json_values().boxed()),
    )
        .prop_map(|(exp, nbf, iat, sub, aud)| {
            let map: serde_json::Map<_, _> =
                [exp, nbf, iat, sub, aud].into_iter().flatten().collect();
            serde_json::to_vec(&map).unwrap()
        });
    let raw_json = prop_oneof![4 => Just(()).prop_map(|_| None), 1 => bytes(24).prop_map(Some)];
    (header, claims, raw_json).prop_map(|(h, c, raw)| match raw {
        Some(raw) => (h, raw),
        None => (h, c),
    })
}

#[test]
fn jwt_parsing_never_panics_on_near_valid_tokens() {
    let tokens = prop_oneof![
        "[A-Za-z0-9_=+/.-]{0,80}",
        any::<String>(),
        (bytes(40), bytes(40), bytes(40)).prop_map(|(h, p, s)| format!(
            "{}.{}.{}",
            fuzzing::base64url(&h),
            fuzzing::base64url(&p),
            fuzzing::base64url(&s)
        )),
        jwt_parts().prop_map(|(h, c)| fuzzing::sign_hs256(&h, &c)),
    ];
    check(1024, tokens, |token| {
        fuzzing::jwt(&token);
    });
}

#[test]
fn a_forged_jwt_signature_is_never_accepted() {
    let inputs = (jwt_parts(), any::<prop::sample::Index>(), 1u8..=255);
    check(512, inputs, |((header, claims), at, flip)| {
        let token = fuzzing::sign_hs256(&header, &claims);
        let (signed, signature) = token.rsplit_once('.').unwrap();
        let mut raw = signature.as_bytes().to_vec();
        let at = at.index(raw.len());
        raw[at] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
            [(usize::from(raw[at]) + usize::from(flip)) % 64];
        let forged = format!("{signed}.{}", String::from_utf8(raw).unwrap());
        if forged != token {
            assert!(!fuzzing::jwt(&forged), "forged token accepted: {forged}");
        }
    });
}

#[test]
fn a_correctly_signed_jwt_without_time_claims_is_accepted() {
    let claims = proptest::collection::btree_map("[a-z]{1,4}", json_values(), 0..4);
    check(256, claims, |claims| {
        let claims: serde_json::Map<_, _> = claims
            .into_iter()
            .filter(|(k, _)| !matches!(k.as_str(), "exp" | "nbf" | "iat"))
            .collect();
        let token = fuzzing::sign_hs256(
            br#"{"alg":"HS256","typ":"JWT"}"#,
            &serde_json::to_vec(&claims).unwrap(),
        );
        assert!(fuzzing::jwt(&token), "valid token refused: {token}");
    });
}

#[test]
fn jwks_documents_never_panic() {
    let b64 = prop_oneof![
        bytes(40).prop_map(|b| fuzzing::base64url(&b)),
        "[ -~]{0,12}"
    ];
    let key = (
        prop_oneof![
            Just("RSA".to_string()),
            Just("EC".to_string()),
            Just("OKP".to_string()),
            "[A-Z]{0,3}"
        ],
        prop_oneof![
            Just("P-256".to_string()),
            Just("Ed25519".to_string()),
            "[A-Z0-9-]{0,6}"
        ],
        proptest::option::of(prop_oneof![
            Just("RS256"),
            Just("ES256"),
            Just("EdDSA"),
            Just("HS256")
        ]),
        b64.clone(),
        b64.clone(),
        b64,
    )
        .prop_map(|(kty, crv, alg, a, b, c)| {
            serde_json::json!({"kty": kty, "crv": crv, "alg": alg, "kid": "k",
                "n": a, "e": b, "x": a, "y": c, "k": c, "use": "sig"})
        });
    let documents = prop_oneof![
        proptest::collection::vec(key, 0..3)
            .prop_map(|keys| serde_json::to_vec(&serde_json::json!({ "keys": keys })).unwrap()),
        json_values()
            .prop_map(|v| serde_json::to_vec(&serde_json::json!({ "keys": [v] })).unwrap()),
        bytes(64),
    ];
    check(512, (documents, bytes(32)), |(document, message)| {
        fuzzing::jwks(&document, &message);
    });
}

// ---- gRPC-JSON transcoding ----

fn transcoder() -> &'static Transcoder {
    static TRANSCODER: OnceLock<Transcoder> = OnceLock::new();
    TRANSCODER.get_or_init(|| {
        let protos = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/protos");
        let pool = sidecar::translate::grpc_json::descriptors::compile(
            &["library/v1/library.proto".to_string()],
            &[protos.into()],
        )
        .unwrap();
        Transcoder::new(&pool).unwrap()
    })
}

/// A request aimed at the library API's bindings with random pieces.
fn library_requests() -> impl Strategy<Value = (String, String, Option<String>, Vec<u8>)> {
    let segment = prop_oneof!["[a-z0-9]{1,6}", "[a-z0-9%:*.~-]{0,6}", Just(String::new())];
    let path = (
        prop_oneof![
            Just("/v1/shelves/{}/books/{}"),
            Just("/v1/books/{}"),
            Just("/v1/shelves/{}/books"),
            Just("/v1/shelves/{}/books/{}:publish"),
            Just("/v1/files/{}/{}"),
            Just("/v1/shelves/{}/titles"),
            Just("/v1/books:import"),
            Just("/v1/echo"),
            Just("/v1/{}"),
        ],
        segment.clone(),
        segment,
    )
        .prop_map(|(shape, a, b)| shape.replacen("{}", &a, 1).replacen("{}", &b, 1));
    let field = prop_oneof![
        Just("name".to_string()),
        Just("book_id".to_string()),
        Just("title".to_string()),
        Just("page_count".to_string()),
        Just("genre".to_string()),
        Just("tags".to_string()),
        Just("published".to_string()),
        Just("filter.author".to_string()),
        Just("book.title".to_string()),
        Just("page_size".to_string()),
        "[a-z_.]{1,8}",
    ];
    let query_value = prop_oneof![
        "[a-zA-Z0-9%+]{0,8}",
        Just("FICTION".to_string()),
        Just("2020-01-01T00:00:00Z".to_string()),
        Just("-9223372036854775809".to_string()),
        Just("1e3".to_string()),
    ];
    let query = proptest::option::of(
        proptest::collection::vec((field.clone(), query_value), 0..4).prop_map(|pairs| {
            pairs
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("&")
        }),
    );
    let body = prop_oneof![
        proptest::collection::btree_map(field, json_values(), 0..4)
            .prop_map(|m| serde_json::to_vec(&m).unwrap()),
        json_values().prop_map(|v| serde_json::to_vec(&v).unwrap()),
        bytes(32),
    ];
    let method = prop_oneof![
        Just("GET"),
        Just("POST"),
        Just("PATCH"),
        Just("DELETE"),
        Just("PUT")
    ];
    (method, path, query, body).prop_map(|(m, p, q, b)| (m.to_string(), p, q, b))
}

#[test]
fn grpc_json_requests_transcode_or_fail_cleanly() {
    transcoder();
    check(512, library_requests(), |(method, path, query, body)| {
        transcoder().request(&method, &path, query.as_deref(), &body);
    });
}

#[test]
fn grpc_json_transcodes_a_plain_request() {
    assert!(transcoder().request("GET", "/v1/shelves/s1/books/b1", Some("book_id=x"), b""));
    assert!(transcoder().request(
        "POST",
        "/v1/shelves/s1/books",
        None,
        br#"{"title":"t","pageCount":"7","tags":["a"]}"#
    ));
}

#[test]
fn path_templates_parse_and_match_without_panics() {
    let templates = prop_oneof![
        "[{}/*=a-z.:]{0,24}",
        Just("/v1/{name=shelves/*/books/*}".to_string()),
        Just("/v1/files/{path=**}".to_string()),
        Just("/v1/{a.b=x/**}:verb".to_string()),
    ];
    check(1024, (templates, paths()), |(template, path)| {
        fuzzing::path_template(&template, &path);
    });
}

#[test]
fn grpc_frames_decode_within_their_input() {
    check(1024, (bytes(128), 1usize..16), |(data, split)| {
        fuzzing::grpc_frames(&data, split);
    });
}

#[test]
fn grpc_frames_round_trip_however_split() {
    let payloads = proptest::collection::vec(bytes(40), 0..5);
    check(512, (payloads, 1usize..12), |(payloads, split)| {
        let framed = fuzzing::grpc_frame_all(&payloads);
        let messages = fuzzing::grpc_frames(&framed, split);
        let messages: Vec<Vec<u8>> = messages.iter().map(|m| m.to_vec()).collect();
        assert_eq!(messages, payloads);
    });
}

// ---- gRPC-Web ----

#[test]
fn grpc_web_base64_decoding_never_panics() {
    let text = prop_oneof![
        bytes(64),
        "[A-Za-z0-9+/= \r\n]{0,64}".prop_map(String::into_bytes),
    ];
    check(1024, (text, 1usize..9), |(text, split)| {
        fuzzing::grpc_web_base64(&text, split);
    });
}

#[test]
fn grpc_web_base64_round_trips_chunk_by_chunk() {
    let payloads = proptest::collection::vec(bytes(24), 0..4);
    check(1024, (payloads, 1usize..9), |(payloads, split)| {
        let text = fuzzing::grpc_web_encode(&payloads);
        let decoded = fuzzing::grpc_web_base64(&text, split).expect("our own encoding decodes");
        assert_eq!(decoded, payloads.concat());
    });
}

// ---- XML ----

/// Small XML documents: nested elements, attributes, text, entities,
/// CDATA, comments and namespaces, with random names and content.
fn xml_documents() -> impl Strategy<Value = Vec<u8>> {
    let name = prop_oneof![
        "[a-z]{1,3}",
        "[a-z]{1,2}:[a-z]{1,2}",
        Just("item".to_string()),
        "[ -~]{0,3}"
    ];
    let text = prop_oneof![
        "[a-z0-9 ]{0,6}",
        Just("&amp;&lt;&#x41;&#65;".to_string()),
        Just("&bogus;&#xFFFFFFFF;&#0;".to_string()),
        Just("<![CDATA[x<y]]>".to_string()),
        Just("<!-- c -->".to_string()),
        Just("<?pi x?>".to_string()),
    ];
    let leaf = (name.clone(), text).prop_map(|(n, t)| format!("<{n}>{t}</{n}>"));
    let doc = leaf.prop_recursive(4, 32, 4, move |inner| {
        (
            name.clone(),
            proptest::option::of(("[a-z:]{1,4}", "[ -~]{0,4}")),
            proptest::collection::vec(inner, 0..4),
        )
            .prop_map(|(n, attr, children)| {
                let attr = attr
                    .map(|(k, v)| format!(" {k}=\"{v}\""))
                    .unwrap_or_default();
                format!("<{n}{attr} xmlns:a=\"urn:x\">{}</{n}>", children.concat())
            })
    });
    (proptest::option::of(Just("<?xml version=\"1.0\"?>")), doc)
        .prop_map(|(decl, doc)| format!("{}{doc}", decl.unwrap_or_default()).into_bytes())
        .prop_flat_map(mutated)
}

#[test]
fn xml_to_json_never_panics() {
    let inputs = prop_oneof![bytes(64), xml_documents()];
    check(1024, inputs, |document| fuzzing::xml(&document));
}

#[test]
fn deeply_nested_xml_is_refused_not_a_stack_overflow() {
    let deep = "<a>".repeat(200_000);
    fuzzing::xml(deep.as_bytes());
    let settings = sidecar::edge::transform::xml::XmlSettings::default();
    assert!(sidecar::edge::transform::xml::to_json(deep.as_bytes(), &settings).is_err());
}

// ---- Accept-Encoding, Cache-Control ----

#[test]
fn accept_encoding_negotiation_picks_an_offered_coding() {
    let values = prop_oneof![
        "((br|gzip|zstd|identity|\\*|x-[a-z]{1,3})(;q=[0-9.]{0,6})?(, ?)?){0,5}",
        "[ -~]{0,30}",
    ];
    check(2048, values, |value| {
        fuzzing::accept_encoding(value.as_bytes())
    });
}

#[test]
fn cache_headers_never_panic() {
    let values = prop_oneof![
        "((max-age|s-maxage|no-store|no-cache|private|stale-if-error|stale-while-revalidate|must-revalidate)(=[0-9\"]{0,22})?(, ?)?){0,5}",
        "(Mon|Sun|Xyz), [0-9]{1,2} (Jan|Feb|Dec|Foo) [0-9]{1,5} [0-9]{1,2}:[0-9]{2}:[0-9]{2} GMT",
        "(W/)?\"[a-z]{0,3}\"(, ?\\*)?",
        "[ -~]{0,30}",
    ];
    check(2048, values, |value| {
        fuzzing::cache_headers(value.as_bytes())
    });
}

// ---- aggregate placeholders ----

#[test]
fn aggregate_placeholders_parse_and_render() {
    let targets = prop_oneof![
        "(/[a-z]{0,3}|\\{(claim|path|query|header|[a-z]{1,3})?(\\.[a-z-]{0,4}){0,2}\\}|[{}?=&]){0,8}",
        "[ -~]{0,30}",
    ];
    check(2048, targets, |target| fuzzing::aggregate_target(&target));
}

// ---- WebSocket bridge messages ----

#[test]
fn ws_bridge_messages_always_find_their_route() {
    let bodies = prop_oneof![
        "\\{\"op\": ?\\{\"name\": ?\"(send|join|leave|)\"\\}\\}",
        "\\{\"op\": ?(\"send\"|1|null|\\[\\]|\\{\"name\": ?(1|true|\\{\\})\\})\\}",
        "[ -~]{0,40}",
    ];
    check(
        2048,
        bodies.prop_flat_map(|b| mutated(b.into_bytes())),
        |body| fuzzing::ws_bridge_message(&body),
    );
}

// ---- Redis replies ----

/// RESP replies with random kinds, lengths and contents.
fn resp_replies() -> impl Strategy<Value = Vec<u8>> {
    let line = prop_oneof![
        "[+-][ -~]{0,8}",
        ":-?[0-9]{0,20}",
        "\\$-?[0-9]{0,12}",
        "\\*-?[0-9]{0,5}",
        "[a-z0-9]{0,8}",
    ];
    proptest::collection::vec(line, 1..8)
        .prop_map(|lines| (lines.join("\r\n") + "\r\n").into_bytes())
        .prop_flat_map(mutated)
}

#[test]
fn redis_replies_parse_within_their_input() {
    let inputs = prop_oneof![bytes(64), resp_replies()];
    check(2048, inputs, |reply| fuzzing::redis_reply(&reply));
}

#[test]
fn redis_commands_round_trip() {
    check(512, proptest::collection::vec(bytes(24), 0..6), |args| {
        fuzzing::redis_round_trip(&args);
    });
}

// ---- regressions: inputs that once failed, kept as plain cases ----

/// Splits a libFuzzer input at its first NUL, as the targets do.
fn split(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[]),
    }
}

#[test]
fn regressions() {
    fuzzing::normalize_path("/a/..%2F..");
    fuzzing::proxy_protocol(b"PROXY TCP4 1.2.3.4 1.2.3.4 1 1\r\n");
    // `path_template` target, a timeout: a template of many `**` matched
    // against a long path backtracked exponentially.
    let input = include_bytes!("fuzz_regressions/path_template-many-double-wildcards");
    let (template, path) = split(input);
    let started = Instant::now();
    fuzzing::path_template(
        &String::from_utf8_lossy(template),
        &String::from_utf8_lossy(path),
    );
    assert!(started.elapsed() < CASE_LIMIT);
    // `grpc_json` target, a harness fix: `"title": ""` set a proto3 field
    // to its default, which the wire form leaves out.
    let transcoded =
        transcoder().request("PATCH", "/v1/shelves/s'/books/b2", None, br#"{"title":""}"#);
    assert!(transcoded);
}
