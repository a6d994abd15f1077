//! Criterion microbenchmarks of the fast paths, Rulloc next to the platform
//! allocator and mimalloc:
//!
//! * `alloc_free/<size>`: one allocation and its free, 8, 32 and 256 bytes
//!   (a byte is written in between, so the block is really handed out);
//! * `realloc_growth`: a buffer grown from 8 B to 1 MiB by doubling through
//!   `realloc` (a byte written at the end of every size), then freed;
//! * `cross_thread_free`: batches of 256 blocks of 32 bytes allocated by
//!   this thread and freed by another, pipelined (the throughput of the
//!   pair, remote frees included).
//!
//! Each allocator is called directly through its `GlobalAlloc`
//! implementation (a `static` instance each); the benchmark process's own
//! global allocator is the platform's, for criterion's bookkeeping.
//!
//! ```sh
//! cargo bench -p rulloc-bench --bench fast_paths -- --quick
//! cargo bench -p rulloc-bench --bench fast_paths -- alloc_free/32
//! ```

use std::alloc::{handle_alloc_error, GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

static RULLOC: rulloc::Rulloc = rulloc::Rulloc::new();
static MIMALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;
static SYSTEM: System = System;

/// The sizes of `alloc_free`.
const SMALL_SIZES: [usize; 3] = [8, 32, 256];
/// `realloc_growth` doubles from this size...
const GROWTH_FROM: usize = 8;
/// ... to this one.
const GROWTH_TO: usize = 1 << 20;
/// Blocks per batch in `cross_thread_free`.
const BATCH: usize = 256;
/// Size of those blocks.
const BATCH_BLOCK: usize = 32;
/// Batches in flight between the two threads.
const IN_FLIGHT: usize = 4;

fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, 8).expect("valid layout")
}

/// One allocation and its free through `a`.
#[inline]
fn alloc_free<A: GlobalAlloc>(a: &A, layout: Layout) {
    // SAFETY: the layout is not zero-sized; the block is written within its
    // size and freed once, with the layout it was allocated with.
    unsafe {
        let p = black_box(a.alloc(layout));
        if p.is_null() {
            handle_alloc_error(layout);
        }
        p.write(1);
        a.dealloc(p, layout);
    }
}

fn bench_alloc_free(c: &mut Criterion) {
    let mut group = c.benchmark_group("alloc_free");
    group.throughput(Throughput::Elements(1));
    for size in SMALL_SIZES {
        let l = layout(size);
        group.bench_function(BenchmarkId::new("rulloc", size), |b| {
            b.iter(|| alloc_free(&RULLOC, l))
        });
        group.bench_function(BenchmarkId::new("system", size), |b| {
            b.iter(|| alloc_free(&SYSTEM, l))
        });
        group.bench_function(BenchmarkId::new("mimalloc", size), |b| {
            b.iter(|| alloc_free(&MIMALLOC, l))
        });
    }
    group.finish();
}

/// A buffer grown by doubling through `realloc`, then freed.
fn realloc_growth<A: GlobalAlloc>(a: &A) {
    let mut l = layout(GROWTH_FROM);
    // SAFETY: the layout is not zero-sized; every `realloc` gets the live
    // block and its current layout, and a new size no smaller than 8 that
    // is a multiple of the alignment; writes stay inside the current size;
    // the final free uses the final layout.
    unsafe {
        let mut p = a.alloc(l);
        if p.is_null() {
            handle_alloc_error(l);
        }
        p.write(1);
        while l.size() < GROWTH_TO {
            let new = layout(l.size() * 2);
            p = a.realloc(p, l, new.size());
            if p.is_null() {
                handle_alloc_error(new);
            }
            l = new;
            p.add(l.size() - 1).write(2);
        }
        a.dealloc(black_box(p), l);
    }
}

fn bench_realloc_growth(c: &mut Criterion) {
    let mut group = c.benchmark_group("realloc_growth");
    // One element = one call (the allocation, every realloc, the free).
    let calls = (GROWTH_TO / GROWTH_FROM).trailing_zeros() as u64 + 2;
    group.throughput(Throughput::Elements(calls));
    group.bench_function("rulloc", |b| b.iter(|| realloc_growth(&RULLOC)));
    group.bench_function("system", |b| b.iter(|| realloc_growth(&SYSTEM)));
    group.bench_function("mimalloc", |b| b.iter(|| realloc_growth(&MIMALLOC)));
    group.finish();
}

/// `iters` batches allocated here and freed by a second thread; the time
/// until the last one is freed. The batches' pointer vectors go back and
/// forth, so the platform allocator does not run inside the measurement.
fn cross_thread_free<A: GlobalAlloc + Sync>(a: &'static A, iters: u64) -> Duration {
    let l = layout(BATCH_BLOCK);
    let (to_freer, batches) = mpsc::sync_channel::<Vec<usize>>(IN_FLIGHT);
    let (to_owner, empties) = mpsc::channel::<Vec<usize>>();
    for _ in 0..IN_FLIGHT + 1 {
        to_owner
            .send(Vec::with_capacity(BATCH))
            .expect("receiver alive");
    }
    let freer = thread::spawn(move || {
        for mut batch in batches {
            for p in batch.drain(..) {
                // SAFETY: `p` is a live block of layout `l` from `a`,
                // allocated by the other thread and freed once, here.
                unsafe { a.dealloc(p as *mut u8, l) };
            }
            // The owner may have stopped listening at the end.
            let _ = to_owner.send(batch);
        }
    });
    let start = Instant::now();
    for _ in 0..iters {
        let mut batch = empties.recv().expect("freer alive");
        for _ in 0..BATCH {
            // SAFETY: the layout is not zero-sized; the block is written
            // within its size.
            let p = unsafe {
                let p = a.alloc(l);
                if p.is_null() {
                    handle_alloc_error(l);
                }
                p.write(1);
                p
            };
            batch.push(p as usize);
        }
        to_freer.send(batch).expect("freer alive");
    }
    drop(to_freer);
    freer.join().expect("freer thread");
    start.elapsed()
}

fn bench_cross_thread_free(c: &mut Criterion) {
    let mut group = c.benchmark_group("cross_thread_free");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("rulloc", |b| {
        b.iter_custom(|iters| cross_thread_free(&RULLOC, iters))
    });
    group.bench_function("system", |b| {
        b.iter_custom(|iters| cross_thread_free(&SYSTEM, iters))
    });
    group.bench_function("mimalloc", |b| {
        b.iter_custom(|iters| cross_thread_free(&MIMALLOC, iters))
    });
    group.finish();
}

criterion_group! {
    name = fast_paths;
    // Short warm-up and measurement: the whole file runs in about a minute
    // (`-- --quick`: well under one).
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = bench_alloc_free, bench_realloc_growth, bench_cross_thread_free
}
criterion_main!(fast_paths);
