/* Metrics (docs/SPEC.md "As implemented: metrics"): counters of what runs and
 * workers did, kept in the store so that they survive handler restarts and
 * count the work of every process. Each counter moves inside a transaction
 * that already happens (a run's page commit or progress write, a cancel, a
 * run's end), so counting costs one small key read and write there, never a
 * transaction of its own.
 *
 * Layout, in TF_TBL_META (not journaled: a rollback does not undo counts):
 *   "metrics/feed/<feed_id>"  TF_MF__COUNT little-endian uint64 counters
 *   "metrics/global"          the cancel latency histogram
 * A scrape reads these few keys (one per feed plus one), not the tasks.
 * Values are read leniently: a shorter value (written by an older build)
 * reads as zeros for the fields it lacks, a longer one keeps its extra
 * fields, so new counters are appended without a migration. */
#ifndef TF_METRICS_H
#define TF_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "tf_limits.h"
#include "store.h"
#include "task.h"

/* Per-feed counters. Append only: the index is the stored position. */
typedef enum tf_mfeed {
	TF_MF_RUNS_COMPLETED, TF_MF_RUNS_FAILED, TF_MF_RUNS_STOPPED, TF_MF_RUNS_CANCELLED,
	TF_MF_PAGES, TF_MF_OBJECTS, TF_MF_BYTES,
	TF_MF_IND_CREATED, TF_MF_IND_UPDATED, TF_MF_IND_SKIPPED,
	TF_MF_UP_2XX, TF_MF_UP_3XX, TF_MF_UP_4XX, TF_MF_UP_429, TF_MF_UP_5XX, TF_MF_UP_ERROR,
	TF_MF_ROLLED_BACK, TF_MF_KILLS, TF_MF_CANCEL_STOP_NOW, TF_MF_CANCEL_JOB,
	TF_MF__COUNT
} tf_mfeed;

/* Upper bounds (seconds) of the cancel latency histogram's buckets; +Inf is
 * implied. From "stopped at once" to "a grace period and a long rollback". */
#define TF_METRICS_CANCEL_BUCKETS \
	0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300
#define TF_METRICS_NBUCKETS 11

/* Upstream answers, by class, as the fetch layer sees them. */
enum tf_mup { TF_MUP_2XX, TF_MUP_3XX, TF_MUP_4XX, TF_MUP_429, TF_MUP_5XX, TF_MUP_ERROR,
              TF_MUP__COUNT };

/* ---- updates (each inside the caller's write transaction) ----------------- */

/* A new feed starts with every counter at 0, so its series exist (and an
 * increase from 0 is visible) before its first run. */
int tf_metrics_feed_created(tf_txn *txn, const char *feed_id);
/* A deleted feed's series go with it. */
int tf_metrics_feed_deleted(tf_txn *txn, const char *feed_id);

/* A cancel was recorded on a run of feed_id (a request that raised the
 * task's mode; repeating one changes nothing and is not counted). */
int tf_metrics_cancel_requested(tf_txn *txn, const char *feed_id, tf_cancel_mode mode);

/* A run ended: t is the task in its final state (status set, inside the
 * transaction that ends it). Counts the run by status, the records its
 * rollback restored, a forced end of a cancelled run (the worker killed
 * after the grace period: cancel.forced), and, for a cancelled run, the
 * seconds from the cancel request to now in the histogram of its mode. */
int tf_metrics_run_finished(tf_txn *txn, const tf_task *t, int forced, uint64_t rolled_back);

/* Upstream requests are counted where no transaction happens (worker/fetch.c):
 * they wait in this process until the run's next progress write takes them.
 * One worker process serves one run, so the pending counts are that run's. */
void tf_metrics_note_upstream(long http_status); /* 0: no answer (network error) */

/* What a progress write took from the pending upstream counts; given back
 * with tf_metrics_taken_done() once its transaction committed (a replayed or
 * failed transaction leaves them pending). */
typedef struct tf_metrics_taken {
	uint64_t n[TF_MUP__COUNT];
} tf_metrics_taken;

/* A run's progress write for feed_id: adds what the run did since the
 * progress stored before (before → after: pages, objects, bytes, indicators;
 * counters never go down) and, when taken is not NULL, the pending upstream
 * counts. */
int tf_metrics_run_progress(tf_txn *txn, const char *feed_id, const tf_progress *before,
                            const tf_progress *after, tf_metrics_taken *taken);
void tf_metrics_taken_done(const tf_metrics_taken *taken);

/* ---- reading ----------------------------------------------------------------- */

typedef struct tf_metrics_feed {
	char id[TF_MAX_FEED_ID + 1];
	uint64_t v[TF_MF__COUNT];
} tf_metrics_feed;

typedef struct tf_metrics_hist {
	uint64_t bucket[TF_METRICS_NBUCKETS]; /* per bucket, not cumulative */
	uint64_t count, sum_us;
} tf_metrics_hist;

typedef struct tf_metrics_snapshot {
	tf_metrics_feed *feeds; /* in feed id order; owned by the snapshot */
	size_t nfeeds;
	tf_metrics_hist cancel[2]; /* [0] stop_now, [1] cancel_job */
	int runs_active, runs_queued;
	uint64_t store_bytes;
	int has_map;               /* LMDB: the map figures below are set */
	uint64_t map_bytes, map_free_bytes;
} tf_metrics_snapshot;

/* Everything a scrape shows, from one read snapshot of the store. Free with
 * tf_metrics_snapshot_free(). */
int tf_metrics_read(tf_store *st, tf_metrics_snapshot *out);
void tf_metrics_snapshot_free(tf_metrics_snapshot *s);
/* The bucket bounds, TF_METRICS_NBUCKETS of them. */
const double *tf_metrics_cancel_bounds(void);

#endif
