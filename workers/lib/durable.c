/*
 * durable.c — getting the bytes of the content store onto the disk before the
 * database says they exist. A file is registered (a committed row) only after its
 * data is fdatasync'ed and the directory entry that names it is fsync'ed: after a
 * power loss, a row never names a blob that is missing or short.
 *
 * Large files are written back as they arrive (wk_writeback starts the disk's work on
 * each completed window without waiting for it), so the final fdatasync waits for
 * the last window only, not for the whole file at once: the disk works while the
 * network delivers, as PostgreSQL's backend_flush_after does for the same reason.
 */
#define _GNU_SOURCE
#include "worker.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

void
wk_writeback(int fd, long long *started, long long written)
{
	if (fd < 0 || written - *started < WK_WRITEBACK_WINDOW)
		return;
	long long end = written - written % WK_WRITEBACK_WINDOW;
	/* a hint: when the file system cannot, the final fdatasync does it all */
	(void)sync_file_range(fd, *started, end - *started, SYNC_FILE_RANGE_WRITE);
	*started = end;
}

int
wk_fsync_dir(const char *path)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	int rc = fsync(fd);
	int saved = errno;
	close(fd);
	errno = saved;
	return rc;
}

int
wk_fsync_parent(const char *path)
{
	char dir[4096];
	const char *slash = strrchr(path, '/');
	size_t n = slash ? (size_t)(slash - path) : 0;
	if (n == 0)
		return wk_fsync_dir(slash ? "/" : ".");
	if (n >= sizeof dir)
	{
		errno = ENAMETOOLONG;
		return -1;
	}
	memcpy(dir, path, n);
	dir[n] = '\0';
	return wk_fsync_dir(dir);
}

int
wk_fdatasync_path(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	int rc = fdatasync(fd);
	int saved = errno;
	close(fd);
	errno = saved;
	return rc;
}
