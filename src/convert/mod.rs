//! `tal convert`: node logs → one RHAPSODY JSONL checkpoint ([`jsonl`]),
//! and from that the OTLP form ([`otlp`]). Logs of one session merge into
//! one file, one trace, one session span ([`merge`]); logs of different
//! sessions are refused (convert them separately). Of several inputs, one
//! that cannot be taken is named and left out, a repeated log is taken
//! once, and any number of logs can be open at once ([`open_logs`]).
//!
//! The output is written to a new temporary file beside the target (made
//! with O_EXCL under a random name, so nothing planted in the directory is
//! followed or overwritten) and renamed into place when complete, so a
//! failed conversion never leaves a half file where a finished one is
//! expected. A target that exists and is not a regular file (`/dev/null`,
//! a FIFO, a terminal) is written to directly, never replaced. It is not fsynced: the binary log is
//! the durable record and the JSONL can always be made again from it. Without `-o`, the file is named as
//! RHAPSODY names its checkpoint, `{session_id}.{start_unix_seconds}.telemetry.jsonl`,
//! and placed in the directory of the first log.

pub mod chrome;
pub mod gpufill;
pub mod jsonl;
pub mod lines;
pub mod merge;
pub mod replay;

use crate::log::{LogReader, OpenError};
use crate::otlp;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

pub use jsonl::Summary;

/// Errors of a conversion.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// No log was given.
    #[error("no log files given: pass one or more .tal files written by `tal record`")]
    NoInputs,
    /// A log could not be opened.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// No input could be taken (each one's reason).
    #[error("no log could be converted: {0}")]
    NothingToConvert(String),
    /// Logs of more than one session were given.
    #[error("the logs belong to different sessions ({0} and {1}): convert each session's logs separately")]
    MixedSessions(String, String),
    /// The output could not be written.
    #[error("cannot write {path}: {source}")]
    Output {
        /// The output file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// Where the JSONL goes.
#[derive(Debug, Clone)]
pub enum Output {
    /// This file.
    File(PathBuf),
    /// The first of these names that is free when the JSONL is complete
    /// ([`PendingOutput::commit_first_free`]); written beside the first.
    FirstFree(Vec<PathBuf>),
    /// The default name, in this directory.
    DefaultIn(PathBuf),
    /// Standard output.
    Stdout,
}

/// RHAPSODY's checkpoint file name for a session.
pub fn default_file_name(session_id: &str, start_wall_ns: i64) -> String {
    format!(
        "{session_id}.{}.telemetry.jsonl",
        start_wall_ns.div_euclid(1_000_000_000)
    )
}

/// The name `tal record` falls back to when another node of the session
/// already wrote [`default_file_name`] into a shared directory.
pub fn node_file_name(session_id: &str, node_id: &str, start_wall_ns: i64) -> String {
    format!(
        "{session_id}.{node_id}.{}.telemetry.jsonl",
        start_wall_ns.div_euclid(1_000_000_000)
    )
}

/// The logs of a conversion, opened ([`open_logs`]): those taken, and
/// the inputs refused or skipped, for stderr.
#[derive(Debug)]
pub struct Inputs {
    /// The logs taken, in the order given.
    pub readers: Vec<LogReader>,
    /// Inputs that could not be taken (unreadable, not a log, a damaged
    /// header, ids `tal record` would not write), each with why.
    pub refused: Vec<OpenError>,
    /// Inputs taken once though given more than once (the same file, or a
    /// copy of a log), each with what it repeats.
    pub repeated: Vec<String>,
}

impl Inputs {
    /// The earliest start of the logs, ns since the epoch.
    pub fn start_wall_ns(&self) -> i64 {
        self.readers
            .iter()
            .map(|r| r.header().start_wall_ns)
            .min()
            .unwrap_or(0)
    }

    /// The session's default JSONL name ([`default_file_name`]): one plain
    /// file name, since the reader refuses a header whose session id would
    /// be anything else.
    pub fn default_name(&self) -> String {
        default_file_name(&self.readers[0].header().session_id, self.start_wall_ns())
    }
}

/// A log's identity, to find the same log given twice: the header's ids
/// and start, which a copy shares (the start is in ns, with the writer's
/// pid and monotonic clock beside it).
type Identity = (String, String, String, u32, i64, u64);

fn identity(r: &LogReader) -> Identity {
    let h = r.header();
    (
        h.session_id.clone(),
        h.node_id.clone(),
        h.hostname.clone(),
        h.pid,
        h.start_wall_ns,
        h.start_mono_ns,
    )
}

/// The logs taken so far, by file and by identity (their index in
/// [`Inputs::readers`]): finding a repeat costs the same for the
/// 10,000th log as for the second.
#[derive(Debug, Default)]
struct Seen {
    files: std::collections::HashMap<(u64, u64), usize>,
    logs: std::collections::HashMap<Identity, usize>,
}

/// Opens every log (see [`Inputs`]) and checks they belong to one session.
///
/// - An input that cannot be taken is refused and the others are
///   converted: one node's log cut inside its header, an empty file or a
///   stray file must not cost the other nodes their JSONL. The command
///   names each refused input and exits 1 ([`Summary::refused`]). Only
///   when no input can be taken is it an error.
/// - The same log given twice (the same file by device and inode, through
///   any name or link, or a copy: the same header identity) is taken once,
///   the longest of its copies (a copy taken while the log grew is
///   shorter), and said so; merged twice, every event would be doubled.
/// - Logs of different sessions are an error (convert them separately).
///
/// The soft limit of open files is raised to the hard one first, as
/// `tal record` does; logs beyond it are read through descriptors opened
/// for each read ([`crate::log::LogFile`]).
pub fn open_logs(paths: &[PathBuf]) -> Result<Inputs, ConvertError> {
    if paths.is_empty() {
        return Err(ConvertError::NoInputs);
    }
    crate::sys::raise_nofile();
    let mut inputs = Inputs {
        readers: Vec::with_capacity(paths.len()),
        refused: Vec::new(),
        repeated: Vec::new(),
    };
    let mut seen = Seen::default();
    for p in paths {
        match LogReader::open(p) {
            Ok(r) => take_once(&mut inputs, &mut seen, r),
            Err(e) => inputs.refused.push(e),
        }
    }
    if inputs.readers.is_empty() {
        let mut refused = inputs.refused;
        return Err(match refused.len() {
            1 => ConvertError::Open(refused.remove(0)),
            _ => ConvertError::NothingToConvert(
                refused
                    .iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
        });
    }
    let first = inputs.readers[0].header().session_id.clone();
    if let Some(other) = inputs
        .readers
        .iter()
        .find(|r| r.header().session_id != first)
    {
        return Err(ConvertError::MixedSessions(
            first,
            other.header().session_id.clone(),
        ));
    }
    Ok(inputs)
}

/// Adds `r` to `inputs`, unless it is a log already there (see
/// [`open_logs`]): then the longer of the two is kept, and the repeat
/// noted.
fn take_once(inputs: &mut Inputs, seen: &mut Seen, r: LogReader) {
    if let Some(&i) = seen.files.get(&r.dev_ino()) {
        inputs.repeated.push(format!(
            "{} is the same file as {}: taken once",
            r.path().display(),
            inputs.readers[i].path().display()
        ));
        return;
    }
    let i = match seen.logs.entry(identity(&r)) {
        std::collections::hash_map::Entry::Vacant(v) => {
            v.insert(inputs.readers.len());
            seen.files.insert(r.dev_ino(), inputs.readers.len());
            inputs.readers.push(r);
            return;
        }
        std::collections::hash_map::Entry::Occupied(o) => *o.get(),
    };
    seen.files.insert(r.dev_ino(), i);
    let longer = r.file_len() > inputs.readers[i].file_len();
    let (kept, dropped) = if longer {
        let old = std::mem::replace(&mut inputs.readers[i], r);
        (inputs.readers[i].path(), old.path().to_path_buf())
    } else {
        (inputs.readers[i].path(), r.path().to_path_buf())
    };
    inputs.repeated.push(format!(
        "{} and {} are copies of one log (node {:?}, started at the same instant): took {}{} once",
        dropped.display(),
        kept.display(),
        inputs.readers[i].header().node_id,
        kept.display(),
        if longer { ", the longer," } else { "" }
    ));
}

/// Converts `paths` to one JSONL checkpoint; returns where it went and
/// what was found, with the conversion's peak memory.
pub fn to_jsonl(
    paths: &[PathBuf],
    output: &Output,
) -> Result<(Option<PathBuf>, Summary), ConvertError> {
    to_jsonl_showing(paths, output, false)
}

/// [`to_jsonl`], showing its progress on a terminal unless `quiet` (see
/// [`crate::progress`]).
pub fn to_jsonl_showing(
    paths: &[PathBuf],
    output: &Output,
    quiet: bool,
) -> Result<(Option<PathBuf>, Summary), ConvertError> {
    let total = paths
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    let what = format!("converting {} log(s)", paths.len());
    let progress = crate::progress::Progress::bytes(&what, total, quiet);
    // The conversion's own peak memory, not that of what ran before it in
    // this process (the agent, in `tal record`).
    crate::stats::reset_peak_rss();
    let before = crate::stats::rss();
    let converted = convert_to(paths, output, &progress);
    progress.finish();
    let (path, mut summary) = converted?;
    summary.peak_rss_bytes = crate::stats::peak_rss().zip(before);
    Ok((path, summary))
}

fn convert_to(
    paths: &[PathBuf],
    output: &Output,
    progress: &crate::progress::Progress,
) -> Result<(Option<PathBuf>, Summary), ConvertError> {
    let inputs = open_logs(paths)?;
    let target = match output {
        Output::FirstFree(_) | Output::Stdout => None,
        Output::File(p) => Some(p.clone()),
        Output::DefaultIn(dir) => Some(dir.join(inputs.default_name())),
    };
    let refused = inputs.refused.iter().map(|e| e.to_string()).collect();
    let repeated = inputs.repeated;
    let readers = inputs.readers;
    let (path, mut summary) = match output {
        Output::FirstFree(names) => convert_first_free(readers, names, progress)?,
        _ => convert_readers(readers, target, progress)?,
    };
    summary.refused = refused;
    summary.repeated = repeated;
    Ok((path, summary))
}

/// The JSONL of `readers`, to the first free of `names`
/// ([`PendingOutput::commit_first_free`]).
fn convert_first_free(
    readers: Vec<LogReader>,
    names: &[PathBuf],
    progress: &crate::progress::Progress,
) -> Result<(Option<PathBuf>, Summary), ConvertError> {
    let first = names.first().ok_or(ConvertError::NoInputs)?;
    let dir = dir_of(first).to_path_buf();
    let out_err = |source| ConvertError::Output {
        path: first.clone(),
        source,
    };
    let mut out = PendingOutput::create(first).map_err(out_err)?;
    let s =
        jsonl::write_jsonl_showing(readers, &mut out.writer, &dir, progress).map_err(out_err)?;
    let path = out.commit_first_free(names).map_err(out_err)?;
    Ok((Some(path), s))
}

/// The JSONL of `readers`, to `target` (`None`: stdout).
fn convert_readers(
    readers: Vec<LogReader>,
    target: Option<PathBuf>,
    progress: &crate::progress::Progress,
) -> Result<(Option<PathBuf>, Summary), ConvertError> {
    match target {
        None => {
            let stdout = io::stdout();
            let mut w = BufWriter::with_capacity(1 << 20, stdout.lock());
            let s = jsonl::write_jsonl_showing(readers, &mut w, &std::env::temp_dir(), progress)
                .map_err(|source| ConvertError::Output {
                    path: PathBuf::from("-"),
                    source,
                })?;
            Ok((None, s))
        }
        Some(path) => {
            let out_err = |source| ConvertError::Output {
                path: path.clone(),
                source,
            };
            // No fsync: the binary log is the durable record, and a JSONL
            // lost to a crash is remade by running `tal convert` again.
            // Spans spill (if they must) beside the output, which has to
            // hold them anyway; for a FIFO or a device, in $TMPDIR.
            let special = std::fs::metadata(&path).is_ok_and(|m| !m.is_file());
            let dir = if special {
                std::env::temp_dir()
            } else {
                dir_of(&path).to_path_buf()
            };
            let s = write_output(&path, |w| {
                jsonl::write_jsonl_showing(readers, w, &dir, progress)
            })
            .map_err(out_err)?;
            Ok((Some(path), s))
        }
    }
}

/// A checkpoint's name without `.telemetry.jsonl` (or `.jsonl`): the stem
/// of the files made from it (`.otlp`, `.trace.json`, `.report.html`).
pub fn jsonl_stem(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    name.strip_suffix(".telemetry.jsonl")
        .or_else(|| name.strip_suffix(".jsonl"))
        .unwrap_or(&name)
        .to_string()
}

/// The directory of `path` (`.` for a bare file name).
pub fn dir_of(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// The series of a per-node ResourceUpdate, in RHAPSODY's order (what the
/// views of a JSONL chart).
pub const NODE_SERIES: [&str; 6] = [
    "cpu_percent",
    "memory_percent",
    "disk_read_bytes",
    "disk_write_bytes",
    "net_sent_bytes",
    "net_recv_bytes",
];

/// A JSONL time (float seconds since the epoch) in ns, if it is one tal
/// accepts ([`crate::clock::time_in_range`]).
pub fn json_time_ns(v: &serde_json::Value) -> Option<i64> {
    v.as_f64()
        .filter(|t| crate::clock::time_in_range(*t))
        .map(crate::clock::secs_to_ns)
}

/// Node ids, numbered in the order they are first seen (the views of a
/// JSONL: Chrome trace, summary, report).
#[derive(Debug, Default, Clone)]
pub struct NodeIndex {
    /// The ids, by number.
    pub names: Vec<String>,
    index: std::collections::HashMap<String, u32>,
}

impl NodeIndex {
    /// `id`'s number, numbering it if it is new.
    pub fn add(&mut self, id: &str) -> u32 {
        if let Some(&i) = self.index.get(id) {
            return i;
        }
        let i = self.names.len() as u32;
        self.names.push(id.to_string());
        self.index.insert(id.to_string(), i);
        i
    }

    /// `id`'s number, if it has one.
    pub fn get(&self, id: &str) -> Option<u32> {
        self.index.get(id).copied()
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// None yet.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// Calls `f` with each line of a JSONL file, parsed, as
/// [`lines::JsonlLines`] reads them (blank and overlong lines skipped,
/// `NaN` read as null); a line that is not JSON is an error naming its
/// number. Returns what reading met. Errors of the input are marked as
/// such ([`lines::is_input_error`]); `f`'s are passed on as they are.
pub fn each_jsonl_line(
    input: impl io::BufRead,
    mut f: impl FnMut(serde_json::Value) -> io::Result<()>,
) -> io::Result<lines::LineStats> {
    let mut lines = lines::JsonlLines::new(input);
    while let Some(v) = lines.next_value()? {
        f(v)?;
    }
    Ok(lines.stats())
}

/// Writes `path` through `write` (see the module doc): into a new
/// temporary file in the same directory, renamed over `path` when
/// complete; or straight into `path` when it exists and is not a regular
/// file.
pub fn write_output<T>(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> io::Result<T>,
) -> io::Result<T> {
    let mut out = PendingOutput::create(path)?;
    let v = write(&mut out.writer)?;
    out.commit()?;
    Ok(v)
}

/// An output file being written (see the module doc): a new temporary file
/// beside `path`, renamed over it by [`PendingOutput::commit`] (and removed
/// if it is dropped before), or `path` itself when it exists and is not a
/// regular file.
#[derive(Debug)]
pub struct PendingOutput {
    /// Where to write.
    pub writer: BufWriter<File>,
    path: PathBuf,
    tmp: Option<tempfile::TempPath>,
    /// Removes `tmp` if a stop signal ends tal first.
    _registered: Option<crate::tempfiles::Registered>,
}

/// An error making a file in `dir`, saying what is wrong with the folder
/// (not naming the temporary file tal tried to make there).
fn folder_error(dir: &Path, e: io::Error) -> io::Error {
    let why = match std::fs::metadata(dir) {
        Err(m) if m.kind() == io::ErrorKind::NotFound => {
            format!("the folder {} does not exist", dir.display())
        }
        Ok(m) if !m.is_dir() => format!("{} is not a folder", dir.display()),
        _ => format!(
            "cannot make a file in the folder {}: {}",
            dir.display(),
            io::Error::from(e.kind())
        ),
    };
    io::Error::new(e.kind(), why)
}

/// The inputs of this run (device and inode), which no output may replace
/// ([`protect_inputs`]).
static INPUTS: std::sync::Mutex<Vec<(u64, u64, PathBuf)>> = std::sync::Mutex::new(Vec::new());

/// Records `paths` as this run's inputs: an output that is one of them
/// (the same file, through any name or link) is refused
/// ([`PendingOutput::create`]), so `tal convert in.tal -o in.tal` cannot
/// turn the only copy of a log into its JSONL.
pub fn protect_inputs(paths: &[PathBuf]) {
    use std::os::unix::fs::MetadataExt;
    let mut inputs = INPUTS.lock().unwrap_or_else(|e| e.into_inner());
    for p in paths {
        if let Ok(m) = std::fs::metadata(p) {
            inputs.push((m.dev(), m.ino(), p.clone()));
        }
    }
}

/// An error if `path` is one of the inputs ([`protect_inputs`]).
pub fn refuse_input(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let Ok(m) = std::fs::metadata(path) else {
        return Ok(());
    };
    let inputs = INPUTS.lock().unwrap_or_else(|e| e.into_inner());
    match inputs.iter().find(|(d, i, _)| (*d, *i) == (m.dev(), m.ino())) {
        Some((_, _, input)) => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "it is the input {}: not replacing an input with an output; name another output (-o)",
                input.display()
            ),
        )),
        None => Ok(()),
    }
}

impl PendingOutput {
    /// Starts writing `path`.
    pub fn create(path: &Path) -> io::Result<Self> {
        refuse_input(path)?;
        if let Ok(m) = std::fs::metadata(path) {
            if !m.is_file() {
                if m.is_dir() {
                    return Err(io::Error::new(
                        io::ErrorKind::IsADirectory,
                        "is a directory: name a file, or - for stdout",
                    ));
                }
                let f = std::fs::OpenOptions::new().write(true).open(path)?;
                return Ok(Self {
                    writer: BufWriter::with_capacity(1 << 20, f),
                    path: path.to_path_buf(),
                    tmp: None,
                    _registered: None,
                });
            }
        }
        let dir = dir_of(path);
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let kind = crate::tempfiles::beside_kind(&name);
        // What a killed tal of this host left here for this output.
        crate::tempfiles::sweep(dir, &kind, false);
        // A replaced file keeps its mode (a private 0600 file stays
        // private); a new one gets 0666 less the umask, as a plain create.
        let keep = std::fs::metadata(path)
            .ok()
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777);
        let tmp = tempfile::Builder::new()
            .prefix(&crate::tempfiles::own_prefix(&kind))
            .suffix(".tmp")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(
                keep.unwrap_or(0o666),
            ))
            .tempfile_in(dir)
            .map_err(|e| folder_error(dir, e))?;
        if let Some(mode) = keep {
            // Exactly that mode, whatever the umask.
            tmp.as_file()
                .set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))?;
        }
        let registered = crate::tempfiles::register(tmp.path());
        let (f, tmp_path) = tmp.into_parts();
        Ok(Self {
            writer: BufWriter::with_capacity(1 << 20, f),
            path: path.to_path_buf(),
            tmp: Some(tmp_path),
            _registered: Some(registered),
        })
    }

    /// Finishes the file under the first of `names` that is free: flushed,
    /// then moved there without replacing anything (`renameat2` with
    /// `RENAME_NOREPLACE`, or `link` and `unlink` where the file system
    /// lacks it), so a name only ever holds a complete file, and two
    /// writers racing for a name each get one of their own. `AlreadyExists`
    /// when every name is taken (the temporary is removed).
    pub fn commit_first_free(mut self, names: &[PathBuf]) -> io::Result<PathBuf> {
        use rustix::fs::{renameat_with, RenameFlags, CWD};
        use rustix::io::Errno;
        self.writer.flush()?;
        let Some(tmp) = self.tmp.take() else {
            return Err(io::Error::other("not a file written beside its name"));
        };
        for name in names {
            match renameat_with(CWD, &*tmp, CWD, name, RenameFlags::NOREPLACE) {
                Ok(()) => {
                    // Moved: nothing left to remove.
                    let _ = tmp.keep();
                    return Ok(name.clone());
                }
                Err(Errno::EXIST) => continue,
                Err(Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) => {}
                Err(e) => return Err(e.into()),
            }
            match rustix::fs::link(&*tmp, name) {
                // `tmp`'s drop unlinks the temporary name.
                Ok(()) => return Ok(name.clone()),
                Err(Errno::EXIST) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "every name is taken",
        ))
    }

    /// Finishes the file: flushed, and renamed into place.
    pub fn commit(mut self) -> io::Result<()> {
        self.writer.flush()?;
        if let Some(tmp) = self.tmp.take() {
            // Removed by `tmp`'s drop if the rename fails.
            tmp.persist(&self.path).map_err(|e| e.error)?;
        }
        Ok(())
    }
}

/// Where the traces JSON goes.
#[derive(Debug)]
enum TracesSink {
    File(PendingOutput),
    Stdout(BufWriter<io::Stdout>),
}

impl Write for TracesSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::File(p) => p.writer.write(buf),
            Self::Stdout(s) => s.write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Self::File(p) => p.writer.write_all(buf),
            Self::Stdout(s) => s.write_all(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::File(p) => p.writer.flush(),
            Self::Stdout(s) => s.flush(),
        }
    }
}

/// The OTLP JSON files of a conversion, written as it goes (see
/// [`otlp::stream_jsonl`]): `<prefix>.traces.json` and
/// `<prefix>.metrics.json` (each written whole, then renamed into place),
/// or both as two lines on stdout for `-`.
#[derive(Debug)]
pub struct OtlpJsonOut {
    prefix: PathBuf,
    traces: otlp::TracesJson<TracesSink>,
}

impl OtlpJsonOut {
    fn stdout(&self) -> bool {
        self.prefix.as_os_str() == "-"
    }

    /// The path of one of the files (`-` for stdout).
    fn path(&self, suffix: &str) -> PathBuf {
        if self.stdout() {
            return PathBuf::from("-");
        }
        let mut name = self.prefix.as_os_str().to_owned();
        name.push(".");
        name.push(suffix);
        PathBuf::from(name)
    }

    /// Starts writing the files named by `prefix` (`-`: stdout).
    pub fn create(prefix: &Path) -> Result<Self, ConvertError> {
        let mut o = Self {
            prefix: prefix.to_path_buf(),
            traces: otlp::TracesJson::new(TracesSink::Stdout(BufWriter::with_capacity(
                1 << 20,
                io::stdout(),
            ))),
        };
        if !o.stdout() {
            let path = o.path("traces.json");
            let p = PendingOutput::create(&path)
                .map_err(|source| ConvertError::Output { path, source })?;
            o.traces = otlp::TracesJson::new(TracesSink::File(p));
        }
        Ok(o)
    }

    /// Writes one installment of spans.
    pub fn spans(
        &mut self,
        req: &opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest,
    ) -> Result<(), ConvertError> {
        self.traces
            .spans(req)
            .map_err(|source| ConvertError::Output {
                path: self.path("traces.json"),
                source,
            })
    }

    /// Finishes both: the traces request (its frame from `otlp`'s when no
    /// span came) and the metrics; returns the two paths (none for
    /// stdout).
    pub fn finish(
        self,
        otlp: &otlp::Otlp,
    ) -> Result<(Option<PathBuf>, Option<PathBuf>), ConvertError> {
        let (traces_path, metrics_path) = (self.path("traces.json"), self.path("metrics.json"));
        let err = |path: &PathBuf| {
            let path = path.clone();
            move |source| ConvertError::Output { path, source }
        };
        let metrics = serde_json::to_vec(&otlp.metrics).expect("OTLP messages serialise");
        match self
            .traces
            .finish(&otlp.traces)
            .map_err(err(&traces_path))?
        {
            TracesSink::Stdout(mut out) => {
                for part in [&b"\n"[..], &metrics, b"\n"] {
                    out.write_all(part).map_err(err(&traces_path))?;
                }
                out.flush().map_err(err(&traces_path))?;
                Ok((None, None))
            }
            TracesSink::File(p) => {
                p.commit().map_err(err(&traces_path))?;
                write_output(&metrics_path, |w| w.write_all(&metrics))
                    .map_err(err(&metrics_path))?;
                Ok((Some(traces_path), Some(metrics_path)))
            }
        }
    }
}

/// What a finished conversion wrote, for stderr: `wrote PATH (N events, T
/// tasks, K of them open at the end, L log(s); peak memory M MiB, G MiB
/// more than at its start)`.
pub fn describe_written(path: &Path, summary: &Summary) -> String {
    let mut tasks = format!("{} tasks", summary.tasks);
    if summary.tasks_open_at_end > 0 {
        tasks.push_str(&format!(
            ", {} of them open at the end (closed as canceled)",
            summary.tasks_open_at_end
        ));
    }
    if summary.task_ids_reused > 0 {
        tasks.push_str(&format!(
            "; {} task id(s) used again: those runs are recorded but not counted apart",
            summary.task_ids_reused
        ));
    }
    let mib = |b: u64| b as f64 / f64::from(1 << 20);
    let peak = summary
        .peak_rss_bytes
        .map(|(peak, before)| {
            format!(
                "; peak memory {:.1} MiB, {:.1} MiB more than at its start",
                mib(peak),
                mib(peak.saturating_sub(before))
            )
        })
        .unwrap_or_default();
    format!(
        "wrote {} ({} events, {tasks}, {} log(s){peak})",
        path.display(),
        summary.events,
        summary.logs.len()
    )
}

/// Lines for stderr naming the inputs refused and those taken once (see
/// [`open_logs`]); none when every input was taken.
pub fn describe_inputs(summary: &Summary) -> Vec<String> {
    let mut lines: Vec<String> = summary.repeated.clone();
    for e in &summary.refused {
        lines.push(format!("{e}; the other logs were converted without it"));
    }
    lines
}

/// One or more lines for stderr describing what reading each log found:
/// silent for clean logs, explicit about recovery otherwise (and first,
/// [`describe_inputs`]).
pub fn describe(summary: &Summary) -> Vec<String> {
    let mut lines = describe_inputs(summary);
    for (path, node, st) in &summary.logs {
        let p = path.display();
        if let Some(e) = &st.io_error {
            lines.push(format!(
                "{p}: read error after {} records: {e}; converted what was read",
                st.records
            ));
        }
        if st.corrupt_frames > 0 {
            lines.push(format!(
                "{p}: skipped {} damaged record(s) ({} bytes) at offset(s) {:?}; the records around them were recovered",
                st.corrupt_frames, st.skipped_bytes, st.corrupt_offsets
            ));
        }
        if st.undecodable_frames > 0 {
            lines.push(format!(
                "{p}: skipped {} record(s) this tal cannot decode (written by a newer tal?)",
                st.undecodable_frames
            ));
        }
        if !st.end_marker {
            lines.push(format!(
                "{p}: no end marker (node {node}'s agent was killed or its disk filled): recovered {} whole record(s){}; the session span is closed at the last record's time",
                st.records,
                if st.truncated_tail { ", the last one was cut off mid-record" } else { "" }
            ));
        }
    }
    lines
}
