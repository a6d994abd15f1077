//! Robustness of the C API beyond `c_programs.rs`: out of memory at several
//! address-space limits through every entry point, and fork while threads
//! allocate blocks of every kind (huge and over-aligned ones included).
//! Each C program (`tests/c/*.c`) runs with `LD_PRELOAD=librulloc.so`,
//! checks that the allocation functions really are librulloc's, prints
//! `<name>: ok ...` and exits 0; a crash, an abort, a failed check or a
//! hang (killed after the timeout) fails the test.
#![cfg(target_os = "linux")]

mod common;

use std::time::Duration;

use common::*;

/// Bounds a hang; the programs take a second or so.
const TIMEOUT: Duration = Duration::from_secs(120);

fn assert_ok_line(run: &Run, name: &str) {
    let expected = format!("{name}: ok");
    assert!(
        run.stdout_str().contains(&expected),
        "no `{expected}` line:\n{}",
        run.describe()
    );
    print!("{}", run.stdout_str());
}

/// Out of memory under `RLIMIT_AS` = what the program uses + `headroom_mib`:
/// NULL + `ENOMEM` (never a crash) from malloc, calloc, aligned_alloc,
/// memalign, posix_memalign, valloc, pvalloc, realloc (growing small, large
/// and huge blocks) and reallocarray; old blocks intact; a thread whose
/// first allocation comes under OOM; allocation works again after freeing.
fn oom_at(headroom_mib: usize) {
    let arg = headroom_mib.to_string();
    let run = run_c_test("oom_limits", &[&arg], TIMEOUT);
    assert_ok_line(&run, "oom_limits");
}

#[test]
fn out_of_memory_no_headroom() {
    oom_at(0);
}

#[test]
fn out_of_memory_2_mib_headroom() {
    oom_at(2);
}

#[test]
fn out_of_memory_8_mib_headroom() {
    oom_at(8);
}

#[test]
fn out_of_memory_64_mib_headroom() {
    oom_at(64);
}

#[test]
fn out_of_memory_256_mib_headroom() {
    oom_at(256);
}

/// 100 forks while three threads allocate, exchange and free blocks of
/// 1 B .. 8 MiB (huge ones have their own mappings and lock) aligned up to
/// 1 MiB; each child frees inherited blocks, calls every allocation
/// function with every kind of size and exits. A hung child fails.
#[test]
fn fork_with_huge_and_aligned_blocks() {
    let run = run_c_test("fork_sizes", &["100", "3"], TIMEOUT);
    assert_ok_line(&run, "fork_sizes");
}
