"""An upstream for the edge compression tests, on one port (HTTP/1.1).

GET  /large.json     ~120 KB of JSON, with Content-Length and a strong ETag
GET  /small          a 20-byte text/plain body
GET  /encoded        text/plain already gzip-encoded (Content-Encoding: gzip)
GET  /image.png      64 KB of image/png
GET  /no-transform   a large text/plain body with Cache-Control: no-transform
GET  /stream?n=N     N text chunks 200 ms apart, chunked (no length)
GET  /broken         one text chunk, then the connection is cut (no last chunk)
POST /echo           reads the body (Content-Length or chunked) and answers
                     JSON: its length, sha256, the Content-Encoding and
                     Content-Length headers it arrived with

Prints `{"listening": "127.0.0.1:PORT"}` first.
"""

import gzip
import hashlib
import json
import random
import socket
import sys
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def large_json():
    items = [{"id": i, "name": f"item-{i}", "tags": ["alpha", "beta", "gamma"],
              "description": "a compressible description of item %d" % i}
             for i in range(1200)]
    return json.dumps({"items": items}).encode()


LARGE = large_json()
SMALL = b"small body, 20 bytes"
ENCODED_TEXT = b"already encoded text " * 200
ENCODED = gzip.compress(ENCODED_TEXT)
PNG = b"\x89PNG\r\n\x1a\n" + random.Random(7).randbytes(64 * 1024)
STREAM_DELAY = 0.2


def stream_chunk(i):
    return (f"chunk {i}: " + "streamed text " * 20 + "\n").encode()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send_body(self, body, content_type, extra=()):
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in extra:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        path = url.path.rsplit("/", 1)[-1]
        if path == "large.json":
            self.send_body(LARGE, "application/json", [("ETag", '"large-v1"')])
        elif path == "small":
            self.send_body(SMALL, "text/plain")
        elif path == "encoded":
            self.send_body(ENCODED, "text/plain", [("Content-Encoding", "gzip")])
        elif path == "image.png":
            self.send_body(PNG, "image/png")
        elif path == "no-transform":
            self.send_body(LARGE, "text/plain", [("Cache-Control", "no-transform")])
        elif path == "broken":
            self.broken()
        elif path == "stream":
            count = int(urllib.parse.parse_qs(url.query).get("n", ["5"])[0])
            self.stream(count)
        else:
            self.send_error(404)

    def stream(self, count):
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for i in range(count):
            if i:
                time.sleep(STREAM_DELAY)
            data = stream_chunk(i)
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def broken(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        data = stream_chunk(0)
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()
        time.sleep(0.2)
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)

    def read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(body)
                body += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length", "0")))

    def do_POST(self):
        body = self.read_body()
        answer = json.dumps({
            "length": len(body),
            "sha256": hashlib.sha256(body).hexdigest(),
            "content_encoding": self.headers.get("Content-Encoding"),
            "content_length": self.headers.get("Content-Length"),
        }).encode()
        self.send_body(answer, "application/json")


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    host, port = server.server_address
    print(json.dumps({"listening": f"{host}:{port}"}), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
