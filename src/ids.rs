//! Identifiers: trace and span ids derived from names, and event ids.
//!
//! A session's trace id and its session span id are pure functions of the
//! session id, and a task span id is a pure function of (session id, task
//! id). Agents on different nodes therefore agree on every id without
//! talking to each other, and converting the same logs twice gives the same
//! ids. The hash is XXH3 (stable across versions and platforms) with a fixed
//! seed per kind of id; a zero result, which OTel treats as invalid, is
//! replaced by 1.
//!
//! JSONL output writes ids as RHAPSODY does (Python's `hex()`: `0x` and no
//! leading zeros); OTLP output uses the zero-padded form.
//!
//! Session and node ids name files (`<session>.<node>.tal`, the default
//! `<session>.<start>.telemetry.jsonl` and the files made from it), so one
//! rule ([`check_id`]) decides which are valid: `tal record` applies it to
//! its own flags, and the log reader to every header it reads, so that a
//! crafted log cannot steer a default output out of its folder.

use xxhash_rust::xxh3::{xxh3_128_with_seed, xxh3_64_with_seed};

const SEED_TRACE: u64 = 0x7461_6c2d_7472_6163; // "tal-trac"
const SEED_SESSION_SPAN: u64 = 0x7461_6c2d_7365_7373; // "tal-sess"
const SEED_TASK_SPAN: u64 = 0x7461_6c2d_7461_736b; // "tal-task"

/// The longest session or node id, bytes.
pub const MAX_ID_BYTES: usize = 200;

/// Why a session or node id is not valid (see [`check_id`]).
pub const ID_RULE: &str =
    "1-200 characters without '/', spaces, control characters or a leading '.'";

/// Whether `id` may be a session or node id: 1 to [`MAX_ID_BYTES`] bytes,
/// no `/`, no white space or control character, and no leading `.` (so
/// neither `.` nor `..`, nor a hidden file). Such an id is one plain
/// file-name component, and stays one with a suffix added.
pub fn check_id(id: &str) -> Result<(), &'static str> {
    if id.is_empty()
        || id.len() > MAX_ID_BYTES
        || id.contains('/')
        || id.starts_with('.')
        || id.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(ID_RULE);
    }
    Ok(())
}

/// The trace id shared by every span of `session_id`.
pub fn trace_id(session_id: &str) -> u128 {
    xxh3_128_with_seed(session_id.as_bytes(), SEED_TRACE).max(1)
}

/// The span id of the session span of `session_id`.
pub fn session_span_id(session_id: &str) -> u64 {
    xxh3_64_with_seed(session_id.as_bytes(), SEED_SESSION_SPAN).max(1)
}

/// The span id of task `task_id` in `session_id`.
pub fn task_span_id(session_id: &str, task_id: &str) -> u64 {
    let mut key = Vec::with_capacity(session_id.len() + 1 + task_id.len());
    key.extend_from_slice(session_id.as_bytes());
    key.push(0);
    key.extend_from_slice(task_id.as_bytes());
    xxh3_64_with_seed(&key, SEED_TASK_SPAN).max(1)
}

/// Formats an id as Python's `hex()` does: `0x` + lowercase, no leading zeros.
pub fn py_hex(v: u128) -> String {
    format!("{v:#x}")
}

/// Formats an event id as 32 lowercase hex digits (a UUID without hyphens).
pub fn event_id_hex(v: u128) -> String {
    format!("{v:032x}")
}

/// Generates event ids shaped like UUID4s (version nibble 4, RFC 4122
/// variant) from a SplitMix64 stream seeded from the OS. Not cryptographic:
/// ids only need to be unique.
#[derive(Debug, Clone)]
pub struct EventIdGen {
    state: u64,
}

impl EventIdGen {
    /// A generator seeded from `getrandom(2)`, falling back to time and pid.
    pub fn from_os() -> Self {
        let mut seed = [0u8; 8];
        let n = rustix::rand::getrandom(&mut seed[..], rustix::rand::GetRandomFlags::empty());
        let seed = if n.ok() == Some(8) {
            u64::from_ne_bytes(seed)
        } else {
            crate::clock::wall_ns() as u64 ^ (u64::from(std::process::id()) << 32)
        };
        Self::with_seed(seed)
    }

    /// A deterministic generator (tests, and ids synthesised by `convert`).
    pub fn with_seed(seed: u64) -> Self {
        Self { state: seed }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// The next id.
    pub fn next_id(&mut self) -> u128 {
        let hi = u128::from(self.next_u64());
        let lo = u128::from(self.next_u64());
        let mut v = (hi << 64) | lo;
        v &= !(0xF_u128 << 76);
        v |= 0x4_u128 << 76; // version 4
        v &= !(0x3_u128 << 62);
        v |= 0x2_u128 << 62; // variant 10xx
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_distinct() {
        assert_eq!(trace_id("s1"), trace_id("s1"));
        assert_ne!(trace_id("s1"), trace_id("s2"));
        assert_ne!(session_span_id("s1"), task_span_id("s1", ""));
        assert_ne!(task_span_id("s1", "t1"), task_span_id("s1", "t2"));
        // (session, task) is not ambiguous under concatenation.
        assert_ne!(task_span_id("ab", "c"), task_span_id("a", "bc"));
    }

    #[test]
    fn ids_that_would_leave_a_folder_or_hide_a_file_are_invalid() {
        for ok in [
            "s",
            "slurm.4242.0",
            "n-01",
            "a..b",
            "x\\y",
            "é",
            &"x".repeat(200),
        ] {
            assert_eq!(check_id(ok), Ok(()), "{ok:?}");
        }
        let long = "x".repeat(201);
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "../x",
            "/abs/x",
            "a/b",
            "a b",
            "a\nb",
            "a\u{1b}]0;t\u{7}",
            "a\tb",
            "\u{85}x",
            &long,
        ] {
            assert_eq!(check_id(bad), Err(ID_RULE), "{bad:?}");
        }
    }

    #[test]
    fn hex_forms_match_rhapsody_and_uuid() {
        assert_eq!(py_hex(0xcf135d120314bc7), "0xcf135d120314bc7");
        let mut g = EventIdGen::with_seed(7);
        let id = event_id_hex(g.next_id());
        assert_eq!(id.len(), 32);
        assert_eq!(&id[12..13], "4");
        assert!(matches!(&id[16..17], "8" | "9" | "a" | "b"));
        assert!(id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    }
}
