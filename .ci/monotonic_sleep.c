/* Loaded before libfaketime by .ci/faketime: sleeps on the monotonic clocks go straight to the
 * kernel. Debian's libfaketime 0.9.10 (bug wolfcw/libfaketime#426, fixed upstream after 0.9.10)
 * turns an absolute CLOCK_MONOTONIC deadline into a negative one when the monotonic clock is not
 * faked (FAKETIME_DONT_FAKE_MONOTONIC=1), so Python's time.sleep() fails with EINVAL. Sleeps on
 * any other clock go on to libfaketime, which shifts them as it must. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

typedef int (*sleep_fn)(clockid_t, int, const struct timespec *, struct timespec *);

int clock_nanosleep(clockid_t clock_id, int flags, const struct timespec *request,
                    struct timespec *remain) {
    if (clock_id == CLOCK_MONOTONIC || clock_id == CLOCK_MONOTONIC_RAW ||
        clock_id == CLOCK_BOOTTIME) {
        if (syscall(SYS_clock_nanosleep, clock_id, flags, request, remain) == -1) {
            return errno;
        }
        return 0;
    }
    static sleep_fn next;
    if (next == NULL) {
        next = (sleep_fn)dlsym(RTLD_NEXT, "clock_nanosleep");
    }
    return next(clock_id, flags, request, remain);
}

/* The same bug family in libfaketime's pthread_cond_timedwait: a wait on a condition variable
 * whose clock is CLOCK_MONOTONIC (CPython's GIL hand-off, every switch interval) took 50 to 80 ms
 * instead of returning when signalled, so a request through Starlette's TestClient (two threads)
 * took 0.4 s instead of 4 ms. Such waits have a real monotonic deadline: they go straight to glibc.
 * Condition variables on the realtime clock (the default) go on to libfaketime, whose deadlines
 * are faked as the program's are. glibc (2.25 and later) keeps the clock in bit 1 of __wrefs
 * (__PTHREAD_COND_CLOCK_MONOTONIC_MASK). */
#include <pthread.h>

typedef int (*timedwait_fn)(pthread_cond_t *, pthread_mutex_t *, const struct timespec *);

int pthread_cond_timedwait(pthread_cond_t *cond, pthread_mutex_t *mutex,
                           const struct timespec *deadline) {
    static timedwait_fn glibc, next;
    if (glibc == NULL) {
        void *libc = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
        glibc = (timedwait_fn)dlvsym(libc, "pthread_cond_timedwait", "GLIBC_2.3.2");
        next = (timedwait_fn)dlvsym(RTLD_NEXT, "pthread_cond_timedwait", "GLIBC_2.3.2");
    }
    if (cond->__data.__wrefs & 2) {
        return glibc(cond, mutex, deadline);
    }
    return next(cond, mutex, deadline);
}
