//! Short constructors for the filter tree messages, for code that builds a
//! typed filter (`FilterExpr`) by hand instead of from filter text.

use crate::mesh::{CompareOp, Comparison, FilterExpr, Value, filter_expr, value};

impl FilterExpr {
    /// `field <op> value`.
    pub fn compare(field: &str, op: CompareOp, value: Value) -> Self {
        Self {
            kind: Some(filter_expr::Kind::Comparison(Comparison {
                field: field.to_owned(),
                op: op as i32,
                value: Some(value),
                prefix: false,
            })),
        }
    }

    /// `NOT self`.
    pub fn negate(self) -> Self {
        Self {
            kind: Some(filter_expr::Kind::Not(Box::new(self))),
        }
    }
}

impl Value {
    /// A string value.
    pub fn string(s: &str) -> Self {
        Self {
            kind: Some(value::Kind::StringValue(s.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_constructors_build_the_messages_they_name() {
        let e = FilterExpr::compare("city", CompareOp::Eq, Value::string("320100")).negate();
        let Some(filter_expr::Kind::Not(inner)) = e.kind else {
            panic!("not a NOT: {e:?}")
        };
        let Some(filter_expr::Kind::Comparison(c)) = inner.kind else {
            panic!("not a comparison: {inner:?}")
        };
        assert_eq!(
            (c.field.as_str(), c.op, c.prefix),
            ("city", CompareOp::Eq as i32, false)
        );
        assert_eq!(c.value, Some(Value::string("320100")));
        assert_eq!(Value::string("x").kind, Some(value::Kind::StringValue("x".into())));
    }
}
