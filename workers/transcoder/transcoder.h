/*
 * transcoder.h — what the transcoder's parts share: the probed source (probe.c), the
 * renditions and the one ffmpeg command that writes them all (command.c), and the
 * playlists written after it (command.c). The daemon itself is transcoder.c.
 */
#ifndef PGPOD_TRANSCODER_H
#define PGPOD_TRANSCODER_H

#include <stdbool.h>
#include <stddef.h>

#include "worker.h"

#define TC_MAX_RUNGS 8
#define TC_MAX_DIMENSION 8192       /* wider or taller sources are refused */
#define TC_MAX_DURATION (24 * 3600) /* seconds */
#define TC_THUMB_W 320
#define TC_THUMB_H 180
#define TC_PREVIEW_W 854
#define TC_PREVIEW_H 480

/* --- probe.c ---------------------------------------------------------------------- */
typedef struct tc_media
{
	int width, height; /* as displayed (rotation applied) */
	double fps;
	char fps_text[32]; /* for -r: "30", "30000/1001" (capped at 60) */
	double duration;   /* seconds */
	long long bit_rate;
	bool has_audio;
	bool audio_copy; /* AAC stereo: copied, not encoded again */
} tc_media;

/* Reads ffprobe's JSON (-show_format -show_streams). 0 when the source is a usable
 * video; otherwise -1 and a reason meant for the uploader in reason. */
int tc_probe_parse(const char *json, tc_media *m, char *reason, size_t reason_size);

/* --- command.c -------------------------------------------------------------------- */
typedef struct tc_rung
{
	int resolution;     /* the ladder's name: height, or width for portrait */
	int width, height;  /* the output's */
	long long maxrate;  /* bits/s */
	char mp4[64];       /* output names in the work directory */
	char hls_media[64]; /* the rendition's single fMP4 file */
	char hls_playlist[64];
} tc_rung;

typedef struct tc_plan
{
	tc_rung rungs[TC_MAX_RUNGS];
	int nrungs;
	int gop;
} tc_plan;

/* The renditions of a source among the ladder (none above the source; the source's
 * own size when every rung is above it). */
void tc_plan_make(const tc_media *m, const int *ladder, int nladder, tc_plan *p);
/* ffmpeg's arguments (NULL-terminated, malloc'd strings; tc_argv_free) for one process
 * that decodes source once and writes every rendition as MP4 and HLS, the thumbnail
 * and the preview, with progress on stdout. threads 0: ffmpeg decides. */
char **tc_ffmpeg_argv(const char *ffmpeg, const char *source, const tc_media *m, const tc_plan *p,
                      int threads);
void tc_argv_free(char **argv);
/* argv as one shell-quoted line (for the log and the benchmark). */
void tc_argv_text(char *const *argv, wk_buf *out);
/* Rewrites a rendition playlist so its media URI is media_uri (the file's id). */
int tc_playlist_rewrite(const char *path, const char *old_uri, const char *media_uri, char *err,
                        size_t errlen);
/* The master playlist: one variant per rendition. */
typedef struct tc_variant
{
	const tc_rung *rung;
	long long bandwidth;
	const char *uri;
} tc_variant;
int tc_master_write(const char *path, const tc_variant *v, int n, double fps, bool audio, char *err,
                    size_t errlen);

#endif
