//! Row validation shared by imports and the demo generators: a generator
//! that writes data its own importer would reject is a bug.
//!
//! [`validate_row`] reports every problem of a row, not just the first.
//! Values of personal and secret fields never appear in a reason, so that
//! reasons can go to logs and to the client that sent the row. The check
//! that a row belongs to the node's own region is the node's, not ours.

use std::fmt;

use time::{Date, Month};
use yrd_proto::datetime::parse_date;
use yrd_proto::mesh::ValueFormat;
use yrd_proto::schema::{DatasetSchema, FieldSchema, FieldType};

use crate::codes::{aqi, check_code, credit_code, property, regions, resident_id, water};
use crate::record::{Cell, NamedRow};
use crate::spec;

/// Earliest valid date of establishment: the founding of the People's
/// Republic, before which no registered entity still exists.
const EARLIEST_ESTABLISHED: (i32, Month, u8) = (1949, Month::October, 1);
/// Latest valid date of establishment: a generous bound that catches typing
/// errors without depending on today's date.
const LATEST_ESTABLISHED: (i32, Month, u8) = (2100, Month::December, 31);

/// One problem with a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The field at fault, if the problem is one field's.
    pub field: Option<String>,
    /// The rule broken, a stable short code such as `required`,
    /// `code_list` or `max_length`: what rejections are counted by.
    pub rule: &'static str,
    /// What is wrong.
    pub reason: String,
}

impl Violation {
    /// A problem with one field, breaking `rule`.
    pub fn field(field: &str, rule: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field: Some(field.to_owned()),
            rule,
            reason: reason.into(),
        }
    }

    /// A problem with the row as a whole, breaking `rule`.
    pub fn row(rule: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field: None,
            rule,
            reason: reason.into(),
        }
    }

    /// What kind of problem this is, without any value: the field and the
    /// rule (`address: max_length`), or the rule alone for a row's problem.
    pub fn cause(&self) -> String {
        match &self.field {
            Some(field) => format!("{field}: {}", self.rule),
            None => self.rule.to_owned(),
        }
    }
}

/// The violation of a text longer than its field's `max_length` allows:
/// names the field, the limit and the length found, never the value.
pub fn too_long(field: &FieldSchema, max: usize, chars: usize) -> Violation {
    Violation::field(
        &field.name,
        "max_length",
        format!("is {chars} characters long, more than its max_length of {max}"),
    )
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{field}: {}", self.reason),
            None => f.write_str(&self.reason),
        }
    }
}

impl std::error::Error for Violation {}

/// Orders a generator's named cells by the schema's fields. A field the
/// dataset does not have, or one given twice, is a violation.
pub fn cells_from_named(schema: &DatasetSchema, row: NamedRow) -> Result<Vec<Option<Cell>>, Violation> {
    let mut cells: Vec<Option<Cell>> = vec![None; schema.fields.len()];
    for (name, cell) in row {
        let Some((i, _)) = schema.field(name) else {
            return Err(Violation::field(
                name,
                "unknown_field",
                format!("dataset {} has no such field", schema.id),
            ));
        };
        if cells[i].is_some() {
            return Err(Violation::field(name, "given_twice", "is given twice"));
        }
        cells[i] = Some(cell);
    }
    Ok(cells)
}

/// Every problem of a row whose cells are in the order of `schema.fields`.
pub fn validate_row(schema: &DatasetSchema, cells: &[Option<Cell>]) -> Vec<Violation> {
    let mut out = Vec::new();
    if cells.len() != schema.fields.len() {
        out.push(Violation::row(
            "field_count",
            format!(
                "row has {} values but dataset {} has {} fields",
                cells.len(),
                schema.id,
                schema.fields.len()
            ),
        ));
        return out;
    }
    for (field, cell) in schema.fields.iter().zip(cells) {
        check_field(field, cell.as_ref(), &mut out);
    }
    if let Some(spec) = spec::find(&schema.id) {
        (spec.rules)(&Row { schema, cells }, &mut out);
    }
    out
}

/// A cell that counts as a value: empty text is no value.
fn present(cell: Option<&Cell>) -> Option<&Cell> {
    cell.filter(|c| !matches!(c, Cell::Text(s) if s.is_empty()))
}

/// The rules every field follows: required, type, minimum, code list and
/// value format.
fn check_field(field: &FieldSchema, cell: Option<&Cell>, out: &mut Vec<Violation>) {
    let name = field.name.as_str();
    let Some(cell) = present(cell) else {
        if field.required {
            out.push(Violation::field(name, "required", "is required"));
        }
        return;
    };
    let kind_ok = matches!(
        (field.ty, cell),
        (FieldType::String | FieldType::Date, Cell::Text(_))
            | (FieldType::Int, Cell::Int(_))
            | (FieldType::Double, Cell::Real(_))
            | (FieldType::Bool, Cell::Bool(_))
            | (FieldType::Timestamp, Cell::Time(_))
    );
    if !kind_ok {
        out.push(Violation::field(
            name,
            "type",
            format!("must be a {}, not a {}", field.ty.name(), kind_name(cell)),
        ));
        return;
    }
    if let Cell::Real(v) = cell
        && !v.is_finite()
    {
        out.push(Violation::field(name, "finite", "is not a finite number"));
        return;
    }
    if let (Some(min), Some(v)) = (field.min, cell.as_f64())
        && v < min
    {
        let reason = if field.is_confidential() {
            format!("must be at least {min}")
        } else {
            format!("must be at least {min}, not {v}")
        };
        out.push(Violation::field(name, "min", reason));
    }
    let Cell::Text(text) = cell else { return };
    if let Some(max) = field.max_length {
        // Bytes bound characters from above: most texts need no count.
        let chars = if text.len() <= max {
            text.len()
        } else {
            text.chars().count()
        };
        if chars > max {
            out.push(too_long(field, max, chars));
            // The other checks would only read a value that is refused.
            return;
        }
    }
    if let Some(list) = &field.code_list
        && let Err(reason) = check_code(list, text)
    {
        let reason = if field.is_confidential() {
            format!("is not a code of {list}")
        } else {
            reason
        };
        out.push(Violation::field(name, "code_list", reason));
    }
    let format = if field.ty == FieldType::Date {
        ValueFormat::Date
    } else {
        field.format
    };
    match format {
        ValueFormat::Date if parse_date(text).is_none() => {
            let reason = if field.is_confidential() {
                "is not a valid YYYY-MM-DD date".to_owned()
            } else {
                format!("{text:?} is not a valid YYYY-MM-DD date")
            };
            out.push(Violation::field(name, "date", reason));
        }
        ValueFormat::CreditCode => {
            if let Err(reason) = credit_code::validate(text) {
                let reason = if field.is_confidential() {
                    "is not a valid unified social credit code".to_owned()
                } else {
                    reason
                };
                out.push(Violation::field(name, "credit_code", reason));
            }
        }
        ValueFormat::ResidentId => {
            // resident_id never quotes the number, whatever the field's sensitivity.
            if let Err(reason) = resident_id::validate(text) {
                out.push(Violation::field(name, "resident_id", reason));
            }
        }
        _ => {}
    }
}

fn kind_name(cell: &Cell) -> &'static str {
    match cell {
        Cell::Text(_) => "string",
        Cell::Int(_) => "integer",
        Cell::Real(_) => "number",
        Cell::Bool(_) => "boolean",
        Cell::Time(_) => "timestamp",
    }
}

/// Typed access to a row's cells by field name, for the dataset rules. A
/// getter gives `None` when the field is missing, empty or of another kind:
/// [`check_field`] has reported those already.
pub(crate) struct Row<'a> {
    schema: &'a DatasetSchema,
    cells: &'a [Option<Cell>],
}

impl<'a> Row<'a> {
    fn cell(&self, name: &str) -> Option<&'a Cell> {
        let (i, _) = self.schema.field(name)?;
        present(self.cells.get(i)?.as_ref())
    }

    fn text(&self, name: &str) -> Option<&'a str> {
        self.cell(name)?.as_text()
    }

    fn real(&self, name: &str) -> Option<f64> {
        match self.cell(name)? {
            Cell::Real(v) if v.is_finite() => Some(*v),
            _ => None,
        }
    }

    fn int(&self, name: &str) -> Option<i64> {
        match self.cell(name)? {
            Cell::Int(v) => Some(*v),
            _ => None,
        }
    }

    fn date(&self, name: &str) -> Option<Date> {
        parse_date(self.text(name)?)
    }

    /// A value fit for a reason: quoted, or withheld if the field is
    /// personal or secret.
    fn show(&self, name: &str, value: &str) -> String {
        match self.schema.field(name) {
            Some((_, f)) if !f.is_confidential() => format!("{value:?}"),
            _ => "(value withheld)".to_owned(),
        }
    }
}

/// The city field names a prefecture-level city of the row's region.
fn city_in_region(row: &Row<'_>, out: &mut Vec<Violation>) {
    let (Some(region), Some(city)) = (row.text("region"), row.text("city")) else {
        return;
    };
    if let Some(c) = regions::city(city)
        && c.province_code() != region
    {
        out.push(Violation::field(
            "city",
            "city_region",
            format!(
                "city {} ({}) is not in region {}",
                row.show("city", city),
                c.name_zh,
                row.show("region", region)
            ),
        ));
    }
}

/// The credit code in `field` was issued in `region` (its area code is a
/// province, city or county-level code of that region).
fn credit_code_in_region(row: &Row<'_>, field: &str, region: Option<&str>, out: &mut Vec<Violation>) {
    let (Some(code), Some(region)) = (row.text(field), region) else {
        return;
    };
    if credit_code::validate(code).is_err() || regions::province(region).is_none() {
        return;
    }
    let area = credit_code::area_code(code).unwrap_or_default();
    if !regions::is_within(area, region) {
        out.push(Violation::field(
            field,
            "credit_code_region",
            format!(
                "area code {} in the credit code is not a GB/T 2260 division of region {region}",
                row.show(field, area)
            ),
        ));
    }
}

pub(crate) fn enterprise_rules(row: &Row<'_>, out: &mut Vec<Violation>) {
    city_in_region(row, out);
    if let (Some(city), Some(district)) = (row.text("city"), row.text("district"))
        && let Some((c, name)) = regions::district(district)
        && regions::city(city).is_some()
        && c.code != city
    {
        out.push(Violation::field(
            "district",
            "district_city",
            format!(
                "district {} ({name}) is not in city {}",
                row.show("district", district),
                row.show("city", city)
            ),
        ));
    }
    credit_code_in_region(row, "credit_code", row.text("region"), out);
    if let Some(established) = row.date("established") {
        let bound = |(y, m, d): (i32, Month, u8), or: Date| Date::from_calendar_date(y, m, d).unwrap_or(or);
        let earliest = bound(EARLIEST_ESTABLISHED, Date::MIN);
        let latest = bound(LATEST_ESTABLISHED, Date::MAX);
        if established < earliest || established > latest {
            out.push(Violation::field(
                "established",
                "date_range",
                format!("must lie between {earliest} and {latest}"),
            ));
        }
    }
}

pub(crate) fn air_quality_rules(row: &Row<'_>, out: &mut Vec<Violation>) {
    city_in_region(row, out);
    let readings: Option<Vec<f64>> = ["pm25", "pm10", "o3", "no2", "so2", "co"]
        .iter()
        .map(|f| row.real(f))
        .collect();
    let Some(r) = readings else { return };
    let expected = aqi::compute(r[0], r[1], r[2], r[3], r[4], r[5]);
    if let Some(v) = row.int("aqi")
        && v != expected.aqi
    {
        out.push(Violation::field(
            "aqi",
            "aqi",
            format!("is {v} but HJ 633-2012 gives {} for these readings", expected.aqi),
        ));
    }
    if let Some(v) = row.int("aqi_level")
        && v != expected.level
    {
        out.push(Violation::field(
            "aqi_level",
            "aqi_level",
            format!(
                "is {v} but HJ 633-2012 gives level {} for AQI {}",
                expected.level, expected.aqi
            ),
        ));
    }
    let primary = row.text("primary_pollutant");
    if primary != expected.primary {
        let reason = match (primary, expected.primary) {
            (Some(p), None) => format!(
                "is {p:?} but must be empty when the AQI ({}) is 50 or less",
                expected.aqi
            ),
            (None, Some(e)) => format!("is empty but HJ 633-2012 gives {e:?} for AQI {}", expected.aqi),
            (p, e) => format!(
                "is {:?} but HJ 633-2012 gives {:?}",
                p.unwrap_or_default(),
                e.unwrap_or_default()
            ),
        };
        out.push(Violation::field("primary_pollutant", "primary_pollutant", reason));
    }
}

pub(crate) fn water_quality_rules(row: &Row<'_>, out: &mut Vec<Violation>) {
    city_in_region(row, out);
    let Some(body) = row.text("water_body").and_then(water::water_body) else {
        return;
    };
    if let Some(region) = row.text("region")
        && regions::province(region).is_some()
        && !body.regions.contains(&region)
    {
        out.push(Violation::field(
            "water_body",
            "water_body_region",
            format!("{} ({}) has no sections in region {region}", body.code, body.name_zh),
        ));
    }
    let readings: Option<Vec<f64>> = [
        "dissolved_oxygen",
        "permanganate_index",
        "ammonia_nitrogen",
        "total_phosphorus",
        "total_nitrogen",
    ]
    .iter()
    .map(|f| row.real(f))
    .collect();
    let (Some(r), Some(class)) = (readings, row.text("water_class")) else {
        return;
    };
    let expected = water::classify(r[0], r[1], r[2], r[3], r[4], body.is_lake);
    if class != expected {
        let kind = if body.is_lake { "lake" } else { "river" };
        out.push(Violation::field(
            "water_class",
            "water_class",
            format!("is {class:?} but GB 3838-2002 gives {expected:?} for these readings ({kind} limits)"),
        ));
    }
}

pub(crate) fn hazardous_waste_rules(row: &Row<'_>, out: &mut Vec<Violation>) {
    let region = row.text("region");
    let receiver_region = row.text("receiver_region");
    if region.is_some() && region == receiver_region {
        out.push(Violation::field(
            "receiver_region",
            "cross_provincial",
            "must differ from region: manifests record cross-provincial transfers",
        ));
    }
    credit_code_in_region(row, "producer_credit_code", region, out);
    credit_code_in_region(row, "receiver_credit_code", receiver_region, out);
    let shipped = row.date("shipped_date");
    let received = row.date("received_date");
    if let (Some(s), Some(r)) = (shipped, received)
        && r < s
    {
        out.push(Violation::field(
            "received_date",
            "date_order",
            "is before shipped_date",
        ));
    }
    let has_received = row.text("received_date").is_some();
    match row.text("status") {
        Some("received") if !has_received => {
            out.push(Violation::field(
                "received_date",
                "received_date",
                "is required when status is received",
            ));
        }
        Some(status) if status != "received" && has_received => {
            out.push(Violation::field(
                "received_date",
                "received_date",
                format!("must be empty when status is {status:?}"),
            ));
        }
        _ => {}
    }
}

pub(crate) fn property_rights_rules(row: &Row<'_>, out: &mut Vec<Violation>) {
    if let (Some(listed), Some(deal)) = (row.date("listed_date"), row.date("deal_date"))
        && deal < listed
    {
        out.push(Violation::field("deal_date", "date_order", "is before listed_date"));
    }
    if let (Some(from), Some(to)) = (row.text("transferor_credit_code"), row.text("transferee_credit_code"))
        && from == to
    {
        out.push(Violation::field(
            "transferee_credit_code",
            "two_parties",
            "is the transferor's: a deal needs two parties",
        ));
    }
    if let (Some(code), Some(region)) = (row.text("exchange"), row.text("region"))
        && let Some(ex) = property::exchange(code)
        && regions::province(region).is_some()
        && ex.region != region
    {
        out.push(Violation::field(
            "exchange",
            "exchange_region",
            format!("{} ({}) is in region {}, not {region}", ex.code, ex.name_zh, ex.region),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codes::credit_code::make;
    use yrd_proto::schema::Registry;

    fn schema(id: &str) -> &'static DatasetSchema {
        Registry::standard().unwrap().get(id).unwrap()
    }

    fn check(id: &str, row: NamedRow) -> Vec<Violation> {
        let cells = cells_from_named(schema(id), row).unwrap();
        validate_row(schema(id), &cells)
    }

    fn set(mut row: NamedRow, name: &'static str, cell: Cell) -> NamedRow {
        row.retain(|(n, _)| *n != name);
        row.push((name, cell));
        row
    }

    fn without(mut row: NamedRow, name: &str) -> NamedRow {
        row.retain(|(n, _)| *n != name);
        row
    }

    fn text(s: &str) -> Cell {
        Cell::Text(s.to_owned())
    }

    /// Asserts exactly one violation, on `field`, whose reason contains `needle`.
    fn assert_one(violations: &[Violation], field: &str, needle: &str) {
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert_eq!(violations[0].field.as_deref(), Some(field), "{violations:?}");
        assert!(
            violations[0].reason.contains(needle),
            "{:?} lacks {needle:?}",
            violations[0].reason
        );
    }

    const REP_NAME: &str = "张伟";

    fn rep_id() -> String {
        resident_id::make("310115", parse_date("1980-05-17").unwrap(), 131)
    }

    fn enterprise() -> NamedRow {
        vec![
            ("credit_code", Cell::Text(make('9', '1', "310115", "MA1FL8K2"))),
            ("name", text("上海恒达贸易有限公司")),
            ("legal_representative", text(REP_NAME)),
            ("representative_id_number", Cell::Text(rep_id())),
            ("region", text("310000")),
            ("city", text("310100")),
            ("district", text("310115")),
            ("industry", text("F51")),
            ("registered_capital", Cell::Real(1_000_000.0)),
            ("established", text("2018-03-12")),
            ("status", text("active")),
            ("address", text("上海市浦东新区张杨路500号")),
        ]
    }

    #[test]
    fn a_good_enterprise_passes() {
        assert_eq!(check("enterprise", enterprise()), vec![]);
        // The optional address may be missing.
        assert_eq!(check("enterprise", without(enterprise(), "address")), vec![]);
    }

    #[test]
    fn named_cells_must_be_known_and_unique() {
        let unknown = set(enterprise(), "nickname", text("x"));
        let err = cells_from_named(schema("enterprise"), unknown).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("nickname"));
        let mut twice = enterprise();
        twice.push(("status", text("active")));
        let err = cells_from_named(schema("enterprise"), twice).unwrap_err();
        assert_eq!(err.to_string(), "status: is given twice");
        assert_eq!(Violation::row("test", "bad row").to_string(), "bad row");
    }

    #[test]
    fn required_fields() {
        assert_one(
            &check("enterprise", without(enterprise(), "name")),
            "name",
            "is required",
        );
        assert_one(
            &check("enterprise", set(enterprise(), "status", text(""))),
            "status",
            "is required",
        );
        let cells = vec![None; 3];
        let v = validate_row(schema("enterprise"), &cells);
        assert!(v[0].field.is_none() && v[0].reason.contains("3 values"), "{v:?}");
    }

    #[test]
    fn kinds_and_minimums() {
        assert_one(
            &check("enterprise", set(enterprise(), "registered_capital", text("100"))),
            "registered_capital",
            "must be a number",
        );
        assert_one(
            &check("enterprise", set(enterprise(), "registered_capital", Cell::Real(-5.0))),
            "registered_capital",
            "at least 0",
        );
        assert_one(
            &check(
                "enterprise",
                set(enterprise(), "registered_capital", Cell::Real(f64::NAN)),
            ),
            "registered_capital",
            "finite",
        );
        assert_one(
            &check("enterprise", set(enterprise(), "established", Cell::Time(0))),
            "established",
            "must be a date",
        );
    }

    #[test]
    fn text_longer_than_its_max_length_is_refused_without_its_value() {
        // Characters, not bytes: 500 three-byte characters fit the address.
        let at_limit = "路".repeat(500);
        assert_eq!(
            check("enterprise", set(enterprise(), "address", text(&at_limit))),
            vec![]
        );
        let over = "路".repeat(501);
        let v = check("enterprise", set(enterprise(), "address", text(&over)));
        assert_one(&v, "address", "is 501 characters long, more than its max_length of 500");
        assert_eq!(v[0].rule, "max_length");
        assert_eq!(v[0].cause(), "address: max_length");
        // A personal field: the reason names the field, limit and length only.
        let name = "张".repeat(101);
        let v = check("enterprise", set(enterprise(), "legal_representative", text(&name)));
        assert_one(
            &v,
            "legal_representative",
            "is 101 characters long, more than its max_length of 100",
        );
        assert!(!v[0].to_string().contains('张'), "{v:?}");
        // A code past its length is refused for its length, not looked up.
        let v = check("enterprise", set(enterprise(), "city", text(&"3".repeat(5000))));
        assert_one(&v, "city", "is 5000 characters long, more than its max_length of 6");
    }

    #[test]
    fn code_lists_and_formats() {
        assert_one(
            &check("enterprise", set(enterprise(), "industry", text("Z99"))),
            "industry",
            "gb4754.division",
        );
        assert_one(
            &check("enterprise", set(enterprise(), "status", text("alive"))),
            "status",
            "enterprise.status",
        );
        assert_one(
            &check("enterprise", set(enterprise(), "established", text("2018-02-30"))),
            "established",
            "valid YYYY-MM-DD",
        );
        let mut code = make('9', '1', "310115", "MA1FL8K2");
        let last = if code.ends_with('1') { '2' } else { '1' };
        code.pop();
        code.push(last);
        assert_one(
            &check("enterprise", set(enterprise(), "credit_code", Cell::Text(code))),
            "credit_code",
            "check character is wrong",
        );
    }

    #[test]
    fn confidential_values_never_appear() {
        let mut id = rep_id();
        id.pop();
        id.push(if rep_id().ends_with('1') { '2' } else { '1' });
        let row = set(enterprise(), "representative_id_number", Cell::Text(id.clone()));
        let v = check("enterprise", row);
        assert_one(&v, "representative_id_number", "check digit");
        // Wrong kinds and bad dates name no value either.
        let row = set(
            enterprise(),
            "representative_id_number",
            Cell::Text(format!("{}0230{}", &id[..10], &id[14..])),
        );
        let row = set(row, "legal_representative", Cell::Int(7));
        let v = check("enterprise", row);
        assert_eq!(v.len(), 2, "{v:?}");
        for violation in &v {
            let text = violation.to_string();
            assert!(
                !text.contains(&id[..10]) && !text.contains(&id[6..14]) && !text.contains(REP_NAME),
                "{text}"
            );
        }
    }

    #[test]
    fn enterprise_geography() {
        let moved = set(set(enterprise(), "city", text("320500")), "district", text("320583"));
        assert_one(&check("enterprise", moved), "city", "not in region \"310000\"");
        let row = set(enterprise(), "district", text("320583"));
        assert_one(&check("enterprise", row), "district", "not in city");
        let foreign = make('9', '1', "320583", "MA1FL8K2");
        assert_one(
            &check("enterprise", set(enterprise(), "credit_code", Cell::Text(foreign))),
            "credit_code",
            "area code",
        );
        // Codes issued at province or city level are fine.
        let provincial = make('9', '1', "310000", "MA1FL8K2");
        assert_eq!(
            check("enterprise", set(enterprise(), "credit_code", Cell::Text(provincial))),
            vec![]
        );
    }

    #[test]
    fn established_bounds() {
        assert_one(
            &check("enterprise", set(enterprise(), "established", text("1949-09-30"))),
            "established",
            "between",
        );
        assert_one(
            &check("enterprise", set(enterprise(), "established", text("2101-01-01"))),
            "established",
            "between",
        );
        assert_eq!(
            check("enterprise", set(enterprise(), "established", text("1949-10-01"))),
            vec![]
        );
    }

    fn air() -> NamedRow {
        // PM2.5 80 -> IAQI 107 (level 3); the others are lower.
        vec![
            ("station_code", text("3101A01")),
            ("station_name", text("普陀")),
            ("region", text("310000")),
            ("city", text("310100")),
            ("observed_at", Cell::Time(1_735_660_800)),
            ("pm25", Cell::Real(80.0)),
            ("pm10", Cell::Real(110.0)),
            ("o3", Cell::Real(60.0)),
            ("no2", Cell::Real(40.0)),
            ("so2", Cell::Real(8.0)),
            ("co", Cell::Real(0.8)),
            ("aqi", Cell::Int(107)),
            ("aqi_level", Cell::Int(3)),
            ("primary_pollutant", text("PM2.5")),
        ]
    }

    #[test]
    fn air_quality_rules() {
        assert_eq!(check("air_quality", air()), vec![]);
        assert_one(
            &check("air_quality", set(air(), "aqi", Cell::Int(100))),
            "aqi",
            "gives 107",
        );
        assert_one(
            &check("air_quality", set(air(), "aqi_level", Cell::Int(2))),
            "aqi_level",
            "level 3",
        );
        assert_one(
            &check("air_quality", set(air(), "primary_pollutant", text("O3"))),
            "primary_pollutant",
            "\"PM2.5\"",
        );
        assert_one(
            &check("air_quality", without(air(), "primary_pollutant")),
            "primary_pollutant",
            "is empty",
        );
        assert_one(
            &check("air_quality", set(air(), "city", text("330100"))),
            "city",
            "not in region",
        );
        // A clean hour has no primary pollutant.
        let clean = set(
            set(set(air(), "pm25", Cell::Real(20.0)), "aqi", Cell::Int(50)),
            "aqi_level",
            Cell::Int(1),
        );
        let clean = set(clean, "pm10", Cell::Real(50.0));
        assert_one(
            &check("air_quality", clean.clone()),
            "primary_pollutant",
            "must be empty",
        );
        assert_eq!(check("air_quality", without(clean, "primary_pollutant")), vec![]);
    }

    fn water() -> NamedRow {
        // Lake limits: DO I, CODMn II, NH3-N I, TP 0.06 IV, TN 1.2 IV -> IV.
        vec![
            ("section_code", text("3202W01")),
            ("section_name", text("太湖贡湖")),
            ("water_body", text("taihu_lake")),
            ("region", text("320000")),
            ("city", text("320200")),
            ("sampled_at", Cell::Time(1_735_696_800)),
            ("dissolved_oxygen", Cell::Real(8.5)),
            ("permanganate_index", Cell::Real(4.0)),
            ("ammonia_nitrogen", Cell::Real(0.12)),
            ("total_phosphorus", Cell::Real(0.06)),
            ("total_nitrogen", Cell::Real(1.2)),
            ("water_class", text("IV")),
        ]
    }

    #[test]
    fn water_quality_rules() {
        assert_eq!(check("water_quality", water()), vec![]);
        // As a river the same sample would be class II.
        assert_one(
            &check("water_quality", set(water(), "water_class", text("II"))),
            "water_class",
            "\"IV\"",
        );
        let river = set(
            set(water(), "water_body", text("taipu_river")),
            "water_class",
            text("II"),
        );
        assert_eq!(check("water_quality", river), vec![]);
        assert_one(
            &check("water_quality", set(water(), "city", text("340100"))),
            "city",
            "not in region",
        );
        let wrong_body = set(water(), "water_body", text("chao_lake"));
        assert_one(
            &check("water_quality", wrong_body),
            "water_body",
            "no sections in region",
        );
    }

    fn manifest() -> NamedRow {
        vec![
            ("manifest_number", text("2025310000000001")),
            ("region", text("310000")),
            ("waste_code", text("HW08")),
            ("producer_credit_code", Cell::Text(make('9', '1', "310115", "MA1FL8K2"))),
            ("producer_name", text("上海恒达机械有限公司")),
            ("receiver_credit_code", Cell::Text(make('9', '1', "320583", "MA1MXY3K"))),
            ("receiver_name", text("苏州瑞丰固废处置有限公司")),
            ("receiver_region", text("320000")),
            ("quantity_tonnes", Cell::Real(5.25)),
            ("shipped_date", text("2025-03-01")),
            ("received_date", text("2025-03-02")),
            ("status", text("received")),
        ]
    }

    #[test]
    fn hazardous_waste_rules() {
        assert_eq!(check("hazardous_waste", manifest()), vec![]);
        let local = set(manifest(), "receiver_region", text("310000"));
        let v = check("hazardous_waste", local);
        assert!(
            v.iter()
                .any(|v| v.field.as_deref() == Some("receiver_region") && v.reason.contains("cross-provincial")),
            "{v:?}"
        );
        let foreign_producer = set(
            manifest(),
            "producer_credit_code",
            Cell::Text(make('9', '1', "320583", "12345678")),
        );
        assert_one(
            &check("hazardous_waste", foreign_producer),
            "producer_credit_code",
            "region 310000",
        );
        let wrong_receiver = set(manifest(), "receiver_region", text("330000"));
        assert_one(
            &check("hazardous_waste", wrong_receiver),
            "receiver_credit_code",
            "region 330000",
        );
        let early = set(manifest(), "received_date", text("2025-02-28"));
        assert_one(&check("hazardous_waste", early), "received_date", "before shipped_date");
        assert_one(
            &check("hazardous_waste", without(manifest(), "received_date")),
            "received_date",
            "required when status is received",
        );
        let transit = set(manifest(), "status", text("in_transit"));
        assert_one(
            &check("hazardous_waste", transit.clone()),
            "received_date",
            "must be empty",
        );
        assert_eq!(check("hazardous_waste", without(transit, "received_date")), vec![]);
    }

    fn deal() -> NamedRow {
        vec![
            ("project_code", text("SUAEE-2025-GQ00001")),
            ("project_name", text("上海恒达贸易有限公司51%股权")),
            ("region", text("310000")),
            ("exchange", text("SUAEE")),
            ("asset_class", text("equity")),
            ("listed_price", Cell::Real(12_000_000.0)),
            ("deal_price", Cell::Real(12_600_000.0)),
            ("listed_date", text("2025-01-10")),
            ("deal_date", text("2025-02-20")),
            (
                "transferor_credit_code",
                Cell::Text(make('9', '1', "310115", "MA1FL8K2")),
            ),
            ("transferor_name", text("上海恒达贸易有限公司")),
            (
                "transferee_credit_code",
                Cell::Text(make('9', '1', "330106", "MA27WX9B")),
            ),
            ("transferee_name", text("杭州瑞丰科技有限公司")),
        ]
    }

    #[test]
    fn property_rights_rules() {
        assert_eq!(check("property_rights", deal()), vec![]);
        assert_one(
            &check("property_rights", set(deal(), "deal_date", text("2025-01-09"))),
            "deal_date",
            "before listed_date",
        );
        let same = set(
            deal(),
            "transferee_credit_code",
            Cell::Text(make('9', '1', "310115", "MA1FL8K2")),
        );
        assert_one(&check("property_rights", same), "transferee_credit_code", "two parties");
        assert_one(
            &check("property_rights", set(deal(), "exchange", text("JSPRE"))),
            "exchange",
            "320000",
        );
    }
}
