//! Log benchmarks: durable appends with group commit, and inclusion proofs in
//! a 10,000,000-entry log. Run with `cargo bench -p verinfer-log`; results and
//! the machine are recorded in docs/benchmarks.md.
//!
//! `VERINFER_BENCH_DIR` chooses where the logs are written (default: the
//! system temp dir); it must be on the disk being measured, since every
//! acknowledged append is fsynced.

#![allow(missing_docs)] // criterion_group! generates undocumented items

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rand::{Rng, SeedableRng};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};
use verinfer_log::merkle::verify_inclusion;
use verinfer_log::Log;

const ENTRY: usize = 256;
const BIG_LOG: u64 = 10_000_000;

fn bench_dir() -> tempfile::TempDir {
    match std::env::var_os("VERINFER_BENCH_DIR") {
        Some(d) => tempfile::tempdir_in(d).expect("bench dir"),
        None => tempfile::tempdir().expect("temp dir"),
    }
}

fn appends(c: &mut Criterion) {
    let mut g = c.benchmark_group("durable_append_256B");
    g.throughput(Throughput::Elements(1));
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(8));
    for appenders in [1usize, 8, 64] {
        let dir = bench_dir();
        let log = Arc::new(Log::init(dir.path(), "bench.example/log").expect("init"));
        g.bench_with_input(
            BenchmarkId::from_parameter(appenders),
            &appenders,
            |b, &n| {
                b.iter_custom(|iters| {
                    let per = iters.div_ceil(n as u64);
                    let barrier = Arc::new(Barrier::new(n + 1));
                    let threads: Vec<_> = (0..n)
                        .map(|t| {
                            let log = log.clone();
                            let barrier = barrier.clone();
                            std::thread::spawn(move || {
                                let mut entry = vec![t as u8; ENTRY];
                                barrier.wait();
                                for i in 0..per {
                                    entry[..8].copy_from_slice(&i.to_le_bytes());
                                    log.append(entry.clone()).expect("append");
                                }
                            })
                        })
                        .collect();
                    barrier.wait();
                    let start = Instant::now();
                    for t in threads {
                        t.join().expect("appender");
                    }
                    // Report time per append actually made.
                    start
                        .elapsed()
                        .mul_f64(iters as f64 / (per * n as u64) as f64)
                })
            },
        );
    }
    g.finish();
}

fn proofs(c: &mut Criterion) {
    let dir = bench_dir();
    let log = Log::init(dir.path(), "bench.example/big").expect("init");
    let start = Instant::now();
    let mut entry = vec![0u8; ENTRY];
    let batch = 10_000u64;
    for b in 0..BIG_LOG / batch {
        let entries = (0..batch)
            .map(|i| {
                entry[..8].copy_from_slice(&(b * batch + i).to_le_bytes());
                entry.clone()
            })
            .collect();
        log.append_batch(entries).expect("append");
    }
    eprintln!("built a {BIG_LOG}-entry log in {:?}", start.elapsed());
    drop(log);
    let start = Instant::now();
    let log = Log::open(dir.path()).expect("reopen");
    eprintln!("reopened (recovered) it in {:?}", start.elapsed());
    let size = log.size();
    let root = log.root(size).expect("root");

    let mut g = c.benchmark_group("inclusion_proof_10M");
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    g.bench_function("generate", |b| {
        b.iter(|| {
            log.inclusion_proof(rng.gen_range(0..size), size)
                .expect("proof")
        })
    });
    let cases: Vec<_> = (0..1024)
        .map(|_| {
            let i = rng.gen_range(0..size);
            (
                i,
                log.leaf_hash(i).expect("leaf"),
                log.inclusion_proof(i, size).expect("proof"),
            )
        })
        .collect();
    let mut k = 0;
    g.bench_function("verify", |b| {
        b.iter(|| {
            let (i, leaf, proof) = &cases[k % cases.len()];
            k += 1;
            verify_inclusion(*i, size, leaf, proof, &root).expect("verifies")
        })
    });
    g.bench_function("generate_at_older_size", |b| {
        b.iter(|| {
            let s = rng.gen_range(1..=size);
            log.inclusion_proof(rng.gen_range(0..s), s).expect("proof")
        })
    });
    g.finish();
}

criterion_group!(benches, appends, proofs);
criterion_main!(benches);
