//! Memory goes back to the OS after a peak: 1 GiB of small and medium
//! objects allocated by two threads, freed (half of it by the other
//! thread), leaves resident memory under 64 MiB, both after an explicit
//! `collect()` and, without any call, once the threads have exited and the
//! purge delay has passed. (One test in its own binary: RSS is per process.)
#![cfg(target_os = "linux")] // RSS from /proc/self/statm

use std::sync::{mpsc, Barrier};
use std::thread;
use std::time::Duration;

#[global_allocator]
static ALLOCATOR: rulloc::Rulloc = rulloc::Rulloc::new();

const LIMIT: usize = 64 << 20;

fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let resident: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    // SAFETY: sysconf has no preconditions.
    resident * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize
}

/// Two threads each allocate `bytes_per_thread` in small (64..1024 B) and
/// medium (8..64 KiB) objects, touching every page, then each hands half of
/// its objects to the other thread to free. Returns the peak RSS seen.
fn peak_and_free(bytes_per_thread: usize) -> usize {
    let barrier = std::sync::Arc::new(Barrier::new(2));
    let (to_a, from_b) = mpsc::channel::<Vec<Box<[u8]>>>();
    let (to_b, from_a) = mpsc::channel::<Vec<Box<[u8]>>>();
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    // Plain threads joined by handle: `join` returns once the thread has
    // fully exited, its exit hook (which gives its heap back) included;
    // the end of a `thread::scope` does not wait for that.
    let workers: Vec<_> = [(to_b, from_b), (to_a, from_a)]
        .into_iter()
        .map(|(sender, receiver)| {
            let (barrier, peak) = (barrier.clone(), peak.clone());
            thread::spawn(move || {
                let mut mine = Vec::new();
                let mut total = 0;
                let mut i = 0usize;
                while total < bytes_per_thread {
                    let size = if i % 2 == 0 {
                        64 + (i * 37) % 960
                    } else {
                        8192 + (i * 4099) % 57344
                    };
                    mine.push(vec![i as u8; size].into_boxed_slice());
                    total += size;
                    i += 1;
                }
                barrier.wait();
                peak.fetch_max(rss_bytes(), std::sync::atomic::Ordering::Relaxed);
                barrier.wait();
                // Half of my objects go to the other thread, which frees them.
                let given: Vec<_> = mine.drain(..mine.len() / 2).collect();
                sender.send(given).unwrap();
                drop(mine);
                let received = receiver.recv().unwrap();
                assert!(received.iter().all(|b| b.iter().all(|&x| x == b[0])));
                drop(received);
                // Both have freed everything before either exits.
                barrier.wait();
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    peak.load(std::sync::atomic::Ordering::Relaxed)
}

#[test]
#[cfg_attr(miri, ignore = "allocates 1 GiB")]
fn rss_falls_after_a_one_gigabyte_peak() {
    let before = rss_bytes();

    let peak = peak_and_free(512 << 20);
    ALLOCATOR.collect();
    let after_collect = rss_bytes();
    eprintln!("RSS: before {before}, peak {peak}, after collect() {after_collect}");
    assert!(peak > 1 << 30, "the peak really was 1 GiB: {peak}");
    assert!(
        after_collect < LIMIT,
        "after collect(): {after_collect} bytes; {:?}",
        ALLOCATOR.stats()
    );

    let peak = peak_and_free(512 << 20);
    // The exiting threads' hooks purge their heaps while (or just after)
    // the scope returns: wait for the purge delay, then poll for at most
    // two seconds, without calling the allocator.
    let start = std::time::Instant::now();
    thread::sleep(Duration::from_millis(ALLOCATOR.purge_delay_ms() as u64));
    let mut after_delay = rss_bytes();
    while after_delay >= LIMIT && start.elapsed() < Duration::from_secs(2) {
        thread::sleep(Duration::from_millis(10));
        after_delay = rss_bytes();
    }
    eprintln!(
        "RSS: peak {peak}, {after_delay} after {:?} with no call",
        start.elapsed()
    );
    assert!(
        after_delay < LIMIT,
        "after the delay: {after_delay} bytes; {:?}",
        ALLOCATOR.stats()
    );
    // A single thread that stays alive: with no purge delay, freeing in
    // allocation order gives the pages back as regions empty (each region
    // is moved to the head of its queue by its first free; an empty one
    // must not stay behind it).
    ALLOCATOR.set_purge_delay_ms(0);
    let blocks: Vec<Box<[u8]>> = (0..400_000)
        .map(|i| vec![i as u8; 512].into_boxed_slice())
        .collect();
    let peak = rss_bytes();
    drop(blocks);
    let after_free = rss_bytes();
    eprintln!("RSS: one live thread, peak {peak}, after freeing with no delay {after_free}");
    ALLOCATOR.set_purge_delay_ms(rulloc::DEFAULT_PURGE_DELAY_MS);
    assert!(peak > 200 << 20, "{peak}");
    assert!(
        after_free < LIMIT,
        "after freeing on a live thread: {after_free}; {:?}",
        ALLOCATOR.stats()
    );

    let stats = ALLOCATOR.stats();
    assert!(stats.purge_calls > 0, "{stats:?}");
}
