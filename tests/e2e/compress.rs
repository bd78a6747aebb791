//! Edge compression end to end: an edge with `compress:` routes in front of
//! a Python upstream (`tests/py/compress_upstream.py`). Responses come back
//! gzip, brotli or zstd as the client's `Accept-Encoding` (q-values) and the
//! route's preference say, decoding to the upstream's bytes (curl
//! `--compressed` for gzip; a Python client decoding br and zstd itself);
//! small, already encoded, image and `no-transform` responses pass as they
//! are; a slow stream is compressed frame by frame, so its first chunk is
//! readable long before the upstream ends; request bodies are decoded
//! before forwarding, with a gzip bomb stopped at 413, an unknown coding
//! refused with 415 and corrupt data with 400.

use std::net::SocketAddr;

use mesh_tests::{curl, py_service, python, Proc, Sidecar};
use serde_json::Value;

use crate::curl_reply;

/// Starts the upstream; returns it and its address.
fn upstream() -> (Proc, SocketAddr) {
    py_service("compress_upstream.py", &[])
}

/// An edge with a compress route per case; returns it and its base URL.
fn edge(app: SocketAddr) -> (Sidecar, String) {
    let sidecar = Sidecar::start(&format!(
        "service: edge
mode: edge
admin: {{ listen: 127.0.0.1:0 }}
edge:
  listeners:
    - listen: 127.0.0.1:0
  routes:
    - name: plain
      match: {{ path_prefix: /plain }}
      to: app
    - name: gzip-only
      match: {{ path_prefix: /gzip-only }}
      to: app
      compress: [gzip]
    - name: upload
      match: {{ path_prefix: /upload }}
      to: app
      max_body: 1MiB
      compress: {{ encodings: [zstd, gzip], decompress_requests: true }}
    - name: upload-unbounded-route
      match: {{ path_prefix: /decoded }}
      to: app
      compress: {{ decompress_requests: true, max_decoded: 2MiB }}
    - name: all
      match: {{ path_prefix: / }}
      to: app
      compress: [br, zstd, gzip]
  upstreams:
    app:
      discovery: {{ endpoints: [{app}] }}
"
    ));
    let base = format!("http://{}", sidecar.listener("edge", None));
    (sidecar, base)
}

/// A GET through the Python client, which decodes the body itself.
fn get(url: &str, accept: &str) -> Value {
    python("compress_client.py", &["get", url, accept])
}

#[test]
fn responses_are_compressed_as_the_client_accepts_and_decode_to_the_original() {
    let (_app, app) = upstream();
    let (_edge, base) = edge(app);
    let large = format!("{base}/large.json");

    // Every coding the route offers decodes to the upstream's bytes.
    for encoding in ["br", "zstd", "gzip"] {
        let reply = get(&large, encoding);
        assert_eq!(reply["status"], 200, "{reply}");
        assert_eq!(reply["headers"]["content-encoding"], encoding, "{reply}");
        assert_eq!(reply["same_as"], "large", "{encoding}: {reply}");
        assert!(
            reply["raw_length"].as_u64().unwrap() < reply["length"].as_u64().unwrap() / 4,
            "{encoding} did not shrink the JSON: {reply}"
        );
        assert_eq!(reply["headers"]["vary"], "Accept-Encoding", "{reply}");
        assert!(reply["headers"].get("content-length").is_none(), "{reply}");
        assert_eq!(reply["headers"]["etag"], "W/\"large-v1\"", "{reply}");
    }

    // curl's own decoder agrees, for gzip.
    let out = curl(&["--compressed", "-H", "Accept-Encoding: gzip", &large]);
    assert!(out.status.success());
    let body: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(body["items"].as_array().unwrap().len(), 1200);

    // Q-values decide; equal ones go to the route's order (br first here).
    for (accept, expected) in [
        ("gzip;q=0, br", Some("br")),
        ("gzip, deflate, br, zstd", Some("br")),
        ("br;q=0.2, zstd;q=0.8, gzip;q=0.5", Some("zstd")),
        ("*;q=0.1, gzip", Some("gzip")),
        ("identity", None),
        ("br;q=0, zstd;q=0, gzip;q=0", None),
        ("deflate", None),
    ] {
        let reply = get(&large, accept);
        assert_eq!(
            reply["headers"]["content-encoding"].as_str(),
            expected,
            "Accept-Encoding: {accept}: {reply}"
        );
        assert_eq!(reply["same_as"], "large", "{accept}: {reply}");
        assert_eq!(reply["headers"]["vary"], "Accept-Encoding", "{reply}");
    }

    // A route offering gzip only answers gzip whatever the client prefers.
    let reply = get(
        &format!("{base}/gzip-only/large.json"),
        "br, zstd, gzip;q=0.1",
    );
    assert_eq!(reply["headers"]["content-encoding"], "gzip", "{reply}");
    assert_eq!(reply["same_as"], "large");
    let reply = get(&format!("{base}/gzip-only/large.json"), "br, zstd");
    assert!(
        reply["headers"].get("content-encoding").is_none(),
        "{reply}"
    );

    // A route without `compress:` never compresses.
    let reply = get(&format!("{base}/plain/large.json"), "gzip, br, zstd");
    assert!(
        reply["headers"].get("content-encoding").is_none(),
        "{reply}"
    );
    assert!(reply["headers"].get("vary").is_none(), "{reply}");
    assert_eq!(reply["headers"]["etag"], "\"large-v1\"", "{reply}");
}

#[test]
fn small_encoded_image_and_no_transform_responses_pass_as_they_are() {
    let (_app, app) = upstream();
    let (_edge, base) = edge(app);
    let accept = "gzip, br, zstd";

    let small = get(&format!("{base}/small"), accept);
    assert!(
        small["headers"].get("content-encoding").is_none(),
        "{small}"
    );
    assert_eq!(small["headers"]["content-length"], "20", "{small}");
    assert_eq!(small["headers"]["vary"], "Accept-Encoding", "{small}");
    assert_eq!(small["same_as"], "small");

    // Already gzip: the client gets the upstream's gzip, not a second coding.
    let encoded = get(&format!("{base}/encoded"), accept);
    assert_eq!(encoded["headers"]["content-encoding"], "gzip", "{encoded}");
    let raw = curl(&["-H", "Accept-Encoding: br", &format!("{base}/encoded")]);
    assert_eq!(&raw.stdout[..2], b"\x1f\x8b", "gzip magic, untouched");

    let png = get(&format!("{base}/image.png"), accept);
    assert!(png["headers"].get("content-encoding").is_none(), "{png}");
    assert!(png["headers"].get("vary").is_none(), "{png}");
    assert_eq!(png["same_as"], "png");
    assert_eq!(png["raw_length"], png["length"]);

    let kept = get(&format!("{base}/no-transform"), accept);
    assert!(kept["headers"].get("content-encoding").is_none(), "{kept}");
    assert_eq!(kept["same_as"], "large");

    // HEAD: the headers only, never a Content-Encoding for a body not sent.
    let head = curl_reply(&[
        "-I",
        "-H",
        "Accept-Encoding: gzip",
        &format!("{base}/large.json"),
    ]);
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-encoding"), None);
    assert_eq!(head.header("vary"), Some("Accept-Encoding"));
}

#[test]
fn a_slow_stream_is_compressed_as_it_arrives() {
    let (_app, app) = upstream();
    let (_edge, base) = edge(app);
    // 6 chunks 200 ms apart: the upstream takes a second to finish.
    let url = format!("{base}/stream?n=6");
    for encoding in ["gzip", "br", "zstd"] {
        let reply = python("compress_client.py", &["stream", &url, encoding, "6"]);
        assert_eq!(reply["headers"]["content-encoding"], encoding, "{reply}");
        assert_eq!(reply["text_ok"], true, "{encoding}: {reply}");
        let first = reply["first_at"].as_f64().expect("first chunk decoded");
        let end = reply["end_at"].as_f64().unwrap();
        // The first chunk was readable while four more were still to come.
        assert!(
            end - first > 0.6,
            "{encoding}: first chunk decoded at {first:.2}s, stream ended at {end:.2}s: {reply}"
        );
    }
}

#[test]
fn an_upstream_cut_mid_stream_is_an_error_not_a_clean_end() {
    let (_app, app) = upstream();
    let (_edge, base) = edge(app);
    for encoding in ["gzip", "br", "zstd"] {
        let out = curl(&[
            "--compressed",
            "-H",
            &format!("Accept-Encoding: {encoding}"),
            &format!("{base}/broken"),
        ]);
        // The first chunk got through, decoded; then curl saw the cut.
        assert!(
            String::from_utf8_lossy(&out.stdout).starts_with("chunk 0: "),
            "{encoding}: {out:?}"
        );
        assert!(!out.status.success(), "{encoding}: a clean end: {out:?}");
    }
}

#[test]
fn request_bodies_are_decoded_before_forwarding() {
    let (_app, app) = upstream();
    let (_edge, base) = edge(app);
    let post = |path: &str, encoding: &str, kind: &str| {
        python(
            "compress_client.py",
            &["post", &format!("{base}{path}"), encoding, kind],
        )
    };

    for encoding in ["gzip", "br", "zstd"] {
        let reply = post("/upload/echo", encoding, "json");
        assert_eq!(reply["status"], 200, "{encoding}: {reply}");
        let answer = &reply["answer"];
        assert_eq!(
            answer["sha256"], reply["plain_sha256"],
            "{encoding}: {reply}"
        );
        assert_eq!(answer["length"], reply["plain_length"], "{reply}");
        assert!(answer["content_encoding"].is_null(), "{reply}");
        assert!(answer["content_length"].is_null(), "{reply}");
    }
    // Not encoded: forwarded as it is.
    let reply = post("/upload/echo", "none", "json");
    assert_eq!(reply["answer"]["sha256"], reply["plain_sha256"], "{reply}");

    // A gzip bomb stops at the route's max_body (1 MiB), or at max_decoded.
    for path in ["/upload/echo", "/decoded/echo"] {
        let reply = post(path, "gzip", "bomb");
        assert!(reply["sent_length"].as_u64().unwrap() < 1 << 20, "{reply}");
        assert_eq!(reply["status"], 413, "{path}: {reply}");
        assert_eq!(
            reply["headers"]["x-mesh-error"], "body_too_large",
            "{reply}"
        );
    }

    let reply = post("/upload/echo", "gzip", "corrupt");
    assert_eq!(reply["status"], 400, "{reply}");
    assert_eq!(reply["headers"]["x-mesh-error"], "bad_request", "{reply}");

    let reply = post("/upload/echo", "deflate", "json");
    assert_eq!(reply["status"], 415, "{reply}");
    assert_eq!(
        reply["headers"]["x-mesh-error"], "unsupported_encoding",
        "{reply}"
    );
}

/// `sidecar check` on a config with `compress` set to `compress`: its
/// exit code and what it printed.
fn check(compress: &str) -> (Option<i32>, String) {
    mesh_tests::sidecar_check_yaml(&format!(
        "service: edge
mode: edge
edge:
  listeners: [{{ listen: 127.0.0.1:0 }}]
  routes:
    - match: {{ path_prefix: / }}
      to: app
      compress: {compress}
  upstreams:
    app: {{ discovery: {{ endpoints: [127.0.0.1:9] }} }}
"
    ))
}

#[test]
fn bad_compress_settings_are_named_by_path() {
    let (code, stderr) = check("[gzip, lz4]");
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("edge.routes[0].compress[1] (line 8): unknown variant `lz4`"),
        "{stderr}"
    );
    let (code, stderr) = check("{ encodings: [br, br], min_size: lots, level: { br: 12 } }");
    assert_eq!(code, Some(1), "{stderr}");
    for expected in [
        "edge.routes[0].compress.encodings[1] (line 8): `br` is listed twice",
        "edge.routes[0].compress.min_size (line 8): invalid size \"lots\"",
        "edge.routes[0].compress.level.br (line 8): must be between 0 and 11, got 12",
    ] {
        assert!(stderr.contains(expected), "{expected} not in {stderr}");
    }
    let (code, stderr) = check("{ encodings: [gzip], decompress_requests: true }");
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn decoded_request_bodies_are_held_to_the_global_body_limit() {
    let (_app, app) = upstream();
    let edge = Sidecar::start(&format!(
        "service: edge
mode: edge
admin: {{ listen: 127.0.0.1:0 }}
limits: {{ max_body: 1MiB }}
edge:
  listeners:
    - listen: 127.0.0.1:0
  routes:
    - match: {{ path_prefix: / }}
      to: app
      compress: {{ decompress_requests: true }}
  upstreams:
    app:
      discovery: {{ endpoints: [{app}] }}
"
    ));
    let url = format!("http://{}/echo", edge.listener("edge", None));
    let reply = python("compress_client.py", &["post", &url, "gzip", "json"]);
    assert_eq!(reply["status"], 200, "{reply}");
    // 4 KiB on the wire, 4 MiB decoded: under the route's own bound
    // (max_decoded, 10 MiB), over the global 1 MiB.
    let reply = python("compress_client.py", &["post", &url, "gzip", "zeros-4mib"]);
    assert_eq!(reply["status"], 413, "{reply}");
    assert_eq!(
        reply["headers"]["x-mesh-error"], "body_too_large",
        "{reply}"
    );
}
