/*
 * idletick: the floor for an idle mount's CPU, for `make bench` — a bare C thread that wakes
 * on a timerfd at 100 Hz and does nothing else. What it costs is what this machine charges
 * for a wake-up.
 */
#include <stdint.h>
#include <sys/timerfd.h>
#include <unistd.h>

int main(void) {
    int timer = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
    struct itimerspec period = {{0, 10000000}, {0, 10000000}};
    timerfd_settime(timer, 0, &period, NULL);
    for (;;) {
        uint64_t expirations;
        if (read(timer, &expirations, sizeof expirations) < 0) return 1;
    }
}
