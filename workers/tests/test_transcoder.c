/*
 * test_transcoder.c — unit tests of the transcoder's pure parts: what ffprobe's JSON
 * says (and the reasons a source is refused), the renditions chosen from the ladder
 * with their sizes and rate control, and the ffmpeg command built from them.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../transcoder/transcoder.h"

#include "tap.h"

#define is(got, want, name) is_str(got, want, "%s", name)

static const char *
plan_text(const char *probe, const int *ladder, int n)
{
	static char out[512];
	char reason[256];
	tc_media m;
	tc_plan p;
	size_t o = 0;

	if (tc_probe_parse(probe, &m, reason, sizeof reason) < 0)
		return strcpy(out, reason);
	tc_plan_make(&m, ladder, n, &p);
	for (int i = 0; i < p.nrungs; i++)
		o += (size_t)snprintf(out + o, sizeof out - o, "%s%d:%dx%d", i ? " " : "", p.rungs[i].resolution,
		                      p.rungs[i].width, p.rungs[i].height);
	snprintf(out + o, sizeof out - o, " gop %d fps %s%s", p.gop, m.fps_text, m.audio_copy ? " copy" : "");
	return out;
}

#define VIDEO(w, h, rate) \
	"{\"codec_type\":\"video\",\"width\":" #w ",\"height\":" #h ",\"avg_frame_rate\":\"" rate "\"}"
#define FORMAT "\"format\":{\"duration\":\"3.0\",\"bit_rate\":\"4000000\"}"

int
main(void)
{
	static const int ladder[] = {1080, 720, 480, 360, 240};
	char reason[256], text[256];
	tc_media m;
	tc_plan p;

	is(plan_text("{\"streams\":[" VIDEO(1280, 720, "25/1") "]," FORMAT "}", ladder, 5),
	   "720:1280x720 480:854x480 360:640x360 240:426x240 gop 50 fps 25", "720p: every rung up to 720");
	is(plan_text("{\"streams\":[" VIDEO(360, 640, "30000/1001") "]," FORMAT "}", ladder, 5),
	   "360:360x640 240:240x426 gop 60 fps 30000/1001", "portrait: rungs up to its width, NTSC rate kept");
	is(plan_text("{\"streams\":[" VIDEO(160, 120, "120/1") "]," FORMAT "}", ladder, 5), "120:160x120 gop 120 fps 60",
	   "below every rung: its own size; fps capped at 60");
	is(plan_text("{\"streams\":[" VIDEO(1920, 1080, "30/1") ",{\"codec_type\":\"audio\",\"codec_name\":\"aac\","
	             "\"channels\":2,\"bit_rate\":\"128000\"}]," FORMAT "}",
	             ladder, 5),
	   "1080:1920x1080 720:1280x720 480:854x480 360:640x360 240:426x240 gop 60 fps 30 copy",
	   "AAC stereo audio is copied");
	is(plan_text("{\"streams\":[{\"codec_type\":\"audio\",\"codec_name\":\"mp3\"}]," FORMAT "}", ladder, 5),
	   "not a video: no video stream", "audio only: refused");
	is(plan_text("{\"streams\":[{\"codec_type\":\"video\",\"width\":600,\"height\":600,\"disposition\":{\"attached_pic\":1}},"
	             "{\"codec_type\":\"audio\",\"codec_name\":\"mp3\"}]," FORMAT "}",
	             ladder, 5),
	   "not a video: no video stream", "cover art is not a video");
	is(plan_text("{\"streams\":[" VIDEO(9000, 720, "25/1") "]," FORMAT "}", ladder, 5),
	   "the picture is too large: 9000x720 (at most 8192 pixels a side)", "absurd size: refused");
	is(plan_text("{\"streams\":[" VIDEO(640, 360, "25/1") "],\"format\":{}}", ladder, 5), "not a video: it has no duration",
	   "no duration: refused");
	is(plan_text("not json", ladder, 5), "not a video: the file could not be read as media", "garbage: refused");

	/* rate control: PeerTube's average bits per pixel, capped at 1.3 × the source's */
	tc_probe_parse("{\"streams\":[" VIDEO(1280, 720, "30/1") "],\"format\":{\"duration\":\"3\",\"bit_rate\":\"100000000\"}}", &m,
	               reason, sizeof reason);
	tc_plan_make(&m, ladder, 5, &p);
	snprintf(text, sizeof text, "%lld %lld", p.rungs[0].maxrate, p.rungs[3].maxrate);
	is(text, "3041280 521424", "maxrate = pixels × fps × bpp (720p 0.11, 240p 0.17)");
	tc_probe_parse("{\"streams\":[" VIDEO(1280, 720, "30/1") "],\"format\":{\"duration\":\"3\",\"bit_rate\":\"1000000\"}}", &m,
	               reason, sizeof reason);
	tc_plan_make(&m, ladder, 5, &p);
	snprintf(text, sizeof text, "%lld", p.rungs[0].maxrate);
	is(text, "1300000", "capped at 1.3 × a low source bitrate");

	char **argv = tc_ffmpeg_argv("ffmpeg", "/src", &m, &p, 0);
	wk_buf line = {0};
	tc_argv_text(argv, &line);
	int same = strstr(line.data, "'-i' '/src'") && strstr(line.data, "split=5[s0][s1][s2][s3][still]") &&
	    strstr(line.data, "[f=mp4:movflags=+faststart]720p.mp4|[f=hls:") &&
	    strstr(line.data, "hls_segment_type=fmp4:hls_flags=single_file:hls_segment_filename=240p-hls.mp4]240p.m3u8") &&
	    strstr(line.data, "'-preset' 'veryfast'") && strstr(line.data, "'-g:v' '60'") && strstr(line.data, "'thumbnail.jpg'") &&
	    !strstr(line.data, "0:a:0");
	ok(same, "one ffmpeg: one decode, split per rendition, MP4 + HLS through tee, images");
	if (!same)
		printf("# %s\n", line.data);
	wk_buf_free(&line);
	tc_argv_free(argv);
	return tap_done();
}
