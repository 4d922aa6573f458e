#ifndef SCHEDFS_CLINUX_H
#define SCHEDFS_CLINUX_H

/* Linux interfaces that Swift's Glibc module does not import. */
#include <sys/timerfd.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/prctl.h>
#include <sys/xattr.h>
#include <sys/inotify.h>
#include <sys/epoll.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Names the calling thread (at most 15 bytes); prctl is variadic, so Swift cannot call it. */
static inline int clinux_set_thread_name(const char *name) {
    return prctl(PR_SET_NAME, (unsigned long)name, 0UL, 0UL, 0UL);
}

/* An anonymous memory file, closed on exec (memfd_create(name, MFD_CLOEXEC)); glibc declares
 * memfd_create only under _GNU_SOURCE, which Swift's Glibc module is not built with. */
static inline int clinux_memfd_cloexec(const char *name) {
    return (int)syscall(SYS_memfd_create, name, 1u /* MFD_CLOEXEC */);
}

#endif
