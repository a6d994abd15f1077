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
//! Huge blocks are unmapped as soon as they are freed, and `realloc` of a
//! huge block resizes the mapping where it stands (`mremap` on Linux)
//! before it ever copies.
//!
//! Invariants: every live huge segment is on the allocator's huge list
//! (under its lock), so dropping the allocator unmaps them all.

use core::cell::UnsafeCell;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

use crate::heap::SharedCounters;

use crate::misuse;
use crate::platform;
pub(crate) use crate::segment::LARGE_MAX_SIZE;
use crate::segment::{self, round_up, Segment, SegmentKind, SEGMENT_SIZE};
use crate::sync::SpinLock;

/// The allocator's list of live huge blocks, and their counters.
pub(crate) struct HugeList {
    lock: SpinLock,
    head: UnsafeCell<*mut Segment>,
    pub(crate) bytes_in_use: AtomicUsize,
    pub(crate) bytes_mapped: AtomicUsize,
    pub(crate) count: AtomicUsize,
    pub(crate) map_calls: AtomicUsize,
    pub(crate) unmap_calls: AtomicUsize,
    /// The instance's shared counters (peaks), set before the first huge
    /// block is mapped.
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
            shared: AtomicPtr::new(ptr::null_mut()),
        }
    }

    pub(crate) fn lock(&self) -> &SpinLock {
        &self.lock
    }

    /// Points the list at its instance's shared counters.
    pub(crate) fn set_shared(&self, shared: *mut SharedCounters) {
        self.shared.store(shared, Ordering::Relaxed);
    }

    /// Moves the shared mapped and committed gauges by `delta` bytes.
    fn gauge(&self, grow: bool, delta: usize) {
        let shared = self.shared.load(Ordering::Relaxed);
        if shared.is_null() {
            return;
        }
        // SAFETY: the shared counters outlive the list's blocks.
        let shared = unsafe { &*shared };
        if grow {
            SharedCounters::grow(&shared.bytes_mapped, &shared.peak_bytes_mapped, delta);
            SharedCounters::grow(&shared.bytes_committed, &shared.peak_bytes_committed, delta);
        } else {
            SharedCounters::shrink(&shared.bytes_mapped, delta);
            SharedCounters::shrink(&shared.bytes_committed, delta);
        }
    }

    /// Maps a huge block of `size` bytes aligned to `align`. Null if the
    /// request cannot be represented or the OS refuses.
    pub(crate) fn alloc(&self, size: usize, align: usize) -> *mut u8 {
        let page = platform::page_size();
        let header = segment::header_size();
        let Some(rounded_size) = size.max(1).checked_add(page - 1).map(|s| s & !(page - 1)) else {
            return ptr::null_mut();
        };
        let (mapping, mapping_size, mapping_align, segment, offset);
        if align <= SEGMENT_SIZE {
            offset = round_up(header, align.max(page));
            let Some(total) = rounded_size.checked_add(offset) else {
                return ptr::null_mut();
            };
            let Some(base) = platform::map_aligned(total, SEGMENT_SIZE) else {
                return ptr::null_mut();
            };
            (mapping, mapping_size, mapping_align) = (base.as_ptr(), total, SEGMENT_SIZE);
            segment = mapping.cast::<Segment>();
        } else {
            // The block sits at `align` into the mapping; the header one
            // segment before it.
            offset = SEGMENT_SIZE;
            let Some(total) = rounded_size.checked_add(align) else {
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
        misuse::register_segment(segment.expose_provenance());
        // SAFETY: the header lies in the fresh zeroed mapping.
        unsafe {
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
        // SAFETY: as above.
        self.bytes_in_use
            .fetch_add(unsafe { (*segment).huge_size }, Ordering::Relaxed);
        self.link(segment);
        segment.cast::<u8>().wrapping_add(offset)
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

    /// Unmaps a huge block.
    ///
    /// # Safety
    ///
    /// `segment` is the header of a live huge block of this list that
    /// nobody uses any more.
    pub(crate) unsafe fn free(&self, segment: *mut Segment) {
        self.unlink(segment);
        // SAFETY: caller's contract; the header records the mapping.
        unsafe {
            self.bytes_in_use
                .fetch_sub((*segment).huge_size, Ordering::Relaxed);
            self.bytes_mapped
                .fetch_sub((*segment).mapping_size, Ordering::Relaxed);
            self.gauge(false, (*segment).mapping_size);
            let mut events = segment::SpanEvents::default();
            segment::unmap_segment(segment, &mut events);
        }
        self.count.fetch_sub(1, Ordering::Relaxed);
        self.unmap_calls.fetch_add(1, Ordering::Relaxed);
    }

    /// Resizes a huge block without moving it if the OS allows. Returns
    /// whether the block now has room for `new_size` bytes.
    ///
    /// # Safety
    ///
    /// `segment` is the header of a live huge block of this list, owned by
    /// the caller.
    pub(crate) unsafe fn resize_in_place(&self, segment: *mut Segment, new_size: usize) -> bool {
        // SAFETY: caller's contract.
        unsafe {
            let usable = (*segment).huge_size;
            // Shrinking by less than half is not worth a system call.
            if new_size <= usable && new_size >= usable / 2 {
                return true;
            }
            if !platform::CAN_UNMAP_PART || (*segment).mapping != segment.cast::<u8>() {
                return new_size <= usable;
            }
            let page = platform::page_size();
            let offset = (*segment).huge_offset;
            let Some(total) = new_size
                .max(1)
                .checked_add(offset + page - 1)
                .map(|t| t & !(page - 1))
            else {
                return false;
            };
            let old_total = (*segment).mapping_size;
            if total == old_total {
                return true;
            }
            let mapping = NonNull::new_unchecked((*segment).mapping);
            if !platform::remap_in_place(mapping, old_total, total) {
                return new_size <= usable;
            }
            (*segment).mapping_size = total;
            (*segment).huge_size = total - offset;
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
            true
        }
    }

    /// Unmaps every huge block (the allocator is being dropped).
    pub(crate) fn release_all(&mut self) {
        // SAFETY: `&mut self`: nobody else uses the list or its blocks.
        unsafe {
            while !(*self.head.get()).is_null() {
                let segment = *self.head.get();
                self.free(segment);
            }
        }
    }
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
