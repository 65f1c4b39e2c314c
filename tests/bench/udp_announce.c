/*
 * udp_announce.c — a BEP 15 load generator for the tracker benchmark, used the same
 * way against pgpod's tracker and opentracker: one UDP socket, a connect, then
 * announces for one info hash with a varying peer id and port, WINDOW of them in
 * flight (a reply sends the next; a 100 ms silence refills the window).
 *   udp_announce HOST PORT HASH_HEX fill COUNT WINDOW   -> announces ports 1..COUNT once
 *   udp_announce HOST PORT HASH_HEX bench SECONDS WINDOW PORTS -> replies per second
 */
#include <arpa/inet.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int fd;
static uint8_t hash[20];
static uint64_t cid;

static double
now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void
put32(uint8_t *p, uint32_t v)
{
	v = htonl(v);
	memcpy(p, &v, 4);
}

static void
put64(uint8_t *p, uint64_t v)
{
	put32(p, (uint32_t)(v >> 32));
	put32(p + 4, (uint32_t)v);
}

static void
send_announce(uint32_t tid, uint16_t port)
{
	uint8_t b[98] = {0};

	put64(b, cid);
	put32(b + 8, 1);
	put32(b + 12, tid);
	memcpy(b + 16, hash, 20);
	snprintf((char *)b + 36, 21, "-BN0001-%012u", (unsigned)rand());
	put64(b + 64, 100); /* left: a leecher */
	put32(b + 80, 0);
	put32(b + 92, 50); /* numwant */
	b[96] = (uint8_t)(port >> 8);
	b[97] = (uint8_t)port;
	if (send(fd, b, sizeof(b), 0) < 0)
		perror("send");
}

static void
do_connect(void)
{
	uint8_t b[16], r[2048];

	put64(b, 0x41727101980ULL);
	put32(b + 8, 0);
	put32(b + 12, 7);
	for (int attempt = 0; attempt < 20; attempt++)
	{
		struct pollfd p = {fd, POLLIN, 0};

		send(fd, b, 16, 0);
		if (poll(&p, 1, 200) == 1 && recv(fd, r, sizeof(r), 0) >= 16)
		{
			memcpy(&cid, r + 8, 8);
			cid = ((uint64_t)ntohl((uint32_t)cid) << 32) | ntohl((uint32_t)(cid >> 32));
			return;
		}
	}
	fprintf(stderr, "no connect reply\n");
	exit(1);
}

int
main(int argc, char **argv)
{
	struct sockaddr_in a = {0};
	int rcv = 4 << 20;
	long arg, window, ports = 50000;
	uint64_t replies = 0, sent = 0;
	double start, end;
	int fill;

	if (argc < 7)
	{
		fprintf(stderr, "usage: udp_announce HOST PORT HASH fill COUNT WINDOW | bench SECONDS WINDOW PORTS\n");
		return 2;
	}
	for (int i = 0; i < 20; i++)
		sscanf(argv[3] + 2 * i, "%2hhx", &hash[i]);
	fill = strcmp(argv[4], "fill") == 0;
	arg = atol(argv[5]);
	window = atol(argv[6]);
	if (!fill && argc > 7)
		ports = atol(argv[7]);
	srand((unsigned)getpid());
	fd = socket(AF_INET, SOCK_DGRAM, 0);
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof(rcv));
	a.sin_family = AF_INET;
	a.sin_port = htons((uint16_t)atoi(argv[2]));
	inet_pton(AF_INET, argv[1], &a.sin_addr);
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0)
	{
		perror("connect");
		return 1;
	}
	do_connect();
	start = now();
	end = fill ? start + 60 : start + (double)arg;
	for (long i = 0; i < window && (!fill || (long)sent < arg); i++, sent++)
		send_announce((uint32_t)sent, fill ? (uint16_t)(sent + 1) : (uint16_t)(1 + rand() % ports));
	while (now() < end && (!fill || (long)replies < arg))
	{
		struct pollfd p = {fd, POLLIN, 0};
		uint8_t r[2048];

		if (poll(&p, 1, 100) != 1)
		{
			/* Lost in a full socket buffer: refill the window. */
			for (long i = 0; i < window && (!fill || (long)sent < arg); i++, sent++)
				send_announce((uint32_t)sent, fill ? (uint16_t)(sent + 1) : (uint16_t)(1 + rand() % ports));
			continue;
		}
		while (recv(fd, r, sizeof(r), MSG_DONTWAIT) >= 20)
		{
			if (r[3] != 1)
				continue; /* an error packet is not an announce answered */
			replies++;
			if (!fill || (long)sent < arg)
			{
				send_announce((uint32_t)sent, fill ? (uint16_t)(sent + 1) : (uint16_t)(1 + rand() % ports));
				sent++;
			}
		}
	}
	printf("%.0f\n", fill ? (double)replies : (double)replies / (now() - start));
	return 0;
}
