//! A small JSON writer that produces what Python's `json.dumps` produces
//! with its default separators (`", "` and `": "`), so tal's lines look like
//! RHAPSODY's byte for byte in layout. Floats are written in their shortest
//! round-trip form (ryu), always with a decimal point or exponent so that
//! they read back as floats; NaN and infinities, which JSON cannot hold,
//! are written as null.

use crate::record::Value;

/// Appends JSON to a byte buffer.
#[derive(Debug)]
pub struct JsonOut<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> JsonOut<'a> {
    /// Starts an object.
    pub fn object(out: &'a mut Vec<u8>) -> Self {
        out.push(b'{');
        Self { out, first: true }
    }

    /// Closes the object.
    pub fn end(self) {
        self.out.push(b'}');
    }

    /// Writes the next key, which must be one of tal's own key names
    /// (plain ASCII, nothing to escape); see [`JsonOut::value`] for keys that
    /// come from outside.
    #[inline]
    pub fn key(&mut self, k: &str) -> &mut Self {
        debug_assert!(!k.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\'));
        if !self.first {
            self.out.extend_from_slice(b", \"");
        } else {
            self.out.push(b'"');
        }
        self.first = false;
        self.out.extend_from_slice(k.as_bytes());
        self.out.extend_from_slice(b"\": ");
        self
    }

    /// Writes the next key, escaping it.
    #[inline]
    pub fn key_escaped(&mut self, k: &str) -> &mut Self {
        if !self.first {
            self.out.extend_from_slice(b", ");
        }
        self.first = false;
        write_str(self.out, k);
        self.out.extend_from_slice(b": ");
        self
    }

    /// Writes raw JSON as the value of the key just written.
    #[inline]
    pub fn raw(&mut self, json: &[u8]) -> &mut Self {
        self.out.extend_from_slice(json);
        self
    }

    /// `"k": "<32 lowercase hex digits>"` (event ids).
    #[inline]
    pub fn hex32(&mut self, k: &str, v: u128) -> &mut Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        self.key(k);
        self.out.push(b'"');
        for i in (0..32).rev() {
            self.out.push(HEX[((v >> (i * 4)) & 0xf) as usize]);
        }
        self.out.push(b'"');
        self
    }

    /// `"k": "v"`
    #[inline]
    pub fn str(&mut self, k: &str, v: &str) -> &mut Self {
        self.key(k);
        write_str(self.out, v);
        self
    }

    /// `"k": "v"` or `"k": null`
    #[inline]
    pub fn opt_str(&mut self, k: &str, v: Option<&str>) -> &mut Self {
        self.key(k);
        match v {
            Some(s) => write_str(self.out, s),
            None => self.out.extend_from_slice(b"null"),
        }
        self
    }

    /// `"k": 1.5`
    #[inline]
    pub fn f64(&mut self, k: &str, v: f64) -> &mut Self {
        self.key(k);
        write_f64(self.out, v);
        self
    }

    /// `"k": 1.5` or `"k": null`
    #[inline]
    pub fn opt_f64(&mut self, k: &str, v: Option<f64>) -> &mut Self {
        self.key(k);
        match v {
            Some(f) => write_f64(self.out, f),
            None => self.out.extend_from_slice(b"null"),
        }
        self
    }

    /// `"k": 3`
    #[inline]
    pub fn int(&mut self, k: &str, v: i64) -> &mut Self {
        self.key(k);
        let mut b = itoa::Buffer::new();
        self.out.extend_from_slice(b.format(v).as_bytes());
        self
    }

    /// `"k": 3` for unsigned values.
    #[inline]
    pub fn uint(&mut self, k: &str, v: u64) -> &mut Self {
        self.key(k);
        let mut b = itoa::Buffer::new();
        self.out.extend_from_slice(b.format(v).as_bytes());
        self
    }

    /// `"k": true`
    #[inline]
    pub fn bool(&mut self, k: &str, v: bool) -> &mut Self {
        self.key(k);
        self.out
            .extend_from_slice(if v { b"true" } else { b"false" });
        self
    }

    /// `"k": null`
    #[inline]
    pub fn null(&mut self, k: &str) -> &mut Self {
        self.key(k);
        self.out.extend_from_slice(b"null");
        self
    }

    /// `"k": <value>`, for keys from outside (escaped).
    pub fn value(&mut self, k: &str, v: &Value) -> &mut Self {
        self.key_escaped(k);
        write_value(self.out, v);
        self
    }

    /// `"k": {...}` from ordered pairs.
    pub fn attrs(&mut self, k: &str, attrs: &[(String, Value)]) -> &mut Self {
        self.key(k);
        let mut o = JsonOut::object(self.out);
        for (ak, av) in attrs {
            o.value(ak, av);
        }
        o.end();
        self
    }

    /// `"k": ` followed by a nested object built by `f`.
    pub fn nested(&mut self, k: &str, f: impl FnOnce(&mut JsonOut<'_>)) -> &mut Self {
        self.key(k);
        let mut o = JsonOut::object(self.out);
        f(&mut o);
        o.end();
        self
    }

    /// `"k": [1.5, 2.0]`
    pub fn f32_array(&mut self, k: &str, vs: &[f32]) -> &mut Self {
        self.key(k);
        self.out.push(b'[');
        for (i, v) in vs.iter().enumerate() {
            if i > 0 {
                self.out.extend_from_slice(b", ");
            }
            // Per-core values are one-decimal percentages: print them as
            // such rather than as the nearest f32 widened to f64.
            write_f64(self.out, (f64::from(*v) * 10.0).round() / 10.0);
        }
        self.out.push(b']');
        self
    }
}

/// Writes a JSON value.
pub fn write_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Int(i) => out.extend_from_slice(itoa::Buffer::new().format(*i).as_bytes()),
        Value::Float(f) => write_f64(out, *f),
        Value::Str(s) => write_str(out, s),
        Value::Json(raw) => out.extend_from_slice(raw.as_bytes()),
    }
}

/// Writes a float as Python's `repr` does: the shortest string that reads
/// back as the same double. Two exact fast paths cover most of tal's
/// values: whole numbers below 1e16 (byte counts: digits + ".0") and
/// values with one decimal (percentages rounded as psutil rounds them:
/// if `n / 10.0 == v` for the integer `n = round(v·10)`, then "n/10.n%10"
/// is the shortest representation, because IEEE division is correctly
/// rounded and so that decimal parses back to exactly `v`).
#[inline]
pub fn write_f64(out: &mut Vec<u8>, v: f64) {
    const LIMIT: f64 = 1e15;
    if v.abs() < LIMIT {
        let n = (v * 10.0).round();
        if n / 10.0 == v && !(v == 0.0 && v.is_sign_negative()) {
            let n = n as i64;
            let mut b = itoa::Buffer::new();
            if n < 0 {
                out.push(b'-');
            }
            let a = n.unsigned_abs();
            out.extend_from_slice(b.format(a / 10).as_bytes());
            out.push(b'.');
            out.push(b'0' + (a % 10) as u8);
            return;
        }
    }
    if v.is_finite() {
        let mut b = ryu::Buffer::new();
        out.extend_from_slice(b.format_finite(v).as_bytes());
    } else {
        out.extend_from_slice(b"null");
    }
}

/// Writes a JSON string with the escapes Python's `json.dumps` uses
/// (`ensure_ascii` off: non-ASCII is written as UTF-8).
#[inline]
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    if !bytes.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\') {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => {
                out.extend_from_slice(&bytes[start..i]);
                out.extend_from_slice(format!("\\u{b:04x}").as_bytes());
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(esc);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_fast_paths_match_shortest_round_trip() {
        let mut vals = vec![
            0.0, 1.0, 66.7, 0.1, 0.3, 99.9, 100.0, 12288.0, 1e14, 123456.7, -2.5,
        ];
        vals.extend((0..100_000).map(|i| i as f64 / 10.0));
        vals.extend((0..1000).map(|i| (i as f64 * 0.37).round() / 10.0));
        vals.extend([1.0 / 3.0, 1795574441.8563643, 1e15, 1e16, 2.5e-7, -0.0]);
        for v in vals {
            let mut a = Vec::new();
            write_f64(&mut a, v);
            let s = String::from_utf8(a).unwrap();
            assert_eq!(
                s.parse::<f64>().unwrap().to_bits(),
                v.to_bits(),
                "{v} -> {s}"
            );
            let mut r = ryu::Buffer::new();
            assert_eq!(s, r.format_finite(v), "{v}");
        }
    }

    #[test]
    fn python_layout_and_escapes() {
        let mut buf = Vec::new();
        let mut o = JsonOut::object(&mut buf);
        o.str("a", "x\"y\\\n\u{1}é")
            .f64("b", 12288.0)
            .opt_f64("c", None)
            .int("d", -3)
            .bool("e", true)
            .f64("f", f64::NAN)
            .f32_array("g", &[66.7, 0.0]);
        o.end();
        let s = String::from_utf8(buf).unwrap();
        assert_eq!(
            s,
            r#"{"a": "x\"y\\\n\u0001é", "b": 12288.0, "c": null, "d": -3, "e": true, "f": null, "g": [66.7, 0.0]}"#
        );
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["a"], "x\"y\\\n\u{1}é");
        assert!(v["b"].is_f64());
    }
}
