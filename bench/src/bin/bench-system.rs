//! The workloads with the platform allocator (glibc's malloc on Linux) as the
//! global allocator (see `rulloc_bench::child`).

#[global_allocator]
static GLOBAL: std::alloc::System = std::alloc::System;

fn main() {
    std::process::exit(rulloc_bench::child::main("system"));
}
