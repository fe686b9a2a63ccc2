//! Per-job attribution on a shared node: the job's own CPU, memory and I/O
//! from its control group, read next to the node totals.
//!
//! **Which cgroup.** `--cgroup auto` (the default) looks, under Slurm
//! (`SLURM_JOB_ID` set), for the job's cgroup among the ancestors of tal's
//! own (from `/proc/self/cgroup`): the directory named `job_<id>`, as
//! Slurm's cgroup plugins make it (v2:
//! `…/system.slice/slurmstepd.scope/job_<id>/step_<n>/…`; v1:
//! `/sys/fs/cgroup/<controller>/slurm/uid_<u>/job_<id>/…`). Outside Slurm,
//! or where Slurm runs without cgroups, there is none and nothing extra is
//! recorded. `--cgroup PATH` names a cgroup directly (a v2 directory, or a
//! v1 directory under one controller, whose siblings under the other
//! controllers are used too); `--cgroup none` turns this off.
//!
//! **What is read**, each sample, with kept-open files and one `pread`
//! each, like the /proc sources:
//! - v2: `cpu.stat` (`usage_usec`), `memory.current`, `memory.peak`,
//!   `io.stat` (`rbytes`, `wbytes` summed over devices);
//! - v1: `cpuacct.usage` (ns), `memory.usage_in_bytes`,
//!   `memory.max_usage_in_bytes`, `blkio.throttle.io_service_bytes_recursive`
//!   (`Read` and `Write` lines, devices summed).
//!
//! A file the node lacks (a controller not enabled for the cgroup) leaves
//! its fields null. The dispatcher writes them on the per_node
//! ResourceUpdate as `job_cpu_percent` (share of all the node's CPUs since
//! the previous sample, like `cpu_percent`), `job_memory_bytes`,
//! `job_memory_peak_bytes`, `job_memory_percent` (of the node's memory),
//! `job_disk_read_bytes` and `job_disk_write_bytes` (since the previous
//! sample; I/O through the page cache is counted when it reaches the disk,
//! as the cgroup counts it).
use std::path::{Path, PathBuf};

/// `--cgroup`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupChoice {
    /// The Slurm job's cgroup, when there is one.
    Auto,
    /// None.
    None,
    /// This cgroup directory.
    Path(PathBuf),
}

impl std::str::FromStr for CgroupChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "auto" => Self::Auto,
            "none" => Self::None,
            "" => return Err("expected auto, none or a cgroup directory".into()),
            p => Self::Path(PathBuf::from(p)),
        })
    }
}

/// One reading; `None` where the cgroup does not tell.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CgroupReading {
    /// CPU time of the cgroup's processes, ns, cumulative.
    pub cpu_ns: Option<u64>,
    /// Memory charged now, bytes.
    pub mem_bytes: Option<u64>,
    /// Peak memory, bytes.
    pub mem_peak_bytes: Option<u64>,
    /// Bytes read from block devices, cumulative.
    pub io_read_bytes: Option<u64>,
    /// Bytes written to block devices, cumulative.
    pub io_write_bytes: Option<u64>,
    /// Files that are open but failed to read or parse this time: bit 0
    /// CPU, 1 memory, 2 memory peak, 3 I/O.
    pub failed: u8,
}

/// A kept-open file, read whole with one pread (as the /proc sources).
type Src = super::kept::KeptFile;

fn open(p: &Path) -> Option<Src> {
    Src::open(p).ok()
}

fn first_u64(b: &[u8]) -> Option<u64> {
    std::str::from_utf8(b).ok()?.trim().parse().ok()
}

/// v2 `cpu.stat`: `usage_usec` as ns.
pub fn parse_cpu_stat(b: &[u8]) -> Option<u64> {
    std::str::from_utf8(b)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("usage_usec "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|us| us * 1000)
}

/// v2 `io.stat`: `rbytes`, `wbytes` summed over devices.
pub fn parse_io_stat(b: &[u8]) -> Option<(u64, u64)> {
    let s = std::str::from_utf8(b).ok()?;
    let (mut r, mut w) = (0u64, 0u64);
    for field in s.split_ascii_whitespace() {
        if let Some(v) = field.strip_prefix("rbytes=") {
            r += v.parse::<u64>().ok()?;
        } else if let Some(v) = field.strip_prefix("wbytes=") {
            w += v.parse::<u64>().ok()?;
        }
    }
    Some((r, w))
}

/// v1 `blkio.throttle.io_service_bytes(_recursive)`: the `Read` and
/// `Write` lines of every device (not the `Total` line).
pub fn parse_blkio(b: &[u8]) -> Option<(u64, u64)> {
    let s = std::str::from_utf8(b).ok()?;
    let (mut r, mut w) = (0u64, 0u64);
    for l in s.lines() {
        let mut f = l.split_ascii_whitespace();
        let (Some(_dev), Some(op), Some(v)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        match op {
            "Read" => r += v.parse::<u64>().ok()?,
            "Write" => w += v.parse::<u64>().ok()?,
            _ => {}
        }
    }
    Some((r, w))
}

/// The job's cgroup, open.
#[derive(Debug)]
pub struct CgroupSources {
    /// Where it is (for the start-up line).
    pub describe: String,
    v2: bool,
    cpu: Option<Src>,
    mem: Option<Src>,
    peak: Option<Src>,
    io: Option<Src>,
    /// The cgroup's memory limit, bytes, read once at start (v2
    /// `memory.max`, v1 `memory.limit_in_bytes`); `None` when it has none
    /// (`max`, or v1's page-rounded `i64::MAX`) or it cannot be read.
    pub memory_limit_bytes: Option<u64>,
}

/// A memory limit's text as bytes: `None` for no limit (v2's `max`, or a
/// v1 figure of 2^60 or more, which is how v1 writes "unlimited") and for
/// anything that is not a number.
pub fn parse_memory_limit(b: &[u8]) -> Option<u64> {
    first_u64(b).filter(|&n| n > 0 && n < 1 << 60)
}

/// A limit file read once.
fn limit(p: &Path) -> Option<u64> {
    open(p)?.read().ok().and_then(parse_memory_limit)
}

const ROOT: &str = "/sys/fs/cgroup";

impl CgroupSources {
    /// Opens the files of a v2 cgroup directory.
    fn v2(dir: &Path) -> Option<Self> {
        let s = Self {
            describe: format!("cgroup v2 {}", dir.display()),
            v2: true,
            cpu: open(&dir.join("cpu.stat")),
            mem: open(&dir.join("memory.current")),
            peak: open(&dir.join("memory.peak")),
            io: open(&dir.join("io.stat")),
            memory_limit_bytes: limit(&dir.join("memory.max")),
        };
        s.any().then_some(s)
    }

    /// Opens the v1 controllers' directories `<root>/<controller>/<rel>`.
    fn v1(root: &Path, rel: &Path) -> Option<Self> {
        let c = |ctl: &str, f: &str| open(&root.join(ctl).join(rel).join(f));
        let s = Self {
            describe: format!(
                "cgroup v1 {}/{{cpuacct,memory,blkio}}/{}",
                root.display(),
                rel.display()
            ),
            v2: false,
            cpu: c("cpuacct", "cpuacct.usage"),
            mem: c("memory", "memory.usage_in_bytes"),
            peak: c("memory", "memory.max_usage_in_bytes"),
            io: c("blkio", "blkio.throttle.io_service_bytes_recursive"),
            memory_limit_bytes: limit(&root.join("memory").join(rel).join("memory.limit_in_bytes")),
        };
        s.any().then_some(s)
    }

    fn any(&self) -> bool {
        self.cpu.is_some() || self.mem.is_some() || self.io.is_some()
    }

    /// Finds and opens the cgroup `choice` names; `Ok(None)` when there is
    /// none to read (not an error: most nodes outside Slurm have none).
    pub fn open(choice: &CgroupChoice) -> Result<Option<Self>, String> {
        match choice {
            CgroupChoice::None => Ok(None),
            CgroupChoice::Path(p) => Self::at(Path::new(ROOT), p)
                .map(Some)
                .ok_or_else(|| {
                    format!(
                        "{}: not a readable cgroup directory (v2, or v1 under one of {ROOT}/cpuacct, memory, blkio)",
                        p.display()
                    )
                }),
            CgroupChoice::Auto => {
                let Ok(job) = std::env::var("SLURM_JOB_ID") else {
                    return Ok(None);
                };
                let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
                Ok(find_job_cgroup(Path::new(ROOT), &own, &job))
            }
        }
    }

    /// The cgroup at directory `p` (under `root` for v1 controllers).
    fn at(root: &Path, p: &Path) -> Option<Self> {
        if p.join("cgroup.controllers").exists() || p.join("cpu.stat").exists() {
            return Self::v2(p);
        }
        for ctl in ["cpuacct", "cpu,cpuacct", "memory", "blkio"] {
            if let Ok(rel) = p.strip_prefix(root.join(ctl)) {
                return Self::v1(root, rel);
            }
        }
        None
    }

    /// Reads every file.
    pub fn read(&mut self) -> CgroupReading {
        let mut r = CgroupReading::default();
        let v2 = self.v2;
        // Each open file: read and parsed, or counted as failed.
        fn take<T>(
            file: &mut Option<Src>,
            bit: u8,
            failed: &mut u8,
            parse: impl FnOnce(&[u8]) -> Option<T>,
        ) -> Option<T> {
            let v = file.as_mut()?.read().ok().and_then(parse);
            if v.is_none() {
                *failed |= bit;
            }
            v
        }
        let f = &mut r.failed;
        r.cpu_ns = take(&mut self.cpu, 1, f, |b| {
            if v2 {
                parse_cpu_stat(b)
            } else {
                first_u64(b)
            }
        });
        r.mem_bytes = take(&mut self.mem, 2, f, first_u64);
        r.mem_peak_bytes = take(&mut self.peak, 4, f, first_u64);
        let io = take(&mut self.io, 8, f, |b| {
            if v2 {
                parse_io_stat(b)
            } else {
                parse_blkio(b)
            }
        });
        r.io_read_bytes = io.map(|(rd, _)| rd);
        r.io_write_bytes = io.map(|(_, wr)| wr);
        r
    }
}

/// The Slurm job's cgroup among the ancestors of the cgroups listed in
/// `/proc/self/cgroup` (`own`), under `root`: v2 first, then v1.
pub fn find_job_cgroup(root: &Path, own: &str, job: &str) -> Option<CgroupSources> {
    let want = format!("job_{job}");
    let job_dir = |path: &str| -> Option<PathBuf> {
        let p = Path::new(path.trim_start_matches('/'));
        p.ancestors()
            .find(|a| a.file_name().is_some_and(|n| n == want.as_str()))
            .map(Path::to_path_buf)
    };
    // v2: "0::/path".
    for l in own.lines() {
        if let Some(path) = l.strip_prefix("0::") {
            if let Some(rel) = job_dir(path) {
                if let Some(s) = CgroupSources::v2(&root.join(rel)) {
                    return Some(s);
                }
            }
        }
    }
    // v1: "N:controller[,controller]:/path".
    for l in own.lines() {
        let mut f = l.splitn(3, ':');
        let (Some(_), Some(ctls), Some(path)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        if ctls.split(',').any(|c| c == "cpuacct" || c == "memory") {
            if let Some(rel) = job_dir(path) {
                if let Some(s) = CgroupSources::v1(root, &rel) {
                    return Some(s);
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_limits_read_as_the_kernel_writes_no_limit() {
        assert_eq!(parse_memory_limit(b"max\n"), None, "v2: no limit");
        assert_eq!(
            parse_memory_limit(b"9223372036854771712\n"),
            None,
            "v1: no limit"
        );
        assert_eq!(parse_memory_limit(b"0\n"), None);
        assert_eq!(parse_memory_limit(b"-1\n"), None);
        assert_eq!(parse_memory_limit(b"junk"), None);
        assert_eq!(parse_memory_limit(b"4294967296\n"), Some(4 << 30));
    }

    #[test]
    fn parsers_read_what_the_kernel_writes() {
        assert_eq!(
            parse_cpu_stat(b"usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n"),
            Some(1_500_000)
        );
        assert_eq!(
            parse_io_stat(b"8:0 rbytes=100 wbytes=20 rios=1 wios=1 dbytes=0 dios=0\n259:0 rbytes=5 wbytes=7 rios=1 wios=1\n"),
            Some((105, 27))
        );
        assert_eq!(parse_io_stat(b""), Some((0, 0)));
        assert_eq!(
            parse_blkio(b"8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 0\n8:0 Total 12288\n8:16 Read 1\n8:16 Write 2\nTotal 12291\n"),
            Some((4097, 8194))
        );
    }

    #[test]
    fn the_job_cgroup_is_found_among_the_ancestors_v2_and_v1() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        // v2 layout of Slurm's cgroup/v2 plugin.
        let job = r.join("system.slice/slurmstepd.scope/job_42");
        std::fs::create_dir_all(job.join("step_0/user/task_0")).unwrap();
        std::fs::write(job.join("cgroup.controllers"), "cpu memory io\n").unwrap();
        std::fs::write(job.join("cpu.stat"), "usage_usec 2000\n").unwrap();
        std::fs::write(job.join("memory.current"), "4096\n").unwrap();
        std::fs::write(job.join("memory.peak"), "8192\n").unwrap();
        std::fs::write(job.join("memory.max"), "1073741824\n").unwrap();
        std::fs::write(job.join("io.stat"), "8:0 rbytes=1 wbytes=2\n").unwrap();
        let own = "0::/system.slice/slurmstepd.scope/job_42/step_0/user/task_0\n";
        let mut s = find_job_cgroup(r, own, "42").unwrap();
        assert_eq!(s.memory_limit_bytes, Some(1 << 30));
        assert_eq!(
            s.read(),
            CgroupReading {
                cpu_ns: Some(2_000_000),
                mem_bytes: Some(4096),
                mem_peak_bytes: Some(8192),
                io_read_bytes: Some(1),
                io_write_bytes: Some(2),
                failed: 0,
            }
        );
        assert!(find_job_cgroup(r, own, "43").is_none(), "another job");
        assert!(find_job_cgroup(r, "0::/user.slice\n", "42").is_none());

        // v1 layout of Slurm's cgroup/v1 plugin, memory controller only.
        let mem = r.join("memory/slurm/uid_0/job_7");
        std::fs::create_dir_all(mem.join("step_batch")).unwrap();
        std::fs::write(mem.join("memory.usage_in_bytes"), "100\n").unwrap();
        let own = "4:memory:/slurm/uid_0/job_7/step_batch\n2:cpuacct:/\n";
        let mut s = find_job_cgroup(r, own, "7").unwrap();
        assert_eq!(s.memory_limit_bytes, None, "no limit file");
        let got = s.read();
        assert_eq!(got.mem_bytes, Some(100));
        assert_eq!(got.cpu_ns, None, "no cpuacct cgroup for the job");
    }
}
