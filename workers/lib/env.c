/*
 * env.c — string settings from the environment, beside wk_env_long (buf.c): a value
 * with a default, and a value that must be one of a few words (a clear warning
 * naming them, then the default, when it is not).
 */
#include <stdlib.h>
#include <string.h>

#include "worker.h"

const char *
wk_env_str(const char *name, const char *fallback)
{
	const char *v = getenv(name);

	return v != NULL && *v != '\0' ? v : fallback;
}

int
wk_env_choice(const char *name, const char *const *choices, int fallback)
{
	const char *v = getenv(name);
	wk_buf all = {0};

	if (v == NULL || *v == '\0')
		return fallback;
	for (int i = 0; choices[i]; i++)
		if (strcmp(v, choices[i]) == 0)
			return i;
	for (int i = 0; choices[i]; i++)
		wk_buf_printf(&all, "%s%s", i ? ", " : "", choices[i]);
	wk_log(WK_WARN, "%s=%s is not one of %s; using %s", name, v, all.data, choices[fallback]);
	wk_buf_free(&all);
	return fallback;
}
