/* Records (docs/SPEC.md §4): what a feed ingested, one per STIX object / OTX
 * indicator / VT verdict, keyed by feed and source id. A run writes them in
 * batches; each batch commits atomically with its undo entries, the feed's
 * count and cursor, and the task's progress (written by the caller in the
 * same transaction). */
#ifndef TF_RECORDS_H
#define TF_RECORDS_H

#include <json-c/json.h>
#include <stdint.h>
#include <stdio.h>

#include "store.h"
#include "task.h"

typedef struct tf_batch tf_batch;

/* Caller owns the batch: tf_batch_free(). */
int tf_batch_new(tf_batch **out);
/* Adds one record, copying everything:
 *   key        source id (STIX id, "otx:<pulse>:<indicator id>", "vt:file:<hash>")
 *   type       STIX type or indicator type ("indicator", "IPv4", "vt-file")
 *   value      the extracted observable, or NULL
 *   observables  NULL or an array of {"type","value"} (not taken over)
 *   modified_us  version time; a stored record with the same or a newer
 *                version is left alone and counted as skipped
 *   object     the source object (JSON text, len bytes), kept verbatim.
 * TF_ELIMIT when the object exceeds TF_MAX_OBJECT_BYTES. */
int tf_batch_add(tf_batch *b, const char *key, const char *type, const char *value,
                 json_object *observables, int64_t modified_us, const char *object, size_t len);
/* The last record added stops being valid at valid_until_us (STIX
 * `valid_until`, OTX `expiration`; 0: never) or is revoked (STIX `revoked`):
 * the index leaves it out of lookups and exports (index.h). TF_EINVAL when
 * the batch is empty. */
int tf_batch_set_life(tf_batch *b, int64_t valid_until_us, int revoked);
size_t tf_batch_count(const tf_batch *b);
/* Memory the batch holds (its records and index). */
size_t tf_batch_bytes(const tf_batch *b);
void tf_batch_clear(tf_batch *b);
void tf_batch_free(tf_batch *b);

/* Writes the batch for feed_id as part of run task_id inside txn (journaled
 * writes), adding created/updated/skipped to p. The batch is not cleared:
 * a transaction replayed after map growth applies it again. Its keys are
 * read in one tf_txn_get_many and its writes (records, then the count) are
 * one tf_txn_write_j, so a page is a few statements on PostgreSQL; the
 * index entries of the records written (index.h) are journaled in the same
 * transaction. b's index writer is reused, so one batch is applied by one
 * thread at a time. */
int tf_batch_apply(tf_txn *txn, const char *feed_id, const char *task_id, tf_batch *b,
                   tf_progress *p);
/* Journaled write of the feed's cursor object inside txn. */
int tf_records_put_cursor(tf_txn *txn, const char *feed_id, const char *task_id,
                          json_object *cursor);

/* The stored JSON of one record (valid until the transaction's next write
 * or its end). TF_ENOTFOUND. */
int tf_records_get(tf_txn *txn, const char *feed_id, const char *key, const char **json,
                   size_t *len);
/* Number of records of feed_id. */
int tf_records_count(tf_txn *txn, const char *feed_id, uint64_t *n);
/* {"indicators":[…],"next_cursor":"…"|null}, at most limit records after the
 * opaque cursor (NULL: from the start). Caller frees. TF_EINVAL bad cursor. */
int tf_records_page(tf_store *st, const char *feed_id, const char *cursor, int limit,
                    char **json, size_t *len);
/* The distinct observable values that a VirusTotal lookup can take (IPv4/v6
 * addresses, domain names, URLs, MD5/SHA-1/SHA-256 hashes) from the records
 * of every feed but except_feed, in key order, appended to the array out as
 * strings; at most max. */
int tf_records_observables(tf_store *st, const char *except_feed, size_t max, json_object *out);
/* Every record of feed_id (NULL: all feeds) as JSON lines in key order. */
int tf_records_export(tf_store *st, const char *feed_id, FILE *out);
/* Adds the index entries (index.h) the records of feed_id lack — records
 * stored before the index existed — in transactions of TF_REINDEX_BATCH
 * records; entries present are kept as they are, so repeating it changes
 * nothing. A restored entry names the record's run, first and last seen
 * when that run ended (now when the run is no longer in the history), and
 * valid_until / revoked read from the stored object as the drivers read
 * them. TF_ENOTFOUND: no such feed; TF_ECONFLICT: a run of it is active
 * (checked in every transaction; what was committed before stays). Adds
 * to *records (records read) and *added (entries written). */
int tf_records_reindex(tf_store *st, const char *feed_id, uint64_t *records, uint64_t *added);
/* ---- the date-added order (docs/SPEC.md §8 TAXII server) ----------------------
 * Every record write gives the record a new date added (µs, unique and
 * increasing across all feeds: never before the write's clock, always after
 * the last one given out), kept in the record's header and as a key of
 * TF_TBL_ADDED, both journaled: a cancel_job rollback restores the order
 * exactly. A record keeps one date added, its latest version's. */

/* A stored object: pointers valid until the transaction ends. */
typedef struct tf_stored_object {
	int64_t added_us;     /* 0: absent, or written before dates added existed */
	int64_t modified_us;  /* the record's version (0: none known) */
	const char *object;   /* NULL: no such record */
	size_t object_len;
} tf_stored_object;

/* Called in date-added order; TF_OK goes on, 1 stops (not an error), any
 * other code ends the walk with it. key is the record's source key. */
typedef int (*tf_added_fn)(const char *feed_id, const char *key, int64_t added_us, void *ctx);
/* The records of feed_id (NULL: every feed, merged by time) added strictly
 * after after_us (<0: from the start). */
int tf_records_walk_added(tf_txn *txn, const char *feed_id, int64_t after_us, tf_added_fn fn,
                          void *ctx);
/* n records at once (one tf_txn_get_many): out[i] for feed_ids[i] /
 * keys[i], object NULL when absent. */
int tf_records_objects(tf_txn *txn, size_t n, const char *const *feed_ids,
                       const char *const *keys, tf_stored_object *out);
/* Every record's date added and every TF_TBL_ADDED entry, as text (tests
 * compare it before and after a rollback). Caller frees. */
int tf_records_order_dump(tf_store *st, char **text);

/* Removes every record, the count, the cursor and the index entries of
 * feed_id (not journaled). */
int tf_records_drop_feed(tf_txn *txn, const char *feed_id);

#endif
