//! Helpers shared by the integration tests: byte patterns that identify a
//! block, a tiny deterministic RNG, and size helpers that scale down under
//! Miri.
//!
//! Every test binary includes this module with `mod common;`, and not every
//! binary uses every helper.
#![allow(dead_code)]

use core::ptr;

/// Period of a block pattern. A prime, so that a block copied to the wrong
/// offset (by a multiple of a power of two, as an allocator bug would) does
/// not match its own pattern.
pub const PERIOD: usize = 251;

const MIB: usize = 1 << 20;

/// `small` under Miri, `big` otherwise.
pub const fn scaled(big: usize, small: usize) -> usize {
    if cfg!(miri) {
        small
    } else {
        big
    }
}

/// Largest "several MiB" size the tests use: 8 MiB natively, 1 MiB under
/// Miri (where every byte touched is interpreted).
pub const BIG: usize = scaled(8 * MIB, MIB);

/// The 251-byte pattern of block `id`. Byte `i` of a block holds
/// `pattern(id)[i % PERIOD]`.
pub fn pattern(id: u64) -> [u8; PERIOD] {
    let h = id.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let a = (h >> 56) as u8;
    let b = ((h >> 48) as u8) | 1;
    let mut out = [0u8; PERIOD];
    for (i, byte) in out.iter_mut().enumerate() {
        // Never all zero, so a zeroed block never passes for a filled one.
        *byte = a.wrapping_add((i as u8).wrapping_mul(b)) | 0x01;
    }
    out
}

/// Fills `len` bytes at `ptr` with the pattern of `id`.
///
/// Writes one period, then doubles the filled prefix with `memcpy`, so a
/// large fill is a handful of intrinsic calls (fast under Miri too).
///
/// # Safety
/// `ptr` is valid for writes of `len` bytes.
pub unsafe fn fill(ptr: *mut u8, len: usize, id: u64) {
    let pat = pattern(id);
    let first = PERIOD.min(len);
    // SAFETY: `first <= len` bytes are writable; `pat` is a distinct local.
    unsafe { ptr::copy_nonoverlapping(pat.as_ptr(), ptr, first) };
    let mut done = first;
    while done < len {
        // Copying whole periods keeps the pattern periodic.
        let n = (done / PERIOD * PERIOD).min(len - done);
        // SAFETY: `ptr[..done]` is filled, `ptr[done..done + n]` is writable
        // (`done + n <= len`) and the two ranges do not overlap.
        unsafe { ptr::copy_nonoverlapping(ptr, ptr.add(done), n) };
        done += n;
    }
}

/// Offset of the first byte in `ptr[..len]` that does not hold the pattern
/// of `id`, if any.
///
/// The fast path is two comparisons: the first period against the pattern,
/// and the block against itself shifted by one period (which holds exactly
/// when the block is periodic).
///
/// # Safety
/// `ptr` is valid for reads of `len` initialized bytes.
pub unsafe fn find_mismatch(ptr: *const u8, len: usize, id: u64) -> Option<usize> {
    let pat = pattern(id);
    // SAFETY: the caller guarantees `len` readable, initialized bytes.
    let bytes = unsafe { core::slice::from_raw_parts(ptr, len) };
    let first = PERIOD.min(len);
    if bytes[..first] == pat[..first] && (len <= PERIOD || bytes[PERIOD..] == bytes[..len - PERIOD])
    {
        return None;
    }
    bytes
        .iter()
        .enumerate()
        .position(|(i, &b)| b != pat[i % PERIOD])
}

/// Panics unless `ptr[..len]` holds the pattern of `id`.
///
/// # Safety
/// `ptr` is valid for reads of `len` initialized bytes.
#[track_caller]
pub unsafe fn check(ptr: *const u8, len: usize, id: u64, what: &str) {
    // SAFETY: forwarded from the caller.
    if let Some(off) = unsafe { find_mismatch(ptr, len, id) } {
        // SAFETY: `off < len`, so the byte is readable.
        let got = unsafe { *ptr.add(off) };
        panic!(
            "{what}: block {id} at {ptr:p} (len {len}) corrupted at offset {off}: \
             got {got:#04x}, expected {:#04x}",
            pattern(id)[off % PERIOD]
        );
    }
}

/// Panics unless `ptr[from..to]` is all zero.
///
/// # Safety
/// `ptr` is valid for reads of `to` initialized bytes.
#[track_caller]
pub unsafe fn check_zero(ptr: *const u8, from: usize, to: usize, what: &str) {
    if from >= to {
        return;
    }
    // SAFETY: the caller guarantees `to` readable, initialized bytes.
    let bytes = unsafe { core::slice::from_raw_parts(ptr.add(from), to - from) };
    // All bytes equal their successor and the first is zero: all zero.
    if bytes[0] == 0 && bytes[1..] == bytes[..bytes.len() - 1] {
        return;
    }
    let i = bytes.iter().position(|&b| b != 0).unwrap();
    panic!(
        "{what}: byte {} of {ptr:p} should be zero, got {:#04x}",
        from + i,
        bytes[i]
    );
}

/// Xorshift64*: a tiny deterministic RNG, so tests that cannot use proptest
/// (Miri) are reproducible from a seed.
#[derive(Clone, Debug)]
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `num / den`.
    pub fn chance(&mut self, num: usize, den: usize) -> bool {
        self.below(den) < num
    }

    /// A size biased to small ones: mostly up to 64 B, some up to 1 KiB,
    /// 16 KiB and 300 KiB, and rarely between `big / 2` and `big` (never
    /// more than `big`).
    pub fn size(&mut self, big: usize) -> usize {
        let hi = match self.below(22) {
            0..=9 => 64,
            10..=15 => 1024,
            16..=18 => 16 * 1024,
            19..=20 => 300 * 1024,
            _ => return self.range(big / 2, big),
        };
        self.range(0, hi.min(big))
    }

    /// An alignment: mostly `1..=4096`, rarely `64 KiB..=max_big_align`.
    pub fn align(&mut self, max_big_align: usize) -> usize {
        if self.chance(1, 30) && max_big_align >= 1 << 16 {
            let hi = max_big_align.trailing_zeros() as usize;
            1 << self.range(16, hi)
        } else {
            1 << self.range(0, 12)
        }
    }
}

/// Panics unless `ptr` is non-null and aligned to `align`.
#[track_caller]
pub fn assert_aligned(ptr: *const u8, align: usize, what: &str) {
    assert!(!ptr.is_null(), "{what}: null pointer");
    assert_eq!(
        ptr as usize % align,
        0,
        "{what}: {ptr:p} is not aligned to {align}"
    );
}

/// Joins every scoped thread by its handle, propagating panics.
///
/// The end of a `thread::scope` only waits for the closures to return; a
/// thread may still be running its thread-local destructors and Rulloc's
/// exit hook (which gives its heap back) after that. Joining by handle
/// waits for the thread to be gone, so a test that drops its instance
/// after the scope does not race with the exit hooks (a race that leaves
/// an orphaned heap page, which Miri reports as a leak).
pub fn join_all<T>(handles: Vec<std::thread::ScopedJoinHandle<'_, T>>) -> Vec<T> {
    handles
        .into_iter()
        .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
        .collect()
}

/// Runs the test `name` of this test binary again, alone, in a child
/// process whose environment has `var` set to `value` (the child's cue to
/// do the work the parent only watches), and returns what the child did.
///
/// For outcomes a test process cannot survive or undo: aborts, signals,
/// `setrlimit`.
pub fn run_test_in_child(name: &str, var: &str, value: &str) -> std::process::Output {
    std::process::Command::new(std::env::current_exe().expect("the test binary's path"))
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(var, value)
        .output()
        .expect("spawning the child test process")
}

/// The `VmFlags` of the mapping of `/proc/self/smaps` that holds `address`.
#[cfg(target_os = "linux")]
pub fn vm_flags_of(address: usize) -> Vec<String> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").expect("reading /proc/self/smaps");
    let mut inside = false;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some((start, end)) = first.split_once('-') {
            if let (Ok(start), Ok(end)) = (
                usize::from_str_radix(start, 16),
                usize::from_str_radix(end, 16),
            ) {
                inside = (start..end).contains(&address);
                continue;
            }
        }
        if inside {
            if let Some(flags) = line.strip_prefix("VmFlags:") {
                return flags.split_whitespace().map(str::to_owned).collect();
            }
        }
    }
    panic!("no mapping holds {address:#x}");
}
