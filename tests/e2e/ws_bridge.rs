//! End-to-end tests of ws_bridge (filled in with the feature).
