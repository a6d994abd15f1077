//! Real programs under `LD_PRELOAD=librulloc.so`, their output compared
//! byte for byte with a run on glibc's malloc. Any difference, non-zero
//! exit or crash fails the test; a program that is not installed is skipped
//! with a loud `SKIPPED:` line (printed past cargo's output capture).
//!
//! Every preloaded run also sets `RULLOC_SHOW_STATS=1` and checks that each
//! process printed the librulloc exit report, so the comparison cannot pass
//! because the library was not loaded.
#![cfg(target_os = "linux")]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

const TIMEOUT: Duration = Duration::from_secs(180);

/// Adds what a preloaded run needs to `cmd`.
fn preload(cmd: &mut Command) {
    cmd.env("LD_PRELOAD", shared_lib())
        .env("RULLOC_SHOW_STATS", "1");
}

/// Runs `make_cmd()` with and without the library; both must succeed with
/// identical stdout, and the preloaded run must have printed at least
/// `min_reports` exit reports.
fn compare(name: &str, make_cmd: impl Fn() -> Command, min_reports: usize) -> Run {
    let glibc = run(make_cmd(), TIMEOUT);
    glibc.assert_success();
    let mut cmd = make_cmd();
    preload(&mut cmd);
    let rulloc = run(cmd, TIMEOUT);
    rulloc.assert_success();
    assert!(
        report_count(&rulloc.stderr_str()) >= min_reports,
        "{name}: expected at least {min_reports} librulloc exit report(s) on stderr:\n{}",
        rulloc.describe()
    );
    assert!(
        glibc.stdout == rulloc.stdout,
        "{name}: output differs under librulloc\n=== glibc ===\n{}\n=== librulloc ===\n{}",
        glibc.describe(),
        rulloc.describe()
    );
    report_time(&format!("{name} (glibc)"), glibc.elapsed);
    report_time(&format!("{name} (librulloc)"), rulloc.elapsed);
    rulloc
}

/// `python3` with `PYTHONMALLOC=malloc` (so every object goes through
/// malloc) running `tests/py/alloc_heavy.py`: dicts, object graphs with
/// cycles and gc, strings and regexes, containers, json, threads.
#[test]
fn python_allocation_heavy() {
    let Some(python) = program_or_skip("python3", "python_allocation_heavy") else {
        return;
    };
    // Resolve launcher shims (pyenv, ...) to the interpreter itself, so the
    // comparison runs one process each way.
    let mut cmd = Command::new(&python);
    cmd.args(["-c", "import sys; print(sys.executable)"]);
    let which = run(cmd, TIMEOUT);
    which.assert_success();
    let resolved = which.stdout_str().trim().to_owned();
    let interpreter = if resolved.is_empty() {
        python
    } else {
        PathBuf::from(resolved)
    };
    let script = Path::new(CAPI_DIR).join("tests/py/alloc_heavy.py");
    let rulloc = compare(
        "python3",
        || {
            let mut cmd = Command::new(&interpreter);
            cmd.arg(&script)
                .env("PYTHONMALLOC", "malloc")
                .env("PYTHONHASHSEED", "0")
                .env("PYTHONDONTWRITEBYTECODE", "1");
            cmd
        },
        1,
    );
    assert!(
        rulloc.stdout_str().contains("total"),
        "{}",
        rulloc.describe()
    );
}

/// `perl` running `tests/perl/hashes.pl`: big hashes, string growth,
/// regexes, sorting, nested structures.
#[test]
fn perl_hashes_and_strings() {
    let Some(perl) = program_or_skip("perl", "perl_hashes_and_strings") else {
        return;
    };
    let script = Path::new(CAPI_DIR).join("tests/perl/hashes.pl");
    let rulloc = compare(
        "perl",
        || {
            let mut cmd = Command::new(&perl);
            cmd.arg(&script)
                .env("PERL_HASH_SEED", "0")
                .env("PERL_PERTURB_KEYS", "0");
            cmd
        },
        1,
    );
    assert!(
        rulloc.stdout_str().contains("total"),
        "{}",
        rulloc.describe()
    );
}

/// A little deterministic text generator for the git repository's files.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }

    fn line(&mut self) -> String {
        let words = 1 + self.next(12);
        (0..words)
            .map(|_| {
                let len = 1 + self.next(9);
                (0..len)
                    .map(|_| char::from(b'a' + self.next(26) as u8))
                    .collect::<String>()
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Runs a scripted git session in `dir`: init, 15 commits touching a
/// hundred files, a branch and a merge, then log, diff, blame, grep, gc,
/// fsck, and listings. Returns the transcript of every command's stdout and
/// all the stderr (for the exit reports).
fn git_session(git: &Path, dir: &Path, preloaded: bool) -> (Vec<u8>, String) {
    let repo = dir.join("repo");
    let home = dir.join("home");
    std::fs::create_dir_all(&repo).unwrap();
    std::fs::create_dir_all(&home).unwrap();
    let global_config = home.join("gitconfig");
    std::fs::write(&global_config, "").unwrap();

    let mut transcript = Vec::new();
    let mut stderr = String::new();
    let mut clock = 1_600_000_000u64;
    let mut git_cmd = |args: &[&str], clock: u64| {
        let mut cmd = Command::new(git);
        cmd.args([
            "-c",
            "gc.auto=0",
            "-c",
            "maintenance.auto=false",
            "-c",
            "core.pager=cat",
        ])
        .args(args)
        .current_dir(&repo)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", &home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", &global_config)
        .env("LC_ALL", "C")
        .env("TZ", "UTC")
        .env("GIT_AUTHOR_NAME", "Rulloc Test")
        .env("GIT_AUTHOR_EMAIL", "test@rulloc.invalid")
        .env("GIT_COMMITTER_NAME", "Rulloc Test")
        .env("GIT_COMMITTER_EMAIL", "test@rulloc.invalid")
        .env("GIT_AUTHOR_DATE", format!("{clock} +0000"))
        .env("GIT_COMMITTER_DATE", format!("{clock} +0000"));
        if preloaded {
            preload(&mut cmd);
        }
        let out = run(cmd, TIMEOUT);
        out.assert_success();
        transcript.extend_from_slice(format!("$ git {}\n", args.join(" ")).as_bytes());
        transcript.extend_from_slice(&out.stdout);
        stderr.push_str(&out.stderr_str());
    };

    git_cmd(&["init", "-q", "-b", "main"], clock);
    let mut gen = Lcg(7);
    let path_of = |i: u64| format!("dir{}/file{:03}.txt", i % 7, i);
    let mut files: Vec<u64> = (0..100).collect();
    for i in &files {
        let path = repo.join(path_of(*i));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let text: String = (0..20 + gen.next(80)).map(|_| gen.line() + "\n").collect();
        std::fs::write(path, text).unwrap();
    }
    git_cmd(&["add", "-A"], clock);
    git_cmd(&["commit", "-q", "-m", "initial import"], clock);

    let mut next_file = 100;
    for round in 1..=15u64 {
        clock += 3600;
        for _ in 0..20 {
            let i = files[gen.next(files.len() as u64) as usize];
            let path = repo.join(path_of(i));
            let old = std::fs::read_to_string(&path).unwrap();
            let mut lines: Vec<String> = old.lines().map(String::from).collect();
            for _ in 0..1 + gen.next(6) {
                let at = gen.next(lines.len() as u64 + 1) as usize;
                match gen.next(3) {
                    0 if at < lines.len() => lines[at] = gen.line(),
                    1 if at < lines.len() => {
                        lines.remove(at);
                    }
                    _ => lines.insert(at, gen.line()),
                }
            }
            std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        }
        for _ in 0..3 {
            let path = repo.join(path_of(next_file));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, (0..30).map(|_| gen.line() + "\n").collect::<String>()).unwrap();
            files.push(next_file);
            next_file += 1;
        }
        let gone = files.remove(gen.next(files.len() as u64) as usize);
        std::fs::remove_file(repo.join(path_of(gone))).unwrap();
        git_cmd(&["add", "-A"], clock);
        git_cmd(
            &[
                "commit",
                "-q",
                "-m",
                &format!("round {round}: edit 20 files, add 3, remove 1"),
            ],
            clock,
        );
        if round == 10 {
            git_cmd(&["branch", "feature"], clock);
        }
    }
    clock += 3600;
    git_cmd(&["checkout", "-q", "feature"], clock);
    std::fs::write(repo.join("feature.txt"), "a feature\n".repeat(50)).unwrap();
    git_cmd(&["add", "feature.txt"], clock);
    git_cmd(&["commit", "-q", "-m", "feature work"], clock);
    git_cmd(&["checkout", "-q", "main"], clock);
    clock += 60;
    git_cmd(&["merge", "-q", "--no-edit", "feature"], clock);

    // Files that exist from the first commit to the last (removed files are
    // never re-created).
    let old_files: Vec<String> = files
        .iter()
        .filter(|i| **i < 100)
        .take(2)
        .map(|i| path_of(*i))
        .collect();
    let show = format!("HEAD~2:{}", old_files[0]);
    for args in [
        &["log", "--format=%H %an %ad %s", "--date=iso"][..],
        &["log", "--stat", "-n", "3"],
        &["diff", "HEAD~5", "HEAD", "--stat"],
        &["diff", "HEAD~3", "HEAD"],
        &["show", &show],
        &["blame", &old_files[1]],
        &["grep", "-n", "-e", "qu", "--", "dir2"],
        &["ls-tree", "-r", "HEAD"],
        &["rev-list", "--count", "--all"],
        &["gc", "--quiet", "--aggressive"],
        &["fsck", "--full", "--no-progress"],
        &["rev-list", "--objects", "--all"],
        &["cat-file", "--batch-all-objects", "--batch-check"],
        &["log", "--oneline", "--graph"],
        &["archive", "--format=tar", "HEAD"],
    ] {
        git_cmd(args, clock);
    }
    (transcript, stderr)
}

/// `git` doing real work: 17 commits over a hundred files, a merge, log,
/// diff, blame, grep, an aggressive `gc` (repack, delta compression with
/// threads, prune) and `fsck`, each command's output compared.
#[test]
fn git_repository_workflow() {
    let Some(git) = program_or_skip("git", "git_repository_workflow") else {
        return;
    };
    let base = fresh_dir("git-session");
    let start = std::time::Instant::now();
    let (glibc, _) = git_session(&git, &base.join("glibc"), false);
    let glibc_time = start.elapsed();
    let start = std::time::Instant::now();
    let (rulloc, stderr) = git_session(&git, &base.join("rulloc"), true);
    let rulloc_time = start.elapsed();
    report_time("git session (glibc)", glibc_time);
    report_time("git session (librulloc)", rulloc_time);
    // One report per git process, at least one per command we ran.
    assert!(
        report_count(&stderr) >= 40,
        "too few librulloc exit reports ({}):\n{stderr}",
        report_count(&stderr)
    );
    if glibc != rulloc {
        let glibc = String::from_utf8_lossy(&glibc);
        let rulloc = String::from_utf8_lossy(&rulloc);
        let line = glibc
            .lines()
            .zip(rulloc.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        panic!(
            "git output differs under librulloc (first difference at line {line}):\n=== glibc ===\n{}\n=== librulloc ===\n{}",
            glibc.lines().skip(line.saturating_sub(5)).take(20).collect::<Vec<_>>().join("\n"),
            rulloc.lines().skip(line.saturating_sub(5)).take(20).collect::<Vec<_>>().join("\n"),
        );
    }
    let _ = std::fs::remove_dir_all(&base);
}
