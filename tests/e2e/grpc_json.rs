//! End-to-end tests of grpc_json (filled in with the feature).
