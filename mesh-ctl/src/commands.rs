//! One function per `mesh-ctl` command: ask each proxy's admin API (in
//! parallel when there are several), then render a table or JSON.
//! Reads: the admin API through `AdminClient`. Writes: a `Report`, the text
//! for stdout and the problems for stderr; nothing is printed here.
//! Errors: a proxy that cannot be asked becomes a problem, which makes the
//! exit status 1; the other proxies are still shown.

use std::time::Duration;

use mesh_api::admin::{CertInfo, ClusterInfo, ConfigStatus, ListenerInfo};
use serde::Serialize;
use serde_json::{json, Value};

use crate::admin_client::{AdminClient, ClientError, ErrorKind, ReloadOutcome};
use crate::table;

/// How to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Aligned columns for people.
    Table,
    /// Pretty JSON for scripts.
    Json,
}

/// What every command needs besides its proxies.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub output: Output,
    pub timeout: Duration,
}

/// What a command has to say. A non-empty `problems` means exit status 1.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub stdout: String,
    pub problems: Vec<String>,
}

/// One proxy's answer: its admin address and what it said.
pub(crate) type Answer<T> = (String, Result<T, ClientError>);

/// `mesh-ctl status`: one line per proxy; a proxy that cannot be reached or
/// is not ready is a problem.
pub fn status(admins: &[String], opts: Options) -> Report {
    let answers = ask_each(admins, opts.timeout, fetch_status);
    let mut problems = Vec::new();
    for (admin, answer) in &answers {
        match answer {
            Err(err) => problems.push(err.to_string()),
            Ok(status) if !status.ready => {
                problems.push(format!("proxy at {admin} is not ready (draining)"))
            }
            Ok(_) => {}
        }
    }
    let stdout = match opts.output {
        Output::Json => {
            let proxies = answers.iter().map(|(admin, answer)| StatusJson {
                admin,
                reachable: !answer.as_ref().is_err_and(ClientError::is_unreachable),
                status: answer.as_ref().ok(),
                error: answer.as_ref().err().map(ToString::to_string),
            });
            to_json(&proxies.collect::<Vec<_>>())
        }
        Output::Table => status_table(&answers),
    };
    Report { stdout, problems }
}

/// What `status` shows of one proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProxyStatus {
    pub mode: String,
    pub service: String,
    pub version: String,
    pub uptime_seconds: u64,
    pub config_hash: String,
    pub ready: bool,
    pub generation: u64,
    pub last_error: Vec<String>,
    pub identity: Option<String>,
    pub cert_expires_in_seconds: Option<i64>,
    pub listeners: usize,
    pub clusters: usize,
}

/// One element of `status --output json`.
#[derive(Serialize)]
struct StatusJson<'a> {
    admin: &'a str,
    reachable: bool,
    #[serde(flatten)]
    status: Option<&'a ProxyStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

fn fetch_status(client: &AdminClient) -> Result<ProxyStatus, ClientError> {
    let status = match client.status() {
        Ok(status) => status,
        // A proxy from before `GET /status`: what the older endpoints tell.
        Err(err) if matches!(err.kind, ErrorKind::Status { status: 404, .. }) => {
            let config = client.config()?;
            mesh_api::admin::StatusInfo {
                mode: "-".into(),
                service: "-".into(),
                version: client.version()?.version,
                uptime_seconds: 0,
                config_hash: mesh_api::admin::config_hash(&config.config),
                generation: config.generation,
                last_error: config.last_error,
                identity: None,
                cert_expires_in_seconds: None,
                ready: client.ready()?,
            }
        }
        Err(err) => return Err(err),
    };
    Ok(ProxyStatus {
        mode: status.mode,
        service: status.service,
        version: status.version,
        uptime_seconds: status.uptime_seconds,
        config_hash: status.config_hash,
        ready: status.ready,
        generation: status.generation,
        last_error: status.last_error,
        identity: status.identity,
        cert_expires_in_seconds: status.cert_expires_in_seconds,
        listeners: client.listeners()?.len(),
        clusters: client.clusters()?.len(),
    })
}

fn status_table(answers: &[Answer<ProxyStatus>]) -> String {
    let header = [
        "ADMIN",
        "MODE",
        "SERVICE",
        "VERSION",
        "STATE",
        "UPTIME",
        "CONFIG",
        "GENERATION",
        "IDENTITY",
        "CERT-EXPIRES",
        "LISTENERS",
        "CLUSTERS",
        "LAST RELOAD",
    ];
    let rows: Vec<Vec<String>> = answers
        .iter()
        .map(|(admin, answer)| match answer {
            Ok(s) => vec![
                admin.clone(),
                s.mode.clone(),
                s.service.clone(),
                s.version.clone(),
                if s.ready { "ready" } else { "draining" }.into(),
                human_duration(s.uptime_seconds),
                s.config_hash.chars().take(12).collect(),
                s.generation.to_string(),
                s.identity.clone().unwrap_or_else(|| "-".into()),
                match s.cert_expires_in_seconds.map(u64::try_from) {
                    Some(Ok(secs)) if secs > 0 => human_duration(secs),
                    Some(_) => "expired".into(),
                    None => "-".into(),
                },
                s.listeners.to_string(),
                s.clusters.to_string(),
                if s.last_error.is_empty() {
                    "ok"
                } else {
                    "failed"
                }
                .into(),
            ],
            Err(err) => {
                let state = if err.is_unreachable() {
                    "unreachable"
                } else {
                    "error"
                };
                let mut row = vec![
                    admin.clone(),
                    "-".into(),
                    "-".into(),
                    "-".into(),
                    state.into(),
                ];
                row.resize(header.len(), "-".into());
                row
            }
        })
        .collect();
    let mut out = table::render(&header, &rows);
    for (admin, answer) in answers {
        if let Ok(s) = answer {
            if !s.last_error.is_empty() {
                out.push_str(&last_reload_failure(admin, s.generation, &s.last_error));
            }
        }
    }
    out
}

fn last_reload_failure(admin: &str, generation: u64, errors: &[String]) -> String {
    let mut out = format!("\nlast reload of {admin} failed; generation {generation} still runs:\n");
    for error in errors {
        out.push_str(&format!("  - {error}\n"));
    }
    out
}

/// `mesh-ctl listeners`: KIND UPSTREAM CONFIGURED BOUND.
pub fn listeners(admins: &[String], opts: Options) -> Report {
    let answers = ask_each(admins, opts.timeout, AdminClient::listeners);
    let header = ["KIND", "UPSTREAM", "CONFIGURED", "BOUND"];
    per_proxy_report(&answers, opts.output, "listeners", &header, |listeners| {
        listeners.iter().map(listener_row).collect()
    })
}

fn listener_row(listener: &ListenerInfo) -> Vec<String> {
    vec![
        listener.kind.clone(),
        listener.upstream.clone().unwrap_or_else(|| "-".into()),
        listener.configured.clone(),
        listener.addr.clone(),
    ]
}

/// `mesh-ctl clusters`: one line per endpoint.
pub fn clusters(admins: &[String], opts: Options) -> Report {
    let answers = ask_each(admins, opts.timeout, AdminClient::clusters);
    let header = [
        "CLUSTER", "PROTOCOL", "SOURCE", "ENDPOINT", "WEIGHT", "STATE", "ACTIVE", "CONNS",
    ];
    per_proxy_report(&answers, opts.output, "clusters", &header, |clusters| {
        clusters.iter().flat_map(cluster_rows).collect()
    })
}

/// `static`, or `dns:NAME` / `srv:NAME`, marked `(failing)` while the last
/// resolution failed (the cluster then runs on its last known endpoints).
fn source_label(cluster: &ClusterInfo) -> String {
    let Some(discovery) = &cluster.discovery else {
        return cluster.source.clone();
    };
    let failing = discovery
        .last_error_at
        .is_some_and(|at| discovery.last_refresh.is_none_or(|ok| at > ok));
    let label = format!("{}:{}", discovery.source, discovery.name);
    if failing {
        format!("{label} (failing)")
    } else {
        label
    }
}

fn cluster_rows(cluster: &ClusterInfo) -> Vec<Vec<String>> {
    let lead = [
        cluster.name.clone(),
        cluster.protocol.clone(),
        source_label(cluster),
    ];
    if cluster.endpoints.is_empty() {
        let mut row = lead.to_vec();
        row.extend(std::iter::repeat_n("-".to_string(), 5));
        return vec![row];
    }
    cluster
        .endpoints
        .iter()
        .map(|endpoint| {
            let mut row = lead.to_vec();
            row.extend([
                endpoint.addr.clone(),
                endpoint.weight.to_string(),
                endpoint.state.clone(),
                endpoint.active_requests.to_string(),
                endpoint.connections.to_string(),
            ]);
            row
        })
        .collect()
}

/// The shape shared by `listeners` and `clusters`: one table, with a leading
/// ADMIN column when there are several proxies; in JSON, one object per
/// proxy, `{"admin": ..., key: [...]}` or `{"admin": ..., "error": ...}`.
fn per_proxy_report<T: Serialize>(
    answers: &[Answer<T>],
    output: Output,
    key: &str,
    header: &[&str],
    rows_of: impl Fn(&T) -> Vec<Vec<String>>,
) -> Report {
    let problems = answers
        .iter()
        .filter_map(|(_, answer)| answer.as_ref().err().map(ToString::to_string))
        .collect();
    let stdout = match output {
        Output::Json => {
            let proxies = answers
                .iter()
                .map(|(admin, answer)| ProxyJson { admin, key, answer });
            to_json(&proxies.collect::<Vec<_>>())
        }
        Output::Table if answers.iter().all(|(_, answer)| answer.is_err()) => String::new(),
        Output::Table => {
            let several = answers.len() > 1;
            let header: Vec<&str> = several
                .then_some("ADMIN")
                .into_iter()
                .chain(header.iter().copied())
                .collect();
            let mut rows = Vec::new();
            for (admin, answer) in answers {
                let Ok(data) = answer else { continue };
                for row in rows_of(data) {
                    let admin = several.then(|| admin.clone());
                    rows.push(admin.into_iter().chain(row).collect());
                }
            }
            table::render(&header, &rows)
        }
    };
    Report { stdout, problems }
}

/// One element of the JSON of `per_proxy_report`: `{"admin": ..., key: data}`
/// or `{"admin": ..., "error": ...}`, fields in the order the proxy sent them.
struct ProxyJson<'a, T> {
    admin: &'a str,
    key: &'a str,
    answer: &'a Result<T, ClientError>,
}

impl<T: Serialize> Serialize for ProxyJson<'_, T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(2))?;
        map.serialize_entry("admin", self.admin)?;
        match self.answer {
            Ok(data) => map.serialize_entry(self.key, data)?,
            Err(err) => map.serialize_entry("error", &err.to_string())?,
        }
        map.end()
    }
}

/// `mesh-ctl certs`: one line per proxy: its SPIFFE ID, serial, time left
/// and the last failure to load new files. A proxy without an identity is
/// shown as such; an unreachable proxy or an expired certificate is a problem.
pub fn certs(admins: &[String], opts: Options) -> Report {
    certs_report(
        &ask_each(admins, opts.timeout, AdminClient::certs),
        opts.output,
    )
}

fn certs_report(answers: &[Answer<Option<CertInfo>>], output: Output) -> Report {
    let mut problems = Vec::new();
    for (admin, answer) in answers {
        match answer {
            Err(err) => problems.push(err.to_string()),
            Ok(Some(cert)) if cert.expires_in_seconds <= 0 => problems.push(format!(
                "certificate of the proxy at {admin} ({}) expired {} ago",
                cert.identity,
                human_duration(cert.expires_in_seconds.unsigned_abs())
            )),
            Ok(_) => {}
        }
    }
    let stdout = match output {
        Output::Json => {
            let proxies = answers.iter().map(|(admin, answer)| ProxyJson {
                admin,
                key: "cert",
                answer,
            });
            to_json(&proxies.collect::<Vec<_>>())
        }
        Output::Table => certs_table(answers),
    };
    Report { stdout, problems }
}

fn certs_table(answers: &[Answer<Option<CertInfo>>]) -> String {
    let header = ["ADMIN", "IDENTITY", "SERIAL", "EXPIRES-IN", "LAST-ERROR"];
    let rows: Vec<Vec<String>> = answers
        .iter()
        .map(|(admin, answer)| {
            let mut row = vec![admin.clone()];
            match answer {
                Ok(Some(cert)) => row.extend([
                    cert.identity.clone(),
                    cert.serial.clone(),
                    match u64::try_from(cert.expires_in_seconds) {
                        Ok(secs) if secs > 0 => human_duration(secs),
                        _ => "expired".into(),
                    },
                    cert.last_error.clone().unwrap_or_else(|| "-".into()),
                ]),
                Ok(None) => row.push("no identity".into()),
                Err(err) if err.is_unreachable() => row.push("unreachable".into()),
                Err(_) => row.push("error".into()),
            }
            row.resize(header.len(), "-".into());
            row
        })
        .collect();
    table::render(&header, &rows)
}

/// `86399` → `23h59m`: the two largest units, a zero second unit left out
/// (`1d`, `1d2h`, `59m30s`, `45s`).
pub fn human_duration(secs: u64) -> String {
    let units = [(86_400, "d"), (3_600, "h"), (60, "m"), (1, "s")];
    let Some(first) = units.iter().position(|&(size, _)| secs >= size) else {
        return "0s".into();
    };
    let (size, unit) = units[first];
    let mut text = format!("{}{unit}", secs / size);
    if let Some(&(next, next_unit)) = units.get(first + 1) {
        let rest = secs % size / next;
        if rest > 0 {
            text.push_str(&format!("{rest}{next_unit}"));
        }
    }
    text
}

/// `mesh-ctl config`: the effective config (as YAML in table output) with
/// its file, generation and the last reload error as YAML comments.
pub fn config(admin: &str, opts: Options) -> Report {
    let client = AdminClient::new(admin, opts.timeout);
    match client.config() {
        Err(err) => Report::failed(err.to_string()),
        Ok(status) => Report {
            stdout: match opts.output {
                Output::Json => to_json(&status),
                Output::Table => config_text(client.addr(), &status),
            },
            problems: Vec::new(),
        },
    }
}

fn config_text(admin: &str, status: &ConfigStatus) -> String {
    let mut out = format!(
        "# admin API:  {admin}\n# file:       {}\n# generation: {}\n",
        status.path, status.generation
    );
    if status.last_error.is_empty() {
        out.push_str("# last reload: ok\n");
    } else {
        out.push_str("# last reload: failed; this config still runs:\n");
        for error in &status.last_error {
            out.push_str(&format!("#   - {error}\n"));
        }
    }
    match serde_norway::to_string(&status.config) {
        Ok(yaml) => out.push_str(&yaml),
        Err(_) => out.push_str(&to_json(&status.config)),
    }
    out
}

/// `mesh-ctl reload`: a rejected config is a problem listing its errors.
pub fn reload(admin: &str, opts: Options) -> Report {
    let client = AdminClient::new(admin, opts.timeout);
    let outcome = match client.reload() {
        Ok(outcome) => outcome,
        Err(err) => return Report::failed(err.to_string()),
    };
    let mut report = Report::default();
    if !outcome.reloaded {
        let mut problem = format!(
            "config reload rejected by {}; the running config is unchanged:",
            client.addr()
        );
        for error in &outcome.errors {
            problem.push_str(&format!("\n  - {error}"));
        }
        report.problems.push(problem);
    }
    report.stdout = match opts.output {
        Output::Json => to_json(&ReloadJson {
            admin: client.addr(),
            outcome: &outcome,
        }),
        Output::Table if outcome.reloaded => match outcome.generation {
            Some(generation) => format!("reloaded {}: generation {generation}\n", client.addr()),
            None => format!("reloaded {}\n", client.addr()),
        },
        Output::Table => String::new(),
    };
    report
}

/// The JSON of `reload`: the proxy's answer with its address first.
#[derive(Serialize)]
struct ReloadJson<'a> {
    admin: &'a str,
    #[serde(flatten)]
    outcome: &'a ReloadOutcome,
}

/// `mesh-ctl metrics`: the Prometheus text, optionally only the lines that
/// contain `grep`; in JSON, the samples as `{"series", "value"}`.
pub fn metrics(admin: &str, grep: Option<&str>, opts: Options) -> Report {
    let text = match AdminClient::new(admin, opts.timeout).metrics() {
        Ok(text) => text,
        Err(err) => return Report::failed(err.to_string()),
    };
    let lines = text
        .lines()
        .filter(|line| grep.is_none_or(|needle| line.contains(needle)));
    let stdout = match opts.output {
        Output::Table => lines.map(|line| format!("{line}\n")).collect(),
        Output::Json => to_json(&lines.filter_map(metric_sample).collect::<Vec<_>>()),
    };
    Report {
        stdout,
        problems: Vec::new(),
    }
}

/// `name{label="v"} 1.5` → `{"series": "name{label=\"v\"}", "value": 1.5}`;
/// comments and blank lines → `None`. A value that is not a finite number
/// (`NaN`, `+Inf`) stays a string.
fn metric_sample(line: &str) -> Option<Value> {
    if line.trim().is_empty() || line.starts_with('#') {
        return None;
    }
    // The series ends at the first space outside the label braces, where
    // a quoted label value may hold spaces, braces and escaped quotes.
    let (mut in_labels, mut in_quotes, mut escaped) = (false, false, false);
    let mut end = None;
    for (i, c) in line.char_indices() {
        if !in_labels {
            if c == '{' {
                in_labels = true;
            } else if c.is_whitespace() {
                end = Some(i);
                break;
            }
        } else if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == '"' {
            in_quotes = !in_quotes;
        } else if c == '}' && !in_quotes {
            in_labels = false;
        }
    }
    let (series, rest) = line.split_at(end?);
    let value = rest.split_whitespace().next()?;
    let number = match value.parse::<i64>() {
        Ok(integer) => Some(integer.into()),
        Err(_) => value.parse().ok().and_then(serde_json::Number::from_f64),
    };
    let value = number.map_or_else(|| Value::String(value.to_string()), Value::Number);
    Some(json!({ "series": series, "value": value }))
}

impl Report {
    fn failed(problem: String) -> Self {
        Self {
            stdout: String::new(),
            problems: vec![problem],
        }
    }
}

/// Runs `ask` against every admin address at once; answers keep the order
/// of `admins`.
pub(crate) fn ask_each<T: Send>(
    admins: &[String],
    timeout: Duration,
    ask: impl Fn(&AdminClient) -> Result<T, ClientError> + Sync,
) -> Vec<Answer<T>> {
    let ask = &ask;
    std::thread::scope(|scope| {
        let asking: Vec<_> = admins
            .iter()
            .map(|admin| {
                let client = AdminClient::new(admin, timeout);
                scope.spawn(move || (client.addr().to_string(), ask(&client)))
            })
            .collect();
        asking
            .into_iter()
            .map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    })
}

pub(crate) fn to_json<T: Serialize + ?Sized>(value: &T) -> String {
    let mut text = serde_json::to_string_pretty(value)
        .unwrap_or_else(|err| format!("{{\"error\":\"{err}\"}}"));
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_api::admin::EndpointInfo;

    fn answer<T>(admin: &str, data: T) -> Answer<T> {
        (admin.to_string(), Ok(data))
    }

    fn orders() -> ClusterInfo {
        let endpoint = |addr: &str, weight| EndpointInfo {
            addr: addr.into(),
            weight,
            state: "healthy".into(),
            active_requests: 0,
            connections: 1,
            latency_ms: 1.0,
        };
        ClusterInfo {
            name: "orders".into(),
            protocol: "http".into(),
            source: "static".into(),
            endpoints: vec![endpoint("127.0.0.1:2", 1), endpoint("127.0.0.1:3", 2)],
            discovery: None,
        }
    }

    #[test]
    fn dns_clusters_name_their_source_and_say_when_failing() {
        let mut cluster = ClusterInfo {
            name: "orders".into(),
            protocol: "grpc".into(),
            source: "dns".into(),
            endpoints: vec![],
            discovery: Some(mesh_api::admin::DiscoveryInfo {
                source: "dns".into(),
                name: "orders.mesh.local".into(),
                port: Some(15006),
                last_refresh: Some(100),
                ttl_seconds: Some(5),
                last_error: Some("timeout".into()),
                last_error_at: Some(90),
                failures: 0,
            }),
        };
        assert_eq!(source_label(&cluster), "dns:orders.mesh.local");
        if let Some(d) = cluster.discovery.as_mut() {
            d.last_error_at = Some(110);
        }
        assert_eq!(source_label(&cluster), "dns:orders.mesh.local (failing)");
    }

    #[test]
    fn clusters_table_has_a_row_per_endpoint() {
        let empty = ClusterInfo {
            name: "inbound".into(),
            protocol: "auto".into(),
            source: "static".into(),
            endpoints: vec![],
            discovery: None,
        };
        let report = per_proxy_report(
            &[answer("a:1", vec![orders(), empty])],
            Output::Table,
            "clusters",
            &[
                "CLUSTER", "PROTOCOL", "SOURCE", "ENDPOINT", "WEIGHT", "STATE", "ACTIVE", "CONNS",
            ],
            |clusters| clusters.iter().flat_map(cluster_rows).collect(),
        );
        assert_eq!(
            report.stdout,
            "CLUSTER  PROTOCOL  SOURCE  ENDPOINT     WEIGHT  STATE    ACTIVE  CONNS\n\
             orders   http      static  127.0.0.1:2  1       healthy  0       1\n\
             orders   http      static  127.0.0.1:3  2       healthy  0       1\n\
             inbound  auto      static  -            -       -        -       -\n"
        );
        assert!(report.problems.is_empty());
    }

    #[test]
    fn several_proxies_get_an_admin_column_and_unreachable_ones_a_problem() {
        let listener = ListenerInfo {
            kind: "outbound".into(),
            upstream: Some("orders".into()),
            configured: "127.0.0.1:0".into(),
            addr: "127.0.0.1:4001".into(),
        };
        let unreachable = AdminClient::new("localhost", Duration::from_secs(1))
            .listeners()
            .expect_err("no port");
        let answers = vec![
            answer("a:1", vec![listener.clone()]),
            ("localhost".to_string(), Err(unreachable)),
        ];
        let header = ["KIND", "UPSTREAM", "CONFIGURED", "BOUND"];
        let rows =
            |l: &Vec<ListenerInfo>| -> Vec<Vec<String>> { l.iter().map(listener_row).collect() };
        let report = per_proxy_report(&answers, Output::Table, "listeners", &header, rows);
        assert_eq!(
            report.stdout,
            "ADMIN  KIND      UPSTREAM  CONFIGURED   BOUND\n\
             a:1    outbound  orders    127.0.0.1:0  127.0.0.1:4001\n"
        );
        assert_eq!(
            report.problems,
            ["cannot reach admin API at localhost: invalid address: expected HOST:PORT"]
        );
        let json: Value = serde_json::from_str(
            &per_proxy_report(&answers, Output::Json, "listeners", &header, rows).stdout,
        )
        .expect("JSON output parses");
        assert_eq!(json[0]["listeners"][0]["upstream"], "orders");
        assert_eq!(json[1]["admin"], "localhost");
        assert!(json[1]["error"].is_string());
    }

    #[test]
    fn status_table_shows_state_and_last_reload_failure() {
        let status = ProxyStatus {
            mode: "sidecar".into(),
            service: "web".into(),
            version: "0.1.0".into(),
            uptime_seconds: 3_700,
            config_hash: "0123456789abcdef".into(),
            ready: false,
            generation: 3,
            last_error: vec!["service: must not be empty".into()],
            identity: None,
            cert_expires_in_seconds: None,
            listeners: 3,
            clusters: 2,
        };
        let text = status_table(&[answer("127.0.0.1:15000", status)]);
        assert_eq!(
            text,
            "ADMIN            MODE     SERVICE  VERSION  STATE     UPTIME  CONFIG        GENERATION  IDENTITY  CERT-EXPIRES  LISTENERS  CLUSTERS  LAST RELOAD\n\
             127.0.0.1:15000  sidecar  web      0.1.0    draining  1h1m    0123456789ab  3           -         -             3          2         failed\n\
             \n\
             last reload of 127.0.0.1:15000 failed; generation 3 still runs:\n  \
             - service: must not be empty\n"
        );
    }

    fn cert(identity: &str, expires_in_seconds: i64, last_error: Option<&str>) -> CertInfo {
        CertInfo {
            identity: identity.into(),
            serial: "4a0f".into(),
            not_before: 1_700_000_000,
            not_after: 1_700_086_400,
            expires_in_seconds,
            trust_anchors: 1,
            files: mesh_api::admin::CertFiles {
                cert: "/etc/mesh/cert.pem".into(),
                key: "/etc/mesh/key.pem".into(),
                bundle: "/etc/mesh/bundle.pem".into(),
            },
            last_error: last_error.map(String::from),
        }
    }

    #[test]
    fn certs_table_shows_identity_expiry_and_proxies_without_one() {
        let unreachable = AdminClient::new("localhost", Duration::from_secs(1))
            .certs()
            .expect_err("no port");
        let answers = vec![
            answer(
                "a:1",
                Some(cert("spiffe://mesh.local/svc/web", 86_399, None)),
            ),
            answer(
                "b:2",
                Some(cert(
                    "spiffe://mesh.local/svc/orders",
                    -5,
                    Some("cannot read /etc/mesh/key.pem: permission denied"),
                )),
            ),
            answer("c:3", None),
            ("localhost".to_string(), Err(unreachable)),
        ];
        let report = certs_report(&answers, Output::Table);
        assert_eq!(
            report.stdout,
            "ADMIN      IDENTITY                        SERIAL  EXPIRES-IN  LAST-ERROR\n\
             a:1        spiffe://mesh.local/svc/web     4a0f    23h59m      -\n\
             b:2        spiffe://mesh.local/svc/orders  4a0f    expired     cannot read /etc/mesh/key.pem: permission denied\n\
             c:3        no identity                     -       -           -\n\
             localhost  unreachable                     -       -           -\n"
        );
        // No identity is not a problem; expired and unreachable are.
        assert_eq!(
            report.problems,
            [
                "certificate of the proxy at b:2 (spiffe://mesh.local/svc/orders) expired 5s ago",
                "cannot reach admin API at localhost: invalid address: expected HOST:PORT",
            ]
        );

        let json: Value = serde_json::from_str(&certs_report(&answers, Output::Json).stdout)
            .expect("JSON output parses");
        assert_eq!(json[0]["admin"], "a:1");
        assert_eq!(json[0]["cert"]["identity"], "spiffe://mesh.local/svc/web");
        assert_eq!(json[0]["cert"]["expires_in_seconds"], 86_399);
        assert!(json[2]["cert"].is_null(), "no identity is null");
        assert!(json[3]["error"].is_string());
    }

    #[test]
    fn human_durations() {
        let cases = [
            (0, "0s"),
            (45, "45s"),
            (60, "1m"),
            (3_570, "59m30s"),
            (3_600, "1h"),
            (86_399, "23h59m"),
            (86_400, "1d"),
            (93_600, "1d2h"),
            (90_061, "1d1h"),
            (3_650 * 86_400, "3650d"),
        ];
        for (secs, text) in cases {
            assert_eq!(human_duration(secs), text, "{secs}");
        }
    }

    #[test]
    fn metric_samples_split_series_and_value() {
        let sample = |line| metric_sample(line).map(|v| v.to_string());
        assert_eq!(sample("# TYPE requests counter"), None);
        assert_eq!(sample(""), None);
        assert_eq!(
            sample("requests_total 12"),
            Some(r#"{"series":"requests_total","value":12}"#.into())
        );
        assert_eq!(
            sample(r#"latency_bucket{le="0.5",path="a b\"}"} 3 1700000000"#),
            Some(r#"{"series":"latency_bucket{le=\"0.5\",path=\"a b\\\"}\"}","value":3}"#.into())
        );
        assert_eq!(
            sample("x_bucket{le=\"+Inf\"} +Inf"),
            Some(r#"{"series":"x_bucket{le=\"+Inf\"}","value":"+Inf"}"#.into())
        );
        assert_eq!(
            sample("seconds_sum 0.25"),
            Some(r#"{"series":"seconds_sum","value":0.25}"#.into())
        );
        assert_eq!(sample("no_value"), None);
    }
}
