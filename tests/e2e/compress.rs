//! End-to-end tests of compress (filled in with the feature).
