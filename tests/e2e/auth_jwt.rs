//! Edge authentication: JWTs forged by Python (PyJWT, cryptography) against
//! keys in a JWKS file, and API keys made by `mesh-ctl apikey create`, on an
//! edge in front of the REST demo app (`/headers` echoes what it got).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use mesh_tests::{bin, python, sidecar_check_yaml, wait_until, Sidecar};
use serde_json::Value;

use crate::edge_tls::edge_addrs;
use crate::{curl_reply, rest_app, Reply};

fn get(addr: SocketAddr, path: &str, headers: &[String]) -> Reply {
    let url = format!("http://{addr}{path}");
    let mut args = vec!["-i", url.as_str()];
    for header in headers {
        args.extend(["-H", header.as_str()]);
    }
    curl_reply(&args)
}

fn bearer(token: &str) -> Vec<String> {
    vec![format!("Authorization: Bearer {token}")]
}

/// An edge with a JWT route (`/headers`, scope `read` required), an
/// API-key route (`/keyed` → `/headers`) and an open route; `keys` is the
/// YAML list of API key entries.
fn edge_config(app: SocketAddr, dir: &Path, keys: &str) -> String {
    let (jwks, log) = (dir.join("jwks.json"), dir.join("access.log"));
    format!(
        "service: edge
mode: edge
admin: {{ listen: 127.0.0.1:0 }}
reload: {{ interval: 100ms }}
drain: {{ delay: 100ms, deadline: 10s }}
log: {{ access: {log} }}
edge:
  listeners:
    - listen: 127.0.0.1:0
  auth:
    jwt:
      users:
        jwks: {{ file: {jwks} }}
        issuers: [https://issuer.test]
        audiences: [mesh-api]
        algorithms: [RS256, ES256, EdDSA]
        from: [header:authorization, cookie:session, query:access_token]
        forward_claims: {{ sub: x-user, scope: x-scopes }}
    api_keys:
      partners:
        from: header:x-api-key
        keys:
{keys}
      by_query:
        from: query:api_key
        keys:
{keys}
  routes:
    - name: api
      match: {{ path_prefix: /headers }}
      auth: [users]
      require: {{ scopes: [read] }}
      to: app
    - name: keyed
      match: {{ path_prefix: /keyed }}
      auth: [partners, by_query]
      rewrite: {{ prefix: /headers }}
      to: app
    - name: open
      match: {{ path_prefix: / }}
      to: app
  upstreams:
    app:
      discovery: {{ endpoints: [{app}] }}
",
        log = log.display(),
        jwks = jwks.display(),
    )
}

/// `mesh-ctl apikey create`: the key and the YAML entry it printed.
fn create_key(consumer: &str) -> (String, String) {
    let output = Command::new(bin("mesh-ctl"))
        .args([
            "apikey",
            "create",
            "--consumer",
            consumer,
            "--name",
            "partners",
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let key = stdout
        .lines()
        .find_map(|l| l.strip_prefix("key: "))
        .unwrap_or_else(|| panic!("no key in {stdout}"))
        .to_string();
    let entry = stdout
        .lines()
        .find(|l| l.starts_with("- {"))
        .unwrap_or_else(|| panic!("no entry in {stdout}"))
        .to_string();
    (key, entry)
}

fn forge(dir: &Path) -> HashMap<String, String> {
    serde_json::from_value(mesh_tests::jwt_tokens(dir)).unwrap()
}

#[test]
fn jwt_and_api_keys_at_the_edge() {
    let dir = mesh_tests::jwt_keys();
    let path = dir.path().to_str().unwrap();
    let (app_proc, app) = rest_app();
    let (key, entry) = create_key("acme");
    let edge = Sidecar::start(&edge_config(app, dir.path(), &format!("          {entry}")));
    let addr = edge_addrs(&edge)[0];
    let tokens = forge(dir.path());

    // Valid RS256, ES256 and EdDSA tokens pass; claims arrive as headers,
    // and a forged copy of a forwarded header is replaced.
    for (name, sub) in [("rs256", "alice"), ("es256", "bob"), ("eddsa", "carol")] {
        let mut headers = bearer(&tokens[name]);
        headers.push("x-user: mallory".into());
        let answer = get(addr, "/headers", &headers);
        assert_eq!(answer.status, 200, "{name}: {}", answer.body);
        let seen = answer.json();
        assert_eq!(seen["x-user"], sub, "{name}: {seen}");
        assert_eq!(seen["x-scopes"], "read write");
    }

    // Forged and broken tokens: 401 with a challenge.
    for name in [
        "alg_none",
        "hs_confusion",
        "expired",
        "not_yet_valid",
        "wrong_iss",
        "wrong_aud",
        "unknown_kid",
        "tampered",
        "garbage",
        "garbage_b64",
    ] {
        let answer = get(addr, "/headers", &bearer(&tokens[name]));
        assert_eq!(answer.status, 401, "{name}: {}", answer.body);
        assert_eq!(
            answer.header("x-mesh-error"),
            Some("unauthenticated"),
            "{name}"
        );
        let challenge = answer.header("www-authenticate").unwrap_or("");
        assert!(
            challenge.starts_with("Bearer realm="),
            "{name}: {challenge}"
        );
        assert!(
            challenge.contains("error=\"invalid_token\""),
            "{name}: {challenge}"
        );
    }
    let answer = get(addr, "/headers", &[]);
    assert_eq!(answer.status, 401);
    assert!(!answer
        .header("www-authenticate")
        .unwrap_or("")
        .contains("invalid_token"));

    // Authenticated without the scope: 403.
    let answer = get(addr, "/headers", &bearer(&tokens["no_scope"]));
    assert_eq!(answer.status, 403, "{}", answer.body);
    assert_eq!(answer.header("x-mesh-error"), Some("forbidden"));

    // The token from a cookie and from a query parameter.
    let cookie = vec![format!("Cookie: theme=dark; session={}", tokens["rs256"])];
    assert_eq!(get(addr, "/headers", &cookie).status, 200);
    let answer = get(
        addr,
        &format!("/headers?access_token={}&x=1", tokens["rs256"]),
        &[],
    );
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        answer.json()["_uri"],
        "/headers?x=1",
        "the token stays at the edge"
    );

    // Routes without `auth` are untouched.
    assert_eq!(get(addr, "/status/200", &[]).status, 200);

    // API keys: the consumer is forwarded (never the caller's copy), a
    // query key is removed; a wrong key is refused.
    let headers = vec![format!("x-api-key: {key}"), "x-consumer: root".into()];
    let answer = get(addr, "/keyed", &headers);
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.json()["x-consumer"], "acme");
    assert!(answer.json().get("x-api-key").is_some());
    let answer = get(addr, &format!("/keyed?api_key={key}&y=2"), &[]);
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.json()["_uri"], "/headers?y=2");
    let answer = get(addr, "/keyed", &["x-api-key: not-the-key".into()]);
    assert_eq!(answer.status, 401);
    assert_eq!(answer.header("x-mesh-error"), Some("unauthenticated"));
    assert!(answer
        .header("www-authenticate")
        .unwrap_or("")
        .starts_with("ApiKey realm="));

    // The consumer is in the access log.
    let log = dir.path().join("access.log");
    wait_until(
        Duration::from_secs(10),
        "the consumer in the access log",
        || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .any(|l| l["consumer"] == "acme")
        },
    );

    // A key rotated in the JWKS file is picked up without a restart.
    assert_eq!(python("jwt_tokens.py", &["rotate", path])["ok"], true);
    let rotated = forge(dir.path());
    wait_until(Duration::from_secs(10), "the rotated key", || {
        get(addr, "/headers", &bearer(&rotated["rotated"])).status == 200
    });
    assert_eq!(get(addr, "/headers", &bearer(&tokens["rs256"])).status, 401);

    // Denials are counted by reason.
    let metrics = edge.metrics();
    for reason in [
        "missing",
        "algorithm",
        "bad_signature",
        "expired",
        "not_yet_valid",
        "wrong_issuer",
        "wrong_audience",
        "unknown_kid",
        "malformed",
        "forbidden_scope",
        "invalid_key",
    ] {
        let needle = format!("policy=\"auth\",reason=\"{reason}\"");
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("mesh_policy_denials_total") && l.contains(&needle)),
            "no denial counted for {reason}"
        );
    }
    drop(app_proc);
}

#[test]
fn auth_config_errors_name_their_field() {
    let (code, text) = sidecar_check_yaml("service: edge\nmode: edge\nadmin: { listen: 127.0.0.1:0 }\nedge:\n  listeners:\n    - listen: 127.0.0.1:0\n  auth:\n    jwt:\n      users:\n        jwks: { file: missing.json }\n        algorithms: [RS256, none]\n    api_keys:\n      partners:\n        keys:\n          - { consumer: acme, sha256: nothex }\n  routes:\n    - match: { path_prefix: / }\n      auth: [users]\n      to: app\n  upstreams:\n    app:\n      discovery: { endpoints: [127.0.0.1:1] }\n");
    assert!(code != Some(0), "{text}");
    assert!(
        text.contains("edge.auth.jwt.users.algorithms[1]") && text.contains("\"none\""),
        "{text}"
    );
    assert!(text.contains("edge.auth.jwt.users.jwks.file"), "{text}");
    assert!(
        text.contains("edge.auth.api_keys.partners.keys[0]"),
        "{text}"
    );
}

#[test]
fn jwks_from_a_url_is_fetched_again_for_an_unknown_kid() {
    let dir = mesh_tests::jwt_keys();
    let path = dir.path().to_str().unwrap();
    let port = crate::closed_port();
    let server = Command::new("python3")
        .args([
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            "--directory",
            path,
        ])
        .arg(port.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let _server = mesh_tests::Proc::adopt("jwks-server", server);
    wait_until(Duration::from_secs(10), "the JWKS server", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let (_app_proc, app) = rest_app();
    let yaml = format!(
        "service: edge\nmode: edge\nadmin: {{ listen: 127.0.0.1:0 }}\ndrain: {{ delay: 100ms, deadline: 10s }}\nedge:\n  listeners:\n    - listen: 127.0.0.1:0\n  auth:\n    jwt:\n      users:\n        jwks: {{ url: http://127.0.0.1:{port}/jwks.json, refresh: 1h, min_refresh: 1s }}\n        forward_claims: {{ sub: x-user }}\n  routes:\n    - match: {{ path_prefix: / }}\n      auth: [users]\n      to: app\n  upstreams:\n    app:\n      discovery: {{ endpoints: [{app}] }}\n"
    );
    let edge = Sidecar::start(&yaml);
    let addr = edge_addrs(&edge)[0];
    let tokens = forge(dir.path());
    wait_until(Duration::from_secs(10), "keys fetched from the URL", || {
        get(addr, "/headers", &bearer(&tokens["rs256"])).status == 200
    });
    assert_eq!(
        get(addr, "/headers", &bearer(&tokens["es256"])).json()["x-user"],
        "bob"
    );
    assert_eq!(
        get(addr, "/headers", &bearer(&tokens["tampered"])).status,
        401
    );
    // A new key at the URL: the unknown kid makes the edge fetch again
    // (at most once per `min_refresh`), long before `refresh`.
    assert_eq!(python("jwt_tokens.py", &["rotate", path])["ok"], true);
    let rotated = forge(dir.path());
    wait_until(
        Duration::from_secs(10),
        "the rotated key from the URL",
        || get(addr, "/headers", &bearer(&rotated["rotated"])).status == 200,
    );
}
