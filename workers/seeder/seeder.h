/*
 * seeder.h — what the seeder's files share. main.c owns the loop, the database
 * connection, the torrent table (loaded from pod.torrents_seeded, kept current by
 * NOTIFY pod_torrents) and the torrent jobs; peer.c the BitTorrent peer wire;
 * hash.c the threads that hash a blob; announce.c the announces to the pod's tracker.
 * Everything but hash.c's threads runs on the one ev_loop.
 */
#ifndef PGPOD_SEEDER_H
#define PGPOD_SEEDER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <netinet/in.h>

#include "worker.h"

typedef struct peer peer;

typedef struct torrent
{
	long long id; /* pod.video_files.id */
	uint8_t info_hash[20];
	uint8_t req2[20];  /* HASH('req2', info hash): how an encrypted handshake names it */
	char sha256[65];   /* the blob's name in the store */
	long long size;
	long long piece_length;
	long long piece_count;
	uint8_t *info;     /* the bencoded info dictionary (ut_metadata serves it) */
	size_t info_len;
	bool seen;         /* marked by a sync */
	double next_announce;
	int announce_failures;
} torrent;

typedef struct seeder_cfg
{
	long peer_port;
	char peer_addr[64];
	char store_dir[1024];
	long max_peers;
	long max_requests;   /* queued block requests per peer */
	long threads;        /* hashing threads */
	long poll_ms;
	long grace_ms;
	long idle_s;         /* a peer silent this long is dropped */
	long handshake_ms;   /* a peer without a complete handshake after this is dropped */
	long lease_s;        /* torrent jobs' lease */
	long announce_parallel;
} seeder_cfg;

/* A torrent job being hashed by hash.c's threads. */
typedef struct hash_job
{
	long long job_id;
	long long video_file;
	char sha256[65];
	long long size;
	long long piece_length;
	long long piece_count;
	uint8_t *pieces;       /* piece_count × 20 */
	char error[256];       /* set when hashing failed */
	atomic_bool cancel;
	double started;
} hash_job;

typedef struct seeder
{
	struct ev_loop *loop;
	seeder_cfg cfg;
	char worker_id[128];
	uint8_t peer_id[20];
	wk_db *db;
	/* torrents */
	torrent **all;
	size_t n, cap;
	torrent **index; /* open addressing by info hash, index_cap a power of two */
	torrent **index_req2; /* the same by req2 */
	size_t index_cap;
	bool loaded;     /* the first full load is done */
	bool sync_due;
	bool ready_sent;
	/* jobs */
	bool claim_due;
	hash_job *hashing;  /* being hashed */
	hash_job *finished; /* hashed, to be reported */
	ev_async hash_done;
	/* peers */
	int listen_fd;
	ev_io listen_io;
	peer *peers;
	long npeers;
	/* announces */
	char tracker_url[512]; /* the pod's HTTP tracker, from pod.tracker_urls() */
	struct sockaddr_in tracker_addr;
	char tracker_host[256];
	char tracker_path[256];
	bool tracker_ok;
	long announcing;
	size_t announce_cursor;
	/* lifecycle */
	bool grace_over;
	ev_timer poll_timer, sweep_timer, announce_timer;
	ev_idle kick;
	/* counters for the log */
	long long served_blocks, served_bytes;
} seeder;

void seeder_schedule(seeder *s);
torrent *seeder_find(seeder *s, const uint8_t info_hash[20]);
/* The torrent whose HASH('req2', info hash) this is (MSE), or NULL. */
torrent *seeder_find_req2(seeder *s, const uint8_t req2[20]);
double seeder_now(seeder *s);

/* --- peer.c ------------------------------------------------------------------------ */
int peer_listen(seeder *s);
void peer_stop_listening(seeder *s);
/* Closes every peer of a torrent that goes away. */
void peer_drop_torrent(seeder *s, torrent *t);
/* Drops peers silent for longer than idle_s; sends keep-alives. */
void peer_sweep(seeder *s);
/* SIGTERM: the requests peers have sent are taken in, no later ones. */
void peer_drain_begin(seeder *s);
/* Closes the peers with nothing left to send; true once none is left. */
bool peer_drain(seeder *s);
void peer_close_all(seeder *s);

/* --- hash.c ------------------------------------------------------------------------ */
/* Hashes job->sha256's blob on cfg.threads threads, then ev_async_send(done). */
void hash_start(seeder *s, hash_job *job);
void hash_job_free(hash_job *job);

/* --- announce.c ---------------------------------------------------------------------- */
/* Parses s->tracker_url (http://host:port/path) into the address to announce to. */
bool announce_configure(seeder *s);
/* Starts the announces that are due, at most announce_parallel at once. */
void announce_due(seeder *s);
void announce_abort_all(seeder *s);

#endif
