//! The driver (`bench`): runs the per-allocator binaries and writes the report.
//!
//! It builds nothing: it looks for `bench-<allocator>` next to its own
//! executable (so `cargo build --release -p rulloc-bench` first), warns when
//! one of them is older than itself (a stale build), and skips the ones that
//! are missing.
//!
//! ```text
//! for each case (workload × thread count) in SUITE, filtered by the arguments:
//!     for each repetition:                 ← repetitions interleave allocators,
//!         for each allocator:                so slow drift of a noisy machine
//!             spawn bench-<alloc> <workload> --threads T --scale S
//!             wait4() → exit status + rusage (ru_maxrss = peak RSS)
//!             parse the RESULT line (elapsed seconds, ops, checksum)
//!     median time and RSS per allocator, checksums compared
//! optionally: callgrind instruction counts of pair32
//! render report::Report → BENCHMARKS.md (keeping the sections of
//!                          bench/ldpreload.sh and bench/secure_cost.sh)
//!                        → BENCHMARKS.svg next to it (chart::svg)
//! ```
//!
//! A child that crashes, fails or exceeds `--timeout` is recorded as failed
//! in the report instead of stopping the suite, so a broken allocator build
//! still gets a report that says where it broke.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use crate::chart;
use crate::report::{self, CallgrindReport, CallgrindRow, CaseReport, Report, Row, Stats};
use crate::workloads;

/// One entry of the suite: a workload at a thread count.
#[derive(Clone, Copy, Debug)]
pub struct Case {
    /// Shown in the report (`larson-t2`).
    pub id: &'static str,
    /// The workload's name in [`workloads::WORKLOADS`].
    pub workload: &'static str,
    /// Threads.
    pub threads: usize,
}

const fn case(id: &'static str, workload: &'static str, threads: usize) -> Case {
    Case {
        id,
        workload,
        threads,
    }
}

/// The suite, in report order.
pub const SUITE: &[Case] = &[
    case("pair32", "pair32", 1),
    case("larson-t1", "larson", 1),
    case("larson-t2", "larson", 2),
    case("xmalloc-t2", "xmalloc", 2),
    case("xmalloc-t4", "xmalloc", 4),
    case("cache-scratch-t2", "cache-scratch", 2),
    case("cache-thrash-t2", "cache-thrash", 2),
    case("alloc-test-t1", "alloc-test", 1),
    case("alloc-test-t2", "alloc-test", 2),
    case("sh6bench-t1", "sh6bench", 1),
    case("sh6bench-t2", "sh6bench", 2),
    case("sh8bench-t2", "sh8bench", 2),
    case("glibc-simple", "glibc-simple", 1),
    case("glibc-thread-t1", "glibc-thread", 1),
    case("glibc-thread-t2", "glibc-thread", 2),
    case("rptest-t1", "rptest", 1),
    case("rptest-t2", "rptest", 2),
    case("cfrac", "cfrac", 1),
    case("mstress-t1", "mstress", 1),
    case("mstress-t2", "mstress", 2),
    case("vec-push", "vec-push", 1),
    case("string-build", "string-build", 1),
    case("hashmap-churn", "hashmap-churn", 1),
    case("btreemap-churn", "btreemap-churn", 1),
    case("box-tree", "box-tree", 1),
    case("json-like", "json-like", 1),
    case("malloc-large", "malloc-large", 1),
    case("waves", "waves", 1),
];

/// Every allocator, in report order; each has a `bench-<name>` binary.
pub const ALLOCATORS: &[&str] = &["rulloc", "system", "mimalloc", "jemalloc", "snmalloc"];

/// The allocator that ratios are relative to.
pub const BASELINE: &str = "mimalloc";

/// Repetitions of a full run (the median is reported). Seven, not five:
/// on a shared 2-core machine one or two runs of a case in five often
/// land on a busy moment, and a median of five then moves by 10-40 %
/// between identical runs of the suite (larson-t2 and malloc-large did).
const FULL_REPS: usize = 7;
/// Repetitions of a `--quick` run.
const QUICK_REPS: usize = 3;
/// Workload scale of a `--quick` run: a quarter of the default counts.
const QUICK_SCALE: f64 = 0.25;
/// A child running longer than this is killed and reported as failed.
const DEFAULT_TIMEOUT_SECS: u64 = 300;
/// The callgrind workload and its two iteration counts. One million
/// iterations of difference keeps each valgrind run to a few seconds while
/// the per-iteration count is exact to the first decimal.
const CALLGRIND_WORKLOAD: &str = "pair32";
const CALLGRIND_COUNTS: (u64, u64) = (200_000, 1_200_000);

const HELP: &str = "\
bench: runs Rulloc and its peers on the same workloads, one process per run,
and writes BENCHMARKS.md at the repository root.

usage: cargo build --release -p rulloc-bench
       cargo run --release -p rulloc-bench -- [options] [workload|case ...]

  --quick             3 repetitions at scale 0.25 instead of 5 at scale 1
  --reps N            repetitions (median reported)
  --scale F           multiply every workload's size
  --allocators a,b    only these (rulloc,system,mimalloc,jemalloc,snmalloc)
  --callgrind         also count instructions per pair32 alloc+free (valgrind)
  --callgrind-only    only that (no timing suite)
  --out PATH          report file (default: BENCHMARKS.md at the repo root;
                      with workloads selected or --callgrind-only, the
                      default is to print it instead)
  --no-write          print the report instead of writing it
  --note TEXT         a line quoted at the top of the report
  --timeout SECS      kill a run after this long (default 300)
  --list              list the cases and workloads
  -h, --help          this text

A workload name selects all its cases (larson → larson-t1, larson-t2); a case
id selects one.";

#[derive(Debug)]
struct Options {
    quick: bool,
    reps: usize,
    scale: f64,
    allocators: Vec<String>,
    callgrind: bool,
    timing: bool,
    out: Option<PathBuf>,
    write: bool,
    note: Option<String>,
    timeout: Duration,
    filters: Vec<String>,
}

fn parse_options(args: &[String]) -> Result<Option<Options>, String> {
    let mut o = Options {
        quick: false,
        reps: 0,
        scale: 0.0,
        allocators: ALLOCATORS.iter().map(|s| s.to_string()).collect(),
        callgrind: false,
        timing: true,
        out: None,
        write: true,
        note: None,
        timeout: Duration::from_secs(DEFAULT_TIMEOUT_SECS),
        filters: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |flag: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match arg.as_str() {
            "-h" | "--help" => {
                println!("{HELP}");
                return Ok(None);
            }
            "--list" => {
                for c in SUITE {
                    let about = workloads::find(c.workload).map_or("", |w| w.about);
                    println!("{:<16} {about}", c.id);
                }
                return Ok(None);
            }
            "--quick" => o.quick = true,
            "--reps" => o.reps = parse_num(&value("--reps")?)?,
            "--scale" => o.scale = parse_num(&value("--scale")?)?,
            "--allocators" => {
                o.allocators = value("--allocators")?
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect();
                if let Some(bad) = o
                    .allocators
                    .iter()
                    .find(|a| !ALLOCATORS.contains(&a.as_str()))
                {
                    return Err(format!("unknown allocator {bad}"));
                }
            }
            "--callgrind" => o.callgrind = true,
            "--callgrind-only" => {
                o.callgrind = true;
                o.timing = false;
            }
            "--out" => o.out = Some(PathBuf::from(value("--out")?)),
            "--no-write" => o.write = false,
            "--note" => o.note = Some(value("--note")?),
            "--timeout" => o.timeout = Duration::from_secs(parse_num(&value("--timeout")?)?),
            _ if arg.starts_with('-') => return Err(format!("unknown option {arg} (see --help)")),
            _ => {
                if !SUITE.iter().any(|c| c.id == arg || c.workload == arg) {
                    return Err(format!("unknown workload or case {arg} (see --list)"));
                }
                o.filters.push(arg.clone());
            }
        }
    }
    if o.reps == 0 {
        o.reps = if o.quick { QUICK_REPS } else { FULL_REPS };
    }
    if o.scale <= 0.0 {
        o.scale = if o.quick { QUICK_SCALE } else { 1.0 };
    }
    if o.allocators.is_empty() {
        return Err("no allocator selected".into());
    }
    Ok(Some(o))
}

fn parse_num<T: std::str::FromStr>(s: &str) -> Result<T, String> {
    s.parse().map_err(|_| format!("bad number {s:?}"))
}

/// The driver's entry point; returns the exit code.
pub fn main() -> i32 {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = match parse_options(&args) {
        Ok(Some(o)) => o,
        Ok(None) => return 0,
        Err(e) => {
            eprintln!("bench: {e}");
            return 2;
        }
    };
    match run(&opts, &args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("bench: {e}");
            1
        }
    }
}

fn repo_root() -> PathBuf {
    let bench_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = bench_dir.parent().unwrap_or(bench_dir);
    root.canonicalize().unwrap_or_else(|_| root.to_path_buf())
}

/// Finds `bench-<name>` next to the driver; warns if it looks stale.
fn find_binaries(allocators: &[String]) -> Result<Vec<(String, PathBuf)>, String> {
    let me = std::env::current_exe().map_err(|e| format!("cannot find own executable: {e}"))?;
    let dir = me.parent().ok_or("executable has no directory")?;
    let newest_lib = newest_library(dir);
    let mut found = Vec::new();
    for name in allocators {
        let path = dir.join(format!("bench-{name}{}", std::env::consts::EXE_SUFFIX));
        if !path.is_file() {
            eprintln!(
                "warning: {} not found, skipping {name} (run `cargo build --release -p rulloc-bench`)",
                path.display()
            );
            continue;
        }
        if let (Some(lib), Some(bin)) = (newest_lib, modified(&path)) {
            if bin < lib {
                eprintln!(
                    "warning: {} was linked before the newest build of rulloc or of the \
                     workloads; it is stale (run `cargo build --release -p rulloc-bench`)",
                    path.display()
                );
            }
        }
        found.push((name.clone(), path));
    }
    if found.is_empty() {
        return Err(format!(
            "no bench-<allocator> binary next to {} (run `cargo build --release -p rulloc-bench`)",
            me.display()
        ));
    }
    Ok(found)
}

/// When `rulloc` or `rulloc_bench` was last compiled in this target
/// directory (`deps/librulloc*.rlib`). `cargo run -p rulloc-bench` rebuilds
/// these and the driver but not the other binaries, so a `bench-<name>`
/// older than this was linked against older code.
fn newest_library(bin_dir: &Path) -> Option<SystemTime> {
    std::fs::read_dir(bin_dir.join("deps"))
        .ok()?
        .flatten()
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with("librulloc") && name.ends_with(".rlib")
        })
        .filter_map(|e| modified(&e.path()))
        .max()
}

fn modified(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

fn run(opts: &Options, args: &[String]) -> Result<(), String> {
    let started = Instant::now();
    let bins = find_binaries(&opts.allocators)?;
    let cases: Vec<Case> = SUITE
        .iter()
        .filter(|c| {
            opts.filters.is_empty() || opts.filters.iter().any(|f| f == c.id || f == c.workload)
        })
        .copied()
        .collect();

    let mut report = Report {
        date: command_output("date", &["+%Y-%m-%d %H:%M:%S %Z"])
            .unwrap_or_else(|| "unknown".into()),
        machine: machine(),
        commit: commit(),
        command: format!(
            "cargo run --release -p rulloc-bench -- {}",
            args.iter()
                .map(|a| shell_quote(a))
                .collect::<Vec<_>>()
                .join(" ")
        )
        .trim_end()
        .to_string(),
        mode: if opts.timing {
            format!(
                "{}{} repetitions, scale {} (median reported)",
                if opts.quick { "quick: " } else { "" },
                opts.reps,
                opts.scale
            )
        } else {
            "instruction counts only".to_string()
        },
        allocators: bins
            .iter()
            .map(|(name, _)| describe_allocator(name))
            .collect(),
        baseline: BASELINE.to_string(),
        note: opts.note.clone(),
        total_secs: 0.0,
        callgrind: None,
        chart: None,
        cases: Vec::new(),
    };

    if opts.callgrind {
        report.callgrind = Some(run_callgrind(&bins, opts.timeout));
    }
    if opts.timing {
        for (i, c) in cases.iter().enumerate() {
            eprintln!(
                "[{}/{}] {} ({} repetitions)",
                i + 1,
                cases.len(),
                c.id,
                opts.reps
            );
            report.cases.push(run_case(c, &bins, opts));
        }
    }
    report.total_secs = started.elapsed().as_secs_f64();
    eprintln!("done in {:.0} s", report.total_secs);

    let whole_suite = opts.filters.is_empty() && opts.timing;
    let out = match (&opts.out, whole_suite) {
        _ if !opts.write => None,
        (Some(p), _) => Some(p.clone()),
        (None, true) => Some(repo_root().join("BENCHMARKS.md")),
        (None, false) => None,
    };
    // The chart goes next to the report, with its name and `.svg`.
    if let Some(dir) = out.as_ref().and_then(|p| p.parent()) {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
    }
    if let Some(path) = out.as_ref().filter(|_| !report.cases.is_empty()) {
        let svg_path = path.with_extension("svg");
        match chart::svg(&report) {
            Ok(svg) => {
                std::fs::write(&svg_path, svg)
                    .map_err(|e| format!("cannot write {}: {e}", svg_path.display()))?;
                eprintln!("wrote {}", svg_path.display());
                report.chart = svg_path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned());
            }
            Err(e) => eprintln!("warning: no chart: {e}"),
        }
    }
    let text = report::render(&report);
    match out {
        Some(path) => {
            // The sections of bench/ldpreload.sh (C programs under
            // LD_PRELOAD) and bench/secure_cost.sh (one per allocator) are
            // not this driver's to drop.
            let text = match std::fs::read_to_string(&path) {
                Ok(previous) => report::keep_sections(&text, &previous),
                Err(_) => text,
            };
            std::fs::write(&path, &text)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            eprintln!("wrote {}", path.display());
        }
        None => println!("{text}"),
    }
    Ok(())
}

/// What one child run produced.
#[derive(Clone, Debug)]
struct RunResult {
    secs: f64,
    ops: u64,
    checksum: String,
    maxrss_kib: u64,
    extra: BTreeMap<String, String>,
}

fn run_case(case: &Case, bins: &[(String, PathBuf)], opts: &Options) -> CaseReport {
    let w = workloads::find(case.workload).expect("suite names a known workload");
    let args = [
        case.workload.to_string(),
        "--threads".into(),
        case.threads.to_string(),
        "--scale".into(),
        opts.scale.to_string(),
    ];
    let mut results: Vec<Vec<Result<RunResult, String>>> = vec![Vec::new(); bins.len()];
    for rep in 0..opts.reps {
        eprint!("  rep {}/{}:", rep + 1, opts.reps);
        // Each rep starts with the next allocator: none always runs right
        // after the same neighbour (whose exit may still be returning
        // memory) or always first.
        for k in 0..bins.len() {
            let i = (rep + k) % bins.len();
            let (name, bin) = &bins[i];
            // Once an allocator failed on a case, don't spend time repeating it.
            if results[i].iter().any(Result::is_err) {
                continue;
            }
            let r = run_once(bin, &args, opts.timeout);
            match &r {
                Ok(r) => eprint!(
                    "  {name} {:.3}s {:.0}MiB",
                    r.secs,
                    r.maxrss_kib as f64 / 1024.0
                ),
                Err(e) => eprint!("  {name} FAILED ({})", e.lines().next().unwrap_or("")),
            }
            results[i].push(r);
        }
        eprintln!();
    }

    let mut checksums: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let rows: Vec<Row> = bins
        .iter()
        .zip(results)
        .map(|((name, _), runs)| {
            for r in runs.iter().flatten() {
                checksums
                    .entry(r.checksum.clone())
                    .or_default()
                    .push(name.clone());
            }
            Row {
                allocator: name.clone(),
                result: summarize(runs),
            }
        })
        .collect();
    let checksum_warning = (checksums.len() > 1).then(|| {
        let parts: Vec<String> = checksums
            .iter()
            .map(|(sum, names)| {
                let mut names = names.clone();
                names.dedup();
                format!("{sum} from {}", names.join(", "))
            })
            .collect();
        format!("checksums differ between runs: {}", parts.join("; "))
    });
    if let Some(w) = &checksum_warning {
        eprintln!("  WARNING: {w}");
    }
    for row in &rows {
        if let Ok(s) = &row.result {
            eprintln!(
                "  {:<9} median {:.3} s  {:>8.2} Mops/s  peak RSS {:.1} MiB",
                row.allocator,
                s.secs,
                s.ops as f64 / s.secs / 1e6,
                s.maxrss_kib as f64 / 1024.0
            );
        }
    }
    CaseReport {
        id: case.id.to_string(),
        about: w.about.to_string(),
        unit: w.unit.to_string(),
        threads: case.threads,
        rows,
        checksum_warning,
    }
}

fn median<T: Copy + PartialOrd>(xs: &[T]) -> T {
    let mut v = xs.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    v[v.len() / 2]
}

fn summarize(runs: Vec<Result<RunResult, String>>) -> Result<Stats, String> {
    let mut ok = Vec::new();
    for r in runs {
        ok.push(r?);
    }
    if ok.is_empty() {
        return Err("no runs".into());
    }
    let secs: Vec<f64> = ok.iter().map(|r| r.secs).collect();
    let rss: Vec<u64> = ok.iter().map(|r| r.maxrss_kib).collect();
    let med = median(&secs);
    let median_run = ok
        .iter()
        .find(|r| r.secs == med)
        .expect("the median is one of the runs");
    Ok(Stats {
        secs: med,
        secs_min: secs.iter().copied().fold(f64::INFINITY, f64::min),
        secs_max: secs.iter().copied().fold(0.0, f64::max),
        ops: median_run.ops,
        maxrss_kib: median(&rss),
        extra: median_run.extra.clone(),
    })
}

/// Exit status and resource usage of a reaped child.
struct Finished {
    status: libc::c_int,
    usage: libc::rusage,
    stdout: String,
    stderr: String,
    timed_out: bool,
}

/// Runs `program args` to completion (or `timeout`), collecting its output
/// and its `rusage` through `wait4()`.
fn spawn_and_wait(program: &Path, args: &[String], timeout: Duration) -> Result<Finished, String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
    let pid = child.id() as libc::pid_t;
    let readers = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .map(|pipe| {
        thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                let mut bytes = Vec::new();
                let _ = pipe.read_to_end(&mut bytes);
                text = String::from_utf8_lossy(&bytes).into_owned();
            }
            text
        })
    });

    // A helper thread blocks in wait4() so this one can time out.
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut status: libc::c_int = 0;
        // SAFETY: `rusage` is plain old data, for which all zero bytes is a
        // valid value.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        loop {
            // SAFETY: `pid` is our child and nobody else reaps it (std's
            // `Child::wait` is never called); both out-pointers are valid.
            let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
            if r == pid {
                let _ = tx.send(Ok((status, usage)));
                return;
            }
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                let _ = tx.send(Err(format!("wait4: {err}")));
                return;
            }
        }
    });
    let mut timed_out = false;
    let waited = match rx.recv_timeout(timeout) {
        Ok(r) => r,
        Err(_) => {
            timed_out = true;
            // SAFETY: `pid` is our child and has not been reaped yet (the
            // waiter has not reported), so the id still names it.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            rx.recv()
                .unwrap_or_else(|_| Err("waiter thread died".into()))
        }
    };
    drop(child);
    let [stdout, stderr] = readers.map(|h| h.join().unwrap_or_default());
    let (status, usage) = waited?;
    Ok(Finished {
        status,
        usage,
        stdout,
        stderr,
        timed_out,
    })
}

fn describe_exit(f: &Finished, timeout: Duration) -> Option<String> {
    // The last lines of stderr, without valgrind's `==pid==` chatter.
    let tail: Vec<&str> = f
        .stderr
        .lines()
        .filter(|l| !l.starts_with("==") && !l.trim().is_empty())
        .rev()
        .take(3)
        .collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    let tail = tail.join(" / ");
    if f.timed_out {
        return Some(format!("timed out after {} s", timeout.as_secs()));
    }
    if libc::WIFSIGNALED(f.status) {
        let sig = libc::WTERMSIG(f.status);
        return Some(format!(
            "killed by signal {sig} ({}) {tail}",
            signal_name(sig)
        ));
    }
    if libc::WIFEXITED(f.status) && libc::WEXITSTATUS(f.status) != 0 {
        return Some(format!(
            "exit status {} {tail}",
            libc::WEXITSTATUS(f.status)
        ));
    }
    None
}

fn signal_name(sig: libc::c_int) -> &'static str {
    match sig {
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGKILL => "SIGKILL",
        libc::SIGILL => "SIGILL",
        libc::SIGFPE => "SIGFPE",
        _ => "signal",
    }
}

/// Parses the child's `RESULT key=value ...` line.
fn parse_result(stdout: &str) -> Result<BTreeMap<String, String>, String> {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .ok_or_else(|| format!("no RESULT line in output {:?}", stdout.trim()))?;
    Ok(line
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}

fn run_once(bin: &Path, args: &[String], timeout: Duration) -> Result<RunResult, String> {
    let f = spawn_and_wait(bin, args, timeout)?;
    if let Some(e) = describe_exit(&f, timeout) {
        return Err(e);
    }
    let mut kv = parse_result(&f.stdout)?;
    let mut take = |k: &str| kv.remove(k).ok_or_else(|| format!("RESULT line lacks {k}"));
    let secs = parse_num(&take("secs")?)?;
    let ops = parse_num(&take("ops")?)?;
    let checksum = take("checksum")?;
    for k in ["allocator", "workload", "threads"] {
        kv.remove(k);
    }
    Ok(RunResult {
        secs,
        ops,
        checksum,
        // Linux reports ru_maxrss in KiB.
        maxrss_kib: f.usage.ru_maxrss.max(0) as u64,
        extra: kv,
    })
}

// ---------------------------------------------------------------------------
// callgrind

/// Instructions executed by `bin workload --count n` under callgrind, and
/// the ops it reported.
fn callgrind_once(
    bin: &Path,
    workload: &str,
    n: u64,
    timeout: Duration,
) -> Result<(u64, u64), String> {
    let out_file = std::env::temp_dir().join(format!(
        "rulloc-bench-callgrind-{}-{}-{n}.out",
        std::process::id(),
        bin.file_name().and_then(|s| s.to_str()).unwrap_or("bin")
    ));
    let args = vec![
        "--tool=callgrind".to_string(),
        format!("--callgrind-out-file={}", out_file.display()),
        bin.display().to_string(),
        workload.to_string(),
        "--count".into(),
        n.to_string(),
    ];
    let f = spawn_and_wait(Path::new("valgrind"), &args, timeout)?;
    let result = (|| {
        if let Some(e) = describe_exit(&f, timeout) {
            return Err(format!("valgrind: {e}"));
        }
        let kv = parse_result(&f.stdout)?;
        let ops = parse_num(kv.get("ops").map_or("", String::as_str))?;
        let text = std::fs::read_to_string(&out_file)
            .map_err(|e| format!("cannot read {}: {e}", out_file.display()))?;
        let total = text
            .lines()
            .find_map(|l| {
                l.strip_prefix("summary:")
                    .or_else(|| l.strip_prefix("totals:"))
            })
            .and_then(|v| v.split_whitespace().next())
            .ok_or("no summary line in callgrind output")?;
        Ok((parse_num(total)?, ops))
    })();
    let _ = std::fs::remove_file(&out_file);
    result
}

/// Instructions per op: the difference between two counts cancels start-up.
fn callgrind_per_op(bin: &Path, workload: &str, timeout: Duration) -> Result<f64, String> {
    let (n1, n2) = CALLGRIND_COUNTS;
    let (ir1, ops1) = callgrind_once(bin, workload, n1, timeout)?;
    let (ir2, ops2) = callgrind_once(bin, workload, n2, timeout)?;
    if ops2 <= ops1 || ir2 < ir1 {
        return Err(format!(
            "inconsistent runs: {ir1} Ir/{ops1} ops, {ir2} Ir/{ops2} ops"
        ));
    }
    Ok((ir2 - ir1) as f64 / (ops2 - ops1) as f64)
}

fn run_callgrind(bins: &[(String, PathBuf)], timeout: Duration) -> CallgrindReport {
    eprintln!(
        "callgrind: {CALLGRIND_WORKLOAD} at --count {} and {}",
        CALLGRIND_COUNTS.0, CALLGRIND_COUNTS.1
    );
    // The baseline loop does not allocate, so any binary will do; the
    // platform allocator's is the least likely to trouble valgrind.
    let any = bins
        .iter()
        .find(|(name, _)| name == "system")
        .unwrap_or(&bins[0]);
    let baseline = callgrind_per_op(&any.1, "pair32-baseline", timeout);
    match &baseline {
        Ok(b) => eprintln!("  loop baseline: {b:.1} instructions per iteration"),
        Err(e) => eprintln!("  loop baseline FAILED: {e}"),
    }
    let rows = bins
        .iter()
        .map(|(name, bin)| {
            let per_op = callgrind_per_op(bin, CALLGRIND_WORKLOAD, timeout);
            match &per_op {
                Ok(x) => eprintln!("  {name:<9} {x:.1} instructions per alloc+free"),
                Err(e) => eprintln!("  {name:<9} FAILED: {e}"),
            }
            CallgrindRow {
                allocator: name.clone(),
                per_op,
            }
        })
        .collect();
    CallgrindReport {
        workload: CALLGRIND_WORKLOAD.to_string(),
        counts: CALLGRIND_COUNTS,
        baseline,
        rows,
    }
}

// ---------------------------------------------------------------------------
// what, where, when

/// `arg` as a POSIX shell would need it typed.
fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_=.,/:+@%".contains(c));
    if plain {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

fn command_output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!s.is_empty()).then_some(s)
}

fn machine() -> Vec<String> {
    let nproc = thread::available_parallelism().map_or(0, |n| n.get());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == "model name").then(|| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or_else(
            || "? GiB".into(),
            |kib| format!("{:.0} GiB", kib as f64 / 1048576.0),
        );
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| std::env::consts::OS.to_string());
    let libc_version = command_output("getconf", &["GNU_LIBC_VERSION"]).unwrap_or_default();
    vec![
        format!("Machine: {nproc} CPUs (nproc), {cpu}, {mem} RAM, Linux {kernel}, {libc_version}"),
        format!("Compiler: {} (release profile)", env!("RULLOC_BENCH_RUSTC")),
    ]
}

fn commit() -> String {
    let root = repo_root();
    let root = root.to_string_lossy();
    let Some(hash) = command_output("git", &["-C", &root, "rev-parse", "--short=12", "HEAD"])
    else {
        return "unknown (not a git checkout)".into();
    };
    let subject =
        command_output("git", &["-C", &root, "log", "-1", "--format=%s"]).unwrap_or_default();
    let dirty = command_output(
        "git",
        &[
            "-C",
            &root,
            "status",
            "--porcelain",
            "--untracked-files=no",
            "--",
            "src",
            "bench",
            // Not Cargo.lock: the peers' versions are listed separately,
            // as resolved when the binaries were built.
            "Cargo.toml",
        ],
    )
    .is_some();
    format!(
        "{hash} ({subject}){}",
        if dirty {
            ", with uncommitted changes in src/, bench/ or Cargo.toml"
        } else {
            ""
        }
    )
}

fn describe_allocator(name: &str) -> String {
    match name {
        "rulloc" => format!("rulloc {} (this repository)", env!("CARGO_PKG_VERSION")),
        "system" => "system (the platform malloc via std::alloc::System)".into(),
        "mimalloc" => format!("mimalloc ({})", env!("RULLOC_BENCH_VERSION_MIMALLOC")),
        "jemalloc" => format!("jemalloc ({})", env!("RULLOC_BENCH_VERSION_JEMALLOC")),
        "snmalloc" => format!(
            "snmalloc ({}, built with cc)",
            env!("RULLOC_BENCH_VERSION_SNMALLOC")
        ),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_line_parses() {
        let kv = parse_result(
            "noise\nRESULT allocator=x workload=pair32 threads=1 secs=0.5 ops=10 checksum=00ff\n",
        )
        .expect("parses");
        assert_eq!(kv["secs"], "0.5");
        assert_eq!(kv["ops"], "10");
        assert!(parse_result("nothing").is_err());
    }

    #[test]
    fn suite_names_real_workloads() {
        for c in SUITE {
            assert!(workloads::find(c.workload).is_some(), "{}", c.workload);
        }
        assert!(ALLOCATORS.contains(&BASELINE));
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("--quick"), "--quick");
        assert_eq!(shell_quote("two words"), "'two words'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn median_is_middle() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[5u64]), 5);
    }
}
