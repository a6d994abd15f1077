/* C code that allocates while the allocator is in the middle of something,
 * and frees while threads are being torn down:
 *
 * - 40 pthread keys exist before any worker thread allocates, so the keys
 *   the allocator or anyone else creates later are numbered >= 32, and
 *   glibc's pthread_setspecific() calls calloc() for a second-level array —
 *   possibly while the allocator is binding the thread to a heap; glibc
 *   frees that array with free() when the thread exits;
 * - every key has a destructor that frees a block at thread exit (after or
 *   before the allocator's own thread-exit hook, in whatever order glibc
 *   picks);
 * - a module with __thread variables is dlopen()ed while threads run, so
 *   __tls_get_addr allocates TLS blocks lazily in each thread;
 * - threads exit while others still run, for many rounds.
 *
 * Usage: thread_exit <path to libtls_module.so>
 */
#include "common.h"

#include <pthread.h>

#define KEYS 40
#define THREADS 4
#define ROUNDS 60

static pthread_key_t keys[KEYS];
static int (*module_work)(int);
static unsigned long destructed;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static void free_value(void *value) {
    CHECK(malloc_usable_size(value) >= 24, "key value lost its size");
    free(value);
    pthread_mutex_lock(&lock);
    destructed++;
    pthread_mutex_unlock(&lock);
}

static void *worker(void *arg) {
    uintptr_t n = (uintptr_t)arg;
    uint64_t rng = n + 1;
    void *live[64] = {0};
    for (int i = 0; i < 2000; i++) {
        size_t slot = rng_below(&rng, 64);
        free(live[slot]);
        live[slot] = malloc(1 + rng_below(&rng, 2048));
        CHECK(live[slot] != NULL, "malloc");
    }
    for (int k = 0; k < KEYS; k++) {
        void *value = malloc(24 + (size_t)k);
        CHECK(value != NULL, "malloc");
        CHECK(pthread_setspecific(keys[k], value) == 0, "pthread_setspecific");
    }
    if (module_work != NULL) CHECK(module_work((int)n) == 0, "TLS module work");
    for (int i = 0; i < 64; i++) free(live[i]);
    return NULL; /* the key destructors free the key values */
}

int main(int argc, char **argv) {
    require_rulloc();
    CHECK(argc == 2, "usage: thread_exit <libtls_module.so>");
    for (int k = 0; k < KEYS; k++) CHECK(pthread_key_create(&keys[k], free_value) == 0, "pthread_key_create %d", k);

    unsigned long threads = 0;
    for (int round = 0; round < ROUNDS; round++) {
        pthread_t t[THREADS];
        for (uintptr_t i = 0; i < THREADS; i++) {
            CHECK(pthread_create(&t[i], NULL, worker, (void *)(round * THREADS + i)) == 0, "pthread_create");
            threads++;
        }
        if (round == ROUNDS / 3) {
            /* Load the TLS module while threads are running. */
            void *module = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
            CHECK(module != NULL, "dlopen: %s", dlerror());
            module_work = (int (*)(int))dlsym(module, "tls_module_work");
            CHECK(module_work != NULL, "dlsym: %s", dlerror());
        }
        for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
    }
    CHECK(destructed == threads * KEYS, "%lu key destructors ran, expected %lu", destructed, threads * KEYS);
    printf("thread_exit: ok, %lu threads, %lu blocks freed by key destructors\n", threads, destructed);
    return 0;
}
