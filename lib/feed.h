/* Feeds (docs/SPEC.md §2 `feed`): validation of API bodies, the stored form (which
 * keeps the secret), and the API form (which never carries it). */
#ifndef TF_FEED_H
#define TF_FEED_H

#include <json-c/json.h>
#include <stddef.h>

#include "store.h"

/* Creates a feed from an API body (id optional: generated from the name when
 * absent). Returns its API JSON (caller frees). TF_EINVAL with err filled
 * ("url: must be an http or https URL"), TF_EEXIST. */
int tf_feed_create(tf_store *st, json_object *body, char **json, size_t *len, char *err,
                   size_t errlen);
/* Changes the fields present in body. TF_ENOTFOUND, TF_EINVAL (err),
 * TF_ECONFLICT while a run of the feed is active. */
int tf_feed_patch(tf_store *st, const char *id, json_object *body, char **json, size_t *len,
                  char *err, size_t errlen);
/* Removes the feed with its records, cursor and counts (its finished task
 * history stays). TF_ENOTFOUND, TF_ECONFLICT while a run is active. */
int tf_feed_delete(tf_store *st, const char *id);
/* API JSON of one feed / {"feeds":[…]} sorted by id (caller frees). */
int tf_feed_read(tf_store *st, const char *id, char **json, size_t *len);
int tf_feed_list(tf_store *st, char **json, size_t *len);

/* Stored form, secret included, for the worker: owned by the caller
 * (json_object_put). TF_ENOTFOUND. */
int tf_feed_load(tf_txn *txn, const char *id, json_object **out);
/* Feed ids whose type is `type` (NULL: all) — for `tick`. Caller frees each
 * and the array. */
int tf_feed_ids(tf_store *st, char ***ids, size_t *n);

/* The feed's incremental cursor (e.g. {"added_after":"…"}), an empty object
 * when none. Caller owns it. */
int tf_feed_cursor(tf_txn *txn, const char *id, json_object **out);

/* The run-end webhook of a feed (its stored form; NULL: none): its own
 * options.webhook_url and options.webhook_secret, each falling back to the
 * global one (empty: none). *url is NULL when no webhook applies; the
 * pointers are borrowed from feed or the globals. */
void tf_feed_webhook(json_object *feed, const char *global_url, const char *global_secret,
                     const char **url, const char **secret);

/* After a run ends: remember its id, status and start time for the feed. */
int tf_feed_note_run(tf_txn *txn, const char *id, const char *task_id, const char *status,
                     const char *started_at);

#endif
