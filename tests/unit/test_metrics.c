/* lib/metrics.c: counters kept in the store and moved by the transactions
 * that already happen — feed creation and deletion, cancels, a run's end
 * (status, rollback, kill, cancel latency), a run's progress writes and the
 * upstream requests they take — and the snapshot a scrape reads. */
#include "testutil.h"

#include "metrics.h"

/* ---- helpers --------------------------------------------------------------- */

static tf_store *fresh(void)
{
	return tu_new_store("metrics", NULL, 0);
}

static void snap(tf_store *st, tf_metrics_snapshot *s)
{
	int rc = tf_metrics_read(st, s);
	if (rc)
		fail_msg("tf_metrics_read: %s", tf_strerror(rc));
}

/* The counters of feed_id in a fresh snapshot; NULL when it has none. */
static const uint64_t *feed_of(tf_metrics_snapshot *s, const char *feed_id)
{
	for (size_t i = 0; i < s->nfeeds; i++)
		if (!strcmp(s->feeds[i].id, feed_id))
			return s->feeds[i].v;
	return NULL;
}

static uint64_t counter(tf_store *st, const char *feed_id, tf_mfeed field)
{
	tf_metrics_snapshot s;
	const uint64_t *v;
	uint64_t n;

	snap(st, &s);
	v = feed_of(&s, feed_id);
	if (!v)
		fail_msg("no metrics for feed %s", feed_id);
	n = v[field];
	tf_metrics_snapshot_free(&s);
	return n;
}

/* A task of feed_id moved to running, as a supervisor's claim does. */
static void running_task(tf_store *st, const char *feed_id, char *id)
{
	char active[TF_UUID_LEN + 1] = "";
	int claimed = 0;

	assert_int_equal(tf_task_create(st, feed_id, id, active), TF_OK);
	assert_int_equal(tf_runctl_claim(st, id, 100, &claimed), TF_OK);
	assert_int_equal(claimed, 1);
}

static void cancel(tf_store *st, const char *id, tf_cancel_mode mode)
{
	char *json = NULL;
	assert_int_equal(tf_task_cancel(st, id, mode, "tester", &json, NULL), TF_OK);
	free(json);
}

struct progress_ctx {
	const char *feed_id;
	tf_progress before, after;
	tf_metrics_taken *taken;
};

static int progress_txn(tf_txn *txn, void *vctx)
{
	struct progress_ctx *c = vctx;
	return tf_metrics_run_progress(txn, c->feed_id, &c->before, &c->after, c->taken);
}

static void progress(tf_store *st, const char *feed_id, const tf_progress *before,
                     const tf_progress *after, tf_metrics_taken *taken)
{
	struct progress_ctx c = {feed_id, *before, *after, taken};
	assert_int_equal(tf_store_update(st, progress_txn, &c), TF_OK);
}

static const char *const feed_key_fmt = "metrics/feed/%s";

/* ---- tests ------------------------------------------------------------------- */

/* A feed has its series (at 0) from its creation to its deletion. */
static void test_feed_lifecycle(void **state)
{
	tf_store *st = fresh();
	tf_metrics_snapshot s;
	(void)state;

	snap(st, &s);
	assert_int_equal(s.nfeeds, 0);
	tf_metrics_snapshot_free(&s);

	tu_simple_feed(st, "b-feed");
	tu_simple_feed(st, "a-feed");
	snap(st, &s);
	assert_int_equal(s.nfeeds, 2);
	assert_string_equal(s.feeds[0].id, "a-feed"); /* in id order */
	assert_string_equal(s.feeds[1].id, "b-feed");
	for (size_t i = 0; i < s.nfeeds; i++)
		for (int f = 0; f < TF_MF__COUNT; f++)
			assert_int_equal(s.feeds[i].v[f], 0);
	tf_metrics_snapshot_free(&s);

	assert_int_equal(tf_feed_delete(st, "b-feed"), TF_OK);
	snap(st, &s);
	assert_int_equal(s.nfeeds, 1);
	assert_string_equal(s.feeds[0].id, "a-feed");
	tf_metrics_snapshot_free(&s);
	tf_store_close(st);
}

/* Runs are counted by final status in the transaction that ends them. */
static void test_runs_by_status(void **state)
{
	tf_store *st = fresh();
	char id[TF_UUID_LEN + 1];
	(void)state;

	tu_simple_feed(st, "f");
	running_task(st, "f", id);
	assert_int_equal(tf_runctl_finish(st, id, TF_ST_COMPLETED, 0, NULL), TF_OK);
	running_task(st, "f", id);
	assert_int_equal(tf_runctl_finish(st, id, TF_ST_FAILED, 0, "boom"), TF_OK);
	running_task(st, "f", id);
	assert_int_equal(tf_runctl_finish(st, id, TF_ST_COMPLETED, 0, NULL), TF_OK);
	/* Finishing an ended run again changes nothing, counts included. */
	assert_int_equal(tf_runctl_finish(st, id, TF_ST_FAILED, 0, NULL), TF_OK);

	assert_int_equal(counter(st, "f", TF_MF_RUNS_COMPLETED), 2);
	assert_int_equal(counter(st, "f", TF_MF_RUNS_FAILED), 1);
	assert_int_equal(counter(st, "f", TF_MF_RUNS_STOPPED), 0);
	assert_int_equal(counter(st, "f", TF_MF_RUNS_CANCELLED), 0);
	assert_int_equal(counter(st, "f", TF_MF_KILLS), 0);
	tf_store_close(st);
}

/* A cancel is counted once per raise of the mode; the run's end adds the
 * latency to its mode's histogram and, when forced, a kill. */
static void test_cancel_counts_and_latency(void **state)
{
	tf_store *st = fresh();
	tf_metrics_snapshot s;
	char id[TF_UUID_LEN + 1];
	const int64_t wait_us = 60000;
	(void)state;

	tu_simple_feed(st, "f");
	running_task(st, "f", id);
	cancel(st, id, TF_CANCEL_STOP_NOW);
	cancel(st, id, TF_CANCEL_STOP_NOW); /* a repeat: not counted */
	usleep((useconds_t)wait_us);
	assert_int_equal(tf_runctl_finish(st, id, TF_ST_COMPLETED, 1, NULL), TF_OK);
	assert_int_equal(tu_task_status(st, id), TF_ST_STOPPED);

	snap(st, &s);
	assert_int_equal(feed_of(&s, "f")[TF_MF_CANCEL_STOP_NOW], 1);
	assert_int_equal(feed_of(&s, "f")[TF_MF_CANCEL_JOB], 0);
	assert_int_equal(feed_of(&s, "f")[TF_MF_RUNS_STOPPED], 1);
	assert_int_equal(feed_of(&s, "f")[TF_MF_KILLS], 1);
	assert_int_equal(s.cancel[0].count, 1);
	assert_int_equal(s.cancel[1].count, 0);
	assert_true(s.cancel[0].sum_us >= (uint64_t)wait_us);
	{
		/* Exactly one bucket holds it: the first whose bound is not
		 * below the observed seconds. */
		const double *le = tf_metrics_cancel_bounds();
		double seconds = (double)s.cancel[0].sum_us / 1e6;
		uint64_t total = 0;
		for (int b = 0; b < TF_METRICS_NBUCKETS; b++) {
			int here = seconds <= le[b] && (b == 0 || seconds > le[b - 1]);
			assert_int_equal(s.cancel[0].bucket[b], here ? 1 : 0);
			total += s.cancel[0].bucket[b];
		}
		assert_int_equal(total, seconds <= le[TF_METRICS_NBUCKETS - 1] ? 1 : 0);
	}
	tf_metrics_snapshot_free(&s);

	/* stop_now raised to cancel_job: both counted, the histogram of the
	 * mode the run ended with. A finish without force is no kill. */
	running_task(st, "f", id);
	cancel(st, id, TF_CANCEL_STOP_NOW);
	cancel(st, id, TF_CANCEL_JOB);
	assert_int_equal(tf_runctl_finish(st, id, TF_ST_COMPLETED, 0, NULL), TF_OK);
	assert_int_equal(tu_task_status(st, id), TF_ST_CANCELLED);
	snap(st, &s);
	assert_int_equal(feed_of(&s, "f")[TF_MF_CANCEL_STOP_NOW], 2);
	assert_int_equal(feed_of(&s, "f")[TF_MF_CANCEL_JOB], 1);
	assert_int_equal(feed_of(&s, "f")[TF_MF_RUNS_CANCELLED], 1);
	assert_int_equal(feed_of(&s, "f")[TF_MF_KILLS], 1);
	assert_int_equal(s.cancel[0].count, 1);
	assert_int_equal(s.cancel[1].count, 1);
	tf_metrics_snapshot_free(&s);
	tf_store_close(st);
}

struct batch_ctx {
	const char *feed_id, *task_id;
	tf_batch *b;
};

static int batch_txn(tf_txn *txn, void *vctx)
{
	struct batch_ctx *c = vctx;
	tf_progress p = {0};
	return tf_batch_apply(txn, c->feed_id, c->task_id, c->b, &p);
}

/* A cancel_job run's rollback is counted as the records it restored, the
 * same number the task shows. */
static void test_rollback_records(void **state)
{
	tf_store *st = fresh();
	char id[TF_UUID_LEN + 1];
	tf_batch *b;
	json_object *t;
	int64_t shown;
	(void)state;

	tu_simple_feed(st, "f");
	running_task(st, "f", id);
	assert_int_equal(tf_batch_new(&b), TF_OK);
	for (int i = 0; i < 7; i++) {
		char key[32], obj[64];
		snprintf(key, sizeof key, "indicator--%d", i);
		snprintf(obj, sizeof obj, "{\"id\":\"%s\"}", key);
		assert_int_equal(tf_batch_add(b, key, "indicator", NULL, NULL, 1, obj, strlen(obj)),
		                 TF_OK);
	}
	{
		struct batch_ctx c = {"f", id, b};
		assert_int_equal(tf_store_update(st, batch_txn, &c), TF_OK);
	}
	tf_batch_free(b);
	cancel(st, id, TF_CANCEL_JOB);
	assert_int_equal(tf_runctl_finish(st, id, TF_ST_CANCELLED, 0, NULL), TF_OK);
	t = tu_task(st, id);
	assert_int_equal(tf_json_get_int(t, "rolled_back", &shown), TF_OK);
	json_object_put(t);
	assert_int_equal(shown, 7);
	assert_int_equal(counter(st, "f", TF_MF_ROLLED_BACK), (uint64_t)shown);
	tf_store_close(st);
}

/* Progress writes add what grew since the progress stored before, never
 * subtract; upstream requests wait in the process until a committed
 * progress write takes them. */
static void test_progress_and_upstream(void **state)
{
	tf_store *st = fresh();
	tf_progress p0 = {0}, p1 = {0}, p2;
	tf_metrics_taken taken;
	(void)state;

	tu_simple_feed(st, "f");
	p1.pages_done = 2, p1.objects_processed = 150, p1.bytes_received = 9000;
	p1.indicators_created = 140, p1.indicators_updated = 6, p1.indicators_skipped = 4;
	progress(st, "f", &p0, &p1, NULL);
	p2 = p1;
	p2.pages_done = 3, p2.objects_processed = 160, p2.indicators_created = 150;
	progress(st, "f", &p1, &p2, NULL);
	progress(st, "f", &p2, &p1, NULL); /* went down (pages abandoned): no change */
	assert_int_equal(counter(st, "f", TF_MF_PAGES), 3);
	assert_int_equal(counter(st, "f", TF_MF_OBJECTS), 160);
	assert_int_equal(counter(st, "f", TF_MF_BYTES), 9000);
	assert_int_equal(counter(st, "f", TF_MF_IND_CREATED), 150);
	assert_int_equal(counter(st, "f", TF_MF_IND_UPDATED), 6);
	assert_int_equal(counter(st, "f", TF_MF_IND_SKIPPED), 4);

	tf_metrics_note_upstream(200);
	tf_metrics_note_upstream(204);
	tf_metrics_note_upstream(302);
	tf_metrics_note_upstream(404);
	tf_metrics_note_upstream(429);
	tf_metrics_note_upstream(429);
	tf_metrics_note_upstream(503);
	tf_metrics_note_upstream(0);
	progress(st, "f", &p2, &p2, &taken);
	assert_int_equal(taken.n[TF_MUP_2XX], 2);
	assert_int_equal(taken.n[TF_MUP_429], 2);
	tf_metrics_taken_done(&taken);
	assert_int_equal(counter(st, "f", TF_MF_UP_2XX), 2);
	assert_int_equal(counter(st, "f", TF_MF_UP_3XX), 1);
	assert_int_equal(counter(st, "f", TF_MF_UP_4XX), 1);
	assert_int_equal(counter(st, "f", TF_MF_UP_429), 2);
	assert_int_equal(counter(st, "f", TF_MF_UP_5XX), 1);
	assert_int_equal(counter(st, "f", TF_MF_UP_ERROR), 1);

	/* Given back: nothing pending, a second write adds nothing. A take
	 * that is not given back (its transaction failed) is taken again. */
	progress(st, "f", &p2, &p2, &taken);
	assert_int_equal(counter(st, "f", TF_MF_UP_2XX), 2);
	tf_metrics_note_upstream(200);
	progress(st, "f", &p2, &p2, &taken); /* pretend it did not commit */
	progress(st, "f", &p2, &p2, &taken);
	tf_metrics_taken_done(&taken);
	assert_int_equal(counter(st, "f", TF_MF_UP_2XX), 4);
	progress(st, "f", &p2, &p2, &taken);
	tf_metrics_taken_done(&taken);
	assert_int_equal(counter(st, "f", TF_MF_UP_2XX), 4);
	tf_store_close(st);
}

/* Values from other builds: a shorter one reads as zeros for what it lacks,
 * a longer one keeps its extra counters through an update. */
static void test_values_of_other_builds(void **state)
{
	tf_store *st = fresh();
	char key[96];
	unsigned char shorter[3 * 8] = {0}, longer[(TF_MF__COUNT + 2) * 8];
	unsigned char *got;
	size_t vl = 0;
	tf_progress p0 = {0}, p1 = {0};
	(void)state;

	tu_simple_feed(st, "f");
	snprintf(key, sizeof key, feed_key_fmt, "f");
	shorter[TF_MF_RUNS_FAILED * 8] = 5; /* little-endian 5 */
	assert_int_equal(tu_raw_put(st, TF_TBL_META, key, strlen(key), shorter, sizeof shorter),
	                 TF_OK);
	assert_int_equal(counter(st, "f", TF_MF_RUNS_FAILED), 5);
	assert_int_equal(counter(st, "f", TF_MF_KILLS), 0);

	memset(longer, 0, sizeof longer);
	longer[TF_MF_PAGES * 8 + 1] = 1;               /* 256 */
	longer[TF_MF__COUNT * 8] = 0xab;                /* a newer build's counter */
	longer[(TF_MF__COUNT + 1) * 8 + 7] = 0x01;      /* another, high byte */
	assert_int_equal(tu_raw_put(st, TF_TBL_META, key, strlen(key), longer, sizeof longer),
	                 TF_OK);
	assert_int_equal(counter(st, "f", TF_MF_PAGES), 256);
	p1.pages_done = 4;
	progress(st, "f", &p0, &p1, NULL);
	assert_int_equal(counter(st, "f", TF_MF_PAGES), 260);
	got = tu_raw_get(st, TF_TBL_META, key, strlen(key), &vl);
	assert_non_null(got);
	assert_int_equal(vl, sizeof longer);
	assert_memory_equal(got + TF_MF__COUNT * 8, longer + TF_MF__COUNT * 8, 16);
	free(got);
	tf_store_close(st);
}

/* The gauges: live runs and the queue as tf_runctl_counts sees them, and
 * the store's size (LMDB: with its map). */
static void test_gauges(void **state)
{
	tf_store *st = fresh();
	tf_metrics_snapshot s;
	char a[TF_UUID_LEN + 1], b[TF_UUID_LEN + 1], active[TF_UUID_LEN + 1];
	int live = -1, queued = -1;
	(void)state;

	tu_simple_feed(st, "f1");
	tu_simple_feed(st, "f2");
	tu_simple_feed(st, "f3");
	assert_int_equal(tf_task_create(st, "f1", a, active), TF_OK);
	assert_int_equal(tf_task_create(st, "f2", b, active), TF_OK);
	running_task(st, "f3", active); /* claimed by this process: alive */
	snap(st, &s);
	assert_int_equal(tf_runctl_counts(st, &live, &queued), TF_OK);
	assert_int_equal(s.runs_queued, queued);
	assert_int_equal(s.runs_active, live);
	assert_int_equal(s.runs_queued, 2);
	assert_int_equal(s.runs_active, 1);
	assert_true(s.store_bytes > 0);
	if (tu_pg()) {
		assert_false(s.has_map);
	} else {
		assert_true(s.has_map);
		assert_true(s.map_bytes >= s.store_bytes);
		assert_int_equal(s.map_free_bytes, s.map_bytes - s.store_bytes);
		assert_int_equal(s.map_bytes, tf_store_map_size(st));
	}
	tf_metrics_snapshot_free(&s);
	tf_store_close(st);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_feed_lifecycle),
		cmocka_unit_test(test_runs_by_status),
		cmocka_unit_test(test_cancel_counts_and_latency),
		cmocka_unit_test(test_rollback_records),
		cmocka_unit_test(test_progress_and_upstream),
		cmocka_unit_test(test_values_of_other_builds),
		cmocka_unit_test(test_gauges),
	};
	tu_init("metrics");
	tu_seed();
	return tu_finish(cmocka_run_group_tests(tests, NULL, NULL));
}
