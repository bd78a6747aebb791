#!/usr/bin/env python3
"""gRPC test client for demo-grpc (orders.v1), run directly or through the sidecar.

Generates the Python stubs from examples/protos/orders.proto at run time (no
checked-in generated code), runs one scenario and prints ONE JSON line:

    grpc_orders.py TARGET unary ID
        {"order": {"id", "item", "quantity", "price_cents"}}
    grpc_orders.py TARGET server COUNT INTERVAL_MS
        {"count", "ids", "first_at_ms", "total_ms"}
    grpc_orders.py TARGET client N
        {"count", "total_cents"}  (N orders: id str(i), quantity 1, price_cents 100)
    grpc_orders.py TARGET bidi TEXT...
        {"replies": [...]}  (each text waits for its reply before the next is sent)

A gRPC error prints {"code": "NOT_FOUND", "details": "..."} and exits 0; any
other failure prints {"error": "..."} and exits 1. TARGET is host:port
(plaintext); every call has a 20 s deadline.
"""

import json
import os
import queue
import sys
import tempfile
import time

import grpc

PROTO_DIR = os.path.normpath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "examples", "protos")
)
# google/api/{annotations,http}.proto, as the proxy embeds them.
GOOGLE_API_DIR = os.path.normpath(
    os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "..", "sidecar", "src", "translate", "grpc_json"
    )
)
DEADLINE_S = 20.0
USAGE = "usage: grpc_orders.py TARGET (unary ID | server COUNT INTERVAL_MS | client N | bidi TEXT...)"


class UsageError(Exception):
    pass


def load_stubs():
    """Compiles orders.proto into a temporary directory and imports the result."""
    import grpc_tools
    from grpc_tools import protoc

    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    with tempfile.TemporaryDirectory(prefix="orders-stubs-") as out:
        status = protoc.main(
            [
                "grpc_tools.protoc",
                f"-I{PROTO_DIR}",
                f"-I{GOOGLE_API_DIR}",
                f"-I{well_known}",
                f"--python_out={out}",
                f"--grpc_python_out={out}",
                os.path.join(PROTO_DIR, "orders.proto"),
                # orders.proto's HTTP rules import these.
                os.path.join(GOOGLE_API_DIR, "google/api/annotations.proto"),
                os.path.join(GOOGLE_API_DIR, "google/api/http.proto"),
            ]
        )
        if status != 0:
            raise RuntimeError(f"protoc failed on {PROTO_DIR}/orders.proto (exit {status})")
        sys.path.insert(0, out)
        try:
            import orders_pb2
            import orders_pb2_grpc
        finally:
            sys.path.remove(out)
    return orders_pb2, orders_pb2_grpc


def elapsed_ms(start):
    return round((time.monotonic() - start) * 1000, 1)


def order_dict(order):
    return {
        "id": order.id,
        "item": order.item,
        "quantity": order.quantity,
        "price_cents": order.price_cents,
    }


def unary(pb, stub, order_id):
    return {"order": order_dict(stub.GetOrder(pb.GetOrderRequest(id=order_id), timeout=DEADLINE_S))}


def server_stream(pb, stub, count, interval_ms):
    request = pb.ListOrdersRequest(count=int(count), interval_ms=int(interval_ms))
    start = time.monotonic()
    first_at_ms = None
    ids = []
    for order in stub.ListOrders(request, timeout=DEADLINE_S):
        if first_at_ms is None:
            first_at_ms = elapsed_ms(start)
        ids.append(order.id)
    return {"count": len(ids), "ids": ids, "first_at_ms": first_at_ms, "total_ms": elapsed_ms(start)}


def client_stream(pb, stub, n):
    orders = (pb.Order(id=str(i), quantity=1, price_cents=100) for i in range(1, int(n) + 1))
    summary = stub.UploadOrders(orders, timeout=DEADLINE_S)
    return {"count": summary.count, "total_cents": summary.total_cents}


def bidi(pb, stub, *texts):
    outgoing = queue.Queue()

    def requests():
        while (message := outgoing.get()) is not None:
            yield message

    responses = stub.Chat(requests(), timeout=DEADLINE_S)
    replies = []
    try:
        for text in texts:
            outgoing.put(pb.ChatMessage(text=text))
            reply = next(responses, None)
            if reply is None:
                raise RuntimeError(f"reply stream ended after {len(replies)} replies")
            replies.append(reply.text)
    finally:
        outgoing.put(None)  # half-close: the server then ends its stream
    for extra in responses:
        replies.append(extra.text)
    return {"replies": replies}


SCENARIOS = {
    "unary": (unary, lambda n: n == 1),
    "server": (server_stream, lambda n: n == 2),
    "client": (client_stream, lambda n: n == 1),
    "bidi": (bidi, lambda n: n >= 1),
}


def main(argv):
    if len(argv) < 2 or argv[1] not in SCENARIOS:
        raise UsageError(USAGE)
    target, name, args = argv[0], argv[1], argv[2:]
    scenario, arity_ok = SCENARIOS[name]
    if not arity_ok(len(args)):
        raise UsageError(USAGE)
    pb, pb_grpc = load_stubs()
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.OrdersStub(channel)
        try:
            return scenario(pb, stub, *args)
        except grpc.RpcError as error:
            return {"code": error.code().name, "details": error.details()}


if __name__ == "__main__":
    try:
        result = main(sys.argv[1:])
    except Exception as error:  # noqa: BLE001 - report anything unexpected as one JSON line
        print(json.dumps({"error": f"{type(error).__name__}: {error}"}), flush=True)
        sys.exit(1)
    print(json.dumps(result), flush=True)
