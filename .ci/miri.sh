#!/usr/bin/env bash
# Miri over every test target of the `rulloc` package — unit tests, each
# integration test file, doctests — and the examples that run under Miri,
# once under Stacked Borrows and once under Tree Borrows. Prints how long
# each target took and fails on the first error.
#
#   .ci/miri.sh [sb|tb ...]         (default: sb tb)
#
# Environment:
#   MIRI_TARGETS   test targets to run (default: lib, every tests/*.rs, doc)
#   MIRI_EXAMPLES  examples to run (default: standalone buckets aligned global)
#   MIRI_TEST_ARGS arguments for the test binaries, e.g. "--skip NAME"
#
# What does not run under Miri is marked `#[cfg_attr(miri, ignore)]` in the
# tests themselves, with the reason beside it (processes, setrlimit, fork,
# /proc, mmap-size tricks, proptest's and 20,000 threads' cost); see the
# list printed by `grep -rn 'cfg_attr(miri' src tests`.
#
# The platform backend under `cfg(miri)` is `std::alloc::System`
# (src/platform/miri.rs), so Miri runs the real data structures.
# `-Zmiri-permissive-provenance`: the allocator turns addresses into
# pointers (segment headers found by masking an address).
set -euo pipefail
cd "$(dirname "$0")/.."

modes=("$@")
[ ${#modes[@]} -eq 0 ] && modes=(sb tb)

if [ -n "${MIRI_TARGETS:-}" ]; then
  read -r -a targets <<<"$MIRI_TARGETS"
else
  targets=(lib)
  for file in tests/*.rs; do
    targets+=("$(basename "$file" .rs)")
  done
  targets+=(doc)
fi
read -r -a examples <<<"${MIRI_EXAMPLES:-standalone buckets aligned global}"

cargo +nightly miri setup >/dev/null

report=()
total_start=$(date +%s)
for mode in "${modes[@]}"; do
  case "$mode" in
    sb) flags="-Zmiri-permissive-provenance"; name="Stacked Borrows" ;;
    tb) flags="-Zmiri-permissive-provenance -Zmiri-tree-borrows"; name="Tree Borrows" ;;
    *) echo "unknown mode $mode (sb or tb)"; exit 2 ;;
  esac
  export MIRIFLAGS="$flags"
  mode_start=$(date +%s)
  for target in "${targets[@]}"; do
    case "$target" in
      lib) selector=(--lib) ;;
      doc) selector=(--doc) ;;
      *) selector=(--test "$target") ;;
    esac
    echo "=== miri ($name): $target"
    start=$(date +%s)
    # shellcheck disable=SC2086 # MIRI_TEST_ARGS is a list of words.
    cargo +nightly miri test -p rulloc "${selector[@]}" -- ${MIRI_TEST_ARGS:-}
    report+=("$(printf '%-16s %-20s %5ss' "$name" "$target" $(( $(date +%s) - start )))")
  done
  for example in "${examples[@]}"; do
    echo "=== miri ($name): example $example"
    start=$(date +%s)
    cargo +nightly miri run -p rulloc --example "$example" >/dev/null
    report+=("$(printf '%-16s %-20s %5ss' "$name" "example $example" $(( $(date +%s) - start )))")
  done
  report+=("$(printf '%-16s %-20s %5ss' "$name" "TOTAL" $(( $(date +%s) - mode_start )))")
done

echo "=== miri: time per target"
printf '%s\n' "${report[@]}"
echo "=== miri: all done in $(( $(date +%s) - total_start ))s"
