#include "supervisor.h"
#include "err.h"
#include "feed.h"
#include "json.h"
#include "tf_limits.h"
#include "log.h"
#include "runctl.h"
#include "store.h"
#include "task.h"
#include "util.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define POLL_US 200000 /* store check when no signal arrives */

struct sup {
	const tf_config *cfg;
	tf_store *st;
	const char *task_id;
	pid_t worker;
	int64_t deadline_us;   /* 0: no cancel seen yet */
	int forced;
	int grace_s;
	int sig_fd;            /* the blocked signals, as an fd */
	int note_fd;           /* the run's cancel channel (-1: none, LMDB) */
};

static pid_t start_worker(const tf_config *cfg, const char *task_id, const sigset_t *old)
{
	pid_t pid = fork();
	if (pid == 0) {
		setpgid(0, 0);
		sigprocmask(SIG_SETMASK, old, NULL);
		execl(cfg->runner, "threatfeed-worker", "work", task_id, (char *)NULL);
		_exit(127);
	}
	if (pid > 0)
		setpgid(pid, pid); /* both sides, so a kill right away hits the group */
	return pid;
}

struct peek {
	const char *task_id;
	tf_cancel_mode mode;
	tf_status status;
	int grace_s;
};

static int peek_txn(tf_txn *txn, void *vctx)
{
	struct peek *p = vctx;
	tf_task *t;
	json_object *feed = NULL, *opts;
	int64_t g;
	int rc = tf_task_load(txn, p->task_id, &t);

	if (rc)
		return rc;
	p->status = tf_task_status(t);
	rc = tf_task_cancel_requested(txn, p->task_id, tf_task_feed_id(t), &p->mode);
	if (!rc && !tf_feed_load(txn, tf_task_feed_id(t), &feed) &&
	    json_object_object_get_ex(feed, "options", &opts) &&
	    !tf_json_get_int(opts, "grace_period_s", &g))
		p->grace_s = (int)g;
	json_object_put(feed);
	tf_task_free(t);
	return rc;
}

/* A cancel starts the grace clock once, and is passed on to the worker. */
static void look(struct sup *s)
{
	struct peek p = {.task_id = s->task_id, .grace_s = s->grace_s};
	if (tf_store_view(s->st, peek_txn, &p) || p.mode == TF_CANCEL_NONE)
		return;
	if (!s->deadline_us) {
		s->deadline_us = tf_mono_us() + (int64_t)p.grace_s * 1000000;
		if (!tf_status_terminal(p.status)) /* else: ended elsewhere (a reaper) */
			tf_info("supervise %s: %s requested, grace %d s", s->task_id,
			        tf_cancel_mode_name(p.mode), p.grace_s);
	}
	kill(s->worker, SIGUSR1);
}

/* SIGTERM to the supervisor (an admin, a shutdown) is a stop_now. */
static void stop_requested(struct sup *s)
{
	char *json = NULL;
	if (tf_task_cancel(s->st, s->task_id, TF_CANCEL_STOP_NOW, "supervisor:SIGTERM", &json, NULL) ==
	    TF_OK)
		look(s);
	free(json);
}

/* A notification on the run's cancel channel: the cancel may come from
 * another host, so no signal arrived. The worker is woken first (a local
 * signal, the same path as on one host), then the store is read. */
static void on_note(struct sup *s)
{
	int n = 0;
	tf_store_notifications(s->st, &n, &s->note_fd);
	if (n > 0) {
		kill(s->worker, SIGUSR1);
		look(s);
	}
}

/* Next signal from sig_fd: 0 when none is pending. */
static int next_signal(struct sup *s)
{
	struct signalfd_siginfo si;
	return read(s->sig_fd, &si, sizeof si) == (ssize_t)sizeof si ? (int)si.ssi_signo : 0;
}

static int wait_worker(struct sup *s, int *status)
{
	for (;;) {
		int64_t wait_us = POLL_US;
		struct pollfd p[2] = {{.fd = s->sig_fd, .events = POLLIN},
		                      {.fd = s->note_fd, .events = POLLIN}};
		int sig, n;
		pid_t w = waitpid(s->worker, status, WNOHANG);

		if (w == s->worker)
			return TF_OK;
		if (w < 0 && errno != EINTR)
			return TF_ESYS;
		if (s->deadline_us) {
			int64_t left = s->deadline_us - tf_mono_us();
			if (left <= 0 && !s->forced) {
				tf_warn("supervise %s: worker %d did not stop in time; killing it",
				        s->task_id, (int)s->worker);
				kill(-s->worker, SIGKILL);
				s->forced = 1;
			} else if (left > 0 && left < wait_us) {
				wait_us = left;
			}
		}
		n = poll(p, 2, (int)((wait_us + 999) / 1000));
		if (n < 0 && errno != EINTR)
			return TF_ESYS;
		if (n > 0 && p[1].revents)
			on_note(s);
		while ((sig = next_signal(s)))
			if (sig == SIGTERM || sig == SIGINT)
				stop_requested(s);
			else if (sig == SIGUSR1)
				look(s);
		if (n == 0)
			look(s);
	}
}

static void describe_exit(int status, char *buf, size_t len)
{
	if (WIFSIGNALED(status))
		snprintf(buf, len, "worker killed by signal %s", sigabbrev_np(WTERMSIG(status))
		                                                     ? sigabbrev_np(WTERMSIG(status))
		                                                     : "?");
	else
		snprintf(buf, len, "worker exited with status %d", WEXITSTATUS(status));
}

/* The worker normally leaves the task terminal itself; anything else is
 * settled here: a cancel as requested (rolled back for cancel_job), a crash as
 * failed with how the worker died. */
static int settle(struct sup *s, int status)
{
	struct peek p = {.task_id = s->task_id, .grace_s = s->grace_s};
	char why[128];
	int rc = tf_store_view(s->st, peek_txn, &p);

	if (rc || tf_status_terminal(p.status))
		return rc;
	describe_exit(status, why, sizeof why);
	if (p.mode == TF_CANCEL_JOB)
		return tf_runctl_finish(s->st, s->task_id, TF_ST_CANCELLED, s->forced, NULL);
	if (p.mode == TF_CANCEL_STOP_NOW)
		return tf_runctl_finish(s->st, s->task_id, TF_ST_STOPPED, s->forced, NULL);
	tf_warn("supervise %s: %s", s->task_id, why);
	return tf_runctl_finish(s->st, s->task_id, TF_ST_FAILED, s->forced, why);
}

/* The ending run hands its slot to the oldest queued ones: no daemon needed
 * on one host; with agents, they are woken to. */
static void start_next(struct sup *s)
{
	tf_runctl_kick(s->cfg, s->st);
}

/* The run has ended and its slot is free (the next queued run already
 * started): if a webhook applies, this process becomes the run's sender
 * (worker/webhook.h), so neither a cancel nor the queue ever waits on a
 * receiver. Returns only when there is nothing to send or exec failed. */
static void become_sender(const tf_config *cfg, const char *task_id, const sigset_t *old)
{
	sigprocmask(SIG_SETMASK, old, NULL);
	execl(cfg->runner, "threatfeed-worker", "notify", task_id, (char *)NULL);
	tf_warn("supervise %s: cannot start the webhook sender %s", task_id, cfg->runner);
}

int tf_supervise_main(const tf_config *cfg, const char *task_id)
{
	struct sup s = {.cfg = cfg, .task_id = task_id, .grace_s = cfg->grace_period_s,
	                .note_fd = -1};
	sigset_t set, old;
	char err[256], chan[TF_CHAN_CANCEL_SIZE];
	int claimed = 0, reaped, status = 0, rc, hook;

	if (!tf_valid_uuid(task_id))
		return 2;
	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	sigaddset(&set, SIGUSR1);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigprocmask(SIG_BLOCK, &set, &old);
	if ((s.sig_fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC)) < 0)
		return 1;
	if (tf_store_open(&s.st, cfg->db_path, tf_config_map_bytes(cfg), err, sizeof err)) {
		tf_err("%s", err);
		return 1;
	}
	/* Lease before the claim: from the claim's commit on, any host must
	 * find the run alive. Listening before it too: no cancel slips between. */
	tf_runctl_cancel_channel(task_id, chan);
	if (tf_store_shared(s.st) &&
	    ((rc = tf_store_lease(s.st, task_id)) || (rc = tf_store_listen(s.st, chan, &s.note_fd)))) {
		tf_err("supervise %s: cannot hold the run's lease: %s", task_id, tf_strerror(rc));
		tf_store_close(s.st);
		return 1;
	}
	if ((rc = tf_runctl_claim(s.st, task_id, cfg->max_concurrent_runs, &claimed)) || !claimed) {
		/* Cancelled while queued: ends here, never fetched. No slot: stays
		 * queued for the next ending run or `tick`. */
		tf_runctl_reap(s.st, task_id, &reaped);
		tf_store_close(s.st);
		return rc ? 1 : 0;
	}
	if ((s.worker = start_worker(cfg, task_id, &old)) < 0) {
		tf_runctl_finish(s.st, task_id, TF_ST_FAILED, 0, "could not start the worker process");
		tf_runctl_release(s.st, task_id);
		hook = tf_runctl_webhook_applies(cfg, s.st, task_id);
		tf_store_close(s.st);
		if (hook)
			become_sender(cfg, task_id, &old);
		return 1;
	}
	tf_runctl_set_worker(s.st, task_id, s.worker);
	look(&s); /* a cancel recorded between claim and now */
	if ((rc = wait_worker(&s, &status)) == TF_OK)
		rc = settle(&s, status);
	tf_runctl_release(s.st, task_id);   /* the worker has exited: the slot is free */
	start_next(&s);
	hook = !rc && tf_runctl_webhook_applies(cfg, s.st, task_id);
	tf_store_close(s.st); /* before exec: no store handle crosses it */
	if (hook)
		become_sender(cfg, task_id, &old);
	return rc ? 1 : 0;
}
