/* lib/task.c: the state machine, cancel modes, the task's JSON (in every
 * state a run reaches), one active run per feed (also across processes),
 * per-feed cancel signals, listing. Run control is test_runctl.c. */
#include "testutil.h"

/* ---- helpers --------------------------------------------------------------- */

struct load_ctx {
	const char *id;
	tf_task *t;
};

static int load_txn(tf_txn *txn, void *vctx)
{
	struct load_ctx *c = vctx;
	return tf_task_load(txn, c->id, &c->t);
}

static tf_task *load(tf_store *st, const char *id)
{
	struct load_ctx c = {id, NULL};
	int rc = tf_store_view(st, load_txn, &c);
	if (rc)
		fail_msg("tf_task_load(%s): %s", id, tf_strerror(rc));
	return c.t;
}

static int save_txn(tf_txn *txn, void *vctx)
{
	return tf_task_save(txn, vctx);
}

static void save(tf_store *st, tf_task *t)
{
	assert_int_equal(tf_store_update(st, save_txn, t), TF_OK);
}

static json_object *task_json(tf_task *t)
{
	size_t n;
	const char *s = tf_task_json(t, &n);
	json_object *o = NULL;
	assert_int_equal(tf_json_parse(s, n, 64, &o, NULL, 0), TF_OK);
	return o;
}

/* An RFC 3339 UTC time within [lo, hi] microseconds (±1 s). */
static void assert_time_between(const char *s, int64_t lo, int64_t hi)
{
	int64_t us;
	if (!tu_rfc3339(s))
		fail_msg("not an RFC 3339 UTC time: %s", s ? s : "(null)");
	assert_int_equal(tf_time_parse(s, &us), TF_OK);
	if (us < lo - 1000000 || us > hi + 1000000)
		fail_msg("time %s outside the operation's window", s);
}

/* ---- state machine ------------------------------------------------------------ */

/* docs/SPEC.md §2/§3, written out independently of lib/task.c. */
static int spec_legal(tf_status f, tf_status t)
{
	switch (f) {
	case TF_ST_QUEUED:
		return t == TF_ST_RUNNING || t == TF_ST_STOPPING || t == TF_ST_CANCELLING ||
		       t == TF_ST_FAILED;
	case TF_ST_RUNNING:
		return t == TF_ST_STOPPING || t == TF_ST_CANCELLING || t == TF_ST_COMPLETED ||
		       t == TF_ST_FAILED;
	case TF_ST_STOPPING:
		return t == TF_ST_CANCELLING || t == TF_ST_STOPPED || t == TF_ST_FAILED;
	case TF_ST_CANCELLING:
		return t == TF_ST_CANCELLED || t == TF_ST_FAILED;
	default:
		return 0;
	}
}

/* A legal path from queued to each state. */
static const tf_status paths[TF_ST__COUNT][3] = {
	[TF_ST_QUEUED] = {TF_ST__COUNT},
	[TF_ST_RUNNING] = {TF_ST_RUNNING, TF_ST__COUNT},
	[TF_ST_STOPPING] = {TF_ST_RUNNING, TF_ST_STOPPING, TF_ST__COUNT},
	[TF_ST_CANCELLING] = {TF_ST_CANCELLING, TF_ST__COUNT},
	[TF_ST_COMPLETED] = {TF_ST_RUNNING, TF_ST_COMPLETED, TF_ST__COUNT},
	[TF_ST_FAILED] = {TF_ST_FAILED, TF_ST__COUNT},
	[TF_ST_STOPPED] = {TF_ST_STOPPING, TF_ST_STOPPED, TF_ST__COUNT},
	[TF_ST_CANCELLED] = {TF_ST_RUNNING, TF_ST_CANCELLING, TF_ST_CANCELLED},
};

static void test_transitions(void **state)
{
	tf_store *st = tu_new_store("trans", NULL, 0);
	char id[TF_UUID_LEN + 1];
	int legal = 0;
	(void)state;

	tu_simple_feed(st, "f");
	tu_create(st, "f", id);
	for (int f = 0; f < TF_ST__COUNT; f++) {
		assert_int_equal(tf_status_terminal((tf_status)f), f >= TF_ST_COMPLETED);
		assert_int_equal(tf_status_active((tf_status)f), f <= TF_ST_CANCELLING);
		for (int to = 0; to < TF_ST__COUNT; to++) {
			tf_task *t = load(st, id);
			int want = spec_legal((tf_status)f, (tf_status)to), rc;
			json_object *o;

			for (int i = 0; i < 3 && paths[f][i] != TF_ST__COUNT; i++)
				assert_int_equal(tf_task_set_status(t, paths[f][i]), TF_OK);
			assert_int_equal(tf_task_status(t), f);
			assert_int_equal(tf_status_can((tf_status)f, (tf_status)to), want);
			rc = tf_task_set_status(t, (tf_status)to);
			if (want) {
				legal++;
				assert_int_equal(rc, TF_OK);
				assert_int_equal(tf_task_status(t), to);
			} else {
				if (rc != TF_ESTATE)
					fail_msg("%s -> %s accepted", tf_status_name((tf_status)f),
					         tf_status_name((tf_status)to));
				assert_int_equal(tf_task_status(t), f);
			}
			o = task_json(t);
			assert_string_equal(tu_jstr(o, "status", NULL), tf_status_name(tf_task_status(t)));
			if (tf_status_terminal(tf_task_status(t))) {
				assert_string_equal(tu_jstr(o, "stage", NULL), "done");
				assert_non_null(tu_jstr(o, "finished_at", NULL));
			} else {
				assert_true(tu_is_null(o, "finished_at"));
			}
			json_object_put(o);
			tf_task_free(t);
		}
	}
	assert_int_equal(legal, 13);
	/* out of range */
	assert_false(tf_status_can(TF_ST__COUNT, TF_ST_RUNNING));
	assert_false(tf_status_can(TF_ST_QUEUED, TF_ST__COUNT));
	/* names round-trip */
	for (int s = 0; s < TF_ST__COUNT; s++) {
		tf_status p;
		assert_int_equal(tf_status_parse(tf_status_name((tf_status)s), &p), TF_OK);
		assert_int_equal(p, s);
	}
	{
		tf_status p;
		assert_int_equal(tf_status_parse("Running", &p), TF_EINVAL);
		assert_int_equal(tf_status_parse(NULL, &p), TF_EINVAL);
	}
	tf_store_close(st);
}

/* ---- cancel modes ---------------------------------------------------------------- */

static void test_cancel_modes_in_memory(void **state)
{
	tf_store *st = tu_new_store("cmodes", NULL, 0);
	char id[TF_UUID_LEN + 1];
	tf_task *t;
	json_object *o;
	char *before;
	size_t n;
	(void)state;

	tu_simple_feed(st, "f");
	tu_create(st, "f", id);
	t = load(st, id);
	assert_int_equal(tf_task_cancel_mode(t), TF_CANCEL_NONE);
	o = task_json(t);
	assert_true(tu_is_null(o, "cancel"));
	json_object_put(o);
	/* queued --stop_now--> stopping */
	assert_int_equal(tf_task_request_cancel(t, TF_CANCEL_STOP_NOW, "alice"), TF_OK);
	assert_int_equal(tf_task_status(t), TF_ST_STOPPING);
	assert_int_equal(tf_task_cancel_mode(t), TF_CANCEL_STOP_NOW);
	o = task_json(t);
	assert_string_equal(tu_jstr(o, "cancel", "mode"), "stop_now");
	assert_string_equal(tu_jstr(o, "cancel", "requested_by"), "alice");
	assert_non_null(tu_jstr(o, "cancel", "requested_at"));
	assert_string_equal(tu_jstr(o, "stage", NULL), "stopping");
	json_object_put(o);
	/* repeating is harmless: nothing changes */
	before = strdup(tf_task_json(t, &n));
	assert_int_equal(tf_task_request_cancel(t, TF_CANCEL_STOP_NOW, "bob"), TF_OK);
	assert_string_equal(tf_task_json(t, &n), before);
	free(before);
	/* raised to cancel_job */
	assert_int_equal(tf_task_request_cancel(t, TF_CANCEL_JOB, "bob"), TF_OK);
	assert_int_equal(tf_task_status(t), TF_ST_CANCELLING);
	assert_int_equal(tf_task_cancel_mode(t), TF_CANCEL_JOB);
	/* never lowered */
	before = strdup(tf_task_json(t, &n));
	assert_int_equal(tf_task_request_cancel(t, TF_CANCEL_STOP_NOW, "carol"), TF_OK);
	assert_int_equal(tf_task_status(t), TF_ST_CANCELLING);
	assert_int_equal(tf_task_cancel_mode(t), TF_CANCEL_JOB);
	assert_string_equal(tf_task_json(t, &n), before);
	assert_int_equal(tf_task_request_cancel(t, TF_CANCEL_JOB, "carol"), TF_OK);
	assert_string_equal(tf_task_json(t, &n), before);
	free(before);
	/* acknowledged once */
	tf_task_ack_cancel(t);
	o = task_json(t);
	before = strdup(tu_jstr(o, "cancel", "acknowledged_at"));
	json_object_put(o);
	assert_true(tu_rfc3339(before));
	usleep(2000);
	tf_task_ack_cancel(t);
	o = task_json(t);
	assert_string_equal(tu_jstr(o, "cancel", "acknowledged_at"), before);
	json_object_put(o);
	free(before);
	tf_task_set_forced(t);
	o = task_json(t);
	{
		json_object *c, *f;
		assert_true(json_object_object_get_ex(o, "cancel", &c));
		assert_true(json_object_object_get_ex(c, "forced", &f));
		assert_true(json_object_get_boolean(f));
	}
	json_object_put(o);
	/* finished: a cancel is a conflict, in every terminal state */
	assert_int_equal(tf_task_set_status(t, TF_ST_CANCELLED), TF_OK);
	assert_int_equal(tf_task_request_cancel(t, TF_CANCEL_STOP_NOW, "x"), TF_ECONFLICT);
	assert_int_equal(tf_task_request_cancel(t, TF_CANCEL_JOB, "x"), TF_ECONFLICT);
	tf_task_free(t);
	/* running --cancel_job--> cancelling directly; completed → conflict */
	t = load(st, id);
	assert_int_equal(tf_task_set_status(t, TF_ST_RUNNING), TF_OK);
	assert_int_equal(tf_task_request_cancel(t, TF_CANCEL_JOB, NULL), TF_OK);
	assert_int_equal(tf_task_status(t), TF_ST_CANCELLING);
	tf_task_free(t);
	for (int s = TF_ST_COMPLETED; s < TF_ST__COUNT; s++) {
		t = load(st, id);
		for (int i = 0; i < 3 && paths[s][i] != TF_ST__COUNT; i++)
			assert_int_equal(tf_task_set_status(t, paths[s][i]), TF_OK);
		assert_int_equal(tf_task_request_cancel(t, TF_CANCEL_STOP_NOW, "x"), TF_ECONFLICT);
		assert_int_equal(tf_task_status(t), s);
		tf_task_free(t);
	}
	/* mode names */
	{
		tf_cancel_mode m;
		assert_int_equal(tf_cancel_mode_parse("stop_now", &m), TF_OK);
		assert_int_equal(m, TF_CANCEL_STOP_NOW);
		assert_int_equal(tf_cancel_mode_parse("cancel_job", &m), TF_OK);
		assert_int_equal(m, TF_CANCEL_JOB);
		assert_int_equal(tf_cancel_mode_parse("kill", &m), TF_EINVAL);
		assert_int_equal(tf_cancel_mode_parse(NULL, &m), TF_EINVAL);
		assert_string_equal(tf_cancel_mode_name(TF_CANCEL_JOB), "cancel_job");
		assert_string_equal(tf_cancel_mode_name(TF_CANCEL_STOP_NOW), "stop_now");
	}
	tf_store_close(st);
}

static void test_cancel_in_store(void **state)
{
	tf_store *st = tu_new_store("cstore", NULL, 0);
	char id[TF_UUID_LEN + 1], out_id[TF_UUID_LEN + 1];
	char *json = NULL;
	size_t len = 0;
	json_object *o;
	(void)state;

	tu_simple_feed(st, "f");
	tu_create(st, "f", id);
	assert_int_equal(tf_task_cancel(st, id, TF_CANCEL_STOP_NOW, "u1", &json, &len), TF_OK);
	assert_non_null(json);
	assert_int_equal(strlen(json), len);
	o = tu_json(json);
	assert_string_equal(tu_jstr(o, "status", NULL), "stopping");
	json_object_put(o);
	free(json);
	/* durable: a fresh read sees it */
	assert_int_equal(tu_task_status(st, id), TF_ST_STOPPING);
	/* raise, repeat, lower */
	assert_int_equal(tf_task_cancel(st, id, TF_CANCEL_JOB, "u2", &json, NULL), TF_OK);
	free(json);
	assert_int_equal(tf_task_cancel(st, id, TF_CANCEL_JOB, "u2", &json, NULL), TF_OK);
	free(json);
	assert_int_equal(tf_task_cancel(st, id, TF_CANCEL_STOP_NOW, "u3", &json, NULL), TF_OK);
	o = tu_json(json);
	assert_string_equal(tu_jstr(o, "status", NULL), "cancelling");
	assert_string_equal(tu_jstr(o, "cancel", "mode"), "cancel_job");
	json_object_put(o);
	free(json);
	/* finished → conflict, and json is NULL */
	assert_int_equal(tf_runctl_finish(st, id, TF_ST_CANCELLED, 0, NULL), TF_OK);
	assert_int_equal(tu_task_status(st, id), TF_ST_CANCELLED);
	json = (char *)1;
	assert_int_equal(tf_task_cancel(st, id, TF_CANCEL_STOP_NOW, "u4", &json, NULL), TF_ECONFLICT);
	assert_null(json);
	/* unknown task */
	assert_int_equal(tf_task_cancel(st, "00000000-0000-4000-8000-000000000000", TF_CANCEL_JOB,
	                                "u", &json, NULL),
	                 TF_ENOTFOUND);
	assert_null(json);
	/* feed-level: idle feed → conflict, unknown feed → not found */
	assert_int_equal(tf_task_cancel_feed(st, "f", TF_CANCEL_JOB, "u", out_id, &json, NULL),
	                 TF_ECONFLICT);
	assert_null(json);
	assert_int_equal(tf_task_cancel_feed(st, "nope", TF_CANCEL_JOB, "u", out_id, &json, NULL),
	                 TF_ENOTFOUND);
	assert_null(json);
	tf_store_close(st);
}

/* tf_task_read_peek: a finished task is told from its stored text without a
 * parse (the status poll's short path, fcgi/h_tasks.c); anything it cannot be
 * sure of counts as not finished, which takes the full path. */
struct put_ctx {
	const char *id, *text;
};

static int put_txn(tf_txn *txn, void *vctx)
{
	struct put_ctx *c = vctx;
	return tf_txn_put(txn, TF_TBL_TASKS, c->id, strlen(c->id), c->text, strlen(c->text));
}

static int peek_finished(tf_store *st, const char *id, const char *text)
{
	struct put_ctx c = {id, text};
	char *json = NULL;
	size_t len = 0;
	int finished = -1;

	assert_int_equal(tf_store_update(st, put_txn, &c), TF_OK);
	assert_int_equal(tf_task_read_peek(st, id, &json, &len, &finished), TF_OK);
	assert_int_equal(len, strlen(text));
	assert_string_equal(json, text);   /* the stored text, as it is */
	free(json);
	return finished;
}

static void test_read_peek(void **state)
{
	static const char *const active[] = {
		"{\"task_id\":\"x\",\"status\":\"running\"}",
		/* nested and quoted look-alikes are not the task's status */
		"{\"status\":\"running\",\"cancel\":{\"status\":\"completed\"}}",
		"{\"status\":\"running\",\"l\":[{\"status\":\"failed\"},\"status\"]}",
		"{\"message\":\"\\\"status\\\":\\\"completed\\\"\",\"status\":\"queued\"}",
		"{\"status\":\"completed\",\"status\":\"running\"}",   /* the last wins */
		"{\"status\":\"completed\",\"status\":null}",
		"{\"status\":\"complet\\u0065d\"}",   /* escaped: left to the parser */
		"{\"status\":{\"a\":\"completed\"}}",
		"{\"status\":\"nonsense\"}",
		"{\"other\":\"completed\"}",
		"{\"status\":\"completed\"",   /* truncated */
		"{\"status\":\"completed\"}x",
		"[\"status\",\"completed\"]",
	};
	static const char *const done[] = {
		"{\"task_id\":\"x\",\"status\":\"completed\"}",
		" { \"a\" : [1,{\"status\":\"running\"}] , \"status\" : \"stopped\" } ",
		"{\"status\":\"running\",\"status\":\"failed\",\"e\":\"a\\\\\"}",
		"{\"cancel\":{\"mode\":\"cancel_job\"},\"status\":\"cancelled\"}",
	};
	tf_store *st = tu_new_store("peek", NULL, 0);
	const char *fake = "00000000-0000-4000-8000-0000000000aa";
	char id[TF_UUID_LEN + 1], *json = NULL, *again = NULL;
	size_t len = 0, alen = 0;
	int finished = -1;
	(void)state;

	for (size_t i = 0; i < sizeof active / sizeof *active; i++)
		if (peek_finished(st, fake, active[i]) != 0)
			fail_msg("told finished: %s", active[i]);
	for (size_t i = 0; i < sizeof done / sizeof *done; i++)
		if (peek_finished(st, fake, done[i]) != 1)
			fail_msg("not told finished: %s", done[i]);

	/* A real task: active while queued and while a cancel waits in the
	 * signal store (then merged), finished once it ended. */
	tu_simple_feed(st, "f");
	tu_create(st, "f", id);
	assert_int_equal(tf_task_read_peek(st, id, &json, &len, &finished), TF_OK);
	assert_int_equal(finished, 0);
	free(json);
	assert_int_equal(tf_task_cancel(st, id, TF_CANCEL_STOP_NOW, "u1", &json, NULL), TF_OK);
	free(json);
	assert_int_equal(tf_task_read_peek(st, id, &json, &len, &finished), TF_OK);
	assert_int_equal(finished, 0);
	assert_non_null(strstr(json, "\"stopping\""));
	free(json);
	assert_int_equal(tf_runctl_finish(st, id, TF_ST_STOPPED, 0, NULL), TF_OK);
	assert_int_equal(tf_task_read_peek(st, id, &json, &len, &finished), TF_OK);
	assert_int_equal(finished, 1);
	assert_int_equal(tf_task_read(st, id, &again, &alen), TF_OK);
	assert_int_equal(len, alen);
	assert_memory_equal(json, again, len);
	free(json);
	free(again);
	/* no such task */
	json = (char *)1;
	assert_int_equal(tf_task_read_peek(st, "00000000-0000-4000-8000-0000000000bb", &json, &len,
	                                   &finished),
	                 TF_ENOTFOUND);
	assert_null(json);
	assert_int_equal(finished, 0);
	tf_store_close(st);
}

/* ---- the task's JSON ----------------------------------------------------------- */

static void test_task_json_and_timestamps(void **state)
{
	tf_store *st = tu_new_store("json", NULL, 0);
	char id[TF_UUID_LEN + 1];
	int64_t t0 = tf_now_us(), t1;
	json_object *o, *p, *v;
	tf_task *t;
	tf_progress pr = {.percent = 42, .pages_done = 3, .pages_total = 10,
	                  .objects_processed = 1234, .indicators_created = 5,
	                  .indicators_updated = 6, .indicators_skipped = 7,
	                  .bytes_received = 1LL << 40};
	static const char *const fields[] = {
		"task_id", "feed_id", "status", "stage", "message", "progress", "cancel",
		"rolled_back", "error", "warnings", "created_at", "started_at", "updated_at",
		"finished_at"};
	static const char *const pfields[] = {
		"percent", "pages_done", "pages_total", "objects_processed", "indicators_created",
		"indicators_updated", "indicators_skipped", "bytes_received"};
	(void)state;

	tu_simple_feed(st, "f");
	tu_create(st, "f", id);
	t1 = tf_now_us();
	assert_true(tf_valid_uuid(id));
	o = tu_task(st, id);
	for (size_t i = 0; i < sizeof fields / sizeof *fields; i++)
		if (!json_object_object_get_ex(o, fields[i], NULL))
			fail_msg("task JSON lacks %s", fields[i]);
	assert_string_equal(tu_jstr(o, "task_id", NULL), id);
	assert_string_equal(tu_jstr(o, "feed_id", NULL), "f");
	assert_string_equal(tu_jstr(o, "status", NULL), "queued");
	assert_string_equal(tu_jstr(o, "stage", NULL), "queued");
	assert_time_between(tu_jstr(o, "created_at", NULL), t0, t1);
	assert_time_between(tu_jstr(o, "updated_at", NULL), t0, t1);
	assert_true(tu_is_null(o, "started_at"));
	assert_true(tu_is_null(o, "finished_at"));
	assert_true(tu_is_null(o, "cancel"));
	assert_true(tu_is_null(o, "error"));
	assert_true(json_object_object_get_ex(o, "progress", &p));
	for (size_t i = 0; i < sizeof pfields / sizeof *pfields; i++)
		if (!json_object_object_get_ex(p, pfields[i], NULL))
			fail_msg("progress lacks %s", pfields[i]);
	assert_true(tu_is_null(p, "percent"));
	assert_true(tu_is_null(p, "pages_total"));
	json_object_put(o);

	/* progress, stage, error round-trip through the store */
	t = load(st, id);
	t0 = tf_now_us();
	assert_int_equal(tf_task_set_status(t, TF_ST_RUNNING), TF_OK);
	tf_task_set_progress(t, &pr);
	tf_task_set_stage(t, TF_SG_FETCHING, "page 3 of 10");
	save(st, t);
	tf_task_free(t);
	t = load(st, id);
	{
		tf_progress got;
		/* field by field: the padding after percent is not the task's */
		tf_task_get_progress(t, &got);
		assert_int_equal(got.percent, pr.percent);
		assert_int_equal(got.pages_done, pr.pages_done);
		assert_int_equal(got.pages_total, pr.pages_total);
		assert_int_equal(got.objects_processed, pr.objects_processed);
		assert_int_equal(got.indicators_created, pr.indicators_created);
		assert_int_equal(got.indicators_updated, pr.indicators_updated);
		assert_int_equal(got.indicators_skipped, pr.indicators_skipped);
		assert_int_equal(got.bytes_received, pr.bytes_received);
	}
	assert_int_equal(tf_task_set_status(t, TF_ST_FAILED), TF_OK);
	tf_task_set_error(t, "upstream said 500");
	tf_task_set_rolled_back(t, 17);
	save(st, t);
	t1 = tf_now_us();
	tf_task_free(t);
	o = tu_task(st, id);
	assert_string_equal(tu_jstr(o, "status", NULL), "failed");
	assert_string_equal(tu_jstr(o, "stage", NULL), "done");
	assert_string_equal(tu_jstr(o, "message", NULL), "page 3 of 10");
	assert_string_equal(tu_jstr(o, "error", NULL), "upstream said 500");
	assert_true(json_object_object_get_ex(o, "rolled_back", &v));
	assert_int_equal(json_object_get_int64(v), 17);
	assert_time_between(tu_jstr(o, "started_at", NULL), t0, t1);
	assert_time_between(tu_jstr(o, "finished_at", NULL), t0, t1);
	assert_time_between(tu_jstr(o, "updated_at", NULL), t0, t1);
	assert_true(json_object_object_get_ex(o, "progress", &p));
	assert_true(json_object_object_get_ex(p, "percent", &v));
	assert_int_equal(json_object_get_int(v), 42);
	assert_true(json_object_object_get_ex(p, "bytes_received", &v));
	assert_int_equal(json_object_get_int64(v), 1LL << 40);
	json_object_put(o);
	/* percent is capped at 100 */
	t = load(st, id);
	pr.percent = 250;
	tf_task_set_progress(t, &pr);
	{
		tf_progress got;
		tf_task_get_progress(t, &got);
		assert_int_equal(got.percent, 100);
	}
	tf_task_free(t);
	tf_store_close(st);
}

static int valid_utf8(const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	while (*p) {
		int n = *p < 0x80 ? 0 : (*p & 0xe0) == 0xc0 ? 1 : (*p & 0xf0) == 0xe0 ? 2
		      : (*p & 0xf8) == 0xf0 ? 3 : -1;
		if (n < 0)
			return 0;
		p++;
		for (int i = 0; i < n; i++, p++)
			if ((*p & 0xc0) != 0x80)
				return 0;
	}
	return 1;
}

/* Texts cut to their limits must stay valid UTF-8, or the stored task (parsed
 * with UTF-8 validation) could never be read again. */
static void test_truncation_keeps_utf8(void **state)
{
	tf_store *st = tu_new_store("utf8", NULL, 0);
	char id[TF_UUID_LEN + 1], *text;
	char msg[2100];
	tf_task *t;
	json_object *o, *w;
	(void)state;

	tu_simple_feed(st, "f");
	tu_create(st, "f", id);
	/* "é" (2 bytes) straddling each limit, and a 4-byte emoji */
	for (int shift = 0; shift < 4; shift++) {
		size_t i = 0;
		for (; i < (size_t)(TF_MAX_MESSAGE_LEN - 1 - shift) && i < sizeof msg - 8; i++)
			msg[i] = 'a';
		strcpy(msg + i, shift % 2 ? "\xf0\x9f\x98\x80tail" : "\xc3\xa9tail");
		t = load(st, id);
		tf_task_set_stage(t, TF_SG_FETCHING, msg);
		tf_task_add_warning(t, msg);
		memset(msg, 'b', TF_MAX_ERROR_LEN - 1 - (size_t)shift);
		strcpy(msg + TF_MAX_ERROR_LEN - 1 - shift, "\xe2\x82\xac\xe2\x82\xac");
		tf_task_set_error(t, msg);
		/* invalid UTF-8 from outside must not poison the task either */
		tf_task_add_warning(t, "bad \xff\xfe bytes \xc3");
		save(st, t);
		tf_task_free(t);
		text = NULL;
		assert_int_equal(tf_task_read(st, id, &text, NULL), TF_OK);
		assert_true(valid_utf8(text));
		free(text);
		t = load(st, id);   /* fails (TF_ESTORE) if the stored JSON is invalid */
		o = task_json(t);
		assert_true(strlen(tu_jstr(o, "message", NULL)) <= TF_MAX_MESSAGE_LEN);
		assert_true(strlen(tu_jstr(o, "error", NULL)) <= TF_MAX_ERROR_LEN);
		assert_true(json_object_object_get_ex(o, "warnings", &w));
		for (size_t k = 0; k < json_object_array_length(w); k++)
			assert_true(strlen(json_object_get_string(json_object_array_get_idx(w, k))) <=
			            TF_MAX_WARNING_LEN);
		json_object_put(o);
		tf_task_free(t);
	}
	tf_store_close(st);
}

static void test_warnings_capped(void **state)
{
	tf_store *st = tu_new_store("warn", NULL, 0);
	char id[TF_UUID_LEN + 1], buf[64];
	tf_task *t;
	json_object *o, *w;
	(void)state;

	tu_simple_feed(st, "f");
	tu_create(st, "f", id);
	/* under the cap: all kept, no "omitted" line */
	t = load(st, id);
	for (int i = 0; i < 50; i++) {
		snprintf(buf, sizeof buf, "warning %d", i);
		tf_task_add_warning(t, buf);
	}
	o = task_json(t);
	assert_true(json_object_object_get_ex(o, "warnings", &w));
	assert_int_equal(json_object_array_length(w), 50);
	assert_string_equal(json_object_get_string(json_object_array_get_idx(w, 49)), "warning 49");
	json_object_put(o);
	/* far over the cap: 100 lines, the oldest kept, the last says so */
	for (int i = 50; i < 1000; i++) {
		snprintf(buf, sizeof buf, "warning %d", i);
		tf_task_add_warning(t, buf);
	}
	save(st, t);
	tf_task_free(t);
	o = tu_task(st, id);
	assert_true(json_object_object_get_ex(o, "warnings", &w));
	assert_int_equal(json_object_array_length(w), TF_MAX_WARNINGS);
	assert_int_equal(TF_MAX_WARNINGS, 100);
	for (int i = 0; i < TF_MAX_WARNINGS - 1; i++) {
		snprintf(buf, sizeof buf, "warning %d", i);
		assert_string_equal(json_object_get_string(json_object_array_get_idx(w, (size_t)i)), buf);
	}
	assert_true(tu_contains(json_object_get_string(json_object_array_get_idx(w, 99)),
	                        "more warnings omitted"));
	json_object_put(o);
	tf_store_close(st);
}

static int cmp_id(const void *a, const void *b)
{
	return memcmp(a, b, TF_UUID_LEN + 1);
}

static int uuid_v4(const char *s)
{
	return tf_valid_uuid(s) && s[14] == '4' && strchr("89ab", s[19]) != NULL;
}

static void test_task_ids(void **state)
{
	enum { N = 10000 };
	char (*ids)[TF_UUID_LEN + 1] = calloc(N, sizeof *ids);
	tf_store *st = tu_new_store("ids", NULL, 0);
	char made[200][TF_UUID_LEN + 1];
	(void)state;

	assert_non_null(ids);
	for (int i = 0; i < N; i++) {
		assert_int_equal(tf_uuid_v4(ids[i], sizeof ids[i]), TF_OK);
		if (!uuid_v4(ids[i]))
			fail_msg("not a UUID v4: %s", ids[i]);
	}
	qsort(ids, N, sizeof *ids, cmp_id);
	for (int i = 1; i < N; i++)
		if (!memcmp(ids[i - 1], ids[i], TF_UUID_LEN))
			fail_msg("duplicate id %s", ids[i]);
	/* the ids the store hands out: 200 runs over 20 feeds */
	for (int f = 0; f < 20; f++) {
		char feed[16];
		snprintf(feed, sizeof feed, "feed%d", f);
		tu_simple_feed(st, feed);
	}
	for (int i = 0; i < 200; i++) {
		char feed[16];
		snprintf(feed, sizeof feed, "feed%d", i % 20);
		tu_create(st, feed, made[i]);
		if (!uuid_v4(made[i]))
			fail_msg("task id not a UUID v4: %s", made[i]);
		assert_int_equal(tf_runctl_finish(st, made[i], TF_ST_FAILED, 0, "test"), TF_OK);
	}
	qsort(made, 200, sizeof *made, cmp_id);
	for (int i = 1; i < 200; i++)
		assert_memory_not_equal(made[i - 1], made[i], TF_UUID_LEN);
	/* validation rejects near misses */
	assert_false(tf_valid_uuid("11111111-1111-4111-8111-11111111111"));
	assert_false(tf_valid_uuid("11111111-1111-4111-8111-1111111111111"));
	assert_false(tf_valid_uuid("11111111x1111-4111-8111-111111111111"));
	assert_false(tf_valid_uuid("1111111G-1111-4111-8111-111111111111"));
	assert_false(tf_valid_uuid("../../../../../../../../../../etc/pa"));
	free(ids);
	tf_store_close(st);
}

/* ---- one active run per feed --------------------------------------------------- */

static void test_one_active_run(void **state)
{
	tf_store *st = tu_new_store("active", NULL, 0);
	char a[TF_UUID_LEN + 1], b[TF_UUID_LEN + 1] = "", act[TF_UUID_LEN + 1] = "", c[TF_UUID_LEN + 1];
	(void)state;

	tu_simple_feed(st, "f");
	tu_simple_feed(st, "g");
	assert_int_equal(tf_task_create(st, "nope", b, act), TF_ENOTFOUND);
	tu_create(st, "f", a);
	assert_int_equal(tf_task_create(st, "f", b, act), TF_ECONFLICT);
	assert_string_equal(act, a);
	/* another feed runs in parallel */
	tu_create(st, "g", c);
	/* still a conflict while stopping/cancelling */
	{
		char *json = NULL;
		assert_int_equal(tf_task_cancel(st, a, TF_CANCEL_STOP_NOW, "u", &json, NULL), TF_OK);
		free(json);
	}
	memset(act, 0, sizeof act);
	assert_int_equal(tf_task_create(st, "f", b, act), TF_ECONFLICT);
	assert_string_equal(act, a);
	/* once it ended, a new run may start */
	assert_int_equal(tf_runctl_finish(st, a, TF_ST_STOPPED, 0, NULL), TF_OK);
	tu_create(st, "f", b);
	assert_string_not_equal(a, b);
	tf_store_close(st);
}

#define RACERS 8

static void test_create_race_across_processes(void **state)
{
	char path[TU_PATH];
	tf_store *st = tu_new_store("race", path, sizeof path);
	(void)state;

	tu_simple_feed(st, "f");
	tf_store_close(st);
	for (int round = 0; round < 4; round++) {
		int ready[2], go[2], res[2], wins = 0, conflicts = 0;
		char winner[TF_UUID_LEN + 1] = "", lines[RACERS][128];
		pid_t pids[RACERS];
		FILE *in;

		assert_int_equal(pipe(ready), 0);
		assert_int_equal(pipe(go), 0);
		assert_int_equal(pipe(res), 0);
		for (int i = 0; i < RACERS; i++) {
			pids[i] = fork();
			assert_true(pids[i] >= 0);
			if (pids[i] == 0) {
				tf_store *cs;
				char id[TF_UUID_LEN + 1] = "", act[TF_UUID_LEN + 1] = "", line[128], c;
				int rc, n;
				close(ready[0]);
				close(go[1]);
				close(res[0]);
				if (tf_store_open(&cs, path, 0, NULL, 0))
					_exit(1);
				if (write(ready[1], "r", 1) != 1)
					_exit(2);
				if (read(go[0], &c, 1) != 0)   /* EOF: everyone starts at once */
					_exit(3);
				rc = tf_task_create(cs, "f", id, act);
				n = snprintf(line, sizeof line, "%d %s %s\n", rc, rc ? "-" : id,
				             act[0] ? act : "-");
				if (write(res[1], line, (size_t)n) != n)
					_exit(4);
				tf_store_close(cs);
				_exit(0);
			}
		}
		close(ready[1]);
		close(go[0]);
		close(res[1]);
		for (int i = 0; i < RACERS; i++) {
			char c;
			assert_int_equal(read(ready[0], &c, 1), 1);
		}
		close(go[1]);
		for (int i = 0; i < RACERS; i++)
			assert_int_equal(tu_wait(pids[i]), 0);
		close(ready[0]);
		in = fdopen(res[0], "r");
		assert_non_null(in);
		for (int i = 0; i < RACERS; i++)
			assert_non_null(fgets(lines[i], sizeof lines[i], in));
		fclose(in);
		for (int i = 0; i < RACERS; i++) {
			int rc;
			char id[64], act[64];
			assert_int_equal(sscanf(lines[i], "%d %63s %63s", &rc, id, act), 3);
			if (rc == TF_OK) {
				wins++;
				snprintf(winner, sizeof winner, "%.36s", id);
			} else {
				assert_int_equal(rc, TF_ECONFLICT);
				conflicts++;
			}
		}
		assert_int_equal(wins, 1);
		assert_int_equal(conflicts, RACERS - 1);
		/* every loser was told the winner's id */
		for (int i = 0; i < RACERS; i++) {
			int rc;
			char id[64], act[64];
			sscanf(lines[i], "%d %63s %63s", &rc, id, act);
			if (rc)
				assert_string_equal(act, winner);
		}
		st = tu_open(path, 0);
		{
			size_t n;
			char *v = tu_raw_get(st, TF_TBL_ACTIVE, "f", 1, &n);
			assert_non_null(v);
			assert_int_equal(n, TF_UUID_LEN);
			assert_memory_equal(v, winner, TF_UUID_LEN);
			free(v);
		}
		{
			char *list;
			tf_task_filter flt = {0, "f", 1000};
			json_object *o, *arr;
			assert_int_equal(tf_task_list(st, &flt, &list, NULL), TF_OK);
			o = tu_json(list);
			free(list);
			assert_true(json_object_object_get_ex(o, "tasks", &arr));
			assert_int_equal(json_object_array_length(arr), (size_t)round + 1);
			json_object_put(o);
		}
		assert_int_equal(tf_runctl_finish(st, winner, TF_ST_FAILED, 0, "round over"), TF_OK);
		tf_store_close(st);
	}
}

/* ---- per-feed cancel signals ---------------------------------------------------- */

#define SIGNAL_LEN (TF_UUID_LEN + 1 + 8)

struct creq_ctx {
	const char *task_id, *feed_id;
	tf_cancel_mode mode;
};

static int creq_txn(tf_txn *txn, void *vctx)
{
	struct creq_ctx *c = vctx;
	return tf_task_cancel_requested(txn, c->task_id, c->feed_id, &c->mode);
}

static tf_cancel_mode requested(tf_store *st, const char *task_id, const char *feed_id)
{
	struct creq_ctx c = {task_id, feed_id, (tf_cancel_mode)99};
	assert_int_equal(tf_store_view(st, creq_txn, &c), TF_OK);
	return c.mode;
}

static void put_signal(tf_store *st, const char *feed, const char *task_id, tf_cancel_mode m,
                       int64_t expires)
{
	unsigned char sig[SIGNAL_LEN];
	memcpy(sig, task_id, TF_UUID_LEN);
	sig[TF_UUID_LEN] = (unsigned char)m;
	memcpy(sig + TF_UUID_LEN + 1, &expires, 8);
	assert_int_equal(tu_raw_put(st, TF_TBL_SIGNALS, feed, strlen(feed), sig, sizeof sig), TF_OK);
}

struct hreq_ctx {
	const char *task_id;
	int rc;
};

static int hreq_txn(tf_txn *txn, void *vctx)
{
	struct hreq_ctx *c = vctx;
	unsigned char k[1 + TF_UUID_LEN], v[512];
	size_t vl;
	k[0] = 'c';
	memcpy(k + 1, c->task_id, TF_UUID_LEN);
	c->rc = tf_txn_signal_get(txn, k, sizeof k, v, sizeof v, &vl);
	return TF_OK;
}

/* Whether a cancel of task_id waits in the store's signals (lib/task.c's key). */
static int has_request(tf_store *st, const char *task_id)
{
	struct hreq_ctx c = {task_id, -1};
	assert_int_equal(tf_store_view(st, hreq_txn, &c), TF_OK);
	assert_true(c.rc == TF_OK || c.rc == TF_ENOTFOUND);
	return c.rc == TF_OK;
}

static void test_feed_signal(void **state)
{
	tf_store *st = tu_new_store("signal", NULL, 0);
	char a[TF_UUID_LEN + 1], b[TF_UUID_LEN + 1], got[TF_UUID_LEN + 1] = "";
	char *json = NULL;
	unsigned char *sig;
	size_t n;
	int64_t now = tf_now_us(), expires;
	uint64_t dropped = 99;
	(void)state;

	tu_simple_feed(st, "f");
	tu_simple_feed(st, "g");
	tu_create(st, "f", a);
	assert_int_equal(requested(st, a, "f"), TF_CANCEL_NONE);
	assert_int_equal(tf_task_cancel_feed(st, "f", TF_CANCEL_STOP_NOW, "u", got, &json, NULL),
	                 TF_OK);
	assert_string_equal(got, a);
	free(json);
	/* The request waits in the store's signals under the task, not under
	 * the feed (no TF_TBL_SIGNALS entry: that needed the writer lock). */
	assert_null(tu_raw_get(st, TF_TBL_SIGNALS, "f", 1, &n));
	assert_true(has_request(st, a));
	assert_int_equal(requested(st, a, "f"), TF_CANCEL_STOP_NOW);
	(void)now, (void)expires, (void)sig;
	assert_int_equal(tf_task_gc_signals(st, &dropped), TF_OK);
	assert_int_equal(dropped, 0);

	/* The signal alone (a run still starting whose own record has no cancel
	 * yet): rewrite it as cancel_job for a fresh run on feed g. */
	tu_create(st, "g", b);
	put_signal(st, "g", b, TF_CANCEL_JOB, tf_now_us() + 60000000);
	assert_int_equal(requested(st, b, "g"), TF_CANCEL_JOB);
	/* only for that run: not for another task id of the same feed */
	assert_int_equal(requested(st, a, "g"), TF_CANCEL_STOP_NOW);   /* a's own record */
	put_signal(st, "f", b, TF_CANCEL_JOB, tf_now_us() + 60000000);
	assert_int_equal(requested(st, a, "f"), TF_CANCEL_STOP_NOW);
	/* without a feed id only the task's own record counts */
	assert_int_equal(requested(st, b, NULL), TF_CANCEL_NONE);
	/* expired: ignored, then dropped by gc */
	put_signal(st, "g", b, TF_CANCEL_JOB, tf_now_us() - 1);
	assert_int_equal(requested(st, b, "g"), TF_CANCEL_NONE);
	assert_int_equal(tf_task_gc_signals(st, &dropped), TF_OK);
	assert_int_equal(dropped, 1);
	assert_null(tu_raw_get(st, TF_TBL_SIGNALS, "g", 1, &n));
	assert_non_null(sig = tu_raw_get(st, TF_TBL_SIGNALS, "f", 1, &n));
	free(sig);
	/* a garbled signal is ignored and collected */
	assert_int_equal(tu_raw_put(st, TF_TBL_SIGNALS, "g", 1, "junk", 4), TF_OK);
	assert_int_equal(requested(st, b, "g"), TF_CANCEL_NONE);
	assert_int_equal(tf_task_gc_signals(st, &dropped), TF_OK);
	assert_int_equal(dropped, 1);

	/* A signal never touches a later run of the feed: end a's run, start a
	 * new one, and leave an old signal naming a behind. */
	put_signal(st, "f", a, TF_CANCEL_JOB, tf_now_us() + 60000000);
	assert_int_equal(tf_runctl_finish(st, a, TF_ST_STOPPED, 0, NULL), TF_OK);
	{
		char c[TF_UUID_LEN + 1];
		tu_create(st, "f", c);
		put_signal(st, "f", a, TF_CANCEL_JOB, tf_now_us() + 60000000);
		assert_int_equal(requested(st, c, "f"), TF_CANCEL_NONE);
		/* and a feed-level cancel now names the new run */
		assert_int_equal(tf_task_cancel_feed(st, "f", TF_CANCEL_JOB, "u", got, &json, NULL),
		                 TF_OK);
		free(json);
		assert_string_equal(got, c);
		assert_int_equal(requested(st, c, "f"), TF_CANCEL_JOB);
		/* ending the run removes its signal */
		assert_true(has_request(st, c));
		assert_int_equal(tf_runctl_finish(st, c, TF_ST_CANCELLED, 0, NULL), TF_OK);
		assert_false(has_request(st, c));
	}
	tf_store_close(st);
}

/* ---- listing and history ----------------------------------------------------------- */

static json_object *list(tf_store *st, int active, const char *feed, int limit)
{
	tf_task_filter f = {active, feed, limit};
	char *text = NULL;
	json_object *o, *arr;
	assert_int_equal(tf_task_list(st, &f, &text, NULL), TF_OK);
	o = tu_json(text);
	free(text);
	assert_true(json_object_object_get_ex(o, "tasks", &arr));
	json_object_get(arr);
	json_object_put(o);
	return arr;
}

static const char *nth_id(json_object *arr, size_t i)
{
	return tf_json_str(json_object_array_get_idx(arr, i), "task_id");
}

static void test_list_and_delete(void **state)
{
	tf_store *st = tu_new_store("list", NULL, 0);
	char ids[6][TF_UUID_LEN + 1];
	json_object *arr;
	uint64_t del = 99;
	int64_t cut;
	(void)state;

	tu_simple_feed(st, "f");
	tu_simple_feed(st, "g");
	/* f: 0,1,2 finished; 3 active. g: 4 finished, 5 active. */
	for (int i = 0; i < 3; i++) {
		tu_create(st, "f", ids[i]);
		assert_int_equal(tf_runctl_finish(st, ids[i], TF_ST_FAILED, 0, "x"), TF_OK);
		if (i == 1)
			usleep(2000);
	}
	tu_create(st, "g", ids[4]);
	assert_int_equal(tf_runctl_finish(st, ids[4], TF_ST_FAILED, 0, "x"), TF_OK);
	usleep(2000);
	cut = tf_now_us();
	usleep(2000);
	tu_create(st, "f", ids[3]);
	tu_create(st, "g", ids[5]);

	arr = list(st, 0, NULL, 100);
	assert_int_equal(json_object_array_length(arr), 6);
	/* newest first */
	assert_string_equal(nth_id(arr, 0), ids[5]);
	assert_string_equal(nth_id(arr, 1), ids[3]);
	assert_string_equal(nth_id(arr, 2), ids[4]);
	assert_string_equal(nth_id(arr, 5), ids[0]);
	json_object_put(arr);
	arr = list(st, 0, NULL, 2);
	assert_int_equal(json_object_array_length(arr), 2);
	json_object_put(arr);
	arr = list(st, 1, NULL, 100);
	assert_int_equal(json_object_array_length(arr), 2);
	assert_string_equal(nth_id(arr, 0), ids[5]);
	assert_string_equal(nth_id(arr, 1), ids[3]);
	json_object_put(arr);
	arr = list(st, 0, "f", 100);
	assert_int_equal(json_object_array_length(arr), 4);
	json_object_put(arr);
	arr = list(st, 1, "g", 100);
	assert_int_equal(json_object_array_length(arr), 1);
	assert_string_equal(nth_id(arr, 0), ids[5]);
	json_object_put(arr);
	/* active=1 reads the feeds' active slots (not the history): the limit
	 * keeps the newest, a feed filter its one run, a run being cancelled
	 * is still active */
	arr = list(st, 1, NULL, 1);
	assert_int_equal(json_object_array_length(arr), 1);
	assert_string_equal(nth_id(arr, 0), ids[5]);
	json_object_put(arr);
	arr = list(st, 1, "f", 100);
	assert_int_equal(json_object_array_length(arr), 1);
	assert_string_equal(nth_id(arr, 0), ids[3]);
	json_object_put(arr);
	{
		char *json = NULL;
		assert_int_equal(tf_task_cancel(st, ids[3], TF_CANCEL_STOP_NOW, "u", &json, NULL), TF_OK);
		free(json);
	}
	arr = list(st, 1, NULL, 100);
	assert_int_equal(json_object_array_length(arr), 2);
	assert_string_equal(nth_id(arr, 1), ids[3]);
	assert_string_equal(tf_json_str(json_object_array_get_idx(arr, 1), "status"), "stopping");
	json_object_put(arr);
	arr = list(st, 1, "nope", 100);
	assert_int_equal(json_object_array_length(arr), 0);
	json_object_put(arr);
	arr = list(st, 0, "nope", 100);
	assert_int_equal(json_object_array_length(arr), 0);
	json_object_put(arr);

	/* finished before the cut: 0,1,2,4; active 3,5 never */
	assert_int_equal(tf_task_delete_finished(st, cut, &del), TF_OK);
	assert_int_equal(del, 4);
	arr = list(st, 0, NULL, 100);
	assert_int_equal(json_object_array_length(arr), 2);
	json_object_put(arr);
	{
		char *json = NULL;
		assert_int_equal(tf_task_read(st, ids[0], &json, NULL), TF_ENOTFOUND);
		assert_null(json);
	}
	assert_int_equal(tf_runctl_finish(st, ids[3], TF_ST_FAILED, 0, "x"), TF_OK);
	assert_int_equal(tf_task_delete_finished(st, 0, &del), TF_OK);
	assert_int_equal(del, 1);
	arr = list(st, 0, NULL, 100);
	assert_int_equal(json_object_array_length(arr), 1);
	assert_string_equal(nth_id(arr, 0), ids[5]);
	json_object_put(arr);
	tf_store_close(st);
}

/* ---- the API shape in every state (docs/SPEC.md §2) ------------------------------------- */

static void assert_exact_keys(json_object *o, const char *const *keys, size_t n, const char *what)
{
	if (!json_object_is_type(o, json_type_object))
		fail_msg("%s is not an object", what);
	for (size_t i = 0; i < n; i++)
		if (!json_object_object_get_ex(o, keys[i], NULL))
			fail_msg("%s lacks %s: %s", what, keys[i], json_object_to_json_string(o));
	if ((size_t)json_object_object_length(o) != n)
		fail_msg("%s has extra members: %s", what, json_object_to_json_string(o));
}

/* Written out from docs/SPEC.md, independently of lib/task.c. */
static void assert_task_shape(json_object *o, const char *want_status)
{
	static const char *const keys[] = {
		"task_id", "feed_id", "status", "stage", "message", "progress", "cancel",
		"rolled_back", "error", "warnings", "created_at", "started_at", "updated_at",
		"finished_at"};
	static const char *const pkeys[] = {
		"percent", "pages_done", "pages_total", "objects_processed", "indicators_created",
		"indicators_updated", "indicators_skipped", "bytes_received"};
	static const char *const ckeys[] = {"mode", "requested_at", "requested_by",
	                                    "acknowledged_at", "forced"};
	json_object *v;

	assert_exact_keys(o, keys, sizeof keys / sizeof *keys, want_status);
	assert_string_equal(tu_jstr(o, "status", NULL), want_status);
	assert_true(json_object_object_get_ex(o, "progress", &v));
	assert_exact_keys(v, pkeys, sizeof pkeys / sizeof *pkeys, "progress");
	assert_true(json_object_object_get_ex(o, "cancel", &v));
	if (v)
		assert_exact_keys(v, ckeys, sizeof ckeys / sizeof *ckeys, "cancel");
	assert_true(json_object_object_get_ex(o, "warnings", &v));
	assert_true(json_object_is_type(v, json_type_array));
	assert_true(json_object_object_get_ex(o, "rolled_back", &v));
	assert_true(json_object_is_type(v, json_type_int));
}

/* The stored text (what task-status answers) and the listing's entry. */
static void check_task(tf_store *st, const char *id, const char *want_status, int has_cancel)
{
	tf_task_filter f = {.active_only = 0, .feed_id = NULL, .limit = 100};
	json_object *o = tu_task(st, id), *arr, *l;
	char *text = NULL;
	int found = 0;

	assert_task_shape(o, want_status);
	assert_int_equal(!tu_is_null(o, "cancel"), has_cancel);
	json_object_put(o);
	assert_int_equal(tf_task_list(st, &f, &text, NULL), TF_OK);
	l = tu_json(text);
	free(text);
	assert_true(json_object_object_get_ex(l, "tasks", &arr));
	for (size_t i = 0; i < json_object_array_length(arr); i++) {
		json_object *t = json_object_array_get_idx(arr, i);
		if (strcmp(tu_jstr(t, "task_id", NULL), id))
			continue;
		assert_task_shape(t, want_status);
		found = 1;
	}
	assert_true(found);
	json_object_put(l);
}

static void cancel_task(tf_store *st, const char *id, tf_cancel_mode m)
{
	char *j = NULL;
	assert_int_equal(tf_task_cancel(st, id, m, "tester", &j, NULL), TF_OK);
	free(j);
}

static void test_task_shape_every_state(void **state)
{
	tf_store *st = tu_new_store("shape", NULL, 0);
	char id[TF_UUID_LEN + 1];
	tf_task *t;
	(void)state;

	tu_simple_feed(st, "s");
	/* queued → running → completed, with warnings and progress */
	tu_create(st, "s", id);
	check_task(st, id, "queued", 0);
	tu_claim(st, id);
	t = load(st, id);
	tf_task_add_warning(t, "a warning");
	tf_task_set_progress(t, &(tf_progress){.percent = 5, .pages_done = 1, .pages_total = -1});
	save(st, t);
	tf_task_free(t);
	check_task(st, id, "running", 0);
	assert_int_equal(tf_runctl_finish(st, id, TF_ST_COMPLETED, 0, NULL), TF_OK);
	check_task(st, id, "completed", 0);
	/* running → stopping → stopped (forced) */
	tu_create(st, "s", id);
	tu_claim(st, id);
	cancel_task(st, id, TF_CANCEL_STOP_NOW);
	check_task(st, id, "stopping", 1);
	assert_int_equal(tf_runctl_finish(st, id, TF_ST_STOPPED, 1, NULL), TF_OK);
	check_task(st, id, "stopped", 1);
	/* queued → cancelling → cancelled */
	tu_create(st, "s", id);
	cancel_task(st, id, TF_CANCEL_JOB);
	check_task(st, id, "cancelling", 1);
	assert_int_equal(tf_runctl_finish(st, id, TF_ST_CANCELLED, 0, NULL), TF_OK);
	check_task(st, id, "cancelled", 1);
	/* running → failed with an error */
	tu_create(st, "s", id);
	tu_claim(st, id);
	assert_int_equal(tf_runctl_finish(st, id, TF_ST_FAILED, 0, "upstream gone"), TF_OK);
	check_task(st, id, "failed", 0);
	tf_store_close(st);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_transitions),
		cmocka_unit_test(test_cancel_modes_in_memory),
		cmocka_unit_test(test_cancel_in_store),
		cmocka_unit_test(test_read_peek),
		cmocka_unit_test(test_task_json_and_timestamps),
		cmocka_unit_test(test_truncation_keeps_utf8),
		cmocka_unit_test(test_warnings_capped),
		cmocka_unit_test(test_task_ids),
		cmocka_unit_test(test_one_active_run),
		cmocka_unit_test(test_create_race_across_processes),
		cmocka_unit_test(test_feed_signal),
		cmocka_unit_test(test_list_and_delete),
		cmocka_unit_test(test_task_shape_every_state),
	};
	tu_init("task");
	tu_seed();
	return tu_finish(cmocka_run_group_tests(tests, NULL, NULL));
}
