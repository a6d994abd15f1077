//! Integration tests of the public API of one instance, single threaded:
//! edge-case sizes and alignments, resizing with live neighbours, zeroed
//! memory on reuse, configurations, and collections (`hashbrown`,
//! `allocator_api2`'s `Vec` and `Box`) built on a `&Rulloc`.
//!
//! Counter (`stats()`) assertions live in `tests/stats.rs`.

mod common;

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;

use allocator_api2::alloc::Allocator;
use allocator_api2::boxed::Box as ABox;
use allocator_api2::vec::Vec as AVec;
use common::*;
use rulloc::{Rulloc, DEFAULT_BUCKET_COUNT, DEFAULT_BUCKET_SIZES};

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

/// Alignments are tested up to `1 << MAX_ALIGN_SHIFT`: 1 GiB on 64-bit
/// targets natively, 1 MiB under Miri (which backs every allocation with
/// real host memory) and on 32-bit targets 256 MiB.
const MAX_ALIGN_SHIFT: u32 = if cfg!(miri) {
    20
} else if cfg!(target_pointer_width = "64") {
    30
} else {
    28
};

// ------------------------------------------------------- test helpers

/// The pattern helpers every test relies on do find corruption.
#[test]
fn pattern_helpers_detect_corruption() {
    let len = scaled(10_000, 1500);
    let mut buf = vec![0u8; len];
    // SAFETY: `buf` has `len` initialized bytes (zero, then the pattern).
    unsafe {
        check_zero(buf.as_ptr(), 0, buf.len(), "fresh buffer");
        fill(buf.as_mut_ptr(), buf.len(), 42);
        check(buf.as_ptr(), buf.len(), 42, "filled buffer");
        assert_eq!(find_mismatch(buf.as_ptr(), buf.len(), 43), Some(0));
    }
    for off in [0usize, 1, 250, 251, 252, len / 2, len - 1] {
        buf[off] ^= 0x80;
        // SAFETY: `buf` has `len` initialized bytes.
        unsafe { assert_eq!(find_mismatch(buf.as_ptr(), buf.len(), 42), Some(off)) };
        buf[off] ^= 0x80;
    }
    let mut zeros = vec![0u8; 5000];
    zeros[4999] = 1;
    let r = std::panic::catch_unwind(|| {
        // SAFETY: `zeros` has 5000 initialized bytes.
        unsafe { check_zero(zeros.as_ptr(), 0, zeros.len(), "dirty") }
    });
    assert!(r.is_err());
}

// ------------------------------------------------------------- zero sizes

#[test]
fn zero_size_bytes_api_returns_unique_aligned_pointers() {
    let a = Rulloc::default();
    let mut ptrs = Vec::new();
    for shift in 0..=12 {
        let align = 1usize << shift;
        for _ in 0..4 {
            let p = a.allocate_bytes(0, align);
            assert_aligned(p, align, "allocate_bytes(0)");
            let z = a.allocate_zeroed_bytes(0, align);
            assert_aligned(z, align, "allocate_zeroed_bytes(0)");
            ptrs.push(p);
            ptrs.push(z);
        }
    }
    let mut sorted: Vec<usize> = ptrs.iter().map(|&p| p as usize).collect();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(
        sorted.len(),
        ptrs.len(),
        "zero-size pointers are not unique"
    );
    for p in ptrs {
        // SAFETY: `p` is a live block of this allocator, freed once.
        unsafe {
            let _ = a.usable_size(p);
            a.deallocate_bytes(p);
        }
    }
}

#[test]
fn zero_size_allocator_trait() {
    let a = Rulloc::default();
    for shift in 0..=12 {
        let layout = Layout::from_size_align(0, 1 << shift).unwrap();
        let b = a.allocate(layout).unwrap();
        assert_aligned(b.cast::<u8>().as_ptr(), layout.align(), "allocate(0)");
        let z = a.allocate_zeroed(layout).unwrap();
        assert_aligned(
            z.cast::<u8>().as_ptr(),
            layout.align(),
            "allocate_zeroed(0)",
        );
        // Growing a zero-size block to a real one and back.
        let big = Layout::from_size_align(100, 1 << shift).unwrap();
        // SAFETY: `b` is live with `layout`; `big` is larger.
        let g = unsafe { a.grow(b.cast(), layout, big) }.unwrap();
        // SAFETY: `g` holds at least 100 bytes.
        unsafe { fill(g.cast().as_ptr(), 100, 7) };
        // SAFETY: `g` is live with `big`; `layout` is smaller.
        let s = unsafe { a.shrink(g.cast(), big, layout) }.unwrap();
        // SAFETY: `s` is live with `layout`, `z` too.
        unsafe {
            a.deallocate(s.cast(), layout);
            a.deallocate(z.cast(), layout);
        }
    }
    // A zero-size reallocation through the bytes API keeps a valid block.
    let p = a.allocate_bytes(64, 8);
    // SAFETY: `p` is live; after the call only the returned pointer is.
    unsafe {
        let q = a.reallocate_bytes(p, 0, 8);
        assert_aligned(q, 8, "reallocate_bytes(p, 0)");
        a.deallocate_bytes(q);
    }
}

// ------------------------------------------------------ impossible sizes

/// Sizes that can never be satisfied: every path returns null / `Err`,
/// nothing panics, and the allocator stays usable.
#[test]
fn impossible_sizes_fail_cleanly() {
    let a = Rulloc::default();
    let keep = a.allocate_bytes(1000, 16);
    // SAFETY: `keep` has 1000 bytes.
    unsafe { fill(keep, 1000, 1) };

    let max = isize::MAX as usize;
    let mut cases: Vec<(usize, usize)> = Vec::new();
    for shift in [0u32, 3, 4, 12, 16, 21, 30] {
        let align = 1usize << shift;
        cases.push((max - align + 1, align)); // the largest valid `Layout`
        cases.push((max, align));
        cases.push((max + 1, align));
        cases.push((usize::MAX, align));
        cases.push((usize::MAX - align + 1, align));
        // Miri aborts on requests it cannot back with host memory instead
        // of returning null, so these run natively only.
        if cfg!(target_pointer_width = "64") && !cfg!(miri) {
            // 2^62, 2^60 and 2^58 bytes: valid layouts, far beyond any
            // address space.
            cases.push((usize::MAX >> 2, align));
            cases.push((usize::MAX >> 4, align));
            cases.push((usize::MAX >> 6, align));
        }
    }
    for &(size, align) in &cases {
        let what = format!("size {size:#x} align {align}");
        assert!(
            a.allocate_bytes(size, align).is_null(),
            "allocate_bytes: {what}"
        );
        assert!(
            a.allocate_zeroed_bytes(size, align).is_null(),
            "allocate_zeroed_bytes: {what}"
        );
        // C's entry asks for 16-byte alignment whatever `align` says: the
        // size alone must be impossible (on 32-bit targets some of these
        // sizes are 1 GiB, which can be mapped). Miri aborts on a request it
        // cannot back instead of returning null, so there only the sizes
        // refused before any mapping is tried.
        let c_impossible = size > max - 15 || (!cfg!(miri) && size as u64 >= 1 << 56);
        if c_impossible {
            assert!(a.allocate_malloc(size).is_null(), "allocate_malloc: {what}");
        }
        // SAFETY: `keep` is live; a failed reallocation leaves it live.
        let r = unsafe { a.reallocate_bytes(keep, size, align) };
        assert!(r.is_null(), "reallocate_bytes: {what}");
        if let Ok(layout) = Layout::from_size_align(size, align) {
            assert!(a.allocate(layout).is_err(), "allocate: {what}");
            assert!(
                a.allocate_zeroed(layout).is_err(),
                "allocate_zeroed: {what}"
            );
            // SAFETY: `layout` has a non-zero size.
            unsafe {
                assert!(GlobalAlloc::alloc(&a, layout).is_null(), "alloc: {what}");
                assert!(a.alloc_zeroed(layout).is_null(), "alloc_zeroed: {what}");
            }
        }
    }
    // SAFETY: `keep` is still live (every reallocation failed) and owns
    // 1000 bytes.
    unsafe {
        check(keep, 1000, 1, "block after failed reallocations");
        a.deallocate_bytes(keep);
    }
    let p = a.allocate_bytes(4096, 64);
    assert_aligned(p, 64, "allocation after failures");
    // SAFETY: `p` is live.
    unsafe { a.deallocate_bytes(p) };
}

/// Failed growth through the traits leaves the old block intact.
#[test]
fn impossible_growth_keeps_the_old_block() {
    let a = Rulloc::default();
    let old = Layout::from_size_align(300, 8).unwrap();
    let b = a.allocate(old).unwrap().cast::<u8>();
    // SAFETY: `b` has 300 bytes.
    unsafe { fill(b.as_ptr(), 300, 2) };
    for align in [1usize, 8, 4096] {
        let huge = Layout::from_size_align(isize::MAX as usize - align + 1, align).unwrap();
        // SAFETY: `b` is live with `old`; `huge` is larger. A failed call
        // leaves `b` live.
        unsafe {
            assert!(a.grow(b, old, huge).is_err());
            assert!(a.grow_zeroed(b, old, huge).is_err());
        }
        // `GlobalAlloc::realloc` requires the size rounded up to `old.align()`
        // to fit in `isize`.
        let new_size = isize::MAX as usize - old.align() + 1;
        // SAFETY: `b` is live with `old`; `new_size` is non-zero and valid.
        assert!(unsafe { a.realloc(b.as_ptr(), old, new_size) }.is_null());
    }
    // SAFETY: `b` is live with 300 bytes and layout `old`.
    unsafe {
        check(b.as_ptr(), 300, 2, "block after failed growth");
        a.deallocate(b, old);
    }
}

/// Sizes that are valid layouts but more than a machine can usually map:
/// the allocator either refuses them or returns a block whose first and
/// last bytes can be written.
#[test]
#[cfg_attr(miri, ignore)] // Miri backs allocations with host memory and aborts on exhaustion.
fn enormous_sizes_fail_or_work() {
    let a = Rulloc::default();
    let sizes: &[usize] = if cfg!(target_pointer_width = "64") {
        &[1u64 << 40, 1 << 44, 1 << 47, (1 << 47) + 1].map(|size| size as usize)
    } else {
        &[1 << 30, 3 << 30]
    };
    for &size in sizes {
        for align in [1usize, 4096, 1 << 21] {
            let p = a.allocate_bytes(size, align);
            if !p.is_null() {
                assert_aligned(p, align, "enormous block");
                // SAFETY: `p` is a live block of `size` bytes.
                unsafe {
                    p.write(1);
                    p.add(size - 1).write(2);
                    a.deallocate_bytes(p);
                }
            }
        }
    }
}

// -------------------------------------------------------------- alignment

/// Every power-of-two alignment up to 1 GiB: allocate, check alignment,
/// write the first and last byte, free; through all three APIs.
#[test]
fn every_power_of_two_alignment() {
    let a = Rulloc::default();
    for shift in 0..=MAX_ALIGN_SHIFT {
        let align = 1usize << shift;
        for size in [1usize, 24, 4097, align.min(64 * MIB)] {
            let what = format!("size {size} align {align}");
            let p = a.allocate_bytes(size, align);
            assert_aligned(p, align, &what);
            // SAFETY: `p` is a live block of `size` bytes.
            unsafe {
                p.write(0xA5);
                p.add(size - 1).write(0x5A);
                assert_eq!(p.read(), if size == 1 { 0x5A } else { 0xA5 });
                assert!(a.usable_size(p) >= size);
                a.deallocate_bytes(p);
            }

            let layout = Layout::from_size_align(size, align).unwrap();
            let b = a.allocate(layout).unwrap().cast::<u8>();
            assert_aligned(b.as_ptr(), align, &what);
            // SAFETY: `b` is a live block of `size` bytes with `layout`.
            unsafe {
                b.as_ptr().write(1);
                b.as_ptr().add(size - 1).write(2);
                a.deallocate(b, layout);
            }

            // SAFETY: `layout` has a non-zero size.
            let g = unsafe { GlobalAlloc::alloc(&a, layout) };
            assert_aligned(g, align, &what);
            // SAFETY: `g` is a live block of `size` bytes with `layout`.
            unsafe {
                g.write(1);
                g.add(size - 1).write(2);
                a.dealloc(g, layout);
            }
        }
    }
}

/// Zeroed, aligned and resized blocks keep their alignment and content.
#[test]
fn aligned_zeroed_and_resized() {
    let a = Rulloc::default();
    for shift in 0..=MAX_ALIGN_SHIFT.min(21) {
        let align = 1usize << shift;
        let z = a.allocate_zeroed_bytes(3000, align);
        assert_aligned(z, align, "allocate_zeroed_bytes");
        // SAFETY: `z` is live with 3000 bytes; after each reallocation only
        // the returned pointer is live.
        unsafe {
            check_zero(z, 0, 3000, "allocate_zeroed_bytes");
            fill(z, 3000, shift as u64);
            let g = a.reallocate_bytes(z, 70_000, align);
            assert_aligned(g, align, "reallocate_bytes grow");
            check(g, 3000, shift as u64, "reallocate_bytes grow");
            let s = a.reallocate_bytes(g, 100, align);
            assert_aligned(s, align, "reallocate_bytes shrink");
            check(s, 100, shift as u64, "reallocate_bytes shrink");
            a.deallocate_bytes(s);
        }

        let layout = Layout::from_size_align(500, align).unwrap();
        let b = a.allocate_zeroed(layout).unwrap();
        // SAFETY: `b` is live with `layout`; it is freed once.
        unsafe {
            check_zero(b.cast().as_ptr(), 0, b.len(), "allocate_zeroed");
            a.deallocate(b.cast(), layout);
        }
    }
}

/// `align == size` for small powers of two must not waste much: many such
/// blocks fit (this is a smoke test, the exact waste is in the benchmarks).
/// C's entry gives every size C's alignment (16, or 8 up to 8 bytes), and
/// its blocks hold their contents beside each other and after frees, in the
/// default buckets and in custom ones whose sizes are not all multiples of
/// 16.
#[test]
fn malloc_entry_aligns_like_c_and_keeps_contents() {
    fn run<const N: usize>(a: &Rulloc<N>) {
        let mut sizes: Vec<usize> = (0..=scaled(1100, 80)).collect();
        sizes.extend([4096, 70_000, 300_000, 3 * MIB]);
        let mut live = Vec::new();
        for (i, &size) in sizes.iter().enumerate() {
            let p = a.allocate_malloc(size);
            let align = if size <= 8 { 8 } else { 16 };
            assert_aligned(p, align, &format!("allocate_malloc({size})"));
            // SAFETY: `p` has `size` bytes.
            unsafe { fill(p, size, i as u64) };
            live.push((p, size, i as u64));
            if i % 3 == 0 {
                let (p, size, seed) = live.swap_remove(live.len() / 2);
                // SAFETY: `p` is live with `size` bytes and freed once.
                unsafe {
                    check(p, size, seed, "malloc-entry block");
                    a.deallocate_bytes(p);
                }
            }
        }
        for (p, size, seed) in live {
            // SAFETY: the blocks still in `live` were never freed: `p` is
            // live with `size` bytes, and freed once.
            unsafe {
                check(p, size, seed, "malloc-entry block");
                a.deallocate_bytes(p);
            }
        }
    }
    run(&Rulloc::default());
    run(&Rulloc::with_bucket_sizes([8, 24, 40, 56, 72, 1000]));
}

#[test]
fn size_equals_align_blocks_do_not_overlap() {
    let a = Rulloc::default();
    for shift in 3..=scaled(13, 10) as u32 {
        let align = 1usize << shift;
        let n = scaled(64, 8);
        let ptrs: Vec<*mut u8> = (0..n)
            .map(|i| {
                let p = a.allocate_bytes(align, align);
                assert_aligned(p, align, "size == align");
                // SAFETY: `p` has `align` bytes.
                unsafe { fill(p, align, i as u64) };
                p
            })
            .collect();
        for (i, &p) in ptrs.iter().enumerate() {
            // SAFETY: `p` is live with `align` bytes and freed once.
            unsafe {
                check(p, align, i as u64, "size == align block");
                a.deallocate_bytes(p);
            }
        }
    }
}

// ------------------------------------------------ resizing with neighbours

/// Blocks resized during the neighbour tests. Each case allocates
/// `NEIGHBOURS` blocks of the start size on each side of the resized one, so
/// whatever the layout, the resized block has live neighbours on both sides.
const NEIGHBOURS: usize = scaled(6, 2);

fn start_sizes() -> Vec<usize> {
    if cfg!(miri) {
        vec![24, 70 * KIB]
    } else {
        vec![1, 8, 24, 100, 1000, 5000, 70 * KIB, 300 * KIB, 3 * MIB]
    }
}

/// Targets a block of `start` bytes is resized through, in order: a little
/// larger, double, a large block, back down, tiny, and back to `start`.
fn targets(start: usize) -> Vec<usize> {
    vec![
        start + 1,
        start * 2,
        start * 2 + 4096,
        scaled(MIB + 7, 100 * KIB + 7),
        BIG,
        start * 3,
        start / 2 + 1,
        1,
        start,
        start + 1,
    ]
}

/// Allocates the neighbours, fills everything with patterns, resizes the
/// middle block through `targets(start)` with `resize`, and checks after
/// every step that the neighbours are intact and the prefix preserved.
///
/// `resize(ptr, old_size, new_size) -> (new_ptr, reported_len)`, where
/// `reported_len` is the length an `Allocator` reported (else `new_size`).
/// With `zeroed_tail`, bytes past the old reported length must be zero.
fn resize_with_neighbours(
    alloc: &dyn Fn(usize) -> *mut u8,
    free: &dyn Fn(*mut u8, usize),
    resize: &dyn Fn(*mut u8, usize, usize) -> (*mut u8, usize),
    zeroed_tail: bool,
) {
    for start in start_sizes() {
        let mut neighbours: Vec<(*mut u8, u64)> = Vec::new();
        let mut mid = core::ptr::null_mut();
        for i in 0..(2 * NEIGHBOURS + 1) as u64 {
            let p = alloc(start);
            assert_aligned(p, 8, "neighbour");
            // SAFETY: `p` has `start` bytes.
            unsafe { fill(p, start, 1000 + i) };
            if i == NEIGHBOURS as u64 {
                mid = p;
            } else {
                neighbours.push((p, 1000 + i));
            }
        }
        let mut id = 1000 + NEIGHBOURS as u64;
        let mut size = start;
        let mut len = start;
        for (step, new_size) in targets(start).into_iter().enumerate() {
            let what = format!("start {start}, step {step}: {size} -> {new_size}");
            let (p, new_len) = resize(mid, size, new_size);
            assert!(new_len >= new_size, "{what}: reported length {new_len}");
            assert_aligned(p, 8, &what);
            // SAFETY: `p` is the live resized block of `new_size` bytes;
            // every neighbour is live with `start` bytes.
            unsafe {
                check(p, size.min(new_size), id, &what);
                if zeroed_tail {
                    check_zero(p, size.max(len), new_len, &what);
                }
                for &(n, nid) in &neighbours {
                    check(n, start, nid, &format!("{what}: neighbour"));
                }
                id += 100;
                fill(p, new_size, id);
            }
            mid = p;
            size = new_size;
            len = new_len;
        }
        free(mid, size);
        for (n, nid) in neighbours {
            // SAFETY: every neighbour is live with `start` bytes.
            unsafe { check(n, start, nid, "neighbour at the end") };
            free(n, start);
        }
    }
}

#[test]
fn reallocate_bytes_with_live_neighbours() {
    let a = Rulloc::default();
    resize_with_neighbours(
        &|size| a.allocate_bytes(size, 8),
        // SAFETY: the helper only passes live blocks and frees each once.
        &|p, _| unsafe { a.deallocate_bytes(p) },
        // SAFETY: the helper only passes live blocks.
        &|p, _, new| (unsafe { a.reallocate_bytes(p, new, 8) }, new),
        false,
    );
}

#[test]
fn reallocate_bytes_custom_buckets_with_live_neighbours() {
    let a = Rulloc::<3>::with_bucket_sizes([8, 16, 24]);
    resize_with_neighbours(
        &|size| a.allocate_bytes(size, 8),
        // SAFETY: the helper only passes live blocks and frees each once.
        &|p, _| unsafe { a.deallocate_bytes(p) },
        // SAFETY: the helper only passes live blocks.
        &|p, _, new| (unsafe { a.reallocate_bytes(p, new, 8) }, new),
        false,
    );
}

#[test]
fn global_alloc_realloc_with_live_neighbours() {
    let a = Rulloc::default();
    let l = |size: usize| Layout::from_size_align(size, 8).unwrap();
    resize_with_neighbours(
        // SAFETY: every start size is non-zero.
        &|size| unsafe { GlobalAlloc::alloc(&a, l(size)) },
        // SAFETY: the helper passes live blocks with their current size.
        &|p, size| unsafe { a.dealloc(p, l(size)) },
        // SAFETY: the helper passes live blocks with their current size;
        // every target is non-zero.
        &|p, old, new| (unsafe { a.realloc(p, l(old), new) }, new),
        false,
    );
}

/// `Allocator::grow` / `shrink`, choosing by direction.
fn trait_resize<A: Allocator>(
    a: &A,
    p: *mut u8,
    old: usize,
    new: usize,
    zeroed: bool,
) -> (*mut u8, usize) {
    let l = |size: usize| Layout::from_size_align(size, 8).unwrap();
    let p = NonNull::new(p).unwrap();
    // SAFETY: the helper passes a live block with layout `l(old)`; the
    // method is chosen so the size condition holds.
    let r = unsafe {
        if new >= old {
            if zeroed {
                a.grow_zeroed(p, l(old), l(new))
            } else {
                a.grow(p, l(old), l(new))
            }
        } else {
            a.shrink(p, l(old), l(new))
        }
    };
    r.map_or((core::ptr::null_mut(), 0), |s| {
        (s.cast::<u8>().as_ptr(), s.len())
    })
}

fn trait_alloc<A: Allocator>(a: &A, size: usize) -> *mut u8 {
    let l = Layout::from_size_align(size, 8).unwrap();
    a.allocate(l)
        .map_or(core::ptr::null_mut(), |s| s.cast::<u8>().as_ptr())
}

fn trait_free<A: Allocator>(a: &A, p: *mut u8, size: usize) {
    let l = Layout::from_size_align(size, 8).unwrap();
    // SAFETY: the helper passes live blocks with their current size.
    unsafe { a.deallocate(NonNull::new(p).unwrap(), l) }
}

#[test]
fn allocator_grow_and_shrink_with_live_neighbours() {
    let a = Rulloc::default();
    resize_with_neighbours(
        &|size| trait_alloc(&a, size),
        &|p, size| trait_free(&a, p, size),
        &|p, old, new| trait_resize(&a, p, old, new, false),
        false,
    );
}

#[test]
fn allocator_grow_zeroed_with_live_neighbours() {
    let a = Rulloc::default();
    resize_with_neighbours(
        &|size| trait_alloc(&a, size),
        &|p, size| trait_free(&a, p, size),
        &|p, old, new| trait_resize(&a, p, old, new, true),
        true,
    );
}

#[test]
fn allocator_grow_zeroed_custom_buckets_with_live_neighbours() {
    let a = Rulloc::<3>::with_bucket_sizes([8, 16, 24]);
    resize_with_neighbours(
        &|size| trait_alloc(&a, size),
        &|p, size| trait_free(&a, p, size),
        &|p, old, new| trait_resize(&a, p, old, new, true),
        true,
    );
}

/// Shrinking and growing back within what the block already had keeps the
/// content, including after the tail was dirtied before the shrink
/// (`grow_zeroed` must zero it again).
#[test]
fn shrink_then_grow_zeroed_rezeroes_the_tail() {
    let a = Rulloc::default();
    for size in [64usize, 1000, 20 * KIB, 500 * KIB, BIG] {
        let big = Layout::from_size_align(size, 8).unwrap();
        let small = Layout::from_size_align(size / 4, 8).unwrap();
        let b = a.allocate(big).unwrap().cast::<u8>();
        // SAFETY: `b` holds `size` bytes; each resize leaves only the
        // returned block live, with the layout passed to it.
        unsafe {
            fill(b.as_ptr(), size, 3);
            let s = a.shrink(b, big, small).unwrap();
            check(s.cast().as_ptr(), small.size(), 3, "after shrink");
            let g = a.grow_zeroed(s.cast(), small, big).unwrap();
            let g = g.cast::<u8>();
            check(g.as_ptr(), small.size(), 3, "after grow_zeroed");
            check_zero(
                g.as_ptr(),
                small.size().max(s.len()),
                size,
                "grow_zeroed tail",
            );
            a.deallocate(g, big);
        }
    }
}

/// Resizing within the block's usable size needs no move: every front end
/// returns the same pointer, with the content intact.
#[test]
fn resizing_within_usable_size_stays_in_place() {
    let a = Rulloc::default();
    for size in [100usize, 1000, 70 * KIB, 3 * MIB] {
        let p = a.allocate_bytes(size, 8);
        assert_aligned(p, 8, "in place");
        // SAFETY: `p` is live; each resize keeps it live at the returned
        // address (asserted equal), with at least `size` bytes.
        unsafe {
            let usable = a.usable_size(p);
            fill(p, size, 4);
            let q = a.reallocate_bytes(p, usable, 8);
            assert_eq!(q, p, "reallocate_bytes({size} -> usable {usable}) moved");
            let layout = Layout::from_size_align(usable, 8).unwrap();
            let q = a.realloc(p, layout, size);
            assert_eq!(q, p, "realloc({usable} -> {size}) moved");
            let small = Layout::from_size_align(size, 8).unwrap();
            let g = a.grow(NonNull::new(p).unwrap(), small, layout).unwrap();
            assert_eq!(
                g.cast::<u8>().as_ptr(),
                p,
                "grow({size} -> usable {usable}) moved"
            );
            check(p, size, 4, "resized in place");
            a.deallocate_bytes(p);
        }
    }
}

/// Usable size: the caller may write all of it without hurting neighbours.
#[test]
fn usable_size_is_writable() {
    let a = Rulloc::default();
    let sizes = [
        1usize, 7, 8, 9, 15, 17, 24, 33, 100, 1000, 4095, 4097, 70_000, 300_000,
    ];
    let mut blocks = Vec::new();
    for round in 0..2u64 {
        for (i, &size) in sizes.iter().enumerate() {
            let p = a.allocate_bytes(size, 8);
            assert_aligned(p, 8, "usable_size");
            // SAFETY: `p` is live.
            let usable = unsafe { a.usable_size(p) };
            assert!(usable >= size, "usable_size {usable} < {size}");
            let id = round * 100 + i as u64;
            // SAFETY: `usable` bytes at `p` belong to the block.
            unsafe { fill(p, usable, id) };
            blocks.push((p, usable, id));
        }
    }
    for (p, usable, id) in blocks {
        // SAFETY: `p` is live with `usable` written bytes; freed once.
        unsafe {
            check(p, usable, id, "usable bytes");
            a.deallocate_bytes(p);
        }
    }
}

// ------------------------------------------------------ zeroed on reuse

/// Zeroed allocations are zero even when they reuse memory that was just
/// freed dirty, through all three APIs and for every size range.
#[test]
fn zeroed_memory_is_zero_after_reuse() {
    let a = Rulloc::default();
    let rounds = scaled(8, 2);
    for size in [8usize, 24, 64, 200, 1000, 4096, 40 * KIB, 300 * KIB, BIG] {
        for _ in 0..rounds {
            let dirty: Vec<*mut u8> = (0..4)
                .map(|_| {
                    let p = a.allocate_bytes(size, 8);
                    assert_aligned(p, 8, "dirty");
                    // SAFETY: `p` has at least `size` usable bytes.
                    unsafe { p.write_bytes(0xFF, a.usable_size(p)) };
                    p
                })
                .collect();
            for p in dirty {
                // SAFETY: `p` is live and freed once.
                unsafe { a.deallocate_bytes(p) };
            }
            let z = a.allocate_zeroed_bytes(size, 8);
            let layout = Layout::from_size_align(size, 8).unwrap();
            let t = a.allocate_zeroed(layout).unwrap();
            // SAFETY: `layout` has a non-zero size.
            let g = unsafe { a.alloc_zeroed(layout) };
            // SAFETY: each block is live with `size` bytes (`t.len()` for the
            // trait one) and freed once with its own API.
            unsafe {
                check_zero(z, 0, size, "allocate_zeroed_bytes after reuse");
                check_zero(t.cast().as_ptr(), 0, t.len(), "allocate_zeroed after reuse");
                check_zero(g, 0, size, "alloc_zeroed after reuse");
                a.deallocate_bytes(z);
                a.deallocate(t.cast(), layout);
                a.dealloc(g, layout);
            }
        }
    }
}

// --------------------------------------------------------- configuration

static SMALL: Rulloc<3> = Rulloc::with_bucket_sizes([8, 16, 24]);
static SINGLE: Rulloc<1> = Rulloc::with_bucket_sizes([4096]);

#[test]
fn default_configuration() {
    assert_eq!(DEFAULT_BUCKET_SIZES.len(), DEFAULT_BUCKET_COUNT);
    assert!(DEFAULT_BUCKET_SIZES[0] > 0);
    assert!(
        DEFAULT_BUCKET_SIZES.windows(2).all(|w| w[0] < w[1]),
        "sorted"
    );
    assert_eq!(Rulloc::new().bucket_sizes(), &DEFAULT_BUCKET_SIZES);
    assert_eq!(
        Rulloc::with_default_config().bucket_sizes(),
        &DEFAULT_BUCKET_SIZES
    );
    assert_eq!(Rulloc::default().bucket_sizes(), &DEFAULT_BUCKET_SIZES);
    let explicit: Rulloc = Rulloc::with_bucket_sizes(DEFAULT_BUCKET_SIZES);
    assert_eq!(explicit.bucket_sizes(), &DEFAULT_BUCKET_SIZES);
}

fn exercise_sizes<const N: usize>(a: &Rulloc<N>, max: usize) {
    let mut blocks = Vec::new();
    for size in 0..=max {
        let p = a.allocate_bytes(size, 8);
        assert_aligned(p, 8, "configured allocator");
        // SAFETY: `p` has `size` bytes.
        unsafe { fill(p, size, size as u64) };
        blocks.push((p, size));
    }
    for (p, size) in blocks {
        // SAFETY: `p` is live with `size` bytes, freed once.
        unsafe {
            assert!(a.usable_size(p) >= size);
            check(p, size, size as u64, "configured allocator");
            a.deallocate_bytes(p);
        }
    }
}

#[test]
fn static_custom_configuration() {
    assert_eq!(SMALL.bucket_sizes(), &[8, 16, 24]);
    exercise_sizes(&SMALL, scaled(300, 64));
    for size in [1000, 5000, 70 * KIB, MIB] {
        let p = SMALL.allocate_bytes(size, 16);
        assert_aligned(p, 16, "static instance");
        // SAFETY: `p` is live with `size` bytes.
        unsafe {
            fill(p, size, 9);
            check(p, size, 9, "static instance");
            SMALL.deallocate_bytes(p);
        }
    }
    let v: AVec<u64, &Rulloc<3>> = {
        let mut v = AVec::new_in(&SMALL);
        v.extend(0..scaled(10_000, 100) as u64);
        v
    };
    assert_eq!(v.iter().sum::<u64>(), (0..v.len() as u64).sum());
}

#[test]
fn other_custom_configurations() {
    assert_eq!(SINGLE.bucket_sizes(), &[4096]);
    exercise_sizes(&SINGLE, scaled(200, 24));
    let one = Rulloc::<1>::with_bucket_sizes([8]);
    exercise_sizes(&one, scaled(200, 24));
    // Sizes must be multiples of the pointer size (documented rule of
    // `with_bucket_sizes`), but need not be powers of two.
    let odd = Rulloc::<4>::with_bucket_sizes([8, 56, 104, 5008]);
    assert_eq!(odd.bucket_sizes(), &[8, 56, 104, 5008]);
    exercise_sizes(&odd, scaled(300, 24));
    let many = Rulloc::<12>::with_bucket_sizes([
        8, 16, 32, 48, 64, 128, 256, 512, 1024, 4096, 16384, 65536,
    ]);
    exercise_sizes(&many, scaled(2000, 48));
}

// ---------------------------------------------------------- collections

#[test]
fn hashbrown_map_in_rulloc() {
    let a = Rulloc::default();
    let n = scaled(100_000, 300) as u64;
    let mut map = hashbrown::HashMap::new_in(&a);
    for i in 0..n {
        let mut v = AVec::new_in(&a);
        v.extend(0..(i % 17));
        map.insert(i, v);
    }
    assert_eq!(map.len(), n as usize);
    for i in (0..n).step_by(2) {
        let v = map.remove(&i).unwrap();
        assert_eq!(v.len() as u64, i % 17);
    }
    for i in 0..n {
        match map.get(&i) {
            Some(v) => {
                assert!(i % 2 == 1);
                assert!(v.iter().copied().eq(0..(i % 17)));
            }
            None => assert!(i % 2 == 0),
        }
    }
    map.shrink_to_fit();
    assert_eq!(map.len(), (n / 2) as usize);
    let mut strings = hashbrown::HashMap::new_in(&a);
    for i in 0..scaled(10_000, 100) {
        strings.insert(format!("key-{i}"), i);
    }
    assert_eq!(strings["key-42"], 42);
}

#[test]
fn vec_grows_to_millions_of_elements() {
    let a = Rulloc::default();
    let n = scaled(4_000_000, 400);
    let mut v: AVec<u32, &Rulloc> = AVec::new_in(&a);
    for i in 0..n as u32 {
        v.push(i);
    }
    assert_eq!(v.len(), n);
    assert!(v.iter().enumerate().all(|(i, &x)| x as usize == i));
    v.truncate(10);
    v.shrink_to_fit();
    assert_eq!(v.as_slice(), &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);

    // Byte vectors through every size range, growing by `extend`.
    let mut bytes: AVec<u8, &Rulloc> = AVec::new_in(&a);
    let mut total = 0usize;
    while total < scaled(2 * BIG, 16 * KIB) {
        let chunk = (total / 3).max(1);
        bytes.extend(core::iter::repeat_n((total % 251) as u8, chunk));
        total += chunk;
    }
    assert_eq!(bytes.len(), total);
    assert_eq!(bytes[0], 0);
    assert_eq!(*bytes.last().unwrap(), bytes[bytes.len() - 1]);
    let mut cloned = bytes.clone();
    cloned.reverse();
    assert_eq!(cloned[0], bytes[bytes.len() - 1]);
}

#[repr(C, align(4096))]
struct Page([u8; 4096]);

#[repr(C, align(64))]
struct Line([u64; 8]);

#[test]
fn boxes_in_rulloc() {
    let a = Rulloc::default();
    let small = Rulloc::<3>::with_bucket_sizes([8, 16, 24]);
    let b1 = ABox::new_in(42u8, &a);
    let b2 = ABox::new_in(u128::MAX, &a);
    let b3 = ABox::new_in([7u64; 1024], &a);
    let b4 = ABox::new_in(Page([3; 4096]), &a);
    let b5 = ABox::new_in(Line([9; 8]), &small);
    let b7 = ABox::new_in(String::from("hello from a rulloc box"), &small);
    assert_eq!(*b1, 42);
    assert_eq!(*b2, u128::MAX);
    assert!(b3.iter().all(|&x| x == 7));
    assert_aligned(&*b4 as *const Page as *const u8, 4096, "Box<Page>");
    assert!(b4.0.iter().all(|&x| x == 3));
    assert_aligned(&*b5 as *const Line as *const u8, 64, "Box<Line>");
    assert_eq!(b5.0, [9; 8]);
    assert_eq!(b7.as_str(), "hello from a rulloc box");
    let boxes: Vec<ABox<usize, &Rulloc>> = (0..scaled(10_000, 200))
        .map(|i| ABox::new_in(i, &a))
        .collect();
    assert!(boxes.iter().enumerate().all(|(i, b)| **b == i));
}

// ----------------------------------------------------------- mixed sizes

/// A random mix of sizes from 8 B to several MiB, allocated and freed in
/// random order, with contents checked.
#[test]
fn mixed_sizes_random_order() {
    let a = Rulloc::default();
    let mut rng = XorShift::new(7);
    let mut live: Vec<(*mut u8, usize, u64)> = Vec::new();
    for id in 0..scaled(5000, 80) as u64 {
        if !live.is_empty() && rng.chance(2, 5) {
            let (p, size, pid) = live.swap_remove(rng.below(live.len()));
            // SAFETY: `p` is live with `size` bytes; freed once.
            unsafe {
                check(p, size, pid, "mixed");
                a.deallocate_bytes(p);
            }
        }
        let size = match rng.below(50) {
            0 => rng.range(BIG / 2, BIG),
            1..=5 => rng.range(64 * KIB, 512 * KIB),
            6..=20 => rng.range(512, 64 * KIB),
            _ => rng.range(8, 512),
        };
        let p = a.allocate_bytes(size, 8);
        assert_aligned(p, 8, "mixed");
        // SAFETY: `p` has `size` bytes.
        unsafe { fill(p, size, id) };
        live.push((p, size, id));
    }
    for (p, size, id) in live {
        // SAFETY: `p` is live with `size` bytes; freed once.
        unsafe {
            check(p, size, id, "mixed at the end");
            a.deallocate_bytes(p);
        }
    }
}

/// Freed memory is reused: allocating and freeing the same pattern many
/// times works (and, with the real allocator, does not grow the footprint;
/// see `tests/stats.rs`).
#[test]
fn free_and_reallocate_many_times() {
    let a = Rulloc::default();
    for round in 0..scaled(50, 2) as u64 {
        let ptrs: Vec<*mut u8> = (0..scaled(2000, 40))
            .map(|i| {
                let size = 8 + (i % 13) * 24;
                let p = a.allocate_bytes(size, 8);
                assert_aligned(p, 8, "reuse");
                // SAFETY: `p` has `size` bytes.
                unsafe { fill(p, size, round * 10_000 + i as u64) };
                p
            })
            .collect();
        // Free in an order that differs per round: odd blocks, then even.
        for parity in [1, 0] {
            for (i, &p) in ptrs.iter().enumerate().filter(|(i, _)| i % 2 == parity) {
                let size = 8 + (i % 13) * 24;
                // SAFETY: `p` is live with `size` bytes; freed once.
                unsafe {
                    check(p, size, round * 10_000 + i as u64, "reuse");
                    a.deallocate_bytes(p);
                }
            }
        }
    }
}

/// Many instances at once, used interleaved: blocks of one never alias
/// blocks of another, and each frees only its own.
#[test]
fn many_instances_at_once() {
    let n = scaled(64, 3);
    let defaults: Vec<Rulloc> = (0..n).map(|_| Rulloc::new()).collect();
    let customs: Vec<Rulloc<3>> = (0..n)
        .map(|_| Rulloc::with_bucket_sizes([8, 16, 24]))
        .collect();
    let mut blocks: Vec<(usize, bool, *mut u8, usize, u64)> = Vec::new();
    let mut rng = XorShift::new(11);
    for id in 0..(n * scaled(40, 16)) as u64 {
        let inst = rng.below(n);
        let custom = rng.chance(1, 2);
        let size = rng.size(scaled(2 * MIB, 256 * KIB));
        let p = if custom {
            customs[inst].allocate_bytes(size, 16)
        } else {
            defaults[inst].allocate_bytes(size, 16)
        };
        assert_aligned(p, 16, "many instances");
        // SAFETY: `p` has `size` bytes.
        unsafe { fill(p, size, id) };
        blocks.push((inst, custom, p, size, id));
    }
    let mut ranges: Vec<(usize, usize)> = blocks
        .iter()
        .map(|b| (b.2 as usize, b.2 as usize + b.3.max(1)))
        .collect();
    ranges.sort_unstable();
    assert!(
        ranges.windows(2).all(|w| w[0].1 <= w[1].0),
        "blocks of different instances overlap"
    );
    // Free in reverse order.
    for (inst, custom, p, size, id) in blocks.into_iter().rev() {
        // SAFETY: `p` is live in the instance that allocated it; freed once.
        unsafe {
            check(p, size, id, "many instances");
            if custom {
                customs[inst].deallocate_bytes(p);
            } else {
                defaults[inst].deallocate_bytes(p);
            }
        }
    }
}
