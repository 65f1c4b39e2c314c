/*
 * peer.c — the BitTorrent peer wire (BEP 3) as a seed: handshake, bitfield,
 * choke/unchoke, interested, request/piece served from the blob with sendfile, cancel,
 * keep-alive; the extension protocol (BEP 10) with ut_metadata (BEP 9), so that a
 * client holding only a magnet link gets the info dictionary from us. Peers and each
 * peer's request queue are bounded; a peer that breaks the protocol (garbage, a
 * request beyond the file, an oversized message) is disconnected with a log line and
 * nothing else changes. One peer = one non-blocking socket on the loop.
 *
 * A connection starts with the plain BitTorrent handshake or with an encrypted one
 * (MSE, mse.c; aria2c and libtorrent try that first). Where the peer offers plaintext
 * after it, plaintext is selected and everything goes on as for a plain handshake,
 * blocks still leaving by sendfile; where it offers only RC4, both directions are
 * RC4: what arrives is decrypted as it is read, what leaves is encrypted just before
 * it is sent, and blocks are read with pread into the output to be encrypted there.
 * A peer has PGPOD_SEEDER_HANDSHAKE_MS to complete its handshake(s).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "bencode.h"
#include "mse.h"
#include "seeder.h"

#define PROTOCOL "\x13" "BitTorrent protocol"
#define HANDSHAKE_LEN 68
#define MAX_MESSAGE (256 * 1024) /* longer messages are refused */
#define MAX_BLOCK (128 * 1024)   /* the largest request served (clients ask 16 KiB) */
#define METADATA_PIECE 16384     /* BEP 9 */
#define OUR_UT_METADATA 2        /* our extended message id for ut_metadata */

enum
{
	MSG_CHOKE = 0,
	MSG_UNCHOKE,
	MSG_INTERESTED,
	MSG_NOT_INTERESTED,
	MSG_HAVE,
	MSG_BITFIELD,
	MSG_REQUEST,
	MSG_PIECE,
	MSG_CANCEL,
	MSG_PORT,
	MSG_EXTENDED = 20
};

typedef struct block_req
{
	uint32_t index, begin, length;
} block_req;

struct peer
{
	seeder *s;
	peer *prev, *next;
	int fd;
	ev_io io;
	char addr[64];
	torrent *t;
	int blob_fd;
	bool handshaken;
	bool stream_ready;    /* plain handshake seen, or the encrypted one completed */
	mse_hs *mse;          /* an encrypted handshake under way */
	bool mse_named;       /* the encrypted handshake named mse_ih */
	uint8_t mse_ih[20];
	struct
	{
		rc4 in, out;
	} *crypt;             /* RC4 selected: decrypts what arrives, encrypts what leaves */
	size_t out_enc;       /* with crypt: output bytes encrypted so far */
	ev_timer hs_timer;    /* the handshake deadline */
	bool extensions;      /* the peer set the BEP 10 bit */
	bool choking;         /* we choke it */
	bool interested;
	int their_ut_metadata; /* the peer's id for ut_metadata, 0 = none */
	uint8_t *in;
	size_t in_len, in_cap;
	uint8_t *out;
	size_t out_len, out_off, out_cap;
	block_req *q; /* ring of queued requests */
	size_t q_head, q_len;
	off_t file_off;   /* the block being sent with sendfile: its place in the blob, */
	size_t file_left; /* what is left of it, */
	size_t file_at;   /* and where in the output it goes (messages queued after it wait) */
	double last_rx, last_tx;
};

static void peer_io_cb(struct ev_loop *loop, ev_io *w, int revents);

static void
put_u32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static uint32_t
get_u32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void
peer_close(peer *p, const char *why)
{
	seeder *s = p->s;

	if (why)
		wk_log(WK_DEBUG, "peer %s: closed: %s", p->addr, why);
	ev_io_stop(s->loop, &p->io);
	ev_timer_stop(s->loop, &p->hs_timer);
	close(p->fd);
	if (p->blob_fd >= 0)
		close(p->blob_fd);
	if (p->prev)
		p->prev->next = p->next;
	else
		s->peers = p->next;
	if (p->next)
		p->next->prev = p->prev;
	s->npeers--;
	free(p->in);
	free(p->out);
	free(p->q);
	if (p->mse)
		OPENSSL_cleanse(p->mse, sizeof *p->mse);
	free(p->mse);
	free(p->crypt);
	free(p);
}

/* Room for n more bytes of output. The sent prefix is reclaimed only once it is at
 * least as long as what is still pending, so moving bytes costs O(1) per byte sent. */
static uint8_t *
out_reserve(peer *p, size_t n)
{
	if (p->out_off > 0 && p->out_off == p->out_len)
	{
		p->file_at -= p->file_left ? p->out_off : 0;
		p->out_off = p->out_len = p->out_enc = 0;
	}
	if (p->out_len + n > p->out_cap)
	{
		size_t pending = p->out_len - p->out_off;
		if (p->out_off > 0 && p->out_off >= pending && pending + n <= p->out_cap)
		{
			memmove(p->out, p->out + p->out_off, pending);
			p->file_at -= p->file_left ? p->out_off : 0;
			p->out_enc = p->out_enc > p->out_off ? p->out_enc - p->out_off : 0;
			p->out_len = pending;
			p->out_off = 0;
		}
		else
		{
			size_t cap = p->out_cap ? p->out_cap : 4096;
			while (cap < p->out_len + n)
				cap *= 2;
			p->out = realloc(p->out, cap);
			if (!p->out)
				abort();
			p->out_cap = cap;
		}
	}
	uint8_t *w = p->out + p->out_len;
	p->out_len += n;
	return w;
}

static void
send_msg(peer *p, uint8_t id, const void *payload, size_t n)
{
	uint8_t *w = out_reserve(p, 5 + n);
	put_u32(w, (uint32_t)(1 + n));
	w[4] = id;
	if (n)
		memcpy(w + 5, payload, n);
}

static void *
grow_realloc(void *old, size_t size)
{
	void *p = realloc(old, size);
	if (!p)
		abort();
	return p;
}

/* An extended message (BEP 10): id, a bencoded dictionary, optional trailing data. */
static void
send_extended(peer *p, uint8_t ext_id, const be_buf *dict, const uint8_t *tail, size_t tail_len)
{
	size_t n = 2 + dict->len + tail_len;
	uint8_t *w = out_reserve(p, 4 + n);
	put_u32(w, (uint32_t)n);
	w[4] = MSG_EXTENDED;
	w[5] = ext_id;
	memcpy(w + 6, dict->data, dict->len);
	if (tail_len)
		memcpy(w + 6 + dict->len, tail, tail_len);
}

static void
send_ext_handshake(peer *p)
{
	be_buf b = {NULL, 0, 0, grow_realloc};
	be_put_open_dict(&b);
	be_put_cstr(&b, "m");
	be_put_open_dict(&b);
	be_put_cstr(&b, "ut_metadata");
	be_put_int(&b, OUR_UT_METADATA);
	be_put_end(&b);
	be_put_cstr(&b, "metadata_size");
	be_put_int(&b, (long long)p->t->info_len);
	be_put_cstr(&b, "p");
	be_put_int(&b, p->s->cfg.peer_port);
	be_put_cstr(&b, "reqq");
	be_put_int(&b, p->s->cfg.max_requests);
	be_put_cstr(&b, "v");
	be_put_cstr(&b, "pgpod seeder");
	be_put_end(&b);
	send_extended(p, 0, &b, NULL, 0);
	free(b.data);
}

static void
send_bitfield(peer *p)
{
	size_t n = (size_t)((p->t->piece_count + 7) / 8);
	if (n == 0)
		return;
	uint8_t *w = out_reserve(p, 5 + n);
	put_u32(w, (uint32_t)(1 + n));
	w[4] = MSG_BITFIELD;
	memset(w + 5, 0xff, n);
	int spare = (int)(n * 8 - (size_t)p->t->piece_count);
	if (spare)
		w[5 + n - 1] = (uint8_t)(0xff << spare); /* spare bits must be zero */
}

/* Writes what is pending; false when the peer is gone (closed here). Protocol
 * messages go through the output buffer; a piece message is its 13-byte header
 * (sent with MSG_MORE) then the block straight from the blob with sendfile, so block
 * data is never copied through this process. Messages queued while a block is on
 * its way wait behind it (file_at), which keeps the bytes in order. */
static bool
flush(peer *p)
{
	seeder *s = p->s;
	bool blocked = false;
	while (!blocked)
	{
		if (p->crypt && p->out_enc < p->out_len)
		{
			rc4_crypt(&p->crypt->out, p->out + p->out_enc, p->out_len - p->out_enc);
			p->out_enc = p->out_len;
		}
		size_t limit = p->file_left ? p->file_at : p->out_len;
		if (p->out_off < limit)
		{
			ssize_t k = send(p->fd, p->out + p->out_off, limit - p->out_off,
			                 MSG_NOSIGNAL | (p->file_left ? MSG_MORE : 0));
			if (k < 0)
			{
				if (errno == EINTR)
					continue;
				if (errno == EAGAIN || errno == EWOULDBLOCK)
				{
					blocked = true;
					break;
				}
				peer_close(p, strerror(errno));
				return false;
			}
			p->out_off += (size_t)k;
			p->last_tx = seeder_now(s);
			continue;
		}
		if (p->file_left > 0)
		{
			ssize_t k = sendfile(p->fd, p->blob_fd, &p->file_off, p->file_left);
			if (k < 0)
			{
				if (errno == EINTR)
					continue;
				if (errno == EAGAIN || errno == EWOULDBLOCK)
				{
					blocked = true;
					break;
				}
				wk_log(WK_ERROR, "peer %s: sending blob %s at %lld: %s", p->addr, p->t->sha256,
				       (long long)p->file_off, strerror(errno));
				peer_close(p, NULL);
				return false;
			}
			if (k == 0)
			{
				wk_log(WK_ERROR, "peer %s: blob %s is shorter than its torrent", p->addr, p->t->sha256);
				peer_close(p, NULL);
				return false;
			}
			p->file_left -= (size_t)k;
			p->last_tx = seeder_now(s);
			continue;
		}
		if (p->q_len == 0)
			break;
		block_req r = p->q[p->q_head];
		p->q_head = (p->q_head + 1) % (size_t)s->cfg.max_requests;
		p->q_len--;
		off_t at = (off_t)r.index * (off_t)p->t->piece_length + r.begin;
		uint8_t *w = out_reserve(p, 13 + (p->crypt ? r.length : 0));
		put_u32(w, 9 + r.length);
		w[4] = MSG_PIECE;
		put_u32(w + 5, r.index);
		put_u32(w + 9, r.begin);
		if (p->crypt)
		{
			/* RC4: the block is read into the output and encrypted there */
			ssize_t k = pread(p->blob_fd, w + 13, r.length, at);
			if (k != (ssize_t)r.length)
			{
				wk_log(WK_ERROR, "peer %s: reading blob %s at %lld: %s", p->addr, p->t->sha256, (long long)at,
				       k < 0 ? strerror(errno) : "shorter than its torrent");
				peer_close(p, NULL);
				return false;
			}
		}
		else
		{
			p->file_off = at;
			p->file_left = r.length;
			p->file_at = p->out_len;
		}
		s->served_blocks++;
		s->served_bytes += r.length;
	}
	int want = EV_READ | (blocked ? EV_WRITE : 0);
	if (wk_daemon_stopping())
		want &= ~EV_READ;
	if ((p->io.events & (EV_READ | EV_WRITE)) != want)
	{
		ev_io_stop(s->loop, &p->io);
		ev_io_set(&p->io, p->fd, want);
		if (want)
			ev_io_start(s->loop, &p->io);
	}
	return true;
}

/* The size of piece i. */
static long long
piece_size(const torrent *t, uint32_t i)
{
	long long off = (long long)i * t->piece_length;
	return t->size - off < t->piece_length ? t->size - off : t->piece_length;
}

static const char *
on_request(peer *p, const uint8_t *m, size_t n, bool cancel)
{
	if (n != 12)
		return "a request of the wrong length";
	block_req r = {get_u32(m), get_u32(m + 4), get_u32(m + 8)};
	if (cancel)
	{
		size_t cap = (size_t)p->s->cfg.max_requests;
		for (size_t k = 0; k < p->q_len; k++)
		{
			block_req *e = &p->q[(p->q_head + k) % cap];
			if (e->index == r.index && e->begin == r.begin && e->length == r.length)
			{
				/* close the gap: shift the later ones down one place */
				for (size_t j = k; j + 1 < p->q_len; j++)
					p->q[(p->q_head + j) % cap] = p->q[(p->q_head + j + 1) % cap];
				p->q_len--;
				break;
			}
		}
		return NULL;
	}
	if (r.index >= p->t->piece_count || r.length == 0 || r.length > MAX_BLOCK ||
	    (long long)r.begin + r.length > piece_size(p->t, r.index))
		return "a request beyond the file";
	if (p->choking)
		return NULL; /* BEP 3: requests while choked are dropped */
	if (p->q_len >= (size_t)p->s->cfg.max_requests)
		return "more queued requests than the reqq we announced";
	p->q[(p->q_head + p->q_len) % (size_t)p->s->cfg.max_requests] = r;
	p->q_len++;
	return NULL;
}

static const char *
on_ut_metadata(peer *p, const uint8_t *m, size_t n)
{
	size_t used;
	if (be_check(m, n, &used) != NULL)
		return "a malformed ut_metadata message";
	be_span d = {m, used}, v;
	long long type, piece;
	if (!be_is_dict(d) || !be_dict_get(d, "msg_type", &v) || !be_int(v, &type))
		return "a ut_metadata message without msg_type";
	if (type != 0)
		return NULL; /* data or reject: we never ask */
	if (!be_dict_get(d, "piece", &v) || !be_int(v, &piece))
		return "a ut_metadata request without piece";
	if (p->their_ut_metadata == 0)
		return "a ut_metadata request from a peer that did not announce ut_metadata";
	be_buf b = {NULL, 0, 0, grow_realloc};
	long long pieces = ((long long)p->t->info_len + METADATA_PIECE - 1) / METADATA_PIECE;
	be_put_open_dict(&b);
	if (piece < 0 || piece >= pieces)
	{
		be_put_cstr(&b, "msg_type");
		be_put_int(&b, 2);
		be_put_cstr(&b, "piece");
		be_put_int(&b, piece);
		be_put_end(&b);
		send_extended(p, (uint8_t)p->their_ut_metadata, &b, NULL, 0);
	}
	else
	{
		size_t off = (size_t)piece * METADATA_PIECE;
		size_t len = p->t->info_len - off < METADATA_PIECE ? p->t->info_len - off : METADATA_PIECE;
		be_put_cstr(&b, "msg_type");
		be_put_int(&b, 1);
		be_put_cstr(&b, "piece");
		be_put_int(&b, piece);
		be_put_cstr(&b, "total_size");
		be_put_int(&b, (long long)p->t->info_len);
		be_put_end(&b);
		send_extended(p, (uint8_t)p->their_ut_metadata, &b, p->t->info + off, len);
	}
	free(b.data);
	return NULL;
}

static const char *
on_extended(peer *p, const uint8_t *m, size_t n)
{
	if (n < 1)
		return "an empty extended message";
	if (m[0] == 0)
	{
		size_t used;
		if (be_check(m + 1, n - 1, &used) != NULL)
			return "a malformed extension handshake";
		be_span d = {m + 1, used}, mm, v;
		long long id;
		if (be_is_dict(d) && be_dict_get(d, "m", &mm) && be_dict_get(mm, "ut_metadata", &v) &&
		    be_int(v, &id))
			p->their_ut_metadata = id > 0 && id < 256 ? (int)id : 0;
		return NULL;
	}
	if (m[0] == OUR_UT_METADATA)
		return on_ut_metadata(p, m + 1, n - 1);
	return NULL; /* an extension we did not offer: ignored */
}

static const char *
on_message(peer *p, const uint8_t *m, size_t n)
{
	if (n == 0)
		return NULL; /* keep-alive */
	switch (m[0])
	{
	case MSG_CHOKE:
	case MSG_UNCHOKE:
	case MSG_NOT_INTERESTED:
		if (n != 1)
			return "a state message with a payload";
		if (m[0] == MSG_NOT_INTERESTED)
			p->interested = false;
		return NULL;
	case MSG_INTERESTED:
		if (n != 1)
			return "a state message with a payload";
		p->interested = true;
		return NULL;
	case MSG_HAVE:
		return n == 5 ? NULL : "a have of the wrong length";
	case MSG_BITFIELD:
		return n - 1 == (size_t)((p->t->piece_count + 7) / 8) ? NULL : "a bitfield of the wrong length";
	case MSG_REQUEST:
		return on_request(p, m + 1, n - 1, false);
	case MSG_CANCEL:
		return on_request(p, m + 1, n - 1, true);
	case MSG_PIECE:
		return NULL; /* we are a seed and ask for nothing */
	case MSG_PORT:
		return n == 3 ? NULL : "a port message of the wrong length";
	case MSG_EXTENDED:
		return on_extended(p, m + 1, n - 1);
	default:
		return NULL; /* unknown messages are ignored (BEP 3) */
	}
}

static const char *
on_handshake(peer *p, const uint8_t *h)
{
	seeder *s = p->s;
	if (memcmp(h, PROTOCOL, 20) != 0)
		return "not a BitTorrent handshake";
	torrent *t = seeder_find(s, h + 28);
	if (!t)
		return "an info hash this pod does not seed";
	if (p->mse_named && memcmp(p->mse_ih, h + 28, 20) != 0)
		return "a handshake for another info hash than its encrypted handshake named";
	char path[2048];
	snprintf(path, sizeof path, "%s/blobs/%.2s/%s", s->cfg.store_dir, t->sha256, t->sha256);
	p->blob_fd = open(path, O_RDONLY | O_CLOEXEC);
	if (p->blob_fd < 0)
	{
		wk_log(WK_ERROR, "blob %s of torrent %lld: %s", path, t->id, strerror(errno));
		return "the blob is missing";
	}
	p->t = t;
	p->extensions = (h[25] & 0x10) != 0;
	p->handshaken = true;
	ev_timer_stop(s->loop, &p->hs_timer);
	uint8_t *w = out_reserve(p, HANDSHAKE_LEN);
	memcpy(w, PROTOCOL, 20);
	memset(w + 20, 0, 8);
	w[25] = 0x10; /* BEP 10 extension protocol */
	memcpy(w + 28, t->info_hash, 20);
	memcpy(w + 48, s->peer_id, 20);
	if (p->extensions)
		send_ext_handshake(p);
	send_bitfield(p);
	/* A seed with a free slot has no reason to choke: unchoked at once (as libtorrent's
	 * seeder does), the peer's first requests need not wait for its "interested" and
	 * our answer, one round trip plus the client's own delays (about 40 ms for aria2c) */
	p->choking = false;
	send_msg(p, MSG_UNCHOKE, NULL, 0);
	return NULL;
}

static bool
lookup_req2(void *arg, const uint8_t req2[20], uint8_t info_hash[20])
{
	torrent *t = seeder_find_req2(arg, req2);
	if (t)
		memcpy(info_hash, t->info_hash, 20);
	return t != NULL;
}

/* Before the BitTorrent handshake: tells a plain one from an encrypted one and runs
 * the latter (mse.c), which consumes its own bytes from p->in. True once the BitTorrent
 * handshake may be parsed; false to wait for more bytes or (with *err) to refuse. */
static bool
pre_handshake(peer *p, const char **err)
{
	if (!p->mse)
	{
		if (p->in_len == 0)
			return false;
		if (!mse_looks_encrypted(p->in, p->in_len))
			return (p->stream_ready = p->in_len >= 20);
		p->mse = malloc(sizeof *p->mse);
		if (!p->mse)
			abort();
		if (!mse_init(p->mse))
		{
			*err = "no randomness for an encrypted handshake";
			return false;
		}
	}
	uint8_t reply[MSE_REPLY_MAX];
	size_t used, reply_len;
	mse_result r = mse_feed(p->mse, p->in, p->in_len, &used, reply, &reply_len, lookup_req2, p->s, err);
	if (r == MSE_FAILED)
		return false;
	if (reply_len)
		memcpy(out_reserve(p, reply_len), reply, reply_len);
	memmove(p->in, p->in + used, p->in_len - used);
	p->in_len -= used;
	if (r == MSE_MORE)
		return false;
	p->mse_named = true;
	memcpy(p->mse_ih, p->mse->skey, 20);
	if (p->mse->select == MSE_CRYPTO_RC4)
	{
		p->crypt = malloc(sizeof *p->crypt);
		if (!p->crypt)
			abort();
		p->crypt->in = p->mse->in;
		p->crypt->out = p->mse->out;
		/* the initial payload is decrypted; what came after it is RC4 payload */
		rc4_crypt(&p->crypt->in, p->in + p->mse->ia_len, p->in_len - p->mse->ia_len);
		p->out_enc = p->out_len; /* our step 4, just queued, is encrypted already */
	}
	wk_log(WK_INFO, "peer %s: encrypted handshake (MSE) done, %s selected", p->addr,
	       p->crypt ? "RC4" : "plaintext");
	OPENSSL_cleanse(p->mse, sizeof *p->mse);
	free(p->mse);
	p->mse = NULL;
	p->stream_ready = true;
	return true;
}

/* Parses what arrived; false when the peer was closed. */
static bool
consume(peer *p)
{
	size_t off = 0;
	const char *err = NULL;
	while (!err)
	{
		if (!p->stream_ready && !pre_handshake(p, &err))
			break; /* nothing of p->in is consumed here yet (off is 0) */
		size_t avail = p->in_len - off;
		if (!p->handshaken)
		{
			if (avail < HANDSHAKE_LEN)
				break;
			err = on_handshake(p, p->in + off);
			off += HANDSHAKE_LEN;
			continue;
		}
		if (avail < 4)
			break;
		uint32_t len = get_u32(p->in + off);
		if (len > MAX_MESSAGE)
		{
			err = "a message longer than 256 KiB";
			break;
		}
		if (avail < 4 + (size_t)len)
			break;
		err = on_message(p, p->in + off + 4, len);
		off += 4 + (size_t)len;
	}
	if (err)
	{
		wk_log(WK_INFO, "peer %s: disconnected: %s", p->addr, err);
		peer_close(p, NULL);
		return false;
	}
	memmove(p->in, p->in + off, p->in_len - off);
	p->in_len -= off;
	return true;
}

/* Reads and handles everything the socket holds; false when the peer was closed. */
static bool
peer_read(peer *p)
{
	for (;;)
	{
		if (p->in_cap - p->in_len < 16384)
		{
			size_t cap = p->in_cap * 2;
			if (cap > MAX_MESSAGE + 4 + 65536)
				cap = MAX_MESSAGE + 4 + 65536;
			if (cap <= p->in_cap)
				return true; /* full: cannot happen, consume() leaves less than a message */
			p->in = realloc(p->in, cap);
			if (!p->in)
				abort();
			p->in_cap = cap;
		}
		ssize_t k = recv(p->fd, p->in + p->in_len, p->in_cap - p->in_len, 0);
		if (k == 0)
		{
			peer_close(p, "the peer closed the connection");
			return false;
		}
		if (k < 0)
		{
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return true;
			peer_close(p, strerror(errno));
			return false;
		}
		if (p->crypt)
			rc4_crypt(&p->crypt->in, p->in + p->in_len, (size_t)k);
		p->in_len += (size_t)k;
		p->last_rx = seeder_now(p->s);
		if (!consume(p))
			return false;
	}
}

static void
peer_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	peer *p = w->data;
	(void)loop;
	if ((revents & EV_READ) && !peer_read(p))
		return;
	flush(p);
}

static void
handshake_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	peer *p = w->data;
	(void)loop;
	(void)revents;
	wk_log(WK_INFO, "peer %s: disconnected: no complete handshake within %ld ms", p->addr,
	       p->s->cfg.handshake_ms);
	peer_close(p, NULL);
}

static void
accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	seeder *s = w->data;
	(void)loop;
	(void)revents;
	for (;;)
	{
		struct sockaddr_storage sa;
		socklen_t sl = sizeof sa;
		int fd = accept4(s->listen_fd, (struct sockaddr *)&sa, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0)
		{
			if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
				wk_log(WK_WARN, "accept: %s", strerror(errno));
			return;
		}
		if (s->npeers >= s->cfg.max_peers || wk_daemon_stopping())
		{
			close(fd);
			continue;
		}
		peer *p = calloc(1, sizeof *p);
		if (!p)
			abort();
		p->s = s;
		p->fd = fd;
		p->blob_fd = -1;
		p->choking = true;
		p->in_cap = 16384 + 4;
		p->in = malloc(p->in_cap);
		p->q = calloc((size_t)s->cfg.max_requests, sizeof(block_req));
		if (!p->in || !p->q)
			abort();
		p->last_rx = p->last_tx = seeder_now(s);
		char host[INET6_ADDRSTRLEN] = "?";
		int port = 0;
		if (sa.ss_family == AF_INET)
		{
			struct sockaddr_in *a = (struct sockaddr_in *)&sa;
			inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
			port = ntohs(a->sin_port);
		}
		else if (sa.ss_family == AF_INET6)
		{
			struct sockaddr_in6 *a = (struct sockaddr_in6 *)&sa;
			inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
			port = ntohs(a->sin6_port);
		}
		snprintf(p->addr, sizeof p->addr, "%s:%d", host, port);
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
		p->next = s->peers;
		if (s->peers)
			s->peers->prev = p;
		s->peers = p;
		s->npeers++;
		ev_io_init(&p->io, peer_io_cb, fd, EV_READ);
		p->io.data = p;
		ev_io_start(s->loop, &p->io);
		ev_timer_init(&p->hs_timer, handshake_timeout_cb, (double)s->cfg.handshake_ms / 1000.0, 0.0);
		p->hs_timer.data = p;
		ev_timer_start(s->loop, &p->hs_timer);
	}
}

int
peer_listen(seeder *s)
{
	struct sockaddr_in sa = {0};
	int one = 1;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)s->cfg.peer_port);
	if (inet_pton(AF_INET, s->cfg.peer_addr, &sa.sin_addr) != 1)
	{
		wk_log(WK_ERROR, "PGPOD_PEER_ADDR %s is not an IPv4 address", s->cfg.peer_addr);
		close(fd);
		return -1;
	}
	if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, 128) != 0)
	{
		wk_log(WK_ERROR, "cannot listen on %s:%ld: %s", s->cfg.peer_addr, s->cfg.peer_port,
		       strerror(errno));
		close(fd);
		return -1;
	}
	s->listen_fd = fd;
	ev_io_init(&s->listen_io, accept_cb, fd, EV_READ);
	s->listen_io.data = s;
	ev_io_start(s->loop, &s->listen_io);
	return 0;
}

void
peer_stop_listening(seeder *s)
{
	if (s->listen_fd >= 0)
	{
		ev_io_stop(s->loop, &s->listen_io);
		close(s->listen_fd);
		s->listen_fd = -1;
	}
}

void
peer_drop_torrent(seeder *s, torrent *t)
{
	peer *p = s->peers;
	while (p)
	{
		peer *next = p->next;
		if (p->t == t)
		{
			wk_log(WK_INFO, "peer %s: disconnected: torrent %lld is no longer seeded", p->addr, t->id);
			peer_close(p, NULL);
		}
		p = next;
	}
}

void
peer_sweep(seeder *s)
{
	double now = seeder_now(s);
	peer *p = s->peers;
	while (p)
	{
		peer *next = p->next;
		if (now - p->last_rx > (double)s->cfg.idle_s)
			peer_close(p, "idle");
		else if (p->handshaken && now - p->last_tx > 90.0 && p->out_off == p->out_len && p->file_left == 0)
		{
			uint8_t *w = out_reserve(p, 4);
			put_u32(w, 0); /* keep-alive */
			flush(p);
		}
		p = next;
	}
}

void
peer_drain_begin(seeder *s)
{
	/* What peers sent before the signal is in the sockets already (on loopback, the
	 * moment they sent it): take those requests in; nothing after. */
	peer *p = s->peers;
	while (p)
	{
		peer *next = p->next;
		if (peer_read(p))
			flush(p); /* reads no more from here on */
		p = next;
	}
}

bool
peer_drain(seeder *s)
{
	peer *p = s->peers;
	while (p)
	{
		peer *next = p->next;
		if (p->q_len == 0 && p->out_off == p->out_len && p->file_left == 0)
			peer_close(p, "drained");
		else
			flush(p); /* stops reading: no new requests */
		p = next;
	}
	return s->peers == NULL;
}

void
peer_close_all(seeder *s)
{
	while (s->peers)
		peer_close(s->peers, "stopping");
}
