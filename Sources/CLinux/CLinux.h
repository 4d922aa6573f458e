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

/* The file handle the kernel gives for `path` (name_to_handle_at(2), which glibc declares only
 * under _GNU_SOURCE): its bytes into `bytes` (at most `capacity`), its type into `type`.
 * Returns the number of bytes, or -1 with errno set. */
static inline int clinux_file_handle(const char *path, unsigned char *bytes, unsigned int capacity, int *type) {
    struct { unsigned int handle_bytes; int handle_type; unsigned char f_handle[128]; } handle;
    int mount_id;
    handle.handle_bytes = capacity < 128 ? capacity : 128;
    if (syscall(SYS_name_to_handle_at, -100 /* AT_FDCWD */, path, &handle, &mount_id, 0) != 0) return -1;
    for (unsigned int i = 0; i < handle.handle_bytes; i++) bytes[i] = handle.f_handle[i];
    *type = handle.handle_type;
    return (int)handle.handle_bytes;
}

#endif
