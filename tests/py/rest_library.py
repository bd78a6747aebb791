#!/usr/bin/env python3
"""Library REST/JSON test server for the gRPC → REST bridge tests.

    rest_library.py

The same API as tests/protos/library/v1/library.proto, spoken as REST per
its google.api.http rules (plain http.server, HTTP/1.1). Listens on a free
127.0.0.1 port and prints {"listening": "127.0.0.1:PORT"} once serving.

Every request is recorded as {"method", "path", "query": {name: [values]},
"headers": {lower-case name: value}, "body": parsed JSON or null};
GET /_requests answers the list and empties it (not recorded itself).

Behaviour:
  GET    /v1/shelves/S/books/B       Book{name, title: "Title of " + name, pageCount: "123"};
                                     B == "missing": 404 {"error": {"message": "no book NAME"}}
  GET    /v1/books/ID                Book{name: "shelves/0/books/" + ID}; ID "weird":
                                     {"unknownField": 1} (no Book)
  GET    /v1/shelves/S/books         {books: [one book], request: {parent, pageSize, ...} from the query}
  POST   /v1/shelves/S/books         the body book, name shelves/S/books/ + bookId (query)
  PATCH  /v1/shelves/S/books/B       the body book, name from the path, tags = updateMask split
  DELETE /v1/shelves/S/books/B       {} (B == "missing": 404 with a text body "gone")
  POST   /v1/shelves/S/books/B:publish  Book{name, title: note, published: at}
  GET    /v1/files/PATH              File{path, size: len(path)}
  SEARCH /v1/shelves/S/books         {request: {parent: S, filter: {author: query}}}
  GET    /v1/shelves/S/titles        ["A", "B", "C"] (the bare response_body)
  GET    /v1/shelves/S:watch         NDJSON: count (default 3) events {seq, shelf, kind: "added"},
                                     interval_ms apart; with failAfter N > 0 an error line
                                     {"error": {"code": 14, "message": "shelf on fire"}} after N
  POST   /library.v1.Library/Fail    answers HTTP `code` with {"message": message}
                                     (`message` "text" → a text/plain body "plain failure")
  POST   /library.v1.Library/Echo    (no such route) 404
"""

import json
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

RECORDED = []
LOCK = threading.Lock()


def book(name, **extra):
    out = {"name": name, "title": f"Title of {name}", "pageCount": "123"}
    out.update(extra)
    return out


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send_json(self, status, value, content_type="application/json"):
        body = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.send_header("x-rest-server", "library")
        self.end_headers()
        self.wfile.write(body)

    def send_text(self, status, text):
        body = text.encode()
        self.send_response(status)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def read_body(self):
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        return json.loads(raw) if raw.strip() else None

    def handle_any(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/_requests":
            with LOCK:
                seen = list(RECORDED)
                RECORDED.clear()
            return self.send_json(200, seen)
        query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        body = self.read_body()
        with LOCK:
            RECORDED.append(
                {
                    "method": self.command,
                    "path": url.path,
                    "raw_path": url.path,
                    "query": query,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "body": body,
                }
            )
        path = urllib.parse.unquote(url.path)
        parts = [urllib.parse.unquote(p) for p in url.path.strip("/").split("/")]
        one = lambda name: query.get(name, [None])[0]
        method = self.command

        if method == "POST" and path == "/library.v1.Library/Fail":
            code = int((body or {}).get("code", 500))
            message = (body or {}).get("message", "")
            if message == "text":
                return self.send_text(code, "plain failure")
            return self.send_json(code, {"message": message})
        if path.endswith(":watch") and method == "GET":
            return self.watch(parts[2].split(":")[0], query)
        if parts[:2] == ["v1", "files"] and method == "GET":
            rest = "/".join(parts[2:])
            return self.send_json(200, {"path": rest, "size": str(len(rest))})
        if parts == ["v1", "books", "weird"] and method == "GET":
            return self.send_json(200, {"unknownField": 1})
        if parts[:2] == ["v1", "books"] and len(parts) == 3 and method == "GET":
            return self.send_json(200, book(f"shelves/0/books/{parts[2]}"))
        if len(parts) == 4 and parts[:2] == ["v1", "shelves"] and parts[3] == "titles":
            return self.send_json(200, ["A", "B", "C"])
        if len(parts) == 4 and parts[:2] == ["v1", "shelves"] and parts[3] == "books":
            shelf = parts[2]
            if method == "GET":
                request = {"parent": f"shelves/{shelf}"}
                if one("pageSize"):
                    request["pageSize"] = int(one("pageSize"))
                if one("filter.author") or one("filter.genre"):
                    request["filter"] = {
                        k: v
                        for k, v in (
                            ("author", one("filter.author")),
                            ("genre", one("filter.genre")),
                        )
                        if v
                    }
                if "tags" in query:
                    request["tags"] = query["tags"]
                return self.send_json(
                    200, {"books": [book(f"shelves/{shelf}/books/1")], "request": request}
                )
            if method == "POST":
                created = dict(body or {})
                created["name"] = f"shelves/{shelf}/books/{one('bookId')}"
                return self.send_json(200, created)
            if method == "SEARCH":
                return self.send_json(
                    200,
                    {"request": {"parent": shelf, "filter": {"author": one("query") or ""}}},
                )
        if len(parts) == 5 and parts[:2] == ["v1", "shelves"] and parts[3] == "books":
            name = "/".join(parts[1:])
            if parts[4].endswith(":publish") and method == "POST":
                name = name[: -len(":publish")]
                out = {"name": name, "title": (body or {}).get("note", "")}
                if (body or {}).get("at"):
                    out["published"] = body["at"]
                return self.send_json(200, out)
            if parts[4] == "missing" and method == "GET":
                return self.send_json(404, {"error": {"message": f"no book {name}"}})
            if parts[4] == "missing" and method == "DELETE":
                return self.send_text(404, "gone")
            if method == "GET":
                return self.send_json(200, book(name))
            if method == "PATCH":
                updated = dict(body or {})
                updated["name"] = name
                mask = one("updateMask")
                if mask:
                    updated["tags"] = mask.split(",")
                return self.send_json(200, updated)
            if method == "DELETE":
                return self.send_json(200, {})
        return self.send_json(404, {"message": f"no route {method} {path}"})

    def watch(self, shelf, query):
        count = int(query.get("count", ["3"])[0])
        interval = int(query.get("intervalMs", ["0"])[0]) / 1000
        fail_after = int(query.get("failAfter", ["0"])[0])
        self.send_response(200)
        self.send_header("content-type", "application/x-ndjson")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()

        def chunk(value):
            data = (json.dumps(value) + "\n").encode()
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        for seq in range(1, count + 1):
            if fail_after and seq > fail_after:
                chunk({"error": {"code": 14, "message": "shelf on fire"}})
                break
            chunk({"seq": seq, "shelf": shelf, "kind": "added"})
            time.sleep(interval)
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = do_SEARCH = handle_any


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(json.dumps({"listening": f"127.0.0.1:{server.server_address[1]}"}), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
