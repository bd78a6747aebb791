//! `mesh-ctl openapi`: the OpenAPI 3 document of a proxy's REST/JSON ↔ gRPC
//! transcoded APIs (`GET /grpc_json/openapi` on its admin API), printed as
//! JSON whatever `-o` says (it is a document, not a table).
//! Errors: a proxy that cannot be asked is a problem (exit 1).

use crate::admin_client::AdminClient;
use crate::commands::{Options, Report};

/// The document, pretty-printed.
pub fn openapi(admin: &str, opts: Options) -> Report {
    let client = AdminClient::new(admin, opts.timeout);
    let path = "/grpc_json/openapi";
    let answer = client
        .request("GET", path)
        .map_err(|e| e.to_string())
        .and_then(|r| {
            if r.status != 200 {
                return Err(format!("GET {path} on {admin}: HTTP {}", r.status));
            }
            serde_json::from_slice::<serde_json::Value>(&r.body)
                .map_err(|e| format!("GET {path} on {admin}: {e}"))
        });
    match answer {
        Ok(document) => Report {
            stdout: format!(
                "{}\n",
                serde_json::to_string_pretty(&document).unwrap_or_default()
            ),
            problems: Vec::new(),
        },
        Err(problem) => Report {
            stdout: String::new(),
            problems: vec![problem],
        },
    }
}
