//! The standard datasets' rules and demo data: one entry per dataset in
//! [`spec::DATASETS`], code lists and check characters of the national
//! standards ([`codes`]), the row validation that imports and generators
//! share ([`validate`]), and deterministic, realistic demo generators per
//! region ([`demo`]).

#![forbid(unsafe_code)]

pub mod codes;
pub mod demo;
pub mod record;
pub mod spec;
pub mod validate;

pub use record::{Cell, NamedRow};
pub use validate::{Violation, cells_from_named, validate_row};
