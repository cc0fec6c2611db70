/* worker/writer: pages handed over are committed whole, in order, with the
 * cursor of the last one; a cancel found by a commit abandons that commit's
 * pages and every later one, and the run's counts are those it kept. */
#include "testutil.h"

#include "writer.h"

#define PER_PAGE 50

static int running_txn(tf_txn *txn, void *vctx)
{
	tf_task *t;
	int rc = tf_task_load(txn, vctx, &t);
	if (rc)
		return rc;
	if (!(rc = tf_task_set_status(t, TF_ST_RUNNING)))
		rc = tf_task_save(txn, t);
	tf_task_free(t);
	return rc;
}

static void start_run(tf_store *st, char *task)
{
	char active[TF_UUID_LEN + 1] = "";
	tu_simple_feed(st, "f");
	assert_int_equal(tf_task_create(st, "f", task, active), TF_OK);
	assert_int_equal(tf_store_update(st, running_txn, task), TF_OK);
}

/* Fills *b with page n's records and hands it over with a cursor. */
static int hand_over(tf_writer *w, tf_batch **b, int n, tf_run_view *v)
{
	char key[64], obj[128], cur[64];
	json_object *cursor;
	int rc;

	for (int i = 0; i < PER_PAGE; i++) {
		snprintf(key, sizeof key, "indicator--p%03d-%03d", n, i);
		snprintf(obj, sizeof obj, "{\"page\":%d,\"i\":%d}", n, i);
		assert_int_equal(tf_batch_add(*b, key, "indicator", NULL, NULL, 1, obj, strlen(obj)),
		                 TF_OK);
	}
	v->prog.pages_done = n + 1;
	v->prog.objects_processed = (int64_t)(n + 1) * PER_PAGE;
	snprintf(cur, sizeof cur, "{\"page\":%d}", n);
	cursor = tu_json(cur);
	rc = tf_writer_commit(w, b, cursor, v);
	json_object_put(cursor);
	return rc;
}

static int64_t prog_of(tf_store *st, const char *task, const char *field)
{
	json_object *t = tu_task(st, task), *p, *v;
	int64_t n;
	assert_true(json_object_object_get_ex(t, "progress", &p));
	assert_true(json_object_object_get_ex(p, field, &v));
	n = json_object_get_int64(v);
	json_object_put(t);
	return n;
}

static void commits_every_page_in_order(void **state)
{
	tf_store *st = tu_new_store("writer-all", NULL, 0);
	char task[TF_UUID_LEN + 1];
	tf_run_view v = {.stage = TF_SG_PROCESSING};
	tf_progress final;
	tf_writer *w;
	tf_batch *b;
	char *cursor, *text;
	size_t n;
	(void)state;

	start_run(st, task);
	assert_int_equal(tf_batch_new(&b), TF_OK);
	assert_int_equal(tf_writer_start(&w, st, task, "f", &v), TF_OK);
	for (int page = 0; page < 20; page++) {
		assert_int_equal(hand_over(w, &b, page, &v), TF_OK);
		assert_int_equal(tf_batch_count(b), 0); /* a fresh batch to fill */
	}
	tf_writer_warn(w, "a warning from the driver");
	final = v.prog;
	assert_int_equal(tf_writer_stop(w, &final), TF_OK);
	tf_batch_free(b);

	assert_int_equal(tu_records_count(st, "f"), 20 * PER_PAGE);
	assert_int_equal(final.indicators_created, 20 * PER_PAGE);
	assert_int_equal(final.pages_done, 20);
	assert_int_equal(prog_of(st, task, "indicators_created"), 20 * PER_PAGE);
	cursor = tu_raw_get(st, TF_TBL_CURSORS, "f", 1, &n);
	assert_non_null(cursor);
	text = strndup(cursor, n);
	assert_true(tu_contains(text, "\"page\":19"));
	free(text);
	free(cursor);
	{
		json_object *t = tu_task(st, task);
		assert_true(tu_contains(json_object_to_json_string(t), "a warning from the driver"));
		json_object_put(t);
	}
	tf_store_close(st);
}

static void cancel_abandons_whole_pages(void **state)
{
	tf_store *st = tu_new_store("writer-cancel", NULL, 0);
	char task[TF_UUID_LEN + 1];
	tf_run_view v = {.stage = TF_SG_PROCESSING};
	tf_progress final;
	tf_writer *w;
	tf_batch *b;
	char *json;
	size_t len;
	int rc = TF_OK, page;
	(void)state;

	start_run(st, task);
	assert_int_equal(tf_batch_new(&b), TF_OK);
	assert_int_equal(tf_writer_start(&w, st, task, "f", &v), TF_OK);
	for (page = 0; page < 3; page++)
		assert_int_equal(hand_over(w, &b, page, &v), TF_OK);
	assert_int_equal(tf_task_cancel(st, task, TF_CANCEL_STOP_NOW, "test", &json, &len), TF_OK);
	free(json);
	/* Pages handed over from now on are refused once a commit saw the
	 * cancel; the writer tells which cancel it was. */
	for (; page < 200 && rc == TF_OK; page++) {
		rc = hand_over(w, &b, page, &v);
		tf_batch_clear(b);
	}
	assert_int_equal(rc, TF_ECANCELLED);
	assert_int_equal(tf_writer_cancel_seen(w), TF_CANCEL_STOP_NOW);
	final = v.prog;
	assert_int_equal(tf_writer_stop(w, &final), TF_ECANCELLED);
	tf_batch_free(b);

	/* What is stored is whole pages, and the counts say exactly that. */
	assert_int_equal(tu_records_count(st, "f") % PER_PAGE, 0);
	assert_int_equal(final.indicators_created, (int64_t)tu_records_count(st, "f"));
	assert_int_equal(final.objects_processed, (int64_t)tu_records_count(st, "f"));
	assert_int_equal(final.pages_done, (int64_t)tu_records_count(st, "f") / PER_PAGE);
	assert_true(final.pages_done <= 3); /* only pages handed over before the cancel */
	tf_store_close(st);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(commits_every_page_in_order),
		cmocka_unit_test(cancel_abandons_whole_pages),
	};
	tu_init("writer");
	return cmocka_run_group_tests(tests, NULL, NULL);
}
