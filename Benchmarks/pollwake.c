/*
 * pollwake: how soon a poller of schedfs's sched wakes after each tick.
 *
 *   pollwake PATH HZ SECONDS
 *
 * Opens PATH once, then loops: poll for POLLPRI, note the time, pread the count at offset 0.
 * The tick that made count N was due at D0 + N / HZ, with D0 known only inside the daemon, so
 * each wake-up is measured against the earliest (time - N / HZ) of the run: the figures are
 * lateness beyond the best wake-up, which itself came some microseconds after its deadline.
 * Prints one JSON line: wake-ups, counts never woken for, and p50, p99 and max in µs.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define MOST 1000000

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static int by_value(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: pollwake PATH HZ SECONDS\n");
        return 2;
    }
    double hz = atof(argv[2]), end = now() + atof(argv[3]);
    int fd = open(argv[1], O_RDONLY);
    if (fd < 0) { perror(argv[1]); return 1; }
    double *offsets = malloc(MOST * sizeof *offsets);
    char buffer[256];
    unsigned long long count, last = 0, missed = 0;
    long wakeups = 0, failures = 0;
    if (pread(fd, buffer, sizeof buffer, 0) < 0) { perror("pread"); return 1; }
    while (now() < end && wakeups < MOST) {
        struct pollfd urgent = {.fd = fd, .events = POLLPRI};
        if (poll(&urgent, 1, 2000) != 1 || !(urgent.revents & POLLPRI)) { failures++; continue; }
        double woke = now();
        ssize_t length = pread(fd, buffer, sizeof buffer - 1, 0);
        if (length <= 0) { failures++; continue; }
        buffer[length] = 0;
        if (sscanf(buffer, "Timer was called %llu times so far", &count) != 1) { failures++; continue; }
        if (last && count > last + 1) missed += count - last - 1;
        last = count;
        offsets[wakeups++] = woke - count / hz;
    }
    if (wakeups == 0) {
        fprintf(stderr, "pollwake: no wake-up in %s s\n", argv[3]);
        return 1;
    }
    double best = offsets[0];
    for (long i = 1; i < wakeups; i++) if (offsets[i] < best) best = offsets[i];
    for (long i = 0; i < wakeups; i++) offsets[i] = (offsets[i] - best) * 1e6;
    qsort(offsets, wakeups, sizeof *offsets, by_value);
    printf("{\"wakeups\": %ld, \"missed\": %llu, \"failures\": %ld, \"p50_us\": %.0f, \"p99_us\": %.0f, \"max_us\": %.0f}\n",
           wakeups, missed, failures, offsets[wakeups / 2], offsets[wakeups * 99 / 100], offsets[wakeups - 1]);
    return failures ? 1 : 0;
}
