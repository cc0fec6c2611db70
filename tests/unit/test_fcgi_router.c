/* The route table and the whole request pipeline of the FastCGI handler:
 * every route matched (with and without the trailing slash), 405 + Allow,
 * invalid ids → 404, query validators, then tf_app_handle() end to end on a
 * temporary store, reading the CGI output the way a web server would. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "app.h"
#include "err.h"
#include "json.h"
#include "request.h"
#include "router.h"
#include "util.h"

#define FEED "demo-feed"
#define UUID "3f2b9c1e-8a4d-4e2f-9b1a-0c5d6e7f8a9b"

/* ---- router ------------------------------------------------------------- */

static const tf_route *route(const char *method, const char *uri, tf_req *r, tf_resp *resp)
{
	static char m[32], u[512];
	static char *env[3];

	snprintf(m, sizeof m, "REQUEST_METHOD=%s", method);
	snprintf(u, sizeof u, "REQUEST_URI=%s", uri);
	env[0] = m;
	env[1] = u;
	env[2] = NULL;
	tf_req_init(r, env);
	tf_resp_init(resp);
	assert_int_equal(tf_req_parse(r, resp), 0);
	return tf_router_match(r, resp);
}

static void expect_route(const char *method, const char *uri, tf_handler h)
{
	char slash[512];
	tf_req r;
	tf_resp resp;
	const tf_route *rt = route(method, uri, &r, &resp);

	if (!rt)
		fail_msg("%s %s did not route: %s", method, uri, resp.body);
	assert_ptr_equal(rt->handler, h);
	tf_resp_free(&resp);
	/* trailing slash optional (docs/SPEC.md §2) */
	snprintf(slash, sizeof slash, "%s/", uri);
	rt = route(method, slash, &r, &resp);
	assert_non_null(rt);
	assert_ptr_equal(rt->handler, h);
	tf_resp_free(&resp);
}

static void test_every_route(void **state)
{
	tf_req r;
	tf_resp resp;
	(void)state;

	expect_route("GET", "/api/health", tf_h_health);
	expect_route("HEAD", "/api/health", tf_h_health);
	expect_route("GET", "/api/metrics", tf_h_metrics);
	expect_route("HEAD", "/api/metrics", tf_h_metrics);
	expect_route("GET", "/api/threat-feeds", tf_h_feed_list);
	expect_route("POST", "/api/threat-feeds", tf_h_feed_create);
	expect_route("GET", "/api/threat-feeds/" FEED, tf_h_feed_read);
	expect_route("PATCH", "/api/threat-feeds/" FEED, tf_h_feed_patch);
	expect_route("DELETE", "/api/threat-feeds/" FEED, tf_h_feed_delete);
	expect_route("POST", "/api/threat-feeds/" FEED "/consume", tf_h_feed_consume);
	expect_route("POST", "/api/threat-feeds/" FEED "/cancel_consumption", tf_h_feed_cancel);
	expect_route("GET", "/api/threat-feeds/" FEED "/indicators", tf_h_feed_indicators);
	expect_route("POST", "/api/threat-feeds/" FEED "/test_connection", tf_h_feed_test);
	expect_route("GET", "/api/threat-feeds/task-status/" UUID, tf_h_task_status);
	expect_route("POST", "/api/threat-feeds/cancel-task/" UUID, tf_h_task_cancel);
	expect_route("GET", "/api/threat-feeds/tasks", tf_h_task_list);
	expect_route("DELETE", "/api/threat-feeds/tasks", tf_h_task_purge);
	/* any mount prefix */
	expect_route("GET", "/some/mount/api/threat-feeds/task-status/" UUID, tf_h_task_status);

	/* path parameters reach the handler validated */
	assert_non_null(route("POST", "/api/threat-feeds/" FEED "/consume/", &r, &resp));
	assert_string_equal(r.feed_id, FEED);
	assert_null(r.task_id);
	assert_non_null(route("GET", "/api/threat-feeds/task-status/" UUID "/", &r, &resp));
	assert_string_equal(r.task_id, UUID);
	assert_null(r.feed_id);
}

static void test_table_is_sane(void **state)
{
	size_t n;
	const tf_route *t = tf_router_table(&n);
	(void)state;

	assert_true(n >= 14);
	for (size_t i = 0; i < n; i++) {
		assert_non_null(t[i].handler);
		assert_non_null(t[i].name);
		assert_int_equal(t[i].pattern[0], '/');
		assert_true(t[i].methods != 0);
		/* no two routes for the same pattern and method */
		for (size_t j = i + 1; j < n; j++)
			assert_false(!strcmp(t[i].pattern, t[j].pattern) && (t[i].methods & t[j].methods));
	}
}

static void expect_status(const char *method, const char *uri, int status, const char *allow)
{
	tf_req r;
	tf_resp resp;

	if (route(method, uri, &r, &resp))
		fail_msg("%s %s routed, expected %d", method, uri, status);
	assert_int_equal(resp.status, status);
	if (allow)
		assert_string_equal(resp.allow, allow);
	else
		assert_string_equal(resp.allow, "");
	tf_resp_free(&resp);
}

static void test_wrong_method(void **state)
{
	(void)state;
	expect_status("POST", "/api/health", 405, "GET, HEAD");
	expect_status("POST", "/api/metrics", 405, "GET, HEAD");
	expect_status("DELETE", "/api/threat-feeds/", 405, "GET, HEAD, POST");
	expect_status("PUT", "/api/threat-feeds/" FEED, 405, "GET, HEAD, PATCH, DELETE");
	expect_status("GET", "/api/threat-feeds/" FEED "/consume", 405, "POST");
	expect_status("GET", "/api/threat-feeds/" FEED "/cancel_consumption/", 405, "POST");
	expect_status("POST", "/api/threat-feeds/" FEED "/indicators", 405, "GET, HEAD");
	expect_status("GET", "/api/threat-feeds/" FEED "/test_connection", 405, "POST");
	expect_status("DELETE", "/api/threat-feeds/task-status/" UUID, 405, "GET, HEAD");
	expect_status("GET", "/api/threat-feeds/cancel-task/" UUID, 405, "POST");
	expect_status("POST", "/api/threat-feeds/tasks/", 405, "GET, HEAD, DELETE");
	/* "tasks" is a reserved id: PATCH is not the feed route's */
	expect_status("PATCH", "/api/threat-feeds/tasks", 405, "GET, HEAD, DELETE");
	expect_status("OPTIONS", "/api/health", 405, "GET, HEAD");
	expect_status("BREW", "/api/health", 405, "GET, HEAD");
}

static void test_unknown_and_invalid_ids(void **state)
{
	static const char *const paths[] = {
		"/api",
		"/api/",
		"/api/nothing",
		"/api/health/extra",
		"/api/threat-feeds/" FEED "/unknown",
		"/api/threat-feeds/" FEED "/consume/extra",
		"/api/threat-feeds/Bad-Upper",
		"/api/threat-feeds/-leading-dash",
		"/api/threat-feeds/has.dot/consume",
		"/api/threat-feeds/a%2Fb",
		"/api/threat-feeds/task-status",
		"/api/threat-feeds/task-status/not-a-uuid",
		"/api/threat-feeds/task-status/" "3F2B9C1E-8A4D-4E2F-9B1A-0C5D6E7F8A9B",
		"/api/threat-feeds/task-status/" UUID "0",
		"/api/threat-feeds/cancel-task/" "3f2b9c1e8a4d4e2f9b1a0c5d6e7f8a9b",
		"/api/threat-feeds/cancel-task",
		"/api/threat-feeds/" "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", /* 65 */
		"/api/a/b/c/d/e/f/g/h/i",
		"/index.html",
		"/apis/health",
	};
	(void)state;

	for (size_t i = 0; i < sizeof paths / sizeof *paths; i++) {
		expect_status("GET", paths[i], 404, NULL);
		expect_status("POST", paths[i], 404, NULL);
	}
	/* 64 characters is still a valid id */
	expect_route("GET", "/api/threat-feeds/"
	             "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", tf_h_feed_read);
}

static int query_check(const char *uri, tf_resp *resp)
{
	tf_req r;
	const tf_route *rt = route("GET", uri, &r, resp);
	if (!rt)
		fail_msg("%s did not route", uri);
	return tf_router_check_query(rt, &r, resp);
}

static void test_query_validators(void **state)
{
	static const char *const ok[] = {
		"/api/threat-feeds/tasks/?active=1&feed_id=" FEED "&limit=1000",
		"/api/threat-feeds/tasks/?active=0&limit=1",
		"/api/threat-feeds/tasks/?active=true",
		"/api/threat-feeds/tasks/?active=&feed_id=&limit=",
		"/api/threat-feeds/tasks/?unknown=whatever",
		"/api/threat-feeds/" FEED "/indicators?limit=50&cursor=00ab7f",
	};
	static const char *const bad[] = {
		"/api/threat-feeds/tasks/?active=yes",
		"/api/threat-feeds/tasks/?active=2",
		"/api/threat-feeds/tasks/?limit=0",
		"/api/threat-feeds/tasks/?limit=1001",
		"/api/threat-feeds/tasks/?limit=-5",
		"/api/threat-feeds/tasks/?limit=10abc",
		"/api/threat-feeds/tasks/?limit=%2B5",
		"/api/threat-feeds/tasks/?feed_id=BAD",
		"/api/threat-feeds/tasks/?feed_id=tasks",
		"/api/threat-feeds/" FEED "/indicators?limit=99999",
		"/api/threat-feeds/" FEED "/indicators?cursor=a%20b",
	};
	tf_resp resp;
	(void)state;

	for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
		if (query_check(ok[i], &resp))
			fail_msg("%s refused: %s", ok[i], resp.body);
		tf_resp_free(&resp);
	}
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		if (!query_check(bad[i], &resp))
			fail_msg("%s accepted", bad[i]);
		assert_int_equal(resp.status, 400);
		assert_non_null(strstr(resp.body, "\"code\":\"invalid_parameter\""));
		tf_resp_free(&resp);
	}
}

/* The TAXII 2.1 server's routes (fcgi/h_taxii.c): /taxii2/ is a root like
 * /api/ (any mount prefix), {coll} is a feed id or the collection of every
 * feed, {obj} a STIX id; limit is capped, never refused when it is a
 * positive number. */
#define OBJ "indicator--" UUID
static void test_taxii_routes(void **state)
{
	static const char *const bad_ids[] = {
		"indicator", "indicator--", "--" UUID, "Indicator--" UUID, "indicator--" UUID "x",
		"indi_cator--" UUID, "indicator--3f2b9c1e-8a4d-4e2f-9b1a_0c5d6e7f8a9b",
		"indicator-" UUID,
	};
	const char *coll = "/taxii2/root/collections/" TF_TAXII_ALL_COLLECTION;
	char uri[512];
	int64_t n;
	tf_req r;
	tf_resp resp;
	(void)state;

	expect_route("GET", "/taxii2", tf_h_taxii_discovery);
	expect_route("HEAD", "/taxii2", tf_h_taxii_discovery);
	expect_route("GET", "/mount/taxii2/root", tf_h_taxii_root);
	expect_route("GET", "/taxii2/root/collections", tf_h_taxii_collections);
	expect_route("GET", "/taxii2/root/collections/" FEED, tf_h_taxii_collection);
	expect_route("GET", "/taxii2/root/collections/" FEED "/objects", tf_h_taxii_objects);
	expect_route("GET", "/taxii2/root/collections/" FEED "/manifest", tf_h_taxii_manifest);
	expect_route("GET", "/taxii2/root/collections/" FEED "/objects/" OBJ, tf_h_taxii_object);
	expect_route("GET", "/taxii2/root/collections/" FEED "/objects/" OBJ "/versions",
	             tf_h_taxii_versions);
	snprintf(uri, sizeof uri, "%s/objects/x-custom-thing--%s", coll, UUID);
	expect_route("GET", uri, tf_h_taxii_object);
	assert_non_null(route("GET", uri, &r, &resp));
	assert_string_equal(r.feed_id, TF_TAXII_ALL_COLLECTION);
	assert_true(r.taxii);
	assert_int_equal(strcmp(r.obj_id, "x-custom-thing--" UUID), 0);
	/* any UUID version, either case, as the consumer stores them */
	assert_true(tf_taxii_valid_id("indicator--3F2B9C1E-8A4D-4E2F-9B1A-0C5D6E7F8A9B"));
	assert_true(tf_taxii_valid_id("x-my-type--00000000-0000-0000-0000-000000000000"));
	/* the collection of every feed can never be a feed's id */
	assert_false(tf_valid_feed_id(TF_TAXII_ALL_COLLECTION));
	for (size_t i = 0; i < sizeof bad_ids / sizeof *bad_ids; i++) {
		assert_false(tf_taxii_valid_id(bad_ids[i]));
		snprintf(uri, sizeof uri, "/taxii2/root/collections/" FEED "/objects/%s", bad_ids[i]);
		assert_null(route("GET", uri, &r, &resp));
		assert_int_equal(resp.status, 404);
		tf_resp_free(&resp);
	}
	/* read-only: 405 with Allow */
	assert_null(route("POST", "/taxii2/root/collections/" FEED "/objects/", &r, &resp));
	assert_int_equal(resp.status, 405);
	assert_string_equal(resp.allow, "GET, HEAD");
	tf_resp_free(&resp);
	/* /api/ routes are not TAXII routes, even under a /taxii2 mount */
	assert_non_null(route("GET", "/api/health", &r, &resp));
	assert_false(r.taxii);
	/* limit: capped above the maximum, refused when not a positive number */
	{
		static const struct { const char *v; int64_t want; } lim[] = {
			{"1", 1}, {"1000", 1000}, {"1001", TF_MAX_TAXII_LIMIT},
			{"99999999999999999999999", TF_MAX_TAXII_LIMIT}, {"0", -1}, {"-1", -1},
			{"x", -1}, {"%2B2", -1}, {"1.0", -1},
		};
		for (size_t i = 0; i < sizeof lim / sizeof *lim; i++) {
			const tf_qparam *q;
			snprintf(uri, sizeof uri, "/taxii2/root/collections/" FEED "/objects/?limit=%s",
			         lim[i].v);
			n = query_check(uri, &resp);
			if (lim[i].want < 0) {
				assert_int_equal(n, -1);
				assert_int_equal(resp.status, 400);
			} else {
				route("GET", uri, &r, &resp);
				assert_int_equal(tf_router_check_query(tf_router_match(&r, &resp), &r, &resp), 0);
				q = tf_req_query(&r, "limit");
				assert_non_null(q);
				assert_int_equal(q->num, lim[i].want);
			}
			tf_resp_free(&resp);
		}
	}
}

static void test_allow_text(void **state)
{
	char buf[64];
	(void)state;
	tf_router_allow(TF_M_GET | TF_M_HEAD | TF_M_DELETE, buf, sizeof buf);
	assert_string_equal(buf, "GET, HEAD, DELETE");
	tf_router_allow(0, buf, sizeof buf);
	assert_string_equal(buf, "");
	tf_router_allow(TF_M_POST | TF_M_PATCH, buf, 6);   /* truncation keeps a valid prefix */
	assert_string_equal(buf, "POST");
}

/* ---- the pipeline, end to end on a temporary store ----------------------- */

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
	tf_app_init(&app, "test_fcgi_router");
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
	FILE *f;
	out *o;
	(void)state;

	memcpy(saved, app.cfg.worker, sizeof saved);
	o = call("POST", "/api/threat-feeds/", feed_body("tc"), NULL);
	assert_int_equal(o->status, 201);
	/* a CLI that answers */
	snprintf(script, sizeof script, "%s/cli.sh", tmpdir);
	assert_non_null(f = fopen(script, "w"));
	fprintf(f, "#!/bin/sh\n[ \"$1\" = test-connection ] || exit 2\n"
	           "echo 'noise'\necho '{\"ok\":false,\"detail\":\"HTTP 401 for '$2'\",\"x\":1}'\n");
	fclose(f);
	chmod(script, 0755);
	snprintf(app.cfg.worker, sizeof app.cfg.worker, "%s", script);
	o = call("POST", "/api/threat-feeds/tc/test_connection/", "{}", NULL);
	assert_int_equal(o->status, 200);
	assert_string_equal(o->body, "{\"ok\":false,\"detail\":\"HTTP 401 for tc\"}");
	/* a taxii21 feed's api_root, string or null, is relayed too; any other
	 * type of it is not an api_root */
	assert_non_null(f = fopen(script, "w"));
	fprintf(f, "#!/bin/sh\necho '{\"ok\":true,\"detail\":\"d\",\"api_root\":\"http://u/a/\"}'\n");
	fclose(f);
	o = call("POST", "/api/threat-feeds/tc/test_connection/", "{}", NULL);
	assert_int_equal(o->status, 200);
	assert_string_equal(o->body, "{\"ok\":true,\"detail\":\"d\",\"api_root\":\"http://u/a/\"}");
	assert_non_null(f = fopen(script, "w"));
	fprintf(f, "#!/bin/sh\necho '{\"ok\":false,\"detail\":\"d\",\"api_root\":null}'\n");
	fclose(f);
	o = call("POST", "/api/threat-feeds/tc/test_connection/", "{}", NULL);
	assert_string_equal(o->body, "{\"ok\":false,\"detail\":\"d\",\"api_root\":null}");
	assert_non_null(f = fopen(script, "w"));
	fprintf(f, "#!/bin/sh\necho '{\"ok\":false,\"detail\":\"d\",\"api_root\":7}'\n");
	fclose(f);
	o = call("POST", "/api/threat-feeds/tc/test_connection/", "{}", NULL);
	assert_string_equal(o->body, "{\"ok\":false,\"detail\":\"d\"}");
	/* a CLI without the command */
	assert_non_null(f = fopen(script, "w"));
	fprintf(f, "#!/bin/sh\necho usage >&2\nexit 2\n");
	fclose(f);
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
	const struct CMUnitTest router[] = {
		cmocka_unit_test(test_every_route),
		cmocka_unit_test(test_table_is_sane),
		cmocka_unit_test(test_wrong_method),
		cmocka_unit_test(test_unknown_and_invalid_ids),
		cmocka_unit_test(test_query_validators),
		cmocka_unit_test(test_taxii_routes),
		cmocka_unit_test(test_allow_text),
	};
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
	int failed = cmocka_run_group_tests_name("router", router, NULL, NULL);
	failed += cmocka_run_group_tests_name("pipeline", pipeline, setup, teardown);
	return failed ? 1 : 0;
}
