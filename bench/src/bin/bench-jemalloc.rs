//! The workloads with jemalloc as the global allocator (see
//! `rulloc_bench::child`).

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    std::process::exit(rulloc_bench::child::main("jemalloc"));
}
