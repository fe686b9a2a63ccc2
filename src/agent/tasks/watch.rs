//! The listener's side of the task sampler, and the rings between them:
//! the ingest listener (which parses every event anyway) hands each task
//! start that names a process, and the end of each such task, to the
//! sampler ([`TaskWatch`]), and hears back which starts the sampler
//! refused or dropped ([`Forget`]). [`TaskKeys`] is the listener's record
//! of what it handed over, bounded without ever forgetting an end. Apart
//! from the sampler (`super`), which runs on its own thread: this part runs
//! on the listener's.

use super::{TaskCounters, MAX_TASKS, MAX_TASK_ID_BYTES};
use crate::ring::{Consumer, Producer};
use std::collections::HashMap;
use std::sync::Arc;
use std::thread::Thread;

/// A task to sample, or one that ended (from the ingest listener).
#[derive(Debug)]
pub enum TaskWatch {
    /// TaskStarted with a `pid`.
    Start {
        /// The task.
        task_id: Arc<str>,
        /// Its key (a hash of the task id, seeded per agent).
        key: u64,
        /// Its process.
        pid: u32,
        /// The listener's number for this start (see [`Forget`]).
        seq: u64,
    },
    /// A terminal event of a task that started with a `pid`.
    End {
        /// Its key.
        key: u64,
    },
}

/// From the sampler back to the listener: the task the listener's start
/// `seq` named is not (or no longer) sampled, refused or gone with its
/// processes, so its end need not be passed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forget {
    /// The task's key.
    pub key: u64,
    /// The start's number.
    pub seq: u64,
}

/// The listener's ends of the rings between it and the sampler.
pub type WatchTx = (Producer<TaskWatch>, Consumer<Forget>);
/// The sampler's ends of the rings between it and the listener.
pub type WatchRx = (Consumer<TaskWatch>, Producer<Forget>);

/// The rings between the listener and the sampler: starts and ends
/// (`capacity` of them), and forgotten tasks back (room for as many, and
/// for every task the sampler may hold).
pub fn watch_rings(capacity: usize) -> (WatchTx, WatchRx) {
    let (wtx, wrx) = crate::ring::channel::<TaskWatch>(capacity);
    let (ftx, frx) = crate::ring::channel::<Forget>(capacity + MAX_TASKS);
    ((wtx, frx), (wrx, ftx))
}

/// The listener's side: which tasks it told the sampler about, so that
/// only their terminal events are passed on.
///
/// **Why this set stays bounded without forgetting an end.** A task is in
/// it from the start the listener hands over until its terminal event, or
/// until the sampler says it does not hold it ([`Forget`]: refused, as a
/// second task naming a process already sampled is, or dropped when its
/// processes exited). So every task in the set is in the ring to the
/// sampler, held by the sampler (at most [`MAX_TASKS`]), or on its way
/// back (held by the sampler while the ring back is full, at most
/// [`MAX_TASKS`] + 1,
/// or in the ring back): at most [`TaskKeys::bound`] in all, however many
/// tasks are open and never end. (An earlier version kept every start and
/// cleared the set at 4 × 1,024: a worker pool's thousands of open tasks
/// then made it forget the ends of tasks the sampler held, which were
/// sampled after their end, and their workers' later tasks were refused.)
/// A start beyond the bound, which only a sampler that stopped taking
/// starts could cause, is refused and counted: no end is ever forgotten.
/// Each start has its own number, so that a `Forget` of a task that ended
/// and started again (the same id) does not forget the new start.
#[derive(Debug)]
pub struct TaskKeys {
    tx: Producer<TaskWatch>,
    forgotten: Consumer<Forget>,
    thread: Option<Thread>,
    hasher: std::collections::hash_map::RandomState,
    /// Task key -> the number of its start.
    watched: HashMap<u64, u64>,
    next_seq: u64,
    bound: usize,
    counters: Arc<TaskCounters>,
}

impl TaskKeys {
    /// Starts and ends go to the sampler through `rings` (see
    /// [`watch_rings`]); the sampler's thread is woken for each start once
    /// it is known ([`TaskKeys::set_thread`]).
    pub fn new((tx, forgotten): WatchTx, counters: Arc<TaskCounters>) -> Self {
        let bound = tx.capacity() + forgotten.capacity() + 2 * MAX_TASKS + 2;
        Self {
            tx,
            forgotten,
            thread: None,
            hasher: Default::default(),
            watched: HashMap::new(),
            next_seq: 0,
            bound,
            counters,
        }
    }

    /// The most tasks the set can hold (see the type's doc).
    pub fn bound(&self) -> usize {
        self.bound
    }

    /// Tasks the listener keeps now (for tests).
    pub fn watched(&self) -> usize {
        self.watched.len()
    }

    /// The sampler's thread, to wake when a task starts.
    pub fn set_thread(&mut self, t: Thread) {
        self.thread = Some(t);
    }

    fn key(&self, task_id: &[u8]) -> u64 {
        use std::hash::BuildHasher;
        self.hasher.hash_one(task_id)
    }

    /// Drops the tasks the sampler does not hold.
    fn take_forgotten(&mut self) {
        while let Some(f) = self.forgotten.pop() {
            if self.watched.get(&f.key) == Some(&f.seq) {
                self.watched.remove(&f.key);
            }
        }
    }

    /// A task event of `task_id` in `state`, naming process `pid`.
    pub fn seen(&mut self, state: crate::record::TaskState, task_id: &[u8], pid: Option<u32>) {
        match (state, pid) {
            (crate::record::TaskState::Started, Some(pid)) => self.started(task_id, pid),
            (s, _) if s.is_terminal() => self.ended(task_id),
            _ => {}
        }
    }

    /// A TaskStarted of `task_id` naming process `pid`.
    pub fn started(&mut self, task_id: &[u8], pid: u32) {
        if pid == 0 {
            return;
        }
        if task_id.len() > MAX_TASK_ID_BYTES {
            TaskCounters::bump(&self.counters.tasks_refused);
            return;
        }
        self.take_forgotten();
        let key = self.key(task_id);
        if self.watched.contains_key(&key) {
            return; // a repeated start: the first one counts
        }
        if self.watched.len() >= self.bound {
            TaskCounters::bump(&self.counters.tasks_refused);
            return;
        }
        let task_id: Arc<str> = String::from_utf8_lossy(task_id).into();
        let seq = self.next_seq;
        match self.tx.push(TaskWatch::Start {
            task_id,
            key,
            pid,
            seq,
        }) {
            Ok(()) => {
                self.next_seq += 1;
                self.watched.insert(key, seq);
                if let Some(t) = &self.thread {
                    t.unpark();
                }
            }
            Err(_) => TaskCounters::bump(&self.counters.watches_dropped),
        }
    }

    /// A terminal event of `task_id`.
    pub fn ended(&mut self, task_id: &[u8]) {
        self.take_forgotten();
        if self.watched.is_empty() {
            return;
        }
        let key = self.key(task_id);
        if self.watched.remove(&key).is_none() {
            return;
        }
        if self.tx.push(TaskWatch::End { key }).is_err() {
            TaskCounters::bump(&self.counters.watches_dropped);
        }
        // Ends do not wake the sampler (it takes them at its next round),
        // unless they pile up.
        if self.tx.len() * 2 >= self.tx.capacity() {
            if let Some(t) = &self.thread {
                t.unpark();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    /// The worker-pool shape against the listener's side, with a sampler
    /// that holds one task per process and refuses the rest, as the real
    /// one does: thousands of open tasks neither grow the set past its
    /// bound nor make it forget the end of the task the sampler holds.
    #[test]
    fn open_tasks_in_thousands_never_make_the_listener_forget_an_end() {
        let (tx, (mut rx, mut back)) = watch_rings(64);
        let mut keys = TaskKeys::new(tx, Arc::default());
        // The sampler: holds the first start per pid, forgets the others.
        let mut held: HashMap<u32, u64> = HashMap::new();
        let mut ends = Vec::new();
        let mut sampler = |rx: &mut Consumer<TaskWatch>, ends: &mut Vec<u64>| {
            while let Some(w) = rx.pop() {
                match w {
                    TaskWatch::Start { key, pid, seq, .. } => match held.entry(pid) {
                        std::collections::hash_map::Entry::Occupied(_) => {
                            back.push(Forget { key, seq }).unwrap()
                        }
                        std::collections::hash_map::Entry::Vacant(e) => {
                            e.insert(key);
                        }
                    },
                    TaskWatch::End { key } => {
                        held.retain(|_, k| *k != key);
                        ends.push(key);
                    }
                }
            }
        };
        keys.started(b"first", 1);
        for i in 0..4100 {
            keys.started(format!("w2.{i}").as_bytes(), 2);
            sampler(&mut rx, &mut ends);
            assert!(keys.watched() <= keys.bound());
        }
        keys.ended(b"first");
        sampler(&mut rx, &mut ends);
        assert_eq!(
            ends,
            [keys.key(b"first")],
            "first's end reached the sampler"
        );
        keys.started(b"later", 1);
        sampler(&mut rx, &mut ends);
        assert_eq!(held.get(&1), Some(&keys.key(b"later")));
        assert_eq!(keys.counters.watches_dropped.load(Ordering::Relaxed), 0);
        // Only what the sampler holds (and a start at most) is kept.
        assert!(keys.watched() <= 3, "{}", keys.watched());
    }

    /// A task that ends and starts again under the same id is not
    /// forgotten when the sampler drops the first run's task late.
    #[test]
    fn a_late_forget_does_not_forget_a_new_start_of_the_same_id() {
        let (tx, (mut rx, mut back)) = watch_rings(8);
        let mut keys = TaskKeys::new(tx, Arc::default());
        keys.started(b"t", 7);
        let Some(TaskWatch::Start { key, seq, .. }) = rx.pop() else {
            panic!("no start")
        };
        keys.ended(b"t");
        keys.started(b"t", 8);
        // The sampler dropped the first run (its process exited) before
        // it saw the end.
        back.push(Forget { key, seq }).unwrap();
        keys.ended(b"t");
        let got: Vec<_> = std::iter::from_fn(|| rx.pop()).collect();
        assert!(
            matches!(got.last(), Some(TaskWatch::End { key: k }) if *k == key),
            "{got:?}"
        );
    }
}
