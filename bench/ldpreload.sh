#!/usr/bin/env bash
# C programs (and python3) under LD_PRELOAD of librulloc.so, Debian's
# libmimalloc2.0 and libjemalloc2, and plain glibc: median wall time, CPU
# time and peak RSS per workload and allocator, ratios to mimalloc and their
# geometric means. Writes its section of BENCHMARKS.md, between the lines
#   <!-- ldpreload:start -->   and   <!-- ldpreload:end -->
# (replaced in place, or appended); the Rust driver (bench/src/driver.rs)
# keeps that section when it rewrites the file.
#
#   bench/ldpreload.sh                 # everything, 3 runs; ~2 min on 2 cores
#   bench/ldpreload.sh --runs 5        # more runs per workload and allocator
#   bench/ldpreload.sh larson python   # some workloads: prints, writes nothing
#   bench/ldpreload.sh --no-write      # prints, writes nothing
#   bench/ldpreload.sh --strict        # a peer library failing a workload is an error
#
# Workloads: bench/c/{larson,mixed,realloc}.c, capi/tests/c/{threads,usable}.c
# (compiled with bench/c/compat.h force-included, so that they run on any
# malloc) and capi/tests/py/alloc_heavy.py under PYTHONMALLOC=malloc.
# Runs alternate allocators (the order rotates every run); every run's stdout
# must be byte-identical to glibc's.
#
# Exit status: 0 fine; 1 a run under glibc or rulloc failed, outputs differ,
# or (--strict) a peer failed; 2 bad usage or setup. A peer library that is
# missing, cannot be preloaded, or crashes a workload is reported as n/a or
# "fail" with the reason, and does not fail the script (without --strict).
#
# Environment: CARGO_TARGET_DIR (where librulloc.so is built), RULLOC_SO (use
# this librulloc.so, do not build), MIMALLOC_SO / JEMALLOC_SO (override the
# peers' paths), CC (default cc), PYTHON (default: python3's real executable).
set -euo pipefail

started=$(date +%s)
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
runs=3
write=1
strict=0
filters=()
command_line="bench/ldpreload.sh${*:+ $*}"

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
    case "$1" in
    --runs)
        [ $# -ge 2 ] && [[ "$2" =~ ^[1-9][0-9]*$ ]] || { echo "--runs needs a positive number" >&2; exit 2; }
        runs=$2
        shift 2
        ;;
    --no-write) write=0; shift ;;
    --strict) strict=1; shift ;;
    -h | --help) usage; exit 0 ;;
    -*) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
    *) filters+=("$1"); shift ;;
    esac
done

for tool in "${CC:-cc}" python3; do
    command -v "$tool" >/dev/null || { echo "ldpreload.sh: $tool not found" >&2; exit 2; }
done

# --- librulloc.so -----------------------------------------------------------
if [ -n "${RULLOC_SO:-}" ]; then
    rulloc_so=$RULLOC_SO
else
    echo "building librulloc.so (cargo build --release -p rulloc-capi)" >&2
    cargo build --quiet --release -p rulloc-capi --manifest-path "$repo/Cargo.toml" >&2
    rulloc_so=${CARGO_TARGET_DIR:-$repo/target}/release/librulloc.so
fi
[ -f "$rulloc_so" ] || { echo "ldpreload.sh: $rulloc_so not found" >&2; exit 2; }
rulloc_so=$(readlink -f "$rulloc_so")

# --- the workloads ------------------------------------------------------------
tmp=$(mktemp -d "${TMPDIR:-/tmp}/rulloc-ldpreload.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
cflags=(-O2 -pthread -Wall)
for p in larson mixed realloc which_malloc; do
    "${CC:-cc}" "${cflags[@]}" -Wextra -o "$tmp/$p" "$repo/bench/c/$p.c" -ldl
done
# The capi test programs, unmodified: compat.h replaces their "am I running
# on librulloc?" check, and cfree (which glibc no longer exports) by free.
for p in threads usable; do
    "${CC:-cc}" "${cflags[@]}" -I"$repo/capi/tests/c" -include "$repo/bench/c/compat.h" \
        -o "$tmp/$p" "$repo/capi/tests/c/$p.c" -ldl
done

# --- the peers ------------------------------------------------------------------
# Prints the path of a package's library, or nothing.
find_lib() { # package file-name
    { dpkg -L "$1" 2>/dev/null || true; } | grep -E "/$2\$" | head -n 1
}
mimalloc_so=${MIMALLOC_SO:-$(find_lib libmimalloc2.0 'libmimalloc\.so\.2')}
jemalloc_so=${JEMALLOC_SO:-$(find_lib libjemalloc2 'libjemalloc\.so\.2')}

python_exe=${PYTHON:-$(python3 -c 'import sys; print(sys.executable)')}

export LDP_REPO=$repo LDP_TMP=$tmp LDP_RUNS=$runs LDP_WRITE=$write LDP_STRICT=$strict
export LDP_RULLOC=$rulloc_so LDP_MIMALLOC=$mimalloc_so LDP_JEMALLOC=$jemalloc_so
export LDP_PYTHON=$python_exe LDP_COMMAND=$command_line LDP_STARTED=$started
export LDP_CC=${CC:-cc}
set +e
python3 - "${filters[@]}" <<'PYTHON'
import math
import os
import subprocess
import sys
import threading
import time

E = os.environ
REPO, TMP = E["LDP_REPO"], E["LDP_TMP"]
RUNS, WRITE, STRICT = int(E["LDP_RUNS"]), E["LDP_WRITE"] == "1", E["LDP_STRICT"] == "1"
FILTERS = sys.argv[1:]
TIMEOUT = 120
REF = "mimalloc"
START, END = "<!-- ldpreload:start -->", "<!-- ldpreload:end -->"
try:
    LOAD0 = " ".join(open("/proc/loadavg").read().split()[:3])
except OSError:
    LOAD0 = "?"

# name, argv, extra environment, source, what it does
WORKLOADS = [
    ("larson", [f"{TMP}/larson"], {}, "bench/c/larson.c",
     "2 threads replace random blocks of 16 B..1 KiB in 20,000-slot arrays they pass on every round: most frees are cross-thread"),
    ("mixed", [f"{TMP}/mixed"], {}, "bench/c/mixed.c",
     "1 thread: short-lived temporaries (LIFO) around a live set of 50,000 blocks of 16 B..2 KiB, half dropped at each phase (cfrac/espresso-like)"),
    ("realloc", [f"{TMP}/realloc"], {}, "bench/c/realloc.c",
     "1 thread: 512 buffers grown side by side by realloc (exact or doubling), up to 1 MiB, then shrunk to fit and freed"),
    ("threads", [f"{TMP}/threads", "12000"], {}, "capi/tests/c/threads.c",
     "2 producers, 2 consumers: 1 B..4 MiB blocks (malloc, calloc, realloc, aligned_alloc, posix_memalign) verified and freed on another thread"),
    ("usable", [f"{TMP}/usable"], {}, "capi/tests/c/usable.c",
     "1 thread: every size 0..4 KiB, then x1.125 steps to 8 MiB, through 5 functions; fills every usable byte (malloc_usable_size), 64 blocks live"),
    ("python", [E["LDP_PYTHON"], f"{REPO}/capi/tests/py/alloc_heavy.py"],
     {"PYTHONMALLOC": "malloc", "PYTHONHASHSEED": "0"}, "capi/tests/py/alloc_heavy.py",
     "python3 with PYTHONMALLOC=malloc (no pymalloc): dicts, objects, strings, containers, json, 4 threads"),
]
if FILTERS:
    unknown = [f for f in FILTERS if f not in [w[0] for w in WORKLOADS]]
    if unknown:
        print(f"unknown workload(s) {', '.join(unknown)}; known: {', '.join(w[0] for w in WORKLOADS)}", file=sys.stderr)
        sys.exit(2)
    WORKLOADS = [w for w in WORKLOADS if w[0] in FILTERS]


def sh(*argv):
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.TimeoutExpired):
        return ""


# allocator -> path of the preloaded library ("" for glibc), or None with a reason
ALLOCS = ["glibc", "rulloc", "mimalloc", "jemalloc"]
PEERS = {"mimalloc": ("libmimalloc2.0", E["LDP_MIMALLOC"]), "jemalloc": ("libjemalloc2", E["LDP_JEMALLOC"])}
lib = {"glibc": "", "rulloc": E["LDP_RULLOC"]}
unavailable = {}  # allocator -> why it has no numbers at all
for name, (pkg, path) in PEERS.items():
    if not path:
        unavailable[name] = f"{pkg} is not installed (`apt-get install -y {pkg}`)"
    elif not os.path.exists(path):
        unavailable[name] = f"{path} does not exist"
    else:
        lib[name] = os.path.realpath(path)


def env_for(alloc, extra):
    env = dict(os.environ)
    for k in list(env):
        if k.startswith("LDP_"):
            del env[k]
    env.pop("LD_PRELOAD", None)
    if lib[alloc]:
        env["LD_PRELOAD"] = lib[alloc]
    env.update(extra)
    return env


def last_line(text):
    lines = [l.strip() for l in text.strip().splitlines() if l.strip()]
    return lines[-1].replace(REPO + "/", "")[:200] if lines else ""


# Failures already understood: (allocator, text in the error) -> explanation.
KNOWN = {
    ("mimalloc", "is_aligned(p, align)) failed: aligned_alloc(256, 256)"):
        "mimalloc 2.0.9's aligned_alloc/posix_memalign return misaligned blocks when the "
        "alignment is 256..1024 and the size a multiple of it up to 1 KiB, "
        "https://github.com/microsoft/mimalloc/issues/700, fixed in 2.1.0",
}


def explain(alloc, why):
    for (a, text), what in KNOWN.items():
        if a == alloc and text in why:
            return f"{why}; known: {what}"
    return why


def run(argv, env):
    """Runs argv to completion; returns (error or None, stdout, wall s, cpu s, maxrss KiB)."""
    out_path, err_path = f"{TMP}/stdout", f"{TMP}/stderr"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env)
        killed = []
        timer = threading.Timer(TIMEOUT, lambda: (killed.append(1), proc.kill()))
        timer.start()
        _, status, ru = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        timer.cancel()
        proc.returncode = 0  # reaped by wait4: keep Popen from waiting again
    stdout = open(out_path, encoding="utf-8", errors="replace").read()
    stderr = open(err_path, encoding="utf-8", errors="replace").read()
    error = None
    if killed:
        error = f"timed out after {TIMEOUT} s"
    elif os.WIFSIGNALED(status):
        error = f"killed by signal {os.WTERMSIG(status)}"
    elif os.WEXITSTATUS(status) != 0:
        error = f"exit status {os.WEXITSTATUS(status)}"
    if error and last_line(stderr):
        error += f": {last_line(stderr)}"
    return error, stdout, wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss


errors = []  # fatal
# Does the library really replace malloc? (ld.so only warns when it cannot preload.)
for alloc in ALLOCS:
    if alloc in unavailable:
        continue
    error, out, *_ = run([f"{TMP}/which_malloc"], env_for(alloc, {}))
    files = dict(l.split(" ", 1) for l in out.splitlines() if " " in l)
    want = lib[alloc]
    got = files.get("malloc", "?")
    ok = error is None and (os.path.realpath(got) == want if want else os.path.basename(got).startswith("libc.so"))
    if not ok:
        why = error or f"malloc comes from {got}, not {want or 'libc'} (cannot be preloaded?)"
        if alloc in PEERS:
            unavailable[alloc] = why
        else:
            errors.append(f"{alloc}: {why}")
active = [a for a in ALLOCS if a not in unavailable]
if errors:
    print("\n".join(errors), file=sys.stderr)
    sys.exit(1)

# results[workload][alloc] = list of (wall, cpu, maxrss)
results = {w[0]: {a: [] for a in active} for w in WORKLOADS}
failed = {}  # (workload, alloc) -> reason
expected = {}  # workload -> glibc's stdout
mismatches = []
DIFFERS = "output differs from glibc's"
for rep in range(RUNS):
    for wi, (name, argv, extra, _, _) in enumerate(WORKLOADS):
        k = (rep + wi) % len(active)
        order = active[k:] + active[:k]
        # glibc's output is the reference: run it first in the first run.
        if rep == 0:
            order = ["glibc"] + [a for a in order if a != "glibc"]
        for alloc in order:
            if (name, alloc) in failed:
                continue
            error, out, wall, cpu, rss = run(argv, env_for(alloc, extra))
            print(f"[{rep + 1}/{RUNS}] {name:<8} {alloc:<9} {wall:6.2f} s  {cpu:6.2f} s cpu  {rss / 1024:7.1f} MiB"
                  + (f"  FAILED: {error}" if error else ""), file=sys.stderr)
            if error:
                failed[(name, alloc)] = error
                continue
            if name not in expected and alloc == "glibc":
                expected[name] = out
            if name in expected and out != expected[name]:
                mismatches.append(f"{name} under {alloc} (run {rep + 1}) printed {last_line(out)!r}, glibc {last_line(expected[name])!r}")
                failed[(name, alloc)] = DIFFERS
                continue
            results[name][alloc].append((wall, cpu, rss))


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def geomean(xs):
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else None


def stat(name, alloc, i):
    if alloc not in active or (name, alloc) in failed or not results[name][alloc]:
        return None
    return median([r[i] for r in results[name][alloc]])


ref = REF if REF in active else "glibc"


def table(title, i, fmt, unit_note):
    lines = [f"**{title}** — median of {RUNS} run{'s' if RUNS > 1 else ''}, {unit_note}; in parentheses the ratio to {ref} "
             f"(below 1.00 is better); the best of each row in bold.", "",
             "| workload | " + " | ".join(ALLOCS) + " |", "|---|" + "---:|" * len(ALLOCS)]
    ratios = {a: [] for a in ALLOCS}
    ratios_glibc = {a: [] for a in ALLOCS}
    for name, *_ in WORKLOADS:
        vals = {a: stat(name, a, i) for a in ALLOCS}
        present = [v for v in vals.values() if v is not None]
        best = min(present) if present else None
        cells = []
        for a in ALLOCS:
            v = vals[a]
            if a in unavailable:
                cells.append("n/a")
            elif v is None:
                cells.append("fail" if (name, a) in failed else "n/a")
            else:
                r = vals[ref]
                text = fmt(v) + (f" ({v / r:.2f})" if r else "")
                cells.append(f"**{text}**" if v == best and len(present) > 1 else text)
                if r:
                    ratios[a].append(v / r)
                if vals["glibc"]:
                    ratios_glibc[a].append(v / vals["glibc"])
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for rs, base in ((ratios, ref), (ratios_glibc, "glibc")):
        if base == "glibc" and ref == "glibc":
            continue
        # Each column covers the workloads where both it and `base` ran;
        # a column that covers fewer than `base` itself says how many.
        n = len(rs[base])
        label = f"geometric mean, ratio to {base}" + (f" ({n} of {len(WORKLOADS)} workloads)" if n < len(WORKLOADS) else "")
        cells = []
        for a in ALLOCS:
            g = geomean(rs[a])
            cells.append("n/a" if g is None else f"{g:.2f}" + (f" ({len(rs[a])} workloads)" if len(rs[a]) < n else ""))
        lines.append(f"| *{label}* | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def loadavg():
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "?"


def busy():
    """Was the machine busier than its cores, at the start or at the end?"""
    try:
        cores = os.cpu_count() or 1
        return any(float(x.split()[0]) > cores for x in (LOAD0, loadavg()))
    except ValueError:
        return False


cpu = "unknown CPU"
try:
    for l in open("/proc/cpuinfo"):
        if l.split(":")[0].strip() == "model name":
            cpu = l.split(":", 1)[1].strip()
            break
except OSError:
    pass
commit = sh("git", "-C", REPO, "rev-parse", "--short=12", "HEAD") or "unknown"
if sh("git", "-C", REPO, "status", "--porcelain", "--untracked-files=no", "--", "src", "capi/src", "Cargo.toml", "capi/Cargo.toml"):
    commit += ", with uncommitted changes in src/, capi/src/ or Cargo.toml"
elapsed = time.time() - int(E["LDP_STARTED"])
versions = sh("dpkg-query", "-W", "libmimalloc2.0", "libjemalloc2").replace("\t", " ").splitlines()

peer_paths = ", ".join(f"`{lib[a]}`" for a in PEERS if a in lib)
md = [
    START,
    "## C programs under LD_PRELOAD",
    "",
    "Written by `bench/ldpreload.sh`, not by the Rust driver (which keeps this section when it "
    "rewrites the file). The same binaries run with `LD_PRELOAD` of each library, or of none for "
    "glibc, and every run's stdout must be identical to glibc's. Wall time and CPU time "
    "(user + sys) are the child's, peak RSS is its `ru_maxrss` (`wait4`); runs alternate "
    "allocators, in an order that rotates. CPU time is less disturbed than wall time when other "
    "processes compete for the cores.",
    "",
    f"- Date: {sh('date', '-u')}",
    f"- Command: `{E['LDP_COMMAND']}` ({RUNS} run{'s' if RUNS > 1 else ''} per workload and allocator; the script took {elapsed:.0f} s)",
    f"- Machine: {sh('nproc')} CPUs (nproc), {cpu}, Linux {sh('uname', '-r')}, "
    f"{sh('getconf', 'GNU_LIBC_VERSION')}; load average {LOAD0} at the start, {loadavg()} at the end"
    + (" (a busy machine: wall times include waiting for a core, CPU times are the better guide)"
       if busy() else ""),
    f"- rulloc: `librulloc.so` (`cargo build --release -p rulloc-capi`) at {commit}",
    "- Peers (`dpkg-query -W libmimalloc2.0 libjemalloc2`): "
    + ("; ".join(f"`{v}`" for v in versions) or "none installed")
    + (f"; preloaded from {peer_paths}" if peer_paths else ""),
    f"- Compiler: `{E['LDP_CC']} -O2` ({sh(E['LDP_CC'], '--version').splitlines()[0] if sh(E['LDP_CC'], '--version') else '?'}); "
    f"{sh(E['LDP_PYTHON'], '--version') or 'python3'}",
    "",
    "| workload | program | what it does |",
    "|---|---|---|",
]
for name, argv, extra, source, about in WORKLOADS:
    args = " ".join(argv[1:]).replace(REPO + "/", "")
    md.append(f"| {name} | `{source}`{' ' + args if args and name != 'python' else ''} | {about} |")
md.append("")
md.append(table("Wall time", 0, lambda v: f"{v:.2f} s", "seconds"))
md.append(table("CPU time (user + sys)", 1, lambda v: f"{v:.2f} s", "seconds"))
md.append(table("Peak RSS", 2, lambda v: f"{v / 1024:.1f} MiB", "MiB"))
notes = []
for a in ALLOCS:
    if a in unavailable:
        notes.append(f"- {a}: n/a, {unavailable[a]}.")
for (name, a), why in failed.items():
    notes.append(f"- {name} under {a}: **failed** ({explain(a, why)}).")
if notes:
    md += ["Notes:", ""] + notes + [""]
md.append(END)
section = "\n".join(md)
print(section)

fatal = list(mismatches)
for (name, a), why in failed.items():
    if (a not in PEERS or STRICT) and why != DIFFERS:  # mismatches are listed already
        fatal.append(f"{name} under {a}: {why}")
for a in unavailable:
    if STRICT:
        fatal.append(f"{a}: {unavailable[a]}")
if fatal:
    print("\nldpreload.sh: FAILED:\n  " + "\n  ".join(fatal), file=sys.stderr)
    if WRITE and not FILTERS:
        print("BENCHMARKS.md left as it was", file=sys.stderr)
    sys.exit(1)

if WRITE and not FILTERS:
    path = os.path.join(REPO, "BENCHMARKS.md")
    sys.path.insert(0, os.path.join(REPO, "bench"))
    from write_section import replace_section

    replace_section(path, section)
    print(f"wrote its section of {path} ({elapsed:.0f} s)", file=sys.stderr)
else:
    print(f"(BENCHMARKS.md not written; {elapsed:.0f} s)", file=sys.stderr)
PYTHON
status=$?
exit $status
