//! `fork()` from a multi-threaded Rust program whose `#[global_allocator]`
//! is Rulloc.
//!
//! Worker threads allocate, fill, check, exchange (so frees cross threads)
//! and free blocks of 1 B .. 4 MiB (small, large and huge) for the whole
//! test, while the main thread forks again and again. Every child, forked
//! at an arbitrary point of the workers' operations, must find a working
//! allocator: it checks and frees blocks the parent allocated before the
//! fork, allocates and frees blocks of every kind, sometimes starts a
//! thread that allocates too, and `_exit`s — 0 if every check passed.
//!
//! A hang fails instead of blocking: each child arms `alarm()` at once,
//! and the parent polls `waitpid` and kills a child still running after
//! [`CHILD_TIMEOUT`].
//!
//! The program registers no fork handlers of its own: the allocator core
//! registers `pthread_atfork` handlers on its first allocation
//! (`src/fork.rs`), which is what makes a child's allocator consistent.
#![cfg(target_os = "linux")]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rulloc::Rulloc;

#[global_allocator]
static GLOBAL: Rulloc = Rulloc::new();

/// Forks per test.
const FORKS: usize = 400;
/// Worker threads allocating while the main thread forks.
const WORKERS: usize = 3;
/// A child still running after this is hung.
const CHILD_TIMEOUT: Duration = Duration::from_secs(10);

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

/// A block with its pattern id, checked before it is dropped.
struct Block {
    data: Vec<u8>,
    id: u64,
}

impl Block {
    fn new(rng: &mut XorShift) -> Self {
        let size = match rng.below(100) {
            0..=79 => rng.range(1, 512),
            80..=97 => rng.range(512, 256 * KIB),
            // Large (up to 2 MiB) and huge (own mapping) blocks.
            _ => rng.range(MIB, 4 * MIB),
        };
        let id = rng.next_u64();
        let mut data = Vec::with_capacity(size);
        // SAFETY: `size` bytes of capacity, filled before `set_len`.
        unsafe {
            fill(data.as_mut_ptr(), size, id);
            data.set_len(size);
        }
        Self { data, id }
    }

    fn check(&self, what: &str) {
        // SAFETY: `data` holds `len` initialised bytes.
        if let Some(at) = unsafe { find_mismatch(self.data.as_ptr(), self.data.len(), self.id) } {
            panic!(
                "{what}: block {} of {} bytes corrupted at {at}",
                self.id,
                self.data.len()
            );
        }
    }
}

fn worker(seed: u64, stop: &AtomicBool, exchange: &Mutex<Vec<Block>>, ops: &AtomicUsize) {
    let mut rng = XorShift::new(seed);
    let mut mine: Vec<Option<Block>> = (0..64).map(|_| None).collect();
    while !stop.load(Ordering::Relaxed) {
        let slot = rng.below(mine.len());
        if let Some(old) = mine[slot].replace(Block::new(&mut rng)) {
            old.check("worker");
        }
        if rng.chance(1, 4) {
            let b = Block::new(&mut rng);
            let mut shared = exchange.lock().unwrap();
            if shared.len() < 32 {
                shared.push(b);
            } else {
                let i = rng.below(shared.len());
                let old = std::mem::replace(&mut shared[i], b);
                drop(shared);
                old.check("exchanged");
            }
        }
        ops.fetch_add(1, Ordering::Relaxed);
    }
}

/// What a child does; returns whether every check passed. Panics are
/// caught by the caller.
fn in_child(inherited: &[Block], seed: u64) -> bool {
    for b in inherited {
        b.check("inherited");
    }
    let mut rng = XorShift::new(seed);
    let mut blocks: Vec<Block> = (0..50).map(|_| Block::new(&mut rng)).collect();
    // Blocks of every kind, including a huge one.
    blocks.push(Block {
        data: vec![7; 5 * MIB],
        id: 0,
    });
    let huge = blocks.pop().unwrap();
    let huge_ok = huge.data.iter().all(|&b| b == 7);
    drop(huge);
    let text = format!("child {seed} with {} blocks", blocks.len());
    if seed % 4 == 0 {
        // A thread in the child, allocating and freeing too.
        let handle = std::thread::spawn(move || {
            let mut rng = XorShift::new(seed ^ 0xABCD);
            (0..50)
                .map(|_| Block::new(&mut rng))
                .map(|b| b.data.len())
                .sum::<usize>()
        });
        if handle.join().is_err() {
            return false;
        }
    }
    for b in &blocks {
        b.check("child");
    }
    huge_ok && text.starts_with("child")
}

/// Forks [`FORKS`] times while the workers run; returns the children that
/// failed and how long the forks took.
fn fork_loop() -> (Vec<String>, Duration, usize) {
    let stop = AtomicBool::new(false);
    let exchange = Mutex::new(Vec::new());
    let ops = AtomicUsize::new(0);
    let mut failures = Vec::new();
    let start = Instant::now();
    std::thread::scope(|s| {
        for w in 0..WORKERS {
            let (stop, exchange, ops) = (&stop, &exchange, &ops);
            s.spawn(move || worker(w as u64 + 1, stop, exchange, ops));
        }
        let mut rng = XorShift::new(99);
        for i in 0..FORKS {
            // Blocks the child inherits and frees.
            let inherited: Vec<Block> = (0..4).map(|_| Block::new(&mut rng)).collect();
            // SAFETY: the child only allocates (the allocator's fork
            // handlers or the test's subject), runs Rust code and `_exit`s.
            let pid = unsafe { libc::fork() };
            assert!(pid >= 0, "fork failed");
            if pid == 0 {
                // SAFETY: plain syscall: a hung child dies of SIGALRM, as a
                // backstop (the parent kills it first, after taking its
                // backtrace).
                unsafe { libc::alarm(CHILD_TIMEOUT.as_secs() as u32 + 20) };
                let ok =
                    std::panic::catch_unwind(|| in_child(&inherited, i as u64)).unwrap_or(false);
                // SAFETY: leave without running the parent's atexit
                // handlers or destructors.
                unsafe { libc::_exit(if ok { 0 } else { 1 }) };
            }
            if let Some(failure) = wait_with_timeout(pid) {
                failures.push(format!("fork {i}: {failure}"));
            }
            drop(inherited);
        }
        stop.store(true, Ordering::Relaxed);
    });
    (failures, start.elapsed(), ops.load(Ordering::Relaxed))
}

/// Waits for `pid`; after [`CHILD_TIMEOUT`] takes its backtrace (if gdb is
/// installed) and kills it. `None` if it exited with status 0.
fn wait_with_timeout(pid: libc::pid_t) -> Option<String> {
    let deadline = Instant::now() + CHILD_TIMEOUT;
    let mut status = 0;
    loop {
        // SAFETY: plain syscall with a valid out-pointer.
        let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if rc == pid {
            break;
        }
        assert_eq!(rc, 0, "waitpid");
        if Instant::now() > deadline {
            let backtrace = backtrace_of(pid);
            // SAFETY: plain syscalls on our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            return Some(format!("hung: killed after {CHILD_TIMEOUT:?}\n{backtrace}"));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        None
    } else if libc::WIFSIGNALED(status) {
        let signal = libc::WTERMSIG(status);
        Some(if signal == libc::SIGALRM {
            "hung: the child's alarm fired".into()
        } else {
            format!("killed by signal {signal}")
        })
    } else {
        Some(format!("exit status {}", libc::WEXITSTATUS(status)))
    }
}

/// The hung child's stack, from gdb if it is installed.
fn backtrace_of(pid: libc::pid_t) -> String {
    let out = std::process::Command::new("gdb")
        .args([
            "-p",
            &pid.to_string(),
            "-batch",
            "-ex",
            "thread apply all bt",
        ])
        .output();
    match out {
        Ok(out) => String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with('#') || l.starts_with("Thread"))
            .collect::<Vec<_>>()
            .join("\n"),
        Err(_) => "(no gdb: no backtrace)".into(),
    }
}

#[test]
#[cfg_attr(miri, ignore)] // fork, waitpid and alarm are not supported by Miri.
fn fork_while_threads_allocate() {
    let (failures, elapsed, ops) = fork_loop();
    println!("{FORKS} forks in {elapsed:.2?}, workers did {ops} operations meanwhile");
    assert!(
        failures.is_empty(),
        "{} of {FORKS} children failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
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

/// Xorshift64*: a tiny deterministic RNG.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `num / den`.
    fn chance(&mut self, num: usize, den: usize) -> bool {
        self.below(den) < num
    }
}
