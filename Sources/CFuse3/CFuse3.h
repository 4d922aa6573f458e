#ifndef SCHEDFS_CFUSE3_H
#define SCHEDFS_CFUSE3_H

/* The libfuse API level schedfs is written against; it must precede the include. */
#define FUSE_USE_VERSION 35

#include <fuse_lowlevel.h>
#include <fuse_log.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>

#endif
