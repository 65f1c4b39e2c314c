/* Coalesced writes to the pool's sockets (see pg_send.h), by interposition: this
 * file defines send(), so libpq's calls to send() bind to it (the executable's
 * definition comes first in the dynamic symbol lookup; under ASan it overrides
 * the weak interceptor). libpq 15's PQpipelineSync always flushes, which costs
 * one send() per transaction; here the bytes libpq sends on a registered socket
 * are appended to that socket's buffer and reported written, and a prepare
 * watcher of the lowest priority, always active, writes each buffer out in one
 * call before the loop polls: nothing is held while the loop blocks. Every other
 * socket (HTTP clients, the listener's connection) goes straight to sendto().
 * A failed write drops the buffer, shuts the socket down (the pool then sees
 * the connection fail and fails its jobs) and is reported by the next send() on
 * that socket, as libpq would see it without the buffer; EAGAIN keeps the rest for an
 * EV_WRITE watcher, and send() reports EAGAIN itself once HIGH_WATER bytes are
 * held, so libpq keeps the rest in its own buffer as it would without this.
 * The pool releases a socket before libpq closes it (pool.c pconn_down), so
 * held bytes never reach a descriptor number reused for another socket.
 * One gateway process is single-threaded: no locking. */
#include "pg_send.h"

#include <errno.h>
#include <ev.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "settings.h"
#include "worker.h"

#define HIGH_WATER (64 * 1024)

typedef struct held
{
	int fd;
	int err;      /* errno of a failed write, reported by the next send() */
	int queued;   /* in the list the prepare watcher flushes */
	char *data;
	size_t off, len, cap; /* bytes [off, len) wait to be written */
	ev_io writable;       /* active while the socket refused the rest */
} held;

static int enabled;
static held **by_fd; /* registered sockets, indexed by descriptor */
static int nfd;
static int *pending; /* descriptors with bytes held since the last flush */
static int npending, pending_cap;
static ev_prepare flusher;

/* Writes what h holds, as far as the socket takes it without blocking. */
static void
flush_held(held *h)
{
	while (h->off < h->len)
	{
		ssize_t n = sendto(h->fd, h->data + h->off, h->len - h->off, MSG_NOSIGNAL | MSG_DONTWAIT,
		                   NULL, 0);
		if (n > 0)
		{
			h->off += (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		{
			if (!ev_is_active(&h->writable))
				ev_io_start(gw_loop, &h->writable);
			return;
		}
		/* the held transactions are lost: shut the socket so that libpq sees the
		 * connection fail on its next read and the pool fails their jobs, rather
		 * than wait for answers to statements that never left */
		h->err = n < 0 ? errno : EPIPE;
		shutdown(h->fd, SHUT_RDWR);
		break;
	}
	h->off = h->len = 0;
	ev_io_stop(gw_loop, &h->writable);
}

static void
on_writable(struct ev_loop *loop, ev_io *w, int revents)
{
	(void)loop;
	(void)revents;
	flush_held(w->data);
}

/* Just before the loop polls: every socket written to in this iteration. */
static void
on_prepare(struct ev_loop *loop, ev_prepare *w, int revents)
{
	(void)loop;
	(void)w;
	(void)revents;
	for (int i = 0; i < npending; i++)
	{
		int fd = pending[i];
		held *h = fd < nfd ? by_fd[fd] : NULL;
		if (!h)
			continue; /* released since */
		h->queued = 0;
		if (!ev_is_active(&h->writable))
			flush_held(h);
	}
	npending = 0;
}

static int
hold(held *h, const void *buf, size_t len)
{
	if (h->off && h->len + len > h->cap)
	{
		memmove(h->data, h->data + h->off, h->len - h->off);
		h->len -= h->off;
		h->off = 0;
	}
	if (h->len + len > h->cap)
	{
		size_t cap = h->cap ? h->cap : 8192;
		while (cap < h->len + len)
			cap *= 2;
		char *d = realloc(h->data, cap);
		if (!d)
			return -1;
		h->data = d;
		h->cap = cap;
	}
	if (!h->queued)
	{
		if (npending == pending_cap)
		{
			int cap = pending_cap ? pending_cap * 2 : 64;
			int *p = realloc(pending, sizeof *p * (size_t)cap);
			if (!p)
				return -1;
			pending = p;
			pending_cap = cap;
		}
		pending[npending++] = h->fd;
		h->queued = 1;
	}
	memcpy(h->data + h->len, buf, len);
	h->len += len;
	return 0;
}

/* The interposed send(): see the top of the file. */
ssize_t
send(int fd, const void *buf, size_t len, int flags)
{
	held *h = fd >= 0 && fd < nfd ? by_fd[fd] : NULL;
	if (!h)
		return sendto(fd, buf, len, flags, NULL, 0);
	if (h->err)
	{
		errno = h->err;
		return -1;
	}
	if (h->len - h->off + len > HIGH_WATER || hold(h, buf, len))
	{
		/* much to write (or no memory to hold it): what is held goes first,
		 * then this one directly, never ahead of held bytes */
		flush_held(h);
		if (h->err)
		{
			errno = h->err;
			return -1;
		}
		if (h->len > h->off)
		{
			errno = EAGAIN;
			return -1;
		}
		return sendto(fd, buf, len, flags, NULL, 0);
	}
	return (ssize_t)len;
}

void
gw_pgsend_init(void)
{
	const char *v = getenv("PGPOD_GATEWAY_COALESCE");
	enabled = !(v && !strcmp(v, "0"));
	if (!enabled)
		return;
	ev_prepare_init(&flusher, on_prepare);
	/* after every other prepare watcher (the pool's PQflush among them) */
	ev_set_priority(&flusher, EV_MINPRI);
	ev_prepare_start(gw_loop, &flusher);
	ev_unref(gw_loop); /* it alone does not keep the loop running */
}

void
gw_pgsend_register(int fd)
{
	if (!enabled || fd < 0)
		return;
	if (fd >= nfd)
	{
		int n = fd + 64;
		held **b = realloc(by_fd, sizeof *b * (size_t)n);
		if (!b)
			return; /* unbuffered */
		memset(b + nfd, 0, sizeof *b * (size_t)(n - nfd));
		by_fd = b;
		nfd = n;
	}
	if (by_fd[fd])
		gw_pgsend_release(fd, 0);
	held *h = calloc(1, sizeof *h);
	if (!h)
		return;
	h->fd = fd;
	ev_io_init(&h->writable, on_writable, fd, EV_WRITE);
	h->writable.data = h;
	by_fd[fd] = h;
}

void
gw_pgsend_release(int fd, int flush)
{
	held *h = fd >= 0 && fd < nfd ? by_fd[fd] : NULL;
	if (!h)
		return;
	if (flush && !h->err)
		flush_held(h);
	ev_io_stop(gw_loop, &h->writable);
	by_fd[fd] = NULL;
	free(h->data);
	free(h);
}
