//! Edge HTTPS listeners: certificates chosen by SNI (exact, wildcard,
//! default), ALPN, TLS versions, certificate rotation without restart (the
//! files rewritten, or a config pointing at other files), plain HTTP on a
//! TLS port, the HTTPS redirect listener, and an idle HTTPS keep-alive
//! connection parked between requests. Certificates come from
//! `openssl` (a test CA signing one certificate per name).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use mesh_tests::{curl, python, wait_until, Sidecar};

use crate::rest_app;

/// A test CA and the certificates it signs, in a temporary directory.
pub struct TestPki {
    dir: tempfile::TempDir,
}

impl TestPki {
    /// A fresh CA (`ca.pem`).
    pub fn new() -> TestPki {
        let pki = TestPki {
            dir: tempfile::tempdir().unwrap(),
        };
        openssl(
            pki.dir.path(),
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=Edge Test CA",
            ],
        );
        pki
    }

    /// A file in the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The CA certificate, for clients.
    pub fn ca(&self) -> String {
        self.path("ca.pem").display().to_string()
    }

    /// Issues `<file>.pem` / `<file>.key` with common name `cn` for `hosts`.
    pub fn issue(&self, file: &str, cn: &str, hosts: &[&str], serial: u32) {
        let dir = self.dir.path();
        let sans: Vec<String> = hosts.iter().map(|h| format!("DNS:{h}")).collect();
        std::fs::write(
            dir.join(format!("{file}.ext")),
            format!(
                "subjectAltName={}\nbasicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n",
                sans.join(",")
            ),
        )
        .unwrap();
        let (key, csr, pem, ext) = (
            format!("{file}.key.new"),
            format!("{file}.csr"),
            format!("{file}.pem.new"),
            format!("{file}.ext"),
        );
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                &key,
                "-out",
                &csr,
                "-subj",
                &format!("/CN={cn}"),
            ],
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-set_serial",
                &serial.to_string(),
                "-days",
                "2",
                "-extfile",
                &ext,
                "-out",
                &pem,
            ],
        );
        // Certificate first, then key: a watcher may see the new certificate
        // with the old key for a moment, and must keep the old pair then.
        let cert = std::fs::read(dir.join(&pem)).unwrap();
        std::fs::write(dir.join(format!("{file}.pem")), cert).unwrap();
        let key_bytes = std::fs::read(dir.join(&key)).unwrap();
        std::fs::write(dir.join(format!("{file}.key")), key_bytes).unwrap();
    }

    /// A `certs:` item for `<file>.pem` / `<file>.key`.
    pub fn cert_yaml(&self, file: &str, hosts: &[&str]) -> String {
        format!(
            "{{ hosts: [{}], cert: {}, key: {} }}",
            hosts
                .iter()
                .map(|h| format!("\"{h}\""))
                .collect::<Vec<_>>()
                .join(", "),
            self.path(&format!("{file}.pem")).display(),
            self.path(&format!("{file}.key")).display()
        )
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("openssl is installed");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// An edge proxy in front of `app` (one route, `/` → `app`), with
/// `listeners` YAML (items of `edge.listeners`, indented four spaces).
pub fn edge_sidecar(app: SocketAddr, listeners: &str) -> Sidecar {
    Sidecar::start(&edge_yaml(app, listeners))
}

/// The config `edge_sidecar` runs.
pub fn edge_yaml(app: SocketAddr, listeners: &str) -> String {
    format!(
        "service: edge\nmode: edge\nadmin: {{ listen: 127.0.0.1:0 }}\nreload: {{ interval: 100ms }}\ndrain: {{ delay: 100ms, deadline: 10s }}\nedge:\n  listeners:\n{listeners}  routes:\n    - match: {{ path_prefix: / }}\n      to: app\n  upstreams:\n    app:\n      discovery: {{ endpoints: [{app}] }}\n"
    )
}

/// The bound addresses of the edge listeners, in config order.
pub fn edge_addrs(sidecar: &Sidecar) -> Vec<SocketAddr> {
    sidecar
        .admin_json("/listeners")
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["kind"] == "edge")
        .map(|l| l["addr"].as_str().unwrap().parse().unwrap())
        .collect()
}

/// `openssl s_client` against `addr` with `args`; its output and whether it succeeded.
fn s_client(addr: SocketAddr, ca: &str, args: &[&str]) -> (bool, String) {
    let output = Command::new("openssl")
        .args(["s_client", "-connect", &addr.to_string(), "-CAfile", ca])
        .args(["-verify_return_error"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("openssl is installed");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// The leaf's subject line as `s_client` prints it (`subject=CN = ...`).
fn subject(output: &str) -> String {
    output
        .lines()
        .find(|l| l.starts_with("subject="))
        .unwrap_or_else(|| panic!("no subject in {output}"))
        .to_string()
}

/// curl over HTTPS to `host` at `addr` (resolved by `--resolve`), verbose.
fn curl_https(addr: SocketAddr, ca: &str, host: &str, path: &str, extra: &[&str]) -> Output {
    let resolve = format!("{host}:{}:{}", addr.port(), addr.ip());
    let url = format!("https://{host}:{}{path}", addr.port());
    let mut args = vec!["-v", "--resolve", &resolve, "--cacert", ca];
    args.extend_from_slice(extra);
    args.push(&url);
    curl(&args)
}

fn status_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).to_string()
}

/// Three certificates: a, b (the default) and a wildcard.
fn tls_listener(pki: &TestPki, extra: &str) -> String {
    format!(
        "    - listen: 127.0.0.1:0\n      tls:\n        certs:\n          - {}\n          - {}\n          - {}\n        default: b.example.test\n{extra}",
        pki.cert_yaml("a", &["a.example.test"]),
        pki.cert_yaml("b", &["b.example.test"]),
        pki.cert_yaml("w", &["*.w.example.test"]),
    )
}

fn three_certs() -> TestPki {
    let pki = TestPki::new();
    pki.issue("a", "a.example.test", &["a.example.test"], 101);
    pki.issue("b", "b.example.test", &["b.example.test"], 102);
    pki.issue("w", "wildcard.w.example.test", &["*.w.example.test"], 103);
    pki
}

#[test]
fn sni_picks_the_certificate_exact_wildcard_then_default() {
    let (_app, app) = rest_app();
    let pki = three_certs();
    let sidecar = edge_sidecar(app, &tls_listener(&pki, ""));
    let addr = edge_addrs(&sidecar)[0];
    let ca = pki.ca();

    for (name, want) in [
        ("a.example.test", "CN = a.example.test"),
        ("b.example.test", "CN = b.example.test"),
        ("x.w.example.test", "CN = wildcard.w.example.test"),
        // A wildcard covers one label: the default answers.
        ("y.x.w.example.test", "CN = b.example.test"),
        ("unknown.test", "CN = b.example.test"),
    ] {
        let (_, out) = s_client(addr, &ca, &["-servername", name]);
        assert!(subject(&out).contains(want), "{name}: {out}");
    }
    let (_, out) = s_client(addr, &ca, &["-noservername"]);
    assert!(subject(&out).contains("CN = b.example.test"), "{out}");

    // curl verifies each name against its own certificate.
    let a = curl_https(
        addr,
        &ca,
        "a.example.test",
        "/healthz",
        &["-o", "/dev/null"],
    );
    let b = curl_https(
        addr,
        &ca,
        "b.example.test",
        "/healthz",
        &["-o", "/dev/null"],
    );
    let w = curl_https(
        addr,
        &ca,
        "x.w.example.test",
        "/healthz",
        &["-o", "/dev/null"],
    );
    for (out, cn) in [
        (&a, "CN=a.example.test"),
        (&b, "CN=b.example.test"),
        (&w, "CN=wildcard.w.example.test"),
    ] {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(stderr.contains(&format!("subject: {cn}")), "{stderr}");
    }

    // Through the route to the demo app.
    let out = curl_https(
        addr,
        &ca,
        "a.example.test",
        "/healthz",
        &["-o", "/dev/null", "-w", "%{http_code}"],
    );
    assert_eq!(
        status_of(&out),
        "200",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn alpn_and_tls_versions() {
    let (_app, app) = rest_app();
    let pki = three_certs();
    let sidecar = edge_sidecar(
        app,
        &format!(
            "{}{}",
            tls_listener(&pki, ""),
            tls_listener(&pki, "        min_version: \"1.3\"\n")
        ),
    );
    let addrs = edge_addrs(&sidecar);
    let (both, only13) = (addrs[0], addrs[1]);
    let ca = pki.ca();
    let sni = ["-servername", "a.example.test"];

    let (ok, out) = s_client(both, &ca, &[&sni[..], &["-alpn", "h2"]].concat());
    assert!(ok && out.contains("ALPN protocol: h2"), "{out}");
    let (ok, out) = s_client(both, &ca, &[&sni[..], &["-alpn", "http/1.1"]].concat());
    assert!(ok && out.contains("ALPN protocol: http/1.1"), "{out}");
    let (ok, out) = s_client(both, &ca, &[&sni[..], &["-tls1_2"]].concat());
    assert!(ok && out.contains("New, TLSv1.2, Cipher is ECDHE"), "{out}");
    let (ok, out) = s_client(both, &ca, &[&sni[..], &["-tls1_3"]].concat());
    assert!(ok && out.contains("New, TLSv1.3, Cipher is TLS_"), "{out}");

    let (ok, out) = s_client(only13, &ca, &[&sni[..], &["-tls1_3"]].concat());
    assert!(ok && out.contains("New, TLSv1.3, Cipher is TLS_"), "{out}");
    let (ok, out) = s_client(only13, &ca, &[&sni[..], &["-tls1_2"]].concat());
    assert!(
        !ok && out.contains("alert protocol version"),
        "TLS 1.2 accepted: {out}"
    );

    // curl over HTTP/2 (ALPN h2), then HTTP/1.1; then the demo app's answers.
    let mut statuses = Vec::new();
    for (flag, version) in [("--http2", "2"), ("--http1.1", "1.1")] {
        let out = curl_https(
            both,
            &ca,
            "a.example.test",
            "/healthz",
            &[
                flag,
                "-o",
                "/dev/null",
                "-w",
                "%{http_version} %{http_code}",
            ],
        );
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "{stderr}");
        let written = status_of(&out);
        let (got_version, status) = written.split_once(' ').unwrap();
        assert_eq!(got_version, version, "{stderr}");
        statuses.push(status.to_string());
    }
    assert_eq!(statuses, ["200", "200"]);
}

#[test]
fn certificates_reload_without_restart() {
    let (_app, app) = rest_app();
    let pki = three_certs();
    let sidecar = edge_sidecar(app, &tls_listener(&pki, ""));
    let addr = edge_addrs(&sidecar)[0];
    let ca = pki.ca();
    let sni = ["-servername", "a.example.test"];
    let (_, before) = s_client(addr, &ca, &sni);
    assert!(subject(&before).contains("CN = a.example.test"), "{before}");

    // The files rewritten in place: new connections get the new certificate.
    pki.issue("a", "a.example.test rotated", &["a.example.test"], 201);
    wait_until(Duration::from_secs(10), "the rotated certificate", || {
        subject(&s_client(addr, &ca, &sni).1).contains("rotated")
    });
    let log = sidecar.proc.log().join("\n");
    assert!(log.contains("public certificate reloaded"), "{log}");

    // A broken file keeps the current certificate, and the log says why.
    let rejections = || {
        let log = sidecar.proc.log();
        log.iter()
            .filter(|l| l.contains("new certificate files rejected"))
            .count()
    };
    let before = rejections();
    std::fs::write(pki.path("a.pem"), "not a certificate").unwrap();
    wait_until(Duration::from_secs(10), "the broken file rejected", || {
        rejections() > before
    });
    let (ok, out) = s_client(addr, &ca, &sni);
    assert!(ok && subject(&out).contains("rotated"), "{out}");

    // A config pointing at other files (the listener unchanged otherwise,
    // so it keeps running): new connections use them.
    pki.issue("c", "a.example.test from c", &["a.example.test"], 301);
    let listener = format!(
        "    - listen: 127.0.0.1:0\n      tls:\n        certs:\n          - {}\n          - {}\n        default: b.example.test\n",
        pki.cert_yaml("c", &["a.example.test"]),
        pki.cert_yaml("b", &["b.example.test"]),
    );
    sidecar.write_config(&edge_yaml(app, &listener));
    wait_until(
        Duration::from_secs(10),
        "the certificate from the new config",
        || subject(&s_client(addr, &ca, &sni).1).contains("from c"),
    );
}

#[test]
fn plain_http_on_a_tls_port_is_refused() {
    let (_app, app) = rest_app();
    let pki = three_certs();
    let sidecar = edge_sidecar(app, &tls_listener(&pki, ""));
    let addr = edge_addrs(&sidecar)[0];
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: a.example.test\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
        "{answer}"
    );
}

#[test]
fn redirect_listener_answers_every_request_with_https() {
    let (_app, app) = rest_app();
    let sidecar = edge_sidecar(
        app,
        "    - listen: 127.0.0.1:0\n      redirect_https: 443\n    - listen: 127.0.0.1:0\n      redirect_https: 8443\n      redirect_status: 308\n",
    );
    let addrs = edge_addrs(&sidecar);
    let redirect = |addr: SocketAddr, host: &str, path: &str, extra: &[&str]| {
        let url = format!("http://{addr}{path}");
        let host = format!("Host: {host}");
        let mut args = vec![
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{redirect_url}",
            "-H",
            &host,
        ];
        args.extend_from_slice(extra);
        args.push(&url);
        let out = curl(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        status_of(&out)
    };
    assert_eq!(
        redirect(addrs[0], "www.example.test:8080", "/a/b?x=1&y=2", &[]),
        "301 https://www.example.test/a/b?x=1&y=2"
    );
    assert_eq!(
        redirect(addrs[1], "www.example.test", "/login?next=/home", &[]),
        "308 https://www.example.test:8443/login?next=/home"
    );
    // HTTP/2 with prior knowledge too (the host from :authority).
    assert_eq!(
        redirect(
            addrs[0],
            "h2.example.test",
            "/",
            &["--http2-prior-knowledge"]
        ),
        "301 https://h2.example.test/"
    );
}

#[test]
fn an_idle_https_keep_alive_connection_is_parked_and_answers_again() {
    let (_app, app) = rest_app();
    let pki = three_certs();
    let sidecar = edge_sidecar(app, &tls_listener(&pki, ""));
    let addr = edge_addrs(&sidecar)[0];
    // 0.6 s of quiet after each request: longer than the 250 ms after
    // which an idle HTTP/1 connection is parked.
    let (ip, port, ca) = (addr.ip().to_string(), addr.port().to_string(), pki.ca());
    let seen = python(
        "keepalive_gaps.py",
        &[
            &ip,
            &port,
            &ca,
            "a.example.test",
            "0.6",
            "/healthz",
            "/headers",
            "/healthz",
        ],
    );
    let answers = seen["answers"].as_array().unwrap();
    assert_eq!(answers.len(), 3, "{seen}");
    // Every answer 200, all on the client's one connection (one local port).
    for answer in answers {
        assert_eq!(answer["status"], 200, "{seen}");
        assert_eq!(
            answer["port"], answers[0]["port"],
            "a new connection: {seen}"
        );
    }
}
