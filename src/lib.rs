//! Rulloc: a general purpose memory allocator (temporary stub API while the
//! core lands; the signatures below are the real ones).
#![cfg_attr(not(any(feature = "std", test)), no_std)]

mod allocator;
mod stats;

pub use allocator::{Rulloc, DEFAULT_BUCKET_COUNT, DEFAULT_BUCKET_SIZES};
pub use stats::Stats;
