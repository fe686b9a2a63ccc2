//! Tasks ranked by what they used, from their terminal events: CPU time,
//! peak RSS, I/O bytes, GPU memory and GPU energy, the [`TOP`] of each.
//!
//! A task's figures are the extension attributes `tal run` and the
//! converter put on its terminal event (see `crate::run` and
//! `crate::tasks`):
//! - CPU time: `cpu_user_seconds` + `cpu_system_seconds` (from `wait4`);
//! - mean and peak CPU %: `cpu_percent_mean`, `cpu_percent_peak` (of one
//!   CPU, from the task's samples, absent for a task shorter than one task
//!   interval);
//! - peak RSS: the larger of `max_rss_bytes` (the kernel's peak of its
//!   largest process) and `rss_bytes_peak` (the largest sampled sum over
//!   its processes): each is a lower bound of the task's peak, the first
//!   seeing between samples, the second seeing processes together;
//! - I/O: `read_bytes` + `write_bytes` (storage bytes, from
//!   `/proc/<pid>/io`), or the sampled `read_bytes_sampled` +
//!   `write_bytes_sampled` where those are absent;
//! - GPU memory: `gpu_memory_peak_bytes` (per device) summed; GPU energy:
//!   `gpu_energy_joules` (per device) summed.
//!
//! Only a task's first terminal event counts (as the task's span and the
//! metric line count it): a second run under the same id is not ranked
//! (the summary names it, see [`super::Reader`]). A figure is taken only if
//! it is a finite number ≥ 0 (a negative or a null one is left out, not
//! taken as 0); a huge one (u64::MAX) ranks as what it says. Each ranking
//! keeps [`TOP`] rows whatever the number of tasks.

use super::units::{bytes, energy, percent, secs};
use super::usage::amount;
use serde::Serialize;
use serde_json::Value;
use std::fmt::Write;

/// Tasks listed by each ranking.
pub const TOP: usize = 10;

/// One task's resource use, from its terminal event.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TaskUse {
    /// Its id.
    pub task_id: String,
    /// Its node, if its events said.
    pub node_id: Option<String>,
    /// `completed`, `failed` or `canceled`.
    pub status: String,
    /// User + system CPU, s.
    pub cpu_seconds: Option<f64>,
    /// Mean CPU, % of one CPU.
    pub cpu_percent_mean: Option<f64>,
    /// Peak CPU, % of one CPU.
    pub cpu_percent_peak: Option<f64>,
    /// Peak RSS, bytes: the larger of the two below.
    pub peak_rss_bytes: Option<u64>,
    /// The kernel's peak RSS of its largest process.
    pub max_rss_bytes: Option<u64>,
    /// The largest sampled RSS of its processes together.
    pub rss_bytes_peak: Option<u64>,
    /// Read + written, bytes.
    pub io_bytes: Option<u64>,
    /// Read from storage, bytes.
    pub read_bytes: Option<u64>,
    /// Written to storage, bytes.
    pub write_bytes: Option<u64>,
    /// Peak GPU memory, summed over its devices, bytes.
    pub gpu_memory_peak_bytes: Option<u64>,
    /// GPU energy while it ran, summed over the devices, J.
    pub gpu_energy_joules: Option<f64>,
}

/// Bytes as an integer (saturating: u64::MAX for anything larger).
fn to_bytes(b: f64) -> u64 {
    b as u64
}

/// The sum of the present values, if any is.
fn sum2(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x + y),
        (x, y) => x.or(y),
    }
}

/// An object of per-device figures summed (its valid values).
fn devices(v: &Value) -> Option<f64> {
    let m = v.as_object()?;
    m.values()
        .filter_map(valid)
        .fold(None, |s, x| Some(s.unwrap_or(0.0) + x))
}

/// A JSON number that is finite and ≥ 0.
fn valid(v: &Value) -> Option<f64> {
    v.as_f64().filter(|x| x.is_finite() && *x >= 0.0)
}

impl TaskUse {
    /// The figures of task `task_id`'s terminal event, whose attributes
    /// are `a` (its status being `status`).
    pub fn of(a: &Value, task_id: &str, status: &str, node_id: Option<String>) -> Self {
        let n = |k: &str| amount(a, k);
        let rss = [n("max_rss_bytes"), n("rss_bytes_peak")];
        let (read, write) = match (n("read_bytes"), n("write_bytes")) {
            (None, None) => (n("read_bytes_sampled"), n("write_bytes_sampled")),
            rw => rw,
        };
        Self {
            task_id: task_id.to_string(),
            node_id,
            status: status.to_string(),
            cpu_seconds: sum2(n("cpu_user_seconds"), n("cpu_system_seconds")),
            cpu_percent_mean: n("cpu_percent_mean"),
            cpu_percent_peak: n("cpu_percent_peak"),
            peak_rss_bytes: rss.iter().flatten().copied().reduce(f64::max).map(to_bytes),
            max_rss_bytes: rss[0].map(to_bytes),
            rss_bytes_peak: rss[1].map(to_bytes),
            io_bytes: sum2(read, write).map(to_bytes),
            read_bytes: read.map(to_bytes),
            write_bytes: write.map(to_bytes),
            gpu_memory_peak_bytes: devices(&a["gpu_memory_peak_bytes"]).map(to_bytes),
            gpu_energy_joules: devices(&a["gpu_energy_joules"]),
        }
    }
}

/// What each ranking is by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum By {
    /// CPU time.
    CpuTime,
    /// Peak RSS.
    PeakRss,
    /// I/O bytes.
    Io,
    /// GPU memory.
    GpuMemory,
    /// GPU energy.
    GpuEnergy,
}

impl By {
    /// Every ranking, in the order shown.
    pub const ALL: [By; 5] = [
        By::CpuTime,
        By::PeakRss,
        By::Io,
        By::GpuMemory,
        By::GpuEnergy,
    ];

    /// The figure ranked.
    fn key(self, t: &TaskUse) -> Option<f64> {
        match self {
            By::CpuTime => t.cpu_seconds,
            By::PeakRss => t.peak_rss_bytes.map(|b| b as f64),
            By::Io => t.io_bytes.map(|b| b as f64),
            By::GpuMemory => t.gpu_memory_peak_bytes.map(|b| b as f64),
            By::GpuEnergy => t.gpu_energy_joules,
        }
    }

    /// Its title.
    fn title(self) -> &'static str {
        match self {
            By::CpuTime => "CPU time",
            By::PeakRss => "peak RSS",
            By::Io => "I/O bytes, read + written",
            By::GpuMemory => "GPU memory, peak of its devices summed",
            By::GpuEnergy => "GPU energy, its devices summed",
        }
    }

    /// Why no task has its figure.
    fn why_none(self) -> &'static str {
        match self {
            By::CpuTime => "no terminal event carries cpu_user_seconds or cpu_system_seconds (tasks run through `tal run` do)",
            By::PeakRss => "no terminal event carries max_rss_bytes or rss_bytes_peak (tasks run through `tal run` do)",
            By::Io => "no terminal event carries read_bytes or write_bytes (tasks run through `tal run` do)",
            By::GpuMemory => "no task's processes were seen on a GPU (gpu_memory_peak_bytes)",
            By::GpuEnergy => "no task ran on a node whose GPUs were sampled (gpu_energy_joules)",
        }
    }
}

/// One ranking.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Ranking {
    /// Tasks with the figure.
    pub tasks_with_data: u64,
    /// The [`TOP`] of them, largest first (ties: the earlier ended first).
    pub top: Vec<TaskUse>,
    /// Why it is empty, when it is.
    pub missing: Option<String>,
}

/// The five rankings.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Rankings {
    /// By CPU time.
    pub cpu_time: Ranking,
    /// By peak RSS.
    pub peak_rss: Ranking,
    /// By I/O bytes.
    pub io: Ranking,
    /// By GPU memory.
    pub gpu_memory: Ranking,
    /// By GPU energy.
    pub gpu_energy: Ranking,
}

impl Rankings {
    /// The ranking `by`.
    pub fn get(&self, by: By) -> &Ranking {
        match by {
            By::CpuTime => &self.cpu_time,
            By::PeakRss => &self.peak_rss,
            By::Io => &self.io,
            By::GpuMemory => &self.gpu_memory,
            By::GpuEnergy => &self.gpu_energy,
        }
    }

    fn get_mut(&mut self, by: By) -> &mut Ranking {
        match by {
            By::CpuTime => &mut self.cpu_time,
            By::PeakRss => &mut self.peak_rss,
            By::Io => &mut self.io,
            By::GpuMemory => &mut self.gpu_memory,
            By::GpuEnergy => &mut self.gpu_energy,
        }
    }

    /// Ranks one task's use.
    pub fn add(&mut self, t: &TaskUse) {
        for by in By::ALL {
            let Some(k) = by.key(t) else { continue };
            let r = self.get_mut(by);
            r.tasks_with_data += 1;
            let at = r.top.partition_point(|x| by.key(x).unwrap_or(0.0) >= k);
            if at < TOP {
                r.top.insert(at, t.clone());
                r.top.truncate(TOP);
            }
        }
    }

    /// Says why each empty ranking is empty.
    pub fn finish(&mut self) {
        for by in By::ALL {
            let r = self.get_mut(by);
            if r.top.is_empty() {
                r.missing = Some(by.why_none().to_string());
            }
        }
    }
}

/// `-` for what is missing.
fn or_dash<T>(v: Option<T>, f: impl Fn(T) -> String) -> String {
    v.map_or("-".into(), f)
}

/// The rankings as text, `shown` making each string from the file safe
/// for a terminal.
pub fn render(o: &mut String, r: &Rankings, shown: impl Fn(&str) -> String) {
    for by in By::ALL {
        let k = r.get(by);
        if k.missing.is_some() {
            continue;
        }
        let _ = writeln!(
            o,
            "\ntasks by {} (top {} of {} with figures):",
            by.title(),
            k.top.len(),
            k.tasks_with_data
        );
        let gpu = matches!(by, By::GpuMemory | By::GpuEnergy);
        let _ = writeln!(
            o,
            "  {:<28} {:<12} {:<9} {:>9} {:>10} {:>10} {:>9} {:>9}",
            "task",
            "node",
            "status",
            "CPU time",
            "CPU % mean",
            "CPU % peak",
            "RSS peak",
            if gpu { "GPU" } else { "I/O" }
        );
        for t in &k.top {
            let last = match by {
                By::GpuMemory => or_dash(t.gpu_memory_peak_bytes, |b| bytes(b as f64)),
                By::GpuEnergy => or_dash(t.gpu_energy_joules, energy),
                _ => or_dash(t.io_bytes, |b| bytes(b as f64)),
            };
            let _ = writeln!(
                o,
                "  {:<28} {:<12} {:<9} {:>9} {:>10} {:>10} {:>9} {:>9}",
                shown(&t.task_id),
                shown(t.node_id.as_deref().unwrap_or("-")),
                shown(&t.status),
                or_dash(t.cpu_seconds, secs),
                or_dash(t.cpu_percent_mean, percent),
                or_dash(t.cpu_percent_peak, percent),
                or_dash(t.peak_rss_bytes, |b| bytes(b as f64)),
                last
            );
        }
    }
    let missing: Vec<(By, &String)> = By::ALL
        .iter()
        .filter_map(|by| Some((*by, r.get(*by).missing.as_ref()?)))
        .collect();
    if !missing.is_empty() {
        let _ = writeln!(o, "\ntasks not ranked:");
        for (by, why) in missing {
            let _ = writeln!(o, "  by {}: {why}", by.title());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn task(id: &str, attrs: Value) -> TaskUse {
        TaskUse::of(&attrs, id, "completed", Some("n1".into()))
    }

    #[test]
    fn figures_come_from_the_terminal_attributes() {
        let t = task(
            "a",
            json!({"cpu_user_seconds": 1.5, "cpu_system_seconds": 0.25,
                "max_rss_bytes": 400, "rss_bytes_peak": 500, "read_bytes": 7,
                "write_bytes": 8, "read_bytes_sampled": 1000,
                "gpu_memory_peak_bytes": {"0": 100, "1": 50},
                "gpu_energy_joules": {"0": 1.5, "1": 2.5}}),
        );
        assert_eq!(t.cpu_seconds, Some(1.75));
        assert_eq!((t.peak_rss_bytes, t.max_rss_bytes), (Some(500), Some(400)));
        assert_eq!(
            t.io_bytes,
            Some(15),
            "the exact counters before the sampled"
        );
        assert_eq!(t.gpu_memory_peak_bytes, Some(150));
        assert_eq!(t.gpu_energy_joules, Some(4.0));
        let s = task(
            "s",
            json!({"read_bytes_sampled": 10, "write_bytes_sampled": 5}),
        );
        assert_eq!(s.io_bytes, Some(15));
    }

    #[test]
    fn absurd_figures_are_left_out_or_rank_as_they_say() {
        let t = task(
            "x",
            json!({"cpu_user_seconds": -1.0, "cpu_system_seconds": null,
                "max_rss_bytes": u64::MAX, "read_bytes": -5,
                "gpu_energy_joules": {"0": -1.0, "1": "x"}}),
        );
        assert_eq!(t.cpu_seconds, None, "negative and null are not 0");
        assert_eq!(t.peak_rss_bytes, Some(u64::MAX));
        assert_eq!(t.io_bytes, None);
        assert_eq!(t.gpu_energy_joules, None);
        let mut r = Rankings::default();
        r.add(&t);
        r.add(&task("y", json!({"max_rss_bytes": 5})));
        r.finish();
        assert_eq!(r.peak_rss.top[0].task_id, "x");
        assert_eq!(r.peak_rss.tasks_with_data, 2);
        assert!(r.cpu_time.top.is_empty() && r.cpu_time.missing.is_some());
    }

    #[test]
    fn each_ranking_keeps_the_top_ten_largest_first() {
        let mut r = Rankings::default();
        for i in 0..5000u64 {
            // Scrambled order; ties keep the earlier.
            let cpu = (i * 7919) % 5000;
            r.add(&task(
                &format!("t{i}"),
                json!({"cpu_user_seconds": cpu as f64}),
            ));
        }
        r.finish();
        let top: Vec<f64> = r
            .cpu_time
            .top
            .iter()
            .map(|t| t.cpu_seconds.unwrap())
            .collect();
        assert_eq!(top, (4990..5000).rev().map(f64::from).collect::<Vec<_>>());
        assert_eq!(r.cpu_time.tasks_with_data, 5000);
        let mut text = String::new();
        render(&mut text, &r, |s| s.to_string());
        assert!(text.lines().count() < 40, "{text}");
        assert!(text.contains("\ntasks not ranked:\n  by peak RSS: no terminal"));
        assert!(text.contains("\n  by GPU energy, its devices summed: no task ran"));
    }
}
