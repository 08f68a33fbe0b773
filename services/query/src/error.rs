//! The one error type of the query language, and the one place it becomes
//! a gRPC status (`google.rpc.BadRequest` naming the parameter, `ErrorInfo`
//! naming the limit).

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// Domain of the `google.rpc.ErrorInfo` details the mesh sends.
pub const ERROR_DOMAIN: &str = "mesh.yrd";

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
    #[error("{param}: syntax error at character {position}: {message}")]
    Syntax {
        /// The parameter.
        param: &'static str,
        /// 1-based character position of the problem.
        position: usize,
        /// What was wrong.
        message: String,
    },
    /// The dataset does not exist.
    #[error("dataset {dataset:?} does not exist")]
    UnknownDataset {
        /// The requested id.
        dataset: String,
    },
    /// A field name is not in the dataset.
    #[error("{param}: dataset {dataset} has no field {field:?}")]
    UnknownField {
        /// The parameter.
        param: &'static str,
        /// The dataset.
        dataset: String,
        /// The field named.
        field: String,
    },
    /// A field may not be used this way.
    #[error("{param}: field {field} {reason}")]
    FieldNotAllowed {
        /// The parameter.
        param: &'static str,
        /// The field.
        field: String,
        /// Why, such as "may not be filtered".
        reason: String,
    },
    /// A literal does not fit the field's type.
    #[error("{param}: field {field} is a {expected}, but the value {found} is not")]
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
    #[error("page_token: {reason}")]
    PageToken {
        /// Why (expired, tampered with, for another query, ...).
        reason: String,
    },
    /// Another malformed parameter.
    #[error("{param}: {message}")]
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
