/* Request parsing, auth decisions, error mapping and response writing of the
 * FastCGI handler, driven from plain arrays of CGI parameters. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "auth.h"
#include "err.h"
#include "request.h"
#include "respond.h"

/* ---- helpers ------------------------------------------------------------ */

typedef struct body_src {
	const char *data;
	size_t len, pos;
	size_t chunk;      /* bytes per read, 0 = all */
} body_src;

static long read_src(void *ctx, char *buf, size_t len)
{
	body_src *s = ctx;
	size_t n = s->len - s->pos;
	if (n > len)
		n = len;
	if (s->chunk && n > s->chunk)
		n = s->chunk;
	memcpy(buf, s->data + s->pos, n);
	s->pos += n;
	return (long)n;
}

typedef struct sink {
	char buf[8192];
	size_t len;
} sink;

static int write_sink(void *ctx, const char *buf, size_t len)
{
	sink *s = ctx;
	if (s->len + len >= sizeof s->buf)
		return -1;
	memcpy(s->buf + s->len, buf, len);
	s->len += len;
	s->buf[s->len] = '\0';
	return 0;
}

/* Parses method+uri; returns the parse result, resp left for inspection. */
static int parse(tf_req *r, tf_resp *resp, char **env)
{
	tf_req_init(r, env);
	tf_resp_init(resp);
	return tf_req_parse(r, resp);
}

static int parse_uri(const char *uri, tf_req *r, tf_resp *resp)
{
	static char m[] = "REQUEST_METHOD=GET";
	static char u[4 * TF_MAX_PATH + 64];
	static char *env[3];

	snprintf(u, sizeof u, "REQUEST_URI=%s", uri);
	env[0] = m;
	env[1] = u;
	env[2] = NULL;
	return parse(r, resp, env);
}

static void assert_error(const tf_resp *resp, int status, const char *code)
{
	char want[64];
	assert_int_equal(resp->status, status);
	assert_non_null(resp->body);
	snprintf(want, sizeof want, "\"code\":\"%s\"", code);
	assert_non_null(strstr(resp->body, want));
	assert_non_null(strstr(resp->body, "\"error\":\""));
}

/* ---- percent-decoding ---------------------------------------------------- */

static void test_pct_decode(void **state)
{
	char out[64];
	size_t n;
	(void)state;

	assert_int_equal(tf_pct_decode("a%20b", 5, out, sizeof out, 0, &n), TF_OK);
	assert_string_equal(out, "a b");
	assert_int_equal(n, 3);
	assert_int_equal(tf_pct_decode("a+b", 3, out, sizeof out, 0, NULL), TF_OK);
	assert_string_equal(out, "a+b");
	assert_int_equal(tf_pct_decode("a+b", 3, out, sizeof out, 1, NULL), TF_OK);
	assert_string_equal(out, "a b");
	assert_int_equal(tf_pct_decode("%2fx%2F", 7, out, sizeof out, 0, NULL), TF_OK);
	assert_string_equal(out, "/x/");
	/* once only */
	assert_int_equal(tf_pct_decode("%252e", 5, out, sizeof out, 0, NULL), TF_OK);
	assert_string_equal(out, "%2e");
	/* bad escapes, encoded NUL */
	assert_int_equal(tf_pct_decode("%", 1, out, sizeof out, 0, NULL), TF_EINVAL);
	assert_int_equal(tf_pct_decode("%4", 2, out, sizeof out, 0, NULL), TF_EINVAL);
	assert_int_equal(tf_pct_decode("%zz", 3, out, sizeof out, 0, NULL), TF_EINVAL);
	assert_int_equal(tf_pct_decode("a%00b", 5, out, sizeof out, 0, NULL), TF_EINVAL);
	/* bounded output */
	assert_int_equal(tf_pct_decode("abcd", 4, out, 4, 0, NULL), TF_ELIMIT);
	assert_int_equal(tf_pct_decode("abc", 3, out, 4, 0, NULL), TF_OK);
	/* in place */
	{
		char s[] = "x%41%42+y";
		assert_int_equal(tf_pct_decode(s, strlen(s), s, sizeof s, 1, NULL), TF_OK);
		assert_string_equal(s, "xAB y");
	}
}

/* ---- paths --------------------------------------------------------------- */

static void test_path_basic(void **state)
{
	tf_req r;
	tf_resp resp;
	(void)state;

	assert_int_equal(parse_uri("/api/threat-feeds/demo/consume/", &r, &resp), 0);
	assert_int_equal(r.method, TF_M_GET);
	assert_string_equal(r.prefix, "");
	assert_int_equal(r.nseg, 4);
	assert_string_equal(r.seg[0], "api");
	assert_string_equal(r.seg[1], "threat-feeds");
	assert_string_equal(r.seg[2], "demo");
	assert_string_equal(r.seg[3], "consume");
	tf_req_free(&r);
	tf_resp_free(&resp);

	/* no trailing slash: same segments */
	assert_int_equal(parse_uri("/api/threat-feeds/demo/consume", &r, &resp), 0);
	assert_int_equal(r.nseg, 4);
	tf_resp_free(&resp);
}

static void test_path_prefix(void **state)
{
	tf_req r;
	tf_resp resp;
	(void)state;

	assert_int_equal(parse_uri("/tools/threatfeed/api/health?x=1", &r, &resp), 0);
	assert_string_equal(r.prefix, "/tools/threatfeed");
	assert_int_equal(r.nseg, 2);
	assert_string_equal(r.seg[1], "health");
	tf_resp_free(&resp);

	/* the first "api" segment wins: a feed named "api" stays a feed */
	assert_int_equal(parse_uri("/api/threat-feeds/api/", &r, &resp), 0);
	assert_string_equal(r.prefix, "");
	assert_int_equal(r.nseg, 3);
	assert_string_equal(r.seg[2], "api");
	tf_resp_free(&resp);

	/* not under /api at all: parses, routes nowhere */
	assert_int_equal(parse_uri("/index.html", &r, &resp), 0);
	assert_int_equal(r.nseg, 0);
	tf_resp_free(&resp);

	/* encoded segments are decoded once */
	assert_int_equal(parse_uri("/%61pi/threat-feeds/de%6do", &r, &resp), 0);
	assert_int_equal(r.nseg, 3);
	assert_string_equal(r.seg[0], "api");
	assert_string_equal(r.seg[2], "demo");
	tf_resp_free(&resp);

	/* %2F stays inside its segment */
	assert_int_equal(parse_uri("/api/threat-feeds/a%2Fb", &r, &resp), 0);
	assert_int_equal(r.nseg, 3);
	assert_string_equal(r.seg[2], "a/b");
	tf_resp_free(&resp);
}

static void test_path_rejects(void **state)
{
	static const char *const bad[] = {
		"/api/threat-feeds/../health",  "/api/./health",        "/api/%2e%2e/health",
		"/api/threat-feeds/%2E",        "/api/health%00",       "/api/h%zzealth",
		"/api/health%4",                "/api//health",         "api/health",
		"/api/he alth",                 "/api/\x01health",      "//api/health",
	};
	tf_req r;
	tf_resp resp;
	(void)state;

	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		assert_int_equal(parse_uri(bad[i], &r, &resp), -1);
		assert_error(&resp, 400, "invalid_path");
		tf_resp_free(&resp);
	}
	/* "%252e%252e" is a literal segment, not a dot segment */
	assert_int_equal(parse_uri("/api/%252e%252e", &r, &resp), 0);
	assert_string_equal(r.seg[1], "%2e%2e");
	tf_resp_free(&resp);
}

static void test_path_limits(void **state)
{
	char uri[4 * TF_MAX_PATH];
	tf_req r;
	tf_resp resp;
	size_t n;
	(void)state;

	/* exactly TF_MAX_PATH bytes after the prefix pass */
	n = (size_t)snprintf(uri, sizeof uri, "/api/");
	memset(uri + n, 'a', TF_MAX_PATH - n);
	uri[TF_MAX_PATH] = '\0';
	assert_int_equal(parse_uri(uri, &r, &resp), 0);
	tf_resp_free(&resp);
	/* one more does not */
	uri[TF_MAX_PATH] = 'a';
	uri[TF_MAX_PATH + 1] = '\0';
	assert_int_equal(parse_uri(uri, &r, &resp), -1);
	assert_error(&resp, 400, "invalid_path");
	tf_resp_free(&resp);
	/* encoded bytes count decoded, but the raw form is bounded too */
	n = 0;
	uri[n++] = '/';
	while (n + 3 < sizeof uri - 1) {
		memcpy(uri + n, "%61", 3);
		n += 3;
	}
	uri[n] = '\0';
	assert_int_equal(parse_uri(uri, &r, &resp), -1);
	assert_error(&resp, 400, "invalid_path");
	tf_resp_free(&resp);
	/* too many segments: parses, marked too deep (routes to 404) */
	assert_int_equal(parse_uri("/api/a/b/c/d/e/f/g/h/i/j", &r, &resp), 0);
	assert_true(r.too_deep);
	tf_resp_free(&resp);
}

static void test_path_without_request_uri(void **state)
{
	char *env[] = {"REQUEST_METHOD=POST", "SCRIPT_NAME=/cgi/api", "PATH_INFO=/threat-feeds/x",
	               "QUERY_STRING=a=1", NULL};
	tf_req r;
	tf_resp resp;
	(void)state;

	assert_int_equal(parse(&r, &resp, env), 0);
	assert_int_equal(r.method, TF_M_POST);
	assert_string_equal(r.prefix, "/cgi");
	assert_int_equal(r.nseg, 3);
	assert_string_equal(tf_req_query(&r, "a")->value, "1");
	tf_resp_free(&resp);
}

static void test_methods(void **state)
{
	(void)state;
	assert_int_equal(tf_method_bit("GET"), TF_M_GET);
	assert_int_equal(tf_method_bit("PATCH"), TF_M_PATCH);
	assert_int_equal(tf_method_bit("get"), TF_M_OTHER);
	assert_int_equal(tf_method_bit("BREW"), TF_M_OTHER);
}

/* ---- query strings ------------------------------------------------------- */

static int parse_query(const char *qs, tf_req *r, tf_resp *resp)
{
	static char q[4 * TF_MAX_QUERY];
	static char *env[4];

	snprintf(q, sizeof q, "QUERY_STRING=%s", qs);
	env[0] = "REQUEST_METHOD=GET";
	env[1] = "REQUEST_URI=/api/threat-feeds/tasks/";
	env[2] = q;
	env[3] = NULL;
	return parse(r, resp, env);
}

static void test_query_parse(void **state)
{
	tf_req r;
	tf_resp resp;
	(void)state;

	assert_int_equal(parse_query("active=1&feed_id=&limit=20&q=a+b%21&flag", &r, &resp), 0);
	assert_int_equal(r.nquery, 5);
	assert_string_equal(tf_req_query(&r, "active")->value, "1");
	assert_null(tf_req_query(&r, "feed_id"));     /* empty = absent (docs/SPEC.md §2) */
	assert_string_equal(tf_req_query(&r, "q")->value, "a b!");
	assert_null(tf_req_query(&r, "flag"));
	assert_null(tf_req_query(&r, "missing"));
	tf_resp_free(&resp);

	assert_int_equal(parse_query("&&a=1&&", &r, &resp), 0);
	assert_int_equal(r.nquery, 1);
	tf_resp_free(&resp);

	assert_int_equal(parse_query("", &r, &resp), 0);
	assert_int_equal(r.nquery, 0);
	tf_resp_free(&resp);

	/* the query comes from REQUEST_URI when QUERY_STRING is absent */
	{
		char *env[] = {"REQUEST_METHOD=GET", "REQUEST_URI=/api/x?limit=5", NULL};
		assert_int_equal(parse(&r, &resp, env), 0);
		assert_string_equal(tf_req_query(&r, "limit")->value, "5");
		tf_resp_free(&resp);
	}
}

static void test_query_rejects(void **state)
{
	static const char *const bad[] = {"a=1&a=2", "a=%zz", "a=%00", "=1", "%61=1&a=2", "a=%"};
	char many[512] = "", big[TF_MAX_QUERY + 8];
	tf_req r;
	tf_resp resp;
	(void)state;

	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		assert_int_equal(parse_query(bad[i], &r, &resp), -1);
		assert_error(&resp, 400, "invalid_query");
		tf_resp_free(&resp);
	}
	for (int i = 0; i <= TF_MAX_QUERY_PARAMS; i++) {
		char one[16];
		snprintf(one, sizeof one, "%sp%d=1", i ? "&" : "", i);
		strcat(many, one);
	}
	assert_int_equal(parse_query(many, &r, &resp), -1);
	assert_error(&resp, 400, "invalid_query");
	tf_resp_free(&resp);

	memset(big, 'a', TF_MAX_QUERY + 1);
	big[TF_MAX_QUERY + 1] = '\0';
	assert_int_equal(parse_query(big, &r, &resp), -1);
	assert_error(&resp, 400, "invalid_query");
	tf_resp_free(&resp);
	big[TF_MAX_QUERY] = '\0';
	assert_int_equal(parse_query(big, &r, &resp), 0);
	tf_resp_free(&resp);
}

/* ---- bodies -------------------------------------------------------------- */

static int read_body(const char *cl, const char *ct, const char *data, size_t chunk, tf_req *r,
                     tf_resp *resp)
{
	static char clv[64], ctv[128];
	static char *env[5];
	static body_src src;
	size_t i = 0;

	env[i++] = "REQUEST_METHOD=POST";
	env[i++] = "REQUEST_URI=/api/threat-feeds/";
	if (cl) {
		snprintf(clv, sizeof clv, "CONTENT_LENGTH=%s", cl);
		env[i++] = clv;
	}
	if (ct) {
		snprintf(ctv, sizeof ctv, "CONTENT_TYPE=%s", ct);
		env[i++] = ctv;
	}
	env[i] = NULL;
	src.data = data ? data : "";
	src.len = strlen(src.data);
	src.pos = 0;
	src.chunk = chunk;
	if (parse(r, resp, env))
		return -2;
	return tf_req_read_body(r, read_src, &src, resp);
}

static void test_body_ok(void **state)
{
	tf_req r;
	tf_resp resp;
	char len[32];
	const char *body = "{\"name\":\"x\",\"n\":[1,2,3]}";
	(void)state;

	snprintf(len, sizeof len, "%zu", strlen(body));
	assert_int_equal(read_body(len, "application/json", body, 3, &r, &resp), 0);
	assert_non_null(r.json);
	assert_int_equal(r.body_len, strlen(body));
	tf_req_free(&r);
	assert_int_equal(read_body(len, "Application/JSON; charset=UTF-8", body, 0, &r, &resp), 0);
	tf_req_free(&r);
	/* empty body: {} whatever the type */
	assert_int_equal(read_body(NULL, NULL, NULL, 0, &r, &resp), 0);
	assert_true(json_object_is_type(r.json, json_type_object));
	assert_int_equal(json_object_object_length(r.json), 0);
	tf_req_free(&r);
	assert_int_equal(read_body("0", "text/plain", NULL, 0, &r, &resp), 0);
	tf_req_free(&r);
}

static void test_body_content_length(void **state)
{
	static const char *const malformed[] = {"abc", "-1", "+5", " 5", "5 ", "0x10", "1e3"};
	tf_req r;
	tf_resp resp;
	char len[32];
	(void)state;

	for (size_t i = 0; i < sizeof malformed / sizeof *malformed; i++) {
		assert_int_equal(read_body(malformed[i], "application/json", "{}", 0, &r, &resp), -1);
		assert_error(&resp, 400, "invalid_content_length");
		tf_req_free(&r);
		tf_resp_free(&resp);
	}
	/* over the limit: 413 before anything is read */
	snprintf(len, sizeof len, "%d", TF_MAX_BODY + 1);
	assert_int_equal(read_body(len, "application/json", "{}", 0, &r, &resp), -1);
	assert_error(&resp, 413, "payload_too_large");
	assert_null(r.body);
	tf_req_free(&r);
	tf_resp_free(&resp);
	assert_int_equal(read_body("99999999999999999999999", "application/json", "{}", 0, &r, &resp),
	                 -1);
	assert_error(&resp, 413, "payload_too_large");
	tf_req_free(&r);
	tf_resp_free(&resp);
	/* shorter than announced */
	assert_int_equal(read_body("10", "application/json", "{}", 0, &r, &resp), -1);
	assert_error(&resp, 400, "incomplete_body");
	tf_req_free(&r);
	tf_resp_free(&resp);
}

static void test_body_limit_exact(void **state)
{
	char *big = malloc(TF_MAX_BODY + 1), len[32];
	tf_req r;
	tf_resp resp;
	(void)state;

	/* {"a":"xxxx…"} of exactly TF_MAX_BODY bytes is accepted */
	memset(big, 'x', TF_MAX_BODY);
	memcpy(big, "{\"a\":\"", 6);
	memcpy(big + TF_MAX_BODY - 2, "\"}", 2);
	big[TF_MAX_BODY] = '\0';
	snprintf(len, sizeof len, "%d", TF_MAX_BODY);
	assert_int_equal(read_body(len, "application/json", big, 4096, &r, &resp), 0);
	tf_req_free(&r);
	free(big);
}

static void test_body_content_type(void **state)
{
	static const char *const bad[] = {
		NULL, "", "text/plain", "application/jsonx", "application/x-www-form-urlencoded",
		"multipart/form-data; boundary=x", "application/json; charset=latin1",
		"application/json; charset", "application/json garbage",
	};
	tf_req r;
	tf_resp resp;
	(void)state;

	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		assert_int_equal(read_body("2", bad[i], "{}", 0, &r, &resp), -1);
		assert_error(&resp, 415, "unsupported_media_type");
		tf_req_free(&r);
		tf_resp_free(&resp);
	}
	assert_true(tf_content_type_is_json("application/json"));
	assert_true(tf_content_type_is_json(" application/json ;charset=\"utf-8\""));
	assert_true(tf_content_type_is_json("application/json;"));
	assert_true(tf_content_type_is_json("application/json; foo=bar; charset=utf-8"));
}

static void test_body_json(void **state)
{
	/* ("{'a':1}" belongs here too, but json-c 0.16 accepts single quotes even
	 * in strict mode: reported to lib/json.c.) */
	static const char *const bad[] = {"{", "[1,2]", "\"s\"", "{\"a\":1} x",
	                                  "{\"a\":\"\xff\"}", "nul"};
	char deep[256] = "", len[32];
	tf_req r;
	tf_resp resp;
	(void)state;

	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		snprintf(len, sizeof len, "%zu", strlen(bad[i]));
		assert_int_equal(read_body(len, "application/json", bad[i], 0, &r, &resp), -1);
		assert_error(&resp, 400, "invalid_json");
		tf_req_free(&r);
		tf_resp_free(&resp);
	}
	/* nesting beyond TF_MAX_JSON_DEPTH */
	for (int i = 0; i < TF_MAX_JSON_DEPTH + 2; i++)
		strcat(deep, "[");
	for (int i = 0; i < TF_MAX_JSON_DEPTH + 2; i++)
		strcat(deep, "]");
	snprintf(len, sizeof len, "%zu", strlen(deep));
	assert_int_equal(read_body(len, "application/json", deep, 0, &r, &resp), -1);
	assert_error(&resp, 400, "invalid_json");
	tf_req_free(&r);
	tf_resp_free(&resp);
}

/* ---- auth ---------------------------------------------------------------- */

static tf_config cfg_with(const char *token, int trust)
{
	tf_config c;
	memset(&c, 0, sizeof c);
	snprintf(c.api_token, sizeof c.api_token, "%s", token);
	c.trust_remote_user = trust;
	return c;
}

static int auth(const tf_config *c, char **env, tf_req *r, tf_resp *resp)
{
	tf_req_init(r, env);
	tf_resp_init(resp);
	return tf_auth_check(c, r, resp);
}

static void test_auth_none(void **state)
{
	tf_config c = cfg_with("", 0);
	char *env[] = {"REQUEST_METHOD=GET", NULL};
	char *env_user[] = {"REMOTE_USER=alice", NULL};
	tf_req r;
	tf_resp resp;
	(void)state;

	assert_int_equal(auth(&c, env, &r, &resp), 0);
	assert_string_equal(r.auth, "none");
	assert_string_equal(r.requested_by, "anonymous");
	assert_string_equal(tf_auth_mode(&c), "none");
	assert_int_equal(auth(&c, env_user, &r, &resp), 0);
	assert_string_equal(r.requested_by, "alice");
}

static void test_auth_token(void **state)
{
	tf_config c = cfg_with("s3cret-token", 0);
	char *ok[] = {"HTTP_AUTHORIZATION=Bearer s3cret-token", NULL};
	char *ok_case[] = {"HTTP_AUTHORIZATION=bearer   s3cret-token ", NULL};
	char *wrong[] = {"HTTP_AUTHORIZATION=Bearer s3cret-tokem", NULL};
	char *prefix[] = {"HTTP_AUTHORIZATION=Bearer s3cret", NULL};
	char *longer[] = {"HTTP_AUTHORIZATION=Bearer s3cret-token2", NULL};
	char *basic[] = {"HTTP_AUTHORIZATION=Basic czNjcmV0LXRva2Vu", NULL};
	char *empty[] = {"HTTP_AUTHORIZATION=Bearer ", NULL};
	char *user[] = {"REMOTE_USER=alice", NULL};
	char *none[] = {NULL};
	char **refused[] = {wrong, prefix, longer, basic, empty, user, none};
	tf_req r;
	tf_resp resp;
	(void)state;

	assert_string_equal(tf_auth_mode(&c), "token");
	assert_int_equal(auth(&c, ok, &r, &resp), 0);
	assert_string_equal(r.auth, "token");
	assert_string_equal(r.requested_by, "api-token");
	assert_int_equal(auth(&c, ok_case, &r, &resp), 0);
	for (size_t i = 0; i < sizeof refused / sizeof *refused; i++) {
		assert_int_equal(auth(&c, refused[i], &r, &resp), -1);
		assert_error(&resp, 401, "unauthorized");
		assert_true(resp.www_authenticate);
		/* the token never appears in an answer */
		assert_null(strstr(resp.body, "s3cret"));
		tf_resp_free(&resp);
	}
}

static void test_auth_remote_user(void **state)
{
	tf_config c = cfg_with("tok", 1), only = cfg_with("", 1);
	char *user[] = {"REMOTE_USER=alice", NULL};
	char *empty_user[] = {"REMOTE_USER=", NULL};
	char *tok_user[] = {"HTTP_AUTHORIZATION=Bearer tok", "REMOTE_USER=bob", NULL};
	char *none[] = {NULL};
	tf_req r;
	tf_resp resp;
	(void)state;

	assert_int_equal(auth(&c, user, &r, &resp), 0);
	assert_string_equal(r.auth, "remote_user");
	assert_string_equal(r.requested_by, "alice");
	assert_int_equal(auth(&c, tok_user, &r, &resp), 0);
	assert_string_equal(r.auth, "token");
	assert_string_equal(r.requested_by, "bob");
	assert_int_equal(auth(&c, empty_user, &r, &resp), -1);
	tf_resp_free(&resp);
	/* trust_remote_user alone: web-server auth is required */
	assert_string_equal(tf_auth_mode(&only), "remote_user");
	assert_int_equal(auth(&only, user, &r, &resp), 0);
	assert_int_equal(auth(&only, none, &r, &resp), -1);
	assert_error(&resp, 401, "unauthorized");
	tf_resp_free(&resp);
}

/* The scrape token opens GET/HEAD /api/metrics (under any mount prefix) and
 * nothing else; the API token still opens the metrics too. */
static void test_auth_metrics_token(void **state)
{
	tf_config c = cfg_with("api-tok", 0);
	static const struct {
		const char *method, *uri, *authz;
		int ok;
		const char *who;
	} cases[] = {
		{"GET", "/api/metrics", "Bearer scrape-tok", 1, "metrics_token"},
		{"HEAD", "/api/metrics/", "Bearer scrape-tok", 1, "metrics_token"},
		{"GET", "/mount/api/metrics", "Bearer scrape-tok", 1, "metrics_token"},
		{"GET", "/api/metrics", "Bearer api-tok", 1, "token"},
		{"GET", "/api/metrics", "Bearer scrape-to", 0, NULL},
		{"GET", "/api/metrics", NULL, 0, NULL},
		{"POST", "/api/metrics", "Bearer scrape-tok", 0, NULL},
		{"GET", "/api/health", "Bearer scrape-tok", 0, NULL},
		{"GET", "/api/threat-feeds", "Bearer scrape-tok", 0, NULL},
		{"GET", "/api/metrics/x", "Bearer scrape-tok", 0, NULL},
		{"GET", "/api/threat-feeds/metrics", "Bearer scrape-tok", 0, NULL},
	};
	(void)state;

	snprintf(c.metrics_token, sizeof c.metrics_token, "%s", "scrape-tok");
	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
		char m[64], u[256], a[128];
		char *env[4] = {m, u, cases[i].authz ? a : NULL, NULL};
		tf_req r;
		tf_resp resp;
		int rc;

		snprintf(m, sizeof m, "REQUEST_METHOD=%s", cases[i].method);
		snprintf(u, sizeof u, "REQUEST_URI=%s", cases[i].uri);
		snprintf(a, sizeof a, "HTTP_AUTHORIZATION=%s", cases[i].authz ? cases[i].authz : "");
		assert_int_equal(parse(&r, &resp, env), 0);
		rc = tf_auth_check(&c, &r, &resp);
		if (rc != (cases[i].ok ? 0 : -1))
			fail_msg("%s %s (%s): %d", cases[i].method, cases[i].uri,
			         cases[i].authz ? cases[i].authz : "-", rc);
		if (cases[i].ok) {
			assert_string_equal(r.auth, cases[i].who);
		} else {
			assert_error(&resp, 401, "unauthorized");
			assert_null(strstr(resp.body, "scrape-tok"));
		}
		tf_resp_free(&resp);
		tf_req_free(&r);
	}
	/* Without api_token or trust_remote_user the API is open, metrics too. */
	c.api_token[0] = '\0';
	{
		char *env[] = {"REQUEST_METHOD=GET", "REQUEST_URI=/api/metrics", NULL};
		tf_req r;
		tf_resp resp;
		assert_int_equal(parse(&r, &resp, env), 0);
		assert_int_equal(tf_auth_check(&c, &r, &resp), 0);
		assert_string_equal(r.auth, "none");
		tf_resp_free(&resp);
		tf_req_free(&r);
	}
}

static void test_ct_equal(void **state)
{
	(void)state;
	assert_true(tf_auth_ct_equal("abc", "abc", 3));
	assert_false(tf_auth_ct_equal("abc", "abd", 3));
	assert_false(tf_auth_ct_equal("abc", "ab", 2));
	assert_false(tf_auth_ct_equal("abc", "abcd", 4));
	assert_false(tf_auth_ct_equal("", "", 0));    /* an empty secret never matches */
}

static void test_origin_matches(void **state)
{
	(void)state;
	assert_true(tf_auth_origin_matches("http://127.0.0.1:8080", "127.0.0.1:8080"));
	assert_true(tf_auth_origin_matches("https://Example.org", "example.org"));
	assert_true(tf_auth_origin_matches("https://example.org:443", "example.org"));
	assert_true(tf_auth_origin_matches("http://example.org", "example.org:80"));
	assert_true(tf_auth_origin_matches("http://[::1]:8080", "[::1]:8080"));
	assert_false(tf_auth_origin_matches("http://evil.example", "example.org"));
	assert_false(tf_auth_origin_matches("http://127.0.0.1:8081", "127.0.0.1:8080"));
	assert_false(tf_auth_origin_matches("http://127.0.0.1", "127.0.0.1:8080"));
	assert_false(tf_auth_origin_matches("https://example.org", "example.org:80"));
	assert_false(tf_auth_origin_matches("null", "example.org"));
	assert_false(tf_auth_origin_matches("http://example.org/", "example.org"));
	assert_false(tf_auth_origin_matches("http://example.org.evil", "example.org"));
	assert_false(tf_auth_origin_matches("http://user@example.org", "example.org"));
	assert_false(tf_auth_origin_matches("ftp://example.org", "example.org"));
	assert_false(tf_auth_origin_matches("http://example.org", NULL));
	assert_false(tf_auth_origin_matches("http://example.org:", "example.org"));
}

static int csrf(const char *method, char *extra1, char *extra2, tf_resp *resp)
{
	char m[32];
	char *env[5];
	size_t i = 0;
	tf_req r;

	snprintf(m, sizeof m, "REQUEST_METHOD=%s", method);
	env[i++] = m;
	env[i++] = "HTTP_HOST=127.0.0.1:8080";
	if (extra1)
		env[i++] = extra1;
	if (extra2)
		env[i++] = extra2;
	env[i] = NULL;
	tf_req_init(&r, env);
	r.method = tf_method_bit(method);
	tf_resp_init(resp);
	return tf_auth_csrf(&r, resp);
}

static void test_csrf(void **state)
{
	tf_resp resp;
	(void)state;

	assert_int_equal(csrf("POST", NULL, NULL, &resp), 0);
	assert_int_equal(csrf("POST", "HTTP_ORIGIN=http://127.0.0.1:8080", NULL, &resp), 0);
	assert_int_equal(csrf("POST", "HTTP_SEC_FETCH_SITE=same-origin",
	                      "HTTP_ORIGIN=http://127.0.0.1:8080", &resp), 0);
	assert_int_equal(csrf("DELETE", "HTTP_ORIGIN=http://evil.example", NULL, &resp), -1);
	assert_error(&resp, 403, "csrf");
	tf_resp_free(&resp);
	assert_int_equal(csrf("PATCH", "HTTP_ORIGIN=null", NULL, &resp), -1);
	tf_resp_free(&resp);
	assert_int_equal(csrf("POST", "HTTP_SEC_FETCH_SITE=cross-site", NULL, &resp), -1);
	assert_error(&resp, 403, "csrf");
	tf_resp_free(&resp);
	/* reads are never refused for CSRF */
	assert_int_equal(csrf("GET", "HTTP_ORIGIN=http://evil.example",
	                      "HTTP_SEC_FETCH_SITE=cross-site", &resp), 0);
}

/* ---- responses ----------------------------------------------------------- */

static void test_error_mapping(void **state)
{
	static const struct { int err, status; const char *code; } map[] = {
		{TF_EINVAL, 400, "bad_request"},        {TF_ENOTFOUND, 404, "not_found"},
		{TF_EEXIST, 409, "exists"},             {TF_ECONFLICT, 409, "conflict"},
		{TF_ESTATE, 409, "conflict"},           {TF_ELIMIT, 413, "payload_too_large"},
		{TF_ESTORE, 503, "store_unavailable"},  {TF_EPERM, 503, "store_not_writable"},
		{TF_ENOMEM, 500, "internal_error"},     {TF_ESYS, 500, "internal_error"},
		{TF_EUPSTREAM, 500, "internal_error"},  {12345, 500, "internal_error"},
	};
	tf_resp resp;
	(void)state;

	for (size_t i = 0; i < sizeof map / sizeof *map; i++) {
		const char *code;
		assert_int_equal(tf_http_status_of(map[i].err, &code), map[i].status);
		assert_string_equal(code, map[i].code);
		tf_resp_init(&resp);
		assert_int_equal(tf_resp_fail(&resp, map[i].err, "/var/lib/secret/path"), -1);
		assert_error(&resp, map[i].status, map[i].code);
		/* details only for client errors, never internals on 5xx */
		if (map[i].status >= 500)
			assert_null(strstr(resp.body, "/var/lib"));
		else
			assert_non_null(strstr(resp.body, "/var/lib"));
		tf_resp_free(&resp);
	}
	tf_resp_init(&resp);
	tf_resp_fail(&resp, TF_EPERM, NULL);
	assert_non_null(strstr(resp.body, "store not writable"));
	tf_resp_free(&resp);
}

static void test_error_escaping(void **state)
{
	tf_resp resp;
	(void)state;

	tf_resp_init(&resp);
	tf_resp_error_with(&resp, 409, "run_active", "task_id", "a\"b", "quote \" and \n newline");
	assert_string_equal(resp.body, "{\"error\":\"quote \\\" and \\n newline\",\"code\":\"run_active\","
	                               "\"task_id\":\"a\\\"b\"}");
	tf_resp_free(&resp);
}

static void test_etag(void **state)
{
	tf_resp resp;
	char tag[TF_ETAG_LEN + 1], list[64];
	(void)state;

	tf_resp_init(&resp);
	tf_resp_json_copy(&resp, 200, "{\"a\":1}", 7);
	tf_resp_etag(&resp, NULL);
	assert_int_equal(resp.status, 200);
	assert_int_equal(strlen(resp.etag), TF_ETAG_LEN);
	assert_int_equal(resp.etag[0], '"');
	assert_int_equal(resp.etag[TF_ETAG_LEN - 1], '"');
	snprintf(tag, sizeof tag, "%s", resp.etag);
	tf_resp_etag(&resp, "\"0000000000000000\"");
	assert_int_equal(resp.status, 200);
	tf_resp_etag(&resp, tag);
	assert_int_equal(resp.status, 304);
	assert_null(resp.body);
	assert_string_equal(resp.etag, tag);
	tf_resp_free(&resp);

	snprintf(list, sizeof list, "\"x\", W/%s", tag);
	assert_true(tf_etag_matches(list, tag));
	assert_true(tf_etag_matches("*", tag));
	assert_false(tf_etag_matches("", tag));
	assert_false(tf_etag_matches("\"x\"", tag));
	/* errors get no ETag */
	tf_resp_init(&resp);
	tf_resp_error(&resp, 404, "not_found", "x");
	tf_resp_etag(&resp, "*");
	assert_int_equal(resp.status, 404);
	assert_string_equal(resp.etag, "");
	tf_resp_free(&resp);
}

static void test_emit(void **state)
{
	tf_resp resp;
	sink out = {.len = 0};
	(void)state;

	tf_resp_init(&resp);
	tf_resp_json_copy(&resp, 201, "{}", 2);
	snprintf(resp.location, sizeof resp.location, "/api/threat-feeds/x/");
	assert_int_equal(tf_resp_emit(&resp, 0, write_sink, &out), 0);
	assert_string_equal(out.buf, "Status: 201 Created\r\n"
	                             "Content-Type: application/json; charset=utf-8\r\n"
	                             "Cache-Control: no-store\r\n"
	                             "X-Content-Type-Options: nosniff\r\n"
	                             "Location: /api/threat-feeds/x/\r\n"
	                             "Content-Length: 2\r\n\r\n{}");
	/* HEAD: headers only */
	out.len = 0;
	assert_int_equal(tf_resp_emit(&resp, 1, write_sink, &out), 0);
	assert_null(strstr(out.buf, "{}"));
	assert_non_null(strstr(out.buf, "Content-Length: 2\r\n"));
	tf_resp_free(&resp);

	/* 204: no body, no Content-Type */
	tf_resp_init(&resp);
	tf_resp_empty(&resp, 204);
	out.len = 0;
	assert_int_equal(tf_resp_emit(&resp, 0, write_sink, &out), 0);
	assert_string_equal(out.buf, "Status: 204 No Content\r\nCache-Control: no-store\r\n"
	                             "X-Content-Type-Options: nosniff\r\n\r\n");
	tf_resp_free(&resp);

	/* 401 carries the challenge; 405 carries Allow */
	tf_resp_init(&resp);
	resp.www_authenticate = 1;
	snprintf(resp.allow, sizeof resp.allow, "GET, HEAD");
	tf_resp_error(&resp, 401, "unauthorized", "x");
	out.len = 0;
	assert_int_equal(tf_resp_emit(&resp, 0, write_sink, &out), 0);
	assert_non_null(strstr(out.buf, "\r\nWWW-Authenticate: Bearer realm=\"threatfeed\"\r\n"));
	assert_non_null(strstr(out.buf, "\r\nAllow: GET, HEAD\r\n"));
	tf_resp_free(&resp);

	/* a response nobody filled is a 500, never an empty 200 */
	tf_resp_init(&resp);
	out.len = 0;
	assert_int_equal(tf_resp_emit(&resp, 0, write_sink, &out), 0);
	assert_non_null(strstr(out.buf, "Status: 500 "));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pct_decode),
		cmocka_unit_test(test_path_basic),
		cmocka_unit_test(test_path_prefix),
		cmocka_unit_test(test_path_rejects),
		cmocka_unit_test(test_path_limits),
		cmocka_unit_test(test_path_without_request_uri),
		cmocka_unit_test(test_methods),
		cmocka_unit_test(test_query_parse),
		cmocka_unit_test(test_query_rejects),
		cmocka_unit_test(test_body_ok),
		cmocka_unit_test(test_body_content_length),
		cmocka_unit_test(test_body_limit_exact),
		cmocka_unit_test(test_body_content_type),
		cmocka_unit_test(test_body_json),
		cmocka_unit_test(test_auth_none),
		cmocka_unit_test(test_auth_token),
		cmocka_unit_test(test_auth_remote_user),
		cmocka_unit_test(test_auth_metrics_token),
		cmocka_unit_test(test_ct_equal),
		cmocka_unit_test(test_origin_matches),
		cmocka_unit_test(test_csrf),
		cmocka_unit_test(test_error_mapping),
		cmocka_unit_test(test_error_escaping),
		cmocka_unit_test(test_etag),
		cmocka_unit_test(test_emit),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
