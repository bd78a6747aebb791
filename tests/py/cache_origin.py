"""An upstream for the edge cache tests: answers every path with what its
query asks for, and counts what reached it.

Query parameters of a request:
  cc=<value>      Cache-Control of the answer
  etag=<v>        ETag "v"; a request whose If-None-Match names it gets 304
  vary=<header>   Vary: <header>; the body echoes that request header
  cookie=1        a Set-Cookie header
  delay=<ms>      answer that much later
  size=<n>        a body of n bytes instead of the JSON one

POST to any path answers 200 (counted as "POST <path>").

The answer's JSON body says the path and how many requests for it arrived
(`n`), so a test tells a stored answer from a new one.

Control paths (never counted):
  GET /_counts    {"hits": {path: n}, "not_modified": {path: n},
                   "if_none_match": {path: last If-None-Match}}
  GET /_fail/on   every other path answers 503 from now on
  GET /_fail/off  back to normal

Prints {"listening": "127.0.0.1:PORT"} first.
"""

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

LOCK = threading.Lock()
HITS = {}
NOT_MODIFIED = {}
IF_NONE_MATCH = {}
FAILING = [False]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, headers, body):
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self):
        self.do_GET()

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        with LOCK:
            HITS["POST " + urlsplit(self.path).path] = HITS.get("POST " + urlsplit(self.path).path, 0) + 1
        self.reply(200, [("Content-Type", "application/json")], b'{"posted": true}')

    def do_GET(self):
        url = urlsplit(self.path)
        path = url.path
        if path.startswith("/_"):
            return self.control(path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        with LOCK:
            HITS[path] = HITS.get(path, 0) + 1
            n = HITS[path]
            if self.headers.get("If-None-Match"):
                IF_NONE_MATCH[path] = self.headers.get("If-None-Match")
        if "delay" in query:
            time.sleep(int(query["delay"]) / 1000)
        if FAILING[0]:
            return self.reply(503, [("Content-Type", "text/plain")], b"down\n")
        headers = [("Content-Type", "application/json")]
        if "cc" in query:
            headers.append(("Cache-Control", query["cc"]))
        if "cookie" in query:
            headers.append(("Set-Cookie", "session=abc; Path=/"))
        echoed = None
        if "vary" in query:
            headers.append(("Vary", query["vary"]))
            echoed = self.headers.get(query["vary"])
        if "etag" in query:
            etag = '"%s"' % query["etag"]
            headers.append(("ETag", etag))
            if self.headers.get("If-None-Match") == etag:
                with LOCK:
                    NOT_MODIFIED[path] = NOT_MODIFIED.get(path, 0) + 1
                return self.reply(304, headers, b"")
        if "size" in query:
            body = b"x" * int(query["size"])
        else:
            body = json.dumps({"path": path, "n": n, "echo": echoed}).encode()
        self.reply(200, headers, body)

    def control(self, path):
        if path == "/_fail/on":
            FAILING[0] = True
        elif path == "/_fail/off":
            FAILING[0] = False
        with LOCK:
            body = json.dumps(
                {"hits": HITS, "not_modified": NOT_MODIFIED, "if_none_match": IF_NONE_MATCH}
            ).encode()
        self.reply(200, [("Content-Type", "application/json")], body)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256


def main():
    server = Server(("127.0.0.1", 0), Handler)
    host, port = server.server_address
    print(json.dumps({"listening": f"{host}:{port}"}), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
