/* Roles and the audit (README "Roles", "Audit"): SHA-256 against the FIPS
 * 180-4 examples, named and hashed tokens from a real config file, the role
 * each kind of caller gets, the role every route needs, the 403, and the
 * audit trail's paging and bound on a real store (LMDB, or PostgreSQL with
 * TF_TEST_PG). */
#include "testutil.h"

#include "audit.h"
#include "auth.h"
#include "config.h"
#include "router.h"
#include "sha256.h"

static void hex(const unsigned char *d, char *out)
{
	for (int i = 0; i < TF_SHA256_LEN; i++)
		sprintf(out + 2 * i, "%02x", d[i]);
}

static void expect_sha(const char *msg, size_t len, const char *want)
{
	unsigned char d[TF_SHA256_LEN];
	char h[2 * TF_SHA256_LEN + 1];

	tf_sha256(msg, len, d);
	hex(d, h);
	assert_string_equal(h, want);
}

static void test_sha256_vectors(void **state)
{
	char *million = malloc(1000000);
	(void)state;

	expect_sha("", 0, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
	expect_sha("abc", 3, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
	/* 56 bytes: the length no longer fits the first padding block */
	expect_sha("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", 56,
	           "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
	assert_non_null(million);
	memset(million, 'a', 1000000);
	expect_sha(million, 1000000,
	           "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
	free(million);
}


static void test_config_tokens(void **state)
{
	static tf_config cfg;
	unsigned char d[TF_SHA256_LEN];
	char conf[512], h[2 * TF_SHA256_LEN + 1];
	const tf_token *t;
	(void)state;

	tf_sha256("view-secret", 11, d);
	hex(d, h);
	snprintf(conf, sizeof conf,
	         "token.alice = operator op-secret\n"
	         "token.bob = viewer sha256:%s\n"
	         "token.root = admin  sha256:%s\n"   /* upper case hex too */
	         "remote_user.carol = viewer\nremote_user_role = none\n",
	         h, "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855");
	assert_int_equal(tu_config(&cfg, conf, NULL, 0), TF_OK);
	assert_int_equal(cfg.ntokens, 3);
	assert_string_equal(tf_auth_mode(&cfg), "token");

	assert_non_null(t = tf_auth_named_token(&cfg, "op-secret", 9));
	assert_string_equal(t->name, "alice");
	assert_int_equal(t->role, TF_ROLE_OPERATOR);
	assert_non_null(t = tf_auth_named_token(&cfg, "view-secret", 11));
	assert_string_equal(t->name, "bob");
	assert_int_equal(t->role, TF_ROLE_VIEWER);
	assert_true(t->hashed);
	/* the hash itself is not the token; nor are prefixes or extensions */
	assert_null(tf_auth_named_token(&cfg, h, strlen(h)));
	assert_null(tf_auth_named_token(&cfg, "view-secre", 10));
	assert_null(tf_auth_named_token(&cfg, "view-secret2", 12));
	assert_null(tf_auth_named_token(&cfg, "op-secre", 8));
	/* an empty token never matches, even the hash of "" */
	assert_null(tf_auth_named_token(&cfg, "", 0));

	assert_int_equal(tf_auth_user_role(&cfg, "carol"), TF_ROLE_VIEWER);
	assert_int_equal(tf_auth_user_role(&cfg, "mallory"), TF_ROLE_NONE);
	assert_int_equal(tu_config(&cfg, "trust_remote_user = 1\n", NULL, 0), TF_OK);
	assert_int_equal(tf_auth_user_role(&cfg, "anyone"), TF_ROLE_ADMIN);   /* as before roles */

	assert_int_equal(tu_config(&cfg, "token.x = superuser s3cret\n", NULL, 0), TF_EINVAL);
	assert_int_equal(tu_config(&cfg, "token.x = none s3cret\n", NULL, 0), TF_EINVAL);
	assert_int_equal(tu_config(&cfg, "token.x = viewer\n", NULL, 0), TF_EINVAL);
	assert_int_equal(tu_config(&cfg, "token.x = viewer sha256:abcd\n", NULL, 0), TF_EINVAL);
	assert_int_equal(tu_config(&cfg,
	                           "token.x = viewer sha256:"
	                           "zz0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n",
	                           NULL, 0),
	                 TF_EINVAL);
	/* ':' is cli:'s */
	assert_int_equal(tu_config(&cfg, "token.a:b = viewer s\n", NULL, 0), TF_EINVAL);
	assert_int_equal(tu_config(&cfg, "token. = viewer s\n", NULL, 0), TF_EINVAL);
	assert_int_equal(tu_config(&cfg, "token.x = viewer a\ntoken.x = admin b\n", NULL, 0), TF_EINVAL);
	assert_int_equal(tu_config(&cfg, "remote_user.x = root\n", NULL, 0), TF_EINVAL);
	assert_int_equal(tu_config(&cfg, "remote_user_role = everything\n", NULL, 0), TF_EINVAL);
}

/* Runs the auth check on a GET of /api/health with extra CGI params. */
static int check(const tf_config *cfg, char **extra, tf_req *r, tf_resp *resp)
{
	static char *env[8];
	size_t n = 0;

	env[n++] = "REQUEST_METHOD=GET";
	env[n++] = "REQUEST_URI=/api/health";
	for (; extra && *extra && n < 7; extra++)
		env[n++] = *extra;
	env[n] = NULL;
	tf_req_init(r, env);
	tf_resp_init(resp);
	assert_int_equal(tf_req_parse(r, resp), 0);
	return tf_auth_check(cfg, r, resp);
}

static void test_roles_of_callers(void **state)
{
	static tf_config cfg;
	char *alice[] = {"HTTP_AUTHORIZATION=Bearer op-secret", "REMOTE_USER=carol", NULL};
	char *admin[] = {"HTTP_AUTHORIZATION=Bearer adm1n", NULL};
	char *carol[] = {"REMOTE_USER=carol", NULL};
	char *dave[] = {"REMOTE_USER=dave", NULL};
	char *wrong[] = {"HTTP_AUTHORIZATION=Bearer nope", NULL};
	tf_req r;
	tf_resp resp;
	(void)state;

	assert_int_equal(tu_config(&cfg, "api_token = adm1n\ntoken.alice = operator op-secret\n"
	                                 "trust_remote_user = 1\nremote_user.carol = viewer\n"
	                                 "remote_user_role = none\n",
	                           NULL, 0),
	                 TF_OK);
	/* a named token is its name, whatever REMOTE_USER says */
	assert_int_equal(check(&cfg, alice, &r, &resp), 0);
	assert_string_equal(r.requested_by, "alice");
	assert_int_equal(r.role, TF_ROLE_OPERATOR);
	tf_resp_free(&resp);
	/* api_token: exactly as before roles, admin */
	assert_int_equal(check(&cfg, admin, &r, &resp), 0);
	assert_string_equal(r.requested_by, "api-token");
	assert_int_equal(r.role, TF_ROLE_ADMIN);
	tf_resp_free(&resp);
	assert_int_equal(check(&cfg, carol, &r, &resp), 0);
	assert_string_equal(r.requested_by, "carol");
	assert_int_equal(r.role, TF_ROLE_VIEWER);
	tf_resp_free(&resp);
	assert_int_equal(check(&cfg, dave, &r, &resp), 0);
	assert_int_equal(r.role, TF_ROLE_NONE);
	assert_int_equal(tf_auth_role_check(&r, TF_ROLE_VIEWER, &resp), -1);
	assert_int_equal(resp.status, 403);
	assert_non_null(strstr(resp.body, "\"forbidden_role\""));
	tf_resp_free(&resp);
	assert_int_equal(check(&cfg, wrong, &r, &resp), -1);
	assert_int_equal(resp.status, 401);
	tf_resp_free(&resp);
	/* no auth configured: everything, as before */
	assert_int_equal(tu_config(&cfg, "", NULL, 0), TF_OK);
	assert_int_equal(check(&cfg, NULL, &r, &resp), 0);
	assert_int_equal(r.role, TF_ROLE_ADMIN);
	tf_resp_free(&resp);
}

/* The role every route needs, by what it does: reading is for viewers,
 * runs (start, stop, test) for operators, feeds, history and the audit for
 * admins. A route added without a role fails here. */
static void test_route_roles(void **state)
{
	static const struct { const char *name; int role; } want[] = {
		{"feed_create", TF_ROLE_ADMIN},     {"feed_patch", TF_ROLE_ADMIN},
		{"feed_delete", TF_ROLE_ADMIN},     {"task_purge", TF_ROLE_ADMIN},
		{"audit", TF_ROLE_ADMIN},           {"feed_consume", TF_ROLE_OPERATOR},
		{"feed_cancel", TF_ROLE_OPERATOR},  {"task_cancel", TF_ROLE_OPERATOR},
		{"feed_test", TF_ROLE_OPERATOR},    {"indicators_lookup", TF_ROLE_VIEWER},
	};
	size_t n, seen = 0;
	const tf_route *rt = tf_router_table(&n);
	(void)state;

	for (size_t i = 0; i < n; i++) {
		int expect = -1;
		for (size_t j = 0; j < sizeof want / sizeof *want; j++)
			if (!strcmp(rt[i].name, want[j].name))
				expect = want[j].role, seen++;
		if (expect < 0) {
			/* everything else only reads */
			assert_true(rt[i].methods == TF_M_GET);
			expect = TF_ROLE_VIEWER;
		}
		if (rt[i].role != expect)
			fail_msg("route %s: role %s, want %s", rt[i].name, tf_role_name(rt[i].role),
			         tf_role_name(expect));
	}
	assert_int_equal(seen, sizeof want / sizeof *want);
}

struct many {
	int n;
};

static int append_many(tf_txn *txn, void *vctx)
{
	struct many *m = vctx;
	tf_audit_entry e = {.via = "cli", .who = "cli:test", .role = "admin", .action = "feed_create",
	                    .status = 200, .outcome = "ok"};
	for (int i = 0; i < m->n; i++) {
		int rc = tf_audit_append_txn(txn, &e);
		if (rc)
			return rc;
	}
	return TF_OK;
}

static json_object *page(tf_store *st, int limit, const char *cursor)
{
	char *json = NULL;
	size_t len;
	json_object *o;

	assert_int_equal(tf_audit_list(st, limit, cursor, &json, &len), TF_OK);
	o = tu_json(json);
	free(json);
	return o;
}

static int64_t entry_id(json_object *o, size_t i)
{
	json_object *arr = json_object_object_get(o, "entries");
	return json_object_get_int64(json_object_object_get(json_object_array_get_idx(arr, i), "id"));
}

/* HTTP Basic as TAXII clients send it: the password is what counts. */
static void test_basic_password(void **state)
{
	static const struct { const char *h, *want; } cases[] = {
		{"Basic dGF4aWk6czNjcmV0", "s3cret"},          /* taxii:s3cret */
		{"basic   dGF4aWk6czNjcmV0", "s3cret"},        /* scheme case, spaces */
		{"Basic OnNlY3JldA==", "secret"},              /* :secret (no user) */
		{"Basic dTpwOnE=", "p:q"},                     /* u:p:q: the password holds ':' */
		{"Basic dGF4aWk6", NULL},                      /* taxii: (empty password) */
		{"Basic dGF4aWk=", NULL},                      /* no colon */
		{"Basic !!!!", NULL},
		{"Bearer dGF4aWk6czNjcmV0", NULL},
		{"Basicx dGF4aWk6czNjcmV0", NULL},
		{"Basic dQBwOnE=", NULL},                      /* u NUL p:q */
		{"", NULL},
	};
	char buf[64], small[4];
	size_t len;
	(void)state;

	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
		int rc = tf_auth_basic_password(cases[i].h, buf, sizeof buf, &len);
		if (!cases[i].want) {
			if (rc == 0)
				fail_msg("%s accepted as %s", cases[i].h, buf);
			continue;
		}
		assert_int_equal(rc, 0);
		assert_string_equal(buf, cases[i].want);
		assert_int_equal(len, strlen(cases[i].want));
	}
	assert_int_equal(tf_auth_basic_password(NULL, buf, sizeof buf, &len), -1);
	/* longer than the buffer: refused, never cut */
	assert_int_equal(tf_auth_basic_password("Basic dGF4aWk6czNjcmV0", small, sizeof small, &len),
	                 -1);
}

struct outbox_copy {
	unsigned char key[64], val[4096];
	size_t kl, vl;
	int n;
};

static int copy_outbox(const void *k, size_t kl, const void *v, size_t vl, void *vctx)
{
	struct outbox_copy *c = vctx;
	assert_true(kl <= sizeof c->key && vl <= sizeof c->val);
	memcpy(c->key, k, kl), c->kl = kl;
	memcpy(c->val, v, vl), c->vl = vl;
	c->n++;
	return TF_OK;
}

static int scan_outbox(tf_txn *txn, void *vctx)
{
	return tf_txn_signal_scan(txn, "a", 1, 8, copy_outbox, vctx);
}

static int count_meta_moved(tf_txn *txn, void *vctx)
{
	const void *k, *v;
	size_t kl, vl;
	tf_cursor *cur;
	int rc, *n = vctx;

	*n = 0;
	assert_int_equal(tf_cursor_open(txn, TF_TBL_META, &cur), TF_OK);
	for (rc = tf_cursor_get(cur, TF_SEEK_GE, "audit/moved/", 12, &k, &kl, &v, &vl);
	     rc == TF_OK && kl >= 12 && !memcmp(k, "audit/moved/", 12);
	     rc = tf_cursor_get(cur, TF_SEEK_NEXT, NULL, 0, &k, &kl, &v, &vl))
		(*n)++;
	tf_cursor_close(cur);
	return TF_OK;
}

/* A deferred cancel entry moved by two movers (a run's end and a listing)
 * that both saw it before the first removed it is listed once; the marker
 * that told the second goes once the entry has left the signal store. */
static void test_audit_deferred_moves_once(void **state)
{
	tf_store *st = tu_new_store("audit-defer", NULL, 0);
	tf_audit_entry e = {.via = "cli", .who = "cli:root", .role = "admin", .address = "local",
	                    .action = "task_cancel", .mode = "cancel_job", .status = 202,
	                    .outcome = "ok"};
	struct outbox_copy c = {0};
	json_object *o;
	int markers;
	(void)state;

	assert_int_equal(tf_audit_defer(st, &e), TF_OK);
	assert_int_equal(tf_store_view(st, scan_outbox, &c), TF_OK);
	assert_int_equal(c.n, 1);
	assert_int_equal(tf_audit_flush(st), TF_OK);          /* the first mover */
	/* the second saw it before the first's removal: put it back */
	assert_int_equal(tf_store_signal_write(st, c.key, c.kl, c.val, c.vl, 0, NULL, 0, NULL),
	                 TF_OK);
	assert_int_equal(tf_audit_flush(st), TF_OK);          /* the second */
	o = page(st, 10, NULL);
	assert_int_equal(json_object_array_length(json_object_object_get(o, "entries")), 1);
	json_object_put(o);
	/* its removal came after; the next move drops the marker */
	assert_int_equal(tf_store_view(st, count_meta_moved, &markers), TF_OK);
	assert_int_equal(markers, 1);
	assert_int_equal(tf_audit_flush(st), TF_OK);
	assert_int_equal(tf_store_view(st, count_meta_moved, &markers), TF_OK);
	assert_int_equal(markers, 0);
	o = page(st, 10, NULL);
	assert_int_equal(json_object_array_length(json_object_object_get(o, "entries")), 1);
	json_object_put(o);
	tf_store_close(st);
}

static void test_audit_pages_and_bound(void **state)
{
	tf_store *st = tu_new_store("audit", NULL, 0);
	tf_audit_entry e = {.via = "api", .who = "alice", .role = "operator", .address = "10.1.2.3",
	                    .action = "task_cancel", .method = "POST", .mode = "cancel_job",
	                    .status = 202, .outcome = "ok"};
	struct many m = {.n = 4};
	json_object *o, *first;
	const char *next;
	char *json;
	size_t len, total = 0;
	int64_t last = INT64_MAX;
	(void)state;

	o = page(st, 10, NULL);   /* empty */
	assert_int_equal(json_object_array_length(json_object_object_get(o, "entries")), 0);
	assert_null(json_object_object_get(o, "next_cursor"));
	json_object_put(o);

	assert_int_equal(tf_store_update(st, append_many, &m), TF_OK);
	assert_int_equal(tf_audit_append(st, &e), TF_OK);
	o = page(st, 2, NULL);
	first = json_object_array_get_idx(json_object_object_get(o, "entries"), 0);
	assert_string_equal(tf_json_str(first, "who"), "alice");
	assert_string_equal(tf_json_str(first, "address"), "10.1.2.3");
	assert_string_equal(tf_json_str(first, "mode"), "cancel_job");
	assert_string_equal(tf_json_str(first, "outcome"), "ok");
	assert_non_null(tf_json_str(first, "time"));
	/* walk every page: newest first, each id once */
	for (;;) {
		json_object *arr = json_object_object_get(o, "entries");
		for (size_t i = 0; i < json_object_array_length(arr); i++) {
			assert_true(entry_id(o, i) < last);
			last = entry_id(o, i);
			total++;
		}
		if (!(next = tf_json_str(o, "next_cursor")))
			break;
		json_object *p = page(st, 2, next);
		json_object_put(o);
		o = p;
	}
	json_object_put(o);
	assert_int_equal(total, 5);
	assert_int_equal(last, 1);
	assert_int_equal(tf_audit_list(st, 2, "x1", &json, &len), TF_EINVAL);
	assert_int_equal(tf_audit_list(st, 2, "0", &json, &len), TF_EINVAL);

	/* bounded: past TF_AUDIT_KEEP, the oldest go as new ones come */
	m.n = TF_AUDIT_KEEP;
	assert_int_equal(tf_store_update(st, append_many, &m), TF_OK);
	o = page(st, 1, NULL);
	assert_int_equal(entry_id(o, 0), 5 + TF_AUDIT_KEEP);
	json_object_put(o);
	{
		char cur[32];
		snprintf(cur, sizeof cur, "%d", 7);   /* entries below 6 are gone */
		o = page(st, 10, cur);
		assert_int_equal(json_object_array_length(json_object_object_get(o, "entries")), 1);
		assert_int_equal(entry_id(o, 0), 6);
		assert_null(json_object_object_get(o, "next_cursor"));
		json_object_put(o);
	}
	tf_store_close(st);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sha256_vectors),
		cmocka_unit_test(test_config_tokens),
		cmocka_unit_test(test_roles_of_callers),
		cmocka_unit_test(test_route_roles),
		cmocka_unit_test(test_basic_password),
		cmocka_unit_test(test_audit_pages_and_bound),
		cmocka_unit_test(test_audit_deferred_moves_once),
	};
	tu_init("auth");
	tu_seed();
	return tu_finish(cmocka_run_group_tests(tests, NULL, NULL));
}
