//! 32-bit targets: the address space (at most 4 GiB) runs out long before
//! the machine's memory does. Allocating until Rulloc says no must end in
//! null pointers (no panic, no abort) at every size class, and freeing
//! everything must make the space usable again. Nothing here touches more
//! than a page per block, so the test needs little real memory.
//!
//! Its own test binary: while the address space is exhausted, nothing else
//! in the process can allocate either.
#![cfg(all(target_pointer_width = "32", not(miri)))]

use rulloc::Rulloc;

/// Allocates `size`-byte blocks until the allocator returns null (or
/// `limit` blocks), writing the first and last byte of each.
fn fill(allocator: &Rulloc, size: usize, align: usize, blocks: &mut Vec<*mut u8>, limit: usize) {
    for _ in 0..limit {
        let block = allocator.allocate_bytes(size, align);
        if block.is_null() {
            return;
        }
        assert_eq!(block.addr() % align, 0);
        // SAFETY: a live block of `size` bytes.
        unsafe {
            block.write(1);
            block.add(size - 1).write(2);
        }
        blocks.push(block);
    }
    panic!("{limit} blocks of {size} bytes fit in a 32-bit address space");
}

#[test]
fn exhausting_the_address_space_returns_null_and_recovers() {
    let allocator = Rulloc::new();
    // Capacity reserved up front: the Vec must not grow once the address
    // space is gone.
    let mut blocks: Vec<*mut u8> = Vec::with_capacity(1 << 16);
    // Huge blocks (mappings of their own), then large spans, then aligned
    // and small blocks in whatever holes are left.
    fill(&allocator, 64 << 20, 16, &mut blocks, 64);
    let huge = blocks.len();
    fill(&allocator, 1 << 20, 16, &mut blocks, 4096);
    fill(&allocator, 100_000, 4096, &mut blocks, 40_000);
    fill(&allocator, 4000, 8, &mut blocks, 10_000);
    // Requests past the end of the address space are refused outright.
    assert!(allocator.allocate_bytes(3 << 30, 8).is_null());
    assert!(allocator.allocate_bytes(usize::MAX - 4096, 8).is_null());
    assert!(allocator.allocate_bytes(1 << 20, 1 << 30).is_null());
    let mapped = allocator.stats().bytes_mapped;
    let count = blocks.len();
    for block in blocks.drain(..) {
        // SAFETY: each block allocated above, freed once.
        unsafe { allocator.deallocate_bytes(block) };
    }
    allocator.collect();
    assert!(
        huge >= 8,
        "only {huge} blocks of 64 MiB: {:?}",
        allocator.stats()
    );
    assert!(
        mapped >= 2 << 30,
        "only {mapped} bytes mapped before the first null"
    );
    assert_eq!(allocator.stats().bytes_in_use, 0);
    // Usable again, at every size.
    for size in [8, 4000, 100_000, 1 << 20, 64 << 20, 1 << 30] {
        let block = allocator.allocate_bytes(size, 8);
        assert!(
            !block.is_null(),
            "{size} bytes after freeing {count} blocks"
        );
        // SAFETY: a live block of `size` bytes, freed once.
        unsafe {
            block.add(size - 1).write(3);
            allocator.deallocate_bytes(block);
        }
    }
}
