//! REST/JSON ↔ gRPC transcoding with curl as the REST client and a Python
//! grpcio library service (tests/py/grpc_library.py, tests/protos) as the
//! upstream: every `google.api.http` mapping kind field by field, statuses
//! with details, bad requests naming the field, server streams arriving
//! line by line as NDJSON and SSE (and failing in-band), client and bidi
//! streams from NDJSON, descriptors from reflection, the inbound sidecar
//! case, and a bad `.proto` refused by `sidecar check`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mesh_tests::{bin, curl, root, sidecar_check, Proc, Sidecar};
use serde_json::{json, Value};

use crate::{curl_reply, inbound_sidecar, Reply};

/// Starts the library gRPC server; returns it and its address.
fn library(reflection: bool) -> (Proc, SocketAddr) {
    library_on(reflection, 0)
}

/// [`library`] on `port` (0: any).
fn library_on(reflection: bool, port: u16) -> (Proc, SocketAddr) {
    let mut command = Command::new("python3");
    command.arg(root().join("tests/py/grpc_library.py"));
    command.args(["--port", &port.to_string()]);
    if reflection {
        command.arg("--reflection");
    }
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let proc = Proc::adopt("grpc_library", child);
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let value: Value = serde_json::from_str(&line)
        .unwrap_or_else(|e| panic!("grpc_library printed {line:?}: {e}: {:?}", proc.log()));
    let addr = value["listening"].as_str().unwrap().parse().unwrap();
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    (proc, addr)
}

/// The `grpc_json:` block compiling tests/protos/library/v1/library.proto.
fn from_protos() -> String {
    format!(
        "{{ protos: [library/v1/library.proto], include: [{}], headers: [x-user-id] }}",
        root().join("tests/protos").display()
    )
}

/// An edge with one transcoding route to the library server.
fn edge(app: SocketAddr, grpc_json: &str) -> (Sidecar, String) {
    edge_with(app, grpc_json, "")
}

/// [`edge`], with `upstream` YAML added to the upstream (six spaces in).
fn edge_with(app: SocketAddr, grpc_json: &str, upstream: &str) -> (Sidecar, String) {
    let edge = Sidecar::start(&format!(
        "service: edge
mode: edge
admin: {{ listen: 127.0.0.1:0 }}
edge:
  listeners:
    - listen: 127.0.0.1:0
  routes:
    - name: library
      match: {{ path_prefix: / }}
      to: library
      grpc_json: {grpc_json}
  upstreams:
    library:
      protocol: grpc
      discovery: {{ endpoints: [{app}] }}
{upstream}"
    ));
    let base = format!("http://{}", edge.listener("edge", None));
    (edge, base)
}

/// A curl call: method, URL, optional JSON body, extra arguments.
fn call(method: &str, url: &str, body: Option<&str>, extra: &[&str]) -> Reply {
    let mut args = vec!["-i", "-X", method, url];
    if let Some(body) = body {
        args.extend([
            "-H",
            "content-type: application/json",
            "--data-binary",
            body,
        ]);
    }
    args.extend(extra);
    curl_reply(&args)
}

fn ok_json(reply: &Reply) -> Value {
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    reply.json()
}

/// Every mapping kind, through `base`.
fn check_mappings(base: &str) {
    // {name=shelves/*/books/*}, metadata both ways, int64 as a string.
    let got = call(
        "GET",
        &format!("{base}/v1/shelves/s1/books/b2"),
        None,
        &["-H", "x-user-id: u7"],
    );
    let book = ok_json(&got);
    assert_eq!(book["name"], "shelves/s1/books/b2");
    assert_eq!(book["title"], "Title of shelves/s1/books/b2");
    assert_eq!(book["pageCount"], "123");
    assert_eq!(got.header("x-seen-user"), Some("u7"));
    assert_eq!(got.header("x-trailer-note"), Some("done"));
    // An additional binding, {book_id}.
    let book = ok_json(&call("GET", &format!("{base}/v1/books/42"), None, &[]));
    assert_eq!(book["name"], "shelves/0/books/42");
    // A single-segment variable is percent-decoded.
    let book = ok_json(&call(
        "GET",
        &format!("{base}/v1/books/a%3Ab%20c"),
        None,
        &[],
    ));
    assert_eq!(book["name"], "shelves/0/books/a:b c");
    // Query parameters: nested, enum by name, repeated, bool, WKT, wrapper.
    let list = ok_json(&call(
        "GET",
        &format!("{base}/v1/shelves/s1/books?pageSize=10&filter.author=Ada%20L&filter.genre=SCIENCE&tags=a&tags=b&includeDrafts=true&published_after=2024-01-02T03:04:05Z&minRating=4"),
        None,
        &[],
    ));
    let echoed = &list["request"];
    assert_eq!(echoed["parent"], "shelves/s1");
    assert_eq!(echoed["pageSize"], 10);
    assert_eq!(
        echoed["filter"],
        json!({"author": "Ada L", "genre": "SCIENCE"})
    );
    assert_eq!(echoed["tags"], json!(["a", "b"]));
    assert_eq!(echoed["includeDrafts"], true);
    assert_eq!(echoed["publishedAfter"], "2024-01-02T03:04:05Z");
    assert_eq!(echoed["minRating"], 4);
    assert_eq!(list["books"][0]["genre"], "HISTORY");
    // Enum by number.
    let list = ok_json(&call(
        "GET",
        &format!("{base}/v1/shelves/s1/books?filter.genre=1"),
        None,
        &[],
    ));
    assert_eq!(list["request"]["filter"]["genre"], "FICTION");
    // body: "book", the rest from the path and the query.
    let book = ok_json(&call(
        "POST",
        &format!("{base}/v1/shelves/s1/books?bookId=b9"),
        Some(
            r#"{"title": "T", "pageCount": "300", "genre": "FICTION", "published": "2020-02-03T04:05:06Z"}"#,
        ),
        &[],
    ));
    assert_eq!(book["name"], "shelves/s1/books/b9");
    assert_eq!(book["title"], "T");
    assert_eq!(book["pageCount"], "300");
    assert_eq!(book["genre"], "FICTION");
    assert_eq!(book["published"], "2020-02-03T04:05:06Z");
    // A nested path field {book.name=...}, a FieldMask from the query.
    let book = ok_json(&call(
        "PATCH",
        &format!("{base}/v1/shelves/s1/books/b2?updateMask=title,author"),
        Some(r#"{"title": "New", "author": "Me"}"#),
        &[],
    ));
    assert_eq!(book["name"], "shelves/s1/books/b2");
    assert_eq!(book["title"], "New");
    assert_eq!(book["author"], "Me");
    assert_eq!(book["tags"], json!(["title", "author"]));
    // DELETE, Empty answer.
    assert_eq!(
        ok_json(&call(
            "DELETE",
            &format!("{base}/v1/shelves/s1/books/b2"),
            None,
            &[]
        )),
        json!({})
    );
    // A custom verb, body "*" merged with the path.
    let book = ok_json(&call(
        "POST",
        &format!("{base}/v1/shelves/s1/books/b2:publish"),
        Some(r#"{"at": "2025-05-06T07:08:09Z", "note": "hello"}"#),
        &[],
    ));
    assert_eq!(book["name"], "shelves/s1/books/b2");
    assert_eq!(book["title"], "hello");
    assert_eq!(book["published"], "2025-05-06T07:08:09Z");
    // {path=**}: slashes kept, %20 decoded (an encoded slash reaches the
    // transcoder decoded: the edge's `encoded_slashes: decode`).
    let file = ok_json(&call(
        "GET",
        &format!("{base}/v1/files/a/b/c/d%20e.txt"),
        None,
        &[],
    ));
    assert_eq!(file["path"], "a/b/c/d e.txt");
    assert_eq!(file["size"], "13");
    // A custom HTTP method.
    let found = ok_json(&call(
        "SEARCH",
        &format!("{base}/v1/shelves/s3/books?query=tolkien"),
        None,
        &[],
    ));
    assert_eq!(found["request"]["parent"], "s3");
    assert_eq!(found["request"]["filter"]["author"], "tolkien");
    // response_body: the field alone.
    let titles = ok_json(&call(
        "GET",
        &format!("{base}/v1/shelves/s1/titles"),
        None,
        &[],
    ));
    assert_eq!(titles, json!(["A", "B", "C"]));
    // Well-known types round trip.
    let kitchen = json!({
        "at": "2024-02-29T23:59:59.500Z",
        "took": "1.500s",
        "mask": "title,pageCount",
        "doc": {"a": [1.5, "x", null, true], "b": {"c": 2.5}},
        "anyValue": "text",
        "payload": {"@type": "type.googleapis.com/library.v1.Book", "name": "shelves/1/books/2", "pageCount": "7"},
        "maybeName": "",
        "maybeBig": "9007199254740993",
        "big": "-9007199254740993",
        "huge": "18446744073709551615",
        "blob": "AQID",
        "ratio": 0.25,
        "counts": {"x": 1, "y": 2},
        "genre": "SCIENCE"
    });
    let echoed = ok_json(&call(
        "POST",
        &format!("{base}/v1/echo"),
        Some(&kitchen.to_string()),
        &[],
    ));
    assert_eq!(echoed, kitchen);
    // A method without a rule, at POST /package.Service/Method.
    let failed = call(
        "POST",
        &format!("{base}/library.v1.Library/Fail"),
        Some(r#"{"code": 5, "message": "gone"}"#),
        &[],
    );
    assert_eq!(failed.status, 404);
    assert_eq!(
        failed.json(),
        json!({"code": 5, "message": "gone", "details": []})
    );
    // No binding for the path.
    let none = call("GET", &format!("{base}/v1/nothing/here"), None, &[]);
    assert_eq!(none.status, 404, "{}", none.body);
    assert_eq!(none.header("x-mesh-error"), Some("no_route"));
}

#[test]
fn edge_route_maps_every_binding_kind() {
    let (_app, app) = library(false);
    let (_edge, base) = edge(app, &from_protos());
    check_mappings(&base);
}

#[test]
fn grpc_statuses_become_http_statuses_with_details() {
    let (_app, app) = library(false);
    let (_edge, base) = edge(app, &from_protos());
    let table = [
        (1, 499),
        (2, 500),
        (3, 400),
        (4, 504),
        (5, 404),
        (6, 409),
        (7, 403),
        (8, 429),
        (9, 400),
        (10, 409),
        (11, 400),
        (12, 501),
        (13, 500),
        (14, 503),
        (15, 500),
        (16, 401),
    ];
    for (code, http) in table {
        let body = json!({"code": code, "message": format!("failure {code} é")}).to_string();
        let reply = call(
            "POST",
            &format!("{base}/library.v1.Library/Fail"),
            Some(&body),
            &[],
        );
        assert_eq!(reply.status, http, "code {code}: {}", reply.body);
        assert_eq!(reply.header("content-type"), Some("application/json"));
        assert_eq!(
            reply.json(),
            json!({"code": code, "message": format!("failure {code} é"), "details": []})
        );
    }
    // Details: a type in the descriptors as JSON, an unknown one as base64.
    let body = r#"{"code": 9, "message": "shelf locked", "withDetails": true}"#;
    let reply = call(
        "POST",
        &format!("{base}/library.v1.Library/Fail"),
        Some(body),
        &[],
    );
    assert_eq!(reply.status, 400);
    assert_eq!(
        reply.json(),
        json!({"code": 9, "message": "shelf locked", "details": [
            {"@type": "type.googleapis.com/library.v1.ErrorDetail", "reason": "BAD_SHELF", "field": "shelf"},
            {"@type": "type.googleapis.com/other.Unknown", "value": "AQI="}
        ]})
    );
    // A mapped method failing.
    let reply = call(
        "DELETE",
        &format!("{base}/v1/shelves/s1/books/missing"),
        None,
        &[],
    );
    assert_eq!(reply.status, 404);
    assert_eq!(reply.json()["message"], "no book shelves/s1/books/missing");
}

#[test]
fn bad_requests_are_400_naming_the_field() {
    let (_app, app) = library(false);
    let (_edge, base) = edge(app, &from_protos());
    let bad = |method: &str, path: &str, body: Option<&str>| {
        let reply = call(method, &format!("{base}{path}"), body, &[]);
        assert_eq!(reply.status, 400, "{path} {body:?}: {}", reply.body);
        assert_eq!(reply.header("x-mesh-error"), Some("bad_request"));
        reply.json()["message"].as_str().unwrap().to_string()
    };
    let message = bad("POST", "/v1/shelves/s1/books", Some(r#"{"title": "x""#));
    assert!(message.contains("malformed JSON"), "{message}");
    let message = bad("POST", "/v1/shelves/s1/books", Some(r#"{"title": 5}"#));
    // The path is the request message's: the body is its `book` field.
    assert!(message.contains("`book.title`"), "{message}");
    let message = bad("POST", "/v1/shelves/s1/books", Some(r#"{"titel": "x"}"#));
    assert!(
        message.contains("`book.titel`") && message.contains("unknown field"),
        "{message}"
    );
    let message = bad(
        "POST",
        "/v1/shelves/s1/books/b1:publish",
        Some(r#"{"at": "yesterday"}"#),
    );
    assert!(message.contains("`at`"), "{message}");
    let message = bad(
        "POST",
        "/v1/echo",
        Some(r#"{"doc": {}, "counts": {"x": "many"}}"#),
    );
    assert!(message.contains("`counts`"), "{message}");
    let message = bad("GET", "/v1/shelves/s1/books?pageSize=ten", None);
    assert!(message.contains("`pageSize`"), "{message}");
    let message = bad("GET", "/v1/shelves/s1/books?filter.genre=POETRY", None);
    assert!(message.contains("`filter.genre`"), "{message}");
    let message = bad("GET", "/v1/shelves/s1/books?colour=red", None);
    assert!(message.contains("`colour`"), "{message}");
}

/// A streaming call with curl, each line timestamped as it arrives.
fn stream_lines(url: &str, accept: &str) -> Vec<(Duration, String)> {
    let start = Instant::now();
    let mut child = Command::new("curl")
        .args([
            "-sSN",
            "--max-time",
            "20",
            "-H",
            &format!("accept: {accept}"),
            url,
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let lines: Vec<_> = stdout
        .lines()
        .map(|l| (start.elapsed(), l.unwrap()))
        .filter(|(_, l)| !l.is_empty())
        .collect();
    assert!(child.wait().unwrap().success(), "curl failed on {url}");
    lines
}

#[test]
fn server_streams_arrive_as_they_are_sent_as_ndjson_and_sse() {
    let (_app, app) = library(false);
    let (_edge, base) = edge(app, &from_protos());
    let head = call(
        "GET",
        &format!("{base}/v1/shelves/s1:watch?count=2&intervalMs=10"),
        None,
        &[],
    );
    assert_eq!(head.header("content-type"), Some("application/x-ndjson"));
    // Five events 200 ms apart: the first reaches curl long before the last.
    let lines = stream_lines(
        &format!("{base}/v1/shelves/s1:watch"),
        "application/x-ndjson",
    );
    assert_eq!(lines.len(), 5, "{lines:?}");
    for (i, (_, line)) in lines.iter().enumerate() {
        let event: Value = serde_json::from_str(line).unwrap();
        assert_eq!(event, json!({"seq": i + 1, "shelf": "s1", "kind": "tick"}));
    }
    let spread = lines[4].0 - lines[0].0;
    assert!(spread >= Duration::from_millis(600), "{lines:?}");
    // The same as SSE.
    let lines = stream_lines(&format!("{base}/v1/shelves/s2:watch"), "text/event-stream");
    assert_eq!(lines.len(), 5, "{lines:?}");
    for (i, (_, line)) in lines.iter().enumerate() {
        let data = line.strip_prefix("data: ").unwrap();
        let event: Value = serde_json::from_str(data).unwrap();
        assert_eq!(event["seq"], i + 1);
        assert_eq!(event["shelf"], "s2");
    }
    assert!(
        lines[4].0 - lines[0].0 >= Duration::from_millis(600),
        "{lines:?}"
    );
    // A stream failing after two messages ends with the status, in-band.
    let lines = stream_lines(&format!("{base}/v1/shelves/s1:watch?failAfter=2"), "*/*");
    let texts: Vec<&str> = lines.iter().map(|(_, l)| l.as_str()).collect();
    assert_eq!(texts.len(), 3, "{texts:?}");
    let last: Value = serde_json::from_str(texts[2]).unwrap();
    assert_eq!(
        last,
        json!({"error": {"code": 14, "message": "shelf on fire", "details": []}})
    );
    // Failing before the first message: the mapped HTTP status.
    let early = call(
        "GET",
        &format!("{base}/v1/shelves/s1:watch?failAfter=-1"),
        None,
        &[],
    );
    assert_eq!(early.status, 503, "{}", early.body);
    assert_eq!(
        early.json(),
        json!({"code": 14, "message": "shelf on fire", "details": []})
    );
    let lines = stream_lines(
        &format!("{base}/v1/shelves/s1:watch?failAfter=2"),
        "text/event-stream",
    );
    let texts: Vec<&str> = lines.iter().map(|(_, l)| l.as_str()).collect();
    assert_eq!(texts.len(), 4, "{texts:?}");
    assert_eq!(texts[2], "event: error");
    let error: Value = serde_json::from_str(texts[3].strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(error["code"], 14);
    assert_eq!(error["message"], "shelf on fire");
}

#[test]
fn client_and_bidi_streams_from_ndjson() {
    let (_app, app) = library(false);
    let (_edge, base) = edge(app, &from_protos());
    let upload = "{\"title\": \"a\", \"pageCount\": \"10\"}\n\n{\"title\": \"b\", \"pageCount\": 5}\n{\"title\": \"c\"}";
    let summary = ok_json(&call(
        "POST",
        &format!("{base}/v1/books:import"),
        Some(upload),
        &["-H", "content-type: application/x-ndjson"],
    ));
    assert_eq!(
        summary,
        json!({"count": 3, "titles": ["a", "b", "c"], "pages": "15"})
    );
    // A bad line is a 400 naming the line and the field.
    let reply = call(
        "POST",
        &format!("{base}/v1/books:import"),
        Some("{\"title\": \"a\"}\n{\"pages\": 1}\n"),
        &[],
    );
    assert_eq!(reply.status, 400, "{}", reply.body);
    let message = reply.json()["message"].as_str().unwrap().to_string();
    assert!(
        message.contains("line 2") && message.contains("`pages`"),
        "{message}"
    );
    // Bidi: NDJSON in, NDJSON out.
    let output = curl(&[
        "-X",
        "POST",
        "--data-binary",
        "{\"text\": \"hi\", \"seq\": 1}\n{\"text\": \"there\", \"seq\": 2}\n",
        &format!("{base}/v1/chat"),
    ]);
    let text = String::from_utf8_lossy(&output.stdout);
    let replies: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        replies,
        vec![
            json!({"text": "echo: hi", "seq": 1}),
            json!({"text": "echo: there", "seq": 2})
        ]
    );
}

#[test]
fn bidi_streams_both_ways_at_once() {
    let (_app, app) = library(false);
    let (edge, _base) = edge(app, &from_protos());
    let target = edge.listener("edge", None).to_string();
    // Each reply arrives before the next line is sent.
    let result = mesh_tests::python("grpc_library_duplex.py", &[&target, "3"]);
    assert_eq!(
        result,
        json!({"replies": ["echo: m1", "echo: m2", "echo: m3"], "status": 200, "content_type": "application/x-ndjson"})
    );
}

#[test]
fn reflection_gives_the_same_answers_as_proto_files() {
    let (_app, app) = library(true);
    let (_edge, base) = edge(app, "{ reflection: true, headers: [x-user-id] }");
    check_mappings(&base);
    let reply = call(
        "POST",
        &format!("{base}/library.v1.Library/Fail"),
        Some(r#"{"code": 9, "message": "locked", "withDetails": true}"#),
        &[],
    );
    assert_eq!(reply.json()["details"][0]["reason"], "BAD_SHELF");
    // A server without reflection: 503 with the reason, every time.
    let (_plain, plain) = library(false);
    let (_edge2, base2) = edge(plain, "{ reflection: true }");
    for _ in 0..2 {
        let reply = call("GET", &format!("{base2}/v1/books/1"), None, &[]);
        assert_eq!(reply.status, 503, "{}", reply.body);
        assert_eq!(
            reply.header("x-mesh-error"),
            Some("grpc_descriptors_unavailable")
        );
        assert!(
            reply.json()["message"]
                .as_str()
                .unwrap()
                .contains("reflection"),
            "{}",
            reply.body
        );
    }
}

#[test]
fn failed_reflection_is_retried() {
    let port = crate::closed_port();
    let app: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let (_edge, base) = edge(app, "{ reflection: true }");
    let reply = call("GET", &format!("{base}/v1/books/1"), None, &[]);
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert_eq!(
        reply.header("x-mesh-error"),
        Some("grpc_descriptors_unavailable")
    );
    // The service comes up: a later request fetches the descriptors.
    let (_app, _) = library_on(true, port);
    mesh_tests::wait_until(Duration::from_secs(10), "reflection retried", || {
        call("GET", &format!("{base}/v1/books/1"), None, &[]).status == 200
    });
    let book = ok_json(&call("GET", &format!("{base}/v1/books/7"), None, &[]));
    assert_eq!(book["name"], "shelves/0/books/7");
}

#[test]
fn descriptor_set_file_gives_the_same_answers() {
    let (_app, app) = library(false);
    let dir = tempfile::tempdir().unwrap();
    let set = dir.path().join("library.pb");
    let protos = root().join("tests/protos");
    let status = Command::new("python3")
        .args(["-c", "import sys, os, grpc_tools; from grpc_tools import protoc; sys.exit(protoc.main(['protoc', '-I' + sys.argv[1], '-I' + sys.argv[3], '-I' + os.path.join(os.path.dirname(grpc_tools.__file__), '_proto'), '--include_imports', '--descriptor_set_out=' + sys.argv[2], 'library/v1/library.proto']))"])
        .arg(&protos)
        .arg(&set)
        // google/api, as the proxy embeds it.
        .arg(root().join("sidecar/src/translate/grpc_json"))
        .status()
        .unwrap();
    assert!(status.success());
    let (_edge, base) = edge(
        app,
        &format!(
            "{{ descriptor_set: {}, headers: [x-user-id] }}",
            set.display()
        ),
    );
    check_mappings(&base);
}

#[test]
fn inbound_sidecar_transcodes_for_its_app() {
    let (_app, app) = library(false);
    // protocol: auto (the default): the translated call still goes out as HTTP/2.
    let sidecar = inbound_sidecar(app, &format!("  grpc_json: {}\n", from_protos()));
    let base = format!("http://{}", sidecar.listener("inbound", None));
    let book = ok_json(&call(
        "GET",
        &format!("{base}/v1/shelves/x/books/y"),
        None,
        &[],
    ));
    assert_eq!(book["name"], "shelves/x/books/y");
    let lines = stream_lines(
        &format!("{base}/v1/shelves/s1:watch?count=3&intervalMs=50"),
        "*/*",
    );
    assert_eq!(lines.len(), 3, "{lines:?}");
    let reply = call(
        "POST",
        &format!("{base}/library.v1.Library/Fail"),
        Some(r#"{"code": 7, "message": "no"}"#),
        &[],
    );
    assert_eq!(reply.status, 403);
}

#[test]
fn route_timeout_print_options_stream_format_and_body_limit() {
    let (_app, app) = library(false);
    let grpc_json = format!(
        "{{ protos: [library/v1/library.proto], include: [{}], print: {{ emit_defaults: true, proto_names: true }}, stream: sse, max_body: 1KiB }}",
        root().join("tests/protos").display()
    );
    let (_edge, base) = edge_with(app, &grpc_json, "      timeouts: { request: 3s }\n");
    let got = call("GET", &format!("{base}/v1/books/42"), None, &[]);
    let book = ok_json(&got);
    // The route's timeout reached the service as its deadline.
    let left: u64 = got.header("x-deadline-ms").unwrap().parse().unwrap();
    assert!((1000..=3000).contains(&left), "{left}");
    // Proto field names, defaults printed.
    assert_eq!(book["page_count"], "123");
    assert_eq!(book["author"], "");
    assert_eq!(book["tags"], json!([]));
    assert_eq!(book["genre"], "GENRE_UNSPECIFIED");
    // SSE whatever the Accept.
    let lines = stream_lines(
        &format!("{base}/v1/shelves/s1:watch?count=2&interval_ms=10"),
        "*/*",
    );
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].1.starts_with("data: {"), "{lines:?}");
    // The JSON body limit.
    let big = json!({ "maybeName": "x".repeat(2000) }).to_string();
    let reply = call("POST", &format!("{base}/v1/echo"), Some(&big), &[]);
    assert_eq!(reply.status, 413, "{}", reply.body);
    assert_eq!(reply.header("x-mesh-error"), Some("body_too_large"));
    // Without a route timeout the service still gets a deadline (15 s by default).
    let (_app2, app2) = library(false);
    let (_edge2, base2) = edge(app2, &from_protos());
    let got = call("GET", &format!("{base2}/v1/books/42"), None, &[]);
    let left: u64 = got.header("x-deadline-ms").unwrap().parse().unwrap();
    assert!((10_000..=15_000).contains(&left), "{left}");
}

#[test]
fn inbound_authz_rules_for_grpc_paths_apply_to_rest_calls() {
    let (_app, app) = library(false);
    let sidecar = inbound_sidecar(
        app,
        &format!(
            "  grpc_json: {}\n  authz:\n    - allow: [\"*\"]\n      paths: [/library.v1.Library/GetBook]\n",
            from_protos()
        ),
    );
    let base = format!("http://{}", sidecar.listener("inbound", None));
    let book = ok_json(&call(
        "GET",
        &format!("{base}/v1/shelves/x/books/y"),
        None,
        &[],
    ));
    assert_eq!(book["name"], "shelves/x/books/y");
    let refused = call("GET", &format!("{base}/v1/shelves/x/titles"), None, &[]);
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert_eq!(refused.header("x-mesh-error"), Some("forbidden"));
}

#[test]
fn bad_proto_files_fail_the_check_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("protos/bad")).unwrap();
    std::fs::write(
        dir.path().join("protos/bad/broken.proto"),
        "syntax = \"proto3\";\npackage bad;\nmessage M { string name = 1 }\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("protos/bad/imports.proto"),
        "syntax = \"proto3\";\npackage bad;\nimport \"nowhere/missing.proto\";\n",
    )
    .unwrap();
    let config = dir.path().join("sidecar.yaml");
    std::fs::write(
        &config,
        "service: edge
mode: edge
edge:
  listeners:
    - listen: 127.0.0.1:0
  routes:
    - match: { path_prefix: / }
      to: library
      grpc_json: { protos: [bad/broken.proto, bad/imports.proto], include: [protos] }
    - match: { path_prefix: /other }
      to: library
      grpc_json: { protos: [x.proto], reflection: true }
  upstreams:
    library:
      protocol: grpc
      discovery: { endpoints: [127.0.0.1:1] }
",
    )
    .unwrap();
    let (code, text) = sidecar_check(&config);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("edge.routes[0].grpc_json.protos[0]"),
        "{text}"
    );
    assert!(
        text.contains("edge.routes[0].grpc_json.protos[1]"),
        "{text}"
    );
    assert!(text.contains("nowhere/missing.proto"), "{text}");
    assert!(
        text.contains("edge.routes[1].grpc_json") && text.contains("exactly one of"),
        "{text}"
    );
}

#[test]
fn openapi_document_from_the_descriptors_validates() {
    let (_app, app) = library(false);
    let (edge, _base) = edge(app, &from_protos());
    let output = Command::new(bin("mesh-ctl"))
        .args(["openapi", "--admin", &edge.admin.to_string()])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let document: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(document, edge.admin_json("/grpc_json/openapi"));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, &output.stdout).unwrap();
    let verdict = mesh_tests::python("grpc_library_openapi.py", &[file.to_str().unwrap()]);
    assert_eq!(verdict, json!({"valid": true}));
    let paths = &document["paths"];
    let publish = &paths["/v1/{name}:publish"]["post"];
    assert_eq!(publish["operationId"], "Library_PublishBook");
    assert_eq!(
        publish["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/library.v1.PublishBookRequest"
    );
    let list = &paths["/v1/{parent}/books"]["get"]["parameters"];
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"parent") && names.contains(&"filter.genre") && names.contains(&"pageSize"),
        "{names:?}"
    );
    assert!(
        paths["/v1/shelves/{shelf}:watch"]["get"]["responses"]["200"]["content"]
            ["application/x-ndjson"]
            .is_object()
    );
    assert!(paths["/library.v1.Library/Fail"]["post"].is_object());
    let book = &document["components"]["schemas"]["library.v1.Book"]["properties"];
    assert_eq!(
        book["pageCount"],
        json!({"type": "string", "format": "int64"})
    );
    assert_eq!(
        book["published"],
        json!({"type": "string", "format": "date-time"})
    );
}

#[test]
fn transcoded_calls_report_their_grpc_status_in_metrics_and_the_access_log() {
    let (_app, app) = library(false);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let edge = Sidecar::start(&format!(
        "service: edge
mode: edge
admin: {{ listen: 127.0.0.1:0 }}
log: {{ access: {} }}
edge:
  listeners:
    - listen: 127.0.0.1:0
  routes:
    - name: library
      match: {{ path_prefix: / }}
      to: library
      grpc_json: {}
  upstreams:
    library:
      protocol: grpc
      discovery: {{ endpoints: [{app}] }}
",
        log.display(),
        from_protos()
    ));
    let base = format!("http://{}", edge.listener("edge", None));
    ok_json(&call(
        "GET",
        &format!("{base}/v1/shelves/s1/books/b2"),
        None,
        &[],
    ));
    let missing = call(
        "DELETE",
        &format!("{base}/v1/shelves/s1/books/missing"),
        None,
        &[],
    );
    assert_eq!(missing.status, 404, "{}", missing.body);
    // A server stream: the status arrives after the last line.
    let stream = call(
        "GET",
        &format!("{base}/v1/shelves/s1:watch?count=2&intervalMs=10"),
        None,
        &[],
    );
    assert_eq!(stream.status, 200, "{}", stream.body);

    // The JSON caller saw no gRPC status; the metrics and the log carry it.
    let series = |status: &str, grpc: &str| {
        edge.metrics()
            .lines()
            .filter(|l| l.starts_with("mesh_requests_total{"))
            .filter(|l| l.contains("route=\"library\""))
            .filter(|l| l.contains(&format!("status=\"{status}\"")))
            .filter(|l| l.contains(&format!("grpc_status=\"{grpc}\"")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    mesh_tests::wait_until(Duration::from_secs(5), "counted with grpc_status", || {
        series("200", "0") >= 2.0 && series("404", "5") >= 1.0
    });
    let mut lines = Vec::new();
    mesh_tests::wait_until(Duration::from_secs(5), "three access log lines", || {
        lines = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .collect();
        lines.len() >= 3
    });
    let status_of = |path: &str| {
        lines
            .iter()
            .find(|l| l["path"].as_str().is_some_and(|p| p.starts_with(path)))
            .map(|l| l["grpc_status"].clone())
            .unwrap_or_else(|| panic!("no line for {path}: {lines:?}"))
    };
    assert_eq!(status_of("/v1/shelves/s1/books/b2"), 0);
    assert_eq!(status_of("/v1/shelves/s1/books/missing"), 5);
    assert_eq!(status_of("/v1/shelves/s1:watch"), 0);
}
