//! Structure-aware fuzzing of the log reader: the input describes a log
//! (a chunk size, then frames of real records, of arbitrary payloads, runs
//! of plausible-looking junk, pad markers, a cut) and every frame gets a
//! correct checksum, so the fuzzer reaches the decoder and the resync logic
//! instead of stopping at checksum mismatches. The reader must never panic
//! or allocate without bound, and its resync work must stay a few times the
//! log's length.
//!
//! Input: byte 0 picks the chunk (4 KiB to 1 MiB); then ops:
//! `0 n` a real record; `1 L bytes…` a frame with those L bytes as payload;
//! `2 a b l0 l1 l2 l3` (a + 256·b) words of {len = l, crc = 0};
//! `3` a pad marker; `4` cut the file here.
//!
//! Run with `cargo +nightly fuzz run log_frames fuzz/regressions/log_frames`;
//! that folder holds inputs that once broke the reader (see its README).
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;
use tal::log::{Header, FORMAT_VERSION, MAGIC};
use tal::record::{Event, EventKind, Record, ResourceScope, ResourceUpdate};

fn frame(out: &mut Vec<u8>, p: &[u8]) {
    out.extend_from_slice(&(p.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(p).to_le_bytes());
    out.extend_from_slice(p);
    out.resize(out.len().div_ceil(8) * 8, 0);
}

fn record(n: u8) -> Vec<u8> {
    let mut u = ResourceUpdate::empty(ResourceScope::PerNode);
    u.cpu_percent = Some(f64::from(n));
    let r = Record::Event(Event {
        event_id: u128::from(n),
        event_time_ns: 1_795_000_000_000_000_000 + i64::from(n),
        emit_time_ns: 1_795_000_000_000_000_000,
        backend: Some("tal".into()),
        task_id: None,
        node_id: None,
        attributes: Vec::new(),
        kind: EventKind::ResourceUpdate(u),
    });
    bincode::encode_to_vec(r, bincode::config::standard()).unwrap()
}

fuzz_target!(|data: &[u8]| {
    let Some((&c, mut ops)) = data.split_first() else {
        return;
    };
    let chunk = 1u64 << (12 + u32::from(c % 9));
    let h = Header {
        session_id: "s".into(),
        node_id: "n".into(),
        hostname: "n".into(),
        backend: "tal".into(),
        pid: 1,
        tal_version: "0".into(),
        start_wall_ns: 0,
        start_mono_ns: 0,
        interval_ns: 100_000_000,
        chunk_bytes: chunk,
        ncpus: 1,
        attributes: Vec::new(),
    };
    let hp = bincode::encode_to_vec(&h, bincode::config::standard()).unwrap();
    let mut b = Vec::new();
    b.extend_from_slice(&MAGIC);
    b.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    b.extend_from_slice(&(hp.len() as u32).to_le_bytes());
    b.extend_from_slice(&crc32fast::hash(&hp).to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&hp);
    b.resize(b.len().div_ceil(8) * 8, 0);
    while let Some((&op, rest)) = ops.split_first() {
        ops = rest;
        match op % 5 {
            0 => {
                let n = ops.first().copied().unwrap_or(0);
                ops = ops.get(1..).unwrap_or(&[]);
                frame(&mut b, &record(n));
            }
            1 => {
                let l = ops.first().copied().unwrap_or(0) as usize;
                let p = ops.get(1..1 + l).unwrap_or(ops.get(1..).unwrap_or(&[]));
                frame(&mut b, p);
                ops = ops.get(1 + p.len()..).unwrap_or(&[]);
            }
            2 if ops.len() >= 6 => {
                let n = usize::from(ops[0]) + 256 * usize::from(ops[1]);
                let l = u32::from_le_bytes(ops[2..6].try_into().unwrap());
                for _ in 0..n {
                    b.extend_from_slice(&l.to_le_bytes());
                    b.extend_from_slice(&0u32.to_le_bytes());
                }
                ops = &ops[6..];
            }
            3 => {
                b.extend_from_slice(&u32::MAX.to_le_bytes());
                b.extend_from_slice(&0u32.to_le_bytes());
                b.resize((b.len() as u64).div_ceil(chunk) as usize * chunk as usize, 0);
            }
            4 => {
                let cut = ops.first().copied().unwrap_or(0) as usize;
                b.truncate(b.len().saturating_sub(cut));
                break;
            }
            _ => break,
        }
    }
    let len = b.len() as u64;
    if let Ok(mut r) = tal::log::LogReader::new(b, len, Path::new("fuzz.tal")) {
        for _ in r.by_ref() {}
        let st = r.stats();
        assert!(
            st.resync_checked_bytes <= 8 * len + 4 * chunk,
            "{} bytes checksummed for a {len}-byte log",
            st.resync_checked_bytes
        );
    }
});
