//! A standalone Rulloc instance, used next to the global allocator: the
//! `Allocator` trait (collections with `new_in`), the raw byte API, and the
//! counters the instance keeps.
//!
//! Run it with `cargo run --example standalone`, or under Miri with
//! `cargo +nightly miri run --example standalone`.

use core::alloc::Layout;

use allocator_api2::alloc::Allocator;
use allocator_api2::boxed::Box;
use allocator_api2::vec::Vec;
use rulloc::Rulloc;

fn main() {
    let allocator = Rulloc::default();
    println!("Bucket sizes: {:?}", allocator.bucket_sizes());

    // Collections that allocate from this instance only.
    let mut numbers = Vec::new_in(&allocator);
    numbers.extend(0..10u32);
    println!("Vec {numbers:?} at {:p}", numbers.as_ptr());
    let boxed = Box::new_in(42u64, &allocator);
    println!("Box {boxed} at {:p}", &*boxed);

    // The `Allocator` trait directly.
    let layout = Layout::array::<u8>(1000).unwrap();
    let block = allocator
        .allocate(layout)
        .expect("out of memory")
        .cast::<u8>();
    println!(
        "Allocator::allocate of {} bytes at {block:p}",
        layout.size()
    );

    // The raw byte API: no layout needed to free.
    let raw = allocator.allocate_bytes(100, 16);
    assert!(!raw.is_null());
    // SAFETY: `raw` is a live block of this allocator.
    let usable = unsafe { allocator.usable_size(raw) };
    println!("allocate_bytes(100, 16) at {raw:p}, usable size {usable}");
    // SAFETY: `raw` is live; `reallocate_bytes` keeps its first 100 bytes.
    let raw = unsafe { allocator.reallocate_bytes(raw, 5000, 16) };
    assert!(!raw.is_null());
    println!("reallocate_bytes(.., 5000, 16) moved it to {raw:p}");

    // A large block goes to the dynamic bucket.
    let large = allocator.allocate_bytes(300 * 1024, 64);
    assert!(!large.is_null());
    println!("300 KiB block at {large:p}");

    println!("While in use: {:?}", allocator.stats());

    // SAFETY: each block is live and freed exactly once, through the API it
    // came from.
    unsafe {
        allocator.deallocate(block, layout);
        allocator.deallocate_bytes(raw);
        allocator.deallocate_bytes(large);
    }
    drop(boxed);
    drop(numbers);
    allocator.collect();
    println!("After freeing and collect(): {:?}", allocator.stats());
}
