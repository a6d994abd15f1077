//! Dropping and moving instances.
//!
//! Dropping a `Rulloc` with live blocks is allowed: the drop gives all its
//! memory back, and the blocks must simply not be touched afterwards. (That
//! the memory really returns to the OS is checked in `tests/stats.rs`.)
//! Under Miri these tests also prove the drop frees every backing
//! allocation: Miri reports leaked memory at exit.

mod common;

use std::thread;

use allocator_api2::boxed::Box as ABox;
use allocator_api2::vec::Vec as AVec;
use common::*;
use rulloc::Rulloc;

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

/// Sizes of every kind of block (under Miri without the largest: the huge
/// path is still taken through the 64 KiB alignment below).
fn sizes() -> Vec<usize> {
    if cfg!(miri) {
        vec![1, 16, 24, 200, 5000, 70 * KIB]
    } else {
        vec![1, 16, 24, 200, 5000, 70 * KIB, 300 * KIB, BIG]
    }
}

#[test]
fn drop_with_live_allocations() {
    let a = Rulloc::default();
    for (i, size) in sizes().into_iter().enumerate() {
        for align in [8usize, 4096, 64 * KIB] {
            let p = a.allocate_bytes(size, align);
            assert_aligned(p, align, "live at drop");
            // SAFETY: `p` has `size` bytes.
            unsafe { fill(p, size, i as u64) };
        }
    }
    drop(a);

    let b = Rulloc::<3>::with_bucket_sizes([8, 16, 24]);
    {
        let mut v = AVec::new_in(&b);
        v.extend(0..scaled(100_000, 500) as u64);
        let boxed = ABox::new_in([0u8; 512], &b);
        // Leak both: their memory goes when `b` is dropped.
        core::mem::forget(v);
        core::mem::forget(boxed);
    }
    drop(b);
}

#[test]
fn create_and_drop_many_instances() {
    for round in 0..scaled(200, 2) as u64 {
        let a = Rulloc::default();
        let mut live = Vec::new();
        for (i, size) in sizes().into_iter().enumerate() {
            let p = a.allocate_bytes(size, 16);
            assert_aligned(p, 16, "fresh instance");
            // SAFETY: `p` has `size` bytes.
            unsafe { fill(p, size, round * 10 + i as u64) };
            live.push((p, size, round * 10 + i as u64));
        }
        // Free half, check the rest, drop the instance with them live.
        for (j, &(p, size, id)) in live.iter().enumerate() {
            // SAFETY: `p` is live with `size` bytes; odd ones freed once.
            unsafe {
                check(p, size, id, "before drop");
                if j % 2 == 1 {
                    a.deallocate_bytes(p);
                }
            }
        }
        drop(a);
    }
}

/// Blocks live in OS mappings, not in the `Rulloc` value: moving the value
/// (into a `Box`, a `Vec`, another variable) keeps its blocks valid and
/// freeable through the moved value.
#[test]
fn moving_an_instance_keeps_its_blocks() {
    let a = Rulloc::default();
    let ptrs: Vec<(*mut u8, usize)> = sizes()
        .into_iter()
        .map(|size| {
            let p = a.allocate_bytes(size, 8);
            assert_aligned(p, 8, "before move");
            // SAFETY: `p` has `size` bytes.
            unsafe { fill(p, size, size as u64) };
            (p, size)
        })
        .collect();
    let boxed = Box::new(a);
    let mut instances = vec![*boxed];
    instances.reserve(100); // Moves the instance again.
    let moved = instances.pop().unwrap();
    for (p, size) in ptrs {
        // SAFETY: `p` is live in the moved instance; freed once.
        unsafe {
            check(p, size, size as u64, "after move");
            assert!(moved.usable_size(p) >= size);
            moved.deallocate_bytes(p);
        }
    }
    let p = moved.allocate_bytes(MIB, 8);
    assert_aligned(p, 8, "after move");
    // SAFETY: `p` is live.
    unsafe { moved.deallocate_bytes(p) };
}

/// An instance used by several threads (one heap each) is dropped with
/// blocks from all of them still live.
#[test]
fn drop_after_many_threads_used_it() {
    let a = Rulloc::<3>::with_bucket_sizes([8, 16, 24]);
    thread::scope(|s| {
        let mut handles = Vec::new();
        for t in 0..4 {
            let a = &a;
            handles.push(s.spawn(move || {
                for i in 0..scaled(2000, 30) {
                    let size = 8 + (i * 13 + t) % 2000;
                    let p = a.allocate_bytes(size, 8);
                    assert_aligned(p, 8, "thread block");
                    if i % 3 == 0 {
                        // SAFETY: `p` is live and freed once.
                        unsafe { a.deallocate_bytes(p) };
                    }
                }
            }));
        }
        // Joined by handle: their exit hooks have given the heaps back.
        join_all(handles);
    });
    drop(a);
}
