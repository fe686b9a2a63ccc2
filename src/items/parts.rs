//! One node log's parts of a Parquet dataset, read back as the log's
//! events in their order: the rows of `samples`, `gpu_samples`,
//! `task_samples` and `events` (only the columns the views read), merged
//! by time into [`Chunk`]s of a few hundred rows, each on a worker thread
//! ([`Workers`]).
//!
//! Order: each table's rows are in the order the replay wrote them (the
//! log's events in time order), so merging the four tables by time gives
//! the log's order back; rows of two tables with the same time (to the ns,
//! which the agent's threads practically never share) come in the order
//! events, samples, GPU samples, task samples.
//!
//! Bounds: a table is read a batch at a time (Parquet's reader decodes
//! page by page), a log's rows a hundred or so at a time, and each worker
//! is asked for one merged chunk at a time: so memory is a few batches a
//! log, whatever the dataset's size. A worker never waits on the reader
//! (its channel holds the one chunk asked for).
//!
//! Speed: the rows of every log are merged in time order, each log's next
//! row read after every other log's, so the merge's cost is mostly the
//! cache misses of reading rows (measured: 70% of the reader's time with
//! one merge of all the logs). Each worker therefore merges its own logs,
//! whose few rows each stay in its core's caches, and the reader merges
//! the workers' streams, reading each in order.

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Float64Type, Int64Type, TimestampNanosecondType};
use arrow_array::{Array, ArrayRef, RecordBatch};
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::arrow::ProjectionMask;
use parquet::file::metadata::ParquetMetaData;
use serde_json::{Map, Value};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use super::{Head, NodeSample, NodeSink, PerCore};

/// No name (a null `node_id` or `task_id`).
pub const NONE: u32 = u32::MAX;

/// A node sample's figures, in [`crate::items::NodeSample`]'s order (the
/// JSONL names of [`NODE_COLUMNS`]); NaN where there is none (a row is
/// half the size of one of `Option`s: the merge reads rows of every log in
/// turn, and a row's cache lines are most of its cost).
pub type NodeFigures = [f64; 11];

/// A figure of a row: `None` for NaN (see [`NodeFigures`]).
pub fn fig(x: f64) -> Option<f64> {
    (!x.is_nan()).then_some(x)
}

/// The node sample columns read, in [`NodeFigures`] order: RHAPSODY's
/// series ([`crate::convert::NODE_SERIES`]), then the job cgroup's.
pub const NODE_COLUMNS: [&str; 11] = [
    "cpu_percent",
    "memory_percent",
    "disk_read_bytes",
    "disk_write_bytes",
    "net_sent_bytes",
    "net_recv_bytes",
    "job_cpu_percent",
    "job_memory_bytes",
    "job_memory_peak_bytes",
    "job_disk_read_bytes",
    "job_disk_write_bytes",
];

/// The GPU sample columns read.
const GPU_COLUMNS: [&str; 5] = [
    "gpu_percent",
    "gpu_memory_used_bytes",
    "gpu_memory_total_bytes",
    "gpu_power_watts",
    "gpu_energy_joules",
];

/// The task sample columns read.
const TASK_COLUMNS: [&str; 5] = [
    "cpu_percent",
    "rss_bytes",
    "threads",
    "read_bytes",
    "write_bytes",
];

/// The `events` columns read (every one: an event is rebuilt as its line).
const EVENT_COLUMNS: [&str; 14] = [
    "time",
    "emit_time",
    "event_id",
    "event_type",
    "session_id",
    "node_id",
    "backend",
    "task_id",
    "trace_id",
    "span_id",
    "duration_seconds",
    "error_type",
    "attributes",
    "fields",
];

/// One row of a log, in its order.
#[derive(Debug, Clone)]
pub enum Row {
    /// A node sample: its figures and, if it has them, where its per-core
    /// figures are in [`Chunk::cores`].
    Node {
        /// Figures.
        f: NodeFigures,
        /// Per-core figures: start and length in [`Chunk::cores`].
        cores: Option<(u32, u32)>,
    },
    /// A GPU sample: `gpu_id` and figures in [`GPU_COLUMNS`] order.
    Gpu(u64, [f64; 5]),
    /// A task sample, figures in [`TASK_COLUMNS`] order.
    Task([f64; 5]),
    /// Any other event, as its JSONL line: [`Chunk::events`]' index.
    Event(u32),
    /// A log's first node sample, where its samples are read apart (see
    /// [`Reading`]): its place, with no figures.
    Apart,
}

/// A row with what every row has (its time is in [`Chunk::times`]).
#[derive(Debug, Clone)]
pub struct Stamped {
    /// Its `node_id` and `task_id`: indexes into [`Chunk::names`], or
    /// [`NONE`].
    pub node: u32,
    /// See `node`.
    pub task: u32,
    /// The row.
    pub row: Row,
}

/// The next rows of one log.
#[derive(Debug, Default)]
pub struct Chunk {
    /// Rows, in the log's order.
    pub rows: Vec<Stamped>,
    /// Their times, apart: the merge reads the next row's time of every
    /// log in turn, eight to a cache line.
    pub times: Vec<i64>,
    /// Their logs' numbers (in a worker's merged chunks).
    pub logs: Vec<u32>,
    /// Per-core figures of the node samples.
    pub cores: Vec<f32>,
    /// Names the rows refer to.
    pub names: Vec<Box<str>>,
    /// Where each name is in `names`, once there are many (a worker's
    /// merged chunk has every node's).
    index: std::collections::HashMap<Box<str>, u32>,
    /// The events' lines.
    pub events: Vec<Value>,
    /// The log has no rows after these.
    pub last: bool,
}

impl Chunk {
    /// The name at `i`.
    pub fn name(&self, i: u32) -> Option<&str> {
        self.names.get(i as usize).map(|s| &**s)
    }

    fn name_of(&mut self, a: Option<&arrow_array::StringArray>, row: usize) -> u32 {
        match a.filter(|a| a.is_valid(row)).map(|a| a.value(row)) {
            Some(s) => self.name_is(s),
            None => NONE,
        }
    }

    fn name_is(&mut self, s: &str) -> u32 {
        const FEW: usize = 8;
        if self.names.len() <= FEW {
            if let Some(i) = self.names.iter().rposition(|n| &**n == s) {
                return i as u32;
            }
        } else if let Some(i) = self.index.get(s) {
            return *i;
        }
        self.names.push(s.into());
        let i = (self.names.len() - 1) as u32;
        if self.names.len() == FEW + 1 {
            self.index = (0..)
                .zip(&self.names)
                .map(|(i, n)| (n.clone(), i))
                .collect();
        } else if self.names.len() > FEW {
            self.index.insert(s.into(), i);
        }
        i
    }

    /// Emptied for reuse, its buffers kept.
    fn clear(&mut self) {
        self.rows.clear();
        self.times.clear();
        self.logs.clear();
        self.cores.clear();
        self.names.clear();
        self.index.clear();
        self.events.clear();
        self.last = false;
    }
}

/// Opens a part file of the dataset: a regular file (not a link, a FIFO
/// or a device, which could make a reader wait or read another's file).
pub fn open_part(path: &Path) -> io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let err = |kind: io::ErrorKind, why: String| {
        crate::convert::lines::input_error(io::Error::new(
            kind,
            format!("{}: {why}", path.display()),
        ))
    };
    // The part's node folder and table folder: folders, not links (which
    // could lead a reader to another's files).
    for dir in path.ancestors().skip(1).take(2) {
        let linked = std::fs::symlink_metadata(dir).is_ok_and(|m| !m.is_dir());
        if linked {
            return Err(err(
                io::ErrorKind::InvalidData,
                format!("{} is not a folder (a link?): not read", dir.display()),
            ));
        }
    }
    // Not following a link, not waiting on a FIFO; what was opened is
    // checked (not the path, which could change in between).
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| {
            let why = match e.kind() {
                io::ErrorKind::NotFound => format!(
                    "{e}: every log of a dataset has a part in every table; \
                     convert its log again (tal convert LOG --format parquet -o DIR)"
                ),
                _ => format!("cannot open it: {e} (a link is not followed)"),
            };
            err(e.kind(), why)
        })?;
    if !f.metadata().is_ok_and(|m| m.is_file()) {
        return Err(err(
            io::ErrorKind::InvalidData,
            "not a regular file: not read".into(),
        ));
    }
    Ok(f)
}

/// Refuses a part whose metadata names another session than `session`
/// (one copied in from another dataset).
fn check_session(path: &Path, meta: &ParquetMetaData, session: &str) -> io::Result<()> {
    let kv = meta.file_metadata().key_value_metadata();
    let theirs = kv
        .into_iter()
        .flatten()
        .find(|k| k.key == "tal.session_id")
        .and_then(|k| k.value.as_deref());
    match theirs {
        Some(t) if t != session => Err(crate::convert::lines::input_error(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} is of session {t:?}, and the dataset of session {session:?}: \
                 take it out of the folder",
                path.display()
            ),
        ))),
        _ => Ok(()),
    }
}

/// What goes wrong reading a part: said with the file's name.
fn bad(path: &Path, why: impl std::fmt::Display) -> io::Error {
    crate::convert::lines::input_error(io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "{}: {why} (a damaged part, or not one of tal's: convert its log again with \
             tal convert LOG --format parquet -o DIR)",
            path.display()
        ),
    ))
}

/// One table of one log, being read.
struct Table {
    path: PathBuf,
    reader: Option<ParquetRecordBatchReader>,
    batch: Option<RecordBatch>,
    at: usize,
    /// The batch's `time` column.
    time: Option<arrow_array::TimestampNanosecondArray>,
    /// A batch was read since the columns were last typed.
    fresh: bool,
    /// `node_id`, where every row has the same (and it is not read).
    node: Option<String>,
}

impl Table {
    /// Opens `path` for the columns `columns` (those it has), read
    /// `rows` at a time. A part that is missing is an error: every log has
    /// a part in every table.
    fn open(path: PathBuf, columns: &[&str], rows: usize, session: &str) -> io::Result<Self> {
        let file = open_part(&path)?;
        let b = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| bad(&path, e))?;
        check_session(&path, b.metadata(), session)?;
        let schema = b.schema().clone();
        // A column null in every row (the job cgroup's fields off Slurm,
        // `extra`, `task_id` of the node's own samples) is not read: its
        // decoder's state, a log's worth for every log merged, would be
        // most of the memory.
        let meta = b.metadata().clone();
        let node = constant(&meta, "node_id");
        let roots: Vec<usize> = columns
            .iter()
            .filter(|c| **c == "time" || !all_null(&meta, c))
            .filter(|c| **c != "node_id" || node.is_none())
            .filter_map(|c| schema.index_of(c).ok())
            .collect();
        let mask = ProjectionMask::roots(b.parquet_schema(), roots);
        let reader = b
            .with_projection(mask)
            .with_batch_size(rows.max(1024))
            .build()
            .map_err(|e| bad(&path, e))?;
        Ok(Self {
            path,
            reader: Some(reader),
            batch: None,
            at: 0,
            time: None,
            fresh: false,
            node,
        })
    }

    /// A table not read (no rows).
    fn none(path: PathBuf) -> Self {
        Self {
            path,
            reader: None,
            batch: None,
            at: 0,
            time: None,
            fresh: false,
            node: None,
        }
    }

    /// The time of the next row, reading the next batch if needed; `None`
    /// at the end.
    fn peek(&mut self) -> io::Result<Option<i64>> {
        loop {
            if let (Some(b), Some(t)) = (&self.batch, &self.time) {
                if self.at < b.num_rows() {
                    if !t.is_valid(self.at) {
                        return Err(bad(&self.path, "a row has no `time`"));
                    }
                    return Ok(Some(t.value(self.at)));
                }
            }
            let Some(r) = self.reader.as_mut() else {
                return Ok(None);
            };
            match r.next() {
                Some(b) => {
                    let b = b.map_err(|e| bad(&self.path, e))?;
                    self.time = Some(
                        typed::<TimestampNanosecondType>(&self.path, &b, "time")?
                            .ok_or_else(|| bad(&self.path, "no `time` column"))?,
                    );
                    self.batch = Some(b);
                    self.at = 0;
                    self.fresh = true;
                }
                None => {
                    self.reader = None;
                    self.batch = None;
                    self.time = None;
                    self.fresh = true;
                    return Ok(None);
                }
            }
        }
    }
}

/// The part's column `name`'s one leaf, if it has one.
fn leaf(meta: &ParquetMetaData, name: &str) -> Option<usize> {
    let schema = meta.file_metadata().schema_descr();
    let leaves: Vec<usize> = (0..schema.num_columns())
        .filter(|&i| schema.column(i).path().parts().first().map(String::as_str) == Some(name))
        .collect();
    match leaves[..] {
        [leaf] => Some(leaf),
        _ => None,
    }
}

/// Whether the part's column `name` is null in every row, as its row
/// groups' statistics say.
fn all_null(meta: &ParquetMetaData, name: &str) -> bool {
    let Some(leaf) = leaf(meta, name) else {
        return false;
    };
    meta.row_groups().iter().all(|rg| {
        let nulls = rg
            .column(leaf)
            .statistics()
            .and_then(|s| s.null_count_opt());
        nulls == Some(rg.num_rows() as u64)
    })
}

/// The one value of string column `name` where its statistics say every
/// row has it (a log's own `node_id` on every sample): the column need not
/// be read.
fn constant(meta: &ParquetMetaData, name: &str) -> Option<String> {
    let leaf = leaf(meta, name)?;
    let mut value: Option<&[u8]> = None;
    for rg in meta.row_groups() {
        let s = rg.column(leaf).statistics()?;
        let (min, max) = (s.min_bytes_opt()?, s.max_bytes_opt()?);
        if s.null_count_opt() != Some(0) || min != max || value.is_some_and(|v| v != min) {
            return None;
        }
        value = Some(min);
    }
    String::from_utf8(value?.to_vec()).ok()
}

/// Column `name` of `b` as `T`'s array; `None` where the part has no such
/// column (an older dataset's); an error where it has another type.
fn typed<T: arrow_array::ArrowPrimitiveType>(
    path: &Path,
    b: &RecordBatch,
    name: &str,
) -> io::Result<Option<arrow_array::PrimitiveArray<T>>> {
    let Some(c) = b.column_by_name(name) else {
        return Ok(None);
    };
    c.as_primitive_opt::<T>()
        .cloned()
        .map(Some)
        .ok_or_else(|| bad(path, format!("column `{name}` is {}", c.data_type())))
}

/// Column `name` of `b` as strings (see [`typed`]).
fn strings(
    path: &Path,
    b: &RecordBatch,
    name: &str,
) -> io::Result<Option<arrow_array::StringArray>> {
    let Some(c) = b.column_by_name(name) else {
        return Ok(None);
    };
    c.as_string_opt::<i32>()
        .cloned()
        .map(Some)
        .ok_or_else(|| bad(path, format!("column `{name}` is {}", c.data_type())))
}

/// A number column (float or integer) as floats, row by row.
enum Num {
    F(arrow_array::Float64Array),
    I(arrow_array::Int64Array),
    None,
}

impl Num {
    fn of(path: &Path, b: &RecordBatch, name: &str) -> io::Result<Self> {
        let Some(c) = b.column_by_name(name) else {
            return Ok(Self::None);
        };
        if let Some(a) = c.as_primitive_opt::<Float64Type>() {
            return Ok(Self::F(a.clone()));
        }
        if let Some(a) = c.as_primitive_opt::<Int64Type>() {
            return Ok(Self::I(a.clone()));
        }
        Err(bad(path, format!("column `{name}` is {}", c.data_type())))
    }

    fn get(&self, i: usize) -> Option<f64> {
        match self {
            Self::F(a) => a.is_valid(i).then(|| a.value(i)),
            Self::I(a) => a.is_valid(i).then(|| a.value(i) as f64),
            Self::None => None,
        }
        .filter(|x| x.is_finite())
    }
}

/// The columns of a batch a row is read from, typed once per batch.
struct Cols {
    node: Option<arrow_array::StringArray>,
    task: Option<arrow_array::StringArray>,
    nums: Vec<Num>,
    /// `extra`: fields with no column (or that their column could not hold
    /// exactly), whose values replace the columns' (see [`Chunk`]).
    extra: Option<arrow_array::StringArray>,
    gpu_id: Option<arrow_array::Int64Array>,
    /// `cpu_percent_per_core`, and its values (typed once per batch: a
    /// row's list is a slice of them).
    cores: Option<(arrow_array::ListArray, arrow_array::Float32Array)>,
}

impl Cols {
    fn of(path: &Path, b: &RecordBatch, nums: &[&str]) -> io::Result<Self> {
        let cores = match b.column_by_name("cpu_percent_per_core") {
            None => None,
            Some(c) => {
                let wrong = || {
                    let t = c.data_type();
                    bad(path, format!("column `cpu_percent_per_core` is {t}"))
                };
                let list = c.as_list_opt::<i32>().cloned().ok_or_else(wrong)?;
                let values = list.values().as_primitive_opt::<Float32Type>().cloned();
                Some((list, values.ok_or_else(wrong)?))
            }
        };
        Ok(Self {
            node: strings(path, b, "node_id")?,
            task: strings(path, b, "task_id")?,
            nums: nums
                .iter()
                .map(|n| Num::of(path, b, n))
                .collect::<io::Result<_>>()?,
            extra: strings(path, b, "extra")?,
            gpu_id: typed::<Int64Type>(path, b, "gpu_id")?,
            cores,
        })
    }

    /// Row `i`'s per-core figures: where they are in the list's values,
    /// and the values (`None` where the row has no list).
    fn cores_of(&self, i: usize) -> Option<(std::ops::Range<usize>, &arrow_array::Float32Array)> {
        let (l, v) = self.cores.as_ref().filter(|(l, _)| l.is_valid(i))?;
        let o = l.value_offsets();
        let to = (o[i + 1].max(0) as usize).min(v.len());
        let from = (o[i].max(0) as usize).min(to);
        Some((from..to, v))
    }

    /// The figures of row `i`, `extra`'s values replacing the columns'.
    fn figures<const N: usize>(&self, i: usize, names: &[&str; N]) -> [f64; N] {
        let mut f: [f64; N] = std::array::from_fn(|k| self.nums[k].get(i).unwrap_or(f64::NAN));
        let extra = self.extra.as_ref().filter(|e| e.is_valid(i));
        if let Some(Ok(Value::Object(m))) = extra.map(|e| serde_json::from_str(e.value(i))) {
            for (k, name) in names.iter().enumerate() {
                if let Some(v) = m.get(*name) {
                    f[k] = v.as_f64().unwrap_or(f64::NAN);
                }
            }
        }
        f
    }
}

/// Which table a row comes from, in the order rows of equal times come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    Events,
    Samples,
    Gpu,
    Tasks,
}

const ORDER: [Which; 4] = [Which::Events, Which::Samples, Which::Gpu, Which::Tasks];

/// One log's four event tables, read in the log's order.
pub struct LogParts {
    tables: [Table; 4],
    cols: [Option<Cols>; 4],
    /// Every node sample, or the first only (see [`Reading`]).
    samples: bool,
}

impl std::fmt::Debug for LogParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let paths: Vec<&Path> = self.tables.iter().map(|t| t.path.as_path()).collect();
        f.debug_struct("LogParts").field("tables", &paths).finish()
    }
}

impl LogParts {
    /// Opens the parts of the log whose parts are `TABLE/<folder>/<part>`
    /// in `root`, reading `per_log` rows a batch (its node samples only
    /// if `samples`: see [`Reading`]).
    pub fn open(
        root: &Path,
        (folder, part): (&str, &str),
        reading: Reading,
        session: &str,
    ) -> io::Result<Self> {
        let rows = reading.per_log;
        let path = |t: &str| root.join(t).join(folder).join(part);
        fn with_head(cols: &[&'static str]) -> Vec<&'static str> {
            let mut v = vec!["time", "node_id", "task_id"];
            v.extend_from_slice(cols);
            v
        }
        let mut sample = with_head(&NODE_COLUMNS);
        sample.extend(["cpu_percent_per_core", "extra"]);
        if !reading.samples {
            sample.truncate(3);
        }
        let mut gpu = with_head(&GPU_COLUMNS);
        gpu.extend(["gpu_id", "extra"]);
        Ok(Self {
            tables: [
                Table::open(path("events"), &EVENT_COLUMNS, rows, session)?,
                Table::open(path("samples"), &sample, rows, session)?,
                Table::open(path("gpu_samples"), &gpu, rows, session)?,
                Table::open(
                    path("task_samples"),
                    &with_head(&TASK_COLUMNS),
                    rows,
                    session,
                )?,
            ],
            cols: [None, None, None, None],
            samples: reading.samples,
        })
    }

    /// The next `rows` rows (fewer at the end).
    pub fn chunk(&mut self, rows: usize) -> io::Result<Chunk> {
        let mut c = Chunk {
            rows: Vec::with_capacity(rows),
            times: Vec::with_capacity(rows),
            ..Chunk::default()
        };
        let mut times = [None; 4];
        for (k, t) in times.iter_mut().enumerate() {
            *t = self.peek(k)?;
        }
        while c.rows.len() < rows {
            // The table whose row comes next, and until when its rows come
            // before every other table's: then a run of its rows is taken
            // looking only at its own times.
            let mut next: Option<(i64, usize)> = None;
            for (k, t) in times.iter().enumerate() {
                if let Some(t) = *t {
                    if next.is_none_or(|(n, _)| t < n) {
                        next = Some((t, k));
                    }
                }
            }
            let Some((mut t, k)) = next else {
                c.last = true;
                break;
            };
            // The first of the other tables' rows, by (time, table).
            let limit = (0..4)
                .filter(|&j| j != k)
                .filter_map(|j| times[j].map(|o| (o, j)))
                .min();
            loop {
                self.take(k, t, &mut c)?;
                times[k] = self.peek(k)?;
                match times[k] {
                    Some(n) if c.rows.len() < rows && limit.is_none_or(|l| (n, k) < l) => t = n,
                    _ => break,
                }
            }
        }
        Ok(c)
    }

    /// Table `k`'s next time (see [`Table::peek`]), its columns typed
    /// when it read a batch.
    fn peek(&mut self, k: usize) -> io::Result<Option<i64>> {
        let t = self.tables[k].peek()?;
        if std::mem::take(&mut self.tables[k].fresh) {
            self.retype(k)?;
        }
        Ok(t)
    }

    /// Types table `k`'s current batch's columns.
    fn retype(&mut self, k: usize) -> io::Result<()> {
        let t = &self.tables[k];
        self.cols[k] = match &t.batch {
            None => None,
            Some(b) => Some(match ORDER[k] {
                Which::Events => Cols::of(&t.path, b, &[])?,
                Which::Samples => Cols::of(&t.path, b, &NODE_COLUMNS)?,
                Which::Gpu => Cols::of(&t.path, b, &GPU_COLUMNS)?,
                Which::Tasks => Cols::of(&t.path, b, &TASK_COLUMNS)?,
            }),
        };
        Ok(())
    }

    /// Takes table `k`'s next row (at `time_ns`) into `c`.
    fn take(&mut self, k: usize, time_ns: i64, c: &mut Chunk) -> io::Result<()> {
        let t = &mut self.tables[k];
        let i = t.at;
        t.at += 1;
        let (Some(cols), Some(b)) = (&self.cols[k], &t.batch) else {
            return Ok(());
        };
        let node = match &t.node {
            Some(n) => c.name_is(n),
            None => c.name_of(cols.node.as_ref(), i),
        };
        let task = c.name_of(cols.task.as_ref(), i);
        let row = match ORDER[k] {
            Which::Samples if !self.samples => {
                // The log's first sample: the table ends here.
                *t = Table::none(std::mem::take(&mut t.path));
                t.fresh = true;
                Row::Apart
            }
            Which::Samples => {
                let cores = cols.cores_of(i).map(|(range, v)| {
                    let (from, to) = (range.start, range.end);
                    let at = c.cores.len() as u32;
                    if v.null_count() == 0 {
                        c.cores.extend_from_slice(&v.values()[from..to]);
                    } else {
                        let x = |k| if v.is_valid(k) { v.value(k) } else { f32::NAN };
                        c.cores.extend((from..to).map(x));
                    }
                    (at, (to - from) as u32)
                });
                Row::Node {
                    f: cols.figures(i, &NODE_COLUMNS),
                    cores,
                }
            }
            Which::Gpu => {
                let id = cols.gpu_id.as_ref().filter(|a| a.is_valid(i));
                let id = id.and_then(|a| u64::try_from(a.value(i)).ok()).unwrap_or(0);
                Row::Gpu(id, cols.figures(i, &GPU_COLUMNS))
            }
            Which::Tasks => Row::Task(cols.figures(i, &TASK_COLUMNS)),
            Which::Events => {
                c.events.push(event_line(&t.path, b, i)?);
                Row::Event((c.events.len() - 1) as u32)
            }
        };
        c.times.push(time_ns);
        c.rows.push(Stamped { node, task, row });
        Ok(())
    }
}

/// A node sample of figures `x` (see [`NodeFigures`]).
pub fn node_sample<'a>(x: &NodeFigures, per_core: Option<PerCore<'a>>) -> NodeSample<'a> {
    NodeSample {
        cpu_percent: fig(x[0]),
        memory_percent: fig(x[1]),
        disk_read_bytes: fig(x[2]),
        disk_write_bytes: fig(x[3]),
        net_sent_bytes: fig(x[4]),
        net_recv_bytes: fig(x[5]),
        job_cpu_percent: fig(x[6]),
        job_memory_bytes: fig(x[7]),
        job_memory_peak_bytes: fig(x[8]),
        job_disk_read_bytes: fig(x[9]),
        job_disk_write_bytes: fig(x[10]),
        per_core,
    }
}

/// Rows of a batch of node samples read apart ([`feed_samples`]).
const APART_ROWS: usize = 8192;

/// The node whose samples the log's `samples` part holds, where they can
/// be read apart ([`feed_samples`]): one node, named, on every row (as
/// the statistics say), and no row a task's. `None` where not (the merge
/// then places them): only the part's footer is read.
pub fn samples_node(root: &Path, (folder, part): (&str, &str)) -> io::Result<Option<String>> {
    let path = root.join("samples").join(folder).join(part);
    let file = open_part(&path)?;
    let b = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| bad(&path, e))?;
    let meta = b.metadata();
    let no_task = leaf(meta, "task_id").is_none_or(|_| all_null(meta, "task_id"));
    Ok(constant(meta, "node_id").filter(|n| !n.is_empty() && no_task))
}

/// What [`feed_samples`] read of a log.
#[derive(Debug, Clone, Copy, Default)]
pub struct Fed {
    /// Samples.
    pub rows: u64,
    /// Every sample's time at or after the one before.
    pub in_order: bool,
}

/// One log's node samples, in its order, to `sink` as its node's (see
/// [`samples_node`] and [`super::Source::each_nodes_apart`]), each at its
/// place (see [`super::place_of`]; the log is number `log`): its
/// `samples` part read a batch at a time, only the columns the views
/// read, each row as the merge would make it. `done` is told the rows of
/// each batch taken.
pub fn feed_samples(
    root: &Path,
    (folder, part): (&str, &str),
    (session, log): (&str, u32),
    sink: &mut dyn NodeSink,
    done: &mut dyn FnMut(usize),
) -> io::Result<Fed> {
    let mut columns = vec!["time", "node_id", "task_id"];
    columns.extend(NODE_COLUMNS);
    columns.extend(["cpu_percent_per_core", "extra"]);
    let path = root.join("samples").join(folder).join(part);
    let mut t = Table::open(path, &columns, APART_ROWS, session)?;
    let name = t.node.take().ok_or_else(|| {
        bad(
            &t.path,
            "its samples name more than one node, or none (changed while read?)",
        )
    })?;
    // The node's view is made at its first sample (as the merge makes it).
    let mut node = None;
    let mut spare: Vec<f32> = Vec::new();
    let mut fed = Fed {
        rows: 0,
        in_order: true,
    };
    let mut last = i64::MIN;
    while let Some(b) = t.reader.as_mut().and_then(Iterator::next) {
        let b = b.map_err(|e| bad(&t.path, e))?;
        let time = typed::<TimestampNanosecondType>(&t.path, &b, "time")?
            .ok_or_else(|| bad(&t.path, "no `time` column"))?;
        let cols = Cols::of(&t.path, &b, &NODE_COLUMNS)?;
        if cols.node.is_some() || cols.task.is_some() {
            return Err(bad(
                &t.path,
                "its samples name a task (changed while read?)",
            ));
        }
        for i in 0..b.num_rows() {
            if !time.is_valid(i) {
                return Err(bad(&t.path, "a row has no `time`"));
            }
            let ns = time.value(i);
            fed.in_order &= ns >= last;
            last = ns;
            let head = Head {
                event_type: Some("ResourceUpdate"),
                time_s: Some(crate::clock::ns_to_secs(ns)).filter(|t| t.is_finite()),
                session_id: Some(session),
                node_id: Some(&name),
                task_id: None,
            };
            let per_core = cols.cores_of(i).map(|(range, v)| {
                let (from, to) = (range.start, range.end);
                if v.null_count() == 0 {
                    return PerCore::Record(&v.values()[from..to]);
                }
                spare.clear();
                let x = |k| if v.is_valid(k) { v.value(k) } else { f32::NAN };
                spare.extend((from..to).map(x));
                PerCore::Record(&spare)
            });
            let node = *node.get_or_insert_with(|| sink.node(&name));
            sink.sample(
                node,
                super::place_of(ns, log),
                &head,
                &node_sample(&cols.figures(i, &NODE_COLUMNS), per_core),
            );
        }
        fed.rows += b.num_rows() as u64;
        done(b.num_rows());
    }
    Ok(fed)
}

/// Row `i` of an `events` batch as the JSONL line it was made from (the
/// keys in the line's order; see `crate::event_json`).
fn event_line(path: &Path, b: &RecordBatch, i: usize) -> io::Result<Value> {
    let mut m = Map::new();
    let s = |name: &str| -> io::Result<Option<String>> {
        Ok(strings(path, b, name)?
            .filter(|a| a.is_valid(i))
            .map(|a| a.value(i).to_string()))
    };
    let secs = |name: &str| -> io::Result<Option<Value>> {
        let t = typed::<TimestampNanosecondType>(path, b, name)?;
        Ok(t.filter(|a| a.is_valid(i))
            .map(|a| num(crate::clock::ns_to_secs(a.value(i)))))
    };
    let json = |name: &str| -> io::Result<Option<Value>> {
        Ok(s(name)?.and_then(|t| serde_json::from_str(&t).ok()))
    };
    let ty = s("event_type")?;
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            m.insert(k.to_string(), v);
        }
    };
    put("event_id", s("event_id")?.map(Value::String));
    put("event_type", ty.clone().map(Value::String));
    put("event_time", secs("time")?);
    put("emit_time", secs("emit_time")?);
    put("session_id", s("session_id")?.map(Value::String));
    put("backend", s("backend")?.map(Value::String));
    put("task_id", s("task_id")?.map(Value::String));
    put("node_id", s("node_id")?.map(Value::String));
    put(
        "attributes",
        Some(json("attributes")?.unwrap_or_else(|| Value::Object(Map::new()))),
    );
    let duration = Num::of(path, b, "duration_seconds")?.get(i);
    put("duration_seconds", duration.map(num));
    put("error_type", s("error_type")?.map(Value::String));
    if let Some(Value::Object(fields)) = json("fields")? {
        for (k, v) in fields {
            put(&k, Some(v));
        }
    }
    put("trace_id", s("trace_id")?.map(Value::String));
    put("span_id", s("span_id")?.map(Value::String));
    put("name", ty.map(Value::String));
    put("section", Some(Value::String("event".into())));
    Ok(Value::Object(m))
}

/// A float as JSON (`null` where not finite, as the line writes it).
pub fn num(x: f64) -> Value {
    serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)
}

/// What the [`Workers`] read of each log.
#[derive(Debug, Clone, Copy)]
pub struct Reading {
    /// Rows of a worker's merged chunk.
    pub rows: usize,
    /// Rows read of one log at a time.
    pub per_log: usize,
    /// Every node sample (`true`), or, where they are read apart (see
    /// [`feed_samples`]), only each log's first, in its place, as a
    /// [`Row::Apart`].
    pub samples: bool,
}

/// Threads that read the logs: worker `w` reads the logs `i` with
/// `i % workers == w` and merges them itself (by time, then log), so that
/// the reader merges only the workers' streams: each worker's logs' rows
/// stay in its own core's caches, and the reader's rows come in order,
/// one stream a worker.
pub struct Workers {
    asks: Vec<mpsc::Sender<Option<Chunk>>>,
    answers: Vec<mpsc::Receiver<io::Result<Chunk>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Workers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workers")
            .field("threads", &self.threads.len())
            .finish()
    }
}

impl Workers {
    /// Starts up to `workers` threads over `logs` (folder and part names,
    /// in the merge's order of logs), each answering with chunks of `rows`
    /// rows of its logs merged, each log read `per_log` rows at a time,
    /// its node samples too where `samples` (see [`Reading`]); a part of
    /// another session than `session` is refused.
    pub fn start(
        root: &Path,
        logs: &[(String, String)],
        workers: usize,
        reading: Reading,
        session: &str,
    ) -> io::Result<Self> {
        let workers = workers.clamp(1, logs.len().max(1));
        let mut asks = Vec::with_capacity(workers);
        let mut answers = Vec::with_capacity(workers);
        let mut threads = Vec::with_capacity(workers);
        for w in 0..workers {
            let (ask_tx, ask_rx) = mpsc::channel::<Option<Chunk>>();
            let (tx, rx) = mpsc::channel();
            asks.push(ask_tx);
            answers.push(rx);
            let root = root.to_path_buf();
            let session = session.to_string();
            let mine: Vec<(u32, String, String)> = logs
                .iter()
                .enumerate()
                .filter(|(i, _)| i % workers == w)
                .map(|(i, (f, p))| (i as u32, f.clone(), p.clone()))
                .collect();
            let t = std::thread::Builder::new()
                .name(format!("tal-dataset-{w}"))
                .spawn(move || serve(&root, mine, &ask_rx, &tx, reading, session))?;
            threads.push(t);
        }
        Ok(Self {
            asks,
            answers,
            threads,
        })
    }

    /// The workers.
    pub fn len(&self) -> usize {
        self.asks.len()
    }

    /// No worker (never: at least one is started).
    pub fn is_empty(&self) -> bool {
        self.asks.is_empty()
    }

    /// Asks worker `w` for its next chunk, to be filled into `spent` (a
    /// chunk merged already, whose buffers are reused) if given.
    pub fn ask(&self, w: usize, spent: Option<Chunk>) {
        let _ = self.asks[w].send(spent);
    }

    /// Waits for worker `w`'s chunk asked for.
    pub fn take(&self, w: usize) -> io::Result<Chunk> {
        self.answers[w]
            .recv()
            .unwrap_or_else(|_| Err(io::Error::other("a dataset reader thread stopped")))
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.asks.clear();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// One of a worker's logs: its parts, its rows read and not yet merged.
struct Log {
    index: u32,
    parts: LogParts,
    chunk: Chunk,
    at: usize,
    /// Its chunk's names' indexes in the chunk being filled, where known
    /// (by that chunk's number).
    map: Vec<(u64, u32)>,
}

/// A worker's merge of its logs.
struct Merger {
    logs: Vec<Log>,
    heap: BinaryHeap<Reverse<(i64, u32, usize)>>,
    per_log: usize,
    /// The number of the chunk being filled.
    generation: u64,
}

impl Merger {
    fn open(
        root: &Path,
        mine: &[(u32, String, String)],
        reading: Reading,
        session: &str,
    ) -> io::Result<Self> {
        let per_log = reading.per_log;
        let mut m = Self {
            logs: Vec::with_capacity(mine.len()),
            heap: BinaryHeap::with_capacity(mine.len()),
            per_log,
            generation: 0,
        };
        for (index, folder, part) in mine {
            let mut parts = LogParts::open(root, (folder, part), reading, session)?;
            let chunk = parts.chunk(per_log)?;
            m.logs.push(Log {
                index: *index,
                parts,
                chunk,
                at: 0,
                map: Vec::new(),
            });
            let k = m.logs.len() - 1;
            m.queue(k)?;
        }
        Ok(m)
    }

    /// Puts log `k`'s next row in the heap, reading its next rows when it
    /// has none left.
    fn queue(&mut self, k: usize) -> io::Result<()> {
        let l = &mut self.logs[k];
        while l.at == l.chunk.rows.len() {
            if l.chunk.last {
                return Ok(());
            }
            l.chunk = l.parts.chunk(self.per_log)?;
            l.at = 0;
            l.map.clear();
        }
        self.heap.push(Reverse((l.chunk.times[l.at], l.index, k)));
        Ok(())
    }

    /// The next `rows` rows of the worker's logs, merged, into `out`.
    fn fill(&mut self, rows: usize, mut out: Chunk) -> io::Result<Chunk> {
        self.generation += 1;
        out.clear();
        while out.rows.len() < rows {
            let Some(Reverse((t, index, k))) = self.heap.pop() else {
                out.last = true;
                break;
            };
            let g = self.generation;
            let l = &mut self.logs[k];
            let mut r = l.chunk.rows[l.at].clone();
            l.at += 1;
            if l.map.len() < l.chunk.names.len() {
                l.map.resize(l.chunk.names.len(), (0, NONE));
            }
            for name in [&mut r.node, &mut r.task] {
                if *name == NONE {
                    continue;
                }
                let slot = &mut l.map[*name as usize];
                if slot.0 != g {
                    *slot = (g, out.name_is(&l.chunk.names[*name as usize]));
                }
                *name = slot.1;
            }
            match &mut r.row {
                Row::Node {
                    cores: Some((at, n)),
                    ..
                } => {
                    let from = *at as usize;
                    let new = out.cores.len() as u32;
                    out.cores
                        .extend_from_slice(&l.chunk.cores[from..from + *n as usize]);
                    *at = new;
                }
                Row::Event(e) => {
                    out.events
                        .push(std::mem::take(&mut l.chunk.events[*e as usize]));
                    *e = (out.events.len() - 1) as u32;
                }
                _ => {}
            }
            out.rows.push(r);
            out.times.push(t);
            out.logs.push(index);
            self.queue(k)?;
        }
        Ok(out)
    }
}

/// A worker: opens its logs at the first ask, and answers each ask with
/// the next chunk of their rows merged.
fn serve(
    root: &Path,
    mine: Vec<(u32, String, String)>,
    asks: &mpsc::Receiver<Option<Chunk>>,
    out: &mpsc::Sender<io::Result<Chunk>>,
    reading: Reading,
    session: String,
) {
    let mut merger: Option<Merger> = None;
    let mut done = false;
    while let Ok(spent) = asks.recv() {
        let into = spent.unwrap_or_default();
        if done {
            let _ = out.send(Ok(Chunk {
                last: true,
                ..Chunk::default()
            }));
            continue;
        }
        let answer = match &mut merger {
            Some(m) => m.fill(reading.rows, into),
            None => Merger::open(root, &mine, reading, &session).and_then(|mut m| {
                let c = m.fill(reading.rows, into);
                merger = Some(m);
                c
            }),
        };
        // After an error or the end, only empty last chunks.
        done = answer.as_ref().map_or(true, |c| c.last);
        if done {
            merger = None;
        }
        let _ = out.send(answer);
    }
}

/// A reader of the columns `columns` of the part at `path` (one a table
/// has not are left out), `rows` rows a batch: for the small tables read
/// whole (`session`, `tasks`), each column's decoder costing its state.
pub fn read_columns(
    path: &Path,
    columns: &[&str],
    rows: usize,
    session: &str,
) -> io::Result<ParquetRecordBatchReader> {
    let file = open_part(path)?;
    let b = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| bad(path, e))?;
    check_session(path, b.metadata(), session)?;
    let schema = b.schema().clone();
    let roots: Vec<usize> = columns
        .iter()
        .filter_map(|c| schema.index_of(c).ok())
        .collect();
    let mask = ProjectionMask::roots(b.parquet_schema(), roots);
    b.with_projection(mask)
        .with_batch_size(rows)
        .build()
        .map_err(|e| bad(path, e))
}

/// A part's `ArrayRef`, for callers that read whole small tables.
pub fn column<'a>(path: &Path, b: &'a RecordBatch, name: &str) -> io::Result<&'a ArrayRef> {
    b.column_by_name(name)
        .ok_or_else(|| bad(path, format!("no column `{name}`")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_columns_start_with_rhapsody_s_series() {
        assert_eq!(NODE_COLUMNS[..6], crate::convert::NODE_SERIES);
        assert!(NODE_COLUMNS[6..].iter().all(|c| c.starts_with("job_")));
    }

    #[test]
    fn a_chunk_finds_its_names_few_or_many() {
        let mut c = Chunk::default();
        let names: Vec<String> = (0..40).map(|i| format!("node{i}")).collect();
        let first: Vec<u32> = names.iter().map(|n| c.name_is(n)).collect();
        assert_eq!(first, (0..40).collect::<Vec<u32>>());
        // Again, in another order: the same places, nothing added.
        for (i, n) in names.iter().enumerate().rev() {
            assert_eq!(c.name_is(n), i as u32);
        }
        assert_eq!(c.names.len(), 40);
        c.clear();
        assert_eq!(c.name_is("node7"), 0);
    }
}
