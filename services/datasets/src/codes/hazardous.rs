//! Hazardous waste categories of the National Catalogue of Hazardous
//! Wastes (2021 edition). HW41-HW44 were retired in the 2016 edition (their
//! wastes moved into other categories) and are not valid codes.

/// Categories: code and Chinese name.
pub const CATEGORIES: &[(&str, &str)] = &[
    ("HW01", "医疗废物"),
    ("HW02", "医药废物"),
    ("HW03", "废药物、药品"),
    ("HW04", "农药废物"),
    ("HW05", "木材防腐剂废物"),
    ("HW06", "废有机溶剂与含有机溶剂废物"),
    ("HW07", "热处理含氰废物"),
    ("HW08", "废矿物油与含矿物油废物"),
    ("HW09", "油/水、烃/水混合物或乳化液"),
    ("HW10", "多氯（溴）联苯类废物"),
    ("HW11", "精（蒸）馏残渣"),
    ("HW12", "染料、涂料废物"),
    ("HW13", "有机树脂类废物"),
    ("HW14", "新化学物质废物"),
    ("HW15", "爆炸性废物"),
    ("HW16", "感光材料废物"),
    ("HW17", "表面处理废物"),
    ("HW18", "焚烧处置残渣"),
    ("HW19", "含金属羰基化合物废物"),
    ("HW20", "含铍废物"),
    ("HW21", "含铬废物"),
    ("HW22", "含铜废物"),
    ("HW23", "含锌废物"),
    ("HW24", "含砷废物"),
    ("HW25", "含硒废物"),
    ("HW26", "含镉废物"),
    ("HW27", "含锑废物"),
    ("HW28", "含碲废物"),
    ("HW29", "含汞废物"),
    ("HW30", "含铊废物"),
    ("HW31", "含铅废物"),
    ("HW32", "无机氟化物废物"),
    ("HW33", "无机氰化物废物"),
    ("HW34", "废酸"),
    ("HW35", "废碱"),
    ("HW36", "石棉废物"),
    ("HW37", "有机磷化合物废物"),
    ("HW38", "有机氰化物废物"),
    ("HW39", "含酚废物"),
    ("HW40", "含醚废物"),
    ("HW45", "含有机卤化物废物"),
    ("HW46", "含镍废物"),
    ("HW47", "含钡废物"),
    ("HW48", "有色金属采选和冶炼废物"),
    ("HW49", "其他废物"),
    ("HW50", "废催化剂"),
];

/// The Chinese name of a category code such as `HW08`.
pub fn category(code: &str) -> Option<&'static str> {
    CATEGORIES.iter().find(|(c, _)| *c == code).map(|&(_, name)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retired_categories_are_absent() {
        assert_eq!(CATEGORIES.len(), 46);
        for code in ["HW41", "HW42", "HW43", "HW44", "HW00", "HW51"] {
            assert!(category(code).is_none(), "{code}");
        }
        assert_eq!(category("HW08"), Some("废矿物油与含矿物油废物"));
    }
}
