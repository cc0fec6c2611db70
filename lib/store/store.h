/* The store: one interface, two backends side by side in lib/store/ —
 * lmdb.c (the embedded default: a directory path) and pg.c (PostgreSQL: a
 * postgresql:// URI). store.c picks one from the location and forwards; no
 * other file knows LMDB or libpq. Everything above sees tables of byte keys
 * and values in key order, transactions run through a callback (so a full map
 * can be grown, or a dropped connection re-made, and the transaction
 * replayed), and journaled writes whose undo entries let a run be rolled back
 * exactly (docs/SPEC.md §3 cancel_job).
 *
 * Concurrency, on both backends: any number of processes read while one
 * writes; readers never block and never see half a transaction; writers are
 * serialized (LMDB's writer lock; a transaction-scoped advisory lock on
 * PostgreSQL), so a read-then-write inside one update is atomic. Open the
 * store after fork(), never before: a handle must not cross fork(). */
#ifndef TF_STORE_H
#define TF_STORE_H

#include <stddef.h>
#include <stdint.h>

typedef struct tf_store tf_store;
typedef struct tf_txn tf_txn;
typedef struct tf_cursor tf_cursor;

typedef enum tf_table {
	TF_TBL_META,    /* named counters */
	TF_TBL_FEEDS,   /* feed_id → feed config JSON (holds the secret) */
	TF_TBL_FEEDRUN, /* feed_id → run summary JSON (last task, status, time) */
	TF_TBL_CURSORS, /* feed_id → incremental cursor JSON            [journaled] */
	TF_TBL_COUNTS,  /* feed_id → uint64 record count                [journaled] */
	TF_TBL_RECORDS, /* feed_id NUL record_key → record JSON         [journaled] */
	TF_TBL_TASKS,   /* task_id → task JSON, exactly the API shape */
	TF_TBL_TORDER,  /* seq (8 bytes, big-endian) → task_id, for newest first */
	TF_TBL_ACTIVE,  /* feed_id → task_id of its one active run */
	TF_TBL_SIGNALS, /* feed_id → feed-level cancel signal (task_id, mode, expiry) */
	TF_TBL_RUNS,    /* task_id → process identity of the run */
	TF_TBL_UNDO,    /* task_id seq(8 BE) → undo entry */
	TF_TBL_QUEUE,   /* seq (8 BE) → task_id waiting for a run slot */
	/* The observable index (lib/index.c), written with the records: */
	TF_TBL_OBS,     /* kind value NUL feed_id NUL hash(record key) → entry  [journaled] */
	TF_TBL_OBSSTAT, /* feed_id → digest and count of its index entries    [journaled] */
	TF_TBL_OBSTIME, /* feed_id NUL 's'|'v' time(8 BE) → entries seen/valid until then
	                 *                                                      [journaled] */
	TF_TBL_AUDIT,   /* seq (8 BE) → audit entry JSON (lib/audit.c; the last TF_AUDIT_KEEP) */
	/* Records in the order they were stored (lib/records.c; the TAXII server): */
	TF_TBL_ADDED,   /* feed_id NUL date added (8 BE, µs) → record_key       [journaled] */
	TF_TBL__COUNT
} tf_table;

/* Whether location names a PostgreSQL store (postgresql:// or postgres://). */
int tf_store_is_pg(const char *location);
/* "lmdb" or "postgresql". */
const char *tf_store_backend(const tf_store *st);
/* Creates or upgrades the store's schema to the version this build knows
 * (PostgreSQL; a no-op open for LMDB). *from is the version found (0: none),
 * *to the version now. TF_ESTORE with err set when the store's schema is
 * newer than this build or the database refuses. */
int tf_store_migrate(const char *location, int *from, int *to, char *err, size_t errlen);

/* Opens (creating if needed, mode 0770 dir / 0660 files so the web server's
 * user and the workers can share it) the store at path. map_size 0 = default.
 * On failure *out is NULL, err holds one line for a human, and the return is
 * TF_EPERM, TF_ESTORE or TF_ENOMEM. Caller owns *out: tf_store_close(). */
int tf_store_open(tf_store **out, const char *path, size_t map_size, char *err, size_t errlen);
/* A PostgreSQL location opens a connection (libpq's URI syntax, every option
 * of it: sslmode=verify-full, sslrootcert, …) and checks the schema version:
 * a database without the schema, or with one this build does not know, fails
 * with TF_ESTORE and err says to run `threatfeed db migrate`. map_size is
 * ignored. */
void tf_store_close(tf_store *st);

typedef int (*tf_txn_fn)(tf_txn *txn, void *ctx);

/* Runs fn in a write transaction: commits if fn returns TF_OK, else aborts
 * and returns fn's code. When the map is full it is grown and fn runs again,
 * so fn must have no effects outside the transaction before it returns. */
int tf_store_update(tf_store *st, tf_txn_fn fn, void *ctx);
/* Runs fn in a read-only snapshot. */
int tf_store_view(tf_store *st, tf_txn_fn fn, void *ctx);

/* *val stays valid until the next write in this transaction or its end.
 * TF_ENOTFOUND when absent. */
int tf_txn_get(tf_txn *t, tf_table tbl, const void *key, size_t klen, const void **val,
               size_t *vlen);
int tf_txn_put(tf_txn *t, tf_table tbl, const void *key, size_t klen, const void *val,
               size_t vlen);
/* TF_ENOTFOUND when absent. */
int tf_txn_del(tf_txn *t, tf_table tbl, const void *key, size_t klen);

/* Journaled variants: first record the key's current value (or its absence)
 * as an undo entry of run task_id, then write. Rollback replays them newest
 * first. A tf_txn_del_j of an absent key is a no-op returning TF_OK. */
int tf_txn_put_j(tf_txn *t, const char *task_id, tf_table tbl, const void *key, size_t klen,
                 const void *val, size_t vlen);
int tf_txn_del_j(tf_txn *t, const char *task_id, tf_table tbl, const void *key, size_t klen);
/* tf_txn_put_j for a caller that has just read the key: prior is its own
 * copy of the current value (NULL when the key is absent), not re-read. */
int tf_txn_replace_j(tf_txn *t, const char *task_id, tf_table tbl, const void *key, size_t klen,
                     const void *prior, size_t plen, const void *val, size_t vlen);

/* One write of a journaled batch (tf_txn_write_j). */
typedef struct tf_jw {
	tf_table tbl;          /* any table but TF_TBL_UNDO */
	const void *key;
	size_t klen;
	const void *val;       /* NULL: delete the key (absent: no-op, no entry) */
	size_t vlen;
	/* 1: prior (plen bytes; NULL when the key is absent) is the caller's
	 * copy of the key's current value, as for tf_txn_replace_j: a backend
	 * that journals one write at a time uses it instead of reading the key
	 * again; one that reads priors inside its batch statement ignores it. */
	int known;
	const void *prior;
	size_t plen;
} tf_jw;

/* Exactly tf_txn_put_j / tf_txn_del_j (or tf_txn_replace_j when known) on
 * w[0], w[1], … in that order — the same store, the same undo entries in the
 * same sequence — but a backend may write the whole batch in a few
 * statements (PostgreSQL: one per chunk instead of three round trips per
 * write). Nothing is buffered: when it returns, reads in the transaction see
 * every write. A key may repeat; each write journals what the one before it
 * left. TF_EINVAL for a task id that is not UUID-sized or a write to
 * TF_TBL_UNDO. */
int tf_txn_write_j(tf_txn *t, const char *task_id, const tf_jw *w, size_t n);

/* n reads of tbl at once: vals[i] / vlens[i] is keys[i]'s value, vals[i]
 * NULL when absent. Valid until the next write in the transaction. */
int tf_txn_get_many(tf_txn *t, tf_table tbl, size_t n, const void *const *keys,
                    const size_t *klens, const void **vals, size_t *vlens);

/* Next value of a named 64-bit counter (starts at 1). */
int tf_txn_seq_next(tf_txn *t, const char *name, uint64_t *out);

/* Cursors live inside one transaction. */
enum tf_seek { TF_SEEK_FIRST, TF_SEEK_LAST, TF_SEEK_GE, TF_SEEK_NEXT, TF_SEEK_PREV };
int tf_cursor_open(tf_txn *t, tf_table tbl, tf_cursor **out);
/* Positions the cursor (key used by TF_SEEK_GE only) and returns the entry
 * there; TF_ENOTFOUND past either end. Pointers valid until the txn ends. */
int tf_cursor_get(tf_cursor *c, enum tf_seek op, const void *key, size_t klen, const void **k,
                  size_t *kl, const void **v, size_t *vl);
/* Deletes the entry the cursor is on. */
int tf_cursor_del(tf_cursor *c);
void tf_cursor_close(tf_cursor *c);

/* Undoes every journaled write of task_id, newest first, in chunks that each
 * commit with the removal of their undo entries (a kill mid-rollback leaves a
 * consistent store and a rollback that can be resumed). *records counts the
 * TF_TBL_RECORDS entries restored. */
int tf_store_rollback(tf_store *st, const char *task_id, uint64_t *records);
/* Forgets the undo entries of task_id (a run that ended keeping its data). */
int tf_store_undo_drop(tf_store *st, const char *task_id);
/* Number of undo entries of task_id (tests and diagnostics). */
int tf_store_undo_count(tf_store *st, const char *task_id, uint64_t *n);

/* Lazy durability for bulk writers (a run's worker): commits stop waiting
 * for the disk and tf_store_sync() flushes them. A killed process loses
 * nothing committed (the kernel has the pages); a machine crash may lose the
 * commits since the last sync. Every other writer keeps synchronous commits. */
int tf_store_set_lazy(tf_store *st, int lazy);
int tf_store_sync(tf_store *st);

/* Space the store takes, inside a transaction (metrics): *used is LMDB's
 * pages up to the highest one in use (free-list pages included) times the
 * page size, or PostgreSQL's tf_kv table with its index and TOAST
 * (pg_total_relation_size); *map is LMDB's current map size (what can be
 * used before the map grows), 0 on PostgreSQL, which has no map. */
int tf_txn_space(tf_txn *t, uint64_t *used, uint64_t *map);

/* Current map size in bytes (tests). */
size_t tf_store_map_size(tf_store *st);

/* ---- runs on many hosts ------------------------------------------------------
 * A PostgreSQL store is shared by processes on several hosts: whether a run
 * elsewhere is alive cannot be read from process ids, and a cancel cannot be
 * sent as a signal. Two primitives cover both, kept by the database itself:
 *
 *   leases — held by a process's own database session, released by the
 *   server when the session ends: the process exits or is killed, or its
 *   host stops answering TCP keepalives (about TF_LEASE_DEAD_S);
 *   notifications — a wake-up on a named channel, delivered at once to every
 *   process listening on it (LISTEN/NOTIFY).
 *
 * On LMDB (one host) neither exists: leases are not needed (process ids
 * answer) and wake-ups are signals. */

/* Whether runs of this store may live on other hosts (PostgreSQL). */
int tf_store_shared(const tf_store *st);
/* Holds a lease on name until this process ends or closes the store. A
 * dropped session is re-made, with its leases and channels, by the next
 * tf_store_notifications(). No-op returning TF_OK on LMDB. */
int tf_store_lease(tf_store *st, const char *name);
/* *held = whether any process holds a lease on name. TF_EINVAL on LMDB. */
int tf_txn_lease_held(tf_txn *t, const char *name, int *held);
/* Wakes every process listening on channel (committed state is already
 * visible to them when they wake). No-op returning TF_OK on LMDB. */
int tf_store_notify(tf_store *st, const char *channel);
/* Listens on channel (up to TF_MAX_CHANNELS per store); *fd becomes readable
 * when a notification may have arrived. TF_EINVAL on LMDB. */
int tf_store_listen(tf_store *st, const char *channel, int *fd);
/* Reads what arrived: *n notifications (0 when the fd woke for nothing).
 * When the session was lost it is re-made with its leases and channels and
 * *fd (may be NULL) is the new descriptor; *n is then 1, since a wake-up may
 * have been missed. */
int tf_store_notifications(tf_store *st, int *n, int *fd);

/* ---- signals: a small key space beside the tables ------------------------------
 * For the writes a user waits on while a writer may hold the writer lock
 * for long — a worker frozen (SIGSTOP, swapped out) inside a page commit:
 * cancel requests (docs/SPEC.md §3) and the audit entries that record them.
 * Signals are written WITHOUT the writer lock, each write its own durable
 * commit when it returns: on LMDB a second environment, <store>/signals,
 * whose own writer lock no worker ever takes; on PostgreSQL rows of tf_kv
 * outside every tf_table (TF_SIGNAL_PG_TBL), written by single statements
 * that never take the advisory lock (a page transaction never touches
 * them, so no row lock is shared). Readers of the tables read them from
 * inside any transaction, as of now (not of the transaction's snapshot on
 * LMDB; on PostgreSQL a view's snapshot, an update's latest). */

/* Writes val under key. With raise, a value already there is kept except
 * for its first byte, which rises to val's when val's is higher (a rank:
 * the first request's other fields stay). *out (cap bytes; may be NULL)
 * receives what is stored after the write, *outlen its length. */
int tf_store_signal_write(tf_store *st, const void *key, size_t klen, const void *val,
                          size_t vlen, int raise, void *out, size_t cap, size_t *outlen);
/* TF_ENOTFOUND when absent. */
int tf_store_signal_del(tf_store *st, const void *key, size_t klen);
/* Copies key's value (at most cap bytes; *outlen is the full length).
 * TF_ENOTFOUND when absent. */
int tf_txn_signal_get(tf_txn *t, const void *key, size_t klen, void *out, size_t cap,
                      size_t *outlen);
/* Calls fn for up to max entries whose key starts with prefix, in key
 * order; fn's non-zero return stops the walk and is returned. */
typedef int (*tf_signal_fn)(const void *k, size_t kl, const void *v, size_t vl, void *ctx);
int tf_txn_signal_scan(tf_txn *t, const void *prefix, size_t plen, size_t max, tf_signal_fn fn,
                       void *ctx);

#endif
