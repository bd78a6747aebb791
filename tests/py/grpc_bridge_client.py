#!/usr/bin/env python3
"""grpcio client of library.v1.Library for the gRPC → REST bridge tests.

    grpc_bridge_client.py TARGET CALLS_JSON [AUTHORITY]

TARGET is host:port (plaintext HTTP/2); AUTHORITY, if given, is sent as
:authority (a forward proxy routes by it). CALLS_JSON is a list of calls
{"method": "GetBook", "request": {proto3 JSON}, "metadata": [[k, v], ...]}.
Stubs are generated at run time (tests/py/grpc_library.py's load_stubs).
Prints ONE JSON line: a list of results, one per call:
{"code": "OK" | status name, "details": grpc-message, "response": JSON
(unary) or "responses": [JSON, ...] (server stream, those before a
failure), "initial": {metadata}, "trailing": {metadata}}.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import grpc  # noqa: E402
from google.protobuf import json_format  # noqa: E402

from grpc_library import pb, pb_grpc  # noqa: E402


def text_metadata(metadata):
    return {k: v for k, v in (metadata or []) if isinstance(v, str)}


def to_json(message):
    return json_format.MessageToDict(message)


def call(stub, spec):
    service = pb.DESCRIPTOR.services_by_name["Library"]
    method = service.methods_by_name[spec["method"]]
    request_class = getattr(pb, method.input_type.name, None)
    if request_class is None:
        from google.protobuf import empty_pb2

        request_class = empty_pb2.Empty
    request = json_format.ParseDict(spec.get("request", {}), request_class())
    metadata = [tuple(pair) for pair in spec.get("metadata", [])]
    rpc = getattr(stub, spec["method"])
    result = {}
    if method.server_streaming:
        responses = []
        stream = rpc(request, metadata=metadata, timeout=20)
        try:
            for message in stream:
                responses.append(to_json(message))
            code, details = "OK", ""
        except grpc.RpcError as err:
            code, details = err.code().name, err.details()
        result["responses"] = responses
        result["initial"] = text_metadata(stream.initial_metadata())
        result["trailing"] = text_metadata(stream.trailing_metadata())
    else:
        if method.client_streaming:
            request = iter([request])
        try:
            response, state = rpc.with_call(request, metadata=metadata, timeout=20)
            result["response"] = to_json(response)
            result["initial"] = text_metadata(state.initial_metadata())
            result["trailing"] = text_metadata(state.trailing_metadata())
            code, details = "OK", ""
        except grpc.RpcError as err:
            code, details = err.code().name, err.details()
            result["initial"] = text_metadata(err.initial_metadata())
            result["trailing"] = text_metadata(err.trailing_metadata())
    result["code"] = code
    result["details"] = details
    return result


def main():
    target, calls = sys.argv[1], json.loads(sys.argv[2])
    options = [("grpc.default_authority", sys.argv[3])] if len(sys.argv) > 3 else []
    with grpc.insecure_channel(target, options=options) as channel:
        stub = pb_grpc.LibraryStub(channel)
        results = [call(stub, spec) for spec in calls]
    print(json.dumps(results), flush=True)


if __name__ == "__main__":
    main()
