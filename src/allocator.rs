//! STUB: the public surface of Rulloc backed by `std::alloc::System`.
use core::alloc::{GlobalAlloc, Layout};
use core::ptr::{self, NonNull};
use std::alloc::System;

use allocator_api2::alloc::{AllocError, Allocator};

use crate::Stats;

/// Number of size classes in the default configuration.
pub const DEFAULT_BUCKET_COUNT: usize = 3;
/// Default size classes.
pub const DEFAULT_BUCKET_SIZES: [usize; DEFAULT_BUCKET_COUNT] = [16, 32, 64];

/// The allocator.
pub struct Rulloc<const N: usize = DEFAULT_BUCKET_COUNT> {
    sizes: [usize; N],
}

impl Rulloc {
    /// The default configuration.
    pub const fn new() -> Self {
        Self::with_bucket_sizes(DEFAULT_BUCKET_SIZES)
    }
    /// Same as [`Rulloc::new`].
    pub const fn with_default_config() -> Self {
        Self::new()
    }
}

impl Default for Rulloc {
    fn default() -> Self {
        Self::new()
    }
}

const HDR: usize = 16;

impl<const N: usize> Rulloc<N> {
    /// Custom buckets.
    pub const fn with_bucket_sizes(sizes: [usize; N]) -> Self {
        Self { sizes }
    }
    /// The configured bucket sizes.
    pub fn bucket_sizes(&self) -> &[usize; N] {
        &self.sizes
    }
    /// Allocates `size` bytes aligned to `align` (a power of two). Null on failure.
    pub fn allocate_bytes(&self, size: usize, align: usize) -> *mut u8 {
        let a = align.max(HDR);
        let Some(total) = size.checked_add(a) else { return ptr::null_mut() };
        let Ok(l) = Layout::from_size_align(total, a) else { return ptr::null_mut() };
        // SAFETY: stub
        unsafe {
            let p = System.alloc(l);
            if p.is_null() {
                return p;
            }
            let u = p.add(a);
            (u as *mut usize).sub(1).write(size);
            (u as *mut usize).sub(2).write(a);
            u
        }
    }
    /// Zeroed [`Rulloc::allocate_bytes`].
    pub fn allocate_zeroed_bytes(&self, size: usize, align: usize) -> *mut u8 {
        let p = self.allocate_bytes(size, align);
        if !p.is_null() {
            // SAFETY: stub
            unsafe { p.write_bytes(0, size) };
        }
        p
    }
    /// Frees a block from this allocator.
    ///
    /// # Safety
    /// `ptr` came from this allocator and is live.
    pub unsafe fn deallocate_bytes(&self, ptr: *mut u8) {
        // SAFETY: stub
        unsafe {
            let size = (ptr as *mut usize).sub(1).read();
            let a = (ptr as *mut usize).sub(2).read();
            System.dealloc(ptr.sub(a), Layout::from_size_align_unchecked(size + a, a));
        }
    }
    /// Resizes; null on failure with the old block intact.
    ///
    /// # Safety
    /// `ptr` came from this allocator and is live.
    pub unsafe fn reallocate_bytes(&self, ptr: *mut u8, new_size: usize, align: usize) -> *mut u8 {
        let n = self.allocate_bytes(new_size, align);
        if !n.is_null() {
            // SAFETY: stub
            unsafe {
                let old = self.usable_size(ptr);
                ptr::copy_nonoverlapping(ptr, n, old.min(new_size));
                self.deallocate_bytes(ptr);
            }
        }
        n
    }
    /// Usable size of a live block.
    ///
    /// # Safety
    /// `ptr` came from this allocator and is live.
    pub unsafe fn usable_size(&self, ptr: *const u8) -> usize {
        // SAFETY: stub
        unsafe { (ptr as *const usize).sub(1).read() }
    }
    /// Counters.
    pub fn stats(&self) -> Stats {
        Stats::default()
    }
    /// Returns free memory to the OS now.
    pub fn collect(&self) {}
    /// Call before `fork()` (takes every internal lock).
    pub fn fork_prepare(&self) {}
    /// Call in the parent after `fork()`.
    pub fn fork_parent(&self) {}
    /// Call in the child after `fork()`.
    pub fn fork_child(&self) {}
}

// SAFETY: stub
unsafe impl<const N: usize> GlobalAlloc for Rulloc<N> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.allocate_bytes(layout.size(), layout.align())
    }
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: stub
        unsafe { self.deallocate_bytes(ptr) }
    }
}

// SAFETY: stub
unsafe impl<const N: usize> Allocator for Rulloc<N> {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        let p = NonNull::new(self.allocate_bytes(layout.size(), layout.align())).ok_or(AllocError)?;
        Ok(NonNull::slice_from_raw_parts(p, layout.size()))
    }
    unsafe fn deallocate(&self, ptr: NonNull<u8>, _layout: Layout) {
        // SAFETY: stub
        unsafe { self.deallocate_bytes(ptr.as_ptr()) }
    }
}
