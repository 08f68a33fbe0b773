//! `order_by` (AIP-132: `field [asc|desc], ...`) and the metrics and
//! group_by fields of aggregates, parsed and checked against a dataset's
//! schema.

use std::collections::HashSet;

use yrd_proto::mesh::{AggregateFunction, Metric, OrderKey};
use yrd_proto::schema::{DatasetSchema, FieldSchema, FieldType};

use crate::{Limits, QueryError};

/// The request parameter of order_by text.
const ORDER_PARAM: &str = "order_by";
/// The request parameter of typed order keys.
const KEYS_PARAM: &str = "order_keys";
/// The request parameter of metrics.
const METRICS_PARAM: &str = "metrics";
/// The request parameter of group_by fields.
const GROUP_PARAM: &str = "group_by";

/// A word or a comma of order_by text, with its character index.
#[derive(Debug)]
enum Token {
    Word(usize, String),
    Comma(usize),
}

/// Parses `field [asc|desc], ...` and checks the keys against the schema.
/// Empty text is no ordering.
pub fn parse_order_by(text: &str, schema: &DatasetSchema, limits: &Limits) -> Result<Vec<OrderKey>, QueryError> {
    let syntax = |at: usize, message: String| QueryError::Syntax {
        param: ORDER_PARAM,
        position: at + 1,
        message,
    };
    let end = text.chars().count();
    let mut keys: Vec<OrderKey> = Vec::new();
    // Whether the next word must be a field (at the start and after commas).
    let mut want_field = true;
    // Whether the current key already has its direction.
    let mut has_direction = false;
    for token in tokens(text) {
        match token {
            Token::Word(at, word) if want_field => {
                if !is_field_name(&word) {
                    return Err(syntax(at, format!("expected a field name, found `{word}`")));
                }
                keys.push(OrderKey {
                    field: word,
                    descending: false,
                });
                want_field = false;
                has_direction = false;
            }
            Token::Word(_, word) if !has_direction && matches!(word.to_ascii_lowercase().as_str(), "asc" | "desc") => {
                if let Some(key) = keys.last_mut() {
                    key.descending = word.eq_ignore_ascii_case("desc");
                }
                has_direction = true;
            }
            Token::Word(at, word) => {
                let expected = if has_direction { "`,`" } else { "`asc`, `desc` or `,`" };
                let field = keys.last().map(|k| k.field.as_str()).unwrap_or_default();
                return Err(syntax(
                    at,
                    format!("expected {expected} after `{field}`, found `{word}`"),
                ));
            }
            Token::Comma(at) if want_field => {
                return Err(syntax(at, "expected a field name, found `,`".to_owned()));
            }
            Token::Comma(_) => want_field = true,
        }
    }
    if want_field && !keys.is_empty() {
        return Err(syntax(
            end,
            "expected a field name after `,`, found end of order_by".to_owned(),
        ));
    }
    check_keys(ORDER_PARAM, &keys, schema, limits)?;
    Ok(keys)
}

/// Checks typed order keys: at most `max_order_keys`, each field existing,
/// sortable and named once.
pub fn check_order_keys(keys: &[OrderKey], schema: &DatasetSchema, limits: &Limits) -> Result<(), QueryError> {
    check_keys(KEYS_PARAM, keys, schema, limits)
}

/// Appends the primary key fields not already ordered on, so that every
/// row has a distinct sort key and paging is stable. They go in the
/// direction of the last key asked (ascending when none is): the store's
/// index on a field ends with the primary key, so `f desc` with the
/// primary key descending is that index read backwards, while `f desc`
/// with the primary key ascending would sort every run of equal values.
pub fn with_primary_key(mut keys: Vec<OrderKey>, schema: &DatasetSchema) -> Vec<OrderKey> {
    let descending = keys.last().is_some_and(|k| k.descending);
    for field in schema.primary_key.iter().filter_map(|&i| schema.fields.get(i)) {
        if !keys.iter().any(|k| k.field == field.name) {
            keys.push(OrderKey {
                field: field.name.clone(),
                descending,
            });
        }
    }
    keys
}

/// Parses one metric: `count(*)`, or `count`, `sum`, `avg`, `min` or `max`
/// of a field (function names in any case, spaces allowed).
pub fn parse_metric(text: &str, schema: &DatasetSchema) -> Result<Metric, QueryError> {
    let chars: Vec<char> = text.chars().collect();
    let syntax = |at: usize, message: String| QueryError::Syntax {
        param: METRICS_PARAM,
        position: at + 1,
        message,
    };
    let found = |at: usize| match chars.get(at) {
        None => "end of metric".to_owned(),
        Some(c) => format!("`{c}`"),
    };
    let skip = |mut at: usize| {
        while chars.get(at).is_some_and(|c| c.is_whitespace()) {
            at += 1;
        }
        at
    };
    let word = |at: usize| {
        let len = chars[at..]
            .iter()
            .take_while(|c| c.is_ascii_alphanumeric() || **c == '_' || **c == '.')
            .count();
        (chars[at..at + len].iter().collect::<String>(), at + len)
    };

    let start = skip(0);
    let (name, mut at) = word(start);
    let function = match name.to_ascii_lowercase().as_str() {
        "count" => AggregateFunction::Count,
        "sum" => AggregateFunction::Sum,
        "avg" => AggregateFunction::Avg,
        "min" => AggregateFunction::Min,
        "max" => AggregateFunction::Max,
        _ => {
            let shown = if name.is_empty() {
                found(start)
            } else {
                format!("`{name}`")
            };
            return Err(syntax(
                start,
                format!("expected count, sum, avg, min or max, found {shown}"),
            ));
        }
    };
    at = skip(at);
    if chars.get(at) != Some(&'(') {
        return Err(syntax(
            at,
            format!("expected `(` after {}, found {}", function_name(function), found(at)),
        ));
    }
    at = skip(at + 1);
    let field = if chars.get(at) == Some(&'*') {
        if function != AggregateFunction::Count {
            return Err(syntax(
                at,
                format!("only count accepts `*`; {} needs a field", function_name(function)),
            ));
        }
        at += 1;
        String::new()
    } else {
        let (field, next) = word(at);
        if !is_field_name(&field) {
            return Err(syntax(at, format!("expected a field name, found {}", found(at))));
        }
        at = next;
        field
    };
    at = skip(at);
    if chars.get(at) != Some(&')') {
        return Err(syntax(at, format!("expected `)`, found {}", found(at))));
    }
    at = skip(at + 1);
    if at < chars.len() {
        return Err(syntax(at, format!("expected end of metric, found {}", found(at))));
    }
    check_metric(METRICS_PARAM, function, &field, schema)?;
    Ok(Metric {
        function: function as i32,
        field,
    })
}

/// Checks typed metrics: at most `max_metrics`, each with a known function
/// and a field it applies to.
pub fn check_metrics(metrics: &[Metric], schema: &DatasetSchema, limits: &Limits) -> Result<(), QueryError> {
    Limits::check(METRICS_PARAM, "max_metrics", limits.max_metrics, metrics.len())?;
    for metric in metrics {
        let function = match AggregateFunction::try_from(metric.function) {
            Ok(AggregateFunction::Unspecified) | Err(_) => {
                return Err(QueryError::Invalid {
                    param: METRICS_PARAM,
                    message: format!("a metric has no valid function (got {})", metric.function),
                });
            }
            Ok(function) => function,
        };
        check_metric(METRICS_PARAM, function, &metric.field, schema)?;
    }
    Ok(())
}

/// Checks group_by fields: at most `max_group_by`, each existing, filterable
/// (grouping reveals a field's values) and named once.
pub fn check_group_by(fields: &[String], schema: &DatasetSchema, limits: &Limits) -> Result<(), QueryError> {
    Limits::check(GROUP_PARAM, "max_group_by", limits.max_group_by, fields.len())?;
    let mut seen = HashSet::new();
    for name in fields {
        let field = known_field(GROUP_PARAM, name, schema)?;
        if !field.filterable {
            return Err(not_allowed(GROUP_PARAM, name, "may not be grouped by"));
        }
        if !seen.insert(name.as_str()) {
            return Err(QueryError::Invalid {
                param: GROUP_PARAM,
                message: format!("field {name} appears twice"),
            });
        }
    }
    Ok(())
}

/// The name of a metric as written: `count(*)`, `sum(registered_capital)`.
pub fn metric_name(m: &Metric) -> String {
    let function = AggregateFunction::try_from(m.function).map_or("unspecified", function_name);
    let field = if m.field.is_empty() { "*" } else { m.field.as_str() };
    format!("{function}({field})")
}

fn function_name(function: AggregateFunction) -> &'static str {
    match function {
        AggregateFunction::Unspecified => "unspecified",
        AggregateFunction::Count => "count",
        AggregateFunction::Sum => "sum",
        AggregateFunction::Min => "min",
        AggregateFunction::Max => "max",
        AggregateFunction::Avg => "avg",
    }
}

/// Splits order_by text into words and commas.
fn tokens(text: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut word: Option<(usize, String)> = None;
    for (at, c) in text.chars().enumerate() {
        if c == ',' || c.is_whitespace() {
            if let Some((start, w)) = word.take() {
                out.push(Token::Word(start, w));
            }
            if c == ',' {
                out.push(Token::Comma(at));
            }
        } else {
            word.get_or_insert_with(|| (at, String::new())).1.push(c);
        }
    }
    if let Some((start, w)) = word {
        out.push(Token::Word(start, w));
    }
    out
}

fn is_field_name(word: &str) -> bool {
    let mut chars = word.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

fn known_field<'s>(param: &'static str, name: &str, schema: &'s DatasetSchema) -> Result<&'s FieldSchema, QueryError> {
    schema
        .field(name)
        .map(|(_, f)| f)
        .ok_or_else(|| QueryError::UnknownField {
            param,
            dataset: schema.id.clone(),
            field: name.to_owned(),
        })
}

fn not_allowed(param: &'static str, field: &str, reason: &str) -> QueryError {
    QueryError::FieldNotAllowed {
        param,
        field: field.to_owned(),
        reason: reason.to_owned(),
    }
}

fn check_keys(
    param: &'static str,
    keys: &[OrderKey],
    schema: &DatasetSchema,
    limits: &Limits,
) -> Result<(), QueryError> {
    // The primary key's fields are not counted: every order ends with them
    // (`with_primary_key`), so the keys a gateway sends a node, primary key
    // appended, pass the node's check of the same limit.
    let is_primary = |name: &str| {
        schema
            .primary_key
            .iter()
            .any(|&i| schema.fields.get(i).is_some_and(|f| f.name == name))
    };
    let counted = keys.iter().filter(|k| !is_primary(&k.field)).count();
    Limits::check(param, "max_order_keys", limits.max_order_keys, counted)?;
    let mut seen = HashSet::new();
    for key in keys {
        let field = known_field(param, &key.field, schema)?;
        if !field.sortable {
            return Err(not_allowed(param, &key.field, "may not be sorted"));
        }
        if !seen.insert(key.field.as_str()) {
            return Err(QueryError::Invalid {
                param,
                message: format!("field {} appears twice", key.field),
            });
        }
    }
    Ok(())
}

fn check_metric(
    param: &'static str,
    function: AggregateFunction,
    field: &str,
    schema: &DatasetSchema,
) -> Result<(), QueryError> {
    let name = function_name(function);
    if field.is_empty() {
        if function == AggregateFunction::Count {
            return Ok(());
        }
        return Err(QueryError::Invalid {
            param,
            message: format!("{name} needs a field"),
        });
    }
    let schema_field = known_field(param, field, schema)?;
    // An aggregate over a field reveals its values, so it needs the same
    // permission as a filter.
    if !schema_field.filterable {
        return Err(not_allowed(param, field, "may not be aggregated"));
    }
    let ty = schema_field.ty;
    match function {
        AggregateFunction::Sum | AggregateFunction::Avg if !ty.is_numeric() => Err(not_allowed(
            param,
            field,
            &format!("is a {}, and {name} needs a number", ty.name()),
        )),
        AggregateFunction::Min | AggregateFunction::Max
            if !(ty.is_numeric() || matches!(ty, FieldType::Date | FieldType::Timestamp) || schema_field.sortable) =>
        {
            Err(not_allowed(
                param,
                field,
                &format!("has no order for {name}: it is not a number, date or timestamp, nor sortable"),
            ))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrd_proto::schema::Registry;

    fn schema(id: &str) -> &'static DatasetSchema {
        Registry::standard().unwrap().get(id).unwrap()
    }

    fn key(field: &str, descending: bool) -> OrderKey {
        OrderKey {
            field: field.into(),
            descending,
        }
    }

    fn order(text: &str) -> Result<Vec<OrderKey>, QueryError> {
        parse_order_by(text, schema("enterprise"), &Limits::default())
    }

    fn metric(function: AggregateFunction, field: &str) -> Metric {
        Metric {
            function: function as i32,
            field: field.into(),
        }
    }

    #[test]
    fn order_by_parses() {
        assert_eq!(order(""), Ok(vec![]));
        assert_eq!(order("   "), Ok(vec![]));
        assert_eq!(order("name"), Ok(vec![key("name", false)]));
        assert_eq!(
            order(" registered_capital desc,name ASC , established DESC,city"),
            Ok(vec![
                key("registered_capital", true),
                key("name", false),
                key("established", true),
                key("city", false)
            ])
        );
    }

    #[test]
    fn order_by_syntax_errors() {
        let cases: &[(&str, usize, &str)] = &[
            ("name,", 6, "expected a field name after `,`, found end of order_by"),
            (",name", 1, "expected a field name, found `,`"),
            ("name,,city", 6, "found `,`"),
            (
                "name down",
                6,
                "expected `asc`, `desc` or `,` after `name`, found `down`",
            ),
            ("name desc asc", 11, "expected `,` after `name`, found `asc`"),
            ("name city", 6, "found `city`"),
            ("9name", 1, "expected a field name, found `9name`"),
            ("name, desc-x", 7, "expected a field name"),
        ];
        for &(text, position, fragment) in cases {
            match order(text) {
                Err(e @ QueryError::Syntax { param: "order_by", .. }) => {
                    assert!(
                        matches!(e, QueryError::Syntax { position: p, .. } if p == position),
                        "{text}: {e}"
                    );
                    assert!(e.to_string().contains(fragment), "{text}: {e}");
                }
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn order_by_field_errors() {
        assert!(matches!(
            order("nope"),
            Err(QueryError::UnknownField { param: "order_by", .. })
        ));
        assert_eq!(
            order("address"),
            Err(QueryError::FieldNotAllowed {
                param: "order_by",
                field: "address".into(),
                reason: "may not be sorted".into()
            })
        );
        assert!(
            matches!(order("name, name desc"), Err(QueryError::Invalid { param: "order_by", message }) if message.contains("twice"))
        );
        let limits = Limits {
            max_order_keys: 2,
            ..Limits::default()
        };
        assert_eq!(
            parse_order_by("name, city, status", schema("enterprise"), &limits),
            Err(QueryError::Limit {
                param: "order_by",
                limit: "max_order_keys",
                max: 2,
                actual: 3
            })
        );
    }

    #[test]
    fn typed_order_keys() {
        let ent = schema("enterprise");
        let limits = Limits::default();
        assert_eq!(
            check_order_keys(&[key("name", true), key("credit_code", false)], ent, &limits),
            Ok(())
        );
        assert!(matches!(
            check_order_keys(&[key("legal_representative", false)], ent, &limits),
            Err(QueryError::FieldNotAllowed {
                param: "order_keys",
                ..
            })
        ));
        assert!(matches!(
            check_order_keys(&[key("x", false)], ent, &limits),
            Err(QueryError::UnknownField {
                param: "order_keys",
                ..
            })
        ));
        assert!(check_order_keys(&[key("city", false), key("city", true)], ent, &limits).is_err());
        // The primary key's fields are not counted against max_order_keys:
        // what the gateway accepts, the primary key appended, a node accepts.
        let two = Limits {
            max_order_keys: 2,
            ..Limits::default()
        };
        let asked = parse_order_by("name, city desc", ent, &two).unwrap();
        assert_eq!(check_order_keys(&with_primary_key(asked, ent), ent, &two), Ok(()));
        let air = schema("air_quality");
        let asked = parse_order_by("observed_at, aqi", air, &two).unwrap();
        let sent = with_primary_key(asked, air);
        assert_eq!(sent.len(), 3);
        assert_eq!(check_order_keys(&sent, air, &two), Ok(()));
        let many: Vec<OrderKey> = (0..9).map(|i| key(&format!("f{i}"), false)).collect();
        assert!(matches!(
            check_order_keys(&many, ent, &limits),
            Err(QueryError::Limit {
                limit: "max_order_keys",
                max: 8,
                actual: 9,
                ..
            })
        ));
    }

    #[test]
    fn primary_key_is_the_last_tie_breaker() {
        let ent = schema("enterprise");
        assert_eq!(with_primary_key(vec![], ent), vec![key("credit_code", false)]);
        // In the direction of the last key: an index read backwards.
        assert_eq!(
            with_primary_key(vec![key("name", true)], ent),
            vec![key("name", true), key("credit_code", true)]
        );
        assert_eq!(
            with_primary_key(vec![key("name", false)], ent),
            vec![key("name", false), key("credit_code", false)]
        );
        // A key already ordered on keeps its place and direction.
        assert_eq!(
            with_primary_key(vec![key("credit_code", true), key("name", false)], ent),
            vec![key("credit_code", true), key("name", false)]
        );
        let air = schema("air_quality");
        assert_eq!(
            with_primary_key(vec![key("observed_at", true)], air),
            vec![key("observed_at", true), key("station_code", true)]
        );
        assert_eq!(
            with_primary_key(vec![], air),
            vec![key("station_code", false), key("observed_at", false)]
        );
    }

    #[test]
    fn metrics_parse() {
        let ent = schema("enterprise");
        assert_eq!(parse_metric("count(*)", ent), Ok(metric(AggregateFunction::Count, "")));
        assert_eq!(
            parse_metric("  COUNT ( * ) ", ent),
            Ok(metric(AggregateFunction::Count, ""))
        );
        assert_eq!(
            parse_metric("count(city)", ent),
            Ok(metric(AggregateFunction::Count, "city"))
        );
        assert_eq!(
            parse_metric("Sum( registered_capital )", ent),
            Ok(metric(AggregateFunction::Sum, "registered_capital"))
        );
        assert_eq!(
            parse_metric("avg(registered_capital)", ent),
            Ok(metric(AggregateFunction::Avg, "registered_capital"))
        );
        assert_eq!(
            parse_metric("min(established)", ent),
            Ok(metric(AggregateFunction::Min, "established"))
        );
        assert_eq!(
            parse_metric("max(name)", ent),
            Ok(metric(AggregateFunction::Max, "name"))
        );
        let air = schema("air_quality");
        assert_eq!(
            parse_metric("max(observed_at)", air),
            Ok(metric(AggregateFunction::Max, "observed_at"))
        );
        assert_eq!(parse_metric("avg(aqi)", air), Ok(metric(AggregateFunction::Avg, "aqi")));
    }

    #[test]
    fn metric_errors() {
        let ent = schema("enterprise");
        let syntax = |text: &str, position: usize, fragment: &str| match parse_metric(text, ent) {
            Err(e @ QueryError::Syntax { param: "metrics", .. }) => {
                assert!(
                    matches!(e, QueryError::Syntax { position: p, .. } if p == position),
                    "{text}: {e}"
                );
                assert!(e.to_string().contains(fragment), "{text}: {e}");
            }
            other => panic!("{text}: {other:?}"),
        };
        syntax("median(aqi)", 1, "expected count, sum, avg, min or max, found `median`");
        syntax("", 1, "found end of metric");
        syntax("(x)", 1, "found `(`");
        syntax("sum registered_capital", 5, "expected `(` after sum");
        syntax("sum(*)", 5, "only count accepts `*`");
        syntax("count()", 7, "expected a field name, found `)`");
        syntax("count(name", 11, "expected `)`, found end of metric");
        syntax("count(name) x", 13, "expected end of metric");

        assert!(matches!(
            parse_metric("sum(nope)", ent),
            Err(QueryError::UnknownField { param: "metrics", .. })
        ));
        assert_eq!(
            parse_metric("count(legal_representative)", ent),
            Err(QueryError::FieldNotAllowed {
                param: "metrics",
                field: "legal_representative".into(),
                reason: "may not be aggregated".into()
            })
        );
        let reason = |text: &str, s: &DatasetSchema| match parse_metric(text, s) {
            Err(QueryError::FieldNotAllowed { reason, .. }) => reason,
            other => panic!("{text}: {other:?}"),
        };
        assert_eq!(reason("sum(established)", ent), "is a date, and sum needs a number");
        assert_eq!(reason("avg(name)", ent), "is a string, and avg needs a number");
        // primary_pollutant is filterable but not sortable.
        assert!(reason("min(primary_pollutant)", schema("air_quality")).contains("has no order for min"));
    }

    #[test]
    fn typed_metrics_and_names() {
        let ent = schema("enterprise");
        let limits = Limits::default();
        let good = [
            metric(AggregateFunction::Count, ""),
            metric(AggregateFunction::Sum, "registered_capital"),
            metric(AggregateFunction::Max, "established"),
        ];
        assert_eq!(check_metrics(&good, ent, &limits), Ok(()));
        assert_eq!(check_metrics(&[], ent, &limits), Ok(()));
        assert!(matches!(
            check_metrics(&[metric(AggregateFunction::Sum, "")], ent, &limits),
            Err(QueryError::Invalid { param: "metrics", message }) if message == "sum needs a field"
        ));
        assert!(matches!(
            check_metrics(
                &[Metric {
                    function: 0,
                    field: "city".into()
                }],
                ent,
                &limits
            ),
            Err(QueryError::Invalid { param: "metrics", .. })
        ));
        assert!(
            check_metrics(
                &[Metric {
                    function: 42,
                    field: "city".into()
                }],
                ent,
                &limits
            )
            .is_err()
        );
        assert!(check_metrics(&[metric(AggregateFunction::Avg, "city")], ent, &limits).is_err());
        let few = Limits {
            max_metrics: 2,
            ..Limits::default()
        };
        assert_eq!(
            check_metrics(&good, ent, &few),
            Err(QueryError::Limit {
                param: "metrics",
                limit: "max_metrics",
                max: 2,
                actual: 3
            })
        );

        assert_eq!(metric_name(&good[0]), "count(*)");
        assert_eq!(metric_name(&good[1]), "sum(registered_capital)");
        assert_eq!(metric_name(&metric(AggregateFunction::Avg, "aqi")), "avg(aqi)");
        assert_eq!(
            metric_name(&Metric {
                function: 42,
                field: "x".into()
            }),
            "unspecified(x)"
        );
        // A metric name parses back to the metric.
        for m in &good {
            assert_eq!(parse_metric(&metric_name(m), ent).as_ref(), Ok(m));
        }
    }

    #[test]
    fn group_by() {
        let ent = schema("enterprise");
        let limits = Limits::default();
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(check_group_by(&names(&["region", "status"]), ent, &limits), Ok(()));
        assert_eq!(check_group_by(&[], ent, &limits), Ok(()));
        assert!(matches!(
            check_group_by(&names(&["nope"]), ent, &limits),
            Err(QueryError::UnknownField { param: "group_by", .. })
        ));
        assert_eq!(
            check_group_by(&names(&["address"]), ent, &limits),
            Err(QueryError::FieldNotAllowed {
                param: "group_by",
                field: "address".into(),
                reason: "may not be grouped by".into()
            })
        );
        assert!(matches!(
            check_group_by(&names(&["city", "city"]), ent, &limits),
            Err(QueryError::Invalid { param: "group_by", .. })
        ));
        assert_eq!(
            check_group_by(
                &names(&["region", "city", "district", "status", "industry"]),
                ent,
                &limits
            ),
            Err(QueryError::Limit {
                param: "group_by",
                limit: "max_group_by",
                max: 4,
                actual: 5
            })
        );
    }
}
