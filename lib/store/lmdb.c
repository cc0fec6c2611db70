#include "store.h"
#include "err.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#define DEFAULT_MAP_SIZE ((size_t)256 << 20)
#define ROLLBACK_CHUNK 32768
#define UNDO_KEY_LEN (TF_UUID_LEN + 8)
#define UNDO_SEQ "undo" /* META counter numbering undo entries */
/* Free space under which a failed write is taken for a full disk. */
#define NEARLY_FULL_BYTES ((uint64_t)16 << 20)

static const char *const table_names[TF_TBL__COUNT] = {
	"meta", "feeds", "feedrun", "cursors", "counts", "records", "tasks",
	"torder", "active", "signals", "runs", "undo", "queue",
};

struct tf_store {
	MDB_env *env;
	MDB_dbi dbi[TF_TBL__COUNT];
	size_t map_size;
	char *path;
};

struct tf_txn {
	tf_store *st;
	MDB_txn *txn;
	int write;
	/* The undo sequence is read once per transaction and written back
	 * before the commit: one META access per page, not per record. */
	uint64_t undo_seq;
	int undo_loaded, undo_dirty;
};

struct tf_cursor {
	MDB_cursor *cur;
};

static int map_err(int rc)
{
	switch (rc) {
	case 0: return TF_OK;
	case MDB_NOTFOUND: return TF_ENOTFOUND;
	case MDB_MAP_FULL: return TF_EFULL;
	case ENOMEM: return TF_ENOMEM;
	case EACCES: case EPERM: case EROFS: return TF_EPERM;
	case ENOSPC: case EDQUOT: return TF_ENOSPACE;
	default: return TF_ESTORE;
	}
}

static int begin(tf_store *st, unsigned flags, MDB_txn **txn);
static int seq_store(tf_txn *t, const char *name, uint64_t n);

static int open_dbis(tf_store *st)
{
	MDB_txn *txn = NULL;
	/* begin(): a writer may grow the map between mdb_env_open and here. */
	int rc = begin(st, 0, &txn);

	if (rc)
		return rc; /* txn was never set: nothing to abort */
	for (int i = 0; !rc && i < TF_TBL__COUNT; i++)
		rc = mdb_dbi_open(txn, table_names[i], MDB_CREATE, &st->dbi[i]);
	if (rc) {
		mdb_txn_abort(txn);
		return rc;
	}
	return mdb_txn_commit(txn);
}

/* The web server's user and the runs it spawns share the files. */
static void share_files(const char *path)
{
	char f[600];
	snprintf(f, sizeof f, "%s/data.mdb", path);
	chmod(f, 0660);
	snprintf(f, sizeof f, "%s/lock.mdb", path);
	chmod(f, 0660);
}

int tf_store_open(tf_store **out, const char *path, size_t map_size, char *err, size_t errlen)
{
	tf_store *st;
	int rc, dead = 0;
	char dummy[8];

	if (!err) {
		err = dummy;
		errlen = sizeof dummy;
	}
	*out = NULL;
	if (mkdir(path, 0770) == 0) {
		chmod(path, 0770); /* as documented, whatever the umask */
	} else if (errno != EEXIST) {
		rc = errno;
		snprintf(err, errlen, "cannot create store directory %s: %s", path, strerror(rc));
		return rc == EACCES || rc == EPERM || rc == EROFS ? TF_EPERM : TF_ESTORE;
	}
	if (!(st = calloc(1, sizeof *st)) || !(st->path = strdup(path))) {
		free(st);
		return TF_ENOMEM;
	}
	st->map_size = map_size ? map_size : DEFAULT_MAP_SIZE;
	if ((rc = mdb_env_create(&st->env)) || (rc = mdb_env_set_maxdbs(st->env, TF_TBL__COUNT)) ||
	    (rc = mdb_env_set_mapsize(st->env, st->map_size)) ||
	    (rc = mdb_env_set_maxreaders(st->env, 510)) ||
	    (rc = mdb_env_open(st->env, path, MDB_NOTLS, 0660))) {
		snprintf(err, errlen, "cannot open store %s: %s", path, mdb_strerror(rc));
		goto fail;
	}
	share_files(path);
	/* Readers left behind by killed processes would pin old pages forever. */
	mdb_reader_check(st->env, &dead);
	if ((rc = open_dbis(st))) {
		snprintf(err, errlen, "cannot open the tables of store %s: %s", path, mdb_strerror(rc));
		goto fail;
	}
	{
		MDB_envinfo info;
		if (!mdb_env_info(st->env, &info))
			st->map_size = info.me_mapsize;
	}
	*out = st;
	return TF_OK;
fail:
	if (st->env)
		mdb_env_close(st->env);
	free(st->path);
	free(st);
	return map_err(rc) == TF_EPERM ? TF_EPERM : TF_ESTORE;
}

void tf_store_close(tf_store *st)
{
	if (!st)
		return;
	mdb_env_close(st->env);
	free(st->path);
	free(st);
}

int tf_store_set_lazy(tf_store *st, int lazy)
{
	return map_err(mdb_env_set_flags(st->env, MDB_NOSYNC, lazy ? 1 : 0));
}

int tf_store_sync(tf_store *st)
{
	return map_err(mdb_env_sync(st->env, 1));
}

size_t tf_store_map_size(tf_store *st)
{
	return st->map_size;
}

/* LMDB reports a page write cut short by a full disk as EIO: a failed write
 * on a (nearly) full file system is called what it is. */
static int write_err(tf_store *st, int rc)
{
	struct statvfs sv;

	if (rc == EIO && !statvfs(st->path, &sv) &&
	    (uint64_t)sv.f_bavail * sv.f_frsize < NEARLY_FULL_BYTES)
		return TF_ENOSPACE;
	return map_err(rc);
}

/* Another process may have grown the map: adopt its size. */
static int begin(tf_store *st, unsigned flags, MDB_txn **txn)
{
	int rc = mdb_txn_begin(st->env, NULL, flags, txn);
	/* It may grow again before we get in: each time it at least doubled,
	 * so this ends. */
	for (int i = 0; rc == MDB_MAP_RESIZED && i < 32; i++) {
		if ((rc = mdb_env_set_mapsize(st->env, 0)) == 0)
			rc = mdb_txn_begin(st->env, NULL, flags, txn);
	}
	if (!rc) {
		MDB_envinfo info;
		if (!mdb_env_info(st->env, &info))
			st->map_size = info.me_mapsize;
	}
	return rc;
}

static int grow(tf_store *st)
{
	size_t next = st->map_size * 2;
	int rc = mdb_env_set_mapsize(st->env, next);
	if (rc) {
		tf_err("store: cannot grow map to %zu bytes: %s", next, mdb_strerror(rc));
		return TF_ESTORE;
	}
	st->map_size = next;
	tf_debug("store: map grown to %zu bytes", next);
	return TF_OK;
}

int tf_store_update(tf_store *st, tf_txn_fn fn, void *ctx)
{
	for (int attempt = 0; attempt < 16; attempt++) {
		tf_txn t = {.st = st, .write = 1};
		int rc = begin(st, 0, &t.txn);
		if (rc)
			return map_err(rc);
		rc = fn(&t, ctx);
		if (!rc && t.undo_dirty)
			rc = seq_store(&t, UNDO_SEQ, t.undo_seq);
		if (rc) {
			mdb_txn_abort(t.txn);
			if (rc == TF_EFULL && grow(st) == TF_OK)
				continue;
			return rc;
		}
		rc = mdb_txn_commit(t.txn);
		if (rc == MDB_MAP_FULL && grow(st) == TF_OK)
			continue;
		return write_err(st, rc);
	}
	return TF_EFULL;
}

int tf_store_view(tf_store *st, tf_txn_fn fn, void *ctx)
{
	tf_txn t = {.st = st, .write = 0};
	int rc = begin(st, MDB_RDONLY, &t.txn);
	if (rc)
		return map_err(rc);
	rc = fn(&t, ctx);
	mdb_txn_abort(t.txn);
	return rc;
}

int tf_txn_get(tf_txn *t, tf_table tbl, const void *key, size_t klen, const void **val,
               size_t *vlen)
{
	MDB_val k = {klen, (void *)key}, v;
	int rc = mdb_get(t->txn, t->st->dbi[tbl], &k, &v);
	if (rc) {
		*val = NULL;
		*vlen = 0;
		return map_err(rc);
	}
	*val = v.mv_data;
	*vlen = v.mv_size;
	return TF_OK;
}

int tf_txn_put(tf_txn *t, tf_table tbl, const void *key, size_t klen, const void *val,
               size_t vlen)
{
	MDB_val k = {klen, (void *)key}, v = {vlen, (void *)val};
	return map_err(mdb_put(t->txn, t->st->dbi[tbl], &k, &v, 0));
}

int tf_txn_del(tf_txn *t, tf_table tbl, const void *key, size_t klen)
{
	MDB_val k = {klen, (void *)key};
	return map_err(mdb_del(t->txn, t->st->dbi[tbl], &k, NULL));
}

static void put_be64(unsigned char *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--, v >>= 8)
		p[i] = (unsigned char)v;
}

/* A named counter's value (0 when never set). */
static int seq_load(tf_txn *t, const char *name, uint64_t *n)
{
	const void *v;
	size_t vl;
	int rc = tf_txn_get(t, TF_TBL_META, name, strlen(name), &v, &vl);

	*n = 0;
	if (rc == TF_OK && vl == sizeof *n)
		memcpy(n, v, sizeof *n);
	return rc == TF_ENOTFOUND ? TF_OK : rc;
}

static int seq_store(tf_txn *t, const char *name, uint64_t n)
{
	return tf_txn_put(t, TF_TBL_META, name, strlen(name), &n, sizeof n);
}

int tf_txn_seq_next(tf_txn *t, const char *name, uint64_t *out)
{
	uint64_t n;
	int rc = seq_load(t, name, &n);

	if (rc || (rc = seq_store(t, name, ++n)))
		return rc;
	*out = n;
	return TF_OK;
}

static int undo_seq_next(tf_txn *t, uint64_t *seq)
{
	if (!t->undo_loaded) {
		int rc = seq_load(t, UNDO_SEQ, &t->undo_seq);
		if (rc)
			return rc;
		t->undo_loaded = 1;
	}
	*seq = ++t->undo_seq;
	t->undo_dirty = 1;
	return TF_OK;
}

/* Undo entry: table(1) had_prior(1) klen(4, native) key prior-value.
 * prior is the caller's copy: a value read from the store is only valid
 * until the next write, and the undo entry is such a write. */
static int journal(tf_txn *t, const char *task_id, tf_table tbl, const void *key, size_t klen,
                   const void *prior, size_t plen)
{
	unsigned char ukey[UNDO_KEY_LEN], *entry;
	uint32_t kl32 = (uint32_t)klen;
	uint64_t seq;
	int rc;

	if (strlen(task_id) != TF_UUID_LEN)
		return TF_EINVAL;
	if ((rc = undo_seq_next(t, &seq)))
		return rc;
	memcpy(ukey, task_id, TF_UUID_LEN);
	put_be64(ukey + TF_UUID_LEN, seq);
	/* Reserve the value in place: no malloc per journaled write. */
	{
		MDB_val k = {sizeof ukey, ukey}, v = {6 + klen + plen, NULL};
		rc = mdb_put(t->txn, t->st->dbi[TF_TBL_UNDO], &k, &v, MDB_RESERVE);
		if (rc)
			return map_err(rc);
		entry = v.mv_data;
	}
	entry[0] = (unsigned char)tbl;
	entry[1] = prior != NULL;
	memcpy(entry + 2, &kl32, 4);
	memcpy(entry + 6, key, klen);
	if (plen)
		memcpy(entry + 6 + klen, prior, plen);
	return TF_OK;
}

/* Reads the key's current value into a private copy and journals it. */
static int journal_current(tf_txn *t, const char *task_id, tf_table tbl, const void *key,
                           size_t klen)
{
	const void *cur = NULL;
	size_t cl = 0;
	void *copy = NULL;
	int rc = tf_txn_get(t, tbl, key, klen, &cur, &cl);

	if (rc == TF_ENOTFOUND)
		return journal(t, task_id, tbl, key, klen, NULL, 0);
	if (rc)
		return rc;
	if (!(copy = malloc(cl ? cl : 1)))
		return TF_ENOMEM;
	memcpy(copy, cur, cl);
	rc = journal(t, task_id, tbl, key, klen, copy, cl);
	free(copy);
	return rc;
}

int tf_txn_put_j(tf_txn *t, const char *task_id, tf_table tbl, const void *key, size_t klen,
                 const void *val, size_t vlen)
{
	int rc = journal_current(t, task_id, tbl, key, klen);
	return rc ? rc : tf_txn_put(t, tbl, key, klen, val, vlen);
}

int tf_txn_replace_j(tf_txn *t, const char *task_id, tf_table tbl, const void *key, size_t klen,
                     const void *prior, size_t plen, const void *val, size_t vlen)
{
	int rc = journal(t, task_id, tbl, key, klen, prior, prior ? plen : 0);
	return rc ? rc : tf_txn_put(t, tbl, key, klen, val, vlen);
}

int tf_txn_del_j(tf_txn *t, const char *task_id, tf_table tbl, const void *key, size_t klen)
{
	const void *v;
	size_t vl;
	int rc = tf_txn_get(t, tbl, key, klen, &v, &vl);

	if (rc == TF_ENOTFOUND)
		return TF_OK;
	if (rc || (rc = journal_current(t, task_id, tbl, key, klen)))
		return rc;
	return tf_txn_del(t, tbl, key, klen);
}

int tf_cursor_open(tf_txn *t, tf_table tbl, tf_cursor **out)
{
	tf_cursor *c = calloc(1, sizeof *c);
	int rc;

	if (!c)
		return TF_ENOMEM;
	if ((rc = mdb_cursor_open(t->txn, t->st->dbi[tbl], &c->cur))) {
		free(c);
		return map_err(rc);
	}
	*out = c;
	return TF_OK;
}

int tf_cursor_get(tf_cursor *c, enum tf_seek op, const void *key, size_t klen, const void **k,
                  size_t *kl, const void **v, size_t *vl)
{
	static const MDB_cursor_op ops[] = {
		[TF_SEEK_FIRST] = MDB_FIRST, [TF_SEEK_LAST] = MDB_LAST, [TF_SEEK_GE] = MDB_SET_RANGE,
		[TF_SEEK_NEXT] = MDB_NEXT,   [TF_SEEK_PREV] = MDB_PREV,
	};
	MDB_val mk = {klen, (void *)key}, mv = {0, NULL};
	int rc = mdb_cursor_get(c->cur, &mk, &mv, ops[op]);

	if (rc)
		mk.mv_size = 0, mk.mv_data = NULL, mv.mv_size = 0, mv.mv_data = NULL;
	if (k)
		*k = mk.mv_data, *kl = mk.mv_size;
	if (v)
		*v = mv.mv_data, *vl = mv.mv_size;
	return map_err(rc);
}

int tf_cursor_del(tf_cursor *c)
{
	return map_err(mdb_cursor_del(c->cur, 0));
}

void tf_cursor_close(tf_cursor *c)
{
	if (!c)
		return;
	mdb_cursor_close(c->cur);
	free(c);
}

struct undo_ctx {
	const char *task_id;
	int restore;        /* 1: rollback, 0: just drop */
	uint64_t records;   /* records restored in this chunk */
	uint64_t entries;   /* entries handled in this chunk */
};

static int restore_one(tf_txn *t, const unsigned char *e, size_t elen, uint64_t *records)
{
	uint32_t klen;
	tf_table tbl;
	int rc;

	if (elen < 6)
		return TF_ESTORE;
	memcpy(&klen, e + 2, 4);
	if (e[0] >= TF_TBL__COUNT || 6 + (size_t)klen > elen)
		return TF_ESTORE;
	tbl = (tf_table)e[0];
	if (e[1])
		rc = tf_txn_put(t, tbl, e + 6, klen, e + 6 + klen, elen - 6 - klen);
	else if ((rc = tf_txn_del(t, tbl, e + 6, klen)) == TF_ENOTFOUND)
		rc = TF_OK;
	if (!rc && tbl == TF_TBL_RECORDS)
		(*records)++;
	return rc;
}

/* One chunk, newest first: seek just past the task's last key, walk back. */
static int undo_chunk(tf_txn *t, void *vctx)
{
	struct undo_ctx *u = vctx;
	unsigned char hi[UNDO_KEY_LEN];
	tf_cursor *c;
	const void *k, *v;
	size_t kl, vl;
	int rc;

	u->records = u->entries = 0;
	memcpy(hi, u->task_id, TF_UUID_LEN);
	memset(hi + TF_UUID_LEN, 0xff, 8);
	if ((rc = tf_cursor_open(t, TF_TBL_UNDO, &c)))
		return rc;
	rc = tf_cursor_get(c, TF_SEEK_GE, hi, sizeof hi, &k, &kl, &v, &vl);
	rc = rc == TF_ENOTFOUND ? tf_cursor_get(c, TF_SEEK_LAST, NULL, 0, &k, &kl, &v, &vl)
	                        : tf_cursor_get(c, TF_SEEK_PREV, NULL, 0, &k, &kl, &v, &vl);
	while (rc == TF_OK && u->entries < ROLLBACK_CHUNK) {
		if (kl != UNDO_KEY_LEN || memcmp(k, u->task_id, TF_UUID_LEN))
			break;
		if (u->restore && (rc = restore_one(t, v, vl, &u->records)))
			break;
		if ((rc = tf_cursor_del(c)))
			break;
		u->entries++;
		rc = tf_cursor_get(c, TF_SEEK_PREV, NULL, 0, &k, &kl, &v, &vl);
	}
	tf_cursor_close(c);
	return rc == TF_ENOTFOUND ? TF_OK : rc;
}

static int undo_all(tf_store *st, const char *task_id, int restore, uint64_t *records)
{
	struct undo_ctx u = {.task_id = task_id, .restore = restore};
	uint64_t total = 0;
	int rc;

	if (strlen(task_id) != TF_UUID_LEN)
		return TF_EINVAL;
	do {
		if ((rc = tf_store_update(st, undo_chunk, &u)))
			return rc;
		total += u.records;
	} while (u.entries == ROLLBACK_CHUNK);
	if (records)
		*records = total;
	return TF_OK;
}

int tf_store_rollback(tf_store *st, const char *task_id, uint64_t *records)
{
	return undo_all(st, task_id, 1, records);
}

int tf_store_undo_drop(tf_store *st, const char *task_id)
{
	return undo_all(st, task_id, 0, NULL);
}

struct count_ctx {
	const char *task_id;
	uint64_t n;
};

static int count_undo(tf_txn *t, void *vctx)
{
	struct count_ctx *cc = vctx;
	tf_cursor *c;
	const void *k, *v;
	size_t kl, vl;
	int rc = tf_cursor_open(t, TF_TBL_UNDO, &c);

	if (rc)
		return rc;
	cc->n = 0;
	rc = tf_cursor_get(c, TF_SEEK_GE, cc->task_id, TF_UUID_LEN, &k, &kl, &v, &vl);
	while (rc == TF_OK && kl == UNDO_KEY_LEN && !memcmp(k, cc->task_id, TF_UUID_LEN)) {
		cc->n++;
		rc = tf_cursor_get(c, TF_SEEK_NEXT, NULL, 0, &k, &kl, &v, &vl);
	}
	tf_cursor_close(c);
	return rc == TF_ENOTFOUND || rc == TF_OK ? TF_OK : rc;
}

int tf_store_undo_count(tf_store *st, const char *task_id, uint64_t *n)
{
	struct count_ctx cc = {.task_id = task_id};
	int rc;
	if (strlen(task_id) != TF_UUID_LEN)
		return TF_EINVAL;
	rc = tf_store_view(st, count_undo, &cc);
	*n = cc.n;
	return rc;
}
