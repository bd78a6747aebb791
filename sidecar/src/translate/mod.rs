//! Protocol translation: REST/JSON ↔ gRPC (`grpc_json`), gRPC-Web ↔ gRPC
//! (`grpc_web`).

pub mod grpc_json;
pub mod grpc_web;
