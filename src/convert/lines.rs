//! Reading a JSONL checkpoint line by line, as every view of one does
//! (`tal summary`, `tal report`, the Chrome trace, the OTLP form): in
//! bounded memory, and as leniently as RHAPSODY's writer needs.
//!
//! - A line is at most [`MAX_LINE_BYTES`]. Reading never holds more of a
//!   line than that: a longer one is read past (its bytes are not kept),
//!   skipped, counted, and named by its number in [`LineStats`]; the lines
//!   around it are read as usual. Skipping, rather than refusing the file,
//!   loses nothing else the file recorded. The cap is what bounds a
//!   reader's memory whatever the file: a parsed line costs up to ~25
//!   times its text (a `serde_json::Value` for each tiny item, `[],[],…`),
//!   so a 20 MB line cost `tal report` ~700 MiB, and a line at the cap
//!   costs ~400 MiB at worst (~100 MiB for 4 MiB). The cap is that high
//!   for tal's own metric line: RHAPSODY's events, and tal's other lines,
//!   are well under a kilobyte, but the metric line's `tal_logs` and GPU
//!   energies grow by ~0.5 KiB per node log, ~2 KiB for a node of 8 GPUs
//!   (their ids and names): 16 MiB holds it for some 8,000 such nodes, or
//!   30,000 without GPUs. (It parses at ~15 times its text.)
//! - Python's `json.dumps`, which RHAPSODY writes its checkpoint with,
//!   writes a float that is not finite as `NaN`, `Infinity` or
//!   `-Infinity`, which JSON does not have. A line that does not parse and
//!   holds such tokens outside its strings is read with them as `null`
//!   (a string `"NaN"` stays a string), and they are counted. Nothing tal
//!   writes holds them: its writers write a non-finite number as `null`.
//! - A UTF-8 byte-order mark at the start of the file is skipped.
//! - A line that is not JSON even so is an error naming its number: a file
//!   that is not a checkpoint is refused rather than half-read. Errors of
//!   the input (reading it, or a bad line) are marked as such (see
//!   [`is_input_error`]), so that a command can say "cannot read" for them
//!   and "cannot write" only for its output's.

use serde::Serialize;
use serde_json::Value;
use std::io::{self, BufRead};
use std::path::Path;

/// The longest line read (see the module doc).
pub const MAX_LINE_BYTES: usize = 16 << 20;

/// What reading a checkpoint's lines met besides its values.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LineStats {
    /// Lines read (blank and skipped ones included).
    pub lines: u64,
    /// Lines longer than [`MAX_LINE_BYTES`], skipped.
    pub long_lines_skipped: u64,
    /// The first of them.
    pub first_long_line: Option<u64>,
    /// `NaN`, `Infinity` and `-Infinity` tokens read as `null`.
    pub non_finite_numbers: u64,
    /// The first line that had one.
    pub first_non_finite_line: Option<u64>,
    /// Whether the file began with a byte-order mark (skipped).
    pub byte_order_mark: bool,
}

impl LineStats {
    /// What a user should be told (one line each; none when the file was
    /// read as written).
    pub fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if let Some(first) = self.first_long_line {
            notes.push(format!(
                "skipped {} line(s) longer than {} MiB (the first is line {first}); the other lines were read",
                self.long_lines_skipped,
                MAX_LINE_BYTES >> 20
            ));
        }
        if let Some(first) = self.first_non_finite_line {
            notes.push(format!(
                "read {} NaN/Infinity number(s) as null (not JSON: Python's json.dumps writes them; the first is on line {first})",
                self.non_finite_numbers
            ));
        }
        notes
    }
}

/// An error of the input, not of an output (see [`is_input_error`]).
#[derive(Debug)]
struct InputError(io::Error);

impl std::fmt::Display for InputError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for InputError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// `e`, marked as an error of reading the input.
pub fn input_error(e: io::Error) -> io::Error {
    if is_input_error(&e) {
        return e;
    }
    io::Error::new(e.kind(), InputError(e))
}

/// Whether `e` came from reading the input ([`input_error`]).
pub fn is_input_error(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|r| r.is::<InputError>())
}

/// An error of a command that reads `input` and writes `output`, saying
/// which side failed ([`is_input_error`]).
pub fn read_or_write_error(e: &io::Error, input: &Path, output: &str) -> anyhow::Error {
    if is_input_error(e) {
        anyhow::anyhow!("cannot read {}: {e}", input.display())
    } else {
        anyhow::anyhow!("cannot write {output}: {e}")
    }
}

/// A checkpoint's lines, parsed (see the module doc).
#[derive(Debug)]
pub struct JsonlLines<R> {
    input: R,
    buf: Vec<u8>,
    max: usize,
    stats: LineStats,
}

impl<R: BufRead> JsonlLines<R> {
    /// Lines of `input`, at most [`MAX_LINE_BYTES`] each.
    pub fn new(input: R) -> Self {
        Self::with_max(input, MAX_LINE_BYTES)
    }

    fn with_max(input: R, max: usize) -> Self {
        Self {
            input,
            buf: Vec::new(),
            max,
            stats: LineStats::default(),
        }
    }

    /// What was met so far.
    pub fn stats(&self) -> LineStats {
        self.stats
    }

    /// Reads the next line into `buf` (without its newline), keeping at
    /// most `max` bytes of it: `None` at the end, else whether it was kept
    /// whole.
    fn read_line(&mut self) -> io::Result<Option<bool>> {
        self.buf.clear();
        let (mut any, mut whole) = (false, true);
        loop {
            let avail = match self.input.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if avail.is_empty() {
                break;
            }
            any = true;
            let (part, used, end) = match memchr::memchr(b'\n', avail) {
                Some(i) => (&avail[..i], i + 1, true),
                None => (avail, avail.len(), false),
            };
            if whole && self.buf.len() + part.len() <= self.max {
                self.buf.extend_from_slice(part);
            } else if whole {
                whole = false;
                self.buf = Vec::new();
            }
            self.input.consume(used);
            if end {
                break;
            }
        }
        if !any {
            return Ok(None);
        }
        self.stats.lines += 1;
        if self.stats.lines == 1 && self.buf.starts_with(b"\xef\xbb\xbf") {
            self.buf.drain(..3);
            self.stats.byte_order_mark = true;
        }
        Ok(Some(whole))
    }

    /// The next line's value, and its number; `None` at the end. Blank and
    /// overlong lines are passed over, and so are lines for which `skip`
    /// (given the line's text) says so.
    pub fn next_unless(&mut self, skip: impl Fn(&str) -> bool) -> io::Result<Option<Value>> {
        loop {
            let Some(whole) = self.read_line().map_err(input_error)? else {
                return Ok(None);
            };
            let n = self.stats.lines;
            if !whole {
                self.stats.long_lines_skipped += 1;
                self.stats.first_long_line.get_or_insert(n);
                continue;
            }
            if self.buf.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            if std::str::from_utf8(&self.buf).is_ok_and(&skip) {
                continue;
            }
            return self.parse(n).map(Some);
        }
    }

    /// The next line's value; `None` at the end.
    pub fn next_value(&mut self) -> io::Result<Option<Value>> {
        self.next_unless(|_| false)
    }

    fn parse(&mut self, n: u64) -> io::Result<Value> {
        let e = match serde_json::from_slice(&self.buf) {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        if let Some((fixed, count)) = non_finite_as_null(&self.buf) {
            if let Ok(v) = serde_json::from_slice(&fixed) {
                self.stats.non_finite_numbers += count;
                self.stats.first_non_finite_line.get_or_insert(n);
                return Ok(v);
            }
        }
        Err(input_error(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("line {n}: not a JSON object: {e}"),
        )))
    }
}

/// `line` with each `NaN`, `Infinity` and `-Infinity` outside its strings
/// written as `null`, and how many there were; `None` if none.
fn non_finite_as_null(line: &[u8]) -> Option<(Vec<u8>, u64)> {
    const TOKENS: [&[u8]; 3] = [b"NaN", b"Infinity", b"-Infinity"];
    let mut out = Vec::with_capacity(line.len());
    let (mut in_string, mut escaped, mut count) = (false, false, 0);
    let mut i = 0;
    while i < line.len() {
        let b = line[i];
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if let Some(t) = TOKENS.iter().find(|t| line[i..].starts_with(t)) {
            out.extend_from_slice(b"null");
            i += t.len();
            count += 1;
            continue;
        } else if b == b'"' {
            in_string = true;
        }
        out.push(b);
        i += 1;
    }
    (count > 0).then_some((out, count))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn all(text: &[u8], max: usize) -> (io::Result<Vec<Value>>, LineStats) {
        let mut r = JsonlLines::with_max(io::BufReader::with_capacity(7, Cursor::new(text)), max);
        let mut v = Vec::new();
        let res = loop {
            match r.next_value() {
                Ok(Some(x)) => v.push(x),
                Ok(None) => break Ok(v),
                Err(e) => break Err(e),
            }
        };
        (res, r.stats())
    }

    #[test]
    fn long_lines_are_skipped_counted_and_named() {
        let text = format!(
            "{{\"a\": 1}}\n{{\"b\": \"{}\"}}\n\n{{\"c\": 3}}\r\n{}\n{{\"d\": 4}}",
            "x".repeat(100),
            "y".repeat(40)
        );
        let (v, s) = all(text.as_bytes(), 30);
        let v = v.unwrap();
        assert_eq!(
            v,
            [
                serde_json::json!({"a": 1}),
                serde_json::json!({"c": 3}),
                serde_json::json!({"d": 4})
            ]
        );
        assert_eq!(
            (s.lines, s.long_lines_skipped, s.first_long_line),
            (6, 2, Some(2))
        );
        assert!(
            s.notes()[0].contains("(the first is line 2)"),
            "{:?}",
            s.notes()
        );
        // A line of exactly the cap is kept.
        let (v, s) = all(b"{\"a\": 12345}\n", 12);
        assert_eq!((v.unwrap().len(), s.long_lines_skipped), (1, 0));
        let (v, s) = all(b"{\"a\": 123456}", 12);
        assert_eq!((v.unwrap().len(), s.long_lines_skipped), (0, 1));
    }

    #[test]
    fn python_non_finite_numbers_read_as_null_outside_strings_only() {
        let text =
            br#"{"a": NaN, "b": [Infinity, -Infinity], "s": "NaN \" Infinity", "t": "-Infinity"}
{"c": 1.5}
{"d": NaN}"#;
        let (v, s) = all(text, 1000);
        let v = v.unwrap();
        assert_eq!(
            v[0],
            serde_json::json!({"a": null, "b": [null, null], "s": "NaN \" Infinity", "t": "-Infinity"})
        );
        assert_eq!(v[2], serde_json::json!({"d": null}));
        assert_eq!(
            (s.non_finite_numbers, s.first_non_finite_line),
            (4, Some(1))
        );
        assert!(s.notes()[0].starts_with("read 4 NaN/Infinity number(s) as null"));
        // Still not JSON: an error naming the line, marked as the input's.
        let (v, _) = all(b"{}\n{\"a\": NaNo}\n", 1000);
        let e = v.unwrap_err();
        assert!(
            e.to_string().starts_with("line 2: not a JSON object"),
            "{e}"
        );
        assert!(is_input_error(&e));
        assert!(!is_input_error(&io::Error::other("x")));
    }

    #[test]
    fn a_byte_order_mark_is_skipped_at_the_start_only() {
        let (v, s) = all(b"\xef\xbb\xbf{\"a\": 1}\n", 100);
        assert_eq!(v.unwrap(), [serde_json::json!({"a": 1})]);
        assert!(s.byte_order_mark);
        let (v, _) = all(b"{}\n\xef\xbb\xbf{\"a\": 1}\n", 100);
        assert!(v.is_err());
    }

    #[test]
    fn clean_files_have_no_notes() {
        let (v, s) = all(b"{\"a\": 1}\n", 100);
        assert_eq!(v.unwrap().len(), 1);
        assert!(s.notes().is_empty());
    }
}
