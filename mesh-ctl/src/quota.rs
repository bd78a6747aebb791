//! `mesh-ctl quota`: an edge proxy's rate limits and, for one consumer (or
//! key), what is left of each, from `GET /rate_limits` (global limits read
//! their count from Redis; reading counts nothing).
//! Reads: the admin API. Writes: a table, or the proxy's JSON with `-o json`.

use mesh_api::admin::RateLimitsView;

use crate::admin_client::AdminClient;
use crate::commands::{Options, Output, Report};

/// `/rate_limits?key=…` for `values`, percent-encoded.
pub fn path(values: &[String]) -> String {
    let query: Vec<String> = values
        .iter()
        .map(|v| format!("key={}", encode(v)))
        .collect();
    if query.is_empty() {
        "/rate_limits".into()
    } else {
        format!("/rate_limits?{}", query.join("&"))
    }
}

fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Asks `admin` for its limits and the buckets of `values`.
pub fn quota(admin: &str, values: &[String], opts: Options) -> Report {
    let client = AdminClient::new(admin, opts.timeout);
    let path = path(values);
    let response = match client.request("GET", &path) {
        Ok(response) => response,
        Err(err) => {
            return Report {
                stdout: String::new(),
                problems: vec![err.to_string()],
            }
        }
    };
    let view: RateLimitsView = match (response.status, serde_json::from_slice(&response.body)) {
        (200, Ok(view)) => view,
        (status, _) => {
            return Report {
                stdout: String::new(),
                problems: vec![format!("{admin}: GET {path} answered {status}")],
            }
        }
    };
    let stdout = match opts.output {
        Output::Json => crate::commands::to_json(&view),
        Output::Table => render(&view),
    };
    let problems = view
        .limits
        .iter()
        .filter_map(|l| l.error.as_ref().map(|e| format!("{}: {e}", l.name)))
        .collect();
    Report { stdout, problems }
}

/// One row per limit.
pub fn render(view: &RateLimitsView) -> String {
    let rows: Vec<Vec<String>> = view
        .limits
        .iter()
        .map(|l| {
            let (remaining, reset) = match &l.bucket {
                Some(b) => (
                    format!("{}/{}", b.remaining, b.limit),
                    format!("{:.0}s", b.reset_seconds.ceil()),
                ),
                None if l.error.is_some() => ("unavailable".into(), "-".into()),
                None => ("-".into(), "-".into()),
            };
            vec![
                l.name.clone(),
                l.scope.clone(),
                l.rate.clone(),
                l.mode.clone(),
                if l.key.is_empty() {
                    "-".into()
                } else {
                    l.key.join(",")
                },
                remaining,
                reset,
            ]
        })
        .collect();
    let mut out = crate::table::render(
        &[
            "LIMIT",
            "SCOPE",
            "RATE",
            "MODE",
            "KEY",
            "REMAINING",
            "RESET",
        ],
        &rows,
    );
    if let Some(up) = view.redis {
        out.push_str(&format!("redis: {}\n", if up { "up" } else { "down" }));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_api::admin::{BucketView, RateLimitView};

    #[test]
    fn the_path_carries_each_key_part() {
        assert_eq!(path(&[]), "/rate_limits");
        assert_eq!(
            path(&["team a".into(), "x/y".into()]),
            "/rate_limits?key=team%20a&key=x%2Fy"
        );
    }

    #[test]
    fn renders_remaining_of_each_limit() {
        let view = RateLimitsView {
            key: vec!["alice".into()],
            redis: Some(true),
            limits: vec![RateLimitView {
                name: "monthly".into(),
                scope: "global".into(),
                rate: "1000/month".into(),
                mode: "reject".into(),
                key: vec!["header:x-consumer".into()],
                bucket: Some(BucketView {
                    source: "redis".into(),
                    limit: 1000,
                    remaining: 990,
                    reset_seconds: 12.2,
                }),
                ..RateLimitView::default()
            }],
        };
        let text = render(&view);
        assert!(text.contains("monthly"), "{text}");
        assert!(text.contains("990/1000"), "{text}");
        assert!(text.contains("13s"), "{text}");
        assert!(text.contains("redis: up"), "{text}");
    }
}
