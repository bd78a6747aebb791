//! Mutual TLS between proxies: certificates from `mesh-ctl ca`, real
//! clients (curl, openssl s_client, Python grpcio) against strict inbound
//! ports, identity checks both ways, authz, and rotation without restart.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mesh_tests::{bin, curl, json, python, service, wait_until, Sidecar};

/// A CA and workload certificates issued by `mesh-ctl`.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki { dir };
        pki.mesh_ctl(
            &["ca", "init", "--trust-domain", "mesh.local", "--out"],
            &pki.path("ca"),
        );
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn mesh_ctl(&self, args: &[&str], out: &Path) {
        let output = Command::new(bin("mesh-ctl"))
            .args(args)
            .arg(out)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "mesh-ctl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Issues `service`'s certificate into `<dir>/<dir_name>`.
    fn issue(&self, service: &str, dir_name: &str) -> PathBuf {
        let ca = self.path("ca");
        let out = self.path(dir_name);
        let _ = std::fs::remove_dir_all(&out);
        self.mesh_ctl(
            &[
                "ca",
                "issue",
                "--service",
                service,
                "--ca",
                ca.to_str().unwrap(),
                "--out",
            ],
            &out,
        );
        out
    }

    /// The `identity:` section for `dir`.
    fn identity(&self, dir: &Path, mode: &str) -> String {
        format!(
            "identity:\n  trust_domain: mesh.local\n  cert: {}/cert.pem\n  key: {}/key.pem\n  bundle: {}/bundle.pem\n  mode: {mode}\n",
            dir.display(),
            dir.display(),
            self.path("ca").display()
        )
    }
}

/// `orders` sidecar (strict mTLS inbound in front of `app`) and a `web`
/// sidecar whose outbound port `orders` reaches it over mTLS.
fn mesh(
    pki: &Pki,
    app: std::net::SocketAddr,
    inbound_extra: &str,
    upstream_extra: &str,
) -> (Sidecar, Sidecar, String) {
    let orders_certs = pki.issue("orders", "orders");
    let web_certs = pki.issue("web", "web");
    let orders = Sidecar::start(&format!(
        "service: orders\nadmin: {{ listen: 127.0.0.1:0 }}\n{}inbound:\n  listen: 127.0.0.1:0\n  app: {app}\n{inbound_extra}",
        pki.identity(&orders_certs, "strict")
    ));
    let inbound = orders.listener("inbound", None);
    let web = Sidecar::start(&format!(
        "service: web\nadmin: {{ listen: 127.0.0.1:0 }}\n{}outbound:\n  upstreams:\n    orders:\n      listen: 127.0.0.1:0\n      discovery: {{ endpoints: [{inbound}] }}\n{upstream_extra}",
        pki.identity(&web_certs, "strict")
    ));
    let outbound = web.listener("outbound", Some("orders")).to_string();
    (orders, web, outbound)
}

#[test]
fn app_sees_the_verified_caller_and_never_a_forged_one() {
    let pki = Pki::new();
    let (_app, app) = service("demo-rest", &[]);
    let (orders, _web, outbound) = mesh(&pki, app, "", "");
    let seen = json(&curl(&[
        "-H",
        "x-mesh-peer-identity: spiffe://mesh.local/svc/admin",
        &format!("http://{outbound}/headers"),
    ]));
    assert_eq!(
        seen["x-mesh-peer-identity"], "spiffe://mesh.local/svc/web",
        "{seen}"
    );
    let h2 = json(&curl(&[
        "--http2-prior-knowledge",
        &format!("http://{outbound}/headers"),
    ]));
    assert_eq!(h2["_version"], "HTTP/2.0", "h2 inside mTLS, chosen by ALPN");
    let certs = orders.admin_json("/certs");
    assert_eq!(certs["identity"], "spiffe://mesh.local/svc/orders");
    assert!(
        certs["expires_in_seconds"].as_i64().unwrap() > 3600,
        "{certs}"
    );
    assert!(orders.metric("mesh_identity_cert_expiry_seconds") > 3600.0);
}

#[test]
fn grpc_all_four_call_kinds_through_two_mtls_sidecars() {
    let pki = Pki::new();
    let (_app, app) = service("demo-grpc", &[]);
    let (_orders, _web, outbound) = mesh(&pki, app, "  protocol: grpc\n", "      protocol: grpc\n");
    assert_eq!(
        python("grpc_orders.py", &[&outbound, "unary", "3"])["order"]["id"],
        "3"
    );
    let missing = python("grpc_orders.py", &[&outbound, "unary", "42"]);
    assert_eq!(missing["code"], "NOT_FOUND", "{missing}");
    assert_eq!(
        python("grpc_orders.py", &[&outbound, "server", "3", "50"])["count"],
        3
    );
    assert_eq!(
        python("grpc_orders.py", &[&outbound, "client", "4"])["count"],
        4
    );
    let chat = python("grpc_orders.py", &[&outbound, "bidi", "x", "y"]);
    assert_eq!(chat["replies"], serde_json::json!(["echo: x", "echo: y"]));
}

/// `openssl s_client` to `addr` sending one HTTP request; returns all it printed.
fn s_client(addr: &str, args: &[String]) -> String {
    let mut child = Command::new("openssl")
        .args(["s_client", "-connect", addr, "-quiet"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        let _ =
            stdin.write_all(b"GET /healthz HTTP/1.1\r\nHost: orders\r\nConnection: close\r\n\r\n");
    }
    let out = child.wait_with_output().unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// s_client arguments presenting the certificate in `dir` (with its chain)
/// and trusting `ca`, plus `extra`.
fn present(dir: &Path, ca: &Path, extra: &[&str]) -> Vec<String> {
    let cert = dir.join("cert.pem").display().to_string();
    let mut args = vec!["-cert".into(), cert.clone(), "-cert_chain".into(), cert];
    args.extend(["-key".into(), dir.join("key.pem").display().to_string()]);
    args.extend(["-CAfile".into(), ca.display().to_string()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

#[test]
fn strict_inbound_accepts_only_mesh_certificates_over_tls13() {
    let pki = Pki::new();
    let (_app, app) = service("demo-rest", &[]);
    let billing = pki.issue("billing", "billing");
    let authz = "  authz:\n    - allow: [spiffe://mesh.local/svc/web]\n      methods: [GET]\n      paths: [/healthz, /headers]\n";
    let (orders, _web, outbound) = mesh(&pki, app, authz, "");
    let inbound = orders.listener("inbound", None).to_string();
    let web = pki.path("web");
    let ca = pki.path("ca/bundle.pem");
    let served = |out: &str| out.contains("HTTP/1.1 200") && out.contains("\r\n\r\nok");

    let right = s_client(&inbound, &present(&web, &ca, &[]));
    assert!(served(&right), "the right caller over TLS 1.3: {right}");
    let anonymous = s_client(&inbound, &["-CAfile".into(), ca.display().to_string()]);
    assert!(
        !anonymous.contains("HTTP/1.1"),
        "no client certificate: {anonymous}"
    );
    let tls12 = s_client(&inbound, &present(&web, &ca, &["-tls1_2"]));
    assert!(!tls12.contains("HTTP/1.1"), "TLS 1.2: {tls12}");
    let stranger = Pki::new().issue("web", "web");
    let foreign = s_client(&inbound, &present(&stranger, &ca, &[]));
    assert!(
        !foreign.contains("HTTP/1.1"),
        "a certificate from another CA: {foreign}"
    );
    let expired = pki.path("expired");
    pki.mesh_ctl(
        &[
            "ca",
            "issue",
            "--service",
            "web",
            "--ttl",
            "1s",
            "--ca",
            pki.path("ca").to_str().unwrap(),
            "--out",
        ],
        &expired,
    );
    std::thread::sleep(Duration::from_millis(2100));
    let late = s_client(&inbound, &present(&expired, &ca, &[]));
    assert!(!late.contains("HTTP/1.1"), "an expired certificate: {late}");
    let denied = s_client(&inbound, &present(&billing, &ca, &[]));
    assert!(
        denied.contains("HTTP/1.1 403") && denied.contains("x-mesh-error: forbidden"),
        "authz: {denied}"
    );

    let plain = curl(&[&format!("http://{inbound}/healthz")]);
    assert!(
        !plain.status.success(),
        "plaintext is refused in strict mode"
    );
    assert!(orders.metric("mesh_inbound_plaintext_refused_total") >= 1.0);

    // curl with the files `mesh-ctl ca issue` wrote (the cert names the service as a DNS SAN).
    let port = inbound.rsplit(':').next().unwrap();
    let with_curl = curl(&[
        "--cert",
        web.join("cert.pem").to_str().unwrap(),
        "--key",
        web.join("key.pem").to_str().unwrap(),
        "--cacert",
        ca.to_str().unwrap(),
        "--resolve",
        &format!("orders:{port}:127.0.0.1"),
        &format!("https://orders:{port}/healthz"),
    ]);
    assert_eq!(
        String::from_utf8_lossy(&with_curl.stdout),
        "ok",
        "{}",
        String::from_utf8_lossy(&with_curl.stderr)
    );

    // Through the web sidecar: authz allows GET /healthz, not POST /echo.
    assert_eq!(
        String::from_utf8_lossy(&curl(&[&format!("http://{outbound}/healthz")]).stdout),
        "ok"
    );
    let post = curl(&[
        "-i",
        "-X",
        "POST",
        "--data",
        "x",
        &format!("http://{outbound}/echo"),
    ]);
    let text = String::from_utf8_lossy(&post.stdout).to_ascii_lowercase();
    assert!(
        text.starts_with("http/1.1 403") && text.contains("x-mesh-error: forbidden"),
        "{text}"
    );
}

#[test]
fn permissive_inbound_takes_plaintext_and_mtls_on_one_port() {
    let pki = Pki::new();
    let (_app, app) = service("demo-rest", &[]);
    let orders_certs = pki.issue("orders", "orders");
    let orders = Sidecar::start(&format!(
        "service: orders\nadmin: {{ listen: 127.0.0.1:0 }}\n{}inbound:\n  listen: 127.0.0.1:0\n  app: {app}\n",
        pki.identity(&orders_certs, "permissive")
    ));
    let inbound = orders.listener("inbound", None);
    let plain = json(&curl(&[
        "-H",
        "x-mesh-peer-identity: spiffe://mesh.local/svc/forged",
        &format!("http://{inbound}/headers"),
    ]));
    assert!(
        plain.get("x-mesh-peer-identity").is_none(),
        "plaintext callers have no identity: {plain}"
    );
    let web = pki.issue("web", "web");
    let port = inbound.port();
    let secure = json(&curl(&[
        "--cert",
        web.join("cert.pem").to_str().unwrap(),
        "--key",
        web.join("key.pem").to_str().unwrap(),
        "--cacert",
        pki.path("ca/bundle.pem").to_str().unwrap(),
        "--resolve",
        &format!("orders:{port}:127.0.0.1"),
        &format!("https://orders:{port}/headers"),
    ]));
    assert_eq!(
        secure["x-mesh-peer-identity"], "spiffe://mesh.local/svc/web",
        "{secure}"
    );
}

#[test]
fn an_upstream_with_the_wrong_identity_is_refused() {
    let pki = Pki::new();
    let (_app, app) = service("demo-rest", &[]);
    let (_orders, _web, outbound) = mesh(
        &pki,
        app,
        "",
        "      identity: spiffe://mesh.local/svc/payments\n",
    );
    let out = curl(&["-i", &format!("http://{outbound}/healthz")]);
    let text = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 502"), "{text}");
    assert!(text.contains("x-mesh-error: upstream_identity"), "{text}");
}

#[test]
fn rotation_under_traffic_fails_nothing_and_new_connections_get_the_new_cert() {
    let pki = Pki::new();
    let (_app, app) = service("demo-rest", &[]);
    let (orders, _web, outbound) = mesh(&pki, app, "", "");
    let before = orders.admin_json("/certs")["serial"]
        .as_str()
        .unwrap()
        .to_string();
    let url = format!("http://{outbound}/healthz");
    let traffic = std::thread::spawn(move || {
        let (mut ok, mut failed) = (0, 0);
        let end = Instant::now() + Duration::from_secs(4);
        while Instant::now() < end {
            let out = curl(&[&url]);
            if out.status.success() && out.stdout == b"ok" {
                ok += 1
            } else {
                failed += 1
            }
        }
        (ok, failed)
    });
    std::thread::sleep(Duration::from_millis(800));
    // Issue anew elsewhere, then move the files into place.
    let fresh = pki.issue("orders", "orders-next");
    let live = pki.path("orders");
    for file in ["key.pem", "cert.pem"] {
        std::fs::rename(fresh.join(file), live.join(file)).unwrap();
    }
    wait_until(Duration::from_secs(10), "the new serial on /certs", || {
        orders.admin_json("/certs")["serial"].as_str() != Some(before.as_str())
    });
    let after = orders.admin_json("/certs")["serial"]
        .as_str()
        .unwrap()
        .to_lowercase();
    let (ok, failed) = traffic.join().unwrap();
    assert_eq!(
        failed,
        0,
        "{failed} of {} requests failed during rotation",
        ok + failed
    );
    assert!(ok > 10, "steady traffic: {ok}");
    // A new connection is served with the new certificate.
    let args = present(&pki.path("web"), &pki.path("ca/bundle.pem"), &[]).join(" ");
    let inbound = orders.listener("inbound", None);
    let shown = Command::new("sh")
        .arg("-c")
        .arg(format!("openssl s_client -connect {inbound} {args} </dev/null 2>/dev/null | openssl x509 -noout -serial"))
        .output()
        .unwrap();
    let serial = String::from_utf8_lossy(&shown.stdout).trim().to_lowercase();
    assert_eq!(
        serial.trim_start_matches("serial="),
        after.trim_start_matches('0'),
        "openssl saw {serial}"
    );
}

#[test]
fn a_mismatched_key_keeps_the_old_identity_and_says_why() {
    let pki = Pki::new();
    let (_app, app) = service("demo-rest", &[]);
    let (orders, _web, outbound) = mesh(&pki, app, "", "");
    let serial = orders.admin_json("/certs")["serial"].clone();
    let live = pki.path("orders");
    let good_key = std::fs::read(live.join("key.pem")).unwrap();
    let other = pki.issue("billing", "billing");
    std::fs::copy(other.join("key.pem"), live.join("key.pem")).unwrap();
    wait_until(
        Duration::from_secs(10),
        "the rejected rotation on /certs",
        || orders.admin_json("/certs")["last_error"].is_string(),
    );
    let certs = orders.admin_json("/certs");
    assert_eq!(certs["serial"], serial, "the old identity stays: {certs}");
    assert_eq!(
        String::from_utf8_lossy(&curl(&[&format!("http://{outbound}/healthz")]).stdout),
        "ok"
    );
    std::fs::write(live.join("key.pem"), good_key).unwrap();
    wait_until(Duration::from_secs(10), "the error to clear", || {
        orders.admin_json("/certs")["last_error"].is_null()
    });
}
