/*
 * daemon.c — how every pgpod daemon (and each gateway process) stops: SIGTERM and
 * SIGINT begin a drain (once: STOPPING=1 to systemd, the daemon's stop callback, a
 * drain deadline), SIGHUP calls the daemon's reload callback or is ignored, SIGPIPE is
 * ignored. The daemon says when it has drained (wk_daemon_drained); at the deadline
 * its deadline callback may ask for more time, else the loop is broken.
 */
#include <signal.h>

#include "worker.h"

static struct
{
	struct ev_loop *loop;
	wk_daemon_config cfg;
	bool stopping;
	bool drained; /* wk_daemon_drained was called: the loop ends */
	ev_signal term, intr, hup;
	ev_timer deadline;
	ev_timer check; /* cfg.drained, polled while draining */
} d;

static void
deadline_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	double more = 0;

	(void)w;
	(void)revents;
	if (d.cfg.deadline)
		more = d.cfg.deadline(d.cfg.arg);
	else
		wk_log(WK_WARN, "stopping: the drain deadline (%.1f s) passed; exiting", d.cfg.drain_seconds);
	if (more > 0)
	{
		ev_timer_set(&d.deadline, more, 0.);
		ev_timer_start(loop, &d.deadline);
		return;
	}
	ev_break(loop, EVBREAK_ALL);
}

static void
check_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop;
	(void)w;
	(void)revents;
	if (d.cfg.drained(d.cfg.arg))
		wk_daemon_drained();
}

static void
stop_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
	(void)w;
	(void)revents;
	if (d.stopping)
		return;
	d.stopping = true;
	if (!d.cfg.no_sd_notify)
		wk_sd_notify("STOPPING=1");
	if (d.cfg.stop)
		d.cfg.stop(d.cfg.arg);
	if (d.drained)
		return; /* the stop callback drained at once */
	if (d.cfg.drain_seconds >= 0)
	{
		ev_timer_init(&d.deadline, deadline_cb, d.cfg.drain_seconds, 0.);
		ev_timer_start(loop, &d.deadline);
	}
	if (d.cfg.drained)
	{
		ev_timer_init(&d.check, check_cb, 0., WK_DAEMON_DRAIN_CHECK);
		ev_timer_start(loop, &d.check);
	}
}

static void
hup_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
	(void)loop;
	(void)w;
	(void)revents;
	if (d.cfg.reload)
		d.cfg.reload(d.cfg.arg);
	else
		wk_log(WK_DEBUG, "SIGHUP ignored (nothing to reload)");
}

void
wk_daemon_start(struct ev_loop *loop, const wk_daemon_config *cfg)
{
	d.loop = loop;
	d.cfg = *cfg;
	d.stopping = false;
	d.drained = false;
	signal(SIGPIPE, SIG_IGN);
	ev_signal_init(&d.term, stop_cb, SIGTERM);
	ev_signal_start(loop, &d.term);
	ev_signal_init(&d.intr, stop_cb, SIGINT);
	ev_signal_start(loop, &d.intr);
	ev_signal_init(&d.hup, hup_cb, SIGHUP);
	ev_signal_start(loop, &d.hup);
	ev_init(&d.deadline, deadline_cb);
	ev_init(&d.check, check_cb);
	wk_watchdog_start(loop);
}

bool
wk_daemon_stopping(void)
{
	return d.stopping;
}

void
wk_daemon_drained(void)
{
	if (d.loop == NULL)
		return;
	d.drained = true;
	ev_timer_stop(d.loop, &d.deadline);
	ev_timer_stop(d.loop, &d.check);
	ev_break(d.loop, EVBREAK_ALL);
}

void
wk_daemon_stop_watching(void)
{
	if (d.loop == NULL)
		return;
	ev_timer_stop(d.loop, &d.deadline);
	ev_timer_stop(d.loop, &d.check);
	ev_signal_stop(d.loop, &d.term);
	ev_signal_stop(d.loop, &d.intr);
	ev_signal_stop(d.loop, &d.hup);
}
