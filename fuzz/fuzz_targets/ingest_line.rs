//! Fuzzes the ingest socket's line parsers with arbitrary bytes, as any
//! client on the node may send them: never a panic, and whenever the fast
//! path takes a line, the general parser takes it too and the record bytes
//! are the same (what the listener writes to the log does not depend on
//! which parser read the line), and they decode.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tal::ingest::batch::decode;
use tal::ingest::fast::FastPath;
use tal::ingest::protocol::{parse_line, Line};
use tal::record::Record;

fuzz_target!(|data: &[u8]| {
    let general = parse_line(data, 7);
    let mut fast = FastPath::default();
    let mut out = Vec::new();
    if fast.encode(data, 7, || 99, &mut out).is_some() {
        let text = String::from_utf8_lossy(data);
        let Ok(Line::Event(mut ev)) = general else {
            panic!("the fast path took a line the general parser refused: {text}");
        };
        if ev.event_id == 0 {
            ev.event_id = 99;
        }
        let want = bincode::encode_to_vec(Record::Event(ev), bincode::config::standard()).unwrap();
        assert_eq!(out, want, "{text}");
        decode(&out).unwrap();
        let _ = fast.last_task(data);
    }
});
