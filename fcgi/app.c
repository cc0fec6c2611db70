#include "app.h"

#include <stdio.h>
#include <string.h>

#include "audit.h"
#include "auth.h"
#include "err.h"
#include "json.h"
#include "log.h"
#include "router.h"
#include "runctl.h"
#include "util.h"

void tf_app_init(tf_app *app, const char *argv0)
{
	char err[256] = "";

	memset(app, 0, sizeof *app);
	app->store_rc = TF_OK;
	app->cfg_rc = tf_config_load(&app->cfg, argv0, err, sizeof err);
	if (app->cfg_rc)
		tf_err("tf_app_init: %s", err[0] ? err : tf_strerror(app->cfg_rc));
	else if (app->cfg.log_debug)
		tf_log_set_level(TF_LOG_DEBUG);
	/* A run a request reaps (cancelled while queued, processes lost) gets
	 * its webhook from a detached sender, never from the request. */
	if (!app->cfg_rc)
		tf_runctl_set_notify(&app->cfg);
}

void tf_app_close(tf_app *app)
{
	if (app->st)
		tf_store_close(app->st);
	app->st = NULL;
}

int tf_app_store(tf_app *app, tf_resp *resp)
{
	char err[256] = "";
	int rc;

	if (app->st)
		return 0;
	rc = tf_store_open(&app->st, app->cfg.db_path, tf_config_map_bytes(&app->cfg), err, sizeof err);
	if (rc) {
		app->st = NULL;
		/* Log the reason once per change, not once per request. */
		if (rc != app->store_rc)
			tf_err("tf_app_store: %s", err[0] ? err : tf_strerror(rc));
		app->store_rc = rc;
		return tf_resp_error(resp, 503, "store_unavailable", "store unavailable");
	}
	if (app->store_rc)
		tf_info("tf_app_store: store available again");
	app->store_rc = TF_OK;
	return 0;
}

/* The pipeline. Every step either passes or leaves an error in resp; the
 * order is chosen so that nothing about the API is revealed before
 * authentication, and no body is read for a request that is refused. */
static void pipeline(tf_app *app, tf_req *req, tf_resp *resp, tf_read_fn rd, void *rctx,
                     const tf_route **matched)
{
	const tf_route *rt;

	if (app->cfg_rc) {
		tf_resp_error(resp, 500, "config_error", "server configuration error");
		return;
	}
	if (tf_req_parse(req, resp) || tf_auth_check(&app->cfg, req, resp) ||
	    !(rt = tf_router_match(req, resp)) || (*matched = rt, 0) ||
	    tf_auth_role_check(req, rt->role, resp) || tf_auth_csrf(req, resp) ||
	    tf_router_check_query(rt, req, resp))
		return;
	resp->head_only = req->method == TF_M_HEAD;
	req->max_body = rt->max_body;
	if ((req->method & TF_M_WRITE) && tf_req_read_body(req, rd, rctx, resp))
		return;
	if (rt->handler(app, req, resp))
		return;
	if (req->method & (TF_M_GET | TF_M_HEAD))
		tf_resp_etag(resp, tf_req_env(req, "HTTP_IF_NONE_MATCH"));
}

/* Server errors are logged (the client only sees a generic text); the rest
 * at debug level. The path is the decoded route, never the query (which is
 * where a careless client might put a secret). */
static void log_request(const tf_app *app, const tf_req *req, const tf_resp *resp)
{
	char path[256];
	size_t used = 0;

	/* Debug lines are on only with log_debug (tf_app_init): the path is
	 * not built for nothing on every request. */
	if (resp->status < 500 && (app->cfg_rc || !app->cfg.log_debug))
		return;
	path[0] = '\0';
	for (size_t i = 0; i < req->nseg && used < sizeof path; i++) {
		int n = snprintf(path + used, sizeof path - used, "/%s", req->seg[i]);
		if (n < 0)
			break;
		used += (size_t)n;
	}
	if (resp->status >= 500)
		tf_warn("%s %s: %d", req->method_name, path[0] ? path : "-", resp->status);
	else
		tf_debug("%s %s: %d", req->method_name, path[0] ? path : "-", resp->status);
}

/* A string member of obj, or NULL. */
static const char *member(json_object *obj, const char *key)
{
	json_object *v;
	return json_object_object_get_ex(obj, key, &v) && json_object_is_type(v, json_type_string)
	           ? json_object_get_string(v)
	           : NULL;
}

/* The cancel mode asked for, from the parsed body; only the two known
 * names are ever copied (a body is the client's, so could hold anything). */
static const char *cancel_mode(const tf_req *req)
{
	const char *m = req->json ? member(req->json, "mode") : NULL;
	if (!m)
		return req->json ? "stop_now" : NULL;
	return !strcmp(m, "stop_now") || !strcmp(m, "cancel_job") ? m : "invalid";
}

/* Is this request one the audit records (README "Audit")? Failed
 * authentication, every write route but the read-only bulk lookup (the only
 * POST open to viewers), and a read refused for its role — decided without
 * parsing any answer but a 403's (reads are most requests). */
static int audited(const tf_req *req, const tf_resp *resp, const tf_route *rt, json_object **body)
{
	const char *code;

	if (resp->status == 401)
		return 1;
	if (!rt)
		return 0;
	if ((req->method & TF_M_WRITE) && rt->role > TF_ROLE_VIEWER)
		return 1;
	if (resp->status != 403 || !*body)
		return 0;
	if (!(code = member(*body, "code")))
		code = member(*body, "error_code");
	return code && !strcmp(code, "forbidden_role");
}

/* Right after the write it records, in its own small transaction: the
 * writes' transactions live in lib/ and know nothing of who asked. */
static void audit(tf_app *app, const tf_req *req, const tf_resp *resp, const tf_route *rt)
{
	json_object *body = NULL;
	const char *user = tf_req_env(req, "REMOTE_USER"), *code = NULL, *task = req->task_id;
	const char *feed = req->feed_id;
	tf_audit_entry e = {0};
	tf_resp scratch;
	int rc;

	if (app->cfg_rc || (resp->status != 401 && !rt))
		return;
	/* Only small answers are parsed: an error, a task, a feed. */
	if ((resp->status == 401 || resp->status == 403 ||
	     ((req->method & TF_M_WRITE) && rt->role > TF_ROLE_VIEWER)) &&
	    resp->body && resp->len && !resp->streamed &&
	    tf_json_parse(resp->body, resp->len, TF_MAX_FEED_JSON_DEPTH, &body, NULL, 0))
		body = NULL;
	if (!audited(req, resp, rt, &body)) {
		json_object_put(body);
		return;
	}
	if (body) {
		/* a TAXII error message keeps the code as error_code */
		if (!(code = member(body, "code")))
			code = member(body, "error_code");
		if (!task)
			task = member(body, "task_id");
		if (!feed)   /* a cancel by task id answers the task, which names it */
			feed = member(body, "feed_id");
	}
	/* The id a create asked for, refused or not; only a valid one (the body
	 * is the client's and may hold anything). */
	if (!feed && rt && rt->handler == tf_h_feed_create && req->json &&
	    (feed = member(req->json, "id")) && !tf_valid_feed_id(feed))
		feed = NULL;
	e.via = "api";
	/* Before authentication passed, requested_by is empty and the role none. */
	e.who = req->requested_by[0] ? req->requested_by : user && *user ? user : "anonymous";
	e.role = tf_role_name(req->requested_by[0] ? req->role : TF_ROLE_NONE);
	e.address = tf_req_env(req, "REMOTE_ADDR");
	e.action = resp->status == 401 ? "auth" : rt->name;
	e.method = req->method_name;
	e.feed_id = feed;
	e.task_id = task;
	e.mode = rt && (rt->handler == tf_h_task_cancel || rt->handler == tf_h_feed_cancel)
	             ? cancel_mode(req)
	             : NULL;
	e.status = resp->status;
	e.outcome = resp->status < 400 ? "ok" : code ? code : "error";
	tf_resp_init(&scratch);
	/* Lazy commit: a synchronous one would double the disk waits of a
	 * cancel (measured: +6 ms on LMDB). The entry is lost only if the
	 * machine (not the process) dies before the next synchronous commit of
	 * any writer flushes it (README "Audit"). */
	if (e.mode && !tf_app_store(app, &scratch)) {
		/* A cancel's entry waits in the store's signals, like the cancel:
		 * the writer lock may be held by a frozen worker (lib/audit.h). */
		if ((rc = tf_audit_defer(app->st, &e)))
			tf_warn("audit: %s", tf_strerror(rc));
	} else if (!tf_app_store(app, &scratch)) {
		tf_store_set_lazy(app->st, 1);
		if ((rc = tf_audit_append(app->st, &e)))
			tf_warn("audit: %s", tf_strerror(rc));
		if (tf_store_set_lazy(app->st, 0))
			tf_app_close(app);   /* never keep a handle that might not sync */
	}
	tf_resp_free(&scratch);
	json_object_put(body);
}

void tf_app_handle(tf_app *app, char **envp, tf_read_fn rd, void *rctx, tf_write_fn wr,
                   void *wctx)
{
	const tf_route *rt = NULL;
	tf_req req;
	tf_resp resp;

	tf_req_init(&req, envp);
	tf_resp_init(&resp);
	resp.wr = wr;
	resp.wctx = wctx;
	pipeline(app, &req, &resp, rd, rctx, &rt);
	if (!resp.status)   /* a handler that forgot to answer is a bug: say so */
		tf_resp_fail(&resp, TF_ESYS, NULL);
	log_request(app, &req, &resp);
	/* A store that failed under an open handle (TF_ESTORE, TF_EPERM) is
	 * reopened by the next request rather than kept for the process's life. */
	if (resp.status == 503 && app->st)
		tf_app_close(app);
	if (req.taxii && resp.status >= 400 && !resp.streamed)
		tf_taxii_error(&resp);
	if (!resp.streamed)
		tf_resp_emit(&resp, req.method == TF_M_HEAD, wr, wctx);
	audit(app, &req, &resp, rt);
	tf_resp_free(&resp);
	tf_req_free(&req);
}
