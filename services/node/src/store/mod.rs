//! The store seam: what the node asks of wherever a region keeps its data.
//!
//! The vocabulary is backend-neutral: a [`ScanPlan`] or an [`AggregatePlan`]
//! goes in (typed filter, sort columns, resume key, limit, columns, all
//! named by field index into the dataset's descriptor), typed cells come out.
//! No user text and no refused field ever reaches a store: plans are built
//! from checked queries and the policy stage's permit.
//!
//! Backends are modules ([`sqlite`]; PostgreSQL later) and a variant of
//! [`StoreConfig`]; [`open`] is the one place that picks one. Every backend
//! runs the same [`conformance`] suite.

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod sqlite;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use futures::future::BoxFuture;
use serde::{Deserialize, Deserializer, Serialize};
use tokio::sync::mpsc;
use yrd_datasets::Cell;
use yrd_proto::mesh::{AggregateFunction, FilterExpr, Value};
use yrd_proto::schema::{DatasetSchema, Registry};
use yrd_query::QueryError;

use crate::error::NodeError;

/// One row's cells: `None` is NULL. Which fields they hold is said by the
/// plan that produced them.
pub type Cells = Vec<Option<Cell>>;

/// Rows to load: each is its 1-based input line and its cells in schema
/// order, or the rejection the caller's validation already made. The
/// iterator may block (it may read a file); backends drive it off the async
/// threads.
pub type RowSource = Box<dyn Iterator<Item = Result<(u64, Cells), Rejection>> + Send>;

/// The receiving end of a scan: batches of rows, each row's cells aligned
/// with [`ScanPlan::columns`]. Bounded: a slow consumer slows the store.
/// Dropping it stops the scan.
pub type RowReceiver = mpsc::Receiver<Result<Vec<Cells>, StoreError>>;

/// A region's store, as the node uses it. Object safe, so the node holds an
/// `Arc<dyn Store>` chosen by configuration; every method is async-friendly
/// (a blocking backend does its work on `spawn_blocking`).
pub trait Store: Send + Sync + std::fmt::Debug {
    /// The datasets this store holds.
    fn registry(&self) -> &'static Registry;

    /// The backend's name for telemetry (`db.system`), such as `sqlite`.
    fn system(&self) -> &'static str;

    /// Row counts and freshness of every dataset, ordered by dataset id.
    fn stats(&self) -> BoxFuture<'_, Result<Vec<(String, DatasetStats)>, StoreError>>;

    /// Writes rows of one dataset all or nothing: every row, or none when
    /// any is rejected (by the caller's validation, given as `Err`, or by the
    /// store, for a duplicate primary key). Every rejection is counted
    /// ([`LoadOutcome::reject`]): the first `options.max_rejections_shown`
    /// kept in full, the rest only by cause, so memory does not grow with
    /// the number of bad rows. With `options.replace`, the dataset's
    /// existing rows go in the same transaction.
    fn load(
        &self,
        schema: Arc<DatasetSchema>,
        options: LoadOptions,
        rows: RowSource,
    ) -> BoxFuture<'_, Result<LoadOutcome, StoreError>>;

    /// Starts a scan. Rows arrive in `plan.order` order, strictly after
    /// `plan.after`, at most `plan.limit` of them, in batches of at most
    /// `plan.batch_rows` rows and about `plan.batch_bytes` bytes of values.
    /// A row whose values alone exceed `plan.batch_bytes` ends the scan with
    /// [`StoreError::RowTooLarge`], read but never copied. The scan stops
    /// soon after the receiver is dropped or `deadline` passes (then the
    /// last item is [`StoreError::DeadlineExceeded`]).
    fn scan(&self, plan: ScanPlan, deadline: Instant) -> BoxFuture<'_, Result<Scan, StoreError>>;

    /// Runs an aggregate: at most `plan.limit` groups, in group-key order.
    /// Dropping the future stops the work, as does the deadline.
    fn aggregate(&self, plan: AggregatePlan, deadline: Instant) -> BoxFuture<'_, Result<Aggregated, StoreError>>;
}

/// A started scan.
#[derive(Debug)]
pub struct Scan {
    /// The statement's shape, for the store span: placeholders, never values.
    pub statement: String,
    /// The rows.
    pub rows: RowReceiver,
}

/// A finished aggregate.
#[derive(Debug, Clone, PartialEq)]
pub struct Aggregated {
    /// The statement's shape, for the store span: placeholders, never values.
    pub statement: String,
    /// The groups, ordered by their keys.
    pub groups: Vec<GroupCells>,
}

/// One sort key: a field index and its direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SortColumn {
    /// Index into the schema's fields.
    pub field: usize,
    /// Descending.
    pub descending: bool,
}

impl SortColumn {
    /// Field `field`, ascending.
    pub const fn asc(field: usize) -> Self {
        Self {
            field,
            descending: false,
        }
    }

    /// Field `field`, descending.
    pub const fn desc(field: usize) -> Self {
        Self {
            field,
            descending: true,
        }
    }
}

/// What to read for one page of a query.
#[derive(Debug, Clone)]
pub struct ScanPlan {
    /// The dataset.
    pub schema: Arc<DatasetSchema>,
    /// Rows to keep, with any row scope of the permit already ANDed in.
    pub filter: Option<FilterExpr>,
    /// Sort columns, the primary key last, so the order is total.
    pub order: Vec<SortColumn>,
    /// Resume strictly after these key values, one per sort column.
    pub after: Option<Vec<Value>>,
    /// Most rows to return.
    pub limit: u64,
    /// Field indexes to read, in the order of each row's cells; a field may
    /// appear more than once.
    pub columns: Vec<usize>,
    /// Most rows per batch sent to the receiver (at least 1).
    pub batch_rows: usize,
    /// Most bytes of values per batch (`query.max_batch_bytes`): a batch is
    /// cut before a row that would take it past this, and a single row
    /// larger than this is refused with [`StoreError::RowTooLarge`].
    pub batch_bytes: usize,
}

/// What to compute for an aggregate.
#[derive(Debug, Clone)]
pub struct AggregatePlan {
    /// The dataset.
    pub schema: Arc<DatasetSchema>,
    /// Rows to aggregate, with any row scope already ANDed in.
    pub filter: Option<FilterExpr>,
    /// Field indexes to group by; none gives one group of every row.
    pub group_by: Vec<usize>,
    /// Metrics: a function and its field (`None` for `count(*)`).
    pub metrics: Vec<(AggregateFunction, Option<usize>)>,
    /// Most groups to return.
    pub limit: u64,
}

/// One group of an aggregate.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupCells {
    /// The group's key cells, aligned with `group_by`.
    pub keys: Cells,
    /// One partial per metric, aligned with `metrics`.
    pub metrics: Vec<Partial>,
}

/// The mergeable partial of one metric over one group.
#[derive(Debug, Clone, PartialEq)]
pub struct Partial {
    /// Non-null values (rows, for `count(*)`).
    pub count: u64,
    /// Sum of the values (0 for a non-numeric field or `count(*)`).
    pub sum: f64,
    /// Smallest value, if any (none for `count(*)`).
    pub min: Option<Cell>,
    /// Largest value, if any (none for `count(*)`).
    pub max: Option<Cell>,
}

/// A rejected input row: its line number and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// 1-based physical line of the input where the row starts (for CSV,
    /// the header is line 1).
    pub line: u64,
    /// Why the row was rejected; never holds a personal or secret value.
    pub reason: String,
    /// What kinds of problem, without values, for counting: a field and
    /// the rule it broke (`address: max_length`) or a rule of the row as a
    /// whole (`csv`, `duplicate_key`). A cause is counted once a row,
    /// however often the row breaks it.
    pub causes: Vec<String>,
}

impl Rejection {
    /// A row rejected for one cause.
    pub fn new(line: u64, cause: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            line,
            reason: reason.into(),
            causes: vec![cause.into()],
        }
    }
}

/// Rejection causes counted apart in a [`LoadOutcome`]; causes past these
/// are counted under [`OTHER_CAUSES`]. Causes come from a dataset's fields
/// and a fixed set of rules, so this is rarely reached; it bounds memory
/// whatever the input.
pub const MAX_CAUSES: usize = 256;

/// The cause rejections are counted under past [`MAX_CAUSES`].
pub const OTHER_CAUSES: &str = "(other causes)";

/// How a load runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadOptions {
    /// Delete the dataset's rows in the same transaction (demo data).
    pub replace: bool,
    /// Rejections kept in full (`import.max_rejections_shown`); the rest
    /// are only counted.
    pub max_rejections_shown: usize,
}

impl LoadOptions {
    /// Appending, with the default number of rejections shown.
    pub fn append() -> Self {
        Self {
            replace: false,
            max_rejections_shown: crate::import::DEFAULT_MAX_REJECTIONS_SHOWN,
        }
    }

    /// Replacing, with the default number of rejections shown.
    pub fn replace() -> Self {
        Self {
            replace: true,
            ..Self::append()
        }
    }
}

/// The outcome of a load: rows written, or the rejections (the first few in
/// full, all of them counted) and nothing written.
#[derive(Debug, Default)]
pub struct LoadOutcome {
    /// Rows written (0 when any row was rejected).
    pub inserted: u64,
    /// The first rejected rows, in input order, at most the load's
    /// `max_rejections_shown`; when not empty, the load was rolled back.
    pub rejected: Vec<Rejection>,
    /// Rows rejected in all.
    pub rejected_rows: u64,
    /// Rejected rows per cause ([`Rejection::causes`]): a row with two
    /// causes counts once under each, and a row that breaks one rule many
    /// times (many unknown fields, say) counts once under it.
    pub causes: BTreeMap<String, u64>,
}

impl LoadOutcome {
    /// Counts a rejection, keeping it in full while fewer than `max_shown`
    /// are kept. Each of the row's causes is counted once, even if it is
    /// listed more than once, so [`Self::causes`] counts rows. Memory
    /// stays bounded by `max_shown`, [`MAX_CAUSES`] and the size of each
    /// kept rejection (the importer's are bounded by
    /// [`crate::import::MAX_VIOLATIONS_SHOWN_PER_ROW`]).
    pub fn reject(&mut self, mut rejection: Rejection, max_shown: usize) {
        self.rejected_rows += 1;
        let mut counted: BTreeSet<&str> = BTreeSet::new();
        let mut other_counted = false;
        for cause in &rejection.causes {
            if !counted.insert(cause.as_str()) {
                continue;
            }
            if let Some(n) = self.causes.get_mut(cause) {
                *n += 1;
            } else if self.causes.len() < MAX_CAUSES {
                self.causes.insert(cause.clone(), 1);
            } else if !other_counted {
                // The row counts once under the other causes, too.
                other_counted = true;
                *self.causes.entry(OTHER_CAUSES.to_owned()).or_default() += 1;
            }
        }
        let distinct = counted.len();
        if self.rejected.len() < max_shown {
            if distinct < rejection.causes.len() {
                let mut seen = BTreeSet::new();
                rejection.causes.retain(|c| seen.insert(c.clone()));
            }
            self.rejected.push(rejection);
        }
    }

    /// Whether any row was rejected (and so nothing was written).
    pub fn is_rejected(&self) -> bool {
        self.rejected_rows > 0
    }
}

/// A dataset's size and freshness in this store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DatasetStats {
    /// Rows held.
    pub rows: u64,
    /// When the data last changed, if ever.
    pub updated_at: Option<SystemTime>,
}

/// What a store can fail with, whatever the backend. Messages name
/// parameters, statements and causes, never a bound value.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The plan cannot be expressed (a literal of the wrong type, a resume
    /// key that does not match the order): the caller's fault.
    #[error(transparent)]
    Query(#[from] QueryError),
    /// The work ran past its deadline.
    #[error("deadline exceeded after {0} ms")]
    DeadlineExceeded(u128),
    /// The consumer went away.
    #[error("cancelled by the caller")]
    Cancelled,
    /// The store holds data for another schema or region.
    #[error("store {path}: {reason}")]
    Mismatch {
        /// The store's location.
        path: String,
        /// What does not match.
        reason: String,
    },
    /// The backend failed.
    #[error("{system}: {source}")]
    Backend {
        /// The backend, as in [`Store::system`].
        system: &'static str,
        /// The backend's own error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A blocking task failed to run to completion.
    #[error("store task failed: {0}")]
    Task(String),
    /// A stored row is larger than one response may carry, so it cannot
    /// be served: data loaded before the import limits existed, or written
    /// around them. Names the row by its primary key (never personal).
    #[error(
        "dataset {dataset}: the row with {key} holds {bytes} bytes, more than one \
         response may carry (query.max_batch_bytes = {limit}); this region cannot serve it \
         until it is re-imported within import.max_row_bytes"
    )]
    RowTooLarge {
        /// The dataset.
        dataset: String,
        /// The row's primary key, as `field = value`, shortened if long.
        key: String,
        /// The row's size: its values as stored, or its encoding.
        bytes: u64,
        /// The limit, `query.max_batch_bytes`.
        limit: u64,
    },
}

/// Longest primary-key value quoted in full in an error, in characters.
const KEY_SHOWN_CHARS: usize = 64;

/// A row's primary key for an error: `field = value` pairs, each value cut
/// to a few dozen characters (`full_bytes` is its whole length). Primary-key
/// fields are sortable, so never personal or secret: safe to name.
pub fn describe_key<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str, usize)>) -> String {
    pairs
        .into_iter()
        .map(|(field, value, full_bytes)| {
            let shown: String = value.chars().take(KEY_SHOWN_CHARS).collect();
            if shown.len() < full_bytes {
                format!("{field} = {shown}... ({full_bytes} bytes)")
            } else {
                format!("{field} = {shown}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Which store a node uses and how: `[store] kind = "sqlite"` and the
/// backend's keys. Without `kind`, the store is SQLite, so configs written
/// before there was a choice still load.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StoreConfig {
    /// The embedded SQLite store.
    Sqlite(sqlite::SqliteConfig),
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self::Sqlite(sqlite::SqliteConfig::default())
    }
}

impl<'de> Deserialize<'de> for StoreConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        // An internally tagged enum whose tag may be left out: read the
        // table, take `kind` (SQLite when absent), hand the rest to the
        // variant, whose own `deny_unknown_fields` names a stray key.
        let mut table = toml::Table::deserialize(deserializer)?;
        let kind = match table.remove("kind") {
            None => "sqlite".to_owned(),
            Some(toml::Value::String(s)) => s,
            Some(other) => return Err(D::Error::custom(format!("kind: expected a string, found {other}"))),
        };
        match kind.as_str() {
            "sqlite" => sqlite::SqliteConfig::deserialize(toml::Value::Table(table))
                .map(Self::Sqlite)
                .map_err(D::Error::custom),
            other => Err(D::Error::unknown_variant(other, &["sqlite"])),
        }
    }
}

impl StoreConfig {
    /// Resolves relative paths against `base` (the config file's folder).
    pub fn resolve(&mut self, base: &std::path::Path) {
        match self {
            Self::Sqlite(c) => {
                if c.path.is_relative() {
                    c.path = base.join(&c.path);
                }
            }
        }
    }

    /// Applies `YRD_STORE_PATH`: the SQLite file.
    pub fn set_path(&mut self, path: std::path::PathBuf) {
        match self {
            Self::Sqlite(c) => c.path = path,
        }
    }
}

/// Opens (creating if needed) the configured store for `region`.
pub async fn open(config: &StoreConfig, region: &str) -> Result<Arc<dyn Store>, NodeError> {
    match config {
        StoreConfig::Sqlite(c) => Ok(Arc::new(sqlite::SqliteStore::open_async(c.clone(), region).await?)),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::NodeConfig;

    fn store_of(text: &str) -> Result<StoreConfig, String> {
        NodeConfig::parse(&format!("region = \"320000\"\n{text}"), "t.toml")
            .map(|c| c.store)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_cause_is_counted_once_a_row() {
        let mut outcome = LoadOutcome::default();
        let causes = |list: &[&str]| list.iter().map(|c| (*c).to_owned()).collect::<Vec<_>>();
        outcome.reject(
            Rejection {
                line: 1,
                reason: "many unknown fields".into(),
                causes: causes(&["unknown_field", "s: type", "unknown_field", "unknown_field"]),
            },
            10,
        );
        outcome.reject(Rejection::new(2, "unknown_field", "one unknown field"), 10);
        let counted: Vec<(&str, u64)> = outcome.causes.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(counted, [("s: type", 1), ("unknown_field", 2)]);
        assert_eq!(outcome.rejected_rows, 2);
        assert_eq!(outcome.rejected[0].causes, ["unknown_field", "s: type"]);
    }

    #[test]
    fn the_store_kind_defaults_to_sqlite() {
        let path = |c: StoreConfig| {
            let StoreConfig::Sqlite(s) = c;
            s.path
        };
        assert_eq!(store_of("").unwrap(), StoreConfig::default());
        assert_eq!(
            path(store_of("[store]\npath = \"a.sqlite\"\n").unwrap()),
            Path::new("a.sqlite")
        );
        assert_eq!(
            path(store_of("[store]\nkind = \"sqlite\"\npath = \"b.sqlite\"\n").unwrap()),
            Path::new("b.sqlite")
        );
    }

    #[test]
    fn an_unknown_kind_or_key_is_named() {
        let e = store_of("[store]\nkind = \"postgres\"\n").unwrap_err();
        assert!(e.contains("postgres") && e.contains("sqlite"), "{e}");
        let e = store_of("[store]\nkind = \"sqlite\"\nfile = \"x\"\n").unwrap_err();
        assert!(e.contains("file"), "{e}");
        let e = store_of("[store]\nkind = 3\n").unwrap_err();
        assert!(e.contains("kind"), "{e}");
    }

    #[test]
    fn the_store_config_serializes_with_its_kind() {
        let text = toml::to_string(&StoreConfig::default()).unwrap();
        assert!(text.contains("kind = \"sqlite\""), "{text}");
        let back: StoreConfig = toml::from_str(&text).unwrap();
        assert_eq!(back, StoreConfig::default());
    }
}
