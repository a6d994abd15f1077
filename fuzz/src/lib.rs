//! The shadow model's pieces shared by the fuzz targets: block patterns,
//! sampled content checks, the map of live address ranges (non-overlap),
//! and a helper thread that frees blocks remotely.

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

pub const KIB: usize = 1 << 10;
pub const MIB: usize = 1 << 20;

/// Blocks up to this size are filled and checked byte by byte.
pub const FULL_CHECK: usize = 64 * KIB;
/// Stride of the sampled check beyond [`FULL_CHECK`].
pub const PAGE: usize = 4 * KIB;

/// The byte at offset `i` of block `id`: depends on both, so a block
/// copied to a wrong offset or swapped with another is caught.
pub fn pattern(id: u64, i: usize) -> u8 {
    let x = (i as u64)
        .wrapping_mul(0x9E37_79B9)
        .wrapping_add(id.wrapping_mul(0xD6E8_FEB8_6659_FD93));
    (x ^ (x >> 29) ^ (x >> 13)) as u8
}

/// Calls `f` on every offset of a `len`-byte block that the model fills and
/// checks: all of them up to [`FULL_CHECK`], else the first and last page
/// plus eight bytes of every page in between.
pub fn for_sampled(len: usize, mut f: impl FnMut(usize)) {
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

/// Writes block `id`'s pattern on the sampled offsets of `len` bytes.
///
/// # Safety
/// `addr` is a live block of at least `len` writable bytes.
pub unsafe fn fill(addr: usize, len: usize, id: u64) {
    let p = addr as *mut u8;
    for_sampled(len, |i| {
        // SAFETY: `i < len`, inside the block (the caller's guarantee).
        unsafe { p.add(i).write(pattern(id, i)) }
    });
}

/// Panics unless the sampled offsets of `len` bytes hold block `id`'s
/// pattern.
///
/// # Safety
/// `addr` is a live block of at least `len` initialised bytes.
pub unsafe fn check_content(addr: usize, len: usize, id: u64, what: &str) {
    let p = addr as *const u8;
    for_sampled(len, |i| {
        // SAFETY: `i < len`, inside the block (the caller's guarantee).
        let got = unsafe { p.add(i).read() };
        assert_eq!(
            got,
            pattern(id, i),
            "{what}: block {id} at {addr:#x} (len {len}) corrupted at offset {i}"
        );
    });
}

/// Panics unless the sampled bytes of `addr[from..to]` are zero.
///
/// # Safety
/// `addr` is a live block of at least `to` initialised bytes.
pub unsafe fn check_zero(addr: usize, from: usize, to: usize, what: &str) {
    if from >= to {
        return;
    }
    let p = addr as *const u8;
    for_sampled(to - from, |i| {
        // SAFETY: `from + i < to`, inside the block.
        let got = unsafe { p.add(from + i).read() };
        assert_eq!(got, 0, "{what}: byte {} of {addr:#x} is not zero", from + i);
    });
}

/// The usable ranges of all live blocks: start -> (end, id).
#[derive(Default)]
pub struct Ranges(BTreeMap<usize, (usize, u64)>);

impl Ranges {
    /// Records `[addr, addr + len)` for block `id`, panicking if it overlaps
    /// a live block (`len` 0 counts as 1: every pointer is unique).
    pub fn insert(&mut self, addr: usize, len: usize, id: u64) {
        let end = addr + len.max(1);
        if let Some((&start, &(prev_end, other))) = self.0.range(..end).next_back() {
            assert!(
                prev_end <= addr,
                "block {id} [{addr:#x}, {end:#x}) overlaps block {other} [{start:#x}, {prev_end:#x})"
            );
        }
        self.0.insert(addr, (end, id));
    }

    pub fn remove(&mut self, addr: usize) {
        self.0
            .remove(&addr)
            .expect("removing a block the model does not know");
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// A persistent thread that runs jobs synchronously.
struct Helper {
    requests: mpsc::Sender<Job>,
    done: mpsc::Receiver<()>,
}

fn helper() -> &'static Mutex<Helper> {
    static HELPER: OnceLock<Mutex<Helper>> = OnceLock::new();
    HELPER.get_or_init(|| {
        let (requests, rx) = mpsc::channel::<Job>();
        let (tx, done) = mpsc::channel();
        std::thread::spawn(move || {
            for job in rx {
                job();
                tx.send(()).unwrap();
            }
        });
        Mutex::new(Helper { requests, done })
    })
}

/// Runs `job` on the helper thread and waits for it: frees made there take
/// the allocator's remote-free paths, deterministically.
pub fn on_helper(job: impl FnOnce() + Send) {
    let job: Box<dyn FnOnce() + Send + '_> = Box::new(job);
    // SAFETY: the job has finished (we wait for its reply below) before
    // anything it borrows can go away, so extending its lifetime is sound;
    // only the lifetime changes, not the type.
    let job: Job = unsafe { core::mem::transmute(job) };
    let helper = helper().lock().unwrap();
    helper.requests.send(job).unwrap();
    helper.done.recv().unwrap();
}

/// A raw address that may be moved to the helper thread.
#[derive(Clone, Copy)]
pub struct SendPtr(pub usize);
