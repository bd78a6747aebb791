//! `mesh-demo`: the demo mesh on loopback in one command. Makes a fresh mesh
//! CA and a certificate per service, starts the three demo apps (on free
//! ports), then a sidecar in front of each with a config generated into
//! `--dir`, then the edge (the public gateway, HTTPS with a certificate from
//! a demo "public" CA) in front of web and chat, prints what runs where and
//! what to try, and stops everything on Ctrl-C / SIGTERM. With `--check` it
//! instead sends real requests through the mesh, prints one line per check,
//! stops everything and exits 0 (all passed) or 1. Proxies talk mutual TLS
//! to each other (`══`), unless `--plaintext`.
//!
//! ```text
//! :B+443 edge (HTTPS, api.demo.test) ══▶ :B+1 web sidecar ─▶ demo-rest
//! :B+80  edge (HTTP) ─▶ 301 to https
//! :B+1  web sidecar ─▶ demo-rest ─gRPC─▶ :B+11 web sidecar ══▶ :B+2 orders sidecar ─▶ demo-grpc
//! :B+10 web's forward proxy, host chat.mesh.local ══▶ :B+3 chat sidecar ─▶ demo-ws
//! ```
//!
//! Reads: the sibling binaries next to this one, their announce lines.
//! Writes: `DIR/certs/ca` (the demo CA, replaced at every start),
//! `DIR/certs/<service>` (certificate, key, bundle), `DIR/certs/public-ca`
//! and `DIR/certs/public` (the edge's HTTPS certificate), `DIR/<service>.yaml`
//! (sidecar and edge configs), `DIR/<service>.log` (their logs),
//! `DIR/edge-access.log` (the edge's access log), `DIR/<binary>.log`
//! (app logs). Errors: a missing binary, a port out of range, a CA or
//! certificate that cannot be written, a child that does not come up (with
//! its log tail).

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context as _};
use bytes::Bytes;
use clap::{Parser, ValueEnum};
use futures_util::{SinkExt as _, StreamExt as _};
use http_body_util::{BodyExt as _, Empty};
use hyper::header::HOST;
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use mesh_api::admin::CertInfo;
use mesh_examples::lifecycle;
use mesh_examples::supervise::{AnnounceOn, Children, Spec};
use serde::Deserialize;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// The binaries `mesh-demo` runs; they must sit next to it.
const BINARIES: [&str; 4] = ["sidecar", "demo-rest", "demo-grpc", "demo-ws"];
/// How long each child gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Deadline of one `--check` request.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// The host name web's forward proxy routes to the chat service.
const CHAT_HOST: &str = "chat.mesh.local";
/// The demo's trust domain: each sidecar is `spiffe://mesh.local/svc/<name>`.
const TRUST_DOMAIN: &str = "mesh.local";
/// How long the demo's workload certificates are valid.
const CERT_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// The host names the edge serves over HTTPS (resolve them to 127.0.0.1).
const API_HOST: &str = "api.demo.test";
const CHAT_PUBLIC_HOST: &str = "chat.demo.test";

/// Run the demo mesh (web, orders, chat, each behind a sidecar) on loopback.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// First port of the mesh: sidecar inbounds on N+1..N+3, web's outbound
    /// on N+10 (proxy) and N+11 (orders), the edge on N+443 (HTTPS) and N+80
    /// (HTTP, redirects), admin APIs on N+800 (edge) and N+801..N+803.
    #[arg(long, value_name = "N", default_value_t = 7100)]
    base_port: u16,
    /// Where the generated configs, certificates and logs go (created if missing).
    #[arg(long, value_name = "DIR", default_value = ".demo")]
    dir: PathBuf,
    /// Start everything, check the mesh end to end, stop, exit 0 if all passed.
    #[arg(long)]
    check: bool,
    /// Plaintext between the sidecars (no CA, identities or authz), to compare.
    #[arg(long)]
    plaintext: bool,
    /// Sidecar log format (passed on as `sidecar run --log-format`).
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Json,
    Pretty,
}

/// Every fixed address of the mesh, derived from `--base-port`.
#[derive(Debug)]
struct Ports {
    web_inbound: SocketAddr,
    orders_inbound: SocketAddr,
    chat_inbound: SocketAddr,
    web_proxy: SocketAddr,
    web_orders: SocketAddr,
    web_admin: SocketAddr,
    orders_admin: SocketAddr,
    chat_admin: SocketAddr,
    edge_https: SocketAddr,
    edge_http: SocketAddr,
    edge_admin: SocketAddr,
}

/// One service of the mesh: a demo app and the sidecar in front of it.
#[derive(Debug)]
struct Service {
    name: &'static str,
    app_binary: &'static str,
    /// App flags besides `--name`.
    app_args: Vec<String>,
    /// The sidecar's `inbound.protocol`.
    protocol: &'static str,
    inbound: SocketAddr,
    admin: SocketAddr,
    /// The sidecar's `outbound:` YAML block, if it has one.
    outbound: Option<String>,
    /// How the sidecar takes part in mutual TLS; `None` with `--plaintext`.
    tls: Option<Tls>,
}

/// A sidecar's part in mutual TLS, beyond its certificate.
#[derive(Debug)]
struct Tls {
    /// `identity.mode`: `strict` (mutual TLS only) or `permissive` (plaintext too).
    mode: &'static str,
    /// Why this mode, for a comment in the config.
    why: &'static str,
    /// The `inbound.authz` YAML block (indented, comments included), if any.
    authz: Option<String>,
}

/// What a started service reported.
#[derive(Debug)]
struct Started {
    app: SocketAddr,
    sidecar: SidecarUp,
}

/// The fields of the sidecar's `listening` log line.
#[derive(Debug)]
struct SidecarUp {
    admin: String,
    listeners: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    lifecycle::init_tracing();
    match run(Args::parse()).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("mesh-demo: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Starts the mesh, runs it (or checks it), and always stops what it started.
async fn run(args: Args) -> anyhow::Result<bool> {
    let bin_dir = sibling_dir()?;
    let ports = Ports::new(args.base_port)?;
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let dir = std::fs::canonicalize(&args.dir)
        .with_context(|| format!("resolving {}", args.dir.display()))?;
    let mtls = !args.plaintext;
    let mesh = topology(&ports, mtls);

    println!(
        "mesh-demo: starting the mesh {} (configs, certificates and logs in {})",
        if mtls {
            "with mutual TLS"
        } else {
            "in plaintext"
        },
        shown(&dir)
    );
    if mtls {
        make_certs(&mesh, &dir)?;
    }
    make_public_cert(&dir)?;
    let partner_key = make_partner_key(&dir)?;
    let mut children = Children::default();
    let outcome = async {
        let started = start(&mesh, &bin_dir, &dir, args.log_format, &mut children).await?;
        let edge = start_proxy(
            "edge",
            &edge_config(&ports, mtls, &mesh_api::apikey::digest(&partner_key)),
            &bin_dir,
            &dir,
            args.log_format,
            &mut children,
        )
        .await?;
        println!("  {:<16} admin={} {}", "edge", edge.admin, edge.listeners);
        if args.check {
            Ok(check(&mesh, &ports, &dir, mtls).await)
        } else {
            print_banner(&mesh, &started, &ports, &dir, &bin_dir, mtls);
            Ok(wait_for_stop(&mut children).await)
        }
    }
    .await;
    println!("mesh-demo: stopping");
    children.stop(STOP_GRACE).await;
    outcome
}

/// The directory this binary runs from, which must hold all of [`BINARIES`].
fn sibling_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the mesh-demo binary")?;
    let dir = exe
        .parent()
        .with_context(|| format!("{} has no parent directory", exe.display()))?;
    let missing: Vec<&str> = BINARIES
        .into_iter()
        .filter(|name| !dir.join(name).is_file())
        .collect();
    if !missing.is_empty() {
        bail!(
            "{} not found in {}: run `cargo build --workspace --bins` first",
            missing.join(", "),
            dir.display()
        );
    }
    Ok(dir.to_owned())
}

impl Ports {
    fn new(base: u16) -> anyhow::Result<Self> {
        let at = |offset: u16| {
            base.checked_add(offset)
                .map(|port| SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
                .with_context(|| {
                    format!("--base-port {base} is too high: the mesh needs ports up to base + 803")
                })
        };
        Ok(Self {
            web_inbound: at(1)?,
            orders_inbound: at(2)?,
            chat_inbound: at(3)?,
            web_proxy: at(10)?,
            web_orders: at(11)?,
            web_admin: at(801)?,
            orders_admin: at(802)?,
            chat_admin: at(803)?,
            edge_https: at(443)?,
            edge_http: at(80)?,
            edge_admin: at(800)?,
        })
    }
}

/// The three services, in start order: orders first, since web calls it.
/// With `mtls`, each sidecar gets an identity and its part in mutual TLS.
fn topology(ports: &Ports, mtls: bool) -> [Service; 3] {
    let web_outbound = format!(
        "outbound:
  # HTTP forward proxy, routed by upstream name or hosts
  proxy: {proxy}
  upstreams:
    orders:
      # demo-rest calls orders here (its --orders-grpc)
      listen: {orders_port}
      protocol: grpc
      discovery: {{ endpoints: [{orders}] }}
    chat:
      # no port of its own: reached through the proxy
      hosts: [{CHAT_HOST}]
      discovery: {{ endpoints: [{chat}] }}
",
        proxy = ports.web_proxy,
        orders_port = ports.web_orders,
        orders = ports.orders_inbound,
        chat = ports.chat_inbound,
    );
    [
        Service {
            name: "orders",
            app_binary: "demo-grpc",
            app_args: Vec::new(),
            protocol: "grpc",
            inbound: ports.orders_inbound,
            admin: ports.orders_admin,
            outbound: None,
            tls: mtls.then(|| Tls {
                mode: "strict",
                why: "only web's sidecar calls orders, always over mutual TLS",
                authz: Some(format!(
                    "  # Only web may call orders (any path), and the edge its two REST-mapped
  # methods; everyone else gets 403 forbidden.
  authz:
    - allow: [{web}]
    - allow: [{edge}]
      paths: [/orders.v1.Orders/GetOrder, /orders.v1.Orders/ListOrders]
",
                    web = mesh_api::ca::spiffe_id(TRUST_DOMAIN, "web"),
                    edge = mesh_api::ca::spiffe_id(TRUST_DOMAIN, "edge"),
                )),
            }),
        },
        Service {
            name: "web",
            app_binary: "demo-rest",
            app_args: vec![
                "--orders-grpc".into(),
                format!("http://{}", ports.web_orders),
            ],
            protocol: "auto",
            inbound: ports.web_inbound,
            admin: ports.web_admin,
            outbound: Some(web_outbound),
            tls: mtls.then_some(Tls {
                mode: "permissive",
                why: "you curl web's inbound from your shell, in plaintext",
                authz: None,
            }),
        },
        Service {
            name: "chat",
            app_binary: "demo-ws",
            app_args: Vec::new(),
            protocol: "auto",
            inbound: ports.chat_inbound,
            admin: ports.chat_admin,
            outbound: None,
            tls: mtls.then(|| Tls {
                mode: "permissive",
                why: "the WebSocket check and ws_client.py connect here directly, in plaintext",
                authz: Some(
                    "  # Anyone, even plaintext callers: web's sidecar over mutual TLS, ws_client.py without.
  authz:
    - allow: [\"*\"]
"
                    .to_owned(),
                ),
            }),
        },
    ]
}

/// A fresh demo CA in `DIR/certs/ca` (replacing the one of the last run) and
/// a certificate for each service in `DIR/certs/<name>`, valid [`CERT_TTL`].
fn make_certs(mesh: &[Service], dir: &Path) -> anyhow::Result<()> {
    let ca = dir.join("certs/ca");
    mesh_api::ca::init(TRUST_DOMAIN, &ca, true).context("making the demo CA")?;
    let names: Vec<&str> = mesh
        .iter()
        .map(|service| service.name)
        .chain(["edge"])
        .collect();
    for name in &names {
        let out = dir.join("certs").join(name);
        mesh_api::ca::issue(&ca, name, CERT_TTL, &out, true)
            .with_context(|| format!("issuing the certificate of {name}"))?;
    }
    println!(
        "  {:<16} {} ({TRUST_DOMAIN}), certificates for {} valid {}h",
        "mesh CA",
        shown(&ca),
        names.join(", "),
        CERT_TTL.as_secs() / 3600
    );
    Ok(())
}

/// The edge's HTTPS certificate for [`API_HOST`] and `*.demo.test`, from a
/// demo "public" CA in `DIR/certs/public-ca` (clients trust its bundle.pem
/// with `--cacert`), made again at every start.
fn make_public_cert(dir: &Path) -> anyhow::Result<()> {
    let ca = dir.join("certs/public-ca");
    mesh_api::ca::init("demo.test", &ca, true).context("making the demo public CA")?;
    let hosts = [API_HOST.to_owned(), "*.demo.test".to_owned()];
    mesh_api::ca::issue_server(&ca, &hosts, CERT_TTL, &dir.join("certs/public"), true)
        .context("issuing the edge's HTTPS certificate")?;
    println!(
        "  {:<16} {} ({}), for the edge's HTTPS",
        "public CA",
        shown(&ca),
        hosts.join(", ")
    );
    Ok(())
}

/// A fresh API key for the demo partner, in `DIR/partner-api-key` (the
/// edge config holds only its digest).
fn make_partner_key(dir: &Path) -> anyhow::Result<String> {
    let key = mesh_api::apikey::generate().context("the system's random source failed")?;
    let path = dir.join("partner-api-key");
    std::fs::write(&path, format!("{key}\n"))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(key)
}

/// Starts every app, then every sidecar (a sidecar's config needs its app's
/// port), each once the previous one said it is up.
async fn start(
    mesh: &[Service],
    bin_dir: &Path,
    dir: &Path,
    log_format: Option<LogFormat>,
    children: &mut Children,
) -> anyhow::Result<Vec<Started>> {
    let mut apps = Vec::new();
    for service in mesh {
        let mut args = vec!["--name".to_owned(), service.name.to_owned()];
        args.extend(service.app_args.iter().cloned());
        let spec = Spec {
            name: service.app_binary.to_owned(),
            program: bin_dir.join(service.app_binary),
            args,
            log: dir.join(format!("{}.log", service.app_binary)),
            announce_on: AnnounceOn::Stdout,
        };
        let app = children.start(spec, app_listening).await?;
        println!("  {:<16} {app}", format!("{} app", service.name));
        apps.push(app);
    }

    let mut started = Vec::new();
    for (service, app) in mesh.iter().zip(apps) {
        let config = sidecar_config(service, app);
        let sidecar =
            start_proxy(service.name, &config, bin_dir, dir, log_format, children).await?;
        println!(
            "  {:<16} admin={} {}",
            format!("{} sidecar", service.name),
            sidecar.admin,
            sidecar.listeners
        );
        started.push(Started { app, sidecar });
    }
    Ok(started)
}

/// Writes `DIR/<name>.yaml` and runs `sidecar run` on it, logging to
/// `DIR/<name>.log`; returns once it says it is listening.
async fn start_proxy(
    name: &str,
    config: &str,
    bin_dir: &Path,
    dir: &Path,
    log_format: Option<LogFormat>,
    children: &mut Children,
) -> anyhow::Result<SidecarUp> {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, config).with_context(|| format!("writing {}", path.display()))?;
    let mut args = vec!["run".to_owned(), "--config".to_owned(), path_arg(&path)?];
    if let Some(format) = log_format {
        let format = match format {
            LogFormat::Json => "json",
            LogFormat::Pretty => "pretty",
        };
        args.extend(["--log-format".to_owned(), format.to_owned()]);
    }
    let spec = Spec {
        name: if name == "edge" {
            name.to_owned()
        } else {
            format!("{name} sidecar")
        },
        program: bin_dir.join("sidecar"),
        args,
        log: dir.join(format!("{name}.log")),
        announce_on: AnnounceOn::Stderr,
    };
    children.start(spec, sidecar_listening).await
}

/// The edge's generated config: HTTPS by SNI with the demo public
/// certificate, a redirect listener, routes to web and chat (over mutual
/// TLS with `mtls`), an access log.
fn edge_config(ports: &Ports, mtls: bool, partner_key_digest: &str) -> String {
    let mut yaml = format!(
        "# The edge of mesh-demo (the public gateway), written at every start. Edit it
# while the demo runs: it reloads within a second; see edge.log.
service: edge
mode: edge
# The admin API also serves a live dashboard: http://{admin}/dashboard
admin: {{ listen: {admin}, dashboard: true }}
# One JSON line per request in edge-access.log.
log: {{ format: json, level: info, access: edge-access.log }}
drain: {{ delay: 1s, deadline: 5s }}
limits: {{ max_body: 1MiB, header_timeout: 10s }}
",
        admin = ports.edge_admin,
    );
    if mtls {
        yaml.push_str(&format!(
            "# Into the mesh over mutual TLS as spiffe://{TRUST_DOMAIN}/svc/edge.
identity:
  trust_domain: {TRUST_DOMAIN}
  cert: certs/edge/cert.pem
  key: certs/edge/key.pem
  bundle: certs/ca/bundle.pem
"
        ));
    }
    yaml.push_str(&format!(
        "edge:
  listeners:
    # HTTPS; the certificate is picked by SNI (files watched: replace them to rotate)
    - listen: {https}
      tls:
        certs:
          - {{ hosts: [{API_HOST}, \"*.demo.test\"], cert: certs/public/cert.pem, key: certs/public/key.pem }}
    # plain HTTP only redirects to HTTPS
    - listen: {http}
      redirect_https: {https_port}
  routes:
    # GET /api/orders/N -> web's /orders/N (web asks orders over gRPC),
    # answers cached 10 s (x-cache: MISS, then HIT; purge: POST /cache/purge on the admin API)
    - name: orders
      match: {{ host: {API_HOST}, path_prefix: /api/orders, methods: [GET] }}
      rewrite: {{ prefix: /orders }}
      cache: {{ ttl: 10s, key: [path] }}
      to: web
    # one request, three upstream calls made at once, merged into one JSON answer
    - name: summary
      match: {{ host: {API_HOST}, path: /api/summary }}
      aggregate:
        parts:
          first: {{ to: web, path: /orders/1 }}
          third: {{ to: web, path: /orders/3 }}
          missing: {{ to: web, path: /orders/42, optional: true }}
        timeout: 2s
        on_part_failure: partial
    # the rest of /api -> web, prefix stripped, a response header added,
    # compressed for clients that accept br, zstd or gzip (bodies of 256 bytes and more)
    - name: api
      match: {{ host: {API_HOST}, path_prefix: /api }}
      rewrite: {{ prefix: / }}
      headers: {{ response: {{ set: {{ x-demo-route: api }} }} }}
      compress: {{ encodings: [br, zstd, gzip], min_size: 256B }}
      to: web
    # REST/JSON straight to the gRPC orders app, mapped by the HTTP rules in
    # orders.proto: GET /v1/orders/3, GET /v1/orders?count=3&intervalMs=300 (NDJSON, or SSE)
    - name: orders-rest
      match: {{ host: {API_HOST}, path_prefix: /v1/orders }}
      grpc_json: {{ protos: [orders.proto], include: [\"{protos}\"] }}
      to: orders
    # WebSocket echo on its own host
    - name: chat
      match: {{ host: {CHAT_PUBLIC_HOST} }}
      to: chat
    # API key + rate limit: /partner is web's /headers for the demo partner
    # (its key is in partner-api-key), 5 requests a second, burst 5
    - name: partner
      match: {{ host: {API_HOST}, path: /partner }}
      auth: [partners]
      rate_limit: [per_partner]
      rewrite: {{ path: /headers }}
      cors: {{ origins: [\"https://app.demo.test\"] }}
      to: web
    - name: home
      match: {{ path: / }}
      redirect: {{ path: /api/headers, status: 302 }}
  auth:
    api_keys:
      partners:
        from: header:x-api-key
        keys: [{{ consumer: demo-partner, sha256: {partner_key_digest} }}]
  rate_limits:
    per_partner: {{ key: [consumer], rate: 5/s, burst: 5 }}
  upstreams:
    web: {{ discovery: {{ endpoints: [{web}] }} }}
    chat: {{ discovery: {{ endpoints: [{chat}] }} }}
    orders: {{ discovery: {{ endpoints: [{orders}] }}, protocol: grpc }}
",
        https = ports.edge_https,
        https_port = ports.edge_https.port(),
        http = ports.edge_http,
        web = ports.web_inbound,
        chat = ports.chat_inbound,
        orders = ports.orders_inbound,
        protos = concat!(env!("CARGO_MANIFEST_DIR"), "/protos"),
    ));
    yaml
}

/// The generated sidecar config of `service`, in front of its app at `app`.
fn sidecar_config(service: &Service, app: SocketAddr) -> String {
    let mut yaml = format!(
        "# The {name} sidecar of mesh-demo, written at every start (edits are lost
# on the next start). Edit it while the demo runs: the sidecar reloads it
# within a second; see {name}.log or GET http://{admin}/config.
service: {name}
admin: {{ listen: {admin} }}
log: {{ format: json, level: info }}
drain: {{ delay: 1s, deadline: 5s }}
",
        name = service.name,
        admin = service.admin,
    );
    if let Some(tls) = &service.tls {
        yaml.push_str(&format!(
            "# Mutual TLS between the sidecars: this one is spiffe://{TRUST_DOMAIN}/svc/{name}, with
# a certificate from the demo CA (made again at every start). It calls its
# upstreams over mutual TLS too, and they must prove spiffe://{TRUST_DOMAIN}/svc/<upstream>.
identity:
  trust_domain: {TRUST_DOMAIN}
  cert: certs/{name}/cert.pem
  key: certs/{name}/key.pem
  bundle: certs/ca/bundle.pem
  # {mode}: {why}
  mode: {mode}
",
            name = service.name,
            mode = tls.mode,
            why = tls.why,
        ));
    }
    yaml.push_str(&format!(
        "inbound:
  listen: {inbound}
  # {app_binary}, on the port it picked at start
  app: {app}
  protocol: {protocol}
",
        inbound = service.inbound,
        app_binary = service.app_binary,
        protocol = service.protocol,
    ));
    if let Some(authz) = service.tls.as_ref().and_then(|tls| tls.authz.as_deref()) {
        yaml.push_str(authz);
    }
    if let Some(outbound) = &service.outbound {
        yaml.push_str(outbound);
    }
    yaml
}

/// `{"listening":"127.0.0.1:PORT"}`, the one line a demo app prints on stdout.
fn app_listening(line: &str) -> Option<SocketAddr> {
    #[derive(Deserialize)]
    struct Listening {
        listening: SocketAddr,
    }
    serde_json::from_str::<Listening>(line)
        .ok()
        .map(|line| line.listening)
}

/// The sidecar's startup log line (`message` `listening`), JSON or pretty.
fn sidecar_listening(line: &str) -> Option<SidecarUp> {
    if let Ok(event) = serde_json::from_str::<serde_json::Value>(line) {
        if event["message"] != "listening" {
            return None;
        }
        return Some(SidecarUp {
            admin: event["admin"].as_str()?.to_owned(),
            listeners: event["listeners"].as_str()?.to_owned(),
        });
    }
    // Pretty (uncoloured, see `supervise`):
    // `TIME  INFO sidecar::app: listening admin=ADDR listeners=a=ADDR b=ADDR`.
    let fields = line.split_once(": listening admin=")?.1;
    let (admin, listeners) = fields.split_once(" listeners=")?;
    Some(SidecarUp {
        admin: admin.to_owned(),
        listeners: listeners.to_owned(),
    })
}

/// Waits for Ctrl-C / SIGTERM (true) or a child that exits on its own (false).
async fn wait_for_stop(children: &mut Children) -> bool {
    let shutdown = lifecycle::shutdown_signal();
    tokio::pin!(shutdown);
    tokio::select! {
        biased;
        () = &mut shutdown => true,
        exited = children.first_exit() => {
            // A Ctrl-C in the terminal reaches the children too, and one of
            // them may exit before our own signal handler runs.
            if tokio::time::timeout(Duration::from_millis(500), &mut shutdown)
                .await
                .is_ok()
            {
                return true;
            }
            let status = match exited.status {
                Ok(status) => status.to_string(),
                Err(error) => format!("cannot read its status: {error}"),
            };
            println!(
                "mesh-demo: {} exited on its own ({status}); see {}",
                exited.name,
                shown(&exited.log)
            );
            false
        }
    }
}

/// What runs where, and commands to try, all with the real addresses.
fn print_banner(
    mesh: &[Service],
    started: &[Started],
    ports: &Ports,
    dir: &Path,
    bin_dir: &Path,
    mtls: bool,
) {
    let py = |script: &str| {
        let script = Path::new("tests/py").join(script);
        // Relative to the repository when the binary runs from its target/ dir.
        let found = bin_dir
            .ancestors()
            .map(|root| root.join(&script))
            .find(|path| path.is_file());
        found.map_or_else(|| script.display().to_string(), |path| shown(&path))
    };
    let dir = shown(dir);
    let web = ports.web_inbound;
    let web_admin = ports.web_admin;

    println!();
    if mtls {
        println!("The demo mesh is up; the sidecars talk mutual TLS (CA in {dir}/certs/ca).");
    } else {
        println!("The demo mesh is up, in plaintext (--plaintext).");
    }
    println!();
    let row = |service: &str, app: &str, inbound: &str, admin: &str| {
        println!("  {service:<8} {app:<26} {inbound:<18} {admin}");
    };
    row("service", "app", "sidecar inbound", "sidecar admin");
    for (service, started) in mesh.iter().zip(started) {
        row(
            service.name,
            &format!("{} {}", service.app_binary, started.app),
            &service.inbound.to_string(),
            &started.sidecar.admin,
        );
    }
    println!(
        "  web's outbound: forward proxy {} (orders, {CHAT_HOST}), orders gRPC on {}",
        ports.web_proxy, ports.web_orders
    );
    println!(
        "  edge     HTTPS {https} ({API_HOST}, {CHAT_PUBLIC_HOST}), HTTP {http} (redirects), admin {edge_admin}",
        https = ports.edge_https,
        http = ports.edge_http,
        edge_admin = ports.edge_admin,
    );
    let resolve = format!(
        "--cacert {dir}/certs/public-ca/bundle.pem --resolve {API_HOST}:{port}:127.0.0.1",
        port = ports.edge_https.port()
    );
    println!(
        "
Through the edge (the public gateway), over HTTPS:
  # GET /api/orders/3: edge {hop} web sidecar -> web -> orders over gRPC
  curl -s {resolve} https://{API_HOST}:{port}/api/orders/3
  # what web sees: X-Forwarded-For, X-Forwarded-Proto, Forwarded, X-Request-Id
  curl -s {resolve} https://{API_HOST}:{port}/api/headers
  # compressed for clients that accept it (br, zstd, gzip)
  curl -s {resolve} --compressed -D - https://{API_HOST}:{port}/api/headers
  # cached at the edge: x-cache MISS, then HIT for 10 s
  curl -si {resolve} https://{API_HOST}:{port}/api/orders/4 | grep -i x-cache
  # three upstream calls at once, one JSON answer (the failing optional part named in _errors)
  curl -s {resolve} https://{API_HOST}:{port}/api/summary
  # the gRPC orders app as REST/JSON, from the HTTP rules in examples/protos/orders.proto
  curl -s {resolve} https://{API_HOST}:{port}/v1/orders/3
  # a server stream as NDJSON, each order as it comes (or -H 'accept: text/event-stream')
  curl -sN {resolve} 'https://{API_HOST}:{port}/v1/orders?count=3&intervalMs=400'
  # no route: 404 with x-mesh-error: no_route
  curl -si {resolve} https://{API_HOST}:{port}/nothing
  # an API key (the demo partner's, in {dir}/partner-api-key), 5 requests/s
  curl -s {resolve} -H \"x-api-key: $(cat {dir}/partner-api-key)\" https://{API_HOST}:{port}/partner
  # plain HTTP is redirected to HTTPS
  curl -si http://{http}/api/headers
  # one JSON line per request
  tail -n 3 {dir}/edge-access.log",
        hop = if mtls { "=mTLS=>" } else { "->" },
        port = ports.edge_https.port(),
        http = ports.edge_http,
    );
    println!(
        "
Try it:
  # web, through its inbound sidecar
  curl -s http://{web}/headers
  # web -> web's outbound sidecar {hop} orders sidecar -> gRPC orders app
  curl -s http://{web}/orders/3
  # web's forward proxy routes by host name to the chat sidecar
  curl -s -x http://{proxy} http://{CHAT_HOST}/healthz
  # gRPC streaming through web's outbound port (pip install grpcio grpcio-tools)
  python3 {grpc_py} {orders_out} server 5 200
  # WebSocket echo through the chat sidecar (pip install websockets)
  python3 {ws_py} ws://{chat}/ echo",
        hop = if mtls { "=mTLS=>" } else { "->" },
        proxy = ports.web_proxy,
        orders_out = ports.web_orders,
        chat = ports.chat_inbound,
        grpc_py = py("grpc_orders.py"),
        ws_py = py("ws_client.py"),
    );
    if mtls {
        let web_cert = format!("{dir}/certs/web");
        println!(
            "
Mutual TLS, each sidecar proving spiffe://{TRUST_DOMAIN}/svc/<name>:
  curl -s http://{web_admin}/certs
  {mesh_ctl} certs --admin {web_admin} --admin {orders_admin} --admin {chat_admin}
  # try to bypass web: orders takes mutual TLS only, so this is refused
  curl -sS http://{orders}/
  # with web's certificate you get in (chat's gets 403); type GET / HTTP/1.1, Host: x, empty line
  openssl s_client -connect {orders} -cert {web_cert}/cert.pem -cert_chain {web_cert}/cert.pem -key {web_cert}/key.pem -CAfile {dir}/certs/ca/bundle.pem -quiet",
            mesh_ctl = shown(&bin_dir.join("mesh-ctl")),
            orders = ports.orders_inbound,
            orders_admin = ports.orders_admin,
            chat_admin = ports.chat_admin,
        );
    }
    println!(
        "
Admin API of each sidecar (web {web_admin}, orders {orders_admin}, chat {chat_admin}):
  curl -s http://{web_admin}/clusters
  curl -s http://{web_admin}/metrics | grep mesh_requests

The whole mesh at once with mesh-ctl (send some requests first):
  {mesh_ctl} status {all}
  {mesh_ctl} stat {all}       # RPS, success rate, p50/p95/p99 per service and route
  {mesh_ctl} graph --format mermaid {all}
  {mesh_ctl} top {all}        # live; q quits
  {mesh_ctl} tap --admin {edge_admin} --path-prefix /api
  {mesh_ctl} explain --admin {edge_admin} GET https://{API_HOST}/api/orders/3
  {mesh_ctl} cache stats --admin {edge_admin}
  {mesh_ctl} openapi --admin {edge_admin}   # OpenAPI 3 of the REST-mapped gRPC API
  # the service graph and golden signals in a browser
  open http://{edge_admin}/dashboard

Edit {dir}/web.yaml or {dir}/edge.yaml and watch it hot-reload: tail -f {dir}/web.log
Logs: {dir}/*.log. Ctrl-C stops everything.",
        orders_admin = ports.orders_admin,
        chat_admin = ports.chat_admin,
        edge_admin = ports.edge_admin,
        mesh_ctl = shown(&bin_dir.join("mesh-ctl")),
        all = [
            ports.edge_admin,
            ports.web_admin,
            ports.orders_admin,
            ports.chat_admin
        ]
        .iter()
        .map(|admin| format!("--admin {admin}"))
        .collect::<Vec<_>>()
        .join(" "),
    );
}

/// Real requests through the mesh, one line each; true when all passed.
/// With `mtls`, also what mutual TLS promises: identities, and no way around web.
async fn check(mesh: &[Service], ports: &Ports, dir: &Path, mtls: bool) -> bool {
    println!();
    println!("Checking the mesh:");
    let web = ports.web_inbound;
    let mut passed = true;
    let mut report = |what: String, outcome: anyhow::Result<String>| match outcome {
        Ok(detail) => println!("  ok      {what}: {detail}"),
        Err(error) => {
            passed = false;
            println!("  FAILED  {what}: {error:#}");
        }
    };

    report(
        format!("web via its sidecar, GET http://{web}/healthz"),
        bounded(expect(
            &format!("http://{web}/healthz"),
            None,
            StatusCode::OK,
        ))
        .await,
    );
    let over = if mtls { "gRPC and mutual TLS" } else { "gRPC" };
    report(
        format!("web -> orders over {over}, GET http://{web}/orders/3"),
        bounded(order_three(web)).await,
    );
    report(
        format!("unknown order, GET http://{web}/orders/42"),
        bounded(expect(
            &format!("http://{web}/orders/42"),
            None,
            StatusCode::NOT_FOUND,
        ))
        .await,
    );
    for service in mesh {
        let url = format!("http://{}/ready", service.admin);
        report(
            format!("{} sidecar admin, GET {url}", service.name),
            bounded(expect(&url, None, StatusCode::OK)).await,
        );
    }
    let url = format!("http://{CHAT_HOST}/healthz");
    report(
        format!("web's forward proxy, GET {url} via {}", ports.web_proxy),
        bounded(expect(&url, Some(ports.web_proxy), StatusCode::OK)).await,
    );
    report(
        format!("chat WebSocket echo via ws://{}/", ports.chat_inbound),
        bounded(websocket_echo(ports.chat_inbound)).await,
    );
    report(
        format!(
            "edge over HTTPS, GET https://{API_HOST}:{}/api/orders/3",
            ports.edge_https.port()
        ),
        bounded(edge_order_three(ports, dir)).await,
    );
    report(
        format!("edge cache, GET https://{API_HOST}/api/orders/5 twice"),
        bounded(edge_cache(ports, dir)).await,
    );
    report(
        format!("edge aggregation, GET https://{API_HOST}/api/summary"),
        bounded(edge_summary(ports, dir)).await,
    );
    report(
        format!("edge compression, GET https://{API_HOST}/api/headers, Accept-Encoding: gzip"),
        bounded(edge_compressed(ports, dir)).await,
    );
    report(
        format!("edge REST/JSON -> gRPC, GET https://{API_HOST}/v1/orders/3"),
        bounded(edge_grpc_json(ports, dir)).await,
    );
    report(
        format!("edge API key, GET https://{API_HOST}/partner"),
        bounded(edge_partner(ports, dir)).await,
    );
    report(
        format!("edge, no route for GET https://{API_HOST}/nothing/here"),
        bounded(edge_no_route(ports, dir)).await,
    );
    report(
        format!(
            "edge redirects plain HTTP, GET http://{}/api/headers?x=1",
            ports.edge_http
        ),
        bounded(edge_redirect(ports)).await,
    );
    let url = format!("http://{}/ready", ports.edge_admin);
    report(
        format!("edge admin, GET {url}"),
        bounded(expect(&url, None, StatusCode::OK)).await,
    );
    if mtls {
        report(
            format!(
                "orders refuses plaintext, GET /healthz straight to {}",
                ports.orders_inbound
            ),
            bounded(refuses_plaintext(ports.orders_inbound)).await,
        );
        let url = format!("http://{}/certs", ports.web_admin);
        report(
            format!("web's identity, GET {url}"),
            bounded(identity(&url, "web")).await,
        );
    }

    println!();
    if passed {
        println!("All checks passed.");
    } else {
        println!("Some checks FAILED; the logs are in {}.", shown(dir));
    }
    passed
}

/// `check` with [`CHECK_TIMEOUT`].
async fn bounded(check: impl Future<Output = anyhow::Result<String>>) -> anyhow::Result<String> {
    match tokio::time::timeout(CHECK_TIMEOUT, check).await {
        Ok(outcome) => outcome,
        Err(_) => bail!("no answer within {}s", CHECK_TIMEOUT.as_secs()),
    }
}

/// GET `url` expecting `status`; the detail is the status and the body.
async fn expect(
    url: &str,
    proxy: Option<SocketAddr>,
    status: StatusCode,
) -> anyhow::Result<String> {
    let body = get_expecting(url, proxy, status).await?;
    Ok(format!("{} {}", status.as_u16(), one_line(&body)))
}

/// GET /orders/3 on web: 200 and the order with id "3".
async fn order_three(web: SocketAddr) -> anyhow::Result<String> {
    let body = get_expecting(&format!("http://{web}/orders/3"), None, StatusCode::OK).await?;
    let order: serde_json::Value =
        serde_json::from_slice(&body).with_context(|| format!("not JSON: {}", one_line(&body)))?;
    if order["id"] != "3" {
        bail!("expected the order with id \"3\", got {order}");
    }
    Ok(format!("200 {order}"))
}

/// GET `url`; its body when the status is `status`, else an error with both.
async fn get_expecting(
    url: &str,
    proxy: Option<SocketAddr>,
    status: StatusCode,
) -> anyhow::Result<Bytes> {
    let (got, body) = http_get(url, proxy).await?;
    if got != status {
        bail!("expected {status}, got {got} {}", one_line(&body));
    }
    Ok(body)
}

/// A response body on one line: compact JSON, or the text with its
/// whitespace runs collapsed.
fn one_line(body: &[u8]) -> String {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(json) => json.to_string(),
        Err(_) => String::from_utf8_lossy(body)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" "),
    }
}

/// One HTTP/1.1 GET: straight to the URL's host, or in absolute form to `proxy`.
async fn http_get(url: &str, proxy: Option<SocketAddr>) -> anyhow::Result<(StatusCode, Bytes)> {
    let uri: Uri = url.parse().with_context(|| format!("bad URL {url}"))?;
    let authority = uri
        .authority()
        .with_context(|| format!("URL without a host: {url}"))?
        .clone();
    let connect_to = proxy.map_or_else(|| authority.to_string(), |proxy| proxy.to_string());
    let stream = TcpStream::connect(&connect_to)
        .await
        .with_context(|| format!("connecting to {connect_to}"))?;
    let target = match proxy {
        Some(_) => uri.clone(),
        None => uri
            .path_and_query()
            .map_or("/", |path| path.as_str())
            .parse()
            .context("request path")?,
    };
    let (status, _headers, body) = send_get(stream, target, authority.as_str(), &[]).await?;
    Ok((status, body))
}

/// One HTTPS GET of `path` on `addr` for `host` (SNI and Host), trusting
/// only the PEM roots in `ca`: status, headers and body.
async fn https_get(
    addr: SocketAddr,
    host: &str,
    path: &str,
    ca: &Path,
    headers: &[(&str, &str)],
) -> anyhow::Result<(StatusCode, hyper::HeaderMap, Bytes)> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for cert in
        CertificateDer::pem_file_iter(ca).with_context(|| format!("reading {}", ca.display()))?
    {
        roots
            .add(cert.with_context(|| format!("reading {}", ca.display()))?)
            .context("adding the demo public CA")?;
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS versions")?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let name = ServerName::try_from(host.to_owned()).context("server name")?;
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, stream)
        .await
        .context("TLS handshake")?;
    send_get(tls, path.parse().context("request path")?, host, headers).await
}

/// Sends one HTTP/1.1 GET of `target` with `Host: host` and `headers` over `io`.
async fn send_get<I>(
    io: I,
    target: Uri,
    host: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<(StatusCode, hyper::HeaderMap, Bytes)>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .context("HTTP handshake")?;
    // Ends once the response is read and `sender` is dropped.
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "check connection failed");
        }
    });
    let mut request = Request::get(target).header(HOST, host);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Empty::<Bytes>::new())
        .context("building the request")?;
    let response = sender
        .send_request(request)
        .await
        .context("sending the request")?;
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .context("reading the response body")?
        .to_bytes();
    Ok((status, headers, body))
}

/// GET /api/orders/3 through the edge over HTTPS: 200 and order 3, which
/// took edge → web sidecar → web → orders sidecar → orders.
async fn edge_order_three(ports: &Ports, dir: &Path) -> anyhow::Result<String> {
    let ca = dir.join("certs/public-ca/bundle.pem");
    let (status, _, body) =
        https_get(ports.edge_https, API_HOST, "/api/orders/3", &ca, &[]).await?;
    if status != StatusCode::OK {
        bail!("expected 200, got {status} {}", one_line(&body));
    }
    let order: serde_json::Value =
        serde_json::from_slice(&body).with_context(|| format!("not JSON: {}", one_line(&body)))?;
    if order["id"] != "3" {
        bail!("expected the order with id \"3\", got {order}");
    }
    Ok(format!("200 {order}"))
}

/// An edge GET over HTTPS with the demo public CA; the body must be JSON.
async fn edge_json(
    ports: &Ports,
    dir: &Path,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<(hyper::HeaderMap, serde_json::Value)> {
    let ca = dir.join("certs/public-ca/bundle.pem");
    let (status, headers, body) = https_get(ports.edge_https, API_HOST, path, &ca, headers).await?;
    if status != StatusCode::OK {
        bail!("expected 200, got {status} {}", one_line(&body));
    }
    let json =
        serde_json::from_slice(&body).with_context(|| format!("not JSON: {}", one_line(&body)))?;
    Ok((headers, json))
}

/// A header's value, or "" when absent.
fn header<'a>(headers: &'a hyper::HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// The same order twice: the second answer comes from the edge's cache.
async fn edge_cache(ports: &Ports, dir: &Path) -> anyhow::Result<String> {
    let (first, _) = edge_json(ports, dir, "/api/orders/5", &[]).await?;
    let (second, order) = edge_json(ports, dir, "/api/orders/5", &[]).await?;
    let seen = (header(&first, "x-cache"), header(&second, "x-cache"));
    if seen != ("MISS", "HIT") || order["id"] != "5" {
        bail!("expected x-cache MISS then HIT and order 5, got {seen:?} {order}");
    }
    Ok(format!("x-cache {} then {}", seen.0, seen.1))
}

/// Three parts in one answer; the optional one that fails is named.
async fn edge_summary(ports: &Ports, dir: &Path) -> anyhow::Result<String> {
    let (_, summary) = edge_json(ports, dir, "/api/summary", &[]).await?;
    if summary["first"]["id"] != "1"
        || summary["third"]["id"] != "3"
        || summary["_errors"]["missing"]["status"] != 404
    {
        bail!("expected orders 1 and 3 and the missing part's 404, got {summary}");
    }
    Ok(format!(
        "orders 1 and 3, missing: {}",
        summary["_errors"]["missing"]
    ))
}

/// A client that accepts gzip gets gzip.
async fn edge_compressed(ports: &Ports, dir: &Path) -> anyhow::Result<String> {
    let ca = dir.join("certs/public-ca/bundle.pem");
    let accept = [("accept-encoding", "gzip")];
    let (status, headers, body) =
        https_get(ports.edge_https, API_HOST, "/api/headers", &ca, &accept).await?;
    let encoding = header(&headers, "content-encoding");
    if status != StatusCode::OK || encoding != "gzip" || !body.starts_with(&[0x1f, 0x8b]) {
        bail!("expected 200 gzip, got {status} content-encoding {encoding:?}");
    }
    Ok(format!("200, {} gzip bytes", body.len()))
}

/// The orders gRPC app called as REST by the HTTP rule in orders.proto.
async fn edge_grpc_json(ports: &Ports, dir: &Path) -> anyhow::Result<String> {
    let (headers, order) = edge_json(ports, dir, "/v1/orders/3", &[]).await?;
    if order["id"] != "3" || !header(&headers, "content-type").starts_with("application/json") {
        bail!("expected order 3 as JSON, got {order}");
    }
    Ok(format!("200 {order}"))
}

/// /partner through the edge: 401 without the demo partner's API key, 200
/// with it, the consumer's name reaching web.
async fn edge_partner(ports: &Ports, dir: &Path) -> anyhow::Result<String> {
    let ca = dir.join("certs/public-ca/bundle.pem");
    let key_file = dir.join("partner-api-key");
    let key = std::fs::read_to_string(&key_file)
        .with_context(|| format!("reading {}", key_file.display()))?;
    let (status, headers, _) = https_get(ports.edge_https, API_HOST, "/partner", &ca, &[]).await?;
    let reason = headers
        .get("x-mesh-error")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if status != StatusCode::UNAUTHORIZED || reason != "unauthenticated" {
        bail!("without a key: expected 401 unauthenticated, got {status} {reason:?}");
    }
    let with_key = [("x-api-key", key.trim())];
    let (status, _, body) =
        https_get(ports.edge_https, API_HOST, "/partner", &ca, &with_key).await?;
    if status != StatusCode::OK {
        bail!(
            "with the key: expected 200, got {status} {}",
            one_line(&body)
        );
    }
    let seen: serde_json::Value =
        serde_json::from_slice(&body).with_context(|| format!("not JSON: {}", one_line(&body)))?;
    let consumer = seen["x-consumer"].as_str().unwrap_or("");
    if consumer != "demo-partner" {
        bail!(
            "web should see x-consumer: demo-partner, saw {}",
            one_line(&body)
        );
    }
    Ok(format!(
        "401 without the key, 200 with it (web sees x-consumer: {consumer})"
    ))
}

/// A path no edge route matches: 404 with `x-mesh-error: no_route`.
async fn edge_no_route(ports: &Ports, dir: &Path) -> anyhow::Result<String> {
    let ca = dir.join("certs/public-ca/bundle.pem");
    let (status, headers, _) =
        https_get(ports.edge_https, API_HOST, "/nothing/here", &ca, &[]).await?;
    let reason = headers
        .get("x-mesh-error")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if status != StatusCode::NOT_FOUND || reason != "no_route" {
        bail!("expected 404 no_route, got {status} {reason:?}");
    }
    Ok(format!("{status} x-mesh-error: {reason}"))
}

/// Plain HTTP to the edge: a redirect to the same path over HTTPS.
async fn edge_redirect(ports: &Ports) -> anyhow::Result<String> {
    let stream = TcpStream::connect(ports.edge_http)
        .await
        .with_context(|| format!("connecting to {}", ports.edge_http))?;
    let (status, headers, _) = send_get(stream, "/api/headers?x=1".parse()?, API_HOST, &[]).await?;
    let location = headers
        .get(hyper::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let expected = format!(
        "https://{API_HOST}:{}/api/headers?x=1",
        ports.edge_https.port()
    );
    if status != StatusCode::MOVED_PERMANENTLY || location != expected {
        bail!("expected 301 to {expected}, got {status} to {location:?}");
    }
    Ok(format!("{status} to {location}"))
}

/// Plaintext HTTP straight to a strict inbound: the connection must close
/// without an answer.
async fn refuses_plaintext(addr: SocketAddr) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .context("sending the request")?;
    let mut answer = Vec::new();
    match stream.read_to_end(&mut answer).await {
        Ok(_) if answer.is_empty() => Ok("connection closed without an answer".to_owned()),
        Ok(_) => bail!("answered in plaintext: {}", one_line(&answer)),
        Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => {
            Ok("connection reset without an answer".to_owned())
        }
        Err(error) => Err(error).context("reading the answer"),
    }
}

/// GET `url` (a sidecar's `/certs`): 200 and the identity of `service`.
async fn identity(url: &str, service: &str) -> anyhow::Result<String> {
    let body = get_expecting(url, None, StatusCode::OK).await?;
    let cert: CertInfo = serde_json::from_slice(&body)
        .with_context(|| format!("not a /certs document: {}", one_line(&body)))?;
    let expected = mesh_api::ca::spiffe_id(TRUST_DOMAIN, service);
    if cert.identity != expected {
        bail!("expected identity {expected}, got {}", cert.identity);
    }
    let minutes = cert.expires_in_seconds / 60;
    Ok(format!(
        "200 {}, expires in {}h{:02}m",
        cert.identity,
        minutes / 60,
        minutes % 60
    ))
}

/// Sends one text message over a WebSocket and expects it back.
async fn websocket_echo(addr: SocketAddr) -> anyhow::Result<String> {
    const TEXT: &str = "hello through the mesh";
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let (mut socket, _response) = tokio_tungstenite::client_async(format!("ws://{addr}/"), stream)
        .await
        .context("WebSocket handshake")?;
    socket
        .send(Message::text(TEXT))
        .await
        .context("sending a message")?;
    match socket.next().await {
        Some(Ok(Message::Text(reply))) if reply.as_str() == TEXT => {}
        Some(Ok(other)) => bail!("expected {TEXT:?} back, got {other:?}"),
        Some(Err(error)) => bail!("reading the reply: {error}"),
        None => bail!("connection closed before the reply"),
    }
    // The echo is what we came for; a messy close is not a failure.
    let _ = socket.close(None).await;
    Ok(format!("{TEXT:?} came back"))
}

/// `path` relative to the current directory when it lies below it, else as is.
fn shown(path: &Path) -> String {
    let relative = std::env::current_dir()
        .ok()
        .and_then(|cwd| path.strip_prefix(cwd).ok().map(Path::to_owned));
    match relative {
        Some(relative) if relative.as_os_str().is_empty() => ".".to_owned(),
        Some(relative) => relative.display().to_string(),
        None => path.display().to_string(),
    }
}

/// A path as a command-line argument (it must be valid UTF-8 to pass as one).
fn path_arg(path: &Path) -> anyhow::Result<String> {
    path.to_str()
        .map(str::to_owned)
        .with_context(|| format!("{} is not valid UTF-8", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_sidecar_listening_line_in_both_formats() {
        let json = r#"{"timestamp":"2026-01-01T00:00:00Z","level":"INFO","message":"listening","admin":"127.0.0.1:7901","listeners":"inbound=127.0.0.1:7101 proxy=127.0.0.1:7110","target":"sidecar::app"}"#;
        let pretty = "2026-01-01T00:00:00Z  INFO sidecar::app: listening admin=127.0.0.1:7901 listeners=inbound=127.0.0.1:7101 proxy=127.0.0.1:7110";
        for line in [json, pretty] {
            let up = sidecar_listening(line).expect(line);
            assert_eq!(up.admin, "127.0.0.1:7901");
            assert_eq!(up.listeners, "inbound=127.0.0.1:7101 proxy=127.0.0.1:7110");
        }
        assert!(sidecar_listening(r#"{"message":"listener started","addr":"x"}"#).is_none());
        assert!(sidecar_listening("INFO sidecar::app: listener started").is_none());
    }

    #[test]
    fn reads_the_app_listening_line() {
        let addr = app_listening(r#"{"listening":"127.0.0.1:4000"}"#);
        assert_eq!(addr, Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 4000))));
        assert_eq!(app_listening("INFO listening addr=127.0.0.1:4000"), None);
    }

    #[test]
    fn generated_configs_load_with_and_without_mtls() {
        let ports = Ports::new(7100).expect("7100 + 803 fits a port");
        let app = SocketAddr::from((Ipv4Addr::LOCALHOST, 4000));
        for mtls in [true, false] {
            for service in topology(&ports, mtls) {
                let yaml = sidecar_config(&service, app);
                let (config, _) = mesh_api::config::load(&yaml)
                    .unwrap_or_else(|errors| panic!("{errors:?} in\n{yaml}"));
                assert_eq!(config.identity.is_some(), mtls, "{yaml}");
                let authz = config.inbound.and_then(|inbound| inbound.authz);
                assert_eq!(authz.is_some(), mtls && service.name != "web", "{yaml}");
            }
            let yaml = edge_config(&ports, mtls, &mesh_api::apikey::digest("key"));
            let (config, _) = mesh_api::config::load(&yaml)
                .unwrap_or_else(|errors| panic!("{errors:?} in\n{yaml}"));
            assert_eq!(config.mode, mesh_api::config::Mode::Edge);
            assert_eq!(config.identity.is_some(), mtls, "{yaml}");
        }
    }

    #[test]
    fn ports_follow_the_base_and_stay_in_range() {
        let ports = Ports::new(7100).expect("7100 + 803 fits a port");
        assert_eq!(ports.web_inbound.port(), 7101);
        assert_eq!(ports.web_orders.port(), 7111);
        assert_eq!(ports.chat_admin.port(), 7903);
        assert_eq!(ports.edge_https.port(), 7543);
        assert!(Ports::new(u16::MAX - 802).is_err());
    }
}
