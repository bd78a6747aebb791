//! End-to-end tests of transform (filled in with the feature).
