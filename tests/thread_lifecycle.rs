//! Thread lifecycle with Rulloc as the global allocator: heaps bound to
//! threads, adopted after the threads exit, blocks handed across threads,
//! allocation from thread-local destructors, and memory bounded by the number
//! of concurrent threads rather than the number of threads ever created.

use std::cell::RefCell;
use std::sync::mpsc;
use std::thread;

#[global_allocator]
static ALLOCATOR: rulloc::Rulloc = rulloc::Rulloc::new();

fn pattern(seed: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (seed.wrapping_mul(31).wrapping_add(i) % 251) as u8)
        .collect()
}

struct AllocatesOnDrop(RefCell<Vec<String>>);

impl Drop for AllocatesOnDrop {
    fn drop(&mut self) {
        // Allocate, use and free during thread teardown.
        let mut joined = String::new();
        for s in self.0.borrow().iter() {
            joined.push_str(s);
        }
        let copy: Vec<u8> = joined.bytes().rev().collect();
        assert_eq!(copy.len(), joined.len());
        let boxed = vec![0u64; 10_000].into_boxed_slice();
        assert_eq!(boxed.iter().sum::<u64>(), 0);
    }
}

thread_local! {
    static TEARDOWN: AllocatesOnDrop = const { AllocatesOnDrop(RefCell::new(Vec::new())) };
}

#[test]
fn thread_local_destructors_can_allocate() {
    let rounds = if cfg!(miri) { 3 } else { 200 };
    for round in 0..rounds {
        thread::spawn(move || {
            TEARDOWN.with(|t| {
                for i in 0..50 {
                    t.0.borrow_mut().push(format!("round {round} item {i}"));
                }
            });
        })
        .join()
        .unwrap();
    }
}

/// Producer threads allocate blocks of 8 B .. 4 MiB filled with a pattern;
/// consumer threads check every byte before freeing. Every free of a
/// producer's block is remote.
#[test]
fn producers_and_consumers_check_every_block() {
    let per_producer = if cfg!(miri) { 15 } else { 3_000 };
    let producers = 2;
    let consumers = 2;
    let (sender, receiver) = mpsc::sync_channel::<(usize, Vec<u8>)>(256);
    let receiver = std::sync::Arc::new(std::sync::Mutex::new(receiver));
    thread::scope(|scope| {
        for p in 0..producers {
            let sender = sender.clone();
            scope.spawn(move || {
                // A 64-bit LCG on every target (usize is 32 bits on i686).
                let mut seed: u64 = p as u64 * 1_000_003 + 1;
                for i in 0..per_producer {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407)
                        >> 1;
                    let random = (seed >> 20) as usize;
                    // Under Miri (where `pattern` and the check run byte by
                    // byte in the interpreter) one block per producer is up
                    // to 256 KiB, the others up to 1 KiB, and none is huge.
                    let size = match i % 100 {
                        0 if !cfg!(miri) => 1 + random % (4 << 20),
                        1 => 1 + random % (256 << 10),
                        2..=9 if !cfg!(miri) => 1 + random % (256 << 10),
                        _ => 8 + random % 1024,
                    };
                    let seed = seed as usize;
                    sender.send((seed, pattern(seed, size))).unwrap();
                }
            });
        }
        drop(sender);
        for _ in 0..consumers {
            let receiver = receiver.clone();
            scope.spawn(move || loop {
                let next = receiver.lock().unwrap().recv();
                match next {
                    Ok((seed, block)) => assert_eq!(block, pattern(seed, block.len())),
                    Err(_) => break,
                }
            });
        }
    });
    assert!(ALLOCATOR.stats().remote_frees > 0);
}

/// Many threads share blocks through a common pool, freeing each other's
/// blocks while allocating their own.
#[test]
fn threads_free_each_others_blocks() {
    let threads = 4;
    let rounds = if cfg!(miri) { 20 } else { 20_000 };
    let pool = std::sync::Mutex::new(Vec::<(usize, Vec<u8>)>::new());
    thread::scope(|scope| {
        for t in 0..threads {
            let pool = &pool;
            scope.spawn(move || {
                for i in 0..rounds {
                    let seed = t * 1_000_000 + i;
                    // Under Miri, `pattern` runs byte by byte: smaller blocks.
                    let block =
                        pattern(seed, 1 + (seed * 37) % if cfg!(miri) { 600 } else { 3000 });
                    let taken = {
                        let mut pool = pool.lock().unwrap();
                        pool.push((seed, block));
                        if pool.len() > 64 {
                            let index = (seed * 13) % pool.len();
                            Some(pool.swap_remove(index))
                        } else {
                            None
                        }
                    };
                    if let Some((seed, block)) = taken {
                        assert_eq!(block, pattern(seed, block.len()));
                    }
                }
            });
        }
    });
    for (seed, block) in pool.into_inner().unwrap() {
        assert_eq!(block, pattern(seed, block.len()));
    }
}

/// Blocks freed by another thread into regions their owner parked as full
/// reach the owner through its delayed list, and are handed out again
/// intact (a regression test: the secure build once left their live bits
/// set and reported a corrupted free list on reuse).
#[test]
fn remote_frees_into_full_regions_are_reused() {
    let count = if cfg!(miri) { 600 } else { 20_000 };
    let (to_freer, from_owner) = mpsc::channel::<Vec<Box<[u8; 64]>>>();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    thread::scope(|scope| {
        scope.spawn(move || {
            for round in 0..3u8 {
                // Fill whole regions, so they are parked full...
                let blocks: Vec<Box<[u8; 64]>> =
                    (0..count).map(|_| Box::new([round; 64])).collect();
                // ...have another thread free every block...
                to_freer.send(blocks).unwrap();
                done_rx.recv().unwrap();
                // ...and allocate them all again, checking nothing overlaps.
                let again: Vec<Box<[u8; 64]>> =
                    (0..count).map(|i| Box::new([i as u8; 64])).collect();
                for (i, block) in again.iter().enumerate() {
                    assert!(block.iter().all(|&b| b == i as u8));
                }
            }
        });
        scope.spawn(move || {
            for blocks in from_owner {
                drop(blocks);
                done_tx.send(()).unwrap();
            }
        });
    });
}
