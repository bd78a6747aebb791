#!/usr/bin/env python3
"""WebSocket clients for the bridge tests. Each scenario prints ONE JSON line
at the end (`hold` and `many` print one more line first):

    session URL        sendMessage (two-way), another action and non-JSON
                       ($default), binary, a failing route; closes with 4001
                       {"id", "reply", "error", "quiet"}
    refused URL        {"status"} of the refused handshake
    hold URL SECONDS   {"id"} first; then {"messages", "close_code", "close_reason"}
    big URL BYTES      sends one text message of BYTES; {"close_code"}
    answering URL SECONDS
                       stays SECONDS without sending (pings answered by the
                       library); then a sendMessage round trip: {"open"}
    silent HOST:PORT PATH SECONDS
                       a raw client that never reads nor answers pings for
                       SECONDS, then reads: {"close_code", "pings"}
    slow URL HOST:PORT TOKEN COUNT BYTES
                       stops reading, pushes COUNT messages of BYTES to itself
                       through POST /@connections/{id} (stops at the first
                       non-200), then reads: {"pushed", "last_status", "received", "close_code"}
    burst URL N        sends N sendMessage messages; {"replies"}: the N answers
    many URL N         opens N; prints {"ready": N}; waits for a stdin line;
                       then a round trip on each: {"open"}
"""

import asyncio
import base64
import http.client
import json
import os
import socket
import sys
import time

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

TIMEOUT_S = 60


def out(value):
    print(json.dumps(value), flush=True)


def conn_id(ws):
    return ws.response.headers.get("x-mesh-connection-id")


async def session(url):
    async with connect(url, ping_interval=None) as ws:
        await ws.send(json.dumps({"action": "sendMessage", "text": "hi"}))
        reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
        await ws.send(json.dumps({"action": "other"}))
        await ws.send("not json")
        await ws.send(b"\x00\x01\x02")
        await ws.send(json.dumps({"action": "fail"}))
        error = json.loads(await asyncio.wait_for(ws.recv(), 10))
        # One-way routes answer nothing: the next message is the next reply.
        await ws.send(json.dumps({"action": "sendMessage", "n": 2}))
        quiet = json.loads(await asyncio.wait_for(ws.recv(), 10))
        ident = conn_id(ws)
        await ws.close(4001, "bye")
        return {"id": ident, "reply": reply, "error": error, "quiet": quiet}


async def refused(url):
    try:
        async with connect(url):
            return {"status": 101}
    except InvalidStatus as err:
        return {"status": err.response.status_code}


async def hold(url, seconds):
    messages = []
    async with connect(url) as ws:
        out({"id": conn_id(ws)})
        deadline = time.monotonic() + float(seconds)
        try:
            while time.monotonic() < deadline:
                left = deadline - time.monotonic()
                try:
                    message = await asyncio.wait_for(ws.recv(), left)
                except asyncio.TimeoutError:
                    break
                if isinstance(message, bytes):
                    message = {"binary": base64.b64encode(message).decode()}
                messages.append(message)
        except ConnectionClosed:
            pass
        rcvd = ws.protocol.close_rcvd
        return {
            "messages": messages,
            "close_code": rcvd.code if rcvd else None,
            "close_reason": rcvd.reason if rcvd else None,
        }


async def big(url, size):
    async with connect(url, max_size=None, ping_interval=None) as ws:
        try:
            await ws.send("x" * int(size))
            await asyncio.wait_for(ws.recv(), 20)
        except (ConnectionClosed, asyncio.TimeoutError):
            pass
        try:
            await asyncio.wait_for(ws.wait_closed(), 10)
        except asyncio.TimeoutError:
            pass
        rcvd = ws.protocol.close_rcvd
        return {"close_code": rcvd.code if rcvd else None}


async def answering(url, seconds):
    async with connect(url, ping_interval=None) as ws:
        try:
            await asyncio.wait_for(ws.recv(), float(seconds))
        except asyncio.TimeoutError:
            pass
        except ConnectionClosed:
            return {"open": False}
        try:
            await ws.send(json.dumps({"action": "sendMessage"}))
            await asyncio.wait_for(ws.recv(), 10)
            return {"open": True}
        except (ConnectionClosed, asyncio.TimeoutError):
            return {"open": False}


def silent(hostport, path, seconds):
    host, port = hostport.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: {hostport}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        if not chunk:
            return {"close_code": None, "pings": 0, "head": head.decode()}
        head += chunk
    time.sleep(float(seconds))
    data = b""
    sock.settimeout(5)
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except (socket.timeout, ConnectionResetError):
        pass
    pings, close_code, i = 0, None, 0
    while i + 2 <= len(data):
        opcode, length = data[i] & 0x0F, data[i + 1] & 0x7F
        i += 2
        if length == 126:
            length, i = int.from_bytes(data[i : i + 2], "big"), i + 2
        elif length == 127:
            length, i = int.from_bytes(data[i : i + 8], "big"), i + 8
        payload = data[i : i + length]
        i += length
        if opcode == 0x9:
            pings += 1
        elif opcode == 0x8 and len(payload) >= 2:
            close_code = int.from_bytes(payload[:2], "big")
    return {"close_code": close_code, "pings": pings}


def push_all(hostport, token, ident, count, size):
    host, port = hostport.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    body = "y" * size
    headers = {"authorization": f"Bearer {token}", "content-type": "text/plain"}
    pushed, status = 0, None
    for _ in range(count):
        conn.request("POST", f"/@connections/{ident}", body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        status = response.status
        if status != 200:
            break
        pushed += 1
    conn.close()
    return pushed, status


async def slow(url, hostport, token, count, size):
    async with connect(url, max_queue=1, ping_interval=None, max_size=None) as ws:
        ident = conn_id(ws)
        pushed, status = await asyncio.to_thread(
            push_all, hostport, token, ident, int(count), int(size)
        )
        received = 0
        try:
            while True:
                await asyncio.wait_for(ws.recv(), 15)
                received += 1
        except (ConnectionClosed, asyncio.TimeoutError):
            pass
        rcvd = ws.protocol.close_rcvd
        return {
            "pushed": pushed,
            "last_status": status,
            "received": received,
            "close_code": rcvd.code if rcvd else None,
        }


async def burst(url, n):
    async with connect(url, ping_interval=None) as ws:
        for i in range(int(n)):
            await ws.send(json.dumps({"action": "sendMessage", "n": i}))
        replies = [json.loads(await asyncio.wait_for(ws.recv(), 10)) for _ in range(int(n))]
        return {"replies": replies}


async def many(url, n):
    sockets = [await connect(url, ping_interval=None) for _ in range(int(n))]
    out({"ready": len(sockets)})
    await asyncio.to_thread(sys.stdin.readline)
    ok = 0
    for ws in sockets:
        try:
            await ws.send(json.dumps({"action": "sendMessage"}))
            await asyncio.wait_for(ws.recv(), 10)
            ok += 1
        except (ConnectionClosed, asyncio.TimeoutError):
            pass
    for ws in sockets:
        await ws.close()
    return {"open": ok}


async def main(args):
    scenario, rest = args[0], args[1:]
    if scenario == "silent":
        return await asyncio.to_thread(silent, *rest)
    run = {
        "session": session,
        "refused": refused,
        "hold": hold,
        "big": big,
        "answering": answering,
        "slow": slow,
        "many": many,
        "burst": burst,
    }[scenario]
    return await asyncio.wait_for(run(*rest), TIMEOUT_S)


if __name__ == "__main__":
    try:
        out(asyncio.run(main(sys.argv[1:])))
    except Exception as err:  # noqa: BLE001 - the test reads the reason
        out({"error": f"{type(err).__name__}: {err}"})
        sys.exit(1)
