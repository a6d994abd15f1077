//! A heap: an array of buckets, a span pool, and the lock that makes one
//! thread at a time its owner.
//!
//! ```text
//!   Rulloc ── heaps[0..MAX_HEAPS] ──▶ Heap (mapped on first use, never moves)
//!                                     ├─ lock         FREE / LOCKED / BOUND (one owner)
//!                                     ├─ delayed      blocks freed remotely into regions parked full
//!                                     ├─ (line break: the above is what other threads touch)
//!                                     ├─ counters     owner-written, read by Rulloc::stats()
//!                                     └─ local (only under the lock)
//!                                        ├─ buckets[0..N]   queue + full list each
//!                                        ├─ spans           free slots of this heap's segments
//!                                        └─ purge clock     next purge, backoff
//! ```
//!
//! A thread normally *binds* one heap for its whole life (see
//! [`crate::binding`]): the lock stays BOUND and the owner allocates and
//! frees with no atomic read-modify-write at all. Threads without a bound
//! heap (other instances, beyond [`crate::allocator::MAX_HEAPS`]) spread
//! over the unbound heaps (the seed's TODO option 2): each remembers a heap
//! index and *tries* its lock, trying the others and creating a new heap
//! before it ever waits.
//!
//! Purging: a freed span's pages are given back to the OS once it has been
//! free for the span delay, an empty segment is unmapped once it has been
//! empty for the segment delay. Both start at the configured purge delay
//! and adapt: when the heap needs non-resident pages right after a purge
//! (the purge only bought page faults), the delay doubles, up to 64 times
//! the configured one, and each calm second halves it again (see
//! [`Heap::note_clean_span`]). "Right after" is judged per span: a purged
//! span counts if *its own* purge was recent (a clean free span's
//! `freed_at` records when it was purged), and doubles the span delay only
//! (once such spans add up to [`SPAN_BACKOFF_BYTES`]);
//! a fresh segment counts only if a segment was unmapped recently, and
//! doubles both delays (and the number of empty segments kept); growing is
//! not a premature purge.
//!
//! A block freed by a thread that cannot take the owner heap's lock goes on
//! its region's `thread_free` list with one CAS (see [`crate::region`]); no
//! thread ever waits to free.
//!
//! Invariants:
//!
//! * Everything in `local`, and every region and segment the heap owns, is
//!   touched only by the lock holder (except the atomics documented in
//!   [`crate::region`]).
//! * A block on the delayed stack still counts as used in its region, so a
//!   region is never retired while one of its blocks waits there.
//! * Counters are written only by the lock holder (a relaxed load and store,
//!   not a read-modify-write); remote frees are counted when the owner
//!   collects them, so a freeing thread writes nothing of the heap's but
//!   the delayed stack (and only for a region parked full).

use crate::sync::atomic::{AtomicUsize, Ordering};
use core::cell::UnsafeCell;
use core::mem::size_of;
use core::ptr::{self, NonNull};

use crate::bucket::{list_push_front, list_remove, Bucket, Config};
use crate::large::HugeCache;
use crate::misuse;
use crate::platform;
use crate::region::{DelayedStack, Region, RegionKind};
use crate::segment::{
    self, round_up, SpanEvents, SpanPool, CACHED_SEGMENTS, SEGMENT_SIZE, SLOT_SIZE,
};
use crate::sync::{Exit, SpinLock};

/// Counters an allocator instance shares between its heaps: what only a
/// total can say (peaks), and the huge-block cache, which heaps purge on
/// their slow paths. Lives in a page of its own, mapped on first use, so
/// heaps can point at it while the `Rulloc` value itself moves.
#[derive(Default)]
pub(crate) struct SharedCounters {
    pub(crate) bytes_mapped: AtomicUsize,
    pub(crate) peak_bytes_mapped: AtomicUsize,
    /// Bytes of live regions and huge blocks (what can be resident).
    pub(crate) bytes_committed: AtomicUsize,
    pub(crate) peak_bytes_committed: AtomicUsize,
    /// Freed huge mappings kept for reuse (see [`crate::large`]).
    pub(crate) huge_cache: HugeCache,
}

// The shared page is one page of the smallest supported size.
const _: () = assert!(size_of::<SharedCounters>() <= 4096);

impl SharedCounters {
    /// Adds `delta` to a gauge and raises its peak (slow paths only).
    pub(crate) fn grow(gauge: &AtomicUsize, peak: &AtomicUsize, delta: usize) {
        let now = gauge.fetch_add(delta, Ordering::Relaxed) + delta;
        peak.fetch_max(now, Ordering::Relaxed);
    }

    pub(crate) fn shrink(gauge: &AtomicUsize, delta: usize) {
        gauge.fetch_sub(delta, Ordering::Relaxed);
    }
}

/// Counters a heap keeps for [`crate::Rulloc::stats`].
#[derive(Default)]
pub(crate) struct HeapCounters {
    /// Bytes in large blocks (small blocks are counted per bucket).
    pub(crate) bytes_in_use: AtomicUsize,
    /// Bytes asked for in large blocks, so far.
    pub(crate) large_requested: AtomicUsize,
    pub(crate) regions: AtomicUsize,
    pub(crate) segments: AtomicUsize,
    pub(crate) map_calls: AtomicUsize,
    pub(crate) unmap_calls: AtomicUsize,
    pub(crate) remote_frees: AtomicUsize,
    pub(crate) purge_calls: AtomicUsize,
    pub(crate) purged_bytes: AtomicUsize,
    /// Times this heap was left by an exiting thread.
    pub(crate) abandoned: AtomicUsize,
}

/// Stops the process: `block` was freed twice. Returns in type only (it
/// never does), so that callers can reach it with a jump instead of a call
/// and keep their fast paths frameless.
#[cold]
#[inline(never)]
fn report_double_free(block: *mut u8) {
    misuse::fatal("double free of", block);
}

/// Adds to a counter only the lock holder writes: a plain load and store.
#[inline(always)]
fn bump(counter: &AtomicUsize, delta: usize) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(delta),
        Ordering::Relaxed,
    );
}

/// Subtracts from a counter only the lock holder writes.
#[inline(always)]
fn drop_by(counter: &AtomicUsize, delta: usize) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_sub(delta),
        Ordering::Relaxed,
    );
}

/// The part of a heap only its lock holder touches.
struct HeapLocal<const N: usize> {
    buckets: [Bucket; N],
    spans: SpanPool,
    /// When the next dirty free span is due for purging (ms; 0: none).
    next_purge_at: u64,
    /// The purge delay of free spans is the configured one times
    /// `2^purge_backoff`: see [`Heap::note_clean_span`].
    purge_backoff: u32,
    /// The same for empty segments: their delay is the configured one
    /// times `2^segment_backoff`, and the heap keeps up to
    /// `CACHED_SEGMENTS << segment_backoff` of them. Only a fresh segment
    /// mapped right after an unmap raises it (a span purged too early
    /// raises `purge_backoff` alone).
    segment_backoff: u32,
    /// When pages were last purged or a segment unmapped (ms; 0: never).
    last_purge_at: u64,
    /// When a segment was last unmapped (ms; 0: never): a fresh segment
    /// mapped soon after is a premature unmap, a fresh segment mapped
    /// after span purges alone is not (see [`Heap::note_clean_span`]).
    last_unmap_at: u64,
    /// When `purge_backoff` last changed (ms).
    backoff_changed_at: u64,
    /// When `segment_backoff` last changed (ms).
    segment_backoff_changed_at: u64,
    /// Bytes of purged spans needed again right after their purge since
    /// the last step of `purge_backoff` or calm second: a step takes
    /// [`SPAN_BACKOFF_BYTES`].
    premature_bytes: usize,
}

/// The largest [`HeapLocal::purge_backoff`]: the default 10 ms delay grows
/// to at most 640 ms for a program whose memory use swings back and forth.
const MAX_PURGE_BACKOFF: u32 = 6;

/// A backoff step is undone after this long without a premature purge.
const BACKOFF_DECAY_MS: u64 = 1000;

/// Bytes of purged spans a heap must need again right after their purge
/// before its span delay backs off a step.
const SPAN_BACKOFF_BYTES: usize = 256 << 10;

/// A zero-size field aligned to two cache lines (the unit adjacent-line
/// prefetchers move): in a `repr(C)` struct the next field starts on a
/// fresh pair of lines.
#[repr(align(128))]
#[derive(Default)]
struct LineBreak;

/// The first, non-generic part of every heap: what a thread-exit hook needs
/// without knowing the heap's bucket count.
#[repr(C)]
pub(crate) struct HeapHeader {
    pub(crate) lock: SpinLock,
    /// Run by the exit hook of the thread bound to this heap, while it still
    /// owns it: reclaim and purge everything.
    pub(crate) on_thread_exit: unsafe fn(*const HeapHeader),
    /// Bytes of the mapping holding this heap, which the exit hook unmaps
    /// itself if the allocator was dropped while the thread was bound.
    pub(crate) mapping_size: usize,
    /// The heap's tag in the segment map (see [`crate::misuse`]): taken
    /// when the heap is created, given back when its mapping is unmapped.
    pub(crate) tag: u8,
}

impl HeapHeader {
    /// What the exit hook of the thread bound to this heap does, on every
    /// platform: clean the heap up and unlock it, or, if its allocator was
    /// dropped meanwhile, unmap it (see [`crate::sync::Exit`]).
    ///
    /// # Safety
    ///
    /// `header` heads the heap the calling (exiting) thread bound. A BOUND
    /// heap is never unmapped by anyone else: the thread owns it until the
    /// unlock (its last access), or its mapping is the thread's to unmap.
    pub(crate) unsafe fn leave(header: *const HeapHeader) {
        // SAFETY: caller's contract.
        unsafe {
            match (*header).lock.begin_exit() {
                Exit::Owned => {
                    ((*header).on_thread_exit)(header);
                    (*header).lock.unlock();
                }
                Exit::Orphaned => HeapHeader::unmap_orphan(header),
            }
        }
    }

    /// Unmaps an orphaned heap (see [`crate::sync::Exit::Orphaned`]).
    ///
    /// # Safety
    ///
    /// `header` heads a heap whose lock said `Orphaned` to this thread:
    /// nobody else will ever touch it.
    pub(crate) unsafe fn unmap_orphan(header: *const HeapHeader) {
        // SAFETY: caller's contract; the heap was mapped whole at its header.
        unsafe { Self::unmap(header) }
    }

    /// Unmaps a heap's own mapping and gives its tag back.
    ///
    /// # Safety
    ///
    /// `header` heads a heap that nobody uses any more and no binding names.
    unsafe fn unmap(header: *const HeapHeader) {
        // SAFETY: caller's contract; the heap was mapped whole at its header.
        unsafe {
            let (size, tag) = ((*header).mapping_size, (*header).tag);
            platform::unmap(
                NonNull::new_unchecked(header.cast_mut().cast()),
                size,
                platform::page_size(),
            );
            misuse::release_heap_tag(tag);
        }
    }

    /// The tag a thread bound to `heap` compares segment tags with: the
    /// heap's, or [`misuse::NO_TAG`] for no heap or one without a tag of
    /// its own (whose segments are tagged [`misuse::TAG_SHARED`], like
    /// those of every other such heap).
    ///
    /// # Safety
    ///
    /// `heap` is null or a live heap.
    pub(crate) unsafe fn bound_tag(heap: *const u8) -> u8 {
        if heap.is_null() {
            return misuse::NO_TAG;
        }
        // SAFETY: caller's contract; every heap starts with its header.
        match unsafe { (*heap.cast::<HeapHeader>()).tag } {
            misuse::TAG_SHARED => misuse::NO_TAG,
            tag => tag,
        }
    }
}

/// A heap; `#[repr(C)]` so that a segment's untyped owner pointer, and the
/// pointer a thread-exit hook holds, are the heap's address.
#[repr(C)]
pub(crate) struct Heap<const N: usize> {
    pub(crate) header: HeapHeader,
    /// How long (ms) free pages stay dirty before they are purged.
    pub(crate) purge_delay_ms: AtomicUsize,
    /// Blocks pushed by remote frees that found their region
    /// [`crate::region::FULL`].
    delayed: DelayedStack,
    /// Ends the cache lines other threads touch (`header.lock`, read by
    /// every remote free, and `delayed`): what follows is written by the
    /// owner on every allocation and must not share a line with them.
    _line_break: LineBreak,
    pub(crate) counters: HeapCounters,
    /// Blocks in use per bucket, and regions per bucket (owner-written).
    pub(crate) bucket_blocks: [AtomicUsize; N],
    /// Bytes asked for per bucket, so far (owner-written).
    pub(crate) bucket_requested: [AtomicUsize; N],
    pub(crate) bucket_regions: [AtomicUsize; N],
    /// The instance's shared counters (peaks).
    shared: *const SharedCounters,
    local: UnsafeCell<HeapLocal<N>>,
}

/// Bytes of the mapping that holds a `Heap<N>`.
fn heap_mapping_size<const N: usize>() -> usize {
    let guard = if crate::block::SECURE {
        platform::page_size()
    } else {
        0
    };
    round_up(size_of::<Heap<N>>(), platform::page_size()) + guard
}

impl<const N: usize> Heap<N> {
    /// Maps and initialises a heap for `config`. Null if the OS refuses.
    pub(crate) fn create(
        config: &Config<N>,
        purge_delay_ms: usize,
        shared: *const SharedCounters,
    ) -> *mut Heap<N> {
        let page = platform::page_size();
        let mapping_size = heap_mapping_size::<N>();
        let Some(mapping) = platform::map_aligned(mapping_size, page) else {
            return ptr::null_mut();
        };
        let heap = mapping.as_ptr().cast::<Heap<N>>();
        let mut buckets = [const { Bucket::new(8) }; N];
        for (bucket, &size) in buckets.iter_mut().zip(config.sizes.iter()) {
            *bucket = Bucket::new(size);
        }
        let tag = misuse::take_heap_tag();
        let mut spans = SpanPool::new();
        spans.set_owner(heap.cast(), tag);
        // SAFETY: a fresh page-aligned mapping large enough for a Heap<N>.
        unsafe {
            heap.write(Heap {
                header: HeapHeader {
                    lock: SpinLock::new(),
                    on_thread_exit: Self::on_thread_exit,
                    mapping_size,
                    tag,
                },
                purge_delay_ms: AtomicUsize::new(purge_delay_ms),
                delayed: DelayedStack::new(),
                _line_break: LineBreak,
                counters: HeapCounters::default(),
                bucket_blocks: [const { AtomicUsize::new(0) }; N],
                bucket_requested: [const { AtomicUsize::new(0) }; N],
                bucket_regions: [const { AtomicUsize::new(0) }; N],
                shared,
                local: UnsafeCell::new(HeapLocal {
                    buckets,
                    spans,
                    next_purge_at: 0,
                    purge_backoff: 0,
                    segment_backoff: 0,
                    last_purge_at: 0,
                    last_unmap_at: 0,
                    backoff_changed_at: 0,
                    segment_backoff_changed_at: 0,
                    premature_bytes: 0,
                }),
            });
            bump(&(*heap).counters.map_calls, 1);
            if crate::block::SECURE {
                // A guard page after the heap's metadata.
                let guard = mapping.as_ptr().add(mapping_size - page);
                platform::protect_none(NonNull::new_unchecked(guard), page);
            }
        }
        heap
    }

    /// Gives the heap's segments back to the OS, and the heap's own mapping
    /// too if `unmap_heap` (false while a thread is still bound to it).
    ///
    /// # Safety
    ///
    /// Nothing uses the heap's blocks or data any more (a bound thread may
    /// still unbind its lock).
    pub(crate) unsafe fn destroy(heap: *mut Heap<N>, unmap_heap: bool) {
        // SAFETY: caller's contract: we are the last user.
        unsafe {
            let mut events = SpanEvents::default();
            (*(*heap).local.get()).spans.release_all(&mut events);
            if unmap_heap {
                HeapHeader::unmap(heap.cast::<HeapHeader>().cast_const());
            }
        }
    }

    /// The exit hook of the thread bound to this heap.
    ///
    /// # Safety
    ///
    /// `header` heads a live `Heap<N>` the caller owns.
    unsafe fn on_thread_exit(header: *const HeapHeader) {
        // SAFETY: caller's contract; `Heap<N>` starts with its header.
        unsafe {
            let heap = &*header.cast::<Heap<N>>();
            heap.collect();
            // A thread's exit is when the allocator gives back what is
            // free (a program whose threads are done may make no call that
            // would purge the cache later).
            let shared = &*heap.shared;
            shared.huge_cache.release_all(shared);
            heap.counters.abandoned.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The bucket a small region of this heap belongs to (no bounds check:
    /// nothing in a free path may panic).
    ///
    /// # Safety
    ///
    /// Lock held; `region` is a small region of this heap, so its bucket
    /// index was stored by this heap and is below `N`.
    #[inline(always)]
    unsafe fn bucket_of(&self, region: *mut Region) -> *mut Bucket {
        // SAFETY: caller's contract.
        unsafe {
            let buckets = ptr::addr_of_mut!((*self.local()).buckets).cast::<Bucket>();
            buckets.add((*region).bucket as usize)
        }
    }

    /// The heap's lock.
    #[inline(always)]
    pub(crate) fn lock(&self) -> &SpinLock {
        &self.header.lock
    }

    /// The lock holder's part. A raw pointer, not a reference: the heap's
    /// methods call each other, and each re-borrows only the field it needs
    /// for the duration of one statement, so no two `&mut` ever overlap.
    #[inline(always)]
    fn local(&self) -> *mut HeapLocal<N> {
        self.local.get()
    }

    /// Allocates a block from `bucket` for a request of `size` bytes: the
    /// fast path.
    ///
    /// # Safety
    ///
    /// The caller holds `self.lock`; `bucket < N`.
    #[inline(always)]
    pub(crate) unsafe fn alloc_small(&self, bucket: usize, size: usize) -> *mut u8 {
        // SAFETY: lock held; bucket in range.
        unsafe {
            let region = (*self.local()).buckets.get_unchecked(bucket).queue;
            if !region.is_null() {
                let block = Region::pop(region);
                if !block.is_null() {
                    bump(self.bucket_blocks.get_unchecked(bucket), 1);
                    bump(self.bucket_requested.get_unchecked(bucket), size);
                    return block;
                }
            }
            self.alloc_small_slow(bucket, size)
        }
    }

    /// Finds a block when the head region's free list is empty: remote
    /// frees, never-used memory, other regions, and finally a new region.
    ///
    /// # Safety
    ///
    /// As for [`Heap::alloc_small`].
    #[cold]
    unsafe fn alloc_small_slow(&self, bucket: usize, size: usize) -> *mut u8 {
        // SAFETY: lock held; every region on our lists is ours.
        unsafe {
            self.process_delayed();
            self.purge_if_due();
            let local = self.local();
            loop {
                let mut region = (*local).buckets[bucket].queue;
                if region.is_null() {
                    region = self.new_small_region(bucket);
                    if region.is_null() {
                        return ptr::null_mut();
                    }
                }
                self.collect_remote_frees(region, bucket);
                if (*region).free.is_null() {
                    Region::extend(region);
                }
                let block = Region::pop(region);
                if !block.is_null() {
                    bump(&self.bucket_blocks[bucket], 1);
                    bump(&self.bucket_requested[bucket], size);
                    return block;
                }
                if crate::block::SECURE && !(*region).free.is_null() {
                    // `pop` refused the head of the free list.
                    crate::region::corrupted(region);
                }
                // Nothing left: park the region as full, unless a remote free
                // slipped in (then the next round collects it).
                if Region::try_mark_full(region) {
                    let state = &mut (*local).buckets[bucket];
                    state.queue_remove(region);
                    list_push_front(&mut state.full, region);
                    (*region).in_full = true;
                }
            }
        }
    }

    /// # Safety
    ///
    /// Lock held.
    unsafe fn new_small_region(&self, bucket: usize) -> *mut Region {
        // SAFETY: lock held; the span is ours.
        unsafe {
            let local = self.local();
            let slots = (*local).buckets[bucket].region_slots;
            let region = self.alloc_span(slots);
            if region.is_null() {
                return region;
            }
            let start = SpanPool::span_start(region);
            let block_size = (*local).buckets[bucket].block_size;
            Region::init_small(region, start, slots * SLOT_SIZE, block_size, bucket as u8);
            (*local).buckets[bucket].queue_push_front(region);
            bump(&self.counters.regions, 1);
            bump(&self.bucket_regions[bucket], 1);
            self.commit(slots * SLOT_SIZE);
            region
        }
    }

    /// Takes a span from the pool, recording any new segment.
    ///
    /// # Safety
    ///
    /// Lock held.
    unsafe fn alloc_span(&self, slots: usize) -> *mut Region {
        let mut events = SpanEvents::default();
        // SAFETY: lock held.
        let span = unsafe { (*self.local()).spans.alloc(slots, &mut events) };
        self.record(&events);
        if events.took_clean && !span.is_null() {
            // SAFETY: lock held.
            unsafe { self.note_clean_span(events.mapped > 0, events.purged_at, slots) };
        }
        span
    }

    /// Adapts the purge delay to the program: the heap needed pages that
    /// are not resident (a purged span, or a `fresh` segment). If that
    /// comes soon after a purge, the purge only bought page faults: the
    /// delay doubles (up to [`MAX_PURGE_BACKOFF`] steps). Each step is
    /// undone after [`BACKOFF_DECAY_MS`] without such a miss (see
    /// [`Heap::purge`]), so a program that settles gives memory back at the
    /// configured pace again.
    ///
    /// A fresh segment counts only after a segment *unmap*: the span pool
    /// maps one only when no free span fits, purged or not, so purged
    /// spans did not cause it; a program that simply grows (new segments
    /// while it purges the spans it left behind) would otherwise back off
    /// to the longest delay and the largest segment cache and keep every
    /// freed page resident (`usable.c` under LD_PRELOAD: 145 MiB of RSS
    /// for 48 MiB live, 90 MiB without the backoff).
    ///
    /// Two backoffs: a purged span needed again doubles the delay of free
    /// spans only; a fresh segment needed right after an unmap doubles
    /// both that and the segments' (their delay and how many empty ones
    /// the heap keeps). A span purged too early costs the faults of its
    /// pages, which a longer span delay saves; it says nothing about whole
    /// segments. With one backoff for both, a few 64 KiB spans reused
    /// within 20 ms of their purge while a program was small (`usable.c`:
    /// 6 such in its first 60 ms) kept every empty segment mapped and
    /// resident for 640 ms, up to 512 of them, later in the run (60 MiB of
    /// empty segments when it moved from 2 MiB blocks to huge ones).
    ///
    /// And a span delay step takes [`SPAN_BACKOFF_BYTES`] of purged spans
    /// needed again (counted since the last step or calm second), not one
    /// span: those few 64 KiB spans alone still backed `usable.c`'s span
    /// delay off 4 steps, so that later every span it freed stayed
    /// resident for 160 ms (10 to 20 MiB of dirty free spans, peak 90 MiB;
    /// 80 MiB with the threshold). A program that swings by MiBs (the
    /// bench's rptest: 1 to 2 MiB of spans every 50 ms) passes it at once.
    ///
    /// # Safety
    ///
    /// Lock held.
    unsafe fn note_clean_span(&self, fresh: bool, purged_at: u64, slots: usize) {
        // SAFETY: lock held.
        unsafe {
            let local = self.local();
            let now = platform::now_ms();
            if fresh {
                let unmapped = (*local).last_unmap_at;
                if unmapped == 0 || now.saturating_sub(unmapped) >= 2 * self.segment_delay() {
                    return;
                }
                if (*local).segment_backoff < MAX_PURGE_BACKOFF {
                    (*local).segment_backoff += 1;
                    (*local).segment_backoff_changed_at = now;
                }
            } else {
                if purged_at == 0 || now.saturating_sub(purged_at) >= 2 * self.purge_delay() {
                    return;
                }
                (*local).premature_bytes += slots * SLOT_SIZE;
                if (*local).premature_bytes < SPAN_BACKOFF_BYTES {
                    return;
                }
            }
            (*local).premature_bytes = 0;
            if (*local).purge_backoff < MAX_PURGE_BACKOFF {
                (*local).purge_backoff += 1;
                (*local).backoff_changed_at = now;
            }
            // Due purges wait for the longer delay.
            if (*local).next_purge_at != 0 {
                (*local).next_purge_at = now.saturating_add(self.shorter_delay()).max(1);
            }
        }
    }

    /// How many times the purge delay is doubled right now (tests).
    #[cfg(test)]
    pub(crate) fn purge_backoff(&self) -> u32 {
        // SAFETY: tests call this while no other thread uses the heap.
        unsafe { (*self.local()).purge_backoff }
    }

    /// How many times the empty segments' delay is doubled (tests).
    #[cfg(test)]
    pub(crate) fn segment_backoff(&self) -> u32 {
        // SAFETY: tests call this while no other thread uses the heap.
        unsafe { (*self.local()).segment_backoff }
    }

    /// The purge delay of free spans in use: the configured one, backed off.
    fn purge_delay(&self) -> u64 {
        // SAFETY: only the lock holder calls this (every caller holds it).
        self.backed_off(unsafe { (*self.local()).purge_backoff })
    }

    /// How long empty segments (and the huge cache's mappings) stay
    /// mapped: the configured delay, backed off by `segment_backoff`.
    fn segment_delay(&self) -> u64 {
        // SAFETY: only the lock holder calls this (every caller holds it).
        self.backed_off(unsafe { (*self.local()).segment_backoff })
    }

    /// The configured purge delay doubled `steps` times.
    fn backed_off(&self, steps: u32) -> u64 {
        (self.purge_delay_ms.load(Ordering::Relaxed) as u64) << steps
    }

    /// The sooner of the two delays: when a purge check may find something
    /// due after a free.
    fn shorter_delay(&self) -> u64 {
        self.purge_delay().min(self.segment_delay())
    }

    /// Gives a span back to the pool, recording any released segment, and
    /// schedules (or, with no delay, does) the purge of its pages.
    ///
    /// # Safety
    ///
    /// Lock held; `span` is a used span of this heap, on no list, dead.
    unsafe fn free_span(&self, span: *mut Region) {
        let mut events = SpanEvents::default();
        let now = platform::now_ms();
        // SAFETY: forwarded; lock held.
        unsafe {
            // A heap whose segment delay is backed off k steps keeps up to
            // 8 << k empty segments (for the longer delay): one that keeps
            // needing memory soon after giving it back would otherwise
            // unmap whole segments at once and fault them in again on the
            // next wave.
            let local = self.local();
            let cache_limit = CACHED_SEGMENTS << (*local).segment_backoff;
            (*local).spans.free(span, now, cache_limit, &mut events);
            self.record(&events);
            if events.unmapped > 0 {
                // A segment beyond the cache limit went back at once: as
                // premature as a purge if the heap needs it again soon.
                (*local).last_purge_at = now;
                (*local).last_unmap_at = now;
            }
            // The span, or the segment it left empty, is due after its
            // own delay (an empty segment's may be the shorter).
            let delay = if events.cached > 0 {
                self.segment_delay()
            } else {
                self.purge_delay()
            };
            let due = now.saturating_add(delay).max(1);
            let local = self.local();
            if (*local).next_purge_at == 0 || due < (*local).next_purge_at {
                (*local).next_purge_at = due;
            }
            self.purge_if_due();
        }
    }

    /// [`Heap::purge_if_due`] without the huge cache: for the huge paths,
    /// which check the cache themselves (and must not expire the entry a
    /// free just put there).
    ///
    /// # Safety
    ///
    /// Lock held.
    pub(crate) unsafe fn purge_spans_if_due(&self) {
        // SAFETY: lock held.
        unsafe {
            let due = (*self.local()).next_purge_at;
            if due == 0 {
                return;
            }
            let now = platform::now_ms();
            if now >= due {
                self.purge(now);
            }
        }
    }

    /// Purges dirty free spans whose delay ran out, if any are due, and
    /// the instance's huge cache likewise (so that its pages go back after
    /// the delay even if no huge call comes).
    ///
    /// # Safety
    ///
    /// Lock held.
    unsafe fn purge_if_due(&self) {
        // SAFETY: lock held; the shared counters outlive every heap.
        unsafe {
            let local = self.local();
            let due = (*local).next_purge_at;
            let shared = &*self.shared;
            if due == 0 && !shared.huge_cache.pending() {
                return;
            }
            let now = platform::now_ms();
            if due != 0 && now >= due {
                self.purge(now);
            }
            shared
                .huge_cache
                .purge_if_due(shared, now, self.segment_delay());
        }
    }

    /// Purges every dirty free span older than the span delay as of `now`
    /// and unmaps the empty segments older than the segment delay; with
    /// `now == u64::MAX`, everything.
    ///
    /// # Safety
    ///
    /// Lock held.
    unsafe fn purge(&self, now: u64) {
        let mut events = SpanEvents::default();
        let (span_delay, segment_delay) = if now == u64::MAX {
            (0, 0)
        } else {
            (self.purge_delay(), self.segment_delay())
        };
        // SAFETY: lock held.
        unsafe {
            let local = self.local();
            (*local).next_purge_at = (*local)
                .spans
                .purge_expired(now, span_delay, segment_delay, &mut events)
                .unwrap_or(0);
            // `now == u64::MAX`: purge everything (collect, thread exit),
            // which says nothing about the program's rhythm.
            if now != u64::MAX {
                if events.purges > 0 || events.unmapped > 0 {
                    (*local).last_purge_at = now;
                }
                if events.unmapped > 0 {
                    (*local).last_unmap_at = now;
                }
                if now.saturating_sub((*local).backoff_changed_at) >= BACKOFF_DECAY_MS {
                    (*local).purge_backoff = (*local).purge_backoff.saturating_sub(1);
                    (*local).backoff_changed_at = now;
                    (*local).premature_bytes = 0;
                }
                if (*local).segment_backoff > 0
                    && now.saturating_sub((*local).segment_backoff_changed_at) >= BACKOFF_DECAY_MS
                {
                    (*local).segment_backoff -= 1;
                    (*local).segment_backoff_changed_at = now;
                }
            }
        }
        self.record(&events);
    }

    fn record(&self, events: &SpanEvents) {
        // SAFETY: the shared counters outlive every heap of the instance.
        let shared = unsafe { &*self.shared };
        if events.mapped > 0 {
            bump(&self.counters.map_calls, events.mapped);
            bump(&self.counters.segments, events.mapped);
            let bytes = events.mapped * SEGMENT_SIZE;
            SharedCounters::grow(&shared.bytes_mapped, &shared.peak_bytes_mapped, bytes);
        }
        if events.unmapped > 0 {
            bump(&self.counters.unmap_calls, events.unmapped);
            drop_by(&self.counters.segments, events.unmapped);
            SharedCounters::shrink(&shared.bytes_mapped, events.unmapped * SEGMENT_SIZE);
        }
        if events.purges > 0 {
            bump(&self.counters.purge_calls, events.purges);
            bump(&self.counters.purged_bytes, events.purged_bytes);
        }
    }

    /// Allocates a large block (the dynamic bucket, in-segment part).
    ///
    /// # Safety
    ///
    /// Lock held; `size <= LARGE_MAX_SIZE`.
    pub(crate) unsafe fn alloc_large(&self, size: usize) -> *mut u8 {
        let slots = size.div_ceil(SLOT_SIZE).max(1);
        // SAFETY: lock held.
        unsafe {
            let region = self.alloc_span(slots);
            if region.is_null() {
                return ptr::null_mut();
            }
            let start = SpanPool::span_start(region);
            Region::init_large(region, start, slots * SLOT_SIZE);
            bump(&self.counters.regions, 1);
            self.commit(slots * SLOT_SIZE);
            bump(&self.counters.large_requested, size);
            bump(&self.counters.bytes_in_use, slots * SLOT_SIZE);
            start
        }
    }

    /// Frees a block of this heap while holding its lock.
    ///
    /// # Safety
    ///
    /// Lock held; `block` is a live block of `region`, a region of this heap.
    #[inline(always)]
    pub(crate) unsafe fn free_local(&self, region: *mut Region, block: *mut u8) {
        // SAFETY: lock held; region is ours.
        unsafe {
            if (*region).kind == RegionKind::Small {
                if crate::block::SECURE {
                    // Every double and interior free (the live map).
                    Region::release_live(region, block, "free of invalid pointer");
                } else if block.cast() == (*region).free {
                    // Cheap double-free check: the block was just freed (it
                    // heads the free list). A tail call, so the free needs
                    // no stack frame.
                    report_double_free(block);
                    return;
                }
                self.free_small(region, block);
            } else {
                self.free_large(region, block);
            }
        }
    }

    /// The owner's free, once the block is known to be freed exactly once.
    ///
    /// # Safety
    ///
    /// As for [`Heap::free_local`], and in the secure build the block's live
    /// bit has just been cleared by the caller.
    #[inline(always)]
    unsafe fn free_owned(&self, region: *mut Region, block: *mut u8) {
        // SAFETY: forwarded.
        unsafe {
            if (*region).kind == RegionKind::Small {
                self.free_small(region, block);
            } else {
                self.free_large(region, block);
            }
        }
    }

    /// [`Heap::free_owned`] of a small block (also the secure build's free
    /// fast path, once `Region::try_release_live` cleared the live byte).
    ///
    /// # Safety
    ///
    /// As for [`Heap::free_owned`]; `region` is a small region.
    #[inline(always)]
    pub(crate) unsafe fn free_small(&self, region: *mut Region, block: *mut u8) {
        // SAFETY: lock held; region is ours.
        unsafe {
            // Read the fields before writing the block's link: the compiler
            // cannot know the block does not alias them.
            let head = (*region).free;
            let used = (*region).used;
            crate::block::set_next(block.cast(), head, (*region).key);
            // Under Miri the caller's pointer may carry a tag that covers
            // only what it asked for (a 42-byte `Box<[u8]>` in a 48-byte
            // block): the link is written through it, but the free list
            // keeps the block's own (exposed) provenance, so the next owner
            // of the block may use all of it.
            #[cfg(miri)]
            let block = ptr::with_exposed_provenance_mut::<u8>(block.addr());
            (*region).free = block.cast();
            (*region).used = used.wrapping_sub(1);
            drop_by(
                self.bucket_blocks.get_unchecked((*region).bucket as usize),
                1,
            );
            // An empty region at the head of its queue stays: it is the one
            // allocation serves from next. (A free into a region with nothing
            // in use is a double free, but checking it here costs every free
            // two instructions: the secure build's live map catches it.)
            if (*region).in_full || (used == 1 && !(*region).prev.is_null()) {
                self.free_small_slow(region);
            }
        }
    }

    /// [`Heap::free_owned`] of anything but a small block: a large block,
    /// or a pointer that is not a block at all. Out of line, so the
    /// small-block free needs no stack frame.
    ///
    /// # Safety
    ///
    /// As for [`Heap::free_owned`]; `region` is not a small region.
    #[cold]
    #[inline(never)]
    unsafe fn free_large(&self, region: *mut Region, block: *mut u8) {
        // SAFETY: lock held; region is ours.
        unsafe {
            if (*region).kind != RegionKind::Large || block != (*region).start {
                misuse::fatal("free of invalid pointer", block);
            }
            drop_by(&self.counters.bytes_in_use, (*region).block_size);
            self.retire_large(region);
        }
    }

    /// A local free left `region` empty or found it on the full list.
    ///
    /// # Safety
    ///
    /// Lock held; `region` is a small region of this heap.
    #[cold]
    unsafe fn free_small_slow(&self, region: *mut Region) {
        // SAFETY: lock held; the region and its bucket are ours.
        unsafe {
            let state = &mut *self.bucket_of(region);
            if (*region).in_full {
                // Back of the queue (see `crate::bucket`). The region keeps
                // its FULL mark: clearing it would cost an atomic
                // read-modify-write per unpark, and a mark left on a queued
                // region only routes its next remote free through the
                // delayed stack (see `Region::try_mark_full`).
                list_remove(&mut state.full, region);
                state.queue_push_back(region);
                (*region).in_full = false;
            }
            // Keep the head region of the queue: a program that frees and
            // allocates one block in a loop must not map and unmap a span
            // each time.
            if (*region).used == 0 && !(*region).prev.is_null() {
                state.queue_remove(region);
                self.retire_small(region);
            }
        }
    }

    /// # Safety
    ///
    /// Lock held; `region` is an empty small region on no list.
    unsafe fn retire_small(&self, region: *mut Region) {
        // SAFETY: forwarded; the region's fields are still valid.
        unsafe {
            drop_by(
                self.bucket_regions.get_unchecked((*region).bucket as usize),
                1,
            );
            self.uncommit((*region).slot_count as usize * SLOT_SIZE);
            self.free_span(region);
        }
        drop_by(&self.counters.regions, 1);
    }

    /// Records bytes of a new region or large block in the shared gauges.
    fn commit(&self, bytes: usize) {
        // SAFETY: the shared counters outlive every heap of the instance.
        let shared = unsafe { &*self.shared };
        SharedCounters::grow(&shared.bytes_committed, &shared.peak_bytes_committed, bytes);
    }

    fn uncommit(&self, bytes: usize) {
        // SAFETY: the shared counters outlive every heap of the instance.
        SharedCounters::shrink(unsafe { &(*self.shared).bytes_committed }, bytes);
    }

    /// # Safety
    ///
    /// Lock held; `region` is a large region whose block is dead.
    unsafe fn retire_large(&self, region: *mut Region) {
        // SAFETY: forwarded; the region's fields are still valid.
        unsafe {
            self.uncommit((*region).slot_count as usize * SLOT_SIZE);
            self.free_span(region);
        }
        drop_by(&self.counters.regions, 1);
    }

    /// Pushes a block freed into a region parked FULL on the delayed stack
    /// (see [`crate::region`]).
    ///
    /// # Safety
    ///
    /// `block` is a live block of this heap whose remote free just took its
    /// region off FULL (so the block is in no list).
    pub(crate) unsafe fn push_delayed(&self, block: *mut u8) {
        // SAFETY: forwarded.
        unsafe { self.delayed.push(block) }
    }

    /// Takes back the blocks other threads freed into `region` (of
    /// `bucket`) and counts them: remote frees are counted here, by the
    /// owner, so that the freeing thread writes nothing of the heap's.
    ///
    /// # Safety
    ///
    /// Lock held; `region` is a small region of ours serving `bucket`.
    #[inline]
    unsafe fn collect_remote_frees(&self, region: *mut Region, bucket: usize) {
        // SAFETY: forwarded from the caller.
        let collected = unsafe { Region::collect(region) } as usize;
        if collected > 0 {
            drop_by(&self.bucket_blocks[bucket], collected);
            bump(&self.counters.remote_frees, collected);
        }
    }

    /// Frees, as the owner, every block other threads freed into regions
    /// parked FULL: their regions go back to the queue (or, for large
    /// blocks, are retired).
    ///
    /// # Safety
    ///
    /// Lock held.
    unsafe fn process_delayed(&self) {
        let mut block = self.delayed.take_all();
        // SAFETY: lock held; blocks on our delayed stack are live blocks of
        // our regions whose free is not finished yet.
        unsafe {
            while !block.is_null() {
                let next = DelayedStack::next(block);
                let block_ptr = block.cast::<u8>();
                let region = segment::region_of(segment::segment_of(block_ptr), block_ptr);
                bump(&self.counters.remote_frees, 1);
                if crate::block::SECURE && (*region).kind == RegionKind::Small {
                    // Remote frees leave the live byte to the owner.
                    Region::release_live(region, block_ptr, "free of invalid pointer");
                }
                self.free_owned(region, block_ptr);
                block = next;
            }
        }
    }

    /// Grows a large block in place by taking the free slots after it.
    ///
    /// # Safety
    ///
    /// Lock held; `region` is a live large region of this heap.
    pub(crate) unsafe fn grow_large(&self, region: *mut Region, new_size: usize) -> bool {
        // SAFETY: lock held; region is ours.
        unsafe {
            let slots = (*region).slot_count as usize;
            let wanted = new_size.div_ceil(SLOT_SIZE);
            if wanted <= slots {
                return true;
            }
            if !(*self.local()).spans.try_grow(region, wanted - slots) {
                return false;
            }
            let added = (wanted - slots) * SLOT_SIZE;
            self.commit(added);
            (*region).block_size += added;
            (*region).end = (*region).end.add(added);
            (*region).bump = (*region).end;
            bump(&self.counters.bytes_in_use, added);
            true
        }
    }

    /// Shrinks a large block in place, freeing whole slots at its end.
    ///
    /// # Safety
    ///
    /// Lock held; `region` is a live large region of this heap.
    pub(crate) unsafe fn shrink_large(&self, region: *mut Region, new_size: usize) {
        // SAFETY: lock held; region is ours.
        unsafe {
            let slots = (*region).slot_count as usize;
            let wanted = new_size.div_ceil(SLOT_SIZE).max(1);
            if wanted >= slots {
                return;
            }
            let removed = (slots - wanted) * SLOT_SIZE;
            self.uncommit(removed);
            let mut events = SpanEvents::default();
            (*self.local())
                .spans
                .shrink(region, slots - wanted, platform::now_ms(), &mut events);
            self.record(&events);
            (*region).block_size -= removed;
            (*region).end = (*region).end.sub(removed);
            (*region).bump = (*region).end;
            drop_by(&self.counters.bytes_in_use, removed);
        }
    }

    /// Reclaims everything it can: remote frees, empty regions, the cached
    /// segment; and purges the pages of free spans.
    ///
    /// # Safety
    ///
    /// Lock held.
    pub(crate) unsafe fn collect(&self) {
        // SAFETY: lock held; every region on our lists is ours.
        unsafe {
            self.process_delayed();
            let local = self.local();
            for bucket in 0..N {
                let mut region = (*local).buckets[bucket].queue;
                while !region.is_null() {
                    let next = (*region).next;
                    self.collect_remote_frees(region, bucket);
                    if (*region).used == 0 {
                        (*local).buckets[bucket].queue_remove(region);
                        self.retire_small(region);
                    }
                    region = next;
                }
            }
            // Everything free is purged now, and the cached segment unmapped.
            self.purge(u64::MAX);
        }
    }

    /// Every heap's full regions are scanned nowhere: a region parked full
    /// comes back only through a free. This checks that invariant in tests.
    #[cfg(test)]
    pub(crate) unsafe fn full_regions(&self, bucket: usize) -> usize {
        // SAFETY: lock held (caller's contract).
        let mut region = unsafe { (*self.local()).buckets[bucket].full };
        let mut count = 0;
        while !region.is_null() {
            count += 1;
            // SAFETY: a region on our list.
            region = unsafe { (*region).next };
        }
        count
    }
}

/// The heap that owns a `Regions` segment.
#[inline(always)]
pub(crate) fn owner_of<const N: usize>(segment: *mut segment::Segment) -> *mut Heap<N> {
    // SAFETY: the owner field of a Regions segment is written once, before
    // any block of it is handed out.
    unsafe { (*segment).owner.cast() }
}

const _: () = assert!(SEGMENT_SIZE % SLOT_SIZE == 0);

#[cfg(test)]
mod tests {
    use super::{owner_of, SPAN_BACKOFF_BYTES};
    use crate::bucket::DEFAULT_BUCKET_COUNT;
    use crate::segment::{segment_of, CACHED_SEGMENTS, LARGE_MAX_SIZE, SLOT_SIZE};
    use crate::Rulloc;
    use std::thread::sleep;
    use std::time::Duration;

    /// Spans needed again right after their purge back off the span delay
    /// only: the heap still keeps at most `CACHED_SEGMENTS` empty segments,
    /// and unmaps those after the configured delay, not the span delay.
    #[test]
    #[cfg_attr(miri, ignore)] // depends on wall-clock delays
    fn span_backoff_keeps_no_more_empty_segments() {
        let a = Rulloc::new();
        a.set_purge_delay_ms(5);
        let mib = 1 << 20;
        // Three 1 MiB spans side by side in a fresh segment (48 of 63 slots).
        let [first, second, third] = [0; 3].map(|_| a.allocate_bytes(mib, 8));
        let heap = owner_of::<DEFAULT_BUCKET_COUNT>(segment_of(first));
        // Above the largest bucket: a span of its own, whose free runs the
        // heap's purge check.
        let other = 4 * SLOT_SIZE;
        // Freed at the end, to run the purge check with nothing else.
        let spare = a.allocate_bytes(other, 8);
        let mut again = first;
        // SAFETY: live blocks of `a`, each freed once; the heap is used by
        // this thread only.
        unsafe {
            for step in 0..3 {
                a.deallocate_bytes(again);
                // Past the (backed-off) span delay, a free elsewhere runs
                // the purge of the freed span...
                sleep(Duration::from_millis((5 << step) + 20));
                let slot = a.allocate_bytes(other, 8);
                a.deallocate_bytes(slot);
                // ...which is the best fit for 1 MiB: needed right after
                // its purge.
                again = a.allocate_bytes(mib, 8);
                assert_eq!(again, first);
            }
            assert_eq!((*heap).purge_backoff(), 3);
            assert_eq!((*heap).segment_backoff(), 0);
            // 2 MiB blocks: one per segment.
            let wave = 2 * CACHED_SEGMENTS;
            let blocks: std::vec::Vec<*mut u8> = (0..wave)
                .map(|_| a.allocate_bytes(LARGE_MAX_SIZE, 8))
                .collect();
            assert!(blocks.iter().all(|b| !b.is_null()));
            let before = a.stats().unmap_calls;
            for block in blocks {
                a.deallocate_bytes(block);
            }
            assert_eq!(a.stats().unmap_calls - before, wave - CACHED_SEGMENTS);
            // The span delay is 40 ms now, the segments' still 5 ms.
            sleep(Duration::from_millis(25));
            a.deallocate_bytes(spare);
            assert_eq!(a.stats().unmap_calls - before, wave);
            for block in [again, second, third] {
                a.deallocate_bytes(block);
            }
        }
    }

    /// A purged span needed again right after its purge backs the span
    /// delay off only once such spans add up to `SPAN_BACKOFF_BYTES`: one
    /// small span faulted in again costs a few page faults, while the
    /// longer delay keeps every free page of the heap resident.
    #[test]
    #[cfg_attr(miri, ignore)] // depends on wall-clock delays
    fn small_premature_purges_add_up_before_backing_off() {
        let a = Rulloc::new();
        a.set_purge_delay_ms(5);
        // Above the largest bucket, so each block is a span of its own.
        let size = 3 * SLOT_SIZE;
        const _: () = assert!(3 * SLOT_SIZE < SPAN_BACKOFF_BYTES);
        const _: () = assert!(6 * SLOT_SIZE >= SPAN_BACKOFF_BYTES);
        let [first, second] = [0; 2].map(|_| a.allocate_bytes(size, 8));
        let heap = owner_of::<DEFAULT_BUCKET_COUNT>(segment_of(first));
        let mut again = first;
        // SAFETY: live blocks of `a`, each freed once; the heap is used by
        // this thread only.
        unsafe {
            for backoff in [0, 1] {
                a.deallocate_bytes(again);
                sleep(Duration::from_millis(25));
                // A span from the rest of the segment, whose free runs the
                // due purge of the first's span...
                let other = a.allocate_bytes(4 * SLOT_SIZE, 8);
                a.deallocate_bytes(other);
                // ...the best fit for `size`: needed right after its purge.
                again = a.allocate_bytes(size, 8);
                assert_eq!(again, first);
                assert_eq!((*heap).purge_backoff(), backoff);
            }
            a.deallocate_bytes(again);
            a.deallocate_bytes(second);
        }
    }
}
