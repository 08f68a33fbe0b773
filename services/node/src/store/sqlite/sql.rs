//! Translation of typed queries into SQLite statements. Column and table
//! names come from the dataset descriptors; every value is a bound
//! parameter, so user text never reaches the SQL.

use rusqlite::types::Value as SqlValue;
use yrd_proto::mesh::{AggregateFunction, CompareOp, FilterExpr, Value, filter_expr, value};
use yrd_proto::schema::{DatasetSchema, FieldSchema, FieldType};
use yrd_query::QueryError;

use crate::store::SortColumn;

/// A statement and its parameters, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    /// SQL with `?` placeholders.
    pub sql: String,
    /// Values bound to the placeholders.
    pub params: Vec<SqlValue>,
}

/// Quotes an identifier. Names come from descriptors (`[a-z0-9_]`), the
/// quoting guards against keywords.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The table holding a dataset.
pub fn table(schema: &DatasetSchema) -> String {
    ident(&format!("ds_{}", schema.id))
}

/// SQLite column type of a field type.
pub fn column_type(ty: FieldType) -> &'static str {
    match ty {
        FieldType::String | FieldType::Date => "TEXT",
        FieldType::Int | FieldType::Bool | FieldType::Timestamp => "INTEGER",
        FieldType::Double => "REAL",
    }
}

/// The statements that create a dataset's table and its indexes: one index
/// per sortable field, ending with the primary key so that keyset paging in
/// any order is an index range scan. The table is `WITHOUT ROWID`: its rows
/// are stored in primary-key order, so a scan in that order reads them in
/// place instead of looking each one up from the key's index.
pub fn create_table(schema: &DatasetSchema) -> Vec<String> {
    let mut ddl = create_table_with_rowid(schema);
    if let Some(table) = ddl.first_mut() {
        table.push_str(" WITHOUT ROWID");
    }
    ddl
}

/// The statements of [`create_table`] as stores made before `WITHOUT
/// ROWID` have them: such stores are still opened and served.
pub fn create_table_with_rowid(schema: &DatasetSchema) -> Vec<String> {
    let t = table(schema);
    let mut cols: Vec<String> = schema
        .fields
        .iter()
        .map(|f| {
            let null = if f.required { " NOT NULL" } else { "" };
            format!("{} {}{null}", ident(&f.name), column_type(f.ty))
        })
        .collect();
    let pk: Vec<String> = schema
        .primary_key
        .iter()
        .map(|&i| ident(&schema.fields[i].name))
        .collect();
    cols.push(format!("PRIMARY KEY ({})", pk.join(", ")));
    let mut out = vec![format!("CREATE TABLE IF NOT EXISTS {t} ({})", cols.join(", "))];
    for (i, f) in schema.fields.iter().enumerate() {
        if !f.sortable || schema.primary_key.first() == Some(&i) {
            continue;
        }
        let mut key = vec![ident(&f.name)];
        key.extend(pk.iter().filter(|p| **p != ident(&f.name)).cloned());
        out.push(format!(
            "CREATE INDEX IF NOT EXISTS {} ON {t} ({})",
            ident(&format!("ix_{}_{}", schema.id, f.name)),
            key.join(", ")
        ));
    }
    out
}

/// An INSERT of every field, in schema order.
pub fn insert(schema: &DatasetSchema) -> String {
    let names: Vec<String> = schema.fields.iter().map(|f| ident(&f.name)).collect();
    let marks = vec!["?"; names.len()].join(", ");
    format!("INSERT INTO {} ({}) VALUES ({marks})", table(schema), names.join(", "))
}

/// The SQL value of a typed literal for `field`. A literal of the wrong
/// type is refused by the field's name and the two types, never by its
/// value: [`QueryError::redacted`] passes `Invalid` messages on to spans
/// and logs as they are.
pub fn bind_value(field: &FieldSchema, v: &Value) -> Result<SqlValue, QueryError> {
    let ty = field.ty;
    let mismatch = || QueryError::Invalid {
        param: "filter_expr",
        message: format!(
            "field {}: {} does not fit a {} field",
            field.name,
            literal_kind(v.kind.as_ref()),
            ty.name()
        ),
    };
    let kind = v.kind.as_ref().ok_or_else(mismatch)?;
    Ok(match (ty, kind) {
        (FieldType::String, value::Kind::StringValue(s)) | (FieldType::Date, value::Kind::DateValue(s)) => {
            SqlValue::Text(s.clone())
        }
        (FieldType::Date, value::Kind::StringValue(s)) => SqlValue::Text(s.clone()),
        (FieldType::Int, value::Kind::IntValue(i)) => SqlValue::Integer(*i),
        (FieldType::Double, value::Kind::DoubleValue(d)) => SqlValue::Real(*d),
        (FieldType::Double, value::Kind::IntValue(i)) => SqlValue::Real(*i as f64),
        (FieldType::Bool, value::Kind::BoolValue(b)) => SqlValue::Integer(i64::from(*b)),
        (FieldType::Timestamp, value::Kind::TimestampValue(ts)) => SqlValue::Integer(ts.seconds),
        _ => return Err(mismatch()),
    })
}

/// The type of a literal, for an error: what it is, never what it holds.
fn literal_kind(kind: Option<&value::Kind>) -> &'static str {
    match kind {
        None => "a literal without a value",
        Some(value::Kind::StringValue(_)) => "a string literal",
        Some(value::Kind::IntValue(_)) => "an integer literal",
        Some(value::Kind::DoubleValue(_)) => "a number literal",
        Some(value::Kind::BoolValue(_)) => "a boolean literal",
        Some(value::Kind::TimestampValue(_)) => "a timestamp literal",
        Some(value::Kind::DateValue(_)) => "a date literal",
    }
}

/// Appends the SQL of a filter tree to `out`, binding values to `params`.
/// A tree deeper than [`yrd_query::filter::MAX_TREE_DEPTH`] is refused
/// before it is recursed into (checked filters are far shallower).
pub fn filter(
    schema: &DatasetSchema,
    expr: &FilterExpr,
    out: &mut String,
    params: &mut Vec<SqlValue>,
) -> Result<(), QueryError> {
    filter_at(schema, expr, out, params, 0)
}

/// [`filter`] of a subtree `depth` levels down.
fn filter_at(
    schema: &DatasetSchema,
    expr: &FilterExpr,
    out: &mut String,
    params: &mut Vec<SqlValue>,
    depth: usize,
) -> Result<(), QueryError> {
    let invalid = |m: &str| QueryError::Invalid {
        param: "filter_expr",
        message: m.to_owned(),
    };
    if depth > yrd_query::filter::MAX_TREE_DEPTH {
        return Err(QueryError::Limit {
            param: "filter_expr",
            limit: "max_filter_depth",
            max: yrd_query::filter::MAX_TREE_DEPTH as u64,
            actual: depth as u64,
        });
    }
    match expr.kind.as_ref().ok_or_else(|| invalid("an expression has no kind"))? {
        filter_expr::Kind::Comparison(c) => {
            let (_, field) = schema.field(&c.field).ok_or_else(|| QueryError::UnknownField {
                param: "filter_expr",
                dataset: schema.id.clone(),
                field: c.field.clone(),
            })?;
            let col = ident(&field.name);
            let v = c.value.as_ref().ok_or_else(|| invalid("a comparison has no value"))?;
            let bound = bind_value(field, v)?;
            let op = CompareOp::try_from(c.op).unwrap_or(CompareOp::Unspecified);
            match op {
                CompareOp::Has if c.prefix => {
                    // The range uses the field's index; substr makes it exact.
                    let len = match &bound {
                        SqlValue::Text(s) => s.chars().count(),
                        _ => return Err(invalid("a prefix match needs a string")),
                    };
                    out.push_str(&format!("({col} >= ? AND substr({col}, 1, {len}) = ?)"));
                    params.push(bound.clone());
                    params.push(bound);
                }
                CompareOp::Ne => {
                    out.push_str(&format!("{col} IS NOT ?"));
                    params.push(bound);
                }
                _ => {
                    let sym = match op {
                        CompareOp::Eq | CompareOp::Has => "=",
                        CompareOp::Lt => "<",
                        CompareOp::Le => "<=",
                        CompareOp::Gt => ">",
                        CompareOp::Ge => ">=",
                        _ => return Err(invalid("a comparison has no operator")),
                    };
                    out.push_str(&format!("{col} {sym} ?"));
                    params.push(bound);
                }
            }
        }
        filter_expr::Kind::And(list) | filter_expr::Kind::Or(list) => {
            let joiner = if matches!(expr.kind, Some(filter_expr::Kind::And(_))) {
                " AND "
            } else {
                " OR "
            };
            if list.exprs.is_empty() {
                return Err(invalid("an AND or OR has no operands"));
            }
            out.push('(');
            for (i, e) in list.exprs.iter().enumerate() {
                if i > 0 {
                    out.push_str(joiner);
                }
                filter_at(schema, e, out, params, depth + 1)?;
            }
            out.push(')');
        }
        filter_expr::Kind::Not(inner) => {
            out.push_str("NOT (");
            filter_at(schema, inner, out, params, depth + 1)?;
            out.push(')');
        }
    }
    Ok(())
}

/// The keyset condition "sorts after `after`": for sort columns all in one
/// direction the row value `(k1, k2, ...) > (v1, v2, ...)`, which SQLite
/// serves as a range of the index on them (read backwards when
/// descending), so a deep page costs what the first does; for mixed
/// directions `(k1 > v1) OR (k1 = v1 AND k2 > v2) OR ...`.
pub fn keyset(
    schema: &DatasetSchema,
    order: &[SortColumn],
    after: &[Value],
    out: &mut String,
    params: &mut Vec<SqlValue>,
) -> Result<(), QueryError> {
    if after.len() != order.len() {
        return Err(QueryError::PageToken {
            reason: "does not match the query's sort keys".into(),
        });
    }
    let wrong_type = |_| QueryError::PageToken {
        reason: "holds a key of the wrong type".into(),
    };
    if order.len() > 1 && order.iter().all(|k| k.descending == order[0].descending) {
        let names: Vec<String> = order.iter().map(|k| ident(&schema.fields[k.field].name)).collect();
        let sym = if order[0].descending { "<" } else { ">" };
        let marks = vec!["?"; order.len()].join(", ");
        out.push_str(&format!("({}) {sym} ({marks})", names.join(", ")));
        for (key, value) in order.iter().zip(after) {
            params.push(bind_value(&schema.fields[key.field], value).map_err(wrong_type)?);
        }
        return Ok(());
    }
    out.push('(');
    for i in 0..order.len() {
        if i > 0 {
            out.push_str(" OR ");
        }
        out.push('(');
        for (j, key) in order.iter().enumerate().take(i + 1) {
            let f = &schema.fields[key.field];
            let sym = if j < i {
                "="
            } else if key.descending {
                "<"
            } else {
                ">"
            };
            if j > 0 {
                out.push_str(" AND ");
            }
            out.push_str(&format!("{} {sym} ?", ident(&f.name)));
            params.push(bind_value(f, &after[j]).map_err(wrong_type)?);
        }
        out.push(')');
    }
    out.push(')');
    Ok(())
}

/// `SELECT <columns> FROM t WHERE ... ORDER BY ... LIMIT n`.
pub fn select_page(
    schema: &DatasetSchema,
    order: &[SortColumn],
    columns: &[usize],
    filter_expr: Option<&FilterExpr>,
    after: Option<&[Value]>,
    limit: u64,
) -> Result<Statement, QueryError> {
    let mut params = Vec::new();
    let cols: Vec<String> = columns.iter().map(|&i| ident(&schema.fields[i].name)).collect();
    let mut sql = format!("SELECT {} FROM {}", cols.join(", "), table(schema));
    let mut conds = Vec::new();
    if let Some(e) = filter_expr {
        let mut s = String::new();
        filter(schema, e, &mut s, &mut params)?;
        conds.push(s);
    }
    if let Some(after) = after {
        let mut s = String::new();
        keyset(schema, order, after, &mut s, &mut params)?;
        conds.push(s);
    }
    if !conds.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conds.join(" AND "));
    }
    let keys: Vec<String> = order
        .iter()
        .map(|k| {
            format!(
                "{}{}",
                ident(&schema.fields[k.field].name),
                if k.descending { " DESC" } else { "" }
            )
        })
        .collect();
    sql.push_str(&format!(" ORDER BY {} LIMIT {limit}", keys.join(", ")));
    Ok(Statement { sql, params })
}

/// `SELECT <group_by>, COUNT(*), <partials per metric> ... GROUP BY ...`.
/// Each metric yields four columns: count, sum, min, max.
pub fn aggregate(
    schema: &DatasetSchema,
    filter_expr: Option<&FilterExpr>,
    group_by: &[usize],
    metrics: &[(AggregateFunction, Option<usize>)],
    limit: u64,
) -> Result<Statement, QueryError> {
    let mut params = Vec::new();
    let groups: Vec<String> = group_by.iter().map(|&i| ident(&schema.fields[i].name)).collect();
    let mut cols = groups.clone();
    for (_, field) in metrics {
        match field {
            Some(i) => {
                let c = ident(&schema.fields[*i].name);
                let numeric = schema.fields[*i].ty.is_numeric();
                cols.push(format!("COUNT({c})"));
                cols.push(if numeric {
                    format!("TOTAL({c})")
                } else {
                    "0.0".to_owned()
                });
                cols.push(format!("MIN({c})"));
                cols.push(format!("MAX({c})"));
            }
            None => {
                cols.push("COUNT(*)".to_owned());
                cols.extend(["0.0", "NULL", "NULL"].map(str::to_owned));
            }
        }
    }
    let mut sql = format!("SELECT {} FROM {}", cols.join(", "), table(schema));
    if let Some(e) = filter_expr {
        let mut s = String::new();
        filter(schema, e, &mut s, &mut params)?;
        sql.push_str(" WHERE ");
        sql.push_str(&s);
    }
    if !groups.is_empty() {
        sql.push_str(&format!(" GROUP BY {0} ORDER BY {0}", groups.join(", ")));
    }
    sql.push_str(&format!(" LIMIT {limit}"));
    Ok(Statement { sql, params })
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrd_proto::mesh::{Comparison, FilterList};
    use yrd_proto::schema::Registry;

    fn cmp(field: &str, op: CompareOp, v: value::Kind) -> FilterExpr {
        FilterExpr {
            kind: Some(filter_expr::Kind::Comparison(Comparison {
                field: field.into(),
                op: op as i32,
                value: Some(Value { kind: Some(v) }),
                prefix: false,
            })),
        }
    }

    fn ent() -> std::sync::Arc<DatasetSchema> {
        Registry::standard().unwrap().get("enterprise").unwrap().clone()
    }

    #[test]
    fn filter_binds_values_and_never_inlines_them() {
        let schema = ent();
        let e = FilterExpr {
            kind: Some(filter_expr::Kind::And(FilterList {
                exprs: vec![
                    cmp("registered_capital", CompareOp::Gt, value::Kind::IntValue(1_000_000)),
                    FilterExpr {
                        kind: Some(filter_expr::Kind::Or(FilterList {
                            exprs: vec![
                                cmp(
                                    "city",
                                    CompareOp::Eq,
                                    value::Kind::StringValue("320500'; DROP TABLE x".into()),
                                ),
                                cmp("status", CompareOp::Ne, value::Kind::StringValue("active".into())),
                            ],
                        })),
                    },
                ],
            })),
        };
        let (mut sql, mut params) = (String::new(), Vec::new());
        filter(&schema, &e, &mut sql, &mut params).unwrap();
        assert_eq!(
            sql,
            "(\"registered_capital\" > ? AND (\"city\" = ? OR \"status\" IS NOT ?))"
        );
        assert_eq!(
            params,
            vec![
                SqlValue::Real(1_000_000.0),
                SqlValue::Text("320500'; DROP TABLE x".into()),
                SqlValue::Text("active".into())
            ]
        );
    }

    #[test]
    fn prefix_match_uses_a_range_and_substr() {
        let schema = ent();
        let mut e = cmp("name", CompareOp::Has, value::Kind::StringValue("苏州".into()));
        if let Some(filter_expr::Kind::Comparison(c)) = e.kind.as_mut() {
            c.prefix = true;
        }
        let (mut sql, mut params) = (String::new(), Vec::new());
        filter(&schema, &e, &mut sql, &mut params).unwrap();
        assert_eq!(sql, "(\"name\" >= ? AND substr(\"name\", 1, 2) = ?)");
        assert_eq!(params.len(), 2);
    }

    #[test]
    fn not_wraps_its_operand() {
        let schema = ent();
        let e = FilterExpr {
            kind: Some(filter_expr::Kind::Not(Box::new(cmp(
                "status",
                CompareOp::Eq,
                value::Kind::StringValue("active".into()),
            )))),
        };
        let (mut sql, mut params) = (String::new(), Vec::new());
        filter(&schema, &e, &mut sql, &mut params).unwrap();
        assert_eq!(sql, "NOT (\"status\" = ?)");
    }

    #[test]
    fn a_tree_deeper_than_any_walk_descends_is_refused() {
        let schema = ent();
        let nots = |n: usize| {
            let mut e = cmp("status", CompareOp::Eq, value::Kind::StringValue("active".into()));
            for _ in 0..n {
                e = FilterExpr {
                    kind: Some(filter_expr::Kind::Not(Box::new(e))),
                };
            }
            e
        };
        let max = yrd_query::filter::MAX_TREE_DEPTH;
        let (mut sql, mut params) = (String::new(), Vec::new());
        filter(&schema, &nots(max), &mut sql, &mut params).unwrap();
        assert_eq!(sql.matches("NOT (").count(), max);
        match filter(&schema, &nots(max + 1), &mut String::new(), &mut Vec::new()) {
            Err(QueryError::Limit {
                limit: "max_filter_depth",
                actual,
                ..
            }) => assert_eq!(actual, max as u64 + 1),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn type_mismatch_is_refused() {
        let schema = ent();
        let e = cmp(
            "registered_capital",
            CompareOp::Gt,
            value::Kind::StringValue("big".into()),
        );
        assert!(filter(&schema, &e, &mut String::new(), &mut Vec::new()).is_err());
    }

    #[test]
    fn a_type_mismatch_names_the_field_and_types_never_the_value() {
        let schema = ent();
        let literal = "a-literal-9f3c that must not be logged";
        let e = cmp(
            "registered_capital",
            CompareOp::Gt,
            value::Kind::StringValue(literal.into()),
        );
        let err = filter(&schema, &e, &mut String::new(), &mut Vec::new()).unwrap_err();
        assert!(
            matches!(
                err,
                QueryError::Invalid {
                    param: "filter_expr",
                    ..
                }
            ),
            "{err:?}"
        );
        for message in [err.to_string(), err.redacted(), format!("{err:?}")] {
            assert!(!message.contains(literal), "{message}");
            assert!(!message.contains("9f3c"), "{message}");
            assert!(
                message.contains("registered_capital") && message.contains("a string literal"),
                "{message}"
            );
        }
        // Whatever the literal's type, its value stays out.
        let f = &schema.fields[schema.field("city").unwrap().0];
        let err = bind_value(
            f,
            &Value {
                kind: Some(value::Kind::IntValue(987_654_321)),
            },
        )
        .unwrap_err();
        assert!(!err.to_string().contains("987654321"), "{err}");
        assert!(err.to_string().contains("field city"), "{err}");
    }

    #[test]
    fn keyset_handles_mixed_directions() {
        let schema = ent();
        let cap = schema.field("registered_capital").unwrap().0;
        let code = schema.field("credit_code").unwrap().0;
        let order = [SortColumn::desc(cap), SortColumn::asc(code)];
        let after = [
            Value {
                kind: Some(value::Kind::DoubleValue(5.0)),
            },
            Value {
                kind: Some(value::Kind::StringValue("91320".into())),
            },
        ];
        let st = select_page(&schema, &order, &[cap, code, code], None, Some(&after), 11).unwrap();
        assert_eq!(
            st.sql,
            "SELECT \"registered_capital\", \"credit_code\", \"credit_code\" FROM \"ds_enterprise\" WHERE ((\"registered_capital\" < ?) OR (\"registered_capital\" = ? AND \"credit_code\" > ?)) ORDER BY \"registered_capital\" DESC, \"credit_code\" LIMIT 11"
        );
        assert_eq!(st.params.len(), 3);
    }

    #[test]
    fn keysets_in_one_direction_are_row_values() {
        let schema = ent();
        let cap = schema.field("registered_capital").unwrap().0;
        let code = schema.field("credit_code").unwrap().0;
        let after = [
            Value {
                kind: Some(value::Kind::DoubleValue(5.0)),
            },
            Value {
                kind: Some(value::Kind::StringValue("91320".into())),
            },
        ];
        let order = [SortColumn::desc(cap), SortColumn::desc(code)];
        let st = select_page(&schema, &order, &[code], None, Some(&after), 21).unwrap();
        assert_eq!(
            st.sql,
            "SELECT \"credit_code\" FROM \"ds_enterprise\" WHERE (\"registered_capital\", \"credit_code\") < (?, ?) ORDER BY \"registered_capital\" DESC, \"credit_code\" DESC LIMIT 21"
        );
        assert_eq!(st.params.len(), 2);
        let order = [SortColumn::asc(cap), SortColumn::asc(code)];
        let st = select_page(&schema, &order, &[code], None, Some(&after), 21).unwrap();
        assert!(
            st.sql.contains("(\"registered_capital\", \"credit_code\") > (?, ?)"),
            "{}",
            st.sql
        );
    }

    #[test]
    fn tables_and_indexes_follow_the_descriptor() {
        let schema = ent();
        let ddl = create_table(&schema);
        assert!(ddl[0].contains("\"credit_code\" TEXT NOT NULL"));
        assert!(ddl[0].contains("\"registered_capital\" REAL NOT NULL"));
        assert!(ddl[0].contains("\"address\" TEXT,") || ddl[0].contains("\"address\" TEXT, "));
        assert!(ddl[0].ends_with("PRIMARY KEY (\"credit_code\")) WITHOUT ROWID"));
        assert!(ddl.iter().any(|s| s.contains("ix_enterprise_registered_capital")
            && s.ends_with("(\"registered_capital\", \"credit_code\")")));
        assert!(!ddl.iter().any(|s| s.contains("ix_enterprise_legal_representative")));
    }

    #[test]
    fn aggregate_has_four_partial_columns_per_metric() {
        let schema = ent();
        let city = schema.field("city").unwrap().0;
        let cap = schema.field("registered_capital").unwrap().0;
        let st = aggregate(
            &schema,
            None,
            &[city],
            &[(AggregateFunction::Count, None), (AggregateFunction::Avg, Some(cap))],
            101,
        )
        .unwrap();
        assert_eq!(
            st.sql,
            "SELECT \"city\", COUNT(*), 0.0, NULL, NULL, COUNT(\"registered_capital\"), TOTAL(\"registered_capital\"), MIN(\"registered_capital\"), MAX(\"registered_capital\") FROM \"ds_enterprise\" GROUP BY \"city\" ORDER BY \"city\" LIMIT 101"
        );
    }
}
