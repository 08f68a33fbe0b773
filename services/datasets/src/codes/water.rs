//! Surface water class per GB 3838-2002 (table 1, basic items), and the
//! water bodies the monitoring sections lie on.
//!
//! The class of a sample is the worst class over its parameters. Total
//! nitrogen counts for lakes and reservoirs only, and total phosphorus has
//! stricter limits there. "Worse than V" (劣V) is coded `worse_than_V`.

/// Class codes, best first.
pub const CLASSES: [&str; 6] = ["I", "II", "III", "IV", "V", "worse_than_V"];

/// Chinese labels of [`CLASSES`].
pub const CLASS_NAMES_ZH: [&str; 6] = ["I类", "II类", "III类", "IV类", "V类", "劣V类"];

/// Dissolved oxygen lower limits of classes I..V (mg/L, higher is better).
const DISSOLVED_OXYGEN: [f64; 5] = [7.5, 6.0, 5.0, 3.0, 2.0];
/// Permanganate index upper limits of classes I..V (mg/L).
const PERMANGANATE: [f64; 5] = [2.0, 4.0, 6.0, 10.0, 15.0];
/// Ammonia nitrogen upper limits of classes I..V (mg/L).
const AMMONIA: [f64; 5] = [0.15, 0.5, 1.0, 1.5, 2.0];
/// Total phosphorus upper limits in rivers (mg/L).
const PHOSPHORUS_RIVER: [f64; 5] = [0.02, 0.1, 0.2, 0.3, 0.4];
/// Total phosphorus upper limits in lakes and reservoirs (mg/L).
const PHOSPHORUS_LAKE: [f64; 5] = [0.01, 0.025, 0.05, 0.1, 0.2];
/// Total nitrogen upper limits in lakes and reservoirs (mg/L).
const NITROGEN_LAKE: [f64; 5] = [0.2, 0.5, 1.0, 1.5, 2.0];

/// A river, lake or reservoir with monitoring sections.
#[derive(Debug)]
pub struct WaterBody {
    /// Code, such as `taihu_lake`.
    pub code: &'static str,
    /// Chinese name.
    pub name_zh: &'static str,
    /// English name.
    pub name_en: &'static str,
    /// Lake or reservoir (lake limits apply) rather than a river.
    pub is_lake: bool,
    /// Provinces it lies in or flows through.
    pub regions: &'static [&'static str],
}

/// The water bodies of the Yangtze River Delta sections.
pub const WATER_BODIES: &[WaterBody] = &[
    WaterBody {
        code: "taihu_lake",
        name_zh: "太湖",
        name_en: "Taihu Lake",
        is_lake: true,
        regions: &["320000", "330000"],
    },
    WaterBody {
        code: "chao_lake",
        name_zh: "巢湖",
        name_en: "Chao Lake",
        is_lake: true,
        regions: &["340000"],
    },
    WaterBody {
        code: "dianshan_lake",
        name_zh: "淀山湖",
        name_en: "Dianshan Lake",
        is_lake: true,
        regions: &["310000", "320000"],
    },
    WaterBody {
        code: "hongze_lake",
        name_zh: "洪泽湖",
        name_en: "Hongze Lake",
        is_lake: true,
        regions: &["320000"],
    },
    WaterBody {
        code: "qiandao_lake",
        name_zh: "千岛湖",
        name_en: "Qiandao Lake (Xin'anjiang Reservoir)",
        is_lake: true,
        regions: &["330000"],
    },
    WaterBody {
        code: "qingcaosha_reservoir",
        name_zh: "青草沙水库",
        name_en: "Qingcaosha Reservoir",
        is_lake: true,
        regions: &["310000"],
    },
    WaterBody {
        code: "taipu_river",
        name_zh: "太浦河",
        name_en: "Taipu River",
        is_lake: false,
        regions: &["310000", "320000", "330000"],
    },
    WaterBody {
        code: "grand_canal",
        name_zh: "京杭大运河",
        name_en: "Grand Canal",
        is_lake: false,
        regions: &["320000", "330000"],
    },
    WaterBody {
        code: "huangpu_river",
        name_zh: "黄浦江",
        name_en: "Huangpu River",
        is_lake: false,
        regions: &["310000"],
    },
    WaterBody {
        code: "suzhou_creek",
        name_zh: "苏州河",
        name_en: "Suzhou Creek (Wusong River)",
        is_lake: false,
        regions: &["310000", "320000"],
    },
    WaterBody {
        code: "yangtze_river",
        name_zh: "长江",
        name_en: "Yangtze River",
        is_lake: false,
        regions: &["310000", "320000", "340000"],
    },
    WaterBody {
        code: "qiantang_river",
        name_zh: "钱塘江",
        name_en: "Qiantang River",
        is_lake: false,
        regions: &["330000", "340000"],
    },
    WaterBody {
        code: "xinan_river",
        name_zh: "新安江",
        name_en: "Xin'an River",
        is_lake: false,
        regions: &["330000", "340000"],
    },
    WaterBody {
        code: "huai_river",
        name_zh: "淮河",
        name_en: "Huai River",
        is_lake: false,
        regions: &["320000", "340000"],
    },
];

/// The water body with this code.
pub fn water_body(code: &str) -> Option<&'static WaterBody> {
    WATER_BODIES.iter().find(|w| w.code == code)
}

/// Class index 0..=5 of a "higher is better" value.
fn class_at_least(value: f64, limits: &[f64; 5]) -> usize {
    limits.iter().position(|&l| value >= l).unwrap_or(5)
}

/// Class index 0..=5 of a "lower is better" value.
fn class_at_most(value: f64, limits: &[f64; 5]) -> usize {
    limits.iter().position(|&l| value <= l).unwrap_or(5)
}

/// Class index 0..=5 (into [`CLASSES`]) of a sample. NaN readings count
/// as worse than V.
pub fn class_index(
    dissolved_oxygen: f64,
    permanganate_index: f64,
    ammonia_nitrogen: f64,
    total_phosphorus: f64,
    total_nitrogen: f64,
    is_lake: bool,
) -> usize {
    let phosphorus = if is_lake { &PHOSPHORUS_LAKE } else { &PHOSPHORUS_RIVER };
    let mut worst = class_at_least(dissolved_oxygen, &DISSOLVED_OXYGEN)
        .max(class_at_most(permanganate_index, &PERMANGANATE))
        .max(class_at_most(ammonia_nitrogen, &AMMONIA))
        .max(class_at_most(total_phosphorus, phosphorus));
    if is_lake {
        worst = worst.max(class_at_most(total_nitrogen, &NITROGEN_LAKE));
    }
    worst
}

/// The class code of a sample: `I` .. `V` or `worse_than_V`.
pub fn classify(
    dissolved_oxygen: f64,
    permanganate_index: f64,
    ammonia_nitrogen: f64,
    total_phosphorus: f64,
    total_nitrogen: f64,
    is_lake: bool,
) -> &'static str {
    let i = class_index(
        dissolved_oxygen,
        permanganate_index,
        ammonia_nitrogen,
        total_phosphorus,
        total_nitrogen,
        is_lake,
    );
    CLASSES[i.min(5)]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A class-I river sample to vary one parameter at a time.
    fn river(do_: f64, codmn: f64, nh3: f64, tp: f64) -> &'static str {
        classify(do_, codmn, nh3, tp, 5.0, false)
    }

    #[test]
    fn dissolved_oxygen_boundaries() {
        assert_eq!(river(7.5, 1.0, 0.1, 0.01), "I");
        assert_eq!(river(7.49, 1.0, 0.1, 0.01), "II");
        assert_eq!(river(6.0, 1.0, 0.1, 0.01), "II");
        assert_eq!(river(5.0, 1.0, 0.1, 0.01), "III");
        assert_eq!(river(3.0, 1.0, 0.1, 0.01), "IV");
        assert_eq!(river(2.0, 1.0, 0.1, 0.01), "V");
        assert_eq!(river(1.99, 1.0, 0.1, 0.01), "worse_than_V");
    }

    #[test]
    fn upper_limit_boundaries() {
        assert_eq!(river(9.0, 2.0, 0.15, 0.02), "I");
        assert_eq!(river(9.0, 2.01, 0.15, 0.02), "II");
        assert_eq!(river(9.0, 6.0, 0.15, 0.02), "III");
        assert_eq!(river(9.0, 15.0, 0.15, 0.02), "V");
        assert_eq!(river(9.0, 15.1, 0.15, 0.02), "worse_than_V");
        assert_eq!(river(9.0, 1.0, 0.5, 0.02), "II");
        assert_eq!(river(9.0, 1.0, 1.0, 0.02), "III");
        assert_eq!(river(9.0, 1.0, 1.5, 0.02), "IV");
        assert_eq!(river(9.0, 1.0, 2.01, 0.02), "worse_than_V");
        assert_eq!(river(9.0, 1.0, 0.1, 0.2), "III");
        assert_eq!(river(9.0, 1.0, 0.1, 0.3), "IV");
        assert_eq!(river(9.0, 1.0, 0.1, 0.4), "V");
    }

    #[test]
    fn lakes_use_stricter_phosphorus_and_count_nitrogen() {
        // TP 0.05 is class II in a river but III in a lake.
        assert_eq!(classify(9.0, 1.0, 0.1, 0.05, 0.1, false), "II");
        assert_eq!(classify(9.0, 1.0, 0.1, 0.05, 0.1, true), "III");
        assert_eq!(classify(9.0, 1.0, 0.1, 0.01, 0.2, true), "I");
        // Total nitrogen decides a lake's class, and is ignored for a river.
        assert_eq!(classify(9.0, 1.0, 0.1, 0.01, 1.5, true), "IV");
        assert_eq!(classify(9.0, 1.0, 0.1, 0.01, 2.5, true), "worse_than_V");
        assert_eq!(classify(9.0, 1.0, 0.1, 0.01, 2.5, false), "I");
        assert_eq!(classify(9.0, 1.0, 0.1, f64::NAN, 0.1, false), "worse_than_V");
    }

    #[test]
    fn water_bodies() {
        assert!(water_body("taihu_lake").is_some_and(|w| w.is_lake));
        assert!(water_body("taipu_river").is_some_and(|w| !w.is_lake));
        assert!(water_body("west_lake").is_none());
    }
}
