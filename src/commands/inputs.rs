//! The inputs of `tal convert`, `tal summary` and `tal report`: each
//! path as given, except a directory, which stands for the node logs in
//! it. So `tal record --out out/ -- ./workflow.sh` is followed by
//! `tal summary out/` (or `tal report out/`), without a glob.
//!
//! A directory that holds a Parquet dataset (`_tal_dataset.json`) stands
//! for itself: `tal summary run.dataset/` reads the dataset.
//!
//! Any other directory gives the files directly in it (not in its subdirectories)
//! whose names end in `.tal` and do not start with a dot, in name order:
//! what `out/*.tal` gives a shell. Only node logs: the JSONL and report
//! `tal record` writes beside them are outputs of the same session. A
//! directory with no such file is an error that names it. The logs are
//! then taken as if each had been named: logs of several sessions are
//! refused as mixed, a log given twice is taken once, and so on
//! ([`crate::convert::open_logs`]).

use anyhow::Context;
use std::path::PathBuf;

/// `paths` with every directory replaced by the node logs in it (see the
/// module doc), in the order given.
pub fn expand(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::with_capacity(paths.len());
    for p in paths {
        if !p.is_dir() || crate::items::dataset::is_dataset(p) {
            out.push(p.clone());
            continue;
        }
        let mut logs: Vec<PathBuf> = std::fs::read_dir(p)
            .with_context(|| format!("cannot read the directory {}", p.display()))?
            .filter_map(Result::ok)
            .filter(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                name.ends_with(".tal") && !name.starts_with('.')
            })
            .map(|e| e.path())
            .filter(|f| f.is_file())
            .collect();
        if logs.is_empty() {
            anyhow::bail!(
                "{} has no node logs (*.tal): give the directory `tal record --out` wrote them to, the logs themselves, or one .jsonl",
                p.display()
            );
        }
        logs.sort();
        out.extend(logs);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_stands_for_its_node_logs() {
        let d = tempfile::tempdir().unwrap();
        for f in [
            "s.b.tal",
            "s.a.tal",
            "s.1.telemetry.jsonl",
            ".s.c.tal.x1.tmp",
            ".hidden.tal",
        ] {
            std::fs::write(d.path().join(f), b"").unwrap();
        }
        std::fs::create_dir(d.path().join("sub.tal")).unwrap();
        std::fs::write(d.path().join("sub.tal").join("deep.tal"), b"").unwrap();
        let other = PathBuf::from("x.jsonl");
        let got = expand(&[d.path().to_path_buf(), other.clone()]).unwrap();
        assert_eq!(
            got,
            vec![d.path().join("s.a.tal"), d.path().join("s.b.tal"), other]
        );
    }

    #[test]
    fn a_directory_without_logs_is_named() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("s.1.telemetry.jsonl"), b"").unwrap();
        let e = expand(&[d.path().to_path_buf()]).unwrap_err().to_string();
        assert!(
            e.contains(&d.path().display().to_string()) && e.contains("no node logs (*.tal)"),
            "{e}"
        );
    }
}
