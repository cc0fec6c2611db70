#include "runctl.h"
#include "audit.h"
#include "index.h"
#include "err.h"
#include "feed.h"
#include "json.h"
#include "log.h"
#include "metrics.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- spawning --------------------------------------------------------------- */

/* In the grandchild: nothing of the caller's (a FastCGI listen socket on fd 0,
 * client connections) may leak into a run that outlives the request. */
static void detach_fds(void)
{
	int null = open("/dev/null", O_RDWR);
	const char *log = getenv("THREATFEED_RUN_LOG");
	int err = -1;

	if (log && *log)
		err = open(log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0660);
	if (null >= 0) {
		dup2(null, 0);
		dup2(null, 1);
		dup2(err >= 0 ? err : null, 2);
	}
	closefrom(3);
}

/* Runs `path verb task_id` fully detached: new session, no inherited fds,
 * adopted by init. Returns once the intermediate child is reaped. */
static int spawn_detached(const char *path, const char *argv0, const char *verb,
                          const char *task_id)
{
	pid_t pid = fork(), w;
	int status;

	if (pid < 0)
		return TF_ESYS;
	if (pid == 0) {
		/* First child: new session, then fork again so the run is adopted by
		 * init and never becomes the caller's zombie. */
		sigset_t none;
		setsid();
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		signal(SIGPIPE, SIG_DFL);
		signal(SIGCHLD, SIG_DFL);
		if ((pid = fork()) != 0)
			_exit(pid < 0 ? 1 : 0);
		detach_fds();
		execl(path, argv0, verb, task_id, (char *)NULL);
		_exit(127);
	}
	do
		w = waitpid(pid, &status, 0);
	while (w < 0 && errno == EINTR);
	if (w < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
		return TF_ESYS;
	return TF_OK;
}

int tf_runctl_spawn(const tf_config *cfg, const char *task_id)
{
	int rc = spawn_detached(cfg->worker, "threatfeed", "supervise", task_id);

	if (rc)
		return rc;
	if (access(cfg->worker, X_OK) != 0) {
		tf_err("runctl: worker binary %s is not executable", cfg->worker);
		return TF_ESYS;
	}
	return TF_OK;
}

/* ---- run-end webhooks ----------------------------------------------------------- */

/* A copy: the caller's config may not outlive every later reap. */
static tf_config notify_cfg;
static int notify_on;

void tf_runctl_set_notify(const tf_config *cfg)
{
	notify_on = cfg != NULL;
	if (cfg)
		notify_cfg = *cfg;
}

struct hook_ctx {
	const char *task_id;
	int applies;
};

static int hook_txn(tf_txn *txn, void *vctx)
{
	struct hook_ctx *c = vctx;
	json_object *feed = NULL;
	const char *url, *secret;
	tf_task *t;
	int rc = tf_task_load(txn, c->task_id, &t);

	if (rc)
		return rc;
	if (!tf_feed_load(txn, tf_task_feed_id(t), &feed)) {
		tf_feed_webhook(feed, NULL, NULL, &url, &secret);
		c->applies = url != NULL;
	}
	json_object_put(feed);
	tf_task_free(t);
	return TF_OK;
}

int tf_runctl_webhook_applies(const tf_config *cfg, tf_store *st, const char *task_id)
{
	struct hook_ctx c = {.task_id = task_id};

	if (cfg->webhook_url[0])
		return 1;
	return !tf_store_view(st, hook_txn, &c) && c.applies;
}

int tf_runctl_notify(const tf_config *cfg, tf_store *st, const char *task_id)
{
	int rc;

	if (!tf_runctl_webhook_applies(cfg, st, task_id))
		return TF_OK;
	if ((rc = spawn_detached(cfg->runner, "threatfeed-worker", "notify", task_id)))
		tf_warn("runctl: could not start the webhook sender for %s", task_id);
	return rc;
}

/* A run a reaper ended: its webhook, if the process asked for them. */
static void reaped_notify(tf_store *st, const char *task_id)
{
	if (notify_on)
		tf_runctl_notify(&notify_cfg, st, task_id);
}

/* ---- run records ------------------------------------------------------------ */

/* Entries written before runs had a host (32 bytes) are this host's. */
#define RUNINFO_V1_LEN offsetof(tf_runinfo, host)

static int info_get(tf_txn *txn, const char *task_id, tf_runinfo *ri)
{
	const void *v;
	size_t vl;
	int rc = tf_txn_get(txn, TF_TBL_RUNS, task_id, strlen(task_id), &v, &vl);
	if (rc)
		return rc;
	if (vl != sizeof *ri && vl != RUNINFO_V1_LEN)
		return TF_ESTORE;
	memset(ri, 0, sizeof *ri);
	memcpy(ri, v, vl);
	if (!ri->host)
		ri->host = tf_host_id();
	return TF_OK;
}

int tf_runctl_alive(tf_txn *txn, const char *task_id, const tf_runinfo *ri, int *alive)
{
	if (ri->host == tf_host_id()) {
		*alive = tf_proc_alive(ri->sup_pid, ri->sup_start) ||
		         tf_proc_alive(ri->worker_pid, ri->worker_start);
		return TF_OK;
	}
	/* Another host's run: only the store can tell (a single-host store
	 * never has one, but a copied store might: judged gone). */
	if (tf_txn_lease_held(txn, task_id, alive) == TF_EINVAL)
		*alive = 0;
	return TF_OK;
}

void tf_runctl_cancel_channel(const char *task_id, char *buf)
{
	snprintf(buf, TF_CHAN_CANCEL_SIZE, "c_%s", task_id);
}

struct info_ctx {
	const char *task_id;
	tf_runinfo ri;
	tf_task *task;
};

static int info_txn(tf_txn *txn, void *vctx)
{
	struct info_ctx *c = vctx;
	return info_get(txn, c->task_id, &c->ri);
}

int tf_runctl_info(tf_store *st, const char *task_id, tf_runinfo *ri)
{
	struct info_ctx c = {.task_id = task_id};
	int rc = tf_store_view(st, info_txn, &c);
	*ri = c.ri;
	return rc;
}

int tf_runctl_wake(tf_store *st, const char *task_id)
{
	char chan[TF_CHAN_CANCEL_SIZE];
	tf_runinfo ri;
	int reaped = 0, rc;

	/* First, before anything that reads: the wake-up is what a user waits
	 * for. The cancel it announces is committed already. */
	tf_runctl_cancel_channel(task_id, chan);
	if (tf_store_notify(st, chan))
		tf_warn("runctl: could not notify run %s (it sees the cancel at its next check)",
		        task_id);
	if ((rc = tf_runctl_reap(st, task_id, &reaped)) || reaped)
		return rc;
	if (tf_runctl_info(st, task_id, &ri) || ri.host != tf_host_id())
		return TF_OK; /* not started yet (the claim reads the cancel), or elsewhere */
	if (tf_proc_alive(ri.worker_pid, ri.worker_start))
		kill(ri.worker_pid, SIGUSR1);
	if (tf_proc_alive(ri.sup_pid, ri.sup_start))
		kill(ri.sup_pid, SIGUSR1);
	return TF_OK;
}

/* ---- finishing ---------------------------------------------------------------- */

/* What a run really ends as, given where its task is now. A cancel_job is
 * honoured whatever happened (the store must end as before the run); a
 * stop_now turns a completion into a stop. */
static tf_status settle(tf_status now, tf_status wanted)
{
	if (now == TF_ST_CANCELLING)
		return TF_ST_CANCELLED;
	if (now == TF_ST_STOPPING && (wanted == TF_ST_COMPLETED || wanted == TF_ST_CANCELLED))
		return TF_ST_STOPPED;
	if (now == TF_ST_QUEUED && wanted != TF_ST_FAILED)
		return TF_ST_FAILED;
	return wanted;
}

struct finish_ctx {
	const char *task_id;
	tf_status final;
	int forced;
	const char *error;
	uint64_t rolled_back;
	int rolled;          /* rollback done before this transaction */
	int again;           /* a cancel_job arrived meanwhile: roll back, retry */
	int already;         /* someone else finished it */
	tf_status now;
};

static int queue_remove(tf_txn *txn, const char *task_id)
{
	tf_cursor *cur;
	const void *k, *v;
	size_t kl, vl;
	int rc = tf_cursor_open(txn, TF_TBL_QUEUE, &cur);

	if (rc)
		return rc;
	rc = tf_cursor_get(cur, TF_SEEK_FIRST, NULL, 0, &k, &kl, &v, &vl);
	while (rc == TF_OK) {
		if (vl == TF_UUID_LEN && !memcmp(v, task_id, TF_UUID_LEN)) {
			rc = tf_cursor_del(cur);
			break;
		}
		rc = tf_cursor_get(cur, TF_SEEK_NEXT, NULL, 0, &k, &kl, &v, &vl);
	}
	tf_cursor_close(cur);
	if (rc == TF_OK) /* it was in line: the ones behind it move up */
		rc = tf_task_number_queue(txn);
	return rc == TF_ENOTFOUND ? TF_OK : rc;
}

static int release_feed(tf_txn *txn, const char *feed_id, const char *task_id)
{
	const void *v;
	size_t vl;
	size_t fl = strlen(feed_id);

	if (!tf_txn_get(txn, TF_TBL_ACTIVE, feed_id, fl, &v, &vl) && vl == TF_UUID_LEN &&
	    !memcmp(v, task_id, TF_UUID_LEN))
		tf_txn_del(txn, TF_TBL_ACTIVE, feed_id, fl);
	if (!tf_txn_get(txn, TF_TBL_SIGNALS, feed_id, fl, &v, &vl) && vl >= TF_UUID_LEN &&
	    !memcmp(v, task_id, TF_UUID_LEN))
		tf_txn_del(txn, TF_TBL_SIGNALS, feed_id, fl);
	/* The run's slot (TF_TBL_RUNS) stays taken until its processes are gone:
	 * see tf_runctl_release. */
	return queue_remove(txn, task_id);
}

static int finish_txn(tf_txn *txn, void *vctx)
{
	struct finish_ctx *c = vctx;
	tf_task *t;
	tf_status final;
	json_object *started = NULL;
	int rc = tf_task_load(txn, c->task_id, &t);

	c->again = c->already = 0;
	if (rc)
		return rc;
	c->now = tf_task_status(t);
	if (tf_status_terminal(c->now)) {
		c->already = 1;
		tf_task_free(t);
		return TF_OK;
	}
	final = settle(c->now, c->final);
	if (final == TF_ST_CANCELLED && !c->rolled) {
		c->again = 1; /* cannot roll back inside this transaction: abort, redo */
		tf_task_free(t);
		return TF_ECONFLICT;
	}
	if (final == TF_ST_CANCELLED)
		tf_task_set_rolled_back(t, c->rolled_back);
	/* A run that honoured a cancel its task does not show (a feed signal
	 * seen before the task was marked) ends through stopping/cancelling:
	 * queued/running → stopped/cancelled is not a legal step, and failing
	 * here after the rollback would leave a rolled-back run "running". */
	if ((final == TF_ST_STOPPED || final == TF_ST_CANCELLED) && !tf_status_can(c->now, final) &&
	    (rc = tf_task_request_cancel(t, final == TF_ST_CANCELLED ? TF_CANCEL_JOB
	                                                              : TF_CANCEL_STOP_NOW,
	                                 "feed signal")))
		goto out;
	if (tf_task_cancel_mode(t) != TF_CANCEL_NONE) {
		tf_task_ack_cancel(t);
		if (c->forced)
			tf_task_set_forced(t);
	}
	if (c->error)
		tf_task_set_error(t, c->error);
	if ((rc = tf_task_set_status(t, final)))
		goto out;
	tf_task_set_stage(t, TF_SG_DONE, final == TF_ST_COMPLETED ? "completed"
	                                 : final == TF_ST_STOPPED ? "stopped: committed data kept"
	                                 : final == TF_ST_CANCELLED ? "cancelled: run rolled back"
	                                                            : "failed");
	if ((rc = tf_task_save(txn, t)) || (rc = release_feed(txn, tf_task_feed_id(t), c->task_id)))
		goto out;
	{
		size_t n;
		json_object *obj = NULL;
		const char *text = tf_task_json(t, &n), *sa;
		tf_json_parse(text, n, 32, &obj, NULL, 0);
		sa = tf_json_str(obj, "started_at");
		if (!sa)
			sa = tf_json_str(obj, "created_at");
		rc = tf_feed_note_run(txn, tf_task_feed_id(t), c->task_id, tf_status_name(final), sa);
		started = obj;
	}
	if (!rc) /* metrics: counted in the transaction that ends the run */
		rc = tf_metrics_run_finished(txn, t, c->forced, c->rolled_back);
	c->final = final;
out:
	json_object_put(started);
	tf_task_free(t);
	return rc;
}

struct peek_ctx {
	const char *task_id;
	tf_status status;
};

static int peek_txn(tf_txn *txn, void *vctx)
{
	struct peek_ctx *c = vctx;
	tf_task *t;
	int rc = tf_task_load(txn, c->task_id, &t);
	if (rc)
		return rc;
	c->status = tf_task_status(t);
	tf_task_free(t);
	return TF_OK;
}

static int mark_rolling_back(tf_txn *txn, void *vctx)
{
	tf_task *t;
	int rc = tf_task_load(txn, (const char *)vctx, &t);
	if (rc)
		return rc;
	tf_task_set_stage(t, TF_SG_ROLLING_BACK, "rolling back the run");
	rc = tf_task_save(txn, t);
	tf_task_free(t);
	return rc;
}

/* *ended = 1 when this call is the one that made the task terminal (two
 * reapers racing: only one of them notifies). */
static int finish(tf_store *st, const char *task_id, tf_status final, int forced,
                  const char *error, int *ended)
{
	struct finish_ctx c = {.task_id = task_id, .final = final, .forced = forced, .error = error};
	struct peek_ctx p = {.task_id = task_id};
	int rc;

	*ended = 0;
	if ((rc = tf_store_view(st, peek_txn, &p)))
		return rc;
	if (tf_status_terminal(p.status))
		return tf_task_cancel_drop_signal(st, task_id); /* a late request: moot */
	for (int attempt = 0; attempt < 3; attempt++) {
		if (settle(p.status, final) == TF_ST_CANCELLED || c.again) {
			tf_store_update(st, mark_rolling_back, (void *)task_id);
			if ((rc = tf_store_rollback(st, task_id, &c.rolled_back)))
				return rc;
			/* Exports' Last-Modified moves on (their ETag follows the
			 * restored index by itself). */
			if (c.rolled_back)
				tf_index_touch(st);
			c.rolled = 1;
		}
		rc = tf_store_update(st, finish_txn, &c);
		if (rc == TF_ECONFLICT && c.again)
			continue;
		if (rc)
			return rc;
		/* The tables hold the cancel now (finish_txn saved the task with
		 * it merged in): the request in the signal store has done its work. */
		if (tf_task_cancel_drop_signal(st, task_id))
			tf_warn("runctl: could not drop the cancel signal of %s", task_id);
		/* The cancel's audit entry, deferred like the cancel, joins the
		 * trail at the latest now. */
		if (tf_audit_flush(st))
			tf_warn("runctl: could not move deferred audit entries");
		*ended = !c.already;
		if (!c.already && c.final != TF_ST_CANCELLED)
			rc = tf_store_undo_drop(st, task_id);
		return rc;
	}
	return TF_ECONFLICT;
}

int tf_runctl_finish(tf_store *st, const char *task_id, tf_status final, int forced,
                     const char *error)
{
	int ended;
	return finish(st, task_id, final, forced, error, &ended);
}

/* ---- liveness ------------------------------------------------------------------ */

struct reap_ctx {
	const char *task_id;
	tf_status status;
	int has_run, alive;
	tf_runinfo ri;
};

static int reap_peek(tf_txn *txn, void *vctx)
{
	struct reap_ctx *c = vctx;
	struct peek_ctx p = {.task_id = c->task_id};
	int rc = peek_txn(txn, &p);
	if (rc)
		return rc;
	c->status = p.status;
	c->has_run = info_get(txn, c->task_id, &c->ri) == TF_OK;
	return c->has_run && tf_status_active(c->status)
	           ? tf_runctl_alive(txn, c->task_id, &c->ri, &c->alive)
	           : TF_OK;
}

int tf_runctl_reap(tf_store *st, const char *task_id, int *reaped)
{
	struct reap_ctx c = {.task_id = task_id};
	int ended, rc = tf_store_view(st, reap_peek, &c);

	*reaped = 0;
	if (rc || !tf_status_active(c.status))
		return rc;
	if (!c.has_run) {
		/* Never started: a queued task waits for a slot; one cancelled while
		 * queued ends here, having fetched nothing. */
		if (c.status == TF_ST_QUEUED)
			return TF_OK;
		*reaped = 1;
		if (!(rc = finish(st, task_id,
		                  c.status == TF_ST_CANCELLING ? TF_ST_CANCELLED : TF_ST_STOPPED, 0,
		                  NULL, &ended)) &&
		    ended)
			reaped_notify(st, task_id);
		return rc;
	}
	if (c.alive)
		return TF_OK;
	*reaped = 1;
	tf_warn("runctl: run %s lost its processes; ending it", task_id);
	if ((rc = finish(st, task_id, TF_ST_FAILED, 1, "worker lost", &ended)))
		return rc;
	if (!(rc = tf_runctl_release(st, task_id)) && ended)
		reaped_notify(st, task_id);
	return rc;
}

static int release_txn(tf_txn *txn, void *vctx)
{
	int rc = tf_txn_del(txn, TF_TBL_RUNS, vctx, TF_UUID_LEN);
	return rc == TF_ENOTFOUND ? TF_OK : rc;
}

int tf_runctl_release(tf_store *st, const char *task_id)
{
	return tf_store_update(st, release_txn, (void *)task_id);
}

/* Task ids held as values of tbl (ACTIVE or QUEUE), in key order; with
 * unclaimed, only those no supervisor has claimed yet. */
struct ids_ctx {
	tf_table tbl;
	int unclaimed;
	char (*ids)[TF_UUID_LEN + 1];
	size_t max, n;
};

static int info_get(tf_txn *txn, const char *task_id, tf_runinfo *ri);

static int ids_txn(tf_txn *txn, void *vctx)
{
	struct ids_ctx *c = vctx;
	tf_cursor *cur;
	const void *k, *v;
	size_t kl, vl;
	int rc = tf_cursor_open(txn, c->tbl, &cur);

	c->n = 0;
	if (rc)
		return rc;
	for (rc = tf_cursor_get(cur, TF_SEEK_FIRST, NULL, 0, &k, &kl, &v, &vl);
	     rc == TF_OK && c->n < c->max;
	     rc = tf_cursor_get(cur, TF_SEEK_NEXT, NULL, 0, &k, &kl, &v, &vl)) {
		tf_runinfo ri;
		if (vl != TF_UUID_LEN)
			continue;
		memcpy(c->ids[c->n], v, TF_UUID_LEN);
		c->ids[c->n][TF_UUID_LEN] = '\0';
		if (!c->unclaimed || info_get(txn, c->ids[c->n], &ri) == TF_ENOTFOUND)
			c->n++;
	}
	tf_cursor_close(cur);
	return rc == TF_ENOTFOUND || rc == TF_OK ? TF_OK : rc;
}

int tf_runctl_reap_all(tf_store *st, int *reaped)
{
	char ids[256][TF_UUID_LEN + 1];
	struct ids_ctx c = {TF_TBL_ACTIVE, 0, ids, 256, 0};
	int rc = tf_store_view(st, ids_txn, &c), one;

	*reaped = 0;
	for (size_t i = 0; !rc && i < c.n; i++) {
		rc = tf_runctl_reap(st, ids[i], &one);
		*reaped += one;
	}
	return rc;
}

/* ---- slots and the queue -------------------------------------------------------- */

static int live_runs(tf_txn *txn, const char *except, int *n)
{
	tf_cursor *cur;
	const void *k, *v;
	size_t kl, vl;
	int rc = tf_cursor_open(txn, TF_TBL_RUNS, &cur);

	*n = 0;
	if (rc)
		return rc;
	rc = tf_cursor_get(cur, TF_SEEK_FIRST, NULL, 0, &k, &kl, &v, &vl);
	while (rc == TF_OK) {
		char id[TF_UUID_LEN + 1];
		tf_runinfo ri;
		int alive = 0;
		if (kl == TF_UUID_LEN && (!except || memcmp(k, except, kl))) {
			memcpy(id, k, TF_UUID_LEN);
			id[TF_UUID_LEN] = '\0';
			/* info_get: the cursor's pointers may not survive a get */
			if ((rc = info_get(txn, id, &ri)) || (rc = tf_runctl_alive(txn, id, &ri, &alive)))
				break;
			*n += alive;
		}
		rc = tf_cursor_get(cur, TF_SEEK_NEXT, NULL, 0, &k, &kl, &v, &vl);
	}
	tf_cursor_close(cur);
	return rc == TF_ENOTFOUND ? TF_OK : rc;
}

/* Unclaimed queued tasks older than task_id (oldest first: they go first). */
static int waiting_ahead(tf_txn *txn, const char *task_id, int *n)
{
	tf_cursor *cur;
	const void *k, *v;
	size_t kl, vl;
	int rc = tf_cursor_open(txn, TF_TBL_QUEUE, &cur);

	*n = 0;
	if (rc)
		return rc;
	for (rc = tf_cursor_get(cur, TF_SEEK_FIRST, NULL, 0, &k, &kl, &v, &vl); rc == TF_OK;
	     rc = tf_cursor_get(cur, TF_SEEK_NEXT, NULL, 0, &k, &kl, &v, &vl)) {
		char id[TF_UUID_LEN + 1];
		tf_runinfo ri;
		if (vl != TF_UUID_LEN)
			continue;
		if (!memcmp(v, task_id, TF_UUID_LEN))
			break;
		memcpy(id, v, TF_UUID_LEN);
		id[TF_UUID_LEN] = '\0';
		if (info_get(txn, id, &ri) == TF_ENOTFOUND)
			(*n)++;
	}
	tf_cursor_close(cur);
	return rc == TF_ENOTFOUND || rc == TF_OK ? TF_OK : rc;
}

struct claim_ctx {
	const char *task_id;
	int max_runs, claimed;
};

static int claim_txn(tf_txn *txn, void *vctx)
{
	struct claim_ctx *c = vctx;
	tf_task *t;
	tf_runinfo ri = {0};
	int live, ahead, rc = tf_task_load(txn, c->task_id, &t);

	c->claimed = 0;
	if (rc)
		return rc;
	if (tf_task_status(t) != TF_ST_QUEUED || info_get(txn, c->task_id, &ri) == TF_OK)
		goto out; /* cancelled while queued, or another supervisor has it */
	if ((rc = live_runs(txn, c->task_id, &live)) ||
	    (rc = waiting_ahead(txn, c->task_id, &ahead)) || live + ahead >= c->max_runs)
		goto out; /* no slot, or the free ones belong to older queued tasks */
	ri.sup_pid = (int32_t)getpid();
	ri.sup_start = tf_proc_start(getpid());
	ri.host = tf_host_id();
	if ((rc = tf_txn_put(txn, TF_TBL_RUNS, c->task_id, TF_UUID_LEN, &ri, sizeof ri)) ||
	    (rc = queue_remove(txn, c->task_id)) || (rc = tf_task_set_status(t, TF_ST_RUNNING)))
		goto out;
	tf_task_set_stage(t, TF_SG_CONNECTING, "starting");
	if (!(rc = tf_task_save(txn, t)))
		c->claimed = 1;
out:
	tf_task_free(t);
	return rc;
}

int tf_runctl_claim(tf_store *st, const char *task_id, int max_runs, int *claimed)
{
	struct claim_ctx c = {task_id, max_runs, 0};
	int rc = tf_store_update(st, claim_txn, &c);
	*claimed = rc ? 0 : c.claimed;
	return rc;
}

struct worker_ctx {
	const char *task_id;
	pid_t pid;
};

static int set_worker_txn(tf_txn *txn, void *vctx)
{
	struct worker_ctx *c = vctx;
	tf_runinfo ri;
	int rc = info_get(txn, c->task_id, &ri);
	if (rc)
		return rc;
	ri.worker_pid = (int32_t)c->pid;
	ri.worker_start = tf_proc_start(c->pid);
	return tf_txn_put(txn, TF_TBL_RUNS, c->task_id, TF_UUID_LEN, &ri, sizeof ri);
}

int tf_runctl_set_worker(tf_store *st, const char *task_id, pid_t pid)
{
	struct worker_ctx c = {task_id, pid};
	return tf_store_update(st, set_worker_txn, &c);
}

int tf_runctl_queued(tf_store *st, char (*ids)[TF_UUID_LEN + 1], size_t max, size_t *n)
{
	struct ids_ctx c = {TF_TBL_QUEUE, 1, ids, max, 0};
	int rc = tf_store_view(st, ids_txn, &c);
	*n = c.n;
	return rc;
}

int tf_runctl_next_queued(tf_store *st, char *task_id)
{
	char id[1][TF_UUID_LEN + 1];
	size_t n = 0;
	int rc = tf_runctl_queued(st, id, 1, &n);

	if (!rc && !n)
		rc = TF_ENOTFOUND;
	if (!rc)
		memcpy(task_id, id[0], TF_UUID_LEN + 1);
	return rc;
}

struct undo_ids_ctx {
	char ids[64][TF_UUID_LEN + 1];
	size_t n;
};

/* Distinct task ids in the undo table whose task is terminal (or gone). */
static int stale_undo_txn(tf_txn *txn, void *vctx)
{
	struct undo_ids_ctx *c = vctx;
	tf_cursor *cur;
	const void *k, *v;
	size_t kl, vl;
	unsigned char next[TF_UUID_LEN + 1];
	int rc = tf_cursor_open(txn, TF_TBL_UNDO, &cur);

	c->n = 0;
	if (rc)
		return rc;
	rc = tf_cursor_get(cur, TF_SEEK_FIRST, NULL, 0, &k, &kl, &v, &vl);
	while (rc == TF_OK && c->n < 64 && kl >= TF_UUID_LEN) {
		tf_task *t = NULL;
		char id[TF_UUID_LEN + 1];
		memcpy(id, k, TF_UUID_LEN);
		id[TF_UUID_LEN] = '\0';
		if (tf_task_load(txn, id, &t) != TF_OK || tf_status_terminal(tf_task_status(t)))
			memcpy(c->ids[c->n++], id, TF_UUID_LEN + 1);
		tf_task_free(t);
		/* skip the rest of this task's entries */
		memcpy(next, id, TF_UUID_LEN);
		next[TF_UUID_LEN] = 0xff;
		rc = tf_cursor_get(cur, TF_SEEK_GE, next, sizeof next, &k, &kl, &v, &vl);
	}
	tf_cursor_close(cur);
	return rc == TF_ENOTFOUND || rc == TF_OK ? TF_OK : rc;
}

int tf_runctl_gc_undo(tf_store *st, uint64_t *runs)
{
	struct undo_ids_ctx c;
	int rc = tf_store_view(st, stale_undo_txn, &c);

	*runs = 0;
	for (size_t i = 0; !rc && i < c.n; i++)
		if (!(rc = tf_store_undo_drop(st, c.ids[i])))
			(*runs)++;
	return rc;
}

struct counts_ctx {
	int active, queued;
};

static int counts_txn(tf_txn *txn, void *vctx)
{
	struct counts_ctx *c = vctx;
	tf_cursor *cur;
	const void *k, *v;
	size_t kl, vl;
	int rc = live_runs(txn, NULL, &c->active);

	if (rc || (rc = tf_cursor_open(txn, TF_TBL_QUEUE, &cur)))
		return rc;
	c->queued = 0;
	for (rc = tf_cursor_get(cur, TF_SEEK_FIRST, NULL, 0, &k, &kl, &v, &vl); rc == TF_OK;
	     rc = tf_cursor_get(cur, TF_SEEK_NEXT, NULL, 0, &k, &kl, &v, &vl))
		c->queued++;
	tf_cursor_close(cur);
	return rc == TF_ENOTFOUND ? TF_OK : rc;
}

int tf_runctl_counts(tf_store *st, int *active_workers, int *queued)
{
	struct counts_ctx c = {0, 0};
	int rc = tf_store_view(st, counts_txn, &c);
	*active_workers = c.active;
	*queued = c.queued;
	return rc;
}

int tf_runctl_start(const tf_config *cfg, tf_store *st, const char *task_id)
{
	int rc;

	if (cfg->run_by_agents)
		return tf_store_notify(st, TF_CHAN_QUEUE);
	if ((rc = tf_runctl_spawn(cfg, task_id)))
		return rc;
	/* Older queued tasks go first: start them too (their claims decide). */
	tf_runctl_drain(cfg, st, task_id, NULL);
	return TF_OK;
}

int tf_runctl_kick(const tf_config *cfg, tf_store *st)
{
	if (cfg->run_by_agents)
		return tf_store_notify(st, TF_CHAN_QUEUE);
	return tf_runctl_drain(cfg, st, NULL, NULL);
}

int tf_runctl_counts_txn(tf_txn *txn, int *active_workers, int *queued)
{
	struct counts_ctx c = {0, 0};
	int rc = counts_txn(txn, &c);
	*active_workers = c.active;
	*queued = c.queued;
	return rc;
}

int tf_runctl_drain(const tf_config *cfg, tf_store *st, const char *skip, int *started)
{
	char ids[64][TF_UUID_LEN + 1];
	size_t n = 0, max = cfg->max_concurrent_runs < 64 ? (size_t)cfg->max_concurrent_runs : 64;
	int live = 0, queued = 0, rc = tf_runctl_counts(st, &live, &queued);

	/* No more supervisors than free slots (on every host together): the
	 * claims would turn the rest away anyway, one process each. */
	if (rc || live >= cfg->max_concurrent_runs || !queued)
		return rc;
	if ((size_t)(cfg->max_concurrent_runs - live) < max)
		max = (size_t)(cfg->max_concurrent_runs - live);
	rc = tf_runctl_queued(st, ids, max, &n);

	for (size_t i = 0; !rc && i < n; i++)
		if ((!skip || strcmp(ids[i], skip)) && !tf_runctl_spawn(cfg, ids[i]) && started)
			(*started)++;
	return rc;
}
