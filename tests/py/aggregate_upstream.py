#!/usr/bin/env python3
"""A small JSON upstream for the edge's aggregation tests; it records every
call it gets. Prints {"listening": "127.0.0.1:PORT"} first.

  Path segments are percent-decoded.
  GET /users/ID          {"id": ID, "name": ..., "account": {"id": "acc-ID"}}
  GET /accounts/ID       {"account": ID, "balance": 42}
  GET /orders?user=U     [{"id": 1, "user": U}, {"id": 2, "user": U}]
  GET /text              plain text "hello"
  GET /slow/...          answers after 2 s
  GET /status/CODE       an empty answer with that status
  GET /big               a JSON string of 4 KiB
  GET /_calls            every call so far: [{"path", "headers"}], /_calls excluded
"""

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

CALLS = []
LOCK = threading.Lock()
RECORDED = ["x-request-id", "traceparent", "authorization", "x-user", "x-tenant", "host"]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send(self, status, body, content_type="application/json"):
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def do_GET(self):
        url = urlsplit(self.path)
        if url.path == "/_calls":
            with LOCK:
                return self.send(200, json.dumps(CALLS))
        headers = {name: self.headers.get(name) for name in RECORDED if name in self.headers}
        with LOCK:
            CALLS.append({"path": self.path, "method": self.command, "headers": headers})
        parts = [unquote(part) for part in url.path.strip("/").split("/")]
        query = parse_qs(url.query)
        if parts[0] == "users" and len(parts) == 2:
            user = parts[1]
            body = {"id": user, "name": user.title(), "account": {"id": "acc-" + user}}
            return self.send(200, json.dumps(body))
        if parts[0] == "accounts" and len(parts) == 2:
            return self.send(200, json.dumps({"account": parts[1], "balance": 42}))
        if parts[0] == "orders":
            user = query.get("user", [""])[0]
            return self.send(200, json.dumps([{"id": 1, "user": user}, {"id": 2, "user": user}]))
        if parts[0] == "text":
            return self.send(200, "hello", "text/plain")
        if parts[0] == "slow":
            time.sleep(2)
            return self.send(200, json.dumps({"slow": True}))
        if parts[0] == "status" and len(parts) == 2:
            return self.send(int(parts[1]), "")
        if parts[0] == "big":
            return self.send(200, json.dumps("x" * 4096))
        return self.send(404, json.dumps({"error": "not found"}))

    do_DELETE = do_GET
    do_POST = do_GET


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    host, port = server.server_address
    print(json.dumps({"listening": f"{host}:{port}"}), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
