/* LD_PRELOAD: fsync and fdatasync that wait for a disk whose cache flush takes
   SLOWSYNC_US microseconds, the way ext4's journal batches them: a flush asked for while
   one is under way waits for it and then for the next one, which serves every flush asked
   for meanwhile. The inverse of eatmydata; bench/copy_throughput.py builds it with cc. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t flushed = PTHREAD_COND_INITIALIZER;
static long started, finished; /* flushes begun and ended so far */
static int flushing;

static void flush(void) {
    static long us = -1;
    if (us < 0) {
        const char *s = getenv("SLOWSYNC_US");
        us = s ? atol(s) : 2000;
    }
    pthread_mutex_lock(&lock);
    long needed = started + 1; /* one under way began before this write was asked for */
    while (finished < needed) {
        if (flushing) {
            pthread_cond_wait(&flushed, &lock);
            continue;
        }
        flushing = 1;
        started++;
        pthread_mutex_unlock(&lock);
        struct timespec t = {us / 1000000, (us % 1000000) * 1000};
        while (nanosleep(&t, &t) != 0) {}
        pthread_mutex_lock(&lock);
        finished = started;
        flushing = 0;
        pthread_cond_broadcast(&flushed);
    }
    pthread_mutex_unlock(&lock);
}

int fsync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    flush();
    return real(fd);
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    flush();
    return real(fd);
}
