#!/usr/bin/env python3
"""Raw gRPC-Web client for demo-grpc (orders.v1), over HTTP/1.1 like a browser.

Builds the 5-byte frames and the protobuf messages by hand (no generated
code), reads the answer as it arrives and prints ONE JSON line:

    grpc_web_client.py BASE_URL FORMAT get ID
    grpc_web_client.py BASE_URL FORMAT list COUNT INTERVAL_MS
    grpc_web_client.py BASE_URL text badtext

BASE_URL may carry a path prefix. FORMAT is `proto`
(application/grpc-web+proto), `web` (application/grpc-web) or `text`
(application/grpc-web-text; the request frame is sent as two base64
chunks, each padded, in uneven pieces of a chunked body).
`badtext` sends a text body that is not base64.

Output: {"status", "headers": {lower-case name: value}, "frames": [
{"type": "message", "order": {...}, "at_ms"} | {"type": "trailers",
"trailers": {...}, "at_ms"}], "total_ms", "leftover": bytes after the
trailer frame}. Any failure prints {"error": "..."} and exits 1.
"""

import base64
import http.client
import json
import struct
import sys
import time
import urllib.parse

CONTENT_TYPES = {
    "proto": "application/grpc-web+proto",
    "web": "application/grpc-web",
    "text": "application/grpc-web-text",
}
USAGE = "usage: grpc_web_client.py BASE_URL (proto|web|text) (get ID | list COUNT INTERVAL_MS | badtext)"


def varint(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field_string(number, text):
    data = text.encode()
    return varint(number << 3 | 2) + varint(len(data)) + data


def field_varint(number, value):
    return varint(number << 3) + varint(value)


def read_varint(data, at):
    shift = value = 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, at


def decode_order(data):
    """orders.v1.Order: id=1, item=2 (strings), quantity=3, price_cents=4 (varints)."""
    names = {1: "id", 2: "item", 3: "quantity", 4: "price_cents"}
    order = {}
    at = 0
    while at < len(data):
        key, at = read_varint(data, at)
        number, wire = key >> 3, key & 7
        if wire == 2:
            size, at = read_varint(data, at)
            value = data[at : at + size].decode()
            at += size
        elif wire == 0:
            value, at = read_varint(data, at)
        else:
            raise ValueError(f"unexpected wire type {wire}")
        order[names.get(number, str(number))] = value
    return order


def frame(message, flag=0):
    return struct.pack(">BI", flag, len(message)) + message


def request_body(fmt, call, args):
    if call == "get":
        path, message = "GetOrder", field_string(1, args[0])
    elif call == "list":
        path = "ListOrders"
        message = field_varint(1, int(args[0])) + field_varint(2, int(args[1]))
    elif call == "badtext":
        return "GetOrder", [b"AAAA!!!!"]
    else:
        raise ValueError(USAGE)
    body = frame(message)
    if fmt != "text":
        return path, [body]
    # Two padded base64 chunks back to back, cut into uneven network pieces.
    text = base64.b64encode(body[:4]) + base64.b64encode(body[4:])
    return path, [text[i : i + 3] for i in range(0, len(text), 3)]


class TextDecoder:
    """Incremental base64: complete groups of four, padded or not."""

    def __init__(self):
        self.pending = b""

    def push(self, data):
        data = self.pending + bytes(c for c in data if c not in b" \r\n\t")
        whole = len(data) - len(data) % 4
        self.pending = data[whole:]
        return b"".join(base64.b64decode(data[i : i + 4]) for i in range(0, whole, 4))


def parse_frames(buffer, frames, started):
    """Takes the complete frames off the front of buffer; returns the rest."""
    while len(buffer) >= 5:
        flag, size = struct.unpack(">BI", buffer[:5])
        if len(buffer) < 5 + size:
            break
        payload, buffer = buffer[5 : 5 + size], buffer[5 + size :]
        at_ms = (time.monotonic() - started) * 1000
        if flag & 0x80:
            trailers = {}
            for line in payload.decode().split("\r\n"):
                if line:
                    name, _, value = line.partition(":")
                    trailers[name.strip()] = value.strip()
            frames.append({"type": "trailers", "trailers": trailers, "at_ms": at_ms})
        else:
            frames.append({"type": "message", "order": decode_order(payload), "at_ms": at_ms})
    return buffer


def main():
    if len(sys.argv) < 4 or sys.argv[2] not in CONTENT_TYPES:
        raise ValueError(USAGE)
    url = urllib.parse.urlsplit(sys.argv[1])
    fmt, call, args = sys.argv[2], sys.argv[3], sys.argv[4:]
    method, pieces = request_body(fmt, call, args)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=20)
    headers = {
        "content-type": CONTENT_TYPES[fmt],
        "x-grpc-web": "1",
        "accept": CONTENT_TYPES[fmt],
        "accept-encoding": "gzip",
    }
    started = time.monotonic()
    conn.request(
        "POST",
        f"{url.path.rstrip('/')}/orders.v1.Orders/{method}",
        body=iter(pieces),
        headers=headers,
        encode_chunked=True,
    )
    response = conn.getresponse()
    decoder = TextDecoder() if fmt == "text" else None
    frames, buffer = [], b""
    while True:
        chunk = response.read1(65536)
        if not chunk:
            break
        buffer += decoder.push(chunk) if decoder else chunk
        buffer = parse_frames(buffer, frames, started)
    print(
        json.dumps(
            {
                "status": response.status,
                "headers": {k.lower(): v for k, v in response.getheaders()},
                "frames": frames,
                "total_ms": (time.monotonic() - started) * 1000,
                "leftover": len(buffer) + (len(decoder.pending) if decoder else 0),
            }
        )
    )


if __name__ == "__main__":
    try:
        main()
    except Exception as err:  # noqa: BLE001 - one JSON line whatever failed
        print(json.dumps({"error": f"{type(err).__name__}: {err}"}))
        sys.exit(1)
