//! End-to-end tests: region nodes started in-process on port 0, loaded with
//! generated data, queried over real gRPC on real sockets.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod access;
mod architecture;
mod assertion;
mod attack;
mod audit;
mod checks;
mod deploy;
mod gateway;
mod harness;
mod mesh;
mod node_import;
mod node_query;
#[path = "../../services/telemetry/tests/common/mod.rs"]
mod otlp;
mod policy;
mod procs;
mod region_client;
mod shutdown;
#[path = "../../services/server/tests/slowloris/mod.rs"]
mod slowloris;
mod status;
mod telemetry;
