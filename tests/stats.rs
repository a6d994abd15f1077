//! Counter and footprint assertions: what `stats()` reports, and that
//! memory really goes back to the OS (`collect`, dropping an instance).
//!
//! Every assertion here depends on the allocator's own bookkeeping (a
//! `System`-backed stand-in, whose `stats()` is all zeros and whose `Drop`
//! frees nothing, fails all of them), so they live together in this file.
//! They only assert what any correct implementation satisfies:
//! `bytes_in_use` grows by at least the size of a live block and returns to
//! its old value once it is freed, memory is mapped before it is handed
//! out, what was freed can be unmapped, and repeating the same work does
//! not keep mapping memory.

mod common;

use core::alloc::{GlobalAlloc, Layout};
use std::thread;

use allocator_api2::alloc::Allocator;
use common::*;
use rulloc::{Rulloc, Stats};

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

/// Sizes covering every kind of block: bucket, large span, huge mapping.
fn sizes() -> Vec<usize> {
    let mut v = vec![1, 8, 24, 100, 1000, 5000, 70 * KIB, 300 * KIB, MIB + 1];
    v.push(BIG);
    if !cfg!(miri) {
        v.push(40 * MIB);
    }
    v
}

#[track_caller]
fn consistent(s: &Stats) {
    assert!(s.bytes_mapped >= s.bytes_in_use, "mapped < in use: {s:?}");
    assert!(
        s.bytes_in_use == 0 || s.segments > 0,
        "bytes in use without a segment: {s:?}"
    );
}

#[test]
fn first_allocation_maps_memory() {
    let a = Rulloc::default();
    let before = a.stats();
    consistent(&before);
    assert_eq!(before.bytes_in_use, 0, "{before:?}");
    let p = a.allocate_bytes(100, 8);
    let s = a.stats();
    consistent(&s);
    assert!(s.map_calls > 0, "{s:?}");
    assert!(s.bytes_in_use >= 100, "{s:?}");
    assert!(s.bytes_mapped >= 100, "{s:?}");
    assert!(s.segments >= 1, "{s:?}");
    assert!(s.regions >= 1, "a small block lives in a region: {s:?}");
    // SAFETY: `p` is live.
    unsafe { a.deallocate_bytes(p) };
    let after = a.stats();
    consistent(&after);
    assert_eq!(after.bytes_in_use, before.bytes_in_use, "{after:?}");
}

/// `bytes_in_use` rises by at least the size of each live block and
/// returns exactly to its old value when the block is freed, through every
/// API.
#[test]
fn bytes_in_use_tracks_every_size() {
    let a = Rulloc::default();
    let warm = a.allocate_bytes(8, 8); // So the first map is not counted below.
    for size in sizes() {
        for align in [8usize, 4096] {
            let base = a.stats().bytes_in_use;
            let p = a.allocate_bytes(size, align);
            let s = a.stats();
            consistent(&s);
            assert!(s.bytes_in_use >= base + size, "size {size}: {s:?}");
            // SAFETY: `p` is live and freed once.
            unsafe { a.deallocate_bytes(p) };
            assert_eq!(a.stats().bytes_in_use, base, "size {size} freed");

            let layout = Layout::from_size_align(size, align).unwrap();
            let b = a.allocate_zeroed(layout).unwrap();
            assert!(a.stats().bytes_in_use >= base + size);
            // SAFETY: `b` is live with `layout`.
            unsafe { a.deallocate(b.cast(), layout) };
            assert_eq!(
                a.stats().bytes_in_use,
                base,
                "size {size} freed (Allocator)"
            );

            // SAFETY: `layout` has a non-zero size.
            let g = unsafe { GlobalAlloc::alloc(&a, layout) };
            assert!(a.stats().bytes_in_use >= base + size);
            // SAFETY: `g` is live with `layout`.
            unsafe { a.dealloc(g, layout) };
            // Under Miri, `GlobalAlloc::dealloc` does not reuse blocks
            // smaller than a free-list link (see `Rulloc`'s `dealloc`).
            if cfg!(miri) && size < core::mem::size_of::<usize>() {
                continue;
            }
            assert_eq!(
                a.stats().bytes_in_use,
                base,
                "size {size} freed (GlobalAlloc)"
            );
        }
    }
    // SAFETY: `warm` is live.
    unsafe { a.deallocate_bytes(warm) };
    if !cfg!(miri) {
        // (Miri's GlobalAlloc path kept the blocks smaller than a link.)
        assert_eq!(a.stats().bytes_in_use, 0);
    }
}

/// Resizing keeps the count right in both directions.
#[test]
fn bytes_in_use_follows_reallocation() {
    let a = Rulloc::default();
    let base = a.stats().bytes_in_use;
    let mut p = a.allocate_bytes(100, 8);
    for new_size in [200, 5000, 300 * KIB, BIG, 3 * MIB, 70 * KIB, 16, 1] {
        // SAFETY: `p` is live; afterwards only the returned block is.
        p = unsafe { a.reallocate_bytes(p, new_size, 8) };
        let s = a.stats();
        consistent(&s);
        assert!(
            s.bytes_in_use >= base + new_size,
            "resized to {new_size}: {s:?}"
        );
    }
    // SAFETY: `p` is live.
    unsafe { a.deallocate_bytes(p) };
    assert_eq!(a.stats().bytes_in_use, base);
}

/// Two instances do not share counters.
#[test]
fn instances_count_separately() {
    let a = Rulloc::default();
    let b = Rulloc::<3>::with_bucket_sizes([8, 16, 24]);
    let p = a.allocate_bytes(MIB, 8);
    let q = b.allocate_bytes(16, 8);
    assert!(a.stats().bytes_in_use >= MIB);
    assert!(b.stats().bytes_in_use >= 16);
    assert!(b.stats().bytes_in_use < MIB, "{:?}", b.stats());
    // SAFETY: each block is live in its own instance.
    unsafe {
        a.deallocate_bytes(p);
        b.deallocate_bytes(q);
    }
    assert_eq!(a.stats().bytes_in_use, 0);
    assert_eq!(b.stats().bytes_in_use, 0);
}

/// After a peak, freeing everything and `collect()` gives the memory back
/// to the OS: at least the big block's bytes are unmapped.
#[test]
fn collect_returns_freed_memory() {
    let a = Rulloc::default();
    let big_size = scaled(64 * MIB, 4 * MIB);
    let big = a.allocate_bytes(big_size, 8);
    let smalls: Vec<*mut u8> = (0..scaled(20_000, 500))
        .map(|i| a.allocate_bytes(16 + i % 200, 8))
        .collect();
    let mediums: Vec<*mut u8> = (0..scaled(200, 10))
        .map(|_| a.allocate_bytes(100 * KIB, 8))
        .collect();
    let peak = a.stats();
    consistent(&peak);
    assert!(
        peak.bytes_mapped >= big_size + 100 * KIB * mediums.len(),
        "{peak:?}"
    );
    // SAFETY: every block is live and freed once.
    unsafe {
        a.deallocate_bytes(big);
        for p in smalls.into_iter().chain(mediums) {
            a.deallocate_bytes(p);
        }
    }
    a.collect();
    let after = a.stats();
    consistent(&after);
    assert_eq!(after.bytes_in_use, 0, "{after:?}");
    assert!(
        after.unmap_calls > peak.unmap_calls,
        "nothing unmapped: {after:?}"
    );
    assert!(
        after.bytes_mapped + big_size <= peak.bytes_mapped,
        "freed memory still mapped after collect: peak {peak:?}, after {after:?}"
    );
}

/// Allocating and freeing the same blocks again and again reuses memory:
/// it does not map memory on every round (no thrashing) and the footprint
/// does not grow.
///
/// Free memory is given back once it stayed unused for the purge delay, so
/// the delay is set far beyond the test's duration: otherwise a slow round
/// (a loaded machine, Miri) would rightly see it unmapped and mapped again.
#[test]
fn reuse_does_not_thrash_or_grow() {
    let a = Rulloc::default();
    a.set_purge_delay_ms(10 * 60 * 1000);
    let round = |a: &Rulloc| {
        let ptrs: Vec<*mut u8> = [8usize, 64, 500, 4000, 40 * KIB, 300 * KIB, MIB]
            .iter()
            .flat_map(|&s| (0..8).map(move |_| s))
            .map(|s| a.allocate_bytes(s, 8))
            .collect();
        for p in ptrs {
            // SAFETY: each block is live and freed once.
            unsafe { a.deallocate_bytes(p) };
        }
    };
    round(&a);
    let first = a.stats();
    let rounds = scaled(100, 5);
    for _ in 0..rounds {
        round(&a);
    }
    let last = a.stats();
    consistent(&last);
    assert_eq!(last.bytes_in_use, 0);
    assert!(
        last.map_calls - first.map_calls <= 4,
        "{rounds} identical rounds mapped {} more times: first {first:?}, last {last:?}",
        last.map_calls - first.map_calls
    );
    assert!(
        last.bytes_mapped <= first.bytes_mapped * 2,
        "first {first:?}, last {last:?}"
    );
}

/// A block handed from one thread to another.
struct Block(*mut u8);

// SAFETY: the block is owned by whoever holds it; the allocator is `Sync`.
unsafe impl Send for Block {}
// SAFETY: shared references to a `Block` only read the pointer value.
unsafe impl Sync for Block {}

/// Blocks freed by threads other than their allocating one are all
/// accounted for once the owners collected them.
#[test]
fn cross_thread_frees_are_accounted() {
    let a = Rulloc::default();
    let n = scaled(5000, 100);
    let blocks: Vec<Block> = thread::scope(|s| {
        (0..4)
            .map(|t| {
                let a = &a;
                s.spawn(move || {
                    (0..n)
                        .map(|i| Block(a.allocate_bytes(8 + (i * 7 + t) % 3000, 8)))
                        .collect::<Vec<_>>()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert!(a.stats().bytes_in_use >= 8 * blocks.len());
    thread::scope(|s| {
        let mut handles = Vec::new();
        for chunk in blocks.chunks(blocks.len() / 3 + 1) {
            let a = &a;
            handles.push(s.spawn(move || {
                for b in chunk {
                    // SAFETY: each block is live and freed once.
                    unsafe { a.deallocate_bytes(b.0) };
                }
            }));
        }
        // By handle, so the exit hooks have run before `a` is dropped.
        join_all(handles);
    });
    a.collect();
    let s = a.stats();
    consistent(&s);
    assert_eq!(s.bytes_in_use, 0, "{s:?}");
}

#[test]
fn stats_format_with_debug() {
    let a = Rulloc::default();
    let p = a.allocate_bytes(10, 8);
    let s = a.stats();
    let text = format!("{s:?}");
    for field in [
        "bytes_in_use",
        "bytes_mapped",
        "map_calls",
        "unmap_calls",
        "segments",
        "regions",
    ] {
        assert!(text.contains(field), "{text}");
    }
    // SAFETY: `p` is live.
    unsafe { a.deallocate_bytes(p) };
    assert!(s.bytes_in_use > 0, "{s:?}");
}
