//! The dynamic bucket: allocations larger than the largest bucket.
//!
//! The seed's dynamic bucket was one linked list mixing 1 KiB blocks with
//! 1 GiB blocks, searched first-fit. Rulloc splits it in two:
//!
//! * **Large** (up to [`LARGE_MAX_SIZE`] = 2 MiB, alignment up to a slot):
//!   a span of whole 64 KiB slots inside a heap's segment, taken from the
//!   heap's [`SpanPool`](crate::segment::SpanPool), whose bins by exact slot
//!   count and bitmap find the best fit in O(1). Freed spans coalesce with
//!   their neighbours; `realloc` grows into a free neighbour in place.
//!
//! * **Huge** (anything larger, or aligned above 64 KiB): a mapping of its
//!   own, with a segment header in its first page(s) so that every block
//!   pointer finds its header the same way:
//!
//! ```text
//!   align <= SEGMENT_SIZE                     align > SEGMENT_SIZE (e.g. 1 GiB)
//!   base (SEGMENT aligned)                    base                 block (1 GiB aligned)
//!   +--------+---------------------+          +--------+- - - - -+--------------------+
//!   | header | block ...           |          | header | (unused)| block ...          |
//!   +--------+---------------------+          +--------+- - - - -+--------------------+
//!    offset = header rounded up to align       <---- SEGMENT_SIZE ---->
//!                                              (block - 1) & !MASK = base
//! ```
//!
//! `realloc` of a huge block never copies on Linux. It resizes the mapping
//! where it stands (`mremap` without moving) where the pages after it are
//! free, and otherwise moves the whole mapping, header included, with
//! `mremap(MREMAP_MAYMOVE | MREMAP_FIXED)`: the kernel moves page-table
//! entries, so resident pages stay resident and nothing is copied or
//! faulted in again (a `Vec` doubling past a few MiB used to pay a fresh
//! mapping, a copy of its buffer and a fault per page each time):
//!
//! ```text
//!   before   +--------+-------------+####  (pages after it taken)
//!            | header | block       |####
//!            +--------+-------------+####
//!   reserve        :  |~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~|  PROT_NONE,
//!   (new size      :  slack | aligned point (SEGMENT_SIZE, or     | new size
//!    + align)      :        | align - offset for align > SEGMENT) | + align
//!   mremap FIXED   v        +--------+-------------------------+  |
//!   to the point            | header | block ... grown         |  |
//!                           +--------+-------------------------+  |
//!   unmap slack     |~~~~~~~|                                  |~~|
//! ```
//!
//! The new base keeps the invariant every block lookup relies on: it is
//! `SEGMENT_SIZE` aligned, and for a block aligned above `SEGMENT_SIZE`
//! (header one segment before it) it is placed so that the block keeps the
//! alignment the `realloc` asks for. Everything that names the segment's
//! address follows it: the block leaves the huge list and the misuse map
//! before the move and joins both at its new address after it (see
//! [`HugeList::move_mapping`] for why in that order), its header's
//! `mapping`/`mapping_size` are rewritten, the counters count one remap
//! call and the mapping's change in size (no map or unmap call), and the
//! size stays rounded to huge pages. The `MADV_HUGEPAGE` advice is a
//! property of the kernel's mapping and moves with it (checked in
//! `tests/huge_realloc.rs`), so it is not asked for again. Huge blocks have
//! no guard pages, in the secure build either. Shrinking stays in place
//! (an `munmap` of the tail elsewhere on Unix). Windows and Miri cannot
//! move a mapping: there, a block that cannot grow in place is copied
//! into a new one (`Rulloc::move_block`).
//!
//! ## Huge pages
//!
//! Huge mappings ask for transparent huge pages (`MADV_HUGEPAGE`) like
//! segments do, but the kernel backs only whole 2 MiB-aligned pieces of a
//! mapping with one: the tail of a mapping sized to the page (e.g. the last
//! 1.3 MiB of a 3.3 MiB block) faults in 4 KiB at a time, 330 page faults
//! where a huge page costs one. So while huge pages are asked for (Linux,
//! 4 KiB pages, [`crate::Rulloc::set_huge_pages`] not turned off), every
//! huge mapping's size is rounded up to 2 MiB
//! ([`platform::huge_page_granule`]); its base is `SEGMENT_SIZE` aligned
//! already, so each 2 MiB piece is aligned too. The block's usable size
//! includes the rounding. Price: under 2 MiB of address space per block,
//! and a block that touches its last piece has all 2 MiB of it resident
//! (like any huge-page-backed memory). Sizes quantized to 2 MiB also fit
//! each other: a cached 4 MiB mapping serves every request of 2..4 MiB
//! less the header. Measured on malloc-large (16 slots of 64 KiB..8 MiB):
//! page faults per run from ~12,200 (99 % of them the 4 KiB tails of the
//! ~35 fresh huge mappings) to ~200, mimalloc's ~195.
//!
//! ## The huge-block cache
//!
//! Mapping a fresh huge block costs an `mmap` and then a page fault (and
//! the kernel zeroing a page) for every page the program touches; freeing
//! it costs an `munmap`. A program that replaces multi-MiB buffers in a
//! loop pays all of it every time. So a freed huge mapping is not unmapped
//! at once: it goes into a [`HugeCache`], a few recently freed mappings
//! whose pages are still resident, and the next huge request that fits
//! takes the best fitting one back:
//!
//! ```text
//!   SharedCounters page (one per instance; heaps point at it too)
//!   +------------------------------------------------------------------+
//!   | huge_cache: lock, entries[0..len] oldest first, next_purge_at    |
//!   +------------------------------------------------------------------+
//!        |            |            |
//!        v            v            v
//!   +--------+---+ +--------+-------+ +--------+--------+  freed mappings,
//!   | header |   | | header |       | | header |        |  headers still at
//!   | freed_at   | | freed_at       | | freed_at        |  their base
//!   +--------+---+ +--------+-------+ +--------+--------+
//!
//!   alloc(total bytes needed)
//!     best fit: the smallest entry with mapping_size >= total
//!       mapping_size <= 4 x total ...... take it whole (no system call)
//!     none (or only larger ones) ........ map a fresh one
//!
//!   free: the mapping joins the cache (evicting the oldest entries to
//!         stay under HUGE_CACHE_ENTRIES and the byte cap); it is unmapped
//!         at once instead if the purge delay is 0 or it alone exceeds
//!         a quarter of the cap
//!   unused for the purge delay since its free and since the cache last
//!         served a request (checked on huge alloc/free and on every
//!         heap's slow-path purge check): unmapped
//!   Rulloc::collect, a thread's exit, dropping the Rulloc: all unmapped
//! ```
//!
//! The cache lives in the instance's [`SharedCounters`] page, not in the
//! `Rulloc` value, because heaps must reach it to purge it on their slow
//! paths (a program that stops making huge requests still gets its pages
//! back after the delay) and a `Rulloc` value may move.
//!
//! Bounds: at most [`HUGE_CACHE_ENTRIES`] mappings and at most
//! `cap = max(HUGE_CACHE_MIN_BYTES, peak committed / HUGE_CACHE_PEAK_DIVISOR)`
//! bytes, each entry at most `cap / HUGE_CACHE_ENTRY_DIVISOR`. The floor
//! (128 MiB) lets a small program churn a dozen multi-MiB buffers; the
//! fraction of the
//! peak lets a program that already had GiBs live cache its larger buffers
//! while bounding the extra footprint to a quarter of a peak it already
//! reached, and only for the purge delay. Peers keep far more (mimalloc and
//! jemalloc keep every freed page until their decay).
//!
//! A request served from a larger entry keeps the whole mapping (its
//! usable size says so) until it is freed: up to 4x its need stays
//! resident while it lives, the price of not faulting pages in again (see
//! [`HUGE_WHOLE_FACTOR`]).
//!
//! Statistics: a cached mapping counts as *mapped* but not *committed*
//! (like the heaps' free spans and cached segments: its pages go back after
//! the delay), nor as a live huge block; `Stats::huge_cached` counts them
//! and `Stats::huge_cache_hits` counts reuses.
//!
//! Zeroed requests: a cached mapping was written by its previous owner, so
//! a zeroed request served from the cache is `memset` (only the requested
//! bytes); a fresh mapping is zero already.
//!
//! Invariants:
//!
//! * Every live huge segment is on the allocator's huge list (under its
//!   lock), so dropping the allocator unmaps them all; every cached one is
//!   in the cache (under the cache's lock), never both. The one exception:
//!   a block its owner is moving ([`HugeList::move_mapping`]) is off the list
//!   and off the misuse map for the moment of the `mremap`; only that
//!   thread, inside `realloc`, knows it then, and no lock is held across
//!   the system call.
//! * A cached segment's header is at its mapping's base (`mapping ==
//!   segment`), so any later request with `align <= SEGMENT_SIZE` can
//!   place its block in it; its `huge_offset` is 0 and its bit in the
//!   misuse map is clear, so a second free of the old block is caught
//!   ("free of invalid pointer") instead of caching the mapping twice.
//! * The cache's lock is never held together with the huge list's lock,
//!   and never across a system call; lock order: heap, huge list, cache
//!   ([`crate::Rulloc::fork_prepare`] takes them in that order).

use core::cell::UnsafeCell;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};

use crate::heap::SharedCounters;

use crate::misuse;
use crate::platform;
pub(crate) use crate::segment::LARGE_MAX_SIZE;
use crate::segment::{self, round_up, Segment, SegmentKind, SEGMENT_SIZE};
use crate::sync::SpinLock;

/// Most freed huge mappings the cache keeps: a program replacing a dozen
/// big buffers in turn finds one of the right size; a search over this
/// many entries under the lock costs nothing next to a system call. With
/// 8, malloc-large (16 slots of 64 KiB..8 MiB, so up to 10 huge blocks
/// live and as many free at once) evicted a mapping it needed again a
/// dozen times per run; with 16 it maps only its ~11 distinct ones.
pub(crate) const HUGE_CACHE_ENTRIES: usize = 16;
/// The cache may always hold this many bytes, whatever the program's peak:
/// 128 MiB, a dozen 10 MiB mappings (an 8 MiB buffer rounded up to huge
/// pages, header included); at 64 MiB malloc-large evicted entries it
/// needed again.
pub(crate) const HUGE_CACHE_MIN_BYTES: usize = 128 << 20;
/// Above the floor, the cache may hold this fraction of the instance's
/// peak committed bytes: the extra footprint stays a quarter of a size the
/// program already reached.
pub(crate) const HUGE_CACHE_PEAK_DIVISOR: usize = 4;
/// One entry may take at most this fraction of the cap (32 MiB under the
/// floor): the cache is for buffers a program replaces again and again,
/// not for a one-off giant one (a `Vec`'s 63 MiB buffer in the bench's
/// `waves` stayed resident after the program went quiet, with no slow path
/// left to purge it).
pub(crate) const HUGE_CACHE_ENTRY_DIVISOR: usize = 4;
/// A cached mapping serves a request that needs at least 1/this of it, and
/// is handed out whole: its pages are resident, and unmapping a tail to
/// fit the request would make the next larger request fault it all in
/// again. Measured on malloc-large (2500 replacements of 16 blocks of
/// 64 KiB..8 MiB, page faults being the cost on the test VM): trimming
/// tails beyond 1/8 of waste took 2-5 s, factor 2 without trimming
/// 0.6-1.2 s, factor 4 0.2-0.4 s. The price: a block may hold up to 4x
/// its size of resident mapping while it lives (see the module docs).
const HUGE_WHOLE_FACTOR: usize = 4;

/// The allocator's list of live huge blocks, and their counters.
pub(crate) struct HugeList {
    lock: SpinLock,
    head: UnsafeCell<*mut Segment>,
    pub(crate) bytes_in_use: AtomicUsize,
    /// Bytes mapped by live huge blocks (cached ones are the cache's).
    pub(crate) bytes_mapped: AtomicUsize,
    pub(crate) count: AtomicUsize,
    pub(crate) map_calls: AtomicUsize,
    pub(crate) unmap_calls: AtomicUsize,
    /// Resizes by the OS without copying (`mremap`, in place or moved).
    pub(crate) remap_calls: AtomicUsize,
    /// Bytes asked for in huge blocks, so far.
    pub(crate) bytes_requested: AtomicUsize,
    /// The instance's shared counters (peaks) and huge cache, set before
    /// the first huge block is mapped.
    shared: AtomicPtr<SharedCounters>,
}

// SAFETY: `head` and the links of the listed segments are only touched
// under `lock`.
unsafe impl Sync for HugeList {}
// SAFETY: the list owns mappings, not thread-bound data.
unsafe impl Send for HugeList {}

impl HugeList {
    pub(crate) const fn new() -> Self {
        Self {
            lock: SpinLock::new(),
            head: UnsafeCell::new(ptr::null_mut()),
            bytes_in_use: AtomicUsize::new(0),
            bytes_mapped: AtomicUsize::new(0),
            count: AtomicUsize::new(0),
            map_calls: AtomicUsize::new(0),
            unmap_calls: AtomicUsize::new(0),
            remap_calls: AtomicUsize::new(0),
            bytes_requested: AtomicUsize::new(0),
            shared: AtomicPtr::new(ptr::null_mut()),
        }
    }

    pub(crate) fn lock(&self) -> &SpinLock {
        &self.lock
    }

    /// Points the list at its instance's shared counters (before the
    /// state is published: see `Rulloc::map_state`).
    pub(crate) fn set_shared(&self, shared: *mut SharedCounters) {
        self.shared.store(shared, Ordering::Relaxed);
    }

    /// The instance's shared counters, if mapped.
    fn shared(&self) -> Option<&SharedCounters> {
        let shared = self.shared.load(Ordering::Relaxed);
        // SAFETY: the shared counters, once set, outlive the list's blocks
        // and every call into the list (the `Rulloc` unmaps them last).
        unsafe { shared.as_ref() }
    }

    /// Moves the shared mapped and committed gauges by `delta` bytes.
    fn gauge(&self, grow: bool, delta: usize) {
        let Some(shared) = self.shared() else {
            return;
        };
        if grow {
            SharedCounters::grow(&shared.bytes_mapped, &shared.peak_bytes_mapped, delta);
            SharedCounters::grow(&shared.bytes_committed, &shared.peak_bytes_committed, delta);
        } else {
            SharedCounters::shrink(&shared.bytes_mapped, delta);
            SharedCounters::shrink(&shared.bytes_committed, delta);
        }
    }

    /// A huge block of `size` bytes aligned to `align`: a cached mapping
    /// that fits, or a fresh one. `zeroed`: the first `size` bytes must
    /// read as zero. `delay`: the purge delay (ms), for the cache's purge
    /// check. Null if the request cannot be represented or the OS refuses.
    pub(crate) fn alloc(&self, size: usize, align: usize, zeroed: bool, delay: usize) -> *mut u8 {
        let page = platform::page_size();
        let header = segment::header_size();
        let Some(rounded_size) = size.max(1).checked_add(page - 1).map(|s| s & !(page - 1)) else {
            return ptr::null_mut();
        };
        let (mapping, mapping_size, mapping_align, segment, offset);
        if align <= SEGMENT_SIZE {
            offset = round_up(header, align.max(page));
            let Some(total) = rounded_size.checked_add(offset).and_then(mapping_size_for) else {
                return ptr::null_mut();
            };
            if let Some(shared) = self.shared() {
                let cache = &shared.huge_cache;
                let now = platform::now_ms();
                cache.purge_if_due(shared, now, delay as u64);
                let cached = cache.take(total, now);
                if !cached.is_null() {
                    // SAFETY: `take` handed us a cached mapping, on no
                    // list, whose header is at its base and which holds
                    // at least `total` bytes.
                    return unsafe { self.reuse(cached, total, offset, size, zeroed) };
                }
            }
            let Some(base) = platform::map_aligned(total, SEGMENT_SIZE) else {
                return ptr::null_mut();
            };
            (mapping, mapping_size, mapping_align) = (base.as_ptr(), total, SEGMENT_SIZE);
            segment = mapping.cast::<Segment>();
        } else {
            // The block sits at `align` into the mapping; the header one
            // segment before it. (Never served from the cache: its entries
            // are only known to be SEGMENT_SIZE aligned.)
            offset = SEGMENT_SIZE;
            let Some(total) = rounded_size.checked_add(align).and_then(mapping_size_for) else {
                return ptr::null_mut();
            };
            let Some(base) = platform::map_aligned(total, align) else {
                return ptr::null_mut();
            };
            let header_at = align - SEGMENT_SIZE;
            if platform::CAN_UNMAP_PART && header_at > 0 {
                // SAFETY: the head of the fresh mapping, page aligned, unused.
                unsafe { platform::unmap(base, header_at, page) };
                // SAFETY: header_at < total.
                let rest = unsafe { base.as_ptr().add(header_at) };
                (mapping, mapping_size, mapping_align) = (rest, total - header_at, SEGMENT_SIZE);
                self.unmap_calls.fetch_add(1, Ordering::Relaxed);
            } else {
                (mapping, mapping_size, mapping_align) = (base.as_ptr(), total, align);
            }
            segment = base.as_ptr().wrapping_add(header_at).cast::<Segment>();
        }
        misuse::register_segment(segment.expose_provenance(), misuse::TAG_HUGE);
        // SAFETY: the header lies in the fresh zeroed mapping, which is
        // `mapping_size` bytes from `mapping`.
        unsafe {
            platform::advise_huge_pages(NonNull::new_unchecked(mapping), mapping_size);
            (*segment).kind = SegmentKind::Huge;
            (*segment).mapping = mapping;
            (*segment).mapping_size = mapping_size;
            (*segment).mapping_align = mapping_align;
            (*segment).huge_offset = offset;
            (*segment).huge_size = mapping.add(mapping_size).addr() - segment.addr() - offset;
        }
        self.map_calls.fetch_add(1, Ordering::Relaxed);
        self.bytes_mapped.fetch_add(mapping_size, Ordering::Relaxed);
        self.gauge(true, mapping_size);
        self.count.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the header lies in the fresh mapping and was just written;
        // no pointer into the mapping has been handed out yet.
        let huge_size = unsafe { (*segment).huge_size };
        self.bytes_in_use.fetch_add(huge_size, Ordering::Relaxed);
        self.link(segment);
        segment.cast::<u8>().wrapping_add(offset)
    }

    /// Makes a mapping taken from the cache a live huge block: rewrites the
    /// header, zeroes if asked.
    ///
    /// # Safety
    ///
    /// `segment` came from [`HugeCache::take`] for `total` bytes: a mapping
    /// owned by the caller, on no list, with its header at its base and at
    /// least `total` bytes; `offset + size <= total`.
    unsafe fn reuse(
        &self,
        segment: *mut Segment,
        total: usize,
        offset: usize,
        size: usize,
        zeroed: bool,
    ) -> *mut u8 {
        // SAFETY: caller's contract: a cached header.
        debug_assert!(unsafe { (*segment).mapping_size } >= total);
        // SAFETY: caller's contract; the header is ours to rewrite.
        unsafe {
            let mapping_size = (*segment).mapping_size;
            (*segment).kind = SegmentKind::Huge;
            (*segment).huge_offset = offset;
            (*segment).huge_size = mapping_size - offset;
            self.bytes_mapped.fetch_add(mapping_size, Ordering::Relaxed);
            // Mapped already: only the committed gauge grows back.
            if let Some(shared) = self.shared() {
                SharedCounters::grow(
                    &shared.bytes_committed,
                    &shared.peak_bytes_committed,
                    mapping_size,
                );
            }
            self.count.fetch_add(1, Ordering::Relaxed);
            self.bytes_in_use
                .fetch_add((*segment).huge_size, Ordering::Relaxed);
            misuse::register_segment(segment.expose_provenance(), misuse::TAG_HUGE);
            self.link(segment);
            let block = segment.cast::<u8>().add(offset);
            if zeroed {
                // The previous owner wrote these bytes.
                block.write_bytes(0, size);
            }
            block
        }
    }

    fn link(&self, segment: *mut Segment) {
        self.lock.lock();
        // SAFETY: lock held; `segment` is ours and on no list.
        unsafe {
            let head = *self.head.get();
            (*segment).prev = ptr::null_mut();
            (*segment).next = head;
            if !head.is_null() {
                (*head).prev = segment;
            }
            *self.head.get() = segment;
        }
        self.lock.unlock();
    }

    fn unlink(&self, segment: *mut Segment) {
        self.lock.lock();
        // SAFETY: lock held; `segment` is on the list.
        unsafe {
            let (prev, next) = ((*segment).prev, (*segment).next);
            if prev.is_null() {
                *self.head.get() = next;
            } else {
                (*prev).next = next;
            }
            if !next.is_null() {
                (*next).prev = prev;
            }
        }
        self.lock.unlock();
    }

    /// Frees a huge block: its mapping goes into the cache, or back to the
    /// OS if the cache does not take it. `delay`: the purge delay (ms).
    ///
    /// # Safety
    ///
    /// `segment` is the header of a live huge block of this list that
    /// nobody uses any more.
    pub(crate) unsafe fn free(&self, segment: *mut Segment, delay: usize) {
        // SAFETY: caller's contract.
        unsafe { self.retire(segment) };
        // Not cached: blocks aligned above a segment (their offset is a whole
        // segment). Such a mapping sits at a large alignment boundary, so
        // keeping it fragments the address space: a 32-bit process then
        // found no 512 MiB range for its next 256 MiB-aligned block
        // (tests/api.rs on i686); and only the same alignment could reuse it.
        // SAFETY: `segment` is the header of a live huge block that nobody
        // uses (caller's contract); the header records the mapping.
        let cacheable = unsafe {
            (*segment).mapping == segment.cast::<u8>() && (*segment).huge_offset < SEGMENT_SIZE
        };
        if let (true, Some(shared)) = (cacheable && delay > 0, self.shared()) {
            let now = platform::now_ms();
            // SAFETY: the mapping is retired: ours, on no list, and its
            // header is at its base.
            if unsafe { shared.huge_cache.put(shared, segment, now, delay as u64) } {
                return;
            }
        }
        // SAFETY: the block is retired (`retire` took it off the list), the
        // cache did not take its mapping, and nobody uses it (caller's
        // contract).
        unsafe { self.unmap(segment) };
    }

    /// Takes a live block off the list and out of the live counters; its
    /// mapping stays counted as mapped (but no longer committed).
    ///
    /// # Safety
    ///
    /// As for [`HugeList::free`].
    unsafe fn retire(&self, segment: *mut Segment) {
        self.unlink(segment);
        // SAFETY: caller's contract; the header records the mapping.
        unsafe {
            self.bytes_in_use
                .fetch_sub((*segment).huge_size, Ordering::Relaxed);
            self.bytes_mapped
                .fetch_sub((*segment).mapping_size, Ordering::Relaxed);
            if let Some(shared) = self.shared() {
                SharedCounters::shrink(&shared.bytes_committed, (*segment).mapping_size);
            }
        }
        self.count.fetch_sub(1, Ordering::Relaxed);
    }

    /// Unmaps a retired block's mapping.
    ///
    /// # Safety
    ///
    /// `segment` was retired and nobody uses it.
    unsafe fn unmap(&self, segment: *mut Segment) {
        // SAFETY: caller's contract; the header records the mapping.
        unsafe {
            if let Some(shared) = self.shared() {
                SharedCounters::shrink(&shared.bytes_mapped, (*segment).mapping_size);
            }
            let mut events = segment::SpanEvents::default();
            segment::unmap_segment(segment, &mut events);
        }
        self.unmap_calls.fetch_add(1, Ordering::Relaxed);
    }

    /// Resizes a huge block without copying it if the OS allows: in place
    /// (`mremap` without moving), or, when growing and the pages after the
    /// mapping are taken, by moving the mapping (see [`HugeList::move_mapping`]).
    /// Returns the block, moved or not, with room for `new_size` bytes
    /// aligned to `align`, or null (nothing changed): the caller copies.
    ///
    /// # Safety
    ///
    /// `segment` is the header of a live huge block of this list, owned by
    /// the caller, whose block is aligned to `align`.
    pub(crate) unsafe fn resize(
        &self,
        segment: *mut Segment,
        new_size: usize,
        align: usize,
    ) -> *mut u8 {
        // SAFETY: caller's contract.
        unsafe {
            let usable = (*segment).huge_size;
            let offset = (*segment).huge_offset;
            let block = segment.cast::<u8>().add(offset);
            let fits = if new_size <= usable {
                block
            } else {
                ptr::null_mut()
            };
            // Shrinking by less than half is not worth a system call.
            if new_size <= usable && new_size >= usable / 2 {
                return block;
            }
            if !platform::CAN_UNMAP_PART || (*segment).mapping != segment.cast::<u8>() {
                return fits;
            }
            let Some(total) = new_size
                .max(1)
                .checked_add(offset)
                .and_then(mapping_size_for)
            else {
                return ptr::null_mut();
            };
            let old_total = (*segment).mapping_size;
            if total == old_total {
                return block;
            }
            let mapping = NonNull::new_unchecked((*segment).mapping);
            if platform::remap_in_place(mapping, old_total, total) {
                (*segment).mapping_size = total;
                (*segment).huge_size = total - offset;
                self.resized(old_total, total);
                return block;
            }
            if total > old_total {
                return self.move_mapping(segment, total, align);
            }
            fits
        }
    }

    /// Moves a huge block's whole mapping, header included, to a fresh
    /// address where it has `total` bytes, without copying (Linux `mremap`,
    /// see [`platform::remap_move`]). The new base is `SEGMENT_SIZE`
    /// aligned, and for `align > SEGMENT_SIZE` placed so that the block,
    /// one segment after it, is `align` aligned. Returns the moved block,
    /// or null with nothing changed.
    ///
    /// Everything that knows the segment's address follows it: the block
    /// leaves the list (its neighbours' links name its header) and the
    /// misuse map before the move and joins both again at the new address
    /// after it. Unregistering first matters: the old range is free the
    /// moment `mremap` returns, and another thread may map a segment there
    /// and register it before we could clear the old bit. No lock is held
    /// across the system calls; while the block is off the list nobody
    /// else reaches it (its owner, the caller, is in this function; a
    /// neighbour's unlink no longer touches it; a fork in between leaves
    /// it to the parent's caller, off the child's list).
    ///
    /// # Safety
    ///
    /// As for [`HugeList::resize`]; the mapping starts at the header
    /// (`mapping == segment`) and `total > mapping_size`.
    unsafe fn move_mapping(&self, segment: *mut Segment, total: usize, align: usize) -> *mut u8 {
        if !platform::CAN_MOVE_MAPPING {
            return ptr::null_mut();
        }
        // SAFETY: caller's contract: a live huge header at its mapping's base.
        let (offset, old_total) = unsafe { ((*segment).huge_offset, (*segment).mapping_size) };
        // The base must be SEGMENT_SIZE aligned and `base + offset` aligned
        // to `align`: for `align <= SEGMENT_SIZE` a segment-aligned base
        // does (the block is aligned already, so `offset` is a multiple of
        // `align`); above, the base sits `offset` before an `align` boundary.
        let (target_align, phase) = if align > SEGMENT_SIZE {
            (align, offset % align)
        } else {
            (SEGMENT_SIZE, 0)
        };
        if phase % SEGMENT_SIZE != 0 {
            return ptr::null_mut();
        }
        self.unlink(segment);
        misuse::unregister_segment(segment.addr());
        // SAFETY: the mapping is the block's (caller's contract), off the
        // list and the map: only this thread knows it.
        let moved = unsafe {
            platform::remap_move(
                NonNull::new_unchecked(segment.cast::<u8>()),
                old_total,
                total,
                target_align,
                phase,
            )
        };
        let Some(moved) = moved else {
            misuse::register_segment(segment.expose_provenance(), misuse::TAG_HUGE);
            self.link(segment);
            return ptr::null_mut();
        };
        let moved = moved.as_ptr().cast::<Segment>();
        // SAFETY: the header moved with the mapping, which is ours and
        // `total` bytes long; its transparent-huge-page advice moved too
        // (it belongs to the kernel's mapping, not to its address).
        unsafe {
            (*moved).mapping = moved.cast::<u8>();
            (*moved).mapping_size = total;
            (*moved).mapping_align = SEGMENT_SIZE;
            (*moved).huge_size = total - offset;
        }
        misuse::register_segment(moved.expose_provenance(), misuse::TAG_HUGE);
        self.link(moved);
        self.resized(old_total, total);
        moved.cast::<u8>().wrapping_add(offset)
    }

    /// Counts a live block's mapping resized by the OS from `old_total` to
    /// `total` bytes (its usable size changed by as much).
    fn resized(&self, old_total: usize, total: usize) {
        self.remap_calls.fetch_add(1, Ordering::Relaxed);
        self.gauge(total > old_total, total.abs_diff(old_total));
        if total > old_total {
            self.bytes_mapped
                .fetch_add(total - old_total, Ordering::Relaxed);
            self.bytes_in_use
                .fetch_add(total - old_total, Ordering::Relaxed);
        } else {
            self.bytes_mapped
                .fetch_sub(old_total - total, Ordering::Relaxed);
            self.bytes_in_use
                .fetch_sub(old_total - total, Ordering::Relaxed);
        }
    }

    /// Unmaps every live huge block (the allocator is being dropped; the
    /// cache is emptied separately, see [`HugeCache::release_all`]).
    ///
    /// `&self`, not `&mut self`: the list lives in the instance state,
    /// whose other fields (the counters) the list keeps a pointer to; a
    /// unique borrow of the state would invalidate it (Stacked Borrows).
    pub(crate) fn release_all(&self) {
        // SAFETY: the allocator is being dropped: nobody else uses the list
        // or its blocks (`retire` takes the lock for each unlink anyway).
        unsafe {
            while !(*self.head.get()).is_null() {
                let segment = *self.head.get();
                self.retire(segment);
                self.unmap(segment);
            }
        }
    }
}

/// Freed huge mappings kept for reuse (see the module docs). Lives in the
/// instance's [`SharedCounters`] page.
pub(crate) struct HugeCache {
    lock: SpinLock,
    /// `entries[..len]`: cached segments, oldest first (under `lock`).
    entries: UnsafeCell<[*mut Segment; HUGE_CACHE_ENTRIES]>,
    len: UnsafeCell<usize>,
    /// When a request was last served from the cache (ms; 0: never; under
    /// `lock`): entries expire only once the cache went unused, see
    /// [`HugeCache::purge_if_due`].
    used_at: UnsafeCell<u64>,
    /// When the next entry may expire (ms), 0 if the cache is empty
    /// (never later than the true time). Written under `lock`, read without
    /// it by heaps' purge checks.
    next_purge_at: AtomicU64,
    /// Bytes mapped by cached entries.
    pub(crate) bytes: AtomicUsize,
    /// Cached entries.
    pub(crate) count: AtomicUsize,
    /// Huge requests served from the cache, so far.
    pub(crate) hits: AtomicUsize,
    /// Entries unmapped (evicted, expired, released), so far.
    pub(crate) unmap_calls: AtomicUsize,
}

// SAFETY: `entries`, `len` and the cached segments are only touched under
// `lock`; the rest are atomics.
unsafe impl Sync for HugeCache {}
// SAFETY: the cache owns mappings, not thread-bound data.
unsafe impl Send for HugeCache {}

impl Default for HugeCache {
    fn default() -> Self {
        Self {
            lock: SpinLock::new(),
            entries: UnsafeCell::new([ptr::null_mut(); HUGE_CACHE_ENTRIES]),
            len: UnsafeCell::new(0),
            used_at: UnsafeCell::new(0),
            next_purge_at: AtomicU64::new(0),
            bytes: AtomicUsize::new(0),
            count: AtomicUsize::new(0),
            hits: AtomicUsize::new(0),
            unmap_calls: AtomicUsize::new(0),
        }
    }
}

/// Segments taken out of the cache under its lock, to be unmapped after
/// it is released.
struct Victims {
    segments: [*mut Segment; HUGE_CACHE_ENTRIES],
    len: usize,
}

impl Victims {
    const fn new() -> Self {
        Self {
            segments: [ptr::null_mut(); HUGE_CACHE_ENTRIES],
            len: 0,
        }
    }
}

impl HugeCache {
    pub(crate) fn lock(&self) -> &SpinLock {
        &self.lock
    }

    /// Removes entry `index`, keeping the others oldest first, and returns
    /// it.
    ///
    /// # Safety
    ///
    /// Lock held; `index < len`.
    unsafe fn remove(&self, index: usize) -> *mut Segment {
        // SAFETY: lock held (caller's contract).
        unsafe {
            let entries = &mut *self.entries.get();
            let len = &mut *self.len.get();
            let segment = entries[index];
            entries.copy_within(index + 1..*len, index);
            *len -= 1;
            entries[*len] = ptr::null_mut();
            self.count.fetch_sub(1, Ordering::Relaxed);
            self.bytes
                .fetch_sub((*segment).mapping_size, Ordering::Relaxed);
            segment
        }
    }

    /// Recomputes `next_purge_at` after the entries changed.
    ///
    /// # Safety
    ///
    /// Lock held.
    unsafe fn schedule(&self, delay: u64) {
        // SAFETY: lock held; entries are cached segments.
        let oldest = unsafe {
            let entries = &*self.entries.get();
            entries[..*self.len.get()]
                .iter()
                .map(|&segment| self.unused_since(segment))
                .min()
        };
        let due = oldest.map_or(0, |at| at.saturating_add(delay).max(1));
        self.next_purge_at.store(due, Ordering::Relaxed);
    }

    /// Since when an entry counts as unused: its free, or the last time
    /// the cache served a request, whichever is later.
    ///
    /// # Safety
    ///
    /// Lock held; `segment` is an entry.
    unsafe fn unused_since(&self, segment: *mut Segment) -> u64 {
        // SAFETY: caller's contract.
        unsafe { (*segment).freed_at.max(*self.used_at.get()) }
    }

    /// Takes the best fitting entry for a block needing `total` bytes of
    /// mapping (header included) as of `now`, or null: the smallest with at
    /// least `total` bytes, if it has at most [`HUGE_WHOLE_FACTOR`] times
    /// that.
    pub(crate) fn take(&self, total: usize, now: u64) -> *mut Segment {
        if self.count.load(Ordering::Relaxed) == 0 {
            return ptr::null_mut();
        }
        self.lock.lock();
        // SAFETY: lock held; entries are cached segments whose headers
        // record their mappings.
        let segment = unsafe {
            let entries = &*self.entries.get();
            let mut best: Option<(usize, usize)> = None;
            for (index, &segment) in entries[..*self.len.get()].iter().enumerate() {
                let size = (*segment).mapping_size;
                if size >= total && best.is_none_or(|(_, best_size)| size < best_size) {
                    best = Some((index, size));
                }
            }
            match best {
                Some((index, size)) if size / HUGE_WHOLE_FACTOR <= total => {
                    // (`next_purge_at` may now be early: the purge check
                    // that finds nothing due schedules it again.)
                    *self.used_at.get() = now;
                    let segment = self.remove(index);
                    self.hits.fetch_add(1, Ordering::Relaxed);
                    segment
                }
                _ => ptr::null_mut(),
            }
        };
        self.lock.unlock();
        segment
    }

    /// Caches a freed huge mapping as of `now`; `false` (nothing changed)
    /// if it is larger than an entry may be, then the caller unmaps it. May evict
    /// (unmap) the oldest entries to make room.
    ///
    /// # Safety
    ///
    /// `segment` is a retired huge mapping (on no list, unused) whose
    /// header is at its base; `counters` is the page holding this cache.
    pub(crate) unsafe fn put(
        &self,
        counters: &SharedCounters,
        segment: *mut Segment,
        now: u64,
        delay: u64,
    ) -> bool {
        let cap = HUGE_CACHE_MIN_BYTES
            .max(counters.peak_bytes_committed.load(Ordering::Relaxed) / HUGE_CACHE_PEAK_DIVISOR);
        // SAFETY: caller's contract.
        let size = unsafe { (*segment).mapping_size };
        if size > cap / HUGE_CACHE_ENTRY_DIVISOR {
            return false;
        }
        // A second free of the old block finds no live segment (misuse
        // map) and an offset that matches no block (the header check).
        misuse::unregister_segment(segment.addr());
        // SAFETY: the header is ours (caller's contract).
        unsafe {
            (*segment).huge_offset = 0;
            (*segment).freed_at = now;
        }
        let mut victims = Victims::new();
        self.lock.lock();
        // SAFETY: lock held; entries are cached segments.
        unsafe {
            // `size <= cap`, so an empty cache always has room.
            while *self.len.get() == HUGE_CACHE_ENTRIES
                || (*self.len.get() > 0 && self.bytes.load(Ordering::Relaxed) + size > cap)
            {
                victims.segments[victims.len] = self.remove(0);
                victims.len += 1;
            }
            let len = &mut *self.len.get();
            (*self.entries.get())[*len] = segment;
            *len += 1;
            self.count.fetch_add(1, Ordering::Relaxed);
            self.bytes.fetch_add(size, Ordering::Relaxed);
            self.schedule(delay);
        }
        self.lock.unlock();
        // SAFETY: the victims left the cache; nobody else knows them.
        unsafe { self.unmap(counters, &victims) };
        true
    }

    /// Unmaps every entry whose purge delay ran out, if one is due: an
    /// entry that has been unused for the delay, in a cache that served no
    /// request for as long. A program replacing buffers of many sizes (the
    /// bench's malloc-large: 16 slots of 64 KiB..8 MiB) may need its
    /// largest cached mapping only every 20 ms or so, while it takes others
    /// every few µs; expiring entries by their own age alone unmapped half
    /// a dozen such mappings per run, each mapped and faulted in again on
    /// the next large request. A cache nobody draws on still empties after
    /// the delay. Never waits for the lock: if another thread holds it,
    /// that thread is in a huge call, which checks again.
    pub(crate) fn purge_if_due(&self, counters: &SharedCounters, now: u64, delay: u64) {
        let due = self.next_purge_at.load(Ordering::Relaxed);
        if due == 0 || now < due || !self.lock.try_lock() {
            return;
        }
        let mut victims = Victims::new();
        // SAFETY: lock held; entries are cached segments.
        unsafe {
            let mut index = 0;
            while index < *self.len.get() {
                let segment = (*self.entries.get())[index];
                if self.unused_since(segment).saturating_add(delay) <= now {
                    victims.segments[victims.len] = self.remove(index);
                    victims.len += 1;
                } else {
                    index += 1;
                }
            }
            self.schedule(delay);
        }
        self.lock.unlock();
        // SAFETY: the victims left the cache; nobody else knows them.
        unsafe { self.unmap(counters, &victims) };
    }

    /// Whether any entry waits for a purge (a relaxed load: heaps call this
    /// on their slow paths before they read the clock).
    pub(crate) fn pending(&self) -> bool {
        self.next_purge_at.load(Ordering::Relaxed) != 0
    }

    /// Unmaps every entry (collect, thread exit, drop).
    pub(crate) fn release_all(&self, counters: &SharedCounters) {
        if self.count.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut victims = Victims::new();
        self.lock.lock();
        // SAFETY: lock held; entries are cached segments.
        unsafe {
            while *self.len.get() > 0 {
                victims.segments[victims.len] = self.remove(0);
                victims.len += 1;
            }
            self.schedule(0);
        }
        self.lock.unlock();
        // SAFETY: the victims left the cache; nobody else knows them.
        unsafe { self.unmap(counters, &victims) };
    }

    /// Unmaps segments taken out of the cache.
    ///
    /// # Safety
    ///
    /// The victims are cached mappings removed from the cache, unused.
    unsafe fn unmap(&self, counters: &SharedCounters, victims: &Victims) {
        for &segment in &victims.segments[..victims.len] {
            // SAFETY: caller's contract; the header records the mapping.
            unsafe {
                SharedCounters::shrink(&counters.bytes_mapped, (*segment).mapping_size);
                let mut events = segment::SpanEvents::default();
                segment::unmap_segment(segment, &mut events);
            }
            self.unmap_calls.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The size of a huge mapping that holds `bytes` (header included):
/// `bytes` rounded up to [`platform::huge_page_granule`], so that while
/// transparent huge pages are asked for, every piece of the mapping can be
/// one (see the module docs, *Huge pages*); `None` on overflow.
fn mapping_size_for(bytes: usize) -> Option<usize> {
    let granule = platform::huge_page_granule();
    bytes.checked_add(granule - 1).map(|b| b & !(granule - 1))
}

/// The usable size of the huge block whose header is `segment`.
///
/// # Safety
///
/// `segment` is the header of a live huge block.
pub(crate) unsafe fn huge_usable_size(segment: *mut Segment) -> usize {
    // SAFETY: caller's contract.
    unsafe { (*segment).huge_size }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Rulloc;

    const MIB: usize = 1 << 20;

    fn fill(block: *mut u8, size: usize, byte: u8) {
        // SAFETY: callers pass live blocks of at least `size` bytes.
        unsafe { block.write_bytes(byte, size) };
    }

    /// Whether every byte of the block is `byte` (sampled every 509 bytes
    /// and at both ends, so Miri stays quick).
    fn holds(block: *const u8, size: usize, byte: u8) -> bool {
        // SAFETY: callers pass live blocks of at least `size` bytes.
        unsafe {
            (0..size)
                .step_by(509)
                .chain([size - 1])
                .all(|i| *block.add(i) == byte)
        }
    }

    #[test]
    fn a_freed_huge_block_is_reused() {
        let a = Rulloc::new();
        a.set_purge_delay_ms(60_000);
        let first = a.allocate_bytes(8 * MIB, 8);
        fill(first, 8 * MIB, 0x5a);
        let live = a.stats();
        // SAFETY: live, freed once.
        unsafe { a.deallocate_bytes(first) };
        let cached = a.stats();
        assert_eq!(
            (cached.huge_blocks, cached.huge_cached),
            (0, 1),
            "{cached:?}"
        );
        assert_eq!(cached.bytes_in_use, 0);
        // Still mapped, no longer committed.
        assert_eq!(cached.bytes_mapped, live.bytes_mapped, "{cached:?}");
        assert!(
            cached.bytes_committed + 8 * MIB <= live.bytes_committed,
            "{cached:?}"
        );
        assert_eq!(cached.unmap_calls, live.unmap_calls);

        // A somewhat smaller request takes the same mapping, no system call.
        let second = a.allocate_bytes(5 * MIB, 8);
        assert_eq!(second, first);
        let hit = a.stats();
        assert_eq!((hit.huge_blocks, hit.huge_cached), (1, 0), "{hit:?}");
        assert_eq!(hit.huge_cache_hits, 1);
        assert_eq!(hit.map_calls, live.map_calls);
        assert_eq!(hit.bytes_committed, live.bytes_committed);
        assert_eq!(hit.bytes_mapped, live.bytes_mapped);
        // SAFETY: live block.
        assert!(unsafe { a.usable_size(second) } >= 5 * MIB);
        // The new owner's content is its own.
        fill(second, 5 * MIB, 0xc3);
        assert!(holds(second, 5 * MIB, 0xc3));
        // SAFETY: live, freed once.
        unsafe { a.deallocate_bytes(second) };
        assert_eq!(a.stats().bytes_in_use, 0);
    }

    /// A block served from a larger cached mapping owns all of it: its
    /// usable size, `bytes_in_use` and the mapping move together when it
    /// is resized in place (`mremap` on Linux), freed and served again.
    #[test]
    fn a_reused_mapping_keeps_the_counters_exact_through_resizes() {
        let a = Rulloc::new();
        a.set_purge_delay_ms(60_000);
        let in_use_is_usable = |block: *mut u8| {
            // SAFETY: callers pass the one live block of `a`.
            let usable = unsafe { a.usable_size(block) };
            let s = a.stats();
            assert_eq!((s.bytes_in_use, s.huge_blocks), (usable, 1), "{s:?}");
            usable
        };
        let first = a.allocate_bytes(12 * MIB, 8);
        // SAFETY: live, freed once.
        unsafe { a.deallocate_bytes(first) };
        // Needs more than a quarter of the 12 MiB mapping: takes it whole.
        let block = a.allocate_bytes(4 * MIB, 8);
        assert_eq!(block, first);
        assert!(in_use_is_usable(block) > 11 * MIB);
        // Below half of it: trimmed where the OS can, kept elsewhere.
        // SAFETY: live block; the old pointer is not used again.
        let block = unsafe { a.reallocate_bytes(block, 3 * MIB, 8) };
        assert!(in_use_is_usable(block) >= 3 * MIB);
        fill(block, 3 * MIB, 0x3c);
        // SAFETY: `block` is the live block the last reallocation returned;
        // the old pointer is not used again.
        let block = unsafe { a.reallocate_bytes(block, 9 * MIB, 8) };
        assert!(in_use_is_usable(block) >= 9 * MIB);
        assert!(holds(block, 3 * MIB, 0x3c));
        // SAFETY: live, freed once.
        unsafe { a.deallocate_bytes(block) };
        let s = a.stats();
        assert_eq!(
            (s.bytes_in_use, s.huge_blocks, s.huge_cached),
            (0, 0, 1),
            "{s:?}"
        );
        // Served again, whatever size the mapping has now.
        let again = a.allocate_bytes(3 * MIB, 8);
        in_use_is_usable(again);
        // SAFETY: live, freed once.
        unsafe { a.deallocate_bytes(again) };
        a.collect();
        let s = a.stats();
        assert_eq!(
            (s.bytes_in_use, s.bytes_mapped, s.segments),
            (0, 0, 0),
            "{s:?}"
        );
    }

    #[test]
    fn too_large_a_mapping_is_not_handed_out() {
        let a = Rulloc::new();
        a.set_purge_delay_ms(60_000);
        let rounded = platform::huge_page_granule() > platform::page_size();
        if rounded {
            // 2.5 MiB takes a 4 MiB mapping; the 22 MiB block's 24 MiB one
            // must be cacheable: a peak of 400 MiB (mapped, never touched)
            // makes the cap at least 100 MiB, an entry at least 25 MiB
            // (the 128 MiB floor allows 32 MiB anyway).
            let peak = a.allocate_bytes(400 * MIB, 8);
            // SAFETY: live, freed once.
            unsafe { a.deallocate_bytes(peak) };
        }
        let big = a.allocate_bytes(if rounded { 22 * MIB } else { 12 * MIB }, 8);
        // SAFETY: live, freed once.
        unsafe { a.deallocate_bytes(big) };
        assert_eq!(a.stats().huge_cached, 1);
        // 2.5 MiB needs less than a quarter of the cached mapping.
        let small = a.allocate_bytes(5 * MIB / 2, 8);
        assert_ne!(small, big);
        let s = a.stats();
        assert_eq!((s.huge_cache_hits, s.huge_cached), (0, 1), "{s:?}");
        // A larger request than any entry maps afresh too.
        let larger = a.allocate_bytes(if rounded { 26 * MIB } else { 13 * MIB }, 8);
        assert_eq!(a.stats().huge_cache_hits, 0);
        // SAFETY: live, freed once.
        unsafe {
            a.deallocate_bytes(small);
            a.deallocate_bytes(larger);
        }
    }

    /// A huge block grown past its mapping keeps its contents and its
    /// segment's alignment whichever way it grows: in place, moved by
    /// `mremap` (Linux: no new mapping), or copied (elsewhere, and Miri).
    /// (That its old address is no block any more is checked in a process
    /// of its own: `tests/misuse.rs`, where no other test maps segments.)
    #[test]
    fn growing_a_huge_block_keeps_contents_and_alignment() {
        let a = Rulloc::new();
        let sizes = if cfg!(miri) {
            [3 * MIB, 5 * MIB, 9 * MIB]
        } else {
            [3 * MIB, 12 * MIB, 48 * MIB]
        };
        for align in [8, 8 * MIB] {
            let mut block = a.allocate_bytes(sizes[0], align);
            fill(block, sizes[0], 0xa5);
            let maps = a.stats().map_calls;
            for pair in sizes.windows(2) {
                // SAFETY: live block; the old pointer is not used again.
                block = unsafe { a.reallocate_bytes(block, pair[1], align) };
                assert_eq!(block.addr() % align.max(8), 0);
                assert!(holds(block, pair[0], 0xa5), "align {align}");
                // The segment map knows it: usable_size would be fatal.
                // SAFETY: live block.
                assert!(unsafe { a.usable_size(block) } >= pair[1]);
                fill(block, pair[1], 0xa5);
            }
            if cfg!(all(target_os = "linux", not(miri))) {
                assert_eq!(a.stats().map_calls, maps, "align {align}: never copied");
            }
            // SAFETY: live, freed once.
            unsafe { a.deallocate_bytes(block) };
        }
        a.collect();
        assert_eq!(a.stats().bytes_mapped, 0);
    }

    /// Where huge pages are asked for, a huge mapping is whole 2 MiB huge
    /// pages: a 3.3 MiB block gets 4 MiB, not a 1.3 MiB tail that faults
    /// in 4 KiB pages.
    #[test]
    fn huge_mappings_are_whole_huge_pages() {
        let a = Rulloc::new();
        a.set_purge_delay_ms(60_000);
        let granule = platform::huge_page_granule();
        if cfg!(all(target_os = "linux", not(miri))) && platform::page_size() == 4096 {
            assert_eq!(granule, 2 * MIB);
        }
        let size = 33 * MIB / 10;
        let block = a.allocate_bytes(size, 8);
        let header = segment::header_size();
        // SAFETY: live block.
        let usable = unsafe { a.usable_size(block) };
        assert_eq!(usable + header, round_up(size + header, granule));
        let s = a.stats();
        assert_eq!(s.bytes_mapped, usable + header, "{s:?}");
        // SAFETY: the whole usable size is the block's.
        unsafe { block.add(usable - 1).write(1) };
        // SAFETY: live, freed once.
        unsafe { a.deallocate_bytes(block) };
    }

    /// Sizes rounded to huge pages fit each other: a 3.6 MiB request takes
    /// the mapping a 3.3 MiB block left (both 4 MiB) instead of mapping
    /// fresh, zeroed memory.
    #[test]
    fn rounded_mappings_serve_slightly_larger_requests() {
        if platform::huge_page_granule() == platform::page_size() {
            return; // no rounding here (huge pages off, or not Linux)
        }
        let a = Rulloc::new();
        a.set_purge_delay_ms(60_000);
        let first = a.allocate_bytes(33 * MIB / 10, 8);
        // SAFETY: live, freed once.
        unsafe { a.deallocate_bytes(first) };
        let maps = a.stats().map_calls;
        let second = a.allocate_bytes(36 * MIB / 10, 8);
        assert_eq!(second, first);
        let s = a.stats();
        assert_eq!((s.huge_cache_hits, s.map_calls), (1, maps), "{s:?}");
        // SAFETY: live, freed once.
        unsafe { a.deallocate_bytes(second) };
    }

    #[test]
    fn best_fit_picks_the_smallest_entry_that_fits() {
        let a = Rulloc::new();
        a.set_purge_delay_ms(60_000);
        let sizes = [9 * MIB, 3 * MIB, 6 * MIB];
        let blocks: [*mut u8; 3] = sizes.map(|size| a.allocate_bytes(size, 8));
        for block in blocks {
            // SAFETY: live, freed once.
            unsafe { a.deallocate_bytes(block) };
        }
        assert_eq!(a.stats().huge_cached, 3);
        let block = a.allocate_bytes(5 * MIB, 8);
        assert_eq!(block, blocks[2], "the 6 MiB mapping fits best");
        // SAFETY: live, freed once.
        unsafe { a.deallocate_bytes(block) };
    }

    #[test]
    fn the_cache_keeps_at_most_its_entries() {
        let a = Rulloc::new();
        a.set_purge_delay_ms(60_000);
        let count = HUGE_CACHE_ENTRIES + 3;
        let blocks: std::vec::Vec<*mut u8> = (0..count)
            .map(|_| a.allocate_bytes(LARGE_MAX_SIZE + 1, 8))
            .collect();
        let live = a.stats();
        for &block in &blocks {
            // SAFETY: live, freed once.
            unsafe { a.deallocate_bytes(block) };
        }
        let s = a.stats();
        assert_eq!(s.huge_cached, HUGE_CACHE_ENTRIES, "{s:?}");
        // The oldest entries were unmapped.
        assert_eq!(s.unmap_calls, live.unmap_calls + 3, "{s:?}");
        let mapping = live.bytes_mapped / 64; // (any one huge mapping is smaller)
        assert!(s.bytes_mapped < live.bytes_mapped, "{s:?}");
        assert!(s.bytes_mapped > mapping, "{s:?}");
        // Dropping the instance unmaps the cached entries (Miri checks
        // that nothing leaks).
        drop(a);
    }

    #[test]
    #[cfg_attr(miri, ignore = "maps hundreds of MiB")]
    fn the_cache_keeps_at_most_its_bytes() {
        let a = Rulloc::new();
        a.set_purge_delay_ms(60_000);
        // Peak committed about 168 MiB: the cap is the 128 MiB floor, so
        // ten 11 MiB blocks' mappings (at most 12 MiB with huge pages) fit
        // and the oldest four go.
        let blocks: std::vec::Vec<*mut u8> =
            (0..14).map(|_| a.allocate_bytes(11 * MIB, 8)).collect();
        for block in blocks {
            // SAFETY: live, freed once.
            unsafe { a.deallocate_bytes(block) };
        }
        let s = a.stats();
        let fit = HUGE_CACHE_MIN_BYTES / (11 * MIB).next_multiple_of(platform::huge_page_granule());
        assert_eq!(s.huge_cached, fit, "{s:?}");
        assert!(s.bytes_mapped <= HUGE_CACHE_MIN_BYTES, "{s:?}");
        // A block larger than a quarter of the cap is never cached.
        let huge = a.allocate_bytes(HUGE_CACHE_MIN_BYTES / HUGE_CACHE_ENTRY_DIVISOR + MIB, 8);
        // SAFETY: live, freed once.
        unsafe { a.deallocate_bytes(huge) };
        assert_eq!(a.stats().huge_cached, fit);
        // After a larger peak the cap is a quarter of it.
        let peak: std::vec::Vec<*mut u8> = (0..24).map(|_| a.allocate_bytes(36 * MIB, 8)).collect();
        for block in peak {
            // SAFETY: live, freed once.
            unsafe { a.deallocate_bytes(block) };
        }
        let s = a.stats();
        let cap = s.peak_bytes_committed / HUGE_CACHE_PEAK_DIVISOR;
        assert!(cap > HUGE_CACHE_MIN_BYTES, "{s:?}");
        assert!(s.huge_cached >= 2, "{s:?}");
        // (Only cached mappings are left, all of the same size.)
        let mapping = s.bytes_mapped / s.huge_cached;
        assert!(mapping > 36 * MIB, "{s:?}");
        assert!(s.bytes_mapped <= cap, "{s:?}");
        assert!(s.bytes_mapped + mapping > cap, "{s:?}");
        a.collect();
    }

    #[test]
    fn aligned_requests_from_the_cache_are_aligned() {
        let a = Rulloc::new();
        a.set_purge_delay_ms(60_000);
        for align in [8, 4096, 64 * 1024, MIB, 4 * MIB] {
            let block = a.allocate_bytes(8 * MIB, 8);
            // SAFETY: live, freed once.
            unsafe { a.deallocate_bytes(block) };
            let hits = a.stats().huge_cache_hits;
            // The block sits at the header rounded up to `align`, so
            // 3 MiB fits the 8 MiB mapping for every align up to 4 MiB.
            let aligned = a.allocate_bytes(3 * MIB, align);
            assert_eq!(aligned.addr() % align, 0, "align {align}");
            assert_eq!(a.stats().huge_cache_hits, hits + 1, "align {align}");
            // SAFETY: live block of 7 MiB.
            unsafe {
                assert!(a.usable_size(aligned) >= 3 * MIB);
                aligned.add(3 * MIB - 1).write(1);
                a.deallocate_bytes(aligned);
            }
            a.collect();
        }
        // Above a segment, blocks get fresh mappings: still aligned.
        let block = a.allocate_bytes(8 * MIB, 8);
        // SAFETY: live, freed once.
        unsafe { a.deallocate_bytes(block) };
        let aligned = a.allocate_bytes(3 * MIB, 8 * MIB);
        assert_eq!(aligned.addr() % (8 * MIB), 0);
        // SAFETY: live, freed once.
        unsafe { a.deallocate_bytes(aligned) };
    }

    #[test]
    fn zeroed_requests_from_the_cache_are_zero() {
        let a = Rulloc::new();
        a.set_purge_delay_ms(60_000);
        let size = 6 * MIB;
        let dirty = a.allocate_bytes(size, 8);
        fill(dirty, size, 0xee);
        // SAFETY: live, freed once.
        unsafe { a.deallocate_bytes(dirty) };
        let zeroed = a.allocate_zeroed_bytes(size - 100, 8);
        assert_eq!(zeroed, dirty, "served from the cache");
        assert!(holds(zeroed, size - 100, 0));
        fill(zeroed, size - 100, 0xee);
        // SAFETY: live, freed once.
        unsafe { a.deallocate_bytes(zeroed) };
        // Through the traits too.
        let layout = core::alloc::Layout::from_size_align(size, 64).unwrap();
        // SAFETY: non-zero size.
        let global = unsafe { core::alloc::GlobalAlloc::alloc_zeroed(&a, layout) };
        assert_eq!(global, dirty);
        assert!(holds(global, size, 0));
        fill(global, size, 0xee);
        // SAFETY: live with `layout`.
        unsafe { core::alloc::GlobalAlloc::dealloc(&a, global, layout) };
        let block = allocator_api2::alloc::Allocator::allocate_zeroed(&a, layout).unwrap();
        assert!(holds(block.cast::<u8>().as_ptr(), size, 0));
        // SAFETY: live with `layout`.
        unsafe { allocator_api2::alloc::Allocator::deallocate(&a, block.cast(), layout) };
    }

    /// Sixteen buffers of up to 8 MiB replaced in turn (the bench's
    /// malloc-large) all fit: twelve 10 MiB mappings freed and asked for
    /// again are all served from the cache. (With 8 entries and a 64 MiB
    /// floor, six were, and the rest mapped again.)
    #[test]
    #[cfg_attr(miri, ignore = "maps over 100 MiB")]
    fn a_dozen_multi_mib_buffers_are_all_cached() {
        let a = Rulloc::new();
        a.set_purge_delay_ms(60_000);
        let size = 8 * MIB;
        let round =
            || -> std::vec::Vec<*mut u8> { (0..12).map(|_| a.allocate_bytes(size, 8)).collect() };
        let free = |blocks: std::vec::Vec<*mut u8>| {
            for block in blocks {
                // SAFETY: live, freed once.
                unsafe { a.deallocate_bytes(block) };
            }
        };
        free(round());
        let before = a.stats();
        assert_eq!(before.huge_cached, 12, "{before:?}");
        let again = round();
        let s = a.stats();
        assert_eq!(s.map_calls, before.map_calls, "{s:?}");
        assert_eq!(s.huge_cache_hits, before.huge_cache_hits + 12, "{s:?}");
        free(again);
        a.collect();
    }

    /// An entry expires once it and the cache went unused for the delay:
    /// a large mapping waits in a cache that keeps serving smaller
    /// requests, longer than the delay, and is then served too.
    #[test]
    #[cfg_attr(miri, ignore)] // depends on wall-clock delays
    fn a_cache_in_use_keeps_its_entries() {
        use std::thread::sleep;
        use std::time::{Duration, Instant};
        let a = Rulloc::new();
        let delay = 300;
        a.set_purge_delay_ms(delay);
        let (big, small) = (8 * MIB, 3 * MIB);
        let blocks = [big, small].map(|size| a.allocate_bytes(size, 8));
        for block in blocks {
            // SAFETY: live, freed once.
            unsafe { a.deallocate_bytes(block) };
        }
        let start = Instant::now();
        // 480 ms of requests the small entry serves, one every 60 ms.
        for _ in 0..8 {
            sleep(Duration::from_millis(60));
            let block = a.allocate_bytes(small, 8);
            // SAFETY: live, freed once.
            unsafe { a.deallocate_bytes(block) };
        }
        let before = a.stats();
        let block = a.allocate_bytes(big, 8);
        let s = a.stats();
        if start.elapsed() < Duration::from_millis(2 * delay as u64) {
            // (On a machine so loaded that one step took longer than the
            // delay, the cache may rightly have gone.)
            assert_eq!(s.map_calls, before.map_calls, "{s:?}");
            assert_eq!(s.huge_cache_hits, before.huge_cache_hits + 1, "{s:?}");
        }
        // SAFETY: live, freed once.
        unsafe { a.deallocate_bytes(block) };
        // Unused for longer than the delay, the cache empties.
        sleep(Duration::from_millis(delay as u64 + 100));
        let other = a.allocate_bytes(20 * MIB, 8);
        assert_eq!(a.stats().huge_cached, 0);
        // SAFETY: live, freed once.
        unsafe { a.deallocate_bytes(other) };
    }

    #[test]
    fn cached_mappings_go_back_after_the_purge_delay() {
        let a = Rulloc::new();
        a.set_purge_delay_ms(1);
        let block = a.allocate_bytes(8 * MIB, 8);
        fill(block, 8 * MIB, 1);
        let live = a.stats();
        // SAFETY: live, freed once.
        unsafe { a.deallocate_bytes(block) };
        let cached = a.stats();
        assert_eq!(cached.huge_cached, 1, "{cached:?}");
        std::thread::sleep(std::time::Duration::from_millis(20));
        // No huge call: the first small allocation (a new heap's slow
        // path) purges the cache.
        let small = a.allocate_bytes(16, 8);
        let s = a.stats();
        assert_eq!(s.huge_cached, 0, "{s:?}");
        assert_eq!(s.unmap_calls, cached.unmap_calls + 1, "{s:?}");
        assert!(
            s.bytes_mapped + 8 * MIB <= live.bytes_mapped + SEGMENT_SIZE * 2,
            "{s:?}"
        );
        assert!(s.bytes_committed < live.bytes_committed, "{s:?}");
        // And through a huge call.
        let block = a.allocate_bytes(3 * MIB, 8);
        // SAFETY: live, freed once.
        unsafe { a.deallocate_bytes(block) };
        assert_eq!(a.stats().huge_cached, 1);
        std::thread::sleep(std::time::Duration::from_millis(20));
        let other = a.allocate_bytes(20 * MIB, 8);
        let s = a.stats();
        assert_eq!((s.huge_cached, s.huge_cache_hits), (0, 0), "{s:?}");
        // SAFETY: live, freed once.
        unsafe {
            a.deallocate_bytes(other);
            a.deallocate_bytes(small);
        }
    }

    #[test]
    fn no_delay_means_no_cache() {
        let a = Rulloc::new();
        a.set_purge_delay_ms(0);
        let block = a.allocate_bytes(8 * MIB, 8);
        let live = a.stats();
        // SAFETY: live, freed once.
        unsafe { a.deallocate_bytes(block) };
        let s = a.stats();
        assert_eq!(s.huge_cached, 0, "{s:?}");
        assert_eq!(s.unmap_calls, live.unmap_calls + 1);
        assert!(s.bytes_mapped < live.bytes_mapped);
    }

    #[test]
    fn collect_empties_the_cache() {
        let a = Rulloc::new();
        a.set_purge_delay_ms(60_000);
        let blocks = [3 * MIB, 8 * MIB].map(|size| a.allocate_bytes(size, 8));
        let live = a.stats();
        for block in blocks {
            // SAFETY: live, freed once.
            unsafe { a.deallocate_bytes(block) };
        }
        assert_eq!(a.stats().huge_cached, 2);
        a.collect();
        let s = a.stats();
        assert_eq!(
            (s.huge_cached, s.huge_blocks, s.segments),
            (0, 0, 0),
            "{s:?}"
        );
        assert_eq!(s.bytes_mapped, 0, "{s:?}");
        assert_eq!(s.bytes_committed, 0, "{s:?}");
        assert_eq!(s.unmap_calls, live.unmap_calls + 2);
        assert_eq!(s.peak_bytes_committed, live.peak_bytes_committed);
        // The next request maps afresh.
        let block = a.allocate_bytes(3 * MIB, 8);
        assert_eq!(a.stats().huge_cache_hits, 0);
        // SAFETY: live, freed once.
        unsafe { a.deallocate_bytes(block) };
    }

    #[test]
    fn threads_share_the_cache() {
        let a = Rulloc::new();
        a.set_purge_delay_ms(60_000);
        let rounds = if cfg!(miri) { 3 } else { 200 };
        std::thread::scope(|s| {
            for t in 0..4u8 {
                let a = &a;
                s.spawn(move || {
                    for round in 0..rounds {
                        let size = LARGE_MAX_SIZE + 1 + (round * 7919 + t as usize) % (4 * MIB);
                        let block = a.allocate_bytes(size, 8);
                        fill(block, size.min(64 * 1024), t);
                        // SAFETY: the block is live, only this thread has it.
                        unsafe { block.add(size - 1).write(t) };
                        assert!(holds(block, size.min(64 * 1024), t));
                        // SAFETY: live, freed once.
                        unsafe { a.deallocate_bytes(block) };
                    }
                });
            }
        });
        let s = a.stats();
        assert_eq!((s.bytes_in_use, s.huge_blocks), (0, 0), "{s:?}");
        assert!(s.huge_cached <= HUGE_CACHE_ENTRIES);
        a.collect();
        let s = a.stats();
        assert_eq!((s.huge_cached, s.bytes_mapped), (0, 0), "{s:?}");
    }
}
