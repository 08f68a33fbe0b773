//! The yrd-mesh gateway: one endpoint for all regions. It authenticates
//! applications by their client certificates, plans which regions a query
//! touches, fans out concurrently with deadlines, merges the streams,
//! applies the global page size and reports every region's state.
//!
//! The binary is thin; tests and `yrdctl up` run this same code in-process.

#![forbid(unsafe_code)]

pub mod access;
pub mod assertion;
pub mod audit;
pub mod client;
pub mod config;
pub mod error;
pub mod federate;
pub mod kept;
pub mod limit;
pub mod plan;
pub mod registry;
pub mod server;
pub mod service;

pub use config::GatewayConfig;
pub use error::GatewayError;
pub use server::{RunningGateway, start};
