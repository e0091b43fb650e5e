/* An LD_PRELOAD shim for tests/test_faults.py: makes chosen file calls fail on one file.
 *
 *   FAULT_PATH   the failing file: any fd whose /proc/self/fd link ends with this text
 *   FAULT_OPS    which calls fail there, comma-separated: write, fsync, fdatasync, ftruncate
 *   FAULT_ERRNO  the errno they fail with (a number, e.g. 5 for EIO, 28 for ENOSPC)
 *
 * Every other call goes to libc unchanged.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

static int should_fail(int fd, const char *op) {
    const char *ops = getenv("FAULT_OPS"), *wanted = getenv("FAULT_PATH");
    char list[256], link[64], path[4096];
    if (!ops || !wanted || !*wanted) return 0;
    snprintf(list, sizeof list, ",%s,", ops);
    char token[32];
    snprintf(token, sizeof token, ",%s,", op);
    if (!strstr(list, token)) return 0;
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    if (n < 0) return 0;
    path[n] = '\0';
    size_t len = strlen(wanted);
    if ((size_t)n < len || strcmp(path + n - len, wanted) != 0) return 0;
    const char *code = getenv("FAULT_ERRNO");
    errno = code ? atoi(code) : EIO;
    return 1;
}

#define REAL(name, type) ((type)dlsym(RTLD_NEXT, name))

ssize_t write(int fd, const void *buf, size_t count) {
    if (should_fail(fd, "write")) return -1;
    return REAL("write", ssize_t (*)(int, const void *, size_t))(fd, buf, count);
}

int fsync(int fd) {
    if (should_fail(fd, "fsync")) return -1;
    return REAL("fsync", int (*)(int))(fd);
}

int fdatasync(int fd) {
    if (should_fail(fd, "fdatasync")) return -1;
    return REAL("fdatasync", int (*)(int))(fd);
}

int ftruncate(int fd, off_t length) {
    if (should_fail(fd, "ftruncate")) return -1;
    return REAL("ftruncate", int (*)(int, off_t))(fd, length);
}

int ftruncate64(int fd, off_t length) {
    if (should_fail(fd, "ftruncate")) return -1;
    return REAL("ftruncate64", int (*)(int, off_t))(fd, length);
}
