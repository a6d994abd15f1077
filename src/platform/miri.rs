//! Backend for Miri: mappings are `std::alloc::System` allocations.
//!
//! Miri cannot run `mmap`, but it can check every pointer the allocator
//! computes inside an allocation it knows about. Each mapping is one
//! zeroed System allocation with the requested size and alignment, so the
//! segment arithmetic, free lists and atomics all run for real.

extern crate std;

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;
use std::alloc::System;

pub(crate) const CAN_UNMAP_PART: bool = false;

pub(crate) fn os_page_size() -> usize {
    4096
}

pub(crate) fn map_aligned(size: usize, align: usize) -> Option<NonNull<u8>> {
    let layout = Layout::from_size_align(size, align).ok()?;
    // SAFETY: the layout has a non-zero size (checked by the caller).
    NonNull::new(unsafe { System.alloc_zeroed(layout) })
}

pub(crate) unsafe fn unmap(ptr: NonNull<u8>, size: usize, align: usize) {
    // SAFETY: the caller passes a whole mapping, i.e. one System allocation
    // made with exactly this layout.
    unsafe { System.dealloc(ptr.as_ptr(), Layout::from_size_align_unchecked(size, align)) }
}

pub(crate) unsafe fn purge(ptr: NonNull<u8>, size: usize) -> bool {
    // Nothing to give back; zeroing keeps the "reads as zero" contract.
    // SAFETY: the caller passes a range inside a live mapping.
    unsafe { ptr.as_ptr().write_bytes(0, size) };
    true
}

pub(crate) unsafe fn remap_in_place(_ptr: NonNull<u8>, _old: usize, _new: usize) -> bool {
    false
}

pub(crate) fn now_ms() -> u64 {
    use std::sync::OnceLock;
    use std::time::Instant;
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

pub(crate) fn write_stderr(bytes: &[u8]) {
    use std::io::Write;
    let _ = std::io::stderr().write_all(bytes);
}

pub(crate) fn abort() -> ! {
    std::process::abort()
}

pub(crate) unsafe fn protect_none(_ptr: NonNull<u8>, _size: usize) -> bool {
    // Miri reports any access that is out of bounds anyway.
    true
}

/// No `fork` here: nothing to protect.
pub(crate) fn register_fork_handlers(
    _prepare: extern "C" fn(),
    _parent: extern "C" fn(),
    _child: extern "C" fn(),
) -> bool {
    true
}

/// No transparent huge pages to ask for here.
pub(crate) const ADVISES_HUGE_PAGES: bool = false;

/// No transparent huge pages to ask for here.
pub(crate) unsafe fn advise_huge_pages(_ptr: NonNull<u8>, _size: usize) {}
