//! The text forms of the protocol's dates and timestamps, on the `time`
//! crate: a `DATE` field's value (`Value.date_value`) is `YYYY-MM-DD`, and a
//! timestamp is written in RFC 3339, as protobuf's JSON mapping does.
//! Filters, imports, validation and the command line read and write these
//! forms through here, so they cannot drift apart.

use time::format_description::well_known::Rfc3339;
use time::{Date, Month, OffsetDateTime};

/// Parses exactly `YYYY-MM-DD` — four-digit year, two-digit month and day,
/// no sign — into a calendar date; `None` if the text has another shape or
/// names no real day (`2023-02-29`).
pub fn parse_date(text: &str) -> Option<Date> {
    let b = text.as_bytes();
    let shaped = b.len() == 10
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            _ => c.is_ascii_digit(),
        });
    if !shaped {
        return None;
    }
    // Slicing is safe: the shape check saw ten ASCII bytes.
    let month = Month::try_from(text[5..7].parse::<u8>().ok()?).ok()?;
    Date::from_calendar_date(text[0..4].parse().ok()?, month, text[8..10].parse().ok()?).ok()
}

/// Parses an RFC 3339 timestamp (`2025-03-01T08:00:00Z`,
/// `2025-03-01T16:00:00+08:00`; fractional seconds allowed and truncated)
/// into whole seconds since the Unix epoch. The date and the time are
/// separated by `T`, `t` or a space.
pub fn parse_timestamp(text: &str) -> Option<i64> {
    // RFC 3339 lets an application pick the separator; the time crate takes
    // any character there, the mesh only these three.
    if !matches!(text.as_bytes().get(10), Some(b'T' | b't' | b' ')) {
        return None;
    }
    OffsetDateTime::parse(text, &Rfc3339)
        .ok()
        .map(OffsetDateTime::unix_timestamp)
}

/// Formats seconds since the Unix epoch as RFC 3339 in UTC
/// (`2025-03-01T08:00:00Z`). A time outside the years 0 to 9999, which RFC
/// 3339 cannot write, is written as its seconds.
pub fn format_timestamp(seconds: i64) -> String {
    OffsetDateTime::from_unix_timestamp(seconds)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| format!("{seconds} s since 1970-01-01T00:00:00Z"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_have_one_shape() {
        let date = |text: &str| parse_date(text).map(|d| d.to_string());
        assert_eq!(date("1970-01-01").as_deref(), Some("1970-01-01"));
        assert_eq!(date("2024-02-29").as_deref(), Some("2024-02-29"));
        assert_eq!(date("0999-12-31").as_deref(), Some("0999-12-31"));
        for bad in [
            "2023-02-29",
            "2023-13-01",
            "2023-00-10",
            "2023-04-31",
            "2023-1-01",
            "+2023-01-01",
            "2023-01-01T00:00:00Z",
            "2023/01/01",
            "20230101",
            "",
        ] {
            assert_eq!(parse_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn timestamps_parse_with_offsets() {
        assert_eq!(parse_timestamp("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_timestamp("2025-03-01T08:00:00Z"), Some(1_740_816_000));
        for same in [
            "2025-03-01T16:00:00+08:00",
            "2025-03-01 08:00:00Z",
            "2025-03-01t08:00:00z",
            "2025-03-01T08:00:00.999999999999Z",
            "2025-03-01T03:30:00-04:30",
        ] {
            assert_eq!(parse_timestamp(same), Some(1_740_816_000), "{same}");
        }
        for bad in [
            "2025-03-01",
            "2025-03-01T25:00:00Z",
            "2025-03-01T08:00:00",
            "2025-03-01X08:00:00Z",
            "2025-03-01T08:00:00.Z",
            "2025-03-01T08:00:00+24:00",
            "2025-02-30T08:00:00Z",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad}");
        }
    }

    #[test]
    fn timestamps_format_in_utc() {
        assert_eq!(format_timestamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_timestamp(1_740_816_000), "2025-03-01T08:00:00Z");
        assert_eq!(format_timestamp(-1), "1969-12-31T23:59:59Z");
        for seconds in [-62_135_596_800, 0, 1_740_816_000, 253_402_300_799] {
            assert_eq!(parse_timestamp(&format_timestamp(seconds)), Some(seconds));
        }
        assert_eq!(
            format_timestamp(i64::MAX),
            format!("{} s since 1970-01-01T00:00:00Z", i64::MAX)
        );
    }
}
