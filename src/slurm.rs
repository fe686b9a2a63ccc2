//! What tal reads of the Slurm job it runs in: the session id a job's
//! agents and clients agree on, and the job's identity recorded with the
//! session. Below the CLI and the clients, which both use it.

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
