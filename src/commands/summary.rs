//! `tal summary`: the session in a few screens (see [`crate::summary`]).
//! Node logs are converted first, to a temporary JSONL in `$TMPDIR`
//! (removed at the end), so that the summary reads what `tal convert`
//! would write.

use crate::cli::SummaryArgs;
use crate::convert::{self, Output};
use std::io::Write;

/// `tal summary`.
pub fn run(args: SummaryArgs) -> anyhow::Result<i32> {
    let is_jsonl = |p: &std::path::PathBuf| p.extension().is_some_and(|e| e == "jsonl");
    let jsonl_inputs = args.logs.iter().filter(|p| is_jsonl(p)).count();
    if jsonl_inputs > 0 && args.logs.len() > 1 {
        anyhow::bail!(
            "give either node logs (.tal) or one JSONL checkpoint (.jsonl), not both or several"
        );
    }
    let mut temporary = None;
    let path = if jsonl_inputs == 1 {
        args.logs[0].clone()
    } else {
        let tmp = tempfile::Builder::new()
            .prefix(".tal-summary-")
            .suffix(".jsonl")
            .tempfile()
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot create a temporary file in {} (set TMPDIR to a writable directory): {e}",
                    std::env::temp_dir().display()
                )
            })?;
        convert::to_jsonl(&args.logs, &Output::File(tmp.path().to_path_buf()))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let p = tmp.path().to_path_buf();
        temporary = Some(tmp);
        p
    };
    let file = std::fs::File::open(&path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let summary = crate::summary::from_jsonl(std::io::BufReader::with_capacity(1 << 20, file))
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    drop(temporary);
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &summary)?;
        writeln!(out)?;
    } else {
        out.write_all(crate::summary::render(&summary).as_bytes())?;
    }
    Ok(0)
}
