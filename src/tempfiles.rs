//! tal's temporary files: private, named as tal's own, and removed on
//! every way out.
//!
//! What a conversion, summary or report writes before its output is
//! complete (the output's own `.NAME.tal-HOST-PID-<random>.tmp` beside it, a
//! JSONL in a private work directory) may be large and may hold private
//! data (task attributes). So:
//!
//! - **Private.** Work files live in a new directory made by tal
//!   (`mkdtemp`, mode 0700) in `$TMPDIR` or `/tmp`: [`WorkDir`]. No one
//!   else can enter it, whatever the files' own modes.
//! - **Removed on every exit path.** Dropped guards remove them; a
//!   SIGINT, SIGTERM or SIGHUP runs [`remove_registered`] from the signal
//!   handler (`crate::sys::exit_on`) before the process exits, so each
//!   temporary is [`register`]ed while it exists. The handler only makes
//!   `unlink`/`rmdir` system calls on paths stored beforehand.
//! - **Named as tal's, so a SIGKILL's leftovers go next time.** A
//!   temporary's name carries the host and pid of the tal that made it;
//!   the next run that makes one of the same kind ([`sweep_beside`],
//!   [`WorkDir::new`]) removes those of this host whose process is gone
//!   and that are this user's own. A temporary of a live tal (or one on
//!   another host sharing the directory) is never touched.
//!
//! At most [`SLOTS`] temporaries are registered over a process's life
//! (each slot is used once; tal makes a handful); beyond that, one is
//! still removed by its guard, though not by a signal.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::OnceLock;

/// How many temporaries can be registered over a process's life.
pub const SLOTS: usize = 64;

/// One registered path: set once, active until its guard drops.
#[derive(Debug)]
struct Slot {
    path: OnceLock<CString>,
    active: AtomicBool,
}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: Slot = Slot {
    path: OnceLock::new(),
    active: AtomicBool::new(false),
};
static REGISTERED: [Slot; SLOTS] = [EMPTY; SLOTS];
static NEXT: AtomicUsize = AtomicUsize::new(0);
/// What the signal handler says on stderr after removing the temporaries.
static MESSAGE: OnceLock<Vec<u8>> = OnceLock::new();

/// A registered temporary: removed by a signal while this lives.
#[derive(Debug)]
pub struct Registered(Option<usize>);

impl Drop for Registered {
    fn drop(&mut self) {
        if let Some(i) = self.0 {
            REGISTERED[i].active.store(false, Ordering::Release);
        }
    }
}

/// Registers `path` to be removed if a stop signal ends the process while
/// the returned guard lives.
pub fn register(path: &Path) -> Registered {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return Registered(None);
    };
    let i = NEXT.fetch_add(1, Ordering::AcqRel);
    if i >= SLOTS {
        return Registered(None);
    }
    let _ = REGISTERED[i].path.set(c);
    REGISTERED[i].active.store(true, Ordering::Release);
    Registered(Some(i))
}

/// Sets what the signal handler says after removing the temporaries (once
/// per process: the first call wins).
pub fn set_signal_message(msg: String) {
    let _ = MESSAGE.set(msg.into_bytes());
}

/// Removes every registered temporary, newest first (a directory's files
/// before the directory), and says the signal message. Async-signal-safe:
/// atomics, and the `unlink`, `rmdir` and `write` system calls.
pub fn remove_registered() {
    let n = NEXT.load(Ordering::Acquire).min(SLOTS);
    for slot in REGISTERED[..n].iter().rev() {
        if !slot.active.load(Ordering::Acquire) {
            continue;
        }
        if let Some(p) = slot.path.get() {
            if rustix::fs::unlink(p.as_c_str()).is_err() {
                let _ = rustix::fs::rmdir(p.as_c_str());
            }
        }
    }
    if let Some(m) = MESSAGE.get() {
        let _ = rustix::io::write(std::io::stderr(), m);
    }
}

/// This host's short name, as it goes into a temporary's name (at most 32
/// bytes, only `[A-Za-z0-9-]`).
pub fn host_tag() -> &'static str {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(|| {
        let u = rustix::system::uname();
        let name = u.nodename().to_string_lossy();
        let tag: String = name
            .split('.')
            .next()
            .unwrap_or("")
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .take(32)
            .collect();
        if tag.is_empty() {
            "host".into()
        } else {
            tag
        }
    })
}

/// The start of this tal's temporaries' names for `kind`:
/// `KIND.tal-HOST-PID-`, then a random part.
pub fn own_prefix(kind: &str) -> String {
    format!("{kind}.tal-{}-{}-", host_tag(), std::process::id())
}

/// Whether process `pid` is gone (no such process in tal's pid namespace).
fn gone(pid: u32) -> bool {
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    matches!(
        rustix::process::test_kill_process(pid),
        Err(e) if e == rustix::io::Errno::SRCH
    )
}

/// The pid in `name` if it is one of this host's temporaries of `kind`
/// (`KIND.tal-HOST-PID-<random>…`).
fn pid_of(name: &str, kind: &str) -> Option<u32> {
    let rest = name.strip_prefix(&format!("{kind}.tal-{}-", host_tag()))?;
    let (pid, random) = rest.split_once('-')?;
    (!random.is_empty()).then_some(())?;
    pid.parse().ok()
}

/// Removes the temporaries of `kind` in `dir` that a tal of this host left
/// behind when it was killed (see the module doc): files (or, with
/// `dirs`, directories) of this user's, whose tal is gone. Errors are
/// ignored: this is tidying, not the job.
pub fn sweep(dir: &Path, kind: &str, dirs: bool) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let me = rustix::process::geteuid().as_raw();
    for e in entries.filter_map(Result::ok) {
        let name = e.file_name();
        let Some(pid) = pid_of(&name.to_string_lossy(), kind) else {
            continue;
        };
        let path = e.path();
        let Ok(m) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if m.uid() != me || !gone(pid) {
            continue;
        }
        let _ = if dirs && m.file_type().is_dir() {
            std::fs::remove_dir_all(&path)
        } else if !dirs && m.file_type().is_file() {
            std::fs::remove_file(&path)
        } else {
            Ok(())
        };
    }
}

/// The kind of a temporary beside an output named `name`: `.NAME`.
pub fn beside_kind(name: &str) -> String {
    format!(".{name}")
}

/// A private work directory, in `$TMPDIR` (or `/tmp`) or beside an
/// output: made by tal (0700),
/// registered, and removed with what is in it when dropped. Making one
/// first sweeps this user's work directories of killed tals.
#[derive(Debug)]
pub struct WorkDir {
    dir: Option<tempfile::TempDir>,
    _registered: Registered,
}

/// The kind of tal's work directories (see [`own_prefix`]).
const WORK_KIND: &str = "tal-work";

impl WorkDir {
    /// Makes one in `$TMPDIR` (or `/tmp`).
    pub fn new() -> io::Result<Self> {
        Self::new_in(&std::env::temp_dir())
    }

    /// Makes one in `base` (beside an output, where its space is).
    pub fn new_in(base: &Path) -> io::Result<Self> {
        sweep(base, WORK_KIND, true);
        let dir = tempfile::Builder::new()
            .prefix(&own_prefix(WORK_KIND))
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir_in(base)
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "cannot make a private work directory in {}: {e}",
                        base.display()
                    ),
                )
            })?;
        let registered = register(dir.path());
        Ok(Self {
            dir: Some(dir),
            _registered: registered,
        })
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        self.dir.as_ref().map_or(Path::new(""), |d| d.path())
    }

    /// A path in it for a file named `name` (registered while the returned
    /// guard lives).
    pub fn file(&self, name: &str) -> (PathBuf, Registered) {
        let p = self.path().join(name);
        let r = register(&p);
        (p, r)
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if let Some(d) = self.dir.take() {
            let _ = d.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_work_dir_is_private_and_goes_when_dropped() {
        let w = WorkDir::new().unwrap();
        let p = w.path().to_path_buf();
        let m = std::fs::metadata(&p).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o700);
        std::fs::write(w.file("x.jsonl").0, b"private").unwrap();
        drop(w);
        assert!(!p.exists());
    }

    #[test]
    fn only_a_dead_tals_temporaries_of_this_host_are_swept() {
        let t = tempfile::tempdir().unwrap();
        let host = host_tag();
        // A pid no process has (beyond pid_max).
        let dead = 4_194_305;
        let mine = std::process::id();
        let names = [
            format!(".x.jsonl.tal-{host}-{dead}-abc123.tmp"),
            format!(".x.jsonl.tal-{host}-{mine}-abc123.tmp"),
            format!(".x.jsonl.tal-otherhost-{dead}-abc123.tmp"),
            format!(".y.jsonl.tal-{host}-{dead}-abc123.tmp"),
            "x.jsonl".to_string(),
        ];
        for n in &names {
            std::fs::write(t.path().join(n), b"x").unwrap();
        }
        sweep(t.path(), &beside_kind("x.jsonl"), false);
        let left: Vec<bool> = names.iter().map(|n| t.path().join(n).exists()).collect();
        assert_eq!(left, [false, true, true, true, true]);
    }
}
