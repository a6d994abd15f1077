//! C programs (`tests/c/*.c`) compiled with the system's `cc` and run with
//! `LD_PRELOAD=librulloc.so` (or linked with `librulloc.a`). Each program
//! first checks with `dladdr` that the allocation functions it uses really
//! come from librulloc (exit status 3 otherwise), does its checks, prints
//! `<name>: ok ...` and exits 0. See `common/mod.rs` for how the library is
//! found or built.
#![cfg(target_os = "linux")]

mod common;

use std::ffi::OsStr;
use std::process::Command;
use std::time::Duration;

use common::*;

/// Generous: the programs take a second or two; this only bounds a hang.
const TIMEOUT: Duration = Duration::from_secs(120);

fn assert_ok_line(run: &Run, name: &str) {
    let expected = format!("{name}: ok");
    assert!(
        run.stdout_str().contains(&expected),
        "no `{expected}` line:\n{}",
        run.describe()
    );
}

/// 1. Content integrity across threads with cross-thread frees: producers
///    allocate blocks of 1 B .. 4 MiB (malloc, calloc, realloc growth,
///    aligned_alloc, posix_memalign) filled with a per-block pattern,
///    consumers verify every byte, sometimes realloc, and free them.
#[test]
fn threads_content_integrity() {
    let run = run_c_test("threads", &["20000"], TIMEOUT);
    assert_ok_line(&run, "threads");
}

/// 2. posix_memalign / aligned_alloc / memalign at every alignment 8 B ..
///    1 MiB (plus 1 GiB), valloc / pvalloc with the runtime page size,
///    malloc's own 16-byte (8 for <= 8 B) alignment; blocks writable and
///    disjoint; EINVAL for invalid alignments, errno and *memptr untouched
///    by posix_memalign.
#[test]
fn alignment_functions() {
    let run = run_c_test("align", &[], TIMEOUT);
    assert_ok_line(&run, "align");
}

/// 3. errno == ENOMEM on every failure: malloc(SIZE_MAX), > PTRDIFF_MAX,
///    calloc and reallocarray overflow, realloc too big (old block intact),
///    posix_memalign errors; plus malloc(0), free(NULL), realloc(NULL, n),
///    realloc(p, 0), calloc zeroing dirty memory, malloc_trim.
#[test]
fn errno_on_failure() {
    let run = run_c_test("errno", &[], TIMEOUT);
    assert_ok_line(&run, "errno");
}

/// 4. malloc_usable_size >= requested for every size 0..4096 and
///    geometrically up to 8 MiB, and all usable bytes writable without
///    disturbing neighbouring blocks.
#[test]
fn usable_size_is_usable() {
    let run = run_c_test("usable", &[], TIMEOUT);
    assert_ok_line(&run, "usable");
}

/// 5. 1,000 forks while three threads keep allocating and exchanging
///    blocks; each child frees an inherited block, allocates, sometimes
///    starts a thread, and `_exit(0)`s. A hung child is killed and fails the
///    test (child alarm + parent polling deadline + this harness' timeout).
#[test]
fn fork_from_multithreaded_parent() {
    let run = run_c_test("fork", &["1000"], Duration::from_secs(200));
    assert_ok_line(&run, "fork");
}

/// 6. Out of memory under `setrlimit(RLIMIT_AS)`: NULL + ENOMEM from every
///    function, old block intact after a failed realloc, and after freeing,
///    the same amount of memory can be allocated again.
#[test]
fn out_of_memory_under_rlimit() {
    let run = run_c_test("oom", &[], TIMEOUT);
    assert_ok_line(&run, "oom");
}

/// C code re-entering the allocator and freeing during thread teardown:
/// 40 pthread keys (so `pthread_setspecific` calls `calloc` for keys >= 32,
/// possibly in the middle of the allocator binding a thread to a heap, and
/// glibc frees that array at thread exit), key destructors freeing blocks
/// at thread exit, and a `dlopen`ed module with `__thread` variables whose
/// TLS glibc allocates lazily in each thread; 240 threads over 60 rounds.
#[test]
fn thread_exit_keys_and_dlopen_tls() {
    let module = compile_c_shared("tls_module", "libtls_module.so");
    let module = module.to_str().expect("UTF-8 scratch path");
    let run = run_c_test("thread_exit", &[module], TIMEOUT);
    assert_ok_line(&run, "thread_exit");
}

/// 7. The library is really in use: the 13 functions resolve into
///    librulloc.so (dladdr), `RULLOC_SHOW_STATS=1` prints the report and
///    nothing is printed without it; the same program *without* the preload
///    must fail its check (so the check itself is proven to work).
#[test]
fn library_is_in_use() {
    let exe = compile_c("in_use", "in_use", &[]);

    let mut cmd = preloaded(&exe);
    cmd.env("RULLOC_SHOW_STATS", "1");
    let with_report = run(cmd, TIMEOUT);
    with_report.assert_success();
    assert_ok_line(&with_report, "in_use");
    assert_eq!(
        report_count(&with_report.stderr_str()),
        1,
        "expected one report:\n{}",
        with_report.describe()
    );
    assert!(
        !with_report.stderr_str().contains("truncated"),
        "the report did not fit its buffer:\n{}",
        with_report.describe()
    );
    println!("{}", with_report.stderr_str());

    for value in [None, Some("0"), Some("")] {
        let mut cmd = preloaded(&exe);
        if let Some(value) = value {
            cmd.env("RULLOC_SHOW_STATS", value);
        }
        let quiet = run(cmd, TIMEOUT);
        quiet.assert_success();
        assert_eq!(
            report_count(&quiet.stderr_str()),
            0,
            "RULLOC_SHOW_STATS={value:?} printed a report"
        );
    }

    // Negative control: without LD_PRELOAD, glibc's malloc is in use and the
    // program must notice.
    let mut cmd = Command::new(&exe);
    cmd.env("RULLOC_EXPECT", shared_lib())
        .env("RULLOC_SHOW_STATS", "1");
    let glibc = run(cmd, TIMEOUT);
    assert_eq!(
        glibc.status.code(),
        Some(3),
        "the in-use check passed without the library:\n{}",
        glibc.describe()
    );
    assert_eq!(report_count(&glibc.stderr_str()), 0);
}

/// The static library: linked into the C programs, it replaces malloc for
/// the whole process (libc's internal allocations included), its
/// constructor runs (the exit report appears), and the threads test passes.
#[test]
fn static_library() {
    let archive = &libs().static_lib;
    assert!(archive.is_file(), "{} does not exist", archive.display());
    // What `--print native-static-libs` lists for std on linux-gnu.
    // `-rdynamic` makes the executable export malloc & co., so that dlsym()
    // in the test program (and every shared library) sees them.
    let link: Vec<&OsStr> = [OsStr::new("-rdynamic"), archive.as_os_str()]
        .into_iter()
        .chain(["-lgcc_s", "-lutil", "-lrt", "-lpthread", "-lm", "-lc"].map(OsStr::new))
        .collect();
    for (name, args) in [("in_use", &[][..]), ("threads", &["4000"][..])] {
        let exe = compile_c(name, &format!("{name}-static"), &link);
        let mut cmd = Command::new(&exe);
        cmd.args(args)
            .env("RULLOC_EXPECT", &exe)
            .env("RULLOC_SHOW_STATS", "1");
        let run = run(cmd, TIMEOUT);
        run.assert_success();
        assert_ok_line(&run, name);
        assert_eq!(
            report_count(&run.stderr_str()),
            1,
            "no exit report from the static link:\n{}",
            run.describe()
        );
        report_time(&format!("{name} (static)"), run.elapsed);
    }
}

/// `librulloc.so` `dlopen`ed (`RTLD_LOCAL`, not preloaded) by a process
/// that already runs threads, and used through `dlsym` by those threads
/// and by threads started later, with cross-thread frees and thread exits.
/// The library's thread binding is initial-exec TLS (`DF_STATIC_TLS`):
/// glibc must find room for it in its static TLS surplus and initialise it
/// in the threads that already exist. Then `dlclose` while a thread that
/// allocated still runs, that thread's exit and a `fork`: the library is
/// `-z nodelete` (`capi/build.rs`), so its thread-exit and fork hooks stay
/// mapped.
#[test]
fn dlopen_into_a_running_process() {
    let exe = compile_c("dlopen", "dlopen", &[]);
    let mut cmd = Command::new(&exe);
    cmd.arg(shared_lib()).env_remove("LD_PRELOAD");
    let run = run(cmd, TIMEOUT);
    run.assert_success();
    assert_ok_line(&run, "dlopen");
    report_time("dlopen", run.elapsed);
}
