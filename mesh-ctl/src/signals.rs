//! `mesh-ctl stat` and `mesh-ctl graph`: golden signals and the service
//! graph from the proxies' request metrics, and the scraping that `top`
//! and `dashboard` share.
//! Reads: `GET /config` (the proxy's service, its upstreams' identities)
//! and `GET /metrics` of each proxy, parsed by `mesh_api::prom`; the
//! arithmetic (deltas, RPS, success rate, percentiles) is
//! `mesh_api::golden`, the same the proxy's own dashboard uses.
//! Writes: a `Report` (a table, JSON, Graphviz dot or Mermaid).
//! Errors: a proxy that cannot be read or whose metrics do not parse is a
//! problem (exit status 1); the others are still shown.

use std::collections::BTreeMap;
use std::thread;
use std::time::{Duration, Instant};

use mesh_api::golden::{self, Pair, Scrape, Signals};

use crate::admin_client::AdminClient;
use crate::commands::{ask_each, to_json, Output, Report};
use crate::table;

/// Reads one proxy's service, upstream identities and request metrics.
fn scrape(client: &AdminClient) -> Result<Scrape, String> {
    let config = client.config().map_err(|err| err.to_string())?;
    let text = client.metrics().map_err(|err| err.to_string())?;
    let exposition = mesh_api::prom::parse(&text)
        .map_err(|err| format!("admin API at {}: {err}", client.addr()))?;
    Ok(Scrape::new(&config.config, &exposition))
}

/// Every proxy at once: admin address → its scrape or why it failed.
pub fn scrape_all(admins: &[String], timeout: Duration) -> Vec<(String, Result<Scrape, String>)> {
    // `ask_each` wants a `ClientError`; a parse failure is reported as text.
    let answers = ask_each(admins, timeout, |client| Ok(scrape(client)));
    answers
        .into_iter()
        .map(|(admin, answer)| {
            let answer = match answer {
                Ok(inner) => inner,
                Err(err) => Err(err.to_string()),
            };
            (admin, answer)
        })
        .collect()
}

/// The proxies that answered, by admin address, and the problems of the others.
pub fn split(
    answers: Vec<(String, Result<Scrape, String>)>,
) -> (BTreeMap<String, Scrape>, Vec<String>) {
    let mut scrapes = BTreeMap::new();
    let mut problems = Vec::new();
    for (admin, answer) in answers {
        match answer {
            Ok(scrape) => {
                scrapes.insert(admin, scrape);
            }
            Err(problem) => problems.push(problem),
        }
    }
    (scrapes, problems)
}

/// Pairs each scrape of `now` with the same proxy in `before`; a proxy
/// missing from `before` counts nothing in the window (never its whole
/// history as if it had happened in the window).
pub fn pairs<'a>(
    before: Option<&'a BTreeMap<String, Scrape>>,
    now: &'a BTreeMap<String, Scrape>,
) -> Vec<Pair<'a>> {
    now.iter()
        .map(|(admin, scrape)| Pair {
            before: before.map(|b| b.get(admin).unwrap_or(scrape)),
            now: scrape,
        })
        .collect()
}

/// Two rounds of scrapes `window` apart; returns them and the time
/// actually between them.
fn two_scrapes(
    admins: &[String],
    window: Duration,
    timeout: Duration,
) -> (
    BTreeMap<String, Scrape>,
    BTreeMap<String, Scrape>,
    Duration,
    Vec<String>,
) {
    let first_at = Instant::now();
    let (first, mut problems) = split(scrape_all(admins, timeout));
    thread::sleep(window.saturating_sub(first_at.elapsed()));
    let second_at = Instant::now();
    let (second, more) = split(scrape_all(admins, timeout));
    problems.extend(more);
    // A proxy that failed one of the rounds has no rate to show.
    let second = second
        .into_iter()
        .filter(|(admin, _)| first.contains_key(admin))
        .collect();
    (first, second, second_at - first_at, problems)
}

/// `mesh-ctl stat`: per service, direction, route and upstream, the
/// golden signals over `window`.
pub fn stat(admins: &[String], window: Duration, output: Output, timeout: Duration) -> Report {
    let (first, second, elapsed, problems) = two_scrapes(admins, window, timeout);
    let rows = golden::signals(&pairs(Some(&first), &second), Some(elapsed));
    let stdout = match output {
        Output::Json => to_json(&rows),
        Output::Table => stat_table(&rows),
    };
    Report { stdout, problems }
}

/// `12.50`, or `-` without a window.
pub fn rps_text(rps: Option<f64>) -> String {
    rps.map_or_else(|| "-".into(), |r| format!("{r:.2}"))
}

/// `99.50%`, or `-` without requests.
pub fn success_text(rate: Option<f64>) -> String {
    rate.map_or_else(|| "-".into(), |r| format!("{:.2}%", r * 100.0))
}

/// `0.42ms`, `12ms`, `1.50s`, or `-` without observations.
pub fn latency_text(ms: Option<f64>) -> String {
    match ms {
        None => "-".into(),
        Some(ms) if ms < 10.0 => format!("{ms:.2}ms"),
        Some(ms) if ms < 1000.0 => format!("{ms:.0}ms"),
        Some(ms) => format!("{:.2}s", ms / 1000.0),
    }
}

/// The columns of `stat`, one per cell of [`signal_cells`].
pub const SIGNAL_HEADER: [&str; 10] = [
    "SERVICE",
    "DIRECTION",
    "ROUTE",
    "UPSTREAM",
    "RPS",
    "SUCCESS",
    "P50",
    "P95",
    "P99",
    "REQUESTS",
];

/// One row of golden signals as table cells, in [`SIGNAL_HEADER`] order
/// (`top` shows a subset of them).
pub fn signal_cells(r: &Signals) -> [String; 10] {
    [
        r.service.clone(),
        r.direction.clone(),
        r.route.clone().unwrap_or_else(|| "-".into()),
        r.upstream.clone(),
        rps_text(r.rps),
        success_text(r.success_rate),
        latency_text(r.p50_ms),
        latency_text(r.p95_ms),
        latency_text(r.p99_ms),
        r.requests.to_string(),
    ]
}

fn stat_table(rows: &[Signals]) -> String {
    let cells: Vec<Vec<String>> = rows.iter().map(|r| signal_cells(r).to_vec()).collect();
    table::render(&SIGNAL_HEADER, &cells)
}

/// How `graph` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GraphFormat {
    /// Graphviz (`dot -Tsvg`).
    Dot,
    /// A Mermaid flowchart.
    Mermaid,
    /// Nodes and edges as JSON.
    Json,
}

/// `mesh-ctl graph`: who calls whom. With a window, edges carry RPS and
/// success over it; without, request totals since each proxy started.
pub fn graph(
    admins: &[String],
    window: Option<Duration>,
    format: GraphFormat,
    timeout: Duration,
) -> Report {
    let (graph, problems) = match window {
        Some(window) => {
            let (first, second, elapsed, problems) = two_scrapes(admins, window, timeout);
            let graph = golden::graph(&pairs(Some(&first), &second), Some(elapsed));
            (graph, problems)
        }
        None => {
            let (now, problems) = split(scrape_all(admins, timeout));
            (golden::graph(&pairs(None, &now), None), problems)
        }
    };
    let stdout = match format {
        GraphFormat::Dot => golden::to_dot(&graph),
        GraphFormat::Mermaid => golden::to_mermaid(&graph),
        GraphFormat::Json => to_json(&graph),
    };
    Report { stdout, problems }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(rps_text(Some(12.345)), "12.35");
        assert_eq!(rps_text(None), "-");
        assert_eq!(success_text(Some(0.995)), "99.50%");
        assert_eq!(success_text(None), "-");
        assert_eq!(latency_text(Some(0.4234)), "0.42ms");
        assert_eq!(latency_text(Some(12.4)), "12ms");
        assert_eq!(latency_text(Some(1500.0)), "1.50s");
        assert_eq!(latency_text(None), "-");
    }

    #[test]
    fn a_proxy_new_in_the_window_counts_nothing_yet() {
        let metrics = mesh_api::prom::parse(
            "mesh_requests_total{direction=\"outbound\",upstream=\"b\",status=\"200\"} 50\n",
        )
        .expect("valid");
        let a = Scrape::new(&serde_json::json!({ "service": "a" }), &metrics);
        let now = BTreeMap::from([("x:1".to_string(), a)]);
        let before = BTreeMap::new();
        let rows = golden::signals(&pairs(Some(&before), &now), Some(Duration::from_secs(1)));
        assert_eq!((rows[0].requests, rows[0].total), (0, 50));
        let rows = golden::signals(&pairs(None, &now), None);
        assert_eq!(rows[0].requests, 50);
    }

    #[test]
    fn stat_table_has_one_line_per_row() {
        let row = Signals {
            service: "web".into(),
            direction: "outbound".into(),
            route: None,
            upstream: "orders".into(),
            requests: 10,
            total: 12,
            rps: Some(5.0),
            success_rate: Some(0.9),
            p50_ms: Some(1.0),
            p95_ms: Some(2.0),
            p99_ms: Some(3.0),
        };
        let text = stat_table(&[row]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("SERVICE"));
        for cell in [
            "web", "outbound", "orders", "5.00", "90.00%", "1.00ms", "3.00ms", "10",
        ] {
            assert!(lines[1].contains(cell), "{cell} in {}", lines[1]);
        }
    }
}
