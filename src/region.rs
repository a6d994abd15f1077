//! A region: a run of slots owned by one bucket (or one large block), and
//! its three free lists.
//!
//! ```text
//!  Region (slots 5..=5 of a segment, bucket of 32-byte blocks)
//!  start                                                        end
//!  +------+------+------+------+------+------+------+------+- - - - - - -+
//!  | used | free | used | free | used | used | free | used | never used  |
//!  +------+--|---+------+--^-|-+------+------+--^---+------+- - - - - - -+
//!            |             | |                  |          ^ bump
//!            +-------------+ +------------------+
//!  free ------^ (owner only: pop to allocate, push to free)
//!  thread_free: blocks freed by threads that do not hold the owner heap,
//!               pushed with one CAS, taken by the owner with one swap
//! ```
//!
//! The descriptor is not inside the region: it lives in the segment header
//! (`segment.regions[first slot]`), so blocks need no header (see
//! [`crate::block`]). Every slot of a region has a descriptor whose
//! `back_offset` points at the first one, so any block address finds its
//! region in O(1).
//!
//! Invariants:
//!
//! * Only the thread holding the owner heap's lock touches any field except
//!   `thread_free` (and `delayed_next` while the region sits on the heap's
//!   delayed stack, see below).
//! * `used` counts blocks handed out and not yet returned *to the owner*:
//!   blocks sitting in `thread_free` still count, so `used == 0` implies
//!   `thread_free` holds no block.
//! * `thread_free` is either a list of blocks, or exactly [`FULL`]: the owner
//!   sets it to `FULL` (from empty) when it moves the region to its bucket's
//!   full list. The first remote free that sees `FULL` replaces it with its
//!   block and pushes the region on the owner heap's delayed stack, so the
//!   owner learns the region has room again without scanning full lists.
//!   Because only that one free clears `FULL`, a region is on the delayed
//!   stack at most once.
//! * `bump..end` is never-used memory: blocks are carved from it lazily,
//!   a page's worth at a time, so a fresh region costs no writes until used.

use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

use crate::block::{self, Block};

/// `thread_free` value meaning "the owner parked this region as full".
pub(crate) const FULL: usize = 1;

/// How many bytes of blocks [`Region::extend`] carves at a time.
const EXTEND_BYTES: usize = 4096;

/// What a slot descriptor currently describes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub(crate) enum RegionKind {
    /// Never initialised (descriptors start zeroed).
    Unused = 0,
    /// Slot 0: the segment header itself.
    Header,
    /// A free span of slots in the heap's span pool.
    FreeSpan,
    /// A region of equal small blocks belonging to one bucket.
    Small,
    /// A region holding one large block (the dynamic bucket).
    Large,
}

/// A region descriptor (one per slot of a segment; only the first slot's is
/// the "real" one, the others carry `back_offset`).
#[repr(C)]
pub(crate) struct Region {
    /// Owner-local free list: allocation pops, owner frees push.
    pub(crate) free: *mut Block,
    /// Blocks handed out and not yet returned to the owner.
    pub(crate) used: u32,
    /// Blocks that fit in the region.
    pub(crate) capacity: u32,
    /// Size of every block (for `Large`, the whole usable span).
    pub(crate) block_size: usize,
    /// Remote frees (a block list) or [`FULL`].
    pub(crate) thread_free: AtomicUsize,
    /// Next never-used block.
    pub(crate) bump: *mut u8,
    /// End of the last whole block.
    pub(crate) end: *mut u8,
    /// First block.
    pub(crate) start: *mut u8,
    /// Slots in this span (first slot only).
    pub(crate) slot_count: u32,
    /// Slots back to the first slot of this span (every slot of a used span;
    /// first and last slot of a free span).
    pub(crate) back_offset: u32,
    pub(crate) kind: RegionKind,
    /// Whether the region is on its bucket's full list (owner only).
    pub(crate) in_full: bool,
    /// Index of the owning bucket (`Small` only).
    pub(crate) bucket: u16,
    /// Links in the bucket queue, the full list, or a span bin.
    pub(crate) next: *mut Region,
    pub(crate) prev: *mut Region,
    /// Link on the owner heap's delayed stack.
    pub(crate) delayed_next: AtomicPtr<Region>,
}

impl Region {
    /// Turns a freshly allocated span into a region of `block_size` blocks.
    ///
    /// # Safety
    ///
    /// `region` is the first descriptor of a span of `slot_count` slots
    /// starting at `start`, owned by the caller's locked heap.
    pub(crate) unsafe fn init_small(
        region: *mut Region,
        start: *mut u8,
        span_bytes: usize,
        block_size: usize,
        bucket: u16,
    ) {
        let capacity = span_bytes / block_size;
        // SAFETY: caller's contract: the descriptor is ours.
        unsafe {
            (*region).free = ptr::null_mut();
            (*region).used = 0;
            (*region).capacity = capacity as u32;
            (*region).block_size = block_size;
            (*region).thread_free.store(0, Ordering::Relaxed);
            (*region).start = start;
            (*region).bump = start;
            (*region).end = start.add(capacity * block_size);
            (*region).kind = RegionKind::Small;
            (*region).in_full = false;
            (*region).bucket = bucket;
            (*region).next = ptr::null_mut();
            (*region).prev = ptr::null_mut();
        }
    }

    /// Turns a freshly allocated span into one large block, parked as
    /// [`FULL`] so that a remote free of it reaches the owner through the
    /// delayed stack.
    ///
    /// # Safety
    ///
    /// As for [`Region::init_small`].
    pub(crate) unsafe fn init_large(region: *mut Region, start: *mut u8, span_bytes: usize) {
        // SAFETY: caller's contract: the descriptor is ours.
        unsafe {
            (*region).free = ptr::null_mut();
            (*region).used = 1;
            (*region).capacity = 1;
            (*region).block_size = span_bytes;
            (*region).thread_free.store(FULL, Ordering::Relaxed);
            (*region).start = start;
            (*region).bump = start.add(span_bytes);
            (*region).end = start.add(span_bytes);
            (*region).kind = RegionKind::Large;
            (*region).in_full = false;
            (*region).next = ptr::null_mut();
            (*region).prev = ptr::null_mut();
        }
    }

    /// Pops a block from the owner-local free list: the allocation fast path.
    ///
    /// # Safety
    ///
    /// `region` is a live region of the caller's locked heap.
    #[inline(always)]
    pub(crate) unsafe fn pop(region: *mut Region) -> *mut u8 {
        // SAFETY: owner-only fields of a region of our heap; free blocks
        // hold a valid link.
        unsafe {
            let block = (*region).free;
            if !block.is_null() {
                (*region).free = block::next_of(block);
                (*region).used += 1;
            }
            block.cast()
        }
    }

    /// Pushes a block back on the owner-local free list.
    ///
    /// # Safety
    ///
    /// `block` belongs to `region`, is live, and the caller holds the owner
    /// heap.
    #[inline(always)]
    pub(crate) unsafe fn push_local(region: *mut Region, block: *mut u8) {
        // SAFETY: caller's contract.
        unsafe {
            block::set_next(block.cast(), (*region).free);
            (*region).free = block.cast();
            (*region).used -= 1;
        }
    }

    /// Frees `block` from a thread that does not hold the owner heap: one
    /// CAS onto `thread_free`. Returns `true` when this free took the region
    /// off [`FULL`], in which case the caller must push the region on the
    /// owner heap's delayed stack.
    ///
    /// # Safety
    ///
    /// `block` belongs to `region` and is live; nobody else frees it.
    pub(crate) unsafe fn push_remote(region: *mut Region, block: *mut u8) -> bool {
        // SAFETY: `thread_free` is only ever accessed atomically; the block
        // is ours to write until the CAS publishes it.
        let thread_free = unsafe { &(*region).thread_free };
        let mut current = thread_free.load(Ordering::Relaxed);
        loop {
            let was_full = current == FULL;
            let next = if was_full {
                ptr::null_mut()
            } else {
                current as *mut Block
            };
            // SAFETY: see above.
            unsafe { block::set_next(block.cast(), next) };
            match thread_free.compare_exchange_weak(
                current,
                block as usize,
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return was_full,
                Err(seen) => current = seen,
            }
        }
    }

    /// Moves every remotely freed block to the local free list. Returns how
    /// many blocks came back.
    ///
    /// # Safety
    ///
    /// `region` is a live region of the caller's locked heap.
    pub(crate) unsafe fn collect(region: *mut Region) -> u32 {
        // SAFETY: atomic access to thread_free; the blocks we take were
        // published by Release CASes and are ours after the Acquire swap.
        unsafe {
            let thread_free = &(*region).thread_free;
            let head = thread_free.load(Ordering::Relaxed);
            if head == 0 || head == FULL {
                return 0;
            }
            let mut block = thread_free.swap(0, Ordering::Acquire) as *mut Block;
            let mut count = 0;
            while !block.is_null() {
                let next = block::next_of(block);
                block::set_next(block, (*region).free);
                (*region).free = block;
                block = next;
                count += 1;
            }
            (*region).used -= count;
            count
        }
    }

    /// Carves up to a page's worth of never-used blocks onto the free list.
    /// Returns `false` when the region has none left.
    ///
    /// # Safety
    ///
    /// `region` is a live `Small` region of the caller's locked heap.
    pub(crate) unsafe fn extend(region: *mut Region) -> bool {
        // SAFETY: bump..end is never-used memory of this region.
        unsafe {
            let size = (*region).block_size;
            let available = ((*region).end as usize - (*region).bump as usize) / size;
            if available == 0 {
                return false;
            }
            let count = available.min((EXTEND_BYTES / size).max(1));
            let first = (*region).bump;
            // Link first -> first+size -> ... -> last -> old free list.
            let mut block = first;
            for _ in 1..count {
                let next = block.add(size);
                block::set_next(block.cast(), next.cast());
                block = next;
            }
            block::set_next(block.cast(), (*region).free);
            (*region).free = first.cast();
            (*region).bump = first.add(count * size);
            true
        }
    }

    /// Tries to park the region as full: succeeds only if no remote free is
    /// pending (otherwise the caller should [`Region::collect`] instead).
    ///
    /// # Safety
    ///
    /// `region` is a live region of the caller's locked heap.
    pub(crate) unsafe fn try_mark_full(region: *mut Region) -> bool {
        // SAFETY: atomic access.
        unsafe {
            (*region)
                .thread_free
                .compare_exchange(0, FULL, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        }
    }

    /// Clears [`FULL`] when the owner itself frees into a full region. If a
    /// remote free already cleared it, the region is (or was) on the delayed
    /// stack and the owner will find it there.
    ///
    /// # Safety
    ///
    /// `region` is a live region of the caller's locked heap.
    pub(crate) unsafe fn clear_full(region: *mut Region) {
        // SAFETY: atomic access.
        unsafe {
            let _ = (*region).thread_free.compare_exchange(
                FULL,
                0,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }
}
