/*
 * ThreadSanitizer annotations for Swift's Synchronization.Mutex on Linux, linked into the
 * binaries of `make test-tsan` only.
 *
 * Why: on Linux, Mutex is a priority-inheriting futex. Its fast paths are atomic
 * compare-exchanges compiled into our own (instrumented) code, which TSan understands. Its slow
 * paths, taken only under contention, live in libswiftSynchronization.so, which is not
 * instrumented, and there the kernel hands the lock from the unlocking thread to a waiter
 * (FUTEX_UNLOCK_PI / FUTEX_LOCK_PI) without any atomic in user space. TSan then sees no
 * happens-before edge between the two critical sections and reports every contended Mutex as
 * a data race, hiding any real one among them.
 *
 * How: these definitions take the place of the library's slow-path entry points in every
 * binary they are linked into (the instrumented fast paths call them directly), call the
 * library's own through dlsym(RTLD_NEXT), and tell TSan that the lock was acquired after the
 * slow lock returns and released before the slow unlock starts. Nothing else changes: the
 * lock is the library's. They are Swift methods of `_MutexHandle`, whose `self` (the address
 * of the futex word) comes in the Swift self register, hence `swiftcall` and `swift_context`.
 */
#include <dlfcn.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

void __tsan_acquire(void *address);
void __tsan_release(void *address);

#define SWIFTCALL __attribute__((swiftcall))
#define SELF __attribute__((swift_context))

typedef SWIFTCALL void (*LockSlow)(uint32_t thread, void *SELF handle);
typedef SWIFTCALL bool (*TryLockSlow)(void *SELF handle);
typedef SWIFTCALL void (*UnlockSlow)(void *SELF handle);

/* The library's definition of `name`, looked up once into `cache`. This file is not
 * instrumented, so TSan sees neither the cache nor its atomics. */
static void *library(void **cache, const char *name) {
    void *found = __atomic_load_n(cache, __ATOMIC_ACQUIRE);
    if (found != NULL) return found;
    found = dlsym(RTLD_NEXT, name);
    if (found == NULL) {
        fprintf(stderr, "MutexAnnotations: %s not found: %s\n", name, dlerror());
        abort();
    }
    __atomic_store_n(cache, found, __ATOMIC_RELEASE);
    return found;
}

SWIFTCALL void lockSlow(uint32_t thread, void *SELF handle)
    __asm__("$s15Synchronization12_MutexHandleV9_lockSlowyys6UInt32VF");
SWIFTCALL void lockSlow(uint32_t thread, void *SELF handle) {
    static void *cached;
    LockSlow original = (LockSlow)library(&cached, "$s15Synchronization12_MutexHandleV9_lockSlowyys6UInt32VF");
    original(thread, handle);
    __tsan_acquire(handle);
}

SWIFTCALL bool tryLockSlow(void *SELF handle) __asm__("$s15Synchronization12_MutexHandleV12_tryLockSlowSbyF");
SWIFTCALL bool tryLockSlow(void *SELF handle) {
    static void *cached;
    TryLockSlow original = (TryLockSlow)library(&cached, "$s15Synchronization12_MutexHandleV12_tryLockSlowSbyF");
    bool locked = original(handle);
    if (locked) __tsan_acquire(handle);
    return locked;
}

SWIFTCALL void unlockSlow(void *SELF handle) __asm__("$s15Synchronization12_MutexHandleV11_unlockSlowyyF");
SWIFTCALL void unlockSlow(void *SELF handle) {
    static void *cached;
    UnlockSlow original = (UnlockSlow)library(&cached, "$s15Synchronization12_MutexHandleV11_unlockSlowyyF");
    __tsan_release(handle);
    original(handle);
}
