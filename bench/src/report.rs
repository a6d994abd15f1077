//! The markdown report (`BENCHMARKS.md`): what was run where, then a summary
//! matrix per metric, instruction counts, and one table per workload.
//!
//! Ratios are relative to the baseline allocator ([`crate::driver::BASELINE`],
//! mimalloc): below 1 is better than the baseline, above 1 is worse. The
//! geometric mean of a column covers the workloads where both that allocator
//! and the baseline succeeded.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Medians of the repetitions of one workload under one allocator.
#[derive(Clone, Debug)]
pub struct Stats {
    /// Median elapsed seconds (the workload only).
    pub secs: f64,
    /// Fastest repetition.
    pub secs_min: f64,
    /// Slowest repetition.
    pub secs_max: f64,
    /// Operations per run.
    pub ops: u64,
    /// Median peak RSS in KiB (`ru_maxrss`).
    pub maxrss_kib: u64,
    /// Extra fields of the median-time run (`rss_end_kib`, ...).
    pub extra: BTreeMap<String, String>,
}

/// One allocator's line in a workload's table.
#[derive(Clone, Debug)]
pub struct Row {
    /// Allocator name.
    pub allocator: String,
    /// Its numbers, or why it has none.
    pub result: Result<Stats, String>,
}

/// One workload (at one thread count).
#[derive(Clone, Debug)]
pub struct CaseReport {
    /// Case id, e.g. `larson-t2`.
    pub id: String,
    /// The workload's description.
    pub about: String,
    /// What one operation is.
    pub unit: String,
    /// Threads.
    pub threads: usize,
    /// One row per allocator.
    pub rows: Vec<Row>,
    /// Set when the checksums of successful runs differ.
    pub checksum_warning: Option<String>,
}

/// Instruction counts of one allocator.
#[derive(Clone, Debug)]
pub struct CallgrindRow {
    /// Allocator name.
    pub allocator: String,
    /// Instructions per operation of each measured workload, or an error.
    pub per_op: Result<f64, String>,
}

/// Instruction counts (callgrind).
#[derive(Clone, Debug)]
pub struct CallgrindReport {
    /// Measured workload.
    pub workload: String,
    /// The two `--count`s whose difference is used.
    pub counts: (u64, u64),
    /// Instructions per iteration of the same loop without an allocator.
    pub baseline: Result<f64, String>,
    /// One row per allocator.
    pub rows: Vec<CallgrindRow>,
}

/// Everything the report shows.
#[derive(Clone, Debug)]
pub struct Report {
    /// `date` output.
    pub date: String,
    /// Machine description lines.
    pub machine: Vec<String>,
    /// Git commit (and whether the tree had changes).
    pub commit: String,
    /// How it was invoked.
    pub command: String,
    /// Quick or full, repetitions, scale.
    pub mode: String,
    /// Allocators and versions.
    pub allocators: Vec<String>,
    /// The allocator ratios refer to.
    pub baseline: String,
    /// Free text from `--note`.
    pub note: Option<String>,
    /// Wall-clock time of the whole run, seconds.
    pub total_secs: f64,
    /// Instruction counts, if measured.
    pub callgrind: Option<CallgrindReport>,
    /// The chart's file name ([`crate::chart`]), relative to the report,
    /// when one is written next to it.
    pub chart: Option<String>,
    /// Timing results.
    pub cases: Vec<CaseReport>,
}

/// What a reader should know before comparing the numbers.
const NOTES: &str = "\
Reading the numbers:

- `system` is the platform allocator (glibc's malloc on Linux) through \
`std::alloc::System`. The `mimalloc` crate's `GlobalAlloc` calls \
`mi_malloc_aligned` for every request, which is what a Rust program using \
that crate gets. snmalloc is built with the `cc` crate (feature `build_cc`) \
because the machine has no CMake.
- Every workload writes to the memory it allocates (a byte per cache line, \
per page above 4 KiB) and reads it back before freeing it, and its checksum \
must be the same under every allocator (a difference is flagged under the \
workload's table).
- Peak RSS includes the process's own baseline (binary, libc, thread \
stacks: 2-3 MiB), which dominates the ratio for workloads with small live \
sets such as `pair32`.
- The machine is small and shared: look at the min–max column before \
trusting a difference of a few percent. Instruction counts (callgrind) are \
the repeatable number; they do not show cache misses or contention.
- `waves` reads RSS right after the last free and again after 200 ms of \
light activity (not counted in its time): allocators that give memory back \
lazily, after a delay or decay time longer than that, show no drop.
";

/// Operations per second with a unit that keeps three significant digits.
fn rate(ops: u64, secs: f64) -> String {
    let r = ops as f64 / secs;
    match r {
        r if r >= 1e9 => format!("{:.2} G", r / 1e9),
        r if r >= 1e6 => format!("{:.2} M", r / 1e6),
        r if r >= 1e3 => format!("{:.2} k", r / 1e3),
        r => format!("{r:.1}"),
    }
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

fn geomean(xs: &[f64]) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    Some((xs.iter().map(|x| x.ln()).sum::<f64>() / xs.len() as f64).exp())
}

/// The allocators in the order of the first case that has rows.
fn allocators(report: &Report) -> Vec<String> {
    report
        .cases
        .first()
        .map(|c| c.rows.iter().map(|r| r.allocator.clone()).collect())
        .unwrap_or_default()
}

fn baseline_stats<'a>(case: &'a CaseReport, baseline: &str) -> Option<&'a Stats> {
    case.rows
        .iter()
        .find(|r| r.allocator == baseline)
        .and_then(|r| r.result.as_ref().ok())
}

/// A matrix: rows = cases, columns = allocators, cell = metric / baseline's.
fn ratio_matrix(out: &mut String, report: &Report, title: &str, metric: fn(&Stats) -> f64) {
    let allocs = allocators(report);
    let _ = writeln!(out, "### {title}\n");
    let _ = writeln!(out, "| workload | {} |", allocs.join(" | "));
    let _ = writeln!(out, "|---|{}", "---:|".repeat(allocs.len()));
    let mut per_alloc: Vec<Vec<f64>> = vec![Vec::new(); allocs.len()];
    for case in &report.cases {
        let base = baseline_stats(case, &report.baseline).map(metric);
        let ratios: Vec<Option<f64>> = case
            .rows
            .iter()
            .map(|r| match (&r.result, base) {
                (Ok(s), Some(b)) if b > 0.0 => Some(metric(s) / b),
                _ => None,
            })
            .collect();
        let best = ratios
            .iter()
            .flatten()
            .copied()
            .fold(f64::INFINITY, f64::min);
        let cells: Vec<String> = ratios
            .iter()
            .zip(&case.rows)
            .enumerate()
            .map(|(i, (ratio, row))| match (ratio, &row.result) {
                (Some(x), _) => {
                    per_alloc[i].push(*x);
                    if *x <= best * 1.0001 {
                        format!("**{x:.2}**")
                    } else {
                        format!("{x:.2}")
                    }
                }
                (None, Err(_)) => "failed".to_string(),
                (None, Ok(_)) => "n/a".to_string(),
            })
            .collect();
        let _ = writeln!(out, "| {} | {} |", case.id, cells.join(" | "));
    }
    let geomeans: Vec<Option<f64>> = per_alloc.iter().map(|xs| geomean(xs)).collect();
    let best = geomeans
        .iter()
        .flatten()
        .copied()
        .fold(f64::INFINITY, f64::min);
    let means: Vec<String> = geomeans
        .iter()
        .zip(&per_alloc)
        .map(|(g, xs)| match g {
            Some(g) => {
                let value = if *g <= best * 1.0001 {
                    format!("**{g:.2}**")
                } else {
                    format!("{g:.2}")
                };
                if xs.len() == report.cases.len() {
                    value
                } else {
                    format!("{value} ({} of {})", xs.len(), report.cases.len())
                }
            }
            None => "n/a".to_string(),
        })
        .collect();
    let _ = writeln!(out, "| *geometric mean* | {} |", means.join(" | "));
    let _ = writeln!(out);
}

/// Renders the whole report as markdown.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Rulloc benchmarks\n");
    let _ = writeln!(
        out,
        "Written by the `bench` driver of the `rulloc-bench` workspace member \
         (`bench/`). Every allocator is the `#[global_allocator]` of its own \
         process (`bench-rulloc`, `bench-system`, `bench-mimalloc`, \
         `bench-jemalloc`, `bench-snmalloc`) running the same workload code \
         (`bench/src/workloads.rs`); times are medians of the repetitions, \
         peak RSS is the kernel's `ru_maxrss` of the child. Ratios are \
         relative to **{}**: below 1.00 is better, the best of each row is \
         in bold.\n",
        report.baseline
    );
    let _ = writeln!(out, "Reproduce:\n");
    let _ = writeln!(out, "```sh");
    let _ = writeln!(
        out,
        "cargo build --release -p rulloc-bench   # builds the driver and every bench-<allocator>"
    );
    let _ = writeln!(
        out,
        "cargo run --release -p rulloc-bench -- --quick --callgrind   # this file's mode"
    );
    let _ = writeln!(
        out,
        "cargo run --release -p rulloc-bench                          # full suite"
    );
    let _ = writeln!(
        out,
        "cargo run --release -p rulloc-bench -- larson xmalloc        # some workloads (no file: add --out)"
    );
    let _ = writeln!(out, "```\n");
    if let Some(note) = &report.note {
        let _ = writeln!(out, "> {note}\n");
    }
    let _ = writeln!(out, "- Date: {}", report.date);
    for m in &report.machine {
        let _ = writeln!(out, "- {m}");
    }
    let _ = writeln!(out, "- Commit: {}", report.commit);
    let _ = writeln!(out, "- Command: `{}`", report.command);
    let _ = writeln!(out, "- Mode: {}", report.mode);
    let _ = writeln!(out, "- Allocators: {}", report.allocators.join("; "));
    let _ = writeln!(
        out,
        "- Wall-clock time of this run: {:.0} s\n",
        report.total_secs
    );

    let _ = writeln!(out, "{NOTES}");

    if let Some(cg) = &report.callgrind {
        render_callgrind(&mut out, cg);
    }

    if !report.cases.is_empty() {
        let _ = writeln!(out, "## Summary\n");
        if let Some(chart) = &report.chart {
            let _ = writeln!(
                out,
                "![Time and peak RSS of every allocator relative to {0}, per workload \
                 (log scale; bars left of the {0} line are better)]({chart})\n",
                report.baseline
            );
        }
        ratio_matrix(
            &mut out,
            report,
            &format!("Time relative to {} (lower is better)", report.baseline),
            |s| s.secs,
        );
        ratio_matrix(
            &mut out,
            report,
            &format!("Peak RSS relative to {} (lower is better)", report.baseline),
            |s| s.maxrss_kib as f64,
        );
        let _ = writeln!(out, "## Workloads\n");
        for case in &report.cases {
            render_case(&mut out, case, &report.baseline);
        }
    }
    out
}

/// The sections other scripts write into `BENCHMARKS.md`, each between a
/// first and a last marker line, which the driver keeps (in this order)
/// when it rewrites the file: `bench/ldpreload.sh`'s (C programs under
/// `LD_PRELOAD`), `bench/secure_cost.sh --write`'s (what the `secure`
/// feature costs) and `bench/secure_cost.sh --allocator mimalloc --write`'s
/// (what mimalloc's own secure mode costs).
pub const KEPT_SECTIONS: [(&str, &str); 3] = [
    ("<!-- ldpreload:start -->", "<!-- ldpreload:end -->"),
    ("<!-- secure:start -->", "<!-- secure:end -->"),
    (
        "<!-- secure-mimalloc:start -->",
        "<!-- secure-mimalloc:end -->",
    ),
];

/// The section of `text` from a line that is exactly `first` to the next
/// line that is exactly `last`, both included; `None` unless both are
/// there.
pub fn marked_section<'a>(text: &'a str, first: &str, last: &str) -> Option<&'a str> {
    let mut start = None;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let bare = line.trim_end_matches(['\n', '\r']);
        match start {
            None if bare == first => start = Some(offset),
            Some(s) if bare == last => return Some(&text[s..offset + bare.len()]),
            _ => {}
        }
        offset += line.len();
    }
    None
}

/// `rendered` (a fresh report) followed by the [`KEPT_SECTIONS`] of
/// `previous` (the file it replaces), so that rewriting `BENCHMARKS.md` keeps
/// what the other scripts wrote there.
pub fn keep_sections(rendered: &str, previous: &str) -> String {
    let sections: Vec<&str> = KEPT_SECTIONS
        .iter()
        .filter_map(|(first, last)| marked_section(previous, first, last))
        .collect();
    if sections.is_empty() {
        return rendered.to_string();
    }
    let mut out = rendered.trim_end().to_string();
    for section in sections {
        out.push_str("\n\n");
        out.push_str(section);
    }
    out.push('\n');
    out
}

fn render_callgrind(out: &mut String, cg: &CallgrindReport) {
    let _ = writeln!(out, "## Instructions per operation (callgrind)\n");
    let _ = writeln!(
        out,
        "`{}` under `valgrind --tool=callgrind`, run with `--count {}` and `--count {}`; \
         instructions = (Ir of the long run − Ir of the short run) / (difference in \
         iterations), which cancels process start-up and allocator initialization. \
         \"Allocator only\" also subtracts the same loop on a stack buffer \
         (`pair32-baseline`: {}). Instruction counts are repeatable on a noisy \
         machine; they do not show cache misses or contention.\n",
        cg.workload,
        cg.counts.0,
        cg.counts.1,
        match &cg.baseline {
            Ok(b) => format!("{b:.1} instructions per iteration"),
            Err(e) => format!("failed: {e}"),
        }
    );
    let _ = writeln!(
        out,
        "| allocator | instructions per alloc+free | allocator only |"
    );
    let _ = writeln!(out, "|---|---:|---:|");
    for row in &cg.rows {
        match (&row.per_op, &cg.baseline) {
            (Ok(x), Ok(b)) => {
                let _ = writeln!(out, "| {} | {x:.1} | {:.1} |", row.allocator, x - b);
            }
            (Ok(x), Err(_)) => {
                let _ = writeln!(out, "| {} | {x:.1} | n/a |", row.allocator);
            }
            (Err(e), _) => {
                let _ = writeln!(out, "| {} | failed: {} | |", row.allocator, one_line(e));
            }
        }
    }
    let _ = writeln!(out);
}

/// Extra result fields (in KiB) shown as columns where a workload has them.
const EXTRA_RSS_COLUMNS: &[(&str, &str)] = &[
    ("rss_freed_kib", "RSS right after free (MiB)"),
    ("rss_end_kib", "RSS 200 ms later (MiB)"),
    ("rss_final_kib", "final RSS (MiB)"),
];

fn render_case(out: &mut String, case: &CaseReport, baseline: &str) {
    let threads = if case.threads == 1 {
        "1 thread".to_string()
    } else {
        format!("{} threads", case.threads)
    };
    let _ = writeln!(out, "### {}\n", case.id);
    let _ = writeln!(
        out,
        "{} ({threads}; one op = one {}).\n",
        case.about, case.unit
    );
    let base = baseline_stats(case, baseline);
    let extra_cols: Vec<(&str, &str)> = EXTRA_RSS_COLUMNS
        .iter()
        .copied()
        .filter(|(key, _)| {
            case.rows
                .iter()
                .any(|r| r.result.as_ref().is_ok_and(|s| s.extra.contains_key(*key)))
        })
        .collect();
    let _ = write!(
        out,
        "| allocator | time (s) | min–max (s) | ops/s | time vs {baseline} | peak RSS (MiB) | RSS vs {baseline} |"
    );
    for (_, title) in &extra_cols {
        let _ = write!(out, " {title} |");
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "|---|---:|---:|---:|---:|---:|---:|{}",
        "---:|".repeat(extra_cols.len())
    );
    for row in &case.rows {
        match &row.result {
            Ok(s) => {
                let (t_ratio, m_ratio) = match base {
                    Some(b) => (
                        format!("{:.2}", s.secs / b.secs),
                        format!("{:.2}", s.maxrss_kib as f64 / b.maxrss_kib.max(1) as f64),
                    ),
                    None => ("n/a".into(), "n/a".into()),
                };
                let _ = write!(
                    out,
                    "| {} | {:.3} | {:.3}–{:.3} | {} | {t_ratio} | {} | {m_ratio} |",
                    row.allocator,
                    s.secs,
                    s.secs_min,
                    s.secs_max,
                    rate(s.ops, s.secs),
                    mib(s.maxrss_kib),
                );
                for (key, _) in &extra_cols {
                    let v = s
                        .extra
                        .get(*key)
                        .and_then(|v| v.parse().ok())
                        .map(mib)
                        .unwrap_or_else(|| "n/a".into());
                    let _ = write!(out, " {v} |");
                }
                let _ = writeln!(out);
            }
            Err(e) => {
                let _ = writeln!(out, "| {} | failed: {} |", row.allocator, one_line(e));
            }
        }
    }
    if let Some(w) = &case.checksum_warning {
        let _ = writeln!(out, "\n**Warning:** {w}");
    }
    let _ = writeln!(out);
}

fn one_line(s: &str) -> String {
    let s = s.replace(['\n', '|'], " ");
    if s.len() > 200 {
        let mut end = 200;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &s[..end])
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::geomean;

    #[test]
    fn rates_keep_their_digits() {
        assert_eq!(super::rate(2_500_000, 1.0), "2.50 M");
        assert_eq!(super::rate(625, 0.5), "1.25 k");
        assert_eq!(super::rate(3, 2.0), "1.5");
    }

    #[test]
    fn ldpreload_and_secure_sections_are_kept() {
        use super::{keep_sections, marked_section};
        let ldpreload =
            |text| marked_section(text, "<!-- ldpreload:start -->", "<!-- ldpreload:end -->");
        let old = "# old report\n\n<!-- ldpreload:start -->\n## LD_PRELOAD\n\n| a | b |\n\
                   <!-- ldpreload:end -->\ntrailing\n";
        let section =
            "<!-- ldpreload:start -->\n## LD_PRELOAD\n\n| a | b |\n<!-- ldpreload:end -->";
        assert_eq!(ldpreload(old), Some(section));
        assert_eq!(
            keep_sections("# new\n\n", old),
            format!("# new\n\n{section}\n")
        );
        // Kept again on the next rewrite, unchanged.
        let twice = keep_sections("# newer\n", &keep_sections("# new\n", old));
        assert_eq!(twice, format!("# newer\n\n{section}\n"));
        // All sections, in the order of KEPT_SECTIONS whatever the file's.
        let secure = "<!-- secure:start -->\n## Secure\n<!-- secure:end -->";
        let both = format!("# old\n\n{secure}\n\n{section}\n");
        assert_eq!(
            keep_sections("# new\n", &both),
            format!("# new\n\n{section}\n\n{secure}\n")
        );
        let mimalloc =
            "<!-- secure-mimalloc:start -->\n## Secure mimalloc\n<!-- secure-mimalloc:end -->";
        let all = format!("# old\n\n{mimalloc}\n\n{secure}\n\n{section}\n");
        assert_eq!(
            keep_sections("# new\n", &all),
            format!("# new\n\n{section}\n\n{secure}\n\n{mimalloc}\n")
        );
        // No section, an unterminated one, or markers inside a line: nothing kept.
        assert_eq!(keep_sections("# new\n", "# old\n"), "# new\n");
        assert_eq!(ldpreload("<!-- ldpreload:start -->\nno end\n"), None);
        assert_eq!(
            ldpreload("see `<!-- ldpreload:start -->` and `<!-- ldpreload:end -->`\n"),
            None
        );
    }

    #[test]
    fn geomean_of_ratios() {
        let g = geomean(&[2.0, 0.5]).expect("non-empty");
        assert!((g - 1.0).abs() < 1e-12);
        assert!(geomean(&[]).is_none());
    }
}
