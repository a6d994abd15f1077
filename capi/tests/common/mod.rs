//! Shared harness for the C API tests: find (or build) `librulloc.so`,
//! compile the C programs in `tests/c/`, run programs with a timeout.
//!
//! # Which library is tested
//!
//! * `RULLOC_CAPI_LIB=/path/to/librulloc.so`: that file (and `librulloc.a`
//!   beside it for the static-link test). Nothing is built.
//! * Otherwise the first test that needs it runs
//!   `$CARGO build --release -p rulloc-capi --message-format=json` for this
//!   workspace and takes the paths cargo reports for the artifacts. The build
//!   goes wherever cargo normally puts it (`CARGO_TARGET_DIR`,
//!   `build.target-dir`, or `<workspace>/target`), so it is a no-op when the
//!   library is up to date. Running cargo from a test is fine: cargo releases
//!   its build-directory lock before it runs test binaries.
//!
//! The release build is what ships (`target/release/librulloc.so`); the
//! debug cdylib cargo builds for `cargo test` itself is not used.

#![allow(dead_code)] // each test binary uses a different part of this module

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The package directory (`capi/`).
pub const CAPI_DIR: &str = env!("CARGO_MANIFEST_DIR");

/// The first line of the `RULLOC_SHOW_STATS` report (see `src/init.rs`).
pub const REPORT_HEADER: &str = "rulloc: statistics at exit";

/// The built libraries.
pub struct Libs {
    /// `librulloc.so`.
    pub shared: PathBuf,
    /// `librulloc.a`.
    pub static_lib: PathBuf,
}

/// The libraries under test, built on first use (see the module docs).
pub fn libs() -> &'static Libs {
    static LIBS: OnceLock<Libs> = OnceLock::new();
    LIBS.get_or_init(|| {
        let libs = match std::env::var_os("RULLOC_CAPI_LIB") {
            Some(path) => {
                let shared = PathBuf::from(path);
                let static_lib = shared.with_extension("a");
                Libs { shared, static_lib }
            }
            None => build_libs(),
        };
        assert!(
            libs.shared.is_file(),
            "{} does not exist",
            libs.shared.display()
        );
        libs
    })
}

/// The shared library under test.
pub fn shared_lib() -> &'static Path {
    &libs().shared
}

fn build_libs() -> Libs {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = Path::new(CAPI_DIR).join("Cargo.toml");
    let output = Command::new(&cargo)
        .args([
            "build",
            "--release",
            "-p",
            "rulloc-capi",
            "--message-format=json-render-diagnostics",
        ])
        .arg("--manifest-path")
        .arg(&manifest)
        .stdin(Stdio::null())
        .output()
        .expect("could not run cargo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "`cargo build --release -p rulloc-capi` failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut shared = None;
    let mut static_lib = None;
    // Each artifact line holds `"filenames":["/path/librulloc.so", ...]`;
    // splitting on quotes is enough for the paths cargo produces here.
    for line in stdout
        .lines()
        .filter(|l| l.contains("\"reason\":\"compiler-artifact\""))
    {
        for piece in line.split('"') {
            if piece.ends_with("/librulloc.so") {
                shared = Some(PathBuf::from(piece));
            } else if piece.ends_with("/librulloc.a") {
                static_lib = Some(PathBuf::from(piece));
            }
        }
    }
    match (shared, static_lib) {
        (Some(shared), Some(static_lib)) => Libs { shared, static_lib },
        _ => panic!("cargo did not report librulloc.so and librulloc.a:\n{stdout}"),
    }
}

/// Where compiled C programs and scratch files go.
pub fn scratch_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("rulloc-capi");
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// A fresh, empty scratch directory named `name`.
pub fn fresh_dir(name: &str) -> PathBuf {
    let dir = scratch_dir().join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// Compiles `tests/c/<name>.c` into an executable called `out_name` and
/// returns its path. `extra` goes after the source (objects, libraries).
///
/// `-fno-builtin` keeps the compiler from reasoning about `malloc` & co.
/// (folding `malloc(SIZE_MAX)` to null, eliding malloc/free pairs): the
/// calls must reach the library.
pub fn compile_c(name: &str, out_name: &str, extra: &[&OsStr]) -> PathBuf {
    let c_dir = Path::new(CAPI_DIR).join("tests/c");
    let source = c_dir.join(format!("{name}.c"));
    let exe = scratch_dir().join(out_name);
    let cc = std::env::var_os("CC").unwrap_or_else(|| "cc".into());
    let output = Command::new(&cc)
        .args([
            "-std=gnu11",
            "-O2",
            "-g",
            "-Wall",
            "-Wextra",
            "-fno-builtin",
            "-pthread",
        ])
        .arg("-I")
        .arg(&c_dir)
        .arg("-o")
        .arg(&exe)
        .arg(&source)
        .args(extra)
        .arg("-ldl")
        .output()
        .unwrap_or_else(|e| panic!("could not run the C compiler {cc:?}: {e}"));
    assert!(
        output.status.success(),
        "compiling {} failed:\n{}",
        source.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    exe
}

/// Compiles `tests/c/<name>.c` into a shared library `<out_name>` (for
/// programs that `dlopen` it) and returns its path.
pub fn compile_c_shared(name: &str, out_name: &str) -> PathBuf {
    let source = Path::new(CAPI_DIR).join(format!("tests/c/{name}.c"));
    let lib = scratch_dir().join(out_name);
    let cc = std::env::var_os("CC").unwrap_or_else(|| "cc".into());
    let output = Command::new(&cc)
        .args(["-O2", "-g", "-Wall", "-Wextra", "-shared", "-fPIC", "-o"])
        .arg(&lib)
        .arg(&source)
        .output()
        .unwrap_or_else(|e| panic!("could not run the C compiler {cc:?}: {e}"));
    assert!(
        output.status.success(),
        "compiling {} failed:\n{}",
        source.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    lib
}

/// What a finished program produced.
pub struct Run {
    pub what: String,
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub elapsed: Duration,
}

impl Run {
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// Everything about the run, for failure messages.
    pub fn describe(&self) -> String {
        format!(
            "{}: {} after {:.1?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.what,
            describe_status(self.status),
            self.elapsed,
            tail(&self.stdout_str(), 6000),
            tail(&self.stderr_str(), 6000)
        )
    }

    /// Panics with the full story unless the program exited with status 0.
    pub fn assert_success(&self) -> &Self {
        assert!(self.status.success(), "{}", self.describe());
        self
    }
}

/// The end of `text`, at most `max` bytes.
fn tail(text: &str, max: usize) -> &str {
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

fn describe_status(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!(
            "killed by signal {signal}{}",
            if status.core_dumped() {
                " (core dumped)"
            } else {
                ""
            }
        ),
        _ => format!("{status:?}"),
    }
}

/// Runs `cmd` to completion, capturing its output, and kills its whole
/// process group if it takes longer than `timeout` — then panics: a hang is
/// a failure, never a stuck test.
pub fn run(mut cmd: Command, timeout: Duration) -> Run {
    let what = format!("{cmd:?}");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Own process group, so that a timeout also takes down grandchildren
    // (forked children, git's helpers).
    cmd.process_group(0);
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("could not start {what}: {e}"));
    let pid = child.id() as libc::pid_t;
    let mut out_pipe = child.stdout.take().expect("stdout is piped");
    let mut err_pipe = child.stderr.take().expect("stderr is piped");
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out_pipe.read_to_end(&mut buf);
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err_pipe.read_to_end(&mut buf);
        buf
    });
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for child") {
            break status;
        }
        if start.elapsed() > timeout {
            // SAFETY: plain syscall; `pid` is the group we created.
            unsafe { libc::kill(-pid, libc::SIGKILL) };
            let status = child.wait().expect("wait for killed child");
            let run = Run {
                what: what.clone(),
                status,
                stdout: out_reader.join().unwrap_or_default(),
                stderr: err_reader.join().unwrap_or_default(),
                elapsed: start.elapsed(),
            };
            panic!("TIMEOUT after {timeout:?} (killed): {}", run.describe());
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    // Reap anything the program left behind in its group (e.g. a hung
    // forked child) so that the pipes close.
    // SAFETY: plain syscall on the group we created.
    unsafe { libc::kill(-pid, libc::SIGKILL) };
    Run {
        what,
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
        elapsed: start.elapsed(),
    }
}

/// A command running `program` with `librulloc.so` preloaded. The C
/// programs check with `dladdr` that `malloc` & co. come from the file whose
/// path contains `RULLOC_EXPECT`.
pub fn preloaded(program: impl AsRef<OsStr>) -> Command {
    let lib = shared_lib();
    let mut cmd = Command::new(program);
    cmd.env("LD_PRELOAD", lib)
        .env("RULLOC_EXPECT", lib)
        .env_remove("RULLOC_SHOW_STATS");
    cmd
}

/// Compiles `tests/c/<name>.c`, runs it preloaded with `args` and returns
/// the run after asserting it succeeded.
pub fn run_c_test(name: &str, args: &[&str], timeout: Duration) -> Run {
    let exe = compile_c(name, name, &[]);
    let mut cmd = preloaded(&exe);
    cmd.args(args);
    let run = run(cmd, timeout);
    run.assert_success();
    report_time(name, run.elapsed);
    run
}

/// Prints a line that `cargo test` does not capture (it only captures the
/// print macros), for results that must be seen even when tests pass.
pub fn loud(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Records how long a program ran (visible with `--nocapture`).
pub fn report_time(what: &str, elapsed: Duration) {
    println!("{what}: {elapsed:.2?}");
}

/// The full path of `program` if it is on `PATH`.
pub fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .map(|m| {
                    m.is_file()
                        && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0
                })
                .unwrap_or(false)
        })
}

/// `program`'s path, or `None` after printing a loud `SKIPPED` line.
pub fn program_or_skip(program: &str, test: &str) -> Option<PathBuf> {
    let found = find_program(program);
    if found.is_none() {
        loud(&format!(
            "SKIPPED: {program} not found on PATH ({test} did not run)"
        ));
    }
    found
}

/// How many `RULLOC_SHOW_STATS` reports `stderr` contains.
pub fn report_count(stderr: &str) -> usize {
    stderr.matches(REPORT_HEADER).count()
}
