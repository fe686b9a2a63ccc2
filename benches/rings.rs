//! tal's SPSC ring (`src/ring.rs`: `rtrb` behind tal's API since the
//! hand-written ring lost this comparison, so "tal" now shows what the
//! wrapper costs) side by side with `rtrb` itself and crossbeam's
//! `ArrayQueue` (MPMC), on what tal does with it:
//! - `same_thread/*`: one push and one pop of the payloads tal moves: the
//!   proc agent's sample (`ProcSample`, about 1 KiB by value), a GPU poll
//!   (`GpuSample`, several KiB), and a `u64`;
//! - `cross_thread/*`: a producer thread pushing 100 000 `u64`s (spinning
//!   while full) to a consumer thread popping them, through a 1024-slot
//!   ring: the cost of the cache-line traffic between two cores.
//!
//! Run: `cargo bench --bench rings`. The decision it backs is in
//! `src/ring.rs`'s module doc.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use std::time::{Duration, Instant};
use tal::agent::gpu::GpuSample;
use tal::agent::proc::ProcSample;

fn same_thread<T: Clone + Send + 'static>(c: &mut Criterion, name: &str, v: T) {
    let mut g = c.benchmark_group(format!("same_thread/{name}"));
    {
        let (mut p, mut q) = tal::ring::channel::<T>(64);
        g.bench_function(BenchmarkId::from_parameter("tal"), |b| {
            b.iter(|| {
                assert!(p.push(black_box(v.clone())).is_ok());
                black_box(q.pop().unwrap());
            })
        });
    }
    {
        let (mut p, mut q) = rtrb::RingBuffer::<T>::new(64);
        g.bench_function(BenchmarkId::from_parameter("rtrb"), |b| {
            b.iter(|| {
                assert!(p.push(black_box(v.clone())).is_ok());
                black_box(q.pop().unwrap());
            })
        });
    }
    {
        let q = crossbeam_queue::ArrayQueue::<T>::new(64);
        g.bench_function(BenchmarkId::from_parameter("crossbeam_array_queue"), |b| {
            b.iter(|| {
                assert!(q.push(black_box(v.clone())).is_ok());
                black_box(q.pop().unwrap());
            })
        });
    }
    g.finish();
}

const N: u64 = 100_000;

/// Time for `N` values from a producer thread to this one.
fn transfer(
    push: impl FnMut(u64) -> bool + Send + 'static,
    mut pop: impl FnMut() -> Option<u64>,
) -> Duration {
    let mut push = push;
    let t0 = Instant::now();
    let producer = std::thread::spawn(move || {
        for i in 0..N {
            while !push(i) {
                std::hint::spin_loop();
            }
        }
    });
    let mut expect = 0;
    while expect < N {
        match pop() {
            Some(v) => {
                assert_eq!(v, expect);
                expect += 1;
            }
            None => std::hint::spin_loop(),
        }
    }
    producer.join().unwrap();
    t0.elapsed()
}

fn cross_thread(c: &mut Criterion) {
    let mut g = c.benchmark_group("cross_thread/100k_u64");
    g.sample_size(20);
    g.bench_function(BenchmarkId::from_parameter("tal"), |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    let (mut p, mut q) = tal::ring::channel::<u64>(1024);
                    transfer(move |v| p.push(v).is_ok(), move || q.pop())
                })
                .sum()
        })
    });
    g.bench_function(BenchmarkId::from_parameter("rtrb"), |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    let (mut p, mut q) = rtrb::RingBuffer::<u64>::new(1024);
                    transfer(move |v| p.push(v).is_ok(), move || q.pop().ok())
                })
                .sum()
        })
    });
    g.bench_function(BenchmarkId::from_parameter("crossbeam_array_queue"), |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    let q = std::sync::Arc::new(crossbeam_queue::ArrayQueue::<u64>::new(1024));
                    let qp = std::sync::Arc::clone(&q);
                    transfer(move |v| qp.push(v).is_ok(), move || q.pop())
                })
                .sum()
        })
    });
    g.finish();
}

fn payloads(c: &mut Criterion) {
    same_thread(c, "proc_sample", ProcSample::default());
    same_thread(c, "gpu_sample", GpuSample::default());
    same_thread(c, "u64", 7u64);
}

criterion_group!(benches, payloads, cross_thread);
criterion_main!(benches);
