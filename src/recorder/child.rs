//! The wrapped command: started as its shell would start it, reaped, and
//! run unrecorded when the log cannot be made.
//!
//! **`tal` on the command's PATH.** A workflow calls `tal run` and `tal
//! emit` by name, and a newcomer runs `./target/release/tal record --
//! ./workflow.sh` before installing tal anywhere: the script's `tal` would
//! not be found (exit 127, every task lost). So when no `tal` is on the
//! PATH, the directory of this executable is appended to the wrapped
//! command's PATH, and the start line says so ([`TalPath`]). Appended, not
//! put first: every name that was found before is found in the same place
//! (the directory may be `/usr/bin`, or hold other programs), and only
//! `tal` (and what else was not found at all) now resolves. When the PATH
//! has another `tal` (an older install beside a fresh build), it is left
//! as it is, since putting this one first would also move everything else
//! in its directory ahead, and tal says which `tal` the command will run.
//! An unset PATH is left unset.

use super::signals::{kill, Signals, STOP_REQUEST_SIGNAL};
use super::RecordConfig;
use crate::agent::affinity::CpuMask;
use crate::sys::SigSet;
use rustix::io::Errno;
use rustix::process::{waitpid, Pid, WaitOptions, WaitStatus};
use std::ffi::{OsStr, OsString};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// What the wrapped command's PATH holds of `tal` (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum TalPath {
    /// PATH finds this executable, is unset, or this executable's place is
    /// unknown: PATH as it is.
    AsIs,
    /// PATH finds no `tal`: the command gets `path`, which is PATH with
    /// `dir` (this executable's directory) appended.
    Appended {
        /// This executable's directory.
        dir: PathBuf,
        /// The command's PATH.
        path: OsString,
    },
    /// PATH finds another `tal` first: left as it is, said.
    Other {
        /// The `tal` the command will run.
        found: PathBuf,
        /// This executable.
        exe: PathBuf,
    },
}

impl TalPath {
    /// This process's view, worked out once.
    pub(super) fn get() -> &'static TalPath {
        static ONCE: std::sync::OnceLock<TalPath> = std::sync::OnceLock::new();
        ONCE.get_or_init(
            || match (std::env::var_os("PATH"), std::env::current_exe()) {
                (Some(path), Ok(exe)) => Self::decide(&path, &exe),
                _ => Self::AsIs,
            },
        )
    }

    /// What PATH `path` needs for the executable `exe` to be the command's
    /// `tal`, where it safely can be.
    pub(super) fn decide(path: &OsStr, exe: &Path) -> Self {
        let same = |a: &Path| match (std::fs::metadata(a), std::fs::metadata(exe)) {
            (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
            _ => false,
        };
        let found = std::env::split_paths(path)
            .map(|d| d.join("tal"))
            .find(|c| std::fs::metadata(c).is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0));
        match (found, exe.parent()) {
            (Some(f), _) if same(&f) => Self::AsIs,
            (Some(found), _) => Self::Other {
                found,
                exe: exe.to_path_buf(),
            },
            (None, Some(dir)) if !dir.as_os_str().is_empty() => {
                let mut dirs: Vec<PathBuf> = std::env::split_paths(path).collect();
                dirs.push(dir.to_path_buf());
                match std::env::join_paths(dirs) {
                    Ok(path) => Self::Appended {
                        dir: dir.to_path_buf(),
                        path,
                    },
                    // A directory with a `:` in its name cannot be on a PATH.
                    Err(_) => Self::AsIs,
                }
            }
            (None, _) => Self::AsIs,
        }
    }

    /// What the start line says of it (empty when PATH is as it was).
    pub(super) fn describe(&self) -> String {
        match self {
            Self::AsIs => String::new(),
            Self::Appended { dir, .. } => format!(
                "; no tal on PATH: the command's PATH ends with {}",
                dir.display()
            ),
            Self::Other { found, exe } => format!(
                "; the command's tal is {}, not this one ({})",
                found.display(),
                exe.display()
            ),
        }
    }
}

/// Exit status of a wait status, shell-style.
fn exit_code(status: WaitStatus) -> i32 {
    match (status.exit_status(), status.terminating_signal()) {
        (Some(c), _) => c,
        (None, Some(sig)) => 128 + sig,
        (None, None) => 1,
    }
}

/// One `waitpid` of `pid`, retried on EINTR: its exit code if it has ended
/// (`Ok(None)`: not yet, with `NOHANG`).
fn wait_once(pid: libc::pid_t, opts: WaitOptions) -> Result<Option<i32>, Errno> {
    let pid = Pid::from_raw(pid).ok_or(Errno::CHILD)?;
    loop {
        match waitpid(Some(pid), opts) {
            Ok(r) => return Ok(r.map(|(_, status)| exit_code(status))),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Non-blocking wait for `pid`; its exit code if it has ended.
pub(super) fn try_reap(pid: libc::pid_t) -> Option<i32> {
    wait_once(pid, WaitOptions::NOHANG).ok().flatten()
}

/// Waits for `pid` to end: its exit code (1 if it cannot be waited for).
pub(super) fn reap_blocking(pid: libc::pid_t) -> i32 {
    wait_once(pid, WaitOptions::empty())
        .ok()
        .flatten()
        .unwrap_or(1)
}

/// The wrapped command as its shell would start it: tal's original CPU
/// affinity and signal mask, SIGXFSZ at its default, and the session in its
/// environment. `None` without a command.
pub(super) fn wrapped_command(
    cfg: &RecordConfig,
    orig_mask: CpuMask,
    old_mask: SigSet,
) -> Option<Command> {
    let (prog, args) = cfg.command.split_first()?;
    let mut cmd = Command::new(prog);
    cmd.args(args)
        .env("TAL_SESSION_ID", &cfg.session_id)
        .env("TAL_NODE_ID", &cfg.node_id);
    if let TalPath::Appended { path, .. } = TalPath::get() {
        cmd.env("PATH", path);
    }
    crate::sys::exec_as_started(&mut cmd, orig_mask.as_set(), old_mask, &[libc::SIGXFSZ]);
    Some(cmd)
}

/// Starts the wrapped command: its pid, or, when it cannot start, the
/// status a shell gives (127 not found, else 126) after saying why.
pub(super) fn spawn_wrapped(cmd: &mut Command) -> Result<libc::pid_t, i32> {
    match cmd.spawn() {
        Ok(c) => Ok(c.id() as libc::pid_t),
        Err(e) => {
            eprintln!(
                "tal: cannot run '{}': {e}",
                cmd.get_program().to_string_lossy()
            );
            Err(if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            })
        }
    }
}

/// Runs the wrapped command without recording (the log could not be
/// created: `why`), forwarding stop signals to it; its exit status.
pub(super) fn run_unrecorded(
    cfg: &RecordConfig,
    orig_mask: CpuMask,
    signals: &Signals,
    why: &anyhow::Error,
) -> i32 {
    eprintln!("tal: {why}; running the command without recording");
    let Some(mut cmd) = wrapped_command(cfg, orig_mask, signals.old_mask) else {
        return 0;
    };
    let pid = match spawn_wrapped(&mut cmd) {
        Ok(pid) => pid,
        Err(code) => return code,
    };
    loop {
        if let Some(code) = try_reap(pid) {
            return code;
        }
        match signals.all.wait(Some(Duration::from_millis(200))) {
            Some(libc::SIGCHLD) | None => {}
            Some(STOP_REQUEST_SIGNAL) => {}
            Some(sig) => kill(pid, sig),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn exe_in(dir: &Path, name: &str) -> PathBuf {
        std::fs::create_dir_all(dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    #[test]
    fn tal_is_appended_only_when_the_path_has_none() {
        let t = tempfile::tempdir().unwrap();
        let build = t.path().join("build");
        let exe = exe_in(&build, "tal");
        let bin = t.path().join("bin");
        exe_in(&bin, "other");
        let path = std::env::join_paths([&bin]).unwrap();
        assert_eq!(
            TalPath::decide(&path, &exe),
            TalPath::Appended {
                dir: build.clone(),
                path: std::env::join_paths([&bin, &build]).unwrap()
            }
        );
        // Found as itself (through a link too): nothing changes.
        let linked = t.path().join("linked");
        std::fs::create_dir(&linked).unwrap();
        std::os::unix::fs::symlink(&exe, linked.join("tal")).unwrap();
        let path = std::env::join_paths([&bin, &linked]).unwrap();
        assert_eq!(TalPath::decide(&path, &exe), TalPath::AsIs);
        // Another tal: left first, and named.
        let other = exe_in(&bin, "tal");
        let path = std::env::join_paths([&bin, &linked]).unwrap();
        assert_eq!(
            TalPath::decide(&path, &exe),
            TalPath::Other {
                found: other,
                exe: exe.clone()
            }
        );
        // A file named tal that cannot be run is not a tal.
        std::fs::set_permissions(bin.join("tal"), std::fs::Permissions::from_mode(0o644)).unwrap();
        let path = std::env::join_paths([&bin]).unwrap();
        assert!(matches!(
            TalPath::decide(&path, &exe),
            TalPath::Appended { .. }
        ));
    }
}
