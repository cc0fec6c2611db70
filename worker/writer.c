#include "writer.h"
#include "err.h"
#include "log.h"
#include "util.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SYNC_EVERY_US 1000000 /* lazy commits reach the disk at least this often */

struct item {
	tf_batch *b;
	json_object *cursor;
	tf_run_view v;
	size_t bytes;
};

struct tf_writer {
	tf_store *st;
	char task_id[TF_UUID_LEN + 1];
	char feed_id[TF_MAX_FEED_ID + 1];
	pthread_t thread, syncer;
	pthread_mutex_t mu;
	pthread_cond_t work, idle; /* work: something to write; idle: room or done */
	pthread_cond_t tick;       /* the syncer's clock; signalled on stop */
	int unsynced;              /* commits since the syncer last flushed */
	/* Under mu: */
	struct item q[TF_WRITER_MAX_QUEUED];
	int qn;
	size_t qbytes;
	tf_batch *spare[2 * TF_WRITER_MAX_QUEUED];
	int nspare;
	tf_run_view view;
	int view_dirty;
	char *warnings[TF_WRITER_MAX_WARNINGS];
	int nwarnings;
	int stopping, err, abandoned;
	tf_run_view kept; /* the driver's view at the last committed page */
	int64_t created, updated, skipped;
	atomic_int cancel;
	int64_t stop_at_page;      /* test hook (fault_stop_page); 0: off */
};

/* ---- the transactions ---------------------------------------------------------- */

struct txn_ctx {
	tf_writer *w;
	struct item *items;
	int n;
	const tf_run_view *v;
	char **warnings;
	int nwarnings;
	int64_t created, updated, skipped; /* totals after this transaction */
	tf_cancel_mode cancel;
	tf_metrics_taken taken; /* upstream counts the transaction took */
};

/* Stage and message are the run's until a cancel is recorded: from then on
 * the cancel's own stage ("stopping", "rolling_back") stays visible. */
int tf_run_view_save(tf_txn *txn, const char *task_id, const tf_run_view *v,
                     char *const *warnings, int nwarnings, tf_metrics_taken *taken)
{
	tf_task *t;
	tf_progress before;
	int rc = tf_task_load(txn, task_id, &t);

	if (taken)
		memset(taken, 0, sizeof *taken);
	if (rc)
		return rc;
	if (!tf_status_terminal(tf_task_status(t))) {
		tf_task_get_progress(t, &before);
		tf_task_set_progress(t, &v->prog);
		if (tf_task_status(t) == TF_ST_RUNNING)
			tf_task_set_stage(t, v->stage, v->message[0] ? v->message : NULL);
		for (int i = 0; i < nwarnings; i++)
			tf_task_add_warning(t, warnings[i]);
		if (!(rc = tf_task_save(txn, t)))
			rc = tf_metrics_run_progress(txn, tf_task_feed_id(t), &before, &v->prog, taken);
	}
	tf_task_free(t);
	return rc;
}

/* The driver's view with what the commits counted. */
static int show_txn(tf_txn *txn, void *vctx)
{
	struct txn_ctx *c = vctx;
	tf_run_view v = *c->v;

	v.prog.indicators_created += c->created;
	v.prog.indicators_updated += c->updated;
	v.prog.indicators_skipped += c->skipped;
	return tf_run_view_save(txn, c->w->task_id, &v, c->warnings, c->nwarnings, &c->taken);
}

/* Test hook (README "Testing"): TF_FAULT=stop_in_commit:N in the worker's
 * environment stops the whole process (SIGSTOP) inside the write
 * transaction of the commit that carries page N, once, while it holds the
 * writer lock — the freeze that cancels must not wait behind (docs/SPEC.md
 * §3). Nothing else reads TF_FAULT; without it the hook costs one test. */
static int64_t fault_stop_page(void)
{
	const char *f = getenv("TF_FAULT");
	int64_t n = 0;

	if (f && !strncmp(f, "stop_in_commit:", 15) && !tf_parse_i64(f + 15, 1, INT64_MAX, &n))
		return n;
	return 0;
}

static void fault_check(tf_writer *w, const struct txn_ctx *c)
{
	for (int i = 0; w->stop_at_page && i < c->n; i++)
		if (c->items[i].v.prog.pages_done >= w->stop_at_page) {
			w->stop_at_page = 0;
			tf_warn("run %s: TF_FAULT: stopping inside the commit of page %lld", w->task_id,
			        (long long)c->items[i].v.prog.pages_done);
			raise(SIGSTOP);
		}
}

static int commit_txn(tf_txn *txn, void *vctx)
{
	struct txn_ctx *c = vctx;
	tf_writer *w = c->w;
	json_object *cursor = NULL;
	int rc;

	fault_check(w, c);

	/* Inside the write transaction, a cancel recorded before it is seen:
	 * the pages are abandoned whole. */
	if ((rc = tf_task_cancel_requested(txn, w->task_id, w->feed_id, &c->cancel)))
		return rc;
	if (c->cancel != TF_CANCEL_NONE)
		return TF_ECANCELLED;
	/* Counted afresh on every attempt: a replay after map growth. */
	c->created = w->created, c->updated = w->updated, c->skipped = w->skipped;
	for (int i = 0; i < c->n; i++) {
		tf_progress p = {0};
		if ((rc = tf_batch_apply(txn, w->feed_id, w->task_id, c->items[i].b, &p)))
			return rc;
		c->created += p.indicators_created;
		c->updated += p.indicators_updated;
		c->skipped += p.indicators_skipped;
		if (c->items[i].cursor)
			cursor = c->items[i].cursor;
	}
	if (cursor && (rc = tf_records_put_cursor(txn, w->feed_id, w->task_id, cursor)))
		return rc;
	return show_txn(txn, c);
}

/* ---- the thread ------------------------------------------------------------------ */

static void recycle(tf_writer *w, struct item *it)
{
	tf_batch_clear(it->b);
	if (w->nspare < (int)(sizeof w->spare / sizeof *w->spare))
		w->spare[w->nspare++] = it->b;
	else
		tf_batch_free(it->b);
	json_object_put(it->cursor);
	it->b = NULL;
	it->cursor = NULL;
}

/* One round, outside the lock: commit the pages taken (or, with none, write
 * the view). Returns the commit's result. */
static int write_round(tf_writer *w, struct txn_ctx *c)
{
	int rc;

	if (!c->n) {
		/* Progress only: a failure here loses nothing and is not fatal. */
		rc = tf_store_update(w->st, show_txn, c);
		if (rc)
			tf_debug("run %s: progress write failed: %s", w->task_id, tf_strerror(rc));
		else
			tf_metrics_taken_done(&c->taken);
		return TF_OK;
	}
	rc = tf_store_update(w->st, commit_txn, c);
	if (rc == TF_ECANCELLED)
		atomic_store(&w->cancel, (int)c->cancel);
	if (!rc)
		tf_metrics_taken_done(&c->taken);
	if (rc) {
		/* The pages are lost, not the warnings and stage that came with them. */
		struct txn_ctx show = *c;
		show.n = 0;
		show.created = w->created, show.updated = w->updated, show.skipped = w->skipped;
		if (!tf_store_update(w->st, show_txn, &show))
			tf_metrics_taken_done(&show.taken);
	}
	return rc;
}

static void *writer_main(void *arg)
{
	tf_writer *w = arg;
	struct item items[TF_WRITER_MAX_QUEUED];
	char *warnings[TF_WRITER_MAX_WARNINGS];
	tf_run_view v;

	pthread_mutex_lock(&w->mu);
	for (;;) {
		/* A round without pages shows the counts of the commits so far. */
		struct txn_ctx c = {.w = w, .items = items, .v = &v, .warnings = warnings,
		                    .created = w->created, .updated = w->updated,
		                    .skipped = w->skipped};
		int rc;

		while (!w->qn && !w->view_dirty && !w->nwarnings && !w->stopping)
			pthread_cond_wait(&w->work, &w->mu);
		if (!w->qn && !w->view_dirty && !w->nwarnings)
			break; /* stopping, and nothing left to write */
		c.n = w->qn;
		memcpy(items, w->q, (size_t)c.n * sizeof *items);
		w->qn = 0;
		w->qbytes = 0;
		if (w->err) { /* after a refused commit every later page is abandoned */
			for (int i = 0; i < c.n; i++)
				recycle(w, &items[i]);
			w->abandoned |= c.n > 0;
			c.n = 0;
		}
		v = w->view;
		w->view_dirty = 0;
		c.nwarnings = w->nwarnings;
		memcpy(warnings, w->warnings, (size_t)c.nwarnings * sizeof *warnings);
		w->nwarnings = 0;
		pthread_cond_broadcast(&w->idle); /* the queue has room again */
		pthread_mutex_unlock(&w->mu);

		rc = write_round(w, &c);
		for (int i = 0; i < c.nwarnings; i++)
			free(warnings[i]);

		pthread_mutex_lock(&w->mu);
		if (c.n && !rc) {
			w->unsynced = 1;
			w->created = c.created, w->updated = c.updated, w->skipped = c.skipped;
			w->kept = items[c.n - 1].v;
		} else if (c.n) {
			w->err = rc;
			w->abandoned = 1;
		}
		for (int i = 0; i < c.n; i++)
			recycle(w, &items[i]);
		pthread_cond_broadcast(&w->idle);
	}
	pthread_mutex_unlock(&w->mu);
	return NULL;
}

/* Commits do not wait for the disk (tf_store_set_lazy); this thread flushes
 * them every SYNC_EVERY_US, so a commit never waits for a flush either. */
static void *syncer_main(void *arg)
{
	tf_writer *w = arg;

	pthread_mutex_lock(&w->mu);
	while (!w->stopping) {
		struct timespec until;
		int64_t at;
		clock_gettime(CLOCK_MONOTONIC, &until);
		at = (int64_t)until.tv_nsec + SYNC_EVERY_US * 1000;
		until.tv_sec += (time_t)(at / 1000000000);
		until.tv_nsec = (long)(at % 1000000000);
		pthread_cond_timedwait(&w->tick, &w->mu, &until);
		if (w->unsynced && !w->stopping) {
			w->unsynced = 0;
			pthread_mutex_unlock(&w->mu);
			tf_store_sync(w->st);
			pthread_mutex_lock(&w->mu);
		}
	}
	pthread_mutex_unlock(&w->mu);
	return NULL;
}

/* ---- the driver's side --------------------------------------------------------- */

static void end_threads(tf_writer *w, int syncer)
{
	pthread_mutex_lock(&w->mu);
	w->stopping = 1;
	pthread_cond_signal(&w->work);
	pthread_cond_signal(&w->tick);
	pthread_mutex_unlock(&w->mu);
	pthread_join(w->thread, NULL);
	if (syncer)
		pthread_join(w->syncer, NULL);
}

static void destroy(tf_writer *w)
{
	pthread_cond_destroy(&w->tick);
	pthread_cond_destroy(&w->idle);
	pthread_cond_destroy(&w->work);
	pthread_mutex_destroy(&w->mu);
	free(w);
}

int tf_writer_start(tf_writer **out, tf_store *st, const char *task_id, const char *feed_id,
                    const tf_run_view *initial)
{
	tf_writer *w = calloc(1, sizeof *w);
	pthread_condattr_t ca;
	sigset_t all, old;
	int rc;

	*out = NULL;
	if (!w)
		return TF_ENOMEM;
	w->st = st;
	snprintf(w->task_id, sizeof w->task_id, "%s", task_id);
	snprintf(w->feed_id, sizeof w->feed_id, "%s", feed_id);
	w->view = w->kept = *initial;
	atomic_init(&w->cancel, TF_CANCEL_NONE);
	w->stop_at_page = fault_stop_page();
	pthread_mutex_init(&w->mu, NULL);
	pthread_cond_init(&w->work, NULL);
	pthread_cond_init(&w->idle, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&w->tick, &ca);
	pthread_condattr_destroy(&ca);
	/* Signals (the cancel wake-up) go to the driver's thread, whose poll
	 * they must interrupt. */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	rc = pthread_create(&w->thread, NULL, writer_main, w);
	if (!rc && (rc = pthread_create(&w->syncer, NULL, syncer_main, w))) {
		end_threads(w, 0);
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc) {
		destroy(w);
		return TF_ESYS;
	}
	*out = w;
	return TF_OK;
}

int tf_writer_commit(tf_writer *w, tf_batch **batch, json_object *cursor, const tf_run_view *v)
{
	size_t bytes = tf_batch_bytes(*batch);
	tf_batch *next = NULL;
	int rc;

	pthread_mutex_lock(&w->mu);
	while (!w->err && (w->qn == TF_WRITER_MAX_QUEUED ||
	                   (w->qn && w->qbytes + bytes > TF_WRITER_MAX_QUEUED_BYTES)))
		pthread_cond_wait(&w->idle, &w->mu);
	if ((rc = w->err))
		goto out;
	if (w->nspare)
		next = w->spare[--w->nspare];
	else if ((rc = tf_batch_new(&next)))
		goto out;
	w->q[w->qn++] = (struct item){*batch, cursor ? json_object_get(cursor) : NULL, *v, bytes};
	w->qbytes += bytes;
	*batch = next;
	w->view = *v;
	w->view_dirty = 0; /* the commit writes it */
	pthread_cond_signal(&w->work);
out:
	pthread_mutex_unlock(&w->mu);
	return rc;
}

void tf_writer_show(tf_writer *w, const tf_run_view *v)
{
	pthread_mutex_lock(&w->mu);
	w->view = *v;
	w->view_dirty = 1;
	pthread_cond_signal(&w->work);
	pthread_mutex_unlock(&w->mu);
}

void tf_writer_warn(tf_writer *w, const char *line)
{
	char *copy = strdup(line);

	if (!copy)
		return;
	pthread_mutex_lock(&w->mu);
	while (w->nwarnings == TF_WRITER_MAX_WARNINGS) {
		pthread_cond_signal(&w->work);
		pthread_cond_wait(&w->idle, &w->mu);
	}
	w->warnings[w->nwarnings++] = copy;
	pthread_mutex_unlock(&w->mu);
}

tf_cancel_mode tf_writer_cancel_seen(tf_writer *w)
{
	return (tf_cancel_mode)atomic_load(&w->cancel);
}

int tf_writer_stop(tf_writer *w, tf_progress *prog)
{
	int rc;

	end_threads(w, 1);

	rc = w->err;
	if (w->abandoned) {
		prog->pages_done = w->kept.prog.pages_done;
		prog->objects_processed = w->kept.prog.objects_processed;
		prog->indicators_skipped = w->kept.prog.indicators_skipped;
	}
	prog->indicators_created += w->created;
	prog->indicators_updated += w->updated;
	prog->indicators_skipped += w->skipped;
	for (int i = 0; i < w->nspare; i++)
		tf_batch_free(w->spare[i]);
	destroy(w);
	return rc;
}
