/* Proves the library is really the process's allocator: prints, for each
 * of the 13 functions, the file dladdr() says defines it (exit 3 if any is
 * not the one named by $RULLOC_EXPECT), then allocates a little, through
 * libc too (strdup, fopen), and frees it.
 */
#include "common.h"

int main(void) {
    require_rulloc_verbose(1);
    unsigned long total = 0;
    for (int i = 0; i < 10000; i++) {
        char *s = malloc((size_t)(i % 300) + 1);
        CHECK(s != NULL, "malloc");
        memset(s, 'x', (size_t)(i % 300));
        s[i % 300] = '\0';
        char *d = strdup(s); /* libc allocates with our malloc */
        CHECK(d != NULL && strcmp(s, d) == 0, "strdup");
        total += malloc_usable_size(d) >= strlen(d) + 1;
        free(s);
        free(d);
    }
    FILE *f = fopen("/proc/self/maps", "r"); /* stdio buffers come from malloc */
    CHECK(f != NULL, "fopen");
    char line[512];
    int mapped = 0;
    while (fgets(line, sizeof line, f) != NULL) mapped += strstr(line, "librulloc") != NULL;
    fclose(f);
    CHECK(total == 10000, "usable sizes");
    printf("in_use: ok, librulloc mappings: %d\n", mapped);
    return 0;
}
