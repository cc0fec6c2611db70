#include "app.h"

#include <stdio.h>
#include <string.h>

#include "auth.h"
#include "err.h"
#include "log.h"
#include "router.h"
#include "runctl.h"

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
	rc = tf_store_open(&app->st, app->cfg.db_path, 0, err, sizeof err);
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
static void pipeline(tf_app *app, tf_req *req, tf_resp *resp, tf_read_fn rd, void *rctx)
{
	const tf_route *rt;

	if (app->cfg_rc) {
		tf_resp_error(resp, 500, "config_error", "server configuration error");
		return;
	}
	if (tf_req_parse(req, resp) || tf_auth_check(&app->cfg, req, resp) ||
	    !(rt = tf_router_match(req, resp)) || tf_auth_csrf(req, resp) ||
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
static void log_request(const tf_req *req, const tf_resp *resp)
{
	char path[256];
	size_t used = 0;

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

void tf_app_handle(tf_app *app, char **envp, tf_read_fn rd, void *rctx, tf_write_fn wr,
                   void *wctx)
{
	tf_req req;
	tf_resp resp;

	tf_req_init(&req, envp);
	tf_resp_init(&resp);
	resp.wr = wr;
	resp.wctx = wctx;
	pipeline(app, &req, &resp, rd, rctx);
	if (!resp.status)   /* a handler that forgot to answer is a bug: say so */
		tf_resp_fail(&resp, TF_ESYS, NULL);
	log_request(&req, &resp);
	/* A store that failed under an open handle (TF_ESTORE, TF_EPERM) is
	 * reopened by the next request rather than kept for the process's life. */
	if (resp.status == 503 && app->st)
		tf_app_close(app);
	if (!resp.streamed)
		tf_resp_emit(&resp, req.method == TF_M_HEAD, wr, wctx);
	tf_resp_free(&resp);
	tf_req_free(&req);
}
