#!/usr/bin/env python3
"""Serves tests/web (the gRPC-Web test page and its bundle) on 127.0.0.1:0,
another origin than the edge the page calls. Prints ONE JSON line,
{"listening": "127.0.0.1:PORT"}, then serves until killed.
"""

import functools
import http.server
import json
import os
import sys

WEB_DIR = os.path.normpath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "web")
)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        sys.stderr.write("page: " + format % args + "\n")


def main():
    handler = functools.partial(QuietHandler, directory=WEB_DIR)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    host, port = server.server_address[:2]
    print(json.dumps({"listening": f"{host}:{port}"}), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
