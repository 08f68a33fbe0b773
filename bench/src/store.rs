//! The store alone: the node's scan and aggregate run by the harness
//! straight against the node's SQLite file, read-only, without the node's
//! policy stage, encoder or transport. What the node adds is measured
//! against this.

use std::path::Path;

use anyhow::Context;
use rusqlite::{Connection, OpenFlags};

use crate::client::Groups;

fn open(path: &Path) -> anyhow::Result<Connection> {
    Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .with_context(|| format!("opening {}", path.display()))
}

/// Reads every enterprise row, every column, in primary-key order (the
/// node's full scan); returns the rows read.
pub fn scan(path: &Path) -> anyhow::Result<u64> {
    let db = open(path)?;
    let mut stmt = db.prepare("SELECT * FROM ds_enterprise ORDER BY credit_code")?;
    let columns = stmt.column_count();
    let mut rows = stmt.query([])?;
    let mut n = 0u64;
    let mut bytes = 0usize;
    while let Some(row) = rows.next()? {
        for i in 0..columns {
            // Touch every value as the node's encoder must.
            bytes += match row.get_ref(i)? {
                rusqlite::types::ValueRef::Text(t) | rusqlite::types::ValueRef::Blob(t) => t.len(),
                rusqlite::types::ValueRef::Null => 0,
                _ => 8,
            };
        }
        n += 1;
    }
    std::hint::black_box(bytes);
    Ok(n)
}

/// The harness's aggregate, grouped by region and industry, in SQL.
pub fn aggregate(path: &Path) -> anyhow::Result<Groups> {
    let db = open(path)?;
    let mut stmt = db.prepare(
        "SELECT region, industry, COUNT(*), SUM(registered_capital) FROM ds_enterprise GROUP BY region, industry",
    )?;
    let mut out = Groups::new();
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let count: i64 = row.get(2)?;
        let sum: Option<f64> = row.get(3)?;
        out.insert(
            (row.get(0)?, row.get(1)?),
            (u64::try_from(count).unwrap_or(0), sum.unwrap_or(0.0)),
        );
    }
    Ok(out)
}
