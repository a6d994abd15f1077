//! Differential fuzzing of the C API (`capi/src/lib.rs`) against a shadow
//! model.
//!
//! The C API's source is linked into this fuzzer as an rlib
//! (`capi-rlib/`), so its `#[no_mangle] malloc` & co. are the malloc of the
//! whole process, exactly as with `librulloc.a`: libFuzzer, glibc and the
//! C++ runtime allocate through Rulloc too, while the shadow model's own
//! Rust allocations go to glibc (the C API's `#[global_allocator]`). Run it
//! with `-s none`: a sanitizer runtime would bring its own `malloc`.
//!
//! Each input is a sequence of calls: `malloc`, `calloc` (overflowing
//! products too), `realloc` (grow, shrink, to 0, from NULL),
//! `reallocarray`, `posix_memalign` / `aligned_alloc` / `memalign` with any
//! alignment (invalid ones too), `valloc`, `pvalloc`, `free` / `cfree` (on
//! this thread or another one), `malloc_usable_size` (writing the whole
//! usable size), `malloc_trim`, and requests that cannot succeed. After
//! every call the model checks glibc's contract as `capi/src/lib.rs`
//! documents it: alignment (16, 8 for <= 8 bytes, the requested one, the
//! page), errno (`ENOMEM`, `EINVAL`) and untouched out-parameters on
//! failure, no overlap between live blocks over their usable size, content
//! (patterns, zeroed `calloc`, prefixes kept by `realloc`, the whole block
//! kept by a failed `realloc`).
#![no_main]

use core::ffi::c_void;
use core::ptr;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use rulloc_capi as c;
use rulloc_fuzz::*;

/// The model refuses new blocks beyond these totals (keeps RSS bounded).
const MAX_LIVE_BYTES: usize = 192 * MIB;
const MAX_LIVE_BLOCKS: usize = 2048;

/// A size, biased towards the interesting ranges.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Size {
    Zero,
    Tiny(u8),
    Small(u16),
    Medium(u32),
    Large(u32),
    Huge(u32),
}

impl Size {
    fn get(self) -> usize {
        match self {
            Size::Zero => 0,
            Size::Tiny(n) => n as usize % 33,
            Size::Small(n) => n as usize % (8 * KIB + 1),
            Size::Medium(n) => n as usize % (256 * KIB),
            Size::Large(n) => 60 * KIB + n as usize % (2 * MIB + 128 * KIB),
            Size::Huge(n) => 2 * MIB + n as usize % (14 * MIB),
        }
    }
}

/// An alignment argument: mostly a power of two (up to 2 MiB, rarely
/// 1 GiB), sometimes anything at all (0, odd, not a power of two, huge).
fn align_arg(a: u16) -> usize {
    match a >> 8 {
        0..=199 => 1 << (a % 12),
        200..=239 => 1 << (12 + a % 10),
        240..=244 => 1 << 30,
        245..=254 => a as usize & 0xFF,
        _ => usize::MAX - (a as usize & 0xF),
    }
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Aligned {
    PosixMemalign,
    /// `aligned_alloc`.
    C11,
    Memalign,
    Valloc,
    Pvalloc,
}

#[derive(Arbitrary, Debug)]
enum Op {
    Malloc(Size),
    Calloc(u16, Size),
    Aligned(Aligned, u16, Size),
    Realloc { idx: u16, size: Size },
    ReallocNull(Size),
    ReallocZero { idx: u16 },
    Reallocarray { idx: u16, count: u16, size: Size },
    Free { idx: u16, remote: bool, cfree: bool },
    Usable { idx: u16 },
    Trim,
    Impossible { which: u8, idx: u16 },
}

/// A live block in the model.
struct Block {
    addr: usize,
    /// Bytes the model filled (the requested size, or the usable size once
    /// `malloc_usable_size` was asked).
    len: usize,
    id: u64,
}

struct Model {
    blocks: Vec<Block>,
    ranges: Ranges,
    live_bytes: usize,
    next_id: u64,
    page: usize,
}

fn errno() -> i32 {
    // SAFETY: `__errno_location` returns this thread's errno.
    unsafe { *libc::__errno_location() }
}

fn set_errno(value: i32) {
    // SAFETY: `__errno_location` returns this thread's errno.
    unsafe { *libc::__errno_location() = value };
}

/// The alignment every plain allocation of `n` bytes gets.
fn malloc_align(n: usize) -> usize {
    if n <= 8 {
        8
    } else {
        16
    }
}

impl Model {
    fn pick(&self, idx: u16) -> Option<usize> {
        (!self.blocks.is_empty()).then(|| idx as usize % self.blocks.len())
    }

    fn fits(&self, size: usize) -> bool {
        self.blocks.len() < MAX_LIVE_BLOCKS && self.live_bytes + size <= MAX_LIVE_BYTES
    }

    /// Checks a new block (alignment, usable size, overlap) and records it
    /// under `id`, filled with its pattern.
    fn insert(&mut self, p: *mut c_void, size: usize, align: usize, id: u64, what: &str) {
        let addr = p as usize;
        assert!(addr != 0, "{what}({size}) returned NULL");
        assert_eq!(
            addr % align,
            0,
            "{what}({size}) = {addr:#x}, not aligned to {align}"
        );
        // SAFETY: a live block of ours.
        let usable = unsafe { c::malloc_usable_size(p) };
        assert!(usable >= size, "{what}: usable size {usable} < {size}");
        self.ranges.insert(addr, usable, id);
        // SAFETY: `size` writable bytes.
        unsafe { fill(addr, size, id) };
        self.live_bytes += size;
        self.blocks.push(Block {
            addr,
            len: size,
            id,
        });
    }

    fn new_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Takes block `i` out of the model after checking its content.
    fn remove(&mut self, i: usize, what: &str) -> Block {
        let b = self.blocks.swap_remove(i);
        // SAFETY: the block is live until the caller frees it.
        unsafe { check_content(b.addr, b.len, b.id, what) };
        self.ranges.remove(b.addr);
        self.live_bytes -= b.len;
        b
    }

    fn malloc(&mut self, size: Size) {
        let size = size.get();
        if !self.fits(size) {
            return;
        }
        // SAFETY: plain call.
        let p = unsafe { c::malloc(size) };
        let id = self.new_id();
        self.insert(p, size, malloc_align(size), id, "malloc");
    }

    fn calloc(&mut self, count: u16, size: Size) {
        let (count, size) = (count as usize % 64, size.get());
        let total = count * size;
        if !self.fits(total) {
            return;
        }
        // SAFETY: plain call.
        let p = unsafe { c::calloc(count, size) };
        assert!(!p.is_null(), "calloc({count}, {size}) failed");
        // SAFETY: `total` bytes.
        unsafe { check_zero(p as usize, 0, total, "calloc") };
        let id = self.new_id();
        self.insert(p, total, malloc_align(total), id, "calloc");
    }

    fn aligned(&mut self, which: Aligned, align: u16, size: Size) {
        let (align, size) = (align_arg(align), size.get());
        if !self.fits(size) {
            return;
        }
        let page = self.page;
        let word = core::mem::size_of::<usize>();
        set_errno(0);
        // (block, alignment it must have) or the expected error.
        let (p, expect): (*mut c_void, Result<usize, i32>) = match which {
            Aligned::PosixMemalign => {
                let sentinel = 0x77 as *mut c_void;
                let mut out = sentinel;
                // SAFETY: `out` is writable.
                let rc = unsafe { c::posix_memalign(&mut out, align, size) };
                let valid = align % word == 0 && (align / word).is_power_of_two();
                if !valid {
                    assert_eq!(rc, libc::EINVAL, "posix_memalign(align {align})");
                    assert_eq!(out, sentinel, "posix_memalign wrote *memptr on EINVAL");
                    assert_eq!(errno(), 0, "posix_memalign changed errno on EINVAL");
                    return;
                }
                if align > (1 << 30) {
                    // Valid but too big to ever fit: ENOMEM, untouched.
                    assert_eq!(rc, libc::ENOMEM);
                    assert_eq!(out, sentinel);
                    return;
                }
                assert_eq!(rc, 0, "posix_memalign({align}, {size}) = {rc}");
                (out, Ok(align.max(malloc_align(size))))
            }
            Aligned::C11 => {
                // SAFETY: plain call.
                let p = unsafe { c::aligned_alloc(align, size) };
                if align.is_power_of_two() {
                    (p, Ok(align.max(malloc_align(size))))
                } else {
                    (p, Err(libc::EINVAL))
                }
            }
            Aligned::Memalign => {
                // SAFETY: plain call.
                let p = unsafe { c::memalign(align, size) };
                match align.checked_next_power_of_two() {
                    Some(a) => (p, Ok(a.max(malloc_align(size)))),
                    None => (p, Err(libc::EINVAL)),
                }
            }
            // SAFETY: plain call.
            Aligned::Valloc => (unsafe { c::valloc(size) }, Ok(page)),
            Aligned::Pvalloc => {
                // SAFETY: plain call.
                let p = unsafe { c::pvalloc(size) };
                if !p.is_null() {
                    // SAFETY: a live block.
                    let usable = unsafe { c::malloc_usable_size(p) };
                    let rounded = size.div_ceil(page) * page;
                    assert!(
                        usable >= rounded,
                        "pvalloc({size}): usable {usable} < {rounded}"
                    );
                }
                (p, Ok(page))
            }
        };
        match expect {
            Err(e) => {
                assert!(p.is_null(), "{which:?}(align {align}) should fail");
                assert_eq!(errno(), e, "{which:?}(align {align}): errno");
            }
            Ok(a) if a > (1 << 30) && p.is_null() => {
                // Valid alignments beyond what fits in the address space.
                assert_eq!(errno(), libc::ENOMEM);
            }
            Ok(a) => {
                let id = self.new_id();
                self.insert(p, size, a, id, "aligned allocation");
            }
        }
    }

    /// `realloc(block i, new_size)` through `f` (realloc or reallocarray).
    fn resize(&mut self, i: usize, new_size: usize, f: impl FnOnce(*mut c_void) -> *mut c_void) {
        let old = &self.blocks[i];
        if new_size > old.len && !self.fits(new_size - old.len) {
            return;
        }
        let b = self.remove(i, "before realloc");
        let p = f(b.addr as *mut c_void);
        assert!(!p.is_null(), "realloc({}, {new_size}) failed", b.len);
        let keep = b.len.min(new_size);
        let q = p as *const u8;
        for_sampled(b.len, |o| {
            if o < keep {
                // SAFETY: `o < new_size`, inside the new block.
                let got = unsafe { q.add(o).read() };
                assert_eq!(
                    got,
                    pattern(b.id, o),
                    "realloc {} -> {new_size} lost byte {o}",
                    b.len
                );
            }
        });
        self.insert(p, new_size, malloc_align(new_size), b.id, "realloc");
    }

    fn impossible(&mut self, which: u8, idx: u16) {
        let big = isize::MAX as usize;
        set_errno(0);
        // SAFETY: plain calls; none of them can succeed.
        let p = unsafe {
            match which % 8 {
                0 => c::malloc(usize::MAX),
                1 => c::malloc(big),
                2 => c::calloc(usize::MAX / 2, 3),
                3 => c::calloc(big / 2 + 1, 2),
                4 => c::aligned_alloc(4096, big - 100),
                5 => c::memalign(1 << 20, big),
                6 => c::pvalloc(usize::MAX - 10),
                _ => {
                    let Some(i) = self.pick(idx) else { return };
                    let b = &self.blocks[i];
                    let (addr, len, id) = (b.addr, b.len, b.id);
                    let p = if which & 8 != 0 {
                        c::reallocarray(addr as *mut c_void, usize::MAX / 4, 8)
                    } else {
                        c::realloc(addr as *mut c_void, big)
                    };
                    check_content(addr, len, id, "after a failed realloc");
                    p
                }
            }
        };
        assert!(p.is_null(), "impossible request {} succeeded", which % 8);
        assert_eq!(
            errno(),
            libc::ENOMEM,
            "impossible request {}: errno",
            which % 8
        );
    }

    fn step(&mut self, op: Op) {
        match op {
            Op::Malloc(size) => self.malloc(size),
            Op::Calloc(count, size) => self.calloc(count, size),
            Op::Aligned(which, align, size) => self.aligned(which, align, size),
            Op::Realloc { idx, size } => {
                let Some(i) = self.pick(idx) else { return };
                let size = size.get().max(1);
                // SAFETY: a live block, replaced by the result.
                self.resize(i, size, |p| unsafe { c::realloc(p, size) });
            }
            Op::Reallocarray { idx, count, size } => {
                let Some(i) = self.pick(idx) else { return };
                let (count, size) = (1 + count as usize % 16, size.get().max(1));
                let Some(total) = count.checked_mul(size).filter(|&t| t <= 64 * MIB) else {
                    return;
                };
                // SAFETY: a live block, replaced by the result.
                self.resize(i, total, |p| unsafe { c::reallocarray(p, count, size) });
            }
            Op::ReallocNull(size) => {
                let size = size.get();
                if !self.fits(size) {
                    return;
                }
                // SAFETY: realloc(NULL, n) is malloc(n).
                let p = unsafe { c::realloc(ptr::null_mut(), size) };
                let id = self.new_id();
                self.insert(p, size, malloc_align(size), id, "realloc(NULL)");
            }
            Op::ReallocZero { idx } => {
                let Some(i) = self.pick(idx) else { return };
                let b = self.remove(i, "before realloc(p, 0)");
                // SAFETY: realloc(p, 0) frees p (glibc) and returns NULL.
                let p = unsafe { c::realloc(b.addr as *mut c_void, 0) };
                assert!(p.is_null(), "realloc(p, 0) returned a block");
            }
            Op::Free { idx, remote, cfree } => {
                let Some(i) = self.pick(idx) else { return };
                let b = self.remove(i, "before free");
                let free = move |p: SendPtr| {
                    // SAFETY: the block leaves the model: freed once.
                    unsafe {
                        if cfree {
                            c::cfree(p.0 as *mut c_void)
                        } else {
                            c::free(p.0 as *mut c_void)
                        }
                    }
                };
                let p = SendPtr(b.addr);
                if remote {
                    on_helper(move || free(p));
                } else {
                    free(p);
                }
            }
            Op::Usable { idx } => {
                let Some(i) = self.pick(idx) else { return };
                let b = &self.blocks[i];
                // SAFETY: a live block.
                let usable = unsafe { c::malloc_usable_size(b.addr as *mut c_void) };
                assert!(usable >= b.len);
                // The whole usable size is the program's to use: fill it all
                // (keeping it bounded), and the model checks it from now on.
                if usable <= 4 * MIB && self.fits(usable - b.len) {
                    let (addr, id) = (b.addr, b.id);
                    self.live_bytes += usable - b.len;
                    self.blocks[i].len = usable;
                    // SAFETY: `usable` writable bytes.
                    unsafe { fill(addr, usable, id) };
                }
            }
            Op::Trim => {
                // SAFETY: plain call.
                let rc = unsafe { c::malloc_trim(0) };
                assert!(rc == 0 || rc == 1);
            }
            Op::Impossible { which, idx } => self.impossible(which, idx),
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Input {
    ops: Vec<Op>,
}

fn run(input: Input) {
    check_interposed();
    let mut model = Model {
        blocks: Vec::new(),
        ranges: Ranges::default(),
        live_bytes: 0,
        next_id: 0,
        // SAFETY: plain call.
        page: unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize,
    };
    for op in input.ops {
        model.step(op);
    }
    // Everything is freed: the process shares this allocator with libFuzzer,
    // so nothing may leak from one input to the next.
    while !model.blocks.is_empty() {
        let b = model.remove(0, "at the end");
        // SAFETY: the block leaves the model: freed once.
        unsafe { c::free(b.addr as *mut c_void) };
    }
}

/// Once: the process's `malloc` is this library's (so libFuzzer and libc
/// run on it too), not glibc's.
fn check_interposed() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: plain calls; the block is freed once.
        unsafe {
            let p = libc::malloc(100);
            let usable = c::malloc_usable_size(p);
            assert!(usable >= 100, "libc::malloc is not Rulloc's");
            assert_eq!(
                libc::malloc as *const () as usize,
                c::malloc as *const () as usize,
                "`malloc` does not resolve to the C API under test"
            );
            c::free(p);
        }
    });
}

fuzz_target!(|input: Input| run(input));
