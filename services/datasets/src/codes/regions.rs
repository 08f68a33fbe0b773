//! GB/T 2260 administrative division codes of the four Yangtze River Delta
//! provinces: every prefecture-level city and every county-level division
//! (as in the 2023 edition of the code table; the statistical "x7x"
//! development-zone codes are not GB/T 2260 codes and are left out).

/// A province-level region.
#[derive(Debug)]
pub struct Province {
    /// Six-digit GB/T 2260 code, such as `310000`.
    pub code: &'static str,
    /// English name.
    pub name_en: &'static str,
    /// Chinese name.
    pub name_zh: &'static str,
    /// Prefecture-level cities, in code order.
    pub cities: &'static [City],
}

/// A prefecture-level city (for Shanghai, the municipality's `310100`).
#[derive(Debug)]
pub struct City {
    /// Six-digit GB/T 2260 code, such as `320500`.
    pub code: &'static str,
    /// Chinese name.
    pub name_zh: &'static str,
    /// English name.
    pub name_en: &'static str,
    /// County-level divisions: (code, Chinese name), in code order.
    pub districts: &'static [(&'static str, &'static str)],
}

impl City {
    /// Code of the province the city belongs to.
    pub fn province_code(&self) -> &'static str {
        province_of(self.code).map_or("", |p| p.code)
    }

    /// Chinese name without the trailing `市`, as used in enterprise names
    /// (`苏州` in `苏州恒达机械有限公司`). Shanghai's city keeps `上海`.
    pub fn short_name(&self) -> &'static str {
        self.name_zh.strip_suffix('市').unwrap_or(self.name_zh)
    }
}

impl Province {
    /// The province's name without the trailing `省`/`市`.
    pub fn short_name(&self) -> &'static str {
        self.name_zh
            .strip_suffix('省')
            .or_else(|| self.name_zh.strip_suffix('市'))
            .unwrap_or(self.name_zh)
    }

    /// Every county-level division of the province, with its city.
    pub fn districts(&self) -> impl Iterator<Item = (&'static City, &'static str, &'static str)> + use<> {
        let cities: &'static [City] = self.cities;
        cities
            .iter()
            .flat_map(|c| c.districts.iter().map(move |&(code, name)| (c, code, name)))
    }
}

/// The four provinces, in code order.
pub const PROVINCES: &[Province] = &[
    Province {
        code: "310000",
        name_en: "Shanghai",
        name_zh: "上海市",
        cities: SHANGHAI,
    },
    Province {
        code: "320000",
        name_en: "Jiangsu",
        name_zh: "江苏省",
        cities: JIANGSU,
    },
    Province {
        code: "330000",
        name_en: "Zhejiang",
        name_zh: "浙江省",
        cities: ZHEJIANG,
    },
    Province {
        code: "340000",
        name_en: "Anhui",
        name_zh: "安徽省",
        cities: ANHUI,
    },
];

/// The province with this code.
pub fn province(code: &str) -> Option<&'static Province> {
    PROVINCES.iter().find(|p| p.code == code)
}

/// The prefecture-level city with this code.
pub fn city(code: &str) -> Option<&'static City> {
    province_of(code)?.cities.iter().find(|c| c.code == code)
}

/// The county-level division with this code, with its city and name.
pub fn district(code: &str) -> Option<(&'static City, &'static str)> {
    let city_code = code.get(0..4)?;
    let city = province_of(code)?
        .cities
        .iter()
        .find(|c| c.code.starts_with(city_code))?;
    city.districts
        .iter()
        .find(|(c, _)| *c == code)
        .map(|&(_, name)| (city, name))
}

/// The province a code of any level falls in, by its first two digits.
pub fn province_of(code: &str) -> Option<&'static Province> {
    let prefix = code.get(0..2)?;
    if code.len() != 6 {
        return None;
    }
    PROVINCES.iter().find(|p| p.code.starts_with(prefix))
}

/// Whether `code` is a known province, city or county-level code inside the
/// province `province_code`.
pub fn is_within(code: &str, province_code: &str) -> bool {
    let known = province(code).is_some() || city(code).is_some() || district(code).is_some();
    known && province_of(code).is_some_and(|p| p.code == province_code)
}

/// Chinese name of a code of any of the three levels.
pub fn name_of(code: &str) -> Option<&'static str> {
    if let Some(p) = province(code) {
        return Some(p.name_zh);
    }
    if let Some(c) = city(code) {
        return Some(c.name_zh);
    }
    district(code).map(|(_, name)| name)
}

/// Every provincial-level division of GB/T 2260 that a mesh region may be
/// (code, English name): the 31 provinces, municipalities and autonomous
/// regions of the mainland. Taiwan (710000), Hong Kong (810000) and Macao
/// (820000) have GB/T 2260 codes but are left out: the two special
/// administrative regions keep their own data-protection law and no agency
/// there joins a mainland data-sharing mesh by default; a federation that
/// does name them lists them in its configs' `extra_region_ids`.
pub const PROVINCIAL_LEVEL: &[(&str, &str)] = &[
    ("110000", "Beijing"),
    ("120000", "Tianjin"),
    ("130000", "Hebei"),
    ("140000", "Shanxi"),
    ("150000", "Inner Mongolia"),
    ("210000", "Liaoning"),
    ("220000", "Jilin"),
    ("230000", "Heilongjiang"),
    ("310000", "Shanghai"),
    ("320000", "Jiangsu"),
    ("330000", "Zhejiang"),
    ("340000", "Anhui"),
    ("350000", "Fujian"),
    ("360000", "Jiangxi"),
    ("370000", "Shandong"),
    ("410000", "Henan"),
    ("420000", "Hubei"),
    ("430000", "Hunan"),
    ("440000", "Guangdong"),
    ("450000", "Guangxi"),
    ("460000", "Hainan"),
    ("500000", "Chongqing"),
    ("510000", "Sichuan"),
    ("520000", "Guizhou"),
    ("530000", "Yunnan"),
    ("540000", "Tibet"),
    ("610000", "Shaanxi"),
    ("620000", "Gansu"),
    ("630000", "Qinghai"),
    ("640000", "Ningxia"),
    ("650000", "Xinjiang"),
];

/// Whether `code` is one of the [`PROVINCIAL_LEVEL`] codes (a mainland
/// province, municipality or autonomous region, such as `320000`; not a
/// city such as `310100`).
pub fn is_provincial_level(code: &str) -> bool {
    PROVINCIAL_LEVEL.iter().any(|&(c, _)| c == code)
}

/// Checks a configured region id: a [`PROVINCIAL_LEVEL`] code, or one of
/// `extra`, the ids a federation allows besides (each checked with
/// [`check_extra_region_id`]). The error says why, for a config error.
pub fn check_region_id(id: &str, extra: &[String]) -> Result<(), String> {
    if is_provincial_level(id) || extra.iter().any(|e| e == id) {
        return Ok(());
    }
    let within = PROVINCIAL_LEVEL
        .iter()
        .find(|&&(c, _)| id.len() == 6 && id.bytes().all(|b| b.is_ascii_digit()) && id.get(..2) == c.get(..2));
    let what = match within {
        Some(&(c, name)) => format!(" (it is a city or county code within {c}, {name})"),
        None => String::new(),
    };
    Err(format!(
        "{id:?} is not a GB/T 2260 provincial-level code{what}: a region is one of the 31 mainland \
         provinces, municipalities and autonomous regions, such as 320000; a federation with other \
         regions lists their ids in extra_region_ids"
    ))
}

/// Checks an id a config allows besides the [`PROVINCIAL_LEVEL`] codes:
/// six ASCII digits, as GB/T 2260 codes are (`810000`, `990000`).
pub fn check_extra_region_id(id: &str) -> Result<(), String> {
    if id.len() == 6 && id.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(format!("{id:?} is not six digits, as a GB/T 2260 region code is"))
    }
}

const SHANGHAI: &[City] = &[City {
    code: "310100",
    name_zh: "上海市",
    name_en: "Shanghai",
    districts: &[
        ("310101", "黄浦区"),
        ("310104", "徐汇区"),
        ("310105", "长宁区"),
        ("310106", "静安区"),
        ("310107", "普陀区"),
        ("310109", "虹口区"),
        ("310110", "杨浦区"),
        ("310112", "闵行区"),
        ("310113", "宝山区"),
        ("310114", "嘉定区"),
        ("310115", "浦东新区"),
        ("310116", "金山区"),
        ("310117", "松江区"),
        ("310118", "青浦区"),
        ("310120", "奉贤区"),
        ("310151", "崇明区"),
    ],
}];

const JIANGSU: &[City] = &[
    City {
        code: "320100",
        name_zh: "南京市",
        name_en: "Nanjing",
        districts: &[
            ("320102", "玄武区"),
            ("320104", "秦淮区"),
            ("320105", "建邺区"),
            ("320106", "鼓楼区"),
            ("320111", "浦口区"),
            ("320113", "栖霞区"),
            ("320114", "雨花台区"),
            ("320115", "江宁区"),
            ("320116", "六合区"),
            ("320117", "溧水区"),
            ("320118", "高淳区"),
        ],
    },
    City {
        code: "320200",
        name_zh: "无锡市",
        name_en: "Wuxi",
        districts: &[
            ("320205", "锡山区"),
            ("320206", "惠山区"),
            ("320211", "滨湖区"),
            ("320213", "梁溪区"),
            ("320214", "新吴区"),
            ("320281", "江阴市"),
            ("320282", "宜兴市"),
        ],
    },
    City {
        code: "320300",
        name_zh: "徐州市",
        name_en: "Xuzhou",
        districts: &[
            ("320302", "鼓楼区"),
            ("320303", "云龙区"),
            ("320305", "贾汪区"),
            ("320311", "泉山区"),
            ("320312", "铜山区"),
            ("320321", "丰县"),
            ("320322", "沛县"),
            ("320324", "睢宁县"),
            ("320381", "新沂市"),
            ("320382", "邳州市"),
        ],
    },
    City {
        code: "320400",
        name_zh: "常州市",
        name_en: "Changzhou",
        districts: &[
            ("320402", "天宁区"),
            ("320404", "钟楼区"),
            ("320411", "新北区"),
            ("320412", "武进区"),
            ("320413", "金坛区"),
            ("320481", "溧阳市"),
        ],
    },
    City {
        code: "320500",
        name_zh: "苏州市",
        name_en: "Suzhou",
        districts: &[
            ("320505", "虎丘区"),
            ("320506", "吴中区"),
            ("320507", "相城区"),
            ("320508", "姑苏区"),
            ("320509", "吴江区"),
            ("320581", "常熟市"),
            ("320582", "张家港市"),
            ("320583", "昆山市"),
            ("320585", "太仓市"),
        ],
    },
    City {
        code: "320600",
        name_zh: "南通市",
        name_en: "Nantong",
        districts: &[
            ("320612", "通州区"),
            ("320613", "崇川区"),
            ("320614", "海门区"),
            ("320623", "如东县"),
            ("320681", "启东市"),
            ("320682", "如皋市"),
            ("320685", "海安市"),
        ],
    },
    City {
        code: "320700",
        name_zh: "连云港市",
        name_en: "Lianyungang",
        districts: &[
            ("320703", "连云区"),
            ("320706", "海州区"),
            ("320707", "赣榆区"),
            ("320722", "东海县"),
            ("320723", "灌云县"),
            ("320724", "灌南县"),
        ],
    },
    City {
        code: "320800",
        name_zh: "淮安市",
        name_en: "Huai'an",
        districts: &[
            ("320803", "淮安区"),
            ("320804", "淮阴区"),
            ("320812", "清江浦区"),
            ("320813", "洪泽区"),
            ("320826", "涟水县"),
            ("320830", "盱眙县"),
            ("320831", "金湖县"),
        ],
    },
    City {
        code: "320900",
        name_zh: "盐城市",
        name_en: "Yancheng",
        districts: &[
            ("320902", "亭湖区"),
            ("320903", "盐都区"),
            ("320904", "大丰区"),
            ("320921", "响水县"),
            ("320922", "滨海县"),
            ("320923", "阜宁县"),
            ("320924", "射阳县"),
            ("320925", "建湖县"),
            ("320981", "东台市"),
        ],
    },
    City {
        code: "321000",
        name_zh: "扬州市",
        name_en: "Yangzhou",
        districts: &[
            ("321002", "广陵区"),
            ("321003", "邗江区"),
            ("321012", "江都区"),
            ("321023", "宝应县"),
            ("321081", "仪征市"),
            ("321084", "高邮市"),
        ],
    },
    City {
        code: "321100",
        name_zh: "镇江市",
        name_en: "Zhenjiang",
        districts: &[
            ("321102", "京口区"),
            ("321111", "润州区"),
            ("321112", "丹徒区"),
            ("321181", "丹阳市"),
            ("321182", "扬中市"),
            ("321183", "句容市"),
        ],
    },
    City {
        code: "321200",
        name_zh: "泰州市",
        name_en: "Taizhou",
        districts: &[
            ("321202", "海陵区"),
            ("321203", "高港区"),
            ("321204", "姜堰区"),
            ("321281", "兴化市"),
            ("321282", "靖江市"),
            ("321283", "泰兴市"),
        ],
    },
    City {
        code: "321300",
        name_zh: "宿迁市",
        name_en: "Suqian",
        districts: &[
            ("321302", "宿城区"),
            ("321311", "宿豫区"),
            ("321322", "沭阳县"),
            ("321323", "泗阳县"),
            ("321324", "泗洪县"),
        ],
    },
];

const ZHEJIANG: &[City] = &[
    City {
        code: "330100",
        name_zh: "杭州市",
        name_en: "Hangzhou",
        districts: &[
            ("330102", "上城区"),
            ("330105", "拱墅区"),
            ("330106", "西湖区"),
            ("330108", "滨江区"),
            ("330109", "萧山区"),
            ("330110", "余杭区"),
            ("330111", "富阳区"),
            ("330112", "临安区"),
            ("330113", "临平区"),
            ("330114", "钱塘区"),
            ("330122", "桐庐县"),
            ("330127", "淳安县"),
            ("330182", "建德市"),
        ],
    },
    City {
        code: "330200",
        name_zh: "宁波市",
        name_en: "Ningbo",
        districts: &[
            ("330203", "海曙区"),
            ("330205", "江北区"),
            ("330206", "北仑区"),
            ("330211", "镇海区"),
            ("330212", "鄞州区"),
            ("330213", "奉化区"),
            ("330225", "象山县"),
            ("330226", "宁海县"),
            ("330281", "余姚市"),
            ("330282", "慈溪市"),
        ],
    },
    City {
        code: "330300",
        name_zh: "温州市",
        name_en: "Wenzhou",
        districts: &[
            ("330302", "鹿城区"),
            ("330303", "龙湾区"),
            ("330304", "瓯海区"),
            ("330305", "洞头区"),
            ("330324", "永嘉县"),
            ("330326", "平阳县"),
            ("330327", "苍南县"),
            ("330328", "文成县"),
            ("330329", "泰顺县"),
            ("330381", "瑞安市"),
            ("330382", "乐清市"),
            ("330383", "龙港市"),
        ],
    },
    City {
        code: "330400",
        name_zh: "嘉兴市",
        name_en: "Jiaxing",
        districts: &[
            ("330402", "南湖区"),
            ("330411", "秀洲区"),
            ("330421", "嘉善县"),
            ("330424", "海盐县"),
            ("330481", "海宁市"),
            ("330482", "平湖市"),
            ("330483", "桐乡市"),
        ],
    },
    City {
        code: "330500",
        name_zh: "湖州市",
        name_en: "Huzhou",
        districts: &[
            ("330502", "吴兴区"),
            ("330503", "南浔区"),
            ("330521", "德清县"),
            ("330522", "长兴县"),
            ("330523", "安吉县"),
        ],
    },
    City {
        code: "330600",
        name_zh: "绍兴市",
        name_en: "Shaoxing",
        districts: &[
            ("330602", "越城区"),
            ("330603", "柯桥区"),
            ("330604", "上虞区"),
            ("330624", "新昌县"),
            ("330681", "诸暨市"),
            ("330683", "嵊州市"),
        ],
    },
    City {
        code: "330700",
        name_zh: "金华市",
        name_en: "Jinhua",
        districts: &[
            ("330702", "婺城区"),
            ("330703", "金东区"),
            ("330723", "武义县"),
            ("330726", "浦江县"),
            ("330727", "磐安县"),
            ("330781", "兰溪市"),
            ("330782", "义乌市"),
            ("330783", "东阳市"),
            ("330784", "永康市"),
        ],
    },
    City {
        code: "330800",
        name_zh: "衢州市",
        name_en: "Quzhou",
        districts: &[
            ("330802", "柯城区"),
            ("330803", "衢江区"),
            ("330822", "常山县"),
            ("330824", "开化县"),
            ("330825", "龙游县"),
            ("330881", "江山市"),
        ],
    },
    City {
        code: "330900",
        name_zh: "舟山市",
        name_en: "Zhoushan",
        districts: &[
            ("330902", "定海区"),
            ("330903", "普陀区"),
            ("330921", "岱山县"),
            ("330922", "嵊泗县"),
        ],
    },
    City {
        code: "331000",
        name_zh: "台州市",
        name_en: "Taizhou",
        districts: &[
            ("331002", "椒江区"),
            ("331003", "黄岩区"),
            ("331004", "路桥区"),
            ("331022", "三门县"),
            ("331023", "天台县"),
            ("331024", "仙居县"),
            ("331081", "温岭市"),
            ("331082", "临海市"),
            ("331083", "玉环市"),
        ],
    },
    City {
        code: "331100",
        name_zh: "丽水市",
        name_en: "Lishui",
        districts: &[
            ("331102", "莲都区"),
            ("331121", "青田县"),
            ("331122", "缙云县"),
            ("331123", "遂昌县"),
            ("331124", "松阳县"),
            ("331125", "云和县"),
            ("331126", "庆元县"),
            ("331127", "景宁畲族自治县"),
            ("331181", "龙泉市"),
        ],
    },
];

const ANHUI: &[City] = &[
    City {
        code: "340100",
        name_zh: "合肥市",
        name_en: "Hefei",
        districts: &[
            ("340102", "瑶海区"),
            ("340103", "庐阳区"),
            ("340104", "蜀山区"),
            ("340111", "包河区"),
            ("340121", "长丰县"),
            ("340122", "肥东县"),
            ("340123", "肥西县"),
            ("340124", "庐江县"),
            ("340181", "巢湖市"),
        ],
    },
    City {
        code: "340200",
        name_zh: "芜湖市",
        name_en: "Wuhu",
        districts: &[
            ("340202", "镜湖区"),
            ("340207", "鸠江区"),
            ("340209", "弋江区"),
            ("340210", "湾沚区"),
            ("340212", "繁昌区"),
            ("340223", "南陵县"),
            ("340281", "无为市"),
        ],
    },
    City {
        code: "340300",
        name_zh: "蚌埠市",
        name_en: "Bengbu",
        districts: &[
            ("340302", "龙子湖区"),
            ("340303", "蚌山区"),
            ("340304", "禹会区"),
            ("340311", "淮上区"),
            ("340321", "怀远县"),
            ("340322", "五河县"),
            ("340323", "固镇县"),
        ],
    },
    City {
        code: "340400",
        name_zh: "淮南市",
        name_en: "Huainan",
        districts: &[
            ("340402", "大通区"),
            ("340403", "田家庵区"),
            ("340404", "谢家集区"),
            ("340405", "八公山区"),
            ("340406", "潘集区"),
            ("340421", "凤台县"),
            ("340422", "寿县"),
        ],
    },
    City {
        code: "340500",
        name_zh: "马鞍山市",
        name_en: "Ma'anshan",
        districts: &[
            ("340503", "花山区"),
            ("340504", "雨山区"),
            ("340506", "博望区"),
            ("340521", "当涂县"),
            ("340522", "含山县"),
            ("340523", "和县"),
        ],
    },
    City {
        code: "340600",
        name_zh: "淮北市",
        name_en: "Huaibei",
        districts: &[
            ("340602", "杜集区"),
            ("340603", "相山区"),
            ("340604", "烈山区"),
            ("340621", "濉溪县"),
        ],
    },
    City {
        code: "340700",
        name_zh: "铜陵市",
        name_en: "Tongling",
        districts: &[
            ("340705", "铜官区"),
            ("340706", "义安区"),
            ("340711", "郊区"),
            ("340722", "枞阳县"),
        ],
    },
    City {
        code: "340800",
        name_zh: "安庆市",
        name_en: "Anqing",
        districts: &[
            ("340802", "迎江区"),
            ("340803", "大观区"),
            ("340811", "宜秀区"),
            ("340822", "怀宁县"),
            ("340825", "太湖县"),
            ("340826", "宿松县"),
            ("340827", "望江县"),
            ("340828", "岳西县"),
            ("340881", "桐城市"),
            ("340882", "潜山市"),
        ],
    },
    City {
        code: "341000",
        name_zh: "黄山市",
        name_en: "Huangshan",
        districts: &[
            ("341002", "屯溪区"),
            ("341003", "黄山区"),
            ("341004", "徽州区"),
            ("341021", "歙县"),
            ("341022", "休宁县"),
            ("341023", "黟县"),
            ("341024", "祁门县"),
        ],
    },
    City {
        code: "341100",
        name_zh: "滁州市",
        name_en: "Chuzhou",
        districts: &[
            ("341102", "琅琊区"),
            ("341103", "南谯区"),
            ("341122", "来安县"),
            ("341124", "全椒县"),
            ("341125", "定远县"),
            ("341126", "凤阳县"),
            ("341181", "天长市"),
            ("341182", "明光市"),
        ],
    },
    City {
        code: "341200",
        name_zh: "阜阳市",
        name_en: "Fuyang",
        districts: &[
            ("341202", "颍州区"),
            ("341203", "颍东区"),
            ("341204", "颍泉区"),
            ("341221", "临泉县"),
            ("341222", "太和县"),
            ("341225", "阜南县"),
            ("341226", "颍上县"),
            ("341282", "界首市"),
        ],
    },
    City {
        code: "341300",
        name_zh: "宿州市",
        name_en: "Suzhou",
        districts: &[
            ("341302", "埇桥区"),
            ("341321", "砀山县"),
            ("341322", "萧县"),
            ("341323", "灵璧县"),
            ("341324", "泗县"),
        ],
    },
    City {
        code: "341500",
        name_zh: "六安市",
        name_en: "Lu'an",
        districts: &[
            ("341502", "金安区"),
            ("341503", "裕安区"),
            ("341504", "叶集区"),
            ("341522", "霍邱县"),
            ("341523", "舒城县"),
            ("341524", "金寨县"),
            ("341525", "霍山县"),
        ],
    },
    City {
        code: "341600",
        name_zh: "亳州市",
        name_en: "Bozhou",
        districts: &[
            ("341602", "谯城区"),
            ("341621", "涡阳县"),
            ("341622", "蒙城县"),
            ("341623", "利辛县"),
        ],
    },
    City {
        code: "341700",
        name_zh: "池州市",
        name_en: "Chizhou",
        districts: &[
            ("341702", "贵池区"),
            ("341721", "东至县"),
            ("341722", "石台县"),
            ("341723", "青阳县"),
        ],
    },
    City {
        code: "341800",
        name_zh: "宣城市",
        name_en: "Xuancheng",
        districts: &[
            ("341802", "宣州区"),
            ("341821", "郎溪县"),
            ("341823", "泾县"),
            ("341824", "绩溪县"),
            ("341825", "旌德县"),
            ("341881", "宁国市"),
            ("341882", "广德市"),
        ],
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn city_counts_match_the_code_table() {
        let counts: Vec<usize> = PROVINCES.iter().map(|p| p.cities.len()).collect();
        assert_eq!(counts, [1, 13, 11, 16]);
        assert_eq!(SHANGHAI[0].districts.len(), 16);
        assert!(city("341400").is_none(), "Chaohu prefecture was abolished in 2011");
    }

    #[test]
    fn codes_are_consistent() {
        let mut seen = std::collections::HashSet::new();
        for p in PROVINCES {
            assert!(p.code.ends_with("0000"));
            for c in p.cities {
                assert_eq!(&c.code[..2], &p.code[..2], "{}", c.code);
                assert!(c.code.ends_with("00") && c.districts.len() >= 4, "{}", c.code);
                assert_eq!(c.province_code(), p.code);
                for (d, name) in c.districts {
                    assert_eq!(&d[..4], &c.code[..4], "{d}");
                    assert!(seen.insert(*d), "{d} twice");
                    assert_eq!(district(d).map(|(c, n)| (c.code, n)), Some((c.code, *name)));
                    assert!(is_within(d, p.code));
                }
            }
        }
    }

    #[test]
    fn provincial_level_codes() {
        assert_eq!(PROVINCIAL_LEVEL.len(), 31);
        for p in PROVINCES {
            assert!(is_provincial_level(p.code), "{}", p.code);
        }
        for &(code, _) in PROVINCIAL_LEVEL {
            assert!(code.len() == 6 && code.ends_with("0000"), "{code}");
        }
        for bad in ["999999", "310100", "710000", "810000", "820000", "000000", "32000", ""] {
            assert!(!is_provincial_level(bad), "{bad}");
            assert!(check_region_id(bad, &[]).is_err(), "{bad}");
        }
        assert_eq!(check_region_id("320000", &[]), Ok(()));
        let e = check_region_id("310100", &[]).unwrap_err();
        assert!(e.contains("\"310100\"") && e.contains("within 310000, Shanghai"), "{e}");
        let e = check_region_id("999999", &[]).unwrap_err();
        assert!(
            e.contains("\"999999\" is not a GB/T 2260 provincial-level code:") && e.contains("extra_region_ids"),
            "{e}"
        );
        assert_eq!(check_region_id("810000", &["810000".to_owned()]), Ok(()));
        assert_eq!(check_extra_region_id("990000"), Ok(()));
        assert!(check_extra_region_id("99").is_err());
        assert!(check_extra_region_id("hk").is_err());
    }

    #[test]
    fn lookups() {
        assert_eq!(province("330000").map(|p| p.name_en), Some("Zhejiang"));
        assert_eq!(city("320500").map(|c| c.name_zh), Some("苏州市"));
        assert_eq!(
            district("310115").map(|(c, n)| (c.code, n)),
            Some(("310100", "浦东新区"))
        );
        assert_eq!(district("340210").map(|(_, n)| n), Some("湾沚区"));
        assert!(district("320100").is_none());
        assert!(district("110101").is_none());
        assert!(!is_within("320583", "310000"));
        assert_eq!(city("320500").map(City::short_name), Some("苏州"));
        assert_eq!(province("320000").map(Province::short_name), Some("江苏"));
    }
}
