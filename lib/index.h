/* The observable index (docs/SPEC.md §8: lookup by value, exports): every
 * observable of every record, by kind and normal form (observable.h), then
 * feed and record. Written by records.c inside the transaction that writes
 * the records, through the journaled put/del, so a cancel_job rollback
 * leaves the index exactly as it was (docs/SPEC.md §3).
 *
 * Tables (store.h): TF_TBL_OBS holds one entry per (value, feed, record)
 * with its first and last write, valid_until and revoked; TF_TBL_OBSSTAT per
 * feed a digest and count of its entries (an export's ETag changes exactly
 * when what it covers changes, rollback included); TF_TBL_OBSTIME per feed
 * how many entries were last written, or stop being valid, at each instant —
 * so expiry by time (options.ttl_days, valid_until) changes the ETag at the
 * moment an entry expires, found by one seek, not a scan.
 *
 * "Expired": revoked, past its valid_until, or not written again within the
 * feed's options.ttl_days. Readers leave expired entries out unless asked. */
#ifndef TF_INDEX_H
#define TF_INDEX_H

#include <json-c/json.h>
#include <stddef.h>
#include <stdint.h>

#include "observable.h"
#include "store.h"

/* ---- writing (records.c) --------------------------------------------------- */

/* The observables of one record in the form the writer uses: normalised
 * once, when the record is added to a batch (the driver's thread), not in
 * the commit. Appends to *buf (growing it; *cap its size) and sets *len to
 * the packed length; values that are not indexed (observable.h) are left out. */
int tf_index_pack(json_object *observables, char **buf, size_t *cap, size_t *len);

typedef struct tf_index_writer tf_index_writer;
int tf_index_writer_new(tf_index_writer **out);
void tf_index_writer_free(tf_index_writer *w);

/* One commit's index writes for feed_id by run task_id at time now_us. */
int tf_index_begin(tf_index_writer *w, tf_txn *txn, const char *feed_id, const char *task_id,
                   int64_t now_us);
/* Record key was written: old is its previous stored JSON (NULL when new),
 * packed (plen bytes, from tf_index_pack) its observables now, valid_until_us
 * (0: none) and revoked from its object. Entries of observables it no longer
 * has are removed; the others keep their first write time. */
int tf_index_record(tf_index_writer *w, const char *key, const char *old, size_t oldlen,
                    const char *packed, size_t plen, int64_t valid_until_us, int revoked);
/* Writes the feed's digest, count and time buckets of this commit, and
 * every write held since tf_index_begin. */
int tf_index_end(tf_index_writer *w);
/* tf_index_record's writes are held and go to the store together (one
 * tf_txn_write_j: a few statements per page on PostgreSQL) at tf_index_end
 * or here; until then reads in the transaction do not see them. So before
 * a record key is given a second time in one commit (its entries are read
 * again), the held writes must be flushed. */
int tf_index_flush(tf_index_writer *w);

/* ---- rebuilding (threatfeed index rebuild) ------------------------------------ */

/* One commit of a rebuild for feed_id: tf_index_restore calls, then
 * tf_index_end. Its writes are not journaled: no run owns them, so the
 * caller must not rebuild a feed while a run of it is active (a rollback
 * restores the feed's digest as the run found it). */
int tf_index_begin_rebuild(tf_index_writer *w, tf_txn *txn, const char *feed_id, int64_t now_us);

/* Who wrote a stored record, and when, as far as the store still knows. */
typedef struct tf_index_origin {
	const char *task_id;      /* the record's run */
	int64_t written_us;       /* that run's end (or last update); first and last seen */
	int64_t valid_until_us;   /* 0: none */
	int revoked;
} tf_index_origin;

/* Adds the entries record key's observables (packed, tf_index_pack) lack;
 * entries present are left exactly as they are, so repeating it changes
 * nothing. *added counts the entries written. */
int tf_index_restore(tf_index_writer *w, const char *key, const char *packed, size_t plen,
                     const tf_index_origin *o, size_t *added);

/* Removes every index entry of feed_id (a feed deleted; not journaled). */
int tf_index_drop_feed(tf_txn *txn, const char *feed_id);
/* Notes that the index changed outside a commit (a rollback ended): the
 * Last-Modified of exports moves on. */
int tf_index_touch(tf_store *st);

/* ---- reading ------------------------------------------------------------------ */

/* Which feeds a read covers (one, or all) and their expiry settings, loaded
 * in the reader's transaction. */
typedef struct tf_index_scope tf_index_scope;
/* TF_ENOTFOUND when feed_id (not NULL) is not a feed. now_us decides expiry. */
int tf_index_scope_load(tf_txn *txn, const char *feed_id, int64_t now_us, tf_index_scope **out);
void tf_index_scope_free(tf_index_scope *sc);

typedef struct tf_index_source {
	const char *feed_id, *record_id, *task_id;
	int64_t first_seen_us, last_seen_us, valid_until_us; /* valid_until 0: none */
	int revoked, expired;
} tf_index_source;

/* One value with its sources (entries of the feeds in scope, in feed and
 * record order); every pointer valid during the callback only. */
typedef struct tf_index_hit {
	int kind;
	const char *value;      /* the indexed normal form */
	const char *matched;    /* a lookup: the normal form looked up (a network
	                         * hit differs from it), else NULL */
	const tf_index_source *src;
	size_t nsrc;            /* sources listed (at most TF_MAX_HIT_SOURCES) */
	size_t total;           /* sources in all, listed or not */
	int live;               /* a source is not expired */
	const void *key;        /* the value's key: a paging cursor */
	size_t klen;
} tf_index_hit;

/* Return TF_OK to go on, 1 to stop the walk early (not an error), or an
 * error that ends it. */
typedef int (*tf_index_hit_fn)(const tf_index_hit *h, void *ctx);

typedef struct tf_index_filter {
	unsigned kinds;          /* bit (1 << kind) per kind wanted; 0: all */
	int include_expired;     /* sources and values that expired too */
} tf_index_filter;

/* Every value in key order (kind, then value) after the key `after` (NULL:
 * from the start), one call each. */
int tf_index_walk(tf_txn *txn, const tf_index_scope *sc, const tf_index_filter *f,
                  const void *after, size_t alen, tf_index_hit_fn fn, void *ctx);
/* The values value may be (kind 0: any kind it can be, observable.h), and
 * for an IP address the networks that hold it; one call per value found. */
int tf_index_lookup(tf_txn *txn, const tf_index_scope *sc, const tf_index_filter *f,
                    const char *value, int kind, tf_index_hit_fn fn, void *ctx);

/* Fingerprint of what a read of the scope returns at the scope's now: the
 * digests of its feeds, their ttl_days, and the last expiry instants passed
 * (with the caller's own parameters mixed in by the caller). *last_modified_us
 * is when that last changed as far as the store knows: the last index write
 * or rollback, a feed's update, or an expiry instant. */
int tf_index_state(tf_txn *txn, const tf_index_scope *sc, uint64_t *digest,
                   int64_t *last_modified_us);

/* Every index entry's key and value, as text, in key order (tests compare
 * it before and after a rollback). Caller frees. */
int tf_index_dump(tf_store *st, char **text);

#endif
