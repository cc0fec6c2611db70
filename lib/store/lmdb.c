#include "backend.h"
#include "tf_limits.h"
#include "err.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <stdatomic.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#define DEFAULT_MAP_SIZE ((size_t)256 << 20)
/* Free space under which a failed write is taken for a full disk. */
#define NEARLY_FULL_BYTES ((uint64_t)16 << 20)

static const char *const table_names[TF_TBL__COUNT] = {
	"meta", "feeds", "feedrun", "cursors", "counts", "records", "tasks",
	"torder", "active", "signals", "runs", "undo", "queue", "obs", "obsstat", "obstime",
	"audit", "added",
};

typedef struct lm_store {
	tf_store base;
	MDB_env *env;
	MDB_env *sig;        /* <path>/signals: store.h "signals", its own writer lock */
	MDB_dbi dbi[TF_TBL__COUNT];
	/* Written by every transaction's begin: a worker's writer thread and
	 * its driver thread's views (a cancel peek) run at once. */
	atomic_size_t map_size;
	char *path;
} lm_store;

typedef struct lm_txn {
	tf_txn base;
	lm_store *st;
	MDB_txn *txn;
	int write;
} lm_txn;

typedef struct lm_cursor {
	tf_cursor base;
	MDB_cursor *cur;
} lm_cursor;

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

static int begin(lm_store *st, unsigned flags, MDB_txn **txn);

/* Opens the tables in a read-only transaction when they all exist (every
 * open after the first): opening must not wait for the writer lock, which a
 * worker frozen inside a page commit may hold for long (a CLI cancel, a new
 * handler process: docs/SPEC.md §3). A read-only transaction's commit keeps
 * its handles. A store missing a table creates them under the lock. */
static int open_dbis_in(lm_store *st, unsigned flags)
{
	MDB_txn *txn = NULL;
	/* begin(): a writer may grow the map between mdb_env_open and here. */
	int rc = begin(st, flags, &txn);

	if (rc)
		return rc; /* txn was never set: nothing to abort */
	for (int i = 0; !rc && i < TF_TBL__COUNT; i++)
		rc = mdb_dbi_open(txn, table_names[i], flags & MDB_RDONLY ? 0 : MDB_CREATE,
		                  &st->dbi[i]);
	if (rc) {
		mdb_txn_abort(txn);
		return rc;
	}
	return mdb_txn_commit(txn);
}

static int open_dbis(lm_store *st)
{
	int rc = open_dbis_in(st, MDB_RDONLY);
	return rc == MDB_NOTFOUND ? open_dbis_in(st, 0) : rc;
}

static void share_files(const char *path);

/* The signal environment: small, synchronous commits, never grown (what it
 * holds is pending requests only; TF_SIGNAL_MAP_BYTES). */
static int open_signals(lm_store *st, char *err, size_t errlen)
{
	char dir[560]; /* share_files() appends "/data.mdb" within 600 */
	int rc, dead = 0;

	if ((size_t)snprintf(dir, sizeof dir, "%s/signals", st->path) >= sizeof dir) {
		snprintf(err, errlen, "store path too long: %s", st->path);
		return TF_EINVAL;
	}
	if (mkdir(dir, 0770) == 0) {
		chmod(dir, 0770);
	} else if (errno != EEXIST) {
		rc = errno;
		snprintf(err, errlen, "cannot create %s: %s", dir, strerror(rc));
		return rc == EACCES || rc == EPERM || rc == EROFS ? TF_EPERM : TF_ESTORE;
	}
	if ((rc = mdb_env_create(&st->sig)) ||
	    (rc = mdb_env_set_mapsize(st->sig, TF_SIGNAL_MAP_BYTES)) ||
	    (rc = mdb_env_set_maxreaders(st->sig, 510)) ||
	    (rc = mdb_env_open(st->sig, dir, MDB_NOTLS, 0660))) {
		snprintf(err, errlen, "cannot open %s: %s", dir, mdb_strerror(rc));
		if (st->sig)
			mdb_env_close(st->sig);
		st->sig = NULL;
		return map_err(rc) == TF_EPERM ? TF_EPERM : TF_ESTORE;
	}
	share_files(dir);
	mdb_reader_check(st->sig, &dead);
	return TF_OK;
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

static int lm_open(tf_store **out, const char *path, size_t map_size, char *err, size_t errlen)
{
	lm_store *st;
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
	atomic_init(&st->map_size, map_size ? map_size : DEFAULT_MAP_SIZE);
	if ((rc = mdb_env_create(&st->env)) || (rc = mdb_env_set_maxdbs(st->env, TF_TBL__COUNT)) ||
	    (rc = mdb_env_set_mapsize(st->env, atomic_load(&st->map_size))) ||
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
			atomic_store(&st->map_size, info.me_mapsize);
	}
	if ((rc = open_signals(st, err, errlen))) {
		mdb_env_close(st->env);
		free(st->path);
		free(st);
		return rc;
	}
	st->base.ops = &tf_lmdb_ops;
	*out = &st->base;
	return TF_OK;
fail:
	if (st->env)
		mdb_env_close(st->env);
	free(st->path);
	free(st);
	return map_err(rc) == TF_EPERM ? TF_EPERM : TF_ESTORE;
}

static void lm_close(lm_store *st)
{
	if (!st)
		return;
	if (st->sig)
		mdb_env_close(st->sig);
	mdb_env_close(st->env);
	free(st->path);
	free(st);
}

static int lm_set_lazy(lm_store *st, int lazy)
{
	return map_err(mdb_env_set_flags(st->env, MDB_NOSYNC, lazy ? 1 : 0));
}

static int lm_sync(lm_store *st)
{
	return map_err(mdb_env_sync(st->env, 1));
}

static size_t lm_map_size(lm_store *st)
{
	return atomic_load(&st->map_size);
}

/* LMDB reports a page write cut short by a full disk as EIO: a failed write
 * on a (nearly) full file system is called what it is. */
static int write_err(lm_store *st, int rc)
{
	struct statvfs sv;

	if (rc == EIO && !statvfs(st->path, &sv) &&
	    (uint64_t)sv.f_bavail * sv.f_frsize < NEARLY_FULL_BYTES)
		return TF_ENOSPACE;
	return map_err(rc);
}

/* Another process may have grown the map: adopt its size. */
static int begin(lm_store *st, unsigned flags, MDB_txn **txn)
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
			atomic_store(&st->map_size, info.me_mapsize);
	}
	return rc;
}

static int grow(lm_store *st)
{
	size_t next = atomic_load(&st->map_size) * 2;
	int rc = mdb_env_set_mapsize(st->env, next);
	if (rc) {
		tf_err("store: cannot grow map to %zu bytes: %s", next, mdb_strerror(rc));
		return TF_ESTORE;
	}
	atomic_store(&st->map_size, next);
	tf_debug("store: map grown to %zu bytes", next);
	return TF_OK;
}

static int lm_update(lm_store *st, tf_txn_fn fn, void *ctx)
{
	for (int attempt = 0; attempt < 16; attempt++) {
		lm_txn t = {.base.ops = &tf_lmdb_ops, .st = st, .write = 1};
		int rc = begin(st, 0, &t.txn);
		if (rc)
			return map_err(rc);
		rc = fn(&t.base, ctx);
		if (!rc)
			rc = tf_journal_flush(&t.base);
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

static int lm_view(lm_store *st, tf_txn_fn fn, void *ctx)
{
	lm_txn t = {.base.ops = &tf_lmdb_ops, .st = st, .write = 0};
	int rc = begin(st, MDB_RDONLY, &t.txn);
	if (rc)
		return map_err(rc);
	rc = fn(&t.base, ctx);
	mdb_txn_abort(t.txn);
	return rc;
}

static int lm_get(lm_txn *t, tf_table tbl, const void *key, size_t klen, const void **val,
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

static int lm_put(lm_txn *t, tf_table tbl, const void *key, size_t klen, const void *val,
               size_t vlen)
{
	MDB_val k = {klen, (void *)key}, v = {vlen, (void *)val};
	return map_err(mdb_put(t->txn, t->st->dbi[tbl], &k, &v, 0));
}

static int lm_del(lm_txn *t, tf_table tbl, const void *key, size_t klen)
{
	MDB_val k = {klen, (void *)key};
	return map_err(mdb_del(t->txn, t->st->dbi[tbl], &k, NULL));
}

static int lm_cursor_open(lm_txn *t, tf_table tbl, lm_cursor **out)
{
	lm_cursor *c = calloc(1, sizeof *c);
	int rc;

	if (!c)
		return TF_ENOMEM;
	if ((rc = mdb_cursor_open(t->txn, t->st->dbi[tbl], &c->cur))) {
		free(c);
		return map_err(rc);
	}
	c->base.ops = &tf_lmdb_ops;
	*out = c;
	return TF_OK;
}

static int lm_cursor_get(lm_cursor *c, enum tf_seek op, const void *key, size_t klen, const void **k,
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

static int lm_cursor_del(lm_cursor *c)
{
	return map_err(mdb_cursor_del(c->cur, 0));
}

static void lm_cursor_close(lm_cursor *c)
{
	if (!c)
		return;
	mdb_cursor_close(c->cur);
	free(c);
}

/* ---- signals (store.h): the second environment ---------------------------- */

static int sig_write(lm_store *st, const void *key, size_t klen, const void *val, size_t vlen,
                     int raise, void *out, size_t cap, size_t *outlen)
{
	MDB_txn *txn;
	MDB_dbi dbi;
	MDB_val k = {klen, (void *)key}, v = {vlen, (void *)val}, cur;
	unsigned char *kept = NULL;
	int rc = mdb_txn_begin(st->sig, NULL, 0, &txn);

	if (rc)
		return map_err(rc);
	if ((rc = mdb_dbi_open(txn, NULL, 0, &dbi)))
		goto out;
	if (raise && !(rc = mdb_get(txn, dbi, &k, &cur))) {
		/* The request there stays; only its rank may rise. */
		if (!(kept = malloc(cur.mv_size))) {
			rc = ENOMEM;
			goto out;
		}
		memcpy(kept, cur.mv_data, cur.mv_size);
		if (*(const unsigned char *)val > kept[0])
			kept[0] = *(const unsigned char *)val;
		v.mv_data = kept, v.mv_size = cur.mv_size;
	} else if (rc && rc != MDB_NOTFOUND) {
		goto out;
	}
	if ((rc = mdb_put(txn, dbi, &k, &v, 0)))
		goto out;
	*outlen = v.mv_size;
	if (out)
		memcpy(out, v.mv_data, v.mv_size < cap ? v.mv_size : cap);
	rc = mdb_txn_commit(txn);
	txn = NULL;
out:
	if (txn)
		mdb_txn_abort(txn);
	free(kept);
	return write_err(st, rc);
}

static int sig_del(lm_store *st, const void *key, size_t klen)
{
	MDB_txn *txn;
	MDB_dbi dbi;
	MDB_val k = {klen, (void *)key};
	int rc = mdb_txn_begin(st->sig, NULL, 0, &txn);

	if (rc)
		return map_err(rc);
	if ((rc = mdb_dbi_open(txn, NULL, 0, &dbi)) || (rc = mdb_del(txn, dbi, &k, NULL))) {
		mdb_txn_abort(txn);
		return map_err(rc);
	}
	return write_err(st, mdb_txn_commit(txn));
}

/* A read transaction of its own: the signals as of now, whatever snapshot
 * of the tables the caller is in (and whether it holds their writer lock). */
static int sig_get(lm_txn *t, const void *key, size_t klen, void *out, size_t cap,
                   size_t *outlen)
{
	MDB_txn *txn;
	MDB_dbi dbi;
	MDB_val k = {klen, (void *)key}, v;
	int rc = mdb_txn_begin(t->st->sig, NULL, MDB_RDONLY, &txn);

	*outlen = 0;
	if (rc)
		return map_err(rc);
	if (!(rc = mdb_dbi_open(txn, NULL, 0, &dbi)) && !(rc = mdb_get(txn, dbi, &k, &v))) {
		*outlen = v.mv_size;
		memcpy(out, v.mv_data, v.mv_size < cap ? v.mv_size : cap);
	}
	mdb_txn_abort(txn);
	return map_err(rc);
}

static int sig_scan(lm_txn *t, const void *prefix, size_t plen, size_t max, tf_signal_fn fn,
                    void *ctx)
{
	MDB_txn *txn;
	MDB_dbi dbi;
	MDB_cursor *cur = NULL;
	MDB_val k = {plen, (void *)prefix}, v;
	size_t n = 0;
	int rc = mdb_txn_begin(t->st->sig, NULL, MDB_RDONLY, &txn), frc = 0;

	if (rc)
		return map_err(rc);
	if ((rc = mdb_dbi_open(txn, NULL, 0, &dbi)) || (rc = mdb_cursor_open(txn, dbi, &cur)))
		goto out;
	for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); !rc && n < max;
	     rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT), n++) {
		if (k.mv_size < plen || memcmp(k.mv_data, prefix, plen))
			break;
		if ((frc = fn(k.mv_data, k.mv_size, v.mv_data, v.mv_size, ctx)))
			break;
	}
out:
	mdb_cursor_close(cur);
	mdb_txn_abort(txn);
	if (frc)
		return frc;
	return rc == MDB_NOTFOUND ? TF_OK : map_err(rc);
}

/* ---- the backend table: base pointers in, this backend's structs inside -- */
#define LS(p) ((lm_store *)(p))
#define LT(p) ((lm_txn *)(p))
#define LC(p) ((lm_cursor *)(p))

static void o_close(tf_store *st) { lm_close(LS(st)); }
static int o_update(tf_store *st, tf_txn_fn fn, void *ctx) { return lm_update(LS(st), fn, ctx); }
static int o_view(tf_store *st, tf_txn_fn fn, void *ctx) { return lm_view(LS(st), fn, ctx); }
static int o_get(tf_txn *t, tf_table tbl, const void *k, size_t kl, const void **v, size_t *vl)
{
	return lm_get(LT(t), tbl, k, kl, v, vl);
}
static int o_put(tf_txn *t, tf_table tbl, const void *k, size_t kl, const void *v, size_t vl)
{
	return lm_put(LT(t), tbl, k, kl, v, vl);
}
static int o_del(tf_txn *t, tf_table tbl, const void *k, size_t kl) { return lm_del(LT(t), tbl, k, kl); }
static int o_cursor_open(tf_txn *t, tf_table tbl, tf_cursor **out)
{
	lm_cursor *c = NULL;
	int rc = lm_cursor_open(LT(t), tbl, &c);
	*out = rc ? NULL : &c->base;
	return rc;
}
static int o_cursor_get(tf_cursor *c, enum tf_seek op, const void *key, size_t klen,
                        const void **k, size_t *kl, const void **v, size_t *vl)
{
	return lm_cursor_get(LC(c), op, key, klen, k, kl, v, vl);
}
static int o_cursor_del(tf_cursor *c) { return lm_cursor_del(LC(c)); }
static void o_cursor_close(tf_cursor *c) { lm_cursor_close(LC(c)); }
static int o_set_lazy(tf_store *st, int lazy) { return lm_set_lazy(LS(st), lazy); }
static int o_sync(tf_store *st) { return lm_sync(LS(st)); }
static size_t o_map_size(tf_store *st) { return lm_map_size(LS(st)); }

/* The environment's figures as of its newest commit (a read snapshot may be
 * older, by at most the commits made since it began: close enough for a
 * gauge). */
static int o_space(tf_txn *t, uint64_t *used, uint64_t *map)
{
	MDB_envinfo info;
	MDB_stat stat;
	int rc = mdb_env_info(LT(t)->st->env, &info);

	if (rc || (rc = mdb_env_stat(LT(t)->st->env, &stat)))
		return map_err(rc);
	*used = ((uint64_t)info.me_last_pgno + 1) * stat.ms_psize;
	*map = info.me_mapsize;
	return TF_OK;
}

/* LMDB has no schema to migrate: its tables are created on open. */
static int o_migrate(const char *location, int *from, int *to, char *err, size_t errlen)
{
	tf_store *st;
	int rc = lm_open(&st, location, 0, err, errlen);

	if (rc)
		return rc;
	lm_close(LS(st));
	*from = *to = 1;
	return TF_OK;
}

static int o_sig_write(tf_store *st, const void *k, size_t kl, const void *v, size_t vl,
                       int raise, void *out, size_t cap, size_t *outlen)
{
	return sig_write(LS(st), k, kl, v, vl, raise, out, cap, outlen);
}
static int o_sig_del(tf_store *st, const void *k, size_t kl) { return sig_del(LS(st), k, kl); }
static int o_sig_get(tf_txn *t, const void *k, size_t kl, void *out, size_t cap, size_t *ol)
{
	return sig_get(LT(t), k, kl, out, cap, ol);
}
static int o_sig_scan(tf_txn *t, const void *p, size_t pl, size_t max, tf_signal_fn fn,
                      void *ctx)
{
	return sig_scan(LT(t), p, pl, max, fn, ctx);
}

const tf_store_ops tf_lmdb_ops = {
	.name = "lmdb", .open = lm_open, .close = o_close, .update = o_update, .view = o_view,
	.get = o_get, .put = o_put, .del = o_del, .cursor_open = o_cursor_open,
	.cursor_get = o_cursor_get, .cursor_del = o_cursor_del, .cursor_close = o_cursor_close,
	.set_lazy = o_set_lazy, .sync = o_sync, .map_size = o_map_size, .migrate = o_migrate,
	.space = o_space,
	.signal_write = o_sig_write, .signal_del = o_sig_del, .signal_get = o_sig_get,
	.signal_scan = o_sig_scan,
};
