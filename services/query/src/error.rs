//! The one error type of the query language, and the one place it becomes
//! a gRPC status (`google.rpc.BadRequest` naming the parameter, `ErrorInfo`
//! naming the limit).
//!
//! A message quotes at most [`MAX_QUOTED_CHARS`] characters of any string
//! the caller sent (a name, a literal), and a free-text part at most
//! [`MAX_MESSAGE_CHARS`]: an error never echoes a request back whole.
//! [`QueryError::redacted`] is the form for spans and logs, which carries
//! no literal of a filter at all.

use std::borrow::Cow;
use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// Domain of the `google.rpc.ErrorInfo` details the mesh sends.
pub const ERROR_DOMAIN: &str = "mesh.yrd";

/// The most characters of a caller's string (a name, a literal) an error
/// message quotes; the rest is replaced by `…(N bytes)`.
pub const MAX_QUOTED_CHARS: usize = 64;

/// The most characters of the free-text part of an error message (a
/// syntax error's explanation, a reason).
pub const MAX_MESSAGE_CHARS: usize = 256;

/// `text` cut to `max` characters, with `…(N bytes)` (its whole length)
/// appended when anything was cut. Borrowed when it fits.
pub fn excerpt(text: &str, max: usize) -> Cow<'_, str> {
    match text.char_indices().nth(max) {
        None => Cow::Borrowed(text),
        Some((end, _)) => Cow::Owned(format!("{}…({} bytes)", &text[..end], text.len())),
    }
}

/// A caller's string as a message shows it: cut to [`MAX_QUOTED_CHARS`].
fn shown(text: &str) -> Cow<'_, str> {
    excerpt(text, MAX_QUOTED_CHARS)
}

/// A caller's string quoted (`"..."`, escapes as Rust writes them), cut
/// to [`MAX_QUOTED_CHARS`] first.
fn quoted(text: &str) -> String {
    quoted_excerpt(text, MAX_QUOTED_CHARS)
}

/// `text` quoted (`"..."`, escapes as Rust writes them, so no control
/// character is left raw), cut to `max` characters first, with `…(N
/// bytes)` (its whole length) after the quotes when anything was cut.
pub fn quoted_excerpt(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => format!("{text:?}"),
        Some((end, _)) => format!("{:?}…({} bytes)", &text[..end], text.len()),
    }
}

/// A free-text part of a message, cut to [`MAX_MESSAGE_CHARS`].
fn told(text: &str) -> Cow<'_, str> {
    excerpt(text, MAX_MESSAGE_CHARS)
}

/// How an error is reported to a caller: the gRPC code it maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is malformed (`INVALID_ARGUMENT`).
    InvalidArgument,
    /// The dataset does not exist (`NOT_FOUND`).
    NotFound,
    /// A configured limit was exceeded (`RESOURCE_EXHAUSTED`).
    ResourceExhausted,
}

/// A problem with a query. Each names the request parameter at fault
/// (`filter`, `order_by`, `page_size`, ...) so it can be reported as a
/// `google.rpc.BadRequest` field violation.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QueryError {
    /// The text does not parse.
    #[error("{param}: syntax error at character {position}: {}", told(message))]
    Syntax {
        /// The parameter.
        param: &'static str,
        /// 1-based character position of the problem.
        position: usize,
        /// What was wrong.
        message: String,
    },
    /// The dataset does not exist.
    #[error("dataset {} does not exist", quoted(dataset))]
    UnknownDataset {
        /// The requested id.
        dataset: String,
    },
    /// A field name is not in the dataset.
    #[error("{param}: dataset {} has no field {}", shown(dataset), quoted(field))]
    UnknownField {
        /// The parameter.
        param: &'static str,
        /// The dataset.
        dataset: String,
        /// The field named.
        field: String,
    },
    /// A field may not be used this way.
    #[error("{param}: field {} {}", shown(field), told(reason))]
    FieldNotAllowed {
        /// The parameter.
        param: &'static str,
        /// The field.
        field: String,
        /// Why, such as "may not be filtered".
        reason: String,
    },
    /// A literal does not fit the field's type.
    #[error(
        "{param}: field {} is a {expected}, but the value {} is not",
        shown(field),
        shown(found)
    )]
    TypeMismatch {
        /// The parameter.
        param: &'static str,
        /// The field.
        field: String,
        /// The field's type name.
        expected: &'static str,
        /// The offending literal, as written.
        found: String,
    },
    /// A configured limit was exceeded.
    #[error("{param}: {actual} exceeds the limit {limit} = {max}")]
    Limit {
        /// The parameter.
        param: &'static str,
        /// The limit's configuration name, such as `max_filter_length`.
        limit: &'static str,
        /// The configured maximum.
        max: u64,
        /// The value found.
        actual: u64,
    },
    /// The page token is not valid for this query.
    #[error("page_token: {}", told(reason))]
    PageToken {
        /// Why (expired, tampered with, for another query, ...).
        reason: String,
    },
    /// Another malformed parameter.
    #[error("{param}: {}", told(message))]
    Invalid {
        /// The parameter.
        param: &'static str,
        /// What is wrong.
        message: String,
    },
}

impl QueryError {
    /// The request parameter at fault (`dataset` for an unknown dataset).
    pub fn param(&self) -> &'static str {
        match self {
            Self::Syntax { param, .. }
            | Self::UnknownField { param, .. }
            | Self::FieldNotAllowed { param, .. }
            | Self::TypeMismatch { param, .. }
            | Self::Limit { param, .. }
            | Self::Invalid { param, .. } => param,
            Self::UnknownDataset { .. } => "dataset",
            Self::PageToken { .. } => "page_token",
        }
    }

    /// The same error, naming `param` as the parameter at fault: for a
    /// filter checked under another name (an access request's
    /// `row_scope_expr`, a grant's row scope). Errors that name no
    /// parameter of their own (an unknown dataset, a page token) are
    /// returned unchanged.
    pub fn for_param(mut self, param: &'static str) -> Self {
        match &mut self {
            Self::Syntax { param: p, .. }
            | Self::UnknownField { param: p, .. }
            | Self::FieldNotAllowed { param: p, .. }
            | Self::TypeMismatch { param: p, .. }
            | Self::Limit { param: p, .. }
            | Self::Invalid { param: p, .. } => *p = param,
            Self::UnknownDataset { .. } | Self::PageToken { .. } => {}
        }
        self
    }

    /// The gRPC code family of the error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::UnknownDataset { .. } => ErrorKind::NotFound,
            Self::Limit { .. } => ErrorKind::ResourceExhausted,
            _ => ErrorKind::InvalidArgument,
        }
    }

    /// The message without the leading parameter name, for a field violation.
    pub fn description(&self) -> String {
        let text = self.to_string();
        let prefix = format!("{}: ", self.param());
        text.strip_prefix(&prefix).map(str::to_owned).unwrap_or(text)
    }

    /// The error as a span or a log line may record it: the parameter and
    /// what is wrong, with no literal the caller wrote (a filter's value,
    /// the text around a syntax error, a name the dataset does not have).
    /// The caller still gets the whole (cut) message in its status; this is
    /// what operators see on `/traces` and at the collector.
    pub fn redacted(&self) -> String {
        match self {
            Self::Syntax { param, position, .. } => format!("{param}: syntax error at character {position}"),
            Self::UnknownDataset { .. } => "dataset: no such dataset".to_owned(),
            Self::UnknownField { param, dataset, .. } => {
                format!("{param}: dataset {} has no field of that name", shown(dataset))
            }
            Self::TypeMismatch {
                param, field, expected, ..
            } => format!(
                "{param}: field {} is a {expected}, but the value ? is not",
                shown(field)
            ),
            // Named fields of the schema, limits and reasons of our own.
            Self::FieldNotAllowed { .. } | Self::Limit { .. } | Self::PageToken { .. } | Self::Invalid { .. } => {
                self.to_string()
            }
        }
    }
}

/// What a span or a log line may record of a status that came from a
/// [`QueryError`] (at a region, say): `REASON (param)`, with the limit for
/// `LIMIT_EXCEEDED`, read from its `ErrorInfo`; `None` for any other status.
pub fn redacted_status(status: &Status) -> Option<String> {
    let info = status.get_details_error_info().filter(|i| i.domain == ERROR_DOMAIN)?;
    let param = info.metadata.get("param")?;
    Some(match (info.metadata.get("limit"), info.metadata.get("max")) {
        (Some(limit), Some(max)) => format!("{} ({param}: {limit} = {max})", info.reason),
        _ => format!("{} ({param})", info.reason),
    })
}

impl From<QueryError> for Status {
    fn from(q: QueryError) -> Self {
        let code = match q.kind() {
            ErrorKind::InvalidArgument => Code::InvalidArgument,
            ErrorKind::NotFound => Code::NotFound,
            ErrorKind::ResourceExhausted => Code::ResourceExhausted,
        };
        let mut details = ErrorDetails::with_bad_request_violation(q.param(), q.description());
        let (reason, mut metadata) = match &q {
            QueryError::Limit { limit, max, .. } => (
                "LIMIT_EXCEEDED",
                HashMap::from([
                    ("limit".to_owned(), (*limit).to_owned()),
                    ("max".to_owned(), max.to_string()),
                ]),
            ),
            QueryError::UnknownDataset { .. } => ("UNKNOWN_DATASET", HashMap::new()),
            QueryError::PageToken { .. } => ("INVALID_PAGE_TOKEN", HashMap::new()),
            _ => ("INVALID_QUERY", HashMap::new()),
        };
        metadata.insert("param".to_owned(), q.param().to_owned());
        details.set_error_info(reason, ERROR_DOMAIN, metadata);
        Status::with_error_details(code, q.to_string(), details)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_quote_a_callers_strings_cut() {
        let big = "x".repeat(3_500_000);
        let errors = [
            QueryError::UnknownDataset { dataset: big.clone() },
            QueryError::UnknownField {
                param: "fields",
                dataset: "enterprise".into(),
                field: big.clone(),
            },
            QueryError::TypeMismatch {
                param: "filter",
                field: "registered_capital".into(),
                expected: "number",
                found: big.clone(),
            },
            QueryError::Syntax {
                param: "filter",
                position: 1,
                message: big.clone(),
            },
            QueryError::Invalid {
                param: "fields",
                message: big.clone(),
            },
            QueryError::PageToken { reason: big.clone() },
            QueryError::FieldNotAllowed {
                param: "order_by",
                field: big.clone(),
                reason: big.clone(),
            },
        ];
        for e in errors {
            let text = e.to_string();
            assert!(text.len() < 700, "{} bytes: {}", text.len(), &text[..100]);
            assert!(text.contains("(3500000 bytes)"), "{text}");
            let status = Status::from(e.clone());
            assert!(status.message().len() < 700);
            assert!(e.redacted().len() < 700);
        }
        // Short strings are shown as before.
        let e = QueryError::UnknownDataset { dataset: "nope".into() };
        assert_eq!(e.to_string(), "dataset \"nope\" does not exist");
        assert_eq!(excerpt("héllo", 2), "hé…(6 bytes)");
        assert_eq!(excerpt("héllo", 5), "héllo");
    }

    #[test]
    fn redacted_errors_carry_no_literal() {
        let literal = "310101199001011234X";
        let errors = [
            QueryError::TypeMismatch {
                param: "filter",
                field: "registered_capital".into(),
                expected: "number",
                found: literal.into(),
            },
            QueryError::Syntax {
                param: "filter",
                position: 22,
                message: format!("expected a comparison operator, found `{literal}`"),
            },
            QueryError::UnknownField {
                param: "filter",
                dataset: "enterprise".into(),
                field: literal.into(),
            },
            QueryError::UnknownDataset {
                dataset: literal.into(),
            },
        ];
        for e in errors {
            assert!(
                e.to_string().contains(literal),
                "the caller's own message keeps it: {e}"
            );
            let r = e.redacted();
            assert!(!r.contains(literal) && !r.contains("310101"), "{r}");
            assert!(r.starts_with(e.param()), "{r}");
        }
        let e = QueryError::TypeMismatch {
            param: "filter",
            field: "registered_capital".into(),
            expected: "number",
            found: literal.into(),
        };
        assert_eq!(
            e.redacted(),
            "filter: field registered_capital is a number, but the value ? is not"
        );
        let status = Status::from(e);
        assert_eq!(redacted_status(&status).as_deref(), Some("INVALID_QUERY (filter)"));
        let limit = Status::from(QueryError::Limit {
            param: "filter",
            limit: "max_filter_terms",
            max: 16,
            actual: 17,
        });
        assert_eq!(
            redacted_status(&limit).as_deref(),
            Some("LIMIT_EXCEEDED (filter: max_filter_terms = 16)")
        );
        assert_eq!(redacted_status(&Status::unavailable("down")), None);
    }

    #[test]
    fn for_param_names_another_parameter_and_keeps_the_rest() {
        let e = QueryError::UnknownField {
            param: "filter",
            dataset: "enterprise".into(),
            field: "x".into(),
        }
        .for_param("row_scope_expr");
        assert_eq!(e.param(), "row_scope_expr");
        assert_eq!(e.to_string(), "row_scope_expr: dataset enterprise has no field \"x\"");
        let e = QueryError::Limit {
            param: "filter",
            limit: "max_filter_depth",
            max: 8,
            actual: 9,
        }
        .for_param("row_scope_expr");
        assert_eq!(
            e,
            QueryError::Limit {
                param: "row_scope_expr",
                limit: "max_filter_depth",
                max: 8,
                actual: 9,
            }
        );
        let e = QueryError::Syntax {
            param: "filter",
            position: 3,
            message: "unexpected".into(),
        }
        .for_param("row_scope");
        assert_eq!(e.param(), "row_scope");
        // Errors that name no parameter of their own are unchanged.
        let e = QueryError::UnknownDataset { dataset: "d".into() };
        assert_eq!(e.clone().for_param("row_scope_expr"), e);
        let e = QueryError::PageToken {
            reason: "expired".into(),
        };
        assert_eq!(e.clone().for_param("row_scope_expr"), e);
    }
}
