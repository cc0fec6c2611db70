/* lib/task.c and lib/runctl.c: the state machine, cancel modes, the task's
 * JSON, one active run per feed (also across processes), per-feed cancel
 * signals, listing, and run control (finish, reap, claim, queue). */
#include "testutil.h"

#include <regex.h>

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

static void create(tf_store *st, const char *feed, char *id)
{
	char active[TF_UUID_LEN + 1] = "";
	int rc = tf_task_create(st, feed, id, active);
	if (rc)
		fail_msg("tf_task_create(%s): %s (active %s)", feed, tf_strerror(rc), active);
}

static json_object *task_json(tf_task *t)
{
	size_t n;
	const char *s = tf_task_json(t, &n);
	json_object *o = NULL;
	assert_int_equal(tf_json_parse(s, n, 64, &o, NULL, 0), TF_OK);
	return o;
}

static const char *jstr(json_object *o, const char *path1, const char *path2)
{
	json_object *v = o;
	if (path1 && !json_object_object_get_ex(v, path1, &v))
		return NULL;
	if (path2 && (!v || !json_object_object_get_ex(v, path2, &v)))
		return NULL;
	return v && json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
}

static int is_null(json_object *o, const char *k)
{
	json_object *v = (json_object *)1;
	return json_object_object_get_ex(o, k, &v) && v == NULL;
}

static int rfc3339(const char *s)
{
	regex_t re;
	int ok;
	assert_int_equal(regcomp(&re,
	                         "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}"
	                         "(\\.[0-9]{1,9})?Z$",
	                         REG_EXTENDED | REG_NOSUB),
	                 0);
	ok = s && regexec(&re, s, 0, NULL, 0) == 0;
	regfree(&re);
	return ok;
}

/* An RFC 3339 UTC time within [lo, hi] microseconds (±1 s). */
static void assert_time_between(const char *s, int64_t lo, int64_t hi)
{
	int64_t us;
	if (!rfc3339(s))
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
	create(st, "f", id);
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
			assert_string_equal(jstr(o, "status", NULL), tf_status_name(tf_task_status(t)));
			if (tf_status_terminal(tf_task_status(t))) {
				assert_string_equal(jstr(o, "stage", NULL), "done");
				assert_non_null(jstr(o, "finished_at", NULL));
			} else {
				assert_true(is_null(o, "finished_at"));
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
	create(st, "f", id);
	t = load(st, id);
	assert_int_equal(tf_task_cancel_mode(t), TF_CANCEL_NONE);
	o = task_json(t);
	assert_true(is_null(o, "cancel"));
	json_object_put(o);
	/* queued --stop_now--> stopping */
	assert_int_equal(tf_task_request_cancel(t, TF_CANCEL_STOP_NOW, "alice"), TF_OK);
	assert_int_equal(tf_task_status(t), TF_ST_STOPPING);
	assert_int_equal(tf_task_cancel_mode(t), TF_CANCEL_STOP_NOW);
	o = task_json(t);
	assert_string_equal(jstr(o, "cancel", "mode"), "stop_now");
	assert_string_equal(jstr(o, "cancel", "requested_by"), "alice");
	assert_non_null(jstr(o, "cancel", "requested_at"));
	assert_string_equal(jstr(o, "stage", NULL), "stopping");
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
	before = strdup(jstr(o, "cancel", "acknowledged_at"));
	json_object_put(o);
	assert_true(rfc3339(before));
	usleep(2000);
	tf_task_ack_cancel(t);
	o = task_json(t);
	assert_string_equal(jstr(o, "cancel", "acknowledged_at"), before);
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
	create(st, "f", id);
	assert_int_equal(tf_task_cancel(st, id, TF_CANCEL_STOP_NOW, "u1", &json, &len), TF_OK);
	assert_non_null(json);
	assert_int_equal(strlen(json), len);
	o = tu_json(json);
	assert_string_equal(jstr(o, "status", NULL), "stopping");
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
	assert_string_equal(jstr(o, "status", NULL), "cancelling");
	assert_string_equal(jstr(o, "cancel", "mode"), "cancel_job");
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
	create(st, "f", id);
	t1 = tf_now_us();
	assert_true(tf_valid_uuid(id));
	o = tu_task(st, id);
	for (size_t i = 0; i < sizeof fields / sizeof *fields; i++)
		if (!json_object_object_get_ex(o, fields[i], NULL))
			fail_msg("task JSON lacks %s", fields[i]);
	assert_string_equal(jstr(o, "task_id", NULL), id);
	assert_string_equal(jstr(o, "feed_id", NULL), "f");
	assert_string_equal(jstr(o, "status", NULL), "queued");
	assert_string_equal(jstr(o, "stage", NULL), "queued");
	assert_time_between(jstr(o, "created_at", NULL), t0, t1);
	assert_time_between(jstr(o, "updated_at", NULL), t0, t1);
	assert_true(is_null(o, "started_at"));
	assert_true(is_null(o, "finished_at"));
	assert_true(is_null(o, "cancel"));
	assert_true(is_null(o, "error"));
	assert_true(json_object_object_get_ex(o, "progress", &p));
	for (size_t i = 0; i < sizeof pfields / sizeof *pfields; i++)
		if (!json_object_object_get_ex(p, pfields[i], NULL))
			fail_msg("progress lacks %s", pfields[i]);
	assert_true(is_null(p, "percent"));
	assert_true(is_null(p, "pages_total"));
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
		tf_task_get_progress(t, &got);
		assert_memory_equal(&got, &pr, sizeof pr);
	}
	assert_int_equal(tf_task_set_status(t, TF_ST_FAILED), TF_OK);
	tf_task_set_error(t, "upstream said 500");
	tf_task_set_rolled_back(t, 17);
	save(st, t);
	t1 = tf_now_us();
	tf_task_free(t);
	o = tu_task(st, id);
	assert_string_equal(jstr(o, "status", NULL), "failed");
	assert_string_equal(jstr(o, "stage", NULL), "done");
	assert_string_equal(jstr(o, "message", NULL), "page 3 of 10");
	assert_string_equal(jstr(o, "error", NULL), "upstream said 500");
	assert_true(json_object_object_get_ex(o, "rolled_back", &v));
	assert_int_equal(json_object_get_int64(v), 17);
	assert_time_between(jstr(o, "started_at", NULL), t0, t1);
	assert_time_between(jstr(o, "finished_at", NULL), t0, t1);
	assert_time_between(jstr(o, "updated_at", NULL), t0, t1);
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
	create(st, "f", id);
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
		assert_true(strlen(jstr(o, "message", NULL)) <= TF_MAX_MESSAGE_LEN);
		assert_true(strlen(jstr(o, "error", NULL)) <= TF_MAX_ERROR_LEN);
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
	create(st, "f", id);
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
		create(st, feed, made[i]);
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
	create(st, "f", a);
	assert_int_equal(tf_task_create(st, "f", b, act), TF_ECONFLICT);
	assert_string_equal(act, a);
	/* another feed runs in parallel */
	create(st, "g", c);
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
	create(st, "f", b);
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
	create(st, "f", a);
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
	create(st, "g", b);
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
		create(st, "f", c);
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
		create(st, "f", ids[i]);
		assert_int_equal(tf_runctl_finish(st, ids[i], TF_ST_FAILED, 0, "x"), TF_OK);
		if (i == 1)
			usleep(2000);
	}
	create(st, "g", ids[4]);
	assert_int_equal(tf_runctl_finish(st, ids[4], TF_ST_FAILED, 0, "x"), TF_OK);
	usleep(2000);
	cut = tf_now_us();
	usleep(2000);
	create(st, "f", ids[3]);
	create(st, "g", ids[5]);

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

/* ---- run control -------------------------------------------------------------------- */

#define SEED_TASK "5eed5eed-5eed-4eed-8eed-5eed5eed5eed"

struct apply_ctx {
	const char *feed, *task;
	tf_batch *b;
	tf_progress p;
};

static int apply_txn(tf_txn *txn, void *vctx)
{
	struct apply_ctx *c = vctx;
	c->p = (tf_progress){0};
	return tf_batch_apply(txn, c->feed, c->task, c->b, &c->p);
}

/* Writes n records key prefix/0..n-1 with version mod as task. */
static void write_records(tf_store *st, const char *feed, const char *task, const char *prefix,
                          int n, int64_t mod)
{
	struct apply_ctx c = {feed, task, NULL, {0}};
	assert_int_equal(tf_batch_new(&c.b), TF_OK);
	for (int i = 0; i < n; i++) {
		char key[64], obj[128];
		snprintf(key, sizeof key, "%s-%d", prefix, i);
		snprintf(obj, sizeof obj, "{\"id\":\"%s\",\"v\":%lld}", key, (long long)mod);
		assert_int_equal(tf_batch_add(c.b, key, "indicator", NULL, NULL, mod, obj, strlen(obj)),
		                 TF_OK);
	}
	assert_int_equal(tf_store_update(st, apply_txn, &c), TF_OK);
	tf_batch_free(c.b);
}

/* Feed "r" seeded with 50 records "s-*", kept (undo dropped). */
static tf_store *runctl_store(const char *what, char **export0)
{
	tf_store *st = tu_new_store(what, NULL, 0);
	tu_simple_feed(st, "r");
	tu_simple_feed(st, "q");
	tu_simple_feed(st, "p");
	write_records(st, "r", SEED_TASK, "s", 50, 1000);
	assert_int_equal(tf_store_undo_drop(st, SEED_TASK), TF_OK);
	*export0 = tu_export(st, NULL, NULL);
	return st;
}

static void claim(tf_store *st, const char *id)
{
	int claimed = 0;
	assert_int_equal(tf_runctl_claim(st, id, 100, &claimed), TF_OK);
	assert_int_equal(claimed, 1);
	assert_int_equal(tu_task_status(st, id), TF_ST_RUNNING);
}

/* A run that writes 20 records "new-*" and updates 10 of the seed, each time
 * with a newer version than before. */
static void do_some_work(tf_store *st, const char *id)
{
	static int64_t mod = 5000;
	mod += 10;
	write_records(st, "r", id, "new", 20, mod);
	write_records(st, "r", id, "s", 10, mod);
}

static void assert_slot_free(tf_store *st, const char *feed)
{
	size_t n;
	void *v = tu_raw_get(st, TF_TBL_ACTIVE, feed, strlen(feed), &n);
	if (v) {
		free(v);
		fail_msg("feed %s still has an active run", feed);
	}
}

static void assert_feed_last(tf_store *st, const char *feed, const char *id, const char *status)
{
	char *text = NULL;
	json_object *o;
	assert_int_equal(tf_feed_read(st, feed, &text, NULL), TF_OK);
	o = tu_json(text);
	free(text);
	assert_string_equal(tf_json_str(o, "last_task_id"), id);
	assert_string_equal(tf_json_str(o, "last_status"), status);
	assert_true(rfc3339(tf_json_str(o, "last_run_at")));
	assert_true(is_null(o, "active_task_id"));
	json_object_put(o);
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
	assert_string_equal(jstr(o, "status", NULL), want_status);
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
	assert_int_equal(!is_null(o, "cancel"), has_cancel);
	json_object_put(o);
	assert_int_equal(tf_task_list(st, &f, &text, NULL), TF_OK);
	l = tu_json(text);
	free(text);
	assert_true(json_object_object_get_ex(l, "tasks", &arr));
	for (size_t i = 0; i < json_object_array_length(arr); i++) {
		json_object *t = json_object_array_get_idx(arr, i);
		if (strcmp(jstr(t, "task_id", NULL), id))
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
	create(st, "s", id);
	check_task(st, id, "queued", 0);
	claim(st, id);
	t = load(st, id);
	tf_task_add_warning(t, "a warning");
	tf_task_set_progress(t, &(tf_progress){.percent = 5, .pages_done = 1, .pages_total = -1});
	save(st, t);
	tf_task_free(t);
	check_task(st, id, "running", 0);
	assert_int_equal(tf_runctl_finish(st, id, TF_ST_COMPLETED, 0, NULL), TF_OK);
	check_task(st, id, "completed", 0);
	/* running → stopping → stopped (forced) */
	create(st, "s", id);
	claim(st, id);
	cancel_task(st, id, TF_CANCEL_STOP_NOW);
	check_task(st, id, "stopping", 1);
	assert_int_equal(tf_runctl_finish(st, id, TF_ST_STOPPED, 1, NULL), TF_OK);
	check_task(st, id, "stopped", 1);
	/* queued → cancelling → cancelled */
	create(st, "s", id);
	cancel_task(st, id, TF_CANCEL_JOB);
	check_task(st, id, "cancelling", 1);
	assert_int_equal(tf_runctl_finish(st, id, TF_ST_CANCELLED, 0, NULL), TF_OK);
	check_task(st, id, "cancelled", 1);
	/* running → failed with an error */
	create(st, "s", id);
	claim(st, id);
	assert_int_equal(tf_runctl_finish(st, id, TF_ST_FAILED, 0, "upstream gone"), TF_OK);
	check_task(st, id, "failed", 0);
	tf_store_close(st);
}

static void test_finish(void **state)
{
	char *e0, *e1, *json;
	tf_store *st = runctl_store("finish", &e0);
	char id[TF_UUID_LEN + 1];
	json_object *o, *v;
	size_t n;
	(void)state;

	/* cancelled: rolled back exactly */
	create(st, "r", id);
	claim(st, id);
	do_some_work(st, id);
	assert_int_equal(tu_records_count(st, "r"), 70);
	assert_int_equal(tf_task_cancel(st, id, TF_CANCEL_JOB, "u", &json, NULL), TF_OK);
	free(json);
	assert_int_equal(tf_runctl_finish(st, id, TF_ST_CANCELLED, 1, NULL), TF_OK);
	o = tu_task(st, id);
	assert_string_equal(tf_json_str(o, "status"), "cancelled");
	assert_string_equal(tf_json_str(o, "stage"), "done");
	assert_true(json_object_object_get_ex(o, "rolled_back", &v));
	assert_int_equal(json_object_get_int64(v), 30);
	assert_true(rfc3339(jstr(o, "cancel", "acknowledged_at")));
	{
		json_object *c, *f;
		assert_true(json_object_object_get_ex(o, "cancel", &c));
		assert_true(json_object_object_get_ex(c, "forced", &f));
		assert_true(json_object_get_boolean(f));
	}
	json_object_put(o);
	e1 = tu_export(st, NULL, NULL);
	assert_string_equal(e1, e0);
	free(e1);
	assert_int_equal(tu_records_count(st, "r"), 50);
	assert_int_equal(tu_undo_count(st, id), 0);
	assert_int_equal(tf_runctl_release(st, id), TF_OK);
	assert_null(tu_raw_get(st, TF_TBL_RUNS, id, TF_UUID_LEN, &n));
	assert_slot_free(st, "r");
	assert_feed_last(st, "r", id, "cancelled");
	/* finishing again changes nothing */
	json = NULL;
	assert_int_equal(tf_task_read(st, id, &json, NULL), TF_OK);
	assert_int_equal(tf_runctl_finish(st, id, TF_ST_COMPLETED, 0, "late"), TF_OK);
	{
		char *again = NULL;
		assert_int_equal(tf_task_read(st, id, &again, NULL), TF_OK);
		assert_string_equal(again, json);
		free(again);
	}
	free(json);

	/* stopped: data kept, undo dropped */
	create(st, "r", id);
	claim(st, id);
	do_some_work(st, id);
	e1 = tu_export(st, NULL, NULL);
	assert_int_equal(tf_task_cancel(st, id, TF_CANCEL_STOP_NOW, "u", &json, NULL), TF_OK);
	free(json);
	assert_int_equal(tf_runctl_finish(st, id, TF_ST_STOPPED, 0, NULL), TF_OK);
	assert_int_equal(tu_task_status(st, id), TF_ST_STOPPED);
	{
		char *e2 = tu_export(st, NULL, NULL);
		assert_string_equal(e2, e1);
		free(e2);
	}
	free(e1);
	assert_int_equal(tu_undo_count(st, id), 0);
	assert_int_equal(tu_records_count(st, "r"), 70);
	assert_slot_free(st, "r");
	assert_feed_last(st, "r", id, "stopped");

	/* completed: data kept, undo dropped, error text kept when given */
	create(st, "r", id);
	claim(st, id);
	write_records(st, "r", id, "more", 5, 6000);
	assert_int_equal(tf_runctl_finish(st, id, TF_ST_COMPLETED, 0, NULL), TF_OK);
	assert_int_equal(tu_task_status(st, id), TF_ST_COMPLETED);
	assert_int_equal(tu_undo_count(st, id), 0);
	assert_int_equal(tu_records_count(st, "r"), 75);
	assert_feed_last(st, "r", id, "completed");

	/* failed keeps committed data and says why */
	create(st, "r", id);
	claim(st, id);
	write_records(st, "r", id, "fail", 5, 6000);
	assert_int_equal(tf_runctl_finish(st, id, TF_ST_FAILED, 0, "upstream broke"), TF_OK);
	o = tu_task(st, id);
	assert_string_equal(tf_json_str(o, "status"), "failed");
	assert_string_equal(tf_json_str(o, "error"), "upstream broke");
	json_object_put(o);
	assert_int_equal(tu_undo_count(st, id), 0);
	assert_int_equal(tu_records_count(st, "r"), 80);

	/* a stop_now turns a completion into a stop */
	create(st, "r", id);
	claim(st, id);
	assert_int_equal(tf_task_cancel(st, id, TF_CANCEL_STOP_NOW, "u", &json, NULL), TF_OK);
	free(json);
	assert_int_equal(tf_runctl_finish(st, id, TF_ST_COMPLETED, 0, NULL), TF_OK);
	assert_int_equal(tu_task_status(st, id), TF_ST_STOPPED);

	/* a cancel_job is honoured whatever the run ended as: rolled back */
	e1 = tu_export(st, NULL, NULL);
	create(st, "r", id);
	claim(st, id);
	do_some_work(st, id);
	assert_int_equal(tf_task_cancel(st, id, TF_CANCEL_JOB, "u", &json, NULL), TF_OK);
	free(json);
	assert_int_equal(tf_runctl_finish(st, id, TF_ST_FAILED, 0, "crashed"), TF_OK);
	assert_int_equal(tu_task_status(st, id), TF_ST_CANCELLED);
	{
		char *e2 = tu_export(st, NULL, NULL);
		assert_string_equal(e2, e1);
		free(e2);
	}
	free(e1);
	assert_int_equal(tu_undo_count(st, id), 0);

	/* A run that ends on a cancel its task never showed (it saw only the
	 * feed's signal): still ends properly, through stopping/cancelling. */
	e1 = tu_export(st, NULL, NULL);
	create(st, "r", id);
	claim(st, id);
	do_some_work(st, id);
	assert_int_equal(tf_runctl_finish(st, id, TF_ST_CANCELLED, 0, NULL), TF_OK);
	o = tu_task(st, id);
	assert_string_equal(tf_json_str(o, "status"), "cancelled");
	assert_string_equal(jstr(o, "cancel", "mode"), "cancel_job");
	json_object_put(o);
	{
		char *e2 = tu_export(st, NULL, NULL);
		assert_string_equal(e2, e1);
		free(e2);
	}
	free(e1);
	assert_int_equal(tu_undo_count(st, id), 0);
	assert_slot_free(st, "r");
	create(st, "r", id);
	claim(st, id);
	do_some_work(st, id);
	e1 = tu_export(st, NULL, NULL);
	assert_int_equal(tf_runctl_finish(st, id, TF_ST_STOPPED, 0, NULL), TF_OK);
	o = tu_task(st, id);
	assert_string_equal(tf_json_str(o, "status"), "stopped");
	assert_string_equal(jstr(o, "cancel", "mode"), "stop_now");
	json_object_put(o);
	{
		char *e2 = tu_export(st, NULL, NULL);
		assert_string_equal(e2, e1);
		free(e2);
	}
	free(e1);
	assert_int_equal(tu_undo_count(st, id), 0);
	assert_slot_free(st, "r");
	free(e0);
	tf_store_close(st);
}

/* Runs a child that waits, records its pid and start time, then reaps it. */
static void dead_process(pid_t *pid, uint64_t *start)
{
	int p[2];
	char c;
	assert_int_equal(pipe(p), 0);
	*pid = fork();
	assert_true(*pid >= 0);
	if (*pid == 0) {
		close(p[1]);
		if (read(p[0], &c, 1) < 0)
			_exit(1);
		_exit(0);
	}
	close(p[0]);
	*start = tf_proc_start(*pid);
	assert_true(*start != 0);
	assert_true(tf_proc_alive(*pid, *start));
	close(p[1]);
	assert_int_equal(tu_wait(*pid), 0);
	assert_false(tf_proc_alive(*pid, *start));
}

static void set_runinfo(tf_store *st, const char *id, const tf_runinfo *ri)
{
	assert_int_equal(tu_raw_put(st, TF_TBL_RUNS, id, TF_UUID_LEN, ri, sizeof *ri), TF_OK);
}

static void test_reap(void **state)
{
	char *e0, *json;
	tf_store *st = runctl_store("reap", &e0);
	char id[TF_UUID_LEN + 1];
	tf_runinfo ri = {0}, got;
	int reaped = -1;
	json_object *o;
	pid_t p1, p2;
	uint64_t s1, s2;
	(void)state;

	dead_process(&p1, &s1);
	dead_process(&p2, &s2);

	/* a live run (this process as its supervisor) is left alone */
	create(st, "r", id);
	claim(st, id);
	assert_int_equal(tf_runctl_info(st, id, &got), TF_OK);
	assert_int_equal(got.sup_pid, getpid());
	assert_int_equal(tf_runctl_reap(st, id, &reaped), TF_OK);
	assert_int_equal(reaped, 0);
	assert_int_equal(tu_task_status(st, id), TF_ST_RUNNING);
	/* its processes are gone → failed "worker lost", data kept */
	do_some_work(st, id);
	ri = (tf_runinfo){.sup_pid = p1, .worker_pid = p2, .sup_start = s1, .worker_start = s2};
	set_runinfo(st, id, &ri);
	assert_int_equal(tf_runctl_reap(st, id, &reaped), TF_OK);
	assert_int_equal(reaped, 1);
	o = tu_task(st, id);
	assert_string_equal(tf_json_str(o, "status"), "failed");
	assert_true(tu_contains(tf_json_str(o, "error"), "worker lost"));
	assert_true(rfc3339(tf_json_str(o, "finished_at")));
	json_object_put(o);
	assert_int_equal(tu_undo_count(st, id), 0);
	assert_int_equal(tu_records_count(st, "r"), 70);
	assert_slot_free(st, "r");
	/* reaping a finished task does nothing */
	assert_int_equal(tf_runctl_reap(st, id, &reaped), TF_OK);
	assert_int_equal(reaped, 0);
	free(e0);
	e0 = tu_export(st, NULL, NULL);

	/* pid reused by another process: our pid, but another start time */
	create(st, "r", id);
	claim(st, id);
	ri = (tf_runinfo){.sup_pid = getpid(), .sup_start = tf_proc_start(getpid()) + 12345};
	set_runinfo(st, id, &ri);
	assert_int_equal(tf_runctl_reap(st, id, &reaped), TF_OK);
	assert_int_equal(reaped, 1);
	assert_int_equal(tu_task_status(st, id), TF_ST_FAILED);

	/* lost while a cancel_job was pending → rolled back, cancelled */
	create(st, "r", id);
	claim(st, id);
	do_some_work(st, id);
	assert_int_equal(tf_task_cancel(st, id, TF_CANCEL_JOB, "u", &json, NULL), TF_OK);
	free(json);
	ri = (tf_runinfo){.sup_pid = p1, .worker_pid = p2, .sup_start = s1, .worker_start = s2};
	set_runinfo(st, id, &ri);
	assert_int_equal(tf_runctl_reap(st, id, &reaped), TF_OK);
	assert_int_equal(reaped, 1);
	assert_int_equal(tu_task_status(st, id), TF_ST_CANCELLED);
	{
		char *e1 = tu_export(st, NULL, NULL);
		assert_string_equal(e1, e0);
		free(e1);
	}
	assert_int_equal(tu_undo_count(st, id), 0);

	/* queued and not cancelled: waits for a slot, not reaped */
	create(st, "r", id);
	assert_int_equal(tf_runctl_reap(st, id, &reaped), TF_OK);
	assert_int_equal(reaped, 0);
	assert_int_equal(tu_task_status(st, id), TF_ST_QUEUED);
	/* cancelled while queued (stop_now) → stopped, never fetched */
	assert_int_equal(tf_task_cancel(st, id, TF_CANCEL_STOP_NOW, "u", &json, NULL), TF_OK);
	free(json);
	assert_int_equal(tf_runctl_reap(st, id, &reaped), TF_OK);
	assert_int_equal(reaped, 1);
	o = tu_task(st, id);
	assert_string_equal(tf_json_str(o, "status"), "stopped");
	assert_true(is_null(o, "started_at"));
	json_object_put(o);
	assert_slot_free(st, "r");
	{
		char next[TF_UUID_LEN + 1];
		assert_int_equal(tf_runctl_next_queued(st, next), TF_ENOTFOUND);
	}
	/* cancelled while queued (cancel_job) → cancelled */
	create(st, "r", id);
	assert_int_equal(tf_task_cancel(st, id, TF_CANCEL_JOB, "u", &json, NULL), TF_OK);
	free(json);
	/* a supervisor starting late does not claim it */
	{
		int claimed = 1;
		assert_int_equal(tf_runctl_claim(st, id, 4, &claimed), TF_OK);
		assert_int_equal(claimed, 0);
	}
	assert_int_equal(tf_runctl_reap(st, id, &reaped), TF_OK);
	assert_int_equal(reaped, 1);
	assert_int_equal(tu_task_status(st, id), TF_ST_CANCELLED);

	/* reap_all finds every lost run */
	{
		char a[TF_UUID_LEN + 1], b[TF_UUID_LEN + 1], c[TF_UUID_LEN + 1];
		int n = -1;
		create(st, "r", a);
		claim(st, a);
		create(st, "q", b);
		claim(st, b);
		create(st, "p", c);
		claim(st, c);
		set_runinfo(st, a, &ri);
		set_runinfo(st, c, &ri);
		assert_int_equal(tf_runctl_reap_all(st, &n), TF_OK);
		assert_int_equal(n, 2);
		assert_int_equal(tu_task_status(st, a), TF_ST_FAILED);
		assert_int_equal(tu_task_status(st, b), TF_ST_RUNNING);
		assert_int_equal(tu_task_status(st, c), TF_ST_FAILED);
	}
	free(e0);
	tf_store_close(st);
}

static void test_claim_and_queue(void **state)
{
	tf_store *st = tu_new_store("claim", NULL, 0);
	char ids[5][TF_UUID_LEN + 1], next[TF_UUID_LEN + 1];
	const char *feeds[5] = {"a", "b", "c", "d", "e"};
	int claimed, active, queued;
	pid_t p1;
	uint64_t s1;
	(void)state;

	for (int i = 0; i < 5; i++) {
		tu_simple_feed(st, feeds[i]);
		create(st, feeds[i], ids[i]);
	}
	assert_int_equal(tf_runctl_counts(st, &active, &queued), TF_OK);
	assert_int_equal(active, 0);
	assert_int_equal(queued, 5);
	/* oldest first */
	assert_int_equal(tf_runctl_next_queued(st, next), TF_OK);
	assert_string_equal(next, ids[0]);
	/* max_runs 2 */
	assert_int_equal(tf_runctl_claim(st, ids[0], 2, &claimed), TF_OK);
	assert_int_equal(claimed, 1);
	assert_int_equal(tf_runctl_next_queued(st, next), TF_OK);
	assert_string_equal(next, ids[1]);
	assert_int_equal(tf_runctl_claim(st, ids[1], 2, &claimed), TF_OK);
	assert_int_equal(claimed, 1);
	assert_int_equal(tf_runctl_claim(st, ids[2], 2, &claimed), TF_OK);
	assert_int_equal(claimed, 0);
	assert_int_equal(tu_task_status(st, ids[2]), TF_ST_QUEUED);
	assert_int_equal(tf_runctl_counts(st, &active, &queued), TF_OK);
	assert_int_equal(active, 2);
	assert_int_equal(queued, 3);
	/* the same task is never claimed twice */
	assert_int_equal(tf_runctl_claim(st, ids[0], 10, &claimed), TF_OK);
	assert_int_equal(claimed, 0);
	/* a finished run keeps its slot while its processes live (here: us) … */
	assert_int_equal(tf_runctl_finish(st, ids[0], TF_ST_COMPLETED, 0, NULL), TF_OK);
	assert_int_equal(tf_runctl_next_queued(st, next), TF_OK);
	assert_string_equal(next, ids[2]);
	assert_int_equal(tf_runctl_claim(st, ids[2], 2, &claimed), TF_OK);
	assert_int_equal(claimed, 0);
	/* … and once released, the next one gets it */
	assert_int_equal(tf_runctl_release(st, ids[0]), TF_OK);
	assert_int_equal(tf_runctl_claim(st, ids[2], 2, &claimed), TF_OK);
	assert_int_equal(claimed, 1);
	/* only live runs count: b's processes vanish (not yet reaped) */
	dead_process(&p1, &s1);
	{
		tf_runinfo ri = {.sup_pid = p1, .sup_start = s1};
		set_runinfo(st, ids[1], &ri);
	}
	assert_int_equal(tf_runctl_claim(st, ids[3], 2, &claimed), TF_OK);
	assert_int_equal(claimed, 1);
	assert_int_equal(tf_runctl_claim(st, ids[4], 2, &claimed), TF_OK);
	assert_int_equal(claimed, 0);
	assert_int_equal(tf_runctl_counts(st, &active, &queued), TF_OK);
	assert_int_equal(active, 2);
	assert_int_equal(queued, 1);
	/* set_worker records the worker's identity */
	{
		tf_runinfo ri;
		assert_int_equal(tf_runctl_set_worker(st, ids[3], getpid()), TF_OK);
		assert_int_equal(tf_runctl_info(st, ids[3], &ri), TF_OK);
		assert_int_equal(ri.worker_pid, getpid());
		assert_int_equal(ri.worker_start, tf_proc_start(getpid()));
		assert_int_equal(tf_runctl_set_worker(st, ids[4], getpid()), TF_ENOTFOUND);
	}
	tf_store_close(st);
}

/* Undo entries left by runs that already ended (a crash between the end and
 * the drop) are collected; those of active runs are not. */
static void test_gc_undo(void **state)
{
	char *e0;
	tf_store *st = runctl_store("gcundo", &e0);
	char done[TF_UUID_LEN + 1], live[TF_UUID_LEN + 1], ids[8][TF_UUID_LEN + 1];
	const char *gone = "00000000-dead-4000-8000-000000000000";
	uint64_t runs = 99;
	size_t n = 99;
	(void)state;

	create(st, "r", done);
	claim(st, done);
	assert_int_equal(tf_runctl_finish(st, done, TF_ST_COMPLETED, 0, NULL), TF_OK);
	write_records(st, "r", done, "late", 5, 9000);      /* journaled after the end */
	write_records(st, "q", gone, "orphan", 3, 9000);    /* its task is gone */
	create(st, "p", live);
	claim(st, live);
	write_records(st, "p", live, "live", 4, 9000);
	assert_int_equal(tu_undo_count(st, done), 6);   /* 5 records + the count */
	assert_int_equal(tf_runctl_gc_undo(st, &runs), TF_OK);
	assert_int_equal(runs, 2);
	assert_int_equal(tu_undo_count(st, done), 0);
	assert_int_equal(tu_undo_count(st, gone), 0);
	assert_int_equal(tu_undo_count(st, live), 5);   /* 4 records + the count */
	/* data stays */
	assert_int_equal(tu_records_count(st, "r"), 55);
	assert_int_equal(tu_records_count(st, "q"), 3);
	/* nothing more to collect */
	assert_int_equal(tf_runctl_gc_undo(st, &runs), TF_OK);
	assert_int_equal(runs, 0);
	/* the live run can still be rolled back exactly */
	{
		char *json = NULL, *e1;
		assert_int_equal(tf_task_cancel(st, live, TF_CANCEL_JOB, "u", &json, NULL), TF_OK);
		free(json);
		e1 = tu_export(st, "p", NULL);
		assert_int_equal(tf_runctl_finish(st, live, TF_ST_CANCELLED, 0, NULL), TF_OK);
		free(e1);
		e1 = tu_export(st, "p", NULL);
		assert_string_equal(e1, "");
		free(e1);
	}
	/* tf_runctl_queued: unclaimed queued tasks, oldest first */
	{
		char a[TF_UUID_LEN + 1], b[TF_UUID_LEN + 1], c[TF_UUID_LEN + 1];
		create(st, "r", a);
		create(st, "q", b);
		create(st, "p", c);
		claim(st, b);
		assert_int_equal(tf_runctl_queued(st, ids, 8, &n), TF_OK);
		assert_int_equal(n, 2);
		assert_string_equal(ids[0], a);
		assert_string_equal(ids[1], c);
		assert_int_equal(tf_runctl_queued(st, ids, 1, &n), TF_OK);
		assert_int_equal(n, 1);
		assert_string_equal(ids[0], a);
	}
	free(e0);
	tf_store_close(st);
}

/* ---- spawning and waking ------------------------------------------------------------ */

static void write_script(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
	assert_int_equal(chmod(path, 0755), 0);
}

static char *slurp(const char *path)
{
	char *buf = NULL;
	size_t cap = 0;
	FILE *f = fopen(path, "r");
	if (!f)
		return NULL;
	if (getdelim(&buf, &cap, '\0', f) < 0) {
		free(buf);
		buf = NULL;
	}
	fclose(f);
	return buf;
}

static long session_of(pid_t pid)
{
	char path[64], buf[512], *p;
	long sid = -1;
	FILE *f;
	snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
	if (!(f = fopen(path, "r")))
		return -1;
	if (fgets(buf, sizeof buf, f) && (p = strrchr(buf, ')')))
		sscanf(p + 2, "%*c %*d %*d %ld", &sid);
	fclose(f);
	return sid;
}

/* The run is started fully detached: its arguments, a new session, no fd of
 * the caller's, and no zombie left to the caller. */
static void test_spawn_detached(void **state)
{
	char dir[TU_PATH], script[480], out[480], text[2048];
	char *got = NULL;
	tf_config cfg;
	int marker, status;
	const char *id = "0badc0de-0000-4000-8000-000000000001";
	(void)state;

	tu_path(dir, sizeof dir, "spawn");
	assert_int_equal(mkdir(dir, 0755), 0);
	assert_true(strlen(dir) < 400);
	snprintf(script, sizeof script, "%.400s/fake-worker", dir);
	snprintf(out, sizeof out, "%.400s/report", dir);
	snprintf(text, sizeof text,
	         "#!/bin/sh\n"
	         "{ echo \"args: $*\"; echo \"sid: $(cut -d' ' -f6 /proc/$$/stat)\";\n"
	         "  echo \"fds: $(ls /proc/$$/fd | sort -n | tr '\\n' ' ')\"; } > %s.tmp\n"
	         "mv %s.tmp %s\n"
	         "sleep 1\n",   /* a run outlives the request that started it */
	         out, out, out);
	write_script(script, text);
	memset(&cfg, 0, sizeof cfg);
	snprintf(cfg.worker, sizeof cfg.worker, "%.480s", script);
	/* an fd without close-on-exec that must not leak into the run */
	marker = dup2(open("/dev/null", O_RDONLY), 57);
	assert_int_equal(marker, 57);
	{
		int64_t t0 = tf_mono_us();
		assert_int_equal(tf_runctl_spawn(&cfg, id), TF_OK);
		/* returns at once, not when the run ends */
		assert_true(tf_mono_us() - t0 < 700000);
	}
	/* no child of ours is left behind (not even a zombie) */
	assert_int_equal(waitpid(-1, &status, WNOHANG), -1);
	assert_int_equal(errno, ECHILD);
	for (int i = 0; i < 500 && !(got = slurp(out)); i++)
		usleep(10000);
	close(57);
	assert_non_null(got);
	if (getenv("TF_TEST_VERBOSE"))
		fprintf(stderr, "spawned run reported:\n%s", got);
	{
		char want[128];
		long sid = -1;
		char *p;
		snprintf(want, sizeof want, "args: supervise %s\n", id);
		if (!tu_contains(got, want))
			fail_msg("spawned run got: %s", got);
		p = strstr(got, "sid: ");
		assert_non_null(p);
		sid = strtol(p + 5, NULL, 10);
		assert_true(sid > 0);
		assert_true(sid != session_of(getpid()));
		p = strstr(got, "fds: ");
		assert_non_null(p);
		if (tu_contains(p, " 57 "))
			fail_msg("fd 57 leaked into the run: %s", p);
	}
	free(got);
	/* a worker that is not executable is an error */
	snprintf(cfg.worker, sizeof cfg.worker, "%.400s/missing", dir);
	assert_int_equal(tf_runctl_spawn(&cfg, id), TF_ESYS);
	assert_int_equal(waitpid(-1, &status, WNOHANG), -1);
}

static volatile sig_atomic_t usr1_seen;

static void on_usr1(int sig)
{
	(void)sig;
	usr1_seen = 1;
}

static void test_wake(void **state)
{
	tf_store *st = tu_new_store("wake", NULL, 0);
	char id[TF_UUID_LEN + 1];
	int ready[2], done[2], reaped;
	tf_runinfo ri = {0};
	pid_t pid, p1;
	uint64_t s1;
	char c;
	(void)state;

	tu_simple_feed(st, "w");
	create(st, "w", id);
	/* not started yet: nothing to signal, nothing changes */
	assert_int_equal(tf_runctl_wake(st, id), TF_OK);
	assert_int_equal(tu_task_status(st, id), TF_ST_QUEUED);
	claim(st, id);
	assert_int_equal(pipe(ready), 0);
	assert_int_equal(pipe(done), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct sigaction sa = {0};
		sa.sa_handler = on_usr1;
		sigaction(SIGUSR1, &sa, NULL);
		close(ready[0]);
		close(done[0]);
		if (write(ready[1], "r", 1) != 1)
			_exit(1);
		for (int i = 0; i < 1000 && !usr1_seen; i++)
			usleep(5000);
		if (!usr1_seen)
			_exit(2);
		if (write(done[1], "w", 1) != 1)
			_exit(3);
		_exit(0);
	}
	close(ready[1]);
	close(done[1]);
	assert_int_equal(read(ready[0], &c, 1), 1);
	/* the child is the run's worker; this process its supervisor */
	assert_int_equal(tf_runctl_set_worker(st, id, pid), TF_OK);
	usr1_seen = 0;
	{
		struct sigaction sa = {0}, old;
		sa.sa_handler = on_usr1;
		sigaction(SIGUSR1, &sa, &old);
		assert_int_equal(tf_runctl_wake(st, id), TF_OK);
		assert_int_equal(read(done[0], &c, 1), 1);
		for (int i = 0; i < 200 && !usr1_seen; i++)
			usleep(1000);
		sigaction(SIGUSR1, &old, NULL);
	}
	assert_true(usr1_seen);
	assert_int_equal(tu_wait(pid), 0);
	close(ready[0]);
	close(done[0]);
	/* both gone: waking is harmless and ends the lost run */
	dead_process(&p1, &s1);
	ri = (tf_runinfo){.sup_pid = p1, .sup_start = s1, .worker_pid = pid, .worker_start = 1};
	set_runinfo(st, id, &ri);
	assert_int_equal(tf_runctl_wake(st, id), TF_OK);
	assert_int_equal(tu_task_status(st, id), TF_ST_FAILED);
	assert_int_equal(tf_runctl_reap(st, id, &reaped), TF_OK);
	assert_int_equal(reaped, 0);
	tf_store_close(st);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_transitions),
		cmocka_unit_test(test_cancel_modes_in_memory),
		cmocka_unit_test(test_cancel_in_store),
		cmocka_unit_test(test_task_json_and_timestamps),
		cmocka_unit_test(test_truncation_keeps_utf8),
		cmocka_unit_test(test_warnings_capped),
		cmocka_unit_test(test_task_ids),
		cmocka_unit_test(test_one_active_run),
		cmocka_unit_test(test_create_race_across_processes),
		cmocka_unit_test(test_feed_signal),
		cmocka_unit_test(test_list_and_delete),
		cmocka_unit_test(test_task_shape_every_state),
		cmocka_unit_test(test_finish),
		cmocka_unit_test(test_reap),
		cmocka_unit_test(test_claim_and_queue),
		cmocka_unit_test(test_gc_undo),
		cmocka_unit_test(test_spawn_detached),
		cmocka_unit_test(test_wake),
	};
	tu_init("task");
	tu_seed();
	return tu_finish(cmocka_run_group_tests(tests, NULL, NULL));
}
