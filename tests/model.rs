//! Model-based tests: random sequences of allocate / deallocate / grow /
//! shrink / allocate_zeroed / grow_zeroed, replayed against a Rulloc
//! instance and checked against a reference model.
//!
//! The model keeps every live block (address, layout, usable extent, the id
//! of the pattern it was filled with) and checks after every operation:
//!
//! * alignment of every returned pointer;
//! * non-overlap: the usable extent of a new block does not intersect any
//!   live block (live ranges are kept in a `BTreeMap` keyed by address);
//! * content: every block is filled with a pattern derived from its id and
//!   checked before every free and resize; a resize preserves the prefix;
//!   zeroed memory really is zero (including the tail added by
//!   `grow_zeroed`, even when the block reuses dirty memory);
//! * `usable_size(ptr) >= size` (and the `Allocator` slice length too).
//!
//! The same model runs through four front ends: the `Allocator` trait with
//! the default configuration, the `Allocator` trait with the custom
//! configuration `Rulloc::<3>::with_bucket_sizes([8, 16, 24])`, the
//! C-style API (`allocate_bytes` / `reallocate_bytes` / `deallocate_bytes`)
//! and `GlobalAlloc`.
//!
//! Operation sequences come from proptest (under Miri, where a case takes
//! seconds, 2 cases of up to 40 operations per front end) and from a
//! deterministic xorshift generator (under Miri, 120 operations a run).

mod common;

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;
use std::collections::BTreeMap;

use allocator_api2::alloc::Allocator;
use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use rulloc::Rulloc;

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

/// Live bytes above which the model turns allocations into frees, so a
/// sequence never holds more than this much memory.
const MAX_LIVE_BYTES: usize = scaled(96 * MIB, 8 * MIB);

/// One step of a sequence. `pick` selects a live block modulo their count.
#[derive(Clone, Debug)]
enum Op {
    Alloc {
        size: usize,
        align: usize,
        zeroed: bool,
    },
    Free {
        pick: usize,
    },
    Grow {
        pick: usize,
        extra: usize,
        align: Option<usize>,
        zeroed: bool,
    },
    Shrink {
        pick: usize,
        keep: u64,
        align: Option<usize>,
    },
}

/// A front end to one Rulloc instance.
trait Frontend {
    /// Whether a resize may change the alignment (`GlobalAlloc::realloc`
    /// keeps the old one).
    const CHANGES_ALIGN: bool;
    /// Whether `size == 0` is allowed and returns a unique pointer.
    const UNIQUE_ZERO_SIZE: bool;
    /// Smallest size the API accepts (`GlobalAlloc` forbids 0).
    const MIN_SIZE: usize;
    /// Whether the caller may write the whole `usable_size` (C-style API).
    const WRITES_USABLE: bool;
    /// Whether `grow(.., zeroed = true)` zeroes the new tail.
    const GROWS_ZEROED: bool;

    /// Returns the pointer and the length the allocator reported (at least
    /// `size`; just `size` for APIs that report nothing).
    fn alloc(&self, size: usize, align: usize, zeroed: bool) -> Option<(NonNull<u8>, usize)>;
    /// # Safety
    /// `ptr` is live with layout `(size, align)`.
    unsafe fn free(&self, ptr: NonNull<u8>, size: usize, align: usize);
    /// # Safety
    /// `ptr` is live with layout `old`; `new.size() >= old.size()`.
    unsafe fn grow(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
        zeroed: bool,
    ) -> Option<(NonNull<u8>, usize)>;
    /// # Safety
    /// `ptr` is live with layout `old`; `new.size() <= old.size()`.
    unsafe fn shrink(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Option<(NonNull<u8>, usize)>;
    /// # Safety
    /// `ptr` is live.
    unsafe fn usable_size(&self, ptr: NonNull<u8>) -> usize;
}

/// The `allocator_api2::alloc::Allocator` implementation.
struct ViaAllocator<'a, const N: usize>(&'a Rulloc<N>);

impl<const N: usize> Frontend for ViaAllocator<'_, N> {
    const CHANGES_ALIGN: bool = true;
    // `Allocator::allocate` may return a dangling pointer for zero sizes.
    const UNIQUE_ZERO_SIZE: bool = false;
    const MIN_SIZE: usize = 0;
    const WRITES_USABLE: bool = false;
    const GROWS_ZEROED: bool = true;

    fn alloc(&self, size: usize, align: usize, zeroed: bool) -> Option<(NonNull<u8>, usize)> {
        let layout = Layout::from_size_align(size, align).unwrap();
        let r = if zeroed {
            self.0.allocate_zeroed(layout)
        } else {
            self.0.allocate(layout)
        };
        r.ok().map(|s| (s.cast(), s.len()))
    }

    unsafe fn free(&self, ptr: NonNull<u8>, size: usize, align: usize) {
        let layout = Layout::from_size_align(size, align).unwrap();
        // SAFETY: the caller guarantees `ptr` is live with this layout.
        unsafe { self.0.deallocate(ptr, layout) }
    }

    unsafe fn grow(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
        zeroed: bool,
    ) -> Option<(NonNull<u8>, usize)> {
        // SAFETY: the caller guarantees `ptr` is live with layout `old` and
        // that `new` is at least as large.
        let r = unsafe {
            if zeroed {
                self.0.grow_zeroed(ptr, old, new)
            } else {
                self.0.grow(ptr, old, new)
            }
        };
        r.ok().map(|s| (s.cast(), s.len()))
    }

    unsafe fn shrink(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Option<(NonNull<u8>, usize)> {
        // SAFETY: the caller guarantees `ptr` is live with layout `old` and
        // that `new` is no larger.
        let r = unsafe { self.0.shrink(ptr, old, new) };
        r.ok().map(|s| (s.cast(), s.len()))
    }

    unsafe fn usable_size(&self, ptr: NonNull<u8>) -> usize {
        // SAFETY: the caller guarantees `ptr` is live.
        unsafe { self.0.usable_size(ptr.as_ptr()) }
    }
}

/// The C-style API: `allocate_bytes`, `reallocate_bytes`,
/// `deallocate_bytes`.
struct ViaBytes<'a, const N: usize>(&'a Rulloc<N>);

impl<const N: usize> Frontend for ViaBytes<'_, N> {
    const CHANGES_ALIGN: bool = true;
    const UNIQUE_ZERO_SIZE: bool = true;
    const MIN_SIZE: usize = 0;
    const WRITES_USABLE: bool = true;
    const GROWS_ZEROED: bool = false;

    fn alloc(&self, size: usize, align: usize, zeroed: bool) -> Option<(NonNull<u8>, usize)> {
        let p = if zeroed {
            self.0.allocate_zeroed_bytes(size, align)
        } else {
            self.0.allocate_bytes(size, align)
        };
        NonNull::new(p).map(|p| (p, size))
    }

    unsafe fn free(&self, ptr: NonNull<u8>, _size: usize, _align: usize) {
        // SAFETY: the caller guarantees `ptr` is live.
        unsafe { self.0.deallocate_bytes(ptr.as_ptr()) }
    }

    unsafe fn grow(
        &self,
        ptr: NonNull<u8>,
        _old: Layout,
        new: Layout,
        _zeroed: bool,
    ) -> Option<(NonNull<u8>, usize)> {
        // SAFETY: the caller guarantees `ptr` is live.
        let p = unsafe {
            self.0
                .reallocate_bytes(ptr.as_ptr(), new.size(), new.align())
        };
        NonNull::new(p).map(|p| (p, new.size()))
    }

    unsafe fn shrink(
        &self,
        ptr: NonNull<u8>,
        _old: Layout,
        new: Layout,
    ) -> Option<(NonNull<u8>, usize)> {
        // SAFETY: the caller guarantees `ptr` is live.
        let p = unsafe {
            self.0
                .reallocate_bytes(ptr.as_ptr(), new.size(), new.align())
        };
        NonNull::new(p).map(|p| (p, new.size()))
    }

    unsafe fn usable_size(&self, ptr: NonNull<u8>) -> usize {
        // SAFETY: the caller guarantees `ptr` is live.
        unsafe { self.0.usable_size(ptr.as_ptr()) }
    }
}

/// `core::alloc::GlobalAlloc`.
struct ViaGlobal<'a, const N: usize>(&'a Rulloc<N>);

impl<const N: usize> Frontend for ViaGlobal<'_, N> {
    const CHANGES_ALIGN: bool = false;
    const UNIQUE_ZERO_SIZE: bool = true;
    const MIN_SIZE: usize = 1;
    const WRITES_USABLE: bool = false;
    const GROWS_ZEROED: bool = false;

    fn alloc(&self, size: usize, align: usize, zeroed: bool) -> Option<(NonNull<u8>, usize)> {
        let layout = Layout::from_size_align(size, align).unwrap();
        assert!(size > 0);
        // SAFETY: `layout` has a non-zero size.
        let p = unsafe {
            if zeroed {
                self.0.alloc_zeroed(layout)
            } else {
                self.0.alloc(layout)
            }
        };
        NonNull::new(p).map(|p| (p, size))
    }

    unsafe fn free(&self, ptr: NonNull<u8>, size: usize, align: usize) {
        let layout = Layout::from_size_align(size, align).unwrap();
        // SAFETY: the caller guarantees `ptr` is live with this layout.
        unsafe { self.0.dealloc(ptr.as_ptr(), layout) }
    }

    unsafe fn grow(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
        _zeroed: bool,
    ) -> Option<(NonNull<u8>, usize)> {
        assert_eq!(old.align(), new.align());
        assert!(new.size() > 0);
        // SAFETY: the caller guarantees `ptr` is live with layout `old`; the
        // new size is non-zero and a valid layout size for `old.align()`.
        let p = unsafe { self.0.realloc(ptr.as_ptr(), old, new.size()) };
        NonNull::new(p).map(|p| (p, new.size()))
    }

    unsafe fn shrink(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Option<(NonNull<u8>, usize)> {
        // SAFETY: the caller guarantees `ptr` is live with layout `old`; this
        // `grow` only passes it to `realloc`, which accepts a smaller
        // non-zero size as well.
        unsafe { self.grow(ptr, old, new, false) }
    }

    unsafe fn usable_size(&self, ptr: NonNull<u8>) -> usize {
        // SAFETY: the caller guarantees `ptr` is live.
        unsafe { self.0.usable_size(ptr.as_ptr()) }
    }
}

/// A live block in the model.
#[derive(Clone, Debug)]
struct Block {
    ptr: NonNull<u8>,
    size: usize,
    align: usize,
    /// Reported length (`Allocator` slice length, else the size).
    len: usize,
    /// Bytes filled with the pattern of `id`.
    written: usize,
    /// Bytes this block owns for the overlap check (0: not tracked).
    extent: usize,
    id: u64,
}

/// The reference model plus the front end it drives.
struct Model<'f, F: Frontend> {
    f: &'f F,
    live: Vec<Block>,
    /// Start address -> (end address, id) of every tracked live block.
    ranges: BTreeMap<usize, (usize, u64)>,
    live_bytes: usize,
    next_id: u64,
    step: usize,
}

impl<'f, F: Frontend> Model<'f, F> {
    fn new(f: &'f F) -> Self {
        Self {
            f,
            live: Vec::new(),
            ranges: BTreeMap::new(),
            live_bytes: 0,
            next_id: 0,
            step: 0,
        }
    }

    fn fresh_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Checks a new block, fills it, and records it.
    ///
    /// `zero_from..zero_to` must be zero; `keep` leading bytes must hold the
    /// pattern of `old_id`.
    fn admit(
        &mut self,
        ptr: NonNull<u8>,
        size: usize,
        align: usize,
        len: usize,
        keep: (usize, u64),
        zero: (usize, usize),
    ) {
        let what = format!("step {}", self.step);
        assert_aligned(ptr.as_ptr(), align, &what);
        assert!(len >= size, "{what}: reported length {len} < size {size}");
        // A zero-size `Allocator` block may be a dangling pointer unless the
        // allocator handed out bytes with it.
        let real = size > 0 || len > 0 || F::UNIQUE_ZERO_SIZE;
        let usable = if real {
            // SAFETY: `ptr` was just returned by the allocator and is live.
            let u = unsafe { self.f.usable_size(ptr) };
            assert!(u >= size, "{what}: usable_size {u} < size {size}");
            u
        } else {
            0
        };
        // SAFETY: the allocator returned `len >= keep.0` and `len >= zero.1`
        // bytes at `ptr`, all initialized (copied or zeroed) by contract.
        unsafe {
            check(
                ptr.as_ptr(),
                keep.0,
                keep.1,
                &format!("{what}: preserved prefix"),
            );
            check_zero(
                ptr.as_ptr(),
                zero.0,
                zero.1,
                &format!("{what}: zeroed memory"),
            );
        }
        let id = self.fresh_id();
        let written = if F::WRITES_USABLE {
            usable.max(len)
        } else {
            len
        };
        let extent = if real { written.max(usable).max(1) } else { 0 };
        if extent > 0 {
            let start = ptr.as_ptr() as usize;
            let end = start
                .checked_add(extent)
                .expect("block wraps the address space");
            if let Some((&s, &(e, id))) = self.ranges.range(..=start).next_back() {
                assert!(
                    e <= start,
                    "{what}: new block {start:#x}..{end:#x} overlaps block {id} at {s:#x}..{e:#x}"
                );
            }
            if let Some((&s, &(e, id))) = self.ranges.range(start..).next() {
                assert!(
                    s >= end,
                    "{what}: new block {start:#x}..{end:#x} overlaps block {id} at {s:#x}..{e:#x}"
                );
            }
            self.ranges.insert(start, (end, id));
        }
        // SAFETY: `written` bytes at `ptr` are owned by this block: the
        // requested or reported length, or the usable size where the API
        // allows writing it.
        unsafe { fill(ptr.as_ptr(), written, id) };
        self.live_bytes += size;
        self.live.push(Block {
            ptr,
            size,
            align,
            len,
            written,
            extent,
            id,
        });
    }

    /// Checks the pattern of live block `i` and takes it out of the model.
    fn retire(&mut self, i: usize) -> Block {
        let b = self.live.swap_remove(i);
        // SAFETY: the block is live and `written` bytes were filled.
        unsafe {
            check(
                b.ptr.as_ptr(),
                b.written,
                b.id,
                &format!("step {}: before free/resize", self.step),
            )
        };
        if b.extent > 0 {
            self.ranges.remove(&(b.ptr.as_ptr() as usize));
        }
        self.live_bytes -= b.size;
        b
    }

    fn apply(&mut self, op: &Op) {
        self.step += 1;
        match *op {
            Op::Alloc {
                size,
                align,
                zeroed,
            } => {
                let size = size.max(F::MIN_SIZE);
                if self.live_bytes + size > MAX_LIVE_BYTES {
                    return self.apply(&Op::Free { pick: size });
                }
                let (ptr, len) = self.f.alloc(size, align, zeroed).unwrap_or_else(|| {
                    panic!(
                        "step {}: allocation of {size} (align {align}) failed",
                        self.step
                    )
                });
                let zero_to = if zeroed { len } else { 0 };
                self.admit(ptr, size, align, len, (0, 0), (0, zero_to));
            }
            Op::Free { pick } => {
                if self.live.is_empty() {
                    return;
                }
                let b = self.retire(pick % self.live.len());
                // SAFETY: `b` was live with this layout and is now out of the
                // model, so it is freed exactly once.
                unsafe { self.f.free(b.ptr, b.size, b.align) };
            }
            Op::Grow {
                pick,
                extra,
                align,
                zeroed,
            } => {
                if self.live.is_empty() {
                    return;
                }
                let i = pick % self.live.len();
                let old = &self.live[i];
                let new_size = (old.size + extra).max(F::MIN_SIZE);
                if self.live_bytes + extra > MAX_LIVE_BYTES {
                    return self.apply(&Op::Free { pick });
                }
                let new_align = match align {
                    Some(a) if F::CHANGES_ALIGN => a,
                    _ => old.align,
                };
                let b = self.retire(i);
                let old_l = Layout::from_size_align(b.size, b.align).unwrap();
                let new_l = Layout::from_size_align(new_size, new_align).unwrap();
                // SAFETY: `b` is live with layout `old_l`, `new_l` is no
                // smaller, and `b` is out of the model.
                let r = unsafe { self.f.grow(b.ptr, old_l, new_l, zeroed) };
                let (ptr, len) = r.unwrap_or_else(|| {
                    panic!("step {}: grow {} -> {new_size} failed", self.step, b.size)
                });
                // Bytes past the old block's reported length are zero after
                // `grow_zeroed` (`Allocator` semantics: the old block may have
                // been longer than its layout).
                let zero = if zeroed && F::GROWS_ZEROED {
                    (b.len.max(b.size), len)
                } else {
                    (0, 0)
                };
                self.admit(ptr, new_size, new_align, len, (b.size, b.id), zero);
            }
            Op::Shrink { pick, keep, align } => {
                if self.live.is_empty() {
                    return;
                }
                let i = pick % self.live.len();
                let old = &self.live[i];
                let new_size = ((keep % (old.size as u64 + 1)) as usize).max(F::MIN_SIZE);
                if new_size > old.size {
                    return;
                }
                let new_align = match align {
                    Some(a) if F::CHANGES_ALIGN => a,
                    _ => old.align,
                };
                let b = self.retire(i);
                let old_l = Layout::from_size_align(b.size, b.align).unwrap();
                let new_l = Layout::from_size_align(new_size, new_align).unwrap();
                // SAFETY: `b` is live with layout `old_l`, `new_l` is no
                // larger, and `b` is out of the model.
                let r = unsafe { self.f.shrink(b.ptr, old_l, new_l) };
                let (ptr, len) = r.unwrap_or_else(|| {
                    panic!("step {}: shrink {} -> {new_size} failed", self.step, b.size)
                });
                self.admit(ptr, new_size, new_align, len, (new_size, b.id), (0, 0));
            }
        }
    }

    /// Frees everything still live (checking each block first).
    fn finish(mut self) {
        while !self.live.is_empty() {
            self.apply(&Op::Free { pick: 0 });
        }
        assert!(self.ranges.is_empty());
    }
}

/// Replays `ops` through `f` and frees whatever is left.
fn run<F: Frontend>(f: &F, ops: &[Op]) {
    let mut m = Model::new(f);
    for op in ops {
        m.apply(op);
    }
    m.finish();
}

/// A deterministic operation sequence (xorshift), sizes up to `big`.
fn random_ops(seed: u64, count: usize, big: usize, max_big_align: usize) -> Vec<Op> {
    let mut rng = XorShift::new(seed);
    (0..count)
        .map(|_| {
            let pick = rng.below(1 << 20);
            let align = if rng.chance(1, 5) {
                Some(rng.align(max_big_align))
            } else {
                None
            };
            match rng.below(9) {
                0..=3 => Op::Alloc {
                    size: rng.size(big),
                    align: rng.align(max_big_align),
                    zeroed: rng.chance(1, 3),
                },
                4..=5 => Op::Free { pick },
                6..=7 => Op::Grow {
                    pick,
                    extra: rng.size(big),
                    align,
                    zeroed: rng.chance(1, 2),
                },
                _ => Op::Shrink {
                    pick,
                    keep: rng.next_u64(),
                    align,
                },
            }
        })
        .collect()
}

// ---------------------------------------------------------------- proptest

fn size_strategy() -> impl Strategy<Value = usize> {
    prop_oneof![
        10 => 0..=64usize,
        6 => 0..=KIB,
        3 => 0..=16 * KIB,
        2 => 0..=300 * KIB,
        1 => MIB..=6 * MIB,
    ]
}

fn align_strategy() -> impl Strategy<Value = usize> {
    prop_oneof![
        30 => (0u32..=12).prop_map(|s| 1usize << s),
        1 => (16u32..=21).prop_map(|s| 1usize << s),
    ]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let pick = any::<usize>();
    let maybe_align = || proptest::option::weighted(0.2, align_strategy());
    prop_oneof![
        4 => (size_strategy(), align_strategy(), proptest::bool::weighted(0.3))
            .prop_map(|(size, align, zeroed)| Op::Alloc { size, align, zeroed }),
        2 => pick.prop_map(|pick| Op::Free { pick }),
        2 => (any::<usize>(), size_strategy(), maybe_align(), any::<bool>())
            .prop_map(|(pick, extra, align, zeroed)| Op::Grow { pick, extra, align, zeroed }),
        1 => (any::<usize>(), any::<u64>(), maybe_align())
            .prop_map(|(pick, keep, align)| Op::Shrink { pick, keep, align }),
    ]
}

fn ops_strategy() -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(op_strategy(), 1..scaled(100, 40))
}

/// 64 cases (2 under Miri, where one case takes seconds) unless
/// `PROPTEST_CASES` says otherwise. Under Miri the environment is isolated,
/// so `PROPTEST_CASES` is only seen with `-Zmiri-disable-isolation` (or
/// `-Zmiri-env-forward=PROPTEST_CASES`).
fn runner() -> TestRunner {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(scaled(64, 2) as u32);
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 2048,
        ..Config::default()
    })
}

fn proptest_model<F: Frontend>(f: &F) {
    runner()
        .run(&ops_strategy(), |ops| {
            run(f, &ops);
            Ok(())
        })
        .unwrap();
}

#[test]
fn proptest_allocator_default_config() {
    let a = Rulloc::default();
    proptest_model(&ViaAllocator(&a));
}

#[test]
fn proptest_allocator_custom_buckets() {
    let a = Rulloc::<3>::with_bucket_sizes([8, 16, 24]);
    proptest_model(&ViaAllocator(&a));
}

#[test]
fn proptest_bytes_api_default_config() {
    let a = Rulloc::default();
    proptest_model(&ViaBytes(&a));
}

#[test]
fn proptest_bytes_api_custom_buckets() {
    let a = Rulloc::<3>::with_bucket_sizes([8, 16, 24]);
    proptest_model(&ViaBytes(&a));
}

#[test]
fn proptest_global_alloc_default_config() {
    let a = Rulloc::default();
    proptest_model(&ViaGlobal(&a));
}

// ------------------------------------------------------ deterministic (Miri)

/// Operations per deterministic sequence.
const DET_OPS: usize = scaled(2000, 120);
/// Largest alignment the deterministic sequences use.
const DET_MAX_ALIGN: usize = scaled(2 * MIB, 64 * KIB);

fn deterministic<F: Frontend>(f: &F, seed: u64) {
    for s in 0..scaled(3, 1) as u64 {
        run(f, &random_ops(seed + s, DET_OPS, BIG, DET_MAX_ALIGN));
    }
}

#[test]
fn deterministic_allocator_default_config() {
    let a = Rulloc::default();
    deterministic(&ViaAllocator(&a), 1);
}

#[test]
fn deterministic_allocator_custom_buckets() {
    let a = Rulloc::<3>::with_bucket_sizes([8, 16, 24]);
    deterministic(&ViaAllocator(&a), 2);
}

#[test]
fn deterministic_bytes_api_default_config() {
    let a = Rulloc::default();
    deterministic(&ViaBytes(&a), 3);
}

#[test]
fn deterministic_bytes_api_custom_buckets() {
    let a = Rulloc::<3>::with_bucket_sizes([8, 16, 24]);
    deterministic(&ViaBytes(&a), 4);
}

#[test]
fn deterministic_global_alloc_default_config() {
    let a = Rulloc::default();
    deterministic(&ViaGlobal(&a), 5);
}

/// Many small blocks only: the region free lists are exercised hardest here
/// (allocation and freeing in random order, interleaved with resizes that
/// stay small).
#[test]
fn deterministic_small_blocks_only() {
    let a = Rulloc::<3>::with_bucket_sizes([8, 16, 24]);
    let f = ViaBytes(&a);
    let mut rng = XorShift::new(99);
    let mut m = Model::new(&f);
    for _ in 0..scaled(20_000, 150) {
        let op = match rng.below(5) {
            0..=1 => Op::Alloc {
                size: rng.range(0, 48),
                align: 1 << rng.range(0, 4),
                zeroed: rng.chance(1, 4),
            },
            2 => Op::Free {
                pick: rng.below(1 << 20),
            },
            3 => Op::Grow {
                pick: rng.below(1 << 20),
                extra: rng.range(0, 32),
                align: None,
                zeroed: false,
            },
            _ => Op::Shrink {
                pick: rng.below(1 << 20),
                keep: rng.next_u64(),
                align: None,
            },
        };
        m.apply(&op);
    }
    m.finish();
}
