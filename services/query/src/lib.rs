//! The yrd-mesh query language, shared by the region node and the gateway.
//!
//! - [`check`]: one request, checked once, into a [`CheckedQuery`] or a
//!   [`CheckedAggregate`] (the gateway and the node build the same);
//! - [`filter`]: the AIP-160 subset, parsed once into the typed
//!   [`FilterExpr`](yrd_proto::mesh::FilterExpr) tree and checked against a
//!   dataset's schema;
//! - [`order`]: `order_by` and aggregate metric parsing;
//! - [`sortkey`]: order-preserving byte encoding of sort keys, so that rows
//!   can be merged without decoding them;
//! - [`token`]: signed, expiring page tokens bound to their query;
//! - [`aggregate`]: merging partial aggregates.

#![forbid(unsafe_code)]

pub mod aggregate;
pub mod check;
pub mod error;
pub mod filter;
pub mod limits;
pub mod order;
pub mod sortkey;
pub mod token;

pub use check::{CheckedAggregate, CheckedQuery};
pub use error::{ErrorKind, QueryError};
pub use limits::Limits;
