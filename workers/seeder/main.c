/*
 * main.c — pgpod's seeder: serves every published video file over the BitTorrent
 * peer wire (peer.c) from the piece hashes and torrents stored in the database, so a
 * restart seeds everything again without hashing anything; follows NOTIFY
 * pod_torrents (published, unpublished, removed) and claims `torrent` jobs (a file to
 * hash: hash.c on every core, then pod.torrent_finish stores the torrent). The
 * database is the only state: killed at any instant, the seeder loses nothing (a
 * claimed job's lease expires and it is hashed again).
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <stddef.h>
#include <string.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "metainfo.h"
#include "mse.h"
#include "seeder.h"

static void pump(seeder *s);

double
seeder_now(seeder *s)
{
	return ev_now(s->loop);
}

static void
kick_cb(struct ev_loop *loop, ev_idle *w, int revents)
{
	seeder *s = w->data;
	(void)revents;
	ev_idle_stop(loop, w);
	pump(s);
}

void
seeder_schedule(seeder *s)
{
	ev_idle_start(s->loop, &s->kick);
}

/* --- the torrent table --------------------------------------------------------------- */

static size_t
slot_of(const uint8_t h[20], size_t cap)
{
	uint64_t v;
	memcpy(&v, h, sizeof v);
	return (size_t)v & (cap - 1);
}

/* Two open-addressing tables over the same torrents: by info hash (the plain
 * handshake) and by HASH('req2', info hash) (the encrypted one, mse.h). */
static void
index_rebuild(seeder *s)
{
	size_t cap = 16;
	while (cap < s->n * 2)
		cap *= 2;
	free(s->index);
	free(s->index_req2);
	s->index = calloc(cap, sizeof(torrent *));
	s->index_req2 = calloc(cap, sizeof(torrent *));
	if (!s->index || !s->index_req2)
		abort();
	s->index_cap = cap;
	for (size_t i = 0; i < s->n; i++)
	{
		size_t k = slot_of(s->all[i]->info_hash, cap);
		while (s->index[k])
			k = (k + 1) & (cap - 1);
		s->index[k] = s->all[i];
		k = slot_of(s->all[i]->req2, cap);
		while (s->index_req2[k])
			k = (k + 1) & (cap - 1);
		s->index_req2[k] = s->all[i];
	}
}

static torrent *
index_find(torrent **index, size_t cap, const uint8_t h[20], size_t field)
{
	if (!cap)
		return NULL;
	for (size_t k = slot_of(h, cap);; k = (k + 1) & (cap - 1))
	{
		torrent *t = index[k];
		if (!t)
			return NULL;
		if (memcmp((const uint8_t *)t + field, h, 20) == 0)
			return t;
	}
}

torrent *
seeder_find(seeder *s, const uint8_t info_hash[20])
{
	return index_find(s->index, s->index_cap, info_hash, offsetof(torrent, info_hash));
}

torrent *
seeder_find_req2(seeder *s, const uint8_t req2[20])
{
	return index_find(s->index_req2, s->index_cap, req2, offsetof(torrent, req2));
}

static void
torrent_free(torrent *t)
{
	free(t->info);
	free(t);
}

/* A row of pod.torrents_seeded (id, info_hash, sha256, size, piece_length, torrent)
 * made into a torrent; NULL (and a log line) when the stored torrent is unusable. */
static torrent *
torrent_from_row(PGresult *res, int r)
{
	const char *tor = PQgetvalue(res, r, 5);
	size_t hexlen = strlen(tor);
	long long id = atoll(PQgetvalue(res, r, 0));
	if (hexlen < 2 || tor[0] != '\\' || tor[1] != 'x' || hexlen % 2)
	{
		wk_log(WK_ERROR, "torrent of video file %lld: not bytea hex output", id);
		return NULL;
	}
	size_t len = (hexlen - 2) / 2;
	uint8_t *raw = malloc(len ? len : 1);
	if (!raw)
		abort();
	mi_torrent mt;
	const char *err = NULL;
	torrent *t = calloc(1, sizeof *t);
	if (!t)
		abort();
	t->id = id;
	if (!wk_hex_decode(raw, tor + 2, len) || strlen(PQgetvalue(res, r, 1)) != 40 ||
	    !wk_hex_decode(t->info_hash, PQgetvalue(res, r, 1), 20))
		err = "bad hex";
	else if ((err = mi_parse(raw, len, &mt)) == NULL)
	{
		t->info = malloc(mt.info.n);
		if (!t->info)
			abort();
		memcpy(t->info, mt.info.p, mt.info.n);
		t->info_len = mt.info.n;
		t->piece_length = mt.piece_length;
		t->piece_count = mt.piece_count;
		t->size = atoll(PQgetvalue(res, r, 3));
		snprintf(t->sha256, sizeof t->sha256, "%s", PQgetvalue(res, r, 2));
		if (mt.length != t->size)
			err = "the torrent's length is not the blob's size";
		mse_hash("req2", t->info_hash, 20, NULL, 0, t->req2);
	}
	free(raw);
	if (err)
	{
		wk_log(WK_ERROR, "torrent of video file %lld cannot be seeded: %s", id, err);
		torrent_free(t);
		return NULL;
	}
	return t;
}

static void
table_add(seeder *s, torrent *t)
{
	if (s->n == s->cap)
	{
		s->cap = s->cap ? s->cap * 2 : 64;
		s->all = realloc(s->all, s->cap * sizeof *s->all);
		if (!s->all)
			abort();
	}
	t->next_announce = seeder_now(s);
	t->seen = true;
	s->all[s->n++] = t;
}

static bool
result_ok(PGresult *res, const char *what)
{
	if (!res)
	{
		wk_log(WK_WARN, "%s: the connection was lost", what);
		return false;
	}
	ExecStatusType st = PQresultStatus(res);
	if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK)
	{
		wk_log(WK_ERROR, "%s: %s", what, PQresultErrorMessage(res));
		return false;
	}
	return true;
}

/* The tracker's URL is a scalar subquery: computed once, not per row. */
static const char *const LOAD_SQL =
    "SELECT id, encode(info_hash, 'hex'), sha256, size, piece_length, torrent, "
    "       (SELECT (pod.tracker_urls())[1]) FROM pod.torrents_seeded";
static const char *const IDS_SQL = "SELECT id, encode(info_hash, 'hex') FROM pod.torrents_seeded";
static const char *const SOME_SQL =
    "SELECT id, encode(info_hash, 'hex'), sha256, size, piece_length, torrent, "
    "       (SELECT (pod.tracker_urls())[1]) FROM pod.torrents_seeded WHERE id = ANY($1::bigint[])";

static void
set_tracker(seeder *s, const char *url)
{
	if (strcmp(url, s->tracker_url) == 0)
		return;
	snprintf(s->tracker_url, sizeof s->tracker_url, "%s", url);
	if (announce_configure(s))
		wk_log(WK_INFO, "announcing to %s", s->tracker_url);
}

static void
load_done(wk_db *db, PGresult *res, void *arg)
{
	seeder *s = arg;
	(void)db;
	if (!result_ok(res, "loading the torrents"))
	{
		s->sync_due = true;
		return;
	}
	int rows = PQntuples(res);
	for (int r = 0; r < rows; r++)
	{
		torrent *t = torrent_from_row(res, r);
		if (t)
			table_add(s, t);
		if (r == 0)
			set_tracker(s, PQgetvalue(res, r, 6));
	}
	index_rebuild(s);
	wk_log(WK_INFO, "seeding %zu files", s->n);
	s->loaded = true;
	if (!s->ready_sent)
	{
		s->ready_sent = true;
		wk_sd_notify("READY=1\nSTATUS=seeding");
	}
}

static void
some_done(wk_db *db, PGresult *res, void *arg)
{
	seeder *s = arg;
	(void)db;
	if (!result_ok(res, "loading new torrents"))
	{
		s->sync_due = true;
		return;
	}
	for (int r = 0; r < PQntuples(res); r++)
	{
		torrent *t = torrent_from_row(res, r);
		if (t)
		{
			table_add(s, t);
			wk_log(WK_INFO, "seeding video file %lld (%lld bytes, %lld pieces)", t->id, t->size,
			       t->piece_count);
		}
		if (r == 0)
			set_tracker(s, PQgetvalue(res, r, 6));
	}
	index_rebuild(s);
}

/* The ids still published: drop the others, then fetch the new ones. */
static void
ids_done(wk_db *db, PGresult *res, void *arg)
{
	seeder *s = arg;
	(void)db;
	if (!result_ok(res, "listing the seeded files"))
	{
		s->sync_due = true;
		return;
	}
	int rows = PQntuples(res);
	for (size_t i = 0; i < s->n; i++)
		s->all[i]->seen = false;
	wk_buf missing = {0};
	wk_array_begin(&missing);
	int nmissing = 0;
	for (int r = 0; r < rows; r++)
	{
		uint8_t h[20];
		const char *hex = PQgetvalue(res, r, 1);
		torrent *t = strlen(hex) == 40 && wk_hex_decode(h, hex, 20) ? seeder_find(s, h) : NULL;
		if (t && t->id == atoll(PQgetvalue(res, r, 0)))
			t->seen = true;
		else
		{
			wk_array_add(&missing, PQgetvalue(res, r, 0));
			nmissing++;
		}
	}
	wk_array_end(&missing);
	size_t kept = 0;
	for (size_t i = 0; i < s->n; i++)
	{
		torrent *t = s->all[i];
		if (t->seen)
			s->all[kept++] = t;
		else
		{
			wk_log(WK_INFO, "no longer seeding video file %lld", t->id);
			peer_drop_torrent(s, t);
			torrent_free(t);
		}
	}
	s->n = kept;
	index_rebuild(s);
	if (nmissing > 0)
	{
		const char *params[1] = {missing.data};
		if (!wk_db_query(s->db, SOME_SQL, 1, params, some_done, s))
			s->sync_due = true;
	}
	wk_buf_free(&missing);
}

/* --- torrent jobs ------------------------------------------------------------------- */

static const char *const CLAIM_SQL =
    "SELECT j.id, (j.payload->>'video_file')::bigint, t.sha256, t.size, t.piece_length "
    "  FROM pod.job_claim('torrent', $1, 1, make_interval(secs => $2::int)) j "
    "  LEFT JOIN LATERAL pod.torrent_job((j.payload->>'video_file')::bigint) t ON true";

static void
report_done(wk_db *db, PGresult *res, void *arg)
{
	seeder *s = arg;
	(void)db;
	hash_job *job = s->finished;
	if (!result_ok(res, "reporting a torrent job"))
	{
		if (res)
		{
			/* refused (the hashes do not fit, ...): recorded as the job's failure */
			snprintf(job->error, sizeof job->error, "%s", PQresultErrorMessage(res));
			job->error[strcspn(job->error, "\n")] = 0;
		}
		return; /* lost connection: report again after reconnecting */
	}
	if (job->error[0] && PQntuples(res) == 1 && strcmp(PQfname(res, 0), "job_fail") == 0)
		wk_log(WK_WARN, "torrent job %lld failed: %s", job->job_id, job->error);
	else if (!job->error[0])
		wk_log(WK_INFO, "torrent of video file %lld stored: info hash %s, %lld pieces of %lld, hashed in %.3f s",
		       job->video_file, PQntuples(res) ? PQgetvalue(res, 0, 0) : "-", job->piece_count,
		       job->piece_length, ev_now(s->loop) - job->started);
	else
		wk_log(WK_INFO, "torrent job %lld released", job->job_id);
	hash_job_free(job);
	s->finished = NULL;
	s->claim_due = true;
}

static void
send_report(seeder *s)
{
	hash_job *job = s->finished;
	char jid[32], vf[32], pl[32], lease[32];
	snprintf(jid, sizeof jid, "%lld", job->job_id);
	snprintf(vf, sizeof vf, "%lld", job->video_file);
	snprintf(pl, sizeof pl, "%lld", job->piece_length);
	(void)lease;
	if (wk_daemon_stopping() && !job->error[0] && atomic_load(&job->cancel))
		snprintf(job->error, sizeof job->error, "stopped");
	if (job->error[0] && strcmp(job->error, "stopped") == 0)
	{
		const char *p[2] = {jid, s->worker_id};
		wk_db_query(s->db, "SELECT pod.job_release(ARRAY[$1::bigint], $2)", 2, p, report_done, s);
		return;
	}
	if (job->error[0])
	{
		const char *p[3] = {jid, job->error, s->worker_id};
		wk_db_query(s->db, "SELECT pod.job_fail($1::bigint, $2, $3) AS job_fail", 3, p, report_done, s);
		return;
	}
	size_t n = (size_t)job->piece_count * 20;
	char *hex = malloc(2 + 2 * n + 1);
	if (!hex)
		abort();
	hex[0] = '\\';
	hex[1] = 'x';
	for (size_t i = 0; i < n; i++)
		sprintf(hex + 2 + 2 * i, "%02x", job->pieces[i]);
	hex[2 + 2 * n] = 0;
	const char *p[5] = {jid, s->worker_id, vf, pl, hex};
	wk_db_query(s->db, "SELECT pod.torrent_finish($1::bigint, $2, $3::bigint, $4::int, $5::bytea)", 5, p,
	            report_done, s);
	free(hex);
}

static void
hash_done_cb(struct ev_loop *loop, ev_async *w, int revents)
{
	seeder *s = w->data;
	(void)loop;
	(void)revents;
	if (s->hashing)
	{
		s->finished = s->hashing;
		s->hashing = NULL;
		if (atomic_load(&s->finished->cancel) && !s->finished->error[0])
			snprintf(s->finished->error, sizeof s->finished->error, "stopped");
	}
	seeder_schedule(s);
}

static void
claim_done(wk_db *db, PGresult *res, void *arg)
{
	seeder *s = arg;
	(void)db;
	if (!result_ok(res, "claiming a torrent job") || PQntuples(res) == 0)
		return;
	hash_job *job = calloc(1, sizeof *job);
	if (!job)
		abort();
	job->job_id = atoll(PQgetvalue(res, 0, 0));
	job->video_file = atoll(PQgetvalue(res, 0, 1));
	atomic_init(&job->cancel, false);
	s->claim_due = true; /* there may be more */
	if (wk_daemon_stopping())
	{
		/* the claim was on its way when SIGTERM came: give the job straight back */
		snprintf(job->error, sizeof job->error, "stopped");
		job->pieces = malloc(1);
		s->finished = job;
		return;
	}
	if (PQgetisnull(res, 0, 2))
	{
		/* the file went away: pod.torrent_finish completes the job and stores nothing */
		job->piece_length = 16384;
		job->pieces = malloc(1);
		s->finished = job;
		return;
	}
	snprintf(job->sha256, sizeof job->sha256, "%s", PQgetvalue(res, 0, 2));
	job->size = atoll(PQgetvalue(res, 0, 3));
	job->piece_length = atoll(PQgetvalue(res, 0, 4));
	wk_log(WK_INFO, "hashing video file %lld (%lld bytes, pieces of %lld) on %ld threads",
	       job->video_file, job->size, job->piece_length, s->cfg.threads);
	s->hashing = job;
	hash_start(s, job);
}

/* --- the loop's one decision point ---------------------------------------------------- */

static void
maybe_exit(seeder *s)
{
	if (wk_daemon_stopping() && !s->hashing && !s->finished && (s->grace_over || peer_drain(s)) &&
	    wk_db_idle(s->db))
		wk_daemon_drained();
}

static void
pump(seeder *s)
{
	if (wk_db_idle(s->db))
	{
		if (s->finished)
			send_report(s);
		else if (!wk_daemon_stopping() && !s->loaded)
			wk_db_query(s->db, LOAD_SQL, 0, NULL, load_done, s);
		else if (!wk_daemon_stopping() && s->sync_due)
		{
			s->sync_due = false;
			wk_db_query(s->db, IDS_SQL, 0, NULL, ids_done, s);
		}
		else if (!wk_daemon_stopping() && s->claim_due && !s->hashing)
		{
			char lease[32];
			snprintf(lease, sizeof lease, "%ld", s->cfg.lease_s);
			const char *p[2] = {s->worker_id, lease};
			s->claim_due = false;
			wk_db_query(s->db, CLAIM_SQL, 2, p, claim_done, s);
		}
	}
	announce_due(s);
	maybe_exit(s);
}

static void
db_ready(wk_db *db, void *arg)
{
	(void)db;
	pump(arg);
}

static void
db_notify(wk_db *db, const char *channel, void *arg)
{
	seeder *s = arg;
	(void)db;
	if (strcmp(channel, "pod_torrents") == 0)
		s->sync_due = true;
	else
		s->claim_due = true;
	seeder_schedule(s);
}

static void
db_lost(wk_db *db, void *arg)
{
	seeder *s = arg;
	(void)db;
	/* notifications may have been missed while away */
	s->sync_due = s->claim_due = true;
}

static void
poll_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	seeder *s = w->data;
	(void)loop;
	(void)revents;
	s->claim_due = true;
	seeder_schedule(s);
}

static void
sweep_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	seeder *s = w->data;
	(void)loop;
	(void)revents;
	peer_sweep(s);
	seeder_schedule(s);
}

static void
announce_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)revents;
	seeder_schedule(w->data);
}

/* The grace period is over (wk_daemon's drain deadline): the peers are closed; one
 * more grace period to report, then exit regardless. */
static double
grace_over_cb(void *arg)
{
	seeder *s = arg;
	if (s->grace_over)
	{
		wk_log(WK_ERROR, "could not report to the database in time; exiting (the lease will expire)");
		return 0;
	}
	s->grace_over = true;
	if (s->peers)
		wk_log(WK_WARN, "grace period over: closing %ld peers", s->npeers);
	peer_close_all(s);
	seeder_schedule(s);
	return s->cfg.grace_ms / 1000.0 + 1.0;
}

/* SIGTERM (wk_daemon: STOPPING=1 sent, the grace period started). */
static void
stop_cb(void *arg)
{
	seeder *s = arg;
	struct ev_loop *loop = s->loop;
	wk_log(WK_INFO, "stopping: %ld peers finish their queued requests within %ld ms%s", s->npeers,
	       s->cfg.grace_ms, s->hashing ? "; the job being hashed is released" : "");
	if (s->hashing)
		atomic_store(&s->hashing->cancel, true);
	peer_stop_listening(s);
	peer_drain_begin(s);
	announce_abort_all(s);
	ev_timer_stop(loop, &s->poll_timer);
	ev_timer_stop(loop, &s->announce_timer);
	ev_timer_stop(loop, &s->sweep_timer);
	ev_timer_set(&s->sweep_timer, 0.05, 0.05); /* drain checks */
	ev_timer_start(loop, &s->sweep_timer);
	seeder_schedule(s);
}

static void
make_conninfo(char *buf, size_t size)
{
	snprintf(buf, size, "application_name=pgpod-seeder%s", getenv("PGUSER") ? "" : " user=pgpod_seeder");
}

int
main(int argc, char **argv)
{
	static const char *const channels[] = {"pod_torrents", "pod_jobs_torrent", NULL};
	static seeder s;
	char host[64] = "host";
	char conninfo[256];
	const char *e;
	wk_db_callbacks cb = {db_ready, db_notify, db_lost, &s};

	(void)argc;
	(void)argv;
	wk_log_init("pgpod-seeder");
	s.cfg.peer_port = wk_env_long("PGPOD_PEER_PORT", 6881, 1, 65535);
	snprintf(s.cfg.peer_addr, sizeof s.cfg.peer_addr, "%s",
	         (e = getenv("PGPOD_PEER_ADDR")) && *e ? e : "0.0.0.0");
	snprintf(s.cfg.store_dir, sizeof s.cfg.store_dir, "%s",
	         (e = getenv("PGPOD_STORE_DIR")) && *e ? e : ".pgpod/store");
	s.cfg.max_peers = wk_env_long("PGPOD_SEEDER_MAX_PEERS", 200, 1, 100000);
	s.cfg.max_requests = wk_env_long("PGPOD_SEEDER_MAX_REQUESTS", 500, 1, 10000);
	long cores = sysconf(_SC_NPROCESSORS_ONLN);
	s.cfg.threads = wk_env_long("PGPOD_SEEDER_THREADS", cores > 0 ? cores : 1, 1, 256);
	s.cfg.poll_ms = wk_env_long("PGPOD_SEEDER_POLL_MS", 1000, 10, 600000);
	s.cfg.grace_ms = wk_env_long("PGPOD_SEEDER_GRACE_MS", 5000, 0, 600000);
	s.cfg.idle_s = wk_env_long("PGPOD_SEEDER_IDLE_S", 180, 1, 86400);
	s.cfg.handshake_ms = wk_env_long("PGPOD_SEEDER_HANDSHAKE_MS", 10000, 100, 600000);
	s.cfg.lease_s = wk_env_long("PGPOD_SEEDER_LEASE_S", 300, 5, 86400);
	s.cfg.announce_parallel = wk_env_long("PGPOD_SEEDER_ANNOUNCES", 16, 1, 1000);
	gethostname(host, sizeof(host) - 1);
	snprintf(s.worker_id, sizeof s.worker_id, "seeder:%s:%d", host, (int)getpid());
	/* Azureus-style peer id: -PG0001- and 12 random bytes */
	memcpy(s.peer_id, "-PG0001-", 8);
	if (RAND_bytes(s.peer_id + 8, 12) != 1)
		for (int i = 8; i < 20; i++)
			s.peer_id[i] = (uint8_t)(rand() & 0xff);

	s.loop = EV_DEFAULT;
	s.listen_fd = -1;
	s.sync_due = false;
	s.claim_due = true;
	if (peer_listen(&s) != 0)
		return 1;
	ev_idle_init(&s.kick, kick_cb);
	s.kick.data = &s;
	ev_async_init(&s.hash_done, hash_done_cb);
	s.hash_done.data = &s;
	ev_async_start(s.loop, &s.hash_done);
	ev_timer_init(&s.poll_timer, poll_cb, s.cfg.poll_ms / 1000.0, s.cfg.poll_ms / 1000.0);
	s.poll_timer.data = &s;
	ev_timer_start(s.loop, &s.poll_timer);
	ev_timer_init(&s.sweep_timer, sweep_cb, 10.0, 10.0);
	s.sweep_timer.data = &s;
	ev_timer_start(s.loop, &s.sweep_timer);
	ev_timer_init(&s.announce_timer, announce_cb, 0.25, 0.25);
	s.announce_timer.data = &s;
	ev_timer_start(s.loop, &s.announce_timer);
	wk_daemon_start(s.loop, &(wk_daemon_config){.stop = stop_cb,
	                                             .deadline = grace_over_cb,
	                                             .arg = &s,
	                                             .drain_seconds = s.cfg.grace_ms / 1000.0});

	make_conninfo(conninfo, sizeof conninfo);
	wk_log(WK_INFO, "starting as %s: peers on %s:%ld (at most %ld), hashing on %ld threads, store %s",
	       s.worker_id, s.cfg.peer_addr, s.cfg.peer_port, s.cfg.max_peers, s.cfg.threads,
	       s.cfg.store_dir);
	s.db = wk_db_new(s.loop, conninfo, channels, cb);
	ev_run(s.loop, 0);
	wk_daemon_stop_watching();

	wk_log(WK_INFO, "stopped (%lld blocks, %lld bytes served)", s.served_blocks, s.served_bytes);
	peer_close_all(&s);
	announce_abort_all(&s);
	peer_stop_listening(&s);
	wk_db_free(s.db);
	for (size_t i = 0; i < s.n; i++)
		torrent_free(s.all[i]);
	free(s.all);
	free(s.index);
	free(s.index_req2);
	hash_job_free(s.finished);
	return 0;
}
