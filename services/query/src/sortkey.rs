//! sortkey
