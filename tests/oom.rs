//! Out of memory: the OS refuses memory and every allocation path returns
//! null / `AllocError`. Nothing panics, nothing aborts, old blocks survive a
//! failed reallocation, and the allocator works again once memory is freed.
//!
//! Each test re-runs this test binary as a child process (selected with
//! `--exact` and an environment variable). The child lowers its own address
//! space limit with `setrlimit(RLIMIT_AS)` to what it uses now plus a
//! headroom — 0, 2, 8, 64 or 256 MiB, one test each: from "not one more
//! segment" to "a few hundred 1 MiB blocks" — exhausts it through
//! standalone `Rulloc`s, checks every failure path, recovers, and exits 0.
//! The parent asserts that it did (a panic, an abort or a signal fails).
//!
//! Entry points covered (the C API's are in `capi/tests/robustness.rs`):
//! `allocate_bytes` (small, 64 KiB, 1 MiB, large, huge, aligned to 4 KiB,
//! 2 MiB and 1 GiB), `allocate_zeroed_bytes`, `reallocate_bytes` (small
//! grow, large grow, huge grow, a shrink that must move), `Allocator`
//! (`allocate`, `allocate_zeroed`, `grow`, `grow_zeroed`, `shrink`),
//! `GlobalAlloc` (`alloc`, `alloc_zeroed`, `realloc`), `Vec::try_reserve`,
//! an instance with custom buckets, and a thread whose first allocation
//! (which has to create a heap) comes while memory is exhausted.
//!
//! The child's own `std` (test harness, panic messages) uses the system
//! allocator, so the child allocates nothing from `std` between exhausting
//! memory and freeing it again: results are recorded in a fixed array and
//! asserted only after the allocator gave everything back.
#![cfg(target_os = "linux")]

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicUsize, Ordering};

use allocator_api2::alloc::Allocator;
use rulloc::Rulloc;

mod common;

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;
const GIB: usize = 1 << 30;

/// Headroom from which every kind of block must be available again after
/// freeing. Below it, requests that need a *new* segment may still fail
/// after everything was freed: a 4 MiB segment is mapped aligned to its
/// size by over-mapping (up to 8 MiB of address space for a moment), and a
/// thread's first heap needs one more mapping; the 0, 2 and 8 MiB children
/// only require that nothing crashes and that old blocks stay intact.
const ROOMY: usize = 16 * MIB;

/// Environment variable that turns a test into the child; its value is the
/// headroom in MiB.
const CHILD_ENV: &str = "RULLOC_OOM_CHILD_HEADROOM_MIB";

/// Runs the test named `name` in a child process with `headroom_mib` MiB of
/// address space beyond what it has mapped at the start (or, in the child,
/// runs the checks).
fn parent_or_child(name: &str, headroom_mib: usize) {
    if let Some(value) = std::env::var_os(CHILD_ENV) {
        let headroom: usize = value.to_str().unwrap().parse().unwrap();
        assert_eq!(headroom, headroom_mib, "the child runs the wrong test");
        child(headroom * MIB);
        return;
    }
    let start = std::time::Instant::now();
    let out = common::run_test_in_child(name, CHILD_ENV, &headroom_mib.to_string());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "child ({headroom_mib} MiB headroom) failed with {}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("1 passed"),
        "the child did not run the test\n{stdout}\n{stderr}"
    );
    print!("{stdout}");
    println!("{name}: {:.2?}", start.elapsed());
}

#[test]
#[cfg_attr(miri, ignore)] // Spawns a process and calls setrlimit; Miri supports neither.
fn out_of_memory_no_headroom() {
    parent_or_child("out_of_memory_no_headroom", 0);
}

#[test]
#[cfg_attr(miri, ignore)] // As above.
fn out_of_memory_2_mib_headroom() {
    parent_or_child("out_of_memory_2_mib_headroom", 2);
}

#[test]
#[cfg_attr(miri, ignore)] // As above.
fn out_of_memory_8_mib_headroom() {
    parent_or_child("out_of_memory_8_mib_headroom", 8);
}

#[test]
#[cfg_attr(miri, ignore)] // As above.
fn out_of_memory_64_mib_headroom() {
    parent_or_child("out_of_memory_64_mib_headroom", 64);
}

#[test]
#[cfg_attr(miri, ignore)] // As above.
fn out_of_memory_returns_null_and_recovers() {
    parent_or_child("out_of_memory_returns_null_and_recovers", 256);
}

/// Bytes of address space the process has mapped now (`/proc/self/statm`,
/// first field, in pages).
fn mapped_now() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = statm.split_whitespace().next().unwrap().parse().unwrap();
    // SAFETY: `sysconf` has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    pages * page
}

fn limit_address_space(bytes: usize) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid `rlimit` to write to.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_AS, &mut lim) }, 0);
    lim.rlim_cur = bytes as libc::rlim_t;
    // SAFETY: `lim` is a valid `rlimit`; lowering the soft limit is always
    // allowed.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &lim) }, 0);
}

/// An intrusive list of blocks: each block stores the previous head in its
/// first word, so exhausting memory needs no bookkeeping allocation.
struct Chain {
    head: *mut u8,
    len: usize,
}

impl Chain {
    fn new() -> Self {
        Self {
            head: ptr::null_mut(),
            len: 0,
        }
    }

    /// # Safety
    /// `p` is a live block of at least 8 bytes, aligned to 8.
    unsafe fn push(&mut self, p: *mut u8) {
        // SAFETY: the caller guarantees 8 aligned, writable bytes.
        unsafe { p.cast::<*mut u8>().write(self.head) };
        self.head = p;
        self.len += 1;
    }

    fn pop(&mut self) -> Option<*mut u8> {
        if self.head.is_null() {
            return None;
        }
        let p = self.head;
        // SAFETY: every block in the chain stores the next one in its first
        // word.
        self.head = unsafe { p.cast::<*mut u8>().read() };
        self.len -= 1;
        Some(p)
    }

    /// Frees every block of the chain with `free`.
    fn release(&mut self, mut free: impl FnMut(*mut u8)) {
        while let Some(p) = self.pop() {
            free(p);
        }
    }
}

/// Allocates with `f` until it returns null or `max` blocks were taken.
/// Returns whether it ended with null.
fn exhaust(chain: &mut Chain, max: usize, mut f: impl FnMut() -> *mut u8) -> bool {
    for _ in 0..max {
        let p = f();
        if p.is_null() {
            return true;
        }
        // SAFETY: every size the child exhausts with is >= 8 and aligned to
        // at least 8.
        unsafe { chain.push(p) };
    }
    false
}

/// Results of the child's checks, recorded without allocating.
struct Checks {
    names: [&'static str; 96],
    ok: [bool; 96],
    n: usize,
}

impl Checks {
    fn record(&mut self, name: &'static str, ok: bool) {
        self.names[self.n] = name;
        self.ok[self.n] = ok;
        self.n += 1;
    }
}

/// A block kept across the exhaustion: allocated before the limit, filled
/// with pattern `id`, expected intact after every failed resize.
#[derive(Clone, Copy)]
struct Kept {
    ptr: *mut u8,
    size: usize,
    id: u64,
}

impl Kept {
    fn new(ptr: *mut u8, size: usize, id: u64) -> Self {
        assert!(!ptr.is_null());
        // SAFETY: a fresh block of `size` bytes.
        unsafe { fill(ptr, size, id) };
        Self { ptr, size, id }
    }

    fn intact(&self) -> bool {
        // SAFETY: the block is live (failed resizes keep it).
        unsafe { find_mismatch(self.ptr, self.size, self.id).is_none() }
    }
}

/// Coordination with the helper thread, without allocating.
static THREAD_STEP: AtomicUsize = AtomicUsize::new(0);
/// What the helper thread saw: 1 null, 2 a valid block (both fine).
static THREAD_UNDER_OOM: AtomicUsize = AtomicUsize::new(0);
/// 1 if the helper thread could allocate after memory was freed.
static THREAD_AFTER: AtomicUsize = AtomicUsize::new(0);
/// Set by the helper thread once it runs: std sets up its signal stack (an
/// mmap) when a thread starts, which must happen before the limit.
static THREAD_STARTED: AtomicUsize = AtomicUsize::new(0);

fn wait_for_step(step: usize) {
    while THREAD_STEP.load(Ordering::Acquire) < step {
        std::thread::yield_now();
    }
}

/// A thread created before the limit whose first allocation comes while
/// memory is exhausted: binding it needs a new heap, which cannot be
/// mapped. It must get null (or a valid block), and allocate normally once
/// memory was freed.
fn helper_thread(a: &Rulloc) {
    THREAD_STARTED.store(1, Ordering::Release);
    wait_for_step(1);
    let p = a.allocate_bytes(48, 8);
    let under = if p.is_null() {
        1
    } else if p.addr() % 8 == 0 {
        // SAFETY: a live 48-byte block.
        unsafe {
            fill(p, 48, 77);
            a.deallocate_bytes(p);
        }
        2
    } else {
        3
    };
    THREAD_UNDER_OOM.store(under, Ordering::Release);
    THREAD_STEP.store(2, Ordering::Release);
    wait_for_step(3);
    let mut ok = true;
    for size in [48, 5000, 300 * KIB] {
        let p = a.allocate_bytes(size, 16);
        ok &= !p.is_null();
        if !p.is_null() {
            // SAFETY: a live block of `size` bytes.
            unsafe {
                fill(p, size, 78);
                ok &= find_mismatch(p, size, 78).is_none();
                a.deallocate_bytes(p);
            }
        }
    }
    THREAD_AFTER.store(usize::from(ok), Ordering::Release);
}

fn child(headroom: usize) {
    let a = Rulloc::default();
    let b = Rulloc::<3>::with_bucket_sizes([8, 16, 24]);
    let mut c = Checks {
        names: [""; 96],
        ok: [false; 96],
        n: 0,
    };

    // Blocks that must survive failed reallocations, made before the limit.
    let keep = Kept::new(a.allocate_bytes(MIB, 16), MIB, 1);
    let small_layout = Layout::from_size_align(100, 8).unwrap();
    let keep_small = Kept::new(a.allocate(small_layout).unwrap().as_ptr().cast(), 100, 2);
    let keep_huge = Kept::new(a.allocate_bytes(3 * MIB, 8), 3 * MIB, 3);
    let shrink_layout = Layout::from_size_align(MIB + 5, 8).unwrap();
    let mut keep_shrink = Kept::new(
        a.allocate(shrink_layout).unwrap().as_ptr().cast(),
        MIB + 5,
        4,
    );
    let keep_b = Kept::new(b.allocate_bytes(24, 8), 24, 5);
    let mut blocks = Chain::new();
    let mut smalls = Chain::new();
    let mut b_blocks = Chain::new();

    // The child's own `std` (test harness output, thread bookkeeping)
    // allocates from glibc: give glibc a warm heap it keeps, so those small
    // allocations never need new address space under the limit (with no
    // headroom, any growth of glibc's heap would abort the child, whatever
    // Rulloc does).
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only tunes glibc's malloc; called before any thread.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 << 20);
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
    drop(std::hint::black_box(vec![0u8; 4 << 20]));

    std::thread::scope(|s| {
        s.spawn(|| helper_thread(&a));
        while THREAD_STARTED.load(Ordering::Acquire) == 0 {
            std::thread::yield_now();
        }

        let limit = mapped_now() + headroom;
        limit_address_space(limit);

        // Exhaust memory: 1 MiB blocks, then 64 KiB, then small ones, then
        // small zeroed ones, then aligned ones. Each phase must end with
        // null.
        c.record(
            "1 MiB blocks end with null",
            exhaust(&mut blocks, 4 * (GIB / MIB), || a.allocate_bytes(MIB, 8)),
        );
        let mib_blocks = blocks.len;
        c.record(
            "64 KiB blocks end with null",
            exhaust(&mut blocks, 4 * (GIB / (64 * KIB)), || {
                a.allocate_bytes(64 * KIB, 8)
            }),
        );
        c.record(
            "small blocks end with null",
            exhaust(&mut smalls, 50_000_000, || a.allocate_bytes(16, 8)),
        );
        c.record(
            "small zeroed blocks end with null",
            exhaust(&mut smalls, 50_000_000, || a.allocate_zeroed_bytes(24, 8)),
        );
        c.record(
            "aligned blocks end with null",
            exhaust(&mut smalls, 50_000_000, || a.allocate_bytes(64, 4096)),
        );
        c.record(
            "custom buckets: small blocks end with null",
            exhaust(&mut b_blocks, 50_000_000, || b.allocate_bytes(16, 8)),
        );
        c.record(
            "many blocks were handed out before",
            mib_blocks >= headroom / MIB / 2,
        );

        // Every path refuses now.
        c.record("small", a.allocate_bytes(8, 8).is_null());
        c.record("large 1.5 MiB", a.allocate_bytes(1536 * KIB, 8).is_null());
        c.record("large 64 MiB", a.allocate_bytes(64 * MIB, 8).is_null());
        c.record("huge 1 GiB", a.allocate_bytes(GIB, 8).is_null());
        c.record("huge 3 GiB", a.allocate_bytes(3 * GIB, 8).is_null());
        c.record(
            "zeroed 64 MiB",
            a.allocate_zeroed_bytes(64 * MIB, 8).is_null(),
        );
        c.record("zeroed 1 GiB", a.allocate_zeroed_bytes(GIB, 4096).is_null());
        c.record(
            "aligned 2 MiB",
            a.allocate_bytes(4 * MIB, 2 * MIB).is_null(),
        );
        c.record("aligned 1 GiB", a.allocate_bytes(64, GIB).is_null());
        c.record("custom buckets: small", b.allocate_bytes(8, 8).is_null());
        c.record(
            "custom buckets: large",
            b.allocate_bytes(200 * KIB, 8).is_null(),
        );
        c.record("custom buckets: huge", b.allocate_bytes(GIB, 8).is_null());
        let huge = Layout::from_size_align(GIB, 8).unwrap();
        c.record("Allocator::allocate", a.allocate(huge).is_err());
        c.record(
            "Allocator::allocate_zeroed",
            a.allocate_zeroed(huge).is_err(),
        );
        // SAFETY: `huge` has a non-zero size.
        unsafe {
            c.record("GlobalAlloc::alloc", GlobalAlloc::alloc(&a, huge).is_null());
            c.record("GlobalAlloc::alloc_zeroed", a.alloc_zeroed(huge).is_null());
        }

        // A thread with no heap yet allocates now.
        THREAD_STEP.store(1, Ordering::Release);
        wait_for_step(2);

        // Failed growth keeps the old blocks.
        // SAFETY: the kept blocks are live; failed calls leave them so.
        unsafe {
            c.record(
                "reallocate_bytes grow large",
                a.reallocate_bytes(keep.ptr, 512 * MIB, 16).is_null(),
            );
            c.record("large block intact", keep.intact());
            c.record(
                "reallocate_bytes grow huge",
                a.reallocate_bytes(keep_huge.ptr, 2 * GIB, 8).is_null(),
            );
            c.record(
                "reallocate_bytes huge to 1 GiB alignment",
                a.reallocate_bytes(keep_huge.ptr, 3 * MIB, GIB).is_null(),
            );
            c.record("huge block intact", keep_huge.intact());
            c.record(
                "reallocate_bytes grow small",
                a.reallocate_bytes(keep_small.ptr, 64 * MIB, 8).is_null(),
            );
            let big = Layout::from_size_align(512 * MIB, 8).unwrap();
            let small = NonNull::new(keep_small.ptr).unwrap();
            c.record("Allocator::grow", a.grow(small, small_layout, big).is_err());
            c.record(
                "Allocator::grow_zeroed",
                a.grow_zeroed(small, small_layout, big).is_err(),
            );
            c.record(
                "GlobalAlloc::realloc",
                a.realloc(keep_small.ptr, small_layout, 512 * MIB).is_null(),
            );
            c.record("small block intact", keep_small.intact());
            c.record(
                "custom buckets: reallocate_bytes grow",
                b.reallocate_bytes(keep_b.ptr, GIB, 8).is_null(),
            );
            c.record("custom buckets: block intact", keep_b.intact());
            // A shrink that must move (to a size class with no region yet)
            // either fails and keeps the block, or moves it with its prefix.
            let to = Layout::from_size_align(3000, 8).unwrap();
            match a.shrink(NonNull::new(keep_shrink.ptr).unwrap(), shrink_layout, to) {
                Err(_) => c.record(
                    "Allocator::shrink failed, block intact",
                    keep_shrink.intact(),
                ),
                Ok(p) => {
                    keep_shrink.ptr = p.as_ptr().cast();
                    keep_shrink.size = 3000;
                    c.record(
                        "Allocator::shrink moved, prefix intact",
                        keep_shrink.intact(),
                    );
                }
            }
        }
        {
            let mut v: allocator_api2::vec::Vec<u8, &Rulloc> = allocator_api2::vec::Vec::new_in(&a);
            c.record("Vec::try_reserve", v.try_reserve(GIB).is_err());
        }

        let counts = (blocks.len, smalls.len, b_blocks.len);
        // Free everything the exhaustion took: allocating works again.
        blocks.release(|p| {
            // SAFETY: the block is live and leaves its chain: freed once.
            unsafe { a.deallocate_bytes(p) }
        });
        smalls.release(|p| {
            // SAFETY: the block is a live one of `a` and leaves its chain:
            // freed once.
            unsafe { a.deallocate_bytes(p) }
        });
        b_blocks.release(|p| {
            // SAFETY: the block is a live one of `b` and leaves its chain:
            // freed once.
            unsafe { b.deallocate_bytes(p) }
        });
        a.collect();
        b.collect();

        let p = a.allocate_bytes(MIB, 8);
        // A 1 MiB block only if the exhaustion ever got one.
        c.record("1 MiB after freeing", !p.is_null() || counts.0 == 0);
        let s = a.allocate_bytes(40, 8);
        c.record("small after freeing", !s.is_null());
        let z = a.allocate_zeroed_bytes(200 * KIB, 64);
        c.record(
            "zeroed 200 KiB after freeing",
            !z.is_null() || headroom < ROOMY,
        );
        let bs = b.allocate_bytes(16, 8);
        c.record("custom buckets: small after freeing", !bs.is_null());
        // SAFETY: each non-null block is live with the size it was asked
        // for; each is freed once.
        unsafe {
            if !z.is_null() {
                c.record("zeroed is zero", (0..200 * KIB).all(|i| *z.add(i) == 0));
                a.deallocate_bytes(z);
            }
            if !p.is_null() {
                fill(p, MIB, 6);
                c.record("new block usable", find_mismatch(p, MIB, 6).is_none());
                a.deallocate_bytes(p);
            }
            a.deallocate_bytes(s);
            b.deallocate_bytes(bs);
            let g = a.reallocate_bytes(keep.ptr, 2 * MIB, 16);
            c.record("grow after freeing", !g.is_null() || headroom < ROOMY);
            let grown = Kept {
                ptr: if g.is_null() { keep.ptr } else { g },
                ..keep
            };
            c.record("grown block kept its content", grown.intact());
            a.deallocate_bytes(grown.ptr);
            a.deallocate_bytes(keep_small.ptr);
            a.deallocate_bytes(keep_huge.ptr);
            a.deallocate_bytes(keep_shrink.ptr);
            b.deallocate_bytes(keep_b.ptr);
        }

        a.collect();
        THREAD_STEP.store(3, Ordering::Release);
        // (The scope joins the thread.)
        println!(
            "blocks: {} large, {} small, {} from custom buckets",
            counts.0, counts.1, counts.2
        );
    });
    c.record(
        "thread under OOM: null or a valid block",
        matches!(THREAD_UNDER_OOM.load(Ordering::Acquire), 1 | 2),
    );
    c.record(
        "thread allocates after freeing",
        THREAD_AFTER.load(Ordering::Acquire) == 1 || headroom < ROOMY,
    );
    a.collect();
    drop(a);
    drop(b);

    // The allocator is usable again in a fresh instance too.
    let fresh = Rulloc::<3>::with_bucket_sizes([8, 16, 24]);
    let p = fresh.allocate_bytes(3 * MIB, 8);
    c.record("fresh instance", !p.is_null());
    if !p.is_null() {
        // SAFETY: `p` is live.
        unsafe { fresh.deallocate_bytes(p) };
    }
    drop(fresh);

    println!("headroom {} MiB", headroom / MIB);
    let mut failed = false;
    for i in 0..c.n {
        println!(
            "{:<45} {}",
            c.names[i],
            if c.ok[i] { "ok" } else { "FAILED" }
        );
        failed |= !c.ok[i];
    }
    assert!(!failed, "some out-of-memory checks failed (see above)");
}

/// Period of a block pattern: a prime, so a block copied to a wrong offset
/// does not match its own pattern.
const PERIOD: usize = 251;

/// Byte `i` of the pattern of block `id` (never zero, so zeroed memory
/// never passes for a filled block).
fn pattern_byte(id: u64, i: usize) -> u8 {
    let h = id.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    ((h >> 56) as u8).wrapping_add(((i % PERIOD) as u8).wrapping_mul(((h >> 48) as u8) | 1)) | 1
}

/// Fills `len` bytes at `ptr` with the pattern of `id`: one period, then
/// the filled prefix doubled with `memcpy` (fast in debug builds too).
///
/// # Safety
/// `ptr` is valid for writes of `len` bytes.
unsafe fn fill(ptr: *mut u8, len: usize, id: u64) {
    for i in 0..PERIOD.min(len) {
        // SAFETY: `i < len` (the caller's guarantee).
        unsafe { ptr.add(i).write(pattern_byte(id, i)) };
    }
    let mut done = PERIOD.min(len);
    while done < len {
        // Whole periods keep the pattern periodic.
        let n = (done / PERIOD * PERIOD).min(len - done);
        // SAFETY: `ptr[..done]` is filled, `ptr[done..done + n]` is
        // writable and the two do not overlap.
        unsafe { core::ptr::copy_nonoverlapping(ptr, ptr.add(done), n) };
        done += n;
    }
}

/// The first offset of `ptr[..len]` that does not hold the pattern of `id`.
/// The fast path compares the first period, then the block with itself
/// shifted by one period (equal exactly when the block is periodic).
///
/// # Safety
/// `ptr` is valid for reads of `len` initialised bytes.
unsafe fn find_mismatch(ptr: *const u8, len: usize, id: u64) -> Option<usize> {
    // SAFETY: `len` readable, initialised bytes (the caller's guarantee).
    let bytes = unsafe { core::slice::from_raw_parts(ptr, len) };
    let first = PERIOD.min(len);
    let head_ok = (0..first).all(|i| bytes[i] == pattern_byte(id, i));
    if head_ok && (len <= PERIOD || bytes[PERIOD..] == bytes[..len - PERIOD]) {
        return None;
    }
    (0..len).find(|&i| bytes[i] != pattern_byte(id, i))
}
