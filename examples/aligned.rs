//! Aligned allocations: every power-of-two alignment from 1 byte up to
//! 1 MiB (1 GiB on 64-bit targets outside Miri), each checked with
//! `address % align == 0`.
//!
//! Run it with `cargo run --example aligned`, or under Miri with
//! `cargo +nightly miri run --example aligned`.

use core::alloc::Layout;

use allocator_api2::alloc::Allocator;
use rulloc::Rulloc;

fn main() {
    let allocator = Rulloc::default();
    let max_shift = if cfg!(miri) || cfg!(not(target_pointer_width = "64")) {
        20
    } else {
        30
    };

    for shift in 0..=max_shift {
        let align = 1usize << shift;
        let layout = Layout::from_size_align(1, align).unwrap();
        let block = allocator
            .allocate(layout)
            .expect("out of memory")
            .cast::<u8>();
        let address = block.as_ptr() as usize;
        println!(
            "Alloc of size {} and alignment {align:>10} at {block:p}: {address:#x} % {align} = {}",
            layout.size(),
            address % align
        );
        assert_eq!(address % align, 0);
        // SAFETY: `block` is live with `layout` and freed once.
        unsafe { allocator.deallocate(block, layout) };
    }

    // `align == size` keeps blocks packed, not padded.
    let blocks: Vec<*mut u8> = (0..4).map(|_| allocator.allocate_bytes(512, 512)).collect();
    println!("Four blocks of 512 bytes aligned to 512: {blocks:?}");
    for block in blocks {
        assert_eq!(block as usize % 512, 0);
        // SAFETY: `block` is live and freed once.
        unsafe { allocator.deallocate_bytes(block) };
    }
    println!("Stats: {:?}", allocator.stats());
}
