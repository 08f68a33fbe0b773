//! Code lists and check rules of the national standards the datasets
//! follow, and [`check_code`] for every `code_list` named in the protos.

pub mod aqi;
pub mod credit_code;
pub mod hazardous;
pub mod industry;
pub mod property;
pub mod regions;
pub mod resident_id;
pub mod water;

/// Registration statuses of a market entity: code and Chinese label.
pub const ENTERPRISE_STATUSES: &[(&str, &str)] = &[
    ("active", "存续"),
    ("in_liquidation", "清算"),
    ("revoked", "吊销"),
    ("cancelled", "注销"),
    ("moved_out", "迁出"),
];

/// Credit risk classes of a market entity (A lowest risk, D highest): code
/// and Chinese label.
pub const RISK_CLASSES: &[(&str, &str)] = &[
    ("A", "信用风险低"),
    ("B", "信用风险一般"),
    ("C", "信用风险较高"),
    ("D", "信用风险高"),
];

/// Statuses of a transfer manifest: code and Chinese label.
pub const MANIFEST_STATUSES: &[(&str, &str)] = &[("in_transit", "运输中"), ("received", "已接收")];

/// The code lists, by the names the protos use in `code_list`.
const LISTS: &[&str] = &[
    "gb2260.province",
    "gb2260.city",
    "gb2260.district",
    "gb4754.division",
    "enterprise.status",
    "enterprise.risk_class",
    "hj633.pollutant",
    "water.body",
    "gb3838.class",
    "hw.category",
    "manifest.status",
    "property.exchange",
    "property.asset_class",
];

/// Whether a code list of this name exists.
pub fn code_list_exists(name: &str) -> bool {
    LISTS.contains(&name)
}

/// The names of all code lists.
pub fn code_lists() -> impl Iterator<Item = &'static str> {
    LISTS.iter().copied()
}

/// The label of a code in a list (a Chinese name where one exists), or
/// `None` if the list or the code is unknown. Tied primary pollutants
/// (`PM2.5,PM10`) have no single label.
pub fn label(list: &str, value: &str) -> Option<&'static str> {
    let pair = |table: &'static [(&'static str, &'static str)]| table.iter().find(|(c, _)| *c == value).map(|p| p.1);
    match list {
        "gb2260.province" => regions::province(value).map(|p| p.name_zh),
        "gb2260.city" => regions::city(value).map(|c| c.name_zh),
        "gb2260.district" => regions::district(value).map(|(_, name)| name),
        "gb4754.division" => industry::division(value),
        "enterprise.status" => pair(ENTERPRISE_STATUSES),
        "enterprise.risk_class" => pair(RISK_CLASSES),
        "hj633.pollutant" => aqi::POLLUTANTS
            .iter()
            .position(|p| *p == value)
            .map(|i| aqi::POLLUTANT_NAMES_ZH[i]),
        "water.body" => water::water_body(value).map(|w| w.name_zh),
        "gb3838.class" => water::CLASSES
            .iter()
            .position(|c| *c == value)
            .map(|i| water::CLASS_NAMES_ZH[i]),
        "hw.category" => hazardous::category(value),
        "manifest.status" => pair(MANIFEST_STATUSES),
        "property.exchange" => property::exchange(value).map(|e| e.name_zh),
        "property.asset_class" => property::asset_class(value),
        _ => None,
    }
}

/// Checks that `value` belongs to the code list `list`. Code values are
/// public, so the reason quotes the value.
pub fn check_code(list: &str, value: &str) -> Result<(), String> {
    if !code_list_exists(list) {
        return Err(format!("unknown code list {list}"));
    }
    let ok = match list {
        // Tied primary pollutants are joined, so not every valid value has a label.
        "hj633.pollutant" => aqi::is_pollutant_code(value),
        _ => label(list, value).is_some(),
    };
    if ok {
        return Ok(());
    }
    Err(match list {
        "hj633.pollutant" => format!(
            "{value:?} is not a code of {list} (one of {} or several joined with ',' in that order)",
            aqi::POLLUTANTS.join(", ")
        ),
        "gb4754.division" => format!("{value:?} is not a code of {list} (section letter and division, such as C39)"),
        _ => format!("{value:?} is not a code of {list}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_list_in_the_protos_exists() {
        let registry = yrd_proto::schema::Registry::standard().unwrap();
        let mut used = 0;
        for ds in registry.datasets() {
            for f in &ds.fields {
                if let Some(list) = &f.code_list {
                    assert!(code_list_exists(list), "{}.{} uses {list}", ds.id, f.name);
                    used += 1;
                }
            }
        }
        assert!(used >= 12);
        assert_eq!(code_lists().count(), LISTS.len());
    }

    #[test]
    fn membership() {
        let good = [
            ("gb2260.province", "340000"),
            ("gb2260.city", "310100"),
            ("gb2260.district", "330782"),
            ("gb4754.division", "F51"),
            ("enterprise.status", "moved_out"),
            ("hj633.pollutant", "O3"),
            ("hj633.pollutant", "PM10,NO2"),
            ("water.body", "chao_lake"),
            ("gb3838.class", "worse_than_V"),
            ("hw.category", "HW50"),
            ("manifest.status", "in_transit"),
            ("property.exchange", "SUAEE"),
            ("property.asset_class", "mining_rights"),
        ];
        for (list, value) in good {
            assert_eq!(check_code(list, value), Ok(()), "{list} {value}");
        }
        let bad = [
            ("gb2260.province", "110000"),
            ("gb2260.city", "341400"),
            ("gb2260.district", "310100"),
            ("gb4754.division", "39"),
            ("enterprise.status", "Active"),
            ("hj633.pollutant", "NO2,PM10"),
            ("water.body", "west_lake"),
            ("gb3838.class", "劣V"),
            ("hw.category", "HW42"),
            ("manifest.status", "lost"),
            ("property.exchange", "SSE"),
            ("property.asset_class", "stocks"),
        ];
        for (list, value) in bad {
            let reason = check_code(list, value).unwrap_err();
            assert!(reason.contains(list), "{reason}");
        }
        assert!(
            check_code("no.such.list", "x")
                .unwrap_err()
                .contains("unknown code list")
        );
        assert_eq!(label("gb2260.district", "320583"), Some("昆山市"));
        assert_eq!(label("property.exchange", "ACPRE"), Some("安徽长江产权交易所"));
    }
}
