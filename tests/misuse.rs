//! Misuse is stopped with one line naming it, not turned into heap
//! corruption. Each case runs in a child process (this test binary again,
//! with `RULLOC_MISUSE_CASE` set) and must die with SIGABRT after printing
//! `rulloc: fatal: <what>`. Which cases each build catches is the table in
//! the README; cases the default build does not catch run only with
//! `--features secure` (in the default build they are undefined behaviour,
//! so there is nothing to assert).

#![cfg(all(unix, not(miri)))]

use std::alloc::{GlobalAlloc, Layout};

use rulloc::Rulloc;

mod common;

const CASE_ENV: &str = "RULLOC_MISUSE_CASE";
const SECURE: bool = cfg!(feature = "secure");

/// Runs one misuse in this process (the child side).
fn run_case(name: &str) {
    let a = Rulloc::new();
    let mut local = 0u64;
    // SAFETY: none of this is safe: every case misuses the allocator on
    // purpose, in a child process, to check that it stops the process.
    unsafe {
        match name {
            "double_free_small" => {
                let p = a.allocate_bytes(32, 8);
                a.deallocate_bytes(p);
                a.deallocate_bytes(p);
            }
            "double_free_small_later" => {
                let p = a.allocate_bytes(32, 8);
                let q = a.allocate_bytes(32, 8);
                a.deallocate_bytes(p);
                a.deallocate_bytes(q);
                a.deallocate_bytes(p);
            }
            "double_free_large" => {
                let p = a.allocate_bytes(300 << 10, 8);
                a.deallocate_bytes(p);
                a.deallocate_bytes(p);
            }
            "double_free_huge" => {
                let p = a.allocate_bytes(8 << 20, 8);
                a.deallocate_bytes(p);
                a.deallocate_bytes(p);
            }
            "double_free_remote" => {
                let keep = a.allocate_bytes(32, 8);
                let p = a.allocate_bytes(32, 8).addr();
                std::thread::scope(|s| {
                    s.spawn(|| {
                        let p = std::ptr::with_exposed_provenance_mut::<u8>(p);
                        a.deallocate_bytes(p);
                        a.deallocate_bytes(p);
                    });
                });
                a.deallocate_bytes(keep);
                // The owner finds out when it collects the remote frees.
                for _ in 0..10_000 {
                    let _ = a.allocate_bytes(32, 8);
                }
            }
            "interior_free_small" => {
                let p = a.allocate_bytes(64, 8);
                a.deallocate_bytes(p.add(8));
            }
            "interior_free_large" => {
                let p = a.allocate_bytes(300 << 10, 8);
                a.deallocate_bytes(p.add(4096));
            }
            "interior_free_huge" => {
                let p = a.allocate_bytes(8 << 20, 8);
                a.deallocate_bytes(p.add(4096));
            }
            "free_old_address_after_move" => {
                // A huge block grown with the pages after it taken moves
                // (Linux: its mapping, by `mremap`; elsewhere: copied);
                // its old address is then no block.
                let p = a.allocate_bytes(6 << 20, 8);
                p.write_bytes(0x5a, 6 << 20);
                #[cfg(target_os = "linux")]
                {
                    // (Elsewhere a huge block never grows in place.)
                    let end = p.add(a.usable_size(p));
                    // NOREPLACE: fails (the page is taken already, just as
                    // good) rather than clobber a mapping.
                    libc::mmap(
                        end.cast(),
                        4096,
                        libc::PROT_NONE,
                        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                        -1,
                        0,
                    );
                }
                let before = a.stats();
                let q = a.reallocate_bytes(p, 40 << 20, 8);
                assert_ne!(q, p, "moved");
                if cfg!(target_os = "linux") {
                    let s = a.stats();
                    assert_eq!(s.map_calls, before.map_calls, "not copied: {s:?}");
                    assert_eq!(s.remap_calls, before.remap_calls + 1, "{s:?}");
                }
                assert!((0..6 << 20).step_by(4096).all(|i| *q.add(i) == 0x5a));
                // Known at its new address (else: "usable size of invalid
                // pointer").
                assert!(a.usable_size(q) >= 40 << 20);
                a.deallocate_bytes(p);
            }
            "wild_pointer" => a.deallocate_bytes(std::ptr::without_provenance_mut(0x5000_0000)),
            "stack_pointer" => a.deallocate_bytes((&mut local as *mut u64).cast()),
            "realloc_after_free_small" => {
                let p = a.allocate_bytes(48, 8);
                let _keep = a.allocate_bytes(48, 8);
                a.deallocate_bytes(p);
                let _ = a.reallocate_bytes(p, 4000, 8);
            }
            "realloc_after_free_large" => {
                let p = a.allocate_bytes(300 << 10, 8);
                a.deallocate_bytes(p);
                let _ = a.reallocate_bytes(p, 400 << 10, 8);
            }
            "overflow_into_freed_neighbour" => {
                // Two neighbours of one region; the second is freed, then the
                // first overflows over its free-list link.
                let blocks: Vec<*mut u8> = (0..256).map(|_| a.allocate_bytes(32, 8)).collect();
                let (first, second) = blocks
                    .iter()
                    .find_map(|&f| {
                        let s = blocks
                            .iter()
                            .copied()
                            .find(|&b| b.addr() == f.addr() + 32)?;
                        Some((f, s))
                    })
                    .expect("two physical neighbours among 256 blocks");
                a.deallocate_bytes(second);
                first.write_bytes(0x41, 48);
                for _ in 0..256 {
                    let _ = a.allocate_bytes(32, 8);
                }
            }
            "use_after_free_write" => {
                let p = a.allocate_bytes(32, 8);
                let _keep = a.allocate_bytes(32, 8);
                a.deallocate_bytes(p);
                p.cast::<usize>().write(0x4141_4141_4141_u64 as usize);
                for _ in 0..64 {
                    let _ = a.allocate_bytes(32, 8);
                }
            }
            "dealloc_wrong_layout" => {
                let layout = Layout::from_size_align(32, 8).unwrap();
                let p = a.alloc(layout);
                a.dealloc(p, Layout::from_size_align(4096, 8).unwrap());
            }
            // The secure build's free fast path trusts a segment once a
            // free found it to be the thread's own: the cases below free a
            // block first, so the misuse takes that path.
            "interior_free_small_fast" => {
                let p = a.allocate_bytes(64, 8);
                let q = a.allocate_bytes(64, 8);
                a.deallocate_bytes(p);
                a.deallocate_bytes(q.add(16));
            }
            "dealloc_wrong_layout_fast" => {
                let layout = Layout::from_size_align(32, 8).unwrap();
                let p = a.alloc(layout);
                let q = a.alloc(layout);
                a.dealloc(p, layout);
                a.dealloc(q, Layout::from_size_align(48, 8).unwrap());
            }
            "dealloc_wrong_align_fast" => {
                let layout = Layout::from_size_align(32, 8).unwrap();
                let p = a.alloc(layout);
                let blocks: Vec<*mut u8> = (0..64).map(|_| a.alloc(layout)).collect();
                a.dealloc(p, layout);
                // A 32-byte block that is not 64-byte aligned, freed as one.
                let q = *blocks.iter().find(|b| b.addr() % 64 != 0).unwrap();
                a.dealloc(q, Layout::from_size_align(32, 64).unwrap());
            }
            "free_into_live_map" => {
                // The first grid slot of a 32-byte region (one 64 KiB
                // slot): the secure build's live map, on the block grid
                // but no block. Freed after a block, so the free takes the
                // fast path.
                let p = a.allocate_bytes(32, 8);
                let q = a.allocate_bytes(32, 8);
                a.deallocate_bytes(p);
                a.deallocate_bytes(q.map_addr(|q| q & !0xffff));
            }
            "remote_free_into_live_map" => {
                // As above, from a thread that does not own the region:
                // the secure free's foreign path.
                let keep = a.allocate_bytes(32, 8).addr();
                std::thread::scope(|s| {
                    s.spawn(|| {
                        let map = std::ptr::without_provenance_mut::<u8>(keep & !0xffff);
                        a.deallocate_bytes(map);
                    });
                });
            }
            "free_into_unmapped_segment" => {
                // The segment the fast path trusted is unmapped (collect
                // gives empty segments back): a stale pointer into it must
                // still be caught by the segment map, not fault.
                // (`dealloc`: `deallocate_bytes` always checks the map.)
                let layout = Layout::from_size_align(32, 8).unwrap();
                let p = a.alloc(layout);
                let q = a.alloc(layout);
                a.dealloc(q, layout);
                a.dealloc(p, layout);
                a.collect();
                assert_eq!(a.stats().segments, 0, "collect unmapped the segment");
                a.dealloc(p, layout);
            }
            other => panic!("unknown misuse case {other}"),
        }
    }
    // Reaching this line means the misuse went unnoticed.
    std::process::exit(0);
}

/// The child entry point: does nothing unless `RULLOC_MISUSE_CASE` is set.
#[test]
fn misuse_child() {
    if let Ok(name) = std::env::var(CASE_ENV) {
        run_case(&name);
    }
}

/// Runs `name` in a child and checks it died of SIGABRT naming `what`.
fn expect_fatal(name: &str, what: &str) {
    let output = common::run_test_in_child("misuse_child", CASE_ENV, name);
    let stderr = String::from_utf8_lossy(&output.stderr);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        output.status.signal(),
        Some(libc::SIGABRT),
        "{name}: expected SIGABRT, got {:?}; stderr:\n{stderr}",
        output.status
    );
    let line = format!("rulloc: fatal: {what}");
    assert!(
        stderr.contains(&line),
        "{name}: expected `{line}` in stderr:\n{stderr}"
    );
    assert_eq!(
        stderr
            .lines()
            .filter(|l| l.starts_with("rulloc: fatal:"))
            .count(),
        1,
        "{name}: exactly one line:\n{stderr}"
    );
}

/// `(case, message, caught by the default build)`. Every case is caught by
/// the secure build.
const CASES: &[(&str, &str, bool)] = &[
    ("double_free_small", "double free of", true),
    ("double_free_small_later", "double free of", false),
    ("double_free_large", "free of invalid pointer", true),
    ("double_free_huge", "free of invalid pointer", true),
    ("double_free_remote", "double free of", false),
    ("interior_free_small", "free of invalid pointer", false),
    ("interior_free_large", "free of invalid pointer", true),
    ("interior_free_huge", "free of invalid pointer", true),
    (
        "free_old_address_after_move",
        "free of invalid pointer",
        true,
    ),
    ("wild_pointer", "free of invalid pointer", true),
    ("stack_pointer", "free of invalid pointer", true),
    (
        "realloc_after_free_small",
        "realloc of freed pointer",
        false,
    ),
    (
        "realloc_after_free_large",
        "realloc of invalid pointer",
        true,
    ),
    (
        "overflow_into_freed_neighbour",
        "corrupted free list",
        false,
    ),
    ("use_after_free_write", "corrupted free list", false),
    (
        "dealloc_wrong_layout",
        "dealloc with a layout that does not match",
        false,
    ),
    ("interior_free_small_fast", "free of invalid pointer", false),
    (
        "dealloc_wrong_layout_fast",
        "dealloc with a layout that does not match",
        false,
    ),
    (
        "dealloc_wrong_align_fast",
        "dealloc with a layout that does not match",
        false,
    ),
    (
        "free_into_unmapped_segment",
        "free of invalid pointer",
        false,
    ),
    ("free_into_live_map", "free of invalid pointer", false),
    (
        "remote_free_into_live_map",
        "free of invalid pointer",
        false,
    ),
];

macro_rules! misuse_tests {
    ($($name:ident),* $(,)?) => {$(
        #[test]
        fn $name() {
            let (case, what, default_catches) = CASES
                .iter()
                .copied()
                .find(|(case, _, _)| *case == stringify!($name))
                .unwrap();
            if SECURE || default_catches {
                expect_fatal(case, what);
            } else {
                eprintln!("{case}: not detected by the default build (see the README); run with --features secure");
            }
        }
    )*};
}

misuse_tests!(
    double_free_small,
    double_free_small_later,
    double_free_large,
    double_free_huge,
    double_free_remote,
    interior_free_small,
    interior_free_large,
    interior_free_huge,
    free_old_address_after_move,
    wild_pointer,
    stack_pointer,
    realloc_after_free_small,
    realloc_after_free_large,
    overflow_into_freed_neighbour,
    use_after_free_write,
    dealloc_wrong_layout,
    interior_free_small_fast,
    dealloc_wrong_layout_fast,
    dealloc_wrong_align_fast,
    free_into_unmapped_segment,
    free_into_live_map,
    remote_free_into_live_map,
);
