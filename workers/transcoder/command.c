/*
 * command.c — the renditions of a source and the single ffmpeg command that writes
 * them: the source is decoded once, split and scaled per rendition, and each rendition
 * is encoded once (H.264 + AAC with PeerTube's rate control: veryfast, maxrate/bufsize
 * from pixels × fps × bits per pixel, GOP of 2 s, yuv420p) and muxed twice through the
 * tee muxer, as a faststart MP4 and as an HLS fMP4 single file with a byte-range
 * playlist; the thumbnail and preview come from the same decode. Also the playlist
 * rewriting and the master playlist written afterwards.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "transcoder.h"

/* Bits per pixel by resolution (PeerTube's table, after bitmovin's guidance). */
static double
average_bpp(int r)
{
	return r >= 2160 ? 0.08 : r >= 1440 ? 0.09 : r >= 1080 ? 0.10 : r >= 720 ? 0.11 : r >= 480 ? 0.12 : r >= 360 ? 0.15
	       : r >= 240                                                                           ? 0.17
	                                                                                            : 0.19;
}

static int
even(int v)
{
	return v < 2 ? 2 : v & ~1;
}

void
tc_plan_make(const tc_media *m, const int *ladder, int nladder, tc_plan *p)
{
	bool portrait = m->width < m->height;
	int source_res = portrait ? m->width : m->height;

	memset(p, 0, sizeof *p);
	for (int i = 0; i < nladder && p->nrungs < TC_MAX_RUNGS; i++)
	{
		bool dup = false;
		for (int j = 0; j < p->nrungs; j++)
			dup |= p->rungs[j].resolution == ladder[i];
		if (ladder[i] >= 144 && ladder[i] <= source_res && !dup)
			p->rungs[p->nrungs++].resolution = ladder[i];
	}
	if (p->nrungs == 0)
		p->rungs[p->nrungs++].resolution = even(source_res);
	/* highest first */
	for (int i = 0; i < p->nrungs; i++)
		for (int j = i + 1; j < p->nrungs; j++)
			if (p->rungs[j].resolution > p->rungs[i].resolution)
			{
				tc_rung t = p->rungs[i];
				p->rungs[i] = p->rungs[j];
				p->rungs[j] = t;
			}
	p->gop = (int)(m->fps * 2 + 0.5);
	for (int i = 0; i < p->nrungs; i++)
	{
		tc_rung *r = &p->rungs[i];
		double pixels, avg, min;

		/* as ffmpeg's scale=-2 computes the other side: the nearest multiple of 2 */
		if (portrait)
		{
			r->width = r->resolution;
			r->height = 2 * (int)((double)r->resolution * m->height / m->width / 2 + 0.5);
		}
		else
		{
			r->height = r->resolution;
			r->width = 2 * (int)((double)r->resolution * m->width / m->height / 2 + 0.5);
		}
		pixels = (double)r->width * r->height;
		avg = pixels * m->fps * average_bpp(r->resolution);
		min = pixels * m->fps * 0.02;
		if (m->bit_rate > 0 && m->bit_rate * 1.3 < avg)
			avg = m->bit_rate * 1.3;
		r->maxrate = (long long)(avg > min ? avg : min);
		snprintf(r->mp4, sizeof r->mp4, "%dp.mp4", r->resolution);
		snprintf(r->hls_media, sizeof r->hls_media, "%dp-hls.mp4", r->resolution);
		snprintf(r->hls_playlist, sizeof r->hls_playlist, "%dp.m3u8", r->resolution);
	}
}

typedef struct argv_b
{
	char **v;
	int n, cap;
} argv_b;

static void
arg(argv_b *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
arg(argv_b *a, const char *fmt, ...)
{
	va_list ap;
	char *s;

	if (a->n + 2 > a->cap)
	{
		a->cap = a->cap ? a->cap * 2 : 64;
		a->v = realloc(a->v, (size_t)a->cap * sizeof *a->v);
		if (!a->v)
			abort();
	}
	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) < 0)
		abort();
	va_end(ap);
	a->v[a->n++] = s;
	a->v[a->n] = NULL;
}

char **
tc_ffmpeg_argv(const char *ffmpeg, const char *source, const tc_media *m, const tc_plan *p, int threads)
{
	argv_b a = {0};
	wk_buf graph = {0};
	bool portrait = m->width < m->height;
	double thumb_at = m->duration / 2;

	arg(&a, "%s", ffmpeg);
	arg(&a, "-hide_banner");
	arg(&a, "-nostdin");
	arg(&a, "-y");
	arg(&a, "-nostats");
	arg(&a, "-loglevel");
	arg(&a, "error");
	arg(&a, "-progress");
	arg(&a, "pipe:1");
	arg(&a, "-stats_period");
	arg(&a, "0.25");
	if (threads > 0)
	{
		arg(&a, "-threads");
		arg(&a, "%d", threads);
	}
	arg(&a, "-i");
	arg(&a, "%s", source);
	/* one decode, split: a branch per rendition and one for the still images */
	wk_buf_printf(&graph, "[0:v:0]split=%d", p->nrungs + 1);
	for (int i = 0; i < p->nrungs; i++)
		wk_buf_printf(&graph, "[s%d]", i);
	wk_buf_adds(&graph, "[still]");
	for (int i = 0; i < p->nrungs; i++)
		wk_buf_printf(&graph, ";[s%d]scale=w=%s:h=%s[v%d]", i, portrait ? "%d" : "-2", portrait ? "-2" : "%d", i);
	/* the format strings above hold one %d for the resolution: fill it in */
	{
		wk_buf g2 = {0};
		const char *s = graph.data;
		int k = 0;
		while (*s)
		{
			if (s[0] == '%' && s[1] == 'd')
			{
				wk_buf_printf(&g2, "%d", p->rungs[k++].resolution);
				s += 2;
			}
			else
				wk_buf_add(&g2, s++, 1);
		}
		wk_buf_free(&graph);
		graph = g2;
	}
	wk_buf_printf(&graph,
	              ";[still]select='gte(t\\,%.3f)',scale=%d:%d:force_original_aspect_ratio=increase,crop=%d:%d,"
	              "setsar=1,split[preview][t0];[t0]scale=%d:%d[thumb]",
	              thumb_at, TC_PREVIEW_W, TC_PREVIEW_H, TC_PREVIEW_W, TC_PREVIEW_H, TC_THUMB_W, TC_THUMB_H);
	arg(&a, "-filter_complex");
	arg(&a, "%s", graph.data);
	wk_buf_free(&graph);
	for (int i = 0; i < p->nrungs; i++)
	{
		const tc_rung *r = &p->rungs[i];
		arg(&a, "-map");
		arg(&a, "[v%d]", i);
		if (m->has_audio)
		{
			arg(&a, "-map");
			arg(&a, "0:a:0");
		}
		arg(&a, "-c:v");
		arg(&a, "libx264");
		arg(&a, "-preset");
		arg(&a, "veryfast");
		arg(&a, "-profile:v");
		arg(&a, "high");
		arg(&a, "-level:v");
		arg(&a, "%s", r->resolution > 1080 ? "5.1" : "4.2");
		arg(&a, "-maxrate:v");
		arg(&a, "%lld", r->maxrate);
		arg(&a, "-bufsize:v");
		arg(&a, "%lld", r->maxrate * 2);
		arg(&a, "-b_strategy");
		arg(&a, "1");
		arg(&a, "-bf");
		arg(&a, "16");
		arg(&a, "-g:v");
		arg(&a, "%d", p->gop);
		arg(&a, "-r");
		arg(&a, "%s", m->fps_text);
		arg(&a, "-pix_fmt");
		arg(&a, "yuv420p");
		if (m->has_audio)
		{
			if (m->audio_copy)
			{
				arg(&a, "-c:a");
				arg(&a, "copy");
			}
			else
			{
				arg(&a, "-c:a");
				arg(&a, "aac");
				arg(&a, "-ac");
				arg(&a, "2");
				arg(&a, "-b:a");
				arg(&a, "192k");
			}
		}
		arg(&a, "-map_metadata");
		arg(&a, "-1");
		arg(&a, "-max_muxing_queue_size");
		arg(&a, "1024");
		arg(&a, "-f");
		arg(&a, "tee");
		arg(&a,
		    "[f=mp4:movflags=+faststart]%s|[f=hls:hls_time=4:hls_playlist_type=vod:hls_segment_type=fmp4:"
		    "hls_flags=single_file:hls_segment_filename=%s]%s",
		    r->mp4, r->hls_media, r->hls_playlist);
	}
	arg(&a, "-map");
	arg(&a, "[preview]");
	arg(&a, "-frames:v");
	arg(&a, "1");
	arg(&a, "-q:v");
	arg(&a, "3");
	arg(&a, "preview.jpg");
	arg(&a, "-map");
	arg(&a, "[thumb]");
	arg(&a, "-frames:v");
	arg(&a, "1");
	arg(&a, "-q:v");
	arg(&a, "3");
	arg(&a, "thumbnail.jpg");
	return a.v;
}

void
tc_argv_free(char **argv)
{
	for (char **p = argv; p && *p; p++)
		free(*p);
	free(argv);
}

void
tc_argv_text(char *const *argv, wk_buf *out)
{
	for (int i = 0; argv[i]; i++)
	{
		if (i)
			wk_buf_adds(out, " ");
		wk_buf_adds(out, "'");
		for (const char *s = argv[i]; *s; s++)
			if (*s == '\'')
				wk_buf_adds(out, "'\\''");
			else
				wk_buf_add(out, s, 1);
		wk_buf_adds(out, "'");
	}
}

static char *
slurp(const char *path, char *err, size_t errlen)
{
	FILE *f = fopen(path, "r");
	wk_buf b = {0};
	char chunk[4096];
	size_t n;

	if (!f)
	{
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return NULL;
	}
	while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
		wk_buf_add(&b, chunk, n);
	fclose(f);
	if (!b.data)
		wk_buf_add(&b, "", 0);
	return b.data;
}

static int
write_text(const char *path, const char *text, char *err, size_t errlen)
{
	FILE *f = fopen(path, "w");

	if (!f || fputs(text, f) < 0 || fclose(f) != 0)
	{
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	return 0;
}

int
tc_playlist_rewrite(const char *path, const char *old_uri, const char *media_uri, char *err, size_t errlen)
{
	char *text = slurp(path, err, errlen), *s;
	wk_buf out = {0};
	size_t ol = strlen(old_uri);
	int found = 0, rc;

	if (!text)
		return -1;
	/* the URI appears quoted in EXT-X-MAP and alone on each segment's line */
	for (s = text; *s;)
	{
		if (!strncmp(s, old_uri, ol) && (s == text || s[-1] == '"' || s[-1] == '\n') &&
		    (s[ol] == '"' || s[ol] == '\n' || s[ol] == '\0'))
		{
			wk_buf_adds(&out, media_uri);
			s += ol;
			found++;
		}
		else
			wk_buf_add(&out, s++, 1);
	}
	free(text);
	if (!found)
	{
		snprintf(err, errlen, "%s does not name %s", path, old_uri);
		wk_buf_free(&out);
		return -1;
	}
	rc = write_text(path, out.data, err, errlen);
	wk_buf_free(&out);
	return rc;
}

int
tc_master_write(const char *path, const tc_variant *v, int n, double fps, bool audio, char *err, size_t errlen)
{
	wk_buf b = {0};
	int rc;

	wk_buf_adds(&b, "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-INDEPENDENT-SEGMENTS\n");
	for (int i = 0; i < n; i++)
	{
		const tc_rung *r = v[i].rung;
		/* High profile, level 4.2 (5.1 above 1080p), as the command sets them */
		wk_buf_printf(&b, "#EXT-X-STREAM-INF:BANDWIDTH=%lld,RESOLUTION=%dx%d,FRAME-RATE=%.3f,CODECS=\"%s%s\"\n%s\n",
		              v[i].bandwidth, r->width, r->height, fps, r->resolution > 1080 ? "avc1.640033" : "avc1.64002a",
		              audio ? ",mp4a.40.2" : "", v[i].uri);
	}
	rc = write_text(path, b.data, err, errlen);
	wk_buf_free(&b);
	return rc;
}
