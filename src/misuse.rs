//! Misuse detection: which pointers are Rulloc's, and how the process stops
//! when it is handed one that is not.
//!
//! ```text
//!   SEGMENT_MAP: one bit per 4 MiB of address space (8 MiB of zeroed,
//!   untouched-until-used memory covers 256 TiB on 64-bit targets)
//!
//!   address  0x7f3a_c040_1234
//!            >> SEGMENT_SHIFT ──▶ bit index ──▶ 1: a live Rulloc segment
//!                                              0: not ours → fatal
//! ```
//!
//! A bit is set when a segment is mapped and cleared before it is unmapped,
//! so `free` of a wild pointer, a stack address, a foreign `malloc` block
//! or an already unmapped huge block is caught *before* the allocator reads
//! any header: one shift, one load, one bit test on the free path.
//!
//! What each build detects (see the README's misuse table):
//!
//! * default: pointers outside every segment; large and huge blocks freed
//!   at an address other than their start or twice; a small block freed
//!   twice in a row (it is the head of its free list) or into an empty
//!   region.
//! * `secure` feature: additionally every double free and interior free of
//!   small blocks (a per-region map of live blocks and a boundary check),
//!   same-thread and cross-thread, and corrupted free-list links (links are
//!   encoded with per-region random keys).
//!
//! Where it runs: every pointer that comes through the C-shaped API
//! ([`crate::Rulloc::deallocate_bytes`], `reallocate_bytes`, `usable_size`,
//! which `librulloc.so` uses) is checked. The Rust traits' `dealloc` /
//! `deallocate` are `unsafe fn`s whose callers promise a valid pointer, so
//! there the check runs only in the `secure` build, keeping the default
//! fast path lean.
//!
//! Invariant: the bit of a segment is 1 exactly while the segment is
//! mapped. Addresses beyond the map (never handed out by today's kernels)
//! alias into it: that can hide a foreign pointer, never flag one of ours.

use core::sync::atomic::{AtomicUsize, Ordering};

use crate::segment::SEGMENT_SHIFT;

/// Bits of user address space the map covers. Under Miri the map is
/// small: an 8 MiB static of atomics made single tests run for many minutes
/// there, and aliasing is harmless (see the invariant above).
#[cfg(all(target_pointer_width = "64", not(miri)))]
const ADDRESS_BITS: usize = 48;
#[cfg(miri)]
const ADDRESS_BITS: usize = 36;
#[cfg(all(not(target_pointer_width = "64"), not(miri)))]
const ADDRESS_BITS: usize = usize::BITS as usize;

const WORD_BITS: usize = usize::BITS as usize;
const MAP_WORDS: usize = (1 << (ADDRESS_BITS - SEGMENT_SHIFT)) / WORD_BITS;

/// One bit per segment-sized piece of the address space.
static SEGMENT_MAP: [AtomicUsize; MAP_WORDS] = [const { AtomicUsize::new(0) }; MAP_WORDS];

fn word_and_bit(segment: usize) -> (usize, usize) {
    let index = (segment >> SEGMENT_SHIFT) & (MAP_WORDS * WORD_BITS - 1);
    (index / WORD_BITS, 1 << (index % WORD_BITS))
}

/// Records a newly mapped segment (its header address).
pub(crate) fn register_segment(segment: usize) {
    let (word, bit) = word_and_bit(segment);
    SEGMENT_MAP[word].fetch_or(bit, Ordering::Release);
}

/// Forgets a segment about to be unmapped.
pub(crate) fn unregister_segment(segment: usize) {
    let (word, bit) = word_and_bit(segment);
    SEGMENT_MAP[word].fetch_and(!bit, Ordering::Release);
}

/// Whether `segment` (an address masked to a segment boundary) is a live
/// Rulloc segment: a shift, a mask, a load and a bit test. Addresses beyond
/// the map alias into it, which can only make a foreign pointer look valid
/// (the check then does not catch it), never flag one of ours.
#[inline(always)]
pub(crate) fn is_segment(segment: usize) -> bool {
    let index = (segment >> SEGMENT_SHIFT) & (MAP_WORDS * WORD_BITS - 1);
    // SAFETY: index / WORD_BITS < MAP_WORDS by the mask above.
    let word = unsafe { SEGMENT_MAP.get_unchecked(index / WORD_BITS) };
    (word.load(Ordering::Relaxed) >> (index % WORD_BITS)) & 1 != 0
}

/// State of the key generator (secure build): seeded from the clock and
/// an address the first time, then advanced by a Weyl sequence.
static KEY_STATE: AtomicUsize = AtomicUsize::new(0);

/// A random-looking word for free-list keys and allocation order, mixed
/// with `salt` (an address). Not cryptographic; unpredictable enough that a
/// heap overflow cannot forge an encoded link without reading one.
pub(crate) fn random_key(salt: usize) -> usize {
    const WEYL: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut state = KEY_STATE.load(Ordering::Relaxed);
    if state == 0 {
        let local = 0u8;
        let seed = (crate::platform::now_ms() as usize)
            ^ core::ptr::addr_of!(local).addr().rotate_left(17)
            ^ (random_key as fn(usize) -> usize as usize);
        let _ = KEY_STATE.compare_exchange(0, seed | 1, Ordering::Relaxed, Ordering::Relaxed);
        state = KEY_STATE.load(Ordering::Relaxed);
    }
    let state = KEY_STATE
        .fetch_add(WEYL as usize, Ordering::Relaxed)
        .wrapping_add(state)
        ^ salt;
    mix(state)
}

/// The splitmix64 finaliser: every input bit affects every output bit.
/// Mixing a secret (a region's key) with a public value gives a value as
/// unpredictable as the secret, without touching shared state.
#[inline]
pub(crate) fn mix(value: usize) -> usize {
    let mut z = value as u64;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) as usize
}

/// Stops the process: one line on stderr naming the error and the
/// address, then `abort()`. Never allocates.
#[cold]
#[inline(never)]
pub(crate) fn fatal(what: &str, address: *const u8) -> ! {
    let mut line = [0u8; 160];
    let mut length = 0;
    let mut put = |bytes: &[u8]| {
        for &byte in bytes {
            if length < line.len() {
                line[length] = byte;
                length += 1;
            }
        }
    };
    put(b"rulloc: fatal: ");
    put(what.as_bytes());
    put(b" 0x");
    let address = address.addr();
    let digits = (usize::BITS as usize / 4).max(1);
    let mut started = false;
    for position in (0..digits).rev() {
        let digit = (address >> (position * 4)) & 0xf;
        if digit != 0 || started || position == 0 {
            started = true;
            put(&[b"0123456789abcdef"[digit]]);
        }
    }
    put(b"\n");
    crate::platform::write_stderr(&line[..length]);
    crate::platform::abort()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_map_tracks_registered_segments() {
        let address = if cfg!(target_pointer_width = "64") {
            0x7100_0000_0000u64
        } else {
            0x7100_0000
        };
        let segment = address as usize & !((1 << SEGMENT_SHIFT) - 1);
        assert!(!is_segment(segment));
        register_segment(segment);
        assert!(is_segment(segment));
        assert!(!is_segment(segment + (1 << SEGMENT_SHIFT)));
        unregister_segment(segment);
        assert!(!is_segment(segment));
    }
}
