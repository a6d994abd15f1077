//! Rulloc against the C library's `malloc` as the global allocator, on one
//! threaded workload. Built for musl this shows why a musl program wants
//! another allocator: musl's mallocng serialises every thread on one lock.
//!
//! ```text
//! cargo run --release --example musl_bench --target x86_64-unknown-linux-musl
//! cargo run --release --example musl_bench            # same against glibc
//! ```
//!
//! Without arguments the example is a driver: it runs itself once per
//! allocator (`RULLOC_BENCH_ALLOCATOR=system|rulloc`, read with `getenv`
//! before the first allocation, so one process never mixes the two), takes
//! the best of three runs of each and prints one line per allocator.
//!
//! The workload: 4 threads (twice the cores of the CI machine), each
//! replacing random slots of its own window of 1,000 live blocks 2,000,000
//! times (8..512 bytes, one in 16 of 1..8 KiB); every 64th block is handed
//! to the next thread, which frees it (a remote free).

#[cfg(unix)]
fn main() {
    bench::main();
}

#[cfg(not(unix))]
fn main() {
    println!("musl_bench compares against the C library's malloc: Unix only");
}

#[cfg(unix)]
mod bench {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::ffi::CStr;
    use std::sync::atomic::{AtomicU8, Ordering};
    use std::sync::Mutex;
    use std::time::{Duration, Instant};

    use rulloc::Rulloc;

    const ENV: &CStr = c"RULLOC_BENCH_ALLOCATOR";
    const THREADS: usize = 4;
    const OPS_PER_THREAD: usize = 2_000_000;
    const WINDOW: usize = 1_000;
    /// Every this many allocations, one block goes to the next thread.
    const HAND_OVER_EVERY: usize = 64;
    const RUNS: usize = 3;

    const UNDECIDED: u8 = 0;
    const SYSTEM: u8 = 1;
    const RULLOC: u8 = 2;

    /// The global allocator: the C library's or Rulloc, chosen once per
    /// process from the environment before the first allocation.
    struct Chosen;

    static RULLOC_ALLOCATOR: Rulloc = Rulloc::new();
    static CHOICE: AtomicU8 = AtomicU8::new(UNDECIDED);

    #[global_allocator]
    static GLOBAL: Chosen = Chosen;

    fn choice() -> u8 {
        let choice = CHOICE.load(Ordering::Relaxed);
        if choice != UNDECIDED {
            return choice;
        }
        // SAFETY: `getenv` with a NUL-terminated name; it allocates nothing.
        let value = unsafe { libc::getenv(ENV.as_ptr()) };
        // SAFETY: a non-null `getenv` result is a NUL-terminated string.
        let choice = if !value.is_null() && unsafe { CStr::from_ptr(value) } == c"rulloc" {
            RULLOC
        } else {
            SYSTEM
        };
        // The first allocation happens on the main thread before any other
        // thread exists, so every thread sees the same choice.
        CHOICE.store(choice, Ordering::Relaxed);
        choice
    }

    // SAFETY: forwards every call to one allocator for the whole process.
    unsafe impl GlobalAlloc for Chosen {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            // SAFETY: forwarded contract.
            unsafe {
                if choice() == RULLOC {
                    RULLOC_ALLOCATOR.alloc(layout)
                } else {
                    System.alloc(layout)
                }
            }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: forwarded contract; `ptr` came from the same allocator.
            unsafe {
                if choice() == RULLOC {
                    RULLOC_ALLOCATOR.dealloc(ptr, layout)
                } else {
                    System.dealloc(ptr, layout)
                }
            }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            // SAFETY: forwarded contract; `ptr` came from the same allocator.
            unsafe {
                if choice() == RULLOC {
                    RULLOC_ALLOCATOR.realloc(ptr, layout, new_size)
                } else {
                    System.realloc(ptr, layout, new_size)
                }
            }
        }
    }

    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> usize {
            // xorshift64*
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as usize
        }
    }

    /// One thread's share of the workload. `inboxes[t]` collects blocks
    /// for thread `t` to free.
    fn worker(me: usize, inboxes: &[Mutex<Vec<Vec<u8>>>]) {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (me as u64 + 1));
        let mut live: Vec<Vec<u8>> = (0..WINDOW).map(|_| Vec::new()).collect();
        for op in 0..OPS_PER_THREAD {
            let random = rng.next();
            let size = if random % 16 == 0 {
                1024 + (random >> 4) % 7168
            } else {
                8 + (random >> 4) % 504
            };
            let mut block = Vec::with_capacity(size);
            block.push(op as u8);
            let old = std::mem::replace(&mut live[(random >> 16) % WINDOW], block);
            if op % HAND_OVER_EVERY == 0 {
                inboxes[(me + 1) % THREADS].lock().unwrap().push(old);
                // Free what the previous thread handed to us.
                let received = std::mem::take(&mut *inboxes[me].lock().unwrap());
                drop(received);
            } else {
                drop(old);
            }
        }
    }

    fn run_workload() -> Duration {
        let inboxes: Vec<Mutex<Vec<Vec<u8>>>> =
            (0..THREADS).map(|_| Mutex::new(Vec::new())).collect();
        let start = Instant::now();
        std::thread::scope(|scope| {
            for me in 0..THREADS {
                let inboxes = &inboxes;
                scope.spawn(move || worker(me, inboxes));
            }
        });
        start.elapsed()
    }

    pub(super) fn main() {
        if CHOICE.load(Ordering::Relaxed) == UNDECIDED {
            choice();
        }
        // SAFETY: `getenv` with a NUL-terminated name.
        if !unsafe { libc::getenv(ENV.as_ptr()) }.is_null() {
            // A measured child: one run, its time in ms on stdout.
            println!("{}", run_workload().as_secs_f64() * 1000.0);
            return;
        }
        let libc_name = if cfg!(target_env = "musl") {
            "musl"
        } else if cfg!(target_env = "gnu") {
            "glibc"
        } else {
            "libc"
        };
        let ops = (THREADS * OPS_PER_THREAD) as f64;
        println!(
            "musl_bench: {THREADS} threads x {OPS_PER_THREAD} malloc+free pairs, best of {RUNS}"
        );
        let mut best_ms = Vec::new();
        for (name, value) in [
            (format!("{libc_name} malloc"), "system"),
            ("Rulloc".into(), "rulloc"),
        ] {
            let mut best = f64::INFINITY;
            for _ in 0..RUNS {
                let exe = std::env::current_exe().expect("own executable");
                let output = std::process::Command::new(exe)
                    .env("RULLOC_BENCH_ALLOCATOR", value)
                    .output()
                    .expect("run the measured child");
                assert!(output.status.success(), "child failed: {output:?}");
                let ms: f64 = String::from_utf8_lossy(&output.stdout)
                    .trim()
                    .parse()
                    .expect("child prints milliseconds");
                best = best.min(ms);
            }
            println!(
                "  {name:<14} {best:>9.1} ms  {:>7.1} M pairs/s",
                ops / best / 1000.0
            );
            best_ms.push(best);
        }
        println!(
            "  Rulloc is {:.1}x as fast as {libc_name} malloc",
            best_ms[0] / best_ms[1]
        );
    }
}
