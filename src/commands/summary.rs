//! `tal summary`: the session in a few screens (see [`crate::summary`]).
//! Node logs are converted first, to a temporary JSONL in a private
//! directory in `$TMPDIR` (see [`crate::tempfiles`]: removed at the end,
//! and on SIGINT, SIGTERM or SIGHUP), so that the summary reads what `tal
//! convert` would write.

use crate::cli::SummaryArgs;
use crate::convert::{self, Output};
use std::io::Write;

/// A session's JSONL to read: the one given, or node logs converted into a
/// temporary file in a private directory (removed when this drops).
pub(crate) struct SessionJsonl {
    /// Its path.
    pub(crate) path: std::path::PathBuf,
    /// The private work directory it is in, when it was made from logs.
    _work: Option<(crate::tempfiles::WorkDir, crate::tempfiles::Registered)>,
    /// Some node log was refused (named on stderr): the command exits 1.
    pub(crate) refused: bool,
}

impl SessionJsonl {
    /// From `inputs`: one `.jsonl`, or node logs.
    /// (Converting node logs shows its progress unless `quiet`.)
    /// Inputs refused or taken once are said on stderr, after `command:`.
    pub(crate) fn resolve(
        inputs: &[std::path::PathBuf],
        quiet: bool,
        command: &str,
    ) -> anyhow::Result<Self> {
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
                _work: None,
                refused: false,
            });
        }
        // In a private directory (the session's task attributes are in
        // it), removed when this drops or a signal ends tal.
        let work = crate::tempfiles::WorkDir::new()
            .map_err(|e| anyhow::anyhow!("{e} (set TMPDIR to a directory you can write)"))?;
        let (path, registered) = work.file("session.telemetry.jsonl");
        let (_, summary) = convert::to_jsonl_showing(inputs, &Output::File(path.clone()), quiet)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        for l in convert::describe_inputs(&summary) {
            eprintln!("{command}: {l}");
        }
        Ok(Self {
            path,
            _work: Some((work, registered)),
            refused: !summary.refused.is_empty(),
        })
    }

    /// A fresh reader of it.
    pub(crate) fn open(&self) -> std::io::Result<std::io::BufReader<std::fs::File>> {
        std::fs::File::open(&self.path).map(|f| std::io::BufReader::with_capacity(1 << 20, f))
    }
}

/// `tal summary`.
pub fn run(mut args: SummaryArgs) -> anyhow::Result<i32> {
    args.logs = super::inputs::expand(&args.logs)?;
    // The temporary JSONL goes on SIGINT, SIGTERM and SIGHUP too.
    crate::sys::exit_on(&[libc::SIGINT, libc::SIGTERM, libc::SIGHUP]);
    let src = SessionJsonl::resolve(&args.logs, args.quiet, "tal summary")?;
    // 1: summarised, but some node log was refused (named on stderr).
    let code = i32::from(src.refused);
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
    Ok(code)
}
