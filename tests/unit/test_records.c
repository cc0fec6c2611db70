/* lib/records.c (with store.c's journal): batches, "latest modified wins",
 * counts, paging, export; rollback exactness as a property test; crashes
 * mid-batch; readers running beside a writer. */
#include "testutil.h"
#include "index.h"

#include <poll.h>

#define SEED_TASK "5eed5eed-5eed-4eed-8eed-5eed5eed5eed"

/* ---- helpers ----------------------------------------------------------------- */

struct apply_ctx {
	const char *feed, *task;
	tf_batch *b;
	json_object *cursor;   /* written in the same transaction when set */
	tf_progress p;
	int calls;
};

static int apply_txn(tf_txn *txn, void *vctx)
{
	struct apply_ctx *c = vctx;
	int rc;
	c->calls++;
	c->p = (tf_progress){0};
	if ((rc = tf_batch_apply(txn, c->feed, c->task, c->b, &c->p)))
		return rc;
	return c->cursor ? tf_records_put_cursor(txn, c->feed, c->task, c->cursor) : TF_OK;
}

static tf_progress apply(tf_store *st, const char *feed, const char *task, tf_batch *b,
                         json_object *cursor)
{
	struct apply_ctx c = {feed, task, b, cursor, {0}, 0};
	int rc = tf_store_update(st, apply_txn, &c);
	if (rc)
		fail_msg("tf_batch_apply: %s", tf_strerror(rc));
	return c.p;
}

static void add(tf_batch *b, const char *key, int64_t mod, const char *obj)
{
	int rc = tf_batch_add(b, key, "indicator", NULL, NULL, mod, obj, strlen(obj));
	if (rc)
		fail_msg("tf_batch_add(%s): %s", key, tf_strerror(rc));
}

/* A record with observables (and a life) for the index: values from a small
 * pool so that records share values, and versions change them. */
static void add_obs(tf_batch *b, tu_rng *r, const char *key, int64_t mod, const char *obj)
{
	static const char *const pool[][2] = {
		{"ipv4-addr", "10.0.0.1"},        {"ipv4-addr", "10.0.0.2"},
		{"ipv4-addr", "10.1.0.0/16"},     {"ipv6-addr", "2001:DB8::1"},
		{"domain-name", "Evil.example."}, {"domain-name", "other.example"},
		{"url", "http://evil.example/x"}, {"file:hashes.MD5", "D41D8CD98F00B204E9800998ECF8427E"},
	};
	json_object *obs = json_object_new_array();
	int n = (int)tu_below(r, 4), rc;

	for (int i = 0; i < n; i++) {
		int k = (int)tu_below(r, sizeof pool / sizeof *pool);
		json_object *o = json_object_new_object();
		json_object_object_add(o, "type", json_object_new_string(pool[k][0]));
		json_object_object_add(o, "value", json_object_new_string(pool[k][1]));
		json_object_array_add(obs, o);
	}
	rc = tf_batch_add(b, key, "indicator", NULL, obs, mod, obj, strlen(obj));
	json_object_put(obs);
	if (rc)
		fail_msg("tf_batch_add(%s): %s", key, tf_strerror(rc));
	if (tu_below(r, 4) == 0 &&
	    (rc = tf_batch_set_life(b, 1000000 + (int64_t)tu_below(r, 3) * 1000, tu_below(r, 2) == 0)))
		fail_msg("tf_batch_set_life: %s", tf_strerror(rc));
}

static char *index_text(tf_store *st)
{
	char *text = NULL;
	int rc = tf_index_dump(st, &text);
	if (rc)
		fail_msg("tf_index_dump: %s", tf_strerror(rc));
	return text;
}

struct cursor_ctx {
	const char *feed;
	char *text;
};

static int cursor_txn(tf_txn *txn, void *vctx)
{
	struct cursor_ctx *c = vctx;
	json_object *o;
	int rc = tf_feed_cursor(txn, c->feed, &o);
	if (rc)
		return rc;
	c->text = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
	json_object_put(o);
	return TF_OK;
}

/* The date-added order: every record's date added and every order entry. */
static char *order_text(tf_store *st)
{
	char *text = NULL;
	int rc = tf_records_order_dump(st, &text);
	if (rc)
		fail_msg("tf_records_order_dump: %s", tf_strerror(rc));
	return text;
}

static char *cursor_text(tf_store *st, const char *feed)
{
	struct cursor_ctx c = {feed, NULL};
	assert_int_equal(tf_store_view(st, cursor_txn, &c), TF_OK);
	return c.text;
}

static void new_id(char *id)
{
	assert_int_equal(tf_uuid_v4(id, TF_UUID_LEN + 1), TF_OK);
}

/* ---- batches ------------------------------------------------------------------ */

static void test_batch_limits(void **state)
{
	tf_batch *b;
	char *big = malloc(TF_MAX_OBJECT_BYTES + 2), key[600];
	(void)state;

	assert_non_null(big);
	assert_int_equal(tf_batch_new(&b), TF_OK);
	assert_int_equal(tf_batch_count(b), 0);
	memset(big, ' ', TF_MAX_OBJECT_BYTES + 1);
	big[0] = '{';
	big[TF_MAX_OBJECT_BYTES - 1] = '}';
	assert_int_equal(tf_batch_add(b, "k", "t", NULL, NULL, 1, big, TF_MAX_OBJECT_BYTES), TF_OK);
	assert_int_equal(tf_batch_add(b, "k2", "t", NULL, NULL, 1, big, TF_MAX_OBJECT_BYTES + 1),
	                 TF_ELIMIT);
	assert_int_equal(tf_batch_add(b, "", "t", NULL, NULL, 1, "{}", 2), TF_ELIMIT);
	memset(key, 'k', sizeof key);
	key[511] = '\0';
	assert_int_equal(tf_batch_add(b, key, "t", NULL, NULL, 1, "{}", 2), TF_OK);
	key[511] = 'k';
	key[512] = '\0';
	assert_int_equal(tf_batch_add(b, key, "t", NULL, NULL, 1, "{}", 2), TF_ELIMIT);
	assert_int_equal(tf_batch_count(b), 2);
	/* many entries: the batch grows */
	for (int i = 0; i < 2000; i++) {
		char k[32];
		snprintf(k, sizeof k, "many-%d", i);
		assert_int_equal(tf_batch_add(b, k, "t", "v", NULL, i, "{}", 2), TF_OK);
	}
	assert_int_equal(tf_batch_count(b), 2002);
	tf_batch_clear(b);
	assert_int_equal(tf_batch_count(b), 0);
	add(b, "again", 1, "{}");
	assert_int_equal(tf_batch_count(b), 1);
	tf_batch_free(b);
	tf_batch_free(NULL);
	free(big);
}

static json_object *record_of(const char *line)
{
	return tu_json(line);
}

static void test_latest_modified_wins(void **state)
{
	tf_store *st = tu_new_store("latest", NULL, 0);
	char t1[TF_UUID_LEN + 1], t2[TF_UUID_LEN + 1], *exp;
	tf_batch *b;
	tf_progress p;
	json_object *o, *obs, *v;
	(void)state;

	new_id(t1);
	new_id(t2);
	assert_int_equal(tf_batch_new(&b), TF_OK);
	obs = tu_json("[{\"type\":\"ipv4-addr\",\"value\":\"198.51.100.7\"}]");
	assert_int_equal(tf_batch_add(b, "indicator--a", "indicator", "198.51.100.7", obs,
	                              1700000000000000LL, "{\"v\":1}", 7),
	                 TF_OK);
	json_object_put(obs);
	p = apply(st, "f", t1, b, NULL);
	assert_int_equal(p.indicators_created, 1);
	assert_int_equal(tu_records_count(st, "f"), 1);
	/* what a record looks like */
	exp = tu_export(st, "f", NULL);
	o = record_of(exp);
	free(exp);
	assert_string_equal(tf_json_str(o, "id"), "indicator--a");
	assert_string_equal(tf_json_str(o, "type"), "indicator");
	assert_string_equal(tf_json_str(o, "value"), "198.51.100.7");
	assert_string_equal(tf_json_str(o, "feed_id"), "f");
	assert_string_equal(tf_json_str(o, "task_id"), t1);
	assert_string_equal(tf_json_str(o, "modified"), "2023-11-14T22:13:20.000000Z");
	assert_true(json_object_object_get_ex(o, "observables", &v));
	assert_int_equal(json_object_array_length(v), 1);
	assert_string_equal(tf_json_str(json_object_array_get_idx(v, 0), "value"), "198.51.100.7");
	assert_true(json_object_object_get_ex(o, "object", &v));
	assert_int_equal(json_object_get_int(json_object_object_get(v, "v")), 1);
	json_object_put(o);

	/* older and same versions are skipped, content untouched */
	tf_batch_clear(b);
	add(b, "indicator--a", 1600000000000000LL, "{\"v\":0}");
	add(b, "indicator--a", 1700000000000000LL, "{\"v\":2}");
	p = apply(st, "f", t2, b, NULL);
	assert_int_equal(p.indicators_skipped, 2);
	assert_int_equal(p.indicators_created + p.indicators_updated, 0);
	exp = tu_export(st, "f", NULL);
	assert_true(tu_contains(exp, "\"object\":{\"v\":1}"));
	assert_true(tu_contains(exp, t1));
	free(exp);
	assert_int_equal(tu_undo_count(st, t2), 0);   /* nothing written, nothing journaled */
	/* newer wins; within one batch the newest of the batch wins */
	tf_batch_clear(b);
	add(b, "indicator--a", 1800000000000000LL, "{\"v\":3}");
	add(b, "indicator--a", 1750000000000000LL, "{\"v\":\"older\"}");
	add(b, "indicator--b", 5, "{\"b\":1}");
	add(b, "indicator--b", 6, "{\"b\":2}");
	p = apply(st, "f", t2, b, NULL);
	assert_int_equal(p.indicators_created, 1);
	assert_int_equal(p.indicators_updated, 2);
	assert_int_equal(p.indicators_skipped, 1);
	assert_int_equal(tu_records_count(st, "f"), 2);
	exp = tu_export(st, "f", NULL);
	assert_true(tu_contains(exp, "\"object\":{\"v\":3}"));
	assert_true(tu_contains(exp, "\"object\":{\"b\":2}"));
	assert_false(tu_contains(exp, "older"));
	assert_true(tu_contains(exp, t2));
	free(exp);
	/* unknown version (0): written once, then the same again is skipped */
	tf_batch_clear(b);
	add(b, "vt:file:abc", 0, "{\"verdict\":\"clean\"}");
	p = apply(st, "f", t2, b, NULL);
	assert_int_equal(p.indicators_created, 1);
	p = apply(st, "f", t2, b, NULL);
	assert_int_equal(p.indicators_skipped, 1);
	exp = tu_export(st, "f", NULL);
	assert_true(tu_contains(exp, "\"modified\":null"));
	free(exp);
	/* the same key in another feed is another record */
	tf_batch_clear(b);
	add(b, "indicator--a", 1, "{\"other\":true}");
	p = apply(st, "g", t2, b, NULL);
	assert_int_equal(p.indicators_created, 1);
	assert_int_equal(tu_records_count(st, "g"), 1);
	assert_int_equal(tu_records_count(st, "f"), 3);
	tf_batch_free(b);
	tf_store_close(st);
}

/* A batch bigger than the map: the transaction is replayed after growth and
 * must count, journal and roll back exactly once. */
static void test_apply_replayed_after_growth(void **state)
{
	TU_LMDB_ONLY(); /* LMDB's map growth */
	char path[TU_PATH], task[TF_UUID_LEN + 1], *e0, *e1, obj[1100];
	tf_store *st;
	tf_batch *b;
	struct apply_ctx c = {"big", NULL, NULL, NULL, {0}, 0};
	uint64_t recs;
	size_t before;
	(void)state;

	tu_path(path, sizeof path, "replay");
	st = tu_open(path, 1 << 20);
	assert_int_equal(tf_store_set_lazy(st, 1), TF_OK);
	assert_int_equal(tf_batch_new(&b), TF_OK);
	add(b, "seed", 1, "{\"seed\":1}");
	apply(st, "big", SEED_TASK, b, NULL);
	assert_int_equal(tf_store_undo_drop(st, SEED_TASK), TF_OK);
	e0 = tu_export(st, NULL, NULL);
	before = tf_store_map_size(st);
	tf_batch_clear(b);
	memset(obj, 'x', sizeof obj);
	memcpy(obj, "{\"p\":\"", 6);
	memcpy(obj + sizeof obj - 3, "\"}", 3);
	for (int i = 0; i < 3000; i++) {
		char key[32];
		snprintf(key, sizeof key, "k%05d", i);
		add(b, key, 5, obj);
	}
	add(b, "seed", 2, "{\"seed\":2}");
	new_id(task);
	c.task = task;
	c.b = b;
	assert_int_equal(tf_store_update(st, apply_txn, &c), TF_OK);
	assert_true(c.calls > 1);                       /* it was replayed */
	assert_true(tf_store_map_size(st) > before);
	assert_int_equal(c.p.indicators_created, 3000);  /* counted once */
	assert_int_equal(c.p.indicators_updated, 1);
	assert_int_equal(tu_records_count(st, "big"), 3001);
	/* records, their dates added (and the seed's old one out), the count: once */
	assert_int_equal(tu_undo_count(st, task), 3001 + 3001 + 1 + 1);
	assert_int_equal(tf_store_rollback(st, task, &recs), TF_OK);
	assert_int_equal(recs, 3001);
	e1 = tu_export(st, NULL, NULL);
	assert_string_equal(e1, e0);
	free(e0);
	free(e1);
	tf_batch_free(b);
	tf_store_close(st);
}

/* ---- rollback exactness: the property test ---------------------------------------- */

#define POOL 240
#define RUNS 1000

struct model {
	int64_t mod[POOL];   /* 0: absent */
	uint64_t count;
};

static void key_name(char *buf, size_t len, int k)
{
	/* a few keys with bytes that need care in cursors and JSON */
	if (k % 37 == 5)
		snprintf(buf, len, "indicator--\xc3\xbc\"q/%03d", k);
	else
		snprintf(buf, len, "indicator--%03d", k);
}

static void random_object(tu_rng *r, char *buf, size_t len, int k, int64_t mod, int run)
{
	/* mostly small; now and then one that needs LMDB overflow pages */
	int pad = tu_below(r, 32) == 0 ? (int)tu_below(r, (uint64_t)len - 200) : (int)tu_below(r, 40);
	int n = snprintf(buf, len, "{\"k\":%d,\"mod\":%lld,\"run\":%d,\"pad\":\"", k, (long long)mod, run);
	for (int i = 0; i < pad && (size_t)n < len - 4; i++)
		buf[n++] = (char)('a' + tu_below(r, 26));
	buf[n++] = '"';
	buf[n++] = '}';
	buf[n] = '\0';
}

static void test_rollback_property(void **state)
{
	tf_store *st = tu_new_store("prop", NULL, 0);
	tu_rng r = {tu_seed_value ^ 0x9e37};
	struct model m = {{0}, 0}, base;
	char *e0, *c0, *i0, *o0, *obj = malloc(9000), key[64];
	tf_batch *b;
	uint64_t total_created = 0, total_updated = 0, total_skipped = 0, kept = 0;
	int index_runs_changed = 0, order_runs_changed = 0;
	int64_t t_start = tf_mono_us();
	(void)state;

	assert_non_null(obj);
	/* durability is not the subject here: do not wait for the disk */
	assert_int_equal(tf_store_set_lazy(st, 1), TF_OK);
	assert_int_equal(tf_batch_new(&b), TF_OK);
	/* seed: 150 records of feed "pf", 30 of a neighbour, a cursor each */
	{
		json_object *cur = tu_json("{\"added_after\":\"2025-01-01T00:00:00Z\"}");
		for (int k = 0; k < 150; k++) {
			int64_t mod = 1000000 + (int64_t)tu_below(&r, 1000) * 1000;
			key_name(key, sizeof key, k);
			random_object(&r, obj, 9000, k, mod, -1);
			add_obs(b, &r, key, mod, obj);
			m.mod[k] = mod;
		}
		m.count = 150;
		apply(st, "pf", SEED_TASK, b, cur);
		tf_batch_clear(b);
		for (int k = 0; k < 30; k++) {
			key_name(key, sizeof key, k);
			add_obs(b, &r, key, 1, "{\"neighbour\":true}");
		}
		apply(st, "pf-n", SEED_TASK, b, cur);
		tf_batch_clear(b);
		json_object_put(cur);
		assert_int_equal(tf_store_undo_drop(st, SEED_TASK), TF_OK);
	}
	e0 = tu_export(st, NULL, NULL);
	c0 = cursor_text(st, "pf");
	i0 = index_text(st);
	o0 = order_text(st);
	assert_true(strlen(i0) > 0); /* the seed has index entries to restore */
	base = m;
	assert_int_equal(tu_records_count(st, "pf"), 150);

	for (int run = 0; run < RUNS; run++) {
		char task[TF_UUID_LEN + 1];
		int nbatches = 1 + (int)tu_below(&r, 4), cursor_batch = (int)tu_below(&r, (uint64_t)nbatches);
		uint64_t writes = 0, recs = 0;
		int keys_this_run[64], nkeys = 0;

		new_id(task);
		for (int bi = 0; bi < nbatches; bi++) {
			tf_progress want = {0}, got;
			int size = 1 + (int)tu_below(&r, 24);
			json_object *cur = NULL;

			for (int i = 0; i < size; i++) {
				int k;
				int64_t mod;
				/* repeated keys within and across the run's batches */
				if (nkeys && tu_below(&r, 3) == 0)
					k = keys_this_run[tu_below(&r, (uint64_t)nkeys)];
				else
					k = (int)tu_below(&r, POOL);
				if (nkeys < 64)
					keys_this_run[nkeys++] = k;
				if (m.mod[k]) {
					switch (tu_below(&r, 3)) {
					case 0: mod = m.mod[k] + 1 + (int64_t)tu_below(&r, 5000); break;
					case 1: mod = m.mod[k]; break;
					default: mod = m.mod[k] - 1 - (int64_t)tu_below(&r, (uint64_t)m.mod[k] - 1); break;
					}
				} else {
					mod = 1 + (int64_t)tu_below(&r, 3000000);
				}
				/* the model */
				if (m.mod[k] && m.mod[k] >= mod) {
					want.indicators_skipped++;
				} else {
					if (m.mod[k])
						want.indicators_updated++;
					else
						want.indicators_created++, m.count++;
					m.mod[k] = mod;
				}
				key_name(key, sizeof key, k);
				random_object(&r, obj, 9000, k, mod, run);
				add_obs(b, &r, key, mod, obj);
			}
			if (bi == cursor_batch) {
				char text[128];
				snprintf(text, sizeof text, "{\"added_after\":\"run-%d\",\"batch\":%d}", run, bi);
				cur = tu_json(text);
			}
			got = apply(st, "pf", task, b, cur);
			json_object_put(cur);
			tf_batch_clear(b);
			if (got.indicators_created != want.indicators_created ||
			    got.indicators_updated != want.indicators_updated ||
			    got.indicators_skipped != want.indicators_skipped)
				fail_msg("run %d batch %d: created/updated/skipped %lld/%lld/%lld, model says "
				         "%lld/%lld/%lld (TF_TEST_SEED=%llu)",
				         run, bi, (long long)got.indicators_created,
				         (long long)got.indicators_updated, (long long)got.indicators_skipped,
				         (long long)want.indicators_created, (long long)want.indicators_updated,
				         (long long)want.indicators_skipped, (unsigned long long)tu_seed_value);
			writes += (uint64_t)(got.indicators_created + got.indicators_updated);
			total_created += (uint64_t)got.indicators_created;
			total_updated += (uint64_t)got.indicators_updated;
			total_skipped += (uint64_t)got.indicators_skipped;
			if (tu_records_count(st, "pf") != m.count)
				fail_msg("run %d batch %d: count %llu, model %llu", run, bi,
				         (unsigned long long)tu_records_count(st, "pf"),
				         (unsigned long long)m.count);
		}
		if (run % 10 == 9) {
			/* this run is kept: the baseline moves on */
			assert_int_equal(tf_store_undo_drop(st, task), TF_OK);
			assert_int_equal(tu_undo_count(st, task), 0);
			free(e0);
			free(c0);
			free(i0);
			free(o0);
			e0 = tu_export(st, NULL, NULL);
			c0 = cursor_text(st, "pf");
			i0 = index_text(st);
			o0 = order_text(st);
			base = m;
			kept++;
			continue;
		}
		{
			/* the run did change the index (so the comparison below can fail) */
			char *ib = index_text(st), *ob = order_text(st);
			index_runs_changed += strcmp(ib, i0) != 0;
			order_runs_changed += strcmp(ob, o0) != 0;
			free(ib);
			free(ob);
		}
		assert_int_equal(tf_store_rollback(st, task, &recs), TF_OK);
		assert_int_equal(recs, writes);
		{
			char *e1 = tu_export(st, NULL, NULL), *c1 = cursor_text(st, "pf");
			char *i1 = index_text(st), *o1 = order_text(st);
			if (strcmp(e1, e0))
				fail_msg("run %d: export differs after rollback (TF_TEST_SEED=%llu)", run,
				         (unsigned long long)tu_seed_value);
			/* the index, its per-feed digests and time buckets: byte for byte */
			if (strcmp(i1, i0))
				fail_msg("run %d: index differs after rollback (TF_TEST_SEED=%llu)", run,
				         (unsigned long long)tu_seed_value);
			/* the date-added order (TAXII): every record's date and entry */
			if (strcmp(o1, o0))
				fail_msg("run %d: date-added order differs after rollback (TF_TEST_SEED=%llu)",
				         run, (unsigned long long)tu_seed_value);
			assert_string_equal(c1, c0);
			free(o1);
			free(e1);
			free(c1);
			free(i1);
		}
		assert_int_equal(tu_records_count(st, "pf"), base.count);
		assert_int_equal(tu_undo_count(st, task), 0);
		m = base;
	}
	/* the generator really exercised every path */
	assert_true(total_created > 100);
	assert_true(total_updated > 100);
	assert_true(total_skipped > 100);
	assert_true(kept > 0);
	fprintf(stderr, "rollback property: %d runs, %llu created, %llu updated, %llu skipped, %.1f s\n",
	        RUNS, (unsigned long long)total_created, (unsigned long long)total_updated,
	        (unsigned long long)total_skipped, (double)(tf_mono_us() - t_start) / 1e6);
	assert_true(index_runs_changed > RUNS / 2);
	assert_true(order_runs_changed > RUNS / 2);
	free(o0);
	free(e0);
	free(c0);
	free(i0);
	free(obj);
	tf_batch_free(b);
	tf_store_close(st);
}

/* ---- crashes --------------------------------------------------------------------- */

struct half_ctx {
	const char *task;
	tf_batch *b;
	int how;   /* 0: _exit(0), 1: SIGKILL */
};

static int half_then_die(tf_txn *txn, void *vctx)
{
	struct half_ctx *c = vctx;
	tf_progress p = {0};
	if (tf_batch_apply(txn, "cf", c->task, c->b, &p))
		_exit(3);
	if (c->how)
		raise(SIGKILL);
	_exit(0);
}

static tf_store *crash_store(char *path, size_t len, char **e0)
{
	tf_store *st = tu_new_store("crash", path, len);
	tf_batch *b;
	assert_int_equal(tf_batch_new(&b), TF_OK);
	for (int i = 0; i < 100; i++) {
		char key[32];
		snprintf(key, sizeof key, "seed-%03d", i);
		add(b, key, 10, "{\"seed\":true}");
	}
	apply(st, "cf", SEED_TASK, b, NULL);
	tf_batch_free(b);
	assert_int_equal(tf_store_undo_drop(st, SEED_TASK), TF_OK);
	*e0 = tu_export(st, NULL, NULL);
	return st;
}

static void test_crash_mid_batch(void **state)
{
	char path[TU_PATH], *e0;
	tf_store *st = crash_store(path, sizeof path, &e0);
	(void)state;

	tf_store_close(st);
	for (int round = 0; round < 6; round++) {
		char task[TF_UUID_LEN + 1];
		pid_t pid;
		int rc;

		new_id(task);
		pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			tf_store *cs;
			struct half_ctx c = {task, NULL, round % 2};
			if (tf_store_open(&cs, path, 0, NULL, 0) || tf_batch_new(&c.b))
				_exit(2);
			/* half of a 100-record page: 25 updates of the seed, 25 new */
			for (int i = 0; i < 50; i++) {
				char key[32];
				snprintf(key, sizeof key, i < 25 ? "seed-%03d" : "new-%03d", i);
				if (tf_batch_add(c.b, key, "indicator", NULL, NULL, 99, "{\"x\":1}", 7))
					_exit(2);
			}
			tf_store_update(cs, half_then_die, &c);
			_exit(4);   /* not reached */
		}
		rc = tu_wait(pid);
		assert_int_equal(rc, round % 2 ? 128 + SIGKILL : 0);
		/* nothing of it is visible, and the store opens and works */
		st = tu_open(path, 0);
		{
			char *e1 = tu_export(st, NULL, NULL);
			assert_string_equal(e1, e0);
			free(e1);
		}
		assert_int_equal(tu_records_count(st, "cf"), 100);
		assert_int_equal(tu_undo_count(st, task), 0);
		/* the dead writer's lock is recovered: writes, runs and rollbacks work */
		{
			tf_batch *b;
			char t2[TF_UUID_LEN + 1], *e1;
			uint64_t recs;
			new_id(t2);
			assert_int_equal(tf_batch_new(&b), TF_OK);
			add(b, "seed-000", 1000, "{\"after\":1}");
			add(b, "after-crash", 1000, "{\"after\":2}");
			apply(st, "cf", t2, b, NULL);
			tf_batch_free(b);
			assert_int_equal(tu_records_count(st, "cf"), 101);
			assert_int_equal(tf_store_rollback(st, t2, &recs), TF_OK);
			assert_int_equal(recs, 2);
			e1 = tu_export(st, NULL, NULL);
			assert_string_equal(e1, e0);
			free(e1);
		}
		tf_store_close(st);
	}
	free(e0);
}

/* A writer committing 100-record batches, killed at a random instant: only
 * whole batches are left, the cursor names the last committed one, and a
 * rollback restores the store exactly. */
static void test_kill_at_random_instant(void **state)
{
	char path[TU_PATH], *e0;
	tf_store *st = crash_store(path, sizeof path, &e0);
	tu_rng r = {tu_seed_value ^ 0x4b111};
	int partial_seen = 0;
	(void)state;

	tf_store_close(st);
	for (int round = 0; round < 8; round++) {
		char task[TF_UUID_LEN + 1], *exp, *cur;
		int ready[2], done[2], counts[1000] = {0}, maxb = -1;
		size_t n;
		uint64_t recs;
		pid_t pid;
		char c;

		new_id(task);
		assert_int_equal(pipe(ready), 0);
		assert_int_equal(pipe(done), 0);
		pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			tf_store *cs;
			tf_batch *b;
			close(ready[0]);
			close(done[0]);
			if (tf_store_open(&cs, path, 0, NULL, 0) || tf_batch_new(&b))
				_exit(2);
			/* odd rounds: the worker's lazy durability (a killed process
			 * still loses nothing it committed) */
			if (round % 2 && tf_store_set_lazy(cs, 1))
				_exit(2);
			if (write(ready[1], "r", 1) != 1)
				_exit(2);
			for (int bi = 0; bi < 1000; bi++) {
				char text[64];
				json_object *cj;
				tf_batch_clear(b);
				for (int i = 0; i < 100; i++) {
					char key[32], obj[64];
					/* updates of the seed too (batch 0 touches all of it) */
					if (bi == 0)
						snprintf(key, sizeof key, "seed-%03d", i);
					else
						snprintf(key, sizeof key, "b%03d-%03d", bi, i);
					snprintf(obj, sizeof obj, "{\"batch\":%d}", bi);
					if (tf_batch_add(b, key, "indicator", NULL, NULL, 100 + bi, obj, strlen(obj)))
						_exit(2);
				}
				snprintf(text, sizeof text, "{\"batch\":%d}", bi);
				cj = json_tokener_parse(text);
				{
					struct apply_ctx ac = {"cf", task, b, cj, {0}, 0};
					if (tf_store_update(cs, apply_txn, &ac))
						_exit(3);
				}
				/* one byte per committed batch (ignored once the
				 * parent stops reading: the pipe holds 64 KiB) */
				if (write(done[1], "b", 1) != 1)
					_exit(2);
				json_object_put(cj);
			}
			_exit(0);
		}
		close(ready[1]);
		close(done[1]);
		assert_int_equal(read(ready[0], &c, 1), 1);
		close(ready[0]);
		/* half the rounds wait for a few committed batches first, so a
		 * partial state is reached however slow the machine (or the store
		 * backend) is; the kill itself stays at a random instant */
		for (uint64_t k = round % 2 ? 0 : 1 + tu_below(&r, 4); k > 0; k--)
			assert_int_equal(read(done[0], &c, 1), 1);
		usleep((useconds_t)(2000 + tu_below(&r, 60000)));
		kill(pid, SIGKILL);
		close(done[0]);
		tu_wait(pid);

		st = tu_open(path, 0);
		exp = tu_export(st, "cf", &n);
		assert_int_equal(tu_count_lines(exp, n), tu_records_count(st, "cf"));
		/* group the records by batch */
		for (char *line = exp, *nl; *line; line = nl + 1) {
			json_object *o;
			json_object *obj;
			nl = strchr(line, '\n');
			assert_non_null(nl);
			*nl = '\0';
			o = tu_json(line);
			assert_true(json_object_object_get_ex(o, "object", &obj));
			if (json_object_object_get_ex(obj, "batch", NULL)) {
				int bi = json_object_get_int(json_object_object_get(obj, "batch"));
				assert_true(bi >= 0 && bi < 1000);
				counts[bi]++;
				if (bi > maxb)
					maxb = bi;
			}
			json_object_put(o);
		}
		free(exp);
		for (int bi = 0; bi < 1000; bi++)
			if (counts[bi] != (bi <= maxb ? 100 : 0))
				fail_msg("round %d: batch %d has %d of 100 records", round, bi, counts[bi]);
		/* the cursor advanced exactly over the committed batches */
		cur = cursor_text(st, "cf");
		if (maxb < 0) {
			assert_string_equal(cur, "{}");
		} else {
			char want[64];
			snprintf(want, sizeof want, "{\"batch\":%d}", maxb);
			assert_string_equal(cur, want);
			partial_seen++;
		}
		free(cur);
		assert_int_equal(tu_records_count(st, "cf"), 100 + (maxb > 0 ? 100 * (uint64_t)maxb : 0));
		assert_int_equal(tf_store_rollback(st, task, &recs), TF_OK);
		exp = tu_export(st, NULL, NULL);
		assert_string_equal(exp, e0);
		free(exp);
		assert_int_equal(tu_records_count(st, "cf"), 100);
		cur = cursor_text(st, "cf");
		assert_string_equal(cur, "{}");
		free(cur);
		tf_store_close(st);
	}
	assert_true(partial_seen > 0);
	free(e0);
}

/* ---- readers beside a writer ------------------------------------------------------- */

#define RD_BATCHES 200
#define RD_SIZE 100

struct snap_ctx {
	uint64_t count, walked;
};

static int snapshot_txn(tf_txn *txn, void *vctx)
{
	struct snap_ctx *c = vctx;
	tf_cursor *cur;
	const void *k, *v;
	size_t kl, vl;
	int rc;

	if ((rc = tf_records_count(txn, "rd", &c->count)))
		return rc;
	c->walked = 0;
	if ((rc = tf_cursor_open(txn, TF_TBL_RECORDS, &cur)))
		return rc;
	for (rc = tf_cursor_get(cur, TF_SEEK_GE, "rd", 3, &k, &kl, &v, &vl);
	     rc == TF_OK && kl > 3 && !memcmp(k, "rd", 3);
	     rc = tf_cursor_get(cur, TF_SEEK_NEXT, NULL, 0, &k, &kl, &v, &vl))
		c->walked++;
	tf_cursor_close(cur);
	return rc == TF_OK || rc == TF_ENOTFOUND ? TF_OK : rc;
}

/* Reader child: loops until stop has data or EOF. Writes "iterations
 * intermediate" to out; exit status says what went wrong. */
static int reader_main(const char *path, int ready, int stop, int out)
{
	tf_store *st;
	uint64_t last = 0, iters = 0, intermediate = 0;
	char line[64];
	int n;

	if (tf_store_open(&st, path, 0, NULL, 0))
		return 2;
	if (write(ready, "r", 1) != 1)
		return 2;
	for (;;) {
		struct pollfd pfd = {stop, POLLIN, 0};
		struct snap_ctx s;
		char *buf = NULL;
		size_t len = 0, lines;
		FILE *f;

		if (tf_store_view(st, snapshot_txn, &s))
			return 3;
		if (s.count != s.walked || s.count % RD_SIZE)
			return 4;
		if (s.count < last)
			return 5;
		last = s.count;
		if (!(f = open_memstream(&buf, &len)))
			return 6;
		if (tf_records_export(st, "rd", f))
			return 6;
		fclose(f);
		lines = tu_count_lines(buf, len);
		free(buf);
		if (lines % RD_SIZE || lines < last)
			return 7;
		if (lines > 0 && lines < (size_t)RD_BATCHES * RD_SIZE)
			intermediate++;
		iters++;
		/* a short pause: leave the writer some CPU on a small machine */
		if (poll(&pfd, 1, 2) > 0)
			break;
	}
	tf_store_close(st);
	n = snprintf(line, sizeof line, "%llu %llu\n", (unsigned long long)iters,
	             (unsigned long long)intermediate);
	if (write(out, line, (size_t)n) != n)
		return 8;
	return 0;
}

static void test_readers_during_writes(void **state)
{
	char path[TU_PATH];
	tf_store *st = tu_new_store("readers", path, sizeof path);
	int ready[2], stop[2], res[2];
	pid_t pids[3];
	char task[TF_UUID_LEN + 1];
	tf_batch *b;
	uint64_t total_inter = 0;
	(void)state;

	tf_store_close(st);
	assert_int_equal(pipe(ready), 0);
	assert_int_equal(pipe(stop), 0);
	assert_int_equal(pipe(res), 0);
	for (int i = 0; i < 3; i++) {
		pids[i] = fork();
		assert_true(pids[i] >= 0);
		if (pids[i] == 0) {
			close(ready[0]);
			close(stop[1]);
			close(res[0]);
			_exit(reader_main(path, ready[1], stop[0], res[1]));
		}
	}
	close(ready[1]);
	close(stop[0]);
	close(res[1]);
	for (int i = 0; i < 3; i++) {
		char c;
		assert_int_equal(read(ready[0], &c, 1), 1);
	}
	close(ready[0]);
	st = tu_open(path, 0);
	assert_int_equal(tf_store_set_lazy(st, 1), TF_OK);
	new_id(task);
	assert_int_equal(tf_batch_new(&b), TF_OK);
	for (int bi = 0; bi < RD_BATCHES; bi++) {
		tf_progress p;
		tf_batch_clear(b);
		for (int i = 0; i < RD_SIZE; i++) {
			char key[32];
			snprintf(key, sizeof key, "r%03d-%03d", (bi * 7919) % RD_BATCHES, i);
			add(b, key, 1, "{\"reader\":\"test\",\"payload\":\"0123456789abcdef\"}");
		}
		p = apply(st, "rd", task, b, NULL);
		assert_int_equal(p.indicators_created, RD_SIZE);
	}
	tf_batch_free(b);
	assert_int_equal(tf_store_sync(st), TF_OK);
	/* let the readers see the final state at least once */
	usleep(50000);
	close(stop[1]);
	for (int i = 0; i < 3; i++) {
		int rc = tu_wait(pids[i]);
		if (rc)
			fail_msg("reader %d saw an inconsistent snapshot (check %d)", i, rc);
	}
	{
		FILE *in = fdopen(res[0], "r");
		assert_non_null(in);
		for (int i = 0; i < 3; i++) {
			unsigned long long iters, inter;
			assert_int_equal(fscanf(in, "%llu %llu", &iters, &inter), 2);
			assert_true(iters >= 3);
			total_inter += inter;
		}
		fclose(in);
	}
	/* the readers really ran while the batches were being committed */
	fprintf(stderr, "readers: %llu snapshots of intermediate states\n",
	        (unsigned long long)total_inter);
	assert_true(total_inter > 0);
	assert_int_equal(tu_records_count(st, "rd"), RD_BATCHES * RD_SIZE);
	tf_store_close(st);
}

/* ---- paging ------------------------------------------------------------------------ */

static json_object *page(tf_store *st, const char *feed, const char *cursor, int limit)
{
	char *text = NULL;
	json_object *o;
	int rc = tf_records_page(st, feed, cursor, limit, &text, NULL);
	if (rc)
		fail_msg("tf_records_page(%s, %s, %d): %s", feed, cursor ? cursor : "NULL", limit,
		         tf_strerror(rc));
	o = tu_json(text);
	free(text);
	return o;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void test_paging(void **state)
{
	enum { N = 1000 };
	tf_store *st = tu_new_store("page", NULL, 0);
	tu_rng r = {tu_seed_value ^ 0x9a9e};
	char *keys[N + 3], task[TF_UUID_LEN + 1];
	tf_batch *b;
	int order[N];
	const int limits[] = {1, 7, 100, 333, 999, 1000, 1001, 1003, 5000};
	(void)state;

	new_id(task);
	for (int i = 0; i < N; i++) {
		char k[64];
		snprintf(k, sizeof k, "indicator--%05d", i * 13);
		keys[i] = strdup(k);
		order[i] = i;
	}
	/* keys with bytes that must survive the hex cursor */
	keys[N] = strdup("z\"quote\\back/slash");
	keys[N + 1] = strdup("z\xc3\xbcnicode");
	keys[N + 2] = strdup("z\x01\x7f ctl");
	for (int i = N - 1; i > 0; i--) {
		int j = (int)tu_below(&r, (uint64_t)i + 1), t = order[i];
		order[i] = order[j];
		order[j] = t;
	}
	assert_int_equal(tf_batch_new(&b), TF_OK);
	for (int i = 0; i < N; i++)
		add(b, keys[order[i]], 1, "{}");
	for (int i = N; i < N + 3; i++)
		add(b, keys[i], 1, "{}");
	apply(st, "pg", task, b, NULL);
	/* neighbours that must not show up */
	tf_batch_clear(b);
	add(b, "indicator--00000", 1, "{\"neighbour\":1}");
	add(b, "zzz", 1, "{\"neighbour\":1}");
	apply(st, "pg-x", task, b, NULL);
	apply(st, "p", task, b, NULL);
	apply(st, "pgz", task, b, NULL);
	tf_batch_free(b);
	qsort(keys, N + 3, sizeof *keys, cmp_str);

	for (size_t li = 0; li < sizeof limits / sizeof *limits; li++) {
		int limit = limits[li], seen = 0, pages = 0;
		char *cursor = NULL;
		for (;;) {
			json_object *o = page(st, "pg", cursor, limit), *arr, *next;
			size_t n;
			assert_true(json_object_object_get_ex(o, "indicators", &arr));
			assert_true(json_object_object_get_ex(o, "next_cursor", &next));
			n = json_object_array_length(arr);
			pages++;
			for (size_t i = 0; i < n; i++) {
				json_object *rec = json_object_array_get_idx(arr, i);
				assert_true(seen < N + 3);
				assert_string_equal(tf_json_str(rec, "id"), keys[seen]);
				assert_string_equal(tf_json_str(rec, "feed_id"), "pg");
				seen++;
			}
			free(cursor);
			cursor = NULL;
			if (!next) {
				json_object_put(o);
				break;
			}
			assert_int_equal(n, (size_t)limit);   /* only the last page is short */
			cursor = strdup(json_object_get_string(next));
			json_object_put(o);
			assert_true(pages <= N + 4);
		}
		assert_int_equal(seen, N + 3);
		assert_int_equal(pages, (N + 3 + limit - 1) / limit);
	}
	/* an empty feed */
	{
		json_object *o = page(st, "empty", NULL, 10), *arr, *next;
		assert_true(json_object_object_get_ex(o, "indicators", &arr));
		assert_int_equal(json_object_array_length(arr), 0);
		assert_true(json_object_object_get_ex(o, "next_cursor", &next));
		assert_null(next);
		json_object_put(o);
	}
	/* a cursor past the last key: empty, no next */
	{
		json_object *o = page(st, "pg", "ffffffff", 10), *arr, *next;
		assert_true(json_object_object_get_ex(o, "indicators", &arr));
		assert_int_equal(json_object_array_length(arr), 0);
		assert_true(json_object_object_get_ex(o, "next_cursor", &next));
		assert_null(next);
		json_object_put(o);
	}
	/* bad cursors */
	{
		char longhex[2 * 600 + 1];
		const char *bad[] = {"zz", "abc", "0", "ABCD", "g0", " 61", "61 ", "6-1", "+61", "0x61",
		                     longhex};
		memset(longhex, 'a', sizeof longhex - 1);
		longhex[sizeof longhex - 1] = '\0';
		for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
			char *text = (char *)1;
			int rc = tf_records_page(st, "pg", bad[i], 10, &text, NULL);
			if (rc != TF_EINVAL)
				fail_msg("cursor '%.20s' accepted (%s)", bad[i], tf_strerror(rc));
			assert_null(text);
		}
	}
	for (int i = 0; i < N + 3; i++)
		free(keys[i]);
	tf_store_close(st);
}

static void test_export_lines(void **state)
{
	tf_store *st = tu_new_store("export", NULL, 0);
	char task[TF_UUID_LEN + 1], *exp;
	tf_batch *b;
	size_t n;
	(void)state;

	new_id(task);
	assert_int_equal(tf_batch_new(&b), TF_OK);
	add(b, "k2", 2, "{\"multi\":\n  \"line\"}");
	add(b, "k1", 1, "{\"a\":[1,2,3]}");
	apply(st, "f", task, b, NULL);
	apply(st, "g", task, b, NULL);
	tf_batch_free(b);
	/* one record per line, even when the source text had line breaks */
	exp = tu_export(st, "f", &n);
	assert_int_equal(tu_count_lines(exp, n), 2);
	for (char *line = exp, *nl; *line; line = nl + 1) {
		json_object *o, *obj;
		nl = strchr(line, '\n');
		assert_non_null(nl);
		*nl = '\0';
		o = tu_json(line);
		assert_true(json_object_object_get_ex(o, "object", &obj));
		json_object_put(o);
	}
	free(exp);
	/* all feeds, key order: f's then g's */
	exp = tu_export(st, NULL, &n);
	{
		char *f1 = strstr(exp, "\"feed_id\":\"f\""), *g1 = strstr(exp, "\"feed_id\":\"g\"");
		char *k1 = strstr(exp, "\"id\":\"k1\""), *k2 = strstr(exp, "\"id\":\"k2\"");
		assert_non_null(f1);
		assert_non_null(g1);
		assert_true(f1 < g1);
		assert_true(k1 < k2);
	}
	free(exp);
	exp = tu_export(st, "nope", &n);
	assert_int_equal(n, 0);
	free(exp);
	tf_store_close(st);
}

/* The record text is written without json-c (compose): every field is there
 * with its type, and strings with quotes, backslashes and control characters
 * come back as they went in. */
static void test_record_fields(void **state)
{
	tf_store *st = tu_new_store("fields", NULL, 0);
	char task[TF_UUID_LEN + 1], *exp;
	const char *odd = "x\"y\\z\n\x01/\xc3\xa9";
	json_object *obs = json_object_new_array(), *o, *v;
	tf_batch *b;
	size_t n;
	(void)state;

	new_id(task);
	json_object_array_add(obs, json_object_new_string(odd));
	assert_int_equal(tf_batch_new(&b), TF_OK);
	assert_int_equal(tf_batch_add(b, "indicator--1", "indicator", odd, obs, 1700000000123456,
	                              "{\"k\":1}", 7), TF_OK);
	assert_int_equal(tf_batch_add(b, "vt:file:2", "vt-file", NULL, NULL, 0, "[]", 2), TF_OK);
	apply(st, "f", task, b, NULL);
	tf_batch_free(b);
	json_object_put(obs);
	exp = tu_export(st, "f", &n);
	assert_int_equal(tu_count_lines(exp, n), 2);
	*strchr(exp, '\n') = '\0';
	o = tu_json(exp);
	assert_string_equal(tf_json_str(o, "id"), "indicator--1");
	assert_string_equal(tf_json_str(o, "type"), "indicator");
	assert_string_equal(tf_json_str(o, "value"), odd);
	assert_string_equal(tf_json_str(o, "feed_id"), "f");
	assert_string_equal(tf_json_str(o, "task_id"), task);
	assert_string_equal(tf_json_str(o, "modified"), "2023-11-14T22:13:20.123456Z");
	assert_true(json_object_object_get_ex(o, "observables", &v));
	assert_string_equal(json_object_get_string(json_object_array_get_idx(v, 0)), odd);
	assert_true(json_object_object_get_ex(o, "object", &v));
	assert_int_equal(json_object_get_int(json_object_object_get(v, "k")), 1);
	json_object_put(o);
	o = tu_json(exp + strlen(exp) + 1);
	assert_true(json_object_object_get_ex(o, "value", &v) && v == NULL);
	assert_true(json_object_object_get_ex(o, "modified", &v) && v == NULL);
	assert_true(json_object_object_get_ex(o, "observables", &v));
	assert_int_equal(json_object_array_length(v), 0);
	json_object_put(o);
	free(exp);
	tf_store_close(st);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_record_fields),
		cmocka_unit_test(test_batch_limits),
		cmocka_unit_test(test_latest_modified_wins),
		cmocka_unit_test(test_apply_replayed_after_growth),
		cmocka_unit_test(test_rollback_property),
		cmocka_unit_test(test_crash_mid_batch),
		cmocka_unit_test(test_kill_at_random_instant),
		cmocka_unit_test(test_readers_during_writes),
		cmocka_unit_test(test_paging),
		cmocka_unit_test(test_export_lines),
	};
	tu_init("records");
	tu_seed();
	return tu_finish(cmocka_run_group_tests(tests, NULL, NULL));
}
