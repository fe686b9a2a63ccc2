//! Back-filled GPU utilisation: each `per_gpu` poll gets the driver samples
//! taken in its own interval.
//!
//! The GPU agent (see `crate::agent::gpu`) writes each poll at once with
//! NVML's current figure, and every few seconds a [`GpuUtilSamples`] record
//! with the driver's own samples since the previous one. Those records come
//! later in the log than the polls they cover, so each log with GPUs gets a
//! second, look-ahead reader over the same file that decodes only those
//! records (the others are skipped by their first payload byte) and runs at
//! most [`HORIZON_NS`] of recorded time ahead of the merge. Memory is the
//! samples in that span, whatever the log's length or how many task events
//! it holds.
//!
//! For a `per_gpu` event of device `g` at poll time `t`, with `p` the
//! device's previous poll in this log:
//! - if the driver's samples are known up to `t` and some were taken in
//!   `(p, t]`: `gpu_percent` is their mean, `gpu_samples` their number, and
//!   `gpu_percent_age_ms` how long before `t` the newest was taken;
//! - if they are known but none was taken in `(p, t]` (the driver samples
//!   every ~167 ms, the polls come every 100 ms): `gpu_samples: 0`, and
//!   `gpu_percent` is the previous sample's value with its age, so the
//!   event says it is not fresh; null before the driver's first sample;
//! - if they are not known up to `t` (no back-fill covers it: a driver
//!   without `nvmlDeviceGetSamples`, or a log cut off by a crash after its
//!   last back-fill): the event keeps NVML's current figure and
//!   `gpu_samples` stays null.
//!
//! The `per_node` event of the same poll gets the max over its devices of
//! the filled values, or of the current figure for a device no back-fill
//! covers (read from the poll's `per_gpu` events, which follow it).

use crate::log::LogReader;
use crate::record::{round1, Event, EventKind, GpuUtilSamples, Record, ResourceScope, Value};
use std::collections::VecDeque;
use std::path::Path;

/// How far (in recorded time) the look-ahead reader may run past the
/// merge: a back-fill covers at most 10 s and is written within about a
/// second, so 30 s leaves room for a slow agent.
pub const HORIZON_NS: i64 = 30_000_000_000;

/// Samples kept per device at most (a driver takes about 6 a second).
const MAX_PENDING: usize = 4096;

/// The first payload byte of a [`Record::GpuUtil`] frame (bincode writes
/// the variant index, 3, as one byte).
const GPU_UTIL_TAG: u8 = 3;

/// What the driver's samples say about one poll.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fill {
    /// Samples were taken in the poll's interval.
    Samples {
        /// Their mean, %.
        mean: f64,
        /// How many.
        count: u32,
        /// When the newest was taken, ns since the epoch.
        newest_ns: i64,
    },
    /// None was taken in the interval; the previous one.
    Carried {
        /// Its value, %.
        value: f32,
        /// When it was taken.
        at_ns: i64,
    },
    /// Known, and the driver had taken no sample yet.
    NoSample,
    /// Not known: no back-fill covers the poll.
    Unknown,
}

impl Fill {
    fn value(self) -> Option<f64> {
        match self {
            Fill::Samples { mean, .. } => Some(mean),
            Fill::Carried { value, .. } => Some(f64::from(value)),
            Fill::NoSample | Fill::Unknown => None,
        }
    }
}

#[derive(Debug)]
struct DevFill {
    pending: VecDeque<(i64, f32)>,
    covers_to: i64,
    prev_poll: Option<i64>,
    last: Option<(i64, f32)>,
    cached: Option<(i64, Fill)>,
}

impl Default for DevFill {
    fn default() -> Self {
        Self {
            pending: VecDeque::new(),
            covers_to: i64::MIN,
            prev_poll: None,
            last: None,
            cached: None,
        }
    }
}

/// The back-fill of one log. See the module doc.
#[derive(Debug)]
pub struct GpuFill {
    reader: LogReader,
    exhausted: bool,
    ahead_ns: i64,
    devs: Vec<DevFill>,
}

impl GpuFill {
    /// A back-fill for the log at `path`, whose header names `gpu_ids`;
    /// `None` when the log has no GPUs or cannot be opened a second time
    /// (then the polls keep NVML's current figures).
    pub fn open(path: &Path, gpu_ids: Vec<u32>) -> Option<Self> {
        if gpu_ids.is_empty() {
            return None;
        }
        let reader = LogReader::open(path).ok()?.only_tag(GPU_UTIL_TAG);
        Some(Self {
            reader,
            exhausted: false,
            ahead_ns: i64::MIN,
            devs: Vec::new(),
        })
    }

    /// The `gpu_id`s a log header's attributes name (`gpu.N.uuid`).
    pub fn gpu_ids(attributes: &[(String, String)]) -> Vec<u32> {
        let mut ids: Vec<u32> = attributes
            .iter()
            .filter_map(|(k, _)| k.strip_prefix("gpu.")?.strip_suffix(".uuid")?.parse().ok())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    fn dev(&mut self, g: u32) -> &mut DevFill {
        let g = g as usize;
        if self.devs.len() <= g {
            self.devs.resize_with(g + 1, DevFill::default);
        }
        &mut self.devs[g]
    }

    fn take(&mut self, r: GpuUtilSamples) {
        self.ahead_ns = self.ahead_ns.max(r.fetched_ns);
        if r.gpu_id as usize >= crate::agent::gpu::MAX_GPUS {
            return;
        }
        let d = self.dev(r.gpu_id);
        for s in r.samples {
            if d.pending.back().is_none_or(|b| b.0 < s.0) {
                if d.pending.len() == MAX_PENDING {
                    d.pending.pop_front();
                }
                d.pending.push_back(s);
            }
        }
        d.covers_to = d.covers_to.max(r.covers_to_ns);
    }

    /// Reads back-fills until device `g`'s samples are known up to `t`,
    /// or the look-ahead is [`HORIZON_NS`] past `t`.
    fn pull(&mut self, g: u32, t: i64) {
        while !self.exhausted
            && self.dev(g).covers_to < t
            && self.ahead_ns <= t.saturating_add(HORIZON_NS)
        {
            match self.reader.next_record() {
                Some(Record::GpuUtil(r)) => self.take(r),
                Some(_) => {}
                None => self.exhausted = true,
            }
        }
    }

    /// What the samples say about device `g`'s poll at `t` (the same answer
    /// for the same `t`; polls of a device come in time order).
    pub fn fill(&mut self, g: u32, t: i64) -> Fill {
        if g as usize >= crate::agent::gpu::MAX_GPUS {
            return Fill::Unknown;
        }
        if let Some((ct, f)) = self.dev(g).cached {
            if ct == t {
                return f;
            }
        }
        self.pull(g, t);
        let d = self.dev(g);
        let fill = if d.covers_to < t {
            Fill::Unknown
        } else {
            let (mut sum, mut count, mut newest) = (0.0f64, 0u32, 0i64);
            while let Some(&(st, v)) = d.pending.front().filter(|s| s.0 <= t) {
                d.pending.pop_front();
                if d.prev_poll.is_none_or(|p| st > p) {
                    sum += f64::from(v);
                    count += 1;
                    newest = st;
                }
                d.last = Some((st, v));
            }
            match (count, d.last) {
                (0, Some((at_ns, value))) => Fill::Carried { value, at_ns },
                (0, None) => Fill::NoSample,
                _ => Fill::Samples {
                    mean: sum / f64::from(count),
                    count,
                    newest_ns: newest,
                },
            }
        };
        d.prev_poll = Some(t);
        d.cached = Some((t, fill));
        fill
    }

    /// Fills `ev` if it is a poll (see the module doc); `next` are the
    /// events that follow it in the log.
    pub fn apply<'a>(&mut self, ev: &mut Event, next: impl Iterator<Item = &'a Event>) {
        let EventKind::ResourceUpdate(u) = &mut ev.kind else {
            return;
        };
        let t = ev.event_time_ns;
        match u.scope {
            ResourceScope::PerGpu(g) => {
                let (value, samples, age) = match self.fill(g, t) {
                    Fill::Unknown => return,
                    Fill::Samples {
                        mean,
                        count,
                        newest_ns,
                    } => (
                        Some(mean),
                        i64::from(count),
                        Some(t.saturating_sub(newest_ns)),
                    ),
                    Fill::Carried { value, at_ns } => {
                        (Some(f64::from(value)), 0, Some(t.saturating_sub(at_ns)))
                    }
                    Fill::NoSample => (None, 0, None),
                };
                u.gpu_percent = value.map(round1);
                set(&mut u.extra, "gpu_samples", Value::Int(samples), None);
                let age = age.map_or(Value::Null, |a| Value::Float(round1(a as f64 / 1e6)));
                set(&mut u.extra, "gpu_percent_age_ms", age, Some("gpu_samples"));
            }
            ResourceScope::PerNode => {
                if u.gpu_percent.is_none() {
                    return;
                }
                // This poll's per_gpu events follow it in the log: the
                // current figures of the devices no back-fill covers.
                let mut max: Option<f64> = None;
                let mut filled = false;
                for e in next.take_while(|e| e.event_time_ns == t) {
                    let EventKind::ResourceUpdate(g) = &e.kind else {
                        continue;
                    };
                    let ResourceScope::PerGpu(id) = g.scope else {
                        continue;
                    };
                    let v = match self.fill(id, t) {
                        Fill::Unknown => g.gpu_percent,
                        f => {
                            filled = true;
                            f.value().map(round1)
                        }
                    };
                    max = match (max, v) {
                        (Some(a), Some(b)) => Some(a.max(b)),
                        (a, b) => a.or(b),
                    };
                }
                if filled {
                    u.gpu_percent = max;
                }
            }
        }
    }
}

/// Sets `key` in `extra`, or inserts it after `after` (else at the end).
fn set(extra: &mut Vec<(String, Value)>, key: &str, v: Value, after: Option<&str>) {
    if let Some(e) = extra.iter_mut().find(|(k, _)| k == key) {
        e.1 = v;
        return;
    }
    let at = after
        .and_then(|a| extra.iter().position(|(k, _)| k == a))
        .map_or(extra.len(), |i| i + 1);
    extra.insert(at, (key.to_string(), v));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{Header, LogWriter};
    use crate::record::ResourceUpdate;

    const MS: i64 = 1_000_000;

    fn header() -> Header {
        Header {
            session_id: "s".into(),
            node_id: "n".into(),
            hostname: "n".into(),
            backend: "tal".into(),
            pid: 1,
            tal_version: "0".into(),
            start_wall_ns: 0,
            start_mono_ns: 0,
            interval_ns: 100 * MS as u64,
            chunk_bytes: 1 << 20,
            ncpus: 1,
            attributes: vec![("gpu.0.uuid".into(), "GPU-0".into())],
        }
    }

    fn poll(t: i64, rate: f64) -> Event {
        let mut u = ResourceUpdate::empty(ResourceScope::PerGpu(0));
        u.gpu_percent = Some(rate);
        u.extra = vec![("gpu_samples".into(), Value::Null)];
        Event {
            event_id: 0,
            event_time_ns: t,
            emit_time_ns: t,
            backend: None,
            task_id: None,
            node_id: None,
            attributes: Vec::new(),
            kind: EventKind::ResourceUpdate(u),
        }
    }

    fn backfill(fetched: i64, covers: i64, samples: &[(i64, f32)]) -> Record {
        Record::GpuUtil(GpuUtilSamples {
            gpu_id: 0,
            fetched_ns: fetched,
            covers_to_ns: covers,
            samples: samples.to_vec(),
        })
    }

    fn fields(ev: &Event) -> (Option<f64>, Value, Value) {
        let EventKind::ResourceUpdate(u) = &ev.kind else {
            unreachable!()
        };
        let get = |k: &str| {
            u.extra
                .iter()
                .find(|(n, _)| n == k)
                .map_or(Value::Null, |(_, v)| v.clone())
        };
        (u.gpu_percent, get("gpu_samples"), get("gpu_percent_age_ms"))
    }

    #[test]
    fn polls_get_the_samples_of_their_own_interval() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = LogWriter::create(&dir.path().join("g.tal"), &header()).unwrap();
        // Polls every 100 ms from 100 ms; samples every 167 ms; two back-fills,
        // the first covering up to 500 ms, written after the polls they cover.
        for t in 1..=5 {
            w.append(&Record::Event(poll(t * 100 * MS, 1.0))).unwrap();
        }
        w.append(&backfill(
            520 * MS,
            501 * MS,
            &[(167 * MS, 10.0), (334 * MS, 20.0), (501 * MS, 30.0)],
        ))
        .unwrap();
        // A record of another kind between back-fills is skipped unread.
        w.append(&Record::Event(poll(600 * MS, 1.0))).unwrap();
        w.append(&backfill(900 * MS, 750 * MS, &[(668 * MS, 40.0)]))
            .unwrap();
        let path = w.finish(None).unwrap();

        let mut f = GpuFill::open(&path, vec![0]).unwrap();
        let mut got = Vec::new();
        for t in 1..=8 {
            let mut ev = poll(t * 100 * MS, 99.0);
            f.apply(&mut ev, std::iter::empty());
            got.push(fields(&ev));
        }
        let (i, fl) = (Value::Int, Value::Float);
        assert_eq!(
            got,
            vec![
                (None, i(0), Value::Null),              // 100: no sample yet
                (Some(10.0), i(1), fl(33.0)),           // 200: the 167 ms sample
                (Some(10.0), i(0), fl(133.0)),          // 300: none new: carried, and says so
                (Some(20.0), i(1), fl(66.0)),           // 400
                (Some(20.0), i(0), fl(166.0)),          // 500: 501 is after it
                (Some(30.0), i(1), fl(99.0)),           // 600
                (Some(40.0), i(1), fl(32.0)),           // 700
                (Some(99.0), Value::Null, Value::Null), // 800: not covered: NVML's figure stays
            ]
        );
    }

    #[test]
    fn a_log_without_back_fills_keeps_the_current_figures() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = LogWriter::create(&dir.path().join("g.tal"), &header()).unwrap();
        for t in 1..=3 {
            w.append(&Record::Event(poll(t * 100 * MS, 5.0))).unwrap();
        }
        let path = w.finish(None).unwrap();
        let mut f = GpuFill::open(&path, vec![0]).unwrap();
        let mut ev = poll(100 * MS, 5.0);
        f.apply(&mut ev, std::iter::empty());
        assert_eq!(fields(&ev), (Some(5.0), Value::Null, Value::Null));
        assert_eq!(
            GpuFill::gpu_ids(&[
                ("gpu.1.uuid".into(), "b".into()),
                ("gpu.0.name".into(), "x".into()),
                ("gpu.0.uuid".into(), "a".into()),
                ("slurm.job_id".into(), "1".into()),
            ]),
            vec![0, 1]
        );
        assert!(GpuFill::open(&path, vec![]).is_none());
    }
}
