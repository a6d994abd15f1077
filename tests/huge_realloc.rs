//! `realloc` of a huge block never copies on Linux: it grows in place with
//! `mremap`, or, when the pages after the mapping are taken, moves the whole
//! mapping with `mremap(MREMAP_MAYMOVE | MREMAP_FIXED)` to an aligned
//! address (see `src/large.rs`). These tests take the pages after the block
//! themselves (a one-page mapping right at its end), so growing in place is
//! impossible and the move is what is tested; the counters say no new
//! mapping was made (a copy would map a fresh block), and a word in every
//! page of the block says its contents moved with it.
#![cfg(all(target_os = "linux", not(miri)))]

use std::alloc::{GlobalAlloc, Layout};

mod common;

use common::vm_flags_of;
use rulloc::Rulloc;

const MIB: usize = 1 << 20;
const PAGE: usize = 4096;
/// A huge segment's base alignment (`SEGMENT_SIZE`).
const SEGMENT: usize = 4 * MIB;

/// The word stamped into page `page` of a block by test `id`.
fn stamp_of(id: usize, page: usize) -> usize {
    id.rotate_right(8) ^ (page.wrapping_mul(0x9e37_79b9) | 1)
}

/// Stamps the first word of every page of `block[from..to]`.
///
/// # Safety
///
/// `block` is live with at least `to` bytes.
unsafe fn stamp(block: *mut u8, from: usize, to: usize, id: usize) {
    for page in (from / PAGE)..to.div_ceil(PAGE) {
        // SAFETY: page * PAGE < to, inside the block (caller).
        unsafe {
            block
                .add(page * PAGE)
                .cast::<usize>()
                .write(stamp_of(id, page))
        };
    }
}

/// Checks every page stamped in `block[..to]`.
///
/// # Safety
///
/// As for [`stamp`].
unsafe fn check(block: *const u8, to: usize, id: usize, what: &str) {
    for page in 0..to.div_ceil(PAGE) {
        // SAFETY: page * PAGE < to, inside the block (caller's contract:
        // live with at least `to` bytes).
        let word = unsafe { block.add(page * PAGE).cast::<usize>().read() };
        assert_eq!(
            word,
            stamp_of(id, page),
            "{what}: page {page} of {to} bytes"
        );
    }
}

/// Takes the page right after the block's mapping (which ends where its
/// usable size does), so that it cannot grow in place. Returns the page to
/// give back with [`release`], or `None` if something else holds it
/// already (which blocks growing in place just as well).
///
/// # Safety
///
/// `block` is a live huge block of `a`.
unsafe fn occupy_after(a: &Rulloc, block: *mut u8) -> Option<*mut u8> {
    // SAFETY: caller's contract.
    let end = unsafe { block.add(a.usable_size(block)) };
    // SAFETY: NOREPLACE: fails rather than touch an existing mapping.
    let page = unsafe {
        libc::mmap(
            end.cast(),
            PAGE,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
            -1,
            0,
        )
    };
    if page == libc::MAP_FAILED {
        return None;
    }
    assert_eq!(page.cast::<u8>(), end, "MAP_FIXED_NOREPLACE honoured");
    Some(page.cast())
}

fn release(pages: Vec<*mut u8>) {
    for page in pages {
        // SAFETY: pages mapped by `occupy_after`, used by nobody.
        unsafe { libc::munmap(page.cast(), PAGE) };
    }
}

/// The mapping size of a huge block: from its segment base (the block's
/// address rounded down to 4 MiB, or one segment before an aligned block
/// at a 4 MiB boundary) to the end of its usable size.
///
/// # Safety
///
/// `block` is a live huge block of `a`.
unsafe fn mapping_of(a: &Rulloc, block: *mut u8) -> usize {
    let base = (block.addr() - 1) & !(SEGMENT - 1);
    // SAFETY: caller's contract.
    block.addr() - base + unsafe { a.usable_size(block) }
}

/// 3 MiB grown to 200 MiB in doublings, each time with the pages after it
/// taken: every step moves the mapping (a new address), with no new
/// mapping (a copy would map the larger block fresh), one remap call per
/// step, the counters moved by exactly the mapping's growth, every page's
/// contents intact, and the segment still at a 4 MiB boundary.
#[test]
fn a_growing_huge_block_moves_without_copying() {
    let a = Rulloc::new();
    let id = 1;
    let mut size = 3 * MIB;
    let mut block = a.allocate_bytes(size, 8);
    assert!(!block.is_null());
    // SAFETY: live block of `size` bytes.
    unsafe { stamp(block, 0, size, id) };
    let before = a.stats();
    // SAFETY: live block.
    let first_mapping = unsafe { mapping_of(&a, block) };
    let mut taken = Vec::new();
    let mut steps = 0;
    while size < 200 * MIB {
        let new_size = (size * 2).min(200 * MIB);
        // SAFETY: live block; the old pointer is not used after the call.
        unsafe {
            taken.extend(occupy_after(&a, block));
            let old = block;
            block = a.reallocate_bytes(block, new_size, 8);
            assert!(!block.is_null(), "{new_size} bytes");
            assert_ne!(block, old, "moved: the pages after it were taken");
            assert_eq!(block.addr() % SEGMENT, old.addr() % SEGMENT);
            check(block, size, id, "after the move");
            stamp(block, size, new_size, id);
        }
        size = new_size;
        steps += 1;
        let s = a.stats();
        // SAFETY: live block.
        let (usable, mapping) = unsafe { (a.usable_size(block), mapping_of(&a, block)) };
        assert!(usable >= size, "{s:?}");
        assert_eq!(s.map_calls, before.map_calls, "no new mapping: {s:?}");
        assert_eq!(s.unmap_calls, before.unmap_calls, "{s:?}");
        assert_eq!(s.remap_calls, before.remap_calls + steps, "{s:?}");
        assert_eq!((s.huge_blocks, s.bytes_in_use), (1, usable), "{s:?}");
        assert_eq!(
            s.bytes_mapped,
            before.bytes_mapped - first_mapping + mapping,
            "{s:?}"
        );
        assert_eq!(
            s.bytes_committed,
            before.bytes_committed - first_mapping + mapping,
            "{s:?}"
        );
    }
    // SAFETY: live block of `size` bytes.
    unsafe { check(block, size, id, "at the end") };
    // The mapping's transparent-huge-page advice moved with it.
    let flags = vm_flags_of(block.addr());
    assert!(flags.iter().any(|f| f == "hg"), "{flags:?}");
    // SAFETY: live, freed once.
    unsafe { a.deallocate_bytes(block) };
    release(taken);
    a.collect();
    let s = a.stats();
    assert_eq!(
        (s.bytes_in_use, s.huge_blocks, s.segments, s.bytes_mapped),
        (0, 0, 0, 0),
        "{s:?}"
    );
}

/// A block moved to 64 MiB and shrunk in halvings back to 3 MiB: the
/// shrinks stay in place (`mremap` always can), each a remap call, and the
/// counters follow; no mapping made at all.
#[test]
fn a_moved_huge_block_shrinks_in_place() {
    let a = Rulloc::new();
    let id = 2;
    let block = a.allocate_bytes(8 * MIB, 8);
    // SAFETY: live block of 8 MiB.
    unsafe { stamp(block, 0, 8 * MIB, id) };
    let before = a.stats();
    // SAFETY: live block; the old pointer is not used again.
    let (taken, mut block) = unsafe {
        let taken = occupy_after(&a, block);
        let moved = a.reallocate_bytes(block, 64 * MIB, 8);
        assert_ne!(moved, block);
        stamp(moved, 8 * MIB, 64 * MIB, id);
        (taken, moved)
    };
    let moved_at = block;
    let mut size = 64 * MIB;
    let mut remaps = 1;
    // SAFETY: live block.
    let mut usable = unsafe { a.usable_size(block) };
    while size > 3 * MIB {
        size = (size / 2).max(3 * MIB);
        // SAFETY: live block; shrinking keeps its first `size` bytes.
        unsafe {
            block = a.reallocate_bytes(block, size, 8);
            assert_eq!(block, moved_at, "shrunk in place");
            check(block, size, id, "after shrinking");
        }
        let was = usable;
        // SAFETY: live block.
        usable = unsafe { a.usable_size(block) };
        // (Shrinking by less than half keeps the mapping as it is.)
        if usable != was {
            remaps += 1;
        }
        let s = a.stats();
        assert!(
            usable >= size && (size < was / 2) == (usable < was),
            "{s:?}"
        );
        assert_eq!(s.remap_calls, before.remap_calls + remaps, "{s:?}");
        assert_eq!(s.map_calls, before.map_calls, "{s:?}");
        assert_eq!(s.bytes_in_use, usable, "{s:?}");
    }
    // SAFETY: live, freed once.
    unsafe { a.deallocate_bytes(block) };
    release(taken.into_iter().collect());
    a.collect();
    assert_eq!(a.stats().bytes_mapped, 0);
}

/// A moved block is known at its new address only: it frees there (the
/// segment map and the huge list followed it), its old address is no
/// segment any more (freeing it is fatal: `tests/misuse.rs`,
/// `free_old_address_after_move`), and a neighbour on the huge list
/// freed after the move unlinks cleanly (its link named the old header).
#[test]
fn a_moved_huge_block_frees_at_its_new_address() {
    let a = Rulloc::new();
    a.set_purge_delay_ms(0); // freed huge blocks are unmapped at once
    let older = a.allocate_bytes(5 * MIB, 8);
    let block = a.allocate_bytes(6 * MIB, 8);
    let newer = a.allocate_bytes(7 * MIB, 8);
    // SAFETY: live blocks; the old pointer of the moved one is not used.
    unsafe {
        stamp(block, 0, 6 * MIB, 3);
        let taken = occupy_after(&a, block);
        let before = a.stats();
        let moved = a.reallocate_bytes(block, 30 * MIB, 8);
        assert_ne!(moved, block);
        let s = a.stats();
        assert_eq!(s.map_calls, before.map_calls, "moved, not copied: {s:?}");
        assert_eq!(s.remap_calls, before.remap_calls + 1, "{s:?}");
        check(moved, 6 * MIB, 3, "moved");
        assert_eq!(a.stats().huge_blocks, 3);
        // Neighbours on both sides of it on the list go first.
        a.deallocate_bytes(newer);
        a.deallocate_bytes(older);
        assert!(a.usable_size(moved) >= 30 * MIB);
        a.deallocate_bytes(moved);
        release(taken.into_iter().collect());
    }
    let s = a.stats();
    assert_eq!(
        (s.bytes_in_use, s.huge_blocks, s.huge_cached, s.bytes_mapped),
        (0, 0, 0, 0),
        "{s:?}"
    );
}

/// A 64 MiB-aligned block keeps its alignment when moved: through the
/// C-shaped API, `GlobalAlloc::realloc` (how a `Vec` with that alignment
/// grows) and a realloc asking for less alignment.
#[test]
fn an_aligned_huge_block_stays_aligned_when_moved() {
    let a = Rulloc::new();
    let align = 64 * MIB;
    let block = a.allocate_bytes(10 * MIB, align);
    assert_eq!(block.addr() % align, 0);
    let before = a.stats();
    let mut taken = Vec::new();
    // SAFETY: live blocks; old pointers are not used after their realloc.
    unsafe {
        stamp(block, 0, 10 * MIB, 4);
        taken.extend(occupy_after(&a, block));
        let moved = a.reallocate_bytes(block, 100 * MIB, align);
        assert_ne!(moved, block);
        assert_eq!(moved.addr() % align, 0, "still {align} aligned");
        check(moved, 10 * MIB, 4, "aligned move");
        stamp(moved, 10 * MIB, 100 * MIB, 4);

        taken.extend(occupy_after(&a, moved));
        let layout = Layout::from_size_align(100 * MIB, align).unwrap();
        let grown = GlobalAlloc::realloc(&a, moved, layout, 150 * MIB);
        assert_ne!(grown, moved);
        assert_eq!(grown.addr() % align, 0, "GlobalAlloc::realloc");
        check(grown, 100 * MIB, 4, "GlobalAlloc::realloc");

        // Asking for 16-byte alignment only: the block's segment is still
        // 4 MiB aligned (its header one segment before it).
        taken.extend(occupy_after(&a, grown));
        let plain = a.reallocate_bytes(grown, 160 * MIB, 16);
        assert_ne!(plain, grown);
        assert_eq!(plain.addr() % SEGMENT, 0);
        check(plain, 100 * MIB, 4, "less aligned");
        let s = a.stats();
        assert_eq!(s.map_calls, before.map_calls, "{s:?}");
        assert_eq!(s.remap_calls, before.remap_calls + 3, "{s:?}");
        a.deallocate_bytes(plain);
    }
    release(taken);
    a.collect();
    assert_eq!(a.stats().bytes_mapped, 0);
}

/// A `Vec<u8>` grown by push from 1 MiB to 64 MiB through the
/// `Allocator` interface, without the tests taking the pages after it:
/// the doublings past the largest span (2 MiB) are remaps, in place or
/// moved, never a new mapping.
#[test]
fn a_vec_grows_by_remapping() {
    let a = Rulloc::new();
    let mut vec = allocator_api2::vec::Vec::<u8, _>::with_capacity_in(MIB, &a);
    vec.push(0);
    let before = a.stats();
    for i in 1..64 * MIB {
        vec.push(i as u8);
    }
    let s = a.stats();
    assert!(vec.iter().enumerate().all(|(i, &b)| b == i as u8));
    // Beyond 2 MiB blocks are huge: 8, 16, 32, 64 MiB are resizes (a
    // block's usable size may hold the next doubling already).
    assert!(s.remap_calls >= before.remap_calls + 3, "{s:?}");
    // The 2 MiB span (inside a segment) may map a segment, the first huge
    // block (4 MiB) is mapped; the larger ones map nothing.
    assert!(s.map_calls <= before.map_calls + 2, "{s:?}");
    drop(vec);
}
