//! A Parquet dataset's items (`tal convert --format parquet`, or every
//! node's `tal record --format parquet`): `tal report DIR/` and
//! `tal summary DIR/` read the session from the dataset as from its logs.
//!
//! A dataset holds each node log's replay apart (see `crate::dataset`):
//! its events as rows of four tables, its task spans, and a `session` row
//! with its start, end, metric line and the agent's last snapshot. This
//! source puts the session back together as a conversion of all the logs
//! at once would tell it:
//!
//! - each log's rows are read back in the log's order ([`super::parts`]:
//!   only the columns the views read, on worker threads, a few hundred rows
//!   at a time) and the logs are merged by time, as `tal convert` merges
//!   logs (equal times in the order of the logs: by node folder, then by
//!   part name, the log's start);
//! - one SessionStarted, the earliest; the nodes' SessionEnded give way to
//!   one for the session, at the latest node's end (`recovered` where some
//!   node's agent was killed), as the merged replay writes it;
//! - the metric line: the task counters summed over the nodes, the agents'
//!   own figures merged from their snapshots exactly as a conversion of
//!   the logs merges them (sums, the largest peak, the histograms'
//!   percentiles), and every log's `tal_logs` entry; the instruments'
//!   percentiles of task durations and the GPUs' energy, which the views
//!   do not read, are left out;
//! - the session span from the first start to the last end.
//!
//! Where a dataset differs from the JSONL of the same logs (a task whose
//! events were sent to two nodes' agents; a task open when its node's
//! agent stopped: see `docs/dataset.md`), the views show what the dataset
//! holds.

use super::parts::{feed_samples, fig, num, Chunk, Fed, Reading, Row, Workers};
use super::{Body, GpuSample, Head, Item, NodeFeed, PerCore, ReadApart, Source, Span, TaskSample};
use crate::convert::lines::{input_error, LineStats};
use crate::record::AgentSnapshot;
use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, TimestampNanosecondType};
use arrow_array::{Array, RecordBatch};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::path::{Path, PathBuf};

/// Rows of a worker's merged chunk.
const CHUNK_ROWS: usize = 4096;

/// Rows a worker reads of one of its logs at a time: few, so that all its
/// logs' rows waiting to be merged stay in its core's caches.
const LOG_ROWS: usize = 128;

/// What a log's `session` row says.
#[derive(Debug)]
struct LogInfo {
    /// Its node folder and part file names.
    folder: String,
    part: String,
    backend: String,
    start_ns: i64,
    end_ns: i64,
    recovered: bool,
    /// Rows of its events (for the progress).
    rows: u64,
    /// Its parts' bytes.
    bytes: u64,
    metric: Map<String, Value>,
    snapshot: Option<AgentSnapshot>,
}

/// A dataset, its `session` rows read.
#[derive(Debug)]
pub struct Dataset {
    root: PathBuf,
    session_id: String,
    logs: Vec<LogInfo>,
    /// The task spans, in their merged order, once read (a view reads the
    /// session twice; the spans are few beside the samples).
    spans: Option<Vec<TaskSpanRow>>,
    /// Whether each log's samples can be read apart (see
    /// [`Source::each_nodes_apart`]), once looked at.
    apart: Option<bool>,
    quiet: bool,
    what: String,
}

/// Whether `dir` is a dataset's folder (it has tal's marker file).
pub fn is_dataset(dir: &Path) -> bool {
    dir.join(crate::dataset::MARKER).exists()
}

impl Dataset {
    /// Opens the dataset in `root`: its marker and every log's `session`
    /// row. Each pass shows its progress as `what` unless `quiet`.
    pub fn open(root: &Path, what: &str, quiet: bool) -> io::Result<Self> {
        let session_id = crate::dataset::read_marker(
            &root.join(crate::dataset::MARKER),
            "give the folder `tal convert --format parquet` or `tal record --format parquet` wrote",
        )?;
        let mut logs = Vec::new();
        let sessions = list_parts(&root.join("session"))?;
        // A log's parts without its session row (a conversion cut short
        // between renames, a row taken out): refused, not left out.
        for table in &crate::dataset::TABLES[..5] {
            let dir = root.join(table);
            if !dir.exists() {
                continue;
            }
            for (folder, part) in list_parts(&dir)? {
                let known = (folder.clone(), part.clone());
                if sessions.binary_search(&known).is_err() {
                    return Err(input_error(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "{} has no session row (session/{folder}/{part}): its log's \
                             conversion was cut short; convert its log again \
                             (tal convert LOG --format parquet -o DIR)",
                            dir.join(&folder).join(&part).display()
                        ),
                    )));
                }
            }
        }
        for (folder, part) in &sessions {
            let info = read_session_row(root, folder, part, &session_id)?;
            logs.push(info);
        }
        if logs.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "{} has no parts (session/node=*/part-*.parquet): a node writes them when \
                     its `tal record --format parquet` ends",
                    root.display()
                ),
            ));
        }
        Ok(Self {
            root: root.to_path_buf(),
            session_id,
            logs,
            spans: None,
            apart: None,
            quiet,
            what: what.to_string(),
        })
    }

    /// Logs (parts of the `session` table) in the dataset.
    pub fn logs(&self) -> usize {
        self.logs.len()
    }
}

/// The `node=*/part-*.parquet` files under a table's folder, by folder
/// and then part name (temporaries, which start with a dot, left out).
fn list_parts(table: &Path) -> io::Result<Vec<(String, String)>> {
    let names = |dir: &Path| -> io::Result<Vec<String>> {
        let rd = std::fs::read_dir(dir)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot read {}: {e}", dir.display())))?;
        let mut v: Vec<String> = rd
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .filter(|n| !n.starts_with('.') && !n.starts_with('_'))
            .collect();
        v.sort();
        Ok(v)
    };
    let mut out = Vec::new();
    for folder in names(table)? {
        let dir = table.join(&folder);
        let is_dir = std::fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir());
        if !folder.starts_with("node=") || !is_dir {
            continue;
        }
        for part in names(&dir)? {
            if part.starts_with("part-") && part.ends_with(".parquet") {
                out.push((folder.clone(), part));
            }
        }
    }
    Ok(out)
}

/// Reads one log's `session` row.
fn read_session_row(root: &Path, folder: &str, part: &str, session: &str) -> io::Result<LogInfo> {
    let path = root.join("session").join(folder).join(part);
    let bad = |why: String| input_error(io::Error::new(io::ErrorKind::InvalidData, why));
    let columns = [
        "session_id",
        "backend",
        "start_time",
        "end_time",
        "recovered",
        "events",
        "metric",
        "agent_snapshot",
    ];
    let reader = super::parts::read_columns(&path, &columns, 16, session)?;
    // One row, in whichever batch: more is not a log's session part.
    let mut batch: Option<RecordBatch> = None;
    let mut rows = 0;
    for b in reader {
        let b = b.map_err(|e| bad(format!("{}: {e}", path.display())))?;
        rows += b.num_rows();
        if rows > 1 {
            return Err(bad(format!(
                "{} has more than one row: a log's session part has one",
                path.display()
            )));
        }
        if b.num_rows() == 1 {
            batch = Some(b);
        }
    }
    let b = batch.ok_or_else(|| bad(format!("{} has no row", path.display())))?;
    let text = |name: &str| -> io::Result<String> {
        let c = super::parts::column(&path, &b, name)?;
        c.as_string_opt::<i32>()
            .filter(|a| a.is_valid(0))
            .map(|a| a.value(0).to_string())
            .ok_or_else(|| bad(format!("{}: `{name}` is not a string", path.display())))
    };
    let time = |name: &str| -> io::Result<i64> {
        let c = super::parts::column(&path, &b, name)?;
        c.as_primitive_opt::<TimestampNanosecondType>()
            .filter(|a| a.is_valid(0))
            .map(|a| a.value(0))
            .ok_or_else(|| bad(format!("{}: `{name}` is not a time", path.display())))
    };
    let theirs = text("session_id")?;
    if theirs != session {
        return Err(bad(format!(
            "{} is of session {theirs:?}, and the dataset of session {session:?}: \
             take it out of the folder",
            path.display()
        )));
    }
    let metric = match serde_json::from_str(&text("metric")?) {
        Ok(Value::Object(m)) => m,
        _ => {
            return Err(bad(format!(
                "{}: `metric` is not a JSON object",
                path.display()
            )))
        }
    };
    // No snapshot (an agent killed before its first, a dataset of an
    // older tal) leaves the agents' figures out; a damaged one is refused.
    let snapshot = match b
        .column_by_name("agent_snapshot")
        .and_then(|c| c.as_binary_opt::<i32>())
        .filter(|a| a.is_valid(0))
    {
        None => None,
        Some(a) => Some(
            bincode::decode_from_slice(a.value(0), crate::log::bincode_decode_config())
                .map(|(s, _)| s)
                .map_err(|e| bad(format!("{}: `agent_snapshot`: {e}", path.display())))?,
        ),
    };
    let rows = super::parts::column(&path, &b, "events")?
        .as_primitive_opt::<Int64Type>()
        .map_or(0, |a| a.value(0).max(0) as u64);
    let recovered = super::parts::column(&path, &b, "recovered")?
        .as_boolean_opt()
        .is_some_and(|a| a.value(0));
    let bytes = crate::dataset::TABLES
        .iter()
        .filter_map(|t| std::fs::metadata(root.join(t).join(folder).join(part)).ok())
        .map(|m| m.len())
        .sum();
    Ok(LogInfo {
        folder: folder.to_string(),
        part: part.to_string(),
        backend: text("backend")?,
        start_ns: time("start_time")?,
        end_ns: time("end_time")?,
        recovered,
        rows,
        bytes,
        metric,
        snapshot,
    })
}

/// A worker's stream being merged: its chunk and where in it.
struct Cursor {
    chunk: Chunk,
    at: usize,
    /// The worker.
    w: usize,
}

impl Cursor {
    /// The next row's place in the merge: its time, its log, and the
    /// worker (whose stream it is).
    fn key(&self) -> (i64, u32, usize) {
        (self.chunk.times[self.at], self.chunk.logs[self.at], self.w)
    }
}

/// What the merge keeps of the nodes' SessionStarted and SessionEnded.
#[derive(Default)]
struct SessionEvents {
    started: bool,
    /// The latest SessionEnded of a node whose agent ended it: its time
    /// and id.
    latest_end: Option<(f64, String)>,
    events: u64,
}

impl Source for Dataset {
    fn each(&mut self, f: &mut dyn FnMut(Item<'_>)) -> io::Result<LineStats> {
        self.each_with(None, f).map(|(read, _)| read)
    }

    /// Each log's samples read straight to `feed` (see
    /// [`super::parts::feed_samples`]) where every log's are one node's,
    /// named, and no two logs are the same node's: a log's samples then
    /// come in the log's order, as the merge gives them.
    fn each_nodes_apart(
        &mut self,
        feed: &dyn NodeFeed,
        f: &mut dyn FnMut(Item<'_>),
    ) -> Option<io::Result<ReadApart>> {
        if self.apart.is_none() {
            match self.samples_apart() {
                Ok(apart) => self.apart = Some(apart),
                Err(e) => return Some(Err(e)),
            }
        }
        if self.apart != Some(true) {
            return None;
        }
        Some(
            self.each_with(Some(feed), f)
                .map(|(read, in_order)| ReadApart { read, in_order }),
        )
    }
}

impl Dataset {
    /// Whether every log's samples are one node's, named, and no two logs
    /// the same node's (only the parts' footers are read).
    fn samples_apart(&self) -> io::Result<bool> {
        let mut nodes = std::collections::HashSet::new();
        for l in &self.logs {
            let node = super::parts::samples_node(&self.root, (&l.folder, &l.part))?;
            if !node.is_some_and(|n| nodes.insert(n)) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// [`Source::each`], the node samples to `apart` if given (and then
    /// whether every log's were in time order).
    fn each_with(
        &mut self,
        apart: Option<&dyn NodeFeed>,
        f: &mut dyn FnMut(Item<'_>),
    ) -> io::Result<(LineStats, bool)> {
        let total = self
            .logs
            .iter()
            .fold(0u64, |a, l| a.saturating_add(l.bytes));
        let progress = crate::progress::Progress::bytes(&self.what, total, self.quiet);
        let r = match apart {
            None => self.merge(f, &progress, true).map(|s| (s, true)),
            Some(feed) => self.merge_apart(feed, f, &progress),
        };
        progress.finish();
        let (mut s, in_order) = r?;
        let spans = self.spans(f)?;
        self.end_items(f, &s);
        s.events += 1;
        let read = LineStats {
            lines: s.events + spans + 2,
            ..LineStats::default()
        };
        Ok((read, in_order))
    }

    /// [`Self::merge`] of every row but the node samples (of which each
    /// log's first is a [`Body::Apart`] in its place), which the
    /// machine's cores read at the same time, each log's to `feed`; and
    /// whether every log's were in time order.
    fn merge_apart(
        &self,
        feed: &dyn NodeFeed,
        f: &mut dyn FnMut(Item<'_>),
        progress: &crate::progress::Progress,
    ) -> io::Result<(SessionEvents, bool)> {
        let threads = crate::dataset::threads().min(self.logs.len());
        let stop = std::sync::atomic::AtomicBool::new(false);
        let (root, session) = (&self.root, self.session_id.as_str());
        std::thread::scope(|scope| {
            let mut handles = Vec::with_capacity(threads);
            for w in 0..threads {
                let (logs, stop) = (&self.logs, &stop);
                let t = std::thread::Builder::new().name(format!("tal-samples-{w}"));
                handles.push(t.spawn_scoped(scope, move || -> io::Result<Fed> {
                    let mut sink = feed.sink();
                    let mut all = Fed {
                        rows: 0,
                        in_order: true,
                    };
                    for (i, l) in logs.iter().enumerate().skip(w).step_by(threads) {
                        if stop.load(std::sync::atomic::Ordering::Relaxed) {
                            break;
                        }
                        // Progress: the log's share of its bytes by rows.
                        let mut done = |rows: usize| {
                            let b = u128::from(l.bytes) * rows as u128 / u128::from(l.rows.max(1));
                            progress.add(u64::try_from(b).unwrap_or(u64::MAX));
                        };
                        let part = (l.folder.as_str(), l.part.as_str());
                        let log = (session, i as u32);
                        let fed = feed_samples(root, part, log, &mut *sink, &mut done)?;
                        // The first is in the merge, as a `Row::Apart`.
                        all.rows += fed.rows.saturating_sub(1);
                        all.in_order &= fed.in_order;
                    }
                    Ok(all)
                })?);
            }
            let merged = self.merge(f, progress, false);
            if merged.is_err() {
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            let mut all = Ok((0, true));
            for h in handles {
                let r = h
                    .join()
                    .unwrap_or_else(|_| Err(io::Error::other("a dataset reader thread panicked")));
                all = all.and_then(|(rows, in_order)| {
                    r.map(|fed| (rows + fed.rows, in_order && fed.in_order))
                });
            }
            let mut s = merged?;
            let (rows, in_order) = all?;
            s.events += rows;
            Ok((s, in_order))
        })
    }

    /// Every log's events (its node samples too if `samples`), merged by
    /// time, into `f`; what the session's own events were.
    fn merge(
        &self,
        f: &mut dyn FnMut(Item<'_>),
        progress: &crate::progress::Progress,
        samples: bool,
    ) -> io::Result<SessionEvents> {
        let names: Vec<(String, String)> = self
            .logs
            .iter()
            .map(|l| (l.folder.clone(), l.part.clone()))
            .collect();
        crate::sys::raise_nofile();
        let threads = crate::dataset::threads();
        let reading = Reading {
            rows: CHUNK_ROWS,
            per_log: LOG_ROWS,
            samples,
        };
        let workers = Workers::start(&self.root, &names, threads, reading, &self.session_id)?;
        let (rows, bytes) = self.logs.iter().fold((0u64, 0u64), |(r, b), l| {
            (r.saturating_add(l.rows), b.saturating_add(l.bytes))
        });
        let mut cursors: Vec<Option<Cursor>> = Vec::with_capacity(workers.len());
        let mut heap = BinaryHeap::with_capacity(workers.len());
        for w in 0..workers.len() {
            workers.ask(w, None);
        }
        // The next chunk of worker `w`, asking for the one after it (into
        // the buffers of the one merged, `spent`).
        let next = |w: usize, spent: Option<Chunk>| -> io::Result<Option<Cursor>> {
            let chunk = workers.take(w)?;
            let done = u128::from(bytes) * chunk.rows.len() as u128 / u128::from(rows.max(1));
            progress.add(u64::try_from(done).unwrap_or(u64::MAX));
            if chunk.last {
                return Ok((!chunk.rows.is_empty()).then_some(Cursor { chunk, at: 0, w }));
            }
            workers.ask(w, spent);
            Ok(Some(Cursor { chunk, at: 0, w }))
        };
        for w in 0..workers.len() {
            cursors.push(next(w, None)?);
            if let Some(c) = &cursors[w] {
                heap.push(Reverse(c.key()));
            }
        }
        let mut s = SessionEvents::default();
        while let Some(Reverse((_, _, w))) = heap.pop() {
            let c = cursors[w]
                .as_mut()
                .expect("a worker in the heap has a chunk");
            self.row(&c.chunk, c.at, &mut s, f);
            c.at += 1;
            while cursors[w]
                .as_ref()
                .is_some_and(|c| c.at == c.chunk.rows.len())
            {
                let spent = cursors[w].take().map(|c| c.chunk);
                if spent.as_ref().is_some_and(|c| !c.last) {
                    cursors[w] = next(w, spent)?;
                }
            }
            if let Some(c) = &cursors[w] {
                heap.push(Reverse(c.key()));
            }
        }
        Ok(s)
    }

    /// One row as its item.
    fn row(&self, c: &Chunk, at: usize, s: &mut SessionEvents, f: &mut dyn FnMut(Item<'_>)) {
        let r = &c.rows[at];
        let head = |ty: &'static str| Head {
            event_type: Some(ty),
            time_s: Some(crate::clock::ns_to_secs(c.times[at])).filter(|t| t.is_finite()),
            session_id: Some(&self.session_id),
            node_id: c.name(r.node),
            task_id: c.name(r.task),
        };
        match &r.row {
            Row::Node { f: x, cores } => {
                let per_core =
                    cores.map(|(at, n)| PerCore::Record(&c.cores[at as usize..(at + n) as usize]));
                let sample = super::parts::node_sample(x, per_core);
                s.events += 1;
                f(Item::Event(head("ResourceUpdate"), Body::Node(sample)));
            }
            Row::Apart => {
                s.events += 1;
                f(Item::Event(head("ResourceUpdate"), Body::Apart));
            }
            Row::Gpu(gpu_id, x) => {
                let g = GpuSample {
                    gpu_id: *gpu_id,
                    gpu_percent: fig(x[0]),
                    gpu_memory_used_bytes: fig(x[1]),
                    gpu_memory_total_bytes: fig(x[2]),
                    gpu_power_watts: fig(x[3]),
                    gpu_energy_joules: fig(x[4]),
                };
                s.events += 1;
                f(Item::Event(head("ResourceUpdate"), Body::Gpu(g)));
            }
            Row::Task(x) => {
                let t = TaskSample {
                    cpu_percent: fig(x[0]),
                    rss_bytes: fig(x[1]),
                    threads: fig(x[2]),
                    read_bytes: fig(x[3]),
                    write_bytes: fig(x[4]),
                };
                s.events += 1;
                f(Item::Event(head("tal.TaskResourceUpdate"), Body::Task(t)));
            }
            Row::Event(k) => {
                let v = &c.events[*k as usize];
                match v["event_type"].as_str() {
                    Some("SessionStarted") if s.started => return,
                    Some("SessionEnded") => {
                        let real = v["attributes"]["recovered"] != Value::Bool(true);
                        let t = v["event_time"].as_f64().unwrap_or(f64::MIN);
                        if real && s.latest_end.as_ref().is_none_or(|(l, _)| t >= *l) {
                            let id = v["event_id"].as_str().unwrap_or_default().to_string();
                            s.latest_end = Some((t, id));
                        }
                        return;
                    }
                    _ => {}
                }
                s.started = true;
                s.events += 1;
                super::jsonl::line(v, f);
            }
        }
    }

    /// Every log's task spans, in the order a replay of all the logs
    /// closes them (each log's in its own order, the logs merged by their
    /// ends, as their terminal events are); how many.
    fn spans(&mut self, f: &mut dyn FnMut(Item<'_>)) -> io::Result<u64> {
        if self.spans.is_none() {
            self.spans = Some(self.read_spans()?);
        }
        let spans = self.spans.as_deref().unwrap_or_default();
        for (start_ns, end_ns, a) in spans {
            f(Item::TaskSpan(Span {
                start_ns: *start_ns,
                end_ns: *end_ns,
                attributes: Cow::Borrowed(a),
            }));
        }
        Ok(spans.len() as u64)
    }

    /// Every log's task spans, in their merged order (see [`Self::spans`]).
    fn read_spans(&self) -> io::Result<Vec<TaskSpanRow>> {
        let mut per_log: Vec<std::vec::IntoIter<TaskSpanRow>> = Vec::new();
        for l in &self.logs {
            let path = self.root.join("tasks").join(&l.folder).join(&l.part);
            let err = |e: parquet::errors::ParquetError| {
                input_error(io::Error::other(format!("{}: {e}", path.display())))
            };
            let columns = [
                "session_id",
                "backend",
                "task_id",
                "status",
                "error_type",
                "executable",
                "task_type",
                "incomplete_lifecycle",
                "closed_at_session_end",
                "queued_time",
                "start_time",
                "end_time",
                "attributes_json",
            ];
            let reader = super::parts::read_columns(&path, &columns, 1024, &self.session_id)?;
            let mut rows = Vec::new();
            for b in reader {
                let b = b.map_err(|e| err(e.into()))?;
                task_spans(&path, &b, &mut rows)?;
            }
            per_log.push(rows.into_iter());
        }
        let mut next: Vec<Option<TaskSpanRow>> = per_log.iter_mut().map(Iterator::next).collect();
        let mut heap: BinaryHeap<Reverse<(i64, usize)>> = next
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|s| Reverse((s.1, i))))
            .collect();
        let mut out = Vec::new();
        while let Some(Reverse((_, i))) = heap.pop() {
            out.push(next[i].take().expect("a log in the heap has a span"));
            next[i] = per_log[i].next();
            if let Some(s) = &next[i] {
                heap.push(Reverse((s.1, i)));
            }
        }
        Ok(out)
    }

    /// The session's SessionEnded, its metric line and its span.
    fn end_items(&self, f: &mut dyn FnMut(Item<'_>), s: &SessionEvents) {
        let start_ns = self.logs.iter().map(|l| l.start_ns).min().unwrap_or(0);
        let end_ns = self.logs.iter().map(|l| l.end_ns).max().unwrap_or(0);
        let recovered = self.logs.iter().any(|l| l.recovered);
        let sid = &self.session_id;
        let span_id = u128::from(crate::ids::session_span_id(sid));
        let id = s.latest_end.as_ref().map_or_else(
            || crate::ids::event_id_hex(span_id << 64 | 0x4000_8000_0000_0000),
            |(_, id)| id.clone(),
        );
        let mut attributes = Map::new();
        if recovered {
            attributes.insert("recovered".into(), Value::Bool(true));
        }
        let end_s = num(crate::clock::ns_to_secs(end_ns));
        let mut m = Map::new();
        m.insert("event_id".into(), id.into());
        m.insert("event_type".into(), "SessionEnded".into());
        m.insert("event_time".into(), end_s.clone());
        m.insert("emit_time".into(), end_s.clone());
        m.insert("session_id".into(), sid.as_str().into());
        m.insert("backend".into(), self.logs[0].backend.as_str().into());
        m.insert("attributes".into(), Value::Object(attributes));
        let duration = crate::clock::ns_to_secs(end_ns.saturating_sub(start_ns));
        m.insert("duration_seconds".into(), num(duration));
        m.insert(
            "trace_id".into(),
            crate::ids::py_hex(crate::ids::trace_id(sid)).into(),
        );
        m.insert("span_id".into(), crate::ids::py_hex(span_id).into());
        m.insert("name".into(), "SessionEnded".into());
        m.insert("section".into(), "event".into());
        super::jsonl::line(&Value::Object(m), f);
        let metric = self.metric(end_s);
        f(Item::Metric(&metric));
        f(Item::SessionSpan { start_ns, end_ns });
    }

    /// The session's metric line (see the module doc).
    fn metric(&self, checkpoint_time: Value) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("checkpoint_time".into(), checkpoint_time);
        let counts = crate::instruments::COUNTER_NAMES
            .iter()
            .chain(&["tasks_running", "task_duration_seconds_count"]);
        for k in counts {
            let mut any = false;
            let mut sum = 0i64;
            for v in self.logs.iter().filter_map(|l| l.metric.get(*k)?.as_i64()) {
                any = true;
                sum = sum.saturating_add(v);
            }
            if any {
                m.insert(k.to_string(), sum.into());
            }
        }
        let key = "task_duration_seconds_sum";
        let sums: Vec<f64> = self
            .logs
            .iter()
            .filter_map(|l| l.metric.get(key)?.as_f64())
            .collect();
        if !sums.is_empty() {
            m.insert(key.into(), num(sums.iter().sum()));
        }
        let snapshots: Vec<AgentSnapshot> = self
            .logs
            .iter()
            .filter_map(|l| l.snapshot.clone())
            .collect();
        let agents = crate::convert::jsonl::agent_totals(&snapshots);
        if let Ok(Value::Object(a)) = serde_json::from_slice::<Value>(&agents) {
            m.extend(a);
        }
        let logs: Vec<Value> = self
            .logs
            .iter()
            .filter_map(|l| l.metric.get("tal_logs")?.as_array())
            .flatten()
            .cloned()
            .collect();
        m.insert("tal_logs".into(), Value::Array(logs));
        m.insert("section".into(), "metric".into());
        m
    }
}

/// String `i` of `a`, unless null.
fn get(a: &arrow_array::StringArray, i: usize) -> Option<&str> {
    a.is_valid(i).then(|| a.value(i))
}

/// A task span: start and end, ns since the epoch, and its attributes.
type TaskSpanRow = (i64, i64, Value);

/// The task spans of a `tasks` batch, onto `out`. A span's
/// attributes are made as its line has them (see
/// `crate::event_json::write_task_span`): the fixed ones from their
/// columns, then `attributes_json`'s.
fn task_spans(path: &Path, b: &RecordBatch, out: &mut Vec<TaskSpanRow>) -> io::Result<()> {
    let bad = |why: String| input_error(io::Error::other(format!("{}: {why}", path.display())));
    let col = |name: &str| super::parts::column(path, b, name);
    let time = |name: &str| -> io::Result<arrow_array::TimestampNanosecondArray> {
        col(name)?
            .as_primitive_opt::<TimestampNanosecondType>()
            .cloned()
            .ok_or_else(|| bad(format!("`{name}` is not a time")))
    };
    let text = |name: &str| -> io::Result<arrow_array::StringArray> {
        col(name)?
            .as_string_opt::<i32>()
            .cloned()
            .ok_or_else(|| bad(format!("`{name}` is not a string")))
    };
    let flag = |name: &str| -> io::Result<arrow_array::BooleanArray> {
        col(name)?
            .as_boolean_opt()
            .cloned()
            .ok_or_else(|| bad(format!("`{name}` is not a boolean")))
    };
    let (start, end, queued) = (time("start_time")?, time("end_time")?, time("queued_time")?);
    let fixed = ["session_id", "backend", "task_id", "status", "error_type"];
    let fixed: Vec<arrow_array::StringArray> =
        fixed.iter().map(|n| text(n)).collect::<io::Result<_>>()?;
    let (executable, task_type) = (text("executable")?, text("task_type")?);
    let flags = [
        flag("incomplete_lifecycle")?,
        flag("closed_at_session_end")?,
    ];
    let attrs = text("attributes_json")?;
    for i in 0..b.num_rows() {
        let mut m = Map::new();
        for (name, a) in ["session_id", "backend", "task_id", "status", "error_type"]
            .iter()
            .zip(&fixed)
        {
            if let Some(v) = get(a, i) {
                m.insert(name.to_string(), v.into());
            }
        }
        for (name, a) in [("executable", &executable), ("task_type", &task_type)] {
            m.insert(name.into(), get(a, i).unwrap_or_default().into());
        }
        for (name, a) in ["incomplete_lifecycle", "closed_at_session_end"]
            .iter()
            .zip(&flags)
        {
            if a.is_valid(i) && a.value(i) {
                m.insert(name.to_string(), true.into());
            }
        }
        if queued.is_valid(i) {
            m.insert(
                "queued_time_s".into(),
                num(crate::clock::ns_to_secs(queued.value(i))),
            );
        }
        if let Some(Ok(Value::Object(extra))) = get(&attrs, i).map(serde_json::from_str) {
            m.extend(extra);
        }
        out.push((start.value(i), end.value(i), Value::Object(m)));
    }
    Ok(())
}
