"""Authorization services for the edge's end-to-end tests, on one port.

POST /introspect  an OAuth2 token introspection endpoint (RFC 7662): HTTP
                  Basic `corp-edge:s3cret` required (401 otherwise); knows
                  the tokens in TOKENS, any other is inactive.
POST /authorize   an external authorizer: reads the JSON the edge sends and
                  allows `x-user: alice` (headers to add, consumer), answers
                  401 without `x-user`, 403 for anyone else or a path
                  containing `/deny`.
GET  /calls       how many calls each endpoint had, per token too, and the
                  last authorization request received.

Prints `{"listening": "127.0.0.1:PORT"}` first.
"""

import base64
import json
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CREDENTIALS = "corp-edge:s3cret"
NOW = int(time.time())
TOKENS = {
    "good-token": {"active": True, "sub": "alice", "scope": "read write",
                   "client_id": "web", "exp": NOW + 3600},
    "other-token": {"active": True, "sub": "bob", "scope": "read",
                    "exp": NOW + 3600},
    "inactive-token": {"active": False},
    "expired-token": {"active": True, "sub": "carol", "exp": NOW - 60},
    # Expires 3 s after the server starts: cached no longer than that.
    "soon-token": {"active": True, "sub": "dave", "exp": NOW + 3},
}

lock = threading.Lock()
calls = {"introspect": 0, "authorize": 0, "tokens": {}, "last": None}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def read_body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length)

    def do_GET(self):
        if self.path == "/calls":
            with lock:
                self.reply(200, calls)
        else:
            self.reply(404, {"error": "not found"})

    def do_POST(self):
        body = self.read_body()
        if self.path == "/introspect":
            self.introspect(body)
        elif self.path == "/authorize":
            self.authorize(body)
        else:
            self.reply(404, {"error": "not found"})

    def introspect(self, body):
        form = urllib.parse.parse_qs(body.decode(), keep_blank_values=True)
        token = (form.get("token") or [""])[0]
        with lock:
            calls["introspect"] += 1
            calls["tokens"][token] = calls["tokens"].get(token, 0) + 1
        expected = "Basic " + base64.b64encode(CREDENTIALS.encode()).decode()
        if self.headers.get("Authorization") != expected:
            self.reply(401, {"error": "invalid_client"})
            return
        if (form.get("token_type_hint") or [""])[0] != "access_token":
            self.reply(400, {"error": "invalid_request"})
            return
        self.reply(200, TOKENS.get(token, {"active": False}))

    def authorize(self, body):
        request = json.loads(body)
        with lock:
            calls["authorize"] += 1
            calls["last"] = request
        user = request["headers"].get("x-user")
        if "/deny" in request["path"]:
            self.reply(403, {"allow": False})
        elif user is None:
            self.reply(401, {"allow": False})
        elif user == "alice":
            self.reply(200, {
                "allow": True,
                "headers": {"x-auth-user": "alice", "x-auth-groups": "admins ops"},
                "consumer": "alice",
            })
        elif user == "eve":
            # Allowed by status, denied by the body.
            self.reply(200, {"allow": False})
        else:
            self.reply(403, {"allow": False})

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(json.dumps({"listening": "127.0.0.1:%d" % server.server_address[1]}), flush=True)
sys.stdout.flush()
server.serve_forever()
