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

/// Hard upper bound of `limits.max_filter_depth`, enforced when a config is
/// loaded ([`Limits::validate`]) and again by the parser and the tree
/// checks, whatever a [`Limits`] value says. The parser recurses about four
/// frames per level and the walks over the typed tree one, so the deepest
/// tree this allows recurses in a small part of a 2 MiB thread stack even
/// in a debug build (measured by the `deepest_filters_fit_a_small_stack`
/// test).
pub const MAX_FILTER_DEPTH_BOUND: usize = 64;
/// Hard upper bound of `limits.max_filter_length`, in bytes: a filter is a
/// statement of what to select, not a data file (the parser holds four
/// bytes per character while it runs).
pub const MAX_FILTER_LENGTH_BOUND: usize = 1 << 20;
/// Hard upper bound of `limits.max_filter_terms`: each comparison binds up
/// to two SQL parameters, and SQLite allows 32,766 in one statement.
pub const MAX_FILTER_TERMS_BOUND: usize = 10_000;
/// Hard upper bound of `limits.max_page_size`, in rows.
pub const MAX_PAGE_SIZE_BOUND: u32 = 100_000;
/// Hard upper bound of `limits.max_order_keys`.
pub const MAX_ORDER_KEYS_BOUND: usize = 64;
/// Hard upper bound of `limits.max_fields`.
pub const MAX_FIELDS_BOUND: usize = 1024;
/// Hard upper bound of `limits.max_group_by`.
pub const MAX_GROUP_BY_BOUND: usize = 32;
/// Hard upper bound of `limits.max_metrics`.
pub const MAX_METRICS_BOUND: usize = 256;
/// Hard upper bound of `limits.max_groups`: the gateway merges every
/// region's groups in memory.
pub const MAX_GROUPS_BOUND: usize = 1_000_000;

/// A limit outside its bounds, found by [`Limits::validate`]: the key as
/// written in the configuration file and why it cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct InvalidLimit {
    /// The key, with the caller's prefix (such as `limits.max_filter_depth`).
    pub key: String,
    /// What is wrong, naming the bound and the value.
    pub reason: String,
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
    /// Most order_by keys, not counting the primary key's fields (every
    /// order ends with them).
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
    /// Checks that every limit is usable and within its hard bound, for a
    /// configuration file whose limits table has keys `key_prefix<name>`
    /// (`"limits."`). The first limit out of bounds is returned, naming its
    /// key, the bound and the value.
    pub fn validate(&self, key_prefix: &str) -> Result<(), InvalidLimit> {
        let err = |name: &str, reason: String| InvalidLimit {
            key: format!("{key_prefix}{name}"),
            reason,
        };
        let within = |name: &str, bound_name: &str, min: u64, max: u64, value: u64| {
            if (min..=max).contains(&value) {
                Ok(())
            } else {
                Err(err(
                    name,
                    format!("{value} is not in {min}..={max} (the hard bound {bound_name} = {max})"),
                ))
            }
        };
        let n = |v: usize| v as u64;
        within(
            "max_filter_length",
            "MAX_FILTER_LENGTH_BOUND",
            1,
            n(MAX_FILTER_LENGTH_BOUND),
            n(self.max_filter_length),
        )?;
        within(
            "max_filter_depth",
            "MAX_FILTER_DEPTH_BOUND",
            1,
            n(MAX_FILTER_DEPTH_BOUND),
            n(self.max_filter_depth),
        )?;
        within(
            "max_filter_terms",
            "MAX_FILTER_TERMS_BOUND",
            1,
            n(MAX_FILTER_TERMS_BOUND),
            n(self.max_filter_terms),
        )?;
        within(
            "max_page_size",
            "MAX_PAGE_SIZE_BOUND",
            1,
            u64::from(MAX_PAGE_SIZE_BOUND),
            u64::from(self.max_page_size),
        )?;
        if self.default_page_size == 0 || self.default_page_size > self.max_page_size {
            return Err(err(
                "default_page_size",
                format!(
                    "{} is not in 1..=max_page_size ({})",
                    self.default_page_size, self.max_page_size
                ),
            ));
        }
        within(
            "max_order_keys",
            "MAX_ORDER_KEYS_BOUND",
            0,
            n(MAX_ORDER_KEYS_BOUND),
            n(self.max_order_keys),
        )?;
        within(
            "max_fields",
            "MAX_FIELDS_BOUND",
            0,
            n(MAX_FIELDS_BOUND),
            n(self.max_fields),
        )?;
        within(
            "max_group_by",
            "MAX_GROUP_BY_BOUND",
            0,
            n(MAX_GROUP_BY_BOUND),
            n(self.max_group_by),
        )?;
        // Every aggregate has at least one metric (`count(*)` when none is
        // asked), so zero would refuse them all.
        within(
            "max_metrics",
            "MAX_METRICS_BOUND",
            1,
            n(MAX_METRICS_BOUND),
            n(self.max_metrics),
        )?;
        within(
            "max_groups",
            "MAX_GROUPS_BOUND",
            1,
            n(MAX_GROUPS_BOUND),
            n(self.max_groups),
        )?;
        Ok(())
    }

    /// The filter depth in force: `max_filter_depth`, but never more than
    /// [`MAX_FILTER_DEPTH_BOUND`], so that a [`Limits`] that skipped
    /// [`validate`](Self::validate) still cannot let a filter recurse
    /// without bound.
    pub fn filter_depth(&self) -> usize {
        self.max_filter_depth.min(MAX_FILTER_DEPTH_BOUND)
    }

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

#[cfg(test)]
mod validate_tests {
    use super::*;

    fn refused(limits: Limits) -> InvalidLimit {
        limits.validate("limits.").unwrap_err()
    }

    #[test]
    fn defaults_and_bounds_are_valid() {
        assert_eq!(Limits::default().validate("limits."), Ok(()));
        let at_bounds = Limits {
            max_filter_length: MAX_FILTER_LENGTH_BOUND,
            max_filter_depth: MAX_FILTER_DEPTH_BOUND,
            max_filter_terms: MAX_FILTER_TERMS_BOUND,
            max_page_size: MAX_PAGE_SIZE_BOUND,
            default_page_size: MAX_PAGE_SIZE_BOUND,
            max_order_keys: MAX_ORDER_KEYS_BOUND,
            max_fields: MAX_FIELDS_BOUND,
            max_group_by: MAX_GROUP_BY_BOUND,
            max_metrics: MAX_METRICS_BOUND,
            max_groups: MAX_GROUPS_BOUND,
        };
        assert_eq!(at_bounds.validate("limits."), Ok(()));
    }

    #[test]
    fn a_depth_over_the_bound_is_refused_naming_key_bound_and_value() {
        let e = refused(Limits {
            max_filter_depth: 2048,
            ..Limits::default()
        });
        assert_eq!(e.key, "limits.max_filter_depth");
        assert_eq!(
            e.to_string(),
            "limits.max_filter_depth: 2048 is not in 1..=64 (the hard bound MAX_FILTER_DEPTH_BOUND = 64)"
        );
        // Whatever a Limits says, the depth in force stays within the bound.
        let unchecked = Limits {
            max_filter_depth: 2048,
            ..Limits::default()
        };
        assert_eq!(unchecked.filter_depth(), MAX_FILTER_DEPTH_BOUND);
    }

    #[test]
    fn every_limit_is_checked() {
        let d = Limits::default;
        let cases: Vec<(Limits, &str)> = vec![
            (
                Limits {
                    max_filter_length: 0,
                    ..d()
                },
                "limits.max_filter_length",
            ),
            (
                Limits {
                    max_filter_length: MAX_FILTER_LENGTH_BOUND + 1,
                    ..d()
                },
                "limits.max_filter_length",
            ),
            (
                Limits {
                    max_filter_depth: 0,
                    ..d()
                },
                "limits.max_filter_depth",
            ),
            (
                Limits {
                    max_filter_terms: 0,
                    ..d()
                },
                "limits.max_filter_terms",
            ),
            (
                Limits {
                    max_filter_terms: MAX_FILTER_TERMS_BOUND + 1,
                    ..d()
                },
                "limits.max_filter_terms",
            ),
            (
                Limits {
                    max_page_size: 0,
                    ..d()
                },
                "limits.max_page_size",
            ),
            (
                Limits {
                    max_page_size: MAX_PAGE_SIZE_BOUND + 1,
                    default_page_size: 1,
                    ..d()
                },
                "limits.max_page_size",
            ),
            (
                Limits {
                    default_page_size: 0,
                    ..d()
                },
                "limits.default_page_size",
            ),
            (
                Limits {
                    default_page_size: 5001,
                    ..d()
                },
                "limits.default_page_size",
            ),
            (
                Limits {
                    max_order_keys: MAX_ORDER_KEYS_BOUND + 1,
                    ..d()
                },
                "limits.max_order_keys",
            ),
            (
                Limits {
                    max_fields: MAX_FIELDS_BOUND + 1,
                    ..d()
                },
                "limits.max_fields",
            ),
            (
                Limits {
                    max_group_by: MAX_GROUP_BY_BOUND + 1,
                    ..d()
                },
                "limits.max_group_by",
            ),
            (Limits { max_metrics: 0, ..d() }, "limits.max_metrics"),
            (Limits { max_groups: 0, ..d() }, "limits.max_groups"),
            (
                Limits {
                    max_groups: MAX_GROUPS_BOUND + 1,
                    ..d()
                },
                "limits.max_groups",
            ),
        ];
        for (limits, key) in cases {
            let e = refused(limits.clone());
            assert_eq!(e.key, key, "{limits:?}");
            assert!(e.reason.contains("is not in"), "{e}");
        }
        // The prefix is the caller's.
        let e = Limits { max_groups: 0, ..d() }.validate("").unwrap_err();
        assert_eq!(e.key, "max_groups");
    }
}
