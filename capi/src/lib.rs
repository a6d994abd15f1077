//! # librulloc: Rulloc as a drop-in `malloc`
//!
//! This crate wraps one global [`rulloc::Rulloc`] in the C allocation API, so
//! that any dynamically linked program can run on Rulloc without being
//! recompiled (`LD_PRELOAD`), and C/C++ programs can link it statically.
//!
//! ```text
//!   program ──malloc/free/...──▶ librulloc.so ──allocate_bytes/...──▶ ALLOC: rulloc::Rulloc
//!      │                            │  (this crate: C semantics,       (segments, regions,
//!   libc, libstdc++, ... ───────────┘   errno, fork, exit report)       buckets: src/)
//! ```
//!
//! ## Build
//!
//! ```text
//! cargo build --release -p rulloc-capi
//!   -> target/release/librulloc.so   (LD_PRELOAD or -lrulloc)
//!   -> target/release/librulloc.a    (static; link with the libraries printed by
//!                                     `cargo rustc --release -p rulloc-capi --crate-type staticlib -- --print native-static-libs`,
//!                                     on glibc: -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc)
//! ```
//!
//! ## Use
//!
//! ```text
//! LD_PRELOAD=target/release/librulloc.so python3 script.py
//! LD_PRELOAD=target/release/librulloc.so RULLOC_SHOW_STATS=1 git gc   # report on stderr at exit
//! ```
//!
//! `RULLOC_SHOW_STATS` set to anything but empty or `0` prints the allocator's
//! [`rulloc::Stats`] report to stderr when the process exits normally
//! (`exit`/return from `main`; not `_exit` or a fatal signal).
//!
//! ## Exported functions and their semantics
//!
//! Exactly these 13 symbols are exported, with glibc's (2.38) behaviour on
//! x86_64/Linux. `A(n)` is the alignment every plain allocation of `n` bytes
//! gets: **16** (glibc's `MALLOC_ALIGNMENT`) for `n > 8`, **8** for
//! `n <= 8` — no object of 8 bytes or fewer can require more (C11 DR 445 /
//! C17 "fundamental alignment of any type that fits"); mimalloc, jemalloc and
//! tcmalloc do the same, and it lets an 8-byte size class exist.
//!
//! | function | success | failure |
//! |----------|---------|---------|
//! | `malloc(n)` | `A(n)`-aligned block; `malloc(0)` is a unique pointer | `NULL`, `errno = ENOMEM` (incl. `n > PTRDIFF_MAX`) |
//! | `free(p)`, `cfree(p)` | `free(NULL)` does nothing | — |
//! | `calloc(n, m)` | zeroed block of `n*m` bytes | `NULL`, `ENOMEM`, also when `n*m` overflows |
//! | `realloc(p, n)` | `realloc(NULL, n)` = `malloc(n)`; `realloc(p, 0)` frees `p` and returns `NULL` (glibc) | `NULL`, `ENOMEM`, `p` untouched and still valid |
//! | `reallocarray(p, n, m)` | `realloc(p, n*m)` | as `realloc`; `ENOMEM` if `n*m` overflows |
//! | `posix_memalign(&q, a, n)` | returns 0, `q` aligned to `a` | returns `EINVAL` if `a` is not a power-of-two multiple of `sizeof(void*)` (`errno` untouched); returns `ENOMEM` (and sets `errno = ENOMEM` as glibc does); `q` untouched |
//! | `aligned_alloc(a, n)` | aligned to `a`; `n` need not be a multiple of `a` (C17) | `NULL`, `EINVAL` if `a` is not a power of two (incl. 0, glibc >= 2.38); `NULL`, `ENOMEM` |
//! | `memalign(a, n)` | aligned to `a` rounded up to a power of two (`a = 0` → `malloc`) | `NULL`, `EINVAL` if `a > SIZE_MAX/2+1`; `NULL`, `ENOMEM` |
//! | `valloc(n)` | page-aligned (`sysconf(_SC_PAGESIZE)`) | `NULL`, `ENOMEM` |
//! | `pvalloc(n)` | page-aligned, `n` rounded up to a page multiple | `NULL`, `ENOMEM` (incl. when rounding overflows) |
//! | `malloc_usable_size(p)` | bytes usable at `p` (>= requested); 0 for `NULL` | — |
//! | `malloc_trim(pad)` | gives free memory back to the OS ([`rulloc::Rulloc::collect`]); returns 1 if the mapped total fell, else 0 | — |
//!
//! Every allocating function's alignment is at least `A(n)`. The aligned
//! functions accept any power-of-two alignment up to what the core supports
//! (1 GiB and beyond); requests where `size + alignment > PTRDIFF_MAX` fail
//! with `ENOMEM` without reaching the core.
//!
//! ## What is specific to a shared library
//!
//! Rulloc's core is the same code as in a Rust program, but a `cdylib`
//! reaches it differently; three things keep the C entry path as short as
//! the core's own (callgrind, a C loop of `malloc(32)`/`free`: 145
//! instructions per pair before them, 93 after, the loop not counted):
//!
//! * **Thread-local storage model.** Rust's `thread_local!` in a shared
//!   library is general-dynamic: every access calls `__tls_get_addr`
//!   (11 instructions, twice per pair). The core's `initial-exec-tls`
//!   feature, which this crate turns on, keeps the thread's heap binding in
//!   an initial-exec TLS slot declared in assembly (`src/binding.rs`): two
//!   instructions. The library gets `DF_STATIC_TLS`: preloaded or linked,
//!   its 24 bytes are part of every thread's static TLS block; `dlopen`ed
//!   later, glibc takes them from its static TLS surplus and fails the
//!   `dlopen` if that is exhausted (as for mimalloc's and jemalloc's
//!   libraries). `tests/c/dlopen.c` loads it into a running multithreaded
//!   process.
//! * **`malloc`'s alignment.** C asks for 16 bytes above 8, and the default
//!   size classes include 24, 40 and 56: the core keeps a second lookup
//!   table for 16-byte alignment (`src/bucket.rs`), where every `malloc` of
//!   more than 8 bytes used to walk the classes with a 64-bit division.
//! * **One inlined path for `malloc`, `calloc` and `realloc(NULL, n)`**,
//!   with a single size check against a constant (`exports`'s
//!   `allocate_plain`); the aligned functions share the general one.
//!
//! Calls between the exports (`realloc(p, 0)` → `free`) go through the GOT
//! so that an interposed `free` is honoured, as glibc does. The library is
//! linked with `-z nodelete` (`build.rs`): after it served an allocation,
//! its pthread key destructor and `pthread_atfork` handlers are registered
//! and its blocks live in its mappings, so `dlclose` must not unmap it.
//!
//! ## Tests
//!
//! `cargo test -p rulloc-capi` (or `cargo test` at the workspace root)
//! builds the release library itself (`cargo build --release -p
//! rulloc-capi`, wherever cargo puts its target directory; or set
//! `RULLOC_CAPI_LIB=/path/to/librulloc.so` to test a prebuilt one), compiles
//! the C programs in `tests/c/` with the system's `cc`, and runs them and
//! real programs (python3, perl, git) under `LD_PRELOAD`. See
//! `tests/common/mod.rs`.
//!
//! ## Robustness rules for this crate
//!
//! The dynamic loader calls `malloc` before `main`, before Rust's runtime is
//! set up, from any thread, and from inside `fork`. So, in every exported
//! function:
//!
//! * **Nothing can panic**: no `unwrap`, no slice indexing, only checked
//!   arithmetic. A panic could not unwind through `extern "C"` anyway (Rust
//!   aborts), but reporting it would allocate. Impossible states end in
//!   `sys::fatal`, which writes one line with `write(2)` and `abort()`s.
//! * **No std runtime**: no `println!`, no `std::env`, no locks or
//!   allocations of our own; the environment is read once with
//!   `libc::getenv` from the constructor (`init.rs`).
//! * **No recursion from Rust code**: the library's own Rust allocations
//!   (std's panic machinery, should the core ever panic) go to glibc's
//!   allocator through a `#[global_allocator]` (`rust_heap.rs`), never back
//!   into Rulloc. Re-entry from *C* code running inside a core operation
//!   (glibc's `pthread_setspecific` calling `calloc` while the core binds a
//!   thread to a heap) reaches our `malloc` and is the core's to handle. The
//!   core itself never calls `malloc`: it maps its memory. The crate is
//!   `#![no_builtins]` so that LLVM never treats our own `malloc`, `calloc`
//!   or `free` as the C library's (e.g. turning an allocation plus a
//!   `memset` inside `calloc` into a call to `calloc`).
//! * **Fork safety**: the core registers `pthread_atfork` handlers on the
//!   first allocation (they call [`rulloc::Rulloc::fork_prepare`] /
//!   `fork_parent` / `fork_child` for every live instance), so a child
//!   forked while other threads allocate gets a consistent allocator.
#![cfg_attr(target_os = "linux", no_builtins)]

#[cfg(target_os = "linux")]
mod init;
#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod rust_heap;
#[cfg(target_os = "linux")]
mod sys;

#[cfg(target_os = "linux")]
pub use exports::*;

/// The C API itself. Only Linux is supported (glibc is the reference for the
/// semantics, `LD_PRELOAD` is the delivery); elsewhere the crate is empty so
/// that `cargo build --workspace` still works.
#[cfg(target_os = "linux")]
mod exports {
    use core::ffi::{c_int, c_void};
    use core::ptr;

    use crate::sys;

    /// The one allocator behind every exported function.
    pub(crate) static ALLOC: rulloc::Rulloc = rulloc::Rulloc::new();

    /// Makes the dynamic loader (or the C runtime of a static executable)
    /// run [`crate::init::init`] at load time: `pthread_atfork` and the
    /// `RULLOC_SHOW_STATS` report. It sits in this module, beside `malloc`,
    /// so that a static link that needs `malloc` also gets it.
    #[used]
    #[link_section = ".init_array"]
    static INIT: extern "C" fn() = crate::init::init;

    /// glibc's `MALLOC_ALIGNMENT` on x86_64: every block of more than
    /// [`SMALL_SIZE`] bytes is aligned to this.
    const MALLOC_ALIGN: usize = 16;

    /// Blocks of at most this many bytes are only [`SMALL_ALIGN`]-aligned: no
    /// C object that fits in them can need more.
    const SMALL_SIZE: usize = 8;

    /// Alignment of blocks of at most [`SMALL_SIZE`] bytes.
    const SMALL_ALIGN: usize = 8;

    /// Largest `size + alignment` ever passed to the core. glibc refuses
    /// anything above `PTRDIFF_MAX`, and such a block could never be mapped.
    const MAX_REQUEST: usize = isize::MAX as usize;

    /// The alignment a plain `malloc(size)` guarantees (`A(n)` in the crate
    /// docs).
    #[inline]
    fn malloc_align(size: usize) -> usize {
        if size <= SMALL_SIZE {
            SMALL_ALIGN
        } else {
            MALLOC_ALIGN
        }
    }

    /// Whether a block of `size` bytes aligned to `align` could exist at all.
    #[inline]
    fn request_fits(size: usize, align: usize) -> bool {
        align <= MAX_REQUEST && size <= MAX_REQUEST - align
    }

    /// Null, with `errno = ENOMEM`.
    #[inline]
    fn enomem() -> *mut c_void {
        sys::set_errno(libc::ENOMEM);
        ptr::null_mut()
    }

    /// Sets `errno = ENOMEM` when `p` is null; passes `p` through.
    #[inline]
    fn enomem_if_null(p: *mut u8) -> *mut c_void {
        if p.is_null() {
            sys::set_errno(libc::ENOMEM);
        }
        p.cast()
    }

    /// `size` bytes aligned to `A(size)`, zeroed if asked: `malloc`,
    /// `calloc` and `realloc(NULL, n)`, the calls that matter for speed.
    /// Inlined into each (one call less). `malloc` goes through the core's
    /// C entry (one table load picks the bucket, no alignment or size test
    /// on the way); `calloc` checks the size first with one comparison with
    /// a constant. Sets `errno` on failure.
    #[inline(always)]
    fn allocate_plain(size: usize, zeroed: bool) -> *mut c_void {
        let p = if zeroed {
            if size > MAX_REQUEST - MALLOC_ALIGN {
                return enomem();
            }
            ALLOC.allocate_zeroed_bytes(size, malloc_align(size))
        } else {
            // The core's C entry: the same alignment rule, one table load;
            // sizes no block can have come back null.
            ALLOC.allocate_malloc(size)
        };
        enomem_if_null(p)
    }

    /// `size` bytes aligned to `max(align, A(size))`; `align` is a power of
    /// two. Sets `errno` on failure. Shared by the aligned allocations.
    #[inline]
    fn allocate_aligned(size: usize, align: usize) -> *mut c_void {
        let align = align.max(malloc_align(size));
        if !request_fits(size, align) {
            return enomem();
        }
        enomem_if_null(ALLOC.allocate_bytes(size, align))
    }

    /// Allocates `size` bytes aligned to at least 16 (8 for `size <= 8`).
    ///
    /// # Safety
    /// Always safe to call; `unsafe` only because it is the C ABI.
    #[no_mangle]
    pub unsafe extern "C" fn malloc(size: usize) -> *mut c_void {
        allocate_plain(size, false)
    }

    /// Frees a block from any function of this library; `free(NULL)` is a
    /// no-op.
    ///
    /// # Safety
    /// `ptr` is null or a live block returned by this library.
    #[no_mangle]
    pub unsafe extern "C" fn free(ptr: *mut c_void) {
        if ptr.is_null() {
            return;
        }
        // SAFETY: the caller guarantees `ptr` is a live block of ours.
        unsafe { ALLOC.deallocate_bytes(ptr.cast()) }
    }

    /// Same as [`free`]; glibc still exports it for old binaries.
    ///
    /// # Safety
    /// As [`free`].
    #[no_mangle]
    pub unsafe extern "C" fn cfree(ptr: *mut c_void) {
        // SAFETY: the caller guarantees `ptr` is null or a live block of
        // ours, which is all `free` needs.
        unsafe { free(ptr) }
    }

    /// Allocates `count * size` zeroed bytes; `ENOMEM` if the product
    /// overflows.
    ///
    /// # Safety
    /// Always safe to call; `unsafe` only because it is the C ABI.
    #[no_mangle]
    pub unsafe extern "C" fn calloc(count: usize, size: usize) -> *mut c_void {
        match count.checked_mul(size) {
            Some(total) => allocate_plain(total, true),
            None => enomem(),
        }
    }

    /// Resizes `ptr` to `size` bytes, keeping the common prefix.
    /// `realloc(NULL, n)` is `malloc(n)`; `realloc(p, 0)` frees `p` and
    /// returns null without touching `errno` (glibc's behaviour). On failure
    /// returns null with `errno = ENOMEM` and `ptr` is left intact.
    ///
    /// # Safety
    /// `ptr` is null or a live block returned by this library.
    #[no_mangle]
    pub unsafe extern "C" fn realloc(ptr: *mut c_void, size: usize) -> *mut c_void {
        if ptr.is_null() {
            return allocate_plain(size, false);
        }
        if size == 0 {
            // SAFETY: the caller guarantees `ptr` is a live block of ours.
            unsafe { free(ptr) };
            return ptr::null_mut();
        }
        let align = malloc_align(size);
        if !request_fits(size, align) {
            return enomem();
        }
        // SAFETY: the caller guarantees `ptr` is a live block of ours; `align`
        // is a power of two.
        enomem_if_null(unsafe { ALLOC.reallocate_bytes(ptr.cast(), size, align) })
    }

    /// `realloc(ptr, count * size)`, failing with `ENOMEM` (and leaving
    /// `ptr` intact) if the product overflows.
    ///
    /// # Safety
    /// As [`realloc`].
    #[no_mangle]
    pub unsafe extern "C" fn reallocarray(
        ptr: *mut c_void,
        count: usize,
        size: usize,
    ) -> *mut c_void {
        match count.checked_mul(size) {
            // SAFETY: the caller guarantees `ptr` is null or a live block of
            // ours, which is all `realloc` needs.
            Some(total) => unsafe { realloc(ptr, total) },
            None => enomem(),
        }
    }

    /// POSIX aligned allocation. Returns 0 and stores the block in
    /// `*memptr`; `EINVAL` if `alignment` is not a power-of-two multiple of
    /// `sizeof(void *)` (`errno` untouched); `ENOMEM` (and `errno = ENOMEM`)
    /// when out of memory. `*memptr` is only written on success.
    ///
    /// # Safety
    /// `memptr` is valid for a pointer-sized write.
    #[no_mangle]
    pub unsafe extern "C" fn posix_memalign(
        memptr: *mut *mut c_void,
        alignment: usize,
        size: usize,
    ) -> c_int {
        const WORD: usize = core::mem::size_of::<*mut c_void>();
        if alignment % WORD != 0 || !(alignment / WORD).is_power_of_two() {
            return libc::EINVAL;
        }
        let p = allocate_aligned(size, alignment);
        if p.is_null() {
            return libc::ENOMEM;
        }
        // SAFETY: the caller guarantees `memptr` is writable.
        unsafe { memptr.write(p) };
        0
    }

    /// C11 aligned allocation: `alignment` must be a power of two (C17 and
    /// glibc >= 2.38 reject anything else with `EINVAL`); `size` needs not be
    /// a multiple of it.
    ///
    /// # Safety
    /// Always safe to call; `unsafe` only because it is the C ABI.
    #[no_mangle]
    pub unsafe extern "C" fn aligned_alloc(alignment: usize, size: usize) -> *mut c_void {
        if !alignment.is_power_of_two() {
            sys::set_errno(libc::EINVAL);
            return ptr::null_mut();
        }
        allocate_aligned(size, alignment)
    }

    /// Obsolete aligned allocation, as glibc does it: an alignment that is
    /// not a power of two is rounded up to one (0 and 1 mean `malloc`),
    /// `EINVAL` only if it exceeds `SIZE_MAX / 2 + 1`.
    ///
    /// # Safety
    /// Always safe to call; `unsafe` only because it is the C ABI.
    #[no_mangle]
    pub unsafe extern "C" fn memalign(alignment: usize, size: usize) -> *mut c_void {
        match alignment.checked_next_power_of_two() {
            Some(align) => allocate_aligned(size, align),
            None => {
                sys::set_errno(libc::EINVAL);
                ptr::null_mut()
            }
        }
    }

    /// Page-aligned allocation (the page size comes from `sysconf`).
    ///
    /// # Safety
    /// Always safe to call; `unsafe` only because it is the C ABI.
    #[no_mangle]
    pub unsafe extern "C" fn valloc(size: usize) -> *mut c_void {
        allocate_aligned(size, sys::page_size())
    }

    /// Page-aligned allocation of `size` rounded up to a multiple of the page
    /// size; `ENOMEM` if the rounding overflows.
    ///
    /// # Safety
    /// Always safe to call; `unsafe` only because it is the C ABI.
    #[no_mangle]
    pub unsafe extern "C" fn pvalloc(size: usize) -> *mut c_void {
        let page = sys::page_size();
        match size.checked_add(page - 1) {
            Some(padded) => allocate_aligned(padded & !(page - 1), page),
            None => enomem(),
        }
    }

    /// Number of bytes usable at `ptr` (at least what was requested); 0 for
    /// `NULL`.
    ///
    /// # Safety
    /// `ptr` is null or a live block returned by this library.
    #[no_mangle]
    pub unsafe extern "C" fn malloc_usable_size(ptr: *mut c_void) -> usize {
        if ptr.is_null() {
            return 0;
        }
        // SAFETY: the caller guarantees `ptr` is a live block of ours.
        unsafe { ALLOC.usable_size(ptr.cast_const().cast()) }
    }

    /// Returns free memory to the OS. `pad` is ignored (the core decides what
    /// to keep). Returns 1 if the amount of mapped memory went down, else 0.
    ///
    /// # Safety
    /// Always safe to call; `unsafe` only because it is the C ABI.
    #[no_mangle]
    pub unsafe extern "C" fn malloc_trim(pad: usize) -> c_int {
        let _ = pad;
        let before = ALLOC.stats().bytes_mapped;
        ALLOC.collect();
        c_int::from(ALLOC.stats().bytes_mapped < before)
    }
}
