//! The standard datasets' rules and demo data.

#![forbid(unsafe_code)]

pub mod record;

pub use record::{Cell, NamedRow};
