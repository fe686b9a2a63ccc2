//! The dispatcher's GPU side: it pairs each proc sample with the GPU poll
//! of the same deadline, so that the per_node `gpu_percent` is the max of
//! that poll's devices and the per_gpu events follow their node sample
//! (a sample waits up to [`GPU_HOLD_POLLS`] polls for a late poll), and
//! turns the driver's back-filled utilisation samples into records.
//! Apart from the node sample's own fields (`super`): this only matches
//! up what two agents measured on one clock.

use super::{Dispatcher, Sink};
use crate::agent::gpu::{Backfill, GpuCounters, GpuDeviceReading, GpuSample, PollsIn};
use crate::agent::proc::ProcSample;
use crate::clock::Anchor;
use crate::record::{
    round1, EventKind, GpuProcess, GpuUtilSamples, Record, ResourceScope, ResourceUpdate, Value,
};
use crate::ring::Consumer;
use crate::stats;
use hdrhistogram::Histogram;
use std::collections::VecDeque;
use std::sync::Arc;

/// How many polls a proc sample waits for the GPU poll of its deadline
/// before it is written without it.
pub const GPU_HOLD_POLLS: u64 = 3;

/// The GPU agent's side of the dispatcher: its ring, and the pairing of
/// its polls with the proc samples of the same deadline.
#[derive(Debug)]
pub(super) struct GpuIn {
    rx: PollsIn,
    /// The agent's back-fills of driver samples.
    backfill_rx: Consumer<Backfill>,
    pub(super) counters: Arc<GpuCounters>,
    start_ns: u64,
    interval_ns: u64,
    /// Proc samples waiting for their GPU poll.
    held: VecDeque<ProcSample>,
    /// GPU polls not yet written.
    polls: VecDeque<Box<GpuSample>>,
    /// The newest GPU poll written: its grid index and per_node value.
    last: Option<(u64, Option<f64>)>,
    /// NVML time per device and poll, ns.
    pub(super) hist_latency: Histogram<u64>,
    /// The GPU thread's CPU time at its newest poll.
    pub(super) thread_cpu_ns: u64,
    /// The processes of the newest poll written: (gpu, pid, bytes).
    last_procs: Vec<(u32, u32, u64)>,
    /// Devices the polls have.
    pub(super) ndev: usize,
}

impl GpuIn {
    /// Sends a written poll's box back to the GPU agent (dropped if its
    /// ring is full: the agent then allocates another).
    fn give_back(&mut self, g: Box<GpuSample>) {
        let _ = self.rx.free.push(g);
    }

    /// A deadline's index on the shared sampling grid.
    fn index(&self, deadline_ns: u64) -> u64 {
        (deadline_ns.saturating_sub(self.start_ns) + self.interval_ns / 2) / self.interval_ns
    }
}

/// The node's `gpu_percent`: the max over the devices that answered.
fn max_gpu_percent(g: &GpuSample) -> Option<f64> {
    g.dev[..g.ndev as usize]
        .iter()
        .filter(|d| d.ok)
        .filter_map(|d| d.util_percent)
        .map(|v| round1(f64::from(v)))
        .reduce(f64::max)
}

/// One device's `per_gpu` update: RHAPSODY's `gpu_percent` and `gpu_id`,
/// and tal's extension fields (null where the device does not tell).
pub fn gpu_update(gpu_id: u32, r: &GpuDeviceReading) -> ResourceUpdate {
    let mut u = ResourceUpdate::empty(ResourceScope::PerGpu(gpu_id));
    u.gpu_percent = r.util_percent.map(|v| round1(f64::from(v)));
    let int = |v: Option<u64>| v.map_or(Value::Null, |v| Value::Int(v as i64));
    let float = |v: Option<f64>| v.map_or(Value::Null, Value::Float);
    let mem_percent = match (r.mem_used, r.mem_total) {
        (Some(u), Some(t)) if t > 0 => Some(round1(u as f64 / t as f64 * 100.0)),
        _ => None,
    };
    u.extra = vec![
        // Null: the driver's current figure; `convert` back-fills it.
        ("gpu_samples".into(), Value::Null),
        (
            "gpu_memory_util_percent".into(),
            float(r.mem_util_percent.map(|v| round1(f64::from(v)))),
        ),
        ("gpu_memory_used_bytes".into(), int(r.mem_used)),
        ("gpu_memory_total_bytes".into(), int(r.mem_total)),
        ("gpu_memory_percent".into(), float(mem_percent)),
        (
            "gpu_power_watts".into(),
            float(r.power_mw.map(|p| f64::from(p) / 1000.0)),
        ),
        (
            "gpu_energy_joules".into(),
            float(r.energy_j.map(|j| (j * 1000.0).round() / 1000.0)),
        ),
        (
            "gpu_temperature_celsius".into(),
            int(r.temp_c.map(u64::from)),
        ),
        (
            "gpu_sm_clock_mhz".into(),
            int(r.sm_clock_mhz.map(u64::from)),
        ),
        (
            "nvml_latency_us".into(),
            Value::Float(round1(r.latency_ns as f64 / 1e3)),
        ),
    ];
    u
}

impl<S: Sink> Dispatcher<S> {
    /// The per_gpu events of GPU poll `g`, onto `batch`.
    fn gpu_events(
        &mut self,
        gpu: &mut GpuIn,
        g: &GpuSample,
        anchor: &Anchor,
        batch: &mut Vec<Option<Record>>,
    ) {
        let (t, done) = (anchor.to_wall(g.deadline_ns), anchor.to_wall(g.done_ns));
        for (i, d) in g.dev[..g.ndev as usize].iter().enumerate() {
            if !d.ok {
                continue;
            }
            let _ = gpu.hist_latency.record(d.latency_ns.max(1));
            let ev = self.event(t, done, EventKind::ResourceUpdate(gpu_update(i as u32, d)));
            batch.push(Some(ev));
        }
        gpu.thread_cpu_ns = gpu.thread_cpu_ns.max(g.thread_cpu_ns);
        gpu.ndev = gpu.ndev.max(g.ndev as usize);
        gpu.last = Some((gpu.index(g.deadline_ns), max_gpu_percent(g)));
        // The GPU processes, when they changed (convert attributes them to
        // tasks by pid).
        let procs = &g.procs[..g.nproc as usize];
        let same = procs.len() == gpu.last_procs.len()
            && procs
                .iter()
                .zip(&gpu.last_procs)
                .all(|(p, &(gi, pid, b))| p.gpu == gi && p.pid == pid && p.used_bytes == b);
        if !same {
            gpu.last_procs.clear();
            gpu.last_procs
                .extend(procs.iter().map(|p| (p.gpu, p.pid, p.used_bytes)));
            let list = procs
                .iter()
                .map(|p| GpuProcess {
                    gpu_id: p.gpu,
                    pid: p.pid,
                    used_bytes: p.used_bytes,
                    ancestors: p.ancestors[..p.nanc as usize].to_vec(),
                })
                .collect();
            let ev = self.event(t, done, EventKind::GpuProcesses(list));
            batch.push(Some(ev));
        }
    }

    /// Pairs proc samples with the GPU polls of the same deadline: each
    /// per_node event carries the max `gpu_percent` of its poll and is
    /// followed by that poll's per_gpu events. A proc sample whose poll has
    /// not come waits up to [`GPU_HOLD_POLLS`] polls (or until the final
    /// drain); then it takes the previous poll's value if that is at most
    /// one poll older, else null. GPU polls whose proc sample is gone are
    /// written on their own.
    pub(super) fn drain_with_gpu(
        &mut self,
        gpu: &mut GpuIn,
        anchor: &Anchor,
        batch: &mut Vec<Option<Record>>,
    ) {
        while let Some(r) = self.rx.pop() {
            gpu.held.push_back(r);
        }
        while let Some(g) = gpu.rx.polls.pop() {
            gpu.polls.push_back(g);
        }
        while let Some(b) = gpu.backfill_rx.pop() {
            batch.push(Some(Record::GpuUtil(GpuUtilSamples {
                gpu_id: b.gpu,
                fetched_ns: anchor.to_wall(b.fetched_ns),
                covers_to_ns: anchor.to_wall(b.covers_to_ns),
                samples: b.samples[..b.n as usize]
                    .iter()
                    .map(|s| (anchor.to_wall(s.mono_ns), s.percent))
                    .collect(),
            })));
        }
        let newest = gpu.held.back().map(|p| gpu.index(p.deadline_ns));
        while let Some(p) = gpu.held.front() {
            let k = gpu.index(p.deadline_ns);
            while gpu
                .polls
                .front()
                .is_some_and(|g| gpu.index(g.deadline_ns) < k)
            {
                let Some(g) = gpu.polls.pop_front() else {
                    break;
                };
                self.gpu_events(gpu, &g, anchor, batch);
                gpu.give_back(g);
            }
            let matched = gpu
                .polls
                .front()
                .is_some_and(|g| gpu.index(g.deadline_ns) == k);
            if !matched
                && gpu.polls.is_empty()
                && !self.final_drain
                && newest.is_some_and(|n| n < k + GPU_HOLD_POLLS)
            {
                break; // its poll may still come
            }
            let Some(p) = gpu.held.pop_front() else { break };
            let matched = if matched { gpu.polls.pop_front() } else { None };
            let percent = match &matched {
                Some(g) => max_gpu_percent(g),
                None => gpu.last.filter(|(i, _)| i + 1 >= k).and_then(|(_, v)| v),
            };
            let ev = self.node_event(&p, percent, anchor);
            batch.push(Some(ev));
            if let Some(g) = matched {
                self.gpu_events(gpu, &g, anchor, batch);
                gpu.give_back(g);
            }
        }
        if self.final_drain {
            while let Some(g) = gpu.polls.pop_front() {
                self.gpu_events(gpu, &g, anchor, batch);
                gpu.give_back(g);
            }
        }
    }

    /// Also pair proc samples with the GPU agent's polls from `rx` (both
    /// agents sample on the grid `start_ns + k·interval_ns`).
    pub fn with_gpu(
        mut self,
        rx: PollsIn,
        backfill_rx: Consumer<Backfill>,
        counters: Arc<GpuCounters>,
        start_ns: u64,
        interval_ns: u64,
    ) -> Self {
        self.gpu = Some(GpuIn {
            rx,
            backfill_rx,
            counters,
            start_ns,
            interval_ns: interval_ns.max(1),
            held: VecDeque::new(),
            polls: VecDeque::new(),
            last: None,
            hist_latency: stats::histogram(60_000_000_000),
            thread_cpu_ns: 0,
            last_procs: Vec::new(),
            ndev: 0,
        });
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::gpu::{poll_rings, GpuSample, PollsOut};
    use crate::record::Event;
    use crate::ring::{channel, Producer};
    use std::time::Duration;

    const START: u64 = 1_000_000_000;
    const IV: u64 = 100_000_000;

    struct Rig {
        d: Dispatcher<Vec<Record>>,
        proc_tx: Producer<ProcSample>,
        gpu_tx: PollsOut,
        bf_tx: Producer<Backfill>,
    }

    fn rig() -> Rig {
        let (proc_tx, proc_rx) = channel(64);
        let (gpu_tx, gpu_rx) = poll_rings(64);
        let (bf_tx, bf_rx) = channel(4);
        let d = Dispatcher::new(
            proc_rx,
            Vec::new(),
            Arc::default(),
            Arc::default(),
            "tal".into(),
            Duration::from_nanos(IV),
            0,
            Duration::from_secs(10),
        )
        .with_gpu(gpu_rx, bf_rx, Arc::default(), START, IV);
        Rig {
            d,
            proc_tx,
            gpu_tx,
            bf_tx,
        }
    }

    #[test]
    fn a_back_fill_becomes_a_record_with_wall_clock_sample_times() {
        let mut r = rig();
        let mut b = Backfill {
            gpu: 1,
            fetched_ns: START + 5 * IV,
            covers_to_ns: START + 4 * IV,
            n: 2,
            ..Backfill::default()
        };
        b.samples[0] = crate::agent::gpu::UtilSample {
            mono_ns: START + IV,
            percent: 30.0,
        };
        b.samples[1] = crate::agent::gpu::UtilSample {
            mono_ns: START + 4 * IV,
            percent: 70.0,
        };
        r.bf_tx.push(b).unwrap();
        r.d.drain();
        let got: Vec<&GpuUtilSamples> =
            r.d.sink
                .iter()
                .filter_map(|x| match x {
                    Record::GpuUtil(g) => Some(g),
                    _ => None,
                })
                .collect();
        assert_eq!(got.len(), 1);
        let g = got[0];
        assert_eq!(g.gpu_id, 1);
        // Times keep their spacing on the wall clock.
        assert_eq!(g.fetched_ns - g.covers_to_ns, IV as i64);
        assert_eq!(g.samples.len(), 2);
        assert_eq!(g.samples[1].0 - g.samples[0].0, 3 * IV as i64);
        assert_eq!(g.covers_to_ns, g.samples[1].0);
        assert_eq!((g.samples[0].1, g.samples[1].1), (30.0, 70.0));
    }

    fn proc_at(k: u64) -> ProcSample {
        ProcSample {
            deadline_ns: START + k * IV,
            done_ns: START + k * IV + 1000,
            ..ProcSample::default()
        }
    }

    /// A poll at grid index `k` with one device per value (`None`: the
    /// device did not answer).
    fn poll_at(k: u64, utils: &[Option<f32>]) -> GpuSample {
        let mut g = GpuSample {
            deadline_ns: START + k * IV,
            done_ns: START + k * IV + 2000,
            ndev: utils.len() as u8,
            ..GpuSample::default()
        };
        for (d, u) in g.dev.iter_mut().zip(utils) {
            d.ok = u.is_some();
            d.util_percent = *u;
            d.latency_ns = 1000;
        }
        g
    }

    /// The resource events written so far: (scope, gpu_percent).
    fn written(d: &Dispatcher<Vec<Record>>) -> Vec<(ResourceScope, Option<f64>)> {
        d.sink
            .iter()
            .filter_map(|r| match r {
                Record::Event(Event {
                    kind: EventKind::ResourceUpdate(u),
                    ..
                }) => Some((u.scope, u.gpu_percent)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn each_node_sample_carries_its_polls_max_and_is_followed_by_its_devices() {
        let mut r = rig();
        for k in 0..3 {
            r.proc_tx.push(proc_at(k)).unwrap();
            r.gpu_tx
                .polls
                .push(Box::new(poll_at(
                    k,
                    &[Some(10.0 * k as f32), Some(5.0), None],
                )))
                .unwrap();
        }
        r.d.final_drain = true;
        r.d.drain();
        // Every written poll's box goes back to the GPU agent.
        assert_eq!(r.gpu_tx.free.len(), 3);
        use ResourceScope::*;
        assert_eq!(
            written(&r.d),
            vec![
                (PerNode, Some(5.0)),
                (PerGpu(0), Some(0.0)),
                (PerGpu(1), Some(5.0)),
                (PerNode, Some(10.0)),
                (PerGpu(0), Some(10.0)),
                (PerGpu(1), Some(5.0)),
                (PerNode, Some(20.0)),
                (PerGpu(0), Some(20.0)),
                (PerGpu(1), Some(5.0)),
            ]
        );
    }

    #[test]
    fn a_node_sample_waits_for_a_late_poll_but_not_for_ever() {
        use ResourceScope::*;
        let mut r = rig();
        r.proc_tx.push(proc_at(0)).unwrap();
        r.d.drain();
        assert!(written(&r.d).is_empty(), "sample 0 waits for its poll");
        r.gpu_tx
            .polls
            .push(Box::new(poll_at(0, &[Some(40.0)])))
            .unwrap();
        r.proc_tx.push(proc_at(1)).unwrap();
        r.d.drain();
        assert_eq!(
            written(&r.d),
            vec![(PerNode, Some(40.0)), (PerGpu(0), Some(40.0))],
            "sample 1 still waits"
        );
        // Poll 1 does not come in time (NVML stalled): sample 1 is written
        // once it is GPU_HOLD_POLLS polls old, with the previous poll's
        // value (one poll old); the younger samples go on waiting.
        for k in 2..2 + GPU_HOLD_POLLS {
            r.proc_tx.push(proc_at(k)).unwrap();
        }
        r.d.drain();
        let w = written(&r.d);
        assert_eq!(w.len(), 3, "{w:?}");
        assert_eq!(w[2], (PerNode, Some(40.0)));
        // The late poll 1 comes after all: written on its own, and its value
        // serves sample 2 (one poll younger); samples 3 and 4 get null at
        // the final drain (no poll within one interval of them).
        r.gpu_tx
            .polls
            .push(Box::new(poll_at(1, &[Some(70.0)])))
            .unwrap();
        r.d.final_drain = true;
        r.d.drain();
        let w = written(&r.d);
        assert_eq!(
            w[3..],
            [
                (PerGpu(0), Some(70.0)),
                (PerNode, Some(70.0)),
                (PerNode, None),
                (PerNode, None)
            ]
        );
        assert_eq!(
            w.iter().filter(|(s, _)| *s == PerNode).count(),
            2 + GPU_HOLD_POLLS as usize,
            "every node sample is written exactly once"
        );
    }
}
