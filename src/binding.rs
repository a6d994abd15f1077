//! Which heap a thread owns: the thread ↔ heap binding.
//!
//! ```text
//!   thread-local Binding { instance, heap }          Heap (mapped by the allocator)
//!   +-----------------------------------+            +--------------------------+
//!   | instance: id of the Rulloc        |            | lock: BOUND              |
//!   | heap:  ---------------------------+----------▶ | buckets, spans, ...      |
//!   +-----------------------------------+            +--------------------------+
//!   pthread key value: the same heap ──▶ destructor at thread exit:
//!                                        collect and purge, then unbind
//! ```
//!
//! The first allocator a thread allocates from binds one of its heaps to
//! the thread (the seed's TODO option 3, "one allocator per thread"): from
//! then on that thread allocates and frees its own blocks with no lock and
//! no atomic read-modify-write. A pthread key destructor unbinds the heap
//! when the thread exits, so the next new thread adopts it with all its
//! regions, including blocks other threads freed in the meantime: heaps,
//! and so memory, stay bounded by the number of *concurrent* threads.
//!
//! Invariants:
//!
//! * The binding names at most one heap, and that heap's lock is BOUND
//!   (see [`crate::sync`]) for as long as the binding says so.
//! * The thread-local is `const`-initialised and has no destructor, so
//!   reading it never allocates and works during thread teardown; the exit
//!   hook is a pthread key, which glibc stores without allocating.
//! * While a binding is being made the state is [`BINDING`], so an
//!   allocation re-entering from the registration takes the shared path.
//! * After the exit hook ran the state is [`NEVER_BIND`]: allocations made
//!   by later destructors use the shared path and never re-bind (which
//!   would lock a heap forever).

use core::ptr;

/// An instance id no allocator has: the thread has no binding yet.
pub(crate) const UNBOUND: usize = usize::MAX - 2;
/// A binding is being made on this thread.
pub(crate) const BINDING: usize = usize::MAX - 1;
/// This thread must not bind (exiting, or no heap or hook was available).
pub(crate) const NEVER_BIND: usize = usize::MAX;

/// A thread's binding: the id of an allocator instance and one of its heaps.
#[derive(Clone, Copy)]
pub(crate) struct Binding {
    pub(crate) instance: usize,
    pub(crate) heap: *const u8,
}

#[cfg(all(unix, feature = "std"))]
mod imp {
    use super::*;
    use core::cell::Cell;
    use core::ffi::c_void;
    use core::sync::atomic::{AtomicUsize, Ordering};

    use crate::heap::HeapHeader;

    std::thread_local! {
        static CURRENT: Cell<Binding> =
            const { Cell::new(Binding { instance: UNBOUND, heap: ptr::null() }) };
    }

    /// The pthread key whose destructor unbinds, plus one (0: not created).
    static EXIT_KEY: AtomicUsize = AtomicUsize::new(0);

    pub(crate) const SUPPORTED: bool = true;

    #[inline(always)]
    pub(crate) fn current() -> Binding {
        CURRENT.try_with(Cell::get).unwrap_or(Binding {
            instance: NEVER_BIND,
            heap: ptr::null(),
        })
    }

    pub(crate) fn set(binding: Binding) {
        let _ = CURRENT.try_with(|current| current.set(binding));
    }

    fn exit_key() -> Option<libc::pthread_key_t> {
        let key = EXIT_KEY.load(Ordering::Acquire);
        if key != 0 {
            return Some((key - 1) as libc::pthread_key_t);
        }
        let mut new_key: libc::pthread_key_t = 0;
        // SAFETY: `new_key` is a valid out-pointer; the destructor is an
        // `extern "C"` function that never unwinds.
        if unsafe { libc::pthread_key_create(&mut new_key, Some(on_thread_exit)) } != 0 {
            return None;
        }
        match EXIT_KEY.compare_exchange(
            0,
            new_key as usize + 1,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => Some(new_key),
            Err(existing) => {
                // SAFETY: the key we created is unused.
                unsafe { libc::pthread_key_delete(new_key) };
                Some((existing - 1) as libc::pthread_key_t)
            }
        }
    }

    /// Arranges for the bound heap to be cleaned up and unbound when the
    /// calling thread exits. `false` if the OS refused.
    pub(crate) fn register_exit(heap: *const HeapHeader) -> bool {
        let Some(key) = exit_key() else { return false };
        // SAFETY: storing a pointer value under a valid key.
        unsafe { libc::pthread_setspecific(key, heap.cast()) == 0 }
    }

    /// Drops the calling thread's binding without unbinding the heap's lock
    /// (its allocator is being dropped): the thread may bind again later.
    pub(crate) fn forget_current() {
        set(Binding {
            instance: UNBOUND,
            heap: ptr::null(),
        });
        let key = EXIT_KEY.load(Ordering::Acquire);
        if key != 0 {
            // SAFETY: clearing the value under a valid key.
            unsafe { libc::pthread_setspecific((key - 1) as libc::pthread_key_t, ptr::null()) };
        }
    }

    /// The pthread key destructor: the thread is exiting. Its heap gives
    /// back what it can (empty regions, dirty pages), then becomes free for
    /// the next thread to adopt.
    unsafe extern "C" fn on_thread_exit(heap: *mut c_void) {
        set(Binding {
            instance: NEVER_BIND,
            heap: ptr::null(),
        });
        let heap = heap.cast::<HeapHeader>().cast_const();
        // SAFETY: the value registered is the header of the heap this thread
        // bound. A BOUND heap is never unmapped: if its allocator was
        // dropped it is ORPHANED and `begin_exit` fails; otherwise we own it
        // until the unlock, our last access.
        unsafe {
            if (*heap).lock.begin_exit() {
                ((*heap).on_thread_exit)(heap);
                (*heap).lock.unlock();
            }
        }
    }
}

#[cfg(not(all(unix, feature = "std")))]
mod imp {
    use super::*;

    pub(crate) const SUPPORTED: bool = false;

    #[inline(always)]
    pub(crate) fn current() -> Binding {
        Binding {
            instance: NEVER_BIND,
            heap: ptr::null(),
        }
    }

    pub(crate) fn set(_binding: Binding) {}

    pub(crate) fn register_exit(_heap: *const crate::heap::HeapHeader) -> bool {
        false
    }

    pub(crate) fn forget_current() {}
}

pub(crate) use imp::{current, forget_current, register_exit, set, SUPPORTED};
