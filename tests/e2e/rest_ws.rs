//! End-to-end tests of rest_ws (filled in with the feature).
