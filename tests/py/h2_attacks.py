"""HTTP/2 attack clients for the abuse tests, and the upstream they target.

    h2_attacks.py upstream                 serve HTTP/1.1: /big is 8 MiB, anything else 31 bytes
    h2_attacks.py ATTACK HOST PORT         run one attack over h2c (prior knowledge)

Attacks: rapid_reset, continuation_flood, ping_flood, settings_flood,
empty_data_flood, window_update_flood, zero_window_stall, hpack_table,
too_many_streams. Each prints one JSON line: how the proxy answered
(`outcome`: goaway / rst / closed / none, the error `code`, GOAWAY's
`last_stream`, every RST_STREAM code in `reset_codes`), `responses` (response HEADERS seen), `seconds` taken.
Frames are written raw (struct) so the attacks can break the rules; header
blocks are encoded with `hpack`, the `h2` package's encoder; `hpack_table`
drives a real `h2` client connection.
"""

import json
import socket
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import h2.config
import h2.connection
import h2.events
import h2.settings
import hpack

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0, 1, 3, 4, 6, 7, 8, 9
END_STREAM, END_HEADERS, ACK = 0x1, 0x4, 0x1
CANCEL = 0x8
BIG = 8 * 1024 * 1024
SMALL = b"ok from the h2 attack upstream\n"


def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def request_block(encoder, method="GET", path="/", extra=()):
    return encoder.encode(
        [(":method", method), (":scheme", "http"), (":path", path), (":authority", "web"), *extra]
    )


class Conn:
    """A raw h2c connection: writes frames, reads what the proxy answers."""

    def __init__(self, host, port, settings=b""):
        self.sock = socket.create_connection((host, port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.sendall(PREFACE + frame(SETTINGS, 0, 0, settings))
        self.encoder = hpack.Encoder()
        self.outcome = {"outcome": "none", "code": None, "last_stream": None, "responses": 0,
                        "reset_codes": []}
        self.done = threading.Event()
        self.answer_pings = True
        self.reader = threading.Thread(target=self.read_loop, daemon=True)
        self.reader.start()

    def send(self, data):
        """Writes `data`; False once the proxy has closed the connection."""
        try:
            self.sock.sendall(data)
            return not self.done.is_set()
        except OSError:
            return False

    def read_exact(self, n):
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise EOFError
            data += chunk
        return data

    def read_loop(self):
        try:
            while True:
                head = self.read_exact(9)
                length = int.from_bytes(head[:3], "big")
                kind, flags = head[3], head[4]
                stream = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
                payload = self.read_exact(length)
                if kind == SETTINGS and not flags & ACK:
                    self.send(frame(SETTINGS, ACK, 0))
                elif kind == PING and not flags & ACK and self.answer_pings:
                    self.send(frame(PING, ACK, 0, payload))
                elif kind == HEADERS and stream:
                    self.outcome["responses"] += 1
                elif kind == RST_STREAM:
                    code = int.from_bytes(payload[:4], "big")
                    self.outcome["reset_codes"] = sorted({*self.outcome["reset_codes"], code})
                    if self.outcome["outcome"] == "none":
                        self.outcome.update(outcome="rst", code=code)
                elif kind == GOAWAY:
                    self.outcome.update(
                        outcome="goaway",
                        last_stream=int.from_bytes(payload[:4], "big") & 0x7FFFFFFF,
                        code=int.from_bytes(payload[4:8], "big"),
                    )
        except (EOFError, OSError):
            if self.outcome["outcome"] == "none":
                self.outcome["outcome"] = "closed"
        finally:
            self.done.set()

    def finish(self, wait=10.0):
        self.done.wait(wait)
        self.sock.close()
        return self.outcome


def flood(conn, one, count=20000, batch=200):
    """Writes `one` `count` times in batches, stopping once the proxy closes."""
    for _ in range(count // batch):
        if not conn.send(one * batch):
            break


def rapid_reset(conn):
    for i in range(5000):
        stream = 1 + 2 * i
        block = request_block(conn.encoder)
        data = frame(HEADERS, END_STREAM | END_HEADERS, stream, block)
        data += frame(RST_STREAM, 0, stream, struct.pack(">I", CANCEL))
        if not conn.send(data):
            break


def continuation_flood(conn):
    block = request_block(conn.encoder)
    conn.send(frame(HEADERS, END_STREAM, 1, block))
    # Small literal header fields in a block that never ends: many frames,
    # few bytes (what a byte limit alone misses).
    junk = conn.encoder.encode([("x", "a" * 10)], huffman=False)
    for _ in range(20000):
        if not conn.send(frame(CONTINUATION, 0, 1, junk)):
            break


def ping_flood(conn):
    flood(conn, frame(PING, 0, 0, b"12345678"))


def settings_flood(conn):
    flood(conn, frame(SETTINGS, 0, 0))


def empty_data_flood(conn):
    conn.send(frame(HEADERS, END_HEADERS, 1, request_block(conn.encoder, "POST")))
    flood(conn, frame(DATA, 0, 1))


def window_update_flood(conn):
    flood(conn, frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 1)))


def zero_window_stall(conn):
    # SETTINGS_INITIAL_WINDOW_SIZE 0 was sent with the preface; ask for a big
    # body and never open the window nor answer a PING.
    conn.send(frame(HEADERS, END_STREAM | END_HEADERS, 1, request_block(conn.encoder, path="/big")))
    conn.answer_pings = False


def too_many_streams(conn):
    # Requests whose bodies never come: each stream stays open.
    for i in range(300):
        block = request_block(conn.encoder, "POST")
        if not conn.send(frame(HEADERS, END_HEADERS, 1 + 2 * i, block)):
            break


def hpack_table(host, port):
    """A real h2 client offering a 4 GiB HPACK table and filling its own
    dynamic table with big headers; every request must still be answered."""
    start = time.monotonic()
    sock = socket.create_connection((host, port), timeout=10)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    conn.update_settings({h2.settings.SettingCodes.HEADER_TABLE_SIZE: 2**32 - 1})
    sock.sendall(conn.data_to_send())
    wanted, statuses, outcome = 50, [], {"outcome": "none", "code": None, "last_stream": None}
    for i in range(wanted):
        stream = conn.get_next_available_stream_id()
        headers = [(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "web"),
                   (f"x-big-{i}", str(i) * 3000)]
        conn.send_headers(stream, headers, end_stream=True)
    sock.sendall(conn.data_to_send())
    while len(statuses) < wanted and outcome["outcome"] == "none":
        data = sock.recv(65536)
        if not data:
            outcome["outcome"] = "closed"
            break
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived):
                statuses.append(dict(event.headers)[b":status"].decode())
            elif isinstance(event, h2.events.StreamReset):
                outcome.update(outcome="rst", code=int(event.error_code))
            elif isinstance(event, h2.events.ConnectionTerminated):
                outcome.update(outcome="goaway", code=int(event.error_code),
                               last_stream=event.last_stream_id)
        sock.sendall(conn.data_to_send())
    sock.close()
    outcome.update(responses=len(statuses), statuses=sorted(set(statuses)),
                   seconds=round(time.monotonic() - start, 2))
    return outcome


ATTACKS = {
    "rapid_reset": rapid_reset,
    "continuation_flood": continuation_flood,
    "ping_flood": ping_flood,
    "settings_flood": settings_flood,
    "empty_data_flood": empty_data_flood,
    "window_update_flood": window_update_flood,
    "zero_window_stall": zero_window_stall,
    "too_many_streams": too_many_streams,
}


class Upstream(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def read_body(self):
        """Reads the request body (Content-Length or chunked) so the
        connection stays usable for the next request."""
        if self.headers.get("content-length"):
            self.rfile.read(int(self.headers["content-length"]))
        elif "chunked" in self.headers.get("transfer-encoding", ""):
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                self.rfile.read(size + 2) if size else None
                if size == 0:
                    # Trailer fields up to the blank line.
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return

    def do_GET(self):
        self.read_body()
        size = BIG if self.path == "/big" else len(SMALL)
        self.send_response(200)
        self.send_header("content-length", str(size))
        self.end_headers()
        chunk = b"x" * 65536 if size == BIG else SMALL
        try:
            for _ in range(max(1, size // len(chunk))):
                self.wfile.write(chunk)
        except OSError:
            pass

    do_POST = do_GET

    def log_message(self, *args):
        pass


def main():
    if sys.argv[1] == "upstream":
        server = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
        server.daemon_threads = True
        print(json.dumps({"listening": "127.0.0.1:%d" % server.server_port}), flush=True)
        server.serve_forever()
        return
    attack, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if attack == "hpack_table":
        print(json.dumps(hpack_table(host, port)))
        return
    start = time.monotonic()
    settings = struct.pack(">HI", 0x4, 0) if attack == "zero_window_stall" else b""
    conn = Conn(host, port, settings)
    ATTACKS[attack](conn)
    wait = 30.0 if attack == "zero_window_stall" else 10.0
    if attack == "too_many_streams":
        wait = 3.0
    outcome = conn.finish(wait)
    outcome["seconds"] = round(time.monotonic() - start, 2)
    print(json.dumps(outcome))


if __name__ == "__main__":
    main()
