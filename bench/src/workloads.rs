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
//! threads, remote frees   larson (1, 2 threads), xmalloc (2, 4), mstress (1, 2)
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
use std::sync::{mpsc, Mutex};
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
    let sum: u64 = thread::scope(|s| {
        let handles: Vec<_> = senders
            .into_iter()
            .zip(receivers)
            .enumerate()
            .map(|(i, (tx, rx))| s.spawn(move || larson_thread(i as u64, n, tx, rx)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("larson thread"))
            .sum()
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
    let sum: u64 = thread::scope(|s| {
        let handles: Vec<_> = (0..p.threads)
            .map(|i| {
                let transfer = &transfer;
                s.spawn(move || {
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
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("mstress thread"))
            .sum()
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
