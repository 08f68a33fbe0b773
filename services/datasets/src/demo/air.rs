//! Demo hourly air quality: one or more stations per city, a year of
//! hourly readings with seasonal and daily cycles and multi-day weather
//! episodes shared across the Delta, AQI per HJ 633-2012.

use std::f64::consts::TAU;

use super::DemoSpec;
use super::rng::{code_key, mix, normal, row_rng, value_noise};
use crate::codes::aqi;
use crate::codes::regions::{City, Province};
use crate::record::{Cell, NamedRow};

/// Dataset tag in row seeds.
const TAG: u64 = 2;
/// Hours in 2025.
pub(crate) const HOURS_IN_YEAR: usize = 8760;
/// Fewest hours at any scale.
const MIN_HOURS: usize = 24;
/// 2025-01-01 00:00 Beijing time (UTC+8), as seconds since the epoch.
pub(crate) const YEAR_START: i64 = 1_735_660_800;

/// Named stations of the provincial capitals and Shanghai (real national
/// monitoring sites); other cities get one station at the city's
/// monitoring centre.
const NAMED_STATIONS: &[(&str, &[&str])] = &[
    (
        "310100",
        &[
            "普陀",
            "虹口",
            "徐汇上师大",
            "杨浦四漂",
            "静安监测站",
            "浦东张江",
            "青浦淀山湖",
        ],
    ),
    ("320100", &["玄武湖", "草场门", "山西路", "仙林大学城"]),
    ("330100", &["西溪", "朝晖五区", "卧龙桥", "下沙"]),
    ("340100", &["琥珀山庄", "董铺水库", "长江中路", "滨湖新区"]),
];

/// Annual mean PM2.5 by city (ug/m3, rounded recent values): the north
/// of Jiangsu and Anhui is dirtier than the coast and the southern hills.
const PM25_BASE: &[(&str, f64)] = &[
    ("310100", 28.0),
    ("320100", 29.0),
    ("320200", 30.0),
    ("320300", 40.0),
    ("320400", 34.0),
    ("320500", 29.0),
    ("320600", 28.0),
    ("320700", 32.0),
    ("320800", 35.0),
    ("320900", 27.0),
    ("321000", 34.0),
    ("321100", 35.0),
    ("321200", 33.0),
    ("321300", 38.0),
    ("330100", 30.0),
    ("330200", 24.0),
    ("330300", 23.0),
    ("330400", 27.0),
    ("330500", 28.0),
    ("330600", 28.0),
    ("330700", 28.0),
    ("330800", 27.0),
    ("330900", 17.0),
    ("331000", 22.0),
    ("331100", 21.0),
    ("340100", 34.0),
    ("340200", 33.0),
    ("340300", 38.0),
    ("340400", 39.0),
    ("340500", 35.0),
    ("340600", 40.0),
    ("340700", 33.0),
    ("340800", 34.0),
    ("341000", 22.0),
    ("341100", 34.0),
    ("341200", 40.0),
    ("341300", 41.0),
    ("341500", 34.0),
    ("341600", 41.0),
    ("341700", 29.0),
    ("341800", 29.0),
];

/// A monitoring station.
#[derive(Debug, Clone)]
pub(crate) struct Station {
    code: String,
    name: String,
    pub(crate) city: &'static City,
    pm25_base: f64,
    /// Per-station offsets (traffic, industry) as multipliers.
    no2_factor: f64,
    so2_base: f64,
    key: u64,
}

/// The stations of a province.
pub(crate) fn stations(province: &'static Province) -> Vec<Station> {
    let mut out = Vec::new();
    for city in province.cities {
        let named = NAMED_STATIONS.iter().find(|s| s.0 == city.code).map(|s| s.1);
        let names: Vec<String> = match named {
            Some(names) => names.iter().map(|n| (*n).to_owned()).collect(),
            None => vec![format!("{}监测站", city.name_zh)],
        };
        let base = PM25_BASE.iter().find(|b| b.0 == city.code).map_or(30.0, |b| b.1);
        for (i, name) in names.into_iter().enumerate() {
            let code = format!("{}A{:02}", &city.code[..4], i + 1);
            let key = code_key(&code);
            let h = mix(&[key, 7]);
            let jitter = |bits: u64| ((h >> bits) & 0xFF) as f64 / 255.0;
            out.push(Station {
                pm25_base: base * (0.92 + 0.16 * jitter(0)),
                no2_factor: if named.is_some() {
                    1.1 + 0.3 * jitter(8)
                } else {
                    0.85 + 0.25 * jitter(8)
                },
                so2_base: 5.0 + 5.0 * jitter(16),
                code,
                name,
                city,
                key,
            });
        }
    }
    out
}

/// Hours generated at a scale; they are spread over the year so that every
/// scale shows the seasons.
pub(crate) fn hour_count(spec: &DemoSpec) -> usize {
    super::scaled(HOURS_IN_YEAR as f64, spec.scale).clamp(MIN_HOURS, HOURS_IN_YEAR)
}

/// Hour offset from [`YEAR_START`] of the k-th of `n` generated hours.
pub(crate) fn hour_offset(k: usize, n: usize) -> usize {
    k * HOURS_IN_YEAR / n.max(1)
}

/// Rounds to `digits` decimals.
fn round(v: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (v * f).round() / f
}

/// The reading of `station` at hour `offset` of the year.
pub(crate) fn reading(
    spec: &DemoSpec,
    region: &'static str,
    s_index: usize,
    station: &Station,
    offset: usize,
) -> NamedRow {
    let mut rng = row_rng(spec.seed, region, TAG, ((s_index as u64) << 32) | offset as u64);
    let t = offset as f64;
    let day = t / 24.0;
    let hour = (offset % 24) as f64;
    let season = |peak_day: f64| (TAU * (day - peak_day) / 365.0).cos();

    // Weather: a Delta-wide component (fronts, stagnant highs move across
    // all four provinces) and a local one, both smooth over days.
    let synoptic = value_noise(mix(&[spec.seed, 0xDE17A]), t, 36.0);
    let local = value_noise(mix(&[spec.seed, station.key]), t, 12.0);
    let weather = (0.5 * synoptic + 0.25 * local - 0.15).exp();

    // Particles peak in January, bottom out in July; a morning rush peak
    // and a smaller evening one.
    let pm_season = 1.0 + 0.45 * season(10.0);
    let pm_daily = 1.0 + 0.10 * (TAU * (hour - 9.0) / 24.0).cos() + 0.08 * (2.0 * TAU * (hour - 9.0) / 24.0).cos();
    let pm25 = (station.pm25_base * pm_season * pm_daily * weather * (0.08 * normal(&mut rng)).exp()).max(2.0);
    // Coarse dust is worse in spring.
    let spring = (-((day - 95.0) / 30.0).powi(2)).exp();
    let pm10 = (pm25 * (1.35 + 0.35 * spring + 0.12 * normal(&mut rng).abs())).max(pm25 + 1.0);

    // Ozone: photochemistry, so summer afternoons; clean, windy weather
    // brings less of it than stagnant sunny highs.
    let o3_season = 1.0 + 0.4 * season(165.0);
    let sun = (TAU * (hour - 15.0) / 24.0).cos().max(0.0);
    let o3_daily = 0.35 + sun * sun;
    let o3_weather = (0.3 * value_noise(mix(&[spec.seed, 0x03]), t, 48.0) + 0.1 * local).exp();
    let o3 = (95.0 * o3_season * o3_daily * o3_weather * (0.1 * normal(&mut rng)).exp()).max(2.0);

    // NO2: traffic rush hours, heating-season high, diluted by wind.
    let no2_daily = 1.0 + 0.2 * (2.0 * TAU * (hour - 8.0) / 24.0).cos() - 0.15 * (TAU * (hour - 14.0) / 24.0).cos();
    let no2 = (28.0
        * station.no2_factor
        * (1.0 + 0.25 * season(15.0))
        * no2_daily
        * weather.powf(0.6)
        * (0.12 * normal(&mut rng)).exp())
    .max(2.0);
    let so2 =
        (station.so2_base * (1.0 + 0.3 * season(15.0)) * weather.powf(0.4) * (0.15 * normal(&mut rng)).exp()).max(2.0);
    let co = (0.3 + 0.011 * pm25 * (0.1 * normal(&mut rng)).exp()).max(0.2);

    // Reported as the national platform does: ug/m3 as integers, CO to
    // one decimal. The AQI is computed from the reported values.
    let (pm25, pm10, o3, no2, so2, co) = (
        pm25.round(),
        pm10.round(),
        o3.round(),
        no2.round(),
        so2.round(),
        round(co, 1),
    );
    let a = aqi::compute(pm25, pm10, o3, no2, so2, co);
    let mut row: NamedRow = Vec::with_capacity(14);
    row.push(("station_code", Cell::Text(station.code.clone())));
    row.push(("station_name", Cell::Text(station.name.clone())));
    row.push(("region", Cell::Text(region.to_owned())));
    row.push(("city", Cell::Text(station.city.code.to_owned())));
    row.push(("observed_at", Cell::Time(YEAR_START + 3600 * offset as i64)));
    row.push(("pm25", Cell::Real(pm25)));
    row.push(("pm10", Cell::Real(pm10)));
    row.push(("o3", Cell::Real(o3)));
    row.push(("no2", Cell::Real(no2)));
    row.push(("so2", Cell::Real(so2)));
    row.push(("co", Cell::Real(co)));
    row.push(("aqi", Cell::Int(a.aqi)));
    row.push(("aqi_level", Cell::Int(a.level)));
    if let Some(p) = a.primary {
        row.push(("primary_pollutant", Cell::Text(p.to_owned())));
    }
    row
}

/// All readings of a province, hour by hour, stations within each hour.
pub(crate) fn rows(province: &'static Province, spec: DemoSpec) -> impl Iterator<Item = NamedRow> + Send + 'static {
    let stations = stations(province);
    let n = hour_count(&spec);
    let per_hour = stations.len();
    (0..n * per_hour).map(move |i| {
        let (k, s) = (i / per_hour, i % per_hour);
        reading(&spec, province.code, s, &stations[s], hour_offset(k, n))
    })
}

/// Rows of a province at a spec.
pub(crate) fn row_count(province: &'static Province, spec: &DemoSpec) -> usize {
    stations(province).len() * hour_count(spec)
}
