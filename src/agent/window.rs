//! When a window is long enough to measure: the one rule every rate and
//! share tal writes follows.
//!
//! A sampled figure is a difference of two counter readings divided by
//! what the window between them can hold: CPU ticks, nanoseconds, bytes.
//! Over a window of a few milliseconds that difference is decided by one
//! event (a clock tick landing on one side of a read or the other), and the
//! figure reads 0 or 100 % whatever the node did. tal used to write such
//! figures: the first sample (a few ms after the warm-up read) and the last
//! one at stop (a few ms after the one before) read `cpu_percent: 100.0` on
//! an idle node. So a window gives a figure only when it is measurable:
//!
//! - **Time**: it spans at least half the sampling interval
//!   ([`long_enough`]: exactly half is enough, a nanosecond less is not).
//! - **Ticks**, for CPU shares (kernel clock ticks, `USER_HZ` = 100 a
//!   second): the CPUs it covers ticked at least once each on average
//!   ([`enough_ticks`]: total ticks ≥ CPUs). Over fewer, one tick decides
//!   the figure. The ticks counted are the window's own (the deltas the
//!   figure is computed from), so a counter that stalled or went backwards
//!   (a CPU taken offline and back) gives no figure either.
//! - **Agreement**, for CPU shares: the node's share and the mean of the
//!   CPUs' shares differ by no more than one tick per CPU can move a figure,
//!   100 / the window's ticks per CPU (`USER_HZ` × its seconds: its time,
//!   not the counters, which may lag; [`shares_agree`]). They differ by
//!   more when one CPU's counters lag the others' (a virtual CPU its host
//!   did not run, whose time comes later as steal): then neither figure
//!   describes the window.
//!
//! A window too short gives `null` (JSON null; `cpu_percent_per_core` is
//! then left out), never a number, and is **folded** into the next one: the
//! reading it would have been measured against stays the base, so the next
//! sample's figure covers both windows and nothing counted is lost (disk and
//! network bytes, job CPU time). Counters that went backwards cannot be
//! folded: their base moves on.
//!
//! Where it applies:
//!
//! - The per_node `cpu_percent` and `cpu_percent_per_core` (both rules; the
//!   proc agent decides, see `crate::agent::proc`, and both come from the
//!   same per-CPU deltas, so that they agree).
//! - The per_node disk and network byte counts and the job cgroup's
//!   `job_cpu_percent`, `job_disk_read_bytes`, `job_disk_write_bytes` (the
//!   time rule: they are byte and nanosecond counts, not ticks; see
//!   `crate::dispatch`).
//! - A task's `tal.TaskResourceUpdate` (the time rule: a task is sampled
//!   only once half a task interval has passed since its previous sample;
//!   its CPU time is read to the nanosecond, not in ticks; see
//!   `crate::agent::tasks`).
//! - The first sample of a recording is the warm-up reading: all of its
//!   deltas are null, and the second sample covers a whole interval. The
//!   last one, taken at stop, is usually closer than half an interval to
//!   the one before it: then its deltas are null (what happened in those
//!   few milliseconds is not counted).

use super::procfs::CpuTicks;

/// True when a window of `window_ns` is long enough to measure at sampling
/// interval `interval_ns`: at least half of it.
#[inline]
pub fn long_enough(window_ns: u64, interval_ns: u64) -> bool {
    u128::from(window_ns) * 2 >= u128::from(interval_ns)
}

/// True when `total_ticks` (the window's ticks, summed over the `ncpu`
/// CPUs it covers) are enough for a CPU share: at least one a CPU. No CPUs
/// covered is never enough.
#[inline]
pub fn enough_ticks(total_ticks: u64, ncpu: u64) -> bool {
    ncpu > 0 && total_ticks >= ncpu
}

/// True when the node's share of a window's ticks (`sum`, over `ncpu`
/// CPUs) and the mean of the CPUs' own shares (`shares`, their sum, in %)
/// differ by no more than one tick per CPU can move a figure: 100 /
/// `ticks_per_cpu`, the window's length in clock ticks (`USER_HZ` × its
/// seconds; the time, not the counters, which may lag). They differ by more
/// only when the CPUs' counters disagree about the window.
#[inline]
pub fn shares_agree(sum: &CpuTicks, shares: f64, ncpu: u64, ticks_per_cpu: f64) -> bool {
    if ncpu == 0 || sum.total == 0 || ticks_per_cpu <= 0.0 {
        return false;
    }
    let mean = shares / ncpu as f64;
    (sum.share() - mean).abs() <= 100.0 / ticks_per_cpu + 1e-9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_half_an_interval_is_long_enough_and_a_nanosecond_less_is_not() {
        assert!(long_enough(50_000_000, 100_000_000));
        assert!(!long_enough(49_999_999, 100_000_000));
        assert!(long_enough(100_000_000, 100_000_000));
        // An odd interval: half of 3 ns is 1.5 ns.
        assert!(!long_enough(1, 3));
        assert!(long_enough(2, 3));
        assert!(!long_enough(0, 1));
        // No overflow at the extremes.
        assert!(long_enough(u64::MAX, u64::MAX));
        assert!(!long_enough(u64::MAX / 2, u64::MAX));
    }

    #[test]
    fn a_cpu_share_needs_a_tick_per_cpu() {
        assert!(!enough_ticks(0, 2));
        assert!(!enough_ticks(1, 2));
        assert!(enough_ticks(2, 2));
        assert!(enough_ticks(1, 1));
        assert!(!enough_ticks(0, 0));
        assert!(!enough_ticks(5, 0));
    }

    #[test]
    fn shares_agree_within_a_tick_per_cpu() {
        let t = |busy, total| CpuTicks { busy, total };
        // Equal ticks on both CPUs: the node's share is the mean.
        assert!(shares_agree(&t(5, 10), 100.0 + 0.0, 2, 5.0));
        // One CPU a tick behind: 5 of 9 is 55.6 against a mean of 50,
        // within 100 / 5.
        assert!(shares_agree(&t(5, 9), 100.0 + 0.0, 2, 5.0));
        // A virtual CPU that did not tick at all (its host did not run
        // it): 100 % against a mean of 50.
        assert!(!shares_agree(&t(5, 5), 100.0 + 0.0, 2, 5.0));
        // The same over a window of 2.85 ticks, which the counters of the
        // CPU that ran make look like 2 a CPU: the window's time decides.
        assert!(!shares_agree(&t(3, 3), 100.0 + 0.0, 2, 2.85));
        assert!(shares_agree(&t(3, 3), 100.0 + 0.0, 2, 1.9));
        // Lagging by 5 of 20: 75 against 50, one tick moves 5.
        assert!(!shares_agree(&t(15, 20), 100.0 + 0.0, 2, 20.0));
        assert!(!shares_agree(&t(0, 0), 0.0, 2, 5.0));
        assert!(!shares_agree(&t(1, 1), 100.0, 0, 5.0));
        assert!(!shares_agree(&t(1, 1), 100.0, 1, 0.0));
    }
}
