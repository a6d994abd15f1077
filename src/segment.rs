//! Segments: big OS mappings aligned to their own size, cut into slots.
//!
//! ```text
//!  segment base (aligned to SEGMENT_SIZE = 4 MiB)
//!  |
//!  v  slot 0          slot 1     slot 2     slot 3          slot 63
//!  +-----------------+----------+----------+----------+ ... +----------+
//!  | Segment header  | Region   | Region (2 slots)    |     | free     |
//!  | regions[0..64]: | 32 B blk | 1 KiB blocks        |     | span     |
//!  | one descriptor  |          |                     |     |          |
//!  | per slot        |          |                     |     |          |
//!  +-----------------+----------+----------+----------+ ... +----------+
//!   <--- 64 KiB ---->
//!
//!  block address p  -->  segment = (p - 1) & !(SEGMENT_SIZE - 1)
//!                        slot    = (p - segment) >> SLOT_SHIFT
//!                        region  = segment.regions[slot].first
//! ```
//!
//! Because a segment is aligned to its size, the header of the segment
//! holding any block is one mask away, and the descriptor of its region one
//! shift and one subtraction away: no per-block header and no search (this
//! answers the seed's TODO items on header size and alignment).
//!
//! A segment belongs to exactly one heap, whose [`SpanPool`] hands out its
//! free slots as spans. Free spans are kept in 64 bins by exact slot count
//! with a bitmap of non-empty bins, so finding the smallest span that fits
//! is one `trailing_zeros`: O(1) (the seed's TODO on free block search).
//! Freed spans coalesce with free neighbours; a segment whose slots are all
//! free is cached (a few per heap, more while the heap's segment delay is
//! backed off, so waves of frees and allocations do not thrash the OS) and
//! unmapped once it stayed unused for the segment delay (see
//! [`crate::heap`]: the delay free spans wait before their purge backs
//! off separately).
//!
//! Transparent huge pages are asked for (`madvise(MADV_HUGEPAGE)`) only
//! once a heap holds a second segment: a 2 MiB page faults in whole, so a
//! thread that allocates a few KiB would pay 2 MiB of RSS for its header
//! and first region (4 MiB once it reaches the second half), and a program
//! of many small threads most of its footprint. A heap that grows past one
//! segment asks for them on every segment it has and maps from then on
//! (the kernel then backs new faults with huge pages and may collapse the
//! first segment's touched ones in the background).
//!
//! A *huge* segment (see [`crate::large`]) is a mapping of its own holding
//! one block; it has the same header so lookups treat both kinds alike.
//!
//! Invariants:
//!
//! * Slot 0 is always the header, so no block starts at a segment base.
//! * The spans of a segment tile slots `1..SLOTS_PER_SEGMENT` exactly; the
//!   last slot of every span points at the span's first descriptor.
//! * A span is in the bin of its slot count iff it is free.

use core::mem::size_of;
use core::ptr::{self, NonNull};

use crate::misuse;
use crate::platform;
use crate::region::{Region, RegionKind};

/// log2 of [`SLOT_SIZE`].
pub(crate) const SLOT_SHIFT: usize = 16;
/// Granule of regions: 64 KiB, a multiple of every common page size (4, 16
/// and 64 KiB) so regions can be purged page-wise on all of them.
pub(crate) const SLOT_SIZE: usize = 1 << SLOT_SHIFT;
/// log2 of [`SEGMENT_SIZE`].
pub(crate) const SEGMENT_SHIFT: usize = 22;
/// Size and alignment of a segment: 4 MiB, so one `mmap` serves 63 regions
/// and the descriptor array stays a few KiB.
pub(crate) const SEGMENT_SIZE: usize = 1 << SEGMENT_SHIFT;
pub(crate) const SEGMENT_MASK: usize = SEGMENT_SIZE - 1;
/// Slots in a segment, header slot included.
pub(crate) const SLOTS_PER_SEGMENT: usize = SEGMENT_SIZE / SLOT_SIZE;
/// Slots available to regions: all but the header slot (the secure build's
/// guard page after the segment lies outside it: see [`add_guard_pages`]).
pub(crate) const USABLE_SLOTS: usize = SLOTS_PER_SEGMENT - 1;
/// The largest span the dynamic bucket carves inside segments (2 MiB);
/// larger blocks get a mapping of their own (a huge segment).
pub(crate) const LARGE_MAX_SLOTS: usize = 32;
pub(crate) const LARGE_MAX_SIZE: usize = LARGE_MAX_SLOTS * SLOT_SIZE;
/// Empty segments a heap keeps mapped (32 MiB of address space), each
/// until it has been empty for the heap's segment delay: a program that
/// frees and reallocates a few MiB in waves does not map and unmap on
/// every wave. The heap raises the limit while its segment delay is backed
/// off (the `cache_limit` of [`SpanPool::free`]).
pub(crate) const CACHED_SEGMENTS: usize = 8;

/// What a segment is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub(crate) enum SegmentKind {
    /// Cut into regions, owned by a heap.
    Regions = 1,
    /// One huge block (see [`crate::large`]).
    Huge = 2,
}

/// The header at the base of every segment.
#[repr(C)]
pub(crate) struct Segment {
    pub(crate) kind: SegmentKind,
    /// The owner heap (`Regions` segments); never changes.
    pub(crate) owner: *mut u8,
    /// The OS mapping that holds this segment (may start before it for
    /// huge blocks with alignment above [`SEGMENT_SIZE`]).
    pub(crate) mapping: *mut u8,
    pub(crate) mapping_size: usize,
    pub(crate) mapping_align: usize,
    /// Links in the owner heap's segment list or the huge list.
    pub(crate) next: *mut Segment,
    pub(crate) prev: *mut Segment,
    /// Free slots (`Regions` segments).
    pub(crate) free_slots: usize,
    /// When the segment became entirely free (ms; cached segments).
    pub(crate) freed_at: u64,
    /// Huge block: offset from the segment base and usable size.
    pub(crate) huge_offset: usize,
    pub(crate) huge_size: usize,
    /// One descriptor per slot.
    pub(crate) regions: [Region; SLOTS_PER_SEGMENT],
}

/// Bytes of header at the base of a segment, rounded up to a page.
pub(crate) fn header_size() -> usize {
    round_up(size_of::<Segment>(), platform::page_size())
}

/// Rounds `value` up to a multiple of `align` (a power of two); the caller
/// guarantees no overflow.
#[inline]
pub(crate) const fn round_up(value: usize, align: usize) -> usize {
    (value + align - 1) & !(align - 1)
}

/// The segment holding the block at `ptr`.
///
/// Segments' addresses are exposed when created, so the header can be
/// reached from any block pointer whatever its provenance (Miri checks this
/// under both Stacked and Tree Borrows).
#[inline(always)]
pub(crate) fn segment_of(ptr: *const u8) -> *mut Segment {
    ptr::with_exposed_provenance_mut((ptr.addr().wrapping_sub(1)) & !SEGMENT_MASK)
}

/// The region descriptor for a block of a `Regions` segment.
///
/// # Safety
///
/// `ptr` is inside a live region of the `Regions` segment `segment`.
#[inline(always)]
pub(crate) unsafe fn region_of(segment: *mut Segment, ptr: *const u8) -> *mut Region {
    let slot = (ptr.addr() - segment.addr()) >> SLOT_SHIFT;
    // SAFETY: slot < SLOTS_PER_SEGMENT since ptr is inside the segment; every
    // slot of a used span points at the span's first descriptor.
    unsafe { (*slot_descriptor(segment, slot)).first }
}

/// The descriptor of slot `slot`.
///
/// # Safety
///
/// `segment` is live and `slot < SLOTS_PER_SEGMENT`.
#[inline(always)]
pub(crate) unsafe fn slot_descriptor(segment: *mut Segment, slot: usize) -> *mut Region {
    // SAFETY: caller's contract; no reference to the array is created.
    unsafe {
        ptr::addr_of_mut!((*segment).regions)
            .cast::<Region>()
            .add(slot)
    }
}

/// The index of a descriptor in its segment.
fn slot_index(segment: *mut Segment, region: *mut Region) -> usize {
    // SAFETY: descriptors live inside their segment's header.
    let first = unsafe { slot_descriptor(segment, 0) };
    (region.addr() - first.addr()) / size_of::<Region>()
}

/// The segment of a descriptor.
pub(crate) fn segment_of_region(region: *mut Region) -> *mut Segment {
    region.map_addr(|a| a & !SEGMENT_MASK).cast()
}

/// The first byte of slot `slot`.
fn slot_start(segment: *mut Segment, slot: usize) -> *mut u8 {
    segment.cast::<u8>().wrapping_add(slot << SLOT_SHIFT)
}

/// What the span pool reports to its heap about the OS.
#[derive(Default)]
pub(crate) struct SpanEvents {
    /// The span handed out has no resident pages (purged, or fresh).
    pub(crate) took_clean: bool,
    /// When the clean span handed out was purged (ms; 0: fresh, or purged
    /// by a collect): see [`crate::heap::Heap`]'s purge backoff.
    pub(crate) purged_at: u64,
    pub(crate) mapped: usize,
    pub(crate) unmapped: usize,
    /// Empty segments kept mapped (cached) instead of unmapped.
    pub(crate) cached: usize,
    pub(crate) purges: usize,
    pub(crate) purged_bytes: usize,
}

/// A heap's free slots, over all of its segments.
pub(crate) struct SpanPool {
    /// `bins[n]`: free spans of exactly `n` slots (doubly linked).
    bins: [*mut Region; SLOTS_PER_SEGMENT],
    /// Bit `n` set iff `bins[n]` is non-empty.
    bitmap: u64,
    /// Segments of this heap (doubly linked), for drop and collect.
    pub(crate) segments: *mut Segment,
    /// Fully free segments kept mapped to absorb alloc/free waves (linked
    /// through `next`, most recent first; each was cached while
    /// `cached_count` was below the limit its free was given); each is
    /// unmapped once it has stayed unused for the segment delay.
    cached: *mut Segment,
    cached_count: usize,
    /// The owning heap, recorded in every segment header.
    owner: *mut u8,
    /// The owning heap's tag, recorded in the segment map.
    tag: u8,
    /// Whether this pool's segments ask for transparent huge pages: from
    /// its second segment on (see the module documentation).
    huge_pages: bool,
}

impl SpanPool {
    pub(crate) const fn new() -> Self {
        Self {
            bins: [ptr::null_mut(); SLOTS_PER_SEGMENT],
            bitmap: 0,
            segments: ptr::null_mut(),
            cached: ptr::null_mut(),
            cached_count: 0,
            owner: ptr::null_mut(),
            tag: misuse::TAG_SHARED,
            huge_pages: false,
        }
    }

    /// Asks for transparent huge pages on every segment of the pool, live
    /// or cached, and on those it maps from now on: the heap is growing
    /// past one segment.
    fn start_huge_pages(&mut self) {
        self.huge_pages = true;
        for list in [self.segments, self.cached] {
            let mut segment = list;
            while !segment.is_null() {
                // SAFETY: every segment on the pool's lists is a live
                // mapping of it, SEGMENT_SIZE bytes from its base.
                unsafe {
                    platform::advise_huge_pages(
                        NonNull::new_unchecked(segment.cast::<u8>()),
                        SEGMENT_SIZE,
                    );
                    segment = (*segment).next;
                }
            }
        }
    }

    /// Sets the owning heap and its tag (see [`crate::misuse`]), recorded
    /// for every segment mapped from now on.
    pub(crate) fn set_owner(&mut self, owner: *mut u8, tag: u8) {
        self.owner = owner;
        self.tag = tag;
    }

    /// Takes a span of exactly `slots` slots (1..=USABLE_SLOTS), mapping a
    /// new segment if no free span is large enough. Returns the first
    /// descriptor, with `slot_count` and every slot's `first` set, or null if
    /// the OS refused memory.
    pub(crate) fn alloc(&mut self, slots: usize, events: &mut SpanEvents) -> *mut Region {
        debug_assert!((1..=USABLE_SLOTS).contains(&slots));
        let mut fitting = self.bitmap & (!0u64 << slots);
        if fitting == 0 {
            let segment = self.new_segment(events);
            if segment.is_null() {
                return ptr::null_mut();
            }
            fitting = self.bitmap & (!0u64 << slots);
        }
        let bin = fitting.trailing_zeros() as usize;
        let span = self.bins[bin];
        // SAFETY: a set bit guarantees a live free span in the bin; spans
        // and their segments belong to this pool.
        unsafe {
            self.unlink(span, bin);
            events.took_clean = !(*span).dirty;
            events.purged_at = if (*span).dirty { 0 } else { (*span).freed_at };
            let segment = segment_of_region(span);
            let first = slot_index(segment, span);
            if bin > slots {
                let (dirty, freed_at) = ((*span).dirty, (*span).freed_at);
                self.insert_free(segment, first + slots, bin - slots, dirty, freed_at);
            }
            for i in 0..slots {
                let descriptor = span.add(i);
                (*descriptor).first = span;
            }
            (*span).slot_count = slots as u32;
            Region::set_kind(span, RegionKind::Unused);
            (*segment).free_slots -= slots;
        }
        span
    }

    /// The first byte of the span starting at `region`.
    pub(crate) fn span_start(region: *mut Region) -> *mut u8 {
        let segment = segment_of_region(region);
        slot_start(segment, slot_index(segment, region))
    }

    /// Gives a span back, coalescing with free neighbours. The span is
    /// dirty (its pages were used) as of `now`. A segment left entirely free
    /// is cached, if fewer than `cache_limit` are, or unmapped.
    ///
    /// # Safety
    ///
    /// `span` is the first descriptor of a used span of this pool whose
    /// blocks are all dead, and it is on no list.
    pub(crate) unsafe fn free(
        &mut self,
        span: *mut Region,
        now: u64,
        cache_limit: usize,
        events: &mut SpanEvents,
    ) {
        // SAFETY: descriptors of one of our segments; neighbours are found
        // through the tiling invariant.
        unsafe {
            let segment = segment_of_region(span);
            let mut first = slot_index(segment, span);
            let mut count = (*span).slot_count as usize;
            Region::set_kind(span, RegionKind::Unused);
            (*segment).free_slots += count;
            // A merged span is dirty if any part is, and is as old as its
            // youngest dirty part (purging waits for the whole span).
            let mut freed_at = now;
            // Merge with the following span.
            let after = first + count;
            if after < SLOTS_PER_SEGMENT {
                let next = slot_descriptor(segment, after);
                if (*next).kind == RegionKind::FreeSpan {
                    let next_count = (*next).slot_count as usize;
                    if (*next).dirty {
                        freed_at = freed_at.max((*next).freed_at);
                    }
                    self.unlink(next, next_count);
                    count += next_count;
                }
            }
            // Merge with the preceding span (slot 0 is the header, never free).
            let last_of_previous = slot_descriptor(segment, first - 1);
            let previous = (*last_of_previous).first;
            if (*previous).kind == RegionKind::FreeSpan {
                let previous_count = (*previous).slot_count as usize;
                if (*previous).dirty {
                    freed_at = freed_at.max((*previous).freed_at);
                }
                self.unlink(previous, previous_count);
                first -= previous_count;
                count += previous_count;
            }
            if count == USABLE_SLOTS {
                self.release_segment(segment, now, cache_limit, events);
            } else {
                self.insert_free(segment, first, count, true, freed_at);
            }
        }
    }

    /// Purges the pages of every free span that has been dirty for at
    /// least `delay` ms, and unmaps cached empty segments once they have
    /// been unused for `segment_delay` ms. Returns when the next purge is
    /// due (`None` if nothing is left to purge).
    pub(crate) fn purge_expired(
        &mut self,
        now: u64,
        delay: u64,
        segment_delay: u64,
        events: &mut SpanEvents,
    ) -> Option<u64> {
        let mut next_due: Option<u64> = None;
        let mut bins = self.bitmap;
        while bins != 0 {
            let bin = bins.trailing_zeros() as usize;
            bins &= bins - 1;
            let mut span = self.bins[bin];
            while !span.is_null() {
                // SAFETY: a free span of one of our segments holds nothing
                // live; slots are page-aligned (SLOT_SIZE is a multiple of
                // every supported page size).
                unsafe {
                    if (*span).dirty {
                        let due = (*span).freed_at.saturating_add(delay);
                        if due <= now {
                            let bytes = bin * SLOT_SIZE;
                            if platform::purge(
                                NonNull::new_unchecked(Self::span_start(span)),
                                bytes,
                            ) {
                                (*span).dirty = false;
                                // A clean span's `freed_at` says when it was
                                // purged (0 for a collect's purge-all).
                                (*span).freed_at = if now == u64::MAX { 0 } else { now };
                                events.purges += 1;
                                events.purged_bytes += bytes;
                            }
                        } else {
                            next_due = Some(next_due.map_or(due, |d| d.min(due)));
                        }
                    }
                    span = (*span).next;
                }
            }
        }
        // Cached segments, most recent first: unmap the expired tail.
        let mut link: *mut *mut Segment = &mut self.cached;
        // SAFETY: cached segments are unused mappings of this pool, linked
        // through `next`.
        unsafe {
            while !(*link).is_null() {
                let segment = *link;
                let due = (*segment).freed_at.saturating_add(segment_delay);
                if due <= now {
                    *link = (*segment).next;
                    self.cached_count -= 1;
                    unmap_segment(segment, events);
                } else {
                    next_due = Some(next_due.map_or(due, |d| d.min(due)));
                    link = &mut (*segment).next;
                }
            }
        }
        next_due
    }

    /// Whether the span after `region` (in its segment) is free and has at
    /// least `extra` slots; used to grow large blocks in place.
    ///
    /// # Safety
    ///
    /// `region` is the first descriptor of a used span of this pool.
    pub(crate) unsafe fn try_grow(&mut self, region: *mut Region, extra: usize) -> bool {
        // SAFETY: `region` is the first descriptor of a used span of this
        // pool (caller's contract); its neighbours are found through the
        // tiling invariant.
        unsafe {
            let segment = segment_of_region(region);
            let first = slot_index(segment, region);
            let count = (*region).slot_count as usize;
            let after = first + count;
            if after >= SLOTS_PER_SEGMENT {
                return false;
            }
            let next = slot_descriptor(segment, after);
            if (*next).kind != RegionKind::FreeSpan || ((*next).slot_count as usize) < extra {
                return false;
            }
            let next_count = (*next).slot_count as usize;
            let (dirty, freed_at) = ((*next).dirty, (*next).freed_at);
            self.unlink(next, next_count);
            if next_count > extra {
                self.insert_free(segment, after + extra, next_count - extra, dirty, freed_at);
            }
            for i in count..count + extra {
                (*region.add(i)).first = region;
            }
            (*region).slot_count = (count + extra) as u32;
            (*segment).free_slots -= extra;
            true
        }
    }

    /// Cuts the last `fewer` slots off a used span and frees them.
    ///
    /// # Safety
    ///
    /// `region` is the first descriptor of a used span of this pool with
    /// more than `fewer` slots, and those slots hold nothing live.
    pub(crate) unsafe fn shrink(
        &mut self,
        region: *mut Region,
        fewer: usize,
        now: u64,
        events: &mut SpanEvents,
    ) {
        // SAFETY: `region` is the first descriptor of a used span of this
        // pool with more than `fewer` slots, whose tail holds nothing live
        // (caller's contract).
        unsafe {
            let keep = (*region).slot_count as usize - fewer;
            (*region).slot_count = keep as u32;
            let tail = region.add(keep);
            (*tail).slot_count = fewer as u32;
            for i in 0..fewer {
                (*tail.add(i)).first = tail;
            }
            Region::set_kind(tail, RegionKind::Unused);
            // The span keeps its first slots, so the segment cannot become
            // entirely free here: no limit applies.
            self.free(tail, now, CACHED_SEGMENTS, events);
        }
    }

    /// Releases every segment of the pool (the heap is being dropped).
    pub(crate) fn release_all(&mut self, events: &mut SpanEvents) {
        // SAFETY: every segment on the list is a live mapping of this pool;
        // nothing uses them any more (caller's drop).
        unsafe {
            while !self.segments.is_null() {
                let segment = self.segments;
                self.unlink_segment(segment);
                unmap_segment(segment, events);
            }
        }
        self.release_cached(events);
        self.bins = [ptr::null_mut(); SLOTS_PER_SEGMENT];
        self.bitmap = 0;
    }

    /// Unmaps every cached empty segment (collect / trim).
    pub(crate) fn release_cached(&mut self, events: &mut SpanEvents) {
        while !self.cached.is_null() {
            let segment = self.cached;
            // SAFETY: cached segments are unused mappings of this pool.
            unsafe {
                self.cached = (*segment).next;
                unmap_segment(segment, events);
            }
        }
        self.cached_count = 0;
    }

    fn new_segment(&mut self, events: &mut SpanEvents) -> *mut Segment {
        let reused = !self.cached.is_null();
        let segment = if self.cached.is_null() {
            let mapping_size = SEGMENT_SIZE + trailing_guard();
            let Some(mapping) = platform::map_aligned(mapping_size, SEGMENT_SIZE) else {
                return ptr::null_mut();
            };
            events.mapped += 1;
            if !self.huge_pages && !self.segments.is_null() {
                // The second segment: the heap is no longer small.
                self.start_huge_pages();
            }
            if self.huge_pages {
                // SAFETY: the whole fresh mapping.
                unsafe { platform::advise_huge_pages(mapping, SEGMENT_SIZE) };
            }
            let segment = mapping.as_ptr().cast::<Segment>();
            misuse::register_segment(segment.expose_provenance(), self.tag);
            // SAFETY: a fresh zeroed mapping large enough for the header.
            unsafe {
                (*segment).kind = SegmentKind::Regions;
                (*segment).owner = self.owner;
                (*segment).mapping = mapping.as_ptr();
                (*segment).mapping_size = mapping_size;
                (*segment).mapping_align = SEGMENT_SIZE;
                let header = slot_descriptor(segment, 0);
                Region::set_kind(header, RegionKind::Header);
                (*header).slot_count = 1;
                (*header).first = header;
                if crate::block::SECURE {
                    add_guard_pages(segment);
                }
            }
            segment
        } else {
            let segment = self.cached;
            // SAFETY: a cached segment of this pool.
            self.cached = unsafe { (*segment).next };
            self.cached_count -= 1;
            segment
        };
        // A reused cached segment may hold dirty pages; a new one does not.
        let (dirty, freed_at) = if reused {
            // SAFETY: a segment taken from this pool's cache: a live mapping
            // whose header only this pool touches.
            (true, unsafe { (*segment).freed_at })
        } else {
            (false, 0)
        };
        // SAFETY: the segment is ours and all its usable slots are free.
        unsafe {
            (*segment).free_slots = USABLE_SLOTS;
            (*segment).prev = ptr::null_mut();
            (*segment).next = self.segments;
            if !self.segments.is_null() {
                (*self.segments).prev = segment;
            }
            self.segments = segment;
            self.insert_free(segment, 1, USABLE_SLOTS, dirty, freed_at);
        }
        segment
    }

    /// # Safety
    ///
    /// `segment` is on this pool's list and entirely free (its one free
    /// span already unlinked).
    unsafe fn release_segment(
        &mut self,
        segment: *mut Segment,
        now: u64,
        cache_limit: usize,
        events: &mut SpanEvents,
    ) {
        // SAFETY: caller's contract.
        unsafe {
            self.unlink_segment(segment);
            if self.cached_count < cache_limit {
                (*segment).freed_at = now;
                (*segment).next = self.cached;
                self.cached = segment;
                self.cached_count += 1;
                events.cached += 1;
            } else {
                unmap_segment(segment, events);
            }
        }
    }

    /// # Safety
    ///
    /// `segment` is on this pool's list.
    unsafe fn unlink_segment(&mut self, segment: *mut Segment) {
        // SAFETY: list links of our segments.
        unsafe {
            let (prev, next) = ((*segment).prev, (*segment).next);
            if prev.is_null() {
                self.segments = next;
            } else {
                (*prev).next = next;
            }
            if !next.is_null() {
                (*next).prev = prev;
            }
        }
    }

    /// Marks slots `first..first+count` of `segment` as a free span and bins it.
    ///
    /// # Safety
    ///
    /// Those slots are free and belong to no span on a list.
    unsafe fn insert_free(
        &mut self,
        segment: *mut Segment,
        first: usize,
        count: usize,
        dirty: bool,
        freed_at: u64,
    ) {
        // SAFETY: descriptors of our segment.
        unsafe {
            let span = slot_descriptor(segment, first);
            Region::set_kind(span, RegionKind::FreeSpan);
            (*span).slot_count = count as u32;
            (*span).dirty = dirty;
            (*span).freed_at = freed_at;
            (*span).first = span;
            let last = slot_descriptor(segment, first + count - 1);
            (*last).first = span;
            (*span).prev = ptr::null_mut();
            (*span).next = self.bins[count];
            if !self.bins[count].is_null() {
                (*self.bins[count]).prev = span;
            }
            self.bins[count] = span;
            self.bitmap |= 1 << count;
        }
    }

    /// # Safety
    ///
    /// `span` is a free span in `bins[bin]`.
    unsafe fn unlink(&mut self, span: *mut Region, bin: usize) {
        // SAFETY: list links of a binned span.
        unsafe {
            let (prev, next) = ((*span).prev, (*span).next);
            if prev.is_null() {
                self.bins[bin] = next;
            } else {
                (*prev).next = next;
            }
            if !next.is_null() {
                (*next).prev = prev;
            }
            if self.bins[bin].is_null() {
                self.bitmap &= !(1 << bin);
            }
            Region::set_kind(span, RegionKind::Unused);
        }
    }
}

/// Unmaps a segment's whole mapping.
///
/// # Safety
///
/// `segment` is live, on no list, and nothing in it is used any more.
pub(crate) unsafe fn unmap_segment(segment: *mut Segment, events: &mut SpanEvents) {
    misuse::unregister_segment(segment.addr());
    // SAFETY: caller's contract; the header records the mapping exactly.
    unsafe {
        let (mapping, size, align) = (
            (*segment).mapping,
            (*segment).mapping_size,
            (*segment).mapping_align,
        );
        platform::unmap(NonNull::new_unchecked(mapping), size, align);
    }
    events.unmapped += 1;
}

/// Secure build: the page after the segment, part of its mapping, is a
/// guard page; 0 otherwise.
fn trailing_guard() -> usize {
    if crate::block::SECURE {
        platform::page_size()
    } else {
        0
    }
}

/// Secure build: the rest of the header slot after the header, and the
/// page after the segment (part of its mapping), become guard pages: a
/// linear overflow out of the last region, or down into the header from
/// the first one, faults, and segments never touch (the next one cannot
/// start at the guard page).
///
/// ```text
///  base            base + 64 KiB          base + 2 MiB          base + 4 MiB
///  +--------+-------+-----------------------+----------------------+-------+
///  | header | guard | regions (slots 1..31) | regions (slots 32..63)| guard |
///  +--------+-------+-----------------------+----------------------+-------+
///  '------ 4 KiB pages only ---------------''- transparent huge page -'
/// ```
///
/// The guard after the segment used to be its own last page: a guard page
/// inside a 2 MiB range keeps the kernel from backing that range with a
/// transparent huge page, so with a guard in each half a secure segment got
/// none, which cost 10 to 20 % more time on workloads with hundreds of MiB
/// live (`waves`: 200k page faults instead of a few thousand). The guard
/// after the header still costs the first half its huge page.
///
/// # Safety
///
/// `segment` is a fresh `Regions` segment mapped with [`trailing_guard`]
/// bytes after it.
unsafe fn add_guard_pages(segment: *mut Segment) {
    let base = segment.cast::<u8>();
    let header_end = header_size();
    // SAFETY: both ranges are page aligned, inside the mapping, and never
    // used (the header ends before `header_end`; the guard page follows the
    // last slot).
    unsafe {
        if header_end < SLOT_SIZE {
            platform::protect_none(
                NonNull::new_unchecked(base.add(header_end)),
                SLOT_SIZE - header_end,
            );
        }
        platform::protect_none(
            NonNull::new_unchecked(base.add(SEGMENT_SIZE)),
            trailing_guard(),
        );
    }
}
