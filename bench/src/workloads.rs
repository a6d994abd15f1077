//! The workloads: the same code runs in every allocator's process.
//!
//! Each workload is a plain function from [`Params`] to an [`Outcome`]: how
//! many operations it did (the unit is the workload's own, see
//! [`Workload::unit`]) and a checksum. Every workload
//!
//! * **touches the memory it allocates**: raw blocks ([`Block`]) get one
//!   write per cache line (per page above 4 KiB) and are read back before
//!   they are freed, containers are filled with data and read. Memory that is
//!   never touched costs an allocator nothing (the kernel maps it lazily), so
//!   an honest comparison must pay for page faults and cache misses;
//! * **keeps a checksum** that depends on the work done, and passes pointers
//!   through [`black_box`], so the optimizer cannot delete allocations;
//! * **is deterministic**: random choices come from [`Rng`] seeded with
//!   constants and thread indices, so every allocator serves exactly the same
//!   requests and a workload's checksum is the same under every allocator (the
//!   driver flags a mismatch: it means a broken allocator, or a broken
//!   workload).
//!
//! Counts are tuned so that, with `--scale 1`, one run takes roughly
//! 0.2-1 s on a 2-core machine with glibc's malloc; `--scale` multiplies the
//! main count and `--count` replaces it (the callgrind mode uses `--count` to
//! run the same workload at two sizes).
//!
//! ```text
//! single-threaded micro   pair32 (+ pair32-baseline, the same loop without an allocator)
//! threads, remote frees   larson (1, 2 threads), xmalloc (2, 4), mstress (1, 2),
//!                         sh8bench (2), rptest (1, 2)
//! false sharing           cache-scratch (2), cache-thrash (2)
//! random and fixed sizes  alloc-test (1, 2), sh6bench (1, 2), glibc-simple,
//!                         glibc-thread (1, 2), cfrac (bignum churn)
//! Rust collections        vec-push, string-build, hashmap-churn, btreemap-churn,
//!                         box-tree, json-like
//! sizes and RSS           malloc-large (64 KiB..8 MiB), waves (peak, then RSS after free)
//! ```

use std::alloc::{alloc, dealloc, handle_alloc_error, Layout};
use std::collections::btree_map::Entry as BTreeEntry;
use std::collections::hash_map::Entry as HashEntry;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::hash::{BuildHasherDefault, DefaultHasher};
use std::hint::black_box;
use std::ptr::NonNull;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use crate::rng::Rng;

/// How a run is sized.
#[derive(Clone, Debug)]
pub struct Params {
    /// Number of threads (validated against [`Workload::threads`]).
    pub threads: usize,
    /// Multiplies the workload's main count (`--scale`).
    pub scale: f64,
    /// Replaces the workload's main count (`--count`).
    pub count: Option<u64>,
}

impl Params {
    /// The workload's main count: `base` times the scale, or `--count`.
    pub fn count(&self, base: u64) -> u64 {
        self.count
            .unwrap_or_else(|| (base as f64 * self.scale).round() as u64)
            .max(1)
    }
}

/// What a run reports besides its elapsed time.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// Operations done (see [`Workload::unit`]).
    pub ops: u64,
    /// Depends on all the work done; identical under every allocator.
    pub checksum: u64,
    /// Extra `key=value` fields for the result line.
    pub extra: Vec<(&'static str, String)>,
    /// Time spent inside the workload that is not part of its measurement
    /// (the child subtracts it from the elapsed time).
    pub untimed: Duration,
}

impl Outcome {
    fn new(ops: u64, checksum: u64) -> Self {
        Self {
            ops,
            checksum,
            extra: Vec::new(),
            untimed: Duration::ZERO,
        }
    }
}

/// Which thread counts a workload accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Threads {
    /// Exactly one.
    One,
    /// Any number from one.
    Any,
    /// An even number from two (producer/consumer pairs).
    Pairs,
}

/// A named workload.
#[derive(Clone, Copy, Debug)]
pub struct Workload {
    /// Name used on the command line.
    pub name: &'static str,
    /// One line for humans.
    pub about: &'static str,
    /// What one operation is.
    pub unit: &'static str,
    /// Thread counts it accepts.
    pub threads: Threads,
    /// The code.
    pub run: fn(&Params) -> Outcome,
}

/// Every workload, in the order the report lists them.
pub const WORKLOADS: &[Workload] = &[
    Workload {
        name: "pair32",
        about: "alloc + free of 32 bytes through GlobalAlloc in a tight loop",
        unit: "pair",
        threads: Threads::One,
        run: pair32,
    },
    Workload {
        name: "pair32-baseline",
        about: "the pair32 loop on a stack buffer: the loop's own cost, for callgrind",
        unit: "iteration",
        threads: Threads::One,
        run: pair32_baseline,
    },
    Workload {
        name: "larson",
        about: "per-thread slot churn, sizes 16..1024, 1/8 of the victims freed by the next thread",
        unit: "replacement",
        threads: Threads::Any,
        run: larson,
    },
    Workload {
        name: "xmalloc",
        about: "producer/consumer pairs: every block (16..512 B) is freed by another thread",
        unit: "block",
        threads: Threads::Pairs,
        run: xmalloc,
    },
    Workload {
        name: "cache-scratch",
        about: "Hoard's cache-scratch: 8-byte objects, each byte written 50000 times, the first handed from the main thread and freed by the worker (passive false sharing)",
        unit: "object",
        threads: Threads::Any,
        run: cache_scratch,
    },
    Workload {
        name: "cache-thrash",
        about: "Hoard's cache-thrash: 8-byte objects, each byte written 50000 times by every thread on its own (active false sharing)",
        unit: "object",
        threads: Threads::Any,
        run: cache_thrash,
    },
    Workload {
        name: "alloc-test",
        about: "random slots of 8192 per thread freed or filled, sizes 8 B..4 KiB (1/64 up to 64 KiB)",
        unit: "alloc or free",
        threads: Threads::Any,
        run: alloc_test,
    },
    Workload {
        name: "sh6bench",
        about: "SmartHeap-style batches of 512 blocks (1..1000 B): half freed LIFO and reallocated, then freed FIFO / LIFO",
        unit: "block",
        threads: Threads::Any,
        run: sh6bench,
    },
    Workload {
        name: "sh8bench",
        about: "sh6bench's batches, but half of every batch is freed by the next thread",
        unit: "block",
        threads: Threads::Any,
        run: sh8bench,
    },
    Workload {
        name: "glibc-simple",
        about: "glibc's bench-malloc-simple: batches of 25..1600 blocks of 16..1024 B, freed in order",
        unit: "pair",
        threads: Threads::One,
        run: glibc_simple,
    },
    Workload {
        name: "glibc-thread",
        about: "glibc's bench-malloc-thread: 1024 live blocks per thread replaced at random, sizes 4 B..32 KiB inverse-square",
        unit: "replacement",
        threads: Threads::Any,
        run: glibc_thread,
    },
    Workload {
        name: "rptest",
        about: "rpmalloc's benchmark: batches of 1000 blocks (8 B..16 KiB), 100 replaced, every other batch freed by the next thread",
        unit: "block",
        threads: Threads::Any,
        run: rptest,
    },
    Workload {
        name: "cfrac",
        about: "bignum churn like cfrac: continued-fraction convergents on Vec<u32> numbers, every result a new vector",
        unit: "step",
        threads: Threads::One,
        run: cfrac,
    },
    Workload {
        name: "vec-push",
        about: "64 Vec<u64> grown by push() side by side to log-uniform lengths up to 8192",
        unit: "push",
        threads: Threads::One,
        run: vec_push,
    },
    Workload {
        name: "string-build",
        about: "Strings from words and format!, joined, upper-cased, split, replaced",
        unit: "string",
        threads: Threads::One,
        run: string_build,
    },
    Workload {
        name: "hashmap-churn",
        about: "HashMap<u64, String> insert/remove over 65536 keys, strings 8..64 B",
        unit: "insert or remove",
        threads: Threads::One,
        run: hashmap_churn,
    },
    Workload {
        name: "btreemap-churn",
        about: "BTreeMap<u64, u64> insert/remove over 131072 keys",
        unit: "insert or remove",
        threads: Threads::One,
        run: btreemap_churn,
    },
    Workload {
        name: "box-tree",
        about: "binary trees of Box<Node> built, walked and dropped (binary-trees)",
        unit: "node",
        threads: Threads::One,
        run: box_tree,
    },
    Workload {
        name: "json-like",
        about: "a nested Vec/HashMap/String document built, serialized, walked, dropped",
        unit: "value",
        threads: Threads::One,
        run: json_like,
    },
    Workload {
        name: "mstress",
        about: "live set of 1024 slots per thread, sizes 8 B..1 MiB (1/8 above 1 KiB), blocks migrate between threads",
        unit: "step",
        threads: Threads::Any,
        run: mstress,
    },
    Workload {
        name: "malloc-large",
        about: "16 live blocks replaced at random, sizes 64 KiB..8 MiB, every page touched",
        unit: "replacement",
        threads: Threads::One,
        run: malloc_large,
    },
    Workload {
        name: "waves",
        about: "allocate 512 MiB in 16..256 B blocks, free all in random order, 3 times; RSS right after the last free and 200 ms later",
        unit: "block",
        threads: Threads::One,
        run: waves,
    },
];

/// The workload called `name`.
pub fn find(name: &str) -> Option<&'static Workload> {
    WORKLOADS.iter().find(|w| w.name == name)
}

// ---------------------------------------------------------------------------
// Raw blocks that are touched and verified.

/// Alignment of raw blocks: what `malloc` guarantees for small sizes on
/// 64-bit platforms' minimum, and what most Rust types of 8+ bytes ask for.
const BLOCK_ALIGN: usize = 8;
/// Write stride for blocks up to [`PAGE`]: one byte per cache line.
const LINE: usize = 64;
/// Write stride above that: one byte per page, which is what makes the
/// kernel back the memory (the cost that matters for large blocks).
const PAGE: usize = 4096;

/// Runs `work` on one scoped thread per item of `inputs`, joins them all
/// and adds up what they return (the workload's checksum, wrapping).
fn on_threads<I: Send>(
    name: &str,
    inputs: impl IntoIterator<Item = I>,
    work: impl Fn(I) -> u64 + Sync,
) -> u64 {
    let work = &work;
    thread::scope(|s| {
        let handles: Vec<_> = inputs
            .into_iter()
            .map(|input| s.spawn(move || work(input)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| panic!("a {name} thread panicked"))
            })
            .fold(0, u64::wrapping_add)
    })
}

/// A block from the global allocator, owned like a `Box<[u8]>`.
///
/// [`Block::new`] writes a tag derived from the block's address into every
/// cache line (every page for large blocks); dropping it reads the first and
/// last byte back and panics if they changed, which catches an allocator
/// that hands out overlapping blocks.
pub struct Block {
    ptr: NonNull<u8>,
    size: usize,
}

// SAFETY: a `Block` owns its memory exclusively (like `Box<[u8]>`), and the
// global allocator accepts frees from any thread.
unsafe impl Send for Block {}

impl Block {
    /// Allocates `size` (> 0) bytes and touches them.
    #[inline]
    pub fn new(size: usize) -> Self {
        let layout = block_layout(size);
        // SAFETY: `block_layout` never returns a zero-sized layout.
        let raw = unsafe { alloc(layout) };
        let Some(ptr) = NonNull::new(black_box(raw)) else {
            handle_alloc_error(layout)
        };
        let block = Self { ptr, size };
        let tag = block.tag();
        let stride = if size <= PAGE { LINE } else { PAGE };
        let mut off = 0;
        while off < size {
            // SAFETY: `off < size` and the block is `size` bytes, live and ours.
            unsafe { block.ptr.as_ptr().add(off).write_volatile(tag) };
            off += stride;
        }
        // SAFETY: `size - 1` is in bounds (size > 0).
        unsafe { block.ptr.as_ptr().add(size - 1).write_volatile(tag) };
        block
    }

    /// The requested size.
    pub fn size(&self) -> usize {
        self.size
    }

    fn tag(&self) -> u8 {
        let a = self.ptr.as_ptr() as usize;
        ((a >> 3) ^ (a >> 11) ^ (a >> 19)) as u8 | 1
    }
}

impl Drop for Block {
    #[inline]
    fn drop(&mut self) {
        let p = self.ptr.as_ptr();
        // SAFETY: the block is live and `size` bytes long, so its first and
        // last bytes are readable.
        let (first, last) = unsafe { (p.read_volatile(), p.add(self.size - 1).read_volatile()) };
        let tag = self.tag();
        if first != tag || last != tag {
            panic!(
                "heap corruption: block {p:p} of {} bytes lost its tag {tag:#x} (found {first:#x}, {last:#x})",
                self.size
            );
        }
        // SAFETY: `p` came from `alloc` with this very layout and is freed once.
        unsafe { dealloc(p, block_layout(self.size)) };
    }
}

fn block_layout(size: usize) -> Layout {
    assert!(size > 0, "zero-sized block");
    match Layout::from_size_align(size, BLOCK_ALIGN) {
        Ok(l) => l,
        Err(e) => panic!("bad block size {size}: {e}"),
    }
}

/// The process's resident set size now, in KiB (`/proc/self/statm`), or 0
/// where that file does not exist.
pub fn current_rss_kib() -> u64 {
    let Ok(statm) = std::fs::read_to_string("/proc/self/statm") else {
        return 0;
    };
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf only reads a configuration value.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * page.max(1) as u64 / 1024
}

/// A hasher with fixed keys so maps grow and iterate identically in every
/// process (std's `RandomState` would make each run different).
type Fixed = BuildHasherDefault<DefaultHasher>;

const WORDS: &[&str] = &[
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "zeta",
    "eta",
    "theta",
    "iota",
    "kappa",
    "lambda",
    "mu",
    "nu",
    "xi",
    "omicron",
    "pi",
    "rho",
    "sigma",
    "tau",
    "upsilon",
    "phi",
    "chi",
    "psi",
    "omega",
    "segment",
    "region",
    "bucket",
    "block",
    "heap",
    "allocator",
];

fn word(rng: &mut Rng) -> &'static str {
    WORDS[rng.below(WORDS.len() as u64) as usize]
}

// ---------------------------------------------------------------------------
// pair32

/// Iterations of `pair32` at scale 1 (~7 ns each with glibc: ~0.35 s).
const PAIR32_BASE: u64 = 50_000_000;
/// The size `pair32` allocates.
const PAIR32_SIZE: usize = 32;

fn pair32(p: &Params) -> Outcome {
    let n = p.count(PAIR32_BASE);
    let layout = block_layout(PAIR32_SIZE);
    let mut sum = 0u64;
    for i in 0..n {
        // SAFETY: the layout is not zero-sized.
        let ptr = black_box(unsafe { alloc(layout) });
        if ptr.is_null() {
            handle_alloc_error(layout);
        }
        // SAFETY: `ptr` is a live 32-byte block, freed exactly once here.
        unsafe {
            ptr.write_volatile(i as u8);
            sum += u64::from(ptr.read_volatile());
            dealloc(ptr, layout);
        }
    }
    Outcome::new(n, sum)
}

fn pair32_baseline(p: &Params) -> Outcome {
    let n = p.count(PAIR32_BASE);
    let mut buf = [0u8; PAIR32_SIZE];
    let mut sum = 0u64;
    for i in 0..n {
        let ptr = black_box(buf.as_mut_ptr());
        // SAFETY: `ptr` points to the live stack buffer `buf`.
        unsafe {
            ptr.write_volatile(i as u8);
            sum += u64::from(ptr.read_volatile());
        }
    }
    Outcome::new(n, sum)
}

// ---------------------------------------------------------------------------
// larson

/// Replacements per thread at scale 1.
const LARSON_BASE: u64 = 5_000_000;
/// Blocks each thread keeps live.
const LARSON_SLOTS: usize = 4096;
/// Smallest and (exclusive) largest block size.
const LARSON_SIZES: (usize, usize) = (16, 1024);
/// One victim in this many is handed to the next thread to free.
const LARSON_REMOTE_ONE_IN: u64 = 8;
/// Victims handed over per message (a message is one `Vec` allocation too).
const LARSON_BATCH: usize = 32;

fn larson(p: &Params) -> Outcome {
    let t = p.threads;
    let n = p.count(LARSON_BASE);
    let (mut senders, receivers): (Vec<_>, Vec<_>) =
        (0..t).map(|_| mpsc::channel::<Vec<Block>>()).unzip();
    // Thread i sends to thread (i + 1) % t; with one thread, to itself.
    senders.rotate_left(1);
    let ends = senders.into_iter().zip(receivers).enumerate();
    let sum = on_threads("larson", ends, |(i, (tx, rx))| {
        larson_thread(i as u64, n, tx, rx)
    });
    Outcome::new(n * t as u64, sum)
}

fn larson_thread(
    index: u64,
    n: u64,
    tx: mpsc::Sender<Vec<Block>>,
    rx: mpsc::Receiver<Vec<Block>>,
) -> u64 {
    let mut rng = Rng::new(0x1a_0000 + index);
    let (lo, hi) = LARSON_SIZES;
    let mut slots: Vec<Block> = (0..LARSON_SLOTS)
        .map(|_| Block::new(rng.range(lo, hi)))
        .collect();
    let mut sum = 0u64;
    let mut outgoing = Vec::with_capacity(LARSON_BATCH);
    for k in 0..n {
        let size = rng.range(lo, hi);
        let j = rng.below(LARSON_SLOTS as u64) as usize;
        let victim = std::mem::replace(&mut slots[j], Block::new(size));
        sum = sum.wrapping_add(size as u64);
        if rng.one_in(LARSON_REMOTE_ONE_IN) {
            outgoing.push(victim);
            if outgoing.len() == LARSON_BATCH {
                let batch = std::mem::replace(&mut outgoing, Vec::with_capacity(LARSON_BATCH));
                tx.send(batch).expect("larson receiver alive");
            }
        } else {
            drop(victim);
        }
        if k % 64 == 0 {
            while let Ok(batch) = rx.try_recv() {
                drop(batch);
            }
        }
    }
    if !outgoing.is_empty() {
        tx.send(outgoing).expect("larson receiver alive");
    }
    drop(tx);
    drop(slots);
    // Ends when every sender (ours included) is gone.
    for batch in rx {
        drop(batch);
    }
    sum
}

// ---------------------------------------------------------------------------
// xmalloc

/// Blocks per producer at scale 1.
const XMALLOC_BASE: u64 = 4_000_000;
/// Blocks per message.
const XMALLOC_BATCH: usize = 256;
/// Messages in flight per pair before the producer waits: bounds memory.
const XMALLOC_QUEUE: usize = 16;
/// Smallest and (exclusive) largest block size.
const XMALLOC_SIZES: (usize, usize) = (16, 512);

fn xmalloc(p: &Params) -> Outcome {
    let pairs = p.threads / 2;
    let n = p.count(XMALLOC_BASE);
    let sum: u64 = thread::scope(|s| {
        let mut handles = Vec::new();
        for pair in 0..pairs {
            let (tx, rx) = mpsc::sync_channel::<Vec<Block>>(XMALLOC_QUEUE);
            handles.push(s.spawn(move || {
                let mut rng = Rng::new(0x3a_0000 + pair as u64);
                let (lo, hi) = XMALLOC_SIZES;
                let mut sum = 0u64;
                let mut batch = Vec::with_capacity(XMALLOC_BATCH);
                for _ in 0..n {
                    let size = rng.range(lo, hi);
                    sum = sum.wrapping_add(size as u64);
                    batch.push(Block::new(size));
                    if batch.len() == XMALLOC_BATCH {
                        let full = std::mem::replace(&mut batch, Vec::with_capacity(XMALLOC_BATCH));
                        tx.send(full).expect("xmalloc consumer alive");
                    }
                }
                if !batch.is_empty() {
                    tx.send(batch).expect("xmalloc consumer alive");
                }
                sum
            }));
            handles.push(s.spawn(move || {
                let mut freed = 0u64;
                for batch in rx {
                    freed += batch.len() as u64;
                    drop(batch);
                }
                freed
            }));
        }
        handles
            .into_iter()
            .map(|h| h.join().expect("xmalloc thread"))
            .fold(0u64, u64::wrapping_add)
    });
    Outcome::new(n * pairs as u64, sum)
}

// ---------------------------------------------------------------------------
// vec-push

/// Rounds at scale 1.
const VEC_PUSH_BASE: u64 = 800;
/// Vectors growing side by side (so that neighbours block in-place growth).
const VEC_PUSH_VECS: usize = 64;
/// Lengths are log-uniform in `1..VEC_PUSH_MAX_LEN`.
const VEC_PUSH_MAX_LEN: usize = 8192;

fn vec_push(p: &Params) -> Outcome {
    let rounds = p.count(VEC_PUSH_BASE);
    let mut rng = Rng::new(0x7e_c000);
    let (mut ops, mut sum) = (0u64, 0u64);
    for r in 0..rounds {
        let targets: Vec<usize> = (0..VEC_PUSH_VECS)
            .map(|_| rng.log_uniform(1, VEC_PUSH_MAX_LEN))
            .collect();
        let longest = targets.iter().copied().max().unwrap_or(0);
        let mut vecs: Vec<Vec<u64>> = (0..VEC_PUSH_VECS).map(|_| Vec::new()).collect();
        for k in 0..longest {
            for (v, &t) in vecs.iter_mut().zip(&targets) {
                if k < t {
                    v.push(k as u64 ^ r);
                }
            }
        }
        for v in black_box(&vecs) {
            ops += v.len() as u64;
            sum = sum.wrapping_add(v.len() as u64 + v.last().copied().unwrap_or(0));
        }
    }
    Outcome::new(ops, sum)
}

// ---------------------------------------------------------------------------
// string-build

/// Rounds at scale 1.
const STRING_BUILD_BASE: u64 = 1500;
/// Strings built per round.
const STRING_BUILD_STRINGS: u64 = 1000;

fn string_build(p: &Params) -> Outcome {
    let rounds = p.count(STRING_BUILD_BASE);
    let mut rng = Rng::new(0x57_0000);
    let mut sum = 0u64;
    for r in 0..rounds {
        let mut parts = Vec::new();
        for i in 0..STRING_BUILD_STRINGS {
            let mut s = String::new();
            for _ in 0..rng.range(1, 12) {
                s.push_str(word(&mut rng));
                s.push(' ');
            }
            write!(s, "#{i}/{r}").expect("write to String");
            parts.push(s);
        }
        let joined = parts.join(", ");
        let upper = joined.to_uppercase();
        let pieces: Vec<&str> = upper.split(", ").collect();
        let replaced = upper.replace("ALPHA", "omega");
        let tokens: Vec<String> = pieces.iter().take(100).map(|p| p.to_lowercase()).collect();
        sum = sum.wrapping_add(
            (joined.len() + upper.len() + pieces.len() + replaced.len() + tokens.len()) as u64,
        );
        black_box((&parts, &tokens));
    }
    Outcome::new(rounds * STRING_BUILD_STRINGS, sum)
}

// ---------------------------------------------------------------------------
// hashmap-churn

/// Rounds at scale 1.
const HASHMAP_BASE: u64 = 24;
/// Inserts or removes per round (the map starts empty each round).
const HASHMAP_OPS: u64 = 250_000;
/// Key space: the map holds about half of it in steady state.
const HASHMAP_KEYS: u64 = 1 << 16;

fn hashmap_churn(p: &Params) -> Outcome {
    let rounds = p.count(HASHMAP_BASE);
    let mut rng = Rng::new(0x4a_0000);
    let mut sum = 0u64;
    for _ in 0..rounds {
        let mut map: HashMap<u64, String, Fixed> = HashMap::default();
        for _ in 0..HASHMAP_OPS {
            let key = rng.below(HASHMAP_KEYS);
            match map.entry(key) {
                HashEntry::Occupied(e) => {
                    let s = e.remove();
                    sum = sum.wrapping_add(s.len() as u64 + u64::from(s.as_bytes()[0]));
                }
                HashEntry::Vacant(e) => {
                    let len = rng.range(8, 64);
                    let c = char::from(b'a' + (key % 26) as u8);
                    e.insert(std::iter::repeat_n(c, len).collect());
                }
            }
        }
        sum = sum.wrapping_add(map.len() as u64);
        black_box(&map);
    }
    Outcome::new(rounds * HASHMAP_OPS, sum)
}

// ---------------------------------------------------------------------------
// btreemap-churn

/// Rounds at scale 1.
const BTREE_BASE: u64 = 10;
/// Inserts or removes per round (the map starts empty each round).
const BTREE_OPS: u64 = 300_000;
/// Key space: the map holds about half of it in steady state.
const BTREE_KEYS: u64 = 1 << 17;

fn btreemap_churn(p: &Params) -> Outcome {
    let rounds = p.count(BTREE_BASE);
    let mut rng = Rng::new(0xb7_0000);
    let mut sum = 0u64;
    for _ in 0..rounds {
        let mut map: BTreeMap<u64, u64> = BTreeMap::new();
        for i in 0..BTREE_OPS {
            let key = rng.below(BTREE_KEYS);
            match map.entry(key) {
                BTreeEntry::Occupied(e) => sum = sum.wrapping_add(e.remove()),
                BTreeEntry::Vacant(e) => {
                    e.insert(i);
                }
            }
        }
        sum = sum.wrapping_add(map.len() as u64);
        black_box(&map);
    }
    Outcome::new(rounds * BTREE_OPS, sum)
}

// ---------------------------------------------------------------------------
// box-tree

/// Depth of the long-lived tree and of the largest short-lived ones.
const BOX_TREE_DEPTH: u32 = 16;
/// Depth of the smallest short-lived trees.
const BOX_TREE_MIN_DEPTH: u32 = 4;
/// Trees of depth `d` are built `BOX_TREE_ITERATIONS << (DEPTH - d)` times
/// at scale 1, so every depth allocates the same number of nodes.
const BOX_TREE_ITERATIONS: u64 = 32;

struct Node {
    left: Option<Box<Node>>,
    right: Option<Box<Node>>,
    value: u64,
}

fn build_tree(depth: u32, value: u64) -> Box<Node> {
    if depth == 0 {
        return Box::new(Node {
            left: None,
            right: None,
            value,
        });
    }
    Box::new(Node {
        left: Some(build_tree(depth - 1, 2 * value)),
        right: Some(build_tree(depth - 1, 2 * value + 1)),
        value,
    })
}

/// (nodes, sum of values)
fn walk_tree(node: &Node) -> (u64, u64) {
    let mut acc = (1, node.value);
    for child in [&node.left, &node.right].into_iter().flatten() {
        let (n, s) = walk_tree(child);
        acc = (acc.0 + n, acc.1.wrapping_add(s));
    }
    acc
}

fn box_tree(p: &Params) -> Outcome {
    let long_lived = build_tree(BOX_TREE_DEPTH, 1);
    let (mut nodes, mut sum) = walk_tree(&long_lived);
    for depth in (BOX_TREE_MIN_DEPTH..=BOX_TREE_DEPTH).step_by(2) {
        let iterations = p.count(BOX_TREE_ITERATIONS << (BOX_TREE_DEPTH - depth));
        for i in 0..iterations {
            let tree = build_tree(depth, i);
            let (n, s) = walk_tree(black_box(&tree));
            nodes += n;
            sum = sum.wrapping_add(s);
        }
    }
    let (n, s) = walk_tree(black_box(&long_lived));
    sum = sum.wrapping_add(s).wrapping_add(n);
    Outcome::new(nodes, sum)
}

// ---------------------------------------------------------------------------
// json-like

/// Rounds at scale 1.
const JSON_BASE: u64 = 60;
/// Records per document.
const JSON_RECORDS: u64 = 2000;

enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Str(String),
    Arr(Vec<Value>),
    Obj(HashMap<String, Value, Fixed>),
}

fn object(fields: impl IntoIterator<Item = (&'static str, Value)>) -> Value {
    Value::Obj(
        fields
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    )
}

fn record(rng: &mut Rng, i: u64) -> Value {
    let tags = (0..rng.range(0, 8))
        .map(|_| Value::Str(word(rng).to_string()))
        .collect();
    let scores = (0..rng.range(0, 16))
        .map(|_| Value::Int(rng.below(1000) as i64))
        .collect();
    let address = object([
        (
            "street",
            Value::Str(format!("{} {} street", rng.below(999), word(rng))),
        ),
        ("city", Value::Str(word(rng).to_uppercase())),
        ("zip", Value::Int(rng.below(100_000) as i64)),
        (
            "geo",
            Value::Arr(vec![
                Value::Int(rng.below(180) as i64),
                Value::Int(rng.below(90) as i64),
            ]),
        ),
    ]);
    object([
        ("id", Value::Int(i as i64)),
        ("name", Value::Str(format!("user-{i}"))),
        (
            "email",
            Value::Str(format!("{}.{i}@example.com", word(rng))),
        ),
        ("active", Value::Bool(i % 3 == 0)),
        ("tags", Value::Arr(tags)),
        ("scores", Value::Arr(scores)),
        ("address", address),
        ("note", Value::Null),
    ])
}

fn serialize(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => write!(out, "{b}").expect("write to String"),
        Value::Int(n) => write!(out, "{n}").expect("write to String"),
        Value::Str(s) => {
            out.push('"');
            out.push_str(s);
            out.push('"');
        }
        Value::Arr(items) => {
            out.push('[');
            for (k, item) in items.iter().enumerate() {
                if k > 0 {
                    out.push(',');
                }
                serialize(item, out);
            }
            out.push(']');
        }
        Value::Obj(fields) => {
            // Sorted keys, as a canonical serializer would (and so the output
            // does not depend on the hash map's iteration order).
            let mut keys: Vec<&String> = fields.keys().collect();
            keys.sort();
            out.push('{');
            for (k, key) in keys.into_iter().enumerate() {
                if k > 0 {
                    out.push(',');
                }
                write!(out, "\"{key}\":").expect("write to String");
                serialize(&fields[key], out);
            }
            out.push('}');
        }
    }
}

/// (values, checksum)
fn walk_value(v: &Value) -> (u64, u64) {
    match v {
        Value::Null => (1, 0),
        Value::Bool(b) => (1, u64::from(*b)),
        Value::Int(n) => (1, *n as u64),
        Value::Str(s) => (1, s.len() as u64),
        Value::Arr(items) => items
            .iter()
            .map(walk_value)
            .fold((1, 0), |a, b| (a.0 + b.0, a.1.wrapping_add(b.1))),
        Value::Obj(fields) => fields.iter().fold((1, 0), |a, (k, v)| {
            let b = walk_value(v);
            (
                a.0 + b.0,
                a.1.wrapping_add(b.1).wrapping_add(k.len() as u64),
            )
        }),
    }
}

fn json_like(p: &Params) -> Outcome {
    let rounds = p.count(JSON_BASE);
    let mut rng = Rng::new(0x15_0000);
    let (mut values, mut sum) = (0u64, 0u64);
    for r in 0..rounds {
        let records = (0..JSON_RECORDS).map(|i| record(&mut rng, i)).collect();
        let doc = object([
            ("version", Value::Int(r as i64)),
            ("records", Value::Arr(records)),
        ]);
        let mut text = String::new();
        serialize(&doc, &mut text);
        let (n, s) = walk_value(black_box(&doc));
        values += n;
        sum = sum.wrapping_add(s).wrapping_add(text.len() as u64);
    }
    Outcome::new(values, sum)
}

// ---------------------------------------------------------------------------
// mstress

/// Steps per thread at scale 1.
const MSTRESS_BASE: u64 = 800_000;
/// Slots per thread (each live or empty).
const MSTRESS_SLOTS: usize = 1024;
/// Shared slots through which blocks migrate between threads.
const MSTRESS_TRANSFER_SLOTS: usize = 64;
/// One step in this many swaps a slot with a shared one.
const MSTRESS_TRANSFER_ONE_IN: u64 = 32;
/// One step in this many empties a slot (instead of refilling it), so the
/// live set hovers around three quarters of the slots.
const MSTRESS_FREE_ONE_IN: u64 = 4;
/// One allocation in this many is "large" (1 KiB..1 MiB), the rest 8 B..1 KiB.
const MSTRESS_LARGE_ONE_IN: u64 = 8;

fn mstress(p: &Params) -> Outcome {
    let n = p.count(MSTRESS_BASE);
    let transfer: Vec<Mutex<Option<Block>>> = (0..MSTRESS_TRANSFER_SLOTS)
        .map(|_| Mutex::new(None))
        .collect();
    let sum = on_threads("mstress", 0..p.threads, |i| {
        let mut rng = Rng::new(0x35_0000 + i as u64);
        let mut slots: Vec<Option<Block>> = (0..MSTRESS_SLOTS).map(|_| None).collect();
        let mut sum = 0u64;
        for _ in 0..n {
            let j = rng.below(MSTRESS_SLOTS as u64) as usize;
            if rng.one_in(MSTRESS_TRANSFER_ONE_IN) {
                let t = rng.below(MSTRESS_TRANSFER_SLOTS as u64) as usize;
                let mut shared = transfer[t].lock().expect("transfer slot");
                std::mem::swap(&mut *shared, &mut slots[j]);
            } else if rng.one_in(MSTRESS_FREE_ONE_IN) {
                slots[j] = None;
            } else {
                let size = if rng.one_in(MSTRESS_LARGE_ONE_IN) {
                    rng.log_uniform(1 << 10, 1 << 20)
                } else {
                    rng.log_uniform(8, 1 << 10)
                };
                sum = sum.wrapping_add(size as u64);
                slots[j] = Some(Block::new(size));
            }
        }
        sum
    });
    drop(transfer);
    Outcome::new(n * p.threads as u64, sum)
}

// ---------------------------------------------------------------------------
// malloc-large

/// Replacements at scale 1.
const LARGE_BASE: u64 = 2500;
/// Live blocks.
const LARGE_SLOTS: usize = 16;
/// Sizes are log-uniform in this range.
const LARGE_SIZES: (usize, usize) = (64 << 10, 8 << 20);

fn malloc_large(p: &Params) -> Outcome {
    let n = p.count(LARGE_BASE);
    let mut rng = Rng::new(0x1a_7e00);
    let (lo, hi) = LARGE_SIZES;
    let mut slots: Vec<Option<Block>> = (0..LARGE_SLOTS).map(|_| None).collect();
    let mut sum = 0u64;
    for _ in 0..n {
        let j = rng.below(LARGE_SLOTS as u64) as usize;
        let size = rng.log_uniform(lo, hi);
        sum = sum.wrapping_add(size as u64);
        slots[j] = None;
        slots[j] = Some(Block::new(size));
    }
    Outcome::new(n, sum)
}

// ---------------------------------------------------------------------------
// waves

/// Bytes requested per wave at scale 1.
const WAVES_BYTES: u64 = 512 << 20;
/// Waves.
const WAVES: usize = 3;
/// Smallest and (exclusive) largest block size.
const WAVES_SIZES: (usize, usize) = (16, 256);
/// After the last wave, this long of light activity (a few small blocks
/// allocated and freed every millisecond) before the final RSS is read: the
/// chance a running program gives an allocator that returns memory lazily,
/// on later calls after a delay. Not counted in the elapsed time.
const WAVES_COOLDOWN: Duration = Duration::from_millis(200);
/// Blocks allocated and freed per millisecond of the cool-down.
const WAVES_COOLDOWN_BLOCKS: usize = 16;

fn waves(p: &Params) -> Outcome {
    // `--count` is in MiB here.
    let bytes = p.count(WAVES_BYTES >> 20) << 20;
    let (lo, hi) = WAVES_SIZES;
    let mut rng = Rng::new(0x3a_7e5);
    let (mut ops, mut sum) = (0u64, 0u64);
    let mut rss_after_free = Vec::new();
    let mut rss_peak_live = 0;
    for _ in 0..WAVES {
        let mut blocks = Vec::with_capacity((bytes / ((lo + hi) as u64 / 2)) as usize + 1024);
        let mut total = 0u64;
        while total < bytes {
            let size = rng.range(lo, hi);
            total += size as u64;
            blocks.push(Block::new(size));
        }
        ops += blocks.len() as u64;
        sum = sum.wrapping_add(total);
        rss_peak_live = rss_peak_live.max(current_rss_kib());
        rng.shuffle(&mut blocks);
        drop(blocks);
        rss_after_free.push(current_rss_kib());
    }
    let cooldown = Instant::now();
    while cooldown.elapsed() < WAVES_COOLDOWN {
        let few: Vec<Block> = (0..WAVES_COOLDOWN_BLOCKS).map(|_| Block::new(64)).collect();
        drop(black_box(few));
        thread::sleep(Duration::from_millis(1));
    }
    let rss_end = current_rss_kib();
    let mut out = Outcome::new(ops, sum);
    out.untimed = cooldown.elapsed();
    let freed = rss_after_free.last().copied().unwrap_or(0);
    out.extra.push(("rss_live_kib", rss_peak_live.to_string()));
    out.extra.push(("rss_freed_kib", freed.to_string()));
    out.extra.push(("rss_end_kib", rss_end.to_string()));
    out.extra.push((
        "rss_after_each_kib",
        rss_after_free
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join("/"),
    ));
    out
}

// ---------------------------------------------------------------------------
// Rings of threads handing batches of blocks on

/// Batches in flight to one thread of a ring before its predecessor waits.
const RING_QUEUE: usize = 4;

/// One thread's ends of a [`ring`]: the sender to the next thread and its
/// own receiver.
type RingEnds = (SyncSender<Vec<Block>>, Receiver<Vec<Block>>);

/// A ring of `t` bounded channels: thread `i` gets the sender to thread
/// `i + 1` (mod `t`; with one thread, to itself) and its own receiver.
fn ring(t: usize) -> Vec<RingEnds> {
    let (mut senders, receivers): (Vec<_>, Vec<_>) = (0..t)
        .map(|_| mpsc::sync_channel::<Vec<Block>>(RING_QUEUE))
        .unzip();
    senders.rotate_left(1);
    senders.into_iter().zip(receivers).collect()
}

/// Sends `batch` on in a [`ring`]. While the next thread's queue is full,
/// frees what the previous thread sent: so a fast thread cannot pile up
/// blocks for a slow one (the peak RSS would measure the scheduler), and two
/// threads never wait on each other.
fn ring_send(tx: &SyncSender<Vec<Block>>, rx: &Receiver<Vec<Block>>, mut batch: Vec<Block>) {
    loop {
        match tx.try_send(batch) {
            Ok(()) => return,
            Err(TrySendError::Full(back)) => {
                batch = back;
                match rx.try_recv() {
                    Ok(incoming) => drop(incoming),
                    Err(_) => thread::yield_now(),
                }
            }
            Err(TrySendError::Disconnected(_)) => panic!("the next thread of the ring is gone"),
        }
    }
}

/// The end of a thread's part in a [`ring`]: stops sending, then frees what
/// comes in until every sender (its own included) is gone.
fn ring_finish(tx: SyncSender<Vec<Block>>, rx: Receiver<Vec<Block>>) {
    drop(tx);
    for batch in rx {
        drop(batch);
    }
}

// ---------------------------------------------------------------------------
// cache-scratch and cache-thrash (false sharing)

/// Objects each thread allocates, hammers and frees, at scale 1.
const CACHE_BASE: u64 = 1500;
/// Object size: a few objects of this size share one cache line.
const CACHE_OBJ_SIZE: usize = 8;
/// Rounds of writes (and reads back) of every byte of each object. Big on
/// purpose: the allocator is called rarely, what it decides is *where* the
/// objects go, and objects of two threads on one cache line make every
/// write a cache-line transfer between cores.
const CACHE_WRITES: u64 = 50_000;

/// A small object from the global allocator, hammered with writes.
struct Scratch(NonNull<u8>);

// SAFETY: a `Scratch` owns its memory exclusively (like `Box<[u8; N]>`),
// and the global allocator accepts frees from any thread.
unsafe impl Send for Scratch {}

impl Scratch {
    fn layout() -> Layout {
        block_layout(CACHE_OBJ_SIZE)
    }

    fn new() -> Self {
        let layout = Self::layout();
        // SAFETY: the layout is not zero-sized.
        let raw = unsafe { alloc(layout) };
        match NonNull::new(black_box(raw)) {
            Some(p) => Self(p),
            None => handle_alloc_error(layout),
        }
    }

    /// `rounds` volatile writes and reads of every byte; the sum of the
    /// bytes read.
    fn hammer(&mut self, rounds: u64) -> u64 {
        let p = self.0.as_ptr();
        let mut sum = 0u64;
        for k in 0..rounds {
            for j in 0..CACHE_OBJ_SIZE {
                // SAFETY: `j < CACHE_OBJ_SIZE`, the object's size; it is
                // live and ours.
                unsafe {
                    p.add(j).write_volatile((k as usize + j) as u8);
                    sum += u64::from(p.add(j).read_volatile());
                }
            }
        }
        sum
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout, freed once.
        unsafe { dealloc(self.0.as_ptr(), Self::layout()) };
    }
}

/// The loop of both cache workloads: `n` objects allocated, hammered and
/// freed one after the other.
fn cache_loop(n: u64) -> u64 {
    let mut sum = 0u64;
    for _ in 0..n {
        let mut obj = Scratch::new();
        sum = sum.wrapping_add(obj.hammer(CACHE_WRITES));
    }
    sum
}

/// Hoard's cache-scratch: the main thread allocates one object per thread
/// (neighbours, so probably on one cache line) and hands object `i` to
/// thread `i`, which frees it and then runs the loop. An allocator that
/// gives the freed neighbours back to the threads that freed them sets up
/// *passive* false sharing: the threads' objects share a cache line.
fn cache_scratch(p: &Params) -> Outcome {
    let n = p.count(CACHE_BASE);
    let mut handed: Vec<Scratch> = (0..p.threads).map(|_| Scratch::new()).collect();
    for obj in &mut handed {
        obj.hammer(1);
    }
    let sum = on_threads("cache-scratch", handed, |obj| {
        drop(obj);
        cache_loop(n)
    });
    Outcome::new(n * p.threads as u64, sum)
}

/// Hoard's cache-thrash: every thread runs the loop on its own. An
/// allocator that hands neighbouring small objects to different threads
/// causes *active* false sharing.
fn cache_thrash(p: &Params) -> Outcome {
    let n = p.count(CACHE_BASE);
    let sum = on_threads("cache-thrash", 0..p.threads, |_| cache_loop(n));
    Outcome::new(n * p.threads as u64, sum)
}

// ---------------------------------------------------------------------------
// alloc-test

/// Operations per thread at scale 1.
const ALLOC_TEST_BASE: u64 = 6_000_000;
/// Slots per thread; about half are live in steady state.
const ALLOC_TEST_SLOTS: usize = 1 << 13;
/// One allocation in this many is 4..64 KiB, the rest 8 B..4 KiB.
const ALLOC_TEST_BIG_ONE_IN: u64 = 64;

/// A random slot is freed if live, filled if empty: random sizes in random
/// order, each thread on its own (the ITHare/OLogN alloc-test's pattern).
fn alloc_test(p: &Params) -> Outcome {
    let n = p.count(ALLOC_TEST_BASE);
    let sum = on_threads("alloc-test", 0..p.threads, |i| {
        let mut rng = Rng::new(0xa1_7e57 + i as u64);
        let mut slots: Vec<Option<Block>> = (0..ALLOC_TEST_SLOTS).map(|_| None).collect();
        let mut sum = 0u64;
        for _ in 0..n {
            let j = rng.below(ALLOC_TEST_SLOTS as u64) as usize;
            match slots[j].take() {
                Some(b) => sum = sum.wrapping_add(b.size() as u64),
                None => {
                    let size = if rng.one_in(ALLOC_TEST_BIG_ONE_IN) {
                        rng.log_uniform(4 << 10, 64 << 10)
                    } else {
                        rng.log_uniform(8, 4 << 10)
                    };
                    slots[j] = Some(Block::new(size));
                }
            }
        }
        sum
    });
    Outcome::new(n * p.threads as u64, sum)
}

// ---------------------------------------------------------------------------
// sh6bench and sh8bench

/// Rounds per thread at scale 1.
const SH_BASE: u64 = 10_000;
/// Blocks per batch.
const SH_BATCH: usize = 512;
/// Sizes are uniform in `1..SH_MAX_SIZE`.
const SH_MAX_SIZE: usize = 1000;

fn sh_block(rng: &mut Rng, sum: &mut u64) -> Block {
    let size = rng.range(1, SH_MAX_SIZE);
    *sum = sum.wrapping_add(size as u64);
    Block::new(size)
}

/// One round of the SmartHeap pattern on a fresh batch; returns the blocks
/// of odd index, still live (the caller frees them, or has another thread
/// free them).
///
/// 1. allocate a batch of blocks of various sizes;
/// 2. free its second half newest first (LIFO), and allocate it again;
/// 3. free the blocks of even index oldest first (FIFO), so the frees of
///    the batch as a whole are out of order.
fn sh_round(rng: &mut Rng, sum: &mut u64) -> Vec<Block> {
    let mut batch: Vec<Block> = (0..SH_BATCH).map(|_| sh_block(rng, sum)).collect();
    while batch.len() > SH_BATCH / 2 {
        drop(batch.pop());
    }
    while batch.len() < SH_BATCH {
        batch.push(sh_block(rng, sum));
    }
    let mut odd = Vec::with_capacity(SH_BATCH / 2);
    for (i, b) in batch.into_iter().enumerate() {
        if i % 2 == 1 {
            odd.push(b);
        }
    }
    odd
}

/// sh6bench: rounds of [`sh_round`], the odd blocks freed newest first
/// before the next round; every thread on its own.
fn sh6bench(p: &Params) -> Outcome {
    let n = p.count(SH_BASE);
    let sum = on_threads("sh6bench", 0..p.threads, |i| {
        let mut rng = Rng::new(0x56_0000 + i as u64);
        let mut sum = 0u64;
        for _ in 0..n {
            let mut odd = sh_round(&mut rng, &mut sum);
            while let Some(b) = odd.pop() {
                drop(b);
            }
        }
        sum
    });
    Outcome::new(n * p.threads as u64 * SH_BATCH as u64 * 3 / 2, sum)
}

/// sh8bench: [`sh_round`] too, but the odd blocks of a round go to the next
/// thread (a ring), which frees them when it starts its next round.
fn sh8bench(p: &Params) -> Outcome {
    let t = p.threads;
    let n = p.count(SH_BASE);
    let sum = on_threads(
        "sh8bench",
        ring(t).into_iter().enumerate(),
        |(i, (tx, rx))| {
            let mut rng = Rng::new(0x58_0000 + i as u64);
            let mut sum = 0u64;
            for _ in 0..n {
                while let Ok(batch) = rx.try_recv() {
                    drop(batch);
                }
                let odd = sh_round(&mut rng, &mut sum);
                ring_send(&tx, &rx, odd);
            }
            ring_finish(tx, rx);
            sum
        },
    );
    Outcome::new(n * t as u64 * SH_BATCH as u64 * 3 / 2, sum)
}

// ---------------------------------------------------------------------------
// glibc-simple and glibc-thread

/// Pairs (alloc + free) per size and batch length at scale 1.
const GLIBC_SIMPLE_BASE: u64 = 1_000_000;
/// The block sizes, each run with every batch length.
const GLIBC_SIMPLE_SIZES: [usize; 4] = [16, 64, 256, 1024];
/// Blocks allocated before they are all freed, oldest first.
const GLIBC_SIMPLE_BATCHES: [usize; 4] = [25, 100, 400, 1600];

/// glibc's bench-malloc-simple: for each fixed size and batch length,
/// allocate a batch, free it in allocation order, many times over.
fn glibc_simple(p: &Params) -> Outcome {
    let n = p.count(GLIBC_SIMPLE_BASE);
    let mut sum = 0u64;
    let mut ops = 0u64;
    let mut batch = Vec::with_capacity(GLIBC_SIMPLE_BATCHES[3]);
    for size in GLIBC_SIMPLE_SIZES {
        for len in GLIBC_SIMPLE_BATCHES {
            let rounds = n.div_ceil(len as u64);
            for _ in 0..rounds {
                batch.extend((0..len).map(|_| Block::new(size)));
                sum = sum.wrapping_add(black_box(&batch).len() as u64 * size as u64);
                batch.clear();
            }
            ops += rounds * len as u64;
        }
    }
    Outcome::new(ops, sum)
}

/// Replacements per thread at scale 1.
const GLIBC_THREAD_BASE: u64 = 10_000_000;
/// Live blocks per thread.
const GLIBC_THREAD_SLOTS: usize = 1024;
/// Pre-drawn block sizes (as glibc draws them once, up front).
const GLIBC_THREAD_SIZES: usize = 8000;
/// Sizes follow an inverse-square distribution over this range.
const GLIBC_THREAD_RANGE: (f64, f64) = (4.0, 32768.0);

/// glibc's bench-malloc-thread: every thread replaces a random one of its
/// live blocks with one of a size drawn from an inverse-square
/// distribution (mostly tens of bytes, sometimes kilobytes).
fn glibc_thread(p: &Params) -> Outcome {
    let n = p.count(GLIBC_THREAD_BASE);
    let (lo, hi) = GLIBC_THREAD_RANGE;
    let mut rng = Rng::new(0x61_bc00);
    // Inverse transform of the density ∝ 1/size² on [lo, hi).
    let sizes: Vec<usize> = (0..GLIBC_THREAD_SIZES)
        .map(|_| {
            let u = rng.below(1 << 53) as f64 / (1u64 << 53) as f64;
            (1.0 / (1.0 / lo - u * (1.0 / lo - 1.0 / hi))) as usize
        })
        .collect();
    let sizes = &sizes;
    let sum = on_threads("glibc-thread", 0..p.threads, |i| {
        let mut rng = Rng::new(0x61_bc10 + i as u64);
        let mut slots: Vec<Option<Block>> = (0..GLIBC_THREAD_SLOTS).map(|_| None).collect();
        let mut sum = 0u64;
        for _ in 0..n {
            let j = rng.below(GLIBC_THREAD_SLOTS as u64) as usize;
            let size = sizes[rng.below(GLIBC_THREAD_SIZES as u64) as usize];
            sum = sum.wrapping_add(size as u64);
            slots[j] = None;
            slots[j] = Some(Block::new(size));
        }
        sum
    });
    Outcome::new(n * p.threads as u64, sum)
}

// ---------------------------------------------------------------------------
// rptest

/// Rounds per thread at scale 1.
const RPTEST_BASE: u64 = 4000;
/// Blocks allocated per round.
const RPTEST_BLOCKS: usize = 1000;
/// Blocks replaced at random per round, after the batch is allocated.
const RPTEST_OPS: usize = 100;
/// Sizes are log-uniform in this range.
const RPTEST_SIZES: (usize, usize) = (8, 16 << 10);
/// Every this many rounds, the batch goes to the next thread to free.
const RPTEST_CROSS_RATE: u64 = 2;

/// rpmalloc's benchmark: per round, allocate a batch of random sizes,
/// replace some of its blocks, then free the batch, in random order, or
/// (every other round) hand it to the next thread (a ring), which frees it
/// at the start of its next round.
fn rptest(p: &Params) -> Outcome {
    let t = p.threads;
    let n = p.count(RPTEST_BASE);
    let sum = on_threads(
        "rptest",
        ring(t).into_iter().enumerate(),
        |(i, (tx, rx))| {
            let mut rng = Rng::new(0x29_0000 + i as u64);
            let (lo, hi) = RPTEST_SIZES;
            let mut sum = 0u64;
            for round in 0..n {
                while let Ok(batch) = rx.try_recv() {
                    drop(batch);
                }
                let mut batch: Vec<Block> = (0..RPTEST_BLOCKS)
                    .map(|_| {
                        let size = rng.log_uniform(lo, hi);
                        sum = sum.wrapping_add(size as u64);
                        Block::new(size)
                    })
                    .collect();
                for _ in 0..RPTEST_OPS {
                    let j = rng.below(RPTEST_BLOCKS as u64) as usize;
                    let size = rng.log_uniform(lo, hi);
                    sum = sum.wrapping_add(size as u64);
                    batch[j] = Block::new(size);
                }
                if round % RPTEST_CROSS_RATE == RPTEST_CROSS_RATE - 1 {
                    ring_send(&tx, &rx, batch);
                } else {
                    rng.shuffle(&mut batch);
                    drop(batch);
                }
            }
            ring_finish(tx, rx);
            sum
        },
    );
    Outcome::new(n * t as u64 * (RPTEST_BLOCKS + RPTEST_OPS) as u64, sum)
}

// ---------------------------------------------------------------------------
// cfrac (bignum churn)

/// Rounds at scale 1.
const CFRAC_BASE: u64 = 24000;
/// Steps of the recurrence per round: the numbers grow to about
/// `steps × 10` bits (some 20 limbs), then the round starts over.
const CFRAC_STEPS: u64 = 64;
/// The odd prime the products are reduced by.
const CFRAC_MODULUS: u32 = 1_000_003;

/// An arbitrary-precision natural number: little-endian 32-bit limbs, no
/// leading zero limbs (zero is the empty vector). Every operation returns a
/// new one, as cfrac's bignum library does: many small, short-lived blocks.
type Big = Vec<u32>;

fn big_trim(mut a: Big) -> Big {
    while a.last() == Some(&0) {
        a.pop();
    }
    a
}

fn big_add(a: &[u32], b: &[u32]) -> Big {
    let (long, short) = if a.len() >= b.len() { (a, b) } else { (b, a) };
    let mut out = Vec::with_capacity(long.len() + 1);
    let mut carry = 0u64;
    for (i, &x) in long.iter().enumerate() {
        let y = short.get(i).copied().unwrap_or(0);
        let s = u64::from(x) + u64::from(y) + carry;
        out.push(s as u32);
        carry = s >> 32;
    }
    if carry > 0 {
        out.push(carry as u32);
    }
    out
}

fn big_mul_small(a: &[u32], m: u32) -> Big {
    let mut out = Vec::with_capacity(a.len() + 1);
    let mut carry = 0u64;
    for &x in a {
        let p = u64::from(x) * u64::from(m) + carry;
        out.push(p as u32);
        carry = p >> 32;
    }
    if carry > 0 {
        out.push(carry as u32);
    }
    big_trim(out)
}

fn big_mul(a: &[u32], b: &[u32]) -> Big {
    if a.is_empty() || b.is_empty() {
        return Vec::new();
    }
    let mut out = vec![0u32; a.len() + b.len()];
    for (i, &x) in a.iter().enumerate() {
        let mut carry = 0u64;
        for (j, &y) in b.iter().enumerate() {
            let t = u64::from(x) * u64::from(y) + u64::from(out[i + j]) + carry;
            out[i + j] = t as u32;
            carry = t >> 32;
        }
        out[i + b.len()] = carry as u32;
    }
    big_trim(out)
}

/// (a / d, a % d) for a one-limb divisor `d > 0`.
fn big_divrem_small(a: &[u32], d: u32) -> (Big, u32) {
    let mut q = vec![0u32; a.len()];
    let mut rem = 0u64;
    for (i, &x) in a.iter().enumerate().rev() {
        let cur = (rem << 32) | u64::from(x);
        q[i] = (cur / u64::from(d)) as u32;
        rem = cur % u64::from(d);
    }
    (big_trim(q), rem as u32)
}

/// Continued-fraction convergents with random partial quotients, as cfrac
/// computes them: `p = a·p₁ + p₂` and `q = a·q₁ + q₂` each step, their
/// product, and the product's quotient and remainder by a small prime,
/// every intermediate a fresh vector dropped a step or two later.
fn cfrac(p: &Params) -> Outcome {
    let rounds = p.count(CFRAC_BASE);
    let mut rng = Rng::new(0xcf_4ac0);
    let (mut ops, mut sum) = (0u64, 0u64);
    for _ in 0..rounds {
        let (mut p1, mut p2): (Big, Big) = (vec![1], Vec::new());
        let (mut q1, mut q2): (Big, Big) = (Vec::new(), vec![1]);
        for _ in 0..CFRAC_STEPS {
            let a = rng.range(1, 1024) as u32;
            let p0 = big_add(&big_mul_small(&p1, a), &p2);
            let q0 = big_add(&big_mul_small(&q1, a), &q2);
            let pq = big_mul(&p0, &q0);
            let (quo, rem) = big_divrem_small(&pq, CFRAC_MODULUS);
            sum = sum
                .wrapping_mul(31)
                .wrapping_add(u64::from(rem))
                .wrapping_add(quo.len() as u64);
            p2 = std::mem::replace(&mut p1, p0);
            q2 = std::mem::replace(&mut q1, q0);
            ops += 1;
        }
        sum = sum.wrapping_add(u64::from(big_divrem_small(&p1, CFRAC_MODULUS).1));
    }
    Outcome::new(ops, sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every workload runs at a tiny scale, twice, with the same checksum.
    #[test]
    fn every_workload_is_deterministic() {
        for w in WORKLOADS {
            let threads = match w.threads {
                Threads::One => 1,
                Threads::Any | Threads::Pairs => 2,
            };
            let p = Params {
                threads,
                scale: 0.002,
                count: None,
            };
            let a = (w.run)(&p);
            let b = (w.run)(&p);
            assert!(a.ops > 0, "{} did nothing", w.name);
            assert_eq!(a.ops, b.ops, "{}", w.name);
            assert_eq!(a.checksum, b.checksum, "{}", w.name);
        }
    }

    /// The ring workloads with one thread, which hands batches to itself.
    #[test]
    fn rings_of_one_thread() {
        for name in ["sh8bench", "rptest"] {
            let w = find(name).expect("known workload");
            let p = Params {
                threads: 1,
                scale: 0.002,
                count: None,
            };
            assert!((w.run)(&p).ops > 0, "{name}");
        }
    }

    /// cfrac's arithmetic against u128.
    #[test]
    fn bignum_matches_u128() {
        fn big(x: u128) -> Big {
            big_trim((0..4).map(|i| (x >> (32 * i)) as u32).collect())
        }
        let mut rng = Rng::new(5);
        for _ in 0..1000 {
            let a = u128::from(rng.next_u64() >> rng.below(64));
            let b = u128::from(rng.next_u64() >> rng.below(64));
            let m = (rng.next_u64() as u32).max(1);
            assert_eq!(big_add(&big(a), &big(b)), big(a + b));
            assert_eq!(big_mul(&big(a), &big(b)), big(a * b));
            assert_eq!(big_mul_small(&big(a), m), big(a * u128::from(m)));
            let (q, r) = big_divrem_small(&big(a * b), m);
            assert_eq!(
                (q, u128::from(r)),
                (big(a * b / u128::from(m)), a * b % u128::from(m))
            );
        }
    }

    #[test]
    fn count_overrides_scale() {
        let p = Params {
            threads: 1,
            scale: 0.5,
            count: Some(7),
        };
        assert_eq!(p.count(1000), 7);
        let p = Params { count: None, ..p };
        assert_eq!(p.count(1000), 500);
        assert_eq!(p.count(1), 1);
    }
}
