//! Fuzzes the ids of a log's header, which name the files made from a log
//! (`tal convert LOG`, `tal report LOG` and the other forms, without
//! `-o`). The input is a session id and a node id, split at the first
//! 0xff byte (each read as lossy UTF-8), put into an otherwise valid,
//! checksum-valid log. Whatever they hold, the log is either refused for
//! its ids, by the same rule `tal record` applies to its own
//! (`tal::ids::check_id`), or opened; and then every default output name
//! made from it is one plain file name, in the log's folder.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::{Component, Path};
use tal::convert::{open_logs, ConvertError};
use tal::log::{Header, OpenError, FORMAT_VERSION, MAGIC};

/// A log of `header` and no record.
fn log_bytes(header: &Header) -> Vec<u8> {
    let payload = bincode::encode_to_vec(header, bincode::config::standard()).unwrap();
    let mut b = MAGIC.to_vec();
    b.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    b.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    b.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&payload);
    b.resize(b.len().div_ceil(8) * 8, 0);
    b
}

/// One plain file name: no folder, no `.` or `..`, not hidden, nothing a
/// terminal would act on.
fn assert_one_name(name: &str) {
    let mut c = Path::new(name).components();
    assert!(
        matches!(c.next(), Some(Component::Normal(_))) && c.next().is_none(),
        "{name:?} is not one file name"
    );
    assert!(!name.starts_with('.'), "{name:?} is hidden");
    assert!(!name.chars().any(char::is_control), "{name:?}");
}

fuzz_target!(|data: &[u8]| {
    let cut = data.iter().position(|&b| b == 0xff).unwrap_or(data.len());
    let session = String::from_utf8_lossy(&data[..cut]).into_owned();
    let node = String::from_utf8_lossy(data.get(cut + 1..).unwrap_or_default()).into_owned();
    let header = Header {
        session_id: session.clone(),
        node_id: node.clone(),
        hostname: "h".into(),
        backend: "tal".into(),
        pid: 1,
        tal_version: "0".into(),
        start_wall_ns: 1_795_000_000_000_000_000,
        start_mono_ns: 0,
        interval_ns: 100_000_000,
        chunk_bytes: 4096,
        ncpus: 1,
        attributes: vec![],
    };
    let dir = std::env::temp_dir();
    let path = dir.join(format!("tal-fuzz-log_header-{}.tal", std::process::id()));
    std::fs::write(&path, log_bytes(&header)).unwrap();
    let valid = tal::ids::check_id(&session).is_ok() && tal::ids::check_id(&node).is_ok();
    match open_logs(&[path]) {
        Ok(inputs) => {
            assert!(valid, "ids {session:?}, {node:?} taken");
            let name = inputs.default_name();
            assert_one_name(&name);
            let stem = name.trim_end_matches(".telemetry.jsonl");
            for suffix in [".otlp.traces.json", ".otlp.metrics.json", ".trace.json", ".report.html"] {
                assert_one_name(&format!("{stem}{suffix}"));
            }
            assert_one_name(&tal::convert::node_file_name(
                &session,
                &node,
                header.start_wall_ns,
            ));
        }
        Err(ConvertError::Open(OpenError::BadId { .. })) => {
            assert!(!valid, "ids {session:?}, {node:?} refused")
        }
        Err(e) => panic!("a valid log refused: {e}"),
    }
});
