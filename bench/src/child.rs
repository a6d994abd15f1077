//! The per-allocator binaries' `main`: run one workload, print one line.
//!
//! ```text
//! bench-<allocator> <workload> [--threads N] [--scale F] [--count N]
//! bench-<allocator> --list
//! ```
//!
//! On success it prints exactly one line to stdout, whitespace-separated
//! `key=value` pairs after the word `RESULT`:
//!
//! ```text
//! RESULT allocator=mimalloc workload=larson threads=2 secs=0.412345 ops=4000000 checksum=00000000a1b2c3d4
//! ```
//!
//! `secs` covers the workload only (not process start-up or exit); peak RSS
//! is measured from outside by the driver. Every run adds `rss_final_kib`,
//! the RSS once the workload has freed everything, and some workloads add
//! more (`waves` adds `rss_freed_kib`, the RSS right after everything was
//! freed, and `rss_end_kib`, the RSS 200 ms of light activity later).

use std::time::Instant;

use crate::workloads::{self, Params, Threads};

/// Parses the command line, runs the workload and prints the result line.
/// Returns the process exit code (2 on a usage error).
pub fn main(allocator: &str) -> i32 {
    match run(allocator, std::env::args().skip(1).collect()) {
        Ok(line) => {
            println!("{line}");
            0
        }
        Err(msg) => {
            eprintln!("bench-{allocator}: {msg}");
            eprintln!(
                "usage: bench-{allocator} <workload> [--threads N] [--scale F] [--count N] | --list"
            );
            2
        }
    }
}

fn run(allocator: &str, args: Vec<String>) -> Result<String, String> {
    let mut name = None;
    let mut params = Params {
        threads: 1,
        scale: 1.0,
        count: None,
    };
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let mut value = |flag: &str| it.next().ok_or_else(|| format!("{flag} needs a value"));
        match arg.as_str() {
            "--list" => {
                let lines: Vec<String> = workloads::WORKLOADS
                    .iter()
                    .map(|w| format!("{:<16} {}", w.name, w.about))
                    .collect();
                return Ok(lines.join("\n"));
            }
            "--threads" => params.threads = parse(&value("--threads")?)?,
            "--scale" => params.scale = parse(&value("--scale")?)?,
            "--count" => params.count = Some(parse(&value("--count")?)?),
            _ if arg.starts_with('-') => return Err(format!("unknown option {arg}")),
            _ if name.is_none() => name = Some(arg),
            _ => return Err(format!("unexpected argument {arg}")),
        }
    }
    let name = name.ok_or("no workload given")?;
    let w = workloads::find(&name).ok_or_else(|| format!("unknown workload {name}"))?;
    let t = params.threads;
    let threads_ok = match w.threads {
        Threads::One => t == 1,
        Threads::Any => t >= 1,
        Threads::Pairs => t >= 2 && t % 2 == 0,
    };
    if !threads_ok {
        return Err(format!(
            "{name} cannot run with {t} threads ({:?})",
            w.threads
        ));
    }
    if !(params.scale > 0.0 && params.scale.is_finite()) {
        return Err(format!("bad scale {}", params.scale));
    }
    let start = Instant::now();
    let outcome = (w.run)(&params);
    let secs = start
        .elapsed()
        .saturating_sub(outcome.untimed)
        .as_secs_f64();
    let mut line = format!(
        "RESULT allocator={allocator} workload={name} threads={t} secs={secs:.6} ops={} checksum={:016x}",
        outcome.ops, outcome.checksum
    );
    for (k, v) in &outcome.extra {
        line.push_str(&format!(" {k}={v}"));
    }
    // What the allocator still holds once the workload has freed
    // everything (each workload drops its data before returning).
    line.push_str(&format!(" rss_final_kib={}", workloads::current_rss_kib()));
    Ok(line)
}

fn parse<T: std::str::FromStr>(s: &str) -> Result<T, String> {
    s.parse().map_err(|_| format!("bad number {s:?}"))
}
