//! The agent's own cost and distributions: resource usage of the process,
//! and the HDR histograms the dispatcher keeps (CPU %, memory %, sampling
//! latency and jitter), serialised into log snapshots and merged by
//! `convert` across nodes. (The process's own CPU time and peak RSS come
//! from [`crate::sys::self_usage`].)

use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use hdrhistogram::Histogram;

/// Starts a new peak of this process's resident memory: sets the kernel's
/// high-water mark (`VmHWM`) to the current RSS, by writing `5` to
/// `/proc/self/clear_refs` (Linux ≥ 4.0). False where that is refused; the
/// peak then counts from the process's start.
pub fn reset_peak_rss() -> bool {
    std::fs::OpenOptions::new()
        .write(true)
        .open("/proc/self/clear_refs")
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"5"))
        .is_ok()
}

/// This process's peak resident memory since its start or the last
/// [`reset_peak_rss`] (`VmHWM` of `/proc/self/status`), bytes.
pub fn peak_rss() -> Option<u64> {
    status_bytes("VmHWM:")
}

/// This process's resident memory now (`VmRSS`), bytes.
pub fn rss() -> Option<u64> {
    status_bytes("VmRSS:")
}

/// A `kB` field of `/proc/self/status`, in bytes.
fn status_bytes(key: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib = s
        .lines()
        .find_map(|l| l.strip_prefix(key))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(kib * 1024)
}

/// A histogram of values in [0, max] with 3 significant digits.
pub fn histogram(max: u64) -> Histogram<u64> {
    Histogram::new_with_max(max.max(2), 3).expect("valid histogram bounds")
}

/// Serialises a histogram (HDR V2 format, the interchange format of every
/// HdrHistogram implementation).
pub fn encode(h: &Histogram<u64>) -> Vec<u8> {
    let mut out = Vec::new();
    V2Serializer::new()
        .serialize(h, &mut out)
        .expect("serialising into a Vec cannot fail");
    out
}

/// The HDR V2 header: cookie, payload length, normalising index offset,
/// significant digits (4 bytes each, big-endian), lowest and highest
/// trackable values and the integer-to-double ratio (8 bytes each).
const V2_HEADER_BYTES: usize = 40;

/// Deserialises a histogram written by [`encode`]; `None` if empty or bad.
///
/// The header is checked before the decoder sizes anything by it: the
/// payload it claims must be in `bytes`, and its significant digits at
/// most the 3 that [`histogram`] uses. A snapshot in a damaged or crafted
/// log then cannot make `tal convert` allocate more than its own length
/// plus a counts array of under 1 MiB, whatever range it claims (fuzzing
/// found a header claiming a 2.9 GB payload).
pub fn decode(bytes: &[u8]) -> Option<Histogram<u64>> {
    let head = bytes.get(..V2_HEADER_BYTES)?;
    let be32 = |i: usize| u32::from_be_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
    if be32(4) as usize > bytes.len() - V2_HEADER_BYTES || be32(12) > 3 {
        return None;
    }
    Deserializer::new()
        .deserialize(&mut std::io::Cursor::new(bytes))
        .ok()
}

/// Merges `src` into `dst` (creating it on first use).
pub fn merge_into(dst: &mut Option<Histogram<u64>>, src: &[u8]) {
    if let Some(h) = decode(src) {
        match dst {
            Some(d) => {
                // Auto-resize lets differently-bounded histograms merge.
                d.auto(true);
                let _ = d.add(&h);
            }
            None => *dst = Some(h),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_that_claims_too_much_is_refused() {
        let mut h = histogram(1000);
        h.record(7).unwrap();
        let good = encode(&h);
        assert_eq!(decode(&good).unwrap().max(), 7);
        // A payload longer than the bytes (the fuzzer's 2.9 GB claim).
        let mut long = good.clone();
        long[4..8].copy_from_slice(&2_902_458_370u32.to_be_bytes());
        assert!(decode(&long).is_none());
        // More significant digits than tal writes (a counts array of GBs).
        let mut digits = good.clone();
        digits[12..16].copy_from_slice(&5u32.to_be_bytes());
        assert!(decode(&digits).is_none());
        assert!(decode(&good[..39]).is_none());
        assert!(decode(&[]).is_none());
        // Any range at 3 digits stays small.
        let mut wide = good;
        wide[24..32].copy_from_slice(&(u64::MAX >> 1).to_be_bytes());
        if let Some(w) = decode(&wide) {
            assert!(w.distinct_values() < 1 << 17);
        }
    }

    #[test]
    fn round_trip_and_merge_exact_quantiles() {
        let mut a = histogram(1000);
        let mut b = histogram(1000);
        for v in 1..=500u64 {
            a.record(v).unwrap();
        }
        for v in 501..=1000u64 {
            b.record(v).unwrap();
        }
        let mut m = None;
        merge_into(&mut m, &encode(&a));
        merge_into(&mut m, &encode(&b));
        let m = m.unwrap();
        assert_eq!(m.len(), 1000);
        assert_eq!(m.value_at_quantile(0.5), 500);
        assert_eq!(m.max(), 1000);
        assert!(decode(&[]).is_none());
        assert!(decode(b"garbage").is_none());
    }
}
