//! The operating system interface: the only code that talks to the kernel.
//!
//! Everything the allocator owns comes from [`map_aligned`] and goes back
//! through [`unmap`]. A mapping is read-write, zero-filled, a multiple of the
//! page size and aligned to a power of two at least as large as a page:
//!
//! ```text
//!   map_aligned(size = 3 pages, align = 4 pages)
//!
//!   address space   ... |////|////|////|////|////|////|////| ...
//!                             ^ align boundary
//!   result                    +--------------+
//!                             | 3 pages, 0s  |
//!                             +--------------+
//! ```
//!
//! Backends:
//!
//! * `unix`: `mmap` more than asked for, then `munmap` the misaligned head
//!   and the tail (Linux also resizes mappings through `mremap`:
//!   [`remap_in_place`], and [`remap_move`], which moves one to an aligned
//!   address without copying it).
//! * `windows`: `VirtualAlloc` cannot release part of a reservation, so it
//!   reserves `size + align`, releases it, and maps again exactly at the
//!   aligned address inside it, retrying if another thread raced for it.
//! * `miri`: under `cfg(miri)`, mappings are `std::alloc::System`
//!   allocations with the requested alignment, so Miri checks the real data
//!   structures on top of them.
//!
//! Invariants:
//!
//! * [`page_size`] is read from the OS at run time (never assumed) and is a
//!   power of two; everything above the platform layer rounds to it.
//! * Every function reports failure by returning `None`/`false`; nothing here
//!   panics or aborts, because out-of-memory must reach the caller as null.

#[cfg(all(unix, not(miri)))]
pub(crate) mod unix;
#[cfg(all(unix, not(miri)))]
pub(crate) use unix as backend;

#[cfg(all(windows, not(miri)))]
pub(crate) mod windows;
#[cfg(all(windows, not(miri)))]
pub(crate) use windows as backend;

#[cfg(miri)]
pub(crate) mod miri;
#[cfg(miri)]
pub(crate) use miri as backend;

use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};

/// Cached page size; 0 until the first call to [`page_size`].
static PAGE_SIZE: AtomicUsize = AtomicUsize::new(0);

/// The virtual memory page size of this machine, read once from the OS.
#[inline]
pub(crate) fn page_size() -> usize {
    let cached = PAGE_SIZE.load(Ordering::Relaxed);
    if cached != 0 {
        return cached;
    }
    let size = backend::os_page_size();
    // A nonsensical answer would break every rounding above us; fall back to
    // the most common page size rather than panicking in an alloc path.
    let size = if size.is_power_of_two() { size } else { 4096 };
    PAGE_SIZE.store(size, Ordering::Relaxed);
    size
}

/// Overrides the page size the allocator rounds to, for tests that simulate
/// 16 KiB and 64 KiB page kernels on a 4 KiB one (a larger simulated page is
/// always a multiple of the real one, so every rounding stays valid).
#[cfg(test)]
pub(crate) fn simulate_page_size(size: usize) {
    assert!(size.is_power_of_two() && size >= backend::os_page_size());
    PAGE_SIZE.store(size, Ordering::Relaxed);
}

/// Maps `size` bytes (a multiple of [`page_size`]) aligned to `align` (a
/// power of two, at least [`page_size`]). The memory is zeroed.
pub(crate) fn map_aligned(size: usize, align: usize) -> Option<NonNull<u8>> {
    debug_assert!(align.is_power_of_two() && size % page_size() == 0);
    // Refuse sizes the address space cannot hold instead of overflowing.
    if size == 0 || size > isize::MAX as usize - align {
        return None;
    }
    backend::map_aligned(size, align)
}

/// Gives a mapping made by [`map_aligned`] back to the OS.
///
/// # Safety
///
/// `ptr`, `size` and `align` are exactly those of one live mapping, or (on
/// backends where [`CAN_UNMAP_PART`] is true) a page-aligned part of one, and
/// nothing uses that memory any more.
pub(crate) unsafe fn unmap(ptr: NonNull<u8>, size: usize, align: usize) {
    // SAFETY: forwarded from the caller.
    unsafe { backend::unmap(ptr, size, align) }
}

/// Whether a page-aligned part of a mapping can be unmapped on its own.
pub(crate) const CAN_UNMAP_PART: bool = backend::CAN_UNMAP_PART;

/// Tells the OS the contents of these pages are no longer needed: their
/// physical memory can be reclaimed, and they read as zero (or their old
/// contents) afterwards. Returns whether the OS accepted.
///
/// # Safety
///
/// The range is page aligned and inside one live mapping that nobody reads
/// for its old contents.
pub(crate) unsafe fn purge(ptr: NonNull<u8>, size: usize) -> bool {
    // SAFETY: forwarded from the caller.
    unsafe { backend::purge(ptr, size) }
}

/// Milliseconds on a monotonic clock (for purge delays). Reading it does
/// not allocate.
pub(crate) fn now_ms() -> u64 {
    backend::now_ms()
}

/// Grows or shrinks the mapping at `ptr` from `old_size` to `new_size` bytes
/// without moving it, where the OS can (`mremap` on Linux). Returns whether
/// it did; on `false` nothing changed.
///
/// # Safety
///
/// `ptr`/`old_size` describe a whole live mapping (after any trimming) whose
/// owner tracks its size.
pub(crate) unsafe fn remap_in_place(ptr: NonNull<u8>, old_size: usize, new_size: usize) -> bool {
    // SAFETY: forwarded from the caller.
    unsafe { backend::remap_in_place(ptr, old_size, new_size) }
}

/// Whether [`remap_move`] can ever succeed (Linux); elsewhere a huge block
/// that cannot grow in place is copied.
pub(crate) const CAN_MOVE_MAPPING: bool = cfg!(all(
    any(target_os = "linux", target_os = "android"),
    not(miri)
));

/// Grows the mapping at `ptr` from `old_size` to `new_size` bytes by moving
/// it to a fresh address `start` with `(start + phase) % align == 0`,
/// without copying its contents (`mremap(MREMAP_MAYMOVE | MREMAP_FIXED)`
/// into an aligned reservation on Linux: the kernel moves page-table
/// entries, resident pages stay resident). Returns the new start; the old
/// range is then gone. On `None` nothing changed; always `None` where
/// [`CAN_MOVE_MAPPING`] is false.
///
/// # Safety
///
/// `ptr`/`old_size` describe a whole live mapping (one kernel mapping, as
/// [`map_aligned`] made it or [`remap_in_place`]/[`remap_move`] resized it)
/// whose owner tracks its address and size and lets nobody use the old
/// range once this returned `Some`; `new_size > old_size`, both multiples
/// of [`page_size`]; `align` a power of two at least [`page_size`];
/// `phase < align`, a multiple of [`page_size`].
pub(crate) unsafe fn remap_move(
    ptr: NonNull<u8>,
    old_size: usize,
    new_size: usize,
    align: usize,
    phase: usize,
) -> Option<NonNull<u8>> {
    if new_size > isize::MAX as usize - align {
        return None;
    }
    #[cfg(all(any(target_os = "linux", target_os = "android"), not(miri)))]
    // SAFETY: forwarded from the caller.
    return unsafe { backend::remap_move(ptr, old_size, new_size, align, phase) };
    #[cfg(not(all(any(target_os = "linux", target_os = "android"), not(miri))))]
    {
        let _ = (ptr, old_size, phase);
        None
    }
}

/// Writes `bytes` to the standard error stream, without allocating.
pub(crate) fn write_stderr(bytes: &[u8]) {
    backend::write_stderr(bytes)
}

/// Ends the process abnormally (SIGABRT on Unix).
pub(crate) fn abort() -> ! {
    backend::abort()
}

/// Makes pages inaccessible (guard pages in the secure build). Returns
/// whether the OS accepted.
///
/// # Safety
///
/// The range is page aligned, inside one live mapping, and nothing will
/// access it until it is unmapped.
pub(crate) unsafe fn protect_none(ptr: NonNull<u8>, size: usize) -> bool {
    // SAFETY: forwarded from the caller.
    unsafe { backend::protect_none(ptr, size) }
}

/// Registers process-wide fork handlers (`pthread_atfork`) where the OS
/// has `fork`; elsewhere (Windows, Miri) does nothing. Returns whether the
/// handlers are in place (or not needed).
pub(crate) fn register_fork_handlers(
    prepare: extern "C" fn(),
    parent: extern "C" fn(),
    child: extern "C" fn(),
) -> bool {
    backend::register_fork_handlers(prepare, parent, child)
}

/// Whether new segments ask for transparent huge pages (process-wide; see
/// [`crate::Rulloc::set_huge_pages`]).
static HUGE_PAGES: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(true);

/// Turns [`advise_huge_pages`] on or off for mappings made from now on.
pub(crate) fn set_huge_pages(enabled: bool) {
    HUGE_PAGES.store(enabled, Ordering::Relaxed);
}

/// The size of a transparent huge page where [`advise_huge_pages`] asks for
/// them (Linux with 4 KiB pages: a PMD maps 2 MiB); 0 elsewhere.
const HUGE_PAGE_SIZE: usize = if backend::ADVISES_HUGE_PAGES {
    2 << 20
} else {
    0
};

/// The granule a mapping made from now on is best sized in: a transparent
/// huge page while they are asked for (only whole, aligned 2 MiB pieces of
/// a mapping can be backed by one; a tail beyond them faults in 4 KiB at a
/// time), the page size otherwise (huge pages turned off, other systems,
/// or pages larger than 4 KiB, where a huge page is 32 MiB or more).
pub(crate) fn huge_page_granule() -> usize {
    let page = page_size();
    if HUGE_PAGE_SIZE != 0 && page == 4096 && HUGE_PAGES.load(Ordering::Relaxed) {
        HUGE_PAGE_SIZE
    } else {
        page
    }
}

/// Asks for transparent huge pages on a fresh mapping (Linux), unless they
/// were turned off; advisory.
///
/// # Safety
///
/// `ptr`/`size` lie inside one live mapping.
pub(crate) unsafe fn advise_huge_pages(ptr: NonNull<u8>, size: usize) {
    if HUGE_PAGES.load(Ordering::Relaxed) {
        // SAFETY: forwarded from the caller.
        unsafe { backend::advise_huge_pages(ptr, size) }
    }
}
