//! `ProcAgent`: samples /proc/stat, /proc/meminfo, /proc/diskstats and
//! /proc/net/dev on absolute deadlines.
//!
//! The four files are opened once and re-read with one `pread` each at
//! offset 0 into a buffer sized at start (procfs fills a read as far as the
//! buffer allows, so one call returns the whole file; a buffer that comes
//! back full is doubled once and the read retried: the only allocation after
//! start-up, and it stops once the buffer fits). Parsing extracts only the
//! counters the dispatcher needs into a fixed-size [`ProcReading`], which is
//! pushed into the agent's ring. Nothing on this path locks, logs or
//! formats.
//!
//! Deadlines are absolute: sample k is due at `t0 + k·interval` on the
//! monotonic clock, whatever the previous sample cost. If the thread wakes
//! more than a whole interval late (suspended VM, SIGSTOP), the missed
//! deadlines are skipped and counted rather than sampled in a burst.
//!
//! The agent sleeps with `clock_nanosleep(TIMER_ABSTIME)` on the monotonic
//! clock: one syscall per sample and measurably cheaper than a futex park
//! with a timeout. Shutdown wakes it with [`wake_signal`] (a no-op handler
//! makes the sleep return EINTR); see [`wake`].

use super::kept::KeptFile;
use super::procfs::{self, CpuTicks, DiskFilter};
use super::AgentCounters;
use crate::clock::mono_ns;
use crate::ring::{Producer, PushError};
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::Thread;

/// Per-CPU counters kept for at most this many CPUs (the aggregate always
/// covers every CPU).
pub const MAX_CPUS: usize = 512;

/// Bits of [`NodeCounters::ok`]: which sources read and parsed.
pub mod source {
    /// /proc/stat
    pub const STAT: u8 = 1;
    /// /proc/meminfo
    pub const MEMINFO: u8 = 2;
    /// /proc/diskstats
    pub const DISKSTATS: u8 = 4;
    /// /proc/net/dev
    pub const NET_DEV: u8 = 8;
    /// All four.
    pub const ALL: u8 = 15;
}

/// The node's counters as read from the sources: what a reading and the
/// sample made of it share.
#[derive(Clone, Copy, Debug, Default)]
pub struct NodeCounters {
    /// Which sources succeeded ([`source`] bits).
    pub ok: u8,
    /// All CPUs together.
    pub cpu: CpuTicks,
    /// MemTotal, kB.
    pub mem_total_kb: u64,
    /// MemAvailable, kB.
    pub mem_available_kb: u64,
    /// Sectors read from whole disks, since boot.
    pub disk_read_sectors: u64,
    /// Sectors written to whole disks, since boot.
    pub disk_write_sectors: u64,
    /// Bytes received on all interfaces, since boot.
    pub net_rx_bytes: u64,
    /// Bytes sent on all interfaces, since boot.
    pub net_tx_bytes: u64,
    /// The job's cgroup (all `None` without one).
    pub cgroup: super::cgroup::CgroupReading,
}

/// One raw reading of the four sources, as parsed (private to the agent).
#[derive(Clone, Copy, Debug)]
pub struct ProcReading {
    /// The node's counters.
    pub node: NodeCounters,
    /// Number of valid entries in `per_cpu`.
    pub ncpu: u16,
    /// Each CPU's ticks, by index.
    pub per_cpu: [CpuTicks; MAX_CPUS],
}

impl Default for ProcReading {
    fn default() -> Self {
        Self {
            node: NodeCounters::default(),
            ncpu: 0,
            per_cpu: [CpuTicks::default(); MAX_CPUS],
        }
    }
}

/// Per-CPU busy ‰ value meaning "no figure": no previous reading, or a
/// window too short to measure.
pub const NO_PERMILLE: u16 = u16::MAX;

/// What the proc agent hands to the dispatcher: raw node counters (the
/// dispatcher computes RHAPSODY's deltas) and the CPU window since the
/// previous measured sample (computed here, where the per-CPU ticks live).
#[derive(Clone, Copy, Debug)]
pub struct ProcSample {
    /// Sample number, from 0.
    pub seq: u64,
    /// The absolute deadline it was due at (monotonic ns).
    pub deadline_ns: u64,
    /// When the thread woke for it (monotonic ns).
    pub wake_ns: u64,
    /// When its reads and parses finished (monotonic ns).
    pub done_ns: u64,
    /// The node's counters, as read.
    pub node: NodeCounters,
    /// Number of valid entries in `per_cpu_permille`.
    pub ncpu: u16,
    /// The ticks the CPU figures are computed from: busy and total ticks
    /// since the base reading, summed over the CPUs (`cpu_percent` is busy
    /// over total, psutil's figure). `None` when the window is not
    /// measurable (see `crate::agent::window`), and then every entry of
    /// `per_cpu_permille` is [`NO_PERMILLE`].
    pub cpu_window: Option<CpuTicks>,
    /// Busy ‰ (tenths of a percent, rounded as psutil rounds) of each CPU
    /// over the same window; [`NO_PERMILLE`] without one.
    pub per_cpu_permille: [u16; MAX_CPUS],
}

impl Default for ProcSample {
    fn default() -> Self {
        Self {
            seq: 0,
            deadline_ns: 0,
            wake_ns: 0,
            done_ns: 0,
            node: NodeCounters::default(),
            ncpu: 0,
            cpu_window: None,
            per_cpu_permille: [NO_PERMILLE; MAX_CPUS],
        }
    }
}

/// Busy ‰ of a window's ticks, rounded like `round1` of the percent.
#[inline]
pub fn permille(window: &CpuTicks) -> u16 {
    (window.share() * 10.0).round() as u16
}

/// What became of a sample's CPU window (see `crate::agent::window`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuWindow {
    /// Measured: the sample carries its figures, and its reading is the
    /// next base.
    Measured,
    /// Too short (in time or in ticks): no figures, and the base stays, so
    /// that the next window covers this one too.
    Folded,
    /// No base to measure against (the warm-up reading, a changed number of
    /// CPUs, a counter that went backwards): no figures, and this reading
    /// becomes the base.
    Rebased,
    /// /proc/stat did not read: no figures, the base stays.
    Failed,
}

/// The reading a sample's CPU figures are measured against: the last one
/// that gave figures, or the warm-up reading. Both figures come from its
/// per-CPU deltas: `cpu_percent` is their busy sum over their total sum
/// (psutil's busy ticks over all ticks), `cpu_percent_per_core` each CPU's
/// own share. (The aggregate `cpu` line of /proc/stat is summed by the
/// kernel in a pass of its own, before the per-CPU lines: a tick that lands
/// between the two passes is in one and not the other, which is how a
/// window of a few ms read 100 % overall and 0 % on every core.) Only a
/// node with more CPUs than [`MAX_CPUS`] takes its overall figure from the
/// aggregate line.
///
/// A window is measured when it is long enough and has a tick per CPU (see
/// `crate::agent::window`), and when the CPUs' counters agree about it:
/// the node's share and the mean of the cores' shares differ by no more
/// than one tick per CPU can move a figure (100 / the window's ticks per
/// CPU). They differ by more when one CPU's counters lag the others': a
/// virtual CPU that its host did not run has no ticks at all for that
/// time, and gets them later, at once, as steal time. (Seen on a 2-vCPU VM
/// sharing its host: one CPU 0 ticks over 50 ms while the other had 5, and
/// 10 steal ticks the next 50 ms.) Such a window is folded into the next,
/// until the counters have caught up. A CPU that is offline (its line
/// missing, at either end of the window) is not covered: it reads 0.0 and
/// counts in neither figure.
#[derive(Debug)]
pub struct CpuBase {
    interval_ns: u64,
    /// Clock ticks a second (`USER_HZ`), what /proc/stat counts in.
    ticks_per_sec: f64,
    /// None before the warm-up reading.
    at_ns: Option<u64>,
    all: CpuTicks,
    ncpu: usize,
    per_cpu: Box<[CpuTicks; MAX_CPUS]>,
}

/// True when a CPU's line was there (an offline CPU reads all zero).
#[inline]
fn online(t: &CpuTicks) -> bool {
    t.total != 0
}

impl CpuBase {
    /// No base yet, for sampling every `interval_ns`.
    pub fn new(interval_ns: u64) -> Self {
        Self {
            interval_ns,
            ticks_per_sec: rustix::param::clock_ticks_per_second().max(1) as f64,
            at_ns: None,
            all: CpuTicks::default(),
            ncpu: 0,
            per_cpu: Box::new([CpuTicks::default(); MAX_CPUS]),
        }
    }

    fn rebase(&mut self, r: &ProcReading, at_ns: u64) {
        let n = r.ncpu as usize;
        self.per_cpu[..n].copy_from_slice(&r.per_cpu[..n]);
        self.ncpu = n;
        self.all = r.node.cpu;
        self.at_ns = Some(at_ns);
    }

    /// Fills `s`'s CPU figures for reading `r`, taken at `at_ns`
    /// (monotonic), and moves the base as the window's fate says.
    #[inline]
    pub fn measure(&mut self, r: &ProcReading, at_ns: u64, s: &mut ProcSample) -> CpuWindow {
        let n = r.ncpu as usize;
        s.cpu_window = None;
        s.per_cpu_permille[..n].fill(NO_PERMILLE);
        if r.node.ok & source::STAT == 0 {
            return CpuWindow::Failed;
        }
        let Some(since) = self.at_ns else {
            self.rebase(r, at_ns);
            return CpuWindow::Rebased;
        };
        if n == 0 || n != self.ncpu {
            self.rebase(r, at_ns);
            return CpuWindow::Rebased;
        }
        let mut sum = CpuTicks::default();
        let (mut covered, mut shares) = (0u64, 0.0f64);
        for (i, (cur, base)) in r.per_cpu[..n].iter().zip(&self.per_cpu[..n]).enumerate() {
            if !online(cur) || !online(base) {
                s.per_cpu_permille[i] = 0;
                continue;
            }
            let Some(d) = cur.delta_since(base) else {
                s.per_cpu_permille[..n].fill(NO_PERMILLE);
                self.rebase(r, at_ns);
                return CpuWindow::Rebased;
            };
            s.per_cpu_permille[i] = permille(&d);
            sum.add(&d);
            covered += 1;
            shares += d.share();
        }
        let window_ns = at_ns.saturating_sub(since);
        let window_ticks = window_ns as f64 / 1e9 * self.ticks_per_sec;
        if !super::window::long_enough(window_ns, self.interval_ns)
            || !super::window::enough_ticks(sum.total, covered)
            || !super::window::shares_agree(&sum, shares, covered, window_ticks)
        {
            s.per_cpu_permille[..n].fill(NO_PERMILLE);
            return CpuWindow::Folded;
        }
        if n >= MAX_CPUS {
            // More CPUs than the per-CPU lines kept: the aggregate line.
            match r.node.cpu.delta_since(&self.all) {
                Some(d) => sum = d,
                None => {
                    s.per_cpu_permille[..n].fill(NO_PERMILLE);
                    self.rebase(r, at_ns);
                    return CpuWindow::Rebased;
                }
            }
        }
        s.cpu_window = Some(sum);
        self.rebase(r, at_ns);
        CpuWindow::Measured
    }
}

impl ProcSample {
    /// Builds the sample for reading `r`, taken at `at_ns` (monotonic):
    /// its counters, and its CPU figures against `base`.
    #[inline]
    pub fn fill_from(&mut self, r: &ProcReading, base: &mut CpuBase, at_ns: u64) -> CpuWindow {
        self.node = r.node;
        self.ncpu = r.ncpu;
        base.measure(r, at_ns, self)
    }
}

/// The four /proc sources, open.
#[derive(Debug)]
pub struct ProcSources {
    stat: KeptFile,
    meminfo: KeptFile,
    diskstats: KeptFile,
    net_dev: KeptFile,
    disks: DiskFilter,
    cgroup: Option<super::cgroup::CgroupSources>,
}

impl ProcSources {
    /// Opens the four files and reads the whole-disk list from /sys/block.
    pub fn open() -> io::Result<Self> {
        Ok(Self {
            stat: KeptFile::open("/proc/stat")?,
            meminfo: KeptFile::open("/proc/meminfo")?,
            diskstats: KeptFile::open("/proc/diskstats")?,
            net_dev: KeptFile::open("/proc/net/dev")?,
            disks: DiskFilter::from_sys(),
            cgroup: None,
        })
    }

    /// Also reads the job's cgroup at each sample.
    pub fn with_cgroup(mut self, cg: Option<super::cgroup::CgroupSources>) -> Self {
        self.cgroup = cg;
        self
    }

    /// The whole disks counted.
    pub fn disks(&self) -> &DiskFilter {
        &self.disks
    }

    /// Reads and parses all four sources into `r`, setting `r.ok`.
    #[inline]
    pub fn read_into(&mut self, r: &mut ProcReading) {
        r.node.ok = 0;
        for s in [
            source::STAT,
            source::MEMINFO,
            source::DISKSTATS,
            source::NET_DEV,
        ] {
            self.read_source(s, r);
        }
        if let Some(cg) = self.cgroup.as_mut() {
            r.node.cgroup = cg.read();
        }
    }

    /// Reads and parses one source (a [`source`] bit) into `r`, setting its
    /// bit in `r.ok` on success.
    #[inline]
    pub fn read_source(&mut self, which: u8, r: &mut ProcReading) {
        match which {
            source::STAT => self.read_stat(r),
            source::MEMINFO => self.read_meminfo(r),
            source::DISKSTATS => self.read_diskstats(r),
            source::NET_DEV => self.read_net_dev(r),
            _ => {}
        }
    }

    #[inline]
    fn read_stat(&mut self, r: &mut ProcReading) {
        if let Ok(b) = self.stat.read() {
            // A CPU whose line is missing (offline) reads all zero, not
            // what it read last time.
            r.per_cpu[..r.ncpu as usize].fill(CpuTicks::default());
            if let Some(n) = procfs::parse_stat(b, &mut r.node.cpu, &mut r.per_cpu) {
                r.ncpu = n as u16;
                r.node.ok |= source::STAT;
            }
        }
    }

    #[inline]
    fn read_meminfo(&mut self, r: &mut ProcReading) {
        if let Ok(b) = self.meminfo.read() {
            if let Some((t, a)) = procfs::parse_meminfo(b) {
                r.node.mem_total_kb = t;
                r.node.mem_available_kb = a;
                r.node.ok |= source::MEMINFO;
            }
        }
    }

    #[inline]
    fn read_diskstats(&mut self, r: &mut ProcReading) {
        if let Ok(b) = self.diskstats.read() {
            if let Some((rd, wr)) = procfs::parse_diskstats(b, &self.disks) {
                r.node.disk_read_sectors = rd;
                r.node.disk_write_sectors = wr;
                r.node.ok |= source::DISKSTATS;
            }
        }
    }

    #[inline]
    fn read_net_dev(&mut self, r: &mut ProcReading) {
        if let Ok(b) = self.net_dev.read() {
            if let Some((rx, tx)) = procfs::parse_net_dev(b) {
                r.node.net_rx_bytes = rx;
                r.node.net_tx_bytes = tx;
                r.node.ok |= source::NET_DEV;
            }
        }
    }
}

/// The signal that interrupts an agent's sleep at shutdown (a real-time
/// signal, so it never collides with a user's SIGUSR1/2).
pub fn wake_signal() -> libc::c_int {
    libc::SIGRTMIN() + 4
}

/// Installs the no-op handler for [`wake_signal`] (once, before agents
/// start): no `SA_RESTART`, so the signal interrupts `clock_nanosleep`.
pub fn install_wake_handler() {
    crate::sys::interrupt_with(wake_signal());
}

/// Wakes the agent thread `t` from its sleep. The caller sets the stop flag
/// first and repeats this until the thread has exited: a signal that lands
/// between the flag check and the sleep is otherwise lost for one interval.
pub fn wake(t: &std::thread::JoinHandle<()>) {
    crate::sys::signal_thread(t, wake_signal());
}

/// Sleeps until the monotonic `deadline`; returns true if `stop` was set
/// meanwhile (checked before sleeping and after each wake-up: the stopper
/// sets it, then interrupts the sleep with [`wake_signal`]).
#[inline]
pub fn sleep_until(deadline: u64, stop: &AtomicBool) -> bool {
    let ts = rustix::time::Timespec {
        tv_sec: (deadline / 1_000_000_000) as i64,
        tv_nsec: (deadline % 1_000_000_000) as i64,
    };
    loop {
        if stop.load(Ordering::Acquire) {
            return true;
        }
        if rustix::thread::clock_nanosleep_absolute(rustix::time::ClockId::Monotonic, &ts).is_ok() {
            return stop.load(Ordering::Acquire);
        }
        // EINTR (a wake-up signal): re-check the stop flag, sleep again.
    }
}

/// The proc sampling thread's state.
#[derive(Debug)]
pub struct ProcAgent {
    sources: ProcSources,
    tx: Producer<ProcSample>,
    interval_ns: u64,
    counters: Arc<AgentCounters>,
    stop: Arc<AtomicBool>,
    dispatcher: Thread,
    reading: Box<ProcReading>,
    cpu: CpuBase,
    sample: Box<ProcSample>,
    /// Wake the dispatcher after this many samples (one second's worth).
    batch: u64,
    since_kick: u64,
    start_ns: Option<u64>,
}

impl ProcAgent {
    /// An agent that samples `sources` every `interval_ns` into `tx`, and
    /// wakes `dispatcher` after each `DRAIN_INTERVAL` of samples, or early
    /// when the ring is half full. Its first sample is the warm-up reading
    /// (no CPU figures): the second covers a whole interval.
    pub fn new(
        sources: ProcSources,
        tx: Producer<ProcSample>,
        interval_ns: u64,
        counters: Arc<AgentCounters>,
        stop: Arc<AtomicBool>,
        dispatcher: Thread,
    ) -> Self {
        Self {
            sources,
            tx,
            interval_ns,
            counters,
            stop,
            dispatcher,
            reading: Box::default(),
            cpu: CpuBase::new(interval_ns),
            sample: Box::default(),
            batch: (super::DRAIN_INTERVAL.as_nanos() as u64 / interval_ns.max(1)).max(1),
            since_kick: 0,
            start_ns: None,
        }
    }

    /// Samples on the grid `start_ns + k·interval` (shared with the GPU
    /// agent) instead of starting at the time [`ProcAgent::run`] is called.
    pub fn starting_at(mut self, start_ns: u64) -> Self {
        self.start_ns = Some(start_ns);
        self
    }

    /// Samples until `stop` is set, then takes one last sample so that the
    /// series reaches the end of the recording.
    pub fn run(mut self) {
        let interval = self.interval_ns;
        let mut deadline = self.start_ns.unwrap_or_else(mono_ns);
        let mut seq = 0u64;
        loop {
            let stopping = self.wait_until(deadline);
            let wake = mono_ns();
            self.sample(seq, deadline.min(wake), wake);
            seq += 1;
            if stopping {
                break;
            }
            deadline += interval;
            let now = mono_ns();
            if now >= deadline + interval {
                let missed = (now - deadline) / interval;
                deadline += missed * interval;
                AgentCounters::bump(&self.counters.deadlines_missed, missed);
            }
        }
        self.dispatcher.unpark();
    }

    /// Waits for `deadline`; returns true if asked to stop meanwhile.
    #[inline]
    fn wait_until(&self, deadline: u64) -> bool {
        sleep_until(deadline, &self.stop)
    }

    #[inline]
    fn sample(&mut self, seq: u64, deadline: u64, wake: u64) {
        let r = &mut *self.reading;
        self.sources.read_into(r);
        let done = mono_ns();
        let s = &mut *self.sample;
        s.fill_from(r, &mut self.cpu, done);
        s.seq = seq;
        s.deadline_ns = deadline;
        s.wake_ns = wake;
        s.done_ns = done;
        if r.node.ok != source::ALL || r.node.cgroup.failed != 0 {
            AgentCounters::bump(&self.counters.read_errors, 1);
            let failed = (!r.node.ok & source::ALL) | (r.node.cgroup.failed << 4);
            for (i, c) in self.counters.source_errors.iter().enumerate() {
                if failed & (1 << i) != 0 {
                    AgentCounters::bump(c, 1);
                }
            }
        }
        AgentCounters::bump(&self.counters.samples_taken, 1);
        if let Err(PushError::Full(_)) = self.tx.push(*s) {
            AgentCounters::bump(&self.counters.samples_dropped, 1);
        }
        self.since_kick += 1;
        if self.since_kick >= self.batch || self.tx.len() * 2 >= self.tx.capacity() {
            self.since_kick = 0;
            self.dispatcher.unpark();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IV: u64 = 100_000_000;

    /// A reading of `per` CPUs' (busy, total) ticks, with an aggregate
    /// line of `all` (as the kernel sums it, in a pass of its own).
    fn reading(all: (u64, u64), per: &[(u64, u64)]) -> ProcReading {
        let mut r = ProcReading::default();
        r.node.ok = source::ALL;
        r.node.cpu = CpuTicks {
            busy: all.0,
            total: all.1,
        };
        r.ncpu = per.len() as u16;
        for (slot, &(busy, total)) in r.per_cpu.iter_mut().zip(per) {
            *slot = CpuTicks { busy, total };
        }
        r
    }

    /// Sums the per-CPU lines into the aggregate, as a reading without the
    /// kernel's race.
    fn even(per: &[(u64, u64)]) -> ProcReading {
        let all = per.iter().fold((0, 0), |a, p| (a.0 + p.0, a.1 + p.1));
        reading(all, per)
    }

    fn per_core(s: &ProcSample) -> Vec<u16> {
        s.per_cpu_permille[..s.ncpu as usize].to_vec()
    }

    #[test]
    fn the_warm_up_reading_gives_no_figure_and_the_next_covers_an_interval() {
        let mut base = CpuBase::new(IV);
        let mut s = ProcSample::default();
        let w = s.fill_from(&even(&[(100, 1000), (100, 1000)]), &mut base, 0);
        assert_eq!(w, CpuWindow::Rebased);
        assert_eq!(s.cpu_window, None);
        assert_eq!(per_core(&s), vec![NO_PERMILLE; 2]);
        let w = s.fill_from(&even(&[(110, 1010), (100, 1010)]), &mut base, IV);
        assert_eq!(w, CpuWindow::Measured);
        assert_eq!(
            s.cpu_window,
            Some(CpuTicks {
                busy: 10,
                total: 20
            })
        );
        assert_eq!(per_core(&s), vec![1000, 0]);
    }

    #[test]
    fn a_tick_between_the_kernels_two_passes_moves_neither_figure_alone() {
        // The artefact: the aggregate line gained a busy tick that the
        // per-CPU lines had not (yet) counted; the old figure read 100 %
        // overall and 0 % on both cores. Both figures now come from the
        // per-CPU lines.
        let mut base = CpuBase::new(IV);
        let mut s = ProcSample::default();
        s.fill_from(
            &reading((200, 2000), &[(100, 1000), (100, 1000)]),
            &mut base,
            0,
        );
        let r = reading((211, 2021), &[(105, 1010), (105, 1010)]);
        assert_eq!(s.fill_from(&r, &mut base, IV), CpuWindow::Measured);
        assert_eq!(
            s.cpu_window,
            Some(CpuTicks {
                busy: 10,
                total: 20
            })
        );
        assert_eq!(per_core(&s), vec![500, 500]);
    }

    #[test]
    fn a_window_without_ticks_or_with_fewer_than_cpus_folds_into_the_next() {
        let mut base = CpuBase::new(IV);
        let mut s = ProcSample::default();
        s.fill_from(&even(&[(100, 1000), (100, 1000)]), &mut base, 0);
        // A whole interval, but no tick (a stalled counter).
        let r = even(&[(100, 1000), (100, 1000)]);
        assert_eq!(s.fill_from(&r, &mut base, IV), CpuWindow::Folded);
        assert_eq!(s.cpu_window, None);
        assert_eq!(per_core(&s), vec![NO_PERMILLE; 2]);
        // One busy tick for two CPUs: one tick would decide the figure.
        let r = even(&[(101, 1001), (100, 1000)]);
        assert_eq!(s.fill_from(&r, &mut base, 2 * IV), CpuWindow::Folded);
        assert_eq!(s.cpu_window, None);
        // Two ticks for two CPUs, measured from the same base.
        let r = even(&[(101, 1001), (100, 1001)]);
        assert_eq!(s.fill_from(&r, &mut base, 3 * IV), CpuWindow::Measured);
        assert_eq!(s.cpu_window, Some(CpuTicks { busy: 1, total: 2 }));
        assert_eq!(per_core(&s), vec![1000, 0]);
    }

    #[test]
    fn exactly_half_an_interval_is_measured_and_less_is_folded() {
        let mut base = CpuBase::new(IV);
        let mut s = ProcSample::default();
        s.fill_from(&even(&[(100, 100), (100, 100)]), &mut base, 0);
        let r = even(&[(105, 105), (100, 105)]);
        assert_eq!(s.fill_from(&r, &mut base, IV / 2 - 1), CpuWindow::Folded);
        assert_eq!(s.fill_from(&r, &mut base, IV / 2), CpuWindow::Measured);
        assert_eq!(s.cpu_window, Some(CpuTicks { busy: 5, total: 10 }));
        // The stop sample, 2 ms after the one before: no figure.
        let r = even(&[(106, 106), (100, 105)]);
        assert_eq!(
            s.fill_from(&r, &mut base, IV / 2 + 2_000_000),
            CpuWindow::Folded
        );
        assert_eq!(s.cpu_window, None);
    }

    #[test]
    fn a_counter_that_goes_backwards_gives_no_figure_and_moves_the_base() {
        let mut base = CpuBase::new(IV);
        let mut s = ProcSample::default();
        s.fill_from(&even(&[(100, 1000), (100, 1000)]), &mut base, 0);
        // CPU 1 went offline and back: its idle time comes from another
        // clock now, and its total went backwards.
        let r = even(&[(110, 1010), (100, 990)]);
        assert_eq!(s.fill_from(&r, &mut base, IV), CpuWindow::Rebased);
        assert_eq!(s.cpu_window, None);
        assert_eq!(per_core(&s), vec![NO_PERMILLE; 2]);
        // Measured from the new base.
        let r = even(&[(120, 1020), (105, 1000)]);
        assert_eq!(s.fill_from(&r, &mut base, 2 * IV), CpuWindow::Measured);
        assert_eq!(
            s.cpu_window,
            Some(CpuTicks {
                busy: 15,
                total: 20
            })
        );
        assert_eq!(per_core(&s), vec![1000, 500]);
    }

    #[test]
    fn a_cpu_whose_counters_lag_folds_the_window_until_they_catch_up() {
        // A virtual CPU its host did not run: no tick for 50 ms while the
        // other had 5, then its time at once, as steal.
        let mut base = CpuBase::new(IV / 2);
        let mut s = ProcSample::default();
        s.fill_from(&even(&[(100, 1000), (100, 1000)]), &mut base, 0);
        let r = even(&[(100, 1000), (105, 1005)]);
        assert_eq!(s.fill_from(&r, &mut base, IV / 2), CpuWindow::Folded);
        assert_eq!(s.cpu_window, None);
        assert_eq!(per_core(&s), vec![NO_PERMILLE; 2]);
        let r = even(&[(110, 1010), (105, 1010)]);
        assert_eq!(s.fill_from(&r, &mut base, IV), CpuWindow::Measured);
        assert_eq!(
            s.cpu_window,
            Some(CpuTicks {
                busy: 15,
                total: 20
            })
        );
        assert_eq!(per_core(&s), vec![1000, 500]);
    }

    #[test]
    fn an_offline_cpu_is_not_covered() {
        let mut base = CpuBase::new(IV);
        let mut s = ProcSample::default();
        s.fill_from(&even(&[(100, 1000), (0, 0), (100, 1000)]), &mut base, 0);
        let r = even(&[(105, 1010), (0, 0), (100, 1010)]);
        assert_eq!(s.fill_from(&r, &mut base, IV), CpuWindow::Measured);
        assert_eq!(s.cpu_window, Some(CpuTicks { busy: 5, total: 20 }));
        assert_eq!(per_core(&s), vec![500, 0, 0]);
        // Back online: not covered over the window it came back in.
        let r = even(&[(110, 1020), (7, 900), (100, 1020)]);
        assert_eq!(s.fill_from(&r, &mut base, 2 * IV), CpuWindow::Measured);
        assert_eq!(s.cpu_window, Some(CpuTicks { busy: 5, total: 20 }));
        let r = even(&[(115, 1030), (17, 910), (100, 1030)]);
        assert_eq!(s.fill_from(&r, &mut base, 3 * IV), CpuWindow::Measured);
        assert_eq!(
            s.cpu_window,
            Some(CpuTicks {
                busy: 15,
                total: 30
            })
        );
        assert_eq!(per_core(&s), vec![500, 1000, 0]);
    }

    #[test]
    fn a_changed_number_of_cpus_or_a_failed_read_gives_no_figure() {
        let mut base = CpuBase::new(IV);
        let mut s = ProcSample::default();
        s.fill_from(&even(&[(100, 1000), (100, 1000)]), &mut base, 0);
        let r = even(&[(110, 1010), (100, 1010), (0, 10)]);
        assert_eq!(s.fill_from(&r, &mut base, IV), CpuWindow::Rebased);
        assert_eq!(s.cpu_window, None);
        let mut failed = even(&[(120, 1020), (100, 1020), (0, 20)]);
        failed.node.ok &= !source::STAT;
        assert_eq!(s.fill_from(&failed, &mut base, 2 * IV), CpuWindow::Failed);
        assert_eq!(s.cpu_window, None);
        // The failed read is folded: measured against the base before it.
        let r = even(&[(130, 1030), (100, 1030), (10, 30)]);
        assert_eq!(s.fill_from(&r, &mut base, 3 * IV), CpuWindow::Measured);
        assert_eq!(
            s.cpu_window,
            Some(CpuTicks {
                busy: 30,
                total: 60
            })
        );
    }
}
