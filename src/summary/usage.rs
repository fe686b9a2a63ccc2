//! How well the job used what it had, per node and for the whole job: the
//! questions `seff` and Princeton's jobstats answer, from the `per_node` and
//! `per_gpu` ResourceUpdate samples.
//!
//! - **CPU efficiency**: busy CPU-seconds / (CPUs × wall). A sample's
//!   `cpu_percent` is the busy share of all the node's CPUs over its window
//!   (the time since the node's sample before), so the node's efficiency is
//!   the windows' time-weighted mean of `cpu_percent`, and its busy
//!   CPU-seconds that mean × CPUs × the windows' time. A sample whose CPU is
//!   null (a window too short to measure) is skipped, not taken as 0: its
//!   window counts neither as busy nor as available. The first sample of a
//!   node is not weighed (where its window starts is not in the file). The
//!   CPUs are the length of the samples' `cpu_percent_per_core`; without it
//!   (RHAPSODY's own files) the efficiency stands and the CPU-seconds are
//!   unknown. The job cgroup's `job_cpu_percent` (share of the node's CPUs)
//!   is weighed the same way.
//! - **Memory**: peak and mean of `memory_percent` (a level, so the mean is
//!   of the samples), in bytes where the node's memory is known: the
//!   `node.memory_total_bytes` attribute the recorder puts in the log
//!   header, which `tal convert` writes in `tal_logs[].attributes` (the
//!   bytes are then as exact as the percentage, 0.1 % of the node). The job
//!   cgroup's `job_memory_bytes` (mean and peak) and `job_memory_peak_bytes`
//!   (the kernel's peak, which sees between samples) give the job's own.
//!   The cgroup's limit is not recorded, so no share of it is given.
//! - **Disk and network**: the samples' byte counts summed, and the highest
//!   rate of one window (its bytes over its time).
//! - **GPUs**: the mean of `gpu_percent`, the share of the samples below
//!   [`GPU_IDLE_PERCENT`] (the polls are periodic, so it is the share of
//!   the session), the peak of `gpu_memory_used_bytes`, and the energy
//!   counter's last (largest) value, J since the agent started.
//! - **The job**: busy and available CPU-seconds summed over the nodes
//!   (nodes whose CPUs are unknown are weighed by their time alone), bytes
//!   moved summed (the peak rate is the highest of one node), memory as the
//!   sum of each node's peak (at least the job's peak at any one time, and
//!   equal to it on one node) and of each node's memory.
//!
//! Figures from the file are taken only when they are finite numbers in
//! their range (a percentage in 0–100, bytes ≥ 0): a negative, a `NaN`
//! read as null or a percentage of 1e300 is skipped, not summed.

use super::units::{bytes, cpu_hours, energy, percent, rate, secs};
use crate::items::{GpuSample, NodeSample};
use serde::Serialize;
use serde_json::Value;
use std::fmt::Write;

/// A GPU whose utilisation is below this (%) is idle.
pub const GPU_IDLE_PERCENT: f64 = 5.0;

/// A sample's number at `key`, if it is finite and ≥ 0.
pub(crate) fn amount(v: &Value, key: &str) -> Option<f64> {
    v[key].as_f64().filter(|x| x.is_finite() && *x >= 0.0)
}

/// A figure, if it is finite and ≥ 0.
fn amount_of(v: Option<f64>) -> Option<f64> {
    v.filter(|x| x.is_finite() && *x >= 0.0)
}

/// A percentage, if it is in 0–100.
fn share_of(v: Option<f64>) -> Option<f64> {
    v.filter(|p| (0.0..=100.0).contains(p))
}

/// Bytes moved one way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Flow {
    /// All the samples' bytes.
    pub total_bytes: f64,
    /// The highest rate of one sample window, bytes per second.
    pub peak_bytes_per_s: Option<f64>,
}

/// CPU use.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CpuUse {
    /// CPUs (summed over nodes for the job), if the samples tell.
    pub cpus: Option<u64>,
    /// Seconds of sample windows whose CPU was measured (the longest node's
    /// for the job).
    pub measured_s: f64,
    /// CPU-seconds busy.
    pub busy_cpu_seconds: Option<f64>,
    /// CPU-seconds there were (CPUs × measured time).
    pub available_cpu_seconds: Option<f64>,
    /// Busy over available, %.
    pub efficiency_percent: f64,
}

/// Memory use.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MemoryUse {
    /// The node's memory (summed for the job), bytes, where known.
    pub total_bytes: Option<f64>,
    /// Peak, % of the node's.
    pub peak_percent: f64,
    /// Mean of the samples, % of the node's.
    pub mean_percent: f64,
    /// Peak, bytes.
    pub peak_bytes: Option<f64>,
    /// Mean, bytes.
    pub mean_bytes: Option<f64>,
}

/// The job cgroup's own use (tal's `job_*` fields).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CgroupUse {
    /// Its busy CPU over the node's CPUs, %.
    pub cpu_efficiency_percent: Option<f64>,
    /// Its CPU-seconds.
    pub busy_cpu_seconds: Option<f64>,
    /// Its peak memory, bytes.
    pub memory_peak_bytes: Option<f64>,
    /// Its mean memory, bytes.
    pub memory_mean_bytes: Option<f64>,
    /// Its peak memory, % of the node's.
    pub memory_peak_percent_of_node: Option<f64>,
    /// Its memory limit, bytes, where it has one (the log attribute
    /// `job.memory_limit_bytes`; for the job, the nodes' summed when every
    /// node's cgroup has one).
    pub memory_limit_bytes: Option<f64>,
    /// Its peak memory, % of its limit.
    pub memory_peak_percent_of_limit: Option<f64>,
    /// Bytes it read from disk.
    pub disk_read: Option<Flow>,
    /// Bytes it wrote to disk.
    pub disk_write: Option<Flow>,
}

/// A node's (or the job's) use of what it had.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Usage {
    /// CPU.
    pub cpu: Option<CpuUse>,
    /// Memory.
    pub memory: Option<MemoryUse>,
    /// Disk read.
    pub disk_read: Option<Flow>,
    /// Disk written.
    pub disk_write: Option<Flow>,
    /// Network received.
    pub net_received: Option<Flow>,
    /// Network sent.
    pub net_sent: Option<Flow>,
    /// The job cgroup, where tal read one.
    pub job_cgroup: Option<CgroupUse>,
}

/// One GPU's use.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct GpuUse {
    /// Mean utilisation, %.
    pub utilization_mean_percent: Option<f64>,
    /// Share of its samples below [`GPU_IDLE_PERCENT`], %.
    pub idle_percent: Option<f64>,
    /// Peak memory used, bytes.
    pub memory_peak_bytes: Option<f64>,
    /// Its memory, bytes.
    pub memory_total_bytes: Option<f64>,
    /// Energy since the agent started, J.
    pub energy_joules: Option<f64>,
}

/// The job's GPUs together.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct JobGpus {
    /// How many.
    pub gpus: u64,
    /// Mean utilisation of all their samples, %.
    pub utilization_mean_percent: Option<f64>,
    /// Share of all their samples below [`GPU_IDLE_PERCENT`], %.
    pub idle_percent: Option<f64>,
    /// Their energy, J.
    pub energy_joules: Option<f64>,
}

/// The whole job.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct JobUsage {
    /// Nodes with samples.
    pub nodes: u64,
    /// Their use, together.
    #[serde(flatten)]
    pub usage: Usage,
    /// Their GPUs, if any.
    pub gpus: Option<JobGpus>,
}

/// A weighted mean in the making.
#[derive(Debug, Default, Clone, Copy)]
struct Mean {
    sum: f64,
    weight: f64,
}

impl Mean {
    fn add(&mut self, v: f64, w: f64) {
        self.sum += v * w;
        self.weight += w;
    }
    fn get(&self) -> Option<f64> {
        (self.weight > 0.0).then(|| self.sum / self.weight)
    }
}

/// A level's peak and mean in the making.
#[derive(Debug, Default, Clone, Copy)]
struct Level {
    peak: Option<f64>,
    mean: Mean,
}

impl Level {
    fn add(&mut self, v: f64) {
        self.raise(v);
        self.mean.add(v, 1.0);
    }
    fn raise(&mut self, v: f64) {
        self.peak = Some(self.peak.map_or(v, |p| p.max(v)));
    }
}

/// Bytes moved one way, in the making.
#[derive(Debug, Default, Clone, Copy)]
struct FlowAcc {
    flow: Option<Flow>,
}

impl FlowAcc {
    fn add(&mut self, b: f64, window_s: Option<f64>) {
        let f = self.flow.get_or_insert_with(Flow::default);
        f.total_bytes += b;
        if let Some(r) = window_s.map(|w| b / w).filter(|r| r.is_finite()) {
            f.peak_bytes_per_s = Some(f.peak_bytes_per_s.map_or(r, |p| p.max(r)));
        }
    }
}

/// The flows, by their sample keys.
const FLOWS: [&str; 6] = [
    "disk_read_bytes",
    "disk_write_bytes",
    "net_recv_bytes",
    "net_sent_bytes",
    "job_disk_read_bytes",
    "job_disk_write_bytes",
];

/// One node's samples, taken one by one.
#[derive(Debug, Default)]
pub struct NodeAcc {
    last_s: Option<f64>,
    cpus: u64,
    cpu: Mean,
    job_cpu: Mean,
    mem: Level,
    job_mem: Level,
    flows: [FlowAcc; 6],
}

impl NodeAcc {
    /// Takes one `per_node` sample, taken at `time_s` (s since the epoch).
    pub fn sample(&mut self, v: &NodeSample<'_>, time_s: Option<f64>) {
        let t = time_s.filter(|t| t.is_finite());
        let window = match (self.last_s, t) {
            (Some(a), Some(b)) if b > a => Some(b - a),
            _ => None,
        };
        if let Some(t) = t {
            self.last_s = Some(self.last_s.map_or(t, |l| l.max(t)));
        }
        if let Some(cores) = &v.per_core {
            self.cpus = self.cpus.max(cores.len() as u64);
        }
        if let Some(w) = window {
            if let Some(p) = share_of(v.cpu_percent) {
                self.cpu.add(p, w);
            }
            if let Some(p) = share_of(v.job_cpu_percent) {
                self.job_cpu.add(p, w);
            }
        }
        if let Some(p) = share_of(v.memory_percent) {
            self.mem.add(p);
        }
        if let Some(b) = amount_of(v.job_memory_bytes) {
            self.job_mem.add(b);
        }
        if let Some(b) = amount_of(v.job_memory_peak_bytes) {
            self.job_mem.raise(b);
        }
        for (acc, key) in self.flows.iter_mut().zip(FLOWS) {
            if let Some(b) = amount_of(v.get(key)) {
                acc.add(b, window);
            }
        }
    }

    /// What the samples came to, `mem_total` being the node's memory in
    /// bytes where known.
    pub fn usage(&self, mem_total: Option<f64>) -> Usage {
        let cpus = (self.cpus > 0).then_some(self.cpus);
        let cpu = self.cpu.get().map(|eff| CpuUse {
            cpus,
            measured_s: self.cpu.weight,
            busy_cpu_seconds: cpus.map(|n| self.cpu.sum / 100.0 * n as f64),
            available_cpu_seconds: cpus.map(|n| self.cpu.weight * n as f64),
            efficiency_percent: eff,
        });
        let of_node = |p: f64| mem_total.map(|t| t * p / 100.0);
        let memory = self
            .mem
            .mean
            .get()
            .zip(self.mem.peak)
            .map(|(mean, peak)| MemoryUse {
                total_bytes: mem_total,
                peak_percent: peak,
                mean_percent: mean,
                peak_bytes: of_node(peak),
                mean_bytes: of_node(mean),
            });
        let [dr, dw, nr, ns, jr, jw] = self.flows.map(|f| f.flow);
        let cgroup = CgroupUse {
            cpu_efficiency_percent: self.job_cpu.get(),
            busy_cpu_seconds: cpus
                .filter(|_| self.job_cpu.weight > 0.0)
                .map(|n| self.job_cpu.sum / 100.0 * n as f64),
            memory_peak_bytes: self.job_mem.peak,
            memory_mean_bytes: self.job_mem.mean.get(),
            memory_peak_percent_of_node: self
                .job_mem
                .peak
                .zip(mem_total.filter(|t| *t > 0.0))
                .map(|(p, t)| p / t * 100.0),
            memory_limit_bytes: None,
            memory_peak_percent_of_limit: None,
            disk_read: jr,
            disk_write: jw,
        };
        Usage {
            cpu,
            memory,
            disk_read: dr,
            disk_write: dw,
            net_received: nr,
            net_sent: ns,
            job_cgroup: (cgroup != CgroupUse::default()).then_some(cgroup),
        }
    }
}

/// One GPU's samples, taken one by one.
#[derive(Debug, Default, Clone)]
pub struct GpuAcc {
    util: Level,
    idle: u64,
    samples: u64,
    mem: Level,
    mem_total: Option<f64>,
    energy: Option<f64>,
}

impl GpuAcc {
    /// Takes one `per_gpu` sample.
    pub fn sample(&mut self, v: &GpuSample) {
        if let Some(u) = share_of(v.gpu_percent) {
            self.util.add(u);
            self.samples += 1;
            self.idle += u64::from(u < GPU_IDLE_PERCENT);
        }
        if let Some(b) = amount_of(v.gpu_memory_used_bytes) {
            self.mem.raise(b);
        }
        let max = |old: Option<f64>, new: Option<f64>| match (old, new) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        self.mem_total = max(self.mem_total, amount_of(v.gpu_memory_total_bytes));
        self.energy = max(self.energy, amount_of(v.gpu_energy_joules));
    }

    /// What the samples came to.
    pub fn usage(&self) -> GpuUse {
        GpuUse {
            utilization_mean_percent: self.util.mean.get(),
            idle_percent: (self.samples > 0)
                .then(|| self.idle as f64 / self.samples as f64 * 100.0),
            memory_peak_bytes: self.mem.peak,
            memory_total_bytes: self.mem_total,
            energy_joules: self.energy,
        }
    }

    /// The job's GPUs together.
    pub fn job(gpus: &[&GpuAcc]) -> Option<JobGpus> {
        if gpus.is_empty() {
            return None;
        }
        let mut util = Mean::default();
        let (mut idle, mut samples) = (0u64, 0u64);
        for g in gpus {
            util.sum += g.util.mean.sum;
            util.weight += g.util.mean.weight;
            idle += g.idle;
            samples += g.samples;
        }
        let energies: Vec<f64> = gpus.iter().filter_map(|g| g.energy).collect();
        Some(JobGpus {
            gpus: gpus.len() as u64,
            utilization_mean_percent: util.get(),
            idle_percent: (samples > 0).then(|| idle as f64 / samples as f64 * 100.0),
            energy_joules: (!energies.is_empty()).then(|| energies.iter().sum()),
        })
    }
}

/// The sum of the present values, if any is.
fn sum(vals: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    vals.flatten().fold(None, |s, v| Some(s.unwrap_or(0.0) + v))
}

/// The flows of several nodes together: bytes summed, the highest rate.
fn flows(fs: impl Iterator<Item = Option<Flow>>) -> Option<Flow> {
    fs.flatten().fold(None, |acc: Option<Flow>, f| {
        Some(match acc {
            None => f,
            Some(a) => Flow {
                total_bytes: a.total_bytes + f.total_bytes,
                peak_bytes_per_s: match (a.peak_bytes_per_s, f.peak_bytes_per_s) {
                    (Some(x), Some(y)) => Some(x.max(y)),
                    (x, y) => x.or(y),
                },
            },
        })
    })
}

/// The CPU of several nodes together.
fn job_cpu(cs: &[&CpuUse]) -> Option<CpuUse> {
    if cs.is_empty() {
        return None;
    }
    let busy = sum(cs.iter().map(|c| c.busy_cpu_seconds));
    let available = sum(cs.iter().map(|c| c.available_cpu_seconds));
    // Nodes whose CPUs are unknown are weighed by their time alone.
    let mut m = Mean::default();
    for c in cs {
        m.add(
            c.efficiency_percent,
            c.available_cpu_seconds.unwrap_or(c.measured_s),
        );
    }
    Some(CpuUse {
        cpus: cs.iter().filter_map(|c| c.cpus).reduce(|a, b| a + b),
        measured_s: cs.iter().map(|c| c.measured_s).fold(0.0, f64::max),
        busy_cpu_seconds: busy,
        available_cpu_seconds: available,
        efficiency_percent: m.get().unwrap_or(0.0),
    })
}

/// The memory of several nodes together (see the module doc).
fn job_memory(ms: &[&MemoryUse]) -> Option<MemoryUse> {
    if ms.is_empty() {
        return None;
    }
    let all = |f: fn(&MemoryUse) -> Option<f64>| -> Option<f64> {
        ms.iter().map(|m| f(m)).sum::<Option<f64>>()
    };
    let total = all(|m| m.total_bytes);
    let (peak, mean) = (all(|m| m.peak_bytes), all(|m| m.mean_bytes));
    let of_total = |b: Option<f64>| {
        b.zip(total.filter(|t| *t > 0.0))
            .map(|(b, t)| b / t * 100.0)
    };
    let most = |f: fn(&MemoryUse) -> f64| ms.iter().map(|m| f(m)).fold(0.0, f64::max);
    Some(MemoryUse {
        total_bytes: total,
        peak_percent: of_total(peak).unwrap_or_else(|| most(|m| m.peak_percent)),
        mean_percent: of_total(mean).unwrap_or_else(|| most(|m| m.mean_percent)),
        peak_bytes: peak,
        mean_bytes: mean,
    })
}

/// The job cgroups of several nodes together.
fn job_cgroup(nodes: &[&Usage]) -> Option<CgroupUse> {
    let cs: Vec<(&CgroupUse, Option<&CpuUse>)> = nodes
        .iter()
        .filter_map(|u| u.job_cgroup.as_ref().map(|c| (c, u.cpu.as_ref())))
        .collect();
    if cs.is_empty() {
        return None;
    }
    let busy = sum(cs.iter().map(|(c, _)| c.busy_cpu_seconds));
    let available = sum(cs.iter().map(|(c, cpu)| {
        c.busy_cpu_seconds
            .and(cpu.and_then(|cpu| cpu.available_cpu_seconds))
    }));
    let peak = sum(cs.iter().map(|(c, _)| c.memory_peak_bytes));
    let limit = cs
        .iter()
        .map(|(c, _)| c.memory_limit_bytes)
        .sum::<Option<f64>>();
    let totals = sum(nodes
        .iter()
        .map(|u| u.memory.as_ref().and_then(|m| m.total_bytes)));
    Some(CgroupUse {
        cpu_efficiency_percent: match (busy, available) {
            (Some(b), Some(a)) if a > 0.0 => Some(b / a * 100.0),
            _ if cs.len() == 1 => cs[0].0.cpu_efficiency_percent,
            _ => None,
        },
        busy_cpu_seconds: busy,
        memory_peak_bytes: peak,
        memory_mean_bytes: sum(cs.iter().map(|(c, _)| c.memory_mean_bytes)),
        memory_peak_percent_of_node: peak
            .zip(totals.filter(|t| *t > 0.0))
            .map(|(p, t)| p / t * 100.0),
        memory_limit_bytes: limit,
        memory_peak_percent_of_limit: of_limit(peak, limit),
        disk_read: flows(cs.iter().map(|(c, _)| c.disk_read)),
        disk_write: flows(cs.iter().map(|(c, _)| c.disk_write)),
    })
}

/// `peak` as a share of `limit`, %.
fn of_limit(peak: Option<f64>, limit: Option<f64>) -> Option<f64> {
    peak.zip(limit.filter(|l| *l > 0.0))
        .map(|(p, l)| p / l * 100.0)
}

/// Gives a node's job cgroup its memory limit, `limit` bytes, where the
/// node's log says it (see [`CgroupUse::memory_limit_bytes`]).
pub fn set_job_memory_limit(u: &mut Usage, limit: Option<f64>) {
    let limit = limit.filter(|l| l.is_finite() && *l > 0.0);
    if let Some(c) = u.job_cgroup.as_mut() {
        c.memory_limit_bytes = limit;
        c.memory_peak_percent_of_limit = of_limit(c.memory_peak_bytes, limit);
    }
}

/// The job's use: its nodes' together (see the module doc).
pub fn job(nodes: &[&Usage]) -> Usage {
    let cpus: Vec<&CpuUse> = nodes.iter().filter_map(|u| u.cpu.as_ref()).collect();
    let mems: Vec<&MemoryUse> = nodes.iter().filter_map(|u| u.memory.as_ref()).collect();
    Usage {
        cpu: job_cpu(&cpus),
        memory: job_memory(&mems),
        disk_read: flows(nodes.iter().map(|u| u.disk_read)),
        disk_write: flows(nodes.iter().map(|u| u.disk_write)),
        net_received: flows(nodes.iter().map(|u| u.net_received)),
        net_sent: flows(nodes.iter().map(|u| u.net_sent)),
        job_cgroup: job_cgroup(nodes),
    }
}

/// `read 67.1 MB (peak 210 MB/s)`, or `-`.
fn flow(f: &Option<Flow>) -> String {
    match f {
        Some(f) => match f.peak_bytes_per_s {
            Some(r) => format!("{} (peak {})", bytes(f.total_bytes), rate(r)),
            None => bytes(f.total_bytes),
        },
        None => "-".into(),
    }
}

/// The CPU line of a usage block (`job`: of several nodes, whose times
/// differ).
fn cpu_line(c: &CpuUse, job: bool) -> String {
    let mut s = format!("efficiency {}", percent(c.efficiency_percent));
    match (c.busy_cpu_seconds, c.available_cpu_seconds) {
        (Some(b), Some(a)) if job => {
            let _ = write!(
                s,
                ": {} busy of {} ({} CPUs, each node over its own time)",
                cpu_hours(b),
                cpu_hours(a),
                c.cpus.unwrap_or(0),
            );
        }
        (Some(b), Some(a)) => {
            let _ = write!(
                s,
                " of {} CPUs × {}: {} busy of {}",
                c.cpus.unwrap_or(0),
                secs(c.measured_s),
                cpu_hours(b),
                cpu_hours(a),
            );
        }
        _ => {
            let _ = write!(s, " over {} (CPUs not in the file)", secs(c.measured_s));
        }
    }
    s
}

/// The memory line of a usage block.
fn memory_line(m: &MemoryUse) -> String {
    match (m.peak_bytes, m.mean_bytes, m.total_bytes) {
        (Some(p), Some(a), Some(t)) => format!(
            "peak {} ({}), mean {} ({}) of {}",
            bytes(p),
            percent(m.peak_percent),
            bytes(a),
            percent(m.mean_percent),
            bytes(t)
        ),
        _ => format!(
            "peak {}, mean {} of the node's (its size not in the file)",
            percent(m.peak_percent),
            percent(m.mean_percent)
        ),
    }
}

/// The job cgroup's line of a usage block.
fn cgroup_line(c: &CgroupUse) -> String {
    let mut parts = Vec::new();
    if let Some(e) = c.cpu_efficiency_percent {
        let busy = c
            .busy_cpu_seconds
            .map_or(String::new(), |b| format!(", {} busy", cpu_hours(b)));
        parts.push(format!("CPU {}{busy}", percent(e)));
    }
    if let Some(p) = c.memory_peak_bytes {
        let mut of: Vec<String> = Vec::new();
        if let Some(p) = c.memory_peak_percent_of_node {
            of.push(format!("{} of the node's", percent(p)));
        }
        if let (Some(p), Some(l)) = (c.memory_peak_percent_of_limit, c.memory_limit_bytes) {
            of.push(format!("{} of its limit, {}", percent(p), bytes(l)));
        }
        let of = if of.is_empty() {
            String::new()
        } else {
            format!(" ({})", of.join("; "))
        };
        parts.push(format!("memory peak {}{of}", bytes(p)));
    }
    if c.disk_read.is_some() || c.disk_write.is_some() {
        parts.push(format!(
            "disk read {}, written {}",
            flow(&c.disk_read),
            flow(&c.disk_write)
        ));
    }
    parts.join("; ")
}

/// A usage block: one line a resource, each line under `indent` (`job`:
/// the job's, of several nodes).
pub fn render(o: &mut String, u: &Usage, indent: &str, job: bool) {
    if let Some(c) = &u.cpu {
        let _ = writeln!(o, "{indent}CPU        {}", cpu_line(c, job));
    }
    if let Some(m) = &u.memory {
        let _ = writeln!(o, "{indent}memory     {}", memory_line(m));
    }
    if u.disk_read.is_some() || u.disk_write.is_some() {
        let _ = writeln!(
            o,
            "{indent}disk       read {}, written {}",
            flow(&u.disk_read),
            flow(&u.disk_write)
        );
    }
    if u.net_received.is_some() || u.net_sent.is_some() {
        let _ = writeln!(
            o,
            "{indent}network    received {}, sent {}",
            flow(&u.net_received),
            flow(&u.net_sent)
        );
    }
    if let Some(c) = &u.job_cgroup {
        let _ = writeln!(o, "{indent}job cgroup {}", cgroup_line(c));
    }
}

/// One GPU's line.
pub fn gpu_line(g: &GpuUse) -> String {
    let mut parts = Vec::new();
    if let Some(u) = g.utilization_mean_percent {
        parts.push(format!("mean {}", percent(u)));
    }
    if let Some(i) = g.idle_percent {
        parts.push(format!(
            "idle (< {GPU_IDLE_PERCENT} %) {} of the session",
            percent(i)
        ));
    }
    if let Some(m) = g.memory_peak_bytes {
        let of = g
            .memory_total_bytes
            .map_or(String::new(), |t| format!(" of {}", bytes(t)));
        parts.push(format!("memory peak {}{of}", bytes(m)));
    }
    if let Some(e) = g.energy_joules {
        parts.push(format!("energy {}", energy(e)));
    }
    if parts.is_empty() {
        "no figures".into()
    } else {
        parts.join(", ")
    }
}

/// The job's GPUs' line.
pub fn job_gpu_line(g: &JobGpus) -> String {
    let mut parts = Vec::new();
    if let Some(u) = g.utilization_mean_percent {
        parts.push(format!("mean {}", percent(u)));
    }
    if let Some(i) = g.idle_percent {
        parts.push(format!(
            "idle (< {GPU_IDLE_PERCENT} %) {} of their samples",
            percent(i)
        ));
    }
    if let Some(e) = g.energy_joules {
        parts.push(format!("energy {}", energy(e)));
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Each of `samples` (a line's fields) as the JSONL's item.
    fn items(samples: &[Value], gpu: bool, mut f: impl FnMut(&crate::items::Item<'_>)) {
        for s in samples {
            let mut l = s.clone();
            l["section"] = json!("event");
            l["event_type"] = json!("ResourceUpdate");
            if gpu {
                l["resource_scope"] = json!("per_gpu");
                l["gpu_id"] = json!(0);
            }
            crate::items::jsonl::line(&l, &mut |i| f(&i));
        }
    }

    fn node(samples: &[Value]) -> NodeAcc {
        let mut n = NodeAcc::default();
        items(samples, false, |i| match i {
            crate::items::Item::Event(h, crate::items::Body::Node(s)) => n.sample(s, h.time_s),
            _ => panic!("not a node sample: {i:?}"),
        });
        n
    }

    #[test]
    fn cpu_efficiency_is_busy_over_cpus_times_wall_weighed_by_window() {
        let cores = json!([0.0, 0.0, 0.0, 0.0]);
        let n = node(&[
            // The first sample: its window is unknown, so it is not weighed.
            json!({"event_time": 100.0, "cpu_percent": 100.0, "cpu_percent_per_core": cores}),
            // 1 s at 50 % of 4 CPUs: 2 CPU-s busy.
            json!({"event_time": 101.0, "cpu_percent": 50.0}),
            // 3 s at 10 %: 1.2 CPU-s.
            json!({"event_time": 104.0, "cpu_percent": 10.0}),
            // Null (a window too short to measure): skipped, not 0.
            json!({"event_time": 104.001, "cpu_percent": null}),
            // Absurd figures are skipped too.
            json!({"event_time": 105.0, "cpu_percent": -3.0}),
            json!({"event_time": 106.0, "cpu_percent": 1e300}),
        ]);
        let c = n.usage(None).cpu.unwrap();
        assert_eq!(c.cpus, Some(4));
        assert_eq!(c.measured_s, 4.0);
        assert!((c.busy_cpu_seconds.unwrap() - 3.2).abs() < 1e-9, "{c:?}");
        assert_eq!(c.available_cpu_seconds, Some(16.0));
        assert!((c.efficiency_percent - 20.0).abs() < 1e-9, "{c:?}");
    }

    #[test]
    fn without_a_cpu_count_the_efficiency_stands_alone() {
        let n = node(&[
            json!({"event_time": 1.0, "cpu_percent": 30.0}),
            json!({"event_time": 2.0, "cpu_percent": 30.0}),
        ]);
        let c = n.usage(None).cpu.unwrap();
        assert_eq!((c.cpus, c.busy_cpu_seconds), (None, None));
        assert_eq!(c.efficiency_percent, 30.0);
        assert!(node(&[json!({"event_time": 1.0, "cpu_percent": 30.0})])
            .usage(None)
            .cpu
            .is_none());
    }

    #[test]
    fn memory_is_in_bytes_where_the_node_size_is_known() {
        let n = node(&[
            json!({"memory_percent": 10.0, "job_memory_bytes": 100, "job_memory_peak_bytes": 500}),
            json!({"memory_percent": 30.0, "job_memory_bytes": 300}),
            json!({"memory_percent": -1.0, "job_memory_bytes": -5}),
        ]);
        let u = n.usage(Some(1000.0));
        let m = u.memory.unwrap();
        assert_eq!((m.peak_percent, m.mean_percent), (30.0, 20.0));
        assert_eq!((m.peak_bytes, m.mean_bytes), (Some(300.0), Some(200.0)));
        let c = u.job_cgroup.unwrap();
        assert_eq!(c.memory_peak_bytes, Some(500.0), "the kernel's peak");
        assert_eq!(c.memory_mean_bytes, Some(200.0));
        assert_eq!(c.memory_peak_percent_of_node, Some(50.0));
        let m = n.usage(None).memory.unwrap();
        assert_eq!((m.peak_bytes, m.peak_percent), (None, 30.0));
        assert!(memory_line(&m).contains("not in the file"));
    }

    #[test]
    fn flows_sum_bytes_and_keep_the_highest_rate() {
        let n = node(&[
            json!({"event_time": 10.0, "disk_read_bytes": null}),
            json!({"event_time": 10.5, "disk_read_bytes": 1e6, "net_sent_bytes": 10}),
            json!({"event_time": 12.5, "disk_read_bytes": 3e6, "net_sent_bytes": u64::MAX}),
        ]);
        let u = n.usage(None);
        let d = u.disk_read.unwrap();
        assert_eq!(d.total_bytes, 4e6);
        assert_eq!(d.peak_bytes_per_s, Some(2e6));
        assert!(u.disk_write.is_none() && u.job_cgroup.is_none());
        assert_eq!(
            u.net_sent.unwrap().total_bytes,
            10.0 + u64::MAX as f64,
            "an absurd figure is a figure, and stays finite"
        );
        assert_eq!(flow(&u.disk_read), "4.00 MB (peak 2.00 MB/s)");
    }

    #[test]
    fn gpus_give_mean_idle_share_peak_memory_and_energy() {
        let mut g = GpuAcc::default();
        let mut samples: Vec<Value> = [
            (0.0, 10, 5.0),
            (2.0, 30, 9.0),
            (90.0, 20, 15.0),
            (100.0, 20, 20.0),
        ]
        .iter()
        .map(|(u, mem, j)| {
            json!({"gpu_percent": u, "gpu_memory_used_bytes": mem,
                "gpu_memory_total_bytes": 100, "gpu_energy_joules": j})
        })
        .collect();
        samples.push(json!({"gpu_percent": null}));
        items(&samples, true, |i| match i {
            crate::items::Item::Event(_, crate::items::Body::Gpu(s)) => g.sample(s),
            _ => panic!("not a GPU sample: {i:?}"),
        });
        let u = g.usage();
        assert_eq!(u.utilization_mean_percent, Some(48.0));
        assert_eq!(u.idle_percent, Some(50.0));
        assert_eq!(u.memory_peak_bytes, Some(30.0));
        assert_eq!(u.energy_joules, Some(20.0));
        let j = GpuAcc::job(&[&g, &g]).unwrap();
        assert_eq!((j.gpus, j.energy_joules), (2, Some(40.0)));
        assert_eq!(j.idle_percent, Some(50.0));
        assert!(gpu_line(&u).contains("idle (< 5 %) 50.0 % of the session"));
    }

    #[test]
    fn the_job_sums_its_nodes() {
        let a = node(&[
            json!({"event_time": 0.0, "cpu_percent_per_core": [0, 0], "memory_percent": 10.0}),
            json!({"event_time": 10.0, "cpu_percent": 50.0, "memory_percent": 20.0, "disk_read_bytes": 100}),
        ])
        .usage(Some(1000.0));
        let b = node(&[
            json!({"event_time": 0.0, "cpu_percent_per_core": [0, 0, 0, 0, 0, 0], "memory_percent": 50.0}),
            json!({"event_time": 10.0, "cpu_percent": 100.0, "memory_percent": 50.0, "disk_read_bytes": 300}),
        ])
        .usage(Some(3000.0));
        let j = job(&[&a, &b]);
        let c = j.cpu.unwrap();
        // (10 + 60) busy CPU-s of (20 + 60).
        assert_eq!(c.cpus, Some(8));
        assert_eq!(
            (c.busy_cpu_seconds, c.available_cpu_seconds),
            (Some(70.0), Some(80.0))
        );
        assert_eq!(c.efficiency_percent, 87.5);
        let m = j.memory.unwrap();
        assert_eq!((m.total_bytes, m.peak_bytes), (Some(4000.0), Some(1700.0)));
        assert_eq!(m.peak_percent, 42.5);
        assert_eq!(j.disk_read.unwrap().total_bytes, 400.0);
    }
}
