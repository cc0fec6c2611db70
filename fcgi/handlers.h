/* API handlers by resource (h_health.c, h_metrics.c, h_feeds.c, h_tasks.c). Each runs after
 * the router validated its path and query parameters, fills resp (success or
 * error through the error writer) and returns 0 or -1 (error answered). */
#ifndef TF_HANDLERS_H
#define TF_HANDLERS_H

#include "app.h"
#include "request.h"
#include "respond.h"

typedef int (*tf_handler)(tf_app *app, tf_req *req, tf_resp *resp);

int tf_h_health(tf_app *app, tf_req *req, tf_resp *resp);
int tf_h_metrics(tf_app *app, tf_req *req, tf_resp *resp);

int tf_h_feed_list(tf_app *app, tf_req *req, tf_resp *resp);
int tf_h_feed_create(tf_app *app, tf_req *req, tf_resp *resp);
int tf_h_feed_read(tf_app *app, tf_req *req, tf_resp *resp);
int tf_h_feed_patch(tf_app *app, tf_req *req, tf_resp *resp);
int tf_h_feed_delete(tf_app *app, tf_req *req, tf_resp *resp);
int tf_h_feed_consume(tf_app *app, tf_req *req, tf_resp *resp);
int tf_h_feed_cancel(tf_app *app, tf_req *req, tf_resp *resp);
int tf_h_feed_indicators(tf_app *app, tf_req *req, tf_resp *resp);
int tf_h_feed_test(tf_app *app, tf_req *req, tf_resp *resp);

/* h_indicators.c: lookup and browsing of the observable index. */
int tf_h_indicators(tf_app *app, tf_req *req, tf_resp *resp);
int tf_h_indicators_lookup(tf_app *app, tf_req *req, tf_resp *resp);
/* h_export.c: lists a device can poll (streamed). */
int tf_h_feed_export(tf_app *app, tf_req *req, tf_resp *resp);
int tf_h_export(tf_app *app, tf_req *req, tf_resp *resp);

/* h_taxii.c: the read-only TAXII 2.1 server under /taxii2/. */
int tf_h_taxii_discovery(tf_app *app, tf_req *req, tf_resp *resp);
int tf_h_taxii_root(tf_app *app, tf_req *req, tf_resp *resp);
int tf_h_taxii_collections(tf_app *app, tf_req *req, tf_resp *resp);
int tf_h_taxii_collection(tf_app *app, tf_req *req, tf_resp *resp);
int tf_h_taxii_objects(tf_app *app, tf_req *req, tf_resp *resp);
int tf_h_taxii_manifest(tf_app *app, tf_req *req, tf_resp *resp);
int tf_h_taxii_object(tf_app *app, tf_req *req, tf_resp *resp);
int tf_h_taxii_versions(tf_app *app, tf_req *req, tf_resp *resp);
/* A STIX identifier: `type--UUID`, type [a-z0-9-] (STIX 2.1 §2.9), the
 * UUID of any version in either case (as the consumer accepts them). */
int tf_taxii_valid_id(const char *s);
/* Rewrites an error answer {"error","code"} of a /taxii2/ request as the
 * TAXII 2.1 error message (§3.6.1) with the TAXII media type; the code
 * stays in error_code. */
void tf_taxii_error(tf_resp *resp);

/* h_audit.c: the audit trail, newest first (admins). */
int tf_h_audit(tf_app *app, tf_req *req, tf_resp *resp);

int tf_h_task_status(tf_app *app, tf_req *req, tf_resp *resp);
int tf_h_task_cancel(tf_app *app, tf_req *req, tf_resp *resp);
int tf_h_task_list(tf_app *app, tf_req *req, tf_resp *resp);
int tf_h_task_purge(tf_app *app, tf_req *req, tf_resp *resp);

/* Shared by the cancel handlers: the body's "mode" (default stop_now). 0, or
 * -1 with a 400 bad_mode in resp. */
int tf_h_cancel_mode(const tf_req *req, tf_resp *resp, int *mode);
/* After a cancel and its wake-up, the task as it is now (the wake-up may
 * already have ended a run that never started): replaces *json when the
 * read works, keeps it otherwise. */
void tf_h_fresh_task(tf_app *app, const char *task_id, char **json, size_t *len);
/* A handler's answer for a lib result: (json,len) taken over as a success
 * with status, or the error mapped by tf_resp_fail(). */
int tf_h_answer(tf_resp *resp, int rc, int status, char *json, size_t len);
/* The 400 for a ?cursor= that passed the route's check but that the store
 * does not know as one of its page tokens (lib answered TF_EINVAL). */
int tf_h_bad_cursor(tf_resp *resp);

#endif
