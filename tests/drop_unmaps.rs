//! Dropping an instance gives its memory back to the OS, measured on the
//! process's address space; in its own test binary so that no other test's
//! allocations move the measurement.

use rulloc::Rulloc;

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

/// Address space the process has mapped now, from `/proc/self/statm`.
#[cfg(target_os = "linux")]
fn process_mapped() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = statm.split_whitespace().next().unwrap().parse().unwrap();
    // SAFETY: `sysconf` has no preconditions.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize
}

/// Dropping an instance with live blocks gives its memory back to the OS:
/// creating and dropping many instances, each holding several MiB when
/// dropped, does not grow the process's address space.
#[test]
#[cfg(target_os = "linux")]
#[cfg_attr(miri, ignore)] // Reads /proc, which Miri does not offer.
fn dropping_instances_unmaps_their_memory() {
    // Warm up `std` and the test harness first.
    let _ = process_mapped();
    let before = process_mapped();
    let rounds = 64;
    for _ in 0..rounds {
        let a = Rulloc::default();
        for size in [16usize, 1000, 100 * KIB, 8 * MIB] {
            for _ in 0..4 {
                let p = a.allocate_bytes(size, 8);
                assert!(!p.is_null());
                // SAFETY: `p` has `size` bytes; touch the ends only.
                unsafe {
                    p.write(1);
                    p.add(size - 1).write(1);
                }
            }
        }
        drop(a);
    }
    let after = process_mapped();
    // 64 rounds leaking ~33 MiB each would be 2 GiB.
    assert!(
        after < before + 256 * MIB,
        "address space grew by {} MiB over {rounds} dropped instances",
        (after.saturating_sub(before)) / MIB
    );
}
