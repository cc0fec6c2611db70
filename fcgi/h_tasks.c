/* Tasks: status (polled by dashboards, hence ETags — set by the pipeline for
 * every 200 GET), cancel, list, and clearing finished history. docs/SPEC.md §2, §3. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "handlers.h"
#include "log.h"
#include "runctl.h"
#include "task.h"

int tf_h_task_status(tf_app *app, tf_req *req, tf_resp *resp)
{
	char *json = NULL;
	size_t len = 0;
	int rc, reaped = 0, finished = 0;

	if (tf_app_store(app, resp))
		return -1;
	/* A finished task (most polls) is answered from one read of its stored
	 * text: nothing to reap, no cancel to merge. */
	rc = tf_task_read_peek(app->st, req->task_id, &json, &len, &finished);
	if (!rc && !finished) {
		/* A run whose processes died must not be reported running
		 * (docs/SPEC.md §3): reaped first, then read again. Cheap while the
		 * run lives: one read and a /proc lookup. */
		free(json);
		json = NULL;
		if ((rc = tf_runctl_reap(app->st, req->task_id, &reaped)) && rc != TF_ENOTFOUND)
			tf_debug("tf_h_task_status: reap %s: %s", req->task_id, tf_strerror(rc));
		rc = tf_task_read(app->st, req->task_id, &json, &len);
	}
	if (rc == TF_ENOTFOUND)
		return tf_resp_error(resp, 404, "not_found", "no such task");
	return tf_h_answer(resp, rc, 200, json, len);
}

int tf_h_task_cancel(tf_app *app, tf_req *req, tf_resp *resp)
{
	char *json = NULL;
	size_t len = 0;
	int mode, rc;

	if (tf_h_cancel_mode(req, resp, &mode) || tf_app_store(app, resp))
		return -1;
	rc = tf_task_cancel(app->st, req->task_id, (tf_cancel_mode)mode, req->requested_by, &json,
	                    &len);
	if (rc == TF_ENOTFOUND)
		return tf_resp_error(resp, 404, "not_found", "no such task");
	if (rc == TF_ECONFLICT)
		return tf_resp_error(resp, 409, "task_finished", "the task has already finished");
	if (rc)
		return tf_h_answer(resp, rc, 0, json, len);
	/* Durable first, then the wake-up (docs/SPEC.md §3). */
	if (tf_runctl_wake(app->st, req->task_id))
		tf_debug("tf_h_task_cancel: wake %s failed", req->task_id);
	tf_h_fresh_task(app, req->task_id, &json, &len);
	return tf_resp_json(resp, 202, json, len);
}

int tf_h_task_list(tf_app *app, tf_req *req, tf_resp *resp)
{
	const tf_qparam *active = tf_req_query(req, "active");
	const tf_qparam *feed = tf_req_query(req, "feed_id");
	tf_task_filter f = {
		.active_only = active ? (int)active->num : 0,
		.feed_id = feed ? feed->value : NULL,
		.limit = tf_req_page(req).limit,
	};
	char *json = NULL;
	size_t len = 0;
	int rc, reaped;

	if (tf_app_store(app, resp))
		return -1;
	tf_runctl_reap_all(app->st, &reaped);
	rc = tf_task_list(app->st, &f, &json, &len);
	return tf_h_answer(resp, rc, 200, json, len);
}

int tf_h_task_purge(tf_app *app, tf_req *req, tf_resp *resp)
{
	const tf_qparam *before = tf_req_query(req, "finished_before");
	uint64_t deleted = 0;
	char body[64];
	int64_t before_us = 0;   /* 0: every finished task */
	int rc, reaped;

	if (tf_app_store(app, resp))
		return -1;
	/* An explicit epoch must not turn into lib's "0 = everything". */
	if (before)
		before_us = before->num > 0 ? before->num : 1;
	/* Dead runs first, so their tasks count as the finished ones they are. */
	tf_runctl_reap_all(app->st, &reaped);
	if ((rc = tf_task_delete_finished(app->st, before_us, &deleted)))
		return tf_resp_fail(resp, rc, NULL);
	snprintf(body, sizeof body, "{\"deleted\":%llu}", (unsigned long long)deleted);
	return tf_resp_json_copy(resp, 200, body, strlen(body));
}
