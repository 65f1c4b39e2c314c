/* SSE load client for tests/bench/sse.sh: opens N streams of one room (epoll, one
 * thread), says "ready" once every stream has its head and "retry:" line, then
 * reads events until each stream has seen an event whose data holds "end", and
 * prints the delivery latency of every event (now - the "t" epoch in its data,
 * same clock: one machine) as percentiles, plus lost and duplicate counts.
 *   sse_load HOST PORT ROOM TOKEN N TIMEOUT_S */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct stream
{
	int fd;
	char *buf;
	size_t len, cap;
	int head, ready, done;
	long long last_id, events, dups, gaps;
} stream;

static double
now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double *lat;
static size_t nlat, caplat;

static int
cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* Parses complete events out of s->buf. */
static void
parse(stream *s, double t)
{
	size_t off = 0;
	if (!s->head)
	{
		char *e = memmem(s->buf, s->len, "\r\n\r\n", 4);
		if (!e)
			return;
		if (strncmp(s->buf, "HTTP/1.1 200", 12))
		{
			fprintf(stderr, "stream refused: %.*s\n", (int)(e - s->buf), s->buf);
			exit(2);
		}
		s->head = 1;
		off = (size_t)(e - s->buf) + 4;
	}
	for (;;)
	{
		char *e = memmem(s->buf + off, s->len - off, "\n\n", 2);
		if (!e)
			break;
		char *blk = s->buf + off;
		size_t n = (size_t)(e - blk);
		if (n >= 6 && !strncmp(blk, "retry:", 6))
			s->ready = 1;
		else if (n >= 4 && !strncmp(blk, "id: ", 4))
		{
			long long id = strtoll(blk + 4, NULL, 10);
			if (s->last_id && id <= s->last_id)
				s->dups++;
			else if (s->last_id && id != s->last_id + 1)
				s->gaps += id - s->last_id - 1;
			if (id > s->last_id)
				s->last_id = id;
			s->events++;
			char *tp = memmem(blk, n, "\"t\": ", 5);
			if (tp)
			{
				if (nlat == caplat)
				{
					caplat = caplat ? caplat * 2 : 1 << 16;
					lat = realloc(lat, caplat * sizeof *lat);
					if (!lat)
						abort();
				}
				lat[nlat++] = t - strtod(tp + 5, NULL);
			}
			if (memmem(blk, n, "\"end\"", 5))
				s->done = 1;
		}
		off = (size_t)(e - s->buf) + 2;
	}
	memmove(s->buf, s->buf + off, s->len - off);
	s->len -= off;
}

int
main(int argc, char **argv)
{
	if (argc != 7)
	{
		fprintf(stderr, "usage: sse_load HOST PORT ROOM TOKEN N TIMEOUT_S\n");
		return 2;
	}
	const char *host = argv[1], *room = argv[3], *token = argv[4];
	int port = atoi(argv[2]), n = atoi(argv[5]);
	double timeout = atof(argv[6]);
	stream *ss = calloc((size_t)n, sizeof *ss);
	int ep = epoll_create1(0);
	char req[4096];
	int rl = snprintf(req, sizeof req,
	                  "GET /rooms/%s/events HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n"
	                  "Authorization: Bearer %s\r\n\r\n",
	                  room, host, token);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
	inet_pton(AF_INET, host, &sa.sin_addr);
	for (int i = 0; i < n; i++)
	{
		stream *s = &ss[i];
		s->fd = socket(AF_INET, SOCK_STREAM, 0);
		if (s->fd < 0 || connect(s->fd, (struct sockaddr *)&sa, sizeof sa))
		{
			fprintf(stderr, "connect %d: %s\n", i, strerror(errno));
			return 2;
		}
		if (write(s->fd, req, (size_t)rl) != rl)
		{
			fprintf(stderr, "write %d: %s\n", i, strerror(errno));
			return 2;
		}
		fcntl(s->fd, F_SETFL, O_NONBLOCK);
		s->cap = 1 << 16;
		s->buf = malloc(s->cap);
		struct epoll_event ev = {.events = EPOLLIN, .data.ptr = s};
		epoll_ctl(ep, EPOLL_CTL_ADD, s->fd, &ev);
	}
	int announced = 0, done = 0;
	double end = now() + timeout;
	struct epoll_event evs[256];
	while (done < n)
	{
		if (now() > end)
		{
			fprintf(stderr, "timed out: %d of %d streams saw the end\n", done, n);
			break;
		}
		int k = epoll_wait(ep, evs, 256, 100);
		double t = now();
		for (int i = 0; i < k; i++)
		{
			stream *s = evs[i].data.ptr;
			for (;;)
			{
				if (s->cap - s->len < 16384)
				{
					s->cap *= 2;
					s->buf = realloc(s->buf, s->cap);
				}
				ssize_t r = read(s->fd, s->buf + s->len, s->cap - s->len);
				if (r < 0 && errno == EAGAIN)
					break;
				if (r <= 0)
				{
					fprintf(stderr, "a stream closed: %s\n", r ? strerror(errno) : "EOF");
					return 2;
				}
				s->len += (size_t)r;
			}
			int was = s->done;
			parse(s, t);
			if (s->done && !was)
				done++;
		}
		if (!announced)
		{
			int ready = 0;
			for (int i = 0; i < n; i++)
				ready += ss[i].ready;
			if (ready == n)
			{
				printf("ready\n");
				fflush(stdout);
				announced = 1;
			}
		}
	}
	long long events = 0, dups = 0, gaps = 0;
	for (int i = 0; i < n; i++)
	{
		events += ss[i].events;
		dups += ss[i].dups;
		gaps += ss[i].gaps;
	}
	qsort(lat, nlat, sizeof *lat, cmp);
	double p50 = nlat ? lat[nlat / 2] : 0, p99 = nlat ? lat[(size_t)(nlat * 0.99)] : 0,
	       max = nlat ? lat[nlat - 1] : 0;
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	double cpu = ru.ru_utime.tv_sec + ru.ru_stime.tv_sec + (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
	printf("streams %d done %d events %lld timed %zu dups %lld gaps %lld p50_ms %.2f p99_ms %.2f max_ms %.2f "
	       "client_cpu_s %.2f\n",
	       n, done, events, nlat, dups, gaps, p50 * 1e3, p99 * 1e3, max * 1e3, cpu);
	return done == n && !dups && !gaps ? 0 : 1;
}
