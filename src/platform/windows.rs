//! `VirtualAlloc` backend for Windows.
//!
//! A reservation can only be released whole, so an aligned mapping is made
//! by reserving `size + align`, releasing it, and reserving again exactly at
//! the aligned address inside the hole. Another thread may take the hole in
//! between; then we try again a bounded number of times.

use core::ffi::c_void;
use core::ptr::{self, NonNull};

use windows_sys::Win32::System::Memory::{
    VirtualAlloc, VirtualFree, MEM_COMMIT, MEM_DECOMMIT, MEM_RELEASE, MEM_RESERVE, PAGE_READWRITE,
};
use windows_sys::Win32::System::SystemInformation::{GetSystemInfo, GetTickCount64, SYSTEM_INFO};

pub(crate) const CAN_UNMAP_PART: bool = false;

/// How often to retry when another thread takes the aligned hole.
const ALIGNED_MAP_ATTEMPTS: usize = 16;

pub(crate) fn os_page_size() -> usize {
    // SAFETY: SYSTEM_INFO is plain data; GetSystemInfo fills it.
    unsafe {
        let mut info: SYSTEM_INFO = core::mem::zeroed();
        GetSystemInfo(&mut info);
        info.dwPageSize as usize
    }
}

fn reserve_commit(at: *mut c_void, size: usize) -> *mut u8 {
    // SAFETY: reserving and committing fresh address space touches nothing
    // that exists.
    unsafe { VirtualAlloc(at, size, MEM_RESERVE | MEM_COMMIT, PAGE_READWRITE).cast() }
}

pub(crate) fn map_aligned(size: usize, align: usize) -> Option<NonNull<u8>> {
    // Allocation granularity is 64 KiB: smaller alignments come for free.
    if align <= 64 * 1024 {
        return NonNull::new(reserve_commit(ptr::null_mut(), size));
    }
    let padded = size.checked_add(align)?;
    for _ in 0..ALIGNED_MAP_ATTEMPTS {
        // SAFETY: reserving fresh address space touches nothing.
        let probe = unsafe { VirtualAlloc(ptr::null(), padded, MEM_RESERVE, PAGE_READWRITE) };
        if probe.is_null() {
            return None;
        }
        let aligned = probe
            .cast::<u8>()
            .wrapping_add(probe.cast::<u8>().align_offset(align));
        // SAFETY: `probe` is the reservation we just made.
        unsafe { VirtualFree(probe, 0, MEM_RELEASE) };
        let ptr = reserve_commit(aligned.cast(), size);
        if let Some(ptr) = NonNull::new(ptr) {
            return Some(ptr);
        }
    }
    None
}

pub(crate) unsafe fn unmap(ptr: NonNull<u8>, _size: usize, _align: usize) {
    // SAFETY: the caller passes the base of a whole live reservation.
    unsafe { VirtualFree(ptr.as_ptr().cast(), 0, MEM_RELEASE) };
}

pub(crate) unsafe fn purge(ptr: NonNull<u8>, size: usize) -> bool {
    // SAFETY: decommitting then recommitting page-aligned pages of a live
    // reservation drops their contents and physical memory; they read as
    // zero afterwards.
    unsafe {
        VirtualFree(ptr.as_ptr().cast(), size, MEM_DECOMMIT) != 0
            && !VirtualAlloc(ptr.as_ptr().cast(), size, MEM_COMMIT, PAGE_READWRITE).is_null()
    }
}

pub(crate) unsafe fn remap_in_place(_ptr: NonNull<u8>, _old: usize, _new: usize) -> bool {
    false
}

pub(crate) fn now_ms() -> u64 {
    // SAFETY: no preconditions.
    unsafe { GetTickCount64() }
}

pub(crate) fn write_stderr(bytes: &[u8]) {
    use windows_sys::Win32::Foundation::{BOOL, HANDLE};
    use windows_sys::Win32::System::Console::{GetStdHandle, STD_ERROR_HANDLE};
    // Declared here: windows-sys only offers `WriteFile` with its
    // `Win32_System_IO` feature (for `OVERLAPPED`, which we never pass).
    #[link(name = "kernel32")]
    extern "system" {
        fn WriteFile(
            file: HANDLE,
            buffer: *const u8,
            length: u32,
            written: *mut u32,
            overlapped: *mut c_void,
        ) -> BOOL;
    }
    // SAFETY: writing initialised bytes to the process's stderr handle.
    unsafe {
        let handle = GetStdHandle(STD_ERROR_HANDLE);
        let mut written = 0u32;
        WriteFile(
            handle,
            bytes.as_ptr(),
            bytes.len() as u32,
            &mut written,
            core::ptr::null_mut(),
        );
    }
}

pub(crate) fn abort() -> ! {
    extern "C" {
        fn abort() -> !;
    }
    // SAFETY: the C runtime's abort has no preconditions.
    unsafe { abort() }
}

pub(crate) unsafe fn protect_none(ptr: NonNull<u8>, size: usize) -> bool {
    use windows_sys::Win32::System::Memory::{VirtualProtect, PAGE_NOACCESS};
    let mut old = 0u32;
    // SAFETY: the caller passes unused, page-aligned pages of a live mapping.
    unsafe { VirtualProtect(ptr.as_ptr().cast(), size, PAGE_NOACCESS, &mut old) != 0 }
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
