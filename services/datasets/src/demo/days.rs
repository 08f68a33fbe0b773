//! Days since 1970-01-01: the unit the generators draw dates in (a uniform
//! day in a range is one random integer, a weekday a remainder), converted
//! to and from calendar dates with the `time` crate.

use time::{Date, Duration, Month, OffsetDateTime};

/// 1970-01-01, day 0.
const EPOCH: Date = OffsetDateTime::UNIX_EPOCH.date();

/// The day number of a calendar date the generators name. Their literal
/// dates all exist; one that did not would be day 0.
pub(crate) fn of(year: i32, month: Month, day: u8) -> i64 {
    Date::from_calendar_date(year, month, day).map_or(0, |d| (d - EPOCH).whole_days())
}

/// The calendar date of a day number, saturating at the range of `Date`
/// (the generators stay far inside it).
pub(crate) fn date(days: i64) -> Date {
    let limit = if days < 0 { Date::MIN } else { Date::MAX };
    // Beyond ten million days (27,000 years) every day is past the range;
    // the bound keeps `Duration::days` from overflowing.
    EPOCH
        .checked_add(Duration::days(days.clamp(-10_000_000, 10_000_000)))
        .unwrap_or(limit)
}

/// A day number as `YYYY-MM-DD`.
pub(crate) fn text(days: i64) -> String {
    date(days).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_numbers_round_trip() {
        assert_eq!(of(1970, Month::January, 1), 0);
        assert_eq!(of(2000, Month::March, 1), 11_017);
        assert_eq!(text(of(2024, Month::February, 29)), "2024-02-29");
        for d in [-700_000, -1, 0, 1, 19_000, 2_000_000] {
            let date = date(d);
            assert_eq!(of(date.year(), date.month(), date.day()), d);
        }
        assert_eq!(text(-1), "1969-12-31");
        assert_eq!(date(i64::MAX), Date::MAX);
    }
}
