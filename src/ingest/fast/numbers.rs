//! The numbers of the fast path's lines, read exactly: a JSON number's
//! text as the f64 serde_json would make of it (a quick path for the plain
//! decimals runtimes send, checked exactly in integers, else the standard
//! library's parser), an event time as integer nanoseconds without going
//! through a float where the text allows, and the ids' hex digits eight at
//! a time. Apart from the scanner (`super`) because each is a claim of
//! equality with a slower, obvious reader, and the tests here (unit and
//! property) hold them to it.

/// A number's text as f64, `None` when out of range (serde_json refuses
/// those lines, and the general parser words the refusal).
#[inline]
pub(super) fn finite(text: &str) -> Option<f64> {
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
pub(super) fn time_ns_plain(b: &[u8]) -> Option<(i64, usize)> {
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

#[inline]
pub(super) fn ok_time(t: f64) -> bool {
    crate::clock::time_in_range(t)
}

/// 32 hex digits (either case) as u128.
#[inline]
pub(super) fn hex128(h: &[u8]) -> Option<u128> {
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
    use crate::clock::secs_to_ns;
    use proptest::prelude::*;

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
}
