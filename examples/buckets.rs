//! Custom size classes. Rulloc's buckets are configured at compile time;
//! here an allocator with three buckets of 8, 16 and 24 bytes. Requests
//! larger than the last bucket go to the dynamic bucket.
//!
//! Run it with `cargo run --example buckets`, or under Miri with
//! `cargo +nightly miri run --example buckets`.

use core::alloc::Layout;

use allocator_api2::alloc::Allocator;
use rulloc::Rulloc;

/// Checked at compile time: an empty or unsorted list, or a size of zero,
/// does not compile.
static ALLOCATOR: Rulloc<3> = Rulloc::with_bucket_sizes([8, 16, 24]);

fn main() {
    println!(
        "Allocator configured with bucket sizes {:?}.",
        ALLOCATOR.bucket_sizes()
    );
    println!("Blocks of different buckets live in different regions, so their");
    println!("addresses are far apart; blocks of one bucket sit next to each other:");

    let mut blocks = Vec::new();
    for size in [8usize, 8, 16, 16, 24, 24, 100, 4000] {
        let layout = Layout::from_size_align(size, 8).unwrap();
        let block = ALLOCATOR
            .allocate(layout)
            .expect("out of memory")
            .cast::<u8>();
        // SAFETY: `block` is a live block of `ALLOCATOR`.
        let usable = unsafe { ALLOCATOR.usable_size(block.as_ptr()) };
        println!("  alloc of {size:>4} bytes at {block:p} (usable size {usable})");
        blocks.push((block, layout));
    }

    println!("Stats: {:?}", ALLOCATOR.stats());
    for (block, layout) in blocks {
        // SAFETY: each block is live with this layout and freed once.
        unsafe { ALLOCATOR.deallocate(block, layout) };
    }
    println!("After freeing: {:?}", ALLOCATOR.stats());
}
