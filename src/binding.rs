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
//!   hook is a pthread key, which glibc stores without allocating (on
//!   Windows, a fiber-local storage slot with a callback: see the Windows
//!   `imp` below).
//! * While a binding is being made the state is [`BINDING`], so an
//!   allocation re-entering from the registration takes the shared path.
//! * After the exit hook ran the state is [`NEVER_BIND`]: allocations made
//!   by later destructors use the shared path and never re-bind (which
//!   would lock a heap forever).
//! * Beside the binding, the thread-local holds the bound heap's *tag*
//!   (see [`crate::misuse`]; [`crate::misuse::NO_TAG`] without a bound
//!   heap or for a heap without a tag), set with every change of the
//!   binding. A heap's tag is its own until its memory is unmapped, which
//!   happens only once no binding names it, so a segment the map tags with
//!   the thread's tag is a live segment of the thread's bound heap: the
//!   secure build's free fast path relies on it (see
//!   `Rulloc::deallocate_secure`).

use core::ptr;

/// An instance id no allocator has: the thread has no binding yet.
pub(crate) const UNBOUND: usize = usize::MAX - 2;
/// A binding is being made on this thread.
pub(crate) const BINDING: usize = usize::MAX - 1;
/// This thread must not bind (exiting, or no heap or hook was available).
pub(crate) const NEVER_BIND: usize = usize::MAX;

/// A thread's binding: the id of an allocator instance and one of its heaps.
/// `repr(C)`: the initial-exec slot spells its initial value out field by
/// field, in this order.
#[derive(Clone, Copy)]
#[repr(C)]
pub(crate) struct Binding {
    pub(crate) instance: usize,
    pub(crate) heap: *const u8,
}

/// The binding slot in Rust's `thread_local!`: constant-initialised, no
/// destructor, so reading it never allocates and works during thread
/// teardown. In a shared library on Linux this is the general-dynamic TLS
/// model, where every access calls `__tls_get_addr`; the `slot` below it,
/// in initial-exec TLS, is what the `initial-exec-tls` feature puts in its
/// place on x86_64 Linux.
#[cfg(all(
    feature = "std",
    any(unix, all(windows, not(miri))),
    not(all(
        feature = "initial-exec-tls",
        target_arch = "x86_64",
        target_os = "linux",
        target_env = "gnu",
        not(miri)
    ))
))]
mod slot {
    use super::{Binding, NEVER_BIND, UNBOUND};
    use crate::heap::HeapHeader;
    use crate::misuse::NO_TAG;
    use core::cell::Cell;
    use core::ptr;

    /// The binding and the bound heap's tag, in one thread-local so that
    /// one lookup finds both.
    struct Slot {
        binding: Cell<Binding>,
        tag: Cell<u8>,
    }

    std::thread_local! {
        static CURRENT: Slot = const {
            Slot {
                binding: Cell::new(Binding {
                    instance: UNBOUND,
                    heap: ptr::null(),
                }),
                tag: Cell::new(NO_TAG),
            }
        };
    }

    #[inline(always)]
    pub(crate) fn current() -> Binding {
        CURRENT
            .try_with(|slot| slot.binding.get())
            .unwrap_or(Binding {
                instance: NEVER_BIND,
                heap: ptr::null(),
            })
    }

    /// Sets the binding, and the tag with it. `binding.heap` is null or a
    /// live heap.
    pub(crate) fn set(binding: Binding) {
        // SAFETY: bindings name null or a live heap (see the invariants).
        let tag = unsafe { HeapHeader::bound_tag(binding.heap) };
        let _ = CURRENT.try_with(|slot| {
            slot.binding.set(binding);
            slot.tag.set(tag);
        });
    }

    /// The binding and the bound heap's tag (see the module docs).
    #[inline(always)]
    pub(crate) fn bound_tag() -> (Binding, u8) {
        CURRENT
            .try_with(|slot| (slot.binding.get(), slot.tag.get()))
            .unwrap_or((
                Binding {
                    instance: NEVER_BIND,
                    heap: ptr::null(),
                },
                NO_TAG,
            ))
    }
}

/// The binding slot in initial-exec TLS (feature `initial-exec-tls`, x86_64
/// Linux with glibc; everywhere else the feature changes nothing and the
/// slot is a `thread_local!`).
///
/// ```text
///   thread_local! in a shared library          this module
///   (general-dynamic model)                    (initial-exec model)
///   lea   slot@tlsgd(%rip), %rdi               mov  %fs:0, %rax
///   call  __tls_get_addr      ~11 instructions add  slot@gottpoff(%rip), %rax
///   ... the slot's address in %rax             ... the slot's address in %rax
/// ```
///
/// Stable Rust cannot pick a TLS model (`-Z tls-model` and
/// `#[thread_local]` are nightly-only), and `librulloc.so` pays
/// `__tls_get_addr` twice per `malloc`/`free` pair without this. So the slot
/// is declared in assembly: a 24-byte `.tdata` object of type TLS (the
/// binding and the bound heap's tag), whose offset from the thread pointer
/// the loader writes into one GOT entry
/// (`R_X86_64_TPOFF64`) when it maps the library; reading the thread pointer
/// (`%fs:0`, the TCB's self-pointer in the x86_64 ABI) and adding that
/// offset gives this thread's slot. Linked into an executable, the linker
/// relaxes the GOT load to a constant (local-exec), as it does for
/// `thread_local!` there.
///
/// Invariants, the same as those of the `thread_local!` it replaces:
/// the slot is constant-initialised (`.tdata`: `{ UNBOUND, null }`, checked
/// against [`Binding`]'s layout below), has no destructor and never
/// allocates, and stays valid until the thread is gone, after every pthread
/// key destructor (glibc frees a thread's static TLS last). Only the owning
/// thread touches it, through the address computed here.
///
/// The cost of the model: a library with initial-exec TLS gets
/// `DF_STATIC_TLS`, and its TLS must sit in the static TLS block made at
/// thread creation. Loaded at start-up (`LD_PRELOAD`, or linked), that is
/// free. Loaded later with `dlopen`, glibc places it in the static TLS
/// surplus it reserves for exactly this (the tunable
/// `glibc.rtld.optional_static_tls`, 512 bytes by default; these 24 bytes
/// are the whole need) and fails the `dlopen` with "cannot allocate memory
/// in static TLS block" once the surplus is used up. Debian's
/// `libmimalloc.so.2` and `libjemalloc.so.2` make the same choice (both
/// carry `DF_STATIC_TLS`). The feature is
/// therefore off by default: `librulloc.so` (the `rulloc-capi` crate)
/// turns it on, a Rust `cdylib` that might be `dlopen`ed many times over
/// may prefer not to.
///
/// The symbol's name carries the crate version, so that two versions of
/// Rulloc linked into one program do not collide; it is hidden, so no
/// library exports it.
#[cfg(all(
    unix,
    feature = "std",
    feature = "initial-exec-tls",
    target_arch = "x86_64",
    target_os = "linux",
    target_env = "gnu",
    not(miri)
))]
mod slot {
    use super::{Binding, UNBOUND};
    use crate::heap::HeapHeader;
    use crate::misuse::NO_TAG;
    use core::mem::{align_of, offset_of, size_of};

    /// The slot's contents: the binding and the bound heap's tag (see the
    /// module docs), laid out as the assembly below spells them.
    #[repr(C)]
    struct Slot {
        binding: Binding,
        tag: u8,
    }

    /// The slot's symbol.
    macro_rules! slot_symbol {
        () => {
            concat!(
                "rulloc_thread_binding_",
                env!("CARGO_PKG_VERSION_MAJOR"),
                "_",
                env!("CARGO_PKG_VERSION_MINOR"),
                "_",
                env!("CARGO_PKG_VERSION_PATCH")
            )
        };
    }

    // The assembly below lays out `Slot { Binding { instance: UNBOUND,
    // heap: null }, tag: NO_TAG }` as two 8-byte words, the tag byte and
    // seven bytes of padding.
    const _: () = assert!(size_of::<Binding>() == 16 && align_of::<Binding>() == 8);
    const _: () = assert!(offset_of!(Binding, instance) == 0 && offset_of!(Binding, heap) == 8);
    const _: () = assert!(size_of::<Slot>() == 24 && offset_of!(Slot, tag) == 16);

    core::arch::global_asm!(
        ".pushsection .tdata,\"awT\",@progbits",
        ".p2align 3",
        concat!(".globl ", slot_symbol!()),
        concat!(".hidden ", slot_symbol!()),
        concat!(".type ", slot_symbol!(), ",@tls_object"),
        concat!(".size ", slot_symbol!(), ",24"),
        concat!(slot_symbol!(), ":"),
        ".quad {unbound}",
        ".quad 0",
        ".byte {no_tag}",
        ".zero 7",
        ".popsection",
        unbound = const UNBOUND as i64,
        no_tag = const NO_TAG,
        options(att_syntax)
    );

    /// The calling thread's slot.
    #[inline(always)]
    fn slot() -> *mut Slot {
        let slot: *mut Slot;
        // SAFETY: the initial-exec sequence of the x86_64 TLS ABI: `%fs:0`
        // holds the thread pointer, the GOT entry the loader filled holds
        // the slot's (negative) offset from it. It reads nothing that
        // changes during the thread's life, writes no memory and no stack
        // (`pure, readonly, nostack`: repeated calls may be merged).
        unsafe {
            core::arch::asm!(
                "movq %fs:0, {slot}",
                concat!("addq ", slot_symbol!(), "@gottpoff(%rip), {slot}"),
                slot = out(reg) slot,
                options(att_syntax, pure, readonly, nostack)
            );
        }
        slot
    }

    #[inline(always)]
    pub(crate) fn current() -> Binding {
        // SAFETY: the slot is this thread's, initialised and aligned (see the
        // module docs), and only this thread accesses it.
        unsafe { (*slot()).binding }
    }

    /// Sets the binding, and the tag with it. `binding.heap` is null or a
    /// live heap.
    #[inline(always)]
    pub(crate) fn set(binding: Binding) {
        // SAFETY: bindings name null or a live heap (see the invariants).
        let tag = unsafe { HeapHeader::bound_tag(binding.heap) };
        // SAFETY: the slot is this thread's, initialised and aligned (see the
        // module docs), and only this thread writes it.
        unsafe { slot().write(Slot { binding, tag }) }
    }

    /// The binding and the bound heap's tag (see the module docs).
    #[inline(always)]
    pub(crate) fn bound_tag() -> (Binding, u8) {
        // SAFETY: the slot is this thread's, initialised and aligned (see the
        // module docs), and only this thread accesses it.
        unsafe { ((*slot()).binding, (*slot()).tag) }
    }
}

#[cfg(all(unix, feature = "std"))]
mod imp {
    use super::*;
    use core::ffi::c_void;
    use core::sync::atomic::{AtomicUsize, Ordering};

    use crate::heap::HeapHeader;

    pub(crate) use super::slot::{bound_tag, current, set};

    /// The pthread key whose destructor unbinds, plus one (0: not created).
    static EXIT_KEY: AtomicUsize = AtomicUsize::new(0);

    pub(crate) const SUPPORTED: bool = true;

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
        // bound.
        unsafe { HeapHeader::leave(heap) }
    }
}

/// Windows: the same thread-local binding; the exit hook is a fiber-local
/// storage (FLS) slot whose callback runs when the thread exits.
///
/// ```text
///   FlsAlloc(on_thread_exit) ──▶ EXIT_SLOT      (one per process)
///   bind:   FlsSetValue(EXIT_SLOT, heap)
///   exit:   ntdll runs FLS callbacks first ──▶ on_thread_exit(heap)
///           then the TLS callbacks (Rust's thread-local destructors)
///           then frees the FLS slots
/// ```
///
/// Two Windows specifics:
///
/// * Rust's `thread_local!` on `*-windows-gnu` is an OS TLS key with a
///   destructor (there is no native `#[thread_local]` there): its first
///   read on a thread takes a box from the process heap (`System`, never
///   from Rulloc, so no re-entry), and its destructor resets the key.
///   A thread-local destructor that allocates
///   *after* it would see a fresh, unbound `CURRENT` and bind again,
///   after the FLS callbacks already ran, leaving that heap bound forever.
///   So the exit hook also sets a plain Win32 TLS slot (`EXITED_SLOT`, no
///   destructor, valid to the thread's last instruction), and
///   [`register_exit`] refuses on a thread that has it: such an allocation
///   takes the shared path, as on Unix.
/// * FLS is per *fiber*: deleting a fiber whose slot holds the heap runs
///   the hook on the deleting thread. That thread then stops using its heap
///   (its binding becomes [`NEVER_BIND`]): correct, only slower. A fiber
///   that binds on one thread and is resumed on another is not supported
///   (the first thread's heap would stay bound).
#[cfg(all(windows, feature = "std", not(miri)))]
mod imp {
    use super::*;
    use core::ffi::c_void;
    use core::sync::atomic::{AtomicU32, Ordering};

    use windows_sys::Win32::System::Threading::{
        FlsAlloc, FlsFree, FlsSetValue, TlsAlloc, TlsFree, TlsGetValue, TlsSetValue,
        FLS_OUT_OF_INDEXES, TLS_OUT_OF_INDEXES,
    };

    use crate::heap::HeapHeader;

    pub(crate) use super::slot::{bound_tag, current, set};

    /// The FLS index whose callback unbinds, plus one (0: not allocated).
    static EXIT_SLOT: AtomicU32 = AtomicU32::new(0);
    /// The TLS index marking threads whose exit hook ran, plus one.
    static EXITED_SLOT: AtomicU32 = AtomicU32::new(0);

    pub(crate) const SUPPORTED: bool = true;

    /// An index from `alloc` (which fails with `out_of_indexes`), made once
    /// per process and kept in `cell` plus one; `free` gives back the index
    /// of a thread that lost the race to publish its own.
    fn lazy_index(
        cell: &AtomicU32,
        alloc: impl FnOnce() -> u32,
        out_of_indexes: u32,
        free: impl FnOnce(u32),
    ) -> Option<u32> {
        let index = cell.load(Ordering::Acquire);
        if index != 0 {
            return Some(index - 1);
        }
        let new_index = alloc();
        if new_index == out_of_indexes {
            return None;
        }
        match cell.compare_exchange(0, new_index + 1, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => Some(new_index),
            Err(existing) => {
                free(new_index);
                Some(existing - 1)
            }
        }
    }

    fn exit_slot() -> Option<u32> {
        lazy_index(
            &EXIT_SLOT,
            // SAFETY: the callback is an `extern "system"` function that
            // never unwinds and lives as long as the process.
            || unsafe { FlsAlloc(Some(on_thread_exit)) },
            FLS_OUT_OF_INDEXES,
            // SAFETY: the index we allocated is unused (no thread stored a
            // value, so no callback runs).
            |index| unsafe {
                FlsFree(index);
            },
        )
    }

    fn exited_slot() -> Option<u32> {
        lazy_index(
            &EXITED_SLOT,
            // SAFETY: no preconditions.
            || unsafe { TlsAlloc() },
            TLS_OUT_OF_INDEXES,
            // SAFETY: the index we allocated is unused.
            |index| unsafe {
                TlsFree(index);
            },
        )
    }

    /// Whether the calling thread's exit hook already ran.
    fn exited() -> bool {
        let Some(slot) = exited_slot() else {
            return false;
        };
        // SAFETY: reading our own slot of a valid TLS index.
        !unsafe { TlsGetValue(slot) }.is_null()
    }

    /// Arranges for the bound heap to be cleaned up and unbound when the
    /// calling thread exits. `false` if the OS refused, or if the thread's
    /// exit hook already ran (a late thread-local destructor allocating).
    pub(crate) fn register_exit(heap: *const HeapHeader) -> bool {
        if exited() {
            return false;
        }
        let Some(slot) = exit_slot() else {
            return false;
        };
        // SAFETY: storing a pointer value under a valid FLS index.
        unsafe { FlsSetValue(slot, heap.cast()) != 0 }
    }

    /// Drops the calling thread's binding without unbinding the heap's lock
    /// (its allocator is being dropped): the thread may bind again later.
    pub(crate) fn forget_current() {
        set(Binding {
            instance: UNBOUND,
            heap: ptr::null(),
        });
        let slot = EXIT_SLOT.load(Ordering::Acquire);
        if slot != 0 {
            // SAFETY: clearing the value under a valid FLS index (a null
            // value runs no callback).
            unsafe { FlsSetValue(slot - 1, ptr::null()) };
        }
    }

    /// The FLS callback: the thread (or the fiber that bound) is exiting.
    /// Exactly the Unix hook: its heap gives back what it can (empty
    /// regions, dirty pages), then becomes free for the next thread to
    /// adopt. Windows calls it only for a non-null value.
    unsafe extern "system" fn on_thread_exit(heap: *const c_void) {
        set(Binding {
            instance: NEVER_BIND,
            heap: ptr::null(),
        });
        if let Some(slot) = exited_slot() {
            // SAFETY: setting our own slot of a valid TLS index; any
            // non-null value means "exited".
            unsafe { TlsSetValue(slot, ptr::without_provenance(1)) };
        }
        let heap = heap.cast::<HeapHeader>();
        // SAFETY: the value registered is the header of the heap this thread
        // bound.
        unsafe { HeapHeader::leave(heap) }
    }
}

#[cfg(not(any(all(unix, feature = "std"), all(windows, feature = "std", not(miri)))))]
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

    #[inline(always)]
    pub(crate) fn bound_tag() -> (Binding, u8) {
        (current(), crate::misuse::NO_TAG)
    }

    pub(crate) fn register_exit(_heap: *const crate::heap::HeapHeader) -> bool {
        false
    }

    pub(crate) fn forget_current() {}
}

pub(crate) use imp::{bound_tag, current, forget_current, register_exit, set, SUPPORTED};
