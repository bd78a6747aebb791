//! Body transformation end to end: a real edge in front of
//! `tests/py/transform_upstreams.py` (an XML service that records the XML
//! it receives, a JSON service, SOAP 1.1 and 1.2 endpoints that check
//! their action), driven with curl as a JSON client. What reached the
//! upstream is read back from its `/last`.

use std::net::SocketAddr;

use mesh_tests::{curl, py_service, Proc, Sidecar};
use serde_json::{json, Value};

use crate::{curl_reply, Reply};

/// Starts tests/py/transform_upstreams.py; returns it and its address.
fn upstreams() -> (Proc, SocketAddr) {
    py_service("transform_upstreams.py", &[])
}

/// An edge with one route per transformation, and the upstreams behind it.
struct Edge {
    _upstreams: Proc,
    upstream: SocketAddr,
    _sidecar: Sidecar,
    addr: SocketAddr,
}

fn edge() -> Edge {
    let (proc, upstream) = upstreams();
    let yaml = format!(
        r#"service: gateway
mode: edge
admin: {{ listen: 127.0.0.1:0 }}
edge:
  listeners: [{{ listen: 127.0.0.1:0 }}]
  upstreams:
    legacy: {{ discovery: {{ endpoints: [{upstream}] }} }}
  routes:
    - name: orders
      match: {{ path_prefix: /orders }}
      transform:
        request: json_to_xml
        response: xml_to_json
        xml: {{ root: order, arrays: [item] }}
      to: legacy
    - name: small
      match: {{ path_prefix: /small }}
      rewrite: {{ prefix: /orders }}
      transform: {{ request: json_to_xml, response: xml_to_json, max_body: 1KiB, xml: {{ root: order }} }}
      to: legacy
    - name: reshape
      match: {{ path_prefix: /reshape }}
      rewrite: {{ prefix: "" }}
      transform:
        json:
          request: {{ rename: {{ userName: user_name }}, remove: [debug], move: {{ address.zip: zip }} }}
          response: {{ rename: {{ userName: name }}, move: {{ data.items: items }}, remove: [data, items.secret] }}
      to: legacy
    - name: soap11
      match: {{ path: /quotes/v11 }}
      rewrite: {{ path: /soap11 }}
      transform:
        soap: {{ version: "1.1", action: "http://example.test/GetQuote", operation: GetQuote, namespace: "http://example.test/stock" }}
      to: legacy
    - name: soap12
      match: {{ path: /quotes/v12 }}
      rewrite: {{ path: /soap12 }}
      transform:
        soap:
          version: 1.2
          action: "http://example.test/GetQuote"
          operation: GetQuote
          namespace: "http://example.test/stock"
          faults: {{ Receiver: 503 }}
      to: legacy
    - name: plain
      match: {{ path_prefix: /plain }}
      rewrite: {{ prefix: "" }}
      to: legacy
"#
    );
    let sidecar = Sidecar::start(&yaml);
    let addr = sidecar.listener("edge", None);
    Edge {
        _upstreams: proc,
        upstream,
        _sidecar: sidecar,
        addr,
    }
}

impl Edge {
    /// A call through the edge with curl: `method`, `path`, JSON `body`.
    fn call(&self, method: &str, path: &str, body: Option<&str>) -> Reply {
        let url = format!("http://{}{path}", self.addr);
        let mut args = vec!["-i", "-X", method, url.as_str()];
        if let Some(body) = body {
            args.extend([
                "-H",
                "content-type: application/json",
                "--data-binary",
                body,
            ]);
        }
        curl_reply(&args)
    }

    /// What the upstream last received.
    fn last(&self) -> Value {
        let out = curl(&[&format!("http://{}/last", self.upstream)]);
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

/// The body length a reply declares matches what arrived.
fn assert_length_fits(reply: &Reply) {
    assert_eq!(
        reply.header("content-length"),
        Some(reply.body.len().to_string().as_str()),
        "{}",
        reply.body
    );
}

#[test]
fn xml_answers_reach_the_client_as_json() {
    let edge = edge();
    let reply = edge.call("GET", "/orders/7", None);
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_length_fits(&reply);
    let order = &reply.json()["order"];
    assert_eq!(order["@id"], "7");
    assert_eq!(order["customer"], "Ada & Co");
    assert_eq!(order["status"], "shipped", "namespace prefix stripped");
    assert_eq!(order["item"][0]["@sku"], "a1");
    assert_eq!(order["item"][0]["name"], "Pen");
    assert_eq!(order["item"][0]["qty"], "2", "text stays a string");
    assert_eq!(order["item"][1]["name"], "Ink");
    assert_eq!(order["note"], "handle <with> care");
    assert_eq!(order["gift"], Value::Null);
    assert!(order.get("@xmlns:x").is_none() && order.get("@x").is_none());
    // Element order is the document's.
    let keys = [
        "\"customer\"",
        "\"status\"",
        "\"item\"",
        "\"note\"",
        "\"gift\"",
    ];
    let at: Vec<usize> = keys.iter().map(|k| reply.body.find(k).unwrap()).collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{}", reply.body);

    // `arrays: [item]`: one item is still an array.
    let single = edge.call("GET", "/orders/single", None).json();
    assert_eq!(
        single["order"]["item"],
        json!([{"@sku": "c3", "name": "Pad"}])
    );

    // A route without transform passes the XML untouched.
    let plain = edge.call("GET", "/plain/orders/7", None);
    assert_eq!(plain.status, 200);
    assert!(plain
        .header("content-type")
        .unwrap()
        .starts_with("application/xml"));
    assert!(
        plain.body.contains("<customer>Ada &amp; Co</customer>"),
        "{}",
        plain.body
    );
}

#[test]
fn json_posts_arrive_as_xml() {
    let edge = edge();
    let body = r##"{"@id": 8, "customer": "Bob </customer><admin>yes</admin> & Co", "item": [{"@sku": "a1", "qty": 2}, {"@sku": "b\"2", "qty": 1}], "gift": null, "paid": true}"##;
    let reply = edge.call("POST", "/orders", Some(body));
    assert_eq!(reply.status, 201, "{}", reply.body);
    assert_eq!(
        reply.json(),
        json!({"created": {"id": "8", "status": "new"}})
    );

    let last = edge.last();
    assert_eq!(last["method"], "POST");
    assert_eq!(last["headers"]["content-type"], "application/xml");
    assert_eq!(
        last["headers"]["content-length"],
        last["body"].as_str().unwrap().len().to_string()
    );
    let xml = &last["xml"];
    assert!(last.get("xml_error").is_none(), "{last}");
    assert_eq!(xml["tag"], "order", "the configured root");
    assert_eq!(xml["attrib"], json!({"id": "8"}));
    let children = xml["children"].as_array().unwrap();
    let tags: Vec<&str> = children
        .iter()
        .map(|c| c["tag"].as_str().unwrap())
        .collect();
    assert_eq!(tags, ["customer", "item", "item", "gift", "paid"]);
    // The JSON string is text, never markup.
    assert_eq!(
        children[0]["text"],
        "Bob </customer><admin>yes</admin> & Co"
    );
    assert!(children[0]["children"].as_array().unwrap().is_empty());
    assert_eq!(children[2]["attrib"], json!({"sku": "b\"2"}));
    assert_eq!(children[2]["children"][0]["text"], "1");
    assert_eq!(children[3]["text"], Value::Null);
    assert_eq!(children[4]["text"], "true");

    // A body that is not JSON is the client's error, said as such.
    let bad = edge.call("POST", "/orders", Some("{\"customer\": "));
    assert_eq!(bad.status, 400);
    assert_eq!(bad.header("x-mesh-error"), Some("bad_request"));
    assert!(
        bad.json()["message"]
            .as_str()
            .unwrap()
            .contains("not valid JSON"),
        "{}",
        bad.body
    );
    // So is JSON with a key that is no XML name.
    let bad = edge.call("POST", "/orders", Some("{\"<evil/>\": 1}"));
    assert_eq!(bad.status, 400);
    assert!(
        bad.body.contains("not a valid XML element name"),
        "{}",
        bad.body
    );
}

#[test]
fn soap_services_are_called_as_rest() {
    let edge = edge();
    for (path, content_type) in [
        ("/quotes/v11", "text/xml; charset=utf-8"),
        (
            "/quotes/v12",
            "application/soap+xml; charset=utf-8; action=\"http://example.test/GetQuote\"",
        ),
    ] {
        let reply = edge.call("POST", path, Some(r#"{"symbol": "ACME"}"#));
        assert_eq!(reply.status, 200, "{path}: {}", reply.body);
        assert_eq!(reply.header("content-type"), Some("application/json"));
        assert_length_fits(&reply);
        assert_eq!(
            reply.json(),
            json!({"Price": "34.5", "Symbol": "ACME"}),
            "{path}"
        );
        let last = edge.last();
        assert_eq!(last["headers"]["content-type"], content_type, "{path}");
        let envelope = &last["xml"];
        assert!(
            envelope["tag"].as_str().unwrap().ends_with("}Envelope"),
            "{last}"
        );
        let operation = &envelope["children"][0]["children"][0];
        assert_eq!(operation["tag"], "{http://example.test/stock}GetQuote");
        assert_eq!(operation["children"][0]["text"], "ACME");
    }
    assert_eq!(
        edge.last()["headers"].get("soapaction"),
        None,
        "SOAP 1.2 carries the action in the Content-Type"
    );
    edge.call("POST", "/quotes/v11", Some(r#"{"symbol": "ACME"}"#));
    assert_eq!(
        edge.last()["headers"]["soapaction"],
        "\"http://example.test/GetQuote\""
    );

    // A GET without a body is still a POSTed envelope (here, without a
    // symbol: the service answers a Sender fault).
    let reply = edge.call("GET", "/quotes/v12", None);
    assert_eq!(edge.last()["method"], "POST");
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert_eq!(reply.json()["error"]["code"], "Sender");
}

#[test]
fn soap_faults_become_json_errors() {
    let edge = edge();
    let client = edge.call("POST", "/quotes/v11", Some(r#"{"symbol": "FAULT"}"#));
    assert_eq!(client.status, 400, "{}", client.body);
    assert_eq!(client.header("content-type"), Some("application/json"));
    assert_eq!(
        client.json(),
        json!({"error": {"code": "Client", "message": "Unknown symbol", "detail": {"symbol": "FAULT"}}})
    );
    let server = edge.call("POST", "/quotes/v11", Some(r#"{"symbol": "CRASH"}"#));
    assert_eq!(server.status, 502, "{}", server.body);
    assert_eq!(server.json()["error"]["code"], "Server");
    assert_eq!(server.json()["error"]["message"], "Quote backend is down");
    assert_eq!(
        server.header("x-mesh-error"),
        None,
        "the upstream's error, not the proxy's"
    );

    let sender = edge.call("POST", "/quotes/v12", Some(r#"{"symbol": "FAULT"}"#));
    assert_eq!(sender.status, 400, "{}", sender.body);
    assert_eq!(
        sender.json(),
        json!({"error": {"code": "Sender", "message": "Unknown symbol", "detail": {"symbol": "FAULT"}}})
    );
    // `faults: { Receiver: 503 }` on this route.
    let receiver = edge.call("POST", "/quotes/v12", Some(r#"{"symbol": "CRASH"}"#));
    assert_eq!(receiver.status, 503, "{}", receiver.body);
    assert_eq!(receiver.json()["error"]["code"], "Receiver");
}

#[test]
fn reshaping_renames_moves_and_removes_fields() {
    let edge = edge();
    let body =
        r#"{"userName": "ada", "debug": true, "address": {"zip": "75001", "city": "Paris"}}"#;
    let reply = edge.call("POST", "/reshape/echo-json", Some(body));
    assert_eq!(reply.status, 200, "{}", reply.body);
    let received: Value = serde_json::from_str(edge.last()["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        received,
        json!({"user_name": "ada", "address": {"city": "Paris"}, "zip": "75001"})
    );

    let reply = edge.call("GET", "/reshape/users/1", None);
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_length_fits(&reply);
    assert_eq!(
        reply.json(),
        json!({"name": "ada", "items": [{"id": 1}, {"id": 2}]})
    );
}

#[test]
fn limits_and_unreadable_upstream_bodies() {
    let edge = edge();
    let big = format!(r#"{{"note": "{}"}}"#, "x".repeat(2048));
    let reply = edge.call("POST", "/small", Some(&big));
    assert_eq!(reply.status, 413, "{}", reply.body);
    assert_eq!(reply.header("x-mesh-error"), Some("body_too_large"));
    // Without a Content-Length too (chunked).
    let url = format!("http://{}/small", edge.addr);
    let chunked = curl_reply(&[
        "-i",
        "-H",
        "transfer-encoding: chunked",
        "--data-binary",
        &big,
        &url,
    ]);
    assert_eq!(chunked.status, 413, "{}", chunked.body);

    for (path, status, reason) in [
        ("/small/big", 502, Some("bad_upstream_body")),
        ("/orders/malformed", 502, Some("bad_upstream_body")),
        ("/orders/doctype", 502, Some("bad_upstream_body")),
        // Not XML: the upstream's own answer passes untouched.
        ("/orders/html", 503, None),
    ] {
        let reply = edge.call("GET", path, None);
        assert_eq!(reply.status, status, "{path}: {}", reply.body);
        assert_eq!(reply.header("x-mesh-error"), reason, "{path}");
    }
    let malformed = edge.call("GET", "/orders/malformed", None);
    assert!(malformed.json()["message"]
        .as_str()
        .unwrap()
        .contains("not well-formed XML"));
    let big = edge.call("GET", "/small/big", None);
    assert!(big.json()["message"].as_str().unwrap().contains("max_body"));
    let html = edge.call("GET", "/orders/html", None);
    assert!(html.body.contains("down for maintenance"));
}
