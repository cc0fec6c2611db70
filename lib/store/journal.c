/* Journaled writes and rollback (docs/SPEC.md §3 cancel_job), the same for
 * every backend: built on the primitive get/put/del/cursor of the backend, so
 * that what an undo entry means, and how a rollback walks them, is written
 * once. Undo entries live in TF_TBL_UNDO under task_id + big-endian sequence,
 * so a run's entries are adjacent and in write order. */
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "err.h"
#include "util.h"

/* Undo entries undone per transaction: a kill mid-rollback keeps whole
 * chunks, and one chunk's transaction stays short. */
#define ROLLBACK_CHUNK 32768
#define UNDO_SEQ "undo" /* META counter numbering undo entries */

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

static int undo_seq_load(tf_txn *t)
{
	int rc = t->undo_loaded ? TF_OK : seq_load(t, UNDO_SEQ, &t->undo_seq);

	t->undo_loaded |= !rc;
	return rc;
}

static int undo_seq_next(tf_txn *t, uint64_t *seq)
{
	int rc = undo_seq_load(t);

	if (rc)
		return rc;
	*seq = ++t->undo_seq;
	t->undo_dirty = 1;
	return TF_OK;
}

int tf_journal_flush(tf_txn *t)
{
	int rc = t->undo_dirty ? seq_store(t, UNDO_SEQ, t->undo_seq) : TF_OK;

	t->undo_dirty = 0;
	return rc;
}

/* Undo entry: table(1) had_prior(1) klen(4, little-endian) key prior-value.
 * prior is the caller's copy: a value read from the store is only valid
 * until the next write, and the undo entry is such a write. */
static int journal(tf_txn *t, const char *task_id, tf_table tbl, const void *key, size_t klen,
                   const void *prior, size_t plen)
{
	unsigned char ukey[TF_UNDO_KEY_LEN], small[4096], *entry = small;
	uint32_t kl32 = (uint32_t)klen;
	size_t elen = 6 + klen + plen;
	uint64_t seq;
	int rc;

	if (strlen(task_id) != TF_UUID_LEN)
		return TF_EINVAL;
	if ((rc = undo_seq_next(t, &seq)))
		return rc;
	memcpy(ukey, task_id, TF_UUID_LEN);
	tf_put_be64(ukey + TF_UUID_LEN, seq);
	/* Most entries are a key and a record: no malloc for those. */
	if (elen > sizeof small && !(entry = malloc(elen)))
		return TF_ENOMEM;
	entry[0] = (unsigned char)tbl;
	entry[1] = prior != NULL;
	for (int i = 0; i < 4; i++) /* little-endian: pg.c decodes it in SQL */
		entry[2 + i] = (unsigned char)(kl32 >> (8 * i));
	memcpy(entry + 6, key, klen);
	if (plen)
		memcpy(entry + 6 + klen, prior, plen);
	rc = tf_txn_put(t, TF_TBL_UNDO, ukey, sizeof ukey, entry, elen);
	if (entry != small)
		free(entry);
	return rc;
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

/* One journaled write, the way every backend can: read (unless known),
 * journal, write. */
static int write_one(tf_txn *t, const char *task_id, const tf_jw *w)
{
	int rc;

	if (w->val) {
		rc = w->known ? journal(t, task_id, w->tbl, w->key, w->klen, w->prior, w->plen)
		              : journal_current(t, task_id, w->tbl, w->key, w->klen);
		return rc ? rc : tf_txn_put(t, w->tbl, w->key, w->klen, w->val, w->vlen);
	}
	if (w->known) {
		if (!w->prior)
			return TF_OK;
		rc = journal(t, task_id, w->tbl, w->key, w->klen, w->prior, w->plen);
	} else {
		const void *v;
		size_t vl;
		rc = tf_txn_get(t, w->tbl, w->key, w->klen, &v, &vl);
		if (rc == TF_ENOTFOUND)
			return TF_OK;
		if (!rc)
			rc = journal_current(t, task_id, w->tbl, w->key, w->klen);
	}
	return rc ? rc : tf_txn_del(t, w->tbl, w->key, w->klen);
}

/* A backend with a batch op writes the undo entries itself, numbered from
 * the transaction's sequence, which this file keeps. */
static int write_batch(tf_txn *t, const char *task_id, const tf_jw *w, size_t n)
{
	uint64_t entries = 0;
	int rc = undo_seq_load(t);

	if (rc)
		return rc;
	/* Counted even on failure: the entries of the chunks before it stay
	 * in the transaction until its end. */
	rc = t->ops->write_j(t, task_id, t->undo_seq, w, n, &entries);
	t->undo_seq += entries;
	t->undo_dirty |= entries > 0;
	return rc;
}

int tf_txn_write_j(tf_txn *t, const char *task_id, const tf_jw *w, size_t n)
{
	int rc = TF_OK;

	if (strlen(task_id) != TF_UUID_LEN)
		return TF_EINVAL;
	for (size_t i = 0; i < n; i++)
		if ((unsigned)w[i].tbl >= TF_TBL__COUNT || w[i].tbl == TF_TBL_UNDO)
			return TF_EINVAL;
	if (!n)
		return TF_OK;
	if (t->ops->write_j)
		return write_batch(t, task_id, w, n);
	for (size_t i = 0; i < n && !rc; i++)
		rc = write_one(t, task_id, &w[i]);
	return rc;
}

int tf_txn_put_j(tf_txn *t, const char *task_id, tf_table tbl, const void *key, size_t klen,
                 const void *val, size_t vlen)
{
	tf_jw w = {.tbl = tbl, .key = key, .klen = klen, .val = val, .vlen = vlen};

	/* A value, even an empty one, is not a delete. */
	if (!w.val)
		w.val = "";
	return tf_txn_write_j(t, task_id, &w, 1);
}

int tf_txn_replace_j(tf_txn *t, const char *task_id, tf_table tbl, const void *key, size_t klen,
                     const void *prior, size_t plen, const void *val, size_t vlen)
{
	tf_jw w = {.tbl = tbl, .key = key, .klen = klen, .val = val ? val : "", .vlen = vlen,
	           .known = 1, .prior = prior, .plen = prior ? plen : 0};
	return tf_txn_write_j(t, task_id, &w, 1);
}

int tf_txn_del_j(tf_txn *t, const char *task_id, tf_table tbl, const void *key, size_t klen)
{
	tf_jw w = {.tbl = tbl, .key = key, .klen = klen};
	return tf_txn_write_j(t, task_id, &w, 1);
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
	klen = (uint32_t)e[2] | (uint32_t)e[3] << 8 | (uint32_t)e[4] << 16 | (uint32_t)e[5] << 24;
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
	unsigned char hi[TF_UNDO_KEY_LEN];
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
		if (kl != TF_UNDO_KEY_LEN || memcmp(k, u->task_id, TF_UUID_LEN))
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

/* A backend may undo a whole run in one set operation (PostgreSQL: one
 * statement instead of a round trip per entry); the result must be the
 * same as walking the entries newest first, as done here otherwise. */
static int undo_all(tf_store *st, const char *task_id, int restore, uint64_t *records)
{
	struct undo_ctx u = {.task_id = task_id, .restore = restore};
	uint64_t total = 0;
	int rc;

	if (strlen(task_id) != TF_UUID_LEN)
		return TF_EINVAL;
	if (st->ops->undo_all)
		return st->ops->undo_all(st, task_id, restore, records);
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
	while (rc == TF_OK && kl == TF_UNDO_KEY_LEN && !memcmp(k, cc->task_id, TF_UUID_LEN)) {
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

