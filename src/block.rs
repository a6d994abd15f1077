//! What a block is, and is not, in each size range.
//!
//! The seed gave every block a 40-byte header (next, prev, region, size,
//! is-free). Rulloc's blocks carry **no header at all**: everything a block
//! needs to know is a property of the region it lives in, found from the
//! block's address alone (see [`crate::segment`]).
//!
//! ```text
//!   allocated block (small, 32 B)        free block (small, 32 B)
//!   +------------------------------+     +------------------------------+
//!   |  32 bytes of user content    |     | next free block (1 word)     |
//!   |                              |     | (rest: stale user bytes)     |
//!   +------------------------------+     +------------------------------+
//! ```
//!
//! * **Small** (up to the largest bucket): one of many equal blocks in a
//!   region; a free block's first word links it into one of the region's
//!   free lists. Header bytes per block: 0.
//! * **Large** (dynamic bucket, up to [`crate::segment::LARGE_MAX_SIZE`]):
//!   a region of whole slots holding exactly one block. Header bytes: 0 (the
//!   region descriptor lives in the segment header).
//! * **Huge**: a mapping of its own whose first page(s) are a segment
//!   header; the block starts after it.
//!
//! Invariants: a block's address is never a segment's base address (slot 0
//! of every segment is its header), so `(addr - 1) & !SEGMENT_MASK` always
//! names the block's segment, even for a huge block that starts exactly one
//! segment past its header.

use core::ptr;

/// The link stored in the first word of a free block.
#[repr(C)]
pub(crate) struct Block {
    pub(crate) next: *mut Block,
}

/// Whether this is the hardened build (`secure` feature): free-list links
/// are then stored XOR-ed with a per-region random key, so a stray write
/// over a free block turns into a detected corruption, not a controlled
/// pointer.
pub(crate) const SECURE: bool = cfg!(feature = "secure");

/// Reads the link of a free block (decoding it with the region's `key` in
/// the secure build).
///
/// # Safety
///
/// `block` is a free block of a live region (at least one word, aligned).
#[inline(always)]
pub(crate) unsafe fn next_of(block: *mut Block, key: usize) -> *mut Block {
    // SAFETY: free blocks are word-aligned and at least a word long; their
    // first word is the link (caller's contract).
    unsafe {
        if SECURE {
            let stored = block.cast::<usize>().read();
            ptr::with_exposed_provenance_mut(stored ^ key)
        } else {
            ptr::addr_of!((*block).next).read()
        }
    }
}

/// Writes the link of a block that is being freed (encoded with the
/// region's `key` in the secure build).
///
/// # Safety
///
/// `block` is a block of a live region that nobody else uses.
#[inline(always)]
pub(crate) unsafe fn set_next(block: *mut Block, next: *mut Block, key: usize) {
    // SAFETY: free blocks are word-aligned and at least a word long, so the
    // link word lies inside `block`, which nobody else uses (caller's
    // contract).
    unsafe {
        if SECURE {
            block.cast::<usize>().write(next.expose_provenance() ^ key);
        } else {
            ptr::addr_of_mut!((*block).next).write(next);
        }
    }
}
