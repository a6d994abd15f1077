//! One `Rulloc` instance shared by several threads: allocations and frees
//! race, blocks are freed by threads other than the one that allocated
//! them, threads exit while their blocks are still live (and others free
//! them later), and every block's content is checked before it is freed.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Mutex;
use std::thread;

use allocator_api2::boxed::Box as ABox;
use allocator_api2::vec::Vec as AVec;
use common::*;
use rulloc::Rulloc;

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

/// Threads per test (the machine running CI has 2 cores; 4 threads still
/// interleave through preemption).
const THREADS: usize = 4;

/// A block in flight between threads.
#[derive(Clone, Copy, Debug)]
struct Shared {
    addr: *mut u8,
    size: usize,
    id: u64,
}

// SAFETY: a `Shared` is an owned block of a `Sync` allocator: whoever holds
// it is the only one using it, whichever thread that is.
unsafe impl Send for Shared {}

impl Shared {
    fn ptr(&self) -> *mut u8 {
        self.addr
    }
}

static SMALL: Rulloc<3> = Rulloc::with_bucket_sizes([8, 16, 24]);

/// Every thread allocates blocks of random sizes and puts them in a shared
/// pool; every thread also takes random blocks out of the pool (most of
/// them allocated by another thread), checks and frees them.
fn shared_pool<const N: usize>(a: &Rulloc<N>, iterations: usize, big: usize) {
    let pool: Mutex<Vec<Shared>> = Mutex::new(Vec::new());
    let ids = AtomicU64::new(0);
    thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let pool = &pool;
                let ids = &ids;
                s.spawn(move || {
                    let mut rng = XorShift::new(100 + t as u64);
                    let mut mine: Vec<Shared> = Vec::new();
                    for _ in 0..iterations {
                        let size = match rng.below(40) {
                            0 => rng.range(big / 2, big),
                            1..=4 => rng.range(16 * KIB, 300 * KIB),
                            _ => rng.range(8, 2 * KIB),
                        };
                        let align = if rng.chance(1, 10) {
                            1 << rng.range(4, 12)
                        } else {
                            8
                        };
                        let p = a.allocate_bytes(size, align);
                        assert_aligned(p, align, "shared pool");
                        let id = ids.fetch_add(1, Ordering::Relaxed);
                        // SAFETY: `p` has `size` bytes.
                        unsafe { fill(p, size, id) };
                        let b = Shared { addr: p, size, id };
                        if rng.chance(1, 4) {
                            mine.push(b);
                        } else {
                            pool.lock().unwrap().push(b);
                        }
                        // Free one from the pool (likely someone else's).
                        let taken = {
                            let mut pool = pool.lock().unwrap();
                            if pool.is_empty() {
                                None
                            } else {
                                let i = rng.below(pool.len());
                                Some(pool.swap_remove(i))
                            }
                        };
                        if let Some(b) = taken {
                            // SAFETY: `b` left the pool, so this thread owns it;
                            // it is live with `b.size` bytes and freed once.
                            unsafe {
                                check(b.ptr(), b.size, b.id, "block from the pool");
                                a.deallocate_bytes(b.ptr());
                            }
                        }
                        // Resize one of ours now and then.
                        if !mine.is_empty() && rng.chance(1, 8) {
                            let i = rng.below(mine.len());
                            let b = mine[i];
                            let new_size = rng.range(1, 4 * KIB).max(b.size / 2);
                            // SAFETY: `b` is owned by this thread and live; after
                            // the call only the returned block is.
                            let q = unsafe {
                                check(b.ptr(), b.size, b.id, "before resize");
                                a.reallocate_bytes(b.ptr(), new_size, 8)
                            };
                            assert_aligned(q, 8, "resized");
                            // SAFETY: `q` has `new_size` bytes, the first
                            // `min(old, new)` preserved.
                            unsafe {
                                check(q, b.size.min(new_size), b.id, "after resize");
                                fill(q, new_size, b.id);
                            }
                            mine[i] = Shared {
                                addr: q,
                                size: new_size,
                                id: b.id,
                            };
                        }
                    }
                    // Hand half of our own blocks to the others; free the rest.
                    for (i, b) in mine.into_iter().enumerate() {
                        if i % 2 == 0 {
                            pool.lock().unwrap().push(b);
                        } else {
                            // SAFETY: owned by this thread, live, freed once.
                            unsafe {
                                check(b.ptr(), b.size, b.id, "own block");
                                a.deallocate_bytes(b.ptr());
                            }
                        }
                    }
                })
            })
            .collect();
        join_all(handles);
    });
    // The threads are gone (joined, so their exit hooks have run); the main
    // thread frees what they left.
    for b in pool.into_inner().unwrap() {
        // SAFETY: every thread has exited, so the main thread owns the pool;
        // each block is live and freed once.
        unsafe {
            check(b.ptr(), b.size, b.id, "left in the pool");
            a.deallocate_bytes(b.ptr());
        }
    }
}

#[test]
fn shared_instance_cross_thread_frees() {
    let a = Rulloc::default();
    shared_pool(&a, scaled(4000, 25), scaled(4 * MIB, 512 * KIB));
}

#[test]
fn shared_custom_instance_cross_thread_frees() {
    let a = Rulloc::<3>::with_bucket_sizes([8, 16, 24]);
    shared_pool(&a, scaled(4000, 25), scaled(2 * MIB, 512 * KIB));
}

#[test]
fn static_instance_cross_thread_frees() {
    shared_pool(&SMALL, scaled(2000, 20), scaled(2 * MIB, 512 * KIB));
}

/// Producer / consumer through a channel: every block is allocated by one
/// thread and freed by another, through the `Allocator` trait (`Box` and
/// `Vec` in `&Rulloc`).
#[test]
fn boxes_and_vecs_cross_threads() {
    let a = Rulloc::default();
    let n = scaled(20_000, 100);
    thread::scope(|s| {
        let (to_b, from_a) = mpsc::sync_channel::<ABox<[u64; 4], &Rulloc>>(64);
        let (to_a, from_b) = mpsc::sync_channel::<AVec<u32, &Rulloc>>(64);
        let a = &a;
        let producer_boxes = s.spawn(move || {
            for i in 0..n as u64 {
                to_b.send(ABox::new_in([i, i + 1, i + 2, i + 3], a))
                    .unwrap();
            }
        });
        let producer_vecs = s.spawn(move || {
            for i in 0..n as u32 {
                let mut v = AVec::with_capacity_in((i % 64) as usize, a);
                v.extend(0..i % 64);
                to_a.send(v).unwrap();
            }
        });
        let consumer_boxes = s.spawn(move || {
            for (i, b) in from_a.iter().enumerate() {
                let i = i as u64;
                assert_eq!(*b, [i, i + 1, i + 2, i + 3]);
            }
        });
        let consumer_vecs = s.spawn(move || {
            for (i, v) in from_b.iter().enumerate() {
                assert!(v.iter().copied().eq(0..(i as u32 % 64)));
            }
        });
        join_all(vec![
            producer_boxes,
            producer_vecs,
            consumer_boxes,
            consumer_vecs,
        ]);
    });
}

/// Threads exit while their blocks are live; other threads, spawned later,
/// free them and allocate again (the exited threads' memory must still be
/// usable and reusable).
#[test]
fn blocks_outlive_their_thread() {
    let a = Rulloc::default();
    let per_thread = scaled(3000, 20);
    let mut all: Vec<Shared> = Vec::new();
    for generation in 0..scaled(3, 2) as u64 {
        let handed: Vec<Vec<Shared>> = thread::scope(|s| {
            let handles: Vec<_> = (0..THREADS as u64)
                .map(|t| {
                    let a = &a;
                    s.spawn(move || {
                        let mut rng = XorShift::new(generation * 10 + t);
                        (0..per_thread)
                            .map(|i| {
                                let size = rng.size(scaled(256 * KIB, 64 * KIB)).max(1);
                                let p = a.allocate_bytes(size, 8);
                                assert_aligned(p, 8, "outliving block");
                                let id = (generation << 40) | (t << 32) | i as u64;
                                // SAFETY: `p` has `size` bytes.
                                unsafe { fill(p, size, id) };
                                Shared { addr: p, size, id }
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        all.extend(handed.into_iter().flatten());
        // A new set of threads frees the previous generations' blocks.
        let chunks: Vec<Vec<Shared>> = all
            .chunks(all.len() / THREADS + 1)
            .map(|c| c.to_vec())
            .collect();
        all.clear();
        thread::scope(|s| {
            let mut handles = Vec::new();
            for chunk in chunks {
                let a = &a;
                handles.push(s.spawn(move || {
                    for b in chunk {
                        // SAFETY: the allocating thread has exited and handed
                        // the block over; it is live and freed once.
                        unsafe {
                            check(b.ptr(), b.size, b.id, "block of an exited thread");
                            a.deallocate_bytes(b.ptr());
                        }
                    }
                }));
            }
            join_all(handles);
        });
    }
}

/// A `hashbrown` map per thread, all in the same instance, while the main
/// thread also allocates.
#[test]
fn hash_maps_on_many_threads() {
    let a = Rulloc::<3>::with_bucket_sizes([8, 16, 24]);
    let n = scaled(20_000, 200) as u64;
    thread::scope(|s| {
        let mut handles = Vec::new();
        for t in 0..THREADS as u64 {
            let a = &a;
            handles.push(s.spawn(move || {
                let mut map = hashbrown::HashMap::new_in(a);
                for i in 0..n {
                    map.insert(i * THREADS as u64 + t, ABox::new_in(i, a));
                }
                for i in 0..n {
                    assert_eq!(*map[&(i * THREADS as u64 + t)], i);
                }
            }));
        }
        let mut v = AVec::new_in(&a);
        v.extend(0..n * 10);
        assert_eq!(v.len() as u64, n * 10);
        join_all(handles);
    });
}
