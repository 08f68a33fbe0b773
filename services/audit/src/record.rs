//! What a record holds: the caller's [`Entry`] and what the writer adds.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The kind of a checkpoint record.
pub const CHECKPOINT: &str = "checkpoint";

/// The kind of the record written when reopening cut a torn line or found
/// that the previous run stopped without its closing checkpoint.
pub const RECOVERY: &str = "recovery";

/// How a request or event was decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// Allowed (rows may have gone out).
    Allow,
    /// Refused by policy.
    Deny,
    /// Failed for another reason (invalid, unavailable, ...).
    Fail,
}

impl Decision {
    /// The name as stored: `allow`, `deny` or `fail`.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
            Decision::Fail => "fail",
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Decision {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "allow" => Ok(Decision::Allow),
            "deny" => Ok(Decision::Deny),
            "fail" => Ok(Decision::Fail),
            other => Err(format!("{other:?} is not a decision (allow, deny or fail)")),
        }
    }
}

/// What a caller records: one request or workflow event. Names and codes
/// only, never a value of a PERSONAL or SECRET field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    /// `query`, `query.end`, `aggregate`, `explain`, `access.request`,
    /// `access.approve`, `access.refuse`, `access.revoke`, `policy.reload`,
    /// `audit.read`, ... (`checkpoint` and `recovery` are the writer's).
    pub kind: Cow<'static, str>,
    /// The TLS peer's SPIFFE URI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller: Option<String>,
    /// The application acted for (SPIFFE URI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The declared purpose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
    /// The region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The dataset id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<String>,
    /// The filter as text, rendered from the typed tree by the caller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// The fields asked for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
    /// The decision.
    pub decision: Decision,
    /// The grant or rule that decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// The reason code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Rows returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    /// The fields that went out masked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub masked: Vec<String>,
    /// Groups left out as too small.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suppressed: Option<u64>,
    /// The trace id (32 hex digits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// The record this one completes (a `query.end` names its `query`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    /// Anything else, free-form (never a personal value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
}

impl Entry {
    /// An entry of `kind` with `decision`, everything else unset.
    pub fn new(kind: impl Into<Cow<'static, str>>, decision: Decision) -> Self {
        Self {
            kind: kind.into(),
            caller: None,
            subject: None,
            purpose: None,
            region: None,
            dataset: None,
            filter: None,
            fields: Vec::new(),
            decision,
            rule: None,
            reason: None,
            rows: None,
            masked: Vec::new(),
            suppressed: None,
            trace_id: None,
            request: None,
            detail: None,
        }
    }
}

/// What a checkpoint covers and, when signed, who signed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// The seq of the record covered (the one just before the checkpoint).
    pub seq: u64,
    /// Its hash (hex).
    pub hash: String,
    /// The signer's SPIFFE URI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
    /// The signer's certificate, base64 DER.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<String>,
    /// The signature over [`crate::checkpoint_message`], base64 DER.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

/// One stored record: the writer's keys, then the caller's entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Position in the log, consecutive from 1 across files.
    pub seq: u64,
    /// When it was written: RFC 3339 UTC with milliseconds.
    pub time: String,
    /// The writer's SPIFFE URI.
    pub source: String,
    /// The previous record's hash (hex; zeros before the first).
    pub prev: String,
    /// The caller's entry.
    #[serde(flatten)]
    pub entry: Entry,
    /// For a checkpoint: what it covers and its signature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<Checkpoint>,
}

/// The gRPC response header in which a node names its audit record of a
/// streamed call, so that the caller has the id even when it cuts the
/// stream before its summary.
pub const ID_HEADER: &str = "yrd-audit-id";

/// A record's id, `<log name>-<seq>`, for spans and `query.end` records.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RecordId {
    /// The log's name (from its source, such as `node-310000-sh-1`).
    pub log: std::sync::Arc<str>,
    /// The record's seq.
    pub seq: u64,
}

impl fmt::Display for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.log, self.seq)
    }
}
