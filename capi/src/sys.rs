//! Allocation-free, panic-free helpers over libc: `errno`, the page size,
//! writing to a file descriptor, and [`fatal`].
//!
//! Everything here may run before `main`, inside `fork`, or while the
//! allocator is half-way through an operation, so it only calls
//! async-signal-safe libc functions and never allocates.

use core::ffi::c_int;
use core::sync::atomic::{AtomicUsize, Ordering};

/// Sets the calling thread's `errno`.
#[inline]
pub(crate) fn set_errno(value: c_int) {
    // SAFETY: `__errno_location` has no preconditions and returns a valid,
    // aligned pointer to the calling thread's `errno`.
    unsafe { *libc::__errno_location() = value };
}

/// The calling thread's `errno`.
#[inline]
pub(crate) fn errno() -> c_int {
    // SAFETY: `__errno_location` has no preconditions and returns a valid,
    // aligned pointer to the calling thread's `errno`.
    unsafe { *libc::__errno_location() }
}

/// Page size used when `sysconf` cannot tell (never on Linux).
const FALLBACK_PAGE_SIZE: usize = 4096;

/// The runtime page size (`sysconf(_SC_PAGESIZE)`), queried once.
pub(crate) fn page_size() -> usize {
    /// 0 until the first query; racing first queries store the same value.
    static PAGE_SIZE: AtomicUsize = AtomicUsize::new(0);
    let cached = PAGE_SIZE.load(Ordering::Relaxed);
    if cached != 0 {
        return cached;
    }
    // SAFETY: `sysconf` has no preconditions and does not allocate.
    let answer = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let page = match usize::try_from(answer) {
        Ok(page) if page.is_power_of_two() => page,
        _ => FALLBACK_PAGE_SIZE,
    };
    PAGE_SIZE.store(page, Ordering::Relaxed);
    page
}

/// Writes all of `bytes` to `fd`, retrying on `EINTR` and short writes and
/// giving up silently on any other error (there is nobody to report it to).
pub(crate) fn write_all(fd: c_int, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: `bytes` is valid for `bytes.len()` reads.
        let written = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        match usize::try_from(written) {
            Ok(0) => return,
            Ok(n) => bytes = bytes.get(n..).unwrap_or_default(),
            Err(_) if errno() == libc::EINTR => {}
            Err(_) => return,
        }
    }
}
