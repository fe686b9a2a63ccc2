//! `Listener`: the ingest socket's thread. One thread serves every client
//! with `epoll` (no async runtime): it accepts, reads whole lines, parses
//! and validates them ([`super::protocol`]), pushes accepted events into
//! its own bounded ring to the dispatcher (a full ring drops and counts the
//! event, it never blocks), and answers each refused line with one JSON
//! error line to that client only.
//!
//! Clients that send many lines per write are the fast path: a read takes
//! up to 256 KiB at once and every complete line in it is handled before
//! the next `epoll_wait`. A client that disconnects mid-line has its
//! partial line parsed once at EOF (a complete JSON object without its
//! newline is accepted; anything else is counted as refused). Replies to a
//! client that never reads them are capped at 1 MiB and then dropped, so a
//! stuck client costs nothing else. Subscribers are written from one
//! backlog shared by all of them, each from its own place in it, as fast
//! as its socket takes the lines ([`super::feed`]).
//!
//! A task event that uses a task id again ([`super::reuse`]: a second
//! task under the id of one that has started or ended) is accepted and
//! recorded like any other, counted (`task_ids_reused`), and answered
//! with one warning line to that client, `{"warning": REASON, "line": N,
//! "task_id": ID}`: the one reply an accepted line can get. A client that
//! reads no replies, or only `error` lines, loses nothing by it.
//!
//! The socket is created with mode 0600 (only the job's user can send), and
//! removed when the listener exits. A stale socket file left by a killed
//! agent is replaced; a live one (another agent answering on it) is an
//! error.

use super::batch::{IngestBatch, BATCH_BYTES};
use super::fast::FastPath;
pub use super::feed::SubLine;
use super::feed::{Cursor, Feed, OUT_CHUNK};
use super::protocol::{error_reply, parse_line, Control, Line, MAX_LINE_BYTES};
use crate::clock::wall_ns;
use crate::ids::EventIdGen;
use crate::ring::{Consumer, Producer, PushError};
use rustix::event::epoll::{self, EventData, EventFlags};
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::Thread;

const LISTENER_TOKEN: u64 = u64::MAX;
const WAKE_TOKEN: u64 = u64::MAX - 1;
const READ_CHUNK: usize = 256 << 10;
const MAX_PENDING_REPLY: usize = 1 << 20;
/// Unsent bytes at which the agent stops reading a client until it reads
/// its answers: a peer that sends pings (or subscribes) without reading the
/// replies is held to a few MiB. Above what a subscriber's feed puts in its
/// buffer at once ([`OUT_CHUNK`]), so a slow subscriber is never paused by
/// its own feed.
const PAUSE_READING_AT: usize = 2 << 20;

/// Counters of the ingest path (relaxed atomics, read by the dispatcher's
/// snapshots).
#[derive(Debug, Default)]
pub struct IngestCounters {
    /// Event lines accepted and handed to the dispatcher.
    pub accepted: AtomicU64,
    /// Lines refused (each answered with an error line).
    pub rejected: AtomicU64,
    /// Accepted events dropped because the dispatcher's ring was full.
    pub dropped: AtomicU64,
    /// Clients that connected.
    pub clients: AtomicU64,
    /// Clients turned away because the agent had no file descriptor left
    /// (each told so in one error line, then closed), or because they were
    /// another user's (closed at once).
    pub refused: AtomicU64,
    /// Event lines subscribers lost (they did not read fast enough, or the
    /// dispatcher's ring to the listener was full).
    pub sub_dropped: Arc<AtomicU64>,
    /// Task events that used a task id again (each answered with a warning
    /// line; see [`super::reuse`]).
    pub task_ids_reused: AtomicU64,
}

/// Shared between the listener and the main thread for the stop protocol.
#[derive(Debug, Default)]
pub struct StopControl {
    /// Set when the recording is ending: later event lines are refused.
    pub closing: AtomicBool,
    /// Set by the listener once it has seen `closing` and handed every line
    /// it accepted before to the dispatcher: the dispatcher's last drain
    /// then has all of them (see [`StopControl::close`]).
    pub closed: AtomicBool,
    /// Set by the writer stage when the log can take no more records (a
    /// full disk, a file-size limit): later event lines are refused, each
    /// with an error line saying so, rather than accepted and lost.
    pub log_full: AtomicBool,
    /// Set (with `done`) when the JSONL is written: answer stop waiters and exit.
    pub exit: AtomicBool,
    /// The reply for `{"op": "stop"}` clients.
    pub done: Mutex<Option<String>>,
}

impl StopControl {
    /// Refuses client events from now on, and waits (at most `limit`) until
    /// the listener, woken by `waker`, has handed over every event it
    /// accepted before; false if it did not say so in time (a listener
    /// that is gone, or stuck).
    pub fn close(&self, waker: &Waker, limit: std::time::Duration) -> bool {
        self.closing.store(true, Ordering::Release);
        waker.wake();
        let deadline = std::time::Instant::now() + limit;
        while !self.closed.load(Ordering::Acquire) {
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
        true
    }
}

/// Facts about the agent that `{"op": "ping"}` answers with.
#[derive(Debug, Clone)]
pub struct AgentInfo {
    /// Session id.
    pub session_id: String,
    /// Node id.
    pub node_id: String,
    /// Log path.
    pub log: PathBuf,
}

#[derive(Debug)]
struct Client {
    stream: UnixStream,
    buf: Vec<u8>,
    line_no: u64,
    discarding: bool,
    out: Vec<u8>,
    waiting_stop: bool,
    /// The epoll events asked for it now.
    interest: EventFlags,
    /// A subscriber's types and place in the feed.
    subscribe: Option<Cursor>,
    read_closed: bool,
}

/// How long the end of a recording waits at most for subscribers to take
/// the lines still meant for them.
const LAST_LINES: std::time::Duration = std::time::Duration::from_secs(1);

/// Subscribers at most at once; a further `subscribe` is refused (and
/// counted), so that subscribers cannot make the agent's memory grow
/// without bound (each holds a place in the shared feed and a chunk of
/// [`OUT_CHUNK`]).
pub const MAX_SUBSCRIBERS: usize = 64;

/// The listener thread's state. Create with [`Listener::new`], then
/// [`Listener::run`] on its own thread.
#[derive(Debug)]
pub struct Listener {
    socket: UnixListener,
    path: PathBuf,
    epfd: OwnedFd,
    wake: Arc<OwnedFd>,
    clients: HashMap<u64, Client>,
    next: u64,
    tx: Producer<IngestBatch>,
    /// Emptied batches back from the dispatcher, reused for new ones.
    recycled: Consumer<IngestBatch>,
    /// Accepted events not yet handed to the dispatcher.
    pending: IngestBatch,
    fast: FastPath,
    /// Recent task ids, to find one used again.
    task_ids: super::reuse::TaskIds,
    /// Where task starts with a pid, and their ends, go (when tasks are
    /// sampled: see `crate::agent::tasks`).
    tasks: Option<crate::agent::tasks::TaskKeys>,
    ids: EventIdGen,
    dispatcher: Option<Thread>,
    counters: Arc<IngestCounters>,
    control: Arc<StopControl>,
    info: AgentInfo,
    on_stop: fn(),
    subs: Option<crate::ring::Consumer<SubLine>>,
    /// The subscribers' shared backlog.
    feed: Feed,
    subscribers: Arc<std::sync::atomic::AtomicUsize>,
    /// A descriptor held in reserve: out of descriptors (EMFILE), the
    /// listener closes it to accept the waiting client, tells it why, closes
    /// it, and takes the reserve back. Without this a listening socket that
    /// stays readable would spin the accept loop at 100 % CPU, on the CPU
    /// the job shares.
    spare: Option<std::fs::File>,
}

/// A handle to wake the listener from another thread: it shares the
/// listener's eventfd.
#[derive(Debug, Clone)]
pub struct Waker(Option<Arc<OwnedFd>>);

impl Waker {
    /// A waker that wakes nothing (for tests of the dispatcher's side).
    pub fn none() -> Self {
        Self(None)
    }

    /// Wakes the listener (it then looks at [`StopControl`]). Never
    /// blocks: a full counter (2^64 - 2 wakes unread) already wakes it.
    pub fn wake(&self) {
        if let Some(fd) = &self.0 {
            let _ = rustix::io::write(fd, &1u64.to_ne_bytes());
        }
    }
}

/// What a client's connection is watched for while it may send.
const READABLE: EventFlags = EventFlags::IN.union(EventFlags::RDHUP);

/// Binds `path` with mode 0600, replacing a stale socket file. Its
/// directory is the caller's (see [`super::sockdir`]).
pub fn bind_socket(path: &Path) -> io::Result<UnixListener> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ));
        }
        if UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("another tal agent is listening on {}", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    // The socket is bound (and listening) under a temporary name, then
    // renamed into place: a client that sees the path can connect at once
    // (between bind and listen, connects are refused).
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    // umask is process-wide: this runs before any other thread of tal
    // exists, and the mask is restored right after bind.
    let old = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o177));
    let res = UnixListener::bind(&tmp);
    rustix::process::umask(old);
    let l = res?;
    let placed = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    l.set_nonblocking(true)?;
    Ok(l)
}

impl Listener {
    /// A listener on an already bound socket. `on_stop` is called (once per
    /// request) when a client asks the agent to stop.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        socket: UnixListener,
        path: PathBuf,
        (tx, recycled): (Producer<IngestBatch>, Consumer<IngestBatch>),
        counters: Arc<IngestCounters>,
        control: Arc<StopControl>,
        info: AgentInfo,
        on_stop: fn(),
    ) -> io::Result<(Self, Waker)> {
        let epfd = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        let wake = Arc::new(rustix::event::eventfd(
            0,
            rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
        )?);
        let data = EventData::new_u64;
        epoll::add(&epfd, &socket, data(LISTENER_TOKEN), EventFlags::IN)?;
        epoll::add(&epfd, &*wake, data(WAKE_TOKEN), EventFlags::IN)?;
        let waker = Waker(Some(Arc::clone(&wake)));
        Ok((
            Self {
                socket,
                path,
                epfd,
                wake,
                clients: HashMap::new(),
                next: 0,
                tx,
                recycled,
                pending: IngestBatch::default(),
                fast: FastPath::default(),
                task_ids: super::reuse::TaskIds::default(),
                tasks: None,
                ids: EventIdGen::from_os(),
                dispatcher: None,
                counters,
                control,
                info,
                on_stop,
                subs: None,
                feed: Feed::default(),
                subscribers: Arc::default(),
                spare: std::fs::File::open("/dev/null").ok(),
            },
            waker,
        ))
    }

    /// Tell the task sampler, through `keys`, of each task that starts
    /// with a `pid` and of its end.
    pub fn set_tasks(&mut self, keys: crate::agent::tasks::TaskKeys) {
        self.tasks = Some(keys);
    }

    /// Serve subscribers from `rx`; `subscribers` counts them for the
    /// dispatcher (which formats lines only while it is non-zero).
    pub fn set_subscriptions(
        &mut self,
        rx: crate::ring::Consumer<SubLine>,
        subscribers: Arc<std::sync::atomic::AtomicUsize>,
    ) {
        self.subs = Some(rx);
        self.subscribers = subscribers;
    }

    /// Moves the lines the dispatcher queued into the feed and writes
    /// every subscriber what its socket takes. When the feed is full, the
    /// lines wait in the ring (a subscriber's socket that takes more wakes
    /// the listener, which goes on from there) until the ring is a quarter
    /// full; only then do the subscribers furthest behind lose the oldest
    /// lines (see [`Feed::shed`]), so that the dispatcher's ring never
    /// fills for them. A few rounds at most, so that a steady stream of
    /// lines does not keep the listener from its clients: it wakes itself
    /// to go on.
    fn deliver(&mut self) {
        for _ in 0..8 {
            let Some(rx) = self.subs.as_mut() else {
                return;
            };
            self.feed.take(rx);
            let tokens: Vec<u64> = self
                .clients
                .iter()
                .filter(|(_, c)| c.subscribe.is_some())
                .map(|(t, _)| *t)
                .collect();
            for t in tokens {
                self.pump(t);
            }
            self.release();
            let Some(rx) = self.subs.as_ref() else {
                return;
            };
            if rx.is_empty() {
                return;
            }
            if !self.feed.is_full() {
                continue; // the subscribers took some: take more
            }
            if rx.len() * 4 < rx.capacity() {
                return; // wait for the subscribers' sockets
            }
            self.shed();
        }
        let _ = rustix::io::write(&*self.wake, &1u64.to_ne_bytes());
    }

    /// Drops the feed's oldest lines for the subscribers still behind them,
    /// counted as lost.
    fn shed(&mut self) {
        let cursors = self
            .clients
            .values_mut()
            .filter_map(|c| c.subscribe.as_mut());
        let lost = self.feed.shed(cursors);
        self.counters.sub_dropped.fetch_add(lost, Ordering::Relaxed);
    }

    /// Frees the feed's lines that every subscriber has been written.
    fn release(&mut self) {
        let cursors = self.clients.values().filter_map(|c| c.subscribe.as_ref());
        self.feed.release(cursors);
    }

    /// Writes what a client can take now; closes it if it is gone.
    fn pump(&mut self, token: u64) {
        let Some(mut c) = self.clients.remove(&token) else {
            return;
        };
        if !self.write_out(&mut c) {
            self.drop_client(&c);
            return;
        }
        self.rearm(token, &mut c, false);
        self.clients.insert(token, c);
    }

    /// Writes a client's replies and, to a subscriber, the feed from its
    /// place, a chunk at a time, until its socket is full or it has every
    /// line; false when the client is gone.
    fn write_out(&self, c: &mut Client) -> bool {
        loop {
            if let Some(cur) = c.subscribe.as_mut() {
                if c.out.len() < OUT_CHUNK {
                    self.feed.fill(cur, &mut c.out, OUT_CHUNK);
                }
            }
            if !flush(c) {
                return false;
            }
            let behind = c
                .subscribe
                .as_ref()
                .is_some_and(|cur| !self.feed.caught_up(cur) || cur.lost > 0);
            if !c.out.is_empty() || !behind {
                return true;
            }
        }
    }

    fn drop_client(&mut self, c: &Client) {
        if c.subscribe.is_some() {
            self.subscribers.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// The dispatcher to wake when the ring is half full.
    pub fn set_dispatcher(&mut self, t: Thread) {
        self.dispatcher = Some(t);
    }

    /// Serves clients until told to exit; then answers stop waiters, closes
    /// every connection and removes the socket file.
    pub fn run(mut self) {
        let none = epoll::Event {
            flags: EventFlags::empty(),
            data: EventData::new_u64(0),
        };
        let mut events = vec![none; 64];
        let mut rbuf = vec![0u8; READ_CHUNK];
        loop {
            let n = match epoll::wait(&self.epfd, &mut events[..], None) {
                Ok(n) => n,
                Err(rustix::io::Errno::INTR) => continue,
                Err(_) => break,
            };
            for ev in &events[..n] {
                let (token, flags) = (ev.data.u64(), ev.flags);
                match token {
                    LISTENER_TOKEN => self.accept(),
                    WAKE_TOKEN => {
                        // Resets the counter (nonblocking: never waits).
                        let _ = rustix::io::read(&*self.wake, &mut [0u8; 8]);
                        self.deliver();
                    }
                    t => self.serve(t, flags, &mut rbuf),
                }
            }
            if self.control.closing.load(Ordering::Acquire)
                && !self.control.closed.load(Ordering::Relaxed)
            {
                self.seal(&mut rbuf);
                // What was accepted before goes to the dispatcher now,
                // ahead of its last drain.
                self.hand_over();
                self.control.closed.store(true, Ordering::Release);
            }
            if self.control.exit.load(Ordering::Acquire) {
                break;
            }
        }
        self.finish();
    }

    /// The recording is ending: every connection's reading side is shut,
    /// after what each client sent before is read, and refused, each line
    /// answered and counted. So the session's final counters, taken after
    /// this, count every error line a client is sent: a line written
    /// later is not taken by the agent at all (the client's write fails
    /// with EPIPE, a broken pipe), rather than refused with an answer that
    /// no counter in the session's output shows (there were 400 of them
    /// while the session's output was converted, in one test). A client
    /// that connects after this has its first lines (those sent before the
    /// agent accepted it) answered, so that `tal stop` still waits for the
    /// JSONL and `tal emit` hears that its event was not recorded; those
    /// answers come after the final counters, and are not in them.
    fn seal(&mut self, rbuf: &mut [u8]) {
        let tokens: Vec<u64> = self.clients.keys().copied().collect();
        for t in tokens {
            if let Some(c) = self.clients.get(&t) {
                let _ = c.stream.shutdown(std::net::Shutdown::Read);
            }
            // What was queued before the shutdown is still read; then the
            // read side says end of file. (Bounded: nothing more queues.)
            for _ in 0..64 {
                if self.clients.get(&t).is_none_or(|c| c.read_closed) {
                    break;
                }
                self.serve(t, EventFlags::IN, rbuf);
            }
        }
    }

    fn accept(&mut self) {
        loop {
            match self.socket.accept() {
                Ok((stream, _)) => {
                    if !peer_is_ours(&stream) || stream.set_nonblocking(true).is_err() {
                        self.counters.refused.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    if self.control.closed.load(Ordering::Relaxed) {
                        // After the seal: nothing more is read (see `seal`).
                        let _ = stream.shutdown(std::net::Shutdown::Read);
                    }
                    let token = self.next;
                    self.next += 1;
                    if epoll::add(&self.epfd, &stream, EventData::new_u64(token), READABLE).is_err()
                    {
                        continue;
                    }
                    self.counters.clients.fetch_add(1, Ordering::Relaxed);
                    self.clients.insert(
                        token,
                        Client {
                            stream,
                            buf: Vec::new(),
                            line_no: 0,
                            discarding: false,
                            out: Vec::new(),
                            waiting_stop: false,
                            interest: READABLE,
                            subscribe: None,
                            read_closed: false,
                        },
                    );
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                    if !self.turn_away() {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    }

    /// Out of descriptors: accepts one waiting client with the reserve
    /// descriptor, tells it why, and closes it (see `spare`). False when
    /// that is not possible either; the listener then waits a little so as
    /// not to spin.
    fn turn_away(&mut self) -> bool {
        if self.spare.take().is_none() {
            std::thread::sleep(std::time::Duration::from_millis(10));
            self.spare = std::fs::File::open("/dev/null").ok();
            return false;
        }
        let ok = match self.socket.accept() {
            Ok((mut stream, _)) => {
                let _ = stream.set_nonblocking(true);
                let _ = stream.write_all(&error_reply(
                    0,
                    "the agent has no file descriptors left (too many clients); try again later",
                ));
                self.counters.refused.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(_) => false,
        };
        self.spare = std::fs::File::open("/dev/null").ok();
        ok
    }

    fn serve(&mut self, token: u64, flags: EventFlags, rbuf: &mut [u8]) {
        let Some(mut c) = self.clients.remove(&token) else {
            return;
        };
        let mut eof = false;
        if flags.intersects(READABLE | EventFlags::HUP | EventFlags::ERR) {
            match c.stream.read(rbuf) {
                Ok(0) => eof = true,
                Ok(n) => {
                    let now = wall_ns();
                    self.take_bytes(&mut c, &rbuf[..n], now);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) => {}
                Err(_) => eof = true,
            }
        }
        if eof && c.discarding {
            // A last line without its newline, and too long: answered and
            // counted like any other.
            c.discarding = false;
            c.line_no += 1;
            self.reject(&mut c, &format!("line longer than {MAX_LINE_BYTES} bytes"));
        } else if eof && !c.buf.is_empty() {
            // A last line without its newline: parse it once.
            let rest = std::mem::take(&mut c.buf);
            c.line_no += 1;
            self.handle_line(&mut c, &rest, wall_ns());
        }
        self.hand_over();
        let alive = self.write_out(&mut c);
        let subscriber = c.subscribe.is_some();
        if !alive || (eof && !c.waiting_stop && !subscriber) {
            // Closing drops the fd from the epoll set.
            self.drop_client(&c);
        } else {
            let newly_closed = eof && !c.read_closed;
            c.read_closed |= eof;
            self.rearm(token, &mut c, newly_closed);
            self.clients.insert(token, c);
        }
        if subscriber {
            // It may have been the one holding the feed's oldest lines.
            self.release();
            if self.subs.as_ref().is_some_and(|r| !r.is_empty()) {
                self.deliver();
            }
        }
    }

    /// Updates a client's epoll interest: reading until its side is closed
    /// (paused while more than [`PAUSE_READING_AT`] bytes wait for it),
    /// writing while replies or lines wait.
    fn rearm(&self, token: u64, c: &mut Client, force: bool) {
        let mut ev = EventFlags::empty();
        if !c.read_closed && c.out.len() < PAUSE_READING_AT {
            ev |= READABLE;
        }
        if !c.out.is_empty() {
            ev |= EventFlags::OUT;
        }
        if ev != c.interest || force {
            c.interest = ev;
            let _ = epoll::modify(&self.epfd, &c.stream, EventData::new_u64(token), ev);
        }
    }

    /// Appends freshly read bytes and handles every complete line.
    fn take_bytes(&mut self, c: &mut Client, data: &[u8], now: i64) {
        self.pending.reserve_for(data.len());
        let mut data = data;
        while let Some(nl) = memchr::memchr(b'\n', data) {
            let (head, tail) = data.split_at(nl);
            data = &tail[1..];
            c.line_no += 1;
            if c.discarding {
                c.discarding = false;
                c.buf.clear();
                self.reject(c, &format!("line longer than {MAX_LINE_BYTES} bytes"));
                continue;
            }
            if c.buf.is_empty() {
                self.handle_line(c, head, now);
            } else {
                let mut line = std::mem::take(&mut c.buf);
                line.extend_from_slice(head);
                self.handle_line(c, &line, now);
                line.clear();
                c.buf = line;
            }
        }
        if !data.is_empty() && !c.discarding {
            c.buf.extend_from_slice(data);
            if c.buf.len() > MAX_LINE_BYTES {
                c.discarding = true;
                c.buf = Vec::new();
            }
        }
    }

    /// A task event accepted: if it uses its task id again, counts it and
    /// tells the client (see the module doc).
    fn check_reuse(&mut self, c: &mut Client, state: crate::record::TaskState, id: &[u8]) {
        let Some(how) = self.task_ids.seen(state, id) else {
            return;
        };
        self.counters
            .task_ids_reused
            .fetch_add(1, Ordering::Relaxed);
        if c.out.len() < MAX_PENDING_REPLY {
            c.out
                .extend_from_slice(&super::reuse::warning_reply(c.line_no, id, how));
        }
    }

    fn reject(&mut self, c: &mut Client, reason: &str) {
        self.counters.rejected.fetch_add(1, Ordering::Relaxed);
        if c.out.len() < MAX_PENDING_REPLY {
            c.out.extend_from_slice(&error_reply(c.line_no, reason));
        }
    }

    fn handle_line(&mut self, c: &mut Client, line: &[u8], now: i64) {
        let trimmed = line.trim_ascii();
        if trimmed.is_empty() {
            return;
        }
        let closing = self.control.closing.load(Ordering::Acquire);
        let full = self.control.log_full.load(Ordering::Relaxed);
        if !closing && !full && trimmed.len() <= MAX_LINE_BYTES {
            let (ids, fast) = (&mut self.ids, &mut self.fast);
            if self
                .pending
                .push_with(|out| fast.encode(trimmed, now, || ids.next_id(), out))
            {
                if let Some((state, id, pid)) = self.fast.last_task(trimmed) {
                    if let Some(k) = self.tasks.as_mut() {
                        k.seen(state, id, pid);
                    }
                    self.check_reuse(c, state, id);
                }
                if self.pending.byte_len() >= BATCH_BYTES {
                    self.hand_over();
                    self.pending.reserve_for(BATCH_BYTES);
                }
                return;
            }
        }
        match parse_line(trimmed, now) {
            Ok(Line::Event(mut ev)) => {
                if closing {
                    self.reject(c, "the recording has ended; the event was not recorded");
                    return;
                }
                if full {
                    self.reject(
                        c,
                        "the agent's log is full (disk full or file-size limit); the event was not recorded",
                    );
                    return;
                }
                if ev.event_id == 0 {
                    ev.event_id = self.ids.next_id();
                }
                if let (crate::record::EventKind::Task(t), Some(id)) =
                    (&ev.kind, ev.task_id.as_deref())
                {
                    if let Some(k) = self.tasks.as_mut() {
                        let pid = ev.attributes.iter().find_map(|(k, v)| match v {
                            crate::record::Value::Int(p) if k == "pid" => u32::try_from(*p).ok(),
                            _ => None,
                        });
                        k.seen(t.state, id.as_bytes(), pid);
                    }
                    self.check_reuse(c, t.state, id.as_bytes());
                }
                self.pending.push_event(&ev);
                if self.pending.byte_len() >= BATCH_BYTES {
                    self.hand_over();
                }
            }
            Ok(Line::Control(Control::Ping)) => {
                // Every earlier line is with the dispatcher when this is answered.
                self.hand_over();
                let mut out = Vec::new();
                let mut o = crate::json::JsonOut::object(&mut out);
                o.bool("ok", true)
                    .str("session_id", &self.info.session_id)
                    .str("node_id", &self.info.node_id)
                    .str("log", &self.info.log.display().to_string());
                o.end();
                out.push(b'\n');
                c.out.extend_from_slice(&out);
            }
            Ok(Line::Control(Control::Subscribe(types))) => {
                if c.subscribe.is_none() {
                    if self.subscribers.load(Ordering::Relaxed) >= MAX_SUBSCRIBERS {
                        self.reject(
                            c,
                            &format!("too many subscribers (at most {MAX_SUBSCRIBERS} at once); try again later"),
                        );
                        return;
                    }
                    self.subscribers.fetch_add(1, Ordering::Relaxed);
                }
                // The acknowledgement: every event handled from now on is
                // fed to this connection (a readiness signal for scripts).
                let mut list = b"[".to_vec();
                for (i, t) in types.iter().enumerate() {
                    if i > 0 {
                        list.extend_from_slice(b", ");
                    }
                    crate::json::write_str(&mut list, t);
                }
                list.push(b']');
                let mut ack = Vec::new();
                let mut o = crate::json::JsonOut::object(&mut ack);
                o.bool("ok", true).key("subscribed").raw(&list);
                o.end();
                ack.push(b'\n');
                c.out.extend_from_slice(&ack);
                let lost = c.subscribe.take().map_or(0, |cur| cur.lost);
                let mut cur = self.feed.cursor(types);
                cur.lost = lost;
                c.subscribe = Some(cur);
            }
            Ok(Line::Control(Control::Stop)) => {
                self.hand_over();
                c.waiting_stop = true;
                (self.on_stop)();
            }
            Err(reason) => self.reject(c, &reason),
        }
    }

    /// Hands the pending batch to the dispatcher (a full ring drops it,
    /// counted), and wakes the dispatcher when its ring fills up.
    fn hand_over(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let fresh = self.recycled.pop().unwrap_or_default();
        let batch = std::mem::replace(&mut self.pending, fresh);
        let n = batch.len() as u64;
        match self.tx.push(batch) {
            Ok(()) => self.counters.accepted.fetch_add(n, Ordering::Relaxed),
            Err(PushError::Full(_)) => self.counters.dropped.fetch_add(n, Ordering::Relaxed),
        };
        if self.tx.len() * 4 >= self.tx.capacity() {
            if let Some(d) = &self.dispatcher {
                d.unpark();
            }
        }
    }

    /// The end: every line the dispatcher handed over goes into the feed,
    /// and subscribers are written what their sockets take, for at most
    /// [`LAST_LINES`]; what is left then is counted and told as lost.
    fn last_lines(&mut self) {
        let deadline = std::time::Instant::now() + LAST_LINES;
        loop {
            self.deliver();
            let waiting = self.subs.as_ref().is_some_and(|r| !r.is_empty());
            let mut fds: Vec<rustix::event::PollFd<'_>> = self
                .clients
                .values()
                .filter(|c| !c.out.is_empty())
                .map(|c| rustix::event::PollFd::new(&c.stream, rustix::event::PollFlags::OUT))
                .collect();
            let now = std::time::Instant::now();
            if (fds.is_empty() && !waiting) || now >= deadline {
                break;
            }
            if !fds.is_empty() {
                let left = (deadline - now).min(std::time::Duration::from_millis(10));
                let t = rustix::time::Timespec {
                    tv_sec: 0,
                    tv_nsec: left.subsec_nanos().into(),
                };
                let _ = rustix::event::poll(&mut fds, Some(&t));
            }
        }
        // Lines still in the ring then are lost to those behind (counted).
        while let Some(rx) = self.subs.as_mut() {
            self.feed.take(rx);
            if rx.is_empty() {
                break;
            }
            self.shed();
        }
    }

    fn finish(mut self) {
        let done = self
            .control
            .done
            .lock()
            .map(|d| d.clone())
            .unwrap_or(None)
            .unwrap_or_else(|| "{\"ok\": true}".into());
        self.last_lines();
        let deadline = std::time::Instant::now() + LAST_WORDS_TIME;
        for c in self.clients.values_mut() {
            if let Some(cur) = c.subscribe.as_mut().filter(|cur| !self.feed.caught_up(cur)) {
                // Last words to a subscriber that fell behind: finish the line
                // it is in the middle of, drop the rest (counted), and say so.
                let keep = c.out.iter().position(|&b| b == b'\n').map_or(0, |i| i + 1);
                let cut = c.out[keep..].iter().filter(|&&b| b == b'\n').count() as u64;
                c.out.truncate(keep);
                let lost = cut + self.feed.skip(cur);
                cur.lost += cut;
                self.counters.sub_dropped.fetch_add(lost, Ordering::Relaxed);
            }
            if let Some(cur) = c.subscribe.as_mut().filter(|cur| cur.lost > 0) {
                c.out
                    .extend_from_slice(format!("{{\"dropped\": {}}}\n", cur.lost).as_bytes());
                cur.lost = 0;
            }
            if c.waiting_stop {
                c.out.extend_from_slice(done.as_bytes());
                c.out.push(b'\n');
            }
            last_words(c, deadline);
        }
        self.clients.clear();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The longest the listener spends on its clients' last words, all
/// together, at the end of the recording.
const LAST_WORDS_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// Writes a client's last words (best effort, blocking): as long as the
/// client takes some of them every half second, and until `deadline`. A
/// client that reads slowly but steadily gets whole lines, not a line cut
/// off by a fixed time limit (a reply cut mid-line once reached a client
/// that was reading all along); one that stops reading costs half a
/// second, and no client more than [`LAST_WORDS_TIME`] in all.
fn last_words(c: &mut Client, deadline: std::time::Instant) {
    let _ = c.stream.set_nonblocking(false);
    let mut at = 0;
    while at < c.out.len() {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return;
        }
        let wait = left.min(std::time::Duration::from_millis(500));
        if c.stream.set_write_timeout(Some(wait)).is_err() {
            return;
        }
        match c.stream.write(&c.out[at..]) {
            Ok(0) => return,
            Ok(n) => at += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// Writes what the client takes now; false when the client is gone.
fn flush(c: &mut Client) -> bool {
    while !c.out.is_empty() {
        match c.stream.write(&c.out) {
            Ok(0) => return false,
            Ok(n) => {
                c.out.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(_) => return false,
        }
    }
    // A subscriber that fell behind once does not keep its buffer's memory.
    if c.out.capacity() > 64 << 10 {
        c.out = Vec::new();
    }
    true
}

/// Whether the process at the other end of `stream` is this user's or
/// root's. A socket in a private directory (see [`super::sockdir`]) admits
/// no one else anyway; this also covers an explicit `--socket` in a shared
/// directory and the unnamed fallback.
fn peer_is_ours(stream: &UnixStream) -> bool {
    let me = rustix::process::geteuid().as_raw();
    rustix::net::sockopt::socket_peercred(stream).is_ok_and(|c| {
        let uid = c.uid.as_raw();
        uid == me || uid == 0
    })
}

/// The directory of `path` (empty for a bare name).
pub fn parent_dir(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new(""))
}
