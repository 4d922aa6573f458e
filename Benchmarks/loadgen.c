/*
 * loadgen: read a /proc-like file in a loop from N threads, check every read's text, and
 * report ops/s and latency percentiles as one JSON line.
 *
 *   loadgen PATH THREADS SECONDS sched|uptime [open|held]
 *
 * "sched" checks that each read is exactly one line "Timer was called N times so far\n" and
 * that N never goes back within a thread; "uptime" checks /proc/uptime's "%f %f\n".
 * "open" (the default) opens, reads and closes the file each time; "held" opens it once per
 * thread and re-reads it with pread at offset 0, as procps does, and also reports the fewest
 * distinct texts one reader saw and, for sched, the most counts one reader skipped.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BUCKETS 200000 /* 0.1 us each: up to 20 ms; slower reads land in the last */

struct worker {
    pthread_t thread;
    const char *path;
    int check_sched, held;
    double seconds;
    unsigned long ops, bad, distinct, skipped;
    unsigned *histogram;
};

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static int valid_sched(const char *text, ssize_t length, unsigned long long *last) {
    unsigned long long count;
    int consumed = 0;
    if (length <= 0 || text[length - 1] != '\n') return 0;
    if (sscanf(text, "Timer was called %llu times so far\n%n", &count, &consumed) != 1) return 0;
    if (consumed != length || count < *last) return 0;
    *last = count;
    return 1;
}

static int valid_uptime(const char *text, ssize_t length) {
    double up, idle;
    int consumed = 0;
    return length > 0 && sscanf(text, "%lf %lf\n%n", &up, &idle, &consumed) == 2 && consumed == length;
}

/* One line on stderr for a bad read: its length and its bytes, with \n and NUL spelt out. */
static void report_bad(const char *text, ssize_t length, unsigned long long after) {
    char shown[4 * 4097 + 1], *out = shown;
    for (ssize_t i = 0; i < length; i++) {
        if (text[i] == '\n') out += sprintf(out, "\\n");
        else if (text[i] == 0) out += sprintf(out, "\\0");
        else *out++ = text[i];
    }
    *out = 0;
    fprintf(stderr, "loadgen: bad read: %zd bytes \"%s\" after count %llu\n", length, shown, after);
}

static void *run(void *argument) {
    struct worker *w = argument;
    char buffer[4097], previous[4097] = "";
    unsigned long long last = 0;
    double end = now() + w->seconds;
    int held = w->held ? open(w->path, O_RDONLY) : -1;
    while (1) {
        double start = now();
        if (start >= end) break;
        ssize_t length;
        if (w->held) {
            length = pread(held, buffer, sizeof buffer - 1, 0);
        } else {
            int fd = open(w->path, O_RDONLY);
            length = fd < 0 ? -1 : read(fd, buffer, sizeof buffer - 1);
            if (fd >= 0) close(fd);
        }
        double took = now() - start;
        if (length >= 0) buffer[length] = 0;
        unsigned long long before = last;
        int good = w->check_sched ? valid_sched(buffer, length, &last) : valid_uptime(buffer, length);
        if (!good && w->bad++ < 3) report_bad(buffer, length, before);
        if (good && strcmp(buffer, previous) != 0) {
            w->distinct++;
            if (w->check_sched && before && last > before + 1) w->skipped += last - before - 1;
            memcpy(previous, buffer, (size_t)length + 1);
        }
        long bucket = (long)(took * 1e7);
        w->histogram[bucket < BUCKETS ? bucket : BUCKETS - 1]++;
        w->ops++;
    }
    if (held >= 0) close(held);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 5 && argc != 6) {
        fprintf(stderr, "usage: loadgen PATH THREADS SECONDS sched|uptime [open|held]\n");
        return 2;
    }
    int held = argc == 6 && strcmp(argv[5], "held") == 0;
    int threads = atoi(argv[2]);
    double seconds = atof(argv[3]);
    struct worker *workers = calloc(threads, sizeof *workers);
    double start = now();
    for (int i = 0; i < threads; i++) {
        workers[i] = (struct worker){.path = argv[1], .check_sched = strcmp(argv[4], "sched") == 0, .held = held,
                                     .seconds = seconds};
        workers[i].histogram = calloc(BUCKETS, sizeof(unsigned));
        pthread_create(&workers[i].thread, NULL, run, &workers[i]);
    }
    unsigned long ops = 0, bad = 0, fewest = (unsigned long)-1, most_skipped = 0;
    unsigned long *merged = calloc(BUCKETS, sizeof(unsigned long));
    for (int i = 0; i < threads; i++) {
        pthread_join(workers[i].thread, NULL);
        ops += workers[i].ops;
        bad += workers[i].bad;
        if (workers[i].distinct < fewest) fewest = workers[i].distinct;
        if (workers[i].skipped > most_skipped) most_skipped = workers[i].skipped;
        for (long b = 0; b < BUCKETS; b++) merged[b] += workers[i].histogram[b];
    }
    double elapsed = now() - start;
    double p50 = 0, p99 = 0;
    unsigned long seen = 0;
    for (long b = 0; b < BUCKETS; b++) {
        seen += merged[b];
        if (!p50 && seen * 2 >= ops) p50 = (b + 1) / 10.0;
        if (!p99 && seen * 100 >= ops * 99) { p99 = (b + 1) / 10.0; break; }
    }
    printf("{\"ops\": %lu, \"seconds\": %.3f, \"ops_per_s\": %.0f, \"p50_us\": %.1f, \"p99_us\": %.1f, \"bad\": %lu, "
           "\"distinct_min\": %lu, \"skipped_max\": %lu}\n",
           ops, elapsed, ops / elapsed, p50, p99, bad, fewest, most_skipped);
    return bad ? 1 : 0;
}
