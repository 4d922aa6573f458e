#ifndef SCHEDFS_CTESTSUPPORT_H
#define SCHEDFS_CTESTSUPPORT_H

/* What the tests ask of Linux that Swift's Glibc module does not import. */

/* The file handle the kernel gives for `path` (name_to_handle_at(2), which glibc declares only
 * under _GNU_SOURCE): its bytes into `bytes` (at most `capacity`), its type into `type`.
 * Returns the number of bytes, or -1 with errno set. */
int ctestsupport_file_handle(const char *path, unsigned char *bytes, unsigned int capacity, int *type);

/* The calling thread's id, as the kernel names it in a FUSE request (gettid(2)). */
int ctestsupport_thread_id(void);

#endif
