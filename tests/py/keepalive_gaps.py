#!/usr/bin/env python3
"""Requests on one HTTPS keep-alive connection with quiet gaps between them.

    keepalive_gaps.py HOST PORT CA SERVER_NAME GAP_SECONDS PATH...

Connects once to HOST:PORT (TLS, verifying SERVER_NAME against CA), sends a
GET for each PATH on that connection, sleeping GAP_SECONDS after each, and
prints one JSON line: {"answers": [{"status": 200, "port": <local port>}, ...]}.
"""

import http.client
import json
import socket
import ssl
import sys
import time


def main():
    host, port, ca, name, gap = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], float(sys.argv[5])
    ctx = ssl.create_default_context(cafile=ca)

    class Conn(http.client.HTTPSConnection):
        def connect(self):
            self.sock = ctx.wrap_socket(socket.create_connection((host, port), 5), server_hostname=name)

    conn = Conn(name, port, context=ctx, timeout=5)
    answers = []
    for path in sys.argv[6:]:
        conn.request("GET", path)
        reply = conn.getresponse()
        reply.read()
        answers.append({"status": reply.status, "port": conn.sock.getsockname()[1]})
        time.sleep(gap)
    print(json.dumps({"answers": answers}))


if __name__ == "__main__":
    main()
