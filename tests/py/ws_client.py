#!/usr/bin/env python3
"""WebSocket test client for demo-ws, run directly or through the sidecar.

Runs one scenario against URL (ws://host:port/path) and prints ONE JSON line:

    ws_client.py URL echo
        {"text": bool, "binary": bool, "big": bool}  (a text, a small binary and
        a 1 MiB random binary message each come back identical)
    ws_client.py URL close CODE REASON
        {"close_code", "close_reason"}  (the client closes; what the server echoed)
    ws_client.py URL server_close CODE REASON
        {"close_code", "close_reason"}  (asks the server to close with CODE/REASON)

Any failure prints {"error": "..."} and exits 1. Each scenario has a 30 s limit.
"""

import asyncio
import json
import os
import sys

from websockets.asyncio.client import connect

MAX_SIZE = 16 * 2**20
TIMEOUT_S = 30
USAGE = "usage: ws_client.py URL (echo | close CODE REASON | server_close CODE REASON)"


class UsageError(Exception):
    pass


async def echo(url):
    async with connect(url, max_size=MAX_SIZE) as ws:

        async def round_trip(message):
            await ws.send(message)
            return await ws.recv() == message

        return {
            "text": await round_trip("hello"),
            "binary": await round_trip(b"\x00\x01\x02"),
            "big": await round_trip(os.urandom(2**20)),
        }


async def client_close(url, code, reason):
    async with connect(url, max_size=MAX_SIZE) as ws:
        await ws.close(int(code), reason)
        # close() returns once the handshake is done and the TCP connection is
        # gone; close_code/close_reason are what the server sent back.
        return {"close_code": ws.close_code, "close_reason": ws.close_reason}


async def server_close(url, code, reason):
    async with connect(url, max_size=MAX_SIZE) as ws:
        await ws.send(f"close:{code}:{reason}")
        await ws.wait_closed()
        return {"close_code": ws.close_code, "close_reason": ws.close_reason}


SCENARIOS = {
    "echo": (echo, 0),
    "close": (client_close, 2),
    "server_close": (server_close, 2),
}


async def main(argv):
    if len(argv) < 2 or argv[1] not in SCENARIOS:
        raise UsageError(USAGE)
    url, name, args = argv[0], argv[1], argv[2:]
    scenario, arity = SCENARIOS[name]
    if len(args) != arity:
        raise UsageError(USAGE)
    async with asyncio.timeout(TIMEOUT_S):
        return await scenario(url, *args)


if __name__ == "__main__":
    try:
        result = asyncio.run(main(sys.argv[1:]))
    except Exception as error:  # noqa: BLE001 - report anything unexpected as one JSON line
        print(json.dumps({"error": f"{type(error).__name__}: {error}"}), flush=True)
        sys.exit(1)
    print(json.dumps(result), flush=True)
