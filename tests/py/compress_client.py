"""A client of the edge compression tests: decodes what it receives itself
(gzip, brotli, zstd), so the check does not depend on curl's build.

get URL ACCEPT_ENCODING
    One GET. Prints the status, the headers, the raw and decoded lengths and
    which of compress_upstream's bodies the decoded bytes are (`same_as`).
stream URL ACCEPT_ENCODING N
    Reads the chunked response of /stream?n=N as it arrives, decoding as it
    goes. Prints when the first chunk's text was decoded and when the body
    ended (seconds from the request), and whether the whole text is right.
post URL CONTENT_ENCODING KIND
    POSTs a body encoded with CONTENT_ENCODING: KIND `json` (the large JSON),
    `bomb` (64 MiB of zeros), `zeros-4mib` (4 MiB of zeros), `corrupt` (a gzip stream with bytes
    flipped). Prints the status, the answer, and the sha256 of the plain body.

Prints one JSON line.
"""

import gzip
import hashlib
import http.client
import json
import os
import sys
import time
import urllib.parse
import zlib

import brotli
import zstandard

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compress_upstream as upstream  # noqa: E402

KNOWN = {
    "large": upstream.LARGE,
    "small": upstream.SMALL,
    "encoded": upstream.ENCODED,
    "png": upstream.PNG,
}


def connect(url):
    parts = urllib.parse.urlsplit(url)
    path = parts.path + ("?" + parts.query if parts.query else "")
    return http.client.HTTPConnection(parts.hostname, parts.port, timeout=20), path


def decoder(encoding):
    """A function decoding the next piece of a stream (b"" to finish)."""
    if encoding == "gzip":
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        return lambda data: d.decompress(data) if data else d.flush()
    if encoding == "br":
        d = brotli.Decompressor()
        return lambda data: d.process(data) if data else b""
    if encoding == "zstd":
        d = zstandard.ZstdDecompressor().decompressobj()
        return lambda data: d.decompress(data) if data else b""
    return lambda data: data


def headers_of(response):
    headers = {}
    for name, value in response.getheaders():
        name = name.lower()
        headers[name] = headers[name] + ", " + value if name in headers else value
    return headers


def get(url, accept):
    conn, path = connect(url)
    conn.request("GET", path, headers={"Accept-Encoding": accept})
    response = conn.getresponse()
    raw = response.read()
    headers = headers_of(response)
    decode = decoder(headers.get("content-encoding"))
    body = decode(raw) + decode(b"")
    same_as = next((name for name, known in KNOWN.items() if known == body), None)
    print(json.dumps({"status": response.status, "headers": headers,
                      "raw_length": len(raw), "length": len(body), "same_as": same_as}))


def stream(url, accept, count):
    conn, path = connect(url)
    start = time.monotonic()
    conn.request("GET", path, headers={"Accept-Encoding": accept})
    response = conn.getresponse()
    headers = headers_of(response)
    decode = decoder(headers.get("content-encoding"))
    first_line = upstream.stream_chunk(0)
    text, first_at, reads = b"", None, 0
    while True:
        data = response.read1(65536)
        if not data:
            break
        reads += 1
        text += decode(data)
        if first_at is None and text.startswith(first_line):
            first_at = time.monotonic() - start
    text += decode(b"")
    end_at = time.monotonic() - start
    expected = b"".join(upstream.stream_chunk(i) for i in range(count))
    print(json.dumps({"status": response.status, "headers": headers, "first_at": first_at,
                      "end_at": end_at, "reads": reads, "text_ok": text == expected}))


def encode(encoding, data):
    if encoding == "gzip":
        return gzip.compress(data)
    if encoding == "br":
        return brotli.compress(data)
    if encoding == "zstd":
        return zstandard.ZstdCompressor().compress(data)
    return data


def post(url, encoding, kind):
    if kind == "json":
        plain = upstream.LARGE
        body = encode(encoding, plain)
    elif kind == "bomb":
        plain = bytes(64 << 20)
        body = encode(encoding, plain)
    elif kind == "zeros-4mib":
        plain = bytes(4 << 20)
        body = encode(encoding, plain)
    else:
        plain = upstream.LARGE
        body = bytearray(encode(encoding, plain))
        for i in range(20, len(body) - 20, 97):
            body[i] ^= 0x5A
        body = bytes(body)
    conn, path = connect(url)
    headers = {"Content-Type": "application/json", "Content-Length": str(len(body))}
    if encoding != "none":
        headers["Content-Encoding"] = encoding
    try:
        conn.request("POST", path, body=body, headers=headers)
    except (BrokenPipeError, ConnectionResetError):
        pass
    response = conn.getresponse()
    answer = response.read()
    try:
        answer = json.loads(answer)
    except ValueError:
        answer = answer.decode(errors="replace")
    print(json.dumps({"status": response.status, "headers": headers_of(response),
                      "answer": answer, "sent_length": len(body), "plain_length": len(plain),
                      "plain_sha256": hashlib.sha256(plain).hexdigest()}))


def main():
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "get":
        get(args[0], args[1])
    elif mode == "stream":
        stream(args[0], args[1], int(args[2]))
    elif mode == "post":
        post(args[0], args[1], args[2])
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
