/* libFuzzer harness: the FastCGI handler's request pipeline without FastCGI
 * or a store — exactly the steps tf_app_handle() (fcgi/app.c) takes before a
 * handler runs: tf_req_parse → tf_auth_check → tf_router_match →
 * tf_auth_role_check → tf_auth_csrf → tf_router_check_query → tf_req_read_body, then the
 * response written by tf_resp_emit (an error, or the ETag path of a 200).
 *
 * Input: CGI parameters "NAME=value", one per line, up to an empty line; the
 * rest is the request body (read in small chunks, as a socket would give
 * it). Each input runs under two configurations: no auth, and an API token
 * with trust_remote_user.
 *
 * Invariants checked: a failed step leaves an error status (4xx) and a JSON
 * error body; a matched route's path parameters passed their validators. */
#include "fuzz.h"

#include "auth.h"
#include "config.h"
#include "err.h"
#include "json.h"
#include "request.h"
#include "respond.h"
#include "router.h"
#include "util.h"

#define MAX_PARAMS 64

struct body {
	const char *p;
	size_t left;
};

static long rd(void *ctx, char *buf, size_t len)
{
	struct body *b = ctx;
	size_t n = len < b->left ? len : b->left;

	if (n > 7)
		n = 7; /* short reads, like a socket */
	memcpy(buf, b->p, n);
	b->p += n;
	b->left -= n;
	return (long)n;
}

static int wr(void *ctx, const char *buf, size_t len)
{
	size_t *total = ctx;
	(void)buf;
	*total += len;
	return 0;
}

static void check_error(const tf_resp *resp)
{
	json_object *doc = NULL;

	FUZZ_CHECK(resp->status >= 400 && resp->status <= 599);
	FUZZ_CHECK(resp->body && resp->len > 0);
	FUZZ_CHECK(tf_json_parse(resp->body, resp->len, 8, &doc, NULL, 0) == TF_OK);
	FUZZ_CHECK(tf_json_str(doc, "error") && tf_json_str(doc, "code"));
	json_object_put(doc);
}

static void pipeline(const tf_config *cfg, char **envp, const char *body, size_t blen)
{
	struct body b = {body, blen};
	const tf_route *rt = NULL;
	tf_req req;
	tf_resp resp;
	size_t out = 0;
	int failed;

	tf_req_init(&req, envp);
	tf_resp_init(&resp);
	failed = tf_req_parse(&req, &resp) || tf_auth_check(cfg, &req, &resp) ||
	         !(rt = tf_router_match(&req, &resp)) || tf_auth_role_check(&req, rt->role, &resp) ||
	         tf_auth_csrf(&req, &resp) || tf_router_check_query(rt, &req, &resp);
	if (!failed && (req.method & TF_M_WRITE))
		failed = tf_req_read_body(&req, rd, &b, &resp) != 0;
	if (failed) {
		check_error(&resp);
	} else {
		FUZZ_CHECK(rt != NULL);
		FUZZ_CHECK(req.role >= rt->role);
		if (req.feed_id)
			FUZZ_CHECK(tf_valid_feed_id(req.feed_id));
		if (req.task_id)
			FUZZ_CHECK(tf_valid_uuid(req.task_id));
		if (req.method & TF_M_WRITE)
			FUZZ_CHECK(req.json && json_object_is_type(req.json, json_type_object));
		/* what a handler might answer, through the ETag path */
		tf_resp_json_copy(&resp, 200, "{\"ok\":true}", 11);
		tf_resp_etag(&resp, tf_req_env(&req, "HTTP_IF_NONE_MATCH"));
	}
	tf_resp_emit(&resp, req.method == TF_M_HEAD, wr, &out);
	tf_resp_free(&resp);
	tf_req_free(&req);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = fuzz_cstr(data, size), *envp[MAX_PARAMS + 1], *p = text, *body = text + size;
	size_t n = 0;
	tf_config open = {0}, guarded = {0};

	snprintf(guarded.api_token, sizeof guarded.api_token, "s3cret-token");
	guarded.trust_remote_user = 1;
	/* NAME=value lines up to an empty line; the rest is the body */
	while (p < text + size) {
		char *eol = memchr(p, '\n', (size_t)(text + size - p));
		if (!eol) {
			if (n < MAX_PARAMS)
				envp[n++] = p;
			p = text + size;
			break;
		}
		*eol = '\0';
		if (eol == p) {
			body = eol + 1;
			break;
		}
		if (n < MAX_PARAMS)
			envp[n++] = p;
		p = eol + 1;
	}
	envp[n] = NULL;
	pipeline(&open, envp, body, (size_t)(text + size - body));
	pipeline(&guarded, envp, body, (size_t)(text + size - body));
	free(text);
	return 0;
}
