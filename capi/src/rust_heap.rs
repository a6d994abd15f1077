//! Where this library's *own* Rust allocations go: glibc.
//!
//! Under `LD_PRELOAD`, every `malloc` in the process resolves to ours, and
//! Rust's default global allocator (`std::alloc::System`) is just a call to
//! `malloc`. So anything std allocates inside librulloc — above all the
//! panic machinery formatting its message if the core ever panicked in the
//! middle of an operation — would re-enter the allocator while it is in an
//! inconsistent state. This module makes glibc's own allocator
//! (`__libc_malloc` & co., which glibc exports precisely so that
//! interposers can reach it) the global allocator of the library, so Rust
//! code here never re-enters Rulloc:
//!
//! ```text
//!   C program ─malloc─▶ librulloc ─▶ ALLOC (the core, maps its own memory)
//!                          │
//!   std inside librulloc ──┴─Box/Vec/String─▶ RustHeap ─▶ __libc_malloc (glibc)
//! ```
//!
//! It does not (and cannot) change what *C* code calls: glibc itself calls
//! `malloc`/`calloc` for its own needs, sometimes while the core is in the
//! middle of an operation — e.g. `pthread_setspecific` allocates a
//! second-level array for pthread keys numbered 32 and above. Such calls
//! reach our `malloc`, and the core must handle them (it does: a thread
//! being bound to a heap allocates from the shared path). Serving them from
//! glibc instead would be wrong: glibc frees those blocks later with `free`,
//! which would hand a glibc pointer to the core.
//!
//! The core must never allocate through `System` or `malloc` for its own
//! use: that would recurse without end.

use core::alloc::{GlobalAlloc, Layout};
use core::ffi::c_void;

extern "C" {
    fn __libc_malloc(size: usize) -> *mut c_void;
    fn __libc_calloc(count: usize, size: usize) -> *mut c_void;
    fn __libc_memalign(align: usize, size: usize) -> *mut c_void;
    fn __libc_realloc(ptr: *mut c_void, size: usize) -> *mut c_void;
    fn __libc_free(ptr: *mut c_void);
}

/// glibc's `malloc` alignment on 64-bit targets: smaller alignments need no
/// `memalign`.
const GLIBC_MALLOC_ALIGN: usize = 16;

/// The global allocator of librulloc's Rust code: glibc's allocator.
struct RustHeap;

#[global_allocator]
static RUST_HEAP: RustHeap = RustHeap;

// SAFETY: glibc's allocator returns blocks valid for `size` bytes at the
// requested alignment (`__libc_memalign` for alignments above what
// `__libc_malloc` guarantees) or null, and `__libc_free`/`__libc_realloc`
// accept exactly the blocks it returned; every block below comes from it.
unsafe impl GlobalAlloc for RustHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: plain calls into glibc's allocator; `layout.align()` is a
        // power of two as `__libc_memalign` requires.
        unsafe {
            if layout.align() <= GLIBC_MALLOC_ALIGN {
                __libc_malloc(layout.size()).cast()
            } else {
                __libc_memalign(layout.align(), layout.size()).cast()
            }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= GLIBC_MALLOC_ALIGN {
            // SAFETY: plain call into glibc's allocator.
            unsafe { __libc_calloc(1, layout.size()).cast() }
        } else {
            // SAFETY: `alloc` returns null or a block of `layout.size()`
            // writable bytes.
            unsafe {
                let block = self.alloc(layout);
                if !block.is_null() {
                    block.write_bytes(0, layout.size());
                }
                block
            }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from `alloc`/`alloc_zeroed`/`realloc` above,
        // i.e. from glibc (GlobalAlloc's contract).
        unsafe { __libc_free(ptr.cast()) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.align() <= GLIBC_MALLOC_ALIGN {
            // SAFETY: `ptr` is a live glibc block (GlobalAlloc's contract);
            // `__libc_realloc` keeps the 16-byte alignment.
            unsafe { __libc_realloc(ptr.cast(), new_size).cast() }
        } else {
            // SAFETY: GlobalAlloc's contract: `ptr` is live with `layout`,
            // `new_size` is valid for `layout.align()`; the new block is
            // disjoint from the old one.
            unsafe {
                let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
                let block = self.alloc(new_layout);
                if !block.is_null() {
                    core::ptr::copy_nonoverlapping(ptr, block, layout.size().min(new_size));
                    self.dealloc(ptr, layout);
                }
                block
            }
        }
    }
}
