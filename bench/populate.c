/* A store of many feeds and many finished tasks, fast, for the scale figures
 * of issue 14 §4 (bench.py bench_scale, tests/integration/test_scale.py).
 *
 *   populate STORE URL COLLECTION FEEDS TASKS
 *
 * FEEDS taxii21 feeds (s0000, s0001, …) on URL/COLLECTION; then TASKS
 * finished tasks spread round-robin over them. The first task of each feed
 * goes the way a real run's does (tf_task_create, running, tf_runctl_finish
 * completed: the queue, the active slot, the feed's run summary, metrics);
 * the others are copies of that feed's task under new ids, written straight
 * into the tasks and their history order (TF_TBL_TASKS, TF_TBL_TORDER) in
 * transactions of BATCH — what 100,000 runs would leave behind, without
 * 100,000 runs. Commits are lazy (tf_store_set_lazy) and synced once at the
 * end. Prints "FEEDS TASKS SECONDS". */
#include "err.h"
#include "feed.h"
#include "json.h"
#include "runctl.h"
#include "store.h"
#include "task.h"
#include "util.h"

#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BATCH 5000

struct copies {
	char (*first)[TF_UUID_LEN + 1]; /* each feed's real task */
	long feeds, from, to;           /* copies number from..to-1 */
};

static int add_feed(tf_store *st, const char *url, const char *coll, long i)
{
	char id[32], err[256] = "", *json = NULL;
	json_object *b = json_object_new_object();
	int rc;

	snprintf(id, sizeof id, "s%04ld", i);
	json_object_object_add(b, "id", json_object_new_string(id));
	json_object_object_add(b, "name", json_object_new_string(id));
	json_object_object_add(b, "type", json_object_new_string("taxii21"));
	json_object_object_add(b, "url", json_object_new_string(url));
	json_object_object_add(b, "collection", json_object_new_string(coll));
	json_object_object_add(b, "interval_s", json_object_new_int(0));
	rc = tf_feed_create(st, b, &json, NULL, err, sizeof err);
	if (rc)
		fprintf(stderr, "populate: feed %s: %s %s\n", id, tf_strerror(rc), err);
	free(json);
	json_object_put(b);
	return rc;
}

static int start_txn(tf_txn *txn, void *vctx)
{
	tf_task *t;
	tf_progress p;
	int rc = tf_task_load(txn, vctx, &t);

	if (rc)
		return rc;
	tf_task_get_progress(t, &p);
	p.pages_done = p.pages_total = 1;
	p.objects_processed = 100;
	p.percent = 100;
	tf_task_set_progress(t, &p);
	if (!(rc = tf_task_set_status(t, TF_ST_RUNNING)))
		rc = tf_task_save(txn, t);
	tf_task_free(t);
	return rc;
}

/* One feed's run, the real way. */
static int real_run(tf_store *st, const char *feed, char *id)
{
	char active[TF_UUID_LEN + 1] = "";
	int rc = tf_task_create(st, feed, id, active);

	if (!rc)
		rc = tf_store_update(st, start_txn, id);
	if (!rc)
		rc = tf_runctl_release(st, id);
	if (!rc || rc == TF_ENOTFOUND)
		rc = tf_runctl_finish(st, id, TF_ST_COMPLETED, 0, NULL);
	return rc;
}

static int copy_txn(tf_txn *txn, void *vctx)
{
	struct copies *c = vctx;
	unsigned char seqkey[8];
	int rc = TF_OK;

	for (long i = c->from; !rc && i < c->to; i++) {
		const char *src = c->first[i % c->feeds];
		char id[TF_UUID_LEN + 1];
		const void *v;
		size_t vl, len;
		json_object *o;
		const char *text;
		uint64_t seq;

		if ((rc = tf_txn_get(txn, TF_TBL_TASKS, src, TF_UUID_LEN, &v, &vl)) ||
		    (rc = tf_uuid_v4(id, sizeof id)) ||
		    (rc = tf_json_parse(v, vl, 16, &o, NULL, 0)))
			break;
		json_object_object_add(o, "task_id", json_object_new_string(id));
		text = tf_json_text(o, &len);
		if (!(rc = tf_txn_put(txn, TF_TBL_TASKS, id, TF_UUID_LEN, text, len)) &&
		    !(rc = tf_txn_seq_next(txn, "task", &seq))) {
			tf_put_be64(seqkey, seq);
			rc = tf_txn_put(txn, TF_TBL_TORDER, seqkey, 8, id, TF_UUID_LEN);
		}
		json_object_put(o);
	}
	return rc;
}

int main(int argc, char **argv)
{
	tf_store *st;
	char err[256] = "", feed[32];
	char (*first)[TF_UUID_LEN + 1];
	long feeds, tasks;
	int64_t t0 = tf_mono_us();
	int rc = TF_OK;

	if (argc != 6 || (feeds = atol(argv[4])) < 1 || (tasks = atol(argv[5])) < feeds) {
		fprintf(stderr, "usage: populate STORE URL COLLECTION FEEDS TASKS (TASKS >= FEEDS)\n");
		return 2;
	}
	if (tf_store_open(&st, argv[1], 0, err, sizeof err)) {
		fprintf(stderr, "populate: %s\n", err);
		return 1;
	}
	tf_store_set_lazy(st, 1);
	if (!(first = calloc((size_t)feeds, sizeof *first)))
		return 1;
	for (long i = 0; !rc && i < feeds; i++) {
		snprintf(feed, sizeof feed, "s%04ld", i);
		if (!(rc = add_feed(st, argv[2], argv[3], i)) && (rc = real_run(st, feed, first[i])))
			fprintf(stderr, "populate: run of %s: %s\n", feed, tf_strerror(rc));
	}
	for (long from = feeds; !rc && from < tasks; from += BATCH) {
		struct copies c = {first, feeds, from, from + BATCH < tasks ? from + BATCH : tasks};
		if ((rc = tf_store_update(st, copy_txn, &c)))
			fprintf(stderr, "populate: copies: %s\n", tf_strerror(rc));
	}
	if (!rc)
		rc = tf_store_sync(st);
	tf_store_close(st);
	free(first);
	if (rc)
		return 1;
	printf("%ld %ld %.1f\n", feeds, tasks, (double)(tf_mono_us() - t0) / 1e6);
	return 0;
}
