//! Working days, the unit of the answer deadline: Monday to Friday, less
//! the region's public holidays, plus the weekend days it declares working
//! days (China moves working days onto weekends around its holidays).
//!
//! Days are counted in China Standard Time (UTC+8, no daylight saving), the
//! time of every region of the mesh, so a request filed at 07:00 UTC on a
//! Friday is filed on that Friday whatever the server's time zone.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use time::{Date, Weekday};

/// The regions' offset from UTC, in seconds (China Standard Time).
pub const REGION_UTC_OFFSET_SECS: i64 = 8 * 3600;

/// Julian day number of 1970-01-01.
const UNIX_EPOCH_JULIAN_DAY: i64 = 2_440_588;

/// Seconds in a day.
const DAY_SECS: i64 = 86_400;

/// Which days are working days.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Calendar {
    holidays: BTreeSet<Date>,
    working_weekends: BTreeSet<Date>,
}

impl Calendar {
    /// A calendar with these holidays (weekdays off) and working weekend days.
    pub fn new(holidays: impl IntoIterator<Item = Date>, working_weekends: impl IntoIterator<Item = Date>) -> Self {
        Self {
            holidays: holidays.into_iter().collect(),
            working_weekends: working_weekends.into_iter().collect(),
        }
    }

    /// Whether `day` is a working day.
    pub fn is_working(&self, day: Date) -> bool {
        if self.working_weekends.contains(&day) {
            return true;
        }
        let weekend = matches!(day.weekday(), Weekday::Saturday | Weekday::Sunday);
        !weekend && !self.holidays.contains(&day)
    }

    /// The `n`th working day after `from` (`from` itself does not count:
    /// a request filed today has its first working day tomorrow at the
    /// earliest). `None` past the calendar's range.
    pub fn add_working_days(&self, from: Date, n: u32) -> Option<Date> {
        let mut day = from;
        let mut left = n;
        while left > 0 {
            day = day.next_day()?;
            if self.is_working(day) {
                left -= 1;
            }
        }
        Some(day)
    }

    /// Working days `d` with `from < d <= to` (0 when `to` is not after `from`).
    pub fn working_days_between(&self, from: Date, to: Date) -> u32 {
        let mut count = 0u32;
        let mut day = from;
        while day < to {
            let Some(next) = day.next_day() else { break };
            day = next;
            if self.is_working(day) {
                count = count.saturating_add(1);
            }
        }
        count
    }
}

/// Seconds since the Unix epoch (negative before it).
pub fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// The regions' calendar day at `seconds` since the Unix epoch.
pub fn region_date(seconds: i64) -> Date {
    let local = seconds.saturating_add(REGION_UTC_OFFSET_SECS);
    let julian = local.div_euclid(DAY_SECS) + UNIX_EPOCH_JULIAN_DAY;
    i32::try_from(julian)
        .ok()
        .and_then(|j| Date::from_julian_day(j).ok())
        .unwrap_or(if julian < 0 { Date::MIN } else { Date::MAX })
}

/// The end of `day` in the regions' time (midnight starting the next day),
/// in seconds since the Unix epoch.
pub fn day_end_seconds(day: Date) -> i64 {
    (i64::from(day.to_julian_day()) - UNIX_EPOCH_JULIAN_DAY + 1) * DAY_SECS - REGION_UTC_OFFSET_SECS
}

/// [`day_end_seconds`] as a time.
pub fn day_end(day: Date) -> SystemTime {
    let s = day_end_seconds(day);
    if s >= 0 {
        UNIX_EPOCH + Duration::from_secs(s.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(s.unsigned_abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(text: &str) -> Date {
        yrd_proto::datetime::parse_date(text).unwrap()
    }

    #[test]
    fn weekends_are_skipped() {
        let c = Calendar::default();
        // 2026-12-04 is a Friday.
        assert_eq!(d("2026-12-04").weekday(), Weekday::Friday);
        assert!(c.is_working(d("2026-12-04")));
        assert!(!c.is_working(d("2026-12-05")));
        assert!(!c.is_working(d("2026-12-06")));
        assert_eq!(c.add_working_days(d("2026-12-04"), 1), Some(d("2026-12-07")));
        // Filed on a Monday, ten working days: the Monday two weeks on.
        assert_eq!(c.add_working_days(d("2026-11-30"), 10), Some(d("2026-12-14")));
        // Filed on a Saturday: the weekend does not count.
        assert_eq!(c.add_working_days(d("2026-12-05"), 10), Some(d("2026-12-18")));
        assert_eq!(c.add_working_days(d("2026-12-05"), 0), Some(d("2026-12-05")));
    }

    #[test]
    fn holidays_and_working_weekends_count() {
        // National Day 2026: 10-01..10-07 off, Sunday 09-27 and Saturday
        // 10-10 worked (illustrative).
        let holidays = ["2026-10-01", "2026-10-02", "2026-10-05", "2026-10-06", "2026-10-07"].map(d);
        let c = Calendar::new(holidays, [d("2026-09-27"), d("2026-10-10")]);
        assert!(c.is_working(d("2026-09-27")));
        assert!(!c.is_working(d("2026-10-01")));
        // Filed Friday 09-25: Sun 27, Mon 28, Tue 29, Wed 30, Thu 10-01 off,
        // Fri 02 off, weekend, Mon-Wed off, Thu 08, Fri 09, Sat 10 worked.
        assert_eq!(c.add_working_days(d("2026-09-25"), 4), Some(d("2026-09-30")));
        assert_eq!(c.add_working_days(d("2026-09-25"), 5), Some(d("2026-10-08")));
        assert_eq!(c.add_working_days(d("2026-09-25"), 7), Some(d("2026-10-10")));
        assert_eq!(c.add_working_days(d("2026-09-25"), 8), Some(d("2026-10-12")));
        assert_eq!(c.working_days_between(d("2026-09-25"), d("2026-10-10")), 7);
        assert_eq!(
            Calendar::default().working_days_between(d("2026-09-25"), d("2026-10-10")),
            10
        );
    }

    #[test]
    fn days_between_are_counted_after_the_first() {
        let c = Calendar::default();
        assert_eq!(c.working_days_between(d("2026-12-04"), d("2026-12-04")), 0);
        assert_eq!(c.working_days_between(d("2026-12-04"), d("2026-12-06")), 0);
        assert_eq!(c.working_days_between(d("2026-12-04"), d("2026-12-07")), 1);
        assert_eq!(c.working_days_between(d("2026-12-07"), d("2026-12-04")), 0);
        assert_eq!(c.working_days_between(d("2026-11-30"), d("2026-12-14")), 10);
    }

    #[test]
    fn days_are_in_china_standard_time() {
        // 2026-12-04T15:59:59Z is 23:59:59 in Shanghai; a second later it is Saturday.
        let friday_end = yrd_proto::datetime::parse_timestamp("2026-12-04T15:59:59Z").unwrap();
        assert_eq!(region_date(friday_end), d("2026-12-04"));
        assert_eq!(region_date(friday_end + 1), d("2026-12-05"));
        assert_eq!(day_end_seconds(d("2026-12-04")), friday_end + 1);
        assert_eq!(region_date(0), d("1970-01-01"));
        assert_eq!(region_date(-8 * 3600 - 1), d("1969-12-31"));
        assert_eq!(unix_seconds(day_end(d("1969-12-30"))), day_end_seconds(d("1969-12-30")));
    }
}
