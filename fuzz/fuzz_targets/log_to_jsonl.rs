//! Fuzzes the whole conversion of a log to JSONL (`tal convert`): the
//! input is a log file whose checksums the target puts right before
//! converting it, so that mutated records reach the decoder and the
//! converter (the task state machine, spans, per-GPU and per-task series,
//! the metric line) instead of being dropped as corrupt. Whatever the
//! records say, the conversion ends with a result or an error, never a
//! panic; and a log that opens gives a default output name that is one
//! plain file name (its header's ids are the fuzzer's too). Seed it with
//! real logs (`tal record` writes them).
#![no_main]
use libfuzzer_sys::fuzz_target;
use tal::log::PAD_MARKER;

fn u32_at(b: &[u8], i: usize) -> Option<usize> {
    Some(u32::from_le_bytes(b.get(i..i + 4)?.try_into().ok()?) as usize)
}

/// Rewrites the header's and each frame's crc32 over what they hold.
fn fix_checksums(b: &mut [u8]) {
    // magic (8), version, header length, its crc32, 0 (4 each), header.
    let Some(hlen) = u32_at(b, 12) else { return };
    let Some(header) = b.get(24..24 + hlen) else { return };
    let crc = crc32fast::hash(header);
    b[16..20].copy_from_slice(&crc.to_le_bytes());
    let mut i = (24 + hlen).div_ceil(8) * 8;
    while let Some(len) = u32_at(b, i) {
        if len == PAD_MARKER as usize {
            break;
        }
        let Some(p) = b.get(i + 8..i + 8 + len) else { break };
        let crc = crc32fast::hash(p);
        b[i + 4..i + 8].copy_from_slice(&crc.to_le_bytes());
        i = (i + 8 + len).div_ceil(8) * 8;
    }
}

fuzz_target!(|data: &[u8]| {
    let mut b = data.to_vec();
    fix_checksums(&mut b);
    let dir = std::env::temp_dir();
    let path = dir.join(format!("tal-fuzz-log_to_jsonl-{}.tal", std::process::id()));
    std::fs::write(&path, &b).unwrap();
    if let Ok(inputs) = tal::convert::open_logs(&[path]) {
        let name = inputs.default_name();
        let mut c = std::path::Path::new(&name).components();
        assert!(
            matches!(c.next(), Some(std::path::Component::Normal(_))) && c.next().is_none(),
            "{name:?} is not one file name"
        );
        let _ = tal::convert::jsonl::write_jsonl(inputs.readers, &mut std::io::sink(), &dir);
    }
});
