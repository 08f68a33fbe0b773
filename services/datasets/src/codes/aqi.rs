//! Air quality index per HJ 633-2012, for hourly real-time reports.
//!
//! Each pollutant's individual index (IAQI) is the linear interpolation of
//! its concentration between the breakpoints of the standard's table 1,
//! rounded up to an integer; the AQI is the largest IAQI.
//!
//! Which table applies to an hourly reading:
//! - SO2, NO2, CO and O3 use their 1-hour breakpoints.
//! - SO2 above 800 ug/m3: the standard stops the 1-hour table there and
//!   reports SO2 by its 24-hour breakpoints; we apply the 24-hour
//!   breakpoints from 800 upwards to the hourly value. Both tables give
//!   IAQI 200 at 800, so the curve stays continuous.
//! - PM10 and PM2.5 have only 24-hour breakpoints; real-time reporting
//!   (as on the national platform) applies them to the hourly mean.
//!
//! Several pollutants may share the largest IAQI; the standard then names
//! all of them as primary pollutants. We join them with `,` in the fixed
//! order of [`POLLUTANTS`] (`PM2.5,PM10`), and the `hj633.pollutant` code
//! list accepts such joined values in that order.

use std::sync::OnceLock;

/// Pollutant codes, in the fixed order used to join tied primary pollutants.
pub const POLLUTANTS: [&str; 6] = ["PM2.5", "PM10", "O3", "NO2", "SO2", "CO"];

/// Chinese names of [`POLLUTANTS`], in the same order.
pub const POLLUTANT_NAMES_ZH: [&str; 6] = ["细颗粒物", "可吸入颗粒物", "臭氧", "二氧化氮", "二氧化硫", "一氧化碳"];

/// Chinese names of AQI levels 1 to 6.
pub const LEVEL_NAMES_ZH: [&str; 6] = ["优", "良", "轻度污染", "中度污染", "重度污染", "严重污染"];

/// IAQI at each breakpoint.
const IAQI: [f64; 8] = [0.0, 50.0, 100.0, 150.0, 200.0, 300.0, 400.0, 500.0];

/// Breakpoints per pollutant, in the order of [`POLLUTANTS`]. Units are
/// ug/m3, except CO in mg/m3.
const BREAKPOINTS: [[f64; 8]; 6] = [
    // PM2.5, 24-hour table applied to the hourly mean.
    [0.0, 35.0, 75.0, 115.0, 150.0, 250.0, 350.0, 500.0],
    // PM10, 24-hour table applied to the hourly mean.
    [0.0, 50.0, 150.0, 250.0, 350.0, 420.0, 500.0, 600.0],
    // O3, 1-hour.
    [0.0, 160.0, 200.0, 300.0, 400.0, 800.0, 1000.0, 1200.0],
    // NO2, 1-hour.
    [0.0, 100.0, 200.0, 700.0, 1200.0, 2340.0, 3090.0, 3840.0],
    // SO2, 1-hour up to 800, then the 24-hour table (see the module doc).
    [0.0, 150.0, 500.0, 650.0, 800.0, 1600.0, 2100.0, 2620.0],
    // CO, 1-hour, mg/m3.
    [0.0, 5.0, 10.0, 35.0, 60.0, 90.0, 120.0, 150.0],
];

/// The AQI of one hour's readings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Aqi {
    /// Air quality index, 0 to 500.
    pub aqi: i64,
    /// Level, 1 (excellent) to 6 (severe).
    pub level: i64,
    /// Primary pollutant(s) when the AQI is above 50, ties joined with `,`.
    pub primary: Option<&'static str>,
}

/// The IAQI of a concentration for the pollutant at `index` in
/// [`POLLUTANTS`]. Zero, negative and NaN readings give 0; readings at or
/// above the top breakpoint give 500.
pub fn iaqi(index: usize, concentration: f64) -> i64 {
    let Some(bp) = BREAKPOINTS.get(index) else { return 0 };
    if concentration.is_nan() || concentration <= 0.0 {
        return 0;
    }
    if concentration >= bp[7] {
        return 500;
    }
    let k = (0..7).find(|&k| concentration < bp[k + 1]).unwrap_or(6);
    // Multiply before dividing, and forgive 1e-9 before rounding up, so
    // that a reading exactly on a breakpoint does not round up to the next
    // integer through floating-point noise.
    let v = IAQI[k] + (IAQI[k + 1] - IAQI[k]) * (concentration - bp[k]) / (bp[k + 1] - bp[k]);
    ((v - 1e-9).ceil() as i64).clamp(0, 500)
}

/// The level (1 to 6) of an AQI.
pub fn level(aqi: i64) -> i64 {
    match aqi {
        i64::MIN..=50 => 1,
        51..=100 => 2,
        101..=150 => 3,
        151..=200 => 4,
        201..=300 => 5,
        _ => 6,
    }
}

/// AQI, level and primary pollutant(s) of one hour's readings (ug/m3, CO
/// in mg/m3).
pub fn compute(pm25: f64, pm10: f64, o3: f64, no2: f64, so2: f64, co: f64) -> Aqi {
    let iaqis = [pm25, pm10, o3, no2, so2, co]
        .into_iter()
        .enumerate()
        .map(|(i, c)| iaqi(i, c));
    let mut aqi = 0;
    let mut mask = 0u8;
    for (i, v) in iaqis.enumerate() {
        if v > aqi {
            aqi = v;
            mask = 1 << i;
        } else if v == aqi {
            mask |= 1 << i;
        }
    }
    Aqi {
        aqi,
        level: level(aqi),
        primary: (aqi > 50).then(|| joined(mask)),
    }
}

/// The joined code of a set of pollutants (bit i = `POLLUTANTS[i]`).
fn joined(mask: u8) -> &'static str {
    static JOINED: OnceLock<Vec<String>> = OnceLock::new();
    let all = JOINED.get_or_init(|| {
        (0..64u8)
            .map(|m| {
                let names: Vec<&str> = (0..6).filter(|i| m & (1 << i) != 0).map(|i| POLLUTANTS[i]).collect();
                names.join(",")
            })
            .collect()
    });
    all.get(usize::from(mask & 63)).map_or("", String::as_str)
}

/// Whether `value` is one pollutant code, or several joined with `,` in
/// the order of [`POLLUTANTS`] without repeats.
pub fn is_pollutant_code(value: &str) -> bool {
    let mut last = None;
    for part in value.split(',') {
        let Some(i) = POLLUTANTS.iter().position(|p| *p == part) else {
            return false;
        };
        if last.is_some_and(|l| i <= l) {
            return false;
        }
        last = Some(i);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_examples() {
        // PM2.5 80: 100 + (150-100) * (80-75) / (115-75) = 106.25 -> 107.
        assert_eq!(
            compute(80.0, 40.0, 60.0, 30.0, 8.0, 0.6),
            Aqi {
                aqi: 107,
                level: 3,
                primary: Some("PM2.5")
            }
        );
        // O3 250 (1-hour): 100 + 50 * (250-200) / (300-200) = 125.
        assert_eq!(
            compute(20.0, 30.0, 250.0, 20.0, 5.0, 0.4),
            Aqi {
                aqi: 125,
                level: 3,
                primary: Some("O3")
            }
        );
        // O3 420: 200 + 100 * (420-400) / (800-400) = 205, level 5.
        assert_eq!(
            compute(20.0, 30.0, 420.0, 20.0, 5.0, 0.4),
            Aqi {
                aqi: 205,
                level: 5,
                primary: Some("O3")
            }
        );
        // PM2.5 36: 50 + 50 * 1 / 40 = 51.25 -> 52, just into level 2.
        assert_eq!(
            compute(36.0, 0.0, 0.0, 0.0, 0.0, 0.0),
            Aqi {
                aqi: 52,
                level: 2,
                primary: Some("PM2.5")
            }
        );
        // Exactly on a breakpoint: PM2.5 35 -> 50, level 1, no primary pollutant.
        assert_eq!(
            compute(35.0, 10.0, 10.0, 10.0, 2.0, 0.2),
            Aqi {
                aqi: 50,
                level: 1,
                primary: None
            }
        );
    }

    #[test]
    fn individual_indexes() {
        // NO2 150: 50 + 50 * 50 / 100 = 75.
        assert_eq!(iaqi(3, 150.0), 75);
        // CO 12: 100 + 50 * 2 / 25 = 104.
        assert_eq!(iaqi(5, 12.0), 104);
        // SO2 1000 (above the 1-hour table): 200 + 100 * 200 / 800 = 225.
        assert_eq!(iaqi(4, 1000.0), 225);
        // SO2 800 is 200 by both tables.
        assert_eq!(iaqi(4, 800.0), 200);
        // PM10 120: 50 + 50 * 70 / 100 = 85.
        assert_eq!(iaqi(1, 120.0), 85);
        // At or above the top breakpoint: 500.
        assert_eq!(iaqi(0, 500.0), 500);
        assert_eq!(iaqi(0, 900.0), 500);
        assert_eq!(iaqi(0, -1.0), 0);
        assert_eq!(iaqi(0, f64::NAN), 0);
    }

    #[test]
    fn ties_join_in_fixed_order() {
        // PM2.5 75 and PM10 150 are both IAQI 100.
        let a = compute(75.0, 150.0, 50.0, 40.0, 5.0, 0.5);
        assert_eq!(
            a,
            Aqi {
                aqi: 100,
                level: 2,
                primary: Some("PM2.5,PM10")
            }
        );
        assert!(is_pollutant_code("PM2.5,PM10"));
        assert!(is_pollutant_code("O3"));
        assert!(!is_pollutant_code("PM10,PM2.5"));
        assert!(!is_pollutant_code("O3,O3"));
        assert!(!is_pollutant_code(""));
        assert!(!is_pollutant_code("PM25"));
    }

    #[test]
    fn levels() {
        let cases = [
            (0, 1),
            (50, 1),
            (51, 2),
            (100, 2),
            (101, 3),
            (150, 3),
            (151, 4),
            (200, 4),
            (201, 5),
            (300, 5),
            (301, 6),
            (500, 6),
        ];
        for (aqi, lvl) in cases {
            assert_eq!(level(aqi), lvl, "{aqi}");
        }
        assert_eq!(compute(600.0, 0.0, 0.0, 0.0, 0.0, 0.0).level, 6);
    }
}
