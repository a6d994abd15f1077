//! Counters.
/// A snapshot of an allocator's counters, returned by [`crate::Rulloc::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Bytes handed out to callers and not yet returned (block sizes).
    pub bytes_in_use: usize,
    /// Bytes currently mapped from the OS.
    pub bytes_mapped: usize,
    /// Number of map system calls (`mmap`/`VirtualAlloc`) made so far.
    pub map_calls: usize,
    /// Number of unmap system calls (`munmap`/`VirtualFree`) made so far.
    pub unmap_calls: usize,
    /// Segments currently mapped (including those holding one huge block).
    pub segments: usize,
    /// Regions currently carved out of segments.
    pub regions: usize,
}
