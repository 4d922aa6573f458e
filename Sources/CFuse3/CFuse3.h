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
#include <unistd.h>

/* The kernel's handle of a polled file (fuse_poll_in.kh), which tells apart the opens of one
 * file where the kernel opens files itself and every fh is 0. libfuse has no call that returns
 * it, but keeps it in the first field of its private struct fuse_pollhandle
 * (lib/fuse_lowlevel.c: { uint64_t kh; struct fuse_session *se; }; in libfuse 2 it was
 * { kh, ch, f }), which is what this reads. */
static inline uint64_t cfuse3_pollhandle_kh(struct fuse_pollhandle *ph) {
    return *(const uint64_t *)ph;
}

/* Notifications that a server writes to /dev/fuse itself: libfuse 3.14 has no call for the
 * first, and the second needs a handle that a server which took over the connection never
 * got. A notification is a fuse_out_header with unique 0 and the notify code in `error`
 * (include/uapi/linux/fuse.h), followed by its argument. */
struct cfuse3_out_header { uint32_t len; int32_t error; uint64_t unique; };

/* FUSE_NOTIFY_RESEND (7, kernel 6.9 and later): the kernel sends again every request that was
 * read from the connection and not answered. Returns 0, or -errno (EINVAL on older kernels). */
static inline int cfuse3_notify_resend(int fd) {
    struct cfuse3_out_header header = { sizeof header, 7, 0 };
    return write(fd, &header, sizeof header) == (ssize_t)sizeof header ? 0 : -errno;
}

/* FUSE_NOTIFY_POLL (1): wakes the pollers of the file whose kernel handle is `kh`; a handle the
 * kernel no longer polls is ignored. Returns 0, or -errno. */
static inline int cfuse3_notify_poll(int fd, uint64_t kh) {
    struct { struct cfuse3_out_header header; uint64_t kh; } message = { { sizeof message, 1, 0 }, kh };
    return write(fd, &message, sizeof message) == (ssize_t)sizeof message ? 0 : -errno;
}

/* Feeds libfuse's session a request read elsewhere (the kernel's INIT, which it sends once per
 * connection, to a server that takes the connection over). */
static inline void cfuse3_process_request(struct fuse_session *se, const void *bytes, size_t size) {
    struct fuse_buf buffer = { .size = size, .flags = 0, .mem = (void *)bytes, .fd = -1, .pos = 0 };
    fuse_session_process_buf(se, &buffer);
}

#endif
