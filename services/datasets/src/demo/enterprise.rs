//! Demo market entities. Enterprise #i of a region is a pure function of
//! (seed, scale, region, i), so other datasets can refer to enterprises of
//! any region without generating the register.

use std::fmt::Write as _;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use time::Month;

use super::days;
use super::names::{BRAND_CHARS, GIVEN_FEMALE, GIVEN_MALE, ROADS, SURNAMES};
use super::rng::{log_normal, mix, row_rng, weighted};
use super::{DemoSpec, scaled};
use crate::codes::credit_code::{self, ALPHABET};
use crate::codes::regions::{City, Province};
use crate::codes::resident_id;
use crate::record::{Cell, NamedRow};

/// Dataset tag in row seeds.
const TAG: u64 = 1;

/// Enterprises per region at scale 1.
pub(crate) const PER_REGION_AT_SCALE_1: f64 = 20_000.0;
/// Enterprises per region at any scale, at least.
const MIN_PER_REGION: usize = 20;

/// Every enterprise whose index is `DISPOSER_OFFSET` mod `DISPOSER_STRIDE`
/// is a licensed hazardous waste disposal firm, so that manifests can name
/// a receiver in O(1) instead of searching the register.
pub(crate) const DISPOSER_STRIDE: usize = 97;
/// See [`DISPOSER_STRIDE`]; below [`MIN_PER_REGION`], so every region has one.
pub(crate) const DISPOSER_OFFSET: usize = 13;

/// Industry divisions with their share of new registrations (rough shares
/// of the region's register) and words used in names.
const INDUSTRIES: &[(&str, f64, &[&str])] = &[
    ("F51", 18.0, &["贸易", "商贸", "国际贸易", "供应链管理", "进出口"]),
    ("F52", 6.0, &["商业", "百货", "超市", "零售"]),
    (
        "L72",
        12.0,
        &[
            "企业管理咨询",
            "商务咨询",
            "文化传播",
            "广告",
            "人力资源服务",
            "品牌管理",
        ],
    ),
    ("L71", 1.0, &["设备租赁", "租赁"]),
    ("I65", 8.0, &["信息技术", "软件", "网络科技", "数据科技", "智能科技"]),
    ("I64", 3.0, &["网络科技", "互联网科技", "电子商务"]),
    ("M74", 5.0, &["工程设计", "检测技术", "环境检测", "建筑设计"]),
    (
        "M75",
        7.0,
        &["科技", "新材料科技", "生物科技", "新能源科技", "科技发展"],
    ),
    ("C34", 3.0, &["机械", "精密机械", "机电设备", "泵业", "阀门"]),
    ("C35", 2.0, &["智能装备", "专用设备", "医疗器械"]),
    ("C33", 2.0, &["金属制品", "五金", "钢结构"]),
    ("C39", 2.0, &["电子", "电子科技", "光电科技", "半导体", "微电子"]),
    ("C38", 2.0, &["电器", "电气", "电缆", "照明电器", "电池"]),
    ("C29", 1.5, &["塑料制品", "橡塑", "塑业"]),
    ("C26", 1.2, &["化工", "精细化工", "涂料", "化学"]),
    ("C17", 1.0, &["纺织", "织造", "丝绸"]),
    ("C18", 1.0, &["服饰", "服装"]),
    ("C36", 0.8, &["汽车零部件", "汽车配件"]),
    ("C30", 0.8, &["建材", "玻璃", "陶瓷"]),
    ("C13", 0.5, &["粮油", "农副产品"]),
    ("C14", 0.5, &["食品"]),
    ("C27", 0.5, &["药业", "制药", "生物医药"]),
    ("C40", 0.5, &["仪器仪表", "仪器"]),
    ("C21", 0.5, &["家具"]),
    ("C22", 0.4, &["纸业", "包装"]),
    ("C24", 0.5, &["文体用品", "工艺品"]),
    ("C31", 0.2, &["钢铁", "特钢"]),
    ("C32", 0.3, &["铜业", "铝业", "有色金属"]),
    ("C42", 0.3, &["再生资源", "资源再生利用"]),
    ("E47", 1.5, &["建设", "建筑工程"]),
    ("E48", 1.5, &["路桥工程", "市政工程"]),
    ("E50", 3.0, &["装饰工程", "建筑装饰"]),
    ("K70", 3.0, &["置业", "房地产开发", "物业管理"]),
    ("G54", 2.0, &["物流", "运输", "货运"]),
    ("G58", 2.0, &["国际货运代理", "供应链"]),
    ("G59", 1.0, &["仓储", "仓储物流"]),
    ("H62", 2.0, &["餐饮管理", "餐饮"]),
    ("H61", 0.5, &["酒店管理"]),
    ("O80", 1.5, &["家政服务", "保洁服务"]),
    ("O81", 0.8, &["汽车维修", "汽车服务"]),
    ("R88", 1.0, &["文化艺术", "文化发展"]),
    ("R87", 0.5, &["影视文化", "传媒"]),
    ("A01", 1.0, &["农业科技", "农业发展", "生态农业"]),
    ("A03", 0.3, &["畜牧", "养殖"]),
    ("N77", 0.7, &["环保科技", "环境工程", "环境科技"]),
    ("J67", 0.3, &["投资管理", "资产管理"]),
    ("J69", 0.4, &["投资"]),
    ("P83", 0.5, &["教育科技", "培训"]),
    ("Q84", 0.3, &["医疗管理"]),
    ("D44", 0.3, &["能源", "电力", "新能源"]),
];

/// Name words of the designated disposal firms (division N77).
const DISPOSER_WORDS: &[&str] = &["固废处置", "环境服务", "危险废物处置", "环保科技", "资源环境"];

/// Relative number of market entities per city (rough, for the demo).
const CITY_WEIGHTS: &[(&str, f64)] = &[
    ("320100", 20.0),
    ("320200", 13.0),
    ("320300", 9.0),
    ("320400", 10.0),
    ("320500", 30.0),
    ("320600", 10.0),
    ("320700", 4.0),
    ("320800", 5.0),
    ("320900", 7.0),
    ("321000", 5.0),
    ("321100", 4.0),
    ("321200", 5.0),
    ("321300", 5.0),
    ("330100", 30.0),
    ("330200", 22.0),
    ("330300", 13.0),
    ("330400", 8.0),
    ("330500", 5.0),
    ("330600", 8.0),
    ("330700", 14.0),
    ("330800", 2.5),
    ("330900", 1.5),
    ("331000", 9.0),
    ("331100", 3.0),
    ("340100", 25.0),
    ("340200", 7.0),
    ("340300", 5.0),
    ("340400", 3.0),
    ("340500", 4.0),
    ("340600", 2.0),
    ("340700", 2.0),
    ("340800", 5.0),
    ("341000", 1.5),
    ("341100", 5.0),
    ("341200", 8.0),
    ("341300", 5.0),
    ("341500", 5.0),
    ("341600", 5.0),
    ("341700", 1.5),
    ("341800", 3.0),
];

/// Sizes of the organization-code spaces: since the 2015 reform new codes
/// are "MA" + 6 characters of the alphabet (31^6 values); older firms kept
/// their 8-digit organization code.
const MA_SPACE: u64 = 887_503_681;
const DIGIT_SPACE: u64 = 100_000_000;
/// Multipliers coprime to the spaces above, so index -> org code is a
/// bijection and credit codes are unique within a region.
const MA_MULT: u64 = 123_456_791;
const DIGIT_MULT: u64 = 48_271_773;

/// The first three digits of mainland mobile numbers the demo hands out.
const MOBILE_PREFIXES: &[&str] = &[
    "133", "135", "136", "138", "139", "150", "152", "158", "177", "186", "189",
];

/// One demo enterprise, typed.
#[derive(Debug, Clone, PartialEq)]
pub struct EnterpriseRecord {
    /// Unified social credit code.
    pub credit_code: String,
    /// Registered name.
    pub name: String,
    /// Legal representative's name.
    pub legal_representative: String,
    /// Legal representative's ID number.
    pub representative_id_number: String,
    /// Province code.
    pub region: &'static str,
    /// City code.
    pub city: &'static str,
    /// District code.
    pub district: &'static str,
    /// GB/T 4754 division.
    pub industry: &'static str,
    /// Registered capital, CNY.
    pub registered_capital: f64,
    /// Date established, days since 1970-01-01.
    pub established_days: i64,
    /// Registration status.
    pub status: &'static str,
    /// Registered address.
    pub address: String,
    /// Contact mobile phone number.
    pub contact_phone: String,
    /// Credit risk class, `A` to `D`.
    pub credit_risk_class: &'static str,
}

impl EnterpriseRecord {
    /// The record as a row of the `enterprise` dataset.
    pub fn into_row(self) -> NamedRow {
        vec![
            ("credit_code", Cell::Text(self.credit_code)),
            ("name", Cell::Text(self.name)),
            ("legal_representative", Cell::Text(self.legal_representative)),
            ("representative_id_number", Cell::Text(self.representative_id_number)),
            ("region", Cell::Text(self.region.to_owned())),
            ("city", Cell::Text(self.city.to_owned())),
            ("district", Cell::Text(self.district.to_owned())),
            ("industry", Cell::Text(self.industry.to_owned())),
            ("registered_capital", Cell::Real(self.registered_capital)),
            ("established", Cell::Text(days::text(self.established_days))),
            ("status", Cell::Text(self.status.to_owned())),
            ("address", Cell::Text(self.address)),
            ("contact_phone", Cell::Text(self.contact_phone)),
            ("credit_risk_class", Cell::Text(self.credit_risk_class.to_owned())),
        ]
    }

    /// Whether the firm is a manufacturer (section C), the usual producer
    /// of hazardous waste.
    pub fn is_manufacturer(&self) -> bool {
        self.industry.starts_with('C')
    }
}

/// Enterprises per region for a spec.
pub fn enterprise_count(spec: &DemoSpec) -> usize {
    scaled(PER_REGION_AT_SCALE_1, spec.scale).max(MIN_PER_REGION)
}

/// Number of designated disposal firms among `count` enterprises.
pub(crate) fn disposer_count(count: usize) -> usize {
    if count > DISPOSER_OFFSET {
        (count - DISPOSER_OFFSET - 1) / DISPOSER_STRIDE + 1
    } else {
        0
    }
}

fn pick<'a>(rng: &mut ChaCha8Rng, items: &[&'a str]) -> &'a str {
    items[rng.random_range(0..items.len())]
}

/// A legal representative: name, and whether male (for the ID sequence).
fn person_name(rng: &mut ChaCha8Rng) -> (String, bool) {
    let surname = SURNAMES[weighted(rng, SURNAMES.iter().map(|s| s.1))].0;
    let male = rng.random_bool(0.75);
    let chars = if male { GIVEN_MALE } else { GIVEN_FEMALE };
    let mut name = String::with_capacity(12);
    name.push_str(surname);
    name.push_str(pick(rng, chars));
    if rng.random_bool(0.7) {
        name.push_str(pick(rng, chars));
    }
    (name, male)
}

/// The organization part (8 characters before its check character) of
/// enterprise `index`, unique per index within one form (for indexes below
/// the form's space, far beyond any demo scale).
fn org_body(seed: u64, region: &str, index: usize, new_form: bool) -> String {
    let offset = mix(&[seed, super::rng::code_key(region), 0x0A6]);
    // index -> index * MULT + offset (mod space) is a bijection, as MULT
    // is coprime to the space; u128 keeps the product exact.
    let permute = |mult: u64, space: u64| {
        let n = (u128::from(index as u64) * u128::from(mult) + u128::from(offset)) % u128::from(space);
        n as u64
    };
    if new_form {
        let mut n = permute(MA_MULT, MA_SPACE);
        let alphabet = ALPHABET.as_bytes();
        let mut body = [b'0'; 6];
        for slot in body.iter_mut().rev() {
            *slot = alphabet[(n % 31) as usize];
            n /= 31;
        }
        let mut s = String::from("MA");
        s.extend(body.iter().map(|&b| char::from(b)));
        s
    } else {
        format!("{:08}", permute(DIGIT_MULT, DIGIT_SPACE))
    }
}

/// All enterprises of a province, as rows.
pub(crate) fn rows(province: &'static Province, spec: DemoSpec) -> impl Iterator<Item = NamedRow> + Send + 'static {
    (0..enterprise_count(&spec)).map(move |i| generate(province, &spec, i).into_row())
}

/// Enterprise `index` of `province`.
pub(crate) fn generate(province: &'static Province, spec: &DemoSpec, index: usize) -> EnterpriseRecord {
    let mut rng = row_rng(spec.seed, province.code, TAG, index as u64);
    let region = province.code;
    let cities = province.cities;
    let city: &'static City = &cities[weighted(
        &mut rng,
        cities
            .iter()
            .map(|c| CITY_WEIGHTS.iter().find(|w| w.0 == c.code).map_or(1.0, |w| w.1)),
    )];
    // Pudong holds about a fifth of Shanghai's firms; elsewhere districts
    // are drawn evenly.
    let (district, district_name) = city.districts[weighted(
        &mut rng,
        city.districts.iter().map(|d| if d.0 == "310115" { 4.0 } else { 1.0 }),
    )];
    let disposer = index % DISPOSER_STRIDE == DISPOSER_OFFSET;
    let (industry, words) = if disposer {
        ("N77", DISPOSER_WORDS)
    } else {
        let i = weighted(&mut rng, INDUSTRIES.iter().map(|x| x.1));
        (INDUSTRIES[i].0, INDUSTRIES[i].2)
    };

    // Established 1980-2025, most of them recent: the register grew fast
    // after the 2014 registration reform. Disposers hold licences, so they
    // are older than the 2025 manifests.
    let start = days::of(1980, Month::January, 1);
    let end = if disposer {
        days::of(2022, Month::December, 31)
    } else {
        days::of(2025, Month::December, 31)
    };
    let back = rng.random::<f64>().powf(2.5) * (end - start) as f64;
    let established_days = end - back as i64;

    let new_form = established_days >= days::of(2015, Month::October, 1);
    let org8 = org_body(spec.seed, region, index, new_form);
    let credit_code = credit_code::make('9', '1', district, &org8);

    let manufacturer = industry.starts_with('C');
    let mut capital = log_normal(&mut rng, if manufacturer { 3_000_000.0 } else { 1_000_000.0 }, 1.5);
    if disposer {
        capital = capital.max(20_000_000.0);
    }
    let capital = capital.clamp(10_000.0, 5_000_000_000.0);
    // Most registered capitals are round figures (500万, 1200万); the rest
    // are rounded to hundreds.
    let capital = if rng.random_bool(0.75) {
        let magnitude = 10f64.powi(capital.log10().floor() as i32 - 1).max(10_000.0);
        (capital / magnitude).round() * magnitude
    } else {
        (capital / 100.0).round() * 100.0
    }
    .max(10_000.0);

    let suffix = if capital >= 500_000_000.0 && rng.random_bool(0.5) {
        "集团有限公司"
    } else if capital >= 50_000_000.0 && rng.random_bool(0.4) {
        "股份有限公司"
    } else {
        "有限公司"
    };
    let b1 = rng.random_range(0..BRAND_CHARS.len());
    let b2 = (b1 + 1 + rng.random_range(0..BRAND_CHARS.len() - 1)) % BRAND_CHARS.len();
    let word = pick(&mut rng, words);
    let name = format!(
        "{}{}{}{word}{suffix}",
        city.short_name(),
        BRAND_CHARS[b1],
        BRAND_CHARS[b2]
    );

    let (legal_representative, male) = person_name(&mut rng);
    // Representatives were born 1950-2000 and were adults when the firm
    // was founded; most live in the firm's own district.
    let born_lo = days::of(1950, Month::January, 1);
    let born_hi = days::of(2000, Month::December, 31).min(established_days - 18 * 366);
    let born = born_lo + ((rng.random::<f64>() + rng.random::<f64>()) / 2.0 * (born_hi - born_lo) as f64) as i64;
    let home = if rng.random_bool(0.6) {
        district
    } else {
        let c = &cities[rng.random_range(0..cities.len())];
        c.districts[rng.random_range(0..c.districts.len())].0
    };
    let seq = rng.random_range(0..500u16) * 2 + u16::from(male);
    let representative_id_number = resident_id::make(home, days::date(born), seq);

    let age_years = (days::of(2025, Month::December, 31) - established_days) as f64 / 365.25;
    let status = if disposer {
        "active"
    } else {
        let closed = 0.04 + 0.20 * age_years / 46.0;
        let r: f64 = rng.random();
        if r < closed * 0.6 {
            "cancelled"
        } else if r < closed {
            "revoked"
        } else if r < closed + 0.01 {
            "in_liquidation"
        } else if r < closed + 0.02 {
            "moved_out"
        } else {
            "active"
        }
    };

    let road = pick(&mut rng, ROADS);
    let number = rng.random_range(1..=999);
    // Shanghai's addresses start with the city, which is the province.
    let province_prefix = if province.code == "310000" {
        ""
    } else {
        province.name_zh
    };
    let mut address = format!("{province_prefix}{}{district_name}{road}{number}号", city.name_zh);
    if rng.random_bool(0.4) {
        let _ = write!(
            address,
            "{}幢{}室",
            rng.random_range(1..=30),
            rng.random_range(101..=2520)
        );
    }

    // Drawn last, so that every earlier field is what it was before these
    // two fields existed.
    let prefix = pick(&mut rng, MOBILE_PREFIXES);
    let contact_phone = format!("{prefix}{:08}", rng.random_range(0..100_000_000u32));
    let risk: f64 = rng.random();
    let credit_risk_class = if risk < 0.55 {
        "A"
    } else if risk < 0.85 {
        "B"
    } else if risk < 0.97 {
        "C"
    } else {
        "D"
    };

    EnterpriseRecord {
        credit_code,
        name,
        legal_representative,
        representative_id_number,
        region,
        city: city.code,
        district,
        industry,
        registered_capital: capital,
        established_days,
        status,
        address,
        contact_phone,
        credit_risk_class,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gcd(a: u64, b: u64) -> u64 {
        if b == 0 { a } else { gcd(b, a % b) }
    }

    #[test]
    fn org_codes_are_a_permutation() {
        assert_eq!(MA_SPACE, 31u64.pow(6));
        assert_eq!(gcd(MA_MULT, MA_SPACE), 1);
        assert_eq!(gcd(DIGIT_MULT, DIGIT_SPACE), 1);
        let mut seen = std::collections::HashSet::new();
        for i in 0..50_000 {
            assert!(seen.insert(org_body(1, "310000", i, i % 2 == 0)), "{i}");
        }
    }

    #[test]
    fn disposers_are_where_manifests_look() {
        let spec = DemoSpec { seed: 5, scale: 0.0 };
        let n = enterprise_count(&spec);
        assert_eq!(disposer_count(n), 1);
        let p = &crate::codes::regions::PROVINCES[2];
        assert_eq!(generate(p, &spec, DISPOSER_OFFSET).industry, "N77");
        assert_eq!(disposer_count(DISPOSER_OFFSET + 1 + DISPOSER_STRIDE), 2);
        assert_eq!(disposer_count(DISPOSER_OFFSET), 0);
    }
}
