"""A misbehaving HTTP/1.1 upstream for the fault drills (tests/e2e/faults.rs).

Prints {"listening": "127.0.0.1:PORT"} on its first line, then serves, one
thread per connection:
  GET  /reset       200 with content-length 100000, 1000 bytes of body, 300 ms,
                    then a TCP reset (SO_LINGER 0): the response is cut mid-body.
  GET  /hang        reads the request and never answers (the socket stays open).
  POST /upload      reads the body (content-length); records whether it was
                    complete, then answers 200 "got N".
  GET  /uploads     JSON list of recorded uploads: {"expected", "received",
                    "complete"}.
  anything else     200 "ok".
"""

import json
import socket
import struct
import sys
import threading
import time

UPLOADS = []
LOCK = threading.Lock()
HELD = []


def read_head(conn):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            return None, b""
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return (method, path, headers), rest


def answer(conn, body, status="200 OK"):
    body = body.encode()
    conn.sendall(
        f"HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {len(body)}\r\n\r\n".encode()
        + body
    )


def upload(conn, headers, rest):
    expected = int(headers.get("content-length", "0"))
    received = len(rest)
    conn.settimeout(30)
    try:
        while received < expected:
            chunk = conn.recv(65536)
            if not chunk:
                break
            received += len(chunk)
    except OSError:
        pass
    complete = received >= expected
    with LOCK:
        UPLOADS.append({"expected": expected, "received": received, "complete": complete})
    if complete:
        answer(conn, f"got {received}")
        return True
    return False


def handle(conn):
    try:
        while True:
            request, rest = read_head(conn)
            if request is None:
                return
            method, path, headers = request
            if path.startswith("/reset"):
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 100000\r\n\r\n"
                    + b"x" * 1000
                )
                # Let the head and first bytes reach the client before the reset
                # (a reset discards what the proxy has not read yet).
                time.sleep(0.3)
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()
                return
            if path.startswith("/hang"):
                with LOCK:
                    HELD.append(conn)
                return
            if path.startswith("/uploads"):
                with LOCK:
                    answer(conn, json.dumps(UPLOADS))
                continue
            if method == "POST" and path.startswith("/upload"):
                if not upload(conn, headers, rest):
                    conn.close()
                    return
                continue
            answer(conn, "ok")
    except OSError:
        pass
    finally:
        with LOCK:
            held = conn in HELD
        if not held:
            try:
                conn.close()
            except OSError:
                pass


def main():
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen(128)
    print(json.dumps({"listening": f"127.0.0.1:{server.getsockname()[1]}"}), flush=True)
    while True:
        conn, _ = server.accept()
        threading.Thread(target=handle, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
