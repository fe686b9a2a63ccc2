//! Criterion benchmarks of each pipeline stage: per-source read+parse, ring
//! push/pop, dispatcher per reading, writer per record, and convert
//! throughput (events/s). Whole-process overhead against the bare-read
//! floor is `scripts/bench-overhead.sh`.

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::sync::Arc;
use std::time::Duration;
use tal::agent::proc::{source, CpuBase, ProcReading, ProcSample, ProcSources};
use tal::agent::procfs;
use tal::dispatch::Dispatcher;
use tal::log::{Header, LogReader, LogWriter, DEFAULT_CHUNK_BYTES};
use tal::record::*;
use tal::ring;

fn sources(c: &mut Criterion) {
    let mut g = c.benchmark_group("proc_source_read_parse");
    let mut src = ProcSources::open().unwrap();
    let mut r = Box::<ProcReading>::default();
    for (name, bit) in [
        ("stat", source::STAT),
        ("meminfo", source::MEMINFO),
        ("diskstats", source::DISKSTATS),
        ("net_dev", source::NET_DEV),
    ] {
        g.bench_function(name, |b| b.iter(|| src.read_source(bit, black_box(&mut r))));
    }
    g.bench_function("all_four", |b| b.iter(|| src.read_into(black_box(&mut r))));
    g.finish();

    let mut g = c.benchmark_group("proc_parse_only");
    let stat = std::fs::read("/proc/stat").unwrap();
    let mut all = procfs::CpuTicks::default();
    let mut per = vec![procfs::CpuTicks::default(); 512];
    g.bench_function("stat", |b| {
        b.iter(|| procfs::parse_stat(black_box(&stat), &mut all, &mut per))
    });
    let mem = std::fs::read("/proc/meminfo").unwrap();
    g.bench_function("meminfo", |b| {
        b.iter(|| procfs::parse_meminfo(black_box(&mem)))
    });
    let disk = std::fs::read("/proc/diskstats").unwrap();
    let filter = procfs::DiskFilter::from_sys();
    g.bench_function("diskstats", |b| {
        b.iter(|| procfs::parse_diskstats(black_box(&disk), &filter))
    });
    let net = std::fs::read("/proc/net/dev").unwrap();
    g.bench_function("net_dev", |b| {
        b.iter(|| procfs::parse_net_dev(black_box(&net)))
    });
    g.finish();
}

fn ring_push_pop(c: &mut Criterion) {
    let (mut p, mut cons) = ring::channel::<ProcSample>(64);
    let reading = ProcSample::default();
    c.bench_function("ring_push_pop_proc_sample", |b| {
        b.iter(|| {
            p.push(black_box(reading)).unwrap();
            black_box(cons.pop().unwrap());
        })
    });
    let (mut p, mut cons) = ring::channel::<u64>(1024);
    c.bench_function("ring_push_pop_u64", |b| {
        b.iter(|| {
            p.push(black_box(7)).unwrap();
            black_box(cons.pop().unwrap());
        })
    });
}

fn dispatcher(c: &mut Criterion) {
    let mut src = ProcSources::open().unwrap();
    let mut ra = Box::<ProcReading>::default();
    src.read_into(&mut ra);
    std::thread::sleep(Duration::from_millis(20));
    let mut rb = Box::<ProcReading>::default();
    src.read_into(&mut rb);
    // Two samples that both carry CPU figures (each measured against the
    // other's reading), whatever the time between them.
    let mut a = Box::<ProcSample>::default();
    let mut base = CpuBase::new(1);
    a.fill_from(&rb, &mut base, 0);
    a.fill_from(&ra, &mut base, 1);
    let mut bb = Box::<ProcSample>::default();
    let mut base = CpuBase::new(1);
    bb.fill_from(&ra, &mut base, 0);
    bb.fill_from(&rb, &mut base, 1);
    let (_p, cons) = ring::channel(4);
    let mut d = Dispatcher::new(
        cons,
        Vec::new(),
        Arc::default(),
        Arc::default(),
        "tal".into(),
        Duration::from_millis(100),
        0,
        Duration::from_secs(10),
    );
    let mut flip = false;
    c.bench_function("dispatcher_resource_update_per_reading", |b| {
        b.iter(|| {
            flip = !flip;
            black_box(d.resource_update(if flip { &bb } else { &a }))
        })
    });
}

fn sample_record(i: u64, cores: usize) -> Record {
    let mut u = ResourceUpdate::empty(ResourceScope::PerNode);
    u.cpu_percent = Some(12.3);
    u.memory_percent = Some(45.6);
    u.disk_read_bytes = Some(4096.0);
    u.disk_write_bytes = Some(8192.0);
    u.net_sent_bytes = Some(1500.0);
    u.net_recv_bytes = Some(9000.0);
    u.cpu_percent_per_core = (0..cores).map(|c| c as f32).collect();
    Record::Event(Event {
        event_id: u128::from(i) << 64 | 0x4000_8000_0000_0000,
        event_time_ns: 1_795_000_000_000_000_000 + i as i64,
        emit_time_ns: 1_795_000_000_000_000_000 + i as i64,
        backend: Some("tal".into()),
        task_id: None,
        node_id: None,
        attributes: vec![],
        kind: EventKind::ResourceUpdate(u),
    })
}

fn header() -> Header {
    Header {
        session_id: "bench".into(),
        node_id: "n1".into(),
        hostname: "n1".into(),
        backend: "tal".into(),
        pid: 1,
        tal_version: "0".into(),
        start_wall_ns: 1_795_000_000_000_000_000,
        start_mono_ns: 0,
        interval_ns: 100_000_000,
        chunk_bytes: DEFAULT_CHUNK_BYTES,
        ncpus: 2,
        attributes: vec![],
    }
}

fn writer(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut n = 0;
    let rec = sample_record(1, 2);
    let mut g = c.benchmark_group("writer_append_1000_records");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("resource_update_2_cores", |b| {
        b.iter_batched_ref(
            || {
                n += 1;
                LogWriter::create(&dir.path().join(format!("w{n}.tal")), &header()).unwrap()
            },
            |w| {
                for _ in 0..1000 {
                    w.append(black_box(&rec)).unwrap();
                }
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

fn convert(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.tal");
    const N: u64 = 100_000;
    let mut w = LogWriter::create(&path, &header()).unwrap();
    for i in 0..N {
        w.append(&sample_record(i, 2)).unwrap();
    }
    w.finish(None).unwrap();
    let mut g = c.benchmark_group("convert_jsonl");
    g.throughput(Throughput::Elements(N));
    g.sample_size(10);
    g.bench_function("100k_resource_events", |b| {
        b.iter(|| {
            let r = LogReader::open(&path).unwrap();
            tal::convert::jsonl::write_jsonl(vec![r], &mut std::io::sink(), &std::env::temp_dir())
                .unwrap()
        })
    });
    g.finish();
}

/// The ingest listener's per-line work on a RHAPSODY-shaped task line:
/// the fast path (scan + encode) against the general parser (serde_json
/// tree + checks), and the encode alone for comparison.
fn ingest_line(c: &mut Criterion) {
    let line = br#"{"event_id": "9b0c42c4483646f8af92bd37a47a5f9f", "event_type": "TaskSubmitted", "event_time": 1795574441.8567670, "emit_time": 1795574441.8567696, "session_id": "bench", "backend": "concurrent", "task_id": "task.0000042", "node_id": null, "attributes": {"executable": "/bin/true", "task_type": "ComputeTask"}}"#;
    let mut g = c.benchmark_group("ingest_task_line");
    g.throughput(Throughput::Elements(1));
    let mut fast = tal::ingest::fast::FastPath::default();
    let mut out = Vec::with_capacity(1 << 16);
    g.bench_function("fast_path_scan_and_encode", |b| {
        b.iter(|| {
            out.clear();
            fast.encode(black_box(line), 0, || 1, &mut out)
        })
    });
    g.bench_function("general_parser", |b| {
        b.iter(|| tal::ingest::protocol::parse_line(black_box(line), 0))
    });
    g.finish();
}

criterion_group!(
    benches,
    sources,
    ring_push_pop,
    dispatcher,
    writer,
    convert,
    ingest_line
);
criterion_main!(benches);
