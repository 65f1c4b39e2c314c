/*
 * transcoder.c — pgpod's transcoding daemon: claims transcode jobs (leased), probes the
 * source with ffprobe, runs one ffmpeg per video (command.c) with its progress sent to
 * the job (renewing the lease) a few times a second, then hashes the outputs, records
 * their blobs as orphaned, links them into the content store and publishes the video
 * in one transaction (pod.transcode_publish). The database owns every job: killed at
 * any instant, this process leaves at most orphaned blobs for the collector and a work
 * directory that the job's next attempt removes first. SIGTERM stops ffmpeg and gives
 * the job back. Single-threaded on the default libev loop; one libpq connection.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "transcoder.h"

typedef struct settings
{
	long jobs;        /* videos transcoded at once */
	long threads;     /* ffmpeg -threads, 0: ffmpeg's choice (every core) */
	long poll_ms;     /* timer wake-up: delayed retries, expired leases */
	long progress_ms; /* at most one progress report per job this often */
	const char *store;
	const char *ffmpeg;
	const char *ffprobe;
} settings;

enum role
{
	R_MP4,
	R_HLS,
	R_PLAYLIST,
	R_MASTER,
	R_THUMBNAIL,
	R_PREVIEW
};
static const char *const role_names[] = {"mp4", "hls", "playlist", "master", "thumbnail", "preview"};

typedef struct out_file
{
	enum role role;
	int rung; /* index in the plan, -1 for the others */
	char name[64];
	char id[37];
	char sha[65];
	long long size;
	const char *mime;
} out_file;

#define MAX_FILES (TC_MAX_RUNGS * 3 + 3)

typedef struct transcoder transcoder;

enum phase
{
	P_PROBE,
	P_ENCODE,
	P_HASH,
	P_DB, /* staging or publishing */
	P_END
};

typedef struct job
{
	struct job *next;
	transcoder *t;
	long long id;
	char video[40];
	char source[4096];
	long long source_size;
	int ladder[16], nladder;
	double lease;
	char dir[4096];
	enum phase phase;
	wk_child *child;
	wk_buf out; /* ffprobe's JSON, sha256sum's lines */
	tc_media media;
	tc_plan plan;
	int progress, sent_progress;
	double last_report;
	bool report_in_flight;
	bool lost;     /* the lease went to someone else: drop everything */
	bool released; /* stopping: give the job back */
	ev_timer tick;
	out_file files[MAX_FILES];
	int nfiles;
	int pending_ops;
	double started;
} job;

typedef struct op
{
	struct op *next;
	const char *sql;
	int nparams;
	char *params[5];
	void (*done)(job *j, PGresult *res);
	job *job;
} op;

struct transcoder
{
	struct ev_loop *loop;
	settings cfg;
	char worker_id[128];
	wk_db *db;
	op *ops, *ops_tail;
	job *jobs;
	int njobs;
	bool claiming, want_claim, ready_sent;
	int short_claims; /* claims in a row that found fewer jobs than asked */
	int claim_asked;  /* what the claim in flight asked for */
	ev_timer poll_timer;
	ev_idle kick;
};

static void schedule(transcoder *t);
static void job_fail(job *j, const char *reason, bool permanent);

/* --- database operations: one at a time on the connection, in order ------------------ */

static void
op_push(transcoder *t, job *j, const char *sql, int nparams, const char *const *params,
        void (*done)(job *, PGresult *))
{
	op *o = calloc(1, sizeof *o);
	if (!o)
		abort();
	o->sql = sql;
	o->nparams = nparams;
	for (int i = 0; i < nparams; i++)
		o->params[i] = params[i] ? strdup(params[i]) : NULL;
	o->done = done;
	o->job = j;
	if (j)
		j->pending_ops++;
	if (t->ops_tail)
		t->ops_tail->next = o;
	else
		t->ops = o;
	t->ops_tail = o;
	schedule(t);
}

static void job_maybe_free(job *j);

static void
op_done(wk_db *db, PGresult *res, void *arg)
{
	op *o = arg;

	(void)db;
	if (o->job)
		o->job->pending_ops--;
	if (res && PQresultStatus(res) != PGRES_TUPLES_OK && PQresultStatus(res) != PGRES_COMMAND_OK)
		wk_log(WK_WARN, "query failed: %s", PQresultErrorMessage(res));
	if (o->done)
		o->done(o->job, res);
	else if (o->job)
		job_maybe_free(o->job);
	for (int i = 0; i < o->nparams; i++)
		free(o->params[i]);
	free(o);
}

static bool
res_ok(PGresult *res)
{
	return res && (PQresultStatus(res) == PGRES_TUPLES_OK || PQresultStatus(res) == PGRES_COMMAND_OK);
}

/* --- the work directory ------------------------------------------------------------ */

static int
rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	if (flag == FTW_DP)
		rmdir(path);
	else
		unlink(path);
	return 0;
}

static void
rm_tree(const char *dir)
{
	struct stat st;
	if (stat(dir, &st) == 0)
		nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* --- jobs -------------------------------------------------------------------------- */

static void
job_maybe_free(job *j)
{
	transcoder *t = j->t;

	if (j->phase != P_END || j->pending_ops > 0 || j->child)
		return;
	ev_timer_stop(t->loop, &j->tick);
	rm_tree(j->dir);
	for (job **pp = &t->jobs; *pp; pp = &(*pp)->next)
		if (*pp == j)
		{
			*pp = j->next;
			break;
		}
	t->njobs--;
	wk_buf_free(&j->out);
	free(j);
	t->want_claim = true;
	schedule(t);
}

static void
job_end(job *j)
{
	j->phase = P_END;
	job_maybe_free(j);
}

static void
generic_end(job *j, PGresult *res)
{
	(void)res;
	job_end(j);
}

static void
job_fail(job *j, const char *reason, bool permanent)
{
	char id[32];
	const char *params[4];

	wk_log(permanent ? WK_INFO : WK_WARN, "job %lld (video %s): %s%s", j->id, j->video, reason,
	       permanent ? "" : " (will retry)");
	if (j->lost)
	{
		job_end(j);
		return;
	}
	snprintf(id, sizeof id, "%lld", j->id);
	params[0] = id;
	params[1] = j->t->worker_id;
	params[2] = reason;
	params[3] = permanent ? "true" : "false";
	j->phase = P_DB;
	op_push(j->t, j, "SELECT pod.transcode_fail($1::bigint, $2, $3, $4::boolean)", 4, params, generic_end);
}

static void
job_release(job *j)
{
	char id[32];
	const char *params[2];

	wk_log(WK_INFO, "job %lld (video %s): released", j->id, j->video);
	snprintf(id, sizeof id, "%lld", j->id);
	params[0] = id;
	params[1] = j->t->worker_id;
	j->phase = P_DB;
	op_push(j->t, j, "SELECT pod.transcode_release($1::bigint, $2)", 2, params, generic_end);
}

static void
uuid_v4(char out[37])
{
	unsigned char b[16];

	if (getrandom(b, sizeof b, 0) != (ssize_t)sizeof b)
		for (int i = 0; i < 16; i++)
			b[i] = (unsigned char)rand();
	b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
	b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
	snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1], b[2],
	         b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
}

static out_file *
add_file(job *j, enum role role, int rung, const char *name, const char *mime)
{
	out_file *f = &j->files[j->nfiles++];

	memset(f, 0, sizeof *f);
	f->role = role;
	f->rung = rung;
	snprintf(f->name, sizeof f->name, "%s", name);
	f->mime = mime;
	uuid_v4(f->id);
	return f;
}

/* --- publishing ---------------------------------------------------------------------- */

static void
publish_done(job *j, PGresult *res)
{
	if (!res_ok(res))
	{
		const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
		if (state && !strcmp(state, "55000"))
		{
			wk_log(WK_WARN, "job %lld: no longer ours at publication; its outputs are left to the collector", j->id);
			j->lost = true;
			job_end(j);
			return;
		}
		job_fail(j, res ? PQresultErrorMessage(res) : "database connection lost while publishing", false);
		return;
	}
	wk_log(WK_INFO, "job %lld: video %s published (%d renditions, %.1f s)", j->id, j->video, j->plan.nrungs,
	       ev_now(j->t->loop) - j->started);
	job_end(j);
}

static void
send_publish(job *j)
{
	json_t *files = json_array(), *result;
	char id[32], *text;
	const char *params[3];

	for (int i = 0; i < j->nfiles; i++)
	{
		out_file *f = &j->files[i];
		char name[128];
		json_t *o;

		snprintf(name, sizeof name, "%s", f->name);
		o = json_pack("{s:s, s:s, s:I, s:s, s:s, s:s}", "id", f->id, "sha256", f->sha, "size", (json_int_t)f->size,
		              "name", name, "mime", f->mime, "role", role_names[f->role]);
		if (f->rung >= 0)
		{
			const tc_rung *r = &j->plan.rungs[f->rung];
			json_object_set_new(o, "resolution", json_integer(r->resolution));
			json_object_set_new(o, "fps", json_real(j->media.fps));
			json_object_set_new(o, "bitrate", json_integer((json_int_t)(f->size * 8 / j->media.duration)));
			if (f->role == R_HLS)
				for (int k = 0; k < j->nfiles; k++)
					if (j->files[k].role == R_PLAYLIST && j->files[k].rung == f->rung)
						json_object_set_new(o, "playlist", json_string(j->files[k].id));
		}
		json_array_append_new(files, o);
	}
	result = json_pack("{s:f, s:i, s:i, s:f, s:o}", "duration", j->media.duration, "width", j->media.width,
	                   "height", j->media.height, "fps", j->media.fps, "files", files);
	text = json_dumps(result, JSON_COMPACT);
	json_decref(result);
	snprintf(id, sizeof id, "%lld", j->id);
	params[0] = id;
	params[1] = j->t->worker_id;
	params[2] = text;
	op_push(j->t, j, "SELECT pod.transcode_publish($1::bigint, $2, $3::jsonb)", 3, params, publish_done);
	free(text);
}

/* The blobs are recorded (orphaned): link the outputs into the store, then publish. */
static void
staged_done(job *j, PGresult *res)
{
	char err[512];

	if (j->lost || j->released)
	{
		if (j->released && !j->lost && res_ok(res))
			job_release(j);
		else
			job_end(j);
		return;
	}
	if (!res_ok(res))
	{
		const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
		if (state && !strcmp(state, "55000"))
		{
			j->lost = true;
			job_end(j);
			return;
		}
		job_fail(j, res ? PQresultErrorMessage(res) : "database connection lost while staging", false);
		return;
	}
	for (int i = 0; i < j->nfiles; i++)
	{
		out_file *f = &j->files[i];
		char src[4608], dst[4608];

		snprintf(dst, sizeof dst, "%s/blobs/%.2s", j->t->cfg.store, f->sha);
		/* a new name reaches the disk before the database names the blob: the
		 * directory that holds it is fsync'ed (workers/lib/durable.c) */
		if (mkdir(dst, 0750) == 0 && wk_fsync_parent(dst) < 0)
			goto failed;
		snprintf(dst, sizeof dst, "%s/blobs/%.2s/%s", j->t->cfg.store, f->sha, f->sha);
		snprintf(src, sizeof src, "%s/%s", j->dir, f->name);
		/* link, never rename over: the same content may already be stored */
		if (link(src, dst) == 0 ? wk_fsync_parent(dst) < 0 : errno != EEXIST)
		{
		failed:
			snprintf(err, sizeof err, "cannot store %.400s: %s", dst, strerror(errno));
			job_fail(j, err, false);
			return;
		}
	}
	send_publish(j);
}

static void
hash_line(wk_child *c, char *line, void *arg)
{
	job *j = arg;
	char *sp = strstr(line, "  ");

	(void)c;
	if (!sp || sp - line != 64)
		return;
	*sp = '\0';
	for (int i = 0; i < j->nfiles; i++)
		if (!strcmp(j->files[i].name, sp + 2))
			snprintf(j->files[i].sha, sizeof j->files[i].sha, "%s", line);
}

static void
hash_exit(wk_child *c, int status, void *arg)
{
	job *j = arg;
	wk_buf hashes = {0}, sizes = {0};
	char id[32];
	const char *params[4];

	(void)c;
	j->child = NULL;
	if (j->lost || j->released)
	{
		if (j->released && !j->lost)
			job_release(j);
		else
			job_end(j);
		return;
	}
	wk_array_begin(&hashes);
	wk_array_begin(&sizes);
	for (int i = 0; i < j->nfiles; i++)
	{
		char n[32];
		if (strlen(j->files[i].sha) != 64 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
		{
			job_fail(j, "could not hash the outputs", false);
			wk_buf_free(&hashes);
			wk_buf_free(&sizes);
			return;
		}
		snprintf(n, sizeof n, "%lld", j->files[i].size);
		wk_array_add(&hashes, j->files[i].sha);
		wk_array_add(&sizes, n);
	}
	wk_array_end(&hashes);
	wk_array_end(&sizes);
	snprintf(id, sizeof id, "%lld", j->id);
	params[0] = id;
	params[1] = j->t->worker_id;
	params[2] = hashes.data;
	params[3] = sizes.data;
	j->phase = P_DB;
	op_push(j->t, j,
	        "SELECT pod.transcode_stage_blobs($1::bigint, $2, (SELECT array_agg(decode(h, 'hex') ORDER BY n) FROM "
	        "unnest($3::text[]) WITH ORDINALITY u(h, n)), $4::bigint[])",
	        4, params, staged_done);
	wk_buf_free(&hashes);
	wk_buf_free(&sizes);
}

/* ffmpeg is done: name the outputs, write the playlists, hash everything. */
static void
post_process(job *j)
{
	char err[512], path[4608];
	tc_variant variants[TC_MAX_RUNGS];
	out_file *playlists[TC_MAX_RUNGS];
	char **argv, uri[64], variant_uris[TC_MAX_RUNGS][64];
	int n = 0;

	j->nfiles = 0;
	for (int i = 0; i < j->plan.nrungs; i++)
	{
		const tc_rung *r = &j->plan.rungs[i];
		out_file *hls;

		add_file(j, R_MP4, i, r->mp4, "video/mp4");
		hls = add_file(j, R_HLS, i, r->hls_media, "video/mp4");
		playlists[i] = add_file(j, R_PLAYLIST, i, r->hls_playlist, "application/vnd.apple.mpegurl");
		snprintf(path, sizeof path, "%s/%s", j->dir, r->hls_playlist);
		/* the playlist names its media by the file's id: /files/<id>.mp4 beside it */
		snprintf(uri, sizeof uri, "%s.mp4", hls->id);
		if (tc_playlist_rewrite(path, r->hls_media, uri, err, sizeof err) < 0)
		{
			job_fail(j, err, false);
			return;
		}
	}
	for (int i = 0; i < j->plan.nrungs; i++)
	{
		variants[i].rung = &j->plan.rungs[i];
		variants[i].bandwidth = j->plan.rungs[i].maxrate + (j->media.has_audio ? 192000 : 0);
		snprintf(variant_uris[i], sizeof variant_uris[i], "%s.m3u8", playlists[i]->id);
		variants[i].uri = variant_uris[i];
	}
	add_file(j, R_MASTER, -1, "master.m3u8", "application/vnd.apple.mpegurl");
	snprintf(path, sizeof path, "%s/master.m3u8", j->dir);
	if (tc_master_write(path, variants, j->plan.nrungs, j->media.fps, j->media.has_audio, err, sizeof err) < 0)
	{
		job_fail(j, err, false);
		return;
	}
	add_file(j, R_THUMBNAIL, -1, "thumbnail.jpg", "image/jpeg");
	add_file(j, R_PREVIEW, -1, "preview.jpg", "image/jpeg");
	argv = calloc((size_t)j->nfiles + 5, sizeof *argv);
	if (!argv)
		abort();
	/* the outputs reach the disk (sync -d: fdatasync of each) before they are hashed
	 * and, later, named by the database (workers/lib/durable.c) */
	argv[n++] = "sh";
	argv[n++] = "-c";
	argv[n++] = "sync -d -- \"$@\" && exec sha256sum -- \"$@\"";
	argv[n++] = "sh";
	for (int i = 0; i < j->nfiles; i++)
	{
		struct stat st;
		snprintf(path, sizeof path, "%s/%s", j->dir, j->files[i].name);
		if (stat(path, &st) < 0 || st.st_size == 0)
		{
			snprintf(err, sizeof err, "ffmpeg wrote no %s", j->files[i].name);
			free(argv);
			job_fail(j, err, false);
			return;
		}
		j->files[i].size = st.st_size;
		argv[n++] = j->files[i].name;
	}
	j->phase = P_HASH;
	j->child = wk_child_spawn(j->t->loop, argv, j->dir, hash_line, hash_exit, j);
	free(argv);
	if (!j->child)
		job_fail(j, "cannot run sha256sum", false);
}

/* --- ffmpeg ---------------------------------------------------------------------------- */

static void
progress_done(job *j, PGresult *res)
{
	j->report_in_flight = false;
	if (res_ok(res) && PQntuples(res) == 1 && strcmp(PQgetvalue(res, 0, 0), "t") != 0 && !j->lost)
	{
		wk_log(WK_WARN, "job %lld: the lease went to another worker; stopping its ffmpeg", j->id);
		j->lost = true;
		if (j->child)
			wk_child_kill(j->child, SIGKILL);
	}
	job_maybe_free(j);
}

/* A few times a second at most: the progress when it moved, and the lease renewal. */
static void
tick_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	job *j = w->data;
	char id[32], pr[16];
	const char *params[3];
	double now = ev_now(loop);

	(void)revents;
	if (j->report_in_flight || j->lost || j->released || j->phase == P_END)
		return;
	if (j->progress == j->sent_progress && now - j->last_report < j->lease / 3)
		return;
	snprintf(id, sizeof id, "%lld", j->id);
	snprintf(pr, sizeof pr, "%d", j->progress);
	params[0] = id;
	params[1] = j->t->worker_id;
	params[2] = pr;
	j->sent_progress = j->progress;
	j->last_report = now;
	j->report_in_flight = true;
	op_push(j->t, j, "SELECT pod.transcode_progress($1::bigint, $2, $3::integer)", 3, params, progress_done);
}

static void
ffmpeg_line(wk_child *c, char *line, void *arg)
{
	job *j = arg;

	(void)c;
	if (!strncmp(line, "out_time_us=", 12))
	{
		double t = strtod(line + 12, NULL) / 1e6;
		int p = (int)(t * 100 / j->media.duration);
		if (p > 99)
			p = 99;
		if (p > j->progress)
			j->progress = p;
	}
}

static void
ffmpeg_exit(wk_child *c, int status, void *arg)
{
	job *j = arg;
	char reason[512], last[400];

	j->child = NULL;
	if (j->lost)
	{
		job_end(j);
		return;
	}
	if (j->released)
	{
		job_release(j);
		return;
	}
	if (WIFSIGNALED(status))
	{
		snprintf(reason, sizeof reason, "ffmpeg was killed by signal %d", WTERMSIG(status));
		job_fail(j, reason, false);
		return;
	}
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
	{
		wk_last_line(wk_child_stderr(c), last, sizeof last);
		snprintf(reason, sizeof reason, "ffmpeg failed (exit %d): %s", WEXITSTATUS(status),
		         last[0] ? last : "no message");
		job_fail(j, reason, false);
		return;
	}
	wk_log(WK_INFO, "job %lld: ffmpeg done in %.1f s", j->id, ev_now(j->t->loop) - j->started);
	j->progress = 99;
	post_process(j);
}

static void
start_ffmpeg(job *j)
{
	char **argv;
	wk_buf text = {0};

	tc_plan_make(&j->media, j->ladder, j->nladder, &j->plan);
	argv = tc_ffmpeg_argv(j->t->cfg.ffmpeg, j->source, &j->media, &j->plan, (int)j->t->cfg.threads);
	tc_argv_text(argv, &text);
	wk_log(WK_INFO, "job %lld (video %s, %dx%d, %.1f s): in %s: %s", j->id, j->video, j->media.width,
	       j->media.height, j->media.duration, j->dir, text.data);
	wk_buf_free(&text);
	j->phase = P_ENCODE;
	j->child = wk_child_spawn(j->t->loop, argv, j->dir, ffmpeg_line, ffmpeg_exit, j);
	tc_argv_free(argv);
	if (!j->child)
		job_fail(j, "cannot run ffmpeg", false);
}

/* --- ffprobe ------------------------------------------------------------------------- */

static void
probe_line(wk_child *c, char *line, void *arg)
{
	job *j = arg;

	(void)c;
	wk_buf_adds(&j->out, line);
	wk_buf_adds(&j->out, "\n");
}

static void
probe_exit(wk_child *c, int status, void *arg)
{
	job *j = arg;
	char reason[600], last[400];

	j->child = NULL;
	if (j->lost || j->released)
	{
		if (j->released && !j->lost)
			job_release(j);
		else
			job_end(j);
		return;
	}
	if (WIFSIGNALED(status))
	{
		job_fail(j, "ffprobe was killed", false);
		return;
	}
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
	{
		wk_last_line(wk_child_stderr(c), last, sizeof last);
		/* "<path>: Invalid data ..." names our store: keep what follows */
		const char *msg = strstr(last, ": ") ? strstr(last, ": ") + 2 : last;
		snprintf(reason, sizeof reason, "not a video: the file could not be read as media (%s)",
		         msg[0] ? msg : "ffprobe failed");
		job_fail(j, reason, true);
		return;
	}
	if (tc_probe_parse(j->out.data ? j->out.data : "", &j->media, reason, sizeof reason) < 0)
	{
		job_fail(j, reason, true);
		return;
	}
	start_ffmpeg(j);
}

static void
start_probe(job *j)
{
	char *argv[] = {(char *)j->t->cfg.ffprobe, "-v", "error", "-print_format", "json", "-show_format",
	                "-show_streams", j->source, NULL};
	struct stat st;

	if (stat(j->source, &st) < 0)
	{
		char reason[600];
		snprintf(reason, sizeof reason, "the source is not in this pod's store (%s)", strerror(errno));
		job_fail(j, reason, false);
		return;
	}
	if (st.st_size == 0 || j->source_size == 0)
	{
		job_fail(j, "not a video: the file is empty", true);
		return;
	}
	j->phase = P_PROBE;
	j->child = wk_child_spawn(j->t->loop, argv, j->dir, probe_line, probe_exit, j);
	if (!j->child)
		job_fail(j, "cannot run ffprobe", false);
}

static void
job_start(transcoder *t, PGresult *res, int row)
{
	job *j = calloc(1, sizeof *j);
	json_t *ladder;
	json_error_t jerr;
	size_t i;
	json_t *v;
	const char *hex = PQgetvalue(res, row, 2);

	if (!j)
		abort();
	j->t = t;
	j->id = strtoll(PQgetvalue(res, row, 0), NULL, 10);
	snprintf(j->video, sizeof j->video, "%s", PQgetvalue(res, row, 1));
	snprintf(j->source, sizeof j->source, "%s/blobs/%.2s/%s", t->cfg.store, hex, hex);
	j->source_size = strtoll(PQgetvalue(res, row, 3), NULL, 10);
	ladder = json_loads(PQgetvalue(res, row, 5), 0, &jerr);
	json_array_foreach(ladder, i, v) if (json_is_integer(v) && j->nladder < 16) j->ladder[j->nladder++] =
	    (int)json_integer_value(v);
	json_decref(ladder);
	j->lease = strtod(PQgetvalue(res, row, 6), NULL);
	if (j->lease < 1)
		j->lease = 1;
	j->sent_progress = 0;
	j->started = ev_now(t->loop);
	j->last_report = j->started;
	snprintf(j->dir, sizeof j->dir, "%s/tmp/transcode-%lld", t->cfg.store, j->id);
	j->next = t->jobs;
	t->jobs = j;
	t->njobs++;
	ev_timer_init(&j->tick, tick_cb, t->cfg.progress_ms / 1000.0, t->cfg.progress_ms / 1000.0);
	j->tick.data = j;
	ev_timer_start(t->loop, &j->tick);
	wk_log(WK_INFO, "job %lld: video %s, attempt %s, source %s", j->id, j->video, PQgetvalue(res, row, 4),
	       j->source);
	if (wk_daemon_stopping())
	{
		/* the claim was on its way when SIGTERM came: give the job straight back */
		j->released = true;
		job_release(j);
		return;
	}
	/* an earlier attempt's leftovers (its worker was killed) go first */
	rm_tree(j->dir);
	if (mkdir(j->dir, 0750) < 0)
	{
		char reason[600];
		snprintf(reason, sizeof reason, "cannot create %.400s: %s", j->dir, strerror(errno));
		job_fail(j, reason, false);
		return;
	}
	start_probe(j);
}

/* --- claiming and the loop ----------------------------------------------------------- */

static void
claim_done(job *unused, PGresult *res)
{
	transcoder *t = NULL;

	(void)unused;
	t = (transcoder *)ev_userdata(EV_DEFAULT);
	t->claiming = false;
	if (!res_ok(res))
		return;
	for (int i = 0; i < PQntuples(res); i++)
		job_start(t, res, i);
	/* Room may be left after a claim that found jobs. After a short one, claim once
	 * more at once: the second short claim in a row takes the kind's sleep lock
	 * before it looks (pod.job_claim), so every job inserted after it notifies us;
	 * after one short claim alone a new job would wait for the poll timer. */
	t->short_claims = PQntuples(res) == t->claim_asked ? 0 : t->short_claims + 1;
	if (PQntuples(res) > 0 || t->short_claims < 2)
		t->want_claim = true;
	schedule(t);
}

static void
kick_cb(struct ev_loop *loop, ev_idle *w, int revents)
{
	transcoder *t = w->data;

	(void)revents;
	ev_idle_stop(loop, w);
	if (!wk_db_idle(t->db))
		goto out;
	if (t->ops)
	{
		op *o = t->ops;
		t->ops = o->next;
		if (!t->ops)
			t->ops_tail = NULL;
		if (!wk_db_query(t->db, o->sql, o->nparams, (const char *const *)o->params, op_done, o))
			op_done(t->db, NULL, o);
		goto out;
	}
	if (!wk_daemon_stopping() && t->want_claim && !t->claiming && t->njobs < t->cfg.jobs)
	{
		char room[32];
		const char *params[2] = {t->worker_id, room};
		op *claim = calloc(1, sizeof *claim);

		if (!claim)
			abort();
		snprintf(room, sizeof room, "%ld", t->cfg.jobs - t->njobs);
		t->claim_asked = (int)(t->cfg.jobs - t->njobs);
		t->want_claim = false;
		t->claiming = true;
		claim->done = claim_done;
		if (!wk_db_query(t->db,
		                 "SELECT job_id, video_uuid, source_sha256, source_size, attempts, ladder::text, lease_seconds "
		                 "FROM pod.transcode_claim($1, $2::integer)",
		                 2, params, op_done, claim))
		{
			t->claiming = false;
			free(claim);
		}
	}
out:
	if (wk_daemon_stopping() && t->njobs == 0 && !t->ops && wk_db_idle(t->db))
	{
		wk_log(WK_INFO, "stopped");
		wk_daemon_drained();
	}
}

static void
schedule(transcoder *t)
{
	if (!ev_is_active(&t->kick))
		ev_idle_start(t->loop, &t->kick);
}

static void
db_ready(wk_db *db, void *arg)
{
	transcoder *t = arg;

	(void)db;
	if (!t->ready_sent)
	{
		t->ready_sent = true;
		t->want_claim = true;
		wk_sd_notify("READY=1\nSTATUS=transcoding");
	}
	schedule(t);
}

static void
db_notify(wk_db *db, const char *channel, void *arg)
{
	transcoder *t = arg;

	(void)db;
	(void)channel;
	t->want_claim = true;
	schedule(t);
}

static void
db_lost_cb(wk_db *db, void *arg)
{
	transcoder *t = arg;

	(void)db;
	t->want_claim = true;
	t->short_claims = 0; /* a new session holds no sleep lock */
}

static void
poll_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	transcoder *t = w->data;

	(void)loop;
	(void)revents;
	t->want_claim = true;
	schedule(t);
}

/* wk_daemon's drain deadline (PGPOD_TRANSCODER_DRAIN_MS) */
static double
stop_timeout_cb(void *arg)
{
	(void)arg;
	wk_log(WK_ERROR, "could not give the jobs back in time; exiting (their leases will expire)");
	return 0;
}

/* SIGTERM (wk_daemon: STOPPING=1 sent, the drain deadline started). */
static void
stop_cb(void *arg)
{
	transcoder *t = arg;
	struct ev_loop *loop = t->loop;

	wk_log(WK_INFO, "stopping: %d jobs are given back", t->njobs);
	ev_timer_stop(loop, &t->poll_timer);
	for (job *j = t->jobs; j; j = j->next)
	{
		j->released = true;
		/* ffmpeg stops on SIGTERM; its exit releases the job */
		if (j->child && (j->phase == P_ENCODE || j->phase == P_PROBE))
			wk_child_kill(j->child, SIGTERM);
	}
	schedule(t);
}

int
main(int argc, char **argv)
{
	static const char *const channels[] = {"pod_jobs_transcode", NULL};
	static transcoder t;
	char host[64] = "host", conninfo[256];
	wk_db_callbacks cb = {db_ready, db_notify, db_lost_cb, &t};
	const char *store = getenv("PGPOD_STORE_DIR");
	char tmp[4096];

	(void)argc;
	(void)argv;
	wk_log_init("pgpod-transcoder");
	if (!store || !*store)
	{
		wk_log(WK_ERROR, "PGPOD_STORE_DIR is not set (the content store the gateway writes)");
		return 1;
	}
	t.cfg.store = store;
	t.cfg.jobs = wk_env_long("PGPOD_TRANSCODER_JOBS", 1, 1, 64);
	t.cfg.threads = wk_env_long("PGPOD_TRANSCODER_THREADS", 0, 0, 256);
	t.cfg.poll_ms = wk_env_long("PGPOD_TRANSCODER_POLL_MS", 5000, 10, 600000);
	t.cfg.progress_ms = wk_env_long("PGPOD_TRANSCODER_PROGRESS_MS", 500, 50, 60000);
	t.cfg.ffmpeg = getenv("PGPOD_TRANSCODER_FFMPEG") ? getenv("PGPOD_TRANSCODER_FFMPEG") : "ffmpeg";
	t.cfg.ffprobe = getenv("PGPOD_TRANSCODER_FFPROBE") ? getenv("PGPOD_TRANSCODER_FFPROBE") : "ffprobe";
	snprintf(tmp, sizeof tmp, "%s/tmp", store);
	mkdir(store, 0750);
	mkdir(tmp, 0750);
	snprintf(tmp, sizeof tmp, "%s/blobs", store);
	mkdir(tmp, 0750);
	gethostname(host, sizeof(host) - 1);
	snprintf(t.worker_id, sizeof t.worker_id, "transcoder:%s:%d", host, (int)getpid());

	t.loop = EV_DEFAULT;
	ev_set_userdata(t.loop, &t);
	ev_timer_init(&t.poll_timer, poll_cb, t.cfg.poll_ms / 1000.0, t.cfg.poll_ms / 1000.0);
	t.poll_timer.data = &t;
	ev_timer_start(t.loop, &t.poll_timer);
	ev_idle_init(&t.kick, kick_cb);
	t.kick.data = &t;
	wk_daemon_start(t.loop,
	                &(wk_daemon_config){.stop = stop_cb,
	                                    .deadline = stop_timeout_cb,
	                                    .arg = &t,
	                                    .drain_seconds = wk_env_long("PGPOD_TRANSCODER_DRAIN_MS", 20000, 0,
	                                                                 3600000) / 1000.0});

	snprintf(conninfo, sizeof conninfo, "application_name=pgpod-transcoder%s",
	         getenv("PGUSER") ? "" : " user=pgpod_transcoder");
	wk_log(WK_INFO, "starting as %s (%ld jobs at once, store %s)", t.worker_id, t.cfg.jobs, store);
	t.db = wk_db_new(t.loop, conninfo, channels, cb);
	ev_run(t.loop, 0);
	wk_daemon_stop_watching();
	wk_db_free(t.db);
	while (t.ops)
	{
		op *o = t.ops;
		t.ops = o->next;
		for (int i = 0; i < o->nparams; i++)
			free(o->params[i]);
		free(o);
	}
	return 0;
}
