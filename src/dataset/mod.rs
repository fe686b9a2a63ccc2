//! The Parquet dataset: a session as columnar tables that pandas, polars,
//! DuckDB, Spark and Dask read in parallel, written one part per node log,
//! with no merge step (`tal convert --format parquet -o DIR`, and
//! `tal record --format parquet` at the end of each node's recording).
//!
//! ```text
//! DIR/_tal_dataset.json                             the session it holds
//! DIR/samples/node=<node>/part-<start>.parquet       per_node ResourceUpdate
//! DIR/gpu_samples/node=<node>/part-<start>.parquet   per_gpu ResourceUpdate
//! DIR/tasks/node=<node>/part-<start>.parquet         task spans
//! DIR/task_samples/node=<node>/part-<start>.parquet  tal.TaskResourceUpdate
//! DIR/events/node=<node>/part-<start>.parquet        every other event
//! DIR/session/node=<node>/part-<start>.parquet       the log: header, metric line
//! ```
//!
//! The folders are Hive-style (`node=`), so engines add a `node` column
//! and prune by it; the rows also carry `node_id`. Every table gets a part
//! for every log, empty or not, so a glob over a table always matches.
//! The columns (RHAPSODY's fields, one by one) are in [`tables`] and
//! `docs/dataset.md`.
//!
//! Each part is made by replaying its one log as `tal convert` replays
//! logs for the JSONL (`crate::convert::replay`): the same events with the
//! same filled-in fields (GPU back-fill, task durations, GPU memory and
//! energy per task, tasks open at the end closed as canceled). What differs
//! from one JSONL of several logs is what merging decides for the whole
//! session: there, one SessionStarted and one SessionEnded stand for all
//! the nodes; here each node's part keeps its own (the `session` table has
//! each node's times). A task is followed within each node's log: one
//! whose events reached two nodes' agents has a span in each part, and in
//! the part whose node did not see its end it is closed as canceled at
//! that node's end (`closed_at_session_end`), as the JSONL closes a task
//! still open when the session ends.
//!
//! Logs are written on [`threads`] threads at once, each log by one
//! thread, with memory bounded by a batch and a row group per table and
//! thread.
//!
//! A part is named after its log's start, ns since the epoch
//! (`part-1796653632295309358.parquet`): converting a log again replaces
//! its own parts and nothing else, and another recording of the same node
//! in the session (a requeued job, a second job step) adds parts of its
//! own. A dataset folder holds one session: its `_tal_dataset.json`
//! (which engines skip, as every name starting with `_`) names the
//! session, and a log of another session is refused. The folder, when it
//! exists, must be a folder of this user's (see `part::own_dir` for the
//! folders under it).

pub mod columns;
pub mod part;
pub mod tables;

use crate::convert::replay::{replay, Sink};
use crate::log::LogReader;
use crate::record::Event;
use crate::tasks::TaskSpan;
use columns::Table;
use parquet::file::metadata::KeyValue;
use part::Part;
use std::io;
use std::path::{Path, PathBuf};
use tables::Tables;

pub use part::node_folder;

/// The dataset's tables, in the order of their parts.
pub const TABLES: [&str; 6] = [
    "samples",
    "gpu_samples",
    "tasks",
    "task_samples",
    "events",
    "session",
];

/// The version of the dataset's layout, in every file's metadata
/// (`tal.dataset_version`): raised when a column is renamed or retyped.
pub const DATASET_VERSION: &str = "1";

/// What writing one log's parts did.
#[derive(Debug, Clone)]
pub struct PartSummary {
    /// The log.
    pub log: PathBuf,
    /// Its node.
    pub node_id: String,
    /// Rows per table, in [`TABLES`] order.
    pub rows: [u64; 6],
    /// Bytes of its part files.
    pub bytes: u64,
    /// What reading the log found.
    pub read: crate::log::ReadStats,
}

/// Threads to write with: the machine's cores, at most 8 (each holds a row
/// group of every table: a few tens of MiB).
pub fn threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8)
}

/// The replay's sink: rows into the tables, full batches into the parts.
struct Parts {
    tables: Tables,
    /// samples, gpu_samples, tasks, task_samples, events.
    parts: Vec<Part>,
    rows: [u64; 6],
}

impl Parts {
    fn flush(&mut self, full_only: bool) -> io::Result<()> {
        let Self {
            tables,
            parts,
            rows,
        } = self;
        let ts: [&mut Table; 5] = [
            &mut tables.samples,
            &mut tables.gpu_samples,
            &mut tables.tasks,
            &mut tables.task_samples,
            &mut tables.events,
        ];
        for (i, t) in ts.into_iter().enumerate() {
            if t.rows() > 0 && (!full_only || t.full()) {
                rows[i] += t.rows() as u64;
                parts[i].write(&t.batch())?;
            }
        }
        Ok(())
    }
}

impl Sink for Parts {
    fn event(&mut self, node: &str, ev: &Event) -> io::Result<()> {
        self.tables.event(node, ev);
        self.flush(true)
    }

    fn span(&mut self, span: &TaskSpan) -> io::Result<()> {
        self.tables.span(span);
        self.flush(true)
    }
}

/// Writes the parts of one log into `dir` (see the module doc).
pub fn write_part(reader: LogReader, dir: &Path) -> io::Result<PartSummary> {
    let header = reader.header().clone();
    let k = header.start_wall_ns;
    let log = reader.path().to_path_buf();
    let meta = |table: &str| {
        vec![
            KeyValue::new("tal.dataset_version".into(), DATASET_VERSION.to_string()),
            KeyValue::new("tal.table".into(), table.to_string()),
            KeyValue::new("tal.session_id".into(), header.session_id.clone()),
            KeyValue::new("tal.node_id".into(), header.node_id.clone()),
        ]
    };
    let tables = Tables::new(&header.session_id, &header.node_id);
    let schemas = [
        tables.samples.schema().clone(),
        tables.gpu_samples.schema().clone(),
        tables.tasks.schema().clone(),
        tables.task_samples.schema().clone(),
        tables.events.schema().clone(),
    ];
    let mut parts = Vec::with_capacity(5);
    for (table, schema) in TABLES.iter().zip(&schemas) {
        parts.push(Part::create(
            dir,
            table,
            &header.node_id,
            k,
            schema,
            meta(table),
        )?);
    }
    let mut sink = Parts {
        tables,
        parts,
        rows: [0; 6],
    };
    let r = replay(
        vec![reader],
        &mut sink,
        &crate::progress::Progress::hidden(),
    )?;
    sink.flush(false)?;
    let energy = crate::event_json::session_energy(&r.tracker, 1);
    let mut metric = Vec::new();
    crate::convert::jsonl::write_metric_line(&mut metric, &r.merge, &r.inst, r.end.end_ns, &energy);
    let mut span = Vec::new();
    crate::event_json::write_session_span(
        &mut span,
        &crate::event_json::Ctx::new(&header.session_id),
        &r.backend,
        r.start_ns,
        r.end.end_ns,
        1,
        &energy,
    );
    let read = r.merge.nodes[0].reader.stats().clone();
    let mut session = tables::session_table(&tables::SessionRow {
        header: &header,
        stats: &read,
        start_ns: r.start_ns,
        end_ns: r.end.end_ns,
        recovered: r.end.recovered,
        events: r.events,
        tasks: r.tasks,
        metric: &String::from_utf8_lossy(&metric),
        session_span: &String::from_utf8_lossy(&span),
        snapshot: r.merge.nodes[0].snapshot.as_ref(),
    });
    let mut session_part = Part::create(
        dir,
        TABLES[5],
        &header.node_id,
        k,
        session.schema(),
        meta(TABLES[5]),
    )?;
    session_part.write(&session.batch())?;
    sink.rows[5] = 1;
    // Every part whole before any is renamed (see `part`).
    let closed = sink
        .parts
        .into_iter()
        .chain(std::iter::once(session_part))
        .map(Part::close)
        .collect::<io::Result<Vec<_>>>()?;
    let mut bytes = 0;
    for c in closed {
        bytes += c.commit()?;
    }
    Ok(PartSummary {
        log,
        node_id: header.node_id.clone(),
        rows: sink.rows,
        bytes,
        read,
    })
}

/// Writes every log's parts into `dir` (made if missing), on [`threads`]
/// threads; each log's result, in the order given. `progress` counts the
/// logs' bytes as each log is done.
pub fn write_dataset(
    readers: Vec<LogReader>,
    dir: &Path,
    progress: &crate::progress::Progress,
) -> Vec<io::Result<PartSummary>> {
    let session = readers.first().map(|r| r.header().session_id.clone());
    if let Err(e) = make_root(dir, session.as_deref().unwrap_or("")) {
        let msg = e.to_string();
        return readers
            .iter()
            .map(|_| Err(io::Error::new(e.kind(), msg.clone())))
            .collect();
    }
    let jobs: Vec<(usize, LogReader)> = readers.into_iter().enumerate().collect();
    let n = jobs.len();
    let queue = std::sync::Mutex::new(jobs.into_iter());
    let results = std::sync::Mutex::new((0..n).map(|_| None).collect::<Vec<_>>());
    let done = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|s| {
        for _ in 0..threads().min(n) {
            s.spawn(|| loop {
                let job = queue.lock().unwrap_or_else(|e| e.into_inner()).next();
                let Some((i, reader)) = job else { break };
                let len = reader.file_len();
                let res = write_part(reader, dir);
                let at = done.fetch_add(len, std::sync::atomic::Ordering::Relaxed) + len;
                progress.set(at);
                results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(res);
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(io::Error::other("not written"))))
        .collect()
}

/// The file that names a dataset folder's session (see the module doc).
pub const MARKER: &str = "_tal_dataset.json";

/// Makes the dataset's folder (and its parents) if missing: it must be a
/// folder of this user's (a link to one is followed), of no other session.
fn make_root(dir: &Path, session: &str) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    if let Ok(m) = std::fs::metadata(dir) {
        if !m.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "{} is a file: a dataset is a folder; name another (-o DIR)",
                    dir.display()
                ),
            ));
        }
        if m.uid() != rustix::process::geteuid().as_raw() {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "{} is another user's folder: not writing a dataset into it; \
                     choose a folder of your own (-o DIR)",
                    dir.display()
                ),
            ));
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot make the dataset folder {}: {e}", dir.display()),
        )
    })?;
    claim(dir, session)
}

/// Writes `_tal_dataset.json` naming `session` in `dir`, or checks that
/// the one there names it. Agents of several nodes may race to write it:
/// each writes a whole file under a temporary name and moves it there
/// without replacing, and the losers read the winner's.
fn claim(dir: &Path, session: &str) -> io::Result<()> {
    let path = dir.join(MARKER);
    let mut body = Vec::new();
    let mut o = crate::json::JsonOut::object(&mut body);
    o.str("session_id", session)
        .str("dataset_version", DATASET_VERSION)
        .str("written_by", concat!("tal ", env!("CARGO_PKG_VERSION")));
    o.end();
    body.push(b'\n');
    if std::fs::symlink_metadata(&path).is_err() {
        let mut out = crate::convert::PendingOutput::create(&path)?;
        std::io::Write::write_all(&mut out.writer, &body)?;
        match out.commit_first_free(std::slice::from_ref(&path)) {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    let theirs = read_marker(&path, "choose another folder (-o DIR)")?;
    if theirs != session {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} holds the dataset of session {theirs:?}, and these logs are of session \
                 {session:?}: a dataset folder is for one session; choose another (-o DIR)",
                dir.display()
            ),
        ));
    }
    Ok(())
}

/// The session named by a dataset's marker file (read to 64 KiB at most);
/// an error says `advice` after why the file is not tal's.
pub(crate) fn read_marker(path: &Path, advice: &str) -> io::Result<String> {
    use std::io::Read;
    let m = std::fs::symlink_metadata(path)?;
    let bad = |why: &str| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} {why}: it is not a dataset of tal's; {advice}",
                path.display()
            ),
        )
    };
    if !m.file_type().is_file() {
        return Err(bad("is not a regular file"));
    }
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(64 << 10)
        .read_to_string(&mut text)
        .map_err(|_| bad("is not text"))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|_| bad("is not JSON"))?;
    v["session_id"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| bad("names no session_id"))
}

/// The dataset's default folder: `{session_id}.dataset`. Every node of a
/// session writes its parts into the same one (the start time, which
/// differs per node, is not in the name).
pub fn default_dir_name(session_id: &str) -> String {
    format!("{session_id}.dataset")
}

/// What [`convert`] did.
#[derive(Debug, Default)]
pub struct Written {
    /// Parts written, one summary per log.
    pub parts: Vec<PartSummary>,
    /// Inputs refused or logs whose parts failed, each with why.
    pub failed: Vec<String>,
}

/// Converts the node logs `paths` (of one session) into the dataset
/// `dir` (default: [`default_dir_name`] beside the first log), saying on
/// stderr, after `who`, what each input gave and what was written.
/// An error when nothing was written.
pub fn convert(
    paths: &[PathBuf],
    dir: Option<&Path>,
    quiet: bool,
    who: &str,
) -> Result<(PathBuf, Written), crate::convert::ConvertError> {
    let t0 = std::time::Instant::now();
    let inputs = crate::convert::open_logs(paths)?;
    let mut w = Written::default();
    for e in &inputs.refused {
        w.failed.push(e.to_string());
    }
    for r in &inputs.repeated {
        eprintln!("{who}: {r}");
    }
    let session = inputs.readers[0].header().session_id.clone();
    let dir = match dir {
        Some(d) => d.to_path_buf(),
        None => crate::convert::dir_of(&paths[0]).join(default_dir_name(&session)),
    };
    let total: u64 = inputs.readers.iter().map(LogReader::file_len).sum();
    let progress = crate::progress::Progress::bytes("dataset", total, quiet);
    let logs: Vec<PathBuf> = inputs
        .readers
        .iter()
        .map(|r| r.path().to_path_buf())
        .collect();
    for (log, res) in logs
        .iter()
        .zip(write_dataset(inputs.readers, &dir, &progress))
    {
        match res {
            Ok(p) => w.parts.push(p),
            Err(e) => w.failed.push(format!(
                "{}: its parts were not written: {e}",
                log.display()
            )),
        }
    }
    progress.finish();
    if w.parts.is_empty() {
        // Said once, by the caller.
        return Err(crate::convert::ConvertError::NothingToConvert(
            w.failed.join("; "),
        ));
    }
    for f in w.failed.iter().chain(&read_notes(&w)) {
        eprintln!("{who}: {f}");
    }
    eprintln!("{who}: {}", describe(&dir, &w, t0.elapsed()));
    Ok((dir, w))
}

/// One line on what was written.
fn describe(dir: &Path, w: &Written, took: std::time::Duration) -> String {
    let mut rows = [0u64; 6];
    let mut bytes = 0;
    for p in &w.parts {
        for (t, r) in rows.iter_mut().zip(p.rows) {
            *t += r;
        }
        bytes += p.bytes;
    }
    let tables: Vec<String> = TABLES
        .iter()
        .zip(rows)
        .filter(|(_, r)| *r > 0)
        .map(|(t, r)| format!("{r} {t}"))
        .collect();
    format!(
        "wrote the dataset {} ({} node log(s): {}; {:.1} MiB) in {:.2} s",
        dir.display(),
        w.parts.len(),
        tables.join(", "),
        bytes as f64 / (1 << 20) as f64,
        took.as_secs_f64()
    )
}

/// What reading each log found, as `tal convert` says it for the JSONL
/// (silent for clean logs).
fn read_notes(w: &Written) -> Vec<String> {
    let s = crate::convert::Summary {
        session_id: String::new(),
        start_wall_ns: 0,
        end_wall_ns: 0,
        events: 0,
        logs: w
            .parts
            .iter()
            .map(|p| (p.log.clone(), p.node_id.clone(), p.read.clone()))
            .collect(),
        refused: Vec::new(),
        repeated: Vec::new(),
        tasks: 0,
        tasks_open_at_end: 0,
        task_ids_reused: 0,
        peak_rss_bytes: None,
    };
    crate::convert::describe(&s)
}
