//! The policy stage: between the checked query and the store, it decides
//! what this caller may see. [`Policy::authorize`] turns a caller and a
//! checked query into a [`Permit`] that treats each column as plain, masked
//! (by a named [`Mask`]) or refused, and may AND a row scope around the
//! user's filter. Plans for the store are built from the permit, so a
//! refused column never reaches the store, and the encoder masks values as
//! the permit says: masking happens here and nowhere else.
//!
//! [`DefaultPolicy`] is today's rule: personal values keep their first
//! character, secret values their first and last, nothing is refused. Grants,
//! more masks, row scopes and audit plug in behind the same trait.

pub mod grant;

use yrd_datasets::Cell;
use yrd_proto::mesh::{AggregateFunction, FilterExpr, FilterList, Sensitivity, filter_expr};
use yrd_proto::schema::DatasetSchema;
use yrd_query::QueryError;

use crate::principal::Principal;
use crate::store::SortColumn;

/// A named way of hiding most of a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mask {
    /// Keeps the first character (a surname): `张伟明` → `张**`.
    Surname,
    /// Keeps the first `first` and the last `last` characters, never
    /// revealing the whole value: `keep(1,1)` of `ab` is `a*`.
    Keep {
        /// Characters kept at the start.
        first: usize,
        /// Characters kept at the end.
        last: usize,
    },
}

impl Mask {
    /// The mask of secret values by default: `keep(1,1)`.
    pub const KEEP_ENDS: Mask = Mask::Keep { first: 1, last: 1 };

    /// The mask's name, as grants will write it: `surname`, `keep(1,1)`.
    pub fn name(&self) -> String {
        match self {
            Self::Surname => "surname".to_owned(),
            Self::Keep { first, last } => format!("keep({first},{last})"),
        }
    }

    /// Masks a text value.
    pub fn apply_text(&self, text: &str) -> String {
        let n = text.chars().count();
        let (first, last) = match *self {
            Self::Surname => (1, 0),
            Self::Keep { first, last } => (first, last),
        };
        text.chars()
            .enumerate()
            .map(|(i, c)| {
                // A short value is never shown whole: what the start keeps,
                // the end does not also keep.
                let kept = i < first || (i + last >= n && n > first + last);
                if kept { c } else { '*' }
            })
            .collect()
    }

    /// Masks a cell. These masks are for text; any other value is withheld.
    pub fn apply(&self, cell: &Cell) -> Option<Cell> {
        match cell {
            Cell::Text(s) => Some(Cell::Text(self.apply_text(s))),
            _ => None,
        }
    }
}

/// How a permit treats one column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Treatment {
    /// Shown as stored.
    Plain,
    /// Shown masked; may not be filtered, sorted, grouped or used in min/max.
    Masked(Mask),
    /// Never read: absent from plans and answers.
    Refused,
}

/// The checked query, as the policy sees it: which fields it touches and how.
#[derive(Debug, Clone, Copy)]
pub struct Access<'a> {
    /// The dataset.
    pub schema: &'a DatasetSchema,
    /// The user's filter.
    pub filter: Option<&'a FilterExpr>,
    /// Sort columns (queries).
    pub order: &'a [SortColumn],
    /// Requested fields (queries); empty for aggregates.
    pub projection: &'a [usize],
    /// Group-by fields (aggregates).
    pub group_by: &'a [usize],
    /// Metrics (aggregates).
    pub metrics: &'a [(AggregateFunction, Option<usize>)],
}

/// What a caller may do with one query: per-column treatments and a row scope.
#[derive(Debug, Clone, PartialEq)]
pub struct Permit {
    treatments: Vec<Treatment>,
    row_scope: Option<FilterExpr>,
}

impl Permit {
    /// A permit treating field `i` as `treatments[i]`, with an optional row scope.
    pub fn new(treatments: Vec<Treatment>, row_scope: Option<FilterExpr>) -> Self {
        Self { treatments, row_scope }
    }

    /// How field `field` is treated (refused when out of range).
    pub fn treatment(&self, field: usize) -> Treatment {
        self.treatments.get(field).copied().unwrap_or(Treatment::Refused)
    }

    /// The mask of field `field`, if it is masked.
    pub fn mask(&self, field: usize) -> Option<Mask> {
        match self.treatment(field) {
            Treatment::Masked(m) => Some(m),
            _ => None,
        }
    }

    /// The row scope ANDed around every filter, if any.
    pub fn row_scope(&self) -> Option<&FilterExpr> {
        self.row_scope.as_ref()
    }

    /// The requested fields the caller may see, in order: refused ones dropped.
    pub fn visible(&self, projection: &[usize]) -> Vec<usize> {
        projection
            .iter()
            .copied()
            .filter(|&f| self.treatment(f) != Treatment::Refused)
            .collect()
    }

    /// The filter handed to the store: the user's filter inside the row
    /// scope. In the tree it is just an AND node, so the user's ORs cannot
    /// escape the scope (AIP-160 text precedence plays no part).
    pub fn scoped_filter(&self, filter: Option<FilterExpr>) -> Option<FilterExpr> {
        match (self.row_scope.clone(), filter) {
            (None, f) => f,
            (Some(scope), None) => Some(scope),
            (Some(scope), Some(user)) => Some(FilterExpr {
                kind: Some(filter_expr::Kind::And(FilterList {
                    exprs: vec![scope, user],
                })),
            }),
        }
    }

    /// Refuses a query that filters, sorts, groups or takes min/max on a
    /// masked or refused field: such a query could recover hidden values.
    pub fn check(&self, access: &Access<'_>) -> Result<(), QueryError> {
        let schema = access.schema;
        let refuse = |param: &'static str, field: usize, what: &str| {
            let reason = match self.treatment(field) {
                Treatment::Masked(m) => format!("is masked ({}) for this caller and may not be {what}", m.name()),
                _ => format!("is not shared with this caller and may not be {what}"),
            };
            QueryError::FieldNotAllowed {
                param,
                field: schema.fields[field].name.clone(),
                reason,
            }
        };
        let hidden = |f: usize| self.treatment(f) != Treatment::Plain;
        if let Some(filter) = access.filter {
            let mut names = Vec::new();
            filter_fields(filter, &mut names);
            for name in names {
                if let Some((i, _)) = schema.field(name)
                    && hidden(i)
                {
                    return Err(refuse("filter", i, "filtered"));
                }
            }
        }
        if let Some(k) = access.order.iter().find(|k| hidden(k.field)) {
            return Err(refuse("order_by", k.field, "sorted"));
        }
        if let Some(&g) = access.group_by.iter().find(|&&g| hidden(g)) {
            return Err(refuse("group_by", g, "grouped by"));
        }
        for (function, field) in access.metrics {
            let Some(f) = *field else { continue };
            let reveals = matches!(function, AggregateFunction::Min | AggregateFunction::Max);
            if self.treatment(f) == Treatment::Refused || (reveals && hidden(f)) {
                return Err(refuse("metrics", f, "aggregated this way"));
            }
        }
        Ok(())
    }
}

/// Decides what a caller may do. One entry point, so that grants, row
/// scopes and audit are added behind it without touching the service.
pub trait Policy: Send + Sync + std::fmt::Debug {
    /// The permit for `who` running `access`, or why it is refused.
    fn authorize(&self, who: &Principal, access: &Access<'_>) -> Result<Permit, QueryError>;
}

/// Today's policy: personal values masked by `surname`, secret values by
/// `keep(1,1)`, everything else plain; nothing refused, no row scope.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultPolicy;

impl Policy for DefaultPolicy {
    fn authorize(&self, _who: &Principal, access: &Access<'_>) -> Result<Permit, QueryError> {
        let treatments = access
            .schema
            .fields
            .iter()
            .map(|f| match f.sensitivity {
                Sensitivity::Personal => Treatment::Masked(Mask::Surname),
                Sensitivity::Secret => Treatment::Masked(Mask::KEEP_ENDS),
                _ => Treatment::Plain,
            })
            .collect();
        let permit = Permit::new(treatments, None);
        permit.check(access)?;
        Ok(permit)
    }
}

/// Appends the field names of every comparison in `expr` to `out`.
fn filter_fields<'a>(expr: &'a FilterExpr, out: &mut Vec<&'a str>) {
    match &expr.kind {
        Some(filter_expr::Kind::Comparison(c)) => out.push(&c.field),
        Some(filter_expr::Kind::And(l) | filter_expr::Kind::Or(l)) => {
            for e in &l.exprs {
                filter_fields(e, out);
            }
        }
        Some(filter_expr::Kind::Not(inner)) => filter_fields(inner, out),
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrd_proto::mesh::{CompareOp, Comparison, Value, value};
    use yrd_proto::schema::Registry;

    fn ent() -> std::sync::Arc<DatasetSchema> {
        Registry::standard().unwrap().get("enterprise").unwrap().clone()
    }

    fn access(schema: &DatasetSchema) -> Access<'_> {
        Access {
            schema,
            filter: None,
            order: &[],
            projection: &[],
            group_by: &[],
            metrics: &[],
        }
    }

    fn eq(field: &str, v: &str) -> FilterExpr {
        FilterExpr {
            kind: Some(filter_expr::Kind::Comparison(Comparison {
                field: field.into(),
                op: CompareOp::Eq as i32,
                value: Some(Value {
                    kind: Some(value::Kind::StringValue(v.into())),
                }),
                prefix: false,
            })),
        }
    }

    #[test]
    fn masks_keep_little() {
        assert_eq!(Mask::Surname.apply_text("张伟明"), "张**");
        assert_eq!(Mask::KEEP_ENDS.apply_text("32010219800101123X"), "3****************X");
        assert_eq!(Mask::KEEP_ENDS.apply_text("ab"), "a*");
        assert_eq!(Mask::KEEP_ENDS.apply_text("a"), "a");
        assert_eq!(
            Mask::Keep { first: 6, last: 4 }.apply_text("320102198001011234"),
            "320102********1234"
        );
        assert_eq!(Mask::KEEP_ENDS.name(), "keep(1,1)");
        assert_eq!(Mask::Surname.apply(&Cell::Int(3)), None);
    }

    #[test]
    fn the_default_permit_masks_exactly_personal_and_secret_columns() {
        let schema = ent();
        let permit = DefaultPolicy
            .authorize(&Principal::default(), &access(&schema))
            .unwrap();
        for (i, f) in schema.fields.iter().enumerate() {
            let expected = match f.sensitivity {
                Sensitivity::Personal => Treatment::Masked(Mask::Surname),
                Sensitivity::Secret => Treatment::Masked(Mask::KEEP_ENDS),
                _ => Treatment::Plain,
            };
            assert_eq!(permit.treatment(i), expected, "{}", f.name);
        }
        let masked: Vec<&str> = (0..schema.fields.len())
            .filter(|&i| permit.mask(i).is_some())
            .map(|i| schema.fields[i].name.as_str())
            .collect();
        assert_eq!(
            masked,
            ["legal_representative", "representative_id_number", "contact_phone"]
        );
        assert!(permit.row_scope().is_none());
    }

    #[test]
    fn a_row_scope_is_anded_around_the_users_filter() {
        let scope = eq("region", "320000");
        let permit = Permit::new(vec![Treatment::Plain; 12], Some(scope.clone()));
        let user = FilterExpr {
            kind: Some(filter_expr::Kind::Or(FilterList {
                exprs: vec![eq("city", "320500"), eq("status", "active")],
            })),
        };
        let scoped = permit.scoped_filter(Some(user.clone())).unwrap();
        assert_eq!(
            scoped,
            FilterExpr {
                kind: Some(filter_expr::Kind::And(FilterList {
                    exprs: vec![scope.clone(), user]
                }))
            }
        );
        assert_eq!(permit.scoped_filter(None), Some(scope));
        let open = Permit::new(vec![Treatment::Plain; 12], None);
        assert_eq!(open.scoped_filter(None), None);
    }

    #[test]
    fn a_refused_column_is_absent_from_what_is_read() {
        let schema = ent();
        let (secret, _) = schema.field("representative_id_number").unwrap();
        let mut treatments = vec![Treatment::Plain; schema.fields.len()];
        treatments[secret] = Treatment::Refused;
        let permit = Permit::new(treatments, None);
        let all: Vec<usize> = (0..schema.fields.len()).collect();
        let visible = permit.visible(&all);
        assert!(!visible.contains(&secret));
        assert_eq!(visible.len(), schema.fields.len() - 1);
    }

    #[test]
    fn using_a_masked_field_is_refused_naming_it() {
        let schema = ent();
        let (person, _) = schema.field("legal_representative").unwrap();
        let (cap, _) = schema.field("registered_capital").unwrap();
        let filter = eq("legal_representative", "王小明");
        let order = [SortColumn {
            field: person,
            descending: false,
        }];
        let group_by = [person];
        let metrics = [(AggregateFunction::Max, Some(person))];
        let cases: Vec<(Access<'_>, &str)> = vec![
            (
                Access {
                    filter: Some(&filter),
                    ..access(&schema)
                },
                "filter",
            ),
            (
                Access {
                    order: &order,
                    ..access(&schema)
                },
                "order_by",
            ),
            (
                Access {
                    group_by: &group_by,
                    ..access(&schema)
                },
                "group_by",
            ),
            (
                Access {
                    metrics: &metrics,
                    ..access(&schema)
                },
                "metrics",
            ),
        ];
        for (a, param) in cases {
            let err = DefaultPolicy.authorize(&Principal::default(), &a).unwrap_err();
            assert_eq!(err.param(), param);
            assert!(err.to_string().contains("legal_representative"), "{err}");
            assert_eq!(tonic::Status::from(err).code(), tonic::Code::InvalidArgument);
        }
        let counted = Access {
            metrics: &[
                (AggregateFunction::Count, Some(person)),
                (AggregateFunction::Min, Some(cap)),
            ],
            ..access(&schema)
        };
        DefaultPolicy.authorize(&Principal::default(), &counted).unwrap();
    }
}
