/* Feeds: list, create, read, change, remove, and the feed-level actions
 * (consume, cancel_consumption, indicators, test_connection). docs/SPEC.md §2. */
#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "err.h"
#include "feed.h"
#include "handlers.h"
#include "json.h"
#include "log.h"
#include "records.h"
#include "runctl.h"
#include "subproc.h"
#include "task.h"
#include "util.h"

/* Exit codes meaning "this CLI has no such command" (usage error). */
#define TF_EXIT_USAGE     2
#define TF_EXIT_EX_USAGE  64

int tf_h_answer(tf_resp *resp, int rc, int status, char *json, size_t len)
{
	if (rc) {
		free(json);
		return tf_resp_fail(resp, rc, NULL);
	}
	return tf_resp_json(resp, status, json, len);
}

int tf_h_bad_cursor(tf_resp *resp)
{
	return tf_resp_error(resp, 400, "invalid_parameter", "cursor: not a valid cursor");
}

static int no_such_feed(tf_resp *resp)
{
	return tf_resp_error(resp, 404, "not_found", "no such feed");
}

/* A task whose processes died still holds its feed's active slot until
 * someone looks (docs/SPEC.md §3: "detected on the next access"): when an operation
 * is refused because of active_id, reap it and say whether that freed it. */
static int reaped_stale(tf_store *st, const char *active_id)
{
	int reaped = 0;
	if (!active_id[0] || tf_runctl_reap(st, active_id, &reaped))
		return 0;
	return reaped;
}

/* The feed's active_task_id (from its API JSON) into id, "" when none. */
static void active_task_of(tf_store *st, const char *feed_id, char *id, size_t idlen)
{
	char *json = NULL;
	size_t len = 0;
	json_object *o = NULL;
	const char *s;

	id[0] = '\0';
	if (tf_feed_read(st, feed_id, &json, &len) == TF_OK &&
	    tf_json_parse(json, len, TF_MAX_FEED_JSON_DEPTH, &o, NULL, 0) == TF_OK &&
	    (s = tf_json_str(o, "active_task_id")) && tf_valid_uuid(s))
		snprintf(id, idlen, "%s", s);
	json_object_put(o);
	free(json);
}

static int run_active(tf_resp *resp, const char *task_id)
{
	if (task_id && task_id[0])
		return tf_resp_error_with(resp, 409, "run_active", "task_id", task_id,
		                          "a run of this feed is active");
	return tf_resp_error(resp, 409, "run_active", "a run of this feed is active");
}

/* prefix + "/api/threat-feeds/" + rest: URLs that go back through the mount
 * the request came in by. */
static void api_url(const tf_req *req, char *buf, size_t len, const char *what, const char *id)
{
	snprintf(buf, len, "%s/api/threat-feeds/%s%s%s/", req->prefix, what, what[0] ? "/" : "", id);
}

int tf_h_feed_list(tf_app *app, tf_req *req, tf_resp *resp)
{
	char *json = NULL;
	size_t len = 0;
	int rc, reaped;

	if (tf_app_store(app, resp))
		return -1;
	tf_runctl_reap_all(app->st, &reaped);   /* best effort: the list is still right */
	/* Paged only when asked (limit or cursor): the whole list stays the
	 * default answer, as before paging existed. */
	if (tf_req_query(req, "limit") || tf_req_query(req, "cursor")) {
		tf_req_paging pg = tf_req_page(req);
		rc = tf_feed_page(app->st, pg.cursor, pg.limit, &json, &len);
		if (rc == TF_EINVAL) {
			free(json);
			return tf_h_bad_cursor(resp);
		}
	} else {
		rc = tf_feed_list(app->st, &json, &len);
	}
	return tf_h_answer(resp, rc, 200, json, len);
}

int tf_h_feed_create(tf_app *app, tf_req *req, tf_resp *resp)
{
	char *json = NULL, err[256] = "";
	size_t len = 0;
	json_object *o = NULL;
	const char *id;
	int rc;

	if (tf_app_store(app, resp))
		return -1;
	rc = tf_feed_create(app->st, req->json, &json, &len, err, sizeof err);
	if (rc == TF_EINVAL)
		return tf_resp_error(resp, 400, "invalid_field", "%s", err[0] ? err : "invalid feed");
	if (rc == TF_EEXIST)
		return tf_resp_error(resp, 409, "exists", "a feed with this id already exists");
	if (rc) {
		free(json);
		return tf_resp_fail(resp, rc, err);
	}
	/* The id may have been generated: take it from what was stored. */
	if (tf_json_parse(json, len, TF_MAX_FEED_JSON_DEPTH, &o, NULL, 0) == TF_OK &&
	    (id = tf_json_str(o, "id")) && tf_valid_feed_id(id))
		api_url(req, resp->location, sizeof resp->location, "", id);
	json_object_put(o);
	return tf_resp_json(resp, 201, json, len);
}

int tf_h_feed_read(tf_app *app, tf_req *req, tf_resp *resp)
{
	char *json = NULL;
	size_t len = 0;
	int rc, reaped;

	if (tf_app_store(app, resp))
		return -1;
	tf_runctl_reap_all(app->st, &reaped);
	rc = tf_feed_read(app->st, req->feed_id, &json, &len);
	if (rc == TF_ENOTFOUND)
		return no_such_feed(resp);
	return tf_h_answer(resp, rc, 200, json, len);
}

int tf_h_feed_patch(tf_app *app, tf_req *req, tf_resp *resp)
{
	char *json = NULL, err[256] = "", active[TF_UUID_LEN + 1];
	size_t len = 0;
	int rc;

	if (tf_app_store(app, resp))
		return -1;
	for (int attempt = 0;; attempt++) {
		rc = tf_feed_patch(app->st, req->feed_id, req->json, &json, &len, err, sizeof err);
		if (rc != TF_ECONFLICT)
			break;
		active_task_of(app->st, req->feed_id, active, sizeof active);
		if (attempt || !reaped_stale(app->st, active))
			return run_active(resp, active);
	}
	if (rc == TF_ENOTFOUND)
		return no_such_feed(resp);
	if (rc == TF_EINVAL)
		return tf_resp_error(resp, 400, "invalid_field", "%s", err[0] ? err : "invalid feed");
	return tf_h_answer(resp, rc, 200, json, len);
}

int tf_h_feed_delete(tf_app *app, tf_req *req, tf_resp *resp)
{
	char active[TF_UUID_LEN + 1];
	int rc;

	if (tf_app_store(app, resp))
		return -1;
	for (int attempt = 0;; attempt++) {
		rc = tf_feed_delete(app->st, req->feed_id);
		if (rc != TF_ECONFLICT)
			break;
		active_task_of(app->st, req->feed_id, active, sizeof active);
		if (attempt || !reaped_stale(app->st, active))
			return run_active(resp, active);
	}
	if (rc == TF_ENOTFOUND)
		return no_such_feed(resp);
	if (rc)
		return tf_resp_fail(resp, rc, NULL);
	tf_resp_empty(resp, 204);
	return 0;
}

/* The 202 answer of consume: where to watch the run. */
static int consume_answer(const tf_req *req, tf_resp *resp, const char *task_id)
{
	json_object *o = json_object_new_object();
	const char *text;
	size_t len;
	int rc;

	if (!o)
		return tf_resp_fail(resp, TF_ENOMEM, NULL);
	api_url(req, resp->location, sizeof resp->location, "task-status", task_id);
	json_object_object_add(o, "task_id", json_object_new_string(task_id));
	json_object_object_add(o, "feed_id", json_object_new_string(req->feed_id));
	json_object_object_add(o, "status", json_object_new_string("queued"));
	json_object_object_add(o, "status_url", json_object_new_string(resp->location));
	text = tf_json_text(o, &len);
	rc = text ? tf_resp_json_copy(resp, 202, text, len) : tf_resp_fail(resp, TF_ENOMEM, NULL);
	json_object_put(o);
	return rc;
}

int tf_h_feed_consume(tf_app *app, tf_req *req, tf_resp *resp)
{
	char task_id[TF_UUID_LEN + 1] = "", active[TF_UUID_LEN + 1] = "";
	char msg[256];
	int rc;

	if (tf_app_store(app, resp))
		return -1;
	for (int attempt = 0;; attempt++) {
		active[0] = '\0';
		rc = tf_task_create(app->st, req->feed_id, task_id, active);
		if (rc != TF_ECONFLICT)
			break;
		if (attempt || !reaped_stale(app->st, active))
			return run_active(resp, active);
	}
	if (rc == TF_ENOTFOUND)
		return no_such_feed(resp);
	if (rc)
		return tf_resp_fail(resp, rc, NULL);
	/* The task is durable and queued; the run starts detached (or an agent
	 * is woken to start it) and the answer goes out now: a handler never
	 * waits on a run. */
	if ((rc = tf_runctl_start(&app->cfg, app->st, task_id))) {
		int e = errno;
		snprintf(msg, sizeof msg, "could not start the run: %s",
		         rc == TF_ESYS && e ? strerror(e) : tf_strerror(rc));
		tf_err("tf_h_feed_consume: feed %s task %s: %s", req->feed_id, task_id, msg);
		if (tf_runctl_finish(app->st, task_id, TF_ST_FAILED, 0, msg))
			tf_err("tf_h_feed_consume: task %s could not be marked failed", task_id);
		return tf_resp_error_with(resp, 500, "spawn_failed", "task_id", task_id,
		                          "could not start the run");
	}
	return consume_answer(req, resp, task_id);
}

void tf_h_fresh_task(tf_app *app, const char *task_id, char **json, size_t *len)
{
	char *fresh = NULL;
	size_t flen = 0;

	if (task_id[0] && tf_task_read(app->st, task_id, &fresh, &flen) == TF_OK) {
		free(*json);
		*json = fresh;
		*len = flen;
	}
}

int tf_h_cancel_mode(const tf_req *req, tf_resp *resp, int *mode)
{
	const char *name = NULL;
	tf_cancel_mode m = TF_CANCEL_STOP_NOW;
	int rc = tf_json_get_str(req->json, "mode", &name);

	if (rc == TF_OK && tf_cancel_mode_parse(name, &m) == TF_OK && m != TF_CANCEL_NONE) {
		*mode = (int)m;
		return 0;
	}
	if (rc == TF_ENOTFOUND) {   /* absent or null: the default (docs/SPEC.md §2) */
		*mode = (int)TF_CANCEL_STOP_NOW;
		return 0;
	}
	return tf_resp_error(resp, 400, "bad_mode", "mode: must be \"stop_now\" or \"cancel_job\"");
}

int tf_h_feed_cancel(tf_app *app, tf_req *req, tf_resp *resp)
{
	char task_id[TF_UUID_LEN + 1] = "", *json = NULL;
	size_t len = 0;
	int mode, rc;

	if (tf_h_cancel_mode(req, resp, &mode) || tf_app_store(app, resp))
		return -1;
	rc = tf_task_cancel_feed(app->st, req->feed_id, (tf_cancel_mode)mode, req->requested_by,
	                         task_id, &json, &len);
	if (rc == TF_ENOTFOUND)
		return no_such_feed(resp);
	if (rc == TF_ECONFLICT)
		return tf_resp_error(resp, 409, "no_active_run", "no run of this feed is active");
	if (rc)
		return tf_h_answer(resp, rc, 0, json, len);
	/* Durable first (above), then the wake-up: a lost signal costs only
	 * latency, never the cancel (docs/SPEC.md §3). */
	if (task_id[0] && tf_runctl_wake(app->st, task_id))
		tf_debug("tf_h_feed_cancel: wake %s failed", task_id);
	tf_h_fresh_task(app, task_id, &json, &len);
	return tf_resp_json(resp, 202, json, len);
}

int tf_h_feed_indicators(tf_app *app, tf_req *req, tf_resp *resp)
{
	tf_req_paging pg = tf_req_page(req);
	char *json = NULL;
	size_t len = 0;
	int rc;

	if (tf_app_store(app, resp))
		return -1;
	/* records.c pages any feed id; an unknown feed is a 404, not []. */
	rc = tf_feed_read(app->st, req->feed_id, &json, &len);
	free(json);
	json = NULL;
	if (rc == TF_ENOTFOUND)
		return no_such_feed(resp);
	if (rc)
		return tf_resp_fail(resp, rc, NULL);
	rc = tf_records_page(app->st, req->feed_id, pg.cursor, pg.limit, &json, &len);
	if (rc == TF_EINVAL) {
		free(json);
		return tf_h_bad_cursor(resp);
	}
	return tf_h_answer(resp, rc, 200, json, len);
}

/* The CLI's answer: its last non-empty line, {"ok":bool,"detail":string}
 * and, for a taxii21 feed, "api_root" (string or null). Only those fields
 * are relayed, rebuilt by us. */
static int relay_test_result(tf_resp *resp, char *out)
{
	char *line = out, *nl;
	json_object *in = NULL, *o, *root;
	const char *detail = NULL, *text;
	size_t len;
	int ok, rc = -1;

	while ((nl = strchr(line, '\n')) && nl[1])
		line = nl + 1;
	if (tf_json_parse(line, strlen(line), TF_MAX_JSON_DEPTH, &in, NULL, 0) ||
	    tf_json_get_bool(in, "ok", &ok)) {
		json_object_put(in);
		return 1;   /* not an answer */
	}
	tf_json_get_str(in, "detail", &detail);
	if ((o = json_object_new_object())) {
		json_object_object_add(o, "ok", json_object_new_boolean(ok));
		json_object_object_add(o, "detail", json_object_new_string(detail ? detail : ""));
		if (json_object_object_get_ex(in, "api_root", &root) &&
		    (!root || json_object_is_type(root, json_type_string)))
			json_object_object_add(o, "api_root", json_object_get(root));
		if ((text = tf_json_text(o, &len)))
			rc = tf_resp_json_copy(resp, 200, text, len);
		json_object_put(o);
	}
	json_object_put(in);
	return rc ? tf_resp_fail(resp, TF_ENOMEM, NULL) : 0;
}

int tf_h_feed_test(tf_app *app, tf_req *req, tf_resp *resp)
{
	char out[TF_TEST_CONNECTION_OUTPUT], *json = NULL;
	char *argv[] = {app->cfg.worker, "test-connection", (char *)req->feed_id, NULL};
	size_t len;
	int rc, status, timed_out, code;

	if (tf_app_store(app, resp))
		return -1;
	rc = tf_feed_read(app->st, req->feed_id, &json, &len);
	free(json);
	if (rc == TF_ENOTFOUND)
		return no_such_feed(resp);
	if (rc)
		return tf_resp_fail(resp, rc, NULL);
	if (tf_subproc_capture(argv, TF_TEST_CONNECTION_TIMEOUT_S * 1000, out, sizeof out, &status,
	                       &timed_out)) {
		tf_err("tf_h_feed_test: cannot run %s: %s", app->cfg.worker, strerror(errno));
		return tf_resp_fail(resp, TF_ESYS, NULL);
	}
	if (timed_out) {
		/* Too slow is an answer about the upstream, not a server error. */
		snprintf(out, sizeof out, "{\"ok\":false,\"detail\":\"no answer within %d s\"}",
		         TF_TEST_CONNECTION_TIMEOUT_S);
		return tf_resp_json_copy(resp, 200, out, strlen(out));
	}
	if ((rc = relay_test_result(resp, out)) <= 0)
		return rc;
	code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
	if (code == TF_EXIT_USAGE || code == TF_EXIT_EX_USAGE)
		return tf_resp_error(resp, 501, "not_implemented", "connection tests are not available");
	tf_err("tf_h_feed_test: %s test-connection %s: no answer (status %d)", app->cfg.worker,
	       req->feed_id, status);
	return tf_resp_fail(resp, TF_ESYS, NULL);
}
