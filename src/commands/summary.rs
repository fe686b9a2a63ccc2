//! `tal summary`: the session in a few screens (see [`crate::summary`]).
//! Node logs are converted first, to a temporary JSONL in `$TMPDIR`
//! (removed at the end), so that the summary reads what `tal convert`
//! would write.

use crate::cli::SummaryArgs;
use crate::convert::{self, Output};
use std::io::Write;

/// A session's JSONL to read: the one given, or node logs converted into a
/// temporary file in `$TMPDIR` (removed when this drops).
pub(crate) struct SessionJsonl {
    /// Its path.
    pub(crate) path: std::path::PathBuf,
    _temporary: Option<tempfile::NamedTempFile>,
}

impl SessionJsonl {
    /// From `inputs`: one `.jsonl`, or node logs.
    /// (Converting node logs shows its progress unless `quiet`.)
    pub(crate) fn resolve(inputs: &[std::path::PathBuf], quiet: bool) -> anyhow::Result<Self> {
        let is_jsonl = |p: &std::path::PathBuf| p.extension().is_some_and(|e| e == "jsonl");
        let jsonl_inputs = inputs.iter().filter(|p| is_jsonl(p)).count();
        if jsonl_inputs > 0 && inputs.len() > 1 {
            anyhow::bail!(
                "give either node logs (.tal) or one JSONL checkpoint (.jsonl), not both or several"
            );
        }
        if jsonl_inputs == 1 {
            return Ok(Self {
                path: inputs[0].clone(),
                _temporary: None,
            });
        }
        let tmp = tempfile::Builder::new()
            .prefix(".tal-")
            .suffix(".jsonl")
            .tempfile()
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot create a temporary file in {} (set TMPDIR to a writable directory): {e}",
                    std::env::temp_dir().display()
                )
            })?;
        convert::to_jsonl_showing(inputs, &Output::File(tmp.path().to_path_buf()), quiet)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(Self {
            path: tmp.path().to_path_buf(),
            _temporary: Some(tmp),
        })
    }

    /// A fresh reader of it.
    pub(crate) fn open(&self) -> std::io::Result<std::io::BufReader<std::fs::File>> {
        std::fs::File::open(&self.path).map(|f| std::io::BufReader::with_capacity(1 << 20, f))
    }
}

/// `tal summary`.
pub fn run(args: SummaryArgs) -> anyhow::Result<i32> {
    let src = SessionJsonl::resolve(&args.logs, args.quiet)?;
    let read_err = |e: std::io::Error| anyhow::anyhow!("cannot read {}: {e}", src.path.display());
    let progress = crate::progress::Progress::bytes(
        "summary",
        super::convert::file_len(&src.path),
        args.quiet,
    );
    let input = src.open().map_err(read_err)?;
    let summary = crate::summary::from_jsonl(progress.reading(input));
    progress.finish();
    let summary = summary.map_err(read_err)?;
    drop(src);
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
    Ok(0)
}
