//! The embedded SQLite store. Tables and indexes are derived from the
//! dataset descriptors. SQLite blocks, so every call does its work on
//! `tokio::task::spawn_blocking`; scans feed a bounded channel, and SQLite's
//! progress handler interrupts a long statement soon after the consumer
//! goes away or the deadline passes.

pub mod access;
pub mod sql;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;
use rusqlite::types::{Value as SqlValue, ValueRef};
use rusqlite::{Connection, OpenFlags, ffi::ErrorCode};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use yrd_datasets::Cell;
use yrd_proto::schema::{DatasetSchema, FieldType, Registry};

use super::{
    AggregatePlan, Aggregated, Cells, DatasetStats, GroupCells, LoadOptions, LoadOutcome, Partial, Rejection,
    RowSource, Scan, ScanPlan, Store, StoreError,
};

/// The backend's name in telemetry.
const SYSTEM: &str = "sqlite";

/// How long a connection waits for a lock held by another.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Batches buffered between the SQLite thread and the consumer: a slow
/// consumer slows the reader, it does not grow memory.
const SCAN_BUFFER: usize = 2;

/// SQLite virtual-machine steps between checks for cancellation.
const PROGRESS_STEPS: i32 = 4_000;

/// `[store] kind = "sqlite"`: where the database file is.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SqliteConfig {
    /// SQLite database file.
    pub path: PathBuf,
    /// Read connections kept open for reuse.
    pub max_idle_connections: usize,
}

impl Default for SqliteConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("node.sqlite"),
            max_idle_connections: 8,
        }
    }
}

/// What the SQLite backend can fail with.
#[derive(Debug, thiserror::Error)]
pub enum SqliteError {
    /// SQLite itself failed.
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    /// The database's folder could not be made.
    #[error("{path}: {source}")]
    Io {
        /// The folder.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The dataset descriptors are unusable (a build problem).
    #[error("dataset schemas: {0}")]
    Schema(String),
}

impl From<SqliteError> for StoreError {
    fn from(err: SqliteError) -> Self {
        StoreError::Backend {
            system: SYSTEM,
            source: Box::new(err),
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(err: rusqlite::Error) -> Self {
        SqliteError::from(err).into()
    }
}

/// The SQLite store of one region node; cheap to clone.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    registry: &'static Registry,
    idle: Mutex<Vec<Connection>>,
    max_idle: usize,
}

/// A read connection borrowed from the store; returned to it on drop.
struct Reader {
    conn: Option<Connection>,
    store: Arc<Inner>,
}

impl std::ops::Deref for Reader {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        // Present from creation until drop.
        self.conn
            .as_ref()
            .unwrap_or_else(|| unreachable!("reader used after drop"))
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            conn.progress_handler(0, None::<fn() -> bool>);
            if let Ok(mut idle) = self.store.idle.lock()
                && idle.len() < self.store.max_idle
            {
                idle.push(conn);
            }
        }
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path` for `region`, with a
    /// table per standard dataset. Blocks.
    pub fn open(path: &Path, region: &str, max_idle: usize) -> Result<Self, StoreError> {
        let registry = Registry::standard().map_err(|e| SqliteError::Schema(e.to_string()))?;
        Self::open_with(path, region, max_idle, registry)
    }

    /// Opens the store on a blocking thread.
    pub async fn open_async(config: SqliteConfig, region: &str) -> Result<Self, StoreError> {
        let region = region.to_owned();
        tokio::task::spawn_blocking(move || Self::open(&config.path, &region, config.max_idle_connections))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?
    }

    /// Opens the store at `path` for `region` with a table per dataset of
    /// `registry` (tests use their own datasets). A store made for another
    /// region or another schema is refused. Blocks.
    pub fn open_with(
        path: &Path,
        region: &str,
        max_idle: usize,
        registry: &'static Registry,
    ) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| SqliteError::Io {
                path: dir.display().to_string(),
                source,
            })?;
        }
        let store = Self {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                registry,
                idle: Mutex::new(Vec::new()),
                max_idle,
            }),
        };
        let mut conn = store.writer()?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        let tx = conn.transaction()?;
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS _yrd_store (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS _yrd_dataset (id TEXT PRIMARY KEY, ddl TEXT NOT NULL,
                 row_count INTEGER NOT NULL DEFAULT 0, updated_at INTEGER);",
        )?;
        let mismatch = |reason: String| StoreError::Mismatch {
            path: path.display().to_string(),
            reason,
        };
        let stored: Option<String> = tx
            .query_row("SELECT value FROM _yrd_store WHERE key = 'region'", [], |r| r.get(0))
            .ok();
        match stored {
            Some(r) if r != region => return Err(mismatch(format!("holds region {r}, not {region}"))),
            Some(_) => {}
            None => {
                tx.execute("INSERT INTO _yrd_store (key, value) VALUES ('region', ?)", [region])?;
            }
        }
        for schema in registry.datasets() {
            let ddl = sql::create_table(schema);
            let joined = ddl.join(";\n");
            let existing: Option<String> = tx
                .query_row("SELECT ddl FROM _yrd_dataset WHERE id = ?", [&schema.id], |r| r.get(0))
                .ok();
            // A store made before tables were WITHOUT ROWID serves as it is.
            let earlier = sql::create_table_with_rowid(schema).join(";\n");
            match existing {
                Some(d) if d != joined && d != earlier => {
                    return Err(mismatch(format!(
                        "dataset {} was created for another schema; export it and re-import into a new store",
                        schema.id
                    )));
                }
                Some(_) => {}
                None => {
                    for stmt in &ddl {
                        tx.execute(stmt, [])?;
                    }
                    tx.execute(
                        "INSERT INTO _yrd_dataset (id, ddl) VALUES (?, ?)",
                        [&schema.id, &joined],
                    )?;
                }
            }
        }
        tx.commit()?;
        Ok(store)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    fn writer(&self) -> Result<Connection, rusqlite::Error> {
        let conn = Connection::open(&self.inner.path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        Ok(conn)
    }

    fn reader(&self) -> Result<Reader, rusqlite::Error> {
        let pooled = self.inner.idle.lock().ok().and_then(|mut idle| idle.pop());
        let conn = match pooled {
            Some(c) => c,
            None => {
                let c = Connection::open_with_flags(
                    &self.inner.path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
                )?;
                c.busy_timeout(BUSY_TIMEOUT)?;
                c
            }
        };
        Ok(Reader {
            conn: Some(conn),
            store: self.inner.clone(),
        })
    }

    /// Runs `work` on a blocking thread inside the caller's span.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&SqliteStore) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let store = self.clone();
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || span.in_scope(|| work(&store)))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?
    }

    fn stats_blocking(&self) -> Result<Vec<(String, DatasetStats)>, StoreError> {
        let conn = self.reader()?;
        let mut stmt = conn.prepare_cached("SELECT id, row_count, updated_at FROM _yrd_dataset ORDER BY id")?;
        let rows = stmt.query_map([], |r| {
            let id: String = r.get(0)?;
            let rows: i64 = r.get(1)?;
            let updated: Option<i64> = r.get(2)?;
            Ok((
                id,
                DatasetStats {
                    rows: rows.max(0).unsigned_abs(),
                    updated_at: updated.map(|s| UNIX_EPOCH + Duration::from_secs(s.max(0).unsigned_abs())),
                },
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn load_blocking(
        &self,
        schema: &DatasetSchema,
        options: LoadOptions,
        rows: RowSource,
    ) -> Result<LoadOutcome, StoreError> {
        let mut conn = self.writer()?;
        let tx = conn.transaction()?;
        let shown = options.max_rejections_shown;
        if options.replace {
            tx.execute(&format!("DELETE FROM {}", sql::table(schema)), [])?;
        }
        let mut outcome = LoadOutcome::default();
        {
            let mut insert = tx.prepare(&sql::insert(schema))?;
            for row in rows {
                let (line, cells) = match row {
                    Ok(r) => r,
                    Err(rejection) => {
                        outcome.reject(rejection, shown);
                        continue;
                    }
                };
                let params = rusqlite::params_from_iter(cells.iter().map(cell_to_sql));
                match insert.execute(params) {
                    Ok(_) => outcome.inserted += 1,
                    Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == ErrorCode::ConstraintViolation => {
                        outcome.reject(
                            Rejection::new(line, "duplicate_key", duplicate_reason(schema, &cells)),
                            shown,
                        );
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        if outcome.is_rejected() {
            // Dropping the transaction rolls it back: nothing is half-written.
            outcome.inserted = 0;
            return Ok(outcome);
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let count: i64 = tx.query_row(&format!("SELECT COUNT(*) FROM {}", sql::table(schema)), [], |r| {
            r.get(0)
        })?;
        tx.execute(
            "UPDATE _yrd_dataset SET row_count = ?, updated_at = ? WHERE id = ?",
            rusqlite::params![count, now as i64, schema.id],
        )?;
        tx.commit()?;
        Ok(outcome)
    }
}

impl Store for SqliteStore {
    fn registry(&self) -> &'static Registry {
        self.inner.registry
    }

    fn system(&self) -> &'static str {
        SYSTEM
    }

    fn stats(&self) -> BoxFuture<'_, Result<Vec<(String, DatasetStats)>, StoreError>> {
        Box::pin(self.blocking(|s| s.stats_blocking()))
    }

    fn load(
        &self,
        schema: Arc<DatasetSchema>,
        options: LoadOptions,
        rows: RowSource,
    ) -> BoxFuture<'_, Result<LoadOutcome, StoreError>> {
        Box::pin(self.blocking(move |s| s.load_blocking(&schema, options, rows)))
    }

    fn scan(&self, plan: ScanPlan, deadline: Instant) -> BoxFuture<'_, Result<Scan, StoreError>> {
        Box::pin(async move {
            // Built here, so a plan the SQL cannot express fails before any
            // thread starts, and the span gets the statement at once.
            let statement = sql::select_page(
                &plan.schema,
                &plan.order,
                &plan.columns,
                plan.filter.as_ref(),
                plan.after.as_deref(),
                plan.limit,
            )?;
            let shape = statement.sql.clone();
            let (tx, rx) = mpsc::channel(SCAN_BUFFER);
            let store = self.clone();
            let span = tracing::Span::current();
            let handle = tokio::runtime::Handle::current();
            tokio::task::spawn_blocking(move || {
                let _entered = span.enter();
                if let Err(err) = store.scan_blocking(&plan, &statement, &tx, &handle, deadline) {
                    // The consumer tells an aborted scan from a finished one
                    // by this last item; it waits for it, or has gone (then
                    // the send fails and there is nobody to tell).
                    let _ = tx.blocking_send(Err(err));
                }
            });
            Ok(Scan {
                statement: shape,
                rows: rx,
            })
        })
    }

    fn aggregate(&self, plan: AggregatePlan, deadline: Instant) -> BoxFuture<'_, Result<Aggregated, StoreError>> {
        Box::pin(async move {
            let statement = sql::aggregate(
                &plan.schema,
                plan.filter.as_ref(),
                &plan.group_by,
                &plan.metrics,
                plan.limit,
            )?;
            // The waiting future holds the receiver: when the caller drops
            // it, the handler sees the sender closed and interrupts SQLite.
            let (tx, mut rx) = mpsc::channel(1);
            let store = self.clone();
            let span = tracing::Span::current();
            tokio::task::spawn_blocking(move || {
                let _entered = span.enter();
                let result = store.aggregate_blocking(&plan, statement, &tx, deadline);
                let _ = tx.try_send(result);
            });
            rx.recv()
                .await
                .unwrap_or_else(|| Err(StoreError::Task("the aggregate thread ended without an answer".into())))
        })
    }
}

impl SqliteStore {
    fn scan_blocking(
        &self,
        plan: &ScanPlan,
        statement: &sql::Statement,
        tx: &mpsc::Sender<Result<Vec<Cells>, StoreError>>,
        handle: &tokio::runtime::Handle,
        deadline: Instant,
    ) -> Result<(), StoreError> {
        let started = Instant::now();
        let conn = self.reader()?;
        let watched = tx.clone();
        // SQLite calls this every few thousand VM steps: a long sort or scan
        // stops soon after the consumer goes away or the deadline passes.
        conn.progress_handler(
            PROGRESS_STEPS,
            Some(move || watched.is_closed() || Instant::now() >= deadline),
        );
        let interrupted = |e| interruption(e, tx.is_closed(), started);
        let mut stmt = conn.prepare_cached(&statement.sql)?;
        let mut rows = stmt
            .query(rusqlite::params_from_iter(statement.params.iter()))
            .map_err(interrupted)?;
        let types: Vec<FieldType> = plan.columns.iter().map(|&f| plan.schema.fields[f].ty).collect();
        let batch_rows = plan.batch_rows.max(1);
        let batch_bytes = plan.batch_bytes.max(1);
        let mut batch = Vec::with_capacity(batch_rows);
        let mut bytes = 0usize;
        while let Some(row) = rows.next().map_err(interrupted)? {
            // Sized from SQLite's own buffers before anything is copied: a
            // row too large to send is never copied into cells.
            let mut size = 0usize;
            for i in 0..types.len() {
                size = size.saturating_add(value_size(row.get_ref(i)?));
            }
            if size > batch_bytes {
                return Err(row_too_large(plan, row, size));
            }
            if !batch.is_empty() && bytes + size > batch_bytes {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(batch_rows));
                send(tx, handle, full, deadline, started)?;
                bytes = 0;
            }
            let mut cells = Vec::with_capacity(types.len());
            for (i, ty) in types.iter().enumerate() {
                cells.push(to_cell(*ty, row.get_ref(i)?));
            }
            batch.push(cells);
            bytes += size;
            if batch.len() >= batch_rows {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(batch_rows));
                send(tx, handle, full, deadline, started)?;
                bytes = 0;
            }
        }
        if !batch.is_empty() {
            send(tx, handle, batch, deadline, started)?;
        }
        Ok(())
    }

    fn aggregate_blocking(
        &self,
        plan: &AggregatePlan,
        statement: sql::Statement,
        waiting: &mpsc::Sender<Result<Aggregated, StoreError>>,
        deadline: Instant,
    ) -> Result<Aggregated, StoreError> {
        let started = Instant::now();
        let conn = self.reader()?;
        let watched = waiting.clone();
        conn.progress_handler(
            PROGRESS_STEPS,
            Some(move || watched.is_closed() || Instant::now() >= deadline),
        );
        let interrupted = |e| interruption(e, waiting.is_closed(), started);
        let mut stmt = conn.prepare_cached(&statement.sql)?;
        let mut rows = stmt
            .query(rusqlite::params_from_iter(statement.params.iter()))
            .map_err(interrupted)?;
        let mut groups = Vec::new();
        while let Some(row) = rows.next().map_err(interrupted)? {
            let mut keys = Vec::with_capacity(plan.group_by.len());
            for (i, &f) in plan.group_by.iter().enumerate() {
                keys.push(to_cell(plan.schema.fields[f].ty, row.get_ref(i)?));
            }
            let mut metrics = Vec::with_capacity(plan.metrics.len());
            for (m, (_, field)) in plan.metrics.iter().enumerate() {
                let base = plan.group_by.len() + m * 4;
                let count: i64 = row.get(base)?;
                let sum: f64 = row.get(base + 1)?;
                let ty = field.map_or(FieldType::Int, |f| plan.schema.fields[f].ty);
                metrics.push(Partial {
                    count: count.max(0).unsigned_abs(),
                    sum,
                    min: to_cell(ty, row.get_ref(base + 2)?),
                    max: to_cell(ty, row.get_ref(base + 3)?),
                });
            }
            groups.push(GroupCells { keys, metrics });
        }
        Ok(Aggregated {
            statement: statement.sql,
            groups,
        })
    }
}

/// Sends a batch from the blocking thread, waiting for room in the channel
/// but never past the deadline.
fn send(
    tx: &mpsc::Sender<Result<Vec<Cells>, StoreError>>,
    handle: &tokio::runtime::Handle,
    batch: Vec<Cells>,
    deadline: Instant,
    started: Instant,
) -> Result<(), StoreError> {
    match handle.block_on(tokio::time::timeout_at(deadline.into(), tx.send(Ok(batch)))) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(StoreError::Cancelled),
        Err(_) => Err(StoreError::DeadlineExceeded(started.elapsed().as_millis())),
    }
}

/// The bytes a stored value takes: its text or blob, or 8 for a number.
fn value_size(v: ValueRef<'_>) -> usize {
    match v {
        ValueRef::Null => 0,
        ValueRef::Integer(_) | ValueRef::Real(_) => 8,
        ValueRef::Text(t) | ValueRef::Blob(t) => t.len(),
    }
}

/// The error for a row of `size` bytes, past the plan's batch budget,
/// naming it by its primary key (read from the sort columns, which end
/// with it), each value cut short.
fn row_too_large(plan: &ScanPlan, row: &rusqlite::Row<'_>, size: usize) -> StoreError {
    const PREFIX: usize = 256;
    let schema = &plan.schema;
    let values: Vec<(&str, String, usize)> = schema
        .primary_key
        .iter()
        .filter_map(|&f| {
            let i = plan.columns.iter().position(|&c| c == f)?;
            let (text, len) = match row.get_ref(i).ok()? {
                ValueRef::Text(t) => (String::from_utf8_lossy(&t[..t.len().min(PREFIX)]).into_owned(), t.len()),
                ValueRef::Integer(n) => (n.to_string(), 0),
                ValueRef::Real(r) => (r.to_string(), 0),
                ValueRef::Null => ("null".to_owned(), 0),
                ValueRef::Blob(b) => (format!("({} bytes of blob)", b.len()), 0),
            };
            Some((schema.fields[f].name.as_str(), text, len))
        })
        .collect();
    let key = super::describe_key(values.iter().map(|(f, v, n)| (*f, v.as_str(), *n)));
    StoreError::RowTooLarge {
        dataset: schema.id.clone(),
        key: if key.is_empty() {
            "an unknown key".to_owned()
        } else {
            key
        },
        bytes: size as u64,
        limit: plan.batch_bytes as u64,
    }
}

/// What an interrupted statement means: the consumer left, or time ran out.
fn interruption(err: rusqlite::Error, consumer_gone: bool, started: Instant) -> StoreError {
    match err {
        rusqlite::Error::SqliteFailure(e, _) if e.code == ErrorCode::OperationInterrupted => {
            if consumer_gone {
                StoreError::Cancelled
            } else {
                StoreError::DeadlineExceeded(started.elapsed().as_millis())
            }
        }
        other => other.into(),
    }
}

/// The typed cell of a stored value in a column of type `ty`.
fn to_cell(ty: FieldType, v: ValueRef<'_>) -> Option<Cell> {
    Some(match (ty, v) {
        (_, ValueRef::Null | ValueRef::Blob(_)) => return None,
        (_, ValueRef::Text(t)) => Cell::Text(String::from_utf8_lossy(t).into_owned()),
        (FieldType::Timestamp, ValueRef::Integer(s)) => Cell::Time(s),
        (FieldType::Bool, ValueRef::Integer(i)) => Cell::Bool(i != 0),
        (FieldType::Double, ValueRef::Integer(i)) => Cell::Real(i as f64),
        (_, ValueRef::Integer(i)) => Cell::Int(i),
        (_, ValueRef::Real(r)) => Cell::Real(r),
    })
}

fn cell_to_sql(cell: &Option<Cell>) -> SqlValue {
    match cell {
        None => SqlValue::Null,
        Some(Cell::Text(s)) => SqlValue::Text(s.clone()),
        Some(Cell::Int(i) | Cell::Time(i)) => SqlValue::Integer(*i),
        Some(Cell::Real(r)) => SqlValue::Real(*r),
        Some(Cell::Bool(b)) => SqlValue::Integer(i64::from(*b)),
    }
}

fn duplicate_reason(schema: &DatasetSchema, cells: &[Option<Cell>]) -> String {
    // Primary key fields are sortable, so never personal or secret: safe to name.
    let key: Vec<String> = schema
        .primary_key
        .iter()
        .map(|&i| {
            let v = match &cells[i] {
                Some(Cell::Text(s)) => s.clone(),
                Some(Cell::Int(n) | Cell::Time(n)) => n.to_string(),
                Some(Cell::Real(r)) => r.to_string(),
                Some(Cell::Bool(b)) => b.to_string(),
                None => "null".into(),
            };
            format!("{} = {v}", schema.fields[i].name)
        })
        .collect();
    format!(
        "duplicate primary key ({}): the store or an earlier line already has it",
        key.join(", ")
    )
}

#[cfg(test)]
mod tests {
    //! The SQLite store runs the whole conformance suite.

    use super::*;
    use crate::store::conformance;

    fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open_with(&dir.path().join("c.sqlite"), "320000", 2, conformance::registry()).unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn round_trip() {
        let (_dir, s) = store();
        conformance::round_trip(&s).await;
    }

    #[tokio::test]
    async fn a_store_made_before_without_rowid_still_opens_and_serves() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.sqlite");
        {
            // What an earlier version wrote: rowid tables, their DDL recorded.
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE _yrd_store (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                 CREATE TABLE _yrd_dataset (id TEXT PRIMARY KEY, ddl TEXT NOT NULL,
                   row_count INTEGER NOT NULL DEFAULT 0, updated_at INTEGER);
                 INSERT INTO _yrd_store (key, value) VALUES ('region', '320000');",
            )
            .unwrap();
            for schema in conformance::registry().datasets() {
                let ddl = sql::create_table_with_rowid(schema);
                for stmt in &ddl {
                    conn.execute(stmt, []).unwrap();
                }
                conn.execute(
                    "INSERT INTO _yrd_dataset (id, ddl) VALUES (?, ?)",
                    [&schema.id, &ddl.join(";\n")],
                )
                .unwrap();
            }
        }
        let s = SqliteStore::open_with(&path, "320000", 2, conformance::registry()).unwrap();
        conformance::round_trip(&s).await;
    }

    #[tokio::test]
    async fn paging_in_every_order() {
        let (_dir, s) = store();
        conformance::paging_in_every_order(&s).await;
    }

    #[tokio::test]
    async fn every_filter_operator() {
        let (_dir, s) = store();
        conformance::every_filter_operator(&s).await;
    }

    #[tokio::test]
    async fn nulls() {
        let (_dir, s) = store();
        conformance::nulls(&s).await;
    }

    #[tokio::test]
    async fn aggregates() {
        let (_dir, s) = store();
        conformance::aggregates(&s).await;
    }

    #[tokio::test]
    async fn loading_is_all_or_nothing() {
        let (_dir, s) = store();
        conformance::loading_is_all_or_nothing(&s).await;
    }

    #[tokio::test]
    async fn rejections_are_capped() {
        let (_dir, s) = store();
        conformance::rejections_are_capped(&s).await;
    }

    #[tokio::test]
    async fn batches_are_cut_by_bytes() {
        let (_dir, s) = store();
        conformance::batches_are_cut_by_bytes(&s).await;
    }

    #[tokio::test]
    async fn cancellation() {
        let (_dir, s) = store();
        conformance::cancellation(&s).await;
    }

    #[tokio::test]
    async fn deadline() {
        let (_dir, s) = store();
        conformance::deadline(&s).await;
    }

    #[tokio::test]
    async fn the_suite_runs_through_dyn_store() {
        let (_dir, s) = store();
        let store: Arc<dyn Store> = Arc::new(s);
        conformance::round_trip(store.as_ref()).await;
    }

    #[test]
    fn a_store_of_another_region_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.sqlite");
        SqliteStore::open_with(&path, "320000", 1, conformance::registry()).unwrap();
        let err = SqliteStore::open_with(&path, "310000", 1, conformance::registry()).unwrap_err();
        assert!(matches!(err, StoreError::Mismatch { .. }), "{err}");
    }
}
