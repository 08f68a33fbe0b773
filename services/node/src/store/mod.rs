//! The embedded SQLite store. Tables and indexes are derived from the
//! dataset descriptors. Every method here blocks: call them from
//! `tokio::task::spawn_blocking`, never on the async runtime.

pub mod encode;
pub mod sql;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OpenFlags, ffi::ErrorCode};
use yrd_datasets::Cell;
use yrd_proto::schema::{DatasetSchema, Registry};

use crate::error::NodeError;

/// How long a connection waits for a lock held by another.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// A rejected input row: its line number and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// 1-based line number in the input (for CSV, the header is line 1).
    pub line: u64,
    /// Why the row was rejected; never holds a personal or secret value.
    pub reason: String,
}

/// The outcome of a load: rows written, or every rejection and nothing
/// written.
#[derive(Debug, Default)]
pub struct LoadOutcome {
    /// Rows written (0 when any row was rejected).
    pub inserted: u64,
    /// Rejected rows; when not empty, the load was rolled back.
    pub rejected: Vec<Rejection>,
}

/// A dataset's size and freshness in this store.
#[derive(Debug, Clone, Default)]
pub struct DatasetStats {
    /// Rows held.
    pub rows: u64,
    /// When the data last changed, if ever.
    pub updated_at: Option<SystemTime>,
}

/// The store of one region node.
#[derive(Debug, Clone)]
pub struct Store {
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
pub struct Reader {
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

impl Store {
    /// Opens (creating if needed) the store at `path` for `region`, with a
    /// table per standard dataset. A store made for another region or
    /// another schema is refused.
    pub fn open(path: &Path, region: &str, max_idle: usize) -> Result<Self, NodeError> {
        let registry = Registry::standard().map_err(|e| NodeError::Schema(e.to_string()))?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| NodeError::Io {
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
        let mismatch = |reason: String| NodeError::StoreMismatch {
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
            match existing {
                Some(d) if d != joined => {
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

    /// The datasets this store holds.
    pub fn registry(&self) -> &'static Registry {
        self.inner.registry
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    fn writer(&self) -> Result<Connection, NodeError> {
        let conn = Connection::open(&self.inner.path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        Ok(conn)
    }

    /// Borrows a read-only connection.
    pub fn reader(&self) -> Result<Reader, NodeError> {
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

    /// Row counts and freshness of every dataset.
    pub fn stats(&self) -> Result<Vec<(String, DatasetStats)>, NodeError> {
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

    /// Writes rows of one dataset in one transaction: all of them, or none
    /// when any is rejected (by the caller's validation, given as `Err`, or
    /// by the store, for a duplicate primary key). With `replace`, the
    /// dataset's existing rows are removed in the same transaction.
    pub fn load(
        &self,
        schema: &DatasetSchema,
        replace: bool,
        rows: &mut dyn Iterator<Item = Result<(u64, Vec<Option<Cell>>), Rejection>>,
    ) -> Result<LoadOutcome, NodeError> {
        let mut conn = self.writer()?;
        let tx = conn.transaction()?;
        if replace {
            tx.execute(&format!("DELETE FROM {}", sql::table(schema)), [])?;
        }
        let mut outcome = LoadOutcome::default();
        {
            let mut insert = tx.prepare(&sql::insert(schema))?;
            for row in rows {
                let (line, cells) = match row {
                    Ok(r) => r,
                    Err(rejection) => {
                        outcome.rejected.push(rejection);
                        continue;
                    }
                };
                let params = rusqlite::params_from_iter(cells.iter().map(cell_to_sql));
                match insert.execute(params) {
                    Ok(_) => outcome.inserted += 1,
                    Err(rusqlite::Error::SqliteFailure(e, _)) if e.code == ErrorCode::ConstraintViolation => {
                        outcome.rejected.push(Rejection {
                            line,
                            reason: duplicate_reason(schema, &cells),
                        });
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        if !outcome.rejected.is_empty() {
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

fn cell_to_sql(cell: &Option<Cell>) -> rusqlite::types::Value {
    use rusqlite::types::Value;
    match cell {
        None => Value::Null,
        Some(Cell::Text(s)) => Value::Text(s.clone()),
        Some(Cell::Int(i) | Cell::Time(i)) => Value::Integer(*i),
        Some(Cell::Real(r)) => Value::Real(*r),
        Some(Cell::Bool(b)) => Value::Integer(i64::from(*b)),
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
