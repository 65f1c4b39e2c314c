/*
 * udp.c — the UDP tracker protocol (BEP 15): connect, announce, scrape and error
 * packets on the tracker's port. Connection ids are a SipHash MAC of the client's
 * address and a two-minute window (the current or the previous one is accepted), so
 * nothing is remembered per client and a forged id is refused. Not of its port:
 * libtorrent shares one connection id between the sessions of a process.
 */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "tracker.h"

#define UDP_WINDOW 120
#define SCRAPE_MAX 74

static ev_io udp_io;
static uint8_t mac_key[16];

void
tk_udp_init_key(void)
{
	if (RAND_bytes(mac_key, sizeof(mac_key)) != 1)
	{
		wk_log(WK_ERROR, "RAND_bytes failed");
		abort();
	}
}

static uint64_t
connection_id(const tk_addr *a, uint64_t window)
{
	uint8_t msg[32];

	memcpy(msg, a->ip, 16);
	msg[16] = a->family;
	memcpy(msg + 17, &window, 8);
	return tk_siphash(mac_key, msg, 25);
}

static uint32_t
get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t
get64(const uint8_t *p)
{
	return (uint64_t)get32(p) << 32 | get32(p + 4);
}

static void
put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static void
put64(uint8_t *p, uint64_t v)
{
	put32(p, (uint32_t)(v >> 32));
	put32(p + 4, (uint32_t)v);
}

static void
reply(int fd, const struct sockaddr_storage *to, socklen_t tolen, const uint8_t *buf, size_t len)
{
	if (sendto(fd, buf, len, MSG_DONTWAIT, (const struct sockaddr *)to, tolen) < 0 &&
	    errno != EAGAIN && errno != EWOULDBLOCK)
		wk_log(WK_DEBUG, "udp sendto: %s", strerror(errno));
}

static size_t
error_packet(uint8_t *out, const uint8_t *tid, const tk_addr *a, const char *msg)
{
	size_t len = strlen(msg);

	tk_failure(a, "UDP", msg);
	put32(out, 3);
	memcpy(out + 4, tid, 4);
	memcpy(out + 8, msg, len);
	return 8 + len;
}

/* One packet in; the answer (if any) in out. Returns its length, 0 for none. */
static size_t
handle(const uint8_t *in, size_t len, tk_addr *a, uint8_t *out, size_t outmax)
{
	uint64_t now = (uint64_t)ev_now(tk_loop) / UDP_WINDOW, cid;
	uint32_t action;

	if (len < 16)
		return 0; /* not BEP 15: garbage gets no answer at all */
	cid = get64(in);
	action = get32(in + 8);
	if (action == 0)
	{
		if (cid != 0x41727101980ULL)
			return 0;
		put32(out, 0);
		memcpy(out + 4, in + 12, 4);
		put64(out + 8, connection_id(a, now));
		return 16;
	}
	if (cid != connection_id(a, now) && cid != connection_id(a, now - 1))
		return action <= 2 ? error_packet(out, in + 12, a, "invalid or expired connection id") : 0;
	if (!tk_rate_ok(a))
		return error_packet(out, in + 12, a, tk_slow_down);
	if (action == 1)
	{
		tk_announce ann;
		tk_swarm *s;
		tk_peer *peers[256];
		size_t n, each = a->family == 4 ? 6 : 18, o = 20;
		int32_t numwant;
		uint32_t ev;
		const char *err;

		tk_count.udp_announces++;
		if (len < 98)
			return error_packet(out, in + 12, a, "announce packet too short");
		memset(&ann, 0, sizeof(ann));
		memcpy(ann.hash, in + 16, 20);
		memcpy(ann.peer_id, in + 36, 20);
		ann.left = get64(in + 64);
		ann.left_known = true;
		ev = get32(in + 80);
		if (ev > 3)
			return error_packet(out, in + 12, a, "invalid event");
		ann.event = ev == 1 ? TK_EV_COMPLETED : ev == 2 ? TK_EV_STARTED : ev == 3 ? TK_EV_STOPPED : TK_EV_NONE;
		numwant = (int32_t)get32(in + 92);
		ann.numwant = numwant < 0 ? 50 : numwant > tk_cfg.numwant_max ? (int)tk_cfg.numwant_max : numwant;
		if ((size_t)ann.numwant > (outmax - 20) / each)
			ann.numwant = (int)((outmax - 20) / each);
		ann.addr = *a;
		memcpy(&ann.addr.port, in + 96, 2);
		err = tk_net_announce(&ann, &s, peers, &n);
		if (err)
			return error_packet(out, in + 12, a, err);
		put32(out, 1);
		memcpy(out + 4, in + 12, 4);
		put32(out + 8, (uint32_t)tk_cfg.interval);
		put32(out + 12, s->npeers - s->seeders);
		put32(out + 16, s->seeders);
		/* An IPv4 socket's client gets IPv4 peers, an IPv6 one IPv6 peers (BEP 15). */
		for (size_t i = 0; i < n; i++)
		{
			if (peers[i]->addr.family != a->family)
				continue;
			memcpy(out + o, peers[i]->addr.ip, each - 2);
			memcpy(out + o + each - 2, &peers[i]->addr.port, 2);
			o += each;
		}
		return o;
	}
	if (action == 2)
	{
		size_t nh = (len - 16) / 20, o = 8;

		tk_count.udp_scrapes++;
		if (nh == 0 || nh > SCRAPE_MAX)
			return error_packet(out, in + 12, a, "scrape needs 1 to 74 info hashes");
		if (!tk_ready)
			return error_packet(out, in + 12, a, "the tracker is starting; try again shortly");
		put32(out, 2);
		memcpy(out + 4, in + 12, 4);
		for (size_t i = 0; i < nh; i++)
		{
			tk_swarm *s = tk_swarm_find(in + 16 + 20 * i);

			/* Unknown ones answer zeros: the reply's order is the request's. */
			put32(out + o, s ? s->seeders : 0);
			put32(out + o + 4, s ? (uint32_t)s->completed : 0);
			put32(out + o + 8, s ? s->npeers - s->seeders : 0);
			o += 12;
		}
		return o;
	}
	return error_packet(out, in + 12, a, "unknown action");
}

static void
udp_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	uint8_t in[2048], out[2048];

	(void)loop;
	(void)revents;
	for (int i = 0; i < 256; i++)
	{
		struct sockaddr_storage from;
		socklen_t fl = sizeof(from);
		ssize_t n = recvfrom(w->fd, in, sizeof(in), MSG_DONTWAIT, (struct sockaddr *)&from, &fl);
		tk_addr a;
		size_t r;

		if (n < 0)
			return;
		tk_addr_from_sockaddr(&a, &from);
		r = handle(in, (size_t)n, &a, out, sizeof(out));
		if (r)
			reply(w->fd, &from, fl, out, r);
	}
}

void
tk_udp_listen(int fd)
{
	ev_io_init(&udp_io, udp_cb, fd, EV_READ);
	ev_io_start(tk_loop, &udp_io);
}

void
tk_udp_stop(void)
{
	if (ev_is_active(&udp_io))
	{
		ev_io_stop(tk_loop, &udp_io);
		close(udp_io.fd);
	}
}
