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
