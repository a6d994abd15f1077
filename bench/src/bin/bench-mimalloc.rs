//! The workloads with mimalloc as the global allocator (see
//! `rulloc_bench::child`).

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::process::exit(rulloc_bench::child::main("mimalloc"));
}
