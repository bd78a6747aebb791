#!/usr/bin/env python3
"""An HTTP/1.1 upstream written on raw sockets, answering each path with
exactly the bytes a test needs to see the proxy frame (chunked with
trailers, close-delimited, 1xx before the final head, 204/304 with a length,
HEAD) or refuse (conflicting lengths, not HTTP, a body cut short).

    h1_upstream.py [--drop]

Prints {"listening": "127.0.0.1:PORT"} and serves until killed. Requests
are read head first, then a Content-Length body if any. Paths:

  /length /chunked /chunked-slow /large /until-close /conn-close
  /early-hints /no-content /not-modified /bad-length /not-http /cut
  /idle-close      answers, then closes the connection 0.2 s later
  /flaky           "steady"; with --drop, closes the connection unanswered
  /hold            answers after 5 s, unless the proxy closes the connection
                   first (counted as "abandoned")
  /conns           {"accepted": N, "requests": N, "bodies": [...], "abandoned": N}
"""

import json
import socket
import sys
import threading
import time

DROP = "--drop" in sys.argv[1:]

LOCK = threading.Lock()
STATS = {"accepted": 0, "requests": 0, "bodies": [], "abandoned": 0}
LARGE = bytes((i * 7) % 251 for i in range(1 << 20))


def chunked(parts, trailers=b""):
    out = b""
    for i, part in enumerate(parts):
        ext = b";note=x" if i == 0 else b""
        out += b"%x%s\r\n%s\r\n" % (len(part), ext, part)
    return out + b"0\r\n" + trailers + b"\r\n"


FIXED = {
    "/length": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Kind: length\r\n\r\nhello",
    "/chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-checksum\r\n\r\n"
    + chunked([b"one ", b"two ", b"three"], b"x-checksum: abc\r\n"),
    "/early-hints": b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    "/no-content": b"HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n",
    "/not-modified": b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\nETag: \"v1\"\r\n\r\n",
    "/conn-close": b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbye!",
    "/bad-length": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    "/not-http": b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
}
CLOSE_AFTER = {"/conn-close", "/bad-length", "/not-http"}


def read_head(conn, buf):
    while b"\r\n\r\n" not in buf:
        data = conn.recv(65536)
        if not data:
            return None, buf
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    return head.decode("latin-1"), rest


def serve(conn):
    buf = b""
    with conn:
        while True:
            head, buf = read_head(conn, buf)
            if head is None:
                return
            lines = head.split("\r\n")
            start = lines[0].split(" ", 2)
            if len(start) != 3:
                return
            method, path, _ = start
            fields = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                fields[name.strip().lower()] = value.strip()
            length = int(fields.get("content-length", "0"))
            while len(buf) < length:
                data = conn.recv(65536)
                if not data:
                    return
                buf += data
            body, buf = buf[:length], buf[length:]
            with LOCK:
                STATS["requests"] += 1
                if length:
                    STATS["bodies"].append(body.decode("latin-1"))
            if path == "/conns":
                with LOCK:
                    text = json.dumps(STATS).encode()
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(text), text))
            elif method == "HEAD":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
            elif path in FIXED:
                conn.sendall(FIXED[path])
                if path in CLOSE_AFTER:
                    return
            elif path == "/chunked-slow":
                conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                for part in (b"slow ", b"and ", b"steady"):
                    time.sleep(0.05)
                    conn.sendall(b"%x\r\n" % len(part))
                    time.sleep(0.02)
                    conn.sendall(part + b"\r\n")
                time.sleep(0.05)
                conn.sendall(b"0\r\n\r\n")
            elif path == "/large":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(LARGE))
                for at in range(0, len(LARGE), 100_000):
                    conn.sendall(LARGE[at : at + 100_000])
            elif path == "/until-close":
                conn.sendall(b"HTTP/1.1 200 OK\r\n\r\nread me to the end")
                return
            elif path == "/cut":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b")
                return
            elif path == "/flaky":
                if DROP:
                    return
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsteady")
            elif path == "/hold":
                conn.settimeout(5)
                try:
                    closed = conn.recv(1) == b""
                except (socket.timeout, OSError):
                    closed = False
                if closed:
                    with LOCK:
                        STATS["abandoned"] += 1
                    return
                conn.settimeout(None)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nheld")
            elif path == "/idle-close":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                time.sleep(0.2)
                return
            else:
                conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")


def main():
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    print(json.dumps({"listening": "127.0.0.1:%d" % listener.getsockname()[1]}), flush=True)
    while True:
        conn, _ = listener.accept()
        with LOCK:
            STATS["accepted"] += 1
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main()
