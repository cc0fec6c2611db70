/* lib/store/lmdb.c: tables, cursors, counters, opening (errors, permissions,
 * corruption), journaled writes and their rollback, map growth across
 * processes. */
#include "testutil.h"

#include <grp.h>
#include <poll.h>

/* ---- small transaction callbacks ----------------------------------------- */

struct kv {
	tf_table tbl;
	const char *k, *v;
	int fail_with;   /* return this after writing (tests abort) */
	int calls;
};

static int put_kv(tf_txn *t, void *vctx)
{
	struct kv *c = vctx;
	int rc = tf_txn_put(t, c->tbl, c->k, strlen(c->k), c->v, strlen(c->v));
	c->calls++;
	return rc ? rc : c->fail_with;
}

static char *get_str(tf_store *st, tf_table tbl, const char *k)
{
	size_t n;
	char *v = tu_raw_get(st, tbl, k, strlen(k), &n), *s;
	if (!v)
		return NULL;
	s = tf_strndup(v, n);
	free(v);
	return s;
}

static void assert_val(tf_store *st, tf_table tbl, const char *k, const char *want)
{
	char *got = get_str(st, tbl, k);
	if (!want) {
		if (got)
			fail_msg("key %s: expected absent, got '%s'", k, got);
		return;
	}
	if (!got)
		fail_msg("key %s: expected '%s', got absent", k, want);
	assert_string_equal(got, want);
	free(got);
}

/* ---- CRUD ------------------------------------------------------------------ */

static int put_in_view(tf_txn *t, void *vctx)
{
	(void)vctx;
	return tf_txn_put(t, TF_TBL_META, "x", 1, "y", 1);
}

static void test_crud(void **state)
{
	tf_store *st = tu_new_store("crud", NULL, 0);
	struct kv c = {TF_TBL_FEEDS, "alpha", "one", TF_OK, 0};
	unsigned char bin[5] = {0, 1, 0, 255, 0};
	size_t n;
	void *v;
	(void)state;

	assert_null(get_str(st, TF_TBL_FEEDS, "alpha"));
	assert_int_equal(tf_store_update(st, put_kv, &c), TF_OK);
	assert_val(st, TF_TBL_FEEDS, "alpha", "one");
	/* tables are separate namespaces */
	assert_val(st, TF_TBL_TASKS, "alpha", NULL);
	/* overwrite */
	c.v = "two";
	assert_int_equal(tf_store_update(st, put_kv, &c), TF_OK);
	assert_val(st, TF_TBL_FEEDS, "alpha", "two");
	/* binary keys and values, embedded NULs, empty value */
	assert_int_equal(tu_raw_put(st, TF_TBL_RUNS, bin, sizeof bin, bin, sizeof bin), TF_OK);
	v = tu_raw_get(st, TF_TBL_RUNS, bin, sizeof bin, &n);
	assert_non_null(v);
	assert_int_equal(n, sizeof bin);
	assert_memory_equal(v, bin, sizeof bin);
	free(v);
	assert_int_equal(tu_raw_put(st, TF_TBL_RUNS, "empty", 5, "", 0), TF_OK);
	v = tu_raw_get(st, TF_TBL_RUNS, "empty", 5, &n);
	assert_non_null(v);
	assert_int_equal(n, 0);
	free(v);
	/* delete; deleting again → TF_ENOTFOUND */
	assert_int_equal(tu_raw_del(st, TF_TBL_FEEDS, "alpha", 5), TF_OK);
	assert_val(st, TF_TBL_FEEDS, "alpha", NULL);
	assert_int_equal(tu_raw_del(st, TF_TBL_FEEDS, "alpha", 5), TF_ENOTFOUND);
	/* a callback's error aborts the transaction: nothing it wrote stays */
	c.k = "beta";
	c.v = "never";
	c.fail_with = TF_ECONFLICT;
	assert_int_equal(tf_store_update(st, put_kv, &c), TF_ECONFLICT);
	assert_val(st, TF_TBL_FEEDS, "beta", NULL);
	/* a read-only snapshot refuses writes */
	assert_int_not_equal(tf_store_view(st, put_in_view, NULL), TF_OK);
	assert_val(st, TF_TBL_META, "x", NULL);
	tf_store_close(st);
}

static void test_data_survives_reopen(void **state)
{
	char path[TU_PATH];
	tf_store *st = tu_new_store("reopen", path, sizeof path);
	struct kv c = {TF_TBL_TASKS, "k", "persisted", TF_OK, 0};
	(void)state;

	assert_int_equal(tf_store_update(st, put_kv, &c), TF_OK);
	tf_store_close(st);
	st = tu_open(path, 0);
	assert_val(st, TF_TBL_TASKS, "k", "persisted");
	tf_store_close(st);
}

/* The header promises 0770 for the directory and 0660 for the files, so the
 * web server's user and the workers can share them whatever the umask. */
static void test_open_modes(void **state)
{
	TU_LMDB_ONLY(); /* LMDB's files, modes and map */
	char path[TU_PATH], f[TU_PATH + 16];
	tf_store *st;
	struct stat sb;
	mode_t old = umask(022);
	(void)state;

	tu_path(path, sizeof path, "modes");
	st = tu_open(path, 0);
	umask(old);
	assert_int_equal(stat(path, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0770);
	snprintf(f, sizeof f, "%s/data.mdb", path);
	assert_int_equal(stat(f, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0660);
	snprintf(f, sizeof f, "%s/lock.mdb", path);
	assert_int_equal(stat(f, &sb), 0);
	assert_int_equal(sb.st_mode & 0777, 0660);
	tf_store_close(st);
}

/* ---- cursors ------------------------------------------------------------------ */

struct cur_ctx {
	int nkeys;
	int seen[100];
	char log[2048];
};

static int cursor_walk(tf_txn *t, void *vctx)
{
	struct cur_ctx *c = vctx;
	tf_cursor *cur;
	const void *k, *v;
	size_t kl, vl;
	int rc, prev = -1;

	c->log[0] = '\0';
	assert_int_equal(tf_cursor_open(t, TF_TBL_QUEUE, &cur), TF_OK);
	/* forward: sorted, each once */
	for (rc = tf_cursor_get(cur, TF_SEEK_FIRST, NULL, 0, &k, &kl, &v, &vl); rc == TF_OK;
	     rc = tf_cursor_get(cur, TF_SEEK_NEXT, NULL, 0, &k, &kl, &v, &vl)) {
		int key;
		assert_int_equal(kl, 3);
		key = (((const char *)k)[1] - '0') * 10 + (((const char *)k)[2] - '0');
		assert_true(key > prev);
		prev = key;
		c->seen[key]++;
		assert_int_equal(vl, 3);
		assert_memory_equal(v, k, 3);
	}
	assert_int_equal(rc, TF_ENOTFOUND);
	/* backward from the last */
	prev = 100;
	for (rc = tf_cursor_get(cur, TF_SEEK_LAST, NULL, 0, &k, &kl, &v, &vl); rc == TF_OK;
	     rc = tf_cursor_get(cur, TF_SEEK_PREV, NULL, 0, &k, &kl, &v, &vl)) {
		int key = (((const char *)k)[1] - '0') * 10 + (((const char *)k)[2] - '0');
		assert_true(key < prev);
		prev = key;
	}
	assert_int_equal(rc, TF_ENOTFOUND);
	/* GE: exact, between, past the end */
	assert_int_equal(tf_cursor_get(cur, TF_SEEK_GE, "k10", 3, &k, &kl, &v, &vl), TF_OK);
	assert_memory_equal(k, "k10", 3);
	assert_int_equal(tf_cursor_get(cur, TF_SEEK_GE, "k101", 4, &k, &kl, &v, &vl), TF_OK);
	assert_memory_equal(k, "k12", 3);
	assert_int_equal(tf_cursor_get(cur, TF_SEEK_GE, "k99", 3, &k, &kl, &v, &vl), TF_ENOTFOUND);
	assert_int_equal(tf_cursor_get(cur, TF_SEEK_GE, "a", 1, &k, &kl, &v, &vl), TF_OK);
	assert_memory_equal(k, "k00", 3);
	tf_cursor_close(cur);
	return TF_OK;
}

/* Deletes every key divisible by 4 while walking forward. */
static int cursor_delete_some(tf_txn *t, void *vctx)
{
	struct cur_ctx *c = vctx;
	tf_cursor *cur;
	const void *k, *v;
	size_t kl, vl;
	int rc, visited = 0;

	assert_int_equal(tf_cursor_open(t, TF_TBL_QUEUE, &cur), TF_OK);
	for (rc = tf_cursor_get(cur, TF_SEEK_FIRST, NULL, 0, &k, &kl, &v, &vl); rc == TF_OK;
	     rc = tf_cursor_get(cur, TF_SEEK_NEXT, NULL, 0, &k, &kl, &v, &vl)) {
		int key = (((const char *)k)[1] - '0') * 10 + (((const char *)k)[2] - '0');
		visited++;
		if (key % 4 == 0)
			assert_int_equal(tf_cursor_del(cur), TF_OK);
	}
	tf_cursor_close(cur);
	assert_int_equal(visited, c->nkeys);
	return rc == TF_ENOTFOUND ? TF_OK : rc;
}

static int cursor_empty(tf_txn *t, void *vctx)
{
	tf_cursor *cur;
	const void *k, *v;
	size_t kl, vl;
	(void)vctx;
	assert_int_equal(tf_cursor_open(t, TF_TBL_SIGNALS, &cur), TF_OK);
	assert_int_equal(tf_cursor_get(cur, TF_SEEK_FIRST, NULL, 0, &k, &kl, &v, &vl), TF_ENOTFOUND);
	assert_int_equal(tf_cursor_get(cur, TF_SEEK_LAST, NULL, 0, &k, &kl, &v, &vl), TF_ENOTFOUND);
	assert_int_equal(tf_cursor_get(cur, TF_SEEK_GE, "a", 1, &k, &kl, &v, &vl), TF_ENOTFOUND);
	tf_cursor_close(cur);
	return TF_OK;
}

static void test_cursors(void **state)
{
	tf_store *st = tu_new_store("cursor", NULL, 0);
	struct cur_ctx c = {0};
	tu_rng r = {tu_seed_value};
	int order[50];
	(void)state;

	/* even keys 0..98 (k00, k02, …), inserted in random order */
	for (int i = 0; i < 50; i++)
		order[i] = 2 * i;
	for (int i = 49; i > 0; i--) {
		int j = (int)tu_below(&r, (uint64_t)i + 1), tmp = order[i];
		order[i] = order[j];
		order[j] = tmp;
	}
	for (int i = 0; i < 50; i++) {
		char key[16];
		snprintf(key, sizeof key, "k%02d", order[i]);
		assert_int_equal(tu_raw_put(st, TF_TBL_QUEUE, key, 3, key, 3), TF_OK);
	}
	c.nkeys = 50;
	assert_int_equal(tf_store_view(st, cursor_walk, &c), TF_OK);
	for (int i = 0; i < 100; i++)
		assert_int_equal(c.seen[i], i % 2 == 0 ? 1 : 0);
	assert_int_equal(tf_store_update(st, cursor_delete_some, &c), TF_OK);
	for (int i = 0; i < 100; i += 2) {
		char key[16];
		size_t n;
		void *v;
		snprintf(key, sizeof key, "k%02d", i);
		v = tu_raw_get(st, TF_TBL_QUEUE, key, 3, &n);
		if (i % 4 == 0)
			assert_null(v);
		else
			assert_non_null(v);
		free(v);
	}
	assert_int_equal(tf_store_view(st, cursor_empty, NULL), TF_OK);
	tf_store_close(st);
}

/* ---- counters ---------------------------------------------------------------- */

struct seq_ctx {
	const char *name;
	int n;
	uint64_t got[8];
	int fail;
};

static int seq_txn(tf_txn *t, void *vctx)
{
	struct seq_ctx *c = vctx;
	for (int i = 0; i < c->n; i++) {
		int rc = tf_txn_seq_next(t, c->name, &c->got[i]);
		if (rc)
			return rc;
	}
	return c->fail;
}

static void test_seq_counters(void **state)
{
	char path[TU_PATH];
	tf_store *st = tu_new_store("seq", path, sizeof path);
	struct seq_ctx a = {"alpha", 3, {0}, TF_OK}, b = {"beta", 1, {0}, TF_OK};
	(void)state;

	assert_int_equal(tf_store_update(st, seq_txn, &a), TF_OK);
	assert_int_equal(a.got[0], 1);
	assert_int_equal(a.got[1], 2);
	assert_int_equal(a.got[2], 3);
	/* independent names */
	assert_int_equal(tf_store_update(st, seq_txn, &b), TF_OK);
	assert_int_equal(b.got[0], 1);
	/* an aborted transaction does not consume values */
	a.n = 2;
	a.fail = TF_EINVAL;
	assert_int_equal(tf_store_update(st, seq_txn, &a), TF_EINVAL);
	a.fail = TF_OK;
	a.n = 1;
	assert_int_equal(tf_store_update(st, seq_txn, &a), TF_OK);
	assert_int_equal(a.got[0], 4);
	/* persistent */
	tf_store_close(st);
	st = tu_open(path, 0);
	assert_int_equal(tf_store_update(st, seq_txn, &a), TF_OK);
	assert_int_equal(a.got[0], 5);
	tf_store_close(st);
}

/* ---- opening: errors ------------------------------------------------------------ */

static void test_open_missing_parent(void **state)
{
	TU_LMDB_ONLY(); /* LMDB's files, modes and map */
	char path[TU_PATH + 32], err[512] = "";
	tf_store *st = (tf_store *)&st;  /* must be set to NULL */
	int rc;
	(void)state;

	tu_path(path, sizeof path, "absent");
	strcat(path, "/parent/store");
	rc = tf_store_open(&st, path, 0, err, sizeof err);
	assert_true(rc == TF_ESTORE || rc == TF_EPERM);
	assert_null(st);
	assert_true(tu_contains(err, path));
	/* no error buffer: still fails cleanly */
	st = (tf_store *)&st;
	assert_int_not_equal(tf_store_open(&st, path, 0, NULL, 0), TF_OK);
	assert_null(st);
}

/* Child: try to open path; exit 0 when the open failed as it should. */
static int child_open_denied(const char *path)
{
	char err[512] = "";
	tf_store *st = (tf_store *)&st;
	int rc = tf_store_open(&st, path, 0, err, sizeof err);

	if (rc == TF_OK) {
		tf_store_close(st);
		return 10;
	}
	if (rc != TF_EPERM && rc != TF_ESTORE)
		return 11;
	if (st)
		return 12;
	if (!strstr(err, path))
		return 13;
	if (rc != TF_EPERM)
		return 14;   /* permission problems must say so */
	return 0;
}

static void test_open_no_permission(void **state)
{
	TU_LMDB_ONLY(); /* LMDB's files, modes and map */
	char top[] = "/tmp/tf-unit-noperm-XXXXXX", dir[TU_PATH], sub[TU_PATH + 16];
	pid_t pid;
	int rc;
	(void)state;

	/* Under /tmp, not the build tree: the clone may sit below a directory
	 * that nobody cannot traverse (e.g. /root), which would deny for the
	 * wrong reason. */
	assert_non_null(mkdtemp(top));
	assert_int_equal(chmod(top, 0755), 0);
	snprintf(dir, sizeof dir, "%s/store", top);
	assert_int_equal(mkdir(dir, 0700), 0);
	assert_int_equal(chmod(dir, 0700), 0);
	snprintf(sub, sizeof sub, "%s/store", dir);
	if (geteuid() != 0) {
		/* Not root: permissions apply to us directly. */
		assert_int_equal(chmod(dir, 0), 0);
		rc = child_open_denied(dir);
		if (!rc)
			rc = child_open_denied(sub);
		chmod(dir, 0700);
		tu_rm_rf(top);
		if (rc)
			fail_msg("open of an unreadable store dir: check %d failed", rc);
		return;
	}
	/* Root bypasses permissions: check as nobody. */
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		if (setgroups(0, NULL) != 0 || setresgid(65534, 65534, 65534) != 0 ||
		    setresuid(65534, 65534, 65534) != 0)
			_exit(77);
		if (access(top, X_OK) != 0)
			_exit(78);
		rc = child_open_denied(dir);       /* existing 0700 dir of root */
		if (!rc)
			rc = child_open_denied(sub);   /* cannot create inside it */
		_exit(rc);
	}
	rc = tu_wait(pid);
	tu_rm_rf(top);
	if (rc == 77)
		skip();   /* setresuid impossible here (no CAP_SETUID): cannot test */
	if (rc == 78)
		fail_msg("test dir %s not traversable by nobody", top);
	switch (rc) {
	case 0: break;
	case 10: fail_msg("nobody opened a root-only 0700 store dir");
	case 11: fail_msg("wrong error code (not TF_EPERM/TF_ESTORE)");
	case 12: fail_msg("*out not NULL on failure");
	case 13: fail_msg("error message does not name the path");
	case 14: fail_msg("permission denied reported as TF_ESTORE, not TF_EPERM");
	default: fail_msg("child failed: %d", rc);
	}
}

static void write_file(const char *path, const void *data, size_t n)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0660);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, n), (ssize_t)n);
	close(fd);
}

static void expect_open_fails(const char *dir)
{
	char err[512] = "";
	tf_store *st = (tf_store *)&st;
	int rc = tf_store_open(&st, dir, 0, err, sizeof err);
	if (rc == TF_OK) {
		tf_store_close(st);
		fail_msg("a corrupt store at %s opened", dir);
	}
	assert_int_equal(rc, TF_ESTORE);
	assert_null(st);
	assert_true(tu_contains(err, dir));
}

static void test_open_corrupt(void **state)
{
	TU_LMDB_ONLY(); /* LMDB's files, modes and map */
	tu_rng r = {tu_seed_value ^ 0xC0FFEE};
	size_t sizes[] = {100, 4096, 8192, 65536, 1 << 20};
	unsigned char *junk = malloc(1 << 20);
	(void)state;

	assert_non_null(junk);
	for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
		char dir[TU_PATH], f[TU_PATH + 16];
		for (size_t i = 0; i < sizes[s]; i++)
			junk[i] = (unsigned char)tu_next(&r);
		tu_path(dir, sizeof dir, "corrupt");
		assert_int_equal(mkdir(dir, 0770), 0);
		snprintf(f, sizeof f, "%s/data.mdb", dir);
		write_file(f, junk, sizes[s]);
		expect_open_fails(dir);
		/* all zeros is garbage too */
		memset(junk, 0, sizes[s]);
		write_file(f, junk, sizes[s]);
		expect_open_fails(dir);
	}
	/* a garbage lock file beside good data: the first opener rebuilds it */
	{
		char dir[TU_PATH], f[TU_PATH + 16];
		tf_store *st = tu_new_store("badlock", dir, sizeof dir);
		struct kv c = {TF_TBL_FEEDS, "kept", "yes", TF_OK, 0};
		assert_int_equal(tf_store_update(st, put_kv, &c), TF_OK);
		tf_store_close(st);
		for (size_t i = 0; i < 8192; i++)
			junk[i] = (unsigned char)tu_next(&r);
		snprintf(f, sizeof f, "%s/lock.mdb", dir);
		write_file(f, junk, 8192);
		st = tu_open(dir, 0);
		assert_val(st, TF_TBL_FEEDS, "kept", "yes");
		tf_store_close(st);
	}
	/* a store path that is a file, not a directory */
	{
		char f[TU_PATH];
		tu_path(f, sizeof f, "plainfile");
		write_file(f, "x", 1);
		expect_open_fails(f);
	}
	free(junk);
}

/* ---- journaled writes ---------------------------------------------------------- */

#define T1 "11111111-1111-4111-8111-111111111111"
#define T2 "22222222-2222-4222-8222-222222222222"

struct jop {
	const char *task;
	int del;          /* 1: tf_txn_del_j */
	tf_table tbl;
	const char *k, *v;
	int vlen;         /* -1: strlen(v) */
};

struct jops {
	const struct jop *ops;
	int n;
};

static int jops_txn(tf_txn *t, void *vctx)
{
	struct jops *j = vctx;
	for (int i = 0; i < j->n; i++) {
		const struct jop *o = &j->ops[i];
		int rc = o->del ? tf_txn_del_j(t, o->task, o->tbl, o->k, strlen(o->k))
		                : tf_txn_put_j(t, o->task, o->tbl, o->k, strlen(o->k), o->v,
		                               o->vlen < 0 ? strlen(o->v) : (size_t)o->vlen);
		if (rc)
			return rc;
	}
	return TF_OK;
}

static void run_jops(tf_store *st, const struct jop *ops, int n)
{
	struct jops j = {ops, n};
	assert_int_equal(tf_store_update(st, jops_txn, &j), TF_OK);
}

static void test_journal_rollback(void **state)
{
	tf_store *st = tu_new_store("journal", NULL, 0);
	uint64_t recs = 999;
	size_t n;
	void *v;
	static const struct jop base[] = {
		{T2, 0, TF_TBL_RECORDS, "r1", "v1", -1},
		{T2, 0, TF_TBL_RECORDS, "r2", "v2", -1},
		{T2, 0, TF_TBL_RECORDS, "r5", "", 0},
		{T2, 0, TF_TBL_CURSORS, "f", "c0", -1},
	};
	static const struct jop run1[] = {
		{T1, 0, TF_TBL_RECORDS, "r1", "v1-a", -1},
		{T1, 0, TF_TBL_RECORDS, "r1", "v1-b", -1},
		{T1, 1, TF_TBL_RECORDS, "r2", NULL, 0},
		{T1, 0, TF_TBL_RECORDS, "r3", "v3", -1},
		{T1, 1, TF_TBL_RECORDS, "r4", NULL, 0},     /* absent: no-op, no entry */
		{T1, 0, TF_TBL_RECORDS, "r5", "now set", -1},
		{T1, 0, TF_TBL_CURSORS, "f", "c1", -1},
	};
	static const struct jop run2[] = {
		{T1, 0, TF_TBL_RECORDS, "r3", "v3-b", -1},
		{T1, 1, TF_TBL_RECORDS, "r3", NULL, 0},
		{T1, 0, TF_TBL_RECORDS, "r3", "v3-c", -1},
		{T1, 0, TF_TBL_RECORDS, "r2", "back", -1},
	};
	(void)state;

	run_jops(st, base, 4);
	assert_int_equal(tf_store_undo_drop(st, T2), TF_OK);
	assert_int_equal(tu_undo_count(st, T2), 0);
	run_jops(st, run1, 7);
	assert_int_equal(tu_undo_count(st, T1), 6);
	run_jops(st, run2, 4);
	assert_int_equal(tu_undo_count(st, T1), 10);
	assert_val(st, TF_TBL_RECORDS, "r1", "v1-b");
	assert_val(st, TF_TBL_RECORDS, "r2", "back");
	assert_val(st, TF_TBL_RECORDS, "r3", "v3-c");
	assert_val(st, TF_TBL_RECORDS, "r5", "now set");
	/* another run's entries in between must be untouched by T1's rollback */
	{
		static const struct jop other[] = {{T2, 0, TF_TBL_RECORDS, "zz", "t2", -1}};
		run_jops(st, other, 1);
	}
	assert_int_equal(tf_store_rollback(st, T1, &recs), TF_OK);
	assert_int_equal(recs, 9);   /* 10 entries, one of them the cursor */
	assert_int_equal(tu_undo_count(st, T1), 0);
	assert_val(st, TF_TBL_RECORDS, "r1", "v1");
	assert_val(st, TF_TBL_RECORDS, "r2", "v2");
	assert_val(st, TF_TBL_RECORDS, "r3", NULL);
	assert_val(st, TF_TBL_RECORDS, "r4", NULL);
	assert_val(st, TF_TBL_CURSORS, "f", "c0");
	/* an empty prior value is restored as present-and-empty, not absent */
	v = tu_raw_get(st, TF_TBL_RECORDS, "r5", 2, &n);
	assert_non_null(v);
	assert_int_equal(n, 0);
	free(v);
	assert_val(st, TF_TBL_RECORDS, "zz", "t2");
	assert_int_equal(tu_undo_count(st, T2), 1);
	/* rolling back again is harmless */
	assert_int_equal(tf_store_rollback(st, T1, &recs), TF_OK);
	assert_int_equal(recs, 0);
	/* drop keeps the data */
	assert_int_equal(tf_store_undo_drop(st, T2), TF_OK);
	assert_int_equal(tu_undo_count(st, T2), 0);
	assert_val(st, TF_TBL_RECORDS, "zz", "t2");
	/* task ids must be UUID-sized */
	assert_int_equal(tf_store_rollback(st, "short", &recs), TF_EINVAL);
	assert_int_equal(tf_store_undo_drop(st, "short"), TF_EINVAL);
	assert_int_equal(tf_store_undo_count(st, "short", &recs), TF_EINVAL);
	{
		static const struct jop bad[] = {{"short", 0, TF_TBL_RECORDS, "q", "q", -1}};
		struct jops j = {bad, 1};
		assert_int_equal(tf_store_update(st, jops_txn, &j), TF_EINVAL);
		assert_val(st, TF_TBL_RECORDS, "q", NULL);
	}
	tf_store_close(st);
}

/* Many entries: the rollback goes in chunks (of a size private to store.c,
 * 8192 to 32768 so far) and must still be exact. */
#define MANY_ENTRIES 100000
#define RESUME_ENTRIES 80000
struct many_ctx {
	const char *task;
	int from, n, gen;
};

static int many_txn(tf_txn *t, void *vctx)
{
	struct many_ctx *c = vctx;
	for (int i = c->from; i < c->from + c->n; i++) {
		char k[16], v[32];
		int rc;
		snprintf(k, sizeof k, "m%06d", i % 15000);
		snprintf(v, sizeof v, "gen%d-%d", c->gen, i);
		if ((rc = tf_txn_put_j(t, c->task, TF_TBL_RECORDS, k, strlen(k), v, strlen(v))))
			return rc;
	}
	return TF_OK;
}

static int check_many(tf_txn *t, void *vctx)
{
	int *bad = vctx;
	for (int i = 0; i < 15000; i++) {
		char k[16], want[32];
		const void *v;
		size_t vl;
		int rc;
		snprintf(k, sizeof k, "m%06d", i);
		rc = tf_txn_get(t, TF_TBL_RECORDS, k, strlen(k), &v, &vl);
		if (i < 5000) {
			snprintf(want, sizeof want, "gen0-%d", i);
			if (rc || vl != strlen(want) || memcmp(v, want, vl))
				(*bad)++;
		} else if (rc != TF_ENOTFOUND) {
			(*bad)++;
		}
	}
	return TF_OK;
}

static void test_rollback_chunks(void **state)
{
	tf_store *st = tu_new_store("chunks", NULL, 0);
	struct many_ctx base = {T2, 0, 5000, 0}, run = {T1, 0, 10000, 1};
	uint64_t recs = 0;
	int bad = 0;
	(void)state;

	assert_int_equal(tf_store_update(st, many_txn, &base), TF_OK);
	assert_int_equal(tf_store_undo_drop(st, T2), TF_OK);
	/* over several transactions, each key written many times */
	assert_int_equal(tf_store_set_lazy(st, 1), TF_OK);
	for (int i = 0; i < MANY_ENTRIES; i += 25000) {
		run.from = i;
		run.n = i + 25000 > MANY_ENTRIES ? MANY_ENTRIES - i : 25000;
		run.gen = 1 + i;
		assert_int_equal(tf_store_update(st, many_txn, &run), TF_OK);
	}
	assert_int_equal(tu_undo_count(st, T1), MANY_ENTRIES);
	assert_int_equal(tf_store_rollback(st, T1, &recs), TF_OK);
	assert_int_equal(recs, MANY_ENTRIES);
	assert_int_equal(tu_undo_count(st, T1), 0);
	assert_int_equal(tf_store_view(st, check_many, &bad), TF_OK);
	assert_int_equal(bad, 0);
	tf_store_close(st);
}

/* A rollback killed part-way leaves a consistent store; a second rollback
 * finishes the job exactly. Round k kills the rolling-back process once k of
 * its chunks have committed (seen from here), so the resumed rollback starts
 * from a real partial state. */
static void test_rollback_resume_after_kill(void **state)
{
	/* Needs several 32k-entry rollback chunks; on PostgreSQL, at one round
	 * trip per entry under ASan, that is minutes (kills mid-write on
	 * PostgreSQL: test_records' crash tests). */
	TU_LMDB_ONLY();
	char path[TU_PATH];
	tf_store *st = tu_new_store("resume", path, sizeof path);
	struct many_ctx base = {T2, 0, 5000, 0}, run = {T1, 0, 10000, 1};
	int partial = 0;
	(void)state;

	assert_int_equal(tf_store_update(st, many_txn, &base), TF_OK);
	assert_int_equal(tf_store_undo_drop(st, T2), TF_OK);
	tf_store_close(st);
	for (int round = 0; round < 3; round++) {
		uint64_t recs = 0, left, seen = RESUME_ENTRIES;
		int bad = 0, pipefd[2], gofd[2], drops = 0, gone = 0;
		pid_t pid;
		char c;

		st = tu_open(path, 0);
		assert_int_equal(tf_store_set_lazy(st, 1), TF_OK);
		for (int i = 0; i < RESUME_ENTRIES; i += 20000) {
			run.from = i;
			run.n = 20000;
			run.gen = 100 + round;
			assert_int_equal(tf_store_update(st, many_txn, &run), TF_OK);
		}
		tf_store_close(st);
		assert_int_equal(pipe(pipefd), 0);
		assert_int_equal(pipe(gofd), 0);
		pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			tf_store *cs;
			close(pipefd[0]);
			close(gofd[1]);
			if (tf_store_open(&cs, path, 0, NULL, 0))
				_exit(1);
			if (write(pipefd[1], "r", 1) != 1 || read(gofd[0], &c, 1) != 1)
				_exit(2);
			tf_store_rollback(cs, T1, NULL);
			_exit(0);
		}
		close(pipefd[1]);
		close(gofd[0]);
		assert_int_equal(read(pipefd[0], &c, 1), 1);
		close(pipefd[0]);
		/* open here before the rollback starts: an open takes the write
		 * lock briefly and would otherwise wait behind whole chunks */
		st = tu_open(path, 0);
		assert_int_equal(write(gofd[1], "g", 1), 1);
		close(gofd[1]);
		if (round == 0)
			kill(pid, SIGKILL);   /* most likely before its first chunk */
		/* Watch the committed chunks go by: freeze the rolling-back process
		 * now and then (SIGSTOP, and wait until it is stopped), look, and
		 * let it go on until it has committed `round` chunks. Frozen while
		 * we count, it cannot race past the state we want to kill it in. */
		for (int i = 0; i < 20000 && drops < round; i++) {
			uint64_t now;
			int ws;
			usleep(1000);
			if (kill(pid, SIGSTOP) != 0 || waitpid(pid, &ws, WUNTRACED) != pid) {
				gone = 1;
				break;
			}
			if (!WIFSTOPPED(ws)) {
				gone = 1;   /* it ended (and is reaped): nothing left to catch */
				break;
			}
			now = tu_undo_count(st, T1);
			if (getenv("TF_TEST_VERBOSE"))
				fprintf(stderr, "  sample %d: %llu\n", i, (unsigned long long)now);
			if (now < seen)
				drops++, seen = now;
			if (now == 0 || drops >= round)
				break;
			kill(pid, SIGCONT);
		}
		if (!gone) {
			kill(pid, SIGKILL);
			kill(pid, SIGCONT);
			tu_wait(pid);
		}
		tf_store_close(st);
		st = tu_open(path, 0);
		left = tu_undo_count(st, T1);
		if (getenv("TF_TEST_VERBOSE"))
			fprintf(stderr, "round %d: %llu of %d entries left\n", round,
			        (unsigned long long)left, RESUME_ENTRIES);
		assert_true(left <= seen);
		if (left > 0 && left < RESUME_ENTRIES)
			partial++;
		assert_int_equal(tf_store_rollback(st, T1, &recs), TF_OK);
		assert_int_equal(recs, left);
		assert_int_equal(tu_undo_count(st, T1), 0);
		assert_int_equal(tf_store_view(st, check_many, &bad), TF_OK);
		assert_int_equal(bad, 0);
		tf_store_close(st);
	}
	/* at least one resumed rollback started from a partial state */
	assert_true(partial > 0);
}

/* ---- dead readers ------------------------------------------------------------ */

static int die_in_view(tf_txn *t, void *vctx)
{
	(void)t, (void)vctx;
	raise(SIGKILL);
	return TF_OK;
}

struct rewrite_ctx {
	int round;
};

static int rewrite_txn(tf_txn *t, void *vctx)
{
	struct rewrite_ctx *c = vctx;
	char k[16], v[1024];
	for (int i = 0; i < 50; i++) {
		int rc;
		snprintf(k, sizeof k, "rw%03d", i);
		memset(v, 'a' + (c->round + i) % 26, sizeof v);
		if ((rc = tf_txn_put(t, TF_TBL_RECORDS, k, strlen(k), v, sizeof v)))
			return rc;
	}
	return TF_OK;
}

static off_t data_size(const char *path)
{
	char f[TU_PATH + 16];
	struct stat sb;
	snprintf(f, sizeof f, "%s/data.mdb", path);
	assert_int_equal(stat(f, &sb), 0);
	return sb.st_size;
}

/* A process killed inside a read snapshot leaves its reader slot behind
 * while other processes keep the store open; unless the next open clears it
 * (mdb_reader_check), that snapshot pins every page freed after it and the
 * file grows without bound. */
static void test_dead_reader_released(void **state)
{
	TU_LMDB_ONLY(); /* LMDB's files, modes and map */
	char path[TU_PATH];
	tf_store *st = tu_new_store("deadreader", path, sizeof path), *keep;
	struct rewrite_ctx c = {0};
	off_t before, after;
	int go[2];
	pid_t pid;
	(void)state;

	for (c.round = 0; c.round < 20; c.round++)
		assert_int_equal(tf_store_update(st, rewrite_txn, &c), TF_OK);
	tf_store_close(st);
	assert_int_equal(pipe(go), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		tf_store *cs;
		char ch;
		close(go[1]);
		if (read(go[0], &ch, 1) != 1 || tf_store_open(&cs, path, 0, NULL, 0))
			_exit(1);
		tf_store_view(cs, die_in_view, NULL);
		_exit(2);
	}
	close(go[0]);
	/* this process keeps the store open throughout (as the web server does) */
	keep = tu_open(path, 0);
	assert_int_equal(write(go[1], "g", 1), 1);
	close(go[1]);
	assert_int_equal(tu_wait(pid), 128 + SIGKILL);
	before = data_size(path);
	/* a later process opens the store and writes a lot */
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		tf_store *cs;
		if (tf_store_open(&cs, path, 0, NULL, 0))
			_exit(1);
		for (; c.round < 320; c.round++)
			if (tf_store_update(cs, rewrite_txn, &c))
				_exit(2);
		tf_store_close(cs);
		_exit(0);
	}
	assert_int_equal(tu_wait(pid), 0);
	after = data_size(path);
	if (after - before > (off_t)(1 << 20))
		fail_msg("data.mdb grew from %lld to %lld bytes: a dead reader pins old pages",
		         (long long)before, (long long)after);
	tf_store_close(keep);
}

/* ---- map growth -------------------------------------------------------------- */

struct big_ctx {
	int from, n;
	size_t vsize;
	int calls;
};

static void fill_value(unsigned char *buf, size_t n, int key)
{
	tu_rng r = {(uint64_t)key * 7919u + 1};
	for (size_t i = 0; i < n; i += 8) {
		uint64_t x = tu_next(&r);
		memcpy(buf + i, &x, n - i < 8 ? n - i : 8);
	}
}

static int big_txn(tf_txn *t, void *vctx)
{
	struct big_ctx *c = vctx;
	unsigned char *buf = malloc(c->vsize);
	int rc = TF_OK;

	c->calls++;
	if (!buf)
		return TF_ENOMEM;
	for (int i = c->from; !rc && i < c->from + c->n; i++) {
		char k[16];
		snprintf(k, sizeof k, "big%06d", i);
		fill_value(buf, c->vsize, i);
		rc = tf_txn_put(t, TF_TBL_RECORDS, k, strlen(k), buf, c->vsize);
	}
	free(buf);
	return rc;
}

struct verify_big {
	int n;
	size_t vsize;
	int bad;
};

static int verify_big_txn(tf_txn *t, void *vctx)
{
	struct verify_big *c = vctx;
	unsigned char *buf = malloc(c->vsize);
	c->bad = 0;
	if (!buf)
		return TF_ENOMEM;
	for (int i = 0; i < c->n; i++) {
		char k[16];
		const void *v;
		size_t vl;
		snprintf(k, sizeof k, "big%06d", i);
		fill_value(buf, c->vsize, i);
		if (tf_txn_get(t, TF_TBL_RECORDS, k, strlen(k), &v, &vl) || vl != c->vsize ||
		    memcmp(v, buf, vl))
			c->bad++;
	}
	free(buf);
	return TF_OK;
}

#define BIG_VSIZE 8192
#define BIG_KEYS 3000   /* 3000 × 8 KiB ≈ 24 MiB */

static void test_map_growth(void **state)
{
	TU_LMDB_ONLY(); /* LMDB's files, modes and map */
	char path[TU_PATH];
	tf_store *st;
	int ready[2], go[2], rc;
	size_t before;
	pid_t pid;
	char c;
	(void)state;

	tu_path(path, sizeof path, "growth");
	st = tu_open(path, 1 << 20);
	assert_int_equal(tu_raw_put(st, TF_TBL_META, "hello", 5, "world", 5), TF_OK);
	before = tf_store_map_size(st);
	assert_true(before <= (2u << 20));
	tf_store_close(st);

	assert_int_equal(pipe(ready), 0);
	assert_int_equal(pipe(go), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		/* A process that opened the store before it grew. */
		tf_store *cs;
		struct verify_big vb = {BIG_KEYS, BIG_VSIZE, 0};
		struct kv w = {TF_TBL_META, "child", "wrote after growth", TF_OK, 0};
		char *s;
		close(ready[0]);
		close(go[1]);
		if (tf_store_open(&cs, path, 1 << 20, NULL, 0))
			_exit(1);
		s = get_str(cs, TF_TBL_META, "hello");
		if (!s || strcmp(s, "world"))
			_exit(2);
		free(s);
		if (write(ready[1], "r", 1) != 1 || read(go[0], &c, 1) != 1)
			_exit(3);
		if (tf_store_view(cs, verify_big_txn, &vb) != TF_OK)
			_exit(4);
		if (vb.bad)
			_exit(5);
		if (tf_store_map_size(cs) < (20u << 20))
			_exit(6);
		if (tf_store_update(cs, put_kv, &w) != TF_OK)
			_exit(7);
		tf_store_close(cs);
		_exit(0);
	}
	close(ready[1]);
	close(go[0]);
	assert_int_equal(read(ready[0], &c, 1), 1);

	st = tu_open(path, 1 << 20);
	{
		/* one transaction bigger than the map: replayed after growth */
		struct big_ctx one = {0, 500, BIG_VSIZE, 0};
		assert_int_equal(tf_store_update(st, big_txn, &one), TF_OK);
		assert_true(one.calls > 1);
		/* then many smaller ones */
		for (int i = 500; i < BIG_KEYS; i += 100) {
			struct big_ctx b = {i, 100, BIG_VSIZE, 0};
			assert_int_equal(tf_store_update(st, big_txn, &b), TF_OK);
		}
	}
	assert_true(tf_store_map_size(st) > before);
	assert_true(tf_store_map_size(st) >= (20u << 20));
	{
		struct verify_big vb = {BIG_KEYS, BIG_VSIZE, 0};
		assert_int_equal(tf_store_view(st, verify_big_txn, &vb), TF_OK);
		assert_int_equal(vb.bad, 0);
	}
	assert_int_equal(write(go[1], "g", 1), 1);
	rc = tu_wait(pid);
	close(ready[0]);
	close(go[1]);
	if (rc)
		fail_msg("the process opened before the growth failed check %d", rc);
	assert_val(st, TF_TBL_META, "child", "wrote after growth");
	tf_store_close(st);
	/* reopening with a small map size keeps all the data readable */
	st = tu_open(path, 1 << 20);
	{
		struct verify_big vb = {BIG_KEYS, BIG_VSIZE, 0};
		assert_int_equal(tf_store_view(st, verify_big_txn, &vb), TF_OK);
		assert_int_equal(vb.bad, 0);
	}
	tf_store_close(st);
}

/* A process that opens the store while another grows the map must still get
 * in (the growth can land between mdb_env_open and the first transaction). */
static void test_open_while_map_grows(void **state)
{
	TU_LMDB_ONLY(); /* LMDB's files, modes and map */
	char path[TU_PATH];
	tf_store *st;
	int failures = 0, opens = 0;
	pid_t pid;
	(void)state;

	tu_path(path, sizeof path, "growing");
	st = tu_open(path, 1 << 20);
	tf_store_close(st);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		tf_store *cs;
		if (tf_store_open(&cs, path, 1 << 20, NULL, 0))
			_exit(1);
		for (int i = 0; i < 4000; i += 20) {
			struct big_ctx b = {i, 20, BIG_VSIZE, 0};
			if (tf_store_update(cs, big_txn, &b) != TF_OK)
				_exit(2);
		}
		tf_store_close(cs);
		_exit(0);
	}
	while (waitpid(pid, NULL, WNOHANG) == 0) {
		char err[256];
		opens++;
		if (tf_store_open(&st, path, 1 << 20, err, sizeof err)) {
			failures++;
			print_message("open %d failed: %s\n", opens, err);
			continue;
		}
		if (tu_raw_put(st, TF_TBL_META, "p", 1, "x", 1) != TF_OK)
			failures++;
		tf_store_close(st);
	}
	assert_int_equal(failures, 0);
	assert_true(opens > 0);
}

/* ---- PostgreSQL only: schema versions and dropped connections ------------- */

static void test_pg_schema_versions(void **state)
{
	TU_PG_ONLY();
	char loc[TU_PATH], bare[TU_PATH + 64], err[512] = "";
	tf_store *st = NULL;
	int from = -1, to = -1;
	(void)state;

	/* a database without the schema: refused, and told what to do */
	tu_store_loc(loc, sizeof loc, "schema");
	snprintf(bare, sizeof bare, "%s%coptions=-csearch_path%%3Dno_such_schema", tu_pg(),
	         strchr(tu_pg(), '?') ? '&' : '?');
	assert_int_equal(tf_store_open(&st, bare, 0, err, sizeof err), TF_ESTORE);
	assert_null(st);
	assert_non_null(strstr(err, "threatfeed db migrate"));
	/* migrating again is harmless */
	assert_int_equal(tf_store_migrate(loc, &from, &to, err, sizeof err), TF_OK);
	assert_int_equal(from, to);
	assert_true(to >= 1);
	/* a schema newer than this build: refused by open and by migrate */
	tu_pg_exec(loc, "INSERT INTO tf_schema (version) VALUES (999)");
	assert_int_equal(tf_store_open(&st, loc, 0, err, sizeof err), TF_ESTORE);
	assert_non_null(strstr(err, "999"));
	assert_int_equal(tf_store_migrate(loc, &from, &to, err, sizeof err), TF_ESTORE);
	assert_non_null(strstr(err, "newer"));
}

/* The server ends our sessions (a restart, a failover, an admin): the next
 * transaction reconnects and nothing written before is lost or doubled. */
static void test_pg_reconnects_after_dropped_connection(void **state)
{
	TU_PG_ONLY();
	char loc[TU_PATH];
	tf_store *st = tu_new_store("drop", loc, sizeof loc);
	struct kv a = {TF_TBL_META, "a", "1", 0, 0}, b = {TF_TBL_META, "b", "2", 0, 0};
	(void)state;

	assert_int_equal(tf_store_update(st, put_kv, &a), TF_OK);
	assert_val(st, TF_TBL_META, "a", "1");
	tu_pg_exec(tu_pg(), "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
	                 "WHERE pid <> pg_backend_pid() AND backend_type = 'client backend' "
	                 "AND query NOT LIKE '%pg_terminate_backend%'");
	assert_int_equal(tf_store_update(st, put_kv, &b), TF_OK);
	assert_val(st, TF_TBL_META, "a", "1");
	assert_val(st, TF_TBL_META, "b", "2");
	tf_store_close(st);
}

/* ---- runs on many hosts (store.h) --------------------------------------------- */

struct held {
	const char *name;
	int held;
};

static int lease_peek(tf_txn *t, void *vctx)
{
	struct held *h = vctx;
	return tf_txn_lease_held(t, h->name, &h->held);
}

static int wait_readable(int fd, int ms)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};
	return poll(&p, 1, ms) == 1;
}

/* A lease is seen by every other handle while its holder's session lives,
 * and gone with the session; a notification reaches a listener's fd. */
static void test_pg_leases_and_notifications(void **state)
{
	TU_PG_ONLY();
	char loc[TU_PATH], err[512];
	tf_store *a = tu_new_store("lease", loc, sizeof loc), *b = NULL;
	struct held h = {"task-1", -1}, other = {"task-2", -1};
	int fd = -1, n = 0;
	(void)state;

	assert_int_equal(tf_store_open(&b, loc, 0, err, sizeof err), TF_OK);
	assert_true(tf_store_shared(a));
	assert_int_equal(tf_store_view(b, lease_peek, &h), TF_OK);
	assert_int_equal(h.held, 0);
	assert_int_equal(tf_store_lease(a, "task-1"), TF_OK);
	assert_int_equal(tf_store_view(b, lease_peek, &h), TF_OK);
	assert_int_equal(h.held, 1);
	assert_int_equal(tf_store_view(b, lease_peek, &other), TF_OK);
	assert_int_equal(other.held, 0);

	assert_int_equal(tf_store_listen(b, "c_task-1", &fd), TF_OK);
	assert_true(fd >= 0);
	assert_int_equal(tf_store_notify(a, "c_task-2"), TF_OK); /* not b's channel */
	assert_int_equal(tf_store_notify(a, "c_task-1"), TF_OK);
	assert_true(wait_readable(fd, 10000));
	assert_int_equal(tf_store_notifications(b, &n, &fd), TF_OK);
	assert_int_equal(n, 1);

	tf_store_close(a); /* its session ends: so does the lease */
	h.held = -1;
	for (int i = 0; i < 200 && h.held; i++) {
		assert_int_equal(tf_store_view(b, lease_peek, &h), TF_OK);
		if (h.held)
			usleep(10000);
	}
	assert_int_equal(h.held, 0);
	tf_store_close(b);
}

/* LMDB is one host's store: no leases to take, nothing to listen to. */
static void test_lmdb_is_single_host(void **state)
{
	TU_LMDB_ONLY();
	char loc[TU_PATH];
	tf_store *st = tu_new_store("single", loc, sizeof loc);
	struct held h = {"task-1", -1};
	int fd = 0;
	(void)state;

	assert_false(tf_store_shared(st));
	assert_int_equal(tf_store_lease(st, "task-1"), TF_OK);
	assert_int_equal(tf_store_view(st, lease_peek, &h), TF_EINVAL);
	assert_int_equal(tf_store_notify(st, "queue"), TF_OK);
	assert_int_equal(tf_store_listen(st, "queue", &fd), TF_EINVAL);
	assert_int_equal(fd, -1);
	tf_store_close(st);
}


/* ---- signals: beside the tables, never under the writer lock ------------------- */

struct sget_ctx {
	const char *key;
	unsigned char v[64];
	size_t vl;
	int rc;
};

static int sget_txn(tf_txn *t, void *vctx)
{
	struct sget_ctx *c = vctx;
	c->rc = tf_txn_signal_get(t, c->key, strlen(c->key), c->v, sizeof c->v, &c->vl);
	return TF_OK;
}

static int sget(tf_store *st, const char *key, int write, char *out)
{
	struct sget_ctx c = {.key = key, .rc = -1};
	assert_int_equal(write ? tf_store_update(st, sget_txn, &c) : tf_store_view(st, sget_txn, &c),
	                 TF_OK);
	if (c.rc == TF_OK) {
		assert_true(c.vl < sizeof c.v);
		memcpy(out, c.v, c.vl);
		out[c.vl] = '\0';
	}
	return c.rc;
}

struct scan_ctx {
	char seen[256];
	int n;
	int stop_at;
};

static int scan_one(const void *k, size_t kl, const void *v, size_t vl, void *vctx)
{
	struct scan_ctx *c = vctx;
	size_t used = strlen(c->seen);
	snprintf(c->seen + used, sizeof c->seen - used, "%.*s=%.*s;", (int)kl, (const char *)k,
	         (int)vl, (const char *)v);
	return ++c->n == c->stop_at ? TF_ECANCELLED : TF_OK;
}

struct scan_args {
	const char *prefix;
	size_t max;
	struct scan_ctx *c;
	int rc;
};

static int scan_txn(tf_txn *t, void *vctx)
{
	struct scan_args *a = vctx;
	a->rc = tf_txn_signal_scan(t, a->prefix, strlen(a->prefix), a->max, scan_one, a->c);
	return TF_OK;
}

static int scan(tf_store *st, const char *prefix, size_t max, int stop_at, char *seen)
{
	struct scan_ctx c = {.stop_at = stop_at};
	struct scan_args a = {prefix, max, &c, -1};
	assert_int_equal(tf_store_view(st, scan_txn, &a), TF_OK);
	strcpy(seen, c.seen);
	return a.rc;
}

static void test_signals(void **state)
{
	char path[TU_PATH], got[80];
	tf_store *st = tu_new_store("signals", path, sizeof path), *again;
	unsigned char out[16];
	size_t ol = 0;
	(void)state;

	assert_int_equal(sget(st, "c1", 0, got), TF_ENOTFOUND);
	/* raise: the first value goes in whole */
	assert_int_equal(tf_store_signal_write(st, "c1", 2, "\x01" "alice", 6, 1, out, sizeof out,
	                                       &ol), TF_OK);
	assert_int_equal(ol, 6);
	assert_memory_equal(out, "\x01" "alice", 6);
	/* a higher rank raises the first byte only: alice's request stays */
	assert_int_equal(tf_store_signal_write(st, "c1", 2, "\x02" "bob", 4, 1, out, sizeof out,
	                                       &ol), TF_OK);
	assert_int_equal(ol, 6);
	assert_memory_equal(out, "\x02" "alice", 6);
	/* a lower one changes nothing */
	assert_int_equal(tf_store_signal_write(st, "c1", 2, "\x01" "carol", 6, 1, NULL, 0, NULL),
	                 TF_OK);
	assert_int_equal(sget(st, "c1", 0, got), TF_OK);
	assert_string_equal(got, "\x02" "alice");
	/* seen from a write transaction too */
	assert_int_equal(sget(st, "c1", 1, got), TF_OK);
	assert_string_equal(got, "\x02" "alice");
	/* a plain write replaces */
	assert_int_equal(tf_store_signal_write(st, "a3", 2, "three", 5, 0, NULL, 0, NULL), TF_OK);
	assert_int_equal(tf_store_signal_write(st, "a1", 2, "one", 3, 0, NULL, 0, NULL), TF_OK);
	assert_int_equal(tf_store_signal_write(st, "a2", 2, "two", 3, 0, NULL, 0, NULL), TF_OK);
	assert_int_equal(tf_store_signal_write(st, "a2", 2, "TWO", 3, 0, NULL, 0, NULL), TF_OK);
	/* prefix scans in key order, bounded, stoppable */
	assert_int_equal(scan(st, "a", 10, 0, got), TF_OK);
	assert_string_equal(got, "a1=one;a2=TWO;a3=three;");
	assert_int_equal(scan(st, "a", 2, 0, got), TF_OK);
	assert_string_equal(got, "a1=one;a2=TWO;");
	assert_int_equal(scan(st, "a", 10, 1, got), TF_ECANCELLED);
	assert_string_equal(got, "a1=one;");
	assert_int_equal(scan(st, "b", 10, 0, got), TF_OK);
	assert_string_equal(got, "");
	/* none of it is in the tables */
	assert_null(tu_raw_get(st, TF_TBL_META, "a1", 2, &ol));
	/* bounds */
	assert_int_equal(tf_store_signal_write(st, "", 0, "x", 1, 0, NULL, 0, NULL), TF_EINVAL);
	assert_int_equal(tf_store_signal_write(st, "k", 1, "", 0, 0, NULL, 0, NULL), TF_EINVAL);
	/* durable: another handle (a new process's view) sees them; delete */
	again = tu_open(path, 0);
	assert_int_equal(sget(again, "a2", 0, got), TF_OK);
	assert_string_equal(got, "TWO");
	assert_int_equal(tf_store_signal_del(again, "a2", 2), TF_OK);
	assert_int_equal(tf_store_signal_del(again, "a2", 2), TF_ENOTFOUND);
	tf_store_close(again);
	assert_int_equal(sget(st, "a2", 0, got), TF_ENOTFOUND);
	assert_int_equal(scan(st, "a", 10, 0, got), TF_OK);
	assert_string_equal(got, "a1=one;a3=three;");
	tf_store_close(st);
}

/* In a child: holds an update open (the writer lock) until told to go on. */
static int hold_txn(tf_txn *t, void *vctx)
{
	int *fds = vctx;
	char ch;
	if (tf_txn_put(t, TF_TBL_META, "held", 4, "1", 1) || write(fds[0], "h", 1) != 1 ||
	    read(fds[1], &ch, 1) != 1)
		return TF_ESYS;
	return TF_OK;
}

static void on_alarm(int sig)
{
	(void)sig;
	_exit(99);
}

/* The point of signals: written and read while another process holds the
 * writer lock mid-transaction (a worker frozen in a page commit). A hang
 * here is the bug: the child doing the signal work gives up after 20 s. */
static void test_signals_while_writer_lock_held(void **state)
{
	char path[TU_PATH];
	tf_store *st = tu_new_store("siglock", path, sizeof path);
	int held[2], go[2], fds[2];
	pid_t holder, doer;
	char ch;
	(void)state;

	tf_store_close(st);
	assert_int_equal(pipe(held), 0);
	assert_int_equal(pipe(go), 0);
	holder = fork();
	assert_true(holder >= 0);
	if (holder == 0) {
		tf_store *cs;
		signal(SIGALRM, on_alarm); /* never outlives a failed test */
		alarm(60);
		fds[0] = held[1], fds[1] = go[0];
		if (tf_store_open(&cs, path, 0, NULL, 0))
			_exit(1);
		_exit(tf_store_update(cs, hold_txn, fds) ? 2 : 0);
	}
	assert_int_equal(read(held[0], &ch, 1), 1); /* the lock is held now */
	doer = fork();
	assert_true(doer >= 0);
	if (doer == 0) {
		tf_store *cs;
		char got[80];
		signal(SIGALRM, on_alarm);
		alarm(20);
		if (tf_store_open(&cs, path, 0, NULL, 0) ||
		    tf_store_signal_write(cs, "cT", 2, "\x02" "x", 2, 1, NULL, 0, NULL) ||
		    sget(cs, "cT", 0, got) || strcmp(got, "\x02" "x") ||
		    tf_store_signal_del(cs, "cT", 2))
			_exit(3);
		tf_store_close(cs);
		_exit(0);
	}
	assert_int_equal(tu_wait(doer), 0);
	assert_int_equal(write(go[1], "g", 1), 1);
	assert_int_equal(tu_wait(holder), 0);
	close(held[0]), close(held[1]), close(go[0]), close(go[1]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_open_while_map_grows),
		cmocka_unit_test(test_crud),
		cmocka_unit_test(test_pg_schema_versions),
		cmocka_unit_test(test_pg_reconnects_after_dropped_connection),
		cmocka_unit_test(test_pg_leases_and_notifications),
		cmocka_unit_test(test_lmdb_is_single_host),
		cmocka_unit_test(test_data_survives_reopen),
		cmocka_unit_test(test_open_modes),
		cmocka_unit_test(test_cursors),
		cmocka_unit_test(test_seq_counters),
		cmocka_unit_test(test_open_missing_parent),
		cmocka_unit_test(test_open_no_permission),
		cmocka_unit_test(test_open_corrupt),
		cmocka_unit_test(test_journal_rollback),
		cmocka_unit_test(test_rollback_chunks),
		cmocka_unit_test(test_rollback_resume_after_kill),
		cmocka_unit_test(test_dead_reader_released),
		cmocka_unit_test(test_map_growth),
		cmocka_unit_test(test_signals),
		cmocka_unit_test(test_signals_while_writer_lock_held),
	};
	tu_init("store");
	tu_seed();
	return tu_finish(cmocka_run_group_tests(tests, NULL, NULL));
}
