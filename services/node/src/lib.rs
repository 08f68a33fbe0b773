//! The yrd-mesh region node: serves one region's standard datasets from its
//! store over gRPC (`DataNode`), with health and reflection.
//!
//! A request is checked, then the policy stage ([`policy`]) turns it into a
//! permit, the plan built from the permit goes to the store ([`store`], a
//! trait with backends as modules), and the one encoder ([`encode`]) writes
//! the rows, masked as the permit says.
//!
//! The binary is thin; tests and `yrdctl up` run this same code in-process.

#![forbid(unsafe_code)]

pub mod access;
pub mod audit;
pub mod config;
pub mod encode;
pub mod error;
pub mod import;
pub mod obo;
pub mod policy;
pub mod principal;
pub mod server;
pub mod service;
pub mod store;

pub use config::NodeConfig;
pub use error::NodeError;
pub use server::{RunningNode, start};
pub use store::Store;
pub use store::sqlite::SqliteStore;
