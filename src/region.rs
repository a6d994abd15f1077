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
//! `first` points at the region's descriptor, so any block address finds
//! its region in O(1).
//!
//! Invariants:
//!
//! * Only the thread holding the owner heap's lock touches any field except
//!   `thread_free`.
//! * `used` counts blocks handed out and not yet returned *to the owner*:
//!   blocks sitting in `thread_free` still count, so `used == 0` implies
//!   `thread_free` holds no block.
//! * `thread_free` is either a list of blocks, or exactly [`FULL`]: the owner
//!   sets it to `FULL` (from empty) when it moves the region to its bucket's
//!   full list. The first remote free that sees `FULL` clears it and pushes
//!   its *block* (not the region) on the owner heap's [`DelayedStack`]; the
//!   owner frees those blocks as its own, which moves their regions back to
//!   the queue, so it learns a region has room again without scanning full
//!   lists. Blocks are unique, so nothing is ever on the stack twice, and a
//!   stale entry cannot exist: a region's state is only ever decided by the
//!   owner when it frees the block.
//! * Only remote frees clear `FULL`. When the owner's own free takes a
//!   region off the full list, the mark stays (an atomic read-modify-write
//!   saved per unpark, and another per re-park, which finds the mark
//!   already set): a queued region may carry `FULL`, and then its next
//!   remote free takes the delayed-stack route, which is correct for any
//!   region. Hence: a region on the full list has `FULL`, or one of its
//!   blocks is on the delayed stack (the free that cleared the mark after
//!   [`Region::try_mark_full`] read it), and that block brings it back.
//! * `bump..end` is never-used memory: blocks are carved from it lazily,
//!   a page's worth at a time, so a fresh region costs no writes until used.
//!
//! Secure build (`secure` feature), in addition:
//!
//! ```text
//!  grid_origin (span start)  start                                    end
//!  +-------------------------+------+------+------+- - - - - - - - - -+
//!  | live map (whole blocks, | blk0 | blk1 | blk2 |                    |
//!  | 1 byte per grid slot)   |      |      |      |                    |
//!  +-------------------------+------+------+------+- - - - - - - - - -+
//!  grid slot: 0 .. m-1         m      m+1    m+2        .. grid_slots-1
//!  live byte: MAP_SLOT         0/1    0/1    0/1
//! ```
//!
//! * The block grid tiles the whole span from `grid_origin`, the map's own
//!   `m` slots included, so one address (the span start, on the
//!   descriptor's first cache line) serves as the origin of both the index
//!   and the live map: `live byte = grid_origin + index`. The map's own
//!   slots hold [`MAP_SLOT`], which every check refuses.
//! * A block's live byte is 1 exactly while it is handed out, 0 otherwise:
//!   `pop` sets it (a 1 there means a forged link), every free clears it (a
//!   0 there is a double free), local, remote (in `collect`) or delayed
//!   alike. Only the owner touches the map. A byte, not a bit: testing and
//!   updating it is a compare and a store at `grid_origin + index` (a bit
//!   costs a shift for the word, a load, a bit reset, a compare and a
//!   store), about ten instructions less per allocation and free, for one
//!   byte per grid slot: 12.5 % of a region of 8-byte blocks, 3 % of one of
//!   32-byte blocks, under 1.6 % from 64 bytes up.
//! * Links on both free lists are stored XOR-ed with `key` (random, odd).
//!   A block is validated *before* its link is read: `pop` checks the head,
//!   `collect` each block it walks, so a corrupted link is reported, never
//!   followed. (Keyed block *indices* instead, the head an index too, let
//!   `pop` validate with one compare against `grid_slots`: four instructions
//!   less per allocation, pair32 97 instead of 101 per pair, but 25 % more
//!   time there and 40 % in vec-push, because `start + index * block_size`
//!   puts a multiply on the dependency chain from one allocation to the
//!   next, where with pointers the `index_of` check sits beside it.)
//! * Allocation order is random: [`Region::extend`] links each batch of
//!   never-used blocks in windows of [`WINDOW`] (8) neighbours, the windows
//!   in address order, each window's blocks from a random start with a
//!   random odd stride (32 orders per window, chosen independently for
//!   every window from the region's key and the window's address). Which
//!   of its 8 neighbours the next allocation gets is unpredictable without
//!   the key, while allocations that follow each other stay on the same
//!   few cache lines, as in the default build. (Shuffling the whole
//!   4 KiB batch instead, as earlier versions did, made bench `box-tree`,
//!   trees of small nodes built, walked and dropped in a loop, 5-8 %
//!   slower than the same build with sequential order; with windows it
//!   runs as fast as sequential order.) Blocks reused through the free
//!   lists come back in free order, as in the default build.
//! * [`Region::index_of`] maps an address to its grid slot with one
//!   multiply, one rotate and one compare against `grid_slots` (exact
//!   division by `block_size`, constants `inverse` and `shift`): anything
//!   that is not a slot start of this region lands at or above
//!   `grid_slots`, null included, so `pop` needs no separate test for an
//!   empty list.
//! * `grid_slots` is 0 in every descriptor whose kind is not `Small`
//!   (large regions, free and unused spans, the header; see
//!   [`Region::set_kind`]), so an index below it also proves the kind.

use crate::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use core::ptr;

use crate::block::{self, Block};

/// `thread_free` value meaning "the owner parked this region as full".
pub(crate) const FULL: usize = 1;

/// How many bytes of blocks [`Region::extend`] carves at a time.
const EXTEND_BYTES: usize = 4096;

/// Secure build: [`Region::extend`] hands its batch out in windows of
/// this many neighbouring blocks, each in a random order (a power of two,
/// so that every odd stride walks a whole window).
const WINDOW: usize = 8;

/// Secure build: the live-map byte of each grid slot the map itself
/// occupies: neither 0 (free) nor 1 (allocated), so allocation, free and
/// realloc all refuse a pointer to such a slot.
const MAP_SLOT: u8 = 2;

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
/// the "real" one, the others point at it through `first`).
///
/// Field order matters. The descriptor is exactly 128 bytes on 64-bit
/// targets and 64-byte aligned, so finding a slot's descriptor is a shift,
/// not a multiply, and each descriptor is two whole cache lines:
///
/// ```text
///  line 1: the owner's alloc and free      line 2: everything else
///  free used bucket kind in_full shift     thread_free  next  prev
///  block_size first                        bump end start freed_at
///  key inverse grid_origin grid_slots      slot_count dirty
/// ```
///
/// The owner's fast paths (and the secure build's checks, the layout
/// check included) read and write line 1 only. `thread_free`, the one
/// field other threads write, is alone with cold fields on line 2, so a
/// remote free's CAS does not take the line the owner is allocating from
/// away from its core (false sharing between the two would cost the owner
/// a cache miss per remote free). `prev` is read by the owner's free only
/// when its region empties.
#[repr(C, align(64))]
pub(crate) struct Region {
    // ---- line 1: the owner's fast paths
    /// Owner-local free list: allocation pops, owner frees push.
    pub(crate) free: *mut Block,
    /// Blocks handed out and not yet returned to the owner.
    pub(crate) used: u32,
    /// Index of the owning bucket (`Small` only; at most 254 buckets).
    pub(crate) bucket: u8,
    pub(crate) kind: RegionKind,
    /// Whether the region is on its bucket's full list (owner only).
    pub(crate) in_full: bool,
    /// Trailing zero bits of `block_size`.
    pub(crate) shift: u8,
    /// Size of every block (for `Large`, the whole usable span).
    pub(crate) block_size: usize,
    /// The first descriptor of this span (in every slot of a used span;
    /// in the first and last slot of a free span).
    pub(crate) first: *mut Region,
    /// Secure build: the key free-list links are encoded with (0 otherwise).
    pub(crate) key: usize,
    /// With `block_size = d << shift` (`d` odd): the inverse of `d` modulo
    /// `2^usize::BITS`. See [`Region::index_of`].
    pub(crate) inverse: usize,
    /// The span's start: slot 0 of the block grid (see
    /// [`Region::index_of`]), and in the secure build the live map, one
    /// byte per grid slot (see the module docs). In the default build the
    /// first block is here too (`start`).
    pub(crate) grid_origin: *mut u8,
    /// Slots of the block grid: how many blocks of `block_size` fit in the
    /// span, the secure build's live map included (a word: the secure
    /// build compares [`Region::index_of`] with it on every allocation and
    /// free). 0 in every descriptor whose kind is not `Small` (set by
    /// `init_large` and [`Region::set_kind`]), so that an index below it
    /// also says the descriptor is a small region's: the secure free's
    /// fast path does not read `kind`.
    pub(crate) grid_slots: usize,
    // ---- line 2: remote frees and cold fields
    /// Remote frees (a block list) or [`FULL`].
    pub(crate) thread_free: AtomicUsize,
    pub(crate) next: *mut Region,
    /// Links in the bucket queue, the full list, or a span bin.
    pub(crate) prev: *mut Region,
    /// Next never-used block.
    pub(crate) bump: *mut u8,
    /// End of the last whole block.
    pub(crate) end: *mut u8,
    /// First block (after the live map, in the secure build).
    pub(crate) start: *mut u8,
    /// Free spans only: since when (ms, see [`crate::platform::now_ms`])
    /// it has been free, and (`dirty`) whether its pages may hold physical
    /// memory; once purged (clean), when it was purged (0: never, or by a
    /// collect), for the heap's purge back-off.
    pub(crate) freed_at: u64,
    /// Slots in this span (first slot only).
    pub(crate) slot_count: u32,
    /// Free spans only: whether its pages may hold physical memory (see
    /// `freed_at`).
    pub(crate) dirty: bool,
}

#[cfg(all(target_pointer_width = "64", not(loom)))]
const _: () = {
    assert!(size_of::<Region>() == 128);
    assert!(core::mem::offset_of!(Region, grid_slots) == 56);
    assert!(core::mem::offset_of!(Region, thread_free) == 64);
};

/// The inverse of the odd number `d` modulo `2^usize::BITS` (Newton's
/// iteration: `d` is its own inverse modulo 8, and every step doubles the
/// number of correct low bits).
const fn odd_inverse(d: usize) -> usize {
    let mut inverse = d;
    let mut correct_bits = 3;
    while correct_bits < usize::BITS {
        inverse = inverse.wrapping_mul(2usize.wrapping_sub(d.wrapping_mul(inverse)));
        correct_bits *= 2;
    }
    inverse
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
        span_start: *mut u8,
        span_bytes: usize,
        block_size: usize,
        bucket: u8,
    ) {
        let grid_slots = span_bytes / block_size;
        let mut map_blocks = 0;
        let mut key = 0;
        if block::SECURE {
            // The live map takes whole blocks at the start, so every block
            // keeps its natural alignment: a byte for every grid slot, its
            // own slots included, which hold `MAP_SLOT` so that no check
            // ever takes them for a block.
            map_blocks = grid_slots.div_ceil(block_size);
            debug_assert!(map_blocks < grid_slots);
            // SAFETY: the map (`grid_slots` bytes, at most `map_blocks`
            // blocks) lies inside the caller's span.
            unsafe {
                span_start.write_bytes(MAP_SLOT, map_blocks);
                span_start
                    .add(map_blocks)
                    .write_bytes(0, grid_slots - map_blocks);
            }
            key = crate::misuse::random_key(region.addr()) | 1;
        }
        // SAFETY: caller's contract: the descriptor is ours, and the
        // blocks lie inside the span.
        unsafe {
            let start = span_start.add(map_blocks * block_size);
            (*region).free = ptr::null_mut();
            (*region).used = 0;
            (*region).grid_origin = span_start;
            (*region).grid_slots = grid_slots;
            (*region).block_size = block_size;
            (*region).thread_free.store(0, Ordering::Relaxed);
            (*region).start = start;
            (*region).bump = start;
            (*region).end = span_start.add(grid_slots * block_size);
            (*region).kind = RegionKind::Small;
            (*region).in_full = false;
            (*region).bucket = bucket;
            (*region).next = ptr::null_mut();
            (*region).prev = ptr::null_mut();
            (*region).key = key;
            (*region).shift = block_size.trailing_zeros() as u8;
            (*region).inverse = odd_inverse(block_size >> block_size.trailing_zeros());
        }
    }

    /// The grid slot of `block`: its index among the blocks of
    /// `block_size` that tile the span from `grid_origin`, or a number
    /// `>= grid_slots` when `block` is not the start of one of them
    /// (outside the span, or inside a block). No division and no second
    /// compare: with `block_size = d << shift`, `d` odd, the offset from
    /// `grid_origin` is a multiple of `block_size` exactly when
    /// `rotate_right(offset * inverse(d), shift)` is at most
    /// `usize::MAX / block_size`, and then that value *is* the quotient
    /// (exact division by multiplication, Hacker's Delight §10-17). A
    /// pointer below `grid_origin` wraps to an offset near
    /// `2^usize::BITS`, whose quotient (if any) is far above any slot
    /// count; so does null, as a region never reaches the top of the
    /// address space. In the secure build the first slots hold the live
    /// map, whose bytes for them are [`MAP_SLOT`].
    ///
    /// # Safety
    ///
    /// `region` is a descriptor of a live segment. (For any kind but
    /// `Small` the result means nothing, but `grid_slots` is 0 there, so
    /// no index passes the compare with it.)
    #[inline(always)]
    pub(crate) unsafe fn index_of(region: *mut Region, block: *const u8) -> usize {
        // SAFETY: immutable fields of a live small region.
        unsafe {
            let offset = block.addr().wrapping_sub((*region).grid_origin.addr());
            offset
                .wrapping_mul((*region).inverse)
                .rotate_right(u32::from((*region).shift))
        }
    }

    /// Whether `block` is the start of one of the region's blocks (in the
    /// secure build: not one of the live map's own grid slots).
    ///
    /// # Safety
    ///
    /// `region` is a live small region. The secure build reads `block`'s
    /// live byte: the caller holds the owner heap, or `block` is a live
    /// block of the caller's, whose byte nobody else writes (a map slot's
    /// byte is never written after `init_small`).
    pub(crate) unsafe fn is_block_start(region: *mut Region, block: *const u8) -> bool {
        // SAFETY: forwarded; an index below `grid_slots` is inside the map.
        unsafe {
            let index = Self::index_of(region, block);
            index < (*region).grid_slots
                && !(block::SECURE && *(*region).grid_origin.add(index) == MAP_SLOT)
        }
    }

    /// Secure build: the live-map byte of `block`, or `None` when `block`
    /// is not on the block grid (the byte is then [`MAP_SLOT`] for the
    /// map's own slots).
    ///
    /// # Safety
    ///
    /// `region` is a live small region of the secure build.
    #[inline(always)]
    unsafe fn live_byte(region: *mut Region, block: *const u8) -> Option<*mut u8> {
        // SAFETY: an index below `grid_slots` is inside the map.
        unsafe {
            let index = Self::index_of(region, block);
            if index >= (*region).grid_slots {
                return None;
            }
            Some((*region).grid_origin.add(index))
        }
    }

    /// Secure build: clears the live byte of `block`, which is being freed,
    /// and returns `true`; returns `false` (changing nothing) when `block`
    /// is not the start of one of the region's blocks or is not allocated.
    /// The free fast path then hands the pointer to the checked path, which
    /// says which misuse it is (see [`Region::release_live`]).
    ///
    /// # Safety
    ///
    /// `region` is a live small region of the secure build, owned by the
    /// caller's heap.
    #[inline(always)]
    pub(crate) unsafe fn try_release_live(region: *mut Region, block: *const u8) -> bool {
        // SAFETY: forwarded; only the owner touches the map.
        unsafe {
            match Self::live_byte(region, block) {
                Some(live) if *live == 1 => {
                    *live = 0;
                    true
                }
                _ => false,
            }
        }
    }

    /// Secure build: clears the live byte of `block`, which is being freed.
    /// Stops the process with `invalid` if `block` is not the start of one
    /// of the region's blocks, and with "double free of" if it is not
    /// allocated.
    ///
    /// # Safety
    ///
    /// `region` is a live small region of the secure build, owned by the
    /// caller's heap.
    #[inline(always)]
    pub(crate) unsafe fn release_live(region: *mut Region, block: *const u8, invalid: &str) {
        // SAFETY: forwarded; only the owner touches the map.
        unsafe {
            let live = match Self::live_byte(region, block) {
                Some(live) if *live != MAP_SLOT => live,
                _ => crate::misuse::fatal(invalid, block),
            };
            if *live != 1 {
                crate::misuse::fatal("double free of", block);
            }
            *live = 0;
        }
    }

    /// Secure build: whether `block` is one of the region's blocks and
    /// currently allocated (as far as the owner knows).
    ///
    /// # Safety
    ///
    /// `region` is a live small region of the secure build, owned by the
    /// caller's heap.
    pub(crate) unsafe fn is_live(region: *mut Region, block: *const u8) -> bool {
        // SAFETY: forwarded; the map covers every block index.
        unsafe { Self::live_byte(region, block).is_some_and(|live| *live == 1) }
    }

    /// Gives a descriptor a kind other than `Small` (a span handed out or
    /// freed, the segment header), and no grid slots with it (see
    /// `grid_slots`).
    ///
    /// # Safety
    ///
    /// `region` is a descriptor of a segment owned by the caller's heap.
    #[inline]
    pub(crate) unsafe fn set_kind(region: *mut Region, kind: RegionKind) {
        debug_assert!(
            kind != RegionKind::Small,
            "small regions come from init_small"
        );
        // SAFETY: caller's contract.
        unsafe {
            (*region).kind = kind;
            (*region).grid_slots = 0;
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
            // 0, not 1: see `grid_slots`.
            (*region).grid_slots = 0;
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
    /// Null when the list is empty, or (secure build) when its head is not a
    /// free block of the region: then `free` stays non-null, and the caller
    /// must stop the process with [`corrupted`] instead of retrying.
    ///
    /// Secure build: the head is checked *before* its link is read, and its
    /// live byte set before it is handed out. An overwritten link decodes
    /// to a random address, which is caught when it reaches the head, as
    /// one that is not a block start of this region (so it is never
    /// dereferenced); a forged link to an allocated block (a stale encoded
    /// link copied into another free block, say) is caught by its live
    /// byte, so no block is ever handed out twice.
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
            if block::SECURE {
                // Null is off the grid too (see `index_of`): one test for
                // an empty list and a corrupted one. Either is sorted out
                // by the caller's slow path (see `pop`'s doc): no call here
                // keeps the fast path free of a stack frame.
                let Some(live) = Self::live_byte(region, block.cast()) else {
                    return ptr::null_mut();
                };
                // The head is a block of this region, so its link may be
                // read; read before the live byte is written, so the load
                // does not wait behind that store.
                let next = block::next_of(block, (*region).key);
                // A forged link to an allocated block.
                if *live != 0 {
                    return ptr::null_mut();
                }
                *live = 1;
                (*region).free = next;
            } else {
                if block.is_null() {
                    return ptr::null_mut();
                }
                (*region).free = block::next_of(block, (*region).key);
            }
            (*region).used += 1;
            block.cast()
        }
    }

    /// Frees `block` from a thread that does not hold the owner heap: one
    /// CAS onto `thread_free`. Returns `true` when the region was parked
    /// [`FULL`]: then this call cleared the mark instead of pushing, and the
    /// caller must push `block` on the owner heap's [`DelayedStack`].
    ///
    /// # Safety
    ///
    /// `block` belongs to `region` and is live; nobody else frees it.
    pub(crate) unsafe fn push_remote(region: *mut Region, block: *mut u8) -> bool {
        // SAFETY: `thread_free` is only ever accessed atomically; the block
        // is ours to write until the CAS publishes it.
        let thread_free = unsafe { &(*region).thread_free };
        // SAFETY: immutable fields of a live region.
        let (key, kind) = unsafe { ((*region).key, (*region).kind) };
        // Secure build: an interior pointer (or one into the live map,
        // below `start`) is caught here; a double free when the owner
        // collects the block (its live byte is then 0). The live map is
        // the owner's, so it is not read here. The grid is tested first: a
        // large region has no grid slots (and its `inverse` and `shift`
        // are stale, which only feed arithmetic), so only a failed test
        // costs the look at `kind`.
        if block::SECURE {
            // SAFETY: fields of a live region, read, never followed.
            let (index, grid_slots, start) = unsafe {
                (
                    Self::index_of(region, block),
                    (*region).grid_slots,
                    (*region).start,
                )
            };
            if (index >= grid_slots || block < start) && kind == RegionKind::Small {
                crate::misuse::fatal("free of invalid pointer", block);
            }
        }
        let mut current = thread_free.load(Ordering::Relaxed);
        loop {
            if current == FULL {
                match thread_free.compare_exchange_weak(
                    FULL,
                    0,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => return true,
                    Err(seen) => current = seen,
                }
                continue;
            }
            // SAFETY: `block` is live and nobody else frees it (caller's
            // contract): its link word is ours until the CAS publishes it.
            unsafe { block::set_next(block.cast(), current as *mut Block, key) };
            match thread_free.compare_exchange_weak(
                current,
                block as usize,
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return false,
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
            let first = thread_free.swap(0, Ordering::Acquire) as *mut Block;
            let mut block = first;
            let mut last = first;
            let mut count = 0;
            // Read once: the compiler cannot tell that the link written
            // below does not alias the descriptor.
            let key = (*region).key;
            let check = block::SECURE && (*region).kind == RegionKind::Small;
            // Both lists' links are encoded with the same key, so the
            // remote list is spliced in front of the local one as it is:
            // walked (to count its blocks and, secure build, check each),
            // and only its last link rewritten.
            while !block.is_null() {
                if check {
                    // Checked before its link is read: the head passed
                    // `push_remote`'s check, the others come from links.
                    Self::release_live(region, block.cast(), "corrupted free list in region");
                }
                last = block;
                block = block::next_of(block, key);
                count += 1;
            }
            block::set_next(last, (*region).free, key);
            (*region).free = first;
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
            let key = (*region).key;
            if block::SECURE && count > 1 {
                // Randomised order, window by window (see the module
                // docs): windows of `WINDOW` neighbouring blocks are handed
                // out in address order, the blocks of each from a random
                // start with a random odd stride, five bits of randomness
                // per window: the region's secret key mixed with the
                // window's address, so nothing shared is touched. Windows
                // are pushed from the last to the first, so the first
                // window's blocks are handed out first.
                const BITS: u32 = WINDOW.trailing_zeros() + (WINDOW / 2).trailing_zeros();
                let mut head = (*region).free;
                let mut window = (count - 1) / WINDOW * WINDOW;
                let (mut random, mut random_bits) = (0, 0);
                loop {
                    let length = (count - window).min(WINDOW);
                    let base = first.add(window * size);
                    if random_bits < BITS {
                        random = crate::misuse::mix(key ^ base.addr());
                        random_bits = usize::BITS;
                    }
                    if length == WINDOW {
                        // A whole window: a fixed trip count and a mask,
                        // so the loop unrolls without a branch per block.
                        let stride = (random >> WINDOW.trailing_zeros()) % (WINDOW / 2) * 2 + 1;
                        let mut index = random % WINDOW;
                        for _ in 0..WINDOW {
                            let block = base.add(index * size).cast::<Block>();
                            block::set_next(block, head, key);
                            head = block;
                            index = (index + stride) % WINDOW;
                        }
                    } else {
                        // The batch's last window, cut short: a random
                        // start, forwards or backwards (1 and `length - 1`
                        // are coprime to any length).
                        let mut index = random % length;
                        let stride = if random & WINDOW != 0 { 1 } else { length - 1 };
                        for _ in 0..length {
                            let block = base.add(index * size).cast::<Block>();
                            block::set_next(block, head, key);
                            head = block;
                            index += stride;
                            if index >= length {
                                index -= length;
                            }
                        }
                    }
                    random >>= BITS;
                    random_bits -= BITS;
                    if window == 0 {
                        break;
                    }
                    window -= WINDOW;
                }
                (*region).free = head;
            } else {
                // Link first -> first+size -> ... -> last -> old free list.
                let mut block = first;
                for _ in 1..count {
                    let next = block.add(size);
                    block::set_next(block.cast(), next.cast(), key);
                    block = next;
                }
                block::set_next(block.cast(), (*region).free, key);
                (*region).free = first.cast();
            }
            (*region).bump = first.add(count * size);
            true
        }
    }

    /// Tries to park the region as full: succeeds if it is still marked
    /// [`FULL`] from an earlier parking (no atomic write then), or if no
    /// remote free is pending and the mark can be set; otherwise the caller
    /// should [`Region::collect`] instead.
    ///
    /// A remote free may clear a mark this call has just read: its block is
    /// then on the delayed stack, and freeing it takes the region off the
    /// full list again (see the module's invariants).
    ///
    /// # Safety
    ///
    /// `region` is a live region of the caller's locked heap.
    pub(crate) unsafe fn try_mark_full(region: *mut Region) -> bool {
        // SAFETY: atomic access.
        let mark = unsafe { &(*region).thread_free };
        mark.load(Ordering::Relaxed) == FULL
            || mark
                .compare_exchange(0, FULL, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

/// Secure build: a free list of `region` held something that is not a
/// free block of it (an overwritten or forged link).
#[cold]
#[inline(never)]
pub(crate) fn corrupted(region: *mut Region) -> ! {
    crate::misuse::fatal("corrupted free list in region", region.cast())
}

/// A heap's stack of blocks freed by other threads into regions that were
/// parked [`FULL`] (Treiber stack: other threads only push; the owner takes
/// the whole stack with one swap, so there is no ABA). Links are the
/// blocks' first words, unencoded.
pub(crate) struct DelayedStack {
    head: AtomicPtr<Block>,
}

impl DelayedStack {
    pub(crate) fn new() -> Self {
        Self {
            head: AtomicPtr::new(ptr::null_mut()),
        }
    }

    /// Pushes `block`.
    ///
    /// # Safety
    ///
    /// `block` is a live block being freed by the caller (see
    /// [`Region::push_remote`]); nobody else uses it.
    pub(crate) unsafe fn push(&self, block: *mut u8) {
        let block = block.cast::<Block>();
        let mut head = self.head.load(Ordering::Relaxed);
        loop {
            // SAFETY: the block is ours until the CAS publishes it.
            unsafe { ptr::addr_of_mut!((*block).next).write(head) };
            match self
                .head
                .compare_exchange_weak(head, block, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(seen) => head = seen,
            }
        }
    }

    /// Takes the whole stack (owner only); walk it with [`DelayedStack::next`].
    pub(crate) fn take_all(&self) -> *mut Block {
        if self.head.load(Ordering::Relaxed).is_null() {
            return ptr::null_mut();
        }
        self.head.swap(ptr::null_mut(), Ordering::Acquire)
    }

    /// The block after `block` in a stack returned by
    /// [`DelayedStack::take_all`]. Read it before freeing `block`.
    ///
    /// # Safety
    ///
    /// `block` came from such a stack.
    pub(crate) unsafe fn next(block: *mut Block) -> *mut Block {
        // SAFETY: the push that published `block` wrote its link first.
        unsafe { ptr::addr_of!((*block).next).read() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small region descriptor over a fake span at `start` (never
    /// dereferenced: `index_of` only does arithmetic on addresses).
    fn region_at(start: usize, span: usize, block_size: usize) -> Region {
        let mut region: Region = unsafe_zeroed();
        region.start = ptr::without_provenance_mut(start);
        region.grid_origin = region.start;
        region.grid_slots = span / block_size;
        region.block_size = block_size;
        region.shift = block_size.trailing_zeros() as u8;
        region.inverse = odd_inverse(block_size >> region.shift);
        region
    }

    fn unsafe_zeroed() -> Region {
        // SAFETY: every field of a Region is valid all-zero (null pointers,
        // zero integers, `RegionKind::Unused`, an empty atomic).
        unsafe { core::mem::zeroed() }
    }

    #[test]
    fn odd_inverses_are_inverses() {
        for d in (1..10_000usize)
            .step_by(2)
            .chain([usize::MAX, usize::MAX - 2])
        {
            assert_eq!(d.wrapping_mul(odd_inverse(d)), 1, "d = {d}");
        }
    }

    /// Secure build: every batch `extend` links holds each of its blocks
    /// once, its windows of `WINDOW` neighbours in address order, and each
    /// window in an order of its own: fails when the order is sequential
    /// (too many blocks followed by their right neighbour), or the same in
    /// every region (the first batch's order never differs between fresh
    /// regions, whose keys differ).
    #[cfg(feature = "secure")]
    #[test]
    fn extend_randomises_the_order_within_windows() {
        const SPAN: usize = 16 << 10;
        let rounds = if cfg!(miri) { 3 } else { 16 };
        let sizes: &[usize] = if cfg!(miri) {
            &[16, 48, 1024]
        } else {
            &[8, 16, 24, 32, 48, 112, 512, 1024, 2048]
        };
        for &size in sizes {
            let mut first_batches = std::collections::BTreeSet::new();
            let (mut pairs, mut sequential) = (0, 0);
            for _ in 0..rounds {
                let mut memory = std::vec![0u64; SPAN / 8];
                let mut descriptor = unsafe_zeroed();
                let region = ptr::addr_of_mut!(descriptor);
                // SAFETY: a span of SPAN bytes owned by this test, and a
                // descriptor nobody else sees.
                let (start, capacity, key) = unsafe {
                    Region::init_small(region, memory.as_mut_ptr().cast(), SPAN, size, 0);
                    let start = (*region).start;
                    let map_blocks = (start.addr() - (*region).grid_origin.addr()) / size;
                    (start, (*region).grid_slots - map_blocks, (*region).key)
                };
                let mut seen = std::vec![false; capacity];
                let mut batch_start = 0;
                let mut batches = std::vec::Vec::new();
                // SAFETY: `region` is the test's own descriptor, initialised
                // over `memory`; the free list is walked and emptied before
                // each extend, so it holds exactly the new batch.
                while unsafe { Region::extend(region) } {
                    let mut batch = std::vec::Vec::new();
                    // SAFETY: the test's own initialised descriptor, which
                    // nobody else sees.
                    let mut block = unsafe { (*region).free };
                    while !block.is_null() {
                        let offset = block.addr() - start.addr();
                        assert_eq!(offset % size, 0, "size {size}: not a block start");
                        let index = offset / size;
                        assert!(index < capacity && !seen[index], "size {size}: {index}");
                        seen[index] = true;
                        batch.push(index - batch_start);
                        // SAFETY: a free block of the region.
                        block = unsafe { block::next_of(block, key) };
                    }
                    // SAFETY: the test's own descriptor, which nobody else
                    // sees; the batch just walked is dropped from its list.
                    unsafe { (*region).free = ptr::null_mut() };
                    let windows: std::vec::Vec<usize> = batch.iter().map(|i| i / WINDOW).collect();
                    assert!(
                        windows.windows(2).all(|w| w[0] <= w[1]),
                        "size {size}: windows out of order: {batch:?}"
                    );
                    let mut sorted = batch.clone();
                    sorted.sort_unstable();
                    assert!(sorted.iter().copied().eq(0..batch.len()), "size {size}");
                    batch_start += batch.len();
                    batches.push(batch);
                }
                assert!(
                    seen.iter().all(|&s| s),
                    "size {size}: a block was never linked"
                );
                for batch in &batches {
                    pairs += batch.len().saturating_sub(1);
                    sequential += batch.windows(2).filter(|w| w[1] == w[0] + 1).count();
                }
                first_batches.insert(batches[0].clone());
            }
            // Over all batches of this size: a window is popped in address
            // order with probability 1/4 (stride 7 pushed), so about a
            // fifth of the pairs are sequential; a sequential carve makes
            // them all. (Per batch the fraction varies too much: a batch of
            // ten windows has seven or more in order about once in a
            // hundred.)
            if pairs >= 64 {
                assert!(
                    sequential * 2 < pairs,
                    "size {size}: {sequential} of {pairs} neighbours in address order"
                );
            }
            if EXTEND_BYTES / size > 1 {
                assert!(
                    first_batches.len() > 1,
                    "size {size}: one order for every region"
                );
            }
        }
    }

    /// `index_of` is below capacity exactly for block starts, and is then
    /// their index; everything else (interior, before, after, far away)
    /// lands at or above capacity.
    #[test]
    fn index_of_accepts_exactly_the_block_starts() {
        #[cfg(target_pointer_width = "64")]
        let start = 0x7f00_0040_2000usize;
        #[cfg(not(target_pointer_width = "64"))]
        let start = 0x4040_2000usize;
        let mut sizes: std::vec::Vec<usize> = (8..=1024).step_by(8).collect();
        sizes.extend((3..=20).map(|shift| 1 << shift));
        sizes.extend([1280, 3 << 10, 24 << 10, 40 << 10, 96 << 10, 640 << 10]);
        for block_size in sizes {
            let span = (64 << 10usize).max(4 * block_size);
            let mut region = region_at(start, span, block_size);
            let region = ptr::addr_of_mut!(region);
            let capacity = span / block_size;
            let check = |address: usize| {
                // SAFETY: `index_of` reads the descriptor only.
                let index = unsafe { Region::index_of(region, ptr::without_provenance(address)) };
                let offset = address.wrapping_sub(start);
                let is_start =
                    address >= start && offset % block_size == 0 && offset / block_size < capacity;
                assert_eq!(
                    index < capacity,
                    is_start,
                    "size {block_size}, offset {offset:#x}"
                );
                if is_start {
                    assert_eq!(index, offset / block_size);
                }
            };
            let near = [start, start + span - 3 * block_size];
            // Every byte natively; under Miri (pure arithmetic, but
            // interpreted) eight points per block, interior ones included.
            let step = if cfg!(miri) {
                (block_size / 8).max(1)
            } else {
                1
            };
            for base in near {
                for delta in (0..6 * block_size).step_by(step) {
                    check(base.wrapping_sub(3 * block_size).wrapping_add(delta));
                }
            }
            for far in [
                0,
                1,
                8,
                start - (4 << 20),
                start + (4 << 20),
                usize::MAX - 7,
            ] {
                check(far);
            }
        }
    }
}

/// loom models of the lock-free parts: run with
/// `RUSTFLAGS="--cfg loom" cargo test -p rulloc --lib --release loom`.
#[cfg(all(test, loom))]
mod loom_models {
    use super::*;
    use core::cell::UnsafeCell;
    use loom::sync::Arc;
    use loom::thread;

    /// A region and its heap's delayed stack, shared between model threads.
    struct Shared {
        region: UnsafeCell<Region>,
        delayed: DelayedStack,
    }

    // SAFETY: the models follow the region protocol: only the owner thread
    // touches non-atomic fields, others only `thread_free` and their block.
    unsafe impl Send for Shared {}
    // SAFETY: shared references follow the same protocol: only the owner
    // thread touches the region's non-atomic fields; others use only
    // `thread_free`, the delayed stack (atomics) and their own block.
    unsafe impl Sync for Shared {}

    impl Shared {
        fn new(used: u32) -> Arc<Self> {
            Arc::new(Self {
                region: UnsafeCell::new(Region {
                    free: ptr::null_mut(),
                    used,
                    grid_slots: 4,
                    block_size: 16,
                    thread_free: AtomicUsize::new(0),
                    bump: ptr::null_mut(),
                    end: ptr::null_mut(),
                    start: ptr::null_mut(),
                    slot_count: 1,
                    first: ptr::null_mut(),
                    kind: RegionKind::Small,
                    in_full: false,
                    bucket: 0,
                    next: ptr::null_mut(),
                    prev: ptr::null_mut(),
                    dirty: false,
                    freed_at: 0,
                    key: 0,
                    grid_origin: ptr::null_mut(),
                    inverse: 1,
                    shift: 0,
                }),
                delayed: DelayedStack::new(),
            })
        }

        fn region(&self) -> *mut Region {
            self.region.get()
        }
    }

    fn new_block() -> usize {
        Box::into_raw(Box::new([0usize; 2])) as usize
    }

    fn free_list(region: *mut Region) -> std::vec::Vec<usize> {
        let mut blocks = std::vec::Vec::new();
        // SAFETY: owner-side walk of the local free list after all threads joined.
        let mut block = unsafe { (*region).free };
        while !block.is_null() {
            blocks.push(block as usize);
            // SAFETY: free blocks hold a valid link.
            block = unsafe { crate::block::next_of(block, 0) };
        }
        blocks
    }

    fn release(blocks: &[usize]) {
        for &block in blocks {
            // SAFETY: made by `new_block`, released once.
            drop(unsafe { Box::from_raw(block as *mut [usize; 2]) });
        }
    }

    #[test]
    fn loom_remote_frees_are_collected_exactly_once() {
        loom::model(|| {
            let shared = Shared::new(2);
            let blocks = [new_block(), new_block()];
            let remotes: std::vec::Vec<_> = blocks
                .iter()
                .map(|&block| {
                    let shared = shared.clone();
                    thread::spawn(move || {
                        let region = shared.region();
                        // SAFETY: each block is freed once, remotely.
                        let was_full = unsafe { Region::push_remote(region, block as *mut u8) };
                        assert!(!was_full, "the region was never parked");
                    })
                })
                .collect();
            // Let the remote frees run first in some interleavings (loom does
            // not preempt a thread before its first atomic operation).
            thread::yield_now();
            // SAFETY: this thread is the owner.
            let mut collected = unsafe { Region::collect(shared.region()) };
            for remote in remotes {
                remote.join().unwrap();
            }
            // SAFETY: owner.
            collected += unsafe { Region::collect(shared.region()) };
            assert_eq!(collected, 2);
            // SAFETY: owner, all threads joined.
            assert_eq!(unsafe { (*shared.region()).used }, 0);
            let mut on_list = free_list(shared.region());
            on_list.sort_unstable();
            let mut expected = blocks.to_vec();
            expected.sort_unstable();
            assert_eq!(on_list, expected);
            release(&blocks);
        });
    }

    /// Counts the blocks on a stack taken from the delayed stack.
    fn count_delayed(mut block: *mut Block) -> u32 {
        let mut count = 0;
        while !block.is_null() {
            count += 1;
            // SAFETY: a stack taken from `DelayedStack`.
            block = unsafe { DelayedStack::next(block) };
        }
        count
    }

    #[test]
    fn loom_frees_into_a_full_region_are_never_lost() {
        loom::model(|| {
            let shared = Shared::new(2);
            // SAFETY: owner parks its region.
            unsafe {
                assert!(Region::try_mark_full(shared.region()));
                (*shared.region()).in_full = true;
            }
            let blocks = [new_block(), new_block()];
            let remotes: std::vec::Vec<_> = blocks
                .iter()
                .map(|&block| {
                    let shared = shared.clone();
                    thread::spawn(move || {
                        // SAFETY: each block freed once; the free that took
                        // the region off FULL hands its block to the owner.
                        unsafe {
                            if Region::push_remote(shared.region(), block as *mut u8) {
                                shared.delayed.push(block as *mut u8);
                            }
                        }
                    })
                })
                .collect();
            thread::yield_now();
            let mut delayed = count_delayed(shared.delayed.take_all());
            for remote in remotes {
                remote.join().unwrap();
            }
            delayed += count_delayed(shared.delayed.take_all());
            // SAFETY: owner, all threads joined.
            let collected = unsafe { Region::collect(shared.region()) };
            assert_eq!(delayed, 1, "exactly one free clears FULL");
            assert_eq!(collected + delayed, 2, "every block reaches the owner");
            // SAFETY: owner, joined.
            let left = unsafe { (*shared.region()).thread_free.load(Ordering::Relaxed) };
            assert_eq!(left, 0);
            release(&blocks);
        });
    }

    #[test]
    fn loom_owner_reparking_a_marked_region_races_a_remote_free() {
        loom::model(|| {
            let shared = Shared::new(2);
            // SAFETY: owner parks its region, then frees into it locally:
            // back on the queue, still marked FULL (the owner never clears
            // the mark).
            unsafe { assert!(Region::try_mark_full(shared.region())) };
            let block = new_block();
            let remote = {
                let shared = shared.clone();
                thread::spawn(move || {
                    // SAFETY: the block is freed once, remotely.
                    unsafe {
                        if Region::push_remote(shared.region(), block as *mut u8) {
                            shared.delayed.push(block as *mut u8);
                        }
                    }
                })
            };
            thread::yield_now();
            // The owner runs the region dry again and parks it.
            // SAFETY: owner.
            let parked = unsafe { Region::try_mark_full(shared.region()) };
            remote.join().unwrap();
            let delayed = count_delayed(shared.delayed.take_all());
            // SAFETY: owner, joined.
            let mark = unsafe { (*shared.region()).thread_free.load(Ordering::Relaxed) };
            if parked {
                // Parked regions are reached only through the delayed
                // stack: the mark must still route remote frees there, or
                // a block already on it must bring the region back.
                assert!(mark == FULL || delayed == 1, "a parked region is stranded");
            }
            // SAFETY: owner, joined.
            let collected = unsafe { Region::collect(shared.region()) };
            assert_eq!(collected + delayed, 1, "the remote block is never lost");
            release(&[block]);
        });
    }
}
