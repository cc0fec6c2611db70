/* The run's store writer: a thread of the worker process that makes every
 * store write of a run while the driver goes on fetching and parsing. A page
 * handed over is committed with its records, undo entries, cursor and the
 * task's progress in one transaction — as before, never half a page — but the
 * next page's transfer and parsing no longer wait for it (the two cores work
 * at once). Pages that wait while a commit runs are committed together in the
 * next transaction, which touches fewer B-tree pages per record.
 *
 * The driver side (run.c) never writes the store while the writer runs: its
 * stage, message, warnings and counters are published here and written with
 * the next commit or on their own, so no driver step waits for a commit. */
#ifndef TF_WRITER_H
#define TF_WRITER_H

#include <json-c/json.h>

#include "tf_limits.h"
#include "metrics.h"
#include "records.h"
#include "store.h"
#include "task.h"

typedef struct tf_writer tf_writer;

/* What the task shows, as the driver sees it: its counters (the indicators_*
 * there are the driver's own, e.g. OTX's inactive pulses; the writer adds
 * what its commits counted), stage and message. */
typedef struct tf_run_view {
	tf_progress prog;
	tf_stage stage;
	char message[TF_MAX_MESSAGE_LEN + 1];
} tf_run_view;

/* Writes the view and warnings into task_id inside txn, unless the task has
 * ended; the stage only while it is running. Every progress write of a run
 * goes through here, the writer's and the driver's own, and with it the
 * feed's metrics: what the run did since the progress stored before, and
 * the upstream requests pending in this process (taken: give it to
 * tf_metrics_taken_done() once txn committed; see metrics.h). */
int tf_run_view_save(tf_txn *txn, const char *task_id, const tf_run_view *v,
                     char *const *warnings, int nwarnings, tf_metrics_taken *taken);

/* Starts the thread; initial is the view the run starts from. The writer
 * uses st from its own thread between tf_writer_start and tf_writer_stop;
 * the caller keeps st open. */
int tf_writer_start(tf_writer **out, tf_store *st, const char *task_id, const char *feed_id,
                    const tf_run_view *initial);

/* Hands over *batch (the writer owns it from here; *batch is replaced by an
 * empty one to fill next) with the feed's new cursor (NULL: unchanged; a
 * reference is taken) and the view at this point. Blocks only while
 * TF_WRITER_MAX_QUEUED batches or TF_WRITER_MAX_QUEUED_BYTES wait. Returns
 * TF_OK, or the error that ended the writer: TF_ECANCELLED when a commit found
 * a cancel request (its pages and all later ones are abandoned whole). */
int tf_writer_commit(tf_writer *w, tf_batch **batch, json_object *cursor, const tf_run_view *v);
/* Publishes the view to be written soon; never waits for the store. */
void tf_writer_show(tf_writer *w, const tf_run_view *v);
/* Queues a warning line for the task (copied); waits only when
 * TF_WRITER_MAX_WARNINGS are already pending. */
void tf_writer_warn(tf_writer *w, const char *line);
/* The cancel mode a commit found (TF_CANCEL_NONE if none). */
tf_cancel_mode tf_writer_cancel_seen(tf_writer *w);

/* Waits until everything handed over is written (or abandoned), ends the
 * thread and frees the writer. *prog comes in as the driver's final counters
 * and leaves as what the run kept: when pages were abandoned, the page and
 * object counts are those of the last committed page; the indicator counts of
 * the commits are added. Returns the writer's error as tf_writer_commit(). */
int tf_writer_stop(tf_writer *w, tf_progress *prog);

#endif
