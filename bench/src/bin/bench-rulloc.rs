//! The workloads with Rulloc as the global allocator (see `rulloc_bench::child`).
//!
//! `RULLOC_BENCH_STATS=1` prints Rulloc's statistics report to stderr after
//! the workload (for profiling: where the maps, purges and faults come from).

#[global_allocator]
static GLOBAL: rulloc::Rulloc = rulloc::Rulloc::new();

fn main() {
    let status = rulloc_bench::child::main("rulloc");
    if std::env::var_os("RULLOC_BENCH_STATS").is_some_and(|v| v != "0") {
        eprintln!("{}", GLOBAL.stats());
    }
    std::process::exit(status);
}
