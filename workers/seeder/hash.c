/*
 * hash.c — a torrent job's SHA-1 of every piece (OpenSSL), on cfg.threads threads:
 * each takes the next few pieces from a shared counter, preads them into its own
 * buffer and writes their hashes into the job's pieces array (disjoint slots, so no
 * lock). The last thread to finish wakes the loop through ev_async; cancel stops
 * them at the next piece (SIGTERM).
 *
 * A batch is hashed straight from the page cache through a read-only mapping (no
 * copy into a buffer: on a file already cached, as a just-published one is, the copy
 * costs a tenth of the time SHA-1 does); pread is the fallback when mapping fails. A
 * blob is never truncated (the content store is write-once and the size was checked
 * against the database), so the mapping cannot fault past the end.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/sha.h>

#include "seeder.h"

/* Pieces a thread takes at a time: few enough to balance, enough to read ahead. */
#define HASH_BATCH 4

typedef struct hash_run
{
	seeder *s;
	hash_job *job;
	int fd;
	atomic_llong next;
	atomic_int running;
	pthread_mutex_t lock; /* guards job->error */
} hash_run;

static void
fail(hash_run *r, const char *fmt, const char *what, int err)
{
	pthread_mutex_lock(&r->lock);
	if (!r->job->error[0])
		snprintf(r->job->error, sizeof r->job->error, fmt, what, strerror(err));
	pthread_mutex_unlock(&r->lock);
	atomic_store(&r->job->cancel, true);
}

static void
finish(hash_run *r)
{
	if (atomic_fetch_sub(&r->running, 1) == 1)
	{
		seeder *s = r->s;
		close(r->fd);
		pthread_mutex_destroy(&r->lock);
		free(r);
		ev_async_send(s->loop, &s->hash_done);
	}
}

static void *
hash_thread(void *arg)
{
	hash_run *r = arg;
	hash_job *job = r->job;
	size_t pl = (size_t)job->piece_length;
	uint8_t *buf = malloc(pl);

	if (!buf)
	{
		fail(r, "%s: %s", "no memory for a piece buffer", ENOMEM);
		finish(r);
		return NULL;
	}
	for (;;)
	{
		long long first = atomic_fetch_add(&r->next, HASH_BATCH);
		if (first >= job->piece_count || atomic_load(&job->cancel))
			break;
		long long last = first + HASH_BATCH < job->piece_count ? first + HASH_BATCH : job->piece_count;
		off_t from = (off_t)(first * job->piece_length); /* a multiple of the page size */
		size_t span = (size_t)((last * job->piece_length < job->size ? last * job->piece_length : job->size) - from);
		void *map = mmap(NULL, span, PROT_READ, MAP_SHARED | MAP_POPULATE, r->fd, from);
		if (map != MAP_FAILED)
		{
			for (long long i = first; i < last; i++)
			{
				size_t at = (size_t)((i - first) * job->piece_length);
				size_t want = span - at < pl ? span - at : pl;
				SHA1((const uint8_t *)map + at, want, job->pieces + i * 20);
			}
			munmap(map, span);
			continue;
		}
		for (long long i = first; i < last; i++)
		{
			off_t off = (off_t)(i * job->piece_length);
			size_t want = (size_t)(job->size - off < (long long)pl ? job->size - off : (long long)pl);
			size_t got = 0;
			while (got < want)
			{
				ssize_t k = pread(r->fd, buf + got, want - got, off + (off_t)got);
				if (k < 0 && errno == EINTR)
					continue;
				if (k <= 0)
				{
					fail(r, "reading the blob %s: %s", job->sha256, k < 0 ? errno : EIO);
					goto out;
				}
				got += (size_t)k;
			}
			SHA1(buf, want, job->pieces + i * 20);
		}
	}
out:
	free(buf);
	finish(r);
	return NULL;
}

void
hash_start(seeder *s, hash_job *job)
{
	char path[2048];
	struct stat st;
	hash_run *r;
	long n = s->cfg.threads;

	job->started = ev_time();
	job->piece_count = job->size > 0 ? (job->size + job->piece_length - 1) / job->piece_length : 0;
	job->pieces = malloc(job->piece_count > 0 ? (size_t)job->piece_count * 20 : 1);
	if (!job->pieces)
		abort();
	snprintf(path, sizeof path, "%s/blobs/%.2s/%s", s->cfg.store_dir, job->sha256, job->sha256);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) != 0 || st.st_size != job->size)
	{
		if (fd < 0)
			snprintf(job->error, sizeof job->error, "opening the blob %.64s: %s", job->sha256, strerror(errno));
		else
			snprintf(job->error, sizeof job->error, "the blob %.64s has %lld bytes, the database says %lld",
			         job->sha256, (long long)st.st_size, job->size);
		if (fd >= 0)
			close(fd);
		ev_async_send(s->loop, &s->hash_done);
		return;
	}
	posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
	if (n > job->piece_count)
		n = job->piece_count > 0 ? job->piece_count : 1;
	r = calloc(1, sizeof *r);
	if (!r)
		abort();
	r->s = s;
	r->job = job;
	r->fd = fd;
	pthread_mutex_init(&r->lock, NULL);
	atomic_init(&r->next, 0);
	/* The starter holds one count until every thread is started, so the last one
	 * out (a thread or the starter) is the one that cleans up and wakes the loop. */
	atomic_init(&r->running, 1);
	for (long i = 0; i < n; i++)
	{
		pthread_t th;
		pthread_attr_t attr;
		pthread_attr_init(&attr);
		pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		atomic_fetch_add(&r->running, 1);
		if (pthread_create(&th, &attr, hash_thread, r) != 0)
		{
			atomic_fetch_sub(&r->running, 1);
			if (i == 0)
				fail(r, "%s: %s", "could not start a hashing thread", EAGAIN);
			pthread_attr_destroy(&attr);
			break;
		}
		pthread_attr_destroy(&attr);
	}
	finish(r);
}

void
hash_job_free(hash_job *job)
{
	if (!job)
		return;
	free(job->pieces);
	free(job);
}
