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

mod common;
use common::{fill, find_mismatch, XorShift};

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
