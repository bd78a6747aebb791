//! End-to-end tests of grpc_web (filled in with the feature).
