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
//! The secure build keeps a *byte* per 4 MiB instead of a bit, the
//! segment's *tag*, which also says whose segment it is:
//!
//! ```text
//!   SEGMENT_TAGS (secure): one byte per 4 MiB (64 MiB of zeroed,
//!   untouched-until-used memory for 256 TiB)
//!     0            not a live Rulloc segment
//!     TAG_HUGE     a huge block's segment
//!     TAG_SHARED   a Regions segment of a heap with no tag of its own
//!     3..=254      a Regions segment of the heap holding that tag
//!     (NO_TAG, 255, is never stored: it is what a thread without a
//!     tagged heap compares with)
//! ```
//!
//! Every heap takes a tag when it is created ([`take_heap_tag`]) and gives
//! it back when its memory is unmapped, and a thread's binding carries the
//! tag of its bound heap (see [`crate::binding`]), so the secure free's fast
//! path learns that a pointer's segment is live, holds regions and belongs
//! to the thread's own heap with one load and one compare, whichever of the
//! heap's segments it is in (see `Rulloc::deallocate_secure`).
//!
//! Invariant: the bit (the tag) of a segment is non-zero exactly while the
//! segment is mapped, and a tag names one heap for as long as the heap's
//! memory is mapped, so a binding's tag never names another heap's
//! segments. Addresses beyond the map (never handed out by today's kernels)
//! alias into it: that can hide a foreign pointer, never flag one of ours.

#[cfg(feature = "secure")]
use core::sync::atomic::AtomicU8;
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

/// Segment-sized pieces of the address space the map covers.
const MAP_SEGMENTS: usize = 1 << (ADDRESS_BITS - SEGMENT_SHIFT);

/// The map index of `segment` (any address inside it, in fact).
#[inline(always)]
fn map_index(segment: usize) -> usize {
    (segment >> SEGMENT_SHIFT) & (MAP_SEGMENTS - 1)
}

/// The tag of a huge block's segment.
pub(crate) const TAG_HUGE: u8 = 1;
/// The tag of the segments of a heap that got no tag of its own (all of
/// [`FIRST_HEAP_TAG`]`..=`[`LAST_HEAP_TAG`] were taken).
pub(crate) const TAG_SHARED: u8 = 2;
/// The tags heaps can hold.
pub(crate) const FIRST_HEAP_TAG: u8 = 3;
const LAST_HEAP_TAG: u8 = 254;
/// Never stored in the map: the tag a thread without a tagged heap of its
/// own compares with.
pub(crate) const NO_TAG: u8 = 255;

#[cfg(not(feature = "secure"))]
mod map {
    use super::*;

    const WORD_BITS: usize = usize::BITS as usize;
    const MAP_WORDS: usize = MAP_SEGMENTS / WORD_BITS;

    /// One bit per segment-sized piece of the address space.
    static SEGMENT_MAP: [AtomicUsize; MAP_WORDS] = [const { AtomicUsize::new(0) }; MAP_WORDS];

    /// Records a newly mapped segment (its header address); the default
    /// build keeps no tags.
    pub(crate) fn register_segment(segment: usize, _tag: u8) {
        let index = map_index(segment);
        SEGMENT_MAP[index / WORD_BITS].fetch_or(1 << (index % WORD_BITS), Ordering::Release);
    }

    /// Forgets a segment about to be unmapped.
    pub(crate) fn unregister_segment(segment: usize) {
        let index = map_index(segment);
        SEGMENT_MAP[index / WORD_BITS].fetch_and(!(1 << (index % WORD_BITS)), Ordering::Release);
    }

    /// Whether `segment` (an address masked to a segment boundary) is a
    /// live Rulloc segment: a shift, a mask, a load and a bit test.
    /// Addresses beyond the map alias into it, which can only make a
    /// foreign pointer look valid (the check then does not catch it),
    /// never flag one of ours.
    #[inline(always)]
    pub(crate) fn is_segment(segment: usize) -> bool {
        let index = map_index(segment);
        // SAFETY: index / WORD_BITS < MAP_WORDS by the mask in `map_index`.
        let word = unsafe { SEGMENT_MAP.get_unchecked(index / WORD_BITS) };
        (word.load(Ordering::Relaxed) >> (index % WORD_BITS)) & 1 != 0
    }

    /// The default build keeps no tags (its free never asks).
    #[inline(always)]
    pub(crate) fn segment_tag(_segment: usize) -> u8 {
        0
    }
}

#[cfg(feature = "secure")]
mod map {
    use super::*;

    /// One tag per segment-sized piece of the address space.
    static SEGMENT_TAGS: [AtomicU8; MAP_SEGMENTS] = [const { AtomicU8::new(0) }; MAP_SEGMENTS];

    /// Records a newly mapped segment (its header address) with its tag.
    pub(crate) fn register_segment(segment: usize, tag: u8) {
        debug_assert!(tag != 0 && tag != NO_TAG);
        SEGMENT_TAGS[map_index(segment)].store(tag, Ordering::Release);
    }

    /// Forgets a segment about to be unmapped.
    pub(crate) fn unregister_segment(segment: usize) {
        SEGMENT_TAGS[map_index(segment)].store(0, Ordering::Release);
    }

    /// The tag of the segment `segment` lies in (0: not a live Rulloc
    /// segment): a shift, a mask and a byte load.
    #[inline(always)]
    pub(crate) fn segment_tag(segment: usize) -> u8 {
        // SAFETY: map_index is below MAP_SEGMENTS by its mask.
        unsafe { SEGMENT_TAGS.get_unchecked(map_index(segment)) }.load(Ordering::Relaxed)
    }

    /// Whether `segment` is a live Rulloc segment (see the default build's
    /// `is_segment`).
    #[inline(always)]
    pub(crate) fn is_segment(segment: usize) -> bool {
        segment_tag(segment) != 0
    }
}

pub(crate) use map::{is_segment, register_segment, segment_tag, unregister_segment};

/// Heap tags in use, one bit per tag.
static HEAP_TAGS: [AtomicUsize; 256 / usize::BITS as usize] =
    [const { AtomicUsize::new(0) }; 256 / usize::BITS as usize];

/// A tag for a new heap, or [`TAG_SHARED`] when every heap tag is taken.
/// Give it back with [`release_heap_tag`] when the heap's memory is unmapped.
pub(crate) fn take_heap_tag() -> u8 {
    let word_bits = usize::BITS as usize;
    for tag in FIRST_HEAP_TAG..=LAST_HEAP_TAG {
        let (word, bit) = (tag as usize / word_bits, 1 << (tag as usize % word_bits));
        if HEAP_TAGS[word].fetch_or(bit, Ordering::Relaxed) & bit == 0 {
            return tag;
        }
    }
    TAG_SHARED
}

/// Gives back a tag from [`take_heap_tag`].
pub(crate) fn release_heap_tag(tag: u8) {
    if (FIRST_HEAP_TAG..=LAST_HEAP_TAG).contains(&tag) {
        let word_bits = usize::BITS as usize;
        let (word, bit) = (
            tag as usize / word_bits,
            1usize << (tag as usize % word_bits),
        );
        HEAP_TAGS[word].fetch_and(!bit, Ordering::Relaxed);
    }
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
        register_segment(segment, TAG_HUGE);
        assert!(is_segment(segment));
        assert!(!is_segment(segment + (1 << SEGMENT_SHIFT)));
        unregister_segment(segment);
        assert!(!is_segment(segment));
    }

    /// Heap tags are distinct while taken, reusable once given back, never
    /// 0, TAG_HUGE or NO_TAG; the secure map returns the tag registered.
    #[test]
    fn heap_tags_are_distinct_and_recorded() {
        let a = take_heap_tag();
        let b = take_heap_tag();
        for tag in [a, b] {
            assert!(tag != 0 && tag != TAG_HUGE && tag != NO_TAG);
        }
        assert!(a != b || a == TAG_SHARED);
        let segment = 0x7200_0000usize
            << (if cfg!(target_pointer_width = "64") {
                8
            } else {
                0
            });
        register_segment(segment, b);
        assert!(is_segment(segment));
        if cfg!(feature = "secure") {
            assert_eq!(segment_tag(segment + 12345), b);
        }
        unregister_segment(segment);
        assert_eq!(segment_tag(segment), 0);
        release_heap_tag(a);
        release_heap_tag(b);
    }
}
