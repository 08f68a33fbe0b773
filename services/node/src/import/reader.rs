//! Input readers of bounded memory: a CSV record reader that keeps at most
//! a given number of bytes of each field (and counts the rest), and a JSON
//! Lines reader that keeps at most a given number of bytes of each line.
//! Whatever the input, a reader holds its read buffer and the bytes it was
//! told to keep; a 200 MB field or line costs its length in reading time,
//! not in memory.
//!
//! Line numbers are physical lines, 1-based, counting `\n`, `\r\n` and a
//! lone `\r` each as one line end, so a record is reported at the line it
//! starts on whatever the file's line endings, quoted line breaks included.

use std::io::{self, BufRead, Read};

/// The byte-order mark some editors write at the start of a UTF-8 file.
const BOM: &[u8] = b"\xef\xbb\xbf";

/// One field of a CSV record: its first bytes, up to the reader's cap for
/// it, and its whole length.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CsvField {
    /// The field's bytes, quotes removed, at most the cap.
    pub bytes: Vec<u8>,
    /// The field's whole length in bytes.
    pub len: u64,
}

impl CsvField {
    /// Whether the field was longer than its cap (so `bytes` is only its start).
    pub fn is_cut(&self) -> bool {
        self.len > self.bytes.len() as u64
    }
}

/// One CSV record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CsvRecord {
    /// The physical line the record starts on, 1-based.
    pub line: u64,
    /// The first fields, as many as the reader was given caps for.
    pub fields: Vec<CsvField>,
    /// How many fields the record has (more than `fields` holds when it
    /// has more than the caps given).
    pub count: usize,
}

/// A CSV input that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum CsvError {
    /// The input failed.
    #[error("cannot be read: {0}")]
    Io(#[from] io::Error),
    /// A quoted field runs to the end of the input.
    #[error("a quoted field that starts on line {line} is not closed before the end of the file")]
    Unclosed {
        /// The line the record starts on.
        line: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a field.
    StartField,
    /// In an unquoted field: a quote is an ordinary byte.
    InField,
    /// In a quoted field: line breaks and commas are part of it.
    InQuoted,
    /// After a quote in a quoted field: a second quote is a quote, a comma
    /// or a line break ends the field, anything else continues it unquoted.
    QuoteInQuoted,
}

/// A CSV reader in the dialect of the `csv` crate's defaults (comma, `"`
/// quotes doubled inside quoted fields, records ended by `\n`, `\r\n` or
/// `\r`, blank lines skipped, a leading BOM dropped), keeping at most a
/// given number of bytes of each field.
#[derive(Debug)]
pub struct CsvReader<R> {
    /// The input, after the first bytes read to look for a BOM (kept
    /// when they are not one).
    input: io::Chain<io::Cursor<Vec<u8>>, R>,
    lines: LineCounter,
    started: bool,
}

impl<R: BufRead> CsvReader<R> {
    /// A reader of `input` (a `BufReader` of a file, usually).
    pub fn new(input: R) -> Self {
        Self {
            input: io::Cursor::new(Vec::new()).chain(input),
            lines: LineCounter::default(),
            started: false,
        }
    }

    /// Drops a leading BOM, however the input's reads are cut (a pipe may
    /// deliver it a byte at a time); other first bytes are read again.
    fn skip_bom(&mut self) -> io::Result<()> {
        let (head, rest) = self.input.get_mut();
        let mut first = Vec::with_capacity(BOM.len());
        while first.len() < BOM.len() && BOM.starts_with(&first) {
            let buf = match rest.fill_buf() {
                Ok(buf) => buf,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Nothing read is lost, should the caller read on.
                    *head = io::Cursor::new(first);
                    return Err(e);
                }
            };
            if buf.is_empty() {
                break;
            }
            let n = buf.len().min(BOM.len() - first.len());
            first.extend_from_slice(&buf[..n]);
            rest.consume(n);
        }
        if first != BOM {
            *head = io::Cursor::new(first);
        }
        Ok(())
    }

    /// Reads the next record into `out`: `Ok(false)` at the end of the
    /// input. Of field `i`, at most `caps[i]` bytes are kept; fields past
    /// `caps.len()` are only counted.
    pub fn read_record(&mut self, caps: &[usize], out: &mut CsvRecord) -> Result<bool, CsvError> {
        out.fields.clear();
        out.count = 0;
        if !self.started {
            self.started = true;
            self.skip_bom()?;
        }
        // Line ends before the record: blank lines, or the `\n` of a `\r\n`.
        loop {
            let buf = self.input.fill_buf()?;
            if buf.is_empty() {
                return Ok(false);
            }
            let n = buf.iter().take_while(|&&b| b == b'\r' || b == b'\n').count();
            if n == 0 {
                break;
            }
            self.lines.count(&buf[..n]);
            self.input.consume(n);
        }
        out.line = self.lines.line;
        let mut state = State::StartField;
        let mut field = CsvField::default();
        loop {
            let Self { input, lines, .. } = self;
            let buf = input.fill_buf()?;
            if buf.is_empty() {
                if state == State::InQuoted {
                    return Err(CsvError::Unclosed { line: out.line });
                }
                end_field(out, caps, &mut field);
                return Ok(true);
            }
            let mut i = 0;
            while i < buf.len() {
                let cap = caps.get(out.count).copied().unwrap_or(0);
                match state {
                    State::StartField | State::InField | State::QuoteInQuoted => {
                        let b = buf[i];
                        match (state, b) {
                            (State::StartField, b'"') => {
                                state = State::InQuoted;
                                i += 1;
                            }
                            (State::QuoteInQuoted, b'"') => {
                                push(&mut field, cap, b"\"");
                                state = State::InQuoted;
                                i += 1;
                            }
                            (_, b',') => {
                                end_field(out, caps, &mut field);
                                state = State::StartField;
                                i += 1;
                            }
                            (_, b'\r' | b'\n') => {
                                end_field(out, caps, &mut field);
                                lines.count(&buf[..=i]);
                                input.consume(i + 1);
                                return Ok(true);
                            }
                            _ => {
                                // Ordinary bytes up to the next comma or line end.
                                let end = buf[i..]
                                    .iter()
                                    .position(|&c| matches!(c, b',' | b'\r' | b'\n'))
                                    .map_or(buf.len(), |p| i + p);
                                push(&mut field, cap, &buf[i..end]);
                                state = State::InField;
                                i = end;
                            }
                        }
                    }
                    State::InQuoted => {
                        let end = buf[i..].iter().position(|&c| c == b'"').map_or(buf.len(), |p| i + p);
                        push(&mut field, cap, &buf[i..end]);
                        if end < buf.len() {
                            state = State::QuoteInQuoted;
                            i = end + 1;
                        } else {
                            i = end;
                        }
                    }
                }
            }
            let n = buf.len();
            lines.count(buf);
            input.consume(n);
        }
    }
}

/// Appends `bytes` to `field`, keeping at most `cap` bytes in all.
fn push(field: &mut CsvField, cap: usize, bytes: &[u8]) {
    let room = cap.saturating_sub(field.bytes.len());
    field.bytes.extend_from_slice(&bytes[..bytes.len().min(room)]);
    field.len += bytes.len() as u64;
}

/// Ends the field being read: kept if there is a cap for it, counted always.
fn end_field(out: &mut CsvRecord, caps: &[usize], field: &mut CsvField) {
    let done = std::mem::take(field);
    if out.count < caps.len() {
        out.fields.push(done);
    }
    out.count += 1;
}

/// Counts physical lines over consumed bytes: `\n`, `\r\n` and a lone `\r`
/// each end one line, also when a `\r\n` is split between two reads.
#[derive(Debug, Clone, Copy)]
struct LineCounter {
    /// The current line, 1-based.
    line: u64,
    /// The last byte counted was a `\r`.
    after_cr: bool,
}

impl Default for LineCounter {
    fn default() -> Self {
        Self {
            line: 1,
            after_cr: false,
        }
    }
}

impl LineCounter {
    fn count(&mut self, bytes: &[u8]) {
        for &b in bytes {
            match b {
                b'\r' => self.line += 1,
                b'\n' if !self.after_cr => self.line += 1,
                _ => {}
            }
            self.after_cr = b == b'\r';
        }
    }
}

/// Reads one line of `input` through its `\n` (or the end of the input)
/// into `out`, keeping at most `cap` bytes of it without the line end (a
/// `\r` before the `\n` is dropped too). Returns the line's whole length
/// (line end left out), or `None` at the end of the input.
pub fn read_line(input: &mut impl BufRead, cap: usize, out: &mut Vec<u8>) -> io::Result<Option<u64>> {
    out.clear();
    let mut len = 0u64;
    let mut any = false;
    // The line's last byte so far, across read buffers.
    let mut last = None;
    loop {
        let buf = input.fill_buf()?;
        if buf.is_empty() {
            break;
        }
        any = true;
        let (chunk, used, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(p) => (&buf[..p], p + 1, true),
            None => (buf, buf.len(), false),
        };
        let room = cap.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        len += chunk.len() as u64;
        last = chunk.last().copied().or(last);
        input.consume(used);
        if done {
            break;
        }
    }
    if !any {
        return Ok(None);
    }
    // A `\r\n` ending: the `\r` is no part of the line, whether or not the
    // line was cut before it.
    if last == Some(b'\r') {
        if out.len() as u64 == len {
            out.pop();
        }
        len -= 1;
    }
    Ok(Some(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every record of `text` read with a cap of `cap` bytes per field (up
    /// to 8 fields): line, fields as text, and field count.
    fn records(text: &[u8], cap: usize, buffer: usize) -> Result<Vec<(u64, Vec<String>, usize)>, String> {
        let mut r = CsvReader::new(io::BufReader::with_capacity(buffer, text));
        let mut out = Vec::new();
        let mut rec = CsvRecord::default();
        while r.read_record(&[cap; 8], &mut rec).map_err(|e| e.to_string())? {
            let fields = rec
                .fields
                .iter()
                .map(|f| String::from_utf8_lossy(&f.bytes).into_owned())
                .collect();
            out.push((rec.line, fields, rec.count));
        }
        Ok(out)
    }

    fn lines_of(text: &[u8]) -> Vec<u64> {
        records(text, 100, 8).unwrap().into_iter().map(|r| r.0).collect()
    }

    #[test]
    fn a_cut_crlf_line_has_the_length_of_its_text() {
        // Found by the property test: the `\r` of a line longer than its cap
        // was counted, so a CRLF line of exactly the cap was one too long.
        for buffer in [1, 3, 64] {
            let mut input = io::BufReader::with_capacity(buffer, &b"abcd\r\nef\r\n"[..]);
            let mut out = Vec::new();
            assert_eq!(read_line(&mut input, 2, &mut out).unwrap(), Some(4), "buffer {buffer}");
            assert_eq!(out, b"ab");
            assert_eq!(read_line(&mut input, 2, &mut out).unwrap(), Some(2), "buffer {buffer}");
            assert_eq!(out, b"ef");
            assert_eq!(read_line(&mut input, 2, &mut out).unwrap(), None);
        }
    }

    #[test]
    fn line_numbers_are_physical_in_every_line_ending() {
        assert_eq!(lines_of(b"h\na\nb\n"), [1, 2, 3], "LF");
        assert_eq!(lines_of(b"h\r\na\r\nb\r\n"), [1, 2, 3], "CRLF");
        assert_eq!(lines_of(b"h\ra\rb"), [1, 2, 3], "CR");
        assert_eq!(lines_of(b"h\r\na\nb\rc"), [1, 2, 3, 4], "mixed");
        assert_eq!(lines_of(b"h\r\n\r\n\r\na\r\n"), [1, 4], "blank lines skipped, counted");
        // A quoted field with line breaks: the record starts where it starts,
        // and the next one on its own physical line.
        assert_eq!(lines_of(b"h\r\n\"x\r\ny\r\nz\",1\r\nb\r\n"), [1, 2, 5]);
        assert_eq!(lines_of(b"h\n\"x\ny\",1\nb\n"), [1, 2, 4]);
        // A read buffer of one byte splits every `\r\n`.
        let one = records(b"h\r\n\"a\r\nb\"\r\nc\r\n", 100, 1).unwrap();
        assert_eq!(one.iter().map(|r| r.0).collect::<Vec<_>>(), [1, 2, 4]);
    }

    #[test]
    fn fields_follow_the_csv_dialect() {
        let got = records(
            b"\xef\xbb\xbfa,b,c\n\"x,1\",\"say \"\"hi\"\"\",\n\"q\"z,un\"quoted,\n",
            100,
            4,
        )
        .unwrap();
        let want = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(got[0], (1, want(&["a", "b", "c"]), 3), "the BOM is dropped");
        for buffer in [1, 2, 3] {
            // Reads cut inside the BOM (a pipe) still drop it...
            let got = records(b"\xef\xbb\xbfa,b\n", 100, buffer).unwrap();
            assert_eq!(got, [(1, want(&["a", "b"]), 2)], "buffer {buffer}");
            // ...and first bytes that only begin like one are kept: U+FF0C.
            let got = records("，,b\n".as_bytes(), 100, buffer).unwrap();
            assert_eq!(got, [(1, want(&["，", "b"]), 2)], "buffer {buffer}");
            assert_eq!(records(b"\xef", 100, buffer).unwrap().len(), 1, "buffer {buffer}");
        }
        assert_eq!(got[1], (2, want(&["x,1", "say \"hi\"", ""]), 3));
        assert_eq!(got[2], (3, want(&["qz", "un\"quoted", ""]), 3));
        // No line end after the last record, and an empty last field.
        assert_eq!(records(b"a,", 100, 8).unwrap(), [(1, want(&["a", ""]), 2)]);
        assert_eq!(records(b"", 100, 8).unwrap(), []);
        assert_eq!(records(b"\r\n\n", 100, 8).unwrap(), []);
    }

    #[test]
    fn the_same_fields_as_the_csv_crate() {
        let inputs: [&[u8]; 6] = [
            b"a,b\n1,2\n",
            b"a,b\r\n\"1\r\n2\",\"3\"\"\"\r\n",
            b"x\n\n\ny\n",
            b"\"a\"b,c\n",
            b"a,b\r\n,\r\n",
            b"one\rtwo\r\"th\rree\"\r",
        ];
        for input in inputs {
            let mut theirs = csv::ReaderBuilder::new()
                .has_headers(false)
                .flexible(true)
                .from_reader(input);
            let want: Vec<Vec<String>> = theirs
                .records()
                .map(|r| r.unwrap().iter().map(str::to_owned).collect())
                .collect();
            let ours: Vec<Vec<String>> = records(input, 100, 3).unwrap().into_iter().map(|r| r.1).collect();
            assert_eq!(ours, want, "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn fields_are_cut_at_their_cap_and_counted_past_it() {
        let long = format!("h\n{},ok,\"{}\"\nnext\n", "x".repeat(10_000), "y\n".repeat(3000));
        let mut r = CsvReader::new(io::BufReader::with_capacity(64, long.as_bytes()));
        let mut rec = CsvRecord::default();
        assert!(r.read_record(&[16, 16], &mut rec).unwrap());
        assert!(r.read_record(&[16, 16], &mut rec).unwrap());
        assert_eq!(rec.line, 2);
        assert_eq!(rec.count, 3, "a third field, counted but not kept");
        assert_eq!(rec.fields.len(), 2);
        assert_eq!((rec.fields[0].bytes.len(), rec.fields[0].len), (16, 10_000));
        assert!(rec.fields[0].is_cut() && !rec.fields[1].is_cut());
        assert_eq!(rec.fields[1].bytes, b"ok");
        assert!(r.read_record(&[16, 16], &mut rec).unwrap());
        assert_eq!(
            (rec.line, rec.fields[0].bytes.as_slice()),
            (3 + 3000, b"next".as_slice())
        );
        assert!(!r.read_record(&[16, 16], &mut rec).unwrap());
    }

    #[test]
    fn an_unclosed_quote_names_the_line_it_starts_on() {
        let err = records(b"h\nok\n\"never\nclosed\n", 100, 8).unwrap_err();
        assert_eq!(
            err,
            "a quoted field that starts on line 3 is not closed before the end of the file"
        );
    }

    #[test]
    fn json_lines_are_read_within_their_cap() {
        let text = format!("{{\"a\":1}}\r\n{}\n\nlast", "z".repeat(1000));
        let mut input = io::BufReader::with_capacity(16, text.as_bytes());
        let mut buf = Vec::new();
        assert_eq!(read_line(&mut input, 64, &mut buf).unwrap(), Some(7));
        assert_eq!(buf, b"{\"a\":1}", "the \\r of \\r\\n dropped");
        assert_eq!(read_line(&mut input, 64, &mut buf).unwrap(), Some(1000));
        assert_eq!(buf.len(), 64, "kept up to the cap");
        assert_eq!(read_line(&mut input, 64, &mut buf).unwrap(), Some(0));
        assert_eq!(read_line(&mut input, 64, &mut buf).unwrap(), Some(4));
        assert_eq!(buf, b"last");
        assert_eq!(read_line(&mut input, 64, &mut buf).unwrap(), None);
    }
}
