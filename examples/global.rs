//! Rulloc as the global allocator: every `Box`, `Vec`, `String` and thread
//! of this program allocates through it.
//!
//! Run it with `cargo run --example global`. It is kept light so that it
//! also runs under Miri: `cargo +nightly miri run --example global`.

use std::collections::HashMap;
use std::thread;

use rulloc::Rulloc;

#[global_allocator]
static ALLOCATOR: Rulloc = Rulloc::new();

fn main() {
    let num = Box::new(10);
    println!("Boxed num {num} at {:p}", &*num);

    let mut vec = Vec::with_capacity(*num);
    vec.extend(0..*num);
    println!("Vec: {vec:?} at {:p}", vec.as_ptr());

    let mut words: HashMap<String, usize> = HashMap::new();
    for word in "the quick brown fox jumps over the lazy dog the end".split(' ') {
        *words.entry(word.to_string()).or_default() += 1;
    }
    println!("\"the\" appears {} times", words["the"]);

    let handle = thread::spawn(|| {
        let vec: Vec<u8> = vec![5, 6];
        println!("Second thread Vec: {vec:?} at {:p}", vec.as_ptr());
        vec
    });
    // A block allocated by the other thread, freed by this one.
    let from_thread = handle.join().unwrap();
    println!("Got {from_thread:?} back from the thread");
    drop(from_thread);

    let large: Vec<u8> = Vec::with_capacity(1024 * 1024);
    println!("Large allocation (1 MiB) at {:p}", large.as_ptr());
    println!("Global allocator stats: {:?}", ALLOCATOR.stats());
}
