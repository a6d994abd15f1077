//! Benchmarks for Rulloc next to its peers (the platform allocator, mimalloc,
//! jemalloc and snmalloc).
//!
//! ```text
//!                 cargo run --release -p rulloc-bench -- [--quick] [workload...]
//!                                      │
//!                               bench (driver::main)
//!            spawns, one run at a time, reads rusage via wait4()
//!      ┌──────────────┬──────────────┼──────────────┬──────────────┐
//!      ▼              ▼              ▼              ▼              ▼
//! bench-rulloc   bench-system  bench-mimalloc  bench-jemalloc  bench-snmalloc
//!      └──────────────┴──── child::main ──────┴──────────────┘
//!                   same workloads::WORKLOADS, different
//!                   #[global_allocator], one process each
//! ```
//!
//! Every allocator is the global allocator of its own process, so each one
//! starts from a fresh address space and is measured with the *same* workload
//! code ([`workloads`]). A child prints one machine-readable `RESULT` line
//! ([`child`]); the driver ([`driver`]) repeats runs, takes medians, measures
//! peak RSS from the kernel's `ru_maxrss`, optionally counts instructions with
//! callgrind, and writes the markdown report ([`report`]) and, next to it,
//! an SVG chart of the ratios to mimalloc ([`chart`]).

pub mod chart;
pub mod child;
pub mod driver;
pub mod report;
pub mod rng;
pub mod workloads;
