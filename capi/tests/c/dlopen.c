/* librulloc.so loaded with dlopen() into a running, multithreaded process
 * that keeps glibc's malloc, and used through dlsym():
 *
 * - the library keeps its thread binding in initial-exec TLS (DF_STATIC_TLS),
 *   so dlopen() must place it in glibc's static TLS surplus, and initialise
 *   it in the threads that already exist as well as in later ones;
 * - THREADS threads run before the dlopen() (they wait on a barrier), LATE
 *   more start after it; all allocate through the library's functions,
 *   check contents, hand every other block to the next thread to free
 *   (cross-thread frees), and exit (the library's thread-exit hook runs).
 *
 * The process's own malloc stays glibc's: the library is RTLD_LOCAL, so it
 * interposes nothing. At the end it is dlclose()d while a thread that
 * allocated from it is still alive; that thread then exits (running the
 * library's pthread key destructor) and the process forks (running its
 * atfork handlers): the library is linked with -z nodelete, so dlclose()
 * leaves it mapped.
 *
 * Usage: dlopen <path to librulloc.so>
 */
#include "common.h"

#include <pthread.h>
#include <sys/wait.h>

#define THREADS 3
#define LATE 2
#define ROUNDS 4000
#define LIVE 64

static void *(*r_malloc)(size_t);
static void (*r_free)(void *);
static void *(*r_calloc)(size_t, size_t);
static void *(*r_realloc)(void *, size_t);
static size_t (*r_usable)(void *);

static pthread_barrier_t loaded;
static pthread_barrier_t closed;

/* Allocates from the library, then outlives the dlclose(). */
static void *lingerer(void *arg) {
    (void)arg;
    void *p = r_malloc(64);
    CHECK(p != NULL, "malloc on the lingering thread");
    r_free(p);
    pthread_barrier_wait(&closed); /* allocated */
    pthread_barrier_wait(&closed); /* the library is closed: exit */
    return NULL;
}

/* One hand-over slot per thread: blocks its predecessor allocated. */
struct inbox {
    pthread_mutex_t lock;
    void *blocks[LIVE];
    size_t sizes[LIVE];
    uint64_t seeds[LIVE];
    int count;
};
static struct inbox inboxes[THREADS + LATE];

static void give(int to, void *p, size_t size, uint64_t seed) {
    struct inbox *box = &inboxes[to];
    void *old = NULL;
    size_t old_size = 0;
    uint64_t old_seed = 0;
    pthread_mutex_lock(&box->lock);
    if (box->count == LIVE) { /* full: take one back out to free here */
        box->count--;
        old = box->blocks[box->count];
        old_size = box->sizes[box->count];
        old_seed = box->seeds[box->count];
    }
    box->blocks[box->count] = p;
    box->sizes[box->count] = size;
    box->seeds[box->count] = seed;
    box->count++;
    pthread_mutex_unlock(&box->lock);
    if (old != NULL) {
        CHECK_PATTERN(old, old_size, old_seed, "handed-over block");
        r_free(old);
    }
}

static void drain(int me) {
    struct inbox *box = &inboxes[me];
    pthread_mutex_lock(&box->lock);
    while (box->count > 0) {
        box->count--;
        CHECK_PATTERN(box->blocks[box->count], box->sizes[box->count], box->seeds[box->count],
                      "handed-over block");
        r_free(box->blocks[box->count]);
    }
    pthread_mutex_unlock(&box->lock);
}

static void *worker(void *arg) {
    int me = (int)(uintptr_t)arg;
    int next = (me + 1) % (THREADS + LATE);
    if (me < THREADS) pthread_barrier_wait(&loaded);
    uint64_t rng = (uint64_t)me * 7919 + 1;
    void *live[LIVE] = {0};
    size_t sizes[LIVE] = {0};
    uint64_t seeds[LIVE] = {0};
    for (int i = 0; i < ROUNDS; i++) {
        size_t slot = rng_below(&rng, LIVE);
        if (live[slot] != NULL) {
            CHECK_PATTERN(live[slot], sizes[slot], seeds[slot], "own block");
            if (i % 2) {
                give(next, live[slot], sizes[slot], seeds[slot]);
            } else {
                r_free(live[slot]);
            }
        }
        size_t size = 1 + rng_below(&rng, i % 16 == 0 ? 100000 : 1024);
        void *p;
        switch (i % 4) {
        case 0:
            p = r_calloc(1, size);
            CHECK(p != NULL, "calloc(1, %zu)", size);
            for (size_t k = 0; k < size; k++) CHECK(((uint8_t *)p)[k] == 0, "calloc not zeroed");
            break;
        case 1:
            p = r_realloc(r_malloc(size / 2 + 1), size);
            CHECK(p != NULL, "realloc to %zu", size);
            break;
        default:
            p = r_malloc(size);
            CHECK(p != NULL, "malloc(%zu)", size);
        }
        CHECK(is_aligned(p, size > 8 ? 16 : 8), "block %p of %zu bytes misaligned", p, size);
        CHECK(r_usable(p) >= size, "usable size %zu < %zu", r_usable(p), size);
        live[slot] = p;
        sizes[slot] = size;
        seeds[slot] = rng_next(&rng);
        fill_pattern(p, size, seeds[slot]);
        if (i % 256 == 0) drain(me);
    }
    for (int k = 0; k < LIVE; k++) {
        if (live[k] != NULL) {
            CHECK_PATTERN(live[k], sizes[k], seeds[k], "own block");
            r_free(live[k]);
        }
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: dlopen <path to librulloc.so>\n");
        return 2;
    }
    for (int t = 0; t < THREADS + LATE; t++) pthread_mutex_init(&inboxes[t].lock, NULL);
    CHECK(pthread_barrier_init(&loaded, NULL, THREADS + 1) == 0, "barrier");
    pthread_t threads[THREADS + LATE];
    for (int t = 0; t < THREADS; t++) {
        CHECK(pthread_create(&threads[t], NULL, worker, (void *)(uintptr_t)t) == 0, "pthread_create");
    }

    void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    CHECK(lib != NULL, "dlopen(%s): %s", argv[1], dlerror());
    r_malloc = (void *(*)(size_t))dlsym(lib, "malloc");
    r_free = (void (*)(void *))dlsym(lib, "free");
    r_calloc = (void *(*)(size_t, size_t))dlsym(lib, "calloc");
    r_realloc = (void *(*)(void *, size_t))dlsym(lib, "realloc");
    r_usable = (size_t (*)(void *))dlsym(lib, "malloc_usable_size");
    CHECK(r_malloc && r_free && r_calloc && r_realloc && r_usable, "dlsym: %s", dlerror());
    CHECK((void *)r_malloc != (void *)malloc, "the library's malloc is the process's");
    Dl_info info;
    CHECK(dladdr((void *)malloc, &info) != 0 && info.dli_fname != NULL &&
              strstr(info.dli_fname, "libc.so") != NULL,
          "the process's malloc should stay glibc's, comes from %s", info.dli_fname);

    pthread_barrier_wait(&loaded);
    for (int t = THREADS; t < THREADS + LATE; t++) {
        CHECK(pthread_create(&threads[t], NULL, worker, (void *)(uintptr_t)t) == 0, "pthread_create");
    }
    for (int t = 0; t < THREADS + LATE; t++) CHECK(pthread_join(threads[t], NULL) == 0, "join");
    /* What is left in the inboxes, freed by the main thread (which existed
     * before the dlopen too, and allocates here for the first time). */
    void *mine = r_malloc(100);
    CHECK(mine != NULL, "malloc on the main thread");
    fill_pattern(mine, 100, 42);
    for (int t = 0; t < THREADS + LATE; t++) drain(t);
    CHECK_PATTERN(mine, 100, 42, "main thread's block");
    r_free(mine);

    pthread_t lingering;
    CHECK(pthread_barrier_init(&closed, NULL, 2) == 0, "barrier");
    CHECK(pthread_create(&lingering, NULL, lingerer, NULL) == 0, "pthread_create");
    pthread_barrier_wait(&closed);
    CHECK(dlclose(lib) == 0, "dlclose: %s", dlerror());
    pthread_barrier_wait(&closed);
    CHECK(pthread_join(lingering, NULL) == 0, "join");
    fflush(NULL);
    pid_t child = fork();
    CHECK(child >= 0, "fork");
    if (child == 0) _exit(0);
    int status;
    CHECK(waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0,
          "child after dlclose: status %d", status);
    printf("dlopen: ok (%d threads started before dlopen, %d after, thread exit and fork after dlclose)\n",
           THREADS, LATE);
    return 0;
}
