#!/usr/bin/env python3
"""A test OpenTelemetry collector: receives OTLP traces over gRPC
(TraceService/Export) and over HTTP (POST /v1/traces, protobuf), both on
127.0.0.1 with free ports.

Prints first one JSON line with its addresses,

    {"listening": "127.0.0.1:GRPC_PORT", "http": "127.0.0.1:HTTP_PORT"}

then one JSON line per received span:

    {"transport": "grpc"|"http", "service": <resource service.name>,
     "resource": {...}, "name", "trace_id", "span_id", "parent_span_id" (hex,
     "" for a root), "kind" (SERVER, CLIENT, ...), "status" (UNSET, OK, ERROR),
     "status_message", "trace_state", "attributes": {key: value}}

Runs until killed.
"""

import json
import sys
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2

LOCK = threading.Lock()


def value(any_value):
    kind = any_value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [value(v) for v in any_value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: value(kv.value) for kv in any_value.kvlist_value.values}
    if kind == "bytes_value":
        return any_value.bytes_value.hex()
    return getattr(any_value, kind)


def attributes(key_values):
    return {kv.key: value(kv.value) for kv in key_values}


def emit(transport, request):
    lines = []
    for resource_spans in request.resource_spans:
        resource = attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                lines.append(
                    json.dumps(
                        {
                            "transport": transport,
                            "service": resource.get("service.name"),
                            "resource": resource,
                            "scope": scope_spans.scope.name,
                            "name": span.name,
                            "trace_id": span.trace_id.hex(),
                            "span_id": span.span_id.hex(),
                            "parent_span_id": span.parent_span_id.hex(),
                            "kind": trace_pb2.Span.SpanKind.Name(span.kind).removeprefix("SPAN_KIND_"),
                            "status": trace_pb2.Status.StatusCode.Name(span.status.code).removeprefix(
                                "STATUS_CODE_"
                            ),
                            "status_message": span.status.message,
                            "trace_state": span.trace_state,
                            "start": span.start_time_unix_nano,
                            "end": span.end_time_unix_nano,
                            "attributes": attributes(span.attributes),
                        }
                    )
                )
    with LOCK:
        for line in lines:
            sys.stdout.write(line + "\n")
        sys.stdout.flush()


class TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def Export(self, request, context):
        emit("grpc", request)
        return trace_service_pb2.ExportTraceServiceResponse()


class HttpHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        if self.path != "/v1/traces":
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        request = trace_service_pb2.ExportTraceServiceRequest()
        try:
            request.ParseFromString(body)
        except Exception:  # noqa: BLE001 - a bad body is the client's error
            self.send_response(400)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        emit("http", request)
        reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


def main():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(TraceService(), server)
    grpc_port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    http_server = ThreadingHTTPServer(("127.0.0.1", 0), HttpHandler)
    http_port = http_server.server_address[1]
    with LOCK:
        sys.stdout.write(
            json.dumps({"listening": f"127.0.0.1:{grpc_port}", "http": f"127.0.0.1:{http_port}"}) + "\n"
        )
        sys.stdout.flush()
    http_server.serve_forever()


if __name__ == "__main__":
    main()
