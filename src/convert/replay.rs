//! A session's merged events, replayed as the checkpoint tells them: the
//! one pipeline behind every whole-session output (the JSONL checkpoint,
//! `convert::jsonl`; the Parquet dataset, `crate::dataset`), so that each
//! gets the same events with the same filled-in fields.
//!
//! What the replay decides, for every output alike: SessionStarted is the
//! earliest one of the logs (or one made up at the earliest header's start,
//! with `"recovered": true`, when no log has one); the GPU process records
//! are attributed to tasks and not passed on; a `tal.TaskResourceUpdate`
//! gets the task's GPU memory; a terminal event gets the duration the task
//! tracker decided and `incomplete_lifecycle`; tasks still open at the end
//! close as canceled; and one SessionEnded closes the session at the
//! latest node's end (see [`SessionEnd`]).

use super::merge::Merge;
use crate::clock::ns_to_secs;
use crate::event_json::note_energy;
use crate::ids;
use crate::instruments::Instruments;
use crate::log::LogReader;
use crate::record::{Event, EventKind, Value};
use crate::tasks::{Outcome, TaskSpan, TaskTracker};
use std::io;

/// Where a replayed session goes.
pub trait Sink {
    /// One event as the checkpoint writes it, seen on `node` ("" for the
    /// events made for the whole session: SessionStarted and SessionEnded
    /// made up by the replay, and the cancelations of tasks still open at
    /// the end).
    fn event(&mut self, node: &str, ev: &Event) -> io::Result<()>;
    /// One closed task's span, in closing order.
    fn span(&mut self, span: &TaskSpan) -> io::Result<()>;
}

/// What the replay leaves for the output's end (the metric line, the
/// session span).
#[derive(Debug)]
pub struct Replayed {
    /// The logs, read to their ends, with what reading them found.
    pub merge: Merge,
    /// The node ids, in the order of the logs.
    pub node_ids: Vec<String>,
    /// The session id.
    pub session_id: String,
    /// The backend of the first log's header.
    pub backend: String,
    /// RHAPSODY's instruments, as the events left them.
    pub inst: Instruments,
    /// The task tracker (the GPUs' energy is in it).
    pub tracker: TaskTracker,
    /// When the session started, ns since the epoch.
    pub start_ns: i64,
    /// How it ended.
    pub end: SessionEnd,
    /// Events passed to the sink (the one SessionEnded included).
    pub events: u64,
    /// Task spans passed to the sink.
    pub tasks: u64,
    /// Of [`Self::tasks`], those closed by the session's end.
    pub tasks_open_at_end: u64,
}

/// Merges `readers` (logs of one session) and replays every event and span
/// into `sink`, showing the bytes read in `progress`.
pub fn replay(
    readers: Vec<LogReader>,
    sink: &mut dyn Sink,
    progress: &crate::progress::Progress,
) -> io::Result<Replayed> {
    let session_id = readers[0].header().session_id.clone();
    let backend = readers[0].header().backend.clone();
    let start_wall_ns = readers
        .iter()
        .map(|r| r.header().start_wall_ns)
        .min()
        .unwrap_or(0);
    let node_ids: Vec<String> = readers.iter().map(|r| r.header().node_id.clone()).collect();
    let mut merge = Merge::new(readers);
    let mut r = Replay {
        sink,
        tracker: TaskTracker::default(),
        inst: Instruments::default(),
        events: 0,
        tasks: 0,
        progress,
    };
    // A SessionStarted made up at the earliest header start, for logs
    // whose own one is missing (a log cut off right after its header, or
    // whose first frame is damaged).
    let synth_started = Event {
        event_id: u128::from(ids::session_span_id(&session_id)) << 64 | 0x4000_8000_0000_0001,
        event_time_ns: start_wall_ns,
        emit_time_ns: start_wall_ns,
        backend: Some(backend.clone()),
        task_id: None,
        node_id: None,
        attributes: vec![("recovered".into(), Value::Bool(true))],
        kind: EventKind::SessionStarted,
    };
    let start_ns = r.events(&mut merge, &node_ids, &synth_started)?;
    // Tasks still open at the end close as canceled, then one SessionEnded
    // for the whole session.
    let end = SessionEnd::of(&merge, start_ns);
    let tasks_open_at_end = r.close_open_tasks(end.end_ns)?;
    r.event("", &end.event(&session_id, &backend, start_ns))?;
    Ok(Replayed {
        merge,
        node_ids,
        session_id,
        backend,
        inst: r.inst,
        tracker: r.tracker,
        start_ns,
        end,
        events: r.events,
        tasks: r.tasks,
        tasks_open_at_end,
    })
}

/// Fills in what a terminal event's client left out: the duration the
/// tracker decided and `incomplete_lifecycle` in the attributes, as
/// RHAPSODY's manager writes them.
fn fill_terminal(ev: &mut Event, duration: f64, incomplete: bool) {
    let EventKind::Task(t) = &mut ev.kind else {
        return;
    };
    if t.duration_seconds.is_none() {
        t.duration_seconds = Some(duration);
    }
    // (A failed task's error_type is repeated in its attributes by
    // `write_event`, for every TaskFailed line.)
    if incomplete
        && !ev
            .attributes
            .iter()
            .any(|(k, _)| k == "incomplete_lifecycle")
    {
        ev.attributes
            .push(("incomplete_lifecycle".into(), Value::Bool(true)));
    }
}

/// One replay's state: the events go through the task tracker and the
/// instruments to the sink.
struct Replay<'a> {
    sink: &'a mut dyn Sink,
    tracker: TaskTracker,
    inst: Instruments,
    events: u64,
    tasks: u64,
    progress: &'a crate::progress::Progress,
}

impl Replay<'_> {
    fn event(&mut self, node: &str, ev: &Event) -> io::Result<()> {
        self.events += 1;
        self.sink.event(node, ev)
    }

    /// Every merged event, through the task tracker: terminal events get
    /// their duration and GPU attributes, closed spans go to the sink.
    /// SessionStarted is passed once (the earliest), or made up at
    /// `synth.event_time_ns` if no log has one. Returns the session's start.
    fn events(&mut self, merge: &mut Merge, node_ids: &[String], synth: &Event) -> io::Result<i64> {
        let mut started = false;
        let mut session_start_ns = synth.event_time_ns;
        let mut n = 0u32;
        while let Some((i, mut ev)) = merge.next_event() {
            n = n.wrapping_add(1);
            if n % 4096 == 0 {
                self.progress.set(merge.bytes_read());
            }
            if let EventKind::SessionStarted = ev.kind {
                if started {
                    continue;
                }
                started = true;
                session_start_ns = ev.event_time_ns.min(synth.event_time_ns);
            } else if !started {
                started = true;
                self.event("", synth)?;
            }
            let node = &node_ids[i];
            if let EventKind::GpuProcesses(procs) = &ev.kind {
                // tal's own record: attributed to tasks, not written.
                self.tracker.observe_gpu(node, procs);
                continue;
            }
            if let (EventKind::TaskResources(r), Some(id)) = (&mut ev.kind, ev.task_id.as_deref()) {
                r.gpu_memory_bytes = self.tracker.gpu_now(id).to_vec();
            }
            self.inst.observe(node, &ev.kind);
            note_energy(&mut self.tracker, node, &ev);
            if let Outcome::Closed(c) = self.tracker.observe_on(node, &ev, &mut self.inst) {
                fill_terminal(&mut ev, c.duration_seconds, c.incomplete);
                ev.attributes.extend(c.terminal_extra);
                self.sink.span(&c.span)?;
                self.tasks += 1;
            }
            self.event(node, &ev)?;
        }
        if !started {
            self.event("", synth)?;
        }
        Ok(session_start_ns)
    }

    /// Closes the tasks still open at `end_ns` as canceled (their events
    /// and spans); how many there were.
    fn close_open_tasks(&mut self, end_ns: i64) -> io::Result<u64> {
        let open = self.tracker.open_tasks() as u64;
        let mut res = Ok(());
        let Self {
            sink,
            tracker,
            inst,
            events,
            ..
        } = self;
        tracker.close_all(end_ns, inst, |ev, span| {
            if res.is_err() {
                return;
            }
            *events += 1;
            res = sink.event("", &ev).and_then(|()| sink.span(&span));
        });
        res?;
        self.tasks += open;
        Ok(open)
    }
}

/// How the session ends: at the latest node's SessionEnded, or a killed
/// node's last record.
#[derive(Debug)]
pub struct SessionEnd {
    /// ns since the epoch.
    pub end_ns: i64,
    /// Some node log had no SessionEnded (its agent was killed).
    pub recovered: bool,
    /// The latest SessionEnded's id, kept for the one written.
    event_id: Option<u128>,
}

impl SessionEnd {
    fn of(merge: &Merge, session_start_ns: i64) -> Self {
        let mut end = Self {
            end_ns: session_start_ns,
            recovered: false,
            event_id: None,
        };
        let mut latest: Option<&Event> = None;
        for n in &merge.nodes {
            match &n.session_ended {
                Some(e) => {
                    end.end_ns = end.end_ns.max(e.event_time_ns);
                    if latest.is_none_or(|l| e.event_time_ns >= l.event_time_ns) {
                        latest = Some(e);
                    }
                }
                None => {
                    end.recovered = true;
                    end.end_ns = end.end_ns.max(n.last_time_ns);
                }
            }
        }
        end.event_id = latest.map(|e| e.event_id);
        end
    }

    /// The one SessionEnded line of the session.
    fn event(&self, session_id: &str, backend: &str, session_start_ns: i64) -> Event {
        let mut attributes = Vec::new();
        if self.recovered {
            attributes.push(("recovered".into(), Value::Bool(true)));
        }
        Event {
            event_id: self.event_id.unwrap_or_else(|| {
                u128::from(ids::session_span_id(session_id)) << 64 | 0x4000_8000_0000_0000
            }),
            event_time_ns: self.end_ns,
            emit_time_ns: self.end_ns,
            backend: Some(backend.to_string()),
            task_id: None,
            node_id: None,
            attributes,
            kind: EventKind::SessionEnded {
                duration_seconds: ns_to_secs(self.end_ns.saturating_sub(session_start_ns)),
            },
        }
    }
}
