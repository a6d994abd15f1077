//! Creating and ending 20,000 threads with Rulloc as the global allocator:
//! memory stays bounded by the number of *concurrent* threads, because an
//! exited thread's heap is adopted by the next thread. (Its own test binary:
//! the RSS and heap counts must not see other tests' threads.)

use std::sync::mpsc;
use std::thread;

#[global_allocator]
static ALLOCATOR: rulloc::Rulloc = rulloc::Rulloc::new();

fn pattern(seed: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (seed.wrapping_mul(31).wrapping_add(i) % 251) as u8)
        .collect()
}

/// Resident set size of this process, in bytes (Linux).
#[cfg(target_os = "linux")]
fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let resident: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    resident * page
}

/// Creating and ending 20,000 threads, each allocating and handing some
/// blocks to the main thread to free, leaves RSS within 2x of what it was
/// after the first 1,000: exited threads' heaps are adopted, not leaked.
#[test]
#[cfg(target_os = "linux")]
#[cfg_attr(miri, ignore = "20,000 threads are far too slow under Miri")]
fn twenty_thousand_threads_keep_memory_bounded() {
    let total = 20_000;
    let (sender, receiver) = mpsc::channel::<(usize, Vec<u8>)>();
    let mut rss_after_first_thousand = 0;
    for id in 0..total {
        let sender = sender.clone();
        thread::spawn(move || {
            let mut kept = Vec::new();
            for j in 0..20 {
                let block = pattern(id + j, 16 + (id * 7 + j * 13) % 2000);
                if j % 4 == 0 {
                    sender.send((id + j, block)).unwrap();
                } else {
                    kept.push(block);
                }
            }
            assert!(kept
                .iter()
                .enumerate()
                .all(|(k, b)| !b.is_empty() || k > 100));
        })
        .join()
        .unwrap();
        // The main thread frees what the exited thread handed over.
        for (seed, block) in receiver.try_iter() {
            assert_eq!(block, pattern(seed, block.len()));
        }
        if id == 999 {
            rss_after_first_thousand = rss_bytes();
        }
    }
    let rss_at_end = rss_bytes();
    let stats = ALLOCATOR.stats();
    assert!(
        rss_at_end <= 2 * rss_after_first_thousand,
        "RSS grew from {rss_after_first_thousand} to {rss_at_end} bytes; {stats:?}"
    );
    // One thread at a time: a handful of heaps served all 20,000 threads.
    assert!(stats.heaps <= 8, "{stats:?}");
}
