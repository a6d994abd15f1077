//! [`Rulloc`]: the public type and its trait implementations. Start reading
//! here.
//!
//! ```text
//!                         Rulloc<N>
//!   +---------------------------------------------------------------+
//!   | config: N bucket sizes + size→bucket lookup table (const)     |
//!   | heaps:  [Heap; 64], mapped lazily, one per concurrent thread   |
//!   | huge:   list of huge blocks (own mappings)                     |
//!   +---------------------------------------------------------------+
//!
//!   allocate(size, align)
//!     ├─ a bucket fits ──▶ this thread's heap ─▶ bucket ─▶ region free list
//!     ├─ ≤ 2 MiB ────────▶ this thread's heap ─▶ span of slots (dynamic bucket)
//!     └─ larger ─────────▶ a mapping of its own (huge)
//!
//!   deallocate(ptr)
//!     segment = (ptr - 1) & !(4 MiB - 1)     (header: kind, owner heap)
//!     region  = segment.regions[slot of ptr]  (block size, free lists)
//!     owner heap free? ─ yes ─▶ push on the region's local free list
//!                      └ no ──▶ one CAS onto the region's thread_free list
//! ```
//!
//! The pieces, in the order a request meets them: [`crate::bucket`] (size
//! classes), [`crate::heap`] (per-thread state, locking), [`crate::region`]
//! (free lists), [`crate::segment`] (OS chunks and span pool),
//! [`crate::large`] (the dynamic bucket), [`crate::block`] (what a block
//! is), [`crate::platform`] (the kernel).
//!
//! Invariants:
//!
//! * A heap, once published in `heaps`, lives until the allocator is
//!   dropped, and its address never changes: segments point at it.
//! * Every pointer this allocator hands out lies in one of its segments,
//!   and its segment header says which heap (or the huge list) owns it.
//! * Nothing in an allocation path panics: failures are null pointers.

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};

use allocator_api2::alloc::{AllocError, Allocator};

use crate::binding::{self, Binding, BINDING, NEVER_BIND, UNBOUND};
use crate::bucket::{
    Config, DEFAULT_BUCKET_COUNT, DEFAULT_BUCKET_SIZES, LOOKUP_ALIGN, MALLOC_SMALL_ALIGN,
    MALLOC_SMALL_SIZE,
};
use crate::fork;
use crate::heap::{owner_of, Heap, SharedCounters};
use crate::large::{huge_usable_size, HugeList, LARGE_MAX_SIZE};
use crate::misuse;
use crate::platform;
use crate::region::{Region, RegionKind};
use crate::segment::{self, region_of, segment_of, SegmentKind, SEGMENT_SIZE, SLOT_SIZE};
use crate::stats::{BucketStats, Stats};

/// The most heaps one allocator creates: threads beyond this share them
/// (waiting for a lock only when every heap is busy).
pub(crate) const MAX_HEAPS: usize = 64;

/// A general purpose allocator with `N` compile-time buckets.
///
/// ```
/// use rulloc::Rulloc;
///
/// // As the global allocator:
/// // #[global_allocator]
/// // static ALLOCATOR: Rulloc = Rulloc::new();
///
/// // With custom buckets (checked at compile time):
/// static SMALL: Rulloc<3> = Rulloc::with_bucket_sizes([8, 16, 24]);
///
/// // As a standalone instance for one collection:
/// let allocator = Rulloc::default();
/// let mut numbers = allocator_api2::vec::Vec::new_in(&allocator);
/// numbers.extend([1, 2, 3]);
/// assert_eq!(numbers.iter().sum::<i32>(), 6);
/// ```
pub struct Rulloc<const N: usize = DEFAULT_BUCKET_COUNT> {
    config: Config<N>,
    /// Heaps, huge blocks, counters and the fork registry entry: mapped on
    /// first use, because they must never move (see [`InstanceState`]).
    state: AtomicPtr<InstanceState<N>>,
    /// This instance's id in thread bindings (0 until first needed).
    id: AtomicUsize,
    /// How long freed pages stay resident before they are purged (ms).
    purge_delay_ms: AtomicUsize,
    /// Heaps bound by a thread after another thread left them.
    adoptions: AtomicUsize,
}

/// Default purge delay: long enough that a program freeing and allocating
/// in quick waves keeps its pages, short enough that memory comes back
/// promptly after a peak.
pub const DEFAULT_PURGE_DELAY_MS: usize = 10;

/// The next instance id; ids are never reused, so a thread's binding to a
/// dropped instance can never match a new one.
static NEXT_INSTANCE_ID: AtomicUsize = AtomicUsize::new(1);

impl Rulloc {
    /// An allocator with the default size classes
    /// ([`DEFAULT_BUCKET_SIZES`]). `const`, so it can be a `static` and the
    /// `#[global_allocator]`.
    pub const fn new() -> Self {
        Self::with_bucket_sizes(DEFAULT_BUCKET_SIZES)
    }

    /// Same as [`Rulloc::new`].
    pub const fn with_default_config() -> Self {
        Self::new()
    }

    /// Whether segments mapped from now on ask the kernel for transparent
    /// huge pages (`madvise(MADV_HUGEPAGE)` on Linux; elsewhere nothing).
    /// On by default: a 4 MiB segment then faults in as two 2 MiB pages
    /// instead of 1,024 small ones, which makes first touches and TLB
    /// misses far cheaper (a quarter of the time of some workloads), at the
    /// price of resident memory growing in 2 MiB steps. Purging still
    /// returns freed spans at page granularity (the kernel splits the huge
    /// page). **Process-wide**: it applies to every instance. The C library
    /// reads `RULLOC_HUGE_PAGES=0` to turn it off.
    pub fn set_huge_pages(enabled: bool) {
        platform::set_huge_pages(enabled);
    }
}

impl Default for Rulloc {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Rulloc<N> {
    /// An allocator whose buckets have the given block sizes. Requests
    /// larger than the last size go to the dynamic bucket.
    ///
    /// The sizes must be non-empty, non-zero, strictly increasing multiples
    /// of the pointer size, at most 1 MiB; anything else stops compilation
    /// (in a `const` or `static`) with a message saying which rule broke:
    ///
    /// ```compile_fail
    /// static EMPTY: rulloc::Rulloc<0> = rulloc::Rulloc::with_bucket_sizes([]);
    /// ```
    ///
    /// ```compile_fail
    /// static ZERO: rulloc::Rulloc<2> = rulloc::Rulloc::with_bucket_sizes([0, 8]);
    /// ```
    ///
    /// ```compile_fail
    /// static UNSORTED: rulloc::Rulloc<3> = rulloc::Rulloc::with_bucket_sizes([8, 24, 16]);
    /// ```
    ///
    /// ```
    /// static OK: rulloc::Rulloc<3> = rulloc::Rulloc::with_bucket_sizes([8, 16, 24]);
    /// assert_eq!(OK.bucket_sizes(), &[8, 16, 24]);
    /// ```
    pub const fn with_bucket_sizes(sizes: [usize; N]) -> Self {
        Self {
            config: Config::new(sizes),
            state: AtomicPtr::new(ptr::null_mut()),
            id: AtomicUsize::new(0),
            purge_delay_ms: AtomicUsize::new(DEFAULT_PURGE_DELAY_MS),
            adoptions: AtomicUsize::new(0),
        }
    }

    /// The instance's state, mapped (and registered for fork safety) on
    /// first use; `None` if the OS refuses the memory.
    #[inline]
    fn state(&self) -> Option<&InstanceState<N>> {
        let state = self.state.load(Ordering::Acquire);
        if state.is_null() {
            return self.map_state();
        }
        // SAFETY: a published state lives until `self` is dropped.
        Some(unsafe { &*state })
    }

    /// The instance's state if it is mapped already (it is whenever a
    /// block of this instance is live).
    #[inline]
    fn mapped_state(&self) -> Option<&InstanceState<N>> {
        // SAFETY: a published state lives until `self` is dropped.
        unsafe { self.state.load(Ordering::Acquire).as_ref() }
    }

    #[cold]
    #[inline(never)]
    fn map_state(&self) -> Option<&InstanceState<N>> {
        let size = InstanceState::<N>::mapping_size();
        let mapping = platform::map_aligned(size, platform::page_size())?;
        let new = mapping.as_ptr().cast::<InstanceState<N>>();
        // SAFETY: the fresh mapping is large enough and page aligned; the
        // huge list's pointer to the counters beside it is set before the
        // state is published, so no thread ever sees the list without it
        // (a huge block mapped uncounted and unmapped counted would wrap
        // the gauges below zero).
        unsafe {
            new.write(InstanceState::new(size));
            (*new)
                .huge
                .set_shared(ptr::from_ref(&(*new).counters).cast_mut());
        }
        match self
            .state
            .compare_exchange(ptr::null_mut(), new, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => {
                // SAFETY: published: lives until `self` is dropped, which
                // unregisters it first; never moves.
                let state = unsafe { &*new };
                // SAFETY: the published state lives until `self` is dropped,
                // which unregisters its fork entry first; registered once (we
                // won the race).
                unsafe { fork::register(&state.fork_entry) };
                Some(state)
            }
            Err(existing) => {
                // SAFETY: our mapping was never published.
                unsafe { platform::unmap(mapping, size, platform::page_size()) };
                // SAFETY: the winner's state lives until `self` is dropped.
                Some(unsafe { &*existing })
            }
        }
    }

    /// The published heaps (none before the state is mapped).
    fn heaps(&self) -> &[AtomicPtr<Heap<N>>] {
        match self.mapped_state() {
            Some(state) => &state.heaps,
            None => &[],
        }
    }

    /// The huge-block list. Only called for a live huge block, which
    /// exists only once the state is mapped.
    fn huge(&self) -> &HugeList {
        let state = self.state.load(Ordering::Acquire);
        debug_assert!(!state.is_null());
        // SAFETY: a huge block is live, so its allocation mapped the state,
        // which lives until `self` is dropped.
        unsafe { &(*state).huge }
    }

    /// Creates a heap of this instance (null if the OS refuses memory).
    fn create_heap(&self, state: &InstanceState<N>) -> *mut Heap<N> {
        Heap::create(
            &self.config,
            self.purge_delay_ms.load(Ordering::Relaxed),
            ptr::from_ref(&state.counters).cast_mut(),
        )
    }

    /// Sets how long (ms) free pages stay resident before the allocator
    /// gives them back to the OS (`madvise(MADV_DONTNEED)` /
    /// `MEM_DECOMMIT`), and how long an empty segment stays cached before it
    /// is unmapped. `0` purges as soon as a region empties. A heap whose
    /// purges keep being followed at once by page faults on the same memory
    /// doubles its own delay (at most 64 times), and halves it again after
    /// each calm second: waves of frees and allocations do not thrash the
    /// page tables, and memory still comes back after a peak. Purging happens
    /// on the allocator's slow paths, at thread exit and in
    /// [`Rulloc::collect`]; there is no background thread.
    pub fn set_purge_delay_ms(&self, delay_ms: usize) {
        self.purge_delay_ms.store(delay_ms, Ordering::Relaxed);
        for slot in self.heaps() {
            let heap = slot.load(Ordering::Acquire);
            if !heap.is_null() {
                // SAFETY: published heaps live as long as `self`.
                unsafe { (*heap).purge_delay_ms.store(delay_ms, Ordering::Relaxed) };
            }
        }
    }

    /// The current purge delay (ms).
    pub fn purge_delay_ms(&self) -> usize {
        self.purge_delay_ms.load(Ordering::Relaxed)
    }

    /// The block sizes of the buckets.
    pub fn bucket_sizes(&self) -> &[usize; N] {
        &self.config.sizes
    }

    /// Allocates `size` bytes aligned to `align` (a power of two). Returns
    /// null when the request cannot be satisfied; `size == 0` still returns
    /// a unique pointer.
    #[inline]
    pub fn allocate_bytes(&self, size: usize, align: usize) -> *mut u8 {
        debug_assert!(align.is_power_of_two());
        match self.config.bucket_for(size, align) {
            // SAFETY: the closure runs with the heap's lock held.
            Some(bucket) => self.with_heap(move |heap| unsafe { heap.alloc_small(bucket, size) }),
            None => self.allocate_dynamic(size, align),
        }
    }

    /// Allocates `size` bytes aligned as C's `malloc` promises: to 16 bytes
    /// (glibc's `MALLOC_ALIGNMENT`), or to 8 when `size <= 8`, where no C
    /// object can need more. The same as [`Rulloc::allocate_bytes`] with
    /// that alignment, minus the alignment tests on the small-block path:
    /// the C library's `malloc`.
    #[inline]
    pub fn allocate_malloc(&self, size: usize) -> *mut u8 {
        match self.config.bucket_for_malloc(size) {
            // SAFETY: the closure runs with the heap's lock held.
            Some(bucket) => self.with_heap(move |heap| unsafe { heap.alloc_small(bucket, size) }),
            None => self.allocate_malloc_slow(size),
        }
    }

    /// [`Rulloc::allocate_malloc`] beyond the lookup table.
    #[cold]
    #[inline(never)]
    fn allocate_malloc_slow(&self, size: usize) -> *mut u8 {
        let align = if size <= MALLOC_SMALL_SIZE {
            MALLOC_SMALL_ALIGN
        } else {
            LOOKUP_ALIGN
        };
        self.allocate_bytes(size, align)
    }

    /// Like [`Rulloc::allocate_bytes`], and the memory is zeroed.
    pub fn allocate_zeroed_bytes(&self, size: usize, align: usize) -> *mut u8 {
        if self.config.bucket_for(size, align).is_none() && is_huge(size, align) {
            // Fresh mappings are zero already; cached ones are cleared.
            return self.allocate_huge(size, align, true);
        }
        let block = self.allocate_bytes(size, align);
        if !block.is_null() {
            // SAFETY: the block has at least `size` writable bytes.
            unsafe { block.write_bytes(0, size) };
        }
        block
    }

    /// The dynamic bucket: a span of slots, or a huge mapping.
    #[cold]
    fn allocate_dynamic(&self, size: usize, align: usize) -> *mut u8 {
        if size > isize::MAX as usize - (align - 1) {
            return ptr::null_mut();
        }
        if is_huge(size, align) {
            self.allocate_huge(size, align, false)
        } else {
            // SAFETY: the closure runs with the heap's lock held; size fits.
            self.with_heap(move |heap| unsafe { heap.alloc_large(size) })
        }
    }

    /// Runs the purge check of this thread's heap, if it has one of this
    /// instance. Huge requests never reach a heap's slow path, where
    /// purges happen: a program that moved on to huge blocks would keep its
    /// heaps' freed pages and cached segments resident for good (`usable.c`
    /// under LD_PRELOAD: 80 MiB of segments still resident while it only
    /// made huge requests). So every huge allocation and free gives the
    /// caller's heap that check too: one load and compare when nothing is
    /// due.
    #[inline]
    fn purge_own_heap_if_due(&self) {
        let bound = binding::current();
        if bound.instance == self.id.load(Ordering::Relaxed) {
            // SAFETY: the binding names a heap of this instance that this
            // thread owns (BOUND to it) and that lives as long as the
            // instance; no other reference to it is live here.
            unsafe { (*bound.heap.cast::<Heap<N>>()).purge_spans_if_due() };
        }
    }

    /// A huge block (a mapping of its own, or one from the huge cache);
    /// `zeroed`: its first `size` bytes read as zero.
    #[cold]
    fn allocate_huge(&self, size: usize, align: usize, zeroed: bool) -> *mut u8 {
        if size > isize::MAX as usize - (align - 1) {
            return ptr::null_mut();
        }
        // The huge list reports to the shared counters, which hold its
        // cache.
        let Some(state) = self.state() else {
            return ptr::null_mut();
        };
        let delay = self.purge_delay_ms.load(Ordering::Relaxed);
        self.purge_own_heap_if_due();
        let block = state.huge.alloc(size, align, zeroed, delay);
        if !block.is_null() {
            state
                .huge
                .bytes_requested
                .fetch_add(size, Ordering::Relaxed);
        }
        block
    }

    /// Frees a block. Null is ignored.
    ///
    /// # Safety
    ///
    /// `ptr` is null or was returned by this allocator and not freed since.
    #[inline]
    pub unsafe fn deallocate_bytes(&self, ptr: *mut u8) {
        if !ptr.is_null() {
            checked_segment_of(ptr, "free of invalid pointer");
            // SAFETY: forwarded.
            unsafe { self.deallocate_non_null(ptr) }
        }
    }

    /// [`Rulloc::deallocate_bytes`] for a pointer known not to be null.
    ///
    /// # Safety
    ///
    /// `ptr` was returned by this allocator and not freed since.
    #[inline(always)]
    unsafe fn deallocate_non_null(&self, ptr: *mut u8) {
        // SAFETY: forwarded.
        unsafe { self.deallocate_sized(ptr, None) }
    }

    /// Frees `ptr`; the secure build also checks `layout`, when given,
    /// against the block.
    ///
    /// # Safety
    ///
    /// `ptr` was returned by this allocator and not freed since.
    #[inline(always)]
    unsafe fn deallocate_sized(&self, ptr: *mut u8, layout: Option<Layout>) {
        // Under Miri, the caller's pointer may only grant its layout's bytes
        // (a `Box<u8>`: one), but the allocator writes an 8-byte free-list
        // link through it: for such small layouts use the block's own
        // (exposed) provenance. Larger layouts keep the caller's pointer: a
        // `Box` being dropped is protected while `dealloc` runs, and only
        // its own tag may write to it. Natively this does not exist.
        #[cfg(miri)]
        let ptr = match layout {
            Some(layout) if layout.size() >= core::mem::size_of::<usize>() => ptr,
            _ => ptr::with_exposed_provenance_mut::<u8>(ptr.addr()),
        };
        if crate::block::SECURE {
            // SAFETY: forwarded.
            unsafe { self.deallocate_secure(ptr, layout) };
            return;
        }
        let segment = segment_of(ptr);
        // SAFETY: the caller's pointer is a live block, so its segment is
        // mapped; a live block's segment kind and owner never change while
        // the block lives.
        unsafe {
            if (*segment).kind == SegmentKind::Huge {
                // A tail call: the small-block path below needs no frame.
                self.deallocate_huge(segment, ptr, layout);
                return;
            }
            let region = region_of(segment, ptr);
            Self::free_in_region(segment, region, ptr);
        }
    }

    /// The secure build's free. Fast path: the segment map tags `ptr`'s
    /// segment with the tag of the heap bound to this thread (see
    /// [`crate::misuse`]), so one byte load and one compare settle that the
    /// segment is live, holds regions and is this thread's own, and no
    /// header is read for it; what is left is the layout, the block grid and
    /// the live byte, each of which, failing, sends the pointer to
    /// [`Rulloc::deallocate_checked`], which checks everything from the
    /// start and names the misuse. A segment tagged with another heap's own
    /// tag (a remote free) goes to [`Rulloc::deallocate_foreign`] as soon as
    /// the layout fits. No call is made outside tail position, so the fast
    /// path needs no stack frame.
    ///
    /// # Safety
    ///
    /// As for [`Rulloc::deallocate_sized`]; what a misbehaving caller breaks
    /// is caught, not trusted.
    #[inline(always)]
    unsafe fn deallocate_secure(&self, ptr: *mut u8, layout: Option<Layout>) {
        let segment = segment_of(ptr);
        let (bound, own_tag) = binding::bound_tag();
        let tag = misuse::segment_tag(segment.addr());
        if tag == own_tag {
            // SAFETY: the segment map tags the segment with the bound heap's
            // tag: it is mapped, holds regions and belongs to the heap bound
            // to this thread, which only this thread uses (see
            // `crate::misuse`); every fact about `ptr` itself is checked
            // before anything is written.
            unsafe {
                let region = region_of(segment, ptr);
                let fits = match layout {
                    Some(layout) => layout_fits(ptr, layout, (*region).block_size),
                    None => true,
                };
                // No test of `kind`: a descriptor that is not a small
                // region's has no grid slots, so `try_release_live`
                // refuses every pointer for it (see `Region::grid_slots`).
                if fits && Region::try_release_live(region, ptr) {
                    debug_assert!((*region).kind == RegionKind::Small);
                    (*bound.heap.cast::<Heap<N>>()).free_small(region, ptr);
                    return;
                }
            }
        } else if tag >= misuse::FIRST_HEAP_TAG {
            // SAFETY: the segment map tags the segment with a heap's own
            // tag that is not the bound heap's: it is mapped, holds regions
            // and belongs to another heap (a tag names one heap while its
            // memory is mapped, see `crate::misuse`), which is what
            // `deallocate_checked` would find after reading the tag and the
            // binding again. The block grid is checked by the owner's free
            // or by `Region::push_remote`, the live byte by the owner.
            unsafe {
                let region = region_of(segment, ptr);
                let fits = match layout {
                    Some(layout) => layout_fits(ptr, layout, (*region).block_size),
                    None => true,
                };
                if fits {
                    Self::deallocate_foreign(owner_of::<N>(segment), region, ptr);
                    return;
                }
            }
        }
        // SAFETY: forwarded; `tag` is the segment map's.
        unsafe { Self::deallocate_checked(ptr, layout, tag, self) }
    }

    /// The secure build's free with every check, in order: the segment map
    /// (`tag`, read by the caller before any header), huge blocks, the
    /// layout, then the owner heap's free, which checks the block grid and
    /// the live byte. (`this` last: the pointer and layout stay in the
    /// registers the caller got them in, a tail call with no moves.)
    ///
    /// # Safety
    ///
    /// As for [`Rulloc::deallocate_secure`]; `tag` is the segment map's tag
    /// for `ptr`'s segment.
    #[inline(never)]
    unsafe fn deallocate_checked(ptr: *mut u8, layout: Option<Layout>, tag: u8, this: &Self) {
        if tag == 0 {
            misuse::fatal("free of invalid pointer", ptr);
        }
        let segment = segment_of(ptr);
        // SAFETY: the segment map says the segment is live, and whether it
        // is huge; a live block's segment kind and owner never change while
        // the block lives.
        unsafe {
            if tag == misuse::TAG_HUGE {
                this.deallocate_huge(segment, ptr, layout);
                return;
            }
            let region = region_of(segment, ptr);
            if let Some(layout) = layout {
                Self::check_layout(ptr, layout, (*region).block_size);
            }
            Self::free_in_region(segment, region, ptr);
        }
    }

    /// Frees a huge block, after checking that `ptr` is its start.
    ///
    /// # Safety
    ///
    /// `segment` is the live huge segment holding `ptr`.
    #[cold]
    #[inline(never)]
    unsafe fn deallocate_huge(
        &self,
        segment: *mut segment::Segment,
        ptr: *mut u8,
        layout: Option<Layout>,
    ) {
        // SAFETY: forwarded from the caller.
        unsafe {
            check_huge_start(segment, ptr, "free of invalid pointer");
            if let (true, Some(layout)) = (crate::block::SECURE, layout) {
                Self::check_layout(ptr, layout, huge_usable_size(segment));
            }
            self.huge()
                .free(segment, self.purge_delay_ms.load(Ordering::Relaxed));
        }
        self.purge_own_heap_if_due();
    }

    /// Frees a block of a small or large region through its owner heap:
    /// without a lock if that is this thread's heap, else
    /// [`Rulloc::deallocate_foreign`].
    ///
    /// # Safety
    ///
    /// `ptr` is a live block of `region`, in the regions segment `segment`.
    #[inline(always)]
    unsafe fn free_in_region(segment: *mut segment::Segment, region: *mut Region, ptr: *mut u8) {
        let heap = owner_of::<N>(segment);
        // SAFETY: heaps outlive their blocks; the bound heap is this
        // thread's alone.
        unsafe {
            if heap.cast::<u8>().cast_const() == binding::current().heap {
                (*heap).free_local(region, ptr);
            } else {
                Self::deallocate_foreign(heap, region, ptr);
            }
        }
    }

    /// Frees a block of a heap this thread is not bound to: under the
    /// heap's lock if it is free, otherwise with one CAS onto the region's
    /// thread-free list. Out of line, so the owner's path stays a leaf.
    ///
    /// # Safety
    ///
    /// `ptr` is a live block of `region`, a region of `heap`.
    #[inline(never)]
    unsafe fn deallocate_foreign(heap: *mut Heap<N>, region: *mut Region, ptr: *mut u8) {
        // SAFETY: heaps outlive their blocks; the lock (or the CAS protocol
        // of `Region::push_remote`) makes this thread the only one touching
        // the region's owner-side state.
        unsafe {
            if (*heap).lock().try_lock() {
                (*heap).free_local(region, ptr);
                (*heap).lock().unlock();
            } else {
                if Region::push_remote(region, ptr) {
                    (*heap).push_delayed(ptr);
                }
            }
        }
    }

    /// The number of bytes usable at `ptr` (at least the size requested).
    ///
    /// # Safety
    ///
    /// `ptr` was returned by this allocator and not freed since.
    pub unsafe fn usable_size(&self, ptr: *const u8) -> usize {
        let segment = checked_segment_of(ptr, "usable size of invalid pointer");
        // SAFETY: `ptr` is a live block (caller's contract), so its segment
        // is mapped and its kind never changes while the block lives; the
        // region fields that describe a live block are stable too.
        unsafe {
            if (*segment).kind == SegmentKind::Huge {
                huge_usable_size(segment)
            } else {
                let region = region_of(segment, ptr);
                (*region).block_size
            }
        }
    }

    /// Resizes the block at `ptr` to `new_size` bytes aligned to `align`,
    /// in place when possible. Returns the (possibly moved) block, or null
    /// with the old block untouched if there is no memory.
    ///
    /// # Safety
    ///
    /// `ptr` was returned by this allocator and not freed since.
    pub unsafe fn reallocate_bytes(&self, ptr: *mut u8, new_size: usize, align: usize) -> *mut u8 {
        // As in `deallocate_sized`.
        #[cfg(miri)]
        let ptr = ptr::with_exposed_provenance_mut::<u8>(ptr.addr());
        let segment = checked_segment_of(ptr, "realloc of invalid pointer");
        let aligned = ptr.addr() & (align - 1) == 0;
        // SAFETY: `ptr` is a live block (caller's contract), so its segment
        // is mapped; a live block's segment kind and owner never change
        // while the block lives.
        unsafe {
            if (*segment).kind == SegmentKind::Huge {
                check_huge_start(segment, ptr, "realloc of invalid pointer");
                let usable = huge_usable_size(segment);
                let stay_huge = new_size > LARGE_MAX_SIZE || align > SLOT_SIZE;
                if aligned && stay_huge {
                    let resized = self.huge().resize(segment, new_size, align);
                    if !resized.is_null() {
                        return resized;
                    }
                }
                return self.move_block(ptr, usable, new_size, align);
            }
            let region = region_of(segment, ptr);
            check_block(region, ptr, "realloc of invalid pointer");
            if crate::block::SECURE
                && (*region).kind == RegionKind::Small
                && !Region::is_live(region, ptr)
            {
                misuse::fatal("realloc of freed pointer", ptr);
            }
            let usable = (*region).block_size;
            if aligned {
                let in_place = match (*region).kind {
                    // Keep the block unless it would waste over half of it.
                    RegionKind::Small => new_size <= usable && new_size > usable / 2,
                    RegionKind::Large => self.resize_large(segment, region, new_size, align),
                    _ => false,
                };
                if in_place {
                    return ptr;
                }
            }
            self.move_block(ptr, usable, new_size, align)
        }
    }

    /// Grows or shrinks a large block inside its segment, if the owner heap
    /// is free and the neighbouring slots allow.
    ///
    /// # Safety
    ///
    /// `region` is the live large region of the block being resized.
    unsafe fn resize_large(
        &self,
        segment: *mut segment::Segment,
        region: *mut Region,
        new_size: usize,
        align: usize,
    ) -> bool {
        if new_size > LARGE_MAX_SIZE || align > SLOT_SIZE {
            return false;
        }
        // Small enough for a bucket: moving there wastes less.
        if self.config.bucket_for(new_size, align).is_some() {
            return false;
        }
        let heap = owner_of::<N>(segment);
        // SAFETY: the heap outlives its blocks; the region is ours to
        // resize only under its lock.
        unsafe {
            let own = heap.cast::<u8>().cast_const() == binding::current().heap;
            if !own && !(*heap).lock().try_lock() {
                return false;
            }
            let done = if new_size > (*region).block_size {
                (*heap).grow_large(region, new_size)
            } else {
                (*heap).shrink_large(region, new_size);
                true
            };
            if !own {
                (*heap).lock().unlock();
            }
            done
        }
    }

    /// Secure build: a sized deallocation must name a layout the block can
    /// hold (its size fits the block, its alignment divides the address).
    #[inline(always)]
    fn check_layout(ptr: *const u8, layout: Layout, usable: usize) {
        if !layout_fits(ptr, layout, usable) {
            misuse::fatal(
                "dealloc with a layout that does not match the block at",
                ptr,
            );
        }
    }

    /// Allocates a new block, copies, frees the old one.
    ///
    /// # Safety
    ///
    /// `ptr` is a live block of this allocator with `usable` bytes.
    unsafe fn move_block(
        &self,
        ptr: *mut u8,
        usable: usize,
        new_size: usize,
        align: usize,
    ) -> *mut u8 {
        let new = self.allocate_bytes(new_size, align);
        if !new.is_null() {
            // SAFETY: both blocks are live, distinct, and at least this long.
            unsafe {
                ptr::copy_nonoverlapping(ptr, new, usable.min(new_size));
                self.deallocate_bytes(ptr);
            }
        }
        new
    }

    /// Runs `f` on a heap this thread may use: its bound heap (the fast
    /// path: no lock at all), or a borrowed one (see
    /// [`Rulloc::with_shared_heap`]). Returns null if no heap can be had.
    #[inline(always)]
    fn with_heap(&self, f: impl FnOnce(&Heap<N>) -> *mut u8) -> *mut u8 {
        let bound = binding::current();
        if bound.instance == self.id.load(Ordering::Relaxed) {
            // SAFETY: the binding names a heap of this instance that this
            // thread owns (its lock is BOUND to us) and that lives as long
            // as the instance.
            return f(unsafe { &*bound.heap.cast::<Heap<N>>() });
        }
        self.with_unbound_heap(bound, f)
    }

    /// The thread has no heap of this instance bound: bind one if the
    /// thread has no binding yet, otherwise borrow one.
    #[cold]
    #[inline(never)]
    fn with_unbound_heap(&self, bound: Binding, f: impl FnOnce(&Heap<N>) -> *mut u8) -> *mut u8 {
        if bound.instance == UNBOUND && binding::SUPPORTED {
            if let Some(heap) = self.bind_thread() {
                return f(heap);
            }
        }
        self.with_shared_heap(f)
    }

    /// This instance's id, assigned on first use.
    fn id(&self) -> usize {
        let id = self.id.load(Ordering::Relaxed);
        if id != 0 {
            return id;
        }
        let new_id = NEXT_INSTANCE_ID.fetch_add(1, Ordering::Relaxed);
        match self
            .id
            .compare_exchange(0, new_id, Ordering::Relaxed, Ordering::Relaxed)
        {
            Ok(_) => new_id,
            Err(existing) => existing,
        }
    }

    /// Binds a heap to the calling thread: an unbound existing one (the
    /// heap of a thread that exited, adopted with all its regions) or a new
    /// one. Heap 0 is never bound, so threads beyond [`MAX_HEAPS`] - 1 can
    /// always borrow it.
    fn bind_thread(&self) -> Option<&Heap<N>> {
        let id = self.id();
        // Re-entrant allocations (from registering the exit hook) must not
        // try to bind again.
        binding::set(Binding {
            instance: BINDING,
            heap: ptr::null(),
        });
        let mut chosen: *mut Heap<N> = ptr::null_mut();
        if let Some(state) = self.state() {
            for index in 1..MAX_HEAPS {
                let heap = state.heaps[index].load(Ordering::Acquire);
                if heap.is_null() {
                    match self.publish_new_heap(state, index, Take::Bind) {
                        Publish::Published(new_heap) => {
                            chosen = new_heap;
                            break;
                        }
                        Publish::SlotTaken => continue,
                        Publish::NoMemory => break,
                    }
                // SAFETY: published heaps live as long as `self`.
                } else if unsafe { (*heap).lock().try_bind() } {
                    self.adoptions.fetch_add(1, Ordering::Relaxed);
                    chosen = heap;
                    break;
                }
            }
        }
        if chosen.is_null() {
            binding::set(Binding {
                instance: NEVER_BIND,
                heap: ptr::null(),
            });
            return None;
        }
        // SAFETY: `chosen` is published and bound to this thread.
        let heap = unsafe { &*chosen };
        // The whole heap's pointer (the header is its first field): a
        // reference to the header would only grant access to the header,
        // and the exit hook uses all of the heap (Stacked Borrows).
        if !binding::register_exit(chosen.cast_const().cast()) {
            heap.lock().unbind();
            binding::set(Binding {
                instance: NEVER_BIND,
                heap: ptr::null(),
            });
            return None;
        }
        binding::set(Binding {
            instance: id,
            heap: chosen.cast_const().cast(),
        });
        Some(heap)
    }

    /// Creates a heap, takes it (bound to this thread or locked, as `take`
    /// says) while it is still private, and publishes it in slot `index`.
    /// A heap that loses the race for the slot is destroyed unused.
    fn publish_new_heap(&self, state: &InstanceState<N>, index: usize, take: Take) -> Publish<N> {
        let heap = self.create_heap(state);
        if heap.is_null() {
            return Publish::NoMemory;
        }
        // SAFETY: the new heap is ours alone until published.
        let taken = unsafe {
            match take {
                Take::Bind => (*heap).lock().try_bind(),
                Take::Lock => (*heap).lock().try_lock(),
            }
        };
        debug_assert!(taken);
        match state.heaps[index].compare_exchange(
            ptr::null_mut(),
            heap,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => Publish::Published(heap),
            Err(_) => {
                // SAFETY: never published, so never used.
                unsafe { Heap::destroy(heap, true) };
                Publish::SlotTaken
            }
        }
    }

    /// Borrows a heap under its lock: the thread's usual shared heap if it
    /// is free, otherwise see [`Rulloc::with_heap_slow`].
    #[inline]
    fn with_shared_heap(&self, f: impl FnOnce(&Heap<N>) -> *mut u8) -> *mut u8 {
        let Some(state) = self.state() else {
            return ptr::null_mut();
        };
        let hint = hint::get();
        let heap = state.heaps[hint % MAX_HEAPS].load(Ordering::Acquire);
        if !heap.is_null() {
            // SAFETY: published heaps live as long as `self`.
            let heap = unsafe { &*heap };
            if heap.lock().try_lock() {
                let result = f(heap);
                heap.lock().unlock();
                return result;
            }
        }
        self.with_heap_slow(state, hint, f)
    }

    /// The thread's heap is busy or missing: try every other heap, then
    /// create one, and only then wait.
    #[cold]
    #[inline(never)]
    fn with_heap_slow(
        &self,
        state: &InstanceState<N>,
        hint: usize,
        f: impl FnOnce(&Heap<N>) -> *mut u8,
    ) -> *mut u8 {
        let run_locked = |index: usize, heap: *mut Heap<N>| {
            hint::set(index);
            // SAFETY: published heaps live as long as `self`; locked by us.
            let heap = unsafe { &*heap };
            let result = f(heap);
            heap.lock().unlock();
            result
        };
        for step in 0..MAX_HEAPS {
            let index = (hint + step) % MAX_HEAPS;
            let heap = state.heaps[index].load(Ordering::Acquire);
            // SAFETY: published heaps live as long as `self`.
            if !heap.is_null() && unsafe { (*heap).lock().try_lock() } {
                return run_locked(index, heap);
            }
        }
        for step in 0..MAX_HEAPS {
            let index = (hint + step) % MAX_HEAPS;
            if !state.heaps[index].load(Ordering::Acquire).is_null() {
                continue;
            }
            match self.publish_new_heap(state, index, Take::Lock) {
                Publish::Published(heap) => return run_locked(index, heap),
                Publish::SlotTaken => continue,
                Publish::NoMemory => break,
            }
        }
        // Every slot is taken (or no memory for a new heap): wait for heap
        // 0, which is never bound.
        let heap = state.heaps[0].load(Ordering::Acquire);
        if heap.is_null() {
            return ptr::null_mut();
        }
        // SAFETY: published heaps live as long as `self`.
        unsafe { (*heap).lock().lock() };
        run_locked(0, heap)
    }

    /// Gives back to the OS everything that is free right now: blocks freed
    /// by other threads are reclaimed, empty regions retired, empty
    /// segments and cached huge mappings unmapped and the pages of free
    /// spans purged.
    pub fn collect(&self) {
        if let Some(state) = self.mapped_state() {
            state.counters.huge_cache.release_all(&state.counters);
        }
        for slot in self.heaps() {
            let heap = slot.load(Ordering::Acquire);
            if heap.is_null() {
                continue;
            }
            // SAFETY: published heaps live as long as `self`; we own the
            // heap (bound to this thread, or locked) while collecting. Heaps
            // bound to other threads are theirs to collect.
            unsafe {
                if heap.cast::<u8>().cast_const() == binding::current().heap {
                    (*heap).collect();
                } else if (*heap).lock().lock_unless_bound() {
                    (*heap).collect();
                    (*heap).lock().unlock();
                }
            }
        }
    }

    /// A snapshot of the allocator's counters.
    pub fn stats(&self) -> Stats {
        let mut stats = Stats {
            heaps_adopted: self.adoptions.load(Ordering::Relaxed),
            ..Stats::default()
        };
        if let Some(state) = self.mapped_state() {
            let (huge, shared) = (&state.huge, &state.counters);
            stats.bytes_in_use = huge.bytes_in_use.load(Ordering::Relaxed);
            stats.bytes_mapped = huge.bytes_mapped.load(Ordering::Relaxed);
            stats.map_calls = huge.map_calls.load(Ordering::Relaxed);
            stats.unmap_calls = huge.unmap_calls.load(Ordering::Relaxed);
            stats.remap_calls = huge.remap_calls.load(Ordering::Relaxed);
            stats.bytes_requested = huge.bytes_requested.load(Ordering::Relaxed);
            stats.huge_blocks = huge.count.load(Ordering::Relaxed);
            stats.segments = stats.huge_blocks;
            stats.bytes_committed = shared.bytes_committed.load(Ordering::Relaxed);
            stats.peak_bytes_committed = shared.peak_bytes_committed.load(Ordering::Relaxed);
            stats.peak_bytes_mapped = shared.peak_bytes_mapped.load(Ordering::Relaxed);
            let cache = &shared.huge_cache;
            stats.huge_cached = cache.count.load(Ordering::Relaxed);
            stats.huge_cache_hits = cache.hits.load(Ordering::Relaxed);
            stats.bytes_mapped += cache.bytes.load(Ordering::Relaxed);
            stats.unmap_calls += cache.unmap_calls.load(Ordering::Relaxed);
            stats.segments += stats.huge_cached;
        }
        for slot in self.heaps() {
            let heap = slot.load(Ordering::Acquire);
            if heap.is_null() {
                continue;
            }
            // SAFETY: published heaps live as long as `self`; counters are
            // atomics.
            let counters = unsafe { &(*heap).counters };
            let segments = counters.segments.load(Ordering::Relaxed);
            stats.heaps += 1;
            stats.bytes_in_use += counters.bytes_in_use.load(Ordering::Relaxed);
            stats.bytes_requested += counters.large_requested.load(Ordering::Relaxed);
            // SAFETY: published heaps live as long as `self`; the per-bucket
            // block counts are atomics.
            let bucket_blocks = unsafe { &(*heap).bucket_blocks };
            for (blocks, &size) in bucket_blocks.iter().zip(&self.config.sizes) {
                stats.bytes_in_use += blocks.load(Ordering::Relaxed) * size;
            }
            // SAFETY: published heaps live as long as `self`; the per-bucket
            // requested bytes are atomics.
            for requested in unsafe { &(*heap).bucket_requested } {
                stats.bytes_requested += requested.load(Ordering::Relaxed);
            }
            // SAFETY: published heaps live as long as `self`; the header's
            // `mapping_size` is written once, at creation.
            stats.bytes_mapped += segments * SEGMENT_SIZE + unsafe { (*heap).header.mapping_size };
            stats.segments += segments;
            stats.regions += counters.regions.load(Ordering::Relaxed);
            stats.map_calls += counters.map_calls.load(Ordering::Relaxed);
            stats.unmap_calls += counters.unmap_calls.load(Ordering::Relaxed);
            stats.remote_frees += counters.remote_frees.load(Ordering::Relaxed);
            stats.purge_calls += counters.purge_calls.load(Ordering::Relaxed);
            stats.bytes_purged += counters.purged_bytes.load(Ordering::Relaxed);
            stats.heaps_abandoned += counters.abandoned.load(Ordering::Relaxed);
        }
        stats
    }

    /// Per-bucket counters: for each bucket, its block size, the blocks in
    /// use (blocks freed by another thread count until their owner collects
    /// them) and the regions serving it, summed over all heaps.
    pub fn bucket_stats(&self) -> [BucketStats; N] {
        let mut buckets = [BucketStats::default(); N];
        for (bucket, &size) in buckets.iter_mut().zip(&self.config.sizes) {
            bucket.block_size = size;
        }
        for slot in self.heaps() {
            let heap = slot.load(Ordering::Acquire);
            if heap.is_null() {
                continue;
            }
            // SAFETY: published heaps live as long as `self`; the counters
            // are atomics.
            let heap = unsafe { &*heap };
            for (index, bucket) in buckets.iter_mut().enumerate() {
                bucket.blocks_in_use += heap.bucket_blocks[index].load(Ordering::Relaxed);
                bucket.regions += heap.bucket_regions[index].load(Ordering::Relaxed);
                bucket.bytes_requested += heap.bucket_requested[index].load(Ordering::Relaxed);
            }
        }
        for bucket in &mut buckets {
            bucket.bytes_in_use = bucket.blocks_in_use * bucket.block_size;
        }
        buckets
    }

    /// Takes every lock of this instance, so that a child process does
    /// not inherit one held by a thread that does not exist there.
    ///
    /// On Unix, Rulloc registers `pthread_atfork` handlers that do this
    /// (and [`Rulloc::fork_parent`] / [`Rulloc::fork_child`]) for every live
    /// instance around each `fork()`: call these yourself only around a
    /// fork that bypasses `pthread_atfork` (a raw `clone` system call),
    /// never in addition to the handlers.
    pub fn fork_prepare(&self) {
        if let Some(state) = self.mapped_state() {
            state.fork_prepare();
        }
    }

    /// Releases, in the parent, what [`Rulloc::fork_prepare`] took.
    pub fn fork_parent(&self) {
        if let Some(state) = self.mapped_state() {
            state.release_fork_locks();
        }
    }

    /// Releases, in the child, what [`Rulloc::fork_prepare`] took (in the
    /// child, the only thread is the one that forked).
    pub fn fork_child(&self) {
        if let Some(state) = self.mapped_state() {
            state.release_fork_locks();
        }
    }
}

/// How [`Rulloc::publish_new_heap`] takes a new heap before publishing it.
#[derive(Clone, Copy)]
enum Take {
    /// Bound to the calling thread for its lifetime.
    Bind,
    /// Locked for one operation.
    Lock,
}

/// What [`Rulloc::publish_new_heap`] did.
enum Publish<const N: usize> {
    /// The new heap is in the slot, taken as asked.
    Published(*mut Heap<N>),
    /// Another thread published a heap in the slot first.
    SlotTaken,
    /// The OS refused memory for a heap.
    NoMemory,
}

/// The part of an instance that must never move, mapped on its first
/// allocation and unmapped when it is dropped:
///
/// ```text
///   Rulloc<N> (may be moved)          InstanceState<N> (one mapping, fixed)
///   +--------------------+           +-------------------------------+
///   | config, id, ...    |           | fork_entry ──▶ fork registry  |
///   | state ─────────────┼──────────▶| heaps[64] ──▶ Heap, Heap, ... |
///   +--------------------+           | huge list, shared counters    |
///                                    | fork_locked[64]               |
///                                    +-------------------------------+
/// ```
///
/// A `Rulloc` value is free to move (nothing points at it), but segments
/// point at their heaps, huge blocks at the counters, and the process's
/// fork handlers at this state, so those live here.
#[repr(C)]
struct InstanceState<const N: usize> {
    /// First field: the fork handlers get its address and cast it back.
    fork_entry: fork::Entry,
    heaps: [AtomicPtr<Heap<N>>; MAX_HEAPS],
    huge: HugeList,
    /// Counters shared by the heaps and the huge list (peaks, gauges).
    counters: SharedCounters,
    /// Which heaps [`InstanceState::fork_prepare`] locked.
    fork_locked: [AtomicBool; MAX_HEAPS],
    /// Bytes of this mapping (the page size may be simulated differently
    /// by the time it is unmapped).
    mapping_size: usize,
}

impl<const N: usize> InstanceState<N> {
    fn new(mapping_size: usize) -> Self {
        Self {
            fork_entry: fork::Entry::new(
                Self::fork_prepare_entry,
                Self::fork_release_entry,
                Self::fork_release_entry,
            ),
            heaps: [const { AtomicPtr::new(ptr::null_mut()) }; MAX_HEAPS],
            huge: HugeList::new(),
            counters: SharedCounters::default(),
            fork_locked: [const { AtomicBool::new(false) }; MAX_HEAPS],
            mapping_size,
        }
    }

    /// Bytes of the mapping that holds the state.
    fn mapping_size() -> usize {
        segment::round_up(core::mem::size_of::<Self>(), platform::page_size())
    }

    /// Locks every heap that no thread is bound to, then the huge list.
    fn fork_prepare(&self) {
        for (index, slot) in self.heaps.iter().enumerate() {
            let heap = slot.load(Ordering::Acquire);
            // Bound heaps belong to their threads; a child never touches
            // the bound heaps of threads that do not exist in it (their
            // blocks are freed with the lock-free remote path).
            // SAFETY: published heaps live as long as the state.
            let locked = !heap.is_null() && unsafe { (*heap).lock().lock_unless_bound() };
            self.fork_locked[index].store(locked, Ordering::Relaxed);
        }
        self.huge.lock().lock();
        self.counters.huge_cache.lock().lock();
    }

    /// Releases what [`InstanceState::fork_prepare`] took.
    fn release_fork_locks(&self) {
        self.counters.huge_cache.lock().force_unlock();
        self.huge.lock().force_unlock();
        for (index, slot) in self.heaps.iter().enumerate() {
            if self.fork_locked[index].swap(false, Ordering::Relaxed) {
                // SAFETY: the heap was published before prepare locked it.
                unsafe { (*slot.load(Ordering::Acquire)).lock().force_unlock() };
            }
        }
    }

    /// # Safety
    ///
    /// `entry` is the `fork_entry` of a live `InstanceState<N>`.
    unsafe fn fork_prepare_entry(entry: *const fork::Entry) {
        // SAFETY: `fork_entry` is the first field of a `repr(C)` state.
        unsafe { (*entry.cast::<Self>()).fork_prepare() }
    }

    /// # Safety
    ///
    /// As [`InstanceState::fork_prepare_entry`].
    unsafe fn fork_release_entry(entry: *const fork::Entry) {
        // SAFETY: `entry` is the `fork_entry` of a live state (caller's
        // contract), the first field of the `repr(C)` state.
        unsafe { (*entry.cast::<Self>()).release_fork_locks() }
    }
}

/// The segment of `ptr`, or a fatal error `what` if no live Rulloc segment
/// holds it (a wild, stack or foreign pointer, or an unmapped huge block).
#[inline(always)]
fn checked_segment_of(ptr: *const u8, what: &str) -> *mut segment::Segment {
    let segment = segment_of(ptr);
    if !misuse::is_segment(segment.addr()) {
        misuse::fatal(what, ptr);
    }
    segment
}

/// Whether `layout` can describe the block of `usable` bytes at `ptr`: its
/// size fits the block and its alignment divides the address.
#[inline(always)]
fn layout_fits(ptr: *const u8, layout: Layout, usable: usize) -> bool {
    layout.size() <= usable && ptr.addr() & (layout.align() - 1) == 0
}

/// A huge block is only ever freed at its start.
///
/// # Safety
///
/// `segment` is a live huge segment.
#[inline]
unsafe fn check_huge_start(segment: *mut segment::Segment, ptr: *const u8, what: &str) {
    // SAFETY: caller's contract.
    let start = unsafe { segment.cast::<u8>().add((*segment).huge_offset) };
    if start.cast_const() != ptr {
        misuse::fatal(what, ptr);
    }
}

/// Full validation of a block pointer (used off the fast path: realloc):
/// its region is live, and `ptr` is one of its blocks' starts.
///
/// # Safety
///
/// `region` is the descriptor `region_of` gave for `ptr` in a live segment.
unsafe fn check_block(region: *mut Region, ptr: *const u8, what: &str) {
    // SAFETY: descriptors of a live segment are readable.
    let valid = unsafe {
        match (*region).kind {
            // One multiply and a rotate instead of a division (see
            // `Region::index_of`).
            RegionKind::Small => Region::is_block_start(region, ptr),
            RegionKind::Large => ptr == (*region).start.cast_const(),
            _ => false,
        }
    };
    if !valid {
        misuse::fatal(what, ptr);
    }
}

/// Whether `(size, align)` gets a mapping of its own.
#[inline]
fn is_huge(size: usize, align: usize) -> bool {
    size > LARGE_MAX_SIZE || align > SLOT_SIZE
}

impl<const N: usize> Drop for Rulloc<N> {
    /// Gives every byte back to the OS. Blocks still allocated from this
    /// instance become invalid (the borrow checker already prevents using
    /// them through `&Rulloc` collections).
    fn drop(&mut self) {
        let Some(mapping) = NonNull::new(self.state.swap(ptr::null_mut(), Ordering::Acquire))
        else {
            return;
        };
        // SAFETY: mapped by `map_state`; `&mut self`: no allocation is in
        // flight. Unregistered first, so no fork handler walks the heaps
        // while they go. A shared reference, not a unique one: the huge
        // list holds a pointer to the counters beside it, which a unique
        // borrow of the whole state would invalidate (Stacked Borrows).
        let state = unsafe {
            fork::unregister(&mapping.as_ref().fork_entry);
            mapping.as_ref()
        };
        for slot in &state.heaps {
            let heap = slot.swap(ptr::null_mut(), Ordering::Acquire);
            if heap.is_null() {
                continue;
            }
            // The dropping thread's own heap: forget the binding, and the
            // heap can go entirely.
            if heap.cast::<u8>().cast_const() == binding::current().heap {
                binding::forget_current();
                // SAFETY: `&mut self`: nobody uses the heap any more.
                unsafe { Heap::destroy(heap, true) };
                continue;
            }
            // SAFETY: `&mut self`: no thread uses the heap any more. If
            // another thread is still bound to it, the heap is orphaned: its
            // segments go, and its own mapping is handed to that thread's
            // exit hook, which unmaps it (see `crate::sync`).
            unsafe {
                let lock = ptr::from_ref((*heap).lock());
                if (*lock).orphan_if_bound() {
                    Heap::destroy(heap, false);
                    (*lock).finish_orphan();
                } else {
                    Heap::destroy(heap, true);
                }
            }
        }
        state.huge.release_all();
        state.counters.huge_cache.release_all(&state.counters);
        let size = state.mapping_size;
        // SAFETY: no heap or huge block refers to the state any more.
        unsafe { platform::unmap(mapping.cast(), size, platform::page_size()) };
    }
}

// SAFETY: blocks are valid for their layout until freed (allocate_bytes
// honours size and alignment); nothing here unwinds.
unsafe impl<const N: usize> GlobalAlloc for Rulloc<N> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.allocate_bytes(layout.size(), layout.align())
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // Under Miri, a `Box` smaller than a free-list link is protected
        // while it is deallocated, and its tag covers fewer bytes than the
        // link: no write into it is allowed. Such blocks are not reused under
        // Miri (the allocator's free paths are checked through every other
        // entry point); natively this does not exist.
        #[cfg(miri)]
        if layout.size() < core::mem::size_of::<usize>() {
            return;
        }
        // SAFETY: GlobalAlloc's contract: ptr came from this allocator.
        unsafe { self.deallocate_sized(ptr, Some(layout)) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        self.allocate_zeroed_bytes(layout.size(), layout.align())
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: GlobalAlloc's contract: ptr is live with `layout`.
        unsafe { self.reallocate_bytes(ptr, new_size, layout.align()) }
    }
}

fn slice_or_error(block: *mut u8, size: usize) -> Result<NonNull<[u8]>, AllocError> {
    NonNull::new(block)
        .map(|block| NonNull::slice_from_raw_parts(block, size))
        .ok_or(AllocError)
}

impl<const N: usize> Rulloc<N> {
    /// [`Rulloc::reallocate_bytes`] to `layout`, as `Allocator::grow` and
    /// `Allocator::shrink` both want it.
    ///
    /// # Safety
    ///
    /// `ptr` is currently allocated by this allocator.
    unsafe fn reallocate_to(
        &self,
        ptr: NonNull<u8>,
        layout: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: forwarded from the caller.
        let block = unsafe { self.reallocate_bytes(ptr.as_ptr(), layout.size(), layout.align()) };
        slice_or_error(block, layout.size())
    }
}

// SAFETY: blocks are valid for their layout until deallocated, and stay
// valid when the allocator value is moved (they live in OS mappings, not in
// the value); `&Rulloc` shares one allocator.
unsafe impl<const N: usize> Allocator for Rulloc<N> {
    #[inline]
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        slice_or_error(
            self.allocate_bytes(layout.size(), layout.align()),
            layout.size(),
        )
    }

    fn allocate_zeroed(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        slice_or_error(
            self.allocate_zeroed_bytes(layout.size(), layout.align()),
            layout.size(),
        )
    }

    #[inline]
    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        // allocator-api2's `Box` of a zero-sized type never allocates but
        // still deallocates its dangling pointer, as `std`'s `Global`
        // tolerates: a zero-size layout at an address outside every segment
        // is ignored (our own zero-size blocks are real blocks in segments).
        if layout.size() == 0 && !misuse::is_segment(segment_of(ptr.as_ptr()).addr()) {
            return;
        }
        // SAFETY: Allocator's contract: ptr is currently allocated here.
        unsafe { self.deallocate_sized(ptr.as_ptr(), Some(layout)) }
    }

    unsafe fn grow(
        &self,
        ptr: NonNull<u8>,
        _old_layout: Layout,
        new_layout: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: Allocator's contract: ptr is currently allocated here.
        unsafe { self.reallocate_to(ptr, new_layout) }
    }

    unsafe fn grow_zeroed(
        &self,
        ptr: NonNull<u8>,
        old_layout: Layout,
        new_layout: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: Allocator's contract: `ptr` is currently allocated here
        // with `old_layout`, and `new_layout` is no smaller.
        let block = unsafe { self.grow(ptr, old_layout, new_layout)? };
        let start = old_layout.size();
        // SAFETY: the new block has new_layout.size() bytes.
        unsafe {
            block
                .cast::<u8>()
                .as_ptr()
                .add(start)
                .write_bytes(0, new_layout.size() - start);
        }
        Ok(block)
    }

    unsafe fn shrink(
        &self,
        ptr: NonNull<u8>,
        _old_layout: Layout,
        new_layout: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: Allocator's contract: ptr is currently allocated here.
        unsafe { self.reallocate_to(ptr, new_layout) }
    }
}

/// The per-thread hint of which heap to try first. Only an index: it stays
/// valid whatever happens to any allocator instance.
mod hint {
    #[cfg(feature = "std")]
    std::thread_local! {
        static HEAP_HINT: core::cell::Cell<usize> = const { core::cell::Cell::new(0) };
    }

    /// Index of the heap this thread used last (0 for a new thread).
    #[inline(always)]
    pub(super) fn get() -> usize {
        #[cfg(feature = "std")]
        {
            HEAP_HINT.try_with(|hint| hint.get()).unwrap_or(0)
        }
        #[cfg(not(feature = "std"))]
        {
            0
        }
    }

    /// Remembers the heap this thread got.
    pub(super) fn set(_index: usize) {
        #[cfg(feature = "std")]
        {
            let _ = HEAP_HINT.try_with(|hint| hint.set(_index));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bucket::DEFAULT_BUCKET_SIZES;
    use crate::segment::CACHED_SEGMENTS;

    fn fill(block: *mut u8, len: usize, seed: u8) {
        for i in 0..len {
            // SAFETY: the test owns `len` bytes at `block`.
            unsafe { block.add(i).write(seed.wrapping_add(i as u8)) };
        }
    }

    fn check(block: *const u8, len: usize, seed: u8) {
        for i in 0..len {
            // SAFETY: the test owns `len` bytes at `block`.
            assert_eq!(unsafe { block.add(i).read() }, seed.wrapping_add(i as u8));
        }
    }

    #[test]
    fn small_blocks_are_distinct_aligned_and_reused() {
        let a = Rulloc::new();
        let count = if cfg!(miri) { 300 } else { 20_000 };
        let mut blocks = std::vec::Vec::new();
        for i in 0..count {
            let size = 1 + i % 200;
            let block = a.allocate_bytes(size, 8);
            assert!(!block.is_null());
            assert_eq!(block.addr() % 8, 0);
            fill(block, size, i as u8);
            blocks.push((block, size, i as u8));
        }
        for &(block, size, seed) in &blocks {
            check(block, size, seed);
        }
        let in_use = a.stats().bytes_in_use;
        assert!(in_use >= blocks.iter().map(|b| b.1).sum::<usize>());
        for &(block, _, _) in &blocks {
            // SAFETY: allocated above, freed once.
            unsafe { a.deallocate_bytes(block) };
        }
        assert_eq!(a.stats().bytes_in_use, 0);
        let again = a.allocate_bytes(16, 8);
        assert!(!again.is_null());
        // SAFETY: allocated above.
        unsafe { a.deallocate_bytes(again) };
    }

    /// A fresh heap hands out its blocks in address order in the default
    /// build, and (secure build) in an order that is not: fails if the
    /// secure build's allocation order is sequential, or becomes the same
    /// in two allocator instances.
    #[test]
    fn secure_allocation_order_is_random() {
        let count = 256;
        let orders: std::vec::Vec<std::vec::Vec<usize>> = (0..2)
            .map(|_| {
                let a = Rulloc::new();
                let blocks: std::vec::Vec<*mut u8> =
                    (0..count).map(|_| a.allocate_bytes(32, 8)).collect();
                let base = blocks.iter().map(|b| b.addr()).min().unwrap();
                let order = blocks.iter().map(|b| (b.addr() - base) / 32).collect();
                for &block in &blocks {
                    // SAFETY: each block freed once.
                    unsafe { a.deallocate_bytes(block) };
                }
                order
            })
            .collect();
        for order in &orders {
            let sequential = order.windows(2).filter(|w| w[1] == w[0] + 1).count();
            if crate::block::SECURE {
                assert!(
                    sequential < count / 2,
                    "{sequential} of {count} blocks followed their neighbour: {order:?}"
                );
            } else {
                assert_eq!(sequential, count - 1, "{order:?}");
            }
        }
        if crate::block::SECURE {
            assert_ne!(orders[0], orders[1], "two heaps, one order");
        }
    }

    #[test]
    fn a_million_small_blocks_need_few_map_calls() {
        let a = Rulloc::new();
        let count = if cfg!(miri) { 2_000 } else { 1_000_000 };
        let mut blocks = std::vec::Vec::with_capacity(count);
        for _ in 0..count {
            blocks.push(a.allocate_bytes(32, 8));
        }
        let stats = a.stats();
        // 32 MB of blocks in 4 MiB segments of 63 usable slots (the secure
        // build's regions also give 1 block in 32 to the live map, a byte
        // per 32-byte grid slot): 8 segments (9 in the secure build) plus
        // the heap's own mapping.
        let mut per_slot = SLOT_SIZE / 32;
        if crate::block::SECURE {
            per_slot -= per_slot.div_ceil(32);
        }
        let expected = count.div_ceil(segment::USABLE_SLOTS * per_slot) + 1;
        assert_eq!(stats.map_calls, expected, "{stats:?}");
        assert_eq!(stats.bytes_in_use, count * 32);
        for block in blocks {
            // SAFETY: each block freed once.
            unsafe { a.deallocate_bytes(block) };
        }
    }

    #[test]
    fn bucket_stats_and_peaks_follow_the_blocks() {
        let a = Rulloc::new();
        let count = if cfg!(miri) { 100 } else { 5_000 };
        let blocks: std::vec::Vec<*mut u8> = (0..count).map(|_| a.allocate_bytes(48, 8)).collect();
        let huge = a.allocate_bytes(8 << 20, 8);
        let index = DEFAULT_BUCKET_SIZES.iter().position(|&s| s == 48).unwrap();
        let during = a.bucket_stats()[index];
        assert_eq!((during.block_size, during.blocks_in_use), (48, count));
        assert_eq!(during.bytes_in_use, count * 48);
        assert!(during.regions >= 1);
        let peak = a.stats();
        assert!(
            peak.peak_bytes_committed >= count * 48 + (8 << 20),
            "{peak:?}"
        );
        assert!(
            peak.peak_bytes_mapped >= peak.peak_bytes_committed,
            "{peak:?}"
        );
        for block in blocks {
            // SAFETY: each block freed once.
            unsafe { a.deallocate_bytes(block) };
        }
        // SAFETY: freed once.
        unsafe { a.deallocate_bytes(huge) };
        a.collect();
        let after = a.stats();
        assert_eq!(a.bucket_stats()[index].blocks_in_use, 0);
        assert_eq!(after.bytes_in_use, 0);
        assert!(after.bytes_committed < peak.bytes_committed, "{after:?}");
        assert_eq!(after.peak_bytes_committed, peak.peak_bytes_committed);
    }

    #[test]
    fn every_default_bucket_serves_its_size() {
        let a = Rulloc::new();
        for &size in DEFAULT_BUCKET_SIZES.iter() {
            let block = a.allocate_bytes(size, 8);
            assert!(!block.is_null());
            // SAFETY: live block.
            assert_eq!(unsafe { a.usable_size(block) }, size);
            fill(block, size.min(4096), 7);
            // SAFETY: live block.
            unsafe { a.deallocate_bytes(block) };
        }
    }

    #[test]
    fn large_and_huge_blocks_round_trip() {
        let a = Rulloc::new();
        let sizes: &[usize] = if cfg!(miri) {
            &[200_000, 3 << 20]
        } else {
            &[200_000, 1 << 20, 2 << 20, 3 << 20, 64 << 20]
        };
        for &size in sizes {
            let block = a.allocate_bytes(size, 16);
            assert!(!block.is_null());
            // SAFETY: live block of `size` bytes.
            unsafe {
                assert!(a.usable_size(block) >= size);
                block.write(1);
                block.add(size - 1).write(2);
                a.deallocate_bytes(block);
            }
        }
        assert_eq!(a.stats().bytes_in_use, 0);
        assert_eq!(a.stats().huge_blocks, 0);
    }

    #[test]
    fn large_realloc_grows_in_place_into_free_slots() {
        let a = Rulloc::new();
        let block = a.allocate_bytes(200_000, 8);
        fill(block, 200_000, 3);
        // SAFETY: live block; realloc keeps the prefix.
        unsafe {
            let grown = a.reallocate_bytes(block, 600_000, 8);
            assert_eq!(grown, block, "the slots after a fresh span are free");
            check(grown, 200_000, 3);
            let shrunk = a.reallocate_bytes(grown, 150_000, 8);
            assert_eq!(shrunk, block);
            check(shrunk, 150_000, 3);
            a.deallocate_bytes(shrunk);
        }
    }

    #[test]
    fn remote_frees_come_back_to_the_owner() {
        let a = Rulloc::new();
        let count = if cfg!(miri) { 200 } else { 50_000 };
        let blocks: std::vec::Vec<usize> =
            (0..count).map(|_| a.allocate_bytes(48, 8).addr()).collect();
        let heap =
            owner_of::<DEFAULT_BUCKET_COUNT>(segment_of(ptr::with_exposed_provenance(blocks[0])));
        // This thread owns the heap, so every free below takes the remote path.
        std::thread::scope(|s| {
            s.spawn(|| {
                for &block in &blocks {
                    // SAFETY: each block is freed once.
                    unsafe { a.deallocate_bytes(ptr::with_exposed_provenance_mut(block)) };
                }
            });
        });
        a.collect();
        // Counted by the owner as it takes them back.
        assert_eq!(a.stats().remote_frees, count);
        assert_eq!(a.stats().bytes_in_use, 0);
        // Regions parked as full came back through the delayed stack.
        let bucket = DEFAULT_BUCKET_SIZES.iter().position(|&s| s == 48).unwrap();
        // SAFETY: the heap is bound to this thread.
        assert_eq!(unsafe { (*heap).full_regions(bucket) }, 0);
    }

    #[test]
    fn a_thread_that_exits_leaves_its_heap_to_the_next_one() {
        let a = Rulloc::new();
        let rounds = if cfg!(miri) { 4 } else { 200 };
        for round in 0..rounds {
            std::thread::scope(|s| {
                s.spawn(|| {
                    let block = a.allocate_bytes(64, 8);
                    fill(block, 64, round as u8);
                    block.addr()
                })
                .join()
                .map(|block| {
                    let block = ptr::with_exposed_provenance_mut::<u8>(block);
                    check(block, 64, round as u8);
                    // SAFETY: allocated by the exited thread, freed once.
                    unsafe { a.deallocate_bytes(block) };
                })
                .unwrap();
            });
        }
        // Heap 0 (shared) is never bound; exited threads' heaps are reused,
        // so a handful of heaps served every round.
        assert!(a.stats().heaps <= 4, "{:?}", a.stats());
    }

    #[test]
    fn aligned_requests_up_to_a_gigabyte() {
        let a = Rulloc::new();
        let max_shift = if cfg!(miri) {
            23
        } else if cfg!(target_pointer_width = "64") {
            30
        } else {
            26
        };
        for shift in 0..=max_shift {
            let align = 1usize << shift;
            for size in [1, align / 2 + 1, align] {
                let block = a.allocate_bytes(size, align);
                assert!(!block.is_null(), "size {size} align {align}");
                assert_eq!(block.addr() % align, 0);
                // SAFETY: live block of `size` bytes.
                unsafe {
                    block.write(1);
                    block.add(size - 1).write(1);
                    a.deallocate_bytes(block);
                }
            }
        }
    }

    /// The fork handlers reach an instance through its state mapping,
    /// not its address: one moved after its first allocation, and one
    /// dropped before the fork, leave the registry sound, and the child
    /// allocates small and huge blocks from the moved one.
    #[test]
    #[cfg(all(target_os = "linux", not(miri)))]
    fn instances_moved_or_dropped_stay_fork_safe() {
        let before_move = Rulloc::new();
        let kept = before_move.allocate_bytes(64, 8);
        let moved = std::boxed::Box::new(before_move);
        let dropped = Rulloc::new();
        // SAFETY: a fresh block, freed at once.
        unsafe { dropped.deallocate_bytes(dropped.allocate_bytes(8 << 20, 8)) };
        drop(dropped);
        // SAFETY: the child only allocates through `moved` and `_exit`s.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let small = moved.allocate_bytes(100, 8);
            let huge = moved.allocate_bytes(8 << 20, 8);
            let ok = !small.is_null() && !huge.is_null();
            // SAFETY: live blocks of `moved`.
            unsafe {
                moved.deallocate_bytes(small);
                moved.deallocate_bytes(huge);
                moved.deallocate_bytes(kept);
                libc::_exit(if ok { 0 } else { 1 });
            }
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
        // SAFETY: live block of `moved`.
        unsafe { moved.deallocate_bytes(kept) };
    }

    /// A purge followed at once by a need for the purged pages doubles the
    /// heap's purge delay; a second of calm undoes it.
    #[test]
    #[cfg_attr(miri, ignore)] // depends on wall-clock delays
    fn premature_purges_back_off_and_recover() {
        use std::thread::sleep;
        use std::time::Duration;
        let a = Rulloc::new();
        a.set_purge_delay_ms(5);
        let mib = 1 << 20;
        // Three 1 MiB spans side by side in a fresh segment.
        let [first, second, third] = [0; 3].map(|_| a.allocate_bytes(mib, 8));
        let heap = owner_of::<DEFAULT_BUCKET_COUNT>(segment_of(first));
        // SAFETY: live blocks of `a`, each freed once; the heap is used by
        // this thread only.
        unsafe {
            a.deallocate_bytes(first);
            sleep(Duration::from_millis(20));
            // Freeing the third runs the due purge of the first's span.
            a.deallocate_bytes(third);
            assert!(a.stats().purge_calls >= 1);
            assert_eq!((*heap).purge_backoff(), 0);
            // The best fit for 1 MiB is the first's purged span: needed
            // right after its purge, so the delay backs off.
            let again = a.allocate_bytes(mib, 8);
            assert_eq!(again, first);
            assert_eq!((*heap).purge_backoff(), 1);
            // A calm second later, the next purge undoes the step.
            a.deallocate_bytes(again);
            sleep(Duration::from_millis(1100));
            a.deallocate_bytes(a.allocate_bytes(2 * mib, 8));
            assert_eq!((*heap).purge_backoff(), 0);
            a.deallocate_bytes(second);
        }
    }

    /// A thread that has moved on to huge blocks still gives its heap's
    /// freed pages back: huge allocations and frees run the heap's purge
    /// check, which small requests run only on their slow paths.
    #[test]
    #[cfg_attr(miri, ignore)] // depends on wall-clock delays
    fn huge_requests_run_the_heaps_purge() {
        use std::thread::sleep;
        use std::time::Duration;
        let a = Rulloc::new();
        a.set_purge_delay_ms(5);
        let blocks: Vec<*mut u8> = (0..4096).map(|_| a.allocate_bytes(256, 8)).collect();
        // SAFETY: live blocks of `a`, each freed once.
        unsafe {
            for &block in &blocks {
                block.write_bytes(1, 256);
            }
            for &block in &blocks {
                a.deallocate_bytes(block);
            }
        }
        let before = a.stats();
        sleep(Duration::from_millis(30));
        let huge = a.allocate_bytes(8 << 20, 8);
        assert!(!huge.is_null());
        let after = a.stats();
        assert!(
            after.purge_calls > before.purge_calls,
            "{before:?} -> {after:?}"
        );
        assert!(after.bytes_purged > before.bytes_purged, "{after:?}");
        // SAFETY: live, freed once.
        unsafe { a.deallocate_bytes(huge) };
    }

    /// A heap that needs a fresh segment after purging spans (it grows) or
    /// takes a span purged long ago right after purging another does not
    /// back off: neither page fault was bought by a premature purge.
    #[test]
    #[cfg_attr(miri, ignore)] // depends on wall-clock delays
    fn growth_after_purges_does_not_back_off() {
        use std::thread::sleep;
        use std::time::Duration;
        let a = Rulloc::new();
        a.set_purge_delay_ms(5);
        let mib = 1 << 20;
        // Three 1 MiB spans side by side in a fresh segment (48 of 63 slots).
        let [first, second, third] = [0; 3].map(|_| a.allocate_bytes(mib, 8));
        let heap = owner_of::<DEFAULT_BUCKET_COUNT>(segment_of(first));
        // SAFETY: live blocks of `a`, each freed once; the heap is used by
        // this thread only.
        unsafe {
            a.deallocate_bytes(first);
            sleep(Duration::from_millis(20));
            // Freeing the third runs the due purge of the first's span.
            a.deallocate_bytes(third);
            let purges = a.stats().purge_calls;
            assert!(purges >= 1);
            // No free span holds 2 MiB: a fresh segment, right after a
            // purge, but no unmap: the heap grows, no back-off.
            let segments = a.stats().segments;
            let big = a.allocate_bytes(2 * mib, 8);
            assert_eq!(a.stats().segments, segments + 1);
            assert_eq!((*heap).purge_backoff(), 0);
            sleep(Duration::from_millis(20));
            // Freeing it (its segment is cached, not unmapped) purges the
            // third's span now.
            a.deallocate_bytes(big);
            assert!(a.stats().purge_calls > purges);
            // The best fit for 1 MiB is the first's span, purged 40 ms
            // ago: a purge just happened, but not of what is needed.
            let again = a.allocate_bytes(mib, 8);
            assert_eq!(again, first);
            assert_eq!((*heap).purge_backoff(), 0);
            a.deallocate_bytes(again);
            a.deallocate_bytes(second);
        }
    }

    /// A heap that maps segments again right after it unmapped empty ones
    /// backs off, and then keeps its empty segments (for the longer delay)
    /// instead of unmapping them beyond the first `CACHED_SEGMENTS`.
    #[test]
    fn backed_off_heaps_keep_their_empty_segments() {
        let a = Rulloc::new();
        // A long delay: the test measures what happens within it.
        a.set_purge_delay_ms(1000);
        // 2 MiB blocks: one per segment.
        let wave = 2 * CACHED_SEGMENTS;
        let size = LARGE_MAX_SIZE;
        let alloc_wave =
            || -> std::vec::Vec<*mut u8> { (0..wave).map(|_| a.allocate_bytes(size, 8)).collect() };
        let free_wave = |blocks: std::vec::Vec<*mut u8>| {
            for block in blocks {
                // SAFETY: live blocks of `a`, each freed once.
                unsafe { a.deallocate_bytes(block) };
            }
        };
        let first = alloc_wave();
        assert!(first.iter().all(|b| !b.is_null()));
        let heap = owner_of::<DEFAULT_BUCKET_COUNT>(segment_of(first[0]));
        let before = a.stats().unmap_calls;
        free_wave(first);
        assert_eq!(a.stats().unmap_calls - before, wave - CACHED_SEGMENTS);
        // The second wave maps again what the first just gave back.
        let second = alloc_wave();
        // SAFETY: this thread is the heap's only user.
        assert!(unsafe { (*heap).purge_backoff() } > 0);
        let before = a.stats().unmap_calls;
        free_wave(second);
        assert_eq!(a.stats().unmap_calls, before, "every empty segment kept");
        a.collect();
        assert_eq!(a.stats().unmap_calls - before, wave);
    }

    /// `bytes_requested` adds up the sizes asked for, on every path, and
    /// per bucket; an `mremap` resize is counted as a remap call.
    #[test]
    fn requested_bytes_and_remaps_are_counted() {
        let a = Rulloc::new();
        let sizes = [20, 1000, 300 << 10, 5 << 20];
        let blocks = sizes.map(|size| a.allocate_bytes(size, 8));
        assert_eq!(a.stats().bytes_requested, sizes.iter().sum::<usize>());
        let bucket = DEFAULT_BUCKET_SIZES.iter().position(|&s| s == 24).unwrap();
        assert_eq!(a.bucket_stats()[bucket].bytes_requested, 20);
        assert_eq!(a.bucket_stats()[bucket].bytes_in_use, 24);
        // SAFETY: live blocks of `a`, each freed once.
        unsafe {
            // Shrinking a mapping in place always works (growing depends
            // on what lies after it); to 2.25 MiB, under half of it, so the
            // mapping does shrink.
            let shrunk = a.reallocate_bytes(blocks[3], 9 << 18, 8);
            assert!(!shrunk.is_null());
            if cfg!(all(target_os = "linux", not(miri))) {
                assert_eq!(shrunk, blocks[3], "mremap shrinks in place");
                assert_eq!(a.stats().remap_calls, 1);
            }
            for block in &blocks[..3] {
                a.deallocate_bytes(*block);
            }
            a.deallocate_bytes(shrunk);
        }
        // Cumulative: frees do not lower it.
        assert_eq!(a.stats().bytes_requested, sizes.iter().sum::<usize>());
    }

    /// An instance dropped while a thread is still bound to one of its
    /// heaps hands the heap's mapping to that thread's exit hook, which
    /// unmaps it: nothing stays mapped (under Miri, its leak check says
    /// the same).
    #[test]
    fn a_heap_orphaned_by_drop_is_unmapped_by_its_thread() {
        use std::sync::mpsc::channel;
        let a = std::boxed::Box::new(Rulloc::new());
        let (bound_tx, bound_rx) = channel();
        let (go_tx, go_rx) = channel::<()>();
        // An address, not a reference: the thread must hold no borrow of
        // `a` once it is dropped.
        let a_addr = ptr::from_ref(&*a).expose_provenance();
        let thread = std::thread::spawn(move || {
            let heap = {
                // SAFETY: `a` lives until `bound_tx` has sent; this borrow
                // ends before.
                let a: &Rulloc = unsafe { &*ptr::with_exposed_provenance(a_addr) };
                let block = a.allocate_bytes(64, 8);
                // SAFETY: a live block of `a`, freed once.
                unsafe { a.deallocate_bytes(block) };
                owner_of::<DEFAULT_BUCKET_COUNT>(segment_of(block)).addr()
            };
            bound_tx.send(heap).unwrap();
            go_rx.recv().unwrap();
        });
        let heap = bound_rx.recv().unwrap();
        drop(a);
        go_tx.send(()).unwrap();
        thread.join().unwrap();
        #[cfg(all(target_os = "linux", not(miri)))]
        {
            let page = platform::page_size();
            let mut resident = 0u8;
            // SAFETY: mincore only reads the page tables; it fails with
            // ENOMEM when the range is not mapped.
            let rc = unsafe { libc::mincore(heap as *mut libc::c_void, page, &mut resident) };
            assert_eq!(rc, -1, "the orphaned heap at {heap:#x} is still mapped");
        }
        #[cfg(not(all(target_os = "linux", not(miri))))]
        let _ = heap;
    }

    #[test]
    fn impossible_sizes_return_null() {
        let a = Rulloc::new();
        assert!(a.allocate_bytes(isize::MAX as usize, 8).is_null());
        assert!(a.allocate_bytes(usize::MAX, 1).is_null());
        assert!(a.allocate_bytes(isize::MAX as usize - 4095, 4096).is_null());
        let ok = a.allocate_bytes(8, 8);
        assert!(!ok.is_null());
        // SAFETY: live block.
        unsafe { a.deallocate_bytes(ok) };
    }

    #[test]
    fn dropping_an_instance_unmaps_everything() {
        let a = Rulloc::new();
        for i in 0..100 {
            let _leaked = a.allocate_bytes(i * 1000, 8);
        }
        let _huge = a.allocate_bytes(8 << 20, 8);
        assert!(a.stats().segments > 0);
        drop(a);
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "Miri's mappings are System allocations whose layout must not change"
    )]
    fn simulated_64k_pages() {
        crate::platform::simulate_page_size(64 * 1024);
        let a = Rulloc::new();
        for size in [8, 5000, 100_000, 3 << 20] {
            let block = a.allocate_bytes(size, 8);
            assert!(!block.is_null());
            // SAFETY: live block.
            unsafe {
                block.add(size - 1).write(9);
                a.deallocate_bytes(block);
            }
        }
        a.collect();
        crate::platform::simulate_page_size(crate::platform::backend::os_page_size());
    }
}
