//! The yrd-mesh audit log: one record per request (allowed, denied or
//! failed) and per access-workflow event, at every node and at the gateway,
//! hash-chained and append-only, with signed checkpoints, so that a
//! verifier names the first bad record for any edit, deletion, insertion,
//! reordering or truncation.
//!
//! - [`AuditLog`]: the writer. [`AuditLog::append`] resolves only once the
//!   record is durable (written and `sync_data`'d); a dedicated thread
//!   group-commits whatever is queued (one sync for many records).
//!   [`AuditLog::append_deferred`] resolves once the record is written,
//!   and it is synced with the next durable append or within
//!   [`DEFERRED_SYNC`] (for records that follow a durable one, such as a
//!   query's end).
//! - [`verify`]: checks files or directories and returns a [`Report`], or
//!   the first bad record ([`AuditError::BadRecord`]).
//! - [`read`]: lists records matching a [`Filter`] (blocking).
//!
//! # File format
//!
//! A log is a directory of JSON-lines files named
//! `audit-<first seq, 20 digits>.jsonl`, so that their names sort in log
//! order. Every line is one record:
//!
//! ```text
//! <hash: 64 lowercase hex digits> <record: one JSON object>\n
//! ```
//!
//! where `hash = SHA-256(prev ‖ json)`: `prev` is the 32 bytes of the
//! previous record's hash (32 zero bytes before the first record of a log)
//! and `json` the exact bytes of the JSON object on the line. The object
//! repeats `prev` (hex) so that each line, and each file's first line,
//! names the record it follows. The writer sets `seq` (consecutive from 1
//! across all files), `time` (RFC 3339 UTC with milliseconds), `source`
//! (the writer's SPIFFE URI) and `prev`; the other keys are the caller's
//! [`Entry`], unset ones left out. The first record of a new file chains to
//! the last record of the previous one, so rotation never breaks the chain.
//!
//! A **checkpoint** (`kind = "checkpoint"`) is a record whose `checkpoint`
//! object names the record just before it (`seq`, `hash`) and, with a
//! signer, the signer's SPIFFE URI (`signer`), its certificate (`cert`,
//! base64 DER) and an ECDSA P-256 SHA-256 signature (`signature`, base64
//! DER) over [`checkpoint_message`]: the log's source, the covered seq and
//! hash. One is written at every rotation (as the last line of the file
//! that closes), every `checkpoint_every` records, after
//! `checkpoint_interval` when records were added, and at
//! [`AuditLog::close`]. Without a signer checkpoints carry no signature and
//! the verifier says so.
//!
//! A crash may leave a torn last line (no newline): reopening cuts it off
//! and appends a `recovery` record saying how many bytes were cut. Any other
//! inconsistency refuses to open.
//!
//! What the chain proves and what it cannot: an edit, a deletion, an
//! insertion or a reordering breaks a hash, a `prev` link or the `seq`
//! sequence; recomputing the whole chain after an edit is caught by the
//! next signed checkpoint. Records written after the last signed checkpoint
//! are covered only by the chain: cutting such a tail off at a line boundary
//! cannot be proven, which is why [`Report`] counts them and why a graceful
//! stop ends with a checkpoint.
//!
//! Records never hold a value of a PERSONAL or SECRET field: callers pass
//! field names and the filter text, and personal fields cannot be filtered.

#![forbid(unsafe_code)]

mod config;
mod error;
mod format;
mod log;
mod read;
mod record;
mod verify;

#[cfg(test)]
mod tests;

pub use config::AuditConfig;
pub use error::AuditError;
pub use format::{MAX_LINE_BYTES, checkpoint_message, file_name, parse_line};
pub use log::{AuditLog, DEFERRED_SYNC};
pub use read::{Filter, Records, read};
pub use record::{CHECKPOINT, Checkpoint, Decision, Entry, ID_HEADER, RECOVERY, Record, RecordId};
pub use verify::{Report, verify};
