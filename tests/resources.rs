//! Resource correctness: tal's cpu %, memory %, disk and network deltas
//! agree with an independent computation from /proc over the same window,
//! while the test generates real disk I/O (O_DIRECT, so it reaches the
//! device), loopback traffic and CPU load.
//!
//! The independent reading brackets tal's run (taken before tal starts and
//! after it exits), so for the byte counters: generated ≤ tal's sum ≤ the
//! bracket's delta. That catches a wrong unit (sectors vs bytes), a missed
//! direction, and partitions counted on top of their disks. CPU % is
//! compared as the interval-weighted mean over the run.

mod common;
use common::*;
use std::io::{Read, Write};
use std::process::Stdio;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
struct Snap {
    busy: u64,
    total: u64,
    mem_percent: f64,
    disk_read: u64,
    disk_write: u64,
    net_rx: u64,
    net_tx: u64,
}

/// Reads /proc with code that shares nothing with tal's parsers.
fn snap() -> Snap {
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    let f: Vec<u64> = stat
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap())
        .collect();
    let total: u64 = f.iter().take(8).sum();
    let busy = total - f[3] - f[4];

    let mem = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kv = |k: &str| -> f64 {
        mem.lines()
            .find(|l| l.starts_with(k))
            .unwrap()
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse()
            .unwrap()
    };
    let (t, a) = (kv("MemTotal:"), kv("MemAvailable:"));

    let disks: Vec<String> = std::fs::read_dir("/sys/block")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().replace('!', "/"))
        .collect();
    let (mut dr, mut dw) = (0, 0);
    for l in std::fs::read_to_string("/proc/diskstats").unwrap().lines() {
        let w: Vec<&str> = l.split_whitespace().collect();
        if disks.iter().any(|d| d == w[2]) {
            dr += w[5].parse::<u64>().unwrap() * 512;
            dw += w[9].parse::<u64>().unwrap() * 512;
        }
    }
    let (mut rx, mut tx) = (0, 0);
    for l in std::fs::read_to_string("/proc/net/dev")
        .unwrap()
        .lines()
        .skip(2)
    {
        let (_, rest) = l.split_once(':').unwrap();
        let w: Vec<u64> = rest
            .split_whitespace()
            .map(|x| x.parse().unwrap())
            .collect();
        rx += w[0];
        tx += w[8];
    }
    Snap {
        busy,
        total,
        mem_percent: (t - a) / t * 100.0,
        disk_read: dr,
        disk_write: dw,
        net_rx: rx,
        net_tx: tx,
    }
}

const DISK_BYTES: u64 = 16 << 20;
const NET_BYTES: usize = 8 << 20;

fn generate_load(dir: &std::path::Path) {
    let blob = dir.join("blob");
    let dd = |args: &[&str]| {
        let st = std::process::Command::new("dd")
            .args(args)
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "dd {args:?}");
    };
    let of = format!("of={}", blob.display());
    let iff = format!("if={}", blob.display());
    dd(&["if=/dev/zero", &of, "bs=1M", "count=16", "oflag=direct"]);
    dd(&[&iff, "of=/dev/null", "bs=1M", "iflag=direct"]);
    std::fs::remove_file(&blob).unwrap();

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 1 << 16];
        let mut got = 0;
        while got < NET_BYTES {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0);
            got += n;
        }
    });
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.write_all(&vec![7u8; NET_BYTES]).unwrap();
    server.join().unwrap();

    // One core busy for a second.
    let start = Instant::now();
    let mut x = 0u64;
    while start.elapsed() < Duration::from_secs(1) {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
    }
    std::hint::black_box(x);
}

#[test]
fn deltas_agree_with_an_independent_reading_of_proc() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let before = snap();
    let (child, log) = spawn_recorder(dir.path(), "s.res", "0.1");
    // The agent's baseline reading is taken before the load starts...
    wait_until("a sample before the load", || samples_in_log(&log) >= 2);
    generate_load(dir.path());
    // ...and a reading after it ends is in before it stops.
    let after_load = samples_in_log(&log);
    wait_until("two samples after the load", || {
        samples_in_log(&log) >= after_load + 2
    });
    signal(&child, libc::SIGTERM);
    let out = wait_output(child, Duration::from_secs(20));
    let after = snap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let v = read_jsonl_in(dir.path());
    let samples = lines(&v, "event", Some("ResourceUpdate"));
    assert!(samples.len() >= 15);
    let sum = |k: &str| -> f64 { samples.iter().map(|s| s[k].as_f64().unwrap_or(0.0)).sum() };

    let check = |name: &str, tal: f64, generated: f64, bracket: u64| {
        eprintln!("{name}: generated {generated}, tal {tal}, /proc bracket {bracket}");
        assert!(
            tal >= generated,
            "{name}: tal saw {tal} < {generated} generated"
        );
        assert!(
            tal <= bracket as f64,
            "{name}: tal saw {tal} > {bracket} in /proc over a wider window"
        );
    };
    check(
        "disk_write_bytes",
        sum("disk_write_bytes"),
        DISK_BYTES as f64,
        after.disk_write - before.disk_write,
    );
    check(
        "disk_read_bytes",
        sum("disk_read_bytes"),
        DISK_BYTES as f64,
        after.disk_read - before.disk_read,
    );
    check(
        "net_sent_bytes",
        sum("net_sent_bytes"),
        NET_BYTES as f64,
        after.net_tx - before.net_tx,
    );
    check(
        "net_recv_bytes",
        sum("net_recv_bytes"),
        NET_BYTES as f64,
        after.net_rx - before.net_rx,
    );

    // CPU: interval-weighted mean of tal's samples vs the bracket's busy share.
    let times: Vec<f64> = samples
        .iter()
        .map(|s| s["event_time"].as_f64().unwrap())
        .collect();
    // Each figure weighs what its window covers: since the sample before
    // it that had one (a null, a window too short to measure, is folded
    // into the next one; see tal::agent::window).
    let mut wsum = 0.0;
    let mut w = 0.0;
    let mut since = times[0];
    for i in 1..samples.len() {
        if let Some(c) = samples[i]["cpu_percent"].as_f64() {
            let dt = times[i] - since;
            wsum += c * dt;
            w += dt;
            since = times[i];
        }
    }
    let tal_cpu = wsum / w;
    let proc_cpu = (after.busy - before.busy) as f64 / (after.total - before.total) as f64 * 100.0;
    eprintln!("cpu: tal {tal_cpu:.2} %, /proc {proc_cpu:.2} %");
    assert!(
        (tal_cpu - proc_cpu).abs() < 6.0,
        "cpu: tal {tal_cpu} vs /proc {proc_cpu}"
    );
    assert!(
        tal_cpu > 100.0 / f64::from(num_cpus()) * 0.2,
        "the busy second is visible: {tal_cpu}"
    );

    // Memory: each sample lies between the bracket's readings (± 2 points).
    let lo = before.mem_percent.min(after.mem_percent) - 2.0;
    let hi = before.mem_percent.max(after.mem_percent) + 2.0;
    for s in &samples {
        let m = s["memory_percent"].as_f64().unwrap();
        assert!(
            (lo..=hi).contains(&m),
            "memory_percent {m} outside [{lo}, {hi}]"
        );
    }
    // Per-core values exist for every CPU and bound the aggregate.
    let per = samples[5]["cpu_percent_per_core"].as_array().unwrap();
    assert_eq!(per.len() as u32, num_cpus());
}

/// CPUs as /proc/stat lists them (not the affinity mask of this process).
fn num_cpus() -> u32 {
    std::fs::read_to_string("/proc/stat")
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count() as u32
}
