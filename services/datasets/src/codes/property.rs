//! Property-rights exchanges of the four provinces and the asset classes
//! they trade.

/// A property-rights exchange.
#[derive(Debug)]
pub struct Exchange {
    /// Code, such as `SUAEE`.
    pub code: &'static str,
    /// Chinese name.
    pub name_zh: &'static str,
    /// English name.
    pub name_en: &'static str,
    /// Province-level region the exchange is in (GB/T 2260).
    pub region: &'static str,
}

/// The exchanges, one or more per province.
pub const EXCHANGES: &[Exchange] = &[
    Exchange {
        code: "SUAEE",
        name_zh: "上海联合产权交易所",
        name_en: "Shanghai United Assets and Equity Exchange",
        region: "310000",
    },
    Exchange {
        code: "JSPRE",
        name_zh: "江苏省产权交易所",
        name_en: "Jiangsu Province Property Rights Exchange",
        region: "320000",
    },
    Exchange {
        code: "ZJPRE",
        name_zh: "浙江产权交易所",
        name_en: "Zhejiang Property Rights Exchange",
        region: "330000",
    },
    Exchange {
        code: "HZPRE",
        name_zh: "杭州产权交易所",
        name_en: "Hangzhou Property Rights Exchange",
        region: "330000",
    },
    Exchange {
        code: "ACPRE",
        name_zh: "安徽长江产权交易所",
        name_en: "Anhui Changjiang Property Rights Exchange",
        region: "340000",
    },
];

/// Asset classes: code and Chinese name.
pub const ASSET_CLASSES: &[(&str, &str)] = &[
    ("equity", "企业股权"),
    ("real_estate", "房产"),
    ("creditor_rights", "债权"),
    ("intellectual_property", "知识产权"),
    ("equipment", "机器设备"),
    ("vehicle", "机动车辆"),
    ("land_use_rights", "土地使用权"),
    ("mining_rights", "矿业权"),
    ("other", "其他资产"),
];

/// The exchange with this code.
pub fn exchange(code: &str) -> Option<&'static Exchange> {
    EXCHANGES.iter().find(|e| e.code == code)
}

/// The exchanges of a province.
pub fn exchanges_in(region: &str) -> impl Iterator<Item = &'static Exchange> + use<'_> {
    EXCHANGES.iter().filter(move |e| e.region == region)
}

/// The Chinese name of an asset class.
pub fn asset_class(code: &str) -> Option<&'static str> {
    ASSET_CLASSES.iter().find(|(c, _)| *c == code).map(|&(_, name)| name)
}
