// The gRPC-Web test page's script, bundled with esbuild into dist/app.js:
// the npm grpc-web client calls orders.v1 through the edge named by the
// page's ?edge= parameter, with hand-written protobuf serializers (no protoc
// plugin), and writes every answer into the DOM as JSON for the test to read.
import { GrpcWebClientBase, MethodDescriptor, MethodType } from "grpc-web";

const edge = new URLSearchParams(location.search).get("edge");

// Protobuf by hand: varints and length-delimited strings are all orders.v1 needs.
function varint(n, out) {
  while (n > 0x7f) {
    out.push((n & 0x7f) | 0x80);
    n = Math.floor(n / 128);
  }
  out.push(n);
}

function encodeFields(fields) {
  const out = [];
  for (const [number, value] of fields) {
    if (typeof value === "string") {
      const bytes = new TextEncoder().encode(value);
      varint((number << 3) | 2, out);
      varint(bytes.length, out);
      out.push(...bytes);
    } else {
      varint(number << 3, out);
      varint(value, out);
    }
  }
  return new Uint8Array(out);
}

function decodeOrder(bytes) {
  const names = { 1: "id", 2: "item", 3: "quantity", 4: "price_cents" };
  const order = {};
  let at = 0;
  const readVarint = () => {
    let value = 0;
    let scale = 1;
    for (;;) {
      const byte = bytes[at++];
      value += (byte & 0x7f) * scale;
      scale *= 128;
      if (!(byte & 0x80)) return value;
    }
  };
  while (at < bytes.length) {
    const key = readVarint();
    const name = names[key >> 3] || String(key >> 3);
    if ((key & 7) === 2) {
      const size = readVarint();
      order[name] = new TextDecoder().decode(bytes.subarray(at, at + size));
      at += size;
    } else {
      order[name] = readVarint();
    }
  }
  return order;
}

class Message {}

const getOrder = new MethodDescriptor(
  "/orders.v1.Orders/GetOrder",
  MethodType.UNARY,
  Message,
  Message,
  (req) => encodeFields([[1, req.id]]),
  decodeOrder,
);

const listOrders = new MethodDescriptor(
  "/orders.v1.Orders/ListOrders",
  MethodType.SERVER_STREAMING,
  Message,
  Message,
  (req) => encodeFields([[1, req.count], [2, req.interval_ms]]),
  decodeOrder,
);

function show(id, value) {
  document.getElementById(id).textContent = JSON.stringify(value);
}

function unary(format, id) {
  const client = new GrpcWebClientBase({ format });
  return client
    .unaryCall(`${edge}/orders.v1.Orders/GetOrder`, { id }, {}, getOrder)
    .then(
      (order) => ({ order }),
      (err) => ({ code: err.code, message: err.message }),
    );
}

function stream(count, interval_ms) {
  return new Promise((resolve) => {
    const client = new GrpcWebClientBase({ format: "text" });
    const orders = [];
    const call = client.serverStreaming(
      `${edge}/orders.v1.Orders/ListOrders`,
      { count, interval_ms },
      {},
      listOrders,
    );
    call.on("data", (order) => orders.push(order));
    call.on("error", (err) => resolve({ orders, code: err.code, message: err.message }));
    call.on("end", () => resolve({ orders, code: 0 }));
  });
}

async function main() {
  show("text-unary", await unary("text", "3"));
  show("binary-unary", await unary("binary", "7"));
  show("not-found", await unary("text", "42"));
  show("stream", await stream(4, 20));
  document.getElementById("state").textContent = "done";
}

main().catch((err) => {
  document.getElementById("state").textContent = `failed: ${err}`;
});
