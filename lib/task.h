/* The task model (docs/SPEC.md §2, §3): states and the only legal transitions, the
 * task's JSON (kept in the store exactly in its API shape, so a status read is
 * one lookup), and the task operations both binaries share. */
#ifndef TF_TASK_H
#define TF_TASK_H

#include <stddef.h>
#include <stdint.h>

#include "store.h"
#include "util.h"

typedef enum tf_status {
	TF_ST_QUEUED, TF_ST_RUNNING, TF_ST_STOPPING, TF_ST_CANCELLING,
	TF_ST_COMPLETED, TF_ST_FAILED, TF_ST_STOPPED, TF_ST_CANCELLED,
	TF_ST__COUNT
} tf_status;

typedef enum tf_stage {
	TF_SG_QUEUED, TF_SG_CONNECTING, TF_SG_DISCOVERING, TF_SG_FETCHING, TF_SG_PROCESSING,
	TF_SG_STORING, TF_SG_RATE_LIMITED, TF_SG_STOPPING, TF_SG_ROLLING_BACK, TF_SG_DONE,
	TF_SG__COUNT
} tf_stage;

typedef enum tf_cancel_mode { TF_CANCEL_NONE, TF_CANCEL_STOP_NOW, TF_CANCEL_JOB } tf_cancel_mode;

const char *tf_status_name(tf_status s);
int tf_status_parse(const char *name, tf_status *out);        /* TF_OK / TF_EINVAL */
int tf_status_terminal(tf_status s);
int tf_status_active(tf_status s);                             /* queued…cancelling */
/* The state machine, in one table: is from → to legal? */
int tf_status_can(tf_status from, tf_status to);
const char *tf_stage_name(tf_stage s);
const char *tf_cancel_mode_name(tf_cancel_mode m);             /* "stop_now"/"cancel_job" */
int tf_cancel_mode_parse(const char *name, tf_cancel_mode *out);

/* Counters of docs/SPEC.md §2 `progress`. percent and pages_total: -1 = null. */
typedef struct tf_progress {
	int percent;
	int64_t pages_done, pages_total, objects_processed;
	int64_t indicators_created, indicators_updated, indicators_skipped, bytes_received;
} tf_progress;

/* An in-memory task, backed by its JSON. Owned by the caller of the function
 * that returned it: tf_task_free(). */
typedef struct tf_task tf_task;

/* Loads task_id within txn. TF_ENOTFOUND / TF_ESTORE (corrupt). */
int tf_task_load(tf_txn *txn, const char *task_id, tf_task **out);
/* Stamps updated_at and writes the task back within txn. */
int tf_task_save(tf_txn *txn, tf_task *t);
void tf_task_free(tf_task *t);

const char *tf_task_id(const tf_task *t);
const char *tf_task_feed_id(const tf_task *t);
tf_status tf_task_status(const tf_task *t);
tf_cancel_mode tf_task_cancel_mode(const tf_task *t);
/* When the first cancel of the task was recorded (µs since the epoch), 0
 * when none was. */
int64_t tf_task_cancel_requested_us(const tf_task *t);
/* Moves to status s; TF_ESTATE if the state machine forbids it. Sets
 * started_at on running and finished_at (and stage done) on terminal states. */
int tf_task_set_status(tf_task *t, tf_status s);
/* message may be NULL (kept as is) — truncated to TF_MAX_MESSAGE_LEN. */
void tf_task_set_stage(tf_task *t, tf_stage stage, const char *message);
void tf_task_get_progress(const tf_task *t, tf_progress *p);
void tf_task_set_progress(tf_task *t, const tf_progress *p);
/* Records a cancel: raises the mode (stop_now → cancel_job, never down) and
 * moves queued/running to stopping/cancelling. TF_ECONFLICT when terminal.
 * Repeating the same request is harmless (TF_OK, nothing changes). */
int tf_task_request_cancel(tf_task *t, tf_cancel_mode mode, const char *by);
void tf_task_ack_cancel(tf_task *t);          /* cancel.acknowledged_at = now, once */
void tf_task_set_forced(tf_task *t);          /* cancel.forced = true */
void tf_task_set_rolled_back(tf_task *t, uint64_t n);
void tf_task_set_error(tf_task *t, const char *msg);
/* Appends a warning line; beyond TF_MAX_WARNINGS the oldest are kept and one
 * final "… more warnings omitted" line says so. */
void tf_task_add_warning(tf_task *t, const char *msg);
/* The API JSON text; valid until the next change or tf_task_free. */
const char *tf_task_json(tf_task *t, size_t *len);

/* ---- operations on the store (each one transaction) ---------------------- */

/* Creates a queued task for feed_id and makes it the feed's active run.
 * TF_ENOTFOUND: no such feed. TF_ECONFLICT: a run is active; its id is
 * copied to active_id. task_id and active_id: >= TF_UUID_LEN + 1 bytes. */
int tf_task_create(tf_store *st, const char *feed_id, char *task_id, char *active_id);

/* `tick` (docs/SPEC.md §1): like tf_task_create, but only when the feed is enabled,
 * has an interval, has no active run, and its last run began at least
 * interval_s ago — decided in the same transaction, so two ticks racing start
 * one run. TF_ENOTFOUND no feed; TF_ECONFLICT not due (or a run is active). */
int tf_task_create_if_due(tf_store *st, const char *feed_id, int64_t now_us, char *task_id);

/* Tells every queued task its place in line, in its message ("queued: 2 of
 * 5 waiting for a run slot"), inside txn; called wherever the queue changes. */
int tf_task_number_queue(tf_txn *txn);

/* A malloc'd copy of the task's JSON text (caller frees). TF_ENOTFOUND. */
int tf_task_read(tf_store *st, const char *task_id, char **json, size_t *len);
/* tf_task_read, and *finished = 1 when the task it read is terminal (told
 * from the stored text, no parse): its text is final, there is nothing to
 * reap or merge. */
int tf_task_read_peek(tf_store *st, const char *task_id, char **json, size_t *len,
                      int *finished);

/* Records a cancel durably (docs/SPEC.md §3) and returns the task's new JSON (caller
 * frees). TF_ENOTFOUND, TF_ECONFLICT (already finished). Does not wake the
 * run: call tf_runctl_wake() after it. Never waits for the writer lock: the
 * request goes to the store's signals (store.h), and every tf_task_load of
 * the active task merges it in (status stopping/cancelling, its cancel
 * object with the request's time and requester) until a write of the task
 * records it in the tables. */
int tf_task_cancel(tf_store *st, const char *task_id, tf_cancel_mode mode, const char *by,
                   char **json, size_t *len);
/* Same for the feed's active run; also leaves a per-feed signal naming that
 * run which expires after TF_SIGNAL_TTL_S. TF_ECONFLICT when none is active.
 * task_id receives the cancelled run's id. */
int tf_task_cancel_feed(tf_store *st, const char *feed_id, tf_cancel_mode mode, const char *by,
                        char *task_id, char **json, size_t *len);
/* Forgets task_id's request in the signal store (its run has ended and the
 * tables hold the cancel). Absent: TF_OK. */
int tf_task_cancel_drop_signal(tf_store *st, const char *task_id);
/* The cancel mode recorded for task_id, looking also at the feed's signal
 * (so a run that is still starting cannot miss a feed-level cancel). */
int tf_task_cancel_requested(tf_txn *txn, const char *task_id, const char *feed_id,
                             tf_cancel_mode *mode);

typedef struct tf_task_filter {
	int active_only;
	const char *feed_id;  /* NULL: every feed */
	int limit;
} tf_task_filter;
/* {"tasks":[…]} newest first, as malloc'd text (caller frees). */
int tf_task_list(tf_store *st, const tf_task_filter *f, char **json, size_t *len);
/* Removes finished tasks that finished before before_us (0: every finished one). */
int tf_task_delete_finished(tf_store *st, int64_t before_us, uint64_t *deleted);
/* Keeps the newest keep_per_feed finished tasks of each feed, deletes the
 * older finished ones (never an active one). */
int tf_task_gc_history(tf_store *st, int keep_per_feed, uint64_t *deleted);
/* Drops expired per-feed cancel signals. */
int tf_task_gc_signals(tf_store *st, uint64_t *dropped);

#endif
