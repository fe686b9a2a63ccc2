//! `tal summary`: the session in a few screens (see [`crate::summary`]).
//! Node logs are read straight into the summary through the session's
//! replay (see [`crate::items::logs`]): the same figures as from the JSONL
//! `tal convert` would write, without writing or parsing it.

use crate::cli::SummaryArgs;
use crate::items::{dataset::Dataset, jsonl::Jsonl, logs::Logs, Source};
use std::io::Write;
use std::path::{Path, PathBuf};

/// A session to read: one JSONL checkpoint, or node logs.
#[derive(Debug)]
pub(crate) enum SessionInput {
    /// A JSONL checkpoint (tal's or RHAPSODY's).
    Jsonl(PathBuf),
    /// Node logs, opened.
    Logs(Logs),
    /// A Parquet dataset's folder, its `session` rows read.
    Dataset(PathBuf, Dataset),
}

impl SessionInput {
    /// From `inputs`: one `.jsonl`, one dataset folder, or node logs.
    /// Inputs refused or taken
    /// once are said on stderr, after `command:`; reading node logs shows
    /// its progress as `what` unless `quiet`.
    pub(crate) fn resolve(
        inputs: &[PathBuf],
        quiet: bool,
        command: &str,
        what: &str,
    ) -> anyhow::Result<Self> {
        let is_jsonl = |p: &PathBuf| p.extension().is_some_and(|e| e == "jsonl");
        let jsonl_inputs = inputs.iter().filter(|p| is_jsonl(p)).count();
        if jsonl_inputs > 0 && inputs.len() > 1 {
            anyhow::bail!(
                "give either node logs (.tal) or one JSONL checkpoint (.jsonl), not both or several"
            );
        }
        if jsonl_inputs == 1 {
            return Ok(Self::Jsonl(inputs[0].clone()));
        }
        let is_dataset = |p: &PathBuf| p.is_dir() && crate::items::dataset::is_dataset(p);
        if inputs.iter().any(is_dataset) {
            if inputs.len() > 1 {
                anyhow::bail!(
                    "give one dataset folder alone (it holds every node of its session), \
                     not with logs or another dataset"
                );
            }
            let d = Dataset::open(&inputs[0], what, quiet).map_err(|e| {
                anyhow::anyhow!("cannot read the dataset {}: {e}", inputs[0].display())
            })?;
            return Ok(Self::Dataset(inputs[0].clone(), d));
        }
        let logs = Logs::open(inputs, what, quiet).map_err(|e| anyhow::anyhow!("{e}"))?;
        for l in &logs.repeated {
            eprintln!("{command}: {l}");
        }
        for e in &logs.refused {
            eprintln!("{command}: {e}; the other logs were converted without it");
        }
        Ok(Self::Logs(logs))
    }

    /// Some node log was refused (named on stderr): the command exits 1.
    pub(crate) fn refused(&self) -> bool {
        matches!(self, Self::Logs(l) if !l.refused.is_empty())
    }

    /// What an error reading it names: the checkpoint, or the first log.
    pub(crate) fn path(&self, inputs: &[PathBuf]) -> PathBuf {
        match self {
            Self::Jsonl(p) | Self::Dataset(p, _) => p.clone(),
            Self::Logs(_) => inputs.first().cloned().unwrap_or_default(),
        }
    }

    /// Its bytes (a JSONL's; node logs show their own progress).
    fn jsonl_len(&self) -> u64 {
        match self {
            Self::Jsonl(p) => super::convert::file_len(p),
            Self::Logs(_) | Self::Dataset(..) => 0,
        }
    }

    /// Reads it: `f` gets the source, showing a JSONL's progress as `what`
    /// over `passes` readings unless `quiet`.
    pub(crate) fn read<T>(
        &mut self,
        what: &str,
        passes: u64,
        quiet: bool,
        f: impl FnOnce(&mut dyn Source) -> T,
    ) -> T {
        let progress = crate::progress::Progress::bytes(what, passes * self.jsonl_len(), quiet);
        let out = match self {
            Self::Jsonl(p) => {
                let p: &Path = p;
                let open = || {
                    std::fs::File::open(p)
                        .map(|f| progress.reading(std::io::BufReader::with_capacity(1 << 20, f)))
                };
                f(&mut Jsonl::new(open))
            }
            Self::Logs(l) => f(l),
            Self::Dataset(_, d) => f(d),
        };
        progress.finish();
        out
    }
}

/// `tal summary`.
pub fn run(mut args: SummaryArgs) -> anyhow::Result<i32> {
    args.logs = super::inputs::expand(&args.logs)?;
    let mut src = SessionInput::resolve(&args.logs, args.quiet, "tal summary", "summary")?;
    // 1: summarised, but some node log was refused (named on stderr).
    let code = i32::from(src.refused());
    let path = src.path(&args.logs);
    let read_err = |e: std::io::Error| anyhow::anyhow!("cannot read {}: {e}", path.display());
    let summary = src.read("summary", 1, args.quiet, crate::summary::from_source);
    let summary = summary.map_err(read_err)?;
    for note in summary.read.notes() {
        eprintln!("tal summary: {note}");
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &summary)?;
        writeln!(out)?;
    } else {
        out.write_all(crate::summary::render(&summary).as_bytes())?;
    }
    Ok(code)
}
