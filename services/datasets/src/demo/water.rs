//! Demo surface water samples at real monitoring locations on Taihu Lake,
//! the Taipu River, the Grand Canal, the Huangpu, the Yangtze, the Xin'an
//! River, Chao Lake, the Huai River and others, classed per GB 3838-2002.

use std::f64::consts::TAU;

use super::DemoSpec;
use super::rng::{code_key, log_normal, mix, row_rng, value_noise};
use crate::codes::water;
use crate::record::{Cell, NamedRow};

/// Dataset tag in row seeds.
const TAG: u64 = 3;
/// Daily sampling at scale 1.
const DAYS_IN_YEAR: usize = 365;
/// Fewest samples per section at any scale (monthly).
const MIN_SAMPLES: usize = 12;
/// Samples are taken at 10:00 Beijing time.
const SAMPLE_HOUR_OFFSET: i64 = 10 * 3600;

/// A monitoring section: region, city, code suffix, name, water body and
/// typical readings (DO, CODMn, NH3-N, TP, TN in mg/L).
struct Section {
    region: &'static str,
    city: &'static str,
    name: &'static str,
    body: &'static str,
    typical: [f64; 5],
}

const fn s(
    region: &'static str,
    city: &'static str,
    name: &'static str,
    body: &'static str,
    typical: [f64; 5],
) -> Section {
    Section {
        region,
        city,
        name,
        body,
        typical,
    }
}

/// Sections per province. Typical values follow the bodies' recent state:
/// Taihu and Chao Lake are phosphorus- and nitrogen-rich (class IV-V with
/// nitrogen counted), the Yangtze and the Xin'an River class II.
const SECTIONS: &[Section] = &[
    s(
        "310000",
        "310100",
        "太浦河金泽",
        "taipu_river",
        [7.2, 3.6, 0.25, 0.10, 2.0],
    ),
    s(
        "310000",
        "310100",
        "淀山湖中心",
        "dianshan_lake",
        [8.0, 4.2, 0.30, 0.08, 1.6],
    ),
    s(
        "310000",
        "310100",
        "黄浦江松浦大桥",
        "huangpu_river",
        [6.8, 3.8, 0.35, 0.12, 2.2],
    ),
    s(
        "310000",
        "310100",
        "黄浦江杨浦大桥",
        "huangpu_river",
        [6.3, 4.0, 0.45, 0.14, 2.4],
    ),
    s(
        "310000",
        "310100",
        "苏州河浙江路桥",
        "suzhou_creek",
        [5.8, 4.3, 0.70, 0.16, 3.0],
    ),
    s(
        "310000",
        "310100",
        "长江吴淞口",
        "yangtze_river",
        [7.8, 2.2, 0.15, 0.09, 1.8],
    ),
    s(
        "310000",
        "310100",
        "青草沙水库",
        "qingcaosha_reservoir",
        [8.6, 2.4, 0.10, 0.035, 1.3],
    ),
    s(
        "320000",
        "320200",
        "太湖贡湖",
        "taihu_lake",
        [8.8, 4.0, 0.12, 0.055, 1.2],
    ),
    s(
        "320000",
        "320200",
        "太湖梅梁湖",
        "taihu_lake",
        [8.9, 4.2, 0.14, 0.065, 1.3],
    ),
    s(
        "320000",
        "320500",
        "太湖胥口",
        "taihu_lake",
        [8.7, 3.6, 0.10, 0.045, 1.0],
    ),
    s(
        "320000",
        "320500",
        "太浦河平望",
        "taipu_river",
        [7.3, 3.5, 0.22, 0.10, 1.9],
    ),
    s(
        "320000",
        "320500",
        "京杭运河苏州",
        "grand_canal",
        [6.6, 4.2, 0.40, 0.14, 2.3],
    ),
    s(
        "320000",
        "320100",
        "长江南京九乡河口",
        "yangtze_river",
        [8.0, 2.0, 0.12, 0.08, 1.7],
    ),
    s(
        "320000",
        "320200",
        "长江江阴",
        "yangtze_river",
        [7.9, 2.1, 0.13, 0.085, 1.7],
    ),
    s(
        "320000",
        "320800",
        "洪泽湖湖心",
        "hongze_lake",
        [8.4, 4.3, 0.18, 0.07, 1.4],
    ),
    s(
        "320000",
        "320800",
        "淮河盱眙",
        "huai_river",
        [7.6, 4.1, 0.25, 0.11, 1.9],
    ),
    s(
        "320000",
        "320800",
        "京杭运河淮安",
        "grand_canal",
        [7.2, 3.9, 0.30, 0.12, 2.0],
    ),
    s(
        "330000",
        "330500",
        "太湖小梅口",
        "taihu_lake",
        [8.8, 3.7, 0.11, 0.05, 1.1],
    ),
    s(
        "330000",
        "330100",
        "钱塘江闸口",
        "qiantang_river",
        [8.3, 2.3, 0.12, 0.06, 1.4],
    ),
    s(
        "330000",
        "330100",
        "新安江建德",
        "xinan_river",
        [9.0, 1.6, 0.07, 0.025, 1.0],
    ),
    s(
        "330000",
        "330100",
        "千岛湖三潭岛",
        "qiandao_lake",
        [9.2, 1.7, 0.05, 0.012, 0.85],
    ),
    s(
        "330000",
        "330400",
        "京杭运河王江泾",
        "grand_canal",
        [6.4, 4.0, 0.45, 0.15, 2.4],
    ),
    s(
        "330000",
        "330100",
        "京杭运河拱宸桥",
        "grand_canal",
        [6.7, 3.8, 0.35, 0.13, 2.1],
    ),
    s(
        "330000",
        "330400",
        "太浦河丁栅",
        "taipu_river",
        [7.1, 3.6, 0.28, 0.11, 2.0],
    ),
    s(
        "340000",
        "340100",
        "巢湖湖心",
        "chao_lake",
        [8.6, 4.1, 0.20, 0.075, 1.3],
    ),
    s(
        "340000",
        "340100",
        "巢湖西半湖",
        "chao_lake",
        [8.2, 4.6, 0.30, 0.095, 1.6],
    ),
    s(
        "340000",
        "340300",
        "淮河蚌埠闸",
        "huai_river",
        [7.7, 4.0, 0.25, 0.11, 1.8],
    ),
    s(
        "340000",
        "340400",
        "淮河凤台大桥",
        "huai_river",
        [7.8, 3.8, 0.22, 0.10, 1.7],
    ),
    s(
        "340000",
        "341000",
        "新安江街口",
        "xinan_river",
        [9.1, 1.5, 0.06, 0.022, 0.9],
    ),
    s(
        "340000",
        "341000",
        "新安江屯溪",
        "xinan_river",
        [8.8, 1.8, 0.12, 0.035, 1.1],
    ),
    s(
        "340000",
        "340800",
        "长江安庆",
        "yangtze_river",
        [8.1, 2.0, 0.11, 0.075, 1.6],
    ),
    s(
        "340000",
        "340200",
        "长江芜湖",
        "yangtze_river",
        [8.0, 2.1, 0.12, 0.08, 1.6],
    ),
    s(
        "340000",
        "340500",
        "长江马鞍山",
        "yangtze_river",
        [7.9, 2.1, 0.13, 0.085, 1.7],
    ),
];

fn sections(region: &str) -> impl Iterator<Item = &'static Section> + Clone + use<'_> {
    SECTIONS.iter().filter(move |s| s.region == region)
}

/// Samples per section at a scale, spread over the year.
fn sample_count(spec: &DemoSpec) -> usize {
    super::scaled(DAYS_IN_YEAR as f64, spec.scale).clamp(MIN_SAMPLES, DAYS_IN_YEAR)
}

fn round(v: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (v * f).round() / f
}

/// Sample `k` (day `day` of 2025) at a section.
fn sample(spec: &DemoSpec, section: &'static Section, ordinal: usize, code: &str, day: usize) -> NamedRow {
    let mut rng = row_rng(spec.seed, section.region, TAG, ((ordinal as u64) << 32) | day as u64);
    let [do_, codmn, nh3, tp, tn] = section.typical;
    let d = day as f64;
    // Warm water holds less oxygen and grows algae: DO dips in summer,
    // phosphorus rises with summer runoff and blooms; ammonia is higher in
    // cold months when nitrification slows.
    let summer = (TAU * (d - 200.0) / 365.0).cos();
    let winter = -summer;
    let spell = value_noise(mix(&[spec.seed, code_key(code)]), d, 10.0);
    let dissolved_oxygen = round(
        (do_ - 1.3 * summer + 0.4 * spell + 0.3 * super::rng::normal(&mut rng)).max(0.5),
        2,
    );
    let permanganate_index = round(log_normal(&mut rng, codmn * (1.0 + 0.08 * summer), 0.15), 1).max(0.5);
    let ammonia_nitrogen = round(
        log_normal(&mut rng, nh3 * (1.0 + 0.3 * winter) * (0.15 * spell).exp(), 0.3),
        3,
    )
    .max(0.025);
    let total_phosphorus = round(
        log_normal(&mut rng, tp * (1.0 + 0.2 * summer) * (0.1 * spell).exp(), 0.2),
        3,
    )
    .max(0.005);
    let total_nitrogen = round(log_normal(&mut rng, tn * (1.0 + 0.15 * winter), 0.15), 2).max(0.05);
    let is_lake = water::water_body(section.body).is_some_and(|w| w.is_lake);
    let class = water::classify(
        dissolved_oxygen,
        permanganate_index,
        ammonia_nitrogen,
        total_phosphorus,
        total_nitrogen,
        is_lake,
    );
    vec![
        ("section_code", Cell::Text(code.to_owned())),
        ("section_name", Cell::Text(section.name.to_owned())),
        ("water_body", Cell::Text(section.body.to_owned())),
        ("region", Cell::Text(section.region.to_owned())),
        ("city", Cell::Text(section.city.to_owned())),
        (
            "sampled_at",
            Cell::Time(super::air::YEAR_START + 86_400 * day as i64 + SAMPLE_HOUR_OFFSET),
        ),
        ("dissolved_oxygen", Cell::Real(dissolved_oxygen)),
        ("permanganate_index", Cell::Real(permanganate_index)),
        ("ammonia_nitrogen", Cell::Real(ammonia_nitrogen)),
        ("total_phosphorus", Cell::Real(total_phosphorus)),
        ("total_nitrogen", Cell::Real(total_nitrogen)),
        ("water_class", Cell::Text(class.to_owned())),
    ]
}

/// Section codes: city code prefix, `W` and a serial within the region.
fn section_code(section: &Section, ordinal: usize) -> String {
    format!("{}W{:02}", &section.city[..4], ordinal + 1)
}

/// All samples of a province, day by day, sections within each day.
pub(crate) fn rows(region: &'static str, spec: DemoSpec) -> impl Iterator<Item = NamedRow> + Send + 'static {
    let list: Vec<(&'static Section, String)> = sections(region)
        .enumerate()
        .map(|(i, s)| (s, section_code(s, i)))
        .collect();
    let n = sample_count(&spec);
    let per_day = list.len();
    (0..n * per_day).map(move |i| {
        let (k, j) = (i / per_day, i % per_day);
        let (section, code) = &list[j];
        sample(&spec, section, j, code, k * DAYS_IN_YEAR / n)
    })
}

/// Rows of a province at a spec.
pub(crate) fn row_count(region: &str, spec: &DemoSpec) -> usize {
    sections(region).count() * sample_count(spec)
}

/// Sections of a province.
#[cfg(test)]
pub(crate) fn section_count(region: &str) -> usize {
    sections(region).count()
}
