//! Merging partial aggregates: each region returns, per group, a
//! [`MetricPartial`] per metric (count, sum, min, max); the gateway merges
//! the regions' partials and only then computes each metric's value, so
//! that an average is the total sum over the total count, not a mean of
//! means.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use yrd_proto::mesh::{AggregateFunction, AggregateGroup, Metric, MetricPartial, Value, value};

use crate::sortkey::KeyWriter;
use crate::{Limits, QueryError};

/// 2^63, the first double above every `i64`.
const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;

/// Orders two values: values of one kind naturally (strings and dates
/// bytewise, doubles with NaN last), integers and doubles numerically, a
/// missing value first, and otherwise by kind.
pub fn compare_values(a: &Value, b: &Value) -> Ordering {
    match (&a.kind, &b.kind) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(x), Some(y)) => compare_kinds(x, y),
    }
}

/// Adds `other` into `into`: counts and sums add, the smaller minimum and
/// the larger maximum are kept. The merged partial has no value until
/// [`finish`]ed.
pub fn merge_partial(into: &mut MetricPartial, other: &MetricPartial) {
    into.count = into.count.saturating_add(other.count);
    into.sum += other.sum;
    keep(&mut into.min, other.min.as_ref(), Ordering::Less);
    keep(&mut into.max, other.max.as_ref(), Ordering::Greater);
    into.value = None;
}

/// Sets a partial's value for its metric's function: the count, the sum,
/// the minimum or maximum, or the average (none when nothing was counted).
pub fn finish(partial: &mut MetricPartial, function: AggregateFunction) {
    let double = |v: f64| Value {
        kind: Some(value::Kind::DoubleValue(v)),
    };
    partial.value = match function {
        AggregateFunction::Count => Some(Value {
            kind: Some(value::Kind::IntValue(i64::try_from(partial.count).unwrap_or(i64::MAX))),
        }),
        AggregateFunction::Sum => Some(double(partial.sum)),
        AggregateFunction::Min => partial.min.clone(),
        AggregateFunction::Max => partial.max.clone(),
        AggregateFunction::Avg => (partial.count > 0).then(|| double(partial.sum / partial.count as f64)),
        AggregateFunction::Unspecified => None,
    };
}

/// Merges the groups of several regions: groups with equal keys are merged
/// metric by metric and finished; the result is ordered by keys. More than
/// `max_groups` distinct groups is an error.
pub fn merge_groups(
    parts: Vec<Vec<AggregateGroup>>,
    metrics: &[Metric],
    max_groups: usize,
) -> Result<Vec<AggregateGroup>, QueryError> {
    // Keyed by the encoded group keys: equal keys are equal bytes, and the
    // map's order is the keys' order.
    let mut groups: BTreeMap<Vec<u8>, AggregateGroup> = BTreeMap::new();
    let mut writer = KeyWriter::new();
    for group in parts.into_iter().flatten() {
        if group.metrics.len() != metrics.len() {
            return Err(QueryError::Invalid {
                param: "metrics",
                message: format!(
                    "a group has {} partials for {} metrics",
                    group.metrics.len(),
                    metrics.len()
                ),
            });
        }
        writer.clear();
        for key in &group.keys {
            writer.push_value(key, false).map_err(|e| QueryError::Invalid {
                param: "group_by",
                message: format!("a group key does not encode: {}", e.description()),
            })?;
        }
        match groups.entry(writer.as_bytes().to_vec()) {
            Entry::Vacant(slot) => {
                slot.insert(group);
            }
            Entry::Occupied(mut slot) => {
                for (into, other) in slot.get_mut().metrics.iter_mut().zip(&group.metrics) {
                    merge_partial(into, other);
                }
            }
        }
    }
    Limits::check("group_by", "max_groups", max_groups, groups.len())?;
    let functions: Vec<AggregateFunction> = metrics
        .iter()
        .map(|m| AggregateFunction::try_from(m.function).unwrap_or(AggregateFunction::Unspecified))
        .collect();
    Ok(groups
        .into_values()
        .map(|mut group| {
            for (partial, &function) in group.metrics.iter_mut().zip(&functions) {
                finish(partial, function);
            }
            group
        })
        .collect())
}

/// Replaces `current` with `candidate` when it is present and compares as
/// `wanted` against it. A value with no kind counts as absent.
fn keep(current: &mut Option<Value>, candidate: Option<&Value>, wanted: Ordering) {
    let Some(candidate) = candidate.filter(|v| v.kind.is_some()) else {
        return;
    };
    let replace = match current.as_ref().filter(|v| v.kind.is_some()) {
        None => true,
        Some(existing) => compare_values(candidate, existing) == wanted,
    };
    if replace {
        *current = Some(candidate.clone());
    }
}

fn compare_kinds(x: &value::Kind, y: &value::Kind) -> Ordering {
    use value::Kind;
    match (x, y) {
        (Kind::StringValue(a), Kind::StringValue(b)) | (Kind::DateValue(a), Kind::DateValue(b)) => a.cmp(b),
        (Kind::IntValue(a), Kind::IntValue(b)) => a.cmp(b),
        (Kind::DoubleValue(a), Kind::DoubleValue(b)) => compare_doubles(*a, *b),
        (Kind::IntValue(a), Kind::DoubleValue(b)) => compare_int_double(*a, *b),
        (Kind::DoubleValue(a), Kind::IntValue(b)) => compare_int_double(*b, *a).reverse(),
        (Kind::BoolValue(a), Kind::BoolValue(b)) => a.cmp(b),
        (Kind::TimestampValue(a), Kind::TimestampValue(b)) => (a.seconds, a.nanos).cmp(&(b.seconds, b.nanos)),
        _ => kind_rank(x).cmp(&kind_rank(y)),
    }
}

/// The order of kinds that do not compare, as in sort keys.
fn kind_rank(kind: &value::Kind) -> u8 {
    match kind {
        value::Kind::BoolValue(_) => 0,
        value::Kind::IntValue(_) | value::Kind::DoubleValue(_) => 1,
        value::Kind::TimestampValue(_) => 2,
        value::Kind::StringValue(_) => 3,
        value::Kind::DateValue(_) => 4,
    }
}

/// Doubles in the sort key order: `-0.0 = 0.0`, NaN after everything.
fn compare_doubles(a: f64, b: f64) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
    }
}

/// An integer against a double, exactly: converting either to the other's
/// type could round.
fn compare_int_double(i: i64, d: f64) -> Ordering {
    if d.is_nan() || d >= TWO_POW_63 {
        return Ordering::Less;
    }
    if d < -TWO_POW_63 {
        return Ordering::Greater;
    }
    let whole = d.trunc();
    // Exact: whole is an integer in [-2^63, 2^63).
    let whole_int = whole as i64;
    i.cmp(&whole_int)
        .then_with(|| whole.partial_cmp(&d).unwrap_or(Ordering::Equal))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int(v: i64) -> Value {
        Value {
            kind: Some(value::Kind::IntValue(v)),
        }
    }

    fn double(v: f64) -> Value {
        Value {
            kind: Some(value::Kind::DoubleValue(v)),
        }
    }

    fn string(v: &str) -> Value {
        Value {
            kind: Some(value::Kind::StringValue(v.into())),
        }
    }

    fn partial(count: u64, sum: f64, min: Option<Value>, max: Option<Value>) -> MetricPartial {
        MetricPartial {
            count,
            sum,
            min,
            max,
            value: None,
        }
    }

    fn metric(function: AggregateFunction, field: &str) -> Metric {
        Metric {
            function: function as i32,
            field: field.into(),
        }
    }

    fn group(keys: Vec<Value>, metrics: Vec<MetricPartial>) -> AggregateGroup {
        AggregateGroup { keys, metrics }
    }

    #[test]
    fn values_compare() {
        use Ordering::*;
        let none = Value::default();
        let cases = [
            (none.clone(), none.clone(), Equal),
            (none.clone(), int(i64::MIN), Less),
            (string("b"), none.clone(), Greater),
            (string("a"), string("ab"), Less),
            (string("Z"), string("a"), Less),
            (int(-3), int(2), Less),
            (double(-0.0), double(0.0), Equal),
            (double(f64::NAN), double(f64::INFINITY), Greater),
            (double(f64::NAN), double(f64::NAN), Equal),
            (int(3), double(3.5), Less),
            (int(4), double(3.5), Greater),
            (int(-3), double(-3.5), Greater),
            (int(-4), double(-3.5), Less),
            (int(5), double(5.0), Equal),
            (double(5.0), int(5), Equal),
            (double(2.5), int(3), Less),
            (int(i64::MAX), double(9_223_372_036_854_775_807.0), Less),
            (int(i64::MIN), double(-9_223_372_036_854_775_808.0), Equal),
            (int(i64::MIN), double(f64::NEG_INFINITY), Greater),
            (int(0), double(f64::NAN), Less),
            (int(1), double(-0.0), Greater),
            (
                Value {
                    kind: Some(value::Kind::DateValue("2020-01-02".into())),
                },
                Value {
                    kind: Some(value::Kind::DateValue("2021-01-01".into())),
                },
                Less,
            ),
            (
                Value {
                    kind: Some(value::Kind::BoolValue(true)),
                },
                Value {
                    kind: Some(value::Kind::BoolValue(false)),
                },
                Greater,
            ),
            (
                Value {
                    kind: Some(value::Kind::TimestampValue(prost_types::Timestamp {
                        seconds: 5,
                        nanos: 1,
                    })),
                },
                Value {
                    kind: Some(value::Kind::TimestampValue(prost_types::Timestamp {
                        seconds: 5,
                        nanos: 0,
                    })),
                },
                Greater,
            ),
            (int(1), string("0"), Less),
        ];
        for (a, b, expected) in cases {
            assert_eq!(compare_values(&a, &b), expected, "{a:?} vs {b:?}");
            assert_eq!(compare_values(&b, &a), expected.reverse(), "{b:?} vs {a:?}");
        }
    }

    #[test]
    fn partials_merge() {
        let mut into = partial(2, 10.0, Some(int(3)), Some(int(7)));
        merge_partial(&mut into, &partial(3, 5.5, Some(int(1)), Some(int(5))));
        assert_eq!(into, partial(5, 15.5, Some(int(1)), Some(int(7))));

        // Missing extremes take the other side's.
        let mut empty = MetricPartial {
            value: Some(int(99)),
            ..MetricPartial::default()
        };
        merge_partial(&mut empty, &into);
        assert_eq!(empty, into);
        let mut kept = into.clone();
        merge_partial(&mut kept, &MetricPartial::default());
        assert_eq!(kept, into);
        // A value with no kind is no value.
        let mut blank = partial(0, 0.0, Some(Value::default()), None);
        merge_partial(&mut blank, &partial(1, 2.0, Some(int(2)), Some(Value::default())));
        assert_eq!((blank.min, blank.max), (Some(int(2)), None));
    }

    #[test]
    fn partials_finish() {
        let mut p = partial(4, 10.0, Some(double(0.5)), Some(double(6.0)));
        let value = |p: &mut MetricPartial, f| {
            finish(p, f);
            p.value.clone()
        };
        assert_eq!(value(&mut p, AggregateFunction::Count), Some(int(4)));
        assert_eq!(value(&mut p, AggregateFunction::Sum), Some(double(10.0)));
        assert_eq!(value(&mut p, AggregateFunction::Min), Some(double(0.5)));
        assert_eq!(value(&mut p, AggregateFunction::Max), Some(double(6.0)));
        assert_eq!(value(&mut p, AggregateFunction::Avg), Some(double(2.5)));
        assert_eq!(value(&mut p, AggregateFunction::Unspecified), None);
        let mut nothing = MetricPartial {
            value: Some(int(1)),
            ..MetricPartial::default()
        };
        assert_eq!(value(&mut nothing, AggregateFunction::Avg), None);
        assert_eq!(value(&mut nothing, AggregateFunction::Count), Some(int(0)));
        assert_eq!(value(&mut nothing, AggregateFunction::Min), None);
    }

    #[test]
    fn average_is_total_sum_over_total_count() {
        let metrics = [
            metric(AggregateFunction::Avg, "aqi"),
            metric(AggregateFunction::Count, ""),
        ];
        let parts = vec![
            vec![group(
                vec![],
                vec![partial(1, 10.0, None, None), partial(1, 0.0, None, None)],
            )],
            vec![group(
                vec![],
                vec![partial(4, 20.0, None, None), partial(4, 0.0, None, None)],
            )],
        ];
        let merged = merge_groups(parts, &metrics, 10).unwrap();
        assert_eq!(merged.len(), 1);
        // The mean of the means would be 7.5.
        assert_eq!(merged[0].metrics[0].value, Some(double(6.0)));
        assert_eq!(merged[0].metrics[1].value, Some(int(5)));
    }

    #[test]
    fn groups_merge_by_key_in_key_order() {
        let metrics = [
            metric(AggregateFunction::Sum, "registered_capital"),
            metric(AggregateFunction::Min, "established"),
            metric(AggregateFunction::Max, "aqi"),
        ];
        let date = |d: &str| {
            Some(Value {
                kind: Some(value::Kind::DateValue(d.into())),
            })
        };
        let g = |region: &str, level: i64, count, sum, min: &str, max| {
            group(
                vec![string(region), int(level)],
                vec![
                    partial(count, sum, None, None),
                    partial(count, 0.0, date(min), None),
                    partial(count, 0.0, None, Some(int(max))),
                ],
            )
        };
        let parts = vec![
            vec![
                g("320000", 2, 1, 5.0, "2020-05-01", 80),
                g("320000", -1, 2, 1.0, "2019-01-01", 10),
            ],
            vec![g("310000", 2, 3, 7.0, "2021-01-01", 50)],
            vec![
                g("320000", 2, 4, 2.0, "2018-03-01", 120),
                g("320000\0", 0, 1, 1.0, "2000-01-01", 1),
            ],
            vec![],
        ];
        let merged = merge_groups(parts, &metrics, 4).unwrap();
        let keys: Vec<(Value, Value)> = merged.iter().map(|g| (g.keys[0].clone(), g.keys[1].clone())).collect();
        assert_eq!(
            keys,
            [
                (string("310000"), int(2)),
                (string("320000"), int(-1)),
                (string("320000"), int(2)),
                (string("320000\0"), int(0))
            ]
        );
        let merged_group = &merged[2];
        assert_eq!(merged_group.metrics[0].count, 5);
        assert_eq!(merged_group.metrics[0].value, Some(double(7.0)));
        assert_eq!(merged_group.metrics[1].value, date("2018-03-01"));
        assert_eq!(merged_group.metrics[2].value, Some(int(120)));
        // A group seen once is finished too.
        assert_eq!(merged[0].metrics[0].value, Some(double(7.0)));

        assert!(merge_groups(vec![], &metrics, 0).unwrap().is_empty());
    }

    #[test]
    fn too_many_groups() {
        let metrics = [metric(AggregateFunction::Count, "")];
        let parts: Vec<Vec<AggregateGroup>> = (0..3)
            .map(|part| {
                (0..4)
                    .map(|i| group(vec![int(part * 2 + i)], vec![partial(1, 0.0, None, None)]))
                    .collect()
            })
            .collect();
        // Keys 0..=7 overlap across parts: 8 distinct groups.
        assert_eq!(merge_groups(parts.clone(), &metrics, 8).map(|g| g.len()), Ok(8));
        assert_eq!(
            merge_groups(parts, &metrics, 7),
            Err(QueryError::Limit {
                param: "group_by",
                limit: "max_groups",
                max: 7,
                actual: 8
            })
        );
    }

    #[test]
    fn malformed_groups_are_refused() {
        let metrics = [
            metric(AggregateFunction::Count, ""),
            metric(AggregateFunction::Sum, "x"),
        ];
        let short = vec![vec![group(vec![], vec![MetricPartial::default()])]];
        assert!(matches!(
            merge_groups(short, &metrics, 10),
            Err(QueryError::Invalid { param: "metrics", .. })
        ));
        let bad_key = Value {
            kind: Some(value::Kind::TimestampValue(prost_types::Timestamp {
                seconds: 0,
                nanos: 2_000_000_000,
            })),
        };
        let parts = vec![vec![group(
            vec![bad_key],
            vec![MetricPartial::default(), MetricPartial::default()],
        )]];
        assert!(matches!(
            merge_groups(parts, &metrics, 10),
            Err(QueryError::Invalid { param: "group_by", .. })
        ));
    }
}
