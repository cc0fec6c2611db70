/* The fixtures every cmocka unit test shares (one test_X.c per module X):
 * temporary stores, raw store access, tasks and runs, config files,
 * recorded data under tests/data, stand-in scripts.
 *
 * Every test binary keeps its stores under build/test-tmp/unit-<name>-<pid>/
 * (found from the binary's own path, so the working directory does not
 * matter) and removes that directory when every test passed; a failing run
 * leaves it for inspection.
 *
 * Randomness is a seeded PRNG: TF_TEST_SEED=<n> repeats a run, and the seed
 * in use is printed at start. TF_TEST_FILTER=<glob> runs only matching tests. */
#ifndef TF_TESTUTIL_H
#define TF_TESTUTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <regex.h>
#include <json-c/json.h>
#include <libpq-fe.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "err.h"
#include "feed.h"
#include "json.h"
#include "tf_limits.h"
#include "records.h"
#include "runctl.h"
#include "store.h"
#include "task.h"
#include "util.h"

/* Path buffers. */
#define TU_PATH PATH_MAX

/* ---- temporary directories ------------------------------------------------ */

static char tu_base[1024];
static unsigned tu_dir_counter;

/* build/ is two levels above build/asan/tests/test_x. */
static inline void tu_init(const char *name)
{
	char exe[1024], dir[1024];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
	char *slash;
	int up = 3;

	if (n > 0) {
		exe[n] = '\0';
		while (up-- > 0 && (slash = strrchr(exe, '/')))
			*slash = '\0';
		snprintf(dir, sizeof dir, "%.1000s/test-tmp", exe);
	} else {
		snprintf(dir, sizeof dir, "build/test-tmp");
	}
	/* TF_TEST_FILTER=test_x (glob) runs only matching tests */
	if (getenv("TF_TEST_FILTER") && *getenv("TF_TEST_FILTER"))
		cmocka_set_test_filter(getenv("TF_TEST_FILTER"));
	mkdir(dir, 0755);
	snprintf(tu_base, sizeof tu_base, "%.900s/unit-%.60s-%ld", dir, name, (long)getpid());
	if (mkdir(tu_base, 0755) != 0 && errno != EEXIST) {
		fprintf(stderr, "testutil: cannot create %s: %s\n", tu_base, strerror(errno));
		exit(2);
	}
}

/* A fresh directory path (not created) under this binary's base dir. */
static inline void tu_path(char *buf, size_t len, const char *what)
{
	snprintf(buf, len, "%s/%s-%u", tu_base, what, ++tu_dir_counter);
}

static inline int tu_rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb, (void)flag, (void)ftw;
	return remove(p) != 0 && errno != ENOENT ? -1 : 0;
}

static inline void tu_rm_rf(const char *path)
{
	nftw(path, tu_rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* Call at the end of main with cmocka's result. */
static inline int tu_finish(int failures)
{
	if (failures == 0)
		tu_rm_rf(tu_base);
	else
		fprintf(stderr, "testutil: %d failure(s); stores kept in %s\n", failures, tu_base);
	return failures;
}

/* ---- seeded PRNG (splitmix64) ---------------------------------------------- */

static uint64_t tu_seed_value;

static inline uint64_t tu_seed(void)
{
	const char *s = getenv("TF_TEST_SEED");
	tu_seed_value = s && *s ? strtoull(s, NULL, 0) : 20261125ULL;
	fprintf(stderr, "testutil: TF_TEST_SEED=%llu\n", (unsigned long long)tu_seed_value);
	return tu_seed_value;
}

typedef struct tu_rng {
	uint64_t s;
} tu_rng;

static inline uint64_t tu_next(tu_rng *r)
{
	uint64_t z = (r->s += 0x9E3779B97F4A7C15ULL);
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
	return z ^ (z >> 31);
}

/* Uniform in [0, n). */
static inline uint64_t tu_below(tu_rng *r, uint64_t n)
{
	return n ? tu_next(r) % n : 0;
}

/* ---- store helpers ------------------------------------------------------- */

static inline tf_store *tu_open(const char *path, size_t map_size)
{
	tf_store *st = NULL;
	char err[512] = "";
	int rc = tf_store_open(&st, path, map_size, err, sizeof err);
	if (rc != TF_OK)
		fail_msg("tf_store_open(%s): %s (%s)", path, tf_strerror(rc), err);
	return st;
}

/* TF_TEST_PG=<postgresql:// URI> runs the store-backed tests on PostgreSQL
 * (scripts/test.sh starts a throwaway server): every new store is then a
 * fresh schema of that database, migrated, instead of a fresh directory. */
static inline const char *tu_pg(void)
{
	const char *u = getenv("TF_TEST_PG");
	return u && *u ? u : NULL;
}

/* Tests of what only one backend has (LMDB's map, file modes; PostgreSQL's
 * connections) are skipped on the other, and counted as skipped. */
#define TU_LMDB_ONLY() do { if (tu_pg()) { skip(); } } while (0)
#define TU_PG_ONLY() do { if (!tu_pg()) { skip(); } } while (0)

/* Runs one SQL statement on the PostgreSQL at loc; a failure fails the test. */
static inline void tu_pg_exec(const char *loc, const char *sql)
{
	PGconn *conn = PQconnectdb(loc);
	PGresult *res = PQexec(conn, sql);

	if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK)
		fail_msg("testutil: %s: %s", sql, PQerrorMessage(conn));
	PQclear(res);
	PQfinish(conn);
}

/* A location for a new, empty store: a directory path, or on PostgreSQL the
 * URI of a new schema (created and migrated here). */
static inline void tu_store_loc(char *buf, size_t len, const char *what)
{
	const char *base = tu_pg();
	char schema[96], sql[160], err[512];
	int from, to;

	if (!base) {
		tu_path(buf, len, what);
		return;
	}
	snprintf(schema, sizeof schema, "t_%ld_%u_%.40s", (long)getpid(), ++tu_dir_counter, what);
	for (char *p = schema; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9')))
			*p = '_';
	snprintf(sql, sizeof sql, "CREATE SCHEMA %s", schema);
	tu_pg_exec(base, sql);
	snprintf(buf, len, "%s%coptions=-csearch_path%%3D%s", base, strchr(base, '?') ? '&' : '?',
	         schema);
	if (tf_store_migrate(buf, &from, &to, err, sizeof err))
		fail_msg("testutil: migrate %s: %s", buf, err);
}

/* A new store in a fresh location; the location is copied to path if not
 * NULL. */
static inline tf_store *tu_new_store(const char *what, char *path, size_t len)
{
	char p[TU_PATH];
	tu_store_loc(p, sizeof p, what);
	if (path)
		snprintf(path, len, "%s", p);
	return tu_open(p, 0);
}

static inline json_object *tu_json(const char *text)
{
	json_object *o = NULL;
	char err[256];
	if (tf_json_parse(text, strlen(text), 64, &o, err, sizeof err) != TF_OK)
		fail_msg("bad JSON in test: %s: %s", err, text);
	return o;
}

/* Creates a feed from a JSON body; fails the test on error. */
static inline void tu_feed(tf_store *st, const char *body)
{
	json_object *b = tu_json(body);
	char *out = NULL, err[256] = "";
	int rc = tf_feed_create(st, b, &out, NULL, err, sizeof err);
	json_object_put(b);
	if (rc != TF_OK)
		fail_msg("tf_feed_create(%s): %s: %s", body, tf_strerror(rc), err);
	free(out);
}

/* A minimal stix_bundle feed named id. */
static inline void tu_simple_feed(tf_store *st, const char *id)
{
	char body[256];
	snprintf(body, sizeof body,
	         "{\"id\":\"%s\",\"name\":\"Feed %s\",\"type\":\"stix_bundle\","
	         "\"url\":\"https://example.test/%s.json\"}",
	         id, id, id);
	tu_feed(st, body);
}

/* Every record (feed_id NULL: all feeds) as malloc'd JSON lines. */
static inline char *tu_export(tf_store *st, const char *feed_id, size_t *len)
{
	char *buf = NULL;
	size_t n = 0;
	FILE *f = open_memstream(&buf, &n);
	int rc;

	assert_non_null(f);
	rc = tf_records_export(st, feed_id, f);
	fclose(f);
	if (rc != TF_OK)
		fail_msg("tf_records_export: %s", tf_strerror(rc));
	if (len)
		*len = n;
	return buf;
}

static inline size_t tu_count_lines(const char *s, size_t n)
{
	size_t lines = 0;
	for (size_t i = 0; i < n; i++)
		lines += s[i] == '\n';
	return lines;
}

struct tu_count_ctx {
	const char *feed_id;
	uint64_t n;
};

static inline int tu_count_txn(tf_txn *t, void *vctx)
{
	struct tu_count_ctx *c = vctx;
	return tf_records_count(t, c->feed_id, &c->n);
}

static inline uint64_t tu_records_count(tf_store *st, const char *feed_id)
{
	struct tu_count_ctx c = {feed_id, 0};
	assert_int_equal(tf_store_view(st, tu_count_txn, &c), TF_OK);
	return c.n;
}

static inline uint64_t tu_undo_count(tf_store *st, const char *task_id)
{
	uint64_t n = 99999;
	assert_int_equal(tf_store_undo_count(st, task_id, &n), TF_OK);
	return n;
}

/* The task's JSON parsed (caller puts). */
static inline json_object *tu_task(tf_store *st, const char *task_id)
{
	char *text = NULL;
	json_object *o;
	int rc = tf_task_read(st, task_id, &text, NULL);
	if (rc != TF_OK)
		fail_msg("tf_task_read(%s): %s", task_id, tf_strerror(rc));
	o = tu_json(text);
	free(text);
	return o;
}

/* The task's status name as stored (static string from the task table). */
static inline tf_status tu_task_status(tf_store *st, const char *task_id)
{
	json_object *o = tu_task(st, task_id);
	tf_status s = TF_ST__COUNT;
	tf_status_parse(tf_json_str(o, "status"), &s);
	json_object_put(o);
	return s;
}

/* ---- raw table access ---------------------------------------------------- */

struct tu_raw {
	tf_table tbl;
	const void *key;
	size_t klen;
	const void *val;
	size_t vlen;
	void *out;   /* get: malloc'd copy */
	size_t outlen;
};

static inline int tu_raw_put_txn(tf_txn *t, void *vctx)
{
	struct tu_raw *r = vctx;
	return tf_txn_put(t, r->tbl, r->key, r->klen, r->val, r->vlen);
}

static inline int tu_raw_del_txn(tf_txn *t, void *vctx)
{
	struct tu_raw *r = vctx;
	return tf_txn_del(t, r->tbl, r->key, r->klen);
}

static inline int tu_raw_get_txn(tf_txn *t, void *vctx)
{
	struct tu_raw *r = vctx;
	const void *v;
	size_t vl;
	int rc = tf_txn_get(t, r->tbl, r->key, r->klen, &v, &vl);
	if (rc)
		return rc;
	r->out = malloc(vl ? vl : 1);
	if (!r->out)
		return TF_ENOMEM;
	memcpy(r->out, v, vl);
	r->outlen = vl;
	return TF_OK;
}

static inline int tu_raw_put(tf_store *st, tf_table tbl, const void *k, size_t kl, const void *v,
                             size_t vl)
{
	struct tu_raw r = {tbl, k, kl, v, vl, NULL, 0};
	return tf_store_update(st, tu_raw_put_txn, &r);
}

static inline int tu_raw_del(tf_store *st, tf_table tbl, const void *k, size_t kl)
{
	struct tu_raw r = {tbl, k, kl, NULL, 0, NULL, 0};
	return tf_store_update(st, tu_raw_del_txn, &r);
}

/* malloc'd copy of the value or NULL (absent). */
static inline void *tu_raw_get(tf_store *st, tf_table tbl, const void *k, size_t kl, size_t *vl)
{
	struct tu_raw r = {tbl, k, kl, NULL, 0, NULL, 0};
	int rc = tf_store_view(st, tu_raw_get_txn, &r);
	if (rc != TF_OK && rc != TF_ENOTFOUND)
		fail_msg("raw get: %s", tf_strerror(rc));
	if (vl)
		*vl = r.outlen;
	return r.out;
}

/* ---- processes ------------------------------------------------------------ */

/* Waits for pid; returns its exit status, or 128+signal. */
static inline int tu_wait(pid_t pid)
{
	int status;
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -1;
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return -1;
}

/* True when s contains needle (NULL-safe). */
static inline int tu_contains(const char *s, const char *needle)
{
	return s && needle && strstr(s, needle) != NULL;
}

/* ---- tasks and runs (test_task.c, test_runctl.c) -------------------------- */

/* A new queued task of feed into id (TF_UUID_LEN + 1 bytes). */
static inline void tu_create(tf_store *st, const char *feed, char *id)
{
	char active[TF_UUID_LEN + 1] = "";
	int rc = tf_task_create(st, feed, id, active);
	if (rc)
		fail_msg("tf_task_create(%s): %s (active %s)", feed, tf_strerror(rc), active);
}

/* The string at o.path1[.path2], or NULL. */
static inline const char *tu_jstr(json_object *o, const char *path1, const char *path2)
{
	json_object *v = o;
	if (path1 && !json_object_object_get_ex(v, path1, &v))
		return NULL;
	if (path2 && (!v || !json_object_object_get_ex(v, path2, &v)))
		return NULL;
	return v && json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
}

/* True when o has member k and it is JSON null. */
static inline int tu_is_null(json_object *o, const char *k)
{
	json_object *v = (json_object *)1;
	return json_object_object_get_ex(o, k, &v) && v == NULL;
}

/* True when s is an RFC 3339 UTC time as we write them. */
static inline int tu_rfc3339(const char *s)
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

/* Claims queued task id for a run (it must then be running). */
static inline void tu_claim(tf_store *st, const char *id)
{
	int claimed = 0;
	assert_int_equal(tf_runctl_claim(st, id, 100, &claimed), TF_OK);
	assert_int_equal(claimed, 1);
	assert_int_equal(tu_task_status(st, id), TF_ST_RUNNING);
}

/* ---- files ----------------------------------------------------------------- */

/* The whole file at path, NUL-terminated; *len (may be NULL) gets its length.
 * NULL when it cannot be opened or is empty (a file another process is about
 * to write counts as not there yet). The caller frees it. */
static inline char *tu_slurp(const char *path, size_t *len)
{
	char *buf = NULL;
	size_t n = 0, cap = 0;
	FILE *f = fopen(path, "rb");

	if (!f)
		return NULL;
	for (;;) {
		if (cap - n < 4096) {
			char *grown = realloc(buf, cap = cap ? 2 * cap : 65536);
			assert_non_null(grown);
			buf = grown;
		}
		size_t got = fread(buf + n, 1, cap - n - 1, f);
		n += got;
		if (!got)
			break;
	}
	fclose(f);
	if (!n) {
		free(buf);
		return NULL;
	}
	buf[n] = '\0';
	if (len)
		*len = n;
	return buf;
}

/* A recorded fixture, tests/data/SUB/NAME (tests/data is $TF_TEST_DATA when
 * set): the test fails when it is missing. */
static inline char *tu_data(const char *sub, const char *name, size_t *len)
{
	const char *dir = getenv("TF_TEST_DATA");
	char path[TU_PATH];
	char *buf;

	snprintf(path, sizeof path, "%s/%s/%s", dir && *dir ? dir : "tests/data", sub, name);
	if (!(buf = tu_slurp(path, len)))
		fail_msg("cannot read %s (run from the repository root or set TF_TEST_DATA)", path);
	return buf;
}

/* Loads cfg with a config file holding text (THREATFEED_CONF names it for
 * this call only); err may be NULL. What tf_config_load returns. */
static inline int tu_config(tf_config *cfg, const char *text, char *err, size_t errlen)
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
	remove(path);
	return rc;
}

/* Writes text to path as an executable script (a stand-in CLI or runner). */
static inline void tu_write_script(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
	assert_int_equal(chmod(path, 0755), 0);
}

#endif
