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

use crate::clock::secs_to_ns;
use crate::record::TaskState;

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

/// A number's text as f64, `None` when out of range (serde_json refuses
/// those lines, and the general parser words the refusal).
fn finite(text: &str) -> Option<f64> {
    decimal_f64(text.as_bytes())
        .or_else(|| text.parse().ok())
        .filter(|f: &f64| f.is_finite())
}

/// Eight ASCII digits (little-endian in a word, first digit lowest) as
/// their value, `None` if any byte is not a digit.
#[inline(always)]
fn eight_digits(x: u64) -> Option<u64> {
    const ZEROS: u64 = 0x3030_3030_3030_3030;
    // Digits are 0x30..=0x39: high nibble 3, and adding 6 keeps it 3.
    let all = (x & 0xF0F0_F0F0_F0F0_F0F0) == ZEROS
        && (x.wrapping_add(0x0606_0606_0606_0606) & 0xF0F0_F0F0_F0F0_F0F0) == ZEROS;
    if !all {
        return None;
    }
    let v = x - ZEROS;
    // Pairs, then quads, then the whole: each step merges neighbours.
    let v = (v * 10 + (v >> 8)) & 0x00FF_00FF_00FF_00FF;
    let v = (v * 100 + (v >> 16)) & 0x0000_FFFF_0000_FFFF;
    Some((v * 10000 + (v >> 32)) & 0xFFFF_FFFF)
}

/// Powers of ten that u64 holds.
const POW10: [u64; 20] = {
    let mut t = [1u64; 20];
    let mut i = 1;
    while i < 20 {
        t[i] = t[i - 1] * 10;
        i += 1;
    }
    t
};

/// The correctly rounded f64 of a plain decimal (`-?digits(.digits)?`, at
/// most 19 digits, value below 2^53): the shape of the times and
/// durations runtimes send. A quick estimate, then an exact check in
/// integers that it is the nearest f64 (ties to even); `None` for other
/// shapes and for the rare estimate that misses, which the standard
/// library's parser then reads. Twice as fast as that parser for a
/// 17-digit time, and the same answer (tests compare them).
fn decimal_f64(text: &[u8]) -> Option<f64> {
    let (neg, digits) = match text.split_first()? {
        (b'-', rest) => (true, rest),
        _ => (false, text),
    };
    if digits.len() > 20 {
        return None;
    }
    let mut w = 0u64;
    let mut n = 0usize;
    let mut frac = None;
    let mut i = 0;
    while i < digits.len() {
        // Eight digits at a time where there are eight.
        if let Some(chunk) = digits.get(i..i + 8) {
            if let Some(v) = eight_digits(u64::from_le_bytes(chunk.try_into().ok()?)) {
                w = w.wrapping_mul(100_000_000).wrapping_add(v);
                n += 8;
                i += 8;
                continue;
            }
        }
        match digits[i] {
            c @ b'0'..=b'9' => {
                w = w.wrapping_mul(10).wrapping_add(u64::from(c - b'0'));
                n += 1;
            }
            b'.' if frac.is_none() => frac = Some(i + 1),
            _ => return None,
        }
        i += 1;
    }
    let k = frac.map_or(0, |f| digits.len() - f);
    if n == 0 || n > 19 {
        return None;
    }
    let sign = |v: f64| if neg { -v } else { v };
    if w == 0 {
        return Some(sign(0.0));
    }
    let p = POW10[k];
    let estimate = w as f64 / p as f64;
    // x = w / 10^k is exact; c = m * 2^e the candidate. c is nearest when
    // |x - c| < 2^(e-1), i.e. |w * 2^(1-e) - 2 m 10^k| < 10^k (equal: a
    // tie, which goes to the even m).
    let nearest = |c: f64| -> bool {
        let bits = c.to_bits();
        let exp = ((bits >> 52) & 0x7FF) as i32;
        let m = u128::from(bits & ((1 << 52) - 1) | 1 << 52);
        let e = exp - 1075;
        let s = 1 - e;
        // Normal, not at a power of two (whose lower gap is half the
        // upper), below 2^53 and small enough to shift without loss.
        if exp == 0 || m == 1 << 52 || e > 0 || s >= 128 {
            return false;
        }
        let s = s as u32;
        if u128::from(w).leading_zeros() < s {
            return false;
        }
        let lhs = u128::from(w) << s;
        let rhs = 2 * m * u128::from(p);
        let diff = lhs.abs_diff(rhs);
        let p = u128::from(p);
        diff < p || (diff == p && m % 2 == 0)
    };
    let up = f64::from_bits(estimate.to_bits() + 1);
    let down = f64::from_bits(estimate.to_bits() - 1);
    [estimate, up, down]
        .into_iter()
        .find(|&c| nearest(c))
        .map(sign)
}

/// How many of a word's bytes (little-endian, first byte lowest) are ASCII
/// digits before the first that is not, 0 to 8. Range checks by adding to
/// each byte: the lowest flagged byte is the first non-digit (a carry out
/// of a byte of 0x80 or more only flags bytes after it).
#[inline(always)]
fn leading_digits(x: u64) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    let ge0 = x.wrapping_add(ONES * u64::from(0x80 - b'0'));
    let ge10 = x.wrapping_add(ONES * u64::from(0x80 - b'9' - 1));
    let other = (!ge0 | ge10 | x) & 0x8080_8080_8080_8080;
    (other.trailing_zeros() / 8) as usize
}

/// A run of at most 19 ASCII digits at the start of `b`: its value and
/// length (0 when `b` does not start with a digit). `None` past 19 digits,
/// which u64 may not hold. Eight bytes at a time where there are eight.
#[inline]
fn digit_run(b: &[u8]) -> Option<(u64, usize)> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    let mut v = 0u64;
    let mut n = 0;
    while let Some(chunk) = b.get(n..n + 8) {
        let x = u64::from_le_bytes(chunk.try_into().ok()?);
        let c = leading_digits(x);
        if c == 0 {
            return Some((v, n));
        }
        if n + c > 19 {
            return None;
        }
        // The c digits moved up to the word's top, '0's below them.
        let digits = if c == 8 {
            x
        } else {
            x << (64 - 8 * c) | (ONES * u64::from(b'0')) >> (8 * c)
        };
        v = v * POW10[c] + eight_digits(digits)?;
        n += c;
        if c < 8 {
            return Some((v, n));
        }
    }
    while let Some(c @ b'0'..=b'9') = b.get(n) {
        if n == 19 {
            return None;
        }
        v = v * 10 + u64::from(c - b'0');
        n += 1;
    }
    Some((v, n))
}

/// `(n / 10^k, n % 10^k)`, each `k` a division by a constant (which
/// compiles to a multiplication), `k <= 19`.
#[inline]
fn div_rem_pow10(n: u64, k: usize) -> (u64, u64) {
    macro_rules! arms {
        ($($k:literal)*) => {
            match k {
                $($k => (n / POW10[$k], n % POW10[$k]),)*
                _ => (n / POW10[k], n % POW10[k]),
            }
        };
    }
    arms!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19)
}

/// A time in seconds at the start of `b`, in the plain shape clocks print
/// (`digits(.digits)?`, at least 2^20 s, below 10^11 s, at most 19
/// fraction digits), as nanoseconds: exactly `secs_to_ns` of the nearest
/// f64, which is what the general parser stores, but in integers only.
/// Returns the nanoseconds and the length of the number; `None` for any
/// other shape or range, which the float path then reads.
///
/// Why this is exact: write the f64 nearest to `x = W + F/10^k` as
/// `W + q·2^-s`, where `W = floor(x)`, `2^b <= W < 2^(b+1)` and `s = 52 - b`
/// (W is on the f64 grid of its binade, so rounding `x` rounds only the
/// fraction: `q = F·2^s/10^k` to nearest, ties to even, and the parity of
/// the mantissa is that of `q` since `W·2^s` is even). `secs_to_ns` then
/// takes the whole seconds `W` and rounds `q·2^-s·10^9` half up; that
/// product is exact in f64 because `q < 2^s <= 2^32` (W >= 2^20) and
/// `10^9 = 2^9·1953125`, so `q·1953125 < 2^53`.
#[inline]
fn time_ns_plain(b: &[u8]) -> Option<(i64, usize)> {
    time_ns_clock(b).or_else(|| time_ns_general(b))
}

/// [`time_ns_plain`] for the shape of nearly every time a clock prints
/// today: ten integer digits (from 10^9 s, September 2001, to 10^10 s),
/// a dot and one to nine fraction digits, with at least 21 bytes of line
/// from its start. Words of eight digits at once and a division by one
/// constant: the fraction as exact nanoseconds `E` (its digits padded
/// with zeros to nine) is `F/10^k` in units of 10^-9, so the rounding of
/// [`time_ns_general`] reads `q = E·2^s/10^9` to nearest, ties to even.
#[inline]
fn time_ns_clock(b: &[u8]) -> Option<(i64, usize)> {
    const ZEROS: u64 = 0x3030_3030_3030_3030;
    let word = |at: usize| Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?));
    let (head, frac) = (word(0)?, word(11)?);
    let (d8, d9, dot) = (*b.get(8)?, *b.get(9)?, *b.get(10)?);
    if dot != b'.' || !d8.is_ascii_digit() || !d9.is_ascii_digit() || head as u8 == b'0' {
        return None;
    }
    let w = eight_digits(head)? * 100 + u64::from(d8 - b'0') * 10 + u64::from(d9 - b'0');
    if w >= crate::clock::MAX_TIME_SECS {
        return None; // the general path refuses it, with its reason
    }
    let (e, k) = match leading_digits(frac) {
        0 => return None,
        8 => match *b.get(19)? {
            d @ b'0'..=b'9' => (eight_digits(frac)? * 10 + u64::from(d - b'0'), 9),
            _ => (eight_digits(frac)? * 10, 8),
        },
        // The c digits kept, '0's after them (higher bytes).
        c => {
            let keep = (1u64 << (8 * c)) - 1;
            (eight_digits(frac & keep | ZEROS & !keep)? * 10, c)
        }
    };
    let len = 11 + k;
    if let Some(b'0'..=b'9' | b'.' | b'e' | b'E') = b.get(len) {
        return None;
    }
    let s = 52 - (63 - w.leading_zeros());
    let num = e << s;
    let (mut q, r) = (num / 1_000_000_000, num % 1_000_000_000);
    if 2 * r > 1_000_000_000 || (2 * r == 1_000_000_000 && q % 2 == 1) {
        q += 1;
    }
    let frac_ns = (q * 1_000_000_000 + (1 << (s - 1))) >> s;
    Some((w as i64 * 1_000_000_000 + frac_ns as i64, len))
}

/// [`time_ns_plain`] for every shape it takes.
#[inline]
fn time_ns_general(b: &[u8]) -> Option<(i64, usize)> {
    let (w, n) = digit_run(b)?;
    if !(1 << 20..crate::clock::MAX_TIME_SECS).contains(&w) || b[0] == b'0' {
        return None;
    }
    let (f, k) = match b.get(n) {
        Some(b'.') => {
            let (f, k) = digit_run(&b[n + 1..])?;
            if k == 0 {
                return None;
            }
            (f, k)
        }
        _ => (0, 0),
    };
    let len = if k == 0 { n } else { n + 1 + k };
    if let Some(b'.' | b'e' | b'E') = b.get(len) {
        return None;
    }
    let s = 52 - (63 - w.leading_zeros());
    // F·2^s must fit in u64; 22 bits of shift leave 42 for F (12 digits).
    if f.leading_zeros() < s {
        return None;
    }
    let (mut q, r) = div_rem_pow10(f << s, k);
    // r < 10^k <= 10^19 < 2^63: doubling it does not overflow.
    let (twice, p) = (2 * r, POW10[k]);
    if twice > p || (twice == p && q % 2 == 1) {
        q += 1;
    }
    let frac_ns = (q * 1_000_000_000 + (1 << (s - 1))) >> s;
    Some((w as i64 * 1_000_000_000 + frac_ns as i64, len))
}

fn ok_time(t: f64) -> bool {
    crate::clock::time_in_range(t)
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

/// 32 hex digits (either case) as u128.
fn hex128(h: &[u8]) -> Option<u128> {
    if h.len() != 32 {
        return None;
    }
    let (hi, lo) = h.split_at(16);
    Some(u128::from(hex64(hi)?) << 64 | u128::from(hex64(lo)?))
}

/// 16 hex digits as u64.
#[inline]
fn hex64(h: &[u8]) -> Option<u64> {
    let hi = hex8(u64::from_le_bytes(h.get(..8)?.try_into().ok()?))?;
    let lo = hex8(u64::from_le_bytes(h.get(8..16)?.try_into().ok()?))?;
    Some(u64::from(hi) << 32 | u64::from(lo))
}

/// Eight hex digits (either case; little-endian in a word, first digit
/// lowest) as their value, `None` if any byte is not a hex digit. All
/// eight at once: range checks by adding to each byte (no byte carries
/// into the next, as every byte is ASCII), then the nibbles packed pairwise.
#[inline]
fn hex8(x: u64) -> Option<u32> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // The high bit of each byte of `v + (0x80 - lo)` says `byte >= lo`.
    let at_least = |v: u64, lo: u8| v.wrapping_add(ONES * u64::from(0x80 - lo));
    let digit = at_least(x, b'0') & !at_least(x, b'9' + 1);
    let lower = x | (ONES * 0x20);
    let letter = at_least(lower, b'a') & !at_least(lower, b'f' + 1);
    if x & HIGH != 0 || (digit | letter) & HIGH != HIGH {
        return None;
    }
    // A digit's value is its low nibble; a letter's is that plus 9.
    let nibbles = (x & (ONES * 0x0F)) + ((letter & HIGH) >> 7) * 9;
    // Bytes [a, b, ..] (a first, most significant) to a << 4 | b, then the
    // four bytes gathered and read big-endian.
    let pairs = (nibbles & 0x000F_000F_000F_000F) << 4 | (nibbles >> 8) & 0x000F_000F_000F_000F;
    let quads = (pairs | pairs >> 8) & 0x0000_FFFF_0000_FFFF;
    let all = (quads | quads >> 16) as u32;
    Some(all.swap_bytes())
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
        let corpus = include_bytes!("../../tests/fixtures/ingest-lines.bin");
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

    #[test]
    fn eight_digits_reads_digits_and_refuses_the_rest() {
        let w = |s: &[u8; 8]| eight_digits(u64::from_le_bytes(*s));
        assert_eq!(w(b"12345678"), Some(12_345_678));
        assert_eq!(w(b"00000000"), Some(0));
        assert_eq!(w(b"99999999"), Some(99_999_999));
        for bad in [
            b"1234567.",
            b"/2345678",
            b"1234:678",
            b"\xb22345678",
            b"1234567 ",
        ] {
            assert_eq!(w(bad), None);
        }
    }

    #[test]
    fn decimal_f64_is_the_standard_parsers_answer() {
        for t in [
            "1795574441.8567670",
            "1795574441.8567696",
            "0",
            "-0",
            "0.0",
            "-0.0",
            "1",
            "0.1",
            "0.5",
            "2.5",
            "9007199254740991",
            "9007199254740992",
            "9007199254740993",
            "4503599627370496.5",
            "4503599627370497.5",
            "0.30000000000000004",
            "1234567890123456789",
            "0.0000000000000000001",
            "123.",
            ".5",
            "1.2.3",
            "",
            "-",
            "00012.5000",
            "1e5",
            "99999999999999999999",
            "1795574441.123456789",
        ] {
            let std = t.parse::<f64>().ok();
            if let Some(f) = decimal_f64(t.as_bytes()) {
                assert_eq!(Some(f.to_bits()), std.map(f64::to_bits), "{t}");
            }
        }
        assert!(decimal_f64(b"1795574441.8567670").is_some());
    }

    #[test]
    fn hex8_reads_hex_digits_and_refuses_every_other_byte() {
        let reference = |w: &[u8; 8]| -> Option<u32> {
            u32::from_str_radix(std::str::from_utf8(w).ok()?, 16)
                .ok()
                .filter(|_| w.iter().all(u8::is_ascii_hexdigit))
        };
        // Every byte value in every position, amid valid digits.
        for pos in 0..8 {
            for b in 0..=255u8 {
                let mut w = *b"9aF0c3E7";
                w[pos] = b;
                assert_eq!(hex8(u64::from_le_bytes(w)), reference(&w), "{w:?}");
            }
        }
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..100_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let w = format!("{:08x}", x as u32);
            let mut w: [u8; 8] = w.as_bytes().try_into().unwrap();
            if x >> 40 & 1 == 1 {
                w.make_ascii_uppercase();
            }
            assert_eq!(hex8(u64::from_le_bytes(w)), Some(x as u32));
        }
        assert_eq!(
            hex128(b"9b0c42c4483646f8AF92BD37A47A5F9F"),
            Some(0x9b0c42c4483646f8af92bd37a47a5f9f)
        );
    }

    #[test]
    fn time_ns_plain_takes_clock_times_and_leaves_the_rest() {
        let ns = |t: &str| time_ns_plain(t.as_bytes()).map(|(ns, _)| ns);
        let f = |t: &str| secs_to_ns(t.parse::<f64>().unwrap());
        for t in [
            "1795574441.8567670",
            "1795574441",
            "1795574441.5",
            "1048576",
            "1048576.000000000000000001",
            "4102444799.999999",
            "1795574441.999999999999",
            "4094967295.9999999",
        ] {
            assert_eq!(ns(t), Some(f(t)), "{t}");
        }
        // Below 2^20 s, from 2100 on (refused, by the general path),
        // leading zeros, signs, exponents, a bare dot: the float path's.
        for t in [
            "1048575.5",
            "4102444800",
            "9999999999.5",
            "99999999999.999999",
            "100000000000",
            "0",
            "01795574441",
            "-1795574441",
            "1795574441.",
            "1795574441e0",
            "1795574441.5E1",
            "",
        ] {
            assert_eq!(ns(t), None, "{t}");
        }
    }

    proptest! {
        #[test]
        fn decimal_f64_agrees_on_random_decimals(
            int in 0u64..10_000_000_000,
            frac in 0u64..10_000_000_000,
            width in 0usize..10,
            neg: bool,
        ) {
            let frac = format!("{frac:010}");
            let t = format!("{}{int}.{}", if neg { "-" } else { "" }, &frac[..width]);
            let t = t.trim_end_matches('.');
            if let Some(f) = decimal_f64(t.as_bytes()) {
                prop_assert_eq!(f.to_bits(), t.parse::<f64>().unwrap().to_bits(), "{}", t);
            }
        }

        /// The integer time path is `secs_to_ns` of the standard parser's
        /// float, on clock-shaped times of every fraction width, and on
        /// times near the edges of its range.
        #[test]
        fn time_ns_plain_is_secs_to_ns_of_the_float(
            int in prop_oneof![
                (1u64 << 20)..crate::clock::MAX_TIME_SECS,
                (1u64 << 20)..(1 << 21),
                1_600_000_000u64..2_000_000_000,
                4_000_000_000u64..crate::clock::MAX_TIME_SECS,
            ],
            frac in proptest::num::u64::ANY,
            width in 0usize..=20,
            tail in proptest::sample::select(&["", ",", "}", " ", "e5", "E-3", "."]),
        ) {
            let frac = format!("{frac:020}");
            let t = format!("{int}.{}", &frac[..width]);
            let t = t.trim_end_matches('.');
            // A tail that makes the text another number (an exponent, a
            // dot) must leave it to the float path.
            let goes_on = matches!(tail, "e5" | "E-3" | ".");
            let text = format!("{t}{tail}");
            match time_ns_plain(text.as_bytes()) {
                Some((ns, len)) => {
                    prop_assert_eq!(len, t.len(), "{}", text);
                    prop_assert!(!goes_on, "{}", text);
                    let f: f64 = t.parse().unwrap();
                    prop_assert_eq!(ns, secs_to_ns(f), "{}", t);
                }
                // Only fractions too long for u64 arithmetic (nine digits
                // always fit), and numbers that go on, are left to the
                // float path.
                None => prop_assert!(width > 9 || goes_on, "{}", text),
            }
        }

        /// The clock-shaped path gives what the general one gives, and
        /// takes every clock-shaped time.
        #[test]
        fn time_ns_clock_is_time_ns_general(
            int in 1_000_000_000u64..crate::clock::MAX_TIME_SECS,
            frac in proptest::num::u64::ANY,
            width in 1usize..=12,
            tail in proptest::sample::select(&[", \"emit_time\": 1", "}                    ", "e5         ", "0123456789"]),
        ) {
            let frac = format!("{frac:020}");
            let text = format!("{int}.{}{tail}", &frac[..width]);
            let clock = time_ns_clock(text.as_bytes());
            let general = time_ns_general(text.as_bytes());
            if width <= 9 && !matches!(&tail[..1], "e" | "0") {
                prop_assert!(clock.is_some(), "{}", text);
            }
            if let Some(c) = clock {
                prop_assert_eq!(Some(c), general, "{}", text);
            }
        }

        #[test]
        fn time_ns_plain_agrees_on_round_trips(x in 1_048_576.0f64..4.1e9) {
            let t = format!("{x:?}");
            if let Some((ns, len)) = time_ns_plain(t.as_bytes()) {
                prop_assert_eq!(len, t.len());
                prop_assert_eq!(ns, secs_to_ns(x), "{}", t);
            }
        }

        #[test]
        fn decimal_f64_agrees_on_round_trips(x in 0.0f64..1e11) {
            let t = x.to_string();
            let f = decimal_f64(t.as_bytes());
            prop_assert!(f.is_some() || t.len() > 20, "{}", t);
            if let Some(f) = f {
                prop_assert_eq!(f.to_bits(), x.to_bits());
            }
        }
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
