//! The ingest fast path: a hand-written scanner for the line shape that
//! workflow runtimes send in bulk — a task lifecycle event with only the
//! core fields and an `attributes` object of scalars (what RHAPSODY's
//! bridge and `tal run` send) — that validates it and encodes it straight
//! into the log's record encoding (bincode 2, standard config, as
//! [`crate::record::Record`] derives it), borrowing every string from the
//! line. No JSON tree, no per-event allocation.
//!
//! It accepts exactly the lines the general parser
//! ([`super::protocol::parse_line`]) would turn into a task event without
//! extension fields, and gives the same bytes for them (tests check this
//! line by line and on random lines). Anything else — another event type,
//! an unknown or repeated key, an escape sequence in a string, a nested
//! attribute value, a value of the wrong type or out of range — makes it
//! answer `None`, and the line goes to the general parser, which also
//! words the refusal.
#![allow(unsafe_code)]

mod numbers;

use crate::clock::secs_to_ns;
use crate::record::TaskState;
use numbers::{finite, hex128, ok_time, time_ns_plain};

/// The log's integer encoding (bincode 2 "varint"): one byte below 251,
/// else a marker byte and the little-endian value in 2, 4, 8 or 16 bytes.
mod enc {
    #[inline(always)]
    pub(super) fn uint(out: &mut Vec<u8>, v: u64) {
        if v < 251 {
            out.push(v as u8);
        } else if v <= u64::from(u16::MAX) {
            out.push(251);
            out.extend_from_slice(&(v as u16).to_le_bytes());
        } else if v <= u64::from(u32::MAX) {
            out.push(252);
            out.extend_from_slice(&(v as u32).to_le_bytes());
        } else {
            out.push(253);
            out.extend_from_slice(&v.to_le_bytes());
        }
    }

    #[inline(always)]
    pub(super) fn u128(out: &mut Vec<u8>, v: u128) {
        match u64::try_from(v) {
            Ok(v) => uint(out, v),
            Err(_) => {
                out.push(254);
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
    }

    /// Signed integers are zigzag-encoded first.
    #[inline(always)]
    pub(super) fn int(out: &mut Vec<u8>, v: i64) {
        uint(out, ((v << 1) ^ (v >> 63)) as u64);
    }

    #[inline(always)]
    pub(super) fn f64(out: &mut Vec<u8>, v: f64) {
        out.extend_from_slice(&v.to_le_bytes());
    }

    #[inline(always)]
    pub(super) fn str(out: &mut Vec<u8>, s: &[u8]) {
        uint(out, s.len() as u64);
        bytes(out, s);
    }

    /// `out.extend_from_slice(s)`, with the short strings that make up
    /// most of a task line copied inline (two overlapping word copies)
    /// instead of by a call to `memmove`.
    #[inline(always)]
    pub(super) fn bytes(out: &mut Vec<u8>, s: &[u8]) {
        let n = s.len();
        if !(8..=16).contains(&n) {
            out.extend_from_slice(s);
            return;
        }
        out.reserve(n);
        let len = out.len();
        // SAFETY: `reserve` made room for `n` more bytes after `len`; both
        // word copies read inside `s` (8 <= n) and write inside
        // `len..len + n`, and together cover all of it (n <= 16); `set_len`
        // then covers only initialised bytes.
        unsafe {
            let (src, dst) = (s.as_ptr(), out.as_mut_ptr().add(len));
            let head = std::ptr::read_unaligned(src.cast::<u64>());
            let tail = std::ptr::read_unaligned(src.add(n - 8).cast::<u64>());
            std::ptr::write_unaligned(dst.cast::<u64>(), head);
            std::ptr::write_unaligned(dst.add(n - 8).cast::<u64>(), tail);
            out.set_len(len + n);
        }
    }

    #[inline(always)]
    pub(super) fn opt_str(out: &mut Vec<u8>, s: Option<&[u8]>) {
        match s {
            None => out.push(0),
            Some(s) => {
                out.push(1);
                str(out, s);
            }
        }
    }
}

/// `crate::record::Value`'s variant indices.
mod value {
    pub(super) const NULL: u8 = 0;
    pub(super) const BOOL: u8 = 1;
    pub(super) const INT: u8 = 2;
    pub(super) const FLOAT: u8 = 3;
    pub(super) const STR: u8 = 4;
}

/// Variant indices of the record types the encoding names.
const RECORD_EVENT: u8 = 0;
const KIND_TASK: u8 = 3;

/// Most attributes the fast path takes in one line.
const MAX_ATTRS: usize = 64;

/// The fast path's reusable buffers (one per listener).
#[derive(Debug, Default)]
pub struct FastPath {
    /// The attributes of the line being scanned, already encoded.
    attrs: Vec<u8>,
    /// Their keys (offsets into the line), to refuse repeated keys.
    keys: Vec<(u32, u32)>,
    /// The line's `pid` attribute, when it is a plain integer.
    pid: Option<u32>,
    /// The last line encoded: its state and its task id (offset and
    /// length in the line), for [`FastPath::last_task`].
    last: Option<(TaskState, usize, usize)>,
}

/// A cursor over one line.
struct Scan<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Scan<'a> {
    #[inline]
    fn ws(&mut self) {
        // Most often there is none, or one space.
        match self.b.get(self.i) {
            Some(&c) if c > b' ' => return,
            Some(b' ') => {
                self.i += 1;
                if self.b.get(self.i).is_some_and(|&c| c > b' ') {
                    return;
                }
            }
            _ => {}
        }
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    /// Skips whitespace and takes `c`.
    #[inline]
    fn eat(&mut self, c: u8) -> bool {
        self.ws();
        if self.b.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    /// After a member: takes `,` (true: another member follows) or `}`
    /// (false: the object ends); `None` for anything else.
    #[inline]
    fn comma_or_end(&mut self) -> Option<bool> {
        self.ws();
        let more = match *self.b.get(self.i)? {
            b',' => true,
            b'}' => false,
            _ => return None,
        };
        self.i += 1;
        Some(more)
    }

    /// Skips whitespace and looks at the next byte.
    #[inline]
    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.b.get(self.i).copied()
    }

    #[inline]
    fn literal(&mut self, lit: &[u8]) -> bool {
        if self.b[self.i..].starts_with(lit) {
            self.i += lit.len();
            true
        } else {
            false
        }
    }

    /// A string without escapes or control characters, as valid UTF-8
    /// bytes (the general parser takes the others). Returns its bytes.
    #[inline]
    fn string(&mut self) -> Option<&'a [u8]> {
        if !self.eat(b'"') {
            return None;
        }
        let start = self.i;
        let b = self.b;
        let mut i = start;
        // Sixteen bytes at a time with SSE2 (part of x86-64's baseline),
        // as long as none of them is special; then eight at a time.
        #[cfg(target_arch = "x86_64")]
        while let Some(w) = b.get(i..i + 16) {
            use std::arch::x86_64::{
                _mm_cmpeq_epi8, _mm_cmplt_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128,
                _mm_set1_epi8,
            };
            // SAFETY: SSE2 is always there on x86-64; the load is unaligned
            // and reads exactly the sixteen bytes `w` borrows.
            let (quote, other) = unsafe {
                let v = _mm_loadu_si128(w.as_ptr().cast());
                let q = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
                let bs = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
                // A signed compare: bytes from 0x80 are negative, so they
                // count as below 0x20 too (the byte loop sorts them out).
                let ctl = _mm_cmplt_epi8(v, _mm_set1_epi8(0x20));
                (
                    _mm_movemask_epi8(q) as u32,
                    _mm_movemask_epi8(_mm_or_si128(bs, ctl)) as u32,
                )
            };
            if quote | other == 0 {
                i += 16;
                continue;
            }
            if quote.trailing_zeros() < other.trailing_zeros() {
                let end = i + quote.trailing_zeros() as usize;
                self.i = end + 1;
                return Some(&b[start..end]);
            }
            break;
        }
        // Eight bytes at a time while none of them is special ('"', '\\',
        // a control character or a non-ASCII byte); the byte loop below
        // sorts out the word that has one (or a rare false alarm).
        const ONES: u64 = 0x0101_0101_0101_0101;
        const HIGH: u64 = 0x8080_8080_8080_8080;
        let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
        while let Some(w) = b.get(i..i + 8) {
            let x = u64::from_le_bytes(w.try_into().expect("eight bytes"));
            // The lowest flagged byte of each mask is exact (false alarms
            // only come after a true one).
            let quote = has_zero(x ^ (ONES * u64::from(b'"')));
            let other = has_zero(x ^ (ONES * u64::from(b'\\')))
                | (x.wrapping_sub(ONES * 0x20) & !x & HIGH)
                | (x & HIGH);
            if quote | other == 0 {
                i += 8;
                continue;
            }
            if quote.trailing_zeros() < other.trailing_zeros() {
                // The closing quote, with only plain ASCII before it.
                let end = i + quote.trailing_zeros() as usize / 8;
                self.i = end + 1;
                return Some(&b[start..end]);
            }
            break;
        }
        let mut ascii = true;
        loop {
            match *b.get(i)? {
                b'"' => break,
                b'\\' | 0..=0x1f => return None,
                0x80.. => ascii = false,
                _ => {}
            }
            i += 1;
        }
        let s = &b[start..i];
        if !ascii {
            std::str::from_utf8(s).ok()?;
        }
        self.i = i + 1;
        Some(s)
    }

    /// A key of the core schema, matched in place (no other key is taken,
    /// so no scanning for escapes is needed); its bit in the seen-mask.
    #[inline]
    fn core_key(&mut self) -> Option<u32> {
        if !self.eat(b'"') {
            return None;
        }
        let rest = &self.b[self.i..];
        // Literal comparisons, so that each compiles to a few word loads.
        let (len, bit) = match rest.first()? {
            b'e' if rest.starts_with(b"event_type\"") => (11, 0),
            b'e' if rest.starts_with(b"event_id\"") => (9, 1),
            b'e' if rest.starts_with(b"event_time\"") => (11, 2),
            b'e' if rest.starts_with(b"emit_time\"") => (10, 3),
            b'e' if rest.starts_with(b"error_type\"") => (11, 10),
            b's' if rest.starts_with(b"session_id\"") => (11, 4),
            b'b' if rest.starts_with(b"backend\"") => (8, 5),
            b't' if rest.starts_with(b"task_id\"") => (8, 6),
            b'n' if rest.starts_with(b"node_id\"") => (8, 7),
            b'a' if rest.starts_with(b"attributes\"") => (11, 8),
            b'd' if rest.starts_with(b"duration_seconds\"") => (17, 9),
            _ => return None,
        };
        self.i += len;
        Some(bit)
    }

    /// `null` or a 32-hex-digit id.
    fn opt_hex_id(&mut self) -> Option<Option<u128>> {
        if self.peek()? == b'n' {
            return self.literal(b"null").then_some(None);
        }
        if !self.eat(b'"') {
            return None;
        }
        let digits = self.b.get(self.i..self.i + 33)?;
        if digits[32] != b'"' {
            return None;
        }
        let id = hex128(&digits[..32])?;
        self.i += 33;
        Some(Some(id))
    }

    /// `null` or a string.
    #[inline]
    fn opt_string(&mut self) -> Option<Option<&'a [u8]>> {
        if self.peek()? == b'n' {
            return self.literal(b"null").then_some(None);
        }
        self.string().map(Some)
    }

    /// A JSON number's text, and whether it is an integer.
    fn number_text(&mut self) -> Option<(&'a str, bool)> {
        self.ws();
        let b = self.b;
        let start = self.i;
        let mut i = start;
        let digits = |i: &mut usize| {
            let s = *i;
            while b.get(*i).is_some_and(u8::is_ascii_digit) {
                *i += 1;
            }
            *i > s
        };
        if b.get(i) == Some(&b'-') {
            i += 1;
        }
        match b.get(i) {
            Some(b'0') => i += 1,
            Some(b'1'..=b'9') => {
                digits(&mut i);
            }
            _ => return None,
        }
        let mut integer = true;
        if b.get(i) == Some(&b'.') {
            i += 1;
            if !digits(&mut i) {
                return None;
            }
            integer = false;
        }
        if let Some(b'e' | b'E') = b.get(i) {
            i += 1;
            if let Some(b'+' | b'-') = b.get(i) {
                i += 1;
            }
            if !digits(&mut i) {
                return None;
            }
            integer = false;
        }
        self.i = i;
        // SAFETY: the bytes matched the number grammar above: ASCII digits,
        // signs, '.', 'e' and 'E' only, which is valid UTF-8.
        let text = unsafe { std::str::from_utf8_unchecked(&b[start..i]) };
        Some((text, integer))
    }

    /// A number as f64 (correctly rounded, as serde_json with
    /// `float_roundtrip` reads it).
    fn f64(&mut self) -> Option<f64> {
        let (text, _) = self.number_text()?;
        finite(text)
    }

    /// `null` or a number.
    fn opt_f64(&mut self) -> Option<Option<f64>> {
        if self.peek()? == b'n' {
            return self.literal(b"null").then_some(None);
        }
        self.f64().map(Some)
    }

    /// `null` or a time in seconds since the epoch, as nanoseconds; `None`
    /// (refused) when it is not a number or out of range.
    #[inline]
    fn opt_time_ns(&mut self) -> Option<Option<i64>> {
        if self.peek()? == b'n' {
            return self.literal(b"null").then_some(None);
        }
        if let Some((ns, len)) = time_ns_plain(&self.b[self.i..]) {
            self.i += len;
            return Some(Some(ns));
        }
        let t = self.f64()?;
        ok_time(t).then(|| Some(secs_to_ns(t)))
    }

    /// A number, encoded as `crate::ingest::protocol::to_value` converts
    /// serde_json's reading of it.
    fn number_value(&mut self, out: &mut Vec<u8>) -> Option<()> {
        let (text, integer) = self.number_text()?;
        let float = |out: &mut Vec<u8>, f: f64| {
            out.push(value::FLOAT);
            enc::f64(out, f);
        };
        if !integer {
            float(out, finite(text)?);
            return Some(());
        }
        let (neg, digits) = match text.strip_prefix('-') {
            Some(d) => (true, d),
            None => (false, text),
        };
        let Ok(sig) = digits.parse::<u64>() else {
            // Beyond u64: serde_json reads it as a float.
            float(out, finite(text)?);
            return Some(());
        };
        // serde_json: -0 and magnitudes beyond i64 are floats.
        let n = if neg {
            Some((sig as i64).wrapping_neg()).filter(|n| *n < 0)
        } else {
            i64::try_from(sig).ok()
        };
        match n {
            Some(n) => {
                out.push(value::INT);
                enc::int(out, n);
            }
            None if neg => float(out, -(sig as f64)),
            None => float(out, sig as f64),
        }
        Some(())
    }

    /// A scalar attribute value, encoded onto `out`.
    fn scalar(&mut self, out: &mut Vec<u8>) -> Option<()> {
        match self.peek()? {
            b'"' => {
                let s = self.string()?;
                out.push(value::STR);
                enc::str(out, s);
            }
            b'n' => {
                self.literal(b"null").then_some(())?;
                out.push(value::NULL);
            }
            b't' => {
                self.literal(b"true").then_some(())?;
                out.extend_from_slice(&[value::BOOL, 1]);
            }
            b'f' => {
                self.literal(b"false").then_some(())?;
                out.extend_from_slice(&[value::BOOL, 0]);
            }
            _ => self.number_value(out)?,
        }
        Some(())
    }
}

fn task_state(name: &[u8]) -> Option<TaskState> {
    Some(match name {
        b"TaskCreated" => TaskState::Created,
        b"TaskSubmitted" => TaskState::Submitted,
        b"TaskQueued" => TaskState::Queued,
        b"TaskStarted" => TaskState::Started,
        b"TaskCompleted" => TaskState::Completed,
        b"TaskFailed" => TaskState::Failed,
        b"TaskCanceled" => TaskState::Canceled,
        _ => return None,
    })
}

/// `TaskState`'s variant index.
fn state_index(s: TaskState) -> u8 {
    match s {
        TaskState::Created => 0,
        TaskState::Submitted => 1,
        TaskState::Queued => 2,
        TaskState::Started => 3,
        TaskState::Completed => 4,
        TaskState::Failed => 5,
        TaskState::Canceled => 6,
    }
}

impl FastPath {
    /// Scans `line` (one complete line without its newline); if it is a
    /// plain task event, encodes it as a log record onto `out` and returns
    /// its `event_time_ns`. `now_ns` fills in missing times, `new_id` a
    /// missing `event_id`. On `None`, `out` may hold partial bytes: the
    /// caller cuts them off ([`super::batch::IngestBatch::push_with`] does).
    pub fn encode(
        &mut self,
        line: &[u8],
        now_ns: i64,
        new_id: impl FnOnce() -> u128,
        out: &mut Vec<u8>,
    ) -> Option<i64> {
        self.attrs.clear();
        self.keys.clear();
        self.pid = None;
        self.last = None;
        let mut s = Scan { b: line, i: 0 };
        if !s.eat(b'{') {
            return None;
        }
        let mut seen = 0u16;
        let mut state = None;
        let mut event_id = None;
        let (mut event_time, mut emit_time, mut duration) = (None, None, None);
        let (mut backend, mut task_id, mut node_id, mut error_type) = (None, None, None, None);
        if !s.eat(b'}') {
            loop {
                let bit = s.core_key()?;
                if !s.eat(b':') {
                    return None;
                }
                match bit {
                    0 => state = Some(task_state(s.string()?)?),
                    1 => event_id = s.opt_hex_id()?,
                    2 => event_time = s.opt_time_ns()?,
                    3 => emit_time = s.opt_time_ns()?,
                    4 => {
                        s.opt_string()?;
                    }
                    5 => backend = s.opt_string()?,
                    6 => task_id = s.opt_string()?,
                    7 => node_id = s.opt_string()?,
                    8 => self.attributes(&mut s)?,
                    9 => duration = s.opt_f64()?,
                    _ => error_type = s.opt_string()?,
                };
                if seen & (1 << bit) != 0 {
                    return None;
                }
                seen |= 1 << bit;
                if !s.comma_or_end()? {
                    break;
                }
            }
        }
        s.ws();
        if s.i != line.len() {
            return None;
        }
        let state = state?;
        let task_id = task_id.filter(|t: &&[u8]| !t.is_empty())?;
        let emit_time_ns = emit_time.unwrap_or(now_ns);
        let event_time_ns = event_time.unwrap_or(emit_time_ns);
        let terminal = state.is_terminal();
        if duration.is_some_and(|d: f64| !crate::clock::duration_in_range(d))
            || (!terminal && duration.is_some())
            || (state != TaskState::Failed && error_type.is_some())
        {
            // Out-of-place fields become extension fields: the general
            // parser keeps them in the order sent.
            return None;
        }
        // Record::Event(Event { .., kind: EventKind::Task(TaskEvent { .. }) })
        out.push(RECORD_EVENT);
        enc::u128(out, event_id.unwrap_or_else(new_id));
        enc::int(out, event_time_ns);
        enc::int(out, emit_time_ns);
        enc::opt_str(out, backend);
        enc::opt_str(out, Some(task_id));
        enc::opt_str(out, node_id);
        enc::uint(out, self.keys.len() as u64);
        out.extend_from_slice(&self.attrs);
        out.push(KIND_TASK);
        out.push(state_index(state));
        match duration {
            None => out.push(0),
            Some(d) => {
                out.push(1);
                enc::f64(out, d);
            }
        }
        enc::opt_str(out, error_type);
        out.push(0); // no extension fields
        self.last = Some((
            state,
            task_id.as_ptr() as usize - line.as_ptr() as usize,
            task_id.len(),
        ));
        Some(event_time_ns)
    }

    /// The task event [`FastPath::encode`] last encoded from `line`: its
    /// state, its task id (as sent, within `line`) and its `pid` attribute.
    pub fn last_task<'l>(&self, line: &'l [u8]) -> Option<(TaskState, &'l [u8], Option<u32>)> {
        let (state, at, len) = self.last?;
        Some((state, line.get(at..at + len)?, self.pid))
    }

    /// `null` or an object of scalars, encoded into `self.attrs`.
    fn attributes(&mut self, s: &mut Scan<'_>) -> Option<()> {
        if s.peek()? == b'n' {
            return s.literal(b"null").then_some(());
        }
        if !s.eat(b'{') {
            return None;
        }
        if s.eat(b'}') {
            return Some(());
        }
        loop {
            let k = s.string()?;
            if !s.eat(b':') || self.keys.len() == MAX_ATTRS {
                return None;
            }
            // A repeated key: the general parser keeps the last value in
            // the first place.
            let at = (k.as_ptr() as usize - s.b.as_ptr() as usize) as u32;
            if self
                .keys
                .iter()
                .any(|&(o, l)| &s.b[o as usize..(o + l) as usize] == k)
            {
                return None;
            }
            self.keys.push((at, k.len() as u32));
            enc::str(&mut self.attrs, k);
            if k == b"pid" {
                s.peek()?;
                let v0 = s.i;
                s.scalar(&mut self.attrs)?;
                self.pid = std::str::from_utf8(&s.b[v0..s.i])
                    .ok()
                    .and_then(|t| t.parse().ok());
            } else {
                s.scalar(&mut self.attrs)?;
            }
            if !s.comma_or_end()? {
                return Some(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::protocol::{parse_line, Line};
    use crate::log::bincode_config;
    use crate::record::Record;
    use proptest::prelude::*;

    /// The fast path's bytes, or None.
    fn fast(line: impl AsRef<[u8]>) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        FastPath::default()
            .encode(line.as_ref(), 7, || 99, &mut out)
            .map(|_| out)
    }

    /// What the general parser makes of the line, encoded as the log does.
    fn general(line: impl AsRef<[u8]>) -> Vec<u8> {
        let line = line.as_ref();
        let Ok(Line::Event(mut ev)) = parse_line(line, 7) else {
            panic!("general parser refused {}", String::from_utf8_lossy(line))
        };
        if ev.event_id == 0 {
            ev.event_id = 99;
        }
        bincode::encode_to_vec(Record::Event(ev), bincode_config()).unwrap()
    }

    /// The fuzz target `ingest_line`'s check on its minimised corpus
    /// (`tests/fixtures/ingest-lines.bin`, one input per line, from a
    /// coverage-guided run): whenever the fast path takes a line, the
    /// general parser takes it too, with the same record bytes, and they
    /// decode; neither parser panics on any of them. (The fast path takes
    /// 48 of them and leaves the rest to the general parser.)
    #[test]
    fn the_fuzz_corpus_reads_the_same_through_both_parsers() {
        let corpus = include_bytes!("../../../tests/fixtures/ingest-lines.bin");
        let (mut taken, mut lines) = (0, 0);
        for line in corpus.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            lines += 1;
            let _ = parse_line(line, 7);
            if let Some(out) = fast(line) {
                taken += 1;
                assert_eq!(out, general(line), "{}", String::from_utf8_lossy(line));
                crate::ingest::batch::decode(&out).unwrap();
            }
        }
        assert_eq!(lines, 1625);
        assert!(taken >= 40, "the fast path took only {taken} of {lines}");
    }

    #[test]
    fn same_bytes_as_the_general_parser() {
        for line in [
            r#"{"event_id": "9b0c42c4483646f8af92bd37a47a5f9f", "event_type": "TaskFailed", "event_time": 1795574441.8799298, "emit_time": 1795574441.8799415, "session_id": "s", "backend": "concurrent", "task_id": "task.000005", "node_id": null, "attributes": {"executable": "/x", "task_type": "ComputeTask", "error_type": "E", "n": 3, "big": 18446744073709551615, "neg": -9223372036854775808, "negbig": -9223372036854775809, "negzero": -0, "f": 0.5, "e": 2E-3, "b": true, "c": false, "z": null, "u": "héllo ✓"}, "duration_seconds": 0.5, "error_type": "E"}"#,
            r#"{"event_type": "TaskStarted", "task_id": "t", "attributes": {"pid": 42}}"#,
            r#"{"event_type":"TaskCompleted","task_id":"t","duration_seconds":2}"#,
            r#"  { "event_type" : "TaskQueued" , "task_id" : "t" , "attributes" : { } , "backend" : null }  "#,
            r#"{"event_type": "TaskCreated", "task_id": "t", "event_id": null, "event_time": null, "emit_time": 1795574441, "attributes": null}"#,
            r#"{"event_type": "TaskCanceled", "task_id": "t", "duration_seconds": null, "node_id": "n7", "event_time": 0}"#,
            r#"{"event_type": "TaskFailed", "task_id": "t", "error_type": null, "duration_seconds": 0.0}"#,
            // The longest duration taken: 1970 to 2100.
            r#"{"event_type": "TaskCompleted", "task_id": "t", "duration_seconds": 4102444800}"#,
        ] {
            assert_eq!(fast(line).as_deref(), Some(&general(line)[..]), "{line}");
        }
    }

    #[test]
    fn other_lines_go_to_the_general_parser() {
        for line in [
            r#"{"event_type": "TaskStarted"}"#,
            r#"{"event_type": "TaskStarted", "task_id": ""}"#,
            r#"{"event_type": "TaskStarted", "task_id": null}"#,
            r#"{"event_type": "app.X", "task_id": "t"}"#,
            r#"{"event_type": "ResourceUpdate", "cpu_percent": 1}"#,
            r#"{"op": "ping"}"#,
            r#"{"event_type": "TaskStarted", "task_id": "t", "extra_field": 1}"#,
            r#"{"event_type": "TaskStarted", "task_id": "t", "task_id": "u"}"#,
            r#"{"event_type": "TaskStarted", "task_id": "t\u0041"}"#,
            r#"{"event_type": "TaskStarted", "task_id": "t", "event_time": -1}"#,
            r#"{"event_type": "TaskStarted", "task_id": "t", "event_time": 1e300}"#,
            // Past 2100: refused (they once wrapped round i64 nanoseconds).
            r#"{"event_type": "TaskStarted", "task_id": "t", "event_time": 10000000000}"#,
            r#"{"event_type": "TaskStarted", "task_id": "t", "event_time": 9223372037.5}"#,
            r#"{"event_type": "TaskStarted", "task_id": "t", "event_time": 4102444800.0}"#,
            r#"{"event_type": "TaskStarted", "task_id": "t", "event_time": 99999999999.123456}"#,
            r#"{"event_type": "TaskStarted", "task_id": "t", "attributes": {"huge": 1e400}}"#,
            r#"{"event_type": "TaskStarted", "task_id": "t", "event_time": "1"}"#,
            r#"{"event_type": "TaskStarted", "task_id": "t", "event_id": "abc"}"#,
            r#"{"event_type": "TaskStarted", "task_id": "t", "attributes": {"nested": {"a": [1]}}}"#,
            r#"{"event_type": "TaskStarted", "task_id": "t", "attributes": {"a": 1, "a": 2}}"#,
            r#"{"event_type": "TaskStarted", "task_id": "t", "attributes": [1]}"#,
            r#"{"event_type": "TaskQueued", "task_id": "t", "error_type": "odd", "duration_seconds": 1.5}"#,
            r#"{"event_type": "TaskCompleted", "task_id": "t", "duration_seconds": -1}"#,
            // Longer than 1970 to 2100: refused, as times past 2100 are.
            r#"{"event_type": "TaskCompleted", "task_id": "t", "duration_seconds": 1e26}"#,
            r#"{"event_type": "TaskFailed", "task_id": "t", "duration_seconds": 4102444800.5}"#,
            r#"{"event_type": "TaskStarted", "task_id": "t"} trailing"#,
            r#"{"event_type": "TaskStarted", "task_id": "t",}"#,
            r#"{"event_type": "TaskStarted", "task_id": "t", "attributes": {"n": 01}}"#,
            r#"{"event_type": "TaskStarted", "task_id": "t", "attributes": {"n": 1.}}"#,
            r#"{"event_type": "TaskStarted", "task_id": "t", "attributes": {"n": nul}}"#,
            "{\"event_type\": \"TaskStarted\", \"task_id\": \"t\tab\"}",
            r#"{"event_type": "TaskStarted", "task_id": "t""#,
            "",
        ] {
            assert_eq!(fast(line), None, "{line}");
        }
        // Invalid UTF-8 in a string.
        let mut out = Vec::new();
        let bad = b"{\"event_type\": \"TaskStarted\", \"task_id\": \"\xff\"}";
        assert_eq!(FastPath::default().encode(bad, 7, || 1, &mut out), None);
    }

    #[test]
    fn strings_of_every_length_with_a_special_byte_anywhere() {
        for len in 1..24 {
            for at in 0..len {
                for (special, fast_takes) in [
                    ("é", true),
                    ("✓", true),
                    ("\\\"", false),
                    ("\\u0041", false),
                ] {
                    let id = format!("{}{special}{}", "a".repeat(at), "b".repeat(len - at - 1));
                    let line = format!(
                        r#"{{"event_type": "TaskStarted", "task_id": "{id}", "backend": "x"}}"#
                    );
                    match fast(&line) {
                        Some(bytes) => {
                            assert!(fast_takes, "{line}");
                            assert_eq!(bytes, general(&line), "{line}");
                        }
                        None => assert!(!fast_takes, "{line}"),
                    }
                }
                // A raw control character is not JSON: both refuse it.
                let line = format!(
                    "{{\"event_type\": \"TaskStarted\", \"task_id\": \"{}\u{1}{}\"}}",
                    "a".repeat(at),
                    "b".repeat(len - at - 1)
                );
                assert_eq!(fast(&line), None);
                assert!(parse_line(line.as_bytes(), 7).is_err());
            }
        }
    }

    #[test]
    fn missing_times_and_id_are_filled_in() {
        let line = r#"{"event_type": "TaskStarted", "task_id": "t"}"#;
        let mut out = Vec::new();
        assert_eq!(
            FastPath::default().encode(line.as_bytes(), 1234, || 5, &mut out),
            Some(1234)
        );
        let Record::Event(ev) = crate::ingest::batch::decode(&out).unwrap() else {
            panic!()
        };
        assert_eq!(
            (ev.event_id, ev.emit_time_ns, ev.event_time_ns),
            (5, 1234, 1234)
        );
    }

    proptest! {
        /// Random task lines built from pieces of every kind agree with the
        /// general parser whenever the fast path takes them, and the fast
        /// path takes every plain one.
        #[test]
        fn agrees_with_the_general_parser(
            state in proptest::sample::select(&["TaskCreated", "TaskSubmitted", "TaskQueued", "TaskStarted", "TaskCompleted", "TaskFailed", "TaskCanceled"]),
            task in "[a-z0-9._-]{1,12}",
            time in proptest::option::of(0.0f64..2e9),
            dur in proptest::option::of(0.0f64..1e4),
            err in proptest::option::of("[A-Za-z]{1,8}"),
            attrs in proptest::collection::vec(("[a-z]{1,6}", proptest::prop_oneof![
                proptest::num::i64::ANY.prop_map(|i| i.to_string()),
                proptest::num::f64::NORMAL.prop_map(|f| format!("{f:?}")),
                "[ -~&&[^\"\\\\]]{0,10}".prop_map(|s| format!("\"{s}\"")),
                proptest::strategy::Just("null".to_string()),
                proptest::strategy::Just("true".to_string()),
            ]), 0..6),
        ) {
            let mut line = format!(r#"{{"event_type": "{state}", "task_id": "{task}""#);
            if let Some(t) = time {
                line += &format!(r#", "event_time": {t:?}"#);
            }
            let terminal = matches!(state, "TaskCompleted" | "TaskFailed" | "TaskCanceled");
            if let Some(d) = dur.filter(|_| terminal) {
                line += &format!(r#", "duration_seconds": {d:?}"#);
            }
            if let Some(e) = err.filter(|_| state == "TaskFailed") {
                line += &format!(r#", "error_type": "{e}""#);
            }
            let mut keys = std::collections::HashSet::new();
            let body: Vec<String> = attrs
                .iter()
                .filter(|(k, _)| keys.insert(k.clone()))
                .map(|(k, v)| format!(r#""{k}": {v}"#))
                .collect();
            line += &format!(r#", "attributes": {{{}}}}}"#, body.join(", "));
            let got = fast(&line);
            prop_assert!(got.is_some(), "fast path refused {}", line);
            prop_assert_eq!(got.unwrap(), general(&line), "{}", line);
        }
    }
}
