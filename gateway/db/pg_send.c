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
 * Safety, enforced rather than assumed:
 *  - only for the libpq versions it was tested with (TESTED_LIBPQ_*: how libpq
 *    15 writes, one send() per flush, through pqsecure_raw_write); with another
 *    libpq it stays off and says so once;
 *  - an entry remembers its PGconn, and every send() and every write of held
 *    bytes first checks that PQsocket(conn) is still that descriptor. libpq
 *    closes a socket by itself (EOF, a failed read) before the pool hears of it;
 *    the number may then be reused by another socket (an accepted client), and a
 *    stale entry must neither take that socket's bytes nor write the lost
 *    connection's held bytes to it: it is dropped instead. The pool still
 *    releases an entry before PQfinish (pool.c pconn_down), so the PGconn an
 *    entry names is never freed under it.
 * One gateway process is single-threaded: no locking. */
#include "pg_send.h"

#include <errno.h>
#include <ev.h>
#include <libpq-fe.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "settings.h"
#include "worker.h"

#define HIGH_WATER (64 * 1024)
/* PQlibVersion() of the libpq releases this was tested with: 15.x (Debian 12) */
#define TESTED_LIBPQ_MIN 150000
#define TESTED_LIBPQ_END 160000

typedef struct held
{
	int fd;
	PGconn *conn; /* the connection whose socket fd was when registered */
	int err;      /* errno of a failed write, reported by the next send() */
	int queued;   /* in the list the prepare watcher flushes */
	char *data;
	size_t off, len, cap; /* bytes [off, len) wait to be written */
	ev_io writable;       /* active while the socket refused the rest */
} held;

static int enabled;
static unsigned long long held_sends; /* send() calls held, written later together */
static held **by_fd; /* registered sockets, indexed by descriptor */
static int nfd;
static int *pending; /* descriptors with bytes held since the last flush */
static int npending, pending_cap;
static ev_prepare flusher;

/* Whether h's descriptor is still its connection's socket. */
static int
owned(const held *h)
{
	return PQsocket(h->conn) == h->fd;
}

/* Forgets h: what it holds is dropped (it belonged to a lost connection). */
static void
drop(held *h)
{
	ev_io_stop(gw_loop, &h->writable);
	by_fd[h->fd] = NULL;
	free(h->data);
	free(h);
}

/* Writes what h holds, as far as the socket takes it without blocking. Returns
 * -1 when h was stale and has been dropped. */
static int
flush_held(held *h)
{
	if (!owned(h))
	{
		drop(h);
		return -1;
	}
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
			return 0;
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
	return 0;
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
	if (h && !owned(h))
	{
		drop(h); /* the descriptor is another socket's now */
		h = NULL;
	}
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
		flush_held(h); /* owned: checked above */
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
	held_sends++;
	return (ssize_t)len;
}

void
gw_pgsend_init(void)
{
	const char *v = getenv("PGPOD_GATEWAY_COALESCE");
	enabled = !(v && !strcmp(v, "0"));
	if (!enabled)
		return;
	int version = PQlibVersion();
	if (version < TESTED_LIBPQ_MIN || version >= TESTED_LIBPQ_END)
	{
		enabled = 0;
		wk_log(WK_WARN, "write coalescing is off: libpq %d is not a version it was tested with "
		       "(%d to %d)", version, TESTED_LIBPQ_MIN, TESTED_LIBPQ_END - 1);
		return;
	}
	ev_prepare_init(&flusher, on_prepare);
	/* after every other prepare watcher (the pool's PQflush among them) */
	ev_set_priority(&flusher, EV_MINPRI);
	ev_prepare_start(gw_loop, &flusher);
	ev_unref(gw_loop); /* it alone does not keep the loop running */
}

int
gw_pgsend_enabled(void)
{
	return enabled;
}

unsigned long long
gw_pgsend_held_sends(void)
{
	return held_sends;
}

void
gw_pgsend_register(PGconn *conn)
{
	int fd = conn ? PQsocket(conn) : -1;
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
	h->conn = conn;
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
	if (flush && !h->err && flush_held(h))
		return; /* stale: dropped */
	drop(h);
}
