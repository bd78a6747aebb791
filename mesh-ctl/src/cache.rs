//! `mesh-ctl cache`: an edge proxy's response cache. `stats` reads
//! `GET /cache` (size, counters, per route results, optionally the
//! entries); `purge` removes entries by key or path prefix through
//! `POST /cache/purge`.
//! Reads: the admin API. Writes: a summary (or the proxy's JSON with `-o json`).

use serde_json::Value;

use crate::admin_client::AdminClient;
use crate::commands::{Options, Output, Report};

/// What `purge` removes.
#[derive(Debug)]
pub enum Purge {
    /// An entry's key (as `stats --entries` lists it), or a path and query.
    Key(String),
    /// Every entry whose path starts with this.
    Prefix(String),
}

/// `GET /cache`, with up to `entries` entries listed.
pub fn stats(admin: &str, entries: Option<usize>, opts: Options) -> Report {
    let path = match entries {
        Some(n) => format!("/cache?entries={n}"),
        None => "/cache".into(),
    };
    let client = AdminClient::new(admin, opts.timeout);
    let answer = match ask(&client, "GET", &path, b"") {
        Ok(answer) => answer,
        Err(problem) => return failed(problem),
    };
    let stdout = match opts.output {
        Output::Json => crate::commands::to_json(&answer),
        Output::Table => render(&answer),
    };
    Report {
        stdout,
        problems: Vec::new(),
    }
}

/// `POST /cache/purge`.
pub fn purge(admin: &str, what: &Purge, opts: Options) -> Report {
    let body = match what {
        Purge::Key(key) => serde_json::json!({ "key": key }),
        Purge::Prefix(prefix) => serde_json::json!({ "prefix": prefix }),
    };
    let client = AdminClient::new(admin, opts.timeout);
    let answer = match ask(&client, "POST", "/cache/purge", body.to_string().as_bytes()) {
        Ok(answer) => answer,
        Err(problem) => return failed(problem),
    };
    let stdout = match opts.output {
        Output::Json => crate::commands::to_json(&answer),
        Output::Table => format!("purged {}\n", answer["purged"].as_u64().unwrap_or(0)),
    };
    Report {
        stdout,
        problems: Vec::new(),
    }
}

/// One admin request whose answer must be 200 with JSON.
fn ask(client: &AdminClient, method: &str, path: &str, body: &[u8]) -> Result<Value, String> {
    let response = client
        .send(method, path, body)
        .map_err(|err| err.to_string())?;
    let value: Option<Value> = serde_json::from_slice(&response.body).ok();
    match (response.status, value) {
        (200, Some(value)) => Ok(value),
        (status, value) => {
            let why = value
                .as_ref()
                .and_then(|v| v["error"].as_str())
                .map(|e| format!(": {e}"))
                .unwrap_or_default();
            Err(format!(
                "{}: {method} {path} answered {status}{why}",
                client.addr()
            ))
        }
    }
}

fn failed(problem: String) -> Report {
    Report {
        stdout: String::new(),
        problems: vec![problem],
    }
}

/// The counters, then one row per route, then the entries if listed.
pub fn render(stats: &Value) -> String {
    let n = |name: &str| stats[name].as_u64().unwrap_or(0);
    let mut out = format!(
        "entries {}  bytes {}/{}  max_object {}  evictions {}\nhits {}  misses {}  stale {}  revalidated {}\n",
        n("entries"),
        n("bytes"),
        n("max_bytes"),
        n("max_object"),
        n("evictions"),
        n("hits"),
        n("misses"),
        n("stale"),
        n("revalidated"),
    );
    if let Some(routes) = stats["routes"].as_object().filter(|r| !r.is_empty()) {
        let rows: Vec<Vec<String>> = routes
            .iter()
            .map(|(route, results)| {
                let mut row = vec![route.clone()];
                for result in ["HIT", "MISS", "STALE", "REVALIDATED"] {
                    row.push(results[result].as_u64().unwrap_or(0).to_string());
                }
                row
            })
            .collect();
        out.push('\n');
        out.push_str(&crate::table::render(
            &["ROUTE", "HIT", "MISS", "STALE", "REVALIDATED"],
            &rows,
        ));
    }
    if let Some(list) = stats["list"].as_array() {
        let rows: Vec<Vec<String>> = list
            .iter()
            .map(|e| {
                vec![
                    e["key"].as_str().unwrap_or_default().to_string(),
                    e["status"].to_string(),
                    e["bytes"].to_string(),
                    format!("{}s", e["age"]),
                    format!("{}s", e["ttl"]),
                ]
            })
            .collect();
        out.push('\n');
        out.push_str(&crate::table::render(
            &["KEY", "STATUS", "BYTES", "AGE", "TTL"],
            &rows,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn renders_counters_routes_and_entries() {
        let stats = serde_json::json!({
            "entries": 2, "bytes": 900, "max_bytes": 1024, "max_object": 512, "evictions": 1,
            "hits": 5, "misses": 2, "stale": 0, "revalidated": 1,
            "routes": { "api": { "HIT": 5, "MISS": 2, "REVALIDATED": 1 } },
            "list": [{ "key": "api GET /a", "target": "/a", "status": 200, "bytes": 450, "age": 3, "ttl": 30 }]
        });
        let text = render(&stats);
        assert!(text.contains("entries 2  bytes 900/1024"), "{text}");
        assert!(text.contains("hits 5  misses 2"), "{text}");
        assert!(text.contains("api GET /a"), "{text}");
        let route = text.lines().find(|l| l.starts_with("api ")).unwrap();
        assert_eq!(
            route.split_whitespace().collect::<Vec<_>>(),
            ["api", "5", "2", "0", "1"]
        );
    }
}
