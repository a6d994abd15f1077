/* Prints the file that defines the malloc and free this process uses
 * (dladdr), so that bench/ldpreload.sh can tell that an LD_PRELOAD library
 * really took over: ld.so only warns, and runs on glibc, when a library
 * cannot be preloaded.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

static const char *file_of(const char *name) {
    Dl_info info;
    void *sym = dlsym(RTLD_DEFAULT, name);
    if (sym == NULL || dladdr(sym, &info) == 0 || info.dli_fname == NULL) return "(unresolved)";
    return info.dli_fname;
}

int main(void) {
    void *p = malloc(100);
    if (p == NULL) return 1;
    free(p);
    printf("malloc %s\nfree %s\n", file_of("malloc"), file_of("free"));
    return 0;
}
