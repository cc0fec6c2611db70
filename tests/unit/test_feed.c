/* lib/feed.c: validation of API bodies, the API form (never the secret),
 * generated ids, conflicts with active runs, and deletion. */
#include "testutil.h"
#include "config.h"

#define SECRET "s3cr3t-XYZZY-d0-not-leak"

/* ---- helpers ---------------------------------------------------------------- */

static int create_body(tf_store *st, const char *body, char **out, char *err, size_t errlen)
{
	json_object *b = tu_json(body);
	int rc;
	*out = NULL;
	rc = tf_feed_create(st, b, out, NULL, err, errlen);
	json_object_put(b);
	return rc;
}

static int patch_body(tf_store *st, const char *id, const char *body, char **out, char *err,
                      size_t errlen)
{
	json_object *b = tu_json(body);
	int rc;
	*out = NULL;
	rc = tf_feed_patch(st, id, b, out, NULL, err, errlen);
	json_object_put(b);
	return rc;
}

static size_t feed_count(tf_store *st)
{
	char *text = NULL;
	json_object *o, *arr;
	size_t n;
	assert_int_equal(tf_feed_list(st, &text, NULL), TF_OK);
	o = tu_json(text);
	free(text);
	assert_true(json_object_object_get_ex(o, "feeds", &arr));
	n = json_object_array_length(arr);
	json_object_put(o);
	return n;
}

static int has_secret(const char *api_json)
{
	json_object *o = tu_json(api_json), *v;
	int r = -1;
	if (json_object_object_get_ex(o, "has_secret", &v) && json_object_is_type(v, json_type_boolean))
		r = json_object_get_boolean(v);
	json_object_put(o);
	return r;
}

static void assert_no_secret(const char *text, const char *what)
{
	if (tu_contains(text, SECRET) || tu_contains(text, "XYZZY") || tu_contains(text, "\"secret\""))
		fail_msg("%s leaks the secret: %s", what, text);
}

static const char *const taxii_body =
	"{\"id\":\"t1\",\"name\":\"TAXII one\",\"type\":\"taxii21\","
	"\"url\":\"https://taxii.example.test/api/\",\"collection\":\"c-1\","
	"\"username\":\"bob\",\"secret\":\"" SECRET "\"}";

/* ---- secrets ---------------------------------------------------------------------- */

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


struct load_ctx {
	const char *id;
	json_object *f;
};

static int load_txn(tf_txn *txn, void *vctx)
{
	struct load_ctx *c = vctx;
	return tf_feed_load(txn, c->id, &c->f);
}

static void test_secret_never_returned(void **state)
{
	tf_store *st = tu_new_store("secret", NULL, 0);
	char *out = NULL, err[256] = "", task[TF_UUID_LEN + 1], act[TF_UUID_LEN + 1];
	struct load_ctx lc = {"t1", NULL};
	(void)state;

	assert_int_equal(create_body(st, taxii_body, &out, err, sizeof err), TF_OK);
	assert_no_secret(out, "tf_feed_create");
	assert_int_equal(has_secret(out), 1);
	free(out);
	assert_int_equal(tf_feed_read(st, "t1", &out, NULL), TF_OK);
	assert_no_secret(out, "tf_feed_read");
	assert_int_equal(has_secret(out), 1);
	free(out);
	assert_int_equal(tf_feed_list(st, &out, NULL), TF_OK);
	assert_no_secret(out, "tf_feed_list");
	assert_true(tu_contains(out, "\"has_secret\":true"));
	free(out);
	/* patching something else, then the secret itself */
	assert_int_equal(patch_body(st, "t1", "{\"name\":\"renamed\"}", &out, err, sizeof err), TF_OK);
	assert_no_secret(out, "tf_feed_patch");
	assert_int_equal(has_secret(out), 1);
	free(out);
	assert_int_equal(patch_body(st, "t1", "{\"secret\":\"other-" SECRET "\"}", &out, err,
	                            sizeof err),
	                 TF_OK);
	assert_no_secret(out, "tf_feed_patch (new secret)");
	free(out);
	/* the worker still gets it from the stored form */
	assert_int_equal(tf_store_view(st, load_txn, &lc), TF_OK);
	assert_string_equal(tf_json_str(lc.f, "secret"), "other-" SECRET);
	json_object_put(lc.f);
	/* errors do not echo it either */
	assert_int_equal(patch_body(st, "t1", "{\"secret\":\"" SECRET "\\u0001\"}", &out, err,
	                            sizeof err),
	                 TF_EINVAL);
	assert_no_secret(err, "the error message");
	assert_null(out);
	/* records and task JSON never carry it */
	{
		struct apply_ctx c = {"t1", task, NULL, {0}};
		char *exp;
		assert_int_equal(tf_task_create(st, "t1", task, act), TF_OK);
		assert_int_equal(tf_batch_new(&c.b), TF_OK);
		assert_int_equal(tf_batch_add(c.b, "indicator--1", "indicator", "1.2.3.4", NULL, 5,
		                              "{\"x\":1}", 7),
		                 TF_OK);
		assert_int_equal(tf_store_update(st, apply_txn, &c), TF_OK);
		tf_batch_free(c.b);
		exp = tu_export(st, NULL, NULL);
		assert_no_secret(exp, "tf_records_export");
		free(exp);
		assert_int_equal(tf_task_read(st, task, &out, NULL), TF_OK);
		assert_no_secret(out, "task JSON");
		free(out);
		assert_int_equal(tf_feed_read(st, "t1", &out, NULL), TF_OK);
		assert_no_secret(out, "tf_feed_read during a run");
		free(out);
		assert_int_equal(tf_runctl_finish(st, task, TF_ST_FAILED, 0, "x"), TF_OK);
	}
	/* null clears it */
	assert_int_equal(patch_body(st, "t1", "{\"secret\":null}", &out, err, sizeof err), TF_OK);
	assert_int_equal(has_secret(out), 0);
	free(out);
	/* an empty secret is no secret */
	assert_int_equal(patch_body(st, "t1", "{\"secret\":\"\"}", &out, err, sizeof err), TF_OK);
	assert_int_equal(has_secret(out), 0);
	free(out);
	/* a feed created without one */
	tu_simple_feed(st, "plain");
	assert_int_equal(tf_feed_read(st, "plain", &out, NULL), TF_OK);
	assert_int_equal(has_secret(out), 0);
	free(out);
	tf_store_close(st);
}

/* The export of a feed with a secret, after a run wrote records. */
static void test_export_has_no_secret(void **state)
{
	tf_store *st = tu_new_store("secretexp", NULL, 0);
	char *out = NULL, err[256], task[TF_UUID_LEN + 1], act[TF_UUID_LEN + 1];
	struct apply_ctx c = {"t1", NULL, NULL, {0}};
	(void)state;

	assert_int_equal(create_body(st, taxii_body, &out, err, sizeof err), TF_OK);
	free(out);
	assert_int_equal(tf_task_create(st, "t1", task, act), TF_OK);
	c.task = task;
	assert_int_equal(tf_batch_new(&c.b), TF_OK);
	for (int i = 0; i < 10; i++) {
		char key[32];
		snprintf(key, sizeof key, "indicator--%d", i);
		assert_int_equal(tf_batch_add(c.b, key, "indicator", "10.0.0.1", NULL, 100 + i,
		                              "{\"type\":\"indicator\"}", 20),
		                 TF_OK);
	}
	assert_int_equal(tf_store_update(st, apply_txn, &c), TF_OK);
	tf_batch_free(c.b);
	out = tu_export(st, "t1", NULL);
	assert_int_equal(tu_count_lines(out, strlen(out)), 10);
	assert_no_secret(out, "tf_records_export");
	free(out);
	out = tu_export(st, NULL, NULL);
	assert_no_secret(out, "tf_records_export(all)");
	free(out);
	assert_int_equal(tf_records_page(st, "t1", NULL, 100, &out, NULL), TF_OK);
	assert_no_secret(out, "tf_records_page");
	free(out);
	assert_int_equal(tf_feed_read(st, "t1", &out, NULL), TF_OK);
	assert_no_secret(out, "tf_feed_read");
	assert_true(tu_contains(out, "\"indicator_count\":10"));
	free(out);
	tf_store_close(st);
}

/* ---- validation -------------------------------------------------------------------- */

/* A base valid body with one field replaced: "%s" is the field's JSON. */
struct bad_case {
	const char *body;
	const char *field;   /* must appear in the error, followed by ':' */
};

#define BASE_PRE "{\"name\":\"n\",\"type\":\"stix_bundle\",\"url\":\"https://e.test/b.json\""
#define WITH(x) BASE_PRE "," x "}"

static void test_validation(void **state)
{
	static char long_name[TF_MAX_NAME + 256], long_url[TF_MAX_URL + 256], long_field[TF_MAX_FIELD + 256];
	static char long_id[256];
	tf_store *st = tu_new_store("valid", NULL, 0);
	(void)state;

	snprintf(long_name, sizeof long_name, "{\"name\":\"%0*d\",\"type\":\"otx\",\"url\":\"https://x.test\"}",
	         TF_MAX_NAME + 1, 0);
	snprintf(long_url, sizeof long_url, "{\"name\":\"n\",\"type\":\"otx\",\"url\":\"https://%0*d\"}",
	         TF_MAX_URL, 0);
	snprintf(long_field, sizeof long_field, WITH("\"username\":\"%0*d\""), TF_MAX_FIELD + 1, 0);
	snprintf(long_id, sizeof long_id, WITH("\"id\":\"a%0*d\""), TF_MAX_FEED_ID, 0);
	{
		const struct bad_case cases[] = {
			{"[]", "body"},
			{"\"feed\"", "body"},
			{"{}", "name"},
			/* id */
			{WITH("\"id\":5"), "id"},
			{WITH("\"id\":\"\""), "id"},
			{WITH("\"id\":\"Upper\""), "id"},
			{WITH("\"id\":\"-lead\""), "id"},
			{WITH("\"id\":\"_lead\""), "id"},
			{WITH("\"id\":\"sp ace\""), "id"},
			{WITH("\"id\":\"dot.ted\""), "id"},
			{WITH("\"id\":\"sl/ash\""), "id"},
			{WITH("\"id\":\"tasks\""), "id"},
			{WITH("\"id\":\"task-status\""), "id"},
			{WITH("\"id\":\"cancel-task\""), "id"},
			{WITH("\"id\":null"), "id"},
			{WITH("\"id\":true"), "id"},
			{long_id, "id"},
			/* name */
			{"{\"type\":\"otx\",\"url\":\"https://x.test\"}", "name"},
			{"{\"name\":5,\"type\":\"otx\",\"url\":\"https://x.test\"}", "name"},
			{"{\"name\":\"\",\"type\":\"otx\",\"url\":\"https://x.test\"}", "name"},
			{"{\"name\":null,\"type\":\"otx\",\"url\":\"https://x.test\"}", "name"},
			{"{\"name\":\"a\\nb\",\"type\":\"otx\",\"url\":\"https://x.test\"}", "name"},
			{"{\"name\":[\"n\"],\"type\":\"otx\",\"url\":\"https://x.test\"}", "name"},
			{long_name, "name"},
			/* type */
			{"{\"name\":\"n\",\"url\":\"https://x.test\"}", "type"},
			{"{\"name\":\"n\",\"type\":\"rss\",\"url\":\"https://x.test\"}", "type"},
			{"{\"name\":\"n\",\"type\":\"TAXII21\",\"url\":\"https://x.test\"}", "type"},
			{"{\"name\":\"n\",\"type\":1,\"url\":\"https://x.test\"}", "type"},
			{"{\"name\":\"n\",\"type\":null,\"url\":\"https://x.test\"}", "type"},
			/* url */
			{"{\"name\":\"n\",\"type\":\"otx\"}", "url"},
			{"{\"name\":\"n\",\"type\":\"otx\",\"url\":\"ftp://x.test/\"}", "url"},
			{"{\"name\":\"n\",\"type\":\"otx\",\"url\":\"file:///etc/passwd\"}", "url"},
			{"{\"name\":\"n\",\"type\":\"otx\",\"url\":\"x.test\"}", "url"},
			{"{\"name\":\"n\",\"type\":\"otx\",\"url\":\"https://x.test/a b\"}", "url"},
			{"{\"name\":\"n\",\"type\":\"otx\",\"url\":\"\"}", "url"},
			{"{\"name\":\"n\",\"type\":\"otx\",\"url\":42}", "url"},
			{"{\"name\":\"n\",\"type\":\"otx\",\"url\":null}", "url"},
			{long_url, "url"},
			/* collection */
			{"{\"name\":\"n\",\"type\":\"taxii21\",\"url\":\"https://x.test\"}", "collection"},
			{"{\"name\":\"n\",\"type\":\"taxii21\",\"url\":\"https://x.test\",\"collection\":null}",
			 "collection"},
			{WITH("\"collection\":7"), "collection"},
			/* username, secret */
			{WITH("\"username\":7"), "username"},
			{WITH("\"username\":{}"), "username"},
			{long_field, "username"},
			{WITH("\"secret\":7"), "secret"},
			{WITH("\"secret\":false"), "secret"},
			{WITH("\"secret\":[\"a\"]"), "secret"},
			/* enabled */
			{WITH("\"enabled\":\"yes\""), "enabled"},
			{WITH("\"enabled\":1"), "enabled"},
			{WITH("\"enabled\":null"), "enabled"},
			/* interval_s */
			{WITH("\"interval_s\":-1"), "interval_s"},
			{WITH("\"interval_s\":\"60\""), "interval_s"},
			{WITH("\"interval_s\":1.5"), "interval_s"},
			{WITH("\"interval_s\":true"), "interval_s"},
			{WITH("\"interval_s\":31622401"), "interval_s"},
			{WITH("\"interval_s\":null"), "interval_s"},
			/* options */
			{WITH("\"options\":[]"), "options"},
			{WITH("\"options\":\"x\""), "options"},
			{WITH("\"options\":null"), "options"},
			{WITH("\"options\":{\"page_size\":0}"), "options.page_size"},
			{WITH("\"options\":{\"page_size\":10001}"), "options.page_size"},
			{WITH("\"options\":{\"page_size\":\"10\"}"), "options.page_size"},
			{WITH("\"options\":{\"requests_per_minute\":0}"), "options.requests_per_minute"},
			{WITH("\"options\":{\"requests_per_minute\":2.5}"), "options.requests_per_minute"},
			{WITH("\"options\":{\"targets\":\"1.2.3.4\"}"), "options.targets"},
			{WITH("\"options\":{\"targets\":[1]}"), "options.targets"},
			{WITH("\"options\":{\"targets\":[\"\"]}"), "options.targets"},
			{WITH("\"options\":{\"grace_period_s\":-1}"), "options.grace_period_s"},
			{WITH("\"options\":{\"grace_period_s\":3601}"), "options.grace_period_s"},
			{WITH("\"options\":{\"ttl_days\":0}"), "options.ttl_days"},
			{WITH("\"options\":{\"ttl_days\":3651}"), "options.ttl_days"},
			{WITH("\"options\":{\"ttl_days\":\"7\"}"), "options.ttl_days"},
			{WITH("\"options\":{\"bogus\":1}"), "options.bogus"},
			/* unknown fields */
			{WITH("\"colour\":\"red\""), "colour"},
			{WITH("\"Secret\":\"x\""), "Secret"},
			{WITH("\"password\":\"x\""), "password"},
		};
		for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
			char *out = (char *)1, err[512] = "";
			int rc = create_body(st, cases[i].body, &out, err, sizeof err);
			size_t fl = strlen(cases[i].field);
			if (rc != TF_EINVAL)
				fail_msg("case %zu (%s): expected TF_EINVAL, got %s", i, cases[i].body,
				         tf_strerror(rc));
			/* "field: reason" or "field[…]: reason" */
			if (strncmp(err, cases[i].field, fl) || (err[fl] != ':' && err[fl] != '['))
				fail_msg("case %zu (%s): error '%s' does not name %s", i, cases[i].body, err,
				         cases[i].field);
			assert_null(out);
		}
	}
	/* nothing was stored by any rejected body */
	assert_int_equal(feed_count(st), 0);
	/* boundaries that are fine */
	{
		const char *good[] = {
			WITH("\"id\":\"a\""),
			WITH("\"id\":\"0-9_z\""),
			WITH("\"interval_s\":0"),
			WITH("\"interval_s\":31622400"),
			WITH("\"enabled\":false"),
			WITH("\"options\":{\"page_size\":1,\"requests_per_minute\":1000,"
			     "\"targets\":[\"1.2.3.4\",\"example.test\"],\"grace_period_s\":0}"),
			WITH("\"options\":{\"page_size\":10000}"),
			WITH("\"username\":\"\""),
			WITH("\"url\":\"HTTP://upper.test/\""),
			"{\"name\":\"n\",\"type\":\"taxii21\",\"url\":\"http://x.test\",\"collection\":\"c\"}",
			"{\"name\":\"n\",\"type\":\"virustotal\",\"url\":\"https://x.test\"}",
		};
		size_t n = sizeof good / sizeof *good;
		for (size_t i = 0; i < n; i++) {
			char *out = NULL, err[512] = "";
			int rc = create_body(st, good[i], &out, err, sizeof err);
			if (rc != TF_OK)
				fail_msg("good case %zu (%s) rejected: %s", i, good[i], err);
			free(out);
		}
		/* a 64-character id */
		{
			char body[300], *out = NULL, err[256] = "";
			snprintf(body, sizeof body, WITH("\"id\":\"%064d\""), 7);
			assert_int_equal(create_body(st, body, &out, err, sizeof err), TF_OK);
			free(out);
		}
		assert_int_equal(feed_count(st), n + 1);
	}
	/* the same checks apply to a patch, and leave the feed unchanged */
	{
		char *before = NULL, *after = NULL, *out = NULL, err[256] = "";
		assert_int_equal(tf_feed_read(st, "a", &before, NULL), TF_OK);
		assert_int_equal(patch_body(st, "a", "{\"url\":\"gopher://x\"}", &out, err, sizeof err),
		                 TF_EINVAL);
		assert_true(tu_contains(err, "url:"));
		assert_int_equal(patch_body(st, "a", "{\"name\":\"ok\",\"interval_s\":-5}", &out, err,
		                            sizeof err),
		                 TF_EINVAL);
		assert_true(tu_contains(err, "interval_s:"));
		assert_int_equal(patch_body(st, "a", "{\"nope\":1}", &out, err, sizeof err), TF_EINVAL);
		assert_true(tu_contains(err, "nope:"));
		assert_int_equal(patch_body(st, "a", "{\"id\":\"b\"}", &out, err, sizeof err), TF_EINVAL);
		assert_true(tu_contains(err, "id:"));
		assert_int_equal(patch_body(st, "a", "{\"type\":\"taxii21\"}", &out, err, sizeof err),
		                 TF_EINVAL);
		assert_true(tu_contains(err, "collection:"));
		assert_int_equal(patch_body(st, "a", "[1]", &out, err, sizeof err), TF_EINVAL);
		assert_null(out);
		assert_int_equal(tf_feed_read(st, "a", &after, NULL), TF_OK);
		assert_string_equal(after, before);
		free(before);
		free(after);
		/* the same id is fine */
		assert_int_equal(patch_body(st, "a", "{\"id\":\"a\",\"interval_s\":60}", &out, err,
		                            sizeof err),
		                 TF_OK);
		assert_true(tu_contains(out, "\"interval_s\":60"));
		free(out);
	}
	/* no error buffer at all: still a clean TF_EINVAL */
	{
		json_object *b = tu_json("{\"name\":5}");
		char *out = NULL;
		assert_int_equal(tf_feed_create(st, b, &out, NULL, NULL, 0), TF_EINVAL);
		assert_null(out);
		json_object_put(b);
	}
	tf_store_close(st);
}

static void test_read_only_fields_ignored(void **state)
{
	tf_store *st = tu_new_store("readonly", NULL, 0);
	char *out = NULL, err[256] = "";
	json_object *o, *v;
	(void)state;

	assert_int_equal(
		create_body(st,
		            WITH("\"id\":\"ro\",\"has_secret\":true,\"last_task_id\":\"x\","
		                 "\"last_status\":\"completed\",\"last_run_at\":\"yesterday\","
		                 "\"active_task_id\":\"abc\",\"indicator_count\":999,"
		                 "\"created_at\":\"bogus\",\"updated_at\":\"bogus\""),
		            &out, err, sizeof err),
		TF_OK);
	o = tu_json(out);
	free(out);
	assert_string_equal(tf_json_str(o, "id"), "ro");
	assert_true(json_object_object_get_ex(o, "has_secret", &v));
	assert_false(json_object_get_boolean(v));
	assert_true(json_object_object_get_ex(o, "indicator_count", &v));
	assert_int_equal(json_object_get_int64(v), 0);
	assert_true(json_object_object_get_ex(o, "active_task_id", &v));
	assert_null(v);
	assert_true(json_object_object_get_ex(o, "last_task_id", &v));
	assert_null(v);
	assert_true(json_object_object_get_ex(o, "last_status", &v));
	assert_null(v);
	assert_string_not_equal(tf_json_str(o, "created_at"), "bogus");
	assert_string_not_equal(tf_json_str(o, "updated_at"), "bogus");
	/* the API fields are all there */
	{
		static const char *const fields[] = {
			"id", "name", "type", "url", "enabled", "interval_s", "has_secret",
			"last_task_id", "last_status", "last_run_at", "active_task_id", "indicator_count"};
		for (size_t i = 0; i < sizeof fields / sizeof *fields; i++)
			if (!json_object_object_get_ex(o, fields[i], NULL))
				fail_msg("feed JSON lacks %s", fields[i]);
	}
	json_object_put(o);
	/* a script may send back what it read */
	assert_int_equal(tf_feed_read(st, "ro", &out, NULL), TF_OK);
	{
		char *again = NULL;
		json_object *b = tu_json(out);
		free(out);
		assert_int_equal(tf_feed_patch(st, "ro", b, &again, NULL, err, sizeof err), TF_OK);
		json_object_put(b);
		free(again);
	}
	tf_store_close(st);
}

static void test_id_generation(void **state)
{
	tf_store *st = tu_new_store("ids", NULL, 0);
	struct {
		const char *name, *want;
	} cases[] = {
		{"Demo TAXII 2.1", "demo-taxii-2-1"},
		{"Demo TAXII 2.1", "demo-taxii-2-1-2"},
		{"Demo TAXII 2.1", "demo-taxii-2-1-3"},
		{"  --Spaced__Out!!  ", "spaced-out"},
		{"Tasks", NULL},         /* reserved: something else, valid */
		{"Task Status", NULL},
		{"Cancel Task", NULL},
		{"!!!", NULL},
		{"Ünïcödé ñame", NULL},
	};
	(void)state;

	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
		char body[256], *out = NULL, err[256] = "";
		const char *id;
		json_object *o;
		snprintf(body, sizeof body,
		         "{\"name\":\"%s\",\"type\":\"otx\",\"url\":\"https://otx.test\"}", cases[i].name);
		assert_int_equal(create_body(st, body, &out, err, sizeof err), TF_OK);
		o = tu_json(out);
		free(out);
		id = tf_json_str(o, "id");
		if (!tf_valid_feed_id(id))
			fail_msg("generated id '%s' for '%s' is not valid", id, cases[i].name);
		if (cases[i].want)
			assert_string_equal(id, cases[i].want);
		assert_string_not_equal(id, "tasks");
		assert_string_not_equal(id, "task-status");
		assert_string_not_equal(id, "cancel-task");
		json_object_put(o);
	}
	/* a long name still gives a valid id, and unique ones */
	for (int i = 0; i < 3; i++) {
		char body[600], name[400], *out = NULL, err[256] = "";
		json_object *o;
		memset(name, 'x', 199);
		name[199] = '\0';
		snprintf(body, sizeof body, "{\"name\":\"%s\",\"type\":\"otx\",\"url\":\"https://o.test\"}",
		         name);
		assert_int_equal(create_body(st, body, &out, err, sizeof err), TF_OK);
		o = tu_json(out);
		free(out);
		assert_true(tf_valid_feed_id(tf_json_str(o, "id")));
		json_object_put(o);
	}
	assert_int_equal(feed_count(st), sizeof cases / sizeof *cases + 3);
	tf_store_close(st);
}

static void test_duplicates(void **state)
{
	tf_store *st = tu_new_store("dup", NULL, 0);
	char *out = NULL, err[256] = "";
	(void)state;

	assert_int_equal(create_body(st, WITH("\"id\":\"same\""), &out, err, sizeof err), TF_OK);
	free(out);
	err[0] = '\0';
	assert_int_equal(create_body(st, WITH("\"id\":\"same\""), &out, err, sizeof err), TF_EEXIST);
	assert_null(out);
	assert_true(tu_contains(err, "same"));
	/* a generated id never collides with a given one */
	assert_int_equal(create_body(st, "{\"name\":\"Same\",\"type\":\"otx\",\"url\":\"https://o.test\"}",
	                             &out, err, sizeof err),
	                 TF_OK);
	assert_true(tu_contains(out, "\"id\":\"same-2\""));
	free(out);
	assert_int_equal(feed_count(st), 2);
	tf_store_close(st);
}

static void test_conflicts_while_running(void **state)
{
	tf_store *st = tu_new_store("busy", NULL, 0);
	char *out = NULL, *before = NULL, *after = NULL, err[256] = "";
	char task[TF_UUID_LEN + 1], act[TF_UUID_LEN + 1];
	(void)state;

	tu_simple_feed(st, "busy");
	assert_int_equal(tf_task_create(st, "busy", task, act), TF_OK);
	assert_int_equal(tf_feed_read(st, "busy", &before, NULL), TF_OK);
	assert_true(tu_contains(before, task));   /* active_task_id */
	assert_int_equal(patch_body(st, "busy", "{\"name\":\"new\"}", &out, err, sizeof err),
	                 TF_ECONFLICT);
	assert_null(out);
	assert_int_equal(tf_feed_delete(st, "busy"), TF_ECONFLICT);
	/* also while it is stopping */
	{
		char *j = NULL;
		assert_int_equal(tf_task_cancel(st, task, TF_CANCEL_STOP_NOW, "u", &j, NULL), TF_OK);
		free(j);
	}
	assert_int_equal(patch_body(st, "busy", "{\"name\":\"new\"}", &out, err, sizeof err),
	                 TF_ECONFLICT);
	assert_int_equal(tf_feed_delete(st, "busy"), TF_ECONFLICT);
	assert_int_equal(tf_feed_read(st, "busy", &after, NULL), TF_OK);
	assert_true(tu_contains(after, "\"name\":\"Feed busy\""));
	free(before);
	free(after);
	/* unknown feeds */
	assert_int_equal(patch_body(st, "nope", "{\"name\":\"x\"}", &out, err, sizeof err),
	                 TF_ENOTFOUND);
	assert_int_equal(tf_feed_delete(st, "nope"), TF_ENOTFOUND);
	assert_int_equal(tf_feed_read(st, "nope", &out, NULL), TF_ENOTFOUND);
	assert_null(out);
	/* once the run ended both work */
	assert_int_equal(tf_runctl_finish(st, task, TF_ST_STOPPED, 0, NULL), TF_OK);
	assert_int_equal(patch_body(st, "busy", "{\"name\":\"new\"}", &out, err, sizeof err), TF_OK);
	assert_true(tu_contains(out, "\"name\":\"new\""));
	assert_true(tu_contains(out, "\"last_status\":\"stopped\""));
	free(out);
	assert_int_equal(tf_feed_delete(st, "busy"), TF_OK);
	assert_int_equal(tf_feed_read(st, "busy", &out, NULL), TF_ENOTFOUND);
	/* its finished history stays */
	assert_int_equal(tf_task_read(st, task, &out, NULL), TF_OK);
	free(out);
	tf_store_close(st);
}

struct cursor_ctx {
	const char *feed, *task;
	json_object *cur;
};

static int put_cursor_txn(tf_txn *txn, void *vctx)
{
	struct cursor_ctx *c = vctx;
	return tf_records_put_cursor(txn, c->feed, c->task, c->cur);
}

static int get_cursor_txn(tf_txn *txn, void *vctx)
{
	struct cursor_ctx *c = vctx;
	return tf_feed_cursor(txn, c->feed, &c->cur);
}

static void test_delete_removes_data(void **state)
{
	tf_store *st = tu_new_store("delete", NULL, 0);
	char task[TF_UUID_LEN + 1], act[TF_UUID_LEN + 1], *exp;
	struct apply_ctx c = {"gone", NULL, NULL, {0}};
	struct cursor_ctx cc = {"gone", NULL, NULL};
	(void)state;

	tu_simple_feed(st, "gone");
	tu_simple_feed(st, "gone-not");   /* a neighbour whose keys sort right after */
	tu_simple_feed(st, "stays");
	assert_int_equal(tf_batch_new(&c.b), TF_OK);
	for (int i = 0; i < 30; i++) {
		char key[32];
		snprintf(key, sizeof key, "k%d", i);
		assert_int_equal(tf_batch_add(c.b, key, "indicator", NULL, NULL, 1, "{}", 2), TF_OK);
	}
	const char *feeds[] = {"gone", "gone-not", "stays"};
	for (int f = 0; f < 3; f++) {
		assert_int_equal(tf_task_create(st, feeds[f], task, act), TF_OK);
		c.feed = cc.feed = feeds[f];
		c.task = cc.task = task;
		assert_int_equal(tf_store_update(st, apply_txn, &c), TF_OK);
		cc.cur = tu_json("{\"added_after\":\"2026-01-01T00:00:00Z\"}");
		assert_int_equal(tf_store_update(st, put_cursor_txn, &cc), TF_OK);
		json_object_put(cc.cur);
		assert_int_equal(tf_runctl_finish(st, task, TF_ST_COMPLETED, 0, NULL), TF_OK);
	}
	tf_batch_free(c.b);
	assert_int_equal(tu_records_count(st, "gone"), 30);
	assert_int_equal(tf_feed_delete(st, "gone"), TF_OK);
	assert_int_equal(tu_records_count(st, "gone"), 0);
	exp = tu_export(st, "gone", NULL);
	assert_string_equal(exp, "");
	free(exp);
	cc.feed = "gone";
	assert_int_equal(tf_store_view(st, get_cursor_txn, &cc), TF_OK);
	assert_string_equal(json_object_to_json_string(cc.cur), "{ }");
	json_object_put(cc.cur);
	/* the neighbours keep everything */
	assert_int_equal(tu_records_count(st, "gone-not"), 30);
	assert_int_equal(tu_records_count(st, "stays"), 30);
	exp = tu_export(st, NULL, NULL);
	assert_int_equal(tu_count_lines(exp, strlen(exp)), 60);
	free(exp);
	cc.feed = "gone-not";
	assert_int_equal(tf_store_view(st, get_cursor_txn, &cc), TF_OK);
	assert_string_equal(tf_json_str(cc.cur, "added_after"), "2026-01-01T00:00:00Z");
	json_object_put(cc.cur);
	/* the id can be reused, starting empty */
	tu_simple_feed(st, "gone");
	assert_int_equal(tu_records_count(st, "gone"), 0);
	tf_store_close(st);
}

static void test_list_sorted_and_ids(void **state)
{
	tf_store *st = tu_new_store("list", NULL, 0);
	const char *ids[] = {"m", "b", "z9", "a-1", "a"};
	char *text = NULL, **all = NULL;
	size_t n = 0;
	json_object *o, *arr;
	(void)state;

	for (size_t i = 0; i < 5; i++)
		tu_simple_feed(st, ids[i]);
	assert_int_equal(tf_feed_list(st, &text, NULL), TF_OK);
	o = tu_json(text);
	free(text);
	assert_true(json_object_object_get_ex(o, "feeds", &arr));
	assert_int_equal(json_object_array_length(arr), 5);
	{
		const char *want[] = {"a", "a-1", "b", "m", "z9"};
		for (size_t i = 0; i < 5; i++)
			assert_string_equal(tf_json_str(json_object_array_get_idx(arr, i), "id"), want[i]);
	}
	json_object_put(o);
	assert_int_equal(tf_feed_ids(st, &all, &n), TF_OK);
	assert_int_equal(n, 5);
	assert_string_equal(all[0], "a");
	assert_string_equal(all[4], "z9");
	for (size_t i = 0; i < n; i++)
		free(all[i]);
	free(all);
	tf_store_close(st);
}

/* ---- the API shape (docs/SPEC.md §2) ---------------------------------------------------------- */

/* Written out from docs/SPEC.md, independently of lib/feed.c: every field in every
 * answer (created_at/updated_at are ours, also always there), never secret. */
static const char *const feed_keys[] = {
	"id", "name", "type", "url", "collection", "username", "has_secret", "proxy", "no_proxy",
	"proxy_username", "has_proxy_secret", "ca_pem", "client_cert_pem", "has_client_key",
	"enabled", "interval_s", "options", "last_task_id", "last_status", "last_run_at", "active_task_id",
	"indicator_count", "created_at", "updated_at"};

/* The options each type reads (README "Feed types and their options"). */
static const char *type_option_keys(const char *type)
{
	if (!strcmp(type, "taxii21") || !strcmp(type, "otx"))
		return "page_size grace_period_s ttl_days";
	if (!strcmp(type, "virustotal"))
		return "targets requests_per_minute grace_period_s ttl_days";
	return "grace_period_s ttl_days";
}

/* o's members are exactly the space-separated words of want. */
static void assert_key_words(json_object *o, const char *want, const char *what)
{
	char buf[256], *save = NULL;
	size_t n = 0;

	assert_true(json_object_is_type(o, json_type_object));
	snprintf(buf, sizeof buf, "%s", want);
	for (char *w = strtok_r(buf, " ", &save); w; w = strtok_r(NULL, " ", &save), n++)
		if (!json_object_object_get_ex(o, w, NULL))
			fail_msg("%s lacks %s: %s", what, w, json_object_to_json_string(o));
	if ((size_t)json_object_object_length(o) != n)
		fail_msg("%s has members beyond {%s}: %s", what, want, json_object_to_json_string(o));
}

static void assert_feed_shape(json_object *f, const char *what)
{
	size_t n = sizeof feed_keys / sizeof *feed_keys;
	json_object *opts;

	for (size_t i = 0; i < n; i++)
		if (!json_object_object_get_ex(f, feed_keys[i], NULL))
			fail_msg("%s lacks %s: %s", what, feed_keys[i], json_object_to_json_string(f));
	if ((size_t)json_object_object_length(f) != n)
		fail_msg("%s has extra members: %s", what, json_object_to_json_string(f));
	assert_true(json_object_object_get_ex(f, "options", &opts));
	assert_key_words(opts, type_option_keys(tf_json_str(f, "type")), what);
}

static int is_null_member(json_object *o, const char *k)
{
	json_object *v = (json_object *)1;
	return json_object_object_get_ex(o, k, &v) && v == NULL;
}

/* Checks the create answer, then read, list, PATCH and a PATCH sending back
 * what was read: the same key set every time. Returns the last answer. */
static json_object *walk_feed(tf_store *st, const char *body, const char *id)
{
	char *out = NULL, err[256] = "";
	json_object *o, *arr, *b;

	if (create_body(st, body, &out, err, sizeof err))
		fail_msg("create %s: %s", body, err);
	o = tu_json(out);
	free(out);
	assert_feed_shape(o, "create");
	json_object_put(o);
	assert_int_equal(tf_feed_read(st, id, &out, NULL), TF_OK);
	b = tu_json(out);
	free(out);
	assert_feed_shape(b, "read");
	assert_int_equal(tf_feed_list(st, &out, NULL), TF_OK);
	o = tu_json(out);
	free(out);
	assert_true(json_object_object_get_ex(o, "feeds", &arr));
	for (size_t i = 0; i < json_object_array_length(arr); i++)
		assert_feed_shape(json_object_array_get_idx(arr, i), "list");
	json_object_put(o);
	assert_int_equal(patch_body(st, id, "{\"name\":\"patched\"}", &out, err, sizeof err), TF_OK);
	o = tu_json(out);
	free(out);
	assert_feed_shape(o, "patch");
	json_object_put(o);
	/* nulls included: a client may send back what it read */
	if (tf_feed_patch(st, id, b, &out, NULL, err, sizeof err))
		fail_msg("patching back what was read: %s", err);
	json_object_put(b);
	o = tu_json(out);
	free(out);
	assert_feed_shape(o, "patch (read back)");
	return o;
}

static void test_api_shape_every_type(void **state)
{
	static const struct {
		const char *id, *body;
		int full;     /* every optional field given */
	} cases[] = {
		{"t-min", "{\"id\":\"t-min\",\"name\":\"n\",\"type\":\"taxii21\",\"url\":\"https://t.test/taxii2/\","
		          "\"collection\":\"c1\"}", 0},
		{"t-full", "{\"id\":\"t-full\",\"name\":\"n\",\"type\":\"taxii21\",\"url\":\"https://t.test/\","
		           "\"collection\":\"c1\",\"username\":\"u\",\"secret\":\"" SECRET "\",\"enabled\":false,"
		           "\"interval_s\":60,\"options\":{\"page_size\":100,\"grace_period_s\":3,"
		           "\"ttl_days\":30}}", 1},
		{"o-min", "{\"id\":\"o-min\",\"name\":\"n\",\"type\":\"otx\",\"url\":\"https://otx.test\"}", 0},
		{"o-full", "{\"id\":\"o-full\",\"name\":\"n\",\"type\":\"otx\",\"url\":\"https://otx.test\","
		           "\"collection\":\"ignored\",\"username\":\"ignored\",\"secret\":\"" SECRET "\","
		           "\"enabled\":true,\"interval_s\":3600,"
		           "\"options\":{\"page_size\":20,\"grace_period_s\":0,\"ttl_days\":1}}", 1},
		{"v-min", "{\"id\":\"v-min\",\"name\":\"n\",\"type\":\"virustotal\",\"url\":\"https://vt.test\"}", 0},
		{"v-full", "{\"id\":\"v-full\",\"name\":\"n\",\"type\":\"virustotal\",\"url\":\"https://vt.test\","
		           "\"collection\":\"x\",\"username\":\"x\",\"secret\":\"" SECRET "\",\"interval_s\":86400,"
		           "\"options\":{\"targets\":[\"1.2.3.4\"],\"requests_per_minute\":4,"
		           "\"grace_period_s\":10,\"ttl_days\":90}}", 1},
		{"b-min", "{\"id\":\"b-min\",\"name\":\"n\",\"type\":\"stix_bundle\",\"url\":\"https://b.test/b.json\"}", 0},
		{"b-full", "{\"id\":\"b-full\",\"name\":\"n\",\"type\":\"stix_bundle\",\"url\":\"https://b.test/b.json\","
		           "\"collection\":\"x\",\"username\":\"u\",\"secret\":\"" SECRET "\","
		           "\"options\":{\"grace_period_s\":1,\"ttl_days\":3650}}", 1},
	};
	static const char *const optional[] = {"collection", "username", "last_task_id",
	                                        "last_status", "last_run_at", "active_task_id"};
	tf_store *st = tu_new_store("shape", NULL, 0);
	(void)state;

	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
		json_object *o = walk_feed(st, cases[i].body, cases[i].id), *v, *opts;
		const char *type = tf_json_str(o, "type");

		assert_no_secret(json_object_to_json_string(o), cases[i].id);
		assert_true(json_object_object_get_ex(o, "has_secret", &v));
		assert_int_equal(json_object_get_boolean(v), cases[i].full);
		assert_true(json_object_object_get_ex(o, "options", &opts));
		/* unset is null; set is the value */
		for (size_t k = 0; k < sizeof optional / sizeof *optional; k++) {
			int want_null = !cases[i].full || k >= 2;
			if (!strcmp(optional[k], "collection") && !strcmp(type, "taxii21"))
				want_null = 0;
			if (is_null_member(o, optional[k]) != want_null)
				fail_msg("%s: %s should %sbe null", cases[i].id, optional[k],
				         want_null ? "" : "not ");
		}
		json_object_object_foreach(opts, k, ov) {
			if ((ov == NULL) == cases[i].full)
				fail_msg("%s: options.%s is %s", cases[i].id, k, ov ? "set" : "null");
		}
		json_object_put(o);
	}
	assert_int_equal(feed_count(st), sizeof cases / sizeof *cases);
	tf_store_close(st);
}

/* With a run active and after it: the same keys, the run's fields filled. */
static void test_api_shape_with_runs(void **state)
{
	tf_store *st = tu_new_store("shaperun", NULL, 0);
	char *out = NULL, task[TF_UUID_LEN + 1], act[TF_UUID_LEN + 1];
	json_object *o;
	(void)state;

	tu_simple_feed(st, "r");
	assert_int_equal(tf_task_create(st, "r", task, act), TF_OK);
	assert_int_equal(tf_feed_read(st, "r", &out, NULL), TF_OK);
	o = tu_json(out);
	free(out);
	assert_feed_shape(o, "read during a run");
	assert_string_equal(tf_json_str(o, "active_task_id"), task);
	assert_string_equal(tf_json_str(o, "last_status"), "queued");
	json_object_put(o);
	assert_int_equal(tf_runctl_finish(st, task, TF_ST_FAILED, 0, "x"), TF_OK);
	assert_int_equal(tf_feed_list(st, &out, NULL), TF_OK);
	o = tu_json(out);
	free(out);
	{
		json_object *arr, *f;
		assert_true(json_object_object_get_ex(o, "feeds", &arr));
		f = json_object_array_get_idx(arr, 0);
		assert_feed_shape(f, "list after a run");
		assert_true(is_null_member(f, "active_task_id"));
		assert_string_equal(tf_json_str(f, "last_task_id"), task);
		assert_string_equal(tf_json_str(f, "last_status"), "failed");
	}
	json_object_put(o);
	tf_store_close(st);
}

/* null options are "unset": accepted, never stored; unknown ones still fail. */
static void test_null_options(void **state)
{
	tf_store *st = tu_new_store("nullopt", NULL, 0);
	char *out = NULL, err[256] = "";
	struct load_ctx lc = {"n", NULL};
	json_object *opts;
	(void)state;

	assert_int_equal(create_body(st, WITH("\"id\":\"n\",\"options\":{\"grace_period_s\":null,"
	                                      "\"page_size\":7}"),
	                             &out, err, sizeof err),
	                 TF_OK);
	assert_true(tu_contains(out, "\"options\":{\"grace_period_s\":null,\"ttl_days\":null,"
	                             "\"page_size\":7}"));
	free(out);
	assert_int_equal(tf_store_view(st, load_txn, &lc), TF_OK);
	assert_true(json_object_object_get_ex(lc.f, "options", &opts));
	assert_string_equal(json_object_to_json_string_ext(opts, JSON_C_TO_STRING_PLAIN),
	                    "{\"page_size\":7}");
	json_object_put(lc.f);
	assert_int_equal(patch_body(st, "n", "{\"options\":{\"bogus\":null}}", &out, err, sizeof err),
	                 TF_EINVAL);
	assert_true(tu_contains(err, "options.bogus:"));
	assert_int_equal(patch_body(st, "n", "{\"options\":{\"page_size\":null}}", &out, err,
	                            sizeof err),
	                 TF_OK);
	assert_true(tu_contains(out, "\"options\":{\"grace_period_s\":null,\"ttl_days\":null}"));
	free(out);
	tf_store_close(st);
}

/* ---- network settings (README "Proxies, private CAs and client certificates") ---- */

#define PEM_CERT "-----BEGIN CERTIFICATE-----\\nMAA=\\n-----END CERTIFICATE-----\\n"
#define PEM_KEY "-----BEGIN PRIVATE KEY-----\\nMAA=\\n-----END PRIVATE KEY-----\\n"
#define PROXY_PW "pr0xy-PLUGH-pw"
#define NET_BODY(extra)                                                                     \
	"{\"id\":\"n1\",\"name\":\"n\",\"type\":\"stix_bundle\",\"url\":\"https://b.test/x.json\"" \
	extra "}"

static void assert_bad(tf_store *st, const char *body, const char *field)
{
	char *out = NULL, err[256] = "";
	int rc = create_body(st, body, &out, err, sizeof err);

	free(out);
	if (rc != TF_EINVAL || strncmp(err, field, strlen(field)) || err[strlen(field)] != ':')
		fail_msg("%s: want a %s error, got %d '%s'", body, field, rc, err);
}

static void test_network_fields_validated(void **state)
{
	static const struct {
		const char *extra, *field;
	} bad[] = {
		{",\"proxy\":\"ftp://p.test:21\"", "proxy"},
		{",\"proxy\":\"p.test:3128\"", "proxy"},
		{",\"proxy\":\"http://u:" PROXY_PW "@p.test:3128\"", "proxy"},
		{",\"proxy\":\"http://p.test:3128/x\"", "proxy"},
		{",\"proxy\":\"http://:3128\"", "proxy"},
		{",\"proxy\":\"http://p .test\"", "proxy"},
		{",\"no_proxy\":\"a;b\"", "no_proxy"},
		{",\"proxy_username\":\"u\"", "proxy_username"},
		{",\"proxy\":\"http://p.test:1\",\"proxy_secret\":\"x\"", "proxy_username"},
		{",\"ca_pem\":\"hello\"", "ca_pem"},
		{",\"ca_pem\":\"-----BEGIN CERTIFICATE-----\\nMAE=\\n-----END CERTIFICATE-----\"",
		 "ca_pem"},
		{",\"ca_pem\":\"-----BEGIN CERTIFICATE-----\\nMA!=\\n-----END CERTIFICATE-----\"",
		 "ca_pem"},
		{",\"ca_pem\":\"-----BEGIN CERTIFICATE-----\\nMAA=\\n\"", "ca_pem"},
		{",\"ca_pem\":\"" PEM_CERT PEM_KEY "\"", "ca_pem"},
		{",\"client_cert_pem\":\"" PEM_CERT "\"", "client_key_pem"},
		{",\"client_key_pem\":\"" PEM_KEY "\"", "client_cert_pem"},
		{",\"client_cert_pem\":\"" PEM_CERT "\",\"client_key_pem\":\"" PEM_CERT "\"",
		 "client_key_pem"},
		{",\"client_cert_pem\":\"" PEM_CERT "\",\"client_key_pem\":\"" PEM_KEY PEM_KEY "\"",
		 "client_key_pem"},
		{",\"client_cert_pem\":\"" PEM_CERT "\",\"client_key_pem\":"
		 "\"-----BEGIN ENCRYPTED PRIVATE KEY-----\\nMAA=\\n-----END ENCRYPTED PRIVATE KEY-----\"",
		 "client_key_pem"},
	};
	tf_store *st = tu_new_store("netv", NULL, 0);
	char body[512];
	(void)state;

	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		snprintf(body, sizeof body, NET_BODY("%s"), bad[i].extra);
		assert_bad(st, body, bad[i].field);
	}
	assert_int_equal(feed_count(st), 0);
	tf_store_close(st);
}

static void test_network_fields_write_only(void **state)
{
	tf_store *st = tu_new_store("netw", NULL, 0);
	struct load_ctx lc = {.id = "n1"};
	char *out = NULL, err[256] = "";
	tf_feed_net net;
	(void)state;

	assert_int_equal(create_body(st, NET_BODY(",\"proxy\":\"http://p.test:3128\","
	                                          "\"proxy_username\":\"pu\",\"proxy_secret\":\"" PROXY_PW
	                                          "\",\"no_proxy\":\"intra.test\",\"ca_pem\":\"" PEM_CERT
	                                          "\",\"client_cert_pem\":\"subject=x\\n" PEM_CERT
	                                          "\",\"client_key_pem\":\"" PEM_KEY "\""),
	                             &out, err, sizeof err),
	                 TF_OK);
	assert_false(tu_contains(out, "PLUGH") || tu_contains(out, "PRIVATE"));
	assert_true(tu_contains(out, "\"has_proxy_secret\":true") &&
	            tu_contains(out, "\"has_client_key\":true") &&
	            tu_contains(out, "\"proxy\":\"http://p.test:3128\""));
	free(out);
	/* a PATCH without them keeps them; the stored form has them for the worker */
	assert_int_equal(patch_body(st, "n1", "{\"name\":\"m\"}", &out, err, sizeof err), TF_OK);
	assert_true(tu_contains(out, "\"has_proxy_secret\":true") &&
	            tu_contains(out, "\"has_client_key\":true"));
	free(out);
	assert_int_equal(tf_store_view(st, load_txn, &lc), TF_OK);
	tf_feed_net_of(lc.f, "http://g.test:8080", "g.test", &net);
	assert_string_equal(net.proxy, "http://p.test:3128");
	assert_string_equal(net.proxy_secret, PROXY_PW);
	assert_string_equal(net.no_proxy, "intra.test");
	assert_string_equal(net.client_key_pem,
	                    "-----BEGIN PRIVATE KEY-----\nMAA=\n-----END PRIVATE KEY-----\n");
	json_object_put(lc.f);
	/* "" goes direct whatever the global says; null falls back to the global */
	assert_int_equal(patch_body(st, "n1", "{\"proxy\":\"\",\"proxy_username\":null,"
	                                      "\"proxy_secret\":null,\"no_proxy\":null}",
	                            &out, err, sizeof err),
	                 TF_OK);
	free(out);
	lc.f = NULL;
	assert_int_equal(tf_store_view(st, load_txn, &lc), TF_OK);
	tf_feed_net_of(lc.f, "http://g.test:8080", "g.test", &net);
	assert_string_equal(net.proxy, "");
	assert_null(net.no_proxy);
	json_object_put(lc.f);
	assert_int_equal(patch_body(st, "n1", "{\"proxy\":null,\"client_cert_pem\":null,"
	                                      "\"client_key_pem\":null}", &out, err, sizeof err),
	                 TF_OK);
	assert_true(tu_contains(out, "\"has_client_key\":false"));
	free(out);
	lc.f = NULL;
	assert_int_equal(tf_store_view(st, load_txn, &lc), TF_OK);
	tf_feed_net_of(lc.f, "http://g.test:8080", "g.test", &net);
	assert_string_equal(net.proxy, "http://g.test:8080");
	assert_string_equal(net.no_proxy, "g.test");
	assert_null(net.proxy_secret);
	assert_null(net.client_key_pem);
	tf_feed_net_of(lc.f, "", "", &net);
	assert_null(net.proxy);
	json_object_put(lc.f);
	tf_store_close(st);
}

/* The config's proxy and no_proxy (lib/config.c): credentials allowed in the
 * URL there, a bad line refused without echoing it. */
static int load_conf(const char *text, tf_config *cfg, char *err, size_t errlen)
{
	char path[TU_PATH];
	FILE *f;
	int rc;

	tu_path(path, sizeof path, "conf");
	assert_non_null(f = fopen(path, "w"));
	fputs(text, f);
	fclose(f);
	setenv("THREATFEED_CONF", path, 1);
	rc = tf_config_load(cfg, "threatfeed", err, errlen);
	unsetenv("THREATFEED_CONF");
	return rc;
}

static void test_config_proxy(void **state)
{
	static const char *const bad[] = {
		"proxy = ftp://u:" PROXY_PW "@p.test:21\n",
		"proxy = http://u:" PROXY_PW "@p.test:3128/path\n",
		"proxy = http://\n",
		"no_proxy = a;b\n",
	};
	static tf_config cfg;
	char err[256];
	(void)state;

	assert_int_equal(load_conf("proxy = http://u:" PROXY_PW "@p.test:3128\n"
	                           "no_proxy = localhost,127.0.0.1,.corp.test\n",
	                           &cfg, err, sizeof err),
	                 TF_OK);
	assert_string_equal(cfg.proxy, "http://u:" PROXY_PW "@p.test:3128");
	assert_string_equal(cfg.no_proxy, "localhost,127.0.0.1,.corp.test");
	assert_int_equal(load_conf("# none\n", &cfg, err, sizeof err), TF_OK);
	assert_string_equal(cfg.proxy, "");
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		assert_int_equal(load_conf(bad[i], &cfg, err, sizeof err), TF_EINVAL);
		if (strstr(err, "PLUGH"))
			fail_msg("config error echoes the password: %s", err);
	}
}

/* tf_feed_page: pages of the id order, the cursor the last id listed, null
 * at the end; the pages put together are the whole list. */
static void test_list_pages(void **state)
{
	tf_store *st = tu_new_store("pages", NULL, 0);
	const char *ids[] = {"a1", "b2", "c3", "d4", "e5"};
	char *text = NULL, after[80] = "";
	size_t got = 0;
	(void)state;

	for (size_t i = 0; i < 5; i++)
		tu_simple_feed(st, ids[4 - i]);
	for (int pages = 1;; pages++) {
		json_object *o, *arr, *next;
		assert_int_equal(tf_feed_page(st, after[0] ? after : NULL, 2, &text, NULL), TF_OK);
		o = tu_json(text);
		free(text);
		assert_true(json_object_object_get_ex(o, "feeds", &arr));
		assert_true(json_object_array_length(arr) <= 2);
		for (size_t i = 0; i < json_object_array_length(arr); i++)
			assert_string_equal(tf_json_str(json_object_array_get_idx(arr, i), "id"),
			                    ids[got++]);
		assert_true(json_object_object_get_ex(o, "next_cursor", &next));
		if (!next) {
			json_object_put(o);
			assert_int_equal(pages, 3);
			break;
		}
		snprintf(after, sizeof after, "%s", json_object_get_string(next));
		assert_string_equal(after, ids[got - 1]);
		json_object_put(o);
	}
	assert_int_equal(got, 5);
	/* exactly a page's worth left: no cursor to an empty page */
	assert_int_equal(tf_feed_page(st, "c3", 2, &text, NULL), TF_OK);
	assert_true(tu_contains(text, "\"next_cursor\":null"));
	free(text);
	/* an id that is not a feed's still orders (a feed deleted between pages) */
	assert_int_equal(tf_feed_page(st, "c", 1, &text, NULL), TF_OK);
	assert_true(tu_contains(text, "\"id\":\"c3\""));
	free(text);
	assert_int_equal(tf_feed_page(st, "Bad cursor", 2, &text, NULL), TF_EINVAL);
	free(text);
	assert_int_equal(tf_feed_page(st, NULL, 0, &text, NULL), TF_EINVAL);
	free(text);
	tf_store_close(st);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_secret_never_returned),
		cmocka_unit_test(test_export_has_no_secret),
		cmocka_unit_test(test_validation),
		cmocka_unit_test(test_read_only_fields_ignored),
		cmocka_unit_test(test_id_generation),
		cmocka_unit_test(test_duplicates),
		cmocka_unit_test(test_conflicts_while_running),
		cmocka_unit_test(test_delete_removes_data),
		cmocka_unit_test(test_list_sorted_and_ids),
		cmocka_unit_test(test_list_pages),
		cmocka_unit_test(test_api_shape_every_type),
		cmocka_unit_test(test_api_shape_with_runs),
		cmocka_unit_test(test_null_options),
		cmocka_unit_test(test_network_fields_validated),
		cmocka_unit_test(test_network_fields_write_only),
		cmocka_unit_test(test_config_proxy),
	};
	tu_init("feed");
	tu_seed();
	return tu_finish(cmocka_run_group_tests(tests, NULL, NULL));
}
