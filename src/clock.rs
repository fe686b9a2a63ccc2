//! Clocks: a monotonic clock for deadlines and deltas, wall-clock time for
//! output, and the anchor that maps one to the other.
//!
//! The sampler stores only monotonic ticks. The dispatcher takes a fresh
//! (wall, monotonic) anchor once per batch and converts every reading of the
//! batch with it, so a wall-clock step (NTP, an admin) moves later batches
//! but never the spacing of samples within the log's deltas.
//!
//! Every clock is read through rustix's `clock_gettime`, which uses the
//! vDSO as glibc does (no system call).

use rustix::time::ClockId;

/// Nanoseconds of `CLOCK_MONOTONIC`.
#[inline]
pub fn mono_ns() -> u64 {
    read(ClockId::Monotonic) as u64
}

/// Nanoseconds since the Unix epoch (`CLOCK_REALTIME`).
#[inline]
pub fn wall_ns() -> i64 {
    read(ClockId::Realtime)
}

/// CPU time of the calling thread (`CLOCK_THREAD_CPUTIME_ID`), ns.
#[inline]
pub fn thread_cpu_ns() -> u64 {
    read(ClockId::ThreadCPUTime) as u64
}

#[inline]
fn read(clock: ClockId) -> i64 {
    let ts = rustix::time::clock_gettime(clock);
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

/// A simultaneous reading of both clocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Anchor {
    /// Wall-clock nanoseconds since the epoch.
    pub wall_ns: i64,
    /// Monotonic nanoseconds.
    pub mono_ns: u64,
}

impl Anchor {
    /// Reads both clocks as close together as possible.
    pub fn now() -> Self {
        let mono_ns = mono_ns();
        let wall_ns = wall_ns();
        Self { wall_ns, mono_ns }
    }

    /// The wall time that corresponds to monotonic time `mono`.
    #[inline]
    pub fn to_wall(&self, mono: u64) -> i64 {
        self.wall_ns + (mono as i64 - self.mono_ns as i64)
    }
}

/// Nanoseconds to float seconds, the JSONL time unit. Whole seconds and
/// the fraction are converted separately, so that a time that came in as
/// float seconds goes back out as exactly the same float.
#[inline]
pub fn ns_to_secs(ns: i64) -> f64 {
    let s = ns.div_euclid(1_000_000_000);
    let f = ns.rem_euclid(1_000_000_000);
    s as f64 + f as f64 / 1e9
}

/// The latest event time accepted from a client, seconds since the epoch:
/// 2100-01-01T00:00:00Z. Times are kept as i64 nanoseconds, which end in
/// 2262; a time past 2100 is a client's mistake (milliseconds sent as
/// seconds, say), refused with an error line rather than stored.
pub const MAX_TIME_SECS: u64 = 4_102_444_800;

/// Whether `secs` is an event time tal accepts: from the epoch up to (not
/// including) [`MAX_TIME_SECS`].
#[inline]
pub fn time_in_range(secs: f64) -> bool {
    secs.is_finite() && (0.0..MAX_TIME_SECS as f64).contains(&secs)
}

/// Whether `secs` is a duration tal accepts: from 0 up to
/// [`MAX_TIME_SECS`] (no task outlasts the span of times accepted; a
/// larger one is a client's mistake, like a time past 2100).
#[inline]
pub fn duration_in_range(secs: f64) -> bool {
    secs.is_finite() && (0.0..=MAX_TIME_SECS as f64).contains(&secs)
}

/// Float seconds to nanoseconds (the inverse of [`ns_to_secs`] for every
/// float it produces; see there).
#[inline]
pub fn secs_to_ns(secs: f64) -> i64 {
    // `floor` and `round` spelled with integer casts: baseline x86-64 has no
    // rounding instruction, and the libm calls were a visible share of the
    // ingest fast path. Exact for every |secs| < 2^52 (casts truncate
    // toward zero; the differences below are exact at that magnitude); the
    // result fits i64 for |secs| < 9.2e9 (year 2262), so client times are
    // checked with [`time_in_range`] first. Beyond that (a checkpoint's
    // absurd time, read by `tal convert`) it saturates to i64's ends, never
    // overflows; NaN is 0.
    let t = secs as i64;
    let whole = if t as f64 > secs {
        t.saturating_sub(1)
    } else {
        t
    };
    let frac = (secs - whole as f64) * 1e9;
    let r = frac as i64;
    let r = if frac - r as f64 >= 0.5 {
        r.saturating_add(1)
    } else {
        r
    };
    whole.saturating_mul(1_000_000_000).saturating_add(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secs_to_ns_saturates_out_of_range() {
        // Found by fuzzing `tal convert`'s JSONL readers: a time of 1e69 s
        // overflowed the multiplication.
        assert_eq!(secs_to_ns(1e300), i64::MAX);
        assert_eq!(secs_to_ns(-1e300), i64::MIN);
        assert_eq!(secs_to_ns(f64::INFINITY), i64::MAX);
        assert_eq!(secs_to_ns(f64::NEG_INFINITY), i64::MIN);
        assert_eq!(secs_to_ns(f64::NAN), 0);
        assert_eq!(secs_to_ns(9.3e9), i64::MAX);
        assert_eq!(secs_to_ns(1.5), 1_500_000_000);
        assert_eq!(secs_to_ns(-1.5), -1_500_000_000);
    }

    #[test]
    fn secs_to_ns_is_floor_plus_rounded_fraction() {
        let reference = |secs: f64| {
            let whole = secs.floor();
            whole as i64 * 1_000_000_000 + ((secs - whole) * 1e9).round() as i64
        };
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let unit = (x >> 11) as f64 / (1u64 << 53) as f64;
            for secs in [
                unit,
                unit * 1e3,
                unit * 2e9,
                -unit * 2e9,
                unit * MAX_TIME_SECS as f64,
                (unit * 1e9).floor() + 0.5e-9,
            ] {
                assert_eq!(secs_to_ns(secs), reference(secs), "{secs:?}");
            }
        }
        for secs in [
            0.0,
            -0.0,
            0.5e-9,
            1.5e-9,
            2.5e-9,
            -0.5e-9,
            1_795_574_441.856_767,
            f64::NAN,
        ] {
            assert_eq!(secs_to_ns(secs), reference(secs), "{secs:?}");
        }
    }

    #[test]
    fn float_seconds_round_trip_through_ns() {
        for s in [
            1795574441.8563643,
            1795574441.8799298,
            0.5,
            1.0,
            1795000000.0,
            1e9 + 0.1,
        ] {
            assert_eq!(ns_to_secs(secs_to_ns(s)), s, "{s}");
        }
        let mut x = 1795574441.0f64;
        for _ in 0..100_000 {
            x += 0.000_123_456_7;
            assert_eq!(ns_to_secs(secs_to_ns(x)), x);
        }
    }
}
