//! `mesh-ctl`: the operator's view of the mesh, read from each sidecar's
//! admin API (JSON over HTTP/1.1, default `127.0.0.1:15000`), and the
//! owner of the mesh CA (`mesh-ctl ca init`, `mesh-ctl ca issue`).
//!
//! | module | owns |
//! |---|---|
//! | `main.rs` | the command line (clap), printing, the exit status |
//! | `commands.rs` | one function per command: ask the proxies, render |
//! | `ca.rs` | `ca init` and `ca issue`: write the CA and workload certificates through `mesh_api::ca` |
//! | `admin_client.rs` | the std-only HTTP/1.1 client and one method per admin endpoint |
//! | `table.rs` | the column-aligned table printer |
//! | `observe.rs` | `endpoints`, `routes`, `check` and `explain` |
//! | `tap.rs` | `tap`: a proxy's live requests, streamed from `GET /tap` |
//! | `discover.rs`, `dns.rs` | the proxies to ask: `--admin`, `--inventory FILE`, `--srv NAME` (a std-only DNS client) |
//! | `signals.rs` | `stat` and `graph`: golden signals and the service graph from two scrapes of `/metrics` (`mesh_api::golden`) |
//! | `top.rs` | `top`: the busiest routes, live (ratatui) |
//! | `cache.rs` | `cache stats` and `cache purge`: an edge proxy's response cache |
//! | `connections.rs` | `connections`: an edge proxy's open bridged WebSocket connections |
//! | `quota.rs` | `quota`: an edge proxy's rate limits and what is left of each for one consumer |
//! | `dashboard.rs` | `dashboard`: the dashboard page and its data for several proxies, on a std-only HTTP server |
//!
//! Exit status: 0 when every proxy answered (and, for `status`, is ready;
//! for `reload`, accepted the config; for `certs`, no certificate has
//! expired) and the `ca` files were written, 1 otherwise, 2 for a usage error.

mod admin_client;
mod apikey;
mod ca;
mod cache;
mod commands;
mod connections;
mod dashboard;
mod discover;
mod dns;
mod observe;
mod openapi;
mod quota;
mod signals;
mod table;
mod tap;
mod top;

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use commands::{Options, Output, Report};

/// The admin address used when neither `--admin` nor `MESH_ADMIN` is given.
const DEFAULT_ADMIN: &str = "127.0.0.1:15000";

#[derive(Debug, Parser)]
#[command(
    name = "mesh-ctl",
    version,
    about = "Inspect and control the mesh's sidecar proxies through their admin API"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Per proxy: version, ready or draining, config generation, last reload, counts.
    ///
    /// Exit 1 if any proxy is unreachable or not ready.
    Status {
        #[command(flatten)]
        proxies: Proxies,
        #[command(flatten)]
        common: Common,
    },
    /// Every listener: kind, upstream, configured and bound address.
    Listeners {
        #[command(flatten)]
        proxies: Proxies,
        #[command(flatten)]
        common: Common,
    },
    /// Every cluster and its endpoints: weight, state, active requests, connections.
    Clusters {
        #[command(flatten)]
        proxies: Proxies,
        #[command(flatten)]
        common: Common,
    },
    /// The endpoints of one upstream as each proxy sees them: state,
    /// weight, active requests, latency.
    ///
    /// Exit 1 if a proxy is unreachable or none has the upstream.
    Endpoints {
        /// The upstream (cluster) name.
        service: String,
        #[command(flatten)]
        proxies: Proxies,
        #[command(flatten)]
        common: Common,
    },
    /// Each proxy's routes in the order they are tried: the edge routes
    /// (match, action), or a sidecar's listeners and upstream hosts.
    Routes {
        #[command(flatten)]
        proxies: Proxies,
        #[command(flatten)]
        common: Common,
    },
    /// An edge proxy's rate limits and quotas and, for one consumer (or
    /// key), what is left of each (global limits: read from Redis).
    ///
    /// Exit 1 if the proxy is unreachable or a global count cannot be read.
    Quota {
        #[command(flatten)]
        proxy: Proxy,
        /// The bucket's key: the value of a one-part key (a consumer, a
        /// header's value); repeat for each part of a longer key.
        #[arg(long, alias = "key", value_name = "CONSUMER")]
        consumer: Vec<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Stream one proxy's live requests (metadata only), a line per request.
    ///
    /// Filters are exact unless said; all must hold. Stops after --limit
    /// events, after --duration, or on Ctrl-C.
    Tap {
        #[command(flatten)]
        proxy: Proxy,
        /// Only requests to this authority (host, or host:port).
        #[arg(long, value_name = "HOST")]
        authority: Option<String>,
        /// Only paths starting with this.
        #[arg(long, value_name = "PREFIX")]
        path_prefix: Option<String>,
        /// Only this method.
        #[arg(long, value_name = "METHOD")]
        method: Option<String>,
        /// Only this status code (503) or class (5xx).
        #[arg(long, value_name = "STATUS")]
        status: Option<String>,
        /// Only callers with this verified SPIFFE ID.
        #[arg(long, value_name = "SPIFFE-ID")]
        identity: Option<String>,
        /// Only inbound, outbound or edge requests.
        #[arg(long, value_name = "DIRECTION")]
        direction: Option<String>,
        /// Only requests that matched this edge route.
        #[arg(long, value_name = "ROUTE")]
        route: Option<String>,
        /// Only requests to this upstream.
        #[arg(long, value_name = "UPSTREAM")]
        upstream: Option<String>,
        /// Stop after N requests.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        limit: Option<u64>,
        /// At most N requests per second (the proxy's default is 100, its maximum 1000).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
        rate: Option<u32>,
        /// Stop after this long.
        #[arg(long, value_name = "DURATION", value_parser = parse_positive_duration)]
        duration: Option<Duration>,
        #[command(flatten)]
        common: Common,
    },
    /// Check every proxy: admin API reachable, last config reload succeeded,
    /// certificate valid and not near expiry, clock close to this machine's.
    ///
    /// Exit 1 listing every failed check.
    Check {
        #[command(flatten)]
        proxies: Proxies,
        /// A certificate expiring sooner than this fails the check.
        #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = mesh_api::units::parse_duration)]
        warn_expiry: Duration,
        /// A clock further than this from this machine's fails the check.
        #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = mesh_api::units::parse_duration)]
        max_skew: Duration,
        #[command(flatten)]
        common: Common,
    },
    /// What a proxy would do with a request, without sending it: listener,
    /// normalised path, edge route (and why earlier ones did not match),
    /// policies, cluster, endpoints and the balancer's pick.
    Explain {
        #[command(flatten)]
        proxy: Proxy,
        /// Request method.
        method: String,
        /// [SCHEME://]HOST[:PORT][/PATH][?QUERY].
        url: String,
        /// A request header `NAME: VALUE` (repeat for several).
        #[arg(short = 'H', long = "header", value_name = "HEADER")]
        headers: Vec<String>,
        /// The listener: inbound, proxy, an upstream's name, edge or edge:N
        /// (default: the first edge listener; for a sidecar, the forward
        /// proxy when an upstream claims the host, else inbound).
        #[arg(long, value_name = "LISTENER")]
        listener: Option<String>,
        /// The client's address (edge allow / deny).
        #[arg(long, value_name = "IP")]
        client: Option<String>,
        /// The caller's SPIFFE ID (inbound authz).
        #[arg(long, value_name = "SPIFFE-ID")]
        identity: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// The effective config (defaults filled in), its generation and the last reload error.
    Config {
        #[command(flatten)]
        proxy: Proxy,
        #[command(flatten)]
        common: Common,
    },
    /// The OpenAPI 3 document of the proxy's REST/JSON ↔ gRPC transcoded APIs.
    Openapi {
        #[command(flatten)]
        proxy: Proxy,
        #[command(flatten)]
        common: Common,
    },
    /// Re-read the config file now. Exit 1, listing the errors, if it is rejected.
    Reload {
        #[command(flatten)]
        proxy: Proxy,
        #[command(flatten)]
        common: Common,
    },
    /// The Prometheus metrics text.
    Metrics {
        #[command(flatten)]
        proxy: Proxy,
        /// Only the lines that contain TEXT.
        #[arg(long, value_name = "TEXT")]
        grep: Option<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Per proxy: its SPIFFE identity, certificate serial, time left and the
    /// last failure to load new files ("no identity" when it has none).
    ///
    /// Exit 1 if any proxy is unreachable or its certificate has expired.
    Certs {
        #[command(flatten)]
        proxies: Proxies,
        #[command(flatten)]
        common: Common,
    },
    /// Golden signals per service, direction, route and upstream: requests
    /// per second, success rate (not 5xx, no failing gRPC status) and p50 /
    /// p95 / p99 latency, from two scrapes of /metrics WINDOW apart.
    Stat {
        #[command(flatten)]
        proxies: Proxies,
        /// Time between the two scrapes (e.g. 2s, 1m).
        #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_positive_duration)]
        window: Duration,
        #[command(flatten)]
        common: Common,
    },
    /// The busiest routes, live: RPS, success, p50 / p99, busiest first,
    /// refreshed every INTERVAL. q, Esc or Ctrl-C quits.
    Top {
        #[command(flatten)]
        proxies: Proxies,
        /// Time between refreshes.
        #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_positive_duration)]
        interval: Duration,
        /// Quit after this long.
        #[arg(long, value_name = "DURATION", value_parser = parse_positive_duration)]
        duration: Option<Duration>,
        /// Quit after N refreshes.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        iterations: Option<u64>,
        #[command(flatten)]
        timeout: Timeout,
    },
    /// Who calls whom, from the proxies' request metrics: outbound and edge
    /// requests to an upstream, inbound requests by caller. Edges carry
    /// RPS and success over --window, else request totals.
    Graph {
        #[command(flatten)]
        proxies: Proxies,
        /// Output format.
        #[arg(long, value_enum, default_value_t = signals::GraphFormat::Dot)]
        format: signals::GraphFormat,
        /// Measure rates between two scrapes this far apart (default: one scrape, totals).
        #[arg(long, value_name = "DURATION", value_parser = parse_positive_duration)]
        window: Option<Duration>,
        #[command(flatten)]
        timeout: Timeout,
    },
    /// Serve the dashboard page (service graph, golden signals) for these
    /// proxies at http://LISTEN/dashboard until stopped; prints the URL.
    Dashboard {
        #[command(flatten)]
        proxies: Proxies,
        /// Address to serve on (port 0 picks a free port).
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
        listen: String,
        #[command(flatten)]
        timeout: Timeout,
    },
    /// The mesh CA: make it, and issue workload certificates.
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
    /// Edge API keys: make one, revoke a consumer's.
    Apikey {
        #[command(subcommand)]
        command: ApikeyCommand,
    },
    /// An edge proxy's open bridged WebSocket connections (ID, route,
    /// client, identity, connected at, last active).
    Connections {
        #[command(flatten)]
        proxy: Proxy,
        #[command(flatten)]
        common: Common,
    },
    /// An edge proxy's response cache: counters and entries, purge.
    Cache {
        #[command(subcommand)]
        command: CacheCommand,
    },
}

#[derive(Debug, Subcommand)]
enum CacheCommand {
    /// Entries, bytes, hits, misses, stale and revalidated answers, per
    /// route; with --entries N the N most recently used entries and their keys.
    Stats {
        /// List up to N entries.
        #[arg(long, value_name = "N")]
        entries: Option<usize>,
        #[command(flatten)]
        proxy: Proxy,
        #[command(flatten)]
        common: Common,
    },
    /// Remove stored answers: one key (or every variant of a path and
    /// query), or every entry whose path starts with a prefix.
    Purge {
        /// An entry's key as `cache stats --entries` lists it, or a path and query.
        #[arg(long, value_name = "KEY", conflicts_with = "prefix")]
        key: Option<String>,
        /// A path prefix, e.g. /api/.
        #[arg(long, value_name = "PATH")]
        prefix: Option<String>,
        #[command(flatten)]
        proxy: Proxy,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Debug, Subcommand)]
enum ApikeyCommand {
    /// Make a random key (32 bytes, base64url) for a consumer: prints the
    /// key once and the `{ consumer, sha256 }` entry to add to the config.
    Create {
        /// Who the key belongs to (forwarded upstream, in the access log).
        #[arg(long, value_name = "NAME")]
        consumer: String,
        /// The `edge.auth.api_keys` entry the key is for (named in the output).
        #[arg(long, value_name = "AUTH")]
        name: Option<String>,
    },
    /// Remove a consumer's keys from a keys file (or, for a config with
    /// inline keys, print the lines to delete).
    Revoke {
        /// Whose keys.
        #[arg(long, value_name = "NAME")]
        consumer: String,
        /// The keys file (or config) holding them.
        #[arg(long, value_name = "FILE")]
        file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum CaCommand {
    /// Make a root and an intermediate CA (ECDSA P-256) for a trust domain.
    ///
    /// Writes root.pem, root-key.pem, intermediate.pem, intermediate-key.pem,
    /// bundle.pem and trust-domain in DIR; keys are mode 0600.
    Init {
        /// The trust domain, e.g. mesh.local (a-z, 0-9, '-' and '.').
        #[arg(long, value_name = "DOMAIN")]
        trust_domain: String,
        /// Directory to write the CA in (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
    },
    /// Issue a workload certificate with the SPIFFE ID
    /// spiffe://<trust-domain>/svc/<service>, signed by the intermediate;
    /// or, with --host, a server certificate for public TLS (edge listeners).
    ///
    /// Writes cert.pem (leaf, then intermediate), key.pem (mode 0600) and
    /// bundle.pem in DIR.
    Issue {
        /// The service the certificate names (a-z, 0-9, '-' and '.').
        #[arg(
            long,
            value_name = "NAME",
            required_unless_present = "hosts",
            conflicts_with = "hosts"
        )]
        service: Option<String>,
        /// A DNS name of a server certificate instead (repeat; `*.example.test` allowed).
        #[arg(long = "host", value_name = "NAME")]
        hosts: Vec<String>,
        /// How long the certificate is valid (e.g. 1h, 24h, 7d).
        #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = parse_positive_duration)]
        ttl: Duration,
        /// The CA directory made by `mesh-ctl ca init`.
        #[arg(long = "ca", value_name = "DIR")]
        ca_dir: PathBuf,
        /// Directory to write the certificate in (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Replace existing files.
        #[arg(long)]
        force: bool,
    },
}

/// Several proxies.
#[derive(Debug, Args)]
struct Proxies {
    /// Admin API address (HOST:PORT) of a proxy; repeat for several.
    /// [default: $MESH_ADMIN, else 127.0.0.1:15000]
    #[arg(long = "admin", value_name = "ADDR")]
    admins: Vec<String>,
    /// A file of proxies, one per line: `NAME ADDR` or `ADDR` (`#` comments).
    #[arg(long, value_name = "FILE")]
    inventory: Option<PathBuf>,
    /// A DNS SRV name whose records point at admin APIs
    /// (e.g. _admin._tcp.mesh.local).
    #[arg(long, value_name = "NAME")]
    srv: Option<String>,
    /// The nameserver for --srv (IP or IP:PORT) [default: the first of /etc/resolv.conf].
    #[arg(long, value_name = "ADDR", requires = "srv")]
    dns: Option<String>,
}

/// How long a `--srv` lookup may take.
const DNS_TIMEOUT: Duration = Duration::from_secs(3);

impl Proxies {
    /// Every admin address the flags name, else as `admins_or_default`; a
    /// source that cannot be read ends the process with status 1.
    fn resolve(self, env: Option<&str>) -> Vec<String> {
        let sources = discover::Sources {
            admins: &self.admins,
            inventory: self.inventory.as_deref(),
            srv: self.srv.as_deref(),
            dns: self.dns.as_deref(),
        };
        match discover::admins(&sources, DNS_TIMEOUT) {
            Ok(found) => admins_or_default(found, env),
            Err(problem) => {
                eprintln!("mesh-ctl: {problem}");
                std::process::exit(1);
            }
        }
    }
}

/// One proxy.
#[derive(Debug, Args)]
struct Proxy {
    /// Admin API address (HOST:PORT) of the proxy.
    /// [default: $MESH_ADMIN, else 127.0.0.1:15000]
    #[arg(long, value_name = "ADDR")]
    admin: Option<String>,
}

#[derive(Debug, Args)]
struct Common {
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
    output: Output,
    /// Connect timeout, and separately the time allowed for each answer (e.g. 500ms, 5s).
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_positive_duration)]
    timeout: Duration,
}

/// The time allowed for each proxy's answers.
#[derive(Debug, Args)]
struct Timeout {
    /// Connect timeout, and separately the time allowed for each answer (e.g. 500ms, 5s).
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_positive_duration)]
    timeout: Duration,
}

impl Common {
    fn options(&self) -> Options {
        Options {
            output: self.output,
            timeout: self.timeout,
        }
    }
}

fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    match mesh_api::units::parse_duration(text)? {
        Duration::ZERO => Err("must be more than 0".into()),
        timeout => Ok(timeout),
    }
}

/// The admin address to ask: the one given, else `MESH_ADMIN`, else the default.
fn admin_or_default(given: Option<String>, env: Option<&str>) -> String {
    given
        .or_else(|| {
            env.map(str::trim)
                .filter(|a| !a.is_empty())
                .map(String::from)
        })
        .unwrap_or_else(|| DEFAULT_ADMIN.to_string())
}

/// The admin addresses to ask: those given, else as `admin_or_default`.
fn admins_or_default(given: Vec<String>, env: Option<&str>) -> Vec<String> {
    if given.is_empty() {
        vec![admin_or_default(None, env)]
    } else {
        given
    }
}

fn run(command: Command, env_admin: Option<&str>) -> Report {
    let one = |proxy: Proxy| admin_or_default(proxy.admin, env_admin);
    let several = |proxies: Proxies| proxies.resolve(env_admin);
    match command {
        Command::Status { proxies, common } => {
            commands::status(&several(proxies), common.options())
        }
        Command::Listeners { proxies, common } => {
            commands::listeners(&several(proxies), common.options())
        }
        Command::Clusters { proxies, common } => {
            commands::clusters(&several(proxies), common.options())
        }
        Command::Endpoints {
            service,
            proxies,
            common,
        } => observe::endpoints(&several(proxies), &service, common.options()),
        Command::Routes { proxies, common } => observe::routes(&several(proxies), common.options()),
        Command::Tap {
            proxy,
            authority,
            path_prefix,
            method,
            status,
            identity,
            direction,
            route,
            upstream,
            limit,
            rate,
            duration,
            common,
        } => {
            let filters = [
                ("authority", authority),
                ("path_prefix", path_prefix),
                ("method", method),
                ("status", status),
                ("identity", identity),
                ("direction", direction),
                ("route", route),
                ("upstream", upstream),
            ];
            let args = tap::TapArgs {
                filters: filters
                    .into_iter()
                    .filter_map(|(name, value)| Some((name, value?)))
                    .collect(),
                limit,
                rate,
                duration,
            };
            tap::tap(&one(proxy), &args, common.options())
        }
        Command::Check {
            proxies,
            warn_expiry,
            max_skew,
            common,
        } => {
            let limits = observe::CheckLimits {
                warn_expiry,
                max_skew,
            };
            observe::check(&several(proxies), limits, common.options())
        }
        Command::Explain {
            proxy,
            method,
            url,
            headers,
            listener,
            client,
            identity,
            common,
        } => match observe::explain_request(&method, &url, &headers) {
            Ok(ask) => {
                let ask = mesh_api::admin::ExplainRequest {
                    listener,
                    client,
                    identity,
                    ..ask
                };
                observe::explain(&one(proxy), &ask, common.options())
            }
            Err(problem) => Report {
                stdout: String::new(),
                problems: vec![problem],
            },
        },
        Command::Quota {
            proxy,
            consumer,
            common,
        } => quota::quota(&one(proxy), &consumer, common.options()),
        Command::Config { proxy, common } => commands::config(&one(proxy), common.options()),
        Command::Openapi { proxy, common } => openapi::openapi(&one(proxy), common.options()),
        Command::Reload { proxy, common } => commands::reload(&one(proxy), common.options()),
        Command::Metrics {
            proxy,
            grep,
            common,
        } => commands::metrics(&one(proxy), grep.as_deref(), common.options()),
        Command::Certs { proxies, common } => commands::certs(&several(proxies), common.options()),
        Command::Stat {
            proxies,
            window,
            common,
        } => signals::stat(&several(proxies), window, common.output, common.timeout),
        Command::Top {
            proxies,
            interval,
            duration,
            iterations,
            timeout,
        } => {
            let limits = top::Limits {
                interval,
                iterations,
                duration,
            };
            top::top(&several(proxies), limits, timeout.timeout)
        }
        Command::Graph {
            proxies,
            format,
            window,
            timeout,
        } => signals::graph(&several(proxies), window, format, timeout.timeout),
        Command::Dashboard {
            proxies,
            listen,
            timeout,
        } => dashboard::dashboard(&listen, &several(proxies), timeout.timeout),
        Command::Ca { command } => match command {
            CaCommand::Init {
                trust_domain,
                out,
                force,
            } => ca::init(&trust_domain, &out, force),
            CaCommand::Issue {
                service: Some(service),
                ttl,
                ca_dir,
                out,
                force,
                ..
            } => ca::issue(&ca_dir, &service, ttl, &out, force),
            CaCommand::Issue {
                service: None,
                hosts,
                ttl,
                ca_dir,
                out,
                force,
            } => ca::issue_server(&ca_dir, &hosts, ttl, &out, force),
        },
        Command::Apikey { command } => match command {
            ApikeyCommand::Create { consumer, name } => apikey::create(&consumer, name.as_deref()),
            ApikeyCommand::Revoke { consumer, file } => apikey::revoke(&consumer, &file),
        },
        Command::Connections { proxy, common } => {
            connections::connections(&one(proxy), common.options())
        }
        Command::Cache { command } => match command {
            CacheCommand::Stats {
                entries,
                proxy,
                common,
            } => cache::stats(&one(proxy), entries, common.options()),
            CacheCommand::Purge {
                key,
                prefix,
                proxy,
                common,
            } => {
                let what = match (key, prefix) {
                    (Some(key), _) => cache::Purge::Key(key),
                    (None, Some(prefix)) => cache::Purge::Prefix(prefix),
                    (None, None) => {
                        return Report {
                            stdout: String::new(),
                            problems: vec!["name --key or --prefix".into()],
                        }
                    }
                };
                cache::purge(&one(proxy), &what, common.options())
            }
        },
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let env_admin = std::env::var("MESH_ADMIN").ok();
    let report = run(cli.command, env_admin.as_deref());
    let mut stdout = io::stdout().lock();
    let written = stdout
        .write_all(report.stdout.as_bytes())
        .and_then(|()| stdout.flush());
    // A closed pipe (`mesh-ctl metrics | head`) is the reader's choice, not a failure.
    if let Err(err) = written {
        if err.kind() != io::ErrorKind::BrokenPipe {
            eprintln!("mesh-ctl: cannot write output: {err}");
            return ExitCode::FAILURE;
        }
    }
    for problem in &report.problems {
        eprintln!("mesh-ctl: {problem}");
    }
    if report.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn admin_addresses_come_from_flags_then_env_then_default() {
        let given = vec!["a:1".to_string(), "b:2".to_string()];
        assert_eq!(admins_or_default(given.clone(), Some("e:3")), given);
        assert_eq!(admins_or_default(vec![], Some(" e:3 ")), ["e:3"]);
        assert_eq!(admins_or_default(vec![], Some("")), [DEFAULT_ADMIN]);
        assert_eq!(admins_or_default(vec![], None), [DEFAULT_ADMIN]);
        assert_eq!(admin_or_default(Some("a:1".into()), Some("e:3")), "a:1");
        assert_eq!(admin_or_default(None, Some("e:3")), "e:3");
    }

    #[test]
    fn parses_the_command_line() {
        let cli = Cli::try_parse_from([
            "mesh-ctl",
            "clusters",
            "--admin",
            "a:1",
            "--admin",
            "b:2",
            "--output",
            "json",
            "--timeout",
            "250ms",
        ])
        .expect("valid command line");
        let Command::Clusters { proxies, common } = cli.command else {
            panic!("clusters: {:?}", cli.command);
        };
        assert_eq!(proxies.admins, ["a:1", "b:2"]);
        assert_eq!(common.output, Output::Json);
        assert_eq!(common.timeout, Duration::from_millis(250));

        // One proxy only for config, reload and metrics; no zero timeout.
        assert!(
            Cli::try_parse_from(["mesh-ctl", "reload", "--admin", "a:1", "--admin", "b:2"])
                .is_err()
        );
        assert!(Cli::try_parse_from(["mesh-ctl", "status", "--timeout", "0s"]).is_err());
        assert!(Cli::try_parse_from(["mesh-ctl", "status", "--output", "yaml"]).is_err());
    }

    #[test]
    fn parses_the_golden_signal_commands() {
        let parse = |args: &[&str]| Cli::try_parse_from([&["mesh-ctl"], args].concat());
        let Command::Stat { window, common, .. } = parse(&["stat", "-o", "json", "--window", "2s"])
            .expect("valid command line")
            .command
        else {
            panic!("stat");
        };
        assert_eq!(
            (window, common.output),
            (Duration::from_secs(2), Output::Json)
        );
        let Command::Graph { format, window, .. } = parse(&["graph", "--format", "mermaid"])
            .expect("valid command line")
            .command
        else {
            panic!("graph");
        };
        assert_eq!((format, window), (signals::GraphFormat::Mermaid, None));
        let Command::Top {
            interval,
            iterations,
            duration,
            ..
        } = parse(&["top", "--iterations", "3"])
            .expect("valid command line")
            .command
        else {
            panic!("top");
        };
        assert_eq!(
            (interval, iterations, duration),
            (Duration::from_secs(1), Some(3), None)
        );
        let Command::Dashboard { listen, .. } = parse(&["dashboard", "--admin", "a:1"])
            .expect("valid command line")
            .command
        else {
            panic!("dashboard");
        };
        assert_eq!(listen, "127.0.0.1:0");
        assert!(parse(&["top", "--iterations", "0"]).is_err());
        assert!(parse(&["stat", "--window", "0s"]).is_err());
        assert!(parse(&["graph", "--format", "png"]).is_err());
    }

    #[test]
    fn parses_certs_and_ca_commands() {
        let cli = Cli::try_parse_from([
            "mesh-ctl", "certs", "--admin", "a:1", "--admin", "b:2", "--output", "json",
        ])
        .expect("valid command line");
        let Command::Certs { proxies, common } = cli.command else {
            panic!("certs: {:?}", cli.command);
        };
        assert_eq!(proxies.admins, ["a:1", "b:2"]);
        assert_eq!(common.output, Output::Json);

        let cli = Cli::try_parse_from([
            "mesh-ctl",
            "ca",
            "init",
            "--trust-domain",
            "mesh.local",
            "--out",
            "/tmp/ca",
        ])
        .expect("valid command line");
        let Command::Ca {
            command:
                CaCommand::Init {
                    trust_domain,
                    out,
                    force,
                },
        } = cli.command
        else {
            panic!("ca init: {:?}", cli.command);
        };
        assert_eq!(
            (trust_domain.as_str(), out, force),
            ("mesh.local", PathBuf::from("/tmp/ca"), false)
        );

        let issue = |extra: &[&str]| {
            let mut args = vec![
                "mesh-ctl",
                "ca",
                "issue",
                "--service",
                "web",
                "--ca",
                "/tmp/ca",
                "--out",
                "/tmp/web",
            ];
            args.extend_from_slice(extra);
            Cli::try_parse_from(args)
        };
        let Command::Ca {
            command:
                CaCommand::Issue {
                    service,
                    ttl,
                    ca_dir,
                    out,
                    force,
                    ..
                },
        } = issue(&[]).expect("valid command line").command
        else {
            panic!("ca issue");
        };
        assert_eq!(service.as_deref(), Some("web"));
        assert_eq!(ttl, Duration::from_secs(86_400), "default ttl is 24h");
        assert_eq!(ca_dir, PathBuf::from("/tmp/ca"));
        assert_eq!(out, PathBuf::from("/tmp/web"));
        assert!(!force);
        let Command::Ca {
            command: CaCommand::Issue { ttl, force, .. },
        } = issue(&["--ttl", "1h30m", "--force"])
            .expect("valid command line")
            .command
        else {
            panic!("ca issue");
        };
        assert_eq!((ttl, force), (Duration::from_secs(5400), true));

        assert!(issue(&["--ttl", "0s"]).is_err());
        assert!(issue(&["--ttl", "soon"]).is_err());
        // Every flag but --force and --ttl is required.
        assert!(Cli::try_parse_from(["mesh-ctl", "ca", "issue", "--service", "web"]).is_err());
        // A service or host names, not both.
        assert!(issue(&["--host", "api.example.test"]).is_err());
        let server = [
            "mesh-ctl",
            "ca",
            "issue",
            "--host",
            "api.example.test",
            "--host",
            "*.example.test",
            "--ca",
            "/tmp/ca",
            "--out",
            "/tmp/api",
        ];
        let Command::Ca {
            command: CaCommand::Issue { service, hosts, .. },
        } = Cli::try_parse_from(server)
            .expect("valid command line")
            .command
        else {
            panic!("ca issue");
        };
        assert_eq!((service, hosts.len()), (None, 2));
        assert!(Cli::try_parse_from(["mesh-ctl", "ca", "init", "--out", "/tmp/ca"]).is_err());
        assert!(Cli::try_parse_from(["mesh-ctl", "ca"]).is_err());
    }
}
