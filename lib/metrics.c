#include "metrics.h"
#include "err.h"
#include "runctl.h"
#include "util.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FEED_PREFIX "metrics/feed/"
#define FEED_PREFIX_LEN (sizeof FEED_PREFIX - 1)
#define GLOBAL_KEY "metrics/global"
/* The global value: per cancel mode, the buckets, the count, the sum (µs). */
#define HIST_WORDS (TF_METRICS_NBUCKETS + 2)
#define GLOBAL_WORDS (2 * HIST_WORDS)

static const double cancel_bounds[TF_METRICS_NBUCKETS] = {TF_METRICS_CANCEL_BUCKETS};

const double *tf_metrics_cancel_bounds(void)
{
	return cancel_bounds;
}

/* ---- stored values --------------------------------------------------------- */

static void decode(const void *val, size_t vlen, uint64_t *out, size_t n)
{
	const unsigned char *p = val;

	memset(out, 0, n * sizeof *out);
	for (size_t i = 0; i < n && (i + 1) * 8 <= vlen; i++)
		for (int b = 7; b >= 0; b--)
			out[i] = (out[i] << 8) | p[i * 8 + (size_t)b];
}

static void encode(const uint64_t *in, size_t n, unsigned char *out)
{
	for (size_t i = 0; i < n; i++)
		for (int b = 0; b < 8; b++)
			out[i * 8 + (size_t)b] = (unsigned char)(in[i] >> (8 * b));
}

/* Adds delta[0..n) to the counters stored under key. Nothing is written when
 * every delta is 0. Fields of a longer stored value (a newer build's) are
 * kept as they are. */
static int add_words(tf_txn *txn, const char *key, const uint64_t *delta, size_t n)
{
	enum { MAX_WORDS = 64 };
	unsigned char buf[MAX_WORDS * 8];
	uint64_t cur[MAX_WORDS];
	const void *v = NULL;
	size_t vl = 0, klen = strlen(key), keep;
	int any = 0, rc;

	for (size_t i = 0; i < n; i++)
		any |= delta[i] != 0;
	if (!any)
		return TF_OK;
	rc = tf_txn_get(txn, TF_TBL_META, key, klen, &v, &vl);
	if (rc && rc != TF_ENOTFOUND)
		return rc;
	keep = vl > n * 8 && vl <= sizeof buf ? vl : n * 8;
	if (vl > n * 8 && vl <= sizeof buf)
		memcpy(buf, v, vl);
	decode(v, vl, cur, n);
	for (size_t i = 0; i < n; i++)
		cur[i] += delta[i];
	encode(cur, n, buf);
	return tf_txn_put(txn, TF_TBL_META, key, klen, buf, keep);
}

static void feed_key(char *buf, size_t len, const char *feed_id)
{
	snprintf(buf, len, FEED_PREFIX "%s", feed_id);
}

static int feed_add(tf_txn *txn, const char *feed_id, const uint64_t delta[TF_MF__COUNT])
{
	char key[FEED_PREFIX_LEN + TF_MAX_FEED_ID + 1];

	if (!feed_id || !*feed_id)
		return TF_EINVAL;
	feed_key(key, sizeof key, feed_id);
	return add_words(txn, key, delta, TF_MF__COUNT);
}

/* ---- updates --------------------------------------------------------------- */

int tf_metrics_feed_created(tf_txn *txn, const char *feed_id)
{
	char key[FEED_PREFIX_LEN + TF_MAX_FEED_ID + 1];
	unsigned char zeros[TF_MF__COUNT * 8] = {0};

	feed_key(key, sizeof key, feed_id);
	return tf_txn_put(txn, TF_TBL_META, key, strlen(key), zeros, sizeof zeros);
}

int tf_metrics_feed_deleted(tf_txn *txn, const char *feed_id)
{
	char key[FEED_PREFIX_LEN + TF_MAX_FEED_ID + 1];
	int rc;

	feed_key(key, sizeof key, feed_id);
	rc = tf_txn_del(txn, TF_TBL_META, key, strlen(key));
	return rc == TF_ENOTFOUND ? TF_OK : rc;
}

int tf_metrics_cancel_requested(tf_txn *txn, const char *feed_id, tf_cancel_mode mode)
{
	uint64_t d[TF_MF__COUNT] = {0};

	if (mode == TF_CANCEL_NONE)
		return TF_OK;
	d[mode == TF_CANCEL_JOB ? TF_MF_CANCEL_JOB : TF_MF_CANCEL_STOP_NOW] = 1;
	return feed_add(txn, feed_id, d);
}

static int observe_cancel(tf_txn *txn, tf_cancel_mode mode, int64_t seconds_us)
{
	uint64_t d[GLOBAL_WORDS] = {0}, *h = d + (mode == TF_CANCEL_JOB ? HIST_WORDS : 0);
	size_t b = 0;

	if (seconds_us < 0) /* the clock stepped back: count it as instant */
		seconds_us = 0;
	while (b < TF_METRICS_NBUCKETS && (double)seconds_us / 1e6 > cancel_bounds[b])
		b++;
	if (b < TF_METRICS_NBUCKETS)
		h[b] = 1;
	h[TF_METRICS_NBUCKETS] = 1;
	h[TF_METRICS_NBUCKETS + 1] = (uint64_t)seconds_us;
	return add_words(txn, GLOBAL_KEY, d, GLOBAL_WORDS);
}

int tf_metrics_run_finished(tf_txn *txn, const tf_task *t, int forced, uint64_t rolled_back)
{
	uint64_t d[TF_MF__COUNT] = {0};
	tf_status s = tf_task_status(t);
	tf_cancel_mode mode = tf_task_cancel_mode(t);
	int64_t requested = tf_task_cancel_requested_us(t);
	int rc;

	if (!tf_status_terminal(s))
		return TF_EINVAL;
	d[TF_MF_RUNS_COMPLETED + (s - TF_ST_COMPLETED)] = 1;
	if (s == TF_ST_CANCELLED)
		d[TF_MF_ROLLED_BACK] = rolled_back;
	/* As the task shows it: cancel.forced is set only on a cancelled run. */
	if (forced && mode != TF_CANCEL_NONE)
		d[TF_MF_KILLS] = 1;
	if ((rc = feed_add(txn, tf_task_feed_id(t), d)))
		return rc;
	if (mode != TF_CANCEL_NONE && requested > 0)
		rc = observe_cancel(txn, mode, tf_now_us() - requested);
	return rc;
}

/* Written by the fetching thread, read and reduced by the writing one. */
static _Atomic uint64_t pending[TF_MUP__COUNT];

void tf_metrics_note_upstream(long http_status)
{
	enum tf_mup c = http_status == 429                             ? TF_MUP_429
	                : http_status >= 200 && http_status < 300 ? TF_MUP_2XX
	                : http_status >= 300 && http_status < 400 ? TF_MUP_3XX
	                : http_status >= 400 && http_status < 500 ? TF_MUP_4XX
	                : http_status >= 500 && http_status < 600 ? TF_MUP_5XX
	                                                          : TF_MUP_ERROR;
	atomic_fetch_add(&pending[c], 1);
}

void tf_metrics_taken_done(const tf_metrics_taken *taken)
{
	for (int i = 0; taken && i < TF_MUP__COUNT; i++)
		atomic_fetch_sub(&pending[i], taken->n[i]);
}

static uint64_t grown(int64_t before, int64_t after)
{
	return after > before ? (uint64_t)(after - before) : 0;
}

int tf_metrics_run_progress(tf_txn *txn, const char *feed_id, const tf_progress *before,
                            const tf_progress *after, tf_metrics_taken *taken)
{
	uint64_t d[TF_MF__COUNT] = {0};

	d[TF_MF_PAGES] = grown(before->pages_done, after->pages_done);
	d[TF_MF_OBJECTS] = grown(before->objects_processed, after->objects_processed);
	d[TF_MF_BYTES] = grown(before->bytes_received, after->bytes_received);
	d[TF_MF_IND_CREATED] = grown(before->indicators_created, after->indicators_created);
	d[TF_MF_IND_UPDATED] = grown(before->indicators_updated, after->indicators_updated);
	d[TF_MF_IND_SKIPPED] = grown(before->indicators_skipped, after->indicators_skipped);
	if (taken) {
		/* Taken afresh on every attempt of the transaction (a replay takes
		 * what is pending then); only the committed attempt is given back. */
		for (int i = 0; i < TF_MUP__COUNT; i++)
			d[TF_MF_UP_2XX + i] = taken->n[i] = atomic_load(&pending[i]);
	}
	return feed_add(txn, feed_id, d);
}

/* ---- reading --------------------------------------------------------------- */

static int read_feeds(tf_txn *txn, tf_metrics_snapshot *s)
{
	tf_cursor *cur;
	const void *k, *v;
	size_t kl, vl, cap = 0;
	int rc = tf_cursor_open(txn, TF_TBL_META, &cur);

	if (rc)
		return rc;
	for (rc = tf_cursor_get(cur, TF_SEEK_GE, FEED_PREFIX, FEED_PREFIX_LEN, &k, &kl, &v, &vl);
	     rc == TF_OK && kl > FEED_PREFIX_LEN && !memcmp(k, FEED_PREFIX, FEED_PREFIX_LEN);
	     rc = tf_cursor_get(cur, TF_SEEK_NEXT, NULL, 0, &k, &kl, &v, &vl)) {
		tf_metrics_feed *f;
		size_t idl = kl - FEED_PREFIX_LEN;
		if (idl > TF_MAX_FEED_ID)
			continue; /* not one of ours */
		if (s->nfeeds == cap) {
			size_t ncap = cap ? cap * 2 : 16;
			tf_metrics_feed *nf = realloc(s->feeds, ncap * sizeof *nf);
			if (!nf) {
				rc = TF_ENOMEM;
				break;
			}
			s->feeds = nf, cap = ncap;
		}
		f = &s->feeds[s->nfeeds++];
		memcpy(f->id, (const char *)k + FEED_PREFIX_LEN, idl);
		f->id[idl] = '\0';
		decode(v, vl, f->v, TF_MF__COUNT);
	}
	tf_cursor_close(cur);
	return rc == TF_ENOTFOUND || rc == TF_OK ? TF_OK : rc;
}

static int read_txn(tf_txn *txn, void *vctx)
{
	tf_metrics_snapshot *s = vctx;
	uint64_t g[GLOBAL_WORDS];
	const void *v = NULL;
	size_t vl = 0;
	int rc;

	/* A replayed view starts over. */
	free(s->feeds);
	memset(s, 0, sizeof *s);
	if ((rc = read_feeds(txn, s)))
		return rc;
	rc = tf_txn_get(txn, TF_TBL_META, GLOBAL_KEY, strlen(GLOBAL_KEY), &v, &vl);
	if (rc && rc != TF_ENOTFOUND)
		return rc;
	decode(v, vl, g, GLOBAL_WORDS);
	for (int m = 0; m < 2; m++) {
		const uint64_t *h = g + m * HIST_WORDS;
		memcpy(s->cancel[m].bucket, h, sizeof s->cancel[m].bucket);
		s->cancel[m].count = h[TF_METRICS_NBUCKETS];
		s->cancel[m].sum_us = h[TF_METRICS_NBUCKETS + 1];
	}
	if ((rc = tf_runctl_counts_txn(txn, &s->runs_active, &s->runs_queued)))
		return rc;
	if ((rc = tf_txn_space(txn, &s->store_bytes, &s->map_bytes)))
		return rc;
	s->has_map = s->map_bytes > 0;
	s->map_free_bytes = s->map_bytes > s->store_bytes ? s->map_bytes - s->store_bytes : 0;
	return TF_OK;
}

int tf_metrics_read(tf_store *st, tf_metrics_snapshot *out)
{
	int rc;

	memset(out, 0, sizeof *out);
	if ((rc = tf_store_view(st, read_txn, out)))
		tf_metrics_snapshot_free(out);
	return rc;
}

void tf_metrics_snapshot_free(tf_metrics_snapshot *s)
{
	if (!s)
		return;
	free(s->feeds);
	s->feeds = NULL;
	s->nfeeds = 0;
}
