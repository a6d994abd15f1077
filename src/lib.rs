//! Rulloc (Rust Allocator) is a general purpose memory allocator.
//!
//! It implements [`GlobalAlloc`](core::alloc::GlobalAlloc) and the
//! `Allocator` trait of [`allocator_api2`] (so `hashbrown`, `bumpalo`-style
//! collections and `allocator_api2::vec::Vec` take it on stable Rust), and
//! `core::alloc::Allocator` with the `nightly` feature. All memory comes
//! from the kernel: `mmap` on Unix, `VirtualAlloc` on Windows.
//!
//! ```text
//!  OS ──mmap/VirtualAlloc──▶ Segment (4 MiB, aligned to its own size)
//!                              │  header at the base: one descriptor per 64 KiB slot
//!                              ▼
//!                            Region (a run of slots owned by ONE bucket)
//!                              │  free list · thread-free list
//!                              ▼
//!                            Block (no header at all)
//!
//!  Heap (one per concurrently allocating thread) = array of Buckets + span pool
//!  Bucket (a size class)  = queue of Regions that may have free blocks
//!  Dynamic bucket         = allocations larger than the largest bucket
//! ```
//!
//! Start reading at [`allocator`], the module of the public type; its
//! documentation leads through every other module.
//!
//! # Usage
//!
//! ```
//! use rulloc::Rulloc;
//!
//! #[global_allocator]
//! static ALLOCATOR: Rulloc = Rulloc::new();
//!
//! let v: Vec<u64> = (0..1000).collect();
//! assert_eq!(v.iter().sum::<u64>(), 499_500);
//! ```
//!
//! # Features
//!
//! * `std` (default): a thread-local hint of which heap a thread uses.
//!   Without it the core is `no_std` (it needs only `core` and a platform
//!   backend: `libc` on Unix, `windows-sys` on Windows).
//! * `nightly`: `core::alloc::Allocator` (through `allocator-api2/nightly`).
//! * `initial-exec-tls` (with `std`, on x86_64 Linux with glibc; elsewhere
//!   no effect): the thread's heap binding in initial-exec TLS, reached
//!   without a call to `__tls_get_addr` when Rulloc is built into a shared
//!   library. Such a library, if `dlopen`ed, needs 24 bytes of glibc's
//!   static TLS surplus. `librulloc.so` turns it on (see `binding.rs`).
//! * `secure`: the hardened build (see the README's misuse table): every double free and
//!   every free of an interior or foreign pointer, same-thread or
//!   cross-thread, stops the process, as do a `realloc` of a freed block, a
//!   corrupted free-list link (links are encoded with per-region random
//!   keys) and a sized `dealloc` whose layout does not fit the block;
//!   allocation order is randomised and guard pages surround metadata and
//!   segments. What it costs: the secure section of `BENCHMARKS.md`.
#![cfg_attr(not(any(feature = "std", test)), no_std)]
// With `nightly`, allocator-api2's `Allocator` *is* `core::alloc::Allocator`.
#![cfg_attr(feature = "nightly", feature(allocator_api))]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]
// The module docs are a guided tour of private internals; `cargo doc
// --document-private-items` renders them, and CI checks their links.
#![allow(rustdoc::private_intra_doc_links)]
#![cfg_attr(loom, allow(dead_code, unused_imports))]

// Under `--cfg loom` only the concurrent building blocks are compiled, with
// loom's atomics, for the models in `region` and `sync`:
// `RUSTFLAGS="--cfg loom" cargo test -p rulloc --lib --release loom`.
#[cfg(not(loom))]
pub mod allocator;
#[cfg(not(loom))]
mod binding;
mod block;
#[cfg(not(loom))]
mod bucket;
#[cfg(not(loom))]
mod fork;
#[cfg(not(loom))]
mod heap;
#[cfg(not(loom))]
mod large;
#[cfg(not(loom))]
mod misuse;
/// Under loom the models only need misuse reports to fail loudly.
#[cfg(loom)]
mod misuse {
    pub(crate) fn fatal(what: &str, _address: *const u8) -> ! {
        panic!("rulloc: fatal: {what}")
    }

    pub(crate) fn random_key(salt: usize) -> usize {
        salt
    }

    pub(crate) fn mix(value: usize) -> usize {
        value
    }
}
#[cfg(not(loom))]
mod platform;
mod region;
#[cfg(not(loom))]
mod segment;
#[cfg(not(loom))]
mod stats;
mod sync;

#[cfg(not(loom))]
pub use allocator::{Rulloc, DEFAULT_PURGE_DELAY_MS};
#[cfg(not(loom))]
pub use bucket::{DEFAULT_BUCKET_COUNT, DEFAULT_BUCKET_SIZES, MAX_BUCKET_SIZE};
#[cfg(not(loom))]
pub use stats::{BucketStats, Stats};
