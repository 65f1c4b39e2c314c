/*
 * child.c — child processes on the daemon's libev loop (ffmpeg, ffprobe, sha256sum):
 * stdout comes line by line to a callback, the last bytes of stderr are kept for error
 * messages, and one exit callback runs once the process has exited and its pipes are
 * drained. Children die with the daemon (PR_SET_PDEATHSIG), so a kill -9 of the daemon
 * leaves no orphan encoder behind. Needs the default loop (ev_child).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "worker.h"

#define STDERR_TAIL 4096

struct wk_child
{
	struct ev_loop *loop;
	pid_t pid;
	ev_child exit_w;
	ev_io out_w, err_w;
	wk_buf line; /* a stdout line being gathered */
	char err_tail[STDERR_TAIL + 1];
	size_t err_len;
	int status;
	bool exited, out_open, err_open;
	wk_child_line_cb on_line;
	wk_child_exit_cb on_exit;
	void *arg;
};

static void
child_maybe_done(wk_child *c)
{
	if (!c->exited || c->out_open || c->err_open)
		return;
	if (c->line.len && c->on_line)
		c->on_line(c, c->line.data, c->arg);
	c->on_exit(c, c->status, c->arg);
	wk_buf_free(&c->line);
	free(c);
}

static void
child_exit_cb(struct ev_loop *loop, ev_child *w, int revents)
{
	wk_child *c = w->data;

	(void)revents;
	ev_child_stop(loop, w);
	c->status = w->rstatus;
	c->exited = true;
	child_maybe_done(c);
}

static void
child_out_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	wk_child *c = w->data;
	char buf[8192];
	ssize_t n = read(w->fd, buf, sizeof buf);

	(void)revents;
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0)
	{
		ev_io_stop(loop, w);
		close(w->fd);
		c->out_open = false;
		child_maybe_done(c);
		return;
	}
	for (ssize_t i = 0; i < n; i++)
	{
		if (buf[i] == '\n')
		{
			if (c->on_line)
				c->on_line(c, c->line.data ? c->line.data : (char *)"", c->arg);
			wk_buf_reset(&c->line);
		}
		else if (c->line.len < 65536)
			wk_buf_add(&c->line, buf + i, 1);
	}
}

static void
child_err_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	wk_child *c = w->data;
	char buf[4096];
	ssize_t n = read(w->fd, buf, sizeof buf);

	(void)revents;
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0)
	{
		ev_io_stop(loop, w);
		close(w->fd);
		c->err_open = false;
		child_maybe_done(c);
		return;
	}
	/* keep the last STDERR_TAIL bytes: the error is at the end */
	if ((size_t)n >= STDERR_TAIL)
	{
		memcpy(c->err_tail, buf + n - STDERR_TAIL, STDERR_TAIL);
		c->err_len = STDERR_TAIL;
	}
	else
	{
		size_t keep = c->err_len + (size_t)n > STDERR_TAIL ? STDERR_TAIL - (size_t)n : c->err_len;
		memmove(c->err_tail, c->err_tail + c->err_len - keep, keep);
		memcpy(c->err_tail + keep, buf, (size_t)n);
		c->err_len = keep + (size_t)n;
	}
	c->err_tail[c->err_len] = '\0';
}

wk_child *
wk_child_spawn(struct ev_loop *loop, char *const argv[], const char *cwd, wk_child_line_cb on_line,
               wk_child_exit_cb on_exit, void *arg)
{
	int out[2], err[2];
	pid_t parent = getpid();
	wk_child *c;

	if (pipe2(out, O_CLOEXEC) < 0)
		return NULL;
	if (pipe2(err, O_CLOEXEC) < 0)
	{
		close(out[0]);
		close(out[1]);
		return NULL;
	}
	c = calloc(1, sizeof *c);
	if (c == NULL)
		abort();
	c->pid = fork();
	if (c->pid < 0)
	{
		int e = errno;
		close(out[0]);
		close(out[1]);
		close(err[0]);
		close(err[1]);
		free(c);
		errno = e;
		return NULL;
	}
	if (c->pid == 0)
	{
		int devnull = open("/dev/null", O_RDONLY);
		/* the child dies with the daemon; a parent already gone is caught here */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(127);
		/* what libev blocked or ignored for the daemon must not follow into the child */
		sigset_t none;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		signal(SIGPIPE, SIG_DFL);
		signal(SIGTERM, SIG_DFL);
		signal(SIGINT, SIG_DFL);
		signal(SIGCHLD, SIG_DFL);
		signal(SIGHUP, SIG_DFL);
		if (devnull >= 0)
			dup2(devnull, 0);
		dup2(out[1], 1);
		dup2(err[1], 2);
		if (cwd && chdir(cwd) < 0)
			_exit(126);
		execvp(argv[0], argv);
		_exit(127);
	}
	close(out[1]);
	close(err[1]);
	fcntl(out[0], F_SETFL, O_NONBLOCK);
	fcntl(err[0], F_SETFL, O_NONBLOCK);
	c->loop = loop;
	c->on_line = on_line;
	c->on_exit = on_exit;
	c->arg = arg;
	c->out_open = c->err_open = true;
	ev_child_init(&c->exit_w, child_exit_cb, c->pid, 0);
	c->exit_w.data = c;
	ev_child_start(loop, &c->exit_w);
	ev_io_init(&c->out_w, child_out_cb, out[0], EV_READ);
	c->out_w.data = c;
	ev_io_start(loop, &c->out_w);
	ev_io_init(&c->err_w, child_err_cb, err[0], EV_READ);
	c->err_w.data = c;
	ev_io_start(loop, &c->err_w);
	return c;
}

void
wk_child_kill(wk_child *c, int sig)
{
	if (c && !c->exited)
		kill(c->pid, sig);
}

pid_t
wk_child_pid(const wk_child *c)
{
	return c->pid;
}

const char *
wk_child_stderr(const wk_child *c)
{
	return c->err_tail;
}

/* The last non-empty line of a text, trimmed, into out. */
void
wk_last_line(const char *text, char *out, size_t size)
{
	size_t end = strlen(text), start;

	while (end && (text[end - 1] == '\n' || text[end - 1] == '\r' || text[end - 1] == ' '))
		end--;
	start = end;
	while (start && text[start - 1] != '\n')
		start--;
	if (end - start >= size)
		start = end - (size - 1);
	memcpy(out, text + start, end - start);
	out[end - start] = '\0';
}
