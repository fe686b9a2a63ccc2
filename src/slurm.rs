//! What tal reads of the Slurm job it runs in: the session id a job's
//! agents and clients agree on, the job's identity recorded with the
//! session, and its host list (`SLURM_JOB_NODELIST`) expanded, for what
//! names a job's agents by node. Below the CLI and the clients, which
//! both use it.

fn env(k: &str) -> Option<String> {
    std::env::var(k).ok().filter(|v| !v.is_empty())
}

/// The session id of the Slurm job this process runs in (array-aware).
pub fn slurm_session_id() -> Option<String> {
    if let (Some(a), Some(t)) = (env("SLURM_ARRAY_JOB_ID"), env("SLURM_ARRAY_TASK_ID")) {
        return Some(format!("slurm.{a}_{t}"));
    }
    env("SLURM_JOB_ID").map(|j| format!("slurm.{j}"))
}

/// The default session id: the Slurm job (array-aware), else generated.
pub fn default_session_id() -> String {
    if let Some(s) = slurm_session_id() {
        return s;
    }
    let id = crate::ids::EventIdGen::from_os().next_id();
    format!("tal.session.{:08x}", (id >> 96) as u32)
}

/// Slurm identity recorded as session attributes, when present.
pub fn slurm_attributes() -> Vec<(String, String)> {
    [
        ("slurm.job_id", "SLURM_JOB_ID"),
        ("slurm.step_id", "SLURM_STEP_ID"),
        ("slurm.cluster", "SLURM_CLUSTER_NAME"),
        ("slurm.nodelist", "SLURM_JOB_NODELIST"),
    ]
    .into_iter()
    .filter_map(|(k, e)| env(e).map(|v| (k.to_string(), v)))
    .collect()
}

/// A Slurm host list that [`expand_hostlist`] refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostlistError {
    /// Not the syntax of a host list (`SLURM_JOB_NODELIST`'s).
    #[error("not a Slurm host list ({0}): expected names like node[01-04,07],gpu1")]
    Syntax(String),
    /// More hosts than the caller takes.
    #[error("the host list names more than {0} hosts")]
    TooMany(usize),
}

/// The host names of a Slurm host list, as `scontrol show hostnames`
/// prints them: `node[01-03,07],gpu-[1-2]-ib` is node01, node02, node03,
/// node07, gpu-1-ib, gpu-2-ib. A range keeps its lower bound's width
/// (`[08-10]` is 08, 09, 10); several bracket groups in one name give
/// every combination, in order. At most `max` names: a list that names
/// more (`n[0-999999999]`) is refused before anything is made, so that no
/// list, whoever wrote it, makes tal allocate without bound.
pub fn expand_hostlist(list: &str, max: usize) -> Result<Vec<String>, HostlistError> {
    let mut out = Vec::new();
    for entry in split_top(list)? {
        let groups = parse_entry(entry)?;
        let count = groups.iter().try_fold(1usize, |n, g| match g {
            Part::Text(_) => Some(n),
            Part::Ranges(r) => r
                .iter()
                .try_fold(0usize, |k, (a, b, _)| k.checked_add(b - a + 1))
                .and_then(|k| n.checked_mul(k)),
        });
        match count {
            Some(c) if out.len() + c <= max => {}
            _ => return Err(HostlistError::TooMany(max)),
        }
        let mut names = vec![String::new()];
        for g in &groups {
            names = match g {
                Part::Text(t) => names.into_iter().map(|n| n + t).collect(),
                Part::Ranges(r) => names
                    .iter()
                    .flat_map(|n| {
                        r.iter()
                            .flat_map(move |&(a, b, w)| (a..=b).map(move |i| format!("{n}{i:0w$}")))
                    })
                    .collect(),
            };
        }
        out.extend(names);
    }
    Ok(out)
}

/// A piece of a host list entry: text, or a bracket's ranges (low, high,
/// width).
enum Part<'a> {
    Text(&'a str),
    Ranges(Vec<(usize, usize, usize)>),
}

/// The list's entries: split at the commas outside brackets.
fn split_top(list: &str) -> Result<Vec<&str>, HostlistError> {
    let bad = |why: &str| HostlistError::Syntax(why.to_string());
    let (mut depth, mut start, mut out) = (0u32, 0, Vec::new());
    for (i, c) in list.char_indices() {
        match c {
            '[' if depth == 0 => depth = 1,
            '[' => return Err(bad("a bracket inside a bracket")),
            ']' if depth == 1 => depth = 0,
            ']' => return Err(bad("a `]` with no `[`")),
            ',' if depth == 0 => {
                out.push(&list[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(bad("a `[` with no `]`"));
    }
    out.push(&list[start..]);
    if out.iter().any(|e| e.trim().is_empty()) {
        return Err(bad("an empty name"));
    }
    Ok(out.into_iter().map(str::trim).collect())
}

/// One entry's text and brackets.
fn parse_entry(entry: &str) -> Result<Vec<Part<'_>>, HostlistError> {
    let bad = |why: String| HostlistError::Syntax(why);
    let mut parts = Vec::new();
    let mut rest = entry;
    while let Some(open) = rest.find('[') {
        if open > 0 {
            parts.push(Part::Text(&rest[..open]));
        }
        let close = rest[open..]
            .find(']')
            .map(|c| open + c)
            .ok_or_else(|| bad("no `]`".into()))?;
        let mut ranges = Vec::new();
        for r in rest[open + 1..close].split(',') {
            let (lo, hi) = r.split_once('-').unwrap_or((r, r));
            let num = |s: &str| {
                let ok = !s.is_empty() && s.len() <= 18 && s.bytes().all(|b| b.is_ascii_digit());
                ok.then(|| s.parse::<usize>().ok()).flatten()
            };
            match (num(lo), num(hi)) {
                (Some(a), Some(b)) if a <= b => {
                    let width = if lo.len() > 1 && lo.starts_with('0') {
                        lo.len()
                    } else {
                        0
                    };
                    ranges.push((a, b, width));
                }
                _ => return Err(bad(format!("`{r}` is not a range of numbers, low-high"))),
            }
        }
        parts.push(Part::Ranges(ranges));
        rest = &rest[close + 1..];
    }
    if !rest.is_empty() {
        parts.push(Part::Text(rest));
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(list: &str) -> Vec<String> {
        expand_hostlist(list, 1000).unwrap()
    }

    #[test]
    fn a_host_list_expands_as_scontrol_prints_it() {
        assert_eq!(hosts("n1"), ["n1"]);
        assert_eq!(
            hosts("node[01-03,07],gpu-[1-2]-ib"),
            ["node01", "node02", "node03", "node07", "gpu-1-ib", "gpu-2-ib"]
        );
        assert_eq!(hosts("a[08-10]"), ["a08", "a09", "a10"]);
        assert_eq!(hosts("a[9-11]"), ["a9", "a10", "a11"]);
        assert_eq!(hosts("r[1-2]n[1-2]"), ["r1n1", "r1n2", "r2n1", "r2n2"]);
        assert_eq!(hosts("x, y"), ["x", "y"]);
    }

    #[test]
    fn a_bad_or_huge_host_list_is_refused_before_anything_is_made() {
        for bad in [
            "", "a,", "a[1-2", "a]", "a[[1]]", "a[2-1]", "a[x]", "a[1-]", "a[]",
        ] {
            assert!(
                matches!(expand_hostlist(bad, 10), Err(HostlistError::Syntax(_))),
                "{bad:?}"
            );
        }
        assert_eq!(
            expand_hostlist("n[0-999999999999999999]", 10),
            Err(HostlistError::TooMany(10))
        );
        assert_eq!(
            expand_hostlist("a[0-99]b[0-99]c[0-99]d[0-99]", 1_000_000),
            Err(HostlistError::TooMany(1_000_000))
        );
        assert_eq!(
            expand_hostlist("a[1-5],b[1-6]", 10),
            Err(HostlistError::TooMany(10))
        );
        assert_eq!(expand_hostlist("a[1-5],b[1-5]", 10).unwrap().len(), 10);
        // Counts that would overflow are refused too, not wrapped.
        let r = vec!["0-999999999999999999"; 40].join(",");
        assert_eq!(
            expand_hostlist(&format!("n[{r}]"), 10),
            Err(HostlistError::TooMany(10))
        );
    }
}
