//! `bench`: the driver. It runs the per-allocator binaries that sit next to
//! its own executable, one child process per run, and writes `BENCHMARKS.md`.
//! See `rulloc_bench::driver` and `cargo run --release -p rulloc-bench -- --help`.

fn main() {
    std::process::exit(rulloc_bench::driver::main());
}
