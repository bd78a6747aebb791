//! End-to-end tests of aggregate (filled in with the feature).
