//! Shared pieces of the end-to-end tests live in the test binary itself.
#![forbid(unsafe_code)]
