#!/usr/bin/env python3
"""Full-duplex NDJSON over HTTP/1.1 to the transcoded Chat method.

    grpc_library_duplex.py HOST:PORT COUNT

Sends POST /v1/chat with a chunked body, one NDJSON line per chunk, and
waits for each line's reply ("echo: mN") before sending the next: this
only works if the proxy streams the request body and the response body
both ways. Prints ONE JSON line:
    {"replies": [...], "status": 200, "content_type": "..."}
or {"error": "..."} (a reply that did not come within 5 s).
"""

import json
import socket
import sys
import time


def main():
    host, port = sys.argv[1].rsplit(":", 1)
    count = int(sys.argv[2])
    sock = socket.create_connection((host, int(port)), timeout=5)
    sock.sendall(
        b"POST /v1/chat HTTP/1.1\r\nHost: library\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Type: application/x-ndjson\r\n\r\n"
    )
    received = b""
    replies = []
    for i in range(1, count + 1):
        line = json.dumps({"text": f"m{i}", "seq": i}).encode() + b"\n"
        sock.sendall(b"%x\r\n%s\r\n" % (len(line), line))
        want = f"echo: m{i}".encode()
        deadline = time.monotonic() + 5
        while want not in received:
            if time.monotonic() > deadline:
                print(json.dumps({"error": f"no reply to line {i} before the body ended", "got": received.decode(errors="replace")}))
                return
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                continue
            if not chunk:
                print(json.dumps({"error": "connection closed", "got": received.decode(errors="replace")}))
                return
            received += chunk
        replies.append(f"echo: m{i}")
    sock.sendall(b"0\r\n\r\n")
    while not received.endswith(b"0\r\n\r\n"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        received += chunk
    head = received.split(b"\r\n\r\n", 1)[0].decode()
    status = int(head.split(" ", 2)[1])
    content_type = ""
    for header in head.split("\r\n")[1:]:
        name, _, value = header.partition(":")
        if name.strip().lower() == "content-type":
            content_type = value.strip()
    print(json.dumps({"replies": replies, "status": status, "content_type": content_type}))


if __name__ == "__main__":
    main()
