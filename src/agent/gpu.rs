//! `GpuAgent`: samples NVIDIA GPUs through NVML on the proc agent's
//! deadlines, on its own thread (NVML calls can stall for milliseconds and
//! must never delay /proc sampling).
//!
//! **Loading.** NVML is opened at run time (`nvml-wrapper`, which loads
//! `libnvidia-ml.so.1`; `$TAL_NVML_LIBRARY` names another file, for sites
//! with the driver in an odd place and for tests). A node without a usable
//! NVML records normally: [`GpuSources::open`] returns the reason (library
//! missing, driver not loaded, no permission, no devices, none of the
//! requested devices), `tal record` prints it as one line on stderr, and
//! the GPU fields stay null.
//!
//! **Which devices, under which ids.** `--gpus auto` (the default) takes the
//! devices the job can see: `CUDA_VISIBLE_DEVICES` when it is set (NVML
//! indices, `GPU-…` UUIDs or `MIG-…` UUIDs, also unique UUID prefixes, as
//! the CUDA runtime reads it), else every device NVML lists. `--gpus LIST`
//! takes a list of the same form, `--gpus none` none. Without
//! `CUDA_VISIBLE_DEVICES`, a GPU in MIG mode is replaced by its MIG
//! instances, in NVML's order (MIG instances answer memory queries but not
//! utilisation, so their `gpu_percent` is null). A device's `gpu_id`
//! is its position in that list: the index the job's own CUDA runtime
//! gives it. (CUDA numbers devices in PCI bus order when
//! `CUDA_DEVICE_ORDER=PCI_BUS_ID`, which is what Slurm's GPU plugin
//! assumes and what NVML's own order is; the startup line prints each
//! device's UUID and PCI bus id, so the mapping can always be checked.)
//!
//! **Fresh utilisation.** NVML's plain utilisation query averages over a
//! window of 1/6 s to 1 s, so a 10 Hz poll would repeat stale values.
//! Each poll instead asks `nvmlDeviceGetSamples` for the samples newer than
//! the last one seen, for GPU and for memory utilisation; `gpu_percent` is
//! the mean of the new samples, and `gpu_samples` says how many there were
//! (0: none came since the previous poll, and the previous value is
//! repeated). Where the driver lacks that call (or says NOT_SUPPORTED),
//! the plain query is used and `gpu_samples` is null.
//!
//! **Failures.** A query a device does not support is probed once at start
//! and never asked again (its field stays null). Any other error marks the
//! device disabled: one line on stderr, counted in `gpu_devices_disabled`;
//! the other devices go on.
//!
//! Per poll and device the agent also reads memory used and total, power,
//! temperature and SM clock, and times the device's NVML calls together
//! (`nvml_latency_us`, also kept as an HDR histogram by the dispatcher).
//! It hands a fixed-size [`GpuSample`] per poll to the dispatcher, which
//! pairs it with the proc sample of the same deadline: one `per_gpu`
//! `ResourceUpdate` per device and the `per_node` `gpu_percent` (max over
//! devices).
#![allow(unsafe_code)]

use crate::clock::mono_ns;
use crate::ring::{Producer, PushError};
use nvml_wrapper::enum_wrappers::device::{Clock, TemperatureSensor};
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::{Device, Nvml};
use nvml_wrapper_sys::bindings as sys;
use std::ffi::OsString;
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

/// Which GPUs to sample (`--gpus`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GpuSelection {
    /// The job's visible devices (`CUDA_VISIBLE_DEVICES`), else all.
    Auto,
    /// No GPU sampling.
    None,
    /// These devices (NVML indices or UUIDs), numbered in this order.
    List(Vec<String>),
}

impl std::str::FromStr for GpuSelection {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "auto" => Ok(Self::Auto),
            "none" => Ok(Self::None),
            list => {
                let items = split_list(list);
                if items.is_empty() {
                    return Err(
                        "expected auto, none, or a comma-separated list of GPU indices or UUIDs"
                            .into(),
                    );
                }
                Ok(Self::List(items))
            }
        }
    }
}

fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(String::from)
        .collect()
}

/// What one device gave in one poll. `None`: not supported, or not read.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GpuDeviceReading {
    /// The device answered this poll (false once it is disabled).
    pub ok: bool,
    /// GPU utilisation, %.
    pub util_percent: Option<f32>,
    /// How many new NVML samples `util_percent` averages (`None`: the plain
    /// query was used).
    pub util_samples: Option<u16>,
    /// Memory-controller utilisation, %.
    pub mem_util_percent: Option<f32>,
    /// Device memory used, bytes.
    pub mem_used: Option<u64>,
    /// Device memory total, bytes.
    pub mem_total: Option<u64>,
    /// Power draw, mW.
    pub power_mw: Option<u32>,
    /// GPU temperature, °C.
    pub temp_c: Option<u32>,
    /// SM clock, MHz.
    pub sm_clock_mhz: Option<u32>,
    /// Time spent in this device's NVML calls this poll, ns.
    pub latency_ns: u64,
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
#[derive(Debug, Default)]
pub struct GpuCounters {
    /// Polls taken.
    pub polls: AtomicU64,
    /// Polls dropped because the ring was full.
    pub dropped: AtomicU64,
    /// Deadlines skipped because a poll ran more than an interval late.
    pub deadlines_missed: AtomicU64,
    /// Devices disabled after an error.
    pub devices_disabled: AtomicU64,
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

#[derive(Debug)]
struct Dev {
    info: GpuInfo,
    handle: Handle,
    supports: Supports,
    disabled: bool,
    last_seen_util: u64,
    last_seen_mem: u64,
    last_util: Option<f32>,
    last_mem_util: Option<f32>,
}

/// NVML, open, with the devices to sample.
pub struct GpuSources {
    devs: Vec<Dev>,
    samples_buf: Vec<sys::nvmlSample_t>,
    procs_buf: Vec<sys::nvmlProcessInfo_t>,
    /// This poll's processes (all devices), and the ancestors of the
    /// processes seen in the previous poll (pid → ancestors).
    procs: Vec<GpuProcReading>,
    ancestry: Vec<GpuProcReading>,
    disabled_at_open: u64,
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

/// Words an NVML error for a user.
fn why(e: &NvmlError) -> String {
    match e {
        NvmlError::LibloadingError(_) => format!(
            "cannot load the NVIDIA management library {} (no NVIDIA driver on this node?)",
            library_path().to_string_lossy()
        ),
        NvmlError::FailedToLoadSymbol(s) => {
            format!("the NVIDIA management library lacks a function tal needs ({s})")
        }
        NvmlError::DriverNotLoaded => "the NVIDIA driver is not loaded".into(),
        NvmlError::NoPermission => "no permission to talk to the NVIDIA driver".into(),
        other => format!("NVML: {other}"),
    }
}

/// The NVML library to open.
pub fn library_path() -> OsString {
    std::env::var_os("TAL_NVML_LIBRARY").unwrap_or_else(|| NVML_LIBRARY.into())
}

/// The devices a selection names: `(gpu_id, NVML index or UUID)` entries.
/// `Ok(None)`: sample nothing (`none`, or an empty `CUDA_VISIBLE_DEVICES`).
fn requested(sel: &GpuSelection, cuda_visible: Option<&str>) -> Option<Vec<String>> {
    match sel {
        GpuSelection::None => None,
        GpuSelection::List(l) => Some(l.clone()),
        GpuSelection::Auto => match cuda_visible {
            None => Some(Vec::new()),
            Some(v) => {
                // The CUDA runtime stops at the first invalid entry; "-1",
                // "NoDevFiles" or "" hide every device.
                let items = split_list(v);
                let ok: Vec<String> = items
                    .into_iter()
                    .take_while(|t| t != "-1" && t != "NoDevFiles")
                    .collect();
                if ok.is_empty() {
                    None
                } else {
                    Some(ok)
                }
            }
        },
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
    /// Opens NVML and the selected devices. `Ok(None)` when the selection
    /// is empty (`--gpus none`, or no device visible to the job); `Err`
    /// gives the reason there is no GPU data, worded for stderr.
    pub fn open(sel: &GpuSelection) -> Result<Option<Self>, String> {
        let cuda = std::env::var("CUDA_VISIBLE_DEVICES").ok();
        let Some(wanted) = requested(sel, cuda.as_deref()) else {
            return Ok(None);
        };
        let lib = library_path();
        let nvml = Nvml::builder().lib_path(&lib).init().map_err(|e| why(&e))?;
        let count = nvml.device_count().map_err(|e| why(&e))?;
        let mut handles: Vec<(String, sys::nvmlDevice_t)> = Vec::new();
        if wanted.is_empty() {
            for i in 0..count {
                let d = nvml
                    .device_by_index(i)
                    .map_err(|e| format!("GPU {i}: {}", why(&e)))?;
                // A GPU in MIG mode shows the job its instances, as CUDA
                // enumerates them.
                let migs = mig_instances(&d);
                if migs.is_empty() {
                    // SAFETY: the handle is used only while `nvml` lives.
                    handles.push((i.to_string(), unsafe { d.handle() }));
                } else {
                    for (j, h) in migs.into_iter().enumerate() {
                        handles.push((format!("{i}:{j}"), h));
                    }
                }
            }
        } else {
            for w in &wanted {
                let d = find(&nvml, count, w)?;
                // SAFETY: as above.
                handles.push((w.clone(), unsafe { d.handle() }));
            }
        }
        if handles.is_empty() {
            return Err("NVML lists no GPUs on this node".into());
        }
        if handles.len() > MAX_GPUS {
            return Err(format!(
                "{} GPUs selected; tal samples at most {MAX_GPUS}: pass --gpus LIST",
                handles.len()
            ));
        }
        let mut devs = Vec::new();
        for (gpu_id, (asked, h)) in handles.into_iter().enumerate() {
            // SAFETY: a handle NVML just gave for this `nvml`.
            let d = unsafe { Device::new(h, &nvml) };
            let uuid = d.uuid().unwrap_or_else(|_| asked.clone());
            let name = d.name().unwrap_or_default();
            let pci_bus_id = d.pci_info().map(|p| p.bus_id).unwrap_or_default();
            let supports = Supports {
                samples: nvml.lib().nvmlDeviceGetSamples.is_ok(),
                rates: true,
                memory: true,
                power: true,
                temperature: true,
                clock: true,
                processes: nvml.lib().nvmlDeviceGetComputeRunningProcesses_v3.is_ok(),
            };
            devs.push(Dev {
                info: GpuInfo {
                    gpu_id: gpu_id as u32,
                    uuid,
                    name,
                    pci_bus_id,
                },
                handle: Handle(h),
                supports,
                disabled: false,
                last_seen_util: 0,
                last_seen_mem: 0,
                last_util: None,
                last_mem_util: None,
            });
        }
        let mut s = Self {
            devs,
            samples_buf: Vec::new(),
            procs_buf: Vec::new(),
            procs: Vec::new(),
            ancestry: Vec::new(),
            disabled_at_open: 0,
            nvml,
        };
        s.probe();
        Ok(Some(s))
    }

    /// The devices, by `gpu_id`.
    pub fn devices(&self) -> impl Iterator<Item = &GpuInfo> {
        self.devs.iter().map(|d| &d.info)
    }

    /// Finds which queries each device answers, and primes the sample
    /// buffers' last-seen timestamps so that the first poll reports only
    /// samples taken after start.
    fn probe(&mut self) {
        let mut scratch = GpuDeviceReading::default();
        for i in 0..self.devs.len() {
            // One poll: NOT_SUPPORTED answers turn their query off.
            let res = self.poll_device(i, &mut scratch);
            let d = &mut self.devs[i];
            d.last_util = None;
            d.last_mem_util = None;
            if let Err((call, e)) = res {
                d.disabled = true;
                self.disabled_at_open += 1;
                eprintln!(
                    "tal: GPU {} ({}): {call} failed: {e}; not sampling this device",
                    d.info.gpu_id, d.info.uuid
                );
            }
        }
        self.procs.clear();
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

    fn read_device(
        &mut self,
        i: usize,
        out: &mut GpuDeviceReading,
    ) -> Result<(), (&'static str, NvmlError)> {
        let handle = self.devs[i].handle.0;
        // SAFETY: a handle of this `nvml`, which outlives the call.
        let dev = unsafe { Device::new(handle, &self.nvml) };
        // NOT_SUPPORTED (or a missing function) switches a query off for
        // good; anything else is the device failing.
        let off = |e: &NvmlError| {
            matches!(
                e,
                NvmlError::NotSupported | NvmlError::FailedToLoadSymbol(_)
            )
        };
        let d = &mut self.devs[i];
        let mut got_util = false;
        if d.supports.samples {
            match samples(
                &self.nvml,
                handle,
                sys::nvmlSamplingType_enum_NVML_GPU_UTILIZATION_SAMPLES,
                d.last_seen_util,
                &mut self.samples_buf,
            ) {
                Ok(Some((mean, n, last))) => {
                    d.last_seen_util = last;
                    d.last_util = Some(mean);
                    out.util_percent = Some(mean);
                    out.util_samples = Some(n);
                    got_util = true;
                }
                Ok(None) => {
                    out.util_percent = d.last_util;
                    out.util_samples = Some(0);
                    got_util = true;
                }
                Err(e) if off(&e) => d.supports.samples = false,
                Err(e) => return Err(("nvmlDeviceGetSamples", e)),
            }
            if got_util {
                match samples(
                    &self.nvml,
                    handle,
                    sys::nvmlSamplingType_enum_NVML_MEMORY_UTILIZATION_SAMPLES,
                    d.last_seen_mem,
                    &mut self.samples_buf,
                ) {
                    Ok(Some((mean, _, last))) => {
                        d.last_seen_mem = last;
                        d.last_mem_util = Some(mean);
                        out.mem_util_percent = Some(mean);
                    }
                    Ok(None) => out.mem_util_percent = d.last_mem_util,
                    Err(e) if off(&e) => {}
                    Err(e) => return Err(("nvmlDeviceGetSamples", e)),
                }
            }
        }
        if !got_util && d.supports.rates {
            match dev.utilization_rates() {
                Ok(u) => {
                    out.util_percent = Some(u.gpu as f32);
                    out.mem_util_percent = Some(u.memory as f32);
                }
                Err(e) if off(&e) => d.supports.rates = false,
                Err(e) => return Err(("nvmlDeviceGetUtilizationRates", e)),
            }
        }
        if d.supports.memory {
            match dev.memory_info() {
                Ok(m) => {
                    out.mem_used = Some(m.used);
                    out.mem_total = Some(m.total);
                }
                Err(e) if off(&e) => d.supports.memory = false,
                Err(e) => return Err(("nvmlDeviceGetMemoryInfo_v2", e)),
            }
        }
        if d.supports.power {
            match dev.power_usage() {
                Ok(p) => out.power_mw = Some(p),
                Err(e) if off(&e) => d.supports.power = false,
                Err(e) => return Err(("nvmlDeviceGetPowerUsage", e)),
            }
        }
        if d.supports.temperature {
            match dev.temperature(TemperatureSensor::Gpu) {
                Ok(t) => out.temp_c = Some(t),
                Err(e) if off(&e) => d.supports.temperature = false,
                Err(e) => return Err(("nvmlDeviceGetTemperature", e)),
            }
        }
        if d.supports.clock {
            match dev.clock_info(Clock::SM) {
                Ok(c) => out.sm_clock_mhz = Some(c),
                Err(e) if off(&e) => d.supports.clock = false,
                Err(e) => return Err(("nvmlDeviceGetClockInfo", e)),
            }
        }
        if d.supports.processes {
            let gpu = d.info.gpu_id;
            match processes(&self.nvml, handle, &mut self.procs_buf) {
                Ok(n) => {
                    for p in &self.procs_buf[..n] {
                        // NVML_VALUE_NOT_AVAILABLE (no per-process figure,
                        // as under MIG without privileges): skip.
                        if p.usedGpuMemory == u64::MAX {
                            continue;
                        }
                        self.procs.push(GpuProcReading {
                            gpu,
                            pid: p.pid,
                            used_bytes: p.usedGpuMemory,
                            ..GpuProcReading::default()
                        });
                    }
                }
                Err(e) if off(&e) => d.supports.processes = false,
                Err(e) => return Err(("nvmlDeviceGetComputeRunningProcesses_v3", e)),
            }
        }
        Ok(())
    }

    /// Polls every enabled device into `s`; disables (and reports, and
    /// counts) a device whose call fails.
    pub fn poll(&mut self, s: &mut GpuSample, counters: &GpuCounters) {
        if self.disabled_at_open > 0 {
            counters
                .devices_disabled
                .fetch_add(self.disabled_at_open, Ordering::Relaxed);
            self.disabled_at_open = 0;
        }
        s.ndev = self.devs.len() as u8;
        for i in 0..self.devs.len() {
            if self.devs[i].disabled {
                s.dev[i] = GpuDeviceReading::default();
                continue;
            }
            let mut r = GpuDeviceReading::default();
            if let Err((call, e)) = self.poll_device(i, &mut r) {
                let d = &mut self.devs[i];
                d.disabled = true;
                counters.devices_disabled.fetch_add(1, Ordering::Relaxed);
                eprintln!(
                    "tal: GPU {} ({}): {call} failed: {e}; no more samples from this device",
                    d.info.gpu_id, d.info.uuid
                );
                r = GpuDeviceReading::default();
            }
            s.dev[i] = r;
        }
        self.finish_processes(s);
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

/// The MIG instances of a GPU in MIG mode (none when MIG is off or not
/// supported).
fn mig_instances(d: &Device<'_>) -> Vec<sys::nvmlDevice_t> {
    let on = d.mig_mode().is_ok_and(|m| m.current == 1);
    if !on {
        return Vec::new();
    }
    let max = d.mig_device_count().unwrap_or(0);
    (0..max)
        .filter_map(|j| d.mig_device_by_index(j).ok())
        // SAFETY: used only while the `Nvml` that `d` borrows lives.
        .map(|m| unsafe { m.handle() })
        .collect()
}

/// Finds the device a `CUDA_VISIBLE_DEVICES` / `--gpus` entry names: an
/// NVML index, or a UUID (`GPU-…`, `MIG-…`), or a unique prefix of one.
fn find<'n>(nvml: &'n Nvml, count: u32, w: &str) -> Result<Device<'n>, String> {
    if let Ok(i) = w.parse::<u32>() {
        return nvml
            .device_by_index(i)
            .map_err(|e| format!("GPU index {i} (of {count}): {}", why(&e)));
    }
    if let Ok(d) = nvml.device_by_uuid(w) {
        return Ok(d);
    }
    // A prefix of a device's UUID, as the CUDA runtime accepts.
    let mut found = Vec::new();
    for i in 0..count {
        if let Ok(d) = nvml.device_by_index(i) {
            if d.uuid().is_ok_and(|u| u.starts_with(w)) {
                found.push(i);
            }
        }
    }
    match found.as_slice() {
        [i] => nvml.device_by_index(*i).map_err(|e| why(&e)),
        [] => Err(format!("no GPU has the UUID {w}")),
        _ => Err(format!("{w} is a prefix of several GPUs' UUIDs")),
    }
}

/// The samples of `kind` newer than `last_seen`: their mean, count and
/// newest timestamp; `None` when there are none. Reuses `buf`.
fn samples(
    nvml: &Nvml,
    h: sys::nvmlDevice_t,
    kind: sys::nvmlSamplingType_t,
    last_seen: u64,
    buf: &mut Vec<sys::nvmlSample_t>,
) -> Result<Option<(f32, u16, u64)>, NvmlError> {
    let f = nvml_wrapper::error::nvml_sym(nvml.lib().nvmlDeviceGetSamples.as_ref())?;
    let mut vt: sys::nvmlValueType_t = 0;
    let mut count: u32 = 0;
    for _ in 0..3 {
        // SAFETY: the count query passes a null buffer, as NVML documents.
        let rc = unsafe {
            f(
                h,
                kind,
                last_seen,
                &mut vt,
                &mut count,
                std::ptr::null_mut(),
            )
        };
        if rc == sys::nvmlReturn_enum_NVML_ERROR_NOT_FOUND {
            return Ok(None);
        }
        c_err(rc, ())?;
        if count == 0 {
            return Ok(None);
        }
        if buf.len() < count as usize {
            // SAFETY: nvmlSample_t is plain data; all-zero is a valid value.
            buf.resize(count as usize, unsafe { std::mem::zeroed() });
        }
        let mut n = buf.len() as u32;
        // SAFETY: `buf` holds `n` writable samples.
        let rc = unsafe { f(h, kind, last_seen, &mut vt, &mut n, buf.as_mut_ptr()) };
        if rc == sys::nvmlReturn_enum_NVML_ERROR_INSUFFICIENT_SIZE {
            continue; // more samples came in between: ask again
        }
        if rc == sys::nvmlReturn_enum_NVML_ERROR_NOT_FOUND {
            return Ok(None);
        }
        c_err(rc, ())?;
        let taken = &buf[..(n as usize).min(buf.len())];
        if taken.is_empty() {
            return Ok(None);
        }
        let mut sum = 0.0f64;
        let mut newest = last_seen;
        for s in taken {
            sum += sample_value(vt, &s.sampleValue);
            newest = newest.max(s.timeStamp);
        }
        return Ok(Some((
            (sum / taken.len() as f64) as f32,
            taken.len() as u16,
            newest,
        )));
    }
    Ok(None)
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

fn sample_value(vt: sys::nvmlValueType_t, v: &sys::nvmlValue_t) -> f64 {
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

/// This thread's CPU time, ns.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The GPU sampling thread's state.
#[derive(Debug)]
pub struct GpuAgent {
    sources: GpuSources,
    tx: Producer<GpuSample>,
    start_ns: u64,
    interval_ns: u64,
    counters: Arc<GpuCounters>,
    stop: Arc<AtomicBool>,
    sample: Box<GpuSample>,
}

impl GpuAgent {
    /// An agent polling `sources` at `start_ns + k·interval_ns` (the proc
    /// agent's deadlines) into `tx`.
    pub fn new(
        sources: GpuSources,
        tx: Producer<GpuSample>,
        start_ns: u64,
        interval_ns: u64,
        counters: Arc<GpuCounters>,
        stop: Arc<AtomicBool>,
    ) -> Self {
        Self {
            sources,
            tx,
            start_ns,
            interval_ns: interval_ns.max(1),
            counters,
            stop,
            sample: Box::default(),
        }
    }

    /// Polls until `stop` is set. (No last poll at stop: the dispatcher
    /// gives the proc agent's last sample the latest GPU values.)
    pub fn run(mut self) {
        let interval = self.interval_ns;
        let mut deadline = self.start_ns;
        loop {
            if super::proc::sleep_until(deadline, &self.stop) {
                break;
            }
            let s = &mut *self.sample;
            s.deadline_ns = deadline;
            self.sources.poll(s, &self.counters);
            s.done_ns = mono_ns();
            s.thread_cpu_ns = thread_cpu_ns();
            self.counters.polls.fetch_add(1, Ordering::Relaxed);
            if let Err(PushError::Full(_)) = self.tx.push(*s) {
                self.counters.dropped.fetch_add(1, Ordering::Relaxed);
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
        // SAFETY: getppid has no preconditions.
        assert_eq!(anc[0], unsafe { libc::getppid() } as u32);
        assert!(anc[..n as usize].iter().all(|&p| p != 0));
        assert_eq!(ancestors_of(u32::MAX).0, 0, "no such process");
    }

    #[test]
    fn selections_parse() {
        assert_eq!("auto".parse(), Ok(GpuSelection::Auto));
        assert_eq!("none".parse(), Ok(GpuSelection::None));
        assert_eq!(
            " 1, GPU-abc ".parse(),
            Ok(GpuSelection::List(vec!["1".into(), "GPU-abc".into()]))
        );
        assert!(",".parse::<GpuSelection>().is_err());
    }

    #[test]
    fn cuda_visible_devices_is_read_as_the_cuda_runtime_reads_it() {
        let a = GpuSelection::Auto;
        assert_eq!(requested(&a, None), Some(vec![]));
        assert_eq!(requested(&a, Some("")), None);
        assert_eq!(requested(&a, Some("-1")), None);
        assert_eq!(requested(&a, Some("NoDevFiles")), None);
        assert_eq!(
            requested(&a, Some("2,0")),
            Some(vec!["2".into(), "0".into()])
        );
        assert_eq!(
            requested(&a, Some("1,-1,0")),
            Some(vec!["1".into()]),
            "entries after an invalid one are ignored"
        );
        assert_eq!(requested(&GpuSelection::None, Some("0")), None);
        assert_eq!(
            requested(&GpuSelection::List(vec!["3".into()]), Some("0")),
            Some(vec!["3".into()])
        );
    }
}
