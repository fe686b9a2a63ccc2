//! Fuzzes everything that reads a session's JSONL (a checkpoint a user
//! hands to `tal convert --format otlp-json`, `tal report` or `tal
//! convert --format chrome`, RHAPSODY's or tal's) with arbitrary files:
//! an error or a result, never a panic, whatever the lines' values.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::io::Cursor;
use tal::convert::chrome;
use tal::otlp;

fuzz_target!(|data: &[u8]| {
    let _ = otlp::from_jsonl(Cursor::new(data), &otlp::ResourceConfig::default());
    let _ = tal::summary::from_jsonl(Cursor::new(data));
    let _ = chrome::write_chrome_trace(|| Ok(Cursor::new(data)), &mut std::io::sink());
    let mut src = tal::items::jsonl::Jsonl::new(|| Ok(Cursor::new(data)));
    let _ = tal::report::write_report(&mut src, &mut std::io::sink());
});
