//! Clocks: a monotonic clock for deadlines and deltas, wall-clock time for
//! output, and the anchor that maps one to the other.
//!
//! The sampler stores only monotonic ticks. The dispatcher takes a fresh
//! (wall, monotonic) anchor once per batch and converts every reading of the
//! batch with it, so a wall-clock step (NTP, an admin) moves later batches
//! but never the spacing of samples within the log's deltas.
#![allow(unsafe_code)]

/// Nanoseconds of `CLOCK_MONOTONIC`.
#[inline]
pub fn mono_ns() -> u64 {
    read(libc::CLOCK_MONOTONIC) as u64
}

/// Nanoseconds since the Unix epoch (`CLOCK_REALTIME`).
#[inline]
pub fn wall_ns() -> i64 {
    read(libc::CLOCK_REALTIME)
}

#[inline]
fn read(clock: libc::clockid_t) -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clocks used here exist
    // on every Linux, so the call cannot fail.
    unsafe { libc::clock_gettime(clock, &mut ts) };
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

/// Nanoseconds to float seconds, the JSONL time unit.
#[inline]
pub fn ns_to_secs(ns: i64) -> f64 {
    ns as f64 / 1e9
}
