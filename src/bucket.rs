//! Buckets: size classes, and the queue of regions serving each one.
//!
//! A bucket is a block size. Its regions (see [`crate::region`]) sit on one
//! of two lists of the owning heap:
//!
//! ```text
//!  Bucket (48 B blocks)
//!   queue: [Region A] <-> [Region B] <-> [Region C]    regions that may have room
//!            ^ allocation pops A's free list;         ^ queue_tail
//!              when A runs dry, A moves to ...
//!   full:  [Region D] <-> [Region E]                   regions with no free block
//!            ^ a free into D (local, or remote via the delayed stack) moves D
//!              to the *back* of the queue
//! ```
//!
//! Back, not front: by the time allocation reaches D, the frees that keep
//! landing in it (now plain fast-path frees) have given it a batch of
//! blocks. Put at the front, D would hand out its one block and park again
//! at once: in a churn where frees hit random regions (larson) that made a
//! quarter of all allocations and frees take their slow paths.
//!
//! [`Config`] maps a request `(size, align)` to a bucket: a table lookup for
//! sizes up to [`LOOKUP_MAX`] (one table for alignments every bucket
//! satisfies, one for [`LOOKUP_ALIGN`], the alignment of C's `malloc`, and
//! one for `malloc` itself, which needs no alignment test at all) and a
//! binary search above. Requests larger than the largest bucket go to the
//! *dynamic bucket* ([`crate::large`]).
//!
//! The default classes are the multiples of 8 up to 64, then four steps per
//! power of two up to 128 KiB (80, 96, 112, 128, 160, ...): a block is at most
//! 25 % larger than the request, 12.5 % on average. Custom classes are given
//! at compile time with [`crate::Rulloc::with_bucket_sizes`].
//!
//! Invariants: sizes are strictly increasing, non-zero multiples of the
//! pointer size, at most [`MAX_BUCKET_SIZE`], and there are at most 254 of
//! them (indices fit a `u8`, with 255 meaning "no bucket").

use core::mem::size_of;
use core::ptr;

use crate::region::Region;
use crate::segment::{LARGE_MAX_SLOTS, SLOT_SIZE};

/// Number of size classes in the default configuration.
pub const DEFAULT_BUCKET_COUNT: usize = 52;

/// The default size classes (bytes).
pub const DEFAULT_BUCKET_SIZES: [usize; DEFAULT_BUCKET_COUNT] = default_sizes();

/// The largest bucket size accepted: a region of such blocks still fits the
/// dynamic bucket's largest span.
pub const MAX_BUCKET_SIZE: usize = 1 << 20;

/// Sizes up to this are mapped to buckets with one table lookup.
pub(crate) const LOOKUP_MAX: usize = 1024;
/// Alignments up to this are served by a lookup table too: C's `malloc`
/// asks for 16 (glibc's `MALLOC_ALIGNMENT`) for every size above 8, Rust's
/// `u128` and SIMD types for 16 as well, and the default classes are not
/// all multiples of 16 (24, 40, 56).
pub(crate) const LOOKUP_ALIGN: usize = 16;
/// C's `malloc` promises only this alignment to blocks of at most
/// [`MALLOC_SMALL_SIZE`] bytes (no C object that fits needs more), and
/// [`LOOKUP_ALIGN`] to all others.
pub(crate) const MALLOC_SMALL_ALIGN: usize = 8;
/// See [`MALLOC_SMALL_ALIGN`].
pub(crate) const MALLOC_SMALL_SIZE: usize = 8;
const GRANULE: usize = size_of::<usize>();
const LOOKUP_LEN: usize = LOOKUP_MAX / GRANULE + 1;
/// Table entry meaning "larger than every bucket".
const NO_BUCKET: u8 = u8::MAX;

const fn default_sizes() -> [usize; DEFAULT_BUCKET_COUNT] {
    let mut sizes = [0; DEFAULT_BUCKET_COUNT];
    let mut i = 0;
    while i < 8 {
        sizes[i] = (i + 1) * 8;
        i += 1;
    }
    let mut base = 64;
    while i < DEFAULT_BUCKET_COUNT {
        let mut step = 1;
        while step <= 4 && i < DEFAULT_BUCKET_COUNT {
            sizes[i] = base + base / 4 * step;
            i += 1;
            step += 1;
        }
        base *= 2;
    }
    sizes
}

/// How many slots a region of `block_size` blocks spans: one slot for
/// blocks up to 1/8 of a slot, otherwise enough for about eight blocks.
pub(crate) const fn region_slots(block_size: usize) -> usize {
    if block_size <= SLOT_SIZE / 8 {
        1
    } else {
        let slots = (block_size * 8).div_ceil(SLOT_SIZE);
        if slots > LARGE_MAX_SLOTS {
            LARGE_MAX_SLOTS
        } else {
            slots
        }
    }
}

/// The compile-time bucket configuration of an allocator.
#[derive(Clone, Copy)]
pub(crate) struct Config<const N: usize> {
    pub(crate) sizes: [usize; N],
    /// `lookup[(size + GRANULE - 1) / GRANULE]` = smallest bucket >= size.
    lookup: [u8; LOOKUP_LEN],
    /// The same for requests aligned to [`LOOKUP_ALIGN`]: the smallest
    /// bucket >= size whose block size is a multiple of it.
    lookup_aligned: [u8; LOOKUP_LEN],
    /// The same for C's `malloc(size)`: the smallest bucket >= size whose
    /// block size is a multiple of [`MALLOC_SMALL_ALIGN`] for sizes up to
    /// [`MALLOC_SMALL_SIZE`], of [`LOOKUP_ALIGN`] above: one load, no
    /// alignment test, for the C library's hottest call.
    lookup_malloc: [u8; LOOKUP_LEN],
    /// Largest power of two dividing every size (capped at a slot): requests
    /// aligned to at most this need no alignment search.
    common_align: usize,
}

impl<const N: usize> Config<N> {
    /// Validates `sizes` (panicking at compile time in a `const` context)
    /// and builds the lookup table.
    pub(crate) const fn new(sizes: [usize; N]) -> Self {
        assert!(N > 0, "Rulloc: at least one bucket size is required");
        assert!(N <= 254, "Rulloc: at most 254 bucket sizes are supported");
        let mut common_align = SLOT_SIZE;
        let mut i = 0;
        while i < N {
            let size = sizes[i];
            assert!(size > 0, "Rulloc: bucket sizes must be greater than zero");
            assert!(
                size % GRANULE == 0,
                "Rulloc: bucket sizes must be multiples of the pointer size"
            );
            assert!(
                size <= MAX_BUCKET_SIZE,
                "Rulloc: bucket sizes must be at most 1 MiB"
            );
            assert!(
                i == 0 || sizes[i - 1] < size,
                "Rulloc: bucket sizes must be sorted in strictly increasing order"
            );
            let lowest_bit = size & size.wrapping_neg();
            if lowest_bit < common_align {
                common_align = lowest_bit;
            }
            i += 1;
        }
        Self {
            sizes,
            lookup: Self::lookup_table(&sizes, 1),
            lookup_aligned: Self::lookup_table(&sizes, LOOKUP_ALIGN),
            lookup_malloc: Self::malloc_lookup_table(&sizes),
            common_align,
        }
    }

    /// `table[(size + GRANULE - 1) / GRANULE]` = the smallest bucket >= size
    /// whose block size is a multiple of `align` (a power of two).
    const fn lookup_table(sizes: &[usize; N], align: usize) -> [u8; LOOKUP_LEN] {
        let mut table = [NO_BUCKET; LOOKUP_LEN];
        let mut index = 0;
        let mut bucket = 0;
        while index < LOOKUP_LEN {
            let size = index * GRANULE;
            while bucket < N && (sizes[bucket] < size || sizes[bucket] % align != 0) {
                bucket += 1;
            }
            if bucket < N {
                table[index] = bucket as u8;
            }
            index += 1;
        }
        table
    }

    /// The lookup table of C's `malloc` (see [`Config::bucket_for_malloc`]):
    /// entries covering sizes up to [`MALLOC_SMALL_SIZE`] (a multiple of the
    /// granule, so no entry straddles it) from the table for
    /// [`MALLOC_SMALL_ALIGN`], the others from the table for
    /// [`LOOKUP_ALIGN`].
    const fn malloc_lookup_table(sizes: &[usize; N]) -> [u8; LOOKUP_LEN] {
        let small = Self::lookup_table(sizes, MALLOC_SMALL_ALIGN);
        let mut table = Self::lookup_table(sizes, LOOKUP_ALIGN);
        let mut index = 0;
        while index * GRANULE <= MALLOC_SMALL_SIZE {
            table[index] = small[index];
            index += 1;
        }
        table
    }

    /// The bucket serving C's `malloc(size)`: `size` bytes aligned to
    /// [`LOOKUP_ALIGN`] (glibc's `MALLOC_ALIGNMENT`), or to
    /// [`MALLOC_SMALL_ALIGN`] for sizes up to [`MALLOC_SMALL_SIZE`], where no
    /// C object can need more. `None` when no table entry serves it: above
    /// [`LOOKUP_MAX`], or no bucket fits; [`Config::bucket_for`] decides
    /// those. Equal to `bucket_for(size, malloc_align(size))` wherever it is
    /// `Some` (a test checks every size).
    #[inline(always)]
    pub(crate) fn bucket_for_malloc(&self, size: usize) -> Option<usize> {
        if size > LOOKUP_MAX {
            return None;
        }
        match self.lookup_malloc[size.div_ceil(GRANULE)] {
            NO_BUCKET => None,
            entry => Some(usize::from(entry)),
        }
    }

    /// The bucket serving `(size, align)`, or `None` for the dynamic bucket.
    ///
    /// Small sizes take one table lookup when `align` is at most what every
    /// bucket guarantees, two when it is exactly [`LOOKUP_ALIGN`]; larger
    /// sizes a binary search. Any other alignment walks up from there to
    /// the first block size it divides.
    ///
    /// The order of the tests is the fast path's: Rust's usual alignments
    /// (at most 8, a runtime value in `GlobalAlloc::alloc`) pay one
    /// comparison after the load, as before the second table existed, and
    /// every exit of the caller stays a tail call, so it needs no stack
    /// frame (`pair32`: 84 instructions per pair with or without the
    /// table). Testing `align == LOOKUP_ALIGN` first saves C's `malloc`
    /// three instructions and cost Rust's path ten.
    #[inline(always)]
    pub(crate) fn bucket_for(&self, size: usize, align: usize) -> Option<usize> {
        let bucket = if size <= LOOKUP_MAX {
            let index = size.div_ceil(GRANULE);
            let entry = self.lookup[index];
            if entry == NO_BUCKET {
                return None;
            }
            if align > self.common_align {
                if align != LOOKUP_ALIGN {
                    return self.aligned_bucket(usize::from(entry), align);
                }
                let aligned = self.lookup_aligned[index];
                if aligned == NO_BUCKET {
                    return None;
                }
                return Some(usize::from(aligned));
            }
            entry as usize
        } else {
            let bucket = self.sizes.partition_point(|&s| s < size);
            if align > self.common_align {
                return self.aligned_bucket(bucket, align);
            }
            if bucket == N {
                return None;
            }
            bucket
        };
        Some(bucket)
    }

    /// The first bucket from `bucket` up whose block size is a multiple of
    /// `align` (a power of two): regions start slot-aligned, so all its
    /// blocks are aligned. `bucket` may be `N` or more (none). A short
    /// loop, inlined: an out-of-line call here costs the allocation fast
    /// path a stack frame (its other exits are tail calls).
    #[inline(always)]
    fn aligned_bucket(&self, mut bucket: usize, align: usize) -> Option<usize> {
        if align > SLOT_SIZE {
            return None;
        }
        while bucket < N {
            if self.sizes[bucket] & (align - 1) == 0 {
                return Some(bucket);
            }
            bucket += 1;
        }
        None
    }
}

/// A heap's state for one size class.
pub(crate) struct Bucket {
    /// Regions that may have free blocks; allocation serves from the head.
    pub(crate) queue: *mut Region,
    /// The last region of `queue` (null when it is empty).
    pub(crate) queue_tail: *mut Region,
    /// Regions with no free block, parked until something is freed in them.
    pub(crate) full: *mut Region,
    pub(crate) block_size: usize,
    /// Slots per region of this bucket.
    pub(crate) region_slots: usize,
}

impl Bucket {
    pub(crate) const fn new(block_size: usize) -> Self {
        Self {
            queue: ptr::null_mut(),
            queue_tail: ptr::null_mut(),
            full: ptr::null_mut(),
            block_size,
            region_slots: region_slots(block_size),
        }
    }

    /// Puts `region` at the head of the queue: allocation serves from it
    /// next.
    ///
    /// # Safety
    ///
    /// `region` is a live region of the caller's locked heap, on no list.
    pub(crate) unsafe fn queue_push_front(&mut self, region: *mut Region) {
        if self.queue.is_null() {
            self.queue_tail = region;
        }
        // SAFETY: forwarded.
        unsafe { list_push_front(&mut self.queue, region) };
    }

    /// Puts `region` at the end of the queue: allocation reaches it after
    /// every region ahead of it.
    ///
    /// # Safety
    ///
    /// `region` is a live region of the caller's locked heap, on no list.
    pub(crate) unsafe fn queue_push_back(&mut self, region: *mut Region) {
        let tail = self.queue_tail;
        if tail.is_null() {
            // SAFETY: forwarded; the queue is empty.
            unsafe { self.queue_push_front(region) };
            return;
        }
        // SAFETY: owner-only links of regions of the caller's heap; `tail`
        // is the queue's last region.
        unsafe {
            (*region).prev = tail;
            (*region).next = ptr::null_mut();
            (*tail).next = region;
        }
        self.queue_tail = region;
    }

    /// Takes `region` off the queue.
    ///
    /// # Safety
    ///
    /// `region` is on this bucket's queue.
    pub(crate) unsafe fn queue_remove(&mut self, region: *mut Region) {
        if self.queue_tail == region {
            // SAFETY: a region on our queue.
            self.queue_tail = unsafe { (*region).prev };
        }
        // SAFETY: forwarded.
        unsafe { list_remove(&mut self.queue, region) };
    }
}

/// Pushes `region` at the front of the list starting at `head`.
///
/// # Safety
///
/// `region` is a live region of the caller's locked heap, on no list.
pub(crate) unsafe fn list_push_front(head: &mut *mut Region, region: *mut Region) {
    // SAFETY: owner-only links of regions of the caller's heap.
    unsafe {
        (*region).prev = ptr::null_mut();
        (*region).next = *head;
        if !head.is_null() {
            (**head).prev = region;
        }
    }
    *head = region;
}

/// Removes `region` from the list starting at `head`.
///
/// # Safety
///
/// `region` is on that list.
pub(crate) unsafe fn list_remove(head: &mut *mut Region, region: *mut Region) {
    // SAFETY: owner-only links of regions of the caller's heap.
    unsafe {
        let (prev, next) = ((*region).prev, (*region).next);
        if prev.is_null() {
            *head = next;
        } else {
            (*prev).next = next;
        }
        if !next.is_null() {
            (*next).prev = prev;
        }
        (*region).prev = ptr::null_mut();
        (*region).next = ptr::null_mut();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_sizes_grow_by_at_most_a_quarter() {
        assert_eq!(DEFAULT_BUCKET_SIZES[0], 8);
        assert_eq!(DEFAULT_BUCKET_SIZES[DEFAULT_BUCKET_COUNT - 1], 128 * 1024);
        for pair in DEFAULT_BUCKET_SIZES.windows(2) {
            assert!(pair[0] < pair[1]);
            assert!(pair[1] - pair[0] <= pair[0].max(8));
            if pair[0] >= 64 {
                assert!((pair[1] - pair[0]) * 4 <= pair[0]);
            }
        }
    }

    #[test]
    fn lookup_finds_the_smallest_fitting_bucket() {
        let config = Config::new(DEFAULT_BUCKET_SIZES);
        let max = if cfg!(miri) { 3000 } else { 200_000 };
        for size in 0..=max {
            let expected = DEFAULT_BUCKET_SIZES.iter().position(|&s| s >= size);
            assert_eq!(config.bucket_for(size, 1), expected, "size {size}");
        }
    }

    #[test]
    fn aligned_requests_get_a_multiple_of_the_alignment() {
        let config = Config::new(DEFAULT_BUCKET_SIZES);
        for align in [16, 32, 64, 128, 512, 4096, 65536] {
            for size in [1, 8, 24, 40, 100, 1000, 5000] {
                let bucket = config.bucket_for(size, align).unwrap();
                let block = DEFAULT_BUCKET_SIZES[bucket];
                assert!(
                    block >= size && block % align == 0,
                    "{size} {align} -> {block}"
                );
            }
        }
        assert_eq!(config.bucket_for(8, 128 * 1024), None);
    }

    /// The tables and the search give exactly the first bucket that fits
    /// and that the alignment divides, for every size around the lookup
    /// range and every alignment up to a slot.
    #[test]
    fn every_size_and_alignment_gets_the_smallest_aligned_bucket() {
        fn check<const N: usize>(sizes: [usize; N]) {
            let config = Config::new(sizes);
            let max = if cfg!(miri) {
                LOOKUP_MAX + 40
            } else {
                3 * LOOKUP_MAX
            };
            for shift in 0..=SLOT_SIZE.trailing_zeros() + 1 {
                let align = 1 << shift;
                for size in 0..=max {
                    let expected = if align > SLOT_SIZE {
                        None
                    } else {
                        sizes.iter().position(|&s| s >= size && s % align == 0)
                    };
                    assert_eq!(config.bucket_for(size, align), expected, "{size} {align}");
                }
            }
        }
        check(DEFAULT_BUCKET_SIZES);
        check([8, 24, 40, 48, 1000, 1016, 2040]);
        check([16, 32, 4096]);
    }

    /// C's table agrees with the general lookup at C's alignment rule for
    /// every size it answers, and answers every size up to the lookup limit
    /// that some bucket can hold.
    #[test]
    fn the_malloc_table_gives_the_smallest_bucket_at_malloc_alignment() {
        fn check<const N: usize>(sizes: [usize; N]) {
            let config = Config::new(sizes);
            for size in 0..=LOOKUP_MAX + 100 {
                let align = if size <= MALLOC_SMALL_SIZE {
                    MALLOC_SMALL_ALIGN
                } else {
                    LOOKUP_ALIGN
                };
                let general = config.bucket_for(size, align);
                match config.bucket_for_malloc(size) {
                    Some(bucket) => assert_eq!(Some(bucket), general, "size {size}"),
                    None => assert!(size > LOOKUP_MAX || general.is_none(), "size {size}"),
                }
            }
        }
        check(DEFAULT_BUCKET_SIZES);
        check([8, 24, 40, 48, 1000, 1016, 2040]);
        check([16, 32, 4096]);
        check([8, 24]);
    }

    #[test]
    fn custom_sizes_send_larger_requests_to_the_dynamic_bucket() {
        let config = Config::new([8, 16, 24]);
        assert_eq!(config.bucket_for(0, 1), Some(0));
        assert_eq!(config.bucket_for(17, 8), Some(2));
        assert_eq!(config.bucket_for(25, 8), None);
        assert_eq!(config.bucket_for(8, 16), Some(1));
    }

    #[test]
    fn region_slots_hold_about_eight_blocks() {
        assert_eq!(region_slots(8), 1);
        assert_eq!(region_slots(8192), 1);
        assert_eq!(region_slots(128 * 1024), 16);
        assert_eq!(region_slots(MAX_BUCKET_SIZE), LARGE_MAX_SLOTS);
    }
}
