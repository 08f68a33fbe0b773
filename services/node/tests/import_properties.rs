//! Property tests of the import readers (`yrd_node::import`): what the
//! `csv` crate writes, in any line ending, our bounded CSV reader reads back
//! field for field, with each record on the physical line it starts on, and
//! keeps exactly the first `cap` bytes of a field with its whole length;
//! JSON Lines are read line by line the same way. Any read-buffer size
//! gives the same answer. The fuzz targets `import_csv` and `import_jsonl`
//! (`fuzz/`) try arbitrary bytes; these run in the suite on stable.

#![allow(clippy::unwrap_used, missing_docs)]

use std::io::BufReader;

use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use yrd_node::import::{CsvReader, CsvRecord, read_line};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Field text with everything CSV has to quote: commas, quotes, every
/// line break, spaces, and characters of more than one byte.
fn field() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            4 => proptest::char::range('a', 'e'),
            1 => Just(','),
            1 => Just('"'),
            1 => Just('\r'),
            1 => Just('\n'),
            1 => Just(' '),
            1 => Just('市'),
        ],
        0..12,
    )
    .prop_map(|c| c.into_iter().collect())
}

fn records() -> impl Strategy<Value = Vec<Vec<String>>> {
    proptest::collection::vec(proptest::collection::vec(field(), 1..5), 1..8)
}

/// The line ends a file may use.
fn terminator() -> impl Strategy<Value = csv::Terminator> {
    prop_oneof![
        Just(csv::Terminator::CRLF),
        Just(csv::Terminator::Any(b'\n')),
        Just(csv::Terminator::Any(b'\r')),
    ]
}

/// Line ends in `text`, counting `\r\n`, a lone `\r` and a lone `\n` as one each.
fn line_ends(text: &[u8]) -> u64 {
    let mut n = 0;
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b'\r' if text.get(i + 1) == Some(&b'\n') => {
                n += 1;
                i += 1;
            }
            b'\r' | b'\n' => n += 1,
            _ => {}
        }
        i += 1;
    }
    n
}

/// `records` written by the `csv` crate with `term`; with each record's
/// first line. A record of one empty field is written quoted, as a blank
/// line is no record.
fn write(records: &[Vec<String>], term: csv::Terminator) -> (Vec<u8>, Vec<u64>) {
    let mut out = Vec::new();
    let mut lines = Vec::new();
    for r in records {
        lines.push(1 + line_ends(&out));
        let style = if r.len() == 1 && r[0].is_empty() {
            csv::QuoteStyle::Always
        } else {
            csv::QuoteStyle::Necessary
        };
        let mut w = csv::WriterBuilder::new()
            .terminator(term)
            .quote_style(style)
            .from_writer(Vec::new());
        w.write_record(r).unwrap();
        out.extend(w.into_inner().unwrap());
    }
    (out, lines)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn csv_written_by_the_csv_crate_reads_back_on_its_lines(
        records in records(),
        term in terminator(),
        cap in 0usize..16,
        buffer in 1usize..32,
    ) {
        let (text, lines) = write(&records, term);
        let mut reader = CsvReader::new(BufReader::with_capacity(buffer, text.as_slice()));
        let mut record = CsvRecord::default();
        for (want, line) in records.iter().zip(&lines) {
            prop_assert!(reader.read_record(&[cap; 8], &mut record).unwrap(), "a record is missing");
            prop_assert_eq!(record.line, *line);
            prop_assert_eq!(record.count, want.len());
            prop_assert_eq!(record.fields.len(), want.len());
            for (got, want) in record.fields.iter().zip(want) {
                let bytes = want.as_bytes();
                prop_assert_eq!(got.len, bytes.len() as u64);
                prop_assert_eq!(&got.bytes[..], &bytes[..bytes.len().min(cap)]);
                prop_assert_eq!(got.is_cut(), bytes.len() > cap);
            }
        }
        prop_assert!(!reader.read_record(&[cap; 8], &mut record).unwrap(), "a record too many");
    }

    #[test]
    fn fields_past_the_caps_are_counted_not_kept(records in records(), buffer in 1usize..32) {
        let (text, _) = write(&records, csv::Terminator::CRLF);
        let mut reader = CsvReader::new(BufReader::with_capacity(buffer, text.as_slice()));
        let mut record = CsvRecord::default();
        for want in &records {
            prop_assert!(reader.read_record(&[64], &mut record).unwrap());
            prop_assert_eq!(record.count, want.len());
            prop_assert_eq!(record.fields.len(), 1);
            prop_assert_eq!(&record.fields[0].bytes[..], want[0].as_bytes());
        }
    }

    #[test]
    fn json_lines_read_back_with_their_lengths(
        lines in proptest::collection::vec("[a-c\"{}:,\\\\ 市\r]{0,20}", 0..8),
        crlf in any::<bool>(),
        last_end in any::<bool>(),
        cap in 0usize..24,
        buffer in 1usize..32,
    ) {
        // A line of its own ending in `\r` would read as a CRLF line end.
        let lines: Vec<String> = lines.into_iter().map(|l| l.trim_end_matches('\r').to_owned()).collect();
        let end = if crlf { "\r\n" } else { "\n" };
        let mut text = lines.join(end);
        if last_end && !lines.is_empty() {
            text.push_str(end);
        }
        let mut input = BufReader::with_capacity(buffer, text.as_bytes());
        let mut out = Vec::new();
        let mut got = Vec::new();
        while let Some(len) = read_line(&mut input, cap, &mut out).unwrap() {
            got.push((len, out.clone()));
        }
        // An empty last line without a line end is no line.
        let want: Vec<&String> = if !last_end && lines.last().is_some_and(String::is_empty) {
            lines[..lines.len() - 1].iter().collect()
        } else {
            lines.iter().collect()
        };
        prop_assert_eq!(got.len(), want.len(), "{:?}", text);
        for ((len, kept), line) in got.iter().zip(want) {
            let bytes = line.as_bytes();
            prop_assert_eq!(*len, bytes.len() as u64);
            prop_assert_eq!(&kept[..], &bytes[..bytes.len().min(cap)]);
        }
    }
}
