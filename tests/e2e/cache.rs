//! End-to-end tests of cache (filled in with the feature).
