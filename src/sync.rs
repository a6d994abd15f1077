//! The one lock Rulloc has: a spin lock with a third state, *bound*.
//!
//! ```text
//!            try_lock            unlock
//!   FREE ─────────────▶ LOCKED ─────────▶ FREE       (a borrowed heap)
//!   FREE ─────────────▶ BOUND  ─────────▶ FREE       (a thread's own heap)
//!            try_bind            unbind (thread exit)
//! ```
//!
//! Heaps are *tried* far more often than waited for: a thread that finds a
//! heap busy moves on to another one (see [`crate::heap`]), so the lock is
//! built for the uncontended `try_lock` (one load and one CAS) and only
//! spins, then yields, in the rare blocking [`SpinLock::lock`].
//!
//! A thread that owns a heap for its whole life *binds* it: the heap stays
//! BOUND, so nobody else can lock it, and the owner needs no atomic at all
//! to use it. Unbinding is a single store, the last access the exiting
//! thread makes to the heap, which is what lets an allocator being dropped
//! decide safely whether the heap's memory may be unmapped.
//!
//! Dropping an allocator while a thread is still bound to one of its heaps
//! hands the heap's mapping over to that thread's exit hook:
//!
//! ```text
//!   drop:      BOUND ──orphan_if_bound──▶ DROPPING ──(segments freed)──▶ ORPHANED
//!   exit hook: begin_exit ─ BOUND ─▶ LOCKED (owns the heap) ─unlock─▶ FREE
//!                          ─ DROPPING: wait ─ ORPHANED ─▶ unmaps the heap itself
//! ```

use self::atomic::{AtomicU8, Ordering};

/// The atomics every concurrent structure of Rulloc uses: `core`'s, or
/// loom's under `--cfg loom` so that the models in `region` and here
/// explore every interleaving of the real code.
pub(crate) mod atomic {
    #[cfg(not(loom))]
    pub(crate) use core::sync::atomic::{AtomicPtr, AtomicU8, AtomicUsize, Ordering};
    #[cfg(loom)]
    pub(crate) use loom::sync::atomic::{AtomicPtr, AtomicU8, AtomicUsize, Ordering};
}

const FREE: u8 = 0;
const LOCKED: u8 = 1;
const BOUND: u8 = 2;
/// The allocator was dropped while a thread was bound: its segments are
/// gone; the heap's own mapping is left to the bound thread's exit hook.
const ORPHANED: u8 = 3;
/// The allocator is being dropped while a thread is bound: it is freeing
/// the heap's segments; the exit hook must wait for ORPHANED.
const DROPPING: u8 = 4;

/// What [`SpinLock::begin_exit`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Exit {
    /// The exiting thread owns the heap (LOCKED) until it unlocks it.
    Owned,
    /// The allocator was dropped: the heap's mapping is the exiting
    /// thread's to unmap, and nobody else touches it.
    Orphaned,
}

/// A lock word with no data attached; the data it guards lives beside it.
#[derive(Debug)]
pub(crate) struct SpinLock {
    state: AtomicU8,
}

/// Spins before each yield in [`SpinLock::lock`].
const SPINS_BEFORE_YIELD: u32 = 64;

impl SpinLock {
    #[cfg(not(loom))]
    pub(crate) const fn new() -> Self {
        Self {
            state: AtomicU8::new(FREE),
        }
    }

    #[cfg(loom)]
    pub(crate) fn new() -> Self {
        Self {
            state: AtomicU8::new(FREE),
        }
    }

    fn try_take(&self, new_state: u8) -> bool {
        self.state.load(Ordering::Relaxed) == FREE
            && self
                .state
                .compare_exchange(FREE, new_state, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
    }

    /// Takes the lock if it is free; `true` on success.
    #[inline]
    pub(crate) fn try_lock(&self) -> bool {
        self.try_take(LOCKED)
    }

    /// Takes the lock, waiting as long as it takes. Never call it on a lock
    /// that may be bound (it would wait for a thread to exit).
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

    /// Takes the lock, waiting if it is locked, but gives up (returning
    /// `false`) once it is bound.
    pub(crate) fn lock_unless_bound(&self) -> bool {
        let mut spins = 0;
        loop {
            if self.state.load(Ordering::Relaxed) == BOUND {
                return false;
            }
            if self.try_lock() {
                return true;
            }
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
        self.state.store(FREE, Ordering::Release);
    }

    /// Forces the lock free: only for a `fork()` child, where the thread
    /// that held it no longer exists.
    pub(crate) fn force_unlock(&self) {
        self.state.store(FREE, Ordering::Release);
    }

    /// Binds a free lock to the calling thread for good; `true` on success.
    pub(crate) fn try_bind(&self) -> bool {
        self.try_take(BOUND)
    }

    /// Releases a binding (the owner thread is exiting). The caller must not
    /// touch the memory holding the lock afterwards.
    pub(crate) fn unbind(&self) {
        self.state.store(FREE, Ordering::Release);
    }

    /// The bound owner is exiting: BOUND becomes LOCKED so the exit hook
    /// can clean up, then [`SpinLock::unlock`]. If the allocator was
    /// dropped meanwhile, waits until the drop is done with the heap and
    /// returns [`Exit::Orphaned`]: the heap's mapping is then the caller's
    /// to unmap.
    pub(crate) fn begin_exit(&self) -> Exit {
        loop {
            match self
                .state
                .compare_exchange(BOUND, LOCKED, Ordering::Acquire, Ordering::Acquire)
            {
                Ok(_) => return Exit::Owned,
                Err(ORPHANED) => return Exit::Orphaned,
                Err(_) => yield_now(),
            }
        }
    }

    /// The allocator is being dropped: waits out a running exit hook, then
    /// marks the heap DROPPING if a thread is still bound to it. Returns
    /// `true` in that case: the caller frees what the heap owns but not the
    /// heap's own mapping, then calls [`SpinLock::finish_orphan`].
    pub(crate) fn orphan_if_bound(&self) -> bool {
        loop {
            match self.state.load(Ordering::Acquire) {
                BOUND => {
                    if self
                        .state
                        .compare_exchange(BOUND, DROPPING, Ordering::AcqRel, Ordering::Relaxed)
                        .is_ok()
                    {
                        return true;
                    }
                }
                LOCKED => yield_now(),
                _ => return false,
            }
        }
    }

    /// The drop is done with an orphaned heap: from now on its mapping
    /// belongs to the bound thread's exit hook. The caller's last access.
    pub(crate) fn finish_orphan(&self) {
        self.state.store(ORPHANED, Ordering::Release);
    }
}

#[cfg(loom)]
fn yield_now() {
    loom::thread::yield_now();
}

#[cfg(all(feature = "std", not(loom)))]
fn yield_now() {
    std::thread::yield_now();
}

#[cfg(all(not(feature = "std"), not(loom)))]
fn yield_now() {
    core::hint::spin_loop();
}

#[cfg(all(test, loom))]
mod loom_models {
    use super::*;
    use loom::cell::UnsafeCell;
    use loom::sync::Arc;
    use loom::thread;

    /// A heap-like pair: the lock and the data it guards.
    struct Guarded {
        lock: SpinLock,
        data: UnsafeCell<usize>,
    }

    // SAFETY: `data` is only touched by the holder of `lock` (that is the
    // property under test: loom reports any unsynchronised access).
    unsafe impl Sync for Guarded {}

    /// Dropping the allocator while its bound thread exits: the exit hook
    /// either owns the heap (and the drop waits for it), or unmaps it only
    /// after the drop is done with it. Never both at once.
    #[test]
    fn loom_drop_hands_an_orphaned_heap_to_its_exit_hook() {
        loom::model(|| {
            let heap = Arc::new(Guarded {
                lock: SpinLock::new(),
                data: UnsafeCell::new(0),
            });
            assert!(heap.lock.try_bind());
            let exiting = {
                let heap = heap.clone();
                thread::spawn(move || match heap.lock.begin_exit() {
                    Exit::Owned => {
                        // SAFETY: owned until the unlock (under test).
                        heap.data.with_mut(|data| unsafe { *data += 1 });
                        heap.lock.unlock();
                        false
                    }
                    Exit::Orphaned => {
                        // "Unmapping": the drop's write must be visible and
                        // finished (loom reports a concurrent access).
                        // SAFETY: orphaned: ours alone (under test).
                        heap.data.with_mut(|data| unsafe { assert_eq!(*data, 10) });
                        true
                    }
                })
            };
            // The allocator's drop.
            let orphaned = heap.lock.orphan_if_bound();
            if orphaned {
                // SAFETY: DROPPING: the hook waits (under test).
                heap.data.with_mut(|data| unsafe { *data = 10 });
                heap.lock.finish_orphan();
            } else {
                // The hook ran first: the heap is free and the drop's.
                // SAFETY: FREE after the hook's unlock (under test).
                heap.data.with(|data| assert_eq!(unsafe { *data }, 1));
            }
            assert_eq!(exiting.join().unwrap(), orphaned);
        });
    }

    #[test]
    fn loom_bound_and_locked_are_exclusive() {
        loom::model(|| {
            let heap = Arc::new(Guarded {
                lock: SpinLock::new(),
                data: UnsafeCell::new(0),
            });
            // A thread that binds the heap for its life, then exits.
            let owner = {
                let heap = heap.clone();
                thread::spawn(move || {
                    if heap.lock.try_bind() {
                        // SAFETY: bound: this thread owns the data (under test).
                        heap.data.with_mut(|data| unsafe { *data += 1 });
                        heap.lock.unbind();
                    }
                })
            };
            thread::yield_now();
            // A thread borrowing it, waiting unless it is bound.
            if heap.lock.lock_unless_bound() {
                // SAFETY: locked: this thread owns the data (under test).
                heap.data.with_mut(|data| unsafe { *data += 1 });
                heap.lock.unlock();
            }
            owner.join().unwrap();
            // Adoption after the owner exited always succeeds.
            assert!(heap.lock.try_bind());
            // SAFETY: bound again by this thread, the only one left.
            heap.data.with(|data| assert!(unsafe { *data } <= 2));
            heap.lock.unbind();
        });
    }
}
