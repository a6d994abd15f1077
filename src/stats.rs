//! Counters, and the report they print as.
//!
//! Heaps keep their own counters (written only by their lock holder, so the
//! hot paths pay a plain add, not an atomic read-modify-write), the huge
//! list keeps atomics; [`crate::Rulloc::stats`] adds them up into a
//! [`Stats`] snapshot. Reads are relaxed: a snapshot taken while other
//! threads allocate is approximate, one taken at rest is exact.

use core::fmt;

/// A snapshot of an allocator's counters, returned by [`crate::Rulloc::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Bytes in blocks handed out and not yet returned (block sizes, so a
    /// 20-byte request counts as its 24-byte block). Blocks freed by another
    /// thread count until their owner heap collects them.
    pub bytes_in_use: usize,
    /// Bytes asked for by every allocation so far (the sizes requested,
    /// before rounding to a block; a resize in place is not a new request).
    /// Cumulative: C's `free` does not say how much was asked for, so the
    /// requested bytes still live cannot be known; `bytes_in_use` can.
    pub bytes_requested: usize,
    /// Bytes currently mapped from the OS (segments, huge blocks and heap
    /// metadata).
    pub bytes_mapped: usize,
    /// The most bytes of segments and huge blocks mapped at once.
    pub peak_bytes_mapped: usize,
    /// Bytes of live regions and huge blocks: what can be resident (free
    /// spans and cached segments are mapped but purged after the delay).
    pub bytes_committed: usize,
    /// The most bytes committed at once.
    pub peak_bytes_committed: usize,
    /// Map system calls (`mmap`/`VirtualAlloc`) made so far.
    pub map_calls: usize,
    /// Unmap system calls (`munmap`/`VirtualFree`) made so far.
    pub unmap_calls: usize,
    /// Huge blocks resized by the OS without copying (`mremap`, in place
    /// or moving the mapping), so far.
    pub remap_calls: usize,
    /// Segments currently mapped, huge ones included.
    pub segments: usize,
    /// Regions currently carved out of segments (small and large).
    pub regions: usize,
    /// Huge blocks currently allocated (each a mapping of its own).
    pub huge_blocks: usize,
    /// Freed huge mappings kept for reuse (counted in `bytes_mapped` and
    /// `segments`, not in `bytes_committed`; see `src/large.rs`).
    pub huge_cached: usize,
    /// Huge requests served from a cached mapping, so far.
    pub huge_cache_hits: usize,
    /// Heaps created (at most one per concurrently allocating thread).
    pub heaps: usize,
    /// Blocks freed by a thread other than their heap's owner (through a
    /// region's `thread_free` list or the heap's delayed stack), counted
    /// when the owner takes them back.
    pub remote_frees: usize,
    /// Purge system calls (`madvise`/`MEM_DECOMMIT`) made so far.
    pub purge_calls: usize,
    /// Bytes of free pages given back to the OS by purging, so far.
    pub bytes_purged: usize,
    /// Heaps left behind by exiting threads, so far.
    pub heaps_abandoned: usize,
    /// Heaps taken over by a new thread after their thread exited, so far.
    pub heaps_adopted: usize,
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "rulloc statistics")?;
        writeln!(f, "  in use      {:>14} bytes", self.bytes_in_use)?;
        writeln!(
            f,
            "  requested   {:>14} bytes (so far)",
            self.bytes_requested
        )?;
        writeln!(
            f,
            "  mapped      {:>14} bytes (peak {})",
            self.bytes_mapped, self.peak_bytes_mapped
        )?;
        writeln!(
            f,
            "  committed   {:>14} bytes (peak {})",
            self.bytes_committed, self.peak_bytes_committed
        )?;
        writeln!(f, "  segments    {:>14}", self.segments)?;
        writeln!(f, "  regions     {:>14}", self.regions)?;
        writeln!(f, "  huge blocks {:>14}", self.huge_blocks)?;
        writeln!(
            f,
            "  huge cached {:>14} (hits {})",
            self.huge_cached, self.huge_cache_hits
        )?;
        writeln!(f, "  heaps       {:>14}", self.heaps)?;
        writeln!(f, "  map calls   {:>14}", self.map_calls)?;
        writeln!(f, "  unmap calls {:>14}", self.unmap_calls)?;
        writeln!(f, "  remap calls {:>14}", self.remap_calls)?;
        writeln!(f, "  remote frees{:>14}", self.remote_frees)?;
        writeln!(f, "  purge calls {:>14}", self.purge_calls)?;
        writeln!(f, "  purged      {:>14} bytes", self.bytes_purged)?;
        writeln!(f, "  abandoned   {:>14} heaps", self.heaps_abandoned)?;
        writeln!(f, "  adopted     {:>14} heaps", self.heaps_adopted)
    }
}

/// One bucket's counters, returned by [`crate::Rulloc::bucket_stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BucketStats {
    /// The bucket's block size.
    pub block_size: usize,
    /// Blocks handed out and not yet returned to their owner heap.
    pub blocks_in_use: usize,
    /// `blocks_in_use * block_size`.
    pub bytes_in_use: usize,
    /// Bytes asked for from this bucket so far (cumulative, see
    /// [`Stats::bytes_requested`]).
    pub bytes_requested: usize,
    /// Regions currently serving the bucket.
    pub regions: usize,
}
