#!/usr/bin/env python3
"""A REST backend for the WebSocket bridge tests; it records every call.
Prints {"listening": "127.0.0.1:PORT"} first.

  POST /ws/connect      200, or 403 "denied" when the query has deny=1
  POST /ws/messages     200 {"echo": <the JSON body>}
  POST /ws/default      204
  POST /ws/fail         500
  POST /ws/disconnect   200
  GET  /_calls          every call so far: [{"path", "method", "headers", "body"}]
"""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

CALLS = []
LOCK = threading.Lock()
RECORDED = [
    "x-mesh-connection-id",
    "x-mesh-route-key",
    "x-mesh-close-code",
    "x-mesh-close-reason",
    "x-mesh-message-type",
    "content-type",
    "x-user",
    "x-client",
]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, status, body=b"", content_type="application/json"):
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/_calls":
            with LOCK:
                body = json.dumps(CALLS).encode()
            return self.answer(200, body)
        self.answer(404)

    def do_POST(self):
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length)
        url = urlsplit(self.path)
        call = {
            "path": self.path,
            "method": self.command,
            "headers": {h: self.headers[h] for h in RECORDED if h in self.headers},
            "body": body.decode("utf-8", "replace"),
        }
        with LOCK:
            CALLS.append(call)
        if url.path == "/ws/connect":
            if "deny" in parse_qs(url.query):
                return self.answer(403, b"denied", "text/plain")
            return self.answer(200)
        if url.path == "/ws/messages":
            try:
                echo = json.loads(body)
            except ValueError:
                echo = None
            return self.answer(200, json.dumps({"echo": echo}).encode())
        if url.path == "/ws/default":
            return self.answer(204)
        if url.path == "/ws/fail":
            return self.answer(500, b"broken", "text/plain")
        if url.path == "/ws/disconnect":
            return self.answer(200)
        self.answer(404)


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(json.dumps({"listening": "127.0.0.1:%d" % server.server_address[1]}), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
