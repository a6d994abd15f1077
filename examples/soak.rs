//! Long soak: a randomized multi-threaded workload for N minutes, checking
//! every byte it wrote, reporting operations done and errors found.
//!
//! ```text
//! cargo run --release --example soak -- --minutes 30 --threads 4
//! cargo run --release --example soak -- --seconds 60          (a short run)
//! ```
//!
//! Every worker thread keeps a table of live blocks and, at random, allocates
//! (small, large, huge; aligned up to 2 MiB; zeroed), reallocates (grow and
//! shrink, checking the prefix), checks and frees them. Blocks come from the
//! `#[global_allocator]` (a `Rulloc`) or from a second, shared `Rulloc`
//! instance with custom buckets. Blocks also move between threads through a
//! shared exchange, so frees cross threads, and workers exit after a random
//! number of operations leaving half of their blocks to the threads that
//! replace them (heaps are abandoned and adopted). The main thread prints
//! progress every 10 seconds; at the end it frees everything and prints the
//! totals. The exit status is 1 if any error was found (a block whose
//! content changed, a misaligned or failed allocation, non-zero "zeroed"
//! memory, bytes of the shared instance still in use after everything was
//! freed), else 0. The soak also counts the blocks it holds, so that a
//! block it lost track of (and so never freed) is reported as its own bug,
//! not mistaken for the allocator's.
//!
//! This is a benchmark-style tool, not a CI test: run it for as long as you
//! like.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rulloc::Rulloc;

#[global_allocator]
static GLOBAL: Rulloc = Rulloc::new();

/// A second instance, shared by every thread, with custom buckets.
static SHARED: Rulloc<6> = Rulloc::with_bucket_sizes([16, 48, 128, 1024, 8192, 65536]);

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;
/// Live blocks per worker.
const SLOTS: usize = 512;
/// Blocks up to this size are checked byte by byte; larger ones on a sample.
const FULL_CHECK: usize = 64 * KIB;
const PAGE: usize = 4 * KIB;

static OPS: AtomicU64 = AtomicU64::new(0);
static ERRORS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);
static THREADS_STARTED: AtomicU64 = AtomicU64::new(0);
/// Blocks allocated and not yet freed by the soak, whichever thread holds
/// them: 0 at the end, or the soak itself lost some (then the allocator
/// rightly counts them in use).
static HELD: AtomicI64 = AtomicI64::new(0);
static STOP: AtomicBool = AtomicBool::new(false);

/// Which allocator a block came from.
#[derive(Clone, Copy, PartialEq)]
enum Source {
    Global,
    Shared,
}

/// A live block.
struct Rec {
    ptr: usize,
    size: usize,
    align: usize,
    id: u64,
    source: Source,
}

/// Blocks waiting to be adopted by another thread.
static EXCHANGE: Mutex<Vec<Rec>> = Mutex::new(Vec::new());

fn error(what: std::fmt::Arguments) {
    let n = ERRORS.fetch_add(1, Ordering::Relaxed);
    if n < 20 {
        eprintln!("soak: ERROR: {what}");
    }
}

fn pattern(id: u64, i: usize) -> u8 {
    let x = (i as u64)
        .wrapping_mul(0x9E37_79B9)
        .wrapping_add(id.wrapping_mul(0xD6E8_FEB8_6659_FD93));
    (x ^ (x >> 29) ^ (x >> 13)) as u8
}

/// The offsets of a `len`-byte block that are filled and checked.
fn for_sampled(len: usize, mut f: impl FnMut(usize)) {
    if len <= FULL_CHECK {
        (0..len).for_each(f);
        return;
    }
    (0..PAGE).for_each(&mut f);
    let mut page = PAGE;
    while page + PAGE <= len - PAGE {
        (page..page + 8).for_each(&mut f);
        page += PAGE;
    }
    (len - PAGE..len).for_each(f);
}

fn fill(ptr: usize, len: usize, id: u64) {
    let p = ptr as *mut u8;
    for_sampled(len, |i| {
        // SAFETY: the worker owns the `len` bytes of this live block.
        unsafe { p.add(i).write(pattern(id, i)) }
    });
}

/// Counts an error unless the first `len` bytes hold the block's pattern.
fn check(ptr: usize, len: usize, id: u64, what: &str) -> bool {
    let p = ptr as *const u8;
    let mut bad = None;
    for_sampled(len, |i| {
        // SAFETY: the worker owns the `len` bytes of this live block.
        if bad.is_none() && unsafe { p.add(i).read() } != pattern(id, i) {
            bad = Some(i);
        }
    });
    if let Some(i) = bad {
        error(format_args!(
            "{what}: block {id} at {ptr:#x} ({len} bytes) corrupted at offset {i}"
        ));
    }
    bad.is_none()
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn size(&mut self) -> usize {
        match self.below(1000) {
            0..=699 => self.below(257),
            700..=949 => self.below(16 * KIB),
            950..=994 => self.below(512 * KIB),
            _ => MIB + self.below(7 * MIB),
        }
    }

    fn align(&mut self) -> usize {
        match self.below(100) {
            0..=89 => 8,
            90..=98 => 1 << (4 + self.below(9)),
            _ => 1 << (16 + self.below(6)),
        }
    }
}

fn allocate(rng: &mut Rng, id: u64) -> Option<Rec> {
    let (size, align) = (rng.size(), rng.align());
    let source = if rng.below(4) == 0 {
        Source::Shared
    } else {
        Source::Global
    };
    let zeroed = rng.below(8) == 0;
    let ptr = match source {
        Source::Shared if zeroed => SHARED.allocate_zeroed_bytes(size, align),
        Source::Shared => SHARED.allocate_bytes(size, align),
        Source::Global => {
            let layout = Layout::from_size_align(size.max(1), align).unwrap();
            // SAFETY: non-zero size.
            unsafe {
                if zeroed {
                    GLOBAL.alloc_zeroed(layout)
                } else {
                    GLOBAL.alloc(layout)
                }
            }
        }
    };
    if ptr.is_null() || ptr as usize % align != 0 {
        error(format_args!(
            "allocation of {size} aligned to {align}: {ptr:p}"
        ));
        return None;
    }
    let size = if source == Source::Global {
        size.max(1)
    } else {
        size
    };
    if zeroed {
        let mut nonzero = None;
        for_sampled(size, |i| {
            // SAFETY: a fresh block of `size` bytes.
            if nonzero.is_none() && unsafe { ptr.add(i).read() } != 0 {
                nonzero = Some(i);
            }
        });
        if let Some(i) = nonzero {
            error(format_args!(
                "zeroed block of {size} bytes: byte {i} is not 0"
            ));
        }
    }
    fill(ptr as usize, size, id);
    BYTES.fetch_add(size as u64, Ordering::Relaxed);
    HELD.fetch_add(1, Ordering::Relaxed);
    Some(Rec {
        ptr: ptr as usize,
        size,
        align,
        id,
        source,
    })
}

fn free(rec: Rec) {
    check(rec.ptr, rec.size, rec.id, "before free");
    HELD.fetch_sub(1, Ordering::Relaxed);
    // SAFETY: the block is live, owned by the caller, freed once.
    unsafe {
        match rec.source {
            Source::Shared => SHARED.deallocate_bytes(rec.ptr as *mut u8),
            Source::Global => GLOBAL.dealloc(
                rec.ptr as *mut u8,
                Layout::from_size_align(rec.size, rec.align).unwrap(),
            ),
        }
    }
}

fn reallocate(rng: &mut Rng, mut rec: Rec) -> Rec {
    check(rec.ptr, rec.size, rec.id, "before realloc");
    let new_size = rng.size().max(1);
    // SAFETY: the block is live and owned by the caller; on failure it is
    // untouched and stays live.
    let p = unsafe {
        match rec.source {
            Source::Shared => SHARED.reallocate_bytes(rec.ptr as *mut u8, new_size, rec.align),
            Source::Global => GLOBAL.realloc(
                rec.ptr as *mut u8,
                Layout::from_size_align(rec.size, rec.align).unwrap(),
                new_size,
            ),
        }
    };
    if p.is_null() || p as usize % rec.align != 0 {
        error(format_args!("realloc {} -> {new_size}: {p:p}", rec.size));
        return rec;
    }
    let keep = rec.size.min(new_size);
    let q = p as *const u8;
    let mut bad = None;
    for_sampled(rec.size, |i| {
        // SAFETY: `i < keep <= new_size`.
        if i < keep && bad.is_none() && unsafe { q.add(i).read() } != pattern(rec.id, i) {
            bad = Some(i);
        }
    });
    if let Some(i) = bad {
        error(format_args!(
            "realloc {} -> {new_size} lost byte {i} of block {}",
            rec.size, rec.id
        ));
    }
    rec.ptr = p as usize;
    rec.size = new_size;
    fill(rec.ptr, rec.size, rec.id);
    rec
}

/// Moves blocks that exited threads left in `exchange` into the empty
/// `slots` of a starting worker: only as many as there are empty slots;
/// the rest stay in the exchange for the next worker or the final free.
/// (Three workers exiting between two of the main thread's checks can
/// leave more than [`SLOTS`] blocks there.)
fn adopt(exchange: &mut Vec<Rec>, slots: &mut [Option<Rec>]) {
    for slot in slots.iter_mut().filter(|slot| slot.is_none()) {
        let Some(rec) = exchange.pop() else {
            break;
        };
        *slot = Some(rec);
    }
}

fn worker(seed: u64) {
    THREADS_STARTED.fetch_add(1, Ordering::Relaxed);
    let mut rng = Rng(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1);
    let mut slots: Vec<Option<Rec>> = (0..SLOTS).map(|_| None).collect();
    let mut next_id = seed << 32;
    adopt(&mut EXCHANGE.lock().unwrap(), &mut slots);
    let life = 50_000 + rng.below(200_000);
    let mut ops = 0;
    while ops < life && !STOP.load(Ordering::Relaxed) {
        let i = rng.below(SLOTS);
        slots[i] = match slots[i].take() {
            None => {
                next_id += 1;
                allocate(&mut rng, next_id)
            }
            Some(rec) => match rng.below(10) {
                0..=2 => Some(reallocate(&mut rng, rec)),
                3 => {
                    // Swap with a block another thread left.
                    let mut ex = EXCHANGE.lock().unwrap();
                    let theirs = if ex.len() >= 64 {
                        let j = rng.below(ex.len());
                        Some(ex.swap_remove(j))
                    } else {
                        None
                    };
                    ex.push(rec);
                    theirs
                }
                _ => {
                    free(rec);
                    None
                }
            },
        };
        ops += 1;
        if ops % 1024 == 0 {
            OPS.fetch_add(1024, Ordering::Relaxed);
        }
    }
    OPS.fetch_add(ops as u64 % 1024, Ordering::Relaxed);
    // Leave half of the blocks to the next threads, free the rest.
    let mut ex = EXCHANGE.lock().unwrap();
    for rec in slots.into_iter().flatten() {
        if rng.below(2) == 0 && ex.len() < 4 * SLOTS {
            ex.push(rec);
        } else {
            free(rec);
        }
    }
}

fn usage() -> ! {
    eprintln!("usage: soak [--minutes N | --seconds N] [--threads T]");
    std::process::exit(2);
}

fn main() {
    let mut duration = Duration::from_secs(60);
    let mut threads = 4;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value: u64 = args
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| usage());
        match arg.as_str() {
            "--minutes" => duration = Duration::from_secs(60 * value),
            "--seconds" => duration = Duration::from_secs(value),
            "--threads" => threads = value.max(1) as usize,
            _ => usage(),
        }
    }
    println!(
        "soak: {threads} threads for {:?} (progress every 10 s)",
        duration
    );
    let start = Instant::now();
    let mut seed = 1;
    std::thread::scope(|s| {
        let mut handles: Vec<_> = (0..threads)
            .map(|_| {
                seed += 1;
                let seed = seed;
                s.spawn(move || worker(seed))
            })
            .collect();
        let mut last_report = Instant::now();
        while start.elapsed() < duration {
            std::thread::sleep(Duration::from_millis(50));
            // Replace workers that finished their life.
            for h in handles.iter_mut() {
                if h.is_finished() {
                    seed += 1;
                    let seed = seed;
                    let old = std::mem::replace(h, s.spawn(move || worker(seed)));
                    if old.join().is_err() {
                        error(format_args!("a worker panicked"));
                    }
                }
            }
            if last_report.elapsed() >= Duration::from_secs(10) {
                last_report = Instant::now();
                let (g, sh) = (GLOBAL.stats(), SHARED.stats());
                println!(
                    "soak: {:>5.0}s  {:>12} ops  {:>5} threads started  {:>4} errors  \
                     global {} MiB in use / {} MiB mapped  shared {} / {} MiB",
                    start.elapsed().as_secs_f64(),
                    OPS.load(Ordering::Relaxed),
                    THREADS_STARTED.load(Ordering::Relaxed),
                    ERRORS.load(Ordering::Relaxed),
                    g.bytes_in_use / MIB,
                    g.bytes_mapped / MIB,
                    sh.bytes_in_use / MIB,
                    sh.bytes_mapped / MIB,
                );
            }
        }
        STOP.store(true, Ordering::Relaxed);
        for h in handles {
            if h.join().is_err() {
                error(format_args!("a worker panicked"));
            }
        }
    });
    for rec in std::mem::take(&mut *EXCHANGE.lock().unwrap()) {
        free(rec);
    }
    let held = HELD.load(Ordering::Relaxed);
    if held != 0 {
        error(format_args!(
            "the soak lost track of {held} blocks (never freed: a bug in the soak)"
        ));
    }
    SHARED.collect();
    let shared = SHARED.stats();
    if shared.bytes_in_use != 0 {
        error(format_args!(
            "the shared instance has {} bytes in use after everything was freed",
            shared.bytes_in_use
        ));
    }
    let ops = OPS.load(Ordering::Relaxed);
    let errors = ERRORS.load(Ordering::Relaxed);
    println!(
        "soak: done in {:.0?}: {ops} operations ({:.0} per second), {} GiB allocated, \
         {} threads started, {errors} errors",
        start.elapsed(),
        ops as f64 / start.elapsed().as_secs_f64(),
        BYTES.load(Ordering::Relaxed) >> 30,
        THREADS_STARTED.load(Ordering::Relaxed),
    );
    if errors != 0 {
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: u64) -> Rec {
        Rec {
            ptr: 0,
            size: 0,
            align: 1,
            id,
            source: Source::Global,
        }
    }

    /// Three workers exiting between two of the main thread's checks leave
    /// more blocks in the exchange than a new worker has slots: every block
    /// must still end up in a table, or the final free never sees it.
    #[test]
    fn adoption_keeps_the_blocks_that_do_not_fit() {
        let left = SLOTS as u64 + 100;
        let mut exchange: Vec<Rec> = (0..left).map(record).collect();
        let mut slots: Vec<Option<Rec>> = (0..SLOTS).map(|_| None).collect();
        adopt(&mut exchange, &mut slots);
        let kept = slots.iter().flatten().count() + exchange.len();
        assert_eq!(kept, left as usize, "{} blocks lost", left as usize - kept);
        let mut ids: Vec<u64> = slots
            .iter()
            .flatten()
            .chain(exchange.iter())
            .map(|rec| rec.id)
            .collect();
        ids.sort_unstable();
        assert!(ids.iter().copied().eq(0..left), "a block was duplicated");
        assert_eq!(slots.iter().flatten().count(), SLOTS);
    }
}
