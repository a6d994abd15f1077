//! Differential fuzzing of the Rust API against a shadow model.
//!
//! Each input is a sequence of operations on up to three allocator
//! instances at once (two with the default buckets, one with four custom
//! buckets), through all three interfaces (`allocate_bytes` & co.,
//! `allocator_api2::Allocator`, `GlobalAlloc`): allocate, allocate zeroed,
//! grow, grow zeroed, shrink, realloc to any alignment, free (on this
//! thread or on a helper thread, which takes the remote-free paths),
//! allocate on a short-lived thread (whose heap is abandoned when it exits),
//! `usable_size`, `collect`, purge delays, impossible requests.
//!
//! The shadow model knows every live block (instance, size, alignment,
//! pattern id) and checks, after every operation:
//!
//! * alignment of every block, `usable_size >= size`;
//! * no two live blocks overlap, over their whole usable size, across all
//!   instances;
//! * content: every block holds its own pattern; zeroed memory is zero; a
//!   resized block keeps its prefix; a failed resize keeps the whole block;
//! * impossible requests return null / `AllocError`;
//! * the instance's `bytes_in_use` covers the live blocks and is 0 once
//!   all are freed and collected.
//!
//! Large blocks are checked on a sample of their bytes (the first and last
//! pages and a word in every page) so that an iteration stays fast.
#![no_main]

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::NonNull;

use allocator_api2::alloc::Allocator;
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use rulloc::{Rulloc, Stats, DEFAULT_BUCKET_SIZES};
use rulloc_fuzz::*;
/// The model refuses new blocks beyond these totals (keeps RSS bounded).
const MAX_LIVE_BYTES: usize = 192 * MIB;
const MAX_LIVE_BLOCKS: usize = 2048;
/// Threads one input may start (thread creation is slow).
const MAX_THREADS: usize = 3;

/// Custom bucket sizes of the third instance.
const CUSTOM: [usize; 4] = [8, 24, 512, 4096];

/// The allocator operations under test, for instances of any `N`.
trait Instance: Sync {
    fn bytes(&self, size: usize, align: usize, zeroed: bool) -> *mut u8;
    fn api(&self, layout: Layout, zeroed: bool) -> Option<NonNull<u8>>;
    /// # Safety
    /// `layout.size() > 0`.
    unsafe fn global(&self, layout: Layout, zeroed: bool) -> *mut u8;
    /// # Safety
    /// `p` is live in this instance with `old`.
    unsafe fn free(&self, p: *mut u8, old: Layout, api: Api);
    /// # Safety
    /// `p` is live in this instance with `old`; the new layout follows the
    /// API's rules (see [`Model::resize`]).
    unsafe fn resize(
        &self,
        p: *mut u8,
        old: Layout,
        new: Layout,
        api: Api,
        zeroed: bool,
    ) -> *mut u8;
    /// # Safety
    /// `p` is live in this instance.
    unsafe fn usable(&self, p: *const u8) -> usize;
    fn stats(&self) -> Stats;
    fn collect(&self);
    fn set_purge_delay_ms(&self, ms: usize);
}

impl<const N: usize> Instance for Rulloc<N> {
    fn bytes(&self, size: usize, align: usize, zeroed: bool) -> *mut u8 {
        if zeroed {
            self.allocate_zeroed_bytes(size, align)
        } else {
            self.allocate_bytes(size, align)
        }
    }

    fn api(&self, layout: Layout, zeroed: bool) -> Option<NonNull<u8>> {
        let r = if zeroed {
            self.allocate_zeroed(layout)
        } else {
            self.allocate(layout)
        };
        r.ok().map(|s| {
            assert_eq!(s.len(), layout.size(), "Allocator slice length");
            s.cast()
        })
    }

    unsafe fn global(&self, layout: Layout, zeroed: bool) -> *mut u8 {
        // SAFETY: forwarded (non-zero size).
        unsafe {
            if zeroed {
                self.alloc_zeroed(layout)
            } else {
                self.alloc(layout)
            }
        }
    }

    unsafe fn free(&self, p: *mut u8, old: Layout, api: Api) {
        // SAFETY: forwarded.
        unsafe {
            match api {
                Api::Bytes => self.deallocate_bytes(p),
                Api::Allocator => self.deallocate(NonNull::new_unchecked(p), old),
                Api::Global => self.dealloc(p, old),
            }
        }
    }

    unsafe fn resize(
        &self,
        p: *mut u8,
        old: Layout,
        new: Layout,
        api: Api,
        zeroed: bool,
    ) -> *mut u8 {
        // SAFETY: forwarded; the caller picked an API whose rules `new`
        // follows.
        unsafe {
            match api {
                Api::Bytes => self.reallocate_bytes(p, new.size(), new.align()),
                Api::Global => self.realloc(p, old, new.size()),
                Api::Allocator => {
                    let p = NonNull::new_unchecked(p);
                    let r = if new.size() >= old.size() {
                        if zeroed {
                            self.grow_zeroed(p, old, new)
                        } else {
                            self.grow(p, old, new)
                        }
                    } else {
                        self.shrink(p, old, new)
                    };
                    match r {
                        Ok(s) => {
                            assert_eq!(s.len(), new.size(), "Allocator slice length");
                            s.cast().as_ptr()
                        }
                        Err(_) => core::ptr::null_mut(),
                    }
                }
            }
        }
    }

    unsafe fn usable(&self, p: *const u8) -> usize {
        // SAFETY: forwarded.
        unsafe { self.usable_size(p) }
    }

    fn stats(&self) -> Stats {
        Rulloc::stats(self)
    }

    fn collect(&self) {
        Rulloc::collect(self)
    }

    fn set_purge_delay_ms(&self, ms: usize) {
        Rulloc::set_purge_delay_ms(self, ms)
    }
}

#[derive(Arbitrary, Debug, Clone, Copy, PartialEq)]
enum Api {
    Bytes,
    Allocator,
    Global,
}

/// A size, biased towards the interesting ranges.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Size {
    Zero,
    Tiny(u8),
    Small(u16),
    /// A default bucket size plus a small delta.
    Bucket(u8, i8),
    Medium(u32),
    /// Around the large/huge boundary (2 MiB).
    Large(u32),
    Huge(u32),
}

impl Size {
    fn get(self) -> usize {
        match self {
            Size::Zero => 0,
            Size::Tiny(n) => n as usize % 65,
            Size::Small(n) => n as usize % (8 * KIB + 1),
            Size::Bucket(i, d) => {
                let base = DEFAULT_BUCKET_SIZES[i as usize % DEFAULT_BUCKET_SIZES.len()];
                base.saturating_add_signed((d % 3) as isize)
            }
            Size::Medium(n) => n as usize % (256 * KIB),
            Size::Large(n) => 60 * KIB + n as usize % (2 * MIB + 128 * KIB),
            Size::Huge(n) => 2 * MIB + n as usize % (14 * MIB),
        }
    }
}

/// An alignment: mostly small, sometimes up to a few MiB, rarely 1 GiB.
fn align_of(a: u8) -> usize {
    let shift = match a {
        0..=199 => a % 7,
        200..=249 => 7 + a % 10,
        250..=254 => 17 + (a % 5),
        255 => 30,
    };
    1 << shift
}

#[derive(Arbitrary, Debug)]
enum Op {
    Alloc {
        inst: u8,
        size: Size,
        align: u8,
        zeroed: bool,
        api: Api,
    },
    Free {
        idx: u16,
        remote: bool,
    },
    Resize {
        idx: u16,
        size: Size,
        align: u8,
        api: Api,
        zeroed: bool,
    },
    Usable {
        idx: u16,
    },
    AllocOnThread {
        inst: u8,
        size: Size,
        align: u8,
        count: u8,
    },
    Impossible {
        inst: u8,
        which: u8,
        idx: u16,
    },
    Collect {
        inst: u8,
    },
    PurgeDelay {
        inst: u8,
        zero: bool,
    },
    Stats {
        inst: u8,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    /// How many instances the input uses (1..=3).
    instances: u8,
    ops: Vec<Op>,
    /// Free every block at the end (and check `bytes_in_use == 0`), or drop
    /// the instances with blocks still live.
    free_at_end: bool,
}

/// A live block in the model.
struct Block {
    addr: usize,
    size: usize,
    align: usize,
    inst: usize,
    /// Pattern id; also how the API contract's `Layout` is rebuilt.
    id: u64,
    /// Which interface allocated it (GlobalAlloc blocks are never 0 bytes).
    api: Api,
}

impl Block {
    fn layout(&self) -> Layout {
        Layout::from_size_align(self.size, self.align).unwrap()
    }
}

struct Model<'a> {
    instances: &'a [&'a dyn Instance],
    blocks: Vec<Block>,
    ranges: Ranges,
    live_bytes: usize,
    next_id: u64,
    threads: usize,
}

impl<'a> Model<'a> {
    fn pick_inst(&self, inst: u8) -> usize {
        inst as usize % self.instances.len()
    }

    fn pick(&self, idx: u16) -> Option<usize> {
        (!self.blocks.is_empty()).then(|| idx as usize % self.blocks.len())
    }

    fn fits(&self, size: usize) -> bool {
        self.blocks.len() < MAX_LIVE_BLOCKS && self.live_bytes + size <= MAX_LIVE_BYTES
    }

    /// Records a new block after checking alignment, usable size and
    /// non-overlap; fills it with its pattern.
    fn insert(&mut self, p: *mut u8, size: usize, align: usize, inst: usize, api: Api) {
        let addr = p as usize;
        assert!(addr != 0);
        assert_eq!(addr % align, 0, "block {addr:#x} not aligned to {align}");
        // SAFETY: `p` is a live block of instance `inst`.
        let usable = unsafe { self.instances[inst].usable(p) };
        assert!(
            usable >= size,
            "usable_size {usable} < size {size} at {addr:#x}"
        );
        let id = self.next_id;
        self.next_id += 1;
        self.ranges.insert(addr, usable, id);
        // SAFETY: a live block of `size` bytes.
        unsafe { fill(addr, size, id) };
        self.live_bytes += size;
        self.blocks.push(Block {
            addr,
            size,
            align,
            inst,
            id,
            api,
        });
    }

    /// Takes block `i` out of the model after checking its content.
    fn remove(&mut self, i: usize, what: &str) -> Block {
        let b = self.blocks.swap_remove(i);
        // SAFETY: the block is live until the caller frees it.
        unsafe { check_content(b.addr, b.size, b.id, what) };
        self.ranges.remove(b.addr);
        self.live_bytes -= b.size;
        b
    }

    fn alloc(&mut self, inst: u8, size: Size, align: u8, zeroed: bool, api: Api) {
        let (inst, mut size, align) = (self.pick_inst(inst), size.get(), align_of(align));
        if api == Api::Global {
            size = size.max(1);
        }
        if !self.fits(size) {
            return;
        }
        let a = self.instances[inst];
        let layout = Layout::from_size_align(size, align).unwrap();
        let p = match api {
            Api::Bytes => a.bytes(size, align, zeroed),
            Api::Allocator => a
                .api(layout, zeroed)
                .map_or(core::ptr::null_mut(), NonNull::as_ptr),
            // SAFETY: `size > 0`.
            Api::Global => unsafe { a.global(layout, zeroed) },
        };
        assert!(
            !p.is_null(),
            "allocation of {size} bytes aligned to {align} failed"
        );
        if zeroed {
            // SAFETY: a new block of `size` bytes.
            unsafe { check_zero(p as usize, 0, size, "zeroed allocation") };
        }
        self.insert(p, size, align, inst, api);
    }

    fn free(&mut self, idx: u16, remote: bool) {
        let Some(i) = self.pick(idx) else { return };
        let b = self.remove(i, "before free");
        let a = self.instances[b.inst];
        let layout = b.layout();
        let api = b.api;
        if remote {
            let p = SendPtr(b.addr);
            on_helper(move || {
                let p = p;
                // SAFETY: the block is live and leaves the model: freed once.
                unsafe { a.free(p.0 as *mut u8, layout, api) }
            });
        } else {
            // SAFETY: the block is live and leaves the model: freed once.
            unsafe { a.free(b.addr as *mut u8, layout, api) }
        }
    }

    fn resize(&mut self, idx: u16, size: Size, align: u8, api: Api, zeroed: bool) {
        let Some(i) = self.pick(idx) else { return };
        let old = &self.blocks[i];
        let (old_size, old_align) = (old.size, old.align);
        let mut new_size = size.get();
        // Each API's rules: GlobalAlloc keeps the alignment and needs a
        // non-zero size; Allocator and `reallocate_bytes` may change both.
        let new_align = match api {
            Api::Global => {
                new_size = new_size.max(1);
                old_align
            }
            _ => align_of(align),
        };
        if new_size > old_size && !self.fits(new_size - old_size) {
            return;
        }
        let b = self.remove(i, "before resize");
        let a = self.instances[b.inst];
        let old_layout = b.layout();
        let new_layout = Layout::from_size_align(new_size, new_align).unwrap();
        // SAFETY: the block is live; the layouts follow the API's rules.
        let p = unsafe { a.resize(b.addr as *mut u8, old_layout, new_layout, api, zeroed) };
        assert!(
            !p.is_null(),
            "resize {old_size}/{old_align} -> {new_size}/{new_align} via {api:?} failed"
        );
        let keep = old_size.min(new_size);
        // The prefix survived, on the sample of offsets the old size used.
        let q = p as *const u8;
        for_sampled(old_size, |o| {
            if o < keep {
                // SAFETY: `o < new_size`: inside the new block.
                let got = unsafe { q.add(o).read() };
                assert_eq!(
                    got,
                    pattern(b.id, o),
                    "resize {old_size} -> {new_size} via {api:?} lost byte {o} of block {}",
                    b.id
                );
            }
        });
        if zeroed && api == Api::Allocator && new_size > old_size {
            // SAFETY: the resized block has `new_size` bytes.
            unsafe { check_zero(p as usize, old_size, new_size, "grow_zeroed tail") };
        }
        let api = if b.api == Api::Global || api == Api::Global {
            // Keep non-zero sizes for blocks GlobalAlloc may free.
            if new_size == 0 {
                Api::Bytes
            } else {
                Api::Global
            }
        } else {
            b.api
        };
        let inst = b.inst;
        // Reinsert with the same id, so that the new block's untouched
        // sampled bytes are rewritten with the same pattern.
        self.insert_resized(p, new_size, new_align, inst, api, b.id);
    }

    fn insert_resized(
        &mut self,
        p: *mut u8,
        size: usize,
        align: usize,
        inst: usize,
        api: Api,
        id: u64,
    ) {
        let next = self.next_id;
        self.next_id = id;
        self.insert(p, size, align, inst, api);
        self.next_id = next;
    }

    fn usable(&mut self, idx: u16) {
        let Some(i) = self.pick(idx) else { return };
        let b = &self.blocks[i];
        let a = self.instances[b.inst];
        // SAFETY: live block.
        let usable = unsafe { a.usable(b.addr as *const u8) };
        assert!(usable >= b.size);
        // Every usable byte is writable without touching a neighbour (the
        // overlap check covers the usable range): scribble on the slack.
        let slack = (usable - b.size).min(4 * KIB);
        // SAFETY: the usable range belongs to the block.
        unsafe { (b.addr as *mut u8).add(b.size).write_bytes(0xA5, slack) };
        // SAFETY: live block.
        unsafe { check_content(b.addr, b.size, b.id, "after writing the slack") };
    }

    fn alloc_on_thread(&mut self, inst: u8, size: Size, align: u8, count: u8) {
        if self.threads >= MAX_THREADS {
            return;
        }
        self.threads += 1;
        let inst = self.pick_inst(inst);
        let (size, align) = (size.get(), align_of(align).min(64 * KIB));
        let count = 1 + count as usize % 16;
        if !self.fits(size * count) {
            return;
        }
        let a = self.instances[inst];
        // The thread binds a heap, allocates, and exits: its heap is
        // abandoned with live blocks, which this thread frees later.
        let blocks: Vec<usize> = std::thread::scope(|s| {
            s.spawn(|| {
                (0..count)
                    .map(|_| a.bytes(size, align, false) as usize)
                    .collect()
            })
            .join()
            .unwrap()
        });
        for p in blocks {
            assert!(p != 0, "allocation on a thread failed");
            self.insert(p as *mut u8, size, align, inst, Api::Bytes);
        }
    }

    fn impossible(&mut self, inst: u8, which: u8, idx: u16) {
        let a = self.instances[self.pick_inst(inst)];
        let big = isize::MAX as usize;
        match which % 6 {
            0 => assert!(a.bytes(usize::MAX, 8, false).is_null()),
            1 => assert!(a.bytes(big, 1, true).is_null()),
            2 => assert!(a.bytes(big - 4095, 4096, false).is_null()),
            3 => {
                let layout = Layout::from_size_align(big - 63, 64).unwrap();
                assert!(a.api(layout, which & 8 != 0).is_none());
            }
            4 => {
                let layout = Layout::from_size_align(big - 7, 8).unwrap();
                // SAFETY: non-zero size.
                assert!(unsafe { a.global(layout, which & 8 != 0) }.is_null());
            }
            _ => {
                // A failed resize leaves the block as it was.
                let Some(i) = self.pick(idx) else { return };
                let b = &self.blocks[i];
                let a = self.instances[b.inst];
                let new = Layout::from_size_align(big - 63, 64).unwrap();
                let api = if which & 8 != 0 {
                    Api::Allocator
                } else {
                    Api::Bytes
                };
                // SAFETY: live block; a request this big always fails.
                let q = unsafe { a.resize(b.addr as *mut u8, b.layout(), new, api, false) };
                assert!(q.is_null(), "an impossible resize succeeded");
                // SAFETY: the block is still live.
                unsafe { check_content(b.addr, b.size, b.id, "after a failed resize") };
            }
        }
    }

    fn check_stats(&self, inst: u8) {
        let inst = self.pick_inst(inst);
        let live: usize = self
            .blocks
            .iter()
            .filter(|b| b.inst == inst)
            .map(|b| b.size)
            .sum();
        let stats = self.instances[inst].stats();
        assert!(
            stats.bytes_in_use >= live,
            "bytes_in_use {} < live bytes {live}: {stats:?}",
            stats.bytes_in_use
        );
    }
}

fn run(input: Input) {
    let a0 = Rulloc::new();
    let a1 = Rulloc::new();
    let a2 = Rulloc::<4>::with_bucket_sizes(CUSTOM);
    let all: [&dyn Instance; 3] = [&a0, &a2, &a1];
    let n = 1 + input.instances as usize % 3;
    let mut model = Model {
        instances: &all[..n],
        blocks: Vec::new(),
        ranges: Ranges::default(),
        live_bytes: 0,
        next_id: 1,
        threads: 0,
    };
    for op in input.ops {
        match op {
            Op::Alloc {
                inst,
                size,
                align,
                zeroed,
                api,
            } => model.alloc(inst, size, align, zeroed, api),
            Op::Free { idx, remote } => model.free(idx, remote),
            Op::Resize {
                idx,
                size,
                align,
                api,
                zeroed,
            } => model.resize(idx, size, align, api, zeroed),
            Op::Usable { idx } => model.usable(idx),
            Op::AllocOnThread {
                inst,
                size,
                align,
                count,
            } => model.alloc_on_thread(inst, size, align, count),
            Op::Impossible { inst, which, idx } => model.impossible(inst, which, idx),
            Op::Collect { inst } => model.instances[model.pick_inst(inst)].collect(),
            Op::PurgeDelay { inst, zero } => {
                model.instances[model.pick_inst(inst)].set_purge_delay_ms(if zero { 0 } else { 10 })
            }
            Op::Stats { inst } => model.check_stats(inst),
        }
    }
    for b in &model.blocks {
        // SAFETY: live blocks.
        unsafe { check_content(b.addr, b.size, b.id, "at the end") };
    }
    if input.free_at_end {
        while !model.blocks.is_empty() {
            model.free(0, false);
        }
        for (i, a) in model.instances.iter().enumerate() {
            a.collect();
            let stats = a.stats();
            assert_eq!(
                stats.bytes_in_use, 0,
                "instance {i}: bytes in use after freeing everything: {stats:?}"
            );
        }
    }
    // Dropping the instances (possibly with live blocks) unmaps everything.
}

fuzz_target!(|input: Input| run(input));
