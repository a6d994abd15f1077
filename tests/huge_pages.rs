//! Transparent huge pages: the segments of a heap that holds more than one
//! ask for them by default (a one-segment heap keeps 4 KiB pages), and
//! `Rulloc::set_huge_pages(false)` stops it. Read back from the kernel:
//! `madvise(MADV_HUGEPAGE)` marks the mapping with the `hg` flag in
//! `/proc/self/smaps`. (Its own test binary: the switch is process-wide.)
#![cfg(target_os = "linux")]

mod common;

use common::vm_flags_of;
use rulloc::Rulloc;

#[test]
#[cfg_attr(miri, ignore)] // no /proc under Miri, and no mappings of our own
fn segments_ask_for_huge_pages_unless_turned_off() {
    let with = Rulloc::new();
    let block = with.allocate_bytes(64, 8);
    assert!(!block.is_null());
    // One segment: a small heap keeps 4 KiB pages (a 2 MiB page would
    // fault in whole for a few bytes).
    let flags = vm_flags_of(block.addr());
    assert!(!flags.iter().any(|f| f == "hg"), "one segment: {flags:?}");
    // A second segment (two 2 MiB blocks do not fit in one): every segment
    // of the heap asks for huge pages from then on.
    let spans: Vec<*mut u8> = (0..2).map(|_| with.allocate_bytes(2 << 20, 8)).collect();
    assert!(spans.iter().all(|p| !p.is_null()));
    for address in [block.addr(), spans[0].addr(), spans[1].addr()] {
        let flags = vm_flags_of(address);
        assert!(flags.iter().any(|f| f == "hg"), "two segments: {flags:?}");
    }
    for p in spans {
        // SAFETY: live, freed once.
        unsafe { with.deallocate_bytes(p) };
    }

    Rulloc::set_huge_pages(false);
    let without = Rulloc::new();
    let other = without.allocate_bytes(64, 8);
    assert!(!other.is_null());
    let flags = vm_flags_of(other.addr());
    assert!(!flags.iter().any(|f| f == "hg"), "turned off: {flags:?}");

    // SAFETY: live blocks of their instances, freed once.
    unsafe {
        with.deallocate_bytes(block);
        without.deallocate_bytes(other);
    }
}
