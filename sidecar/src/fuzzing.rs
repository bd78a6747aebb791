//! Fuzz harnesses: one function per parser that sees peer input, shared by
//! the property tests (`sidecar/tests/fuzz_parsers.rs`) and the libFuzzer
//! targets (`fuzz/fuzz_targets/`). Each feeds its input to the parser and
//! asserts the parser's invariants; a violated invariant panics, which is
//! what both runners report as a failure. Not part of the proxy's API.
#![allow(clippy::expect_used)]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::FutureExt as _;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode};
use mesh_api::config::{EncodedSlashes, Encoding};
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage};

use crate::detect;
use crate::edge::aggregate::TargetTemplate;
use crate::edge::cache::policy;
use crate::edge::transform::xml::{self, XmlSettings};
use crate::http::hygiene;
use crate::listen::proxy_protocol;
use crate::policy::auth::jwks::{self, Algorithm, JwksSettings};
use crate::policy::auth::jwt::{Jwt, JwtSettings};
use crate::policy::auth::CredentialSource;
use crate::policy::rate_limit::redis;
use crate::translate::grpc_json::{json, rules, stream};
use crate::translate::grpc_web;

/// Most bytes protocol detection may ask for before it answers: the HTTP/2
/// connection preface.
pub const DETECT_BOUND: usize = 24;

/// Most bytes the PROXY protocol reader takes from a connection.
pub const PROXY_PROTOCOL_LIMIT: usize = proxy_protocol::V2_MAX;

/// The HS256 secret of the [`jwt`] harness's authenticator.
pub const JWT_SECRET: &[u8] = b"fuzzing-secret-0123456789abcdef!";

/// Detection on every prefix of `bytes`: it answers within
/// [`DETECT_BOUND`] bytes and never changes its answer as bytes arrive.
pub fn detect(bytes: &[u8]) {
    let mut decided = None;
    for end in 0..=bytes.len().min(4 * DETECT_BOUND) {
        let answer = detect::classify(&bytes[..end]);
        match decided {
            None if answer.is_none() => assert!(
                end < DETECT_BOUND,
                "detection asked for more than {DETECT_BOUND} bytes"
            ),
            None => decided = answer,
            Some(protocol) => assert_eq!(answer, Some(protocol), "answer changed at {end} bytes"),
        }
    }
    let _ = detect::classify(bytes);
}

/// A PROXY header parsed from `buf`: what it used lies within `buf` and the
/// limit, parses alone to the same header, and the parser never waits for
/// bytes past the limit.
pub fn proxy_protocol(buf: &[u8]) {
    let parsed = proxy_protocol::parse(buf);
    match &parsed {
        Ok(Some((_, used))) => {
            assert!(*used <= buf.len(), "used {used} of {} bytes", buf.len());
            assert!(*used <= PROXY_PROTOCOL_LIMIT, "header of {used} bytes");
            assert_eq!(proxy_protocol::parse(&buf[..*used]), parsed);
        }
        Ok(None) => assert!(
            buf.len() < PROXY_PROTOCOL_LIMIT,
            "waits for more than {PROXY_PROTOCOL_LIMIT} bytes"
        ),
        Err(_) => {}
    }
}

/// The PROXY reader on a connection that sends `buf` and then endless
/// junk: how many bytes it took from the connection.
pub fn proxy_protocol_read(buf: &[u8]) -> usize {
    let mut stream = buf.to_vec();
    stream.resize(buf.len() + 2 * PROXY_PROTOCOL_LIMIT, b'x');
    let mut conn = std::io::Cursor::new(stream);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread runtime builds");
    let read = runtime.block_on(proxy_protocol::read(&mut conn, Duration::from_secs(5)));
    drop(read);
    let taken = usize::try_from(conn.position()).unwrap_or(usize::MAX);
    assert!(
        taken <= PROXY_PROTOCOL_LIMIT,
        "read {taken} bytes, past the {PROXY_PROTOCOL_LIMIT}-byte limit"
    );
    taken
}

/// Path normalisation in every encoded-slash mode: a normal path is rooted,
/// has no `.`, `..` or NUL, and normalises to itself.
pub fn normalize_path(path: &str) {
    for slashes in [
        EncodedSlashes::Decode,
        EncodedSlashes::Reject,
        EncodedSlashes::Keep,
    ] {
        let Ok(once) = hygiene::normalize(path, slashes) else {
            continue;
        };
        assert!(once.starts_with('/'), "{once:?} is not rooted");
        assert!(!once.contains('\0'), "{once:?} has a NUL");
        assert!(
            !once.split('/').any(|s| s == ".." || s == "."),
            "{once:?} has a dot segment"
        );
        let twice = hygiene::normalize(&once, slashes);
        assert_eq!(
            twice.as_deref(),
            Ok(once.as_ref()),
            "not idempotent: {path:?}"
        );
    }
}

/// The hygiene head checks on a request built from peer-chosen parts (one
/// the `http` crate refuses to build never reaches the proxy). A request
/// that passes has a normal path.
pub fn request_head(method: &[u8], target: &str, headers: &[(Vec<u8>, Vec<u8>)]) {
    let Ok(method) = Method::from_bytes(method) else {
        return;
    };
    let mut builder = Request::builder().method(method).uri(target);
    for (name, value) in headers {
        let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        else {
            continue;
        };
        builder = builder.header(name, value);
    }
    let Ok(req) = builder.body(crate::http::empty()) else {
        return;
    };
    let limits = crate::config::LimitSettings::default();
    if let Ok(req) = hygiene::check(req, &limits) {
        let path = req.uri().path();
        if path.starts_with('/') {
            assert!(
                hygiene::normalize(path, EncodedSlashes::Keep).is_ok(),
                "{path:?} passed but does not normalise"
            );
        }
    }
}

/// A request head read by the proxy's own HTTP/1.1 server (`http::h1`),
/// from bytes arriving all at once and one byte at a time: neither panics;
/// the head ends at the same place both ways, after an empty line; a
/// request the server serves itself is HTTP/1.1 with at most one plain
/// `Content-Length`, no `Transfer-Encoding`, no upgrade and no expectation
/// (those are hyper's), and is the same request both ways.
pub fn downstream_head(bytes: &[u8]) {
    let whole = crate::http::first_head(bytes, bytes.len());
    let trickled = crate::http::first_head(bytes, 1);
    let ((end, req), (end_trickled, req_trickled)) = match (whole, trickled) {
        (None, None) => return,
        (Some(whole), Some(trickled)) => (whole, trickled),
        (whole, _) => panic!(
            "a head found {} only",
            if whole.is_some() {
                "whole"
            } else {
                "byte by byte"
            }
        ),
    };
    assert_eq!(end, end_trickled, "the head ends elsewhere byte by byte");
    assert!(
        bytes[..end].ends_with(b"\n\n") || bytes[..end].ends_with(b"\n\r\n"),
        "a head ends with an empty line"
    );
    match (req, req_trickled) {
        (None, None) => {}
        (Some(req), Some(again)) => {
            assert_eq!(req.version(), http::Version::HTTP_11);
            assert_ne!(req.method(), Method::CONNECT);
            let lengths = req.headers().get_all(http::header::CONTENT_LENGTH);
            assert!(lengths.iter().count() <= 1, "several lengths served");
            for length in lengths {
                let digits = length.as_bytes();
                assert!(!digits.is_empty() && digits.iter().all(u8::is_ascii_digit));
            }
            for name in [http::header::UPGRADE, http::header::EXPECT] {
                assert!(
                    !req.headers().contains_key(&name),
                    "{name} served without hyper"
                );
            }
            assert_eq!(
                (req.method(), req.uri(), req.headers()),
                (again.method(), again.uri(), again.headers())
            );
        }
        _ => panic!("served one way and not the other"),
    }
}

/// An upstream's HTTP/1 response read by the proxy's client
/// (`connect::h1`), all at once and one byte at a time: neither panics;
/// read both ways, the body is the same; a body framed by
/// `Content-Length` is that long; nothing is read past the input.
pub fn upstream_response(bytes: &[u8], head_request: bool) {
    use crate::connect::h1;
    let whole = h1::read_all(bytes, head_request, bytes.len());
    let bytewise = h1::read_all(bytes, head_request, 1);
    let (Ok(whole), Ok(bytewise)) = (whole, bytewise) else {
        return;
    };
    let data = |read: &h1::Read| -> Vec<u8> {
        read.frames
            .iter()
            .filter_map(|f| f.data_ref())
            .flat_map(|d| d.iter().copied())
            .collect()
    };
    let trailers = |read: &h1::Read| -> Vec<HeaderMap> {
        read.frames
            .iter()
            .filter_map(|f| f.trailers_ref().cloned())
            .collect()
    };
    assert_eq!(
        data(&whole),
        data(&bytewise),
        "the body depends on how it arrived"
    );
    assert_eq!(
        trailers(&whole),
        trailers(&bytewise),
        "trailers depend on how they arrived"
    );
    assert_eq!(
        whole.left, bytewise.left,
        "the end depends on how it arrived"
    );
    assert_eq!(whole.response.status(), bytewise.response.status());
    assert!(
        data(&whole).len() + whole.left <= bytes.len(),
        "read past the input"
    );
    if let Some(declared) = whole.declared {
        assert_eq!(
            data(&whole).len() as u64,
            declared,
            "not the declared length"
        );
    }
}

/// The config loader on arbitrary text: errors, each with a message, never
/// a panic.
pub fn config(text: &str) {
    if let Err(errors) = mesh_api::config::load(text) {
        assert!(!errors.is_empty(), "refused with no error");
    }
    if let Err(errors) = crate::config::load_str(text) {
        assert!(!errors.is_empty(), "refused with no error");
    }
}

/// The authenticator the [`jwt`] harness checks tokens with: HS256 and
/// every asymmetric algorithm allowed, keys from [`JWT_SECRET`].
fn authenticator() -> &'static Jwt {
    static JWT: OnceLock<Jwt> = OnceLock::new();
    JWT.get_or_init(|| {
        let settings = JwtSettings {
            jwks: JwksSettings::Secret(JWT_SECRET.to_vec()),
            issuers: Vec::new(),
            audiences: Vec::new(),
            algorithms: Algorithm::ALL.to_vec(),
            leeway: Duration::ZERO,
            from: vec![CredentialSource::Bearer],
            forward_claims: vec![("sub".into(), HeaderName::from_static("x-user"))],
            consumer_claim: "sub".into(),
        };
        Jwt::new(&Arc::from("fuzz"), &settings)
    })
}

/// A bearer token through JWT parsing, verification and claim checks:
/// whether it was accepted. Never waits (the key set is a secret).
pub fn jwt(token: &str) -> bool {
    let Ok(value) = HeaderValue::from_str(&format!("Bearer {token}")) else {
        return false;
    };
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.headers.insert(http::header::AUTHORIZATION, value);
    authenticator()
        .check(&parts, None)
        .now_or_never()
        .expect("a secret key set never waits")
        .is_ok()
}

/// `header.payload` as base64url JSON, signed with [`JWT_SECRET`].
pub fn sign_hs256(header: &[u8], payload: &[u8]) -> String {
    let signed = format!("{}.{}", base64url(header), base64url(payload));
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, JWT_SECRET);
    let tag = ring::hmac::sign(&key, signed.as_bytes());
    format!("{signed}.{}", base64url(tag.as_ref()))
}

/// Unpadded base64url, as JWTs use.
pub fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

/// A JWKS document parsed, and each key asked to verify `message` against
/// a junk signature with every algorithm: never accepted.
pub fn jwks(document: &[u8], message: &[u8]) {
    let Ok(keys) = jwks::parse(document) else {
        return;
    };
    for alg in Algorithm::ALL {
        for key in keys.candidates(alg, None) {
            let _ = key.verify(alg, message, message);
            assert!(!key.verify(alg, message, &[]), "empty signature accepted");
        }
    }
}

/// The transcoding rules of one descriptor pool.
pub struct Transcoder {
    bindings: Vec<rules::Binding>,
}

impl Transcoder {
    /// The bindings of every service in `pool`.
    pub fn new(pool: &DescriptorPool) -> Result<Transcoder, Vec<String>> {
        rules::bindings(pool, &[]).map(|bindings| Transcoder { bindings })
    }

    /// An HTTP request through route matching, path and query filling and
    /// JSON → message; a message made is framed, deframed and decoded back
    /// to itself. Whether a message was made.
    pub fn request(&self, method: &str, path: &str, query: Option<&str>, body: &[u8]) -> bool {
        let Ok(method) = Method::from_bytes(method.as_bytes()) else {
            return false;
        };
        let Some((binding, captures)) = rules::find(&self.bindings, &method, path) else {
            return false;
        };
        let input = binding.rpc.input();
        let Ok(base) = json::base_object(&input, &captures, query, &binding.body) else {
            return false;
        };
        let Ok(parsed) = json::parse_body(body) else {
            return false;
        };
        let Ok(value) = json::merge_body(base, &binding.body, parsed) else {
            return false;
        };
        let Ok(message) = json::to_message(&input, value) else {
            return false;
        };
        let mut decoder = stream::FrameDecoder::default();
        decoder.push(&stream::frame(&message));
        let payload = decoder
            .next_message()
            .expect("our own frame decodes")
            .expect("our own frame is whole");
        // Compared as encoded: a field set to its proto3 default (`""`)
        // is not encoded, so the decoded message lacks it yet means the same.
        let back = DynamicMessage::decode(input, payload.clone()).expect("our own message decodes");
        assert_eq!(
            back.encode_to_vec(),
            payload,
            "message changed in a frame round trip"
        );
        assert!(decoder.is_empty());
        true
    }
}

/// A path template parsed and matched against `path`: captures name
/// fields.
pub fn path_template(template: &str, path: &str) {
    let Ok(template) = rules::PathTemplate::parse(template) else {
        return;
    };
    if let Some(captures) = template.matches(path) {
        assert!(captures.iter().all(|(field, _)| !field.is_empty()));
    }
    let _ = rules::percent_decode(path, true);
    let _ = rules::percent_decode(path, false);
}

/// gRPC frames decoded from a byte stream pushed in pieces of `split`
/// bytes: messages never claim more bytes than arrived.
pub fn grpc_frames(data: &[u8], split: usize) -> Vec<Bytes> {
    let mut decoder = stream::FrameDecoder::default();
    let mut messages = Vec::new();
    let mut framed = 0;
    for piece in data.chunks(split.max(1)) {
        decoder.push(piece);
        loop {
            let whole = decoder.has_message();
            match decoder.next_message() {
                Ok(Some(message)) => {
                    assert!(whole, "a message came out of a partial frame");
                    framed += 5 + message.len();
                    messages.push(message);
                }
                Ok(None) => {
                    assert!(!whole, "a whole frame was not given out");
                    break;
                }
                Err(_) => return messages,
            }
        }
    }
    assert!(
        framed <= data.len(),
        "decoded {framed} of {} bytes",
        data.len()
    );
    messages
}

/// Uncompressed gRPC frames around each payload.
pub fn grpc_frame_all(payloads: &[Vec<u8>]) -> Vec<u8> {
    let mut out = BytesMut::new();
    for payload in payloads {
        out.put_u8(0);
        out.put_u32(u32::try_from(payload.len()).expect("test payloads are small"));
        out.put_slice(payload);
    }
    out.to_vec()
}

/// gRPC-Web text decoding of `text` pushed in pieces of `split` bytes:
/// the output is never longer than three quarters of the input.
pub fn grpc_web_base64(text: &[u8], split: usize) -> Option<Vec<u8>> {
    let mut decoder = grpc_web::Base64Decoder::default();
    let mut out = Vec::new();
    for piece in text.chunks(split.max(1)) {
        out.extend_from_slice(&decoder.push(piece).ok()?);
    }
    out.extend_from_slice(&decoder.finish().ok()?);
    assert!(
        out.len() <= text.len() / 4 * 3 + 2,
        "output longer than input"
    );
    Some(out)
}

/// `payloads`, each base64-encoded as a `-text` response chunk is.
pub fn grpc_web_encode(payloads: &[Vec<u8>]) -> Vec<u8> {
    payloads
        .iter()
        .flat_map(|p| grpc_web::encode(p).to_vec())
        .collect()
}

/// XML → JSON under the default and the other conventions; a document
/// read is written back to XML without a panic.
pub fn xml(document: &[u8]) {
    let keep = XmlSettings {
        arrays: ["item".to_string(), "a".to_string()].into_iter().collect(),
        namespaces: mesh_api::config::Namespaces::Keep,
        ..XmlSettings::default()
    };
    for settings in [XmlSettings::default(), keep] {
        if let Ok(json) = xml::to_json(document, &settings) {
            let _ = xml::from_json(&json, &settings);
        }
    }
}

/// `Accept-Encoding` negotiation: the coding chosen is one offered.
pub fn accept_encoding(value: &[u8]) {
    let Ok(value) = HeaderValue::from_bytes(value) else {
        return;
    };
    let mut headers = HeaderMap::new();
    headers.insert(http::header::ACCEPT_ENCODING, value);
    let all = [Encoding::Br, Encoding::Zstd, Encoding::Gzip];
    for offered in [
        &all[..],
        &all[2..],
        &[Encoding::Zstd, Encoding::Br][..],
        &[],
    ] {
        if let Some(chosen) = crate::edge::compress::negotiate::choose(&headers, offered) {
            assert!(offered.contains(&chosen), "{chosen:?} was not offered");
        }
    }
}

/// Cache directives, dates, ages and `Vary` read from `value` in each
/// header the cache reads.
pub fn cache_headers(value: &[u8]) {
    let Ok(value) = HeaderValue::from_bytes(value) else {
        return;
    };
    let mut headers = HeaderMap::new();
    for name in [
        http::header::CACHE_CONTROL,
        http::header::PRAGMA,
        http::header::AGE,
        http::header::EXPIRES,
        http::header::DATE,
        http::header::LAST_MODIFIED,
        http::header::ETAG,
        http::header::IF_NONE_MATCH,
        http::header::IF_MODIFIED_SINCE,
        http::header::VARY,
    ] {
        headers.insert(name, value.clone());
    }
    let cc = policy::CacheControl::parse(&headers);
    let _ = policy::CacheControl::of_request(&headers);
    let _ = policy::freshness_lifetime(&cc, &headers, Duration::from_secs(60));
    let _ = policy::initial_age(&headers);
    let _ = policy::storable(StatusCode::OK, &headers, &cc, &[StatusCode::OK]);
    let _ = policy::has_validator(&headers);
    if let Some(names) = policy::vary_names(&headers) {
        for name in names {
            let _ = policy::vary_value(&headers, &name);
        }
    }
    let _ = policy::not_modified(&headers, &headers);
    let _ = policy::parse_http_date(&value);
}

/// An aggregate part's target with placeholders: one that parses renders
/// when every placeholder has a value, and not when none has.
pub fn aggregate_target(text: &str) {
    let Ok(template) = TargetTemplate::parse(text) else {
        return;
    };
    assert!(template.render(|_| Some("v".into())).is_some());
    if template.sources().next().is_some() {
        assert!(template.render(|_| None).is_none());
    }
}

/// The WebSocket bridge the [`ws_bridge_message`] harness routes with:
/// `$request.body.op.name` selects `send` or `join`, else `$default`.
fn bridge() -> &'static crate::translate::ws_bridge::WsBridgeSettings {
    static BRIDGE: OnceLock<Arc<crate::translate::ws_bridge::WsBridgeSettings>> = OnceLock::new();
    BRIDGE.get_or_init(|| {
        let yaml = "service: edge\nmode: edge\nedge:\n  listeners: [{ listen: 127.0.0.1:0 }]\n  upstreams:\n    web: { discovery: { endpoints: [127.0.0.1:7001] } }\n  routes:\n    - match: { path: /ws }\n      websocket_bridge:\n        route_selection: $request.body.op.name\n        routes:\n          send: { to: web, path: /send, reply: true }\n          join: { to: web, path: /join }\n          $default: { to: web, path: /default }\n";
        let settings = crate::config::load_str(yaml).expect("the bridge harness config loads");
        let edge = settings.edge.expect("edge mode");
        match &edge.routes[0].action {
            crate::edge::action::RouteAction::WebsocketBridge(bridge) => bridge.clone(),
            _ => unreachable!("the harness route is a bridge"),
        }
    })
}

/// A client message through the bridge's route selection: always a route;
/// the named one exactly when the body is JSON whose `op.name` is a string
/// naming it, else `$default`.
pub fn ws_bridge_message(body: &[u8]) {
    let route = bridge()
        .select(body)
        .expect("a $default route catches the rest");
    let named = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|json| json.get("op")?.get("name")?.as_str().map(str::to_string))
        .filter(|name| name == "send" || name == "join");
    match named {
        Some(name) => assert_eq!(&*route.key, name.as_str()),
        None => assert_eq!(&*route.key, "$default"),
    }
}

/// A RESP reply parsed from `buf`: what it used lies within `buf` and
/// parses alone to the same value.
pub fn redis_reply(buf: &[u8]) {
    let parsed = redis::parse(buf);
    if let Ok(Some((value, used))) = &parsed {
        assert!(*used <= buf.len(), "used {used} of {} bytes", buf.len());
        match redis::parse(&buf[..*used]) {
            Ok(Some((again, again_used))) => {
                assert_eq!(&again, value);
                assert_eq!(again_used, *used);
            }
            other => panic!("the value's own bytes parsed as {other:?}"),
        }
    }
}

/// A command encoded as RESP parses back to its arguments.
pub fn redis_round_trip(args: &[Vec<u8>]) {
    let borrowed: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
    let encoded = redis::encode(&borrowed);
    let expected = redis::Value::Array(Some(
        args.iter()
            .map(|a| redis::Value::Bulk(Some(a.clone())))
            .collect(),
    ));
    match redis::parse(&encoded) {
        Ok(Some((value, used))) => {
            assert_eq!(value, expected);
            assert_eq!(used, encoded.len());
        }
        other => panic!("our own command parsed as {other:?}"),
    }
}
