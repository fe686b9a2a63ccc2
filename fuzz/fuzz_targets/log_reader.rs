//! Fuzzes the log reader with arbitrary files: it must never panic, loop
//! forever or return a record whose crc did not match.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let len = data.len() as u64;
    if let Ok(mut r) = tal::log::LogReader::new(data.to_vec(), len, Path::new("fuzz.tal")) {
        for _ in r.by_ref() {}
        let _ = r.stats();
    }
});
