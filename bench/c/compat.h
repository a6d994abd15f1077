/* Force-included (cc -include) before the capi/tests/c programs that
 * bench/ldpreload.sh reuses as workloads, so that they run on any allocator
 * without being modified:
 *
 * - require_rulloc() (which exits 3 unless malloc comes from librulloc.so)
 *   becomes a no-op: the same binary runs under glibc, mimalloc, jemalloc;
 * - cfree() becomes free(): glibc no longer exports cfree (dlsym fails) and
 *   the peers need not have it.
 *
 * Every other check stays. This file includes the real common.h with those
 * two names renamed out of the way; the programs' own #include "common.h"
 * is then a no-op (include guard).
 */
#ifndef RULLOC_BENCH_COMPAT_H
#define RULLOC_BENCH_COMPAT_H

#define require_rulloc rulloc_tests_require_rulloc
#define cfree rulloc_tests_cfree
#include "common.h"
#undef require_rulloc
#undef cfree

static inline void require_rulloc(void) {}
static inline void cfree(void *ptr) { free(ptr); }

#endif
