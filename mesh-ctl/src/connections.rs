//! `mesh-ctl connections`: an edge proxy's open bridged WebSocket
//! connections (`GET /connections`): ID, route, client address, identity,
//! connected at, last active.
//! Reads: the admin API. Writes: a table (or the proxy's JSON with `-o json`).

use serde_json::Value;

use crate::admin_client::AdminClient;
use crate::commands::{Options, Output, Report};

/// `GET /connections`.
pub fn connections(admin: &str, opts: Options) -> Report {
    let client = AdminClient::new(admin, opts.timeout);
    let answer = match client.send("GET", "/connections", b"") {
        Ok(response) if response.status == 200 => serde_json::from_slice::<Value>(&response.body)
            .map_err(|err| format!("{admin}: GET /connections: {err}")),
        Ok(response) => Err(format!(
            "{admin}: GET /connections answered {}",
            response.status
        )),
        Err(err) => Err(err.to_string()),
    };
    match answer {
        Ok(answer) => Report {
            stdout: match opts.output {
                Output::Json => crate::commands::to_json(&answer),
                Output::Table => render(&answer),
            },
            problems: Vec::new(),
        },
        Err(problem) => Report {
            stdout: String::new(),
            problems: vec![problem],
        },
    }
}

/// One row per connection.
pub fn render(answer: &Value) -> String {
    let text = |c: &Value, field: &str| c[field].as_str().unwrap_or("-").to_string();
    let rows: Vec<Vec<String>> = answer["connections"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|c| {
            [
                "id",
                "route",
                "source_ip",
                "identity",
                "connected_at",
                "last_active",
            ]
            .iter()
            .map(|field| text(c, field))
            .collect()
        })
        .collect();
    if rows.is_empty() {
        return "no open bridged connections\n".into();
    }
    crate::table::render(
        &[
            "ID",
            "ROUTE",
            "CLIENT",
            "IDENTITY",
            "CONNECTED",
            "LAST ACTIVE",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_one_row_per_connection() {
        let answer = serde_json::json!({ "connections": [
            { "id": "abc", "route": "ws", "source_ip": "127.0.0.1", "identity": null,
              "connected_at": "2026-11-24T15:00:00.000Z", "last_active": "2026-11-24T15:01:00.000Z" }
        ]});
        let table = render(&answer);
        assert!(table.contains("abc"), "{table}");
        assert!(table.contains("127.0.0.1"));
        assert_eq!(
            render(&serde_json::json!({"connections": []})),
            "no open bridged connections\n"
        );
    }
}
