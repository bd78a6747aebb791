//! Protocol translation: REST/JSON ↔ gRPC (`grpc_json`).

pub mod grpc_json;
