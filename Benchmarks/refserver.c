/*
 * refserver: the reference for `make bench` — a minimal libfuse low-level server in C that
 * serves one file, sched, with the same text as schedfs, a count that a timer thread bumps
 * at 100 Hz, and direct_io with one snapshot per open, as LXCFS serves /proc.
 *
 *   refserver MOUNTPOINT      (foreground; stop it with fusermount3 -u MOUNTPOINT)
 */
#define FUSE_USE_VERSION 35
#include <fuse_lowlevel.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static atomic_ulong calls;

static void *ticker(void *unused) {
    (void)unused;
    struct timespec next;
    clock_gettime(CLOCK_MONOTONIC, &next);
    for (;;) {
        next.tv_nsec += 10000000;
        if (next.tv_nsec >= 1000000000) { next.tv_nsec -= 1000000000; next.tv_sec++; }
        clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL);
        atomic_fetch_add(&calls, 1);
    }
    return NULL;
}

static int text(char *buffer, size_t size) {
    return snprintf(buffer, size, "Timer was called %lu times so far\n", atomic_load(&calls));
}

static void attributes(fuse_ino_t ino, struct stat *st) {
    char buffer[64];
    memset(st, 0, sizeof *st);
    st->st_ino = ino;
    if (ino == 1) {
        st->st_mode = S_IFDIR | 0555;
        st->st_nlink = 2;
    } else {
        st->st_mode = S_IFREG | 0444;
        st->st_nlink = 1;
        st->st_size = text(buffer, sizeof buffer);
    }
}

static void ref_lookup(fuse_req_t req, fuse_ino_t parent, const char *name) {
    struct fuse_entry_param e;
    if (parent != 1 || strcmp(name, "sched") != 0) { fuse_reply_err(req, ENOENT); return; }
    memset(&e, 0, sizeof e);
    e.ino = 2;
    e.entry_timeout = 1.0;
    attributes(2, &e.attr);
    fuse_reply_entry(req, &e);
}

static void ref_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
    struct stat st;
    (void)fi;
    if (ino != 1 && ino != 2) { fuse_reply_err(req, ENOENT); return; }
    attributes(ino, &st);
    fuse_reply_attr(req, &st, 0);
}

static void ref_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
    if (ino != 2) { fuse_reply_err(req, EISDIR); return; }
    if ((fi->flags & O_ACCMODE) != O_RDONLY) { fuse_reply_err(req, EACCES); return; }
    char *snapshot = malloc(64);
    text(snapshot, 64);
    fi->fh = (uint64_t)(uintptr_t)snapshot;
    fi->direct_io = 1;
    fuse_reply_open(req, fi);
}

static void ref_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi) {
    const char *snapshot = (const char *)(uintptr_t)fi->fh;
    size_t length = strlen(snapshot);
    (void)ino;
    if ((size_t)off >= length) { fuse_reply_buf(req, NULL, 0); return; }
    fuse_reply_buf(req, snapshot + off, size < length - off ? size : length - off);
}

static void ref_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
    (void)ino;
    free((void *)(uintptr_t)fi->fh);
    fuse_reply_err(req, 0);
}

static const struct fuse_lowlevel_ops operations = {
    .lookup = ref_lookup, .getattr = ref_getattr, .open = ref_open, .read = ref_read, .release = ref_release,
};

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: refserver MOUNTPOINT\n"); return 2; }
    struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
    fuse_opt_add_arg(&args, argv[0]);
    fuse_opt_add_arg(&args, "-o");
    fuse_opt_add_arg(&args, "fsname=refserver,subtype=refserver");
    struct fuse_session *se = fuse_session_new(&args, &operations, sizeof operations, NULL);
    if (!se || fuse_set_signal_handlers(se) != 0 || fuse_session_mount(se, argv[1]) != 0) return 1;
    pthread_t tick;
    pthread_create(&tick, NULL, ticker, NULL);
    struct fuse_loop_config *config = fuse_loop_cfg_create();
    int result = fuse_session_loop_mt(se, config);
    fuse_loop_cfg_destroy(config);
    fuse_session_unmount(se);
    fuse_remove_signal_handlers(se);
    fuse_session_destroy(se);
    return result ? 1 : 0;
}
