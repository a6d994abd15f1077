//! Transparent huge pages: segments ask for them by default, and
//! `Rulloc::set_huge_pages(false)` stops it. Read back from the kernel:
//! `madvise(MADV_HUGEPAGE)` marks the mapping with the `hg` flag in
//! `/proc/self/smaps`. (Its own test binary: the switch is process-wide.)
#![cfg(target_os = "linux")]

use rulloc::Rulloc;

/// The `VmFlags` of the mapping of `/proc/self/smaps` that holds `address`.
fn vm_flags_of(address: usize) -> Vec<String> {
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

#[test]
#[cfg_attr(miri, ignore)] // no /proc under Miri, and no mappings of our own
fn segments_ask_for_huge_pages_unless_turned_off() {
    let with = Rulloc::new();
    let block = with.allocate_bytes(64, 8);
    assert!(!block.is_null());
    let flags = vm_flags_of(block.addr());
    assert!(flags.iter().any(|f| f == "hg"), "default: {flags:?}");

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
