//! Thread exit on every platform: the exit hook (a pthread key destructor
//! on Unix, a fiber-local storage callback on Windows) runs once for every
//! thread that bound a heap, gives that heap's memory back, and leaves the
//! heap to the next thread, even when thread-local destructors allocate
//! during teardown, after the hook.
//!
//! Each test uses its own allocator instance, so the counters it reads are
//! its own: a spawned thread binds to the first instance it allocates from.
//!
//! Not under Miri: there the platform backend is `std::alloc::System`, with
//! no OS purge of its own to test, and every thread exit zeroes whole
//! segments byte by byte, minutes per test.

use std::cell::Cell;
use std::thread;

use rulloc::Rulloc;

const THREADS: usize = 100;
/// Blocks of 32..96 KiB the memory test allocates (about 16 MiB).
const BLOCKS: usize = 256;

/// Allocates `count` small blocks of assorted sizes, writes them, frees
/// every other one, and returns the rest (to be freed by another thread).
fn churn(allocator: &Rulloc, count: usize, seed: usize) -> Vec<usize> {
    let mut kept = Vec::new();
    for i in 0..count {
        let size = 8 + (seed * 31 + i * 17) % 2000;
        let block = allocator.allocate_bytes(size, 8);
        assert!(!block.is_null());
        // SAFETY: a live block of `size` bytes.
        unsafe { block.write_bytes(i as u8, size) };
        if i % 2 == 0 {
            // SAFETY: allocated above, freed once.
            unsafe { allocator.deallocate_bytes(block) };
        } else {
            kept.push(block.expose_provenance());
        }
    }
    kept
}

/// Threads created one after another reuse one heap: each exit runs the
/// hook (`heaps_abandoned`) and the next thread adopts the heap.
#[test]
#[cfg_attr(miri, ignore = "each thread exit takes minutes under Miri")]
fn each_exiting_thread_leaves_its_heap_to_the_next() {
    static ALLOCATOR: Rulloc = Rulloc::new();
    for round in 0..THREADS {
        let kept = thread::spawn(move || churn(&ALLOCATOR, 200, round))
            .join()
            .unwrap();
        for block in kept {
            // SAFETY: allocated by the exited thread, freed once.
            unsafe { ALLOCATOR.deallocate_bytes(std::ptr::with_exposed_provenance_mut(block)) };
        }
    }
    let stats = ALLOCATOR.stats();
    assert_eq!(stats.heaps_abandoned, THREADS, "{stats:?}");
    assert!(stats.heaps_adopted >= THREADS - 1, "{stats:?}");
    assert!(stats.heaps <= 2, "{stats:?}");
    ALLOCATOR.collect();
    assert_eq!(ALLOCATOR.stats().bytes_in_use, 0);
}

/// A thread that allocated [`BLOCKS`] blocks and freed all but one gives
/// the free pages back when it exits, with no call from the program: the
/// hook collects and purges them (`madvise` on Unix, `MEM_DECOMMIT` then
/// `MEM_COMMIT` on Windows) while the kept block pins its segment. The
/// purged pages are then written again by the thread that adopts the heap.
#[test]
#[cfg_attr(miri, ignore = "each thread exit takes minutes under Miri")]
fn an_exiting_thread_gives_its_memory_back() {
    static ALLOCATOR: Rulloc = Rulloc::new();
    // A delay no test outlives: only the exit hook purges.
    ALLOCATOR.set_purge_delay_ms(1_000_000);
    let sizes = || (0..BLOCKS).map(|i| 32 * 1024 + i * 256);
    let before = ALLOCATOR.stats();
    let kept = thread::spawn(move || {
        let mut blocks: Vec<*mut u8> = sizes()
            .map(|size| {
                let block = ALLOCATOR.allocate_bytes(size, 16);
                assert!(!block.is_null());
                // SAFETY: a live block of `size` bytes.
                unsafe { block.write_bytes(0xa5, size) };
                block
            })
            .collect();
        let kept = blocks.remove(0);
        for block in blocks {
            // SAFETY: each block freed once.
            unsafe { ALLOCATOR.deallocate_bytes(block) };
        }
        assert!(ALLOCATOR.stats().bytes_mapped >= BLOCKS * 32 * 1024);
        kept.expose_provenance()
    })
    .join()
    .unwrap();
    let after = ALLOCATOR.stats();
    assert_eq!(
        after.heaps_abandoned,
        before.heaps_abandoned + 1,
        "{after:?}"
    );
    assert!(after.purge_calls > before.purge_calls, "{after:?}");
    assert!(after.bytes_purged >= BLOCKS * 32 * 1024 / 8, "{after:?}");
    // Purged pages are usable again: the next thread adopts the heap and
    // writes every byte of the same sizes.
    thread::spawn(move || {
        for size in sizes() {
            let block = ALLOCATOR.allocate_bytes(size, 16);
            assert!(!block.is_null());
            // SAFETY: a live block of `size` bytes, freed once.
            unsafe {
                block.write_bytes(1, size);
                ALLOCATOR.deallocate_bytes(block);
            }
        }
    })
    .join()
    .unwrap();
    assert_eq!(ALLOCATOR.stats().heaps_adopted, after.heaps_adopted + 1);
    // SAFETY: allocated by the first thread, freed once.
    unsafe { ALLOCATOR.deallocate_bytes(std::ptr::with_exposed_provenance_mut(kept)) };
    ALLOCATOR.collect();
    assert_eq!(ALLOCATOR.stats().bytes_in_use, 0);
}

static LATE: Rulloc = Rulloc::new();

/// Allocates from [`LATE`] when its thread-local is destroyed.
struct AllocatesOnDrop(Cell<usize>);

impl Drop for AllocatesOnDrop {
    fn drop(&mut self) {
        for i in 0..10 {
            let size = 16 + i * 100 + self.0.get();
            let block = LATE.allocate_bytes(size, 8);
            assert!(!block.is_null());
            // SAFETY: a live block of `size` bytes, freed once.
            unsafe {
                block.write_bytes(7, size);
                LATE.deallocate_bytes(block);
            }
        }
    }
}

thread_local! {
    static TEARDOWN: AllocatesOnDrop = const { AllocatesOnDrop(Cell::new(0)) };
}

/// Thread-local destructors that allocate after the exit hook ran must
/// not bind a heap again (it would stay bound forever: the hook does not
/// run twice). On Windows the Rust thread-local holding the binding is
/// itself destroyed and reset during teardown, which is what this
/// catches there. The heap count stays bounded however many threads exit.
#[test]
#[cfg_attr(miri, ignore = "each thread exit takes minutes under Miri")]
fn allocating_thread_local_destructors_do_not_leak_heaps() {
    for round in 0..THREADS {
        thread::spawn(move || {
            // This thread-local's destructor is registered before the
            // binding's, so it tends to run after it.
            TEARDOWN.with(|t| t.0.set(round));
            let kept = churn(&LATE, 50, round);
            for block in kept {
                // SAFETY: allocated above, freed once.
                unsafe { LATE.deallocate_bytes(std::ptr::with_exposed_provenance_mut(block)) };
            }
        })
        .join()
        .unwrap();
    }
    let stats = LATE.stats();
    assert!(
        stats.heaps <= 3,
        "heaps leaked by late allocations: {stats:?}"
    );
    assert!(stats.heaps_abandoned >= THREADS, "{stats:?}");
}
