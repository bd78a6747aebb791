//! Protocol translation: REST/JSON ↔ gRPC (`grpc_json`), gRPC-Web ↔ gRPC
//! (`grpc_web`), WebSocket clients ↔ REST backends (`ws_bridge`), REST
//! callers ↔ WebSocket upstreams (`rest_ws`).

pub mod grpc_json;
pub mod grpc_web;
pub mod rest_ws;
pub mod ws_bridge;
