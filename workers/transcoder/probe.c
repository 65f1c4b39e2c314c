/*
 * probe.c — what ffprobe says about a source, and whether it is a video pgpod will
 * transcode: a video stream (cover art does not count), sane dimensions, a duration.
 * Reasons are sentences for the uploader (they become videos.failure_reason).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "transcoder.h"

static double
rate_value(const char *r, long *num, long *den)
{
	char *end;

	*num = r ? strtol(r, &end, 10) : 0;
	*den = 1;
	if (r && *end == '/')
		*den = strtol(end + 1, NULL, 10);
	if (*num <= 0 || *den <= 0)
		return 0;
	return (double)*num / (double)*den;
}

static double
number_field(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);

	if (json_is_string(v))
		return strtod(json_string_value(v), NULL);
	if (json_is_number(v))
		return json_number_value(v);
	return 0;
}

/* Display rotation in degrees: the "rotate" tag or the display matrix side data. */
static int
rotation(json_t *stream)
{
	json_t *tags = json_object_get(stream, "tags"), *side = json_object_get(stream, "side_data_list");
	size_t i;
	json_t *sd;

	if (json_is_object(tags) && json_is_string(json_object_get(tags, "rotate")))
		return atoi(json_string_value(json_object_get(tags, "rotate")));
	json_array_foreach(side, i, sd)
	{
		json_t *r = json_object_get(sd, "rotation");
		if (json_is_integer(r))
			return (int)json_integer_value(r);
	}
	return 0;
}

int
tc_probe_parse(const char *text, tc_media *m, char *reason, size_t reason_size)
{
	json_error_t jerr;
	json_t *root = json_loads(text, 0, &jerr), *streams, *format, *s, *video = NULL, *audio = NULL;
	size_t i;
	long num, den;
	int rc = -1;

	memset(m, 0, sizeof *m);
	if (!json_is_object(root))
	{
		snprintf(reason, reason_size, "not a video: the file could not be read as media");
		goto out;
	}
	streams = json_object_get(root, "streams");
	format = json_object_get(root, "format");
	json_array_foreach(streams, i, s)
	{
		const char *type = json_string_value(json_object_get(s, "codec_type"));
		json_t *disp = json_object_get(s, "disposition");
		bool cover = json_is_object(disp) && json_integer_value(json_object_get(disp, "attached_pic")) == 1;

		if (type && !strcmp(type, "video") && !cover && !video)
			video = s;
		else if (type && !strcmp(type, "audio") && !audio)
			audio = s;
	}
	if (!video)
	{
		snprintf(reason, reason_size, "not a video: no video stream");
		goto out;
	}
	m->width = (int)json_integer_value(json_object_get(video, "width"));
	m->height = (int)json_integer_value(json_object_get(video, "height"));
	if (m->width <= 0 || m->height <= 0)
	{
		snprintf(reason, reason_size, "not a video: the video stream has no picture size");
		goto out;
	}
	if (m->width > TC_MAX_DIMENSION || m->height > TC_MAX_DIMENSION)
	{
		snprintf(reason, reason_size, "the picture is too large: %dx%d (at most %d pixels a side)", m->width,
		         m->height, TC_MAX_DIMENSION);
		goto out;
	}
	if (m->width < 16 || m->height < 16)
	{
		snprintf(reason, reason_size, "the picture is too small: %dx%d (at least 16 pixels a side)", m->width,
		         m->height);
		goto out;
	}
	if (abs(rotation(video)) % 180 == 90)
	{
		int w = m->width;
		m->width = m->height;
		m->height = w;
	}
	m->fps = rate_value(json_string_value(json_object_get(video, "avg_frame_rate")), &num, &den);
	if (m->fps < 1 || m->fps > 1000)
		m->fps = rate_value(json_string_value(json_object_get(video, "r_frame_rate")), &num, &den);
	if (m->fps < 1 || m->fps > 1000)
	{
		m->fps = 30;
		num = 30;
		den = 1;
	}
	if (m->fps > 60)
	{
		m->fps = 60;
		num = 60;
		den = 1;
	}
	if (den == 1)
		snprintf(m->fps_text, sizeof m->fps_text, "%ld", num);
	else
		snprintf(m->fps_text, sizeof m->fps_text, "%ld/%ld", num, den);
	m->duration = number_field(format, "duration");
	if (m->duration <= 0)
		m->duration = number_field(video, "duration");
	if (!(m->duration > 0) || isnan(m->duration))
	{
		snprintf(reason, reason_size, "not a video: it has no duration");
		goto out;
	}
	if (m->duration > TC_MAX_DURATION)
	{
		snprintf(reason, reason_size, "the video is too long: %.0f s (at most %d s)", m->duration, TC_MAX_DURATION);
		goto out;
	}
	m->bit_rate = (long long)number_field(format, "bit_rate");
	if (audio)
	{
		const char *codec = json_string_value(json_object_get(audio, "codec_name"));
		m->has_audio = true;
		m->audio_copy = codec && !strcmp(codec, "aac") && json_integer_value(json_object_get(audio, "channels")) == 2 &&
		                number_field(audio, "bit_rate") > 0 && number_field(audio, "bit_rate") <= 384000;
	}
	rc = 0;
out:
	json_decref(root);
	return rc;
}
