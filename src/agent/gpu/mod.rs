//! `GpuAgent`: samples NVIDIA GPUs through NVML on the proc agent's
//! deadlines, on its own thread (NVML calls can stall for milliseconds and
//! must never delay /proc sampling).
//!
//! **Loading and choosing devices** (`open.rs`): NVML is opened at run
//! time and the devices the job can see are chosen and numbered as its
//! CUDA runtime numbers them; a node without a usable NVML records
//! normally, with the reason on stderr and the GPU fields null.
//!
//! The rest, here, is one piece past 1,000 lines with its tests: the poll,
//! the back-fill, the energy integral and the stop-and-retry of a failing
//! device all work on each device's one state ([`GpuSources`]' devices)
//! in one order of calls per poll, which is what the cost figures below
//! were measured on.
//!
//! **What a poll costs, and why it is built this way.** On a real H200
//! (driver 580; figures in docs/performance.md) every query tal needs costs
//! 2–12 µs of CPU, except two: one C call of `nvmlDeviceGetSamples` costs
//! about 1.4 ms whatever it returns (0, 1 or 71 samples), and the energy
//! counter (`nvmlDeviceGetTotalEnergyConsumption`, or `GetFieldValues` with
//! an energy field) about 4 ms. The first design called `GetSamples` four
//! times per poll (a count query and a fill, for GPU and for memory
//! utilisation): 5.4 ms of CPU per device per poll, 37x the /proc floor.
//! So the 10 Hz path now makes only the cheap calls, one each per device:
//! `GetUtilizationRates` (GPU and memory utilisation), `GetMemoryInfo_v2`,
//! `GetPowerUsage`, `GetTemperature`, `GetClockInfo(SM)` and
//! `GetComputeRunningProcesses_v3` (a buffer kept between polls, so one C
//! call, not a count query and a fill): about 23 µs on the H200. The last
//! of them (5.1 µs) is made only when the device's memory in use has
//! changed since the previous one, or a second after it
//! ([`PROCS_REFRESH_NS`]): measured side by side with the stub
//! (`GPU_STUB=4 scripts/bench-ab.sh`, both orders), the GPU thread costs
//! 0.92–0.94 of what it did with the call on every poll, the whole agent
//! 0.94–0.96.
//!
//! **Fresh utilisation.** The driver takes a utilisation sample every
//! ~167 ms on an H200, each with its own timestamp, and keeps about 12 s of
//! them; `GetUtilizationRates` returns the driver's current figure, which
//! at 10 Hz repeats between samples and may average over up to 1 s. The
//! per-sample values are therefore back-filled: every few seconds one device
//! gets one `GetSamples(GPU_UTILIZATION, last_seen)` call into a buffer
//! sized once ([`BACKFILL_MAX`] samples; no count query), and its new
//! samples, with the driver's own timestamps mapped onto tal's clock, go to
//! the log as a [`Backfill`]. The period is chosen from the call's measured
//! CPU cost so that the back-fill costs at most [`BACKFILL_BUDGET_NS`] per
//! device and poll, within [`BACKFILL_MIN_EVERY_NS`] and
//! [`BACKFILL_MAX_EVERY_NS`] (the driver's buffer must not wrap between
//! two calls): on the H200, 1.4 ms every 10 s, 14 µs per poll (the first
//! version, at a 20 µs budget and every 7 s, measured 48.9 µs per device
//! and poll beyond the wake-up against the 50 µs budget: too close).
//! Devices take turns, so one poll never pays for several, and a back-fill
//! runs half an interval after its poll, never when the proc sampler is
//! due. At stop every device gets a last back-fill, so the whole run is
//! covered.
//!
//! What this gives: live (`tal subscribe`, the live OTLP push) each
//! `per_gpu` event carries the driver's current figure (`gpu_samples`
//! null). In the JSONL, `tal convert` replaces it with the mean of the
//! driver samples taken in that poll's own interval (`gpu_samples` says how
//! many, `gpu_percent_age_ms` how old the newest is); a poll in whose
//! interval the driver took no sample says so with `gpu_samples: 0` and
//! the previous sample's value and age, never as a fresh value (see
//! `crate::convert::gpufill`). Where the driver lacks `GetSamples` (or
//! says NOT_SUPPORTED), or after the last back-fill of a log cut short by a
//! crash, the current figure stays, with `gpu_samples` null.
//!
//! **Energy.** Each device's energy is the power readings (1.6 µs each)
//! integrated over the polls (trapezoids between consecutive good
//! readings, also across an outage), in joules since the device's first
//! poll: `gpu_energy_joules` on every `per_gpu` event. The 4 ms energy
//! counter is never called.
//!
//! **Failures.** A query a device does not support is probed once at start
//! and never asked again (its field stays null). Any other error stops the
//! device: one line on stderr, and it is retried with backoff
//! ([`RETRY_FIRST_NS`], doubling up to [`RETRY_MAX_NS`]) until it answers
//! again, which is said once too. Errors are counted per device
//! (`agent_gpu_errors`), stops in `agent_gpu_devices_disabled`; the other
//! devices go on.
//!
//! Per poll and device the agent also times the device's NVML calls
//! together (`nvml_latency_us`, also kept as an HDR histogram by the
//! dispatcher). It hands a fixed-size [`GpuSample`] per poll to the
//! dispatcher, which pairs it with the proc sample of the same deadline:
//! one `per_gpu` `ResourceUpdate` per device and the `per_node`
//! `gpu_percent` (max over devices).
#![allow(unsafe_code)]

mod open;

use crate::clock::{mono_ns, thread_cpu_ns, wall_ns};
use crate::ring::{Consumer, Producer, PushError};
use nvml_wrapper::enum_wrappers::device::{Clock, TemperatureSensor};
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::{Device, Nvml};
use nvml_wrapper_sys::bindings as sys;
pub use open::{library_path, GpuSelection};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// Devices one agent samples at most.
pub const MAX_GPUS: usize = 64;

/// Processes on GPUs reported per poll at most (all devices together).
pub const MAX_GPU_PROCS: usize = 64;

/// Ancestors kept per GPU process (parent first).
pub const MAX_ANCESTORS: usize = 8;

/// The library opened by default.
pub const NVML_LIBRARY: &str = "libnvidia-ml.so.1";

/// Driver samples one back-fill call can take (the NVML buffer is this
/// size, allocated once; an H200 keeps 71).
pub const BACKFILL_MAX: usize = 256;

/// What the back-fill may cost per device and poll, in CPU ns (amortised).
pub const BACKFILL_BUDGET_NS: u64 = 12_000;

/// The back-fill of a device runs at most this often…
pub const BACKFILL_MIN_EVERY_NS: u64 = 1_000_000_000;

/// …and at least this often (an H200 keeps 71 samples, 11.9 s: a poll
/// late by a whole second still finds every sample since the last call).
pub const BACKFILL_MAX_EVERY_NS: u64 = 10_000_000_000;

/// A stopped device is tried again after this long, then twice as long
/// each time…
pub const RETRY_FIRST_NS: u64 = 250_000_000;

/// …up to this.
pub const RETRY_MAX_NS: u64 = 30_000_000_000;

/// What one device gave in one poll. `None`: not supported, or not read.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GpuDeviceReading {
    /// The device answered this poll (false while it is stopped).
    pub ok: bool,
    /// GPU utilisation, %: the driver's current figure
    /// (`nvmlDeviceGetUtilizationRates`).
    pub util_percent: Option<f32>,
    /// Memory-controller utilisation, %.
    pub mem_util_percent: Option<f32>,
    /// Device memory used, bytes.
    pub mem_used: Option<u64>,
    /// Device memory total, bytes.
    pub mem_total: Option<u64>,
    /// Power draw, mW.
    pub power_mw: Option<u32>,
    /// Energy since the device's first poll, J (power integrated over the
    /// polls).
    pub energy_j: Option<f64>,
    /// GPU temperature, °C.
    pub temp_c: Option<u32>,
    /// SM clock, MHz.
    pub sm_clock_mhz: Option<u32>,
    /// Time spent in this device's NVML calls this poll, ns.
    pub latency_ns: u64,
}

/// One driver utilisation sample.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct UtilSample {
    /// When the driver took it, on tal's monotonic clock, ns.
    pub mono_ns: u64,
    /// GPU utilisation, %.
    pub percent: f32,
}

/// One back-fill: a device's driver samples newer than the previous
/// back-fill's, as one `GetSamples` call returned them.
#[derive(Debug, Clone, Copy)]
pub struct Backfill {
    /// The device's `gpu_id`.
    pub gpu: u32,
    /// When the call was made (monotonic ns).
    pub fetched_ns: u64,
    /// Every driver sample up to this time (monotonic ns) is known once this
    /// back-fill is: the newest sample's time, or the call's time at stop.
    pub covers_to_ns: u64,
    /// Number of valid entries in `samples`.
    pub n: u16,
    /// The samples, oldest first.
    pub samples: [UtilSample; BACKFILL_MAX],
}

impl Default for Backfill {
    fn default() -> Self {
        Self {
            gpu: 0,
            fetched_ns: 0,
            covers_to_ns: 0,
            n: 0,
            samples: [UtilSample::default(); BACKFILL_MAX],
        }
    }
}

/// One compute process on a device, with its ancestors (for per-task
/// attribution by the task's pid).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GpuProcReading {
    /// The device's `gpu_id`.
    pub gpu: u32,
    /// The process.
    pub pid: u32,
    /// Device memory it uses, bytes.
    pub used_bytes: u64,
    /// How many entries of `ancestors` are valid.
    pub nanc: u8,
    /// Parent, grandparent, … (nearest first).
    pub ancestors: [u32; MAX_ANCESTORS],
}

/// The GPU agent's side of its polls' rings: polls go out boxed, and the
/// dispatcher sends the boxes back once it has written them, so that per
/// poll only a pointer moves. (A [`GpuSample`] has room for [`MAX_GPUS`]
/// devices and [`MAX_GPU_PROCS`] processes, about 11 KB, which was copied
/// into a ring, out of it and through the dispatcher's queue: measured
/// side by side with one stub GPU, the whole agent costs 0.955–0.997 of
/// what it did with the copies, on a 2-core VM.)
#[derive(Debug)]
pub struct PollsOut {
    /// Polls, to the dispatcher.
    pub polls: Producer<Box<GpuSample>>,
    /// Boxes the dispatcher is done with.
    pub free: Consumer<Box<GpuSample>>,
}

/// The dispatcher's side of the GPU agent's polls' rings (see
/// [`PollsOut`]).
#[derive(Debug)]
pub struct PollsIn {
    /// Polls, from the GPU agent.
    pub polls: Consumer<Box<GpuSample>>,
    /// Boxes given back.
    pub free: Producer<Box<GpuSample>>,
}

/// The rings of [`PollsOut`] and [`PollsIn`], `capacity` polls each.
pub fn poll_rings(capacity: usize) -> (PollsOut, PollsIn) {
    let (tx, rx) = crate::ring::channel(capacity);
    let (free_tx, free_rx) = crate::ring::channel(capacity);
    (
        PollsOut {
            polls: tx,
            free: free_rx,
        },
        PollsIn {
            polls: rx,
            free: free_tx,
        },
    )
}

/// One poll of every device, as handed to the dispatcher.
#[derive(Debug, Clone, Copy)]
pub struct GpuSample {
    /// The poll's deadline (monotonic ns), on the proc agent's grid.
    pub deadline_ns: u64,
    /// When the poll finished (monotonic ns).
    pub done_ns: u64,
    /// Number of valid entries in `dev`.
    pub ndev: u8,
    /// Each device, by `gpu_id`.
    pub dev: [GpuDeviceReading; MAX_GPUS],
    /// The GPU thread's CPU time so far, ns.
    pub thread_cpu_ns: u64,
    /// Number of valid entries in `procs`.
    pub nproc: u16,
    /// The compute processes on the devices that answered.
    pub procs: [GpuProcReading; MAX_GPU_PROCS],
}

impl Default for GpuSample {
    fn default() -> Self {
        Self {
            deadline_ns: 0,
            done_ns: 0,
            ndev: 0,
            dev: [GpuDeviceReading::default(); MAX_GPUS],
            thread_cpu_ns: 0,
            nproc: 0,
            procs: [GpuProcReading::default(); MAX_GPU_PROCS],
        }
    }
}

/// Counters the GPU agent updates (relaxed atomics, one writer).
#[derive(Debug)]
pub struct GpuCounters {
    /// Polls taken.
    pub polls: AtomicU64,
    /// Polls dropped because the ring was full.
    pub dropped: AtomicU64,
    /// Deadlines skipped because a poll ran more than an interval late.
    pub deadlines_missed: AtomicU64,
    /// Times a device stopped answering.
    pub devices_disabled: AtomicU64,
    /// NVML errors, per `gpu_id`.
    pub errors: [AtomicU64; MAX_GPUS],
    /// Back-fill calls made.
    pub backfills: AtomicU64,
    /// Their CPU time, ns.
    pub backfill_cpu_ns: AtomicU64,
    /// Back-fills lost because the ring was full.
    pub backfills_dropped: AtomicU64,
}

impl Default for GpuCounters {
    fn default() -> Self {
        Self {
            polls: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            deadlines_missed: AtomicU64::new(0),
            devices_disabled: AtomicU64::new(0),
            errors: std::array::from_fn(|_| AtomicU64::new(0)),
            backfills: AtomicU64::new(0),
            backfill_cpu_ns: AtomicU64::new(0),
            backfills_dropped: AtomicU64::new(0),
        }
    }
}

/// A device as the job names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuInfo {
    /// The index the job's CUDA runtime gives it.
    pub gpu_id: u32,
    /// NVML's UUID (`GPU-…` or `MIG-…`).
    pub uuid: String,
    /// The product name.
    pub name: String,
    /// PCI bus id (`0000:19:00.0`), empty when unknown.
    pub pci_bus_id: String,
}

/// Which optional queries a device answers (probed once at start).
#[derive(Debug, Clone, Copy)]
struct Supports {
    samples: bool,
    rates: bool,
    memory: bool,
    power: bool,
    temperature: bool,
    clock: bool,
    processes: bool,
}

/// NVML device handles are plain pointers that NVML allows from any thread.
#[derive(Debug, Clone, Copy)]
struct Handle(sys::nvmlDevice_t);
// SAFETY: NVML is thread-safe; a handle is an opaque id valid until
// nvmlShutdown, which runs when `GpuSources` (which owns the library) drops.
unsafe impl Send for Handle {}

/// A stopped device: when it stopped and when it is tried next.
#[derive(Debug, Clone, Copy)]
struct Down {
    since_ns: u64,
    retry_at_ns: u64,
    backoff_ns: u64,
    errors: u64,
}

impl Down {
    /// A device that failed (its first error) at `now`.
    fn new(now: u64) -> Self {
        Self {
            since_ns: now,
            retry_at_ns: now + RETRY_FIRST_NS,
            backoff_ns: RETRY_FIRST_NS,
            errors: 1,
        }
    }
}

#[derive(Debug)]
struct Dev {
    info: GpuInfo,
    handle: Handle,
    supports: Supports,
    down: Option<Down>,
    /// The newest driver sample seen (the driver's µs timestamp).
    last_seen_util: u64,
    /// When the next back-fill is due, and how often (monotonic ns).
    backfill_at_ns: u64,
    backfill_every_ns: u64,
    /// The back-fill call's CPU cost, ns (moving average).
    backfill_cost_ns: u64,
    /// Energy so far, J, and the previous power reading (monotonic ns, W).
    energy_j: f64,
    last_power: Option<(u64, f64)>,
    /// The compute processes of the last `GetComputeRunningProcesses`
    /// call, the device's memory in use when it was made, and when
    /// (monotonic ns): see [`PROCS_REFRESH_NS`].
    procs_last: Vec<GpuProcReading>,
    procs_mem_used: Option<u64>,
    procs_at_ns: u64,
}

/// The longest a device's process list is reused without asking the
/// driver again. A poll asks for it only when the device's memory in use
/// (`GetMemoryInfo_v2`, asked on every poll) has changed since the last
/// call, or this long after it: a compute process cannot start (its CUDA
/// context takes memory), end, or grow or shrink without changing the
/// device's memory in use, and on an idle device or under a steady
/// training job (a caching allocator) that memory holds still for
/// minutes. That call costs 5.1 µs of CPU on an H200, of ~23 µs for the
/// poll's six. Only two processes trading exactly equal amounts between
/// two polls would go unseen, for at most this long.
pub const PROCS_REFRESH_NS: u64 = 1_000_000_000;

/// NVML, open, with the devices to sample.
pub struct GpuSources {
    devs: Vec<Dev>,
    interval_ns: u64,
    samples_buf: Vec<sys::nvmlSample_t>,
    procs_buf: Vec<sys::nvmlProcessInfo_t>,
    /// This poll's processes (all devices), and the ancestors of the
    /// processes seen in the previous poll (pid → ancestors).
    procs: Vec<GpuProcReading>,
    ancestry: Vec<GpuProcReading>,
    disabled_at_open: u64,
    backfill: Box<Backfill>,
    // Dropped last (after the handles are no longer used): nvmlShutdown.
    nvml: Nvml,
}

impl std::fmt::Debug for GpuSources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuSources")
            .field("devs", &self.devs)
            .finish_non_exhaustive()
    }
}

fn c_err<T>(rc: sys::nvmlReturn_t, v: T) -> Result<T, NvmlError> {
    if rc == sys::nvmlReturn_enum_NVML_SUCCESS {
        Ok(v)
    } else {
        Err(NvmlError::from(rc))
    }
}

impl GpuSources {
    /// Finds which queries each device answers, and primes the back-fill:
    /// one `GetSamples` call per device, which both marks the newest sample
    /// already taken (so that the first back-fill holds only samples taken
    /// after start) and measures what the call costs on this driver.
    fn probe(&mut self) {
        let mut scratch = GpuDeviceReading::default();
        for i in 0..self.devs.len() {
            // One poll: NOT_SUPPORTED answers turn their query off.
            let mut res = self.read_device(i, &mut scratch);
            if res.is_ok() && self.devs[i].supports.samples {
                let t0 = thread_cpu_ns();
                res = match self.fetch_samples(i) {
                    Ok(n) => {
                        let d = &mut self.devs[i];
                        // The newest sample taken before start comes again
                        // with the first back-fill: the value the first
                        // polls carry until the driver's next sample.
                        if n > 0 {
                            d.last_seen_util = self.samples_buf[..n]
                                .iter()
                                .map(|s| s.timeStamp)
                                .max()
                                .unwrap_or(0)
                                .saturating_sub(1);
                        }
                        d.backfill_cost_ns = thread_cpu_ns().saturating_sub(t0);
                        Ok(())
                    }
                    Err(e) if switched_off(&e) => {
                        self.devs[i].supports.samples = false;
                        Ok(())
                    }
                    Err(e) => Err(("nvmlDeviceGetSamples", e)),
                };
            }
            let d = &mut self.devs[i];
            // Energy counts from the first real poll.
            d.energy_j = 0.0;
            d.last_power = None;
            if let Err((call, e)) = res {
                d.down = Some(Down::new(mono_ns()));
                self.disabled_at_open += 1;
                eprintln!(
                    "tal: GPU {} ({}): {call} failed: {e}; retrying with backoff",
                    d.info.gpu_id, d.info.uuid
                );
            }
        }
        self.procs.clear();
    }

    /// Sets the back-fill schedule for polls every `interval_ns` from
    /// `start_ns`: each device's period from its measured call cost, the
    /// devices' first calls spread over one period.
    fn schedule(&mut self, start_ns: u64, interval_ns: u64) {
        self.interval_ns = interval_ns.max(1);
        let n = self.devs.len() as u64;
        for (k, d) in self.devs.iter_mut().enumerate() {
            d.backfill_every_ns = backfill_every(d.backfill_cost_ns, self.interval_ns);
            d.backfill_at_ns = start_ns + d.backfill_every_ns * (k as u64 + 1) / n.max(1);
        }
    }

    /// Polls device `i` into `out`; the call that failed, if one did.
    fn poll_device(
        &mut self,
        i: usize,
        out: &mut GpuDeviceReading,
    ) -> Result<(), (&'static str, NvmlError)> {
        *out = GpuDeviceReading::default();
        let t0 = mono_ns();
        let res = self.read_device(i, out);
        out.latency_ns = mono_ns().saturating_sub(t0);
        out.ok = res.is_ok();
        res
    }

    /// The cheap per-poll queries of device `i` (see the module doc).
    fn read_device(
        &mut self,
        i: usize,
        out: &mut GpuDeviceReading,
    ) -> Result<(), (&'static str, NvmlError)> {
        let handle = self.devs[i].handle.0;
        // SAFETY: a handle of this `nvml`, which outlives the call.
        let dev = unsafe { Device::new(handle, &self.nvml) };
        let d = &mut self.devs[i];
        // NOT_SUPPORTED (or a missing function) switches a query off for
        // good; anything else is the device failing.
        macro_rules! query {
            ($flag:ident, $call:literal, $e:expr, |$v:ident| $use:expr) => {
                if d.supports.$flag {
                    match $e {
                        Ok($v) => $use,
                        Err(e) if switched_off(&e) => d.supports.$flag = false,
                        Err(e) => return Err(($call, e)),
                    }
                }
            };
        }
        query!(
            rates,
            "nvmlDeviceGetUtilizationRates",
            dev.utilization_rates(),
            |u| {
                out.util_percent = Some(u.gpu as f32);
                out.mem_util_percent = Some(u.memory as f32);
            }
        );
        query!(
            memory,
            "nvmlDeviceGetMemoryInfo_v2",
            dev.memory_info(),
            |m| {
                out.mem_used = Some(m.used);
                out.mem_total = Some(m.total);
            }
        );
        query!(power, "nvmlDeviceGetPowerUsage", dev.power_usage(), |p| {
            out.power_mw = Some(p);
            let (now, watts) = (mono_ns(), f64::from(p) / 1000.0);
            if let Some((t, w)) = d.last_power {
                d.energy_j += (w + watts) / 2.0 * now.saturating_sub(t) as f64 / 1e9;
            }
            d.last_power = Some((now, watts));
            out.energy_j = Some(d.energy_j);
        });
        query!(
            temperature,
            "nvmlDeviceGetTemperature",
            dev.temperature(TemperatureSensor::Gpu),
            |t| out.temp_c = Some(t)
        );
        query!(
            clock,
            "nvmlDeviceGetClockInfo",
            dev.clock_info(Clock::SM),
            |c| out.sm_clock_mhz = Some(c)
        );
        let gpu = d.info.gpu_id;
        let now = mono_ns();
        let unchanged = out.mem_used.is_some()
            && out.mem_used == d.procs_mem_used
            && now.saturating_sub(d.procs_at_ns) < PROCS_REFRESH_NS;
        if d.supports.processes && unchanged {
            // The device's memory held still: so did its processes.
            self.procs.extend_from_slice(&d.procs_last);
            return Ok(());
        }
        query!(
            processes,
            "nvmlDeviceGetComputeRunningProcesses_v3",
            processes(&self.nvml, handle, &mut self.procs_buf),
            |n| {
                d.procs_last.clear();
                for p in &self.procs_buf[..n] {
                    // NVML_VALUE_NOT_AVAILABLE (no per-process figure, as
                    // under MIG without privileges): skip.
                    if p.usedGpuMemory == u64::MAX {
                        continue;
                    }
                    d.procs_last.push(GpuProcReading {
                        gpu,
                        pid: p.pid,
                        used_bytes: p.usedGpuMemory,
                        ..GpuProcReading::default()
                    });
                }
                self.procs.extend_from_slice(&d.procs_last);
                d.procs_mem_used = out.mem_used;
                d.procs_at_ns = now;
            }
        );
        Ok(())
    }

    /// Polls every device that answers into `s`; stops (and reports, and
    /// counts) a device whose call fails, and tries a stopped device again
    /// when its backoff is over.
    pub fn poll(&mut self, s: &mut GpuSample, counters: &GpuCounters) {
        if self.disabled_at_open > 0 {
            counters
                .devices_disabled
                .fetch_add(self.disabled_at_open, Ordering::Relaxed);
            for (i, d) in self.devs.iter().enumerate() {
                if d.down.is_some() {
                    counters.errors[i].fetch_add(1, Ordering::Relaxed);
                }
            }
            self.disabled_at_open = 0;
        }
        s.ndev = self.devs.len() as u8;
        for i in 0..self.devs.len() {
            s.dev[i] = GpuDeviceReading::default();
            if self.devs[i].down.is_some_and(|d| mono_ns() < d.retry_at_ns) {
                continue;
            }
            let mut r = GpuDeviceReading::default();
            let res = self.poll_device(i, &mut r);
            let d = &mut self.devs[i];
            match (res, d.down) {
                (Ok(()), None) => s.dev[i] = r,
                (Ok(()), Some(down)) => {
                    d.down = None;
                    eprintln!(
                        "tal: GPU {} ({}) answers again after {:.1} s ({} failed tries); sampling it",
                        d.info.gpu_id,
                        d.info.uuid,
                        mono_ns().saturating_sub(down.since_ns) as f64 / 1e9,
                        down.errors
                    );
                    s.dev[i] = r;
                }
                (Err((call, e)), down) => {
                    counters.errors[i].fetch_add(1, Ordering::Relaxed);
                    let now = mono_ns();
                    d.down = Some(match down {
                        None => {
                            counters.devices_disabled.fetch_add(1, Ordering::Relaxed);
                            eprintln!(
                                "tal: GPU {} ({}): {call} failed: {e}; retrying with backoff",
                                d.info.gpu_id, d.info.uuid
                            );
                            Down::new(now)
                        }
                        Some(down) => {
                            let backoff = (down.backoff_ns * 2).min(RETRY_MAX_NS);
                            Down {
                                retry_at_ns: now + backoff,
                                backoff_ns: backoff,
                                errors: down.errors + 1,
                                ..down
                            }
                        }
                    });
                    // A failed poll's processes are not this device's,
                    // and its next poll asks the driver again.
                    self.procs.retain(|p| p.gpu != i as u32);
                    d.procs_mem_used = None;
                }
            }
        }
        self.finish_processes(s);
    }

    /// The device whose back-fill is most overdue, if one is due at `now`.
    fn backfill_due(&self, now: u64) -> Option<usize> {
        self.devs
            .iter()
            .enumerate()
            .filter(|(_, d)| d.supports.samples && d.down.is_none() && d.backfill_at_ns <= now)
            .min_by_key(|(_, d)| d.backfill_at_ns)
            .map(|(i, _)| i)
    }

    /// One back-fill call for device `i`, into `self.backfill`; how many
    /// samples it holds. `stopping`: the last call, which covers up to now.
    fn backfill(
        &mut self,
        i: usize,
        stopping: bool,
        counters: &GpuCounters,
    ) -> Result<usize, NvmlError> {
        let t0 = thread_cpu_ns();
        let res = self.fetch_samples(i);
        let cost = thread_cpu_ns().saturating_sub(t0);
        counters.backfills.fetch_add(1, Ordering::Relaxed);
        counters.backfill_cpu_ns.fetch_add(cost, Ordering::Relaxed);
        let now = mono_ns();
        let d = &mut self.devs[i];
        d.backfill_cost_ns = (d.backfill_cost_ns * 3 + cost) / 4;
        d.backfill_every_ns = backfill_every(d.backfill_cost_ns, self.interval_ns);
        d.backfill_at_ns = now + d.backfill_every_ns;
        let n = res?;
        // The driver stamps samples with CLOCK_REALTIME µs; map them onto
        // the monotonic clock the polls use.
        let offset = wall_ns() as i128 - now as i128;
        let b = &mut *self.backfill;
        b.gpu = d.info.gpu_id;
        b.fetched_ns = now;
        let mut taken = 0;
        let mut newest = d.last_seen_util;
        for s in &self.samples_buf[..n] {
            if s.timeStamp <= d.last_seen_util || taken == BACKFILL_MAX {
                continue;
            }
            b.samples[taken] = UtilSample {
                mono_ns: driver_to_mono(s.timeStamp, offset),
                percent: sample_value(&s.sampleValue) as f32,
            };
            newest = newest.max(s.timeStamp);
            taken += 1;
        }
        b.samples[..taken].sort_by_key(|s| s.mono_ns);
        b.n = taken as u16;
        b.covers_to_ns = if stopping {
            now
        } else if taken > 0 {
            b.samples[taken - 1].mono_ns
        } else {
            // Nothing new since the previous call: what that one covered.
            driver_to_mono(d.last_seen_util, offset)
        };
        d.last_seen_util = newest;
        Ok(taken)
    }

    /// One `GetSamples` call for GPU utilisation newer than the last seen,
    /// into `samples_buf` (sized once; grown only if the driver keeps more
    /// samples than it holds); how many it filled.
    fn fetch_samples(&mut self, i: usize) -> Result<usize, NvmlError> {
        let f = nvml_wrapper::error::nvml_sym(self.nvml.lib().nvmlDeviceGetSamples.as_ref())?;
        let h = self.devs[i].handle.0;
        let last_seen = self.devs[i].last_seen_util;
        for _ in 0..2 {
            let mut vt: sys::nvmlValueType_t = 0;
            let mut n = self.samples_buf.len() as u32;
            // SAFETY: `samples_buf` holds `n` writable samples.
            let rc = unsafe {
                f(
                    h,
                    sys::nvmlSamplingType_enum_NVML_GPU_UTILIZATION_SAMPLES,
                    last_seen,
                    &mut vt,
                    &mut n,
                    self.samples_buf.as_mut_ptr(),
                )
            };
            if rc == sys::nvmlReturn_enum_NVML_ERROR_NOT_FOUND {
                return Ok(0);
            }
            if rc == sys::nvmlReturn_enum_NVML_ERROR_INSUFFICIENT_SIZE
                && self.samples_buf.len() < 16 * BACKFILL_MAX
            {
                let want = (n as usize).clamp(self.samples_buf.len() * 2, 16 * BACKFILL_MAX);
                // SAFETY: nvmlSample_t is plain data; all-zero is a valid value.
                self.samples_buf.resize(want, unsafe { std::mem::zeroed() });
                continue;
            }
            c_err(rc, ())?;
            let n = (n as usize).min(self.samples_buf.len());
            for s in &mut self.samples_buf[..n] {
                // Stored as f64 so the value type need not travel.
                s.sampleValue.dVal = value_of(vt, &s.sampleValue);
            }
            return Ok(n);
        }
        Ok(0)
    }

    /// Fills in each process's ancestors (from the previous poll's, or from
    /// /proc for a new pid) and copies this poll's processes into `s`.
    fn finish_processes(&mut self, s: &mut GpuSample) {
        let mut procs = std::mem::take(&mut self.procs);
        for p in &mut procs {
            match self.ancestry.iter().find(|a| a.pid == p.pid) {
                Some(a) => {
                    p.nanc = a.nanc;
                    p.ancestors = a.ancestors;
                }
                None => {
                    let (n, anc) = ancestors_of(p.pid);
                    p.nanc = n;
                    p.ancestors = anc;
                }
            }
        }
        let n = procs.len().min(MAX_GPU_PROCS);
        s.procs[..n].copy_from_slice(&procs[..n]);
        s.nproc = n as u16;
        // Processes gone this poll are forgotten (so a reused pid is looked
        // up again).
        self.ancestry.clear();
        self.ancestry.extend_from_slice(&procs);
        procs.clear();
        self.procs = procs;
    }
}

/// A driver timestamp (CLOCK_REALTIME µs) on the monotonic clock, given
/// `offset` = realtime ns − monotonic ns now.
fn driver_to_mono(ts_us: u64, offset: i128) -> u64 {
    (i128::from(ts_us) * 1000 - offset).clamp(0, i128::from(u64::MAX)) as u64
}

/// NOT_SUPPORTED, or a function the library lacks: the query is switched
/// off for good rather than the device stopped.
fn switched_off(e: &NvmlError) -> bool {
    matches!(
        e,
        NvmlError::NotSupported | NvmlError::FailedToLoadSymbol(_)
    )
}

/// How often a device's back-fill runs, given what one call costs: as
/// often as [`BACKFILL_BUDGET_NS`] per poll allows, within
/// [`BACKFILL_MIN_EVERY_NS`]..=[`BACKFILL_MAX_EVERY_NS`].
fn backfill_every(cost_ns: u64, interval_ns: u64) -> u64 {
    let polls = cost_ns.div_ceil(BACKFILL_BUDGET_NS).max(1);
    polls
        .saturating_mul(interval_ns)
        .clamp(BACKFILL_MIN_EVERY_NS, BACKFILL_MAX_EVERY_NS)
}

/// The compute processes on a device into `buf`; how many.
fn processes(
    nvml: &Nvml,
    h: sys::nvmlDevice_t,
    buf: &mut Vec<sys::nvmlProcessInfo_t>,
) -> Result<usize, NvmlError> {
    let f =
        nvml_wrapper::error::nvml_sym(nvml.lib().nvmlDeviceGetComputeRunningProcesses_v3.as_ref())?;
    if buf.is_empty() {
        // SAFETY: plain data; all-zero is a valid value.
        buf.resize(16, unsafe { std::mem::zeroed() });
    }
    for _ in 0..4 {
        let mut n = buf.len() as u32;
        // SAFETY: `buf` holds `n` writable entries.
        let rc = unsafe { f(h, &mut n, buf.as_mut_ptr()) };
        if rc == sys::nvmlReturn_enum_NVML_ERROR_INSUFFICIENT_SIZE {
            let want = (n as usize).max(buf.len()) + 8;
            // SAFETY: as above.
            buf.resize(want, unsafe { std::mem::zeroed() });
            continue;
        }
        c_err(rc, ())?;
        return Ok((n as usize).min(buf.len()));
    }
    Ok(0)
}

/// A process's parent, grandparent, … from /proc (nearest first, stopping
/// at init or after [`MAX_ANCESTORS`]).
fn ancestors_of(pid: u32) -> (u8, [u32; MAX_ANCESTORS]) {
    let mut out = [0u32; MAX_ANCESTORS];
    let mut n = 0;
    let mut cur = pid;
    while n < MAX_ANCESTORS {
        let Some(ppid) = parent_of(cur) else { break };
        if ppid == 0 {
            break;
        }
        out[n] = ppid;
        n += 1;
        if ppid == 1 {
            break;
        }
        cur = ppid;
    }
    (n as u8, out)
}

/// The parent pid from `/proc/<pid>/stat` (the field after the command
/// name, which may itself hold spaces and parentheses).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    let close = stat.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&stat[close + 1..]).ok()?;
    rest.split_ascii_whitespace().nth(1)?.parse().ok()
}

fn value_of(vt: sys::nvmlValueType_t, v: &sys::nvmlValue_t) -> f64 {
    // SAFETY: NVML says which union member it filled through `vt`.
    unsafe {
        match vt {
            sys::nvmlValueType_enum_NVML_VALUE_TYPE_DOUBLE => v.dVal,
            sys::nvmlValueType_enum_NVML_VALUE_TYPE_UNSIGNED_INT => f64::from(v.uiVal),
            sys::nvmlValueType_enum_NVML_VALUE_TYPE_UNSIGNED_LONG => v.ulVal as f64,
            sys::nvmlValueType_enum_NVML_VALUE_TYPE_UNSIGNED_LONG_LONG => v.ullVal as f64,
            sys::nvmlValueType_enum_NVML_VALUE_TYPE_SIGNED_LONG_LONG => v.sllVal as f64,
            sys::nvmlValueType_enum_NVML_VALUE_TYPE_SIGNED_INT => f64::from(v.siVal),
            sys::nvmlValueType_enum_NVML_VALUE_TYPE_UNSIGNED_SHORT => f64::from(v.usVal),
            _ => f64::NAN,
        }
    }
}

/// A sample's value once [`GpuSources::fetch_samples`] stored it as f64.
fn sample_value(v: &sys::nvmlValue_t) -> f64 {
    // SAFETY: `fetch_samples` wrote `dVal` of every sample it returned.
    unsafe { v.dVal }
}

/// The GPU sampling thread's state.
#[derive(Debug)]
pub struct GpuAgent {
    sources: GpuSources,
    tx: PollsOut,
    backfill_tx: Producer<Backfill>,
    start_ns: u64,
    interval_ns: u64,
    counters: Arc<GpuCounters>,
    stop: Arc<AtomicBool>,
    /// A box the dispatcher did not take (its ring was full), for the
    /// next poll.
    spare: Option<Box<GpuSample>>,
}

impl GpuAgent {
    /// An agent polling `sources` at `start_ns + k·interval_ns` (the proc
    /// agent's deadlines) into `tx`, with back-fills into `backfill_tx`.
    pub fn new(
        mut sources: GpuSources,
        tx: PollsOut,
        backfill_tx: Producer<Backfill>,
        start_ns: u64,
        interval_ns: u64,
        counters: Arc<GpuCounters>,
        stop: Arc<AtomicBool>,
    ) -> Self {
        sources.schedule(start_ns, interval_ns);
        Self {
            sources,
            tx,
            backfill_tx,
            start_ns,
            interval_ns: interval_ns.max(1),
            counters,
            stop,
            spare: None,
        }
    }

    /// One back-fill of device `i`, handed to the dispatcher.
    fn backfill(&mut self, i: usize, stopping: bool) {
        match self.sources.backfill(i, stopping, &self.counters) {
            Ok(_) => {
                if let Err(PushError::Full(_)) = self.backfill_tx.push(*self.sources.backfill) {
                    self.counters
                        .backfills_dropped
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(e) if switched_off(&e) => self.sources.devs[i].supports.samples = false,
            // The device's next poll finds out whether it is failing.
            Err(_) => {
                self.counters.errors[i].fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Polls until `stop` is set, then gives every device a last
    /// back-fill. (No last poll at stop: the dispatcher gives the proc
    /// agent's last sample the latest GPU values.)
    pub fn run(mut self) {
        let interval = self.interval_ns;
        let mut deadline = self.start_ns;
        loop {
            if super::proc::sleep_until(deadline, &self.stop) {
                break;
            }
            // A box back from the dispatcher (allocated only while fewer
            // than the rings hold are in use).
            let mut s = self
                .spare
                .take()
                .or_else(|| self.tx.free.pop())
                .unwrap_or_default();
            s.deadline_ns = deadline;
            self.sources.poll(&mut s, &self.counters);
            s.done_ns = mono_ns();
            s.thread_cpu_ns = thread_cpu_ns();
            self.counters.polls.fetch_add(1, Ordering::Relaxed);
            if let Err(PushError::Full(s)) = self.tx.polls.push(s) {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
                self.spare = Some(s);
            }
            // At most one back-fill per poll, half an interval after the
            // poll: its 1.4 ms call must not hold the shared CPU when the
            // proc sampler wakes on the next deadline (measured: sampling
            // jitter p99 1.5 ms when it ran right after the poll).
            if let Some(i) = self.sources.backfill_due(mono_ns()) {
                if super::proc::sleep_until(deadline + interval / 2, &self.stop) {
                    break;
                }
                self.backfill(i, false);
            }
            deadline += interval;
            let now = mono_ns();
            if now >= deadline + interval {
                let missed = (now - deadline) / interval;
                deadline += missed * interval;
                self.counters
                    .deadlines_missed
                    .fetch_add(missed, Ordering::Relaxed);
            }
        }
        for i in 0..self.sources.devs.len() {
            let d = &self.sources.devs[i];
            if d.supports.samples && d.down.is_none() {
                self.backfill(i, true);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ancestors_come_from_proc() {
        let me = std::process::id();
        let (n, anc) = ancestors_of(me);
        assert!(n >= 1);
        let parent = rustix::process::getppid().map_or(0, |p| p.as_raw_nonzero().get());
        assert_eq!(anc[0], parent as u32);
        assert!(anc[..n as usize].iter().all(|&p| p != 0));
        assert_eq!(ancestors_of(u32::MAX).0, 0, "no such process");
    }
}
