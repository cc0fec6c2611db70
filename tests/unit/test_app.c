/* fcgi/app.c, the whole request pipeline of the FastCGI handler:
 * tf_app_handle() end to end on a temporary store (request parsing, auth,
 * CSRF, routing, handlers, the response writer), reading the CGI output the
 * way a web server would. */
#include "testutil.h"

#include "app.h"
#include "request.h"
#include "router.h"

#define UUID "3f2b9c1e-8a4d-4e2f-9b1a-0c5d6e7f8a9b"

static tf_app app;
static char tmpdir[64];

typedef struct out {
	char raw[128 * 1024];
	size_t len;
	int status;
	char *body;           /* into raw */
	json_object *json;    /* parsed body, or NULL */
} out;

static int write_out(void *ctx, const char *buf, size_t len)
{
	out *o = ctx;
	if (o->len + len >= sizeof o->raw)
		return -1;
	memcpy(o->raw + o->len, buf, len);
	o->len += len;
	o->raw[o->len] = '\0';
	return 0;
}

typedef struct in {
	const char *data;
	size_t len, pos;
} in;

static long read_in(void *ctx, char *buf, size_t len)
{
	in *i = ctx;
	size_t n = i->len - i->pos < len ? i->len - i->pos : len;
	memcpy(buf, i->data + i->pos, n);
	i->pos += n;
	return (long)n;
}

/* One request through tf_app_handle(). extra: NULL-terminated CGI params. */
static out *call(const char *method, const char *uri, const char *body, char **extra)
{
	static out o;
	char *env[32], m[32], u[1024], cl[64];
	const char *q = strchr(uri, '?');
	char qs[1024];
	size_t n = 0;
	in src = {.data = body ? body : "", .len = body ? strlen(body) : 0};
	char *sep;

	json_object_put(o.json);
	memset(&o, 0, sizeof o);
	snprintf(m, sizeof m, "REQUEST_METHOD=%s", method);
	snprintf(u, sizeof u, "REQUEST_URI=%s", uri);
	snprintf(qs, sizeof qs, "QUERY_STRING=%s", q ? q + 1 : "");
	snprintf(cl, sizeof cl, "CONTENT_LENGTH=%zu", src.len);
	env[n++] = m;
	env[n++] = u;
	env[n++] = qs;
	env[n++] = "HTTP_HOST=127.0.0.1:8080";
	if (body) {
		env[n++] = cl;
		env[n++] = "CONTENT_TYPE=application/json";
	}
	for (; extra && *extra && n < 31; extra++)
		env[n++] = *extra;
	env[n] = NULL;
	tf_app_handle(&app, env, read_in, &src, write_out, &o);
	assert_true(sscanf(o.raw, "Status: %d ", &o.status) == 1);
	sep = strstr(o.raw, "\r\n\r\n");
	assert_non_null(sep);
	*sep = '\0';   /* o.raw: headers only from here on */
	o.body = sep + 4;
	if (*o.body)
		assert_int_equal(tf_json_parse(o.body, strlen(o.body), 32, &o.json, NULL, 0), TF_OK);
	return &o;
}

static const char *header(const out *o, const char *name)
{
	static char val[512];
	char pat[64];
	const char *p, *e;

	snprintf(pat, sizeof pat, "\r\n%s: ", name);
	if (!(p = strstr(o->raw, pat)))
		return NULL;
	p += strlen(pat);
	e = strstr(p, "\r\n");
	snprintf(val, sizeof val, "%.*s", (int)(e ? e - p : (ptrdiff_t)strlen(p)), p);
	return val;
}

static const char *code_of(const out *o)
{
	return tf_json_str(o->json, "code");
}

static int setup(void **state)
{
	(void)state;
	snprintf(tmpdir, sizeof tmpdir, "/tmp/tf_fcgi_XXXXXX");
	assert_non_null(mkdtemp(tmpdir));
	char db[128];
	snprintf(db, sizeof db, "%s/db", tmpdir);
	setenv("THREATFEED_DB", db, 1);
	setenv("THREATFEED_STATE_DIR", tmpdir, 1);
	unsetenv("THREATFEED_CONF");
	/* /bin/true as the worker: a spawned run never starts, so tasks stay
	 * queued and conflicts and cancels can be exercised without a run. */
	setenv("THREATFEED_WORKER", "/bin/true", 1);
	tf_app_init(&app, "test_app");
	assert_int_equal(app.cfg_rc, TF_OK);
	return 0;
}

static int teardown(void **state)
{
	char cmd[128];
	(void)state;
	tf_app_close(&app);
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}

static const char *feed_body(const char *id)
{
	static char b[512];
	snprintf(b, sizeof b,
	         "{\"id\":\"%s\",\"name\":\"Feed %s\",\"type\":\"taxii21\","
	         "\"url\":\"http://127.0.0.1:9/taxii2/\",\"collection\":\"c1\","
	         "\"username\":\"u\",\"secret\":\"hunter2-secret\"}", id, id);
	return b;
}

static void test_pipe_health(void **state)
{
	out *o;
	char tag[64], inm[96];
	(void)state;

	o = call("GET", "/api/health", NULL, NULL);
	assert_int_equal(o->status, 200);
	assert_string_equal(tf_json_str(o->json, "status"), "ok");
	assert_string_equal(tf_json_str(o->json, "auth"), "none");
	assert_string_equal(header(o, "Content-Type"), "application/json; charset=utf-8");
	assert_string_equal(header(o, "Cache-Control"), "no-store");
	assert_string_equal(header(o, "X-Content-Type-Options"), "nosniff");
	snprintf(tag, sizeof tag, "%s", header(o, "ETag"));
	snprintf(inm, sizeof inm, "HTTP_IF_NONE_MATCH=%s", tag);
	{
		char *extra[] = {inm, NULL};
		o = call("GET", "/api/health", NULL, extra);
		assert_int_equal(o->status, 304);
		assert_string_equal(o->body, "");
	}
	o = call("HEAD", "/api/health", NULL, NULL);
	assert_int_equal(o->status, 200);
	assert_string_equal(o->body, "");
	assert_non_null(header(o, "Content-Length"));
}

static void test_pipe_errors(void **state)
{
	char big[TF_MAX_BODY + 64];
	out *o;
	(void)state;

	o = call("GET", "/api/nope", NULL, NULL);
	assert_int_equal(o->status, 404);
	assert_string_equal(code_of(o), "not_found");
	o = call("PUT", "/api/threat-feeds/", "{}", NULL);
	assert_int_equal(o->status, 405);
	assert_string_equal(header(o, "Allow"), "GET, HEAD, POST");
	o = call("GET", "/api/../etc/passwd", NULL, NULL);
	assert_int_equal(o->status, 400);
	o = call("POST", "/api/threat-feeds/", "{\"id\":", NULL);
	assert_int_equal(o->status, 400);
	assert_string_equal(code_of(o), "invalid_json");
	o = call("POST", "/api/threat-feeds/", "{\"id\":\"x\",\"name\":5}", NULL);
	assert_int_equal(o->status, 400);
	assert_string_equal(code_of(o), "invalid_field");
	{
		/* call() always sends application/json: build this one by hand */
		char *env[] = {"REQUEST_METHOD=POST", "REQUEST_URI=/api/threat-feeds/",
		               "CONTENT_LENGTH=2", "CONTENT_TYPE=text/plain", NULL};
		in src = {.data = "{}", .len = 2};
		static out raw;
		memset(&raw, 0, sizeof raw);
		tf_app_handle(&app, env, read_in, &src, write_out, &raw);
		assert_non_null(strstr(raw.raw, "Status: 415 "));
		assert_non_null(strstr(raw.raw, "\"code\":\"unsupported_media_type\""));
	}
	memset(big, ' ', sizeof big - 1);
	big[0] = '{';
	big[sizeof big - 2] = '}';
	big[sizeof big - 1] = '\0';
	o = call("POST", "/api/threat-feeds/", big, NULL);
	assert_int_equal(o->status, 413);
	assert_string_equal(code_of(o), "payload_too_large");
	o = call("GET", "/api/threat-feeds/tasks/?limit=0", NULL, NULL);
	assert_int_equal(o->status, 400);
	o = call("GET", "/api/threat-feeds/task-status/" UUID "/", NULL, NULL);
	assert_int_equal(o->status, 404);
	o = call("POST", "/api/threat-feeds/cancel-task/" UUID "/", "{}", NULL);
	assert_int_equal(o->status, 404);
	o = call("POST", "/api/threat-feeds/nosuch/consume/", NULL, NULL);
	assert_int_equal(o->status, 404);
	o = call("GET", "/api/threat-feeds/nosuch/indicators/", NULL, NULL);
	assert_int_equal(o->status, 404);
	o = call("DELETE", "/api/threat-feeds/nosuch/", NULL, NULL);
	assert_int_equal(o->status, 404);
	o = call("PATCH", "/api/threat-feeds/nosuch/", "{\"name\":\"x\"}", NULL);
	assert_int_equal(o->status, 404);
	o = call("POST", "/api/threat-feeds/nosuch/cancel_consumption/", NULL, NULL);
	assert_int_equal(o->status, 404);
}

static void test_pipe_feed_crud(void **state)
{
	out *o;
	(void)state;

	o = call("POST", "/mnt/api/threat-feeds/", feed_body("crud"), NULL);
	assert_int_equal(o->status, 201);
	assert_string_equal(header(o, "Location"), "/mnt/api/threat-feeds/crud/");
	assert_string_equal(tf_json_str(o->json, "id"), "crud");
	assert_null(strstr(o->body, "hunter2"));           /* write-only secret */
	o = call("POST", "/api/threat-feeds/", feed_body("crud"), NULL);
	assert_int_equal(o->status, 409);
	assert_string_equal(code_of(o), "exists");
	o = call("GET", "/api/threat-feeds/crud", NULL, NULL);
	assert_int_equal(o->status, 200);
	assert_non_null(header(o, "ETag"));
	assert_null(strstr(o->body, "hunter2"));
	o = call("PATCH", "/api/threat-feeds/crud/", "{\"name\":\"Renamed\"}", NULL);
	assert_int_equal(o->status, 200);
	assert_string_equal(tf_json_str(o->json, "name"), "Renamed");
	o = call("PATCH", "/api/threat-feeds/crud/", "{\"interval_s\":\"x\"}", NULL);
	assert_int_equal(o->status, 400);
	o = call("GET", "/api/threat-feeds/", NULL, NULL);
	assert_int_equal(o->status, 200);
	assert_non_null(strstr(o->body, "\"id\":\"crud\""));
	o = call("GET", "/api/threat-feeds/crud/indicators/?limit=10", NULL, NULL);
	assert_int_equal(o->status, 200);
	assert_non_null(strstr(o->body, "\"indicators\":[]"));
	o = call("DELETE", "/api/threat-feeds/crud/", NULL, NULL);
	assert_int_equal(o->status, 204);
	assert_string_equal(o->body, "");
	o = call("GET", "/api/threat-feeds/crud/", NULL, NULL);
	assert_int_equal(o->status, 404);
}

static void test_pipe_consume_cancel(void **state)
{
	char task[TF_UUID_LEN + 1], uri[256], want[128];
	out *o;
	(void)state;

	o = call("POST", "/api/threat-feeds/", feed_body("runs"), NULL);
	assert_int_equal(o->status, 201);
	o = call("POST", "/x/api/threat-feeds/runs/consume/", NULL, NULL);
	assert_int_equal(o->status, 202);
	assert_string_equal(tf_json_str(o->json, "status"), "queued");
	assert_string_equal(tf_json_str(o->json, "feed_id"), "runs");
	snprintf(task, sizeof task, "%s", tf_json_str(o->json, "task_id"));
	assert_true(tf_valid_uuid(task));
	snprintf(want, sizeof want, "/x/api/threat-feeds/task-status/%s/", task);
	assert_string_equal(tf_json_str(o->json, "status_url"), want);

	/* one active run per feed: 409 names it */
	o = call("POST", "/api/threat-feeds/runs/consume/", "{}", NULL);
	assert_int_equal(o->status, 409);
	assert_string_equal(code_of(o), "run_active");
	assert_string_equal(tf_json_str(o->json, "task_id"), task);
	o = call("DELETE", "/api/threat-feeds/runs/", NULL, NULL);
	assert_int_equal(o->status, 409);
	assert_string_equal(code_of(o), "run_active");

	/* status with ETag and 304 */
	snprintf(uri, sizeof uri, "/api/threat-feeds/task-status/%s/", task);
	o = call("GET", uri, NULL, NULL);
	assert_int_equal(o->status, 200);
	assert_string_equal(tf_json_str(o->json, "task_id"), task);
	{
		char inm[96], *extra[2] = {inm, NULL};
		snprintf(inm, sizeof inm, "HTTP_IF_NONE_MATCH=%s", header(o, "ETag"));
		o = call("GET", uri, NULL, extra);
		assert_int_equal(o->status, 304);
	}
	o = call("GET", "/api/threat-feeds/tasks/?active=1&feed_id=runs", NULL, NULL);
	assert_int_equal(o->status, 200);
	assert_non_null(strstr(o->body, task));

	/* bad mode, then a feed-level cancel */
	o = call("POST", "/api/threat-feeds/runs/cancel_consumption/", "{\"mode\":\"later\"}", NULL);
	assert_int_equal(o->status, 400);
	assert_string_equal(code_of(o), "bad_mode");
	o = call("POST", "/api/threat-feeds/runs/cancel_consumption/", "{\"mode\":7}", NULL);
	assert_int_equal(o->status, 400);
	o = call("POST", "/api/threat-feeds/runs/cancel_consumption/", "{\"mode\":\"stop_now\"}",
	         NULL);
	assert_int_equal(o->status, 202);
	assert_string_equal(tf_json_str(o->json, "task_id"), task);
	assert_non_null(strstr(o->body, "\"requested_by\":\"anonymous\""));
	assert_non_null(strstr(o->body, "\"mode\":\"stop_now\""));
	/* the run never started (the worker is /bin/true): the wake-up ended it
	 * at once, and the answer shows that (docs/SPEC.md §3) */
	assert_string_equal(tf_json_str(o->json, "status"), "stopped");
	snprintf(uri, sizeof uri, "/api/threat-feeds/cancel-task/%s/", task);
	o = call("POST", uri, "{\"mode\":\"cancel_job\"}", NULL);
	assert_int_equal(o->status, 409);
	assert_string_equal(code_of(o), "task_finished");
	o = call("POST", "/api/threat-feeds/runs/cancel_consumption/", NULL, NULL);
	assert_int_equal(o->status, 409);
	assert_string_equal(code_of(o), "no_active_run");

	/* a task-level cancel_job of a new run, with an authenticated user */
	o = call("POST", "/api/threat-feeds/runs/consume/", NULL, NULL);
	assert_int_equal(o->status, 202);
	snprintf(task, sizeof task, "%s", tf_json_str(o->json, "task_id"));
	snprintf(uri, sizeof uri, "/api/threat-feeds/cancel-task/%s/", task);
	{
		char *extra[] = {"REMOTE_USER=dave", NULL};
		o = call("POST", uri, "{\"mode\":\"cancel_job\"}", extra);
	}
	assert_int_equal(o->status, 202);
	assert_string_equal(tf_json_str(o->json, "status"), "cancelled");
	assert_non_null(strstr(o->body, "\"requested_by\":\"dave\""));
	o = call("POST", uri, NULL, NULL);
	assert_int_equal(o->status, 409);

	/* finished history can be cleared; active runs never are */
	o = call("DELETE", "/api/threat-feeds/tasks/?finished_before=garbage", NULL, NULL);
	assert_int_equal(o->status, 400);
	o = call("DELETE", "/api/threat-feeds/tasks/?finished_before=1970-01-01T00:00:00Z", NULL,
	         NULL);
	assert_int_equal(o->status, 200);
	assert_string_equal(o->body, "{\"deleted\":0}");
	o = call("DELETE", "/api/threat-feeds/tasks/", NULL, NULL);
	assert_int_equal(o->status, 200);
	assert_non_null(strstr(o->body, "\"deleted\":"));
	assert_null(strstr(o->body, "\"deleted\":0"));
	snprintf(uri, sizeof uri, "/api/threat-feeds/task-status/%s/", task);
	o = call("GET", uri, NULL, NULL);
	assert_int_equal(o->status, 404);
	o = call("DELETE", "/api/threat-feeds/runs/", NULL, NULL);
	assert_int_equal(o->status, 204);
}

static void test_pipe_spawn_failure(void **state)
{
	char saved[sizeof app.cfg.worker], uri[256], task[TF_UUID_LEN + 1];
	out *o;
	(void)state;

	memcpy(saved, app.cfg.worker, sizeof saved);
	snprintf(app.cfg.worker, sizeof app.cfg.worker, "%s/no-such-worker", tmpdir);
	o = call("POST", "/api/threat-feeds/", feed_body("spawnfail"), NULL);
	assert_int_equal(o->status, 201);
	o = call("POST", "/api/threat-feeds/spawnfail/consume/", NULL, NULL);
	assert_int_equal(o->status, 500);
	assert_string_equal(code_of(o), "spawn_failed");
	assert_null(strstr(o->body, tmpdir));   /* no internals */
	snprintf(task, sizeof task, "%s", tf_json_str(o->json, "task_id"));
	snprintf(uri, sizeof uri, "/api/threat-feeds/task-status/%s/", task);
	o = call("GET", uri, NULL, NULL);
	assert_int_equal(o->status, 200);
	assert_string_equal(tf_json_str(o->json, "status"), "failed");
	assert_non_null(strstr(tf_json_str(o->json, "error"), "could not start the run"));
	/* the feed is free again */
	o = call("DELETE", "/api/threat-feeds/spawnfail/", NULL, NULL);
	assert_int_equal(o->status, 204);
	memcpy(app.cfg.worker, saved, sizeof saved);
}

static void test_pipe_test_connection(void **state)
{
	char saved[sizeof app.cfg.worker], script[128];
	out *o;
	(void)state;

	memcpy(saved, app.cfg.worker, sizeof saved);
	o = call("POST", "/api/threat-feeds/", feed_body("tc"), NULL);
	assert_int_equal(o->status, 201);
	/* a CLI that answers */
	snprintf(script, sizeof script, "%s/cli.sh", tmpdir);
	tu_write_script(script, "#!/bin/sh\n[ \"$1\" = test-connection ] || exit 2\n"
	                        "echo 'noise'\n"
	                        "echo '{\"ok\":false,\"detail\":\"HTTP 401 for '$2'\",\"x\":1}'\n");
	snprintf(app.cfg.worker, sizeof app.cfg.worker, "%s", script);
	o = call("POST", "/api/threat-feeds/tc/test_connection/", "{}", NULL);
	assert_int_equal(o->status, 200);
	assert_string_equal(o->body, "{\"ok\":false,\"detail\":\"HTTP 401 for tc\"}");
	/* a taxii21 feed's api_root, string or null, is relayed too; any other
	 * type of it is not an api_root */
	tu_write_script(script,
	                "#!/bin/sh\necho '{\"ok\":true,\"detail\":\"d\",\"api_root\":\"http://u/a/\"}'\n");
	o = call("POST", "/api/threat-feeds/tc/test_connection/", "{}", NULL);
	assert_int_equal(o->status, 200);
	assert_string_equal(o->body, "{\"ok\":true,\"detail\":\"d\",\"api_root\":\"http://u/a/\"}");
	tu_write_script(script, "#!/bin/sh\necho '{\"ok\":false,\"detail\":\"d\",\"api_root\":null}'\n");
	o = call("POST", "/api/threat-feeds/tc/test_connection/", "{}", NULL);
	assert_string_equal(o->body, "{\"ok\":false,\"detail\":\"d\",\"api_root\":null}");
	tu_write_script(script, "#!/bin/sh\necho '{\"ok\":false,\"detail\":\"d\",\"api_root\":7}'\n");
	o = call("POST", "/api/threat-feeds/tc/test_connection/", "{}", NULL);
	assert_string_equal(o->body, "{\"ok\":false,\"detail\":\"d\"}");
	/* a CLI without the command */
	tu_write_script(script, "#!/bin/sh\necho usage >&2\nexit 2\n");
	o = call("POST", "/api/threat-feeds/tc/test_connection/", NULL, NULL);
	assert_int_equal(o->status, 501);
	assert_string_equal(code_of(o), "not_implemented");
	o = call("POST", "/api/threat-feeds/nosuch/test_connection/", NULL, NULL);
	assert_int_equal(o->status, 404);
	memcpy(app.cfg.worker, saved, sizeof saved);
	o = call("DELETE", "/api/threat-feeds/tc/", NULL, NULL);
	assert_int_equal(o->status, 204);
}

static void test_pipe_auth(void **state)
{
	out *o;
	char *good[] = {"HTTP_AUTHORIZATION=Bearer t0ken", NULL};
	char *bad[] = {"HTTP_AUTHORIZATION=Bearer nope", NULL};
	char *user[] = {"REMOTE_USER=carol", NULL};
	(void)state;

	snprintf(app.cfg.api_token, sizeof app.cfg.api_token, "t0ken");
	o = call("GET", "/api/health", NULL, NULL);
	assert_int_equal(o->status, 401);
	assert_string_equal(code_of(o), "unauthorized");
	assert_non_null(header(o, "WWW-Authenticate"));
	o = call("GET", "/api/nothing-here", NULL, bad);
	assert_int_equal(o->status, 401);   /* routes are not revealed before auth */
	assert_null(strstr(o->body, "t0ken"));
	o = call("GET", "/api/health", NULL, good);
	assert_int_equal(o->status, 200);
	assert_string_equal(tf_json_str(o->json, "auth"), "token");
	o = call("GET", "/api/health", NULL, user);
	assert_int_equal(o->status, 401);
	app.cfg.trust_remote_user = 1;
	o = call("GET", "/api/health", NULL, user);
	assert_int_equal(o->status, 200);
	app.cfg.trust_remote_user = 0;
	app.cfg.api_token[0] = '\0';
}

static void test_pipe_csrf(void **state)
{
	out *o;
	char *foreign[] = {"HTTP_ORIGIN=http://evil.example", NULL};
	char *same[] = {"HTTP_ORIGIN=http://127.0.0.1:8080", NULL};
	char *xsite[] = {"HTTP_SEC_FETCH_SITE=cross-site", NULL};
	(void)state;

	o = call("POST", "/api/threat-feeds/", feed_body("csrf"), foreign);
	assert_int_equal(o->status, 403);
	assert_string_equal(code_of(o), "csrf");
	o = call("POST", "/api/threat-feeds/", feed_body("csrf"), xsite);
	assert_int_equal(o->status, 403);
	o = call("GET", "/api/threat-feeds/", NULL, foreign);
	assert_int_equal(o->status, 200);
	o = call("POST", "/api/threat-feeds/", feed_body("csrf"), same);
	assert_int_equal(o->status, 201);
	o = call("DELETE", "/api/threat-feeds/csrf/", NULL, foreign);
	assert_int_equal(o->status, 403);
	o = call("DELETE", "/api/threat-feeds/csrf/", NULL, same);
	assert_int_equal(o->status, 204);
}

static void test_pipe_store_unavailable(void **state)
{
	tf_app broken;
	char *env[] = {"REQUEST_METHOD=GET", "REQUEST_URI=/api/health", NULL};
	static out o;
	in src = {.data = "", .len = 0};
	(void)state;

	/* a store path under a regular file can never open */
	setenv("THREATFEED_DB", "/dev/null/db", 1);
	tf_app_init(&broken, "test");
	memset(&o, 0, sizeof o);
	tf_app_handle(&broken, env, read_in, &src, write_out, &o);
	assert_non_null(strstr(o.raw, "Status: 503 "));
	assert_non_null(strstr(o.raw, "\"code\":\"store_unavailable\""));
	assert_null(strstr(o.raw, "/dev/null"));
	tf_app_close(&broken);
}

int main(void)
{
	const struct CMUnitTest pipeline[] = {
		cmocka_unit_test(test_pipe_health),
		cmocka_unit_test(test_pipe_errors),
		cmocka_unit_test(test_pipe_feed_crud),
		cmocka_unit_test(test_pipe_consume_cancel),
		cmocka_unit_test(test_pipe_spawn_failure),
		cmocka_unit_test(test_pipe_test_connection),
		cmocka_unit_test(test_pipe_auth),
		cmocka_unit_test(test_pipe_csrf),
		cmocka_unit_test(test_pipe_store_unavailable),
	};
	return cmocka_run_group_tests_name("pipeline", pipeline, setup, teardown) ? 1 : 0;
}
