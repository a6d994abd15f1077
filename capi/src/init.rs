//! Process-level hooks: the load-time constructor and the
//! `RULLOC_SHOW_STATS` report at exit.
//!
//! ```text
//!   ld.so loads librulloc ─▶ .init_array ─▶ init()
//!                                            ├─ RULLOC_HUGE_PAGES=0? ─▶ Rulloc::set_huge_pages(false)
//!                                            ├─ RULLOC_PURGE_DELAY_MS=n? ─▶ ALLOC.set_purge_delay_ms(n)
//!                                            └─ RULLOC_SHOW_STATS set? ─▶ atexit(show_stats)
//! ```
//!
//! The constructor runs once per process, after libc is initialised and
//! before `main`. Its `.init_array` entry lives next to `malloc` (in
//! `lib.rs`), so that when `librulloc.a` is linked statically the archive
//! member that defines `malloc` is the one that carries it: a linker only
//! pulls in members that define a needed symbol.
//! It may already find earlier `malloc` calls made by the dynamic loader;
//! that is fine, the allocator needs no initialisation.
//!
//! Fork safety needs nothing here: the allocator core registers its own
//! `pthread_atfork` handlers on the first allocation (see `src/fork.rs`),
//! which is early in the process, so its `prepare` handler runs *after*
//! those of libraries loaded later (which may still allocate), and its
//! `child` handler runs first.

use core::ffi::c_char;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, Ordering};

use crate::exports::ALLOC;
use crate::sys;

/// Set by the first run of [`init`], which makes it idempotent.
static INITIALISED: AtomicBool = AtomicBool::new(false);

/// The environment variable that asks for a report at exit.
const SHOW_STATS_VAR: &core::ffi::CStr = c"RULLOC_SHOW_STATS";

/// The environment variable that sets how long (ms) freed pages stay
/// resident before they are given back to the OS (default 10).
const PURGE_DELAY_VAR: &core::ffi::CStr = c"RULLOC_PURGE_DELAY_MS";

/// The environment variable that, set to `0`, stops segments from asking
/// for transparent huge pages (see `rulloc::Rulloc::set_huge_pages`).
const HUGE_PAGES_VAR: &core::ffi::CStr = c"RULLOC_HUGE_PAGES";

/// The load-time constructor (see the module docs); idempotent.
pub(crate) extern "C" fn init() {
    if INITIALISED.swap(true, Ordering::Relaxed) {
        return;
    }
    // SAFETY: the name is NUL-terminated; constructors run single-threaded,
    // so nobody modifies the environment concurrently.
    let delay = unsafe { libc::getenv(PURGE_DELAY_VAR.as_ptr()) };
    // SAFETY: `getenv` returns null or a NUL-terminated string.
    if let Some(delay_ms) = unsafe { parse_decimal(delay) } {
        ALLOC.set_purge_delay_ms(delay_ms);
    }
    // SAFETY: the name is NUL-terminated; constructors run single-threaded,
    // so nobody modifies the environment concurrently.
    let huge_pages = unsafe { libc::getenv(HUGE_PAGES_VAR.as_ptr()) };
    // SAFETY: `getenv` returns null or a NUL-terminated string.
    if unsafe { parse_decimal(huge_pages) } == Some(0) {
        rulloc::Rulloc::set_huge_pages(false);
    }
    // SAFETY: the name is NUL-terminated; constructors run single-threaded,
    // so nobody modifies the environment concurrently.
    let value = unsafe { libc::getenv(SHOW_STATS_VAR.as_ptr()) };
    // SAFETY: `getenv` returns null or a NUL-terminated string.
    if unsafe { wants_report(value) } {
        // SAFETY: `show_stats` is an `extern "C" fn()` that never unwinds.
        if unsafe { libc::atexit(show_stats) } != 0 {
            sys::write_all(2, b"rulloc: could not register the exit report\n");
        }
    }
}

/// A non-negative decimal number, or `None` for null, empty or malformed
/// values (which leave the default in place).
///
/// # Safety
/// `value` is null or points to a NUL-terminated string.
unsafe fn parse_decimal(value: *const c_char) -> Option<usize> {
    if value.is_null() {
        return None;
    }
    // SAFETY: `value` is a NUL-terminated string (the caller's guarantee).
    let digits = unsafe { core::ffi::CStr::from_ptr(value) }.to_bytes();
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0usize, |number, &digit| {
        if digit.is_ascii_digit() {
            number
                .checked_mul(10)?
                .checked_add(usize::from(digit - b'0'))
        } else {
            None
        }
    })
}

/// Whether the value of `RULLOC_SHOW_STATS` asks for a report: set, not
/// empty and not `0`.
///
/// # Safety
/// `value` is null or points to a NUL-terminated string.
unsafe fn wants_report(value: *const c_char) -> bool {
    if value.is_null() {
        return false;
    }
    // SAFETY: `value` is a NUL-terminated string (the caller's guarantee).
    let value = unsafe { core::ffi::CStr::from_ptr(value) }.to_bytes();
    !value.is_empty() && value != b"0"
}

/// Size of the stack buffer the exit report is formatted into; longer
/// reports are cut (and say so).
const REPORT_CAPACITY: usize = 8192;

/// The first line of the exit report. The tests look for it.
const REPORT_HEADER: &str = "rulloc: statistics at exit";

/// Prints the report to stderr. Registered with `atexit`: runs once, on the
/// exiting thread, while other threads may still be allocating.
extern "C" fn show_stats() {
    let mut out = StackBuf::<REPORT_CAPACITY>::new();
    // SAFETY: `getpid` has no preconditions.
    let pid = unsafe { libc::getpid() };
    let stats = ALLOC.stats();
    let _ = writeln!(out, "{REPORT_HEADER} (pid {pid})");
    let _ = write!(out, "{stats}");
    if !out.as_bytes().ends_with(b"\n") {
        let _ = writeln!(out);
    }
    if out.truncated {
        let _ = writeln!(out.tail(), "\nrulloc: (report truncated)");
    }
    sys::write_all(2, out.as_bytes());
}

/// A fixed-capacity text buffer on the stack: formatting into it never
/// allocates; what does not fit is dropped and `truncated` is set.
struct StackBuf<const N: usize> {
    bytes: [u8; N],
    len: usize,
    truncated: bool,
}

impl<const N: usize> StackBuf<N> {
    /// Room kept at the end for the truncation notice.
    const RESERVE: usize = 64;

    fn new() -> Self {
        Self {
            bytes: [0; N],
            len: 0,
            truncated: false,
        }
    }

    fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or_default()
    }

    /// A writer over the reserved tail, for the truncation notice.
    fn tail(&mut self) -> Tail<'_, N> {
        Tail(self)
    }

    fn push(&mut self, s: &str, limit: usize) {
        let free = self
            .bytes
            .get_mut(self.len..limit.min(N))
            .unwrap_or_default();
        let mut copied = 0;
        for (dst, src) in free.iter_mut().zip(s.bytes()) {
            *dst = src;
            copied += 1;
        }
        self.len += copied;
        if copied < s.len() {
            self.truncated = true;
        }
    }
}

impl<const N: usize> Write for StackBuf<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.push(s, N.saturating_sub(Self::RESERVE));
        Ok(())
    }
}

/// Writes into a [`StackBuf`]'s reserved tail.
struct Tail<'a, const N: usize>(&'a mut StackBuf<N>);

impl<const N: usize> Write for Tail<'_, N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.push(s, N);
        Ok(())
    }
}
