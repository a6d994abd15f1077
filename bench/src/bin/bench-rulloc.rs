//! The workloads with Rulloc as the global allocator (see `rulloc_bench::child`).

#[global_allocator]
static GLOBAL: rulloc::Rulloc = rulloc::Rulloc::new();

fn main() {
    std::process::exit(rulloc_bench::child::main("rulloc"));
}
