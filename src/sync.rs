//! The one lock Rulloc has: a test-and-test-and-set spin lock.
//!
//! Heaps are *tried* far more often than waited for: a thread that finds its
//! heap busy moves on to another one (see [`crate::heap`]), so the lock is
//! built for the uncontended `try_lock` (one atomic swap) and only spins,
//! then yields, in the rare blocking [`SpinLock::lock`].

use core::sync::atomic::{AtomicBool, Ordering};

/// A lock word with no data attached; the data it guards lives beside it.
#[derive(Debug)]
pub(crate) struct SpinLock {
    locked: AtomicBool,
}

/// Spins before each yield in [`SpinLock::lock`].
const SPINS_BEFORE_YIELD: u32 = 64;

impl SpinLock {
    pub(crate) const fn new() -> Self {
        Self {
            locked: AtomicBool::new(false),
        }
    }

    /// Takes the lock if it is free; `true` on success.
    #[inline]
    pub(crate) fn try_lock(&self) -> bool {
        !self.locked.load(Ordering::Relaxed) && !self.locked.swap(true, Ordering::Acquire)
    }

    /// Takes the lock, waiting as long as it takes.
    pub(crate) fn lock(&self) {
        let mut spins = 0;
        while !self.try_lock() {
            spins += 1;
            if spins % SPINS_BEFORE_YIELD == 0 {
                yield_now();
            } else {
                core::hint::spin_loop();
            }
        }
    }

    /// Releases a lock taken by this thread.
    #[inline]
    pub(crate) fn unlock(&self) {
        self.locked.store(false, Ordering::Release);
    }

    /// Forces the lock free: only for a `fork()` child, where the thread
    /// that held it no longer exists.
    pub(crate) fn force_unlock(&self) {
        self.locked.store(false, Ordering::Release);
    }
}

#[cfg(feature = "std")]
fn yield_now() {
    std::thread::yield_now();
}

#[cfg(not(feature = "std"))]
fn yield_now() {
    core::hint::spin_loop();
}
