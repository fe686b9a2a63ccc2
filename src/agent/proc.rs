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

/// Per-CPU busy ‰ value meaning "no previous reading".
pub const NO_PERMILLE: u16 = u16::MAX;

/// What the proc agent hands to the dispatcher: raw node counters (the
/// dispatcher computes RHAPSODY's deltas) and per-CPU busy ‰ since the
/// previous sample (computed here, where the previous ticks live).
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
    /// Busy ‰ (tenths of a percent, rounded as psutil rounds) of each CPU
    /// since the previous sample; [`NO_PERMILLE`] without one.
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
            per_cpu_permille: [NO_PERMILLE; MAX_CPUS],
        }
    }
}

/// Busy ‰ between two per-CPU readings, rounded like `round1` of the percent.
#[inline]
pub fn permille(cur: &CpuTicks, prev: &CpuTicks) -> u16 {
    (cur.percent_since(prev) * 10.0).round() as u16
}

impl ProcSample {
    /// Builds the sample for reading `r`, given the previous per-CPU ticks
    /// (`prev_ncpu` of them; 0 when there is no previous reading).
    #[inline]
    pub fn fill_from(&mut self, r: &ProcReading, prev: &[CpuTicks], prev_ncpu: usize) {
        self.node = r.node;
        let n = r.ncpu as usize;
        self.ncpu = r.ncpu;
        let have_prev = r.node.ok & source::STAT != 0;
        for (i, (out, cur)) in self.per_cpu_permille[..n]
            .iter_mut()
            .zip(&r.per_cpu[..n])
            .enumerate()
        {
            *out = match prev.get(i) {
                Some(p) if have_prev && i < prev_ncpu => permille(cur, p),
                _ => NO_PERMILLE,
            };
        }
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
    prev_per_cpu: Box<[CpuTicks; MAX_CPUS]>,
    prev_ncpu: usize,
    sample: Box<ProcSample>,
    /// Wake the dispatcher after this many samples (one second's worth).
    batch: u64,
    since_kick: u64,
    start_ns: Option<u64>,
}

impl ProcAgent {
    /// An agent that samples `sources` every `interval_ns` into `tx`, and
    /// wakes `dispatcher` after each `DRAIN_INTERVAL` of samples, or early
    /// when the ring is half full. `baseline` is the reading taken when the
    /// sources were opened (the first sample's per-CPU values are relative
    /// to it).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        sources: ProcSources,
        baseline: &ProcReading,
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
            prev_per_cpu: Box::new(baseline.per_cpu),
            prev_ncpu: if baseline.node.ok & source::STAT != 0 {
                baseline.ncpu as usize
            } else {
                0
            },
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
        let s = &mut *self.sample;
        s.fill_from(r, &self.prev_per_cpu[..], self.prev_ncpu);
        if r.node.ok & source::STAT != 0 {
            let n = r.ncpu as usize;
            self.prev_per_cpu[..n].copy_from_slice(&r.per_cpu[..n]);
            self.prev_ncpu = n;
        }
        s.seq = seq;
        s.deadline_ns = deadline;
        s.wake_ns = wake;
        s.done_ns = mono_ns();
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
