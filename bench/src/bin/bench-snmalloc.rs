//! The workloads with snmalloc as the global allocator (see
//! `rulloc_bench::child`).

#[global_allocator]
static GLOBAL: snmalloc_rs::SnMalloc = snmalloc_rs::SnMalloc;

fn main() {
    std::process::exit(rulloc_bench::child::main("snmalloc"));
}
