//! `mmap` backend for Unix systems.
//!
//! Aligned mappings are made by over-mapping `size + align - page` bytes and
//! trimming the misaligned head and the unused tail with `munmap`, so the
//! result is exactly `size` bytes and no address space is wasted.

use core::ptr::{self, NonNull};

pub(crate) const CAN_UNMAP_PART: bool = true;

pub(crate) fn os_page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 {
        size as usize
    } else {
        4096
    }
}

/// One anonymous private read-write mapping, or `None`.
fn map(size: usize) -> Option<NonNull<u8>> {
    // SAFETY: an anonymous mapping at an address of the kernel's choosing
    // touches no existing memory.
    let ptr = unsafe {
        libc::mmap(
            ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        None
    } else {
        NonNull::new(ptr.cast())
    }
}

pub(crate) fn map_aligned(size: usize, align: usize) -> Option<NonNull<u8>> {
    // The kernel's page, not a simulated larger one: it is what `mmap`
    // aligns its results to, so the padding must be sized by it.
    let page = os_page_size();
    if align <= page {
        return map(size);
    }
    let padded = size.checked_add(align - page)?;
    let raw = map(padded)?;
    let head = raw.as_ptr().align_offset(align);
    let tail = padded - head - size;
    // SAFETY: head and tail are page-aligned pieces of the mapping we just
    // made and nobody else knows about.
    unsafe {
        if head > 0 {
            libc::munmap(raw.as_ptr().cast(), head);
        }
        if tail > 0 {
            libc::munmap(raw.as_ptr().add(head + size).cast(), tail);
        }
        Some(NonNull::new_unchecked(raw.as_ptr().add(head)))
    }
}

pub(crate) unsafe fn unmap(ptr: NonNull<u8>, size: usize, _align: usize) {
    // SAFETY: the caller passes a live mapping (or a page-aligned part).
    unsafe { libc::munmap(ptr.as_ptr().cast(), size) };
}

pub(crate) unsafe fn purge(ptr: NonNull<u8>, size: usize) -> bool {
    // SAFETY: the caller passes page-aligned pages of a live mapping whose
    // contents are dead; MADV_DONTNEED only drops their physical memory.
    unsafe { libc::madvise(ptr.as_ptr().cast(), size, libc::MADV_DONTNEED) == 0 }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) unsafe fn remap_in_place(ptr: NonNull<u8>, old_size: usize, new_size: usize) -> bool {
    // SAFETY: flags 0 forbid moving: the kernel either resizes the mapping
    // where it is or fails and leaves it untouched.
    let result = unsafe { libc::mremap(ptr.as_ptr().cast(), old_size, new_size, 0) };
    result != libc::MAP_FAILED
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub(crate) unsafe fn remap_in_place(ptr: NonNull<u8>, old_size: usize, new_size: usize) -> bool {
    if new_size < old_size {
        // Shrinking is an munmap of the tail everywhere.
        // SAFETY: the tail is a page-aligned part of the caller's mapping.
        unsafe { libc::munmap(ptr.as_ptr().add(new_size).cast(), old_size - new_size) == 0 }
    } else {
        false
    }
}

/// Moves the whole mapping `ptr`/`old_size` to a fresh place where it has
/// `new_size > old_size` bytes and `(start + phase) % align == 0`, moving
/// page-table entries rather than bytes: reserve `new_size + align - page`
/// bytes of `PROT_NONE` address space, `mremap(MREMAP_MAYMOVE |
/// MREMAP_FIXED)` the mapping onto the aligned point inside it (the kernel
/// unmaps the reservation under it first), then unmap the reservation's
/// unused head and tail. Four system calls whatever the size.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub(crate) unsafe fn remap_move(
    ptr: NonNull<u8>,
    old_size: usize,
    new_size: usize,
    align: usize,
    phase: usize,
) -> Option<NonNull<u8>> {
    let page = os_page_size();
    debug_assert!(align.is_power_of_two() && align >= page && phase < align);
    debug_assert!(new_size > old_size && phase % page == 0);
    let padded = new_size.checked_add(align - page)?;
    // SAFETY: a fresh inaccessible mapping at an address of the kernel's
    // choosing touches no existing memory; NORESERVE: nothing is committed.
    let raw = unsafe {
        libc::mmap(
            ptr::null_mut(),
            padded,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if raw == libc::MAP_FAILED {
        return None;
    }
    let raw = raw.cast::<u8>();
    // The first point at or after `raw` with `(point + phase) % align == 0`:
    // `raw` and `phase` are page aligned, so it is at most `align - page`
    // bytes in and `new_size` bytes from it still lie in the reservation.
    let head = (raw.addr() + phase).next_multiple_of(align) - phase - raw.addr();
    let target = raw.wrapping_add(head);
    // SAFETY: the caller passes a whole live mapping it owns; the target
    // range lies in our reservation, which nobody else knows about, and
    // does not overlap the old mapping (both are live and distinct). On
    // failure, a growing `mremap` leaves the old mapping as it was.
    let moved = unsafe {
        libc::mremap(
            ptr.as_ptr().cast(),
            old_size,
            new_size,
            libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
            target,
        )
    };
    if moved == libc::MAP_FAILED {
        // SAFETY: the whole reservation is still ours and unused.
        unsafe { libc::munmap(raw.cast(), padded) };
        return None;
    }
    debug_assert_eq!(moved.cast::<u8>(), target);
    let tail = padded - head - new_size;
    // SAFETY: the head and tail of the reservation around the moved
    // mapping: page aligned, ours, unused.
    unsafe {
        if head > 0 {
            libc::munmap(raw.cast(), head);
        }
        if tail > 0 {
            libc::munmap(target.add(new_size).cast(), tail);
        }
    }
    NonNull::new(moved.cast())
}

/// The clock purge delays are measured on. Linux has a coarse monotonic
/// clock (the last timer tick, 1 to 4 ms old), which the vDSO reads from
/// memory; the precise one reads the CPU's time-stamp counter, which some
/// virtual machines make expensive: on this project's 2-core VM it was 12 %
/// of `larson`'s time, called on allocation slow paths. Purge delays are
/// milliseconds to seconds: a tick's resolution is plenty.
#[cfg(any(target_os = "linux", target_os = "android"))]
const PURGE_CLOCK: libc::clockid_t = libc::CLOCK_MONOTONIC_COARSE;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const PURGE_CLOCK: libc::clockid_t = libc::CLOCK_MONOTONIC;

pub(crate) fn now_ms() -> u64 {
    let mut time = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `time` is a valid out-pointer; the clock always exists.
    unsafe { libc::clock_gettime(PURGE_CLOCK, &mut time) };
    time.tv_sec as u64 * 1000 + time.tv_nsec as u64 / 1_000_000
}

pub(crate) fn write_stderr(bytes: &[u8]) {
    let mut rest = bytes;
    while !rest.is_empty() {
        // SAFETY: writing initialised bytes to fd 2.
        let written = unsafe { libc::write(2, rest.as_ptr().cast(), rest.len()) };
        if written <= 0 {
            return;
        }
        rest = &rest[written as usize..];
    }
}

pub(crate) fn abort() -> ! {
    // SAFETY: no preconditions.
    unsafe { libc::abort() }
}

pub(crate) unsafe fn protect_none(ptr: NonNull<u8>, size: usize) -> bool {
    // SAFETY: the caller passes unused, page-aligned pages of a live mapping.
    unsafe { libc::mprotect(ptr.as_ptr().cast(), size, libc::PROT_NONE) == 0 }
}

pub(crate) fn register_fork_handlers(
    prepare: extern "C" fn(),
    parent: extern "C" fn(),
    child: extern "C" fn(),
) -> bool {
    // SAFETY: the handlers are plain functions that live as long as the
    // process (the crate is never unloaded while an instance lives).
    unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) == 0 }
}

/// Whether [`advise_huge_pages`] asks for anything.
pub(crate) const ADVISES_HUGE_PAGES: bool = cfg!(any(target_os = "linux", target_os = "android"));

/// Asks the kernel to back a mapping with transparent huge pages where it
/// can (Linux, `madvise(MADV_HUGEPAGE)`; with THP set to `madvise`, the
/// common default, nothing else gets them). Advisory: failure is ignored.
///
/// # Safety
///
/// `ptr`/`size` lie inside one live mapping.
pub(crate) unsafe fn advise_huge_pages(ptr: NonNull<u8>, size: usize) {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    // SAFETY: advice only; the range is a live mapping (caller).
    unsafe {
        libc::madvise(ptr.as_ptr().cast(), size, libc::MADV_HUGEPAGE);
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = (ptr, size);
}
