/* The run: everything between a claimed task and its terminal state inside
 * the worker process. Cancellation reaches it three ways — SIGUSR1 from the
 * handler/CLI/supervisor (writes the self-pipe the fetch polls on), a store
 * check at most every CHECK_EVERY_US, and the check inside every commit
 * transaction, which is what makes "never half a page" hold. While the driver
 * runs, every store write goes through the run's writer thread (writer.h). */
#include "run.h"
#include "config.h"
#include "drivers.h"
#include "err.h"
#include "feed.h"
#include "json.h"
#include "tf_limits.h"
#include "log.h"
#include "records.h"
#include "runctl.h"
#include "store.h"
#include "util.h"
#include "writer.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define CHECK_EVERY_US 100000

struct tf_run {
	tf_store *st;
	char task_id[TF_UUID_LEN + 1];
	char feed_id[TF_MAX_FEED_ID + 1];
	json_object *feed, *cursor;
	tf_fetch *fetch;
	tf_writer *writer; /* while the driver runs */
	tf_batch *batch;
	tf_progress prog;
	tf_stage stage;
	char message[TF_MAX_MESSAGE_LEN + 1];
	char error[TF_MAX_ERROR_LEN + 1];
	char *warnings[TF_WRITER_MAX_WARNINGS];
	int nwarnings;
	tf_cancel_mode cancel;
	int64_t started_us, last_write_us, last_check_us;
	int dirty;
	tf_metrics_taken taken; /* by the driver's own progress writes */
};

static int wake_pipe[2] = {-1, -1};
static volatile sig_atomic_t woken;

static void on_wake(int sig)
{
	int saved = errno;
	(void)sig;
	woken = 1;
	if (wake_pipe[1] >= 0) {
		ssize_t n = write(wake_pipe[1], "!", 1);
		(void)n;
	}
	errno = saved;
}

static int setup_wake(void)
{
	struct sigaction sa = {0};

	if (pipe2(wake_pipe, O_CLOEXEC | O_NONBLOCK))
		return TF_ESYS;
	sa.sa_handler = on_wake;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = SA_RESTART;
	sigaction(SIGUSR1, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	return TF_OK;
}

static void drain_wake(void)
{
	char buf[64];
	while (read(wake_pipe[0], buf, sizeof buf) > 0)
		;
	woken = 0;
}

/* ---- cancel ------------------------------------------------------------------ */

struct cancel_peek {
	tf_run *r;
	tf_cancel_mode mode;
};

static int cancel_peek_txn(tf_txn *txn, void *vctx)
{
	struct cancel_peek *c = vctx;
	return tf_task_cancel_requested(txn, c->r->task_id, c->r->feed_id, &c->mode);
}

static void look_at_store(tf_run *r)
{
	struct cancel_peek c = {r, TF_CANCEL_NONE};
	r->last_check_us = tf_mono_us();
	if (tf_store_view(r->st, cancel_peek_txn, &c) == TF_OK && c.mode > r->cancel)
		r->cancel = c.mode;
}

int tf_run_check(tf_run *r)
{
	if (r->writer && tf_writer_cancel_seen(r->writer) > r->cancel)
		r->cancel = tf_writer_cancel_seen(r->writer);
	if (r->cancel == TF_CANCEL_JOB)
		return TF_ECANCELLED;
	if (woken) {
		drain_wake();
		look_at_store(r);
	} else if (tf_mono_us() - r->last_check_us >= CHECK_EVERY_US) {
		look_at_store(r);
	}
	return r->cancel != TF_CANCEL_NONE ? TF_ECANCELLED : TF_OK;
}

static int fetch_cancel(void *ctx)
{
	return tf_run_check(ctx) != TF_OK;
}

/* ---- progress ------------------------------------------------------------------ */

static void view_of(const tf_run *r, tf_run_view *v)
{
	v->prog = r->prog;
	v->stage = r->stage;
	snprintf(v->message, sizeof v->message, "%s", r->message);
}

static void forget_warnings(tf_run *r)
{
	for (int i = 0; i < r->nwarnings; i++)
		free(r->warnings[i]);
	r->nwarnings = 0;
}

static int progress_txn(tf_txn *txn, void *vctx)
{
	tf_run *r = vctx;
	tf_run_view v;

	view_of(r, &v);
	return tf_run_view_save(txn, r->task_id, &v, r->warnings, r->nwarnings, &r->taken);
}

/* With the writer running this only publishes; before it starts and after it
 * stopped, the driver's thread writes itself. */
static int write_progress(tf_run *r)
{
	int rc = TF_OK;

	if (r->writer) {
		tf_run_view v;
		view_of(r, &v);
		tf_writer_show(r->writer, &v);
	} else if ((rc = tf_store_update(r->st, progress_txn, r))) {
		return rc;
	} else {
		tf_metrics_taken_done(&r->taken);
	}
	forget_warnings(r);
	r->dirty = 0;
	r->last_write_us = tf_mono_us();
	return rc;
}

static void maybe_write(tf_run *r)
{
	if (tf_mono_us() - r->last_write_us >= TF_PROGRESS_INTERVAL_MS * 1000)
		write_progress(r);
	else
		r->dirty = 1;
}

int tf_run_stage(tf_run *r, tf_stage stage, const char *fmt, ...)
{
	int blocking = stage == TF_SG_FETCHING || stage == TF_SG_RATE_LIMITED ||
	               stage == TF_SG_CONNECTING || stage == TF_SG_DISCOVERING;
	r->stage = stage;
	if (fmt) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(r->message, sizeof r->message, fmt, ap);
		va_end(ap);
	}
	/* A stage that precedes a wait is written now: nothing else would write
	 * it until the wait ends, and the status would show the previous step. */
	if (blocking)
		write_progress(r);
	else
		maybe_write(r);
	return tf_run_check(r);
}

void tf_run_warn(tf_run *r, const char *fmt, ...)
{
	char line[TF_MAX_WARNING_LEN + 1];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	tf_info("run %s: %s", r->task_id, line);
	if (r->writer) {
		tf_writer_warn(r->writer, line);
		r->dirty = 1;
		return;
	}
	if (r->nwarnings == TF_WRITER_MAX_WARNINGS)
		write_progress(r);
	if (r->nwarnings < TF_WRITER_MAX_WARNINGS && (r->warnings[r->nwarnings] = strdup(line)))
		r->nwarnings++;
	r->dirty = 1;
}

const char *tf_run_error(const tf_run *r)
{
	return r->error;
}

void tf_run_fail(tf_run *r, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(r->error, sizeof r->error, fmt, ap);
	va_end(ap);
}

int tf_feed_key_header(json_object *feed, const char *name, char *buf, size_t len, char *err,
                       size_t errlen)
{
	const char *secret = tf_json_str(feed, "secret");

	if (!secret || !*secret) {
		tf_set_err(err, errlen, "feed has no API key (secret)");
		return TF_EINVAL;
	}
	for (const char *c = secret; *c; c++)
		if ((unsigned char)*c < 0x20 || *c == 0x7f) {
			tf_set_err(err, errlen, "the API key contains control characters");
			return TF_EINVAL;
		}
	if (strlen(secret) > TF_MAX_FIELD) {
		tf_set_err(err, errlen, "the API key is longer than %d bytes", TF_MAX_FIELD);
		return TF_EINVAL;
	}
	snprintf(buf, len, "%s: %s", name, secret);
	return TF_OK;
}

int tf_run_key_header(tf_run *r, const char *name, char *buf, size_t len)
{
	char err[128];
	int rc = tf_feed_key_header(r->feed, name, buf, len, err, sizeof err);

	if (rc)
		tf_run_fail(r, "%s", err);
	return rc;
}

char *tf_feed_base_url(json_object *feed, const char *example, char *err, size_t errlen)
{
	const char *url = tf_json_str(feed, "url");
	CURLU *u;
	char *scheme = NULL, *b;
	int ok = 0;
	size_t n;

	if (!url || !*url) {
		tf_set_err(err, errlen, "feed has no url");
		return NULL;
	}
	if (strlen(url) <= TF_MAX_URL && !strpbrk(url, "?# \t\r\n") && (u = curl_url())) {
		ok = !curl_url_set(u, CURLUPART_URL, url, CURLU_NON_SUPPORT_SCHEME) &&
		     !curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) &&
		     (!strcasecmp(scheme, "http") || !strcasecmp(scheme, "https"));
		curl_free(scheme);
		curl_url_cleanup(u);
	}
	if (!ok) {
		tf_set_err(err, errlen, "feed url is not an http(s) base URL such as %s", example);
		return NULL;
	}
	if (!(b = strdup(url))) {
		tf_set_err(err, errlen, "out of memory");
		return NULL;
	}
	for (n = strlen(b); n > 0 && b[n - 1] == '/'; n--)
		b[n - 1] = '\0';
	return b;
}

char *tf_run_base_url(tf_run *r, const char *example)
{
	char err[TF_MAX_URL + 128];
	char *b = tf_feed_base_url(r->feed, example, err, sizeof err);

	if (!b)
		tf_run_fail(r, "%s", err);
	return b;
}

int tf_run_page_budget(tf_run *r, int pages)
{
	if ((tf_mono_us() - r->started_us) / 1000000 > TF_MAX_RUN_S) {
		tf_run_fail(r, "run took longer than %d s: stopped after %d pages", TF_MAX_RUN_S,
		            pages);
		return TF_ELIMIT;
	}
	if (pages >= TF_MAX_PAGES) {
		tf_run_fail(r, "more than %d pages: giving up", TF_MAX_PAGES);
		return TF_ELIMIT;
	}
	return TF_OK;
}

int tf_run_sleep(tf_run *r, int64_t ms)
{
	int64_t end = tf_mono_us() + ms * 1000;

	if (r->dirty)
		write_progress(r);
	while (tf_run_check(r) == TF_OK) {
		int64_t left = (end - tf_mono_us()) / 1000;
		struct pollfd p = {.fd = wake_pipe[0], .events = POLLIN};
		if (left <= 0)
			return TF_OK;
		/* Wake at least every CHECK_EVERY_US to look at the store too. */
		poll(&p, 1, (int)(left < CHECK_EVERY_US / 1000 ? left : CHECK_EVERY_US / 1000));
		if (p.revents & POLLIN)
			woken = 1;
	}
	return TF_ECANCELLED;
}

json_object *tf_run_feed(tf_run *r) { return r->feed; }
json_object *tf_run_cursor(tf_run *r) { return r->cursor; }
tf_fetch *tf_run_fetch(tf_run *r) { return r->fetch; }
tf_progress *tf_run_progress(tf_run *r) { return &r->prog; }

int tf_run_add(tf_run *r, const char *key, const char *type, const char *value,
               json_object *observables, int64_t modified_us, const char *object, size_t len)
{
	return tf_batch_add(r->batch, key, type, value, observables, modified_us, object, len);
}

int tf_run_set_life(tf_run *r, int64_t valid_until_us, int revoked)
{
	return tf_batch_set_life(r->batch, valid_until_us, revoked);
}

int tf_run_store_observables(tf_run *r, size_t max, json_object *out)
{
	return tf_records_observables(r->st, r->feed_id, max, out);
}

/* ---- commit ------------------------------------------------------------------ */

int tf_run_commit(tf_run *r, json_object *cursor)
{
	tf_run_view v;
	int rc = tf_run_check(r);

	if (rc)
		return rc;
	view_of(r, &v);
	if ((rc = tf_writer_commit(r->writer, &r->batch, cursor, &v))) {
		tf_run_check(r); /* adopts the cancel mode the writer found */
		return rc;
	}
	r->dirty = 0;
	r->last_write_us = tf_mono_us();
	if (cursor) {
		json_object_put(r->cursor);
		r->cursor = json_object_get(cursor);
	}
	return TF_OK;
}

/* ---- the work process ---------------------------------------------------------- */

struct load_ctx {
	tf_run *r;
	tf_status status;
};

static int load_txn(tf_txn *txn, void *vctx)
{
	struct load_ctx *c = vctx;
	tf_run *r = c->r;
	tf_task *t;
	int rc = tf_task_load(txn, r->task_id, &t);

	if (rc)
		return rc;
	snprintf(r->feed_id, sizeof r->feed_id, "%s", tf_task_feed_id(t));
	c->status = tf_task_status(t);
	tf_task_get_progress(t, &r->prog);
	tf_task_free(t);
	if ((rc = tf_feed_load(txn, r->feed_id, &r->feed)))
		return rc;
	return tf_feed_cursor(txn, r->feed_id, &r->cursor);
}

static int drive(tf_run *r)
{
	const char *type = tf_json_str(r->feed, "type");

	if (!type) {
		tf_run_fail(r, "feed has no type");
		return TF_EINVAL;
	}
	const tf_driver *d = tf_driver_find(type);

	if (!d) {
		tf_run_fail(r, "unknown feed type '%s'", type);
		return TF_EINVAL;
	}
	return d->run(r);
}

static void run_free(tf_run *r)
{
	tf_fetch_free(r->fetch);
	tf_batch_free(r->batch);
	json_object_put(r->feed);
	json_object_put(r->cursor);
	forget_warnings(r);
	tf_store_close(r->st);
}

static int end_run(tf_run *r, int rc)
{
	tf_status final = TF_ST_COMPLETED;
	const char *error = NULL;

	if (r->writer) {
		/* Everything handed over is committed or abandoned before the
		 * task ends; a failed commit fails the run, and its message wins:
		 * the driver, pages ahead, only saw the failure later. */
		int wrc = tf_writer_stop(r->writer, &r->prog);
		r->writer = NULL;
		if (wrc && wrc != TF_ECANCELLED) {
			tf_run_fail(r, "storing failed after %lld committed pages: %s",
			            (long long)r->prog.pages_done, tf_strerror(wrc));
			rc = wrc;
		} else if (rc == TF_OK && wrc) {
			rc = wrc;
		}
	}
	tf_batch_clear(r->batch);
	write_progress(r);
	if (rc == TF_ECANCELLED) {
		look_at_store(r);
		final = r->cancel == TF_CANCEL_JOB ? TF_ST_CANCELLED : TF_ST_STOPPED;
	} else if (rc != TF_OK) {
		final = TF_ST_FAILED;
		error = r->error[0] ? r->error : tf_strerror(rc);
	}
	rc = tf_runctl_finish(r->st, r->task_id, final, 0, error);
	tf_store_sync(r->st);
	return rc;
}

/* The feed's proxy and TLS settings for every request of the run. */
static int use_feed_net(tf_run *r, const tf_config *cfg)
{
	tf_feed_net net;

	tf_feed_net_of(r->feed, cfg->proxy, cfg->no_proxy, &net);
	net.upstream = &cfg->upstream;
	return tf_fetch_set_net(r->fetch, &net);
}

int tf_work_main(const tf_config *cfg, const char *task_id)
{
	tf_run run = {.stage = TF_SG_CONNECTING, .cancel = TF_CANCEL_NONE,
	              .started_us = tf_mono_us()};
	pid_t supervisor = getppid();
	struct load_ctx lc = {&run, TF_ST_QUEUED};
	char err[256];
	int rc;

	if (!tf_valid_uuid(task_id))
		return 2;
	snprintf(run.task_id, sizeof run.task_id, "%s", task_id);
	if (setup_wake())
		return 1;
	if (tf_store_open(&run.st, cfg->db_path, tf_config_map_bytes(cfg), err, sizeof err)) {
		tf_err("%s", err);
		return 1;
	}
	/* Seen from another host, the run is alive while this lease is held
	 * (the supervisor holds one too: either keeps the run alive). */
	if (tf_store_shared(run.st) && (rc = tf_store_lease(run.st, task_id))) {
		tf_err("work %s: cannot hold the run's lease: %s", task_id, tf_strerror(rc));
		run_free(&run);
		return 1;
	}
	if ((rc = tf_store_view(run.st, load_txn, &lc)) || !tf_status_active(lc.status)) {
		tf_err("work %s: cannot load the run: %s", task_id, tf_strerror(rc));
		run_free(&run);
		return rc ? 1 : 0;
	}
	/* Batches commit without waiting for the disk; see tf_store_set_lazy. */
	tf_store_set_lazy(run.st, 1);
	{
		tf_run_view v;
		view_of(&run, &v);
		rc = tf_writer_start(&run.writer, run.st, run.task_id, run.feed_id, &v);
	}
	if (rc || (rc = tf_batch_new(&run.batch)) ||
	    (rc = tf_fetch_new(&run.fetch, wake_pipe[0], fetch_cancel, &run)) ||
	    (rc = use_feed_net(&run, cfg))) {
		tf_run_fail(&run, "cannot start: %s", tf_strerror(rc));
	} else {
		run.last_write_us = 0;
		look_at_store(&run);
		rc = run.cancel != TF_CANCEL_NONE ? TF_ECANCELLED : drive(&run);
	}
	rc = end_run(&run, rc);
	/* Normally the supervisor frees the slot and hands it on once this
	 * process has exited; if the supervisor was killed, this does. */
	if (getppid() != supervisor) {
		tf_runctl_release(run.st, task_id);
		tf_runctl_kick(cfg, run.st);
	}
	run_free(&run);
	return rc ? 1 : 0;
}
