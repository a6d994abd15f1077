//! Rulloc as the `#[global_allocator]` of this whole test binary: the test
//! harness, std collections, strings, formatting, threads and thread-local
//! storage all allocate through it. Passing proves `GlobalAlloc` works end
//! to end (`alloc`, `dealloc`, `alloc_zeroed`, `realloc`).

mod common;

use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet, LinkedList, VecDeque};
use std::rc::Rc;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;

use common::*;
use rulloc::Rulloc;

#[global_allocator]
static A: Rulloc = Rulloc::new();

const MIB: usize = 1 << 20;

/// Bytes pushed one at a time: each is interpreted under Miri.
const BYTES: usize = scaled(8 * MIB, 64 * 1024);

#[test]
fn vectors_grow_and_shrink() {
    let n = scaled(2_000_000, 3000);
    let mut v: Vec<u64> = Vec::new();
    for i in 0..n as u64 {
        v.push(i * 3);
    }
    assert!(v.iter().enumerate().all(|(i, &x)| x == i as u64 * 3));
    v.truncate(100);
    v.shrink_to_fit();
    assert_eq!(v.len(), 100);
    assert_eq!(v[99], 297);

    // `vec![0; n]` goes through `alloc_zeroed`.
    let zeros = vec![0u8; BIG];
    // SAFETY: `zeros` holds `BIG` initialized bytes.
    unsafe { check_zero(zeros.as_ptr(), 0, BIG, "vec![0; BIG]") };
    let zeros: Vec<u64> = vec![0; scaled(100_000, 1000)];
    assert!(zeros.iter().all(|&x| x == 0));

    let mut bytes = Vec::with_capacity(16);
    for i in 0..BYTES {
        bytes.push(i as u8);
    }
    assert_eq!(bytes[BYTES - 1], (BYTES - 1) as u8);
    let mut sorted: Vec<u32> = (0..scaled(200_000, 2000) as u32).rev().collect();
    sorted.sort_unstable();
    assert!(sorted.windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn strings_and_formatting() {
    let mut s = String::new();
    for i in 0..scaled(50_000, 500) {
        s.push_str(&i.to_string());
        s.push(',');
    }
    assert!(s.starts_with("0,1,2,3,"));
    let parts: Vec<&str> = s.split(',').filter(|p| !p.is_empty()).collect();
    assert_eq!(parts.len(), scaled(50_000, 500));
    let words: Vec<String> = (0..scaled(10_000, 200))
        .map(|i| format!("word-{i:05}-{}", "x".repeat(i % 40)))
        .collect();
    let joined = words.join(" ");
    assert_eq!(joined.split(' ').count(), words.len());
    let upper = joined.to_uppercase();
    assert!(upper.contains("WORD-00001-X"));
    let mut big = String::with_capacity(1);
    while big.len() < BYTES {
        big.push_str("0123456789abcdef");
    }
    assert_eq!(&big[BYTES - 16..BYTES], "0123456789abcdef");
}

#[test]
fn std_collections() {
    let n = scaled(50_000, 300);
    let mut map: HashMap<String, Vec<usize>> = HashMap::new();
    let mut btree = BTreeMap::new();
    let mut set = HashSet::new();
    let mut deque = VecDeque::new();
    let mut heap = BinaryHeap::new();
    let mut list = LinkedList::new();
    for i in 0..n {
        map.entry(format!("k{}", i % 1000)).or_default().push(i);
        btree.insert(i, i.to_string());
        set.insert(i * 7);
        if i % 2 == 0 {
            deque.push_back(i);
        } else {
            deque.push_front(i);
        }
        heap.push(i ^ 0x5555);
        if i % 10 == 0 {
            list.push_back(Box::new(i));
        }
    }
    assert_eq!(map.len(), n.min(1000));
    assert_eq!(map["k1"].first(), Some(&1));
    assert_eq!(btree.len(), n);
    assert_eq!(btree[&(n / 2)], (n / 2).to_string());
    assert!(set.contains(&7));
    assert_eq!(deque.len(), n);
    let mut last = usize::MAX;
    while let Some(x) = heap.pop() {
        assert!(x <= last);
        last = x;
    }
    assert_eq!(list.len(), n.div_ceil(10));
    map.retain(|k, _| k.ends_with('7'));
    btree.retain(|k, _| k % 3 == 0);
    assert_eq!(btree.len(), n.div_ceil(3));
}

#[test]
fn boxes_rc_arc_and_trait_objects() {
    let boxed: Vec<Box<dyn Fn(usize) -> usize>> = (0..scaled(1000, 50))
        .map(|i| Box::new(move |x| x + i) as Box<dyn Fn(usize) -> usize>)
        .collect();
    assert_eq!(
        boxed.iter().map(|f| f(1)).sum::<usize>(),
        (1..=boxed.len()).sum()
    );
    let rc = Rc::new(vec![1, 2, 3]);
    let rcs: Vec<Rc<Vec<i32>>> = (0..100).map(|_| Rc::clone(&rc)).collect();
    assert_eq!(Rc::strong_count(&rc), 101);
    drop(rcs);
    let arc = Arc::new(Mutex::new(String::new()));
    arc.lock().unwrap().push_str("shared");
    assert_eq!(&*arc.lock().unwrap(), "shared");

    #[repr(align(4096))]
    struct Page([u8; 4096]);
    #[repr(align(64))]
    struct Line(u8);
    let pages: Vec<Box<Page>> = (0..scaled(64, 4))
        .map(|i| Box::new(Page([i as u8; 4096])))
        .collect();
    for (i, p) in pages.iter().enumerate() {
        assert_aligned(&**p as *const Page as *const u8, 4096, "Box<Page>");
        assert!(p.0.iter().all(|&b| b == i as u8));
    }
    let lines: Vec<Line> = (0..1000).map(|i| Line(i as u8)).collect();
    assert_aligned(lines.as_ptr() as *const u8, 64, "Vec<Line>");
    assert_eq!(lines[999].0, 999u32 as u8);
    let slice: Box<[u32]> = (0..scaled(100_000, 500) as u32).collect();
    assert_eq!(slice.len(), scaled(100_000, 500));
}

/// Threads allocate through the global allocator and send their strings and
/// vectors to other threads, which free them.
#[test]
fn threads_share_the_global_allocator() {
    let threads = 4;
    let n = scaled(20_000, 100);
    let (tx, rx) = mpsc::channel::<(usize, String, Vec<u64>)>();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let tx = tx.clone();
            thread::spawn(move || {
                let mut local: HashMap<usize, String> = HashMap::new();
                for i in 0..n {
                    let s = format!("thread {t} item {i}");
                    if i % 3 == 0 {
                        local.insert(i, s.clone());
                    }
                    tx.send((t, s, vec![i as u64; i % 50])).unwrap();
                }
                local.len()
            })
        })
        .collect();
    drop(tx);
    let mut counts = vec![0usize; threads];
    for (t, s, v) in rx {
        let i = counts[t];
        assert_eq!(s, format!("thread {t} item {i}"));
        assert_eq!(v.len(), i % 50);
        counts[t] += 1;
    }
    assert!(counts.iter().all(|&c| c == n));
    for h in handles {
        assert_eq!(h.join().unwrap(), n.div_ceil(3));
    }
    // Short-lived threads, many of them: their heaps are abandoned and
    // must be reused rather than leaked.
    for round in 0..scaled(50, 3) {
        let hs: Vec<_> = (0..threads)
            .map(|t| {
                thread::spawn(move || {
                    (0..100)
                        .map(|i| format!("{round}-{t}-{i}"))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in hs {
            assert_eq!(h.join().unwrap().len(), 100);
        }
    }
}

thread_local! {
    static TLS: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Thread-local storage whose destructors free memory while the thread
/// exits.
#[test]
fn thread_local_destructors_free_memory() {
    let hs: Vec<_> = (0..4)
        .map(|t| {
            thread::spawn(move || {
                TLS.with(|v| {
                    let mut v = v.borrow_mut();
                    for i in 0..scaled(5000, 50) {
                        v.push(format!("{t}:{i}"));
                    }
                });
                TLS.with(|v| v.borrow().len())
            })
        })
        .collect();
    for h in hs {
        assert_eq!(h.join().unwrap(), scaled(5000, 50));
    }
}

/// The global instance can also be used directly, side by side with std.
#[test]
fn global_instance_direct_use() {
    let p = A.allocate_bytes(1000, 64);
    assert_aligned(p, 64, "direct use of the global instance");
    // SAFETY: `p` is live with 1000 bytes; freed once.
    unsafe {
        fill(p, 1000, 5);
        let v: Vec<u8> = vec![1; 3 * MIB];
        check(p, 1000, 5, "direct block next to std allocations");
        assert!(A.usable_size(p) >= 1000);
        drop(v);
        A.deallocate_bytes(p);
    }
}

/// Counter assertions: these hold for the real allocator, not for the
/// `System`-backed stub (whose `stats()` is all zeros).
mod stats {
    use super::*;

    #[test]
    fn global_stats_see_std_allocations() {
        // black_box: in release builds LLVM may otherwise drop an
        // allocation whose contents are never read.
        let v: Vec<u8> = std::hint::black_box(vec![7; 4 * MIB]);
        let s = A.stats();
        assert!(s.bytes_in_use >= v.len(), "{s:?}");
        assert!(s.bytes_mapped >= s.bytes_in_use, "{s:?}");
        assert!(s.map_calls > 0, "{s:?}");
        assert!(s.segments > 0, "{s:?}");
        drop(v);
    }
}
