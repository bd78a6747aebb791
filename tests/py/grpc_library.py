#!/usr/bin/env python3
"""Library gRPC test server (library.v1) for the grpc_json tests.

    grpc_library.py [--reflection] [--port PORT]

Generates the Python stubs from tests/protos at run time (no checked-in
generated code), listens on 127.0.0.1 (on PORT, else a free port) and prints
{"listening": "127.0.0.1:PORT"} once serving. With --reflection, gRPC server
reflection (v1 and v1alpha) is enabled.

Behaviour (each method echoes what it received, so tests check the mapping):
  GetBook      Book{name: name or "shelves/0/books/" + book_id, title: "Title of ..."}
  ListBooks    {books: [one book], request: the request echoed}
  CreateBook   the book, name parent + "/books/" + book_id
  UpdateBook   the book, tags = update_mask paths
  DeleteBook   Empty; NOT_FOUND for a name ending in "/missing"
  PublishBook  Book{name, published: at, title: note}
  GetFile      File{path, size: len(path)}
  Search       {request: {parent: shelf, filter: {author: query}}}
  ListTitles   {titles: ["A", "B", "C"], count: 3}
  Watch        count events (default 5) interval_ms apart (default 200);
               with fail_after N > 0, UNAVAILABLE "shelf on fire" after N
  ImportBooks  {count, titles, pages: sum of page_count}
  Chat         each message answered {text: "echo: " + text, seq}
  Echo         the Kitchen message echoed
  Fail         aborts with the requested code and message; with_details
               adds grpc-status-details-bin (ErrorDetail + an unknown type)
  GetBook answers metadata x-seen-user (the request's x-user-id) and
  x-deadline-ms (the time left before the call's deadline), and a trailer
  x-trailer-note: done.
"""

import json
import os
import sys
import tempfile
import time
from concurrent import futures

import grpc

PROTO_DIR = os.path.normpath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "protos")
)
# google/api/{annotations,http}.proto, as the proxy embeds them.
GOOGLE_API_DIR = os.path.normpath(
    os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "..", "sidecar", "src", "translate", "grpc_json"
    )
)


def load_stubs():
    """Compiles the library, google/api and google/rpc protos and imports them."""
    import grpc_tools
    from grpc_tools import protoc

    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    out = tempfile.mkdtemp(prefix="library-stubs-")
    files = [
        os.path.join(PROTO_DIR, "library/v1/library.proto"),
        os.path.join(GOOGLE_API_DIR, "google/api/annotations.proto"),
        os.path.join(GOOGLE_API_DIR, "google/api/http.proto"),
        os.path.join(PROTO_DIR, "google/rpc/status.proto"),
    ]
    status = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{PROTO_DIR}",
            f"-I{GOOGLE_API_DIR}",
            f"-I{well_known}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
        ]
        + files
    )
    if status != 0:
        raise RuntimeError(f"protoc failed (exit {status})")
    sys.path.insert(0, out)
    from google.api import annotations_pb2  # noqa: F401  (registers the extension)
    from google.rpc import status_pb2
    from library.v1 import library_pb2, library_pb2_grpc

    return library_pb2, library_pb2_grpc, status_pb2


pb, pb_grpc, status_pb2 = load_stubs()
from google.protobuf import any_pb2, empty_pb2  # noqa: E402


def metadata_echo(context):
    sent = []
    user = dict(context.invocation_metadata()).get("x-user-id")
    if user is not None:
        sent.append(("x-seen-user", user))
    remaining = context.time_remaining()
    if remaining is not None:
        sent.append(("x-deadline-ms", str(int(remaining * 1000))))
    context.send_initial_metadata(tuple(sent))
    context.set_trailing_metadata((("x-trailer-note", "done"),))


class Library(pb_grpc.LibraryServicer):
    def GetBook(self, request, context):
        metadata_echo(context)
        name = request.name or f"shelves/0/books/{request.book_id}"
        return pb.Book(name=name, title=f"Title of {name}", page_count=123)

    def ListBooks(self, request, context):
        book = pb.Book(name=f"{request.parent}/books/1", title="One", genre=pb.HISTORY)
        return pb.ListBooksResponse(books=[book], request=request)

    def CreateBook(self, request, context):
        book = pb.Book()
        book.CopyFrom(request.book)
        book.name = f"{request.parent}/books/{request.book_id}"
        return book

    def UpdateBook(self, request, context):
        book = pb.Book()
        book.CopyFrom(request.book)
        del book.tags[:]
        book.tags.extend(request.update_mask.paths)
        return book

    def DeleteBook(self, request, context):
        if request.name.endswith("/missing"):
            context.abort(grpc.StatusCode.NOT_FOUND, f"no book {request.name}")
        return empty_pb2.Empty()

    def PublishBook(self, request, context):
        book = pb.Book(name=request.name, title=request.note)
        book.published.CopyFrom(request.at)
        return book

    def GetFile(self, request, context):
        return pb.File(path=request.path, size=len(request.path))

    def Search(self, request, context):
        echoed = pb.ListBooksRequest(parent=request.shelf, filter=pb.ListFilter(author=request.query))
        return pb.ListBooksResponse(request=echoed)

    def ListTitles(self, request, context):
        return pb.TitlesResponse(titles=["A", "B", "C"], count=3)

    def Watch(self, request, context):
        count = request.count or 5
        interval = (request.interval_ms or 200) / 1000.0
        for seq in range(1, count + 1):
            if request.fail_after and seq > request.fail_after:
                context.abort(grpc.StatusCode.UNAVAILABLE, "shelf on fire")
            yield pb.Event(seq=seq, shelf=request.shelf, kind="tick")
            if seq < count:
                time.sleep(interval)

    def ImportBooks(self, request_iterator, context):
        titles, pages = [], 0
        for book in request_iterator:
            titles.append(book.title)
            pages += book.page_count
        return pb.ImportSummary(count=len(titles), titles=titles, pages=pages)

    def Chat(self, request_iterator, context):
        for message in request_iterator:
            yield pb.ChatMessage(text=f"echo: {message.text}", seq=message.seq)

    def Echo(self, request, context):
        return request

    def Fail(self, request, context):
        code = next(c for c in grpc.StatusCode if c.value[0] == request.code)
        if request.with_details:
            detail = any_pb2.Any()
            detail.Pack(pb.ErrorDetail(reason="BAD_SHELF", field="shelf"))
            unknown = any_pb2.Any(type_url="type.googleapis.com/other.Unknown", value=b"\x01\x02")
            status = status_pb2.Status(
                code=request.code, message=request.message, details=[detail, unknown]
            )
            context.set_trailing_metadata(
                (("grpc-status-details-bin", status.SerializeToString()),)
            )
        context.abort(code, request.message)


def main():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    pb_grpc.add_LibraryServicer_to_server(Library(), server)
    if "--reflection" in sys.argv[1:]:
        from grpc_reflection.v1alpha import reflection

        names = (
            pb.DESCRIPTOR.services_by_name["Library"].full_name,
            reflection.SERVICE_NAME,
        )
        reflection.enable_server_reflection(names, server)
    args = sys.argv[1:]
    wanted = args[args.index("--port") + 1] if "--port" in args else "0"
    port = server.add_insecure_port(f"127.0.0.1:{wanted}")
    server.start()
    print(json.dumps({"listening": f"127.0.0.1:{port}"}), flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
