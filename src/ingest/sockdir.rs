//! Where the agent's socket lives, and how a client finds it.
//!
//! The default socket is `tal.<session>.<node>.sock` in `$XDG_RUNTIME_DIR`
//! (a session id that already starts with `tal.`, as the generated
//! `tal.session.<hex>` does, is not prefixed again: [`socket_name`])
//! (per user, 0700, by its specification), else in a directory of the
//! user's own, `tal-<uid>` in `$TMPDIR` or `/tmp`, made 0700 and checked to
//! be a real directory owned by the user that no one else may enter
//! ([`private_dir`]), so that another user on a shared node cannot take a
//! job's predictable socket path first.
//!
//! A socket tal cannot make must never keep a job's command from running,
//! and another user must not be able to stop a job by making that path
//! first (a `tal-<uid>` of their own, mode 0777, or a link; or a login
//! node's `XDG_RUNTIME_DIR` exported into a job, naming a directory that
//! does not exist on the compute node). So [`bind_agent_socket`] tries, in
//! order:
//!
//! 1. the requested path (`--socket`, or the default);
//! 2. for the default, `tal-<uid>` in `$TMPDIR` or `/tmp` when
//!    `$XDG_RUNTIME_DIR` was the one that failed;
//! 3. a new directory of a random name, `tal-<uid>-<random>`, made by tal
//!    (`mkdtemp`, 0700) in `$TMPDIR`, then `/tmp`, then the output
//!    directory: no one can make it first, and it is checked like
//!    `tal-<uid>`;
//! 4. no socket at all: the agent records the node and the command runs,
//!    with no client events (the start line says why, and `TAL_SOCKET` is
//!    not set).
//!
//! Whichever is used is said in the start line and exported to a wrapped
//! command as `TAL_SOCKET`. A client that is not told the path
//! ([`find_socket`]) looks for the session's socket in the same places,
//! including the `tal-<uid>-*` directories, taking only directories that
//! pass the same check (another user cannot make one owned by us) and, of
//! several, the newest socket. Clients also check that the listening
//! process is the user's own (`SO_PEERCRED`, in [`crate::client`]).

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

/// This user's (effective) uid.
fn my_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// The prefix of tal's own socket directories in `$TMPDIR` or `/tmp`:
/// `tal-<uid>` (the default) and `tal-<uid>-<random>` (fallbacks).
fn dir_prefix() -> String {
    format!("tal-{}", my_uid())
}

/// The socket's file name for a session and node: `tal.<session>.<node>.sock`,
/// without a second `tal.` when the session id starts with one (the
/// generated `tal.session.<hex>` gives `tal.session.<hex>.<node>.sock`).
/// Sessions `x` and `tal.x` on one node would then share a default path:
/// the second agent finds the first one listening there and takes a
/// directory of its own instead (see the module doc), which its wrapped
/// command is told through `TAL_SOCKET`. Slurm sessions (`slurm.<job>`),
/// whose clients find the socket by this name, never start with `tal.`.
pub fn socket_name(session_id: &str, node_id: &str) -> String {
    let session = session_id.strip_prefix("tal.").unwrap_or(session_id);
    format!("tal.{session}.{node_id}.sock")
}

/// `$TMPDIR`, else `/tmp`.
fn tmp_base() -> PathBuf {
    std::env::var_os("TMPDIR")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from("/tmp"), PathBuf::from)
}

/// `$XDG_RUNTIME_DIR`, if set.
fn xdg_dir() -> Option<PathBuf> {
    std::env::var_os("XDG_RUNTIME_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// `tal-<uid>` in `$TMPDIR` or `/tmp`.
fn own_tmp_dir() -> PathBuf {
    tmp_base().join(dir_prefix())
}

/// The default socket path for a session and node, in
/// [`default_socket_dir`].
pub fn default_socket_path(session_id: &str, node_id: &str) -> PathBuf {
    default_socket_dir().join(socket_name(session_id, node_id))
}

/// Where default sockets live (see the module doc): `$XDG_RUNTIME_DIR`,
/// else `tal-<uid>` in `$TMPDIR` or `/tmp`.
pub fn default_socket_dir() -> PathBuf {
    xdg_dir().unwrap_or_else(own_tmp_dir)
}

/// Checks that `dir` is a real directory (not a link), owned by this
/// user, that no one else may enter or write: else an error saying so.
pub fn check_private(dir: &Path) -> io::Result<()> {
    let m = std::fs::symlink_metadata(dir)?;
    if !m.file_type().is_dir() || m.uid() != my_uid() || m.mode() & 0o077 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is not a private directory of yours ({}, owner uid {}, mode {:o}): someone else may have made it",
                dir.display(),
                if m.file_type().is_symlink() { "a symbolic link" } else if m.file_type().is_dir() { "a directory" } else { "not a directory" },
                m.uid(),
                m.mode() & 0o7777
            ),
        ));
    }
    Ok(())
}

/// Makes `dir` (if missing) with mode 0700, and checks it with
/// [`check_private`].
pub fn private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    check_private(dir)
}

/// The agent's socket, as [`bind_agent_socket`] made it.
#[derive(Debug)]
pub struct AgentSocket {
    /// The listening socket.
    pub listener: UnixListener,
    /// Its path; `None` when no path could be made (step 4 of the module
    /// doc: an unnamed socket that no client can reach).
    pub path: Option<PathBuf>,
    /// A directory tal made for it (step 3), removed at the end.
    pub made_dir: Option<PathBuf>,
    /// What failed on the way, for stderr (empty when the requested path
    /// was used).
    pub notes: Vec<String>,
}

/// Binds the agent's socket (see the module doc): `requested`, which is
/// the default path unless `explicit`; else the fallbacks, in order.
/// `out` is the output directory (the last place for a directory of
/// tal's own). Fails only when not even an unnamed socket can be made (no
/// descriptors or memory left), saying what was tried.
pub fn bind_agent_socket(requested: &Path, explicit: bool, out: &Path) -> io::Result<AgentSocket> {
    let mut notes = Vec::new();
    let name = requested
        .file_name()
        .map_or_else(|| "tal.sock".into(), |n| n.to_os_string());
    let mut tries: Vec<PathBuf> = vec![requested.to_path_buf()];
    if !explicit && xdg_dir().is_some() {
        tries.push(own_tmp_dir().join(&name));
    }
    for path in tries {
        let dir = super::listener::parent_dir(&path);
        let how = if explicit {
            DirRule::Make
        } else if Some(dir) == xdg_dir().as_deref() {
            DirRule::Exists
        } else {
            DirRule::Private
        };
        match bind_at(&path, how) {
            Ok(listener) => {
                return Ok(AgentSocket {
                    listener,
                    path: Some(path),
                    made_dir: None,
                    notes,
                })
            }
            Err(e) => notes.push(format!("cannot listen on {}: {e}", path.display())),
        }
    }
    let bases = [tmp_base(), PathBuf::from("/tmp"), out.to_path_buf()];
    for (i, base) in bases.iter().enumerate() {
        if bases[..i].contains(base) {
            continue;
        }
        match bind_in_new_dir(base, &name) {
            Ok((listener, dir, path)) => {
                return Ok(AgentSocket {
                    listener,
                    path: Some(path),
                    made_dir: Some(dir),
                    notes,
                })
            }
            Err(e) => notes.push(format!(
                "cannot make a directory of tal's own in {}: {e}",
                base.display()
            )),
        }
    }
    match unnamed_listener() {
        Ok(listener) => Ok(AgentSocket {
            listener,
            path: None,
            made_dir: None,
            notes,
        }),
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("{}; cannot make a socket at all: {e}", notes.join("; ")),
        )),
    }
}

/// What a socket's directory must be.
#[derive(Debug, Clone, Copy)]
enum DirRule {
    /// Made if missing (an explicit `--socket`).
    Make,
    /// There already (`$XDG_RUNTIME_DIR`: the system makes it, not tal).
    Exists,
    /// Made if missing, and checked to be private ([`private_dir`]).
    Private,
}

/// Binds `path`, its directory first made or checked by `how`.
fn bind_at(path: &Path, how: DirRule) -> io::Result<UnixListener> {
    let dir = super::listener::parent_dir(path);
    match how {
        DirRule::Private => private_dir(dir)?,
        DirRule::Exists => {
            if !dir.is_dir() {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("the directory {} does not exist", dir.display()),
                ));
            }
        }
        DirRule::Make if !dir.as_os_str().is_empty() => std::fs::create_dir_all(dir)?,
        DirRule::Make => {}
    }
    super::listener::bind_socket(path)
}

/// A new directory `tal-<uid>-<random>` in `base` (0700, made by this call,
/// so no one else's), with the socket `name` bound in it.
fn bind_in_new_dir(
    base: &Path,
    name: &std::ffi::OsStr,
) -> io::Result<(UnixListener, PathBuf, PathBuf)> {
    let dir = tempfile::Builder::new()
        .prefix(&format!("{}-", dir_prefix()))
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir_in(base)?
        .keep();
    let made = (|| {
        check_private(&dir)?;
        let path = dir.join(name);
        if path.as_os_str().len() >= 108 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} is longer than the 107 bytes a Unix socket allows",
                    path.display()
                ),
            ));
        }
        Ok((super::listener::bind_socket(&path)?, path))
    })();
    match made {
        Ok((l, path)) => Ok((l, dir, path)),
        Err(e) => {
            let _ = std::fs::remove_dir(&dir);
            Err(e)
        }
    }
}

/// A listening socket with no name in the file system: an abstract
/// address of 16 random bytes. No client is told of it; one that finds it
/// anyway (abstract names are listed in `/proc/net/unix`) is refused
/// unless it is this user's or root's (the listener checks every peer).
fn unnamed_listener() -> io::Result<UnixListener> {
    use std::os::linux::net::SocketAddrExt;
    let mut name = [0u8; 16];
    let _ = rustix::rand::getrandom(&mut name[..], rustix::rand::GetRandomFlags::empty());
    let mut abs = b"tal-".to_vec();
    abs.extend(
        name.iter()
            .map(|b| b"0123456789abcdef"[usize::from(b & 15)]),
    );
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(&abs)?;
    let l = UnixListener::bind_addr(&addr)?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// The socket of a session's agent on this node, for a client that was
/// not told it (see the module doc): the default path if a socket is
/// there, else the newest `tal-<uid>-*/tal.<session>.<node>.sock` in a
/// private directory of the user's; else the default path (which then
/// names what was looked for).
pub fn find_socket(session_id: &str, node_id: &str) -> PathBuf {
    let name = socket_name(session_id, node_id);
    let is_socket = |p: &Path| {
        std::fs::symlink_metadata(p)
            .ok()
            .filter(|m| m.file_type().is_socket())
    };
    let default = default_socket_path(session_id, node_id);
    // `$XDG_RUNTIME_DIR` is the system's, private by its specification;
    // `tal-<uid>` must pass the check.
    let trusted =
        xdg_dir().is_some() || check_private(super::listener::parent_dir(&default)).is_ok();
    if trusted && is_socket(&default).is_some() {
        return default;
    }
    let mut dirs = vec![own_tmp_dir()];
    let prefix = format!("{}-", dir_prefix());
    for base in [tmp_base(), PathBuf::from("/tmp")] {
        let Ok(entries) = std::fs::read_dir(&base) else {
            continue;
        };
        dirs.extend(
            entries
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                .map(|e| e.path()),
        );
    }
    dirs.into_iter()
        .filter(|d| check_private(d).is_ok())
        .filter_map(|d| {
            let p = d.join(&name);
            let m = is_socket(&p)?;
            Some((m.mtime(), m.mtime_nsec(), p))
        })
        .max()
        .map_or(default, |(_, _, p)| p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_directory_someone_else_could_enter_is_not_private() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("d");
        private_dir(&d).unwrap();
        assert_eq!(std::fs::metadata(&d).unwrap().mode() & 0o777, 0o700);
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(check_private(&d).is_err());
        let l = t.path().join("link");
        std::os::unix::fs::symlink(t.path(), &l).unwrap();
        let e = check_private(&l).unwrap_err().to_string();
        assert!(e.contains("a symbolic link"), "{e}");
    }

    #[test]
    fn the_socket_name_has_one_tal_prefix() {
        assert_eq!(socket_name("slurm.42", "n1"), "tal.slurm.42.n1.sock");
        assert_eq!(
            socket_name("tal.session.0a1b2c3d", "vm"),
            "tal.session.0a1b2c3d.vm.sock"
        );
        assert_eq!(socket_name("tally", "vm"), "tal.tally.vm.sock");
    }

    #[test]
    fn an_unnamed_socket_listens() {
        let l = unnamed_listener().unwrap();
        assert!(l.local_addr().unwrap().as_pathname().is_none());
    }
}
