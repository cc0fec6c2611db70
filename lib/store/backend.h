/* What a store backend provides: the operations of store.h, one table of
 * them per backend. store.c picks the backend from the store's location and
 * forwards every call; nothing outside lib/store/ includes this header.
 *
 * Each backend's store, transaction and cursor structs begin with the base
 * struct below, so a pointer to one is a pointer to its base (C's usual
 * single inheritance). */
#ifndef TF_STORE_BACKEND_H
#define TF_STORE_BACKEND_H

#include "store.h"
#include "util.h"

typedef struct tf_store_ops tf_store_ops;

struct tf_store {
	const tf_store_ops *ops;
};
struct tf_txn {
	const tf_store_ops *ops;
	/* journal.c's undo sequence: read once per transaction, written back
	 * by tf_journal_flush() before the commit (one META access per page,
	 * not per record). Backends zero these when a transaction begins. */
	uint64_t undo_seq;
	int undo_loaded, undo_dirty;
};
struct tf_cursor {
	const tf_store_ops *ops;
};

struct tf_store_ops {
	const char *name;
	int (*open)(tf_store **out, const char *location, size_t map_size, char *err,
	            size_t errlen);
	void (*close)(tf_store *st);
	int (*update)(tf_store *st, tf_txn_fn fn, void *ctx);
	int (*view)(tf_store *st, tf_txn_fn fn, void *ctx);
	int (*get)(tf_txn *t, tf_table tbl, const void *key, size_t klen, const void **val,
	           size_t *vlen);
	int (*put)(tf_txn *t, tf_table tbl, const void *key, size_t klen, const void *val,
	           size_t vlen);
	int (*del)(tf_txn *t, tf_table tbl, const void *key, size_t klen);
	int (*cursor_open)(tf_txn *t, tf_table tbl, tf_cursor **out);
	int (*cursor_get)(tf_cursor *c, enum tf_seek op, const void *key, size_t klen,
	                  const void **k, size_t *kl, const void **v, size_t *vl);
	int (*cursor_del)(tf_cursor *c);
	void (*cursor_close)(tf_cursor *c);
	/* Optional (NULL: journal.c walks the entries): undoes (restore = 1)
	 * or forgets (0) every undo entry of task_id at once. */
	int (*undo_all)(tf_store *st, const char *task_id, int restore, uint64_t *records);
	int (*set_lazy)(tf_store *st, int lazy);
	int (*sync)(tf_store *st);
	size_t (*map_size)(tf_store *st);
	int (*migrate)(const char *location, int *from, int *to, char *err, size_t errlen);
	int (*space)(tf_txn *t, uint64_t *used, uint64_t *map);
	/* Optional, all or none (NULL: a single-host backend): store.h's
	 * leases and notifications. */
	int (*lease)(tf_store *st, const char *name);
	int (*lease_held)(tf_txn *t, const char *name, int *held);
	int (*notify)(tf_store *st, const char *channel);
	int (*listen)(tf_store *st, const char *channel, int *fd);
	int (*notifications)(tf_store *st, int *n, int *fd);
	/* Optional batch ops (NULL: store.c / journal.c loop over get and the
	 * journaled writes). write_j does tf_txn_write_j's writes with undo
	 * sequence numbers first_seq + 1, + 2, … and sets *entries to the
	 * number of undo entries it wrote; journal.c checked the arguments. */
	int (*get_many)(tf_txn *t, tf_table tbl, size_t n, const void *const *keys,
	                const size_t *klens, const void **vals, size_t *vlens);
	int (*write_j)(tf_txn *t, const char *task_id, uint64_t first_seq, const tf_jw *w,
	               size_t n, uint64_t *entries);
	/* store.h's signals (every backend): never under the writer lock. */
	int (*signal_write)(tf_store *st, const void *key, size_t klen, const void *val,
	                    size_t vlen, int raise, void *out, size_t cap, size_t *outlen);
	int (*signal_del)(tf_store *st, const void *key, size_t klen);
	int (*signal_get)(tf_txn *t, const void *key, size_t klen, void *out, size_t cap,
	                  size_t *outlen);
	int (*signal_scan)(tf_txn *t, const void *prefix, size_t plen, size_t max,
	                   tf_signal_fn fn, void *ctx);
};

/* Writes the transaction's undo sequence back (journal.c); every backend's
 * update calls it after fn succeeded, before the commit. */
int tf_journal_flush(tf_txn *t);

/* Undo entries (journal.c): key task_id (TF_UUID_LEN) + big-endian
 * sequence; value table(1) had_prior(1) key length(4, little-endian) key
 * prior-value. pg.c reads them in SQL. */
#define TF_UNDO_KEY_LEN (TF_UUID_LEN + 8)

extern const tf_store_ops tf_lmdb_ops;
extern const tf_store_ops tf_pg_ops;

#endif
