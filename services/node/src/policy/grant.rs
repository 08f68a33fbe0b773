//! Grants: who may read what of a dataset, how each field is shown, which
//! rows, for which purposes and how often. Grants come from the agency's
//! policy file and from access requests its operators approved; both are
//! this one type, so the policy stage evaluates them the same way.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use yrd_proto::mesh::FilterExpr;

/// Where a grant came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The agency's policy file (the grant's `id` key there).
    File,
    /// An access request its operators approved (the request id).
    Request(String),
}

/// Whom a grant is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Grantee {
    /// One application, by its name (`spiffe://<td>/app/<name>`).
    App(String),
    /// A group of applications defined in the policy file.
    Group(String),
}

/// Which fields a grant covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fields {
    /// Every field of the dataset (not-shared fields stay refused).
    All,
    /// These fields only.
    Named(Vec<String>),
}

impl Fields {
    /// Whether `field` is covered.
    pub fn covers(&self, field: &str) -> bool {
        match self {
            Self::All => true,
            Self::Named(names) => names.iter().any(|n| n == field),
        }
    }
}

/// How a grant shows one named field, overriding its default mask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shown {
    /// As stored.
    Plain,
    /// With this mask (a name of the mask vocabulary, such as `keep(6,4)`).
    Mask(String),
}

/// One grant, in force between `not_before` and `not_after`.
#[derive(Debug, Clone, PartialEq)]
pub struct Grant {
    /// The grant's id, unique in the region; audit and Explain name it.
    pub id: String,
    /// Where it came from.
    pub origin: Origin,
    /// Whom it is for.
    pub grantees: Vec<Grantee>,
    /// Dataset ids it covers.
    pub datasets: Vec<String>,
    /// Fields it covers.
    pub fields: Fields,
    /// Per-field treatment overriding the default mask; fields not named
    /// here are shown with their default mask (plain when they have none).
    pub shown: BTreeMap<String, Shown>,
    /// Rows the grant covers, ANDed around the user's whole filter.
    pub row_scope: Option<FilterExpr>,
    /// The row scope as the grant's author wrote it.
    pub row_scope_text: Option<String>,
    /// Purposes allowed; empty allows any declared purpose (or none).
    pub purposes: Vec<String>,
    /// Not valid before.
    pub not_before: Option<SystemTime>,
    /// Not valid after.
    pub not_after: Option<SystemTime>,
    /// Queries per minute, per application.
    pub rate_per_minute: Option<u32>,
    /// Rows per query.
    pub max_rows: Option<u64>,
    /// Queries in all, per application, over the grant's life.
    pub max_uses: Option<u64>,
    /// The application may aggregate but not read rows.
    pub aggregate_only: bool,
    /// Aggregates leave out groups of fewer rows (overrides the dataset's).
    pub min_group_size: Option<u32>,
}

/// A source of grants whose set changes while the node runs (approved and
/// revoked access requests). The policy stage asks for the current set on
/// every request, so a revocation takes effect on the next one.
pub trait GrantSource: Send + Sync + std::fmt::Debug {
    /// The grants in force now, from this source.
    fn grants(&self) -> Arc<Vec<Grant>>;
}

/// Counts the uses of grants that have a `max_uses`, per application, where
/// they survive a restart (the node's own store).
pub trait UseLedger: Send + Sync + std::fmt::Debug {
    /// Records one use of `grant` by `subject` (a SPIFFE URI) if fewer than
    /// `max` are recorded, and says whether it did: `false` means used up.
    fn take<'a>(
        &'a self,
        grant: &'a str,
        subject: &'a str,
        max: u64,
    ) -> futures::future::BoxFuture<'a, Result<bool, crate::NodeError>>;
}
