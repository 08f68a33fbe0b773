//! Configurable limits on queries. Each is named in the error that reports
//! it, by the key used in configuration files.

use serde::{Deserialize, Serialize};

use crate::QueryError;

/// Longest purpose an application may declare, in characters: it travels
/// in every on-behalf-of assertion and into the audit, so it is a short
/// statement (such as `"cross-provincial licence check"`), not a document.
pub const MAX_PURPOSE_CHARS: usize = 200;

/// Checks a declared purpose: at most [`MAX_PURPOSE_CHARS`] characters,
/// no control characters (it is shown in listings and logs of its own).
/// Returns it trimmed; the error names `purpose` and, for the length, the
/// limit.
pub fn check_purpose(purpose: &str) -> Result<&str, QueryError> {
    let purpose = purpose.trim();
    let chars = purpose.chars().count();
    if chars > MAX_PURPOSE_CHARS {
        return Err(QueryError::Invalid {
            param: "purpose",
            message: format!("{chars} characters is longer than the limit MAX_PURPOSE_CHARS = {MAX_PURPOSE_CHARS}"),
        });
    }
    if let Some(at) = purpose.chars().position(char::is_control) {
        return Err(QueryError::Invalid {
            param: "purpose",
            message: format!("character {} is a control character", at + 1),
        });
    }
    Ok(purpose)
}

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

#[cfg(test)]
mod purpose_tests {
    use super::*;

    #[test]
    fn purposes_are_short_lines() {
        assert_eq!(check_purpose("  licence check "), Ok("licence check"));
        assert_eq!(check_purpose(&"办".repeat(200)).map(str::len), Ok(600));
        let e = check_purpose(&"x".repeat(201)).unwrap_err();
        assert_eq!(e.param(), "purpose");
        assert!(e.to_string().contains("MAX_PURPOSE_CHARS = 200"), "{e}");
        let e = check_purpose("a\nb").unwrap_err();
        assert_eq!(
            (e.param(), e.description()),
            ("purpose", "character 2 is a control character".to_owned())
        );
    }
}
