//! Demo services that run behind the sidecar in the demo and in the end-to-end
//! tests: `demo-grpc` (tonic, `orders.v1`), `demo-rest` (hyper, HTTP/1.1 and
//! h2c) and `demo-ws` (WebSocket echo). This library holds what the binaries
//! share; each binary is one file under `src/bin/`. `mesh-demo` runs them all
//! behind sidecars on loopback, using [`supervise`] for its child processes.

pub mod http_server;
pub mod lifecycle;
pub mod orders;
pub mod supervise;
