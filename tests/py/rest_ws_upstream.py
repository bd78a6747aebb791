#!/usr/bin/env python3
"""A WebSocket-only upstream for the REST → WebSocket tests. Prints
{"listening": "127.0.0.1:PORT"} first.

  rest_ws_upstream.py [CORRELATION]   (the id field, default "id")

Every message is a JSON object carrying CORRELATION. Its controls are read
from the message's "body" when that is an object (envelope messages), else
from the message itself:
  delay: seconds      wait this long before replying (replies to a
                      connection's messages are sent concurrently, so
                      different delays answer out of order)
  close: true         close the connection instead of replying
  silent: true        never reply
  status: N           reply as an envelope: {CORRELATION, "status": N,
                      "headers": {"x-upstream": "ws"}, "body": {...}}
Otherwise the reply is {CORRELATION: id, "echo": message, "connection": K}
(K numbers the connections from 1).

A plain HTTP GET /_stats (no upgrade) answers
{"connections": opened in total, "open": open now, "max_open": most open at
once, "messages": received, "out_of_order": replies sent in another order
than their messages came}.
"""

import asyncio
import http
import json
import sys

from websockets.asyncio.server import serve
from websockets.datastructures import Headers
from websockets.http11 import Response

CORRELATION = sys.argv[1] if len(sys.argv) > 1 else "id"
STATS = {"connections": 0, "open": 0, "max_open": 0, "messages": 0, "out_of_order": 0}


def stats_request(connection, request):
    if request.path != "/_stats":
        return None
    body = json.dumps(STATS).encode()
    headers = Headers([("content-type", "application/json"), ("content-length", str(len(body)))])
    return Response(http.HTTPStatus.OK.value, "OK", headers, body)


async def reply(websocket, message, serial, order):
    controls = message.get("body") if isinstance(message.get("body"), dict) else message
    if controls.get("silent"):
        return
    await asyncio.sleep(float(controls.get("delay", 0)))
    if controls.get("close"):
        await websocket.close()
        return
    if order["sent"] > serial:
        STATS["out_of_order"] += 1
    order["sent"] = max(order["sent"], serial)
    if "status" in controls:
        answer = {
            CORRELATION: message.get(CORRELATION),
            "status": controls["status"],
            "headers": {"x-upstream": "ws"},
            "body": {"method": message.get("method"), "path": message.get("path"), "got": controls},
        }
    else:
        answer = {CORRELATION: message.get(CORRELATION), "echo": message, "connection": order["id"]}
    try:
        await websocket.send(json.dumps(answer))
    except Exception:
        pass


async def handler(websocket):
    STATS["connections"] += 1
    STATS["open"] += 1
    STATS["max_open"] = max(STATS["max_open"], STATS["open"])
    order = {"id": STATS["connections"], "sent": 0}
    tasks = set()
    try:
        serial = 0
        async for text in websocket:
            STATS["messages"] += 1
            serial += 1
            task = asyncio.create_task(reply(websocket, json.loads(text), serial, order))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
    except Exception:
        pass
    finally:
        STATS["open"] -= 1


async def main():
    async with serve(handler, "127.0.0.1", 0, process_request=stats_request) as server:
        port = server.sockets[0].getsockname()[1]
        print(json.dumps({"listening": f"127.0.0.1:{port}"}), flush=True)
        await server.serve_forever()


asyncio.run(main())
