//! The gRPC → REST reverse bridge: the Python grpcio client
//! (tests/py/grpc_bridge_client.py, stubs generated at run time) calls
//! library.v1.Library through a sidecar's outbound port whose upstream is
//! a plain REST/JSON server (tests/py/rest_library.py) that records every
//! request. Checked field by field on both sides: path variables, query
//! parameters, bodies, `response_body`, REST errors as gRPC statuses with
//! the body's message, an NDJSON answer as a server stream (and failing
//! in-band), refusals (client streaming, unmapped paths), the proxy's own
//! errors as gRPC statuses, and bad `grpc_bridge` config refused by
//! `sidecar check`.

use std::net::SocketAddr;

use mesh_tests::{curl, py_service, python, root, sidecar_check_yaml, Proc, Sidecar};
use serde_json::{json, Value};

use crate::refusing_port;

/// The `grpc_bridge:` block over tests/protos/library/v1/library.proto.
fn bridge_block() -> String {
    format!(
        "{{ protos: [library/v1/library.proto], include: [{}], headers: [x-user-id] }}",
        root().join("tests/protos").display()
    )
}

/// A sidecar whose `library` upstream (its own port) is the REST server
/// at `rest`, bridged; also `dead`, bridged to a port nothing listens on.
fn sidecar(rest: SocketAddr) -> Sidecar {
    let dead = refusing_port();
    let bridge = bridge_block();
    Sidecar::start(&format!(
        "service: web
admin: {{ listen: 127.0.0.1:0 }}
outbound:
  proxy: 127.0.0.1:0
  upstreams:
    library:
      listen: 127.0.0.1:0
      protocol: http1
      outlier: {{ consecutive_5xx: 0 }}
      discovery: {{ endpoints: [{rest}] }}
      grpc_bridge: {bridge}
    dead:
      listen: 127.0.0.1:0
      protocol: http1
      discovery: {{ endpoints: [127.0.0.1:{dead}] }}
      grpc_bridge: {bridge}
"
    ))
}

/// Runs the calls through `target`; the results, one per call.
fn calls(target: &str, specs: Value) -> Vec<Value> {
    let result = python("grpc_bridge_client.py", &[target, &specs.to_string()]);
    result
        .as_array()
        .unwrap_or_else(|| panic!("{result}"))
        .clone()
}

/// One call.
fn call(target: &str, spec: Value) -> Value {
    calls(target, json!([spec])).remove(0)
}

/// What the REST server received since the last look.
fn recorded(rest: SocketAddr) -> Vec<Value> {
    let out = curl(&[&format!("http://{rest}/_requests")]);
    let value: Value = serde_json::from_slice(&out.stdout).unwrap();
    value.as_array().unwrap().clone()
}

/// The one request the REST server received since the last look.
fn one_request(rest: SocketAddr) -> Value {
    let mut seen = recorded(rest);
    assert_eq!(seen.len(), 1, "{seen:?}");
    seen.remove(0)
}

fn rest_server() -> (Proc, SocketAddr) {
    py_service("rest_library.py", &[])
}

#[test]
fn unary_calls_map_onto_paths_queries_and_bodies() {
    let (_rest, rest) = rest_server();
    let web = sidecar(rest);
    let target = web.listener("outbound", Some("library")).to_string();

    // {name=shelves/*/books/*}, metadata as a header, int64 back from a string.
    let got = call(
        &target,
        json!({"method": "GetBook", "request": {"name": "shelves/s1/books/b 2"},
               "metadata": [["x-user-id", "u7"]]}),
    );
    assert_eq!(got["code"], "OK", "{got}");
    assert_eq!(got["response"]["name"], "shelves/s1/books/b 2");
    assert_eq!(got["response"]["title"], "Title of shelves/s1/books/b 2");
    assert_eq!(got["response"]["pageCount"], "123");
    // REST response headers come back as metadata.
    assert_eq!(got["initial"]["x-rest-server"], "library", "{got}");
    let seen = one_request(rest);
    assert_eq!(seen["method"], "GET");
    assert_eq!(
        seen["raw_path"],
        "/v1/shelves/s1/books/b 2".replace(' ', "%20")
    );
    assert_eq!(seen["query"], json!({}));
    assert_eq!(seen["body"], Value::Null);
    assert_eq!(seen["headers"]["x-user-id"], "u7");
    assert_eq!(seen["headers"]["accept"], "application/json");
    assert!(seen["headers"].get("content-type").is_none(), "{seen}");

    // Only book_id set: the additional binding /v1/books/{book_id}.
    let got = call(
        &target,
        json!({"method": "GetBook", "request": {"bookId": "a/b"}}),
    );
    assert_eq!(got["response"]["name"], "shelves/0/books/a/b", "{got}");
    assert_eq!(one_request(rest)["raw_path"], "/v1/books/a%2Fb");

    // Remaining fields as query parameters: nested, enum by name, repeated, bool, WKT.
    let got = call(
        &target,
        json!({"method": "ListBooks", "request": {
            "parent": "shelves/s1", "pageSize": 10,
            "filter": {"author": "Ada L", "genre": "SCIENCE"},
            "tags": ["a", "b"], "includeDrafts": true,
            "publishedAfter": "2024-01-02T03:04:05Z", "minRating": 4}}),
    );
    assert_eq!(got["code"], "OK", "{got}");
    assert_eq!(got["response"]["books"][0]["name"], "shelves/s1/books/1");
    assert_eq!(got["response"]["request"]["filter"]["genre"], "SCIENCE");
    let seen = one_request(rest);
    assert_eq!(seen["path"], "/v1/shelves/s1/books");
    assert_eq!(
        seen["query"],
        json!({"pageSize": ["10"], "filter.author": ["Ada L"], "filter.genre": ["SCIENCE"],
               "tags": ["a", "b"], "includeDrafts": ["true"],
               "publishedAfter": ["2024-01-02T03:04:05Z"], "minRating": ["4"]})
    );

    // body: "book": the field is the body, the rest (book_id) the query.
    let got = call(
        &target,
        json!({"method": "CreateBook", "request": {"parent": "shelves/s2", "bookId": "b9",
               "book": {"title": "Dune", "author": "Herbert", "genre": "FICTION", "pageCount": "412"}}}),
    );
    assert_eq!(got["response"]["name"], "shelves/s2/books/b9", "{got}");
    assert_eq!(got["response"]["title"], "Dune");
    let seen = one_request(rest);
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["path"], "/v1/shelves/s2/books");
    assert_eq!(seen["query"], json!({"bookId": ["b9"]}));
    assert_eq!(
        seen["body"],
        json!({"title": "Dune", "author": "Herbert", "genre": "FICTION", "pageCount": "412"})
    );
    assert_eq!(seen["headers"]["content-type"], "application/json");

    // A nested path variable ({book.name}) leaves the body field; the mask is a query parameter.
    let got = call(
        &target,
        json!({"method": "UpdateBook", "request": {"book": {"name": "shelves/1/books/2", "title": "New"},
               "updateMask": "title,author"}}),
    );
    assert_eq!(got["response"]["name"], "shelves/1/books/2", "{got}");
    assert_eq!(got["response"]["tags"], json!(["title", "author"]));
    let seen = one_request(rest);
    assert_eq!(seen["method"], "PATCH");
    assert_eq!(seen["path"], "/v1/shelves/1/books/2");
    assert_eq!(seen["body"], json!({"title": "New"}));
    assert_eq!(seen["query"], json!({"updateMask": ["title,author"]}));

    // body: "*" with a verb: the path variable leaves the body.
    let got = call(
        &target,
        json!({"method": "PublishBook", "request": {"name": "shelves/1/books/2",
               "at": "2024-05-06T07:08:09Z", "note": "out now"}}),
    );
    assert_eq!(got["response"]["title"], "out now", "{got}");
    assert_eq!(got["response"]["published"], "2024-05-06T07:08:09Z");
    let seen = one_request(rest);
    assert_eq!(seen["path"], "/v1/shelves/1/books/2:publish");
    assert_eq!(
        seen["body"],
        json!({"at": "2024-05-06T07:08:09Z", "note": "out now"})
    );

    // {path=**} keeps its slashes; a custom method; response_body.
    let got = call(
        &target,
        json!({"method": "GetFile", "request": {"path": "a/b/c.txt"}}),
    );
    assert_eq!(
        got["response"],
        json!({"path": "a/b/c.txt", "size": "9"}),
        "{got}"
    );
    assert_eq!(one_request(rest)["raw_path"], "/v1/files/a/b/c.txt");
    let got = call(
        &target,
        json!({"method": "Search", "request": {"shelf": "s3", "query": "Le Guin"}}),
    );
    assert_eq!(
        got["response"]["request"]["filter"]["author"], "Le Guin",
        "{got}"
    );
    let seen = one_request(rest);
    assert_eq!(seen["method"], "SEARCH");
    assert_eq!(seen["query"], json!({"query": ["Le Guin"]}));
    let got = call(
        &target,
        json!({"method": "ListTitles", "request": {"shelf": "s1"}}),
    );
    assert_eq!(got["response"]["titles"], json!(["A", "B", "C"]), "{got}");
    one_request(rest);

    // DELETE with an empty answer: google.protobuf.Empty.
    let got = call(
        &target,
        json!({"method": "DeleteBook", "request": {"name": "shelves/1/books/2"}}),
    );
    assert_eq!(got["code"], "OK", "{got}");
    assert_eq!(one_request(rest)["method"], "DELETE");
}

#[test]
fn rest_errors_become_grpc_statuses_with_the_body_message() {
    let (_rest, rest) = rest_server();
    let web = sidecar(rest);
    let target = web.listener("outbound", Some("library")).to_string();
    let table = [
        (400, "INVALID_ARGUMENT"),
        (401, "UNAUTHENTICATED"),
        (403, "PERMISSION_DENIED"),
        (404, "NOT_FOUND"),
        (409, "ALREADY_EXISTS"),
        (429, "RESOURCE_EXHAUSTED"),
        (499, "CANCELLED"),
        (500, "INTERNAL"),
        (501, "UNIMPLEMENTED"),
        (502, "UNAVAILABLE"),
        (503, "UNAVAILABLE"),
        (504, "DEADLINE_EXCEEDED"),
    ];
    let specs: Vec<Value> = table
        .iter()
        .map(|(http, _)| {
            json!({"method": "Fail", "request": {"code": http, "message": format!("failed with {http} ü")}})
        })
        .collect();
    let results = calls(&target, Value::Array(specs));
    for ((http, code), got) in table.iter().zip(&results) {
        assert_eq!(got["code"], *code, "HTTP {http}: {got}");
        assert_eq!(
            got["details"],
            format!("failed with {http} ü"),
            "HTTP {http}"
        );
    }
    // The bridged method without a rule went to POST /package.Service/Method.
    let seen = recorded(rest);
    assert!(seen.len() >= table.len(), "{seen:?}");
    assert!(seen
        .iter()
        .all(|r| r["method"] == "POST" && r["path"] == "/library.v1.Library/Fail"));

    // An error body nested as {"error": {"message"}}, and a plain text one.
    let got = call(
        &target,
        json!({"method": "GetBook", "request": {"name": "shelves/1/books/missing"}}),
    );
    assert_eq!(got["code"], "NOT_FOUND", "{got}");
    assert_eq!(got["details"], "no book shelves/1/books/missing");
    let got = call(
        &target,
        json!({"method": "DeleteBook", "request": {"name": "shelves/1/books/missing"}}),
    );
    assert_eq!(got["code"], "NOT_FOUND", "{got}");
    assert_eq!(got["details"], "gone");

    // The bridge's own refusals.
    let got = call(&target, json!({"method": "GetBook", "request": {}}));
    assert_eq!(got["code"], "INVALID_ARGUMENT", "{got}");
    assert!(got["details"].as_str().unwrap().contains("name"), "{got}");
    let got = call(&target, json!({"method": "ImportBooks", "request": {}}));
    assert_eq!(got["code"], "UNIMPLEMENTED", "{got}");
    // A REST answer that does not fit the response message.
    let got = call(
        &target,
        json!({"method": "GetBook", "request": {"bookId": "weird"}}),
    );
    assert_eq!(got["code"], "INTERNAL", "{got}");
    assert!(
        got["details"].as_str().unwrap().contains("library.v1.Book"),
        "{got}"
    );
    // No REST route answers 404 with a JSON message.
    let got = call(&target, json!({"method": "Echo", "request": {"big": "5"}}));
    assert_eq!(got["code"], "NOT_FOUND", "{got}");
    assert_eq!(got["details"], "no route POST /v1/echo");
    let seen = recorded(rest);
    assert_eq!(seen.last().unwrap()["body"], json!({"big": "5"}));

    // The proxy's own failure: nothing listens behind `dead`.
    let dead = web.listener("outbound", Some("dead")).to_string();
    let got = call(
        &dead,
        json!({"method": "GetBook", "request": {"name": "shelves/1/books/2"}}),
    );
    assert_eq!(got["code"], "UNAVAILABLE", "{got}");
    assert!(
        got["details"].as_str().unwrap().contains("upstream"),
        "{got}"
    );
}

#[test]
fn an_ndjson_answer_is_a_server_stream_failing_in_band() {
    let (_rest, rest) = rest_server();
    let web = sidecar(rest);
    let target = web.listener("outbound", Some("library")).to_string();
    let got = call(
        &target,
        json!({"method": "Watch", "request": {"shelf": "s1", "count": 4, "intervalMs": 50}}),
    );
    assert_eq!(got["code"], "OK", "{got}");
    let seqs: Vec<i64> = got["responses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 2, 3, 4], "{got}");
    assert_eq!(got["responses"][0]["shelf"], "s1");
    let seen = one_request(rest);
    assert_eq!(seen["path"], "/v1/shelves/s1:watch");
    assert_eq!(seen["headers"]["accept"], "application/x-ndjson");
    assert_eq!(seen["query"], json!({"count": ["4"], "intervalMs": ["50"]}));

    // An error line ends the stream with its status, after the messages before it.
    let got = call(
        &target,
        json!({"method": "Watch", "request": {"shelf": "s2", "count": 5, "failAfter": 2}}),
    );
    assert_eq!(got["code"], "UNAVAILABLE", "{got}");
    assert_eq!(got["details"], "shelf on fire");
    assert_eq!(got["responses"].as_array().unwrap().len(), 2, "{got}");
}

#[test]
fn forward_proxy_callers_are_bridged_by_authority() {
    let (_rest, rest) = rest_server();
    let web = sidecar(rest);
    let proxy = web.listener("proxy", None).to_string();
    let spec = json!([{"method": "GetBook", "request": {"name": "shelves/p/books/1"}}]);
    let result = python(
        "grpc_bridge_client.py",
        &[&proxy, &spec.to_string(), "library"],
    );
    let got = &result[0];
    assert_eq!(got["code"], "OK", "{result}");
    assert_eq!(got["response"]["name"], "shelves/p/books/1");
    let seen = one_request(rest);
    assert_eq!(seen["path"], "/v1/shelves/p/books/1");
    assert_eq!(seen["headers"]["host"], "library");
}

#[test]
fn bad_bridge_config_is_refused_naming_the_field() {
    let (code, text) = sidecar_check_yaml(&format!(
        "service: web
outbound:
  upstreams:
    library:
      listen: 127.0.0.1:0
      protocol: grpc
      discovery: {{ endpoints: [127.0.0.1:1] }}
      grpc_bridge: {{ protos: [library/v1/missing.proto], include: [{}] }}
    other:
      listen: 127.0.0.1:0
      discovery: {{ endpoints: [127.0.0.1:1] }}
      grpc_bridge: {{ reflection: true }}
",
        root().join("tests/protos").display()
    ));
    assert!(code != Some(0), "{text}");
    assert!(
        text.contains("outbound.upstreams.library.grpc_bridge.protos[0]"),
        "{text}"
    );
    assert!(
        text.contains("outbound.upstreams.library.grpc_bridge") && text.contains("http1"),
        "{text}"
    );
    assert!(
        text.contains("outbound.upstreams.other.grpc_bridge.reflection"),
        "{text}"
    );
}
