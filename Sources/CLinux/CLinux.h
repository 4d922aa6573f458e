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

/* 64-bit atomics on memory shared between processes (a MAP_SHARED memfd), which Swift's
 * Atomic cannot be placed in: sequentially consistent, lock-free on every 64-bit target. */
static inline unsigned long long clinux_shared_load(const unsigned long long *word) {
    return __atomic_load_n(word, __ATOMIC_SEQ_CST);
}
static inline void clinux_shared_store(unsigned long long *word, unsigned long long value) {
    __atomic_store_n(word, value, __ATOMIC_SEQ_CST);
}
static inline unsigned long long clinux_shared_add(unsigned long long *word, unsigned long long delta) {
    return __atomic_add_fetch(word, delta, __ATOMIC_SEQ_CST);
}
static inline int clinux_shared_claim(unsigned long long *word, unsigned long long expected, unsigned long long value) {
    return __atomic_compare_exchange_n(word, &expected, value, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
}

/* A descriptor that becomes readable when process `pid` exits (pidfd_open, Linux 5.3). */
static inline int clinux_pidfd_open(int pid) {
    return (int)syscall(SYS_pidfd_open, pid, 0u);
}

/* Has the kernel send SIGKILL to the calling thread's process when its parent exits; prctl is
 * variadic, so Swift cannot call it. */
static inline int clinux_die_with_parent(void) {
    return prctl(PR_SET_PDEATHSIG, 9UL /* SIGKILL */, 0UL, 0UL, 0UL);
}

/* An anonymous memory file that an exec'd child inherits (memfd_create(name, 0)). */
static inline int clinux_memfd_inherited(const char *name) {
    return (int)syscall(SYS_memfd_create, name, 0u);
}

#endif
