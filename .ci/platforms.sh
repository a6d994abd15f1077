#!/usr/bin/env bash
# Every platform the seed names, tested (issue 8). Called by .ci/run; also
# runs on its own from any directory: `bash .ci/platforms.sh`.
#
#   x86_64-pc-windows-gnu     cargo test under Wine (VirtualAlloc, FLS exit hook)
#   x86_64-unknown-linux-musl cargo test + the musl benchmark figure
#   i686-unknown-linux-gnu    cargo test (32-bit: address space, size classes)
#   aarch64-unknown-linux-gnu cargo check
#   x86_64-apple-darwin       cargo check
#   16 KiB / 64 KiB pages     host tests under an LD_PRELOAD page-size shim
#   no_std                    --no-default-features on three targets, and a
#                             build against `core` alone (nightly build-std)
#
# Installs what it needs (Debian packages, rustup targets, a Wine prefix)
# and exits non-zero on the first failure. About 7 minutes on 2 cores with
# an empty target directory (each step prints the seconds so far).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
start=$(date +%s)
step() { printf '\n=== [platforms %4ss] %s\n' "$(( $(date +%s) - start ))" "$*"; }
trap 'status=$?; if [ $status -ne 0 ]; then printf "\n=== [platforms] FAILED (exit %s) at: %s\n" "$status" "$BASH_COMMAND"; fi' EXIT

WINDOWS=x86_64-pc-windows-gnu
MUSL=x86_64-unknown-linux-musl
I686=i686-unknown-linux-gnu
AARCH64=aarch64-unknown-linux-gnu
DARWIN=x86_64-apple-darwin
# The runner named in .cargo/config.toml.
WINE=/usr/lib/wine/wine64

step "install: Debian packages (wine64, mingw-w64, musl-tools, gcc-multilib)"
if command -v apt-get >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends \
    wine64 gcc-mingw-w64-x86-64 musl-tools gcc-multilib >/dev/null
fi
test -x "$WINE" || { echo "no Wine loader at $WINE"; exit 1; }

step "install: Rust targets"
rustup target add "$WINDOWS" "$MUSL" "$I686" "$AARCH64" "$DARWIN"
# For the core-only no_std build: nightly with rust-src (not updated if
# .ci/run or a developer installed it already).
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  rustup toolchain install nightly --profile minimal --no-self-update
fi
rustup component add rust-src --toolchain nightly

step "Wine prefix (${WINEPREFIX:-$HOME/.wine}) with a bcryptprimitives.dll stub"
# Rust's std on Windows imports ProcessPrng from bcryptprimitives.dll,
# which Wine gained only in 9.x; Debian bookworm has Wine 8. The stub
# implements it with RtlGenRandom (advapi32's SystemFunction036).
export WINEDEBUG=-all WINEDLLOVERRIDES="mscoree,mshtml="
prefix="${WINEPREFIX:-$HOME/.wine}"
stub_dir=$(mktemp -d)
cat >"$stub_dir/bcryptprimitives.c" <<'EOF'
#include <windows.h>
BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);
__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length) {
    while (length > 0) {
        ULONG chunk = length > 0x40000000 ? 0x40000000 : (ULONG)length;
        if (!SystemFunction036(data, chunk)) return FALSE;
        data += chunk;
        length -= chunk;
    }
    return TRUE;
}
EOF
x86_64-w64-mingw32-gcc -shared -O2 -s -o "$stub_dir/bcryptprimitives.dll" \
  "$stub_dir/bcryptprimitives.c" -ladvapi32
if [ ! -d "$prefix/drive_c/windows/system32" ]; then
  # The first start creates the prefix; it complains about the missing
  # 32-bit half and the absent display, harmlessly.
  "$WINE" wineboot --init >/dev/null 2>&1 || true
fi
test -d "$prefix/drive_c/windows/system32" || { echo "Wine did not create $prefix"; exit 1; }
cp "$stub_dir/bcryptprimitives.dll" "$prefix/drive_c/windows/system32/"
rm -rf "$stub_dir"

step "Windows: clippy -D warnings ($WINDOWS)"
cargo clippy --target "$WINDOWS" -p rulloc --lib -- -D warnings

step "Windows: cargo test under Wine ($WINDOWS)"
cargo test --target "$WINDOWS" -p rulloc

step "musl: cargo test ($MUSL)"
cargo test --target "$MUSL" -p rulloc

step "musl: benchmark, Rulloc vs musl's malloc as the global allocator"
cargo run --release --target "$MUSL" -p rulloc --example musl_bench

step "32-bit: cargo test ($I686)"
cargo test --target "$I686" -p rulloc

step "page sizes: lib and integration tests as if on 16 KiB and 64 KiB page kernels"
# An LD_PRELOAD shim makes this 4 KiB-page kernel look like a 16 or 64 KiB
# one to the test process (sysconf, page-aligned mmap, length rounding),
# and aborts with a backtrace on a munmap/mprotect/madvise/mremap address
# that such a kernel would refuse. Tests that convert /proc/self page
# counts with sysconf cannot run under it (the kernel still counts 4 KiB).
shim_dir=$(mktemp -d)
cat >"$shim_dir/pagesize.c" <<'EOF'
/* Makes a 4 KiB-page Linux look like a PAGE-byte-page one to the process:
 * sysconf(_SC_PAGESIZE) and getpagesize() answer PAGE, mappings the
 * kernel places start on a PAGE boundary (anonymous ones are PAGE-rounded
 * too), and munmap, mprotect, madvise and mremap round lengths up to PAGE
 * as such a kernel does. An address that is not PAGE-aligned (EINVAL on
 * such a kernel) aborts with one line and a backtrace, so a caller that
 * assumes 4 KiB pages is caught, not ignored. Calls inside glibc itself
 * (its malloc, the loader, thread stacks) are not interposed. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <execinfo.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define ROUND(n) (((n) + PAGE - 1) & ~(size_t)(PAGE - 1))

static void check(const char *what, void *addr) {
    if ((uintptr_t)addr & (PAGE - 1)) {
        char line[160];
        int n = snprintf(line, sizeof line, "pagesize shim: %s(%p) is not %lu-byte aligned\n",
                         what, addr, (unsigned long)PAGE);
        if (n > 0) write(2, line, (size_t)n);
        void *frames[32];
        backtrace_symbols_fd(frames, backtrace(frames, 32), 2);
        abort();
    }
}

typedef long (*sysconf_fn)(int);
typedef void *(*mmap_fn)(void *, size_t, int, int, int, off_t);
typedef int (*munmap_fn)(void *, size_t);
typedef int (*mprotect_fn)(void *, size_t, int);
typedef int (*madvise_fn)(void *, size_t, int);
typedef void *(*mremap_fn)(void *, size_t, size_t, int, ...);

/* The next definition of `name` (libc's), looked up once. */
#define REAL(name) static name##_fn real_##name; \
    if (!real_##name) real_##name = (name##_fn)dlsym(RTLD_NEXT, #name)

long sysconf(int name) {
    REAL(sysconf);
    if (name == _SC_PAGESIZE) return PAGE;
    return real_sysconf(name);
}

int getpagesize(void) { return PAGE; }

/* Mappings placed by the kernel land on a PAGE boundary: a PAGE-aligned
 * hole is reserved, then the mapping is made over it with MAP_FIXED. A
 * file mapping keeps the rest of its last PAGE reserved (PROT_NONE). */
void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off) {
    REAL(mmap);
    REAL(munmap);
    REAL(sysconf);
    if (addr || (flags & MAP_FIXED) || len == 0 || len > SIZE_MAX / 2)
        return real_mmap(addr, len, prot, flags, fd, off);
    size_t size = ROUND(len), padded = size + PAGE - (size_t)real_sysconf(_SC_PAGESIZE);
    char *raw = real_mmap(NULL, padded, PROT_NONE,
                          MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (raw == MAP_FAILED) return raw;
    size_t head = (PAGE - ((uintptr_t)raw & (PAGE - 1))) & (PAGE - 1);
    if (head) real_munmap(raw, head);
    if (padded - head - size) real_munmap(raw + head + size, padded - head - size);
    size_t mapped = (flags & MAP_ANONYMOUS) ? size : len;
    void *result = real_mmap(raw + head, mapped, prot, flags | MAP_FIXED, fd, off);
    if (result == MAP_FAILED) real_munmap(raw + head, size);
    return result;
}

/* glibc's 64-bit offset name for the same call (Rust's std uses it). */
void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off)
    __attribute__((alias("mmap")));

int munmap(void *addr, size_t len) {
    REAL(munmap);
    check("munmap", addr);
    return real_munmap(addr, ROUND(len));
}

int mprotect(void *addr, size_t len, int prot) {
    REAL(mprotect);
    check("mprotect", addr);
    return real_mprotect(addr, ROUND(len), prot);
}

int madvise(void *addr, size_t len, int advice) {
    REAL(madvise);
    check("madvise", addr);
    return real_madvise(addr, ROUND(len), advice);
}

void *mremap(void *old, size_t old_len, size_t new_len, int flags, ...) {
    REAL(mremap);
    check("mremap", old);
    if (flags & MREMAP_FIXED) {
        va_list args;
        va_start(args, flags);
        void *target = va_arg(args, void *);
        va_end(args);
        return real_mremap(old, ROUND(old_len), ROUND(new_len), flags, target);
    }
    return real_mremap(old, ROUND(old_len), ROUND(new_len), flags);
}
EOF
page_tests=(--lib)
for file in tests/*.rs; do
  grep -q '/proc/self' "$file" || page_tests+=(--test "$(basename "$file" .rs)")
done
host=$(rustc -vV | sed -n 's/^host: //p')
runner_var="CARGO_TARGET_$(echo "$host" | tr 'a-z-' 'A-Z_')_RUNNER"
for page in 16384 65536; do
  gcc -O2 -shared -fPIC -Wall -Werror -DPAGE="${page}UL" \
    -o "$shim_dir/pagesize-$page.so" "$shim_dir/pagesize.c" -ldl
  echo "--- page size $page: ${page_tests[*]}"
  env "$runner_var=env LD_PRELOAD=$shim_dir/pagesize-$page.so" \
    cargo test -p rulloc "${page_tests[@]}"
done
rm -rf "$shim_dir"

step "builds: cargo check ($AARCH64, $DARWIN)"
for target in "$AARCH64" "$DARWIN"; do
  cargo check --target "$target" -p rulloc --lib --tests --examples
done

step "no_std: the core with --no-default-features"
for target in x86_64-unknown-linux-gnu "$I686" "$WINDOWS"; do
  cargo check --target "$target" -p rulloc --lib --no-default-features
done
# Against `core` alone: any use of std or alloc, in Rulloc or in a
# dependency, fails to compile here. Its own target directory: build-std
# artifacts must not mix with the normal ones.
CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}/build-std-core" \
  cargo +nightly build -Zbuild-std=core --target x86_64-unknown-linux-gnu \
  -p rulloc --lib --no-default-features

step "platforms: done"
