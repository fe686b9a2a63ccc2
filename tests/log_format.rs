//! The binary log: write → read round trips (property tests), truncation at
//! every byte offset, damage in the middle, and foreign or unknown files.

use proptest::prelude::*;
use std::path::Path;
use tal::log::reader::LogReader;
use tal::log::{Header, LogWriter, OpenError, FORMAT_VERSION, MAGIC};
use tal::record::*;

fn header(chunk: u64) -> Header {
    Header {
        session_id: "s.test".into(),
        node_id: "n1".into(),
        hostname: "n1.example".into(),
        backend: "tal".into(),
        pid: 42,
        tal_version: "0".into(),
        start_wall_ns: 1_795_000_000_000_000_000,
        start_mono_ns: 1000,
        interval_ns: 100_000_000,
        chunk_bytes: chunk,
        ncpus: 2,
        attributes: vec![("slurm.job_id".into(), "7".into())],
    }
}

fn resource(i: u64, cores: usize) -> Record {
    let mut u = ResourceUpdate::empty(ResourceScope::PerNode);
    u.cpu_percent = Some((i % 1000) as f64 / 10.0);
    u.memory_percent = Some(12.5);
    u.disk_read_bytes = (i > 0).then_some(4096.0 * i as f64);
    u.cpu_percent_per_core = (0..cores).map(|c| c as f32).collect();
    Record::Event(Event {
        event_id: u128::from(i) * 7919,
        event_time_ns: 1_795_000_000_000_000_000 + i as i64 * 100_000_000,
        emit_time_ns: 1_795_000_000_000_000_000 + i as i64 * 100_000_000 + 5000,
        backend: Some("tal".into()),
        task_id: None,
        node_id: None,
        attributes: vec![],
        kind: EventKind::ResourceUpdate(u),
    })
}

fn write_log(path: &Path, chunk: u64, records: &[Record], end: bool) {
    let mut w = LogWriter::create(path, &header(chunk)).unwrap();
    for r in records {
        w.append(r).unwrap();
    }
    let end_rec = Record::End(EndMarker {
        wall_ns: 1,
        reason: EndReason::Signal(15),
    });
    w.finish(end.then_some(&end_rec)).unwrap();
}

fn read_all(bytes: Vec<u8>) -> (Vec<Record>, tal::log::ReadStats) {
    let len = bytes.len() as u64;
    let mut r = LogReader::new(bytes, len, Path::new("mem.tal")).unwrap();
    let recs: Vec<Record> = r.by_ref().collect();
    (recs, r.stats().clone())
}

fn arb_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::Float),
        ".{0,40}".prop_map(Value::Str),
    ]
}

fn arb_record() -> impl Strategy<Value = Record> {
    let attrs = prop::collection::vec(("[a-z_]{1,12}", arb_value()), 0..4);
    let kind = prop_oneof![
        Just(EventKind::SessionStarted),
        any::<f64>().prop_map(|d| EventKind::SessionEnded {
            duration_seconds: d
        }),
        (0u64..5000, 0usize..600).prop_map(|(i, c)| match resource(i, c) {
            Record::Event(e) => e.kind,
            _ => unreachable!(),
        }),
        (
            "[a-z]{1,8}\\.[A-Z][a-z]{1,8}",
            prop::collection::vec(("[a-z]{1,8}", arb_value()), 0..3)
        )
            .prop_map(|(event_type, fields)| EventKind::Custom { event_type, fields }),
        (
            0u8..7,
            prop::option::of(any::<f64>()),
            prop::option::of("[a-z:0-9]{0,12}")
        )
            .prop_map(|(s, d, e)| EventKind::Task(TaskEvent {
                state: [
                    TaskState::Created,
                    TaskState::Submitted,
                    TaskState::Queued,
                    TaskState::Started,
                    TaskState::Completed,
                    TaskState::Failed,
                    TaskState::Canceled
                ][s as usize],
                duration_seconds: d,
                error_type: e,
                extra: vec![],
            })),
    ];
    prop_oneof![
        8 => (any::<u128>(), any::<i64>(), any::<i64>(), prop::option::of("[a-z]{0,10}"),
              prop::option::of("task\\.[0-9]{1,6}"), attrs, kind)
            .prop_map(|(id, t, e, b, task, attributes, kind)| Record::Event(Event {
                event_id: id, event_time_ns: t, emit_time_ns: e, backend: b, task_id: task,
                node_id: None, attributes, kind,
            })),
        1 => (any::<u64>(), prop::collection::vec(any::<u8>(), 0..300)).prop_map(|(n, h)| {
            Record::Snapshot(AgentSnapshot { samples_taken: n, hist_jitter_ns: h, ..Default::default() })
        }),
        // An occasional record larger than a 4 KiB chunk.
        1 => prop::collection::vec(any::<u8>(), 4000..12000).prop_map(|h| {
            Record::Snapshot(AgentSnapshot { hist_cpu_permille: h, ..Default::default() })
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Whatever is written reads back identically, in order, across chunk
    /// boundaries and oversized records.
    #[test]
    fn write_read_round_trip(records in prop::collection::vec(arb_record(), 0..120)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.tal");
        write_log(&path, 4096, &records, true);
        let (got, stats) = read_all(std::fs::read(&path).unwrap());
        prop_assert_eq!(&got[..records.len()], &records[..]);
        prop_assert!(matches!(got.last(), Some(Record::End(_))));
        prop_assert!(stats.end_marker);
        prop_assert_eq!(stats.corrupt_frames, 0);
        prop_assert!(!stats.truncated_tail);
    }

    /// Damage anywhere after the header: the reader never panics, and what
    /// it returns is a subsequence of what was written (the crc rejects
    /// every damaged frame), minus at most one frame per damaged byte.
    #[test]
    fn damage_yields_a_subsequence_of_the_written_records(
        flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..6)
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.tal");
        let records: Vec<Record> = (0..60).map(|i| resource(i, (i % 3) as usize * 30)).collect();
        write_log(&path, 4096, &records, true);
        let mut bytes = std::fs::read(&path).unwrap();
        let len = bytes.len() as u64;
        let header_end = LogReader::new(bytes.clone(), len, Path::new("d")).unwrap().stats().valid_bytes as usize;
        for (at, x) in &flips {
            let i = header_end + at.index(bytes.len() - header_end);
            bytes[i] ^= x;
        }
        let (got, _) = read_all(bytes);
        let mut all = records.clone();
        all.push(Record::End(EndMarker { wall_ns: 1, reason: EndReason::Signal(15) }));
        let mut it = all.iter();
        for g in &got {
            prop_assert!(it.any(|r| r == g), "a record that was never written came back");
        }
        prop_assert!(got.len() + flips.len() * 2 >= all.len(), "{} of {} recovered", got.len(), all.len());
    }

    /// Random bytes after a valid header never panic the reader.
    #[test]
    fn garbage_never_panics(tail in prop::collection::vec(any::<u8>(), 0..3000)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.tal");
        write_log(&path, 4096, &[], false);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(&tail);
        let _ = read_all(bytes);
    }
}

#[test]
fn truncation_at_every_byte_recovers_all_whole_records() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.tal");
    let records: Vec<Record> = (0..40)
        .map(|i| resource(i, (i % 5) as usize * 40))
        .collect();
    write_log(&path, 4096, &records, true);
    let full = std::fs::read(&path).unwrap();
    // Where each record ends: read the full log once, remembering valid_bytes.
    let len = full.len() as u64;
    let mut r = LogReader::new(full.clone(), len, Path::new("t")).unwrap();
    let header_end = r.stats().valid_bytes;
    let mut ends = vec![];
    while r.next_record().is_some() {
        ends.push(r.stats().valid_bytes);
    }
    assert_eq!(ends.len(), records.len() + 1);
    for cut in header_end as usize..full.len() {
        let (got, stats) = read_all(full[..cut].to_vec());
        // A frame is whole once its payload is; its zero padding to the
        // next multiple of 8 may be cut off.
        let whole = ends.iter().filter(|&&e| e as usize <= cut).count();
        let whole_unpadded = ends.iter().filter(|&&e| e as usize <= cut + 7).count();
        assert!(
            (whole..=whole_unpadded).contains(&got.len()),
            "cut at {cut}: {} records",
            got.len()
        );
        let whole = got.len();
        let n = whole.min(records.len());
        assert!(got[..n] == records[..n], "cut at {cut}: records differ");
        assert_eq!(stats.corrupt_frames, 0, "cut at {cut}");
        assert!(!stats.end_marker || whole == records.len() + 1);
    }
    // A cut inside the header (before its zero padding) is an error, not a panic.
    for cut in 0..header_end as usize - 7 {
        let res = LogReader::new(full[..cut].to_vec(), cut as u64, Path::new("t"));
        assert!(res.is_err(), "cut at {cut} inside the header accepted");
    }
}

#[test]
fn killed_writer_leaves_zero_tail_that_reads_as_end() {
    // A writer that flushed but is never finished: the file keeps its
    // preallocated, zero-filled chunk, as after kill -9.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.tal");
    let mut w = LogWriter::create(&path, &header(1 << 20)).unwrap();
    for i in 0..100 {
        w.append(&resource(i, 2)).unwrap();
    }
    w.flush().unwrap();
    // Appended after the last flush: not in the file (kill -9 before the
    // dispatcher's drain ended).
    w.append(&resource(100, 2)).unwrap();
    std::mem::forget(w); // no finish, no flush, no trim
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes.len(), 1 << 20);
    let (got, stats) = read_all(bytes);
    assert_eq!(got.len(), 100);
    assert!(!stats.end_marker);
    assert_eq!(stats.corrupt_frames, 0);
}

#[test]
fn records_reach_the_file_at_flush_or_when_the_buffer_fills() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.tal");
    let mut w = LogWriter::create(&path, &header(1 << 20)).unwrap();
    let in_file = || {
        let bytes = std::fs::read(&path).unwrap();
        read_all(bytes).0.len()
    };
    for i in 0..10 {
        w.append(&resource(i, 2)).unwrap();
    }
    assert_eq!(in_file(), 0, "appended records wait for the flush");
    w.flush().unwrap();
    assert_eq!(in_file(), 10);
    // Past FLUSH_BYTES of pending frames the writer flushes by itself.
    let mut i = 10;
    while w.bytes() < 2 * tal::log::writer::FLUSH_BYTES as u64 {
        w.append(&resource(i, 64)).unwrap();
        i += 1;
    }
    let seen = in_file();
    assert!(seen > 10 && seen < i as usize, "{seen} of {i} in the file");
    assert_eq!(w.lost_records(), 0);
    let path = w.finish(None).unwrap();
    let (got, stats) = read_all(std::fs::read(&path).unwrap());
    assert_eq!(got.len(), i as usize);
    assert_eq!(stats.corrupt_frames, 0);
}

#[test]
fn damaged_record_in_the_middle_is_skipped_and_the_rest_recovered() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.tal");
    let records: Vec<Record> = (0..50).map(|i| resource(i, 8)).collect();
    write_log(&path, 4096, &records, true);
    let full = std::fs::read(&path).unwrap();
    let len = full.len() as u64;
    let mut r = LogReader::new(full.clone(), len, Path::new("c")).unwrap();
    let mut ends = vec![r.stats().valid_bytes];
    while r.next_record().is_some() {
        ends.push(r.stats().valid_bytes);
    }
    // Flip a payload byte of record 20, and zero the length of record 30.
    let mut bad = full.clone();
    bad[ends[20] as usize + 12] ^= 0xff;
    bad[ends[30] as usize..ends[30] as usize + 4].fill(0);
    let (got, stats) = read_all(bad);
    assert_eq!(stats.corrupt_frames, 2);
    assert_eq!(got.len(), records.len() + 1 - 2);
    assert!(stats.end_marker);
    let expect: Vec<&Record> = records
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 20 && *i != 30)
        .map(|(_, r)| r)
        .collect();
    assert_eq!(got[..expect.len()].iter().collect::<Vec<_>>(), expect);
    // A damaged length field (impossibly large) is also resynchronised over.
    let mut bad = full.clone();
    bad[ends[10] as usize..ends[10] as usize + 4].copy_from_slice(&0x00ff_ffffu32.to_le_bytes());
    let (got, stats) = read_all(bad);
    assert_eq!(stats.corrupt_frames, 1);
    assert_eq!(got.len(), records.len());
}

#[test]
fn foreign_and_future_files_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("notes.txt");
    std::fs::write(&p, b"hello, this is not a log at all").unwrap();
    let e = LogReader::open(&p).unwrap_err();
    assert!(matches!(e, OpenError::NotTalLog { .. }), "{e}");
    assert!(e.to_string().contains("is not a tal log"));

    let p = dir.path().join("future.tal");
    let mut b = MAGIC.to_vec();
    b.extend_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
    b.extend_from_slice(&[0; 12]);
    std::fs::write(&p, &b).unwrap();
    let e = LogReader::open(&p).unwrap_err();
    assert!(
        matches!(e, OpenError::UnsupportedVersion { version, .. } if version == FORMAT_VERSION + 1)
    );

    let e = LogReader::open(&dir.path().join("missing.tal")).unwrap_err();
    assert!(matches!(e, OpenError::Io { .. }));
}

#[test]
fn a_header_whose_ids_tal_record_would_refuse_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("crafted.tal");
    for (session, node, what) in [
        ("../../../dir/X", "n1", "session id"),
        ("/abs/dir/X", "n1", "session id"),
        ("s\nX", "n1", "session id"),
        ("s", "..", "node id"),
        ("s", "a/../../b", "node id"),
        ("s", "", "node id"),
    ] {
        let _ = std::fs::remove_file(&p);
        let mut h = header(4096);
        h.session_id = session.into();
        h.node_id = node.into();
        // Checksum-valid: written by the real writer.
        LogWriter::create(&p, &h).unwrap().finish(None).unwrap();
        let e = LogReader::open(&p).unwrap_err();
        assert!(
            matches!(e, OpenError::BadId { .. }),
            "{session:?}/{node:?}: {e}"
        );
        let msg = e.to_string();
        assert!(
            msg.contains(what) && msg.contains(&p.display().to_string()),
            "{msg}"
        );
        assert!(!msg.contains('\n'), "the id is escaped: {msg:?}");
    }
}

#[test]
fn disk_full_keeps_every_record_written_before() {
    // A tiny tmpfs would be the real thing; RLIMIT_FSIZE gives the same
    // ENOSPC-like failure (EFBIG) from posix_fallocate without root.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("full.tal");
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "disk_full_child", "--ignored", "--nocapture"])
        .env("TAL_TEST_FULL_PATH", &path)
        .output()
        .unwrap();
    assert!(
        child.status.success(),
        "{}",
        String::from_utf8_lossy(&child.stderr)
    );
    let bytes = std::fs::read(&path).unwrap();
    let (got, stats) = read_all(bytes);
    let written: usize = String::from_utf8_lossy(&child.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("written="))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(written > 2);
    assert_eq!(got.len(), written);
    assert_eq!(stats.corrupt_frames, 0);
    assert!(
        stats.end_marker,
        "the log ends cleanly after the disk filled"
    );
}

#[test]
#[ignore = "run by disk_full_keeps_every_record_written_before in a child process"]
fn disk_full_child() {
    let Ok(path) = std::env::var("TAL_TEST_FULL_PATH") else {
        return;
    };
    // SAFETY: (a test) ignore SIGXFSZ so the limit shows up as an error.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        // Three pages of records, and the room kept for the last ones.
        let room = 3 * 4096 + tal::log::writer::FINAL_RESERVE_BYTES;
        let lim = libc::rlimit {
            rlim_cur: room,
            rlim_max: room,
        };
        libc::setrlimit(libc::RLIMIT_FSIZE, &lim);
    }
    let mut w = LogWriter::create(Path::new(&path), &header(4096)).unwrap();
    let mut n = 0;
    let err = loop {
        match w.append(&resource(n, 16)) {
            Ok(()) => n += 1,
            Err(e) => break e,
        }
    };
    assert!(
        w.append(&resource(0, 1)).is_err(),
        "writes after a failure must fail fast"
    );
    // The session's last records still fit, in the room kept for them.
    w.append_final(&resource(n, 16)).unwrap();
    let end = Record::End(EndMarker {
        wall_ns: 1,
        reason: EndReason::StopRequested,
    });
    w.append_final(&end).unwrap();
    let _ = w.finish(None);
    println!("written={}", n + 2);
    eprintln!("{err}");
}

/// One frame (length, checksum, payload, padding to 8) around `p`.
fn frame(p: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&(p.len() as u32).to_le_bytes());
    b.extend_from_slice(&crc32fast::hash(p).to_le_bytes());
    b.extend_from_slice(p);
    b.resize(b.len().div_ceil(8) * 8, 0);
    b
}

/// A log's bytes from a header and raw frames (payloads), each frame with
/// a correct checksum: what a crafted file can look like.
fn crafted(h: &Header, payloads: &[Vec<u8>]) -> Vec<u8> {
    let hp = bincode::encode_to_vec(h, bincode::config::standard()).unwrap();
    let mut b = Vec::new();
    b.extend_from_slice(&MAGIC);
    b.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    b.extend_from_slice(&(hp.len() as u32).to_le_bytes());
    b.extend_from_slice(&crc32fast::hash(&hp).to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&hp);
    b.resize(b.len().div_ceil(8) * 8, 0);
    for p in payloads {
        b.extend_from_slice(&frame(p));
    }
    b
}

/// Checksum-valid crafted logs: an impossible chunk size is refused as a
/// damaged header (it once panicked), and a record claiming a 64 GiB string
/// is skipped as undecodable (it once aborted in allocation); the records
/// around it are read.
#[test]
fn crafted_logs_are_refused_or_skipped_never_trusted() {
    for chunk in [u64::MAX - 7, 1 << 40, 4096 + 8] {
        let b = crafted(&header(chunk), &[]);
        let len = b.len() as u64;
        match LogReader::new(b, len, Path::new("c.tal")) {
            Err(OpenError::CorruptHeader { reason, .. }) => {
                assert!(reason.contains("chunk size"), "{reason}")
            }
            other => panic!("chunk {chunk}: {other:?}"),
        }
    }
    let good = bincode::encode_to_vec(resource(1, 4), bincode::config::standard()).unwrap();
    let ev = Record::Event(Event {
        event_id: 5,
        event_time_ns: 1,
        emit_time_ns: 1,
        backend: Some("QQ".into()),
        task_id: None,
        node_id: None,
        attributes: Vec::new(),
        kind: EventKind::SessionStarted,
    });
    let mut huge = bincode::encode_to_vec(ev, bincode::config::standard()).unwrap();
    // The backend string's length (Some, 2, "QQ") made to claim 2^36 bytes
    // (varint: 253, then a u64).
    let at = huge
        .windows(4)
        .position(|w| w == [1, 2, b'Q', b'Q'])
        .unwrap();
    huge.splice(
        at + 1..at + 2,
        std::iter::once(253u8).chain((1u64 << 36).to_le_bytes()),
    );
    let b = crafted(&header(4096), &[good.clone(), huge, good]);
    let (recs, stats) = read_all(b);
    assert_eq!(recs.len(), 2);
    assert_eq!(stats.undecodable_frames, 1);
}

/// Resynchronising over a damaged region full of plausible frame lengths
/// is bounded work (it was quadratic: 2 MiB took 14 s).
#[test]
fn resync_over_plausible_lengths_is_bounded() {
    let good = bincode::encode_to_vec(resource(1, 4), bincode::config::standard()).unwrap();
    let mut b = crafted(&header(1 << 20), std::slice::from_ref(&good));
    // 2 MiB of {len = 1 MiB, crc = 0} words, then a valid frame at the
    // next chunk boundary.
    let start = b.len();
    while b.len() < start + (2 << 20) {
        b.extend_from_slice(&(1u32 << 20).to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
    }
    b.resize(b.len().div_ceil(1 << 20) * (1 << 20), 0);
    b.extend_from_slice(&frame(&good));
    let len = b.len() as u64;
    let (recs, stats) = read_all(b);
    assert_eq!(recs.len(), 2, "{stats:?}");
    assert!(stats.corrupt_frames >= 1);
    assert!(
        stats.resync_checked_bytes <= 8 * len,
        "{} bytes checksummed for a {len}-byte log",
        stats.resync_checked_bytes
    );
}

/// One step of the model-based test.
#[derive(Debug, Clone)]
enum Op {
    /// Append a record of this many cores (so this size).
    Append(usize),
    /// Flush.
    Flush,
    /// Append one of the session's last records (written at once).
    Final,
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0usize..600).prop_map(Op::Append),
        2 => Just(Op::Flush),
        1 => Just(Op::Final),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Model-based: a writer driven by random appends, flushes and final
    /// records, killed after a random step (its file read as the page cache
    /// holds it) and then cut at a random byte, reads back exactly a prefix
    /// of what was appended; that prefix holds at least every record flushed
    /// before the kill, when the cut spares them.
    #[test]
    fn a_killed_and_cut_log_reads_a_prefix_holding_everything_flushed(
        ops in proptest::collection::vec(arb_op(), 1..120),
        kill_at in any::<proptest::sample::Index>(),
        cut in any::<proptest::sample::Index>(),
        chunk_pages in 1u64..4,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.tal");
        let mut w = LogWriter::create(&path, &header(4096 * chunk_pages)).unwrap();
        let kill = kill_at.index(ops.len());
        let mut model: Vec<Record> = Vec::new();
        // Records known to be in the file (flushed), and the file length then.
        let mut durable = 0usize;
        for (i, op) in ops.iter().enumerate() {
            match op {
                Op::Append(cores) => {
                    let r = resource(model.len() as u64, *cores);
                    w.append(&r).unwrap();
                    model.push(r);
                }
                Op::Flush => {
                    w.flush().unwrap();
                    durable = model.len();
                }
                Op::Final => {
                    let r = resource(model.len() as u64, 1);
                    w.append_final(&r).unwrap();
                    model.push(r);
                    durable = model.len();
                }
            }
            if i == kill {
                break;
            }
        }
        // kill -9: the file as it is now; the writer is never finished.
        let bytes = std::fs::read(&path).unwrap();
        std::mem::forget(w);
        let (all, stats) = read_all(bytes.clone());
        prop_assert_eq!(stats.corrupt_frames, 0);
        prop_assert!(all.len() >= durable, "{} read, {} flushed", all.len(), durable);
        prop_assert_eq!(&all[..], &model[..all.len()]);
        // Then cut anywhere: still a prefix, and all of it if the cut is
        // past the last whole record.
        let at = cut.index(bytes.len() + 1);
        let cut_bytes = bytes[..at].to_vec();
        if let Ok(r) = LogReader::new(cut_bytes.clone(), at as u64, Path::new("c.tal")) {
            drop(r);
            let (some, _) = read_all(cut_bytes);
            prop_assert_eq!(&some[..], &model[..some.len()]);
            if at as u64 >= stats.valid_bytes {
                prop_assert_eq!(some.len(), all.len());
            }
        }
    }
}

/// A snapshot as format 5 first wrote it, before the counter of reused task
/// ids was appended (the same bytes without the counter's), still reads,
/// with the counter at 0; one that has it reads it; one cut inside it is
/// undecodable, as any cut record.
#[test]
fn a_snapshot_from_before_its_appended_counter_still_reads() {
    let s = AgentSnapshot {
        samples_taken: 5,
        task_counters: vec![1, 2],
        task_thread_cpu_ns: 9,
        ..Default::default()
    };
    let new =
        bincode::encode_to_vec(Record::Snapshot(s.clone()), bincode::config::standard()).unwrap();
    // The counter at 0 is the last byte.
    assert_eq!(new.last(), Some(&0));
    let old = new[..new.len() - 1].to_vec();
    let counted = AgentSnapshot {
        ingest_task_ids_reused: Appended(300),
        ..s.clone()
    };
    let with = bincode::encode_to_vec(
        Record::Snapshot(counted.clone()),
        bincode::config::standard(),
    )
    .unwrap();
    // 300 takes a marker byte and two more: cut after the marker.
    let cut = with[..with.len() - 1].to_vec();
    let b = crafted(&header(4096), &[old, with.clone(), cut]);
    let len = b.len() as u64;
    let mut r = LogReader::new(b, len, Path::new("old.tal")).unwrap();
    let got: Vec<Record> = r.by_ref().collect();
    assert_eq!(got, vec![Record::Snapshot(s), Record::Snapshot(counted)]);
    assert_eq!(r.stats().undecodable_frames, 1);
}
