#ifndef SCHEDFS_CFUSE3_H
#define SCHEDFS_CFUSE3_H

/* The libfuse API level schedfs is written against; it must precede the include. */
#define FUSE_USE_VERSION 35

#include <fuse_lowlevel.h>
#include <fuse_log.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <sys/stat.h>

/* The kernel's handle of a polled file (fuse_poll_in.kh), which tells apart the opens of one
 * file where the kernel opens files itself and every fh is 0. libfuse has no call that returns
 * it, but keeps it in the first field of its private struct fuse_pollhandle
 * (lib/fuse_lowlevel.c: { uint64_t kh; struct fuse_session *se; }; in libfuse 2 it was
 * { kh, ch, f }), which is what this reads. */
static inline uint64_t cfuse3_pollhandle_kh(struct fuse_pollhandle *ph) {
    return *(const uint64_t *)ph;
}

#endif
