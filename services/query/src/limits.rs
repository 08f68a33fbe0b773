//! Configurable limits on queries. Each is named in the error that reports
//! it, by the key used in configuration files.

use serde::{Deserialize, Serialize};

use crate::QueryError;

/// Limits a server applies to every query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Longest filter text, in bytes.
    pub max_filter_length: usize,
    /// Deepest nesting of AND / OR / NOT / parentheses in a filter.
    pub max_filter_depth: usize,
    /// Most comparisons in one filter.
    pub max_filter_terms: usize,
    /// Largest page size a caller may ask for.
    pub max_page_size: u32,
    /// Page size when the caller asks for none.
    pub default_page_size: u32,
    /// Most order_by keys.
    pub max_order_keys: usize,
    /// Most fields in a projection.
    pub max_fields: usize,
    /// Most group_by fields.
    pub max_group_by: usize,
    /// Most metrics in one aggregate.
    pub max_metrics: usize,
    /// Most groups one aggregate may return.
    pub max_groups: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_filter_length: 4096,
            max_filter_depth: 16,
            max_filter_terms: 128,
            max_page_size: 5000,
            default_page_size: 100,
            max_order_keys: 8,
            max_fields: 64,
            max_group_by: 4,
            max_metrics: 16,
            max_groups: 10_000,
        }
    }
}

impl Limits {
    /// Checks `actual <= max`, naming the limit otherwise.
    pub fn check(param: &'static str, limit: &'static str, max: usize, actual: usize) -> Result<(), QueryError> {
        if actual > max {
            return Err(QueryError::Limit {
                param,
                limit,
                max: max as u64,
                actual: actual as u64,
            });
        }
        Ok(())
    }

    /// The page size to use for a requested one: the default for 0, an
    /// error for a negative size or one over `max_page_size`.
    pub fn page_size(&self, requested: i32) -> Result<u32, QueryError> {
        match requested {
            0 => Ok(self.default_page_size.min(self.max_page_size)),
            n if n < 0 => Err(QueryError::Invalid {
                param: "page_size",
                message: format!("must not be negative, got {n}"),
            }),
            n => {
                let n = n.unsigned_abs();
                Self::check("page_size", "max_page_size", self.max_page_size as usize, n as usize)?;
                Ok(n)
            }
        }
    }
}
