//! A row on its way into the store: one typed cell per column.

/// One value of a row, typed for its column. Dates are `Text` in
/// `YYYY-MM-DD` form; timestamps are whole seconds since the Unix epoch.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// A string or a date.
    Text(String),
    /// A 64-bit integer.
    Int(i64),
    /// A double.
    Real(f64),
    /// A boolean.
    Bool(bool),
    /// An instant, seconds since the Unix epoch.
    Time(i64),
}

impl Cell {
    /// The text, if this is a text cell.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Self::Text(s) => Some(s),
            _ => None,
        }
    }

    /// The number, if this is a numeric cell.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Self::Int(i) => Some(*i as f64),
            Self::Real(r) => Some(*r),
            _ => None,
        }
    }
}

/// A row produced by a demo generator: field names and cells, in any order.
pub type NamedRow = Vec<(&'static str, Cell)>;
