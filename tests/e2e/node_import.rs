//! Imports: validated against the descriptor and the code rules, all or
//! nothing, every rejected row reported with its physical line number
//! whatever the line endings.

use std::io::Write;
use std::path::Path;

use yrd_node::SqliteStore;
use yrd_node::import::{Format, import_file};
use yrd_proto::datasets::enterprise::v1::Enterprise;

use crate::harness::{TestNode, query, request};

const JIANGSU: &str = "320000";

/// Valid Jiangsu enterprise rows as CSV (columns of [`HEADER`]), from the
/// demo generator's rules.
pub fn valid_rows(n: usize) -> Vec<String> {
    use yrd_datasets::Cell;
    use yrd_datasets::demo::{DemoSpec, rows};
    let spec = DemoSpec { seed: 991, scale: 0.01 };
    rows("enterprise", JIANGSU, &spec)
        .unwrap()
        .take(n)
        .map(|row| {
            let get = |name: &str| {
                row.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, c)| match c {
                        Cell::Text(s) => s.clone(),
                        Cell::Real(r) => r.to_string(),
                        Cell::Int(i) => i.to_string(),
                        other => format!("{other:?}"),
                    })
                    .unwrap_or_default()
            };
            [
                "credit_code",
                "name",
                "legal_representative",
                "representative_id_number",
                "region",
                "city",
                "district",
                "industry",
                "registered_capital",
                "established",
                "status",
            ]
            .iter()
            .map(|f| format!("\"{}\"", get(f)))
            .collect::<Vec<_>>()
            .join(",")
        })
        .collect()
}

/// The CSV header of [`valid_rows`].
pub const HEADER: &str = "credit_code,name,legal_representative,representative_id_number,region,city,district,industry,registered_capital,established,status";

fn write(dir: &Path, name: &str, lines: &[String]) -> std::path::PathBuf {
    write_ended(dir, name, lines, "\n")
}

/// Writes `lines`, each ended by `end`.
fn write_ended(dir: &Path, name: &str, lines: &[String], end: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    let mut f = std::fs::File::create(&path).unwrap();
    for l in lines {
        write!(f, "{l}{end}").unwrap();
    }
    path
}

fn count(node: &TestNode) -> i64 {
    node.sql()
        .query_row("SELECT COUNT(*) FROM ds_enterprise", [], |r| r.get(0))
        .unwrap()
}

fn store(node: &TestNode) -> SqliteStore {
    SqliteStore::open(&node.db, JIANGSU, 1).unwrap()
}

#[tokio::test]
async fn one_bad_row_rejects_the_whole_file_with_line_numbers() {
    let node = TestNode::start(JIANGSU).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let before = count(&node);
    let good = valid_rows(6);
    let mut lines = vec![HEADER.to_owned()];
    lines.extend(good.iter().take(2).cloned());
    // Line 4: a credit code with a wrong check character.
    let mut bad_code = good[2].clone();
    let code_end = bad_code.find("\",").unwrap();
    let last = bad_code[..code_end].chars().last().unwrap();
    bad_code.replace_range(code_end - 1..code_end, if last == '0' { "1" } else { "0" });
    lines.push(bad_code);
    lines.push(good[3].clone());
    // Line 6: a row from another region.
    lines.push(good[4].replace("\"320000\"", "\"330000\""));
    // Line 7: not a number.
    let mut fields: Vec<&str> = good[5].split(',').collect();
    fields[8] = "\"lots\"";
    lines.push(fields.join(","));
    let path = write(dir.path(), "ent.csv", &lines);
    let st = store(&node);
    let outcome = import_file(&st, JIANGSU, "enterprise", &path, Format::Csv)
        .await
        .unwrap();
    assert_eq!(outcome.inserted, 0);
    let lines: Vec<u64> = outcome.rejected.iter().map(|r| r.line).collect();
    assert_eq!(lines, vec![4, 6, 7], "{:?}", outcome.rejected);
    assert!(
        outcome.rejected[0].reason.contains("credit_code"),
        "{:?}",
        outcome.rejected[0]
    );
    assert!(
        outcome.rejected[1].reason.contains("region"),
        "{:?}",
        outcome.rejected[1]
    );
    assert!(
        outcome.rejected[2].reason.contains("registered_capital"),
        "{:?}",
        outcome.rejected[2]
    );
    assert_eq!(count(&node), before, "nothing was written");
}

#[tokio::test]
async fn line_numbers_are_physical_lines_in_crlf_and_with_quoted_line_breaks() {
    let node = TestNode::start(JIANGSU).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let good = valid_rows(4);
    // Lines 3 to 5 hold one row (a name over three physical lines); line 6
    // is from another region, line 7 not a number.
    let mut fields: Vec<String> = good[3].split(',').map(str::to_owned).collect();
    fields[8] = "\"lots\"".into();
    for end in ["\n", "\r\n"] {
        let multiline = good[1].replacen("\",\"", &format!("\",\"first{end}second{end}third "), 1);
        let lines = vec![
            HEADER.to_owned(),
            good[0].clone(),
            multiline,
            good[2].replace("\"320000\"", "\"330000\""),
            fields.join(","),
        ];
        let path = write_ended(dir.path(), "crlf.csv", &lines, end);
        let outcome = import_file(&store(&node), JIANGSU, "enterprise", &path, Format::Csv)
            .await
            .unwrap();
        let lines: Vec<u64> = outcome.rejected.iter().map(|r| r.line).collect();
        assert_eq!(lines, vec![6, 7], "line ending {end:?}: {:?}", outcome.rejected);
        assert!(outcome.rejected[0].reason.contains("region"), "{:?}", outcome.rejected);
        assert!(
            outcome.rejected[1].reason.contains("registered_capital"),
            "{:?}",
            outcome.rejected
        );
    }
}

#[tokio::test]
async fn duplicates_and_secret_values_are_reported_without_the_secret() {
    let node = TestNode::start(JIANGSU).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let good = valid_rows(2);
    // The same row twice (line 3 duplicates line 2), and a broken ID number.
    let id_field = good[1].split(',').nth(3).unwrap().trim_matches('"').to_owned();
    let mut broken_id: Vec<char> = id_field.chars().collect();
    broken_id[17] = if broken_id[17] == '1' { '2' } else { '1' };
    let broken_id: String = broken_id.into_iter().collect();
    let lines = vec![
        HEADER.to_owned(),
        good[0].clone(),
        good[0].clone(),
        good[1].replace(&id_field, &broken_id),
    ];
    let path = write(dir.path(), "ent.csv", &lines);
    let st = store(&node);
    let outcome = import_file(&st, JIANGSU, "enterprise", &path, Format::Csv)
        .await
        .unwrap();
    let lines: Vec<u64> = outcome.rejected.iter().map(|r| r.line).collect();
    assert_eq!(lines, vec![3, 4], "{:?}", outcome.rejected);
    assert!(outcome.rejected[0].reason.contains("duplicate primary key"));
    assert!(outcome.rejected[1].reason.contains("representative_id_number"));
    assert!(
        !outcome.rejected[1].reason.contains(&broken_id),
        "a secret value leaked: {}",
        outcome.rejected[1].reason
    );
}

#[tokio::test]
async fn valid_json_lines_are_imported_and_served() {
    let node = TestNode::start(JIANGSU).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let before = count(&node);
    let json: Vec<String> = valid_rows(3)
        .iter()
        .map(|csv| {
            let vals: Vec<&str> = csv.split("\",\"").map(|v| v.trim_matches('"')).collect();
            let names: Vec<&str> = HEADER.split(',').collect();
            let fields: Vec<String> = names
                .iter()
                .zip(vals)
                .map(|(n, v)| {
                    if *n == "registered_capital" {
                        format!("\"{n}\":{v}")
                    } else {
                        format!("\"{n}\":\"{v}\"")
                    }
                })
                .collect();
            format!("{{{}}}", fields.join(","))
        })
        .collect();
    let mut lines = json.clone();
    lines.insert(1, String::new());
    let path = write(dir.path(), "ent.jsonl", &lines);
    let st = store(&node);
    let outcome = import_file(&st, JIANGSU, "enterprise", &path, Format::JsonLines)
        .await
        .unwrap();
    assert!(outcome.rejected.is_empty(), "{:?}", outcome.rejected);
    assert_eq!(outcome.inserted, 3);
    assert_eq!(count(&node), before + 3);
    let code = json[0]
        .split("\"credit_code\":\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    let mut client = node.client().await.unwrap();
    let rows: Vec<Enterprise> = query(
        &mut client,
        request("enterprise", &format!("credit_code = \"{code}\""), "", 10),
    )
    .await
    .unwrap()
    .decode();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].credit_code, code);
}

#[tokio::test]
async fn a_header_naming_an_unknown_field_rejects_the_file() {
    let node = TestNode::start(JIANGSU).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "ent.csv",
        &[format!("{HEADER},colour"), format!("{},\"red\"", valid_rows(1)[0])],
    );
    let st = store(&node);
    let outcome = import_file(&st, JIANGSU, "enterprise", &path, Format::Csv)
        .await
        .unwrap();
    assert_eq!(outcome.rejected.len(), 1);
    assert_eq!(outcome.rejected[0].line, 1);
    assert!(outcome.rejected[0].reason.contains("colour"));
}
