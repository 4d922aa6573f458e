#define _GNU_SOURCE
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "CTestSupport.h"

int ctestsupport_file_handle(const char *path, unsigned char *bytes, unsigned int capacity, int *type) {
    struct file_handle *handle = malloc(sizeof(struct file_handle) + capacity);
    if (handle == NULL) return -1;
    handle->handle_bytes = capacity;
    int mount_id;
    int result = -1;
    if (name_to_handle_at(AT_FDCWD, path, handle, &mount_id, 0) == 0) {
        memcpy(bytes, handle->f_handle, handle->handle_bytes);
        *type = handle->handle_type;
        result = (int)handle->handle_bytes;
    }
    free(handle);
    return result;
}

int ctestsupport_thread_id(void) {
    return (int)syscall(SYS_gettid);
}
