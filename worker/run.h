/* One run of a feed, as the feed drivers (taxii.c, bundle.c, otx.c, vt.c) see
 * it: the feed's settings, a fetch bound to the run's wake-up, the current
 * batch, progress, warnings, cancellable waits. run.c owns the store, the
 * task's state and the cancel logic; drivers only call these. */
#ifndef TF_RUN_H
#define TF_RUN_H

#include <json-c/json.h>
#include <stdint.h>

#include "fetch.h"
#include "task.h"

typedef struct tf_run tf_run;

/* The feed's stored settings (secret included: never log it). Valid for the
 * whole run. */
json_object *tf_run_feed(tf_run *r);
/* The feed's cursor as stored when the run started, then as of the last
 * batch handed over ({} when none). */
json_object *tf_run_cursor(tf_run *r);
tf_fetch *tf_run_fetch(tf_run *r);
/* The run's counters; drivers update pages_*, objects_processed,
 * bytes_received and percent. indicators_* are counted by the writer's
 * commits (OTX adds the pulses it skips to indicators_skipped). */
tf_progress *tf_run_progress(tf_run *r);

/* TF_OK, or TF_ECANCELLED once a cancel was requested: the driver then
 * abandons the page in flight and returns TF_ECANCELLED. Cheap: call it
 * between objects. */
int tf_run_check(tf_run *r);
/* Sets stage and message (printf-style, may be NULL); writes progress to the
 * store at most every TF_PROGRESS_INTERVAL_MS. Returns tf_run_check(). */
int tf_run_stage(tf_run *r, tf_stage stage, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Adds a warning line to the task (skipped objects, retries, waits). */
void tf_run_warn(tf_run *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Formats "name: <the feed's secret>" into buf for an API-key header, after
 * checking the secret is present, has no control characters (it goes into a
 * header line) and fits TF_MAX_FIELD; otherwise fails the run and returns
 * TF_EINVAL. buf needs TF_MAX_FIELD + strlen(name) + 3 bytes. */
int tf_run_key_header(tf_run *r, const char *name, char *buf, size_t len);
/* The feed's url as a base URL (http or https, no query or fragment, no
 * trailing slash), malloc'd; or NULL after failing the run with a message
 * that shows example. For APIs addressed by path below a base (OTX, VT). */
char *tf_run_base_url(tf_run *r, const char *example);
/* The two above without a run, for test_connection (probe.c) to check a
 * feed as its run will: err gets the text the run fails with. */
int tf_feed_key_header(json_object *feed, const char *name, char *buf, size_t len, char *err,
                       size_t errlen);
char *tf_feed_base_url(json_object *feed, const char *example, char *err, size_t errlen);
/* The error text set so far ("" when none): a driver that tries several
 * ways (e.g. TAXII API roots) reads what one failure said, then clears it
 * with tf_run_fail(r, "%s", "") when another way works. */
const char *tf_run_error(const tf_run *r);
/* Sets the task's error text; the driver then returns its error code. */
void tf_run_fail(tf_run *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Before fetching another page, pages already fetched: TF_OK, or TF_ELIMIT
 * after failing the run when it ran longer than TF_MAX_RUN_S or fetched
 * TF_MAX_PAGES pages. */
int tf_run_page_budget(tf_run *r, int pages);
/* Sleeps up to ms, waking at once on a cancel: TF_OK or TF_ECANCELLED. */
int tf_run_sleep(tf_run *r, int64_t ms);

/* The lookup targets other feeds have stored (see tf_records_observables),
 * for a virustotal feed without configured targets. */
int tf_run_store_observables(tf_run *r, size_t max, json_object *out);

/* Adds a record to the batch in flight (see tf_batch_add). */
int tf_run_add(tf_run *r, const char *key, const char *type, const char *value,
               json_object *observables, int64_t modified_us, const char *object, size_t len);
/* The record just added expires or is revoked (see tf_batch_set_life). */
int tf_run_set_life(tf_run *r, int64_t valid_until_us, int revoked);
/* Hands the batch in flight to the run's writer thread (writer.h), which
 * commits it with the progress and, if cursor is not NULL, the feed's new
 * cursor (a reference is taken) in one transaction, while the driver goes on
 * with the next page. Returns at once unless pages are waiting; TF_ECANCELLED
 * once a cancel was requested or a commit found one (that commit's pages are
 * abandoned whole), or the error of a failed commit. Call it once per page,
 * after the page was parsed. */
int tf_run_commit(tf_run *r, json_object *cursor);




/* `threatfeed work TASK`: the worker process of a claimed run. Returns the
 * process exit code (0: the task was left in a terminal state). */
struct tf_config;
int tf_work_main(const struct tf_config *cfg, const char *task_id);
#endif
