//! Fork safety without the user's help: one process-wide registry of the
//! live instances, walked by `pthread_atfork` handlers that Rulloc
//! registers itself the first time an instance maps its state.
//!
//! ```text
//!   REGISTRY (static)            instance states (mapped, never move)
//!   +------+-------+            +----------------+    +----------------+
//!   | lock | head ─┼───────────▶| Entry { next ─┼───▶| Entry { next: ∅ |
//!   +------+-------+            |   prepare,     |    |   prepare, ... }|
//!                               |   parent,child}|    | heaps, huge ... |
//!                               | heaps, huge ...|    +----------------+
//!                               +----------------+
//!
//!   fork():  prepare handler: lock REGISTRY, then each entry's prepare
//!            (takes the instance's locks)
//!            ── the kernel copies the process ──
//!   parent:  each entry's parent (releases them), unlock REGISTRY
//!   child:   each entry's child  (releases them), unlock REGISTRY
//! ```
//!
//! Why: a thread that holds one of an instance's locks (the huge-block
//! list, a borrowed heap) at the moment another thread forks does not exist
//! in the child, so nobody would ever release it there, and the child's
//! next huge allocation would spin forever. Taking every lock before the
//! fork makes the child's copy consistent and unlocked.
//!
//! An entry lives inside an instance's state mapping (see
//! [`crate::allocator`]), whose address never changes, unlike a `Rulloc`
//! value, which may be moved. Entries are type-erased: each carries the
//! three functions of its instance's `N`.
//!
//! Invariants:
//!
//! * An entry is on the list from the moment its state is published until
//!   the instance is dropped, which unlinks it under the registry lock
//!   before unmapping it: the handlers never see a dangling entry.
//! * The registry lock is held from the prepare handler to the parent or
//!   child handler, so no instance is added or dropped during a fork.
//! * The handlers are registered at most once per process, and the flag is
//!   set before `pthread_atfork` is called: if it allocates (glibc's does,
//!   and under librulloc that is Rulloc itself) the re-entrant call does not
//!   register again.

use core::cell::UnsafeCell;
use core::ptr;
use core::sync::atomic::{AtomicBool, Ordering};

use crate::platform;
use crate::sync::SpinLock;

/// One instance in the registry. Embedded in the instance's state; the
/// functions receive the entry's own address and find their state from it.
pub(crate) struct Entry {
    next: UnsafeCell<*const Entry>,
    prepare: unsafe fn(*const Entry),
    parent: unsafe fn(*const Entry),
    child: unsafe fn(*const Entry),
}

impl Entry {
    /// An unlinked entry whose handlers take and release its instance's
    /// locks.
    pub(crate) const fn new(
        prepare: unsafe fn(*const Entry),
        parent: unsafe fn(*const Entry),
        child: unsafe fn(*const Entry),
    ) -> Self {
        Self {
            next: UnsafeCell::new(ptr::null()),
            prepare,
            parent,
            child,
        }
    }
}

/// The live entries: a singly linked list under a spin lock.
struct Registry {
    lock: SpinLock,
    head: UnsafeCell<*const Entry>,
}

// SAFETY: `head` and every listed entry's `next` are only touched under
// `lock` (or in the child after fork, where the forking thread is alone).
unsafe impl Sync for Registry {}

static REGISTRY: Registry = Registry {
    lock: SpinLock::new(),
    head: UnsafeCell::new(ptr::null()),
};

/// Set once the process's `pthread_atfork` handlers are (being) registered.
static HANDLERS_REGISTERED: AtomicBool = AtomicBool::new(false);

/// Adds an entry to the registry, registering the process's fork handlers
/// first if nobody has yet.
///
/// # Safety
///
/// `entry` stays valid and at the same address until [`unregister`] is
/// called with it, and is not registered already.
pub(crate) unsafe fn register(entry: *const Entry) {
    if !HANDLERS_REGISTERED.swap(true, Ordering::AcqRel) {
        // Failing leaves forks unprotected, as without these handlers;
        // nothing better can be done from inside an allocation.
        platform::register_fork_handlers(prepare_all, parent_all, child_all);
    }
    REGISTRY.lock.lock();
    // SAFETY: registry lock held; `entry` is valid (caller) and unlinked.
    unsafe {
        *(*entry).next.get() = *REGISTRY.head.get();
        *REGISTRY.head.get() = entry;
    }
    REGISTRY.lock.unlock();
}

/// Removes an entry from the registry (if it is there).
///
/// # Safety
///
/// `entry` is valid; it was passed to [`register`] or never linked.
pub(crate) unsafe fn unregister(entry: *const Entry) {
    REGISTRY.lock.lock();
    // SAFETY: registry lock held; every listed entry is valid.
    unsafe {
        let mut link: *mut *const Entry = REGISTRY.head.get();
        while !(*link).is_null() {
            if *link == entry {
                *link = *(*entry).next.get();
                break;
            }
            link = (**link).next.get();
        }
    }
    REGISTRY.lock.unlock();
}

/// Calls `handler` of every entry.
///
/// # Safety
///
/// The registry lock is held by this thread (or this is the child after a
/// fork that the prepare handler protected).
unsafe fn for_each(handler: impl Fn(&Entry) -> unsafe fn(*const Entry)) {
    // SAFETY: under the registry lock every listed entry is valid.
    unsafe {
        let mut entry = *REGISTRY.head.get();
        while !entry.is_null() {
            handler(&*entry)(entry);
            entry = *(*entry).next.get();
        }
    }
}

/// `pthread_atfork` prepare: takes the registry lock, then every
/// instance's locks.
extern "C" fn prepare_all() {
    REGISTRY.lock.lock();
    // SAFETY: registry lock held.
    unsafe { for_each(|entry| entry.prepare) };
}

/// `pthread_atfork` parent: releases what [`prepare_all`] took.
extern "C" fn parent_all() {
    // SAFETY: the registry lock is still held since `prepare_all`.
    unsafe { for_each(|entry| entry.parent) };
    REGISTRY.lock.unlock();
}

/// `pthread_atfork` child: releases what [`prepare_all`] took, in the
/// child's copy, where this thread is the only one.
extern "C" fn child_all() {
    // SAFETY: the registry lock was taken by this same thread before the
    // fork; the child has no other thread.
    unsafe { for_each(|entry| entry.child) };
    REGISTRY.lock.force_unlock();
}
