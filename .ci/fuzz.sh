#!/usr/bin/env bash
# Runs every cargo-fuzz target of fuzz/ for a bounded time and fails on any
# crash (a failed check of the shadow model, a panic, a signal, a timeout or
# running out of memory).
#
#   .ci/fuzz.sh [SECONDS_PER_TARGET]      (default 120)
#
# Environment:
#   FUZZ_TARGETS      targets to run (default: every target `cargo fuzz list` names)
#   FUZZ_FEATURES     cargo features for the fuzz build (e.g. rulloc/secure,
#                     to fuzz the hardened build)
#   FUZZ_SANITIZER    cargo-fuzz sanitizer for the `differential` target
#                     (default none; the `capi` target always uses none: it
#                     provides the process's malloc, which a sanitizer runtime
#                     would replace)
#
# Before fuzzing, each target replays its regression inputs
# (fuzz/regressions/<target>/*: inputs that once crashed; they must pass).
# A crash leaves its input in fuzz/artifacts/<target>/; reproduce it with
#   cargo +nightly fuzz run -s none --debug-assertions <target> <file>
# then copy it into fuzz/regressions/<target>/ with the fix.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-120}"
sanitizer="${FUZZ_SANITIZER:-none}"

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

targets="${FUZZ_TARGETS:-$(cargo +nightly fuzz list)}"
for target in $targets; do
  san="$sanitizer"
  [ "$target" = capi ] && san=none
  flags=(-s "$san" --debug-assertions)
  if [ -n "${FUZZ_FEATURES:-}" ]; then
    flags+=(--features "$FUZZ_FEATURES")
  fi
  echo "=== fuzz: build $target (sanitizer $san${FUZZ_FEATURES:+, features $FUZZ_FEATURES})"
  cargo +nightly fuzz build "${flags[@]}" "$target"

  regressions="fuzz/regressions/$target"
  if compgen -G "$regressions/*" >/dev/null; then
    echo "=== fuzz: $target regression inputs"
    cargo +nightly fuzz run "${flags[@]}" "$target" "$regressions"/* -- -runs=1
  fi

  corpus="fuzz/corpus/$target"
  mkdir -p "$corpus"
  echo "=== fuzz: $target for ${seconds}s"
  start=$(date +%s)
  # -max_len: room for a few hundred operations per input.
  # -timeout: one input taking this long is a hang.
  # -rss_limit_mb: the models cap live bytes at 192 MiB per input.
  set +e
  cargo +nightly fuzz run "${flags[@]}" "$target" "$corpus" -- \
    -max_total_time="$seconds" -max_len=4096 -timeout=60 \
    -rss_limit_mb=3072 -print_final_stats=1 2>&1 | tee "fuzz/$target.log" |
    grep --line-buffered -E '^#[0-9]+ +(pulse|DONE|INITED)|stat::|panicked|ERROR|SUMMARY|^Done '
  status=${PIPESTATUS[0]}
  set -e
  echo "=== fuzz: $target ran $(( $(date +%s) - start ))s, exit status $status"
  if [ "$status" -ne 0 ]; then
    echo "FUZZ FAILURE in $target; the end of its log:"
    tail -n 60 "fuzz/$target.log"
    ls -l "fuzz/artifacts/$target" 2>/dev/null || true
    exit 1
  fi
done
echo "=== fuzz: every target ran ${seconds}s without a crash"
