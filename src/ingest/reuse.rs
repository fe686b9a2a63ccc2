//! Task ids used again: found as the events arrive, so that the client
//! that sent one is told at once and the agent counts it.
//!
//! A task id names one task of the session. A second task under an id
//! already used (`tal run --task-id dup` twice) is recorded event by event,
//! but the converter's task state machine (`crate::tasks`) keeps the first
//! task only: its span, its counts, its duration. Without a word, one run
//! goes missing from every summary. So the listener asks this table about
//! every task event it accepts; an event that starts a task again under
//! an id whose task has already started or ended is a reuse
//! ([`TaskIds::seen`]):
//!
//! - TaskCreated when the id's task has started or ended;
//! - TaskSubmitted or TaskQueued when it has ended;
//! - TaskStarted when it has started or ended.
//!
//! A reuse begins a new task for the id here (its TaskCreated then
//! TaskStarted count once). The id's TaskCreated sent twice before it
//! starts (a runtime and then `tal run` announcing the same task) is not a
//! reuse: the converter merges the two into one task and loses nothing;
//! nor is a second terminal event.
//!
//! **Memory.** Per id the table keeps 8 bytes: 62 bits of a seeded hash of
//! the id and its phase (created, started, ended), in two generations of
//! at most [`GENERATION`] ids each. When the current generation is full,
//! the older one is dropped and the current one becomes the older; an id
//! met in the older generation moves to the current one. So the table
//! holds the ids of the last [`GENERATION`] to 2 × [`GENERATION`] distinct
//! tasks, about 300 KiB at most, whatever a client sends (a flood of
//! unique ids only rotates the generations). Past that, an id whose last
//! event is older than that many other ids is forgotten: its reuse is not
//! reported at once (the converter still keeps the first task only). Two
//! ids share a hash with a chance of about 2^-62 per pair: such a pair
//! could be reported as a reuse once.
//!
//! **Cost.** Every task event is looked up, so the table must stay in the
//! CPU's cache: with generations of 65,536 ids (2.3 MiB), a run of
//! distinct ids cost the agent 150–400 ns more per event, measured side by
//! side (`scripts/bench_ingest.py`, 500,000 events: 546–817 ns against
//! 384–400 ns with the lookup compiled out), for lookups that missed the
//! cache. At 8,192 ids a generation the tables stay within the L2 cache:
//! 399–440 ns against 379 ns without the lookup, in the same run.
//! A reuse further apart than that is not warned about live, but `tal
//! summary` and `tal report`, which read the whole session, still name
//! it.

use crate::record::TaskState;
use hashbrown::HashTable;
use std::hash::BuildHasher;

/// Distinct task ids a generation holds at most (see the module doc).
pub const GENERATION: usize = 1 << 13;

/// The phases an id's task has reached, in the top two bits of an entry.
const CREATED: u64 = 1;
const STARTED: u64 = 2;
const ENDED: u64 = 3;
/// The hash bits of an entry.
const KEY: u64 = (1 << 62) - 1;

/// How an event used an id again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reuse {
    /// The id's task had started (and not ended).
    Started,
    /// The id's task had ended.
    Ended,
}

/// The ids of recent tasks and their phases (see the module doc).
#[derive(Debug, Default)]
pub struct TaskIds {
    /// Seeded per agent (foldhash: a few ns for a short id, where SipHash
    /// took the most of this table's cost per event).
    hasher: foldhash::fast::RandomState,
    current: HashTable<u64>,
    older: HashTable<u64>,
}

/// Whether an event in `state` (of `phase`) uses again an id whose task
/// was `before`, and the id's phase after it: a reused id begins a new
/// task; otherwise the phase only moves on.
fn judge(state: TaskState, phase: u64, before: Option<u64>) -> (Option<Reuse>, u64) {
    let reuse = match (phase, before) {
        (CREATED, Some(STARTED)) if state == TaskState::Created => Some(Reuse::Started),
        (STARTED, Some(STARTED)) => Some(Reuse::Started),
        (CREATED | STARTED, Some(ENDED)) => Some(Reuse::Ended),
        _ => None,
    };
    let now = match (reuse, before) {
        (None, Some(b)) => b.max(phase),
        _ => phase,
    };
    (reuse, now)
}

/// The table's hash of an entry's key (its 62 bits, mixed again so that
/// every bit hashbrown uses varies).
fn slot(entry: u64) -> u64 {
    (entry & KEY).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

impl TaskIds {
    /// A task event of `task_id` in `state`: whether it uses the id again
    /// (see the module doc).
    pub fn seen(&mut self, state: TaskState, task_id: &[u8]) -> Option<Reuse> {
        let key = self.hasher.hash_one(task_id) & KEY;
        let phase = match state {
            TaskState::Created | TaskState::Submitted | TaskState::Queued => CREATED,
            TaskState::Started => STARTED,
            _ => ENDED,
        };
        let same = |e: &u64| *e & KEY == key;
        // The common case, an id met in the current generation, is one
        // probe: its entry is updated where it is.
        if let Some(e) = self.current.find_mut(slot(key), same) {
            let (reuse, now) = judge(state, phase, Some(*e >> 62));
            *e = key | now << 62;
            return reuse;
        }
        let before = self.older.find(slot(key), same).map(|e| *e >> 62);
        let (reuse, now) = judge(state, phase, before);
        if self.current.len() >= GENERATION {
            std::mem::swap(&mut self.current, &mut self.older);
            self.current.clear();
        }
        self.current
            .insert_unique(slot(key), key | now << 62, |e| slot(*e));
        reuse
    }

    /// Ids held now (both generations; an id may be in both).
    pub fn len(&self) -> usize {
        self.current.len() + self.older.len()
    }

    /// Whether no id is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The reply to the client whose line `line_no` used `task_id` again:
/// `{"warning": REASON, "line": N, "task_id": ID}`.
pub fn warning_reply(line_no: u64, task_id: &[u8], how: Reuse) -> Vec<u8> {
    let id = String::from_utf8_lossy(task_id);
    let shown: String = id.chars().take(120).collect();
    let ellipsis = if shown.len() < id.len() { "…" } else { "" };
    let before = match how {
        Reuse::Started => "has started",
        Reuse::Ended => "has ended",
    };
    let reason = format!(
        "task id \"{shown}{ellipsis}\" is used again: a task of that id {before} in this session. \
         This run's events are recorded, but the session's spans, counts and summaries keep the first task only; \
         give each task an id of its own (tal run without --task-id makes one)"
    );
    let mut out = Vec::with_capacity(reason.len() + id.len() + 48);
    let mut o = crate::json::JsonOut::object(&mut out);
    o.str("warning", &reason)
        .uint("line", line_no)
        .str("task_id", &id);
    o.end();
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use TaskState::*;

    fn run(t: &mut TaskIds, id: &str, states: &[TaskState]) -> Vec<Option<Reuse>> {
        states.iter().map(|s| t.seen(*s, id.as_bytes())).collect()
    }

    const LIFE: [TaskState; 4] = [Created, Submitted, Started, Completed];

    #[test]
    fn the_warning_is_one_json_line_naming_the_id() {
        let r = warning_reply(3, b"d\"up", Reuse::Ended);
        assert_eq!(r.last(), Some(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&r).unwrap();
        assert_eq!(v["line"], 3);
        assert_eq!(v["task_id"], "d\"up");
        assert!(v.get("error").is_none());
        let w = v["warning"].as_str().unwrap();
        assert!(
            w.contains("task id \"d\"up\" is used again") && w.contains("has ended"),
            "{w}"
        );
    }

    #[test]
    fn a_second_run_under_one_id_is_a_reuse_once() {
        let mut t = TaskIds::default();
        assert_eq!(run(&mut t, "dup", &LIFE), [None; 4]);
        assert_eq!(
            run(&mut t, "dup", &LIFE),
            [Some(Reuse::Ended), None, None, None]
        );
        assert_eq!(run(&mut t, "other", &LIFE), [None; 4]);
        // Two at once: the second's TaskCreated finds the first started.
        run(&mut t, "par", &[Created, Started]);
        assert_eq!(
            run(&mut t, "par", &[Created, Started, Failed, Completed]),
            [Some(Reuse::Started), None, None, None]
        );
        // Clients that only start and end tasks.
        run(&mut t, "bare", &[Started, Completed]);
        assert_eq!(run(&mut t, "bare", &[Started]), [Some(Reuse::Ended)]);
        assert_eq!(run(&mut t, "bare", &[Started]), [Some(Reuse::Started)]);
    }

    #[test]
    fn announcing_a_task_twice_is_not_a_reuse() {
        let mut t = TaskIds::default();
        // A runtime announces the task, then `tal run` reports all of it.
        assert_eq!(
            run(
                &mut t,
                "t",
                &[Created, Submitted, Created, Submitted, Started, Completed]
            ),
            [None; 6]
        );
        // A second end changes nothing.
        assert_eq!(run(&mut t, "t", &[Canceled]), [None]);
        // TaskQueued after the start is not a new task.
        assert_eq!(run(&mut t, "q", &[Started, Queued, Completed]), [None; 3]);
    }

    #[test]
    fn a_flood_of_ids_is_held_to_two_generations() {
        let mut t = TaskIds::default();
        run(&mut t, "first", &[Created, Completed]);
        for i in 0..3 * GENERATION {
            t.seen(Completed, format!("flood.{i}").as_bytes());
            assert!(t.len() <= 2 * GENERATION);
        }
        // "first" was forgotten: its reuse is no longer seen.
        assert_eq!(run(&mut t, "first", &[Created]), [None]);
        // A recent id is still known.
        let recent = format!("flood.{}", 3 * GENERATION - 1);
        assert_eq!(run(&mut t, &recent, &[Created]), [Some(Reuse::Ended)]);
    }

    #[test]
    fn an_id_in_use_survives_the_turn_of_a_generation() {
        let mut t = TaskIds::default();
        run(&mut t, "long", &[Created, Started]);
        // It moves to the current generation whenever it is seen.
        for i in 0..4 * GENERATION {
            t.seen(Completed, format!("f.{i}").as_bytes());
            if i % (GENERATION / 2) == 0 {
                t.seen(Submitted, b"long");
            }
        }
        assert_eq!(run(&mut t, "long", &[Started]), [Some(Reuse::Started)]);
    }
}
