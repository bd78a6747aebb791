//! `mesh-ctl endpoints`, `routes`, `check` and `explain`: what the proxies
//! know about an upstream's endpoints, how they route, whether they are
//! healthy to operate, and what one would do with a request.
//! Reads: the admin API through `AdminClient`. Writes: a `Report`.
//! Errors: an unreachable proxy, and for `check` every failed check, is a
//! problem (exit status 1).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mesh_api::admin::{ClusterInfo, EndpointInfo, ExplainAnswer, ExplainRequest, RoutesInfo};
use serde::Serialize;
use serde_json::json;

use crate::admin_client::{AdminClient, ClientError};
use crate::commands::{ask_each, human_duration, to_json, Answer, Options, Output, Report};
use crate::table;

/// `mesh-ctl endpoints SERVICE`: the upstream's endpoints as each proxy sees them.
pub fn endpoints(admins: &[String], service: &str, opts: Options) -> Report {
    let answers: Vec<Answer<Option<ClusterInfo>>> = ask_each(admins, opts.timeout, |client| {
        Ok(client.clusters()?.into_iter().find(|c| c.name == service))
    });
    let mut problems: Vec<String> = answers
        .iter()
        .filter_map(|(_, answer)| answer.as_ref().err().map(ToString::to_string))
        .collect();
    if answers.iter().all(|(_, answer)| matches!(answer, Ok(None))) {
        problems.push(format!("no proxy asked has an upstream named {service:?}"));
    }
    let stdout = match opts.output {
        Output::Json => {
            let proxies: Vec<serde_json::Value> = answers
                .iter()
                .map(|(admin, answer)| match answer {
                    Ok(Some(cluster)) => json!({
                        "admin": admin,
                        "cluster": cluster.name,
                        "endpoints": cluster.endpoints,
                    }),
                    Ok(None) => json!({ "admin": admin, "cluster": null, "endpoints": [] }),
                    Err(err) => json!({ "admin": admin, "error": err.to_string() }),
                })
                .collect();
            to_json(&proxies)
        }
        Output::Table => {
            let header = ["ADMIN", "ENDPOINT", "STATE", "WEIGHT", "ACTIVE", "LATENCY"];
            let rows: Vec<Vec<String>> = answers
                .iter()
                .filter_map(|(admin, answer)| Some((admin, answer.as_ref().ok()?.as_ref()?)))
                .flat_map(|(admin, cluster)| {
                    cluster.endpoints.iter().map(move |e| {
                        let mut row = vec![admin.clone()];
                        row.extend(endpoint_cells(e));
                        row
                    })
                })
                .collect();
            table::render(&header, &rows)
        }
    };
    Report { stdout, problems }
}

/// ENDPOINT STATE WEIGHT ACTIVE LATENCY.
fn endpoint_cells(e: &EndpointInfo) -> Vec<String> {
    vec![
        e.addr.clone(),
        e.state.clone(),
        e.weight.to_string(),
        e.active_requests.to_string(),
        format!("{:.1}ms", e.latency_ms),
    ]
}

/// `mesh-ctl routes`: each proxy's routes in the order they are tried.
pub fn routes(admins: &[String], opts: Options) -> Report {
    let answers: Vec<Answer<RoutesInfo>> = ask_each(admins, opts.timeout, AdminClient::routes);
    let problems = answers
        .iter()
        .filter_map(|(_, answer)| answer.as_ref().err().map(ToString::to_string))
        .collect();
    let stdout = match opts.output {
        Output::Json => {
            let proxies: Vec<serde_json::Value> = answers
                .iter()
                .map(|(admin, answer)| match answer {
                    Ok(info) => json!({ "admin": admin, "mode": info.mode, "routes": info.routes }),
                    Err(err) => json!({ "admin": admin, "error": err.to_string() }),
                })
                .collect();
            to_json(&proxies)
        }
        Output::Table => {
            let header = ["ADMIN", "MODE", "ROUTE", "MATCH", "ACTION"];
            let rows: Vec<Vec<String>> = answers
                .iter()
                .filter_map(|(admin, answer)| Some((admin, answer.as_ref().ok()?)))
                .flat_map(|(admin, info)| {
                    info.routes.iter().map(move |r| {
                        vec![
                            admin.clone(),
                            info.mode.clone(),
                            r.name.clone(),
                            r.matches.clone(),
                            r.action.clone(),
                        ]
                    })
                })
                .collect();
            table::render(&header, &rows)
        }
    };
    Report { stdout, problems }
}

/// What `check` looks at besides reachability.
#[derive(Debug, Clone, Copy)]
pub struct CheckLimits {
    /// A certificate expiring sooner than this is a problem.
    pub warn_expiry: Duration,
    /// A clock further than this from ours is a problem.
    pub max_skew: Duration,
}

/// One check of one proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct Check {
    check: &'static str,
    ok: bool,
    detail: String,
}

/// `mesh-ctl check`: admin reachable, config valid (the last reload did
/// not fail), certificate valid and not near expiry, clock within
/// `max_skew`; every failed check is a problem.
pub fn check(admins: &[String], limits: CheckLimits, opts: Options) -> Report {
    let answers: Vec<Answer<Vec<Check>>> =
        ask_each(admins, opts.timeout, |client| checks(client, limits));
    let mut problems = Vec::new();
    let mut per_proxy = Vec::new();
    for (admin, answer) in &answers {
        let checks = match answer {
            Ok(checks) => checks.clone(),
            Err(err) => vec![Check {
                check: "admin",
                ok: false,
                detail: err.to_string(),
            }],
        };
        for check in checks.iter().filter(|c| !c.ok) {
            problems.push(format!("{admin}: {}: {}", check.check, check.detail));
        }
        per_proxy.push((admin.clone(), checks));
    }
    let stdout = match opts.output {
        Output::Json => {
            let proxies: Vec<serde_json::Value> = per_proxy
                .iter()
                .map(|(admin, checks)| {
                    json!({ "admin": admin, "ok": checks.iter().all(|c| c.ok), "checks": checks })
                })
                .collect();
            to_json(&proxies)
        }
        Output::Table => {
            let rows: Vec<Vec<String>> = per_proxy
                .iter()
                .flat_map(|(admin, checks)| {
                    checks.iter().map(move |c| {
                        vec![
                            admin.clone(),
                            c.check.to_string(),
                            if c.ok { "ok" } else { "FAIL" }.to_string(),
                            c.detail.clone(),
                        ]
                    })
                })
                .collect();
            table::render(&["ADMIN", "CHECK", "RESULT", "DETAIL"], &rows)
        }
    };
    Report { stdout, problems }
}

fn checks(client: &AdminClient, limits: CheckLimits) -> Result<Vec<Check>, ClientError> {
    let response = client.request("GET", "/config")?;
    let mut out = vec![Check {
        check: "admin",
        ok: true,
        detail: "reachable".into(),
    }];
    let config: mesh_api::admin::ConfigStatus = serde_json::from_slice(&response.body)
        .map_err(|e| client.error("GET", "/config", e.into()))?;
    out.push(if config.last_error.is_empty() {
        Check {
            check: "config",
            ok: true,
            detail: format!("generation {} running, last reload ok", config.generation),
        }
    } else {
        Check {
            check: "config",
            ok: false,
            detail: format!(
                "last reload failed (generation {} still runs): {}",
                config.generation,
                config.last_error.join("; ")
            ),
        }
    });
    out.push(match response.date.as_deref().map(parse_http_date) {
        Some(Some(theirs)) => {
            let ours = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            let skew = theirs - ours;
            Check {
                check: "clock",
                ok: skew.unsigned_abs() <= limits.max_skew.as_secs(),
                detail: format!("{skew:+}s from this machine's clock"),
            }
        }
        Some(None) => Check {
            check: "clock",
            ok: false,
            detail: "the Date header is not an HTTP date".into(),
        },
        None => Check {
            check: "clock",
            ok: false,
            detail: "the admin API sent no Date header".into(),
        },
    });
    out.push(match client.certs()? {
        None => Check {
            check: "certs",
            ok: true,
            detail: "no identity".into(),
        },
        Some(cert) if cert.expires_in_seconds <= 0 => Check {
            check: "certs",
            ok: false,
            detail: format!("{} expired", cert.identity),
        },
        Some(cert) => {
            let left = cert.expires_in_seconds.unsigned_abs();
            Check {
                check: "certs",
                ok: left > limits.warn_expiry.as_secs() && cert.last_error.is_none(),
                detail: match &cert.last_error {
                    Some(error) => format!("{}: new files rejected: {error}", cert.identity),
                    None => format!("{} expires in {}", cert.identity, human_duration(left)),
                },
            }
        }
    });
    Ok(out)
}

/// IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) → Unix seconds.
fn parse_http_date(text: &str) -> Option<i64> {
    let mut parts = text.split_whitespace().skip(1);
    let day: i64 = parts.next()?.parse().ok()?;
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| Some(*m) == parts.clone().next())? as i64
        + 1;
    parts.next()?;
    let year: i64 = parts.next()?.parse().ok()?;
    let mut clock = parts.next()?.split(':').map(|p| p.parse::<i64>().ok());
    let (h, m, s) = (clock.next()??, clock.next()??, clock.next()??);
    if parts.next()? != "GMT" || !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return None;
    }
    // Days from civil (H. Hinnant).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + m * 60 + s)
}

/// `METHOD URL` → an explain request: the URL's authority and path.
pub fn explain_request(
    method: &str,
    url: &str,
    headers: &[String],
) -> Result<ExplainRequest, String> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let split = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(split);
    if authority.is_empty() {
        return Err(format!("{url:?}: expected [SCHEME://]HOST[:PORT][/PATH]"));
    }
    let path = match path {
        "" => "/".to_string(),
        p if p.starts_with('?') => format!("/{p}"),
        p => p.to_string(),
    };
    let headers = headers
        .iter()
        .map(|h| {
            h.split_once(':')
                .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
                .filter(|(n, _)| !n.is_empty())
                .ok_or_else(|| format!("header {h:?}: expected `NAME: VALUE`"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ExplainRequest {
        method: Some(method.to_ascii_uppercase()),
        authority: authority.to_string(),
        path: Some(path),
        headers,
        ..ExplainRequest::default()
    })
}

/// `mesh-ctl explain`.
pub fn explain(admin: &str, ask: &ExplainRequest, opts: Options) -> Report {
    let client = AdminClient::new(admin, opts.timeout);
    match client.explain(ask) {
        Err(err) => Report {
            stdout: String::new(),
            problems: vec![err.to_string()],
        },
        Ok(answer) => Report {
            stdout: match opts.output {
                Output::Json => to_json(&answer),
                Output::Table => explain_text(ask, &answer),
            },
            problems: Vec::new(),
        },
    }
}

fn explain_text(ask: &ExplainRequest, a: &ExplainAnswer) -> String {
    let mut out = format!(
        "request:    {} {}{}\nlistener:   {} ({})\n",
        ask.method.as_deref().unwrap_or("GET"),
        ask.authority,
        ask.path.as_deref().unwrap_or("/"),
        a.listener,
        a.direction
    );
    if let Some(path) = &a.normalized_path {
        out.push_str(&format!("normalised: {path}\n"));
    }
    for skipped in &a.skipped_routes {
        out.push_str(&format!(
            "skipped:    route {} ({} does not match)\n",
            skipped.name, skipped.reason
        ));
    }
    if let Some(route) = &a.route {
        out.push_str(&format!("route:      {route}\n"));
    }
    for policy in &a.policies {
        out.push_str(&format!(
            "policy:     {} {} {}\n",
            policy.policy, policy.outcome, policy.detail
        ));
    }
    if let Some(cluster) = &a.cluster {
        out.push_str(&format!("cluster:    {cluster}\n"));
    }
    if let Some(path) = &a.upstream_path {
        out.push_str(&format!("forwarded:  {path}\n"));
    }
    if let (Some(status), error) = (a.status, &a.error) {
        out.push_str(&format!(
            "answer:     {status} {} {}\n",
            error.as_deref().unwrap_or(""),
            a.message.as_deref().unwrap_or("")
        ));
    }
    if !a.endpoints.is_empty() {
        out.push('\n');
        let rows: Vec<Vec<String>> = a
            .endpoints
            .iter()
            .map(|e| {
                let mut row = endpoint_cells(e);
                let preferred = a.preferred_endpoint.as_deref() == Some(e.addr.as_str());
                row.push(if preferred { "*" } else { "" }.to_string());
                row
            })
            .collect();
        out.push_str(&table::render(
            &["ENDPOINT", "STATE", "WEIGHT", "ACTIVE", "LATENCY", "PICK"],
            &rows,
        ));
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn http_dates_parse_to_unix_seconds() {
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(
            parse_http_date("Tue, 29 Feb 2000 00:00:00 GMT"),
            Some(951_782_400)
        );
        assert_eq!(parse_http_date("yesterday"), None);
        assert_eq!(parse_http_date("Sun, 06 Foo 1994 08:49:37 GMT"), None);
    }

    #[test]
    fn explain_urls_split_into_authority_and_path() {
        let ask = explain_request(
            "get",
            "https://api.example.test/api/orders/3?x=1",
            &["x-api-version: 2".into()],
        )
        .unwrap();
        assert_eq!(ask.method.as_deref(), Some("GET"));
        assert_eq!(ask.authority, "api.example.test");
        assert_eq!(ask.path.as_deref(), Some("/api/orders/3?x=1"));
        assert_eq!(ask.headers, [("x-api-version".into(), "2".into())]);
        let bare = explain_request("GET", "orders:8080", &[]).unwrap();
        assert_eq!(
            (bare.authority.as_str(), bare.path.as_deref()),
            ("orders:8080", Some("/"))
        );
        assert!(explain_request("GET", "https:///x", &[]).is_err());
        assert!(explain_request("GET", "a.test", &["nocolon".into()]).is_err());
    }
}
