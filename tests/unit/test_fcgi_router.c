/* fcgi/router.c, the route table of the FastCGI handler: every route matched
 * (with and without the trailing slash), 405 + Allow, invalid ids → 404,
 * query validators. The whole request pipeline is test_app.c. */
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
	return cmocka_run_group_tests_name("router", router, NULL, NULL) ? 1 : 0;
}
