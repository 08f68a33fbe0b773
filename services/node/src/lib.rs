//! The yrd-mesh region node: serves one region's standard datasets from an
//! embedded SQLite store over gRPC (`DataNode`), with health and reflection.
//!
//! The binary is thin; tests and `yrdctl up` run this same code in-process.

#![forbid(unsafe_code)]

pub mod config;
pub mod error;
pub mod import;
pub mod server;
pub mod service;
pub mod store;

pub use config::NodeConfig;
pub use error::NodeError;
pub use server::{RunningNode, start};
pub use store::Store;
