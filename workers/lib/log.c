/*
 * log.c — one line per event on stderr: UTC time, daemon name and pid, level, message.
 * PGPOD_LOG_LEVEL (debug|info|warn|error) sets the threshold.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "worker.h"

enum wk_level wk_log_threshold = WK_INFO;
static const char *log_name = "worker";

/* Remembers the daemon's name and reads PGPOD_LOG_LEVEL. */
void
wk_log_init(const char *name)
{
	const char *level = getenv("PGPOD_LOG_LEVEL");

	log_name = name;
	if (level == NULL)
		return;
	if (strcmp(level, "debug") == 0)
		wk_log_threshold = WK_DEBUG;
	else if (strcmp(level, "warn") == 0)
		wk_log_threshold = WK_WARN;
	else if (strcmp(level, "error") == 0)
		wk_log_threshold = WK_ERROR;
}

void
wk_log(enum wk_level level, const char *fmt, ...)
{
	static const char *names[] = {"debug", "info", "warning", "error"};
	struct timeval tv;
	struct tm tm;
	char when[32];
	va_list ap;

	if (level < wk_log_threshold)
		return;
	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
	fprintf(stderr, "%s.%03ldZ %s[%d] %s: ", when, (long)tv.tv_usec / 1000, log_name, (int)getpid(),
	        names[level]);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}
