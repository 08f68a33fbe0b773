//! The attack suite (issue 10): one test per finding of the hostile-client
//! review, each failing on the behaviour found then and passing now. Every
//! test prints the figure it measures (before/after figures are in the
//! issue's note).

mod config;
mod edge;
mod federation;
mod import;
mod parsers;
mod telemetry;
