/* A shared library with thread-local storage, dlopen()ed by thread_exit.c
 * after threads already exist: glibc then allocates the module's TLS block
 * lazily (with malloc) the first time each thread touches it, from inside
 * __tls_get_addr. */
#include <stdlib.h>
#include <string.h>

static __thread char scratch[4096];
static __thread void *kept;

/* Touches this thread's TLS and allocates; returns 0 on success. */
int tls_module_work(int n) {
    memset(scratch, n & 0xFF, sizeof scratch);
    free(kept);
    kept = malloc((size_t)(n % 1000) + 1);
    if (kept == NULL) return 1;
    memset(kept, 1, (size_t)(n % 1000) + 1);
    return scratch[4095] == (char)(n & 0xFF) ? 0 : 1;
}
