//! The tower layers [`crate::serve`] installs around every process's
//! routes, outermost first: [`StatusLayer`] (the server span, and every
//! call's status on it and in the metrics), [`DrainLayer`] (the end of a
//! graceful shutdown), [`DeadlineLayer`] (the typed [`Deadline`]).
//!
//! The status layer is outermost so that it sees what the others answer:
//! a call ended by the drain counts as `UNAVAILABLE`.

mod deadline;
mod drain;
mod status;

pub use deadline::{Deadline, DeadlineLayer, DeadlinePolicy, DeadlineService, parse_grpc_timeout};
pub use drain::{Drain, DrainBody, DrainFuture, DrainLayer, DrainService, SHUTTING_DOWN};
pub use status::{StatusBody, StatusFuture, StatusLayer, StatusService};
